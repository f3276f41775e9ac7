import { Kind, Status, kindName } from '../cluster/kinds';
import { EMPTY, decodePayload, encodePayload, type PayloadName, type PayloadTypes } from '../cluster/messages';
import type { InboundRecord } from '../ipc/envelope';
import type { Endpoint, ReplyFn } from '../ipc/endpoint';
import { MTYPE_GC, isChatdMtype } from '../ipc/mtypes';
import type { Logger } from '../log';
import { RateMeter, uptimeS, type ProcessMetrics } from '../runtime/metrics';
import { shardFor, shardOfKey } from '../cluster/shard-for';
import { MAX_FIND_REPLY_BYTES, readKey, writeFindReply } from '../cluster/records';
import { Directory } from './directory';
import { R_BAD, R_ENVELOPES, R_EXPIRED, R_FINDS, R_SEND_FAILED, type ReplicaWriter } from './directory-replica';

/** What the receiver thread did on its own (FINDs answered from the replica). */
function replicaCounters(r: ReplicaWriter): Record<string, number | boolean> {
  const c = r.views.control;
  return {
    usable: r.usable,
    finds: Atomics.load(c, R_FINDS),
    envelopes: Atomics.load(c, R_ENVELOPES),
    expired: Atomics.load(c, R_EXPIRED),
    badRequests: Atomics.load(c, R_BAD),
    sendFailed: Atomics.load(c, R_SEND_FAILED),
  };
}

export interface ShardServerOptions {
  shard: number;
  shards: number;
  /**
   * SHARD_RECOVERY_MS: past this a shard still recovering logs a warning (and again every
   * such period). It never goes live on a timer: only once every live chatD resent its sessions.
   */
  recoveryMs: number;
  /** While recovering with chatDs still to resync, HELLO is repeated this often (default 500 ms). */
  rehelloMs?: number;
  /** Pause after a HELLO that got no OK answer (default 100 ms). */
  helloRetryMs?: number;
  log: Logger;
  /** The shared-memory copy of the directory that the receiver thread answers FINDs from. */
  replica?: ReplicaWriter;
  /**
   * Asks the collector for a fresh membership now (an extra heartbeat), whose answer comes
   * back through noteMembership(): used when a chatD incarnation the shard does not know
   * asks to change the directory.
   */
  askMembership?: () => void;
  /** How long such a request waits for the collector to vouch for its sender (default 1500 ms). */
  vouchMs?: number;
}

/** Requests from unvouched chatD incarnations waiting for the collector's word, at most. */
const MAX_PARKED = 4096;

/** A request parked until the collector says whether its sender is a live chatD. */
interface Parked {
  readonly rec: InboundRecord;
  readonly reply: ReplyFn;
  readonly at: number;
}

/** How many removals a shard remembers so that a late SYNC cannot revive them. */
const MAX_TOMBSTONES = 65_536;

/**
 * One channelD shard: answers LOGIN, MOVE, REMOVE, FIND, PURGE and SYNC for the names that
 * hash to it, on its own mtype.
 *
 * A shard starts `recovering`: it asks the collector which chatDs are alive (HELLO); the
 * collector has them resend their sessions (RESYNC, then SYNC ... `last`). Until every chatD
 * of the collector's latest answer has done so, the shard answers lookups and logins
 * UNAVAILABLE rather than "offline" or "free", which could be wrong for a character still
 * connected: a shard never answers from a directory it does not know to be complete. It keeps
 * asking (HELLO every `rehelloMs`, each answer re-sending the RESYNCs and dropping chatDs that
 * died meanwhile) for as long as it takes; with the collector down it waits for it to return.
 */
