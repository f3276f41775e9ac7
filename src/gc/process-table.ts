import { ownerOf } from '../ipc/mtypes';
import type { ClockState } from './clock-skew';

/** The roles the collector tracks (the collector itself and tools are not tracked). */
export type TrackedRole = 'chatd' | 'channeld';

/** How a death was learnt. */
export type DeathReason = 'pm2' | 'pid' | 'silence' | 'replaced';

/** One live process, as the collector knows it: one incarnation holding one mtype. */
export interface ProcessEntry {
  readonly mtype: number;
  readonly role: TrackedRole;
  /** Shard index (channeld) or instance (chatd). */
  readonly index: number;
  readonly incarnation: number;
  /** From its heartbeats; 0 until the first heartbeat. */
  pid: number;
  /**
   * Whether liveness may be judged by the pid: false for a process of another host (its pid
   * means nothing here, and the same number may exist here) and for a pid not visible from
   * here (another pid namespace). Those live and die by heartbeats (checkSilence).
   */
  pidCheck: boolean;
  /** HOST_ID from its heartbeat or HELLO (the collector's own when the process did not say). */
  readonly host: string;
  /** It runs on the collector's host: its pid and PM2's events may be believed. */
  readonly local: boolean;
  readonly firstSeenAt: number;
  lastSeenAt: number;
  heartbeats: number;
  /** Its clock's offset to the collector's, from its heartbeats (clock-skew.ts); undefined until reported. */
  clock?: ClockState;
}

/** A process the collector has declared dead. */
export interface Death {
  readonly mtype: number;
  readonly role: TrackedRole;
  readonly index: number;
  readonly incarnation: number;
  readonly pid: number;
  /** HOST_ID of the process, and whether that is the collector's host. */
  readonly host: string;
  readonly local: boolean;
  readonly reason: DeathReason;
  readonly at: number;
  readonly lastSeenAt: number;
  /** The incarnation that holds the mtype now, if one does (then its mailbox is not drained). */
  readonly successor: number | undefined;
}

export interface SightingResult {
  /** The entry for this incarnation; undefined when the record comes from a dead incarnation. */
  readonly entry: ProcessEntry | undefined;
  /** True when this sighting created the entry. */
  readonly added: boolean;
  /** The previous incarnation on this mtype, now dead because a new one speaks for it. */
  readonly replaced: Death | undefined;
  /** True when the record comes from an incarnation already declared dead. */
  readonly fromDead: boolean;
}

export interface ProcessTableOptions {
  /** Heartbeat silence after which a process is dead. */
  deadAfterMs: number;
  /** How many dead incarnations to remember (for idempotency and status). */
  rememberDeaths?: number;
  /**
   * The collector's HOST_ID (docs/multi-host.md). A process that names another host in its
   * heartbeat or HELLO is never pid-checked: its death is established by silence.
   */
  localHost?: string;
}

/** The host of processes that did not name one (of an earlier version): the collector's own. */
export const LOCAL_HOST = '';

const key = (mtype: number, incarnation: number): string => `${mtype}:${incarnation}`;

/** The tracked role and index an mtype stands for, or undefined for mtypes the collector does not track. */
export function trackedRoleOf(mtype: number): { role: TrackedRole; index: number } | undefined {
  const o = ownerOf(mtype);
  if (o.role === 'channeld') return { role: 'channeld', index: o.shard };
  if (o.role === 'chatd') return { role: 'chatd', index: o.instance };
  return undefined;
}

/**
 * The collector's view of which process incarnations are alive: pure, no I/O, no timers.
 * Time comes in as arguments, liveness of a pid as a function, so it is tested directly.
 *
 * One mtype is held by at most one live incarnation. A record from a new incarnation on a
 * known mtype means the old one is dead (it was restarted). Deaths are remembered by
 * (mtype, incarnation) so that every way of learning one reports it once.
 */
export class ProcessTable {
  private readonly byMtype = new Map<number, ProcessEntry>();
  private readonly dead = new Map<string, Death>();
  /** mtype -> the last death there, while no newer incarnation holds the mtype. */
  private readonly vacant = new Map<number, Death>();
  private readonly rememberDeaths: number;
  /** Silence is measured from no earlier than this (the collector's own stalls do not count). */
  private silenceFloor = 0;

