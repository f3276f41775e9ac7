import fc from 'fast-check';
import { isDeepStrictEqual } from 'node:util';
import { DEFAULT_MAX_FRAME_BYTES, FrameDecoder, FrameError } from '../../src/protocol/frame-decoder';
import { encodeFrame } from '../../src/protocol/frame-encoder';
import { createRequestValidator } from '../../src/protocol/request-validator';
import { MAX_REQUEST_ID, REQUEST_OPS, TEXT_MAX_CODE_POINTS, type RequestOp } from '../../src/protocol/client-request';
import { parseSlashCommand } from '../../src/protocol/slash-command';
import {
  ENVELOPE_MAGIC,
  ENVELOPE_VERSION,
  HEADER_BYTES,
  RECORD_HEADER_BYTES,
  checkEnvelope,
  decodeEnvelope,
  encodeEnvelope,
  type OutboundRecord,
} from '../../src/ipc/envelope';
import { FIND_REPLY_FIXED, MAX_FIND_REPLY_BYTES, MAX_KEY_BYTES, isKeyBytes, readFindReply, readKey, writeFindReply } from '../../src/cluster/records';
import { decodePayload, encodePayload, type PayloadName } from '../../src/cluster/messages';
import { NAME_MAX_CODE_POINTS, isValidName, normalizeName } from '../../src/cluster/names';

/**
 * fast-check properties over every decoder a peer can feed: the client frame decoder, request
 * validation, slash commands, the queue envelope, the binary cluster records and the JSON
 * cluster payloads. Each is a named invariant with `check(numRuns, seed?)`; the unit test runs
 * them a few thousand times (npm test), test/fuzz/run.ts at least 100,000 times (npm run fuzz).
 */
export interface FuzzProperty {
  group: string;
  name: string;
  invariant: string;
  check(numRuns: number, seed?: number): fc.RunDetails<unknown>;
}

const props: FuzzProperty[] = [];
function define<Ts extends [unknown, ...unknown[]]>(
  group: string,
  name: string,
  invariant: string,
  make: () => fc.IProperty<Ts>,
): void {
  let property: fc.IProperty<Ts> | undefined;
  props.push({
    group,
    name,
    invariant,
    check(numRuns, seed) {
      property ??= make();
      return fc.check(property, seed === undefined ? { numRuns } : { numRuns, seed }) as fc.RunDetails<unknown>;
    },
  });
}

/** Throws fast-check's own report (counterexample, seed, path) when the run failed. */
export function assertRun(details: fc.RunDetails<unknown>): void {
  if (details.failed) throw new Error(fc.defaultReportMessage(details) ?? 'property failed');
}

// ---------------------------------------------------------------- shared arbitraries

const codePoints = (s: string): number => Array.from(s).length;
const NAME_CHARS = [...'abcxyzABCXYZ0189_', '가', '힣', '각', 'é', 'Ж', 'ß', 'ǅ', '٣', '𝒜', 'Ω', 'İ', 'ﬀ', 'ᄀ', 'ᅡ', 'ᆨ', 'e\u0301', 'T\u0308'];
/** Valid character names, NFD Hangul and decomposed accents included. */
export const nameArb: fc.Arbitrary<string> = fc
  .array(fc.constantFrom(...NAME_CHARS), { minLength: 1, maxLength: NAME_MAX_CODE_POINTS })
  .map((a) => a.join(''))
  .filter(isValidName);
/** Strings that are usually not names: empty, too long, punctuation, spaces, lone surrogates. */
const nearNameArb: fc.Arbitrary<string> = fc.oneof(
  nameArb,
  fc.string({ maxLength: 30 }),
  fc.string({ unit: 'binary', maxLength: 30 }),
  fc.constantFrom('', ' ', 'a b', 'a'.repeat(24), 'a'.repeat(25), '가'.repeat(25), '\ud800', 'x\ufffd', '__proto__', 'constructor'),
);
const intEdgeArb: fc.Arbitrary<number> = fc.oneof(
  fc.integer({ min: -3, max: 30 }),
  fc.constantFrom(0, 1, 20, 21, 899, 900, 999, 1000, 65535, 65536, 100000, 100001, MAX_REQUEST_ID, MAX_REQUEST_ID + 1, 0xffffffff, 2 ** 32, 2 ** 53, -0, 1.5, -1),
  fc.integer(),
  fc.double(),
);
/** Any JSON value, and values shaped like the structures under test (fields that nearly fit). */
const fieldValueArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: nearNameArb },
  { weight: 3, arbitrary: intEdgeArb },
  { weight: 1, arbitrary: fc.string({ minLength: 0, maxLength: 520, unit: 'binary' }) },
  { weight: 1, arbitrary: fc.boolean() },
  { weight: 1, arbitrary: fc.constant(null) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  { weight: 2, arbitrary: fc.array(fc.tuple(nearNameArb, intEdgeArb, intEdgeArb).map((t) => t.slice(0, 1 + (Math.abs(t[1] as number) % 3 || 0))), { maxLength: 4 }) },
  { weight: 1, arbitrary: fc.array(fc.tuple(intEdgeArb, intEdgeArb), { maxLength: 4 }) },
);
const objectOf = (keys: readonly string[]): fc.Arbitrary<Record<string, unknown>> =>
  fc.dictionary(fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...keys) }, { weight: 1, arbitrary: fc.string({ maxLength: 6 }) }), fieldValueArb, { maxKeys: keys.length + 1 });

