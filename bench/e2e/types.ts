/** Messages between the runner (run.ts) and its load generators (loadgen.ts), and result shapes. */

/** One find query and its truth. */
export interface Query {
  /** The name as sent (another letter case for online characters). */
  sent: string;
  online: boolean;
  /** As registered at login (what an online find reply gives back). */
  registered?: string;
  channel?: number;
}

export interface Character {
  name: string;
  channel: number;
}

export interface ScenarioSpec {
  name: string;
  conns: number;
  /** Requests each connection keeps in flight. */
  depth: number;
  /** `op`: {"op":"find"}; `chat`: {"op":"chat","text":"/찾기 NAME"}. */
  form: 'op' | 'chat';
  warmupMs: number;
  measureMs: number;
  drainTimeoutMs: number;
}

export type LoadCommand =
  | { type: 'setup'; port: number; characters: Character[]; loadCharacters: Character[]; queries: Query[] }
  | { type: 'run'; spec: ScenarioSpec; pids: number[] }
  | { type: 'close' };

export interface RunResult {
  scenario: string;
  wallMs: number;
  /** Replies received inside the measured window. */
  replies: number;
  reqPerSec: number;
  latencyUs: { p50: number; p95: number; p99: number; max: number; samples: number };
  /** CPU (user+system, every thread) of every server process over the window, µs. */
  cpuUs: number;
  cpuUsPerPid: number[];
  cpuUsPerReq: number;
  /** Server CPU in % of one core. */
  serverCpuPct: number;
  /** The whole machine, % of one core (load generator and other work included). */
  machineBusyPct: number;
  /** The load generator itself, % of one core. machine - server - load generator = other work on the machine. */
  loadgenCpuPct: number;
  rssKb: number[];
  threads: number[];
  sent: number;
  received: number;
  /** Replies that contradict the truth (or are not valid replies). */
  wrong: number;
  /** Correct replies whose keys came in another order than chatD's (not an error). */
  reordered: number;
  /** Error replies by code. */
  errors: Record<string, number>;
  /** Requests without a reply when the drain gave up. */
  missing: number;
  unknownId: number;
  pushes: number;
  drainMs: number;
  wrongSamples: { sent: string; expected: unknown; got: string }[];
}

export type LoadReport =
  | { type: 'setup-done'; ms: number; problems: string[]; problemCount: number }
  | { type: 'result'; result: RunResult }
  | { type: 'closed' }
  | { type: 'error'; message: string };
