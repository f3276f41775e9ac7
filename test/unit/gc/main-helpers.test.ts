import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { drainQueue, pidAlive } from '../../../src/gc/main';
import { useQueues } from '../../helpers/queues';
import { waitFor } from '../../helpers/wait';

describe('gc main helpers', () => {
  const queues = useQueues();

  it('pidAlive - this process yes, a pid that is gone no, a zombie no', async () => {
    expect(pidAlive(process.pid)).to.equal(true);
    expect(pidAlive(1)).to.equal(true); // exists, not ours to signal (or ours as root): alive either way
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
    const pid = child.pid!;
    await waitFor(() => pidAlive(pid), 2000, 5, 'child alive');
    const exited = new Promise((resolve) => child.once('exit', resolve));
    process.kill(pid, 'SIGKILL');
    // Until node reaps it the child is a zombie: kill(pid, 0) still succeeds, /proc says Z.
    const t = Date.now();
    while (Date.now() - t < 100) {
      /* keep the loop busy so that the zombie is not reaped yet */
    }
    expect(pidAlive(pid)).to.equal(false);
    await exited;
    expect(pidAlive(pid)).to.equal(false);
  });

  it('drainQueue - takes only the given mtype, bounded', () => {
    const q = queues.create();
    for (let i = 0; i < 5; i++) q.trySend(7, Buffer.from([i]));
    q.trySend(8, Buffer.from([9]));
    expect(drainQueue(q, 7, 3)).to.equal(3);
    expect(drainQueue(q, 7)).to.equal(2);
    expect(drainQueue(q, 7)).to.equal(0);
    expect(q.stat().messages).to.equal(1);
  });
});
