import { Kind, Status, kindName } from '../cluster/kinds';
import { EMPTY, decodePayload, encodePayload, type HeartbeatPayload } from '../cluster/messages';
import type { Config } from '../config';
import type { Endpoint, ReplyFn } from '../ipc/endpoint';
import { msLeft, type InboundRecord } from '../ipc/envelope';
import { MTYPE_GC, chatdMtype, shardMtype } from '../ipc/mtypes';
import type { Logger } from '../log';
import { shardFor } from '../cluster/shard-for';
import { ProcessTable, trackedRoleOf, type Death, type SightingResult } from './process-table';
import { QueueHygiene, type HygieneQueue, type HygieneTimings } from './queue-hygiene';

/** Timings of the collector; defaults derive from the configuration (docs/gc.md). */
export interface CollectorTimings {
  /** pid and silence checks run this often. */
  tickMs: number;
  /**
   * After its own start the collector does not yet know every live process: until this much
   * time has passed it answers HELLO and HEARTBEAT with UNAVAILABLE (the askers retry)
   * rather than give a partial membership. Default: deadAfterMs (every live process has
   * heartbeated by then).
   */
  warmupMs: number;
  /** SESSION_END: how long REMOVE is retried before the collector answers UNAVAILABLE. */
  removeBudgetMs: number;
  /** Timeout of one REMOVE or PURGE attempt. */
  attemptTimeoutMs: number;
  /** Pause after a failed REMOVE attempt. */
  removeRetryMs: number;
  /** Pause after a failed PURGE attempt. */
  purgeRetryMs: number;
  /** A tick this much later than due means the collector itself stalled: silence before it is forgiven. */
  stallMs: number;
  /** Queue hygiene: how often the queue is looked at. */
  hygieneEveryMs: number;
  /** Queue hygiene: fill ratio (max of bytes and message count over msg_qbytes) above which the queue counts as full. */
  highWater: number;
  /** Queue hygiene: how long the queue must stay above highWater before legacy replies are drained. */
  highWaterForMs: number;
}

export function defaultTimings(config: Pick<Config, 'deadAfterMs' | 'heartbeatMs'>): CollectorTimings {
  return {
    tickMs: 100,
    warmupMs: config.deadAfterMs,
    removeBudgetMs: 1000,
    attemptTimeoutMs: 250,
    removeRetryMs: 50,
    purgeRetryMs: 100,
    stallMs: Math.max(300, Math.floor(config.deadAfterMs / 2)),
    hygieneEveryMs: 1000,
    highWater: 0.5,
    highWaterForMs: 5000,
  };
}

export interface CollectorOptions {
  endpoint: Endpoint;
  config: Pick<Config, 'shards' | 'deadAfterMs' | 'heartbeatMs'>;
  log: Logger;
  /** Takes every message of `mtype` off the queue without blocking; returns how many. */
  drain: (mtype: number) => number;
  /** false only when the pid certainly does not exist (kill(pid, 0) said ESRCH). */
  liveness: (pid: number) => boolean;
  timings?: Partial<CollectorTimings>;
  now?: () => number;
  /**
   * The queue for hygiene (gc: the SysvQueue, which can peek with MSG_COPY). Absent: the
   * transport's stat and `drain`, without peeking (queue-hygiene.ts says what that misses).
   */
  hygieneQueue?: HygieneQueue;
  /** Hygiene timings beyond those of CollectorTimings (junk age, legacy reply age, bounds). */
  hygiene?: Partial<HygieneTimings>;
}

/** What a supervisor (PM2) told us: an app instance exited or is being stopped. */
export interface SupervisorEvent {
  readonly event: 'exit' | 'stop';
  readonly mtype: number;
  /** When known (PM2's exit events do not carry it). */
  readonly pid?: number;
  /** Wall-clock ms of the event. */
  readonly at?: number;
}

