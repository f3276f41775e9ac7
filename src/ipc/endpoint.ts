import { IpcError } from './ipc-error';
import {
  HEADER_BYTES,
  checkEnvelope,
  writeHeader,
  MAX_PAYLOAD_BYTES,
  MAX_RECORDS,
  RECORD_HEADER_BYTES,
  type InboundRecord,
  type OutboundRecord,
} from './envelope';
import type { MessageTransport, ReceivedMessage, Receiver } from './transport';

/** Reply status 0 is success; anything else is an error status chosen by the layer above. */
export const STATUS_OK = 0;

export interface Reply {
  readonly status: number;
  readonly payload: Buffer;
  readonly from: number;
  readonly fromIncarnation: number;
}

/** Why a request got no reply. `clientCode` maps it onto PROTOCOL.md's codes. */
export class RequestError extends IpcError {
  override readonly name = 'RequestError';
  constructor(
    code: 'TIMEOUT' | 'UNAVAILABLE',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, undefined, options);
  }
  override get clientCode(): 'TIMEOUT' | 'UNAVAILABLE' {
    return this.code as 'TIMEOUT' | 'UNAVAILABLE';
  }
}

export interface EndpointCounters {
  /** Kernel messages that were not envelopes (foreign, truncated, garbage). */
  garbage: number;
  /** Envelopes for an earlier incarnation of this process. */
  stale: number;
  /** Requests that arrived past their deadline (their asker has given up). */
  expired: number;
  /** Replies that came after their request timed out, or matched nothing. */
  late: number;
  requestsSent: number;
  repliesReceived: number;
  timeouts: number;
  envelopesSent: number;
  recordsSent: number;
}

export interface EndpointOptions {
  /** This process's own mtype: replies and requests to it arrive here. */
  mtype: number;
  incarnation: number;
  /** Largest envelope the batcher builds; bigger single records still go alone up to msgmax. */
  maxBatchBytes: number;
  /** How often pending requests are checked for timeouts. */
  timeoutSweepMs?: number;
  /**
   * Flow control: request bytes (12-byte record headers + payloads) that may be in flight to
   * one destination mtype; further requests wait in the endpoint, encoded, and go out as
   * replies or timeouts come back. Default 3/4 of the queue's capacity (12 KiB of 16 KiB).
   * Requests and replies share the queue: a requester that fills it leaves no room for the
   * replies it waits for. Infinity turns flow control off.
   */
  maxInFlightBytes?: number;
}

/** Handles one-way records and requests. For requests, `reply` must be called exactly once. */
export type RecordHandler = (record: InboundRecord, reply: ReplyFn | undefined) => void;
export type ReplyFn = (status: number, payload: Uint8Array) => void;

interface Pending {
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  expires: number;
  /** Destination and record size, for the flow-control credit. */
  to: number;
  size: number;
  /** Holds credit (was appended to an envelope), as opposed to waiting for it. */
  sent: boolean;
}

/**
 * Per destination: request bytes in flight, and the requests waiting for credit, kept
 * encoded in an arena (u32 toIncarnation, then the 12-byte record header and the payload):
 * one copy per waiting request, no object or ArrayBuffer per request.
 */
interface Credit {
  inFlight: number;
  arena: Buffer;
  head: number;
  tail: number;
}

const WAIT_PREFIX = 4;

interface OpenBatch {
  to: number;
  toIncarnation: number;
  buf: Buffer;
  bytes: number;
  count: number;
  /** Request ids carried (failed together when the envelope cannot be sent). */
  reqIds: number[];
  onFail: ((err: Error) => void)[] | undefined;
}

/** Deadlines are wall-clock ms mod 2^32 (envelope.ts deadlineIn / msLeft). */
const WRAP = 0x1_0000_0000;

/**
 * A process's address on the transport: batches outbound records per destination into
 * envelopes (written as they are posted), decodes inbound ones in place (dropping foreign,
 * stale and expired ones with a count), matches replies to requests by id with a timeout,
 * and keeps the request bytes in flight per destination under `maxInFlightBytes`.
 */
export class Endpoint {
  readonly counters: EndpointCounters = {
    garbage: 0, stale: 0, expired: 0, late: 0, requestsSent: 0, repliesReceived: 0, timeouts: 0, envelopesSent: 0, recordsSent: 0,
  };
  readonly mtype: number;
  readonly incarnation: number;
  private readonly maxBatchBytes: number;
  private readonly batches = new Map<number, Map<number, OpenBatch>>();
  private openCount = 0;
  private last: OpenBatch | undefined;
  private flushScheduled = false;
  private readonly pending = new Map<number, Pending>();
  private nextReqId: number;
  private sweepTimer: NodeJS.Timeout | undefined;
  private receiverOf: Receiver | undefined;
  private handler: RecordHandler | undefined;
  private closed = false;
  private readonly flushNow = (): void => this.flush();
  private readonly credits = new Map<number, Credit>();
  /** Largest expiry in the pending Map's order; requests expiring sooner go to `early`. */
  private lastExpires = 0;
  private readonly early: { reqId: number; expires: number }[] = [];
  private readonly maxInFlight: number;

