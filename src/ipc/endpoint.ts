import { IpcError } from './ipc-error';
import { clusterClock } from './cluster-clock';
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

/**
 * Why a request got no reply. `clientCode` maps it onto PROTOCOL.md's codes. UNAVAILABLE
 * means the request was never sent, unless `inFlight`: it had been sent when the transport
 * went down, so it may have reached its destination and taken effect (as after a TIMEOUT).
 */
export class RequestError extends IpcError {
  override readonly name = 'RequestError';
  readonly inFlight: boolean;
  constructor(
    code: 'TIMEOUT' | 'UNAVAILABLE',
    message: string,
    options?: { cause?: unknown; inFlight?: boolean },
  ) {
    super(code, message, undefined, options?.cause === undefined ? undefined : { cause: options.cause });
    this.inFlight = options?.inFlight ?? false;
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
  /** Requests failed UNAVAILABLE at once because the transport was down (or went down with them pending). */
  unreachable: number;
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
   * (Sharing it among the busy destinations, so that N shards cannot oversubscribe the one
   * queue, was measured and cost 20-50% of the throughput at 4 and 8 shards: not adopted.)
   * Requests and replies share the queue: a requester that fills it leaves no room for the
   * replies it waits for. Infinity turns flow control off.
   */
  maxInFlightBytes?: number;
  /**
   * Adaptive batching: envelopes carrying requests that may be outstanding (sent, not wholly
   * answered) to one destination. Requests beyond wait and go together in the next envelope,
   * so under load envelopes grow instead of multiplying, and a lone request still goes at
   * once. Each envelope costs both sides a thread wake-up and a hand-over, the largest fixed
   * cost on the path. Default 2 (both sides busy at once); Infinity: one envelope per turn.
   */
  maxEnvelopesInFlight?: number;
  /**
   * An envelope of requests counts toward `maxEnvelopesInFlight` for at most this long after
   * it was opened (default 200 ms); its requests stay pending, and its bytes count toward
   * `maxInFlightBytes`, until each is answered or times out. So an envelope lost on the way
   * (a reply that never comes) holds up its destination's batching for this long, not for
   * the request timeout (docs/ipc.md, "Adaptive batching").
   */
  envelopeExpiryMs?: number;
}

/** Handles one-way records and requests. For requests, `reply` must be called exactly once. */
export type RecordHandler = (record: InboundRecord, reply: ReplyFn | undefined) => void;
export type ReplyFn = (status: number, payload: Uint8Array) => void;

/**
 * Where a request's outcome goes: exactly one of the two methods is called, once, never
 * synchronously inside `call()`. The reply payload is body[start, end), valid only during
 * the call (copy what you keep). No Promise and no closure per request: `ctx` is whatever
 * the caller needs to finish the request.
 */
export interface ReplySink<C> {
  onReply(ctx: C, status: number, body: Buffer, start: number, end: number, from: number, fromIncarnation: number): void;
  onFailure(ctx: C, err: RequestError): void;
}

/** The promise form of a request is a sink like any other. */
const promiseSink: ReplySink<{ resolve: (r: Reply) => void; reject: (e: Error) => void }> = {
  onReply(ctx, status, body, start, end, from, fromIncarnation) {
    ctx.resolve({ status, payload: body.subarray(start, end), from, fromIncarnation });
  },
  onFailure(ctx, err) {
    ctx.reject(err);
  },
};

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
  /** Envelopes carrying requests that are open or sent, not yet wholly answered, and not expired. */
  envelopes: number;
  /** Per envelope (by its number) with requests still unanswered: how many. */
  unanswered: Map<number, number>;
  /** The envelopes counted in `envelopes`, with when each was opened (ms), oldest first. */
  counted: Map<number, number>;
  nextEnvelope: number;
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
  /** Its number in its destination's envelope credit, once it carries a request (0: none). */
  envelope: number;
  onFail: ((err: Error) => void)[] | undefined;
}

/**
 * Deadlines are cluster-time ms mod 2^32 (envelope.ts deadlineIn / msLeft): Date.now() plus
 * clusterClock.offsetMs (0 unless this host's clock was measured off the collector's). Local
 * expiries (slotExpires, envelope credit) stay on the local clock: they never leave the process.
 */
const WRAP = 0x1_0000_0000;

