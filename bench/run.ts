/**
 * `npm run bench`: every scenario of docs/benchmarks.md in one run, on this machine.
 *
 *   1  C baseline (bench/c/mq-pingpong.c, built here with gcc): one-at-a-time round trips,
 *      pipelined requests with a window.
 *   2  Node through src/ipc: (a) one at a time, (b) pipelined one request per kernel message
 *      (SysvTransport), (c) many requests per kernel message (Endpoint batching). Every Node
 *      run is made with both hand-overs of the receiver (SysvReceiverOptions.handover):
 *      'post' (transferred ArrayBuffer, postMessage) and 'ring' (SharedArrayBuffer ring,
 *      Atomics.notify / Atomics.waitAsync), in the same interleaved rounds.
 *   3  The hand-over alone: src/ipc's receiver with each hand-over, fed by a C producer
 *      (flood, and paced at one message every 100 µs).
 *   4  Cost of one koffi msgsnd/msgrcv (IPC_NOWAIT) on the main thread, against C.
 *
 * Every run gets a fresh IPC_PRIVATE queue, removed afterwards whatever happens (also on
 * SIGINT/SIGTERM); every child process is killed. Prints a table and writes
 * bench/results/latest.json.
 *
 * Environment: BENCH_ONLY=<regex> runs the matching runs only (matched against the run name,
 * e.g. "node-b" or "handover"); BENCH_QUICK=1 halves the times and runs each config once;
 * BENCH_REPEAT=<n> sets the number of rounds (default 2); BENCH_RESULTS=<file> writes the
 * figures there instead of bench/results/latest.json;
 * BENCH_CPU_PROF=<dir> runs the Node peers with --cpu-prof into <dir> (summarise with
 * `node dist/bench/prof-summary.js <file>`).
 */
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { SysvQueue, readKernelLimit } from '../src/ipc';
import { DEFAULT_HANDOVER } from '../src/ipc/sysv/sysv-receiver';
import { machineBusyPct, machineTicks } from './cpu';
import { MTYPE_FLOOD, PAYLOAD_BYTES, round, type Handover, type PeerReport, type PeerTask, type RunnerCommand } from './common';

const ROOT = resolve(__dirname, '..', '..');
const C_SRC = join(ROOT, 'bench', 'c', 'mq-pingpong.c');
const C_BIN = join(ROOT, 'bench', 'build', 'mq-pingpong');
const RESULTS = process.env.BENCH_RESULTS ? resolve(process.env.BENCH_RESULTS) : join(ROOT, 'bench', 'results', 'latest.json');
const PEER = join(__dirname, 'peer.js');

const QUICK = process.env.BENCH_QUICK === '1';
const ONLY = process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY) : undefined;
const CPU_PROF = process.env.BENCH_CPU_PROF ? resolve(process.env.BENCH_CPU_PROF) : undefined;
const scale = (ms: number): number => (QUICK ? Math.round(ms / 2) : ms);
/** Rounds of every group (see measureGroup). */
const REPEAT = Number(process.env.BENCH_REPEAT) || (QUICK ? 1 : 2);
const C_WARMUP = scale(200);
const C_MEASURE = scale(800);
const NODE_WARMUP = scale(400);
const NODE_MEASURE = scale(1000);

// ---------------------------------------------------------------------------------------------
// Cleanup: every queue and child this process made, undone on any way out.

const liveQueues = new Set<SysvQueue>();
const liveChildren = new Set<ChildProcess>();

function killAll(): void {
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
}

process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    killAll();
    process.stderr.write(`\nbench: ${sig}, queues removed, children killed\n`);
    process.exit(130);
  });
}
process.on('uncaughtException', (err) => {
  killAll();
  process.stderr.write(`bench: ${err.stack ?? err.message}\n`);
  process.exit(1);
});

