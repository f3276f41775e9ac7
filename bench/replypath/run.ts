/**
 * `npm run bench:replypath`: the reply path of a request/reply exchange, four ways
 * (docs/reply-path.md). A front process (Endpoint.request, ~30-byte payloads) and a shard
 * process (an Endpoint answering every request); requests always go over a System V queue
 * (a fresh IPC_PRIVATE one per run, default 16 KiB); replies over the queue, a Unix socket,
 * or a shared-memory ring (woken by futex, or polled).
 *
 * Loads: window 1 (one request at a time: idle round trip), 64 and 1,024 requests in flight.
 * Within a load the paths run in alternating order (A B C D, D C B A, ...), REPLY_ROUNDS
 * rounds (default 3). CPU per request: both processes, all threads (process.cpuUsage over
 * the measured window, /proc/<pid>/task for the per-thread split).
 *
 * Cleanup on every way out (also SIGINT/SIGTERM/SIGHUP and errors): queues removed, children
 * killed, socket and /dev/shm files unlinked.
 *
 * Environment: REPLY_ROUNDS=<n>; REPLY_ONLY=<regex> on "<path> w<window>";
 * REPLY_RESULTS=<file> (default bench/results/replypath-latest.json).
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { SysvQueue, readKernelLimit } from '../../src/ipc';
import { round } from '../common';
import { machineBusyPct, machineTicks } from '../cpu';
import { REPLY_PATHS, type ReplyPath } from './reply-channel';
import type { FromPeer, ReplyTask, ToPeer } from './peer';

const ROOT = resolve(__dirname, '..', '..', '..');
const PEER = join(__dirname, 'peer.js');
const ROUNDS = Number(process.env.REPLY_ROUNDS) || 3;
const ONLY = process.env.REPLY_ONLY ? new RegExp(process.env.REPLY_ONLY) : undefined;
const RESULTS = process.env.REPLY_RESULTS ? resolve(process.env.REPLY_RESULTS) : join(ROOT, 'bench', 'results', 'replypath-latest.json');
const WARMUP_MS = 300;
const MEASURE_MS = 700;
const WINDOWS = [1, 64, 1024];

// ---------------------------------------------------------------------------------------------
// Cleanup.

const liveQueues = new Set<SysvQueue>();
const liveChildren = new Set<ChildProcess>();
const liveFiles = new Set<string>();

function cleanupAll(): void {
  for (const ch of liveChildren) {
    try {
      ch.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
  liveChildren.clear();
  for (const q of liveQueues) {
    try {
      q.remove();
    } catch {
      /* gone */
    }
  }
  liveQueues.clear();
  for (const f of liveFiles) rmSync(f, { force: true });
  liveFiles.clear();
}
process.on('exit', cleanupAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    cleanupAll();
    process.stderr.write(`\nbench:replypath: ${sig}, queues removed, children killed, files unlinked\n`);
    process.exit(130);
  });
}
process.on('uncaughtException', (err) => {
  cleanupAll();
  process.stderr.write(`bench:replypath: ${err.stack ?? err.message}\n`);
  process.exit(1);
});

let seq = 0;

interface PeerHandle {
  ready: Promise<void>;
  result: Promise<Record<string, unknown>>;
  go(): void;
  child: ChildProcess;
}

