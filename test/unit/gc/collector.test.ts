import { expect } from 'chai';
import { Kind, Status } from '../../../src/cluster/kinds';
import { EMPTY, decodePayload, encodePayload, type MembershipPayload } from '../../../src/cluster/messages';
import { MTYPE_GC, MTYPE_LEGACY_REPLY, encodeEnvelope, shardMtype, toolMtype } from '../../../src/ipc';
import { OwnershipView } from '../../../src/cluster/ownership';
import { waitFor } from '../../helpers/wait';
import { legacyReplyBody, legacyRequestText } from '../../../src/chatd/legacy-gateway';
import { linesWith, makeRig, type Peer, type Rig } from './gc-rig';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const HYGIENE = 'queue hygiene: drained messages nobody reads';

/** A name that `shard` owns at the collector's first epoch (members 0..shards-1, docs/resharding.md). */
function nameOn(shard: number, shards: number): string {
  const v = new OwnershipView(1, Array.from({ length: shards }, (_, i) => i));
  for (let i = 0; ; i++) if (v.ownerOfKey(`hero${i}`) === shard) return `Hero${i}`;
}

describe('gc collector', function () {
  let rig: Rig;
  afterEach(async () => {
    await rig?.close();
  });

  describe('heartbeat', () => {
    it('heartbeat - records the process and replies OK with the live shards and chatDs', async () => {
      rig = makeRig({ shards: 2 });
      const s0 = rig.shard(0);
      const s1 = rig.shard(1);
      const c = rig.chatd(0);
      expect((await s0.heartbeat('channeld', 0)).status).to.equal(Status.OK);
      await s1.heartbeat('channeld', 1);
      const r = await c.heartbeat('chatd', 0);
      expect(r.status).to.equal(Status.OK);
      // The view: epoch 1 of CHANNELD_SHARDS members (docs/resharding.md); nobody reports one yet, so not settled.
      expect(decodePayload('membership', r.payload)).to.deep.equal({
        shards: [[0, s0.incarnation], [1, s1.incarnation]], chatds: [[c.mtype, c.incarnation]], view: { epoch: 1, members: [[0, 1]], settled: false },
      });
      expect(rig.collector.table.get(c.mtype)).to.include({ pid: c.pid, incarnation: c.incarnation });
    });

    it('heartbeat - a dead shard leaves the membership of the next reply', async () => {
      rig = makeRig({ shards: 2 });
      const s0 = rig.shard(0);
      const s1 = rig.shard(1);
      const c = rig.chatd(0);
      await s0.heartbeat('channeld', 0);
      await s1.heartbeat('channeld', 1);
      rig.alive.delete(s1.pid);
      await waitFor(() => rig.collector.table.get(s1.mtype) === undefined, 2000, 5, 'shard 1 declared dead');
      const r = await c.heartbeat('chatd', 0);
      // Dead is not gone: the member set holds for SHARD_GONE_MS (a crash-restart keeps the epoch).
      expect(decodePayload('membership', r.payload)).to.deep.equal({ shards: [[0, s0.incarnation]], chatds: [[c.mtype, c.incarnation]], view: { epoch: 1, members: [[0, 1]], settled: false } });
    });

    it('heartbeat - role and index must match the sender mtype', async () => {
      rig = makeRig();
      const c = rig.chatd(0);
      const r = await c.heartbeat('channeld', 0);
      expect(r.status).to.equal(Status.BAD_REQUEST);
      expect(rig.collector.table.live()).to.deep.equal([]);
      const bad = await c.request(Kind.HEARTBEAT, Buffer.from('{"role":"chatd"}'));
      expect(bad.status).to.equal(Status.BAD_REQUEST);
    });

    it('warm-up - HEARTBEAT and HELLO answered UNAVAILABLE until the table is complete', async () => {
      rig = makeRig({ timings: { warmupMs: 300 } });
      const c = rig.chatd(0);
      const s = rig.shard(0);
      expect((await c.heartbeat('chatd', 0)).status).to.equal(Status.UNAVAILABLE);
      expect((await s.request(Kind.HELLO, encodePayload('hello', { shard: 0 }))).status).to.equal(Status.UNAVAILABLE);
      expect(rig.collector.table.get(c.mtype)).to.not.equal(undefined); // recorded all the same
      await sleep(320);
      const h = await s.request(Kind.HELLO, encodePayload('hello', { shard: 0 }));
      expect(h.status).to.equal(Status.OK);
      expect(decodePayload('helloReply', h.payload)).to.deep.equal({ chatds: [[c.mtype, c.incarnation]], view: { epoch: 1, members: [[0, 1]] } });
    });
  });

  describe('hello', () => {
    it('hello - replies with the live chatDs and posts RESYNC to each, addressed to its incarnation', async () => {
      rig = makeRig({ shards: 2 });
      const c0 = rig.chatd(0);
      const c1 = rig.chatd(1);
      await c0.heartbeat('chatd', 0);
      await c1.heartbeat('chatd', 1);
      const s = rig.shard(1, 4242);
      const r = await s.request(Kind.HELLO, encodePayload('hello', { shard: 1 }));
      expect(r.status).to.equal(Status.OK);
      expect(decodePayload('helloReply', r.payload)).to.deep.equal({ chatds: [[c0.mtype, c0.incarnation], [c1.mtype, c1.incarnation]], view: { epoch: 1, members: [[0, 1]] } });
      await waitFor(() => c0.kinds(Kind.RESYNC).length === 1 && c1.kinds(Kind.RESYNC).length === 1, 2000, 5, 'both RESYNCs');
      for (const c of [c0, c1]) {
        const rec = c.kinds(Kind.RESYNC)[0]!;
        expect(rec.reqId).to.equal(0); // one-way
        expect(rec.from).to.equal(MTYPE_GC);
        expect(decodePayload('resync', rec.payload)).to.deep.equal({ shard: 1, shardInc: 4242, epoch: 1 });
      }
      // The shard is live from its HELLO on.
      expect(rig.collector.table.get(s.mtype)?.incarnation).to.equal(4242);
    });

    it('hello - from an mtype that is not that shard: BAD_REQUEST, no RESYNC', async () => {
      rig = makeRig();
      const c = rig.chatd(0);
      await c.heartbeat('chatd', 0);
      const s = rig.shard(0);
      expect((await s.request(Kind.HELLO, encodePayload('hello', { shard: 1 }))).status).to.equal(Status.BAD_REQUEST);
      await sleep(30);
      expect(c.kinds(Kind.RESYNC)).to.have.length(0);
    });

    it('hello - a restarted shard (new incarnation) replaces the old one without draining its mailbox', async () => {
      rig = makeRig({ timings: { tickMs: 60_000 } });
      const old = rig.shard(0, 1);
      await old.heartbeat('channeld', 0);
      await old.close();
      rig.alive.delete(old.pid); // the old process is gone (the pid check has not run yet)
      const fresh = rig.shard(0, 2);
      await fresh.request(Kind.HELLO, encodePayload('hello', { shard: 0 }));
      const died = linesWith(rig.lines, 'process died');
      expect(died).to.have.length(1);
      expect(died[0]).to.include({ mtype: old.mtype, incarnation: 1, reason: 'replaced', successor: 2 });
      expect(linesWith(rig.lines, 'cleanup done')[0]).to.include({ drained: 0 });
    });
  });

  describe('session end', () => {
    it('session end - REMOVE to the owning shard with the chatD as owner, then OK', async () => {
      rig = makeRig({ shards: 2 });
      const shards = [rig.shard(0), rig.shard(1)];
      for (const [i, s] of shards.entries()) await s.heartbeat('channeld', i);
      shards[1]!.answers.set(Kind.REMOVE, () => [Status.OK, encodePayload('count', { count: 0 })]);
      const c = rig.chatd(0);
      const name = nameOn(1, 2);
      const r = await c.request(Kind.SESSION_END, encodePayload('sessionEnd', { name, session: 77 }));
      expect(r.status).to.equal(Status.OK);
      expect(shards[0]!.kinds(Kind.REMOVE)).to.have.length(0);
      const removes = shards[1]!.kinds(Kind.REMOVE);
      expect(removes).to.have.length(1);
      expect(decodePayload('remove', removes[0]!.payload)).to.deep.equal({ name, session: 77, owner: c.mtype, ownerInc: c.incarnation });
      expect(rig.collector.counters.sessionEndsRemoved).to.equal(1);
    });

    it('session end - retries a shard that answers UNAVAILABLE, then OK', async () => {
      rig = makeRig({ shards: 1 });
      const s = rig.shard(0);
      await s.heartbeat('channeld', 0);
      let n = 0;
      s.answers.set(Kind.REMOVE, () => (++n < 3 ? [Status.UNAVAILABLE, EMPTY] : [Status.OK, encodePayload('count', { count: 1 })]));
      const c = rig.chatd(0);
      const r = await c.request(Kind.SESSION_END, encodePayload('sessionEnd', { name: 'Aria', session: 1 }));
      expect(r.status).to.equal(Status.OK);
      expect(s.kinds(Kind.REMOVE)).to.have.length(3);
    });

    it('session end - no shard process: retries for the budget, then UNAVAILABLE', async () => {
      rig = makeRig({ shards: 1, timings: { removeBudgetMs: 300, attemptTimeoutMs: 60 } });
      const c = rig.chatd(0);
      const t0 = Date.now();
      const r = await c.request(Kind.SESSION_END, encodePayload('sessionEnd', { name: 'Aria', session: 1 }));
      const ms = Date.now() - t0;
      expect(r.status).to.equal(Status.UNAVAILABLE);
      expect(ms).to.be.within(250, 800);
      expect(rig.collector.counters.removeAttempts).to.be.greaterThan(1);
      expect(rig.collector.counters.sessionEndsUnavailable).to.equal(1);
    });

    it('session end - answers before the asker gives up when its deadline is shorter than the budget', async () => {
      rig = makeRig({ shards: 1, timings: { removeBudgetMs: 1000 } });
      const c = rig.chatd(0);
      const r = await c.request(Kind.SESSION_END, encodePayload('sessionEnd', { name: 'Aria', session: 1 }), 300);
      expect(r.status).to.equal(Status.UNAVAILABLE);
    });

    it('session end - the shard known dead: OK at once, no REMOVE', async () => {
      rig = makeRig({ shards: 1 });
      const s = rig.shard(0);
      await s.heartbeat('channeld', 0);
      rig.alive.delete(s.pid);
      await waitFor(() => rig.collector.table.vacancy(s.mtype) !== undefined, 2000, 5, 'shard dead');
      const c = rig.chatd(0);
      const t0 = Date.now();
      const r = await c.request(Kind.SESSION_END, encodePayload('sessionEnd', { name: 'Aria', session: 1 }));
      expect(r.status).to.equal(Status.OK);
      expect(Date.now() - t0).to.be.below(100);
      expect(s.kinds(Kind.REMOVE)).to.have.length(0);
      expect(rig.collector.counters.sessionEndsShardDead).to.equal(1);
    });

    it('session end - only from a chatD, with a valid payload', async () => {
      rig = makeRig({ shards: 1 });
      const s = rig.shard(0);
      expect((await s.request(Kind.SESSION_END, encodePayload('sessionEnd', { name: 'Aria', session: 1 }))).status).to.equal(Status.BAD_REQUEST);
      const c = rig.chatd(0);
      expect((await c.request(Kind.SESSION_END, Buffer.from('{"name":"no spaces allowed","session":1}'))).status).to.equal(Status.BAD_REQUEST);
    });
  });

  describe('deaths', () => {
    async function cluster(shards: number): Promise<{ shards: ReturnType<Rig['shard']>[]; chatd: ReturnType<Rig['chatd']> }> {
      const ss = Array.from({ length: shards }, (_, i) => rig.shard(i));
      for (const [i, s] of ss.entries()) await s.heartbeat('channeld', i);
      const chatd = rig.chatd(0);
      await chatd.heartbeat('chatd', 0);
      return { shards: ss, chatd };
    }

    it('chatD death - PURGE to every shard, its mailbox drained, one line each for death and cleanup', async () => {
      rig = makeRig({ shards: 3 });
      const { shards, chatd } = await cluster(3);
      shards.forEach((s, i) => s.answers.set(Kind.PURGE, () => [Status.OK, encodePayload('count', { count: i + 1 })]));
      await chatd.close(); // its receiver stops: messages to it now stay in the queue
      const junk = encodeEnvelope({ from: 100, fromIncarnation: 1, toIncarnation: 0 }, [{ kind: Kind.RESYNC, payload: Buffer.from('{}') }]);
      for (let i = 0; i < 4; i++) rig.queue.trySend(chatd.mtype, junk);
      rig.alive.delete(chatd.pid);
      await waitFor(() => rig.collector.counters.cleanupsDone === 1, 3000, 5, 'cleanup');
      for (const s of shards) {
        const purges = s.kinds(Kind.PURGE);
        expect(purges).to.have.length(1);
        expect(decodePayload('purge', purges[0]!.payload)).to.deep.equal({ owner: chatd.mtype, ownerInc: chatd.incarnation });
      }
      expect(rig.queue.take(chatd.mtype, 100)).to.have.length(0);
      const died = linesWith(rig.lines, 'process died');
      expect(died).to.have.length(1);
      expect(died[0]).to.include({ mtype: chatd.mtype, role: 'chatd', incarnation: chatd.incarnation, pid: chatd.pid, reason: 'pid', level: 30 });
      const done = linesWith(rig.lines, 'cleanup done');
      expect(done).to.have.length(1);
      expect(done[0]).to.include({ mtype: chatd.mtype, removed: 6, drained: 4 });
      expect(done[0]!.perShard).to.deep.equal({ 0: 1, 1: 2, 2: 3 });
      expect(rig.collector.counters.purgedEntries).to.equal(6);
    });

    it('chatD death - idempotent: PM2 exit, more ticks and a late record change nothing', async () => {
      rig = makeRig({ shards: 2 });
      const { shards, chatd } = await cluster(2);
      rig.alive.delete(chatd.pid);
      await waitFor(() => rig.collector.counters.cleanupsDone === 1, 3000, 5, 'cleanup');
      expect(rig.collector.supervisorEvent({ event: 'exit', mtype: chatd.mtype })).to.equal(undefined);
      await chatd.heartbeat('chatd', 0).catch(() => undefined); // a late heartbeat from the dead pid
      await sleep(60);
      expect(rig.collector.counters.deaths).to.equal(1);
      expect(linesWith(rig.lines, 'process died')).to.have.length(1);
      for (const s of shards) expect(s.kinds(Kind.PURGE)).to.have.length(1);
      expect(rig.collector.table.get(chatd.mtype)).to.equal(undefined);
    });

    it('chatD death - a shard that does not answer is retried until it does', async () => {
      rig = makeRig({ shards: 2 });
      const { shards, chatd } = await cluster(2);
      let n = 0;
      shards[1]!.answers.set(Kind.PURGE, () => (++n < 3 ? 'silent' : [Status.OK, encodePayload('count', { count: 5 })]));
      rig.alive.delete(chatd.pid);
      const [report] = await waitFor(() => rig.collector.counters.deaths === 1, 2000, 5).then(() => rig.collector.settled());
      expect(report).to.include({ removed: 5 });
      expect(shards[1]!.kinds(Kind.PURGE)).to.have.length(3);
    });

    it('chatD death - a shard that dies meanwhile is skipped (its state went with it)', async () => {
      rig = makeRig({ shards: 2 });
      const { shards, chatd } = await cluster(2);
      shards[1]!.answers.set(Kind.PURGE, () => 'silent');
      rig.alive.delete(chatd.pid);
      await waitFor(() => shards[1]!.kinds(Kind.PURGE).length >= 2, 2000, 5, 'retries');
      rig.alive.delete(shards[1]!.pid);
      const [report] = await rig.collector.settled();
      expect(report?.skipped).to.deep.equal([1]);
      expect(report?.perShard).to.deep.equal({ 0: 0 });
    });

    it('chatD death - PM2 exit event: dead at once when its pid is gone', async () => {
      rig = makeRig({ shards: 1, timings: { tickMs: 60_000 } });
      const { chatd } = await cluster(1);
      expect(rig.collector.supervisorEvent({ event: 'exit', mtype: chatd.mtype })).to.equal(undefined); // pid still there
      rig.alive.delete(chatd.pid);
      const d = rig.collector.supervisorEvent({ event: 'exit', mtype: chatd.mtype });
      expect(d).to.include({ reason: 'pm2', incarnation: chatd.incarnation });
      await rig.collector.settled();
      expect(rig.collector.counters.cleanupsDone).to.equal(1);
    });

    it('PM2 exit - an event older than the incarnation holding the mtype changes nothing', async () => {
      rig = makeRig({ shards: 1, timings: { tickMs: 60_000 } });
      const { chatd } = await cluster(1);
      rig.alive.delete(chatd.pid); // even with the pid gone, an event from before it started is not about it
      expect(rig.collector.supervisorEvent({ event: 'exit', mtype: chatd.mtype, at: Date.now() - 60_000 })).to.equal(undefined);
      expect(rig.collector.supervisorEvent({ event: 'exit', mtype: chatd.mtype, pid: chatd.pid + 1 })).to.equal(undefined);
      expect(rig.collector.table.get(chatd.mtype)).to.not.equal(undefined);
      expect(rig.collector.supervisorEvent({ event: 'exit', mtype: chatd.mtype, pid: chatd.pid })).to.include({ reason: 'pm2' });
      await rig.collector.settled();
    });

    it('stall - a collector that was not running forgives silence before it', async () => {
      rig = makeRig({ shards: 1, deadAfterMs: 100, start: false, timings: { stallMs: 50 } });
      const s = rig.shard(0);
      rig.collector.start();
      await s.heartbeat('channeld', 0);
      const t = Date.now();
      while (Date.now() - t < 200) {
        /* the collector's event loop is blocked: heartbeats would wait unread */
      }
      rig.collector.tick();
      expect(rig.collector.counters.stalls).to.equal(1);
      expect(rig.collector.table.get(s.mtype)).to.not.equal(undefined);
    });

    it('forged envelope - a new chatD incarnation claimed by one record of unknown kind purges nothing (defect 2)', async () => {
      rig = makeRig({ shards: 2 });
      const { shards, chatd } = await cluster(2);
      // What the probe sent: gc's mtype, a header claiming a new incarnation of the live chatD,
      // an unknown kind, an empty payload; as a request and as a one-way record.
      for (const reqId of [0, 77]) {
        const forged = encodeEnvelope({ from: chatd.mtype, fromIncarnation: chatd.incarnation + 1000 + reqId, toIncarnation: 0 }, [
          { kind: 0x42, reqId, deadline: 0, payload: Buffer.alloc(0) },
        ]);
        expect(rig.queue.trySend(MTYPE_GC, forged)).to.equal(true);
      }
      // and records of known kinds, well-formed envelopes, but invalid payloads
      const forgedHello = encodeEnvelope({ from: chatd.mtype, fromIncarnation: chatd.incarnation + 5, toIncarnation: 0 }, [
        { kind: Kind.SESSION_END, reqId: 9, deadline: 0, payload: Buffer.from('garbage') },
        { kind: Kind.HEARTBEAT, reqId: 10, deadline: 0, payload: Buffer.alloc(0) },
      ]);
      expect(rig.queue.trySend(MTYPE_GC, forgedHello)).to.equal(true);
      await sleep(200);
      expect(linesWith(rig.lines, 'process died'), 'no death from one unvalidated record').to.have.length(0);
      for (const s of shards) expect(s.kinds(Kind.PURGE), 'no PURGE').to.have.length(0);
      expect(rig.collector.table.get(chatd.mtype)?.incarnation, 'the live chatD keeps its mtype').to.equal(chatd.incarnation);
      expect(rig.collector.counters.deaths).to.equal(0);
      // A validated heartbeat of a new incarnation while the old pid is alive is refused too (evidence first).
      await chatd.close(); // its receiver stops (the pid stays alive): the reply goes to the impostor
      const impostor = rig.chatd(0, chatd.incarnation + 9);
      expect((await impostor.heartbeat('chatd', 0)).status).to.equal(Status.UNAVAILABLE);
      expect(rig.collector.counters.deaths).to.equal(0);
      // Once the old pid is gone (the evidence), the new incarnation takes over.
      rig.alive.delete(chatd.pid);
      await waitFor(() => rig.collector.counters.deaths === 1, 2000, 5, 'old chatD dead by pid');
      expect((await impostor.heartbeat('chatd', 0)).status).to.equal(Status.OK);
      expect(rig.collector.table.get(chatd.mtype)?.incarnation).to.equal(impostor.incarnation);
      await rig.collector.settled();
      expect((rig.collector.counters as unknown as Record<string, number>).ignoredRecords, 'unknown kinds counted').to.equal(2);
    });

    it('chatD restart - a new incarnation heartbeating: PURGE of the old one, no drain', async () => {
      rig = makeRig({ shards: 2, timings: { tickMs: 60_000 } });
      const { shards, chatd } = await cluster(2);
      await chatd.close(); // the old process is gone; the pid check has not run yet
      rig.alive.delete(chatd.pid);
      const fresh = rig.chatd(0, chatd.incarnation + 1);
      expect((await fresh.heartbeat('chatd', 0)).status).to.equal(Status.OK);
      const [report] = await rig.collector.settled();
      expect(report).to.include({ mtype: chatd.mtype, incarnation: chatd.incarnation, drained: 0 });
      for (const s of shards) {
        expect(decodePayload('purge', s.kinds(Kind.PURGE)[0]!.payload)).to.deep.equal({ owner: chatd.mtype, ownerInc: chatd.incarnation });
      }
      expect(linesWith(rig.lines, 'process died')[0]).to.include({ reason: 'replaced', successor: fresh.incarnation });
      expect(rig.collector.table.liveChatds()).to.deep.equal([[fresh.mtype, fresh.incarnation]]);
    });

    it('shard death - its mailbox drained when no newer incarnation holds it', async () => {
      rig = makeRig({ shards: 2 });
      const { shards } = await cluster(2);
      await shards[0]!.close();
      rig.queue.trySend(shards[0]!.mtype, Buffer.from('x'));
      rig.queue.trySend(shards[0]!.mtype, Buffer.from('y'));
      rig.alive.delete(shards[0]!.pid);
      await waitFor(() => linesWith(rig.lines, 'cleanup done').length === 1, 2000, 5, 'cleanup');
      expect(linesWith(rig.lines, 'cleanup done')[0]).to.include({ mtype: shards[0]!.mtype, role: 'channeld', drained: 2 });
      expect(shards[1]!.kinds(Kind.PURGE)).to.have.length(0);
    });

    it('silence - a process whose pid cannot be checked is dead after deadAfterMs quiet', async () => {
      rig = makeRig({ shards: 1, deadAfterMs: 150 });
      const s = rig.shard(0);
      await s.heartbeat('channeld', 0);
      const chatd = rig.chatd(0);
      rig.alive.delete(chatd.pid); // another pid namespace: only heartbeats tell
      await chatd.heartbeat('chatd', 0);
      await waitFor(() => rig.collector.table.get(chatd.mtype) === undefined, 2000, 5, 'silence death');
      expect(linesWith(rig.lines, 'process died').map((l) => l.reason)).to.include('silence');
    });

    it('silence - a quiet process whose pid is alive is not declared dead (its heartbeats may wait behind a full queue)', async () => {
      rig = makeRig({ shards: 1, deadAfterMs: 100 });
      const { chatd } = await cluster(1);
      await new Promise((r) => setTimeout(r, 400));
      expect(rig.collector.table.get(chatd.mtype)?.incarnation).to.equal(chatd.incarnation);
      expect(linesWith(rig.lines, 'process died')).to.deep.equal([]);
    });

    it('revive - a chatD declared dead by silence that heartbeats again is taken back and resynced', async () => {
      rig = makeRig({ shards: 1, deadAfterMs: 100 });
      const s = rig.shard(0);
      const c = rig.chatd(0);
      rig.alive.delete(c.pid); // pid not visible: silence is what declares it dead
      await c.heartbeat('chatd', 0);
      // Keep the shard alive, let the chatD fall silent.
      await waitFor(() => {
        void s.heartbeat('channeld', 0);
        return rig.collector.table.vacancy(c.mtype) !== undefined;
      }, 2000, 20, 'chatD silent');
      await rig.collector.settled();
      rig.alive.add(c.pid); // seen again, and its pid is there: it was only quiet
      expect((await c.heartbeat('chatd', 0)).status).to.equal(Status.OK);
      expect(rig.collector.table.get(c.mtype)?.incarnation).to.equal(c.incarnation);
      await waitFor(() => c.kinds(Kind.RESYNC).length === 1, 2000, 5, 'resync');
      expect(decodePayload('resync', c.kinds(Kind.RESYNC)[0]!.payload)).to.deep.equal({ shard: 0, shardInc: s.incarnation, epoch: 1 });
      expect(rig.collector.counters.revived).to.equal(1);
    });
  });

  describe('membership epoch (docs/resharding.md)', () => {
    /** Polls an async probe until it gives a value; rejects after timeoutMs. */
    async function poll<T>(probe: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const v = await probe();
        if (v !== undefined) return v;
        if (Date.now() > until) throw new Error(`poll: ${what} not met after ${timeoutMs} ms`);
        await sleep(20);
      }
    }
    /** Heartbeats from every peer reporting `epoch`/`members`, ready; returns the last membership answer. */
    async function beatAll(peers: [Peer, 'chatd' | 'channeld', number][], epoch: number, members: [number, number][]): Promise<MembershipPayload | undefined> {
      let m: MembershipPayload | undefined;
      for (const [p, role, index] of peers) {
        const r = await p.heartbeat(role, index, p.pid, { view: { epoch, members }, ready: true });
        if (r.status === Status.OK) m = decodePayload('membership', r.payload);
      }
      return m;
    }

    it('pm2 scale up: a new shard that reports the current epoch joins in the next one; every answer carries the view', async () => {
      rig = makeRig({ shards: 2, reshardQuietMs: 50, shardGoneMs: 400 });
      const peers: [Peer, 'chatd' | 'channeld', number][] = [[rig.shard(0), 'channeld', 0], [rig.shard(1), 'channeld', 1], [rig.chatd(0), 'chatd', 0]];
      expect((await beatAll(peers, 1, [[0, 1]]))?.view).to.deep.equal({ epoch: 1, members: [[0, 1]], settled: true });
      // A shard index past CHANNELD_SHARDS (pm2 scale): its HELLO is answered with the current view.
      const s4 = rig.shard(4);
      const h = await s4.request(Kind.HELLO, encodePayload('hello', { shard: 4 }));
      expect(decodePayload('helloReply', h.payload)?.view).to.deep.equal({ epoch: 1, members: [[0, 1]] });
      peers.push([s4, 'channeld', 4]);
      const m = await poll(async () => {
        const r = await beatAll(peers, 1, [[0, 1]]);
        return r?.view?.epoch === 2 ? r : undefined;
      }, 3000, 'epoch 2');
      expect(m.view).to.deep.equal({ epoch: 2, members: [[0, 1], [4, 4]], settled: false });
      expect(linesWith(rig.lines, 'membership epoch decided').at(-1)).to.include({ epoch: 2, previousEpoch: 1, reason: 'scale' });
      // Settled once everyone reports epoch 2, ready.
      expect((await beatAll(peers, 2, [[0, 1], [4, 4]]))?.view?.settled).to.equal(true);
      expect(rig.collector.counters.epochs).to.equal(2);
    });

    it('pm2 scale down: a member away for SHARD_GONE_MS leaves; after a chatD death the live shards are purged, the gone one skipped', async () => {
      rig = makeRig({ shards: 3, reshardQuietMs: 50, shardGoneMs: 300 });
      const s0 = rig.shard(0);
      const s1 = rig.shard(1);
      const s2 = rig.shard(2);
      const c = rig.chatd(0);
      const peers: [Peer, 'chatd' | 'channeld', number][] = [[s0, 'channeld', 0], [s1, 'channeld', 1], [s2, 'channeld', 2], [c, 'chatd', 0]];
      await beatAll(peers, 1, [[0, 2]]);
      // PM2 deletes the lowest indexes first: shard 0 goes.
      rig.alive.delete(s0.pid);
      await waitFor(() => rig.collector.table.get(s0.mtype) === undefined, 2000, 5, 'shard 0 dead');
      const t0 = Date.now();
      const m = await poll(async () => {
        const r = await beatAll(peers.slice(1), 1, [[0, 2]]);
        return r?.view?.epoch === 2 ? r : undefined;
      }, 3000, 'epoch 2');
      expect(Date.now() - t0).to.be.at.least(250);
      expect(m.view!.members).to.deep.equal([[1, 2]]);
      await beatAll(peers.slice(1), 2, [[1, 2]]);
      // A chatD dies: every shard that may hold its entries is purged (the live ones).
      rig.alive.delete(c.pid);
      const done = (): Record<string, unknown> | undefined => linesWith(rig.lines, 'cleanup done').find((l) => l.mtype === c.mtype);
      await waitFor(() => done() !== undefined, 3000, 5, 'cleanup of the chatD');
      expect(Object.keys(done()!.perShard as object).map(Number)).to.deep.equal([1, 2]);
      expect(done()!.skipped).to.deep.equal([0]);
      expect([s0, s1, s2].map((s) => s.kinds(Kind.PURGE).length)).to.deep.equal([0, 1, 1]);
    });
  });

  describe('status and hygiene', () => {
    it('status - counters, process table and queue figures', async () => {
      rig = makeRig({ shards: 1 });
      const s = rig.shard(0);
      await s.heartbeat('channeld', 0);
      const tool = rig.tool(toolMtype(4242));
      const r = await tool.request(Kind.STATUS, EMPTY);
      expect(r.status).to.equal(Status.OK);
      const st = decodePayload('status', r.payload)!;
      expect(st).to.include({ role: 'gc', shards: 1 });
      expect(st.counters).to.include({ heartbeats: 1, statusRequests: 1 });
      expect(st.processes).to.have.length(1);
      expect((st.processes as { mtype: number }[])[0]!.mtype).to.equal(s.mtype);
      expect(st.queue).to.have.keys(['messages', 'bytes', 'capacity', 'mode', 'lastSendPid', 'lastReceivePid']);
      expect(rig.collector.table.live()).to.have.length(1); // tools are not tracked
      // The `metrics` object (docs/operations.md, "Metrics"), with the queue's figures as gauges.
      const m = st.metrics as { counters: Record<string, number>; gauges: Record<string, number> };
      expect(st.uptimeS).to.be.a('number');
      expect(m.counters).to.include({ sessionCleanups: 0, deathsSeen: 0, purges: 0 });
      const q = st.queue as { messages: number; bytes: number; capacity: number };
      expect(m.gauges).to.include({ processes: 1, queueMessages: q.messages, queueBytes: q.bytes });
      expect(m.gauges.queueFill).to.be.within(0, 1);
    });

    it('legacy replies - over half full they are dropped at once, whatever their age, by legacy expiry alone (defect 5)', async () => {
      rig = makeRig();
      for (let i = 0; i < 10; i++) expect(rig.queue.trySend(MTYPE_LEGACY_REPLY, legacyReplyBody(`r${i}`))).to.equal(true);
      // Shard 50 of 2: nobody's mailbox; once the legacy replies are gone the queue is below
      // high water, so hygiene leaves it for its age (junkAgeMs, 3 s by default).
      rig.queue.trySend(shardMtype(0) + 50, Buffer.from('someone else'));
      await waitFor(() => rig.collector.counters.legacyRepliesDrained === 10, 2000, 5, 'legacy drain by fill');
      expect(rig.queue.stat().messages).to.equal(1);
      expect(linesWith(rig.lines, 'legacy replies expired')[0]).to.include({ expired: 10, byFill: true });
      expect(linesWith(rig.lines, HYGIENE), 'hygiene takes nothing of mtype 2').to.have.length(0);
    });

    it('legacy replies - below half full: old ones expire by age, young ones stay, in order (defect 5)', async () => {
      rig = makeRig({ timings: { legacyTtlMs: 1000 } });
      const now = Date.now();
      for (let i = 0; i < 3; i++) rig.queue.trySend(MTYPE_LEGACY_REPLY, legacyReplyBody(`old${i}`, now - 5000));
      rig.queue.trySend(MTYPE_LEGACY_REPLY, Buffer.alloc(1024)); // not a reply of ours: junk
      for (let i = 0; i < 3; i++) rig.queue.trySend(MTYPE_LEGACY_REPLY, legacyReplyBody(`new${i}`, now));
      await waitFor(() => rig.collector.counters.legacyRepliesDrained === 4, 2000, 5, 'old replies expired');
      await sleep(100);
      const left = rig.queue.take(MTYPE_LEGACY_REPLY, 100).map((b) => legacyRequestText(b));
      expect(left).to.have.members(['new0', 'new1', 'new2']);
    });

    it('hygiene - over half full: junk of nobody goes at once (hygiene), legacy replies too (legacy expiry); each takes only its own', async () => {
      rig = makeRig();
      // Shard 50 of 2: nobody's mailbox. 9 KB of it keep the queue over half full by themselves.
      for (let i = 0; i < 9; i++) expect(rig.queue.trySend(shardMtype(0) + 50, Buffer.alloc(1000, 1))).to.equal(true);
      for (let i = 0; i < 4; i++) expect(rig.queue.trySend(MTYPE_LEGACY_REPLY, legacyReplyBody(`young${i}`))).to.equal(true);
      await waitFor(() => rig.queue.stat().messages === 0, 2000, 5, 'junk and legacy replies drained');
      const lines = linesWith(rig.lines, HYGIENE);
      expect(lines.map((l) => l.byClass)).to.deep.equal([{ outOfPlan: 9 }]);
      expect(lines[0]).to.include({ reason: 'fill' });
      expect(linesWith(rig.lines, 'legacy replies expired')).to.have.length(1);
      expect(linesWith(rig.lines, 'legacy replies expired')[0]).to.include({ expired: 4, byFill: true });
      expect(rig.collector.counters).to.include({ legacyRepliesDrained: 4, drainedMessages: 13 });
      expect((rig.collector.status().hygiene as { byClass: Record<string, number> }).byClass).to.not.have.property('legacyReply');
    });

    it('legacy replies - a queue over half full by message count (tiny messages, few bytes) drops them too', async () => {
      rig = makeRig();
      const c = rig.chatd(0);
      await c.heartbeat('chatd', 0); // a live chatD: mtype 1 is its gateway's, hygiene leaves it
      for (let i = 0; i < 9000; i++) rig.queue.trySend(1, Buffer.alloc(0));
      for (let i = 0; i < 2; i++) expect(rig.queue.trySend(MTYPE_LEGACY_REPLY, legacyReplyBody(`young${i}`))).to.equal(true);
      expect(rig.queue.stat().bytes).to.be.below(16384 / 2); // by bytes the queue is not over half full
      await waitFor(() => rig.collector.counters.legacyRepliesDrained === 2, 2000, 5, 'legacy drain by count');
      expect(linesWith(rig.lines, 'legacy replies expired')[0]).to.include({ expired: 2, byFill: true });
      expect(rig.queue.stat().messages).to.equal(9000); // the live chatD's mtype 1 is kept
    });

    it('hygiene - vacant mailboxes drained at once while the queue is over half full', async () => {
      rig = makeRig({ shards: 1 });
      const s = await deadShard(rig);
      for (let i = 0; i < 10; i++) expect(rig.queue.trySend(s.mtype, Buffer.alloc(1000, 1))).to.equal(true);
      await waitFor(() => rig.queue.stat().messages === 0, 3000, 5, 'vacant mailbox drain');
      const line = linesWith(rig.lines, HYGIENE);
      expect(line).to.have.length(1);
      expect(line[0]).to.deep.include({ reason: 'fill', byClass: { deadProcess: 10 }, mtypes: [s.mtype] });
    });

    it('hygiene - below half full a vacant mailbox goes by age; young legacy replies are never hygiene\'s', async () => {
      rig = makeRig({ shards: 1, hygiene: { junkAgeMs: 300 } });
      const s = await deadShard(rig);
      for (let i = 0; i < 2; i++) rig.queue.trySend(s.mtype, Buffer.from('request to a dead shard'));
      for (let i = 0; i < 3; i++) rig.queue.trySend(MTYPE_LEGACY_REPLY, legacyReplyBody(`young${i}`));
      await sleep(60);
      expect(rig.queue.stat().messages).to.equal(5); // younger than junkAgeMs
      await waitFor(() => rig.queue.stat().messages === 3, 2000, 5, 'vacant mailbox drained by age');
      await sleep(200); // more sweeps
      // All three still there (legacy expiry may have put the first one back at the tail).
      expect(rig.queue.take(MTYPE_LEGACY_REPLY, 100).map((b) => legacyRequestText(b))).to.have.members(['young0', 'young1', 'young2']);
      expect(linesWith(rig.lines, HYGIENE).map((l) => [l.reason, l.byClass])).to.deep.equal([['age', { deadProcess: 2 }]]);
    });
  });
});

/** Shard 0 of `rig` heartbeats, closes and its pid goes: once the collector has it vacant and cleaned up. */
async function deadShard(rig: Rig): Promise<ReturnType<Rig['shard']>> {
  const s = rig.shard(0);
  await s.heartbeat('channeld', 0);
  await s.close();
  rig.alive.delete(s.pid);
  await waitFor(() => rig.collector.table.vacancy(s.mtype) !== undefined, 2000, 5, 'shard dead');
  await rig.collector.settled();
  return s;
}
