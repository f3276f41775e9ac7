import { IpcError, TransportClosedError, checkMtype } from '../ipc-error';
import { SendBacklog } from '../send-backlog';
import type { BatchHandler, MessageTransport, QueueStat, ReceivedMessage, Receiver, ReceiverEnd, TransportCounters } from '../transport';

/**
 * An in-process stand-in for one System V queue: per-mtype FIFOs sharing one byte capacity,
 * so that "queue full" and backpressure behave as they do in the kernel. Several
 * LocalTransports on one LocalQueue play several processes.
 */
export class LocalQueue {
  private readonly fifos = new Map<number, Buffer[]>();
  /** Several receivers may share an mtype (as two processes may, briefly, during a restart). */
  private readonly waiters = new Map<number, Set<() => void>>();
  private used = 0;
  private count = 0;
  removed = false;

  constructor(
    readonly capacity = 16384,
    readonly maxMessageBytes = 8192,
  ) {}

  trySend(mtype: number, body: Uint8Array): boolean {
    if (this.removed) throw new IpcError('EIDRM', 'msgsnd failed: EIDRM (queue removed)', 'msgsnd');
    if (body.byteLength > this.maxMessageBytes) throw new IpcError('E2BIG', `message of ${body.byteLength} bytes exceeds msgmax ${this.maxMessageBytes}`, 'msgsnd');
    if (!(mtype >= 1 && Number.isSafeInteger(mtype))) throw new IpcError('EINVAL', `mtype ${mtype} must be a positive integer`, 'msgsnd');
    // The kernel admits a message while used + size <= capacity.
    if (this.used + body.byteLength > this.capacity) return false;
    let fifo = this.fifos.get(mtype);
    if (!fifo) this.fifos.set(mtype, (fifo = []));
    fifo.push(Buffer.from(body));
    this.used += body.byteLength;
    this.count++;
    const waiting = this.waiters.get(mtype);
    if (waiting) for (const wake of waiting) wake();
    return true;
  }

  /** Takes up to `max` messages of one mtype. */
  take(mtype: number, max: number): Buffer[] {
    const fifo = this.fifos.get(mtype);
    if (!fifo || fifo.length === 0) return [];
    const out = fifo.splice(0, max);
    for (const b of out) this.used -= b.byteLength;
    this.count -= out.length;
    return out;
  }

  /** Calls `wake` on every arrival of `mtype` (and on removal); returns the unsubscribe. */
  onArrival(mtype: number, wake: () => void): () => void {
    let waiting = this.waiters.get(mtype);
    if (!waiting) this.waiters.set(mtype, (waiting = new Set()));
    const set = waiting;
    set.add(wake);
    return () => {
      set.delete(wake);
      if (set.size === 0 && this.waiters.get(mtype) === set) this.waiters.delete(mtype);
    };
  }

  stat(): QueueStat {
    return { messages: this.count, bytes: this.used, capacity: this.capacity, mode: 0o600, lastSendPid: process.pid, lastReceivePid: process.pid };
  }

  /** Like IPC_RMID: every receiver ends with EIDRM. */
  remove(): void {
    if (this.removed) return;
    this.removed = true;
    this.fifos.clear();
    const wake = [...this.waiters.values()].flatMap((set) => [...set]);
    this.waiters.clear();
    for (const w of wake) w();
  }
}

class LocalReceiver implements Receiver {
  readonly ended: Promise<ReceiverEnd>;
  private settle!: (end: ReceiverEnd) => void;
  private scheduled = false;
  private done = false;
  private readonly stopWaiting: () => void;

  constructor(
    private readonly queue: LocalQueue,
    readonly mtype: number,
    private readonly onBatch: BatchHandler,
    private readonly batchMessages: number,
  ) {
    this.ended = new Promise((resolve) => (this.settle = resolve));
    this.stopWaiting = queue.onArrival(mtype, () => this.schedule());
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled || this.done) return;
    this.scheduled = true;
    // Asynchronous like a receiver thread: never re-enter the sender's stack.
    setImmediate(() => this.deliver());
  }

  private deliver(): void {
    this.scheduled = false;
    if (this.done) return;
    if (this.queue.removed) return this.finish({ reason: 'removed', code: 'EIDRM' });
    const bodies = this.queue.take(this.mtype, this.batchMessages);
    if (bodies.length === 0) return;
    const batch: ReceivedMessage[] = bodies.map((body) => ({ mtype: this.mtype, body }));
    this.onBatch(batch);
    this.schedule();
  }

  finish(end: ReceiverEnd): void {
    if (this.done) return;
    this.done = true;
    this.stopWaiting();
    this.settle(end);
  }

  async close(): Promise<void> {
    this.finish({ reason: 'closed' });
  }
}

/** The in-process transport: same contract as SysvTransport, no kernel involved. */
export class LocalTransport implements MessageTransport {
  private readonly backlog: SendBacklog;
  private readonly receivers = new Map<number, LocalReceiver>();
  private sent = 0;
  private received = 0;
  private closed = false;

  constructor(
    readonly queue: LocalQueue,
    options: { backlogMessages?: number; backlogBytes?: number; onSendError?: (err: Error) => void } = {},
  ) {
    this.backlog = new SendBacklog(
      (mtype, body) => {
        const ok = queue.trySend(mtype, body);
        if (ok) this.sent++;
        return ok;
      },
      {
        maxMessages: options.backlogMessages ?? 100_000,
        maxBytes: options.backlogBytes ?? 64 * 1024 * 1024,
        minRetryMs: 1,
        maxRetryMs: 20,
        onError: options.onSendError ?? (() => {}),
      },
    );
  }

  get maxMessageBytes(): number {
    return this.queue.maxMessageBytes;
  }

  send(mtype: number, body: Uint8Array): void {
    if (this.closed) throw new TransportClosedError('closed');
    if (this.queue.removed) {
      this.backlog.close('queue removed');
      throw new TransportClosedError('queue removed');
    }
    if (body.byteLength > this.queue.maxMessageBytes) {
      throw new IpcError('E2BIG', `message of ${body.byteLength} bytes exceeds msgmax ${this.queue.maxMessageBytes}`, 'msgsnd');
    }
    if (body.byteLength === 0) throw new IpcError('EINVAL', 'empty messages are reserved for receiver wake-ups', 'msgsnd');
    checkMtype(mtype);
    this.backlog.send(mtype, body);
  }

  receive(mtype: number, onBatch: BatchHandler): Receiver {
    if (this.closed) throw new TransportClosedError('closed');
    if (this.receivers.has(mtype)) throw new IpcError('EBUSY', `already receiving mtype ${mtype}`);
    const receiver = new LocalReceiver(
      this.queue,
      mtype,
      (batch) => {
        this.received += batch.length;
        onBatch(batch);
      },
      4096,
    );
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
