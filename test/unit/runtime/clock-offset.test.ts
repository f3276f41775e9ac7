import { expect } from 'chai';
import { ClockOffsetEstimator } from '../../../src/runtime/clock-offset';

/**
 * The clock-offset estimator (docs/multi-host.md "Clock skew") with injected clocks: every
 * sample is (local send time, collector time, local receive time), made from a true offset,
 * two one-way delays and where in between the collector read its clock.
 */

/** A deterministic pseudo-random sequence (tests must be repeatable). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 0x1_0000_0000;
  };
}

/** One round trip: local t0, delays out and back, collector clock = local + trueOffset, both in whole ms. */
function sample(t0: number, trueOffset: number, outMs: number, backMs: number): [number, number, number] {
  const gLocal = t0 + outMs;
  return [Math.floor(t0), Math.floor(gLocal + trueOffset), Math.floor(gLocal + backMs)];
}

describe('clock offset - estimator (injected clocks)', () => {
  it('one host - the collector read its clock between send and reply: never applied, over 10,000 random round trips', () => {
    const r = rng(1);
    const e = new ClockOffsetEstimator();
    let t = 1_796_000_000_000;
    for (let i = 0; i < 10_000; i++) {
      t += 250 + Math.floor(r() * 5);
      const rtt = Math.floor(r() * (i % 100 === 0 ? 900 : 8));
      const g = t + Math.floor(r() * (rtt + 1));
      e.add(t, g, t + rtt);
      expect(e.applied(), `sample ${i}`).to.equal(0);
      expect(Math.abs(e.estimate!.offset)).to.be.at.most(e.estimate!.bound);
    }
    expect(e.jumps).to.equal(0);
  });

  for (const skew of [-3000, 3000, 120, -45]) {
    it(`skewed - a true offset of ${skew} ms is found within its bound and applied (rounded)`, () => {
      const r = rng(skew + 10_000);
      const e = new ClockOffsetEstimator();
      let t = 1_796_000_000_000;
      for (let i = 0; i < 40; i++) {
        t += 250;
        e.add(...sample(t, skew, 1 + r() * 30, 1 + r() * 30));
      }
      const est = e.estimate!;
      expect(Math.abs(est.offset - skew)).to.be.at.most(est.bound);
      expect(est.bound).to.be.below(10);
      expect(Math.abs(e.applied() - skew)).to.be.at.most(est.bound + 1);
    });
  }

  it('robust - the quickest round trip wins: slow, lopsided replies (a queued reply: +400 ms one way) do not bias it', () => {
    const e = new ClockOffsetEstimator();
    let t = 1_000_000;
    e.add(...sample(t, 3000, 2, 2)); // quick: offset 3000 ± 3
    for (let i = 0; i < 20; i++) {
      t += 250;
      e.add(...sample(t, 3000, 2, 400)); // each says about 3000 - 199, ± 202
    }
    expect(e.estimate!.bound).to.be.at.most(3);
    expect(Math.abs(e.estimate!.offset - 3000)).to.be.at.most(3);
    expect(e.jumps).to.equal(0);
  });

  it('jump - one odd reply never moves it; three agreeing ones in a row replace it (a clock step, a collector elsewhere)', () => {
    const e = new ClockOffsetEstimator({ confirmSamples: 3 });
    let t = 1_000_000;
    for (let i = 0; i < 10; i++) e.add(...sample((t += 250), 0, 1, 1));
    expect(e.applied()).to.equal(0);
    // One outlier, then normal again: dropped.
    expect(e.add(...sample((t += 250), 5000, 1, 1))).to.equal(undefined);
    expect(e.add(...sample((t += 250), 0, 1, 1))).to.equal(undefined);
    expect(e.applied()).to.equal(0);
    expect(e.rejected).to.equal(1);
    // Two disjoint ones that do not agree with each other: no jump either.
    e.add(...sample((t += 250), 5000, 1, 1));
    e.add(...sample((t += 250), -7000, 1, 1));
    expect(e.jumps).to.equal(0);
    // A real step: the collector's clock is now 3000 ms ahead.
    expect(e.add(...sample((t += 250), 3000, 1, 1))).to.equal(undefined);
    expect(e.add(...sample((t += 250), 3000, 1, 1))).to.equal(undefined);
    expect(e.applied()).to.equal(0);
    const jump = e.add(...sample((t += 250), 3000, 2, 1));
    expect(jump).to.not.equal(undefined);
    expect(Math.round(jump!.from.offset)).to.equal(0);
    expect(Math.abs(jump!.to.offset - 3000)).to.be.at.most(2);
    expect(e.jumps).to.equal(1);
    expect(Math.abs(e.applied() - 3000)).to.be.at.most(2);
    // And back: three more.
    for (let i = 0; i < 3; i++) e.add(...sample((t += 250), 0, 1, 1));
    expect(e.jumps).to.equal(2);
    expect(e.applied()).to.equal(0);
  });

  it('margin - applied only when |offset| is beyond bound + 20 ms; a reply before its request (local clock stepped back) is refused', () => {
    const a = new ClockOffsetEstimator();
    a.add(0, 1 + 15, 2); // offset 15, bound 2
    expect(a.applied()).to.equal(0);
    const b = new ClockOffsetEstimator();
    b.add(0, 1 + 30, 2); // offset 30, bound 2
    expect(b.applied()).to.equal(30);
    const c = new ClockOffsetEstimator();
    expect(c.add(100, 50, 90)).to.equal(undefined);
    expect(c.estimate).to.equal(undefined);
    expect(c.rejected).to.equal(1);
    expect(c.add(0, Number.NaN, 1)).to.equal(undefined);
    expect(c.estimate).to.equal(undefined);
  });

  it('window - the estimate follows slow drift as old samples leave the window (32 samples)', () => {
    const e = new ClockOffsetEstimator();
    let t = 0;
    e.add(...sample((t += 250), 100, 0.5, 0.5)); // the best sample, offset 100
    // 50 ppm drift is 0.0125 ms per 250 ms: after 40 samples the offset is 100.5 and the first sample is gone.
    for (let i = 1; i <= 40; i++) e.add(...sample((t += 250), 100 + i * 0.0125, 2, 2));
    expect(e.jumps).to.equal(0);
    expect(e.estimate!.at).to.be.greaterThan(250);
    expect(Math.abs(e.estimate!.offset - 100.5)).to.be.at.most(e.estimate!.bound);
  });
});