/** Runs `fn` with a fresh private queue that is removed afterwards, with its children killed. */
async function withQueue<T>(fn: (q: SysvQueue, own: (ch: ChildProcess) => ChildProcess) => Promise<T>): Promise<T> {
  const q = SysvQueue.createPrivate(0o600);
  liveQueues.add(q);
  const mine: ChildProcess[] = [];
  const own = (ch: ChildProcess): ChildProcess => {
    mine.push(ch);
    liveChildren.add(ch);
    ch.on('exit', () => liveChildren.delete(ch));
    return ch;
  };
  try {
    return await fn(q, own);
  } finally {
    // Remove the queue first: receiver threads blocked in msgrcv wake with EIDRM and the
    // children can exit on their own (which lets --cpu-prof write its profile).
    try {
      q.remove();
    } catch {
      /* already gone */
    }
    liveQueues.delete(q);
    await Promise.all(mine.map((ch) => stopChild(ch)));
  }
}

function stopChild(ch: ChildProcess): Promise<void> {
  if (ch.exitCode !== null || ch.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => ch.kill('SIGKILL'), CPU_PROF ? 5000 : 300);
    ch.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    if (ch.connected) ch.disconnect(); // peers exit on disconnect
    else ch.kill('SIGKILL');
  });
}

// ---------------------------------------------------------------------------------------------
// Children.

function buildC(): void {
  mkdirSync(join(ROOT, 'bench', 'build'), { recursive: true });
  let fresh = false;
  try {
    fresh = statSync(C_BIN).mtimeMs >= statSync(C_SRC).mtimeMs;
  } catch {
    fresh = false;
  }
  if (!fresh) execFileSync('gcc', ['-O2', '-Wall', '-Wextra', '-o', C_BIN, C_SRC], { stdio: 'inherit' });
}

/** Runs the C program; adds its CPU use (both processes, whole run) in % of one core. */
async function runCMeasured(own: (ch: ChildProcess) => ChildProcess, args: (string | number)[], timeoutMs: number, pin = ''): Promise<Record<string, unknown>> {
  const r = await runC(own, args, timeoutMs, pin);
  return { ...r, cpuPct: round((Number(r.cpuSec) / Number(r.wallSec)) * 100) };
}

/** Runs the C program; resolves with its JSON line. */
function runC(own: (ch: ChildProcess) => ChildProcess, args: (string | number)[], timeoutMs: number, pin = ''): Promise<Record<string, unknown>> {
  return new Promise((resolveRun, reject) => {
    const ch = own(spawn(C_BIN, args.map(String), { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, BENCH_PIN: pin } }));
    let out = '';
    ch.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => {
      ch.kill('SIGKILL');
      reject(new Error(`mq-pingpong ${args.join(' ')}: no result in ${timeoutMs} ms`));
    }, timeoutMs);
    ch.on('exit', (code, sig) => {
      clearTimeout(timer);
      const line = out.trim().split('\n').pop() ?? '';
      if (code !== 0) return reject(new Error(`mq-pingpong ${args.join(' ')}: exit ${code ?? sig}`));
      try {
        resolveRun(JSON.parse(line) as Record<string, unknown>);
      } catch {
        reject(new Error(`mq-pingpong ${args.join(' ')}: bad output ${JSON.stringify(out)}`));
      }
    });
  });
}

interface Peer {
  ready: Promise<void>;
  result: Promise<Record<string, unknown>>;
  go(): void;
}

