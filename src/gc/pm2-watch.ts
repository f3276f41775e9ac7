import { chatdMtype, shardMtype } from '../ipc/mtypes';
import type { Logger } from '../log';
import type { SupervisorEvent } from './membership';
import { connectPm2, pm2Home, type Pm2Client } from '../runtime/pm2-client';

/** PM2 app names (PROTOCOL.md: chatd, channeld, gc). */
export const APP_NAMES = Object.freeze({ chatd: 'chatd', channeld: 'channeld', gc: 'gc' } as const);

/** Whether this process was started by PM2 (PM2 puts pm_id in its children's environment). */
export function underPm2(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.pm_id !== undefined;
}

/** The mtype of a PM2 app instance (name + NODE_APP_INSTANCE), or undefined for apps we do not track. */
export function mtypeForApp(name: unknown, instance: unknown): number | undefined {
  const i = typeof instance === 'number' ? instance : typeof instance === 'string' && /^\d+$/.test(instance) ? Number(instance) : 0;
  try {
    if (name === APP_NAMES.channeld) return shardMtype(i);
    if (name === APP_NAMES.chatd) return chatdMtype(i);
  } catch {
    return undefined;
  }
  return undefined;
}

/** What the PM2 bus says on 'process:event' (the fields we read). */
interface Pm2ProcessEvent {
  event?: unknown;
  at?: unknown;
  process?: { name?: unknown; NODE_APP_INSTANCE?: unknown; pid?: unknown; pm_id?: unknown };
}

/** Turns a PM2 bus packet into a supervisor event, or undefined when it is not an exit/stop of a tracked app. */
export function toSupervisorEvent(packet: unknown): SupervisorEvent | undefined {
  const p = packet as Pm2ProcessEvent | null;
  if (!p || typeof p !== 'object') return undefined;
  if (p.event !== 'exit' && p.event !== 'stop') return undefined;
  const mtype = mtypeForApp(p.process?.name, p.process?.NODE_APP_INSTANCE);
  if (mtype === undefined) return undefined;
  const pid = typeof p.process?.pid === 'number' && p.process.pid > 0 ? p.process.pid : undefined;
  const at = typeof p.at === 'number' ? p.at : undefined;
  return { event: p.event, mtype, ...(pid !== undefined ? { pid } : {}), ...(at !== undefined ? { at } : {}) };
}

export type Pm2WatchState = 'watching' | 'absent' | 'failed' | 'stopped';

/**
 * After a shard's exit, when PM2's process list is read to see whether the instance is gone
 * for good (deleted by `pm2 scale` down or `pm2 delete`: PM2 drops it from its list just after
 * the exit event) or is being restarted (it stays listed, same pm_id).
 */
export const DEPARTURE_CHECKS_MS: readonly number[] = [200, 600, 1500];

/**
 * Whether a PM2 list says the channeld instance is gone for good: not listed at all. A stopped
 * or restarting process is still listed and is not gone (`pm2 stop` may be followed by a start;
 * a stopped shard leaves the membership after SHARD_GONE_MS like a crashed one).
 */
export function shardDeparted(list: readonly { name: string; instance: number | undefined }[], instance: number): boolean {
  return !list.some((p) => p.name === APP_NAMES.channeld && (p.instance ?? 0) === instance);
}

/**
 * Learns deaths from PM2's event bus when the collector runs under PM2. Without PM2 (or when
 * connecting fails) it says so once at info and does nothing: the pid check and heartbeat
 * silence still find every death, only a little later.
 */
export class Pm2Watch {
  state: Pm2WatchState | 'idle' = 'idle';
  private client: Pm2Client | undefined;

  /** Shard instances whose departure check runs now. */
  private readonly checking = new Set<number>();

  constructor(
    private readonly log: Logger,
    private readonly onEvent: (ev: SupervisorEvent) => void,
    private readonly env: NodeJS.ProcessEnv = process.env,
    /** A shard instance PM2 no longer lists after its exit: gone for good (docs/resharding.md). */
    private readonly onDeparted?: (instance: number) => void,
  ) {}

  async start(): Promise<Pm2WatchState> {
    const home = pm2Home(this.env);
    if (!underPm2(this.env)) return this.settle('absent', { pm2Home: home }, 'not started by PM2: deaths from pid checks and heartbeats only');
    try {
      const client = await connectPm2(home);
      if (!client) return this.settle('absent', { pm2Home: home }, 'PM2 daemon not reachable: deaths from pid checks and heartbeats only');
      this.client = client;
      const bus = await client.launchBus();
      if (this.state === 'stopped') {
        this.disconnect();
        return 'stopped';
      }
      bus.on('process:event', (packet) => {
        const ev = toSupervisorEvent(packet);
        if (!ev) return;
        try {
          this.onEvent(ev);
        } catch (err) {
          this.log.error({ err }, 'PM2 event handler failed');
        }
        const p = (packet as Pm2ProcessEvent).process;
        if (this.onDeparted && p?.name === APP_NAMES.channeld) void this.checkDeparture(Number(p.NODE_APP_INSTANCE ?? 0));
      });
      return this.settle('watching', { pm2Home: home }, 'watching PM2 process events');
    } catch (err) {
      this.disconnect();
      return this.settle('failed', { pm2Home: home, err }, 'PM2 connect failed: deaths from pid checks and heartbeats only');
    }
  }

  /** Reads PM2's list a few times after a shard's exit; reports the instance if PM2 dropped it. */
  private async checkDeparture(instance: number): Promise<void> {
    if (!Number.isInteger(instance) || instance < 0 || this.checking.has(instance)) return;
    this.checking.add(instance);
    try {
      let waited = 0;
      for (const at of DEPARTURE_CHECKS_MS) {
        await new Promise((r) => setTimeout(r, at - waited).unref());
        waited = at;
        const client = this.client;
        if (!client || this.state === 'stopped') return;
        if (shardDeparted(await client.list(), instance)) {
          this.log.info({ shard: instance, afterMs: at }, 'shard deleted from PM2: it leaves the membership now');
          this.onDeparted?.(instance);
          return;
        }
      }
    } catch (err) {
      this.log.warn({ err, shard: instance }, 'PM2 list failed: a deleted shard leaves the membership after SHARD_GONE_MS');
    } finally {
      this.checking.delete(instance);
    }
  }

  async stop(): Promise<void> {
    this.state = 'stopped';
    this.disconnect();
  }

  private disconnect(): void {
    const c = this.client;
    this.client = undefined;
    c?.disconnect();
  }

  private settle(state: Pm2WatchState, fields: Record<string, unknown>, msg: string): Pm2WatchState {
    if (this.state === 'stopped') {
      this.disconnect();
      return 'stopped';
    }
    this.state = state;
    this.log.info(fields, msg);
    return state;
  }
}
