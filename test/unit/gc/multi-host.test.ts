import { expect } from 'chai';
import pino from 'pino';
import { ShardServer } from '../../../src/channeld/shard-server';
import { Kind, Status } from '../../../src/cluster/kinds';
import { EMPTY, decodePayload } from '../../../src/cluster/messages';
import { ProcessTable } from '../../../src/gc/process-table';
import { Endpoint, LocalQueue, LocalTransport, MTYPE_GC, chatdMtype, shardMtype } from '../../../src/ipc';
import { Heartbeat } from '../../../src/runtime/heartbeat';
import { waitFor } from '../../helpers/wait';
import { Peer, linesWith, makeRig, type Rig } from './gc-rig';

/**
 * Several hosts (docs/multi-host.md): the collector judges processes of another host by
 * heartbeat silence and incarnations only. Their pids are never checked here (the same number
 * may exist on this host), PM2's events here do not speak for them, nothing is drained from
 * this host's queue on their behalf, a NATS outage of the collector's own is not their death,
 * and one declared dead is fenced rather than taken back.
 */

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const HOST_A = 'host-a';
const HOST_B = 'host-b';
const HOST_C = 'host-c';

describe('gc - processes of other hosts (docs/multi-host.md)', function () {
  this.timeout(10_000);

  describe('process table', () => {
    const S0 = shardMtype(0);
    const C0 = chatdMtype(0);

    it('remote - an entry of another host is never pid-checked, and dies by silence', () => {
      const t = new ProcessTable({ deadAfterMs: 1000, localHost: HOST_A });
      t.heartbeat(S0, 10, 4242, 0, HOST_B);
      t.heartbeat(C0, 20, 4343, 0, HOST_A);
      expect(t.get(S0)).to.include({ host: HOST_B, local: false, pidCheck: false, pid: 4242 });
      expect(t.get(C0)).to.include({ host: HOST_A, local: true, pidCheck: true });
      const asked: number[] = [];
      // Pid 4242 "exists here" too, as another process: asking about it would keep the remote one alive forever.
      expect(t.checkPids((pid) => (asked.push(pid), true), 500)).to.deep.equal([]);
      expect(asked).to.deep.equal([4343]);
      const d = t.checkSilence(1001);
      expect(d.map((x) => [x.mtype, x.reason, x.host, x.local])).to.deep.equal([[S0, 'silence', HOST_B, false]]);
      expect(t.get(C0)?.incarnation).to.equal(20); // a local pid that is alive never dies by silence
    });

    it('remote - a process that names no host is the collector\'s own (as before several hosts)', () => {
      const t = new ProcessTable({ deadAfterMs: 1000, localHost: HOST_A });
      t.heartbeat(S0, 10, 100, 0);
      expect(t.get(S0)).to.include({ host: HOST_A, local: true, pidCheck: true });
      expect(t.isLocalHost(undefined)).to.equal(true);
      expect(t.isLocalHost(HOST_A)).to.equal(true);
      expect(t.isLocalHost(HOST_B)).to.equal(false);
    });

    it('remote - a dead incarnation of another host is never taken back (its pid proves nothing here)', () => {
      const t = new ProcessTable({ deadAfterMs: 1000, localHost: HOST_A });
      t.heartbeat(S0, 10, 100, 0, HOST_B);
      t.checkSilence(1001);
      expect(t.revive(S0, 10, 100, 1100)).to.equal(undefined);
      expect(t.vacancy(S0)).to.include({ incarnation: 10, local: false });
    });
  });

  describe('collector', () => {
    let rig: Rig;
    afterEach(async () => {
      await rig?.close();
    });

    /** A shard of `host`: heartbeats name it. Its pid also "exists" on the collector's host (rig.alive). */
    function remoteShard(index: number, host: string, incarnation?: number): Peer {
      const p = rig.shard(index, incarnation);
      p.host = host;
      return p;
    }

    it('silence - a shard of another host dies by silence even though its pid number lives here; never pid-checked; its mailbox here is not drained', async () => {
      rig = makeRig({ shards: 2, deadAfterMs: 150, hostId: HOST_A });
      const local = rig.chatd(0);
      local.host = HOST_A;
      const s1 = remoteShard(1, HOST_B);
      expect((await s1.heartbeat('channeld', 1)).status).to.equal(Status.OK);
      expect(rig.collector.table.get(s1.mtype)).to.include({ host: HOST_B, pidCheck: false });
      await local.heartbeat('chatd', 0);
      // Host B goes away: no more heartbeats. A message for its mtype sits on this host's queue.
      await s1.close();
      expect(rig.queue.trySend(s1.mtype, Buffer.from('not ours to drain'))).to.equal(true);
      const t0 = Date.now();
      await waitFor(() => {
        void local.heartbeat('chatd', 0);
        return rig.collector.table.vacancy(s1.mtype) !== undefined;
      }, 3000, 20, 'remote shard declared dead by silence');
      expect(Date.now() - t0).to.be.at.least(100);
      const died = linesWith(rig.lines, 'process died').find((l) => l.mtype === s1.mtype)!;
      expect(died).to.include({ reason: 'silence', host: HOST_B, local: false });
      expect(rig.livenessAsked, 'the remote pid was checked locally').to.not.include(s1.pid);
      expect(rig.livenessAsked, 'the local chatD is pid-checked').to.include(local.pid);
      await sleep(100);
      expect(rig.queue.take(s1.mtype, 10).map((m) => m.toString())).to.deep.equal(['not ours to drain']);
      expect(linesWith(rig.lines, 'cleanup done').find((l) => l.mtype === s1.mtype)).to.include({ drained: 0 });
    });

    it('fence - a remote shard declared dead that heartbeats or says HELLO again is answered FENCED, not taken back', async () => {
      rig = makeRig({ shards: 2, deadAfterMs: 100, hostId: HOST_A });
      const c = rig.chatd(0);
      const s1 = remoteShard(1, HOST_C);
      await s1.heartbeat('channeld', 1);
      await waitFor(() => {
        void c.heartbeat('chatd', 0);
        return rig.collector.table.vacancy(s1.mtype) !== undefined;
      }, 3000, 20, 'silent remote shard dead');
      // The link comes back: the same incarnation speaks again (its pid number is "alive" here).
      const hb = await s1.heartbeat('channeld', 1);
      expect(hb.status).to.equal(Status.FENCED);
      expect(hb.payload.byteLength).to.equal(0);
      expect((await s1.hello(1)).status).to.equal(Status.FENCED);
      expect(rig.collector.table.get(s1.mtype)).to.equal(undefined);
      expect(rig.collector.counters.revived).to.equal(0);
      expect(rig.collector.counters.fenced).to.equal(2);
      expect(rig.livenessAsked).to.not.include(s1.pid);
      // Its successor (a new incarnation on the same host) is admitted at once. (One receiver
      // per mtype on the shared local queue: the old one goes first.)
      await s1.close();
      const next = remoteShard(1, HOST_C, 777);
      expect((await next.hello(1)).status).to.equal(Status.OK);
      expect(rig.collector.table.get(s1.mtype)).to.include({ incarnation: 777, host: HOST_C });
    });

    it('fence - a local process declared dead whose pid is gone or invisible is fenced too; one whose pid is alive is revived (as before)', async () => {
      rig = makeRig({ shards: 1, deadAfterMs: 100, hostId: HOST_A });
      const s = rig.shard(0);
      const c = rig.chatd(0);
      rig.alive.delete(c.pid); // another pid namespace: silence decides
      await c.heartbeat('chatd', 0);
      await waitFor(() => {
        void s.heartbeat('channeld', 0);
        return rig.collector.table.vacancy(c.mtype) !== undefined;
      }, 3000, 20, 'chatD silent');
      expect((await c.heartbeat('chatd', 0)).status).to.equal(Status.FENCED);
      rig.alive.add(c.pid);
      expect((await c.heartbeat('chatd', 0)).status).to.equal(Status.OK);
      expect(rig.collector.counters.revived).to.equal(1);
    });

    it('pm2 - this host\'s PM2 exit event does not kill a process of another host holding that mtype', async () => {
      rig = makeRig({ shards: 2, hostId: HOST_A });
      const s0 = remoteShard(0, HOST_B);
      await s0.heartbeat('channeld', 0);
      rig.alive.delete(s0.pid); // nothing with that pid here: a pid check would say "gone"
      const d = rig.collector.supervisorEvent({ event: 'exit', mtype: s0.mtype, at: Date.now() + 10 });
      expect(d).to.equal(undefined);
      await sleep(50);
      expect(rig.collector.table.get(s0.mtype)?.incarnation).to.equal(s0.incarnation);
      expect(linesWith(rig.lines, 'process died')).to.deep.equal([]);
      // The same event for a local shard still counts.
      const s1 = rig.shard(1);
      await s1.heartbeat('channeld', 1);
      rig.alive.delete(s1.pid);
      expect(rig.collector.supervisorEvent({ event: 'exit', mtype: s1.mtype, at: Date.now() + 10 })).to.include({ reason: 'pm2', local: true });
    });

    it('pm2 - this host\'s PM2 deleting a shard instance does not remove another host\'s shard of that index from the membership', async () => {
      rig = makeRig({ shards: 2, deadAfterMs: 100, hostId: HOST_A, shardGoneMs: 60_000, reshardQuietMs: 50 });
      const s0 = rig.shard(0);
      const s1 = remoteShard(1, HOST_B);
      const c = rig.chatd(0);
      const beat = async (peers: [Peer, 'chatd' | 'channeld', number][]): Promise<void> => {
        for (const [p, role, index] of peers) await p.heartbeat(role, index, p.pid, { view: { epoch: 1, members: [[0, 1]] }, ready: true });
      };
      await beat([[s0, 'channeld', 0], [s1, 'channeld', 1], [c, 'chatd', 0]]);
      await s1.close();
      await waitFor(() => {
        void beat([[s0, 'channeld', 0], [c, 'chatd', 0]]);
        return rig.collector.table.vacancy(s1.mtype) !== undefined;
      }, 3000, 20, 'remote shard 1 dead by silence');
      rig.collector.shardDeparted(1); // as if this host's PM2 had deleted its channeld instance 1
      const until = Date.now() + 400;
      while (Date.now() < until) {
        await beat([[s0, 'channeld', 0], [c, 'chatd', 0]]);
        await sleep(20);
      }
      expect(rig.collector.epochs.view?.epoch).to.equal(1);
      expect(rig.collector.epochs.view?.members).to.deep.equal([0, 1]);
    });

    it('incarnations - another host claiming a held mtype is refused while the holder heartbeats, admitted once it is silent; a restart on the holder\'s own host at once', async () => {
      rig = makeRig({ shards: 2, deadAfterMs: 200, hostId: HOST_A, timings: { tickMs: 60_000 } });
      // One receiver per mtype on the shared local queue: each peer is closed before the next speaks.
      const b = remoteShard(1, HOST_B, 11);
      await b.heartbeat('channeld', 1);
      await b.close();
      const c = remoteShard(1, HOST_C, 12); // overlapping SHARD_BASE on host C
      expect((await c.hello(1)).status).to.equal(Status.UNAVAILABLE);
      expect((await c.heartbeat('channeld', 1)).status).to.equal(Status.UNAVAILABLE);
      await c.close();
      expect(rig.collector.table.get(b.mtype)?.incarnation).to.equal(11);
      expect(rig.collector.counters.refusedIncarnations).to.equal(2);
      // A restart on host B (PM2 gives each index once per host): admitted at once, the old one replaced.
      const b2 = remoteShard(1, HOST_B, 13);
      expect((await b2.hello(1)).status).to.equal(Status.OK);
      await b2.close();
      expect(rig.collector.table.get(b.mtype)).to.include({ incarnation: 13, host: HOST_B });
      expect(rig.collector.table.death(b.mtype, 11)).to.include({ reason: 'replaced', successor: 13 });
      // Once host B's process is silent past DEAD_AFTER_MS, host C may take the index.
      await sleep(260);
      const c2 = remoteShard(1, HOST_C, 12);
      expect((await c2.hello(1)).status).to.equal(Status.OK);
      expect(rig.collector.table.get(b.mtype)).to.include({ incarnation: 12, host: HOST_C });
    });

    it('hygiene - never acts for another host\'s process: its vacant mailbox stays, a local vacant one is drained', async () => {
      rig = makeRig({ shards: 2, deadAfterMs: 100, hostId: HOST_A, hygiene: { junkAgeMs: 30, everyMs: 20 } });
      const c = rig.chatd(0);
      const s0 = rig.shard(0);
      const s1 = remoteShard(1, HOST_B);
      await s0.heartbeat('channeld', 0);
      await s1.heartbeat('channeld', 1);
      await s1.close();
      await s0.close();
      rig.alive.delete(s0.pid);
      await waitFor(() => {
        void c.heartbeat('chatd', 0);
        return rig.collector.table.vacancy(s0.mtype) !== undefined && rig.collector.table.vacancy(s1.mtype) !== undefined;
      }, 3000, 20, 'both shards dead');
      expect(rig.queue.trySend(s0.mtype, Buffer.from('local junk'))).to.equal(true);
      expect(rig.queue.trySend(s1.mtype, Buffer.from('remote mtype'))).to.equal(true);
      await waitFor(() => rig.queue.take(s0.mtype, 0).length === 0 && rig.collector.counters.drainedMessages > 0, 3000, 10, 'local vacant mailbox drained');
      await sleep(150); // several more sweeps
      expect(rig.queue.take(s1.mtype, 10).map((m) => m.toString())).to.deep.equal(['remote mtype']);
    });

    it('own outage - while the collector\'s transport is down silence counts for nobody; DEAD_AFTER_MS after it is back it counts again', async () => {
      let up = true;
      rig = makeRig({ shards: 2, deadAfterMs: 150, hostId: HOST_A, connected: () => up });
      const s1 = remoteShard(1, HOST_B);
      await s1.heartbeat('channeld', 1);
      up = false; // NATS is down for us: nobody's heartbeats can arrive
      await sleep(500);
      expect(rig.collector.table.get(s1.mtype)?.incarnation, 'declared dead during our own outage').to.equal(s1.incarnation);
      expect(rig.collector.counters.disconnectedTicks).to.be.greaterThan(0);
      const backAt = Date.now();
      up = true;
      await sleep(100);
      expect(rig.collector.table.get(s1.mtype), 'dead right after we are back').to.not.equal(undefined);
      await waitFor(() => rig.collector.table.vacancy(s1.mtype) !== undefined, 3000, 10, 'silence counts again');
      expect(Date.now() - backAt).to.be.at.least(150);
    });

    it('status - each process with its host', async () => {
      rig = makeRig({ shards: 2, hostId: HOST_A });
      await remoteShard(1, HOST_B).heartbeat('channeld', 1);
      await rig.chatd(0).heartbeat('chatd', 0);
      const s = rig.collector.status() as { processes: { mtype: number; host: string; pidCheck: boolean }[] };
      expect(s.processes.map((p) => [p.mtype, p.host, p.pidCheck])).to.deep.equal([[shardMtype(1), HOST_B, false], [chatdMtype(0), HOST_A, true]]);
    });
  });

  describe('fenced processes stop', () => {
    let queue: LocalQueue;
    let closers: (() => Promise<void>)[];
    beforeEach(() => {
      queue = new LocalQueue(1 << 20, 8192);
      closers = [];
    });
    afterEach(async () => {
      for (const c of closers.reverse()) await c();
    });

    function fencingGc(): Peer {
      const gc = new Peer(new LocalTransport(queue), MTYPE_GC, 3, 1);
      gc.answers.set(Kind.HEARTBEAT, () => [Status.FENCED, EMPTY]);
      gc.answers.set(Kind.HELLO, () => [Status.FENCED, EMPTY]);
      closers.push(() => gc.close());
      return gc;
    }

    function endpoint(mtype: number, receive: boolean): Endpoint {
      const t = new LocalTransport(queue);
      const e = new Endpoint(t, { mtype, incarnation: 55, maxBatchBytes: 4096, timeoutSweepMs: 5 });
      if (receive) e.start(() => {});
      closers.push(async () => {
        await e.close();
        await t.close();
      });
      return e;
    }

    it('heartbeat - names the host; FENCED stops the heartbeats and calls the fenced handler once', async () => {
      const gc = fencingGc();
      let fenced = 0;
      const hb = new Heartbeat(endpoint(shardMtype(3), true), { role: 'channeld', index: 3, host: HOST_B }, 20, undefined, undefined, () => fenced++);
      closers.push(async () => hb.stop());
      hb.start();
      await waitFor(() => fenced === 1, 2000, 5, 'fenced handler');
      await sleep(120);
      expect(fenced).to.equal(1);
      expect(hb.fenced).to.equal(true);
      expect(gc.kinds(Kind.HEARTBEAT)).to.have.length(1);
      expect(decodePayload('heartbeat', gc.kinds(Kind.HEARTBEAT)[0]!.payload)).to.include({ role: 'channeld', index: 3, host: HOST_B });
    });

    it('shard - a HELLO answered FENCED calls the fenced handler and is not retried', async () => {
      const gc = fencingGc();
      let fenced = 0;
      const shard = new ShardServer(endpoint(shardMtype(2), false), {
        shard: 2, recoveryMs: 1000, helloRetryMs: 10, log: pino({ level: 'silent' }), host: HOST_C, onFenced: () => fenced++,
      });
      closers.push(async () => shard.stop());
      shard.start();
      await waitFor(() => fenced === 1, 2000, 5, 'fenced handler');
      await sleep(100);
      expect(gc.kinds(Kind.HELLO)).to.have.length(1);
      expect(decodePayload('hello', gc.kinds(Kind.HELLO)[0]!.payload)).to.deep.equal({ shard: 2, host: HOST_C });
    });
  });
});
