import { Kind, Status } from '../cluster/kinds';
import { EMPTY, decodePayload, encodePayload, type ClockReport, type HeartbeatPayload, type ViewPayload } from '../cluster/messages';
import { memberRanges } from '../cluster/ownership';
import type { ReplyFn } from '../ipc/endpoint';
import { msLeft, type InboundRecord } from '../ipc/envelope';
import { MTYPE_GC, chatdMtype, shardMtype } from '../ipc/mtypes';
import { nextClockState } from './clock-skew';
import type { GcContext } from './gc-context';
import type { Death, ProcessEntry, SightingResult } from './process-table';

/** What a supervisor (PM2) told us: an app instance exited or is being stopped. */
export interface SupervisorEvent {
  readonly event: 'exit' | 'stop';
  readonly mtype: number;
  /** When known (PM2's exit events do not carry it). */
  readonly pid?: number;
  /** Wall-clock ms of the event. */
  readonly at?: number;
}

/**
 * Who is alive (docs/gc.md "What it knows"): HEARTBEAT and HELLO, PM2 events, revivals, and
 * the RESYNCs a restarted shard needs.
 */
export class Membership {
  constructor(
    private readonly ctx: GcContext,
    private readonly onDeath: (d: Death) => void,
    private readonly badRequest: (rec: InboundRecord, reply: ReplyFn, why: string) => void,
  ) {}

  noteSighting(r: SightingResult): void {
    if (r.replaced) this.onDeath(r.replaced);
  }

  /**
   * PM2 said an app instance exited (or is being stopped). That is this host's PM2: its word
   * counts only for a process of this host (an mtype held by another host's process is not
   * the instance PM2 means here, docs/multi-host.md).
   */
  supervisorEvent(ev: SupervisorEvent): Death | undefined {
    const { table, liveness } = this.ctx;
    const e = table.get(ev.mtype);
    if (!e) return undefined;
    if (!e.local) {
      this.ctx.warnOnce(`pm2-remote:${e.mtype}:${e.incarnation}`, { mtype: e.mtype, host: e.host, event: ev.event }, 'PM2 event for an mtype held by a process of another host: ignored');
      return undefined;
    }
    const at = ev.at ?? this.ctx.now();
    // An incarnation first heard of after the event is the restarted one, not the one that exited.
    if (e.firstSeenAt > at) return undefined;
    if (ev.pid !== undefined && e.pid !== 0 && ev.pid !== e.pid) return undefined;
    const checkable = e.pid !== 0 && e.pidCheck;
    if (checkable && liveness(e.pid)) return undefined; // still there: the pid check will see it go
    if (!checkable && ev.event !== 'exit') return undefined; // a stop request is no proof; silence will tell
    const d = table.markDead(e.mtype, e.incarnation, 'pm2', this.ctx.now());
    if (d) this.onDeath(d);
    return d;
  }

  onHeartbeat(rec: InboundRecord, reply: ReplyFn): void {
    const ctx = this.ctx;
    const p = decodePayload('heartbeat', rec.payload);
    const left = rec.deadline === 0 ? 0 : msLeft(rec.deadline);
    if (left < 0) {
      // Past its deadline (the endpoint hands heartbeats over anyway). From this host, or not
      // a valid heartbeat: dropped unanswered as every expired request is. From another host:
      // its clock may be behind ours by more than the heartbeat's timeout, and our answer
      // (with `now`) is the only way it can learn that and correct (docs/multi-host.md).
      if (!p || ctx.table.isLocalHost(p.host)) {
        ctx.endpoint.counters.expired++;
        return;
      }
      ctx.counters.lateHeartbeats++;
      ctx.warnOnce(
        `late-heartbeat:${rec.from}:${rec.fromIncarnation}`,
        { mtype: rec.from, incarnation: rec.fromIncarnation, host: p.host, lateMs: -left },
        'heartbeat of another host arrived past its deadline: its clock is behind the collector\'s (or it was delayed); answered, so that it can measure its offset',
      );
    }
    if (!p) return this.badRequest(rec, reply, 'bad heartbeat payload');
    const expected = expectedMtype(p);
    if (expected !== rec.from) return this.badRequest(rec, reply, `heartbeat of ${p.role} ${p.index} from mtype ${rec.from}`);
    ctx.counters.heartbeats++;
    if (p.role === 'gc') {
      ctx.warnOnce(`gc:${rec.fromIncarnation}`, { incarnation: rec.fromIncarnation, pid: p.pid }, 'another collector is heartbeating on the gc mtype; only one may run per queue');
    } else {
      if (this.refuseNewIncarnation(rec, p.pid, p.host)) return reply(Status.UNAVAILABLE, EMPTY);
      const now = ctx.now();
      const r = ctx.table.heartbeat(rec.from, rec.fromIncarnation, p.pid, now, p.host);
      this.noteSighting(r);
      if (r.entry && r.entry.heartbeats === 1 && r.entry.local) this.checkPidVisible(r.entry.mtype, p.pid);
      if (r.fromDead && !this.maybeRevive(rec.from, rec.fromIncarnation, p.pid, p.host)) return this.fence(rec, reply, p.host);
      if (p.clock && r.entry) this.noteClock(r.entry, p.clock);
      // The epoch it is at (docs/resharding.md); counted toward the current epoch's settlement.
      const before = ctx.epochs.badReports;
      ctx.epochs.report(rec.from, rec.fromIncarnation, p.view && { epoch: p.view.epoch, members: p.view.members, ready: p.ready ?? false });
      if (ctx.epochs.badReports !== before) ctx.counters.badViewReports++;
    }
    if (ctx.warming) {
      ctx.counters.warmupRefusals++;
      return reply(Status.UNAVAILABLE, EMPTY);
    }
    const view = this.view(true);
    // The collector's time, to a sender that asked by reporting `clock` (an earlier one would refuse the field).
    const now = p.clock ? { now: ctx.now() } : {};
    reply(Status.OK, encodePayload('membership', { shards: ctx.table.liveShards(), chatds: ctx.table.liveChatds(), ...(view ? { view } : {}), ...now }));
  }

