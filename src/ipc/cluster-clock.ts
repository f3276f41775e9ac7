/**
 * The clock that envelope deadlines are written and checked in ("cluster time",
 * docs/ipc.md "Deadlines"): this host's wall clock plus `offsetMs`, the offset to the
 * collector's clock that the process measured from its heartbeats (src/runtime/clock-offset.ts)
 * and applies only when it is clearly beyond the measurement's error bound. On one host it is
 * always 0, so deadlines are exactly `Date.now()` as before; the hot path pays one add.
 *
 * One per process (module state): the endpoint reads it on every request and every received
 * envelope. Only the heartbeat sets it. A receiver thread (SysV FIND in the thread, one host
 * only) does not see it and keeps the local clock, which is the same thing there.
 */
export const clusterClock = {
  /** Added to Date.now() for deadlines: an integer number of ms, 0 unless corrected. */
  offsetMs: 0,
};

/** Cluster time in ms: Date.now() plus the applied offset. */
export function clusterNow(): number {
  return Date.now() + clusterClock.offsetMs;
}
