import { expect } from 'chai';
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  BUCKETS,
  OwnershipView,
  bucketOfHash,
  bucketOfKey,
  deriveTable,
  fmix32,
  handover,
  isEpoch,
  memberRanges,
  membersFromRanges,
  membersOf,
  ownerTable,
  weight,
} from '../../../src/cluster/ownership';
import { fnv1a32, fnv1a32String } from '../../../src/cluster/shard-for';
import { MAX_SHARDS } from '../../../src/ipc/mtypes';

/** A member set: 1..12 distinct indexes, spread over the whole range now and then. */
const membersArb = fc.uniqueArray(fc.oneof(fc.integer({ min: 0, max: 15 }), fc.integer({ min: 0, max: MAX_SHARDS - 1 })), { minLength: 1, maxLength: 12 });

/** Reference owner of one bucket, straight from the definition. */
function refOwner(bucket: number, members: number[]): number {
  let best = -1;
  let owner = -1;
  for (const s of members) {
    const w = weight(bucket, s);
    if (w > best || (w === best && s < owner)) {
      best = w;
      owner = s;
    }
  }
  return owner;
}

const digest = (t: Uint16Array): string => createHash('sha256').update(Buffer.from(t.buffer, t.byteOffset, t.byteLength)).digest('hex');

describe('cluster - ownership (rendezvous buckets, docs/resharding.md)', function () {
  this.timeout(60_000);

  it('fmix32 - a bijection on u32 (no two of 2^16 sampled inputs collide) that stays unsigned', () => {
    const seen = new Set<number>();
    let outOfRange = 0;
    for (let i = 0; i < 65_536; i++) {
      const h = fmix32(Math.imul(i, 0x9e3779b1) >>> 0);
      if (!(Number.isInteger(h) && h >= 0 && h <= 0xffffffff)) outOfRange++;
      seen.add(h);
    }
    expect(outOfRange).to.equal(0);
    expect(seen.size).to.equal(65_536);
    expect(fmix32(0)).to.equal(0);
  });

  it('bucketOfKey - the bucket of fnv1a32 of the UTF-8 bytes, in 0..BUCKETS-1 (fast-check)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 24 }), (k) => {
        const b = bucketOfKey(k);
        return b === bucketOfHash(fnv1a32(new TextEncoder().encode(k))) && b >= 0 && b < BUCKETS && Number.isInteger(b);
      }),
      { numRuns: 2000 },
    );
  });

  it('ownerTable - every bucket goes to the member the definition names (sampled buckets, fast-check)', () => {
    fc.assert(
      fc.property(membersArb, fc.array(fc.integer({ min: 0, max: BUCKETS - 1 }), { minLength: 1, maxLength: 64 }), (list, buckets) => {
        const m = membersOf(list);
        const t = ownerTable(m);
        return buckets.every((b) => t[b] === refOwner(b, m));
      }),
      { numRuns: 60 },
    );
  });

  it('ownerTable - only members own buckets, and the order of the input list does not matter (fast-check)', () => {
    fc.assert(
      fc.property(membersArb, (list) => {
        const t = ownerTable(list);
        const set = new Set(list);
        for (let b = 0; b < BUCKETS; b++) if (!set.has(t[b]!)) return false;
        return digest(ownerTable([...list].reverse())) === digest(t);
      }),
      { numRuns: 40 },
    );
  });

  it('the same table for the same member set in another process (pinned digests, and a child node computes them alike)', () => {
    const sets = [[0], [0, 1], [0, 1, 2, 3, 4, 5], [3, 4, 5], [0, 2, 7, 899]];
    const here = sets.map((s) => digest(ownerTable(s)));
    const script = `const o=require(${JSON.stringify(require.resolve('../../../src/cluster/ownership'))});const {createHash}=require('node:crypto');` +
      `const sets=${JSON.stringify(sets)};console.log(JSON.stringify(sets.map(s=>{const t=o.ownerTable(s);return createHash('sha256').update(Buffer.from(t.buffer)).digest('hex')})))`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(r.status, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout)).to.deep.equal(here);
    // A few owners pinned, so that a change of the hash or the weight cannot pass unnoticed
    // (every process of one cluster must run the same function).
    const six = ownerTable([0, 1, 2, 3, 4, 5]);
    expect([0, 1, 2, 100, 65_535].map((b) => six[b])).to.deep.equal([3, 2, 4, 0, 5]);
    expect([...ownerTable([0, 2, 7, 899]).subarray(0, 8)]).to.deep.equal([7, 899, 7, 7, 7, 7, 7, 0]);
    expect([bucketOfKey('alice'), bucketOfKey('타락파워전사')]).to.deep.equal([59_924, 43_976]);
  });

  it('adding shards moves only buckets to the added shards, removing moves only the removed shards\' buckets (fast-check)', () => {
    fc.assert(
      fc.property(membersArb, membersArb, (a, b) => {
        const from = new OwnershipView(1, a);
        const to = from.next(2, b);
        const added = new Set(to.members.filter((s) => !from.isMember(s)));
        const removed = new Set(from.members.filter((s) => !to.isMember(s)));
        for (let k = 0; k < BUCKETS; k++) {
          const x = from.table[k]!;
          const y = to.table[k]!;
          if (x === y) continue;
          // A bucket changes owner only when its old owner left or a new shard won it.
          if (!removed.has(x) && !added.has(y)) return false;
        }
        return true;
      }),
      { numRuns: 40 },
    );
  });

  it('few names move: one shard added to N moves about 1/(N+1) of the names, one removed about 1/N (fast-check over N)', () => {
    const names = Array.from({ length: 20_000 }, (_, i) => `name${i}`);
    const buckets = names.map(bucketOfKey);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 24 }), fc.integer({ min: 0, max: 100 }), (n, offset) => {
        const base = Array.from({ length: n }, (_, i) => i + offset);
        const v = new OwnershipView(1, base);
        const up = v.next(2, [...base, offset + n]);
        const movedUp = buckets.filter((b) => v.table[b] !== up.table[b]).length / names.length;
        const expectUp = 1 / (n + 1);
        if (Math.abs(movedUp - expectUp) > 0.02 + expectUp * 0.15) return false;
        if (n === 1) return true;
        const down = v.next(2, base.slice(1));
        const movedDown = buckets.filter((b) => v.table[b] !== down.table[b]).length / names.length;
        return Math.abs(movedDown - 1 / n) <= 0.02 + (1 / n) * 0.15;
      }),
      { numRuns: 30 },
    );
  });

  it('balance: 6 members hold within 5 % of the ideal share of buckets each, 64 within 15 %', () => {
    for (const [n, tol] of [[6, 0.05], [64, 0.15]] as const) {
      const counts = new Map<number, number>();
      for (const s of ownerTable(Array.from({ length: n }, (_, i) => i))) counts.set(s, (counts.get(s) ?? 0) + 1);
      expect(counts.size).to.equal(n);
      for (const c of counts.values()) expect(Math.abs(c - BUCKETS / n) / (BUCKETS / n)).to.be.below(tol);
    }
  });

  it('deriveTable - equal to the full table of the new set, whatever the change (fast-check)', () => {
    fc.assert(
      fc.property(membersArb, membersArb, (a, b) => digest(deriveTable(ownerTable(a), a, b)) === digest(ownerTable(b))),
      { numRuns: 40 },
    );
  });

  it('handover - counts the buckets whose owner differs, each once as a gain and once as a loss', () => {
    const a = new OwnershipView(1, [0, 1]);
    const b = a.next(2, [0, 1, 2, 3, 4, 5]);
    const h = handover(a, b);
    let gains = 0;
    let losses = 0;
    for (const g of h.gains.values()) gains += g.length;
    for (const l of h.losses.values()) losses += l.length;
    expect(gains).to.equal(h.moved);
    expect(losses).to.equal(h.moved);
    expect([...h.gains.keys()].sort()).to.deep.equal([2, 3, 4, 5]); // adding: only the new shards gain
    expect(h.moved / BUCKETS).to.be.closeTo(4 / 6, 0.02);
    const c = b.next(3, [3, 4, 5]); // PM2's scale-down removes the lowest indexes
    const h2 = handover(b, c);
    expect([...h2.losses.keys()].sort()).to.deep.equal([0, 1, 2]);
    expect(h2.moved / BUCKETS).to.be.closeTo(3 / 6, 0.02);
    expect(handover(c, c).moved).to.equal(0);
  });

  it('memberRanges / membersFromRanges - round trip, and anything malformed refused (fast-check)', () => {
    fc.assert(
      fc.property(membersArb, (list) => {
        const m = membersOf(list);
        return JSON.stringify(membersFromRanges(memberRanges(m))) === JSON.stringify(m);
      }),
      { numRuns: 500 },
    );
    expect(memberRanges([0, 1, 2, 5])).to.deep.equal([[0, 2], [5, 5]]);
    for (const bad of [[], [[2, 1]], [[0, 900]], [[-1, 0]], [[0, 1], [1, 3]], [[3, 4], [0, 1]], [[0, 1], [2, 3]], [[0.5, 1]], [[0]], [['0', 1]]]) {
      expect(membersFromRanges(bad as [number, number][]), JSON.stringify(bad)).to.equal(undefined);
    }
    fc.assert(
      fc.property(fc.array(fc.array(fc.oneof(fc.integer({ min: -2, max: 1000 }), fc.double(), fc.string()), { maxLength: 3 }), { maxLength: 5 }), (ranges) => {
        const m = membersFromRanges(ranges as unknown as [number, number][]);
        return m === undefined || (m.length > 0 && m.every((s, i) => Number.isInteger(s) && s >= 0 && s < MAX_SHARDS && (i === 0 || s > m[i - 1]!)));
      }),
      { numRuns: 2000 },
    );
  });

  it('membersOf / OwnershipView - invalid input is a RangeError, never a table', () => {
    expect(() => membersOf([])).to.throw(RangeError);
    expect(() => membersOf([900])).to.throw(RangeError);
    expect(() => membersOf([1.5])).to.throw(RangeError);
    expect(() => new OwnershipView(0, [0])).to.throw(RangeError);
    expect(() => new OwnershipView(2 ** 32, [0])).to.throw(RangeError);
    expect(isEpoch(1) && isEpoch(0xffffffff) && !isEpoch(0) && !isEpoch('1') && !isEpoch(1.5)).to.equal(true);
    const v = new OwnershipView(7, [5, 3, 3]);
    expect(v.members).to.deep.equal([3, 5]);
    expect(v.sameAs({ epoch: 7, members: [3, 5] })).to.equal(true);
    expect(v.sameAs({ epoch: 8, members: [3, 5] })).to.equal(false);
    expect(v.ranges()).to.deep.equal([[3, 3], [5, 5]]);
    expect(v.bucketsOf(3).length + v.bucketsOf(5).length).to.equal(BUCKETS);
    expect(v.ownerOfKey('alice')).to.equal(v.ownerOfHash(fnv1a32String('alice')));
  });
});
