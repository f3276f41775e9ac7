import { expect } from 'chai';
import { SysvTransport, defaultSysvTransportOptions, type ReceivedMessage } from '../../../src/ipc';
import { minRingBytes } from '../../../src/ipc/sysv/receiver-thread';
import type { Handover } from '../../../src/ipc/sysv/sysv-receiver';
import { useQueues } from '../../helpers/queues';

const MTYPE = 500;
const TOTAL = 40_000;

/** Size of message `seq`: spread over 5..max, with the largest ones now and then. */
const sizeOf = (seq: number, max: number): number => (seq % 97 === 0 ? max : 5 + ((seq * 7919) % (seq % 5 === 0 ? max - 4 : 300)));

function body(seq: number, max: number): Buffer {
  const b = Buffer.allocUnsafe(Math.max(5, sizeOf(seq, max)));
  b.writeUInt32LE(seq, 0);
  for (let i = 4; i < b.length; i++) b[i] = (seq + i * 13) & 0xff;
  return b;
}

function intact(b: Buffer, seq: number, max: number): boolean {
  if (b.length !== Math.max(5, sizeOf(seq, max)) || b.readUInt32LE(0) !== seq) return false;
  for (let i = 4; i < b.length; i++) if (b[i] !== ((seq + i * 13) & 0xff)) return false;
  return true;
}

/**
 * Both hand-overs under stress: 40,000 messages of 5 bytes to msgmax through the smallest ring
 * allowed (so it wraps and fills all the time), tiny batches, a handler that now and then hogs
 * the main thread; every body checked for order and content, and a sample kept past its
 * handler and checked again (bodies outlive the handler call).
 */
describe('ipc/sysv receiver - hand-over stress', function () {
  this.timeout(60_000);
  const scope = useQueues();

  for (const handover of ['ring', 'post'] as Handover[]) {
    it(`${handover} - 40,000 messages of mixed sizes arrive in order, intact, and stay intact after the handler`, async () => {
      const q = scope.create();
      const max = q.maxMessageBytes;
      const receiver = scope.track(
        new SysvTransport(q, {
          ...defaultSysvTransportOptions,
          receiver: { batchBytes: 20_000, batchMessages: 7, maxOutstanding: 64, handover, ringBytes: minRingBytes(max) },
        }),
      );
      const sender = scope.track(new SysvTransport(q, defaultSysvTransportOptions));
      const problems: string[] = [];
      const kept: ReceivedMessage[] = [];
      let next = 0;
      let batches = 0;
      let resolveDone!: () => void;
      const done = new Promise<void>((r) => (resolveDone = r));
      receiver.receive(MTYPE, (batch) => {
        batches++;
        for (const m of batch) {
          const seq = m.body.length >= 4 ? m.body.readUInt32LE(0) : -1;
          if (seq !== next && problems.length < 10) problems.push(`got ${seq}, expected ${next}`);
          if (!intact(m.body, seq, max) && problems.length < 10) problems.push(`body of ${seq} corrupt`);
          if (seq % 101 === 0) kept.push(m);
          next = seq + 1;
        }
        if (batches % 50 === 0) {
          const until = Date.now() + 3;
          while (Date.now() < until); // a busy handler: the ring and the credits fill up
        }
        if (next >= TOTAL) resolveDone();
      });
      for (let seq = 0; seq < TOTAL; ) {
        const stop = Math.min(TOTAL, seq + 500);
        for (; seq < stop; seq++) sender.send(MTYPE, body(seq, max));
        while (sender.counters().backlogMessages > 200) await new Promise((r) => setTimeout(r, 1));
      }
      await done;
      await new Promise((r) => setTimeout(r, 20));
      for (const m of kept) if (!intact(m.body, m.body.readUInt32LE(0), max)) problems.push(`kept body ${m.body.readUInt32LE(0)} changed`);
      expect(problems).to.deep.equal([]);
      expect(next).to.equal(TOTAL);
      expect(batches, 'many small batches').to.be.greaterThan(TOTAL / 7 - 1);
      expect(kept.length).to.equal(Math.ceil(TOTAL / 101));
    });
  }
});
