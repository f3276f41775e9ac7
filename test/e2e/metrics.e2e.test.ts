import { expect } from 'chai';
import type { ChatClient } from '../helpers/chat-client';
import { namesOnShard, sleep, useCluster, type Cluster } from '../helpers/cluster';

/**
 * Issue 8, item 5, end to end under real PM2: every process's figures reach `pm2 jlist`
 * (pm2_env.axm_monitor) and `pm2 show`, and the `pm2 trigger` actions answer
 * (docs/operations.md, "Metrics and actions").
 */

type Monitor = Record<string, { value: unknown; unit?: string }>;
interface Listed {
  name: string;
  instance: number;
  monitor: Monitor;
  actions: string[];
}

/** `pm2 jlist` with each process's figures and action names. */
async function figures(c: Cluster): Promise<Listed[]> {
  const r = await c.pm2(['jlist']);
  expect(r.code, r.stderr).to.equal(0);
  const raw = JSON.parse(r.stdout.slice(r.stdout.search(/^\[/m))) as {
    name: string;
    pm2_env: { NODE_APP_INSTANCE?: number | string; axm_monitor?: Monitor; axm_actions?: { action_name: string }[] };
  }[];
  return raw.map((p) => ({
    name: p.name,
    instance: Number(p.pm2_env.NODE_APP_INSTANCE ?? 0) || 0,
    monitor: p.pm2_env.axm_monitor ?? {},
    actions: (p.pm2_env.axm_actions ?? []).map((a) => a.action_name),
  }));
}

const num = (m: Monitor, name: string): number => {
  const v = m[name]?.value;
  return typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : Number.NaN;
};

/** Polls jlist until `ok` holds for it (figures are sent once a second). */
async function waitFigures(c: Cluster, ok: (list: Listed[]) => boolean, what: string, timeoutMs = 10_000): Promise<Listed[]> {
  const deadline = Date.now() + timeoutMs;
  let list = await figures(c);
  while (!ok(list)) {
    if (Date.now() > deadline) throw new Error(`figures: ${what} not seen in ${timeoutMs} ms: ${JSON.stringify(list.map((p) => [p.name, p.instance, p.monitor]))}`);
    await sleep(250);
    list = await figures(c);
  }
  return list;
}

/** `pm2 trigger app action`: each answering process's JSON, by "name:pm_id". */
async function trigger(c: Cluster, app: string, action: string): Promise<Map<string, Record<string, unknown>>> {
  const r = await c.pm2(['trigger', app, action], 20_000);
  expect(r.code, `${app} ${action}: ${r.stdout}\n${r.stderr}`).to.equal(0);
  const out = new Map<string, Record<string, unknown>>();
  for (const line of r.stdout.split('\n')) {
    const m = /^\[([^:\]]+):(\d+):[^\]]*\]=(.*)$/.exec(line.trim());
    if (m) out.set(`${m[1]}:${m[2]}`, JSON.parse(m[3]!) as Record<string, unknown>);
  }
  return out;
}

