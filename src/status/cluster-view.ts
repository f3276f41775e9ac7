import type { Latency, Membership, ProcessFigures, Role } from './process-figures';

/** One process the status app asks for STATUS. */
export interface Target {
  /** Stable key: `gc`, `channeld/1`, `chatd/0`. */
  readonly key: string;
  readonly role: Role;
  /** Shard index (channeld) or instance index (chatd); 0 for gc. */
  readonly index: number;
  readonly mtype: number;
}

/** How one STATUS question went. */
export interface Answer {
  readonly target: Target;
  /** `ok`: answered; `timeout`: asked, no reply in time; `error`: the reply or the send failed; `skipped`: not asked this round (backing off). */
  readonly outcome: 'ok' | 'timeout' | 'error' | 'skipped';
  readonly ms?: number;
  readonly figures?: ProcessFigures;
  readonly problem?: string;
}

export type QueueState = 'ok' | 'missing' | 'refused' | 'error';

export interface QueueFigures {
  readonly state: QueueState;
  readonly key: string;
  readonly id?: number;
  readonly messages?: number;
  readonly bytes?: number;
  readonly capacity?: number;
  readonly fill?: number;
  readonly problem?: string;
}

/** One round: the queue and every target, at one time. */
export interface Poll {
  readonly at: number;
  readonly queue: QueueFigures;
  readonly answers: readonly Answer[];
}

/** A process as the page and /metrics show it. */
export interface ProcessRow {
  readonly key: string;
  readonly role: Role;
  readonly index: number;
  readonly mtype: number;
  /** `up`: answered the last question; `not answering`: did not; `unknown`: never asked yet or never answered. */
  readonly state: 'up' | 'not answering' | 'unknown';
  readonly detail?: string;
  readonly pid?: number;
  readonly uptimeS?: number;
  /** ms the last STATUS took. */
  readonly statusMs?: number;
  /** When it last answered (epoch ms). */
  readonly lastSeen?: number;
  readonly missed: number;
  readonly counters: Readonly<Record<string, number>>;
  readonly gauges: Readonly<Record<string, number>>;
  /** Per-second rates of the counters over the last round. */
  readonly rates: Readonly<Record<string, number>>;
  readonly latency?: Latency;
}

/** One point of the charts. null: not known at that time. */
export interface Point {
  readonly t: number;
  readonly queueMessages: number | null;
  readonly queueBytes: number | null;
  readonly queueFill: number | null;
  /** chatD client requests per second (all chatD instances). */
  readonly reqPerSec: number | null;
  /** Finds per second: chatD's `finds` when it counts them, else the shards' requests per second. */
  readonly findsPerSec: number | null;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly sessions: number | null;
  readonly answering: number;
  readonly asked: number;
}

/** What the page receives on every round. */
export interface Snapshot {
  readonly at: number;
  readonly queue: QueueFigures;
  readonly processes: readonly ProcessRow[];
  readonly sessionsPerChannel: Readonly<Record<string, number>> | null;
  /** gc's membership epoch in its last answer (null before it answered with one). */
  readonly membership: Membership | null;
  readonly point: Point;
  /** `healthy` when the queue is usable and every process answers; `degraded` when some do; `down` when none does or the queue is unusable. */
  readonly cluster: 'healthy' | 'degraded' | 'down';
}

interface Memory {
  row: ProcessRow;
  /** Counters and time of the last answer, for rates. */
  prev?: { at: number; counters: Readonly<Record<string, number>>; pid?: number };
  /** chatD: its sessions per channel in its last answer. */
  channels?: Record<string, number>;
}

/**
 * The cluster as the status app sees it: fed one Poll per round, it keeps each process's last
 * answer, computes per-second rates from counter deltas (a counter that went down means the
 * process restarted: no rate for that round), and a bounded history of chart points. Pure: no
 * I/O, the clock comes with the polls.
 */
export class ClusterView {
  private readonly memory = new Map<string, Memory>();
  private readonly points: Point[] = [];
  private last: Snapshot | undefined;
  private membership: Membership | null = null;

  constructor(private readonly historyPoints = 300) {}

  update(poll: Poll): Snapshot {
    const rows: ProcessRow[] = [];
    const seen = new Set<string>();
    for (const a of poll.answers) {
      seen.add(a.target.key);
      rows.push(this.apply(poll.at, a));
      if (a.outcome === 'ok' && a.figures?.membership) this.membership = a.figures.membership;
    }
    // A target no longer asked (a chatD instance gc stopped listing): dropped from the view.
    for (const key of [...this.memory.keys()]) if (!seen.has(key)) this.memory.delete(key);
    rows.sort(byRoleThenIndex);
    const sessionsPerChannel = mergeChannels(rows.map((r) => this.memory.get(r.key)?.channels).filter((c): c is Record<string, number> => c !== undefined));
    const point = pointOf(poll, rows);
    this.points.push(point);
    if (this.points.length > this.historyPoints) this.points.splice(0, this.points.length - this.historyPoints);
    const answering = rows.filter((r) => r.state === 'up').length;
    const cluster = poll.queue.state !== 'ok' || answering === 0 ? 'down' : answering === rows.length ? 'healthy' : 'degraded';
    this.last = { at: poll.at, queue: poll.queue, processes: rows, sessionsPerChannel, membership: this.membership, point, cluster };
    return this.last;
  }

