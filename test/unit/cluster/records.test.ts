import { expect } from 'chai';
import fc from 'fast-check';
import { isValidName, normalizeName } from '../../../src/cluster/names';
import { FIND_REPLY_FIXED, MAX_FIND_REPLY_BYTES, MAX_KEY_BYTES, readFindReply, readKey, writeFindReply } from '../../../src/cluster/records';

const b = (s: string): Buffer => Buffer.from(s, 'utf8');
/** Names as the request schema accepts them: letters, digits and _ of any script, 1-24 code points. */
const validName = fc
  .array(fc.oneof(fc.constantFrom(...'abcXYZ019_'), fc.constantFrom('가', '힣', 'é', 'Ж', 'ß', 'ǅ', '٣', '𝒜', 'Ω')), { minLength: 1, maxLength: 24 })
  .map((a) => a.join(''))
  .filter(isValidName);

describe('cluster - binary records (FIND and its reply)', () => {
  it('readKey - takes a directory key: 1..96 bytes of UTF-8, ASCII only digits, lower-case letters and _', () => {
    expect(readKey(b('bob_7'), 0, 5)).to.equal('bob_7');
    expect(readKey(b('타락파워전사'), 0, 18)).to.equal('타락파워전사');
    expect(readKey(b('xbobx'), 1, 4)).to.equal('bob');
    const bad: [string, Buffer][] = [
      ['empty', Buffer.alloc(0)],
      ['upper case', b('Bob')],
      ['space', b('bad name')],
      ['punctuation', b('bob!')],
      ['quote', b('a"b')],
      ['control', Buffer.from([0x61, 0x00, 0x62])],
      ['truncated UTF-8', b('가').subarray(0, 2)],
      ['overlong encoding', Buffer.from([0xc0, 0xaf])],
      ['lone continuation byte', Buffer.from([0x61, 0x80])],
      ['U+FFFD itself', b('a\ufffd')],
      ['too long', b('x'.repeat(MAX_KEY_BYTES + 1))],
    ];
    for (const [what, buf] of bad) expect(readKey(buf, 0, buf.length), what).to.equal(undefined);
    expect(readKey(b('x'.repeat(MAX_KEY_BYTES)), 0, MAX_KEY_BYTES)).to.equal('x'.repeat(MAX_KEY_BYTES));
    expect(readKey(b('bob'), 0, 4), 'end past the buffer').to.equal(undefined);
    expect(readKey(b('bob'), -1, 2), 'negative start').to.equal(undefined);
  });

  it('readKey - accepts the key of every valid name, and its display form when asked for a name (fast-check)', () => {
    fc.assert(
      fc.property(validName, (name) => {
        const key = normalizeName(name);
        const kb = b(key);
        const nb = b(name);
        return readKey(kb, 0, kb.length) === key && readKey(nb, 0, nb.length, false) === name;
      }),
      { numRuns: 2000 },
    );
  });

  it('FIND reply - round trip for any valid name, channel and owner (fast-check)', () => {
    const out = Buffer.alloc(MAX_FIND_REPLY_BYTES);
    fc.assert(
      fc.property(validName, fc.integer({ min: 1, max: 0xffff }), fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 1, max: 0xffffffff }), (name, channel, owner, ownerInc) => {
        const n = writeFindReply(out, { name, channel, owner, ownerInc });
        expect(n).to.equal(FIND_REPLY_FIXED + Buffer.byteLength(name));
        const framed = Buffer.concat([Buffer.from([9, 9, 9]), out.subarray(0, n), Buffer.from([7])]);
        expect(readFindReply(framed, 3, 3 + n)).to.deep.equal({ name, channel, owner, ownerInc });
      }),
      { numRuns: 2000 },
    );
  });

  it('FIND reply - any bytes decode to undefined or to a well-formed hit, never throw (fast-check, 5,000 cases)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: MAX_FIND_REPLY_BYTES + 8 }), fc.nat(8), (bytes, cut) => {
        const buf = Buffer.from(bytes);
        const end = Math.max(0, buf.length - cut);
        const hit = readFindReply(buf, 0, end);
        if (hit === undefined) return true;
        return hit.channel >= 1 && hit.name.length > 0 && !/[\u0000-\u001f"\\\\ ]/.test(hit.name);
      }),
      { numRuns: 5000 },
    );
    expect(readFindReply(Buffer.alloc(FIND_REPLY_FIXED), 0, FIND_REPLY_FIXED), 'no name').to.equal(undefined);
    const zeroChannel = Buffer.concat([Buffer.alloc(FIND_REPLY_FIXED), b('bob')]);
    expect(readFindReply(zeroChannel, 0, zeroChannel.length), 'channel 0').to.equal(undefined);
    // Regression (fuzz): a range outside the body is refused, not a RangeError from readUInt16LE.
    const ok = Buffer.concat([Buffer.from([1, 0]), Buffer.alloc(8), b('a')]);
    expect(readFindReply(ok, 0, ok.length)).to.deep.equal({ name: 'a', channel: 1, owner: 0, ownerInc: 0 });
    expect(readFindReply(ok, -1, ok.length), 'negative start').to.equal(undefined);
    expect(readFindReply(ok, 1, ok.length + 1), 'end past the body').to.equal(undefined);
    expect(readFindReply(Buffer.alloc(1), 0, 12), 'body shorter than the fixed fields').to.equal(undefined);
  });
});
