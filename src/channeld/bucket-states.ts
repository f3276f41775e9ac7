/**
 * A shard's side of the membership epoch (docs/resharding.md, "A shard at E-1 learning E"):
 * which buckets it serves, which wait for their hand-over, and what a request routed by some
 * epoch gets. Pure (no I/O, no timers): the ShardServer feeds it the collector's views and the
 * chatDs' `SYNC ... last`, and asks it for a verdict per request.
 *
 * The per-bucket states live in a Uint8Array that may be shared memory (the replica's, so that
 * the receiver thread reads them with the epoch, directory-replica.ts): every write is an
 * Atomics.store, and on an epoch change the states of lost and gained buckets are written
 * before the new epoch is published (`onEpoch`), so a reader that sees the new epoch sees them.
 */
import { BUCKETS, bucketOfHash, type OwnershipView } from '../cluster/ownership';

/** Bucket states (one byte each). */
export const B_NOT_MINE = 0;
export const B_SERVING = 1;
/** Owned at the current epoch, waiting for every live chatD's SYNC ... last at that epoch. */
export const B_WAITING = 2;

/** What a request for one bucket, routed by one epoch, gets. */
export type Verdict =
  /** Answer it from the directory. */
  | 'serve'
  /** UNAVAILABLE: owned, but the hand-over (or the restart's recovery) is not complete. */
  | 'waiting'
  /** WRONG_EPOCH: the sender routed by an epoch under which, or a bucket for which, this shard cannot answer. */
  | 'wrongEpoch'
  /** The sender is at a later epoch than this shard: wait for the collector's word (park and ask). */
  | 'ahead';

export interface EpochChange {
  /** Buckets owned before and not now: their entries must be dropped. */
  readonly lost: number[];
  /** Buckets owned now and not before (every owned bucket on a first view): waiting. */
  readonly gained: number[];
}

export class BucketStates {
  private cur: OwnershipView | undefined;
  private prev: OwnershipView | undefined;
  /** Buckets in B_WAITING. */
  private waitingCount = 0;
  /** chatDs ("mtype:incarnation") the current epoch's hand-over waits for; undefined until the collector named them. */
  private expected: Set<string> | undefined;
  /** chatDs whose SYNC ... last at the current epoch arrived. */
  private readonly synced = new Set<string>();

  constructor(
    readonly shard: number,
    /** BUCKETS bytes; the replica's shared states when the receiver thread answers FINDs. */
    readonly states: Uint8Array = new Uint8Array(BUCKETS),
    /** Publishes the epoch the states are for (the replica's control slot), after they are written. */
    private readonly onEpoch?: (epoch: number) => void,
  ) {
    if (states.length !== BUCKETS) throw new RangeError(`bucket states need ${BUCKETS} bytes, got ${states.length}`);
  }

  get view(): OwnershipView | undefined {
    return this.cur;
  }

  get previousView(): OwnershipView | undefined {
    return this.prev;
  }

  get epoch(): number {
    return this.cur?.epoch ?? 0;
  }

  /** No bucket waits: the shard is complete for its epoch (the heartbeat's `ready`). */
  get ready(): boolean {
    return this.cur !== undefined && this.waitingCount === 0;
  }

  get waiting(): number {
    return this.waitingCount;
  }

  /** Every chatD of the collector's latest answer at this epoch (leave() tells them it goes). */
  expectedChatds(): string[] {
    return this.expected ? [...this.expected] : [];
  }

  /** chatDs the current hand-over still waits for (of the collector's latest answer at this epoch). */
  waitingFor(): string[] {
    return this.expected ? [...this.expected].filter((c) => !this.synced.has(c)) : [];
  }

  /**
   * The collector's view. A later epoch than the current one is adopted (its lost and gained
   * buckets returned); an equal or earlier one changes nothing (undefined). The first view
   * makes every owned bucket wait: a shard that just started knows nothing.
   */
  adopt(view: OwnershipView): EpochChange | undefined {
    const cur = this.cur;
    if (cur && view.epoch <= cur.epoch) return undefined;
    const lost: number[] = [];
    const gained: number[] = [];
    const me = this.shard;
    const s = this.states;
    for (let b = 0; b < BUCKETS; b++) {
      const mineNow = view.table[b] === me;
      const mineBefore = cur !== undefined && cur.table[b] === me;
      if (mineNow === mineBefore) continue;
      if (mineBefore) {
        if (Atomics.load(s, b) === B_WAITING) this.waitingCount--;
        Atomics.store(s, b, B_NOT_MINE);
        lost.push(b);
      } else {
        Atomics.store(s, b, B_WAITING);
        this.waitingCount++;
        gained.push(b);
      }
    }
    this.prev = cur;
    this.cur = view;
    // A new hand-over: every chatD must resend for this epoch (its SYNC ... last at the
    // previous one said nothing about the buckets gained now), and the chatDs to wait for are
    // those of a collector answer at this epoch (one started meanwhile must be among them).
    this.synced.clear();
    this.expected = undefined;
    this.onEpoch?.(view.epoch);
    this.settle();
    return { lost, gained };
  }

  /**
   * The chatDs the collector names live in an answer at the current epoch (HELLO): the
   * hand-over waits for each of them. Reset by every epoch change.
   */
  expect(chatds: Iterable<string>): void {
    this.expected = new Set(chatds);
    this.settle();
  }

  /** A chatD's SYNC ... last routed by `epoch`; counts only for the current epoch. True when it counted. */
  syncedBy(chatd: string, epoch: number): boolean {
    if (!this.cur || epoch !== this.cur.epoch) return false;
    this.synced.add(chatd);
    this.settle();
    return true;
  }

  /** The verdict for a request routed by `epoch`, for bucket `bucket`. */
  verdict(epoch: number, bucket: number): Verdict {
    const cur = this.cur;
    // No view yet (just started, the collector not heard): recovering, as before epochs.
    if (!cur) return 'waiting';
    const state = Atomics.load(this.states, bucket);
    if (epoch === cur.epoch) return state === B_SERVING ? 'serve' : state === B_WAITING ? 'waiting' : 'wrongEpoch';
    if (epoch > cur.epoch) return 'ahead';
    // One epoch behind: a bucket this shard owned then and owns now is the same truth.
    if (this.prev && epoch === this.prev.epoch && this.prev.table[bucket] === this.shard) {
      return state === B_SERVING ? 'serve' : state === B_WAITING ? 'waiting' : 'wrongEpoch';
    }
    return 'wrongEpoch';
  }

  /** verdict() for the bucket of a key whose FNV-1a is `hash`. */
  verdictOfHash(epoch: number, hash: number): Verdict {
    return this.verdict(epoch, bucketOfHash(hash));
  }

  /** Waiting buckets become served once every expected chatD has synced at this epoch. */
  private settle(): void {
    if (this.waitingCount === 0 || !this.expected) return;
    for (const c of this.expected) if (!this.synced.has(c)) return;
    const s = this.states;
    for (let b = 0; b < BUCKETS; b++) if (Atomics.load(s, b) === B_WAITING) Atomics.store(s, b, B_SERVING);
    this.waitingCount = 0;
  }
}
