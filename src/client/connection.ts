import { EventEmitter } from 'node:events';
import { type Socket, connect } from 'node:net';
import { FrameDecoder, FrameError } from '../protocol/frame-decoder';
import { encodeFrame } from '../protocol/frame-encoder';
import { MAX_REQUEST_ID } from '../protocol/client-request';

/** A frame from the server: a reply (it has an `id`) or a push (no `id`). */
export type ServerFrame = Record<string, unknown> & { op?: string; id?: number | null; ok?: boolean };

/** What the server said about a request: its reply, or why there is none. */
export type Outcome = { kind: 'reply'; reply: ServerFrame } | { kind: 'closed' } | { kind: 'timeout' };

/** Largest server frame this client accepts (the server's largest is a reply to a 500-character line). */
const MAX_SERVER_FRAME = 1 << 20;

interface Pending {
  op: string;
  resolve: (o: Outcome) => void;
  timer: NodeJS.Timeout;
}

/**
 * One TCP connection to chatD speaking the framing of docs/protocol.md (the codec of
 * src/protocol). Requests get ids from 1 up and resolve with their reply; a request left
 * unanswered resolves `closed` when the connection ends, or `timeout` after `replyTimeoutMs`.
 * Events: `push` (frames without an id), `close` (once, with the socket error if any and the
 * number of requests other than `ping` it left unanswered).
 */
export class ServerConnection extends EventEmitter {
  private readonly decoder = new FrameDecoder(MAX_SERVER_FRAME);
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closedFlag = false;

  private constructor(
    private readonly socket: Socket,
    private readonly replyTimeoutMs: number,
  ) {
    super();
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.finish(err));
    socket.on('close', () => this.finish(undefined));
  }

  /** Connects; rejects with the socket error (e.g. `code: 'ECONNREFUSED'`). */
  static open(host: string, port: number, options: { connectTimeoutMs: number; replyTimeoutMs: number }): Promise<ServerConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(Object.assign(new Error(`connect to ${host}:${port} timed out`), { code: 'ETIMEDOUT' }));
      }, options.connectTimeoutMs);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new ServerConnection(socket, options.replyTimeoutMs));
      });
    });
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Requests in flight. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Sends `{op, id, ...fields}`; resolves with the reply, or why none came. */
  request(op: string, fields: Record<string, unknown> = {}): Promise<Outcome> {
    if (this.closedFlag) return Promise.resolve({ kind: 'closed' });
    const id = this.nextId;
    this.nextId = this.nextId >= MAX_REQUEST_ID ? 1 : this.nextId + 1;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve({ kind: 'timeout' });
      }, this.replyTimeoutMs);
      this.pending.set(id, { op, resolve, timer });
      this.socket.write(encodeFrame({ op, id, ...fields }));
    });
  }

  /** Half-closes after what was written; the server closes its side after a logout. */
  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    let frames: unknown[];
    try {
      frames = this.decoder.push(chunk);
    } catch (err) {
      // A server that breaks the framing: serve what came before, then drop the connection.
      frames = err instanceof FrameError ? [...err.decoded] : [];
      for (const f of frames) this.dispatch(f as ServerFrame);
      this.socket.destroy(err as Error);
      return;
    }
    for (const f of frames) this.dispatch(f as ServerFrame);
  }

  private dispatch(frame: ServerFrame): void {
    const id = frame.id;
    if (typeof id === 'number' && this.pending.has(id)) {
      const p = this.pending.get(id)!;
      this.pending.delete(id);
      clearTimeout(p.timer);
      p.resolve({ kind: 'reply', reply: frame });
      return;
    }
    if (id === undefined) this.emit('push', frame);
    // A reply to an id no longer waited for (timed out here) or null (a malformed request
    // of ours, which the client never sends) is dropped.
  }

  private finish(err: Error | undefined): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    const unanswered = [...this.pending.values()].filter((p) => p.op !== 'ping').length;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.resolve({ kind: 'closed' });
    }
    this.pending.clear();
    this.socket.destroy();
    this.emit('close', err, unanswered);
  }
}
