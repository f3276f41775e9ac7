/**
 * The receiver thread: blocks in msgrcv for one mtype, then drains whatever else is waiting
 * with IPC_NOWAIT, and hands the lot to the main thread as one batch. Two hand-overs
 * (SysvReceiverOptions.handover):
 *
 *   ring  msgrcv writes straight into a SharedArrayBuffer ring; the batch is published with
 *         Atomics (CTRL_PUB) and the main thread, waiting in Atomics.waitAsync, is woken by
 *         Atomics.notify. No postMessage per batch.
 *   post  msgrcv writes into a scratch buffer; the used part is copied into a fresh
 *         ArrayBuffer and transferred with postMessage.
 *
 * Batch layout, repeated `count` times: u32 LE length of mtext, then the kernel's msgbuf as
 * msgrcv wrote it (i64 mtype, mtext). In the ring each batch is preceded by an 8-byte header
 * (u32 bytes of records, u32 count; count RING_WRAP: "the next batch starts at offset 0") and
 * starts on an 8-byte boundary.
 *
 * Control (SharedArrayBuffer, Int32), see the CTRL_ constants. Backpressure, both hand-overs:
 * at most `maxOutstanding` batches handed over and not yet handled, and (ring) the ring's free
 * space. While either is short the thread waits and the messages stay in the kernel queue.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as c from './libc';

/** Set by the owner before it wakes us with a zero-length message of our mtype. */
export const CTRL_STOP = 0;
/** Batches handed over and not yet handled (the thread adds, the owner subtracts after the handler). */
export const CTRL_OUTSTANDING = 1;
/** ring: batches published so far (Int32, wraps). */
export const CTRL_PUB = 2;
/** ring: the reader's byte offset; the ring from there up to the writer's offset is in use. */
export const CTRL_READ = 3;
/** 1 while the thread sleeps waiting for credit or ring space (the owner notifies only then). */
export const CTRL_WRITER_WAITING = 4;
export const CONTROL_BYTES = 32;

export const RING_HEADER = 8;
export const RING_WRAP = 0xffff_ffff;
/** Bytes kept free between writer and reader (so equal offsets only ever mean "empty"). */
export const RING_GAP = 8;
export const align8 = (n: number): number => (n + 7) & ~7;
/** Bytes one message can take in a batch: u32 length, i64 mtype, mtext. */
export const slotBytes = (maxMessageBytes: number): number => 4 + c.MTYPE_BYTES + maxMessageBytes;
/** The smallest ring that works: room for two largest messages at once. */
export const minRingBytes = (maxMessageBytes: number): number => 2 * align8(RING_HEADER + slotBytes(maxMessageBytes)) + 2 * RING_GAP;

export type Handover = 'ring' | 'post';

export interface ReceiverThreadData {
  queueId: number;
  mtype: number;
  maxMessageBytes: number;
  /** Upper bound of one hand-over batch in bytes. */
  batchBytes: number;
  /** Upper bound of messages in one batch. */
  batchMessages: number;
  maxOutstanding: number;
  handover: Handover;
  control: SharedArrayBuffer;
  /** handover 'ring': the ring (its length a multiple of 8, at least minRingBytes). */
  ring?: SharedArrayBuffer;
  /** An inline handler loaded into this thread (see InlineSpec). */
  inline?: InlineSpec;
}

/**
 * A module that handles some messages in the receiver thread itself, so that the main thread
 * is not woken for them (the shard's FIND: src/channeld/find-inline.ts). It exports
 * `createInlineHandler(data, io)` returning `{ handle(buf, start, length): boolean }`. The
 * thread offers it a message only when the main thread has handled every batch handed to it
 * and no message of the batch being built precedes it, so queue order is kept: what the
 * handler answers never overtakes an earlier message.
 *
 * `io.msgsnd` sends with IPC_NOWAIT. A handler must never wait for room in the queue: it is
 * the thread that drains its mtype, and the room may be held by messages only it would take
 * (a deadlock until their deadlines). On EAGAIN it calls `io.defer`, which hands the message
 * to the owner's send backlog (receiver-thread message `send`), and goes on.
 */
export interface InlineSpec {
  /** Absolute path of the module (required in the thread). */
  module: string;
  /** Its data (structured-cloned; SharedArrayBuffers are shared). */
  data: unknown;
}

