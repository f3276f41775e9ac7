/**
 * The mtype plan of the shared queue (docs/ipc.md). One mtype is one mailbox; each process
 * receives on its own, so no process can steal another's messages.
 *
 *   1            legacy C request  (PROTOCOL.md: NUL-terminated command line)
 *   2            legacy C reply    (read by the C peers, never by the cluster)
 *   3            the garbage-collector worker
 *   4..99        reserved
 *   100..999     channelD shard i at 100 + i
 *   1000..1999   chatD instance j at 1000 + j
 *   1000000+pid  tools, tests and benchmarks (pid-based, so two tools never share one)
 */
export const MTYPE_LEGACY_REQUEST = 1;
export const MTYPE_LEGACY_REPLY = 2;
export const MTYPE_GC = 3;
export const MTYPE_SHARD_BASE = 100;
export const MAX_SHARDS = 900;
export const MTYPE_CHATD_BASE = 1000;
export const MAX_CHATD = 1000;
export const MTYPE_TOOL_BASE = 1_000_000;

export const shardMtype = (shard: number): number => {
  if (!(Number.isInteger(shard) && shard >= 0 && shard < MAX_SHARDS)) throw new RangeError(`shard index ${shard} out of range`);
  return MTYPE_SHARD_BASE + shard;
};
export const chatdMtype = (instance: number): number => {
  if (!(Number.isInteger(instance) && instance >= 0 && instance < MAX_CHATD)) throw new RangeError(`chatd instance ${instance} out of range`);
  return MTYPE_CHATD_BASE + instance;
};
export const isChatdMtype = (mtype: number): boolean => mtype >= MTYPE_CHATD_BASE && mtype < MTYPE_CHATD_BASE + MAX_CHATD;
export const toolMtype = (pid = process.pid): number => MTYPE_TOOL_BASE + pid;

export type MtypeOwner =
  | { role: 'legacy-request' | 'legacy-reply' | 'gc' | 'reserved' }
  | { role: 'channeld'; shard: number }
  | { role: 'chatd'; instance: number }
  | { role: 'tool'; pid: number };

/** Who an mtype belongs to: for the queue tool and the collector's drains. */
export function ownerOf(mtype: number): MtypeOwner {
  if (mtype === MTYPE_LEGACY_REQUEST) return { role: 'legacy-request' };
  if (mtype === MTYPE_LEGACY_REPLY) return { role: 'legacy-reply' };
  if (mtype === MTYPE_GC) return { role: 'gc' };
  if (mtype >= MTYPE_SHARD_BASE && mtype < MTYPE_SHARD_BASE + MAX_SHARDS) return { role: 'channeld', shard: mtype - MTYPE_SHARD_BASE };
  if (mtype >= MTYPE_CHATD_BASE && mtype < MTYPE_CHATD_BASE + MAX_CHATD) return { role: 'chatd', instance: mtype - MTYPE_CHATD_BASE };
  if (mtype >= MTYPE_TOOL_BASE) return { role: 'tool', pid: mtype - MTYPE_TOOL_BASE };
  return { role: 'reserved' };
}
