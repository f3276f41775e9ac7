import { expect } from 'chai';
import { FrameDecoder, FrameError, encodeFrame } from '../../../src/protocol';

/** A frame with an arbitrary header and body, for malformed cases. */
function rawFrame(length: number, body: Buffer | string = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(length, 0);
  return Buffer.concat([header, typeof body === 'string' ? Buffer.from(body, 'utf8') : body]);
}

function bodyFrame(body: Buffer | string): Buffer {
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  return rawFrame(bytes.length, bytes);
}

function expectBadFrame(fn: () => unknown, pattern?: RegExp): FrameError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'expected a FrameError').to.be.instanceOf(FrameError);
  const err = caught as FrameError;
  expect(err.code).to.equal('BAD_FRAME');
  expect(err.message).to.be.a('string').and.not.equal('');
  if (pattern) expect(err.message).to.match(pattern);
  return err;
}

describe('protocol/frame-encoder', () => {
  it('encodeFrame - prefixes the UTF-8 byte length, big-endian', () => {
    const obj = { op: 'chat', id: 7, text: '안녕 🎮' };
    const frame = encodeFrame(obj);
    const json = JSON.stringify(obj);
    expect(frame.readUInt32BE(0)).to.equal(Buffer.byteLength(json, 'utf8'));
    expect(frame.readUInt32BE(0)).to.not.equal(json.length); // multi-byte chars count as bytes
    expect(frame.subarray(4).toString('utf8')).to.equal(json);
  });

  it('encodeFrame - round-trips through the decoder', () => {
    const objs = [{ op: 'ping', id: 0 }, { a: [1, 2, { b: null }] }, { name: '타락파워전사' }];
    const decoder = new FrameDecoder();
    expect(decoder.push(Buffer.concat(objs.map(encodeFrame)))).to.deep.equal(objs);
  });

  it('encodeFrame - rejects a value with no JSON form', () => {
    expect(() => encodeFrame({ toJSON: () => undefined })).to.throw(TypeError);
  });
});

