import type { Socket } from 'node:net';
import { ClientErrorCode } from '../errors';
import type { Logger } from '../log';
import type { ClientRequest } from '../protocol/client-request';
import { FrameDecoder, FrameError } from '../protocol/frame-decoder';
import { encodeFrame } from '../protocol/frame-encoder';
import { errorPush, errorReply } from '../protocol/replies';
import { TokenBucket } from './rate-limiter';
import type { Session } from './session';

export interface ConnectionOptions {
  maxFrameBytes: number;
  idleTimeoutMs: number;
  ratePerSec: number;
  rateBurst: number;
  /** Past this many bytes waiting to be written, pushes are dropped. */
  writeBufferBytes: number;
  /** Past this many bytes waiting to be written (replies included), the connection is closed. */
  maxUnsentBytes: number;
  /**
   * Budget for the unsent output of all connections together: past it, pushes are dropped to
   * every connection that has output waiting in chatD, and such connections are not read.
   */
  outputBudgetBytes: number;
  /**
   * Requests in flight past which reading pauses (backpressure instead of errors). Requests
   * waiting behind a login, move or logout count as in flight.
   */
  maxInFlight: number;
  /** A frame whose first byte arrived must be complete within this (else TIMEOUT and close). */
  frameTimeoutMs: number;
  /**
   * After a bad frame or a missed frame deadline, the requests still in flight are answered
   * before the error push and the close; past this long without a reply (the clock restarts
   * at each one), those go out regardless.
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
  /** Requests read and not yet answered (those in `waiting` included). */
  inFlight = 0;
  /**
   * A login, move or logout of this connection is in flight: the requests read after it wait
   * in `waiting`, in the order sent, and run once it is done (ChatService; docs/protocol.md,
   * "Pipelining and order"). Read on every request: keep it a plain field.
   */
  barrier = false;
  /** The `login`, `move` or `logout` in flight while `barrier` is set (set by ChatService). */
  barrierRequest: ClientRequest | undefined;
  /** Requests read while `barrier` was set, oldest first; undefined when none wait. */
  waiting: ClientRequest[] | undefined;
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
    socket.on('drain', () => {
      this.account();
      this.updateFlow();
    });
    socket.on('error', () => {}); // resets are normal; 'close' follows
    socket.on('close', () => this.onClosed());
  }

  /** end() or fail() was called, or the socket closed: no reply can be written any more. */
  get ending(): boolean {
    return this.closed || this.closing;
  }

  /**
   * How many requests may wait behind a barrier. Reading pauses well before (waiting requests
   * count toward maxInFlight): only a burst decoded in one go can meet it.
   */
  get maxWaiting(): number {
    return this.options.maxInFlight + 2 * FRAMES_PER_TURN;
  }

  /** fail()'s replies to the barrier in flight and to what waits behind it. */
  private answerUnrun(why: string): void {
    const b = this.barrierRequest;
    if (b) {
      this.barrierRequest = undefined;
      this.reply(errorReply(b.op, b.id, ClientErrorCode.UNAVAILABLE, `not confirmed before the connection closed (${why}); the character goes offline with the connection`));
    }
    const w = this.waiting;
    if (w === undefined) return;
    for (const r of w) this.reply(errorReply(r.op, r.id, ClientErrorCode.UNAVAILABLE, `not run: the connection closed first (${why})`));
    this.dropWaiting();
  }

  /** Forgets the waiting requests of a connection that can no longer be answered. */
  dropWaiting(): void {
    const w = this.waiting;
    if (w === undefined) return;
    this.waiting = undefined;
    this.inFlight -= w.length;
  }

  /**
   * For logout: nothing more is read from now on; once every request read so far has its
   * reply, the connection closes.
   */
  endAfterReplies(): void {
    this.endAfterReply = true;
    if (this.closed || this.closing) return;
    // Frames already read (decoded or not) are still served; the socket is not read again.
    this.disarmFrameDeadline();
    this.paused = true;
    this.socket.pause();
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
    this.hasReply = true;
    this.writeFrame(json);
  }

  /** Writes a push unless this client is too far behind (then it is dropped and counted). */
  push(obj: object): boolean {
    if (this.shedsPushes()) {
      if (!this.closed && !this.closing) this.droppedPushes++;
      return false;
    }
    this.writeFrame(JSON.stringify(obj));
    return true;
  }

  /** push() for a push already in JSON (a channel message serialized once for all members). */
  pushJson(json: string): boolean {
    if (this.shedsPushes()) {
      if (!this.closed && !this.closing) this.droppedPushes++;
      return false;
    }
    this.writeFrame(json);
    return true;
  }

  /**
   * Pushes are shed, replies never: past writeBufferBytes unsent to this client, or, while
   * the unsent output of all connections is past the budget, as soon as this client has
   * any output waiting in chatD (its kernel buffer is full: it does not keep up).
   */
  private shedsPushes(): boolean {
    if (this.closed || this.closing) return true;
    const w = this.socket.writableLength;
    if (w + this.outLen > this.options.writeBufferBytes) return true;
    return (w > 0 || this.outLen > PUSH_CARRY_BYTES) && totalUnsent + totalOut > this.options.outputBudgetBytes;
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
    totalOut += 4 + n;
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
    this.hasReply = false;
    totalOut -= n;
    if (this.closed) return;
    // A copy for the socket (it may hold the bytes until they are sent); the buffer is reused.
    this.socket.write(Buffer.from(this.out.subarray(0, n)), this.onWritten);
    if (this.out.length > OUT_KEEP) this.out = Buffer.allocUnsafe(OUT_INITIAL);
    this.account();
    if (this.accounted > this.options.maxUnsentBytes && !this.closing) return this.overflow();
    this.updateFlow();
  }

  /** Bytes waiting in this socket's stream, as last added to totalUnsent. */
  private accounted = 0;
  private readonly onWritten = (): void => {
    this.account();
    if (this.paused) this.updateFlow();
  };
  private account(): void {
    const w = this.closed ? 0 : this.socket.writableLength;
    totalUnsent += w - this.accounted;
    this.accounted = w;
  }

  /** Unsent output past maxUnsentBytes (replies to a client that does not read): close. */
  private overflow(): void {
    this.log.warn({ conn: this.id, unsent: this.accounted, max: this.options.maxUnsentBytes }, 'client does not read its replies; closing');
    this.fail(ClientErrorCode.UNAVAILABLE, `more than ${this.options.maxUnsentBytes} bytes unsent (the client does not read); closing`);
    // What is queued is not going anywhere soon: free it now.
    this.socket.destroy();
  }
  private out: Buffer = EMPTY_OUT;
  private outLen = 0;
  /** The output buffer holds a reply (flushed every turn; push-only output may wait a turn). */
  hasReply = false;

  /**
   * Sends an error push and closes (PROTOCOL.md: `error` before a close). A barrier still in
   * flight and the requests waiting behind it get UNAVAILABLE first: each request read gets
   * its one reply (the barrier's outcome is in doubt; one that completes later is taken back
   * with the connection), and nothing but unread requests is left without one.
   */
  fail(code: ClientErrorCode, message: string): void {
    if (this.closed || this.closing) return;
    this.answerUnrun(message);
    this.closing = true;
    this.flushOutput();
    this.socket.end(encodeFrame(errorPush(code, message)));
    this.closeSoon();
  }

  /**
   * For protocol errors and chatD's shutdown: stops reading at once, lets every request
   * already read get its reply (at most replyGraceMs), then sends the error push and closes.
   */
  failAfterReplies(code: ClientErrorCode, message: string): void {
    if (this.closed || this.closing || this.pendingFail) return;
    this.disarmFrameDeadline();
    if (this.inFlight === 0) return this.fail(code, message);
    this.pendingFail = { code, message };
    this.stopReading();
    const t = setTimeout(() => this.fail(code, message), this.options.replyGraceMs);
    t.unref();
    this.graceTimer = t;
    this.socket.once('close', () => clearTimeout(t));
  }
  /** failAfterReplies' timer, restarted by each reply (requests behind a barrier come one after another). */
  private graceTimer: NodeJS.Timeout | undefined;

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
    if (this.pendingFail) {
      if (this.inFlight === 0) this.fail(this.pendingFail.code, this.pendingFail.message);
      else this.graceTimer?.refresh();
    } else if (this.endAfterReply && this.inFlight === 0 && !this.input) this.end();
    else this.updateFlow();
  }

  private closeSoon(): void {
    // A peer that never reads would hold the socket open forever after end().
    const t = setTimeout(() => this.socket.destroy(), 2000);
    t.unref();
    this.socket.once('close', () => clearTimeout(t));
    // What the peer still sends is read and discarded, never served: so its FIN is seen and
    // the socket closes at once, and no unread input turns the close into a reset (which
    // could make the peer lose the error push still in its receive buffer).
    this.disarmFrameDeadline();
    this.socket.removeAllListeners('data');
    this.socket.on('data', () => {});
    this.socket.resume();
  }

  private stopReading(): void {
    this.disarmFrameDeadline();
    this.socket.pause();
    this.socket.removeAllListeners('data');
  }

  private onData(chunk: Buffer): void {
    try {
      this.decoder.append(chunk);
    } catch (err) {
      this.onBadFrame(err as FrameError);
      return;
    }
    this.input = true;
    // Within this turn's budget the frames are served now; past it, next turn (reading paused).
    if (openTurn()) this.serve();
    else this.updateFlow(true);
  }

  private onBadFrame(fe: FrameError): void {
    // What came before the bad frame is served, and answered before the close.
    this.input = false;
    for (const f of fe.decoded ?? []) {
      if (this.closed || this.closing) return;
      this.handler.onFrame(this, f as Record<string, unknown>);
    }
    this.log.debug({ conn: this.id, reason: fe.message }, 'bad frame; closing');
    this.failAfterReplies(ClientErrorCode.BAD_FRAME, fe.message);
  }

  /** Bytes were read that may hold frames not yet served. */
  private input = false;
  /** On the lists of connections to serve next turn. */
  scheduled = false;

  /**
   * Serves up to FRAMES_PER_TURN frames, fewer when the turn's time budget runs out; the
   * rest wait, as bytes in the decoder, for a later turn (after every other connection had
   * its turn and I/O was polled), with reading paused meanwhile.
   */
  serve(): void {
    if (this.closed || this.closing || this.pendingFail) return;
    let served = 0;
    let frames: unknown[];
    try {
      frames = this.decoder.next(FRAMES_PER_TURN);
    } catch (err) {
      this.onBadFrame(err as FrameError);
      return;
    }
    for (; served < frames.length; served++) {
      if (this.closed || this.closing || this.pendingFail) return;
      this.handler.onFrame(this, frames[served] as Record<string, unknown>);
      if (turnSpent()) {
        served++;
        break;
      }
    }
    if (served < frames.length) {
      // Out of time in the middle of a batch: the rest is served first next time.
      this.held = this.held ? frames.slice(served).concat(this.held) : frames.slice(served);
    }
    this.input = this.held !== undefined || this.decoder.hasFrame;
    if (this.closed || this.closing || this.pendingFail) return;
    if (this.endAfterReply && !this.input) {
      // A logout was among them: what came with it is answered, nothing more is read.
      this.disarmFrameDeadline();
      this.socket.pause();
      if (this.inFlight === 0) this.end();
      return;
    }
    this.updateFlow();
    // The frame deadline runs from a frame's first byte to its last, and only while reading.
    if (!this.input) {
      if (this.decoder.bufferedBytes === 0) this.disarmFrameDeadline();
      else if (frames.length > 0 || this.frameDeadline === 0) this.armFrameDeadline();
    }
  }
  /** Decoded frames cut off by the time budget (rare: only mid-batch). */
  private held: unknown[] | undefined;

  /** serve() for held frames first (called by the turn scheduler). */
  serveNext(): void {
    const h = this.held;
    if (!h) return this.serve();
    this.held = undefined;
    let i = 0;
    for (; i < h.length; i++) {
      if (this.closed || this.closing || this.pendingFail) return;
      this.handler.onFrame(this, h[i] as Record<string, unknown>);
      if (turnSpent()) {
        i++;
        break;
      }
    }
    if (i < h.length) this.held = h.slice(i);
    this.input = this.held !== undefined || this.decoder.hasFrame;
    if (this.input && !turnSpent() && !this.held) return this.serve();
    if (this.endAfterReply && !this.input) {
      this.socket.pause();
      if (this.inFlight === 0) this.end();
      return;
    }
    this.updateFlow();
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

  private updateFlow(fresh = false): void {
    if (this.closed || this.closing || this.pendingFail) return;
    if (this.endAfterReply && !this.input) return;
    // writableNeedDrain: the stream's own signal, and 'drain' is guaranteed to follow it.
    // Past the total output budget, a client with output waiting in chatD is not read either
    // (its write callback or 'drain' re-checks).
    const behind =
      this.socket.writableNeedDrain ||
      this.inFlight >= this.options.maxInFlight ||
      (totalUnsent > this.options.outputBudgetBytes && this.socket.writableLength > 0);
    if (this.input) {
      // Frames wait: keep reading paused; serve them next turn unless this client is behind.
      if (!this.paused) {
        this.paused = true;
        this.socket.pause();
        // Not reading is chatD's choice here: the frame deadline does not run meanwhile.
        this.disarmFrameDeadline();
      }
      if (!behind) scheduleServe(this, fresh);
      return;
    }
    if (behind && !this.paused) {
      this.paused = true;
      this.socket.pause();
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
    this.held = undefined;
    this.input = false;
    this.dropWaiting();
    totalUnsent -= this.accounted;
    this.accounted = 0;
    this.disarmFrameDeadline();
    this.handler.onClose(this);
  }
}

const EMPTY_OUT = Buffer.alloc(0);
const OUT_INITIAL = 4096;
/** An output buffer grown past this (a burst of pushes) is given back after its flush. */
const OUT_KEEP = 64 * 1024;

/** Frames handled per connection per turn before it yields to the others. */
export const FRAMES_PER_TURN = 32;

/** Unsent bytes in the socket streams of all connections of this process (see account()). */
let totalUnsent = 0;
export function totalUnsentBytes(): number {
  return totalUnsent;
}
/** Bytes in the output buffers of all connections, not yet handed to their sockets. */
export function totalBufferedOutputBytes(): number {
  return totalOut;
}

/**
 * How long chatD serves frames in one go before it polls I/O again (once for the
 * connections read in the I/O phase, once for those served from the lists below). Bounds
 * the wait of a client whose frame just arrived, whatever the others send.
 */
export const TURN_BUDGET_MS = 2;

/** performance.now() past which frame serving stops for this phase; 0: no phase open. */
let turnDeadline = 0;
/** Opens (once per event-loop turn) the I/O phase's budget; false once it is spent. */
function openTurn(): boolean {
  if (turnDeadline === 0) {
    turnDeadline = performance.now() + TURN_BUDGET_MS;
    ensureServeScheduled(); // closes the phase in this turn's check phase
    return true;
  }
  return performance.now() < turnDeadline;
}
function turnSpent(): boolean {
  return turnDeadline !== 0 && performance.now() >= turnDeadline;
}

/**
 * Connections with frames waiting. `fresh`: read this turn, nothing served yet (the budget
 * was spent): served first, so an interactive client never queues behind a bulk sender.
 * `ready`: leftovers of a batch, served round-robin after them.
 */
let fresh: ClientConnection[] = [];
let ready: ClientConnection[] = [];
let serveScheduled = false;
function scheduleServe(c: ClientConnection, isFresh: boolean): void {
  if (c.scheduled) return;
  c.scheduled = true;
  (isFresh ? fresh : ready).push(c);
  ensureServeScheduled();
}
function ensureServeScheduled(): void {
  if (!serveScheduled) {
    serveScheduled = true;
    setImmediate(serveReady);
  }
}
function serveReady(): void {
  serveScheduled = false;
  const lists = [fresh, ready];
  fresh = [];
  ready = [];
  turnDeadline = performance.now() + TURN_BUDGET_MS;
  for (let l = 0; l < 2; l++) {
    const list = lists[l]!;
    for (let i = 0; i < list.length; i++) {
      if (turnSpent()) {
        // Those not reached keep their place, ahead of any newcomer.
        const rest = list.slice(i);
        if (l === 0) {
          fresh = rest.concat(fresh);
          ready = lists[1]!.concat(ready);
        } else ready = rest.concat(ready);
        turnDeadline = 0;
        ensureServeScheduled();
        flushReplies();
        return;
      }
      const c = list[i]!;
      c.scheduled = false;
      c.serveNext(); // reschedules itself (in `ready`) while frames remain
    }
  }
  // The next turn's I/O phase gets a budget of its own.
  turnDeadline = 0;
  flushReplies();
}

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
/** Bytes in the output buffers of all connections (not yet handed to their sockets). */
let totalOut = 0;
/**
 * Time per turn for writing connections whose output holds only pushes: past it they wait
 * for the next turn (first in line then), so a channel message to thousands of members
 * cannot make one turn long. Replies are written every turn.
 */
export const PUSH_FLUSH_BUDGET_MS = 2;
/** Push-only output kept back a turn beyond this counts toward the output budget's shedding. */
const PUSH_CARRY_BYTES = 16 * 1024;

let dirty: ClientConnection[] = [];
let spare: ClientConnection[] = [];
function scheduleFlush(c: ClientConnection): void {
  // setImmediate, not nextTick: what every callback of this turn's I/O phase wrote (the
  // replies of several queue batches, a channel message from several talkers) goes out in
  // one write per connection, at most once per turn (what serveReady writes goes out next turn).
  if (dirty.length === 0) setImmediate(flushOutputs);
  dirty.push(c);
}
/**
 * Writes, now, the connections whose output holds a reply (serveReady runs in the check
 * phase, where a flush scheduled by setImmediate would wait a whole turn).
 */
function flushReplies(): void {
  let kept = 0;
  for (let i = 0; i < dirty.length; i++) {
    const c = dirty[i]!;
    if (c.hasReply || c.closed) c.flushOutput();
    else dirty[kept++] = c;
  }
  dirty.length = kept;
}

function flushOutputs(): void {
  const list = dirty;
  dirty = spare;
  const until = performance.now() + PUSH_FLUSH_BUDGET_MS;
  let pushTime = true;
  for (let i = 0; i < list.length; i++) {
    const c = list[i]!;
    if (c.hasReply || c.closed) c.flushOutput();
    else if (pushTime) {
      c.flushOutput();
      if ((i & 15) === 15 && performance.now() >= until) pushTime = false;
    } else dirty.push(c); // next turn; it is already scheduled (its buffer is not empty)
  }
  list.length = 0;
  spare = list;
  if (dirty.length > 0) setImmediate(flushOutputs);
}
