import { Kind, Status } from '../cluster/kinds';
import { decodePayload, encodePayload, type HeartbeatPayload, type MembershipPayload } from '../cluster/messages';
import type { Endpoint } from '../ipc/endpoint';
import { MTYPE_GC } from '../ipc/mtypes';

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
  ) {
    this.base = { ...payload, pid: process.pid };
    this.body = encodePayload('heartbeat', this.base);
  }
  private readonly base: HeartbeatPayload;

  /** The body with the current report (encoded again only when the report changed). */
  private currentBody(): Buffer {
    if (!this.report) return this.body;
    const r = this.report();
    const text = JSON.stringify(r);
    if (text !== this.lastReport) {
      this.lastReport = text;
      this.body = encodePayload('heartbeat', { ...this.base, ...r });
    }
    return this.body;
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
    this.endpoint.request(MTYPE_GC, Kind.HEARTBEAT, this.currentBody(), Math.max(this.intervalMs * 4, 1000)).then(
      (reply) => {
        if (reply.status === Status.OK) {
          this.lastReplyAt = Date.now();
          const m = decodePayload('membership', reply.payload);
          if (m && this.onMembership) this.onMembership(m);
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
