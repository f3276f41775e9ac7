import { BacklogFullError, TransportClosedError } from './ipc-error';

/** Tries one non-blocking send: true when sent, false when the queue is full. Throws otherwise. */
export type TrySend = (mtype: number, body: Uint8Array) => boolean;

export interface SendBacklogOptions {
  maxMessages: number;
  maxBytes: number;
  /** First retry delay when the queue is full; doubles up to maxRetryMs. */
  minRetryMs: number;
  maxRetryMs: number;
  /** Told when a backlogged message fails for good (queue removed, ...). */
  onError: (err: Error) => void;
}

/** One destination's FIFO. */
class Fifo {
  readonly items: Uint8Array[] = [];
  head = 0;
  get size(): number {
    return this.items.length - this.head;
  }
}

/**
 * A bounded backlog in front of a non-blocking send, **one FIFO per destination mtype**. The
 * kernel gives no "space freed" notification, so a full queue is polled with a short, growing
 * timer; the main thread never sleeps in a syscall.
 *
 * Order is kept per destination (what the kernel keeps per mtype anyway), not across
 * destinations: a send to an mtype with nothing waiting goes out at once even while other
 * destinations wait, and freed space is shared round-robin among the waiting destinations.
 * So one class of traffic (say, legacy replies nobody reads) cannot hold another (shard
 * requests) behind it.
 */
export class SendBacklog {
  private readonly fifos = new Map<number, Fifo>();
  /** Destinations with something waiting, in round-robin order. */
  private readonly active: number[] = [];
  private messagesWaiting = 0;
  private bytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private retryMs: number;
  private closedReason: string | undefined;
  deferred = 0;

  constructor(
    private readonly trySend: TrySend,
    private readonly options: SendBacklogOptions,
  ) {
    this.retryMs = options.minRetryMs;
  }

  get messages(): number {
    return this.messagesWaiting;
  }

  get byteCount(): number {
    return this.bytes;
  }

  /** Messages waiting for one destination. */
  waiting(mtype: number): number {
    return this.fifos.get(mtype)?.size ?? 0;
  }

  send(mtype: number, body: Uint8Array): void {
    if (this.closedReason !== undefined) throw new TransportClosedError(this.closedReason);
    let fifo = this.fifos.get(mtype);
    if ((fifo === undefined || fifo.size === 0) && this.trySend(mtype, body)) return;
    if (this.messagesWaiting + 1 > this.options.maxMessages || this.bytes + body.byteLength > this.options.maxBytes) {
      throw new BacklogFullError(this.messagesWaiting, this.bytes);
    }
    if (!fifo) this.fifos.set(mtype, (fifo = new Fifo()));
    if (fifo.size === 0) this.active.push(mtype);
    // The caller may reuse its buffer: keep a copy.
    fifo.items.push(Uint8Array.prototype.slice.call(body));
    this.messagesWaiting++;
    this.bytes += body.byteLength;
    this.deferred++;
    this.schedule();
  }

  /**
   * Sends only if it can go out now without overtaking anything waiting for that destination:
   * false when the queue is full or that destination has a backlog. Never backlogs.
   */
  sendNow(mtype: number, body: Uint8Array): boolean {
    if (this.closedReason !== undefined) throw new TransportClosedError(this.closedReason);
    if (this.waiting(mtype) > 0) return false;
    return this.trySend(mtype, body);
  }

  /** Drops what waits and refuses further sends. */
  close(reason: string): void {
    this.closedReason = reason;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.fifos.clear();
    this.active.length = 0;
    this.messagesWaiting = 0;
    this.bytes = 0;
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => this.flush(), this.retryMs);
    this.timer.unref?.();
  }

  private flush(): void {
    this.timer = undefined;
    let progress = false;
    try {
      // Round-robin, one message per destination per round, until a whole round sends nothing.
      for (;;) {
        let sentThisRound = false;
        for (let i = 0; i < this.active.length; ) {
          const mtype = this.active[i]!;
          const fifo = this.fifos.get(mtype)!;
          const body = fifo.items[fifo.head]!;
          if (this.trySend(mtype, body)) {
            fifo.items[fifo.head] = undefined as unknown as Uint8Array;
            fifo.head++;
            this.messagesWaiting--;
            this.bytes -= body.byteLength;
            sentThisRound = progress = true;
            if (fifo.size === 0) {
              this.fifos.delete(mtype);
              this.active.splice(i, 1);
              continue;
            }
            if (fifo.head > 1024 && fifo.head * 2 > fifo.items.length) {
              fifo.items.splice(0, fifo.head);
              fifo.head = 0;
            }
          }
          i++;
        }
        if (!sentThisRound || this.active.length === 0) break;
      }
    } catch (err) {
      this.close((err as Error).message);
      this.options.onError(err as Error);
      return;
    }
    if (this.active.length === 0) {
      this.retryMs = this.options.minRetryMs;
      return;
    }
    // Rotate so that the next round starts with another destination.
    this.active.push(this.active.shift()!);
    // Progress means space is freeing: poll again soon. None: back off.
    this.retryMs = progress ? this.options.minRetryMs : Math.min(this.retryMs * 2, this.options.maxRetryMs);
    this.schedule();
  }
}