export interface CollectorCounters {
  heartbeats: number;
  hellos: number;
  resyncsPosted: number;
  sessionEnds: number;
  sessionEndsRemoved: number;
  sessionEndsShardDead: number;
  sessionEndsUnavailable: number;
  removeAttempts: number;
  deaths: number;
  chatdDeaths: number;
  shardDeaths: number;
  revived: number;
  purgeAttempts: number;
  purgedEntries: number;
  cleanupsDone: number;
  drainedMessages: number;
  legacyRepliesDrained: number;
  statusRequests: number;
  badRequests: number;
  warmupRefusals: number;
  stalls: number;
}

/** How one chatD cleanup went, shard by shard. */
export interface CleanupReport {
  readonly mtype: number;
  readonly incarnation: number;
  /** Entries removed, summed over shards. */
  readonly removed: number;
  /** shard index -> entries removed. */
  readonly perShard: Record<number, number>;
  /** Shards not purged because they are dead (their state went with them). */
  readonly skipped: number[];
  readonly drained: number;
  readonly ms: number;
}

const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    t.unref();
  });

/**
 * The garbage collector: knows which processes are alive (heartbeats, pids, PM2), answers
 * membership and shard-restart questions, removes ended sessions from their shard, and
 * cleans up after deaths (PURGE of a dead chatD's entries on every shard, draining of dead
 * mailboxes). It talks to the others only in messages over its Endpoint; the queue drain
 * and the pid check are injected, so tests run it over LocalTransport.
 */
export class Collector {
  readonly table: ProcessTable;
  readonly counters: CollectorCounters = {
    heartbeats: 0, hellos: 0, resyncsPosted: 0, sessionEnds: 0, sessionEndsRemoved: 0, sessionEndsShardDead: 0,
    sessionEndsUnavailable: 0, removeAttempts: 0, deaths: 0, chatdDeaths: 0, shardDeaths: 0, revived: 0,
    purgeAttempts: 0, purgedEntries: 0, cleanupsDone: 0, drainedMessages: 0, legacyRepliesDrained: 0,
    statusRequests: 0, badRequests: 0, warmupRefusals: 0, stalls: 0,
  };
  readonly timings: CollectorTimings;
  private readonly endpoint: Endpoint;
  private readonly log: Logger;
  private readonly shards: number;
  private readonly now: () => number;
  private readonly startedAt: number;
  private timer: NodeJS.Timeout | undefined;
  private lastTick = 0;
  /** Takes off the queue what no live process reads (queue-hygiene.ts). */
  readonly hygiene: QueueHygiene;
  private stopped = false;
  private readonly cleanups = new Set<Promise<CleanupReport>>();
  private readonly warned = new Set<string>();

  constructor(private readonly options: CollectorOptions) {
    this.endpoint = options.endpoint;
    this.log = options.log;
    this.shards = options.config.shards;
    this.now = options.now ?? Date.now;
    this.timings = { ...defaultTimings(options.config), ...options.timings };
    this.table = new ProcessTable({ deadAfterMs: options.config.deadAfterMs });
    this.startedAt = this.now();
    const t = this.timings;
    const hq: HygieneQueue = options.hygieneQueue ?? {
      stat: () => this.endpoint.transport.stat(),
      take: (mtype) => options.drain(mtype),
    };
    this.hygiene = new QueueHygiene(
      hq,
      {
        warming: () => this.warming,
        shards: this.shards,
        isLive: (mtype) => this.table.get(mtype) !== undefined,
        isVacant: (mtype) => this.table.vacancy(mtype) !== undefined,
        anyChatdLive: () => this.table.liveChatds().length > 0,
        pidAlive: (pid) => options.liveness(pid),
      },
      this.log,
      { everyMs: t.hygieneEveryMs, highWater: t.highWater, highWaterForMs: t.highWaterForMs, fillEveryMs: Math.max(t.tickMs, 250), ...options.hygiene },
      this.startedAt,
    );
  }

  /** Starts serving the collector's mtype and the periodic checks. */
  start(): void {
    this.endpoint.start((rec, reply) => this.onRecord(rec, reply));
    this.lastTick = this.now();
    this.timer = setInterval(() => this.tick(), this.timings.tickMs);
    this.timer.unref();
  }

