import { expect } from 'chai';
import pino from 'pino';
import { ShardServer } from '../../../src/channeld/shard-server';
import { Kind, Status } from '../../../src/cluster/kinds';
import { decodePayload, encodePayload } from '../../../src/cluster/messages';
import { Endpoint, type Reply } from '../../../src/ipc/endpoint';
import { normalizeName } from '../../../src/cluster/names';
import { readFindReply } from '../../../src/cluster/records';
import { LocalQueue, LocalTransport } from '../../../src/ipc/local/local-transport';
import { MTYPE_GC, chatdMtype, shardMtype } from '../../../src/ipc/mtypes';
import { shardFor } from '../../../src/cluster/shard-for';

const log = pino({ level: 'silent' });

/** Names that hash to shard `shard` of `shards`. */
function namesOn(shard: number, shards: number, n: number): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) if (shardFor(`user${i}`, shards) === shard) out.push(`user${i}`);
  return out;
}

describe('channeld - shard server (over the local transport)', () => {
  let queue: LocalQueue;
  let closers: (() => Promise<void>)[];

  beforeEach(() => {
    queue = new LocalQueue(1 << 20, 8192);
    closers = [];
  });
  afterEach(async () => {
    for (const c of closers.reverse()) await c();
    queue.remove();
  });

  /** An endpoint; `receive` starts it with a no-op handler so that it gets its replies. */
  function endpoint(mtype: number, incarnation: number, receive = true): Endpoint {
    const t = new LocalTransport(queue);
    const e = new Endpoint(t, { mtype, incarnation, maxBatchBytes: 4096 });
    if (receive) e.start(() => {});
    closers.push(async () => {
      await e.close();
      await t.close();
    });
    return e;
  }

  /** A collector stand-in for a fresh cluster: answers HELLO with "no chatD" (nothing to resync). */
  function emptyGc(): Endpoint {
    const gc = endpoint(MTYPE_GC, 3, false);
    gc.start((rec, reply) => {
      if (rec.kind === Kind.HELLO && reply) reply(Status.OK, encodePayload('helloReply', { chatds: [] }));
    });
    return gc;
  }

  /**
   * The chatDs the collector vouches for (its heartbeat answer's `chatds`), given to a shard
   * whenever it asks (askMembership): chatD instance 0 incarnation 1 and instance 1 incarnation 2.
   */
  let vouched: [number, number][];
  beforeEach(() => {
    vouched = [[chatdMtype(0), 1], [chatdMtype(1), 2]];
  });

  function shard(shardIndex: number, shards: number, recoveryMs = 100, withGc = true, vouchMs?: number): ShardServer {
    if (withGc) emptyGc();
    const s: ShardServer = new ShardServer(endpoint(shardMtype(shardIndex), 7000 + shardIndex, false), {
      shard: shardIndex,
      shards,
      recoveryMs,
      log,
      askMembership: () => setImmediate(() => s.noteMembership({ chatds: vouched })),
      ...(vouchMs !== undefined ? { vouchMs } : {}),
    });
    s.start();
    s.noteMembership({ chatds: vouched }); // the first heartbeat answer
    closers.push(async () => s.stop());
    return s;
  }

  const ask = (chatd: Endpoint, shardIndex: number, kind: number, payload: object) =>
    chatd.request(shardMtype(shardIndex), kind, Buffer.from(JSON.stringify(payload)), 1000);
  /** A FIND: its payload is the binary directory key (cluster/records.ts). */
  const find = (chatd: Endpoint, shardIndex: number, name: string) =>
    chatd.request(shardMtype(shardIndex), Kind.FIND, normalizeName(name), 1000);
  const hit = (r: Reply) => readFindReply(r.payload, 0, r.payload.length);

  it('serves login, find, move, remove once live; NAME_TAKEN across chatDs', async () => {
    const s = shard(0, 1);
    await s.whenLive();
    const c1 = endpoint(chatdMtype(0), 1);
    const c2 = endpoint(chatdMtype(1), 2);
    expect((await ask(c1, 0, Kind.LOGIN, { name: 'Alice', session: 1, channel: 3 })).status).to.equal(Status.OK);
    expect((await ask(c2, 0, Kind.LOGIN, { name: 'ALICE', session: 9, channel: 3 })).status).to.equal(Status.NAME_TAKEN);
    const found = await find(c2, 0, 'alice');
    expect(found.status).to.equal(Status.OK);
    expect(hit(found)).to.deep.equal({ name: 'Alice', channel: 3, owner: chatdMtype(0), ownerInc: 1 });
    expect((await ask(c1, 0, Kind.MOVE, { name: 'Alice', session: 1, channel: 4 })).status).to.equal(Status.OK);
    expect((await ask(c2, 0, Kind.MOVE, { name: 'Alice', session: 1, channel: 5 })).status).to.equal(Status.NOT_FOUND);
    expect(hit((await find(c1, 0, 'alice')))?.channel).to.equal(4);
    const notTheOwner = await ask(c2, 0, Kind.REMOVE, { name: 'Alice', session: 1, owner: chatdMtype(0), ownerInc: 1 });
    expect(notTheOwner.status, 'REMOVE of another chatD\'s session').to.equal(Status.BAD_REQUEST);
    const removed = await ask(c1, 0, Kind.REMOVE, { name: 'Alice', session: 1, owner: chatdMtype(0), ownerInc: 1 });
    expect(decodePayload('count', removed.payload)).to.deep.equal({ count: 1 });
    expect((await find(c1, 0, 'alice')).status).to.equal(Status.NOT_FOUND);
  });

  it('answers BAD_REQUEST to malformed payloads, unknown kinds and names of another shard', async () => {
    const s = shard(1, 2);
    await s.whenLive();
    const c = endpoint(chatdMtype(0), 1);
    expect((await c.request(shardMtype(1), Kind.FIND, Buffer.from('{not json'), 1000)).status).to.equal(Status.BAD_REQUEST);
    expect((await find(c, 1, 'bad name!')).status).to.equal(Status.BAD_REQUEST);
    expect((await c.request(shardMtype(1), Kind.FIND, Buffer.from([0xe0, 0x80]), 1000)).status, 'malformed UTF-8').to.equal(Status.BAD_REQUEST);
    expect((await c.request(shardMtype(1), Kind.FIND, 'Upper', 1000)).status, 'not a key').to.equal(Status.BAD_REQUEST);
    expect((await c.request(shardMtype(1), Kind.FIND, 'x'.repeat(97), 1000)).status, 'too long').to.equal(Status.BAD_REQUEST);
    expect((await c.request(shardMtype(1), Kind.FIND, Buffer.alloc(0), 1000)).status, 'empty').to.equal(Status.BAD_REQUEST);
    expect((await ask(c, 1, 0x55, {})).status).to.equal(Status.BAD_REQUEST);
    const other = namesOn(0, 2, 1)[0]!;
    expect((await find(c, 1, other)).status).to.equal(Status.BAD_REQUEST);
    expect(s.counters.wrongShard).to.equal(1);
    const mine = namesOn(1, 2, 1)[0]!;
    expect((await find(c, 1, mine)).status).to.equal(Status.NOT_FOUND);
  });

  it('recovers from the live chatDs before answering lookups, and tombstones removals that cross a resync', async () => {
    const gc = endpoint(MTYPE_GC, 3, false);
    const c = endpoint(chatdMtype(0), 1);
    const names = namesOn(0, 1, 3);
    gc.start((rec, reply) => {
      if (rec.kind === Kind.HELLO && reply) reply(Status.OK, encodePayload('helloReply', { chatds: [[chatdMtype(0), 1]] }));
    });
    const s = shard(0, 1, 5000, false);
    await new Promise((r) => setTimeout(r, 50));
    expect(s.state).to.equal('recovering');
    expect((await find(c, 0, names[0])).status).to.equal(Status.UNAVAILABLE);
    expect((await ask(c, 0, Kind.LOGIN, { name: names[0], session: 1, channel: 1 })).status).to.equal(Status.UNAVAILABLE);
    // names[2]'s session ended while the resync was on its way.
    await ask(c, 0, Kind.REMOVE, { name: names[2], session: 3, owner: chatdMtype(0), ownerInc: 1 });
    const sync = await ask(c, 0, Kind.SYNC, { entries: [[names[0], 1, 2], [names[1], 2, 3], [names[2], 3, 4]], last: true });
    expect(decodePayload('count', sync.payload)).to.deep.equal({ count: 2, conflicts: 0 });
    await s.whenLive();
    expect(hit((await find(c, 0, names[1])))?.channel).to.equal(3);
    expect((await find(c, 0, names[2])).status).to.equal(Status.NOT_FOUND);
  });

  it('never goes live on a timer: with no collector it stays recovering past the recovery window, and asks again until one answers', async () => {
    const s = shard(0, 1, 100, false);
    const c = endpoint(chatdMtype(0), 1);
    await new Promise((r) => setTimeout(r, 500));
    expect(s.state).to.equal('recovering');
    expect((await find(c, 0, 'user1')).status).to.equal(Status.UNAVAILABLE);
    emptyGc(); // the collector is back
    await s.whenLive();
    expect((await find(c, 0, 'user1')).status).to.equal(Status.NOT_FOUND);
  });

  it('re-asks the collector while a chatD has not resynced; a chatD that died meanwhile is no longer waited for', async () => {
    const gc = endpoint(MTYPE_GC, 3, false);
    let chatds: [number, number][] = [[chatdMtype(0), 1], [chatdMtype(1), 2]];
    let hellos = 0;
    gc.start((rec, reply) => {
      if (rec.kind === Kind.HELLO && reply) {
        hellos++;
        reply(Status.OK, encodePayload('helloReply', { chatds }));
      }
    });
    const s = new ShardServer(endpoint(shardMtype(0), 7000, false), { shard: 0, shards: 1, recoveryMs: 100, rehelloMs: 50, log });
    s.start();
    closers.push(async () => s.stop());
    const c0 = endpoint(chatdMtype(0), 1);
    await ask(c0, 0, Kind.SYNC, { entries: [], last: true });
    await new Promise((r) => setTimeout(r, 300));
    expect(s.state).to.equal('recovering');
    expect(hellos, 'HELLO repeated').to.be.greaterThan(2);
    chatds = [[chatdMtype(0), 1]]; // chatD 1 died: the collector stops naming it
    await s.whenLive();
  });

  it('purges one chatD incarnation once it is dead, on the collector\'s word', async () => {
    const gc = emptyGc();
    const s = shard(0, 1, 100, false);
    await s.whenLive();
    const old = endpoint(chatdMtype(0), 1);
    for (const [i, n] of namesOn(0, 1, 5).entries()) await ask(old, 0, Kind.LOGIN, { name: n, session: i + 1, channel: 1 });
    await old.close();
    // The collector purges before the shard heard that chatD 0 died: refused until it has.
    expect((await ask(gc, 0, Kind.PURGE, { owner: chatdMtype(0), ownerInc: 1 })).status, 'purge of a live incarnation').to.equal(Status.UNAVAILABLE);
    expect(s.directory.size).to.equal(5);
    vouched = [[chatdMtype(1), 2]];
    s.noteMembership({ chatds: vouched }); // the next heartbeat answer: chatD 0 is gone
    const r = await ask(gc, 0, Kind.PURGE, { owner: chatdMtype(0), ownerInc: 1 });
    expect(decodePayload('count', r.payload)).to.deep.equal({ count: 5 });
    expect(s.directory.size).to.equal(0);
  });

  it('takes directory changes only from chatD incarnations the collector vouches for (forged owners get UNAVAILABLE)', async () => {
    const gc = emptyGc();
    const s = shard(0, 1, 100, false, 200);
    await s.whenLive();
    const [alice, bob] = namesOn(0, 1, 2) as [string, string];
    const live = endpoint(chatdMtype(0), 1);
    expect((await ask(live, 0, Kind.LOGIN, { name: alice, session: 1, channel: 3 })).status).to.equal(Status.OK);
    await live.close(); // its mtype is the forger's now (two receivers on one mtype would take each other's replies)
    const observer = endpoint(chatdMtype(1), 2);
    // A forger on chatD 0's own mtype with a new incarnation: the old rule let a LOGIN of
    // another incarnation on the same mtype replace the entry ("left by a dead chatD").
    const forger = endpoint(chatdMtype(0), 666);
    const t0 = Date.now();
    expect((await ask(forger, 0, Kind.LOGIN, { name: alice, session: 9, channel: 7 })).status, 'takeover').to.equal(Status.UNAVAILABLE);
    expect(Date.now() - t0, 'refused after waiting for the collector').to.be.within(150, 1500);
    expect((await ask(forger, 0, Kind.LOGIN, { name: bob, session: 9, channel: 7 })).status, 'a new name').to.equal(Status.UNAVAILABLE);
    expect((await ask(forger, 0, Kind.PURGE, { owner: chatdMtype(0), ownerInc: 0, keep: 666 })).status, 'purge of the others').to.equal(Status.UNAVAILABLE);
    expect((await ask(forger, 0, Kind.PURGE, { owner: chatdMtype(0), ownerInc: 0, keep: 12345 })).status, 'keep not its own').to.equal(Status.BAD_REQUEST);
    expect((await ask(forger, 0, Kind.PURGE, { owner: chatdMtype(0), ownerInc: 1 })).status, 'purge by a chatD of an incarnation').to.equal(Status.BAD_REQUEST);
    expect((await ask(gc, 0, Kind.PURGE, { owner: chatdMtype(0), ownerInc: 1 })).status, 'purge of the live incarnation').to.equal(Status.UNAVAILABLE);
    expect((await ask(forger, 0, Kind.SYNC, { entries: [[bob, 9, 7]], last: true })).status, 'sync').to.equal(Status.UNAVAILABLE);
    expect(hit(await find(observer, 0, alice))).to.deep.equal({ name: alice, channel: 3, owner: chatdMtype(0), ownerInc: 1 });
    expect((await find(observer, 0, bob)).status).to.equal(Status.NOT_FOUND);
    expect(s.counters.unvouched).to.be.at.least(4);
    await forger.close();

    // A real restart: the collector now vouches for incarnation 2 (it saw 1 die). Its requests,
    // sent before the shard heard so, wait for the collector's word and then go through in order.
    const successor = endpoint(chatdMtype(0), 2);
    const purge = ask(successor, 0, Kind.PURGE, { owner: chatdMtype(0), ownerInc: 0, keep: 2 });
    const login = ask(successor, 0, Kind.LOGIN, { name: bob, session: 1, channel: 5 });
    const move = ask(successor, 0, Kind.MOVE, { name: bob, session: 1, channel: 6 });
    vouched = [[chatdMtype(0), 2]];
    expect(decodePayload('count', (await purge).payload)).to.deep.equal({ count: 1 });
    expect((await login).status).to.equal(Status.OK);
    expect((await move).status).to.equal(Status.OK);
    expect(hit(await find(observer, 0, bob))?.channel).to.equal(6);
    expect((await find(observer, 0, alice)).status).to.equal(Status.NOT_FOUND);
  });
});
