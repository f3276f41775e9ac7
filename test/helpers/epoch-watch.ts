import { Kind, Status } from '../../src/cluster/kinds';
import { EMPTY, decodePayload } from '../../src/cluster/messages';
import { Endpoint, newIncarnation } from '../../src/ipc';
import { MTYPE_GC, toolMtype } from '../../src/ipc/mtypes';
import { NatsTransport } from '../../src/ipc/nats/nats-transport';
import { SysvQueue } from '../../src/ipc/sysv/sysv-queue';
import { SysvTransport, defaultSysvTransportOptions } from '../../src/ipc/sysv/sysv-transport';
import type { MessageTransport } from '../../src/ipc/transport';
import { sleep } from './cluster';

/** The collector's membership epoch, as its STATUS reports it (docs/resharding.md). */
export interface GcView {
  epoch: number;
  members: number[];
  settled: boolean;
}

/**
 * A tool endpoint on a running cluster's transport (the host queue at `mqKey`, or NATS when
 * `nats` is given) that asks daemons for STATUS and follows the collector's epoch. Close it
 * in `after`: it drains its own mailbox of late replies.
 */
export class EpochWatch {
  private constructor(
    private readonly endpoint: Endpoint,
    private readonly transport: MessageTransport,
    private readonly queue: SysvQueue | undefined,
    private readonly me: number,
  ) {}

  static async open(target: { mqKey?: number; nats?: { url: string; cluster: string } }): Promise<EpochWatch> {
    let transport: MessageTransport;
    let queue: SysvQueue | undefined;
    if (target.nats) {
      transport = await NatsTransport.connect({ url: target.nats.url, cluster: target.nats.cluster, name: 'epoch watch (test)', connectTimeoutMs: 5000 });
    } else {
      if (target.mqKey === undefined) throw new Error('EpochWatch.open: give mqKey (SysV) or nats');
      queue = SysvQueue.open({ key: target.mqKey, create: false });
      transport = new SysvTransport(queue, { ...defaultSysvTransportOptions, backlogMessages: 1000, backlogBytes: 1 << 20 });
    }
    const me = toolMtype();
    const endpoint = new Endpoint(transport, { mtype: me, incarnation: newIncarnation(), maxBatchBytes: 4096 });
    endpoint.start(() => {});
    return new EpochWatch(endpoint, transport, queue, me);
  }

  /** A daemon's STATUS, or undefined when it does not answer within `timeoutMs`. */
  async status(mtype: number, timeoutMs = 1000): Promise<Record<string, unknown> | undefined> {
    try {
      const r = await this.endpoint.request(mtype, Kind.STATUS, EMPTY, timeoutMs);
      return r.status === Status.OK ? decodePayload('status', r.payload) : undefined;
    } catch {
      return undefined;
    }
  }

  /** The collector's STATUS (1.5 s to answer), typed by the caller; undefined when it does not answer. */
  async gcStatus<T = Record<string, unknown>>(): Promise<T | undefined> {
    return (await this.status(MTYPE_GC, 1500)) as T | undefined;
  }

  /** Polls the collector's STATUS until `ok` holds; rejects after `timeoutMs`, naming `what`. */
  async gcUntil<T = Record<string, unknown>>(what: string, timeoutMs: number, ok: (s: T) => boolean, show: (s: T | undefined) => unknown = (s) => s): Promise<{ status: T; ms: number }> {
    const t0 = Date.now();
    for (;;) {
      const s = await this.gcStatus<T>();
      if (s && ok(s)) return { status: s, ms: Date.now() - t0 };
      if (Date.now() - t0 > timeoutMs) throw new Error(`gc: ${what} not seen after ${timeoutMs} ms (last: ${JSON.stringify(show(s))})`);
      await sleep(50);
    }
  }

  async gcView(): Promise<GcView | undefined> {
    const e = (await this.status(MTYPE_GC))?.epoch as GcView | undefined;
    return e ? { epoch: e.epoch, members: e.members, settled: e.settled } : undefined;
  }

  /**
   * Polls until the collector has a settled epoch above `above` (with exactly `members`, when
   * given: PM2 may start or delete the processes of one `pm2 scale` slowly enough for the
   * collector to take them in more than one epoch); its view and the ms waited.
   */
  async settledAbove(above: number, timeoutMs: number, members?: readonly number[] | number, why = ''): Promise<GcView & { ms: number }> {
    const t0 = Date.now();
    const wanted = (v: GcView): boolean =>
      members === undefined ||
      (typeof members === 'number' ? v.members.length === members : v.members.length === members.length && members.every((m) => v.members.includes(m)));
    for (;;) {
      const v = await this.gcView();
      if (v && v.epoch > above && v.settled && wanted(v)) return { ...v, ms: Date.now() - t0 };
      if (Date.now() - t0 > timeoutMs) throw new Error(`no settled epoch above ${above}${members === undefined ? '' : ` with members ${JSON.stringify(members)}`} after ${timeoutMs} ms (last: ${JSON.stringify(v)})${why}`);
      await sleep(50);
    }
  }

  async close(): Promise<void> {
    await this.endpoint.close();
    await this.transport.close();
    try {
      while (this.queue?.tryReceive(this.me)) {
        /* late replies: discard */
      }
    } catch {
      /* the queue is gone */
    }
  }
}
