import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { ChatClient } from '../helpers/chat-client';
import { EpochWatch } from '../helpers/epoch-watch';
import { Cluster, namesOnShard } from '../helpers/cluster';
import { NatsServer } from '../helpers/nats-server';
import { NetnsLab, tearDownHosts, netnsUnavailable, sweepStale } from '../helpers/netns';
import { CLIENT_TIMEOUT_MS, findProblem } from './find-load';

/**
 * A host whose clock is 3 s ahead (docs/multi-host.md "Clock skew"): two namespace hosts made
 * as in multihost.e2e.test.ts, A (chatD, gc, nats-server) and C (shards 0 and 1), C's
 * processes under libfaketime (LD_PRELOAD, FAKETIME=+3s: their Date.now() really is 3 s
 * ahead; checked first). Without the correction (CLOCK_CORRECTION=off) every request chatD
 * sends them arrives already past its deadline and is dropped: finds end TIMEOUT. With it,
 * the shards measure the offset from their heartbeats and correct their deadlines: every find
 * answered right. gc shows the offset in STATUS, warns once, and `npm run health` names it.
 * Last, C 3 s behind (FAKETIME=-3s): its first heartbeats reach gc past their deadline, gc
 * answers them anyway (another host's), and the shards correct from there.
 */

const SKEW_MS = 3000;
const LIB_DIRS = ['/usr/lib/x86_64-linux-gnu/faketime', '/usr/lib/aarch64-linux-gnu/faketime', '/usr/lib/faketime', '/usr/local/lib/faketime'];

function libfaketime(): string | undefined {
  for (const d of LIB_DIRS) if (existsSync(`${d}/libfaketimeMT.so.1`)) return `${d}/libfaketimeMT.so.1`;
  return undefined;
}

/** The environment that makes a process's clock SKEW_MS ahead (its monotonic clock left alone: timers stay right). */
const fakeEnv = (lib: string, skewMs = SKEW_MS): string[] => [`LD_PRELOAD=${lib}`, `FAKETIME=${skewMs < 0 ? '-' : '+'}${Math.abs(skewMs) / 1000}s`, 'FAKETIME_DONT_FAKE_MONOTONIC=1'];

interface ProcClock { offset: number; bound: number; applied: boolean; skewed: boolean }
interface GcStatus {
  epoch: { epoch: number; members: number[]; settled: boolean };
  processes: { mtype: number; role: string; index: number; host: string; incarnation: number; clock?: ProcClock }[];
  counters: Record<string, number>;
}

