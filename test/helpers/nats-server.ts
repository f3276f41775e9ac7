import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tcpConnect } from 'node:net';
import { freePort } from './host';

/**
 * A real `nats-server` for tests: started on a free port (installed by scripts/setup-nats.sh,
 * which `npm test` runs first), stopped by its pid. `useNatsServer()` registers the cleanup in
 * mocha's `after` hook and in a process-exit hook, so a failed test leaves no server behind.
 */

/** Where Debian's package puts the binary; PATH is tried first. */
export function natsServerBinary(): string {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(`${dir}/nats-server`)) return `${dir}/nats-server`;
  }
  for (const p of ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server']) if (existsSync(p)) return p;
  throw new Error('nats-server is not installed: run scripts/setup-nats.sh (npm test does)');
}

const live = new Set<ChildProcess>();
let exitHook = false;

function killAll(): void {
  for (const child of live) {
    if (child.pid !== undefined && child.exitCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }
  live.clear();
}

function portOpen(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect({ port, host });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export interface NatsServerOptions {
  /** Lines of nats-server configuration (e.g. `max_payload: 4096`, `max_pending: 262144`). */
  config?: string;
  /** Address to listen on (default 127.0.0.1); also the host of `url`. */
  host?: string;
  /**
   * A command prefix the server runs under, e.g. `ip netns exec NS` (test/helpers/netns.ts:
   * the server on a "host" of a namespace lab). It must exec the server (as `ip netns exec`
   * and `unshare` do), so that the child's pid is the server's.
   */
  wrap?: string[];
}

export class NatsServer {
  private child: ChildProcess | undefined;
  private stderr = '';
  private configDir: string | undefined;

  private constructor(
    readonly port: number,
    private readonly options: NatsServerOptions,
  ) {}

  /** Starts a server on a free port and waits until it accepts connections. */
  static async start(options: NatsServerOptions = {}): Promise<NatsServer> {
    const server = new NatsServer(await freePort(), options);
    await server.restart();
    return server;
  }

  get host(): string {
    return this.options.host ?? '127.0.0.1';
  }

  get url(): string {
    return `nats://${this.host}:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts it (again) on the same port. */
  async restart(): Promise<void> {
    if (this.running) throw new Error('nats-server already running');
    if (!exitHook) {
      exitHook = true;
      process.on('exit', killAll);
    }
    this.stderr = '';
    // -a: loopback only (or the address given). No JetStream: a plain core-NATS server.
    const args = ['-a', this.host, '-p', String(this.port)];
    if (this.options.config) {
      this.configDir ??= mkdtempSync(join(tmpdir(), 'chatd-nats-'));
      const file = join(this.configDir, 'nats.conf');
      writeFileSync(file, `${this.options.config}\n`);
      args.push('-c', file);
    }
    const wrap = this.options.wrap ?? [];
    const argv = [...wrap, natsServerBinary(), ...args];
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr?.on('data', (d: Buffer) => {
      if (this.stderr.length < 20_000) this.stderr += d.toString();
    });
    live.add(child);
    child.once('exit', () => live.delete(child));
    this.child = child;
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (!this.running) throw new Error(`nats-server exited at start: ${this.stderr.slice(-2000)}`);
      if (await portOpen(this.port, this.host)) return;
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(`nats-server not listening on ${this.port} after 10 s: ${this.stderr.slice(-2000)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Stops it by pid (SIGKILL: no goodbye to the clients) and waits for its exit. Idempotent. */
  async stop(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child;
    if (!child || !this.running || child.pid === undefined) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      process.kill(child.pid, signal);
    } catch {
      return;
    }
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000))]);
    if (this.running) process.kill(child.pid, 'SIGKILL');
  }

  /** Stops it and removes its configuration directory. */
  async dispose(): Promise<void> {
    await this.stop();
    if (this.configDir) rmSync(this.configDir, { recursive: true, force: true });
    this.configDir = undefined;
  }
}

/** Call inside a `describe`: a server for the suite, killed in `after` (even when tests fail). */
export function useNatsServer(options: NatsServerOptions = {}): { readonly server: NatsServer } {
  const holder: { server: NatsServer } = {} as { server: NatsServer };
  before(async function () {
    this.timeout(20_000);
    holder.server = await NatsServer.start(options);
  });
  after(async () => {
    await holder.server?.dispose();
  });
  return holder;
}
