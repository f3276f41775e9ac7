import type { Msg, Subscription } from '@nats-io/nats-core';
import { QueueTransport, defaultBacklogOptions, type BacklogOptions } from '../queue-transport';
import type { BatchHandler, ReceivedMessage, Receiver, ReceiverEnd } from '../transport';
import { MAILBOX_QUEUE_GROUP, NatsQueue, type NatsQueueOptions } from './nats-queue';

export interface NatsReceiverOptions {
  /** Most messages handed over in one batch (more wait for the next turn). */
  batchMessages: number;
}

export const defaultNatsReceiverOptions: NatsReceiverOptions = Object.freeze({ batchMessages: 4096 });

/**
 * A mailbox on NATS: a queue-group subscription to the mtype's subject, so that each message
 * goes to one subscriber even while two processes hold the mtype (a restart overlap), as
 * msgrcv takes each message once. Messages of one socket read arrive in one synchronous run
 * of callbacks; they are handed over together on the next turn (setImmediate), in order.
 */
class NatsReceiver implements Receiver {
  readonly ended: Promise<ReceiverEnd>;
  /** Resolves once the server has the subscription (messages sent from elsewhere reach it). */
  readonly ready: Promise<void>;
  private settle!: (end: ReceiverEnd) => void;
  private readonly sub: Subscription;
  private pending: ReceivedMessage[] = [];
  private scheduled = false;
  private done = false;

  constructor(
    private readonly queue: NatsQueue,
    readonly mtype: number,
    private readonly onBatch: BatchHandler,
    private readonly options: NatsReceiverOptions,
  ) {
    this.ended = new Promise((resolve) => (this.settle = resolve));
    this.sub = queue.nc.subscribe(queue.subject(mtype), {
      queue: MAILBOX_QUEUE_GROUP,
      callback: (err, msg) => this.onMessage(err, msg),
    });
    this.ready = queue.flush(5000).then(() => undefined);
    void queue.whenGone().then((err) => this.finish({ reason: 'removed', code: 'CONNECTION_CLOSED', ...(err ? { error: err } : {}) }));
  }

  private onMessage(err: Error | null, msg: Msg): void {
    if (this.done) return;
    if (err) {
      this.finish({ reason: 'error', code: 'NATS_SUBSCRIPTION', error: err });
      return;
    }
    const data = msg.data;
    // Zero-length messages are never data (the contract's wake-ups); skip foreign ones.
    if (data.byteLength === 0) return;
    // A view of the socket chunk the parser read: that chunk is never reused, so handlers may keep it.
    this.pending.push({ mtype: this.mtype, body: Buffer.from(data.buffer, data.byteOffset, data.byteLength) });
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.deliver());
    }
  }

  private deliver(): void {
    this.scheduled = false;
    if (this.done || this.pending.length === 0) return;
    let batch = this.pending;
    if (batch.length > this.options.batchMessages) {
      this.pending = batch.slice(this.options.batchMessages);
      batch = batch.slice(0, this.options.batchMessages);
      this.scheduled = true;
      setImmediate(() => this.deliver());
    } else {
      this.pending = [];
    }
    this.onBatch(batch);
  }

  private finish(end: ReceiverEnd): void {
    if (this.done) return;
    this.done = true;
    this.pending = [];
    this.settle(end);
  }

  async close(): Promise<void> {
    if (this.done) return;
    this.finish({ reason: 'closed' });
    if (this.queue.isGone) return;
    try {
      this.sub.unsubscribe();
    } catch {
      // the connection closed meanwhile
    }
    // The server stops routing to us once it has read the UNSUB: wait for that (bounded).
    await this.queue.flush(2000);
  }
}

export interface NatsTransportOptions extends BacklogOptions {
  receiver: NatsReceiverOptions;
}

export const defaultNatsTransportOptions: NatsTransportOptions = Object.freeze({
  ...defaultBacklogOptions,
  receiver: defaultNatsReceiverOptions,
});

/**
 * The transport over NATS: mtype m is the subject `chatd.<cluster>.m.<m>`, one connection per
 * transport (a process). Same contract as the SysV transport, with NATS meanings: "queue full"
 * is "the connection is down, or holds `pendingBytes` unsent", so sends then wait in the
 * bounded backlog (BACKLOG_FULL past it) and go out once it is back; the server stores
 * nothing, so a message sent while nobody receives its mtype is lost (a request to it times
 * out). close() closes the connection too.
 */
export class NatsTransport extends QueueTransport<NatsQueue> {
  constructor(
    queue: NatsQueue,
    private readonly options: NatsTransportOptions = defaultNatsTransportOptions,
  ) {
    super(queue, options);
  }

  /** Connects, then builds the transport on its own connection. */
  static async connect(queueOptions: NatsQueueOptions, options: Partial<NatsTransportOptions> = {}): Promise<NatsTransport> {
    const queue = await NatsQueue.connect(queueOptions);
    return new NatsTransport(queue, { ...defaultNatsTransportOptions, ...options });
  }

  protected openReceiver(mtype: number, onBatch: BatchHandler): Receiver {
    return new NatsReceiver(this.queue, mtype, onBatch, this.options.receiver);
  }

  /** False while the connection is down: nothing sent now reaches anyone until it is back. */
  get reachable(): boolean {
    return this.queue.connected;
  }

  onReachability(listener: (reachable: boolean) => void): () => void {
    return this.queue.onReachability(listener);
  }

  override async close(): Promise<void> {
    await super.close();
    await this.queue.close();
  }
}
