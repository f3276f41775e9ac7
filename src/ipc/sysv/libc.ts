import koffi from 'koffi';

/**
 * The System V message-queue calls of glibc, bound through koffi.
 *
 * Kept to plain synchronous calls (about 1 µs each): the main thread only ever calls them
 * with IPC_NOWAIT, and the blocking msgrcv runs on a receiver worker thread, which binds
 * its own copy of this module (koffi functions are per thread).
 */

if (process.platform !== 'linux') throw new Error(`System V message queues need Linux (running on ${process.platform})`);
if (process.arch !== 'x64' && process.arch !== 'arm64') {
  throw new Error(`msqid_ds layout is only known for 64-bit Linux (running on ${process.arch})`);
}

const libc = koffi.load('libc.so.6');

export const msgget = libc.func('int msgget(int key, int msgflg)') as (key: number, flags: number) => number;
/** msgp points at `struct { long mtype; char mtext[]; }`; msgsz counts mtext only. */
export const msgsnd = libc.func('int msgsnd(int msqid, void *msgp, size_t msgsz, int msgflg)') as (
  id: number,
  msgp: Buffer,
  size: number,
  flags: number,
) => number;
export const msgrcv = libc.func('intptr_t msgrcv(int msqid, void *msgp, size_t msgsz, long msgtyp, int msgflg)') as (
  id: number,
  msgp: Buffer,
  size: number,
  mtype: number,
  flags: number,
) => number;
export const msgctl = libc.func('int msgctl(int msqid, int cmd, void *buf)') as (id: number, cmd: number, buf: Buffer | null) => number;

export const errno = (): number => koffi.errno();
/**
 * Ends the process at once. process.exit() joins worker threads, and a receiver thread blocked
 * in msgrcv cannot be joined until a message comes: on a queue full by message count its
 * wake-up cannot be sent, so a tool would hang at exit. Tools call this after their output.
 */
export const sysExit = libc.func('void _exit(int status)') as (status: number) => void;

export const IPC_PRIVATE = 0;
export const IPC_CREAT = 0o1000;
export const IPC_EXCL = 0o2000;
export const IPC_NOWAIT = 0o4000;
export const MSG_NOERROR = 0o10000;
/** Linux: msgtyp is a position in the queue, and the message is copied, not taken (needs IPC_NOWAIT). */
export const MSG_COPY = 0o40000;
/** Linux: the first message whose type is NOT msgtyp. */
export const MSG_EXCEPT = 0o20000;
export const IPC_RMID = 0;
export const IPC_SET = 1;
export const IPC_STAT = 2;

/** sizeof(long) on the 64-bit targets above: the mtype header of every kernel message. */
export const MTYPE_BYTES = 8;

/** struct msqid_ds on 64-bit Linux glibc (checked against <sys/msg.h> with offsetof). */
export const MsqidDs = {
  size: 120,
  uid: 4,
  gid: 8,
  cuid: 12,
  cgid: 16,
  mode: 20,
  stime: 48,
  rtime: 56,
  ctime: 64,
  cbytes: 72,
  qnum: 80,
  qbytes: 88,
  lspid: 96,
  lrpid: 100,
} as const;

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(koffi.os.errno)) {
  // Several names share a value (EAGAIN/EWOULDBLOCK): keep the first, conventional one.
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}
export const errnoValue = (name: string): number => {
  const v = koffi.os.errno[name];
  if (v === undefined) throw new Error(`unknown errno ${name}`);
  return v;
};
export const errnoName = (value: number): string => errnoNames.get(value) ?? `ERRNO_${value}`;

export const EINTR = errnoValue('EINTR');
export const EAGAIN = errnoValue('EAGAIN');
export const ENOMSG = errnoValue('ENOMSG');
export const EIDRM = errnoValue('EIDRM');
export const EINVAL = errnoValue('EINVAL');
export const E2BIG = errnoValue('E2BIG');
export const EACCES = errnoValue('EACCES');
export const EPERM = errnoValue('EPERM');
export const ENOENT = errnoValue('ENOENT');
export const EEXIST = errnoValue('EEXIST');
export const ENOSYS = errnoValue('ENOSYS');
