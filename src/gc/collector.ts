import { Kind, Status, kindName } from '../cluster/kinds';
import { EMPTY, encodePayload } from '../cluster/messages';
import type { Config } from '../config';
import type { Endpoint, ReplyFn } from '../ipc/endpoint';
import type { InboundRecord } from '../ipc/envelope';
import type { Logger } from '../log';
import { ownerOf, shardMtype } from '../ipc/mtypes';
import { queueFill } from '../ipc/queue-fill';
import type { QueueStat } from '../ipc/transport';
import { uptimeS, type ProcessMetrics } from '../runtime/metrics';
import { DeathCleanup, type CleanupReport } from './death-cleanup';
import { EpochKeeper, type LiveProcess } from './epochs';
import { defaultTimings, newCounters, sleep, type CollectorCounters, type CollectorTimings, type GcContext } from './gc-context';
import { Membership, type SupervisorEvent } from './membership';
import { ProcessTable, type Death } from './process-table';
import { LegacyExpiry } from './legacy-expiry';
import { QueueHygiene, type HygieneQueue, type HygieneTimings } from './queue-hygiene';
import { SessionCleanup } from './session-cleanup';

export { defaultTimings, type CollectorCounters, type CollectorTimings } from './gc-context';
export { expectedMtype, type SupervisorEvent } from './membership';
export type { CleanupReport } from './death-cleanup';

/** The kinds the collector serves; any other record is counted and ignored. */
const GC_KINDS: ReadonlySet<number> = new Set([Kind.HEARTBEAT, Kind.HELLO, Kind.SESSION_END, Kind.STATUS]);

export interface CollectorOptions {
  endpoint: Endpoint;
  config: Pick<Config, 'shards' | 'deadAfterMs' | 'heartbeatMs'> & Partial<Pick<Config, 'shardGoneMs' | 'reshardQuietMs' | 'hostId'>>;
  log: Logger;
  /** Takes every message of `mtype` off the queue without blocking; returns how many. */
  drain: (mtype: number) => number;
  /**
   * false only when the pid certainly does not exist (kill(pid, 0) said ESRCH). Asked only
   * about processes of this host (config.hostId): another host's pid is never checked here.
   */
  liveness: (pid: number) => boolean;
  /**
   * Whether the collector's own transport is connected (NATS); absent: always. While it is
   * not, nobody's heartbeats can arrive, so silence counts for nobody until DEAD_AFTER_MS
   * after it is back (a NATS outage is not every remote process dying).
   */
  connected?: () => boolean;
  timings?: Partial<CollectorTimings>;
  now?: () => number;
  /**
   * One non-blocking receive of `mtype`, for legacy reply expiry (legacy-expiry.ts), the one
   * owner of mtype 2. Without it and `putBack` nothing expires legacy replies: queue hygiene
   * never takes mtype 2 (gc/main.ts always passes both).
   */
  takeOne?: (mtype: number) => Buffer | null;
  /** Sends without blocking (puts a young legacy reply back); false when the queue is full. */
  putBack?: (mtype: number, body: Buffer) => boolean;
  /**
   * The queue for hygiene (gc: the SysvQueue, which can peek with MSG_COPY). Absent: the
   * transport's stat and `drain`, without peeking (queue-hygiene.ts says what that misses).
   */
  hygieneQueue?: HygieneQueue;
  /** Hygiene timings beyond those of CollectorTimings (junk age, bounds). */
  hygiene?: Partial<HygieneTimings>;
}

/**
 * The garbage collector: knows which processes are alive (heartbeats, pids, PM2), answers
 * membership and shard-restart questions, removes ended sessions from their shard, and
 * cleans up after deaths (PURGE of a dead chatD's entries on every shard, draining of dead
 * mailboxes). It talks to the others only in messages over its Endpoint; the queue drain
 * and the pid check are injected, so tests run it over LocalTransport.
 *
 * This class wires the parts together and dispatches records: `Membership` (heartbeats,
 * HELLO, PM2 events), `SessionCleanup` (SESSION_END), `DeathCleanup` (PURGE and drains after
 * a death), `LegacyExpiry` (legacy replies, mtype 2, by age and fill) and `QueueHygiene`
 * (every other mtype no live process owns, by age and fill; never mtype 2).
 */
