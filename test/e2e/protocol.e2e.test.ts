import { expect } from 'chai';
import { ChatClient, type Frame, type Reply, frame, rawFrame } from '../helpers/chat-client';
import { Cluster, daemonRunningFor, isAlive, namesOnShard, queueExistsByKey, sleep, useCluster } from '../helpers/cluster';
import {
  cleanupChecks,
  closesWithin,
  expectEachReplyOnce,
  expectError,
  expectErrorPush,
  expectKeys,
  expectOk,
} from './e2e-support';

/**
 * PROTOCOL.md over real TCP against a real cluster (PM2, SysV queue, 2 shards): every op,
 * every error code, the framing rules, slash commands in English and Korean, pushes, and the
 * failure codes when a shard stops. The rate limit is made small for this cluster.
 */

const SHARDS = 2;
const RATE_BURST = 20;
const RATE_PER_SEC = 10;
const REQUEST_TIMEOUT_MS = 1500; // the default CHATD_REQUEST_TIMEOUT_MS

let seq = 0;
/** A name no other test of this file uses. */
const uniq = (prefix: string): string => `${prefix}${++seq}`;

describe('protocol (e2e): PROTOCOL.md over TCP', function () {
  this.timeout(30_000);
  const cluster = useCluster({
    shards: SHARDS,
    label: 'protocol',
    env: { CHATD_RATE_BURST: String(RATE_BURST), CHATD_RATE_PER_SEC: String(RATE_PER_SEC) },
  });

  const client = (): Promise<ChatClient> => cluster().client();
  const login = (name: string, channel: number): Promise<ChatClient> => cluster().login(name, channel);

  /** An observer that is logged in, for finds. */
  let observer: ChatClient;
  before(async () => {
    observer = await login(uniq('Observer'), 20);
  });
  const findFrom = (c: ChatClient, name: string): Promise<Reply> => c.request({ op: 'find', name });

  /** Sends one frame and returns the next frame received (for replies with `id: null`). */
  async function sendAndNext(c: ChatClient, obj: unknown): Promise<Frame> {
    const from = c.frames.length;
    c.send(obj);
    return c.waitForFrame(() => true, 3000, from);
  }

  describe('ops: success shapes', () => {
    it('ping - works before login; the reply is exactly {op,id,ok}', async () => {
      const c = await client();
      const r = await c.request({ op: 'ping', id: 0 });
      expect(r).to.deep.equal({ op: 'ping', id: 0, ok: true });
      const max = await c.request({ op: 'ping', id: 2 ** 31 - 1 });
      expect(max).to.deep.equal({ op: 'ping', id: 2 ** 31 - 1, ok: true });
      expectEachReplyOnce(c);
    });

    it('login - replies {op,id,ok,name,channel} with the name as given', async () => {
      const c = await client();
      const name = uniq('Kim_');
      const r = await c.request({ op: 'login', id: 77, name, channel: 7 });
      expect(r).to.deep.equal({ op: 'login', id: 77, ok: true, name, channel: 7 });
    });

    it('login - Hangul and astral-plane names count code points (24 allowed, 25 refused)', async () => {
      const hangul24 = '가나다라마바사아자차카타파하거너더러머버서어저처';
      expect([...hangul24].length).to.equal(24);
      const c = await client();
      expectOk(await c.request({ op: 'login', name: hangul24, channel: 1 }), 'login', { name: hangul24, channel: 1 });
      const astral24 = '𝒜'.repeat(24); // U+1D49C, a letter outside the BMP: 48 UTF-16 units
      const d = await client();
      expectOk(await d.request({ op: 'login', name: astral24, channel: 1 }), 'login', { name: astral24, channel: 1 });
      const e = await client();
      const r = await e.request({ op: 'login', id: 5, name: `${hangul24}거`, channel: 1 });
      expectError(r, 'BAD_REQUEST', 'login', 5);
    });

    it('find - online: {op,id,ok,name,online:true,channel}, the name as registered (case-insensitive lookup)', async () => {
      const name = uniq('MixedCase');
      await login(name, 4);
      const r = await findFrom(observer, name.toUpperCase());
      expect(r).to.deep.equal({ op: 'find', id: r.id, ok: true, name, online: true, channel: 4 });
    });

    it('find - offline: {op,id,ok,name,online:false} with `channel` absent', async () => {
      const r = await findFrom(observer, 'NobodyHere');
      expectKeys(r, ['op', 'id', 'ok', 'name', 'online']);
      expect(r).to.deep.equal({ op: 'find', id: r.id, ok: true, name: 'NobodyHere', online: false });
      expect('channel' in r).to.equal(false);
    });

    it('move - replies {op,id,ok,channel}; a find sent afterwards by another client sees it', async () => {
      const name = uniq('Mover');
      const c = await login(name, 1);
      const r = await c.request({ op: 'move', id: 9, channel: 12 });
      expect(r).to.deep.equal({ op: 'move', id: 9, ok: true, channel: 12 });
      expect(await findFrom(observer, name)).to.include({ ok: true, online: true, channel: 12 });
    });

    it('chat - a plain line is pushed to every other client in the channel only, as {op:"message",from,channel,text} without id', async () => {
      const a = uniq('Speaker');
      const sender = await login(a, 2);
      const same1 = await login(uniq('Listener'), 2);
      const same2 = await login(uniq('Listener'), 2);
      const other = await login(uniq('Elsewhere'), 3);
      const text = 'hello 안녕하세요 😀';
      const r = await sender.request({ op: 'chat', text });
      expect(r.ok, JSON.stringify(r)).to.equal(true);
      expect(r.op).to.equal('chat');
      expect(r).to.not.have.property('error');
      for (const l of [same1, same2]) {
        const p = await l.waitForPush((f) => f.op === 'message');
        expect(p).to.deep.equal({ op: 'message', from: a, channel: 2, text });
        expect('id' in p).to.equal(false);
      }
      // TCP keeps order: a push written before these pings' replies would be here by now.
      await other.request({ op: 'ping' });
      await sender.request({ op: 'ping' });
      expect(other.pushes, 'other channel got a push').to.deep.equal([]);
      expect(sender.pushes, 'sender got its own line').to.deep.equal([]);
    });

    it('chat - pushes follow a move: after `move`, lines go to the new channel', async () => {
      const a = await login(uniq('Hopper'), 5);
      const oldCh = await login(uniq('Stayer'), 5);
      const newCh = await login(uniq('Waiter'), 6);
      expectOk(await a.request({ op: 'move', channel: 6 }), 'move', { channel: 6 });
      await a.request({ op: 'chat', text: 'moved' });
      const p = await newCh.waitForPush((f) => f.op === 'message');
      expect(p).to.include({ text: 'moved', channel: 6 });
      await oldCh.request({ op: 'ping' });
      expect(oldCh.pushes).to.deep.equal([]);
    });

    it('whisper - replies {op,id,ok}; the target gets {op:"whisper",from,text} without id', async () => {
      const from = uniq('Whisperer');
      const to = uniq('Target');
      const a = await login(from, 1);
      const b = await login(to, 9);
      const r = await a.request({ op: 'whisper', id: 31, to: to.toLowerCase(), text: '비밀 message' });
      expect(r).to.deep.equal({ op: 'whisper', id: 31, ok: true });
      const p = await b.waitForPush((f) => f.op === 'whisper');
      expect(p).to.deep.equal({ op: 'whisper', from, text: '비밀 message' });
    });

    it('logout - replies {op,id,ok}, the server closes, and a find sent after the reply says offline', async () => {
      const name = uniq('Leaver');
      const c = await login(name, 3);
      const r = await c.request({ op: 'logout', id: 40 });
      expect(r).to.deep.equal({ op: 'logout', id: 40, ok: true });
      const f = await findFrom(observer, name);
      expect(f).to.deep.equal({ op: 'find', id: f.id, ok: true, name, online: false });
      const closed = await closesWithin(c, 2000);
      expect(closed.closed, 'server closed the connection after logout').to.equal(true);
      // The name is free again.
      const again = await login(name, 4);
      expect((await findFrom(observer, name)).channel).to.equal(4);
      await again.destroy();
    });
  });

  describe('consistency', () => {
    async function offlineWithin(name: string, ms: number): Promise<number> {
      const t0 = Date.now();
      for (;;) {
        const r = await findFrom(observer, name);
        expect(r.ok, JSON.stringify(r)).to.equal(true);
        if (r.online === false) return Date.now() - t0;
        if (Date.now() - t0 > ms) throw new Error(`${name} still online ${Date.now() - t0} ms after the connection ended`);
        await sleep(150);
      }
    }

    it('a client that closes its connection (FIN) goes offline within 2 s', async () => {
      const name = uniq('Quitter');
      const c = await login(name, 2);
      await c.end();
      await offlineWithin(name, 2000);
    });

    it('a client that resets its connection (RST) goes offline within 2 s', async () => {
      const name = uniq('Crasher');
      const c = await login(name, 2);
      await c.destroy();
      await offlineWithin(name, 2000);
    });
  });

  describe('slash commands', () => {
    let speaker: ChatClient;
    const speakerName = uniq('Commander');
    before(async () => {
      speaker = await login(speakerName, 1);
    });

    it('/찾기 NAME - online: result as find, exact Korean text with the registered name', async () => {
      const name = uniq('타락파워전사');
      await login(name, 3);
      const r = await speaker.request({ op: 'chat', text: `/찾기 ${name}` });
      expect(r).to.deep.equal({
        op: 'chat', id: r.id, ok: true, command: 'find',
        result: { name, online: true, channel: 3 },
        text: `${name}님은 3채널에 있습니다.`,
      });
      const cased = uniq('HeroKim');
      await login(cased, 11);
      const r2 = await speaker.request({ op: 'chat', text: `/찾기 ${cased.toLowerCase()}` });
      expect(r2.text).to.equal(`${cased}님은 11채널에 있습니다.`);
      expect(r2.result).to.deep.equal({ name: cased, online: true, channel: 11 });
    });

    it('/찾기 NAME - offline: result {name,online:false} without channel, exact Korean text', async () => {
      const r = await speaker.request({ op: 'chat', text: '/찾기 없는사람' });
      expect(r).to.deep.equal({
        op: 'chat', id: r.id, ok: true, command: 'find',
        result: { name: '없는사람', online: false },
        text: '없는사람님을 찾을 수 없습니다.',
      });
    });

    it('/find NAME - English: same result, an English line naming the character and channel', async () => {
      const name = uniq('Finder');
      await login(name, 8);
      const r = await speaker.request({ op: 'chat', text: `/find ${name}` });
      expectKeys(r, ['op', 'id', 'ok', 'command', 'result', 'text']);
      expect(r).to.include({ op: 'chat', ok: true, command: 'find' });
      expect(r.result).to.deep.equal({ name, online: true, channel: 8 });
      expect(r.text).to.be.a('string').that.includes(name).and.includes('8');
      expect(r.text).to.not.match(/[가-힣]/);
      const off = await speaker.request({ op: 'chat', text: '/find GhostPlayer' });
      expect(off.result).to.deep.equal({ name: 'GhostPlayer', online: false });
      expect(off.text).to.be.a('string').that.includes('GhostPlayer');
      expect(off.text).to.not.match(/[가-힣]/);
    });

    it('/w NAME MESSAGE and /귓속말 NAME MESSAGE - whisper pushes to the target', async () => {
      const to = uniq('Secret');
      const target = await login(to, 15);
      const r = await speaker.request({ op: 'chat', text: `/w ${to} psst  two spaces` });
      expect(r.ok, JSON.stringify(r)).to.equal(true);
      expect(r.op).to.equal('chat');
      const p = await target.waitForPush((f) => f.op === 'whisper');
      expect(p).to.deep.equal({ op: 'whisper', from: speakerName, text: 'psst  two spaces' });
      const r2 = await speaker.request({ op: 'chat', text: `/귓속말 ${to} 안녕` });
      expect(r2.ok, JSON.stringify(r2)).to.equal(true);
      const p2 = await target.waitForPush((f) => f.op === 'whisper' && f.text === '안녕');
      expect(p2).to.deep.equal({ op: 'whisper', from: speakerName, text: '안녕' });
    });

    it('/channel N and /채널 N - move; find and chat pushes follow', async () => {
      const name = uniq('Traveller');
      const c = await login(name, 1);
      const r = await c.request({ op: 'chat', text: '/channel 13' });
      expect(r.ok, JSON.stringify(r)).to.equal(true);
      expect((await findFrom(observer, name)).channel).to.equal(13);
      const r2 = await c.request({ op: 'chat', text: '/채널 14' });
      expect(r2.ok, JSON.stringify(r2)).to.equal(true);
      expect((await findFrom(observer, name)).channel).to.equal(14);
      const there = await login(uniq('Local'), 14);
      await c.request({ op: 'chat', text: 'arrived' });
      expect(await there.waitForPush((f) => f.op === 'message')).to.deep.equal({ op: 'message', from: name, channel: 14, text: 'arrived' });
    });

    it('known commands with missing or malformed arguments: BAD_REQUEST (op chat, id echoed)', async () => {
      const c = await login(uniq('Typo'), 1);
      for (const text of ['/find', '/찾기', '/find a b', '/find bad-name!', '/w', `/w ${speakerName}`, '/귓속말', '/channel', '/channel x', '/channel 0', '/채널 21', '/channel 99999']) {
        const r = await c.request({ op: 'chat', id: 500 + text.length, text });
        expectError(r, 'BAD_REQUEST', 'chat', 500 + text.length);
        await sleep(60); // stay under this cluster's small rate limit
      }
    });

    it('unknown commands: UNKNOWN_COMMAND', async () => {
      for (const text of ['/dance', '/춤', '/', '/findx Bob']) {
        const r = await speaker.request({ op: 'chat', id: 600, text });
        expectError(r, 'UNKNOWN_COMMAND', 'chat', 600);
      }
    });
  });

  describe('error codes', () => {
    it('NOT_LOGGED_IN - find, chat, whisper, move, logout before login (op and id echoed)', async () => {
      const c = await client();
      const reqs: Record<string, unknown>[] = [
        { op: 'find', id: 1, name: 'Someone' },
        { op: 'chat', id: 2, text: 'hi' },
        { op: 'chat', id: 3, text: '/찾기 Someone' },
        { op: 'whisper', id: 4, to: 'Someone', text: 'hi' },
        { op: 'move', id: 5, channel: 2 },
        { op: 'logout', id: 6 },
      ];
      for (const q of reqs) expectError(await c.request(q), 'NOT_LOGGED_IN', q.op as string, q.id as number);
      expect((await c.request({ op: 'ping', id: 7 })).ok).to.equal(true);
      expectEachReplyOnce(c);
    });

    it('ALREADY_LOGGED_IN - a second login on a connection, same or other name, also when pipelined', async () => {
      const name = uniq('Once');
      const c = await login(name, 1);
      expectError(await c.request({ op: 'login', id: 8, name, channel: 1 }), 'ALREADY_LOGGED_IN', 'login', 8);
      expectError(await c.request({ op: 'login', id: 9, name: uniq('Twice'), channel: 1 }), 'ALREADY_LOGGED_IN', 'login', 9);
      const d = await client();
      const [first, second] = await Promise.all([
        d.request({ op: 'login', id: 1, name: uniq('PipeA'), channel: 1 }),
        d.request({ op: 'login', id: 2, name: uniq('PipeB'), channel: 1 }),
      ]);
      expect(first!.ok, JSON.stringify(first)).to.equal(true);
      expectError(second!, 'ALREADY_LOGGED_IN', 'login', 2);
    });

    it('NAME_TAKEN - case-insensitive (ASCII and Ä/ä)', async () => {
      const name = uniq('Taken');
      await login(name, 1);
      const c = await client();
      const swapped = [...name].map((ch) => (ch === ch.toUpperCase() ? ch.toLowerCase() : ch.toUpperCase())).join('');
      expectError(await c.request({ op: 'login', id: 3, name: swapped, channel: 2 }), 'NAME_TAKEN', 'login', 3);
      const u = uniq('Ärger');
      await login(u, 1);
      expectError(await c.request({ op: 'login', id: 4, name: u.toLowerCase(), channel: 2 }), 'NAME_TAKEN', 'login', 4);
      // The refused connection can still log in another character.
      expect((await c.request({ op: 'login', name: uniq('Free'), channel: 2 })).ok).to.equal(true);
    });

    it('NAME_TAKEN - NFC and NFD Hangul are the same name, both ways; find by either form', async () => {
      const nfc = uniq('한글이름');
      const nfd = nfc.normalize('NFD');
      expect(nfd).to.not.equal(nfc);
      await login(nfc, 6);
      const c = await client();
      expectError(await c.request({ op: 'login', id: 5, name: nfd, channel: 1 }), 'NAME_TAKEN', 'login', 5);
      const byNfd = await findFrom(observer, nfd);
      expect(byNfd).to.deep.include({ ok: true, online: true, name: nfc, channel: 6 });

      const other = uniq('용사님');
      await login(other.normalize('NFD'), 7);
      expectError(await c.request({ op: 'login', id: 6, name: other, channel: 1 }), 'NAME_TAKEN', 'login', 6);
      const byNfc = await findFrom(observer, other);
      expect(byNfc).to.include({ ok: true, online: true, channel: 7 });
      // Registered as typed (NFD) or in its canonical form: the same name either way.
      expect(String(byNfc.name).normalize('NFC')).to.equal(other);
    });

    it('NOT_FOUND - whisper (op and /w) to an offline character', async () => {
      const c = await login(uniq('Lonely'), 1);
      expectError(await c.request({ op: 'whisper', id: 12, to: 'NoSuchPlayer', text: 'hi' }), 'NOT_FOUND', 'whisper', 12);
      expectError(await c.request({ op: 'chat', id: 13, text: '/w NoSuchPlayer hi' }), 'NOT_FOUND', 'chat', 13);
      expectError(await c.request({ op: 'chat', id: 14, text: '/귓속말 없는사람 안녕' }), 'NOT_FOUND', 'chat', 14);
    });

    it('BAD_REQUEST - schema failures keep the connection open; op/id echoed where valid, id null otherwise, op absent when unknown', async () => {
      const c = await client();
      const cases: [unknown, string | undefined, number | null][] = [
        [{ op: 'dance', id: 5 }, undefined, 5],
        [{ id: 6 }, undefined, 6],
        [{ op: 7, id: 7 }, undefined, 7],
        [{ op: 'dance' }, undefined, null],
        [{}, undefined, null],
        [{ op: 'ping' }, 'ping', null],
        [{ op: 'ping', id: -1 }, 'ping', null],
        [{ op: 'ping', id: 1.5 }, 'ping', null],
        [{ op: 'ping', id: '8' }, 'ping', null],
        [{ op: 'ping', id: null }, 'ping', null],
        [{ op: 'ping', id: 2 ** 31 }, 'ping', null],
        [{ op: 'ping', id: 9, extra: 1 }, 'ping', 9],
        [{ op: 'login', id: 10, name: 'bad name', channel: 1 }, 'login', 10],
        [{ op: 'login', id: 11, name: 'x'.repeat(25), channel: 1 }, 'login', 11],
        [{ op: 'login', id: 12, name: '', channel: 1 }, 'login', 12],
        [{ op: 'login', id: 13, name: 'Valid', channel: 0 }, 'login', 13],
        [{ op: 'login', id: 14, name: 'Valid', channel: 21 }, 'login', 14],
        [{ op: 'login', id: 15, name: 'Valid', channel: '3' }, 'login', 15],
        [{ op: 'login', id: 16, name: 'Valid' }, 'login', 16],
        [{ op: 'login', id: 17, name: 'Valid', channel: 1.5 }, 'login', 17],
        [{ op: 'login', name: 'Valid', channel: 1 }, 'login', null],
        // A schema error wins over NOT_LOGGED_IN.
        [{ op: 'find', id: 18 }, 'find', 18],
        [{ op: 'find', id: 19, name: 'a b' }, 'find', 19],
        [{ op: 'chat', id: 20, text: '' }, 'chat', 20],
        [{ op: 'chat', id: 21, text: 'a'.repeat(501) }, 'chat', 21],
        [{ op: 'whisper', id: 22, to: 'Bob' }, 'whisper', 22],
        [{ op: 'move', id: 23, channel: 0 }, 'move', 23],
        [{ op: 'logout', id: 24, extra: true }, 'logout', 24],
      ];
      for (const [req, op, id] of cases) {
        const f = await sendAndNext(c, req);
        expectError(f, 'BAD_REQUEST', op, id);
      }
      expect(c.isClosed).to.equal(false);
      expect(await c.request({ op: 'ping', id: 99 })).to.deep.equal({ op: 'ping', id: 99, ok: true });
    });

    it('BAD_REQUEST - text length counts code points: 500 Hangul or emoji pass, 501 fail', async () => {
      const c = await login(uniq('Talker'), 19);
      expect((await c.request({ op: 'chat', text: '가'.repeat(500) })).ok).to.equal(true);
      expect((await c.request({ op: 'chat', text: '😀'.repeat(500) })).ok).to.equal(true);
      expectError(await c.request({ op: 'chat', id: 3, text: '가'.repeat(501) }), 'BAD_REQUEST', 'chat', 3);
      expectError(await c.request({ op: 'whisper', id: 4, to: 'Someone', text: '😀'.repeat(501) }), 'BAD_REQUEST', 'whisper', 4);
    });

    it('RATE_LIMITED - a burst beyond CHATD_RATE_BURST: the excess is refused with op/id echoed, the connection stays usable', async () => {
      const c = await client();
      const n = RATE_BURST * 2;
      const burst = Buffer.concat(Array.from({ length: n }, (_, i) => frame({ op: 'ping', id: 1000 + i })));
      const replies: Promise<Reply>[] = Array.from({ length: n }, (_, i) => c.waitForFrame((f) => f.id === 1000 + i, 5000) as Promise<Reply>);
      await c.sendRaw(burst);
      const all = await Promise.all(replies);
      const ok = all.filter((r) => r.ok === true);
      const limited = all.filter((r) => r.ok === false);
      expect(ok.length, 'ok replies').to.be.within(RATE_BURST, RATE_BURST + 1);
      expect(ok.length + limited.length).to.equal(n);
      for (const r of limited) expectError(r, 'RATE_LIMITED', 'ping', r.id);
      for (const r of ok) expect(r).to.deep.equal({ op: 'ping', id: r.id, ok: true });
      expectEachReplyOnce(c);
      expect(c.isClosed).to.equal(false);
      // Out of tokens, a schema error still wins over RATE_LIMITED.
      expectError(await sendAndNext(c, { op: 'dance', id: 7 }), 'BAD_REQUEST', undefined, 7);
      await sleep(Math.ceil(2000 / RATE_PER_SEC) + 100);
      expect((await c.request({ op: 'ping' })).ok, 'tokens refill').to.equal(true);
    });
  });

  describe('framing', () => {
    let bystander: ChatClient;
    before(async () => {
      bystander = await login(uniq('Bystander'), 20);
    });

    const badFrames: [string, () => Buffer][] = [
      ['L = 0', () => rawFrame(0)],
      ['L above 8192 (header only, no body sent)', () => rawFrame(8193)],
      ['L = 2^32-1 (header only)', () => rawFrame(0xffffffff)],
      ['bytes that are not UTF-8', () => rawFrame(6, Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]))],
      ['a UTF-8-encoded surrogate (CESU)', () => rawFrame(5, Buffer.from([0x22, 0xed, 0xa0, 0x80, 0x22]))],
      ['a truncated UTF-8 sequence', () => rawFrame(4, Buffer.from([0x22, 0xea, 0xb0, 0x22]))],
      ['UTF-8 that is not JSON', () => rawFrame(5, 'hello')],
      ['JSON that is an array', () => rawFrame(5, '[1,2]')],
      ['JSON that is a string', () => rawFrame(4, '"hi"')],
      ['JSON that is a number', () => rawFrame(2, '42')],
      ['JSON null', () => rawFrame(4, 'null')],
    ];
    for (const [what, bytes] of badFrames) {
      it(`BAD_FRAME - ${what}: error push, that connection closed, others unaffected`, async () => {
        const victim = await client();
        await victim.sendRaw(bytes());
        const push = await victim.waitForPush((f) => f.op === 'error', 2000);
        expectErrorPush(push, 'BAD_FRAME');
        const closed = await closesWithin(victim, 2000);
        expect(closed.closed, 'victim connection closed').to.equal(true);
        expect(victim.frames, 'nothing but the error push').to.have.length(1);
        expect(bystander.isClosed).to.equal(false);
        expect((await bystander.request({ op: 'ping' })).ok).to.equal(true);
      });
    }

    it('BAD_FRAME - a bad frame after login: the character goes offline', async () => {
      const name = uniq('Glitch');
      const c = await login(name, 2);
      await c.sendRaw(rawFrame(3, 'bad'));
      expectErrorPush(await c.waitForPush((f) => f.op === 'error'), 'BAD_FRAME');
      await c.closed;
      const t0 = Date.now();
      for (;;) {
        const r = await findFrom(bystander, name);
        if (r.online === false) break;
        expect(Date.now() - t0, 'offline within 2 s').to.be.below(2000);
        await sleep(150);
      }
    });

    it('L = 8192 exactly is a frame (a schema error here, not BAD_FRAME)', async () => {
      const c = await client();
      const base = JSON.stringify({ op: 'ping', id: 5, pad: '' });
      const json = JSON.stringify({ op: 'ping', id: 5, pad: 'x'.repeat(8192 - base.length) });
      expect(Buffer.byteLength(json)).to.equal(8192);
      const f = await sendAndNext(c, JSON.parse(json));
      expectError(f, 'BAD_REQUEST', 'ping', 5);
      expect((await c.request({ op: 'ping' })).ok).to.equal(true);
    });

    it('split frames - requests written one byte at a time', async () => {
      const c = await client();
      const name = uniq('Slowpoke');
      const bytes = Buffer.concat([
        frame({ op: 'ping', id: 1 }),
        frame({ op: 'login', id: 2, name, channel: 10 }),
      ]);
      const replies = [1, 2].map((id) => c.waitForFrame((f) => f.id === id, 10_000));
      for (const b of bytes) {
        await c.sendRaw(Buffer.from([b]));
        await sleep(1);
      }
      const [ping, loginReply] = await Promise.all(replies);
      expect(ping).to.deep.equal({ op: 'ping', id: 1, ok: true });
      expect(loginReply).to.deep.equal({ op: 'login', id: 2, ok: true, name, channel: 10 });
      const find = Buffer.concat([frame({ op: 'find', id: 3, name: '한글' }), frame({ op: 'chat', id: 4, text: `/찾기 ${name}` })]);
      const more = [3, 4].map((id) => c.waitForFrame((f) => f.id === id, 10_000));
      for (const b of find) {
        await c.sendRaw(Buffer.from([b]));
        await sleep(1);
      }
      const [f3, f4] = await Promise.all(more);
      expect(f3).to.deep.equal({ op: 'find', id: 3, ok: true, name: '한글', online: false });
      expect((f4 as Reply).text).to.equal(`${name}님은 10채널에 있습니다.`);
      expectEachReplyOnce(c);
    });

    it('coalesced frames - many requests in one write, every one answered once', async () => {
      const name = uniq('Batcher');
      const c = await login(name, 17);
      const before = c.frames.length;
      const reqs: Record<string, unknown>[] = [
        ...Array.from({ length: 5 }, (_, i) => ({ op: 'ping', id: 10 + i })),
        ...Array.from({ length: 5 }, (_, i) => ({ op: 'find', id: 20 + i, name: i % 2 ? name : `Absent${i}` })),
        ...Array.from({ length: 4 }, (_, i) => ({ op: 'chat', id: 30 + i, text: i % 2 ? `/find ${name}` : `/찾기 ${name}` })),
      ];
      const waits = reqs.map((q) => c.waitForFrame((f) => f.id === q.id, 5000) as Promise<Reply>);
      await c.sendRaw(Buffer.concat(reqs.map((q) => frame(q))));
      const replies = await Promise.all(waits);
      replies.forEach((r, i) => {
        const q = reqs[i]!;
        expect(r.ok, JSON.stringify(r)).to.equal(true);
        expect(r.op).to.equal(q.op);
        if (q.op === 'find') {
          if (q.name === name) expect(r).to.include({ online: true, channel: 17, name });
          else expect(r).to.deep.equal({ op: 'find', id: q.id, ok: true, name: q.name, online: false });
        }
      });
      expect(replies[10]!.text).to.equal(`${name}님은 17채널에 있습니다.`);
      await sleep(100);
      expectEachReplyOnce(c);
      expect(c.frames.length - before, 'frames after the batch').to.equal(reqs.length);
    });
  });

  describe('TIMEOUT and UNAVAILABLE when shards stop', () => {
    /** Sends finds and checks that each gets exactly one reply, every one TIMEOUT or UNAVAILABLE. */
    async function expectShardFailure(c: ChatClient, names: string[]): Promise<string[]> {
      const t0 = Date.now();
      const replies = await Promise.all(names.map((name) => c.request({ op: 'find', name }, REQUEST_TIMEOUT_MS + 4000)));
      const codes = replies.map((r) => {
        expect(r.ok, JSON.stringify(r)).to.equal(false);
        expect(['TIMEOUT', 'UNAVAILABLE'], JSON.stringify(r)).to.include(r.error?.code);
        expectError(r, r.error!.code, 'find', r.id);
        return r.error!.code;
      });
      expect(Date.now() - t0, 'answered within the request timeout').to.be.below(REQUEST_TIMEOUT_MS + 1500);
      await sleep(300); // a second reply, if any, would come now
      expectEachReplyOnce(c);
      return codes;
    }

    async function waitFound(c: ChatClient, name: string, channel: number, timeoutMs: number): Promise<number> {
      const t0 = Date.now();
      for (;;) {
        const r = await c.request({ op: 'find', name }, 5000);
        if (r.ok && r.online === true) {
          expect(r.channel).to.equal(channel);
          return Date.now() - t0;
        }
        if (Date.now() - t0 > timeoutMs) throw new Error(`${name} not found again within ${timeoutMs} ms: ${JSON.stringify(r)}`);
        await sleep(200);
      }
    }

    it('SIGSTOP of one shard: its finds get one TIMEOUT or UNAVAILABLE each, the other shard still answers; SIGCONT recovers', async function () {
      this.timeout(40_000);
      const onShard0 = namesOnShard(0, SHARDS, 'StopA', 2);
      const onShard1 = namesOnShard(1, SHARDS, 'StopB', 4);
      const c = await login(onShard0[0]!, 1);
      const resident = onShard1[3]!;
      await login(resident, 16);
      const pid = await cluster().signal('channeld', 1, 'SIGSTOP');
      let codes: string[];
      try {
        codes = await expectShardFailure(c, onShard1.slice(0, 3));
        const ok = await c.request({ op: 'find', name: onShard0[1]! });
        expect(ok).to.include({ ok: true, online: false });
        const cmd = await c.request({ op: 'chat', text: `/찾기 ${onShard1[0]}` }, REQUEST_TIMEOUT_MS + 4000);
        expect(['TIMEOUT', 'UNAVAILABLE']).to.include(cmd.error?.code);
        expectError(cmd, cmd.error!.code, 'chat', cmd.id);
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      console.log(`      (stopped shard answered: ${codes.join(', ')})`);
      const ms = await waitFound(c, resident, 16, 10_000);
      console.log(`      (found again ${ms} ms after SIGCONT)`);
      expect(await cluster().pid('channeld', 1), 'same process, not restarted').to.equal(pid);
    });

    it('pm2 stop channeld: finds and logins get one TIMEOUT or UNAVAILABLE each; after restart the characters are found again', async function () {
      this.timeout(60_000);
      const name = uniq('Survivor');
      const c = await login(name, 18);
      const stop = await cluster().pm2(['stop', 'channeld']);
      expect(stop.code, stop.stderr).to.equal(0);
      try {
        await expectShardFailure(c, [name, ...namesOnShard(0, SHARDS, 'Gone', 2), ...namesOnShard(1, SHARDS, 'Gone', 2)]);
        const d = await client();
        const r = await d.request({ op: 'login', id: 3, name: uniq('Newcomer'), channel: 1 }, REQUEST_TIMEOUT_MS + 4000);
        expect(['TIMEOUT', 'UNAVAILABLE'], JSON.stringify(r)).to.include(r.error?.code);
        expectError(r, r.error!.code, 'login', 3);
      } finally {
        const restart = await cluster().pm2(['restart', 'channeld']);
        expect(restart.code, restart.stderr).to.equal(0);
      }
      await cluster().waitServing(Date.now() + 20_000);
      await waitFound(c, name, 18, 10_000);
      expect((await c.request({ op: 'ping' })).ok).to.equal(true);
    });
  });

  describe('end', () => {
    it('no client saw a duplicate reply or a broken stream', () => {
      expectEachReplyOnce(observer);
    });
    cleanupChecks(cluster);
  });
});

