/**
 * FIND answered in the shard's receiver thread (docs/cluster.md, "FIND in the receiver
 * thread"). Loaded by src/ipc/sysv/receiver-thread.ts through SysvReceiverOptions.inline, it
 * runs inside that thread: for an envelope made only of FIND requests, it looks each key up in
 * the directory's shared-memory replica and sends the reply envelope itself, so the shard's
 * main thread is not woken at all. Anything else (other kinds, garbage, another incarnation,
 * a replica that cannot answer now) returns false and goes to the main thread as before.
 *
 * The receiver thread calls it only when the main thread has handled every batch handed to
 * it: an answer given here never overtakes a record that reached the queue before it.
 */
import { ENVELOPE_MAGIC, ENVELOPE_VERSION, HEADER_BYTES, RECORD_HEADER_BYTES } from '../ipc/envelope';
import { REPLY_BIT } from '../ipc/endpoint';
import { Kind, Status } from '../cluster/kinds';
import { FIND_REPLY_FIXED, MAX_KEY_BYTES, isKeyBytes } from '../cluster/records';
import { fnv1a32Range } from '../cluster/shard-for';
import { ReplicaReader, R_BAD, R_ENVELOPES, R_EXPIRED, R_FINDS, R_SEND_FAILED, type ReplicaMemory } from './directory-replica';

export interface FindInlineData {
  replica: ReplicaMemory;
  shard: number;
  shards: number;
  /** The shard's mtype and incarnation (the replies' sender). */
  mtype: number;
  incarnation: number;
}

/** What the receiver thread lends the handler. */
export interface InlineIo {
  readonly maxMessageBytes: number;
  /** msgsnd(IPC_NOWAIT) of buf[8, 8 + textBytes) with the mtype in buf[0, 8): 0 or -1 (see errno). */
  msgsnd(mtype: number, buf: Buffer, textBytes: number): number;
  errno(): number;
  readonly EAGAIN: number;
  readonly EINTR: number;
}

export interface InlineHandler {
  /** One kernel message, body at buf[start, start + length). True: handled here. */
  handle(buf: Buffer, start: number, length: number): boolean;
}

const FIND = Kind.FIND;
const FIND_REPLY = Kind.FIND | REPLY_BIT;
const WRAP = 0x1_0000_0000;
/** A reply envelope that meets a full queue is retried this long at most (then dropped: the asker times out). */
const SEND_RETRY_MS = 200;

export function createInlineHandler(data: FindInlineData, io: InlineIo): InlineHandler {
  const reader = new ReplicaReader(data.replica);
  const { shard, shards, mtype, incarnation } = data;
  const max = io.maxMessageBytes;
  // [8-byte mtype][envelope]: what msgsnd takes.
  const out = Buffer.alloc(8 + max);
  const sleeper = new Int32Array(new SharedArrayBuffer(4));

  function send(to: number, bytes: number, count: number): void {
    out.writeUInt32LE(to % WRAP, 0);
    out.writeUInt32LE(Math.floor(to / WRAP), 4);
    out.writeUInt16LE(count, 8 + 4);
    const giveUp = Date.now() + SEND_RETRY_MS;
    for (;;) {
      if (io.msgsnd(to, out, bytes) === 0) return;
      const e = io.errno();
      if (e === io.EINTR) continue;
      if (e !== io.EAGAIN || Date.now() >= giveUp) {
        reader.count(R_SEND_FAILED, count);
        return;
      }
      Atomics.wait(sleeper, 0, 0, 1); // the queue is full: let it drain
    }
  }

  return {
    handle(buf, start, length) {
      const end = start + length;
      if (length < HEADER_BYTES + RECORD_HEADER_BYTES || buf.readUInt16LE(start) !== ENVELOPE_MAGIC || buf[start + 2] !== ENVELOPE_VERSION) return false;
      const count = buf.readUInt16LE(start + 4);
      const toInc = buf.readUInt32LE(start + 16);
      if (count === 0 || (toInc !== 0 && toInc !== incarnation)) return false;
      // Every record a FIND request, and the lengths adding up exactly.
      let at = start + HEADER_BYTES;
      for (let i = 0; i < count; i++) {
        if (at + RECORD_HEADER_BYTES > end || buf[at] !== FIND || buf.readUInt32LE(at + 4) === 0) return false;
        at += RECORD_HEADER_BYTES + buf.readUInt16LE(at + 2);
      }
      if (at !== end) return false;
      const from = buf.readUInt32LE(start + 8);
      const fromInc = buf.readUInt32LE(start + 12);
      const now = Date.now() % WRAP;
      // The reply envelope(s), written as we go.
      out.writeUInt16LE(ENVELOPE_MAGIC, 8);
      out[8 + 2] = ENVELOPE_VERSION;
      out[8 + 3] = 0;
      out.writeUInt16LE(0, 8 + 6);
      out.writeUInt32LE(mtype, 8 + 8);
      out.writeUInt32LE(incarnation, 8 + 12);
      out.writeUInt32LE(fromInc, 8 + 16);
      let w = 8 + HEADER_BYTES;
      let n = 0;
      let finds = 0;
      let sentAny = false;
      at = start + HEADER_BYTES;
      for (let i = 0; i < count; i++) {
        const len = buf.readUInt16LE(at + 2);
        const reqId = buf.readUInt32LE(at + 4);
        const deadline = buf.readUInt32LE(at + 8);
        const k = at + RECORD_HEADER_BYTES;
        at = k + len;
        if (deadline !== 0 && ((deadline - now) | 0) < 0) {
          reader.count(R_EXPIRED);
          continue; // its asker has given up
        }
        // Room for the largest reply record, else send what we have and go on in a new one.
        if (w + RECORD_HEADER_BYTES + FIND_REPLY_FIXED + MAX_KEY_BYTES > 8 + max) {
          send(from, w - 8, n);
          sentAny = true;
          w = 8 + HEADER_BYTES;
          n = 0;
        }
        let status: number = Status.OK;
        let payload = 0;
        if (!isKeyBytes(buf, k, at)) {
          status = Status.BAD_REQUEST;
          reader.count(R_BAD);
        } else {
          const hash = fnv1a32Range(buf, k, at);
          if (hash % shards !== shard) {
            status = Status.BAD_REQUEST;
            reader.count(R_BAD);
          } else {
            const r = reader.find(buf, k, at, hash, out, w + RECORD_HEADER_BYTES + FIND_REPLY_FIXED);
            if (r === -2) {
              // The replica cannot answer now (recovering, full, being rebuilt): hand the
              // envelope over whole, unless part of its answers went out already.
              if (!sentAny) return false;
              status = Status.UNAVAILABLE;
            } else if (r === -1) status = Status.NOT_FOUND;
            else {
              const hit = reader.hit;
              out.writeUInt16LE(hit.channel, w + RECORD_HEADER_BYTES);
              out.writeUInt32LE(hit.owner >>> 0, w + RECORD_HEADER_BYTES + 2);
              out.writeUInt32LE(hit.ownerInc >>> 0, w + RECORD_HEADER_BYTES + 6);
              payload = FIND_REPLY_FIXED + r;
            }
          }
        }
        out[w] = FIND_REPLY;
        out[w + 1] = status;
        out.writeUInt16LE(payload, w + 2);
        out.writeUInt32LE(reqId, w + 4);
        out.writeUInt32LE(deadline, w + 8);
        w += RECORD_HEADER_BYTES + payload;
        n++;
        finds++;
      }
      if (n > 0) send(from, w - 8, n);
      reader.count(R_FINDS, finds);
      reader.count(R_ENVELOPES);
      return true;
    },
  };
}
