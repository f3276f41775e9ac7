import { expect } from 'chai';
import { BUCKETS, LatencyHistogram, LatencySampler, RateMeter, bucketHigh, bucketLow, bucketOf, quantiles } from '../../../src/runtime/metrics';
import { mulberry32 } from '../../helpers/random';

/** The exact q-quantile (nearest rank) of a list of values. */
function exactQuantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(1, Math.ceil(q * sorted.length)) - 1]!;
}

const rng = mulberry32;

describe('runtime - metrics: log-scale buckets', () => {
  it('maps every value into the bucket whose bounds hold it, and buckets are contiguous', () => {
    for (let b = 0; b < BUCKETS - 1; b++) expect(bucketHigh(b), `bucket ${b}`).to.equal(bucketLow(b + 1));
    const probes = [0, 1, 7, 8, 9, 15, 16, 17, 100, 999, 1000, 1001, 65_535, 65_536, 1_000_000, 2 ** 25, 2 ** 26 - 2];
    for (let i = 0; i < 500; i++) probes.push(Math.floor(Math.random() * 2 ** 26));
    for (const us of probes) {
      const b = bucketOf(us);
      expect(b, `${us} µs`).to.be.within(0, BUCKETS - 1);
      expect(bucketLow(b), `${us} µs: low`).to.be.at.most(us);
      expect(bucketHigh(b), `${us} µs: high`).to.be.above(us);
    }
  });

  it('keeps each bucket within 1/8 of its low bound (exact below 8 µs)', () => {
    for (let b = 0; b < 8; b++) expect(bucketHigh(b) - bucketLow(b)).to.equal(1);
    for (let b = 8; b < BUCKETS; b++) expect((bucketHigh(b) - bucketLow(b)) / bucketLow(b), `bucket ${b}`).to.be.at.most(1 / 8);
  });

  it('clamps negative, NaN and huge values to the end buckets', () => {
    expect(bucketOf(-5)).to.equal(0);
    expect(bucketOf(Number.NaN)).to.equal(0);
    expect(bucketOf(1e12)).to.equal(BUCKETS - 1);
    expect(bucketOf(Number.POSITIVE_INFINITY)).to.equal(BUCKETS - 1);
  });
});

describe('runtime - metrics: quantiles of bucket counts', () => {
  it('is zero with no samples', () => {
    expect(quantiles(new Uint32Array(BUCKETS), [0.5, 0.99])).to.deep.equal({ count: 0, values: [0, 0] });
  });

  it('is exact for values below 8 µs', () => {
    const c = new Uint32Array(BUCKETS);
    c[bucketOf(3)] = 50;
    c[bucketOf(5)] = 49;
    c[bucketOf(7)] = 1;
    const q = quantiles(c, [0.5, 0.99, 1]);
    expect(q.count).to.equal(100);
    expect(q.values).to.deep.equal([0.003, 0.005, 0.007]);
  });

  it('is within 6.25 % of the exact nearest-rank quantile for skewed latencies', () => {
    const next = rng(42);
    for (let round = 0; round < 20; round++) {
      const h = new LatencyHistogram(10_000, 1000);
      const values: number[] = [];
      const n = 500 + Math.floor(next() * 5000);
      for (let i = 0; i < n; i++) {
        // Log-normal-ish: mostly 50 µs .. 2 ms, a tail to 200 ms.
        const ms = Math.exp(Math.log(0.05) + next() * Math.log(40) + (next() < 0.02 ? next() * Math.log(100) : 0));
        values.push(ms);
        h.record(ms, 5000);
      }
      const s = h.summary(5000);
      expect(s.count).to.equal(n);
      for (const [q, got] of [[0.5, s.p50Ms], [0.99, s.p99Ms]] as const) {
        const want = exactQuantile(values, q);
        expect(Math.abs(got - want) / want, `round ${round} q${q}: ${got} vs ${want}`).to.be.at.most(0.0625 + 1e-3);
      }
    }
  });
});

describe('runtime - metrics: latency histogram window', () => {
  it('counts only the slices of the window, dropping older ones when read or overwritten', () => {
    const h = new LatencyHistogram(10_000, 1000);
    h.record(1, 0); // slice 0
    h.record(1, 500);
    h.record(10, 5_500); // slice 5
    expect(h.summary(5_999).count).to.equal(3);
    // At 10 s slice 0 is out of the window (slices 1..10): not yet overwritten, but left out.
    expect(h.summary(10_000).count).to.equal(1);
    expect(h.summary(10_000).p50Ms).to.be.closeTo(10, 10 * 0.0625);
    // At 15.5 s slice 5 is out too.
    expect(h.summary(15_500).count).to.equal(0);
    // Time moves on to slot 0 again (slice 10): the slot is cleared before use.
    h.record(2, 10_100);
    expect(h.summary(10_100).count).to.equal(2);
    expect(h.summary(19_999).count).to.equal(1);
  });

  it('rotates through many windows without leaking old counts', () => {
    const h = new LatencyHistogram(3000, 1000);
    for (let t = 0; t < 60_000; t += 10) h.record(1, t); // 100 per second
    expect(h.summary(59_999).count).to.equal(300);
    expect(h.summary(59_999).p99Ms).to.be.closeTo(1, 0.0625);
  });

  it('refuses a window shorter than a slice', () => {
    expect(() => new LatencyHistogram(500, 1000)).to.throw(RangeError);
  });
});

