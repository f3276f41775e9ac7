import { Kind, Status } from '../cluster/kinds';
import { EMPTY, decodePayload } from '../cluster/messages';
import type { Config } from '../config';
import { Endpoint, RequestError } from '../ipc/endpoint';
import { newIncarnation } from '../ipc/envelope';
import { IpcError } from '../ipc/ipc-error';
import { MTYPE_CHATD_BASE, MTYPE_GC, MAX_CHATD, MAX_SHARDS, chatdMtype, shardMtype, toolMtype } from '../ipc/mtypes';
import { queueFill } from '../ipc/queue-fill';
import { QueueTrustError } from '../ipc/sysv/queue-trust';
import { SysvQueue } from '../ipc/sysv/sysv-queue';
import { SysvTransport, defaultSysvTransportOptions } from '../ipc/sysv/sysv-transport';
import { NatsTransport } from '../ipc/nats/nats-transport';
import type { MessageTransport } from '../ipc/transport';
import type { Logger } from '../log';
import type { Answer, Poll, QueueFigures, Target } from './cluster-view';
import { figuresOf, type ProcessFigures } from './process-figures';

export interface PollerTimings {
  /** Time from the start of one round to the start of the next. */
  readonly intervalMs: number;
  /** How long one STATUS reply may take. */
  readonly timeoutMs: number;
  /** A process that did not answer is asked again after 1, 2, 4 ... s, at most this far apart. */
  readonly maxBackoffMs: number;
}

export const defaultPollerTimings: PollerTimings = Object.freeze({ intervalMs: 1000, timeoutMs: 800, maxBackoffMs: 5000 });

/**
 * gc, the shards of gc's membership epoch (before gc has named one: shards 0..CHANNELD_SHARDS-1),
 * plus every chatD instance and every shard gc's heartbeats show. After `pm2 scale channeld N`
 * the shards are any indexes, and the first CHANNELD_SHARDS may be gone for good
 * (docs/resharding.md): a shard neither a member nor live is not asked.
 */
export function targetsFor(shards: number, gcLive: readonly { mtype: number; role: string; index: number }[] = [], members?: readonly number[]): Target[] {
  const out: Target[] = [{ key: 'gc', role: 'gc', index: 0, mtype: MTYPE_GC }];
  const shardSet = new Set<number>(members && members.length > 0 ? members : Array.from({ length: shards }, (_, i) => i));
  const chatds = new Set<number>([0]);
  for (const p of gcLive) {
    if (p.role === 'chatd' && p.mtype >= MTYPE_CHATD_BASE && p.mtype < MTYPE_CHATD_BASE + MAX_CHATD) chatds.add(p.mtype - MTYPE_CHATD_BASE);
    if (p.role === 'channeld' && Number.isInteger(p.index) && p.index >= 0 && p.index < MAX_SHARDS && p.mtype === shardMtype(p.index)) shardSet.add(p.index);
  }
  for (const i of [...shardSet].sort((a, b) => a - b)) out.push({ key: `channeld/${i}`, role: 'channeld', index: i, mtype: shardMtype(i) });
  for (const j of [...chatds].sort((a, b) => a - b)) out.push({ key: `chatd/${j}`, role: 'chatd', index: j, mtype: chatdMtype(j) });
  return out;
}

const hexKey = (key: number): string => `0x${(key >>> 0).toString(16).padStart(8, '0')}`;

interface Link {
  /** The host queue the link receives on (SysV); undefined over NATS. */
  readonly queue: SysvQueue | undefined;
  readonly transport: MessageTransport;
  readonly endpoint: Endpoint;
}

/**
 * Asks every process of the cluster for STATUS over the queue, once a round, and reads the
 * queue's figures (IPC_STAT). Never creates the queue and never uses one it must refuse
 * (queue-trust.ts); a missing, refused or removed queue is a state of the round, and the
 * next round tries again (a new queue under the same key is picked up). A process that does
 * not answer is asked less often (backoff), so a dead mailbox gets at most one question every
 * maxBackoffMs; gc drains dead mailboxes.
 */
export class StatusPoller {
  private link: Link | undefined;
  private readonly backoff = new Map<string, { misses: number; nextAt: number }>();
  private gcLive: readonly { mtype: number; role: string; index: number }[] = [];
  private gcMembers: readonly number[] | undefined;
  private lastQueueState: string | undefined;
  private readonly reported = new Map<string, string>();
  private readonly me = toolMtype();
  private receiverEnded = false;

