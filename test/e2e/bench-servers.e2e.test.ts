import { expect } from 'chai';
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { ServerReport } from '../../bench/e2e/proto';
import { ChatClient, loggedIn, type Reply } from '../helpers/chat-client';
import { isAlive, sleep } from '../helpers/cluster';
import { expectError } from './e2e-support';

/**
 * The comparison servers of `npm run bench:e2e` (bench/e2e/single-server.ts and
 * bench/e2e/fork-front.ts with its shards) speak PROTOCOL.md as chatD does: the same reply
 * objects, key order included (compared as JSON text), for login, find (op, `/찾기`, `/find`),
 * ping and logout, and the same error codes. Each server runs on a free port and is stopped,
 * every process of it, afterwards.
 */

const BENCH_DIR = join(__dirname, '..', '..', 'bench', 'e2e');

interface Started {
  child: ChildProcess;
  port: number;
  pids: number[];
}

function start(script: string, args: string[]): Promise<Started> {
  const child = fork(join(BENCH_DIR, script), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${script}: not listening within 5 s`)), 5000);
    child.once('message', (m: ServerReport) => {
      clearTimeout(t);
      if (m.type === 'listening') resolve({ child, port: m.port, pids: m.pids });
      else reject(new Error(m.message));
    });
    child.once('exit', (code) => reject(new Error(`${script} exited (${code}) before listening`)));
  });
}

/** The reply as JSON text: key order counts, as it does on the wire. */
const same = (r: Reply, expected: Record<string, unknown>): void => {
  expect(JSON.stringify(r)).to.equal(JSON.stringify(expected));
};

for (const [label, script, args] of [
  ['single', 'single-server.js', ['0']],
  ['fork', 'fork-front.js', ['0', '3']],
] as const) {
  describe(`bench:e2e comparison server "${label}" speaks PROTOCOL.md`, function () {
    this.timeout(10_000);
    let server: Started | undefined;
    const clients: ChatClient[] = [];

    before(async () => {
      server = await start(script, [...args]);
      if (label === 'fork') expect(server.pids).to.have.length(4);
    });

    after(async () => {
      for (const c of clients) await c.destroy();
      if (!server) return;
      const { child, pids } = server;
      // Closing the IPC channel is how the bench runner's death looks: every process must go.
      child.disconnect();
      const deadline = Date.now() + 5000;
      while (pids.some(isAlive) && Date.now() < deadline) await sleep(50);
      const left = pids.filter(isAlive);
      for (const pid of left) process.kill(pid, 'SIGKILL');
      expect(left, 'processes still alive after the parent left').to.deep.equal([]);
    });

    it('login, find (op, /찾기, /find), ping and logout replies match chatD', async () => {
      const port = server!.port;
      const a = await loggedIn(port, '타락파워전사', 3);
      const b = await ChatClient.connect(port);
      clients.push(a, b);
      same(await b.request({ op: 'login', id: 7, name: 'Knight_Ä', channel: 12 }), { op: 'login', id: 7, ok: true, name: 'Knight_Ä', channel: 12 });

      same(await a.request({ op: 'find', id: 1, name: 'knight_ä' }), { op: 'find', id: 1, ok: true, name: 'Knight_Ä', online: true, channel: 12 });
      same(await a.request({ op: 'find', id: 2, name: 'NobodyHere' }), { op: 'find', id: 2, ok: true, name: 'NobodyHere', online: false });
      same(await b.request({ op: 'chat', id: 3, text: '/찾기 타락파워전사' }), {
        op: 'chat', id: 3, ok: true, command: 'find',
        result: { name: '타락파워전사', online: true, channel: 3 },
        text: '타락파워전사님은 3채널에 있습니다.',
      });
      same(await b.request({ op: 'chat', id: 4, text: '/찾기 없는사람' }), {
        op: 'chat', id: 4, ok: true, command: 'find',
        result: { name: '없는사람', online: false },
        text: '없는사람님을 찾을 수 없습니다.',
      });
      same(await a.request({ op: 'chat', id: 5, text: '/find KNIGHT_ä' }), {
        op: 'chat', id: 5, ok: true, command: 'find',
        result: { name: 'Knight_Ä', online: true, channel: 12 },
        text: 'Knight_Ä is on channel 12.',
      });
      same(await a.request({ op: 'chat', id: 6, text: '/find GhostPlayer' }), {
        op: 'chat', id: 6, ok: true, command: 'find',
        result: { name: 'GhostPlayer', online: false },
        text: 'GhostPlayer is not online.',
      });
      same(await a.request({ op: 'ping', id: 8 }), { op: 'ping', id: 8, ok: true });

      // Errors: the codes chatD gives.
      const c = await ChatClient.connect(port);
      clients.push(c);
      expectError(await c.request({ op: 'find', id: 9, name: 'x' }), 'NOT_LOGGED_IN', 'find', 9);
      expectError(await c.request({ op: 'login', id: 10, name: 'KNIGHT_ä', channel: 1 }), 'NAME_TAKEN', 'login', 10);
      expectError(await a.request({ op: 'login', id: 11, name: 'Other', channel: 1 }), 'ALREADY_LOGGED_IN', 'login', 11);
      expectError(await a.request({ op: 'find', id: 12, name: 'bad-name!' }), 'BAD_REQUEST', 'find', 12);
      expectError(await a.request({ op: 'chat', id: 13, text: '/dance' }), 'UNKNOWN_COMMAND', 'chat', 13);

      // Logout: the reply, then the close; the character is offline for everyone after it.
      same(await b.request({ op: 'logout', id: 14 }), { op: 'logout', id: 14, ok: true });
      await b.closed;
      same(await a.request({ op: 'find', id: 15, name: 'Knight_Ä' }), { op: 'find', id: 15, ok: true, name: 'Knight_Ä', online: false });
      // A closed connection takes its character offline too.
      await a.destroy();
      const d = await loggedIn(port, 'Watcher', 1);
      clients.push(d);
      for (let i = 0; ; i++) {
        const r = await d.request({ op: 'find', name: '타락파워전사' });
        if (r.online === false) break;
        if (i > 50) throw new Error(`still online after close: ${JSON.stringify(r)}`);
        await sleep(20);
      }
    });
  });
}
