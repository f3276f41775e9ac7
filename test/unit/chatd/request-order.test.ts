import { expect } from 'chai';
import type { ChatdServer } from '../../../src/chatd/chatd-server';
import type { ClientConnection } from '../../../src/chatd/client-connection';
import { ClientError, ClientErrorCode } from '../../../src/errors';
import { ChatClient, frame, loggedIn, rawFrame, type Frame, type Reply } from '../../../test/helpers/chat-client';
import { startLocalChatd, type LocalChatd } from '../../../test/helpers/local-chatd';

/**
 * One connection's requests take effect in the order sent (issue 8, item 2; docs/protocol.md,
 * "Pipelining and order"): chatD with real TCP and real shards over the local transport, its
 * ShardClient's login/move/find wrapped so that a test decides when they go to the shard.
 */

/** A latch: `wait()` resolves once `open()` is called. */
class Gate {
  private release!: () => void;
  readonly opened = new Promise<void>((r) => (this.release = r));
  open(): void {
    this.release();
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('chatd - one connection\'s requests take effect in the order sent', function () {
  this.timeout(30_000);
  let chatd: LocalChatd | undefined;
  let clients: ChatClient[];

  beforeEach(() => {
    chatd = undefined;
    clients = [];
  });
  afterEach(async () => {
    for (const c of clients) await c.destroy().catch(() => {});
    await chatd?.stop();
  });

  async function start(env: Record<string, string> = {}): Promise<ChatdServer> {
    chatd = await startLocalChatd({ CHATD_RATE_BURST: '100000', ...env });
    return chatd.server;
  }
  async function client(name?: string, channel = 1): Promise<ChatClient> {
    const c = name ? await loggedIn(chatd!.port, name, channel) : await ChatClient.connect(chatd!.port);
    clients.push(c);
    return c;
  }

  /** Holds every login (or move) until the returned gate opens; `calls` counts them. */
  function holdShardOp(server: ChatdServer, op: 'login' | 'move'): { gate: Gate; calls: () => number } {
    const shards = server.shards as unknown as Record<string, (...a: unknown[]) => Promise<void>>;
    const real = shards[op]!.bind(server.shards);
    const gate = new Gate();
    let calls = 0;
    shards[op] = async (...args: unknown[]) => {
      calls++;
      await gate.opened;
      return real(...args);
    };
    return { gate, calls: () => calls };
  }

  function connections(server: ChatdServer): ClientConnection[] {
    return [...(server as unknown as { connections: Set<ClientConnection> }).connections];
  }

  const replyTo = (c: ChatClient, id: number): Reply => {
    const r = c.frames.find((f) => f.id === id);
    expect(r, `a reply to ${id}`).to.not.equal(undefined);
    return r as Reply;
  };
  const indexOf = (c: ChatClient, id: number): number => c.frames.findIndex((f) => f.id === id);
  const expectOnce = (c: ChatClient, ids: number[]): void => {
    const wrong = ids.filter((id) => c.repliesById.get(id) !== 1).map((id) => [id, c.repliesById.get(id) ?? 0]);
    expect(wrong, 'ids without exactly one reply').to.deep.equal([]);
  };
  const code = (r: Frame): string | undefined => (r.error as { code?: string } | undefined)?.code;

  it('login, /찾기, move, find, /channel, find, logout in one write: each sees the ones before it', async () => {
    const server = await start();
    const observer = await client('Observer', 20);
    const held = holdShardOp(server, 'login');
    const c = await client();
    const name = '타락파워전사';
    const reqs = [
      { op: 'login', id: 1, name, channel: 3 },
      { op: 'chat', id: 2, text: `/찾기 ${name}` },
      { op: 'move', id: 3, channel: 7 },
      { op: 'find', id: 4, name },
      { op: 'chat', id: 5, text: '/channel 9' },
      { op: 'find', id: 6, name },
      { op: 'ping', id: 7 },
      { op: 'logout', id: 8 },
      { op: 'ping', id: 9 },
    ];
    await c.sendRaw(Buffer.concat(reqs.map((r) => frame(r))));
    await sleep(150); // the login is held at the shard: nothing after it may have run
    expect(held.calls()).to.equal(1);
    expect(c.frames, 'no reply while the login is in flight').to.deep.equal([]);
    const conn = connections(server).find((k) => k.waiting !== undefined)!;
    expect(conn.waiting!.map((r) => r.id)).to.deep.equal([2, 3, 4, 5, 6, 7, 8, 9]);
    expect(conn.inFlight, 'waiting requests count as in flight').to.equal(9);
    expect(server.service.counters.waited).to.equal(8);
    held.gate.open();
    await Promise.race([c.closed, sleep(5000)]);
    expect(c.isClosed, 'closed after the logout').to.equal(true);
    expectOnce(c, reqs.map((r) => r.id));
    for (const r of reqs) expect(replyTo(c, r.id).ok, JSON.stringify(replyTo(c, r.id))).to.equal(true);
    expect(replyTo(c, 2)).to.deep.include({ command: 'find', text: `${name}님은 3채널에 있습니다.` });
    expect(replyTo(c, 4)).to.deep.include({ online: true, channel: 7 });
    expect(replyTo(c, 6)).to.deep.include({ online: true, channel: 9 });
    // Replies to a barrier come before those of everything sent after it.
    for (const [barrier, later] of [[1, 2], [3, 4], [5, 6], [7, 8], [8, 9]] as const) {
      expect(indexOf(c, barrier), `reply ${barrier} before reply ${later}`).to.be.below(indexOf(c, later));
    }
    expect((await observer.request({ op: 'find', name })).online, 'logged out').to.equal(false);
  });

  it('pipelined finds are not serialized: all reach the shards before any is answered', async () => {
    const server = await start();
    await client('Bob', 4);
    const c = await client('Alice');
    const shards = server.shards as unknown as { sendFind: (...a: unknown[]) => void };
    const real = shards.sendFind.bind(server.shards);
    const heldFinds: unknown[][] = [];
    shards.sendFind = (...args: unknown[]) => void heldFinds.push(args);
    const ids = Array.from({ length: 40 }, (_, i) => 100 + i);
    await c.sendRaw(Buffer.concat(ids.map((id) => frame({ op: id % 2 ? 'find' : 'chat', id, ...(id % 2 ? { name: 'bob' } : { text: '/find bob' }) }))));
    for (let t = 0; heldFinds.length < ids.length && t < 100; t++) await sleep(20);
    expect(heldFinds.length, 'every find sent to its shard at once').to.equal(ids.length);
    const conn = connections(server).find((k) => k.inFlight > 0)!;
    expect(conn.barrier).to.equal(false);
    expect(conn.waiting).to.equal(undefined);
    shards.sendFind = real;
    for (const a of heldFinds) real(...a);
    await Promise.all(ids.map((id) => c.waitForFrame((f) => f.id === id, 5000)));
    expectOnce(c, ids);
    for (const id of ids) expect(JSON.stringify(replyTo(c, id))).to.match(/"channel":4/);
  });

  it('a barrier that fails: later requests run as after it (login NAME_TAKEN, then find NOT_LOGGED_IN, then a login that succeeds)', async () => {
    const server = await start();
    await client('Taken', 2);
    const held = holdShardOp(server, 'login');
    const c = await client();
    const reqs = [
      { op: 'login', id: 1, name: 'TAKEN', channel: 1 },
      { op: 'find', id: 2, name: 'taken' },
      { op: 'move', id: 3, channel: 5 },
      { op: 'login', id: 4, name: 'Fresh', channel: 6 },
      { op: 'chat', id: 5, text: '/찾기 Fresh' },
    ];
    await c.sendRaw(Buffer.concat(reqs.map((r) => frame(r))));
    await sleep(100);
    held.gate.open();
    await Promise.all(reqs.map((r) => c.waitForFrame((f) => f.id === r.id, 5000)));
    expect(code(replyTo(c, 1))).to.equal('NAME_TAKEN');
    expect(code(replyTo(c, 2))).to.equal('NOT_LOGGED_IN');
    expect(code(replyTo(c, 3))).to.equal('NOT_LOGGED_IN');
    expect(replyTo(c, 4)).to.deep.include({ ok: true, name: 'Fresh', channel: 6 });
    expect(replyTo(c, 5)).to.deep.include({ ok: true, text: 'Fresh님은 6채널에 있습니다.' });
    expect(held.calls(), 'the second login ran after the first failed').to.equal(2);
    await sleep(50);
    expectOnce(c, reqs.map((r) => r.id));
  });

  it('a move or logout refused at once (not logged in) holds nothing back; replies in the order sent', async () => {
    await start();
    const c = await client();
    await c.sendRaw(Buffer.concat([frame({ op: 'move', id: 1, channel: 2 }), frame({ op: 'ping', id: 2 }), frame({ op: 'chat', id: 3, text: '/channel 2' }), frame({ op: 'logout', id: 4 }), frame({ op: 'ping', id: 5 })]));
    await Promise.all([1, 2, 3, 4, 5].map((id) => c.waitForFrame((f) => f.id === id, 5000)));
    expect(c.frames.map((f) => [f.id, code(f) ?? 'ok'])).to.deep.equal([
      [1, 'NOT_LOGGED_IN'],
      [2, 'ok'],
      [3, 'NOT_LOGGED_IN'],
      [4, 'NOT_LOGGED_IN'],
      [5, 'ok'],
    ]);
    expect(c.isClosed).to.equal(false);
  });

  it('a login that times out: what waited behind it runs as not logged in, each answered once', async () => {
    const server = await start();
    const shards = server.shards as unknown as { login: (...a: unknown[]) => Promise<void> };
    shards.login = async () => {
      await sleep(200);
      throw new ClientError(ClientErrorCode.TIMEOUT, 'no reply from the directory in time');
    };
    const c = await client();
    await c.sendRaw(Buffer.concat([frame({ op: 'login', id: 1, name: 'Slow', channel: 1 }), frame({ op: 'find', id: 2, name: 'Slow' }), frame({ op: 'ping', id: 3 })]));
    await Promise.all([1, 2, 3].map((id) => c.waitForFrame((f) => f.id === id, 5000)));
    expect(code(replyTo(c, 1))).to.equal('TIMEOUT');
    expect(code(replyTo(c, 2))).to.equal('NOT_LOGGED_IN');
    expect(replyTo(c, 3).ok).to.equal(true);
    expect(indexOf(c, 1)).to.be.below(indexOf(c, 2));
    expectOnce(c, [1, 2, 3]);
  });

  it('a bad frame after waiting requests: each is answered, then BAD_FRAME, then the close', async () => {
    const server = await start();
    const held = holdShardOp(server, 'login');
    const c = await client();
    const ids = Array.from({ length: 20 }, (_, i) => 10 + i);
    const reqs = [{ op: 'login', id: 1, name: 'Carol', channel: 2 }, ...ids.map((id) => ({ op: 'find', id, name: 'carol' }))];
    await c.sendRaw(Buffer.concat([...reqs.map((r) => frame(r)), rawFrame(0)]));
    await sleep(100);
    expect(c.frames).to.deep.equal([]);
    held.gate.open();
    await Promise.race([c.closed, sleep(5000)]);
    expect(c.isClosed).to.equal(true);
    expectOnce(c, [1, ...ids]);
    for (const id of ids) expect(replyTo(c, id)).to.deep.include({ ok: true, online: true, channel: 2 });
    const last = c.frames[c.frames.length - 1]!;
    expect(last.op).to.equal('error');
    expect(code(last)).to.equal('BAD_FRAME');
  });

  it('the grace after a bad frame restarts with each reply: a chain of slow barriers is answered in full', async () => {
    // CHATD_REQUEST_TIMEOUT_MS 300: a grace of 1.6 s; three moves of 700 ms each take 2.1 s.
    const server = await start({ CHATD_REQUEST_TIMEOUT_MS: '300' });
    const c = await client('Dave', 1);
    const shards = server.shards as unknown as { move: (...a: unknown[]) => Promise<void> };
    const real = shards.move.bind(server.shards);
    shards.move = async (...args: unknown[]) => {
      await sleep(700);
      return real(...args);
    };
    const reqs = [2, 3, 4].map((ch, i) => ({ op: 'move', id: 20 + i, channel: ch }));
    await c.sendRaw(Buffer.concat([...reqs.map((r) => frame(r)), frame({ op: 'find', id: 30, name: 'dave' }), rawFrame(0)]));
    await Promise.race([c.closed, sleep(6000)]);
    expectOnce(c, [20, 21, 22, 30]);
    expect(replyTo(c, 30)).to.deep.include({ online: true, channel: 4 });
    expect(code(c.frames[c.frames.length - 1]!)).to.equal('BAD_FRAME');
  });

  it('the client closes while requests wait: they are dropped, the late login is taken back', async () => {
    const server = await start();
    const observer = await client('Observer', 20);
    const held = holdShardOp(server, 'login');
    const c = await client();
    await c.sendRaw(Buffer.concat([frame({ op: 'login', id: 1, name: 'Gone', channel: 1 }), ...Array.from({ length: 50 }, (_, i) => frame({ op: 'find', id: 2 + i, name: 'gone' })), frame({ op: 'logout', id: 99 })]));
    await sleep(100);
    const conn = connections(server).find((k) => k.waiting !== undefined)!;
    expect(conn.waiting!.length).to.equal(51);
    await c.destroy();
    await sleep(50);
    expect(conn.closed).to.equal(true);
    expect(conn.waiting, 'dropped with the connection').to.equal(undefined);
    held.gate.open();
    await sleep(300);
    expect(conn.waiting).to.equal(undefined);
    // No collector here: the reaper asks it first (600 ms), then the shard directly.
    let online: unknown = true;
    for (let t = 0; online !== false && t < 25; t++) {
      await sleep(100);
      online = (await observer.request({ op: 'find', name: 'Gone' })).online;
    }
    expect(online, 'the login that completed after the close is ended').to.equal(false);
    expect(server.sessions.get('gone')).to.equal(undefined);
  });

  it('shutdown while requests wait, past the grace: the login in flight and what waits get UNAVAILABLE, then the push; nothing runs after', async () => {
    // CHATD_REQUEST_TIMEOUT_MS 300: a grace of 1.6 s; the login is held past it.
    const server = await start({ CHATD_REQUEST_TIMEOUT_MS: '300' });
    const held = holdShardOp(server, 'login');
    const c = await client();
    await c.sendRaw(Buffer.concat([frame({ op: 'login', id: 1, name: 'Late', channel: 1 }), frame({ op: 'move', id: 2, channel: 3 }), frame({ op: 'find', id: 3, name: 'late' })]));
    await sleep(100);
    const t0 = Date.now();
    const stopping = chatd!.stop();
    await Promise.race([c.closed, sleep(8000)]);
    const closedMs = Date.now() - t0;
    held.gate.open();
    await stopping;
    expect(c.isClosed).to.equal(true);
    expect(closedMs, 'closed after the grace').to.be.within(1400, 6000);
    expectOnce(c, [1, 2, 3]);
    expect(c.frames.map((f) => [f.id, f.op, code(f)])).to.deep.equal([
      [1, 'login', 'UNAVAILABLE'],
      [2, 'move', 'UNAVAILABLE'],
      [3, 'find', 'UNAVAILABLE'],
      [undefined, 'error', 'UNAVAILABLE'],
    ]);
    expect((replyTo(c, 1).error as { message: string }).message).to.contain('not confirmed');
    expect((replyTo(c, 2).error as { message: string }).message).to.contain('not run');
  });

  it('thousands pipelined behind a slow login, rate limit on: the excess is RATE_LIMITED at once, the rest waits; one reply each', async () => {
    const server = await start({ CHATD_RATE_BURST: '500', CHATD_RATE_PER_SEC: '10' });
    const held = holdShardOp(server, 'login');
    const c = await client();
    const ids = Array.from({ length: 3000 }, (_, i) => 10 + i);
    await c.sendRaw(Buffer.concat([frame({ op: 'login', id: 1, name: 'Eve', channel: 1 }), ...ids.map((id) => frame({ op: 'find', id, name: 'eve' }))]));
    for (let t = 0; c.frames.length < 2450 && t < 200; t++) await sleep(20);
    await sleep(100);
    const early = c.frames.length;
    expect(early, 'the excess answered at once').to.be.within(2450, 2510);
    expect(c.frames.every((f) => code(f) === 'RATE_LIMITED')).to.equal(true);
    const conn = connections(server).find((k) => k.waiting !== undefined)!;
    expect(conn.waiting!.length + early, 'each one waits or was refused').to.equal(ids.length);
    held.gate.open();
    await Promise.all([1, ...ids].map((id) => c.waitForFrame((f) => f.id === id, 10_000)));
    expectOnce(c, [1, ...ids]);
    const after = c.frames.slice(early);
    expect(after[0]).to.deep.include({ op: 'login', id: 1, ok: true });
    expect(after.length).to.equal(ids.length + 1 - early);
    for (const f of after.slice(1)) expect(f).to.deep.include({ ok: true, online: true, channel: 1 });
  });

  it('thousands pipelined behind a slow login, no rate limit: reading pauses (bounded), then all succeed in order', async () => {
    const server = await start();
    const held = holdShardOp(server, 'login');
    const c = await client();
    const ids = Array.from({ length: 5000 }, (_, i) => 10 + i);
    await c.sendRaw(Buffer.concat([frame({ op: 'login', id: 1, name: 'Frank', channel: 1 }), ...ids.map((id) => frame({ op: 'ping', id }))]));
    await sleep(300);
    const conn = connections(server).find((k) => k.waiting !== undefined)!;
    const waiting = conn.waiting!.length;
    expect(waiting, 'reading paused near the in-flight limit').to.be.within(1000, conn.maxWaiting);
    expect(c.frames).to.deep.equal([]);
    held.gate.open();
    await Promise.all([1, ...ids].map((id) => c.waitForFrame((f) => f.id === id, 10_000)));
    expectOnce(c, [1, ...ids]);
    expect(c.frames.every((f) => f.ok === true)).to.equal(true);
    expect(c.frames.map((f) => f.id), 'answered in order').to.deep.equal([1, ...ids]);
  });

  it('past maxWaiting (only reachable by frames decoded in one go): RATE_LIMITED with its own message', async () => {
    const server = await start();
    const held = holdShardOp(server, 'login');
    const c = await client();
    c.send({ op: 'login', id: 1, name: 'Grace', channel: 1 });
    await sleep(100);
    const conn = connections(server).find((k) => k.barrier)!;
    const n = conn.maxWaiting + 10;
    // Straight into the handler, as a read loop without backpressure would.
    for (let i = 0; i < n; i++) server.service.onFrame(conn, { op: 'ping', id: 10 + i });
    expect(conn.waiting!.length).to.equal(conn.maxWaiting);
    held.gate.open();
    const ids = Array.from({ length: n }, (_, i) => 10 + i);
    await Promise.all([1, ...ids].map((id) => c.waitForFrame((f) => f.id === id, 10_000)));
    expectOnce(c, [1, ...ids]);
    const limited = c.frames.filter((f) => code(f) === 'RATE_LIMITED');
    expect(limited.length).to.equal(10);
    expect((limited[0]!.error as { message: string }).message).to.match(/waiting behind a login, move or logout/);
    expect(conn.inFlight).to.equal(0);
  });

  it('a login sent after a logout on the same connection is refused (the connection closes)', async () => {
    await start();
    const c = await client('Heidi', 1);
    await c.sendRaw(Buffer.concat([frame({ op: 'logout', id: 11 }), frame({ op: 'login', id: 12, name: 'Heidi', channel: 1 })]));
    await Promise.race([c.closed, sleep(5000)]);
    expectOnce(c, [11, 12]);
    expect(replyTo(c, 11).ok).to.equal(true);
    expect(code(replyTo(c, 12))).to.equal('UNAVAILABLE');
    expect(chatd!.server.sessions.size).to.equal(0);
  });
});
