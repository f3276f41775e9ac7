import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { ChatClient, type Reply, type Timed } from '../helpers/chat-client';
import { useCluster } from '../helpers/cluster';
import { cleanupChecks, expectEachReplyOnce, percentile } from './e2e-support';

/**
 * Load over real TCP: 1,000 connections with 1,000 distinct characters (a third with Hangul
 * names) spread over the 20 channels, then 50,000 finds in flight at once, pipelined over
 * every connection: half op `find`, half chat `/찾기 NAME`, for online characters (queried in
 * another letter case where the name has one) and offline names. Every id must be answered
 * exactly once and every answer must be right. Throughput and latency are printed.
 */

const CONNECTIONS = 1000;
const REQUESTS = 50_000;
const CHANNELS = 20;
const SHARDS = 4;
/** Client-side bound on one reply: far above the server's own 1.5 s request timeout. */
const CLIENT_TIMEOUT_MS = 60_000;

/** The soft RLIMIT_NOFILE of a process, from /proc. */
function openFileLimit(pid: number | 'self'): number {
  const line = readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
  const soft = line?.split(/\s+/)[3];
  return soft === 'unlimited' ? Infinity : Number(soft);
}

interface Character {
  name: string;
  channel: number;
}

function characterName(i: number): string {
  if (i % 3 === 0) return `전사${i}호`;
  if (i % 3 === 1) return `Player_${i}`;
  return `Kim${i}x`;
}

/** A query for an online name: in another letter case where the name has one. */
function queryFor(name: string, k: number): string {
  if (k % 4 === 0) return name.toUpperCase();
  if (k % 4 === 1) return name.toLowerCase();
  return name;
}

async function inBatches<T>(count: number, batch: number, make: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(count);
  for (let start = 0; start < count; start += batch) {
    const end = Math.min(count, start + batch);
    const part = await Promise.all(Array.from({ length: end - start }, (_, j) => make(start + j)));
    part.forEach((v, j) => (out[start + j] = v));
  }
  return out;
}

