import type { Socket } from 'node:net';
import { ClientErrorCode } from '../errors';
import type { Logger } from '../log';
import { FrameDecoder, FrameError } from '../protocol/frame-decoder';
import { encodeFrame } from '../protocol/frame-encoder';
import { errorPush } from '../protocol/replies';
import { TokenBucket } from './rate-limiter';
import type { Session } from './session';

export interface ConnectionOptions {
  maxFrameBytes: number;
  idleTimeoutMs: number;
  ratePerSec: number;
  rateBurst: number;
  /** Past this many bytes waiting to be written, pushes are dropped. */
  writeBufferBytes: number;
  /** Requests in flight past which reading pauses (backpressure instead of errors). */
  maxInFlight: number;
}

export interface ConnectionHandler {
  /** A decoded frame. The handler must send exactly one reply through `conn.reply`. */
  onFrame(conn: ClientConnection, frame: Record<string, unknown>): void;
  /** The connection ended, however. Called once. */
  onClose(conn: ClientConnection): void;
}

/**
 * One client's TCP connection: framing, rate limit, idle timeout and write backpressure.
 * A slow reader cannot make chatD buffer without bound: while its socket needs draining,
 * chatD stops reading its requests (so replies stay bounded by what is in flight), and past
 * writeBufferBytes unsent it drops channel pushes to it.
 */
export class ClientConnection {
  session: Session | undefined;
  /** A login in flight (its session id), so that a second one gets ALREADY_LOGGED_IN. */
  pendingLogin: number | undefined;
  closed = false;
  /**
   * Set by logout: the connection closes once its reply, and the replies of every request
   * still in flight, are written (each request gets exactly one reply).
   */
  endAfterReply = false;
  inFlight = 0;
  droppedPushes = 0;
  private readonly decoder: FrameDecoder;
  private readonly bucket: TokenBucket;
  private paused = false;
  /** end() or fail() was called: nothing more is written. */
  private closing = false;

  constructor(
    readonly socket: Socket,
    readonly id: number,
    private readonly options: ConnectionOptions,
    private readonly handler: ConnectionHandler,
    private readonly log: Logger,
  ) {
    this.decoder = new FrameDecoder(options.maxFrameBytes);
    this.bucket = new TokenBucket(options.ratePerSec, options.rateBurst);
    socket.setNoDelay(true);
    if (options.idleTimeoutMs > 0) {
      socket.setTimeout(options.idleTimeoutMs, () => this.fail(ClientErrorCode.TIMEOUT, `idle for ${options.idleTimeoutMs} ms; closing`));
    }
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.updateFlow());
    socket.on('error', () => {}); // resets are normal; 'close' follows
    socket.on('close', () => this.onClosed());
  }

  /** Takes a rate-limit token; false means: answer RATE_LIMITED. */
  takeToken(): boolean {
    return this.bucket.take();
  }

  /** Writes a reply. Replies are never dropped: reading pauses instead. */
  reply(obj: object): void {
    if (this.closed || this.closing) return;
    this.write(encodeFrame(obj));
    this.updateFlow();
  }

  /**
   * Replies of one queue batch arrive in one tick: corking until the tick ends turns them
   * into one write syscall per connection instead of one per reply.
   */
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
  private corked = false;

  /** Writes a push unless this client is too far behind (then it is dropped and counted). */
  push(obj: object): boolean {
    if (this.closed || this.closing) return false;
    if (this.socket.writableLength > this.options.writeBufferBytes) {
      this.droppedPushes++;
      return false;
    }
    this.write(encodeFrame(obj));
    return true;
  }

  /** Sends an error push and closes (PROTOCOL.md: `error` before a close). */
  fail(code: ClientErrorCode, message: string): void {
    if (this.closed || this.closing) return;
    this.closing = true;
    this.socket.end(encodeFrame(errorPush(code, message)));
    this.closeSoon();
  }

  /** Closes after what was written has gone out. */
  end(): void {
    if (this.closed || this.closing) return;
    this.closing = true;
    this.socket.end();
    this.closeSoon();
  }

  requestStarted(): void {
    this.inFlight++;
    this.updateFlow();
  }

  /** Call after the request's reply is written. */
  requestDone(): void {
    this.inFlight--;
    if (this.endAfterReply && this.inFlight === 0) this.end();
    else this.updateFlow();
  }

  private closeSoon(): void {
    // A peer that never reads would hold the socket open forever after end().
    const t = setTimeout(() => this.socket.destroy(), 2000);
    t.unref();
    this.socket.once('close', () => clearTimeout(t));
    this.stopReading();
  }

  private stopReading(): void {
    this.socket.pause();
    this.socket.removeAllListeners('data');
  }

  private onData(chunk: Buffer): void {
    let frames: unknown[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      const fe = err as FrameError;
      for (const f of fe.decoded ?? []) this.handler.onFrame(this, f as Record<string, unknown>);
      this.log.debug({ conn: this.id, reason: fe.message }, 'bad frame; closing');
      this.fail(ClientErrorCode.BAD_FRAME, fe.message);
      return;
    }
    for (const f of frames) {
      if (this.closed || this.closing) return;
      this.handler.onFrame(this, f as Record<string, unknown>);
    }
    // After a logout, what arrived with it is answered; nothing more is read.
    if (this.endAfterReply) this.socket.pause();
  }

  private updateFlow(): void {
    if (this.closed || this.closing || this.endAfterReply) return;
    // writableNeedDrain: the stream's own signal, and 'drain' is guaranteed to follow it.
    const behind = this.socket.writableNeedDrain || this.inFlight >= this.options.maxInFlight;
    if (behind && !this.paused) {
      this.paused = true;
      this.socket.pause();
    } else if (!behind && this.paused) {
      this.paused = false;
      this.socket.resume();
    }
  }

  private onClosed(): void {
    if (this.closed) return;
    this.closed = true;
    this.handler.onClose(this);
  }
}