export class ShardServer {
  readonly directory: Directory;
  state: 'recovering' | 'live' = 'recovering';
  /** chatDs ("mtype:incarnation") of the collector's latest HELLO answer; undefined until one came. */
  private expected: Set<string> | undefined;
  /** chatDs whose SYNC ... last arrived. */
  private readonly synced = new Set<string>();
  /** Removed sessions ("owner:ownerInc:session"), so that a SYNC crossing the REMOVE cannot revive them. */
  private readonly tombstones = new Set<string>();
  private recoveryTimer: NodeJS.Timeout | undefined;
  private helloTimer: NodeJS.Timeout | undefined;
  private startedAt = 0;
  /**
   * Records of this thread (the receiver thread's inline FINDs are counted in the replica's
   * control block: metrics() adds them). logins: LOGINs recorded; logouts: entries REMOVEd.
   * parked / unvouched / refusedPurges: see admit() and purgeAllowed().
   */
  readonly counters = { requests: 0, finds: 0, logins: 0, logouts: 0, badRequests: 0, wrongShard: 0, unavailable: 0, hellos: 0, parked: 0, unvouched: 0, refusedPurges: 0 };
  /**
   * chatD mtype -> its live incarnation, in the collector's word (HELLO answer, heartbeat
   * membership). Only these may change the directory (docs/reliability.md "Who may change the
   * directory"): a record claiming another incarnation waits for the collector's next word.
   */
  private readonly liveChatds = new Map<number, number>();
  /**
   * Whether the collector's heartbeat answer named the live chatDs yet. Until it has (the first
   * heartbeat is sent at start) and with a collector of an earlier version, which never names
   * them, nothing is checked: directory changes are taken from any chatD, as before.
   */
  private chatdsKnown = false;
  /** "mtype:incarnation" -> requests of that unvouched sender, in arrival order. */
  private readonly parked = new Map<string, Parked[]>();
  private parkedCount = 0;
  private parkTimer: NodeJS.Timeout | undefined;
  private readonly log: Logger;
  /** Where reply payloads are written (the endpoint copies them into the envelope at once). */
  private readonly scratch = Buffer.allocUnsafe(MAX_FIND_REPLY_BYTES);

  constructor(
    private readonly endpoint: Endpoint,
    private readonly options: ShardServerOptions,
  ) {
    this.log = options.log;
    this.directory = new Directory(options.replica);
  }

  start(): void {
    this.endpoint.start((rec, reply) => this.onRecord(rec, reply));
    this.startedAt = Date.now();
    this.recoveryTimer = setInterval(() => {
      if (this.state !== 'recovering') return;
      this.log.warn(
        { waitingFor: this.waitingFor(), collectorAnswered: this.expected !== undefined, recoveringMs: Date.now() - this.startedAt },
        'still recovering: answering UNAVAILABLE until every live chatD has resynced',
      );
    }, this.options.recoveryMs);
    this.recoveryTimer.unref();
    this.sayHello();
  }

  /** Resolves once the shard serves lookups. */
  whenLive(): Promise<void> {
    if (this.state === 'live') return Promise.resolve();
    return new Promise((resolve) => this.liveWaiters.push(resolve));
  }
  private liveWaiters: (() => void)[] = [];

  /** chatDs still to resync (of the collector's latest answer). */
  waitingFor(): string[] {
    return this.expected ? [...this.expected].filter((c) => !this.synced.has(c)) : [];
  }

  private sayHello(): void {
    this.helloTimer = undefined;
    if (this.state !== 'recovering') return;
    this.counters.hellos++;
    const hello = encodePayload('hello', { shard: this.options.shard });
    this.endpoint.request(MTYPE_GC, Kind.HELLO, hello, 300).then(
      (reply) => {
        const r = reply.status === Status.OK ? decodePayload('helloReply', reply.payload) : undefined;
        if (!r) return this.scheduleHello(this.options.helloRetryMs ?? 100);
        if (this.state !== 'recovering') return;
        const first = this.expected === undefined;
        this.expected = new Set(r.chatds.map(([mtype, inc]) => `${mtype}:${inc}`));
        if (first) this.log.info({ chatds: r.chatds.length }, 'recovering: waiting for chatD resyncs');
        if (!this.maybeGoLive()) this.scheduleHello(this.options.rehelloMs ?? 500);
      },
      () => this.scheduleHello(this.options.helloRetryMs ?? 100),
    );
  }

  private scheduleHello(ms: number): void {
    if (this.state !== 'recovering' || this.helloTimer) return;
    this.helloTimer = setTimeout(() => this.sayHello(), ms);
    this.helloTimer.unref();
  }

  /** Live once the collector answered and every chatD it named has resynced. */
  private maybeGoLive(): boolean {
    if (this.state === 'live') return true;
    if (!this.expected) return false;
    for (const c of this.expected) if (!this.synced.has(c)) return false;
    this.goLive();
    return true;
  }

  private goLive(): void {
    if (this.state === 'live') return;
    this.state = 'live';
    this.options.replica?.setLive(true);
    if (this.recoveryTimer) clearInterval(this.recoveryTimer);
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.log.info({ entries: this.directory.size, chatds: this.synced.size, recoveringMs: Date.now() - this.startedAt }, 'shard live');
    for (const w of this.liveWaiters.splice(0)) w();
  }

  /** The shard's STATUS reply (also `pm2 trigger channeld status`). */
  status(): Record<string, unknown> {
    return {
      role: 'channeld',
      shard: this.options.shard,
      pid: process.pid,
      uptimeS: uptimeS(),
      state: this.state,
      waitingFor: this.waitingFor(),
      entries: this.directory.size,
      counters: { ...this.counters },
      ...(this.options.replica ? { receiverThread: replicaCounters(this.options.replica) } : {}),
      endpoint: { ...this.endpoint.counters },
      metrics: this.metrics(),
    };
  }

