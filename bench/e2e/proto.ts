/**
 * The client protocol of PROTOCOL.md as the two comparison servers of `npm run bench:e2e`
 * (single-server.ts, fork-front.ts) speak it. Built from the project's own pieces (src/protocol
 * framing, request validator, replies, slash commands, texts; src/cluster names; chatD's token
 * bucket) so that every reply has the shape and the text chatD gives.
 *
 * Covered: login, find, chat (broadcast and the /find, /찾기, /w, /channel commands), whisper,
 * move, ping, logout. Not covered: anything the cluster does across processes beyond one
 * directory (no collector, no timeouts, no legacy C peers).
 *
 * The directory (who is online, on which channel) is behind `Directory`: a Map in the
 * single-process server, shard processes in the fork server. Sessions and channel fan-out stay
 * in the front process, as in chatD.
 */
import type { Socket } from 'node:net';
import { TokenBucket } from '../../src/chatd/rate-limiter';
import { normalizeName } from '../../src/cluster/names';
import { ClientErrorCode } from '../../src/errors';
import { loadConfig } from '../../src/config';
import { FrameDecoder, type FrameError } from '../../src/protocol/frame-decoder';
import { encodeFrame } from '../../src/protocol/frame-encoder';
import { errorPush, errorReply, messagePush, okReply, whisperPush } from '../../src/protocol/replies';
import { createRequestValidator, type RequestValidator } from '../../src/protocol/request-validator';
import { parseSlashCommand, type Lang } from '../../src/protocol/slash-command';
import { channelText, findText, whisperSentText, type FindResult } from '../../src/protocol/texts';

/** One directory entry as a find sees it: the name as registered, and the channel. */
export type Entry = { name: string; channel: number };

/**
 * The directory of online characters. Callbacks may run synchronously (a Map) or later
 * (another process). Keys are normalizeName() of the name.
 */
export interface Directory {
  login(key: string, name: string, channel: number, done: (ok: boolean) => void): void;
  find(key: string, done: (e: Entry | undefined) => void): void;
  move(key: string, channel: number, done: () => void): void;
  remove(key: string, done?: () => void): void;
}

type Fields = Record<string, unknown>;

interface Session {
  name: string;
  key: string;
  channel: number;
  conn: Conn;
}

/** One client connection: framing, rate limit, replies corked per tick (as chatD does). */
export class Conn {
  session: Session | undefined;
  pendingLogin = false;
  closed = false;
  endAfterReply = false;
  inFlight = 0;
  private readonly decoder: FrameDecoder;
  private readonly bucket: TokenBucket;
  private corked = false;
  private closing = false;

  constructor(
    readonly socket: Socket,
    private readonly server: ProtocolServer,
  ) {
    const cfg = server.config;
    this.decoder = new FrameDecoder(cfg.maxFrameBytes);
    this.bucket = new TokenBucket(cfg.ratePerSec, cfg.rateBurst);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      if (this.closed) return;
      this.closed = true;
      server.onClose(this);
    });
  }

  takeToken(): boolean {
    return this.bucket.take();
  }

  reply(obj: object): void {
    if (this.closed || this.closing) return;
    this.write(encodeFrame(obj));
  }

  push(obj: object): void {
    if (this.closed || this.closing) return;
    this.write(encodeFrame(obj));
  }

  requestDone(): void {
    this.inFlight--;
    if (this.endAfterReply && this.inFlight === 0) this.end();
  }

  end(): void {
    if (this.closed || this.closing) return;
    this.closing = true;
    this.socket.end();
  }

  fail(code: ClientErrorCode, message: string): void {
    if (this.closed || this.closing) return;
    this.closing = true;
    this.socket.end(encodeFrame(errorPush(code, message)));
  }

  private write(frame: Buffer): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(frame);
  }

  private onData(chunk: Buffer): void {
    let frames: unknown[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      const fe = err as FrameError;
      for (const f of fe.decoded ?? []) this.server.onFrame(this, f as Record<string, unknown>);
      this.fail(ClientErrorCode.BAD_FRAME, fe.message);
      return;
    }
    for (const f of frames) {
      if (this.closed || this.closing || this.endAfterReply) return;
      this.server.onFrame(this, f as Record<string, unknown>);
    }
  }
}

class Failure {
  constructor(
    readonly code: ClientErrorCode,
    readonly message: string,
  ) {}
}

/** The ops of PROTOCOL.md over a Directory. Each request gets exactly one reply. */
export class ProtocolServer {
  readonly config = loadConfig(process.env);
  private readonly validate: RequestValidator = createRequestValidator({ channels: this.config.channels });
  private readonly sessions = new Map<string, Session>();
  private readonly byChannel = new Map<number, Set<Session>>();
  readonly conns = new Set<Conn>();

  constructor(private readonly dir: Directory) {}

  accept(socket: Socket): void {
    this.conns.add(new Conn(socket, this));
  }

