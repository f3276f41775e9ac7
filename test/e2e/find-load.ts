import { expect } from 'chai';
import type { ChatClient, Reply } from '../helpers/chat-client';
import { expectEachReplyOnce, percentile } from './e2e-support';
import { sleep } from '../helpers/cluster';

/**
 * A checked load of finds for the fault suites (NATS, several hosts): loops of finds in flight
 * the whole time, every answer checked against the truth (who is connected, on which channel),
 * while a fault is injected. TIMEOUT and UNAVAILABLE are counted; any other error, a wrong
 * answer or a request without a reply is a failure.
 */

/** Client-side bound on one reply: far above the server's 1.5 s request timeout. A reply later than this is a hang. */
export const CLIENT_TIMEOUT_MS = 15_000;

export interface Character {
  name: string;
  channel: number;
}

/** Checks a find reply against the truth: undefined when right. */
export function findProblem(query: string, truth: Character | undefined, r: Reply): string | undefined {
  if (r.ok !== true) return undefined; // errors are counted apart
  if (truth) {
    if (r.online !== true) return 'an online character reported offline';
    if (r.channel !== truth.channel || r.name !== truth.name) return `wrong entry ${JSON.stringify(r)}`;
    return undefined;
  }
  if (r.online !== false) return 'an offline name reported online';
  if (r.name !== query) return `wrong name ${JSON.stringify(r)}`;
  return undefined;
}

export interface LoadOutcome {
  ok: number;
  okBefore: number;
  wrong: string[];
  hung: number;
  errors: Map<string, number>;
  latencies: number[];
  /** ms from the end of `fault()` until 200 more finds were answered right (0: never). */
  recoveredMs: number;
}

/**
 * `loops` loops of finds in flight the whole time (every answer checked against the truth),
 * from `clients` (logged in) about `characters` (connected) and names nobody uses:
 * 1 s of load, then `fault()`, then until 200 more finds are answered right (at most 20 s),
 * then 1 s more.
 */
export async function underLoad(clients: ChatClient[], characters: Character[], fault: () => Promise<void>, loops = 20): Promise<LoadOutcome> {
  let stop = false;
  const out: LoadOutcome = { ok: 0, okBefore: 0, wrong: [], hung: 0, errors: new Map(), latencies: [], recoveredMs: 0 };
  const loop = async (w: number): Promise<void> => {
    for (let k = w; !stop; k += loops) {
      const offline = k % 5 === 4;
      const truth = offline ? undefined : characters[(k * 13) % characters.length]!;
      const query = truth ? truth.name : `Ghost${k}`;
      let timed;
      try {
        timed = await clients[(k + w) % clients.length]!.timedRequest({ op: 'find', name: query }, CLIENT_TIMEOUT_MS);
      } catch (err) {
        out.hung++;
        out.wrong.push(`#${k} no reply: ${(err as Error).message}`);
        continue;
      }
      out.latencies.push(timed.latencyMs);
      const r = timed.reply;
      if (r.ok !== true) {
        const code = r.error?.code ?? '?';
        out.errors.set(code, (out.errors.get(code) ?? 0) + 1);
        if (code !== 'TIMEOUT' && code !== 'UNAVAILABLE') out.wrong.push(`#${k} unexpected error ${JSON.stringify(r)}`);
        else await sleep(20); // as a client backs off
        continue;
      }
      const p = findProblem(query, truth, r);
      if (p) out.wrong.push(`#${k} ${query}: ${p}`);
      else out.ok++;
    }
  };
  const running = Array.from({ length: loops }, (_, w) => loop(w));
  await sleep(1000);
  out.okBefore = out.ok;
  try {
    await fault();
  } finally {
    const faultEnd = Date.now();
    const okAtEnd = out.ok;
    while (Date.now() - faultEnd < 20_000) {
      if (out.ok > okAtEnd + 200) {
        out.recoveredMs = Date.now() - faultEnd;
        break;
      }
      await sleep(20);
    }
    await sleep(1000);
    stop = true;
    await Promise.all(running);
  }
  out.latencies.sort((a, b) => a - b);
  return out;
}

export function describeOutcome(what: string, o: LoadOutcome, extra = ''): string {
  return (
    `      ${what}: ${o.ok} right (${o.okBefore} before the fault), errors ${JSON.stringify(Object.fromEntries(o.errors))}, ` +
    `wrong ${o.wrong.length - o.hung}, hung ${o.hung}; served again ${o.recoveredMs || '-'} ms after it${extra}; ` +
    `latency p50 ${percentile(o.latencies, 50).toFixed(1)} ms, max ${o.latencies[o.latencies.length - 1]?.toFixed(0)} ms`
  );
}

/** Every connected character is found online on its channel (one find each, from another client). */
export async function expectEveryoneOnline(clients: ChatClient[], characters: Character[]): Promise<void> {
  const replies = await Promise.all(characters.map((ch, i) => clients[(i + 1) % clients.length]!.request({ op: 'find', name: ch.name })));
  replies.forEach((r, i) => expect(r).to.deep.include({ ok: true, online: true, name: characters[i]!.name, channel: characters[i]!.channel }));
}

/** Polls until every connected character is found online on its channel; ms it took. */
export async function everyoneFoundWithin(clients: ChatClient[], characters: Character[], timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    const replies = await Promise.all(characters.map((ch, i) => clients[(i + 1) % clients.length]!.request({ op: 'find', name: ch.name }, CLIENT_TIMEOUT_MS)));
    const missing = replies.filter((r, i) => !(r.ok === true && r.online === true && r.channel === characters[i]!.channel));
    if (missing.length === 0) return Date.now() - t0;
    if (Date.now() - t0 > timeoutMs) throw new Error(`${missing.length} connected characters not found after ${timeoutMs} ms: ${JSON.stringify(missing.slice(0, 3))}`);
    await sleep(100);
  }
}

/**
 * Logs in `count` characters, one fresh connection each (`connect`), named by `nameOf(i)` on
 * channels 1-20; pushes them to `clients` and `characters`.
 */
export async function loginCharacters(
  connect: () => Promise<ChatClient>,
  count: number,
  nameOf: (i: number) => string,
  clients: ChatClient[],
  characters: Character[],
): Promise<void> {
  for (let i = 0; i < count; i++) {
    const ch = { name: nameOf(i), channel: (i % 20) + 1 };
    const client = await connect();
    const r = await client.request({ op: 'login', name: ch.name, channel: ch.channel });
    expect(r, JSON.stringify(r)).to.deep.include({ ok: true });
    clients.push(client);
    characters.push(ch);
  }
}

/**
 * `total` finds sent at once over `clients` (a quarter of them for names nobody uses), every
 * answer checked and every reply counted once; the ms they took.
 */
export async function concurrentFinds(clients: ChatClient[], characters: Character[], total: number): Promise<number> {
  const t0 = performance.now();
  const jobs: Promise<string | undefined>[] = [];
  for (let k = 0; k < total; k++) {
    const truth = k % 4 === 3 ? undefined : characters[(k * 7) % characters.length]!;
    const query = truth ? truth.name : `Ghost${k}`;
    jobs.push(clients[k % clients.length]!.request({ op: 'find', name: query }, CLIENT_TIMEOUT_MS).then((r) => (r.ok === true ? findProblem(query, truth, r) : `error ${r.error?.code}`)));
  }
  const problems = (await Promise.all(jobs)).filter((p) => p !== undefined);
  const ms = performance.now() - t0;
  expect(problems.slice(0, 5), `${problems.length} problem(s)`).to.deep.equal([]);
  for (const cl of clients) expectEachReplyOnce(cl);
  return ms;
}
