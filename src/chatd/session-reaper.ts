import { Kind, Status } from '../cluster/kinds';
import { encodePayload } from '../cluster/messages';
import type { Endpoint } from '../ipc/endpoint';
import { MTYPE_GC } from '../ipc/mtypes';
import type { Logger } from '../log';
import type { ShardClient } from './shard-client';

/** Retry schedule of an unconfirmed removal (docs/reliability.md, defect 4). */
export interface ReaperRetry {
  /** First pause after a failed attempt; doubles up to maxMs. */
  minMs: number;
  maxMs: number;
  /** Every this many failed direct attempts, the collector is asked again too. */
  collectorEvery: number;
  /** A warning is logged after this many failed attempts (once per session), then every 60 s. */
  warnAfter: number;
}

export const defaultReaperRetry: ReaperRetry = Object.freeze({ minMs: 50, maxMs: 2000, collectorEvery: 4, warnAfter: 5 });

/**
 * Ends sessions. chatD only hands a finished session to the collector (SESSION_END), which
 * removes it from its shard and confirms. When the collector does not confirm in time,
 * chatD removes the entry itself, so PROTOCOL.md's 2-second rule holds with the collector
 * down. A removal that cannot be confirmed is retried for as long as this chatD lives
 * (backoff to `retry.maxMs`, the collector asked again now and then): a long queue outage
 * delays it, never leaks it. Removal is idempotent, so retrying is always safe.
 */
export class SessionReaper {
  /** Sessions handed over and not yet confirmed: "name:session". Excluded from resyncs. */
  readonly ending = new Set<string>();
  readonly counters = { ended: 0, viaCollector: 0, direct: 0, retries: 0, failures: 0, recoveredAfterRetries: 0 };
  retry: ReaperRetry = defaultReaperRetry;
  private stopped = false;
  private readonly sleepers = new Set<() => void>();

  constructor(
    private readonly endpoint: Endpoint,
    private readonly shards: ShardClient,
    private readonly log: Logger,
    private readonly collectorTimeoutMs = 600,
  ) {}

  /**
   * Resolves true once the entry is gone from its shard (or its shard is down, so it is gone
   * anyway); false when that has not happened within `patienceMs` (retries go on in the
   * background), or when the reaper was stopped first.
   */
  end(name: string, session: number, patienceMs = Infinity): Promise<boolean> {
    const done = this.reap(name, session);
    if (!Number.isFinite(patienceMs)) return done;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), patienceMs)));
    return Promise.race([done, late]).finally(() => clearTimeout(timer));
  }

  /** Sessions whose removal is not confirmed yet. */
  get unconfirmed(): number {
    return this.ending.size;
  }

  /** Stops retrying (chatD shutting down; its entries go with its incarnation's PURGE). */
  stop(): void {
    this.stopped = true;
    for (const wake of this.sleepers) wake();
    this.sleepers.clear();
  }

  private async reap(name: string, session: number): Promise<boolean> {
    const tag = `${name}:${session}`;
    this.ending.add(tag);
    this.counters.ended++;
    try {
      if (await this.viaCollector(name, session)) {
        this.counters.viaCollector++;
        return true;
      }
      let lastWarn = 0;
      for (let attempt = 0; !this.stopped; attempt++) {
        const shard = this.shards.shardOf(name);
        if (shard !== undefined && !this.shards.isUp(shard)) return true;
        try {
          await this.shards.remove(name, session);
          this.counters.direct++;
          if (attempt >= this.retry.warnAfter) {
            this.counters.recoveredAfterRetries++;
            this.log.info({ name, session, attempts: attempt + 1 }, 'session removal confirmed after retries');
          }
          return true;
        } catch (err) {
          this.counters.retries++;
          if (attempt === this.retry.warnAfter || (attempt > this.retry.warnAfter && Date.now() - lastWarn > 60_000)) {
            lastWarn = Date.now();
            this.log.warn({ err, name, session, attempts: attempt + 1, unconfirmed: this.ending.size }, 'session removal still failing; retrying until it succeeds');
          }
        }
        await this.sleep(Math.min(this.retry.minMs * 2 ** Math.min(attempt, 20), this.retry.maxMs));
        if (this.stopped) break;
        if ((attempt + 1) % this.retry.collectorEvery === 0 && (await this.viaCollector(name, session))) {
          this.counters.viaCollector++;
          return true;
        }
      }
      this.counters.failures++;
      return false;
    } finally {
      this.ending.delete(tag);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(t);
        this.sleepers.delete(wake);
        resolve();
      };
      const t = setTimeout(wake, ms);
      t.unref();
      this.sleepers.add(wake);
    });
  }

  private async viaCollector(name: string, session: number): Promise<boolean> {
    try {
      const r = await this.endpoint.request(MTYPE_GC, Kind.SESSION_END, encodePayload('sessionEnd', { name, session }), this.collectorTimeoutMs);
      return r.status === Status.OK;
    } catch {
      return false;
    }
  }
}