  constructor(
    private readonly config: Pick<Config, 'mqKey' | 'mqTrustedUids' | 'mqBatchBytes' | 'shards'> & Partial<Pick<Config, 'transport' | 'natsUrls' | 'clusterName'>>,
    private readonly log: Logger,
    readonly timings: PollerTimings = defaultPollerTimings,
  ) {}

  /** One round. Never throws. */
  async poll(now = Date.now()): Promise<Poll> {
    const queue = this.openQueue();
    const targets = targetsFor(this.config.shards, this.gcLive, this.gcMembers);
    // Over NATS (TRANSPORT=nats) the processes answer STATUS there; the host queue only has figures.
    const link = this.overNats ? await this.natsLink() : this.link;
    if (!link || (!this.overNats && queue.state !== 'ok')) {
      const problem = this.overNats ? `nats: cannot connect to ${(this.config.natsUrls ?? []).join(',')}` : `queue ${queue.state}`;
      return { at: now, queue, answers: targets.map((target) => ({ target, outcome: 'error' as const, problem })) };
    }
    const answers = await Promise.all(targets.map((t) => this.ask(link, t, now)));
    const gc = answers.find((a) => a.target.role === 'gc' && a.outcome === 'ok');
    if (gc?.figures?.live) this.gcLive = gc.figures.live;
    if (gc?.figures?.membership) this.gcMembers = gc.figures.membership.members;
    for (const a of answers) this.report(a);
    return { at: now, queue, answers };
  }

  /** Closes the endpoint and its receiver thread. */
  async close(): Promise<void> {
    const link = this.link;
    this.link = undefined;
    if (link) await closeLink(link);
    const nats = this.nats;
    this.nats = undefined;
    if (nats) await closeLink(nats);
  }

  private get overNats(): boolean {
    return this.config.transport === 'nats';
  }

  private nats: Link | undefined;
  private natsFailedLogged = false;
  /** The NATS link, connected on first use (the client then reconnects by itself); undefined while it cannot connect. */
  private async natsLink(): Promise<Link | undefined> {
    if (this.nats) return this.nats;
    const url = (this.config.natsUrls ?? []).join(',');
    try {
      const transport = await NatsTransport.connect({ url, cluster: this.config.clusterName ?? 'main', name: `chatd-cluster status ${process.pid}`, connectTimeoutMs: this.timings.timeoutMs });
      const endpoint = new Endpoint(transport, { mtype: this.me, incarnation: newIncarnation(), maxBatchBytes: this.config.mqBatchBytes });
      endpoint.start(() => {
        /* the status app serves nothing: requests to it are ignored */
      });
      this.nats = { queue: undefined, transport, endpoint };
      this.natsFailedLogged = false;
      this.log.info({ url }, 'connected to NATS');
      return this.nats;
    } catch (err) {
      if (!this.natsFailedLogged) this.log.warn({ err, url }, 'cannot connect to NATS; retrying every round');
      this.natsFailedLogged = true;
      return undefined;
    }
  }

  private async ask(link: Link, target: Target, now: number): Promise<Answer> {
    const b = this.backoff.get(target.key);
    if (b && now < b.nextAt) return { target, outcome: 'skipped' };
    const start = Date.now();
    let answer: Answer;
    try {
      const r = await link.endpoint.request(target.mtype, Kind.STATUS, EMPTY, this.timings.timeoutMs);
      const ms = Date.now() - start;
      const status = r.status === Status.OK ? decodePayload('status', r.payload) : undefined;
      if (!status) answer = { target, outcome: 'error', ms, problem: r.status === Status.OK ? 'unreadable STATUS reply' : `STATUS answered with status ${r.status}` };
      else {
        let figures: ProcessFigures;
        try {
          figures = figuresOf(target.role, status);
        } catch (err) {
          // figuresOf does not throw by design; a surprise still must not end the round.
          figures = { counters: {}, gauges: {} };
          this.log.warn({ err, target: target.key }, 'STATUS reply not understood');
        }
        answer = { target, outcome: 'ok', ms, figures };
      }
    } catch (err) {
      const timeout = err instanceof RequestError && err.code === 'TIMEOUT';
      answer = { target, outcome: timeout ? 'timeout' : 'error', ms: Date.now() - start, problem: timeout ? `no STATUS reply within ${this.timings.timeoutMs} ms` : (err as Error).message };
    }
    if (answer.outcome === 'ok') this.backoff.delete(target.key);
    else {
      const misses = (b?.misses ?? 0) + 1;
      this.backoff.set(target.key, { misses, nextAt: now + Math.min(this.timings.intervalMs * 2 ** (misses - 1), this.timings.maxBackoffMs) - this.timings.intervalMs / 2 });
    }
    return answer;
  }

