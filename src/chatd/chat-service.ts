import { Kind, Status } from '../cluster/kinds';
import { EMPTY, decodePayload, encodePayload } from '../cluster/messages';
import { ClientError, ClientErrorCode, toClientCode } from '../errors';
import type { InboundRecord } from '../ipc/envelope';
import type { Endpoint, ReplyFn, ReplySink } from '../ipc/endpoint';
import { RequestError } from '../ipc/endpoint';
import type { Logger } from '../log';
import { shardMtype } from '../ipc/mtypes';
import { LatencySampler, RateMeter, monotonicMs, uptimeS, type ProcessMetrics } from '../runtime/metrics';
import type { ClientRequest } from '../protocol/client-request';
import { normalizeName } from '../cluster/names';
import { errorReply, messagePush, okReply, whisperPush } from '../protocol/replies';
import type { RequestValidator } from '../protocol/request-validator';
import { parseSlashCommand, type Lang, type SlashCommand } from '../protocol/slash-command';
import { channelText, findText, whisperSentText, type FindResult } from '../protocol/texts';
import type { ClientConnection, ConnectionHandler } from './client-connection';
import type { SessionReaper } from './session-reaper';
import type { Session, SessionTable } from './session';
import type { FindOutcome, ShardClient } from './shard-client';

/** One find in flight: what its reply needs (the ctx of the endpoint's ReplySink). */
class FindCall {
  shard = 0;
  /** The directory key asked for (the reply must be about it). */
  key = '';
  constructor(
    readonly conn: ClientConnection,
    readonly id: number,
    /** The name as asked (offline replies echo it). */
    readonly name: string,
    /** The chat form's language; undefined for op `find`. */
    readonly lang: Lang | undefined,
    /** When the request started (LatencySampler.start(): -1 when not timed), and the sampler's stride then. */
    readonly t0: number,
    readonly stride: number,
  ) {}
}

export interface ChatServiceOptions {
  channels: number;
  requestTimeoutMs: number;
  /** The front end's figures for status() (ChatdServer's connections); absent: zeros. */
  front?: () => { connections: number; inFlight: number };
}

type Fields = Record<string, unknown>;

/**
 * Requests after which a connection's later requests wait until it is done: those that change
 * the connection's character (docs/protocol.md, "Pipelining and order"). `cmd`: the chat
 * text's slash command, when parsed.
 */
export function isBarrier(req: ClientRequest, cmd: SlashCommand | undefined): boolean {
  return req.op === 'login' || req.op === 'move' || req.op === 'logout' || cmd?.kind === 'channel';
}

/**
 * The ops of PROTOCOL.md, for every connection of this chatD. Each request gets exactly one
 * reply: handlers return the success fields or throw a ClientError, and `onFrame` turns
 * either into the one reply.
 *
 * One connection's requests take effect in the order sent: while a login, move or logout
 * (a barrier) of a connection is in flight, the requests read after it wait on the
 * connection (`conn.waiting`) and run when it is done, as if it had completed first. Other
 * requests run at once, concurrently (pipelined finds are not serialized).
 */
export class ChatService implements ConnectionHandler, ReplySink<FindCall> {
  private nextSessionId = 1;
  /**
   * Plain increments on the request path (docs/operations.md, "Metrics"). `errors`: requests
   * answered ok:false, whatever the code (bad requests, rate limited and timeouts included).
   * `waited`: requests that waited behind a login, move or logout of their connection.
   */
  readonly counters = { requests: 0, finds: 0, timeouts: 0, rateLimited: 0, errors: 0, badRequests: 0, internalErrors: 0, whispersForwarded: 0, waited: 0 };
  /** Client request latency, request started to reply written, over the last 10 s (sampled above 1,024 req/s). */
  readonly latency = new LatencySampler();
  private readonly requestRate = new RateMeter(() => this.counters.requests);
  private readonly findRate = new RateMeter(() => this.counters.finds);

  constructor(
    private readonly endpoint: Endpoint,
    private readonly shards: ShardClient,
    private readonly sessions: SessionTable,
    private readonly reaper: SessionReaper,
    private readonly validate: RequestValidator,
    private readonly options: ChatServiceOptions,
    private readonly log: Logger,
  ) {}