  readonly localHost: string;

  /** Heartbeat silence after which a process whose pid cannot be checked is dead. */
  get deadAfterMs(): number {
    return this.options.deadAfterMs;
  }

  constructor(private readonly options: ProcessTableOptions) {
    this.rememberDeaths = options.rememberDeaths ?? 1024;
    this.localHost = options.localHost ?? LOCAL_HOST;
  }

  /** A process naming `host` (undefined: it did not say) runs on the collector's host. */
  isLocalHost(host: string | undefined): boolean {
    return host === undefined || host === this.localHost;
  }

  /**
   * Any record from (mtype, incarnation) shows that incarnation alive. Creates the entry for an
   * unknown incarnation of a tracked mtype (pid 0 until its heartbeat), and declares the
   * previous incarnation on that mtype dead ('replaced'). `host`: the HOST_ID the process
   * named (undefined: the collector's own), kept from the record that created the entry.
   */
  sighting(mtype: number, incarnation: number, now: number, host?: string): SightingResult {
    const tracked = trackedRoleOf(mtype);
    if (!tracked || incarnation === 0) return { entry: undefined, added: false, replaced: undefined, fromDead: false };
    if (this.dead.has(key(mtype, incarnation))) return { entry: undefined, added: false, replaced: undefined, fromDead: true };
    const current = this.byMtype.get(mtype);
    if (current && current.incarnation === incarnation) {
      current.lastSeenAt = now;
      return { entry: current, added: false, replaced: undefined, fromDead: false };
    }
    let replaced: Death | undefined;
    if (current) {
      this.byMtype.delete(mtype);
      replaced = this.bury(current, 'replaced', now, incarnation);
    }
    const local = this.isLocalHost(host);
    const entry: ProcessEntry = {
      mtype,
      role: tracked.role,
      index: tracked.index,
      incarnation,
      pid: 0,
      pidCheck: local,
      host: host ?? this.localHost,
      local,
      firstSeenAt: now,
      lastSeenAt: now,
      heartbeats: 0,
    };
    this.byMtype.set(mtype, entry);
    this.vacant.delete(mtype);
    return { entry, added: true, replaced, fromDead: false };
  }

  /**
   * A record of any kind from (mtype, incarnation): refreshes the entry when that incarnation
   * holds the mtype, and does nothing else. Only validated records (a heartbeat, a HELLO) may
   * put a new incarnation in the table (sighting): one unvalidated record proves nothing.
   */
  touch(mtype: number, incarnation: number, now: number): void {
    const current = this.byMtype.get(mtype);
    if (current && current.incarnation === incarnation) current.lastSeenAt = now;
  }

  /** A heartbeat: a sighting that also carries the pid (checked only on the collector's host). */
  heartbeat(mtype: number, incarnation: number, pid: number, now: number, host?: string): SightingResult {
    const r = this.sighting(mtype, incarnation, now, host);
    if (r.entry) {
      r.entry.heartbeats++;
      if (r.entry.pid !== pid) {
        r.entry.pid = pid;
        r.entry.pidCheck = r.entry.local;
      }
    }
    return r;
  }

  /**
   * Takes back an incarnation declared dead that turned out to be alive (its heartbeats came
   * back and its pid exists). Only while no newer incarnation holds the mtype.
   */
  revive(mtype: number, incarnation: number, pid: number, now: number): ProcessEntry | undefined {
    const k = key(mtype, incarnation);
    const d = this.dead.get(k);
    // Only a process of this host, whose pid was checked: another host's is fenced (membership.ts).
    if (!d || !d.local || this.byMtype.has(mtype)) return undefined;
    this.dead.delete(k);
    this.vacant.delete(mtype);
    const entry: ProcessEntry = {
      mtype,
      role: d.role,
      index: d.index,
      incarnation,
      pid,
      pidCheck: true,
      host: d.host,
      local: true,
      firstSeenAt: now,
      lastSeenAt: now,
      heartbeats: 1,
    };
    this.byMtype.set(mtype, entry);
    return entry;
  }