/** Cuts `buf` at the given points (sorted, deduplicated): an arbitrary split of a stream. */
function splitAt(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => (buf.length === 0 ? 0 : c % (buf.length + 1))))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of points) {
    out.push(buf.subarray(at, p));
    at = p;
  }
  out.push(buf.subarray(at));
  return out;
}

// ---------------------------------------------------------------- frame decoder

const jsonObjectArb = fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 5 });
const header = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
};
const rawFrame = (body: Buffer): Buffer => Buffer.concat([header(body.length), body]);
/** Stream pieces: good frames, and each way a frame can be bad or incomplete. */
const framePieceArb: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 6, arbitrary: jsonObjectArb.map((o) => encodeFrame(o)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 24 }).map((b) => Buffer.from(b)) },
  { weight: 1, arbitrary: fc.constantFrom(0, 1, 2, 8192, 8193, 0xffffffff, 0x80000000).map(header) },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 16 }).map((b) => rawFrame(Buffer.from(b))) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 1 }).map((v) => rawFrame(Buffer.from(JSON.stringify(v) ?? 'null'))) },
  { weight: 1, arbitrary: fc.constantFrom('{"a":"\xff"}', '\ufeff{}', '{} ', ' {"x":1}', '{"a":1', '[]', 'null', '{"__proto__":1}').map((s) => rawFrame(Buffer.from(s, s.includes('\xff') ? 'latin1' : 'utf8'))) },
  { weight: 1, arbitrary: fc.tuple(jsonObjectArb, fc.nat()).map(([o, n]) => { const f = encodeFrame(o); return f.subarray(0, n % f.length); }) },
);
const streamArb = fc.array(framePieceArb, { maxLength: 8 }).map((p) => Buffer.concat(p));
const maxFrameArb = fc.oneof({ weight: 3, arbitrary: fc.constant(DEFAULT_MAX_FRAME_BYTES) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 64 }) });

type DecodeOutcome = { objects: unknown[]; error: string | null };

/**
 * An independent reading of PROTOCOL.md's framing: 4-byte big-endian L (1..max), then L bytes
 * of UTF-8 (BOM ignored, as TextDecoder does) holding one JSON object; nothing after an error.
 */
