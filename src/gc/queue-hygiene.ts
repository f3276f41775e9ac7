import { MTYPE_GC, MTYPE_LEGACY_REPLY, MTYPE_LEGACY_REQUEST, ownerOf } from '../ipc/mtypes';
import { queueFill, type QueueFill } from '../ipc/queue-fill';
import type { QueueStat } from '../ipc/transport';
import type { Logger } from '../log';

/**
 * Queue hygiene (docs/gc.md and docs/reliability.md, "Queue hygiene"): the collector takes off
 * the queue what no live process will ever read, so that junk cannot fill it.
 *
 * Which messages: those whose mtype no live process owns (`classify`): the mailbox of a dead
 * or never-seen shard or chatD, a shard index beyond CHANNELD_SHARDS, a tool whose pid is gone,
 * a reserved or unknown mtype (replies reflected to a forged sender mtype end up there), and
 * mtype 1 while no chatD lives. Never mtype 3 (ours) or the mailbox of a live process; and
 * during the collector's warm-up nothing of the mtype plan (it does not yet know who lives).
 *
 * Never mtype 2 either: legacy replies belong to C peers the collector cannot see, and their
 * expiry is `legacy-expiry.ts`'s alone (by the send time chatD writes after the reply's NUL,
 * and by fill). Hygiene counts mtype 2 as owned, so the two never take the same messages.
 *
 * When: a sweep every `everyMs` takes unowned messages that have stayed unowned for
 * `junkAgeMs`; as soon as the queue is over `highWater` (by bytes OR by message count: Linux
 * admits at most msg_qbytes messages) a sweep runs at once, every `fillEveryMs` while it
 * stays there, and takes unowned messages whatever their age. Except the mailbox of a shard
 * or chatD of the plan that the table has not seen (`unseenProcess`): on a full queue a live
 * process's heartbeats can wait in its send backlog, so a collector that just started may not
 * know it yet. Those go by age only.
 *
 * How: `peek(i)` reads the message at position i without taking it (msgrcv with MSG_COPY,
 * Linux 3.8+ with CONFIG_CHECKPOINT_RESTORE). Junk nobody reads drifts to the head of the
 * queue as live traffic is consumed, so the first `peekMax` positions find it; an unowned
 * mtype found there is drained whole (msgrcv of that mtype, IPC_NOWAIT). Without MSG_COPY
 * (ENOSYS, or a transport that cannot peek) the sweep tries the mtypes it can name: mtype 1,
 * reserved 4..99, every shard and chatD mtype not live. Tool mtypes and mtypes above the plan
 * cannot be found that way.
 */

/** The queue operations hygiene needs (SysvQueue in gc; tests may fake them). */
export interface HygieneQueue {
  stat(): QueueStat;
  /**
   * The message at position `index` (0: the oldest) without taking it; null past the end.
   * Absent, or throwing an error with code ENOSYS: peeking is not possible here.
   */
  peek?(index: number): { mtype: number; body: Buffer } | null;
  /** Takes up to `max` messages of `mtype` (oldest first), without blocking; how many. */
  take(mtype: number, max: number): number;
}

/** What the collector knows about who lives (its process table). */
export interface OwnershipView {
  /** Still learning who lives (warm-up): the mtype plan is left alone. */
  warming(): boolean;
  /** CHANNELD_SHARDS. */
  shards: number;
  /** A member shard of the current membership epoch (docs/resharding.md). */
  isMember(shard: number): boolean;
  /** A live incarnation holds this shard or chatD mtype. */
  isLive(mtype: number): boolean;
  /** The last holder of this mtype died and nobody took it over. */
  isVacant(mtype: number): boolean;
  /**
   * The mtype is held, or was last held, by a process of another host (docs/multi-host.md):
   * hygiene never acts on its behalf, whatever its messages on this host's queue.
   */
  isRemote?(mtype: number): boolean;
  anyChatdLive(): boolean;
  pidAlive(pid: number): boolean;
}

/** Why a message is nobody's; the drain counts are kept by these classes. */
export type JunkClass = 'legacyRequest' | 'deadProcess' | 'unseenProcess' | 'outOfPlan' | 'toolGone' | 'unknownMtype';

export type Ownership = { owned: true } | { owned: false; cls: JunkClass };

