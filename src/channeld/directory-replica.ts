/**
 * A read-only copy of a shard's directory in shared memory (SharedArrayBuffer), for the
 * shard's receiver thread: it answers FIND records on its own, without waking the main
 * thread (docs/cluster.md, "FIND in the receiver thread"). The main thread is the only writer:
 * the Directory calls set/remove on every change, before the change is acknowledged to
 * anyone. The reader never sees a torn entry (per-entry sequence lock) and never answers
 * from a replica that is incomplete: `usable` is false until the shard is live and whenever
 * the replica could not hold an entry (full), and the reader then hands FINDs to the main
 * thread like any other record.
 *
 * Layout (all Int32 slots are read and written with Atomics):
 *   control   Int32[CONTROL_SLOTS]: USABLE flag, counters of the reader
 *   buckets   Int32[buckets]: 0 empty, -1 deleted, else entry index + 1 (open addressing,
 *             linear probing, buckets a power of two, at least twice the entries)
 *   seqs      Int32[entries]: the entry's sequence lock (odd while being written)
 *   hashes    Int32[entries]: FNV-1a of the key's UTF-8 bytes
 *   entries   ENTRY_BYTES each: u8 key length, u8 name length, u16 channel, u32 owner,
 *             u32 owner incarnation, key bytes (MAX_KEY_BYTES), name bytes (MAX_KEY_BYTES)
 *   states    Uint8[BUCKETS]: the shard's bucket states under the membership epoch in control
 *             slot R_EPOCH (bucket-states.ts writes them; docs/resharding.md)
 */
import { fnv1a32String } from '../cluster/shard-for';
import { BUCKETS, bucketOfHash } from '../cluster/ownership';
import { B_SERVING } from './bucket-states';
import { MAX_KEY_BYTES } from '../cluster/records';

export const CONTROL_SLOTS = 16;
/** Control slots. */
export const R_USABLE = 0;
export const R_FINDS = 1;
export const R_ENVELOPES = 2;
export const R_HANDED_OVER = 3;
export const R_EXPIRED = 4;
export const R_SEND_FAILED = 5;
export const R_BAD = 6;
/** Bumped (odd while running) around a rebuild of the buckets: a probe across it is retried. */
export const R_GEN = 7;
/**
 * The membership epoch the bucket states are for (0: none yet), stored after the states
 * (docs/resharding.md). Read as a u32 (the Int32 slot's bits).
 */
export const R_EPOCH = 8;
/** Reply envelopes that met a full queue and went to the main thread's send backlog. */
export const R_DEFERRED = 9;

const E_KEY_LEN = 0;
const E_NAME_LEN = 1;
const E_CHANNEL = 2;
const E_OWNER = 4;
const E_OWNER_INC = 8;
export const E_KEY = 12;
export const E_NAME = E_KEY + MAX_KEY_BYTES;
export const ENTRY_BYTES = E_NAME + MAX_KEY_BYTES; // 204, a multiple of 4

export interface ReplicaMemory {
  readonly buffer: SharedArrayBuffer;
  readonly entries: number;
}

const bucketsFor = (entries: number): number => {
  let b = 16;
  while (b < entries * 2) b *= 2;
  return b;
};

/** Views over one replica buffer (both sides build the same ones). */
export class ReplicaViews {
  readonly control: Int32Array;
  readonly buckets: Int32Array;
  readonly seqs: Int32Array;
  readonly hashes: Int32Array;
  readonly bytes: Buffer;
  readonly entriesBase: number;
  readonly mask: number;
  /** Bucket states under the epoch in R_EPOCH (bucket-states.ts). */
  readonly states: Uint8Array;

  constructor(readonly memory: ReplicaMemory) {
    const { buffer, entries } = memory;
    const nb = bucketsFor(entries);
    let at = 0;
    this.control = new Int32Array(buffer, at, CONTROL_SLOTS);
    at += CONTROL_SLOTS * 4;
    this.buckets = new Int32Array(buffer, at, nb);
    at += nb * 4;
    this.seqs = new Int32Array(buffer, at, entries);
    at += entries * 4;
    this.hashes = new Int32Array(buffer, at, entries);
    at += entries * 4;
    this.entriesBase = at;
    at += entries * ENTRY_BYTES;
    this.states = new Uint8Array(buffer, at, BUCKETS);
    this.bytes = Buffer.from(buffer);
    this.mask = nb - 1;
  }
}

/** Bytes of shared memory for a replica of `entries` entries. */
export function replicaBytes(entries: number): number {
  return (CONTROL_SLOTS + bucketsFor(entries) + 2 * entries) * 4 + entries * ENTRY_BYTES + BUCKETS;
}