describe('protocol/frame-decoder', () => {
  const objs = [{ op: 'login', id: 1, name: '타락파워전사', channel: 3 }, { op: 'ping', id: 2 }, { op: 'chat', id: 3, text: 'hi 👋 there' }];
  const stream = Buffer.concat(objs.map(encodeFrame));

  it('decodes one whole frame', () => {
    const decoder = new FrameDecoder();
    expect(decoder.push(encodeFrame({ op: 'ping', id: 1 }))).to.deep.equal([{ op: 'ping', id: 1 }]);
    expect(decoder.bufferedBytes).to.equal(0);
  });

  it('decodes frames split at every byte boundary', () => {
    for (let i = 0; i <= stream.length; i++) {
      const decoder = new FrameDecoder();
      const out = [...decoder.push(stream.subarray(0, i)), ...decoder.push(stream.subarray(i))];
      expect(out, `split at ${i}`).to.deep.equal(objs);
      expect(decoder.bufferedBytes).to.equal(0);
    }
  });

  it('decodes frames split at every pair of byte boundaries', () => {
    for (let i = 0; i <= stream.length; i++) {
      for (let j = i; j <= stream.length; j++) {
        const decoder = new FrameDecoder();
        const out = [
          ...decoder.push(stream.subarray(0, i)),
          ...decoder.push(stream.subarray(i, j)),
          ...decoder.push(stream.subarray(j)),
        ];
        expect(out, `split at ${i},${j}`).to.deep.equal(objs);
      }
    }
  });

  it('returns nothing until a frame completes, and counts buffered bytes', () => {
    const frame = encodeFrame({ op: 'ping', id: 9 });
    const decoder = new FrameDecoder();
    expect(decoder.push(frame.subarray(0, 3))).to.deep.equal([]);
    expect(decoder.bufferedBytes).to.equal(3);
    expect(decoder.push(frame.subarray(3, 6))).to.deep.equal([]);
    expect(decoder.bufferedBytes).to.equal(6);
    expect(decoder.push(frame.subarray(6))).to.deep.equal([{ op: 'ping', id: 9 }]);
    expect(decoder.bufferedBytes).to.equal(0);
  });

  it('decodes many coalesced frames from one chunk, keeping a trailing partial frame', () => {
    const many = Array.from({ length: 200 }, (_, i) => ({ op: 'ping', id: i }));
    const extra = encodeFrame({ op: 'ping', id: 999 });
    const decoder = new FrameDecoder();
    const out = decoder.push(Buffer.concat([...many.map(encodeFrame), extra.subarray(0, 5)]));
    expect(out).to.deep.equal(many);
    expect(decoder.bufferedBytes).to.equal(5);
    expect(decoder.push(extra.subarray(5))).to.deep.equal([{ op: 'ping', id: 999 }]);
  });

  it('ignores empty chunks', () => {
    const decoder = new FrameDecoder();
    expect(decoder.push(Buffer.alloc(0))).to.deep.equal([]);
    expect(decoder.bufferedBytes).to.equal(0);
  });

  it('accepts a frame of exactly the limit, fed in 1-byte chunks', () => {
    const limit = 8192;
    const prefix = '{"text":"';
    const suffix = '"}';
    const body = prefix + 'x'.repeat(limit - prefix.length - suffix.length) + suffix;
    const frame = bodyFrame(body);
    expect(frame.length).to.equal(limit + 4);
    const decoder = new FrameDecoder();
    for (let i = 0; i < frame.length - 1; i++) {
      expect(decoder.push(frame.subarray(i, i + 1))).to.deep.equal([]);
    }
    expect(decoder.bufferedBytes).to.equal(frame.length - 1);
    const out = decoder.push(frame.subarray(frame.length - 1));
    expect(out).to.have.length(1);
    expect((out[0] as { text: string }).text).to.have.length(limit - prefix.length - suffix.length);
  });

  it('handles a big frame in 1-byte chunks in linear time', function () {
    // 512 KiB in 1-byte chunks: re-concatenating on every push would copy ~10^11 bytes.
    this.timeout(20_000);
    const size = 512 * 1024;
    const frame = encodeFrame({ blob: '가'.repeat((size - 20) / 3) });
    const decoder = new FrameDecoder(frame.length);
    const started = process.hrtime.bigint();
    let out: unknown[] = [];
    for (let i = 0; i < frame.length; i++) out = decoder.push(frame.subarray(i, i + 1));
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    expect(out).to.have.length(1);
    expect(ms, `took ${ms.toFixed(0)} ms`).to.be.below(3000);
  });

  it('keeps multi-byte characters split across chunks intact', () => {
    const frame = encodeFrame({ t: '한글🎮' });
    const decoder = new FrameDecoder();
    const out: unknown[] = [];
    for (const byte of frame) out.push(...decoder.push(Buffer.from([byte])));
    expect(out).to.deep.equal([{ t: '한글🎮' }]);
  });

  describe('malformed frames', () => {
    it('L = 0', () => {
      expectBadFrame(() => new FrameDecoder().push(rawFrame(0)), /\b0\b/);
    });

    it('L above the limit, from the 4 header bytes alone', () => {
      expectBadFrame(() => new FrameDecoder().push(rawFrame(8193)), /8193/);
      expectBadFrame(() => new FrameDecoder().push(rawFrame(0xffffffff)));
    });

    it('L above the limit, with the header itself split', () => {
      const decoder = new FrameDecoder();
      const header = rawFrame(9000);
      expect(decoder.push(header.subarray(0, 2))).to.deep.equal([]);
      expectBadFrame(() => decoder.push(header.subarray(2)));
    });

    it('L at the limit waits for the body', () => {
      const decoder = new FrameDecoder();
      expect(decoder.push(rawFrame(8192))).to.deep.equal([]);
      expect(decoder.bufferedBytes).to.equal(4);
    });

    it('honours a configured limit', () => {
      const decoder = new FrameDecoder(16);
      const body = '{"a":"12345678"}';
      expect(body).to.have.length(16);
      expect(decoder.push(bodyFrame(body))).to.deep.equal([{ a: '12345678' }]);
      expectBadFrame(() => new FrameDecoder(16).push(rawFrame(17)));
    });

    it('rejects a bad limit', () => {
      expect(() => new FrameDecoder(0)).to.throw(RangeError);
      expect(() => new FrameDecoder(1.5)).to.throw(RangeError);
      expect(() => new FrameDecoder(2 ** 32)).to.throw(RangeError);
    });

    const badUtf8: Array<[string, number[]]> = [
      ['a lone continuation byte', [0x80]],
      ['0xff', [0xff]],
      ['an overlong encoding of /', [0xc0, 0xaf]],
      ['a truncated 3-byte sequence', [0xe2, 0x82]],
      ['an encoded UTF-16 surrogate', [0xed, 0xa0, 0x80]],
      ['a code point above U+10FFFF', [0xf4, 0x90, 0x80, 0x80]],
    ];
    for (const [what, bytes] of badUtf8) {
      it(`invalid UTF-8: ${what}`, () => {
        const body = Buffer.concat([Buffer.from('{"a":"'), Buffer.from(bytes), Buffer.from('"}')]);
        expectBadFrame(() => new FrameDecoder().push(bodyFrame(body)), /UTF-8/);
      });
    }

    for (const text of ['{', 'hello', "{'a':1}", '{"a":1} x', '{"a":1}{"b":2}', ' ']) {
      it(`not JSON: ${JSON.stringify(text)}`, () => {
        expectBadFrame(() => new FrameDecoder().push(bodyFrame(text)), /JSON/);
      });
    }

    for (const text of ['[]', '[{"op":"ping","id":1}]', 'null', '42', '"str"', 'true']) {
      it(`JSON that is not an object: ${text}`, () => {
        expectBadFrame(() => new FrameDecoder().push(bodyFrame(text)), /object/);
      });
    }

    it('stays failed after an error', () => {
      const decoder = new FrameDecoder();
      expectBadFrame(() => decoder.push(rawFrame(0)));
      expect(decoder.failed).to.equal(true);
      expectBadFrame(() => decoder.push(encodeFrame({ op: 'ping', id: 1 })));
      expectBadFrame(() => decoder.push(Buffer.alloc(0)));
      expect(decoder.bufferedBytes).to.equal(0);
    });

    it('reports the frames decoded before the bad one in the same chunk', () => {
      const decoder = new FrameDecoder();
      const err = expectBadFrame(() =>
        decoder.push(Buffer.concat([encodeFrame({ n: 1 }), encodeFrame({ n: 2 }), bodyFrame('null'), encodeFrame({ n: 3 })])),
      );
      expect(err.decoded).to.deep.equal([{ n: 1 }, { n: 2 }]);
    });
  });
});

