import { IpcError } from './ipc-error';
import {
  HEADER_BYTES,
  MAX_PAYLOAD_BYTES,
  MAX_RECORDS,
  RECORD_HEADER_BYTES,
  decodeEnvelope,
  deadlineIn,
  msLeft,
  writeHeader,
  writeRecord,
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
}

/** Handles one-way records and requests. For requests, `reply` must be called exactly once. */
export type RecordHandler = (record: InboundRecord, reply: ReplyFn | undefined) => void;
export type ReplyFn = (status: number, payload: Uint8Array) => void;

interface Pending {
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  expires: number;
}

interface OpenBatch {
  to: number;
  toIncarnation: number;
  records: OutboundRecord[];
  bytes: number;
  onFail: ((err: Error) => void)[];
}

/**
 * A process's address on the transport: batches outbound records per destination into
 * envelopes, decodes inbound ones (dropping foreign, stale and expired ones with a count),
 * and matches replies to requests by id with a timeout.
 */
export class Endpoint {
  readonly counters: EndpointCounters = {
    garbage: 0, stale: 0, expired: 0, late: 0, requestsSent: 0, repliesReceived: 0, timeouts: 0, envelopesSent: 0, recordsSent: 0,
  };
  readonly mtype: number;
  readonly incarnation: number;
  private readonly maxBatchBytes: number;
  private readonly batches = new Map<string, OpenBatch>();
  private flushScheduled = false;
  private readonly pending = new Map<number, Pending>();
  /**
   * Request ids sorted by expiry, so the sweep stops at the first one still running. Usually
   * an append (one timeout per call site); a shorter timeout after a longer one is inserted.
   */
  private readonly expiry: { reqId: number; expires: number }[] = [];
  private expiryHead = 0;
  private nextReqId: number;
  private sweepTimer: NodeJS.Timeout | undefined;
  private receiverOf: Receiver | undefined;
  private handler: RecordHandler | undefined;
  private closed = false;

  constructor(
    readonly transport: MessageTransport,
    options: EndpointOptions,
  ) {
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

  /** Sends a one-way record. Errors that happen at flush time go to `onFail`. */
  post(to: number, record: OutboundRecord, toIncarnation = 0, onFail?: (err: Error) => void): void {
    if (this.closed) throw new IpcError('TRANSPORT_CLOSED', 'endpoint closed');
    const size = RECORD_HEADER_BYTES + record.payload.byteLength;
    if (record.payload.byteLength > MAX_PAYLOAD_BYTES || HEADER_BYTES + size > this.transport.maxMessageBytes) {
      throw new IpcError('E2BIG', `record of ${size} bytes cannot fit one message (msgmax ${this.transport.maxMessageBytes})`);
    }
    const key = `${to}:${toIncarnation}`;
    let batch = this.batches.get(key);
    if (batch && (batch.bytes + size > this.maxBatchBytes || batch.records.length >= MAX_RECORDS)) {
      this.batches.delete(key);
      this.sendBatch(batch);
      batch = undefined;
    }
    if (!batch) {
      batch = { to, toIncarnation, records: [], bytes: HEADER_BYTES, onFail: [] };
      this.batches.set(key, batch);
    }
    batch.records.push(record);
    batch.bytes += size;
    if (onFail) batch.onFail.push(onFail);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // Everything posted in this turn of the event loop shares envelopes.
      setImmediate(() => this.flush());
    }
  }

  /** Sends a request and resolves with its reply, or rejects with RequestError (TIMEOUT, UNAVAILABLE). */
  request(to: number, kind: number, payload: Uint8Array, timeoutMs: number, toIncarnation = 0): Promise<Reply> {
    const reqId = this.takeReqId();
    return new Promise<Reply>((resolve, reject) => {
      const expires = Date.now() + timeoutMs;
      const fail = (err: Error): void => {
        if (this.pending.delete(reqId)) reject(new RequestError('UNAVAILABLE', `request to ${to} could not be sent: ${err.message}`, { cause: err }));
      };
      this.pending.set(reqId, { resolve, reject, expires });
      this.insertExpiry(reqId, expires);
      try {
        this.post(to, { kind, reqId, deadline: deadlineIn(timeoutMs), payload }, toIncarnation, fail);
      } catch (err) {
        fail(err as Error);
        return;
      }
      this.counters.requestsSent++;
    });
  }

