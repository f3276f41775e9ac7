/**
 * The figures every process publishes (docs/operations.md, "Metrics and actions"): the
 * `metrics` object of its STATUS reply, and the same figures in `pm2 show` / `pm2 monit`
 * (pm2-metrics.ts). Nothing here does I/O or keeps a timer: the counters are the plain
 * integers the daemons keep anyway, a latency is one array increment, and every derived
 * figure (percentiles, rates) is computed when somebody reads it.
 */

/** The `metrics` object of every STATUS reply (the contract the status page reads). */
export interface ProcessMetrics {
  /** Totals since the process started; never decrease. */
  counters: Record<string, number>;
  /** Current values. */
  gauges: Record<string, number>;
  /** chatD: client request latency over the last LATENCY_WINDOW_MS. */
  latency?: LatencySummary;
  /** chatD only: channel number -> sessions in it. */
  sessionsPerChannel?: Record<string, number>;
  /** Per second over about the last RATE_WINDOW_MS, computed when read: chatD and shards `requests`, `finds`. */
  rates?: Record<string, number>;
}

export interface LatencySummary {
  p50Ms: number;
  p99Ms: number;
  /** Requests measured in the window. */
  count: number;
}

/** The window of the latency percentiles. */
export const LATENCY_WINDOW_MS = 10_000;
/** The window of the rates. */
export const RATE_WINDOW_MS = 10_000;

// ---- log-scale buckets ----

/** Sub-buckets per power of two: a value's bucket is at most 1/8 (12.5 %) wide. */
const SUB_BITS = 3;
const SUB = 1 << SUB_BITS;
/** Values are kept in microseconds, capped here (about 67 s). */
const MAX_US = 2 ** 26 - 1;
/** Buckets 0..SUB-1 hold 0..SUB-1 µs exactly; then SUB per power of two up to MAX_US. */
export const BUCKETS = SUB + (26 - SUB_BITS) * SUB;

/** The bucket of a value in microseconds (integer arithmetic only). */
export function bucketOf(us: number): number {
  let v = us > 0 ? (us < MAX_US ? us | 0 : MAX_US) : 0;
  if (v < SUB) return v;
  const e = 31 - Math.clz32(v); // 2^e <= v < 2^(e+1), e >= SUB_BITS
  v = (v >>> (e - SUB_BITS)) & (SUB - 1);
  return SUB + (e - SUB_BITS) * SUB + v;
}

/** The smallest value (µs) of a bucket. */
export function bucketLow(b: number): number {
  if (b < SUB) return b;
  const e = ((b - SUB) >> SUB_BITS) + SUB_BITS;
  return (SUB + ((b - SUB) & (SUB - 1))) * 2 ** (e - SUB_BITS);
}

/** One past the largest value (µs) of a bucket. */
export function bucketHigh(b: number): number {
  return b + 1 < BUCKETS ? bucketLow(b + 1) : MAX_US + 1;
}

/**
 * Latencies over a sliding window, in fixed log-scale buckets: `slices` histograms of
 * `sliceMs` each in one Uint32Array, the oldest cleared when time moves into it. Recording
 * is an index computation and one increment (no allocation); the percentiles are computed
 * when read, over the slices of the last `slices * sliceMs`: the current slice (partly
 * filled) and the full ones before it.
 *
 * A percentile is the midpoint of the bucket the rank falls in (exact below 8 µs, else
 * within 6.25 % of the true value).
 */
export class LatencyHistogram {
  private readonly counts: Uint32Array;
  /** The slice number (time / sliceMs) each slot holds; -1: empty. */
  private readonly epochs: Float64Array;
  private current = -1;
  private base = 0;

  constructor(
    readonly windowMs = LATENCY_WINDOW_MS,
    readonly sliceMs = 1000,
  ) {
    if (!(sliceMs > 0) || !(windowMs >= sliceMs)) throw new RangeError('LatencyHistogram: need windowMs >= sliceMs > 0');
    const slices = Math.ceil(windowMs / sliceMs);
    this.counts = new Uint32Array(slices * BUCKETS);
    this.epochs = new Float64Array(slices).fill(-1);
  }

  get slices(): number {
    return this.epochs.length;
  }

  /**
   * Records one latency of `ms` milliseconds, observed at `nowMs` (a monotonic clock), that
   * stands for `weight` requests (a sample of one in `weight`: LatencySampler).
   */
  record(ms: number, nowMs: number, weight = 1): void {
    const epoch = Math.floor(nowMs / this.sliceMs);
    if (epoch !== this.current) this.rotate(epoch);
    this.counts[this.base + bucketOf(ms * 1000)]! += weight;
  }

  private rotate(epoch: number): void {
    const n = this.epochs.length;
    const slot = epoch % n;
    this.current = epoch;
    this.base = slot * BUCKETS;
    if (this.epochs[slot] !== epoch) {
      this.counts.fill(0, this.base, this.base + BUCKETS);
      this.epochs[slot] = epoch;
    }
  }

  /**
   * The bucket counts of the window ending at `nowMs`, summed (a new array; for reads).
   * Slices older than the window are left out, even when nothing has overwritten them yet.
   */
  window(nowMs: number): Uint32Array {
    const sum = new Uint32Array(BUCKETS);
    const now = Math.floor(nowMs / this.sliceMs);
    const n = this.epochs.length;
    for (let s = 0; s < n; s++) {
      const e = this.epochs[s]!;
      if (e < 0 || e > now || e <= now - n) continue;
      const base = s * BUCKETS;
      for (let b = 0; b < BUCKETS; b++) sum[b]! += this.counts[base + b]!;
    }
    return sum;
  }