  onFrame(conn: ClientConnection, frame: Record<string, unknown>): void {
    this.counters.requests++;
    const v = this.validate(frame);
    if (!v.ok) {
      this.counters.badRequests++;
      this.counters.errors++;
      conn.reply(errorReply(v.op, v.id, ClientErrorCode.BAD_REQUEST, v.message));
      return;
    }
    const req = v.request;
    if (!conn.takeToken()) {
      this.counters.rateLimited++;
      this.counters.errors++;
      conn.reply(errorReply(req.op, req.id, ClientErrorCode.RATE_LIMITED, 'too many requests; slow down'));
      return;
    }
    conn.requestStarted();
    if (conn.barrier) return this.wait(conn, req);
    this.start(conn, req);
  }

  /** Runs a request admitted by onFrame (validated, token taken, counted in flight). */
  private start(conn: ClientConnection, req: ClientRequest): void {
    const t0 = this.latency.start();
    const stride = this.latency.stride;
    // The hot path, `find` in both forms: no Promise, the reply written as a JSON string.
    if (req.op === 'find' && conn.session) return this.startFind(conn, req.id, req.name, undefined, t0, stride);
    let cmd: SlashCommand | undefined;
    if (req.op === 'chat' && conn.session && req.text.startsWith('/')) {
      cmd = parseSlashCommand(req.text);
      if (cmd.kind === 'find') return this.startFind(conn, req.id, cmd.name, cmd.lang, t0, stride);
    }
    let result: Fields | Promise<Fields>;
    try {
      result = this.dispatch(conn, req, cmd);
    } catch (err) {
      // Refused before it started (NOT_LOGGED_IN, a bad channel): answered now, in order;
      // it changed nothing, so what follows need not wait.
      this.replyError(conn, req, err, t0, stride);
      return;
    }
    if (!(result instanceof Promise)) {
      conn.reply(okReply(req.op, req.id, result));
      conn.requestDone();
      this.latency.end(t0, stride);
      return;
    }
    if (!isBarrier(req, cmd)) {
      result.then(
        (fields) => {
          conn.reply(okReply(req.op, req.id, fields));
          conn.requestDone();
          this.latency.end(t0, stride);
        },
        (err: unknown) => this.replyError(conn, req, err, t0, stride),
      );
      return;
    }
    conn.barrier = true;
    conn.barrierRequest = req;
    result.then(
      (fields) => {
        conn.barrier = false;
        conn.barrierRequest = undefined;
        conn.reply(okReply(req.op, req.id, fields));
        conn.requestDone();
        this.latency.end(t0, stride);
        this.release(conn);
      },
      (err: unknown) => {
        conn.barrier = false;
        conn.barrierRequest = undefined;
        this.replyError(conn, req, err, t0, stride);
        this.release(conn);
      },
    );
  }

  /** Counts a failed request (off the hot path); its client code. */
  private countError(err: unknown, op: string): ClientErrorCode {
    const code = toClientCode(err);
    this.counters.errors++;
    if (code === ClientErrorCode.TIMEOUT) this.counters.timeouts++;
    else if (code === ClientErrorCode.INTERNAL) {
      this.counters.internalErrors++;
      this.log.error({ err, op }, 'request failed');
    }
    return code;
  }

  /** The one reply of a request that failed. */
  private replyError(conn: ClientConnection, req: ClientRequest, err: unknown, t0: number, stride: number): void {
    const code = this.countError(err, req.op);
    const message = err instanceof ClientError ? err.message : 'internal error';
    conn.reply(errorReply(req.op, req.id, code, message));
    conn.requestDone();
    this.latency.end(t0, stride);
  }

  /** A request read while a barrier of its connection is in flight: it waits its turn. */
  private wait(conn: ClientConnection, req: ClientRequest): void {
    const w = conn.waiting;
    if (w !== undefined && w.length >= conn.maxWaiting) {
      this.counters.rateLimited++;
      this.counters.errors++;
      conn.reply(errorReply(req.op, req.id, ClientErrorCode.RATE_LIMITED, 'too many requests waiting behind a login, move or logout; slow down'));
      conn.requestDone();
      return;
    }
    this.counters.waited++;
    if (w === undefined) conn.waiting = [req];
    else w.push(req);
  }