function startPeer(task: ReplyTask, timeoutMs: number): PeerHandle {
  const ch = fork(PEER, [task.role], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  liveChildren.add(ch);
  ch.on('exit', () => liveChildren.delete(ch));
  let onReady!: () => void;
  let onResult!: (r: Record<string, unknown>) => void;
  let rejectReady!: (e: Error) => void;
  let rejectResult!: (e: Error) => void;
  const ready = new Promise<void>((res, rej) => ((onReady = res), (rejectReady = rej)));
  const result = new Promise<Record<string, unknown>>((res, rej) => ((onResult = res), (rejectResult = rej)));
  ready.catch(() => {});
  result.catch(() => {});
  const fail = (e: Error): void => {
    rejectReady(e);
    rejectResult(e);
  };
  const timer = setTimeout(() => fail(new Error(`${task.role}: no result in ${timeoutMs} ms`)), timeoutMs);
  ch.on('message', (m: FromPeer) => {
    if (m.type === 'ready') onReady();
    else if (m.type === 'result') {
      clearTimeout(timer);
      onResult(m.result);
    } else fail(new Error(m.message));
  });
  ch.on('exit', (code, sig) => {
    clearTimeout(timer);
    fail(new Error(`${task.role} exited (${code ?? sig})`));
  });
  ch.send({ type: 'task', task } satisfies ToPeer);
  return { ready, result, go: () => ch.send({ type: 'go' } satisfies ToPeer), child: ch };
}

function stopChild(ch: ChildProcess): Promise<void> {
  if (ch.exitCode !== null || ch.signalCode !== null) return Promise.resolve();
  return new Promise((res) => {
    const timer = setTimeout(() => ch.kill('SIGKILL'), 300);
    ch.once('exit', () => {
      clearTimeout(timer);
      res();
    });
    if (ch.connected) ch.disconnect();
    else ch.kill('SIGKILL');
  });
}

/** One front + one shard on a fresh queue; everything removed afterwards. */
async function runOnce(path: ReplyPath, window: number): Promise<Record<string, unknown>> {
  const q = SysvQueue.createPrivate(0o600);
  liveQueues.add(q);
  const n = ++seq;
  const sockPath = join(tmpdir(), `chatd-replypath-${process.pid}-${n}.sock`);
  const shmPath = `/dev/shm/chatd-replypath-${process.pid}-${n}`;
  liveFiles.add(sockPath);
  liveFiles.add(shmPath);
  const peers: PeerHandle[] = [];
  try {
    const base = { path, queueId: q.id, sockPath, shmPath, window, warmupMs: WARMUP_MS, measureMs: MEASURE_MS };
    const timeout = WARMUP_MS + MEASURE_MS + 15_000;
    // The front first: it listens on the socket / creates the ring the shard then opens.
    const front = startPeer({ ...base, role: 'front' }, timeout);
    peers.push(front);
    await front.ready;
    const shard = startPeer({ ...base, role: 'shard' }, timeout);
    peers.push(shard);
    await shard.ready;
    shard.go();
    front.go();
    const [f, s] = await Promise.all([front.result, shard.result]);
    const fc = f.cpu as Record<string, number>;
    const sc = s.cpu as Record<string, number>;
    const seconds = Number(f.seconds);
    const count = Number(f.count);
    const cpuUsPerReq = round((((fc.processPct + sc.processPct) / 100) * seconds * 1e6) / count, 2);
    return { ...f, shard: s, cpuUsPerReq, queueAfter: q.stat() };
  } finally {
    try {
      q.remove();
    } catch {
      /* gone */
    }
    liveQueues.delete(q);
    await Promise.all(peers.map((p) => stopChild(p.child)));
    for (const f of [sockPath, shmPath]) {
      rmSync(f, { force: true });
      liveFiles.delete(f);
    }
  }
}

/**
 * Calibration: the C one-at-a-time round trip of bench/c/mq-pingpong.c on its own queue,
 * to tell how fast this machine's wake-ups are today (docs/benchmarks.md has 9.5 µs p50).
 */
function cPingpong(): Record<string, unknown> | { error: string } {
  const src = join(ROOT, 'bench', 'c', 'mq-pingpong.c');
  const bin = join(ROOT, 'bench', 'build', 'mq-pingpong');
  const q = SysvQueue.createPrivate(0o600);
  liveQueues.add(q);
  try {
    let fresh = false;
    try {
      fresh = statSync(bin).mtimeMs >= statSync(src).mtimeMs;
    } catch {
      fresh = false;
    }
    if (!fresh) {
      mkdirSync(dirname(bin), { recursive: true });
      execFileSync('gcc', ['-O2', '-o', bin, src], { stdio: 'inherit' });
    }
    const out = execFileSync(bin, ['pingpong', String(q.id), '200', '600', '30'], { timeout: 10_000, encoding: 'utf8' });
    return JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;
  } catch (err) {
    return { error: (err as Error).message };
  } finally {
    try {
      q.remove();
    } catch {
      /* gone */
    }
    liveQueues.delete(q);
  }
}

// ---------------------------------------------------------------------------------------------

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const fmt = (v: number): string => (Number.isNaN(v) ? '-' : v >= 100 ? Math.round(v).toLocaleString('en-US') : String(round(v, 1)));
const span = (xs: number[]): string => `${fmt(median(xs))} (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})`;

interface Row {
  path: ReplyPath;
  window: number;
  runs: Record<string, unknown>[];
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const msgmnb = readKernelLimit('msgmnb', 16384);
  process.stderr.write(
    `bench:replypath: ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), Linux ${release()}, msgmnb ${msgmnb}, Node ${process.versions.node}, ${ROUNDS} rounds\n`,
  );
  const calibration = [cPingpong()];
  const rows: Row[] = [];
  for (const window of WINDOWS) {
    const sel = REPLY_PATHS.filter((p) => !ONLY || ONLY.test(`${p} w${window}`));
    if (sel.length === 0) continue;
    const byPath = new Map<ReplyPath, Row>(sel.map((p) => [p, { path: p, window, runs: [] }]));
    for (let r = 0; r < ROUNDS; r++) {
      for (const p of r % 2 === 0 ? sel : [...sel].reverse()) {
        const m0 = machineTicks();
        const w0 = Date.now();
        try {
          const res = await runOnce(p, window);
          byPath.get(p)!.runs.push({ ...res, round: r, machinePctRun: machineBusyPct(m0, machineTicks(), Date.now() - w0) });
        } catch (err) {
          byPath.get(p)!.runs.push({ round: r, error: (err as Error).message });
          process.stderr.write(`bench:replypath: ${p} w${window}: ${(err as Error).message}\n`);
        }
      }
    }
    for (const p of sel) {
      const row = byPath.get(p)!;
      rows.push(row);
      const ok = row.runs.filter((x) => x.error === undefined);
      const rates = ok.map((x) => Number(x.perSecond));
      process.stderr.write(`  ${`${p} w${window}`.padEnd(14)} ${rates.length ? `${fmt(median(rates))} req/s [${rates.map(fmt).join(', ')}]` : 'FAILED'}\n`);
    }
  }

  calibration.push(cPingpong());
  const cal = calibration.map((c) => ('error' in c ? `failed (${String(c.error)})` : `${fmt(Number(c.perSecond))}/s, RTT p50 ${String(c.rttP50us)} µs, p99 ${String(c.rttP99us)} µs`));
  process.stderr.write(`calibration, C one-at-a-time round trip before / after: ${cal.join(' / ')}\n`);

  // Table (markdown).
  const lines = [
    '| path | window | replies/s, median (range) | RTT p50 µs | RTT p99 µs | CPU µs/req (both processes) | front main / other threads % | shard % | notes |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const row of rows) {
    const ok = row.runs.filter((x) => x.error === undefined);
    if (ok.length === 0) {
      lines.push(`| ${row.path} | ${row.window} | FAILED | | | | | | ${String(row.runs[0]?.error ?? '')} |`);
      continue;
    }
    const num = (f: (x: Record<string, unknown>) => number): number[] => ok.map(f);
    const rtt = (k: 'p50' | 'p99') => num((x) => (x.rttUs as Record<string, number>)[k]!);
    const fcpu = (k: string) => num((x) => (x.cpu as Record<string, number>)[k]!);
    const shard = num((x) => ((x.shard as Record<string, unknown>).cpu as Record<string, number>).processPct!);
    const rpe = median(num((x) => Number(x.requestsPerEnvelope)));
    const src = ok[ok.length - 1]!.source as Record<string, number> | undefined;
    const notes = [`${fmt(rpe)} req/envelope`];
    if (src && 'polls' in src) notes.push(`${src.backoffs} back-offs`);
    const failed = num((x) => Number(x.failed)).reduce((a, b) => a + b, 0);
    const deferred = num((x) => Number(x.deferredSends)).reduce((a, b) => a + b, 0);
    if (failed) notes.push(`${failed} failed`);
    if (deferred) notes.push(`${deferred} sends deferred`);
    if (ok.length < row.runs.length) notes.push(`${row.runs.length - ok.length} round(s) failed`);
    lines.push(
      `| ${row.path} | ${row.window} | ${span(num((x) => Number(x.perSecond)))} | ${span(rtt('p50'))} | ${span(rtt('p99'))} | ${span(num((x) => Number(x.cpuUsPerReq)))} | ${fmt(median(fcpu('mainPct')))} / ${fmt(median(fcpu('otherThreadsPct')))} | ${fmt(median(shard))} | ${notes.join('; ')} |`,
    );
  }
  const table = lines.join('\n');
  process.stdout.write(`\n${table}\n\n`);
  mkdirSync(dirname(RESULTS), { recursive: true });
  writeFileSync(
    RESULTS,
    JSON.stringify({ date: new Date().toISOString(), seconds: round((Date.now() - t0) / 1000), nproc: cpus().length, msgmnb, rounds: ROUNDS, warmupMs: WARMUP_MS, measureMs: MEASURE_MS, calibration, rows, table }, null, 1),
  );
  process.stderr.write(`bench:replypath: ${round((Date.now() - t0) / 1000)} s, results in ${RESULTS}\n`);
}

main().then(
  () => {
    cleanupAll();
    process.exit(0);
  },
  (err: Error) => {
    cleanupAll();
    process.stderr.write(`bench:replypath: ${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
