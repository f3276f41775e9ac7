import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { SysvQueue } from '../../src/ipc';
import { firstEpochOwner } from '../../src/cluster/ownership';
import { ChatClient, type Reply } from './chat-client';
import { type CommandResult, freePort, hasPm2Home, isAlive, namesPerShard, queueExistsByKey, removeQueueByKey, runCommand, unusedQueueKey } from './host';

export { isAlive, namesPerShard, queueExistsByKey } from './host';
/** The e2e suites' queue keys (the benchmark uses another range, so the two never meet). */
const E2E_KEY_BASE = 0x3e000000;

/**
 * A real cluster for end-to-end suites: the project's own PM2 (node_modules/.bin/pm2, never
 * a global one) runs ecosystem.config.js under a private PM2_HOME, on a free TCP port and a
 * random unused MQ_KEY, so suites never touch a developer's cluster or each other.
 *
 * Cleanup is unconditional: `stop()` (idempotent) kills the PM2 daemon and every process it
 * ran, removes the queue by key and deletes PM2_HOME. `useCluster()` registers it in mocha's
 * `after`, so it runs when tests or the start itself fail; a process `exit`/signal hook
 * cleans up whatever is still running if mocha dies first.
 */

export const PROJECT_ROOT = findProjectRoot();
/** Lines per log file printed after a failed suite (E2E_LOG_LINES overrides). */
const E2E_LOG_LINES = Number(process.env.E2E_LOG_LINES ?? 60) || 60;
const PM2_BIN = join(PROJECT_ROOT, 'node_modules', '.bin', 'pm2');

/** The configuration variables of schemas/config.json: never inherited from the caller's shell. */
const CONFIG_VARIABLES: readonly string[] = Object.keys(
  (JSON.parse(readFileSync(join(PROJECT_ROOT, 'schemas', 'config.json'), 'utf8')) as { properties: object }).properties,
);

export interface ClusterOptions {
  /** CHANNELD_SHARDS (default 2: the suites need more than one shard, and 2 cores are few). */
  shards?: number;
  /** LOG_LEVEL of the processes (default warn). */
  logLevel?: string;
  /** Any other configuration variables (CHATD_RATE_BURST, CHATD_IDLE_TIMEOUT_MS, ...). */
  env?: Record<string, string>;
  /** Bound on the whole start, ready checks included (default 30 s). */
  startTimeoutMs?: number;
  /** A label for diagnostics. */
  label?: string;
  /** Pass MQ_KEY as 0x hex rather than decimal (PROTOCOL.md allows both). */
  mqKeyHex?: boolean;
  /**
   * A command prefix for every pm2 command, e.g. `NetnsLab.wrap('a')` (test/helpers/netns.ts):
   * the PM2 daemon, and so every process of the cluster, runs on that namespace "host".
   */
  wrap?: string[];
  /** The address chatD and the status app listen on and clients connect to (default 127.0.0.1). */
  host?: string;
  /** HOST_ROLE (docs/multi-host.md): which apps this cluster runs (default all). */
  role?: 'all' | 'front' | 'shards';
  /**
   * The processes run in an IPC namespace of their own (`wrap` with `unshare --ipc`): their
   * queue dies with them, and the root namespace's queue with our key is not ours to remove.
   */
  privateIpc?: boolean;
}

export interface Pm2Process {
  name: string;
  pmId: number;
  pid: number;
  status: string;
  /** NODE_APP_INSTANCE (0 for single-instance apps). */
  instance: number;
  restarts: number;
  /** When PM2 last (re)started it (epoch ms). */
  uptimeSince: number;
}

export type RunResult = CommandResult;

/** Every cluster started and not yet stopped: the exit hook's list. */
const live = new Set<Cluster>();
let hooksInstalled = false;