  /** Declares (mtype, incarnation) dead. Undefined when it was not live (unknown or already dead): idempotent. */
  markDead(mtype: number, incarnation: number, reason: DeathReason, now: number): Death | undefined {
    const e = this.byMtype.get(mtype);
    if (!e || e.incarnation !== incarnation) return undefined;
    this.byMtype.delete(mtype);
    return this.bury(e, reason, now, undefined);
  }

  /**
   * Entries whose pid no longer exists. `liveness` returns false only for a pid that is
   * certainly gone. Never asked about a process of another host (pidCheck is false there).
   */
  checkPids(liveness: (pid: number) => boolean, now: number): Death[] {
    const deaths: Death[] = [];
    for (const e of [...this.byMtype.values()]) {
      if (e.pid === 0 || !e.pidCheck || !e.local) continue;
      if (!liveness(e.pid)) {
        const d = this.markDead(e.mtype, e.incarnation, 'pid', now);
        if (d) deaths.push(d);
      }
    }
    return deaths;
  }

  /**
   * Entries silent for longer than deadAfterMs, among those whose pid cannot be checked.
   * A process whose pid is visible dies by the pid check (or PM2's word) only: on a full queue
   * its heartbeats wait in its send backlog behind ordinary traffic, and declaring a busy
   * chatD dead would purge every character it holds.
   */
  checkSilence(now: number): Death[] {
    const deaths: Death[] = [];
    for (const e of [...this.byMtype.values()]) {
      if (e.pid !== 0 && e.pidCheck) continue;
      const since = Math.max(e.lastSeenAt, this.silenceFloor);
      if (now - since > this.options.deadAfterMs) {
        const d = this.markDead(e.mtype, e.incarnation, 'silence', now);
        if (d) deaths.push(d);
      }
    }
    return deaths;
  }

  /**
   * The collector itself was stalled (its timers ran late): messages may be waiting unread,
   * so nobody's silence counts from before `now`.
   */
  forgiveSilenceBefore(now: number): void {
    this.silenceFloor = Math.max(this.silenceFloor, now);
  }

  get(mtype: number): ProcessEntry | undefined {
    return this.byMtype.get(mtype);
  }

  /** Live processes, by mtype. */
  live(role?: TrackedRole): ProcessEntry[] {
    const all = [...this.byMtype.values()].sort((a, b) => a.mtype - b.mtype);
    return role ? all.filter((e) => e.role === role) : all;
  }

  /** [shardIndex, incarnation] of every live shard (the membership payload). */
  liveShards(): [number, number][] {
    return this.live('channeld').map((e) => [e.index, e.incarnation]);
  }

  /** [mtype, incarnation] of every live chatD (the helloReply payload). */
  liveChatds(): [number, number][] {
    return this.live('chatd').map((e) => [e.mtype, e.incarnation]);
  }

  isDead(mtype: number, incarnation: number): boolean {
    return this.dead.has(key(mtype, incarnation));
  }

  /** The death of (mtype, incarnation), while remembered. */
  death(mtype: number, incarnation: number): Death | undefined {
    return this.dead.get(key(mtype, incarnation));
  }

  /** The last death on `mtype` while no newer incarnation holds it ("known dead"). */
  vacancy(mtype: number): Death | undefined {
    return this.vacant.get(mtype);
  }

  /** mtypes whose last holder died and that no newer incarnation holds. */
  vacantMtypes(): number[] {
    return [...this.vacant.keys()].sort((a, b) => a - b);
  }

  /** Remembered deaths, newest last. */
  deaths(): Death[] {
    return [...this.dead.values()];
  }

  private bury(e: ProcessEntry, reason: DeathReason, now: number, successor: number | undefined): Death {
    const d: Death = {
      mtype: e.mtype,
      role: e.role,
      index: e.index,
      incarnation: e.incarnation,
      pid: e.pid,
      host: e.host,
      local: e.local,
      reason,
      at: now,
      lastSeenAt: e.lastSeenAt,
      successor,
    };
    this.dead.set(key(e.mtype, e.incarnation), d);
    if (successor === undefined) this.vacant.set(e.mtype, d);
    else this.vacant.delete(e.mtype);
    while (this.dead.size > this.rememberDeaths) {
      const oldest = this.dead.keys().next().value as string;
      this.dead.delete(oldest);
    }
    return d;
  }
}
