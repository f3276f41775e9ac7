import { expect } from 'chai';
import fc from 'fast-check';
import { fnv1a32, fnv1a32String, shardFor, shardOfKey } from '../../../src/cluster/shard-for';
import { normalizeName } from '../../../src/cluster/names';

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Independent reference, in BigInt arithmetic. */
function fnvReference(bytes: Uint8Array): number {
  let h = 0x811c9dc5n;
  for (const b of bytes) h = ((h ^ BigInt(b)) * 0x01000193n) & 0xffffffffn;
  return Number(h);
}

describe('cluster - shard-for', () => {
  it('fnv1a32 - known vectors', () => {
    expect(fnv1a32(utf8(''))).to.equal(0x811c9dc5);
    expect(fnv1a32(utf8('a'))).to.equal(0xe40c292c);
    expect(fnv1a32(utf8('foobar'))).to.equal(0xbf9cf968);
  });

  it('fnv1a32String - equals fnv1a32 of the UTF-8 bytes for any string, lone surrogates included (fast-check)', () => {
    for (const s of ['', 'a', 'foobar', '타락파워전사', 'é', '😀', '\ud800', 'a\udc00b', '\udbff\udfff']) {
      expect(fnv1a32String(s), JSON.stringify(s)).to.equal(fnv1a32(utf8(s)));
    }
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (s) => fnv1a32String(s) === fnv1a32(utf8(s))),
      { numRuns: 3000 },
    );
  });

  it('shardOfKey - the same shard as shardFor for the key of any name (fast-check)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 24 }), fc.integer({ min: 1, max: 64 }), (name, n) =>
        shardOfKey(normalizeName(name), n) === shardFor(name, n)),
      { numRuns: 2000 },
    );
  });

  it('fnv1a32 - matches a BigInt reference and stays unsigned', () => {
    let seed = 12345;
    const rand = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % 256;
    for (let n = 0; n < 300; n++) {
      const bytes = Uint8Array.from({ length: n % 40 }, rand);
      const h = fnv1a32(bytes);
      expect(h).to.equal(fnvReference(bytes));
      expect(h).to.be.at.least(0).and.below(2 ** 32);
    }
  });

  it('shardFor - is the hash of the UTF-8 key modulo the shard count', () => {
    expect(shardFor('foobar', 4)).to.equal(0xbf9cf968 % 4);
    expect(shardFor('a', 7)).to.equal(0xe40c292c % 7);
    expect(shardFor('타락파워전사', 4)).to.equal(fnvReference(utf8('타락파워전사')) % 4);
  });

  it('shardFor - one shard for every spelling of a name', () => {
    const nfc = '타락파워전사';
    for (const shards of [2, 3, 4, 7, 16]) {
      expect(shardFor(nfc.normalize('NFD'), shards)).to.equal(shardFor(nfc, shards));
      expect(shardFor('FooBar', shards)).to.equal(shardFor('foobar', shards));
    }
  });

  it('shardFor - spreads names evenly over 4 shards', () => {
    const counts = [0, 0, 0, 0];
    const n = 20_000;
    for (let i = 0; i < n; i++) {
      const shard = shardFor(i % 2 ? `player${i}` : `전사${i}`, 4);
      expect(shard).to.be.oneOf([0, 1, 2, 3]);
      counts[shard]!++;
    }
    for (const c of counts) expect(c, JSON.stringify(counts)).to.be.within(n / 4 * 0.9, n / 4 * 1.1);
  });

  it('shardFor - rejects a bad shard count', () => {
    expect(() => shardFor('a', 0)).to.throw(RangeError);
    expect(() => shardFor('a', 1.5)).to.throw(RangeError);
    expect(shardFor('anything', 1)).to.equal(0);
  });
});
