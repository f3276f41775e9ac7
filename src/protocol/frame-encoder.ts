/** Encodes one object as a frame: 4-byte unsigned big-endian length, then UTF-8 JSON. */
export function encodeFrame(obj: object): Buffer {
  const json: unknown = JSON.stringify(obj);
  // JSON.stringify gives undefined for e.g. a toJSON() that returns undefined.
  if (typeof json !== 'string') throw new TypeError('encodeFrame: value has no JSON representation');
  const length = Buffer.byteLength(json, 'utf8');
  const frame = Buffer.allocUnsafe(4 + length);
  frame.writeUInt32BE(length, 0);
  frame.write(json, 4, 'utf8');
  return frame;
}
