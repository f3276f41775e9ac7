import { Kind, Status } from '../cluster/kinds';
import { decodePayload, encodePayload, type HeartbeatPayload, type MembershipPayload } from '../cluster/messages';
import { clusterClock } from '../ipc/cluster-clock';
import type { Endpoint } from '../ipc/endpoint';
import { MTYPE_GC } from '../ipc/mtypes';
import type { Logger } from '../log';
import { ClockOffsetEstimator, type ClockOffsetOptions } from './clock-offset';

/** The clock-offset part of a heartbeat (docs/multi-host.md "Clock skew"). */
export interface HeartbeatClockOptions {
  /** Apply the measured offset to envelope deadlines (CLOCK_CORRECTION; default true). */
  correct?: boolean;
  log?: Logger;
  estimator?: ClockOffsetOptions;
  /** The local clock (tests). */
  now?: () => number;
}

/**
 * Tells the collector we are alive, every `intervalMs`; the envelope carries our mtype and
 * incarnation, the reply carries the collector's view of which shards are alive.
 *
 * A heartbeat is a request, and at most one is outstanding: while the collector is down,
 * each process leaves at most one (expiring) message in its mailbox instead of one per
 * interval, so a dead collector cannot fill the shared queue.
 */
export class Heartbeat {
  private timer: NodeJS.Timeout | undefined;
  private inFlight = false;
  /** beatNow() was called while a beat was in flight: beat again once it is answered. */
  private again = false;
  private body: Buffer;
  /** The JSON of the last report, to re-encode the body only when it changes. */
  private lastReport = '';
  /** Wall-clock ms of the last reply from the collector (0: never). */
  lastReplyAt = 0;
  /** The collector answered FENCED (this incarnation was declared dead); no more heartbeats. */
  fenced = false;

  constructor(
    private readonly endpoint: Endpoint,
    payload: Omit<HeartbeatPayload, 'pid'>,
    private readonly intervalMs: number,
    private readonly onMembership?: (m: MembershipPayload) => void,
    /** The membership epoch the process is at, and whether it is done with it (docs/resharding.md). */
    private readonly report?: () => Pick<HeartbeatPayload, 'view' | 'ready'>,
    /**
     * The collector answered FENCED: it declared this incarnation dead and will not take it
     * back (docs/multi-host.md). Heartbeats stop; the caller exits so a new incarnation starts.
     */
    private readonly onFenced?: () => void,
    clock: HeartbeatClockOptions = {},
  ) {
    this.base = { ...payload, pid: process.pid };
    this.body = encodePayload('heartbeat', this.base);
    this.clock = new ClockOffsetEstimator(clock.estimator);
    this.correct = clock.correct ?? true;
    this.log = clock.log;
    this.now = clock.now ?? Date.now;
  }
  private readonly base: HeartbeatPayload;
  /** The offset to the collector's clock, from the round trips of heartbeats (clock-offset.ts). */
  readonly clock: ClockOffsetEstimator;
  private readonly correct: boolean;
  private readonly log: Logger | undefined;
  private readonly now: () => number;
  /**
   * Whether heartbeats carry `clock` (and so ask the collector for its time). Cleared when a
   * collector refuses such a heartbeat as BAD_REQUEST: an earlier version, whose schema
   * knows no `clock` (docs/multi-host.md, mixed versions).
   */
  private clockReports = true;
  /** The offset applied to deadlines now (clusterClock.offsetMs is this process's). */
  appliedOffsetMs = 0;

  /** The `clock` report: {} until measured (it still asks for the collector's time). */
  private clockReport(): Pick<HeartbeatPayload, 'clock'> {
    if (!this.clockReports) return {};
    const e = this.clock.estimate;
    if (!e) return { clock: {} };
    return { clock: { offset: Math.round(e.offset), bound: Math.ceil(e.bound), applied: this.appliedOffsetMs !== 0 } };
  }

  /** The body with the current report (encoded again only when the report changed). */
  private currentBody(): Buffer {
    const r = { ...this.report?.(), ...this.clockReport() };
    const text = JSON.stringify(r);
    if (text !== this.lastReport) {
      this.lastReport = text;
      this.body = encodePayload('heartbeat', { ...this.base, ...r });
    }
    return this.body;
  }

  /** A reply carried the collector's time `g`: one more sample, and the offset applied (or not). */
  private noteCollectorTime(t0: number, g: number, t1: number): void {
    const jump = this.clock.add(t0, g, t1);
    if (jump) {
      this.log?.warn(
        { fromOffsetMs: Math.round(jump.from.offset), toOffsetMs: Math.round(jump.to.offset), boundMs: Math.ceil(jump.to.bound) },
        'clock offset to the collector jumped (a clock stepped, or the collector restarted elsewhere); following it',
      );
    }
    const applied = this.correct ? this.clock.applied() : 0;
    if (applied === this.appliedOffsetMs) return;
    const before = this.appliedOffsetMs;
    this.appliedOffsetMs = applied;
    clusterClock.offsetMs = applied;
    const e = this.clock.estimate!;
    if (before === 0) this.log?.warn({ offsetMs: applied, boundMs: Math.ceil(e.bound) }, 'this host\'s clock differs from the collector\'s: envelope deadlines corrected by the measured offset');
    else if (applied === 0) this.log?.info({ offsetMs: Math.round(e.offset), boundMs: Math.ceil(e.bound) }, 'clock offset to the collector within its bound again: deadlines on the local clock');
  }

  start(): void {
    this.beat();
    this.timer = setInterval(() => this.beat(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Whether the collector answered recently. */
  collectorAlive(withinMs: number): boolean {
    return Date.now() - this.lastReplyAt <= withinMs;
  }

  /**
   * A heartbeat now, for a fresh membership answer (a shard asked about a chatD it does not
   * know). At most one is outstanding: asked during one, the next follows its answer.
   */
  beatNow(): void {
    if (this.timer === undefined) return;
    const now = Date.now();
    if (now - this.lastAskedAt < 50) return; // a burst of reasons is one question
    this.lastAskedAt = now;
    if (this.inFlight) this.again = true;
    else this.beat();
  }
  private lastAskedAt = 0;

  private beat(): void {
    if (this.inFlight) return;
    this.inFlight = true;
    this.again = false;
    const done = (): void => {
      this.inFlight = false;
      if (this.again && this.timer !== undefined) this.beat();
    };
    const body = this.currentBody();
    const asked = this.clockReports;
    const t0 = this.now();
    this.endpoint.request(MTYPE_GC, Kind.HEARTBEAT, body, Math.max(this.intervalMs * 4, 1000)).then(
      (reply) => {
        if (reply.status === Status.OK) {
          const t1 = this.now();
          this.lastReplyAt = Date.now();
          const m = decodePayload('membership', reply.payload);
          if (m && m.now !== undefined && asked) this.noteCollectorTime(t0, m.now, t1);
          if (m && this.onMembership) this.onMembership(m);
        } else if (reply.status === Status.BAD_REQUEST && asked) {
          this.clockReports = false;
          this.log?.warn({}, 'the collector refused a heartbeat with a clock report (an earlier version?): heartbeats go without it, no clock offset is measured');
        } else if (reply.status === Status.FENCED) {
          this.stop();
          this.fenced = true;
          this.onFenced?.();
          return;
        }
        done();
      },
      done,
    );
  }
}
