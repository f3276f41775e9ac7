import { TEXT_MAX_CODE_POINTS } from '../protocol/client-request';
import { parseSlashCommand } from '../protocol/slash-command';
import type { ClientOptions } from './args';
import { type ClientTexts, errorLine, texts } from './client-texts';
import { type Outcome, ServerConnection, type ServerFrame } from './connection';
import { channelLine, infoLine, pushLine, safe, whisperOutLine } from './format';

/** Where a session writes: `out` for the chat transcript (stdout), `err` for fatal messages (stderr). */
export interface ClientIo {
  out(line: string): void;
  err(line: string): void;
  /** The prompt changed (name or channel); a terminal redraws it. */
  promptChanged?(prompt: string): void;
}

/** Timings; tests may shorten them. */
export interface SessionTiming {
  connectTimeoutMs: number;
  replyTimeoutMs: number;
  /** First reconnect delay; doubled per failed attempt up to `backoffMaxMs`, with ±20% jitter. */
  backoffMinMs: number;
  backoffMaxMs: number;
  /** A ping this often keeps the connection under the server's idle timeout (5 min by default). */
  keepaliveMs: number;
  /** After a reconnect, NAME_TAKEN (the old session not yet removed) is retried this long. */
  nameTakenGraceMs: number;
  /** Lines kept while not connected. */
  maxQueuedLines: number;
}

export const DEFAULT_TIMING: SessionTiming = Object.freeze({
  connectTimeoutMs: 5000,
  replyTimeoutMs: 10_000,
  backoffMinMs: 250,
  backoffMaxMs: 5000,
  keepaliveMs: 60_000,
  nameTakenGraceMs: 30_000,
  maxQueuedLines: 100,
});

/** Exit codes: 0 quit, 1 gave up or refused, 2 the server refused the arguments (e.g. a channel above its count). */
export const EXIT = Object.freeze({ OK: 0, FAILED: 1, USAGE: 2 } as const);

const LOCAL_COMMANDS = new Map<string, 'help' | 'quit' | 'ping'>([
  ['help', 'help'],
  ['?', 'help'],
  ['도움말', 'help'],
  ['quit', 'quit'],
  ['exit', 'quit'],
  ['종료', 'quit'],
  ['나가기', 'quit'],
  ['ping', 'ping'],
  ['핑', 'ping'],
]);

/** Login codes after which a later attempt may succeed. */
const RETRY_LOGIN = new Set(['TIMEOUT', 'UNAVAILABLE', 'RATE_LIMITED', 'INTERNAL']);

/**
 * A person's chat session: connects, logs in, turns typed lines into requests and every reply
 * and push into a readable line, and reconnects (logging in again with the same name, in the
 * channel it was last in) when the connection drops. `run()` resolves with the exit code.
 */
export class ChatSession {
  private readonly t: ClientTexts;
  private channel: number;
  private conn: ServerConnection | undefined;
  private loggedInOnce = false;
  private readonly queue: string[] = [];
  private quitRequested = false;
  private logoutDone: Promise<void> | undefined;
  private wakeSleeper: (() => void) | undefined;
  private keepalive: NodeJS.Timeout | undefined;
  private readonly addr: string;

  constructor(
    private readonly options: ClientOptions,
    private readonly io: ClientIo,
    private readonly timing: SessionTiming = DEFAULT_TIMING,
  ) {
    this.t = texts[options.lang];
    this.channel = options.channel;
    this.addr = options.host.includes(':') ? `[${options.host}]:${options.port}` : `${options.host}:${options.port}`;
  }

  get prompt(): string {
    return `[${this.t.channelLabel(this.channel)}] ${this.options.name}> `;
  }