  /**
   * A barrier is done (its reply written): runs the requests that waited for it, in order,
   * until one of them is a barrier again (the rest keep waiting for that one).
   */
  private release(conn: ClientConnection): void {
    const w = conn.waiting;
    if (w === undefined) return;
    let i = 0;
    while (i < w.length && !conn.barrier && !conn.ending) this.start(conn, w[i++]!);
    if (conn.ending) {
      // Closed or closing (logout done, an error push, shutdown): no reply can go out.
      if (conn.waiting === w) w.splice(0, i);
      conn.dropWaiting();
    } else if (i === w.length) conn.waiting = undefined;
    else w.splice(0, i);
  }

  private startFind(conn: ClientConnection, id: number, name: string, lang: Lang | undefined, t0: number, stride: number): void {
    this.counters.finds++;
    const call = new FindCall(conn, id, name, lang, t0, stride);
    try {
      this.shards.sendFind(name, this, call);
    } catch (err) {
      this.onFailure(call, err);
    }
  }

  /** A shard's answer to a find of startFind (ReplySink). */
  onReply(call: FindCall, status: number, body: Buffer, start: number, end: number, _from: number, fromIncarnation: number): void {
    let r: FindOutcome;
    try {
      r = this.shards.findOutcome(status, body, start, end, call.key, call.shard, fromIncarnation, call.name);
    } catch (err) {
      this.failFind(call, err);
      return;
    }
    const conn = call.conn;
    // Byte for byte what okReply + JSON.stringify give (tests pin it), without the objects.
    const name = JSON.stringify(r.online ? r.name : call.name);
    const result = r.online ? `{"name":${name},"online":true,"channel":${r.channel}}` : `{"name":${name},"online":false}`;
    if (call.lang === undefined) {
      conn.replyJson(`{"op":"find","id":${call.id},"ok":true,${result.slice(1)}`);
    } else {
      const text = findText(call.lang, r.online ? { name: r.name, online: true, channel: r.channel } : { name: call.name, online: false });
      conn.replyJson(`{"op":"chat","id":${call.id},"ok":true,"command":"find","result":${result},"text":${JSON.stringify(text)}}`);
    }
    conn.requestDone();
    this.latency.end(call.t0, call.stride);
  }

  /** A find that got no answer (ReplySink). */
  onFailure(call: FindCall, err: unknown): void {
    this.failFind(call, err instanceof RequestError ? this.shards.clientError(call.shard, err) : err);
  }

  private failFind(call: FindCall, err: unknown): void {
    const code = this.countError(err, 'find');
    const message = err instanceof ClientError ? err.message : 'internal error';
    call.conn.reply(errorReply(call.lang === undefined ? 'find' : 'chat', call.id, code, message));
    call.conn.requestDone();
    this.latency.end(call.t0, call.stride);
  }

  /** `cmd`: the chat text's slash command, when onFrame has parsed it already. */
  private dispatch(conn: ClientConnection, req: ClientRequest, cmd?: SlashCommand): Fields | Promise<Fields> {
    switch (req.op) {
      case 'ping':
        return {};
      case 'login':
        return this.login(conn, req.name, req.channel);
    }
    const s = conn.session;
    if (!s) throw new ClientError(ClientErrorCode.NOT_LOGGED_IN, 'log in first');
    switch (req.op) {
      case 'find':
        return this.find(req.name);
      case 'chat':
        return this.chat(s, req.text, cmd);
      case 'whisper':
        return this.whisper(s, req.to, req.text).then(() => ({}));
      case 'move':
        return this.move(s, req.channel).then(() => ({ channel: s.channel }));
      case 'logout':
        return this.logout(conn, s);
    }
  }

