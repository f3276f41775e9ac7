import { connect as netConnect, type Socket } from 'node:net';

/**
 * A test client for the chatD protocol (PROTOCOL.md): 4-byte big-endian length, then UTF-8
 * JSON. Written independently of src/protocol on purpose, so that the end-to-end suites check
 * the wire format rather than the server's own codec.
 *
 * Every frame received is kept in `frames` (in order). A frame with an `id` key is a reply:
 * it settles the pending `request()` of that id (the first one only; later replies with the
 * same id are counted in `repliesById` and show up as duplicates). A frame without `id` is a
 * push and also goes to `pushes`.
 */

export type Frame = Record<string, unknown> & { op?: unknown; id?: unknown; ok?: unknown };

export interface ErrorBody {
  code: string;
  message: string;
}

export interface Reply extends Frame {
  op?: string;
  id: number | null;
  ok: boolean;
  error?: ErrorBody;
}

/** How a request went, for load tests that count rather than throw. */
export interface Timed {
  reply: Reply;
  /** Milliseconds from the write to the reply. */
  latencyMs: number;
}

interface Pending {
  resolve: (r: Timed) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  sentAt: number;
  op: unknown;
}

interface PushWaiter {
  pred: (f: Frame) => boolean;
  resolve: (f: Frame) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  /** Only frames arriving from this index on are considered. */
  from: number;
  pushesOnly: boolean;
}

export const DEFAULT_REQUEST_TIMEOUT_MS = 5000;
const HEADER = 4;
/** Largest frame the client accepts from the server before calling the stream broken. */
const CLIENT_MAX_FRAME = 1 << 20;

/** Encodes one frame. Exported so tests can build raw byte sequences from valid frames. */
export function frame(obj: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(obj), 'utf8');
  const out = Buffer.allocUnsafe(HEADER + body.length);
  out.writeUInt32BE(body.length, 0);
  body.copy(out, HEADER);
  return out;
}

/** A header announcing `length` bytes, followed by `body` (for malformed-frame tests). */
export function rawFrame(length: number, body: Buffer | string = Buffer.alloc(0)): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const out = Buffer.allocUnsafe(HEADER + b.length);
  out.writeUInt32BE(length >>> 0, 0);
  b.copy(out, HEADER);
  return out;
}

export interface ConnectOptions {
  host?: string;
  /** Connection attempt bound. */
  connectTimeoutMs?: number;
  /** Default per-request timeout. */
  requestTimeoutMs?: number;
}

export class ChatClient {
  /** Every frame received, in order (replies and pushes). */
  readonly frames: Frame[] = [];
  /** Frames without an `id` key. */
  readonly pushes: Frame[] = [];
  /** The JSON text of every frame received, as the server wrote it (byte-exactness checks). */
  readonly texts: string[] = [];
  /** How many replies arrived for each id (exactly-once checks). */
  readonly repliesById = new Map<number | null, number>();
  /** Set when the server's byte stream could not be decoded (a server bug). */
  streamError: Error | undefined;
  /** Resolves when the socket has closed, however; `hadError` is true after a reset. */
  readonly closed: Promise<{ hadError: boolean }>;
  isClosed = false;
  requestTimeoutMs: number;

  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly waiters = new Set<PushWaiter>();
  private chunks: Buffer[] = [];
  private buffered = 0;

