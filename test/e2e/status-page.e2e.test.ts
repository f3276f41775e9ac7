import { expect } from 'chai';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { PROJECT_ROOT, sleep, useCluster } from '../helpers/cluster';
import type { ChatClient } from '../helpers/chat-client';
import { parsePrometheusText, sampleValue } from '../helpers/prom-text';

/** Debian's chromium, installed by scripts/setup-test-deps.sh (npm test's pretest). */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** Where the screenshots go (git-ignored). */
export const ARTIFACTS = join(PROJECT_ROOT, 'test-artifacts');

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined | false>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (last: ${(last as Error).message})` : ''}`);
    await sleep(200);
  }
}

/** The page's process rows: key -> state. */
function rowStates(page: Page): Promise<Record<string, string>> {
  return page.$$eval('#processes tbody tr', (rows) => Object.fromEntries(rows.map((r) => [r.getAttribute('data-key') ?? '', r.getAttribute('data-state') ?? ''])));
}

/** The page's sessions-per-channel table: channel -> sessions. */
function channelRows(page: Page): Promise<Record<string, number>> {
  return page.$$eval('#channels tbody tr', (rows) => Object.fromEntries(rows.map((r) => [r.getAttribute('data-channel') ?? '', Number(r.children[1]?.textContent ?? 'NaN')])));
}

