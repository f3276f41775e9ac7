import { expect } from 'chai';
import fc from 'fast-check';
import { memberRanges } from '../../../src/cluster/ownership';
import { EpochKeeper, type LiveProcess } from '../../../src/gc/epochs';
import { chatdMtype, shardMtype } from '../../../src/ipc/mtypes';

const GONE = 5000;
const QUIET = 1000;
const shard = (index: number, incarnation = 500 + index): LiveProcess => ({ mtype: shardMtype(index), role: 'channeld', index, incarnation });
const chatd = (index: number, incarnation = 900 + index): LiveProcess => ({ mtype: chatdMtype(index), role: 'chatd', index, incarnation });

/** Every live process reports the keeper's current view, ready. */
function allReady(k: EpochKeeper, live: LiveProcess[]): void {
  const v = k.view!;
  for (const p of live) k.report(p.mtype, p.incarnation, { epoch: v.epoch, members: memberRanges(v.members), ready: true });
}

describe('gc - epochs (membership epoch decisions, docs/resharding.md)', () => {
  it('first view - nothing while warming; then epoch 1 with CHANNELD_SHARDS members plus the live shards', () => {
    const k = new EpochKeeper(2, { goneMs: GONE, quietMs: QUIET });
    const live = [shard(0), shard(1), shard(4), chatd(0)];
    expect(k.tick(0, live, true)).to.equal(undefined);
    expect(k.view).to.equal(undefined);
    const c = k.tick(10, live, false)!;
    expect(c.reason).to.equal('initial');
    expect(c.view.epoch).to.equal(1);
    expect(c.view.members).to.deep.equal([0, 1, 4]);
    expect(k.tick(20, live, false)).to.equal(undefined);
  });

  it('a restarted collector takes back the highest epoch reported by a live incarnation', () => {
    const k = new EpochKeeper(2, { goneMs: GONE, quietMs: QUIET });
    const live = [shard(3), shard(4), shard(5), chatd(0)];
    k.report(shardMtype(3), 503, { epoch: 6, members: [[3, 5]], ready: true });
    k.report(chatdMtype(0), 900, { epoch: 5, members: [[0, 5]], ready: true });
    k.report(shardMtype(9), 1, { epoch: 99, members: [[9, 9]], ready: true }); // not live: does not count
    k.report(shardMtype(4), 1234, { epoch: 77, members: [[4, 4]], ready: true }); // an older incarnation of shard 4
    const c = k.tick(0, live, false)!;
    expect(c.reason).to.equal('relearned');
    expect([c.view.epoch, ...c.view.members]).to.deep.equal([6, 3, 4, 5]);
  });

  it('a crash-restart within SHARD_GONE_MS changes nothing; a member gone for good is removed once settled', () => {
    const k = new EpochKeeper(3, { goneMs: GONE, quietMs: QUIET });
    const all = [shard(0), shard(1), shard(2), chatd(0)];
    k.tick(0, all, false);
    allReady(k, all);
    // Shard 1 crashes and comes back (a new incarnation) 2 s later.
    const without1 = [shard(0), shard(2), chatd(0)];
    for (let t = 100; t < 2100; t += 100) expect(k.tick(t, without1, false)).to.equal(undefined);
    const back = [shard(0), shard(1, 777), shard(2), chatd(0)];
    expect(k.tick(2100, back, false)).to.equal(undefined); // the new incarnation has not reported: not settled
    k.report(shardMtype(1), 777, { epoch: 1, members: [[0, 2]], ready: true });
    for (let t = 2200; t < 12_000; t += 100) expect(k.tick(t, back, false)).to.equal(undefined);
    expect(k.view!.epoch).to.equal(1);
    // Now shard 2 goes away for good.
    const without2 = [shard(0), shard(1, 777), chatd(0)];
    let change;
    let t = 12_000;
    for (; !change && t < 30_000; t += 100) change = k.tick(t, without2, false);
    expect(change!.removed).to.deep.equal([2]);
    expect(change!.view.epoch).to.equal(2);
    expect(change!.view.members).to.deep.equal([0, 1]);
    expect(t - 100 - 12_000).to.be.within(GONE, GONE + 100);
    expect(k.previousView!.epoch).to.equal(1);
  });

  it('a member PM2 deleted (departed) leaves at the next decision, without waiting SHARD_GONE_MS; one back live stays', () => {
    const k = new EpochKeeper(4, { goneMs: GONE, quietMs: QUIET });
    const all = [shard(0), shard(1), shard(2), shard(3), chatd(0)];
    k.tick(0, all, false);
    allReady(k, all);
    // Shard 3 deleted: gone at once. Shard 2 reported departed but live again (re-added by a scale): stays.
    k.departed(3);
    k.departed(2);
    const without3 = [shard(0), shard(1), shard(2, 888), chatd(0)];
    k.report(shardMtype(2), 888, { epoch: 1, members: [[0, 3]], ready: true });
    const c = k.tick(100, without3, false)!;
    expect(c.removed).to.deep.equal([3]);
    expect(c.view.members).to.deep.equal([0, 1, 2]);
    // A non-member's departure is ignored.
    k.departed(7);
    expect((k.status(200, without3) as { departed: number[] }).departed).to.deep.equal([]);
  });

  it('no new epoch before the current one settled: every live process at it, its incarnation, ready', () => {
    const k = new EpochKeeper(2, { goneMs: GONE, quietMs: QUIET });
    const live = [shard(0), shard(1), chatd(0)];
    k.tick(0, live, false);
    const joined = [...live, shard(2)];
    for (const p of joined) k.report(p.mtype, p.incarnation, { epoch: 1, members: [[0, 1]], ready: p.role !== 'chatd' });
    for (let t = 0; t <= 3000; t += 100) expect(k.tick(t, joined, false)).to.equal(undefined); // the chatD is not ready
    expect(k.lagging(joined)).to.deep.equal([chatdMtype(0)]);
    k.report(chatdMtype(0), 900, { epoch: 1, members: [[0, 1]], ready: true });
    const c = k.tick(3100, joined, false)!;
    expect(c.added).to.deep.equal([2]);
    expect(c.view.members).to.deep.equal([0, 1, 2]);
    expect(k.settled(joined)).to.equal(false); // nobody is at epoch 2 yet
  });

  it('joiners are added together once none has appeared for RESHARD_QUIET_MS (pm2 scale 2 -> 6 is one epoch)', () => {
    const k = new EpochKeeper(2, { goneMs: GONE, quietMs: QUIET });
    let live = [shard(0), shard(1), chatd(0)];
    k.tick(0, live, false);
    const changes = [];
    for (let t = 100, next = 2; t < 8000; t += 100) {
      if (next < 6 && t % 400 === 0) live = [...live, shard(next++)]; // one new shard every 400 ms
      allReady(k, live);
      const c = k.tick(t, live, false);
      if (c) changes.push({ t, c });
    }
    expect(changes.length).to.equal(1);
    expect(changes[0]!.c.added).to.deep.equal([2, 3, 4, 5]);
    expect(changes[0]!.t).to.be.within(1600 + QUIET, 1600 + QUIET + 100);
  });

  it('the last member is never removed; removals and additions due together make one epoch', () => {
    const k = new EpochKeeper(1, { goneMs: GONE, quietMs: QUIET });
    k.tick(0, [chatd(0)], false);
    allReady(k, [chatd(0)]);
    for (let t = 0; t < 20_000; t += 500) expect(k.tick(t, [chatd(0)], false)).to.equal(undefined);
    expect(k.view!.members).to.deep.equal([0]);
    // Shard 0 is gone; shards 7 and 8 arrive.
    const live = [shard(7), shard(8), chatd(0)];
    allReady(k, live);
    const c = k.tick(21_000, live, false) ?? k.tick(22_100, live, false);
    expect(c!.removed).to.deep.equal([0]);
    expect(c!.added).to.deep.equal([7, 8]);
    expect(c!.view.members).to.deep.equal([7, 8]);
  });

  it('a process at an epoch this collector did not decide: moved past, so that one number never names two sets', () => {
    const k = new EpochKeeper(2, { goneMs: GONE, quietMs: QUIET });
    const live = [shard(0), shard(1), chatd(0)];
    k.tick(0, live, false);
    k.report(shardMtype(0), 500, { epoch: 4, members: [[0, 0]], ready: true });
    const c = k.tick(100, live, false)!;
    expect(c.reason).to.equal('reconcile');
    expect(c.view.epoch).to.equal(5);
    expect(c.view.members).to.deep.equal([0, 1]);
    // The same epoch with other members: also moved past.
    k.report(shardMtype(1), 501, { epoch: 5, members: [[1, 1]], ready: true });
    expect(k.tick(200, live, false)!.view.epoch).to.equal(6);
  });

  it('a malformed report is counted and ignored (the process counts as not reporting)', () => {
    const k = new EpochKeeper(2, { goneMs: GONE, quietMs: QUIET });
    const live = [shard(0), shard(1)];
    k.tick(0, live, false);
    allReady(k, live);
    expect(k.settled(live)).to.equal(true);
    k.report(shardMtype(1), 501, { epoch: 1, members: [[1, 0]], ready: true });
    k.report(shardMtype(0), 500, { epoch: 0, members: [[0, 1]], ready: true });
    expect(k.badReports).to.equal(2);
    expect(k.settled(live)).to.equal(false);
    expect(k.status(0, live)).to.include({ epoch: 1, settled: false, badReports: 2 });
  });

  it('invariants over random histories (fast-check): epochs only increase, members never empty, a member leaves only after SHARD_GONE_MS away, only live shards join', () => {
    const step = fc.record({
      dt: fc.integer({ min: 1, max: 2000 }),
      up: fc.uniqueArray(fc.integer({ min: 0, max: 9 }), { maxLength: 10 }),
      ready: fc.boolean(),
    });
    let scales = 0;
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 6 }), fc.array(step, { minLength: 1, maxLength: 60 }), (initial, steps) => {
        const k = new EpochKeeper(initial, { goneMs: GONE, quietMs: QUIET });
        let now = 0;
        let lastEpoch = 0;
        const lastLive = new Map<number, number>();
        for (const s of steps) {
          now += s.dt;
          const live = [...s.up.map((i) => shard(i)), chatd(0)];
          for (const i of s.up) lastLive.set(i, now);
          const before = k.view;
          const wasSettled = k.settled(live);
          if (s.ready && k.view) allReady(k, live);
          const settledNow = k.settled(live);
          const c = k.tick(now, live, false);
          const v = k.view!;
          if (v.members.length === 0 || v.epoch < lastEpoch) return false;
          if (c && before) {
            if (c.reason !== 'scale') return false;
            if (!(wasSettled || settledNow) || v.epoch !== before.epoch + 1) return false;
            for (const r of c.removed) if (s.up.includes(r) || now - (lastLive.get(r) ?? 0) < GONE) return false;
            scales++;
            for (const a of c.added) if (!s.up.includes(a)) return false;
          }
          lastEpoch = v.epoch;
        }
        return true;
      }),
      { numRuns: 150 },
    );
    expect(scales, 'scale decisions seen (the property is not vacuous)').to.be.above(20);
  });
});
