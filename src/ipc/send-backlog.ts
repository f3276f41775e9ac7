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

interface Pending {
  mtype: number;
  body: Uint8Array;
}

/**
 * A bounded FIFO in front of a non-blocking send. The kernel gives no "space freed"
 * notification, so a full queue is polled with a short, growing timer; the main thread never
 * sleeps in a syscall. One FIFO for all destinations keeps per-sender order (a full queue is
 * full for everyone, so per-destination queues would buy nothing).
 */
export class SendBacklog {
  private readonly items: Pending[] = [];
  private head = 0;
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
    return this.items.length - this.head;
  }

  get byteCount(): number {
    return this.bytes;
  }

  send(mtype: number, body: Uint8Array): void {
    if (this.closedReason !== undefined) throw new TransportClosedError(this.closedReason);
    if (this.messages === 0 && this.trySend(mtype, body)) return;
    if (this.messages + 1 > this.options.maxMessages || this.bytes + body.byteLength > this.options.maxBytes) {
      throw new BacklogFullError(this.messages, this.bytes);
    }
    // The caller may reuse its buffer: keep a copy.
    this.items.push({ mtype, body: Uint8Array.prototype.slice.call(body) });
    this.bytes += body.byteLength;
    this.deferred++;
    this.schedule();
  }

  /** Drops what waits and refuses further sends. */
  close(reason: string): void {
    this.closedReason = reason;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.items.length = 0;
    this.head = 0;
    this.bytes = 0;
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => this.flush(), this.retryMs);
    this.timer.unref?.();
  }

  private flush(): void {
    this.timer = undefined;
    const before = this.head;
    try {
      while (this.head < this.items.length) {
        const item = this.items[this.head]!;
        if (!this.trySend(item.mtype, item.body)) break;
        this.items[this.head] = undefined as unknown as Pending;
        this.head++;
        this.bytes -= item.body.byteLength;
      }
    } catch (err) {
      this.close((err as Error).message);
      this.options.onError(err as Error);
      return;
    }
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.head = 0;
      this.retryMs = this.options.minRetryMs;
      return;
    }
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items.splice(0, this.head);
      this.head = 0;
    }
    // Progress means space is freeing: poll again soon. None: back off.
    this.retryMs = this.head > before ? this.options.minRetryMs : Math.min(this.retryMs * 2, this.options.maxRetryMs);
    this.schedule();
  }
}
