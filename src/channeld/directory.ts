import { normalizeName } from '../cluster/names';
import type { ReplicaWriter } from './directory-replica';

/** One online character, as its shard records it. */
export interface DirectoryEntry {
  /** The name as registered at login (what `find` gives back). */
  readonly name: string;
  readonly key: string;
  channel: number;
  /** The chatD that holds the connection: its mtype and incarnation, and its session id. */
  readonly owner: number;
  readonly ownerInc: number;
  readonly session: number;
}

export type LoginOutcome = 'ok' | 'taken';

/**
 * A shard's part of the directory of online characters: a pure in-memory map, no I/O.
 *
 * An entry belongs to one session of one chatD incarnation. Since one mtype is held by one
 * live process at a time, an entry whose owner mtype matches the asker but whose incarnation
 * does not is left over from a chatD that died: it yields to the new one at once. (The shard
 * asks this only for a chatD incarnation the collector names live, so the other is dead:
 * ShardServer.admit.)
 */
export class Directory {
  private readonly byKey = new Map<string, DirectoryEntry>();
  private readonly byOwner = new Map<string, Set<string>>();

  /** A shared-memory copy kept in step with every change (directory-replica.ts), if any. */
  constructor(private readonly replica?: ReplicaWriter) {}

  get size(): number {
    return this.byKey.size;
  }

  find(name: string): DirectoryEntry | undefined {
    return this.byKey.get(normalizeName(name));
  }

  /** find() for a name that is a directory key already (normalizeName's output). */
  findKey(key: string): DirectoryEntry | undefined {
    return this.byKey.get(key);
  }

  login(name: string, channel: number, owner: number, ownerInc: number, session: number): LoginOutcome {
    const key = normalizeName(name);
    const existing = this.byKey.get(key);
    if (existing) {
      const sameSession = existing.owner === owner && existing.ownerInc === ownerInc && existing.session === session;
      if (sameSession) {
        existing.channel = channel; // a retried login: idempotent
        this.replica?.set(existing.key, existing.name, channel, owner, ownerInc);
        return 'ok';
      }
      const fromDeadIncarnation = existing.owner === owner && existing.ownerInc !== ownerInc;
      if (!fromDeadIncarnation) return 'taken';
      this.delete(existing);
    }
    this.insert({ name, key, channel, owner, ownerInc, session });
    return 'ok';
  }

  /** Changes the channel of a session's entry; false when that session holds no entry. */
  move(name: string, channel: number, owner: number, ownerInc: number, session: number): boolean {
    const e = this.byKey.get(normalizeName(name));
    if (!e || e.owner !== owner || e.ownerInc !== ownerInc || e.session !== session) return false;
    e.channel = channel;
    this.replica?.set(e.key, e.name, channel, owner, ownerInc);
    return true;
  }

  /** Removes a session's entry; false when there was none (idempotent). */
  remove(name: string, owner: number, ownerInc: number, session: number): boolean {
    const e = this.byKey.get(normalizeName(name));
    if (!e || e.owner !== owner || e.ownerInc !== ownerInc || e.session !== session) return false;
    this.delete(e);
    return true;
  }

  /**
   * Removes every entry of one chatD mtype: of incarnation `ownerInc`, or when that is 0,
   * of every incarnation but `keep`. Returns how many went.
   */
  purge(owner: number, ownerInc: number, keep = 0): number {
    let removed = 0;
    for (const [ownerKey, keys] of this.byOwner) {
      const [m, inc] = ownerKey.split(':').map(Number) as [number, number];
      if (m !== owner) continue;
      if (ownerInc !== 0 ? inc !== ownerInc : inc === keep) continue;
      for (const key of keys) {
        const e = this.byKey.get(key);
        if (e) {
          this.byKey.delete(key);
          this.replica?.remove(key);
          removed++;
        }
      }
      this.byOwner.delete(ownerKey);
    }
    return removed;
  }

  /**
   * Removes every entry whose key `drop` selects (a shard dropping the buckets a new membership
   * epoch moved away, docs/resharding.md); returns how many went. O(entries), once per epoch.
   */
  dropWhere(drop: (key: string) => boolean): number {
    let removed = 0;
    for (const e of [...this.byKey.values()]) {
      if (!drop(e.key)) continue;
      this.delete(e);
      removed++;
    }
    return removed;
  }

  /** Counts entries per channel (one walk over the directory: for operators). */
  perChannel(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const e of this.byKey.values()) out[e.channel] = (out[e.channel] ?? 0) + 1;
    return out;
  }

  /** Counts entries per owner (for status and tests). */
  owners(): Map<string, number> {
    return new Map([...this.byOwner].map(([k, v]) => [k, v.size]));
  }

  private insert(e: DirectoryEntry): void {
    this.byKey.set(e.key, e);
    this.replica?.set(e.key, e.name, e.channel, e.owner, e.ownerInc);
    const ok = `${e.owner}:${e.ownerInc}`;
    let set = this.byOwner.get(ok);
    if (!set) this.byOwner.set(ok, (set = new Set()));
    set.add(e.key);
  }

  private delete(e: DirectoryEntry): void {
    this.byKey.delete(e.key);
    this.replica?.remove(e.key);
    const ok = `${e.owner}:${e.ownerInc}`;
    const set = this.byOwner.get(ok);
    if (set) {
      set.delete(e.key);
      if (set.size === 0) this.byOwner.delete(ok);
    }
  }
}
