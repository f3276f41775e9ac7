import { expect } from 'chai';
import { SessionReaper } from '../../../src/chatd/session-reaper';
import { ShardClient } from '../../../src/chatd/shard-client';
import { Kind, Status } from '../../../src/cluster/kinds';
import { EMPTY, encodePayload } from '../../../src/cluster/messages';
import { Endpoint } from '../../../src/ipc/endpoint';
import { LocalQueue, LocalTransport } from '../../../src/ipc/local/local-transport';
import { chatdMtype, shardMtype } from '../../../src/ipc/mtypes';
import { linesWith, sinkLogger } from '../gc/gc-rig';

/**
 * Defect 4 of issue 7: after a long queue outage (about 55 s of junk while characters
 * disconnected) chatD logged `session removal gave up` and the characters stayed online for
 * good. A removal must be retried until it succeeds while chatD lives.
 */
describe('chatd - session reaper', function () {
  this.timeout(25_000);
  let queue: LocalQueue;
  let closers: (() => Promise<void>)[];

  beforeEach(() => {
    queue = new LocalQueue(1 << 20, 8192);
    closers = [];
  });
  afterEach(async () => {
    for (const c of closers.reverse()) await c().catch(() => {});
    queue.remove();
  });

  function endpoint(mtype: number, incarnation: number): Endpoint {
    const t = new LocalTransport(queue);
    const e = new Endpoint(t, { mtype, incarnation, maxBatchBytes: 4096, timeoutSweepMs: 5 });
    closers.push(async () => {
      await e.close();
      await t.close();
    });
    return e;
  }

  it('defect 4 - a removal that fails for longer than any fixed number of attempts is retried until the shard takes it (no "gave up", no leak)', async () => {
    const { log, lines } = sinkLogger();
    // The shard is unreachable for the first 30 attempts (the outage), then removes the entry.
    const shard = endpoint(shardMtype(0), 500);
    let removes = 0;
    shard.start((rec, reply) => {
      if (rec.kind !== Kind.REMOVE || !reply) return;
      removes++;
      reply(removes <= 30 ? Status.UNAVAILABLE : Status.OK, removes <= 30 ? EMPTY : encodePayload('count', { count: 1 }));
    });
    const chatd = endpoint(chatdMtype(0), 900);
    chatd.start(() => {});
    const shards = new ShardClient(chatd, 1, 200, 2400);
    shards.setMembership([[0, 500]], { epoch: 1, members: [[0, 0]], settled: true }); // the collector's view
    const reaper = new SessionReaper(chatd, shards, log, 30); // no collector runs: SESSION_END times out
    closers.push(async () => (reaper as unknown as { stop?: () => void }).stop?.());
    Object.assign(reaper, { retry: { minMs: 5, maxMs: 20, collectorEvery: 4, warnAfter: 5 } }); // a fast clock for the test
    const gone = await reaper.end('Aria', 7);
    expect(linesWith(lines, 'session removal gave up'), 'never gives up').to.have.length(0);
    expect(gone, 'the removal is confirmed in the end').to.equal(true);
    expect(removes).to.equal(31);
    expect(reaper.ending.size, 'nothing left unconfirmed').to.equal(0);
    expect(linesWith(lines, 'session removal still failing; retrying until it succeeds')).to.have.length(1);
  });

  it('stop() ends the retries of a chatD shutting down', async () => {
    const { log } = sinkLogger();
    const chatd = endpoint(chatdMtype(0), 900);
    chatd.start(() => {});
    const reaper = new SessionReaper(chatd, new ShardClient(chatd, 1, 20, 2400), log, 20);
    reaper.retry = { minMs: 5, maxMs: 10, collectorEvery: 4, warnAfter: 5 };
    const p = reaper.end('Aria', 8);
    await new Promise((r) => setTimeout(r, 200));
    reaper.stop();
    expect(await p).to.equal(false);
    expect(reaper.counters.retries).to.be.greaterThan(3);
  });
});
