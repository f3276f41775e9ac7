import { Kind, Status } from '../cluster/kinds';
import { encodePayload } from '../cluster/messages';
import type { Endpoint } from '../ipc/endpoint';
import { MTYPE_GC } from '../ipc/mtypes';
import type { Logger } from '../log';
import type { ShardClient } from './shard-client';

/**
 * Ends sessions. chatD only hands a finished session to the collector (SESSION_END), which
 * removes it from its shard and confirms. When the collector does not confirm in time,
 * chatD removes the entry itself, so PROTOCOL.md's 2-second rule holds with the collector
 * down; failing that it keeps retrying in the background (removal is idempotent).
 */
export class SessionReaper {
  /** Sessions handed over and not yet confirmed: "name:session". Excluded from resyncs. */
  readonly ending = new Set<string>();
  readonly counters = { ended: 0, viaCollector: 0, direct: 0, retries: 0, failures: 0 };

  constructor(
    private readonly endpoint: Endpoint,
    private readonly shards: ShardClient,
    private readonly log: Logger,
    private readonly collectorTimeoutMs = 600,
  ) {}

  /**
   * Resolves true once the entry is gone from its shard (or its shard is down, so it is gone
   * anyway); false when that has not happened within `patienceMs`, or ever. Retries go on in
   * the background after a false from impatience.
   */
  end(name: string, session: number, patienceMs = Infinity): Promise<boolean> {
    const done = this.reap(name, session);
    if (!Number.isFinite(patienceMs)) return done;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), patienceMs)));
    return Promise.race([done, late]).finally(() => clearTimeout(timer));
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
      for (let attempt = 0; attempt < 20; attempt++) {
        if (!this.shards.isUp(this.shards.shardOf(name))) return true;
        try {
          await this.shards.remove(name, session);
          this.counters.direct++;
          return true;
        } catch (err) {
          this.counters.retries++;
          if (attempt === 0) this.log.warn({ err, name, session }, 'session removal failing; retrying');
          await new Promise((r) => setTimeout(r, Math.min(50 * 2 ** attempt, 1000)));
        }
      }
      this.counters.failures++;
      this.log.error({ name, session }, 'session removal gave up');
      return false;
    } finally {
      this.ending.delete(tag);
    }
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