export interface HygieneTimings {
  /** Age sweep period. */
  everyMs: number;
  /** Fill ratio (max of bytes and message count over msg_qbytes) above which the queue counts as full. */
  highWater: number;
  /** While over highWater, a sweep at most this often. */
  fillEveryMs: number;
  /** An mtype unowned this long has its messages taken by the age sweep. */
  junkAgeMs: number;
  /** Positions looked at per sweep (each MSG_COPY walks the queue up to its position). */
  peekMax: number;
  /** Messages taken per mtype per sweep, at most. */
  maxTake: number;
}

export const defaultHygieneTimings: HygieneTimings = {
  everyMs: 1000,
  highWater: 0.5,
  fillEveryMs: 250,
  junkAgeMs: 3000,
  peekMax: 512,
  maxTake: 100_000,
};

export interface HygieneCounters {
  sweeps: number;
  fillSweeps: number;
  drained: number;
  byClass: Record<JunkClass, number>;
}

const ZERO: Record<JunkClass, number> = {
  legacyRequest: 0, deadProcess: 0, unseenProcess: 0, outOfPlan: 0, toolGone: 0, unknownMtype: 0,
};

/** Who owns an mtype, by the collector's view (mtype 2 counts as owned: legacy-expiry.ts expires it). */
export function classify(mtype: number, view: OwnershipView): Ownership {
  if (mtype === MTYPE_GC) return { owned: true };
  if (mtype === MTYPE_LEGACY_REPLY) return { owned: true }; // legacy-expiry.ts, not hygiene
  if (mtype === MTYPE_LEGACY_REQUEST) {
    // chatD's legacy gateway takes these; with no chatD alive they wait for nobody.
    return view.warming() || view.anyChatdLive() ? { owned: true } : { owned: false, cls: 'legacyRequest' };
  }
  const o = ownerOf(mtype);
  switch (o.role) {
    case 'channeld':
    case 'chatd': {
      // A shard added by `pm2 scale` may have any index: live or a member is in the plan.
      if (view.isLive(mtype)) return { owned: true };
      // Another host's process: neither its liveness nor its death says anything about this queue.
      if (view.isRemote?.(mtype)) return { owned: true };
      if (o.role === 'channeld' && !view.isMember(o.shard)) return { owned: false, cls: 'outOfPlan' };
      if (view.isVacant(mtype)) return { owned: false, cls: 'deadProcess' };
      return view.warming() ? { owned: true } : { owned: false, cls: 'unseenProcess' };
    }
    case 'tool':
      return view.pidAlive(o.pid) ? { owned: true } : { owned: false, cls: 'toolGone' };
    default:
      return { owned: false, cls: 'unknownMtype' };
  }
}

export class QueueHygiene {
  readonly timings: HygieneTimings;
  readonly counters: HygieneCounters = { sweeps: 0, fillSweeps: 0, drained: 0, byClass: { ...ZERO } };
  private canPeek: boolean;
  private lastSweep: number;
  private lastFillSweep = -Infinity;
  /** mtype -> when a sweep first saw it unowned (with messages, when peeking). */
  private readonly unownedSince = new Map<number, number>();

  constructor(
    private readonly queue: HygieneQueue,
    private readonly view: OwnershipView,
    private readonly log: Logger,
    timings: Partial<HygieneTimings> = {},
    now = Date.now(),
  ) {
    this.timings = { ...defaultHygieneTimings, ...timings };
    this.canPeek = typeof queue.peek === 'function';
    this.lastSweep = now;
  }

  /** Called on every collector tick: a sweep when one is due, or at once when the queue is over high water. */
  check(now: number): void {
    let stat: QueueStat;
    try {
      stat = this.queue.stat();
    } catch {
      return; // the queue is gone; the receiver's end tells main
    }
    const fill = queueFill(stat);
    const over = fill.fill > this.timings.highWater;
    if (over) {
      // Over high water: fill sweeps only (they take unowned messages whatever their age).
      if (now - this.lastFillSweep < this.timings.fillEveryMs) return;
      this.lastFillSweep = now;
      this.lastSweep = now;
      this.sweep(now, 'fill', stat, fill);
    } else if (now - this.lastSweep >= this.timings.everyMs) {
      this.lastSweep = now;
      if (stat.messages > 0) this.sweep(now, 'age', stat, fill);
      else this.unownedSince.clear();
    }
  }

