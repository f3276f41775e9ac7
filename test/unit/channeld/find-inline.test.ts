import { expect } from 'chai';
import fc from 'fast-check';
import pino from 'pino';
import { Kind, Status } from '../../../src/cluster/kinds';
import { normalizeName } from '../../../src/cluster/names';
import { isKeyBytes, readFindReply, readKey } from '../../../src/cluster/records';
import { fnv1a32 } from '../../../src/cluster/shard-for';
import { OwnershipView } from '../../../src/cluster/ownership';
import { BucketStates } from '../../../src/channeld/bucket-states';
import { Directory } from '../../../src/channeld/directory';
import { R_DEFERRED, R_FINDS, R_SEND_FAILED, ReplicaReader, ReplicaWriter, createReplicaMemory } from '../../../src/channeld/directory-replica';
import { createInlineHandler, type InlineIo } from '../../../src/channeld/find-inline';
import { ShardServer } from '../../../src/channeld/shard-server';
import { Endpoint, REPLY_BIT, checkEnvelope, decodeEnvelope, encodeEnvelope, deadlineIn, newIncarnation } from '../../../src/ipc';
import { SysvTransport, defaultSysvTransportOptions } from '../../../src/ipc/sysv/sysv-transport';
import { MTYPE_GC, chatdMtype, shardMtype } from '../../../src/ipc/mtypes';
import { encodePayload } from '../../../src/cluster/messages';
import { join } from 'node:path';
import { useQueues } from '../../helpers/queues';
import { waitFor } from '../../helpers/wait';

const log = pino({ level: 'silent' });
const b = (s: string): Buffer => Buffer.from(s, 'utf8');
/** A FIND payload: u32 membership epoch, then the key (docs/resharding.md). */
const fp = (key: string, epoch = 1): Buffer => {
  const e = Buffer.alloc(4);
  e.writeUInt32LE(epoch, 0);
  return Buffer.concat([e, b(key)]);
};