/**
 * Pending requests live in a slot table (parallel arrays, no object per request). A request
 * id is generation * 2^20 + slot: the slot finds the request without a hash lookup, and the
 * generation (1..4095, bumped at each use of the slot) together with first-in-first-out slot
 * reuse means an id comes back only after millions of requests. Replies also carry their
 * request's deadline and are dropped once it has passed, so a reply that is very late
 * (a stopped process resumed) can never be taken for another request's answer.
 */
const SLOT_BITS = 20;
const SLOT_SPAN = 1 << SLOT_BITS;
const SLOT_MASK = SLOT_SPAN - 1;
const MAX_GEN = 0xfff;
const INITIAL_SLOTS = 4096;

/** Requests of one timeout length, in send order: their expiries are in order too. */
interface TimeoutFifo {
  ids: number[];
  head: number;
}

/**
 * A process's address on the transport: batches outbound records per destination into
 * envelopes (written as they are posted), decodes inbound ones in place (dropping foreign,
 * stale and expired ones with a count), matches replies to requests by id with a timeout,
 * and keeps the request bytes in flight per destination under `maxInFlightBytes`.
 */
export class Endpoint {
  readonly counters: EndpointCounters = {
    garbage: 0, stale: 0, expired: 0, late: 0, requestsSent: 0, repliesReceived: 0, timeouts: 0, unreachable: 0, envelopesSent: 0, recordsSent: 0,
  };
  readonly mtype: number;
  readonly incarnation: number;
  private readonly maxBatchBytes: number;
  private readonly batches = new Map<number, Map<number, OpenBatch>>();
  private openCount = 0;
  private last: OpenBatch | undefined;
  private flushScheduled = false;
  /** Runs only while requests are pending: an idle process is not woken 50 times a second. */
  private sweepTimer: NodeJS.Timeout | undefined;
  private readonly sweepMs: number;
  private receiverOf: Receiver | undefined;
  private handler: RecordHandler | undefined;
  private closed = false;
  private readonly flushNow = (): void => this.flush();
  private readonly credits = new Map<number, Credit>();
  private readonly maxInFlight: number;
  private readonly maxEnvelopes: number;
  private readonly envelopeExpiryMs: number;
  /** The transport said nothing can reach anyone now (a NATS connection down): requests fail at once. */
  private down = false;
  private readonly stopWatching: (() => void) | undefined;

  // The slot table (see SLOT_BITS).
  private slotIds = new Uint32Array(INITIAL_SLOTS);
  private slotGen = new Uint16Array(INITIAL_SLOTS);
  private slotExpires = new Float64Array(INITIAL_SLOTS);
  private slotTo = new Float64Array(INITIAL_SLOTS);
  private slotSize = new Int32Array(INITIAL_SLOTS);
  /** Holds credit (was appended to an envelope), as opposed to waiting for it. */
  private slotSent = new Uint8Array(INITIAL_SLOTS);
  /** The number of the envelope that carries it (Credit.unanswered). */
  private slotEnvelope = new Float64Array(INITIAL_SLOTS);
  private slotSink: (ReplySink<unknown> | undefined)[] = new Array<ReplySink<unknown> | undefined>(INITIAL_SLOTS).fill(undefined);
  private slotCtx: unknown[] = new Array<unknown>(INITIAL_SLOTS).fill(undefined);
  /** Free slots, first in first out (a ring over `freeRing`). */
  private freeRing = new Int32Array(INITIAL_SLOTS);
  private freeHead = 0;
  private freeCount = 0;
  private slotsUsed = 0;
  private pendingCount = 0;
  private readonly fifos = new Map<number, TimeoutFifo>();

  constructor(
    readonly transport: MessageTransport,
    options: EndpointOptions,
  ) {
    // Default: 3/4 of the queue's capacity (12 KiB of 16): room for two envelopes in flight
    // (so both sides work at once), and the replies to them when they are no bigger.
    this.maxInFlight = options.maxInFlightBytes ?? Math.floor(transport.stat().capacity * 0.75);
    this.maxEnvelopes = options.maxEnvelopesInFlight ?? 2;
    if (!(this.maxEnvelopes >= 1)) throw new IpcError('EINVAL', `maxEnvelopesInFlight ${options.maxEnvelopesInFlight} must be at least 1`);
    this.envelopeExpiryMs = options.envelopeExpiryMs ?? 200;
    if (!(this.envelopeExpiryMs > 0)) throw new IpcError('EINVAL', `envelopeExpiryMs ${options.envelopeExpiryMs} must be positive`);
    this.mtype = options.mtype;
    this.incarnation = options.incarnation;
    const max = Math.min(options.maxBatchBytes, transport.maxMessageBytes);
    if (max < HEADER_BYTES + RECORD_HEADER_BYTES) throw new IpcError('EINVAL', `maxBatchBytes ${max} cannot hold one record`);
    this.maxBatchBytes = max;
    // Generations start at random, so that a restarted process does not reuse the ids of
    // its previous life in the same order (its replies are dropped by incarnation anyway).
    for (let i = 0; i < INITIAL_SLOTS; i++) this.slotGen[i] = 1 + Math.floor(Math.random() * MAX_GEN);
    this.sweepMs = options.timeoutSweepMs ?? 20;
    if (transport.onReachability) {
      this.down = transport.reachable === false;
      this.stopWatching = transport.onReachability((up) => this.onReachability(up));
    }
  }