  constructor(
    readonly transport: MessageTransport,
    options: EndpointOptions,
  ) {
    // Default: 3/4 of the queue's capacity (12 KiB of 16): room for two envelopes in flight
    // (so both sides work at once), and the replies to them when they are no bigger.
    this.maxInFlight = options.maxInFlightBytes ?? Math.floor(transport.stat().capacity * 0.75);
    this.mtype = options.mtype;
    this.incarnation = options.incarnation;
    const max = Math.min(options.maxBatchBytes, transport.maxMessageBytes);
    if (max < HEADER_BYTES + RECORD_HEADER_BYTES) throw new IpcError('EINVAL', `maxBatchBytes ${max} cannot hold one record`);
    this.maxBatchBytes = max;
    this.nextReqId = 1 + Math.floor(Math.random() * 0x7fff_ffff);
    this.sweepTimer = setInterval(() => this.sweep(), options.timeoutSweepMs ?? 20);
    this.sweepTimer.unref();
  }

  /** Starts receiving this endpoint's mtype. `handler` sees one-way records and requests. */
  start(handler: RecordHandler): Receiver {
    if (this.receiverOf) throw new IpcError('EBUSY', 'endpoint already started');
    this.handler = handler;
    this.receiverOf = this.transport.receive(this.mtype, (batch) => this.onBatch(batch));
    return this.receiverOf;
  }

  /** The receiver of this endpoint's mtype, once started. */
  get receiver(): Receiver | undefined {
    return this.receiverOf;
  }

  /** Sends a one-way record (or a reply). Errors that happen at flush time go to `onFail`. */
  post(to: number, record: OutboundRecord, toIncarnation = 0, onFail?: (err: Error) => void): void {
    if (this.closed) throw new IpcError('TRANSPORT_CLOSED', 'endpoint closed');
    const b = this.append(to, toIncarnation, record.kind, record.status ?? 0, record.reqId ?? 0, record.deadline ?? 0, record.payload);
    if (onFail) (b.onFail ??= []).push(onFail);
  }

  /**
   * Sends a request and resolves with its reply, or rejects with RequestError: TIMEOUT when
   * no reply came in `timeoutMs` (waiting for flow-control credit included), UNAVAILABLE when
   * it could not be sent.
   */
  request(to: number, kind: number, payload: Uint8Array, timeoutMs: number, toIncarnation = 0): Promise<Reply> {
    const reqId = this.takeReqId();
    const now = Date.now();
    return new Promise<Reply>((resolve, reject) => {
      if (this.closed) {
        reject(new RequestError('UNAVAILABLE', `request to ${to} could not be sent: endpoint closed`));
        return;
      }
      const size = RECORD_HEADER_BYTES + payload.byteLength;
      if (payload.byteLength > MAX_PAYLOAD_BYTES || HEADER_BYTES + size > this.transport.maxMessageBytes) {
        reject(new RequestError('UNAVAILABLE', `request to ${to} could not be sent: record of ${size} bytes cannot fit one message`));
        return;
      }
      const deadline = (now + timeoutMs) % WRAP || 1;
      let credit = this.credits.get(to);
      if (!credit) this.credits.set(to, (credit = { inFlight: 0, arena: Buffer.allocUnsafe(0), head: 0, tail: 0 }));
      const expires = now + timeoutMs;
      const p: Pending = { resolve, reject, expires, to, size, sent: false };
      this.pending.set(reqId, p);
      if (expires >= this.lastExpires) this.lastExpires = expires;
      else this.insertEarly(reqId, expires);
      this.counters.requestsSent++;
      if (credit.tail > credit.head || (credit.inFlight > 0 && credit.inFlight + size > this.maxInFlight)) {
        // No credit: wait here, encoded (the caller may reuse its payload buffer).
        const need = WAIT_PREFIX + size;
        if (credit.tail + need > credit.arena.length) {
          const live = credit.tail - credit.head;
          const bigger = Buffer.allocUnsafe(Math.max(live + need, (live + need) * 2, 4096));
          credit.arena.copy(bigger, 0, credit.head, credit.tail);
          credit.arena = bigger;
          credit.head = 0;
          credit.tail = live;
        }
        const a = credit.arena;
        const at = credit.tail;
        a.writeUInt32LE(toIncarnation >>> 0, at);
        a[at + 4] = kind;
        a[at + 5] = 0;
        a.writeUInt16LE(payload.byteLength, at + 6);
        a.writeUInt32LE(reqId >>> 0, at + 8);
        a.writeUInt32LE(deadline >>> 0, at + 12);
        a.set(payload, at + WAIT_PREFIX + RECORD_HEADER_BYTES);
        credit.tail = at + need;
        return;
      }
      credit.inFlight += size;
      p.sent = true;
      this.append(to, toIncarnation, kind, 0, reqId, deadline, payload).reqIds.push(reqId);
    });
  }

