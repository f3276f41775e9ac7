import type { QueueStat } from './transport';

/** How full a queue is, by both of the kernel's limits. */
export interface QueueFill {
  /** max(byBytes, byCount): 1 means no further message of that kind fits. */
  readonly fill: number;
  /** bytes / msg_qbytes. */
  readonly byBytes: number;
  /** messages / msg_qbytes: Linux admits at most msg_qbytes messages, zero-length ones included. */
  readonly byCount: number;
  /** The limit that is nearer: `bytes`, or `messages` (a queue full of tiny or empty messages). */
  readonly limitedBy: 'bytes' | 'messages';
  /** The most messages the queue admits (msg_qbytes on Linux). */
  readonly maxMessages: number;
}

/**
 * The fill of a queue. Linux's msgsnd admits a message only while
 * `cbytes + size <= msg_qbytes` AND `qnum + 1 <= msg_qbytes` (ipc/msg.c, msg_fits_inqueue):
 * 16,384 empty messages fill a 16 KiB queue as surely as 16 KiB of text. So the fill is the
 * larger of the two ratios; reading bytes alone calls such a queue empty.
 */
export function queueFill(stat: Pick<QueueStat, 'bytes' | 'messages' | 'capacity'>): QueueFill {
  const cap = stat.capacity;
  if (!(cap > 0)) return { fill: 0, byBytes: 0, byCount: 0, limitedBy: 'bytes', maxMessages: 0 };
  const byBytes = stat.bytes / cap;
  const byCount = stat.messages / cap;
  return { fill: Math.max(byBytes, byCount), byBytes, byCount, limitedBy: byCount > byBytes ? 'messages' : 'bytes', maxMessages: cap };
}