interface InlineHandler {
  handle(buf: Buffer, start: number, length: number): boolean;
}
let inline: InlineHandler | undefined;

export type ReceiverThreadMessage =
  | { type: 'batch'; buffer: ArrayBuffer; count: number }
  /** A message an inline handler could not send (the queue full): the owner sends it through its backlog. */
  | { type: 'send'; mtype: number; buffer: ArrayBuffer }
  | { type: 'end'; reason: 'closed' | 'removed' | 'error'; code?: string; message?: string };

type End = Extract<ReceiverThreadMessage, { type: 'end' }>;

/** Result of receiveBatch besides its return value (no object per batch). */
let batchUsed = 0;
let batchCount = 0;

/**
 * Receives one batch into buf[base, base + cap): blocks for the first message, then drains
 * with IPC_NOWAIT until the queue has none of our mtype, `batchMessages` are taken, or the
 * next message might not fit. Sets batchUsed / batchCount; returns how the thread must end,
 * if it must (what was received before that is in the batch).
 */
function receiveBatch(d: ReceiverThreadData, ctrl: Int32Array, buf: Buffer, base: number, cap: number): End | undefined {
  const slot = slotBytes(d.maxMessageBytes);
  let used = 0;
  let count = 0;
  let flags = 0; // the first receive blocks; the drain after it does not
  batchUsed = 0;
  batchCount = 0;
  try {
    while (count < d.batchMessages && used + slot <= cap) {
      const at = buf.subarray(base + used + 4, base + used + slot);
      const n = c.msgrcv(d.queueId, at, d.maxMessageBytes, d.mtype, flags | c.MSG_NOERROR);
      if (n < 0) {
        const e = c.errno();
        if (e === c.EINTR) continue;
        if (e === c.ENOMSG || e === c.EAGAIN) return undefined;
        if (e === c.EIDRM || e === c.EINVAL) return { type: 'end', reason: 'removed', code: c.errnoName(e) };
        return { type: 'end', reason: 'error', code: c.errnoName(e), message: `msgrcv failed: ${c.errnoName(e)}` };
      }
      if (n === 0) {
        // Zero-length messages are wake-ups from an owner that is stopping us.
        if (Atomics.load(ctrl, CTRL_STOP) === 0) continue;
        return { type: 'end', reason: 'closed' };
      }
      flags = c.IPC_NOWAIT;
      if (inline !== undefined && count === 0 && Atomics.load(ctrl, CTRL_OUTSTANDING) === 0 && inline.handle(buf, base + used + 4 + c.MTYPE_BYTES, n)) continue;
      buf.writeUInt32LE(n, base + used);
      used += 4 + c.MTYPE_BYTES + n;
      count++;
      flags = c.IPC_NOWAIT;
    }
    return undefined;
  } finally {
    batchUsed = used;
    batchCount = count;
  }
}

/** Waits (in 100 ms slices, rechecking STOP) while `index` still holds `value`. */
function sleepOn(ctrl: Int32Array, index: number, value: number): void {
  Atomics.store(ctrl, CTRL_WRITER_WAITING, 1);
  Atomics.wait(ctrl, index, value, 100);
  Atomics.store(ctrl, CTRL_WRITER_WAITING, 0);
}

/** Waits for a free batch credit; false when stopped. */
function waitCredit(d: ReceiverThreadData, ctrl: Int32Array): boolean {
  for (;;) {
    if (Atomics.load(ctrl, CTRL_STOP) !== 0) return false;
    const outstanding = Atomics.load(ctrl, CTRL_OUTSTANDING);
    if (outstanding < d.maxOutstanding) return true;
    sleepOn(ctrl, CTRL_OUTSTANDING, outstanding);
  }
}