  /** Connects and serves until quit or a fatal refusal; resolves with the exit code. */
  async run(): Promise<number> {
    this.io.out(this.t.connecting(this.addr));
    let failures = 0;
    let nameTakenSince: number | undefined;
    for (;;) {
      if (this.quitRequested) return this.quitWhileOffline();
      let conn: ServerConnection;
      try {
        conn = await ServerConnection.open(this.options.host, this.options.port, this.timing);
      } catch (err) {
        failures++;
        if (this.gaveUp(failures)) return EXIT.FAILED;
        const delay = this.backoff(failures);
        const code = (err as NodeJS.ErrnoException).code;
        this.io.out(code === 'ECONNREFUSED' ? this.t.refused(this.addr, delay) : this.t.unreachable(this.addr, code ?? safe((err as Error).message), delay));
        await this.sleep(delay);
        continue;
      }

      const closed = new Promise<number>((resolve) => conn.once('close', (_err: unknown, unanswered: number) => resolve(unanswered)));
      conn.on('push', (f: ServerFrame) => this.io.out(pushLine(this.options.lang, f)));
      const login = await conn.request('login', { name: this.options.name, channel: this.channel });
      if (login.kind !== 'reply' || login.reply.ok !== true) {
        conn.destroy();
        const code = login.kind === 'reply' ? errorCode(login.reply) : undefined;
        const message = login.kind === 'reply' ? errorMessage(login.reply) : '';
        if (code !== undefined && !RETRY_LOGIN.has(code)) {
          // NAME_TAKEN after a drop is most likely our own old session, still being removed.
          const now = Date.now();
          nameTakenSince ??= now;
          const oldSession = code === 'NAME_TAKEN' && this.loggedInOnce && now - nameTakenSince < this.timing.nameTakenGraceMs;
          if (!oldSession) {
            this.io.err(this.t.loginFailed(errorLine(this.options.lang, code, safe(message), this.options.name).slice(2)));
            return code === 'BAD_REQUEST' ? EXIT.USAGE : EXIT.FAILED;
          }
        }
        failures++;
        if (this.gaveUp(failures)) return EXIT.FAILED;
        const delay = this.backoff(failures);
        if (code !== undefined) this.io.out(this.t.loginRetry(code, delay));
        else this.io.out(this.t.lost(this.addr, delay));
        await this.sleep(delay);
        continue;
      }

      failures = 0;
      nameTakenSince = undefined;
      this.io.out(this.loggedInOnce ? this.t.reconnected(this.options.name, this.channel) : this.t.loggedIn(this.options.name, this.channel, this.addr));
      this.loggedInOnce = true;
      this.conn = conn;
      this.io.promptChanged?.(this.prompt);
      this.startKeepalive(conn);
      for (const line of this.queue.splice(0)) this.send(conn, line);
      if (this.quitRequested) this.startLogout(conn);

      const unanswered = await closed;
      this.stopKeepalive();
      this.conn = undefined;
      if (this.quitRequested) {
        await this.logoutDone;
        this.io.out(this.t.bye);
        return EXIT.OK;
      }
      if (unanswered > 0) this.io.out(this.t.unanswered(unanswered));
      failures = 1;
      const delay = this.backoff(failures);
      this.io.out(this.t.lost(this.addr, delay));
      await this.sleep(delay);
    }
  }