describe('channeld - FIND in the receiver thread (replica and inline handler)', () => {
  it('isKeyBytes - agrees with readKey on any bytes and on every key (fast-check)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), (bytes) => {
        const buf = Buffer.from(bytes);
        return isKeyBytes(buf, 0, buf.length) === (readKey(buf, 0, buf.length) !== undefined);
      }),
      { numRuns: 20_000 },
    );
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 30 }), (s) => {
        const buf = b(s);
        return isKeyBytes(buf, 0, buf.length) === (readKey(buf, 0, buf.length) !== undefined);
      }),
      { numRuns: 5000 },
    );
  });

  it('replica - mirrors logins, moves, removes and purges of the directory; unusable until live', () => {
    const w = new ReplicaWriter(createReplicaMemory(64));
    const d = new Directory(w);
    const r = new ReplicaReader(w.views.memory);
    const out = Buffer.alloc(200);
    const look = (name: string): string | number => {
      const k = b(normalizeName(name));
      const n = r.find(k, 0, k.length, fnv1a32(k), out, 0);
      return n >= 0 ? `${out.toString('utf8', 0, n)}@${r.hit.channel}/${r.hit.owner}/${r.hit.ownerInc}` : n;
    };
    d.login('Alice', 3, 1000, 7, 1);
    expect(look('alice'), 'not live: the main thread answers').to.equal(-2);
    w.setLive(true);
    expect(look('ALICE')).to.equal('Alice@3/1000/7');
    d.move('alice', 9, 1000, 7, 1);
    expect(look('alice')).to.equal('Alice@9/1000/7');
    d.login('타락파워전사', 2, 1001, 8, 5);
    expect(look('타락파워전사')).to.equal('타락파워전사@2/1001/8');
    d.remove('alice', 1000, 7, 1);
    expect(look('alice')).to.equal(-1);
    d.purge(1001, 8);
    expect(look('타락파워전사')).to.equal(-1);
    // Many logins and removals: deleted buckets are rebuilt away, entries stay findable.
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 60; i++) d.login(`u${round}_${i}`, 1 + (i % 20), 1000, 7, 100 + i);
      for (let i = 0; i < 60; i += 2) d.remove(`u${round}_${i}`, 1000, 7, 100 + i);
      expect(look(`u${round}_1`)).to.equal(`u${round}_1@2/1000/7`);
      for (let i = 1; i < 60; i += 2) d.remove(`u${round}_${i}`, 1000, 7, 100 + i);
    }
    // Full: the replica stops answering (every FIND goes to the main thread), never wrongly.
    for (let i = 0; i < 65; i++) d.login(`full${i}`, 1, 1000, 7, 1000 + i);
    expect(w.usable).to.equal(false);
    expect(look('full0')).to.equal(-2);
  });

  /** Shard 0 of `shards`, at epoch 1 with its hand-over complete (its buckets served). */
  function handlerRig(shards = 1, full: () => boolean = () => false) {
    const memory = createReplicaMemory(256);
    const w = new ReplicaWriter(memory);
    const d = new Directory(w);
    const view = new OwnershipView(1, Array.from({ length: shards }, (_, i) => i));
    const states = new BucketStates(0, w.states, (e) => w.setEpoch(e));
    states.adopt(view);
    states.expect([]);
    const sent: { mtype: number; body: Buffer }[] = [];
    const deferred: { mtype: number; body: Buffer }[] = [];
    const io: InlineIo = {
      maxMessageBytes: 8192,
      msgsnd: (mtype, buf, textBytes) => {
        if (full()) return -1;
        sent.push({ mtype, body: Buffer.from(buf.subarray(8, 8 + textBytes)) });
        expect(buf.readUInt32LE(0)).to.equal(mtype);
        return 0;
      },
      defer: (mtype, buf, textBytes) => {
        expect(buf.readUInt32LE(0)).to.equal(mtype);
        deferred.push({ mtype, body: Buffer.from(buf.subarray(8, 8 + textBytes)) });
      },
      errno: () => 11,
      EAGAIN: 11,
      EINTR: 4,
    };
    const h = createInlineHandler({ replica: memory, mtype: shardMtype(0), incarnation: 4242 }, io);
    const handle = (body: Buffer): boolean => {
      const framed = Buffer.concat([Buffer.alloc(5), body, Buffer.alloc(3)]);
      return h.handle(framed, 5, body.length);
    };
    return { w, d, sent, deferred, handle, view, states };
  }

  const findEnvelope = (names: string[], extra: { deadline?: number; toIncarnation?: number; epoch?: number } = {}) =>
    encodeEnvelope(
      { from: chatdMtype(0), fromIncarnation: 99, toIncarnation: extra.toIncarnation ?? 0 },
      names.map((n, i) => ({ kind: Kind.FIND, reqId: 500 + i, deadline: extra.deadline ?? deadlineIn(5000), payload: fp(normalizeName(n), extra.epoch ?? 1) })),
    );

  it('inline handler - answers an envelope of FINDs as the main thread would: hits, misses, bad keys, expired', () => {
    const { w, d, sent, handle } = handlerRig();
    d.login('Bob_7', 12, chatdMtype(0), 99, 3);
    expect(handle(findEnvelope(['bob_7'])), 'not live yet: handed over').to.equal(false);
    w.setLive(true);
    const env = encodeEnvelope({ from: chatdMtype(0), fromIncarnation: 99, toIncarnation: 0 }, [
      { kind: Kind.FIND, reqId: 1, deadline: deadlineIn(5000), payload: fp('bob_7') },
      { kind: Kind.FIND, reqId: 2, deadline: deadlineIn(5000), payload: fp('nobody') },
      { kind: Kind.FIND, reqId: 3, deadline: deadlineIn(5000), payload: fp('Bad Key') },
      { kind: Kind.FIND, reqId: 4, deadline: deadlineIn(-50), payload: fp('bob_7') },
    ]);
    expect(handle(env)).to.equal(true);
    expect(sent).to.have.length(1);
    expect(sent[0]!.mtype).to.equal(chatdMtype(0));
    const reply = decodeEnvelope(sent[0]!.body);
    if (!reply.ok) throw new Error(`bad reply envelope: ${reply.reason}`);
    expect(reply.header).to.deep.equal({ from: shardMtype(0), fromIncarnation: 4242, toIncarnation: 99 });
    const recs = reply.records.map((r) => ({ kind: r.kind, status: r.status, reqId: r.reqId, hit: r.status === Status.OK ? readFindReply(r.payload, 0, r.payload.length) : r.payload.length }));
    expect(recs).to.deep.equal([
      { kind: Kind.FIND | REPLY_BIT, status: Status.OK, reqId: 1, hit: { name: 'Bob_7', channel: 12, owner: chatdMtype(0), ownerInc: 99 } },
      { kind: Kind.FIND | REPLY_BIT, status: Status.NOT_FOUND, reqId: 2, hit: 0 },
      { kind: Kind.FIND | REPLY_BIT, status: Status.BAD_REQUEST, reqId: 3, hit: 0 },
    ]);
    expect(Atomics.load(w.views.control, R_FINDS)).to.equal(3);
  });

  it('inline handler - hands over anything else: other kinds, mixed envelopes, garbage, another incarnation, names of another shard or routed by another epoch', () => {
    const { w, sent, handle, view, states } = handlerRig(2);
    w.setLive(true);
    const mixed = encodeEnvelope({ from: chatdMtype(0), fromIncarnation: 99, toIncarnation: 0 }, [
      { kind: Kind.FIND, reqId: 1, deadline: deadlineIn(5000), payload: fp('x') },
      { kind: Kind.LOGIN, reqId: 2, deadline: deadlineIn(5000), payload: b('{}') },
    ]);
    expect(handle(mixed)).to.equal(false);
    expect(handle(Buffer.from('CHAT hello\0'))).to.equal(false);
    const whole = findEnvelope(['a']);
    expect(handle(whole.subarray(0, whole.length - 1)), 'truncated').to.equal(false);
    expect(handle(findEnvelope(['a'], { toIncarnation: 1234 })), 'another incarnation').to.equal(false);
    const oneWay = encodeEnvelope({ from: 5, fromIncarnation: 1, toIncarnation: 0 }, [{ kind: Kind.FIND, reqId: 0, payload: fp('a') }]);
    expect(handle(oneWay), 'a FIND without request id').to.equal(false);
    let other = 'n0';
    let mine = 'n0';
    for (let i = 0; view.ownerOfKey(other) !== 1; i++) other = `n${i}`;
    for (let i = 0; view.ownerOfKey(mine) !== 0; i++) mine = `n${i}`;
    // Not this shard's under that epoch, or another epoch than the replica's: the main thread
    // decides (WRONG_EPOCH, or parked when the sender is ahead), never "offline" from here.
    expect(handle(findEnvelope([other])), 'a name of shard 1').to.equal(false);
    expect(handle(findEnvelope([mine], { epoch: 2 })), 'routed by epoch 2').to.equal(false);
    expect(handle(findEnvelope([mine], { epoch: 0 })), 'no epoch').to.equal(false);
    expect(sent).to.have.length(0);
    // A new epoch in which the bucket waits for its hand-over: handed over too.
    states.adopt(view.next(2, [0]));
    expect(handle(findEnvelope([other], { epoch: 2 })), 'gained, waiting').to.equal(false);
    expect(handle(findEnvelope([mine], { epoch: 2 })), 'kept: served').to.equal(true);
    expect(sent).to.have.length(1);
  });

  it('inline handler - a full queue: the reply goes to the main thread\'s send backlog at once, never waited for in the thread', () => {
    let full = true;
    const rig = handlerRig(1, () => full);
    rig.w.setLive(true);
    rig.d.login('Zed', 7, chatdMtype(0), 99, 1);
    const t0 = Date.now();
    expect(rig.handle(findEnvelope(['zed', 'nobody'], { deadline: deadlineIn(5000) }))).to.equal(true);
    expect(Date.now() - t0, 'no waiting in the thread').to.be.below(50);
    expect(rig.sent).to.have.length(0);
    expect(rig.deferred).to.have.length(1);
    expect(rig.deferred[0]!.mtype).to.equal(chatdMtype(0));
    const r = decodeEnvelope(rig.deferred[0]!.body);
    if (!r.ok) throw new Error(`bad deferred envelope: ${r.reason}`);
    expect(r.records.map((x) => [x.reqId, x.status])).to.deep.equal([[500, Status.OK], [501, Status.NOT_FOUND]]);
    expect(readFindReply(r.records[0]!.payload, 0, r.records[0]!.payload.length)?.channel).to.equal(7);
    expect(Atomics.load(rig.w.views.control, R_DEFERRED)).to.equal(1);
    expect(Atomics.load(rig.w.views.control, R_SEND_FAILED)).to.equal(0);
    // Room again: sent directly.
    full = false;
    expect(rig.handle(findEnvelope(['zed']))).to.equal(true);
    expect(rig.sent).to.have.length(1);
    expect(rig.deferred).to.have.length(1);
  });

  it('inline handler - a big envelope of hits is answered in several reply envelopes that fit msgmax', () => {
    const { w, d, sent, handle } = handlerRig();
    w.setLive(true);
    const names = Array.from({ length: 200 }, (_, i) => `가나다라마바사아자차카타파하_${i}`);
    names.forEach((n, i) => d.login(n, 1 + (i % 20), chatdMtype(0), 99, i + 1));
    expect(handle(findEnvelope(names))).to.equal(true);
    expect(sent.length).to.be.above(1);
    const ids: number[] = [];
    for (const s of sent) {
      expect(s.body.length).to.be.at.most(8192);
      expect(checkEnvelope(s.body)).to.be.a('number');
      const r = decodeEnvelope(s.body);
      if (r.ok) for (const rec of r.records) ids.push(rec.reqId);
    }
    expect(ids).to.deep.equal(names.map((_, i) => 500 + i));
  });

  describe('over a real queue', function () {
    this.timeout(20_000);
    const scope = useQueues();

    it('a shard with the inline handler answers FINDs from its receiver thread, and a FIND sent after a LOGIN sees it', async () => {
      const q = scope.create();
      const memory = createReplicaMemory(1024);
      const replica = new ReplicaWriter(memory);
      const shardInc = newIncarnation();
      const st = scope.track(new SysvTransport(q, {
        ...defaultSysvTransportOptions,
        receiver: { ...defaultSysvTransportOptions.receiver, inline: { module: join(__dirname, '../../../src/channeld/find-inline.js'), data: { replica: memory, mtype: shardMtype(0), incarnation: shardInc } } },
      }));
      const se = scope.track(new Endpoint(st, { mtype: shardMtype(0), incarnation: shardInc, maxBatchBytes: 4096 }));
      // A collector stand-in for a fresh cluster: HELLO answered with "no chatD", so the shard goes live.
      const gt = scope.track(new SysvTransport(q));
      const gc = scope.track(new Endpoint(gt, { mtype: MTYPE_GC, incarnation: newIncarnation(), maxBatchBytes: 4096 }));
      gc.start((rec, reply) => {
        if (rec.kind === Kind.HELLO && reply) reply(Status.OK, encodePayload('helloReply', { chatds: [], view: { epoch: 1, members: [[0, 0]] } }));
      });
      const shard = new ShardServer(se, { shard: 0, recoveryMs: 50, log, replica });
      shard.start();
      await shard.whenLive();
      const ct = scope.track(new SysvTransport(q));
      const chatdInc = newIncarnation();
      const chatd = scope.track(new Endpoint(ct, { mtype: chatdMtype(0), incarnation: chatdInc, maxBatchBytes: 4096 }));
      chatd.start(() => {});
      shard.noteMembership({ chatds: [[chatdMtype(0), chatdInc]] }); // the collector vouches for it
      const handledByMain = (): number => shard.counters.requests;
      const before = handledByMain();
      // Pipelined in one turn: LOGIN then FIND of the same name, then many FINDs.
      const login = chatd.request(shardMtype(0), Kind.LOGIN, Buffer.from(JSON.stringify({ name: 'Zed', session: 1, channel: 4, epoch: 1 })), 2000);
      const first = chatd.request(shardMtype(0), Kind.FIND, fp('zed'), 2000);
      expect((await login).status).to.equal(Status.OK);
      const f = await first;
      expect(f.status, 'a FIND queued after the LOGIN sees it').to.equal(Status.OK);
      expect(readFindReply(f.payload, 0, f.payload.length)?.channel).to.equal(4);
      const mainAfterLogin = handledByMain();
      const many = await Promise.all(Array.from({ length: 2000 }, (_, i) => chatd.request(shardMtype(0), Kind.FIND, fp(i % 2 ? 'zed' : `ghost${i}`), 5000)));
      many.forEach((r, i) => expect(r.status, `find ${i}`).to.equal(i % 2 ? Status.OK : Status.NOT_FOUND));
      expect(handledByMain() - mainAfterLogin, 'FINDs that reached the main thread').to.be.below(2000);
      expect(Atomics.load(replica.views.control, R_FINDS), 'FINDs answered in the receiver thread').to.be.above(0);
      expect(mainAfterLogin - before, 'the LOGIN and the FIND behind it').to.be.at.most(2);
      shard.stop();
    });

    it('a queue full of FINDs for the shard itself: its receiver thread never waits for room that only its own receiving frees (the 1.3 s stall of bench:e2e)', async () => {
      // A hit's reply record is 6 bytes bigger than its request record, so the reply to an
      // envelope taken from a full queue does not fit in the room that envelope left. If the
      // thread waits for room instead of receiving, nothing drains the queue: every request in
      // it is for this thread. (With four shards the queue full of requests for all four is
      // the same deadlock; chatD's send backlog refills whatever room a shard frees.)
      const q = scope.create();
      const capacity = q.stat().capacity;
      const memory = createReplicaMemory(1024);
      const w = new ReplicaWriter(memory);
      const d = new Directory(w);
      const states = new BucketStates(0, w.states, (e) => w.setEpoch(e));
      states.adopt(new OwnershipView(1, [0]));
      states.expect([]);
      const names = Array.from({ length: 400 }, (_, i) => `Hero_${i}`);
      names.forEach((n, i) => d.login(n, 1 + (i % 20), chatdMtype(0), 99, i + 1));
      w.setLive(true);
      // chatD's stand-in: a receiver on chatD's mtype that collects the replies.
      const ct = scope.track(new SysvTransport(q));
      const answered = new Map<number, number>();
      ct.receive(chatdMtype(0), (batch) => {
        for (const m of batch) {
          const env = decodeEnvelope(m.body);
          if (!env.ok) continue;
          for (const r of env.records) answered.set(r.reqId, r.status === Status.OK ? readFindReply(r.payload, 0, r.payload.length)!.channel : -r.status);
        }
      });
      // Fill the queue with FIND envelopes for shard 0 (chatD's 4 KiB batches, then single
      // FINDs until msgsnd says EAGAIN), every one a hit, deadlines 3 s away.
      const deadline = deadlineIn(3000);
      const expected = new Map<number, number>();
      let reqId = 1;
      for (const per of [150, 1]) {
        for (;;) {
          const recs = Array.from({ length: per }, (_, k) => {
            const i = (reqId + k) % names.length;
            return { kind: Kind.FIND, reqId: reqId + k, deadline, payload: fp(normalizeName(names[i]!)) };
          });
          const env = encodeEnvelope({ from: chatdMtype(0), fromIncarnation: 99, toIncarnation: 0 }, recs);
          if (!q.trySend(shardMtype(0), env)) break;
          for (const r of recs) expected.set(r.reqId, 1 + ((r.reqId % names.length) % 20));
          reqId += per;
        }
      }
      expect(q.stat().bytes, 'the queue is full').to.be.above(capacity - 64);
      // The shard's receiver thread, with the inline handler (its main thread gets nothing).
      let mainThread = 0;
      const st = scope.track(new SysvTransport(q, {
        ...defaultSysvTransportOptions,
        receiver: { ...defaultSysvTransportOptions.receiver, inline: { module: join(__dirname, '../../../src/channeld/find-inline.js'), data: { replica: memory, mtype: shardMtype(0), incarnation: 4242 } } },
      }));
      const t0 = Date.now();
      st.receive(shardMtype(0), (batch) => (mainThread += batch.length));
      await waitFor(() => answered.size === expected.size, 1500, 5, `${expected.size} FINDs answered`).catch(() => {});
      const ms = Date.now() - t0;
      expect(answered.size, `FINDs answered within ${ms} ms (their deadline is 3 s away)`).to.equal(expected.size);
      for (const [id, channel] of expected) expect(answered.get(id), `request ${id}`).to.equal(channel);
      expect(mainThread, 'envelopes that reached the shard main thread\'s handler').to.equal(0);
      expect(Atomics.load(w.views.control, R_SEND_FAILED)).to.equal(0);
      expect(Atomics.load(w.views.control, R_DEFERRED), 'replies that met the full queue went to the backlog').to.be.above(0);
    });
  });
});
