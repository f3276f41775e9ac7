/**
 * Shared bits of the benchmark: mtypes, the messages between the runner and its child
 * processes, and small statistics helpers.
 */

/** Requests go to this mtype (a channelD-like server), replies to the other (a chatD-like client). */
export const MTYPE_REQ = 100;
export const MTYPE_REP = 1000;
/** Messages of the hand-over scenario. */
export const MTYPE_FLOOD = 3000;
/** Small requests: 16 bytes of payload, as in the C baseline. */
export const PAYLOAD_BYTES = 16;

/** The receiver hand-over a Node peer's SysvTransport uses (SysvReceiverOptions.handover). */
export type Handover = 'post' | 'ring';

/** What the runner asks a child process (bench/peer.ts) to do. Sent with child.send(). */
export type PeerTask = {
  queueId: number;
  warmupMs: number;
  measureMs: number;
} & (
  | { role: 'raw-responder'; handover: Handover }
  | { role: 'raw-pingpong'; handover: Handover }
  | { role: 'raw-pipeline'; handover: Handover; window: number }
  | { role: 'ep-responder'; handover: Handover }
  | { role: 'ep-requester'; handover: Handover; window: number }
  | { role: 'flood-consumer'; handover: Handover }
  | { role: 'callcost'; calls: number }
);

/** Runner -> child. */
export type RunnerCommand = { type: 'task'; task: PeerTask } | { type: 'go' };

/** What a child reports back. */
export type PeerReport =
  | { type: 'ready' }
  | { type: 'result'; result: Record<string, unknown> }
  | { type: 'error'; message: string };

export interface Summary {
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Percentiles of the first `n` samples (sorted in place). */
export function summarize(samples: Float64Array, n: number): Summary {
  if (n === 0) return { count: 0, mean: NaN, p50: NaN, p90: NaN, p99: NaN, max: NaN };
  const s = samples.subarray(0, n).sort();
  let sum = 0;
  for (let i = 0; i < n; i++) sum += s[i]!;
  const at = (q: number): number => s[Math.min(n - 1, Math.floor(n * q))]!;
  return { count: n, mean: sum / n, p50: at(0.5), p90: at(0.9), p99: at(0.99), max: s[n - 1]! };
}

/** A fixed-capacity sample store: keeps the first `capacity` samples. */
export class Samples {
  readonly data: Float64Array;
  n = 0;
  constructor(capacity: number) {
    this.data = new Float64Array(capacity);
  }
  add(v: number): void {
    if (this.n < this.data.length) this.data[this.n++] = v;
  }
  reset(): void {
    this.n = 0;
  }
  summary(): Summary {
    return summarize(this.data, this.n);
  }
}

export const round = (v: number, digits = 1): number => {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
};

/** Monotonic time in µs, the same clock in every thread and process (CLOCK_MONOTONIC). */
export const monoUs = (): number => Number(process.hrtime.bigint()) / 1000;