  /** Stops the checks; retries in progress give up. The endpoint is the caller's to close. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** True until warmupMs after start: the table may still miss live processes. */
  get warming(): boolean {
    return this.now() - this.startedAt < this.timings.warmupMs;
  }

  /** Resolves when every cleanup started so far has finished (for tests and shutdown). */
  async settled(): Promise<CleanupReport[]> {
    return Promise.all([...this.cleanups]);
  }

  /** PM2 said an app instance exited (or is being stopped). */
  supervisorEvent(ev: SupervisorEvent): Death | undefined {
    const e = this.table.get(ev.mtype);
    if (!e) return undefined;
    const at = ev.at ?? this.now();
    // An incarnation first heard of after the event is the restarted one, not the one that exited.
    if (e.firstSeenAt > at) return undefined;
    if (ev.pid !== undefined && e.pid !== 0 && ev.pid !== e.pid) return undefined;
    const checkable = e.pid !== 0 && e.pidCheck;
    if (checkable && this.options.liveness(e.pid)) return undefined; // still there: the pid check will see it go
    if (!checkable && ev.event !== 'exit') return undefined; // a stop request is no proof; silence will tell
    const d = this.table.markDead(e.mtype, e.incarnation, 'pm2', this.now());
    if (d) this.onDeath(d);
    return d;
  }

  /** One round of the periodic checks (also called by tests). */
  tick(): void {
    if (this.stopped) return;
    const now = this.now();
    if (now - this.lastTick > this.timings.tickMs + this.timings.stallMs) {
      // We were not running: heartbeats may be waiting unread in our mailbox.
      this.counters.stalls++;
      this.table.forgiveSilenceBefore(now);
      this.log.warn({ lateMs: now - this.lastTick - this.timings.tickMs }, 'collector stalled; silence before now is forgiven');
    }
    this.lastTick = now;
    for (const d of this.table.checkPids(this.options.liveness, now)) this.onDeath(d);
    for (const d of this.table.checkSilence(now)) this.onDeath(d);
    // Due sweeps, and at once when the queue is over high water (by bytes or by count).
    this.hygieneCheck(now);
  }

  /** The collector's status: counters, process table, queue figures. */
  status(): Record<string, unknown> {
    let queue: unknown;
    try {
      queue = this.endpoint.transport.stat();
    } catch (err) {
      queue = { error: (err as Error).message };
    }
    const now = this.now();
    return {
      role: 'gc',
      pid: process.pid,
      incarnation: this.endpoint.incarnation,
      uptimeMs: now - this.startedAt,
      warming: this.warming,
      shards: this.shards,
      counters: { ...this.counters },
      processes: this.table.live().map((e) => ({
        mtype: e.mtype, role: e.role, index: e.index, incarnation: e.incarnation, pid: e.pid,
        pidCheck: e.pidCheck, ageMs: now - e.firstSeenAt, silentMs: now - e.lastSeenAt,
      })),
      deaths: this.table.deaths().slice(-16).map((d) => ({
        mtype: d.mtype, role: d.role, incarnation: d.incarnation, pid: d.pid, reason: d.reason, agoMs: now - d.at,
      })),
      vacant: this.table.vacantMtypes(),
      cleanupsInProgress: this.cleanups.size,
      queue,
      hygiene: { ...this.hygiene.counters, byClass: { ...this.hygiene.counters.byClass } },
      transport: this.endpoint.transport.counters(),
      endpoint: { ...this.endpoint.counters, pending: this.endpoint.pendingRequests },
    };
  }

  // ---- inbound records ----

  private onRecord(rec: InboundRecord, reply: ReplyFn | undefined): void {
    if (this.stopped) return;
    try {
      if (rec.kind !== Kind.HEARTBEAT) this.noteSighting(this.table.sighting(rec.from, rec.fromIncarnation, this.now()));
      if (!reply) return; // the collector takes no one-way records
      switch (rec.kind) {
        case Kind.HEARTBEAT:
          return this.onHeartbeat(rec, reply);
        case Kind.HELLO:
          return this.onHello(rec, reply);
        case Kind.SESSION_END:
          this.onSessionEnd(rec, reply).catch((err: unknown) => {
            this.log.error({ err }, 'session end failed');
            reply(Status.INTERNAL, EMPTY);
          });
          return;
        case Kind.STATUS:
          this.counters.statusRequests++;
          return reply(Status.OK, this.encodeStatus());
        default:
          return this.badRequest(rec, reply, 'unexpected kind');
      }
    } catch (err) {
      this.log.error({ err, kind: kindName(rec.kind), from: rec.from }, 'collector handler failed');
      reply?.(Status.INTERNAL, EMPTY);
    }
  }

