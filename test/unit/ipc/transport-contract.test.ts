import { expect } from 'chai';
import {
  BacklogFullError,
  IpcError,
  TransportClosedError,
  type MessageTransport,
  type ReceivedMessage,
  type Receiver,
  type ReceiverEnd,
} from '../../../src/ipc';
import { transportImpls } from '../../helpers/transports';
import { waitFor, withTimeout } from '../../helpers/wait';

/** Everything one receiver got, copied out of the batch buffers. */
interface Inbox {
  readonly receiver: Receiver;
  readonly messages: ReceivedMessage[];
  readonly batchSizes: number[];
}

/** Starts a receiver and waits until messages sent from elsewhere reach it (Receiver.ready). */
async function listen(transport: MessageTransport, mtype: number): Promise<Inbox> {
  const messages: ReceivedMessage[] = [];
  const batchSizes: number[] = [];
  const receiver = transport.receive(mtype, (batch) => {
    batchSizes.push(batch.length);
    for (const m of batch) messages.push({ mtype: m.mtype, body: Buffer.from(m.body) });
  });
  await receiver.ready;
  return { receiver, messages, batchSizes };
}

/** Body: u8 sender, u32 seq, then `pad` bytes derived from both (so corruption shows). */
function tagged(sender: number, seq: number, pad = seq % 40): Buffer {
  const b = Buffer.allocUnsafe(5 + pad);
  b.writeUInt8(sender, 0);
  b.writeUInt32LE(seq, 1);
  for (let i = 0; i < pad; i++) b[5 + i] = (sender * 31 + seq + i) & 0xff;
  return b;
}

function readTag(body: Buffer): { sender: number; seq: number; intact: boolean } {
  const sender = body.readUInt8(0);
  const seq = body.readUInt32LE(1);
  let intact = true;
  for (let i = 5; i < body.length; i++) if (body[i] !== ((sender * 31 + seq + i - 5) & 0xff)) intact = false;
  return { sender, seq, intact };
}

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

