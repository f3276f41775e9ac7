import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { Endpoint, IpcError, RequestError, newIncarnation, type InboundRecord, type Reply } from '../../../src/ipc';
import { NatsQueue } from '../../../src/ipc/nats/nats-queue';
import { NatsTransport } from '../../../src/ipc/nats/nats-transport';
import { freePort } from '../../helpers/host';
import { useNatsServer } from '../../helpers/nats-server';
import { useQueues } from '../../helpers/queues';
import { waitFor, withTimeout } from '../../helpers/wait';

/**
 * What only NATS has (the contract suite covers the rest over NATS too): a server killed and
 * restarted, a first connect with nobody there, clusters sharing a server, the server's
 * max_payload, and a slow consumer cut off by the server. A real nats-server each time, killed
 * by pid after the suite.
 */

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const ASKER = 1000;
const SERVER = 100;
const KIND_ECHO = 5;

interface Logged {
  level: string;
  fields: object;
  msg: string;
}

function memoryLog(lines: Logged[]): { info: (f: object, m: string) => void; warn: (f: object, m: string) => void; error: (f: object, m: string) => void } {
  return {
    info: (fields, msg) => lines.push({ level: 'info', fields, msg }),
    warn: (fields, msg) => lines.push({ level: 'warn', fields, msg }),
    error: (fields, msg) => lines.push({ level: 'error', fields, msg }),
  };
}

/** Settles every promise; reports how each ended. */
async function outcomes(ps: Promise<Reply>[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const r of await Promise.allSettled(ps)) {
    const key = r.status === 'fulfilled' ? 'reply' : r.reason instanceof RequestError ? r.reason.code : `other: ${(r.reason as Error).message}`;
    out.set(key, (out.get(key) ?? 0) + 1);
  }
  return out;
}