  /**
   * Requests of these kinds reach the handler even past their deadline; the handler tells
   * (`msLeft(rec.deadline) < 0`) and decides. Only the collector uses it, for HEARTBEAT: a
   * heartbeat from a host whose clock is behind arrives "expired", and answering it is how
   * that host learns its offset (docs/multi-host.md "Clock skew"). Replies are unaffected.
   */
  deliverExpired(kinds: readonly number[]): void {
    this.expiredKinds = kinds.length > 0 ? new Set(kinds) : undefined;
  }
  private expiredKinds: ReadonlySet<number> | undefined;

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
  request(to: number, kind: number, payload: Uint8Array | string, timeoutMs: number, toIncarnation = 0): Promise<Reply> {
    return new Promise<Reply>((resolve, reject) => this.call(to, kind, payload, timeoutMs, promiseSink, { resolve, reject }, toIncarnation));
  }

  /**
   * Sends a request; its outcome goes to `sink` with `ctx` (see ReplySink): the hot path's
   * form of request(), with no Promise per request. A string payload is written as UTF-8
   * straight into the envelope. `prefixU32` (when >= 0) is written as a little-endian u32
   * before the payload (FIND's membership epoch), so the caller need not build a buffer.
   */
  call<C>(to: number, kind: number, payload: Uint8Array | string, timeoutMs: number, sink: ReplySink<C>, ctx: C, toIncarnation = 0, prefixU32 = -1): void {
    if (this.closed) return this.failSoon(sink, ctx, `request to ${to} could not be sent: endpoint closed`);
    if (this.down) {
      this.counters.unreachable++;
      return this.failSoon(sink, ctx, `request to ${to} could not be sent: the transport is down (no connection to the NATS server)`);
    }
    const len = (typeof payload === 'string' ? Buffer.byteLength(payload, 'utf8') : payload.byteLength) + (prefixU32 >= 0 ? 4 : 0);
    const size = RECORD_HEADER_BYTES + len;
    if (len > MAX_PAYLOAD_BYTES || HEADER_BYTES + size > this.transport.maxMessageBytes) {
      return this.failSoon(sink, ctx, `request to ${to} could not be sent: record of ${size} bytes cannot fit one message`);
    }
    const slot = this.takeSlot();
    if (slot < 0) return this.failSoon(sink, ctx, `request to ${to} could not be sent: ${SLOT_SPAN} requests in flight`);
    const now = Date.now();
    const gen = this.slotGen[slot]!;
    const reqId = gen * SLOT_SPAN + slot;
    const deadline = (now + clusterClock.offsetMs + timeoutMs) % WRAP || 1;
    this.slotIds[slot] = reqId;
    this.slotExpires[slot] = now + timeoutMs;
    this.slotTo[slot] = to;
    this.slotSize[slot] = size;
    this.slotSent[slot] = 0;
    this.slotSink[slot] = sink as ReplySink<unknown>;
    this.slotCtx[slot] = ctx;
    this.pendingCount++;
    if (this.sweepTimer === undefined) {
      this.sweepTimer = setInterval(this.sweepNow, this.sweepMs);
      this.sweepTimer.unref();
    }
    let fifo = this.fifos.get(timeoutMs);
    if (!fifo) this.fifos.set(timeoutMs, (fifo = { ids: [], head: 0 }));
    fifo.ids.push(reqId);
    this.counters.requestsSent++;
    let credit = this.credits.get(to);
    if (!credit) {
      credit = { inFlight: 0, arena: Buffer.allocUnsafe(0), head: 0, tail: 0, envelopes: 0, unanswered: new Map(), counted: new Map(), nextEnvelope: 1 };
      this.credits.set(to, credit);
    }
    if (credit.tail > credit.head || (credit.inFlight > 0 && credit.inFlight + size > this.maxInFlight) || !this.envelopeRoom(credit, to, toIncarnation, size)) {
      // No credit: wait here, encoded (the caller may reuse its payload buffer).
      const need = WAIT_PREFIX + size;
      if (credit.tail + need > credit.arena.length) {
        const live = credit.tail - credit.head;
        const bigger = Buffer.allocUnsafe(Math.max((live + need) * 2, 4096));
        credit.arena.copy(bigger, 0, credit.head, credit.tail);
        credit.arena = bigger;
        credit.head = 0;
        credit.tail = live;
      }
      const a = credit.arena;
      const at = credit.tail;
      a.writeUInt32LE(toIncarnation >>> 0, at);
      writeRecordHeader(a, at + WAIT_PREFIX, kind, 0, len, reqId, deadline);
      writePayload(a, at + WAIT_PREFIX + RECORD_HEADER_BYTES, payload, prefixU32);
      credit.tail = at + need;
      return;
    }
    credit.inFlight += size;
    this.slotSent[slot] = 1;
    const b = this.requestBatch(credit, to, toIncarnation, size, slot);
    writeRecordHeader(b.buf, b.bytes, kind, 0, len, reqId, deadline);
    writePayload(b.buf, b.bytes + RECORD_HEADER_BYTES, payload, prefixU32);
    b.bytes += size;
    b.count++;
    b.reqIds.push(reqId);
  }

