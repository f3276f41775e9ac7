import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { IpcError } from '../ipc-error';
import type { BatchHandler, ReceivedMessage, Receiver, ReceiverEnd } from '../transport';
import {
  CONTROL_BYTES,
  CTRL_OUTSTANDING,
  CTRL_PUB,
  CTRL_READ,
  CTRL_STOP,
  CTRL_WRITER_WAITING,
  RING_HEADER,
  RING_WRAP,
  align8,
  minRingBytes,
  type Handover,
  type InlineSpec,
  type ReceiverThreadData,
  type ReceiverThreadMessage,
} from './receiver-thread';
import { MTYPE_BYTES } from './libc';
import type { SysvQueue } from './sysv-queue';

export type { Handover, InlineSpec } from './receiver-thread';

export interface SysvReceiverOptions {
  batchBytes: number;
  batchMessages: number;
  maxOutstanding: number;
  /**
   * How the receiver thread hands batches to the main thread (docs/ipc.md, "The hand-over"):
   * 'ring' (SharedArrayBuffer ring, Atomics.notify / Atomics.waitAsync) or 'post'
   * (transferred ArrayBuffer, postMessage). Default DEFAULT_HANDOVER.
   */
  handover?: Handover;
  /** handover 'ring': bytes of the ring (rounded down to a multiple of 8). Default 1 MiB. */
  ringBytes?: number;
  /** Messages handled in the receiver thread itself (receiver-thread.ts, InlineSpec). */
  inline?: InlineSpec;
}

/** The hand-over measured faster in the layer (docs/benchmarks.md, "The hand-over decision"). */
export const DEFAULT_HANDOVER: Handover = 'ring';
export const DEFAULT_RING_BYTES = 1 << 20;

export const defaultReceiverOptions: SysvReceiverOptions = Object.freeze({
  batchBytes: 256 * 1024,
  batchMessages: 4096,
  maxOutstanding: 64,
  handover: DEFAULT_HANDOVER,
  ringBytes: DEFAULT_RING_BYTES,
});

