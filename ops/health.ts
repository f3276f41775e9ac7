import { Kind, Status } from '../src/cluster/kinds';
import { EMPTY, decodePayload } from '../src/cluster/messages';
import type { Config } from '../src/config';
import { Endpoint, RequestError } from '../src/ipc/endpoint';
import { newIncarnation } from '../src/ipc/envelope';
import { MTYPE_GC, chatdMtype, shardMtype, toolMtype } from '../src/ipc/mtypes';
import { queueFill } from '../src/ipc/queue-fill';
import type { SysvQueue } from '../src/ipc/sysv/sysv-queue';
import { SysvTransport, defaultSysvTransportOptions } from '../src/ipc/sysv/sysv-transport';
import { NatsTransport } from '../src/ipc/nats/nats-transport';
import type { MessageTransport } from '../src/ipc/transport';
import { connectPm2, pm2Home } from '../src/runtime/pm2-client';
import { APP_NAMES } from '../src/gc/pm2-watch';
import { EXIT, ToolError, hexKey, openExisting, runTool, toolConfig } from './tool-common';

const USAGE = `usage: npm run health [-- --pm2] [--json] [--timeout MS]
  exits 0 when healthy; otherwise 1 with one line per problem:
  queue missing, refused (untrusted owner or mode) or over 90% full (by bytes or by message count); gc, a shard (a member of gc's membership epoch) or chatD not answering STATUS;
  a process whose clock gc reports more than its threshold (250 ms) off its own (docs/multi-host.md "Clock skew")
  --pm2      also check with the project's pm2 that every app process is online
  --json     one JSON object instead of lines
  --timeout  how long to wait for each STATUS reply (default 1000 ms)`;

/** Above this fill ratio the queue is a problem: senders are about to back up. */
export const FULL_RATIO = 0.9;

interface Args {
  pm2: boolean;
  json: boolean;
  timeoutMs: number;
}

export function parseArgs(argv: readonly string[]): Args {
  const args: Args = { pm2: false, json: false, timeoutMs: 1000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--pm2') args.pm2 = true;
    else if (a === '--json') args.json = true;
    else if (a === '--timeout') {
      const v = argv[++i];
      if (v === undefined || !/^\d{1,6}$/.test(v) || Number(v) < 10) throw new ToolError(`--timeout needs milliseconds (10 or more)\n${USAGE}`, EXIT.USAGE);
      args.timeoutMs = Number(v);
    } else throw new ToolError(`${a === '-h' || a === '--help' ? '' : `unexpected argument ${a}\n`}${USAGE}`, EXIT.USAGE);
  }
  return args;
}

interface Target {
  readonly label: string;
  readonly mtype: number;
}

/** A shard target. */
const shardTarget = (i: number): Target => ({ label: `channeld shard ${i}`, mtype: shardMtype(i) });

/**
 * Who must answer STATUS besides the collector: the shards of the collector's current
 * membership epoch (shards come and go with `pm2 scale`, docs/resharding.md), or, when the
 * collector named none (not answering, no epoch yet), shards 0..CHANNELD_SHARDS-1; and chatD.
 */
export function targets(config: Pick<Config, 'shards'>, members?: readonly number[]): Target[] {
  const shards = members && members.length > 0 ? [...members].sort((a, b) => a - b) : Array.from({ length: config.shards }, (_, i) => i);
  return [...shards.map(shardTarget), { label: 'chatd', mtype: chatdMtype(0) }];
}

/** A shard host's own shards (HOST_ROLE=shards, docs/multi-host.md): SHARD_BASE onwards. */
export function hostShardTargets(config: Pick<Config, 'shards' | 'shardBase'>): Target[] {
  return Array.from({ length: config.shards }, (_, i) => shardTarget(config.shardBase + i));
}

/** The members of the collector's current epoch in its STATUS, when it names them. */
export function epochMembers(gcStatus: Record<string, unknown> | undefined): number[] | undefined {
  const epoch = gcStatus?.epoch;
  if (typeof epoch !== 'object' || epoch === null) return undefined;
  const members = (epoch as { members?: unknown }).members;
  if (!Array.isArray(members) || members.length === 0) return undefined;
  return members.every((m) => Number.isInteger(m) && m >= 0 && m < 900) ? (members as number[]) : undefined;
}

interface Answer {
  label: string;
  mtype: number;
  ok: boolean;
  ms: number;
  status?: Record<string, unknown>;
  problem?: string;
}

/**
 * Asks every daemon for STATUS over the cluster's transport: the host's queue, or NATS
 * (TRANSPORT=nats; then `queue` is undefined and nothing is left in a mailbox to drain).
 */
