import { expect } from 'chai';
import { Collector } from '../../../src/gc/collector';
import { drainQueue } from '../../../src/gc/main';
import { legacyReplyBody } from '../../../src/chatd/legacy-gateway';
import { Endpoint, MTYPE_GC, MTYPE_LEGACY_REPLY, MTYPE_LEGACY_REQUEST, SysvTransport, chatdMtype, defaultSysvTransportOptions, shardMtype, toolMtype, type SysvQueue } from '../../../src/ipc';
import { useQueues } from '../../helpers/queues';
import { waitFor } from '../../helpers/wait';
import { sinkLogger } from './gc-rig';

/**
 * Issue 7, defect 8 and the count finding: junk on mtypes that no live process reads is taken
 * off the queue by the collector's hygiene, by age and at once when the queue is over high
 * water by bytes OR by message count. Legacy replies (mtype 2) are legacy expiry's alone
 * (defect 5): hygiene never takes them. Real private SysV queues; the collector as gc runs it.
 */

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const linesWith = (lines: Record<string, unknown>[], msg: string): Record<string, unknown>[] => lines.filter((l) => l.msg === msg);
const DRAINED = 'queue hygiene: drained messages nobody reads';

/** Counts the messages of each mtype by taking nothing: MSG_COPY over every position. */
function census(q: SysvQueue): Record<number, number> {
  const out: Record<number, number> = {};
  for (let i = 0; ; i++) {
    const m = q.peek(i);
    if (!m) return out;
    out[m.mtype] = (out[m.mtype] ?? 0) + 1;
  }
}