  /** p50, p99 and count over the window ending at `nowMs`; zeros when nothing was recorded. */
  summary(nowMs: number): LatencySummary {
    const w = this.window(nowMs);
    const q = quantiles(w, [0.5, 0.99]);
    return { p50Ms: q.values[0]!, p99Ms: q.values[1]!, count: q.count };
  }
}

/**
 * Quantiles of bucket counts, in milliseconds (rounded to the µs). The q-quantile is the
 * smallest bucket whose cumulative count reaches ceil(q * n), reported as its midpoint.
 */
export function quantiles(counts: ArrayLike<number>, qs: readonly number[]): { count: number; values: number[] } {
  let n = 0;
  for (let b = 0; b < counts.length; b++) n += counts[b]!;
  const values = qs.map(() => 0);
  if (n === 0) return { count: 0, values };
  const ranks = qs.map((q) => Math.max(1, Math.ceil(q * n)));
  let cum = 0;
  let next = 0;
  const order = ranks.map((r, i) => [r, i] as const).sort((a, b) => a[0] - b[0]);
  for (let b = 0; b < counts.length && next < order.length; b++) {
    cum += counts[b]!;
    while (next < order.length && cum >= order[next]![0]) {
      const mid = b < SUB ? b : (bucketLow(b) + bucketHigh(b) - 1) / 2;
      values[order[next]![1]] = Math.round(mid) / 1000;
      next++;
    }
  }
  return { count: n, values };
}

/** Samples a second LatencySampler aims at, at most (each costs two clock reads). */
export const LATENCY_SAMPLES_PER_S = 1024;

/**
 * Which requests have their latency measured, and the histogram they go to. A clock read is
 * not free (about 100 ns where the clock source is slow, as in some VMs: two of them per
 * request would be the dearest thing the metrics add), so above LATENCY_SAMPLES_PER_S
 * requests a second only one in `stride` is timed, `stride` a power of two chosen every
 * 250 ms from the rate since the last choice, and each sample counts `stride` times in the histogram:
 * the percentiles and the count estimate those of every request. Below that rate every
 * request is timed. Per request: one increment, one AND, one compare.
 *
 * The caller keeps `stride` as it was at start() with the start time (a request started
 * under one stride may end under another) and gives both to end().
 */
export class LatencySampler {
  readonly histogram: LatencyHistogram;
  private mask = 0;
  private seq = 0;
  private tunedAt = Number.NaN;
  private seqAtTune = 0;

  constructor(
    histogram = new LatencyHistogram(),
    private readonly samplesPerS = LATENCY_SAMPLES_PER_S,
    private readonly clock: () => number = monotonicMs,
  ) {
    this.histogram = histogram;
  }

  /** One request in `stride` is timed now. */
  get stride(): number {
    return this.mask + 1;
  }

  /** At a request's start: its start time, or -1 when this one is not timed. */
  start(): number {
    return (++this.seq & this.mask) === 0 ? this.clock() : -1;
  }

  /** At its reply: `t0` as start() gave it, `stride` as it was then. */
  end(t0: number, stride: number): void {
    if (t0 < 0) return;
    const now = this.clock();
    if (!(now - this.tunedAt < 250)) this.tune(now);
    this.histogram.record(now - t0, now, stride);
  }

  private tune(now: number): void {
    if (this.tunedAt === this.tunedAt) {
      const perS = ((this.seq - this.seqAtTune) * 1000) / (now - this.tunedAt);
      let stride = 1;
      while (stride < 65_536 && perS / stride > this.samplesPerS) stride *= 2;
      this.mask = stride - 1;
    }
    this.tunedAt = now;
    this.seqAtTune = this.seq;
  }
}

// ---- rates ----

/**
 * The rate of a monotonic counter over a sliding window, computed when read: each read
 * takes a sample (time, value); samples are kept at most every windowMs/10, and the rate is
 * the change since the newest kept sample at least windowMs old (else the oldest kept one),
 * per second. The first read gives 0. Nothing runs between reads.
 */
export class RateMeter {
  private readonly times: Float64Array;
  private readonly values: Float64Array;
  private head = 0;
  private size = 0;

  constructor(
    private readonly read: () => number,
    readonly windowMs = RATE_WINDOW_MS,
    private readonly now: () => number = monotonicMs,
  ) {
    if (!(windowMs > 0)) throw new RangeError('RateMeter: windowMs must be > 0');
    this.times = new Float64Array(12);
    this.values = new Float64Array(12);
  }

  /** Events per second over the last windowMs (about). */
  rate(): number {
    const t = this.now();
    const v = this.read();
    const cap = this.times.length;
    let rate = 0;
    if (this.size > 0) {
      // Newest sample at least windowMs old, else the oldest one.
      let base = (this.head - this.size + cap) % cap;
      for (let i = this.size - 1; i >= 0; i--) {
        const j = (this.head - this.size + i + cap) % cap;
        if (t - this.times[j]! >= this.windowMs) {
          base = j;
          break;
        }
      }
      const dt = t - this.times[base]!;
      if (dt > 0) rate = (Math.max(0, v - this.values[base]!) * 1000) / dt;
    }
    const last = (this.head - 1 + cap) % cap;
    if (this.size === 0 || t - this.times[last]! >= this.windowMs / 10) {
      this.times[this.head] = t;
      this.values[this.head] = v;
      this.head = (this.head + 1) % cap;
      if (this.size < cap) this.size++;
    }
    return rate;
  }
}

/** Milliseconds on a monotonic clock (performance.now(): no allocation). */
export function monotonicMs(): number {
  return performance.now();
}

/** Seconds since the process started, whole. */
export function uptimeS(): number {
  return Math.floor(process.uptime());
}
