import { Kind, Status, kindName } from '../cluster/kinds';
import { EMPTY, decodePayload, encodePayload, type PayloadName, type PayloadTypes, type ViewPayload } from '../cluster/messages';
import type { InboundRecord } from '../ipc/envelope';
import type { Endpoint, ReplyFn } from '../ipc/endpoint';
import { MTYPE_GC, isChatdMtype } from '../ipc/mtypes';
import type { Logger } from '../log';
import { RateMeter, uptimeS, type ProcessMetrics } from '../runtime/metrics';
import { fnv1a32Range } from '../cluster/shard-for';
import { normalizeName } from '../cluster/names';
import { OwnershipView, bucketOfKey, memberRanges, membersFromRanges } from '../cluster/ownership';
import { MAX_FIND_REPLY_BYTES, leavingMark, readKey, writeFindReply } from '../cluster/records';
import { BucketStates, type Verdict } from './bucket-states';
import { Directory } from './directory';
import { R_BAD, R_DEFERRED, R_ENVELOPES, R_EXPIRED, R_FINDS, R_SEND_FAILED, type ReplicaWriter } from './directory-replica';

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
    deferred: Atomics.load(c, R_DEFERRED),
  };
}

export interface ShardServerOptions {
  shard: number;
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
  /**
   * How long a request routed by a later epoch than the shard's waits for the collector's
   * word (default 500 ms: the shard asks at once; below chatD's request timeout, so that the
   * client gets UNAVAILABLE, not TIMEOUT, when the collector is away).
   */
  aheadMs?: number;
  /** HOST_ID, named in HELLO (docs/multi-host.md); absent: the collector's host. */
  host?: string;
  /**
   * The collector answered a HELLO with FENCED: it declared this incarnation dead (another
   * host's shard, judged by silence) and will not take it back. The caller exits.
   */
  onFenced?: () => void;
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

/** FIND's payload: u32 membership epoch, then the directory key (docs/resharding.md). */
const FIND_EPOCH_BYTES = 4;

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
  /**
   * The membership epoch as this shard follows it (docs/resharding.md): which buckets it
   * serves, which wait for their hand-over (every bucket, after a restart), and the verdict
   * for a request routed by some epoch. Its states are the replica's, read by the receiver thread.
   */
  readonly buckets: BucketStates;
  /** Requests routed by a later epoch than this shard's: they wait for the collector's word. */
  private readonly ahead: Parked[] = [];
  private aheadTimer: NodeJS.Timeout | undefined;
  /** Set by leave(): lookups, logins and moves get UNAVAILABLE with the leaving mark. */
  private leaving = false;
  /** Date.now() of the last record handled by this thread (leave() waits for a quiet spell). */
  private lastRecordAt = 0;
  /** chatDs that sent this shard requests (mtype → latest incarnation): leave() tells those vouched for. */
  private readonly chatds = new Map<number, number>();
  /** Removed sessions ("owner:ownerInc:session"), so that a SYNC crossing the REMOVE cannot revive them. */
  private readonly tombstones = new Set<string>();
  private recoveryTimer: NodeJS.Timeout | undefined;
  private helloTimer: NodeJS.Timeout | undefined;
  private startedAt = 0;
  /**
   * Records of this thread (the receiver thread's inline FINDs are counted in the replica's
   * control block: metrics() adds them). logins: LOGINs recorded; logouts: entries REMOVEd.
   * parked / unvouched / refusedPurges: see admit() and purgeAllowed(). leavingRefused: see leave().
   */
  readonly counters = {
    requests: 0, finds: 0, logins: 0, logouts: 0, badRequests: 0, wrongEpoch: 0, unavailable: 0, hellos: 0, parked: 0, unvouched: 0, refusedPurges: 0, leavingRefused: 0,
    /** Requests routed by a later epoch than ours, parked until we had it; those that waited in vain. */
    ahead: 0, aheadRefused: 0,
    /** Epochs adopted; entries dropped with buckets that moved away; entries a SYNC inserted (names handed over to us). */
    epochs: 0, dropped: 0, syncInserted: 0,
  };
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
    const replica = options.replica;
    this.buckets = replica ? new BucketStates(options.shard, replica.states, (e) => replica.setEpoch(e)) : new BucketStates(options.shard);
  }

  /**
   * 'live' once the shard holds a view and no bucket of it waits for its hand-over; 'leaving'
   * once leave() began (a graceful stop).
   */
  get state(): 'recovering' | 'live' | 'leaving' {
    if (this.leaving) return 'leaving';
    return this.buckets.ready ? 'live' : 'recovering';
  }

  /** What the heartbeat reports (docs/resharding.md): the view this shard is at, and whether it is complete. */
  report(): { view?: ViewPayload; ready?: boolean } {
    const v = this.buckets.view;
    return v ? { view: { epoch: v.epoch, members: memberRanges(v.members) }, ready: this.buckets.ready } : {};
  }

  start(): void {
    this.endpoint.start((rec, reply) => this.onRecord(rec, reply));
    this.startedAt = Date.now();
    this.recoveryTimer = setInterval(() => {
      if (this.buckets.ready) return;
      this.log.warn(
        { epoch: this.buckets.epoch, waitingBuckets: this.buckets.waiting, waitingFor: this.waitingFor(), recoveringMs: Date.now() - this.startedAt },
        'still recovering: answering UNAVAILABLE for waiting buckets until every live chatD has resynced',
      );
    }, this.options.recoveryMs);
    this.recoveryTimer.unref();
    this.sayHello();
  }

  /** Resolves once the shard serves lookups (the first time it is complete for its epoch). */
  whenLive(): Promise<void> {
    if (this.buckets.ready) return Promise.resolve();
    return new Promise((resolve) => this.liveWaiters.push(resolve));
  }
  private liveWaiters: (() => void)[] = [];

  /** chatDs the current hand-over still waits for (of the collector's latest answer at this epoch). */
  waitingFor(): string[] {
    return this.buckets.waitingFor();
  }

  private sayHello(): void {
    this.helloTimer = undefined;
    if (this.buckets.ready) return;
    this.counters.hellos++;
    const hello = encodePayload('hello', { shard: this.options.shard, ...(this.options.host !== undefined ? { host: this.options.host } : {}) });
    this.endpoint.request(MTYPE_GC, Kind.HELLO, hello, 300).then(
      (reply) => {
        if (reply.status === Status.FENCED) {
          this.log.error({ shard: this.options.shard }, 'the collector declared this shard incarnation dead (fenced): it stops serving');
          this.options.onFenced?.();
          return;
        }
        const r = reply.status === Status.OK ? decodePayload('helloReply', reply.payload) : undefined;
        // No view: a collector that has not decided one (or of an earlier version): ask again.
        if (!r || !r.view) return this.scheduleHello(this.options.helloRetryMs ?? 100);
        this.noteView(r.view);
        if (this.buckets.ready) return this.checkReady();
        // The chatDs to wait for count only from an answer at our epoch (one started since an
        // earlier epoch must be among them).
        if (r.view.epoch === this.buckets.epoch) {
          const first = this.buckets.waitingFor().length === 0;
          this.buckets.expect(r.chatds.map(([mtype, inc]) => `${mtype}:${inc}`));
          if (first) this.log.info({ epoch: this.buckets.epoch, chatds: r.chatds.length, waitingBuckets: this.buckets.waiting }, 'waiting for chatD resyncs');
        }
        if (!this.checkReady()) this.scheduleHello(this.options.rehelloMs ?? 500);
      },
      () => this.scheduleHello(this.options.helloRetryMs ?? 100),
    );
  }

  private scheduleHello(ms: number): void {
    if (this.buckets.ready || this.helloTimer || this.leaving) return;
    this.helloTimer = setTimeout(() => this.sayHello(), ms);
    this.helloTimer.unref();
  }

  /** Once complete for the epoch: the replica usable, waiters told. True when ready. */
  private checkReady(): boolean {
    if (!this.buckets.ready) return false;
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = undefined;
    if (!this.wasLive) {
      this.wasLive = true;
      if (!this.leaving) this.options.replica?.setLive(true); // leaving: FINDs stay with this thread
      this.log.info({ epoch: this.buckets.epoch, entries: this.directory.size, recoveringMs: Date.now() - this.startedAt }, 'shard live');
      for (const w of this.liveWaiters.splice(0)) w();
    } else {
      this.log.info({ epoch: this.buckets.epoch, entries: this.directory.size }, 'hand-over complete');
    }
    return true;
  }
  private wasLive = false;

  /**
   * A view from the collector (heartbeat answer, HELLO answer). A later epoch is adopted: the
   * entries of buckets that moved away are dropped, gained buckets wait for their hand-over
   * (HELLO again, so that the collector has the chatDs resend), parked requests run again.
   */
  private noteView(p: ViewPayload): void {
    if (p.epoch <= this.buckets.epoch) return;
    const members = membersFromRanges(p.members);
    if (!members) {
      this.counters.badRequests++;
      return;
    }
    const cur = this.buckets.view;
    const view = cur ? cur.next(p.epoch, members) : new OwnershipView(p.epoch, members);
    const change = this.buckets.adopt(view);
    if (!change) return;
    this.counters.epochs++;
    const me = this.options.shard;
    const dropped = change.lost.length > 0 ? this.directory.dropWhere((key) => view.ownerOfKey(key) !== me) : 0;
    this.counters.dropped += dropped;
    this.log.info({ epoch: view.epoch, previousEpoch: cur?.epoch, members: view.members, lostBuckets: change.lost.length, gainedBuckets: change.gained.length, dropped }, 'membership epoch adopted');
    if (!this.buckets.ready) this.scheduleHello(0);
    else this.checkReady();
    this.settleAhead(false);
  }

  /** The shard's STATUS reply (also `pm2 trigger channeld status`). */
  status(): Record<string, unknown> {
    return {
      role: 'channeld',
      shard: this.options.shard,
      pid: process.pid,
      uptimeS: uptimeS(),
      state: this.state,
      epoch: this.buckets.epoch,
      waitingBuckets: this.buckets.waiting,
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
      epoch: this.buckets.epoch,
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
    if (this.aheadTimer) clearInterval(this.aheadTimer);
    this.aheadTimer = undefined;
    for (const p of this.ahead.splice(0)) p.reply(Status.UNAVAILABLE, EMPTY);
    for (const list of this.parked.values()) for (const p of list) p.reply(Status.UNAVAILABLE, EMPTY);
    this.parked.clear();
    this.parkedCount = 0;
  }

  /** The collector's heartbeat answer (its `chatds`, when it sends them, and its view). */
  noteMembership(m: { chatds?: readonly (readonly [number, number])[]; view?: ViewPayload }): void {
    if (m.chatds) this.noteChatds(m.chatds);
    else this.chatdsKnown = false; // a collector of an earlier version: the check cannot be made
    if (m.view) this.noteView(m.view);
  }

  /**
   * A request routed by a later epoch than ours waits (in arrival order, bounded with the
   * unvouched ones) while we ask the collector; it runs once we have that epoch, and gets
   * UNAVAILABLE after aheadMs otherwise.
   */
  private parkAhead(rec: InboundRecord, reply: ReplyFn): void {
    this.counters.ahead++;
    if (this.parkedCount + this.ahead.length >= MAX_PARKED) {
      this.counters.aheadRefused++;
      return reply(Status.UNAVAILABLE, EMPTY);
    }
    const at = Date.now();
    this.ahead.push({ rec: { ...rec, payload: Buffer.from(rec.payload) }, reply, at });
    if (!this.aheadTimer) {
      this.aheadTimer = setInterval(() => this.settleAhead(true), 50);
      this.aheadTimer.unref();
    }
    this.ask(at);
  }

  /** Runs the parked requests again (a new epoch came), or refuses those that waited too long. */
  private settleAhead(tick: boolean): void {
    if (this.ahead.length === 0) return;
    const now = Date.now();
    const aheadMs = this.options.aheadMs ?? 500;
    const list = this.ahead.splice(0);
    for (const p of list) {
      if (now - p.at >= aheadMs) {
        this.counters.aheadRefused++;
        p.reply(Status.UNAVAILABLE, EMPTY);
      } else if (tick) {
        this.ahead.push(p);
      } else {
        this.run(p.rec, p.reply); // parks again if still ahead
      }
    }
    if (this.ahead.length === 0) {
      if (this.aheadTimer) clearInterval(this.aheadTimer);
      this.aheadTimer = undefined;
    } else if (tick) {
      this.ask(now);
    }
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

  /**
   * The first step of a graceful stop (docs/operations.md, "Reload"): every chatD that sent
   * this shard a request (or that the collector named) gets a one-way LEAVING, and from now on
   * FIND, LOGIN and MOVE get UNAVAILABLE with the leaving mark (cluster/records.ts). Either
   * way chatD treats this shard as down until the collector reports its successor, instead of
   * sending requests that would wait in a mailbox nobody reads (TIMEOUT). REMOVE, PURGE and
   * SYNC are still applied. Resolves once no record arrived for `quietMs` (chatDs have
   * stopped asking), or after `maxMs`; then the caller stops receiving and exits.
   */
  async leave(quietMs = 250, maxMs = 2000): Promise<void> {
    this.stop();
    this.leaving = true;
    this.leavingReply = leavingMark(this.endpoint.incarnation);
    this.options.replica?.setLive(false); // FINDs go to this thread, which answers them UNAVAILABLE
    // Told: the chatDs the collector names live, those of its HELLO answer, and those that sent
    // requests and are vouched for (a forged sender is not written to).
    const told = new Map(this.liveChatds);
    for (const c of this.buckets.expectedChatds()) {
      const [mtype, inc] = c.split(':').map(Number) as [number, number];
      if (!told.has(mtype)) told.set(mtype, inc);
    }
    for (const [mtype, inc] of this.chatds) if (!told.has(mtype) && this.vouched(mtype, inc)) told.set(mtype, inc);
    const notice = encodePayload('leaving', { shard: this.options.shard, shardInc: this.endpoint.incarnation });
    for (const [mtype, inc] of told) {
      try {
        this.endpoint.post(mtype, { kind: Kind.LEAVING, payload: notice }, inc, () => {});
      } catch {
        /* the endpoint is closed: nobody to tell */
      }
    }
    const started = Date.now();
    this.lastRecordAt = Math.max(this.lastRecordAt, started);
    for (;;) {
      const now = Date.now();
      if (now - this.lastRecordAt >= quietMs || now - started >= maxMs) break;
      await new Promise((r) => setTimeout(r, Math.min(50, quietMs)));
    }
    this.log.info({ leavingRefused: this.counters.leavingRefused, ms: Date.now() - started }, 'left: no more requests; stopping');
  }
  private leavingReply: Buffer = EMPTY;

  private onRecord(rec: InboundRecord, reply: ReplyFn | undefined): void {
    if (!reply) return; // every shard record is a request; one-way ones have no business here
    this.counters.requests++;
    if (isChatdMtype(rec.from) && this.chatds.get(rec.from) !== rec.fromIncarnation) {
      this.chatds.set(rec.from, rec.fromIncarnation);
    }
    if (this.leaving) this.lastRecordAt = Date.now();
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

  /** The u32 epoch of a WRONG_EPOCH reply (ours). */
  private readonly epochScratch = Buffer.alloc(4);

  /**
   * Applies the verdict for a request routed by `epoch` for a name in `bucket`
   * (docs/resharding.md): true when it is to be served; otherwise it was answered
   * (UNAVAILABLE while the bucket waits, WRONG_EPOCH when we cannot answer for it under that
   * epoch) or parked (the sender is ahead of us).
   */
  private served(verdict: Verdict, rec: InboundRecord, reply: ReplyFn): boolean {
    switch (verdict) {
      case 'serve':
        return true;
      case 'waiting':
        this.counters.unavailable++;
        reply(Status.UNAVAILABLE, EMPTY);
        return false;
      case 'ahead':
        this.parkAhead(rec, reply);
        return false;
      default:
        this.counters.wrongEpoch++;
        this.epochScratch.writeUInt32LE(this.buckets.epoch >>> 0, 0);
        reply(Status.WRONG_EPOCH, this.epochScratch);
        return false;
    }
  }

  private verdictOfName(epoch: number, name: string): Verdict {
    return this.buckets.verdict(epoch, bucketOfKey(normalizeName(name)));
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

  /** While leaving (leave()): UNAVAILABLE with the leaving mark, and true. */
  private refusedLeaving(reply: ReplyFn): boolean {
    if (!this.leaving) return false;
    this.counters.unavailable++;
    this.counters.leavingRefused++;
    reply(Status.UNAVAILABLE, this.leavingReply);
    return true;
  }

  private handle(rec: InboundRecord, reply: ReplyFn): void {
    const d = this.directory;
    switch (rec.kind) {
      case Kind.FIND: {
        // The hot record: a binary payload (the directory key), no JSON (cluster/records.ts).
        // u32 epoch, then the key.
        this.counters.finds++;
        const p = rec.payload;
        const key = p.length > FIND_EPOCH_BYTES ? readKey(p, FIND_EPOCH_BYTES, p.length) : undefined;
        if (key === undefined) {
          this.counters.badRequests++;
          return reply(Status.BAD_REQUEST, EMPTY);
        }
        if (this.refusedLeaving(reply)) return;
        const epoch = p.readUInt32LE(0);
        if (!this.served(this.buckets.verdictOfHash(epoch, fnv1a32Range(p, FIND_EPOCH_BYTES, p.length)), rec, reply)) return;
        const e = d.findKey(key);
        if (!e) return reply(Status.NOT_FOUND, EMPTY);
        return reply(Status.OK, this.scratch.subarray(0, writeFindReply(this.scratch, e)));
      }
      case Kind.LOGIN: {
        const p = this.decode('login', rec, reply);
        if (!p || this.refusedLeaving(reply) || !this.fromChatd(rec, reply) || !this.served(this.verdictOfName(p.epoch, p.name), rec, reply) || !this.admit(rec, reply)) return;
        const outcome = d.login(p.name, p.channel, rec.from, rec.fromIncarnation, p.session);
        if (outcome === 'ok') this.counters.logins++;
        return reply(outcome === 'ok' ? Status.OK : Status.NAME_TAKEN, EMPTY);
      }
      case Kind.MOVE: {
        const p = this.decode('move', rec, reply);
        if (!p || this.refusedLeaving(reply) || !this.fromChatd(rec, reply) || !this.served(this.verdictOfName(p.epoch, p.name), rec, reply) || !this.admit(rec, reply)) return;
        const ok = d.move(p.name, p.channel, rec.from, rec.fromIncarnation, p.session);
        return reply(ok ? Status.OK : Status.NOT_FOUND, EMPTY);
      }
      case Kind.REMOVE: {
        // No ownership check: an entry of that very session is removed wherever it is held
        // (during a hand-over the collector asks the old owner and the new one).
        const p = this.decode('remove', rec, reply);
        if (!p) return;
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
        // A SYNC is for one epoch: ours (a later one waits until we have it; an earlier one is
        // refused, and the chatD resends under the epoch it gets from the collector).
        if (p.epoch > this.buckets.epoch) return this.parkAhead(rec, reply);
        if (p.epoch < this.buckets.epoch) return void this.served('wrongEpoch', rec, reply);
        const view = this.buckets.view!;
        const me = this.options.shard;
        let count = 0;
        let conflicts = 0;
        for (const [name, session, channel] of p.entries) {
          const key = normalizeName(name);
          if (view.ownerOfKey(key) !== me) continue;
          if (this.tombstones.has(`${rec.from}:${rec.fromIncarnation}:${session}`)) continue;
          const had = d.findKey(key) !== undefined;
          if (d.login(name, channel, rec.from, rec.fromIncarnation, session) === 'ok') {
            count++;
            if (!had) this.counters.syncInserted++;
          } else conflicts++;
        }
        if (p.last && this.buckets.syncedBy(`${rec.from}:${rec.fromIncarnation}`, p.epoch)) this.checkReady();
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
