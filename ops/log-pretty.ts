import { prettyFactory } from 'pino-pretty';

/**
 * Log lines for people: each pino JSON line of the daemons (src/log.ts: `level`, `time`,
 * `pid`, `app`, then `shard` for channelD, `instance` for chatD, `component` for a part of
 * gc) becomes one pino-pretty line, `[12:00:00.123] WARN (4242): [channeld#2] msg`, with the
 * other fields below it. Any other line (PM2's banners, a stack trace printed by Node, a JSON
 * line that is not pino's) passes through unchanged.
 */

export interface LogPrettyOptions {
  colorize: boolean;
}

/**
 * The tag `[app#n/component]` and the record without the fields it shows. `n` is the binding
 * of src/log.ts: `shard` for channelD, `instance` for chatD; elsewhere a `shard` field is data
 * (the collector's "shard hello", say) and stays below the message. Empty tag: no `app`.
 */
export function splitTag(rec: Record<string, unknown>): { tag: string; rest: Record<string, unknown> } {
  if (typeof rec.app !== 'string') return { tag: '', rest: rec };
  const rest = { ...rec };
  delete rest.app;
  const numberKey = rec.app === 'channeld' ? 'shard' : rec.app === 'chatd' ? 'instance' : undefined;
  let num = '';
  const n = numberKey === undefined ? undefined : rec[numberKey];
  if (numberKey !== undefined && (typeof n === 'number' || typeof n === 'string')) {
    num = `#${n}`;
    delete rest[numberKey];
  }
  let component = '';
  if (typeof rec.component === 'string') {
    component = `/${rec.component}`;
    delete rest.component;
  }
  return { tag: `[${rec.app}${num}${component}]`, rest };
}

/** Whether a line is a pino record: a JSON object with a numeric `level` and `time`. */
export function parsePinoLine(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith('{')) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const rec = value as Record<string, unknown>;
  return typeof rec.level === 'number' && typeof rec.time === 'number' ? rec : undefined;
}

/** Returns a function from one line (without its newline) to what to print (without a newline). */
export function createLogPrettifier(options: LogPrettyOptions): (line: string) => string {
  // The tag of the record being printed: pretty() calls messageFormat synchronously.
  let tag = '';
  const pretty = prettyFactory({
    colorize: options.colorize,
    // Local wall-clock time with milliseconds; the date is in the JSON files.
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'hostname',
    messageFormat: (log, messageKey, _level, extras) => {
      const msg = log[messageKey];
      const text = typeof msg === 'string' ? msg : msg === undefined ? '' : JSON.stringify(msg);
      return tag === '' ? text : `${extras.colors.cyan(tag)} ${text}`;
    },
  });
  return (raw) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const rec = parsePinoLine(line);
    if (rec === undefined) return raw;
    const split = splitTag(rec);
    tag = split.tag;
    return pretty(split.rest).replace(/\r?\n$/, '');
  };
}
