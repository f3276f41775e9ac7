/**
 * A lean starter for the real cluster under the project's own PM2, for `npm run bench:e2e`.
 * Like test/helpers/cluster.ts (private PM2_HOME under os.tmpdir(), free port, unused MQ_KEY,
 * unconditional cleanup), but for any checkout: `root` is the project whose dist/ and
 * ecosystem.config.js are started (BENCH_CLUSTER_ROOT), and whose node_modules/.bin/pm2 runs it
 * (this checkout's when that one has none).
 *
 * Cleanup (`stop()`, or `stopSync()` from an exit hook): `pm2 kill` with our PM2_HOME, SIGKILL
 * of any survivor whose environment carries our PM2_HOME, the queue removed by key, PM2_HOME
 * deleted.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ChatClient } from '../../test/helpers/chat-client';
import { type CommandResult, freePort, hasPm2Home, isAlive, namesPerShard, removeQueueByKey, runCommand, unusedQueueKey } from '../../test/helpers/host';

export { isAlive } from '../../test/helpers/host';
/** The benchmark's queue keys: another range than the e2e suites' (0x3e...), so the two never meet. */
const BENCH_KEY_BASE = 0x3d000000;

export const BENCH_ROOT = resolve(__dirname, '..', '..', '..');

export interface ClusterProcess {
  name: string;
  instance: number;
  pid: number;
  status: string;
  restarts: number;
}

/**
 * A cluster of one "host" of several (BENCH_HOSTS, docs/multi-host.md): its pm2 commands run
 * under `wrap` (`ip netns exec NS unshare --ipc --`, test/helpers/netns.ts), it runs the apps of
 * `role`, clients reach chatD at `connectHost`, and its queue lives in its own IPC namespace.
 */
export interface BenchHost {
  wrap: string[];
  role: 'front' | 'shards';
  connectHost: string;
}

export class BenchCluster {
  readonly home: string;
  readonly mqKey: number;
  readonly pm2Bin: string;
  port = 0;
  daemonPid: number | undefined;
  private readonly seenPids = new Set<number>();
  private stopped = false;

  constructor(
    readonly root: string,
    readonly shards: number,
    readonly extraEnv: Record<string, string>,
    readonly label = `cluster-${shards}`,
    readonly host?: BenchHost,
  ) {
    if (!existsSync(join(root, 'ecosystem.config.js'))) throw new Error(`${root}: no ecosystem.config.js (BENCH_CLUSTER_ROOT must be a chatd-cluster checkout)`);
    if (!existsSync(join(root, 'dist', 'src', 'chatd', 'main.js'))) throw new Error(`${root}: no dist/ (run npm run build there first)`);
    const own = join(root, 'node_modules', '.bin', 'pm2');
    this.pm2Bin = existsSync(own) ? own : join(BENCH_ROOT, 'node_modules', '.bin', 'pm2');
    this.home = mkdtempSync(join(tmpdir(), 'chatd-bench-e2e-'));
    this.mqKey = unusedQueueKey(BENCH_KEY_BASE);
  }

  /** The configuration handed to PM2 (and so to every process). */
  env(): Record<string, string> {
    return {
      CHATD_HOST: '127.0.0.1',
      CHATD_PORT: String(this.port),
      MQ_KEY: String(this.mqKey),
      CHANNELD_SHARDS: String(this.shards),
      LOG_LEVEL: 'warn',
      // The status app (a STATUS round a second, an HTTP port) is left out of the measurements.
      STATUS_PORT: '0',
      ...this.extraEnv,
    };
  }

  async start(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    await this.launch();
    await this.waitOnline(deadline);
    if (this.host?.role !== 'shards') await this.waitServing(deadline);
  }