describe('ipc/nats - outages, limits and clusters on a real nats-server', function () {
  this.timeout(30_000);
  const scope = useQueues();
  const nats = useNatsServer();
  let cluster = 0;

  async function transport(options: { cluster?: string; log?: Logged[]; url?: string } = {}): Promise<NatsTransport> {
    const t = await NatsTransport.connect({
      url: options.url ?? nats.server.url,
      cluster: options.cluster ?? `u${process.pid}-${cluster}`,
      ...(options.log ? { log: memoryLog(options.log) } : {}),
    });
    return scope.track(t);
  }

  function endpoint(t: NatsTransport, mtype: number): Endpoint {
    return scope.track(new Endpoint(t, { mtype, incarnation: newIncarnation(), maxBatchBytes: 4096, timeoutSweepMs: 5 }));
  }

  beforeEach(() => {
    cluster++;
  });

  afterEach(async function () {
    this.timeout(15_000);
    // Every test leaves the server running for the next one.
    if (!nats.server.running) await nats.server.restart();
  });

  it('server restart - sends wait in the backlog while it is down, the connection comes back by itself, receivers resubscribe', async () => {
    const recvLog: Logged[] = [];
    const recv = await transport({ log: recvLog });
    const sender = await transport();
    const got: number[] = [];
    const r = recv.receive(300, (batch) => {
      for (const m of batch) got.push(m.body.readUInt32LE(0));
    });
    await r.ready;
    const body = (i: number): Buffer => {
      const b = Buffer.alloc(64);
      b.writeUInt32LE(i, 0);
      return b;
    };
    for (let i = 0; i < 100; i++) sender.send(300, body(i));
    await waitFor(() => got.length === 100, 3000, 5, '100 before the outage');

    await nats.server.stop('SIGKILL');
    await waitFor(() => !sender.queue.connected && !recv.queue.connected, 5000, 5, 'both see the outage');
    for (let i = 100; i < 200; i++) sender.send(300, body(i));
    expect(sender.counters().backlogMessages, 'sends wait while the server is down').to.equal(100);
    expect(sender.counters().deferred).to.be.at.least(100);

    await nats.server.restart();
    await waitFor(() => sender.queue.connected && recv.queue.connected, 10_000, 10, 'both reconnected');
    await waitFor(() => sender.counters().backlogMessages === 0, 5000, 5, 'the backlog drained');
    // The sender may be back before the receiver's subscription is: NATS keeps nothing, so
    // some of the outage's messages can be lost, never duplicated or reordered.
    for (let i = 200; i < 300; i++) sender.send(300, body(i));
    await waitFor(() => got.includes(299), 5000, 5, 'messages sent after both reconnected');
    for (let k = 1; k < got.length; k++) expect(got[k]!, 'order, no duplicates').to.be.greaterThan(got[k - 1]!);
    for (let i = 200; i < 300; i++) expect(got).to.include(i);
    expect(sender.queue.counters).to.include({ disconnects: 1, reconnects: 1 });
    // One line per change of state, not one per reconnect attempt.
    expect(recvLog.filter((l) => /disconnected/.test(l.msg))).to.have.length(1);
    expect(recvLog.filter((l) => /reconnected/.test(l.msg))).to.have.length(1);
  });

  it('server killed with requests in flight - every one ends TIMEOUT or UNAVAILABLE in time (none hangs), and requests work again after the restart', async () => {
    const server = endpoint(await transport(), SERVER);
    const held: (() => void)[] = [];
    server.start((rec: InboundRecord, reply) => {
      const payload = Buffer.from(rec.payload);
      // Half answered at once, half held until after the kill.
      if (payload.readUInt32LE(0) % 2 === 0) reply!(0, payload);
      else held.push(() => reply!(0, payload));
    });
    await server.receiver!.ready;
    const asker = endpoint(await transport(), ASKER);
    asker.start(() => {});
    await asker.receiver!.ready;
    const ok = await asker.request(SERVER, KIND_ECHO, Buffer.from([0, 0, 0, 0]), 2000);
    expect(ok.status).to.equal(0);

    const inFlight: Promise<Reply>[] = [];
    for (let i = 1; i <= 400; i++) {
      const p = Buffer.alloc(4);
      p.writeUInt32LE(i, 0);
      inFlight.push(asker.request(SERVER, KIND_ECHO, p, 1000));
    }
    await waitFor(() => held.length > 0, 3000, 5, 'requests reached the server');
    await nats.server.stop('SIGKILL');
    for (const h of held.splice(0)) h(); // answers into a dead connection
    // Requests sent now wait in the backlog until their deadline.
    for (let i = 401; i <= 500; i++) inFlight.push(asker.request(SERVER, KIND_ECHO, Buffer.alloc(4), 1000));
    const t0 = Date.now();
    const ends = await withTimeout(outcomes(inFlight), 8000, 'every request settled');
    const took = Date.now() - t0;
    const failed = (ends.get('TIMEOUT') ?? 0) + (ends.get('UNAVAILABLE') ?? 0);
    expect([...ends.keys()].filter((k) => !['reply', 'TIMEOUT', 'UNAVAILABLE'].includes(k)), JSON.stringify([...ends])).to.deep.equal([]);
    expect(failed, JSON.stringify([...ends])).to.be.at.least(100 + 1); // the backlogged ones and the held ones at least
    expect(took, 'settled within the timeout and a sweep (generous: the machine is shared)').to.be.below(4000);

    await nats.server.restart();
    await waitFor(() => asker.transport.counters().backlogMessages === 0, 10_000, 10, 'backlog flushed after the restart');
    // Recovery: a fresh request gets its answer once both sides are back.
    let answered = false;
    const until = Date.now() + 10_000;
    while (!answered && Date.now() < until) {
      try {
        const r = await asker.request(SERVER, KIND_ECHO, Buffer.from([2, 0, 0, 0]), 500);
        answered = r.status === 0 && r.payload.readUInt32LE(0) === 2;
      } catch (err) {
        expect(err).to.be.instanceOf(RequestError);
      }
    }
    expect(answered, 'requests answered again after the restart').to.equal(true);
  });

  it('server down - requests in flight when the connection drops end UNAVAILABLE at once (marked in flight), new ones too while it is down (never sent), each exactly once; answered again after the restart', async () => {
    const serverT = await transport();
    const server = endpoint(serverT, SERVER);
    const held: (() => void)[] = [];
    server.start((rec: InboundRecord, reply) => {
      const payload = Buffer.from(rec.payload);
      if (payload.toString() === 'now') reply!(0, payload);
      else held.push(() => reply!(0, payload)); // answered only after the drop
    });
    await server.receiver!.ready;
    const askerT = await transport();
    const asker = endpoint(askerT, ASKER);
    asker.start(() => {});
    await asker.receiver!.ready;
    expect((await asker.request(SERVER, KIND_ECHO, Buffer.from('now'), 2000)).status).to.equal(0);

    // Every outcome of every request, counted per request: exactly one each, ever.
    const ends: { code: string; inFlight: boolean; at: number }[][] = [];
    const sink = {
      onReply(i: number) {
        ends[i]!.push({ code: 'reply', inFlight: false, at: Date.now() });
      },
      onFailure(i: number, err: RequestError) {
        ends[i]!.push({ code: err.code, inFlight: err.inFlight, at: Date.now() });
      },
    };
    const ask = (payload: string): number => {
      const i = ends.push([]) - 1;
      asker.call(SERVER, KIND_ECHO, Buffer.from(payload), 10_000, sink, i);
      return i;
    };
    const inFlight = Array.from({ length: 200 }, (_, k) => ask(`held${k}`));
    await waitFor(() => held.length === 200, 5000, 5, 'the requests reached the server');

    const t0 = Date.now();
    await nats.server.stop('SIGKILL');
    await waitFor(() => inFlight.every((i) => ends[i]!.length > 0), 3000, 5, 'every request in flight ended (their timeout is 10 s)');
    const took = Math.max(...inFlight.map((i) => ends[i]![0]!.at)) - t0;
    console.log(`      ${inFlight.length} requests in flight ended ${took} ms after the server was killed (their timeout: 10 s)`);
    expect(took, 'ended this long after the server was killed').to.be.below(1500);
    for (const i of inFlight) expect(ends[i], `request ${i}`).to.deep.equal([{ code: 'UNAVAILABLE', inFlight: true, at: ends[i]![0]!.at }]);

    // While the connection is down: refused at once, never sent (so it cannot take effect).
    const t1 = Date.now();
    const whileDown = Array.from({ length: 50 }, (_, k) => ask(`down${k}`));
    await waitFor(() => whileDown.every((i) => ends[i]!.length > 0), 1000, 1, 'requests sent while down ended');
    expect(Date.now() - t1).to.be.below(500);
    for (const i of whileDown) expect(ends[i]!.map((e) => [e.code, e.inFlight])).to.deep.equal([['UNAVAILABLE', false]]);
    const p = asker.request(SERVER, KIND_ECHO, Buffer.from('promise form'), 10_000);
    const err = await p.then(() => undefined, (e: unknown) => e);
    expect(err).to.be.instanceOf(RequestError);
    expect((err as RequestError).code).to.equal('UNAVAILABLE');
    expect(asker.pendingRequests).to.equal(0);
    expect(asker.counters.unreachable).to.equal(251);

    // The server answers what it held into its dead connection: those replies go out after the
    // restart, and must never count as a second outcome.
    for (const h of held.splice(0)) h();
    await nats.server.restart();
    await waitFor(() => askerT.queue.connected && serverT.queue.connected, 10_000, 10, 'both reconnected');
    let answered = false;
    const until = Date.now() + 10_000;
    while (!answered && Date.now() < until) {
      try {
        answered = (await asker.request(SERVER, KIND_ECHO, Buffer.from('now'), 500)).payload.toString() === 'now';
      } catch (e) {
        expect(e).to.be.instanceOf(RequestError);
      }
    }
    expect(answered, 'requests answered again after the restart').to.equal(true);
    await sleep(200);
    expect(ends.every((e) => e.length === 1), 'exactly one outcome per request').to.equal(true);
  });

  it('first connect - no server at the URL: UNAVAILABLE after connectTimeoutMs, naming the URL', async () => {
    const port = await freePort(); // nobody listens there
    const t0 = Date.now();
    let err: unknown;
    try {
      await NatsQueue.connect({ url: `nats://127.0.0.1:${port}`, cluster: 'x', connectTimeoutMs: 800 });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(IpcError);
    expect((err as IpcError).code).to.equal('UNAVAILABLE');
    expect((err as Error).message).to.contain(`127.0.0.1:${port}`);
    expect(Date.now() - t0).to.be.within(700, 4000);
  });

  it('first connect - a server that comes up within connectTimeoutMs is used', async () => {
    await nats.server.stop();
    const connecting = NatsQueue.connect({ url: nats.server.url, cluster: 'late', connectTimeoutMs: 8000 });
    await sleep(500);
    await nats.server.restart();
    const q = await withTimeout(connecting, 9000, 'connect');
    expect(q.connected).to.equal(true);
    await q.close();
  });

  it('clusters - two CLUSTER_NAMEs on one server never hear each other; an invalid name is refused', async () => {
    const a1 = await transport({ cluster: `ca${process.pid}` });
    const a2 = await transport({ cluster: `ca${process.pid}` });
    const b = await transport({ cluster: `cb${process.pid}` });
    const inA: string[] = [];
    const inB: string[] = [];
    const ra = a1.receive(100, (batch) => batch.forEach((m) => inA.push(m.body.toString())));
    const rb = b.receive(100, (batch) => batch.forEach((m) => inB.push(m.body.toString())));
    await Promise.all([ra.ready, rb.ready]);
    a2.send(100, Buffer.from('for a'));
    b.send(100, Buffer.from('for b'));
    await waitFor(() => inA.length === 1 && inB.length === 1, 3000);
    await sleep(50);
    expect(inA).to.deep.equal(['for a']);
    expect(inB).to.deep.equal(['for b']);
    expect(a1.queue.subject(100)).to.equal(`chatd.ca${process.pid}.m.100`);
    let err: unknown;
    try {
      await NatsQueue.connect({ url: nats.server.url, cluster: 'a.b' });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(IpcError);
    expect((err as IpcError).code).to.equal('EINVAL');
  });

  it('close - closes the connection; later sends throw TRANSPORT_CLOSED; close is idempotent', async () => {
    const t = await transport();
    await t.close();
    expect(t.queue.nc.isClosed()).to.equal(true);
    await t.close();
    let err: unknown;
    try {
      t.send(100, Buffer.from('x'));
    } catch (e) {
      err = e;
    }
    expect((err as IpcError).code).to.equal('TRANSPORT_CLOSED');
  });
});

describe('ipc/nats - the server\'s limits (max_payload, slow consumer)', function () {
  this.timeout(40_000);
  const scope = useQueues();
  // A small max_payload, and a client that holds more than 256 KiB unread is cut off as a slow consumer.
  const nats = useNatsServer({ config: 'max_payload: 4096\nmax_pending: 262144\nwrite_deadline: "500ms"' });

  it('max payload - maxMessageBytes is the server\'s max_payload; a larger body is E2BIG before anything is sent', async () => {
    const t = scope.track(await NatsTransport.connect({ url: nats.server.url, cluster: `mp${process.pid}` }));
    expect(t.maxMessageBytes).to.equal(4096);
    let err: unknown;
    try {
      t.send(100, Buffer.alloc(4097));
    } catch (e) {
      err = e;
    }
    expect((err as IpcError).code).to.equal('E2BIG');
    expect(t.counters()).to.include({ sent: 0, backlogMessages: 0 });
    const got: number[] = [];
    const r = t.receive(100, (batch) => batch.forEach((m) => got.push(m.body.length)));
    await r.ready;
    t.send(100, Buffer.alloc(4096, 1));
    await waitFor(() => got.length === 1, 3000);
    expect(got).to.deep.equal([4096]);
  });

  it('slow consumer - a receiver that stops reading is cut off by the server; requests to it time out; it reconnects and serves again', async () => {
    const cluster = `sc${process.pid}`;
    const log: Logged[] = [];
    const slowT = scope.track(await NatsTransport.connect({ url: nats.server.url, cluster, log: memoryLog(log) }));
    const server = scope.track(new Endpoint(slowT, { mtype: SERVER, incarnation: newIncarnation(), maxBatchBytes: 4096, timeoutSweepMs: 5 }));
    let stall = true;
    server.start((rec, reply) => {
      if (stall) {
        stall = false;
        // The event loop stops for 3 s: nothing is read from the socket meanwhile.
        const until = Date.now() + 3000;
        while (Date.now() < until) {
          /* busy */
        }
      }
      reply?.(0, rec.payload);
    });
    await server.receiver!.ready;
    const askerT = scope.track(await NatsTransport.connect({ url: nats.server.url, cluster }));
    const asker = scope.track(new Endpoint(askerT, { mtype: ASKER, incarnation: newIncarnation(), maxBatchBytes: 4096, timeoutSweepMs: 5 }));
    asker.start(() => {});
    await asker.receiver!.ready;
    const first = asker.request(SERVER, KIND_ECHO, Buffer.from('stall'), 1000); // starts the stall
    // Another process floods the stalled receiver's subject with 64 MiB (this one is frozen too):
    // more than the socket buffers hold, so the server's write to us stalls past write_deadline.
    const subject = slowT.queue.subject(SERVER);
    const flooder = spawn(process.execPath, ['-e', `
      const s = require('net').connect(${nats.server.port}, '127.0.0.1', () => {
        s.write('CONNECT {"verbose":false,"pedantic":false}\\r\\n');
        const body = Buffer.alloc(1024, 120);
        let n = 0;
        const more = () => { while (n < 65536) { n++; if (!s.write('PUB ${subject} 1024\\r\\n') || !s.write(Buffer.concat([body, Buffer.from('\\r\\n')]))) return s.once('drain', more); } s.end('PING\\r\\n'); };
        more();
      });
      s.on('data', () => {}); s.on('error', () => process.exit(0)); s.on('close', () => process.exit(0));
    `], { stdio: 'ignore' });
    try {
      const firstEnd = await outcomes([first]);
      expect([...firstEnd.keys()]).to.satisfy((ks: string[]) => ks.every((k) => k === 'TIMEOUT' || k === 'reply'));
      await waitFor(() => slowT.queue.counters.disconnects >= 1, 10_000, 20, 'the server cut the slow consumer off');
      await waitFor(() => slowT.queue.connected, 10_000, 20, 'reconnected');
      // Garbage from the flood is dropped by the endpoint (not envelopes); real requests work again.
      let answered = false;
      const until = Date.now() + 10_000;
      while (!answered && Date.now() < until) {
        try {
          const r = await asker.request(SERVER, KIND_ECHO, Buffer.from('again'), 500);
          answered = r.payload.toString() === 'again';
        } catch (err) {
          expect(err).to.be.instanceOf(RequestError);
        }
      }
      expect(answered, 'the slow consumer serves again after reconnecting').to.equal(true);
      expect(server.counters.garbage, 'the flood was not taken for envelopes').to.be.greaterThan(0);
      expect(log.filter((l) => /disconnected/.test(l.msg)).length).to.be.at.least(1);
    } finally {
      if (flooder.exitCode === null && flooder.pid !== undefined) process.kill(flooder.pid, 'SIGKILL');
    }
  });
});