  /** A request is over (replied, timed out, failed): return its credit, send what waited. */
  private release(p: Pending): void {
    const credit = this.credits.get(p.to);
    if (!credit) return;
    if (p.sent) credit.inFlight -= p.size;
    p.sent = false;
    const a = credit.arena;
    while (credit.head < credit.tail) {
      const at = credit.head;
      const len = a.readUInt16LE(at + 6);
      const reqId = a.readUInt32LE(at + 8);
      const next = at + WAIT_PREFIX + RECORD_HEADER_BYTES + len;
      const q = this.pending.get(reqId);
      if (q === undefined) {
        credit.head = next; // timed out while waiting
        continue;
      }
      if (credit.inFlight > 0 && credit.inFlight + q.size > this.maxInFlight) break;
      credit.head = next;
      credit.inFlight += q.size;
      q.sent = true;
      const b = this.batchFor(p.to, a.readUInt32LE(at), q.size);
      a.copy(b.buf, b.bytes, at + WAIT_PREFIX, next);
      b.bytes += q.size;
      b.count++;
      b.reqIds.push(reqId);
    }
    if (credit.head === credit.tail) credit.head = credit.tail = 0;
  }

  private fail(reqId: number, to: number, err: Error): void {
    const p = this.pending.get(reqId);
    if (!p) return;
    this.pending.delete(reqId);
    p.reject(new RequestError('UNAVAILABLE', `request to ${to} could not be sent: ${err.message}`, { cause: err }));
    this.release(p);
  }

  /** Appends one record to the open envelope for (to, toIncarnation); returns that batch. */
  private append(to: number, toIncarnation: number, kind: number, status: number, reqId: number, deadline: number, payload: Uint8Array): OpenBatch {
    const len = payload.byteLength;
    const size = RECORD_HEADER_BYTES + len;
    if (len > MAX_PAYLOAD_BYTES || HEADER_BYTES + size > this.transport.maxMessageBytes) {
      throw new IpcError('E2BIG', `record of ${size} bytes cannot fit one message (msgmax ${this.transport.maxMessageBytes})`);
    }
    const b = this.batchFor(to, toIncarnation, size);
    const buf = b.buf;
    const at = b.bytes;
    buf[at] = kind;
    buf[at + 1] = status;
    buf.writeUInt16LE(len, at + 2);
    buf.writeUInt32LE(reqId >>> 0, at + 4);
    buf.writeUInt32LE(deadline >>> 0, at + 8);
    buf.set(payload, at + RECORD_HEADER_BYTES);
    b.bytes = at + size;
    b.count++;
    return b;
  }

