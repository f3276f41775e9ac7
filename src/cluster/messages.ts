import Ajv, { type ValidateFunction } from 'ajv';
import { loadSchema } from '../schemas';

/** Payload types of the cluster's records (schemas/cluster-messages.json). */
/** `epoch`: the membership epoch the sender routed by (docs/resharding.md). */
export interface LoginPayload { name: string; session: number; channel: number; epoch: number }
export type MovePayload = LoginPayload;
export interface RemovePayload { name: string; session: number; owner: number; ownerInc: number }
export interface PurgePayload { owner: number; ownerInc: number; keep?: number }
export interface CountPayload { count: number; conflicts?: number }
export interface SyncPayload { entries: [string, number, number][]; last: boolean; epoch: number }
/**
 * A membership epoch (docs/resharding.md): its number and member shards as ranges
 * [first, last] (ownership.ts memberRanges); `settled` only in the collector's answers.
 */
export interface ViewPayload { epoch: number; members: [number, number][]; settled?: boolean }
/** `view`/`ready`: the epoch the sender is at, and whether it is done with it (resharding.md). */
/**
 * `host`: the sender's HOST_ID (docs/multi-host.md); the collector checks the pid only of a
 * process of its own host (absent: the collector's host, as before several hosts).
 */
/**
 * `clock`: the sender's offset to the collector's clock (ms, collector minus sender), its error
 * bound, and whether the sender corrects its deadlines by it (docs/multi-host.md "Clock skew");
 * `{}` before the first measurement. Present: the collector answers with its time (`now`).
 */
export interface HeartbeatPayload { role: 'chatd' | 'channeld' | 'gc'; index: number; pid: number; host?: string; view?: ViewPayload; ready?: boolean; clock?: ClockReport }
export interface ClockReport { offset?: number; bound?: number; applied?: boolean }
export interface HelloPayload { shard: number; host?: string }
export interface HelloReplyPayload { chatds: [number, number][]; view?: ViewPayload }
/** `epoch`: the epoch whose ownership the resync is for (absent: the chatD's own). */
export interface ResyncPayload { shard: number; shardInc: number; epoch?: number }
/** LEAVING: the stopping shard and its incarnation (the shape of RESYNC; no epoch is sent). */
export type LeavingPayload = Omit<ResyncPayload, 'epoch'>;
export interface SessionEndPayload { name: string; session: number }
export interface WhisperPayload { to: string; from: string; text: string }
/**
 * The collector's heartbeat answer: live shards [index, incarnation], and (since shards check
 * who may change the directory) live chatDs [mtype, incarnation]; older collectors omit it.
 */
/**
 * `now`: the collector's Date.now() when it answered, only to a heartbeat that carried `clock`
 * (an earlier process's schema would refuse the field).
 */
export interface MembershipPayload { shards: [number, number][]; chatds?: [number, number][]; view?: ViewPayload; now?: number }
export type EmptyPayload = Record<string, never>;
export type StatusPayload = Record<string, unknown>;

export interface PayloadTypes {
  login: LoginPayload;
  move: MovePayload;
  remove: RemovePayload;
  purge: PurgePayload;
  count: CountPayload;
  sync: SyncPayload;
  heartbeat: HeartbeatPayload;
  hello: HelloPayload;
  helloReply: HelloReplyPayload;
  resync: ResyncPayload;
  leaving: LeavingPayload;
  sessionEnd: SessionEndPayload;
  whisper: WhisperPayload;
  membership: MembershipPayload;
  empty: EmptyPayload;
  status: StatusPayload;
}
export type PayloadName = keyof PayloadTypes;

const validators = new Map<PayloadName, ValidateFunction>();
let ajv: Ajv | undefined;

function validatorFor(name: PayloadName): ValidateFunction {
  let v = validators.get(name);
  if (!v) {
    if (!ajv) {
      ajv = new Ajv({ strict: true, allErrors: false });
      ajv.addSchema(loadSchema('cluster-messages.json'));
    }
    v = ajv.getSchema(`chatd-cluster/cluster-messages.json#/definitions/${name}`);
    if (!v) throw new Error(`no schema for payload ${name}`);
    validators.set(name, v);
  }
  return v;
}

export function encodePayload<N extends PayloadName>(_name: N, value: PayloadTypes[N]): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

/** Parses and validates; undefined for anything that is not a valid payload of that name. */
export function decodePayload<N extends PayloadName>(name: N, bytes: Uint8Array): PayloadTypes[N] | undefined {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch {
    return undefined;
  }
  return validatorFor(name)(value) ? (value as PayloadTypes[N]) : undefined;
}

export const EMPTY = Buffer.alloc(0);