  get snapshot(): Snapshot | undefined {
    return this.last;
  }

  get history(): readonly Point[] {
    return this.points;
  }

  private apply(at: number, a: Answer): ProcessRow {
    const t = a.target;
    const mem = this.memory.get(t.key);
    const base = { key: t.key, role: t.role, index: t.index, mtype: t.mtype };
    if (a.outcome !== 'ok' || !a.figures) {
      const old = mem?.row;
      // Skipped means it failed before (backing off): not answering, unless never asked at all.
      const state = a.outcome === 'skipped' && !old ? 'unknown' : 'not answering';
      const row: ProcessRow = {
        ...base,
        state,
        ...(a.problem ? { detail: a.problem } : old?.detail ? { detail: old.detail } : {}),
        ...(old?.pid !== undefined ? { pid: old.pid } : {}),
        ...(old?.lastSeen !== undefined ? { lastSeen: old.lastSeen } : {}),
        missed: (old?.missed ?? 0) + (a.outcome === 'skipped' ? 0 : 1),
        // Totals stay as last seen (a counter must not drop because a process is slow); rates are unknown.
        counters: old?.counters ?? {},
        gauges: {},
        rates: {},
      };
      // Its prev stays: the rate after it comes back spans the whole gap.
      this.memory.set(t.key, { row, ...(mem?.prev ? { prev: mem.prev } : {}) });
      return row;
    }
    const f = a.figures;
    const rates: Record<string, number> = {};
    const prev = mem?.prev;
    const restarted = prev !== undefined && f.pid !== undefined && prev.pid !== undefined && f.pid !== prev.pid;
    if (prev && !restarted && at > prev.at) {
      const dt = (at - prev.at) / 1000;
      for (const [name, v] of Object.entries(f.counters)) {
        const p = prev.counters[name];
        if (p !== undefined && v >= p) rates[name] = (v - p) / dt;
      }
    }
    const row: ProcessRow = {
      ...base,
      state: 'up',
      // A shard's state is news only when it is not `live` (e.g. `recovering`).
      ...(f.state !== undefined && f.state !== 'live' ? { detail: f.state } : {}),
      ...(f.pid !== undefined ? { pid: f.pid } : {}),
      ...(f.uptimeS !== undefined ? { uptimeS: f.uptimeS } : {}),
      ...(a.ms !== undefined ? { statusMs: a.ms } : {}),
      lastSeen: at,
      missed: 0,
      counters: f.counters,
      gauges: f.gauges,
      rates,
      ...(f.latency ? { latency: f.latency } : {}),
    };
    const next: Memory = { row, prev: { at, counters: f.counters, ...(f.pid !== undefined ? { pid: f.pid } : {}) } };
    if (f.sessionsPerChannel) next.channels = { ...f.sessionsPerChannel };
    this.memory.set(t.key, next);
    return row;
  }
}

const ROLE_ORDER: Record<Role, number> = { gc: 0, channeld: 1, chatd: 2 };

function byRoleThenIndex(a: ProcessRow, b: ProcessRow): number {
  return ROLE_ORDER[a.role] - ROLE_ORDER[b.role] || a.index - b.index;
}

function mergeChannels(all: readonly Record<string, number>[]): Record<string, number> | null {
  if (all.length === 0) return null;
  const out: Record<string, number> = {};
  for (const c of all) for (const [ch, n] of Object.entries(c)) out[ch] = (out[ch] ?? 0) + n;
  return out;
}

/** Sum of one rate over the rows that have it; null when none has. */
function sumRate(rows: readonly ProcessRow[], role: Role, name: string): number | null {
  let sum: number | null = null;
  for (const r of rows) if (r.role === role && r.rates[name] !== undefined) sum = (sum ?? 0) + r.rates[name]!;
  return sum;
}

function sumGauge(rows: readonly ProcessRow[], role: Role, name: string): number | null {
  let sum: number | null = null;
  for (const r of rows) if (r.role === role && r.state === 'up' && r.gauges[name] !== undefined) sum = (sum ?? 0) + r.gauges[name]!;
  return sum;
}

function pointOf(poll: Poll, rows: readonly ProcessRow[]): Point {
  const q = poll.queue;
  const chatds = rows.filter((r) => r.role === 'chatd' && r.state === 'up' && r.latency && r.latency.count > 0);
  // Latency over several chatD instances: the worst of them (quantiles do not add up).
  const p50 = chatds.length > 0 ? Math.max(...chatds.map((r) => r.latency!.p50Ms)) : null;
  const p99 = chatds.length > 0 ? Math.max(...chatds.map((r) => r.latency!.p99Ms)) : null;
  const chatdFinds = sumRate(rows, 'chatd', 'finds');
  return {
    t: poll.at,
    queueMessages: q.state === 'ok' ? (q.messages ?? null) : null,
    queueBytes: q.state === 'ok' ? (q.bytes ?? null) : null,
    queueFill: q.state === 'ok' ? (q.fill ?? null) : null,
    reqPerSec: sumRate(rows, 'chatd', 'requests'),
    findsPerSec: chatdFinds ?? sumRate(rows, 'channeld', 'requests'),
    p50Ms: p50,
    p99Ms: p99,
    sessions: sumGauge(rows, 'chatd', 'sessions'),
    answering: rows.filter((r) => r.state === 'up').length,
    asked: rows.length,
  };
}
