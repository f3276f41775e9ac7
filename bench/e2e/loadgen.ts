/**
 * The load generator of `npm run bench:e2e`, one process per server under test (forked by
 * run.ts, so its CPU is never counted as the server's). It speaks PROTOCOL.md with its own
 * minimal framing code (not src/protocol), holds the logged-in characters of the server on
 * dedicated connections, and runs the scenarios on command:
 *
 *   setup: log every character in (one connection each), then the load connections (each
 *          logs a character of its own in: find needs a logged-in connection).
 *   run:   `conns` load connections each keep `depth` requests in flight (find as op, or the
 *          chat form `/찾기 NAME`) through a warm-up and a measured window, then drain.
 *          Every reply is checked against the truth; CPU (utime+stime of /proc/<pid>/stat,
 *          every thread of each given pid) and RSS of the server's pids are read at the two
 *          ends of the window, in this process, so the window is the same for both.
 */
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { machineTicks } from '../cpu';
import { TICK_US, procCpuTicks, rssKb, threadCount } from './procfs';
import type { LoadCommand, LoadReport, Query, RunResult, ScenarioSpec } from './types';

const HEADER = 4;
const SLOTS = 1024;
const SLOT_MASK = SLOTS - 1;
const MAX_SAMPLES = 4_000_000;
const KO_FIND = '/찾기 ';

function send(msg: LoadReport): void {
  process.send!(msg);
}

function frameOf(body: string): Buffer {
  const len = Buffer.byteLength(body, 'utf8');
  const b = Buffer.allocUnsafe(HEADER + len);
  b.writeUInt32BE(len, 0);
  b.write(body, HEADER, 'utf8');
  return b;
}

/** Expected reply bodies of one query, as chatD writes them (key order of okReply), split around the id. */
interface PreparedQuery {
  q: Query;
  reqFind: [string, string];
  reqChat: [string, string];
  expFind: [string, string];
  expChat: [string, string];
  objFind: Record<string, unknown>;
  objChat: Record<string, unknown>;
}

function findResult(q: Query): Record<string, unknown> {
  return q.online ? { name: q.registered, online: true, channel: q.channel } : { name: q.sent.normalize('NFC'), online: false };
}

function koText(r: Record<string, unknown>): string {
  return r.online ? `${r.name as string}님은 ${r.channel as number}채널에 있습니다.` : `${r.name as string}님을 찾을 수 없습니다.`;
}

function split(obj: Record<string, unknown>): [string, string] {
  const whole = JSON.stringify({ ...obj, id: 0 });
  const prefix = JSON.stringify({ op: obj.op, id: 0 }).slice(0, -2); // {"op":"x","id":
  if (!whole.startsWith(`${prefix}0`)) throw new Error(`unexpected key order in ${whole}`);
  return [prefix, whole.slice(prefix.length + 1)];
}

function prepare(q: Query): PreparedQuery {
  const r = findResult(q);
  // Key order as chatD's okReply builds it: op, id, ok, then the fields.
  const objFind = { op: 'find', id: 0, ok: true, ...r };
  const objChat = { op: 'chat', id: 0, ok: true, command: 'find', result: r, text: koText(r) };
  return {
    q,
    reqFind: ['{"op":"find","id":', `,"name":${JSON.stringify(q.sent)}}`],
    reqChat: ['{"op":"chat","id":', `,"text":${JSON.stringify(KO_FIND + q.sent)}}`],
    expFind: split(objFind),
    expChat: split(objChat),
    objFind,
    objChat,
  };
}

