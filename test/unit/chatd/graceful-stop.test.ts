import { expect } from 'chai';
import pino from 'pino';
import { ChatdServer } from '../../../src/chatd/chatd-server';
import { ShardClient } from '../../../src/chatd/shard-client';
import { ShardServer } from '../../../src/channeld/shard-server';
import { Kind, Status } from '../../../src/cluster/kinds';
import { encodePayload } from '../../../src/cluster/messages';
import { LEAVING_MARK_BYTES, leavingMark, readLeavingMark } from '../../../src/cluster/records';
import { normalizeName } from '../../../src/cluster/names';
import { OwnershipView } from '../../../src/cluster/ownership';
import { loadConfig } from '../../../src/config';
import { ClientError, ClientErrorCode } from '../../../src/errors';
import { Endpoint } from '../../../src/ipc/endpoint';
import { LocalQueue, LocalTransport } from '../../../src/ipc/local/local-transport';
import { MTYPE_GC, chatdMtype, shardMtype } from '../../../src/ipc/mtypes';
import { ChatClient, loggedIn } from '../../helpers/chat-client';
import { expectError, expectErrorPush } from '../../e2e/e2e-support';

const log = pino({ level: 'silent' });
const SHARDS = 2;
/** The membership epoch of these tests: shards 0 and 1 (docs/resharding.md). */
const VIEW = { epoch: 1, members: [[0, SHARDS - 1]] as [number, number][] };
const OWNERSHIP = new OwnershipView(1, [0, 1]);
/** The first name of `prefix` + counter owned by `shard` under VIEW. */
const nameOn = (shard: number, prefix: string): string => {
  for (let i = 0; ; i++) if (OWNERSHIP.ownerOfKey(normalizeName(`${prefix}${i}`)) === shard) return `${prefix}${i}`;
};

describe('reload - the leaving mark', () => {
  it('round-trips the incarnation; anything but exactly a mark is not one', () => {
    for (const inc of [0, 1, 0x7fffffff, 0xffffffff]) {
      const m = leavingMark(inc);
      expect(m.length).to.equal(LEAVING_MARK_BYTES);
      expect(readLeavingMark(m, 0, m.length)).to.equal(inc);
      const framed = Buffer.concat([Buffer.from([9, 9]), m, Buffer.from([9])]);
      expect(readLeavingMark(framed, 2, 2 + LEAVING_MARK_BYTES)).to.equal(inc);
    }
    const m = leavingMark(5);
    expect(readLeavingMark(Buffer.alloc(0), 0, 0), 'empty (a plain UNAVAILABLE)').to.equal(undefined);
    expect(readLeavingMark(m, 0, 4), 'short').to.equal(undefined);
    expect(readLeavingMark(Buffer.concat([m, Buffer.from([0])]), 0, 6), 'long').to.equal(undefined);
    expect(readLeavingMark(Buffer.from([0x4d, 5, 0, 0, 0]), 0, 5), 'other first byte').to.equal(undefined);
    expect(readLeavingMark(m, 1, 6), 'past the end').to.equal(undefined);
  });
});