let profSeq = 0;
function startPeer(own: (ch: ChildProcess) => ChildProcess, task: PeerTask, timeoutMs: number): Peer {
  const execArgv = CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${join(CPU_PROF, `${task.role}-${++profSeq}`)}`] : [];
  const ch = own(fork(PEER, [task.role], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv }));
  let onReady!: () => void;
  let onResult!: (r: Record<string, unknown>) => void;
  let onError!: (e: Error) => void;
  const ready = new Promise<void>((res, rej) => {
    onReady = res;
    onError = rej;
  });
  const result = new Promise<Record<string, unknown>>((res, rej) => {
    onResult = res;
    const prev = onError;
    onError = (e) => {
      prev(e);
      rej(e);
    };
  });
  // Neither promise may be left unhandled when the other one is the one awaited.
  ready.catch(() => {});
  result.catch(() => {});
  const timer = setTimeout(() => onError(new Error(`${task.role}: no result in ${timeoutMs} ms`)), timeoutMs);
  ch.on('message', (msg: PeerReport) => {
    if (msg.type === 'ready') onReady();
    else if (msg.type === 'result') {
      clearTimeout(timer);
      onResult(msg.result);
    } else if (msg.type === 'error') onError(new Error(msg.message));
  });
  ch.on('exit', (code, sig) => onError(new Error(`${task.role} exited (${code ?? sig})`)));
  ch.send({ type: 'task', task } satisfies RunnerCommand);
  return { ready, result, go: () => ch.send({ type: 'go' } satisfies RunnerCommand) };
}

// ---------------------------------------------------------------------------------------------
// Runs.

interface RunResult {
  name: string;
  scenario: string;
  label: string;
  /** The headline rate of every repetition. */
  rates: number[];
  unit: string;
  runs: Record<string, unknown>[];
}

const results: RunResult[] = [];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

interface Entry {
  name: string;
  scenario: string;
  label: string;
  unit: string;
  once: () => Promise<Record<string, unknown>>;
  rateOf?: (r: Record<string, unknown>) => number;
}

/**
 * Runs the entries round-robin, `repeat` rounds: A B C C B A ..., so that what the rows of one
 * group are compared on (C against Node, one hand-over against the other)
 * met the same conditions on a machine that other work shares.
 */
async function measureGroup(title: string, entries: Entry[], repeat: number): Promise<void> {
  const sel = entries.filter((e) => !ONLY || ONLY.test(e.name));
  if (sel.length === 0) return;
  process.stderr.write(`${title}\n`);
  const runs = new Map<string, Record<string, unknown>[]>(sel.map((e) => [e.name, []]));
  for (let i = 0; i < repeat; i++) {
    // A B C, then C B A: no row always runs right after the same other one (ABBA order).
    for (const e of i % 2 === 0 ? sel : [...sel].reverse()) {
      try {
        const busyBeforePct = await waitQuiet();
        const m0 = machineTicks();
        const w0 = Date.now();
        const r = await e.once();
        runs.get(e.name)!.push({ ...r, busyBeforePct, machinePctRun: machineBusyPct(m0, machineTicks(), Date.now() - w0) });
      } catch (err) {
        runs.get(e.name)!.push({ error: (err as Error).message });
        process.stderr.write(`bench: ${e.name}: ${(err as Error).message}\n`);
      }
    }
  }
  for (const e of sel) {
    const rs = runs.get(e.name)!;
    const rateOf = e.rateOf ?? ((r: Record<string, unknown>) => Number(r.perSecond));
    const rates = rs.filter((r) => r.error === undefined).map(rateOf);
    results.push({ name: e.name, scenario: e.scenario, label: e.label, rates, unit: e.unit, runs: rs });
    const shown = rates.length ? `${fmt(median(rates))} ${e.unit}` : 'FAILED';
    process.stderr.write(`  ${e.name.padEnd(30)} ${shown}${rates.length > 1 ? `  [${rates.map(fmt).join(', ')}]` : ''}\n`);
  }
}

/**
 * Other engineers' builds and tests share this machine: before each run, wait (up to
 * QUIET_WAIT_MS) for a 100 ms stretch with the machine under QUIET_PCT of one core busy.
 * Returns the busy % of the last stretch seen, which goes into the results.
 */
const QUIET_PCT = 25;
const QUIET_WAIT_MS = QUICK ? 0 : 2000;
/** All the waiting of one bench run, so that a busy machine cannot stretch it much. */
let quietBudgetMs = QUICK ? 0 : 15_000;
async function waitQuiet(): Promise<number> {
  const until = Date.now() + Math.min(QUIET_WAIT_MS, quietBudgetMs);
  const started = Date.now();
  for (;;) {
    const a = machineTicks();
    const t = Date.now();
    await new Promise((r) => setTimeout(r, 100));
    const pct = machineBusyPct(a, machineTicks(), Date.now() - t);
    if (pct < QUIET_PCT || Date.now() >= until) {
      quietBudgetMs = Math.max(0, quietBudgetMs - (Date.now() - started));
      return pct;
    }
  }
}

const fmt = (v: number): string => (v >= 100 ? Math.round(v).toLocaleString('en-US') : String(round(v, 3)));

async function nodePair(
  server: PeerTask,
  client: PeerTask,
): Promise<Record<string, unknown>> {
  return withQueue(async (q, own) => {
    const timeout = server.warmupMs + server.measureMs + 15_000;
    const s = startPeer(own, { ...server, queueId: q.id } as PeerTask, timeout);
    const cl = startPeer(own, { ...client, queueId: q.id } as PeerTask, timeout);
    await Promise.all([s.ready, cl.ready]);
    s.go();
    cl.go();
    const [clientResult, serverResult] = await Promise.all([cl.result, s.result]);
    const cc = clientResult.cpu as Record<string, number>;
    const sc = serverResult.cpu as Record<string, number>;
    const cpuUsPerOp = round(((cc.processPct + sc.processPct) / 100) * Number(clientResult.seconds) * 1e6 / Number(clientResult.count), 3);
    return { ...clientResult, server: serverResult, cpuUsPerOp, queueAfter: q.stat() };
  });
}

async function main(): Promise<void> {
  const t0 = Date.now();
  buildC();
  const machine = machineInfo();
  process.stderr.write(
    `bench: ${machine.nproc} CPUs (${machine.cpuModel}), Linux ${machine.kernel}, msgmax ${machine.msgmax}, msgmnb ${machine.msgmnb}, ` +
      `queue capacity ${machine.queueCapacity} B (raise to 64 KiB: ${machine.raiseCapacity}), Node ${process.versions.node}\n`,
  );
  const w = { warmupMs: NODE_WARMUP, measureMs: NODE_MEASURE };

  const cRun = (args: (string | number)[], pin = '') => () => withQueue((q, own) => runCMeasured(own, [args[0]!, q.id, ...args.slice(1)], 20_000, pin));
  const pair = (server: PeerTask, client: PeerTask) => () => nodePair(server, client);
  type PeerRole = PeerTask['role'];
  const peer = (role: PeerRole, handover: Handover, extra: Record<string, unknown> = {}): PeerTask =>
    ({ role, handover, queueId: 0, ...w, ...extra }) as PeerTask;
  // Both hand-overs of src/ipc's receiver, in the same groups (interleaved rounds).
  const HANDOVERS: readonly Handover[] = ['post', 'ring'];

  // 1a + 2a: one request at a time ------------------------------------------------------------
  await measureGroup('1a/2a. one request at a time (16-byte messages)', [
    { name: 'c-pingpong', scenario: '1a', label: 'C, one at a time', unit: 'round trips/s', once: cRun(['pingpong', C_WARMUP, C_MEASURE, PAYLOAD_BYTES]) },
    // Where the scheduler puts the two processes decides the C figures: both pinned on one CPU
    // (a wake-up is a context switch) and on two (a wake-up is an inter-processor interrupt).
    { name: 'c-pingpong-same', scenario: '1a', label: 'C, one at a time, both on CPU 0', unit: 'round trips/s', once: cRun(['pingpong', C_WARMUP, C_MEASURE, PAYLOAD_BYTES], 'same') },
    { name: 'c-pingpong-split', scenario: '1a', label: 'C, one at a time, CPU 0 and CPU 1', unit: 'round trips/s', once: cRun(['pingpong', C_WARMUP, C_MEASURE, PAYLOAD_BYTES], 'split') },
    ...HANDOVERS.flatMap((h) => [
      { name: `node-a-raw-${h}`, scenario: '2a', label: `src/ipc SysvTransport, one at a time [${h}]`, unit: 'round trips/s', once: pair(peer('raw-responder', h), peer('raw-pingpong', h)) },
      { name: `node-a-endpoint-${h}`, scenario: '2a', label: `src/ipc Endpoint.request, one at a time [${h}]`, unit: 'round trips/s', once: pair(peer('ep-responder', h), peer('ep-requester', h, { window: 1 })) },
    ]),
  ], REPEAT);

  // 1b + 2b: pipelined, one request per kernel message -------------------------------------------
  await measureGroup('1b/2b. pipelined, one 16-byte request per kernel message', [
    ...[16, 64, 256].map((window) => ({ name: `c-pipeline-w${window}`, scenario: '1b', label: `C, pipelined, window ${window}`, unit: 'req/s', once: cRun(['pipeline', window, C_WARMUP, C_MEASURE, PAYLOAD_BYTES]) })),
    { name: 'c-pipeline-w64-same', scenario: '1b', label: 'C, pipelined, window 64, both on CPU 0', unit: 'req/s', once: cRun(['pipeline', 64, C_WARMUP, C_MEASURE, PAYLOAD_BYTES], 'same') },
    { name: 'c-pipeline-w64-split', scenario: '1b', label: 'C, pipelined, window 64, CPU 0 and CPU 1', unit: 'req/s', once: cRun(['pipeline', 64, C_WARMUP, C_MEASURE, PAYLOAD_BYTES], 'split') },
    ...HANDOVERS.flatMap((h) =>
      [64, 256, 512].map((window) => ({
        name: `node-b-w${window}-${h}`, scenario: '2b', label: `src/ipc SysvTransport pipelined, window ${window} [${h}]`, unit: 'req/s',
        once: pair(peer('raw-responder', h), peer('raw-pipeline', h, { window })),
      })),
    ),
  ], REPEAT);

  // 2c: many requests per kernel message (Endpoint batching) ---------------------------------
  await measureGroup('2c. Endpoint.request batched into envelopes, 16-byte payloads', HANDOVERS.flatMap((h) =>
    [256, 1024, 4096].map((window) => ({
      name: `node-c-w${window}-${h}`, scenario: '2c', label: `src/ipc Endpoint batched, window ${window} [${h}]`, unit: 'req/s',
      once: pair(peer('ep-responder', h), peer('ep-requester', h, { window })),
    })),
  ), REPEAT);

  // 3. Hand-over under a C producer ------------------------------------------------------------
  const loads = [
    { load: 'flood', burst: 1, periodUs: 0, what: 'as fast as the queue takes them' },
    { load: 'paced', burst: 1, periodUs: 100, what: '1 message every 100 µs' },
  ];
  for (const l of loads) {
    await measureGroup(`3. src/ipc receiver, C producer, ${l.load}: ${l.what}`, HANDOVERS.map((h) => ({
      name: `handover-${l.load}-${h}`, scenario: '3', label: `src/ipc receiver, ${l.load} (${l.what}) [${h}]`, unit: 'msg/s',
      once: () =>
        withQueue(async (q, own) => {
          const runMs = NODE_WARMUP + NODE_MEASURE + 300;
          const consumer = startPeer(own, peer('flood-consumer', h, { queueId: q.id }), runMs + 15_000);
          await consumer.ready;
          const producer = runC(own, ['flood', q.id, MTYPE_FLOOD, runMs, PAYLOAD_BYTES, l.burst, l.periodUs], runMs + 15_000);
          producer.catch(() => {});
          consumer.go();
          const r = await consumer.result;
          const p = await producer;
          const cpu = r.cpu as Record<string, number>;
          const producerPct = round((Number(p.cpuSec) / Number(p.wallSec)) * 100);
          // CPU per message of the consumer process alone (receiver thread + main thread).
          const cpuUsPerOp = round(((cpu.processPct / 100) * Number(r.seconds) * 1e6) / Number(r.count), 3);
          return { load: l.load, ...r, cpuUsPerOp, producer: { ...p, cpuPct: producerPct } };
        }),
    })), REPEAT);
  }

  // 4. koffi call cost ------------------------------------------------------------------------
  await measureGroup('4. one msgsnd / msgrcv with IPC_NOWAIT (16 bytes), main thread', [
    { name: 'callcost-c', scenario: '4', label: 'C', unit: 'µs per msgsnd', once: () => withQueue((q, own) => runC(own, ['callcost', q.id, 200_000, PAYLOAD_BYTES], 20_000)), rateOf: (r) => Number(r.msgsndUs) },
    {
      name: 'callcost-koffi', scenario: '4', label: 'koffi, Node main thread', unit: 'µs per msgsnd', rateOf: (r) => Number(r.msgsndUs),
      once: () =>
        withQueue(async (q, own) => {
          const p = startPeer(own, { role: 'callcost', queueId: q.id, calls: 200_000, warmupMs: 0, measureMs: 0 }, 30_000);
          await p.ready;
          p.go();
          return p.result;
        }),
    },
  ], REPEAT);

  const targets = checkTargets(results);
  const handovers = compareHandovers(results);
  const seconds = round((Date.now() - t0) / 1000, 1);
  const report = { date: new Date().toISOString(), seconds, quick: QUICK, machine, defaultHandover: DEFAULT_HANDOVER, targets, handovers, settings: { REPEAT, C_WARMUP, C_MEASURE, NODE_WARMUP, NODE_MEASURE, PAYLOAD_BYTES }, results };
  mkdirSync(dirname(RESULTS), { recursive: true });
  writeFileSync(RESULTS, `${JSON.stringify(report, null, 2)}\n`);
  printTable(results);
  printHandovers(handovers);
  if (targets.length) process.stdout.write(`\nTargets (medians of this run):\n${targets.map((t) => `  ${t.met ? 'MET    ' : 'NOT MET'}  ${t.text}`).join('\n')}\n`);
  process.stdout.write(`\n${results.length} runs in ${seconds} s; raw figures in ${RESULTS}\n`);
}

function machineInfo(): Record<string, unknown> {
  const q = SysvQueue.createPrivate(0o600);
  liveQueues.add(q);
  let queueCapacity = 0;
  let raiseCapacity = '';
  try {
    queueCapacity = q.stat().capacity;
    const r = q.setCapacity(65536);
    raiseCapacity = r.raised ? `raised to ${r.capacity}` : `refused (${r.code ?? 'no change'})`;
  } finally {
    q.remove();
    liveQueues.delete(q);
  }
  let koffiVersion = '';
  try {
    koffiVersion = (JSON.parse(readFileSync(join(ROOT, 'node_modules', 'koffi', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    /* unknown */
  }
  return {
    nproc: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    kernel: release(),
    msgmax: readKernelLimit('msgmax', -1),
    msgmnb: readKernelLimit('msgmnb', -1),
    msgmni: readKernelLimit('msgmni', -1),
    queueCapacity,
    raiseCapacity,
    node: process.versions.node,
    koffi: koffiVersion,
    gcc: execFileSync('gcc', ['-dumpfullversion']).toString().trim(),
  };
}

/** The brief's targets, judged on this run's medians (best window of each side), per hand-over. */
function checkTargets(rows: RunResult[]): { target: string; met: boolean; text: string }[] {
  const best = (re: RegExp): { name: string; rate: number } | undefined =>
    rows
      .filter((r) => re.test(r.name) && r.rates.length > 0)
      .map((r) => ({ name: r.name, rate: median(r.rates) }))
      .sort((a, b) => b.rate - a.rate)[0];
  const out: { target: string; met: boolean; text: string }[] = [];
  const c = best(/^c-pipeline-w\d+$/);
  const cSame = best(/^c-pipeline-w64-same$/);
  for (const h of ['post', 'ring'] as const) {
    const what = `src/ipc [${h}${h === DEFAULT_HANDOVER ? ', the default' : ''}]`;
    const b = best(new RegExp(`^node-b-w\\d+-${h}$`));
    if (c && b) {
      const vs = (x: number): string => `${Math.round((b.rate / x) * 100)}%`;
      out.push({
        target: `2b-${h}`,
        met: b.rate >= 0.5 * c.rate,
        text: `(b) ${what} pipelined ${fmt(b.rate)} req/s (${b.name}) >= 50% of C pipelined ${fmt(c.rate)} (${c.name}): ${vs(c.rate)}` +
          (cSame ? `; against C with both processes on one CPU (${fmt(cSame.rate)}): ${vs(cSame.rate)}` : ''),
      });
    }
    const cc = best(new RegExp(`^node-c-w\\d+-${h}$`));
    if (cc && c) {
      out.push({
        target: `2c-${h}-c`,
        met: cc.rate > c.rate,
        text: `(c) ${what} batched ${fmt(cc.rate)} req/s (${cc.name}) > C pipelined, one request per message, in this run ${fmt(c.rate)} (${c.name})`,
      });
    }
    if (cc) {
      out.push({
        target: `2c-${h}-450k`,
        met: cc.rate > 450_000,
        text: `(c) ${what} batched ${fmt(cc.rate)} req/s (${cc.name}) > 450,000 (the brief's figure for C on this machine)`,
      });
    }
  }
  return out;
}