  private async login(conn: ClientConnection, name: string, channel: number): Promise<Fields> {
    if (conn.session || conn.pendingLogin !== undefined) throw new ClientError(ClientErrorCode.ALREADY_LOGGED_IN, 'this connection has a character already');
    if (conn.endAfterReply) throw new ClientError(ClientErrorCode.UNAVAILABLE, 'the connection closes after its logout; log in on a new connection');
    const id = this.takeSessionId();
    conn.pendingLogin = id;
    try {
      await this.shards.login(name, id, channel);
    } catch (err) {
      conn.pendingLogin = undefined;
      // No answer in time: the shard may have recorded it all the same. Take it back.
      if (err instanceof ClientError && err.code === ClientErrorCode.TIMEOUT) void this.reaper.end(name, id);
      throw err;
    }
    conn.pendingLogin = undefined;
    if (conn.closed) {
      // The client left while its login was in flight: the shard has it, so end it.
      void this.reaper.end(name, id);
      throw new ClientError(ClientErrorCode.UNAVAILABLE, 'connection closed');
    }
    const session: Session = { id, name, key: normalizeName(name), channel, conn };
    conn.session = session;
    this.sessions.add(session);
    return { name, channel };
  }

  private async find(name: string): Promise<Fields> {
    const r = await this.lookup(name);
    return r.online ? { name: r.name, online: true, channel: r.channel } : { name, online: false };
  }

  private async lookup(name: string): Promise<FindResult & { owner?: number }> {
    const r = await this.shards.find(name);
    return r.online ? { name: r.name, online: true, channel: r.channel, owner: r.owner } : { name, online: false };
  }

  private chat(s: Session, text: string, parsed?: SlashCommand): Fields | Promise<Fields> {
    if (!text.startsWith('/')) {
      // Serialized once for every member (a channel may have thousands).
      const push = JSON.stringify(messagePush(s.name, s.channel, text));
      for (const other of this.sessions.inChannel(s.channel)) if (other !== s) other.conn.pushJson(push);
      return {};
    }
    const cmd = parsed ?? parseSlashCommand(text);
    switch (cmd.kind) {
      case 'error':
        throw new ClientError(cmd.code, cmd.message);
      case 'find':
        return this.lookup(cmd.name).then((r) => {
          const result: FindResult = r.online ? { name: r.name, online: true, channel: r.channel! } : { name: cmd.name, online: false };
          return { command: 'find', result, text: findText(cmd.lang, result) };
        });
      case 'whisper':
        return this.whisper(s, cmd.to, cmd.text, cmd.lang).then((text) => ({ command: 'whisper', text }));
      case 'channel':
        if (cmd.channel > this.options.channels) {
          throw new ClientError(ClientErrorCode.BAD_REQUEST, cmd.lang === 'ko' ? `채널은 1부터 ${this.options.channels}까지입니다.` : `channel must be from 1 to ${this.options.channels}`);
        }
        return this.move(s, cmd.channel).then(() => ({ command: 'channel', result: { channel: s.channel }, text: channelText(cmd.lang, s.channel) }));
    }
  }

  /** Delivers a whisper: locally when the target is here, else through the chatD that holds it. */
  private async whisper(s: Session, to: string, text: string, lang: Lang = 'en'): Promise<string> {
    const local = this.sessions.get(normalizeName(to));
    if (local) {
      local.conn.push(whisperPush(s.name, text));
      return whisperSentText(lang, local.name);
    }
    const r = await this.lookup(to);
    if (!r.online || r.owner === undefined || r.owner === this.endpoint.mtype) {
      throw new ClientError(ClientErrorCode.NOT_FOUND, lang === 'ko' ? `${to}님을 찾을 수 없습니다.` : `${to} is not online`);
    }
    try {
      const reply = await this.endpoint.request(r.owner, Kind.WHISPER, encodePayload('whisper', { to, from: s.name, text }), this.options.requestTimeoutMs);
      if (reply.status === Status.NOT_FOUND) throw new ClientError(ClientErrorCode.NOT_FOUND, `${to} is not online`);
      if (reply.status !== Status.OK) throw new ClientError(ClientErrorCode.UNAVAILABLE, 'whisper could not be delivered; retry later');
    } catch (err) {
      if (err instanceof RequestError) {
        // In flight when the connection dropped: it may have been delivered (TIMEOUT's meaning).
        throw new ClientError(err.code === 'TIMEOUT' || err.inFlight ? ClientErrorCode.TIMEOUT : ClientErrorCode.UNAVAILABLE, 'whisper could not be delivered', { cause: err });
      }
      throw err;
    }
    this.counters.whispersForwarded++;
    return whisperSentText(lang, r.name);
  }

