import { expect } from 'chai';
import fc from 'fast-check';
import { BUCKETS, OwnershipView } from '../../../src/cluster/ownership';
import { BucketStates, B_NOT_MINE, B_SERVING, B_WAITING } from '../../../src/channeld/bucket-states';
import { ReplicaReader, ReplicaWriter, createReplicaMemory } from '../../../src/channeld/directory-replica';
import { fnv1a32String } from '../../../src/cluster/shard-for';

/** A bucket of each kind between two views, for shard `me`. */
function kinds(me: number, a: OwnershipView, b: OwnershipView): { kept: number; lost: number; gained: number; other: number } {
  const find = (p: (x: number, y: number) => boolean): number => {
    for (let k = 0; k < BUCKETS; k++) if (p(a.table[k]!, b.table[k]!)) return k;
    throw new Error('no such bucket');
  };
  return {
    kept: find((x, y) => x === me && y === me),
    lost: find((x, y) => x === me && y !== me),
    gained: find((x, y) => x !== me && y === me),
    other: find((x, y) => x !== me && y !== me),
  };
}

describe('channeld - bucket states (a shard under membership epochs, docs/resharding.md)', () => {
  it('first view: every owned bucket waits until each chatD the collector named has synced at that epoch', () => {
    const s = new BucketStates(1);
    expect(s.verdict(1, 0)).to.equal('waiting'); // no view yet: recovering (UNAVAILABLE)
    const v = new OwnershipView(3, [0, 1, 2]);
    const change = s.adopt(v)!;
    expect(change.lost).to.deep.equal([]);
    expect(change.gained.length).to.equal(v.bucketsOf(1).length);
    const mine = change.gained[0]!;
    const theirs = v.bucketsOf(0)[0]!;
    expect([s.verdict(3, mine), s.verdict(3, theirs), s.verdict(4, mine), s.verdict(2, mine)]).to.deep.equal(['waiting', 'wrongEpoch', 'ahead', 'wrongEpoch']);
    expect(s.ready).to.equal(false);
    s.expect(['1000:7', '1001:8']);
    expect(s.syncedBy('1000:7', 2)).to.equal(false); // another epoch's SYNC says nothing about this one
    expect(s.syncedBy('1000:7', 3)).to.equal(true);
    expect(s.verdict(3, mine)).to.equal('waiting');
    expect(s.waitingFor()).to.deep.equal(['1001:8']);
    s.syncedBy('1001:8', 3);
    expect([s.verdict(3, mine), s.ready, s.waiting]).to.deep.equal(['serve', true, 0]);
  });

  it('an epoch change: kept buckets served throughout (by both epochs), lost ones refused at once, gained ones wait', () => {
    const s = new BucketStates(2);
    const e1 = new OwnershipView(1, [0, 1, 2]);
    s.adopt(e1);
    s.expect([]);
    expect(s.ready).to.equal(true); // no chatD: nothing to wait for
    const e2 = e1.next(2, [1, 2, 3]); // 0 left, 3 joined: shard 2 gains some of 0's buckets, loses some to 3
    const k = kinds(2, e1, e2);
    const change = s.adopt(e2)!;
    expect(change.lost).to.include(k.lost);
    expect(change.gained).to.include(k.gained);
    expect(s.verdict(2, k.kept)).to.equal('serve');
    expect(s.verdict(1, k.kept)).to.equal('serve'); // the sender is one heartbeat behind
    expect(s.verdict(2, k.lost)).to.equal('wrongEpoch');
    expect(s.verdict(1, k.lost)).to.equal('wrongEpoch'); // dropped: never "offline" from here again
    expect(s.verdict(2, k.gained)).to.equal('waiting');
    expect(s.verdict(1, k.gained)).to.equal('wrongEpoch'); // not ours at epoch 1
    expect(s.verdict(2, k.other)).to.equal('wrongEpoch');
    expect(s.waitingFor()).to.deep.equal([]); // the chatDs to wait for come with a collector answer at epoch 2
    expect(s.ready).to.equal(false);
    expect(s.states[k.kept]).to.equal(B_SERVING);
    expect(s.states[k.lost]).to.equal(B_NOT_MINE);
    expect(s.states[k.gained]).to.equal(B_WAITING);
    s.expect(['1000:1']);
    s.syncedBy('1000:1', 2);
    expect(s.verdict(2, k.gained)).to.equal('serve');
    // Two epochs back is too old.
    s.adopt(e2.next(3, [1, 2, 3, 4]));
    expect(s.verdict(1, k.kept)).to.not.equal('serve');
  });

  it('an earlier or equal epoch changes nothing; the epoch is published after the states are written', () => {
    const published: [number, number][] = [];
    const states = new Uint8Array(new SharedArrayBuffer(BUCKETS));
    const e1 = new OwnershipView(5, [0, 1]);
    const e2 = e1.next(6, [0]);
    const lostBucket = e1.bucketsOf(1)[0]!;
    const s = new BucketStates(0, states, (epoch) => published.push([epoch, Atomics.load(states, lostBucket)]));
    s.adopt(e1);
    s.expect([]);
    expect(s.ready).to.equal(true);
    expect(s.adopt(new OwnershipView(4, [1]))).to.equal(undefined);
    expect(s.adopt(new OwnershipView(5, [1]))).to.equal(undefined);
    expect(s.epoch).to.equal(5);
    const change = s.adopt(e2)!;
    expect(change.gained).to.include(lostBucket);
    // When epoch 6 was published, shard 1's old bucket was already waiting here.
    expect(published).to.deep.equal([[5, B_NOT_MINE], [6, B_WAITING]]);
    expect(() => new BucketStates(0, new Uint8Array(10))).to.throw(RangeError);
  });

  it('in the replica: the receiver thread reader sees the states and the epoch the main thread writes (served only at that epoch, in a served bucket)', () => {
    const memory = createReplicaMemory(16);
    const w = new ReplicaWriter(memory);
    const r = new ReplicaReader(memory); // the receiver thread's side, over the same memory
    const s = new BucketStates(1, w.states, (e) => w.setEpoch(e));
    const e1 = new OwnershipView(9, [0, 1]);
    // Names of each kind for shard 1.
    let mine = '';
    let theirs = '';
    for (let i = 0; !mine || !theirs; i++) {
      const key = `hero${i}`;
      if (e1.ownerOfKey(key) === 1) mine ||= key;
      else theirs ||= key;
    }
    const h = (k: string): number => fnv1a32String(k);
    expect(r.served(9, h(mine))).to.equal(false); // no epoch yet
    s.adopt(e1);
    expect(r.served(9, h(mine))).to.equal(false); // waiting
    s.expect([]);
    expect([r.served(9, h(mine)), r.served(9, h(theirs)), r.served(8, h(mine)), r.served(10, h(mine)), r.served(0, h(mine))]).to.deep.equal([true, false, false, false, false]);
    // An epoch above 2^31 still compares as the u32 it is on the wire.
    const big = e1.next(0x9000_0000, [1]);
    s.adopt(big);
    s.expect([]);
    expect([r.served(0x9000_0000, h(theirs)), r.served(0x9000_0000, h(mine))]).to.deep.equal([true, true]);
  });

  it('against a model, over random histories of views, named chatDs and syncs (fast-check)', () => {
    const op = fc.oneof(
      fc.record({ t: fc.constant('view' as const), members: fc.uniqueArray(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 5 }), skip: fc.integer({ min: 1, max: 2 }) }),
      fc.record({ t: fc.constant('expect' as const), chatds: fc.uniqueArray(fc.integer({ min: 0, max: 2 }), { maxLength: 3 }) }),
      fc.record({ t: fc.constant('sync' as const), chatd: fc.integer({ min: 0, max: 2 }), back: fc.integer({ min: 0, max: 1 }) }),
    );
    const sample = Array.from({ length: 64 }, (_, i) => (i * 1021) % BUCKETS);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 4 }), fc.array(op, { minLength: 1, maxLength: 25 }), (me, ops) => {
        const s = new BucketStates(me);
        // The model: per bucket 0 not mine / 1 serving / 2 waiting, as the design states it.
        const model = new Uint8Array(BUCKETS);
        let cur: OwnershipView | undefined;
        let prev: OwnershipView | undefined;
        let expected: Set<number> | undefined;
        const synced = new Set<number>();
        const settle = (): void => {
          if (!expected || [...expected].some((c) => !synced.has(c))) return;
          for (let b = 0; b < BUCKETS; b++) if (model[b] === 2) model[b] = 1;
        };
        let epoch = 0;
        for (const o of ops) {
          if (o.t === 'view') {
            epoch += o.skip;
            const v = cur ? cur.next(epoch, o.members) : new OwnershipView(epoch, o.members);
            s.adopt(v);
            for (let b = 0; b < BUCKETS; b++) {
              const now = v.table[b] === me;
              const before = cur?.table[b] === me;
              if (now && !before) model[b] = 2;
              if (!now) model[b] = 0;
            }
            prev = cur;
            cur = v;
            synced.clear();
            expected = undefined;
          } else if (o.t === 'expect') {
            s.expect(o.chatds.map(String));
            expected = new Set(o.chatds);
            settle();
          } else if (cur) {
            const counted = s.syncedBy(String(o.chatd), cur.epoch - o.back);
            if (counted !== (o.back === 0)) return false;
            if (o.back === 0) {
              synced.add(o.chatd);
              settle();
            }
          }
          // Compare: the states, the count, and the verdicts by the current and previous epochs.
          let waiting = 0;
          for (let b = 0; b < BUCKETS; b++) {
            if (s.states[b] !== model[b]) return false;
            if (model[b] === 2) waiting++;
          }
          if (s.waiting !== waiting || s.ready !== (cur !== undefined && waiting === 0)) return false;
          if (!cur) continue;
          for (const b of sample) {
            const want = model[b] === 1 ? 'serve' : model[b] === 2 ? 'waiting' : 'wrongEpoch';
            if (s.verdict(cur.epoch, b) !== want) return false;
            if (s.verdict(cur.epoch + 1, b) !== 'ahead') return false;
            if (prev) {
              const v = s.verdict(prev.epoch, b);
              if (prev.table[b] === me ? v !== want : v !== 'wrongEpoch') return false;
              // Never served for a sender routed by an epoch under which this shard did not own it.
              if (v === 'serve' && (prev.table[b] !== me || cur.table[b] !== me)) return false;
            }
          }
        }
        return true;
      }),
      { numRuns: 60 },
    );
  });
});
