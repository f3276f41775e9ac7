import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

interface AdminApi {
  connect(cb: (e: Error | null) => void): void;
  start(options: object, cb: (e: Error | null) => void): void;
  stop(name: string | number, cb: (e: Error | null) => void): void;
  delete(name: string | number, cb: (e: Error | null) => void): void;
  killDaemon(cb: () => void): void;
  disconnect(): void;
}

/** A PM2 daemon of the project's pm2 in a private PM2_HOME, running idle scripts under our app names. */
export interface Pm2Sandbox {
  readonly home: string;
  start(name: string, instances: number): Promise<void>;
  stop(nameOrId: string | number): Promise<void>;
  /** `pm2 delete`: what `pm2 scale` down does to the processes it removes. */
  delete(nameOrId: string | number): Promise<void>;
  /** Kills the daemon (and its apps) and removes the home. Safe to call after a failed create. */
  destroy(): Promise<void>;
}

const cb2p = (fn: (cb: (e: Error | null) => void) => void): Promise<void> =>
  new Promise((resolve, reject) => fn((e) => (e ? reject(e) : resolve())));

export async function createPm2Sandbox(): Promise<Pm2Sandbox> {
  const home = mkdtempSync(join(tmpdir(), 'pm2-sandbox-'));
  const script = join(home, 'idle.js');
  writeFileSync(script, 'setInterval(() => {}, 1000);\n');
  let api: AdminApi | undefined;
  const destroy = async (): Promise<void> => {
    if (api) {
      const a = api;
      api = undefined;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 5000);
        a.killDaemon(() => {
          clearTimeout(t);
          resolve();
        });
      });
      a.disconnect();
    }
    try {
      const pid = Number(readFileSync(join(home, 'pm2.pid'), 'utf8'));
      if (pid > 0) process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    rmSync(home, { recursive: true, force: true });
  };
  try {
    const mod = (await import('pm2')) as unknown as { custom: new (o: object) => AdminApi };
    const a = new mod.custom({ pm2_home: home });
    api = a;
    await cb2p((cb) => a.connect(cb));
  } catch (err) {
    await destroy();
    throw err;
  }
  return {
    home,
    start: (name, instances) =>
      cb2p((cb) => api!.start({ name, script, instances, exec_mode: 'fork', autorestart: false }, cb)),
    stop: (nameOrId) => cb2p((cb) => api!.stop(nameOrId, cb)),
    delete: (nameOrId) => cb2p((cb) => api!.delete(nameOrId, cb)),
    destroy,
  };
}
