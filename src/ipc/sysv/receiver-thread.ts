/**
 * The receiver thread: blocks in msgrcv for one mtype, then drains whatever else is waiting
 * with IPC_NOWAIT, and hands the lot to the main thread as one transferred ArrayBuffer.
 *
 * Batch layout, repeated: u32 LE length of mtext, then the kernel's msgbuf as msgrcv wrote it
 * (i64 mtype, mtext). msgrcv writes straight into the batch buffer, so nothing is copied
 * twice.
 *
 * Control (SharedArrayBuffer, Int32): [STOP] set by the owner before it wakes us with a
 * zero-length message of our mtype; [OUTSTANDING] batches posted but not yet handled: past
 * the limit we wait, and the messages stay in the kernel queue (backpressure, bounded memory).
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as c from './libc';

export const CTRL_STOP = 0;
export const CTRL_OUTSTANDING = 1;

export interface ReceiverThreadData {
  queueId: number;
  mtype: number;
  maxMessageBytes: number;
  /** Upper bound of one hand-over batch in bytes. */
  batchBytes: number;
  /** Upper bound of messages in one batch. */
  batchMessages: number;
  maxOutstanding: number;
  control: SharedArrayBuffer;
}

export type ReceiverThreadMessage =
  | { type: 'batch'; buffer: ArrayBuffer; count: number }
  | { type: 'end'; reason: 'closed' | 'removed' | 'error'; code?: string; message?: string };

function run(data: ReceiverThreadData): void {
  const port = parentPort!;
  const ctrl = new Int32Array(data.control);
  const slot = 4 + c.MTYPE_BYTES + data.maxMessageBytes;
  const scratch = Buffer.alloc(Math.max(data.batchBytes, slot));
  const end = (msg: ReceiverThreadMessage): void => port.postMessage(msg);

  for (;;) {
    // Backpressure: wait while the owner has too many batches unhandled.
    for (;;) {
      if (Atomics.load(ctrl, CTRL_STOP) !== 0) return end({ type: 'end', reason: 'closed' });
      const outstanding = Atomics.load(ctrl, CTRL_OUTSTANDING);
      if (outstanding < data.maxOutstanding) break;
      Atomics.wait(ctrl, CTRL_OUTSTANDING, outstanding, 100);
    }

    let used = 0;
    let count = 0;
    let flags = 0; // the first receive blocks; the drain after it does not
    while (count < data.batchMessages && used + slot <= scratch.length) {
      const at = scratch.subarray(used + 4, used + slot);
      const n = c.msgrcv(data.queueId, at, data.maxMessageBytes, data.mtype, flags | c.MSG_NOERROR);
      if (n < 0) {
        const e = c.errno();
        if (e === c.EINTR) continue;
        if (e === c.ENOMSG || e === c.EAGAIN) break;
        if (count > 0) post(port, ctrl, scratch, used, count);
        if (e === c.EIDRM || e === c.EINVAL) return end({ type: 'end', reason: 'removed', code: c.errnoName(e) });
        return end({ type: 'end', reason: 'error', code: c.errnoName(e), message: `msgrcv failed: ${c.errnoName(e)}` });
      }
      if (n === 0) {
        // Zero-length messages are wake-ups from an owner that is stopping us.
        if (Atomics.load(ctrl, CTRL_STOP) === 0) continue;
        if (count > 0) post(port, ctrl, scratch, used, count);
        return end({ type: 'end', reason: 'closed' });
      }
      scratch.writeUInt32LE(n, used);
      used += 4 + c.MTYPE_BYTES + n;
      count++;
      flags = c.IPC_NOWAIT;
    }
    if (count > 0) post(port, ctrl, scratch, used, count);
  }
}

function post(port: NonNullable<typeof parentPort>, ctrl: Int32Array, scratch: Buffer, used: number, count: number): void {
  Atomics.add(ctrl, CTRL_OUTSTANDING, 1);
  // Copy out only the used part, and transfer it: no structured clone of the bytes.
  const buffer = (scratch.buffer as ArrayBuffer).slice(scratch.byteOffset, scratch.byteOffset + used);
  port.postMessage({ type: 'batch', buffer, count } satisfies ReceiverThreadMessage, [buffer]);
}

if (parentPort && workerData && (workerData as { kind?: string }).kind === 'sysv-receiver') {
  run(workerData as ReceiverThreadData);
}