describe('clock skew (e2e): host C\'s clock 3 s ahead (libfaketime), shards there, chatD and gc on host A, over NATS across namespaces', function () {
  this.timeout(240_000);
  let lab: NetnsLab | undefined;
  let nats: NatsServer | undefined;
  let front: Cluster | undefined;
  const hostsC: Cluster[] = [];
  let watch: EpochWatch | undefined;
  const clients: ChatClient[] = [];
  let lib = '';
  let common: Record<string, string> = {};

  before(async function () {
    this.timeout(120_000);
    const why = netnsUnavailable();
    if (why) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    const found = libfaketime();
    if (!found) {
      console.log('      skipped: libfaketime is not installed (scripts/setup-faketime.sh: apt-get install -y faketime)');
      this.skip();
    }
    lib = found!;
    // libfaketime must really move Node's Date.now(), or this test proves nothing.
    const probe = spawnSync('env', [...fakeEnv(lib), process.execPath, '-e', 'process.stdout.write(String(Date.now()))'], { encoding: 'utf8', timeout: 10_000 });
    const shift = Number(probe.stdout) - Date.now();
    expect(shift, `Node under libfaketime: ${probe.stdout} ${probe.stderr}`).to.be.within(SKEW_MS - 1000, SKEW_MS + 200);
    sweepStale();
    lab = NetnsLab.create(['a', 'c']);
    nats = await NatsServer.start({ host: lab.host('a').address, wrap: lab.wrap('a') });
    common = { TRANSPORT: 'nats', NATS_URL: nats.url, CLUSTER_NAME: `cs${process.pid}`, CHATD_RATE_PER_SEC: '100000', CHATD_RATE_BURST: '100000' };
    front = new Cluster({ wrap: lab.wrap('a'), host: lab.host('a').address, privateIpc: true, role: 'front', shards: 2, label: 'host-a', env: { ...common, HOST_ID: 'host-a' } });
    await front.launch();
    await front.waitOnline(Date.now() + 60_000);
    watch = await EpochWatch.open({ nats: { url: nats.url, cluster: `cs${process.pid}` } });
  });

  after(async function () {
    this.timeout(120_000);
    const failed = this.test?.parent?.tests.some((t) => t.state === 'failed') ?? false;
    await tearDownHosts({ failed, clients, tool: watch, hosts: [front, ...hostsC], nats, lab });
  });

  /** Host C: two shards (0 and 1), every process `skewMs` ahead (3 s by default; negative: behind). */
  async function startHostC(correction: 'on' | 'off', skewMs = SKEW_MS): Promise<Cluster> {
    const c = new Cluster({
      wrap: [...lab!.wrap('c'), 'env', ...fakeEnv(lib, skewMs)], host: lab!.host('c').address, privateIpc: true, role: 'shards', shards: 2, label: `host-c (correction ${correction}, ${skewMs} ms)`,
      env: { ...common, HOST_ID: 'host-c', SHARD_BASE: '0', CLOCK_CORRECTION: correction },
    });
    hostsC.push(c);
    await c.launch();
    await c.waitOnline(Date.now() + 60_000);
    return c;
  }

  const gcUntil = async (what: string, timeoutMs: number, ok: (s: GcStatus) => boolean): Promise<GcStatus> =>
    (await watch!.gcUntil<GcStatus>(what, timeoutMs, ok, (s) => s?.processes)).status;

  /** Host C's shards as gc sees them, each with a clock about `skewMs` ahead of gc's. */
  const skewedShards = (s: GcStatus, applied: boolean, skewMs = SKEW_MS): boolean => {
    const c = s.processes.filter((p) => p.host === 'host-c');
    return c.length === 2 && c.every((p) => p.clock !== undefined && p.clock.skewed && p.clock.applied === applied && Math.abs(p.clock.offset + skewMs) <= p.clock.bound + 100);
  };

  it('with the correction (default) - C\'s shards correct their deadlines by the measured offset: 0 wrong, every find answered; gc shows ~-3000 ms in STATUS, warned once per process; npm run health names them', async () => {
    const c = await startHostC('on');
    await front!.waitServing(Date.now() + 60_000);
    const s = await gcUntil('host C\'s new shards about 3000 ms ahead, corrected', 30_000, (x) => skewedShards(x, true));
    const cProcs = s.processes.filter((p) => p.host === 'host-c');
    const characters: { name: string; channel: number }[] = [];
    for (let i = 0; i < 30; i++) {
      const ch = { name: `Skew${i}`, channel: (i % 20) + 1 };
      const client = await front!.client({ requestTimeoutMs: CLIENT_TIMEOUT_MS });
      const r = await client.request({ op: 'login', name: ch.name, channel: ch.channel });
      expect(r, JSON.stringify(r)).to.deep.include({ ok: true });
      clients.push(client);
      characters.push(ch);
    }
    const t0 = Date.now();
    const jobs: Promise<string>[] = [];
    for (let k = 0; k < 3000; k++) {
      const truth = k % 4 === 3 ? undefined : characters[(k * 7) % characters.length]!;
      const query = truth ? truth.name : `Ghost${k}`;
      const cl = clients[k % characters.length]!;
      jobs.push(cl.request({ op: 'find', name: query }, CLIENT_TIMEOUT_MS).then((r) => (r.ok === true ? (findProblem(query, truth, r) ?? 'right') : `error ${r.error?.code}`)));
    }
    const outcomes = await Promise.all(jobs);
    const tally = new Map<string, number>();
    for (const o of outcomes) tally.set(o, (tally.get(o) ?? 0) + 1);
    console.log(
      `      with correction: C's offsets ${cProcs.map((p) => `${p.clock!.offset}±${p.clock!.bound}`).join(', ')} ms; 3000 finds -> ${JSON.stringify(Object.fromEntries(tally))} in ${Date.now() - t0} ms`,
    );
    expect(tally.get('right'), JSON.stringify(Object.fromEntries(tally))).to.equal(3000);

    // gc's warning: one line per process of C that went beyond 250 ms, none for A's chatD.
    const logs = front!.logs(100_000);
    const warned = logs.split('\n').filter((l) => l.includes('process clock differs from the collector')).map((l) => JSON.parse(l.slice(l.indexOf('{'))) as Record<string, unknown>);
    console.log(`      gc warned: ${warned.map((w) => `${String(w.role)} ${String(w.index)}@${String(w.host)} ${String(w.offsetMs)}±${String(w.boundMs)} corrected=${String(w.corrected)}`).join('; ')}`);
    expect(warned.length, 'one warning per process of C').to.equal(2);
    for (const w of warned) {
      expect(w).to.include({ level: 40, host: 'host-c', role: 'channeld', thresholdMs: 250 });
      expect(Math.abs((w.offsetMs as number) + SKEW_MS)).to.be.at.most((w.boundMs as number) + 100);
    }
    expect(s.counters.clockSkews).to.equal(2);
    // A's chatD: same clock as gc, never corrected.
    const chatd = s.processes.find((p) => p.role === 'chatd')!;
    expect(Math.abs(chatd.clock!.offset)).to.be.at.most(chatd.clock!.bound);
    expect(chatd.clock!.applied).to.equal(false);
    // The shards' own line (LOG_LEVEL warn): the correction applied.
    expect(c.logs(100_000).split('\n').filter((l) => l.includes('envelope deadlines corrected by the measured offset')).length).to.equal(2);

    // npm run health on host A (its network and IPC namespace): unhealthy, naming both shards of C.
    const h = await front!.ops('health', ['--json'], 30_000, ['nsenter', '--target', String(front!.daemonPid), '--net', '--ipc']);
    const out = JSON.parse(h.stdout) as { healthy: boolean; problems: string[] };
    console.log(`      npm run health: exit ${h.code}; ${out.problems.join(' | ')}`);
    expect(h.code).to.equal(1);
    expect(out.problems.filter((p) => p.startsWith('clock: channeld '))).to.have.length(2);
    expect(out.problems.every((p) => p.startsWith('clock: channeld ') && / on host host-c is \d+ ms ahead of gc's clock .*corrected/.test(p)), out.problems.join('\n')).to.equal(true);
  });
  it('without the correction (CLOCK_CORRECTION=off: host C\'s shards restarted with it) - gc still measures C 3 s ahead, but every find to C\'s shards fails (TIMEOUT): chatD\'s requests arrive past their deadline', async () => {
    expect(clients.length, "characters logged in by the previous test").to.equal(30);
    await hostsC[0]!.stop();
    await startHostC('off');
    const s = await gcUntil('host C\'s new shards about 3000 ms ahead, not corrected', 30_000, (x) => skewedShards(x, false));
    const offsets = s.processes.filter((p) => p.host === 'host-c').map((p) => `${p.clock!.offset}±${p.clock!.bound}`);
    const names = [...namesOnShard(0, 2, 'Off', 10), ...namesOnShard(1, 2, 'Off', 10)];
    const t0 = Date.now();
    const replies = await Promise.all(names.map((name, k) => clients[k % clients.length]!.request({ op: 'find', name }, CLIENT_TIMEOUT_MS)));
    const codes = new Map<string, number>();
    for (const r of replies) {
      const k = r.ok === true ? 'ok' : String(r.error?.code);
      codes.set(k, (codes.get(k) ?? 0) + 1);
    }
    console.log(`      without correction: C's offsets ${offsets.join(', ')} ms; ${names.length} finds -> ${JSON.stringify(Object.fromEntries(codes))} in ${Date.now() - t0} ms`);
    expect(codes.get('ok') ?? 0, 'no find answered').to.equal(0);
    expect(codes.get('TIMEOUT') ?? 0, `finds end TIMEOUT: ${JSON.stringify(Object.fromEntries(codes))}`).to.be.greaterThan(0);
    expect([...codes.keys()].filter((k) => k !== 'TIMEOUT' && k !== 'UNAVAILABLE')).to.deep.equal([]);
    // gc warned once more per new process of C (not corrected this time).
    const warned = front!.logs(100_000).split('\n').filter((l) => l.includes('process clock differs from the collector')).map((l) => JSON.parse(l.slice(l.indexOf('{'))) as Record<string, unknown>);
    expect(warned.map((w) => w.corrected)).to.deep.equal([true, true, false, false]);
  });

  it('behind (host C\'s shards restarted 3 s behind, corrected) - gc answers their heartbeats although they arrive past their deadline, they measure +3000 ms and correct: every find right', async () => {
    await hostsC[hostsC.length - 1]!.stop();
    await startHostC('on', -SKEW_MS);
    await front!.waitServing(Date.now() + 60_000);
    const s = await gcUntil('host C\'s new shards about 3000 ms behind, corrected', 30_000, (x) => skewedShards(x, true, -SKEW_MS));
    const offsets = s.processes.filter((p) => p.host === 'host-c').map((p) => `${p.clock!.offset}±${p.clock!.bound}`);
    const t0 = Date.now();
    const jobs: Promise<string>[] = [];
    for (let k = 0; k < 1000; k++) {
      const truth = k % 4 === 3 ? undefined : { name: `Skew${(k * 7) % 30}`, channel: (((k * 7) % 30) % 20) + 1 };
      const query = truth ? truth.name : `Ghost${k}`;
      jobs.push(clients[k % clients.length]!.request({ op: 'find', name: query }, CLIENT_TIMEOUT_MS).then((r) => (r.ok === true ? (findProblem(query, truth, r) ?? 'right') : `error ${r.error?.code}`)));
    }
    const tally = new Map<string, number>();
    for (const o of await Promise.all(jobs)) tally.set(o, (tally.get(o) ?? 0) + 1);
    console.log(`      behind, corrected: C's offsets ${offsets.join(', ')} ms; late heartbeats answered ${s.counters.lateHeartbeats}; 1000 finds -> ${JSON.stringify(Object.fromEntries(tally))} in ${Date.now() - t0} ms`);
    expect(tally.get('right'), JSON.stringify(Object.fromEntries(tally))).to.equal(1000);
    expect(s.counters.lateHeartbeats, 'heartbeats answered past their deadline before the correction').to.be.greaterThan(0);
  });
});