  private async move(s: Session, channel: number): Promise<void> {
    await this.shards.move(s.name, s.id, channel);
    if (s.conn.session === s) this.sessions.move(s, channel);
  }

  private async logout(conn: ClientConnection, s: Session): Promise<Fields> {
    conn.endAfterReplies();
    conn.session = undefined;
    this.sessions.delete(s);
    // The client waits for its reply: past one collector round and one direct attempt, answer.
    const gone = await this.reaper.end(s.name, s.id, this.options.requestTimeoutMs + 700);
    if (!gone) {
      throw new ClientError(ClientErrorCode.UNAVAILABLE, 'logout could not be confirmed; the character goes offline shortly');
    }
    return {};
  }

  onClose(conn: ClientConnection): void {
    const s = conn.session;
    if (!s) return;
    conn.session = undefined;
    this.sessions.delete(s);
    void this.reaper.end(s.name, s.id);
  }

  /** Records from other processes addressed to this chatD. */
  onRecord(rec: InboundRecord, reply: ReplyFn | undefined): void {
    if (rec.kind === Kind.WHISPER && reply) {
      const p = decodePayload('whisper', rec.payload);
      if (!p) return reply(Status.BAD_REQUEST, EMPTY);
      const target = this.sessions.get(normalizeName(p.to));
      if (!target) return reply(Status.NOT_FOUND, EMPTY);
      target.conn.push(whisperPush(p.from, p.text));
      return reply(Status.OK, EMPTY);
    }
    if (rec.kind === Kind.RESYNC) {
      const p = decodePayload('resync', rec.payload);
      if (!p) return;
      // For an epoch we do not have yet: ask the collector; the resync is retried meanwhile.
      if (p.epoch !== undefined && p.epoch > (this.shards.follower.view?.epoch ?? 0)) this.onBehind?.();
      void this.resync(p.shard);
      return;
    }
    if (rec.kind === Kind.LEAVING) {
      // A shard stopping (reload): down until the collector reports its successor. Only the
      // shard itself may say so, about its own incarnation. Any shard index the schema allows
      // (below 900): with resharding, members are not bounded by CHANNELD_SHARDS.
      const p = decodePayload('leaving', rec.payload);
      if (p && rec.from === shardMtype(p.shard) && rec.fromIncarnation === p.shardInc) {
        this.shards.noteLeaving(p.shard, p.shardInc);
      }
      return;
    }
    if (rec.kind === Kind.STATUS && reply) {
      return reply(Status.OK, encodePayload('status', this.status()));
    }
    if (reply) reply(Status.BAD_REQUEST, EMPTY);
  }

  status(): Record<string, unknown> {
    return {
      role: 'chatd',
      pid: process.pid,
      uptimeS: uptimeS(),
      sessions: this.sessions.size,
      ending: this.reaper.ending.size,
      counters: { ...this.counters },
      reaper: { ...this.reaper.counters },
      shards: { ...this.shards.counters },
      endpoint: { ...this.endpoint.counters },
      pendingRequests: this.endpoint.pendingRequests,
      strangerReplies: this.shards.strangerReplies,
      wrongEpochReplies: this.shards.wrongEpochReplies,
      epoch: this.shards.follower.view?.epoch ?? 0,
      ready: this.shards.follower.ready,
      handover: { ...this.shards.follower.counters, owed: this.shards.follower.owedShards() },
      metrics: this.metrics(),
    };
  }

