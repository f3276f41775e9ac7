import { readFileSync } from 'node:fs';
import { IpcError } from '../ipc-error';

/**
 * The queue's trust model (docs/reliability.md, "The queue's trust model").
 *
 * A System V queue is found by key, and anyone on the host may create the key first. Its
 * creator (cuid) may always change its mode and owner (IPC_SET) and remove it (IPC_RMID), and
 * its mode says who may read and write messages. So before the cluster uses a queue opened by
 * key it reads msg_perm (IPC_STAT) and refuses the queue unless:
 *  - no o+rwx bit is set (mode & 0o007 == 0): nobody outside the owner and group may touch it;
 *  - its owner (uid) AND its creator (cuid) are trusted: root, this process's euid, or a uid
 *    of MQ_TRUSTED_UIDS. The creator matters because an owner can hand the queue to another
 *    uid (IPC_SET), while the creator keeps its rights for the queue's life.
 * A queue the cluster created itself (MQ_MODE 0600 or 0660, as the euid) always passes.
 */

/** msg_perm of a queue (struct ipc_perm in msqid_ds). */
export interface QueuePerms {
  readonly uid: number;
  readonly gid: number;
  readonly cuid: number;
  readonly cgid: number;
  /** Permission bits (mode & 0o777). */
  readonly mode: number;
}

/** The uids trusted to own or create the queue: root, our euid, and `extra` (MQ_TRUSTED_UIDS). */
export function trustedUids(extra: readonly number[] = []): number[] {
  const euid = typeof process.geteuid === 'function' ? process.geteuid() : 0;
  return [...new Set([0, euid, ...extra])];
}

const octal = (mode: number): string => `0${(mode & 0o777).toString(8).padStart(3, '0')}`;
const hexKey = (key: number): string => `0x${(key >>> 0).toString(16).padStart(8, '0')}`;

/** A user name for a uid from /etc/passwd, best effort (for the message only). */
export function userName(uid: number): string | undefined {
  try {
    for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const f = line.split(':');
      if (f.length > 2 && Number(f[2]) === uid) return f[0];
    }
  } catch {
    /* no passwd: uid alone */
  }
  return undefined;
}

const who = (uid: number): string => {
  const name = userName(uid);
  return name ? `uid ${uid} (${name})` : `uid ${uid}`;
};

/** A queue opened by key that the cluster must not use. */
export class QueueTrustError extends IpcError {
  override readonly name = 'QueueTrustError';
  constructor(
    readonly key: number,
    readonly queueId: number,
    readonly perms: QueuePerms,
    readonly problems: readonly string[],
    readonly trusted: readonly number[],
  ) {
    const untrustedUid = !trusted.includes(perms.uid) || !trusted.includes(perms.cuid);
    const fixes = [`check who made it (ipcs -q -c; ipcs -q -p for the pids using it), then remove it with \`ipcrm -Q ${hexKey(key)}\` and start again (the cluster creates its own, mode MQ_MODE)`];
    if (untrustedUid && (perms.mode & 0o007) === 0) {
      fixes.push(`or, if that uid is a peer you trust, add it to MQ_TRUSTED_UIDS`);
    }
    super(
      'QUEUE_UNTRUSTED',
      `refusing queue MQ_KEY=${key} (key ${hexKey(key)}, id ${queueId}): ${problems.join('; ')} ` +
        `[owner ${who(perms.uid)} gid ${perms.gid}, creator ${who(perms.cuid)} gid ${perms.cgid}, mode ${octal(perms.mode)}; trusted uids ${trusted.join(',')}]. ` +
        `Fix: ${fixes.join(', ')}.`,
      'msgctl(IPC_STAT)',
    );
  }

  /** The fields of a log line. */
  get fields(): Record<string, unknown> {
    return {
      mqKey: this.key, keyHex: hexKey(this.key), queueId: this.queueId, uid: this.perms.uid, gid: this.perms.gid,
      cuid: this.perms.cuid, cgid: this.perms.cgid, mode: octal(this.perms.mode), trustedUids: this.trusted, problems: this.problems,
    };
  }
}

/** Why a queue with these permissions is not to be used; empty when it is trusted. */
export function trustProblems(perms: QueuePerms, trusted: readonly number[]): string[] {
  const problems: string[] = [];
  if (perms.mode & 0o007) problems.push(`mode ${octal(perms.mode)} lets any local user access it (o+${['r', 'w', 'x'].filter((_, i) => perms.mode & (4 >> i)).join('')})`);
  if (!trusted.includes(perms.cuid)) problems.push(`created by untrusted ${who(perms.cuid)}`);
  if (!trusted.includes(perms.uid)) problems.push(`owned by untrusted ${who(perms.uid)}`);
  return problems;
}

/** @throws QueueTrustError when the queue must not be used. */
export function checkQueueTrust(key: number, queueId: number, perms: QueuePerms, trusted: readonly number[]): void {
  const problems = trustProblems(perms, trusted);
  if (problems.length > 0) throw new QueueTrustError(key, queueId, perms, problems, trusted);
}