  /**
   * A heartbeat's clock report (docs/multi-host.md "Clock skew"): kept for STATUS, one warning
   * when the process's offset goes beyond CLOCK_WARN (timings.clockWarnMs), one when it is back.
   */
  private noteClock(entry: ProcessEntry, report: ClockReport): void {
    const ctx = this.ctx;
    const { state, change } = nextClockState(entry.clock, report, ctx.timings.clockWarnMs);
    entry.clock = state;
    if (!change || !state) return;
    const fields = { mtype: entry.mtype, role: entry.role, index: entry.index, host: entry.host, offsetMs: state.offset, boundMs: state.bound, corrected: state.applied, thresholdMs: ctx.timings.clockWarnMs };
    if (change === 'skewed') {
      ctx.counters.clockSkews++;
      ctx.log.warn(fields, 'process clock differs from the collector\'s by more than the threshold (offset: collector minus process)');
    } else {
      ctx.log.warn(fields, 'process clock back within the threshold of the collector\'s');
    }
  }

  onHello(rec: InboundRecord, reply: ReplyFn): void {
    const ctx = this.ctx;
    const p = decodePayload('hello', rec.payload);
    if (!p) return this.badRequest(rec, reply, 'bad hello payload');
    if (rec.from !== shardMtype(p.shard)) return this.badRequest(rec, reply, `hello of shard ${p.shard} from mtype ${rec.from}`);
    ctx.counters.hellos++;
    if (this.refuseNewIncarnation(rec, 0, p.host)) return reply(Status.UNAVAILABLE, EMPTY);
    // A validated HELLO puts a restarted shard in the table at once (the old one is gone).
    const r = ctx.table.sighting(rec.from, rec.fromIncarnation, ctx.now(), p.host);
    this.noteSighting(r);
    // A shard of another host declared dead is never taken back (its HELLO included).
    if (r.fromDead && !ctx.table.isLocalHost(p.host)) return this.fence(rec, reply, p.host);
    if (ctx.warming) {
      ctx.counters.warmupRefusals++;
      return reply(Status.UNAVAILABLE, EMPTY);
    }
    const chatds = ctx.table.liveChatds();
    const view = this.view(false);
    reply(Status.OK, encodePayload('helloReply', { chatds, ...(view ? { view } : {}) }));
    for (const [mtype, inc] of chatds) this.postResync(mtype, inc, p.shard, rec.fromIncarnation);
    ctx.log.info({ shard: p.shard, shardInc: rec.fromIncarnation, chatds: chatds.length }, 'shard hello: chatDs asked to resync');
  }