describe('e2e: status app - /metrics and the live status page in headless Chromium', function () {
  this.timeout(120_000);
  const cluster = useCluster({ label: 'status', shards: 2 });
  let browser: Browser | undefined;
  let page: Page | undefined;
  const players: ChatClient[] = [];

  before(async function () {
    this.timeout(60_000);
    // Never skipped: a machine without the browser fails here, saying how to get it.
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run scripts/setup-test-deps.sh (npm test runs it as pretest), or set CHROMIUM_PATH`);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  });
  after(async () => {
    await browser?.close();
  });

  it('the page lists every process as up, over the live feed', async () => {
    const p = page!;
    const errors: string[] = [];
    p.on('pageerror', (err) => errors.push(err.message));
    p.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    const response = await p.goto(`${cluster().statusUrl}/`);
    expect(response?.status()).to.equal(200);
    const states = await until('all four processes up on the page', 20_000, async () => {
      const s = await rowStates(p);
      return Object.keys(s).length === 4 && Object.values(s).every((v) => v === 'up') ? s : undefined;
    });
    expect(Object.keys(states)).to.deep.equal(['gc', 'channeld/0', 'channeld/1', 'chatd/0']);
    expect(await p.textContent('#feed')).to.equal('feed: live');
    expect(await p.getAttribute('#cluster', 'class')).to.contain('healthy');
    expect(errors, 'page errors').to.deep.equal([]);
  });

  it('characters logged in over TCP show up as sessions per channel', async () => {
    const p = page!;
    const logins: [string, number][] = [['Alice_st', 3], ['타락파워전사', 3], ['Bob_st', 3], ['Carol_st', 5]];
    for (const [name, channel] of logins) players.push(await cluster().login(name, channel));
    const channels = await until('channels 3 and 5 on the page', 15_000, async () => {
      const c = await channelRows(p);
      return c['3'] === 3 && c['5'] === 1 ? c : undefined;
    });
    expect(channels).to.deep.equal({ '3': 3, '5': 1 });
    expect(await p.textContent('#sessions')).to.equal('sessions: 4');
  });

  it('the req/s chart moves while finds flow; a screenshot goes to test-artifacts/', async () => {
    const p = page!;
    const rps = '#chart-rps';
    // Quiet first: the last req/s point is 0.
    await until('a quiet req/s point', 10_000, async () => (await p.getAttribute(rps, 'data-last'))?.split(',')[0] === '0');
    const quietImage = await p.$eval(rps, (c) => (c as unknown as { toDataURL(): string }).toDataURL());
    const quietPoints = Number(await p.getAttribute(rps, 'data-points'));
    let flowing = true;
    let sent = 0;
    const flow = (async () => {
      const asker = players[0]!;
      while (flowing) {
        const batch = await Promise.all(Array.from({ length: 20 }, (_, i) => asker.request({ op: 'find', name: players.length && i % 2 ? 'Carol_st' : '타락파워전사' })));
        sent += batch.length;
        expect(batch.every((r) => r.ok === true)).to.equal(true);
        await sleep(50);
      }
    })();
    try {
      const last = await until('req/s above 20 on the chart', 15_000, async () => {
        const v = (await p.getAttribute(rps, 'data-last'))?.split(',').map(Number);
        return v && v[0]! > 20 && v[1]! > 20 ? v : undefined;
      });
      console.log(`      (req/s chart: last point ${last[0]} req/s, ${last[1]} finds/s, after ${sent} finds)`);
    } finally {
      flowing = false;
      await flow;
    }
    expect(Number(await p.getAttribute(rps, 'data-points'))).to.be.greaterThan(quietPoints);
    expect(await p.$eval(rps, (c) => (c as unknown as { toDataURL(): string }).toDataURL()), 'the canvas was redrawn with the new points').not.to.equal(quietImage);
    const state = (await p.evaluate(() => (globalThis as unknown as { statusPage: { points: { reqPerSec: number | null }[] } }).statusPage.points.map((x) => x.reqPerSec))) as (number | null)[];
    expect(Math.max(...state.map((x) => x ?? 0))).to.be.greaterThan(20);
    // Latency and queue charts have points too.
    expect(Number(await p.getAttribute('#chart-queue', 'data-points'))).to.be.greaterThan(0);
    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = join(ARTIFACTS, 'status-page.png');
    await p.screenshot({ path: shot, fullPage: true });
    console.log(`      (screenshot: ${shot})`);
  });

  it('/metrics parses as Prometheus text and carries the cluster series', async () => {
    const r = await fetch(`${cluster().statusUrl}/metrics`);
    expect(r.status).to.equal(200);
    expect(r.headers.get('content-type')).to.match(/^text\/plain; version=0\.0\.4/);
    const fams = parsePrometheusText(await r.text());
    for (const [role, shard] of [['gc', ''], ['channeld', '0'], ['channeld', '1'], ['chatd', '']]) {
      expect(sampleValue(fams, 'chatd_cluster_up', { role: role!, shard: shard! }), `${role} ${shard} up`).to.equal(1);
    }
    expect(fams.get('chatd_cluster_requests_total')?.type).to.equal('counter');
    expect(sampleValue(fams, 'chatd_cluster_requests_total', { role: 'chatd' })).to.be.greaterThan(40);
    expect(sampleValue(fams, 'chatd_cluster_sessions', { role: 'chatd' })).to.equal(4);
    const entries = (sampleValue(fams, 'chatd_cluster_entries', { role: 'channeld', shard: '0' }) ?? NaN) + (sampleValue(fams, 'chatd_cluster_entries', { role: 'channeld', shard: '1' }) ?? NaN);
    expect(entries, 'directory entries over both shards').to.equal(4);
    expect(sampleValue(fams, 'chatd_cluster_channel_sessions', { channel: '3' })).to.equal(3);
    expect(sampleValue(fams, 'chatd_cluster_channel_sessions', { channel: '5' })).to.equal(1);
    expect(sampleValue(fams, 'chatd_cluster_queue_up')).to.equal(1);
    expect(sampleValue(fams, 'chatd_cluster_queue_capacity_bytes')).to.be.greaterThan(0);
    expect(sampleValue(fams, 'chatd_cluster_request_latency_seconds', { role: 'chatd', quantile: '0.99' })).to.be.a('number');
    expect(sampleValue(fams, 'chatd_cluster_processes_answering')).to.equal(4);
  });

  it('partly down - stopped processes show as not answering; the status app stays up and sees them come back', async () => {
    const c = cluster();
    const p = page!;
    const statusBefore = await c.process('status');
    const shard1 = await c.process('channeld', 1);
    const chatd = await c.process('chatd', 0);
    for (const proc of [shard1, chatd]) {
      const r = await c.pm2(['stop', String(proc.pmId)]);
      expect(r.code, r.stderr).to.equal(0);
    }
    await until('chatd/0 and channeld/1 not answering on the page', 20_000, async () => {
      const s = await rowStates(p);
      return s['chatd/0'] === 'not answering' && s['channeld/1'] === 'not answering' && s.gc === 'up' && s['channeld/0'] === 'up';
    });
    expect(await p.getAttribute('#cluster', 'class')).to.contain('degraded');
    const health = await fetch(`${c.statusUrl}/healthz`);
    expect(health.status).to.equal(200);
    expect(await health.json()).to.deep.include({ status: 'ok', cluster: 'degraded', queue: 'ok', answering: 2, asked: 4, notAnswering: ['channeld/1', 'chatd/0'] });
    const fams = parsePrometheusText(await (await fetch(`${c.statusUrl}/metrics`)).text());
    expect(sampleValue(fams, 'chatd_cluster_up', { role: 'chatd' })).to.equal(0);
    expect(sampleValue(fams, 'chatd_cluster_up', { role: 'channeld', shard: '1' })).to.equal(0);

    for (const proc of [shard1, chatd]) {
      const r = await c.pm2(['restart', String(proc.pmId)]);
      expect(r.code, r.stderr).to.equal(0);
    }
    await until('every process up again on the page', 30_000, async () => {
      const s = await rowStates(p);
      return Object.values(s).length === 4 && Object.values(s).every((v) => v === 'up');
    });
    const statusAfter = await c.process('status');
    expect(statusAfter.pid, 'the status app was not restarted').to.equal(statusBefore.pid);
    expect(statusAfter.restarts).to.equal(0);
    expect(c.logs(400)).not.to.match(/"app":"status"[^\n]*"level":(50|60)|"level":(50|60)[^\n]*"app":"status"/);
  });
});