  private badRequest(rec: InboundRecord, reply: ReplyFn, why: string): void {
    this.counters.badRequests++;
    this.log.debug({ kind: kindName(rec.kind), from: rec.from, why }, 'bad request');
    reply(Status.BAD_REQUEST, EMPTY);
  }

  private noteSighting(r: SightingResult): void {
    if (r.replaced) this.onDeath(r.replaced);
  }

  private onHeartbeat(rec: InboundRecord, reply: ReplyFn): void {
    const p = decodePayload('heartbeat', rec.payload);
    if (!p) return this.badRequest(rec, reply, 'bad heartbeat payload');
    const expected = expectedMtype(p);
    if (expected !== rec.from) return this.badRequest(rec, reply, `heartbeat of ${p.role} ${p.index} from mtype ${rec.from}`);
    this.counters.heartbeats++;
    if (p.role === 'gc') {
      this.warnOnce(`gc:${rec.fromIncarnation}`, { incarnation: rec.fromIncarnation, pid: p.pid }, 'another collector is heartbeating on the gc mtype; only one may run per queue');
    } else {
      const now = this.now();
      const r = this.table.heartbeat(rec.from, rec.fromIncarnation, p.pid, now);
      this.noteSighting(r);
      if (r.entry && r.entry.heartbeats === 1) this.checkPidVisible(r.entry.mtype, p.pid);
      if (r.fromDead) this.maybeRevive(rec.from, rec.fromIncarnation, p.pid);
    }
    if (this.warming) {
      this.counters.warmupRefusals++;
      return reply(Status.UNAVAILABLE, EMPTY);
    }
    reply(Status.OK, encodePayload('membership', { shards: this.table.liveShards() }));
  }

  /** A pid that does not exist from here although its process just spoke: another pid namespace. */
  private checkPidVisible(mtype: number, pid: number): void {
    if (this.options.liveness(pid)) return;
    const e = this.table.get(mtype);
    if (!e) return;
    e.pidCheck = false;
    this.warnOnce(`pid:${mtype}:${e.incarnation}`, { mtype, pid }, 'heartbeat pid not visible from the collector; liveness of this process by heartbeats and PM2 only');
  }

  /** Heartbeats from an incarnation declared dead: take it back if it is really there. */
  private maybeRevive(mtype: number, incarnation: number, pid: number): void {
    if (!this.options.liveness(pid)) return; // a stale heartbeat of a process that is gone
    const entry = this.table.revive(mtype, incarnation, pid, this.now());
    if (!entry) {
      this.warnOnce(`stale:${mtype}:${incarnation}`, { mtype, incarnation, pid }, 'heartbeat from an incarnation that a newer one replaced');
      return;
    }
    this.counters.revived++;
    this.log.warn({ mtype, role: entry.role, incarnation, pid }, 'process declared dead is alive; taken back');
    if (entry.role === 'chatd') {
      // Its entries were purged: have it resend its sessions to every live shard.
      for (const [shard, shardInc] of this.table.liveShards()) this.postResync(mtype, incarnation, shard, shardInc);
    }
  }

  private onHello(rec: InboundRecord, reply: ReplyFn): void {
    const p = decodePayload('hello', rec.payload);
    if (!p) return this.badRequest(rec, reply, 'bad hello payload');
    if (rec.from !== shardMtype(p.shard)) return this.badRequest(rec, reply, `hello of shard ${p.shard} from mtype ${rec.from}`);
    this.counters.hellos++;
    if (this.warming) {
      this.counters.warmupRefusals++;
      return reply(Status.UNAVAILABLE, EMPTY);
    }
    const chatds = this.table.liveChatds();
    reply(Status.OK, encodePayload('helloReply', { chatds }));
    for (const [mtype, inc] of chatds) this.postResync(mtype, inc, p.shard, rec.fromIncarnation);
    this.log.info({ shard: p.shard, shardInc: rec.fromIncarnation, chatds: chatds.length }, 'shard hello: chatDs asked to resync');
  }

