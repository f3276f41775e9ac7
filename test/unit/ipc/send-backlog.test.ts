import { expect } from 'chai';
import { SendBacklog } from '../../../src/ipc/send-backlog';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A fake queue: `space` messages fit; every sent message is logged as "mtype:tag". */
function fakeQueue(): { space: number; sent: string[]; trySend: (mtype: number, body: Uint8Array) => boolean } {
  const q = {
    space: 0,
    sent: [] as string[],
    trySend(mtype: number, body: Uint8Array): boolean {
      if (q.space <= 0) return false;
      q.space--;
      q.sent.push(`${mtype}:${Buffer.from(body).toString()}`);
      return true;
    },
  };
  return q;
}

describe('ipc - send backlog, one FIFO per destination (defect 5)', () => {
  it('defect 5 - a destination with a long backlog does not hold another destination behind it; order kept per destination', async () => {
    const q = fakeQueue();
    const b = new SendBacklog(q.trySend, { maxMessages: 1000, maxBytes: 1 << 20, minRetryMs: 1, maxRetryMs: 2, onError: () => {} });
    for (let i = 0; i < 50; i++) b.send(2, Buffer.from(`legacy${i}`)); // legacy replies nobody reads
    b.send(102, Buffer.from('find'));
    expect(b.messages).to.equal(51);
    q.space = 2; // a little room frees (gc drained two replies)
    await sleep(20);
    expect(q.sent, 'the shard request goes out with the first room, not after 50 legacy replies').to.include('102:find');
    // A destination with nothing waiting is not queued behind others at all.
    q.space = 1;
    b.send(103, Buffer.from('login'));
    expect(q.sent).to.include('103:login');
    q.space = 1000;
    await sleep(20);
    const legacy = q.sent.filter((s) => s.startsWith('2:'));
    expect(legacy).to.deep.equal(Array.from({ length: 50 }, (_, i) => `2:legacy${i}`));
    expect(b.messages).to.equal(0);
    expect(b.byteCount).to.equal(0);
  });

  it('sendNow - never backlogs, and never overtakes a backlog of the same destination', () => {
    const q = fakeQueue();
    const b = new SendBacklog(q.trySend, { maxMessages: 1000, maxBytes: 1 << 20, minRetryMs: 1, maxRetryMs: 2, onError: () => {} });
    expect(b.sendNow(2, Buffer.from('x'))).to.equal(false);
    expect(b.messages).to.equal(0);
    b.send(2, Buffer.from('y'));
    q.space = 5;
    expect(b.sendNow(2, Buffer.from('z')), 'y waits for mtype 2').to.equal(false);
    expect(b.sendNow(3, Buffer.from('w'))).to.equal(true);
    b.close('done');
  });
});
