import { expect } from 'chai';
import { request as httpRequest } from 'node:http';
import pino from 'pino';
import { ClusterView, type Answer, type Target } from '../../../src/status/cluster-view';
import { figuresOf } from '../../../src/status/process-figures';
import { PrometheusExport, metricName } from '../../../src/status/prometheus';
import { StatusServer } from '../../../src/status/status-server';
import { parsePrometheusText, sampleValue } from '../../helpers/prom-text';

const log = pino({ level: 'silent' });
const C0: Target = { key: 'chatd/0', role: 'chatd', index: 0, mtype: 1000 };
const S1: Target = { key: 'channeld/1', role: 'channeld', index: 1, mtype: 101 };
const GC: Target = { key: 'gc', role: 'gc', index: 0, mtype: 3 };

function chatd(requests: number): Answer {
  return {
    target: C0,
    outcome: 'ok',
    ms: 3,
    figures: figuresOf('chatd', {
      pid: 10,
      uptimeS: 7,
      metrics: { counters: { requests, finds: 4, rateLimited: 0 }, gauges: { sessions: 2, inFlight: 1 }, latency: { p50Ms: 2, p99Ms: 20, count: 9 }, sessionsPerChannel: { '3': 2 } },
    }),
  };
}
const shard: Answer = { target: S1, outcome: 'ok', ms: 1, figures: figuresOf('channeld', { metrics: { counters: { requests: 5, logins: 2 }, gauges: { entries: 2 } } }) };
const gcDown: Answer = { target: GC, outcome: 'timeout', ms: 800, problem: 'no reply' };

function get(port: number, path: string, method = 'GET'): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('status - /metrics text', () => {
  it('metricName - camelCase to snake_case; refuses what Prometheus would not take', () => {
    expect(metricName('sessionCleanups')).to.equal('session_cleanups');
    expect(metricName('queueBytes')).to.equal('queue_bytes');
    expect(metricName('9lives')).to.equal(undefined);
  });

  it('parses as Prometheus text and carries the cluster series with role/shard labels', async () => {
    const view = new ClusterView();
    view.update({ at: 1000, queue: { state: 'ok', key: '0x1', messages: 4, bytes: 100, capacity: 1000, fill: 0.1 }, answers: [chatd(10), shard, gcDown] });
    const prom = new PrometheusExport(() => view.snapshot);
    const fams = parsePrometheusText(await prom.metrics());
    expect(fams.get('chatd_cluster_requests_total')?.type).to.equal('counter');
    expect(sampleValue(fams, 'chatd_cluster_requests_total', { role: 'chatd', shard: '' })).to.equal(10);
    expect(sampleValue(fams, 'chatd_cluster_requests_total', { role: 'channeld', shard: '1' })).to.equal(5);
    expect(sampleValue(fams, 'chatd_cluster_logins_total', { role: 'channeld', shard: '1' })).to.equal(2);
    expect(fams.get('chatd_cluster_sessions')?.type).to.equal('gauge');
    expect(sampleValue(fams, 'chatd_cluster_sessions', { role: 'chatd' })).to.equal(2);
    expect(sampleValue(fams, 'chatd_cluster_in_flight', { role: 'chatd' })).to.equal(1);
    expect(sampleValue(fams, 'chatd_cluster_up', { role: 'chatd' })).to.equal(1);
    expect(sampleValue(fams, 'chatd_cluster_up', { role: 'gc' })).to.equal(0);
    expect(sampleValue(fams, 'chatd_cluster_queue_messages')).to.equal(4);
    expect(sampleValue(fams, 'chatd_cluster_queue_fill_ratio')).to.equal(0.1);
    expect(sampleValue(fams, 'chatd_cluster_channel_sessions', { channel: '3' })).to.equal(2);
    expect(sampleValue(fams, 'chatd_cluster_request_latency_seconds', { role: 'chatd', quantile: '0.99' })).to.equal(0.02);
    expect(sampleValue(fams, 'chatd_cluster_processes_answering')).to.equal(2);
    expect(sampleValue(fams, 'chatd_status_process_cpu_user_seconds_total'), 'the status process\'s own figures').to.be.a('number');

    // The next round: chatD gone quiet. Its counter stays (no false reset), its gauges go, up is 0.
    view.update({ at: 2000, queue: { state: 'ok', key: '0x1', messages: 0, bytes: 0, capacity: 1000, fill: 0 }, answers: [{ target: C0, outcome: 'timeout' }, shard, gcDown] });
    const later = parsePrometheusText(await prom.metrics());
    expect(sampleValue(later, 'chatd_cluster_requests_total', { role: 'chatd' })).to.equal(10);
    expect(sampleValue(later, 'chatd_cluster_sessions', { role: 'chatd' })).to.equal(undefined);
    expect(sampleValue(later, 'chatd_cluster_up', { role: 'chatd' })).to.equal(0);
    expect(sampleValue(later, 'chatd_cluster_channel_sessions', { channel: '3' })).to.equal(undefined);
  });

  it('before the first round: valid text, no process samples (the app serves only after its first round anyway)', async () => {
    const prom = new PrometheusExport(() => undefined);
    const fams = parsePrometheusText(await prom.metrics());
    expect(fams.get('chatd_cluster_up')?.samples).to.deep.equal([]);
  });
});

