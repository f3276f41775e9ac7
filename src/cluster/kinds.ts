/**
 * Record kinds of the cluster's own protocol on the queue (u8, below 0x80; a reply has the
 * request's kind | 0x80). Payloads are compact JSON, validated with ajv against
 * schemas/cluster-messages.json on arrival (messages cross a process boundary: trust nothing).
 */
export const Kind = {
  /** chatD → shard: record a login (request). */
  LOGIN: 1,
  /** chatD → shard: change channel (request). */
  MOVE: 2,
  /** chatD or GC → shard: remove one session's entry (request; idempotent). */
  REMOVE: 3,
  /** chatD → shard: where is NAME (request). */
  FIND: 4,
  /** GC or chatD → shard: remove every entry of one chatD incarnation (request; idempotent). */
  PURGE: 5,
  /** chatD → shard: restore live sessions after the shard restarted (request). */
  SYNC: 6,
  /** any process → GC: I am alive (request; the reply is the collector's membership view). */
  HEARTBEAT: 7,
  /** shard → GC: I (re)started, who must resync me? (request). */
  HELLO: 8,
  /** GC → chatD: shard restarted, resend its sessions (one-way). */
  RESYNC: 9,
  /** chatD → GC: this session's handler ended, remove it (request; reply once removed). */
  SESSION_END: 10,
  /** chatD → chatD: deliver a whisper to a local session (request). */
  WHISPER: 11,
  /** tool → any: health and counters (request). */
  STATUS: 13,
  /** shard → chatD: I am stopping (graceful stop, reload): treat me as down until my successor (one-way). */
  LEAVING: 14,
} as const;
export type Kind = (typeof Kind)[keyof typeof Kind];

/** Reply statuses (0 is success). */
export const Status = {
  OK: 0,
  NAME_TAKEN: 1,
  NOT_FOUND: 2,
  UNAVAILABLE: 3,
  BAD_REQUEST: 4,
  INTERNAL: 5,
  /**
   * The request was routed by a membership epoch under which this shard cannot answer for the
   * name (docs/resharding.md); payload: u32, the shard's epoch. chatD never passes it on: its
   * client sees UNAVAILABLE.
   */
  WRONG_EPOCH: 6,
  /**
   * The collector's answer to a HEARTBEAT or HELLO of an incarnation it declared dead and
   * cannot take back (another host's process, judged by heartbeat silence; docs/multi-host.md):
   * its state is stale, so the process exits and its supervisor starts a new incarnation.
   */
  FENCED: 7,
} as const;
export type Status = (typeof Status)[keyof typeof Status];

export const kindName = (kind: number): string =>
  (Object.entries(Kind).find(([, v]) => v === (kind & 0x7f))?.[0] ?? `KIND_${kind}`) + (kind & 0x80 ? '_REPLY' : '');