  /** Logs a process's change of state (not every round). */
  private report(a: Answer): void {
    if (a.outcome === 'skipped') return;
    const state = a.outcome === 'ok' ? 'up' : 'not answering';
    const before = this.reported.get(a.target.key);
    if (before === state) return;
    this.reported.set(a.target.key, state);
    if (state === 'up') this.log.info({ target: a.target.key, mtype: a.target.mtype }, 'process answers STATUS');
    else if (before !== undefined || a.outcome === 'timeout') this.log.warn({ target: a.target.key, mtype: a.target.mtype, problem: a.problem }, 'process does not answer STATUS');
  }

  /** Opens (or keeps) the queue by key; figures of the round. */
  private openQueue(): QueueFigures {
    const key = hexKey(this.config.mqKey);
    let queue: SysvQueue;
    try {
      queue = SysvQueue.open({ key: this.config.mqKey, create: false, trustedUids: this.config.mqTrustedUids });
    } catch (err) {
      this.drop();
      if (err instanceof QueueTrustError) return this.queueState({ state: 'refused', key, problem: err.message }, err);
      const code = err instanceof IpcError ? err.code : undefined;
      if (code === 'ENOENT') return this.queueState({ state: 'missing', key, problem: `no queue for MQ_KEY ${key}: the cluster is not running` }, undefined);
      return this.queueState({ state: 'error', key, problem: (err as Error).message }, err);
    }
    try {
      if (this.link && (this.link.queue?.id !== queue.id || this.receiverEnded)) this.drop();
      if (!this.link && !this.overNats) {
        this.link = openLink(queue, this.me, this.config.mqBatchBytes, this.log);
        this.watch(this.link);
      }
      const s = queue.stat();
      const f = queueFill(s);
      return this.queueState({ state: 'ok', key, id: queue.id, messages: s.messages, bytes: s.bytes, capacity: s.capacity, fill: f.fill }, undefined);
    } catch (err) {
      // Removed between msgget and msgctl, or a receiver thread that could not start.
      this.drop();
      return this.queueState({ state: 'error', key, problem: (err as Error).message }, err);
    }
  }

  private queueState(q: QueueFigures, err: unknown): QueueFigures {
    if (q.state !== this.lastQueueState) {
      this.lastQueueState = q.state;
      if (q.state === 'ok') this.log.info({ key: q.key, queueId: q.id }, 'queue open');
      else if (q.state === 'refused') this.log.error({ key: q.key, code: (err as QueueTrustError).code }, `queue refused, not used: ${q.problem}`);
      else this.log.warn({ key: q.key, err }, `queue ${q.state}: ${q.problem}`);
    }
    return q;
  }

  /** Forgets the current link (queue gone or replaced); its receiver is closed in the background. */
  private drop(): void {
    const link = this.link;
    this.link = undefined;
    this.receiverEnded = false;
    this.gcLive = [];
    if (!link) return;
    void closeLink(link).catch((err: unknown) => this.log.warn({ err }, 'closing the old queue link failed'));
  }

  /** Marks the link for replacement when its receiver ends by itself (the queue was removed). */
  private watch(link: Link): void {
    void link.endpoint.receiver?.ended.then((end) => {
      if (end.reason !== 'closed' && this.link === link) this.receiverEnded = true;
    });
  }
}

function openLink(queue: SysvQueue, mtype: number, maxBatchBytes: number, log: Logger): Link {
  // A small backlog: a status tool must not hold much when the queue is full.
  const transport = new SysvTransport(queue, { ...defaultSysvTransportOptions, backlogMessages: 1000, backlogBytes: 1 << 20, onSendError: (err) => log.debug({ err }, 'queued STATUS send failed') });
  const endpoint = new Endpoint(transport, { mtype, incarnation: newIncarnation(), maxBatchBytes });
  endpoint.start(() => {
    /* the status app serves nothing on the queue: requests to it are ignored */
  });
  return { queue, transport, endpoint };
}

async function closeLink(link: Link): Promise<void> {
  await link.endpoint.close();
  await link.transport.close();
  // Late replies would stay in our mailbox: take them out (bounded; the queue may be gone).
  const queue = link.queue;
  if (!queue) return;
  try {
    for (let i = 0; i < 10_000 && queue.tryReceive(link.endpoint.mtype); i++) {
      /* discard */
    }
  } catch {
    /* removed meanwhile */
  }
}
