import { expect } from 'chai';
import { OwnershipView, handover } from '../../../src/cluster/ownership';
import { EpochFollower } from '../../../src/chatd/epoch-follower';
import { waitFor } from '../../helpers/wait';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

describe('chatd - epoch follower (hand-over on a new membership epoch, docs/resharding.md)', () => {
  it('first view: routing starts, nothing to hand over, ready at once', async () => {
    const calls: number[] = [];
    const f = new EpochFollower({ resync: async (s) => (calls.push(s), true) });
    expect([f.view, f.ready]).to.deep.equal([undefined, false]);
    expect(f.adopt(new OwnershipView(3, [0, 1]))).to.equal(true);
    await f.settled();
    expect([f.view!.epoch, f.ready, calls.length]).to.deep.equal([3, true, 0]);
    expect(f.adopt(new OwnershipView(3, [0]))).to.equal(false);
    expect(f.adopt(new OwnershipView(2, [0]))).to.equal(false);
  });

  it('a new epoch: routes by it at once, waits for LOGINs/MOVEs routed by the old one, then resends to each gaining shard, then ready', async () => {
    const calls: [number, number, number][] = [];
    const f: EpochFollower = new EpochFollower({ resync: async (s, v): Promise<boolean> => (calls.push([s, v.epoch, f.inFlightBefore(v.epoch)]), true), pollMs: 5 });
    const e1 = new OwnershipView(1, [0, 1]);
    f.adopt(e1);
    f.begin(1); // a login routed by epoch 1, not answered yet
    f.begin(1);
    const e2 = e1.next(2, [0, 1, 2, 3]);
    f.adopt(e2);
    expect(f.view).to.equal(e2); // new requests route by epoch 2 already
    expect(f.previousView).to.equal(e1);
    f.begin(2); // one routed by the new epoch does not hold anything up
    await sleep(40);
    expect(calls).to.deep.equal([]);
    expect(f.ready).to.equal(false);
    f.end(1);
    await sleep(20);
    expect(calls).to.deep.equal([]);
    f.end(1);
    await f.settled();
    // Adding shards 2 and 3: only they gain buckets, and each got everything it owns, once.
    expect(calls).to.deep.equal([[2, 2, 0], [3, 2, 0]]);
    expect([...handover(e1, e2).gains.keys()].sort()).to.deep.equal([2, 3]);
    expect(f.ready).to.equal(true);
    expect(f.counters).to.include({ handovers: 1, resyncs: 2 });
  });

  it('a failed resend is retried; a shard not live or no longer a member is not waited for', async () => {
    let failures = 2;
    const calls: number[] = [];
    const f = new EpochFollower({
      resync: async (s) => {
        calls.push(s);
        if (s === 2 && failures-- > 0) return false;
        if (s === 3) throw new Error('queue gone');
        return true;
      },
      retryMs: 5,
      isUp: (s) => s !== 4,
    });
    const e1 = new OwnershipView(1, [0, 1]);
    f.adopt(e1);
    let threw = 0;
    const e2 = e1.next(2, [0, 1, 2, 3, 4]);
    f.adopt(e2);
    await waitFor(() => calls.filter((s) => s === 3).length >= 3, 2000, 5, 'shard 3 retried');
    expect(calls.filter((s) => s === 2)).to.have.length(3); // two failures, then done
    expect(calls).to.not.include(4); // not live: it HELLOs when back, and the collector RESYNCs us
    expect(f.ready).to.equal(false); // shard 3 still owed
    expect(f.owedShards()).to.deep.equal([3]);
    // Shard 3 leaves in the next epoch: nothing owed any more.
    f.adopt(e2.next(3, [0, 1, 2, 4]));
    await f.settled();
    threw = f.counters.failedResyncs;
    expect(threw).to.be.at.least(3);
    expect(f.ready).to.equal(true);
    expect(f.view!.epoch).to.equal(3);
    expect(f.counters.superseded).to.equal(1);
  });

  it('a newer epoch while a hand-over waits: the older gives way, and its shards are resent under the newer view', async () => {
    const calls: [number, number][] = [];
    const f = new EpochFollower({ resync: async (s, v) => (calls.push([s, v.epoch]), true), pollMs: 5 });
    const e1 = new OwnershipView(1, [0]);
    f.adopt(e1);
    f.begin(1);
    f.adopt(e1.next(2, [0, 1])); // shard 1 gains; waits for the login in flight
    f.adopt(new OwnershipView(3, [0, 1, 2], e1)); // shard 2 gains too
    f.end(1);
    await f.settled();
    expect(calls).to.deep.equal([[1, 3], [2, 3]]);
    expect(f.ready).to.equal(true);
  });
});