export function referenceDecode(stream: Buffer, max: number): { objects: unknown[]; failed: boolean } {
  const objects: unknown[] = [];
  let at = 0;
  while (stream.length - at >= 4) {
    const len = stream.readUInt32BE(at);
    if (len === 0 || len > max) return { objects, failed: true };
    if (stream.length - at - 4 < len) break;
    const body = stream.subarray(at + 4, at + 4 + len);
    at += 4 + len;
    let value: unknown;
    try {
      value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
    } catch {
      return { objects, failed: true };
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return { objects, failed: true };
    objects.push(value);
  }
  return { objects, failed: false };
}

/** Feeds the chunks through push(); checks that only FrameError is thrown and none is decoded after it. */
function decodeByPush(chunks: Buffer[], max: number): DecodeOutcome {
  const d = new FrameDecoder(max);
  const objects: unknown[] = [];
  let error: string | null = null;
  for (const c of chunks) {
    try {
      const got = d.push(c);
      if (error !== null) throw new Error('push() decoded after a FrameError');
      objects.push(...got);
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      if (error === null) {
        error = err.message;
        objects.push(...err.decoded);
      } else if (err.decoded.length > 0) throw new Error('a later FrameError carries decoded frames');
      if (!d.failed) throw new Error('failed is false after a FrameError');
    }
  }
  return { objects, error };
}

/** The serving loop's path: append(), then next(k) while hasFrame; hasFrame must be exact. */
function decodeByBatches(chunks: Buffer[], max: number, batch: number): DecodeOutcome {
  const d = new FrameDecoder(max);
  const objects: unknown[] = [];
  for (const c of chunks) {
    try {
      d.append(c);
      for (;;) {
        const has = d.hasFrame;
        if (!has) {
          const rest = d.next(Infinity);
          if (rest.length > 0) throw new Error('hasFrame was false, yet next() decoded a frame');
          break;
        }
        const got = d.next(batch);
        if (got.length === 0) throw new Error('hasFrame was true, yet next() decoded nothing');
        if (got.length > batch) throw new Error('next(max) returned more than max frames');
        objects.push(...got);
      }
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      objects.push(...err.decoded);
      if (d.hasFrame) throw new Error('hasFrame is true after a FrameError');
      return { objects, error: err.message };
    }
  }
  return { objects, error: null };
}

define('frame-decoder', 'any stream, any split', 'never throws anything but FrameError; after a FrameError every push throws FrameError and nothing more is decoded; the result matches an independent reading of the framing', () =>
  fc.property(streamArb, fc.array(fc.nat(), { maxLength: 12 }), maxFrameArb, (stream, cuts, max) => {
    const got = decodeByPush(splitAt(stream, cuts), max);
    const ref = referenceDecode(stream, max);
    if (!isDeepStrictEqual(got.objects, ref.objects)) return false;
    return (got.error !== null) === ref.failed;
  }),
);

define('frame-decoder', 'round trip', 'objects encoded with encodeFrame and split anyhow decode to the same objects, in order', () =>
  fc.property(fc.array(jsonObjectArb, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 12 }), (objs, cuts) => {
    const stream = Buffer.concat(objs.map((o) => encodeFrame(o)));
    const got = decodeByPush(splitAt(stream, cuts), 1 << 20);
    return got.error === null && isDeepStrictEqual(got.objects, objs.map((o) => JSON.parse(JSON.stringify(o))));
  }),
);

define('frame-decoder', 'split independence', 'one push, any split through push(), and append()/next(k) with hasFrame all give the same objects and the same error', () =>
  fc.property(streamArb, fc.array(fc.nat(), { maxLength: 12 }), maxFrameArb, fc.integer({ min: 1, max: 4 }), (stream, cuts, max, batch) => {
    const whole = decodeByPush([stream], max);
    const split = decodeByPush(splitAt(stream, cuts), max);
    const batched = decodeByBatches(splitAt(stream, cuts), max, batch);
    return isDeepStrictEqual(whole, split) && isDeepStrictEqual(whole, batched);
  }),
);

// ---------------------------------------------------------------- request validation

const CHANNELS = 20;
const FIELDS: Record<RequestOp, readonly string[]> = {
  login: ['op', 'id', 'name', 'channel'],
  find: ['op', 'id', 'name'],
  chat: ['op', 'id', 'text'],
  whisper: ['op', 'id', 'to', 'text'],
  move: ['op', 'id', 'channel'],
  ping: ['op', 'id'],
  logout: ['op', 'id'],
};
const ALL_FIELDS = ['op', 'id', 'name', 'channel', 'text', 'to'];
const isId = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= MAX_REQUEST_ID;
const isOp = (v: unknown): v is RequestOp => typeof v === 'string' && (REQUEST_OPS as readonly string[]).includes(v);
/** The schema's name rule, on the NFC form (the validator normalizes names first). */
const schemaName = (v: unknown): boolean => typeof v === 'string' && isValidName(v);
const isText = (v: unknown): boolean => typeof v === 'string' && codePoints(v) >= 1 && codePoints(v) <= TEXT_MAX_CODE_POINTS;

const requestLikeArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  {
    weight: 4,
    arbitrary: fc
      .tuple(objectOf(ALL_FIELDS), fc.oneof(fc.constantFrom<unknown>(...REQUEST_OPS), fc.string({ maxLength: 8 }), fieldValueArb), fc.boolean())
      .map(([o, op, setOp]) => (setOp ? { ...o, op } : o)),
  },
  {
    weight: 3,
    // Every required field present with a near-valid value: reaches the per-field rules.
    arbitrary: fc.constantFrom(...REQUEST_OPS).chain((op) =>
      fc.record({
        id: fc.oneof(fc.nat(MAX_REQUEST_ID), intEdgeArb),
        name: nearNameArb,
        to: nearNameArb,
        channel: fc.oneof(fc.integer({ min: 1, max: CHANNELS }), intEdgeArb),
        text: fc.oneof(fc.string({ minLength: 1, maxLength: 20 }), fc.string({ minLength: 495, maxLength: 505, unit: 'binary' }), fc.constant('')),
        extra: fc.option(fc.constantFrom('x', '__proto__', 'name', 'constructor')),
      }).map((f) => {
        const o: Record<string, unknown> = { op };
        for (const k of FIELDS[op]) if (k !== 'op') o[k] = (f as Record<string, unknown>)[k];
        if (f.extra !== null) o[f.extra] = 1;
        return o;
      }),
    ),
  },
).map((v) => JSON.parse(JSON.stringify(v) ?? 'null') as unknown);