interface HandoverPair {
  run: string;
  post: number;
  ring: number;
  /** ring / post - 1, in %: positive when the ring is faster. */
  ringVsPostPct: number;
  /** Round by round (each round runs both, back to back): rounds where the ring was faster, of all. */
  ringFasterRounds: string;
  /** Median over the rounds of (ring / post - 1) within the round, in %. */
  pairedPct: number;
  postCpuUsPerOp?: number;
  ringCpuUsPerOp?: number;
  /** Median over the rounds of each round's latency p50 / p99 (µs): RTT (2a) or end-to-end (3). */
  postP50?: number;
  ringP50?: number;
  postP99?: number;
  ringP99?: number;
}

/** Every run made with both hand-overs: ring against post, from this run's medians. */
function compareHandovers(rows: RunResult[]): HandoverPair[] {
  const out: HandoverPair[] = [];
  const medianOf = (r: RunResult, pick: (x: Record<string, unknown>) => unknown): number | undefined => {
    const v = r.runs.filter((x) => x.error === undefined).map(pick).filter((x): x is number => typeof x === 'number');
    return v.length ? round(median(v), 2) : undefined;
  };
  const lat = (x: Record<string, unknown>): Record<string, number> | undefined =>
    (x.rttUs ?? x.endToEndUs) as Record<string, number> | undefined;
  for (const post of rows) {
    if (!post.name.endsWith('-post') || post.rates.length === 0) continue;
    const ring = rows.find((r) => r.name === `${post.name.slice(0, -5)}-ring`);
    if (!ring || ring.rates.length === 0) continue;
    const p = median(post.rates);
    const g = median(ring.rates);
    const okP = post.runs.filter((x) => x.error === undefined);
    const okG = ring.runs.filter((x) => x.error === undefined);
    const ratios = okP.slice(0, okG.length).map((x, i) => Number(okG[i]!.perSecond) / Number(x.perSecond));
    const pair: HandoverPair = {
      run: post.name.slice(0, -5),
      post: round(p),
      ring: round(g),
      ringVsPostPct: round((g / p - 1) * 100, 1),
      ringFasterRounds: `${ratios.filter((x) => x > 1).length}/${ratios.length}`,
      pairedPct: ratios.length ? round((median(ratios) - 1) * 100, 1) : NaN,
    };
    const cpu = (x: Record<string, unknown>): unknown => x.cpuUsPerOp;
    const set = (k: keyof HandoverPair, v: number | undefined): void => {
      if (v !== undefined) (pair as unknown as Record<string, number>)[k] = v;
    };
    set('postCpuUsPerOp', medianOf(post, cpu));
    set('ringCpuUsPerOp', medianOf(ring, cpu));
    if (post.name.includes('-a-') || post.name.startsWith('handover-')) {
      set('postP50', medianOf(post, (x) => lat(x)?.p50));
      set('ringP50', medianOf(ring, (x) => lat(x)?.p50));
      set('postP99', medianOf(post, (x) => lat(x)?.p99));
      set('ringP99', medianOf(ring, (x) => lat(x)?.p99));
    }
    out.push(pair);
  }
  return out;
}

