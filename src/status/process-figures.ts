/**
 * What one STATUS reply says, in one shape for every role. The `metrics` object of the reply
 * (counters, gauges, latency, sessionsPerChannel; docs/status.md) is read when present; a
 * process that does not send it yet is read from the older fields (`counters`, `sessions`,
 * `entries`, gc's `processes`). A reply is data from another process: every number is checked,
 * names are bounded, nothing here throws on a malformed reply.
 */

export type Role = 'gc' | 'channeld' | 'chatd';

export interface Latency {
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly count: number;
}

export interface ProcessFigures {
  readonly pid?: number;
  readonly uptimeS?: number;
  /** Totals since the process started (monotonic while it lives). */
  readonly counters: Readonly<Record<string, number>>;
  /** Current values. */
  readonly gauges: Readonly<Record<string, number>>;
  /** chatD: request latency over its last 10 s. */
  readonly latency?: Latency;
  /** chatD: sessions per channel (channel number as text). */
  readonly sessionsPerChannel?: Readonly<Record<string, number>>;
  /** A short state word when the process reports one (a shard: `serving`, `recovering`, ...). */
  readonly state?: string;
  /** gc: the processes its heartbeats show alive, as mtype and role. */
  readonly live?: readonly { mtype: number; role: string; index: number; pid?: number }[];
  /** gc: the membership epoch it decided (docs/resharding.md): which shards own the names now. */
  readonly membership?: Membership;
}

/** The collector's membership epoch, as its STATUS gives it. */
export interface Membership {
  readonly epoch: number;
  /** Shard indexes, ascending. */
  readonly members: readonly number[];
  /** Every live process is at this epoch and done with its hand-over. */
  readonly settled: boolean;
}

/** Bounds on what one reply may put into the view (a broken or hostile process cannot blow it up). */
export const LIMITS = Object.freeze({ names: 64, nameLength: 64, channels: 10_000, live: 2_000 });

const NAME = /^[A-Za-z][A-Za-z0-9_]*$/;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** The finite numbers of an object whose keys are plain names, at most LIMITS.names of them. */
export function numbersOf(v: unknown): Record<string, number> {
  const out: Record<string, number> = {};
  if (!isObject(v)) return out;
  let n = 0;
  for (const [k, x] of Object.entries(v)) {
    if (n >= LIMITS.names) break;
    if (k.length <= LIMITS.nameLength && NAME.test(k) && finite(x)) {
      out[k] = x;
      n++;
    }
  }
  return out;
}

function latencyOf(v: unknown): Latency | undefined {
  if (!isObject(v)) return undefined;
  const { p50Ms, p99Ms, count } = v;
  if (!finite(p50Ms) || !finite(p99Ms) || !finite(count) || p50Ms < 0 || p99Ms < 0 || count < 0) return undefined;
  return { p50Ms, p99Ms, count };
}

function channelsOf(v: unknown): Record<string, number> | undefined {
  if (!isObject(v)) return undefined;
  const out: Record<string, number> = {};
  let n = 0;
  for (const [k, x] of Object.entries(v)) {
    if (n >= LIMITS.channels) break;
    if (/^\d{1,9}$/.test(k) && finite(x) && x >= 0) {
      out[String(Number(k))] = x;
      n++;
    }
  }
  return out;
}

function liveOf(v: unknown): ProcessFigures['live'] {
  if (!Array.isArray(v)) return undefined;
  const out: { mtype: number; role: string; index: number; pid?: number }[] = [];
  for (const e of v.slice(0, LIMITS.live)) {
    if (!isObject(e) || !finite(e.mtype) || typeof e.role !== 'string' || !finite(e.index)) continue;
    out.push({ mtype: e.mtype, role: e.role.slice(0, 16), index: e.index, ...(finite(e.pid) ? { pid: e.pid } : {}) });
  }
  return out;
}

/** gc's `epoch` object: a u32 epoch from 1, 1-LIMITS.live shard indexes below 900; else undefined. */
function membershipOf(v: unknown): Membership | undefined {
  if (!isObject(v) || !finite(v.epoch) || !Number.isInteger(v.epoch) || v.epoch < 1 || v.epoch > 0xffff_ffff) return undefined;
  const m = v.members;
  if (!Array.isArray(m) || m.length === 0 || m.length > LIMITS.live) return undefined;
  if (!m.every((x) => Number.isInteger(x) && x >= 0 && x < 900)) return undefined;
  return { epoch: v.epoch, members: [...new Set(m as number[])].sort((a, b) => a - b), settled: v.settled === true };
}

/** Reads one STATUS reply of a process of `role`. */
export function figuresOf(role: Role, status: Record<string, unknown>): ProcessFigures {
  const m = isObject(status.metrics) ? status.metrics : undefined;
  const pid = finite(status.pid) && status.pid > 0 ? status.pid : undefined;
  const uptimeS = finite(status.uptimeS) ? status.uptimeS : finite(status.uptimeMs) ? status.uptimeMs / 1000 : undefined;
  const state = typeof status.state === 'string' ? status.state.slice(0, 32) : undefined;
  const live = role === 'gc' ? liveOf(status.processes) : undefined;
  const membership = role === 'gc' ? membershipOf(status.epoch) : undefined;
  let counters: Record<string, number>;
  let gauges: Record<string, number>;
  if (m) {
    counters = numbersOf(m.counters);
    gauges = numbersOf(m.gauges);
  } else {
    // Before the `metrics` object: the counters the process kept, and the gauges we can read.
    counters = numbersOf(status.counters);
    gauges = {};
    if (role === 'chatd') {
      if (finite(status.sessions)) gauges.sessions = status.sessions;
      if (finite(status.pendingRequests)) gauges.inFlight = status.pendingRequests;
    } else if (role === 'channeld') {
      if (finite(status.entries)) gauges.entries = status.entries;
    } else if (live) {
      gauges.processes = live.length;
    } else if (finite(status.processes)) {
      gauges.processes = status.processes;
    }
  }
  if (membership) {
    // Also as figures, so /metrics and the page's gauges carry them.
    gauges = { ...gauges, epoch: membership.epoch, members: membership.members.length, settled: membership.settled ? 1 : 0 };
  }
  const latency = m ? latencyOf(m.latency) : undefined;
  const sessionsPerChannel = m ? channelsOf(m.sessionsPerChannel) : undefined;
  return {
    ...(pid !== undefined ? { pid } : {}),
    ...(uptimeS !== undefined ? { uptimeS } : {}),
    counters,
    gauges,
    ...(latency ? { latency } : {}),
    ...(sessionsPerChannel ? { sessionsPerChannel } : {}),
    ...(state !== undefined ? { state } : {}),
    ...(live ? { live } : {}),
    ...(membership ? { membership } : {}),
  };
}
