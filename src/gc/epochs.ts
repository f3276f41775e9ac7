/**
 * The collector's decision of the membership epoch (docs/resharding.md, "The membership epoch,
 * decided by the collector"). Pure: time and the live processes come in as arguments, so it is
 * tested directly; the Collector feeds it heartbeat reports and live processes each tick and
 * publishes `view` in its membership and HELLO answers.
 *
 * Rules, in short:
 * - The first view (no process reports one): epoch 1, members {0..initialShards-1} plus the
 *   live shards. A restarted collector takes back the highest epoch reported.
 * - A new epoch only once the current one has settled: every live shard and chatD reports it
 *   is at that epoch and ready.
 * - Add the live shards that are not members once none has appeared for `quietMs`; remove the
 *   members not live for `goneMs` continuously (a crash-restart comes back within it: no
 *   change), or at once when their process is known gone for good (`departed`: deleted from
 *   PM2 by `pm2 scale` down or `pm2 delete`). Both in one epoch. The last member is never removed.
 */
import { OwnershipView, isEpoch, membersFromRanges, type Members } from '../cluster/ownership';
import type { TrackedRole } from './process-table';

export interface EpochTimings {
  /** A member not live this long (continuously) is removed: SHARD_GONE_MS. */
  goneMs: number;
  /** Live non-members are added once none has appeared for this long: RESHARD_QUIET_MS. */
  quietMs: number;
}

/** What a process reports in its heartbeat: the view it is at, and whether it is done with it. */
export interface ViewReport {
  readonly epoch: number;
  /** Members as ranges (the wire form); checked here. */
  readonly members: readonly (readonly [number, number])[];
  readonly ready: boolean;
}

/** A live process, as the collector's table has it. */
export interface LiveProcess {
  readonly mtype: number;
  readonly role: TrackedRole;
  readonly index: number;
  readonly incarnation: number;
}

interface Report {
  readonly incarnation: number;
  readonly epoch: number;
  readonly members: Members;
  readonly ready: boolean;
}

/** Why a new view was decided (for the log and status). */
export interface EpochChange {
  readonly view: OwnershipView;
  readonly previous: OwnershipView | undefined;
  readonly added: number[];
  readonly removed: number[];
  readonly reason: 'initial' | 'relearned' | 'scale' | 'reconcile';
}

export class EpochKeeper {
  /** The view the collector publishes; undefined until the first decision (end of warm-up). */
  private current: OwnershipView | undefined;
  private previous: OwnershipView | undefined;
  private readonly reports = new Map<number, Report>();
  /** member -> since when it is not live. */
  private readonly absentSince = new Map<number, number>();
  /** Members whose process is gone for good (`departed`): removed without waiting goneMs. */
  private readonly departedShards = new Set<number>();
  /** live non-member -> since when it is live. */
  private readonly joinedAt = new Map<number, number>();
  private decidedAt = 0;
  /** Epochs decided by this collector. */
  changes = 0;
  /** Reports refused (malformed members). */
  badReports = 0;

  constructor(
    private readonly initialShards: number,
    private readonly timings: EpochTimings,
  ) {}

  get view(): OwnershipView | undefined {
    return this.current;
  }

  /** The view before the current one (for REMOVEs during a hand-over), if any. */
  get previousView(): OwnershipView | undefined {
    return this.previous;
  }

  /**
   * Whether this collector knows who owned names before the current epoch: false only for an
   * epoch relearned from the processes after a restart (its predecessor's members are gone
   * with the predecessor); an initial epoch had no predecessor.
   */
  get previousKnown(): boolean {
    return this.previousIsKnown;
  }
  private previousIsKnown = true;

  /** A heartbeat's report from (mtype, incarnation); undefined report: the sender has no view. */
  report(mtype: number, incarnation: number, r: ViewReport | undefined): void {
    if (!r) {
      this.reports.delete(mtype);
      return;
    }
    const members = isEpoch(r.epoch) ? membersFromRanges(r.members) : undefined;
    if (!members) {
      this.badReports++;
      this.reports.delete(mtype);
      return;
    }
    const prev = this.reports.get(mtype);
    // Keep the member array of an unchanged report: heartbeats come every 250 ms.
    const same = prev && prev.epoch === r.epoch && prev.members.length === members.length && prev.members.every((s, i) => members[i] === s);
    this.reports.set(mtype, { incarnation, epoch: r.epoch, members: same ? prev.members : members, ready: r.ready });
  }

  /**
   * The supervisor says shard `s`'s process is gone for good (PM2 deleted it): once it is not
   * live, it leaves the membership at the next decision instead of after `goneMs`. A shard of
   * that index seen live again is a new member like any other.
   */
  departed(s: number): void {
    if (this.current?.isMember(s)) this.departedShards.add(s);
  }

  /** Whether every live shard and chatD reports the current epoch, ready. */
  settled(live: readonly LiveProcess[]): boolean {
    const v = this.current;
    if (!v) return false;
    for (const p of live) {
      const r = this.reports.get(p.mtype);
      if (!r || r.incarnation !== p.incarnation || r.epoch !== v.epoch || !r.ready) return false;
    }
    return true;
  }

