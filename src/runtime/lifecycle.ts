import { QueueTrustError } from '../ipc/sysv/queue-trust';
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
      process.exit(1);
    }, graceMs);
    force.unref();
    shutdown(signal).then(
      () => {
        log.info('stopped');
        process.exit(0);
      },
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
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
