/**
 * Shared memory between two Node processes, for the `shm` reply path (docs/reply-path.md).
 *
 * Node cannot share a SharedArrayBuffer across processes, so the mapping is made with koffi:
 * a file in /dev/shm (tmpfs, what shm_open uses), mmap(MAP_SHARED), and koffi.view() for an
 * ArrayBuffer over the mapping (no copy). The ArrayBuffer is not a SharedArrayBuffer, so
 * `Atomics.wait` refuses it (TypeError); `Atomics.load/store` are allowed on any integer
 * typed array and give the ordering the ring needs. Waiting is done with futex(2) through
 * koffi's syscall() binding, on a worker thread (shm-waiter.ts).
 *
 * The ring: one producer (the shard), one consumer (the front).
 *
 *   0    u32 SEQ   futex word: the producer adds 1 after every publish and then FUTEX_WAKEs
 *   64   u32 HEAD  bytes published (mod 2^32), written by the producer
 *   128  u32 TAIL  bytes consumed (mod 2^32), written by the consumer
 *   256  data, DATA_BYTES (a power of two): records `u32 length, body`, padded to 4 bytes;
 *        a length of 0xFFFFFFFF is a wrap mark (the rest of the data area is skipped).
 *
 * SEQ is in a MAP_SHARED file mapping, so the futex is a shared one (no FUTEX_PRIVATE_FLAG):
 * the kernel keys it by the page, and both processes wait/wake on the same word.
 */
import { closeSync, ftruncateSync, openSync } from 'node:fs';
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');
const mmap = libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, intptr_t offset)') as (
  addr: null,
  len: number,
  prot: number,
  flags: number,
  fd: number,
  off: number,
) => unknown;
// glibc's syscall() is variadic; its integer/pointer arguments go in the same registers as a
// fixed prototype's on x86-64 and arm64, and a fixed prototype avoids koffi's per-call
// parsing of variadic types.
const syscall6 = libc.func('long syscall(long nr, intptr_t uaddr, int op, int val, void *timeout, intptr_t uaddr2, int val3)') as (
  nr: number,
  uaddr: number,
  op: number,
  val: number,
  timeout: Buffer | null,
  uaddr2: number,
  val3: number,
) => number;

const SYS_FUTEX = process.arch === 'x64' ? 202 : process.arch === 'arm64' ? 98 : -1;
const FUTEX_WAIT = 0;
const FUTEX_WAKE = 1;
const PROT_RW = 3;
const MAP_SHARED = 1;

export const HDR_BYTES = 256;
export const DATA_BYTES = 1 << 20;
export const MAP_BYTES = HDR_BYTES + DATA_BYTES;
const SEQ = 0; // u32 index
const HEAD = 16;
const TAIL = 32;
const WRAP_MARK = 0xffff_ffff;

export interface Mapping {
  /** Address of the mapping (the SEQ word). */
  addr: number;
  u32: Uint32Array;
  bytes: Buffer;
}

/** Maps `path` (created and sized if `create`); the mapping lives until the process ends. */
export function mapShm(path: string, create: boolean): Mapping {
  if (SYS_FUTEX < 0) throw new Error(`futex syscall number unknown on ${process.arch}`);
  const fd = openSync(path, create ? 'w+' : 'r+', 0o600);
  try {
    if (create) ftruncateSync(fd, MAP_BYTES);
    const ptr = mmap(null, MAP_BYTES, PROT_RW, MAP_SHARED, fd, 0);
    const addr = Number(koffi.address(ptr));
    if (addr === -1 || addr === 0 || addr === 2 ** 64 - 1) throw new Error(`mmap ${path} failed (errno ${koffi.errno()})`);
    const ab = koffi.view(ptr, MAP_BYTES);
    return { addr, u32: new Uint32Array(ab, 0, HDR_BYTES / 4), bytes: Buffer.from(ab) };
  } finally {
    closeSync(fd);
  }
}

/** FUTEX_WAIT on SEQ while it equals `seen`, at most `timeout` (a struct timespec). */
export function futexWait(m: Mapping, seen: number, timeout: Buffer | null): number {
  return syscall6(SYS_FUTEX, m.addr + SEQ * 4, FUTEX_WAIT, seen | 0, timeout, 0, 0);
}
export function futexWake(m: Mapping): number {
  return syscall6(SYS_FUTEX, m.addr + SEQ * 4, FUTEX_WAKE, 0x7fff_ffff, null, 0, 0);
}
export function timespec(ms: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigInt64LE(BigInt(Math.floor(ms / 1000)), 0);
  b.writeBigInt64LE(BigInt((ms % 1000) * 1_000_000), 8);
  return b;
}