  /** May a request of `size` bytes join an envelope to `to` now (adaptive batching)? */
  private envelopeRoom(credit: Credit, to: number, toIncarnation: number, size: number): boolean {
    if (credit.envelopes < this.maxEnvelopes) return true;
    // At the limit: only the open envelope that carries requests already may take more.
    const b = this.last !== undefined && this.last.to === to && this.last.toIncarnation === toIncarnation ? this.last : this.batches.get(to)?.get(toIncarnation);
    return b !== undefined && b.envelope !== 0 && b.bytes + size <= b.buf.length && b.count < MAX_RECORDS;
  }

  /** The open envelope a request joins; counts it in the envelope credit, and the request in it. */
  private requestBatch(credit: Credit, to: number, toIncarnation: number, size: number, slot: number): OpenBatch {
    const b = this.batchFor(to, toIncarnation, size);
    if (b.envelope === 0) {
      b.envelope = credit.nextEnvelope++;
      credit.envelopes++;
      credit.unanswered.set(b.envelope, 0);
      credit.counted.set(b.envelope, Date.now());
    }
    credit.unanswered.set(b.envelope, credit.unanswered.get(b.envelope)! + 1);
    this.slotEnvelope[slot] = b.envelope;
    return b;
  }

  /**
   * A request that cannot even be queued still fails asynchronously, as the contract says: on
   * the next turn (not a microtask), so that a caller retrying at once in a loop while the
   * transport is down still lets the event loop read the connection's news.
   */
  private failSoon<C>(sink: ReplySink<C>, ctx: C, message: string): void {
    setImmediate(() => sink.onFailure(ctx, new RequestError('UNAVAILABLE', message)));
  }

  private takeSlot(): number {
    if (this.freeCount > 0) {
      const slot = this.freeRing[this.freeHead]!;
      this.freeHead = (this.freeHead + 1) % this.freeRing.length;
      this.freeCount--;
      return slot;
    }
    if (this.slotsUsed === this.slotIds.length && !this.growSlots()) return -1;
    return this.slotsUsed++;
  }

