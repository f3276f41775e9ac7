import { IpcError } from '../ipc-error';
import { QueueTransport, defaultBacklogOptions, type BacklogOptions, type NonBlockingQueue } from '../queue-transport';
import type { BatchHandler, QueueStat, ReceivedMessage, Receiver, ReceiverEnd } from '../transport';

/**
 * An in-process stand-in for one System V queue: per-mtype FIFOs sharing one byte capacity,
 * so that "queue full" and backpressure behave as they do in the kernel. Several
 * LocalTransports on one LocalQueue play several processes.
 */
export class LocalQueue implements NonBlockingQueue {
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
export class LocalTransport extends QueueTransport<LocalQueue> {
  constructor(queue: LocalQueue, options: Partial<BacklogOptions> = {}) {
    super(queue, { ...defaultBacklogOptions, ...options });
  }

  protected openReceiver(mtype: number, onBatch: BatchHandler): Receiver {
    return new LocalReceiver(this.queue, mtype, onBatch, 4096);
  }
}