export class Cluster {
  readonly home: string;
  readonly shards: number;
  readonly env: Record<string, string>;
  port = 0;
  /** Port of the status app (/metrics, the status page), 0 when it is disabled (env STATUS_PORT=0). */
  statusPort = 0;
  readonly mqKey: number;
  readonly label: string;
  /** PID of the PM2 daemon (God Daemon), known once started. */
  daemonPid: number | undefined;
  /** Every app pid seen in a jlist, for the last-resort kill. */
  private readonly seenPids = new Set<number>();
  private readonly clients = new Set<ChatClient>();
  private stopping: Promise<void> | undefined;
  /** The log tails, read just before stop() deletes PM2_HOME. */
  finalLogs: string | undefined;
  private readonly options: ClusterOptions;

  constructor(options: ClusterOptions = {}) {
    installHooks();
    this.options = options;
    this.shards = options.shards ?? 2;
    this.label = options.label ?? 'cluster';
    this.home = mkdtempSync(join(tmpdir(), 'chatd-e2e-'));
    this.mqKey = unusedQueueKey(E2E_KEY_BASE);
    this.env = {};
    live.add(this);
  }

  /** Starts the cluster and resolves once every process is online and the shards answer. */
  async start(): Promise<void> {
    const deadline = Date.now() + (this.options.startTimeoutMs ?? 30_000);
    await this.launch();
    await this.waitOnline(deadline);
    await this.waitServing(deadline);
  }

