import { expect } from 'chai';
import { join } from 'node:path';
import { normalizeName } from '../../src/cluster/names';
import { OwnershipView } from '../../src/cluster/ownership';
import { shardMtype } from '../../src/ipc/mtypes';
import { EpochWatch } from '../helpers/epoch-watch';
import { NatsServer } from '../helpers/nats-server';
import { parsePrometheusText, sampleValue } from '../helpers/prom-text';
import type { ChatClient } from '../helpers/chat-client';
import { PROJECT_ROOT, sleep, useCluster } from '../helpers/cluster';
import { cleanupChecks } from './e2e-support';

/**
 * Live resharding under real PM2 (docs/resharding.md, step 5): `pm2 scale channeld 2 -> 6 -> 3`
 * while characters are connected and finds and duplicate logins flow. Every answer is checked:
 * a connected character is online on its channel, a name nobody uses is offline, a second login
 * of a connected name is never accepted; errors may only be UNAVAILABLE or TIMEOUT (counted).
 * After each step the collector's epoch must settle and every connected character be found.
 * The same scenario runs over both transports: the host's SysV queue, and a real nats-server
 * started here on a free port (killed by pid at the end, even on failure).
 */

const CHANNELS = 20;
const CONNECTED = 60;

interface Tally {
  finds: number;
  ok: number;
  logins: number;
  wrong: string[];
  codes: Map<string, number>;
}