  private growSlots(): boolean {
    const n = this.slotIds.length;
    if (n >= SLOT_SPAN) return false;
    const m = Math.min(n * 2, SLOT_SPAN);
    const grow = <T extends Uint32Array | Uint16Array | Float64Array | Int32Array | Uint8Array>(a: T, make: (k: number) => T): T => {
      const b = make(m);
      b.set(a);
      return b;
    };
    this.slotIds = grow(this.slotIds, (k) => new Uint32Array(k));
    this.slotGen = grow(this.slotGen, (k) => new Uint16Array(k));
    for (let i = n; i < m; i++) this.slotGen[i] = 1 + Math.floor(Math.random() * MAX_GEN);
    this.slotExpires = grow(this.slotExpires, (k) => new Float64Array(k));
    this.slotTo = grow(this.slotTo, (k) => new Float64Array(k));
    this.slotSize = grow(this.slotSize, (k) => new Int32Array(k));
    this.slotSent = grow(this.slotSent, (k) => new Uint8Array(k));
    this.slotEnvelope = grow(this.slotEnvelope, (k) => new Float64Array(k));
    for (let i = n; i < m; i++) {
      this.slotSink.push(undefined);
      this.slotCtx.push(undefined);
    }
    // The free ring is empty whenever we grow (slots are taken from it first).
    this.freeRing = new Int32Array(m);
    this.freeHead = 0;
    return true;
  }

  /** The slot of a pending request id, or -1. */
  private slotOf(reqId: number): number {
    const slot = reqId & SLOT_MASK;
    return slot < this.slotsUsed && this.slotIds[slot] === reqId && reqId !== 0 ? slot : -1;
  }

  /**
   * Ends a pending request: frees its slot (first in, first out; next generation), returns
   * its credit and sends what waited for it. The caller has read the sink and ctx.
   */
  private finish(slot: number): void {
    const to = this.slotTo[slot]!;
    const sent = this.slotSent[slot] === 1;
    const size = this.slotSize[slot]!;
    this.slotIds[slot] = 0;
    this.slotSink[slot] = undefined;
    this.slotCtx[slot] = undefined;
    const g = this.slotGen[slot]!;
    this.slotGen[slot] = g >= MAX_GEN ? 1 : g + 1;
    this.freeRing[(this.freeHead + this.freeCount) % this.freeRing.length] = slot;
    this.freeCount++;
    this.pendingCount--;
    this.release(to, sent ? size : 0, sent ? this.slotEnvelope[slot]! : 0);
  }

  /** Credit back for `to`; sends the requests that waited for it, in order. */
  private release(to: number, bytes: number, envelope: number): void {
    const credit = this.credits.get(to);
    if (!credit) return;
    credit.inFlight -= bytes;
    if (envelope !== 0) {
      const left = credit.unanswered.get(envelope)! - 1;
      if (left > 0) credit.unanswered.set(envelope, left);
      else {
        credit.unanswered.delete(envelope);
        if (credit.counted.delete(envelope)) credit.envelopes--;
      }
    }
    this.sendWaiting(to, credit);
  }

  /**
   * Envelopes of requests opened more than envelopeExpiryMs ago stop counting toward the
   * envelope credit (one lost on the way must not hold up its destination until the request
   * timeout); what waited for that credit goes out.
   */
  private expireEnvelopes(now: number): void {
    for (const [to, credit] of this.credits) {
      if (credit.envelopes < this.maxEnvelopes) continue;
      let freed = false;
      for (const [envelope, opened] of credit.counted) {
        if (now - opened < this.envelopeExpiryMs) break; // oldest first
        credit.counted.delete(envelope);
        credit.envelopes--;
        freed = true;
      }
      if (freed) this.sendWaiting(to, credit);
    }
  }

  /** Sends the requests that waited for credit to `to`, in order, while there is credit. */
  private sendWaiting(to: number, credit: Credit): void {
    if (this.down) return; // they are failed (onReachability)
    const a = credit.arena;
    while (credit.head < credit.tail) {
      const at = credit.head;
      const len = a.readUInt16LE(at + WAIT_PREFIX + 2);
      const reqId = a.readUInt32LE(at + WAIT_PREFIX + 4);
      const size = RECORD_HEADER_BYTES + len;
      const next = at + WAIT_PREFIX + size;
      const slot = this.slotOf(reqId);
      if (slot < 0) {
        credit.head = next; // timed out while waiting
        continue;
      }
      const toIncarnation = a.readUInt32LE(at);
      if (credit.inFlight > 0 && credit.inFlight + size > this.maxInFlight) break;
      if (!this.envelopeRoom(credit, to, toIncarnation, size)) break;
      credit.head = next;
      credit.inFlight += size;
      this.slotSent[slot] = 1;
      const b = this.requestBatch(credit, to, toIncarnation, size, slot);
      a.copy(b.buf, b.bytes, at + WAIT_PREFIX, next);
      b.bytes += size;
      b.count++;
      b.reqIds.push(reqId);
    }
    if (credit.head === credit.tail) credit.head = credit.tail = 0;
  }

