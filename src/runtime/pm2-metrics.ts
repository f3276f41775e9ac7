import type { Logger } from '../log';
import { withTimeout } from '../with-timeout';

/**
 * A process's figures and actions in PM2 (`pm2 show`, `pm2 monit`, `pm2 jlist` under
 * pm2_env.axm_monitor; `pm2 trigger <app> <action>`), through @pm2/io.
 *
 * Under PM2 only: PM2 7 loads its own copy of @pm2/io into every process it forks
 * (ProcessUtils.injectModules, unless the app sets `pmx: false`) and keeps it at
 * `Symbol.for('@pm2/io')`; that instance is used. When it is missing (pmx off) one is
 * initialised here with everything but metrics and actions turned off (no exception hooks,
 * no profiler, no http instrumentation). Outside PM2 (tests, `node dist/...` by hand)
 * nothing is loaded: no timer, no listener, nothing to keep the process alive.
 *
 * Cost: @pm2/io reads every figure once a second (990 ms) on a timer of its own (unref'd)
 * and sends them to the PM2 daemon over the IPC channel; the request path is not touched.
 * A figure that throws is shown as missing; an action that throws or rejects answers
 * `{ error }`: neither can take the process down.
 */

export interface Pm2Figure {
  /** As shown by `pm2 show` (and the key in pm2_env.axm_monitor). */
  readonly name: string;
  readonly unit?: string;
  /** Read once a second; undefined or NaN: not shown this time. */
  read(): number | string | undefined;
}

export interface Pm2Action {
  /** `pm2 trigger <app> <name>`. */
  readonly name: string;
  /** The answer, printed by `pm2 trigger` as JSON. May be async (bounded by `timeoutMs`). */
  run(): unknown;
  readonly timeoutMs?: number;
}

export interface Pm2Publication {
  /** True when a PM2 instance of @pm2/io took the figures. */
  readonly active: boolean;
  /** Stops publishing (the metrics are deleted; actions stay registered with @pm2/io). */
  stop(): void;
}

/** The part of @pm2/io used here. */
export interface IoApi {
  metric(opts: { name: string; unit?: string; value: () => unknown }): unknown;
  action(name: string, fn: (reply: (answer: unknown) => void) => void): unknown;
}

const IO_KEY = Symbol.for('@pm2/io');
const DEFAULT_ACTION_TIMEOUT_MS = 5000;

/** Whether this process runs under PM2 (fork mode: PM2 sets pm_id and an IPC channel). */
export function underPm2(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.pm_id !== undefined && typeof process.send === 'function';
}

/** PM2's @pm2/io instance, or one of our own (metrics and actions only) when PM2 loaded none. */
function pm2Io(): IoApi {
  const g = globalThis as unknown as Record<symbol, IoApi | undefined>;
  const existing = g[IO_KEY];
  if (existing) return existing;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const PMX = (require('@pm2/io/build/main/pmx') as { default: new () => { init(conf: object): IoApi } }).default;
  const io = new PMX().init({
    catchExceptions: false,
    profiling: false,
    metrics: { v8: false, network: false, eventLoop: false, runtime: false, http: false },
    standalone: false,
  });
  g[IO_KEY] = io;
  return io;
}

/**
 * Publishes `figures` and `actions` to PM2 when running under it (or to `io` when given:
 * tests); a no-op otherwise. Never throws: a failure to wire up is logged and leaves the
 * process as it was.
 */
export function publishToPm2(spec: { figures: readonly Pm2Figure[]; actions: readonly Pm2Action[] }, log: Logger, io?: IoApi): Pm2Publication {
  if (!io && !underPm2()) return { active: false, stop: () => {} };
  let api: IoApi;
  try {
    api = io ?? pm2Io();
  } catch (err) {
    log.warn({ err }, 'PM2 metrics not available (@pm2/io failed to load); running without them');
    return { active: false, stop: () => {} };
  }
  let stopped = false;
  const names: string[] = [];
  for (const f of spec.figures) {
    names.push(f.name);
    api.metric({
      name: f.name,
      ...(f.unit ? { unit: f.unit } : {}),
      value: () => {
        if (stopped) return undefined;
        try {
          return f.read();
        } catch {
          return undefined; // @pm2/io leaves out figures that are not numbers or strings
        }
      },
    });
  }
  for (const a of spec.actions) {
    api.action(a.name, (reply) => {
      void runAction(a).then(reply, (err: unknown) => reply({ error: (err as Error)?.message ?? String(err) }));
    });
  }
  log.debug({ figures: names, actions: spec.actions.map((a) => a.name) }, 'publishing figures and actions to PM2');
  return {
    active: true,
    stop: () => {
      stopped = true;
      const del = (api as { metricService?: { deleteMetric?(n: string): unknown } | null }).metricService;
      for (const n of names) del?.deleteMetric?.(n);
    },
  };
}

async function runAction(a: Pm2Action): Promise<unknown> {
  const result: unknown = a.run();
  return result instanceof Promise ? withTimeout(result, a.timeoutMs ?? DEFAULT_ACTION_TIMEOUT_MS, `action ${a.name}`) : result;
}

/**
 * A function's value memoised for `ms` (several figures drawn from one computation, such as
 * p50 and p99 of one histogram read, read back to back by @pm2/io).
 */
export function memo<T>(fn: () => T, ms = 250, now: () => number = () => performance.now()): () => T {
  let at = Number.NEGATIVE_INFINITY;
  let value: T;
  return () => {
    const t = now();
    if (t - at >= ms) {
      value = fn();
      at = t;
    }
    return value;
  };
}
