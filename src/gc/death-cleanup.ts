import { Kind, Status } from '../cluster/kinds';
import { decodePayload, encodePayload } from '../cluster/messages';
import { shardMtype } from '../ipc/mtypes';
import { sleep, type GcContext } from './gc-context';
import type { Death } from './process-table';

/** How one chatD cleanup went, shard by shard. */
export interface CleanupReport {
  readonly mtype: number;
  readonly incarnation: number;
  /** Entries removed, summed over shards. */
  readonly removed: number;
  /** shard index -> entries removed. */
  readonly perShard: Record<number, number>;
  /** Shards not purged because they are dead (their state went with them). */
  readonly skipped: number[];
  readonly drained: number;
  readonly ms: number;
}

/**
 * Clean-up after a death (docs/gc.md "Cleanup after a death"): the dead mailbox drained when
 * nobody took the mtype over, and for a chatD a PURGE of its incarnation on every shard that
 * may be alive, retried until each answered.
 */
export class DeathCleanup {
  private readonly cleanups = new Set<Promise<CleanupReport>>();

  constructor(private readonly ctx: GcContext) {}

  get inProgress(): number {
    return this.cleanups.size;
  }

  /** Resolves when every cleanup started so far has finished. */
  settled(): Promise<CleanupReport[]> {
    return Promise.all([...this.cleanups]);
  }

  onDeath(d: Death): void {
    const { counters, log } = this.ctx;
    counters.deaths++;
    if (d.role === 'chatd') counters.chatdDeaths++;
    else counters.shardDeaths++;
    log.info(
      { mtype: d.mtype, role: d.role, index: d.index, incarnation: d.incarnation, pid: d.pid, host: d.host, local: d.local, reason: d.reason, silentMs: d.at - d.lastSeenAt, successor: d.successor },
      'process died',
    );
    // The mailbox on this host's queue, of a process of this host: another host's process never
    // had one here (docs/multi-host.md), and nothing is drained on its behalf.
    const drained = d.successor === undefined && d.local ? this.ctx.drain(d.mtype) : 0;
    if (d.role === 'chatd') {
      const p = this.purgeEverywhere(d, drained).catch((err: unknown): CleanupReport => {
        log.error({ err, mtype: d.mtype, incarnation: d.incarnation }, 'cleanup failed');
        return { mtype: d.mtype, incarnation: d.incarnation, removed: 0, perShard: {}, skipped: [], drained, ms: 0 };
      });
      this.cleanups.add(p);
      void p.then(() => this.cleanups.delete(p));
    } else {
      counters.cleanupsDone++;
      log.info({ mtype: d.mtype, role: d.role, index: d.index, incarnation: d.incarnation, drained }, 'cleanup done');
    }
  }

  private async purgeEverywhere(d: Death, drained: number): Promise<CleanupReport> {
    const start = this.ctx.now();
    const shards = this.shardIndexes();
    const results = await Promise.all(shards.map((shard) => this.purgeShard(d, shard)));
    const perShard: Record<number, number> = {};
    const skipped: number[] = [];
    let removed = 0;
    results.forEach((count, i) => {
      const shard = shards[i]!;
      if (count === undefined) skipped.push(shard);
      else {
        perShard[shard] = count;
        removed += count;
      }
    });
    const report: CleanupReport = { mtype: d.mtype, incarnation: d.incarnation, removed, perShard, skipped, drained, ms: this.ctx.now() - start };
    if (this.ctx.stopped) return report;
    this.ctx.counters.cleanupsDone++;
    this.ctx.counters.purgedEntries += removed;
    this.ctx.log.info({ ...report, role: d.role, index: d.index }, 'cleanup done');
    return report;
  }

  /** PURGEs one shard until it answers; undefined when the shard is not live (then its state is gone anyway). */
  private async purgeShard(d: Death, shard: number): Promise<number | undefined> {
    const mtype = shardMtype(shard);
    const payload = encodePayload('purge', { owner: d.mtype, ownerInc: d.incarnation });
    for (;;) {
      if (this.ctx.stopped || !this.mayBeLive(mtype)) return undefined;
      this.ctx.counters.purgeAttempts++;
      try {
        const r = await this.ctx.endpoint.request(mtype, Kind.PURGE, payload, this.ctx.timings.attemptTimeoutMs);
        if (r.status === Status.OK) return decodePayload('count', r.payload)?.count ?? 0;
        if (r.status === Status.BAD_REQUEST) {
          this.ctx.log.warn({ shard, owner: d.mtype }, 'shard refused PURGE');
          return undefined;
        }
      } catch {
        // TIMEOUT or UNAVAILABLE: retry while the shard may be alive.
      }
      await sleep(this.ctx.timings.purgeRetryMs);
    }
  }

  /**
   * Every shard that may hold entries: the first CHANNELD_SHARDS indexes, the members of the
   * current and previous epochs, and every live shard (`pm2 scale` gives any index). The ones
   * that are not live are skipped at once (purgeShard).
   */
  private shardIndexes(): number[] {
    const { epochs, table, shards } = this.ctx;
    const set = new Set<number>();
    for (let s = 0; s < shards; s++) set.add(s);
    for (const s of epochs.view?.members ?? []) set.add(s);
    for (const s of epochs.previousView?.members ?? []) set.add(s);
    for (const [s] of table.liveShards()) set.add(s);
    return [...set].sort((a, b) => a - b);
  }

  /** A shard mtype that is live, or unknown while we are still learning who is. */
  private mayBeLive(mtype: number): boolean {
    if (this.ctx.table.get(mtype)) return true;
    if (this.ctx.table.vacancy(mtype)) return false;
    return this.ctx.warming;
  }
}