  private constructor(
    readonly socket: Socket,
    options: ConnectOptions,
  ) {
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => {}); // resets are expected in several tests; 'close' follows
    this.closed = new Promise((resolve) => {
      socket.once('close', (hadError: boolean) => {
        this.isClosed = true;
        const err = new Error('connection closed');
        for (const [id, p] of this.pending) {
          clearTimeout(p.timer);
          p.reject(new Error(`request ${String(p.op)}#${id}: connection closed before the reply`, { cause: err }));
        }
        this.pending.clear();
        for (const w of this.waiters) {
          clearTimeout(w.timer);
          w.reject(new Error('waitForPush: connection closed before a matching frame'));
        }
        this.waiters.clear();
        resolve({ hadError });
      });
    });
  }

  static connect(port: number, options: ConnectOptions = {}): Promise<ChatClient> {
    const host = options.host ?? '127.0.0.1';
    const timeoutMs = options.connectTimeoutMs ?? 5000;
    return new Promise((resolve, reject) => {
      const socket = netConnect({ port, host });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect ${host}:${port}: no connection after ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new ChatClient(socket, options));
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  /** Pending requests (sent, not yet answered and not timed out). */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Next id this client will use when a request has none. */
  takeId(): number {
    return this.nextId++;
  }

  /**
   * Sends one request and resolves with its reply (matched by id). `obj.id` is filled in
   * when absent. Rejects after `timeoutMs` or when the connection closes first.
   */
  async request(obj: Record<string, unknown>, timeoutMs = this.requestTimeoutMs): Promise<Reply> {
    return (await this.timedRequest(obj, timeoutMs)).reply;
  }

  /** Like request(), with the latency. */
  timedRequest(obj: Record<string, unknown>, timeoutMs = this.requestTimeoutMs): Promise<Timed> {
    const msg = obj.id === undefined ? { ...obj, id: this.takeId() } : obj;
    const id = msg.id as number;
    if (!Number.isInteger(id)) return Promise.reject(new Error('request(): id must be an integer; use send() for invalid ids'));
    if (this.pending.has(id)) return Promise.reject(new Error(`request(): id ${id} is already in flight`));
    if (this.isClosed) return Promise.reject(new Error(`request ${String(msg.op)}#${id}: connection is closed`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`request ${String(msg.op)}#${id}: no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, sentAt: performance.now(), op: msg.op });
      this.socket.write(frame(msg));
    });
  }

  /** Sends one frame without waiting for anything. */
  send(obj: unknown): void {
    this.socket.write(frame(obj));
  }

  /** Writes bytes as they are (split or malformed frames). Resolves once handed to the kernel. */
  sendRaw(bytes: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.write(bytes, (err) => (err ? reject(err) : resolve()));
    });
  }

  /**
   * Resolves with the first frame, received from now on or already received, that matches
   * `pred` and is a push (no `id`). Rejects after `timeoutMs` or on close.
   */
  waitForPush(pred: (f: Frame) => boolean, timeoutMs = 3000): Promise<Frame> {
    return this.waitFor(pred, timeoutMs, true, 0);
  }

  /** Like waitForPush, over every frame (replies with `id: null` included). */
  waitForFrame(pred: (f: Frame) => boolean, timeoutMs = 3000, fromIndex = 0): Promise<Frame> {
    return this.waitFor(pred, timeoutMs, false, fromIndex);
  }

  private waitFor(pred: (f: Frame) => boolean, timeoutMs: number, pushesOnly: boolean, from: number): Promise<Frame> {
    for (let i = from; i < this.frames.length; i++) {
      const f = this.frames[i]!;
      if ((!pushesOnly || !('id' in f)) && pred(f)) return Promise.resolve(f);
    }
    if (this.isClosed) return Promise.reject(new Error('waitFor: connection is closed and no frame matched'));
    return new Promise((resolve, reject) => {
      const w: PushWaiter = {
        pred,
        resolve,
        reject,
        from,
        pushesOnly,
        timer: setTimeout(() => {
          this.waiters.delete(w);
          reject(new Error(`waitFor: no matching ${pushesOnly ? 'push' : 'frame'} within ${timeoutMs} ms`));
        }, timeoutMs),
      };
      this.waiters.add(w);
    });
  }

  /** Half-closes (FIN) and resolves once the socket has closed. */
  async end(): Promise<void> {
    if (!this.isClosed) this.socket.end();
    await this.closed;
  }

  /** Abrupt close: sends a TCP RST (SO_LINGER 0). Resolves once closed locally. */
  async destroy(): Promise<void> {
    if (!this.isClosed) {
      if (typeof this.socket.resetAndDestroy === 'function') this.socket.resetAndDestroy();
      else this.socket.destroy();
    }
    await this.closed;
  }

  private onData(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    for (;;) {
      if (this.buffered < HEADER) return;
      const head = this.peek(HEADER);
      const length = head.readUInt32BE(0);
      if (length === 0 || length > CLIENT_MAX_FRAME) {
        this.streamError = new Error(`server sent a frame of length ${length}`);
        this.socket.destroy();
        return;
      }
      if (this.buffered < HEADER + length) return;
      const whole = this.take(HEADER + length);
      let value: unknown;
      try {
        const text = new TextDecoder('utf-8', { fatal: true }).decode(whole.subarray(HEADER));
        this.texts.push(text);
        value = JSON.parse(text);
      } catch (err) {
        this.streamError = new Error('server sent a frame that is not UTF-8 JSON', { cause: err });
        this.socket.destroy();
        return;
      }
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        this.streamError = new Error(`server sent a frame that is not an object: ${JSON.stringify(value)}`);
        this.socket.destroy();
        return;
      }
      this.onFrame(value as Frame);
    }
  }

  private onFrame(f: Frame): void {
    this.frames.push(f);
    const isReply = 'id' in f;
    if (!isReply) this.pushes.push(f);
    else {
      const id = f.id as number | null;
      this.repliesById.set(id, (this.repliesById.get(id) ?? 0) + 1);
      if (typeof id === 'number') {
        const p = this.pending.get(id);
        if (p) {
          this.pending.delete(id);
          clearTimeout(p.timer);
          p.resolve({ reply: f as Reply, latencyMs: performance.now() - p.sentAt });
        }
      }
    }
    if (this.waiters.size > 0) {
      const index = this.frames.length - 1;
      for (const w of this.waiters) {
        if (index < w.from || (w.pushesOnly && isReply)) continue;
        let hit = false;
        try {
          hit = w.pred(f);
        } catch (err) {
          this.waiters.delete(w);
          clearTimeout(w.timer);
          w.reject(err as Error);
          continue;
        }
        if (hit) {
          this.waiters.delete(w);
          clearTimeout(w.timer);
          w.resolve(f);
        }
      }
    }
  }

  private peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    return Buffer.concat(this.chunks).subarray(0, n);
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }
}

/** Opens a connection and logs a character in; throws unless the login reply is ok. */
export async function loggedIn(port: number, name: string, channel: number, options: ConnectOptions = {}): Promise<ChatClient> {
  const c = await ChatClient.connect(port, options);
  const r = await c.request({ op: 'login', name, channel });
  if (r.ok !== true) {
    await c.destroy();
    throw new Error(`login ${name}@${channel} failed: ${JSON.stringify(r)}`);
  }
  return c;
}

/** Opens a connection to chatD (same as ChatClient.connect). */
export function connect(port: number, options: ConnectOptions = {}): Promise<ChatClient> {
  return ChatClient.connect(port, options);
}