export class Collector {
  readonly table: ProcessTable;
  /** The membership epoch the collector decides and publishes (docs/resharding.md). */
  readonly epochs: EpochKeeper;
  readonly counters: CollectorCounters = newCounters();
  readonly timings: CollectorTimings;
  private readonly endpoint: Endpoint;
  private readonly log: Logger;
  private readonly shards: number;
  private readonly now: () => number;
  private readonly startedAt: number;
  private timer: NodeJS.Timeout | undefined;
  private lastTick = 0;
  private stopped = false;
  private readonly warned = new Set<string>();
  private readonly ctx: GcContext;
  private readonly membership: Membership;
  private readonly deaths: DeathCleanup;
  private readonly sessionCleanup: SessionCleanup;
  private readonly hygiene: QueueHygiene;
  private readonly legacyExpiry: LegacyExpiry | undefined;

  constructor(private readonly options: CollectorOptions) {
    this.endpoint = options.endpoint;
    this.log = options.log;
    this.shards = options.config.shards;
    this.now = options.now ?? Date.now;
    // A heartbeat past its deadline is looked at rather than dropped: one from another host
    // whose clock is behind is answered, so that it can measure its offset (membership.ts).
    this.endpoint.deliverExpired([Kind.HEARTBEAT]);
    this.timings = { ...defaultTimings(options.config), ...options.timings };
    this.table = new ProcessTable({ deadAfterMs: options.config.deadAfterMs, ...(options.config.hostId !== undefined ? { localHost: options.config.hostId } : {}) });
    this.epochs = new EpochKeeper(this.shards, { goneMs: options.config.shardGoneMs ?? 5000, quietMs: options.config.reshardQuietMs ?? 1000 });
    this.startedAt = this.now();
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    this.ctx = {
      endpoint: this.endpoint,
      log: this.log,
      table: this.table,
      epochs: this.epochs,
      ensureView: () => {
        if (!this.epochs.view) this.epochTick(this.now());
      },
      counters: this.counters,
      timings: this.timings,
      shards: this.shards,
      now: this.now,
      liveness: options.liveness,
      drain: (mtype) => this.drain(mtype),
      get stopped() {
        return self.stopped;
      },
      get warming() {
        return self.warming;
      },
      warnOnce: (key, fields, msg) => this.warnOnce(key, fields, msg),
    };
    const bad = (rec: InboundRecord, reply: ReplyFn, why: string): void => this.badRequest(rec, reply, why);
    this.deaths = new DeathCleanup(this.ctx);
    this.membership = new Membership(this.ctx, (d) => this.deaths.onDeath(d), bad);
    this.sessionCleanup = new SessionCleanup(this.ctx, bad);
    const { takeOne, putBack } = options;
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
        isMember: (shard) => this.epochs.view?.isMember(shard) ?? shard < this.shards,
        isLive: (mtype) => this.table.get(mtype) !== undefined,
        // Vacancies of this host's processes only (another host's process had no mailbox here).
        isVacant: (mtype) => this.table.vacancy(mtype)?.local === true,
        isRemote: (mtype) => {
          const holder = this.table.get(mtype) ?? this.table.vacancy(mtype);
          return holder !== undefined && !holder.local;
        },
        anyChatdLive: () => this.table.liveChatds().length > 0,
        pidAlive: (pid) => options.liveness(pid),
      },
      this.log,
      { everyMs: t.hygieneEveryMs, highWater: t.highWater, fillEveryMs: Math.max(t.tickMs, 250), ...options.hygiene },
      this.startedAt,
    );
    this.legacyExpiry = takeOne && putBack ? new LegacyExpiry(this.ctx, { takeOne, putBack, stat: () => hq.stat(), everyMs: t.legacyEveryMs, ttlMs: t.legacyTtlMs, fill: t.legacyFill }) : undefined;
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
    return this.deaths.settled();
  }

  /** PM2 said an app instance exited (or is being stopped). */
  supervisorEvent(ev: SupervisorEvent): Death | undefined {
    return this.membership.supervisorEvent(ev);
  }

  /**
   * PM2 no longer lists shard `index` (deleted by `pm2 scale` down): it leaves the membership
   * as soon as it is not live, without waiting SHARD_GONE_MS (docs/resharding.md).
   */
  shardDeparted(index: number): void {
    // This host's PM2 speaks for this host's shards only (docs/multi-host.md): an index held,
    // or last held, by another host's process is not the instance PM2 deleted here.
    const holder = this.table.get(shardMtype(index)) ?? this.table.vacancy(shardMtype(index));
    if (holder && !holder.local) {
      this.warnOnce(`departed-remote:${index}:${holder.incarnation}`, { shard: index, host: holder.host }, 'PM2 deleted a shard instance whose index another host holds: ignored');
      return;
    }
    this.epochs.departed(index);
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
    if (this.options.connected && !this.options.connected()) {
      // Cut off ourselves (NATS down): no heartbeat can reach us. Silence counts again only
      // DEAD_AFTER_MS after we are back, time for every process to reconnect and beat.
      this.counters.disconnectedTicks++;
      this.table.forgiveSilenceBefore(now + this.options.config.deadAfterMs);
    }
    for (const d of this.table.checkPids(this.options.liveness, now)) this.deaths.onDeath(d);
    for (const d of this.table.checkSilence(now)) this.deaths.onDeath(d);
    this.epochTick(now);
    // mtype 2: legacy replies by age and by fill (legacy-expiry.ts).
    this.legacyExpiry?.run(now);
    // Every other mtype nobody owns: due sweeps, and at once when the queue is over high water
    // (by bytes or by message count).
    this.hygieneCheck(now);
  }

  /** The live processes whose views count for the epoch (every tracked shard and chatD). */
  private liveProcesses(): LiveProcess[] {
    return this.table.live();
  }

  /** Follows the live shards and decides a new membership epoch when one is due. */
  private epochTick(now: number): void {
    const change = this.epochs.tick(now, this.liveProcesses(), this.warming);
    if (!change) return;
    this.counters.epochs++;
    this.log.info(
      {
        epoch: change.view.epoch, members: change.view.members, previousEpoch: change.previous?.epoch, added: change.added,
        removed: change.removed, reason: change.reason,
      },
      'membership epoch decided',
    );
  }

  /** The collector's status: counters, process table, queue figures. */
  status(): Record<string, unknown> {
    let queue: unknown;
    let stat: QueueStat | undefined;
    try {
      queue = stat = this.endpoint.transport.stat();
    } catch (err) {
      queue = { error: (err as Error).message };
    }
    const now = this.now();
    return {
      role: 'gc',
      pid: process.pid,
      incarnation: this.endpoint.incarnation,
      uptimeMs: now - this.startedAt,
      uptimeS: uptimeS(),
      warming: this.warming,
      shards: this.shards,
      epoch: this.epochs.status(now, this.liveProcesses()),
      counters: { ...this.counters },
      processes: this.table.live().map((e) => ({
        mtype: e.mtype, role: e.role, index: e.index, incarnation: e.incarnation, pid: e.pid,
        pidCheck: e.pidCheck, host: e.host, ageMs: now - e.firstSeenAt, silentMs: now - e.lastSeenAt,
        ...(e.clock ? { clock: { ...e.clock } } : {}),
      })),
      clockWarnMs: this.timings.clockWarnMs,
      deaths: this.table.deaths().slice(-16).map((d) => ({
        mtype: d.mtype, role: d.role, incarnation: d.incarnation, pid: d.pid, host: d.host, reason: d.reason, agoMs: now - d.at,
      })),
      vacant: this.table.vacantMtypes(),
      cleanupsInProgress: this.deaths.inProgress,
      queue,
      hygiene: { ...this.hygiene.counters, byClass: { ...this.hygiene.counters.byClass } },
      transport: this.endpoint.transport.counters(),
      endpoint: { ...this.endpoint.counters, pending: this.endpoint.pendingRequests },
      metrics: this.metrics(stat),
    };
  }

  /** The queue's kernel figures, or undefined when they cannot be read (the queue may be gone). */
  queueStat(): QueueStat | undefined {
    try {
      return this.endpoint.transport.stat();
    } catch {
      return undefined;
    }
  }

  /**
   * The figures of docs/operations.md ("Metrics"): STATUS's `metrics`, and PM2's. `stat`: the
   * queue's figures when the caller has them already (read now otherwise); without them the
   * queue gauges are left out.
   */
  metrics(stat: QueueStat | undefined = this.queueStat()): ProcessMetrics {
    const c = this.counters;
    const gauges: Record<string, number> = { processes: this.table.live().length, cleanupsInProgress: this.deaths.inProgress };
    if (stat) {
      gauges.queueMessages = stat.messages;
      gauges.queueBytes = stat.bytes;
      gauges.queueFill = Math.round(queueFill(stat).fill * 10_000) / 10_000;
    }
    return {
      counters: {
        // Session ends done: the entry removed, or nothing to remove (its shard restarted empty).
        sessionCleanups: c.sessionEndsRemoved + c.sessionEndsShardDead,
        sessionCleanupsFailed: c.sessionEndsUnavailable,
        deathsSeen: c.deaths,
        purges: c.cleanupsDone,
        purgedEntries: c.purgedEntries,
        drainedMessages: c.drainedMessages,
        heartbeats: c.heartbeats,
      },
      gauges,
    };
  }

  // ---- operator actions (pm2 trigger gc ...) ----

  /**
   * The queue as the kernel counts it, its fill, and what sits at its head: the first
   * `peekMax` messages (MSG_COPY, without taking them) counted per mtype with their owner
   * and whether a live process holds that mailbox. `pm2 trigger gc queue-stat`.
   */
  queueReport(peekMax = 256): Record<string, unknown> {
    const stat = this.queueStat();
    if (!stat) return { error: 'the queue cannot be read (removed?)' };
    const f = queueFill(stat);
    const head: Record<string, { messages: number; bytes: number; owner: string; live: boolean }> = {};
    let scanned = 0;
    let peek: string;
    const hq = this.options.hygieneQueue;
    if (!hq?.peek) peek = 'not available (this transport cannot peek)';
    else {
      peek = 'ok';
      try {
        for (; scanned < Math.min(peekMax, stat.messages); scanned++) {
          const m = hq.peek(scanned);
          if (!m) break;
          const o = ownerOf(m.mtype);
          const h = (head[m.mtype] ??= { messages: 0, bytes: 0, owner: Object.entries(o).map(([k, v]) => `${k}=${v}`).join(' '), live: this.table.get(m.mtype) !== undefined });
          h.messages++;
          h.bytes += m.body.length;
        }
      } catch (err) {
        peek = `stopped: ${(err as Error).message}`;
      }
    }
    return {
      messages: stat.messages,
      bytes: stat.bytes,
      capacity: stat.capacity,
      fill: f.fill,
      limitedBy: f.limitedBy,
      highWater: this.timings.highWater,
      mode: `0${stat.mode.toString(8)}`,
      lastSendPid: stat.lastSendPid,
      lastReceivePid: stat.lastReceivePid,
      head: { scanned, peek, byMtype: head },
      vacant: this.table.vacantMtypes(),
    };
  }

  /**
   * Runs the death checks now rather than at the next tick (pid gone, silent past
   * DEAD_AFTER_MS), cleans up after every death found (PURGE of a dead chatD's entries on
   * every shard, its mailbox drained), drains the mailboxes of dead processes nobody took
   * over, and waits up to `waitMs` for the cleanups. `pm2 trigger gc purge-dead`.
   */
  async purgeDead(waitMs = 3000): Promise<Record<string, unknown>> {
    if (this.stopped) return { error: 'collector stopped' };
    const now = this.now();
    const found = [...this.table.checkPids(this.options.liveness, now), ...this.table.checkSilence(now)];
    for (const d of found) this.deaths.onDeath(d);
    const drained: Record<string, number> = {};
    for (const mtype of this.table.vacantMtypes()) {
      const n = this.drain(mtype);
      if (n > 0) drained[mtype] = n;
    }
    let settled = true;
    const reports = await Promise.race([this.settled(), sleep(waitMs).then(() => undefined)]);
    if (reports === undefined) settled = false;
    this.log.info({ found: found.length, drained, settled }, 'purge-dead (operator action)');
    return {
      found: found.map((d) => ({ mtype: d.mtype, role: d.role, index: d.index, incarnation: d.incarnation, pid: d.pid, reason: d.reason })),
      drained,
      settled,
      cleanups: reports ?? [],
      cleanupsInProgress: this.deaths.inProgress,
      processes: this.table.live().length,
    };
  }

  // ---- inbound records ----

  private onRecord(rec: InboundRecord, reply: ReplyFn | undefined): void {
    if (this.stopped) return;
    try {
      // Any record refreshes the incarnation that holds its mtype; only a validated HEARTBEAT
      // or HELLO may put a new incarnation in the table (and so declare the old one dead).
      this.table.touch(rec.from, rec.fromIncarnation, this.now());
      if (!GC_KINDS.has(rec.kind)) {
        // Unknown or foreign kinds (forged envelopes, garbage, misrouted records): counted, ignored.
        this.counters.ignoredRecords++;
        this.log.debug({ kind: kindName(rec.kind), from: rec.from, fromIncarnation: rec.fromIncarnation }, 'record of a kind the collector does not serve: ignored');
        return;
      }
      if (!reply) return; // the collector takes no one-way records
      switch (rec.kind) {
        case Kind.HEARTBEAT:
          return this.membership.onHeartbeat(rec, reply);
        case Kind.HELLO:
          return this.membership.onHello(rec, reply);
        case Kind.SESSION_END:
          this.sessionCleanup.onSessionEnd(rec, reply).catch((err: unknown) => {
            this.log.error({ err }, 'session end failed');
            reply(Status.INTERNAL, EMPTY);
          });
          return;
        case Kind.STATUS:
          this.counters.statusRequests++;
          return reply(Status.OK, this.encodeStatus());
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

  private encodeStatus(): Buffer {
    const s = this.status();
    let body = encodePayload('status', s);
    // One record must fit one message (msgmax 8192 by default): shed detail before failing.
    if (body.byteLength > 6000) body = encodePayload('status', { ...s, deaths: undefined, processes: this.table.live().length, epoch: { ...(s.epoch as object), members: undefined, lagging: undefined } });
    return body;
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

  private hygieneCheck(now: number): void {
    const before = this.hygiene.counters.drained;
    try {
      this.hygiene.check(now);
    } catch (err) {
      this.log.warn({ err }, 'queue hygiene failed');
    }
    this.counters.drainedMessages += this.hygiene.counters.drained - before;
  }

  private warnOnce(key: string, fields: Record<string, unknown>, msg: string): void {
    if (this.warned.has(key)) return;
    if (this.warned.size > 1000) this.warned.clear();
    this.warned.add(key);
    this.log.warn(fields, msg);
  }
}