describe('FrameDecoder - bounded batches (append / next / hasFrame)', () => {
  it('hands out at most max frames per next(), the rest stays buffered as bytes', () => {
    const d = new FrameDecoder(1024);
    d.append(Buffer.concat(Array.from({ length: 5 }, (_, i) => encodeFrame({ i }))));
    expect(d.hasFrame).to.equal(true);
    expect(d.next(2)).to.deep.equal([{ i: 0 }, { i: 1 }]);
    expect(d.next(2)).to.deep.equal([{ i: 2 }, { i: 3 }]);
    expect(d.hasFrame).to.equal(true);
    expect(d.next(2)).to.deep.equal([{ i: 4 }]);
    expect(d.hasFrame).to.equal(false);
    expect(d.bufferedBytes).to.equal(0);
  });

  it('hasFrame is false for a partial frame, true for a bad header; next() then throws with what came before', () => {
    const d = new FrameDecoder(64);
    const f = encodeFrame({ a: 1 });
    d.append(f.subarray(0, 6));
    expect(d.hasFrame).to.equal(false);
    d.append(Buffer.concat([f.subarray(6), rawFrame(65)]));
    expect(d.hasFrame).to.equal(true);
    expect(d.next(1)).to.deep.equal([{ a: 1 }]);
    expect(d.hasFrame).to.equal(true);
    expect(() => d.next(1)).to.throw(FrameError);
  });
});