  /** One sweep (also called by tests). */
  sweep(now: number, reason: 'fill' | 'age', stat: QueueStat, fill: QueueFill): Record<JunkClass, number> {
    this.counters.sweeps++;
    if (reason === 'fill') this.counters.fillSweeps++;
    const drained: Record<JunkClass, number> = { ...ZERO };
    const mtypes = new Set<number>();
    const take = (mtype: number, cls: JunkClass, max = this.timings.maxTake): number => {
      let n = 0;
      try {
        n = this.queue.take(mtype, max);
      } catch (err) {
        this.log.warn({ err, mtype }, 'queue hygiene: drain failed');
      }
      if (n > 0) {
        drained[cls] += n;
        mtypes.add(mtype);
      }
      return n;
    };
    if (this.canPeek) {
      try {
        this.sweepByPeek(now, reason === 'fill', take);
      } catch (err) {
        if ((err as { code?: string }).code !== 'ENOSYS') throw err;
        this.canPeek = false;
        this.log.info('queue hygiene: msgrcv MSG_COPY not available (kernel without CONFIG_CHECKPOINT_RESTORE); sweeping the mtypes of the plan instead');
      }
    }
    if (!this.canPeek) this.sweepByName(now, reason === 'fill', take);
    let total = 0;
    for (const cls of Object.keys(drained) as JunkClass[]) {
      total += drained[cls];
      this.counters.byClass[cls] += drained[cls];
    }
    this.counters.drained += total;
    if (total > 0) {
      const after = this.safeStat();
      this.log.info(
        {
          reason,
          drained: total,
          byClass: Object.fromEntries(Object.entries(drained).filter(([, n]) => n > 0)),
          mtypes: [...mtypes].slice(0, 16),
          before: { messages: stat.messages, bytes: stat.bytes, fill: round(fill.fill), limitedBy: fill.limitedBy },
          after: after && { messages: after.messages, bytes: after.bytes, fill: round(queueFill(after).fill) },
          capacity: stat.capacity,
        },
        'queue hygiene: drained messages nobody reads',
      );
    }
    return drained;
  }

  /** The queue's head, position by position: unowned mtypes are drained whole. */
  private sweepByPeek(now: number, overFill: boolean, take: (mtype: number, cls: JunkClass, max?: number) => number): void {
    const peek = this.queue.peek!.bind(this.queue);
    const seenUnowned = new Set<number>();
    let index = 0;
    for (let peeks = 0; peeks < this.timings.peekMax; peeks++) {
      const m = peek(index);
      if (!m) break;
      const o = classify(m.mtype, this.view);
      if (o.owned) {
        index++;
        continue;
      }
      seenUnowned.add(m.mtype);
      const since = this.unownedSince.get(m.mtype) ?? now;
      this.unownedSince.set(m.mtype, since);
      if ((overFill && o.cls !== 'unseenProcess') || now - since >= this.timings.junkAgeMs) {
        // The message at `index` is gone now (unless a racing reader took it): look there again.
        if (take(m.mtype, o.cls) === 0) index++;
      } else {
        index++;
      }
    }
    for (const mtype of this.unownedSince.keys()) if (!seenUnowned.has(mtype)) this.unownedSince.delete(mtype);
  }

  /** Without peeking: the mtypes the sweep can name, each tried with a non-blocking receive. */
  private sweepByName(now: number, overFill: boolean, take: (mtype: number, cls: JunkClass) => number): void {
    const candidates: number[] = [MTYPE_LEGACY_REQUEST];
    for (let m = 4; m < 100; m++) candidates.push(m);
    for (let m = 100; m < 2000; m++) candidates.push(m);
    const unowned = new Set<number>();
    for (const mtype of candidates) {
      const o = classify(mtype, this.view);
      if (o.owned) continue;
      unowned.add(mtype);
      const since = this.unownedSince.get(mtype) ?? now;
      this.unownedSince.set(mtype, since);
      if ((overFill && o.cls !== 'unseenProcess') || now - since >= this.timings.junkAgeMs) take(mtype, o.cls);
    }
    for (const mtype of this.unownedSince.keys()) if (!unowned.has(mtype)) this.unownedSince.delete(mtype);
  }

  private safeStat(): QueueStat | undefined {
    try {
      return this.queue.stat();
    } catch {
      return undefined;
    }
  }
}

const round = (x: number): number => Math.round(x * 1000) / 1000;