type WaitAsyncResult = { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
/** Atomics.waitAsync: in Node 20 (V8 11), but not in the project's lib setting (ES2022). */
const waitAsync = (Atomics as unknown as { waitAsync: (a: Int32Array, index: number, value: number) => WaitAsyncResult }).waitAsync;

/**
 * Main-thread side of one receiver thread. Turns each handed-over batch into ReceivedMessage
 * views over one buffer that belongs to that batch alone (never reused, so a handler may keep
 * the bodies), and returns the batch's credit once the handler is done with it.
 */
export class SysvReceiver implements Receiver {
  readonly ended: Promise<ReceiverEnd>;
  readonly handover: Handover;
  private readonly worker: Worker;
  private readonly control = new SharedArrayBuffer(CONTROL_BYTES);
  private readonly ctrl = new Int32Array(this.control);
  private settle!: (end: ReceiverEnd) => void;
  private done = false;
  /** ring: the ring, the reader's offset, batches consumed (Int32 wrap, as CTRL_PUB). */
  private readonly ring: Buffer | undefined;
  private readAt = 0;
  private seen = 0;
  /** ring: a wait (or an immediate) is scheduled to consume the next batches. */
  private armed = false;

  constructor(
    private readonly queue: SysvQueue,
    readonly mtype: number,
    private readonly onBatch: BatchHandler,
    options: SysvReceiverOptions = defaultReceiverOptions,
    /**
     * Sends what the thread's inline handler could not (a full queue), through the owner's
     * send backlog. Without it such messages are dropped (their askers time out).
     */
    private readonly sendDeferred?: (mtype: number, body: Uint8Array) => void,
  ) {
    this.handover = options.handover ?? DEFAULT_HANDOVER;
    let ring: SharedArrayBuffer | undefined;
    if (this.handover === 'ring') {
      const bytes = Math.floor((options.ringBytes ?? DEFAULT_RING_BYTES) / 8) * 8;
      const min = minRingBytes(queue.maxMessageBytes);
      if (!(bytes >= min)) throw new IpcError('EINVAL', `ringBytes ${options.ringBytes} is below the minimum ${min} for msgmax ${queue.maxMessageBytes}`);
      ring = new SharedArrayBuffer(bytes);
      this.ring = Buffer.from(ring);
    } else if (this.handover !== 'post') {
      throw new IpcError('EINVAL', `unknown hand-over ${String(this.handover)}`);
    }
    this.ended = new Promise((resolve) => (this.settle = resolve));
    const data: ReceiverThreadData & { kind: string } = {
      kind: 'sysv-receiver',
      queueId: queue.id,
      mtype,
      maxMessageBytes: queue.maxMessageBytes,
      batchBytes: options.batchBytes,
      batchMessages: options.batchMessages,
      maxOutstanding: options.maxOutstanding,
      handover: this.handover,
      control: this.control,
      ...(ring ? { ring } : {}),
      ...(options.inline ? { inline: options.inline } : {}),
    };
    this.worker = new Worker(join(__dirname, 'receiver-thread.js'), { workerData: data, name: `mq-recv-${mtype}` });
    this.worker.on('message', (msg: ReceiverThreadMessage) => this.onThreadMessage(msg));
    this.worker.on('error', (error) => this.threadGone({ reason: 'error', code: 'RECEIVER_THREAD', error }));
    this.worker.on('exit', (code) => this.threadGone({ reason: 'error', code: 'RECEIVER_THREAD', error: new Error(`receiver thread exited (${code})`) }));
    if (this.ring) this.arm();
  }

  private onThreadMessage(msg: ReceiverThreadMessage): void {
    if (msg.type === 'end') {
      const error = msg.message ? new Error(msg.message) : undefined;
      this.threadGone({ reason: msg.reason, ...(msg.code ? { code: msg.code } : {}), ...(error ? { error } : {}) });
      return;
    }
    if (msg.type === 'send') {
      if (!this.done) this.sendDeferred?.(msg.mtype, new Uint8Array(msg.buffer));
      return;
    }
    try {
      if (!this.done) this.onBatch(decodeBatch(msg.buffer, msg.count));
    } finally {
      this.release();
    }
  }

  /** One batch handled: its credit goes back to the thread. */
  private release(): void {
    Atomics.sub(this.ctrl, CTRL_OUTSTANDING, 1);
    // The thread sets WRITER_WAITING before it compares and sleeps: no wake-up is lost.
    if (Atomics.load(this.ctrl, CTRL_WRITER_WAITING) !== 0) Atomics.notify(this.ctrl, CTRL_OUTSTANDING);
  }

  /** ring: wait for the next publication (or go on at once, on the next turn, when there is one). */
  private arm(): void {
    if (this.done || this.armed) return;
    this.armed = true;
    const w = waitAsync(this.ctrl, CTRL_PUB, this.seen);
    if (w.async) void w.value.then(this.onSignal);
    // Published while we were handling: go on after what the handlers queued (I/O, flushes).
    else setImmediate(this.onSignal);
  }

  private readonly onSignal = (): void => {
    this.armed = false;
    if (this.done) return;
    try {
      this.consume();
    } finally {
      this.arm();
    }
  };

  /**
   * ring: hands over the batches published so far, in order. Each is copied out of the ring
   * into its own buffer (one copy per batch, the same as 'post' makes on the thread), and its
   * ring space is freed before the handler runs; the credit comes back after it.
   */
  private consume(): void {
    const ring = this.ring!;
    const ctrl = this.ctrl;
    const pub = Atomics.load(ctrl, CTRL_PUB);
    let failure: { err: unknown } | undefined;
    while (this.seen !== pub) {
      let at = this.readAt;
      let count = ring.readUInt32LE(at + 4);
      if (count === RING_WRAP) {
        at = 0;
        count = ring.readUInt32LE(4);
      }
      const used = ring.readUInt32LE(at);
      const own = Buffer.allocUnsafe(used);
      ring.copy(own, 0, at + RING_HEADER, at + RING_HEADER + used);
      this.readAt = align8(at + RING_HEADER + used);
      this.seen = (this.seen + 1) | 0;
      Atomics.store(ctrl, CTRL_READ, this.readAt);
      if (Atomics.load(ctrl, CTRL_WRITER_WAITING) !== 0) Atomics.notify(ctrl, CTRL_READ);
      try {
        if (!this.done) this.onBatch(decodeViews(own, count));
      } catch (err) {
        // As with 'post' (an exception in a 'message' listener): reported as uncaught, and
        // the batches after it are still handed over.
        failure ??= { err };
      } finally {
        this.release();
      }
    }
    if (failure) {
      const { err } = failure;
      process.nextTick(() => {
        throw err;
      });
    }
  }

  /** The thread ended (or died): what it published first is still handed over. */
  private threadGone(end: ReceiverEnd): void {
    if (this.done) return;
    if (this.ring) this.consume();
    this.finish(end);
  }

  private finish(end: ReceiverEnd): void {
    if (this.done) return;
    this.done = true;
    this.settle(end);
    // Settles a pending Atomics.waitAsync of ours, so that it does not stay registered.
    if (this.ring) Atomics.notify(this.ctrl, CTRL_PUB);
    void this.worker.terminate();
  }

  async close(): Promise<void> {
    if (this.done) return;
    Atomics.store(this.ctrl, CTRL_STOP, 1);
    Atomics.notify(this.ctrl, CTRL_OUTSTANDING);
    Atomics.notify(this.ctrl, CTRL_READ);
    // Wake the thread out of its blocking msgrcv with a zero-length message of its own mtype.
    // Another receiver of the same mtype (another process, during a restart) may take the
    // wake-up instead and ignore it, so it is sent again until our thread has ended.
    // If the queue is full or gone the wake-up cannot be sent: the thread stays blocked until
    // the next message or the queue's removal, so it must not keep the process alive.
    for (let attempt = 0; !this.done; attempt++) {
      let woke = false;
      try {
        woke = attempt < WAKE_ATTEMPTS && this.queue.trySend(this.mtype, new Uint8Array(0));
      } catch {
        /* queue gone: the thread has seen EIDRM or will */
      }
      if (!woke) {
        this.worker.unref();
        blocked.add(this);
        this.worker.once('exit', () => blocked.delete(this));
        this.finish({ reason: 'closed' });
        return;
      }
      await Promise.race([this.ended, delay(WAKE_RETRY_MS, undefined, { ref: false })]);
    }
  }
}

/** Receivers closed whose thread could not be woken: still blocked in msgrcv. */
const blocked = new Set<SysvReceiver>();

/**
 * How many receiver threads of this process are blocked in msgrcv with no wake-up possible
 * (the queue full). process.exit() would wait for them (it joins worker threads): a daemon
 * then ends with libc's _exit instead (runtime/lifecycle.ts).
 */
export function blockedReceiverThreads(): number {
  return blocked.size;
}

/** A stopping receiver re-sends its wake-up this often, this many times at most. */
const WAKE_RETRY_MS = 50;
const WAKE_ATTEMPTS = 40;

/** Splits a transferred batch into views: u32 length, i64 mtype, mtext, repeated. */
export function decodeBatch(buffer: ArrayBuffer, count: number): ReceivedMessage[] {
  return decodeViews(Buffer.from(buffer), count);
}

function decodeViews(buf: Buffer, count: number): ReceivedMessage[] {
  const out = new Array<ReceivedMessage>(count);
  let at = 0;
  for (let i = 0; i < count; i++) {
    const len = buf.readUInt32LE(at);
    const mtype = buf.readUInt32LE(at + 4) + buf.readUInt32LE(at + 8) * 0x1_0000_0000;
    const start = at + 4 + MTYPE_BYTES;
    out[i] = { mtype, body: buf.subarray(start, start + len) };
    at = start + len;
  }
  return out;
}