  private fail(reqId: number, to: number, err: Error): void {
    const slot = this.slotOf(reqId);
    if (slot < 0) return;
    const sink = this.slotSink[slot]!;
    const ctx = this.slotCtx[slot];
    this.finish(slot);
    sink.onFailure(ctx, new RequestError('UNAVAILABLE', `request to ${to} could not be sent: ${err.message}`, { cause: err }));
  }

  /** Appends one record to the open envelope for (to, toIncarnation); returns that batch. */
  private append(to: number, toIncarnation: number, kind: number, status: number, reqId: number, deadline: number, payload: Uint8Array): OpenBatch {
    const len = payload.byteLength;
    const size = RECORD_HEADER_BYTES + len;
    if (len > MAX_PAYLOAD_BYTES || HEADER_BYTES + size > this.transport.maxMessageBytes) {
      throw new IpcError('E2BIG', `record of ${size} bytes cannot fit one message (msgmax ${this.transport.maxMessageBytes})`);
    }
    const b = this.batchFor(to, toIncarnation, size);
    writeRecordHeader(b.buf, b.bytes, kind, status, len, reqId, deadline);
    b.buf.set(payload, b.bytes + RECORD_HEADER_BYTES);
    b.bytes += size;
    b.count++;
    return b;
  }

  /** The open envelope for (to, toIncarnation) with room for `size` more bytes. */
  private batchFor(to: number, toIncarnation: number, size: number): OpenBatch {
    let b = this.last;
    if (!b || b.to !== to || b.toIncarnation !== toIncarnation) b = this.batches.get(to)?.get(toIncarnation);
    while (b && (b.bytes + size > b.buf.length || b.count >= MAX_RECORDS)) {
      this.detach(b);
      this.sendBatch(b);
      // A send that failed returned its requests' credit, and requests that waited for it
      // may have gone into a new open envelope meanwhile: join that one, never replace it.
      b = this.batches.get(to)?.get(toIncarnation);
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
    const b: OpenBatch = { to, toIncarnation, buf: Buffer.allocUnsafe(cap), bytes: HEADER_BYTES, count: 0, reqIds: [], onFail: undefined, envelope: 0 };
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
    const nowWrapped = (now + clusterClock.offsetMs) % WRAP;
    let at = HEADER_BYTES;
    for (let i = 0; i < count; i++) {
      const kind = body[at]!;
      const status = body[at + 1]!;
      const len = body.readUInt16LE(at + 2);
      const reqId = body.readUInt32LE(at + 4);
      const deadline = body.readUInt32LE(at + 8);
      const start = at + RECORD_HEADER_BYTES;
      at = start + len;
      const expired = deadline !== 0 && ((deadline - nowWrapped) | 0) < 0;
      if (reqId !== 0 && isReplyKind(kind)) {
        const slot = this.slotOf(reqId);
        if (slot < 0 || expired) {
          // Its request timed out (or is about to: past the deadline the asker has given up).
          this.counters.late++;
          continue;
        }
        if (this.slotTo[slot] !== from) {
          // Not from the mtype the request went to: foreign or forged, never an answer.
          this.counters.garbage++;
          continue;
        }
        const sink = this.slotSink[slot]!;
        const ctx = this.slotCtx[slot];
        this.finish(slot);
        this.counters.repliesReceived++;
        sink.onReply(ctx, status, body, start, at, from, fromIncarnation);
        continue;
      }
      if (expired && (this.expiredKinds === undefined || !this.expiredKinds.has(kind))) {
        this.counters.expired++;
        continue;
      }
      const handler = this.handler;
      if (!handler) continue;
      const rec: InboundRecord = { kind, status, reqId, deadline, payload: body.subarray(start, at), from, fromIncarnation };
      if (reqId === 0) {
        handler(rec, undefined);
        continue;
      }
      let replied = false;
      handler(rec, (replyStatus, payload) => {
        if (replied || this.closed) return;
        replied = true;
        try {
          // The reply carries the request's deadline: past it, the asker drops it unread.
          this.append(from, fromIncarnation, replyKindOf(kind), replyStatus, reqId, deadline, payload);
        } catch {
          // The asker's own timeout answers its client.
        }
      });
    }
  }

  /**
   * The transport went down or came back. Down: every pending request fails now with
   * UNAVAILABLE instead of waiting for its timeout (no reply can come through a dead
   * connection): those still waiting for credit were never sent; the others are marked
   * `inFlight`, since they may have reached their destination before the drop.
   */
  private onReachability(up: boolean): void {
    if (this.closed) return;
    this.down = !up;
    if (up) return;
    for (let slot = 0; slot < this.slotsUsed; slot++) {
      if (this.slotIds[slot] === 0) continue;
      const to = this.slotTo[slot]!;
      const inFlight = this.slotSent[slot] === 1;
      const sink = this.slotSink[slot]!;
      const ctx = this.slotCtx[slot];
      this.finish(slot);
      this.counters.unreachable++;
      const err = inFlight
        ? new RequestError('UNAVAILABLE', `request to ${to}: the connection to the NATS server dropped with it in flight`, { inFlight: true })
        : new RequestError('UNAVAILABLE', `request to ${to} could not be sent: the transport is down (no connection to the NATS server)`);
      sink.onFailure(ctx, err);
    }
    // Every request that waited for credit was among them.
    for (const credit of this.credits.values()) credit.head = credit.tail = 0;
  }

  private expire(slot: number): void {
    const sink = this.slotSink[slot]!;
    const ctx = this.slotCtx[slot];
    this.finish(slot);
    this.counters.timeouts++;
    sink.onFailure(ctx, new RequestError('TIMEOUT', 'no reply in time'));
  }

  private readonly sweepNow = (): void => {
    this.sweep();
    if (this.pendingCount === 0 && this.sweepTimer !== undefined) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = undefined;
    }
  };