  /** `pm2 start` only, without waiting for the processes (for starts that must fail). */
  async launch(): Promise<void> {
    this.port = await freePort();
    this.statusPort = this.options.env?.STATUS_PORT === '0' || this.role === 'shards' ? 0 : await freePort();
    Object.assign(this.env, {
      CHATD_HOST: this.host,
      CHATD_PORT: String(this.port),
      STATUS_HOST: this.host,
      STATUS_PORT: String(this.statusPort),
      MQ_KEY: this.options.mqKeyHex ? `0x${this.mqKey.toString(16)}` : String(this.mqKey),
      CHANNELD_SHARDS: String(this.shards),
      // E2E_LOG_LEVEL (e.g. info) overrides every suite's level when chasing a failure.
      LOG_LEVEL: process.env.E2E_LOG_LEVEL ?? this.options.logLevel ?? 'warn',
      ...(this.role !== 'all' ? { HOST_ROLE: this.role } : {}),
      ...this.options.env,
    });
    const r = await this.pm2(['start', join(PROJECT_ROOT, 'ecosystem.config.js')], 30_000);
    this.daemonPid = this.readDaemonPid();
    if (r.code !== 0) throw new Error(`${this.label}: pm2 start failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  }

  /**
   * Runs one of the operator tools (`dist/ops/<tool>.js`, as `npm run <tool>` does) against this
   * cluster; `prefix` runs it under a command (e.g. `nsenter --target PID --net --ipc`: on a
   * namespace host).
   */
  ops(tool: string, args: string[], timeoutMs = 20_000, prefix: string[] = []): Promise<RunResult> {
    const argv = [...prefix, process.execPath, join(PROJECT_ROOT, 'dist', 'ops', `${tool}.js`), ...args];
    return runCommand(argv[0]!, argv.slice(1), { cwd: PROJECT_ROOT, env: this.processEnv(), timeoutMs });
  }

  /**
   * Runs the project's pm2 with this cluster's PM2_HOME and environment; `extraEnv` adds to it
   * for this command only (e.g. PM2_CONCURRENT_ACTIONS, as `npm run reload` sets it).
   */
  pm2(args: string[], timeoutMs = 20_000, extraEnv: Record<string, string> = {}): Promise<RunResult> {
    const [bin, ...rest] = this.pm2Argv(args);
    return runCommand(bin!, rest, { cwd: PROJECT_ROOT, env: { ...this.processEnv(), ...extraEnv }, timeoutMs });
  }

  /** The pm2 command line, under `wrap` when there is one. */
  private pm2Argv(args: string[]): string[] {
    return [...(this.options.wrap ?? []), PM2_BIN, ...args];
  }

  /** HOST_ROLE of this cluster. */
  get role(): 'all' | 'front' | 'shards' {
    return this.options.role ?? 'all';
  }

  /** The address chatD listens on and clients connect to. */
  get host(): string {
    return this.options.host ?? '127.0.0.1';
  }

  /** `pm2 jlist`, parsed. */
  async jlist(): Promise<Pm2Process[]> {
    const r = await this.pm2(['jlist']);
    if (r.code !== 0) throw new Error(`${this.label}: pm2 jlist failed (${r.code}): ${r.stderr}`);
    const start = r.stdout.search(/^\[/m);
    if (start < 0) throw new Error(`${this.label}: pm2 jlist printed no JSON: ${r.stdout.slice(0, 500)}`);
    const raw = JSON.parse(r.stdout.slice(start)) as {
      name: string;
      pm_id: number;
      pid: number;
      pm2_env?: { status?: string; NODE_APP_INSTANCE?: number | string; restart_time?: number; pm_uptime?: number };
    }[];
    const list = raw.map((p) => ({
      name: p.name,
      pmId: p.pm_id,
      pid: p.pid,
      status: p.pm2_env?.status ?? 'unknown',
      instance: Number(p.pm2_env?.NODE_APP_INSTANCE ?? 0) || 0,
      restarts: p.pm2_env?.restart_time ?? 0,
      uptimeSince: p.pm2_env?.pm_uptime ?? 0,
    }));
    for (const p of list) if (p.pid > 0) this.seenPids.add(p.pid);
    return list;
  }

  /** The process of one app instance (throws when PM2 does not list it). */
  async process(app: string, instance = 0): Promise<Pm2Process> {
    const p = (await this.jlist()).find((x) => x.name === app && x.instance === instance);
    if (!p) throw new Error(`${this.label}: pm2 lists no ${app} instance ${instance}`);
    return p;
  }

  /** The pid of one app instance (0 when it is not running). */
  async pid(app: string, instance = 0): Promise<number> {
    return (await this.process(app, instance)).pid;
  }

  /** Sends a signal to one app instance, by the pid from `pm2 jlist`. Returns that pid. */
  async signal(app: string, instance: number, signal: NodeJS.Signals): Promise<number> {
    const pid = await this.pid(app, instance);
    if (!(pid > 0)) throw new Error(`${this.label}: ${app} ${instance} has no pid`);
    process.kill(pid, signal);
    return pid;
  }

  /** Waits until PM2 shows `app instance` online with a pid other than `oldPid`; returns it. */
  async waitRestarted(app: string, instance: number, oldPid: number, timeoutMs = 15_000): Promise<Pm2Process> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const p = (await this.jlist()).find((x) => x.name === app && x.instance === instance);
      if (p && p.status === 'online' && p.pid > 0 && p.pid !== oldPid) return p;
      if (Date.now() > deadline) throw new Error(`${this.label}: ${app} ${instance} not restarted within ${timeoutMs} ms (${JSON.stringify(p)})`);
      await sleep(100);
    }
  }

  /** The queue's kernel counters (msgctl IPC_STAT), opened by key. */
  queueStat(): ReturnType<SysvQueue['stat']> & { id: number } {
    const q = SysvQueue.open({ key: this.mqKey, create: false });
    return { ...q.stat(), id: q.id };
  }

  /** Whether a queue with this cluster's key exists (msgget without IPC_CREAT). */
  queueExists(): boolean {
    return queueExistsByKey(this.mqKey);
  }

  /** Polls until the queue holds no message; resolves with the last stat. */
  async waitQueueEmpty(timeoutMs = 5000): Promise<ReturnType<Cluster['queueStat']>> {
    const deadline = Date.now() + timeoutMs;
    let last = this.queueStat();
    while (last.messages !== 0) {
      if (Date.now() > deadline) {
        throw new Error(`${this.label}: queue ${last.id} still holds ${last.messages} message(s) (${last.bytes} bytes) after ${timeoutMs} ms`);
      }
      await sleep(50);
      last = this.queueStat();
    }
    return last;
  }

  /** Base URL of the status app (`http://127.0.0.1:PORT`); throws when it is disabled. */
  get statusUrl(): string {
    if (!(this.statusPort > 0)) throw new Error(`${this.label}: the status app is disabled (STATUS_PORT=0)`);
    return `http://${this.host}:${this.statusPort}`;
  }

  /** PM2 apps a started cluster has: gc, each shard, chatD, and the status app unless disabled (by HOST_ROLE). */
  get expectedProcesses(): number {
    const front = 2 + (this.statusPort > 0 ? 1 : 0);
    return this.role === 'front' ? front : this.role === 'shards' ? this.shards : front + this.shards;
  }

  /** A client connected to this cluster's chatD, destroyed at stop. */
  async client(options: { requestTimeoutMs?: number } = {}): Promise<ChatClient> {
    const c = await ChatClient.connect(this.port, { host: this.host, ...options });
    this.track(c);
    return c;
  }

  /** A connected client with a logged-in character; throws unless the login is ok. */
  async login(name: string, channel: number): Promise<ChatClient> {
    const c = await this.client();
    const r = await c.request({ op: 'login', name, channel });
    if (r.ok !== true) throw new Error(`${this.label}: login ${name}@${channel} failed: ${JSON.stringify(r)}`);
    return c;
  }

  track(c: ChatClient): ChatClient {
    this.clients.add(c);
    void c.closed.then(() => this.clients.delete(c));
    return c;
  }

  /** Waits until chatD accepts connections and answers ping, and every shard answers a find. */
  async waitServing(deadline = Date.now() + 20_000): Promise<void> {
    let lastProblem = 'nothing tried';
    const probeName = `probe_${process.pid}_${Math.floor(Math.random() * 1e6)}`;
    let probe: ChatClient | undefined;
    try {
      for (;;) {
        if (Date.now() > deadline) throw new Error(`${this.label}: not serving in time: ${lastProblem}`);
        try {
          if (!probe || probe.isClosed) {
            probe = await ChatClient.connect(this.port, { host: this.host, connectTimeoutMs: 1000, requestTimeoutMs: 3000 });
            const ping = await probe.request({ op: 'ping' });
            if (ping.ok !== true) throw new Error(`ping: ${JSON.stringify(ping)}`);
            const login = await probe.request({ op: 'login', name: probeName, channel: 1 });
            if (login.ok !== true) {
              await probe.destroy();
              throw new Error(`probe login: ${JSON.stringify(login)}`);
            }
          }
          const finds = await Promise.all(
            namesPerShard(this.shards, 'nobody').map((name) => probe!.request({ op: 'find', name })),
          );
          const bad = finds.filter((f: Reply) => f.ok !== true);
          if (bad.length === 0) break;
          throw new Error(`find: ${JSON.stringify(bad[0])}`);
        } catch (err) {
          lastProblem = (err as Error).message;
          await sleep(100);
        }
      }
      const out = await probe!.request({ op: 'logout' });
      if (out.ok !== true) throw new Error(`${this.label}: probe logout failed: ${JSON.stringify(out)}`);
      await probe!.closed;
    } finally {
      if (probe && !probe.isClosed) await probe.destroy();
    }
  }

  /** Reads the tail of the processes' PM2 logs (for failure reports). */
  logs(maxLinesPerFile = 40): string {
    const dir = join(this.home, 'logs');
    if (!existsSync(dir)) return '(no logs)';
    const parts: string[] = [];
    for (const f of readdirSync(dir).sort()) {
      const text = readFileSync(join(dir, f), 'utf8').trimEnd();
      if (!text) continue;
      const lines = text.split('\n');
      parts.push(`--- ${f} (${lines.length} lines, last ${Math.min(lines.length, maxLinesPerFile)}) ---\n${lines.slice(-maxLinesPerFile).join('\n')}`);
    }
    const daemonLog = join(this.home, 'pm2.log');
    if (existsSync(daemonLog)) parts.push(`--- pm2.log ---\n${readFileSync(daemonLog, 'utf8').trimEnd().split('\n').slice(-maxLinesPerFile).join('\n')}`);
    return parts.join('\n');
  }

  /**
   * Stops everything this cluster made: clients, the PM2 daemon and its processes (pm2 kill,
   * then SIGKILL of any survivor that carries our PM2_HOME), the queue (by key), PM2_HOME.
   * Idempotent; safe after a failed or partial start.
   */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  get stopped(): boolean {
    return this.stopping !== undefined && !live.has(this);
  }

  private async doStop(): Promise<void> {
    const errors: string[] = [];
    for (const c of this.clients) c.socket.destroy();
    this.clients.clear();
    this.daemonPid ??= this.readDaemonPid();
    if (this.daemonPid !== undefined && isAlive(this.daemonPid)) {
      try {
        await this.jlist();
      } catch {
        /* the pids seen so far will do */
      }
      const r = await this.pm2(['kill'], 30_000);
      if (r.code !== 0) errors.push(`pm2 kill: ${r.code} ${r.stderr}`);
    }
    await waitGone(this.pidsOfOurs(), 5000);
    for (const pid of this.pidsOfOurs()) {
      errors.push(`pid ${pid} survived pm2 kill; SIGKILL`);
      tryKill(pid, 'SIGKILL');
    }
    try {
      if (!this.options.privateIpc) removeQueueByKey(this.mqKey);
    } catch (err) {
      errors.push(`queue removal: ${(err as Error).message}`);
    }
    this.finalLogs = this.logs(E2E_LOG_LINES);
    rmSync(this.home, { recursive: true, force: true });
    live.delete(this);
    if (errors.length > 0) console.warn(`${this.label}: cleanup notes: ${errors.join('; ')}`);
  }

  /** Synchronous last-resort cleanup for process exit. */
  stopSync(): void {
    if (!live.has(this)) return;
    const daemon = this.daemonPid ?? this.readDaemonPid();
    if (daemon !== undefined && isAlive(daemon)) {
      const [bin, ...rest] = this.pm2Argv(['kill']);
      spawnSync(bin!, rest, { cwd: PROJECT_ROOT, env: this.processEnv(), timeout: 15_000, stdio: 'ignore' });
    }
    for (const pid of this.pidsOfOurs()) tryKill(pid, 'SIGKILL');
    try {
      if (!this.options.privateIpc) removeQueueByKey(this.mqKey);
    } catch {
      /* nothing more to do at exit */
    }
    rmSync(this.home, { recursive: true, force: true });
    live.delete(this);
  }

  /** Live pids (daemon and apps seen) whose environment carries our PM2_HOME: never someone else's. */
  private pidsOfOurs(): number[] {
    const candidates = new Set<number>(this.seenPids);
    if (this.daemonPid !== undefined) candidates.add(this.daemonPid);
    for (const pid of scanProcPidsWithHome(this.home)) candidates.add(pid);
    return [...candidates].filter((pid) => isAlive(pid) && hasPm2Home(pid, this.home));
  }

  private readDaemonPid(): number | undefined {
    try {
      const pid = Number.parseInt(readFileSync(join(this.home, 'pm2.pid'), 'utf8').trim(), 10);
      return pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  private processEnv(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const name of CONFIG_VARIABLES) delete env[name];
    delete env.NODE_APP_INSTANCE;
    // Loading the pm2 module anywhere in this test process (the gc suites do) sets
    // PM2_PROGRAMMATIC=true, which silences the pm2 CLI of a child: its error messages vanish.
    for (const name of Object.keys(env)) if (name.startsWith('PM2_') || name === 'pm_id') delete env[name];
    return { ...env, ...this.env, PM2_HOME: this.home };
  }

  /** Waits until PM2 lists every expected app process online (throws on `errored` or at the deadline). */
  async waitOnline(deadline: number): Promise<void> {
    const expected = this.expectedProcesses;
    for (;;) {
      const list = await this.jlist();
      const online = list.filter((p) => p.status === 'online' && p.pid > 0);
      const errored = list.filter((p) => p.status === 'errored');
      if (errored.length > 0) throw new Error(`${this.label}: errored in PM2: ${errored.map((p) => `${p.name}:${p.instance}`).join(', ')}\n${this.logs()}`);
      if (list.length === expected && online.length === expected) return;
      if (Date.now() > deadline) {
        throw new Error(`${this.label}: not all ${expected} processes online: ${JSON.stringify(list.map((p) => [p.name, p.instance, p.status]))}\n${this.logs()}`);
      }
      await sleep(100);
    }
  }
}

/**
 * Mocha glue: starts a cluster in `before` and stops it in `after` (which mocha runs even
 * when `before` or a test failed). On failure the processes' log tails are printed first.
 * Returns a getter for the running cluster.
 */
/** `options` may be a function, called in `before`: for settings known only then (a NATS server's URL). */
export function useCluster(options: ClusterOptions | (() => ClusterOptions) = {}): () => Cluster {
  let cluster: Cluster | undefined;
  before(async function () {
    const o = typeof options === 'function' ? options() : options;
    this.timeout((o.startTimeoutMs ?? 30_000) + 15_000);
    cluster = new Cluster(o);
    await cluster.start();
  });
  after(async function () {
    this.timeout(60_000);
    if (!cluster) return;
    const failed = this.test?.parent ? anyFailed(this.test.parent) : false;
    await cluster.stop();
    if (failed || process.env.E2E_SHOW_LOGS) console.log(`\n${cluster.label} logs:\n${cluster.finalLogs}\n`);
  });
  return () => {
    if (!cluster) throw new Error('cluster not started');
    return cluster;
  };
}

function anyFailed(suite: Mocha.Suite): boolean {
  return suite.tests.some((t) => t.state === 'failed') || suite.suites.some(anyFailed);
}

/** Names, one per shard, that hash to shards 0..shards-1 (in order). */
/** `count` names owned by `shard` (of `shards`), built as prefix + counter. */
export function namesOnShard(shard: number, shards: number, prefix: string, count: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < count; i++) {
    const name = `${prefix}${i}`;
    if (firstEpochOwner(name, shards) === shard) out.push(name);
  }
  return out;
}

export function shardOf(name: string, shards: number): number {
  return firstEpochOwner(name, shards);
}

/** `ipcs -q` lists a queue with this key. */
export function ipcsListsKey(key: number): boolean {
  const r = spawnSync('ipcs', ['-q'], { encoding: 'utf8' });
  const hex = `0x${key.toString(16).padStart(8, '0')}`;
  return r.stdout.split('\n').some((line) => line.trim().toLowerCase().startsWith(hex));
}

/** Whether a God Daemon with this PM2_HOME is running (`ps -eo pid,args`). */
export function daemonRunningFor(home: string): boolean {
  const r = spawnSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' });
  return r.stdout.split('\n').some((l) => l.includes('God Daemon') && l.includes(home));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function scanProcPidsWithHome(home: string): number[] {
  const out: number[] = [];
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid !== process.pid && hasPm2Home(pid, home)) out.push(pid);
  }
  return out;
}

function tryKill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    /* gone already */
  }
}

async function waitGone(pids: number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (pids.some(isAlive) && Date.now() < deadline) await sleep(50);
}

function findProjectRoot(): string {
  // dist/test/helpers → project root; also works from test/helpers under ts-node.
  for (const up of ['../../..', '../..']) {
    const dir = resolve(__dirname, up);
    if (existsSync(join(dir, 'ecosystem.config.js'))) return dir;
  }
  throw new Error(`cannot find the project root from ${__dirname}`);
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  const cleanAll = (): void => {
    for (const c of [...live]) {
      try {
        c.stopSync();
      } catch {
        /* keep going: other clusters still need cleaning */
      }
    }
  };
  process.on('exit', cleanAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      cleanAll();
      process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
    });
  }
}