describe('load (e2e): 1,000 connections, 50,000 concurrent finds', function () {
  this.timeout(180_000);
  // 50,000 requests in flight at once queue for a second or more on two shared cores: the
  // server's own 1.5 s deadline would turn that queueing into TIMEOUT replies. This suite
  // checks answers and exactly-once delivery, so the deadline is raised; the timeout path has
  // tests of its own (chatd-local, failure).
  const cluster = useCluster({ shards: SHARDS, label: 'load', env: { CHATD_REQUEST_TIMEOUT_MS: '10000' } });
  const clients: ChatClient[] = [];
  const characters: Character[] = [];

  it('the open-file limits fit 1,000 connections on both sides', async () => {
    // Client sockets live in this process, server sockets in chatD: each needs CONNECTIONS
    // descriptors plus its own (queue threads, logs, PM2 pipes).
    const mine = openFileLimit('self');
    const chatd = openFileLimit(await cluster().pid('chatd'));
    const need = CONNECTIONS + 200;
    expect(mine, `this process's RLIMIT_NOFILE is ${mine}; raise it (ulimit -n ${need * 2}) to run this suite`).to.be.at.least(need);
    expect(chatd, `chatD's RLIMIT_NOFILE is ${chatd}; raise it (ulimit -n before pm2 start) to run this suite`).to.be.at.least(need);
  });

  it(`logs in ${CONNECTIONS} distinct characters over ${CHANNELS} channels`, async () => {
    const t0 = Date.now();
    const made = await inBatches(CONNECTIONS, 100, async (i) => {
      const c = await cluster().client({ requestTimeoutMs: CLIENT_TIMEOUT_MS });
      const ch: Character = { name: characterName(i), channel: (i % CHANNELS) + 1 };
      const r = await c.request({ op: 'login', name: ch.name, channel: ch.channel });
      expect(r, JSON.stringify(r)).to.deep.equal({ op: 'login', id: r.id, ok: true, name: ch.name, channel: ch.channel });
      return { c, ch };
    });
    for (const { c, ch } of made) {
      clients.push(c);
      characters.push(ch);
    }
    expect(new Set(characters.map((c) => c.name.toLowerCase())).size).to.equal(CONNECTIONS);
    console.log(`      (${CONNECTIONS} logins in ${Date.now() - t0} ms)`);
  });

  it(`answers ${REQUESTS} pipelined finds (half op find, half /찾기) exactly once each, every answer right`, async () => {
    expect(clients).to.have.length(CONNECTIONS);
    interface Expectation {
      k: number;
      kind: 'find' | 'chat';
      query: string;
      online: Character | undefined;
    }
    const expectations: Expectation[] = [];
    const perClient: Promise<Timed>[][] = clients.map(() => []);
    const sent: { c: number; k: number }[] = [];
    // Deterministic spread: request k goes out on connection k % CONNECTIONS.
    for (let k = 0; k < REQUESTS; k++) {
      const offline = k % 3 === 2;
      const target = offline ? undefined : characters[(k * 7919) % CONNECTIONS]!;
      const query = offline ? (k % 2 ? `Ghost_${k}` : `유령${k}`) : queryFor(target!.name, k);
      expectations.push({ k, kind: k % 2 === 0 ? 'find' : 'chat', query, online: target });
      sent.push({ c: k % CONNECTIONS, k });
    }
    const t0 = performance.now();
    let lastReplyAt = t0;
    for (let ci = 0; ci < CONNECTIONS; ci++) clients[ci]!.socket.cork();
    for (const { c, k } of sent) {
      const e = expectations[k]!;
      const req = e.kind === 'find' ? { op: 'find', id: 100_000 + k, name: e.query } : { op: 'chat', id: 100_000 + k, text: `/찾기 ${e.query}` };
      perClient[c]!.push(
        clients[c]!.timedRequest(req, CLIENT_TIMEOUT_MS).then((t) => {
          lastReplyAt = performance.now();
          return t;
        }),
      );
    }
    for (let ci = 0; ci < CONNECTIONS; ci++) clients[ci]!.socket.uncork();
    const sentAt = performance.now();

    const results = await Promise.allSettled(perClient.flat());
    const elapsedMs = lastReplyAt - t0;

    // Promise order per client is send order: map each back to its request index.
    const ordered: PromiseSettledResult<Timed>[] = new Array(REQUESTS);
    {
      let idx = 0;
      const byClient: number[][] = clients.map(() => []);
      for (const { c, k } of sent) byClient[c]!.push(k);
      for (let c = 0; c < CONNECTIONS; c++) for (const k of byClient[c]!) ordered[k] = results[idx++]!;
    }

    const latencies: number[] = [];
    const missing: string[] = [];
    const wrong: string[] = [];
    const errors = new Map<string, number>();
    const wrongKinds = new Map<string, number>();
    for (let k = 0; k < REQUESTS; k++) {
      const res = ordered[k]!;
      const e = expectations[k]!;
      if (res.status === 'rejected') {
        missing.push(`#${k}: ${(res.reason as Error).message}`);
        continue;
      }
      latencies.push(res.value.latencyMs);
      const r: Reply = res.value.reply;
      if (r.ok !== true) {
        const code = r.error?.code ?? '?';
        errors.set(code, (errors.get(code) ?? 0) + 1);
        continue;
      }
      const problem = checkAnswer(e, r);
      if (problem) wrongKinds.set(problem, (wrongKinds.get(problem) ?? 0) + 1);
      if (problem) wrong.push(`#${k} ${JSON.stringify({ query: e.query, kind: e.kind, online: e.online })} -> ${JSON.stringify(r)}: ${problem}`);
    }
    latencies.sort((a, b) => a - b);
    const throughput = (latencies.length / elapsedMs) * 1000;
    console.log(
      `      load: ${REQUESTS} finds over ${CONNECTIONS} connections in ${elapsedMs.toFixed(0)} ms ` +
        `(written in ${(sentAt - t0).toFixed(0)} ms): ${throughput.toFixed(0)} requests/s; latency ms ` +
        `p50 ${percentile(latencies, 50).toFixed(1)}, p95 ${percentile(latencies, 95).toFixed(1)}, ` +
        `p99 ${percentile(latencies, 99).toFixed(1)}, max ${latencies[latencies.length - 1]?.toFixed(1)}`,
    );
    if (errors.size > 0) console.log(`      error replies: ${JSON.stringify(Object.fromEntries(errors))}`);
    if (wrongKinds.size > 0) console.log(`      WRONG answers: ${JSON.stringify(Object.fromEntries(wrongKinds))}`);
    for (const c of clients) expectEachReplyOnce(c);
    expect(missing.slice(0, 5), `${missing.length} request(s) never answered`).to.deep.equal([]);
    expect(wrong.slice(0, 5), `${wrong.length} wrong answer(s)`).to.deep.equal([]);
    expect(Object.fromEntries(errors), 'error replies (every find should succeed on a healthy cluster)').to.deep.equal({});
    for (const c of clients) {
      expect(c.pushes, 'no pushes expected').to.deep.equal([]);
      expect(c.isClosed).to.equal(false);
    }
  });

  it('every character is still online in its channel afterwards', async () => {
    const replies = await Promise.all(characters.map((ch, i) => clients[(i + 1) % CONNECTIONS]!.request({ op: 'find', name: ch.name })));
    replies.forEach((r, i) => expect(r).to.deep.include({ ok: true, online: true, name: characters[i]!.name, channel: characters[i]!.channel }));
  });

  describe('end', () => {
    cleanupChecks(cluster);
  });
});

function checkAnswer(e: { kind: 'find' | 'chat'; query: string; online: Character | undefined }, r: Reply): string | undefined {
  const said = (e.kind === 'find' ? r : (r.result as Record<string, unknown> | undefined)) ?? {};
  if (e.online && said.online === false) return 'an online character reported offline';
  if (!e.online && said.online === true) return 'an offline name reported online';
  if (e.online && said.channel !== e.online.channel) return 'wrong channel';
  const want = e.online
    ? { name: e.online.name, online: true, channel: e.online.channel }
    : { name: e.query, online: false };
  if (e.kind === 'find') {
    const expected = { op: 'find', id: r.id, ok: true, ...want };
    return JSON.stringify(sortKeys(r)) === JSON.stringify(sortKeys(expected)) ? undefined : 'find reply differs';
  }
  const text = e.online ? `${e.online.name}님은 ${e.online.channel}채널에 있습니다.` : `${e.query}님을 찾을 수 없습니다.`;
  const expected = { op: 'chat', id: r.id, ok: true, command: 'find', result: want, text };
  return JSON.stringify(sortKeys(r)) === JSON.stringify(sortKeys(expected)) ? undefined : '/찾기 reply differs';
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]));
  }
  return v;
}
