import { Kind, Status } from '../cluster/kinds';
import { decodePayload, encodePayload, type FindReplyPayload, type PayloadName, type PayloadTypes } from '../cluster/messages';
import { ClientError, ClientErrorCode } from '../errors';
import type { Endpoint, Reply } from '../ipc/endpoint';
import { RequestError } from '../ipc/endpoint';
import { shardMtype } from '../ipc/mtypes';
import { shardFor } from '../cluster/shard-for';

export type FindOutcome = { online: false } | ({ online: true } & FindReplyPayload);

/**
 * chatD's view of the shards: routes each request to the shard that owns the name, maps
 * queue failures to client codes (no reply in time: TIMEOUT; cannot send or shard down:
 * UNAVAILABLE), and keeps the collector's word on which shards are alive.
 */
export class ShardClient {
  /** shard index → incarnation, from the collector; undefined until it has spoken. */
  private live: Map<number, number> | undefined;
  private liveAt = 0;

  constructor(
    private readonly endpoint: Endpoint,
    readonly shards: number,
    private readonly timeoutMs: number,
    /** How long the collector's view stays trusted; past it, every shard is tried. */
    private readonly membershipTtlMs: number,
  ) {}

  shardOf(name: string): number {
    return shardFor(name, this.shards);
  }

  setMembership(shards: [number, number][]): void {
    this.live = new Map(shards);
    this.liveAt = Date.now();
  }

  /** False only when the collector recently said the shard is not alive. */
  isUp(shard: number): boolean {
    if (!this.live || Date.now() - this.liveAt > this.membershipTtlMs) return true;
    return this.live.has(shard);
  }

  async find(name: string): Promise<FindOutcome> {
    const r = await this.call(this.shardOf(name), Kind.FIND, 'find', { name });
    if (r.status === Status.NOT_FOUND) return { online: false };
    const p = this.expectOk(r, 'findReply');
    return { online: true, ...p };
  }

  /** Records a login on the owning shard. Throws NAME_TAKEN, TIMEOUT, UNAVAILABLE. */
  async login(name: string, session: number, channel: number): Promise<void> {
    const r = await this.call(this.shardOf(name), Kind.LOGIN, 'login', { name, session, channel });
    if (r.status === Status.NAME_TAKEN) throw new ClientError(ClientErrorCode.NAME_TAKEN, `${name} is online already`);
    this.expectOk(r);
  }

  async move(name: string, session: number, channel: number): Promise<void> {
    const r = await this.call(this.shardOf(name), Kind.MOVE, 'move', { name, session, channel });
    this.expectOk(r);
  }

  /** Removes one session's entry directly (the fallback when the collector does not confirm). */
  async remove(name: string, session: number): Promise<void> {
    const r = await this.call(this.shardOf(name), Kind.REMOVE, 'remove', {
      name,
      session,
      owner: this.endpoint.mtype,
      ownerInc: this.endpoint.incarnation,
    });
    this.expectOk(r);
  }

  async purge(shard: number, keep: number): Promise<number> {
    const r = await this.call(shard, Kind.PURGE, 'purge', { owner: this.endpoint.mtype, ownerInc: 0, keep });
    return this.expectOk(r, 'count').count;
  }

  async sync(shard: number, entries: [string, number, number][], last: boolean): Promise<void> {
    const r = await this.call(shard, Kind.SYNC, 'sync', { entries, last }, true);
    this.expectOk(r);
  }

  private async call<N extends PayloadName>(shard: number, kind: number, name: N, payload: PayloadTypes[N], evenIfDown = false): Promise<Reply> {
    if (!evenIfDown && !this.isUp(shard)) throw new ClientError(ClientErrorCode.UNAVAILABLE, `shard ${shard} is down; retry later`);
    try {
      return await this.endpoint.request(shardMtype(shard), kind, encodePayload(name, payload), this.timeoutMs);
    } catch (err) {
      if (err instanceof RequestError && err.code === 'TIMEOUT') {
        throw new ClientError(ClientErrorCode.TIMEOUT, `shard ${shard} did not answer in time`, { cause: err });
      }
      throw new ClientError(ClientErrorCode.UNAVAILABLE, `shard ${shard} cannot be reached; retry later`, { cause: err });
    }
  }

  private expectOk(r: Reply): void;
  private expectOk<N extends PayloadName>(r: Reply, name: N): PayloadTypes[N];
  private expectOk<N extends PayloadName>(r: Reply, name?: N): PayloadTypes[N] | void {
    switch (r.status) {
      case Status.OK:
        break;
      case Status.UNAVAILABLE:
        throw new ClientError(ClientErrorCode.UNAVAILABLE, 'the directory is recovering; retry later');
      case Status.NOT_FOUND:
        throw new ClientError(ClientErrorCode.NOT_FOUND, 'not found');
      default:
        throw new ClientError(ClientErrorCode.INTERNAL, `shard answered status ${r.status}`);
    }
    if (!name) return;
    const p = decodePayload(name, r.payload);
    if (!p) throw new ClientError(ClientErrorCode.INTERNAL, 'shard sent a malformed reply');
    return p;
  }
}