  /** The open envelope for (to, toIncarnation) with room for `size` more bytes. */
  private batchFor(to: number, toIncarnation: number, size: number): OpenBatch {
    let b = this.last;
    if (!b || b.to !== to || b.toIncarnation !== toIncarnation) b = this.batches.get(to)?.get(toIncarnation);
    if (b && (b.bytes + size > b.buf.length || b.count >= MAX_RECORDS)) {
      this.detach(b);
      this.sendBatch(b);
      b = undefined;
    }
    if (!b) b = this.open(to, toIncarnation, size);
    this.last = b;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushNow);
    }
    return b;
  }

  private open(to: number, toIncarnation: number, firstRecord: number): OpenBatch {
    const cap = Math.max(this.maxBatchBytes, HEADER_BYTES + firstRecord);
    const b: OpenBatch = { to, toIncarnation, buf: Buffer.allocUnsafe(cap), bytes: HEADER_BYTES, count: 0, reqIds: [], onFail: undefined };
    let m = this.batches.get(to);
    if (!m) this.batches.set(to, (m = new Map()));
    m.set(toIncarnation, b);
    this.openCount++;
    return b;
  }

  /** Takes a full envelope out of the open set before it is sent. */
  private detach(b: OpenBatch): void {
    const m = this.batches.get(b.to);
    if (m?.get(b.toIncarnation) === b) {
      m.delete(b.toIncarnation);
      if (m.size === 0) this.batches.delete(b.to);
      this.openCount--;
    }
    if (this.last === b) this.last = undefined;
  }

  /** Sends every open envelope now (normally done once per event-loop turn). */
  flush(): void {
    this.flushScheduled = false;
    if (this.openCount === 0) return;
    const all: OpenBatch[] = [];
    for (const m of this.batches.values()) for (const b of m.values()) all.push(b);
    this.batches.clear();
    this.openCount = 0;
    this.last = undefined;
    for (const b of all) this.sendBatch(b);
  }

  private sendBatch(b: OpenBatch): void {
    const buf = b.buf;
    writeHeader(buf, { from: this.mtype, fromIncarnation: this.incarnation, toIncarnation: b.toIncarnation }, b.count);
    try {
      this.transport.send(b.to, buf.subarray(0, b.bytes));
      this.counters.envelopesSent++;
      this.counters.recordsSent += b.count;
    } catch (err) {
      for (const id of b.reqIds) this.fail(id, b.to, err as Error);
      if (b.onFail) for (const f of b.onFail) f(err as Error);
    }
  }

  private takeReqId(): number {
    const id = this.nextReqId;
    this.nextReqId = id >= 0xffff_fffe ? 1 : id + 1;
    return id;
  }

  private onBatch(batch: readonly ReceivedMessage[]): void {
    const now = Date.now();
    for (const msg of batch) this.onEnvelope(msg.body, now);
  }

  /** One envelope, decoded in place: no record array, one record object per handled request. */
  private onEnvelope(body: Buffer, now: number): void {
    const count = checkEnvelope(body);
    if (typeof count !== 'number') {
      this.counters.garbage++;
      return;
    }
    const to = body.readUInt32LE(16);
    if (to !== 0 && to !== this.incarnation) {
      this.counters.stale++;
      return;
    }
    const from = body.readUInt32LE(8);
    const fromIncarnation = body.readUInt32LE(12);
    const nowWrapped = now % WRAP;
    let at = HEADER_BYTES;
    for (let i = 0; i < count; i++) {
      const kind = body[at]!;
      const len = body.readUInt16LE(at + 2);
      const reqId = body.readUInt32LE(at + 4);
      const start = at + RECORD_HEADER_BYTES;
      at = start + len;
      if (reqId !== 0 && isReplyKind(kind)) {
        const p = this.pending.get(reqId);
        if (!p) {
          this.counters.late++;
          continue;
        }
        this.pending.delete(reqId);
        this.counters.repliesReceived++;
        p.resolve({ status: body[start - RECORD_HEADER_BYTES + 1]!, payload: body.subarray(start, at), from, fromIncarnation });
        this.release(p);
        continue;
      }
      const deadline = body.readUInt32LE(start - 4);
      if (deadline !== 0 && ((deadline - nowWrapped) | 0) < 0) {
        this.counters.expired++;
        continue;
      }
      const handler = this.handler;
      if (!handler) continue;
      const rec: InboundRecord = { kind, status: body[start - RECORD_HEADER_BYTES + 1]!, reqId, deadline, payload: body.subarray(start, at), from, fromIncarnation };
      if (reqId === 0) {
        handler(rec, undefined);
        continue;
      }
      let replied = false;
      handler(rec, (status, payload) => {
        if (replied || this.closed) return;
        replied = true;
        try {
          this.append(from, fromIncarnation, replyKindOf(kind), status, reqId, 0, payload);
        } catch {
          // The asker's own timeout answers its client.
        }
      });
    }
  }

  private insertEarly(reqId: number, expires: number): void {
    const q = this.early;
    let lo = 0;
    let hi = q.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (q[mid]!.expires <= expires) lo = mid + 1;
      else hi = mid;
    }
    q.splice(lo, 0, { reqId, expires });
  }

  private expire(id: number, p: Pending): void {
    this.pending.delete(id);
    this.counters.timeouts++;
    p.reject(new RequestError('TIMEOUT', 'no reply in time'));
    this.release(p);
  }

  private sweep(): void {
    const now = Date.now();
    // Map order is expiry order except for the `early` ones: an entry that expires later than
    // `now` is followed only by later ones or by early ones, which the list below covers.
    for (const [id, p] of this.pending) {
      if (p.expires > now) break;
      this.expire(id, p);
    }
    let n = 0;
    for (const e of this.early) {
      if (e.expires > now) break;
      n++;
      const p = this.pending.get(e.reqId);
      if (p && p.expires === e.expires) this.expire(e.reqId, p);
    }
    if (n > 0) this.early.splice(0, n);
  }

  get pendingRequests(): number {
    return this.pending.size;
  }

  /** Rejects what is pending (UNAVAILABLE), stops receiving. Does not close the transport. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    for (const [, p] of this.pending) p.reject(new RequestError('UNAVAILABLE', 'endpoint closed'));
    this.pending.clear();
    await this.receiverOf?.close();
  }
}

/** Reply kinds have the high bit set: kind | 0x80 answers kind. */
export const REPLY_BIT = 0x80;
export const isReplyKind = (kind: number): boolean => (kind & REPLY_BIT) !== 0;
export const replyKindOf = (kind: number): number => kind | REPLY_BIT;