  /** `pm2 start` only (a host of several: the others start meanwhile). */
  async launch(): Promise<void> {
    this.port = await freePort();
    const r = await this.pm2(['start', join(this.root, 'ecosystem.config.js')], 60_000);
    this.daemonPid = this.readDaemonPid();
    if (r.code !== 0) throw new Error(`${this.label}: pm2 start failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  }

  /** Every process of the cluster: the PM2 daemon first, then every app from `pm2 jlist`. */
  async pids(): Promise<{ daemon: number; apps: ClusterProcess[] }> {
    const apps = await this.jlist();
    this.daemonPid ??= this.readDaemonPid();
    if (this.daemonPid === undefined) throw new Error(`${this.label}: no PM2 daemon pid in ${this.home}/pm2.pid`);
    return { daemon: this.daemonPid, apps };
  }

  async jlist(): Promise<ClusterProcess[]> {
    const r = await this.pm2(['jlist']);
    if (r.code !== 0) throw new Error(`${this.label}: pm2 jlist failed (${r.code}): ${r.stderr}`);
    const start = r.stdout.search(/^\[/m);
    if (start < 0) throw new Error(`${this.label}: pm2 jlist printed no JSON: ${r.stdout.slice(0, 300)}`);
    const raw = JSON.parse(r.stdout.slice(start)) as { name: string; pid: number; pm2_env?: { status?: string; NODE_APP_INSTANCE?: number | string; restart_time?: number } }[];
    const list = raw.map((p) => ({
      name: p.name,
      instance: Number(p.pm2_env?.NODE_APP_INSTANCE ?? 0) || 0,
      pid: p.pid,
      status: p.pm2_env?.status ?? 'unknown',
      restarts: p.pm2_env?.restart_time ?? 0,
    }));
    for (const p of list) if (p.pid > 0) this.seenPids.add(p.pid);
    return list;
  }

  pm2(args: string[], timeoutMs = 20_000): Promise<CommandResult> {
    const [bin, ...rest] = [...(this.host?.wrap ?? []), this.pm2Bin, ...args];
    return runCommand(bin!, rest, { cwd: this.root, env: this.processEnv(), timeoutMs });
  }

  /** Tail of the PM2 logs, for a failed start. */
  logs(maxLines = 30): string {
    const dir = join(this.home, 'logs');
    if (!existsSync(dir)) return '(no logs)';
    return readdirSync(dir)
      .sort()
      .map((f) => {
        const lines = readFileSync(join(dir, f), 'utf8').trimEnd().split('\n');
        return `--- ${f} ---\n${lines.slice(-maxLines).join('\n')}`;
      })
      .join('\n');
  }

  async stop(): Promise<string[]> {
    if (this.stopped) return [];
    const notes: string[] = [];
    this.daemonPid ??= this.readDaemonPid();
    if (this.daemonPid !== undefined && isAlive(this.daemonPid)) {
      try {
        await this.jlist();
      } catch {
        /* the pids seen so far will do */
      }
      const r = await this.pm2(['kill'], 30_000);
      if (r.code !== 0) notes.push(`pm2 kill: ${r.code} ${r.stderr.trim()}`);
    }
    const deadline = Date.now() + 5000;
    while (this.pidsOfOurs().length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    this.finish(notes);
    // The daemon is a child of init once daemonized: wait (bounded) until it is reaped, so that
    // `pgrep -af PM2` right after a run shows no <defunct> leftover of ours.
    const daemon = this.daemonPid;
    const reapDeadline = Date.now() + 3000;
    while (daemon !== undefined && existsSync(`/proc/${daemon}`) && Date.now() < reapDeadline) await new Promise((r) => setTimeout(r, 50));
    return notes;
  }

  /** Synchronous cleanup for exit and signal hooks. */
  stopSync(): void {
    if (this.stopped) return;
    const daemon = this.daemonPid ?? this.readDaemonPid();
    if (daemon !== undefined && isAlive(daemon)) {
      const [bin, ...rest] = [...(this.host?.wrap ?? []), this.pm2Bin, 'kill'];
      spawnSync(bin!, rest, { cwd: this.root, env: this.processEnv(), timeout: 15_000, stdio: 'ignore' });
    }
    this.finish([]);
  }

  private finish(notes: string[]): void {
    for (const pid of this.pidsOfOurs()) {
      notes.push(`pid ${pid} survived pm2 kill; SIGKILL`);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    try {
      // A host of several has its queue in its own IPC namespace: gone with its processes.
      if (!this.host) removeQueueByKey(this.mqKey);
    } catch (err) {
      notes.push(`queue 0x${this.mqKey.toString(16)}: ${(err as Error).message}`);
    }
    rmSync(this.home, { recursive: true, force: true });
    this.stopped = true;
  }

  private pidsOfOurs(): number[] {
    const candidates = new Set<number>(this.seenPids);
    if (this.daemonPid !== undefined) candidates.add(this.daemonPid);
    for (const e of safeReaddir('/proc')) {
      if (/^\d+$/.test(e) && Number(e) !== process.pid) candidates.add(Number(e));
    }
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
    // Never inherit the caller's cluster configuration or PM2 state.
    for (const name of Object.keys(env)) {
      if (name.startsWith('PM2_') || name.startsWith('CHATD_') || name.startsWith('MQ_') || name === 'pm_id' || name === 'NODE_APP_INSTANCE') delete env[name];
    }
    for (const name of ['CHANNELD_SHARDS', 'CHANNELS', 'HEARTBEAT_MS', 'DEAD_AFTER_MS', 'SHARD_RECOVERY_MS', 'LOG_LEVEL', 'TRANSPORT', 'NATS_URL', 'CLUSTER_NAME', 'HOST_ROLE', 'SHARD_BASE', 'HOST_ID']) delete env[name];
    return { ...env, ...this.env(), PM2_HOME: this.home };
  }

  async waitOnline(deadline: number): Promise<void> {
    const expected = this.host?.role === 'front' ? 2 : this.host?.role === 'shards' ? this.shards : 2 + this.shards;
    for (;;) {
      const list = await this.jlist();
      const online = list.filter((p) => p.status === 'online' && p.pid > 0);
      if (list.some((p) => p.status === 'errored')) throw new Error(`${this.label}: errored in PM2\n${this.logs()}`);
      if (list.length === expected && online.length === expected) return;
      if (Date.now() > deadline) throw new Error(`${this.label}: not all ${expected} processes online\n${this.logs()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** chatD answers ping, a probe character logs in, and every shard answers a find. */
  async waitServing(deadline: number): Promise<void> {
    let last = 'nothing tried';
    const probeName = `probe${process.pid}x${Math.floor(Math.random() * 1e6)}`;
    const names = namesPerShard(this.shards, 'nobody');
    let probe: ChatClient | undefined;
    try {
      for (;;) {
        if (Date.now() > deadline) throw new Error(`${this.label}: not serving in time: ${last}\n${this.logs()}`);
        try {
          if (!probe || probe.isClosed) {
            probe = await ChatClient.connect(this.port, { host: this.host?.connectHost ?? '127.0.0.1', connectTimeoutMs: 1000, requestTimeoutMs: 3000 });
            const login = await probe.request({ op: 'login', name: probeName, channel: 1 });
            if (login.ok !== true) {
              await probe.destroy();
              throw new Error(`probe login: ${JSON.stringify(login)}`);
            }
          }
          const finds = await Promise.all(names.map((name) => probe!.request({ op: 'find', name })));
          const bad = finds.filter((f) => f.ok !== true);
          if (bad.length === 0) break;
          throw new Error(`find: ${JSON.stringify(bad[0])}`);
        } catch (err) {
          last = (err as Error).message;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      const out = await probe!.request({ op: 'logout' });
      if (out.ok !== true) throw new Error(`${this.label}: probe logout: ${JSON.stringify(out)}`);
      await probe!.closed;
    } finally {
      if (probe && !probe.isClosed) await probe.destroy();
    }
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

