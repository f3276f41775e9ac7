import { expect } from 'chai';
import { Kind, Status } from '../../../src/cluster/kinds';
import { EMPTY, decodePayload } from '../../../src/cluster/messages';
import { firstEpochOwner } from '../../../src/cluster/ownership';
import { Endpoint } from '../../../src/ipc/endpoint';
import { LocalTransport } from '../../../src/ipc/local/local-transport';
import { chatdMtype, shardMtype } from '../../../src/ipc/mtypes';
import type { ProcessMetrics } from '../../../src/runtime/metrics';
import { ChatClient, loggedIn } from '../../helpers/chat-client';
import { startLocalChatd, type LocalChatd } from '../../helpers/local-chatd';

type StatusWithMetrics = Record<string, unknown> & { metrics: ProcessMetrics };

/**
 * The `metrics` object of every STATUS reply (docs/operations.md, "Metrics"): the contract the
 * status page reads, asked for over the queue as an operator tool would.
 */
describe('runtime - STATUS metrics of chatD and the shards (local transport)', () => {
  let lc: LocalChatd;
  let tool: Endpoint;
  const clients: ChatClient[] = [];

  before(async () => {
    lc = await startLocalChatd({ CHATD_RATE_BURST: '20', CHATD_RATE_PER_SEC: '1' });
    tool = new Endpoint(new LocalTransport(lc.queue), { mtype: 777_001, incarnation: 5, maxBatchBytes: 4096 });
    tool.start(() => {});
  });
  after(async () => {
    for (const c of clients) await c.destroy();
    await tool.close();
    await lc.stop();
  });

  async function status(mtype: number): Promise<StatusWithMetrics> {
    const r = await tool.request(mtype, Kind.STATUS, EMPTY, 2000);
    expect(r.status).to.equal(Status.OK);
    return decodePayload('status', r.payload) as StatusWithMetrics;
  }

  it('chatD: counters, gauges, latency and sessions per channel follow what clients did', async () => {
    const before = await status(chatdMtype(0));
    expect(before).to.include({ role: 'chatd', pid: process.pid });
    expect(before.uptimeS).to.be.a('number');
    const m0 = before.metrics;
    for (const k of ['requests', 'finds', 'timeouts', 'rateLimited', 'errors']) expect(m0.counters[k], k).to.be.a('number');
    for (const k of ['sessions', 'connections', 'inFlight']) expect(m0.gauges[k], k).to.be.a('number');

    clients.push(await loggedIn(lc.port, 'Metric_A', 3));
    clients.push(await loggedIn(lc.port, 'Metric_B', 3));
    clients.push(await loggedIn(lc.port, 'Metric_C', 7));
    const a = clients[0]!;
    const finds = await Promise.all(Array.from({ length: 10 }, (_, i) => a.request({ op: 'find', name: i % 2 ? 'metric_b' : 'nobody' })));
    expect(finds.every((f) => f.ok === true)).to.equal(true);
    const bad = await a.request({ op: 'move', channel: 0 });
    expect(bad.ok).to.equal(false);

    const m = (await status(chatdMtype(0))).metrics;
    expect(m.counters.finds! - m0.counters.finds!).to.equal(10);
    expect(m.counters.requests! - m0.counters.requests!).to.be.at.least(3 + 10 + 1);
    expect(m.counters.errors! - m0.counters.errors!).to.equal(1);
    expect(m.gauges.sessions).to.equal(3);
    expect(m.gauges.connections).to.equal(3);
    expect(m.gauges.inFlight).to.equal(0);
    expect(m.sessionsPerChannel).to.deep.equal({ 3: 2, 7: 1 });
    expect(m.latency!.count).to.be.at.least(3 + 10);
    expect(m.latency!.p50Ms).to.be.above(0);
    expect(m.latency!.p99Ms).to.be.at.least(m.latency!.p50Ms);
    // ms, not µs or s: a local find takes well under 1 s and more than 1 µs.
    expect(m.latency!.p99Ms).to.be.below(1000);
    // Rates since the previous read (the first read of a rate gives 0).
    expect(m0.rates).to.have.keys(['requests', 'finds']);
    expect(m.rates!.finds).to.be.above(0);
    expect(m.rates!.requests).to.be.at.least(m.rates!.finds!);
  });

  it('chatD: rate-limited requests are counted as such and as errors', async () => {
    const c = await loggedIn(lc.port, 'Metric_R', 1);
    clients.push(c);
    const m0 = (await status(chatdMtype(0))).metrics;
    const replies = await Promise.all(Array.from({ length: 40 }, () => c.request({ op: 'ping' })));
    const limited = replies.filter((r) => r.ok === false && (r.error as { code?: string }).code === 'RATE_LIMITED').length;
    expect(limited).to.be.above(0);
    const m = (await status(chatdMtype(0))).metrics;
    expect(m.counters.rateLimited! - m0.counters.rateLimited!).to.equal(limited);
    expect(m.counters.errors! - m0.counters.errors!).to.equal(limited);
  });

  it('each shard: requests, finds, logins and entries (finds counted on the shard that owns the name)', async () => {
    const shards = lc.config.shards;
    const ms = await Promise.all(Array.from({ length: shards }, (_, i) => status(shardMtype(i))));
    ms.forEach((s, i) => {
      expect(s).to.include({ role: 'channeld', shard: i, pid: process.pid });
      expect(s.uptimeS).to.be.a('number');
      for (const k of ['requests', 'finds', 'logins', 'logouts']) expect(s.metrics.counters[k], `${i} ${k}`).to.be.a('number');
      expect(s.metrics.gauges.entries).to.be.a('number');
      expect(s.metrics.rates).to.have.keys(['requests', 'finds']);
    });
    const names = ['Metric_A', 'Metric_B', 'Metric_C', 'Metric_R'];
    for (let i = 0; i < shards; i++) {
      const mine = names.filter((n) => firstEpochOwner(n, shards) === i).length;
      expect(ms[i]!.metrics.gauges.entries, `shard ${i} entries`).to.equal(mine);
      expect(ms[i]!.metrics.counters.logins, `shard ${i} logins`).to.equal(mine);
      expect(ms[i]!.metrics.counters.requests).to.be.at.least(ms[i]!.metrics.counters.finds! + mine);
    }
    const totalFinds = ms.reduce((n, s) => n + s.metrics.counters.finds!, 0);
    expect(totalFinds).to.be.at.least(10);
  });
});