export const seqOf = (m: Mapping): number => Atomics.load(m.u32, SEQ);
/** Bytes published and not yet consumed. */
export const unread = (m: Mapping): number => (Atomics.load(m.u32, HEAD) - Atomics.load(m.u32, TAIL)) >>> 0;

const pad4 = (n: number): number => (n + 3) & ~3;

/**
 * The producer end. `write` appends a record (not yet visible); `publish` makes everything
 * written visible with one HEAD store, bumps SEQ and wakes the consumer (one futex syscall,
 * whether or not anyone waits: that keeps the protocol free of lost wake-ups without a
 * "sleeping" flag, at the cost of one syscall per publish).
 */
export class RingProducer {
  private head: number;
  private readonly backlog: Buffer[] = [];
  private retry: NodeJS.Timeout | undefined;
  wakes = 0;
  full = 0;
  constructor(
    private readonly m: Mapping,
    private readonly wake: boolean,
  ) {
    this.head = Atomics.load(m.u32, HEAD);
  }

  /** Appends a copy of `body`; false when the ring has no room (the caller keeps it). */
  private tryWrite(body: Uint8Array): boolean {
    const need = 4 + pad4(body.byteLength);
    const tail = Atomics.load(this.m.u32, TAIL);
    const used = (this.head - tail) >>> 0;
    const off = this.head & (DATA_BYTES - 1);
    const toEnd = DATA_BYTES - off;
    const skip = need > toEnd ? toEnd : 0;
    if (used + skip + need > DATA_BYTES) return false;
    if (skip) {
      this.m.bytes.writeUInt32LE(WRAP_MARK, HDR_BYTES + off);
      this.head = (this.head + skip) >>> 0;
    }
    const at = HDR_BYTES + (this.head & (DATA_BYTES - 1));
    this.m.bytes.writeUInt32LE(body.byteLength, at);
    this.m.bytes.set(body, at + 4);
    this.head = (this.head + need) >>> 0;
    return true;
  }

  write(body: Uint8Array): void {
    if (this.backlog.length > 0 || !this.tryWrite(body)) {
      this.full++;
      this.backlog.push(Buffer.from(body));
      this.retry ??= setTimeout(() => this.drainBacklog(), 1);
    }
  }

  private drainBacklog(): void {
    this.retry = undefined;
    while (this.backlog.length > 0 && this.tryWrite(this.backlog[0]!)) this.backlog.shift();
    this.publish();
    if (this.backlog.length > 0) this.retry = setTimeout(() => this.drainBacklog(), 1);
  }

  publish(): void {
    if (Atomics.load(this.m.u32, HEAD) === this.head) return;
    Atomics.store(this.m.u32, HEAD, this.head);
    Atomics.add(this.m.u32, SEQ, 1);
    if (this.wake) {
      futexWake(this.m);
      this.wakes++;
    }
  }
}

/** The consumer end: takes every published record, each copied into a Buffer of its own. */
export class RingConsumer {
  constructor(private readonly m: Mapping) {}

  drain(): Buffer[] {
    const out: Buffer[] = [];
    const head = Atomics.load(this.m.u32, HEAD);
    let tail = Atomics.load(this.m.u32, TAIL);
    if (head === tail) return out;
    // One copy for everything published (the bodies outlive the ring space: Endpoint keeps
    // reply payloads as views), then views into that copy.
    const spans: [number, number][] = [];
    let total = 0;
    while (tail !== head) {
      const at = HDR_BYTES + (tail & (DATA_BYTES - 1));
      const len = this.m.bytes.readUInt32LE(at);
      if (len === WRAP_MARK) {
        tail = (tail + (DATA_BYTES - (tail & (DATA_BYTES - 1)))) >>> 0;
        continue;
      }
      spans.push([at + 4, len]);
      total += len;
      tail = (tail + 4 + pad4(len)) >>> 0;
    }
    const copy = Buffer.allocUnsafe(total);
    let o = 0;
    for (const [at, len] of spans) {
      this.m.bytes.copy(copy, o, at, at + len);
      out.push(copy.subarray(o, o + len));
      o += len;
    }
    Atomics.store(this.m.u32, TAIL, tail);
    return out;
  }
}
