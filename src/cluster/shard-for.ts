import { normalizeName } from './names';

const FNV_OFFSET_BASIS = 0x811c9dc5;
const FNV_PRIME = 0x01000193;
const utf8 = new TextEncoder();

/** 32-bit FNV-1a, unsigned. */
export function fnv1a32(bytes: Uint8Array): number {
  let hash = FNV_OFFSET_BASIS;
  for (let i = 0; i < bytes.length; i++) {
    hash ^= bytes[i]!;
    // Math.imul keeps the product in 32 bits; a plain * would lose low bits past 2^53.
    hash = Math.imul(hash, FNV_PRIME);
  }
  return hash >>> 0;
}

/**
 * The channelD shard that owns a name: FNV-1a of the UTF-8 bytes of its directory key,
 * modulo the shard count. The key is normalized here too (idempotent on a key), so a raw
 * name and its key always route to the same shard.
 */
export function shardFor(nameKey: string, shards: number): number {
  if (!Number.isInteger(shards) || shards < 1) {
    throw new RangeError(`shards must be a positive integer, got ${shards}`);
  }
  return fnv1a32(utf8.encode(normalizeName(nameKey))) % shards;
}
