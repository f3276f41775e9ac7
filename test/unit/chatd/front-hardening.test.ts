import { expect } from 'chai';
import { ChatClient, frame, loggedIn, rawFrame, type Frame } from '../../../test/helpers/chat-client';
import { startLocalChatd, type LocalChatd } from '../../../test/helpers/local-chatd';

/**
 * Front-end hardening (issue 7, defects 6 and 7): chatD over the local transport with real
 * TCP sockets, in mocha's process.
 */
describe('chatd front end - bad frames and frame deadlines', function () {
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

  async function start(env: Record<string, string> = {}): Promise<number> {
    chatd = await startLocalChatd({ CHATD_RATE_BURST: '100000', ...env });
    return chatd.port;
  }
  async function client(port: number, name?: string, channel = 1): Promise<ChatClient> {
    const c = name ? await loggedIn(port, name, channel) : await ChatClient.connect(port);
    clients.push(c);
    return c;
  }

  /** Requests of every kind that is answered later (shard round trips), ids 100.. */
  function slowRequests(): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (let i = 0; i < 20; i++) out.push({ op: 'find', id: 100 + i, name: i % 2 ? 'bob' : 'nobody' });
    out.push({ op: 'chat', id: 200, text: '/find bob' });
    out.push({ op: 'chat', id: 201, text: '/찾기 nobody' });
    out.push({ op: 'move', id: 202, channel: 2 });
    out.push({ op: 'whisper', id: 203, to: 'bob', text: 'hi' });
    out.push({ op: 'chat', id: 204, text: '/channel 3' });
    out.push({ op: 'chat', id: 205, text: '/w nobody hello' });
    out.push({ op: 'ping', id: 206 });
    return out;
  }

  /** Resolves when the connection closed; rejects after `ms` (a test never waits on mocha's timeout). */
  async function closedWithin(c: ChatClient, ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const t = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`connection still open after ${ms} ms (${c.frames.length} frames received)`)), ms);
    });
    try {
      await Promise.race([c.closed, t]);
    } finally {
      clearTimeout(timer);
    }
  }

  function expectAllAnsweredThenError(c: ChatClient, ids: number[], code: string): void {
    const errorAt = c.frames.findIndex((f: Frame) => f.op === 'error' && !('id' in f));
    expect(errorAt, `an error push (frames: ${JSON.stringify(c.frames.slice(-3))})`).to.be.greaterThan(-1);
    expect((c.frames[errorAt]!.error as { code: string }).code).to.equal(code);
    expect(errorAt, 'the error push is the last frame').to.equal(c.frames.length - 1);
    const missing = ids.filter((id) => c.repliesById.get(id) !== 1);
    expect(missing, 'requests without exactly one reply').to.deep.equal([]);
  }

  it('defect 6: answers every request before a bad frame in the same segment, then BAD_FRAME and close', async () => {
    const port = await start();
    const a = await client(port, 'Alice');
    await client(port, 'Bob');
    const reqs = slowRequests();
    await a.sendRaw(Buffer.concat([...reqs.map((r) => frame(r)), rawFrame(0)]));
    await closedWithin(a, 8000);
    expectAllAnsweredThenError(a, reqs.map((r) => r.id as number), 'BAD_FRAME');
    const moved = a.frames.find((f) => f.id === 202);
    expect(moved).to.deep.include({ ok: true });
  });

  it('defect 6: answers requests still in flight when a bad frame arrives in a later segment', async () => {
    const port = await start();
    const a = await client(port, 'Alice');
    await client(port, 'Bob');
    const reqs = slowRequests();
    await a.sendRaw(Buffer.concat(reqs.map((r) => frame(r))));
    await a.sendRaw(Buffer.from('{"op":"ping"}')); // no length header: a huge announced length
    await closedWithin(a, 8000);
    expectAllAnsweredThenError(a, reqs.map((r) => r.id as number), 'BAD_FRAME');
  });

  it('defect 7: closes a connection whose frame is not completed in CHATD_FRAME_TIMEOUT_MS, even when bytes trickle in', async () => {
    const port = await start({ CHATD_FRAME_TIMEOUT_MS: '700' });
    const a = await client(port, 'Alice');
    const slow = await client(port);
    const body = frame({ op: 'ping', id: 1 });
    const t0 = Date.now();
    let sent = 0;
    // One byte every 150 ms: each one would reset an idle timer.
    const timer = setInterval(() => {
      if (sent < body.length && !slow.isClosed) slow.socket.write(body.subarray(sent, ++sent));
    }, 150);
    try {
      const result = await Promise.race([slow.closed, new Promise((r) => setTimeout(() => r('open'), 4000))]);
      expect(result, 'closed by the frame deadline').to.not.equal('open');
    } finally {
      clearInterval(timer);
    }
    const elapsed = Date.now() - t0;
    const err = slow.frames.find((f) => f.op === 'error');
    expect(err, 'an error push before the close').to.not.equal(undefined);
    expect((err!.error as { code: string; message: string }).code).to.equal('TIMEOUT');
    expect((err!.error as { message: string }).message).to.match(/frame/);
    expect(elapsed).to.be.within(600, 2500);
    // Others are not affected.
    expect((await a.request({ op: 'ping' })).ok).to.equal(true);
  });

  it('defect 7: a client whose frames are split but each completed in time stays connected', async () => {
    const port = await start({ CHATD_FRAME_TIMEOUT_MS: '700' });
    const c = await client(port);
    // 10 frames, each sent in two halves 300 ms apart: 3 s in all, each frame within 700 ms.
    for (let i = 0; i < 10; i++) {
      const f = frame({ op: 'ping', id: 10 + i });
      await c.sendRaw(f.subarray(0, 5));
      await new Promise((r) => setTimeout(r, 300));
      await c.sendRaw(f.subarray(5));
    }
    expect((await c.request({ op: 'ping', id: 99 })).ok).to.equal(true);
    for (let i = 0; i < 10; i++) expect(c.repliesById.get(10 + i)).to.equal(1);
    expect(c.isClosed).to.equal(false);
  });

  it('defect 7: requests in flight when the deadline passes are answered before the TIMEOUT push', async () => {
    const port = await start({ CHATD_FRAME_TIMEOUT_MS: '300' });
    const a = await client(port, 'Alice');
    const reqs = slowRequests();
    const last = frame({ op: 'ping', id: 999 });
    await a.sendRaw(Buffer.concat([...reqs.map((r) => frame(r)), last.subarray(0, 3)]));
    await closedWithin(a, 8000);
    expectAllAnsweredThenError(a, reqs.map((r) => r.id as number), 'TIMEOUT');
  });

  it('defect 10: a client that pipelines finds and never reads: its unsent replies stay bounded (reading paused), others unaffected', async () => {
    const port = await start({ CHATD_RATE_PER_SEC: '1000000', CHATD_RATE_BURST: '1000000' });
    const other = await client(port, 'Other');
    const hog = await client(port, 'Hog');
    hog.socket.pause(); // never reads again
    const burst = Buffer.concat(Array.from({ length: 1000 }, (_, i) => frame({ op: 'find', id: i, name: `nobody${i % 50}` })));
    const pump = (): void => {
      while (!hog.isClosed && hog.socket.writableLength < 65536) hog.socket.write(burst);
    };
    hog.socket.on('drain', pump);
    pump();
    const conns = (chatd!.server as unknown as { connections: Set<{ socket: { writableLength: number }; session?: { name: string } }> }).connections;
    let maxUnsent = 0;
    const t0 = Date.now();
    while (Date.now() - t0 < 4000) {
      expect((await other.request({ op: 'ping' }, 5000)).ok).to.equal(true);
      for (const c of conns) if (c.session?.name === 'Hog') maxUnsent = Math.max(maxUnsent, c.socket.writableLength);
      await new Promise((r) => setTimeout(r, 20));
    }
    console.log(`      largest unsent output to the non-reader: ${maxUnsent} bytes`);
    // The stream's high-water mark plus the replies of at most 1024 finds in flight.
    expect(maxUnsent).to.be.below(256 * 1024);
    expect(hog.isClosed).to.equal(false);
  });
});
