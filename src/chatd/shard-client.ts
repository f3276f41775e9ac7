import { Kind, Status } from '../cluster/kinds';
import { decodePayload, encodePayload, type PayloadName, type PayloadTypes } from '../cluster/messages';
import { normalizeName } from '../cluster/names';
import { readFindReply, type FindHit } from '../cluster/records';
import { ClientError, ClientErrorCode } from '../errors';
import type { Endpoint, Reply, ReplySink } from '../ipc/endpoint';
import { RequestError } from '../ipc/endpoint';
import { shardMtype } from '../ipc/mtypes';
import { shardFor, shardOfKey } from '../cluster/shard-for';

export type FindOutcome = { online: false } | ({ online: true } & FindHit);
const OFFLINE: FindOutcome = Object.freeze({ online: false });

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
    return new Promise((resolve, reject) => {
      try {
        this.sendFind(name, promiseFindSink, { resolve, reject, shard: 0, key: '', client: this });
      } catch (err) {
        reject(err);
      }
    });
  }

  /**
   * The hot path of a find: routes `name` to its shard and sends a binary FIND record
   * (cluster/records.ts) whose outcome goes to `sink` with `ctx` (no Promise per request).
   * The sink turns the reply into an outcome with findOutcome() and failures with
   * clientError(). Throws ClientError UNAVAILABLE at once when the shard is known down.
   */
  sendFind<C extends { shard: number; key: string }>(name: string, sink: ReplySink<C>, ctx: C): void {
    const key = normalizeName(name);
    const shard = shardOfKey(key, this.shards);
    if (!this.isUp(shard)) throw new ClientError(ClientErrorCode.UNAVAILABLE, `shard ${shard} is down; retry later`);
    ctx.shard = shard;
    ctx.key = key;
    this.endpoint.call(shardMtype(shard), Kind.FIND, key, this.timeoutMs, sink, ctx);
  }

  /**
   * A FIND reply's meaning, for the name whose directory key is `key`. Throws ClientError for
   * an error status, a malformed reply, or a reply about another name (never passed on).
   */
  findOutcome(status: number, body: Buffer, start: number, end: number, key: string, shard?: number, fromIncarnation?: number): FindOutcome {
    if (shard !== undefined && fromIncarnation !== undefined) this.checkIncarnation(shard, fromIncarnation);
    if (status === Status.NOT_FOUND) return OFFLINE;
    this.checkStatus(status);
    const hit = readFindReply(body, start, end);
    if (!hit) throw new ClientError(ClientErrorCode.INTERNAL, 'shard sent a malformed reply');
    if (normalizeName(hit.name) !== key) throw new ClientError(ClientErrorCode.INTERNAL, 'shard answered for another name');
    return { online: true, name: hit.name, channel: hit.channel, owner: hit.owner, ownerInc: hit.ownerInc };
  }

  /**
   * A reply is taken only from the shard incarnation the collector names (its heartbeat
   * answer): anything else on the shard's mtype is either a successor the collector admitted
   * since our last heartbeat (we ask again at once: `onStrangerReply`) or a forger, and a
   * forged "offline" or channel would be a wrong answer. So it is UNAVAILABLE, never used.
   */
  private checkIncarnation(shard: number, fromIncarnation: number): void {
    const named = this.live?.get(shard);
    if (named === undefined || named === fromIncarnation) return;
    this.strangerReplies++;
    this.onStrangerReply?.();
    throw new ClientError(ClientErrorCode.UNAVAILABLE, `shard ${shard} answered from an incarnation not yet confirmed; retry`);
  }

  /** Replies from a shard incarnation the collector had not named (see checkIncarnation). */
  strangerReplies = 0;
  /** Called on such a reply: chatD asks the collector for a fresh membership. */
  onStrangerReply: (() => void) | undefined;

  /** A failed request to a shard, as the client sees it. */
  clientError(shard: number, err: unknown): ClientError {
    if (err instanceof RequestError && err.code === 'TIMEOUT') {
      return new ClientError(ClientErrorCode.TIMEOUT, `shard ${shard} did not answer in time`, { cause: err });
    }
    return new ClientError(ClientErrorCode.UNAVAILABLE, `shard ${shard} cannot be reached; retry later`, { cause: err });
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
    let r: Reply;
    try {
      r = await this.endpoint.request(shardMtype(shard), kind, encodePayload(name, payload), this.timeoutMs);
    } catch (err) {
      throw this.clientError(shard, err);
    }
    // A resync (evenIfDown) talks to a successor the collector admitted before our membership says so.
    if (!evenIfDown) this.checkIncarnation(shard, r.fromIncarnation);
    return r;
  }

  private checkStatus(status: number): void {
    switch (status) {
      case Status.OK:
        return;
      case Status.UNAVAILABLE:
        throw new ClientError(ClientErrorCode.UNAVAILABLE, 'the directory is recovering; retry later');
      case Status.NOT_FOUND:
        throw new ClientError(ClientErrorCode.NOT_FOUND, 'not found');
      default:
        throw new ClientError(ClientErrorCode.INTERNAL, `shard answered status ${status}`);
    }
  }

  private expectOk(r: Reply): void;
  private expectOk<N extends PayloadName>(r: Reply, name: N): PayloadTypes[N];
  private expectOk<N extends PayloadName>(r: Reply, name?: N): PayloadTypes[N] | void {
    this.checkStatus(r.status);
    if (!name) return;
    const p = decodePayload(name, r.payload);
    if (!p) throw new ClientError(ClientErrorCode.INTERNAL, 'shard sent a malformed reply');
    return p;
  }
}


/** find()'s sink: the promise form of sendFind. */
interface PromiseFind {
  resolve: (o: FindOutcome) => void;
  reject: (e: unknown) => void;
  shard: number;
  key: string;
  client?: ShardClient;
}
const promiseFindSink: ReplySink<PromiseFind> = {
  onReply(ctx, status, body, start, end, _from, fromIncarnation) {
    try {
      ctx.resolve(ctx.client!.findOutcome(status, body, start, end, ctx.key, ctx.shard, fromIncarnation));
    } catch (err) {
      ctx.reject(err);
    }
  },
  onFailure(ctx, err) {
    ctx.reject(ctx.client!.clientError(ctx.shard, err));
  },
};