for (const impl of transportImpls) {
  describe(`transport contract: ${impl.name}`, function () {
    this.timeout(20_000);
    const rig = impl.setup();

    it('round trip - a message arrives once, with its mtype and bytes', async () => {
      const { transports: [a, b] } = await rig(2);
      const inbox = await listen(a!, 100);
      const body = Buffer.from('héllo, queue', 'utf8');
      b!.send(100, body);
      await waitFor(() => inbox.messages.length >= 1, 3000);
      await sleep(30); // a duplicate would have time to show up
      expect(inbox.messages).to.have.length(1);
      expect(inbox.messages[0]!.mtype).to.equal(100);
      expect(inbox.messages[0]!.body.equals(body)).to.equal(true);
      expect(b!.counters().sent).to.equal(1);
      expect(a!.counters().received).to.equal(1);
    });

    it('order - kept per sender and mtype over 20,000 messages', async () => {
      const { transports: [recv, s1, s2] } = await rig(3);
      const mtypes = [101, 102];
      const inboxes = await Promise.all(mtypes.map((m) => listen(recv!, m)));
      const perPair = 5000; // 2 senders x 2 mtypes x 5000 = 20,000
      for (let seq = 0; seq < perPair; seq++) {
        for (const m of mtypes) {
          s1!.send(m, tagged(1, seq));
          s2!.send(m, tagged(2, seq));
        }
      }
      const total = 4 * perPair;
      await waitFor(() => inboxes.reduce((n, i) => n + i.messages.length, 0) >= total, 15_000, 10, 'all 20,000 messages');
      for (const [k, inbox] of inboxes.entries()) {
        const next = new Map<number, number>([[1, 0], [2, 0]]);
        for (const msg of inbox.messages) {
          expect(msg.mtype).to.equal(mtypes[k]);
          const { sender, seq, intact } = readTag(msg.body);
          expect(intact, `body of ${sender}/${seq} intact`).to.equal(true);
          expect(seq, `sender ${sender} on mtype ${mtypes[k]}`).to.equal(next.get(sender));
          next.set(sender, seq + 1);
        }
        expect([...next.values()]).to.deep.equal([perPair, perPair]);
      }
      expect(s1!.counters().backlogMessages).to.equal(0);
      expect(s1!.counters().sent + s2!.counters().sent).to.equal(total);
    });

    it('mtypes - receivers only get their own mtype', async () => {
      const { transports: [p1, p2, sender], stat } = await rig(3);
      const in201 = await listen(p1!, 201);
      const in202 = await listen(p2!, 202);
      for (let i = 0; i < 300; i++) {
        const mtype = 201 + (i % 3); // 201, 202, and 203 that nobody receives
        sender!.send(mtype, tagged(mtype - 200, i, 3));
      }
      await waitFor(() => in201.messages.length >= 100 && in202.messages.length >= 100, 5000);
      await sleep(50);
      for (const [inbox, mtype] of [[in201, 201], [in202, 202]] as const) {
        expect(inbox.messages).to.have.length(100);
        for (const msg of inbox.messages) {
          expect(msg.mtype).to.equal(mtype);
          expect(readTag(msg.body).sender).to.equal(mtype - 200);
        }
      }
      // The 203s are still waiting in the queue for their owner (a kernel queue; NATS drops them).
      if (impl.retains) {
        expect(stat().messages).to.equal(100);
        expect(stat().bytes).to.equal(100 * 8);
      }
    });

    it('batches - hands over more than one message per batch under load', async () => {
      const { transports: [recv, sender] } = await rig(2);
      // Waiting before the receiver starts (a kernel queue keeps them; NATS would drop them).
      let inbox = impl.retains ? undefined : await listen(recv!, 300);
      for (let i = 0; i < 50; i++) sender!.send(300, tagged(1, i, 20));
      inbox ??= await listen(recv!, 300);
      for (let i = 50; i < 2050; i++) sender!.send(300, tagged(1, i, 20));
      await waitFor(() => inbox.messages.length >= 2050, 10_000);
      expect(inbox.batchSizes.reduce((a, b) => a + b, 0)).to.equal(2050);
      expect(Math.max(...inbox.batchSizes)).to.be.greaterThan(1);
      expect(inbox.batchSizes.length).to.be.lessThan(2050);
      expect(inbox.messages.map((m) => readTag(m.body).seq)).to.deep.equal(Array.from({ length: 2050 }, (_, i) => i));
    });

    it('E2BIG - a body over msgmax is refused; exactly msgmax goes through', async () => {
      const { transports: [recv, sender] } = await rig(2);
      const max = sender!.maxMessageBytes;
      expect(max).to.be.greaterThan(0);
      const err = thrown(() => sender!.send(400, Buffer.alloc(max + 1)));
      expect(err).to.be.instanceOf(IpcError);
      expect((err as IpcError).code).to.equal('E2BIG');
      expect(sender!.counters()).to.include({ sent: 0, deferred: 0, backlogMessages: 0 });

      const inbox = await listen(recv!, 400);
      const big = Buffer.alloc(max, 0xab);
      sender!.send(400, big);
      await waitFor(() => inbox.messages.length >= 1, 3000);
      expect(inbox.messages[0]!.body.length).to.equal(max);
      expect(inbox.messages[0]!.body.equals(big)).to.equal(true);
    });

    it('empty body - refused (zero-length messages are receiver wake-ups)', async () => {
      const { transports: [sender], stat } = await rig(1);
      const err = thrown(() => sender!.send(500, new Uint8Array(0)));
      expect(err).to.be.instanceOf(IpcError);
      expect((err as IpcError).code).to.equal('EINVAL');
      expect(sender!.counters().sent).to.equal(0);
      expect(stat().messages).to.equal(0);
    });

    it('invalid mtype - refused at send, even while the backlog holds messages, and later sends still work', async () => {
      const { transports: [recv, sender] } = await rig(2);
      const early = impl.retains ? undefined : await listen(recv!, 600);
      for (const bad of [0, -1, 1.5, Number.NaN]) {
        const err = thrown(() => sender!.send(bad, Buffer.from('x')));
        expect(err, `mtype ${bad}`).to.be.instanceOf(IpcError);
        expect((err as IpcError).code).to.equal('EINVAL');
      }
      // Fill the queue so that sends wait in the backlog, then try a bad mtype again.
      const body = Buffer.alloc(1000, 1);
      let n = 0;
      while (sender!.counters().backlogMessages === 0) {
        sender!.send(600, body);
        n++;
      }
      const err = thrown(() => sender!.send(0, body));
      expect(err).to.be.instanceOf(IpcError);
      expect((err as IpcError).code).to.equal('EINVAL');
      sender!.send(600, body);
      n++;
      const inbox = early ?? (await listen(recv!, 600));
      await waitFor(() => inbox.messages.length >= n, 5000, 5, `${n} messages`);
      expect(sender!.counters().backlogMessages).to.equal(0);
      sender!.send(600, body); // the transport is still usable
      await waitFor(() => inbox.messages.length >= n + 1, 3000);
    });

    it('full queue - sends wait in the backlog and all arrive once a receiver drains', async function () {
      if (!impl.retains) this.skip(); // nothing fills while nobody receives: NATS keeps nothing (nats-transport.test.ts covers its backlog)
      const { transports: [recv, sender], stat } = await rig(2);
      const count = 60; // 60 KB: about four times what the queue holds
      for (let i = 0; i < count; i++) sender!.send(700, tagged(1, i, 995));
      const c = sender!.counters();
      expect(c.deferred).to.be.greaterThan(0);
      expect(c.backlogMessages).to.be.greaterThan(0);
      expect(c.backlogBytes).to.equal(c.backlogMessages * 1000);
      await sleep(50); // the backlog polls; nothing drains, so nothing moves
      const s = stat();
      expect(s.bytes).to.be.at.most(impl.capacity);
      expect(s.messages + sender!.counters().backlogMessages).to.equal(count);

      const inbox = await listen(recv!, 700);
      await waitFor(() => inbox.messages.length >= count, 5000);
      expect(inbox.messages.map((m) => readTag(m.body).seq)).to.deep.equal(Array.from({ length: count }, (_, i) => i));
      expect(sender!.counters()).to.include({ sent: count, backlogMessages: 0, backlogBytes: 0 });
    });

    it('full backlog - throws BacklogFullError (BACKLOG_FULL) at the message limit', async () => {
      const { transports: [recv, sender], stat } = await rig(2, { backlogMessages: 4 });
      const early = impl.retains ? undefined : await listen(recv!, 800);
      let accepted = 0;
      let err: unknown;
      for (let i = 0; i < 1000 && err === undefined; i++) {
        err = thrown(() => sender!.send(800, tagged(1, i, 995)));
        if (err === undefined) accepted++;
      }
      expect(err).to.be.instanceOf(BacklogFullError);
      expect((err as BacklogFullError).code).to.equal('BACKLOG_FULL');
      expect((err as BacklogFullError).clientCode).to.equal('UNAVAILABLE');
      expect(sender!.counters().backlogMessages).to.equal(4);
      if (impl.retains) expect(stat().messages).to.equal(accepted - 4);
      // What was accepted still goes out, in order; the refused message does not.
      const inbox = early ?? (await listen(recv!, 800));
      await waitFor(() => inbox.messages.length >= accepted, 5000);
      await sleep(30);
      expect(inbox.messages.map((m) => readTag(m.body).seq)).to.deep.equal(Array.from({ length: accepted }, (_, i) => i));
    });

    it('full backlog - throws BacklogFullError at the byte limit', async () => {
      const { transports: [sender] } = await rig(1, { backlogBytes: 2500 });
      let err: unknown;
      for (let i = 0; i < 1000 && err === undefined; i++) err = thrown(() => sender!.send(801, tagged(1, i, 995)));
      expect(err).to.be.instanceOf(BacklogFullError);
      expect(sender!.counters()).to.include({ backlogMessages: 2, backlogBytes: 2000 });
    });

    it(`queue removed - a blocked receiver ends with reason removed (${impl.removedCode})`, async () => {
      const { transports: [recv, sender], removeQueue } = await rig(2);
      const inbox = await listen(recv!, 900);
      sender!.send(900, Buffer.from('first'));
      await waitFor(() => inbox.messages.length === 1, 3000);
      await sleep(100); // the receiver is back in its blocking receive
      let ended: ReceiverEnd | undefined;
      void inbox.receiver.ended.then((e) => (ended = e));
      await removeQueue();
      await withTimeout(inbox.receiver.ended, 3000, 'receiver end after queue removal');
      expect(ended).to.include({ reason: 'removed', code: impl.removedCode });
    });

    it('queue removed - later sends throw TransportClosedError', async () => {
      const errors: Error[] = [];
      const { transports: [sender], removeQueue } = await rig(1, { onSendError: (e) => errors.push(e) });
      await removeQueue();
      const err = thrown(() => sender!.send(901, Buffer.from('x')));
      expect(err).to.be.instanceOf(TransportClosedError);
      expect((err as IpcError).clientCode).to.equal('UNAVAILABLE');
      expect(thrown(() => sender!.send(901, Buffer.from('y')))).to.be.instanceOf(TransportClosedError);
    });

    it('queue removed - messages waiting in the backlog fail through onSendError', async () => {
      const errors: Error[] = [];
      const { transports: [sender], removeQueue } = await rig(1, { onSendError: (e) => errors.push(e) });
      while (sender!.counters().backlogMessages === 0) sender!.send(902, Buffer.alloc(1000));
      await removeQueue();
      await waitFor(() => errors.length > 0, 3000, 5, 'onSendError');
      expect(errors[0]).to.be.instanceOf(IpcError);
      expect(sender!.counters().backlogMessages).to.equal(0);
      expect(thrown(() => sender!.send(902, Buffer.from('x')))).to.be.instanceOf(TransportClosedError);
    });

    it('close - ends receivers with reason closed; later send and receive throw TransportClosedError', async () => {
      const { transports: [t, other], stat } = await rig(2);
      const a = await listen(t!, 1000);
      const b = await listen(t!, 1001);
      await sleep(50);
      await withTimeout(t!.close(), 3000, 'close');
      expect(await withTimeout(a.receiver.ended, 1000, 'ended')).to.include({ reason: 'closed' });
      expect(await withTimeout(b.receiver.ended, 1000, 'ended')).to.include({ reason: 'closed' });
      await t!.close(); // idempotent
      const err = thrown(() => t!.send(1000, Buffer.from('x')));
      expect(err).to.be.instanceOf(TransportClosedError);
      expect((err as IpcError).code).to.equal('TRANSPORT_CLOSED');
      expect(thrown(() => t!.receive(1002, () => {}))).to.be.instanceOf(TransportClosedError);
      // The queue itself stays: other transports go on using it.
      if (impl.retains) {
        const before = stat().messages;
        other!.send(1000, Buffer.from('still here'));
        await sleep(30);
        expect(stat().messages).to.equal(before + 1);
      } else {
        const inbox = await listen(other!, 1003);
        other!.send(1003, Buffer.from('still here'));
        await waitFor(() => inbox.messages.length === 1, 3000, 5, 'a message through the other transport');
      }
    });

    it('receiver - one per mtype and transport; after close the mtype can be received again', async () => {
      const { transports: [t, sender] } = await rig(2);
      const first = await listen(t!, 1100);
      const err = thrown(() => t!.receive(1100, () => {}));
      expect(err).to.be.instanceOf(IpcError);
      expect((err as IpcError).code).to.equal('EBUSY');
      await withTimeout(first.receiver.close(), 3000, 'receiver close');
      expect(await first.receiver.ended).to.include({ reason: 'closed' });
      // A kernel queue keeps 'after' for the next receiver; NATS needs that receiver first.
      let second = impl.retains ? undefined : await listen(t!, 1100);
      sender!.send(1100, Buffer.from('after'));
      await sleep(50);
      expect(first.messages).to.have.length(0); // a closed receiver takes nothing
      second ??= await listen(t!, 1100);
      await waitFor(() => second.messages.length >= 1, 3000);
      expect(second.messages[0]!.body.toString()).to.equal('after');
    });

    it('receiver - same mtype on two transports (a restart overlap): closing one leaves the other receiving', async () => {
      const { transports: [old, fresh, sender] } = await rig(3);
      const kept = await listen(fresh!, 1150); // blocked in its receive first
      await sleep(100);
      const leaving = await listen(old!, 1150);
      await sleep(100);
      await withTimeout(leaving.receiver.close(), 3000, 'close of the second receiver of an mtype');
      expect(await leaving.receiver.ended).to.include({ reason: 'closed' });
      for (let i = 0; i < 10; i++) sender!.send(1150, tagged(1, i));
      await waitFor(() => kept.messages.length >= 10, 3000, 5, 'messages at the remaining receiver');
      expect(leaving.messages).to.have.length(0);
      expect(kept.messages.map((m) => readTag(m.body).seq)).to.deep.equal([...Array(10).keys()]);
    });

    it('stat - messages and bytes go up while nothing receives, and down once drained', async function () {
      if (!impl.retains) this.skip(); // NATS keeps no queue to count (stat() is the client's unsent bytes)
      const { transports: [recv, sender], stat } = await rig(2);
      const s0 = stat();
      expect(s0).to.include({ messages: 0, bytes: 0, capacity: impl.capacity, mode: 0o600 });
      sender!.send(1200, Buffer.alloc(100));
      sender!.send(1200, Buffer.alloc(200));
      sender!.send(1201, Buffer.alloc(300));
      expect(stat()).to.include({ messages: 3, bytes: 600 });
      expect(sender!.stat()).to.include({ messages: 3, bytes: 600 });
      expect(stat().lastSendPid).to.be.greaterThan(0);
      const inbox = await listen(recv!, 1200);
      await waitFor(() => inbox.messages.length >= 2, 3000);
      await waitFor(() => stat().messages === 1, 1000);
      expect(stat()).to.include({ messages: 1, bytes: 300 });
    });
  });
}
