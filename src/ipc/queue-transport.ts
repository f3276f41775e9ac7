import { IpcError, TransportClosedError, checkMtype, isQueueGone } from './ipc-error';
import { SendBacklog } from './send-backlog';
import type { BatchHandler, MessageTransport, QueueStat, Receiver, TransportCounters } from './transport';

/** What a transport needs of its queue: a non-blocking send and the figures. */
export interface NonBlockingQueue {
  readonly maxMessageBytes: number;
  /** true: sent; false: full (EAGAIN). Throws IpcError otherwise (msgsnd EIDRM/EINVAL when gone). */
  trySend(mtype: number, body: Uint8Array): boolean;
  stat(): QueueStat;
}

export interface BacklogOptions {
  backlogMessages: number;
  backlogBytes: number;
  /** Told when backlogged messages fail for good (queue removed while they waited). */
  onSendError: (err: Error) => void;
}

export const defaultBacklogOptions: BacklogOptions = Object.freeze({
  backlogMessages: 100_000,
  backlogBytes: 64 * 1024 * 1024,
  onSendError: () => {},
});

/**
 * The part of the MessageTransport contract that does not depend on the queue: send checks,
 * the bounded backlog, one receiver per mtype, counters and close. Subclasses say how to
 * receive.
 */
export abstract class QueueTransport<Q extends NonBlockingQueue> implements MessageTransport {
  private readonly backlog: SendBacklog;
  private readonly receivers = new Map<number, Receiver>();
  private sent = 0;
  private received = 0;
  private closed = false;

  constructor(
    readonly queue: Q,
    options: BacklogOptions,
  ) {
    this.backlog = new SendBacklog(
      (mtype, body) => {
        const ok = queue.trySend(mtype, body);
        if (ok) this.sent++;
        return ok;
      },
      { maxMessages: options.backlogMessages, maxBytes: options.backlogBytes, minRetryMs: 1, maxRetryMs: 20, onError: options.onSendError },
    );
  }

  /** Starts the receiver for one mtype; `onBatch` already counts. */
  protected abstract openReceiver(mtype: number, onBatch: BatchHandler): Receiver;

  get maxMessageBytes(): number {
    return this.queue.maxMessageBytes;
  }

  /** What send() and trySend() refuse before touching the queue. */
  private checkSend(mtype: number, body: Uint8Array): void {
    if (this.closed) throw new TransportClosedError('closed');
    if (body.byteLength > this.queue.maxMessageBytes) {
      throw new IpcError('E2BIG', `message of ${body.byteLength} bytes exceeds msgmax ${this.queue.maxMessageBytes}`, 'msgsnd');
    }
    if (body.byteLength === 0) throw new IpcError('EINVAL', 'empty messages are reserved for receiver wake-ups', 'msgsnd');
    checkMtype(mtype);
  }

  send(mtype: number, body: Uint8Array): void {
    this.checkSend(mtype, body);
    try {
      this.backlog.send(mtype, body);
    } catch (err) {
      if (!isQueueGone(err)) throw err;
      this.backlog.close('queue removed');
      throw new TransportClosedError('queue removed', { cause: err });
    }
  }

  /**
   * Sends at once or not at all (no backlog): false when the queue is full or this mtype has
   * messages waiting in the backlog. For traffic that may be shed (legacy replies).
   */
  trySend(mtype: number, body: Uint8Array): boolean {
    this.checkSend(mtype, body);
    try {
      return this.backlog.sendNow(mtype, body);
    } catch (err) {
      if (!isQueueGone(err)) throw err;
      this.backlog.close('queue removed');
      throw new TransportClosedError('queue removed', { cause: err });
    }
  }

  receive(mtype: number, onBatch: BatchHandler): Receiver {
    if (this.closed) throw new TransportClosedError('closed');
    if (this.receivers.has(mtype)) throw new IpcError('EBUSY', `already receiving mtype ${mtype}`);
    const receiver = this.openReceiver(mtype, (batch) => {
      this.received += batch.length;
      onBatch(batch);
    });
    this.receivers.set(mtype, receiver);
    void receiver.ended.then(() => {
      if (this.receivers.get(mtype) === receiver) this.receivers.delete(mtype);
    });
    return receiver;
  }

  stat(): QueueStat {
    return this.queue.stat();
  }

  counters(): TransportCounters {
    return {
      sent: this.sent,
      received: this.received,
      deferred: this.backlog.deferred,
      backlogMessages: this.backlog.messages,
      backlogBytes: this.backlog.byteCount,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.backlog.close('closed');
    await Promise.all([...this.receivers.values()].map((r) => r.close()));
    this.receivers.clear();
  }
}
