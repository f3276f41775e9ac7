import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { firstEpochOwner } from '../../src/cluster/ownership';
import { SysvQueue } from '../../src/ipc';

/**
 * Host-level helpers shared by the e2e cluster harness (test/helpers/cluster.ts) and the
 * benchmark's cluster starter (bench/e2e/cluster.ts): processes, queues by key, ports.
 */

/** One name per shard (of `shards`, at the cluster's first epoch), built as prefix + counter. */
export function namesPerShard(shards: number, prefix: string): string[] {
  const out: (string | undefined)[] = new Array(shards).fill(undefined);
  for (let i = 0; out.some((x) => x === undefined); i++) {
    const name = `${prefix}${i}`;
    const s = firstEpochOwner(name, shards);
    if (out[s] === undefined) out[s] = name;
  }
  return out as string[];
}

/** The process exists and is not a zombie (a zombie still answers kill(0)). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** The process runs with this PM2_HOME in its environment. */
export function hasPm2Home(pid: number, home: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(`PM2_HOME=${home}`);
  } catch {
    return false;
  }
}

/** Whether a queue with this key exists (msgget without IPC_CREAT). */
export function queueExistsByKey(key: number): boolean {
  try {
    SysvQueue.open({ key, create: false, trustedUids: 'any' });
    return true;
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return false;
    throw err;
  }
}

/** Removes the queue with this key, if there is one. */
export function removeQueueByKey(key: number): void {
  let q: SysvQueue;
  try {
    q = SysvQueue.open({ key, create: false, trustedUids: 'any' });
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return;
    throw err;
  }
  q.remove();
}

/** A random key no queue has, in [base + 1, base + 0x00ffffff): each user picks its own range. */
export function unusedQueueKey(base: number): number {
  for (;;) {
    const key = base + 1 + Math.floor(Math.random() * 0x00fffffe);
    if (!queueExistsByKey(key)) return key;
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolvePort(port));
    });
  });
}

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command (the project's pm2 CLI) and resolves with its exit code and output; killed
 * after `timeoutMs` (code -1). Output goes to files, not pipes: the pm2 CLI calls
 * process.exit() right after printing, and Node drops what is still queued on a pipe (an error
 * message, say); file writes are synchronous.
 */
export function runCommand(bin: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number }): Promise<CommandResult> {
  const dir = mkdtempSync(join(tmpdir(), 'chatd-cli-'));
  const outPath = join(dir, 'out');
  const errPath = join(dir, 'err');
  const out = openSync(outPath, 'w');
  const err = openSync(errPath, 'w');
  return new Promise((resolvePromise) => {
    const child = spawn(bin, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', out, err] });
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
    let done = false;
    const finish = (code: number | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      closeSync(out);
      closeSync(err);
      const result = { code, stdout: readFileSync(outPath, 'utf8'), stderr: readFileSync(errPath, 'utf8') };
      rmSync(dir, { recursive: true, force: true });
      resolvePromise(result);
    };
    child.once('error', () => finish(-1));
    child.once('exit', (code, signal) => finish(signal ? -1 : code));
  });
}
