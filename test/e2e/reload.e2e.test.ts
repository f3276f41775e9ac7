import { expect } from 'chai';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ChatClient, type Frame, type Reply } from '../helpers/chat-client';
import { PROJECT_ROOT, type Cluster, type Pm2Process, shardOf, sleep, useCluster } from '../helpers/cluster';
import { cleanupChecks, expectEachReplyOnce } from './e2e-support';

/**
 * Graceful reload (docs/operations.md, "Reload"), end to end: `pm2 reload ecosystem.config.js`
 * on a real cluster under PM2, while characters are connected and finds flow from clients
 * that know the truth. Every process is replaced; chatD's replacement closes every connection
 * (the shutdown push), and the characters' clients reconnect and log in again, as a game
 * client does, except some that stay away. Checked: every request read got exactly one
 * reply (a request without a reply when the shutdown push arrived was not read), no wrong
 * answer (UNAVAILABLE during a hand-over is allowed, counted and printed), the characters
 * still connected are found afterwards, those that stayed away are offline (no ghosts), no
 * two incarnations of one process ever ran at once, and nothing is left over.
 */

const SHARDS = 2;
const CHANNELS = 20;
const SHUTDOWN_MESSAGE = 'server shutting down';
/** PROTOCOL.md, Consistency: offline within 2 s of the close. */
const OFFLINE_WITHIN_MS = 2000;

/** What the test knows of one character: the truth the finds are judged against. */
interface Character {
  name: string;
  channel: number;
  /** Reconnects and logs in again when chatD closes its connection; false: stays away. */
  returns: boolean;
  state: 'online' | 'offline' | 'changing';
  /** Bumped at every change of state: a find is judged only if none happened while it was in flight. */
  epoch: number;
  /** Date.now() of the last close of its connection. */
  offlineSince: number;
}

interface Tally {
  finds: number;
  ok: number;
  /** Finds with no judgement possible (the character changed state meanwhile). */
  unjudged: number;
  wrong: string[];
  codes: Map<string, number>;
  /** Requests of an open connection that got no reply, or of a connection closed without the shutdown push. */
  missing: string[];
  /** Requests without a reply when the shutdown push arrived (not read by the old chatD). */
  notRead: number;
  shutdownPushes: number;
  /** Connections closed by the server without the shutdown push. */
  unexpectedCloses: string[];
  /** Frames that came after a shutdown push. */
  afterPush: string[];
  loginCodes: Map<string, number>;
  /** NAME_TAKEN for a name whose last connection closed more than 2 s before: a ghost. */
  ghosts: string[];
  relogins: number;
  /** Per shard: the first and last UNAVAILABLE answer to a find of a name it owns (epoch ms). */
  unavailable: Map<number, { first: number; last: number; n: number }>;
}

const isShutdownPush = (f: Frame): boolean =>
  f.op === 'error' && !('id' in f) && (f.error as { code?: string; message?: string } | undefined)?.message === SHUTDOWN_MESSAGE;

const bump = (m: Map<string, number>, k: string): void => void m.set(k, (m.get(k) ?? 0) + 1);

/** Characters, finders and their reconnecting clients, for one reload. */
class World {
  readonly tally: Tally = {
    finds: 0,
    ok: 0,
    unjudged: 0,
    wrong: [],
    codes: new Map(),
    missing: [],
    notRead: 0,
    shutdownPushes: 0,
    unexpectedCloses: [],
    afterPush: [],
    loginCodes: new Map(),
    ghosts: [],
    relogins: 0,
    unavailable: new Map(),
  };
  /** Every connection opened (exactly-once checks at the end). */
  readonly clients: ChatClient[] = [];
  running = true;
  private readonly tasks: Promise<void>[] = [];
  private stopNow: () => void = () => {};
  private readonly stopped = new Promise<void>((resolve) => (this.stopNow = resolve));
  /** The current connection of each character (open or closing). */
  readonly connOf = new Map<string, ChatClient>();

  constructor(
    private readonly cluster: Cluster,
    readonly characters: Character[],
    private readonly prefix: string,
  ) {}

  start(finders: number, window: number): void {
    for (const ch of this.characters) this.tasks.push(this.live(ch, false));
    for (let i = 0; i < finders; i++) {
      const me: Character = { name: `${this.prefix}Finder${i}`, channel: 1, returns: true, state: 'changing', epoch: 0, offlineSince: 0 };
      this.tasks.push(this.live(me, true, window));
    }
  }

  /** Stops reconnecting and finding; connected characters stay connected. */
  async stop(): Promise<void> {
    this.running = false;
    this.stopNow();
    await Promise.all(this.tasks);
  }