let validator: ReturnType<typeof createRequestValidator> | undefined;
const validate = (raw: unknown): ReturnType<ReturnType<typeof createRequestValidator>> => {
  validator ??= createRequestValidator({ channels: CHANNELS });
  return validator(raw as Record<string, unknown>);
};

define('request-validator', 'any JSON value', 'never throws; ok: op known, exactly its fields, id, names (NFC of the input), channel and text within the schema; not ok: a message, op only when known, id echoed only when valid; the input is left unchanged', () =>
  fc.property(requestLikeArb, (raw) => {
    const before = JSON.stringify(raw);
    const r = validate(raw);
    if (JSON.stringify(raw) !== before) return false;
    const o = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>;
    if (r.ok) {
      const q = r.request as unknown as Record<string, unknown>;
      if (!isOp(q.op) || !isId(q.id)) return false;
      const keys = Object.keys(q).sort();
      if (!isDeepStrictEqual(keys, [...FIELDS[q.op]].sort())) return false;
      for (const k of keys) {
        if (k === 'name' || k === 'to') {
          if (!schemaName(q[k]) || q[k] !== (o[k] as string).normalize('NFC')) return false;
        } else if (k === 'channel') {
          if (!Number.isInteger(q[k]) || (q[k] as number) < 1 || (q[k] as number) > CHANNELS) return false;
        } else if (k === 'text') {
          if (!isText(q[k])) return false;
        } else if (q[k] !== o[k]) return false;
      }
      return typeof raw === 'object' && raw !== null && !Array.isArray(raw);
    }
    if (typeof r.message !== 'string' || r.message.length === 0) return false;
    if (r.id !== (isId(o.id) ? o.id : null)) return false;
    return isOp(o.op) ? r.op === o.op : !('op' in r);
  }),
);

const validRequestArb: fc.Arbitrary<Record<string, unknown>> = fc.constantFrom(...REQUEST_OPS).chain((op) =>
  fc
    .record({
      id: fc.nat(MAX_REQUEST_ID),
      name: nameArb,
      to: nameArb,
      channel: fc.integer({ min: 1, max: CHANNELS }),
      text: fc.string({ minLength: 1, maxLength: TEXT_MAX_CODE_POINTS, unit: 'grapheme-composite' }).filter((s) => codePoints(s) <= TEXT_MAX_CODE_POINTS),
    })
    .map((f) => {
      const o: Record<string, unknown> = { op };
      for (const k of FIELDS[op]) if (k !== 'op') o[k] = (f as Record<string, unknown>)[k];
      return o;
    }),
);

define('request-validator', 'valid requests', 'every request built to the schema, of every op, is ok and comes back equal (names in NFC)', () =>
  fc.property(validRequestArb, (raw) => {
    const r = validate(raw);
    if (!r.ok) return false;
    const want: Record<string, unknown> = { ...raw };
    for (const k of ['name', 'to']) if (typeof want[k] === 'string') want[k] = (want[k] as string).normalize('NFC');
    return isDeepStrictEqual({ ...r.request }, want);
  }),
);

// ---------------------------------------------------------------- slash commands

const COMMAND_WORDS = ['find', 'FIND', 'Find', '찾기', 'w', 'W', 'whisper', '귓속말', 'channel', 'CHANNEL', '채널', '찾기'.normalize('NFD'), 'constructor', '__proto__', 'x', ''];
const WS = fc.constantFrom(' ', '  ', '\t', '\u3000', '\n', '\u00a0');
const slashLineArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 1, arbitrary: fc.string({ maxLength: 60, unit: 'binary' }) },
  { weight: 1, arbitrary: fc.string({ maxLength: 60 }).map((s) => `/${s}`) },
  {
    weight: 4,
    arbitrary: fc
      .tuple(fc.option(WS), fc.constantFrom(...COMMAND_WORDS), fc.array(fc.tuple(WS, fc.oneof(nearNameArb, fc.nat().map(String), fc.string({ maxLength: 12 }))), { maxLength: 3 }), fc.option(WS))
      .map(([lead, word, args, tail]) => `${lead ?? ''}/${word}${args.map(([w, a]) => w + a).join('')}${tail ?? ''}`),
  },
);

