import { expect } from 'chai';
import { Kind, Status } from '../../src/cluster/kinds';
import { EMPTY, decodePayload } from '../../src/cluster/messages';
import { normalizeName } from '../../src/cluster/names';
import { OwnershipView } from '../../src/cluster/ownership';
import { Endpoint, newIncarnation } from '../../src/ipc';
import { MTYPE_GC, shardMtype, toolMtype } from '../../src/ipc/mtypes';
import { SysvQueue } from '../../src/ipc/sysv/sysv-queue';
import { SysvTransport, defaultSysvTransportOptions } from '../../src/ipc/sysv/sysv-transport';
import type { ChatClient } from '../helpers/chat-client';
import { sleep, useCluster } from '../helpers/cluster';
import { cleanupChecks } from './e2e-support';

/**
 * Live resharding under real PM2 (docs/resharding.md, step 5): `pm2 scale channeld 2 -> 6 -> 3`
 * while characters are connected and finds and duplicate logins flow. Every answer is checked:
 * a connected character is online on its channel, a name nobody uses is offline, a second login
 * of a connected name is never accepted; errors may only be UNAVAILABLE or TIMEOUT (counted).
 * After each step the collector's epoch must settle and every connected character be found.
 */

const CHANNELS = 20;
const CONNECTED = 60;

interface GcView {
  epoch: number;
  members: number[];
  settled: boolean;
}

interface Tally {
  finds: number;
  ok: number;
  logins: number;
  wrong: string[];
  codes: Map<string, number>;
}

describe('resharding (e2e): pm2 scale channeld 2 -> 6 -> 3 under a checked load', function () {
  this.timeout(300_000);
  const cluster = useCluster({ shards: 2, label: 'reshard', env: { SHARD_GONE_MS: '3000', RESHARD_QUIET_MS: '1000', CHANNELS: String(CHANNELS), CHATD_RATE_PER_SEC: '100000', CHATD_RATE_BURST: '100000' } });

  let queue: SysvQueue | undefined;
  let transport: SysvTransport | undefined;
  let tool: Endpoint | undefined;
  const me = toolMtype();
  after(async () => {
    await tool?.close();
    await transport?.close();
    try {
      while (queue?.tryReceive(me)) {
        /* late replies: discard */
      }
    } catch {
      /* the queue is gone */
    }
  });

  async function status(mtype: number): Promise<Record<string, unknown> | undefined> {
    try {
      const r = await tool!.request(mtype, Kind.STATUS, EMPTY, 1000);
      return r.status === Status.OK ? decodePayload('status', r.payload) : undefined;
    } catch {
      return undefined;
    }
  }

  async function gcView(): Promise<GcView | undefined> {
    const s = await status(MTYPE_GC);
    const e = s?.epoch as { epoch: number; members: number[]; settled: boolean } | undefined;
    return e ? { epoch: e.epoch, members: e.members, settled: e.settled } : undefined;
  }

  /**
   * Polls until the collector has a settled epoch above `above` (with `members` members, when
   * given: PM2 may start or delete the processes of one `pm2 scale` slowly enough for the
   * collector to take them in more than one epoch); its view and the ms waited.
   */
  async function settledAbove(above: number, timeoutMs: number, members?: number): Promise<GcView & { ms: number }> {
    const t0 = Date.now();
    for (;;) {
      const v = await gcView();
      if (v && v.epoch > above && v.settled && (members === undefined || v.members.length === members)) return { ...v, ms: Date.now() - t0 };
      if (Date.now() - t0 > timeoutMs) throw new Error(`no settled epoch above ${above} after ${timeoutMs} ms (last: ${JSON.stringify(v)})\n${cluster().logs(15)}`);
      await sleep(50);
    }
  }

  it('0 wrong answers, no duplicate login, every connected character found after each step', async () => {
    const c = cluster();
    queue = SysvQueue.open({ key: c.mqKey, create: false });
    transport = new SysvTransport(queue, { ...defaultSysvTransportOptions, backlogMessages: 1000, backlogBytes: 1 << 20 });
    tool = new Endpoint(transport, { mtype: me, incarnation: newIncarnation(), maxBatchBytes: 4096 });
    tool.start(() => {});

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
    for (const h of holders) await h.destroy();
  });

  cleanupChecks(cluster);
});