async function askStatus(queue: SysvQueue | undefined, config: Config, timeoutMs: number): Promise<Answer[]> {
  let transport: MessageTransport;
  if (config.transport === 'nats') {
    try {
      transport = await NatsTransport.connect({ url: config.natsUrls.join(','), cluster: config.clusterName, name: `chatd-cluster health ${process.pid}`, connectTimeoutMs: Math.max(1000, timeoutMs) });
    } catch (err) {
      return [{ label: 'nats', mtype: 0, ok: false, ms: 0, problem: `nats: cannot connect to ${config.natsUrls.join(',')}: ${(err as Error).message}` }];
    }
  } else {
    transport = new SysvTransport(queue!, { ...defaultSysvTransportOptions, backlogMessages: 1000, backlogBytes: 1 << 20 });
  }
  const me = toolMtype();
  const endpoint = new Endpoint(transport, { mtype: me, incarnation: newIncarnation(), maxBatchBytes: config.mqBatchBytes });
  await endpoint.start(() => {}).ready;
  const ask = async (t: Target): Promise<Answer> => {
    const start = Date.now();
    try {
      const r = await endpoint.request(t.mtype, Kind.STATUS, EMPTY, timeoutMs);
      const ms = Date.now() - start;
      if (r.status !== Status.OK) return { ...t, ok: false, ms, problem: `${t.label} (mtype ${t.mtype}) answered STATUS with status ${r.status}` };
      return { ...t, ok: true, ms, status: decodePayload('status', r.payload) ?? {} };
    } catch (err) {
      const why = err instanceof RequestError && err.code === 'TIMEOUT' ? `did not answer STATUS within ${timeoutMs} ms` : `could not be asked: ${(err as Error).message}`;
      return { ...t, ok: false, ms: Date.now() - start, problem: `${t.label} (mtype ${t.mtype}) ${why}` };
    }
  };
  try {
    // A shard host answers for its own shards only: the collector and chatD run elsewhere.
    if (config.hostRole === 'shards') return await Promise.all(hostShardTargets(config).map(ask));
    // The collector first: its membership epoch names the shards that must answer.
    const gc = await ask({ label: 'gc', mtype: MTYPE_GC });
    return [gc, ...(await Promise.all(targets(config, epochMembers(gc.status)).map(ask)))];
  } finally {
    await endpoint.close();
    await transport.close();
    // Late replies would stay in our mailbox for good: take them out.
    try {
      while (queue && config.transport === 'sysv' && queue.tryReceive(me)) {
        /* discard */
      }
    } catch {
      /* the queue went away meanwhile */
    }
  }
}

/**
 * Problems seen through PM2: no daemon, missing apps, processes not online. The apps are those
 * of this host's HOST_ROLE (docs/multi-host.md): a front host runs no shard, a shard host only shards.
 */
async function pm2Problems(shards: number, role: Config['hostRole'] = 'all'): Promise<string[]> {
  const home = pm2Home();
  let client;
  try {
    client = await connectPm2(home);
  } catch (err) {
    return [`pm2: cannot talk to the PM2 daemon at ${home}: ${(err as Error).message}`];
  }
  if (!client) return [`pm2: no PM2 daemon running at ${home} (PM2_HOME)`];
  try {
    const list = await client.list();
    const problems: string[] = [];
    const expected = ([[APP_NAMES.chatd, 1], [APP_NAMES.channeld, shards], [APP_NAMES.gc, 1]] as [string, number][]).filter(
      ([name]) => (name === APP_NAMES.channeld ? role !== 'front' : role !== 'shards'),
    );
    for (const [name, count] of expected) {
      const procs = list.filter((p) => p.name === name);
      if (procs.length === 0) problems.push(`pm2: no ${name} app`);
      else if (procs.length < count) problems.push(`pm2: ${procs.length} ${name} process(es), expected ${count}`);
      for (const p of procs) {
        if (p.status !== 'online') problems.push(`pm2: ${name}${p.instance !== undefined ? ` instance ${p.instance}` : ''} (pm_id ${p.pmId}) is ${p.status}`);
      }
    }
    return problems;
  } catch (err) {
    return [`pm2: list failed: ${(err as Error).message}`];
  } finally {
    client.disconnect();
  }
}

/**
 * Processes whose clock the collector reports as skewed (STATUS `processes[].clock.skewed`,
 * docs/multi-host.md "Clock skew"): one problem each. A collector of an earlier version
 * reports no clocks: none.
 */
