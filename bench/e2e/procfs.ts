/** What bench:e2e reads from /proc about the server processes. */
import { readFileSync } from 'node:fs';

/** USER_HZ is 100 on Linux: one tick of utime/stime is 10 ms. */
export const TICK_US = 10_000;

/**
 * utime + stime (fields 14 and 15 of /proc/<pid>/stat), in ticks: the whole process, every
 * thread (main, libuv pool, V8 helpers, the queue receiver thread), exited threads included.
 */
export function procCpuTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[11]) + Number(rest[12]);
  } catch {
    return NaN;
  }
}

function statusField(pid: number, field: string): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** Resident set size (VmRSS), KiB. */
export function rssKb(pid: number): number {
  return statusField(pid, 'VmRSS');
}

export function threadCount(pid: number): number {
  return statusField(pid, 'Threads');
}
