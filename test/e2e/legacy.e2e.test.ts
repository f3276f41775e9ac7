import { expect } from 'chai';
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChatClient } from '../helpers/chat-client';
import { PROJECT_ROOT, queueExistsByKey, useCluster } from '../helpers/cluster';
import { cleanupChecks } from './e2e-support';

/**
 * The legacy C peers of PROTOCOL.md: test/fixtures/legacy-client.c, compiled with gcc at test
 * time, does msgget(key, 0), msgsnd of `struct msgbuf_ { long mtype; char mtext[1024]; }`
 * with mtype 1 and a NUL-terminated command line, and msgrcv of the mtype 2 reply.
 */

interface LegacyResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe('legacy (e2e): C peers on the queue', function () {
  this.timeout(30_000);
  const cluster = useCluster({ shards: 2, label: 'legacy', mqKeyHex: true });
  let dir: string;
  let bin: string;
  let speaker: ChatClient;

  before(function () {
    const gcc = spawnSync('gcc', ['--version']);
    if (gcc.error || gcc.status !== 0) {
      // PROTOCOL.md's C peers cannot be reproduced without a C compiler.
      console.log('      (gcc not found: legacy suite skipped)');
      this.skip();
    }
    dir = mkdtempSync(join(tmpdir(), 'chatd-legacy-'));
    bin = join(dir, 'legacy-client');
    const cc = spawnSync('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', bin, join(PROJECT_ROOT, 'test', 'fixtures', 'legacy-client.c')], { encoding: 'utf8' });
    expect(cc.status, `gcc failed:\n${cc.stderr}`).to.equal(0);
  });
  after(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  before(async () => {
    speaker = await cluster().login('Commander', 1);
  });

  /** Runs the C client once (they share mtype 2, so never two at a time). */
  function legacy(line: string, timeoutS = 5): Promise<LegacyResult> {
    return new Promise((resolve) => {
      execFile(bin, [String(cluster().mqKey), line, String(timeoutS)], { encoding: 'utf8', timeout: (timeoutS + 5) * 1000 }, (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
        resolve({ code, stdout, stderr });
      });
    });
  }

  async function legacyText(line: string): Promise<string> {
    const r = await legacy(line);
    expect(r.code, `legacy-client exit ${r.code}: ${r.stderr}`).to.equal(0);
    return r.stdout;
  }

  /** The text the `chat` command gives for the same line. */
  async function chatText(line: string): Promise<string> {
    const r = await speaker.request({ op: 'chat', text: line });
    expect(r.ok, JSON.stringify(r)).to.equal(true);
    return String(r.text);
  }

  it('the cluster took MQ_KEY in 0x hex: the queue exists under that key', () => {
    expect(cluster().env.MQ_KEY).to.match(/^0x[0-9a-f]+$/);
    expect(queueExistsByKey(cluster().mqKey)).to.equal(true);
  });

  it('/찾기 NAME for an online character: the exact Korean text', async () => {
    await cluster().login('타락파워전사', 3);
    expect(await legacyText('/찾기 타락파워전사')).to.equal('타락파워전사님은 3채널에 있습니다.');
  });

  it('/찾기 NAME for an offline character: the exact Korean text', async () => {
    expect(await legacyText('/찾기 없는사람')).to.equal('없는사람님을 찾을 수 없습니다.');
  });

  it('/찾기 is case-insensitive and answers with the registered name', async () => {
    await cluster().login('HeroKim', 7);
    expect(await legacyText('/찾기 herokim')).to.equal('HeroKim님은 7채널에 있습니다.');
  });

  it('/find NAME answers in English, the same text as the chat command', async () => {
    const online = await legacyText('/find HeroKim');
    expect(online).to.equal(await chatText('/find HeroKim'));
    expect(online).to.include('HeroKim').and.include('7');
    const offline = await legacyText('/find Nobody');
    expect(offline).to.equal(await chatText('/find Nobody'));
    expect(offline).to.include('Nobody');
  });

  it('the legacy text equals the chat text for /찾기 too', async () => {
    for (const line of ['/찾기 타락파워전사', '/찾기 없는사람']) expect(await legacyText(line)).to.equal(await chatText(line));
  });

  it('follows logins, moves and logouts', async () => {
    const c = await cluster().login('용사', 2);
    expect(await legacyText('/찾기 용사')).to.equal('용사님은 2채널에 있습니다.');
    expect((await c.request({ op: 'move', channel: 9 })).ok).to.equal(true);
    expect(await legacyText('/찾기 용사')).to.equal('용사님은 9채널에 있습니다.');
    expect((await c.request({ op: 'logout' })).ok).to.equal(true);
    expect(await legacyText('/찾기 용사')).to.equal('용사님을 찾을 수 없습니다.');
  });

  it('a queue key that does not exist: msgget(key, 0) fails (the client does not create queues)', async () => {
    expect(queueExistsByKey(0x3dfffff1)).to.equal(false);
    const r = await new Promise<LegacyResult>((resolve) => {
      execFile(bin, ['0x3dfffff1', '/find x', '1'], { encoding: 'utf8' }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr }),
      );
    });
    expect(r.code, r.stderr).to.equal(2);
    expect(queueExistsByKey(0x3dfffff1)).to.equal(false);
  });

  describe('end', () => {
    cleanupChecks(cluster);
  });
});
