import { Kind, Status } from '../cluster/kinds';
import { decodePayload, encodePayload, type PayloadName, type PayloadTypes, type ViewPayload } from '../cluster/messages';
import { normalizeName } from '../cluster/names';
import { readFindReply, readLeavingMark, type FindHit } from '../cluster/records';
import { ClientError, ClientErrorCode } from '../errors';
import type { Endpoint, Reply, ReplySink } from '../ipc/endpoint';
import { RequestError } from '../ipc/endpoint';
import { shardMtype } from '../ipc/mtypes';
import { OwnershipView, memberRanges, membersFromRanges } from '../cluster/ownership';
import { EpochFollower } from './epoch-follower';

export type FindOutcome = { online: false } | ({ online: true } & FindHit);
const OFFLINE: FindOutcome = Object.freeze({ online: false });
/** Longest time a shard that said it is stopping counts as down without news of its successor. */
const LEAVING_HOLD_MS = 10_000;

/**
 * chatD's view of the shards: routes each request to the shard that owns the name under the
 * collector's membership epoch (docs/resharding.md), maps queue failures to client codes (no
 * reply in time: TIMEOUT; cannot send, shard down, or no epoch yet: UNAVAILABLE), and keeps
 * the collector's word on which shards are alive.
 */
export class ShardClient {
  /** shard index → incarnation, from the collector; undefined until it has spoken. */
  private live: Map<number, number> | undefined;
  private liveAt = 0;
  /** The epoch requests are routed by, and the hand-over when it changes. */
  readonly follower: EpochFollower;
  /** Whether the collector's last answer said the current epoch has settled. */
  private settled = false;
  /**
   * Resends this chatD's sessions owned by `shard` under `view` (ChatService): the hand-over
   * of a new epoch. Until set, a hand-over fails and is retried.
   */
  onHandover: ((shard: number, view: OwnershipView) => Promise<boolean>) | undefined;
  /** Replies WRONG_EPOCH (a shard and we disagree on the epoch: one of us is behind). */
  wrongEpochReplies = 0;
  /** Called on such a reply: chatD asks the collector for a fresh membership. */
  onWrongEpoch: (() => void) | undefined;

  constructor(
    private readonly endpoint: Endpoint,
    readonly shards: number,
    private readonly timeoutMs: number,
    /** How long the collector's view stays trusted; past it, every shard is tried. */
    private readonly membershipTtlMs: number,
  ) {
    this.follower = new EpochFollower({
      resync: (shard, view) => this.onHandover?.(shard, view) ?? Promise.resolve(false),
      isUp: (shard) => this.isUp(shard),
    });
  }

  /** The shard owning `name` under the current epoch; undefined before the collector's first view. */
  shardOf(name: string): number | undefined {
    return this.follower.view?.ownerOfKey(normalizeName(name));
  }

  /** The view requests are routed by; UNAVAILABLE before the collector's first one. */
  private route(): OwnershipView {
    const v = this.follower.view;
    if (!v) throw new ClientError(ClientErrorCode.UNAVAILABLE, 'no membership from the collector yet; retry later');
    return v;
  }

  setMembership(shards: [number, number][], view?: ViewPayload): void {
    this.live = new Map(shards);
    this.liveAt = Date.now();
    if (!view) return;
    const members = membersFromRanges(view.members);
    if (!members) return;
    const cur = this.follower.view;
    if (!cur || view.epoch > cur.epoch) this.follower.adopt(cur ? cur.next(view.epoch, members) : new OwnershipView(view.epoch, members));
    if (view.epoch === this.follower.view?.epoch) this.settled = view.settled === true;
    for (const w of this.viewWaiters.splice(0)) w();
  }
  private readonly viewWaiters: (() => void)[] = [];

