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

/** Last resort: log and exit non-zero so PM2 restarts us; never limp on in an unknown state. */
export function exitOnFatal(log: Logger): void {
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception');
    process.exit(1);
  });
  process.on('unhandledRejection', (err) => {
    log.fatal({ err }, 'unhandled rejection');
    process.exit(1);
  });
}
