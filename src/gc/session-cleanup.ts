import { Kind, Status } from '../cluster/kinds';
import { EMPTY, decodePayload, encodePayload } from '../cluster/messages';
import { normalizeName } from '../cluster/names';
import type { ReplyFn } from '../ipc/endpoint';
import { msLeft, type InboundRecord } from '../ipc/envelope';
import { shardMtype } from '../ipc/mtypes';
import { sleep, type GcContext } from './gc-context';
import { trackedRoleOf } from './process-table';

/**
 * SESSION_END (docs/gc.md): REMOVE of the ended session on its shard, retried within the
 * asker's deadline, then OK; UNAVAILABLE when the shard did not confirm in time (chatD then
 * removes the entry itself). While the membership epoch has not settled, the owner under the
 * previous epoch may still hold the entry: both must confirm (docs/resharding.md). A collector
 * that does not know who owned it (no view yet, or an unsettled epoch relearned after its
 * restart) answers UNAVAILABLE at once: chatD removes it with its own two views.
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
    ctx.ensureView();
    const view = ctx.epochs.view;
    const key = normalizeName(p.name);
    const owners = new Set<number>();
    if (view) {
      owners.add(view.ownerOfKey(key));
      if (!ctx.epochs.settled(ctx.table.live())) {
        const prev = ctx.epochs.previousView;
        if (prev) owners.add(prev.ownerOfKey(key));
        else if (!ctx.epochs.previousKnown) owners.clear(); // relearned mid hand-over: the previous owner is unknown here
      }
    }
    if (owners.size === 0) {
      ctx.counters.sessionEndsUnavailable++;
      return reply(Status.UNAVAILABLE, EMPTY);
    }
    const t = ctx.timings;
    const start = ctx.now();
    // Answer while the asker still listens: within its deadline, and within our own budget.
    const budget = Math.min(t.removeBudgetMs, msLeft(rec.deadline) - 20);
    const payload = encodePayload('remove', { name: p.name, session: p.session, owner: rec.from, ownerInc: rec.fromIncarnation });
    const results = await Promise.all([...owners].map((shard) => this.removeOn(shard, payload, start, budget)));
    if (ctx.stopped) return;
    if (results.every((r) => r !== 'failed')) {
      if (results.every((r) => r === 'shardDead')) ctx.counters.sessionEndsShardDead++;
      else ctx.counters.sessionEndsRemoved++;
      return reply(Status.OK, EMPTY);
    }
    ctx.counters.sessionEndsUnavailable++;
    ctx.log.debug({ shards: [...owners], ms: ctx.now() - start }, 'session end: shard did not remove in time; chatD removes directly');
    reply(Status.UNAVAILABLE, EMPTY);
  }

  /** REMOVE on one shard, retried within the budget. */
  private async removeOn(shard: number, payload: Buffer, start: number, budget: number): Promise<'removed' | 'shardDead' | 'failed'> {
    const { ctx } = this;
    const t = ctx.timings;
    const mtype = shardMtype(shard);
    for (;;) {
      if (ctx.stopped) return 'failed';
      if (ctx.table.vacancy(mtype)) {
        // A restarted shard is rebuilt from chatD's live sessions, which no longer include this one.
        return 'shardDead';
      }
      const left = budget - (ctx.now() - start);
      if (left <= 0) return 'failed';
      ctx.counters.removeAttempts++;
      try {
        const r = await ctx.endpoint.request(mtype, Kind.REMOVE, payload, Math.min(t.attemptTimeoutMs, left));
        if (r.status === Status.OK) return 'removed';
        if (r.status === Status.BAD_REQUEST) {
          ctx.log.warn({ shard, status: r.status }, 'shard refused REMOVE');
          return 'failed';
        }
      } catch {
        // TIMEOUT or UNAVAILABLE: retry within the budget.
      }
      if (budget - (ctx.now() - start) <= t.removeRetryMs) return 'failed';
      await sleep(t.removeRetryMs);
    }
  }
}