  private postResync(chatd: number, chatdInc: number, shard: number, shardInc: number): void {
    try {
      this.endpoint.post(chatd, { kind: Kind.RESYNC, payload: encodePayload('resync', { shard, shardInc }) }, chatdInc, (err) =>
        this.log.warn({ err, chatd, shard }, 'resync could not be sent'),
      );
      this.counters.resyncsPosted++;
    } catch (err) {
      this.log.warn({ err, chatd, shard }, 'resync could not be sent');
    }
  }

  private async onSessionEnd(rec: InboundRecord, reply: ReplyFn): Promise<void> {
    const p = decodePayload('sessionEnd', rec.payload);
    if (!p) return this.badRequest(rec, reply, 'bad sessionEnd payload');
    if (trackedRoleOf(rec.from)?.role !== 'chatd') return this.badRequest(rec, reply, `sessionEnd from mtype ${rec.from}`);
    this.counters.sessionEnds++;
    const shard = shardFor(p.name, this.shards);
    const mtype = shardMtype(shard);
    const t = this.timings;
    const start = this.now();
    // Answer while the asker still listens: within its deadline, and within our own budget.
    const budget = Math.min(t.removeBudgetMs, msLeft(rec.deadline) - 20);
    const payload = encodePayload('remove', { name: p.name, session: p.session, owner: rec.from, ownerInc: rec.fromIncarnation });
    for (;;) {
      if (this.stopped) return;
      if (this.table.vacancy(mtype)) {
        // A restarted shard is rebuilt from chatD's live sessions, which no longer include this one.
        this.counters.sessionEndsShardDead++;
        return reply(Status.OK, EMPTY);
      }
      const left = budget - (this.now() - start);
      if (left <= 0) break;
      this.counters.removeAttempts++;
      try {
        const r = await this.endpoint.request(mtype, Kind.REMOVE, payload, Math.min(t.attemptTimeoutMs, left));
        if (r.status === Status.OK) {
          this.counters.sessionEndsRemoved++;
          return reply(Status.OK, EMPTY);
        }
        if (r.status === Status.BAD_REQUEST) {
          this.log.warn({ shard, status: r.status }, 'shard refused REMOVE (CHANNELD_SHARDS differs?)');
          break;
        }
      } catch {
        // TIMEOUT or UNAVAILABLE: retry within the budget.
      }
      if (budget - (this.now() - start) <= t.removeRetryMs) break;
      await sleep(t.removeRetryMs);
    }
    if (this.stopped) return;
    this.counters.sessionEndsUnavailable++;
    this.log.debug({ shard, ms: this.now() - start }, 'session end: shard did not remove in time; chatD removes directly');
    reply(Status.UNAVAILABLE, EMPTY);
  }

  private encodeStatus(): Buffer {
    const s = this.status();
    let body = encodePayload('status', s);
    // One record must fit one message (msgmax 8192 by default): shed detail before failing.
    if (body.byteLength > 6000) body = encodePayload('status', { ...s, deaths: undefined, processes: this.table.live().length });
    return body;
  }

  // ---- deaths ----

  private onDeath(d: Death): void {
    this.counters.deaths++;
    if (d.role === 'chatd') this.counters.chatdDeaths++;
    else this.counters.shardDeaths++;
    this.log.info(
      { mtype: d.mtype, role: d.role, index: d.index, incarnation: d.incarnation, pid: d.pid, reason: d.reason, silentMs: d.at - d.lastSeenAt, successor: d.successor },
      'process died',
    );
    const drained = d.successor === undefined ? this.drain(d.mtype) : 0;
    if (d.role === 'chatd') {
      const p = this.purgeEverywhere(d, drained).catch((err: unknown): CleanupReport => {
        this.log.error({ err, mtype: d.mtype, incarnation: d.incarnation }, 'cleanup failed');
        return { mtype: d.mtype, incarnation: d.incarnation, removed: 0, perShard: {}, skipped: [], drained, ms: 0 };
      });
      this.cleanups.add(p);
      void p.then(() => this.cleanups.delete(p));
    } else {
      this.counters.cleanupsDone++;
      this.log.info({ mtype: d.mtype, role: d.role, index: d.index, incarnation: d.incarnation, drained }, 'cleanup done');
    }
  }