  /**
   * What the directory holds, counted (`pm2 trigger channeld dump-counts`): entries per
   * channel and per owner (chatD mtype:incarnation), removals remembered. One walk over the
   * directory: for an operator, not for a loop.
   */
  dumpCounts(): Record<string, unknown> {
    return {
      shard: this.options.shard,
      state: this.state,
      entries: this.directory.size,
      perChannel: this.directory.perChannel(),
      perOwner: Object.fromEntries(this.directory.owners()),
      tombstones: this.tombstones.size,
      replica: this.options.replica ? replicaCounters(this.options.replica) : undefined,
      counters: this.metrics().counters,
    };
  }

  /**
   * FINDs the receiver thread answered on its own, since start (0 without a replica). Its
   * counter is an Int32 slot that wraps after 2^32: read as uint32, and the change since the
   * last read added up here (reads come every second or so under PM2; one wrap between two
   * reads would take 2^32 finds).
   */
  inlineFinds(): number {
    const r = this.options.replica;
    if (!r) return 0;
    const raw = Atomics.load(r.views.control, R_FINDS) >>> 0;
    this.inlineTotal += (raw - this.inlineLast + 0x1_0000_0000) % 0x1_0000_0000;
    this.inlineLast = raw;
    return this.inlineTotal;
  }
  private inlineTotal = 0;
  private inlineLast = 0;
  private readonly requestRate = new RateMeter(() => this.counters.requests + this.inlineTotal);
  private readonly findRate = new RateMeter(() => this.counters.finds + this.inlineTotal);

  /** The figures of docs/operations.md ("Metrics"): STATUS's `metrics`, and PM2's. */
  metrics(): ProcessMetrics {
    const c = this.counters;
    const inline = this.inlineFinds();
    return {
      counters: { requests: c.requests + inline, finds: c.finds + inline, inlineFinds: inline, logins: c.logins, logouts: c.logouts, badRequests: c.badRequests, unavailable: c.unavailable },
      gauges: { entries: this.directory.size, live: this.state === 'live' ? 1 : 0 },
      rates: { requests: round1(this.requestRate.rate()), finds: round1(this.findRate.rate()) },
    };
  }

  private tombstone(key: string): void {
    this.tombstones.add(key);
    if (this.tombstones.size > MAX_TOMBSTONES) this.tombstones.delete(this.tombstones.values().next().value as string);
  }

  stop(): void {
    if (this.recoveryTimer) clearInterval(this.recoveryTimer);
    if (this.helloTimer) clearTimeout(this.helloTimer);
    if (this.parkTimer) clearInterval(this.parkTimer);
    this.parkTimer = undefined;
    for (const list of this.parked.values()) for (const p of list) p.reply(Status.UNAVAILABLE, EMPTY);
    this.parked.clear();
    this.parkedCount = 0;
  }

  /** The collector's heartbeat answer (its `chatds`, when it sends them). */
  noteMembership(m: { chatds?: readonly (readonly [number, number])[] }): void {
    if (m.chatds) this.noteChatds(m.chatds);
    else this.chatdsKnown = false; // a collector of an earlier version: the check cannot be made
  }

  private noteChatds(chatds: readonly (readonly [number, number])[]): void {
    this.liveChatds.clear();
    for (const [mtype, inc] of chatds) this.liveChatds.set(mtype, inc);
    this.chatdsKnown = true;
    this.settleParked(false);
  }

  /** Whether the collector vouches for this chatD incarnation (or never spoke of chatDs: an older collector). */
  private vouched(mtype: number, inc: number): boolean {
    return !this.chatdsKnown || this.liveChatds.get(mtype) === inc;
  }

  /**
   * Lets a request that changes the directory through only when its sender is a chatD the
   * collector vouches for; otherwise parks it (with any later request of the same sender, so
   * their order holds) and asks the collector. True when the caller may go on now.
   *
   * A chatD that just restarted is vouched for within one heartbeat round trip: the collector
   * admits it on its first heartbeat (sent before it asks anything of a shard) once its
   * predecessor is seen gone. A forged incarnation never is: its requests get UNAVAILABLE.
   */
  private admit(rec: InboundRecord, reply: ReplyFn): boolean {
    const id = `${rec.from}:${rec.fromIncarnation}`;
    const waiting = this.parked.get(id);
    if (!waiting && this.vouched(rec.from, rec.fromIncarnation)) return true;
    if (this.parkedCount >= MAX_PARKED) {
      this.counters.unvouched++;
      reply(Status.UNAVAILABLE, EMPTY);
      return false;
    }
    const p: Parked = { rec: { ...rec, payload: Buffer.from(rec.payload) }, reply, at: Date.now() };
    if (waiting) waiting.push(p);
    else this.parked.set(id, [p]);
    this.parkedCount++;
    this.counters.parked++;
    if (!this.parkTimer) {
      this.parkTimer = setInterval(() => this.settleParked(true), 100);
      this.parkTimer.unref();
    }
    this.ask(p.at);
    return false;
  }