function runPost(d: ReceiverThreadData, ctrl: Int32Array, port: NonNullable<typeof parentPort>): End {
  const scratch = Buffer.alloc(Math.max(d.batchBytes, slotBytes(d.maxMessageBytes)));
  for (;;) {
    if (!waitCredit(d, ctrl)) return { type: 'end', reason: 'closed' };
    const end = receiveBatch(d, ctrl, scratch, 0, scratch.length);
    if (batchCount > 0) {
      Atomics.add(ctrl, CTRL_OUTSTANDING, 1);
      // Copy out only the used part, and transfer it: no structured clone of the bytes.
      const buffer = (scratch.buffer as ArrayBuffer).slice(scratch.byteOffset, scratch.byteOffset + batchUsed);
      port.postMessage({ type: 'batch', buffer, count: batchCount } satisfies ReceiverThreadMessage, [buffer]);
    }
    if (end) return end;
  }
}

function runRing(d: ReceiverThreadData, ctrl: Int32Array): End {
  const ring = Buffer.from(d.ring!);
  const size = ring.length;
  const slot = slotBytes(d.maxMessageBytes);
  const minNeed = RING_HEADER + slot;
  const maxCap = align8(RING_HEADER + Math.max(d.batchBytes, slot));
  let w = 0;
  for (;;) {
    if (!waitCredit(d, ctrl)) return { type: 'end', reason: 'closed' };
    // Reserve contiguous space at w for one batch: at least one largest message. RING_HEADER
    // bytes always stay free at the end (room for a wrap mark), and RING_GAP between writer
    // and reader.
    let cap = 0;
    for (;;) {
      if (Atomics.load(ctrl, CTRL_STOP) !== 0) return { type: 'end', reason: 'closed' };
      const r = Atomics.load(ctrl, CTRL_READ);
      if (w >= r) {
        const toEnd = size - RING_HEADER - w - (r === 0 ? RING_GAP : 0);
        if (toEnd >= minNeed) {
          cap = toEnd;
          break;
        }
        if (r >= minNeed + RING_GAP) {
          ring.writeUInt32LE(RING_WRAP, w + 4); // the reader goes to 0 when it gets here
          w = 0;
          continue;
        }
      } else if (r - w - RING_GAP >= minNeed) {
        cap = r - w - RING_GAP;
        break;
      }
      sleepOn(ctrl, CTRL_READ, r);
    }
    cap = Math.min(cap & ~7, maxCap);
    // msgrcv writes straight into the shared ring: nothing is copied on this side.
    const end = receiveBatch(d, ctrl, ring, w + RING_HEADER, cap - RING_HEADER);
    if (batchCount > 0) {
      ring.writeUInt32LE(batchUsed, w);
      ring.writeUInt32LE(batchCount, w + 4);
      w = align8(w + RING_HEADER + batchUsed);
      Atomics.add(ctrl, CTRL_OUTSTANDING, 1);
      // Sequentially consistent: the batch's bytes are visible to whoever sees the new count.
      Atomics.add(ctrl, CTRL_PUB, 1);
      Atomics.notify(ctrl, CTRL_PUB);
    }
    if (end) return end;
  }
}

function run(d: ReceiverThreadData): void {
  const port = parentPort!;
  if (d.inline) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require(d.inline.module) as { createInlineHandler: (data: unknown, io: unknown) => InlineHandler };
    inline = mod.createInlineHandler(d.inline.data, {
      maxMessageBytes: d.maxMessageBytes,
      msgsnd: (_mtype: number, buf: Buffer, textBytes: number) => c.msgsnd(d.queueId, buf, textBytes, c.IPC_NOWAIT),
      // The queue is full: the owner's send backlog takes the message (the thread must go on
      // receiving: waiting here for room could wait for ever, docs/reliability.md "The stall").
      defer: (mtype: number, buf: Buffer, textBytes: number) => {
        const buffer = (buf.buffer as ArrayBuffer).slice(buf.byteOffset + 8, buf.byteOffset + 8 + textBytes);
        port.postMessage({ type: 'send', mtype, buffer } satisfies ReceiverThreadMessage, [buffer]);
      },
      errno: c.errno,
      EAGAIN: c.EAGAIN,
      EINTR: c.EINTR,
    });
  }
  const ctrl = new Int32Array(d.control);
  // In the ring, published batches reach the owner before this (it drains the ring on 'end').
  port.postMessage(d.handover === 'ring' ? runRing(d, ctrl) : runPost(d, ctrl, port));
}

if (parentPort && workerData && (workerData as { kind?: string }).kind === 'sysv-receiver') {
  run(workerData as ReceiverThreadData);
}
