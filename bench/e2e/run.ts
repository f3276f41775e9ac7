/**
 * `npm run bench:e2e`: the cluster end to end, against two servers written here, in one run.
 *
 *   cluster  the real cluster (chatD, CHANNELD_SHARDS channelD shards, gc) under the project's
 *            own PM2, private PM2_HOME, free port, unused MQ_KEY; the per-connection rate limit
 *            raised for the benchmark (CHATD_RATE_PER_SEC / CHATD_RATE_BURST = 1,000,000) and
 *            the idle timeout off (the characters' connections sit idle for minutes).
 *            BENCH_CLUSTER_ROOT picks the checkout whose dist/ runs (default: this one).
 *   cluster-before  with BENCH_BASELINE_ROOT=<another checkout, dist/ built>: that checkout's
 *            cluster in the same rounds (before/after comparisons of a change).
 *   cluster-nats  with BENCH_NATS=1: the same cluster with TRANSPORT=nats, on a nats-server
 *            (scripts/setup-nats.sh installs it) started for it on a free port; the server's
 *            CPU and memory count as the cluster's (it is a process the cluster needs).
 *   cluster-hosts  with BENCH_HOSTS=1 (root, iproute2): the same cluster over NATS across three
 *            "hosts" made of network namespaces joined by veth links (test/helpers/netns.ts):
 *            chatD, gc and the nats-server on host A, the shards split over hosts B and C
 *            (docs/multi-host.md). Its load generator runs on host A too, so the clients reach
 *            chatD as in cluster-nats (loopback): what differs is the shards' hop across the
 *            links. Every process of the three hosts counts as the cluster's.
 *   single   single-server.ts: one process, the directory in a Map. The ceiling.
 *   fork     fork-front.ts: a front and 4 child_process.fork shards, batched per turn.
 *
 * Each server gets its own load generator process (loadgen.ts), which logs in 1,000
 * characters plus one per load connection, then runs the scenarios. Rounds alternate the order
 * of the servers (A B C, then C B A, ...); the table gives medians and ranges.
 *
 * Environment: BENCH_ROUNDS (3), BENCH_QUICK=1 (short windows, 1 round), BENCH_ONLY=<regex>
 * over "server/scenario", BENCH_RESULTS (bench/results/e2e-latest.json), BENCH_CLUSTER_ROOT,
 * BENCH_CLUSTER_SHARDS (4), BENCH_NATS=1 (adds cluster-nats), BENCH_HOSTS=1 (adds cluster-hosts), BENCH_SHARDS=1,2,4,8 (shard-scaling mode: the cluster's pipelined
 * scenario at each shard count, nothing else).
 *
 * Cleanup on any way out (normal end, failure, SIGINT/SIGTERM/SIGHUP, uncaught exception):
 * every server and load generator process killed, each cluster's PM2 daemon killed and its
 * queue removed, PM2_HOME deleted.
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { BENCH_ROOT, BenchCluster, isAlive } from './cluster';
import { NatsServer } from '../../test/helpers/nats-server';
import { NetnsLab, netnsUnavailable } from '../../test/helpers/netns';
import { rssKb } from './procfs';
import type { Character, LoadCommand, LoadReport, Query, RunResult, ScenarioSpec } from './types';
import type { ServerReport } from './proto';

const QUICK = process.env.BENCH_QUICK === '1';
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS) || (QUICK ? 1 : 3));
const ONLY = process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY) : undefined;
const RESULTS = resolve(process.env.BENCH_RESULTS ?? join(BENCH_ROOT, 'bench', 'results', 'e2e-latest.json'));
const CLUSTER_ROOT = resolve(process.env.BENCH_CLUSTER_ROOT ?? BENCH_ROOT);
/** Another checkout (with its dist/ built) measured as the server `cluster-before`, in the same rounds. */
const BASELINE_ROOT = process.env.BENCH_BASELINE_ROOT ? resolve(process.env.BENCH_BASELINE_ROOT) : undefined;
const CLUSTER_SHARDS = Number(process.env.BENCH_CLUSTER_SHARDS ?? 4) || 4;
/** Adds the server `cluster-nats`: the cluster with TRANSPORT=nats, beside the SysV one. */
const WITH_NATS = process.env.BENCH_NATS === '1';
/** Adds the server `cluster-hosts`: the NATS cluster across three network-namespace hosts. */
const WITH_HOSTS = process.env.BENCH_HOSTS === '1';
const SCALING = process.env.BENCH_SHARDS
  ? process.env.BENCH_SHARDS.split(',').map((s) => Number(s.trim())).filter((n) => Number.isInteger(n) && n >= 1 && n <= 64)
  : undefined;
const FORK_SHARDS = 4;
const CHARACTERS = 1000;
const CHANNELS = 20;
const WARMUP_MS = QUICK ? 300 : 1000;
const MEASURE_MS = QUICK ? 1000 : 3000;

