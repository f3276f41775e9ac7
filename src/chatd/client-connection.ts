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
  /** A frame whose first byte arrived must be complete within this (else TIMEOUT and close). */
  frameTimeoutMs: number;
  /**
   * Longest wait, after a bad frame or a missed frame deadline, for the replies of the
   * requests still in flight before the error push and the close go out regardless.
   */
  replyGraceMs: number;
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
  /**
   * Set by a protocol error (bad frame, missed frame deadline): nothing more is read, the
   * requests in flight are answered, then this error is pushed and the connection closes.
   */
  private pendingFail: { code: ClientErrorCode; message: string } | undefined;
  /** When the frame in progress must be complete (Date.now() ms); 0: no frame in progress. */
  frameDeadline = 0;

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
    this.replyJson(JSON.stringify(obj));
  }

  /** reply() for a reply already in JSON (one object, as JSON.stringify writes it). */
  replyJson(json: string): void {
    if (this.closed || this.closing) return;
    this.writeFrame(json);
  }

  /** Writes a push unless this client is too far behind (then it is dropped and counted). */
  push(obj: object): boolean {
    if (this.closed || this.closing) return false;
    if (this.socket.writableLength + this.outLen > this.options.writeBufferBytes) {
      this.droppedPushes++;
      return false;
    }
    this.writeFrame(JSON.stringify(obj));
    return true;
  }

  /**
   * Frames go into this connection's output buffer, which is written with one socket write
   * at the end of the tick (see flushOutputs): the replies of one queue batch cost one
   * syscall per connection, and no Buffer or write request per reply.
   */
  private writeFrame(json: string): void {
    const worst = 4 + json.length * 3;
    let out = this.out;
    if (out.length - this.outLen < worst) out = this.growOut(worst);
    const n = out.write(json, this.outLen + 4, 'utf8');
    out.writeUInt32BE(n, this.outLen);
    if (this.outLen === 0) scheduleFlush(this);
    this.outLen += 4 + n;
  }

  private growOut(need: number): Buffer {
    const bigger = Buffer.allocUnsafe(Math.max(this.out.length * 2, this.outLen + need, OUT_INITIAL));
    this.out.copy(bigger, 0, 0, this.outLen);
    this.out = bigger;
    return bigger;
  }

  /** Writes what the output buffer holds (one socket write); called once per tick. */
  flushOutput(): void {
    const n = this.outLen;
    if (n === 0) return;
    this.outLen = 0;
    if (this.closed) return;
    // A copy for the socket (it may hold the bytes until they are sent); the buffer is reused.
    this.socket.write(Buffer.from(this.out.subarray(0, n)));
    if (this.out.length > OUT_KEEP) this.out = Buffer.allocUnsafe(OUT_INITIAL);
    this.updateFlow();
  }
  private out: Buffer = EMPTY_OUT;
  private outLen = 0;

  /** Sends an error push and closes (PROTOCOL.md: `error` before a close). */
  fail(code: ClientErrorCode, message: string): void {
    if (this.closed || this.closing) return;
    this.closing = true;
    this.flushOutput();
    this.socket.end(encodeFrame(errorPush(code, message)));
    this.closeSoon();
  }

  /**
   * For protocol errors: stops reading at once, lets every request already read get its
   * reply (at most replyGraceMs), then sends the error push and closes.
   */
  failAfterReplies(code: ClientErrorCode, message: string): void {
    if (this.closed || this.closing || this.pendingFail) return;
    this.disarmFrameDeadline();
    if (this.inFlight === 0) return this.fail(code, message);
    this.pendingFail = { code, message };
    this.stopReading();
    const t = setTimeout(() => this.fail(code, message), this.options.replyGraceMs);
    t.unref();
    this.socket.once('close', () => clearTimeout(t));
  }

  /** Closes after what was written has gone out. */
  end(): void {
    if (this.closed || this.closing) return;
    this.closing = true;
    this.flushOutput();
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
    if (this.inFlight === 0 && this.pendingFail) this.fail(this.pendingFail.code, this.pendingFail.message);
    else if (this.endAfterReply && this.inFlight === 0) this.end();
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
    this.disarmFrameDeadline();
    this.socket.pause();
    this.socket.removeAllListeners('data');
  }

  private onData(chunk: Buffer): void {
    let frames: unknown[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      const fe = err as FrameError;
      // What came before the bad frame is served, and answered before the close.
      for (const f of fe.decoded ?? []) {
        if (this.closed || this.closing) return;
        this.handler.onFrame(this, f as Record<string, unknown>);
      }
      this.log.debug({ conn: this.id, reason: fe.message }, 'bad frame; closing');
      this.failAfterReplies(ClientErrorCode.BAD_FRAME, fe.message);
      return;
    }
    for (const f of frames) {
      if (this.closed || this.closing) return;
      this.handler.onFrame(this, f as Record<string, unknown>);
    }
    // After a logout, what arrived with it is answered; nothing more is read.
    if (this.endAfterReply) {
      this.disarmFrameDeadline();
      this.socket.pause();
      return;
    }
    // The frame deadline runs from a frame's first byte to its last, and only while reading.
    if (this.decoder.bufferedBytes === 0) this.disarmFrameDeadline();
    else if (frames.length > 0 || this.frameDeadline === 0) this.armFrameDeadline();
  }

  private armFrameDeadline(): void {
    if (this.paused || this.closing || this.closed) return;
    this.frameDeadline = Date.now() + this.options.frameTimeoutMs;
    watchFrameDeadline(this);
  }

  private disarmFrameDeadline(): void {
    if (this.frameDeadline === 0) return;
    this.frameDeadline = 0;
    partialFrames.delete(this);
  }

  /** The frame deadline passed (from the module's sweep). */
  frameTimedOut(): void {
    this.frameDeadline = 0;
    const ms = this.options.frameTimeoutMs;
    this.log.debug({ conn: this.id, ms }, 'frame not completed in time; closing');
    this.failAfterReplies(ClientErrorCode.TIMEOUT, `frame not completed within ${ms} ms; closing`);
  }

  private updateFlow(): void {
    if (this.closed || this.closing || this.endAfterReply || this.pendingFail) return;
    // writableNeedDrain: the stream's own signal, and 'drain' is guaranteed to follow it.
    const behind = this.socket.writableNeedDrain || this.inFlight >= this.options.maxInFlight;
    if (behind && !this.paused) {
      this.paused = true;
      this.socket.pause();
      // Not reading is chatD's choice here: the frame deadline does not run meanwhile.
      this.disarmFrameDeadline();
    } else if (!behind && this.paused) {
      this.paused = false;
      this.socket.resume();
      if (this.decoder.bufferedBytes > 0) this.armFrameDeadline();
    }
  }

  private onClosed(): void {
    if (this.closed) return;
    this.closed = true;
    this.disarmFrameDeadline();
    this.handler.onClose(this);
  }
}

