/**
 * The cluster's envelope: one kernel message carries a header and one or more records
 * (batching: one queue holds only 16 KiB by default, and each kernel message costs a syscall
 * on both sides). Little-endian throughout. See docs/ipc.md.
 *
 *   header (20 bytes)                       record (12 bytes + payload), `count` times
 *   0  u16 magic 0xC7D1                     0  u8  kind
 *   2  u8  version (1)                      1  u8  status (replies: 0 ok, else an error)
 *   3  u8  flags (0)                        2  u16 payload length
 *   4  u16 record count (>= 1)              4  u32 request id (0: one-way)
 *   6  u16 reserved (0)                     8  u32 deadline, wall-clock ms mod 2^32 (0: none)
 *   8  u32 sender mtype (where replies go)  12 payload (deadline: cluster time, cluster-clock.ts)
 *   12 u32 sender incarnation (random per process start, never 0)
 *   16 u32 target incarnation (0: whoever holds the mtype)
 *
 * Anything that does not parse exactly (magic, version, counts, lengths adding up to the
 * message size) is foreign and dropped whole by the receiver.
 */

import { clusterNow } from './cluster-clock';

export const ENVELOPE_MAGIC = 0xc7d1;
export const ENVELOPE_VERSION = 1;
export const HEADER_BYTES = 20;
export const RECORD_HEADER_BYTES = 12;
export const MAX_RECORDS = 0xffff;
export const MAX_PAYLOAD_BYTES = 0xffff;

export interface EnvelopeHeader {
  readonly from: number;
  readonly fromIncarnation: number;
  readonly toIncarnation: number;
}

export interface OutboundRecord {
  readonly kind: number;
  readonly status?: number;
  readonly reqId?: number;
  readonly deadline?: number;
  readonly payload: Uint8Array;
}

export interface InboundRecord {
  readonly kind: number;
  readonly status: number;
  readonly reqId: number;
  readonly deadline: number;
  readonly payload: Buffer;
  /** Sender mtype and incarnation, from the envelope header. */
  readonly from: number;
  readonly fromIncarnation: number;
}

export const recordBytes = (payloadBytes: number): number => RECORD_HEADER_BYTES + payloadBytes;

/** Writes a whole envelope into a fresh buffer. */
export function encodeEnvelope(header: EnvelopeHeader, records: readonly OutboundRecord[]): Buffer {
  let size = HEADER_BYTES;
  for (const r of records) size += RECORD_HEADER_BYTES + r.payload.byteLength;
  const buf = Buffer.allocUnsafe(size);
  writeHeader(buf, header, records.length);
  let at = HEADER_BYTES;
  for (const r of records) at = writeRecord(buf, at, r);
  return buf;
}

export function writeHeader(buf: Buffer, header: EnvelopeHeader, count: number): void {
  buf.writeUInt16LE(ENVELOPE_MAGIC, 0);
  buf.writeUInt8(ENVELOPE_VERSION, 2);
  buf.writeUInt8(0, 3);
  buf.writeUInt16LE(count, 4);
  buf.writeUInt16LE(0, 6);
  buf.writeUInt32LE(header.from >>> 0, 8);
  buf.writeUInt32LE(header.fromIncarnation >>> 0, 12);
  buf.writeUInt32LE(header.toIncarnation >>> 0, 16);
}

/** Writes one record at `at`; returns the offset after it. */
export function writeRecord(buf: Buffer, at: number, r: OutboundRecord): number {
  const len = r.payload.byteLength;
  buf.writeUInt8(r.kind, at);
  buf.writeUInt8(r.status ?? 0, at + 1);
  buf.writeUInt16LE(len, at + 2);
  buf.writeUInt32LE((r.reqId ?? 0) >>> 0, at + 4);
  buf.writeUInt32LE((r.deadline ?? 0) >>> 0, at + 8);
  buf.set(r.payload, at + RECORD_HEADER_BYTES);
  return at + RECORD_HEADER_BYTES + len;
}

export type DecodeResult = { ok: true; header: EnvelopeHeader; records: InboundRecord[] } | { ok: false; reason: EnvelopeProblem };

export type EnvelopeProblem = 'short' | 'magic' | 'version' | 'count' | 'length';

/**
 * Checks a whole envelope before any record of it is used: magic, version, a record count
 * of at least one, and record lengths that add up exactly to the message size. Returns the
 * record count, or what is wrong.
 */
export function checkEnvelope(body: Buffer): number | EnvelopeProblem {
  const n = body.length;
  if (n < HEADER_BYTES + RECORD_HEADER_BYTES) return 'short';
  if (body.readUInt16LE(0) !== ENVELOPE_MAGIC) return 'magic';
  if (body[2] !== ENVELOPE_VERSION) return 'version';
  const count = body.readUInt16LE(4);
  if (count === 0) return 'count';
  let at = HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    if (at + RECORD_HEADER_BYTES > n) return 'length';
    at += RECORD_HEADER_BYTES + body.readUInt16LE(at + 2);
  }
  return at === n ? count : 'length';
}

/** Parses a kernel message body; payloads are views into `body` (no copies). */
export function decodeEnvelope(body: Buffer): DecodeResult {
  const count = checkEnvelope(body);
  if (typeof count !== 'number') return { ok: false, reason: count };
  const from = body.readUInt32LE(8);
  const fromIncarnation = body.readUInt32LE(12);
  const header: EnvelopeHeader = { from, fromIncarnation, toIncarnation: body.readUInt32LE(16) };
  const records = new Array<InboundRecord>(count);
  let at = HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    const end = at + RECORD_HEADER_BYTES + body.readUInt16LE(at + 2);
    records[i] = {
      kind: body[at]!,
      status: body[at + 1]!,
      reqId: body.readUInt32LE(at + 4),
      deadline: body.readUInt32LE(at + 8),
      payload: body.subarray(at + RECORD_HEADER_BYTES, end),
      from,
      fromIncarnation,
    };
    at = end;
  }
  return { ok: true, header, records };
}

/**
 * Cluster time in ms (cluster-clock.ts: the wall clock, corrected by the offset to the
 * collector's clock when one was measured beyond its error bound), mod 2^32, never 0
 * (0 means "no deadline").
 */
export function deadlineIn(ms: number, now = clusterNow()): number {
  return (now + ms) % 0x1_0000_0000 || 1;
}

/** Milliseconds left before a wrapped deadline; negative when past. 0 deadline: Infinity. */
export function msLeft(deadline: number, now = clusterNow()): number {
  if (deadline === 0) return Infinity;
  return ((deadline - (now % 0x1_0000_0000)) | 0);
}

/** A random, non-zero 32-bit incarnation for a process start. */
export function newIncarnation(): number {
  for (;;) {
    const v = (Math.random() * 0x1_0000_0000) >>> 0;
    if (v !== 0) return v;
  }
}
