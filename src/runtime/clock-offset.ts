/**
 * This process's clock offset to the collector's clock, measured from the heartbeat round
 * trip (docs/multi-host.md "Clock skew"). A heartbeat sent at local t0 is answered with the
 * collector's `Date.now()` g, read at local t1. The collector read g somewhere between t0 and
 * t1 (local), so
 *
 *   offset = g - (t0 + t1) / 2,   bound = (t1 - t0) / 2 + 1
 *
 * (the + 1: both clocks tick in whole ms). The true offset lies within offset ± bound, up to
 * the asymmetry of the two legs, which the bound already covers. On one host both clocks are
 * the same clock and t0 <= g <= t1, so |offset| <= bound always: the correction below never
 * applies there.
 *
 * The estimate is the sample with the smallest round trip among the last `windowSize`
 * (a queued or delayed heartbeat has a wide bound and loses to a quick one). Jumps (the
 * collector restarted on a host with another clock, or a clock stepped here or there) are
 * told from drift: a sample whose interval is disjoint from the estimate's (beyond
 * `slackMs`) is held apart; `confirmSamples` such samples in a row that agree with each
 * other replace the window (one `jump`); fewer, followed by a consistent one, are dropped as
 * outliers. So one odd reply never moves the clock, and a real step is followed within
 * `confirmSamples` heartbeats.
 *
 * Applied (`applied()`): the rounded offset when |offset| exceeds bound + `marginMs`, else 0.
 */

export interface ClockSample {
  /** Collector time minus local time at the midpoint of the round trip (ms). */
  readonly offset: number;
  /** Half the round trip, plus 1 ms for the clocks' resolution (ms). */
  readonly bound: number;
  /** Local Date.now() when the reply came. */
  readonly at: number;
}

export interface ClockOffsetOptions {
  /** Samples kept; the estimate is the one with the smallest bound among them. Default 32 (8 s at HEARTBEAT_MS 250). */
  windowSize?: number;
  /** Samples disjoint from the estimate, in a row and agreeing, that make a jump. Default 3. */
  confirmSamples?: number;
  /** Tolerance when comparing two intervals (drift between samples, ms). Default 5. */
  slackMs?: number;
  /** Correct only when |offset| > bound + this (ms). Default 20. */
  marginMs?: number;
}

/** What a jump replaced: the estimate before, and the one after. */
export interface ClockJump {
  readonly from: ClockSample;
  readonly to: ClockSample;
}

export class ClockOffsetEstimator {
  private window: ClockSample[] = [];
  /** Samples disjoint from the current estimate, waiting for confirmation. */
  private pending: ClockSample[] = [];
  private best: ClockSample | undefined;
  /** Jumps taken (a whole new window). */
  jumps = 0;
  /** Samples refused: a reply before its request (the local clock went back), or held apart and then dropped as outliers. */
  rejected = 0;
  private readonly windowSize: number;
  private readonly confirm: number;
  private readonly slack: number;
  private readonly margin: number;

  constructor(options: ClockOffsetOptions = {}) {
    this.windowSize = options.windowSize ?? 32;
    this.confirm = options.confirmSamples ?? 3;
    this.slack = options.slackMs ?? 5;
    this.margin = options.marginMs ?? 20;
  }

  /**
   * One heartbeat round trip: local send time t0, collector time g, local receive time t1.
   * Returns the jump it completed, if any.
   */
  add(t0: number, g: number, t1: number): ClockJump | undefined {
    if (!(t1 >= t0) || !Number.isFinite(g)) {
      this.rejected++;
      return undefined;
    }
    const s: ClockSample = { offset: g - (t0 + t1) / 2, bound: (t1 - t0) / 2 + 1, at: t1 };
    const best = this.best;
    if (best === undefined || agree(s, best, this.slack)) {
      this.rejected += this.pending.length;
      this.pending = [];
      this.push(s);
      return undefined;
    }
    // Disjoint from the estimate: a jump in the making, or an outlier.
    if (this.pending.length > 0 && !this.pending.every((p) => agree(p, s, this.slack))) {
      this.rejected += this.pending.length;
      this.pending = [];
    }
    this.pending.push(s);
    if (this.pending.length < this.confirm) return undefined;
    const from = best;
    this.window = [];
    this.best = undefined;
    for (const p of this.pending) this.push(p);
    this.pending = [];
    this.jumps++;
    return { from, to: this.best! };
  }

  private push(s: ClockSample): void {
    this.window.push(s);
    if (this.window.length > this.windowSize) this.window.shift();
    let best = this.window[0]!;
    for (const w of this.window) if (w.bound < best.bound) best = w;
    this.best = best;
  }

  /** The current estimate (undefined before the first sample). */
  get estimate(): ClockSample | undefined {
    return this.best;
  }

  /** The offset to apply to deadlines: the rounded estimate when clearly beyond its bound, else 0. */
  applied(): number {
    const b = this.best;
    if (!b || Math.abs(b.offset) <= b.bound + this.margin) return 0;
    return Math.round(b.offset);
  }
}

/** Two samples' intervals overlap (within `slack`): they can be the same offset. */
function agree(a: ClockSample, b: ClockSample, slack: number): boolean {
  return Math.abs(a.offset - b.offset) <= a.bound + b.bound + slack;
}