define('slash-command', 'any line', 'never throws; the kind is find, whisper, channel or error; find/whisper carry a valid NFC name, whisper a non-empty text, channel an integer of 1-9 digits; errors are BAD_REQUEST or UNKNOWN_COMMAND with a message; lang is en or ko', () =>
  fc.property(slashLineArb, (line) => {
    const c = parseSlashCommand(line);
    if (c.lang !== 'en' && c.lang !== 'ko') return false;
    switch (c.kind) {
      case 'find':
        return isValidName(c.name) && c.name === c.name.normalize('NFC');
      case 'whisper':
        return isValidName(c.to) && c.to === c.to.normalize('NFC') && c.text.length > 0;
      case 'channel':
        return Number.isInteger(c.channel) && c.channel >= 1 && c.channel <= 999_999_999;
      case 'error':
        return (c.code === 'BAD_REQUEST' || c.code === 'UNKNOWN_COMMAND') && typeof c.message === 'string' && c.message.length > 0;
      default:
        return false;
    }
  }),
);

define('slash-command', 'find and whisper round trip', '`/find NAME`, `/찾기 NAME` (any case, spacing) give that name in NFC and the right language; `/w NAME TEXT` gives the name and the text', () =>
  fc.property(fc.constantFrom(['find', 'en'], ['FiNd', 'en'], ['찾기', 'ko'], ['찾기'.normalize('NFD'), 'ko']), nameArb, WS, fc.option(WS), fc.string({ minLength: 1, maxLength: 40 }), (cmd, name, sep, lead, text) => {
    const c = parseSlashCommand(`${lead ?? ''}/${cmd[0]}${sep}${name}${lead ?? ''}`);
    if (!(c.kind === 'find' && c.name === name.normalize('NFC') && c.lang === cmd[1])) return false;
    const body = text.trim();
    const w = parseSlashCommand(`/w ${name}${sep}${text}`);
    if (body === '') return w.kind === 'error' && w.code === 'BAD_REQUEST';
    return w.kind === 'whisper' && w.to === name.normalize('NFC') && w.text === body && w.lang === 'en';
  }),
);

// ---------------------------------------------------------------- envelope

const recordArb: fc.Arbitrary<OutboundRecord> = fc.record({
  kind: fc.nat(255),
  status: fc.nat(255),
  reqId: fc.nat(0xffffffff),
  deadline: fc.nat(0xffffffff),
  payload: fc.oneof({ weight: 4, arbitrary: fc.uint8Array({ maxLength: 64 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }).map((n) => new Uint8Array(n)) }),
});
const envHeaderArb = fc.record({ from: fc.nat(0xffffffff), fromIncarnation: fc.nat(0xffffffff), toIncarnation: fc.nat(0xffffffff) });
const validEnvelopeArb = fc.tuple(envHeaderArb, fc.array(recordArb, { minLength: 1, maxLength: 6 })).map(([h, r]) => ({ h, r, buf: encodeEnvelope(h, r) }));
/** Arbitrary bytes, bytes behind a right magic and version, and valid envelopes with bytes flipped. */
const envelopeBytesArb: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b)),
  fc.tuple(fc.uint8Array({ maxLength: 80 }), fc.nat(3)).map(([b, c]) => {
    const buf = Buffer.concat([Buffer.alloc(6), Buffer.from(b)]);
    buf.writeUInt16LE(ENVELOPE_MAGIC, 0);
    buf[2] = ENVELOPE_VERSION;
    buf.writeUInt16LE(c, 4);
    return buf;
  }),
  fc.tuple(validEnvelopeArb, fc.array(fc.tuple(fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 3 })).map(([e, flips]) => {
    const buf = Buffer.from(e.buf);
    for (const [at, v] of flips) buf[at % buf.length] = v;
    return buf;
  }),
);

