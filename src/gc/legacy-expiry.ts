import type { QueueStat } from '../ipc/transport';
import { legacyReplyTime } from '../chatd/legacy-gateway';
import { MTYPE_LEGACY_REPLY } from '../ipc/mtypes';
import { queueFill } from '../ipc/queue-fill';
import type { GcContext } from './gc-context';

export interface LegacyExpiryOptions {
  /** One non-blocking receive of `mtype` (the oldest message of it), or null when none. */
  takeOne: (mtype: number) => Buffer | null;
  /** Puts a message back (at the tail of its mtype); false when the queue is full. */
  putBack: (mtype: number, body: Buffer) => boolean;
  /** How often the legacy replies are looked at. */
  everyMs: number;
  /** A legacy reply older than this is dropped (a C peer that reads replies takes them in ms). */
  ttlMs: number;
  /**
   * Above this fill ratio every legacy reply is dropped, whatever its age. The fill is by bytes
   * OR by message count (queue-fill.ts): tiny replies fill a queue by count long before bytes.
   */
  fill: number;
  /** The figures of the queue mtype 2 lives on (the host's SysV queue, also when the cluster runs on NATS). Default: the endpoint's transport. */
  stat?: () => QueueStat;
}

/**
 * Expiry of legacy replies (mtype 2), which nobody in the cluster reads (defect 5): by age,
 * from the send time chatD writes after the reply's NUL, and by fill. Replies are FIFO per
 * mtype, so the pass takes the oldest until it meets a young one, which it puts back at the
 * tail and stops. That reorders one young reply, which matters only to a C peer reading
 * replies, and there evidently is none reading promptly when a reply got old. Anything on
 * mtype 2 without the trailer is not a reply of ours: dropped as junk.
 *
 * This is the one part of gc that takes mtype 2 off the queue; queue-hygiene.ts, which drains every
 * other mtype no live process owns, leaves it alone (docs/reliability.md, "Who takes what").
 */
export class LegacyExpiry {
  private last = 0;

  constructor(
    private readonly ctx: GcContext,
    private readonly options: LegacyExpiryOptions,
  ) {}

  run(now: number): void {
    if (now - this.last < this.options.everyMs) return;
    this.last = now;
    const ctx = this.ctx;
    let byFill = false;
    try {
      byFill = queueFill((this.options.stat ?? (() => ctx.endpoint.transport.stat()))()).fill > this.options.fill;
    } catch {
      return; // the queue is gone
    }
    let expired = 0;
    let junk = 0;
    try {
      for (let i = 0; i < 100_000; i++) {
        const m = this.options.takeOne(MTYPE_LEGACY_REPLY);
        if (!m) break;
        const t = legacyReplyTime(m);
        if (t === undefined) {
          junk++;
          continue;
        }
        if (byFill || now - t > this.options.ttlMs) {
          expired++;
          continue;
        }
        if (!this.options.putBack(MTYPE_LEGACY_REPLY, m)) expired++; // no room even for it: gone
        break;
      }
    } catch (err) {
      ctx.log.warn({ err }, 'legacy reply expiry failed');
    }
    const n = expired + junk;
    if (n === 0) return;
    ctx.counters.legacyRepliesDrained += n;
    ctx.counters.drainedMessages += n;
    ctx.log.info({ expired, junk, byFill, ttlMs: this.options.ttlMs }, 'legacy replies expired');
  }
}