function printHandovers(pairs: HandoverPair[]): void {
  if (pairs.length === 0) return;
  process.stdout.write(`\nHand-over, ring against post (medians of this run; the default is '${DEFAULT_HANDOVER}'):\n`);
  for (const p of pairs) {
    const lat = p.postP50 !== undefined ? `; p50 ${p.postP50} -> ${p.ringP50} µs, p99 ${p.postP99} -> ${p.ringP99} µs` : '';
    const cpu = p.postCpuUsPerOp !== undefined ? `; CPU ${p.postCpuUsPerOp} -> ${p.ringCpuUsPerOp} µs/op` : '';
    const sign = (v: number): string => `${v >= 0 ? '+' : ''}${v}%`;
    process.stdout.write(
      `  ${p.run.padEnd(16)} post ${fmt(p.post).padStart(9)}  ring ${fmt(p.ring).padStart(9)}  ${sign(p.ringVsPostPct)} ` +
        `(round by round ${sign(p.pairedPct)}, ring faster in ${p.ringFasterRounds})${cpu}${lat}\n`,
    );
  }
}

const SCENARIO_ORDER = ['1a', '1b', '2a', '2b', '2c', '3', '4'];

function printTable(unsorted: RunResult[]): void {
  const rows = [...unsorted].sort((a, b) => SCENARIO_ORDER.indexOf(a.scenario) - SCENARIO_ORDER.indexOf(b.scenario));
  // CPU µs/op: CPU time of every process and thread of the run (both sides) per answered
  // request or handled message, over the measured window: unlike the rate, it hardly moves
  // when other work shares the machine.
  const lines: string[][] = [['#', 'run', 'median', 'unit', 'min..max', 'CPU µs/op', 'notes']];
  for (const r of rows) {
    const ok = r.runs.filter((x) => x.error === undefined);
    const med = r.rates.length ? fmt(median(r.rates)) : 'FAILED';
    const range = r.rates.length > 1 ? `${fmt(Math.min(...r.rates))}..${fmt(Math.max(...r.rates))}` : '';
    const cpuOps = ok.map((x) => x.cpuUsPerOp).filter((v): v is number => typeof v === 'number');
    lines.push([r.scenario, r.label, med, r.unit, range, cpuOps.length ? String(round(median(cpuOps), 2)) : '', notes(r, ok)]);
  }
  const widths = lines[0]!.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
  process.stdout.write('\n');
  for (const [i, l] of lines.entries()) {
    process.stdout.write(`${l.map((cell, j) => (j === 2 ? cell.padStart(widths[j]!) : cell.padEnd(widths[j]!))).join('  ')}\n`);
    if (i === 0) process.stdout.write(`${widths.map((wd) => '-'.repeat(wd)).join('  ')}\n`);
  }
}