  private lastAsk = 0;
  /** askMembership, at most every 50 ms (a flood of unvouched requests is one question). */
  private ask(now: number): void {
    if (now - this.lastAsk < 50) return;
    this.lastAsk = now;
    this.options.askMembership?.();
  }

  /** Runs the parked requests of senders now vouched for; refuses those that waited too long. */
  private settleParked(tick: boolean): void {
    if (this.parkedCount === 0) return;
    const now = Date.now();
    const vouchMs = this.options.vouchMs ?? 1500;
    for (const [id, list] of [...this.parked]) {
      const { from, fromIncarnation } = list[0]!.rec;
      if (this.vouched(from, fromIncarnation)) {
        this.parked.delete(id);
        this.parkedCount -= list.length;
        for (const p of list) this.run(p.rec, p.reply);
      } else if (now - list[0]!.at >= vouchMs) {
        this.parked.delete(id);
        this.parkedCount -= list.length;
        this.counters.unvouched += list.length;
        this.log.warn({ from, fromIncarnation, requests: list.length }, 'requests from a chatD incarnation the collector does not vouch for: refused (UNAVAILABLE)');
        for (const p of list) p.reply(Status.UNAVAILABLE, EMPTY);
      }
    }
    if (this.parkedCount === 0) {
      if (this.parkTimer) clearInterval(this.parkTimer);
      this.parkTimer = undefined;
    } else if (tick) {
      this.ask(now);
    }
  }

  private onRecord(rec: InboundRecord, reply: ReplyFn | undefined): void {
    if (!reply) return; // every shard record is a request; one-way ones have no business here
    this.counters.requests++;
    this.run(rec, reply);
  }

  private run(rec: InboundRecord, reply: ReplyFn): void {
    try {
      this.handle(rec, reply);
    } catch (err) {
      this.log.error({ err, kind: kindName(rec.kind) }, 'shard handler failed');
      reply(Status.INTERNAL, EMPTY);
    }
  }

  private decode<N extends PayloadName>(name: N, rec: InboundRecord, reply: ReplyFn): PayloadTypes[N] | undefined {
    const p = decodePayload(name, rec.payload);
    if (!p) {
      this.counters.badRequests++;
      reply(Status.BAD_REQUEST, EMPTY);
    }
    return p;
  }

  private mine(name: string, reply: ReplyFn): boolean {
    if (shardFor(name, this.options.shards) === this.options.shard) return true;
    // A sender with another CHANNELD_SHARDS: refuse rather than answer for names we don't own.
    this.counters.wrongShard++;
    reply(Status.BAD_REQUEST, EMPTY);
    return false;
  }

  /** LOGIN, MOVE and SYNC come from chatDs only. */
  private fromChatd(rec: InboundRecord, reply: ReplyFn): boolean {
    if (isChatdMtype(rec.from)) return true;
    this.counters.badRequests++;
    reply(Status.BAD_REQUEST, EMPTY);
    return false;
  }

  /**
   * Who may PURGE what: the collector, an incarnation that is dead (never the live one: the
   * collector's word on who is live may be a heartbeat behind, so that is UNAVAILABLE and it
   * retries); a chatD, its own earlier incarnations (`ownerInc` 0, `keep` its own), once vouched for.
   */
  private purgeAllowed(rec: InboundRecord, p: { owner: number; ownerInc: number; keep?: number }, reply: ReplyFn): boolean {
    if (rec.from === MTYPE_GC && p.ownerInc !== 0) {
      if (this.liveChatds.get(p.owner) !== p.ownerInc) return true;
      this.counters.refusedPurges++;
      this.ask(Date.now());
      reply(Status.UNAVAILABLE, EMPTY);
      return false;
    }
    if (rec.from === p.owner && p.ownerInc === 0 && p.keep === rec.fromIncarnation) return this.admit(rec, reply);
    this.counters.refusedPurges++;
    this.counters.badRequests++;
    reply(Status.BAD_REQUEST, EMPTY);
    return false;
  }

