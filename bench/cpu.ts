import { readFileSync, readdirSync } from 'node:fs';
import { performance, type EventLoopUtilization } from 'node:perf_hooks';

/** Clock ticks of /proc/<pid>/task/<tid>/stat (USER_HZ, 100 on Linux). */
const TICK_MS = 10;

function threadTicks(tid: number): { user: number; sys: number } {
  try {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(rest[11]), sys: Number(rest[12]) };
  } catch {
    return { user: NaN, sys: NaN };
  }
}

/** Busy and total jiffies of the whole machine (first line of /proc/stat). */
export function machineTicks(): { busy: number; total: number } {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal ...
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: total - f[3]! - f[4]!, total };
  } catch {
    return { busy: NaN, total: NaN };
  }
}

/** CPU used by the whole machine between two machineTicks(), in % of one core (200 = 2 cores busy). */
export function machineBusyPct(a: { busy: number; total: number }, b: { busy: number; total: number }, wallMs: number): number {
  return Math.round(((b.busy - a.busy) * TICK_MS * 1000) / wallMs) / 10;
}

function allThreadTicks(): Map<number, number> {
  const m = new Map<number, number>();
  try {
    for (const t of readdirSync('/proc/self/task')) {
      const v = threadTicks(Number(t));
      m.set(Number(t), v.user + v.sys);
    }
  } catch {
    /* no /proc */
  }
  return m;
}

export interface CpuMark {
  threads: Map<number, number>;
  wall: number;
  machine: { busy: number; total: number };
  proc: NodeJS.CpuUsage;
  main: { user: number; sys: number };
  elu: EventLoopUtilization;
}

export interface CpuReport {
  /** CPU of the whole process (all threads) as % of one core: user + sys. */
  processPct: number;
  processSysPct: number;
  /** The main (event-loop) thread alone, % of one core. */
  mainPct: number;
  mainSysPct: number;
  /** Everything else: the receiver thread(s), GC helpers. */
  otherThreadsPct: number;
  /** Event-loop utilisation of the main thread (0..1): 1 means never idle. */
  elu: number;
  /** The whole machine, every process, % of one core: compare with processPct to see other load. */
  machinePct: number;
  /** The busiest threads other than the main one, % of one core each (receiver, GC helpers...). */
  topOtherThreadsPct: number[];
}

export function cpuMark(): CpuMark {
  return { threads: allThreadTicks(), wall: performance.now(), machine: machineTicks(), proc: process.cpuUsage(), main: threadTicks(process.pid), elu: performance.eventLoopUtilization() };
}

export function cpuSince(m: CpuMark): CpuReport {
  const wall = performance.now() - m.wall;
  const proc = process.cpuUsage(m.proc);
  const main = threadTicks(process.pid);
  const pct = (us: number): number => Math.round((us / 1000 / wall) * 1000) / 10;
  const mainUserMs = (main.user - m.main.user) * TICK_MS;
  const mainSysMs = (main.sys - m.main.sys) * TICK_MS;
  const processPct = pct(proc.user + proc.system);
  const mainPct = pct((mainUserMs + mainSysMs) * 1000);
  return {
    processPct,
    processSysPct: pct(proc.system),
    mainPct,
    mainSysPct: pct(mainSysMs * 1000),
    otherThreadsPct: Math.round((processPct - mainPct) * 10) / 10,
    elu: Math.round(performance.eventLoopUtilization(m.elu).utilization * 1000) / 1000,
    machinePct: machineBusyPct(m.machine, machineTicks(), wall),
    topOtherThreadsPct: [...allThreadTicks()]
      .filter(([tid]) => tid !== process.pid)
      .map(([tid, ticks]) => Math.round((((ticks - (m.threads.get(tid) ?? ticks)) * TICK_MS) / wall) * 1000) / 10)
      .sort((a, b) => b - a)
      .slice(0, 3),
  };
}