export function createReplicaMemory(entries: number): ReplicaMemory {
  if (!(Number.isInteger(entries) && entries >= 1)) throw new RangeError(`replica entries must be a positive integer, got ${entries}`);
  return { buffer: new SharedArrayBuffer(replicaBytes(entries)), entries };
}

/** The main thread's side: mirrors every directory change. */
export class ReplicaWriter {
  private readonly v: ReplicaViews;
  /** Entry index by key, and the free entry indexes. */
  private readonly index = new Map<string, number>();
  private readonly free: number[] = [];
  private nextFresh = 0;
  /** Deleted buckets since the last rebuild (they lengthen probes). */
  private deleted = 0;
  /** The replica missed an entry (full): it stays unusable. */
  private overflowed = false;

  constructor(memory: ReplicaMemory) {
    this.v = new ReplicaViews(memory);
    Atomics.store(this.v.control, R_USABLE, 0);
  }

  get views(): ReplicaViews {
    return this.v;
  }

  /** The shard serves (or stops serving) lookups; the replica is usable only while live. */
  setLive(live: boolean): void {
    Atomics.store(this.v.control, R_USABLE, live && !this.overflowed ? 1 : 0);
  }

  get usable(): boolean {
    return Atomics.load(this.v.control, R_USABLE) === 1;
  }

  /** The bucket states, for BucketStates to write (shared with the reader). */
  get states(): Uint8Array {
    return this.v.states;
  }

  /** Publishes the epoch the bucket states are for (BucketStates' onEpoch: after writing them). */
  setEpoch(epoch: number): void {
    Atomics.store(this.v.control, R_EPOCH, epoch | 0);
  }

  /** Inserts or updates the entry of `key`. */
  set(key: string, name: string, channel: number, owner: number, ownerInc: number): void {
    if (this.overflowed) return;
    const v = this.v;
    let e = this.index.get(key);
    if (e === undefined) {
      e = this.free.pop() ?? (this.nextFresh < this.v.memory.entries ? this.nextFresh++ : -1);
      if (e < 0 || Buffer.byteLength(key) > MAX_KEY_BYTES || Buffer.byteLength(name) > MAX_KEY_BYTES) {
        // Full (or a name no record can carry): from now on every FIND goes to the main thread.
        this.overflowed = true;
        Atomics.store(v.control, R_USABLE, 0);
        return;
      }
      this.writeEntry(e, key, name, channel, owner, ownerInc);
      this.index.set(key, e);
      this.link(e, v.hashes[e]!);
      return;
    }
    this.writeEntry(e, key, name, channel, owner, ownerInc);
  }

  remove(key: string): void {
    const e = this.index.get(key);
    if (e === undefined) return;
    this.index.delete(key);
    const v = this.v;
    const b = this.bucketOf(e);
    if (b >= 0) Atomics.store(v.buckets, b, -1);
    // Bump the lock twice: a reader holding this index sees it change and retries.
    Atomics.add(v.seqs, e, 2);
    this.free.push(e);
    if (++this.deleted > v.memory.entries) this.rebuild();
  }

  /** Drops every entry (tests). */
  clear(): void {
    for (const key of [...this.index.keys()]) this.remove(key);
  }

  private writeEntry(e: number, key: string, name: string, channel: number, owner: number, ownerInc: number): void {
    const v = this.v;
    const at = v.entriesBase + e * ENTRY_BYTES;
    Atomics.add(v.seqs, e, 1); // odd: being written
    const kl = v.bytes.write(key, at + E_KEY, MAX_KEY_BYTES, 'utf8');
    const nl = v.bytes.write(name, at + E_NAME, MAX_KEY_BYTES, 'utf8');
    v.bytes[at + E_KEY_LEN] = kl;
    v.bytes[at + E_NAME_LEN] = nl;
    v.bytes.writeUInt16LE(channel, at + E_CHANNEL);
    v.bytes.writeUInt32LE(owner >>> 0, at + E_OWNER);
    v.bytes.writeUInt32LE(ownerInc >>> 0, at + E_OWNER_INC);
    v.hashes[e] = fnv1a32String(key) | 0;
    Atomics.add(v.seqs, e, 1); // even: done (sequentially consistent: the bytes are visible first)
  }

  private link(e: number, hash: number): void {
    const v = this.v;
    for (let b = hash & v.mask; ; b = (b + 1) & v.mask) {
      const cur = Atomics.load(v.buckets, b);
      if (cur === 0 || cur === -1) {
        if (cur === -1) this.deleted--;
        Atomics.store(v.buckets, b, e + 1);
        return;
      }
    }
  }

