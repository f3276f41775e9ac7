import { expect } from 'chai';
import {
  ENVELOPE_MAGIC,
  ENVELOPE_VERSION,
  HEADER_BYTES,
  RECORD_HEADER_BYTES,
  deadlineIn,
  decodeEnvelope,
  encodeEnvelope,
  msLeft,
  newIncarnation,
  recordBytes,
  type DecodeResult,
  type OutboundRecord,
} from '../../../src/ipc';

const header = { from: 1_000_123, fromIncarnation: 0xdeadbeef, toIncarnation: 0x01020304 };

const records: OutboundRecord[] = [
  { kind: 1, payload: Buffer.from('hello') },
  { kind: 0x81, status: 3, reqId: 0xfffffffe, deadline: 0x89abcdef, payload: Buffer.alloc(0) },
  { kind: 255, reqId: 7, payload: Buffer.alloc(300, 0x5a) },
];

function expectBad(result: DecodeResult, reason: string): void {
  expect(result.ok).to.equal(false);
  if (!result.ok) expect(result.reason).to.equal(reason);
}

/** A one-record envelope with a `len`-byte payload. */
const one = (len = 4): Buffer => encodeEnvelope(header, [{ kind: 2, payload: Buffer.alloc(len, 1) }]);

describe('ipc/envelope', () => {
  it('encode - header layout is little-endian at the documented offsets', () => {
    const buf = encodeEnvelope(header, records);
    expect(buf.length).to.equal(HEADER_BYTES + records.reduce((n, r) => n + recordBytes(r.payload.byteLength), 0));
    expect(buf.readUInt16LE(0)).to.equal(ENVELOPE_MAGIC);
    expect(buf.readUInt8(2)).to.equal(ENVELOPE_VERSION);
    expect(buf.readUInt8(3)).to.equal(0);
    expect(buf.readUInt16LE(4)).to.equal(3);
    expect(buf.readUInt16LE(6)).to.equal(0);
    expect(buf.readUInt32LE(8)).to.equal(header.from);
    expect(buf.readUInt32LE(12)).to.equal(header.fromIncarnation);
    expect(buf.readUInt32LE(16)).to.equal(header.toIncarnation);
    // First record right after the header.
    expect(buf.readUInt8(HEADER_BYTES)).to.equal(1);
    expect(buf.readUInt16LE(HEADER_BYTES + 2)).to.equal(5);
    expect(buf.subarray(HEADER_BYTES + RECORD_HEADER_BYTES, HEADER_BYTES + RECORD_HEADER_BYTES + 5).toString()).to.equal('hello');
  });

  it('decode - round trip keeps every field and the record order', () => {
    const result = decodeEnvelope(encodeEnvelope(header, records));
    expect(result.ok).to.equal(true);
    if (!result.ok) return;
    expect(result.header).to.deep.equal(header);
    expect(result.records).to.have.length(3);
    result.records.forEach((r, i) => {
      const want = records[i]!;
      expect(r.kind).to.equal(want.kind);
      expect(r.status).to.equal(want.status ?? 0);
      expect(r.reqId).to.equal(want.reqId ?? 0);
      expect(r.deadline).to.equal(want.deadline ?? 0);
      expect(Buffer.compare(r.payload, Buffer.from(want.payload))).to.equal(0);
      expect(r.from).to.equal(header.from);
      expect(r.fromIncarnation).to.equal(header.fromIncarnation);
    });
  });

  it('decode - payloads are views into the message (no copies)', () => {
    const buf = one(8);
    const result = decodeEnvelope(buf);
    expect(result.ok).to.equal(true);
    if (!result.ok) return;
    buf[HEADER_BYTES + RECORD_HEADER_BYTES] = 0x77;
    expect(result.records[0]!.payload[0]).to.equal(0x77);
  });

  it('decode - round trip with 2,000 records, and with one 64 KiB payload', () => {
    const many = Array.from({ length: 2000 }, (_, i) => ({ kind: i & 0x7f, reqId: i + 1, payload: Buffer.from([i & 0xff]) }));
    const result = decodeEnvelope(encodeEnvelope(header, many));
    expect(result.ok).to.equal(true);
    if (result.ok) expect(result.records.map((r) => r.reqId)).to.deep.equal(many.map((r) => r.reqId));
    const big = decodeEnvelope(encodeEnvelope(header, [{ kind: 1, payload: Buffer.alloc(0xffff, 9) }]));
    expect(big.ok && big.records[0]!.payload.length).to.equal(0xffff);
  });

  describe('malformed messages are refused, never thrown', () => {
    it('short - less than a header and one record header', () => {
      expectBad(decodeEnvelope(Buffer.alloc(0)), 'short');
      expectBad(decodeEnvelope(Buffer.alloc(HEADER_BYTES)), 'short');
      expectBad(decodeEnvelope(one(0).subarray(0, HEADER_BYTES + RECORD_HEADER_BYTES - 1)), 'short');
      expect(decodeEnvelope(one(0)).ok).to.equal(true); // exactly header + empty record is fine
    });

    it('bad magic', () => {
      const buf = one();
      buf.writeUInt16LE(0xd1c7, 0); // byte-swapped
      expectBad(decodeEnvelope(buf), 'magic');
      expectBad(decodeEnvelope(Buffer.from('hello, this is a legacy request line\0'.padEnd(64, '\0'))), 'magic');
    });

    it('bad version', () => {
      for (const v of [0, 2, 255]) {
        const buf = one();
        buf.writeUInt8(v, 2);
        expectBad(decodeEnvelope(buf), 'version');
      }
    });

    it('record count 0', () => {
      const buf = one();
      buf.writeUInt16LE(0, 4);
      expectBad(decodeEnvelope(buf), 'count');
    });

    it('lengths not adding up - count too high, too low, payload length too long or too short', () => {
      const two = encodeEnvelope(header, [{ kind: 1, payload: Buffer.alloc(10) }, { kind: 1, payload: Buffer.alloc(10) }]);
      const tooMany = Buffer.from(two);
      tooMany.writeUInt16LE(3, 4);
      expectBad(decodeEnvelope(tooMany), 'length');
      const tooFew = Buffer.from(two);
      tooFew.writeUInt16LE(1, 4);
      expectBad(decodeEnvelope(tooFew), 'length'); // trailing bytes
      const longLen = Buffer.from(two);
      longLen.writeUInt16LE(11 + RECORD_HEADER_BYTES + 10, HEADER_BYTES + 2);
      expectBad(decodeEnvelope(longLen), 'length');
      const shortLen = Buffer.from(two);
      shortLen.writeUInt16LE(9, HEADER_BYTES + 2);
      expectBad(decodeEnvelope(shortLen), 'length');
      expectBad(decodeEnvelope(Buffer.concat([one(), Buffer.from([0])])), 'length'); // one stray byte
    });

    it('truncated - every cut of a valid envelope is refused', () => {
      const full = encodeEnvelope(header, records);
      for (let cut = 0; cut < full.length; cut++) {
        const result = decodeEnvelope(full.subarray(0, cut));
        expect(result.ok, `cut at ${cut}`).to.equal(false);
      }
    });

    it('random bytes - never throw, never parse without the magic', () => {
      let seed = 12345;
      const rnd = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
      for (let i = 0; i < 2000; i++) {
        const buf = Buffer.from(Array.from({ length: i % 200 }, rnd));
        if (buf.length >= 2 && buf.readUInt16LE(0) === ENVELOPE_MAGIC) buf[0] = 0;
        expect(decodeEnvelope(buf).ok).to.equal(false);
      }
    });
  });

  describe('deadlines', () => {
    it('deadlineIn / msLeft - plain case', () => {
      const now = 1_700_000_000_000;
      const d = deadlineIn(500, now);
      expect(d).to.equal((now + 500) % 2 ** 32);
      expect(msLeft(d, now)).to.equal(500);
      expect(msLeft(d, now + 500)).to.equal(0);
      expect(msLeft(d, now + 501)).to.equal(-1);
    });

    it('deadlineIn / msLeft - across the 2^32 ms wrap-around', () => {
      const now = 2 ** 32 * 395 - 100; // 100 ms before the counter wraps
      const d = deadlineIn(300, now);
      expect(d).to.equal(200); // wrapped
      expect(msLeft(d, now)).to.equal(300);
      expect(msLeft(d, now + 100)).to.equal(200); // exactly at the wrap
      expect(msLeft(d, now + 400)).to.equal(-100);
      // A deadline set just after the wrap, seen from a clock just before it.
      expect(msLeft(deadlineIn(10, now + 200), now)).to.equal(210);
    });

    it('deadlineIn - never 0, which means "no deadline"', () => {
      const now = 2 ** 32 * 7 - 1000;
      expect(deadlineIn(1000, now)).to.not.equal(0);
      expect(deadlineIn(1000, now)).to.equal(1);
      expect(msLeft(0)).to.equal(Infinity);
    });

    it('deadlineIn - fits a u32 record field', () => {
      const d = deadlineIn(60_000);
      expect(Number.isInteger(d) && d > 0 && d < 2 ** 32).to.equal(true);
      const r = decodeEnvelope(encodeEnvelope(header, [{ kind: 1, deadline: d, payload: Buffer.alloc(0) }]));
      expect(r.ok && r.records[0]!.deadline).to.equal(d);
      expect(msLeft(d)).to.be.within(59_000, 60_000);
    });
  });

  it('newIncarnation - non-zero 32-bit values, and they differ', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 1000; i++) {
      const v = newIncarnation();
      expect(v).to.be.a('number');
      expect(Number.isInteger(v) && v > 0 && v <= 0xffffffff, `incarnation ${v}`).to.equal(true);
      seen.add(v);
    }
    expect(seen.size).to.be.greaterThan(990);
  });

  it('newIncarnation - retries when the random source gives 0', () => {
    const real = Math.random;
    const values = [0, 0, 0.5];
    Math.random = () => values.shift() ?? real();
    try {
      expect(newIncarnation()).to.equal(0x80000000);
    } finally {
      Math.random = real;
    }
  });
});
