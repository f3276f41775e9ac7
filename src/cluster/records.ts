/**
 * Fixed-layout binary payloads for the cluster's hot records (a FIND and its reply), used
 * instead of JSON + ajv: the queue is a trust boundary, so every decoder here checks every
 * bound and returns undefined for anything that is not exactly a valid record. Little-endian,
 * as the envelope. See docs/cluster.md ("Record payloads").
 *
 *   FIND        the directory key (normalizeName's output), UTF-8, 1..MAX_KEY_BYTES bytes
 *   FIND reply  (status OK)  0 u16 channel (>= 1)
 *                            2 u32 owner mtype (the chatD holding the session)
 *                            6 u32 owner incarnation
 *                           10 the name as registered, UTF-8, 1..MAX_KEY_BYTES bytes
 *               (NOT_FOUND, UNAVAILABLE, ...) empty, except:
 *   UNAVAILABLE of a shard that is stopping (any request kind): the leaving mark,
 *               0 u8 0x4c ('L'), 1 u32 the stopping shard's incarnation (5 bytes)
 */
import { NAME_MAX_CODE_POINTS } from './names';

/** A name of 24 code points takes at most 4 bytes each in UTF-8. */
export const MAX_KEY_BYTES = NAME_MAX_CODE_POINTS * 4;
export const FIND_REPLY_FIXED = 10;
/** Largest FIND reply payload. */
export const MAX_FIND_REPLY_BYTES = FIND_REPLY_FIXED + MAX_KEY_BYTES;

export interface FindHit {
  name: string;
  channel: number;
  owner: number;
  ownerInc: number;
}

/** ASCII bytes a name may hold: digits, letters and `_` (bit set per byte value). */
const NAME_ASCII = new Uint8Array(128);
const KEY_ASCII = new Uint8Array(128);
for (let b = 0; b < 128; b++) {
  const digit = b >= 0x30 && b <= 0x39;
  const lower = b >= 0x61 && b <= 0x7a;
  const upper = b >= 0x41 && b <= 0x5a;
  NAME_ASCII[b] = digit || lower || upper || b === 0x5f ? 1 : 0;
  KEY_ASCII[b] = digit || lower || b === 0x5f ? 1 : 0;
}

/**
 * Reads a name (or, with `key`, a directory key: no upper-case ASCII) from body[start, end):
 * undefined unless it is 1..MAX_KEY_BYTES bytes of valid UTF-8 whose ASCII characters are
 * digits, letters or `_`. (Other scripts' letters are not checked one by one here: a key
 * that is no name is simply not found, and names are checked in full where they are stored.)
 */
export function readKey(body: Buffer, start: number, end: number, key = true): string | undefined {
  const n = end - start;
  if (n < 1 || n > MAX_KEY_BYTES || start < 0 || end > body.length) return undefined;
  const allowed = key ? KEY_ASCII : NAME_ASCII;
  let ascii = true;
  for (let i = start; i < end; i++) {
    const b = body[i]!;
    if (b >= 0x80) ascii = false;
    else if (allowed[b] === 0) return undefined;
  }
  if (ascii) return body.toString('latin1', start, end);
  const s = body.toString('utf8', start, end);
  // toString turns malformed sequences into U+FFFD, which no valid name holds (it is not a
  // letter, digit or _): refusing it refuses every malformed key.
  return s.includes('\ufffd') ? undefined : s;
}

/**
 * readKey without making a string: true exactly when readKey(body, start, end) would give a
 * key (fast-check pins the two together). For the shard's receiver thread, which answers
 * FINDs from bytes.
 */
export function isKeyBytes(body: Uint8Array, start: number, end: number): boolean {
  const n = end - start;
  if (n < 1 || n > MAX_KEY_BYTES || start < 0 || end > body.length) return false;
  for (let i = start; i < end; ) {
    const b = body[i]!;
    if (b < 0x80) {
      if (KEY_ASCII[b] === 0) return false;
      i++;
      continue;
    }
    let need: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) lo = 0xa0;
      else if (b === 0xed) hi = 0x9f; // no surrogates
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) lo = 0x90;
      else if (b === 0xf4) hi = 0x8f;
    } else return false;
    if (i + need >= end) return false;
    const c1 = body[i + 1]!;
    if (c1 < lo || c1 > hi) return false;
    for (let k = 2; k <= need; k++) {
      const c = body[i + k]!;
      if (c < 0x80 || c > 0xbf) return false;
    }
    // U+FFFD (EF BF BD) is no letter, digit or _, as readKey says.
    if (b === 0xef && c1 === 0xbf && body[i + 2] === 0xbd) return false;
    i += need + 1;
  }
  return true;
}

/** Writes a FIND reply payload for a hit into `out` at 0; returns its length. */
export function writeFindReply(out: Buffer, hit: FindHit): number {
  out.writeUInt16LE(hit.channel, 0);
  out.writeUInt32LE(hit.owner >>> 0, 2);
  out.writeUInt32LE(hit.ownerInc >>> 0, 6);
  return FIND_REPLY_FIXED + out.write(hit.name, FIND_REPLY_FIXED, 'utf8');
}

/** Decodes an OK FIND reply payload in body[start, end); undefined when malformed. */
export function readFindReply(body: Buffer, start: number, end: number): FindHit | undefined {
  if (end - start < FIND_REPLY_FIXED + 1 || end - start > MAX_FIND_REPLY_BYTES) return undefined;
  // The range must lie inside the body, as readKey requires: the fixed fields are read first,
  // and a range outside it would throw (RangeError) instead of refusing (found by fast-check).
  if (start < 0 || end > body.length) return undefined;
  const channel = body.readUInt16LE(start);
  if (channel < 1) return undefined;
  const name = readKey(body, start + FIND_REPLY_FIXED, end, false);
  if (name === undefined) return undefined;
  return { name, channel, owner: body.readUInt32LE(start + 2), ownerInc: body.readUInt32LE(start + 6) };
}

/** First byte of the leaving mark (see the layout above). */
export const LEAVING_MARK = 0x4c;
export const LEAVING_MARK_BYTES = 5;

/**
 * The payload of an UNAVAILABLE reply from a shard that is stopping (graceful stop: pm2 stop,
 * restart, reload): tells chatD to treat the shard as down until the collector reports
 * another incarnation of it. A chatD that does not know the mark sees a plain UNAVAILABLE.
 */
export function leavingMark(incarnation: number): Buffer {
  const b = Buffer.allocUnsafe(LEAVING_MARK_BYTES);
  b[0] = LEAVING_MARK;
  b.writeUInt32LE(incarnation >>> 0, 1);
  return b;
}

/** The incarnation in a leaving mark, or undefined when the bytes are not exactly one. */
export function readLeavingMark(body: Uint8Array, start: number, end: number): number | undefined {
  if (end - start !== LEAVING_MARK_BYTES || start < 0 || end > body.length || body[start] !== LEAVING_MARK) return undefined;
  return (body[start + 1]! | (body[start + 2]! << 8) | (body[start + 3]! << 16)) + body[start + 4]! * 0x1000000;
}
