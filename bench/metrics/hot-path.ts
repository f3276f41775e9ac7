/**
 * What the metrics add to one client request, measured in isolation (docs/benchmarks.md,
 * "Metrics on the hot path"): chatD times a request (LatencySampler: a clock read at its start
 * and at its reply, for every request below 1,024 a second, one in `stride` above) and counts
 * it; a shard adds one counter increment per FIND. Run: `node dist/bench/metrics/hot-path.js`.
 *
 * Each variant runs N iterations, best of 7 runs, in ns per iteration; the baseline loop does
 * the same bookkeeping without the metrics, so the difference is their cost.
 */
import { LatencyHistogram, LatencySampler, RateMeter, monotonicMs } from '../../src/runtime/metrics';

const N = 2_000_000;
const RUNS = 7;

function best(iterations: number, fn: () => number): number {
  let bestNs = Number.POSITIVE_INFINITY;
  let sink = 0;
  for (let r = 0; r < RUNS; r++) {
    const t0 = process.hrtime.bigint();
    sink += fn();
    const ns = Number(process.hrtime.bigint() - t0) / iterations;
    if (ns < bestNs) bestNs = ns;
  }
  if (sink === Number.MIN_VALUE) console.log(sink); // keep the work
  return bestNs;
}

const counters = { requests: 0, finds: 0 };
const sampler = new LatencySampler();
const every = new LatencySampler(new LatencyHistogram(), Number.POSITIVE_INFINITY); // stride stays 1

const variants: [string, () => number][] = [
  [
    'baseline: one counter increment',
    () => {
      let x = 0;
      for (let i = 0; i < N; i++) {
        counters.requests++;
        x += i & 1;
      }
      return x;
    },
  ],
  [
    '+ one more counter (finds)',
    () => {
      let x = 0;
      for (let i = 0; i < N; i++) {
        counters.requests++;
        counters.finds++;
        x += i & 1;
      }
      return x;
    },
  ],
  [
    '+ latency, every request timed (below 1,024 req/s)',
    () => {
      let x = 0;
      for (let i = 0; i < N; i++) {
        counters.requests++;
        const t0 = every.start();
        const stride = every.stride;
        x += i & 1;
        every.end(t0, stride);
      }
      return x;
    },
  ],
  [
    '+ latency, sampled (this loop: millions of req/s)',
    () => {
      let x = 0;
      for (let i = 0; i < N; i++) {
        counters.requests++;
        const t0 = sampler.start();
        const stride = sampler.stride;
        x += i & 1;
        sampler.end(t0, stride);
      }
      return x;
    },
  ],
  [
    'one clock read alone (performance.now())',
    () => {
      let x = 0;
      for (let i = 0; i < N; i++) x += monotonicMs();
      return x;
    },
  ],
];

console.log(`metrics hot path: ${N.toLocaleString('en')} iterations, best of ${RUNS}, Node ${process.version}`);
const base = best(N, variants[0]![1]);
for (const [name, fn] of variants) {
  const ns = best(N, fn);
  console.log(`  ${name.padEnd(52)} ${ns.toFixed(1).padStart(7)} ns/iter  (${ns - base >= 0 ? '+' : ''}${(ns - base).toFixed(1)} ns)`);
}
console.log(`  (sampled loop ended at stride ${sampler.stride})`);
// Reads: once a second under PM2 and at each STATUS, never on the request path.
const READS = 2000;
const h = sampler.histogram;
console.log(`  read: p50/p99 over the 10 s window ${(best(READS, () => { let x = 0; for (let i = 0; i < READS; i++) x += h.summary(monotonicMs()).count; return x; }) / 1000).toFixed(1).padStart(20)} µs per read`);
const m = new RateMeter(() => counters.requests);
console.log(`  read: rate meter ${(best(READS, () => { let x = 0; for (let i = 0; i < READS; i++) x += m.rate(); return x; })).toFixed(0).padStart(38)} ns per read`);
