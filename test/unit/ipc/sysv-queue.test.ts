import { expect } from 'chai';
import {
  IpcError,
  SysvQueue,
  SysvTransport,
  defaultSysvTransportOptions,
  readKernelLimit,
  type ReceivedMessage,
} from '../../../src/ipc';
import { useQueues } from '../../helpers/queues';
import { waitFor, withTimeout } from '../../helpers/wait';

function thrown(fn: () => unknown): IpcError {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(IpcError);
    return err as IpcError;
  }
  throw new Error('expected an IpcError');
}

describe('ipc/sysv-queue', function () {
  this.timeout(10_000);
  const scope = useQueues();

  it('createPrivate - mode 0600 by default, 0660 on request; world-writable modes refused', () => {
    expect(scope.create().stat().mode).to.equal(0o600);
    expect(scope.create(0o660).stat().mode).to.equal(0o660);
    expect(thrown(() => SysvQueue.createPrivate(0o666)).code).to.equal('EINVAL');
    expect(thrown(() => SysvQueue.createPrivate(0o1600)).code).to.equal('EINVAL');
  });

  it('open - by key: created once, found again, and exclusive creation of an existing key fails (EEXIST)', () => {
    const key = 0x7c000000 + (process.pid % 0xffff) * 16 + Math.floor(Math.random() * 16);
    const a = scope.adopt(SysvQueue.open({ key, exclusive: true }));
    const b = SysvQueue.open({ key, create: false });
    expect(b.id).to.equal(a.id);
    expect(thrown(() => SysvQueue.open({ key, exclusive: true })).code).to.equal('EEXIST');
    a.remove();
    expect(thrown(() => SysvQueue.open({ key, create: false })).code).to.equal('ENOENT');
  });

  it('trySend / tryReceive - never block: false when full, null when empty; msgtyp 0 takes any, -n the lowest up to n', () => {
    const q = scope.create();
    expect(q.tryReceive(0)).to.equal(null);
    expect(q.trySend(30, Buffer.from('thirty'))).to.equal(true);
    expect(q.trySend(10, Buffer.from('ten'))).to.equal(true);
    expect(q.trySend(20, Buffer.from('twenty'))).to.equal(true);
    expect(q.tryReceive(-25)).to.deep.include({ mtype: 10 });
    expect(q.tryReceive(0)).to.deep.include({ mtype: 30 }); // queue order
    const last = q.tryReceive(20);
    expect(last!.body.toString()).to.equal('twenty');
    expect(q.tryReceive(0)).to.equal(null);
    const capacity = q.stat().capacity;
    const body = Buffer.alloc(1000);
    let sent = 0;
    while (q.trySend(40, body)) sent++;
    expect(sent).to.equal(Math.floor(capacity / 1000));
    expect(q.stat()).to.include({ messages: sent, bytes: sent * 1000 });
  });

  it('setCapacity - beyond msgmnb needs CAP_SYS_RESOURCE: raised, or refused with EPERM and left as it was', () => {
    const q = scope.create();
    const msgmnb = readKernelLimit('msgmnb', 16384);
    expect(q.stat().capacity).to.equal(msgmnb);
    const r = q.setCapacity(msgmnb * 4);
    expect(r.capacity).to.equal(q.stat().capacity);
    if (r.raised) expect(r.capacity).to.equal(msgmnb * 4);
    else {
      expect(r.code).to.be.oneOf(['EPERM', 'EACCES']);
      expect(r.capacity).to.equal(msgmnb);
    }
    expect(q.setCapacity(100)).to.deep.equal({ capacity: r.capacity, raised: false }); // never lowered
  });

  it('remove - idempotent; afterwards the id is dead (EINVAL)', () => {
    const q = scope.create();
    q.remove();
    q.remove();
    expect(thrown(() => q.stat()).code).to.be.oneOf(['EINVAL', 'EIDRM']);
    expect(thrown(() => q.trySend(1, Buffer.from('x'))).code).to.be.oneOf(['EINVAL', 'EIDRM']);
  });

  it('receiver thread - backpressure: while the handler is busy, messages stay in the kernel queue', async () => {
    const q = scope.create();
    const t = scope.track(
      new SysvTransport(q, { ...defaultSysvTransportOptions, receiver: { batchBytes: 256 * 1024, batchMessages: 4, maxOutstanding: 1 } }),
    );
    for (let i = 0; i < 100; i++) expect(q.trySend(50, Buffer.from([i]))).to.equal(true);
    const got: ReceivedMessage[] = [];
    const inQueueDuringFirstBatch: number[] = [];
    const sizes: number[] = [];
    t.receive(50, (batch) => {
      sizes.push(batch.length);
      got.push(...batch);
      if (sizes.length === 1) {
        const until = Date.now() + 150;
        while (Date.now() < until); // a handler hogging the main thread
        inQueueDuringFirstBatch.push(q.stat().messages);
      }
    });
    await waitFor(() => got.length >= 100, 5000);
    // One batch handed over and unhandled: the thread took no more.
    expect(inQueueDuringFirstBatch).to.deep.equal([96]);
    expect(Math.max(...sizes)).to.equal(4);
    expect(got.map((m) => m.body[0])).to.deep.equal([...Array(100).keys()]);
  });

  it('receiver close - returns at once when the wake-up cannot be sent (queue full)', async () => {
    const q = scope.create();
    const t = scope.track(new SysvTransport(q, defaultSysvTransportOptions));
    const r = t.receive(60, () => {});
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Full by count as well as by bytes: the kernel admits at most msg_qbytes messages, so
    // only then is even a zero-length wake-up refused.
    const one = Buffer.alloc(1);
    while (q.trySend(61, one));
    expect(q.trySend(60, new Uint8Array(0))).to.equal(false);
    await withTimeout(r.close(), 1000, 'receiver close on a full queue');
    expect(await r.ended).to.include({ reason: 'closed' });
  });
});