  get online(): Character[] {
    return this.characters.filter((c) => c.state === 'online');
  }

  /** A connection to chatD, retried while chatD is being replaced. */
  private async connect(): Promise<ChatClient> {
    const until = Date.now() + 30_000;
    for (;;) {
      try {
        const c = await ChatClient.connect(this.cluster.port, { connectTimeoutMs: 1000, requestTimeoutMs: 10_000 });
        this.cluster.track(c);
        this.clients.push(c);
        return c;
      } catch (err) {
        if (Date.now() > until) throw err;
        await sleep(50);
      }
    }
  }

  /** One character's life: log in (retrying refusals), stay until chatD closes, come back. */
  private async live(ch: Character, finder: boolean, window = 0): Promise<void> {
    let first = true;
    while (this.running) {
      if (!first && !ch.returns) return;
      const c = await this.connect();
      this.connOf.set(ch.name, c);
      ch.state = 'changing';
      ch.epoch++;
      let ok = false;
      while (!c.isClosed) {
        let r: Reply;
        try {
          r = await c.request({ op: 'login', name: ch.name, channel: ch.channel });
        } catch {
          break; // closed before the reply (chatD stopping): not read
        }
        if (r.ok === true) {
          ok = true;
          break;
        }
        const code = r.error?.code ?? '?';
        bump(this.tally.loginCodes, code);
        if (code === 'NAME_TAKEN' && ch.offlineSince > 0 && Date.now() - ch.offlineSince > OFFLINE_WITHIN_MS) {
          this.tally.ghosts.push(`${ch.name}: NAME_TAKEN ${Date.now() - ch.offlineSince} ms after its connection closed`);
        }
        await sleep(100);
      }
      if (ok) {
        if (!first) this.tally.relogins++;
        ch.state = 'online';
        ch.epoch++;
      }
      first = false;
      if (finder && ok) await Promise.all(Array.from({ length: window }, () => this.findLoop(c)));
      const closed = await Promise.race([c.closed, this.stopped.then(() => undefined)]);
      if (!closed) return; // stopped while connected: stays connected
      ch.state = 'offline';
      ch.epoch++;
      ch.offlineSince = Date.now();
      this.noteClose(c, closed.hadError);
      if (this.running) await sleep(100 + Math.floor(Math.random() * 500));
    }
  }

  private noteClose(c: ChatClient, hadError: boolean): void {
    const at = c.frames.findIndex(isShutdownPush);
    if (at < 0) {
      if (this.running) this.tally.unexpectedCloses.push(`closed without the shutdown push (reset: ${hadError}); last frame ${JSON.stringify(c.frames.at(-1))}`);
      return;
    }
    this.tally.shutdownPushes++;
    if (at !== c.frames.length - 1) this.tally.afterPush.push(JSON.stringify(c.frames.slice(at + 1, at + 3)));
  }

  /** Finds over one finder connection until it closes or the world stops. */
  private async findLoop(c: ChatClient): Promise<void> {
    let k = 0;
    while (this.running && !c.isClosed) {
      k++;
      const nobody = Math.random() < 0.2;
      const target = nobody ? undefined : this.characters[Math.floor(Math.random() * this.characters.length)]!;
      const query = target ? target.name : `Nobody${Math.floor(Math.random() * 1e6)}`;
      const snap = target ? { state: target.state, epoch: target.epoch, offlineSince: target.offlineSince } : undefined;
      const asChat = k % 3 === 0;
      const sentAt = Date.now();
      this.tally.finds++;
      let r: Reply;
      try {
        r = await c.request(asChat ? { op: 'chat', text: `/찾기 ${query}` } : { op: 'find', name: query });
      } catch (err) {
        if (c.isClosed && c.frames.some(isShutdownPush)) this.tally.notRead++;
        else this.tally.missing.push((err as Error).message);
        continue;
      }
      if (r.ok !== true) {
        const code = r.error?.code ?? '?';
        bump(this.tally.codes, code);
        if (code === 'UNAVAILABLE') {
          const shard = shardOf(query, SHARDS);
          const w = this.tally.unavailable.get(shard) ?? { first: Date.now(), last: 0, n: 0 };
          w.last = Date.now();
          w.n++;
          this.tally.unavailable.set(shard, w);
        }
        await sleep(20); // "retry later": a client backs off
        continue;
      }
      this.tally.ok++;
      const said = ((asChat ? r.result : r) ?? {}) as Record<string, unknown>;
      let expectOnline: boolean | undefined;
      if (!target || !snap) expectOnline = false;
      else if (target.epoch !== snap.epoch) expectOnline = undefined;
      else if (snap.state === 'online') expectOnline = true;
      else if (snap.state === 'offline' && sentAt - snap.offlineSince >= OFFLINE_WITHIN_MS) expectOnline = false;
      if (expectOnline === undefined) {
        this.tally.unjudged++;
        continue;
      }
      const right = expectOnline
        ? said.online === true && said.name === target!.name && said.channel === target!.channel
        : said.online === false && !('channel' in said);
      if (!right) this.tally.wrong.push(`${JSON.stringify({ query, expectOnline, snap })} -> ${JSON.stringify(r)}`);
    }
  }
}

