import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../helpers/host';
import { ClientProcess, killAllClients } from '../helpers/client-process';
import { PROJECT_ROOT, useCluster } from '../helpers/cluster';
import { waitFor } from '../helpers/wait';

/**
 * `npm run client` (src/client) driven through its stdin and stdout against a real cluster:
 * two people, one English and one Korean, chat, find and whisper; errors read as sentences;
 * quitting logs out; the server down says so; a restarted or killed chatD is reconnected to.
 */

const KO = 'ko';
const EN = 'en';

function start(port: number, name: string, channel: number, lang: string, extra: string[] = []): ClientProcess {
  return new ClientProcess(['--name', name, '--channel', String(channel), '--port', String(port), '--lang', lang, ...extra]);
}

async function loggedIn(c: ClientProcess): Promise<void> {
  await c.waitLine(/^\* (logged in as |접속했습니다: )/, 20_000);
}

describe('client - a person at the terminal (e2e)', function () {
  this.timeout(90_000);
  const cluster = useCluster({ label: 'client-e2e', shards: 2 });
  afterEach(killAllClients);

  it('client - two people chat in a channel, find and whisper each other, in English and Korean', async () => {
    const port = cluster().port;
    const alice = start(port, 'Alice', 3, EN);
    const warrior = start(port, '타락파워전사', 3, KO);
    await Promise.all([loggedIn(alice), loggedIn(warrior)]);
    expect(alice.out).to.include(`* logged in as Alice on channel 3 (127.0.0.1:${port}); /help lists the commands`);
    expect(warrior.out).to.include(`* 접속했습니다: 타락파워전사, 3채널 (127.0.0.1:${port}). 명령어는 /도움말`);

    alice.type('hello there');
    await warrior.waitLine('[3채널] Alice: hello there');
    await alice.waitLine('[channel 3] Alice: hello there');
    warrior.type('안녕하세요');
    await alice.waitLine('[channel 3] 타락파워전사: 안녕하세요');

    warrior.type('/찾기 Alice');
    await warrior.waitLine('* Alice님은 3채널에 있습니다.');
    alice.type('/find 타락파워전사');
    await alice.waitLine('* 타락파워전사 is on channel 3.');
    alice.type('/FIND nobody_here');
    await alice.waitLine('* nobody_here is not online.');
    warrior.type('/찾기 없는사람');
    await warrior.waitLine('* 없는사람님을 찾을 수 없습니다.');

    warrior.type('/귓속말 Alice 비밀   이야기');
    await warrior.waitLine('[귓속말 → Alice] 비밀   이야기');
    await alice.waitLine('[whisper] 타락파워전사: 비밀   이야기');
    alice.type('/w 타락파워전사 psst');
    await alice.waitLine('[whisper → 타락파워전사] psst');
    await warrior.waitLine('[귓속말] Alice: psst');
    alice.type('/whisper nobody_here hi');
    await alice.waitLine('! nobody_here is not online (NOT_FOUND)');

    // Moving: the prompt's channel follows, and the other side finds the new channel.
    alice.type('/channel 5');
    await alice.waitLine('* Moved to channel 5.');
    warrior.type('/찾기 alice');
    await warrior.waitLine('* Alice님은 5채널에 있습니다.');
    alice.type('in five now');
    await alice.waitLine('[channel 5] Alice: in five now');
    warrior.type('/채널 5');
    await warrior.waitLine('* 5채널로 이동했습니다.');
    warrior.type('여기도 5');
    await alice.waitLine('[channel 5] 타락파워전사: 여기도 5');
  });

  it('client - errors read as sentences; /help and /ping are answered locally and by the server', async () => {
    const port = cluster().port;
    const bob = start(port, 'Bob_err', 4, EN);
    const minsu = start(port, '민수', 4, KO);
    await Promise.all([loggedIn(bob), loggedIn(minsu)]);

    bob.type('/dance now');
    await bob.waitLine('! unknown command: /dance (UNKNOWN_COMMAND)');
    minsu.type('/춤');
    await minsu.waitLine('! 알 수 없는 명령어입니다: /춤 (UNKNOWN_COMMAND)');
    minsu.type('/찾기');
    await minsu.waitLine('! 사용법: /찾기 이름 (BAD_REQUEST)');
    bob.type('/channel 999');
    await bob.waitLine('! channel must be from 1 to 20 (BAD_REQUEST)');
    bob.type('/w');
    await bob.waitLine('! usage: /w NAME MESSAGE (BAD_REQUEST)');
    bob.type('x'.repeat(501));
    await bob.waitLine('! the line is 501 characters long; the limit is 500: not sent');
    minsu.type('가'.repeat(501));
    await minsu.waitLine('! 501자입니다. 500자까지 보낼 수 있습니다. 보내지 않았습니다');

    bob.type('/help');
    await bob.waitLine('*   /find NAME   /찾기 NAME   which channel is NAME on?');
    minsu.type('/도움말');
    await minsu.waitLine('*   /찾기 이름       /find NAME    이름이 몇 채널에 있는지 찾기');
    bob.type('/ping');
    await bob.waitLine(/^\* pong \(\d+ ms\)$/);
    minsu.type('/핑');
    await minsu.waitLine(/^\* 퐁 \(\d+ ms\)$/);
    // Nothing in the transcripts looks like a stack trace or raw JSON.
    for (const l of [...bob.out, ...minsu.out]) expect(l).not.to.match(/^\s+at |^\{"op"/);
  });

  it('client - a name online elsewhere ends the client with a clear message and exit 1; a channel above the server\'s count with exit 2', async () => {
    const port = cluster().port;
    const first = start(port, 'Twin', 2, EN);
    await loggedIn(first);
    const second = start(port, 'TWIN', 2, EN);
    expect(await second.waitExit()).to.equal(1);
    expect(second.errLines.join('\n')).to.include('chat client: login failed: TWIN is online already (on another connection): pick another name, or wait until it goes offline (NAME_TAKEN)');

    const far = start(port, 'Far', 999, KO);
    expect(await far.waitExit()).to.equal(2);
    expect(far.errLines.join('\n')).to.include('chat client: 로그인 실패: channel: must be an integer from 1 to 20 (BAD_REQUEST)');
  });

  it('client - /quit and the end of input log out (the other side finds the name offline) and exit 0', async () => {
    const port = cluster().port;
    const watcher = start(port, 'Watcher', 7, EN);
    const leaver = start(port, 'Leaver', 7, EN);
    const piped = start(port, '파이프', 7, KO);
    await Promise.all([loggedIn(watcher), loggedIn(leaver), loggedIn(piped)]);

    leaver.type('/quit');
    await leaver.waitLine('* bye');
    expect(await leaver.waitExit()).to.equal(0);
    watcher.type('/find Leaver');
    await watcher.waitLine('* Leaver is not online.');

    // Lines typed then the end of input: the lines are sent first, then the logout.
    piped.type('마지막 말');
    piped.endInput();
    expect(await piped.waitExit()).to.equal(0);
    expect(piped.out).to.include('* 종료합니다');
    await watcher.waitLine('[channel 7] 파이프: 마지막 말');
    watcher.type('/find 파이프');
    await watcher.waitLine('* 파이프 is not online.');
  });

  it('client - input piped in one go, before the login is done, is sent once logged in', async () => {
    const port = cluster().port;
    const listener = start(port, 'Listener', 9, EN);
    await loggedIn(listener);
    const burst = start(port, 'Burst', 9, EN);
    burst.type('one');
    burst.type('/find Listener');
    burst.type('two');
    burst.endInput();
    expect(await burst.waitExit()).to.equal(0);
    expect(burst.out).to.include('* Listener is on channel 9.');
    const one = await listener.waitLine('[channel 9] Burst: one');
    await listener.waitLine('[channel 9] Burst: two', 10_000, one.index + 1);
  });

  it('client - on a terminal (a pty from script(1)): prompt with the channel, typed line replaced by its formatted echo, Up recalls history, --history saved', async function () {
    if (!existsSync('/usr/bin/script')) this.skip(); // util-linux; present on Debian
    const dir = mkdtempSync(join(tmpdir(), 'chatd-client-tty-'));
    const history = join(dir, 'history');
    const quote = (a: string): string => `'${a.replace(/'/g, `'\\''`)}'`;
    const argv = [process.execPath, join(PROJECT_ROOT, 'dist', 'src', 'client', 'main.js'), '--name', 'Tty', '--channel', '3', '--port', String(cluster().port), '--lang', 'en', '--history', history];
    const child = spawn('script', ['-qfec', argv.map(quote).join(' '), '/dev/null'], { cwd: PROJECT_ROOT, env: { ...process.env, TERM: 'xterm' }, stdio: ['pipe', 'pipe', 'pipe'] });
    let raw = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (raw += d));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    // eslint-disable-next-line no-control-regex
    const screen = (): string => raw.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
    const count = (text: string): number => screen().split(text).length - 1;
    const until = (what: string, n = 1): Promise<void> => waitFor(() => count(what) >= n, 15_000, 20, `${JSON.stringify(what)} x${n} on the terminal:\n${screen()}`);
    try {
      await until('* logged in as Tty on channel 3');
      expect(screen()).to.include('[channel 3] Tty> ');
      child.stdin.write('hello tty\r');
      await until('[channel 3] Tty: hello tty');
      // The typed line is erased (cursor up, erase line) before its formatted echo comes back.
      expect(raw).to.match(/hello tty\r\r\n\x1b\[1A\x1b\[2K/);
      child.stdin.write('/find Tty\r');
      await until('* Tty is on channel 3.');
      child.stdin.write('\x1b[A\r'); // Up, Enter: the same /find again, from the history
      await until('* Tty is on channel 3.', 2);
      child.stdin.write('/channel 4\r');
      await until('[channel 4] Tty> ');
      child.stdin.write('/quit\r');
      await until('* bye');
      expect(await exited).to.equal(0);
      expect(readFileSync(history, 'utf8').split('\n').filter((l) => l !== '')).to.deep.equal(['hello tty', '/find Tty', '/channel 4', '/quit']);
    } finally {
      if (child.exitCode === null && child.pid !== undefined) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('client - chatD restarted by PM2: the client says so, reconnects and logs in again in its channel', async () => {
    const c = cluster();
    const a = start(c.port, 'Phoenix', 11, EN);
    const b = start(c.port, '불사조', 11, KO);
    await Promise.all([loggedIn(a), loggedIn(b)]);
    const oldPid = await c.pid('chatd');
    const r = await c.pm2(['restart', 'chatd'], 30_000);
    expect(r.code, r.stderr).to.equal(0);
    await c.waitRestarted('chatd', 0, oldPid);
    await a.waitLine('! the server is shutting down (UNAVAILABLE)', 20_000);
    await a.waitLine(/^! connection to 127\.0\.0\.1:\d+ lost; reconnecting in \d+\.\d s$/, 20_000);
    await a.waitLine('* reconnected as Phoenix on channel 11', 30_000);
    await b.waitLine('* 다시 접속했습니다: 불사조, 11채널', 30_000);
    b.type('돌아왔다');
    await a.waitLine('[channel 11] 불사조: 돌아왔다');
    a.type('/find 불사조');
    await a.waitLine('* 불사조 is on channel 11.');
  });

  it('client - chatD killed (SIGKILL): reconnects in the channel it moved to, its old session cleared', async () => {
    const c = cluster();
    const a = start(c.port, 'Lazarus', 12, EN);
    const b = start(c.port, 'Witness', 12, EN);
    await Promise.all([loggedIn(a), loggedIn(b)]);
    a.type('/channel 13');
    await a.waitLine('* Moved to channel 13.');
    const pid = await c.signal('chatd', 0, 'SIGKILL');
    await c.waitRestarted('chatd', 0, pid);
    const lost = await a.waitLine(/lost; reconnecting in/, 20_000);
    // A line typed while away is kept and sent after the new login.
    const bLost = await b.waitLine(/lost; reconnecting in/, 20_000);
    b.type('typed while away');
    await a.waitLine('* reconnected as Lazarus on channel 13', 30_000, lost.index);
    const back = await b.waitLine('* reconnected as Witness on channel 12', 30_000, bLost.index);
    await b.waitLine('[channel 12] Witness: typed while away', 10_000, back.index);
    b.type('/find Lazarus');
    await b.waitLine('* Lazarus is on channel 13.', 10_000);
    a.type('/quit');
    expect(await a.waitExit()).to.equal(0);
  });
});

describe('client - the server is down (no cluster)', function () {
  this.timeout(30_000);
  afterEach(killAllClients);

  it('client - connection refused: a sentence saying so and the retry delay, no stack trace; --retries ends it with exit 1', async () => {
    const port = await freePort();
    const c = start(port, 'Lonely', 1, EN, ['--retries', '3']);
    expect(await c.waitExit()).to.equal(1);
    const refused = c.out.filter((l) => l.startsWith(`! the server at 127.0.0.1:${port} is down (connection refused); retrying in `));
    expect(refused, c.out.join('\n')).to.have.length(2);
    expect(c.errLines).to.deep.equal(['chat client: giving up after 3 failed connection attempt(s)']);
    for (const l of [...c.out, ...c.errLines]) expect(l).not.to.match(/^\s+at |Error:/);
  });

  it('client - connection refused in Korean; the end of input then ends it at once', async () => {
    const port = await freePort();
    const c = start(port, '외톨이', 1, KO);
    await c.waitLine(`! 서버(127.0.0.1:${port})가 꺼져 있습니다 (연결 거부, connection refused). `);
    c.endInput();
    expect(await c.waitExit(5000)).to.equal(0);
    expect(c.out).to.include('* 종료합니다');
  });

  it('client - the language follows LANG when --lang is not given', async () => {
    const port = await freePort();
    const c = new ClientProcess(['--name', 'x', '--channel', '1', '--port', String(port), '--retries', '1'], { LANG: 'ko_KR.UTF-8' });
    expect(await c.waitExit()).to.equal(1);
    expect(c.out[0]).to.equal(`* 127.0.0.1:${port}에 연결하는 중`);
  });

  it('client - bad arguments: a usage error and exit 2', async () => {
    for (const args of [[], ['--name', 'a b', '--channel', '1'], ['--name', 'a', '--channel', 'x'], ['--name', 'a', '--channel', '1', '--port', '70000'], ['--name', 'a', '--channel', '1', '--lang', 'fr'], ['--name', 'a', '--channel', '1', '--bogus']]) {
      const c = new ClientProcess(args);
      expect(await c.waitExit(), args.join(' ')).to.equal(2);
      expect(c.errLines.some((l) => l.startsWith('usage: npm run client -- --name NAME --channel N')), c.errLines.join('\n')).to.equal(true);
      expect(c.errLines[0], args.join(' ')).to.match(/^chat client: /);
    }
  });
});