define('envelope', 'any bytes', 'checkEnvelope and decodeEnvelope never throw and agree; an accepted body has count >= 1 records whose sizes add up exactly to the body, and re-encodes to the same bytes (flags and reserved aside)', () =>
  fc.property(envelopeBytesArb, (buf) => {
    const c = checkEnvelope(buf);
    const d = decodeEnvelope(buf);
    if (typeof c !== 'number') return !d.ok && d.reason === c && ['short', 'magic', 'version', 'count', 'length'].includes(c);
    if (!d.ok || d.records.length !== c || c < 1) return false;
    let size = HEADER_BYTES;
    for (const r of d.records) size += RECORD_HEADER_BYTES + r.payload.length;
    if (size !== buf.length) return false;
    const again = encodeEnvelope(d.header, d.records);
    const canon = Buffer.from(buf);
    canon[3] = 0;
    canon.writeUInt16LE(0, 6);
    return again.equals(canon);
  }),
);

define('envelope', 'round trip', 'encodeEnvelope then decodeEnvelope gives back the header and every record, payload bytes included', () =>
  fc.property(validEnvelopeArb, ({ h, r, buf }) => {
    const d = decodeEnvelope(buf);
    if (!d.ok || !isDeepStrictEqual(d.header, { ...h }) || d.records.length !== r.length) return false;
    return d.records.every(
      (x, i) =>
        x.kind === r[i]!.kind && x.status === r[i]!.status && x.reqId === r[i]!.reqId && x.deadline === r[i]!.deadline && Buffer.from(r[i]!.payload).equals(x.payload) && x.from === h.from && x.fromIncarnation === h.fromIncarnation,
    );
  }),
);

define('envelope', 'truncation and extension', 'every proper prefix of a valid envelope, and the envelope with any bytes appended, is refused', () =>
  fc.property(validEnvelopeArb, fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 16 }), ({ buf }, cut, extra) => {
    const short = buf.subarray(0, cut % buf.length);
    const long = Buffer.concat([buf, extra]);
    return typeof checkEnvelope(short) !== 'number' && !decodeEnvelope(short).ok && typeof checkEnvelope(long) !== 'number' && !decodeEnvelope(long).ok;
  }),
);

// ---------------------------------------------------------------- binary records

const keyBytesArb: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ maxLength: MAX_FIND_REPLY_BYTES + 8 }).map((b) => Buffer.from(b)),
  fc.string({ unit: 'binary', maxLength: 40 }).map((s) => Buffer.from(s, 'utf8')),
  nameArb.map((n) => Buffer.from(normalizeName(n), 'utf8')),
  fc.tuple(fc.integer({ min: 0, max: 0xffff }), fc.nat(0xffffffff), fc.nat(0xffffffff), fc.oneof(nameArb, fc.string({ maxLength: 30 }))).map(([ch, o, i, n]) => {
    const out = Buffer.alloc(MAX_FIND_REPLY_BYTES + 200);
    return out.subarray(0, writeFindReply(out, { name: n, channel: ch, owner: o, ownerInc: i }));
  }),
);
const KEY_ASCII_OK = /^[0-9a-z_]$/;
const NAME_ASCII_OK = /^[0-9A-Za-z_]$/;

define('records', 'any bytes, any range', 'readKey, isKeyBytes and readFindReply never throw on any body and any start/end; isKeyBytes is exactly "readKey gives a key"; a key or name read is the exact UTF-8 of its bytes with only [0-9a-z_] (names also A-Z) as ASCII; an accepted FIND reply re-encodes to the same bytes', () =>
  fc.property(keyBytesArb, fc.integer({ min: -4, max: 8 }), fc.integer({ min: -8, max: 8 }), (buf, dStart, dEnd) => {
    const start = dStart;
    const end = buf.length + dEnd;
    for (const [s, e] of [
      [0, buf.length],
      [start, end],
      [Math.max(0, start), Math.min(buf.length, end)],
    ] as [number, number][]) {
      const key = readKey(buf, s, e);
      if (isKeyBytes(buf, s, e) !== (key !== undefined)) return false;
      for (const [v, ok] of [
        [key, KEY_ASCII_OK],
        [readKey(buf, s, e, false), NAME_ASCII_OK],
      ] as [string | undefined, RegExp][]) {
        if (v === undefined) continue;
        if (!Buffer.from(v, 'utf8').equals(buf.subarray(s, e))) return false;
        for (const ch of v) if (ch.charCodeAt(0) < 0x80 && !ok.test(ch)) return false;
      }
      const hit = readFindReply(buf, s, e);
      if (hit !== undefined) {
        if (hit.channel < 1 || hit.channel > 0xffff) return false;
        const out = Buffer.alloc(MAX_FIND_REPLY_BYTES + 8);
        const n = writeFindReply(out, hit);
        if (!out.subarray(0, n).equals(buf.subarray(s, e))) return false;
      }
    }
    return true;
  }),
);

