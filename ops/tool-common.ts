import { ConfigError } from '../src/errors';
import { loadConfig, type Config } from '../src/config';
import { IpcError } from '../src/ipc/ipc-error';
import { ownerOf } from '../src/ipc/mtypes';
import { QueueTrustError } from '../src/ipc/sysv/queue-trust';
import { SysvQueue } from '../src/ipc/sysv/sysv-queue';

/** Exit codes shared by the operator tools. */
export const EXIT = Object.freeze({ OK: 0, PROBLEM: 1, USAGE: 2 } as const);

/** A failure that ends a tool with a message and an exit code. */
export class ToolError extends Error {
  override readonly name = 'ToolError';
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

export const hexKey = (key: number): string => `0x${key.toString(16).padStart(8, '0')}`;

/** Reads the configuration (MQ_KEY and the rest) the way the cluster does; a bad value is a usage error. */
export function toolConfig(env: NodeJS.ProcessEnv = process.env): Config {
  try {
    return loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) throw new ToolError(err.message, EXIT.USAGE);
    throw err;
  }
}

/** Opens the cluster's queue without creating it. Missing: ToolError (exit 1) saying so. */
export function openExisting(config: Config): SysvQueue {
  try {
    return SysvQueue.open({ key: config.mqKey, create: false, trustedUids: config.mqTrustedUids });
  } catch (err) {
    // A squatted queue (untrusted owner or creator, or world-accessible): its message names the fix.
    if (err instanceof QueueTrustError) throw new ToolError(err.message, EXIT.PROBLEM);
    const code = (err as IpcError).code;
    if (code === 'ENOENT') {
      throw new ToolError(`no queue for MQ_KEY=${config.mqKey} (key ${hexKey(config.mqKey)}): the cluster is not running, or uses another MQ_KEY`, EXIT.PROBLEM);
    }
    if (code === 'EACCES') throw new ToolError(`queue for MQ_KEY=${config.mqKey} exists but is not ours to open (EACCES): run as its owner`, EXIT.PROBLEM);
    throw err;
  }
}

/** A readable owner for an mtype, from the mtype plan (src/ipc/mtypes.ts). */
export function describeMtype(mtype: number): string {
  const o = ownerOf(mtype);
  switch (o.role) {
    case 'channeld':
      return `channeld shard ${o.shard}`;
    case 'chatd':
      return `chatd ${o.instance}`;
    case 'tool':
      return `tool pid ${o.pid}`;
    default:
      return o.role;
  }
}

/**
 * Ends a tool. With `hard`, libc's _exit: process.exit() would join the receiver threads, and
 * one blocked in msgrcv on a queue full by message count cannot be woken (its wake-up message
 * does not fit), so the tool would hang. stdout and stderr are synchronous for files, pipes
 * and terminals on Linux, so nothing written is lost.
 */
function exitTool(code: number, hard: boolean): never {
  if (hard) {
    // Loaded here: only tools that started receivers need it.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    (require('../src/ipc/sysv/libc') as typeof import('../src/ipc/sysv/libc')).sysExit(code);
  }
  return process.exit(code);
}

/** Runs a tool's main: prints a ToolError's message on stderr and exits with its code. */
export function runTool(name: string, main: () => Promise<number>, options: { hardExit?: boolean } = {}): void {
  const hard = options.hardExit ?? false;
  main().then(
    (code) => exitTool(code, hard),
    (err: unknown) => {
      if (err instanceof ToolError) {
        process.stderr.write(`${name}: ${err.message}\n`);
        exitTool(err.exitCode, hard);
      }
      process.stderr.write(`${name}: ${(err as Error)?.stack ?? String(err)}\n`);
      exitTool(EXIT.PROBLEM, hard);
    },
  );
}
