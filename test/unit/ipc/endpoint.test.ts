import { expect } from 'chai';
import {
  BacklogFullError,
  Endpoint,
  RequestError,
  TransportClosedError,
  deadlineIn,
  encodeEnvelope,
  newIncarnation,
  type InboundRecord,
  type MessageTransport,
  type RecordHandler,
  type Reply,
} from '../../../src/ipc';
import { useQueues } from '../../helpers/queues';
import { localImpl, sysvImpl, type Rig } from '../../helpers/transports';
import { waitFor, withTimeout } from '../../helpers/wait';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const ASKER = 1000; // a chatD's mtype
const SERVER = 100; // a shard's mtype
const NOBODY = 4242; // an mtype nobody receives
const KIND_ECHO = 5;

/** The rejection of `p`, which must reject. */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

async function expectRequestError(p: Promise<unknown>, code: 'TIMEOUT' | 'UNAVAILABLE'): Promise<RequestError> {
  const err = await rejection(p);
  expect(err).to.be.instanceOf(RequestError);
  expect((err as RequestError).code).to.equal(code);
  expect((err as RequestError).clientCode).to.equal(code); // PROTOCOL.md has both codes
  return err as RequestError;
}

/** Answers KIND_ECHO requests with "re:" + payload; records everything it is handed. */
function echoHandler(seen: InboundRecord[] = []): RecordHandler {
  return (rec, reply) => {
    seen.push(rec);
    if (reply) reply(0, Buffer.concat([Buffer.from('re:'), rec.payload]));
  };
}

