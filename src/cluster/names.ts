/** Character names: validity (same rule as the request schema) and the directory key. */

export const NAME_MAX_CODE_POINTS = 24;
const NAME_PATTERN = /^[\p{L}\p{Nd}_]+$/u;

/**
 * The directory key under which a name is registered and looked up.
 * NFC first, so that NFD input (e.g. Hangul typed on macOS) and precomposed input agree
 * before case mapping. toLowerCase() is locale-independent, but it is not closed under
 * normalization: "T\u0308" is NFC (no precomposed T-diaeresis exists), yet its lower case
 * "t\u0308" composes to U+1E97. The second NFC makes the key canonical again.
 */
export function normalizeName(name: string): string {
  // Fast path (the hot one: every find): ASCII is NFC already and lower-cases to ASCII.
  if (ASCII.test(name)) return name.toLowerCase();
  return name.normalize('NFC').toLowerCase().normalize('NFC');
}
const ASCII = /^[\x00-\x7f]*$/;

/** 1-24 code points, each a Unicode letter, digit or `_`, counted after NFC. */
export function isValidName(s: unknown): s is string {
  if (typeof s !== 'string') return false;
  const nfc = s.normalize('NFC');
  // Cheap bound before the code-point count: every code point is 1 or 2 UTF-16 units.
  if (nfc.length === 0 || nfc.length > NAME_MAX_CODE_POINTS * 2) return false;
  let codePoints = 0;
  for (const _ of nfc) codePoints++;
  return codePoints <= NAME_MAX_CODE_POINTS && NAME_PATTERN.test(nfc);
}