/** The few extra figures worth a glance, from the first good run. */
function notes(r: RunResult, ok: Record<string, unknown>[]): string {
  const x = ok[0];
  if (!x) return String(r.runs[0]?.error ?? '').slice(0, 80);
  const parts: string[] = [];
  const rtt = (x.rttUs ?? undefined) as Record<string, number> | undefined;
  if (x.rttP50us !== undefined) parts.push(`rtt p50 ${x.rttP50us} p99 ${x.rttP99us} µs`);
  if (rtt && r.name.includes('-a-')) parts.push(`rtt p50 ${rtt.p50} p99 ${rtt.p99} µs`);
  if (x.recordsPerEnvelope !== undefined) parts.push(`${x.recordsPerEnvelope} req/envelope`);
  if (x.repliesPerHandover !== undefined) parts.push(`${x.repliesPerHandover} msg/hand-over`);
  if (x.messagesPerBatch !== undefined) parts.push(`${x.messagesPerBatch} msg/batch`);
  const e2e = x.endToEndUs as Record<string, number> | undefined;
  if (e2e) parts.push(`e2e p50 ${e2e.p50} p99 ${e2e.p99} µs`);
  const cpu = x.cpu as Record<string, number> | undefined;
  const srv = (x.server as Record<string, unknown> | undefined)?.cpu as Record<string, number> | undefined;
  if (cpu) parts.push(`cpu main ${cpu.mainPct}% other ${cpu.otherThreadsPct}%${srv ? ` | srv main ${srv.mainPct}% other ${srv.otherThreadsPct}%` : ''}`);
  if (x.deferredSends) parts.push(`${x.deferredSends} deferred`);
  // Other processes' load on the machine just before the runs (max over the rounds): the
  // machine is shared with other work, and this is when it was not.
  const before = ok.map((o) => o.busyBeforePct).filter((v): v is number => typeof v === 'number');
  if (before.length) parts.push(`busy before ${Math.round(Math.max(...before))}%`);
  if (x.msgrcvUs !== undefined) parts.push(`msgrcv ${x.msgrcvUs}, empty msgrcv ${x.msgrcvEmptyUs}${x.trySendUs !== undefined ? `, trySend ${x.trySendUs}, tryReceive ${x.tryReceiveUs}, errno() ${x.errnoUs}` : ''} µs`);
  return parts.join('; ');
}

main().then(
  () => {
    killAll();
    process.exit(0);
  },
  (err: Error) => {
    killAll();
    process.stderr.write(`bench: ${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
