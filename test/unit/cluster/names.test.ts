import { expect } from 'chai';
import fc from 'fast-check';
import { isValidName, normalizeName } from '../../../src/cluster/names';

const NFC = '타락파워전사';
const NFD = NFC.normalize('NFD');

describe('cluster - names', () => {
  it('normalizeName - NFC and NFD Hangul give the same key', () => {
    expect(NFD).to.not.equal(NFC); // the test is meaningful only if the forms differ
    expect(normalizeName(NFD)).to.equal(normalizeName(NFC));
    expect(normalizeName(NFD)).to.equal(NFC);
  });

  it('normalizeName - the ASCII fast path gives what the full NFC, lower case, NFC path gives (fast-check)', () => {
    const full = (s: string): string => s.normalize('NFC').toLowerCase().normalize('NFC');
    fc.assert(fc.property(fc.string({ unit: 'binary-ascii', maxLength: 30 }), (s) => normalizeName(s) === full(s)), { numRuns: 3000 });
    fc.assert(fc.property(fc.string({ unit: 'grapheme', maxLength: 30 }), (s) => normalizeName(s) === full(s)), { numRuns: 3000 });
  });

  it('normalizeName - is case-insensitive', () => {
    expect(normalizeName('Bob')).to.equal('bob');
    expect(normalizeName('BOB')).to.equal(normalizeName('bOb'));
    expect(normalizeName('ÉLODIE')).to.equal(normalizeName('élodie'));
    expect(normalizeName('E\u0301lodie')).to.equal(normalizeName('\u00e9LODIE'));
  });

  it('normalizeName - re-composes after lower-casing', () => {
    // "T\u0308" has no precomposed form, but its lower case composes to U+1E97.
    expect(normalizeName('T\u0308')).to.equal('\u1e97');
    expect(normalizeName('T\u0308')).to.equal(normalizeName('\u1e97'));
  });

  it('normalizeName - is idempotent', () => {
    for (const s of [NFC, NFD, 'Bob_99', 'T\u0308', 'ΣΊΣΥΦΟΣ', 'İstanbul']) {
      const key = normalizeName(s);
      expect(normalizeName(key), s).to.equal(key);
    }
  });

  it('isValidName - letters, digits and _ of any script', () => {
    for (const s of ['a', 'Bob_99', '_', '타락파워전사', '山田太郎', 'Ελένη', '٣٤', '𝒜𝒷']) {
      expect(isValidName(s), s).to.equal(true);
    }
  });

  it('isValidName - rejects the rest', () => {
    for (const s of ['', ' ', 'a b', 'a-b', 'bob!', '🎮', 'a\u200b', 'e\u0301\u0301', 'a\n']) {
      expect(isValidName(s), JSON.stringify(s)).to.equal(false);
    }
    expect(isValidName(42)).to.equal(false);
    expect(isValidName(null)).to.equal(false);
  });

  it('isValidName - 24 code points pass, 25 fail (Hangul and astral)', () => {
    expect(isValidName('가'.repeat(24))).to.equal(true);
    expect(isValidName('가'.repeat(25))).to.equal(false);
    const astral = '\u{20000}'; // CJK Ext. B letter: 2 UTF-16 units
    expect(isValidName(astral.repeat(24))).to.equal(true);
    expect(isValidName(astral.repeat(25))).to.equal(false);
  });

  it('isValidName - counts after NFC', () => {
    const nfd = '각'.repeat(24).normalize('NFD');
    expect(Array.from(nfd)).to.have.length(72);
    expect(isValidName(nfd)).to.equal(true);
    expect(isValidName('e\u0301')).to.equal(true); // composes to a letter
  });
});

describe('cluster - names: digits are decimal digits (PROTOCOL.md: "letter, digit or _")', () => {
  it('accepts decimal digits of any script and refuses other numbers', () => {
    expect(isValidName('player٣')).to.equal(true); // Arabic-Indic digit three
    expect(isValidName('user42')).to.equal(true);
    expect(isValidName('half½')).to.equal(false);
    expect(isValidName('roman\u216B')).to.equal(false); // Roman numeral twelve (a letter number)
    expect(isValidName('sup²')).to.equal(false);
  });
});