  /** Live processes not yet at the current epoch and ready (status, logs). */
  lagging(live: readonly LiveProcess[]): number[] {
    const v = this.current;
    return live
      .filter((p) => {
        const r = this.reports.get(p.mtype);
        return !v || !r || r.incarnation !== p.incarnation || r.epoch !== v.epoch || !r.ready;
      })
      .map((p) => p.mtype);
  }

  /**
   * One round: follows who is live, and decides a new view when one is due. Returns the change,
   * or undefined. Nothing is decided while the collector is warming up (its table may be partial).
   */
  tick(now: number, live: readonly LiveProcess[], warming: boolean): EpochChange | undefined {
    if (warming) return undefined;
    const liveShards = new Set(live.filter((p) => p.role === 'channeld').map((p) => p.index));
    if (!this.current) return this.first(now, live, liveShards);
    const highest = this.highestReport(live);
    if (highest && (highest.epoch > this.current.epoch || (highest.epoch === this.current.epoch && !this.current.sameAs(highest)))) {
      // A process is at an epoch this collector did not decide (a predecessor decided it just
      // before dying, after this one's warm-up): move past it, so that one epoch number never
      // names two member sets.
      return this.decide(now, Math.max(highest.epoch, this.current.epoch) + 1, this.current.members, 'reconcile');
    }
    const v = this.current;
    for (const s of v.members) {
      if (liveShards.has(s)) {
        this.absentSince.delete(s);
        this.departedShards.delete(s);
      } else if (!this.absentSince.has(s)) this.absentSince.set(s, now);
    }
    for (const s of [...this.absentSince.keys()]) if (!v.isMember(s)) this.absentSince.delete(s);
    for (const s of [...this.departedShards]) if (!v.isMember(s)) this.departedShards.delete(s);
    for (const s of liveShards) if (!v.isMember(s) && !this.joinedAt.has(s)) this.joinedAt.set(s, now);
    for (const s of [...this.joinedAt.keys()]) if (!liveShards.has(s) || v.isMember(s)) this.joinedAt.delete(s);
    if (!this.settled(live)) return undefined;
    const removed = v.members.filter((s) => {
      const since = this.absentSince.get(s);
      return since !== undefined && (now - since >= this.timings.goneMs || this.departedShards.has(s));
    });
    let newest = -Infinity;
    for (const t of this.joinedAt.values()) newest = Math.max(newest, t);
    const added = this.joinedAt.size > 0 && now - newest >= this.timings.quietMs ? [...this.joinedAt.keys()].sort((a, b) => a - b) : [];
    if (removed.length === 0 && added.length === 0) return undefined;
    const next = [...v.members.filter((s) => !removed.includes(s)), ...added];
    if (next.length === 0) return undefined; // never remove the last member
    return this.decide(now, v.epoch + 1, next, 'scale');
  }

  /** The collector's part of STATUS. */
  status(now: number, live: readonly LiveProcess[]): Record<string, unknown> {
    const v = this.current;
    return {
      epoch: v?.epoch ?? 0,
      members: v?.members ?? [],
      previousEpoch: this.previous?.epoch ?? 0,
      settled: this.settled(live),
      lagging: this.lagging(live),
      decidedAgoMs: v ? now - this.decidedAt : undefined,
      absent: Object.fromEntries([...this.absentSince].map(([s, t]) => [s, now - t])),
      joining: Object.fromEntries([...this.joinedAt].map(([s, t]) => [s, now - t])),
      departed: [...this.departedShards],
      changes: this.changes,
      badReports: this.badReports,
    };
  }

  private first(now: number, live: readonly LiveProcess[], liveShards: Set<number>): EpochChange {
    const highest = this.highestReport(live);
    if (highest) return this.decide(now, highest.epoch, highest.members, 'relearned');
    const members = new Set(liveShards);
    for (let s = 0; s < this.initialShards; s++) members.add(s);
    return this.decide(now, 1, [...members], 'initial');
  }

  /** The report of the highest epoch among live processes (their current incarnation). */
  private highestReport(live: readonly LiveProcess[]): Report | undefined {
    let best: Report | undefined;
    for (const p of live) {
      const r = this.reports.get(p.mtype);
      if (r && r.incarnation === p.incarnation && (!best || r.epoch > best.epoch)) best = r;
    }
    return best;
  }

  private decide(now: number, epoch: number, members: Iterable<number>, reason: EpochChange['reason']): EpochChange {
    const previous = this.current;
    const view = previous ? previous.next(epoch, members) : new OwnershipView(epoch, members);
    const added = view.members.filter((s) => !previous?.isMember(s));
    const removed = previous ? previous.members.filter((s) => !view.isMember(s)) : [];
    if (reason !== 'relearned' && reason !== 'initial') this.previous = previous;
    this.previousIsKnown = reason !== 'relearned' || epoch === 1;
    this.current = view;
    this.decidedAt = now;
    this.changes++;
    this.joinedAt.clear();
    for (const s of removed) {
      this.absentSince.delete(s);
      this.departedShards.delete(s);
    }
    return { view, previous, added: previous ? added : [], removed, reason };
  }
}