  /** Resolves once the collector gave a view, or after `ms` (then requests get UNAVAILABLE until it does). */
  whenView(ms: number): Promise<boolean> {
    if (this.follower.view) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), ms);
      t.unref();
      this.viewWaiters.push(() => {
        clearTimeout(t);
        resolve(true);
      });
    });
  }

  /** What the heartbeat reports (docs/resharding.md). */
  report(): { view?: ViewPayload; ready?: boolean } {
    const v = this.follower.view;
    return v ? { view: { epoch: v.epoch, members: memberRanges(v.members) }, ready: this.follower.ready } : {};
  }

  /** Every shard that may hold entries of ours: the first CHANNELD_SHARDS, the members of both epochs, the live ones. */
  purgeTargets(): number[] {
    const set = new Set<number>();
    for (let s = 0; s < this.shards; s++) set.add(s);
    for (const s of this.follower.view?.members ?? []) set.add(s);
    for (const s of this.follower.previousView?.members ?? []) set.add(s);
    for (const s of this.live?.keys() ?? []) set.add(s);
    return [...set].sort((a, b) => a - b);
  }

  /**
   * Shards that answered with the leaving mark (they are stopping: reload): shard index →
   * the stopping incarnation and when it said so. Down until the collector reports another
   * incarnation of that shard, or for LEAVING_HOLD_MS at most.
   */
  private readonly leaving = new Map<number, { incarnation: number; at: number }>();
  readonly counters = { leavingMarks: 0 };

  /** A shard said it is stopping (an UNAVAILABLE reply with the leaving mark). */
  noteLeaving(shard: number, incarnation: number): void {
    const named = this.live?.get(shard);
    if (named !== undefined && named !== incarnation) return; // not the incarnation the collector names
    const known = this.leaving.get(shard);
    if (known?.incarnation === incarnation) return;
    this.leaving.set(shard, { incarnation, at: Date.now() });
    this.counters.leavingMarks++;
  }

  /** False when the collector recently said the shard is not alive, or the shard is stopping. */
  isUp(shard: number): boolean {
    if (this.leaving.size > 0 && this.isLeaving(shard)) return false;
    if (!this.live || Date.now() - this.liveAt > this.membershipTtlMs) return true;
    return this.live.has(shard);
  }

  private isLeaving(shard: number): boolean {
    const m = this.leaving.get(shard);
    if (!m) return false;
    const successor = this.live && Date.now() - this.liveAt <= this.membershipTtlMs ? this.live.get(shard) : undefined;
    if ((successor !== undefined && successor !== m.incarnation) || Date.now() - m.at > LEAVING_HOLD_MS) {
      this.leaving.delete(shard);
      return false;
    }
    return true;
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
    const view = this.route();
    const shard = view.ownerOfKey(key);
    if (!this.isUp(shard)) throw new ClientError(ClientErrorCode.UNAVAILABLE, `shard ${shard} is down; retry later`);
    ctx.shard = shard;
    ctx.key = key;
    // The payload: u32 epoch, then the key (written by the endpoint, no buffer built here).
    this.endpoint.call(shardMtype(shard), Kind.FIND, key, this.timeoutMs, sink, ctx, 0, view.epoch);
  }

  /**
   * A FIND reply's meaning, for the name whose directory key is `key`. Throws ClientError for
   * an error status, a malformed reply, or a reply about another name (never passed on).
   */
  findOutcome(status: number, body: Buffer, start: number, end: number, key: string, shard?: number, fromIncarnation?: number, asked?: string): FindOutcome {
    if (shard !== undefined && fromIncarnation !== undefined) this.checkIncarnation(shard, fromIncarnation);
    if (status === Status.NOT_FOUND) return OFFLINE;
    if (status === Status.UNAVAILABLE) {
      const owner = shard ?? this.follower.view?.ownerOfKey(key);
      if (owner !== undefined) this.checkLeaving(owner, body, start, end);
    }
    this.checkStatus(status);
    const hit = readFindReply(body, start, end);
    if (!hit) throw new ClientError(ClientErrorCode.INTERNAL, 'shard sent a malformed reply');
    // The hit must be about the key asked. A hit named exactly as asked is (key = normalizeName(asked)):
    // the common case, without normalizing again on the hot path.
    if (hit.name !== asked && normalizeName(hit.name) !== key) throw new ClientError(ClientErrorCode.INTERNAL, 'shard answered for another name');
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

  /**
   * Records a login on the owning shard. Throws NAME_TAKEN, TIMEOUT, UNAVAILABLE. Counted in
   * flight under its epoch until answered: a hand-over waits for it (epoch-follower.ts).
   */
  async login(name: string, session: number, channel: number): Promise<void> {
    const r = await this.epochCall(Kind.LOGIN, 'login', name, session, channel);
    if (r.status === Status.NAME_TAKEN) throw new ClientError(ClientErrorCode.NAME_TAKEN, `${name} is online already`);
    this.expectOk(r);
  }

  async move(name: string, session: number, channel: number): Promise<void> {
    this.expectOk(await this.epochCall(Kind.MOVE, 'move', name, session, channel));
  }

  /** A LOGIN or MOVE to the name's owner under the current epoch, counted in flight under it until answered. */
  private async epochCall(kind: typeof Kind.LOGIN | typeof Kind.MOVE, payload: 'login' | 'move', name: string, session: number, channel: number): Promise<Reply> {
    const view = this.route();
    this.follower.begin(view.epoch);
    try {
      return await this.call(view.ownerOfKey(normalizeName(name)), kind, payload, { name, session, channel, epoch: view.epoch });
    } finally {
      this.follower.end(view.epoch);
    }
  }

  /**
   * Removes one session's entry directly (the fallback when the collector does not confirm):
   * on its owner, and while the epoch has not settled also on its owner under the previous
   * epoch (which may still hold it, docs/resharding.md). Done when every one of them did.
   */
  async remove(name: string, session: number): Promise<void> {
    const key = normalizeName(name);
    const view = this.route();
    const owners = new Set([view.ownerOfKey(key)]);
    const prev = this.follower.previousView;
    if (prev && !this.settled) owners.add(prev.ownerOfKey(key));
    const payload = { name, session, owner: this.endpoint.mtype, ownerInc: this.endpoint.incarnation };
    for (const shard of owners) {
      // A shard known down holds nothing of ours any more (it restarts empty).
      if (owners.size > 1 && !this.isUp(shard)) continue;
      this.expectOk(await this.call(shard, Kind.REMOVE, 'remove', payload));
    }
  }

  async purge(shard: number, keep: number): Promise<number> {
    const r = await this.call(shard, Kind.PURGE, 'purge', { owner: this.endpoint.mtype, ownerInc: 0, keep });
    return this.expectOk(r, 'count').count;
  }

  async sync(shard: number, entries: [string, number, number][], last: boolean, epoch: number): Promise<void> {
    const r = await this.call(shard, Kind.SYNC, 'sync', { entries, last, epoch }, true);
    this.expectOk(r);
  }

  private async call<N extends PayloadName>(shard: number, kind: number, name: N, payload: PayloadTypes[N], evenIfDown = false): Promise<Reply> {
    if (!evenIfDown && !this.isUp(shard)) throw new ClientError(ClientErrorCode.UNAVAILABLE, `shard ${shard} is down; retry later`);
    let r: Reply;
    try {
      r = await this.endpoint.request(shardMtype(shard), kind, encodePayload(name, payload), this.timeoutMs);
    } catch (err) {
      // Sent, then the connection dropped: it may have taken effect, which UNAVAILABLE would
      // deny (protocol.md). TIMEOUT says "may or may not", and a login is taken back on it.
      if (err instanceof RequestError && err.inFlight) throw new ClientError(ClientErrorCode.TIMEOUT, `shard ${shard}: the connection dropped with the request in flight`, { cause: err });
      throw this.clientError(shard, err);
    }
    // A resync (evenIfDown) talks to a successor the collector admitted before our membership says so.
    if (!evenIfDown) {
      this.checkIncarnation(shard, r.fromIncarnation);
      if (r.status === Status.UNAVAILABLE) this.checkLeaving(shard, r.payload, 0, r.payload.length);
    }
    return r;
  }

  /** An UNAVAILABLE reply with the leaving mark: the shard is stopping; throws UNAVAILABLE. */
  private checkLeaving(shard: number, body: Uint8Array, start: number, end: number): void {
    const inc = readLeavingMark(body, start, end);
    if (inc === undefined) return;
    this.noteLeaving(shard, inc);
    throw new ClientError(ClientErrorCode.UNAVAILABLE, `shard ${shard} is being restarted; retry later`);
  }

  private checkStatus(status: number): void {
    switch (status) {
      case Status.OK:
        return;
      case Status.UNAVAILABLE:
        throw new ClientError(ClientErrorCode.UNAVAILABLE, 'the directory is recovering; retry later');
      case Status.WRONG_EPOCH:
        // The shard and we route by different membership epochs: ask the collector now.
        this.wrongEpochReplies++;
        this.onWrongEpoch?.();
        throw new ClientError(ClientErrorCode.UNAVAILABLE, 'the shards are being resized; retry later');
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
