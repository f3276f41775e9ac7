import { expect } from 'chai';
import pino from 'pino';
import { ChatdServer } from '../../../src/chatd/chatd-server';
import { legacyReplyBody, legacyRequestText } from '../../../src/chatd/legacy-gateway';
import { ShardServer } from '../../../src/channeld/shard-server';
import { loadConfig, type Config } from '../../../src/config';
import { Collector } from '../../../src/gc/collector';
import { Kind, Status } from '../../../src/cluster/kinds';
import { encodePayload } from '../../../src/cluster/messages';
import { OwnershipView } from '../../../src/cluster/ownership';
import { Endpoint } from '../../../src/ipc/endpoint';
import { LocalQueue, LocalTransport } from '../../../src/ipc/local/local-transport';
import { MTYPE_GC, MTYPE_LEGACY_REPLY, MTYPE_LEGACY_REQUEST, chatdMtype, shardMtype } from '../../../src/ipc/mtypes';
import { ChatClient, loggedIn } from '../../../test/helpers/chat-client';
import { okReply } from '../../../src/protocol/replies';
import { findText } from '../../../src/protocol/texts';

const log = pino({ level: 'silent' });

/**
 * chatD with its real TCP server and shards, over the in-process transport: the paths that
 * are hard to reach under PM2 (no collector, a shard that never answers, two chatDs).
 */