  private unavailable(reply: ReplyFn): boolean {
    if (this.state === 'live') return false;
    this.counters.unavailable++;
    reply(Status.UNAVAILABLE, EMPTY);
    return true;
  }

  private handle(rec: InboundRecord, reply: ReplyFn): void {
    const d = this.directory;
    switch (rec.kind) {
      case Kind.FIND: {
        // The hot record: a binary payload (the directory key), no JSON (cluster/records.ts).
        this.counters.finds++;
        const p = rec.payload;
        const key = readKey(p, 0, p.length);
        if (key === undefined) {
          this.counters.badRequests++;
          return reply(Status.BAD_REQUEST, EMPTY);
        }
        if (shardOfKey(key, this.options.shards) !== this.options.shard) {
          this.counters.wrongShard++;
          return reply(Status.BAD_REQUEST, EMPTY);
        }
        if (this.unavailable(reply)) return;
        const e = d.findKey(key);
        if (!e) return reply(Status.NOT_FOUND, EMPTY);
        return reply(Status.OK, this.scratch.subarray(0, writeFindReply(this.scratch, e)));
      }
      case Kind.LOGIN: {
        const p = this.decode('login', rec, reply);
        if (!p || !this.mine(p.name, reply) || this.unavailable(reply) || !this.fromChatd(rec, reply) || !this.admit(rec, reply)) return;
        const outcome = d.login(p.name, p.channel, rec.from, rec.fromIncarnation, p.session);
        if (outcome === 'ok') this.counters.logins++;
        return reply(outcome === 'ok' ? Status.OK : Status.NAME_TAKEN, EMPTY);
      }
      case Kind.MOVE: {
        const p = this.decode('move', rec, reply);
        if (!p || !this.mine(p.name, reply) || this.unavailable(reply) || !this.fromChatd(rec, reply) || !this.admit(rec, reply)) return;
        const ok = d.move(p.name, p.channel, rec.from, rec.fromIncarnation, p.session);
        return reply(ok ? Status.OK : Status.NOT_FOUND, EMPTY);
      }
      case Kind.REMOVE: {
        const p = this.decode('remove', rec, reply);
        if (!p || !this.mine(p.name, reply)) return;
        // From the collector (a session's end), or from the owner itself (its fallback).
        if (rec.from !== MTYPE_GC && (rec.from !== p.owner || rec.fromIncarnation !== p.ownerInc)) {
          this.counters.badRequests++;
          return reply(Status.BAD_REQUEST, EMPTY);
        }
        if (rec.from !== MTYPE_GC && !this.admit(rec, reply)) return;
        const removed = d.remove(p.name, p.owner, p.ownerInc, p.session);
        if (removed) this.counters.logouts++;
        // Kept after going live too: a chatD may resync a live shard (it saw its incarnation
        // change), and a session ended meanwhile must not come back. Session ids are never
        // reused by one chatD incarnation, so a tombstone cannot hide a later login.
        this.tombstone(`${p.owner}:${p.ownerInc}:${p.session}`);
        return reply(Status.OK, encodePayload('count', { count: removed ? 1 : 0 }));
      }
      case Kind.PURGE: {
        const p = this.decode('purge', rec, reply);
        if (!p || !this.purgeAllowed(rec, p, reply)) return;
        const count = d.purge(p.owner, p.ownerInc, p.keep ?? 0);
        if (count > 0) this.log.info({ owner: p.owner, ownerInc: p.ownerInc, count }, 'purged entries of a chatD incarnation');
        return reply(Status.OK, encodePayload('count', { count }));
      }
      case Kind.SYNC: {
        const p = this.decode('sync', rec, reply);
        if (!p || !this.fromChatd(rec, reply) || !this.admit(rec, reply)) return;
        let count = 0;
        let conflicts = 0;
        for (const [name, session, channel] of p.entries) {
          if (shardFor(name, this.options.shards) !== this.options.shard) continue;
          if (this.tombstones.has(`${rec.from}:${rec.fromIncarnation}:${session}`)) continue;
          if (d.login(name, channel, rec.from, rec.fromIncarnation, session) === 'ok') count++;
          else conflicts++;
        }
        if (p.last) {
          this.synced.add(`${rec.from}:${rec.fromIncarnation}`);
          if (this.state === 'recovering') this.maybeGoLive();
        }
        return reply(Status.OK, encodePayload('count', { count, conflicts }));
      }
      case Kind.STATUS:
        return reply(Status.OK, encodePayload('status', this.status()));
      default:
        this.counters.badRequests++;
        return reply(Status.BAD_REQUEST, EMPTY);
    }
  }
}

const round1 = (x: number): number => Math.round(x * 10) / 10;
