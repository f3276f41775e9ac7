import type { NatsConnection, Status } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { IpcError } from '../ipc-error';
import { parseNatsUrls } from './nats-url';
import type { NonBlockingQueue } from '../queue-transport';
import type { QueueStat } from '../transport';

/** What a NatsQueue tells about its connection; a pino logger fits. */
export interface NatsLog {
  info(fields: object, msg: string): void;
  warn(fields: object, msg: string): void;
  error(fields: object, msg: string): void;
}

export interface NatsQueueOptions {
  /** One or more server URLs, comma-separated (`nats://host:4222`). */
  url: string;
  /** Per-cluster subject prefix (CLUSTER_NAME): mtype m is `chatd.<cluster>.m.<m>`. */
  cluster: string;
  /** Client name the server shows (`/connz`). */
  name?: string;
  /**
   * Bytes the client may hold unsent (its outbound buffer plus the socket's) before a send
   * counts as "queue full" and waits in the transport's backlog. Also the `capacity` of stat(),
   * from which the Endpoint derives its in-flight credit per destination.
   */
  pendingBytes?: number;
  /** Upper bound of maxMessageBytes (the server's max_payload is the other bound). */
  maxMessageBytes?: number;
  /** Give up the first connection after this long (the process exits, PM2 starts it again). */
  connectTimeoutMs?: number;
  /** Reconnect delay: starts here and doubles per failed attempt up to reconnectMaxMs, plus jitter. */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** Client pings: a server that answers none of maxPingOut pings in a row is dropped (then reconnect). */
  pingIntervalMs?: number;
  maxPingOut?: number;
  log?: NatsLog;
}

export const defaultNatsQueueOptions = Object.freeze({
  pendingBytes: 1024 * 1024,
  maxMessageBytes: 1024 * 1024,
  connectTimeoutMs: 10_000,
  reconnectMinMs: 100,
  reconnectMaxMs: 1000,
  pingIntervalMs: 2000,
  maxPingOut: 3,
});

/** Queue group of every mailbox subscription: each message goes to one subscriber (as msgrcv takes it once). */
export const MAILBOX_QUEUE_GROUP = 'mbox';

/** `CLUSTER_NAME`: one NATS subject token. */
export const CLUSTER_NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

export function subjectPrefix(cluster: string): string {
  if (!CLUSTER_NAME_PATTERN.test(cluster)) throw new IpcError('EINVAL', `cluster name ${JSON.stringify(cluster)} must be 1-64 of A-Z a-z 0-9 _ -`);
  return `chatd.${cluster}.m.`;
}

const silentLog: NatsLog = { info() {}, warn() {}, error() {} };

/** The connection's internals we read (guarded: absent fields fall back to our own view). */
interface ProtocolPeek {
  connected?: unknown;
  outbound?: { size?: () => number };
  transport?: { socket?: { writableLength?: number } };
}

/**
 * One NATS connection seen as a queue: `trySend(mtype, body)` publishes on the mtype's subject
 * while the connection is up and holds less than `pendingBytes` unsent; otherwise it answers
 * "full" (false) and the transport's bounded backlog keeps the message until the connection is
 * back (nats.js drops what it buffered when it reconnects, so nothing is published into a
 * dead connection). There is no storage on the server: a message to a subject nobody
 * subscribes to is gone, and a request to it times out.
 *
 * The connection reconnects forever (backoff reconnectMinMs..reconnectMaxMs) and logs once per
 * state change. It is gone for good only after close() (or a server that refuses us for good);
 * then sends throw `CONNECTION_CLOSED` and receivers end `removed`.
 */
export class NatsQueue implements NonBlockingQueue {
  readonly prefix: string;
  readonly maxMessageBytes: number;
  readonly capacity: number;
  /** Changes of state seen, for tests and the status record. */
  readonly counters = { disconnects: 0, reconnects: 0, slowConsumer: 0, serverErrors: 0 };
  private up = true;
  private gone = false;
  private closing = false;
  private lastSend = 0;
  private readonly goneWaiters: ((err?: Error) => void)[] = [];
  private readonly reachListeners = new Set<(up: boolean) => void>();