const CLUSTER_ENV: Record<string, string> = {
  CHATD_RATE_PER_SEC: '1000000',
  CHATD_RATE_BURST: '1000000',
  CHATD_IDLE_TIMEOUT_MS: '0',
  LOG_LEVEL: 'warn',
  // BENCH_CPU_PROF=<dir>: every cluster process writes a V8 CPU profile there when it stops
  // (summarise with `node dist/bench/prof-summary.js <file>`).
  ...(process.env.BENCH_CPU_PROF ? { CPU_PROF_DIR: resolve(process.env.BENCH_CPU_PROF) } : {}),
};

const scenario = (name: string, conns: number, depth: number, form: 'op' | 'chat'): ScenarioSpec => ({
  name,
  conns,
  depth,
  form,
  warmupMs: WARMUP_MS,
  measureMs: MEASURE_MS,
  drainTimeoutMs: 10_000,
});
const SCENARIOS: ScenarioSpec[] = SCALING
  ? [scenario('pipelined', 200, 16, 'op')]
  : [scenario('pipelined', 200, 16, 'op'), scenario('chat-pipelined', 200, 16, 'chat'), scenario('conc50', 50, 1, 'op'), scenario('single', 1, 1, 'op')];
const LOAD_CONNS = Math.max(...SCENARIOS.map((s) => s.conns));

// ---------------------------------------------------------------------------------------------
// Cleanup registry: everything started, undone on any way out.

const children = new Set<ChildProcess>();
const extraPids = new Set<number>();
const clusters = new Set<BenchCluster>();
const labs = new Set<NetnsLab>();

function killEverythingSync(): void {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (const pid of extraPids) {
    try {
      if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (const c of clusters) {
    try {
      c.stopSync();
    } catch {
      /* keep going */
    }
  }
  clusters.clear();
  for (const lab of labs) lab.destroy();
  labs.clear();
}
process.on('exit', killEverythingSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    console.error(`\nbench:e2e: ${sig}; cleaning up`);
    killEverythingSync();
    process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
  });
}
process.on('uncaughtException', (err) => {
  console.error('bench:e2e: uncaught exception:', err);
  killEverythingSync();
  process.exit(1);
});

// ---------------------------------------------------------------------------------------------
// The data set: characters, load characters, queries with their truth.

const HANGUL = ['전사', '마법사', '궁수', '도적', '성기사', '타락파워', '검객', '사냥꾼', '용사', '힐러', '바람', '달빛'];
const LATIN = ['Knight', 'mage', 'Archer', 'ROGUE', 'Paladin', 'Sword', 'hunter', 'Hero', 'Healer', 'Wind', 'Moon', 'Éclair', 'Ärger', 'Öl'];

function buildData(): { characters: Character[]; loadCharacters: Character[]; queries: Query[] } {
  const characters: Character[] = [];
  for (let i = 0; i < CHARACTERS; i++) {
    const h = HANGUL[i % HANGUL.length]!;
    const l = LATIN[(i * 7) % LATIN.length]!;
    const name = i % 3 === 0 ? `${h}${l}${i}` : i % 3 === 1 ? `${l}${h}${i}` : `${l}_${i}`;
    characters.push({ name, channel: (i % CHANNELS) + 1 });
  }
  const loadCharacters: Character[] = [];
  for (let i = 0; i < LOAD_CONNS; i++) loadCharacters.push({ name: `부하Load${i}`, channel: (i % CHANNELS) + 1 });
  // Two online queries per offline one; online names in another letter case.
  const queries: Query[] = [];
  for (let i = 0; i < CHARACTERS * 3; i++) {
    if (i % 3 === 2) {
      queries.push({ sent: i % 2 ? `없는Ghost${i}` : `nobody_${i}`, online: false });
      continue;
    }
    const c = characters[(i * 37) % CHARACTERS]!;
    const sent = i % 2 ? c.name.toUpperCase() : c.name.toLowerCase();
    queries.push({ sent, online: true, registered: c.name, channel: c.channel });
  }
  return { characters, loadCharacters, queries };
}

// ---------------------------------------------------------------------------------------------
// Servers under test.

interface ServerUnderTest {
  name: string;
  port: number;
  /** Current pids (for the cluster: refreshed from pm2 jlist before each run). */
  pids: () => Promise<{ pids: number[]; labels: string[] }>;
  loadgen?: ChildProcess;
  rssIdle?: Record<string, number>;
  rssAfterSetup?: Record<string, number>;
  rssEnd?: Record<string, number>;
  setupMs?: number;
  cluster?: BenchCluster;
  /** The network namespace its load generator runs in (cluster-hosts: host A). */
  loadgenNs?: string;
  notes: string[];
}