/** A transport that loses the next `drop` messages sent to `lossyTo` (a message lost on the way). */
class LossyTransport implements MessageTransport {
  drop = 0;
  dropped = 0;
  /** The send to `lossyTo` with this number (1 = the next) throws BacklogFullError. */
  failSend = 0;
  constructor(
    private readonly inner: MessageTransport,
    private readonly lossyTo: number,
  ) {}
  get maxMessageBytes(): number {
    return this.inner.maxMessageBytes;
  }
  send(mtype: number, body: Uint8Array): void {
    if (mtype === this.lossyTo && this.failSend > 0 && --this.failSend === 0) throw new BacklogFullError(1, body.byteLength);
    if (mtype === this.lossyTo && this.drop > 0) {
      this.drop--;
      this.dropped++;
      return;
    }
    this.inner.send(mtype, body);
  }
  receive(mtype: number, onBatch: Parameters<MessageTransport['receive']>[1]): ReturnType<MessageTransport['receive']> {
    return this.inner.receive(mtype, onBatch);
  }
  stat(): ReturnType<MessageTransport['stat']> {
    return this.inner.stat();
  }
  counters(): ReturnType<MessageTransport['counters']> {
    return this.inner.counters();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

describe('ipc/endpoint over LocalTransport', function () {
  this.timeout(10_000);
  const scope = useQueues(); // first: endpoints close before the transports under them
  const rig = localImpl.setupSync();

  function endpoint(transport: MessageTransport, mtype: number, incarnation = newIncarnation()): Endpoint {
    return scope.track(new Endpoint(transport, { mtype, incarnation, maxBatchBytes: 8192, timeoutSweepMs: 5 }));
  }

  /** An asker and a server endpoint, each on its own transport (two processes). */
  function pair(options?: Parameters<typeof rig>[1]): { r: Rig; asker: Endpoint; server: Endpoint } {
    const r = rig(2, options);
    const asker = endpoint(r.transports[0]!, ASKER);
    asker.start(() => {});
    const server = endpoint(r.transports[1]!, SERVER);
    return { r, asker, server };
  }

  it('request/reply - the handler answers and the asker gets status, payload and sender', async () => {
    const { asker, server } = pair();
    const seen: InboundRecord[] = [];
    server.start(echoHandler(seen));
    const reply = await asker.request(SERVER, KIND_ECHO, Buffer.from('ping'), 2000);
    expect(reply.status).to.equal(0);
    expect(reply.payload.toString()).to.equal('re:ping');
    expect(reply).to.include({ from: SERVER, fromIncarnation: server.incarnation });
    expect(seen).to.have.length(1);
    expect(seen[0]).to.include({ kind: KIND_ECHO, from: ASKER, fromIncarnation: asker.incarnation });
    expect(seen[0]!.reqId).to.not.equal(0);
    expect(asker.counters).to.include({ requestsSent: 1, repliesReceived: 1, timeouts: 0, late: 0 });
    expect(asker.pendingRequests).to.equal(0);
  });

  it('request/reply - an error status resolves (it is an answer), and many requests match their own replies', async () => {
    const { asker, server } = pair();
    server.start((rec, reply) => reply!(rec.payload[0]! % 7, rec.payload));
    const replies = await Promise.all(Array.from({ length: 200 }, (_, i) => asker.request(SERVER, KIND_ECHO, Buffer.from([i]), 2000)));
    replies.forEach((r: Reply, i) => {
      expect(r.payload[0]).to.equal(i);
      expect(r.status).to.equal(i % 7);
    });
  });

  it('post - one-way records reach the handler without a reply function', async () => {
    const { asker, server } = pair();
    const got: [InboundRecord, unknown][] = [];
    server.start((rec, reply) => got.push([rec, reply]));
    asker.post(SERVER, { kind: 9, payload: Buffer.from('fire and forget') });
    await waitFor(() => got.length === 1, 2000);
    expect(got[0]![0]).to.include({ kind: 9, reqId: 0 });
    expect(got[0]![0].payload.toString()).to.equal('fire and forget');
    expect(got[0]![1]).to.equal(undefined);
  });

  it('batching - 1,000 requests in one turn travel in a few envelopes, and so do their replies', async () => {
    const { asker, server } = pair();
    server.start(echoHandler());
    const n = 1000;
    const all = Promise.all(Array.from({ length: n }, (_, i) => asker.request(SERVER, KIND_ECHO, Buffer.from(`q${i}`), 5000)));
    const replies = await all;
    expect(replies.map((r) => r.payload.toString())).to.deep.equal(Array.from({ length: n }, (_, i) => `re:q${i}`));
    expect(asker.counters.recordsSent).to.equal(n);
    // ~20 bytes a record, 8 KiB an envelope: 3 envelopes would do.
    expect(asker.counters.envelopesSent).to.be.at.least(2).and.at.most(10);
    expect(server.counters.recordsSent).to.equal(n);
    expect(server.counters.envelopesSent).to.be.at.most(20);
  });

  it('flow control - 20,000 requests to one server never overfill the queue: no send waits in the backlog', async () => {
    const { asker, server } = pair();
    server.start(echoHandler());
    const n = 20_000;
    const replies = await Promise.all(Array.from({ length: n }, (_, i) => asker.request(SERVER, KIND_ECHO, Buffer.from(`q${i}`), 10_000)));
    expect(replies.map((r) => r.payload.toString())).to.deep.equal(Array.from({ length: n }, (_, i) => `re:q${i}`));
    // Request bytes in flight stay under 3/4 of the queue: neither side ever met a full queue.
    expect(asker.transport.counters().deferred, 'asker sends deferred').to.equal(0);
    expect(server.transport.counters().deferred, 'server sends deferred').to.equal(0);
  });

  it('flow control - requests waiting for credit to a silent server time out (TIMEOUT), and free the way for others', async () => {
    const { asker, server } = pair();
    const n = 3000; // ~16 bytes each: well beyond 12 KiB of credit
    const silent = Array.from({ length: n }, (_, i) => asker.request(NOBODY, KIND_ECHO, Buffer.from(`s${i}`), 150).then(() => 'ok', (e: RequestError) => e.code));
    server.start(echoHandler());
    const other = await asker.request(SERVER, KIND_ECHO, Buffer.from('meanwhile'), 2000);
    expect(other.payload.toString(), 'another destination is not held up').to.equal('re:meanwhile');
    const codes = await Promise.all(silent);
    expect(new Set(codes)).to.deep.equal(new Set(['TIMEOUT']));
    expect(asker.pendingRequests).to.equal(0);
  });

  it('timeout - TIMEOUT when nobody answers', async () => {
    const { asker } = pair();
    const start = Date.now();
    await expectRequestError(asker.request(NOBODY, KIND_ECHO, Buffer.from('hello?'), 100), 'TIMEOUT');
    expect(Date.now() - start).to.be.within(90, 1000);
    expect(asker.counters.timeouts).to.equal(1);
    expect(asker.pendingRequests).to.equal(0);
  });

  it('timeout - a short timeout is not held up by an earlier, longer one', async () => {
    const { asker } = pair();
    const long = asker.request(NOBODY, KIND_ECHO, Buffer.from('slow'), 5000);
    long.catch(() => {}); // rejected with UNAVAILABLE when the endpoint closes at cleanup
    const start = Date.now();
    await expectRequestError(asker.request(NOBODY, KIND_ECHO, Buffer.from('fast'), 100), 'TIMEOUT');
    expect(Date.now() - start).to.be.below(1000);
    expect(asker.pendingRequests).to.equal(1);
  });

  it('timeout - mixed timeouts fail in deadline order, whatever the send order', async () => {
    const { asker } = pair();
    const order: number[] = [];
    const timeouts = [300, 100, 250, 50, 150];
    await Promise.all(
      timeouts.map((ms) => asker.request(NOBODY, KIND_ECHO, Buffer.from(`${ms}`), ms).catch((err: RequestError) => {
        expect(err.code).to.equal('TIMEOUT');
        order.push(ms);
      })),
    );
    expect(order).to.deep.equal([50, 100, 150, 250, 300]);
    expect(asker.counters.timeouts).to.equal(timeouts.length);
  });

  it('late reply - a reply after the timeout is dropped and counted in late', async () => {
    const { asker, server } = pair();
    server.start((rec, reply) => {
      if (rec.payload.toString() === 'slow') setTimeout(() => reply!(0, Buffer.from('too late')), 150);
      else reply!(0, Buffer.from('quick'));
    });
    await expectRequestError(asker.request(SERVER, KIND_ECHO, Buffer.from('slow'), 50), 'TIMEOUT');
    await waitFor(() => asker.counters.late === 1, 2000, 5, 'late reply counted');
    expect(asker.counters.repliesReceived).to.equal(0);
    // The endpoint goes on working.
    const r = await asker.request(SERVER, KIND_ECHO, Buffer.from('again'), 1000);
    expect(r.payload.toString()).to.equal('quick');
    expect(asker.counters.late).to.equal(1);
  });

  it('garbage - foreign, truncated and random bodies are counted and dropped; the endpoint keeps working', async () => {
    const { r, asker, server } = pair();
    const seen: InboundRecord[] = [];
    server.start(echoHandler(seen));
    const valid = encodeEnvelope({ from: ASKER, fromIncarnation: asker.incarnation, toIncarnation: 0 }, [
      { kind: KIND_ECHO, reqId: 1, deadline: deadlineIn(5000), payload: Buffer.from('whole') },
    ]);
    const bodies = [
      Buffer.from('CHAT hello\0'), // a legacy text line
      valid.subarray(0, valid.length - 1), // truncated
      valid.subarray(0, 25),
      Buffer.alloc(500, 0xff),
      Buffer.from([0xd1, 0xc7, 9, 0]), // magic, bad version, short
    ];
    for (const b of bodies) expect(r.rawSend(SERVER, b)).to.equal(true);
    const reply = await asker.request(SERVER, KIND_ECHO, Buffer.from('still there?'), 2000);
    expect(reply.payload.toString()).to.equal('re:still there?');
    expect(server.counters.garbage).to.equal(bodies.length);
    expect(seen).to.have.length(1);
  });

  it('stale - envelopes for another incarnation are dropped and counted; 0 and our own get through', async () => {
    const { asker, server } = pair();
    const seen: InboundRecord[] = [];
    server.start(echoHandler(seen));
    const other = server.incarnation === 1 ? 2 : server.incarnation - 1;
    asker.post(SERVER, { kind: 9, payload: Buffer.from('to a previous life') }, other);
    asker.post(SERVER, { kind: 9, payload: Buffer.from('to whoever') }, 0);
    asker.post(SERVER, { kind: 9, payload: Buffer.from('to you') }, server.incarnation);
    await waitFor(() => seen.length === 2 && server.counters.stale === 1, 2000, 5, 'two delivered, one stale');
    expect(seen.map((s) => s.payload.toString())).to.have.members(['to whoever', 'to you']);
  });

  it('stale - a reply meant for the previous start of a process is not taken by the new one', async () => {
    const r = rig(3);
    const server = endpoint(r.transports[0]!, SERVER);
    server.start((_rec, reply) => setTimeout(() => reply!(0, Buffer.from('for the old one')), 100));
    const old = endpoint(r.transports[1]!, ASKER);
    old.start(() => {});
    const pending = old.request(SERVER, KIND_ECHO, Buffer.from('q'), 2000);
    await waitFor(() => server.counters.envelopesSent === 0 && old.counters.envelopesSent === 1, 1000);
    await sleep(20);
    await old.close(); // the process restarts with a new incarnation on the same mtype
    await expectRequestError(pending, 'UNAVAILABLE');
    const fresh = endpoint(r.transports[2]!, ASKER);
    fresh.start(() => {});
    await waitFor(() => fresh.counters.stale === 1, 2000, 5, 'old reply seen as stale');
    expect(fresh.counters).to.include({ late: 0, repliesReceived: 0 });
  });

  it('expired - requests past their deadline never reach the handler', async () => {
    const { asker, server } = pair();
    const seen: InboundRecord[] = [];
    // The asker gives up before the server starts reading.
    await expectRequestError(asker.request(SERVER, KIND_ECHO, Buffer.from('q'), 40), 'TIMEOUT');
    asker.post(SERVER, { kind: 9, deadline: deadlineIn(-5), payload: Buffer.from('one-way, expired') });
    asker.post(SERVER, { kind: 9, deadline: deadlineIn(5000), payload: Buffer.from('one-way, in time') });
    await sleep(20);
    server.start(echoHandler(seen));
    await waitFor(() => seen.length === 1, 2000);
    await sleep(20);
    expect(server.counters.expired).to.equal(2);
    expect(seen.map((s) => s.payload.toString())).to.deep.equal(['one-way, in time']);
    expect(server.counters.recordsSent).to.equal(0); // no reply to the expired request
  });

  it('send failure - a full backlog rejects the request with UNAVAILABLE', async () => {
    const { r, asker } = pair({ backlogMessages: 1 });
    const filler = Buffer.alloc(1000);
    while (r.rawSend(NOBODY, filler)); // the queue is full
    while (r.rawSend(NOBODY, Buffer.alloc(1))); // to the last byte (backlogs are per destination: a small envelope would fit)
    r.transports[0]!.send(NOBODY, filler); // the asker's one backlog slot is taken
    const err = await expectRequestError(asker.request(SERVER, KIND_ECHO, Buffer.from('q'), 2000), 'UNAVAILABLE');
    expect(err.cause).to.be.instanceOf(BacklogFullError);
    expect(asker.pendingRequests).to.equal(0);
    expect(asker.counters.timeouts).to.equal(0);
  });

  it('send failure - a closed transport rejects the request with UNAVAILABLE', async () => {
    const { r, asker } = pair();
    await r.transports[0]!.close();
    const err = await expectRequestError(asker.request(SERVER, KIND_ECHO, Buffer.from('q'), 2000), 'UNAVAILABLE');
    expect(err.cause).to.be.instanceOf(TransportClosedError);
    expect(asker.pendingRequests).to.equal(0);
  });

  it('reply - idempotent: only the first call answers', async () => {
    const { asker, server } = pair();
    server.start((_rec, reply) => {
      reply!(0, Buffer.from('one'));
      reply!(0, Buffer.from('two'));
      setTimeout(() => reply!(5, Buffer.from('three')), 10);
    });
    const r = await asker.request(SERVER, KIND_ECHO, Buffer.from('q'), 2000);
    expect(r.payload.toString()).to.equal('one');
    await sleep(60);
    expect(server.counters.recordsSent).to.equal(1);
    expect(asker.counters).to.include({ repliesReceived: 1, late: 0 });
  });

  it('call - a ReplySink gets each outcome once with its ctx, never synchronously; string payloads go as UTF-8', async () => {
    const { asker, server } = pair();
    server.start((rec, reply) => {
      if (rec.payload.toString() === 'silent') return;
      reply!(rec.payload[0] === 0x21 ? 7 : 0, Buffer.concat([Buffer.from('re:'), rec.payload]));
    });
    const seen: string[] = [];
    let sync = true;
    const sink = {
      onReply(ctx: { n: number }, status: number, body: Buffer, start: number, end: number, from: number) {
        expect(sync, 'never inside call()').to.equal(false);
        seen.push(`${ctx.n}:${status}:${body.toString('utf8', start, end)}:${from}`);
      },
      onFailure(ctx: { n: number }, err: RequestError) {
        expect(sync, 'never inside call()').to.equal(false);
        seen.push(`${ctx.n}:${err.code}`);
      },
    };
    asker.call(SERVER, KIND_ECHO, '타락', 1000, sink, { n: 1 });
    asker.call(SERVER, KIND_ECHO, Buffer.from('!bang'), 1000, sink, { n: 2 });
    asker.call(SERVER, KIND_ECHO, 'silent', 80, sink, { n: 3 });
    asker.call(SERVER, KIND_ECHO, Buffer.alloc(70_000), 1000, sink, { n: 4 }); // cannot fit: UNAVAILABLE, later
    sync = false;
    await waitFor(() => seen.length === 4, 3000, 5, 'four outcomes');
    expect(seen.sort()).to.deep.equal([`1:0:re:타락:${SERVER}`, `2:7:re:!bang:${SERVER}`, '3:TIMEOUT', '4:UNAVAILABLE']);
    expect(asker.pendingRequests).to.equal(0);
  });

  it('request ids - a slot is reused with a new id; a reply to the old id is late, not taken for the new request', async () => {
    const { asker, server } = pair();
    const held: (() => void)[] = [];
    server.start((rec, reply) => held.push(() => reply!(0, Buffer.from(`answer to ${rec.payload.toString()}`))));
    await expectRequestError(asker.request(SERVER, KIND_ECHO, Buffer.from('first'), 50), 'TIMEOUT');
    const slots = (): Uint32Array => (asker as unknown as { slotIds: Uint32Array }).slotIds;
    const firstId = slots()[0];
    expect(firstId, 'the first request used slot 0 and gave it back').to.equal(0);
    const second = asker.request(SERVER, KIND_ECHO, Buffer.from('second'), 3000);
    const secondId = slots()[0]!;
    expect(secondId & 0xfffff, 'the second request reuses slot 0').to.equal(0);
    await waitFor(() => held.length === 2, 2000, 5, 'both requests reached the server');
    held[0]!(); // the first request's answer, late, while slot 0 is taken by the second
    await sleep(50);
    expect(asker.counters.late).to.equal(1);
    held[1]!();
    expect((await second).payload.toString()).to.equal('answer to second');
  });

  it('reply deadline - a reply that arrives after its request\'s deadline is dropped as late', async () => {
    const { r, asker } = pair();
    // A hand-made reply to a live request id, carrying a deadline already past.
    const p = asker.request(SERVER, KIND_ECHO, Buffer.from('q'), 300);
    // The live request's id, read from the endpoint's slot table.
    const reqId = (asker as unknown as { slotIds: Uint32Array }).slotIds.find((id) => id !== 0)!;
    r.transports[1]!.send(ASKER, encodeEnvelope({ from: SERVER, fromIncarnation: 5, toIncarnation: 0 }, [
      { kind: KIND_ECHO | 0x80, reqId, deadline: deadlineIn(-10), payload: Buffer.from('stale') },
    ]));
    await expectRequestError(p, 'TIMEOUT');
    expect(asker.counters.late).to.equal(1);
    expect(asker.counters.repliesReceived).to.equal(0);
  });

  it('forged reply - a reply with a pending request id from another mtype is not taken (garbage); the real answer still is', async () => {
    const { r, asker, server } = pair();
    const held: (() => void)[] = [];
    server.start((_rec, reply) => held.push(() => reply!(0, Buffer.from('real'))));
    const p = asker.request(SERVER, KIND_ECHO, Buffer.from('q'), 2000);
    const reqId = (asker as unknown as { slotIds: Uint32Array }).slotIds.find((id) => id !== 0)!;
    r.transports[1]!.send(ASKER, encodeEnvelope({ from: NOBODY, fromIncarnation: 5, toIncarnation: 0 }, [
      { kind: KIND_ECHO | 0x80, reqId, deadline: deadlineIn(1000), payload: Buffer.from('forged') },
    ]));
    await waitFor(() => asker.counters.garbage === 1 && held.length === 1, 2000, 5, 'forged reply dropped');
    held[0]!();
    expect((await p).payload.toString()).to.equal('real');
  });

  it('adaptive batching - with one envelope of requests allowed in flight, a burst to a slow server travels in few envelopes', async () => {
    const r = rig(2);
    const asker = scope.track(new Endpoint(r.transports[0]!, { mtype: ASKER, incarnation: newIncarnation(), maxBatchBytes: 8192, timeoutSweepMs: 5, maxEnvelopesInFlight: 1 }));
    asker.start(() => {});
    const server = endpoint(r.transports[1]!, SERVER);
    server.start((rec, reply) => setTimeout(() => reply!(0, rec.payload), 20)); // answers 20 ms later
    const all: Promise<Reply>[] = [];
    // 20 turns of 50 requests each: with one envelope outstanding, each turn's requests wait.
    for (let turn = 0; turn < 20; turn++) {
      for (let i = 0; i < 50; i++) all.push(asker.request(SERVER, KIND_ECHO, Buffer.from(`t${turn}r${i}`), 5000));
      await new Promise((res) => setImmediate(res));
    }
    const replies = await Promise.all(all);
    expect(replies.map((x) => x.payload.toString())).to.deep.equal(all.map((_, k) => `t${Math.floor(k / 50)}r${k % 50}`));
    expect(asker.counters.envelopesSent, 'envelopes for 1,000 requests over 20 turns').to.be.at.most(6);
  });

  it('lost envelopes - one lost on the way does not hold up its destination; two hold its envelope credit for envelopeExpiryMs, not for the request timeout', async () => {
    const r = rig(2);
    const lossy = new LossyTransport(r.transports[0]!, SERVER);
    const asker = scope.track(new Endpoint(lossy, { mtype: ASKER, incarnation: newIncarnation(), maxBatchBytes: 8192, timeoutSweepMs: 5 }));
    asker.start(() => {});
    endpoint(r.transports[1]!, SERVER).start(echoHandler());
    const turn = (): Promise<void> => new Promise((res) => setImmediate(res));
    const outcome = (p: Promise<Reply>): Promise<string> => p.then((x) => x.payload.toString(), (e: RequestError) => e.code);
    // One envelope lost: the second envelope of credit keeps requests flowing at once.
    lossy.drop = 1;
    const lost1 = outcome(asker.request(SERVER, KIND_ECHO, Buffer.from('a'), 1000));
    await turn();
    let t0 = Date.now();
    expect(await outcome(asker.request(SERVER, KIND_ECHO, Buffer.from('b'), 1000))).to.equal('re:b');
    expect(Date.now() - t0, 'with one envelope lost').to.be.below(300);
    expect(await lost1).to.equal('TIMEOUT');
    // Two envelopes lost (each turn's requests go in one envelope): the credit of two is held.
    lossy.drop = 2;
    const lost2 = [outcome(asker.request(SERVER, KIND_ECHO, Buffer.from('c'), 1000))];
    await turn();
    lost2.push(outcome(asker.request(SERVER, KIND_ECHO, Buffer.from('d'), 1000)));
    await turn();
    expect(lossy.dropped).to.equal(3);
    t0 = Date.now();
    const next = await outcome(asker.request(SERVER, KIND_ECHO, Buffer.from('e'), 1000));
    const waited = Date.now() - t0;
    expect(next).to.equal('re:e');
    expect(waited, 'the destination was held up this long by two lost envelopes (request timeout 1000 ms)').to.be.below(600);
    expect(await Promise.all(lost2), 'the lost requests still end once, with TIMEOUT').to.deep.equal(['TIMEOUT', 'TIMEOUT']);
    expect(asker.pendingRequests).to.equal(0);
  });

  it('send failure - an envelope that fails while waiting requests go out fails only its own requests; the waiting ones are sent, none stranded', async () => {
    const r = rig(2);
    const lossy = new LossyTransport(r.transports[0]!, SERVER);
    // Two 1-byte requests per envelope, three envelopes of credit.
    const asker = scope.track(new Endpoint(lossy, { mtype: ASKER, incarnation: newIncarnation(), maxBatchBytes: 20 + 2 * 13, timeoutSweepMs: 5, maxEnvelopesInFlight: 3 }));
    asker.start(() => {});
    endpoint(r.transports[1]!, SERVER).start(echoHandler());
    // In one turn: 1-2, 3-4 and 5-6 go in three envelopes, 7 to 11 wait for credit. The
    // replies to 1-6 come in one envelope: 1-2 answered, 7-8 go in a fourth envelope (open);
    // 3-4 answered, 9 is next, the fourth envelope is full and is sent, and that send fails:
    // 7-8 fail, which sends 10-11 from inside the sending of 9.
    lossy.failSend = 4;
    const names = ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11'];
    const outcomes = await Promise.all(names.map((n) => asker.request(SERVER, KIND_ECHO, Buffer.from(n), 1500).then((x) => x.payload.toString(), (e: RequestError) => e.code)));
    expect(outcomes).to.deep.equal(['re:1', 're:2', 're:3', 're:4', 're:5', 're:6', 'UNAVAILABLE', 'UNAVAILABLE', 're:9', 're:10', 're:11']);
  });

  it('close - rejects pending requests with UNAVAILABLE, and refuses new ones', async () => {
    const { asker } = pair();
    const pending = asker.request(NOBODY, KIND_ECHO, Buffer.from('q'), 5000);
    await sleep(10);
    await asker.close();
    await expectRequestError(pending, 'UNAVAILABLE');
    await expectRequestError(asker.request(NOBODY, KIND_ECHO, Buffer.from('q'), 5000), 'UNAVAILABLE');
    expect(() => asker.post(NOBODY, { kind: 1, payload: Buffer.from('x') })).to.throw();
  });
});

describe('ipc/endpoint over SysvTransport', function () {
  this.timeout(20_000);
  const scope = useQueues();
  const rig = sysvImpl.setupSync();

  it('request/reply - 5,000 concurrent requests over a real queue, batched, all answered', async () => {
    const r = rig(2);
    const opts = { maxBatchBytes: 8192, timeoutSweepMs: 10 };
    const asker = scope.track(new Endpoint(r.transports[0]!, { mtype: ASKER, incarnation: newIncarnation(), ...opts }));
    const server = scope.track(new Endpoint(r.transports[1]!, { mtype: SERVER, incarnation: newIncarnation(), ...opts }));
    asker.start(() => {});
    server.start(echoHandler());
    const n = 5000;
    const replies = await withTimeout(
      Promise.all(Array.from({ length: n }, (_, i) => asker.request(SERVER, KIND_ECHO, Buffer.from(`q${i}`), 10_000))),
      15_000,
      'all replies',
    );
    replies.forEach((rep, i) => expect(rep.payload.toString()).to.equal(`re:q${i}`));
    expect(asker.counters.envelopesSent).to.be.below(n / 50);
    expect(asker.counters).to.include({ timeouts: 0, late: 0, garbage: 0, stale: 0, repliesReceived: n });
  });
});