function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (const k of ka) if (!sameJson((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false;
  return true;
}

/** One TCP connection to the server under test. */
class LoadConn {
  private chunks: Buffer[] = [];
  private buffered = 0;
  onBody: (body: string, now: number) => void = () => {};
  onAfterChunk: () => void = () => {};
  closed = false;

  constructor(readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (c: Buffer) => this.onData(c));
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
    });
  }

  static open(port: number): Promise<LoadConn> {
    return new Promise((resolve, reject) => {
      const s = connect({ port, host: '127.0.0.1' });
      s.once('connect', () => {
        s.removeAllListeners('error');
        resolve(new LoadConn(s));
      });
      s.once('error', reject);
    });
  }

  private onData(chunk: Buffer): void {
    const now = performance.now();
    let buf: Buffer;
    if (this.buffered === 0) buf = chunk;
    else {
      this.chunks.push(chunk);
      buf = Buffer.concat(this.chunks, this.buffered + chunk.length);
      this.chunks = [];
    }
    let at = 0;
    while (buf.length - at >= HEADER) {
      const len = buf.readUInt32BE(at);
      if (buf.length - at - HEADER < len) break;
      this.onBody(buf.toString('utf8', at + HEADER, at + HEADER + len), now);
      at += HEADER + len;
    }
    const rest = buf.length - at;
    if (rest > 0) {
      this.chunks = [at === 0 ? buf : buf.subarray(at)];
      this.buffered = rest;
    } else {
      this.chunks = [];
      this.buffered = 0;
    }
    this.onAfterChunk();
  }

  /** One request, one reply (setup only). */
  request(body: string, timeoutMs = 10_000): Promise<string> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no reply within ${timeoutMs} ms to ${body}`)), timeoutMs);
      this.onBody = (b) => {
        clearTimeout(t);
        this.onBody = () => {};
        resolve(b);
      };
      this.socket.write(frameOf(body));
    });
  }
}


// ---------------------------------------------------------------------------------------------

let port = 0;
const characterConns: LoadConn[] = [];
const loadConns: LoadConn[] = [];
let queries: PreparedQuery[] = [];

async function setup(cmd: Extract<LoadCommand, { type: 'setup' }>): Promise<void> {
  port = cmd.port;
  queries = cmd.queries.map(prepare);
  const t0 = performance.now();
  const problems: string[] = [];
  const loginAll = async (list: { name: string; channel: number }[], into: LoadConn[]): Promise<void> => {
    const BATCH = 50;
    for (let i = 0; i < list.length; i += BATCH) {
      await Promise.all(
        list.slice(i, i + BATCH).map(async (ch, j) => {
          const c = await LoadConn.open(port);
          into[i + j] = c;
          const id = i + j + 1;
          const reply = await c.request(JSON.stringify({ op: 'login', id, name: ch.name, channel: ch.channel }));
          const expected = JSON.stringify({ op: 'login', id, ok: true, name: ch.name, channel: ch.channel });
          if (reply !== expected && !sameJson(JSON.parse(reply), JSON.parse(expected))) problems.push(`login ${ch.name}: ${reply}`);
        }),
      );
    }
  };
  await loginAll(cmd.characters, characterConns);
  await loginAll(cmd.loadCharacters, loadConns);
  send({ type: 'setup-done', ms: performance.now() - t0, problems: problems.slice(0, 20), problemCount: problems.length });
}

async function run(spec: ScenarioSpec, pids: number[]): Promise<RunResult> {
  if (spec.conns > loadConns.length) throw new Error(`scenario ${spec.name} needs ${spec.conns} connections, have ${loadConns.length}`);
  const chat = spec.form === 'chat';
  const samples = new Float64Array(Math.min(MAX_SAMPLES, 1 << 22));
  let nSamples = 0;
  let phase: 'warmup' | 'measure' | 'drain' = 'warmup';
  let measured = 0;
  let sent = 0;
  let received = 0;
  let wrong = 0;
  let reordered = 0;
  let unknownId = 0;
  let pushes = 0;
  const errors: Record<string, number> = {};
  const wrongSamples: { sent: string; expected: unknown; got: string }[] = [];
  let outstanding = 0;
  let onDrained: (() => void) | undefined;
  const Q = queries.length;

  const states = loadConns.slice(0, spec.conns).map((c, index) => {
    const st = {
      c,
      nextId: 1,
      cursor: (index * 7919) % Q,
      slotId: new Int32Array(SLOTS).fill(-1),
      slotQ: new Int32Array(SLOTS),
      slotT: new Float64Array(SLOTS),
      toSend: 0,
    };
    const issue = (n: number): void => {
      if (n <= 0 || c.closed) return;
      const bufs: Buffer[] = [];
      const now = performance.now();
      for (let k = 0; k < n; k++) {
        const qi = st.cursor;
        st.cursor = st.cursor + 1 === Q ? 0 : st.cursor + 1;
        const id = st.nextId;
        st.nextId = id >= 0x7fff_fff0 ? 1 : id + 1;
        const slot = id & SLOT_MASK;
        st.slotId[slot] = id;
        st.slotQ[slot] = qi;
        st.slotT[slot] = now;
        const pq = queries[qi]!;
        const r = chat ? pq.reqChat : pq.reqFind;
        bufs.push(frameOf(r[0] + id + r[1]));
      }
      sent += n;
      outstanding += n;
      c.socket.write(bufs.length === 1 ? bufs[0]! : Buffer.concat(bufs));
    };
    c.onBody = (body, now) => {
      const at = body.indexOf('"id":');
      if (at < 0) {
        pushes++;
        return;
      }
      let id = 0;
      let p = at + 5;
      for (let ch = body.charCodeAt(p); ch >= 48 && ch <= 57; ch = body.charCodeAt(++p)) id = id * 10 + (ch - 48);
      const slot = id & SLOT_MASK;
      if (st.slotId[slot] !== id) {
        unknownId++;
        return;
      }
      st.slotId[slot] = -1;
      outstanding--;
      received++;
      const pq = queries[st.slotQ[slot]!]!;
      const exp = chat ? pq.expChat : pq.expFind;
      if (body !== exp[0] + id + exp[1]) {
        let got: Record<string, unknown> | undefined;
        try {
          got = JSON.parse(body) as Record<string, unknown>;
        } catch {
          /* counted as wrong below */
        }
        if (got && got.ok === false) {
          const code = String((got.error as { code?: unknown } | undefined)?.code ?? 'UNKNOWN');
          errors[code] = (errors[code] ?? 0) + 1;
        } else if (got && sameJson(got, { ...(chat ? pq.objChat : pq.objFind), id })) {
          reordered++;
        } else {
          wrong++;
          if (wrongSamples.length < 10) wrongSamples.push({ sent: pq.q.sent, expected: { ...(chat ? pq.objChat : pq.objFind), id }, got: body });
        }
      }
      if (phase === 'measure') {
        measured++;
        if (nSamples < samples.length) samples[nSamples++] = now - st.slotT[slot]!;
      }
      if (phase !== 'drain') st.toSend++;
    };
    c.onAfterChunk = () => {
      const n = st.toSend;
      st.toSend = 0;
      issue(n);
      if (phase === 'drain' && outstanding === 0 && onDrained) onDrained();
    };
    return { st, issue };
  });

  for (const s of states) s.issue(spec.depth);
  await sleep(spec.warmupMs);

  // The measured window: CPU and machine ticks at both ends, in this process.
  const cpu0 = pids.map(procCpuTicks);
  const self0 = procCpuTicks(process.pid);
  const mach0 = machineTicks();
  const t0 = performance.now();
  phase = 'measure';
  await sleep(spec.measureMs);
  phase = 'drain';
  const t1 = performance.now();
  const cpu1 = pids.map(procCpuTicks);
  const self1 = procCpuTicks(process.pid);
  const mach1 = machineTicks();
  const rss = pids.map(rssKb);
  const threads = pids.map(threadCount);

  const drainStart = performance.now();
  if (outstanding > 0) {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, spec.drainTimeoutMs);
      onDrained = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }
  const missing = outstanding;
  for (const s of states) {
    s.st.c.onBody = () => {};
    s.st.c.onAfterChunk = () => {};
  }
  // Requests still unanswered are forgotten; their replies (if any) would be ignored.
  const wallMs = t1 - t0;
  const cpuUsPerPid = pids.map((_, i) => (cpu1[i]! - cpu0[i]!) * TICK_US);
  const cpuUs = cpuUsPerPid.reduce((a, b) => a + b, 0);
  const lat = samples.subarray(0, nSamples).sort();
  const at = (q: number): number => (nSamples === 0 ? NaN : lat[Math.min(nSamples - 1, Math.floor(nSamples * q))]! * 1000);
  return {
    scenario: spec.name,
    wallMs,
    replies: measured,
    reqPerSec: (measured * 1000) / wallMs,
    latencyUs: { p50: at(0.5), p95: at(0.95), p99: at(0.99), max: nSamples ? lat[nSamples - 1]! * 1000 : NaN, samples: nSamples },
    cpuUs,
    cpuUsPerPid,
    cpuUsPerReq: measured > 0 ? cpuUs / measured : NaN,
    serverCpuPct: (cpuUs / 1000 / wallMs) * 100,
    machineBusyPct: ((mach1.busy - mach0.busy) * TICK_US) / 1000 / wallMs * 100,
    loadgenCpuPct: ((self1 - self0) * TICK_US) / 1000 / wallMs * 100,
    rssKb: rss,
    threads,
    sent,
    received,
    wrong,
    reordered,
    errors,
    missing,
    unknownId,
    pushes,
    drainMs: performance.now() - drainStart,
    wrongSamples,
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

process.on('message', (cmd: LoadCommand) => {
  const fail = (err: unknown): void => send({ type: 'error', message: (err as Error).stack ?? String(err) });
  switch (cmd.type) {
    case 'setup':
      setup(cmd).catch(fail);
      break;
    case 'run':
      run(cmd.spec, cmd.pids).then((result) => send({ type: 'result', result }), fail);
      break;
    case 'close':
      for (const c of [...characterConns, ...loadConns]) c?.socket.destroy();
      send({ type: 'closed' });
      break;
  }
});
process.on('disconnect', () => process.exit(0));
