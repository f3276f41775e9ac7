import { expect } from 'chai';
import { type AddressInfo, type Socket, createServer } from 'node:net';
import { parseClientArgs } from '../../../src/client/args';
import { ChatSession, DEFAULT_TIMING } from '../../../src/client/session';
import { FrameDecoder } from '../../../src/protocol/frame-decoder';
import { encodeFrame } from '../../../src/protocol/frame-encoder';
import { waitFor } from '../../helpers/wait';

/**
 * ChatSession against a scripted server over real TCP (the protocol's own codec): the login
 * retry rules, the report of requests lost with a connection, and the exit codes.
 */

type Req = Record<string, unknown> & { op: string; id: number };
/** Answers one request on one connection (connection number from 0); return undefined to stay silent. */
type Script = (req: Req, conn: number, socket: Socket) => object | undefined;

interface Scripted {
  port: number;
  connections: () => number;
  /** Closes the listener and every connection. */
  close: () => Promise<void>;
}

async function scriptedServer(script: Script): Promise<Scripted> {
  let n = 0;
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    const conn = n++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    const decoder = new FrameDecoder();
    socket.on('error', () => {});
    socket.on('data', (chunk) => {
      for (const f of decoder.push(chunk)) {
        const reply = script(f as Req, conn, socket);
        if (reply !== undefined && !socket.destroyed) socket.write(encodeFrame(reply));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const close = (): Promise<void> => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of sockets) s.destroy();
    return closed;
  };
  return { port: (server.address() as AddressInfo).port, connections: () => n, close };
}

const FAST = { ...DEFAULT_TIMING, backoffMinMs: 10, backoffMaxMs: 40, replyTimeoutMs: 2000, connectTimeoutMs: 1000 };

function session(port: number, name = 'Sam', lang = 'en'): { s: ChatSession; out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  const s = new ChatSession(parseClientArgs(['--name', name, '--channel', '2', '--port', String(port), '--lang', lang], {}), { out: (l) => out.push(l), err: (l) => err.push(l) }, FAST);
  return { s, out, err };
}

describe('client - session against a scripted server', function () {
  this.timeout(10_000);
  const servers: Scripted[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close();
  });

  it('session - a connection lost with a chat in flight: reported, then a NAME_TAKEN (the old session) retried until the login succeeds', async () => {
    const srv = await scriptedServer((req, conn, socket) => {
      if (req.op === 'login') return conn === 1 ? { op: 'login', id: req.id, ok: false, error: { code: 'NAME_TAKEN', message: 'Sam is online already' } } : { op: 'login', id: req.id, ok: true, name: req.name, channel: req.channel };
      if (req.op === 'chat' && conn === 0) {
        socket.destroy(); // the chat is never answered
        return undefined;
      }
      if (req.op === 'chat') return { op: 'chat', id: req.id, ok: true };
      return { op: req.op, id: req.id, ok: true };
    });
    servers.push(srv);
    const { s, out } = session(srv.port);
    const run = s.run();
    await waitFor(() => out.some((l) => l.startsWith('* logged in as Sam')), 5000);
    s.handleLine('are you there');
    await waitFor(() => out.some((l) => l === '* reconnected as Sam on channel 2'), 5000, 5, `reconnect in:\n${out.join('\n')}`);
    expect(out).to.include('! 1 request(s) sent before the connection was lost got no answer; they may or may not have taken effect');
    expect(out.some((l) => /^! login refused for now \(NAME_TAKEN\); retrying in \d+\.\d s$/.test(l)), out.join('\n')).to.equal(true);
    expect(srv.connections()).to.equal(3);
    s.handleLine('again');
    await waitFor(() => out.includes('[channel 2] Sam: again'), 5000);
    s.quit();
    expect(await run).to.equal(0);
    expect(out[out.length - 1]).to.equal('* bye');
  });

  it('session - NAME_TAKEN at the first login ends the session with exit 1; BAD_REQUEST with exit 2; UNAVAILABLE is retried', async () => {
    let unavailableOnce = true;
    const srv = await scriptedServer((req) => {
      if (req.op !== 'login') return { op: req.op, id: req.id, ok: true };
      if (req.name === 'Taken') return { op: 'login', id: req.id, ok: false, error: { code: 'NAME_TAKEN', message: 'Taken is online already' } };
      if (req.name === 'Bad') return { op: 'login', id: req.id, ok: false, error: { code: 'BAD_REQUEST', message: 'channel: must be an integer from 1 to 1' } };
      if (unavailableOnce) {
        unavailableOnce = false;
        return { op: 'login', id: req.id, ok: false, error: { code: 'UNAVAILABLE', message: 'the directory is recovering; retry later' } };
      }
      return { op: 'login', id: req.id, ok: true, name: req.name, channel: req.channel };
    });
    servers.push(srv);
    const taken = session(srv.port, 'Taken', 'ko');
    expect(await taken.s.run()).to.equal(1);
    expect(taken.err).to.deep.equal(['chat client: 로그인 실패: Taken: 이미 다른 곳에서 접속 중인 이름입니다. 다른 이름을 쓰거나 접속이 끝날 때까지 기다리세요 (NAME_TAKEN)']);
    const bad = session(srv.port, 'Bad');
    expect(await bad.s.run()).to.equal(2);
    expect(bad.err).to.deep.equal(['chat client: login failed: channel: must be an integer from 1 to 1 (BAD_REQUEST)']);
    const patient = session(srv.port, 'Patient');
    const run = patient.s.run();
    await waitFor(() => patient.out.some((l) => l.startsWith('* logged in as Patient')), 5000);
    expect(patient.out.some((l) => l.startsWith('! login refused for now (UNAVAILABLE)'))).to.equal(true);
    patient.s.quit();
    expect(await run).to.equal(0);
  });

  it('session - a server that never answers: the line is reported unanswered after the reply timeout, not forgotten', async () => {
    const srv = await scriptedServer((req) => (req.op === 'login' ? { op: 'login', id: req.id, ok: true, name: req.name, channel: req.channel } : undefined));
    servers.push(srv);
    const out: string[] = [];
    const s = new ChatSession(parseClientArgs(['--name', 'Q', '--channel', '1', '--port', String(srv.port)], {}), { out: (l) => out.push(l), err: () => {} }, { ...FAST, replyTimeoutMs: 200 });
    const run = s.run();
    await waitFor(() => out.some((l) => l.startsWith('* logged in')), 5000);
    s.handleLine('/find x');
    await waitFor(() => out.includes('! no answer from the server within 0.2 s: /find x'), 5000, 5, out.join('\n'));
    s.quit(); // the logout is not answered either: the session ends after its timeout
    expect(await run).to.equal(0);
  });
});
