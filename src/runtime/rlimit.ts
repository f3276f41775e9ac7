import { readdirSync } from 'node:fs';
import koffi from 'koffi';

/**
 * RLIMIT_NOFILE through libc (Node has no process.setrlimit): read it, raise the soft limit
 * to the hard one, and size chatD's connection cap below what is left, so that chatD says
 * UNAVAILABLE to a client it cannot serve instead of running out of descriptors (where
 * libuv accepts and closes connections silently).
 */

/** RLIMIT_NOFILE on Linux (x86-64 and arm64 alike). */
const RLIMIT_NOFILE = 7;
/** struct rlimit { rlim_t rlim_cur; rlim_t rlim_max; }: two 64-bit words. */
const RLIMIT_BYTES = 16;
const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

type RlimitFn = (resource: number, buf: Buffer) => number;
let getrlimit: RlimitFn | undefined;
let setrlimit: RlimitFn | undefined;
function bind(): void {
  if (getrlimit) return;
  const libc = koffi.load('libc.so.6');
  getrlimit = libc.func('int getrlimit(int resource, void *rlim)') as RlimitFn;
  setrlimit = libc.func('int setrlimit(int resource, const void *rlim)') as RlimitFn;
}

export interface NoFileLimit {
  /** The soft limit now in force (after the raise). */
  soft: number;
  hard: number;
  /** The soft limit found at start. */
  softBefore: number;
  /** Why the raise did not happen or failed, if it did not. */
  raiseError?: string;
}

const toNumber = (v: bigint): number => (v === RLIM_INFINITY || v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v));

/** Reads RLIMIT_NOFILE and raises the soft limit to the hard one. Linux only. */
export function raiseNoFileLimit(): NoFileLimit {
  bind();
  const buf = Buffer.alloc(RLIMIT_BYTES);
  if (getrlimit!(RLIMIT_NOFILE, buf) !== 0) throw new Error(`getrlimit(RLIMIT_NOFILE) failed: errno ${koffi.errno()}`);
  const soft = buf.readBigUInt64LE(0);
  const hard = buf.readBigUInt64LE(8);
  let now = soft;
  let raiseError: string | undefined;
  if (soft < hard) {
    const want = Buffer.alloc(RLIMIT_BYTES);
    want.writeBigUInt64LE(hard, 0);
    want.writeBigUInt64LE(hard, 8);
    if (setrlimit!(RLIMIT_NOFILE, want) === 0) now = hard;
    else raiseError = `setrlimit failed: errno ${koffi.errno()}`;
  }
  const out: NoFileLimit = { soft: toNumber(now), hard: toNumber(hard), softBefore: toNumber(soft) };
  if (raiseError) out.raiseError = raiseError;
  return out;
}

/** Descriptors this process has open now (Linux: /proc/self/fd, less the directory's own). */
export function openDescriptors(): number {
  try {
    return Math.max(0, readdirSync('/proc/self/fd').length - 1);
  } catch {
    return 0;
  }
}

/**
 * Descriptors kept back from client connections on top of those open at start: queue
 * threads, log files, PM2's pipes, sockets being refused with UNAVAILABLE, later opens.
 */
export function descriptorHeadroom(soft: number): number {
  return Math.max(64, Math.floor(soft / 20));
}

/** The connection cap that fits: the configured one, or less when descriptors are short. */
export function connectionCap(configured: number, soft: number, openNow: number): number {
  const room = soft - openNow - descriptorHeadroom(soft);
  return Math.max(1, Math.min(configured, room));
}