  /** A line the person typed (without its newline). */
  handleLine(raw: string): void {
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '') return;
    if (line.startsWith('/')) {
      const word = (/^\/(\S*)/.exec(line.trim())?.[1] ?? '').normalize('NFC').toLowerCase();
      const local = LOCAL_COMMANDS.get(word);
      if (local === 'help') {
        for (const h of this.t.help) this.io.out(h);
        return;
      }
      if (local === 'quit') {
        this.quit();
        return;
      }
      if (local === 'ping') {
        this.ping();
        return;
      }
    }
    const length = Array.from(line).length;
    if (length > TEXT_MAX_CODE_POINTS) {
      this.io.out(this.t.tooLong(length));
      return;
    }
    const conn = this.conn;
    if (!conn || conn.closed || this.quitRequested) {
      if (this.quitRequested) return;
      if (this.queue.length >= this.timing.maxQueuedLines) {
        this.io.out(this.t.queueFull);
        return;
      }
      this.queue.push(line);
      if (this.loggedInOnce) this.io.out(this.t.queued);
      return;
    }
    this.send(conn, line);
  }

  /**
   * Logs out and ends the session (`/quit`, end of input, Ctrl-C). Lines typed before it are
   * sent first when the session is logged in or logging in; while waiting to reconnect, it
   * ends at once.
   */
  quit(): void {
    if (this.quitRequested) return;
    this.quitRequested = true;
    if (this.conn && !this.conn.closed) this.startLogout(this.conn);
    this.wakeSleeper?.();
  }

  private startLogout(conn: ServerConnection): void {
    this.logoutDone ??= conn.request('logout').then(() => conn.destroy());
  }

  private quitWhileOffline(): number {
    if (this.queue.length > 0) {
      this.io.err(`chat client: ${this.queue.length} line(s) not sent: not connected`);
      return EXIT.FAILED;
    }
    this.io.out(this.t.bye);
    return EXIT.OK;
  }

  private send(conn: ServerConnection, line: string): void {
    const lang = this.options.lang;
    const command = line.startsWith('/') ? parseSlashCommand(line) : undefined;
    void conn.request('chat', { text: line }).then((o: Outcome) => {
      if (o.kind === 'closed') return; // counted in the connection-lost line
      if (o.kind === 'timeout') {
        this.io.out(this.t.noAnswer(safe(line), this.timing.replyTimeoutMs / 1000));
        return;
      }
      const r = o.reply;
      if (r.ok !== true) {
        this.io.out(errorLine(lang, errorCode(r) ?? 'INTERNAL', safe(errorMessage(r)), this.options.name));
        return;
      }
      if (command === undefined) {
        this.io.out(channelLine(lang, this.channel, this.options.name, line));
        return;
      }
      if (r.command === 'whisper' && command.kind === 'whisper') {
        this.io.out(whisperOutLine(lang, command.to, command.text));
        return;
      }
      if (r.command === 'channel') {
        const moved = Number((r.result as { channel?: unknown } | undefined)?.channel);
        if (Number.isInteger(moved) && moved > 0) {
          this.channel = moved;
          this.io.promptChanged?.(this.prompt);
        }
      }
      this.io.out(infoLine(typeof r.text === 'string' ? r.text : JSON.stringify(r)));
    });
  }

  private ping(): void {
    const conn = this.conn;
    if (!conn || conn.closed) {
      this.io.out(errorLine(this.options.lang, 'UNAVAILABLE', '', this.options.name));
      return;
    }
    const start = Date.now();
    void conn.request('ping').then((o) => {
      if (o.kind === 'reply' && o.reply.ok === true) this.io.out(this.t.pong(Date.now() - start));
      else if (o.kind === 'reply') this.io.out(errorLine(this.options.lang, errorCode(o.reply) ?? 'INTERNAL', safe(errorMessage(o.reply)), this.options.name));
      else if (o.kind === 'timeout') this.io.out(this.t.noAnswer('/ping', this.timing.replyTimeoutMs / 1000));
    });
  }

  private startKeepalive(conn: ServerConnection): void {
    this.stopKeepalive();
    this.keepalive = setInterval(() => void conn.request('ping'), this.timing.keepaliveMs);
    this.keepalive.unref();
  }

  private stopKeepalive(): void {
    if (this.keepalive) clearInterval(this.keepalive);
    this.keepalive = undefined;
  }

  private gaveUp(failures: number): boolean {
    if (this.options.retries > 0 && failures >= this.options.retries) {
      this.io.err(`chat client: ${this.t.givingUp(failures).slice(2)}`);
      return true;
    }
    return false;
  }

  private backoff(failures: number): number {
    const base = Math.min(this.timing.backoffMaxMs, this.timing.backoffMinMs * 2 ** Math.min(failures - 1, 20));
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  /** Waits, unless quit() comes first. */
  private sleep(ms: number): Promise<void> {
    if (this.quitRequested) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wakeSleeper = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakeSleeper = done;
    });
  }
}

function errorCode(r: ServerFrame): string | undefined {
  const code = (r.error as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

function errorMessage(r: ServerFrame): string {
  const message = (r.error as { message?: unknown } | undefined)?.message;
  return typeof message === 'string' ? message : '';
}
