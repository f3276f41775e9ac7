import { MTYPE_LEGACY_REPLY } from '../ipc/mtypes';
import type { GcContext } from './gc-context';

/**
 * Queue hygiene (docs/gc.md): when the queue stays over its high-water mark, drain what
 * nobody reads (legacy replies, mailboxes of vacant mtypes).
 */
export class QueueHygiene {
  private fullSince: number | undefined;

  constructor(private readonly ctx: GcContext) {}

  run(now: number): void {
    const ctx = this.ctx;
    let stat;
    try {
      stat = ctx.endpoint.transport.stat();
    } catch {
      return; // the queue is gone; the receiver's end tells main
    }
    const full = stat.capacity > 0 && stat.bytes / stat.capacity > ctx.timings.highWater;
    if (!full) {
      this.fullSince = undefined;
      return;
    }
    this.fullSince ??= now;
    if (now - this.fullSince < ctx.timings.highWaterForMs) return;
    this.fullSince = now; // the next drain needs another full window
    // Nobody in the cluster reads legacy replies; with no C peer reading them they pile up.
    const legacy = ctx.drain(MTYPE_LEGACY_REPLY);
    ctx.counters.legacyRepliesDrained += legacy;
    // Mailboxes of dead processes that nobody took over fill up with requests nobody will answer.
    const vacant: Record<number, number> = {};
    for (const mtype of ctx.table.vacantMtypes()) {
      const n = ctx.drain(mtype);
      if (n > 0) vacant[mtype] = n;
    }
    const drainedAny = legacy > 0 || Object.keys(vacant).length > 0;
    const fields = { legacyReplies: legacy, vacantMailboxes: vacant, bytes: stat.bytes, capacity: stat.capacity };
    if (drainedAny) ctx.log.info(fields, 'queue over high water: drained messages nobody reads');
    else ctx.log.debug(fields, 'queue over high water: nothing of ours to drain');
  }
}