describe('reload - chatD holds a leaving shard down until its successor', () => {
  const endpoint = { mtype: 1000, incarnation: 1 } as unknown as Endpoint;

  it('an UNAVAILABLE with the mark is UNAVAILABLE for the client, and the shard is down until another incarnation is reported', () => {
    const client = new ShardClient(endpoint, SHARDS, 1000, 10_000);
    const name = nameOn(1, 'Leaver');
    client.setMembership([[0, 70], [1, 71]], VIEW);
    const mark = leavingMark(71);
    let err: unknown;
    try {
      client.findOutcome(Status.UNAVAILABLE, mark, 0, mark.length, name.toLowerCase());
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(ClientError);
    expect((err as ClientError).code).to.equal(ClientErrorCode.UNAVAILABLE);
    expect(client.isUp(1), 'leaving').to.equal(false);
    expect(client.isUp(0), 'the other shard').to.equal(true);
    expect(client.counters.leavingMarks).to.equal(1);
    client.setMembership([[0, 70], [1, 71]]);
    expect(client.isUp(1), 'the collector still lists the leaving incarnation').to.equal(false);
    client.setMembership([[0, 70]]);
    expect(client.isUp(1), 'gone from the membership').to.equal(false);
    client.setMembership([[0, 70], [1, 72]]);
    expect(client.isUp(1), 'its successor is reported').to.equal(true);
    expect(client.isUp(1), 'and stays up').to.equal(true);
  });

  it('a notice about an incarnation other than the one the collector names is ignored (forged or stale)', () => {
    const client = new ShardClient(endpoint, SHARDS, 1000, 10_000);
    client.setMembership([[0, 70], [1, 71]], VIEW);
    client.noteLeaving(1, 99);
    expect(client.isUp(1)).to.equal(true);
    expect(client.counters.leavingMarks).to.equal(0);
    client.noteLeaving(1, 71);
    expect(client.isUp(1)).to.equal(false);
  });

  it('a plain UNAVAILABLE (a recovering shard) marks nothing', () => {
    const client = new ShardClient(endpoint, SHARDS, 1000, 10_000);
    expect(() => client.findOutcome(Status.UNAVAILABLE, Buffer.alloc(0), 0, 0, nameOn(0, 'x').toLowerCase())).to.throw(ClientError);
    expect(client.isUp(0)).to.equal(true);
    expect(client.counters.leavingMarks).to.equal(0);
  });
});

/** chatD with its real TCP server and shards over the in-process transport. */
describe('reload - graceful stops over the local transport', () => {
  let queue: LocalQueue;
  let closers: (() => Promise<void>)[];
  let clients: ChatClient[];

  beforeEach(() => {
    queue = new LocalQueue(1 << 20, 8192);
    closers = [];
    clients = [];
  });
  afterEach(async () => {
    for (const c of clients) await c.destroy();
    for (const c of closers.reverse()) await c().catch(() => {});
    queue.remove();
  });

  const transport = (): LocalTransport => {
    const t = new LocalTransport(queue);
    closers.push(() => t.close());
    return t;
  };

  /**
   * Live shards. A stand-in collector answers their HELLO with "no chatD yet" and epoch 1, and
   * chatD's heartbeat with the shards and that epoch (chatD routes by it).
   */
  async function shards(): Promise<{ server: ShardServer; endpoint: Endpoint }[]> {
    const gc = new Endpoint(transport(), { mtype: MTYPE_GC, incarnation: 3, maxBatchBytes: 4096 });
    gc.start((rec, reply) => {
      if (rec.kind === Kind.HELLO && reply) reply(Status.OK, encodePayload('helloReply', { chatds: [], view: VIEW }));
      if (rec.kind === Kind.HEARTBEAT && reply) {
        const live = Array.from({ length: SHARDS }, (_, i): [number, number] => [i, 500 + i]);
        reply(Status.OK, encodePayload('membership', { shards: live, view: { ...VIEW, settled: true } }));
      }
    });
    closers.push(() => gc.close());
    const out: { server: ShardServer; endpoint: Endpoint }[] = [];
    for (let i = 0; i < SHARDS; i++) {
      const endpoint = new Endpoint(transport(), { mtype: shardMtype(i), incarnation: 500 + i, maxBatchBytes: 4096 });
      const server = new ShardServer(endpoint, { shard: i, recoveryMs: 50, log });
      closers.push(async () => {
        server.stop();
        await endpoint.close();
      });
      server.start();
      out.push({ server, endpoint });
    }
    await Promise.all(out.map((s) => s.server.whenLive()));
    return out;
  }

  async function chatd(): Promise<{ server: ChatdServer; port: number }> {
    const cfg = loadConfig({ CHATD_PORT: '0', CHANNELD_SHARDS: String(SHARDS), SHARD_RECOVERY_MS: '100', CHATD_REQUEST_TIMEOUT_MS: '300' });
    const t = transport();
    const e = new Endpoint(t, { mtype: chatdMtype(0), incarnation: 900, maxBatchBytes: 4096 });
    const server = new ChatdServer(cfg, t, e, log, 0);
    const address = await server.start();
    closers.push(() => server.stop());
    return { server, port: address.port };
  }

  const track = (c: ChatClient): ChatClient => {
    clients.push(c);
    return c;
  };

  it('chatD stop: a request in flight gets its reply before the shutdown push; nothing is read after; the session is removed', async () => {
    const sh = await shards();
    const { server, port } = await chatd();
    const watcher = track(await loggedIn(port, nameOn(0, 'Watcher'), 1));
    const a = track(await loggedIn(port, nameOn(0, 'Alice'), 2));
    expect(sh[0]!.server.directory.size).to.equal(2);
    // Shard 1 stops receiving: a find of a name it owns stays in flight until chatD's TIMEOUT (300 ms).
    sh[1]!.server.stop();
    await sh[1]!.endpoint.close();
    const pending = a.request({ op: 'find', name: nameOn(1, 'Ghost') }, 5000);
    await new Promise((r) => setTimeout(r, 50));
    const stopping = server.stop();
    a.send({ op: 'find', id: 99, name: 'late' }); // after the stop began: never read, never answered
    const r = await pending;
    expectError(r, 'TIMEOUT', 'find', r.id as number);
    await a.closed;
    await watcher.closed;
    await stopping;
    const ids = a.frames.map((f) => f.id);
    expect(ids, 'the late request got no reply').to.not.include(99);
    const push = a.frames.at(-1)!;
    expectErrorPush(push, 'UNAVAILABLE');
    expect((push.error as { message: string }).message).to.equal('server shutting down');
    expect(a.frames.indexOf(push), 'the reply came before the push').to.be.greaterThan(a.frames.indexOf(a.frames.find((f) => f.id === r.id)!));
    expect(sh[0]!.server.directory.size, 'the sessions were removed before chatD stopped').to.equal(0);
  });

  it('shard leave(): chatD is told, answers UNAVAILABLE without asking, and the shard goes once quiet', async () => {
    const sh = await shards();
    const { server, port } = await chatd();
    const bob = nameOn(1, 'Bob');
    track(await loggedIn(port, bob, 7));
    const asker = track(await loggedIn(port, nameOn(0, 'Asker'), 1));
    expect((await asker.request({ op: 'find', name: bob })).online).to.equal(true);
    const leaving = sh[1]!.server;
    const requestsBefore = leaving.counters.requests;
    const t0 = Date.now();
    const left = leaving.leave(150, 2000);
    await new Promise((r) => setTimeout(r, 30)); // the LEAVING notice crosses the queue
    expect(server.shards.isUp(1), 'chatD holds shard 1 down').to.equal(false);
    for (let i = 0; i < 5; i++) expectError(await asker.request({ op: 'find', id: 10 + i, name: bob }), 'UNAVAILABLE', 'find', 10 + i);
    const login = await (track(await ChatClient.connect(port))).request({ op: 'login', id: 3, name: nameOn(1, 'Carol'), channel: 1 });
    expectError(login, 'UNAVAILABLE', 'login', 3);
    expect(leaving.counters.requests, 'nothing was sent to the leaving shard').to.equal(requestsBefore);
    expect((await asker.request({ op: 'find', name: nameOn(0, 'Asker') })).online, 'the other shard serves').to.equal(true);
    await left;
    expect(Date.now() - t0, 'left once quiet').to.be.within(140, 1500);
    expect(leaving.state).to.equal('leaving');
    // Its successor appears in the collector's membership: chatD asks it again.
    server.shards.setMembership([[0, 500], [1, 777]], VIEW);
    expect(server.shards.isUp(1)).to.equal(true);
  });

  it('shard leave(): a chatD it never heard from learns it from the mark on its first reply', async () => {
    const sh = await shards();
    const t = transport();
    const e = new Endpoint(t, { mtype: chatdMtype(5), incarnation: 905, maxBatchBytes: 4096 });
    e.start(() => {});
    closers.push(() => e.close());
    const client = new ShardClient(e, SHARDS, 1000, 10_000);
    client.setMembership([[0, 500], [1, 501]], VIEW);
    const left = sh[1]!.server.leave(200, 2000);
    let err: unknown;
    try {
      await client.find(nameOn(1, 'Dave'));
    } catch (x) {
      err = x;
    }
    expect((err as ClientError).code).to.equal(ClientErrorCode.UNAVAILABLE);
    expect(client.counters.leavingMarks).to.equal(1);
    expect(client.isUp(1)).to.equal(false);
    expect(sh[1]!.server.counters.leavingRefused).to.equal(1);
    // REMOVE is still applied while leaving.
    const r = await e.request(shardMtype(1), Kind.REMOVE, encodePayload('remove', { name: nameOn(1, 'Dave'), session: 1, owner: 1005, ownerInc: 905 }), 1000);
    expect(r.status).to.equal(Status.OK);
    await left;
  });
});