  private bucketOf(e: number): number {
    const v = this.v;
    for (let b = v.hashes[e]! & v.mask, n = 0; n <= v.mask; b = (b + 1) & v.mask, n++) {
      const cur = Atomics.load(v.buckets, b);
      if (cur === 0) return -1;
      if (cur === e + 1) return b;
    }
    return -1;
  }

  /**
   * Too many deleted buckets: rebuild the bucket array in place. The replica is unusable
   * meanwhile (readers hand FINDs to the main thread), so no reader probes a half-built table.
   */
  private rebuild(): void {
    const v = this.v;
    Atomics.add(v.control, R_GEN, 1);
    for (let b = 0; b <= v.mask; b++) Atomics.store(v.buckets, b, 0);
    for (const e of this.index.values()) this.link(e, v.hashes[e]!);
    this.deleted = 0;
    Atomics.add(v.control, R_GEN, 1);
  }
}

/** What ReplicaReader.find found besides the name (a reused object). */
export interface ReplicaHit {
  channel: number;
  owner: number;
  ownerInc: number;
}

/** The receiver thread's side. */
export class ReplicaReader {
  readonly v: ReplicaViews;
  readonly hit: ReplicaHit = { channel: 0, owner: 0, ownerInc: 0 };

  constructor(memory: ReplicaMemory) {
    this.v = new ReplicaViews(memory);
  }

  count(slot: number, n = 1): void {
    Atomics.add(this.v.control, slot, n);
  }

  /**
   * Whether a request routed by `epoch` for the key whose FNV-1a is `hash` may be answered
   * here: the replica's states are for that very epoch and the key's bucket is served (owned,
   * hand-over complete). Anything else goes to the main thread, which knows the rest (a
   * sender one epoch behind, a shard behind its sender). To be checked before the lookup and
   * again after it, as `usable` is.
   */
  served(epoch: number, hash: number): boolean {
    const v = this.v;
    return Atomics.load(v.control, R_EPOCH) >>> 0 === epoch >>> 0 && epoch !== 0 && Atomics.load(v.states, bucketOfHash(hash)) === B_SERVING;
  }

  /**
   * Looks up the key in body[start, end) (its FNV-1a is `hash`). Returns the length of the
   * registered name, copied into out[outAt..] (and `hit` filled in), -1 when the key is not
   * there, or -2 when the replica cannot answer now (not usable, or changing under us): then
   * the main thread must answer.
   */
  find(body: Uint8Array, start: number, end: number, hash: number, out: Buffer, outAt: number): number {
    const v = this.v;
    const control = v.control;
    const len = end - start;
    for (let attempt = 0; attempt < 100; attempt++) {
      const gen = Atomics.load(control, R_GEN);
      if ((gen & 1) !== 0 || Atomics.load(control, R_USABLE) !== 1) return -2;
      let result = -1;
      let retry = false;
      for (let b = hash & v.mask, n = 0; n <= v.mask; b = (b + 1) & v.mask, n++) {
        const cur = Atomics.load(v.buckets, b);
        if (cur === 0) break;
        if (cur === -1) continue;
        const e = cur - 1;
        if (v.hashes[e] !== (hash | 0)) continue;
        const s1 = Atomics.load(v.seqs, e);
        if ((s1 & 1) !== 0) {
          retry = true;
          break;
        }
        const at = v.entriesBase + e * ENTRY_BYTES;
        const bytes = v.bytes;
        let same = bytes[at + E_KEY_LEN] === len;
        for (let i = 0; same && i < len; i++) same = bytes[at + E_KEY + i] === body[start + i];
        let nameLength = 0;
        if (same) {
          const hit = this.hit;
          hit.channel = bytes.readUInt16LE(at + E_CHANNEL);
          hit.owner = bytes.readUInt32LE(at + E_OWNER);
          hit.ownerInc = bytes.readUInt32LE(at + E_OWNER_INC);
          nameLength = bytes[at + E_NAME_LEN]!;
          bytes.copy(out, outAt, at + E_NAME, at + E_NAME + nameLength);
        }
        // Changed while we read (or reused for another key): read it again.
        if (Atomics.load(v.seqs, e) !== s1) {
          retry = true;
          break;
        }
        if (same) {
          result = nameLength;
          break;
        }
      }
      // A miss, or a hit, counts only if the table was not rebuilt and is still usable.
      if (!retry && Atomics.load(control, R_GEN) === gen && Atomics.load(control, R_USABLE) === 1) return result;
    }
    return -2;
  }
}