const EMPTY_OUT = Buffer.alloc(0);
const OUT_INITIAL = 4096;
/** An output buffer grown past this (a burst of pushes) is given back after its flush. */
const OUT_KEEP = 64 * 1024;

/**
 * Connections with a frame in progress, checked by one sweep timer that runs only while
 * there are any (no timer per connection or per frame).
 */
const partialFrames = new Set<ClientConnection>();
const FRAME_SWEEP_MS = 100;
let frameSweep: NodeJS.Timeout | undefined;
function watchFrameDeadline(c: ClientConnection): void {
  partialFrames.add(c);
  if (frameSweep === undefined) {
    frameSweep = setInterval(sweepFrameDeadlines, FRAME_SWEEP_MS);
    frameSweep.unref();
  }
}
function sweepFrameDeadlines(): void {
  const now = Date.now();
  for (const c of partialFrames) {
    if (c.frameDeadline === 0) partialFrames.delete(c);
    else if (c.frameDeadline <= now) {
      partialFrames.delete(c);
      c.frameTimedOut();
    }
  }
  if (partialFrames.size === 0 && frameSweep !== undefined) {
    clearInterval(frameSweep);
    frameSweep = undefined;
  }
}

/** Connections with output waiting, flushed together once the current tick's work is done. */
let dirty: ClientConnection[] = [];
let spare: ClientConnection[] = [];
function scheduleFlush(c: ClientConnection): void {
  if (dirty.length === 0) process.nextTick(flushOutputs);
  dirty.push(c);
}
function flushOutputs(): void {
  const list = dirty;
  dirty = spare;
  for (let i = 0; i < list.length; i++) list[i]!.flushOutput();
  list.length = 0;
  spare = list;
}
