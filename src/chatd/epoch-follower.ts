/**
 * chatD's side of the membership epoch (docs/resharding.md, "A chatD at E-1 learning E"):
 * which view requests are routed by, the directory changes in flight per epoch, and the
 * hand-over when the collector publishes a new epoch:
 *
 *   1. new requests route by the new view at once;
 *   2. LOGINs and MOVEs routed by an earlier epoch are waited for (each ends by its reply or
 *      its timeout), so that the sessions resent next include every login an old owner
 *      acknowledged;
 *   3. every shard that gains buckets gets all of this chatD's sessions it owns now (the
 *      `resync` callback: SYNC ... last at the new epoch), retried until done or superseded;
 *   4. `ready` (reported in the heartbeat) once all that is done.
 *
 * No I/O of its own: ChatService passes `resync`, and calls begin()/end() around each LOGIN
 * and MOVE. Tested with fakes (test/unit/chatd/epoch-follower.test.ts).
 */
import { handover, type OwnershipView } from '../cluster/ownership';

export interface EpochFollowerOptions {
  /**
   * Resends this chatD's sessions owned by `shard` under `view` (SYNC ... last at view.epoch).
   * Resolves true when the shard acknowledged all of it, false to be retried.
   */
  resync(shard: number, view: OwnershipView): Promise<boolean>;
  /** Pause between failed attempts (default 100 ms, doubling to 1 s). */
  retryMs?: number;
  /** How often the wait for in-flight changes looks again (default 10 ms). */
  pollMs?: number;
  /** A shard no longer live (the collector's word) is not waited for. */
  isUp?(shard: number): boolean;
}

export class EpochFollower {
  private cur: OwnershipView | undefined;
  private prev: OwnershipView | undefined;
  /** epoch -> LOGINs and MOVEs routed by it, not yet answered or timed out. */
  private readonly inFlight = new Map<number, number>();
  /** The epoch whose hand-over is done (0: none). */
  private readyAt = 0;
  /** Bumped by every adoption: a hand-over that sees it change gives way to the newer one. */
  private generation = 0;
  private running: Promise<void> = Promise.resolve();
  /**
   * Shards owed a resend: the gainers of every adoption not yet served. A hand-over that gives
   * way to a newer epoch leaves its unserved shards here, and the newer one resends them too
   * (under the newer view: their buckets still wait there).
   */
  private readonly owed = new Set<number>();
  /** Hand-overs completed, shards resent to, attempts that failed. */
  readonly counters = { handovers: 0, resyncs: 0, failedResyncs: 0, superseded: 0 };

  constructor(private readonly options: EpochFollowerOptions) {}

  /** The view requests are routed by; undefined until the collector's first answer. */
  get view(): OwnershipView | undefined {
    return this.cur;
  }

  /** The view before it (REMOVEs go to both owners until the epoch settles). */
  get previousView(): OwnershipView | undefined {
    return this.prev;
  }

  /** Done with the current epoch's hand-over (the heartbeat's `ready`). */
  get ready(): boolean {
    return this.cur !== undefined && this.readyAt === this.cur.epoch;
  }

  /** A LOGIN or MOVE routed by `epoch` is sent. */
  begin(epoch: number): void {
    this.inFlight.set(epoch, (this.inFlight.get(epoch) ?? 0) + 1);
  }

  /** ... and was answered or timed out. */
  end(epoch: number): void {
    const n = (this.inFlight.get(epoch) ?? 0) - 1;
    if (n <= 0) this.inFlight.delete(epoch);
    else this.inFlight.set(epoch, n);
  }

  /** Changes in flight routed by an epoch before `epoch`. */
  inFlightBefore(epoch: number): number {
    let n = 0;
    for (const [e, c] of this.inFlight) if (e < epoch) n += c;
    return n;
  }

  /**
   * The collector's view. A later epoch is adopted: routing switches now, the hand-over runs in
   * the background (`settled()` resolves when it is done). An equal or earlier one is ignored.
   * True when adopted.
   */
  adopt(view: OwnershipView): boolean {
    if (this.cur && view.epoch <= this.cur.epoch) return false;
    const from = this.cur;
    this.prev = from;
    this.cur = view;
    const gen = ++this.generation;
    if (!from) {
      // The first view: this chatD held no session before it (logins wait for a view), so
      // there is nothing to hand over. RESYNCs from the collector still reach it.
      this.readyAt = view.epoch;
      return true;
    }
    for (const s of handover(from, view).gains.keys()) this.owed.add(s);
    this.running = this.running.then(() => this.handOver(gen, view));
    return true;
  }

  /** Resolves once the hand-overs started so far have finished (or given way). */
  settled(): Promise<void> {
    return this.running;
  }

  /** Shards still owed a resend (status, tests). */
  owedShards(): number[] {
    return [...this.owed].sort((a, b) => a - b);
  }

  private async handOver(gen: number, view: OwnershipView): Promise<void> {
    const poll = this.options.pollMs ?? 10;
    while (this.inFlightBefore(view.epoch) > 0) {
      if (gen !== this.generation) return this.giveWay();
      await sleep(poll);
    }
    const pending = this.owed;
    let delay = this.options.retryMs ?? 100;
    while (pending.size > 0) {
      if (gen !== this.generation) return this.giveWay();
      for (const shard of [...pending].sort((a, b) => a - b)) {
        if (!view.isMember(shard) || (this.options.isUp && !this.options.isUp(shard))) {
          // Not a member any more, or not live: when it is back it says HELLO and the
          // collector RESYNCs us.
          pending.delete(shard);
          continue;
        }
        let ok = false;
        try {
          ok = await this.options.resync(shard, view);
        } catch {
          ok = false;
        }
        if (gen !== this.generation) return this.giveWay();
        if (ok) {
          pending.delete(shard);
          this.counters.resyncs++;
        } else this.counters.failedResyncs++;
      }
      if (pending.size > 0) {
        await sleep(delay);
        delay = Math.min(delay * 2, 1000);
      }
    }
    this.readyAt = view.epoch;
    this.counters.handovers++;
  }

  private giveWay(): void {
    this.counters.superseded++;
  }
}

const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => {
    setTimeout(resolve, ms).unref();
  });