  /**
   * Death is established from evidence, never from one record: a new incarnation speaking on an
   * mtype whose current holder has a checkable pid that is alive is refused (UNAVAILABLE; a real
   * successor retries, and is admitted once the pid check or PM2 saw the old one go, within a
   * tick). Holders whose pid cannot be checked are replaced by a validated record from their own
   * host (a restart: PM2 gives each index once per host); a claim from **another** host while
   * the holder still heartbeats (within DEAD_AFTER_MS) is refused: two hosts with overlapping
   * SHARD_BASE ranges, which would split the mtype's traffic (docs/multi-host.md).
   */
  private refuseNewIncarnation(rec: InboundRecord, pid: number, host: string | undefined): boolean {
    const ctx = this.ctx;
    const cur = ctx.table.get(rec.from);
    if (!cur || cur.incarnation === rec.fromIncarnation) return false;
    if (ctx.table.isDead(rec.from, rec.fromIncarnation)) return false; // a revival: handled by the caller
    const claimedHost = host ?? ctx.table.localHost;
    if (claimedHost !== cur.host) {
      if (ctx.now() - cur.lastSeenAt > ctx.table.deadAfterMs) return false; // the holder went quiet: silence will bury it
      ctx.counters.refusedIncarnations++;
      ctx.warnOnce(
        `refused-host:${rec.from}:${rec.fromIncarnation}`,
        { mtype: rec.from, claimed: rec.fromIncarnation, claimedHost, holder: cur.incarnation, holderHost: cur.host },
        'mtype claimed by a process of another host while its holder still heartbeats: refused (overlapping SHARD_BASE ranges?)',
      );
      return true;
    }
    if (cur.pid === 0 || !cur.pidCheck || !ctx.liveness(cur.pid)) return false;
    if (pid !== 0 && pid === cur.pid) return false; // the same process restarted its endpoint
    ctx.counters.refusedIncarnations++;
    ctx.warnOnce(
      `refused:${rec.from}:${rec.fromIncarnation}`,
      { mtype: rec.from, claimed: rec.fromIncarnation, holder: cur.incarnation, holderPid: cur.pid, claimedPid: pid },
      'new incarnation claimed while the holder of the mtype is alive: refused until its death is established',
    );
    return true;
  }

  /** A pid that does not exist from here although its process just spoke: another pid namespace. */
  private checkPidVisible(mtype: number, pid: number): void {
    if (this.ctx.liveness(pid)) return;
    const e = this.ctx.table.get(mtype);
    if (!e) return;
    e.pidCheck = false;
    this.ctx.warnOnce(`pid:${mtype}:${e.incarnation}`, { mtype, pid }, 'heartbeat pid not visible from the collector; liveness of this process by heartbeats and PM2 only');
  }

  /**
   * Heartbeats from an incarnation declared dead: take it back if it is really there, which
   * only a pid check on this host can tell. False: it is not taken back, and it is fenced
   * (another host's process, or one whose pid is gone or invisible from here).
   */
  private maybeRevive(mtype: number, incarnation: number, pid: number, host: string | undefined): boolean {
    const ctx = this.ctx;
    if (!ctx.table.isLocalHost(host)) return false; // its pid means nothing here
    if (!ctx.liveness(pid)) return false; // a stale heartbeat of a process that is gone, or one we cannot see
    const entry = ctx.table.revive(mtype, incarnation, pid, ctx.now());
    if (!entry) {
      ctx.warnOnce(`stale:${mtype}:${incarnation}`, { mtype, incarnation, pid }, 'heartbeat from an incarnation that a newer one replaced');
      return true;
    }
    ctx.counters.revived++;
    ctx.log.warn({ mtype, role: entry.role, incarnation, pid }, 'process declared dead is alive; taken back');
    if (entry.role === 'chatd') {
      // Its entries were purged: have it resend its sessions to every live shard.
      for (const [shard, shardInc] of ctx.table.liveShards()) this.postResync(mtype, incarnation, shard, shardInc);
    }
    return true;
  }

  /**
   * FENCED: an incarnation the collector declared dead, which it cannot take back, spoke again.
   * Its state is stale (a chatD's entries were purged, a shard missed removals and hand-overs
   * while it was cut off), so it must stop serving: the process exits on this answer and its
   * supervisor starts a new incarnation, which recovers like any restart (docs/multi-host.md).
   */
  private fence(rec: InboundRecord, reply: ReplyFn, host: string | undefined): void {
    const ctx = this.ctx;
    ctx.counters.fenced++;
    ctx.warnOnce(
      `fenced:${rec.from}:${rec.fromIncarnation}`,
      { mtype: rec.from, incarnation: rec.fromIncarnation, host: host ?? ctx.table.localHost },
      'a process declared dead spoke again: fenced (it exits and is restarted as a new incarnation)',
    );
    reply(Status.FENCED, EMPTY);
  }

  /** The current view for an answer (undefined until the collector decided one). */
  private view(withSettled: boolean): ViewPayload | undefined {
    this.ctx.ensureView();
    const v = this.ctx.epochs.view;
    if (!v) return undefined;
    const out: ViewPayload = { epoch: v.epoch, members: memberRanges(v.members) };
    if (withSettled) out.settled = this.ctx.epochs.settled(this.ctx.table.live());
    return out;
  }

  private postResync(chatd: number, chatdInc: number, shard: number, shardInc: number): void {
    const ctx = this.ctx;
    const epoch = ctx.epochs.view?.epoch;
    try {
      ctx.endpoint.post(chatd, { kind: Kind.RESYNC, payload: encodePayload('resync', { shard, shardInc, ...(epoch ? { epoch } : {}) }) }, chatdInc, (err) =>
        ctx.log.warn({ err, chatd, shard }, 'resync could not be sent'),
      );
      ctx.counters.resyncsPosted++;
    } catch (err) {
      ctx.log.warn({ err, chatd, shard }, 'resync could not be sent');
    }
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
