import { readFileSync } from 'node:fs';
import { IpcError } from '../ipc-error';
import type { QueueStat } from '../transport';
import * as c from './libc';
import { checkQueueTrust, trustedUids, type QueuePerms } from './queue-trust';

export interface OpenQueueOptions {
  /** SysV key; 0 (IPC_PRIVATE) makes a new private queue. */
  key: number;
  /** Permission bits. Never world-writable. Default 0o600. */
  mode?: number;
  /** Create when missing (default true). */
  create?: boolean;
  /** Fail when it exists already (with create). */
  exclusive?: boolean;
  /**
   * Opening by key checks the queue's owner, creator and mode (queue-trust.ts) and throws
   * QueueTrustError when the cluster must not use it. The uids trusted besides root and our
   * euid (MQ_TRUSTED_UIDS), or 'any' to skip the check: only for tools that look at or remove
   * a queue without using it (test clean-up). Private queues (key 0) are not checked.
   */
  trustedUids?: readonly number[] | 'any';
}

/** Reads a kernel limit from /proc/sys/kernel, or the given fallback when it cannot. */
export function readKernelLimit(name: 'msgmax' | 'msgmnb' | 'msgmni', fallback: number): number {
  try {
    const v = Number.parseInt(readFileSync(`/proc/sys/kernel/${name}`, 'utf8').trim(), 10);
    return Number.isSafeInteger(v) && v > 0 ? v : fallback;
  } catch {
    return fallback;
  }
}

export function sysvError(syscall: string, errno: number, detail = ''): IpcError {
  const code = c.errnoName(errno);
  return new IpcError(code, `${syscall} failed: ${code}${detail ? ` (${detail})` : ''}`, syscall);
}

/**
 * One System V message queue, by id. Every method is non-blocking and safe on the main
 * thread; the blocking receive lives in receiver-thread.ts.
 */
export class SysvQueue {
  /** Largest mtext the kernel accepts in one message (msgmax, read at open). */
  readonly maxMessageBytes: number;
  private readonly sendBuf: Buffer;
  private readonly recvBuf: Buffer;

  private constructor(
    readonly id: number,
    readonly key: number,
  ) {
    this.maxMessageBytes = readKernelLimit('msgmax', 8192);
    this.sendBuf = Buffer.alloc(c.MTYPE_BYTES + this.maxMessageBytes);
    this.recvBuf = Buffer.alloc(c.MTYPE_BYTES + this.maxMessageBytes);
  }

  static open(options: OpenQueueOptions): SysvQueue {
    const mode = options.mode ?? 0o600;
    if ((mode & 0o777) !== mode) throw new IpcError('EINVAL', `queue mode ${mode.toString(8)} is not a permission mask`);
    if (mode & 0o002) throw new IpcError('EINVAL', `queue mode ${mode.toString(8)} would be world-writable`);
    let flags = mode;
    if (options.create ?? true) flags |= c.IPC_CREAT;
    if (options.exclusive) flags |= c.IPC_EXCL;
    const id = c.msgget(options.key, flags);
    if (id < 0) throw sysvError('msgget', c.errno(), `key ${options.key}`);
    const queue = new SysvQueue(id, options.key);
    if (options.key !== c.IPC_PRIVATE && options.trustedUids !== 'any') {
      checkQueueTrust(options.key, id, queue.perms(), trustedUids(options.trustedUids ?? []));
    }
    return queue;
  }

  /** A new private queue (IPC_PRIVATE): for tests and benchmarks. */
  static createPrivate(mode = 0o600): SysvQueue {
    return SysvQueue.open({ key: c.IPC_PRIVATE, mode, create: true });
  }

  /** Wraps a known id (a receiver thread, or a tool given `-q ID`). */
  static fromId(id: number, key = -1): SysvQueue {
    return new SysvQueue(id, key);
  }

  /**
   * One non-blocking send. true: sent; false: the queue is full (EAGAIN).
   * @throws IpcError with the errno name otherwise (EIDRM, EINVAL, E2BIG, EACCES, ...).
   */
  trySend(mtype: number, body: Uint8Array): boolean {
    if (body.byteLength > this.maxMessageBytes) {
      throw new IpcError('E2BIG', `message of ${body.byteLength} bytes exceeds msgmax ${this.maxMessageBytes}`, 'msgsnd');
    }
    if (!(mtype >= 1 && Number.isSafeInteger(mtype))) throw new IpcError('EINVAL', `mtype ${mtype} must be a positive integer`, 'msgsnd');
    const buf = this.sendBuf;
    // Two 32-bit halves: avoids a BigInt per send on the hot path.
    buf.writeUInt32LE(mtype % 0x1_0000_0000, 0);
    buf.writeUInt32LE(Math.floor(mtype / 0x1_0000_0000), 4);
    buf.set(body, c.MTYPE_BYTES);
    for (;;) {
      if (c.msgsnd(this.id, buf, body.byteLength, c.IPC_NOWAIT) === 0) return true;
      const e = c.errno();
      if (e === c.EAGAIN) return false;
      if (e === c.EINTR) continue;
      throw sysvError('msgsnd', e);
    }
  }