  /** The figures of docs/operations.md ("Metrics"): STATUS's `metrics`, and PM2's. */
  metrics(): ProcessMetrics {
    const c = this.counters;
    const front = this.options.front?.() ?? { connections: 0, inFlight: 0 };
    return {
      counters: { requests: c.requests, finds: c.finds, timeouts: c.timeouts, rateLimited: c.rateLimited, errors: c.errors, internalErrors: c.internalErrors },
      gauges: { sessions: this.sessions.size, connections: front.connections, inFlight: front.inFlight, ending: this.reaper.ending.size },
      latency: this.latency.histogram.summary(monotonicMs()),
      sessionsPerChannel: this.sessions.perChannel(),
      rates: { requests: round1(this.requestRate.rate()), finds: round1(this.findRate.rate()) },
    };
  }

  /** Called when the collector has an epoch we do not (a RESYNC for it): heartbeat now. */
  onBehind: (() => void) | undefined;

  /** Shards being resynced now: a RESYNC arriving meanwhile runs the resync once more after. */
  private readonly resyncing = new Map<number, { again: boolean }>();
  /** shard index -> the incarnation last seen in the collector's membership. */
  private readonly shardIncarnations = new Map<number, number>();

  /**
   * The collector's membership (heartbeat reply): a shard whose incarnation changed since the
   * last one restarted, so it is resynced without waiting for the collector's RESYNC (which
   * is one message, and may be lost with a collector killed or stopped at the wrong time).
   */
  noteMembership(shards: readonly (readonly [number, number])[]): void {
    for (const [shard, inc] of shards) {
      const before = this.shardIncarnations.get(shard);
      this.shardIncarnations.set(shard, inc);
      if (before !== undefined && before !== inc) void this.resync(shard);
    }
  }

  /**
   * Resends this chatD's live sessions of one shard to it, after it restarted empty. One at a
   * time per shard (a RESYNC arriving meanwhile runs it again after); a failed one is retried
   * a few times (the shard also keeps asking the collector, which RESYNCs again).
   */
  async resync(shard: number): Promise<void> {
    const running = this.resyncing.get(shard);
    if (running) {
      running.again = true;
      return;
    }
    const state = { again: false };
    this.resyncing.set(shard, state);
    try {
      for (let failures = 0; ; ) {
        state.again = false;
        if (await this.resyncOnce(shard)) {
          if (!state.again) return;
        } else {
          if (++failures > 5) return;
          await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** failures, 1000)).unref());
        }
      }
    } finally {
      this.resyncing.delete(shard);
    }
  }

  /**
   * Sends every session this chatD holds that `shard` owns under `view` (the current one by
   * default), SYNC ... last at that epoch. Also the hand-over of a new epoch (epoch-follower.ts).
   */
  async resyncOnce(shard: number, view = this.shards.follower.view): Promise<boolean> {
    if (!view) return false; // no epoch yet: retried, and the collector RESYNCs again
    const entries: [string, number, number][] = [];
    for (const s of this.sessions.all()) if (view.ownerOfKey(s.key) === shard) entries.push([s.name, s.id, s.channel]);
    const chunk = 64; // 64 entries stay well inside one envelope record
    try {
      for (let i = 0; i < entries.length || i === 0; i += chunk) {
        const part = entries.slice(i, i + chunk);
        await this.shards.sync(shard, part, i + chunk >= entries.length, view.epoch);
      }
      this.log.info({ shard, entries: entries.length, epoch: view.epoch }, 'resynced shard');
      return true;
    } catch (err) {
      this.log.warn({ err, shard }, 'resync failed');
      return false;
    }
  }

  /** Removes entries a previous incarnation of this chatD left on every shard. */
  async purgeEarlierIncarnations(): Promise<number> {
    const counts = await Promise.allSettled(this.shards.purgeTargets().map((i) => this.shards.purge(i, this.endpoint.incarnation)));
    return counts.reduce((n, c) => n + (c.status === 'fulfilled' ? c.value : 0), 0);
  }

  private takeSessionId(): number {
    const id = this.nextSessionId;
    this.nextSessionId = id >= 0xffff_fffe ? 1 : id + 1;
    return id;
  }
}

const round1 = (x: number): number => Math.round(x * 10) / 10;
