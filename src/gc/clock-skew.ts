import type { ClockReport } from '../cluster/messages';

/**
 * What the collector knows of a process's clock (docs/multi-host.md "Clock skew"): the offset
 * to the collector's clock it measured and reported in its last heartbeat, and whether the
 * collector counts it as skewed. Pure: the collector logs the transitions it returns.
 */
export interface ClockState {
  /** Collector minus process (ms): positive when the process's clock is behind. */
  offset: number;
  bound: number;
  /** The process corrects its deadlines by it. */
  applied: boolean;
  /** |offset| - bound went above the threshold, and |offset| has not come back to it since. */
  skewed: boolean;
}

/**
 * A heartbeat's clock report against the state before. Skewed when the offset is certainly
 * beyond the threshold (|offset| - bound > thresholdMs); no longer once |offset| <= thresholdMs
 * (in between it keeps its state: a hovering offset is not logged at every heartbeat).
 * `change` says when a line is due: once on entering, once on leaving.
 */
export function nextClockState(
  before: ClockState | undefined,
  report: ClockReport,
  thresholdMs: number,
): { state: ClockState | undefined; change?: 'skewed' | 'back' } {
  if (report.offset === undefined || report.bound === undefined) return { state: before };
  const abs = Math.abs(report.offset);
  const wasSkewed = before?.skewed ?? false;
  const skewed = wasSkewed ? abs > thresholdMs : abs - report.bound > thresholdMs;
  const state: ClockState = { offset: report.offset, bound: report.bound, applied: report.applied ?? false, skewed };
  if (skewed && !wasSkewed) return { state, change: 'skewed' };
  if (!skewed && wasSkewed) return { state, change: 'back' };
  return { state };
}