define('records', 'write then read', 'the key of any valid name reads back (readKey, isKeyBytes), the name itself reads back as a name; a FIND reply for any valid name, channel and owner reads back equal, inside a larger buffer', () =>
  fc.property(nameArb, fc.integer({ min: 1, max: 0xffff }), fc.nat(0xffffffff), fc.nat(0xffffffff), fc.uint8Array({ maxLength: 4 }), (name, channel, owner, ownerInc, pad) => {
    const key = normalizeName(name);
    const kb = Buffer.from(key, 'utf8');
    const nb = Buffer.from(name, 'utf8');
    if (kb.length > MAX_KEY_BYTES || readKey(kb, 0, kb.length) !== key || !isKeyBytes(kb, 0, kb.length)) return false;
    if (readKey(nb, 0, nb.length, false) !== name) return false;
    const out = Buffer.alloc(MAX_FIND_REPLY_BYTES);
    const n = writeFindReply(out, { name, channel, owner, ownerInc });
    if (n !== FIND_REPLY_FIXED + nb.length) return false;
    const framed = Buffer.concat([Buffer.from(pad), out.subarray(0, n), Buffer.from(pad)]);
    return isDeepStrictEqual(readFindReply(framed, pad.length, pad.length + n), { name, channel, owner, ownerInc });
  }),
);

// ---------------------------------------------------------------- cluster payloads (JSON)

/**
 * Hand-written readings of schemas/cluster-messages.json, one per payload name, independent of
 * ajv: decodePayload must accept exactly what these accept.
 */
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const intIn = (lo: number, hi: number) => (v: unknown): boolean => Number.isInteger(v) && (v as number) >= lo && (v as number) <= hi;
const u32 = intIn(0, 0xffffffff);
const mtype = intIn(1, 2147483647);
const channel = intIn(1, 100000);
const shard = intIn(0, 899);
const NAME_RE = /^[\p{L}\p{Nd}_]+$/u;
const name = (v: unknown): boolean => typeof v === 'string' && codePoints(v) >= 1 && codePoints(v) <= 24 && NAME_RE.test(v);
type Check = (v: unknown) => boolean;
const shape = (required: Record<string, Check>, optional: Record<string, Check> = {}): Check => (v) => {
  if (!isObj(v)) return false;
  for (const k of Object.keys(required)) if (!Object.prototype.hasOwnProperty.call(v, k)) return false;
  for (const k of Object.keys(v)) {
    const c = Object.prototype.hasOwnProperty.call(required, k) ? required[k] : Object.prototype.hasOwnProperty.call(optional, k) ? optional[k] : undefined;
    if (!c || !c(v[k])) return false;
  }
  return true;
};
const arrayOf = (max: number, item: Check): Check => (v) => Array.isArray(v) && v.length <= max && v.every(item);
const tuple = (...items: Check[]): Check => (v) => Array.isArray(v) && v.length === items.length && items.every((c, i) => c(v[i]));
const epoch = intIn(1, 0xffffffff);
const login = shape({ name, session: u32, channel, epoch });
export const PAYLOAD_CHECKS: Record<PayloadName, Check> = {
  login,
  move: login,
  remove: shape({ name, session: u32, owner: mtype, ownerInc: u32 }),
  purge: shape({ owner: mtype, ownerInc: u32 }, { keep: u32 }),
  count: shape({ count: intIn(0, Infinity) }, { conflicts: intIn(0, Infinity) }),
  sync: shape({ entries: arrayOf(4096, tuple(name, u32, channel)), last: (v) => typeof v === 'boolean', epoch }),
  heartbeat: shape({ role: (v) => v === 'chatd' || v === 'channeld' || v === 'gc', index: intIn(0, 999), pid: intIn(1, Infinity) }),
  hello: shape({ shard }),
  helloReply: shape({ chatds: arrayOf(1000, tuple(mtype, u32)) }),
  resync: shape({ shard, shardInc: u32 }, { epoch }),
  leaving: shape({ shard, shardInc: u32 }, { epoch }),
  sessionEnd: shape({ name, session: u32 }),
  whisper: shape({ to: name, from: name, text: (v) => typeof v === 'string' && codePoints(v) >= 1 && codePoints(v) <= 500 }),
  membership: shape({ shards: arrayOf(900, tuple(shard, u32)) }),
  empty: shape({}),
  status: isObj,
};
const PAYLOAD_NAMES = Object.keys(PAYLOAD_CHECKS) as PayloadName[];
const PAYLOAD_KEYS = ['name', 'session', 'channel', 'owner', 'ownerInc', 'keep', 'count', 'conflicts', 'entries', 'last', 'role', 'index', 'pid', 'shard', 'chatds', 'shardInc', 'to', 'from', 'text', 'shards', 'epoch'];
const payloadValueArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 4, arbitrary: objectOf(PAYLOAD_KEYS) },
  {
    weight: 4,
    // Objects with exactly one payload's keys, values nearly right: reaches every field rule.
    arbitrary: fc.constantFrom(...PAYLOAD_NAMES).chain((n) => {
      const keys: Record<PayloadName, string[]> = {
        login: ['name', 'session', 'channel', 'epoch'], move: ['name', 'session', 'channel', 'epoch'], remove: ['name', 'session', 'owner', 'ownerInc'],
        purge: ['owner', 'ownerInc', 'keep'], count: ['count', 'conflicts'], sync: ['entries', 'last', 'epoch'],
        heartbeat: ['role', 'index', 'pid'], hello: ['shard'], helloReply: ['chatds'], resync: ['shard', 'shardInc', 'epoch'], leaving: ['shard', 'shardInc', 'epoch'], sessionEnd: ['name', 'session'],
        whisper: ['to', 'from', 'text'], membership: ['shards'], empty: [], status: ['x'],
      };
      const value: fc.Arbitrary<unknown> = fc.oneof(
        { weight: 3, arbitrary: fieldValueArb },
        { weight: 2, arbitrary: fc.nat(1000) },
        { weight: 1, arbitrary: fc.constantFrom('chatd', 'gc', 'channeld', 'x') },
        { weight: 1, arbitrary: fc.array(fc.tuple(fc.nat(900), fc.nat(10)), { maxLength: 3 }) },
        { weight: 1, arbitrary: fc.array(fc.tuple(nameArb, fc.nat(10), fc.integer({ min: 1, max: 10 })), { maxLength: 3 }) },
      );
      return fc.tuple(fc.array(value, { minLength: keys[n].length, maxLength: keys[n].length }), fc.array(fc.boolean(), { minLength: keys[n].length, maxLength: keys[n].length })).map(([vals, keep]) => {
        const o: Record<string, unknown> = {};
        keys[n].forEach((k, i) => {
          if (keep[i] || i === 0) o[k] = vals[i];
        });
        return o;
      });
    }),
  },
);

