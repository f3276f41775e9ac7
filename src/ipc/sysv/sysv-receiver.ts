import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import type { BatchHandler, ReceivedMessage, Receiver, ReceiverEnd } from '../transport';
import { CTRL_OUTSTANDING, CTRL_STOP, type ReceiverThreadData, type ReceiverThreadMessage } from './receiver-thread';
import { MTYPE_BYTES } from './libc';
import type { SysvQueue } from './sysv-queue';

export interface SysvReceiverOptions {
  batchBytes: number;
  batchMessages: number;
  maxOutstanding: number;
}

export const defaultReceiverOptions: SysvReceiverOptions = Object.freeze({
  batchBytes: 256 * 1024,
  batchMessages: 4096,
  maxOutstanding: 64,
});

/**
 * Main-thread side of one receiver thread. Turns transferred batch buffers into
 * ReceivedMessage views (no copies) and returns the credit once the handler is done with them.
 */
export class SysvReceiver implements Receiver {
  readonly ended: Promise<ReceiverEnd>;
  private readonly worker: Worker;
  private readonly control = new SharedArrayBuffer(8);
  private readonly ctrl = new Int32Array(this.control);
  private settle!: (end: ReceiverEnd) => void;
  private done = false;

  constructor(
    private readonly queue: SysvQueue,
    readonly mtype: number,
    private readonly onBatch: BatchHandler,
    options: SysvReceiverOptions = defaultReceiverOptions,
  ) {
    this.ended = new Promise((resolve) => (this.settle = resolve));
    const data: ReceiverThreadData & { kind: string } = {
      kind: 'sysv-receiver',
      queueId: queue.id,
      mtype,
      maxMessageBytes: queue.maxMessageBytes,
      batchBytes: options.batchBytes,
      batchMessages: options.batchMessages,
      maxOutstanding: options.maxOutstanding,
      control: this.control,
    };
    this.worker = new Worker(join(__dirname, 'receiver-thread.js'), { workerData: data, name: `mq-recv-${mtype}` });
    this.worker.on('message', (msg: ReceiverThreadMessage) => this.onThreadMessage(msg));
    this.worker.on('error', (error) => this.finish({ reason: 'error', code: 'RECEIVER_THREAD', error }));
    this.worker.on('exit', (code) => this.finish({ reason: 'error', code: 'RECEIVER_THREAD', error: new Error(`receiver thread exited (${code})`) }));
  }

  private onThreadMessage(msg: ReceiverThreadMessage): void {
    if (msg.type === 'end') {
      const error = msg.message ? new Error(msg.message) : undefined;
      this.finish({ reason: msg.reason, ...(msg.code ? { code: msg.code } : {}), ...(error ? { error } : {}) });
      return;
    }
    try {
      if (!this.done) this.onBatch(decodeBatch(msg.buffer, msg.count));
    } finally {
      Atomics.sub(this.ctrl, CTRL_OUTSTANDING, 1);
      Atomics.notify(this.ctrl, CTRL_OUTSTANDING);
    }
  }

  private finish(end: ReceiverEnd): void {
    if (this.done) return;
    this.done = true;
    this.settle(end);
    void this.worker.terminate();
  }

  async close(): Promise<void> {
    if (this.done) return;
    Atomics.store(this.ctrl, CTRL_STOP, 1);
    Atomics.notify(this.ctrl, CTRL_OUTSTANDING);
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
        this.finish({ reason: 'closed' });
        return;
      }
      await Promise.race([this.ended, delay(WAKE_RETRY_MS, undefined, { ref: false })]);
    }
  }
}

/** A stopping receiver re-sends its wake-up this often, this many times at most. */
const WAKE_RETRY_MS = 50;
const WAKE_ATTEMPTS = 40;

/** Splits a transferred batch into views: u32 length, i64 mtype, mtext, repeated. */
export function decodeBatch(buffer: ArrayBuffer, count: number): ReceivedMessage[] {
  const buf = Buffer.from(buffer);
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