  /** Sends everything batched so far. */
  flush(): void {
    this.flushScheduled = false;
    if (this.batches.size === 0) return;
    const batches = [...this.batches.values()];
    this.batches.clear();
    for (const b of batches) this.sendBatch(b);
  }

  private sendBatch(batch: OpenBatch): void {
    const buf = Buffer.allocUnsafe(batch.bytes);
    writeHeader(buf, { from: this.mtype, fromIncarnation: this.incarnation, toIncarnation: batch.toIncarnation }, batch.records.length);
    let at = HEADER_BYTES;
    for (const r of batch.records) at = writeRecord(buf, at, r);
    try {
      this.transport.send(batch.to, buf);
      this.counters.envelopesSent++;
      this.counters.recordsSent += batch.records.length;
    } catch (err) {
      for (const f of batch.onFail) f(err as Error);
    }
  }

  private insertExpiry(reqId: number, expires: number): void {
    const q = this.expiry;
    let lo = this.expiryHead;
    let hi = q.length;
    if (lo === hi || q[hi - 1]!.expires <= expires) {
      q.push({ reqId, expires });
      return;
    }
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (q[mid]!.expires <= expires) lo = mid + 1;
      else hi = mid;
    }
    q.splice(lo, 0, { reqId, expires });
  }

  private takeReqId(): number {
    const id = this.nextReqId;
    this.nextReqId = id >= 0xffff_fffe ? 1 : id + 1;
    return id;
  }

  private onBatch(batch: readonly ReceivedMessage[]): void {
    for (const msg of batch) {
      const decoded = decodeEnvelope(msg.body);
      if (!decoded.ok) {
        this.counters.garbage++;
        continue;
      }
      const to = decoded.header.toIncarnation;
      if (to !== 0 && to !== this.incarnation) {
        this.counters.stale++;
        continue;
      }
      for (const rec of decoded.records) this.onRecord(rec);
    }
  }

  private onRecord(rec: InboundRecord): void {
    if (rec.reqId !== 0 && isReplyKind(rec.kind)) {
      const p = this.pending.get(rec.reqId);
      if (!p) {
        this.counters.late++;
        return;
      }
      this.pending.delete(rec.reqId);
      this.counters.repliesReceived++;
      p.resolve({ status: rec.status, payload: rec.payload, from: rec.from, fromIncarnation: rec.fromIncarnation });
      return;
    }
    if (msLeft(rec.deadline) < 0) {
      this.counters.expired++;
      return;
    }
    const handler = this.handler;
    if (!handler) return;
    if (rec.reqId === 0) {
      handler(rec, undefined);
      return;
    }
    let replied = false;
    handler(rec, (status, payload) => {
      if (replied || this.closed) return;
      replied = true;
      try {
        this.post(rec.from, { kind: replyKindOf(rec.kind), status, reqId: rec.reqId, payload }, rec.fromIncarnation);
      } catch {
        // The asker's own timeout answers its client; nothing else can be done here.
      }
    });
  }

  private sweep(): void {
    const now = Date.now();
    while (this.expiryHead < this.expiry.length) {
      const e = this.expiry[this.expiryHead]!;
      if (e.expires > now) break;
      this.expiryHead++;
      const p = this.pending.get(e.reqId);
      if (p && p.expires === e.expires) {
        this.pending.delete(e.reqId);
        this.counters.timeouts++;
        p.reject(new RequestError('TIMEOUT', 'no reply in time'));
      }
    }
    if (this.expiryHead > 4096 && this.expiryHead * 2 > this.expiry.length) {
      this.expiry.splice(0, this.expiryHead);
      this.expiryHead = 0;
    }
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