/** A pid that is certainly not running. */
function deadPid(): number {
  for (let pid = 4_000_000; ; pid--) {
    try {
      process.kill(pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') return pid;
    }
  }
}

describe('gc queue hygiene on a real queue (issue 7, defect 8; fill by count)', function () {
  this.timeout(20_000);
  const scope = useQueues();

  function gcOn(queue: SysvQueue, hygiene: { junkAgeMs: number }, legacyTtlMs = 60_000) {
    const shards = 2;
    const transport = scope.track(new SysvTransport(queue, defaultSysvTransportOptions));
    const endpoint = scope.track(new Endpoint(transport, { mtype: MTYPE_GC, incarnation: 77, maxBatchBytes: 4096, timeoutSweepMs: 5 }));
    const { log, lines } = sinkLogger('info');
    const collector = new Collector({
      endpoint,
      config: { shards, deadAfterMs: 10_000, heartbeatMs: 50 },
      log,
      drain: (mtype) => drainQueue(queue, mtype),
      liveness: (pid) => {
        try {
          process.kill(pid, 0);
          return true;
        } catch {
          return false;
        }
      },
      timings: { tickMs: 10, warmupMs: 0, stallMs: 10_000, hygieneEveryMs: 50, highWater: 0.5, legacyEveryMs: 50, legacyTtlMs, legacyFill: 0.5 },
      // As gc/main.ts wires it: hygiene peeks; legacy expiry takes one and puts young ones back.
      hygieneQueue: { stat: () => queue.stat(), peek: (i) => queue.peek(i), take: (m, max) => drainQueue(queue, m, max) },
      takeOne: (m) => queue.tryReceive(m)?.body ?? null,
      putBack: (m, body) => queue.trySend(m, body),
      hygiene: hygiene,
    });
    scope.track({ close: async () => collector.stop() });
    return { collector, lines };
  }

  it('SysvQueue.peek (MSG_COPY) reads a position without taking it', () => {
    const q = scope.create();
    q.trySend(9, Buffer.from('first'));
    q.trySend(5, Buffer.alloc(0));
    expect(q.peek(0)).to.deep.equal({ mtype: 9, body: Buffer.from('first') });
    expect(q.peek(1)).to.deep.equal({ mtype: 5, body: Buffer.alloc(0) });
    expect(q.peek(2)).to.equal(null);
    expect(q.stat().messages).to.equal(2);
  });

  it('junk on mtypes nobody reads is drained by age (one info line by class); live mailboxes, mtype 1 with a live chatD, a live tool are kept', async () => {
    const q = scope.create();
    const { collector, lines } = gcOn(q, { junkAgeMs: 300 }, 1200);
    const now = Date.now();
    // A live shard 0 and a live chatD 0 (this process's pid): their mailboxes are theirs, read or not.
    collector.table.heartbeat(shardMtype(0), 11, process.pid, now);
    collector.table.heartbeat(chatdMtype(0), 12, process.pid, now);
    collector.start();
    const dead = deadPid();
    const junk: [number, string][] = [
      [4242, 'unknownMtype'], // replies reflected to a forged sender mtype
      [5, 'unknownMtype'], // reserved
      [shardMtype(7), 'outOfPlan'], // shard 7 of 2
      [chatdMtype(3), 'unseenProcess'], // no chatD 3 ever heartbeated
      [toolMtype(dead), 'toolGone'], // a tool that is gone
    ];
    for (const [mtype] of junk) for (let i = 0; i < 3; i++) expect(q.trySend(mtype, Buffer.from(`reply to ${mtype}`))).to.equal(true);
    const kept = [shardMtype(0), chatdMtype(0), MTYPE_LEGACY_REQUEST, toolMtype(process.pid)];
    for (const mtype of kept) expect(q.trySend(mtype, Buffer.from('for a live reader'))).to.equal(true);
    expect(q.trySend(MTYPE_LEGACY_REPLY, legacyReplyBody('legacy reply nobody reads', now))).to.equal(true);

    await sleep(150);
    expect(q.stat().messages).to.equal(15 + 4 + 1); // nothing yet: younger than junkAgeMs
    await waitFor(() => q.stat().messages === 5, 3000, 10, 'junk drained by age');
    expect(census(q)).to.deep.equal({ [shardMtype(0)]: 1, [chatdMtype(0)]: 1, [MTYPE_LEGACY_REQUEST]: 1, [toolMtype(process.pid)]: 1, [MTYPE_LEGACY_REPLY]: 1 });
    const first = linesWith(lines, DRAINED);
    expect(first).to.have.length(1); // one line for the sweep, not one per message
    expect(first[0]).to.include({ reason: 'age', drained: 15 });
    expect(first[0]!.byClass).to.deep.equal({ unknownMtype: 6, outOfPlan: 3, unseenProcess: 3, toolGone: 3 });

    // The legacy reply no C peer took goes by age too, later, and by legacy expiry (its send
    // time), not by hygiene; the live mailboxes stay.
    await waitFor(() => q.stat().messages === 4, 3000, 10, 'legacy reply expired by age');
    expect(Date.now() - now).to.be.at.least(1200);
    expect(census(q)).to.deep.equal({ [shardMtype(0)]: 1, [chatdMtype(0)]: 1, [MTYPE_LEGACY_REQUEST]: 1, [toolMtype(process.pid)]: 1 });
    expect(linesWith(lines, DRAINED)).to.have.length(1);
    expect(linesWith(lines, 'legacy replies expired')).to.have.length(1);
    expect(linesWith(lines, 'legacy replies expired')[0]).to.include({ expired: 1, junk: 0, byFill: false });
    expect(collector.counters).to.include({ drainedMessages: 16, legacyRepliesDrained: 1 });
    expect(collector.status().hygiene).to.deep.include({ drained: 15 });
  });

  it('a dead shard: its mailbox is drained; mtype 1 with no chatD alive is drained too', async () => {
    const q = scope.create();
    const { collector, lines } = gcOn(q, { junkAgeMs: 200 });
    const dead = deadPid();
    collector.table.heartbeat(shardMtype(1), 21, dead, Date.now()); // its pid is gone: the pid check finds it dead
    collector.start();
    await waitFor(() => collector.table.vacancy(shardMtype(1)) !== undefined, 2000, 10, 'shard death');
    for (let i = 0; i < 4; i++) q.trySend(shardMtype(1), Buffer.from('request to a dead shard'));
    for (let i = 0; i < 2; i++) q.trySend(MTYPE_LEGACY_REQUEST, Buffer.alloc(1024));
    await waitFor(() => q.stat().messages === 0, 3000, 10, 'drained');
    const byClass = linesWith(lines, DRAINED).map((l) => l.byClass);
    expect(byClass).to.deep.equal([{ legacyRequest: 2, deadProcess: 4 }]);
  });

  it('the queue full by message count (empty messages, 0 bytes) counts as over high water: junk goes at once, whatever its age', async () => {
    const q = scope.create();
    const cap = q.stat().capacity;
    let n = 0;
    while (q.trySend(77, Buffer.alloc(0))) n++;
    expect(n).to.equal(cap); // Linux admits at most msg_qbytes messages
    expect(q.stat()).to.include({ bytes: 0, messages: cap });
    const { collector, lines } = gcOn(q, { junkAgeMs: 60_000 });
    collector.start();
    const t0 = Date.now();
    await waitFor(() => q.stat().messages === 0, 5000, 10, 'count-full queue drained');
    expect(Date.now() - t0).to.be.below(2000);
    const line = linesWith(lines, DRAINED)[0]!;
    expect(line).to.include({ reason: 'fill', drained: cap });
    expect(line.before).to.deep.include({ messages: cap, bytes: 0, fill: 1, limitedBy: 'messages' });
    expect(line.byClass).to.deep.equal({ unknownMtype: cap });
  });

  it('over high water: a plan mailbox the table has not seen (unseenProcess) waits for its age; other junk goes at once', async () => {
    const q = scope.create();
    const cap = q.stat().capacity;
    for (let i = 0; i < 3; i++) q.trySend(chatdMtype(3), Buffer.from('reply to a chatD gc has not heard from yet'));
    while (q.stat().bytes + 1024 <= cap * 0.7) q.trySend(4242, Buffer.alloc(1024));
    const { collector, lines } = gcOn(q, { junkAgeMs: 60_000 });
    collector.start();
    await waitFor(() => q.stat().messages === 3, 3000, 10, 'junk drained by fill');
    await sleep(600); // more fill sweeps would have run, were the queue still over high water
    expect(census(q)).to.deep.equal({ [chatdMtype(3)]: 3 });
    expect(linesWith(lines, DRAINED).map((l) => Object.keys(l.byClass as object))).to.deep.equal([['unknownMtype']]);
  });

  it('over high water by bytes: legacy replies go at once, by legacy expiry (defect 5), never by hygiene', async () => {
    const q = scope.create();
    const cap = q.stat().capacity;
    const now = Date.now();
    while (q.stat().bytes + 1024 <= cap * 0.7) q.trySend(MTYPE_LEGACY_REPLY, legacyReplyBody('young', now));
    const legacy = q.stat().messages;
    const { collector, lines } = gcOn(q, { junkAgeMs: 60_000 });
    collector.start();
    await waitFor(() => q.stat().messages === 0, 3000, 10, 'legacy replies expired by fill');
    expect(linesWith(lines, 'legacy replies expired')[0]).to.include({ expired: legacy, byFill: true });
    expect(linesWith(lines, DRAINED)).to.have.length(0);
    expect(collector.counters).to.include({ legacyRepliesDrained: legacy });
  });

  it('over high water by message count: young legacy replies go too; a live mailbox of empty messages stays', async () => {
    const q = scope.create();
    const cap = q.stat().capacity;
    const { collector, lines } = gcOn(q, { junkAgeMs: 60_000 });
    collector.table.heartbeat(chatdMtype(0), 12, process.pid, Date.now());
    const live = Math.floor(cap * 0.7);
    for (let i = 0; i < live; i++) expect(q.trySend(chatdMtype(0), Buffer.alloc(0))).to.equal(true);
    for (let i = 0; i < 2; i++) expect(q.trySend(MTYPE_LEGACY_REPLY, legacyReplyBody(`young${i}`))).to.equal(true);
    expect(q.stat().bytes).to.be.below(cap / 2); // not over high water by bytes
    collector.start();
    await waitFor(() => collector.counters.legacyRepliesDrained === 2, 3000, 10, 'legacy replies expired by count');
    expect(linesWith(lines, 'legacy replies expired')[0]).to.include({ expired: 2, byFill: true });
    await sleep(300); // more fill sweeps
    expect(q.stat().messages).to.equal(live); // the live chatD's mailbox, all of it
    expect(q.peek(0)?.mtype).to.equal(chatdMtype(0));
    expect(linesWith(lines, DRAINED)).to.have.length(0);
  });
});
