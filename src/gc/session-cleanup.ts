import { Kind, Status } from '../cluster/kinds';
import { EMPTY, decodePayload, encodePayload } from '../cluster/messages';
import { shardFor } from '../cluster/shard-for';
import type { ReplyFn } from '../ipc/endpoint';
import { msLeft, type InboundRecord } from '../ipc/envelope';
import { shardMtype } from '../ipc/mtypes';
import { sleep, type GcContext } from './gc-context';
import { trackedRoleOf } from './process-table';

/**
 * SESSION_END (docs/gc.md): REMOVE of the ended session on its shard, retried within the
 * asker's deadline, then OK; UNAVAILABLE when the shard did not confirm in time (chatD then
 * removes the entry itself).
 */
export class SessionCleanup {
  constructor(
    private readonly ctx: GcContext,
    private readonly badRequest: (rec: InboundRecord, reply: ReplyFn, why: string) => void,
  ) {}

  async onSessionEnd(rec: InboundRecord, reply: ReplyFn): Promise<void> {
    const { ctx } = this;
    const p = decodePayload('sessionEnd', rec.payload);
    if (!p) return this.badRequest(rec, reply, 'bad sessionEnd payload');
    if (trackedRoleOf(rec.from)?.role !== 'chatd') return this.badRequest(rec, reply, `sessionEnd from mtype ${rec.from}`);
    ctx.counters.sessionEnds++;
    const shard = shardFor(p.name, ctx.shards);
    const mtype = shardMtype(shard);
    const t = ctx.timings;
    const start = ctx.now();
    // Answer while the asker still listens: within its deadline, and within our own budget.
    const budget = Math.min(t.removeBudgetMs, msLeft(rec.deadline) - 20);
    const payload = encodePayload('remove', { name: p.name, session: p.session, owner: rec.from, ownerInc: rec.fromIncarnation });
    for (;;) {
      if (ctx.stopped) return;
      if (ctx.table.vacancy(mtype)) {
        // A restarted shard is rebuilt from chatD's live sessions, which no longer include this one.
        ctx.counters.sessionEndsShardDead++;
        return reply(Status.OK, EMPTY);
      }
      const left = budget - (ctx.now() - start);
      if (left <= 0) break;
      ctx.counters.removeAttempts++;
      try {
        const r = await ctx.endpoint.request(mtype, Kind.REMOVE, payload, Math.min(t.attemptTimeoutMs, left));
        if (r.status === Status.OK) {
          ctx.counters.sessionEndsRemoved++;
          return reply(Status.OK, EMPTY);
        }
        if (r.status === Status.BAD_REQUEST) {
          ctx.log.warn({ shard, status: r.status }, 'shard refused REMOVE (CHANNELD_SHARDS differs?)');
          break;
        }
      } catch {
        // TIMEOUT or UNAVAILABLE: retry within the budget.
      }
      if (budget - (ctx.now() - start) <= t.removeRetryMs) break;
      await sleep(t.removeRetryMs);
    }
    if (ctx.stopped) return;
    ctx.counters.sessionEndsUnavailable++;
    ctx.log.debug({ shard, ms: ctx.now() - start }, 'session end: shard did not remove in time; chatD removes directly');
    reply(Status.UNAVAILABLE, EMPTY);
  }
}