export function clockProblems(gcStatus: Record<string, unknown> | undefined): string[] {
  const procs = gcStatus?.processes;
  if (!Array.isArray(procs)) return [];
  const threshold = typeof gcStatus?.clockWarnMs === 'number' ? gcStatus.clockWarnMs : 250;
  const out: string[] = [];
  for (const p of procs as { role?: unknown; index?: unknown; host?: unknown; clock?: { offset?: unknown; bound?: unknown; applied?: unknown; skewed?: unknown } }[]) {
    const c = p.clock;
    if (!c || c.skewed !== true || typeof c.offset !== 'number') continue;
    const ahead = c.offset < 0 ? 'ahead of' : 'behind';
    out.push(
      `clock: ${String(p.role)} ${String(p.index)} on host ${String(p.host) || '(gc\'s)'} is ${Math.abs(c.offset)} ms ${ahead} gc's clock (±${String(c.bound)} ms; threshold ${threshold} ms); ` +
        (c.applied === true ? 'its deadlines are corrected, fix the host\'s time (NTP)' : 'its deadlines are NOT corrected (CLOCK_CORRECTION=off): fix the host\'s time (NTP)'),
    );
  }
  return out;
}

async function main(argv: readonly string[]): Promise<number> {
  const args = parseArgs(argv);
  const config = toolConfig();
  const problems: string[] = [];
  let queueInfo: Record<string, unknown> | undefined;
  let answers: Answer[] = [];
  let queue: SysvQueue | undefined;
  // A shard host (HOST_ROLE=shards) talks over NATS only: it has no host queue to check.
  if (config.hostRole !== 'shards') {
    try {
      queue = openExisting(config);
    } catch (err) {
      if (!(err instanceof ToolError)) throw err;
      problems.push(err.message.startsWith('refusing queue') ? `queue refused: ${err.message}` : `queue missing: ${err.message}`);
    }
  }
  if (queue) {
    const s = queue.stat();
    // Full by bytes or by message count (Linux admits at most msg_qbytes messages, empty ones too).
    const f = queueFill(s);
    const fill = f.fill;
    queueInfo = { key: hexKey(config.mqKey), id: queue.id, messages: s.messages, bytes: s.bytes, capacity: s.capacity, maxMessages: f.maxMessages, fill, limitedBy: f.limitedBy };
    if (fill > FULL_RATIO) {
      problems.push(
        f.limitedBy === 'messages'
          ? `queue ${(fill * 100).toFixed(1)}% full by message count (${s.messages} of ${f.maxMessages} messages, ${s.bytes} bytes): see ops/README.md`
          : `queue ${(fill * 100).toFixed(1)}% full (${s.bytes} of ${s.capacity} bytes, ${s.messages} messages): see ops/README.md`,
      );
    }
  }
  if (queue || config.transport === 'nats') {
    answers = await askStatus(queue, config, args.timeoutMs);
    for (const a of answers) if (a.problem) problems.push(a.problem);
    problems.push(...clockProblems(answers.find((a) => a.label === 'gc')?.status));
  }
  const shardsAsked = answers.filter((a) => a.label.startsWith('channeld')).length || config.shards;
  if (args.pm2) problems.push(...(await pm2Problems(config.hostRole === 'shards' ? config.shards : shardsAsked, config.hostRole)));
  const healthy = problems.length === 0;
  if (args.json) {
    process.stdout.write(
      `${JSON.stringify({ healthy, problems, queue: queueInfo, answered: answers.map((a) => ({ label: a.label, mtype: a.mtype, ok: a.ok, ms: a.ms })) })}\n`,
    );
  } else if (healthy) {
    const slowest = Math.max(0, ...answers.map((a) => a.ms));
    const fill = ((queueInfo?.fill as number) * 100).toFixed(1);
    const who = config.hostRole === 'shards' ? `this host's ${config.shards} shard(s) (from ${config.shardBase})` : `gc, ${shardsAsked} shard(s) and chatd`;
    const q = queueInfo ? `queue ${hexKey(config.mqKey)} ${fill}% full; ` : '';
    process.stdout.write(`healthy: ${q}${who} answered STATUS (slowest ${slowest} ms)${args.pm2 ? '; pm2 apps online' : ''}\n`);
  } else {
    process.stdout.write(problems.map((p) => `unhealthy: ${p}\n`).join(''));
  }
  return healthy ? EXIT.OK : EXIT.PROBLEM;
}

if (require.main === module) runTool('health', () => main(process.argv.slice(2)), { hardExit: true });