  /**
   * One non-blocking receive (msgtyp as msgrcv takes it: 0 any, >0 that type, <0 lowest up to).
   * Returns null when nothing matches. MSG_NOERROR truncates oversize messages, so that a
   * foreign oversize message cannot wedge a drain.
   */
  tryReceive(msgtyp: number): { mtype: number; body: Buffer } | null {
    return this.receiveNow(msgtyp, c.IPC_NOWAIT | c.MSG_NOERROR, 'msgrcv');
  }

  /** One non-blocking msgrcv (retried on EINTR); null when nothing matches (ENOMSG). */
  private receiveNow(msgtyp: number, flags: number, what: string): { mtype: number; body: Buffer } | null {
    for (;;) {
      const n = c.msgrcv(this.id, this.recvBuf, this.maxMessageBytes, msgtyp, flags);
      if (n >= 0) {
        const mtype = Number(this.recvBuf.readBigInt64LE(0));
        return { mtype, body: Buffer.from(this.recvBuf.subarray(c.MTYPE_BYTES, c.MTYPE_BYTES + n)) };
      }
      const e = c.errno();
      if (e === c.ENOMSG) return null;
      if (e === c.EINTR) continue;
      throw sysvError(what, e);
    }
  }

  /** Owner, creator and mode (msg_perm), by IPC_STAT. */
  perms(): QueuePerms {
    const ds = Buffer.alloc(c.MsqidDs.size);
    if (c.msgctl(this.id, c.IPC_STAT, ds) !== 0) throw sysvError('msgctl(IPC_STAT)', c.errno(), `queue id ${this.id}`);
    return {
      uid: ds.readUInt32LE(c.MsqidDs.uid),
      gid: ds.readUInt32LE(c.MsqidDs.gid),
      cuid: ds.readUInt32LE(c.MsqidDs.cuid),
      cgid: ds.readUInt32LE(c.MsqidDs.cgid),
      mode: ds.readUInt32LE(c.MsqidDs.mode) & 0o777,
    };
  }

  /**
   * The message at position `index` (0: the oldest) WITHOUT taking it: msgrcv with MSG_COPY
   * (Linux 3.8+, CONFIG_CHECKPOINT_RESTORE). Returns null past the end of the queue.
   * @throws IpcError ENOSYS when the kernel cannot copy messages.
   * Each call walks the queue up to `index` under the queue's lock: keep `index` small.
   */
  peek(index: number): { mtype: number; body: Buffer } | null {
    if (!(Number.isSafeInteger(index) && index >= 0)) throw new IpcError('EINVAL', `peek position ${index} must be a non-negative integer`, 'msgrcv');
    // The whole msgmax: MSG_COPY fails (EINVAL) rather than truncate a larger message.
    return this.receiveNow(index, c.IPC_NOWAIT | c.MSG_COPY | c.MSG_NOERROR, 'msgrcv(MSG_COPY)');
  }

  stat(): QueueStat & { lastChange: number } {
    const ds = Buffer.alloc(c.MsqidDs.size);
    if (c.msgctl(this.id, c.IPC_STAT, ds) !== 0) throw sysvError('msgctl(IPC_STAT)', c.errno());
    return {
      messages: Number(ds.readBigUInt64LE(c.MsqidDs.qnum)),
      bytes: Number(ds.readBigUInt64LE(c.MsqidDs.cbytes)),
      capacity: Number(ds.readBigUInt64LE(c.MsqidDs.qbytes)),
      mode: ds.readUInt32LE(c.MsqidDs.mode) & 0o777,
      lastSendPid: ds.readInt32LE(c.MsqidDs.lspid),
      lastReceivePid: ds.readInt32LE(c.MsqidDs.lrpid),
      lastChange: Number(ds.readBigInt64LE(c.MsqidDs.ctime)),
    };
  }

  /**
   * Asks for a larger msg_qbytes. Raising it above msgmnb needs CAP_SYS_RESOURCE; without it
   * the kernel says EPERM and the queue keeps what it had. Returns the capacity in force.
   */
  setCapacity(bytes: number): { capacity: number; raised: boolean; code?: string } {
    const ds = Buffer.alloc(c.MsqidDs.size);
    if (c.msgctl(this.id, c.IPC_STAT, ds) !== 0) throw sysvError('msgctl(IPC_STAT)', c.errno());
    const before = Number(ds.readBigUInt64LE(c.MsqidDs.qbytes));
    if (before >= bytes) return { capacity: before, raised: false };
    ds.writeBigUInt64LE(BigInt(bytes), c.MsqidDs.qbytes);
    if (c.msgctl(this.id, c.IPC_SET, ds) !== 0) {
      const e = c.errno();
      if (e === c.EPERM || e === c.EACCES) return { capacity: before, raised: false, code: c.errnoName(e) };
      throw sysvError('msgctl(IPC_SET)', e);
    }
    return { capacity: this.stat().capacity, raised: true };
  }

  /** Removes the queue (IPC_RMID). Blocked receivers wake with EIDRM. Idempotent. */
  remove(): void {
    if (c.msgctl(this.id, c.IPC_RMID, null) === 0) return;
    const e = c.errno();
    if (e === c.EINVAL || e === c.EIDRM) return;
    throw sysvError('msgctl(IPC_RMID)', e);
  }
}