  onFrame(conn: Conn, frame: Record<string, unknown>): void {
    const v = this.validate(frame);
    if (!v.ok) {
      conn.reply(errorReply(v.op, v.id, ClientErrorCode.BAD_REQUEST, v.message));
      return;
    }
    const req = v.request;
    if (!conn.takeToken()) {
      conn.reply(errorReply(req.op, req.id, ClientErrorCode.RATE_LIMITED, 'too many requests; slow down'));
      return;
    }
    conn.inFlight++;
    const done = (r: Fields | Failure): void => {
      if (r instanceof Failure) conn.reply(errorReply(req.op, req.id, r.code, r.message));
      else conn.reply(okReply(req.op, req.id, r));
      conn.requestDone();
    };
    if (req.op === 'ping') return done({});
    if (req.op === 'login') return this.login(conn, req.name, req.channel, done);
    const s = conn.session;
    if (!s) return done(new Failure(ClientErrorCode.NOT_LOGGED_IN, 'log in first'));
    switch (req.op) {
      case 'find':
        return this.dir.find(normalizeName(req.name), (e) => done(e ? { name: e.name, online: true, channel: e.channel } : { name: req.name, online: false }));
      case 'chat':
        return this.chat(s, req.text, done);
      case 'whisper':
        return this.whisper(s, req.to, req.text, 'en', (r) => done(r instanceof Failure ? r : {}));
      case 'move':
        return this.move(s, req.channel, () => done({ channel: s.channel }));
      case 'logout':
        conn.endAfterReply = true;
        conn.session = undefined;
        this.dropSession(s);
        return this.dir.remove(s.key, () => done({}));
    }
  }

  onClose(conn: Conn): void {
    this.conns.delete(conn);
    const s = conn.session;
    if (!s) return;
    conn.session = undefined;
    this.dropSession(s);
    this.dir.remove(s.key);
  }

  private login(conn: Conn, name: string, channel: number, done: (r: Fields | Failure) => void): void {
    if (conn.session || conn.pendingLogin) return done(new Failure(ClientErrorCode.ALREADY_LOGGED_IN, 'this connection has a character already'));
    const key = normalizeName(name);
    conn.pendingLogin = true;
    this.dir.login(key, name, channel, (ok) => {
      conn.pendingLogin = false;
      if (!ok) return done(new Failure(ClientErrorCode.NAME_TAKEN, `${name} is online already`));
      if (conn.closed) {
        this.dir.remove(key);
        return done(new Failure(ClientErrorCode.UNAVAILABLE, 'connection closed'));
      }
      const s: Session = { name, key, channel, conn };
      conn.session = s;
      this.sessions.set(key, s);
      this.join(s);
      done({ name, channel });
    });
  }

  private chat(s: Session, text: string, done: (r: Fields | Failure) => void): void {
    if (!text.startsWith('/')) {
      const push = messagePush(s.name, s.channel, text);
      for (const other of this.byChannel.get(s.channel) ?? []) if (other !== s) other.conn.push(push);
      return done({});
    }
    const cmd = parseSlashCommand(text);
    switch (cmd.kind) {
      case 'error':
        return done(new Failure(cmd.code, cmd.message));
      case 'find':
        return this.dir.find(normalizeName(cmd.name), (e) => {
          const result: FindResult = e ? { name: e.name, online: true, channel: e.channel } : { name: cmd.name, online: false };
          done({ command: 'find', result, text: findText(cmd.lang, result) });
        });
      case 'whisper':
        return this.whisper(s, cmd.to, cmd.text, cmd.lang, (r) => done(r instanceof Failure ? r : { command: 'whisper', text: r }));
      case 'channel': {
        const channels = this.config.channels;
        if (cmd.channel > channels) {
          return done(new Failure(ClientErrorCode.BAD_REQUEST, cmd.lang === 'ko' ? `채널은 1부터 ${channels}까지입니다.` : `channel must be from 1 to ${channels}`));
        }
        return this.move(s, cmd.channel, () => done({ command: 'channel', result: { channel: s.channel }, text: channelText(cmd.lang, s.channel) }));
      }
    }
  }

  /** Every session is in this front process, so a whisper is delivered here or not at all. */
  private whisper(s: Session, to: string, text: string, lang: Lang, done: (r: string | Failure) => void): void {
    const target = this.sessions.get(normalizeName(to));
    if (!target) return done(new Failure(ClientErrorCode.NOT_FOUND, lang === 'ko' ? `${to}님을 찾을 수 없습니다.` : `${to} is not online`));
    target.conn.push(whisperPush(s.name, text));
    done(whisperSentText(lang, target.name));
  }

  private move(s: Session, channel: number, done: () => void): void {
    this.dir.move(s.key, channel, () => {
      if (s.conn.session === s) {
        this.leave(s);
        s.channel = channel;
        this.join(s);
      }
      done();
    });
  }

  private dropSession(s: Session): void {
    if (this.sessions.get(s.key) === s) this.sessions.delete(s.key);
    this.leave(s);
  }

  private join(s: Session): void {
    let set = this.byChannel.get(s.channel);
    if (!set) this.byChannel.set(s.channel, (set = new Set()));
    set.add(s);
  }

  private leave(s: Session): void {
    const set = this.byChannel.get(s.channel);
    if (!set) return;
    set.delete(s);
    if (set.size === 0) this.byChannel.delete(s.channel);
  }
}

/** What a comparison server tells the process that forked it. */
export type ServerReport = { type: 'listening'; port: number; pids: number[] } | { type: 'error'; message: string };

/** Ends this process when the parent goes away (its IPC channel closes). */
export function exitWithParent(onExit: () => void = () => {}): void {
  process.on('disconnect', () => {
    onExit();
    process.exit(0);
  });
}
