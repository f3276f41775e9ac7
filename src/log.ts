import pino, { type Logger, type LoggerOptions } from 'pino';

/**
 * One pino logger per process; components take `logger.child({ component })`.
 * JSON lines on stdout so that `pm2 logs` shows them. LOG_LEVEL sets the level
 * (default `info`; tests use `silent` unless told otherwise).
 */
export function createLogger(bindings: Record<string, unknown>, options: LoggerOptions = {}): Logger {
  const level = process.env.LOG_LEVEL ?? 'info';
  return pino({ level, base: { pid: process.pid, ...bindings }, ...options });
}

export type { Logger };