describe('chatd - whole front end over the local transport', () => {
  let queue: LocalQueue;
  let closers: (() => Promise<void>)[];
  let clients: ChatClient[];

  beforeEach(() => {
    queue = new LocalQueue(1 << 20, 8192);
    closers = [];
    clients = [];
  });
  afterEach(async () => {
    for (const c of clients) await c.destroy();
    for (const c of closers.reverse()) await c().catch(() => {});
    queue.remove();
  });

  const config = (env: Record<string, string> = {}): Config =>
    loadConfig({ CHATD_PORT: '0', CHANNELD_SHARDS: '2', SHARD_RECOVERY_MS: '100', CHATD_REQUEST_TIMEOUT_MS: '300', ...env });

  function transport(): LocalTransport {
    const t = new LocalTransport(queue);
    closers.push(() => t.close());
    return t;
  }

  /** The membership epoch 1 of shards 0..n-1 (docs/resharding.md). */
  const view1 = (n: number) => ({ epoch: 1, members: [[0, n - 1]] as [number, number][] });

  /**
   * A stand-in collector for a cluster's first start: answers HELLO with "no chatD yet", so
   * fresh shards go live empty (a shard never goes live on a timer), and heartbeats with the
   * membership (epoch 1 of `n` shards: chatD routes by it). `closeStandIn()` stops it (the
   * collector "away"; chatD keeps the view it had).
   */
  let standIn: (() => Promise<void>) | undefined;
  function bootstrapGc(n: number, hello = true): void {
    const t = new LocalTransport(queue);
    const e = new Endpoint(t, { mtype: MTYPE_GC, incarnation: 3, maxBatchBytes: 4096 });
    e.start((rec, reply) => {
      if (rec.kind === Kind.HELLO && reply && hello) reply(Status.OK, encodePayload('helloReply', { chatds: [], view: view1(n) }));
      if (rec.kind === Kind.HEARTBEAT && reply) {
        const live = Array.from({ length: n }, (_, i): [number, number] => [i, 500 + i]);
        reply(Status.OK, encodePayload('membership', { shards: live, view: { ...view1(n), settled: true } }));
      }
    });
    let closed = false;
    standIn = async () => {
      if (closed) return;
      closed = true;
      await e.close();
      await t.close();
    };
    closers.push(standIn);
  }
  const closeStandIn = async (): Promise<void> => standIn?.();
  beforeEach(() => {
    standIn = undefined;
  });

  async function shards(n: number, start = true): Promise<ShardServer[]> {
    const out: ShardServer[] = [];
    bootstrapGc(n);
    for (let i = 0; i < n; i++) {
      const e = new Endpoint(transport(), { mtype: shardMtype(i), incarnation: 500 + i, maxBatchBytes: 4096 });
      const s = new ShardServer(e, { shard: i, recoveryMs: 50, log });
      closers.push(async () => {
        s.stop();
        await e.close();
      });
      if (start) s.start();
      out.push(s);
    }
    if (start) await Promise.all(out.map((s) => s.whenLive()));
    return out;
  }

  async function chatd(cfg: Config, index = 0): Promise<{ server: ChatdServer; port: number }> {
    const t = transport();
    const e = new Endpoint(t, { mtype: chatdMtype(index), incarnation: 900 + index, maxBatchBytes: 4096 });
    const server = new ChatdServer(cfg, t, e, log, index);
    const address = await server.start();
    closers.push(() => server.stop());
    return { server, port: address.port };
  }

  async function client(port: number, name?: string, channel = 1): Promise<ChatClient> {
    const c = name ? await loggedIn(port, name, channel) : await ChatClient.connect(port);
    clients.push(c);
    return c;
  }

  it('find replies (both forms, online and offline, en and ko) are byte for byte what okReply + JSON.stringify give', async () => {
    await shards(2);
    const { port } = await chatd(config());
    await client(port, '타락파워전사', 3);
    await client(port, 'Bob_7', 12);
    const a = await client(port, 'Alice', 1);
    const cases: { req: Record<string, unknown>; expected: object }[] = [];
    const add = (id: number, req: Record<string, unknown>, expected: object) => cases.push({ req: { ...req, id }, expected });
    add(10, { op: 'find', name: 'bob_7' }, okReply('find', 10, { name: 'Bob_7', online: true, channel: 12 }));
    add(11, { op: 'find', name: '타락파워전사' }, okReply('find', 11, { name: '타락파워전사', online: true, channel: 3 }));
    add(12, { op: 'find', name: 'Nobody_Here' }, okReply('find', 12, { name: 'Nobody_Here', online: false }));
    for (const [i, [text, lang, name]] of ([['/찾기 타락파워전사', 'ko', '타락파워전사'], ['/find BOB_7', 'en', 'BOB_7'], ['/찾기 유령', 'ko', '유령'], ['/find ghost', 'en', 'ghost']] as const).entries()) {
      const online = name.toLowerCase() === 'bob_7' ? { name: 'Bob_7', online: true, channel: 12 } : name === '타락파워전사' ? { name, online: true, channel: 3 } : { name, online: false };
      add(20 + i, { op: 'chat', text }, okReply('chat', 20 + i, { command: 'find', result: online, text: findText(lang, online) }));
    }
    for (const c of cases) await a.request(c.req);
    for (const c of cases) {
      const text = a.texts.find((t) => t.startsWith(`{"op":"${String(c.req.op)}","id":${String(c.req.id)},`));
      expect(text, JSON.stringify(c.req)).to.equal(JSON.stringify(c.expected));
    }
  });

  it('ends a closed connection within 2 s with no collector running (direct removal)', async () => {
    await shards(2);
    const { port } = await chatd(config());
    const a = await client(port, 'Alice');
    const b = await client(port, 'Bob');
    await a.destroy();
    const t0 = Date.now();
    for (;;) {
      const r = await b.request({ op: 'find', name: 'alice' });
      if (r.ok && r.online === false) break;
      expect(Date.now() - t0, 'offline within 2 s').to.be.below(2000);
      await new Promise((res) => setTimeout(res, 50));
    }
  });

  it('logout that cannot be confirmed: UNAVAILABLE within 2 s, the connection closes, removal retries go on', async () => {
    const [s0] = await shards(1);
    const { server, port } = await chatd(config({ CHANNELD_SHARDS: '1' }));
    const a = await client(port, 'Alice');
    const b = await client(port, 'Bob');
    // The shard stops answering: removals cannot be confirmed (and no collector runs).
    const endpoint = (s0 as unknown as { endpoint: Endpoint }).endpoint;
    const receiver = endpoint.receiver!;
    await receiver.close();
    const t0 = Date.now();
    const r = await a.request({ op: 'logout', id: 9 }, 5000);
    expect(r).to.deep.include({ op: 'logout', id: 9, ok: false });
    expect((r.error as { code: string }).code).to.equal('UNAVAILABLE');
    expect(Date.now() - t0).to.be.below(2000);
    await a.closed;
    expect(a.repliesById.get(9)).to.equal(1);
    expect((await b.request({ op: 'ping' })).ok, 'others unaffected').to.equal(true);
    expect(server.reaper.counters.retries, 'removal retried in the background').to.be.greaterThan(0);
  });

  it('logout pipelined behind finds: every request gets its one reply before the close', async () => {
    await shards(2);
    const { port } = await chatd(config());
    const a = await client(port, 'Alice');
    await client(port, 'Bob');
    for (let i = 0; i < 50; i++) a.send({ op: 'find', id: 1000 + i, name: i % 2 ? 'bob' : 'nobody' });
    a.send({ op: 'logout', id: 2000 });
    a.send({ op: 'ping', id: 3000 }); // in the same segment as the logout: answered too
    await a.closed;
    for (let i = 0; i < 50; i++) expect(a.repliesById.get(1000 + i), `find ${i}`).to.equal(1);
    expect(a.repliesById.get(2000)).to.equal(1);
    expect(a.repliesById.get(3000)).to.equal(1);
    const logout = a.frames.find((f) => f.id === 2000);
    expect(logout).to.deep.include({ op: 'logout', ok: true });
  });

  it('answers TIMEOUT when the owning shard never answers, exactly once', async () => {
    const s = await shards(2, false); // endpoints exist, nobody receives
    void s;
    const { port } = await chatd(config());
    const c = await client(port);
    const r = await c.request({ op: 'login', id: 5, name: 'Alice', channel: 1 });
    expect(r).to.deep.include({ op: 'login', id: 5, ok: false });
    expect((r.error as { code: string }).code).to.equal('TIMEOUT');
    await new Promise((res) => setTimeout(res, 200));
    expect(c.repliesById.get(5)).to.equal(1);
  });

  it('answers UNAVAILABLE while a restarted shard waits for its resyncs', async () => {
    bootstrapGc(1, false); // heartbeats answered (chatD routes by epoch 1), HELLO not
    const { port } = await chatd(config({ CHANNELD_SHARDS: '1' }));
    const e = new Endpoint(transport(), { mtype: shardMtype(0), incarnation: 77, maxBatchBytes: 4096 });
    const s = new ShardServer(e, { shard: 0, recoveryMs: 60_000, log });
    closers.push(async () => {
      s.stop();
      await e.close();
    });
    s.start(); // no collector answers its HELLO: it stays recovering
    const c = await client(port);
    const r = await c.request({ op: 'login', id: 3, name: 'Alice', channel: 1 });
    expect(r).to.deep.include({ op: 'login', id: 3, ok: false });
    expect((r.error as { code: string }).code).to.equal('UNAVAILABLE');
  });

  /** Kills shard `i` of `list` (its process and directory gone) and starts a new incarnation of it. */
  async function restartShard(list: ShardServer[], i: number, _shards: number, incarnation: number, recoveryMs = 100): Promise<ShardServer> {
    const old = list[i]! as unknown as { endpoint: Endpoint };
    list[i]!.stop();
    await old.endpoint.close();
    const e = new Endpoint(transport(), { mtype: shardMtype(i), incarnation, maxBatchBytes: 4096 });
    const s = new ShardServer(e, { shard: i, recoveryMs, log });
    closers.push(async () => {
      s.stop();
      await e.close();
    });
    s.start();
    list[i] = s;
    return s;
  }

  /** find from `c` for `name`: the reply's online flag, or its error code. */
  async function findState(c: ChatClient, name: string): Promise<string> {
    const r = await c.request({ op: 'find', name }, 3000);
    if (!r.ok) return (r.error as { code: string }).code;
    return r.online ? `online:${String(r.channel)}` : 'offline';
  }

  it('defect 1 - a shard restarted while the collector is away stays UNAVAILABLE past SHARD_RECOVERY_MS, never "offline"; complete once the collector is back', async function () {
    this.timeout(15_000);
    const list = await shards(1);
    const cfg = config({ CHANNELD_SHARDS: '1', HEARTBEAT_MS: '50', DEAD_AFTER_MS: '300' });
    const { port } = await chatd(cfg);
    const a = await client(port, 'Alice', 4);
    const b = await client(port, 'Bob', 5);
    // gc "stopped" (none runs), the shard SIGKILLed and restarted by PM2.
    await closeStandIn();
    const fresh = await restartShard(list, 0, 1, 601, 100);
    await new Promise((r) => setTimeout(r, 600)); // well past SHARD_RECOVERY_MS (100 ms)
    expect(fresh.state, 'no going live on a timer').to.equal('recovering');
    for (const name of ['alice', 'bob']) expect(await findState(b, name), `find ${name} while recovering`).to.equal('UNAVAILABLE');
    const login = await (await client(port)).request({ op: 'login', name: 'Alice', channel: 1 });
    expect((login.error as { code: string } | undefined)?.code, 'no second login while recovering').to.equal('UNAVAILABLE');
    // gc comes back (a real collector, fresh table): HELLO answered, RESYNC, SYNC, live.
    const gcT = transport();
    const gcE = new Endpoint(gcT, { mtype: MTYPE_GC, incarnation: 33, maxBatchBytes: 4096 });
    const gc = new Collector({ endpoint: gcE, config: { shards: 1, deadAfterMs: 300, heartbeatMs: 50 }, log, drain: () => 0, liveness: () => true, timings: { warmupMs: 300, tickMs: 20 } });
    gc.start();
    closers.push(async () => {
      gc.stop();
      await gcE.close();
    });
    await fresh.whenLive();
    // The first answer may come from the new shard incarnation before chatD's membership
    // names it: UNAVAILABLE once (a stranger's reply), then right.
    const t0 = Date.now();
    for (let st = await findState(b, 'alice'); st !== 'online:4'; st = await findState(b, 'alice')) {
      expect(st, 'never "offline" for a connected character').to.equal('UNAVAILABLE');
      expect(Date.now() - t0, 'alice online again').to.be.below(2000);
    }
    expect(await findState(b, 'alice')).to.equal('online:4');
    expect(await findState(a, 'bob')).to.equal('online:5');
  });

  it('defect 1 - a RESYNC that never comes: chatD resyncs the shard whose incarnation changed in the membership, and the shard waits for it', async function () {
    this.timeout(15_000);
    const list = await shards(2);
    const cfg = config({ HEARTBEAT_MS: '50' });
    const { port } = await chatd(cfg);
    await closeStandIn();
    // A collector that answers heartbeats and HELLOs but whose RESYNCs are lost.
    let shard0Inc = 500;
    const gcT = transport();
    const gcE = new Endpoint(gcT, { mtype: MTYPE_GC, incarnation: 34, maxBatchBytes: 4096 });
    gcE.start((rec, reply) => {
      if (!reply) return;
      if (rec.kind === Kind.HEARTBEAT) reply(Status.OK, encodePayload('membership', { shards: [[0, shard0Inc], [1, 501]], view: { ...view1(2), settled: true } }));
      else if (rec.kind === Kind.HELLO) reply(Status.OK, encodePayload('helloReply', { chatds: [[chatdMtype(0), 900]], view: view1(2) }));
    });
    closers.push(() => gcE.close());
    const names: string[] = [];
    const v = new OwnershipView(1, [0, 1]);
    for (let i = 0; names.length < 3; i++) if (v.ownerOfKey(`zed${i}`) === 0) names.push(`Zed${i}`);
    const cs = [];
    for (const [i, n] of names.entries()) cs.push(await client(port, n, i + 1));
    await new Promise((r) => setTimeout(r, 200)); // chatD has seen shard 0 at incarnation 500
    const fresh = await restartShard(list, 0, 2, 777, 100);
    await new Promise((r) => setTimeout(r, 300));
    expect(fresh.state, 'the HELLO named a chatD that has not resynced').to.equal('recovering');
    expect(await findState(cs[0]!, names[1]!)).to.equal('UNAVAILABLE');
    shard0Inc = 777; // the collector's membership now shows the restarted shard
    await fresh.whenLive();
    for (const [i, n] of names.entries()) expect(await findState(cs[0]!, n), n).to.equal(`online:${i + 1}`);
  });

  it('defect 5 - 200 legacy requests whose replies nobody reads do not cut chatD off from its shards (16 KiB queue, no gc)', async function () {
    this.timeout(20_000);
    queue = new LocalQueue(16384, 8192); // the kernel's default: 16 unread 1 KiB replies fill it
    await shards(2);
    const { server, port } = await chatd(config({ CHATD_REQUEST_TIMEOUT_MS: '1000' }));
    const a = await client(port, 'Alice', 2);
    const peer = transport(); // a C peer: 200 requests on mtype 1, replies on mtype 2 never read
    for (let i = 0; i < 200; i++) peer.send(MTYPE_LEGACY_REQUEST, legacyReplyBody(i % 2 ? '/find alice' : '/찾기 nobody'));
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    const replies = await Promise.all(Array.from({ length: 40 }, () => a.request({ op: 'find', name: 'alice' }, 5000)));
    const failed = replies.filter((r) => !r.ok || r.online !== true);
    expect(failed.slice(0, 3), `${failed.length} of 40 finds failed`).to.deep.equal([]);
    expect(Date.now() - t0).to.be.below(3000);
    const legacy = server.legacy.counters as unknown as Record<string, number>;
    expect(legacy.shed, 'legacy requests shed (counted) once their replies hold half the queue').to.be.greaterThan(0);
    expect(queue.stat().bytes, 'unread legacy replies bounded to half the queue').to.be.at.most(8192 + 2048);
  });

  it('forwards a whisper to a character held by another chatD', async () => {
    await shards(2);
    const one = await chatd(config(), 0);
    const two = await chatd(config(), 1);
    const a = await client(one.port, 'Alice');
    const b = await client(two.port, '보라');
    const r = await a.request({ op: 'whisper', to: '보라', text: 'hi there' });
    expect(r.ok).to.equal(true);
    const push = await b.waitForPush((f) => f.op === 'whisper');
    expect(push).to.deep.equal({ op: 'whisper', from: 'Alice', text: 'hi there' });
    const ko = await b.request({ op: 'chat', text: '/귓속말 alice 안녕' });
    expect(ko).to.deep.include({ ok: true, command: 'whisper', text: 'Alice님에게 귓속말을 보냈습니다.' });
    expect(await a.waitForPush((f) => f.op === 'whisper' && f.text === '안녕')).to.include({ from: '보라' });
  });

  it('drops pushes to a client that does not read, and keeps serving the others', async () => {
    await shards(2);
    const { server, port } = await chatd(config({ CHATD_WRITE_BUFFER_BYTES: '4096', CHATD_RATE_BURST: '100000' }));
    const slow = await client(port, 'Slow', 7);
    slow.socket.pause(); // stops reading: its socket buffers fill
    const talker = await client(port, 'Talker', 7);
    const text = 'x'.repeat(490); // 30,000 pushes of ~530 bytes: beyond any loopback socket buffering
    for (let i = 0; i < 30000; i++) talker.send({ op: 'chat', id: 100000 + i, text });
    const last = await talker.request({ op: 'ping' }, 20_000);
    expect(last.ok).to.equal(true);
    const conns = (server as unknown as { connections: Set<{ droppedPushes: number }> }).connections;
    const dropped = [...conns].reduce((n, c) => n + c.droppedPushes, 0);
    expect(dropped, 'pushes dropped to the slow reader').to.be.greaterThan(0);
  });

  it('answers legacy C requests on mtype 1 with the chat text on mtype 2', async () => {
    await shards(2);
    const { port } = await chatd(config());
    await client(port, '타락파워전사', 3);
    const c = transport();
    const replies: string[] = [];
    c.receive(MTYPE_LEGACY_REPLY, (batch) => {
      for (const m of batch) {
        expect(m.body.length).to.equal(1024);
        replies.push(legacyRequestText(m.body));
      }
    });
    c.send(MTYPE_LEGACY_REQUEST, legacyReplyBody('/찾기 타락파워전사'));
    c.send(MTYPE_LEGACY_REQUEST, legacyReplyBody('/find nobody'));
    c.send(MTYPE_LEGACY_REQUEST, legacyReplyBody('/dance'));
    const t0 = Date.now();
    while (replies.length < 3 && Date.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 20));
    expect(replies).to.have.members(['타락파워전사님은 3채널에 있습니다.', 'nobody is not online.', 'unknown command: /dance']);
  });
});
