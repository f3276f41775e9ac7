import { expect } from 'chai';
import { ChatClient, frame, rawFrame, type Frame, type Reply } from '../helpers/chat-client';
import { namesOnShard, shardOf, sleep, useCluster } from '../helpers/cluster';
import { cleanupChecks, closesWithin, expectEachReplyOnce } from './e2e-support';

/**
 * docs/protocol.md, "Pipelining and order", against a real cluster (PM2, SysV queue, 2
 * shards): requests written together in one socket write take effect in the order sent,
 * whatever the shards' timing; and every request gets exactly one reply when the request it
 * waits for fails, when a bad frame follows, when the client leaves, when the rate limit
 * refuses the excess, and when the owning shard does not answer.
 */

const SHARDS = 2;
const RATE_BURST = 300;

let seq = 0;
const uniq = (prefix: string): string => `${prefix}${++seq}`;

describe('pipelining (e2e): one connection\'s requests take effect in the order sent', function () {
  this.timeout(30_000);
  const cluster = useCluster({ shards: SHARDS, label: 'pipelining', env: { CHATD_RATE_BURST: String(RATE_BURST), CHATD_RATE_PER_SEC: '10' } });

  let observer: ChatClient;
  before(async () => {
    observer = await cluster().login(uniq('Watcher'), 20);
  });

  /** Writes every request in one socket write; resolves once each has its reply (or the connection closed). */
  async function writeTogether(c: ChatClient, reqs: Record<string, unknown>[], extra: Buffer[] = []): Promise<void> {
    await c.sendRaw(Buffer.concat([...reqs.map((r) => frame(r)), ...extra]));
  }
  async function repliesOf(c: ChatClient, ids: number[], timeoutMs = 8000): Promise<Reply[]> {
    return Promise.all(ids.map((id) => c.waitForFrame((f) => f.id === id, timeoutMs) as Promise<Reply>));
  }
  const code = (f: Frame): string | undefined => (f.error as { code?: string } | undefined)?.code;
  const at = (c: ChatClient, id: number): number => c.frames.findIndex((f) => f.id === id);
  async function offlineWithin(name: string, ms: number): Promise<boolean> {
    const until = Date.now() + ms;
    for (;;) {
      const r = await observer.request({ op: 'find', name });
      if (r.ok && r.online === false) return true;
      if (Date.now() > until) return false;
      await sleep(100);
    }
  }

  it('login + /찾기 NAME + move + find + logout in one write: all succeed, each sees the ones before it', async () => {
    for (let round = 0; round < 5; round++) {
      const c = await cluster().client();
      const name = uniq('타락파워전사');
      const reqs = [
        { op: 'login', id: 1, name, channel: 3 },
        { op: 'chat', id: 2, text: `/찾기 ${name}` },
        { op: 'move', id: 3, channel: 7 },
        { op: 'find', id: 4, name },
        { op: 'logout', id: 5 },
      ];
      await writeTogether(c, reqs);
      const replies = await repliesOf(c, reqs.map((r) => r.id));
      for (const r of replies) expect(r.ok, JSON.stringify(r)).to.equal(true);
      expect(replies[0]).to.deep.equal({ op: 'login', id: 1, ok: true, name, channel: 3 });
      expect(replies[1]).to.deep.equal({
        op: 'chat',
        id: 2,
        ok: true,
        command: 'find',
        result: { name, online: true, channel: 3 },
        text: `${name}님은 3채널에 있습니다.`,
      });
      expect(replies[2]).to.deep.equal({ op: 'move', id: 3, ok: true, channel: 7 });
      expect(replies[3], 'the find sees the new channel').to.deep.equal({ op: 'find', id: 4, ok: true, name, online: true, channel: 7 });
      expect(replies[4]).to.deep.equal({ op: 'logout', id: 5, ok: true });
      // Each barrier's reply precedes the replies of what was sent after it.
      expect(at(c, 1)).to.be.below(at(c, 2));
      expect(at(c, 3)).to.be.below(at(c, 4));
      expect(at(c, 4)).to.be.below(at(c, 5));
      expect((await closesWithin(c, 3000)).closed, 'closed after the logout').to.equal(true);
      expectEachReplyOnce(c);
      expect(c.frames.length).to.equal(reqs.length);
      const gone = await observer.request({ op: 'find', name });
      expect(gone).to.deep.include({ ok: true, online: false });
    }
  });

  it('the README example: login then /찾기 written together answers the channel, not NOT_LOGGED_IN', async () => {
    const c = await cluster().client();
    const name = uniq('타락');
    await writeTogether(c, [
      { op: 'login', id: 1, name, channel: 3 },
      { op: 'chat', id: 2, text: `/찾기 ${name}` },
    ]);
    const [login, found] = await repliesOf(c, [1, 2]);
    expect(login!.ok).to.equal(true);
    expect(found).to.deep.include({ ok: true, text: `${name}님은 3채널에 있습니다.` });
  });

  it('finds pipelined after a login run concurrently, each answered once and right (names on both shards)', async () => {
    const me = uniq('Piper');
    const others = [0, 1].map((s) => namesOnShard(s, SHARDS, uniq('Far'), 1)[0]!);
    for (const [i, n] of others.entries()) await cluster().login(n, 10 + i);
    const c = await cluster().client();
    const ids = Array.from({ length: 100 }, (_, i) => 10 + i);
    await writeTogether(c, [{ op: 'login', id: 1, name: me, channel: 2 }, ...ids.map((id) => ({ op: 'find', id, name: others[id % 2]! }))]);
    const replies = await repliesOf(c, [1, ...ids]);
    expect(replies[0]!.ok).to.equal(true);
    for (const r of replies.slice(1)) expect(r).to.deep.include({ ok: true, online: true, channel: 10 + ((r.id as number) % 2) });
    expectEachReplyOnce(c);
  });

  it('a login refused with NAME_TAKEN: what follows runs as not logged in (NOT_LOGGED_IN), and a next login may succeed', async () => {
    const taken = uniq('Holder');
    await cluster().login(taken, 4);
    const c = await cluster().client();
    const fresh = uniq('Second');
    await writeTogether(c, [
      { op: 'login', id: 1, name: taken.toUpperCase(), channel: 1 },
      { op: 'find', id: 2, name: taken },
      { op: 'chat', id: 3, text: `/찾기 ${taken}` },
      { op: 'login', id: 4, name: fresh, channel: 5 },
      { op: 'find', id: 5, name: fresh },
    ]);
    const r = await repliesOf(c, [1, 2, 3, 4, 5]);
    expect(code(r[0]!)).to.equal('NAME_TAKEN');
    expect(code(r[1]!)).to.equal('NOT_LOGGED_IN');
    expect(code(r[2]!)).to.equal('NOT_LOGGED_IN');
    expect(r[3]).to.deep.include({ ok: true, name: fresh, channel: 5 });
    expect(r[4]).to.deep.include({ ok: true, online: true, channel: 5 });
    await sleep(50);
    expectEachReplyOnce(c);
  });

  it('a bad frame after waiting requests: each is answered, then BAD_FRAME, then the close; the character goes offline', async () => {
    const c = await cluster().client();
    const name = uniq('Broken');
    const reqs = [
      { op: 'login', id: 1, name, channel: 6 },
      ...Array.from({ length: 10 }, (_, i) => ({ op: 'find', id: 10 + i, name })),
      { op: 'move', id: 30, channel: 8 },
      { op: 'find', id: 31, name },
    ];
    await writeTogether(c, reqs, [rawFrame(0)]);
    expect((await closesWithin(c, 8000)).closed).to.equal(true);
    for (const q of reqs) expect(c.repliesById.get(q.id), `reply to ${q.id}`).to.equal(1);
    for (let i = 0; i < 10; i++) expect(c.frames[at(c, 10 + i)]).to.deep.include({ ok: true, online: true, channel: 6 });
    expect(c.frames[at(c, 31)]).to.deep.include({ ok: true, online: true, channel: 8 });
    const last = c.frames[c.frames.length - 1]!;
    expect(last.op).to.equal('error');
    expect(code(last)).to.equal('BAD_FRAME');
    expect(await offlineWithin(name, 2500), 'offline within 2 s').to.equal(true);
  });

  it('the client leaves while requests wait: no character is left online, chatD serves on', async () => {
    const names: string[] = [];
    for (let i = 0; i < 10; i++) {
      const c = await cluster().client();
      const name = uniq('Leaver');
      names.push(name);
      await writeTogether(c, [{ op: 'login', id: 1, name, channel: 1 }, ...Array.from({ length: 50 }, (_, k) => ({ op: 'find', id: 2 + k, name })), { op: 'move', id: 99, channel: 2 }]);
      c.socket.destroy(); // right after the write: the login is still in flight
    }
    for (const n of names) expect(await offlineWithin(n, 2500), `${n} offline within 2 s`).to.equal(true);
    expect((await observer.request({ op: 'ping' })).ok).to.equal(true);
  });

  it(`thousands pipelined behind a login: past the rate-limit burst (${RATE_BURST}) RATE_LIMITED at once, the rest in order; one reply each`, async () => {
    const c = await cluster().client();
    const name = uniq('Flood');
    const ids = Array.from({ length: 2000 }, (_, i) => 10 + i);
    await writeTogether(c, [{ op: 'login', id: 1, name, channel: 9 }, ...ids.map((id) => ({ op: 'find', id, name }))]);
    const replies = await repliesOf(c, [1, ...ids], 15_000);
    expect(replies[0]!.ok).to.equal(true);
    const finds = replies.slice(1);
    const ok = finds.filter((r) => r.ok);
    const limited = finds.filter((r) => code(r) === 'RATE_LIMITED');
    expect(ok.length + limited.length, 'every find ok or RATE_LIMITED').to.equal(ids.length);
    expect(ok.length).to.be.within(RATE_BURST - 5, RATE_BURST + 100);
    for (const r of ok) expect(r).to.deep.include({ online: true, channel: 9 });
    expectEachReplyOnce(c);
  });

  it('the owning shard does not answer: the login fails (TIMEOUT or UNAVAILABLE), what waited runs as not logged in', async function () {
    this.timeout(40_000);
    const cl = cluster();
    const name = uniq('Frozen');
    const shard = shardOf(name, SHARDS);
    const pid = await cl.signal('channeld', shard, 'SIGSTOP');
    try {
      const c = await cl.client({ requestTimeoutMs: 10_000 });
      await writeTogether(c, [
        { op: 'login', id: 1, name, channel: 1 },
        { op: 'find', id: 2, name: 'Anyone' },
        { op: 'ping', id: 3 },
      ]);
      const [login, find, ping] = await repliesOf(c, [1, 2, 3], 10_000);
      expect(['TIMEOUT', 'UNAVAILABLE']).to.include(code(login!));
      expect(code(find!)).to.equal('NOT_LOGGED_IN');
      expect(ping!.ok).to.equal(true);
      expect(at(c, 1)).to.be.below(at(c, 2));
      expect(at(c, 2)).to.be.below(at(c, 3));
      expectEachReplyOnce(c);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await cl.waitServing();
    expect(await offlineWithin(name, 5000), 'the timed-out login is taken back').to.equal(true);
  });

  cleanupChecks(cluster);
});