/** From the processes' JSON logs: per process (app + instance), each pid's first `starting` and its `stopped`. */
function lifetimes(cluster: Cluster): Map<string, { pid: number; starting: number; stopped: number | undefined }[]> {
  const dir = join(cluster.home, 'logs');
  const out = new Map<string, { pid: number; starting: number; stopped: number | undefined }[]>();
  if (!existsSync(dir)) return out;
  for (const f of readdirSync(dir)) {
    for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) {
      if (!line.startsWith('{')) continue;
      let e: { time?: number; pid?: number; app?: string; shard?: number; instance?: number; msg?: string };
      try {
        e = JSON.parse(line) as typeof e;
      } catch {
        continue;
      }
      if (!e.app || typeof e.pid !== 'number' || typeof e.time !== 'number') continue;
      const key = `${e.app}:${e.shard ?? e.instance ?? 0}`;
      const list = out.get(key) ?? [];
      out.set(key, list);
      let p = list.find((x) => x.pid === e.pid);
      if (e.msg === 'starting' && !p) list.push((p = { pid: e.pid, starting: e.time, stopped: undefined }));
      if (e.msg === 'stopped' && p) p.stopped = e.time;
    }
  }
  return out;
}

describe('reload (e2e): pm2 reload ecosystem.config.js under load', function () {
  this.timeout(180_000);
  // info: the overlap check reads each process's `starting` and `stopped` lines. The finders
  // may pass chatD's per-connection rate limit (500/s) on a quiet machine: a RATE_LIMITED is
  // right but not what this suite is about, so the limit is out of the way.
  const cluster = useCluster({
    shards: SHARDS,
    label: 'reload',
    logLevel: 'info',
    env: { CHATD_RATE_PER_SEC: '1000000', CHATD_RATE_BURST: '1000000' },
  });

  const modes: { title: string; prefix: string; env: Record<string, string> }[] = [
    { title: "as `npm run reload` runs it (PM2_CONCURRENT_ACTIONS=1: one process at a time)", prefix: 'Rl', env: { PM2_CONCURRENT_ACTIONS: '1' } },
    { title: "with PM2's default concurrency (two apps, and two of an app's processes, at a time)", prefix: 'Rd', env: {} },
  ];

  for (const mode of modes) {
    it(`${mode.title}: every process replaced, one reply per request read, no wrong answer, no ghost`, async () => {
      const characters: Character[] = Array.from({ length: 60 }, (_, i) => ({
        name: i % 4 === 0 ? `${mode.prefix}기사${i}` : `${mode.prefix}Knight${i}`,
        channel: (i % CHANNELS) + 1,
        returns: i % 6 !== 5, // 10 of 60 stay away once chatD closes them
        state: 'changing',
        epoch: 0,
        offlineSince: 0,
      }));
      const world = new World(cluster(), characters, mode.prefix);
      world.start(4, 4);
      const t0 = Date.now();
      while (world.online.length < characters.length) {
        if (Date.now() - t0 > 20_000) throw new Error(`only ${world.online.length} of ${characters.length} logged in`);
        await sleep(50);
      }
      await sleep(1000); // load before the reload

      const before = await cluster().jlist();
      const reloadAt = Date.now();
      const r = await cluster().pm2(['reload', join(PROJECT_ROOT, 'ecosystem.config.js')], 120_000, mode.env);
      const reloadMs = Date.now() - reloadAt;
      expect(r.code, `pm2 reload: ${r.stdout}\n${r.stderr}`).to.equal(0);
      const after = await cluster().jlist();

      // Every returning character back online, then a little more load.
      const back = Date.now();
      const returning = characters.filter((c) => c.returns);
      while (returning.some((c) => c.state !== 'online')) {
        if (Date.now() - back > 20_000) break;
        await sleep(50);
      }
      const backMs = Date.now() - back;
      await sleep(1500);
      await world.stop();
      const t = world.tally;
      const leaverStates = characters.filter((c) => !c.returns).map((c) => c.state);

      console.log(
        `      (reload ${reloadMs} ms; finds ${t.finds}: ${t.ok} ok (${t.unjudged} not judged: the character changed state meanwhile), ` +
          `errors ${JSON.stringify(Object.fromEntries(t.codes))}, wrong ${t.wrong.length}, missing ${t.missing.length}, ` +
          `not read at shutdown ${t.notRead}; shutdown pushes ${t.shutdownPushes}, unexpected closes ${t.unexpectedCloses.length}; ` +
          `relogins ${t.relogins}, login refusals ${JSON.stringify(Object.fromEntries(t.loginCodes))}, ghosts ${t.ghosts.length}; ` +
          `all back ${backMs} ms after the reload returned; UNAVAILABLE per shard: ` +
          `${[...t.unavailable].map(([shard, w]) => `shard ${shard} ${w.n} over ${w.last - w.first} ms`).join(', ') || 'none'})`,
      );

      // PM2 replaced every process, and each is online.
      const key = (p: Pm2Process): string => `${p.name}:${p.instance}`;
      expect(after.map(key).sort()).to.deep.equal(before.map(key).sort());
      for (const p of after) {
        const old = before.find((b) => key(b) === key(p))!;
        expect(p.status, key(p)).to.equal('online');
        expect(p.pid, `${key(p)} replaced`).to.not.equal(old.pid);
      }

      // Replies: exactly one per request read; nothing after the shutdown push.
      expect(t.missing.slice(0, 3), `${t.missing.length} request(s) without a reply`).to.deep.equal([]);
      expect(t.unexpectedCloses.slice(0, 3), 'connections closed without the shutdown push').to.deep.equal([]);
      expect(t.afterPush.slice(0, 3), 'frames after the shutdown push').to.deep.equal([]);
      for (const c of world.clients) expectEachReplyOnce(c);
      expect(t.shutdownPushes, 'chatD was replaced: every connection got the push').to.be.at.least(characters.length);

      // Answers: never wrong; UNAVAILABLE is the only refusal (a shard's hand-over).
      expect(t.wrong.slice(0, 3), `${t.wrong.length} wrong answer(s) of ${t.ok}`).to.deep.equal([]);
      for (const code of t.codes.keys()) expect(['UNAVAILABLE'], `find error code ${code}`).to.include(code);
      for (const code of t.loginCodes.keys()) expect(['UNAVAILABLE', 'NAME_TAKEN'], `login error code ${code}`).to.include(code);
      expect(t.ghosts.slice(0, 3), 'names held after their connection closed').to.deep.equal([]);
      expect(t.ok, 'finds answered ok').to.be.greaterThan(100);

      // The directory afterwards, from a fresh connection: the connected are found, the others offline.
      expect(returning.filter((c) => c.state !== 'online').map((c) => c.name), 'returning characters back online').to.deep.equal([]);
      expect(leaverStates.every((s) => s === 'offline'), JSON.stringify(leaverStates)).to.equal(true);
      const observer = await cluster().login(`${mode.prefix}Observer`, 1);
      const found = await Promise.all(characters.map((c) => observer.request({ op: 'find', name: c.name })));
      found.forEach((f, i) => {
        const c = characters[i]!;
        if (c.returns) expect(f, c.name).to.deep.include({ ok: true, online: true, name: c.name, channel: c.channel });
        else expect(f, c.name).to.deep.equal({ op: 'find', id: f.id, ok: true, name: c.name, online: false });
      });
      expectEachReplyOnce(observer);

      // No two incarnations of one process ran at once: each started after its predecessor stopped.
      const lives = lifetimes(cluster());
      for (const p of after) {
        const app = p.name === 'channeld' ? `channeld:${p.instance}` : `${p.name}:${p.instance}`;
        const list = (lives.get(app) ?? []).sort((a, b) => a.starting - b.starting);
        expect(list.map((l) => l.pid), `${app}: pids seen in the logs`).to.include(p.pid);
        for (let i = 1; i < list.length; i++) {
          const prev = list[i - 1]!;
          expect(prev.stopped, `${app}: pid ${prev.pid} logged 'stopped'`).to.be.a('number');
          expect(list[i]!.starting, `${app}: pid ${list[i]!.pid} started before pid ${prev.pid} stopped`).to.be.at.least(prev.stopped!);
        }
      }

      await Promise.all(world.clients.map((c) => c.destroy()));
      await observer.destroy();
    });
  }

  describe('end', () => {
    cleanupChecks(cluster);
  });
});