for (const over of ['sysv', 'nats'] as const) describe(`resharding (e2e, ${over}): pm2 scale channeld 2 -> 6 -> 3 under a checked load`, function () {
  this.timeout(300_000);
  // Hooks run in the order they are declared: the server starts before the cluster, and stops after it and the tool.
  let nats: NatsServer | undefined;
  if (over === 'nats') {
    before(async function () {
      this.timeout(20_000);
      nats = await NatsServer.start();
    });
  }
  const cluster = useCluster(() => ({
    shards: 2,
    label: `reshard-${over}`,
    env: {
      SHARD_GONE_MS: '3000',
      RESHARD_QUIET_MS: '1000',
      CHANNELS: String(CHANNELS),
      CHATD_RATE_PER_SEC: '100000',
      CHATD_RATE_BURST: '100000',
      ...(nats ? { TRANSPORT: 'nats', NATS_URL: nats.url, CLUSTER_NAME: `reshard${process.pid}` } : {}),
    },
  }));

  let watch: EpochWatch | undefined;
  after(async () => {
    await watch?.close();
    await nats?.dispose();
  });
  const status = (mtype: number): Promise<Record<string, unknown> | undefined> => watch!.status(mtype);
  const settledAbove = (above: number, timeoutMs: number, members?: number): ReturnType<EpochWatch['settledAbove']> =>
    watch!.settledAbove(above, timeoutMs, members, `\n${cluster().logs(15)}`);

  it('0 wrong answers, no duplicate login, every connected character found after each step', async () => {
    const c = cluster();
    watch = await EpochWatch.open({ mqKey: c.mqKey, nats: nats ? { url: nats.url, cluster: `reshard${process.pid}` } : undefined });

    const start = await settledAbove(0, 20_000);
    expect(start.members).to.deep.equal([0, 1]);

    // The characters, and names nobody uses.
    const online = new Map<string, number>();
    const holders: ChatClient[] = [];
    for (let i = 0; i < CONNECTED; i++) {
      const name = `Resh${i}`;
      const channel = 1 + (i % CHANNELS);
      holders.push(await c.login(name, channel));
      online.set(name, channel);
    }
    const names = [...online.keys()];
    const ghosts = Array.from({ length: 30 }, (_, i) => `Ghost${i}`);

    const tally: Tally = { finds: 0, ok: 0, logins: 0, wrong: [], codes: new Map() };
    const countCode = (code: string): void => {
      tally.codes.set(code, (tally.codes.get(code) ?? 0) + 1);
    };
    const checkError = (what: string, r: Record<string, unknown>): void => {
      const code = (r.error as { code?: string } | undefined)?.code ?? 'none';
      if (code === 'UNAVAILABLE' || code === 'TIMEOUT') countCode(code);
      else tally.wrong.push(`${what}: ${JSON.stringify(r)}`);
    };
    let running = true;
    // find needs a logged-in connection: the finders are characters too.
    const finders = await Promise.all(Array.from({ length: 4 }, (_, k) => c.login(`Finder${k}`, 1)));
    const checker = await c.login('Checker', 1);
    const loops = finders.map(async (f, k) => {
      for (let i = k; running; i++) {
        const ghost = i % 4 === 3;
        const name = ghost ? ghosts[i % ghosts.length]! : names[(i * 7 + k) % names.length]!;
        const r = await f.request({ op: 'find', name }, 5000);
        tally.finds++;
        if (r.ok !== true) {
          checkError(`find ${name}`, r);
          continue;
        }
        tally.ok++;
        const right = ghost ? r.online === false : r.online === true && r.channel === online.get(name);
        if (!right) tally.wrong.push(`find ${name}: ${JSON.stringify(r)}`);
      }
    });
    // Second logins of connected names, from fresh connections: never accepted.
    const dupLoop = (async () => {
      for (let i = 0; running; i++) {
        const name = names[(i * 13) % names.length]!;
        const d = await c.client({ requestTimeoutMs: 5000 });
        const r = await d.request({ op: 'login', name, channel: 1 }, 5000);
        tally.logins++;
        if (r.ok === true) tally.wrong.push(`second login of ${name} accepted: ${JSON.stringify(r)}`);
        else if ((r.error as { code?: string } | undefined)?.code !== 'NAME_TAKEN') checkError(`login ${name}`, r);
        await d.destroy();
        await sleep(20);
      }
    })();

    /** Every connected character found on its channel (polled); ms until all were. */
    async function allFound(timeoutMs: number): Promise<number> {
      const t0 = Date.now();
      const p = checker;
      for (;;) {
        const rs = await Promise.all(names.map((n) => p.request({ op: 'find', name: n }, 5000)));
        const missing = rs.filter((r, i) => !(r.ok === true && r.online === true && r.channel === online.get(names[i]!)));
        if (missing.length === 0) return Date.now() - t0;
        if (Date.now() - t0 > timeoutMs) throw new Error(`${missing.length} connected characters not found: ${JSON.stringify(missing.slice(0, 3))}`);
        await sleep(50);
      }
    }

    const figures: string[] = [];
    let view = new OwnershipView(start.epoch, start.members);
    await sleep(1000); // the load runs at 2 shards first
    for (const target of [6, 3]) {
      const before = { finds: tally.finds, codes: new Map(tally.codes) };
      const t0 = Date.now();
      const r = await c.pm2(['scale', 'channeld', String(target)], 60_000);
      expect(r.code, r.stderr).to.equal(0);
      const settled = await settledAbove(view.epoch, 60_000, target);
      const ms = Date.now() - t0;
      const next = view.next(settled.epoch, settled.members);
      const moved = names.filter((n) => view.ownerOfKey(normalizeName(n)) !== next.ownerOfKey(normalizeName(n))).length;
      const foundMs = await allFound(10_000);
      let inserted = 0;
      for (const s of next.members) {
        const st = await status(shardMtype(s));
        inserted += ((st?.counters as Record<string, number> | undefined)?.syncInserted ?? 0);
      }
      const errs = [...tally.codes].map(([k, v]) => `${k} ${v - (before.codes.get(k) ?? 0)}`).join(', ');
      figures.push(
        `scale to ${target}: epoch ${view.epoch} -> ${settled.epoch}, members [${next.members.join(',')}], ` +
          `${moved}/${names.length} connected names moved owner (${((moved / names.length) * 100).toFixed(0)} %; shards' SYNC insertions so far ${inserted}), ` +
          `settled ${ms} ms after the scale command, all found ${foundMs} ms later; during it ${tally.finds - before.finds} finds, errors: ${errs || 'none'}`,
      );
      view = next;
      expect(next.members.length, `members after scaling to ${target}`).to.equal(target);
    }
    running = false;
    await Promise.all([...loops, dupLoop]);
    for (const f of [...finders, checker]) await f.destroy();
    for (const line of figures) console.log(`      (${line})`);
    console.log(`      (load: ${tally.finds} finds, ${tally.ok} ok, ${tally.logins} second logins; errors ${JSON.stringify(Object.fromEntries(tally.codes))}; wrong ${tally.wrong.length})`);
    expect(tally.wrong.slice(0, 5), `${tally.wrong.length} wrong answers`).to.deep.equal([]);
    expect(tally.finds).to.be.above(100);

    // `npm run health` follows the collector's epoch: the 3 shards left (not 0..CHANNELD_SHARDS-1) answer.
    const h = await c.ops('health', ['--json', '--pm2'], 30_000);
    const report = JSON.parse(h.stdout) as { healthy: boolean; problems: string[]; answered: { label: string }[] };
    expect(report.problems).to.deep.equal([]);
    expect(report.answered.map((a) => a.label).filter((l) => l.startsWith('channeld'))).to.deep.equal(view.members.map((m) => `channeld shard ${m}`));

    // The status app asks the shards of the epoch too: healthy (shards 0, 1, 2 are gone, not
    // "not answering"), and /metrics carries the epoch and its member count.
    let hz: { cluster: string; notAnswering: string[] } | undefined;
    for (let t0 = Date.now(); Date.now() - t0 < 15_000; await sleep(200)) {
      hz = (await (await fetch(`${c.statusUrl}/healthz`)).json()) as { cluster: string; notAnswering: string[] };
      if (hz.cluster === 'healthy') break;
    }
    expect(hz, 'status app /healthz').to.deep.include({ cluster: 'healthy', notAnswering: [] });
    const prom = parsePrometheusText(await (await fetch(`${c.statusUrl}/metrics`)).text());
    expect(sampleValue(prom, 'chatd_cluster_epoch', { role: 'gc' })).to.equal(view.epoch);
    expect(sampleValue(prom, 'chatd_cluster_members', { role: 'gc' })).to.equal(3);
    expect(sampleValue(prom, 'chatd_cluster_settled', { role: 'gc' })).to.equal(1);
    for (const h of holders) await h.destroy();

    if (over === 'sysv') {
      // `npm run reload` after a scale: PM2 reloads the processes it has; the scaled count and
      // the membership stay (the ecosystem file's `instances` is not applied again).
      const t0 = Date.now();
      const rl = await c.pm2(['reload', join(PROJECT_ROOT, 'ecosystem.config.js')], 120_000, { PM2_CONCURRENT_ACTIONS: '1' });
      expect(rl.code, rl.stderr).to.equal(0);
      const shards = (await c.jlist()).filter((p) => p.name === 'channeld').map((p) => p.instance).sort((a, b) => a - b);
      expect(shards, 'shard instances after the reload').to.deep.equal(view.members);
      const after = await watch!.gcView();
      expect(after?.members).to.deep.equal(view.members);
      const probe = await c.login('AfterReload', 2);
      const r = await probe.request({ op: 'find', name: 'AfterReload' }, 5000);
      expect(r).to.deep.include({ ok: true, online: true, channel: 2 });
      await probe.destroy();
      console.log(`      (npm run reload after the scale: ${Date.now() - t0} ms, shards ${shards.join(',')}, epoch ${after?.epoch})`);
    }
  });

  cleanupChecks(cluster);
});