function forkServer(script: string, args: string[]): Promise<{ child: ChildProcess; report: Extract<ServerReport, { type: 'listening' }> }> {
  const child = fork(join(__dirname, script), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, CHATD_RATE_PER_SEC: '1000000', CHATD_RATE_BURST: '1000000' } });
  children.add(child);
  return new Promise((resolvePromise, reject) => {
    const t = setTimeout(() => reject(new Error(`${script}: not listening within 20 s`)), 20_000);
    child.once('message', (m: ServerReport) => {
      clearTimeout(t);
      if (m.type === 'listening') {
        for (const pid of m.pids) extraPids.add(pid);
        resolvePromise({ child, report: m });
      } else reject(new Error(`${script}: ${m.message}`));
    });
    child.once('exit', (code, signal) => reject(new Error(`${script}: exited (${code ?? signal}) before listening`)));
  });
}

async function startServer(name: string): Promise<ServerUnderTest> {
  if (name === 'single' || name === 'fork') {
    const { report } = await forkServer(name === 'single' ? 'single-server.js' : 'fork-front.js', name === 'fork' ? ['0', String(FORK_SHARDS)] : ['0']);
    const labels = name === 'single' ? ['single'] : ['front', ...report.pids.slice(1).map((_, i) => `shard${i}`)];
    return { name, port: report.port, pids: async () => ({ pids: report.pids, labels }), notes: [] };
  }
  if (name === 'cluster-hosts') return startHosts();
  const shards = name === 'cluster' || name === 'cluster-before' || name === 'cluster-nats' ? CLUSTER_SHARDS : Number(/^cluster-s(\d+)$/.exec(name)![1]);
  let nats: NatsServer | undefined;
  let env = CLUSTER_ENV;
  if (name === 'cluster-nats') {
    nats = await NatsServer.start();
    if (nats.pid !== undefined) extraPids.add(nats.pid);
    env = { ...CLUSTER_ENV, TRANSPORT: 'nats', NATS_URL: nats.url, CLUSTER_NAME: `bench${process.pid}` };
  }
  const cluster = new BenchCluster(name === 'cluster-before' ? BASELINE_ROOT! : CLUSTER_ROOT, shards, env, name);
  clusters.add(cluster);
  await cluster.start();
  const natsPid = nats?.pid;
  return {
    name,
    port: cluster.port,
    cluster,
    notes: [],
    pids: async () => {
      const { daemon, apps } = await cluster.pids();
      const sorted = [...apps].sort((a, b) => a.name.localeCompare(b.name) || a.instance - b.instance);
      const labels = ['pm2-daemon', ...sorted.map((a) => `${a.name}${a.name === 'channeld' ? a.instance : ''}`)];
      const pids = [daemon, ...sorted.map((a) => a.pid)];
      if (natsPid !== undefined) {
        pids.push(natsPid);
        labels.push('nats-server');
      }
      return { pids, labels };
    },
  };
}

/**
 * cluster-hosts: host A (chatD, gc, nats-server) and shard hosts B and C, each its own network
 * and IPC namespace and PM2 (docs/multi-host.md); CLUSTER_SHARDS split between B and C.
 */
async function startHosts(): Promise<ServerUnderTest> {
  const why = netnsUnavailable();
  if (why) throw new Error(`cluster-hosts (BENCH_HOSTS=1): ${why}`);
  const lab = NetnsLab.create(['a', 'b', 'c']);
  labs.add(lab);
  const a = lab.host('a');
  const nats = await NatsServer.start({ host: a.address, wrap: lab.wrap('a') });
  if (nats.pid !== undefined) extraPids.add(nats.pid);
  const common = { ...CLUSTER_ENV, TRANSPORT: 'nats', NATS_URL: nats.url, CLUSTER_NAME: `bench${process.pid}` };
  const onB = Math.ceil(CLUSTER_SHARDS / 2);
  const hosts = [
    new BenchCluster(CLUSTER_ROOT, onB, { ...common, HOST_ROLE: 'shards', HOST_ID: 'host-b', SHARD_BASE: '0' }, 'hosts-b', { wrap: lab.wrap('b'), role: 'shards', connectHost: lab.host('b').address }),
    new BenchCluster(CLUSTER_ROOT, CLUSTER_SHARDS - onB, { ...common, HOST_ROLE: 'shards', HOST_ID: 'host-c', SHARD_BASE: String(onB) }, 'hosts-c', { wrap: lab.wrap('c'), role: 'shards', connectHost: lab.host('c').address }),
  ].filter((c) => c.shards > 0);
  // chatD on every address of host A: the load generator (on A) uses loopback, the starter (here) A's link address.
  const front = new BenchCluster(CLUSTER_ROOT, CLUSTER_SHARDS, { ...common, HOST_ROLE: 'front', HOST_ID: 'host-a', CHATD_HOST: '0.0.0.0' }, 'hosts-a', { wrap: lab.wrap('a'), role: 'front', connectHost: a.address });
  for (const c of [...hosts, front]) clusters.add(c);
  const deadline = Date.now() + 120_000;
  // The shard hosts first: the collector's first membership then takes them all (docs/multi-host.md).
  const launching = hosts.map((c) => c.launch());
  await new Promise((r) => setTimeout(r, 500));
  await front.launch();
  await Promise.all(launching);
  await Promise.all([...hosts, front].map((c) => c.waitOnline(deadline)));
  await front.waitServing(deadline);
  const natsPid = nats.pid;
  return {
    name: 'cluster-hosts',
    port: front.port,
    cluster: front,
    loadgenNs: a.ns,
    notes: [],
    pids: async () => {
      const pids: number[] = [];
      const labels: string[] = [];
      for (const [host, c] of [['a', front], ['b', hosts[0]], ['c', hosts[1]]] as const) {
        if (!c) continue;
        const { daemon, apps } = await c.pids();
        const sorted = [...apps].sort((x, y) => x.name.localeCompare(y.name) || x.instance - y.instance);
        pids.push(daemon, ...sorted.map((x) => x.pid));
        labels.push(`${host}:pm2-daemon`, ...sorted.map((x) => `${host}:${x.name}${x.name === 'channeld' ? Number(c === hosts[1] ? onB : 0) + x.instance : ''}`));
      }
      if (natsPid !== undefined) {
        pids.push(natsPid);
        labels.push('a:nats-server');
      }
      return { pids, labels };
    },
  };
}