describe('e2e: metrics and actions in PM2', function () {
  this.timeout(90_000);
  const cluster = useCluster({ label: 'metrics', shards: 2 });
  const clients: ChatClient[] = [];
  let names: string[];

  before(async function () {
    this.timeout(30_000);
    const c = cluster();
    // Two characters on shard 0, one on shard 1, on channels 4 and 9.
    names = [...namesOnShard(0, 2, 'Gauge_', 2), ...namesOnShard(1, 2, 'Gauge_', 1)];
    clients.push(await c.login(names[0]!, 4), await c.login(names[1]!, 4), await c.login(names[2]!, 9));
    // 60 finds, pipelined, for names of both shards.
    const a = clients[0]!;
    const replies = await Promise.all(Array.from({ length: 60 }, (_, i) => a.request({ op: 'find', name: i % 2 ? names[2]! : names[1]! })));
    expect(replies.every((r) => r.ok === true)).to.equal(true);
    // One bad request (channel 0 does not exist): an error.
    expect((await a.request({ op: 'move', channel: 0 })).ok).to.equal(false);
  });

  it('pm2 jlist: chatD, every shard and gc carry their figures (axm_monitor)', async () => {
    const c = cluster();
    const list = await waitFigures(
      c,
      (l) => {
        const chatd = l.find((p) => p.name === 'chatd');
        const shards = l.filter((p) => p.name === 'channeld');
        return (
          !!chatd &&
          num(chatd.monitor, 'Sessions') === 3 &&
          num(chatd.monitor, 'Errors') >= 1 &&
          // The finds were within the last 10 s: the rates see them.
          num(chatd.monitor, 'Req/s') > 0 &&
          num(chatd.monitor, 'Finds/s') > 0 &&
          shards.length === 2 &&
          shards.reduce((n, s) => n + num(s.monitor, 'Finds'), 0) >= 60 &&
          shards.some((s) => num(s.monitor, 'Finds/s') > 0)
        );
      },
      'chatd sessions 3, chatd rates above 0 and 60 finds on the shards',
    );
    const chatd = list.find((p) => p.name === 'chatd')!.monitor;
    for (const k of ['Sessions', 'Connections', 'Req/s', 'Finds/s', 'Latency p50', 'Latency p99', 'In-flight requests', 'Timeouts', 'Rate-limited', 'Errors']) {
      expect(Number.isFinite(num(chatd, k)), `chatd ${k}: ${JSON.stringify(chatd[k])}`).to.equal(true);
    }
    expect(num(chatd, 'Connections')).to.equal(3);
    expect(num(chatd, 'Latency p50')).to.be.above(0);
    expect(num(chatd, 'Latency p99')).to.be.at.least(num(chatd, 'Latency p50'));
    expect(chatd['Latency p99']!.unit).to.equal('ms');
    expect(num(chatd, 'Timeouts')).to.equal(0);

    const shards = list.filter((p) => p.name === 'channeld').sort((x, y) => x.instance - y.instance);
    expect(shards.map((s) => num(s.monitor, 'Entries'))).to.deep.equal([2, 1]);
    for (const s of shards) {
      for (const k of ['Req/s', 'Finds/s', 'Finds', 'Logins', 'Logouts']) expect(Number.isFinite(num(s.monitor, k)), `shard ${s.instance} ${k}`).to.equal(true);
      expect(s.monitor.State!.value).to.equal('live');
      expect(s.actions).to.include.members(['status', 'dump-counts']);
    }
    // The harness's probe logged in and out once: one logout on the shard that holds its name.
    expect(shards.reduce((n, s) => n + num(s.monitor, 'Logouts'), 0)).to.be.at.least(1);

    const gc = list.find((p) => p.name === 'gc')!;
    for (const k of ['Processes', 'Session cleanups', 'Deaths seen', 'Purges', 'Queue messages', 'Queue bytes', 'Queue fill']) {
      expect(Number.isFinite(num(gc.monitor, k)), `gc ${k}: ${JSON.stringify(gc.monitor[k])}`).to.equal(true);
    }
    expect(num(gc.monitor, 'Processes')).to.equal(3); // chatD and two shards
    expect(num(gc.monitor, 'Session cleanups')).to.be.at.least(1); // the probe's logout
    expect(num(gc.monitor, 'Queue fill')).to.be.within(0, 100);
    expect(gc.actions).to.include.members(['status', 'queue-stat', 'purge-dead']);
    expect(list.find((p) => p.name === 'chatd')!.actions).to.include('status');
  });

  it('pm2 show chatd lists the figures with their units', async () => {
    const r = await cluster().pm2(['show', 'chatd']);
    expect(r.code).to.equal(0);
    const text = r.stdout.replace(/\x1b\[[0-9;]*m/g, '');
    for (const k of ['Sessions', 'Connections', 'Req/s', 'Latency p50', 'Latency p99', 'In-flight requests', 'Timeouts', 'Rate-limited']) expect(text).to.include(k);
    expect(text).to.match(/Latency p99\s*│\s*[\d.]+ ms/);
    expect(text).to.match(/Sessions\s*│\s*3\s/);
    for (const a of ['status']) expect(text).to.include(a);
  });

  it('pm2 trigger chatd status: the STATUS object with its metrics', async () => {
    const out = await trigger(cluster(), 'chatd', 'status');
    expect(out.size).to.equal(1);
    const s = [...out.values()][0]! as { role: string; pid: number; metrics: { counters: Record<string, number>; gauges: Record<string, number>; latency: { count: number }; sessionsPerChannel: Record<string, number> } };
    expect(s.role).to.equal('chatd');
    expect(s.pid).to.equal(await cluster().pid('chatd'));
    expect(s.metrics.gauges).to.include({ sessions: 3, connections: 3, inFlight: 0 });
    expect(s.metrics.sessionsPerChannel).to.deep.equal({ 4: 2, 9: 1 });
    expect(s.metrics.counters.finds).to.be.at.least(60);
    expect(s.metrics.counters.errors).to.be.at.least(1);
    expect(s.metrics.latency.count).to.be.a('number');
  });

  it('pm2 trigger channeld dump-counts: every shard answers with its entries per channel and owner', async () => {
    const out = await trigger(cluster(), 'channeld', 'dump-counts');
    expect(out.size).to.equal(2);
    const byShard = [...out.values()].sort((x, y) => (x.shard as number) - (y.shard as number)) as { shard: number; entries: number; perChannel: Record<string, number>; perOwner: Record<string, number> }[];
    expect(byShard.map((s) => s.entries)).to.deep.equal([2, 1]);
    expect(byShard[0]!.perChannel).to.deep.equal({ 4: 2 });
    expect(byShard[1]!.perChannel).to.deep.equal({ 9: 1 });
    for (const s of byShard) expect(Object.values(s.perOwner).reduce((a, b) => a + b, 0)).to.equal(s.entries);
  });

  it('pm2 trigger gc queue-stat and purge-dead answer; a killed chatD shows in Deaths seen and Purges', async () => {
    const c = cluster();
    const q = [...(await trigger(c, 'gc', 'queue-stat')).values()][0]! as { messages: number; capacity: number; fill: number; head: { peek: string } };
    expect(q.capacity).to.be.above(0);
    expect(q.messages).to.be.a('number');
    expect(q.fill).to.be.within(0, 1);
    expect(q.head.peek).to.be.a('string');

    const before = (await figures(c)).find((p) => p.name === 'gc')!.monitor;
    // A chatD death: the collector purges its entries on every shard (PM2 restarts it).
    const pid = await c.signal('chatd', 0, 'SIGKILL');
    const pd = [...(await trigger(c, 'gc', 'purge-dead')).values()][0]! as { settled: boolean; found: unknown[]; processes: number };
    expect(pd).to.have.keys(['found', 'drained', 'settled', 'cleanups', 'cleanupsInProgress', 'processes']);
    await c.waitRestarted('chatd', 0, pid);
    await waitFigures(
      c,
      (l) => {
        const g = l.find((p) => p.name === 'gc')?.monitor;
        return !!g && num(g, 'Deaths seen') >= num(before, 'Deaths seen') + 1 && num(g, 'Purges') >= num(before, 'Purges') + 1;
      },
      'a death and a purge counted by gc',
      15_000,
    );
    // The dead chatD's entries are gone from the shards.
    await waitFigures(c, (l) => l.filter((p) => p.name === 'channeld').every((s) => num(s.monitor, 'Entries') === 0), 'shards empty after the purge', 15_000);
  });
});
