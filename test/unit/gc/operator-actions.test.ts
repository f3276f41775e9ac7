import { expect } from 'chai';
import { Kind, Status } from '../../../src/cluster/kinds';
import { encodePayload } from '../../../src/cluster/messages';
import { shardMtype } from '../../../src/ipc';
import { gcPm2 } from '../../../src/gc/pm2-figures';
import { makeRig, type Rig } from './gc-rig';

/** The collector's `pm2 trigger gc ...` actions (docs/operations.md, "Metrics and actions"). */
describe('gc - operator actions (queue-stat, purge-dead) and figures', () => {
  let rig: Rig | undefined;
  afterEach(async () => {
    await rig?.close();
    rig = undefined;
  });

  it('purge-dead - runs the death checks at once (no tick), purges the dead chatD everywhere, drains its mailbox, reports', async () => {
    // Ticks a minute apart: only the action can find the death.
    rig = makeRig({ shards: 2, timings: { tickMs: 60_000 } });
    const shards = [rig.shard(0), rig.shard(1)];
    for (const [i, s] of shards.entries()) {
      await s.heartbeat('channeld', i);
      s.answers.set(Kind.PURGE, () => [Status.OK, encodePayload('count', { count: 2 + i })]);
    }
    const chatd = rig.chatd(0);
    await chatd.heartbeat('chatd', 0);
    await chatd.close();
    for (let i = 0; i < 3; i++) rig.queue.trySend(chatd.mtype, Buffer.from('left behind'));
    rig.alive.delete(chatd.pid);
    const before = rig.collector.metrics().counters;
    const r = (await rig.collector.purgeDead(2000)) as { found: { mtype: number; reason: string }[]; settled: boolean; cleanups: { removed: number; drained: number }[] };
    expect(r.found).to.deep.equal([{ mtype: chatd.mtype, role: 'chatd', index: 0, incarnation: chatd.incarnation, pid: chatd.pid, reason: 'pid' }]);
    expect(r.settled).to.equal(true);
    expect(r.cleanups).to.have.length(1);
    expect(r.cleanups[0]).to.include({ removed: 5, drained: 3 });
    for (const s of shards) expect(s.kinds(Kind.PURGE)).to.have.length(1);
    const after = rig.collector.metrics().counters;
    expect(after.deathsSeen! - before.deathsSeen!).to.equal(1);
    expect(after.purges! - before.purges!).to.equal(1);
    expect(after.purgedEntries! - before.purgedEntries!).to.equal(5);
    // Nothing more to find a second time.
    const again = (await rig.collector.purgeDead(500)) as { found: unknown[] };
    expect(again.found).to.deep.equal([]);
  });

  it('purge-dead - drains messages sent to a dead shard nobody took over since its death', async () => {
    rig = makeRig({ shards: 2, timings: { tickMs: 60_000 } });
    const s1 = rig.shard(1);
    await s1.heartbeat('channeld', 1);
    await s1.close();
    rig.alive.delete(s1.pid);
    await rig.collector.purgeDead(500); // the death
    for (let i = 0; i < 4; i++) rig.queue.trySend(shardMtype(1), Buffer.from('late'));
    const r = (await rig.collector.purgeDead(500)) as { drained: Record<string, number> };
    expect(r.drained).to.deep.equal({ [shardMtype(1)]: 4 });
    expect(rig.queue.stat().messages).to.equal(0);
  });

  it('queue-stat - kernel figures and fill; without MSG_COPY the head is not scanned and says why', () => {
    rig = makeRig({ shards: 1 });
    rig.queue.trySend(shardMtype(0) + 40, Buffer.alloc(100));
    const q = rig.collector.queueReport() as { messages: number; bytes: number; capacity: number; fill: number; limitedBy: string; head: { scanned: number; peek: string } };
    expect(q).to.include({ messages: 1, bytes: 100, capacity: 16384, limitedBy: 'bytes' });
    expect(q.fill).to.be.closeTo(100 / 16384, 1e-9);
    expect(q.head.scanned).to.equal(0);
    expect(q.head.peek).to.match(/not available/);
  });

  it('figures and actions - numbers for pm2 show; each action answers', async () => {
    rig = makeRig({ shards: 1 });
    const spec = gcPm2(rig.collector);
    const byName = new Map(spec.figures.map((f) => [f.name, f.read()]));
    for (const n of ['Processes', 'Session cleanups', 'Deaths seen', 'Purges', 'Queue messages', 'Queue bytes', 'Queue fill']) expect(byName.get(n), n).to.be.a('number');
    expect(spec.actions.map((a) => a.name)).to.deep.equal(['status', 'queue-stat', 'purge-dead']);
    for (const a of spec.actions) expect(await a.run()).to.be.an('object');
  });
});