function rssOf(p: { pids: number[]; labels: string[] }): Record<string, number> {
  const out: Record<string, number> = {};
  p.pids.forEach((pid, i) => (out[`${p.labels[i]}`] = rssKb(pid)));
  return out;
}

function startLoadgen(s: ServerUnderTest): ChildProcess {
  // On a namespace host (cluster-hosts), through `ip netns exec`, which execs node with the IPC channel's descriptor.
  const inNs = s.loadgenNs ? { execPath: 'ip', execArgv: ['netns', 'exec', s.loadgenNs, process.execPath] } : {};
  const child = fork(join(__dirname, 'loadgen.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], ...inNs });
  children.add(child);
  child.on('exit', (code, signal) => {
    if (!shuttingDown) console.error(`bench:e2e: load generator of ${s.name} exited (${code ?? signal})`);
  });
  s.loadgen = child;
  return child;
}

function ask<T extends LoadReport['type']>(child: ChildProcess, cmd: LoadCommand, want: T, timeoutMs: number): Promise<Extract<LoadReport, { type: T }>> {
  return new Promise((resolvePromise, reject) => {
    const t = setTimeout(() => {
      child.off('message', onMessage);
      reject(new Error(`load generator: no ${want} within ${timeoutMs} ms`));
    }, timeoutMs);
    const onMessage = (m: LoadReport): void => {
      if (m.type === 'error') {
        clearTimeout(t);
        child.off('message', onMessage);
        reject(new Error(`load generator: ${m.message}`));
      } else if (m.type === want) {
        clearTimeout(t);
        child.off('message', onMessage);
        resolvePromise(m as Extract<LoadReport, { type: T }>);
      }
    };
    child.on('message', onMessage);
    child.send(cmd);
  });
}

let shuttingDown = false;

// ---------------------------------------------------------------------------------------------
// Statistics and printing.

interface Agg {
  median: number;
  min: number;
  max: number;
  values: number[];
}
function agg(values: number[]): Agg {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return { median: NaN, min: NaN, max: NaN, values };
  const mid = v.length >> 1;
  const median = v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
  return { median, min: v[0]!, max: v[v.length - 1]!, values };
}

const fmtInt = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-');
const fmtMs = (us: number): string => (Number.isFinite(us) ? (us >= 10_000 ? (us / 1000).toFixed(1) : (us / 1000).toFixed(3)) : '-');
const fmt1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : '-');
const fmt2 = (n: number): string => (Number.isFinite(n) ? n.toFixed(2) : '-');
const range = (a: Agg, f: (n: number) => string): string => (a.values.length > 1 ? `${f(a.median)} (${f(a.min)}–${f(a.max)})` : f(a.median));

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => [...(r[c] ?? '')].length)));
  return rows.map((r) => `| ${r.map((cell, c) => cell + ' '.repeat(widths[c]! - [...cell].length)).join(' | ')} |`).join('\n');
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const started = new Date();
  const serverNames = SCALING ? SCALING.map((n) => `cluster-s${n}`) : ['cluster', ...(WITH_NATS ? ['cluster-nats'] : []), ...(WITH_HOSTS ? ['cluster-hosts'] : []), ...(BASELINE_ROOT ? ['cluster-before'] : []), 'single', 'fork'];
  const selected = (server: string, sc: string): boolean => !ONLY || ONLY.test(`${server}/${sc}`);
  const servers = serverNames.filter((s) => SCENARIOS.some((sc) => selected(s, sc.name)));
  if (servers.length === 0) throw new Error(`BENCH_ONLY=${process.env.BENCH_ONLY} selects nothing (names are server/scenario, e.g. cluster/pipelined)`);
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['-C', CLUSTER_ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['-C', CLUSTER_ROOT, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).trim();
    if (dirty) commit += '+dirty';
  } catch {
    /* not a git checkout */
  }
  console.log(`bench:e2e  ${started.toISOString()}  rounds ${ROUNDS}${QUICK ? ' (quick)' : ''}, window ${WARMUP_MS} ms warm-up + ${MEASURE_MS} ms measured`);
  console.log(`cluster root ${CLUSTER_ROOT} (commit ${commit}), shards ${SCALING ? SCALING.join(',') : CLUSTER_SHARDS}; fork shards ${FORK_SHARDS}; ${cpus().length} CPUs, Linux ${release()}, Node ${process.version}`);
  console.log(`servers: ${servers.join(', ')}; scenarios: ${SCENARIOS.map((s) => `${s.name} (${s.conns}x${s.depth}${s.form === 'chat' ? ' /찾기' : ''})`).join(', ')}`);

  const data = buildData();
  const running: ServerUnderTest[] = [];
  for (const name of servers) {
    const t0 = Date.now();
    const s = await startServer(name);
    running.push(s);
    const pids = await s.pids();
    s.rssIdle = rssOf(pids);
    const lg = startLoadgen(s);
    const setup = await ask(lg, { type: 'setup', port: s.port, ...data }, 'setup-done', 120_000);
    s.setupMs = setup.ms;
    s.rssAfterSetup = rssOf(await s.pids());
    if (setup.problemCount > 0) throw new Error(`${name}: ${setup.problemCount} logins failed, e.g. ${setup.problems.slice(0, 3).join(' | ')}`);
    console.log(`  ${name}: port ${s.port}, pids ${pids.pids.join(' ')} (${pids.labels.join(' ')}), started in ${Date.now() - t0 - Math.round(setup.ms)} ms, ${CHARACTERS + LOAD_CONNS} logins in ${Math.round(setup.ms)} ms`);
  }

  const results: (RunResult & { server: string; round: number; order: number; pids: number[]; labels: string[] })[] = [];
  let order = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const roundServers = round % 2 === 0 ? running : [...running].reverse();
    for (const sc of SCENARIOS) {
      for (const s of roundServers) {
        if (!selected(s.name, sc.name)) continue;
        const p = await s.pids();
        if (s.cluster) {
          const restarted = (await s.cluster.jlist()).filter((a) => a.restarts > 0 || a.status !== 'online');
          if (restarted.length > 0) {
            const note = `round ${round + 1} before ${sc.name}: ${restarted.map((a) => `${a.name}${a.instance} ${a.status} restarts ${a.restarts}`).join(', ')}`;
            s.notes.push(note);
            console.error(`  !! ${s.name}: ${note}`);
          }
        }
        const r = (await ask(s.loadgen!, { type: 'run', spec: sc, pids: p.pids }, 'result', sc.warmupMs + sc.measureMs + sc.drainTimeoutMs + 30_000)).result;
        results.push({ ...r, server: s.name, round: round + 1, order: order++, pids: p.pids, labels: p.labels });
        const errs = Object.entries(r.errors).map(([k, v]) => `${k}=${v}`).join(' ');
        const bad = r.wrong + r.missing + r.unknownId + Object.values(r.errors).reduce((a, b) => a + b, 0);
        console.log(
          `  round ${round + 1}  ${sc.name.padEnd(14)} ${s.name.padEnd(11)} ${fmtInt(r.reqPerSec).padStart(8)} req/s  p50 ${fmtMs(r.latencyUs.p50)} p99 ${fmtMs(r.latencyUs.p99)} ms  CPU ${fmt1(r.cpuUsPerReq)} µs/req (server ${Math.round(r.serverCpuPct)}%, load gen ${Math.round(r.loadgenCpuPct)}%, other ${Math.round(r.machineBusyPct - r.serverCpuPct - r.loadgenCpuPct)}%)${bad ? `  !! wrong ${r.wrong} missing ${r.missing} unknown-id ${r.unknownId} ${errs}` : ''}`,
        );
        if (r.wrong > 0) {
          console.error(`\n!!! WRONG ANSWERS from ${s.name} in ${sc.name}: ${r.wrong}. Examples:`);
          for (const w of r.wrongSamples.slice(0, 3)) console.error(`    sent ${w.sent}: expected ${JSON.stringify(w.expected)}\n      got ${w.got}`);
        }
      }
    }
  }
  for (const s of running) s.rssEnd = rssOf(await s.pids());

  // ---- aggregate
  const groups = new Map<string, typeof results>();
  for (const r of results) {
    const k = `${r.server}/${r.scenario}`;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k)!.push(r);
  }
  const summary: Record<string, Record<string, unknown>> = {};
  const get = (server: string, sc: string): { rate: Agg; p50: Agg; p95: Agg; p99: Agg; cpu: Agg } | undefined => {
    const g = groups.get(`${server}/${sc}`);
    if (!g) return undefined;
    return {
      rate: agg(g.map((r) => r.reqPerSec)),
      p50: agg(g.map((r) => r.latencyUs.p50)),
      p95: agg(g.map((r) => r.latencyUs.p95)),
      p99: agg(g.map((r) => r.latencyUs.p99)),
      cpu: agg(g.map((r) => r.cpuUsPerReq)),
    };
  };
  const rows: string[][] = [['scenario', 'server', 'req/s median (range)', 'p50 ms', 'p95 ms', 'p99 ms (range)', 'CPU µs/req (range)', 'server CPU %', 'other load %', 'wrong', 'errors', 'missing']];
  let totalWrong = 0;
  let totalErrors = 0;
  let totalMissing = 0;
  for (const sc of SCENARIOS) {
    for (const s of running) {
      const g = groups.get(`${s.name}/${sc.name}`);
      const a = get(s.name, sc.name);
      if (!g || !a) continue;
      const wrong = g.reduce((n, r) => n + r.wrong + r.unknownId, 0);
      const errors: Record<string, number> = {};
      for (const r of g) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
      const errorCount = Object.values(errors).reduce((x, y) => x + y, 0);
      const missing = g.reduce((n, r) => n + r.missing, 0);
      totalWrong += wrong;
      totalErrors += errorCount;
      totalMissing += missing;
      const cpuPct = agg(g.map((r) => r.serverCpuPct));
      const otherPct = agg(g.map((r) => r.machineBusyPct - r.serverCpuPct - r.loadgenCpuPct));
      summary[`${s.name}/${sc.name}`] = { rounds: g.length, reqPerSec: a.rate, latencyUs: { p50: a.p50, p95: a.p95, p99: a.p99 }, cpuUsPerReq: a.cpu, serverCpuPct: cpuPct, otherLoadPct: otherPct, wrong, errors, missing };
      rows.push([
        sc.name,
        s.name,
        range(a.rate, fmtInt),
        fmtMs(a.p50.median),
        fmtMs(a.p95.median),
        range(a.p99, fmtMs),
        range(a.cpu, fmt1),
        fmtInt(cpuPct.median),
        fmtInt(Math.max(0, otherPct.median)),
        String(wrong),
        errorCount ? Object.entries(errors).map(([k, v]) => `${k} ${v}`).join(', ') : '0',
        String(missing),
      ]);
    }
  }
  console.log(`\nMedians of ${ROUNDS} round(s) (range over rounds). Latency: request written -> reply read, in the load generator. CPU: every process of the server, user+system, per reply. Other load: the machine's busy time minus the server's and the load generator's, in % of one core (other engineers' work, the idle servers).\n`);
  console.log(table(rows));

  // Where the server's CPU goes, by process, in the first throughput scenario.
  const cpuScenario = SCENARIOS[0]!.name;
  console.log(`\nCPU by process in ${cpuScenario} (median over rounds, % of one core; the machine has ${cpus().length} cores)\n`);
  const byProc: string[][] = [['server', 'process', 'CPU %', 'µs per request']];
  for (const s of running) {
    const g = groups.get(`${s.name}/${cpuScenario}`);
    if (!g) continue;
    const labels = g[0]!.labels;
    labels.forEach((label, i) => {
      const pct = agg(g.map((r) => (r.labels[i] === label ? (r.cpuUsPerPid[i]! / 1000 / r.wallMs) * 100 : NaN)));
      const per = agg(g.map((r) => (r.labels[i] === label && r.replies > 0 ? r.cpuUsPerPid[i]! / r.replies : NaN)));
      byProc.push([s.name, label, fmt1(pct.median), fmt2(per.median)]);
    });
  }
  console.log(table(byProc));

  console.log('\nRSS (VmRSS, MiB) per process: idle after start / after the logins / at the end of the load\n');
  const rssRows: string[][] = [['server', 'process', 'idle', 'logged in', 'end of load']];
  for (const s of running) {
    for (const k of Object.keys(s.rssEnd ?? s.rssIdle ?? {})) {
      const m = (v: number | undefined): string => (v !== undefined && Number.isFinite(v) ? (v / 1024).toFixed(1) : '-');
      rssRows.push([s.name, k, m(s.rssIdle?.[k]), m(s.rssAfterSetup?.[k]), m(s.rssEnd?.[k])]);
    }
    const sum = (o: Record<string, number> | undefined): string => (o ? (Object.values(o).filter(Number.isFinite).reduce((a, b) => a + b, 0) / 1024).toFixed(1) : '-');
    rssRows.push([s.name, 'total', sum(s.rssIdle), sum(s.rssAfterSetup), sum(s.rssEnd)]);
  }
  console.log(table(rssRows));

  // ---- ratios and targets
  const ratios: Record<string, number> = {};
  const targets: { target: string; value: string; pass: boolean | undefined }[] = [];
  const ratio = (name: string, a: number | undefined, b: number | undefined): number => {
    const v = a !== undefined && b !== undefined ? a / b : NaN;
    ratios[name] = v;
    return v;
  };
  if (!SCALING) {
    const c = (sc: string) => get('cluster', sc);
    const si = (sc: string) => get('single', sc);
    const fo = (sc: string) => get('fork', sc);
    console.log('\nRatios (of medians)\n');
    const lines: string[][] = [['ratio', 'value']];
    for (const sc of ['pipelined', 'chat-pipelined', 'conc50', 'single']) {
      lines.push([`${sc}: cluster/single req/s`, fmt2(ratio(`${sc}.cluster/single.reqPerSec`, c(sc)?.rate.median, si(sc)?.rate.median))]);
      lines.push([`${sc}: cluster/fork req/s`, fmt2(ratio(`${sc}.cluster/fork.reqPerSec`, c(sc)?.rate.median, fo(sc)?.rate.median))]);
      lines.push([`${sc}: cluster/single CPU per request`, fmt2(ratio(`${sc}.cluster/single.cpuUsPerReq`, c(sc)?.cpu.median, si(sc)?.cpu.median))]);
    }
    if (BASELINE_ROOT) {
      const be = (sc: string) => get('cluster-before', sc);
      for (const sc of ['pipelined', 'chat-pipelined', 'conc50', 'single']) {
        lines.push([`${sc}: cluster/cluster-before req/s`, fmt2(ratio(`${sc}.cluster/before.reqPerSec`, c(sc)?.rate.median, be(sc)?.rate.median))]);
        lines.push([`${sc}: cluster/cluster-before CPU per request`, fmt2(ratio(`${sc}.cluster/before.cpuUsPerReq`, c(sc)?.cpu.median, be(sc)?.cpu.median))]);
        lines.push([`${sc}: cluster/cluster-before p50`, fmt2(ratio(`${sc}.cluster/before.p50`, c(sc)?.p50.median, be(sc)?.p50.median))]);
      }
    }
    if (WITH_NATS) {
      const na = (sc: string) => get('cluster-nats', sc);
      for (const sc of ['pipelined', 'chat-pipelined', 'conc50', 'single']) {
        lines.push([`${sc}: cluster-nats/cluster req/s`, fmt2(ratio(`${sc}.nats/sysv.reqPerSec`, na(sc)?.rate.median, c(sc)?.rate.median))]);
        lines.push([`${sc}: cluster-nats/cluster CPU per request`, fmt2(ratio(`${sc}.nats/sysv.cpuUsPerReq`, na(sc)?.cpu.median, c(sc)?.cpu.median))]);
        lines.push([`${sc}: cluster-nats/cluster p50`, fmt2(ratio(`${sc}.nats/sysv.p50`, na(sc)?.p50.median, c(sc)?.p50.median))]);
      }
    }
    if (WITH_HOSTS) {
      const ho = (sc: string) => get('cluster-hosts', sc);
      const base = WITH_NATS ? 'cluster-nats' : 'cluster';
      const b = (sc: string) => get(base, sc);
      for (const sc of ['pipelined', 'chat-pipelined', 'conc50', 'single']) {
        lines.push([`${sc}: cluster-hosts/${base} req/s`, fmt2(ratio(`${sc}.hosts/${base}.reqPerSec`, ho(sc)?.rate.median, b(sc)?.rate.median))]);
        lines.push([`${sc}: cluster-hosts/${base} CPU per request`, fmt2(ratio(`${sc}.hosts/${base}.cpuUsPerReq`, ho(sc)?.cpu.median, b(sc)?.cpu.median))]);
        lines.push([`${sc}: cluster-hosts/${base} p50`, fmt2(ratio(`${sc}.hosts/${base}.p50`, ho(sc)?.p50.median, b(sc)?.p50.median))]);
      }
    }
    lines.push(['single (idle): p50 cluster/fork', fmt2(ratio('single.cluster/fork.p50', c('single')?.p50.median, fo('single')?.p50.median))]);
    lines.push(['conc50: p50 cluster/fork', fmt2(ratio('conc50.cluster/fork.p50', c('conc50')?.p50.median, fo('conc50')?.p50.median))]);
    lines.push(['conc50: p99 cluster/fork', fmt2(ratio('conc50.cluster/fork.p99', c('conc50')?.p99.median, fo('conc50')?.p99.median))]);
    console.log(table(lines));
    const t = (target: string, v: number, limit: number, cmp: '>=' | '<='): void => {
      const pass = Number.isFinite(v) ? (cmp === '>=' ? v >= limit : v <= limit) : undefined;
      targets.push({ target, value: fmt2(v), pass });
    };
    t('pipelined: cluster req/s >= 0.75x single', ratios['pipelined.cluster/single.reqPerSec']!, 0.75, '>=');
    t('pipelined: cluster req/s >= 1.5x fork', ratios['pipelined.cluster/fork.reqPerSec']!, 1.5, '>=');
    t('pipelined: cluster CPU/request <= 1.5x single', ratios['pipelined.cluster/single.cpuUsPerReq']!, 1.5, '<=');
    t('single connection (idle): p50 cluster <= fork', ratios['single.cluster/fork.p50']!, 1, '<=');
    t('conc50: p50 cluster <= fork', ratios['conc50.cluster/fork.p50']!, 1, '<=');
    t('conc50: p99 cluster <= fork', ratios['conc50.cluster/fork.p99']!, 1, '<=');
  } else {
    console.log('\nShard scaling (cluster, pipelined)\n');
    const lines: string[][] = [['shards', 'req/s median (range)', 'CPU µs/req (range)', 'of the best']];
    const rates = SCALING.map((n) => get(`cluster-s${n}`, 'pipelined')?.rate.median ?? NaN);
    const best = Math.max(...rates.filter(Number.isFinite));
    SCALING.forEach((n, i) => {
      const a = get(`cluster-s${n}`, 'pipelined');
      if (!a) return;
      ratios[`shards${n}.ofBest`] = rates[i]! / best;
      lines.push([String(n), range(a.rate, fmtInt), range(a.cpu, fmt1), `${Math.round((rates[i]! / best) * 100)}%`]);
    });
    console.log(table(lines));
    const worst = Math.min(...rates.filter(Number.isFinite)) / best;
    targets.push({ target: `pipelined req/s at every shard count (${SCALING.join(', ')}) within 10% of the best`, value: `worst ${Math.round(worst * 100)}%`, pass: Number.isFinite(worst) ? worst >= 0.9 : undefined });
  }
  console.log('\nTargets\n');
  console.log(table([['target', 'value', 'result'], ...targets.map((x) => [x.target, x.value, x.pass === undefined ? 'n/a' : x.pass ? 'PASS' : 'MISS'])]));

  const bad = totalWrong + totalErrors + totalMissing;
  if (bad > 0) {
    console.error(`\n!!! ${totalWrong} WRONG answer(s), ${totalErrors} error reply(ies), ${totalMissing} unanswered request(s): see the table. Exit code 1.`);
  } else console.log(`\nEvery reply checked: ${fmtInt(results.reduce((n, r) => n + r.received, 0))} answers, all correct.`);
  for (const s of running) for (const n of s.notes) console.error(`note: ${s.name}: ${n}`);

  mkdirSync(dirname(RESULTS), { recursive: true });
  writeFileSync(
    RESULTS,
    `${JSON.stringify(
      {
        started: started.toISOString(),
        finished: new Date().toISOString(),
        clusterRoot: CLUSTER_ROOT,
        clusterCommit: commit,
        machine: { cpus: cpus().length, model: cpus()[0]?.model, kernel: release(), node: process.version },
        settings: { rounds: ROUNDS, quick: QUICK, only: process.env.BENCH_ONLY ?? null, warmupMs: WARMUP_MS, measureMs: MEASURE_MS, clusterShards: SCALING ?? CLUSTER_SHARDS, forkShards: FORK_SHARDS, characters: CHARACTERS, loadCharacters: LOAD_CONNS, queries: data.queries.length, clusterEnv: CLUSTER_ENV },
        scenarios: SCENARIOS,
        servers: running.map((s) => ({ name: s.name, port: s.port, setupMs: s.setupMs, rssKb: { idle: s.rssIdle, loggedIn: s.rssAfterSetup, end: s.rssEnd }, notes: s.notes, pm2Home: s.cluster?.home, mqKey: s.cluster?.mqKey })),
        summary,
        ratios,
        targets,
        totals: { wrong: totalWrong, errors: totalErrors, missing: totalMissing },
        runs: results,
      },
      (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v),
      1,
    )}\n`,
  );
  console.log(`\nFigures written to ${RESULTS}`);
  return bad > 0 ? 1 : 0;
}

async function cleanup(): Promise<void> {
  shuttingDown = true;
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (const pid of extraPids) {
    try {
      if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (const c of [...clusters]) {
    const notes = await c.stop();
    clusters.delete(c);
    for (const n of notes) console.error(`cleanup ${c.label}: ${n}`);
  }
  for (const lab of labs) lab.destroy();
  labs.clear();
}

main()
  .then(
    async (code) => {
      await cleanup();
      process.exit(code);
    },
    async (err: unknown) => {
      console.error('bench:e2e failed:', err);
      await cleanup();
      process.exit(2);
    },
  );
