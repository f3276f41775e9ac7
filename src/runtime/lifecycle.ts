import { QueueTrustError } from '../ipc/sysv/queue-trust';
import { sysExit } from '../ipc/sysv/libc';
import { blockedReceiverThreads } from '../ipc/sysv/sysv-receiver';
import pino from 'pino';
import type { Logger } from '../log';

/**
 * Process lifecycle under PM2: `ready()` tells PM2 we can serve (wait_ready), and a stop
 * (SIGINT from `pm2 stop`, SIGTERM, or PM2's 'shutdown' message) runs the shutdown hook
 * once, within PM2's kill_timeout, then exits.
 */
export function ready(log: Logger, fields: Record<string, unknown> = {}): void {
  log.info(fields, 'ready');
  if (typeof process.send === 'function') process.send('ready');
}

export function onShutdown(log: Logger, shutdown: (signal: string) => Promise<void>, graceMs = 4000): void {
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    const force = setTimeout(() => {
      log.warn({ graceMs }, 'shutdown took too long; exiting');
      exitProcess(log, 1);
    }, graceMs);
    force.unref();
    shutdown(signal).then(
      () => {
        log.info('stopped');
        exitProcess(log, 0);
      },
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        exitProcess(log, 1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('message', (msg) => {
    if (msg === 'shutdown') stop('shutdown');
  });
}

/**
 * The collector fenced this incarnation (declared it dead and will not take it back,
 * docs/multi-host.md): its state is stale, so exit at once without a graceful stop (there is
 * nothing right to finish); PM2 starts a new incarnation, which recovers like any restart.
 */
export function exitFenced(log: Logger): never {
  log.error('fenced by the collector: exiting so that PM2 starts a new incarnation');
  flushLogSync(log);
  return exitProcess(log, 1);
}

/**
 * process.exit(), unless a receiver thread is blocked in msgrcv with no way to wake it (the
 * queue full by message count: its wake-up message does not fit): process.exit() joins worker
 * threads and would wait for a message that may never come, so then libc's _exit, after
 * writing out what pino still buffers.
 */
export function exitProcess(log: Logger, code: number): never {
  const blocked = blockedReceiverThreads();
  if (blocked > 0) {
    log.warn({ blocked, code }, 'a receiver thread cannot be woken (queue full); exiting without joining it');
    flushLogSync(log);
    sysExit(code);
  }
  return process.exit(code);
}

/** Writes out what pino still buffers (its default destination writes asynchronously). */
function flushLogSync(log: Logger): void {
  const stream = (log as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as { flushSync?: () => void } | undefined;
  try {
    stream?.flushSync?.();
  } catch {
    // Not ready or gone: nothing more can be done before _exit.
  }
}

/**
 * Exit code of a daemon that refused the queue (QueueTrustError: untrusted owner or creator,
 * or a world-accessible mode). EX_CONFIG of sysexits.h. ecosystem.config.js lists it in
 * `stop_exit_codes`, so PM2 stops the app instead of restarting it in a loop: the refusal
 * stays the last line of `pm2 logs`, and no restart ever uses the queue.
 */
export const EXIT_QUEUE_REFUSED = 78;

/** Last resort: log and exit non-zero so PM2 restarts us; never limp on in an unknown state. */
export function exitOnFatal(log: Logger): void {
  const fatal = (err: unknown, what: string): never => {
    if (err instanceof QueueTrustError) {
      log.fatal({ ...err.fields, code: err.code }, err.message);
      process.exit(EXIT_QUEUE_REFUSED);
    }
    log.fatal({ err }, what);
    process.exit(1);
  };
  process.on('uncaughtException', (err) => fatal(err, 'uncaught exception'));
  process.on('unhandledRejection', (err) => fatal(err, 'unhandled rejection'));
}
