import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { PROJECT_ROOT } from './cluster';

/**
 * test/fixtures/local-chatd-main.ts in a child process (chatD and in-process shards over the
 * local transport): chatD's event loop and descriptors apart from the test's, no PM2.
 * `nofile` runs it under `ulimit -n` (soft and hard). Every line of its stdout is kept
 * (pino JSON, parsed when it can be).
 */
export interface ChatdProcess {
  port: number;
  pid: number;
  lines: Record<string, unknown>[];
  alive(): boolean;
  /** SIGTERM, then SIGKILL after 3 s; resolves when it has exited. Idempotent. */
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

export async function startChatdProcess(env: Record<string, string>, options: { nofile?: number; startTimeoutMs?: number } = {}): Promise<ChatdProcess> {
  const script = join(PROJECT_ROOT, 'dist', 'test', 'fixtures', 'local-chatd-main.js');
  const cmd = options.nofile ? `ulimit -n ${options.nofile} && exec "${process.execPath}" "${script}"` : `exec "${process.execPath}" "${script}"`;
  const cleanEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !/^(CHATD_|MQ_|CHANNELD_|CHANNELS|HEARTBEAT_|DEAD_AFTER|SHARD_RECOVERY|LOG_LEVEL)/.test(k)) cleanEnv[k] = v;
  const child = spawn('bash', ['-c', cmd], { env: { ...cleanEnv, LOG_LEVEL: 'info', FIXTURE_DEADLINE_MS: '120000', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  live.add(child);
  const lines: Record<string, unknown>[] = [];
  let stderr = '';
  let exited = false;
  const exitedP = new Promise<void>((resolve) => child.once('exit', () => {
    exited = true;
    live.delete(child);
    resolve();
  }));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  let rest = '';
  let onLine: ((l: Record<string, unknown>) => void) | undefined;
  child.stdout!.on('data', (d: Buffer) => {
    rest += d.toString();
    let i: number;
    while ((i = rest.indexOf('\n')) >= 0) {
      const text = rest.slice(0, i);
      rest = rest.slice(i + 1);
      let obj: Record<string, unknown>;
      try {
        obj = JSON.parse(text) as Record<string, unknown>;
      } catch {
        obj = { text };
      }
      lines.push(obj);
      onLine?.(obj);
    }
  });
  const stop = async (): Promise<void> => {
    if (exited) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exitedP;
    clearTimeout(t);
  };
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`chatd fixture not listening after ${options.startTimeoutMs ?? 15000} ms: ${stderr}`)), options.startTimeoutMs ?? 15000);
    onLine = (l) => {
      if (l.event === 'listening') {
        clearTimeout(timer);
        resolve(l.port as number);
      }
    };
    void exitedP.then(() => {
      clearTimeout(timer);
      reject(new Error(`chatd fixture exited before listening: ${stderr}`));
    });
  }).catch(async (err: unknown) => {
    await stop();
    throw err;
  });
  return { port, pid: child.pid!, lines, alive: () => !exited, stop };
}