  /** Drains a mailbox; never throws (the queue may be gone). */
  private drain(mtype: number): number {
    try {
      const n = this.options.drain(mtype);
      this.counters.drainedMessages += n;
      return n;
    } catch (err) {
      this.log.warn({ err, mtype }, 'drain failed');
      return 0;
    }
  }

  private async purgeEverywhere(d: Death, drained: number): Promise<CleanupReport> {
    const start = this.now();
    const results = await Promise.all(Array.from({ length: this.shards }, (_, shard) => this.purgeShard(d, shard)));
    const perShard: Record<number, number> = {};
    const skipped: number[] = [];
    let removed = 0;
    results.forEach((count, shard) => {
      if (count === undefined) skipped.push(shard);
      else {
        perShard[shard] = count;
        removed += count;
      }
    });
    const report: CleanupReport = { mtype: d.mtype, incarnation: d.incarnation, removed, perShard, skipped, drained, ms: this.now() - start };
    if (this.stopped) return report;
    this.counters.cleanupsDone++;
    this.counters.purgedEntries += removed;
    this.log.info({ ...report, role: d.role, index: d.index }, 'cleanup done');
    return report;
  }

  /** PURGEs one shard until it answers; undefined when the shard is not live (then its state is gone anyway). */
  private async purgeShard(d: Death, shard: number): Promise<number | undefined> {
    const mtype = shardMtype(shard);
    const payload = encodePayload('purge', { owner: d.mtype, ownerInc: d.incarnation });
    for (;;) {
      if (this.stopped || !this.mayBeLive(mtype)) return undefined;
      this.counters.purgeAttempts++;
      try {
        const r = await this.endpoint.request(mtype, Kind.PURGE, payload, this.timings.attemptTimeoutMs);
        if (r.status === Status.OK) return decodePayload('count', r.payload)?.count ?? 0;
        if (r.status === Status.BAD_REQUEST) {
          this.log.warn({ shard, owner: d.mtype }, 'shard refused PURGE');
          return undefined;
        }
      } catch {
        // TIMEOUT or UNAVAILABLE: retry while the shard may be alive.
      }
      await sleep(this.timings.purgeRetryMs);
    }
  }

  /** A shard mtype that is live, or unknown while we are still learning who is. */
  private mayBeLive(mtype: number): boolean {
    if (this.table.get(mtype)) return true;
    if (this.table.vacancy(mtype)) return false;
    return this.warming;
  }

  // ---- queue hygiene ----

  private hygieneCheck(now: number): void {
    const before = this.hygiene.counters.drained;
    const legacyBefore = this.hygiene.counters.byClass.legacyReply;
    try {
      this.hygiene.check(now);
    } catch (err) {
      this.log.warn({ err }, 'queue hygiene failed');
    }
    this.counters.drainedMessages += this.hygiene.counters.drained - before;
    this.counters.legacyRepliesDrained += this.hygiene.counters.byClass.legacyReply - legacyBefore;
  }

  private warnOnce(key: string, fields: Record<string, unknown>, msg: string): void {
    if (this.warned.has(key)) return;
    if (this.warned.size > 1000) this.warned.clear();
    this.warned.add(key);
    this.log.warn(fields, msg);
  }
}

/** The mtype a heartbeat's role and index stand for. */
export function expectedMtype(p: HeartbeatPayload): number | undefined {
  try {
    if (p.role === 'gc') return MTYPE_GC;
    if (p.role === 'channeld') return shardMtype(p.index);
    return chatdMtype(p.index);
  } catch {
    return undefined;
  }
}
