import type { Config } from '../config';
import type { Endpoint } from '../ipc/endpoint';
import type { Logger } from '../log';
import type { EpochKeeper } from './epochs';
import type { ProcessTable } from './process-table';

/** Timings of the collector; defaults derive from the configuration (docs/gc.md). */
export interface CollectorTimings {
  /** pid and silence checks run this often. */
  tickMs: number;
  /**
   * After its own start the collector does not yet know every live process: until this much
   * time has passed it answers HELLO and HEARTBEAT with UNAVAILABLE (the askers retry)
   * rather than give a partial membership. Default: deadAfterMs (every live process has
   * heartbeated by then).
   */
  warmupMs: number;
  /** SESSION_END: how long REMOVE is retried before the collector answers UNAVAILABLE. */
  removeBudgetMs: number;
  /** Timeout of one REMOVE or PURGE attempt. */
  attemptTimeoutMs: number;
  /** Pause after a failed REMOVE attempt. */
  removeRetryMs: number;
  /** Pause after a failed PURGE attempt. */
  purgeRetryMs: number;
  /** A tick this much later than due means the collector itself stalled: silence before it is forgiven. */
  stallMs: number;
  /** Queue hygiene (every mtype nobody owns except 2): how often the age sweep runs. */
  hygieneEveryMs: number;
  /**
   * Queue hygiene: fill ratio (max of bytes and message count over msg_qbytes, queue-fill.ts)
   * above which the queue counts as full: unowned messages then go at once, whatever their age.
   */
  highWater: number;
  /** Legacy reply expiry (defect 5; mtype 2 is legacy-expiry.ts's alone): how often mtype 2 is looked at. */
  legacyEveryMs: number;
  /** A legacy reply older than this is dropped. */
  legacyTtlMs: number;
  /** Above this fill ratio (bytes or message count, queue-fill.ts) every legacy reply is dropped at once, whatever its age. */
  legacyFill: number;
  /** A process whose clock is certainly more than this off the collector's is warned about, in STATUS and by `npm run health` (docs/multi-host.md "Clock skew"). */
  clockWarnMs: number;
}

export function defaultTimings(config: Pick<Config, 'deadAfterMs' | 'heartbeatMs'>): CollectorTimings {
  return {
    tickMs: 100,
    warmupMs: config.deadAfterMs,
    removeBudgetMs: 1000,
    attemptTimeoutMs: 250,
    removeRetryMs: 50,
    purgeRetryMs: 100,
    stallMs: Math.max(300, Math.floor(config.deadAfterMs / 2)),
    hygieneEveryMs: 1000,
    highWater: 0.5,
    legacyEveryMs: 250,
    legacyTtlMs: 2000,
    legacyFill: 0.5,
    clockWarnMs: 250,
  };
}

export interface CollectorCounters {
  heartbeats: number;
  hellos: number;
  resyncsPosted: number;
  sessionEnds: number;
  sessionEndsRemoved: number;
  sessionEndsShardDead: number;
  sessionEndsUnavailable: number;
  removeAttempts: number;
  deaths: number;
  chatdDeaths: number;
  shardDeaths: number;
  revived: number;
  purgeAttempts: number;
  purgedEntries: number;
  cleanupsDone: number;
  drainedMessages: number;
  legacyRepliesDrained: number;
  statusRequests: number;
  badRequests: number;
  warmupRefusals: number;
  stalls: number;
  /** Records of kinds the collector does not serve (forged, foreign or garbage): counted, never answered. */
  ignoredRecords: number;
  /** A new incarnation claimed on an mtype whose holder's pid is alive: refused until evidence of its death. */
  refusedIncarnations: number;
  /** Membership epochs decided (docs/resharding.md). */
  epochs: number;
  /** Heartbeats whose view report was malformed (ignored). */
  badViewReports: number;
  /** HEARTBEAT or HELLO of an incarnation declared dead that cannot be taken back: answered FENCED (docs/multi-host.md). */
  fenced: number;
  /** Collector ticks while its own transport was disconnected (silence then counts for nobody). */
  disconnectedTicks: number;
  /** Times a process's clock went beyond `clockWarnMs` of the collector's (one warning each). */
  clockSkews: number;
  /** Heartbeats of another host that arrived past their deadline and were answered (its clock behind ours, or delayed). */
  lateHeartbeats: number;
}

export const newCounters = (): CollectorCounters => ({
  heartbeats: 0, hellos: 0, resyncsPosted: 0, sessionEnds: 0, sessionEndsRemoved: 0, sessionEndsShardDead: 0,
  sessionEndsUnavailable: 0, removeAttempts: 0, deaths: 0, chatdDeaths: 0, shardDeaths: 0, revived: 0,
  purgeAttempts: 0, purgedEntries: 0, cleanupsDone: 0, drainedMessages: 0, legacyRepliesDrained: 0,
  statusRequests: 0, badRequests: 0, warmupRefusals: 0, stalls: 0, ignoredRecords: 0, refusedIncarnations: 0,
  epochs: 0, badViewReports: 0, fenced: 0, disconnectedTicks: 0, clockSkews: 0, lateHeartbeats: 0,
});

/** What the collector's parts share: one table, one endpoint, one set of counters. */
export interface GcContext {
  readonly endpoint: Endpoint;
  readonly log: Logger;
  readonly table: ProcessTable;
  /** The membership epoch (docs/resharding.md). */
  readonly epochs: EpochKeeper;
  /** Runs the epoch decision now if none was made yet (an answer right after warm-up carries a view). */
  ensureView(): void;
  readonly counters: CollectorCounters;
  readonly timings: CollectorTimings;
  readonly shards: number;
  readonly now: () => number;
  /** false only when the pid certainly does not exist. */
  readonly liveness: (pid: number) => boolean;
  /** Takes every message of `mtype` off the queue; counted; never throws. */
  drain(mtype: number): number;
  /** True once the collector was stopped: retries give up. */
  readonly stopped: boolean;
  /** True until warmupMs after start. */
  readonly warming: boolean;
  warnOnce(key: string, fields: Record<string, unknown>, msg: string): void;
}

export const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    t.unref();
  });