  /** Fails every request whose time is up, earliest deadline first across the timeout lengths. */
  private sweep(): void {
    const now = Date.now();
    this.expireEnvelopes(now);
    for (;;) {
      let best: TimeoutFifo | undefined;
      let bestSlot = -1;
      let bestExpires = Infinity;
      for (const fifo of this.fifos.values()) {
        const ids = fifo.ids;
        // Drop the heads that are done (replied, failed).
        while (fifo.head < ids.length && this.slotOf(ids[fifo.head]!) < 0) fifo.head++;
        if (fifo.head > 1024 && fifo.head * 2 > ids.length) {
          ids.splice(0, fifo.head);
          fifo.head = 0;
        } else if (fifo.head === ids.length && fifo.head > 0) {
          ids.length = 0;
          fifo.head = 0;
        }
        if (fifo.head === ids.length) continue;
        const slot = this.slotOf(ids[fifo.head]!);
        const e = this.slotExpires[slot]!;
        if (e <= now && e < bestExpires) {
          best = fifo;
          bestSlot = slot;
          bestExpires = e;
        }
      }
      if (!best) return;
      best.head++;
      this.expire(bestSlot);
    }
  }

  get pendingRequests(): number {
    return this.pendingCount;
  }

  /** Rejects what is pending (UNAVAILABLE), stops receiving. Does not close the transport. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.stopWatching?.();
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    for (let slot = 0; slot < this.slotsUsed; slot++) {
      if (this.slotIds[slot] === 0) continue;
      const sink = this.slotSink[slot]!;
      const ctx = this.slotCtx[slot];
      this.slotIds[slot] = 0;
      this.slotSink[slot] = undefined;
      this.slotCtx[slot] = undefined;
      sink.onFailure(ctx, new RequestError('UNAVAILABLE', 'endpoint closed'));
    }
    this.pendingCount = 0;
    this.fifos.clear();
    await this.receiverOf?.close();
  }
}

function writeRecordHeader(buf: Buffer, at: number, kind: number, status: number, len: number, reqId: number, deadline: number): void {
  buf[at] = kind;
  buf[at + 1] = status;
  buf.writeUInt16LE(len, at + 2);
  buf.writeUInt32LE(reqId >>> 0, at + 4);
  buf.writeUInt32LE(deadline >>> 0, at + 8);
}

function writePayload(buf: Buffer, at: number, payload: Uint8Array | string, prefixU32: number): void {
  if (prefixU32 >= 0) {
    buf.writeUInt32LE(prefixU32 >>> 0, at);
    at += 4;
  }
  if (typeof payload === 'string') buf.write(payload, at, 'utf8');
  else buf.set(payload, at);
}

/** Reply kinds have the high bit set: kind | 0x80 answers kind. */
export const REPLY_BIT = 0x80;
export const isReplyKind = (kind: number): boolean => (kind & REPLY_BIT) !== 0;
export const replyKindOf = (kind: number): number => kind | REPLY_BIT;
