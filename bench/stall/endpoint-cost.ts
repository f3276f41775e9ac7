/**
 * The Endpoint's own CPU per request, for A/B between two checkouts (docs/benchmarks.md,
 * "The stall"): two Endpoints in this process over LocalTransport (no threads, no syscalls, so
 * only the endpoints' JavaScript is measured), bursts of 2,000 requests and a lone-request loop.
 *
 *   node dist/bench/stall/endpoint-cost.js [<checkout root with dist/ built>]
 *
 * Prints one JSON line: burstUs (CPU µs per request in bursts), loneUs (per lone request,
 * mostly the event-loop turns). Run it alternately against both roots and compare medians.
 */
import { resolve } from 'node:path';

type Ipc = typeof import('../../src/ipc');

const root = resolve(process.argv[2] ?? resolve(__dirname, '../../..'));
// eslint-disable-next-line @typescript-eslint/no-require-imports
const ipc = require(`${root}/dist/src/ipc`) as Ipc;

async function main(): Promise<void> {
  const q = new ipc.LocalQueue(1 << 20, 8192);
  const ta = new ipc.LocalTransport(q);
  const tb = new ipc.LocalTransport(q);
  const a = new ipc.Endpoint(ta, { mtype: 1000, incarnation: ipc.newIncarnation(), maxBatchBytes: 4096 });
  const b = new ipc.Endpoint(tb, { mtype: 100, incarnation: ipc.newIncarnation(), maxBatchBytes: 4096 });
  a.start(() => {});
  b.start((rec, reply) => reply!(0, rec.payload));
  const payload = Buffer.from('0123456789abcdef');
  let done = 0;
  const sink = {
    onReply(): void {
      done++;
    },
    onFailure(): void {
      done++;
    },
  };
  const burst = (n: number): Promise<void> =>
    new Promise((res) => {
      done = 0;
      for (let i = 0; i < n; i++) a.call(100, 4, payload, 5000, sink, i);
      const wait = (): void => {
        if (done === n) res();
        else setImmediate(wait);
      };
      wait();
    });
  for (let r = 0; r < 50; r++) await burst(2000);
  let c0 = process.cpuUsage();
  const rounds = 200;
  for (let r = 0; r < rounds; r++) await burst(2000);
  let c = process.cpuUsage(c0);
  const burstUs = (c.user + c.system) / (rounds * 2000);
  c0 = process.cpuUsage();
  const lone = 20_000;
  for (let i = 0; i < lone; i++) await burst(1);
  c = process.cpuUsage(c0);
  const loneUs = (c.user + c.system) / lone;
  console.log(JSON.stringify({ root, burstUs: +burstUs.toFixed(3), loneUs: +loneUs.toFixed(2) }));
  await a.close();
  await b.close();
  await ta.close();
  await tb.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