describe('protocol (e2e): idle timeout', function () {
  this.timeout(30_000);
  const IDLE_MS = 1000;
  const cluster = useCluster({ shards: 1, label: 'idle', env: { CHATD_IDLE_TIMEOUT_MS: String(IDLE_MS) } });

  it('an idle connection gets an error push and is closed; its character goes offline within 2 s', async () => {
    const name = uniq('Sleeper');
    const idle = await cluster().login(name, 1);
    const t0 = Date.now();
    const keeper = await cluster().login(uniq('Awake'), 1);
    const keep = setInterval(() => void keeper.request({ op: 'ping' }).catch(() => {}), IDLE_MS / 4);
    try {
      const closed = await closesWithin(idle, IDLE_MS * 4);
      const idleFor = Date.now() - t0;
      expect(closed.closed, 'idle connection closed').to.equal(true);
      expect(idleFor).to.be.within(IDLE_MS - 100, IDLE_MS * 3);
      expect(idle.pushes).to.have.length(1);
      expectErrorPush(idle.pushes[0]!);
      const closedAt = Date.now();
      for (;;) {
        const r = await keeper.request({ op: 'find', name });
        if (r.online === false) break;
        expect(Date.now() - closedAt, 'offline within 2 s of the close').to.be.below(2000);
        await sleep(100);
      }
      expect(keeper.isClosed, 'an active connection stays open').to.equal(false);
    } finally {
      clearInterval(keep);
    }
  });

  cleanupChecks(cluster);
});

describe('protocol (e2e): operating interface', function () {
  this.timeout(30_000);

  it('a bad configuration value stops the start with a message naming it; nothing runs, no queue is made', async () => {
    const bad = new Cluster({ label: 'bad-config', env: { CHANNELD_SHARDS: '0', CHANNELS: 'lots' } });
    try {
      let message = '';
      try {
        await bad.start();
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message, 'start must fail').to.not.equal('');
      expect(message).to.include('CHANNELD_SHARDS').and.include('CHANNELS');
      expect(await bad.jlist(), 'processes started').to.deep.equal([]);
      expect(queueExistsByKey(bad.mqKey), 'a queue was created').to.equal(false);
    } finally {
      await bad.stop();
    }
    expect(queueExistsByKey(bad.mqKey)).to.equal(false);
    if (bad.daemonPid !== undefined) expect(isAlive(bad.daemonPid), 'PM2 daemon left running').to.equal(false);
    expect(daemonRunningFor(bad.home)).to.equal(false);
  });
});
