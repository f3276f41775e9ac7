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
import { ReplicaReader, R_BAD, R_DEFERRED, R_ENVELOPES, R_EXPIRED, R_FINDS, R_SEND_FAILED, type ReplicaMemory } from './directory-replica';

export interface FindInlineData {
  replica: ReplicaMemory;
  /** The shard's mtype and incarnation (the replies' sender). */
  mtype: number;
  incarnation: number;
}

/** What the receiver thread lends the handler. */
export interface InlineIo {
  readonly maxMessageBytes: number;
  /** msgsnd(IPC_NOWAIT) of buf[8, 8 + textBytes) with the mtype in buf[0, 8): 0 or -1 (see errno). */
  msgsnd(mtype: number, buf: Buffer, textBytes: number): number;
  /**
   * Hands buf[8, 8 + textBytes) to the main thread, which sends it through its send backlog:
   * for a message that met a full queue (copied; buf may be reused at once).
   */
  defer(mtype: number, buf: Buffer, textBytes: number): void;
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

export function createInlineHandler(data: FindInlineData, io: InlineIo): InlineHandler {
  const reader = new ReplicaReader(data.replica);
  const { mtype, incarnation } = data;
  const max = io.maxMessageBytes;
  // [8-byte mtype][envelope]: what msgsnd takes.
  const out = Buffer.alloc(8 + max);

  /**
   * Sends the reply envelope in `out`. On a full queue it goes to the main thread's send
   * backlog (io.defer), never waited for here: this thread is what drains the shard's requests
   * from the queue, and a reply is bigger than its request, so the room it needs may be held
   * by requests only this thread would take (with several shards, by requests for shards
   * whose threads all wait likewise). Waiting stalled every FIND of the cluster until the
   * replies' deadlines (docs/reliability.md, "The stall").
   */
  function send(to: number, bytes: number, count: number): void {
    out.writeUInt32LE(to % WRAP, 0);
    out.writeUInt32LE(Math.floor(to / WRAP), 4);
    out.writeUInt16LE(count, 8 + 4);
    for (;;) {
      if (io.msgsnd(to, out, bytes) === 0) return;
      const e = io.errno();
      if (e === io.EINTR) continue;
      if (e === io.EAGAIN) {
        io.defer(to, out, bytes);
        reader.count(R_DEFERRED);
      } else reader.count(R_SEND_FAILED, count);
      return;
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
        // The payload: u32 membership epoch, then the key (docs/resharding.md).
        if (len <= 4 || !isKeyBytes(buf, k + 4, at)) {
          status = Status.BAD_REQUEST;
          reader.count(R_BAD);
        } else {
          const epoch = buf.readUInt32LE(k);
          const hash = fnv1a32Range(buf, k + 4, at);
          if (!reader.served(epoch, hash)) {
            // Not ours to answer from here under that epoch (another epoch, a bucket that moved
            // or waits): the main thread knows the rest. Hand the envelope over whole, unless
            // part of its answers went out already.
            if (!sentAny) return false;
            status = Status.UNAVAILABLE;
          } else {
            const r = reader.find(buf, k + 4, at, hash, out, w + RECORD_HEADER_BYTES + FIND_REPLY_FIXED);
            // The states may have changed during the lookup (an epoch adopted): a hit or miss
            // counts only if the bucket is still served under that epoch.
            if (r !== -2 && !reader.served(epoch, hash)) {
              if (!sentAny) return false;
              status = Status.UNAVAILABLE;
            } else if (r === -2) {
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