define('messages', 'any bytes', 'decodePayload never throws on any bytes for any payload name; it gives undefined or a value the hand-written schema reading accepts', () =>
  fc.property(
    fc.constantFrom(...PAYLOAD_NAMES),
    fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      fc.tuple(payloadValueArb, fc.nat(), fc.nat(255)).map(([v, at, b]) => {
        const bytes = Buffer.from(JSON.stringify(v) ?? '', 'utf8');
        if (bytes.length > 0 && at % 3 === 0) bytes[at % bytes.length] = b;
        return new Uint8Array(bytes);
      }),
    ),
    (n, bytes) => {
      const v = decodePayload(n, bytes);
      return v === undefined || PAYLOAD_CHECKS[n](v);
    },
  ),
);

define('messages', 'any JSON', 'for every payload name and any JSON value (with or without an offset into a larger buffer), decodePayload is defined exactly when the hand-written schema reading accepts the value, and then equals it; encodePayload of an accepted value decodes to it again', () =>
  fc.property(fc.constantFrom(...PAYLOAD_NAMES), payloadValueArb, fc.uint8Array({ maxLength: 3 }), (n, value, pad) => {
    const json = JSON.stringify(value);
    if (json === undefined) return true;
    const inner = Buffer.from(json, 'utf8');
    const outer = Buffer.concat([Buffer.from(pad), inner, Buffer.from(pad)]);
    const view = outer.subarray(pad.length, pad.length + inner.length);
    const parsed: unknown = JSON.parse(json);
    const v = decodePayload(n, view);
    const accept = PAYLOAD_CHECKS[n](parsed);
    if (accept !== (v !== undefined)) return false;
    if (v === undefined) return true;
    if (!isDeepStrictEqual(v, parsed)) return false;
    return isDeepStrictEqual(decodePayload(n, encodePayload(n, v as never)), parsed);
  }),
);

export const PROPERTIES: readonly FuzzProperty[] = props;
export const GROUPS: readonly string[] = [...new Set(props.map((p) => p.group))];
