/**
 * Who owns a name under a membership epoch (docs/resharding.md). A name's key hashes
 * (FNV-1a, shard-for.ts) to one of BUCKETS virtual buckets; each bucket is assigned by
 * rendezvous (highest-random-weight) hashing to one shard of the epoch's member set. The
 * assignment is computed once per epoch into a table, so a lookup on the hot path is
 * hash -> bucket -> shard: two multiplications, a shift and one typed-array read, no
 * allocation.
 *
 * Everything here is a pure function of its inputs (the member set, the key's bytes): every
 * process computes the same table for the same epoch. Rendezvous hashing moves few buckets
 * when the member set changes: adding a shard moves only the buckets it now wins (about
 * 1/(N+1) of them), removing one moves only the buckets it held; no other bucket changes owner.
 */
import { MAX_SHARDS } from '../ipc/mtypes';
import { normalizeName } from './names';
import { fnv1a32String } from './shard-for';

/** Virtual buckets (a power of two): 2^16, so BUCKET_SHIFT keeps the top 16 bits of a mixed hash. */
export const BUCKET_BITS = 16;
export const BUCKETS = 1 << BUCKET_BITS;
const BUCKET_SHIFT = 32 - BUCKET_BITS;

/** murmur3's 32-bit finalizer: a bijection on u32 that spreads every input bit over the output. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The bucket of a key whose FNV-1a (fnv1a32String of the key, or fnv1a32Range of its UTF-8
 * bytes) is `hash`: the top bits of the mixed hash (FNV-1a's low bits are its weakest, and the
 * shard's replica uses them for its own table).
 */
export function bucketOfHash(hash: number): number {
  return fmix32(hash) >>> BUCKET_SHIFT;
}

/** The bucket of a directory key (normalizeName's output). */
export function bucketOfKey(key: string): number {
  return bucketOfHash(fnv1a32String(key));
}

/**
 * The rendezvous weight of shard `shard` for bucket `bucket`. Mixed twice so that neither
 * input's structure (small consecutive integers on both sides) shows in the ranking.
 */
export function weight(bucket: number, shard: number): number {
  return fmix32(fmix32(Math.imul(bucket + 1, 0x9e3779b1) ^ 0x5bd1e995) ^ Math.imul(shard + 1, 0xcc9e2d51));
}

/** A member set: distinct shard indexes 0..MAX_SHARDS-1, sorted ascending (membersOf normalizes). */
export type Members = readonly number[];

/** Sorted, distinct, validated copy of a member list; throws RangeError on an invalid index or an empty set. */
export function membersOf(list: Iterable<number>): number[] {
  const set = new Set<number>();
  for (const s of list) {
    if (!(Number.isInteger(s) && s >= 0 && s < MAX_SHARDS)) throw new RangeError(`shard index ${s} out of range 0..${MAX_SHARDS - 1}`);
    set.add(s);
  }
  if (set.size === 0) throw new RangeError('a member set needs at least one shard');
  return [...set].sort((a, b) => a - b);
}

/** The bucket half of weight(), per bucket (computed once per process: 256 KB). */
let bucketBases: Uint32Array | undefined;
function bases(): Uint32Array {
  if (!bucketBases) {
    bucketBases = new Uint32Array(BUCKETS);
    for (let b = 0; b < BUCKETS; b++) bucketBases[b] = fmix32(Math.imul(b + 1, 0x9e3779b1) ^ 0x5bd1e995);
  }
  return bucketBases;
}

/** Whether shard `s` with weight `w` beats the holder `o` with weight `wo` (ties: the lower index). */
const beats = (w: number, s: number, wo: number, o: number): boolean => w > wo || (w === wo && s < o);

/**
 * The owner table of a member set: table[bucket] = the member with the highest weight for
 * that bucket (ties, which need equal 32-bit weights, go to the lower index). O(BUCKETS x N):
 * some ms for a few shards, about a second for 900 on a small machine; deriveTable does a
 * membership change in O(BUCKETS x changed shards) instead.
 */
export function ownerTable(members: Members): Uint16Array {
  const m = membersOf(members);
  const table = new Uint16Array(BUCKETS);
  if (m.length === 1) return table.fill(m[0]!);
  const base = bases();
  for (let b = 0; b < BUCKETS; b++) {
    table[b] = bestOf(base[b]!, m);
  }
  return table;
}

function bestOf(base: number, m: Members): number {
  let best = -1;
  let owner = 0;
  for (let i = 0; i < m.length; i++) {
    const s = m[i]!;
    const w = fmix32(base ^ Math.imul(s + 1, 0xcc9e2d51));
    if (w > best) {
      best = w;
      owner = s; // ascending order and a strict >: a tie keeps the lower index
    }
  }
  return owner;
}

/**
 * The owner table of `members`, derived from `prev`, the table of `prevMembers`: equal to
 * ownerTable(members) (rendezvous hashing ranks each bucket's shards independently of the
 * others), in O(BUCKETS x added shards + buckets of removed shards x N).
 */
export function deriveTable(prev: Uint16Array, prevMembers: Members, members: Members): Uint16Array {
  const from = new Set(membersOf(prevMembers));
  const to = membersOf(members);
  const toSet = new Set(to);
  const added = to.filter((s) => !from.has(s));
  const removed = new Set([...from].filter((s) => !toSet.has(s)));
  const base = bases();
  const table = new Uint16Array(prev);
  for (let b = 0; b < BUCKETS; b++) {
    const o = table[b]!;
    if (removed.has(o)) {
      table[b] = bestOf(base[b]!, to);
      continue;
    }
    let owner = o;
    let wo = fmix32(base[b]! ^ Math.imul(o + 1, 0xcc9e2d51));
    for (const s of added) {
      const w = fmix32(base[b]! ^ Math.imul(s + 1, 0xcc9e2d51));
      if (beats(w, s, wo, owner)) {
        owner = s;
        wo = w;
      }
    }
    table[b] = owner;
  }
  return table;
}

