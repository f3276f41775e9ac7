import { connect as netConnect } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { withTimeout } from '../with-timeout';

/** The PM2 home PM2 itself would use: PM2_HOME, else ~/.pm2. */
export function pm2Home(env: NodeJS.ProcessEnv = process.env): string {
  return env.PM2_HOME || join(homedir(), '.pm2');
}

/**
 * Whether a PM2 daemon answers on `home`'s RPC socket. Checked before connecting, because
 * `pm2.connect` launches a daemon of its own when none runs: a collector or a health check
 * must never do that.
 */
export function pm2DaemonReachable(home: string, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = netConnect(join(home, 'rpc.sock'));
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/** PM2's event bus (an axon sub-emitter): the part we use. */
export interface Pm2Bus {
  on(event: string, listener: (data: unknown) => void): void;
}

/** One process as `pm2.list` gives it (the fields we read). */
export interface Pm2Process {
  readonly name: string;
  readonly pmId: number;
  readonly pid: number;
  readonly status: string;
  /** NODE_APP_INSTANCE, when PM2 set one. */
  readonly instance: number | undefined;
}

/** A connection to one PM2 daemon (the project's own pm2 package, programmatic API). */
export interface Pm2Client {
  readonly home: string;
  launchBus(): Promise<Pm2Bus>;
  list(): Promise<Pm2Process[]>;
  disconnect(): void;
}

type ErrCb<T> = (err: Error | null, value: T) => void;
interface Pm2Api {
  connect(cb: (err: Error | null) => void): void;
  launchBus(cb: ErrCb<unknown>): void;
  list(cb: ErrCb<unknown[]>): void;
  disconnect(): void;
}

interface RawDescription {
  name?: unknown;
  pm_id?: unknown;
  pid?: unknown;
  pm2_env?: { status?: unknown; NODE_APP_INSTANCE?: unknown };
}

const num = (v: unknown): number | undefined =>
  typeof v === 'number' && Number.isFinite(v) ? v : typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : undefined;

/**
 * Connects to the PM2 daemon of `home`, or resolves undefined when none runs there (never
 * starts one). Rejects when the daemon is there but does not let us in within `timeoutMs`.
 */
export async function connectPm2(home: string, timeoutMs = 3000): Promise<Pm2Client | undefined> {
  if (!(await pm2DaemonReachable(home))) return undefined;
  // Loaded only now: requiring pm2 touches its home folder.
  const mod = (await import('pm2')) as unknown as { default?: unknown; custom?: unknown };
  const Custom = ((mod.custom ?? (mod.default as { custom?: unknown } | undefined)?.custom) as new (opts: { pm2_home: string }) => Pm2Api);
  const api = new Custom({ pm2_home: home });
  await withTimeout(new Promise<void>((resolve, reject) => api.connect((err) => (err ? reject(err) : resolve()))), timeoutMs, 'pm2.connect');
  return {
    home,
    // launchBus calls back only once the socket connects: bound the wait.
    launchBus: () =>
      withTimeout(new Promise<Pm2Bus>((resolve, reject) => api.launchBus((err, bus) => (err ? reject(err) : resolve(bus as Pm2Bus)))), timeoutMs, 'pm2.launchBus'),
    list: () =>
      withTimeout(
        new Promise<Pm2Process[]>((resolve, reject) =>
          api.list((err, list) => {
            if (err) return reject(err);
            resolve(
              (list as RawDescription[]).map((d) => ({
                name: String(d.name ?? ''),
                pmId: num(d.pm_id) ?? -1,
                pid: num(d.pid) ?? 0,
                status: String(d.pm2_env?.status ?? 'unknown'),
                instance: num(d.pm2_env?.NODE_APP_INSTANCE),
              })),
            );
          }),
        ),
        timeoutMs,
        'pm2.list',
      ),
    disconnect: () => {
      try {
        api.disconnect();
      } catch {
        /* already gone */
      }
    },
  };
}
