import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { useQueues } from '../../helpers/queues';

/**
 * A daemon stopping while its queue is full by message count: its receiver thread sits in a
 * blocking msgrcv and the zero-length wake-up does not fit the queue. process.exit() joins
 * worker threads, so the daemon used to hang until PM2's kill_timeout SIGKILLed it.
 */
describe('runtime - lifecycle: stopping on a queue full by message count', function () {
  this.timeout(30_000);
  const scope = useQueues();

  async function stopWith(fill: boolean): Promise<{ code: number | null; ms: number; out: string }> {
    const q = scope.create();
    const mtype = 4242;
    const child = spawn(process.execPath, [join(__dirname, '../../fixtures/stuck-receiver-main.js'), String(q.id), String(mtype)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const t0 = Date.now();
      while (!out.includes('ready')) {
        if (Date.now() - t0 > 10_000) throw new Error(`fixture not ready: ${out}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, 100)); // the thread is in msgrcv
      if (fill) {
        // Empty messages on another mtype until the kernel refuses: full by count, 0 bytes.
        while (q.trySend(7, Buffer.alloc(0))) {
          /* fill */
        }
        expect(q.stat().messages).to.be.above(0);
      }
      const stopAt = Date.now();
      child.kill('SIGINT');
      const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 8000))]);
      if (code === 'hung') throw new Error(`the process did not exit within 8 s of SIGINT (receiver thread joined?): ${out}`);
      return { code, ms: Date.now() - stopAt, out };
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }

  it('an ordinary stop: exit 0, the thread woken and joined', async () => {
    const r = await stopWith(false);
    expect(r.code).to.equal(0);
    expect(r.ms).to.be.below(3000);
    expect(r.out).to.contain('"msg":"stopped"');
    expect(r.out).to.not.contain('cannot be woken');
  });

  it('the queue full by count: exit 0 within a few seconds, saying the thread could not be woken', async () => {
    const r = await stopWith(true);
    expect(r.code, r.out).to.equal(0);
    expect(r.ms, 'stop time').to.be.below(5000);
    expect(r.out).to.contain('cannot be woken');
    expect(r.out).to.contain('"msg":"stopped"');
  });
});