/**
 * One membership epoch as every process holds it: the epoch number (decided by the collector,
 * starting at 1, only ever increasing), its member set and the owner table.
 */
export class OwnershipView {
  readonly members: Members;
  readonly table: Uint16Array;
  private readonly memberSet: ReadonlySet<number>;

  /** `from`: an earlier view whose table this one is derived from (cheaper, same result). */
  constructor(
    readonly epoch: number,
    members: Iterable<number>,
    from?: OwnershipView,
  ) {
    if (!isEpoch(epoch)) throw new RangeError(`epoch ${epoch} out of range 1..2^32-1`);
    this.members = membersOf(members);
    this.memberSet = new Set(this.members);
    this.table = from ? deriveTable(from.table, from.members, this.members) : ownerTable(this.members);
  }

  /** The view of a later epoch, its table derived from this one's. */
  next(epoch: number, members: Iterable<number>): OwnershipView {
    return new OwnershipView(epoch, members, this);
  }

  /** Same epoch and same members. */
  sameAs(other: { epoch: number; members: Members }): boolean {
    return this.epoch === other.epoch && this.members.length === other.members.length && this.members.every((s, i) => other.members[i] === s);
  }

  /** The shard owning a directory key. */
  ownerOfKey(key: string): number {
    return this.table[bucketOfKey(key)]!;
  }

  /** The shard owning the bucket of a key whose FNV-1a is `hash`. */
  ownerOfHash(hash: number): number {
    return this.table[fmix32(hash) >>> BUCKET_SHIFT]!;
  }

  isMember(shard: number): boolean {
    return this.memberSet.has(shard);
  }

  /** Buckets owned by `shard`. */
  bucketsOf(shard: number): number[] {
    const out: number[] = [];
    for (let b = 0; b < BUCKETS; b++) if (this.table[b] === shard) out.push(b);
    return out;
  }

  /** The member list as ranges [first, last] (the wire form, memberRanges). */
  ranges(): [number, number][] {
    return memberRanges(this.members);
  }
}

/**
 * What changes between two views: per shard, the buckets it gains (must be handed to it) and
 * loses (it drops their entries). `moved` counts buckets whose owner differs.
 */
export interface Handover {
  readonly moved: number;
  /** shard -> buckets it owns in `to` and did not own in `from`. */
  readonly gains: ReadonlyMap<number, readonly number[]>;
  /** shard -> buckets it owned in `from` and does not own in `to`. */
  readonly losses: ReadonlyMap<number, readonly number[]>;
}

export function handover(from: OwnershipView | Uint16Array, to: OwnershipView | Uint16Array): Handover {
  const a = from instanceof OwnershipView ? from.table : from;
  const b = to instanceof OwnershipView ? to.table : to;
  const gains = new Map<number, number[]>();
  const losses = new Map<number, number[]>();
  let moved = 0;
  for (let k = 0; k < BUCKETS; k++) {
    const x = a[k]!;
    const y = b[k]!;
    if (x === y) continue;
    moved++;
    let g = gains.get(y);
    if (!g) gains.set(y, (g = []));
    g.push(k);
    let l = losses.get(x);
    if (!l) losses.set(x, (l = []));
    l.push(k);
  }
  return { moved, gains, losses };
}

/** An epoch number: an integer 1..2^32-1 (0 means "none" on the wire). */
export const isEpoch = (e: unknown): e is number => typeof e === 'number' && Number.isInteger(e) && e >= 1 && e <= 0xffffffff;

/** A sorted member list as ranges of consecutive indexes: [0,1,2,5] -> [[0,2],[5,5]]. */
export function memberRanges(members: Members): [number, number][] {
  const out: [number, number][] = [];
  for (const s of members) {
    const last = out[out.length - 1];
    if (last && s === last[1] + 1) last[1] = s;
    else out.push([s, s]);
  }
  return out;
}

/**
 * The member list of ranges (from the wire: trust nothing). Undefined when a range is
 * malformed, out of 0..MAX_SHARDS-1, out of order or overlapping, or the set is empty.
 */
export function membersFromRanges(ranges: readonly (readonly [number, number])[]): number[] | undefined {
  const out: number[] = [];
  let next = 0;
  for (const r of ranges) {
    if (!Array.isArray(r) || r.length !== 2) return undefined;
    const [lo, hi] = r;
    if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= next && hi >= lo && hi < MAX_SHARDS)) return undefined;
    for (let s = lo; s <= hi; s++) out.push(s);
    next = hi + 2; // adjacent ranges would have been one: refuse them too (one canonical form)
  }
  return out.length > 0 ? out : undefined;
}

const firstViews = new Map<number, OwnershipView>();
/**
 * The shard owning `name` at a cluster's first epoch, members 0..shards-1 (what the collector
 * decides at a normal start): for tests, tools and benchmarks that pick names per shard.
 * The daemons route by the collector's current view instead.
 */
export function firstEpochOwner(name: string, shards: number): number {
  let v = firstViews.get(shards);
  if (!v) firstViews.set(shards, (v = new OwnershipView(1, Array.from({ length: shards }, (_, i) => i))));
  return v.ownerOfKey(normalizeName(name));
}