  private constructor(
    readonly nc: NatsConnection,
    prefix: string,
    options: Required<Omit<NatsQueueOptions, 'name' | 'log'>>,
    private readonly log: NatsLog,
  ) {
    this.prefix = prefix;
    this.capacity = options.pendingBytes;
    this.maxMessageBytes = Math.min(options.maxMessageBytes, nc.info?.max_payload ?? options.maxMessageBytes);
    void this.watch();
    void nc.closed().then((err) => {
      this.gone = true;
      if (!this.closing) log.error({ err, url: options.url }, 'NATS connection closed for good');
      this.setUp(false);
      for (const w of this.goneWaiters.splice(0)) w(err ?? undefined);
    });
  }

  /** Connects (waiting up to connectTimeoutMs for a first server) and returns the queue. */
  static async connect(options: NatsQueueOptions): Promise<NatsQueue> {
    const o = { ...defaultNatsQueueOptions, ...options };
    const log = options.log ?? silentLog;
    const prefix = subjectPrefix(o.cluster);
    const servers = parseNatsUrls(o.url);
    let attempt = 0;
    const opts = {
      servers,
      name: options.name ?? `chatd-cluster ${process.pid}`,
      reconnect: true,
      maxReconnectAttempts: -1,
      // Backoff by hand: the client calls this before each attempt; a reconnect resets it (watch()).
      reconnectDelayHandler: () => {
        const base = Math.min(o.reconnectMaxMs, o.reconnectMinMs * 2 ** Math.min(attempt++, 16));
        return base + Math.floor(Math.random() * base * 0.2);
      },
      pingInterval: o.pingIntervalMs,
      maxPingOut: o.maxPingOut,
    };
    // The first connection: tried again with the same backoff until connectTimeoutMs.
    const until = Date.now() + o.connectTimeoutMs;
    let nc: NatsConnection | undefined;
    let lastErr: unknown;
    for (let tries = 0; nc === undefined; tries++) {
      const left = until - Date.now();
      if (left <= 0) {
        throw new IpcError('UNAVAILABLE', `no NATS server answered at ${servers.join(',')} within ${o.connectTimeoutMs} ms: ${(lastErr as Error)?.message ?? 'timeout'}`, undefined, { cause: lastErr });
      }
      try {
        nc = await connect({ ...opts, timeout: Math.max(200, Math.min(left, 5000)) });
      } catch (err) {
        lastErr = err;
        if (tries === 0) log.warn({ servers, err: (err as Error).message }, 'NATS not reachable yet; retrying');
        const wait = Math.min(o.reconnectMaxMs, o.reconnectMinMs * 2 ** Math.min(tries, 16), Math.max(0, until - Date.now()));
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
    const q = new NatsQueue(nc, prefix, { ...o }, log);
    q.resetBackoff = () => (attempt = 0);
    log.info({ server: nc.getServer(), maxPayload: nc.info?.max_payload, prefix }, 'NATS connected');
    return q;
  }

  private resetBackoff: () => void = () => {};

  subject(mtype: number): string {
    return this.prefix + mtype;
  }

  /** Up: connected, nothing known wrong. */
  get connected(): boolean {
    const proto = this.protocol();
    if (proto && typeof proto.connected === 'boolean') return proto.connected && this.up && !this.gone;
    return this.up && !this.gone;
  }

  get isGone(): boolean {
    return this.gone;
  }

  /**
   * Tells `listener` each change between up (connected) and down (disconnected, stale, or
   * closed for good), as the connection's status reports it. Returns the unsubscribe.
   */
  onReachability(listener: (up: boolean) => void): () => void {
    this.reachListeners.add(listener);
    return () => this.reachListeners.delete(listener);
  }

  private setUp(up: boolean): void {
    if (this.up === up) return;
    this.up = up;
    for (const listener of [...this.reachListeners]) {
      try {
        listener(up);
      } catch (err) {
        this.log.error({ err }, 'NATS reachability listener threw');
      }
    }
  }

  /** Bytes the client holds unsent: its outbound buffer and the socket's write queue. */
  pendingBytes(): number {
    const proto = this.protocol();
    let n = 0;
    try {
      n += proto?.outbound?.size?.() ?? 0;
      n += proto?.transport?.socket?.writableLength ?? 0;
    } catch {
      // internals changed: count nothing, the socket still has node's own buffering
    }
    return n;
  }

  trySend(mtype: number, body: Uint8Array): boolean {
    if (this.gone) throw new IpcError('CONNECTION_CLOSED', 'NATS connection closed', 'publish');
    if (body.byteLength > this.maxMessageBytes) {
      throw new IpcError('E2BIG', `message of ${body.byteLength} bytes exceeds max_payload ${this.maxMessageBytes}`, 'publish');
    }
    if (!this.connected) return false;
    // As a kernel queue admits any one message when empty: a message over capacity goes alone.
    const pending = this.pendingBytes();
    if (pending > 0 && pending + body.byteLength > this.capacity) return false;
    try {
      this.nc.publish(this.subject(mtype), body);
    } catch (err) {
      if (this.nc.isClosed()) {
        this.gone = true;
        throw new IpcError('CONNECTION_CLOSED', 'NATS connection closed', 'publish', { cause: err });
      }
      throw new IpcError('EINVAL', `NATS publish failed: ${(err as Error).message}`, 'publish', { cause: err });
    }
    this.lastSend = Date.now();
    return true;
  }

  /**
   * The figures: `bytes` unsent in the client, `messages` 0 (the server keeps no queue to
   * count), `capacity` the pendingBytes bound. lastSendPid is ours once we have sent.
   */
  stat(): QueueStat {
    return { messages: 0, bytes: this.pendingBytes(), capacity: this.capacity, mode: 0o600, lastSendPid: this.lastSend ? process.pid : 0, lastReceivePid: 0 };
  }

  /** Resolves when the connection is gone for good (the error, if one closed it). */
  whenGone(): Promise<Error | undefined> {
    if (this.gone) return Promise.resolve(undefined);
    return new Promise((resolve) => this.goneWaiters.push(resolve));
  }

  /** Waits until the server has processed everything sent so far (SUB and UNSUB included); bounded. */
  async flush(timeoutMs = 2000): Promise<boolean> {
    if (!this.connected) return false;
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        this.nc.flush().then(() => true, () => false),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Flushes what was sent (bounded) and closes the connection. Idempotent. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (!this.gone) await this.flush(1000);
    await this.nc.close().catch(() => {});
  }

  private protocol(): ProtocolPeek | undefined {
    return (this.nc as unknown as { protocol?: ProtocolPeek }).protocol;
  }

  /** Follows the connection's status: one log line per change of state, not per attempt. */
  private async watch(): Promise<void> {
    let slowLogged = 0;
    try {
      for await (const s of this.nc.status() as AsyncIterable<Status>) {
        if (this.closing) break;
        switch (s.type) {
          case 'disconnect':
          case 'staleConnection':
            if (this.up) {
              this.counters.disconnects++;
              this.log.warn({ server: 'server' in s ? s.server : undefined, reason: s.type }, 'NATS disconnected; requests fail UNAVAILABLE, other sends wait in the backlog; reconnecting');
              this.setUp(false);
            }
            break;
          case 'reconnect':
            this.resetBackoff();
            if (!this.up && !this.gone) {
              this.counters.reconnects++;
              this.log.info({ server: s.server }, 'NATS reconnected');
              this.setUp(true);
            }
            break;
          case 'slowConsumer':
            this.counters.slowConsumer++;
            if (Date.now() - slowLogged > 10_000) {
              slowLogged = Date.now();
              this.log.warn({ pending: s.pending, count: this.counters.slowConsumer }, 'NATS slow consumer');
            }
            break;
          case 'error':
            this.counters.serverErrors++;
            this.log.warn({ err: s.error }, 'NATS server error');
            break;
          default:
            break;
        }
      }
    } catch (err) {
      this.log.warn({ err }, 'NATS status watch ended');
    }
  }
}