describe('status - HTTP endpoint', () => {
  let server: StatusServer;
  let port: number;
  const view = new ClusterView();
  let lastRoundAt = 0;

  before(async () => {
    const prom = new PrometheusExport(() => view.snapshot);
    server = new StatusServer(
      { snapshot: () => view.snapshot, history: () => view.history, metrics: () => prom.metrics(), metricsContentType: prom.contentType, lastRoundAt: () => lastRoundAt },
      log,
      { staleAfterMs: 2000, maxEventClients: 2, keepAliveMs: 60_000 },
    );
    port = (await server.listen('127.0.0.1', 0)).port;
  });
  after(async () => {
    await server.close();
  });

  it('/healthz - 503 before the first round, then 200 with the cluster state; 503 again when rounds stop', async () => {
    expect((await get(port, '/healthz')).status).to.equal(503);
    view.update({ at: Date.now(), queue: { state: 'ok', key: '0x1', messages: 0, bytes: 0, capacity: 1, fill: 0 }, answers: [chatd(1), gcDown] });
    lastRoundAt = Date.now();
    const r = await get(port, '/healthz');
    expect(r.status).to.equal(200);
    expect(JSON.parse(r.body)).to.deep.include({ status: 'ok', cluster: 'degraded', queue: 'ok', answering: 1, asked: 2, notAnswering: ['gc'] });
    lastRoundAt = Date.now() - 10_000;
    expect((await get(port, '/healthz')).status).to.equal(503);
    lastRoundAt = Date.now();
  });

  it('/ - the self-contained page: inline script, a CSP that loads nothing from elsewhere', async () => {
    const r = await get(port, '/');
    expect(r.status).to.equal(200);
    expect(r.headers['content-type']).to.match(/^text\/html/);
    expect(r.headers['content-security-policy']).to.contain("default-src 'none'");
    expect(r.body).to.contain("new EventSource('/events')");
    expect(r.body, 'no external resource').not.to.match(/(src|href)\s*=\s*["']?(https?:)?\/\//i);
  });

  it('/metrics - Prometheus content type and text', async () => {
    const r = await get(port, '/metrics');
    expect(r.status).to.equal(200);
    expect(r.headers['content-type']).to.match(/^text\/plain; version=0\.0\.4/);
    expect(sampleValue(parsePrometheusText(r.body), 'chatd_cluster_requests_total', { role: 'chatd' })).to.equal(1);
  });

  it('/events - history first, then a snapshot per published round; capped clients get 503', async () => {
    const events: { event: string; data: unknown }[] = [];
    const req = httpRequest({ host: '127.0.0.1', port, path: '/events' });
    let buf = '';
    const got = new Promise<void>((resolve, reject) => {
      req.on('response', (res) => {
        expect(res.headers['content-type']).to.match(/^text\/event-stream/);
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          buf += d;
          let i: number;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const ev = /^event: (.*)$/m.exec(block)?.[1];
            const data = /^data: (.*)$/m.exec(block)?.[1];
            if (ev && data) events.push({ event: ev, data: JSON.parse(data) });
            if (events.length === 2) resolve();
          }
        });
      });
      req.on('error', reject);
    });
    req.end();
    while (server.eventClients < 1) await new Promise((r) => setTimeout(r, 10));
    const second = httpRequest({ host: '127.0.0.1', port, path: '/events' });
    second.end();
    while (server.eventClients < 2) await new Promise((r) => setTimeout(r, 10));
    expect((await get(port, '/events')).status, 'third page').to.equal(503);
    server.publish(view.update({ at: Date.now(), queue: { state: 'ok', key: '0x1', messages: 0, bytes: 0, capacity: 1, fill: 0 }, answers: [chatd(3)] }));
    await got;
    expect(events[0]!.event).to.equal('history');
    expect((events[0]!.data as { points: unknown[] }).points.length).to.be.greaterThan(0);
    expect(events[1]!.event).to.equal('snapshot');
    expect((events[1]!.data as { processes: { key: string }[] }).processes.map((p) => p.key)).to.deep.equal(['chatd/0']);
    req.destroy();
    second.destroy();
    const deadline = Date.now() + 2000;
    while (server.eventClients > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    expect(server.eventClients, 'closed pages are forgotten').to.equal(0);
  });

  it('other paths and methods - 404 and 405', async () => {
    expect((await get(port, '/nope')).status).to.equal(404);
    expect((await get(port, '/metrics', 'POST')).status).to.equal(405);
    expect((await get(port, '/healthz', 'HEAD')).body).to.equal('');
  });
});