describe('runtime - metrics: rate meter', () => {
  it('is 0 on the first read, then the change per second over the window', () => {
    let t = 0;
    let n = 0;
    const m = new RateMeter(() => n, 10_000, () => t);
    expect(m.rate()).to.equal(0);
    // 200 events per second, read every second.
    for (let s = 1; s <= 30; s++) {
      t = s * 1000;
      n += 200;
      const r = m.rate();
      expect(r, `at ${s} s`).to.be.closeTo(200, 1e-9);
    }
  });

  it('follows a change of pace within one window', () => {
    let t = 0;
    let n = 0;
    const m = new RateMeter(() => n, 10_000, () => t);
    for (let s = 0; s <= 20; s++) {
      t = s * 1000;
      n += 100;
      m.rate();
    }
    for (let s = 21; s <= 31; s++) {
      t = s * 1000;
      n += 1000; // ten times the pace
      m.rate();
    }
    t = 32_000;
    n += 1000;
    expect(m.rate()).to.be.closeTo(1000, 1e-9);
  });

  it('gives the mean rate since the last read when reads are sparse', () => {
    let t = 0;
    let n = 0;
    const m = new RateMeter(() => n, 10_000, () => t);
    m.rate();
    t = 60_000;
    n = 6000;
    expect(m.rate()).to.be.closeTo(100, 1e-9);
  });

  it('keeps its base about one window back however often it is read', () => {
    let t = 0;
    let n = 0;
    const m = new RateMeter(() => n, 10_000, () => t);
    // Read every 10 ms for 30 s at 50 events per second.
    for (let i = 0; i <= 3000; i++) {
      t = i * 10;
      n = Math.floor(t / 20);
      const r = m.rate();
      if (t >= 11_000) expect(r, `at ${t}`).to.be.closeTo(50, 0.2);
    }
  });

  it('never goes negative when the counter source goes back (a restart of its source)', () => {
    let t = 0;
    let n = 100;
    const m = new RateMeter(() => n, 1000, () => t);
    m.rate();
    t = 2000;
    n = 10;
    expect(m.rate()).to.equal(0);
  });
});

describe('runtime - metrics: latency sampler', () => {
  /** Drives `perS` requests a second for `seconds`, each taking `ms(i)`, on a fake clock. */
  function drive(sampler: LatencySampler, clock: { t: number }, perS: number, seconds: number, ms: (i: number) => number): { timed: number; total: number } {
    let timed = 0;
    const total = perS * seconds;
    const start = clock.t;
    for (let i = 0; i < total; i++) {
      clock.t = start + (i * 1000) / perS;
      const t0 = sampler.start();
      const stride = sampler.stride;
      if (t0 >= 0) timed++;
      clock.t += ms(i);
      sampler.end(t0, stride);
      clock.t -= ms(i);
    }
    clock.t = start + seconds * 1000;
    return { timed, total };
  }

  it('times every request below 1,024 a second', () => {
    const clock = { t: 0 };
    const s = new LatencySampler(new LatencyHistogram(), 1024, () => clock.t);
    const r = drive(s, clock, 500, 5, () => 2);
    expect(r.timed).to.equal(r.total);
    expect(s.stride).to.equal(1);
    const sum = s.histogram.summary(clock.t + 1);
    expect(sum.count).to.equal(2500);
    expect(sum.p50Ms).to.be.closeTo(2, 2 * 0.0625);
  });

  it('times about 1,024 a second at high rates, each counting for its stride: count and percentiles still estimate every request', () => {
    const clock = { t: 0 };
    const s = new LatencySampler(new LatencyHistogram(), 1024, () => clock.t);
    // 50,000 req/s for 10 s; one request in 200 (at random) takes 20 ms, the rest 0.5 ms.
    const next = rng(7);
    const slow = new Set<number>();
    for (let i = 0; i < 500_000; i++) if (next() < 0.005) slow.add(i);
    const r = drive(s, clock, 50_000, 10, (i) => (slow.has(i) ? 20 : 0.5));
    expect(s.stride).to.equal(64); // 50,000 / 64 = 781 samples a second
    // Every request of the first 250 ms, then one in 64.
    expect(r.timed).to.be.below(50_000 / 4 + 10 * 1024);
    const sum = s.histogram.summary(clock.t + 1);
    expect(sum.count).to.be.within(0.9 * 500_000, 1.1 * 500_000);
    expect(sum.p50Ms).to.be.closeTo(0.5, 0.5 * 0.0625);
    expect(sum.p99Ms).to.be.closeTo(0.5, 0.5 * 0.0625);
    // p99.9 is in the slow tail: the sample sees it as the population does.
    const q = quantiles(s.histogram.window(clock.t + 1), [0.999]);
    expect(q.values[0]).to.be.closeTo(20, 20 * 0.0625);
  });

  it('comes back to timing every request when the rate falls', () => {
    const clock = { t: 0 };
    const s = new LatencySampler(new LatencyHistogram(), 1024, () => clock.t);
    drive(s, clock, 40_000, 3, () => 1);
    expect(s.stride).to.be.above(1);
    drive(s, clock, 100, 3, () => 1);
    expect(s.stride).to.equal(1);
  });
});
