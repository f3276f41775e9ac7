import { expect } from 'chai';
import pino from 'pino';
import { Kind, Status } from '../../../src/cluster/kinds';
import { encodePayload } from '../../../src/cluster/messages';
import { Endpoint, MTYPE_GC, SysvQueue, SysvTransport, defaultSysvTransportOptions, newIncarnation, shardMtype } from '../../../src/ipc';
import * as c from '../../../src/ipc/sysv/libc';
import { StatusPoller } from '../../../src/status/status-poller';
import { removeQueueByKey, unusedQueueKey } from '../../helpers/host';

/** The status poller's suite keys (apart from the e2e and benchmark ranges). */
const KEY_BASE = 0x3c000000;
const log = pino({ level: 'silent' });

/** A process on the queue that answers STATUS like a daemon would. */
class Responder {
  readonly transport: SysvTransport;
  readonly endpoint: Endpoint;
  asked = 0;
  constructor(queue: SysvQueue, mtype: number, status: Record<string, unknown>) {
    this.transport = new SysvTransport(queue, defaultSysvTransportOptions);
    this.endpoint = new Endpoint(this.transport, { mtype, incarnation: newIncarnation(), maxBatchBytes: 4096 });
    this.endpoint.start((rec, reply) => {
      if (rec.kind !== Kind.STATUS || !reply) return;
      this.asked++;
      reply(Status.OK, encodePayload('status', status));
    });
  }
  async close(): Promise<void> {
    await this.endpoint.close();
    await this.transport.close();
  }
}

describe('status - StatusPoller over a real SysV queue', function () {
  this.timeout(20_000);
  const key = unusedQueueKey(KEY_BASE);
  const config = { mqKey: key, mqTrustedUids: [], mqBatchBytes: 4096, shards: 1 };
  const timings = { intervalMs: 1000, timeoutMs: 1000, maxBackoffMs: 5000 };
  let poller: StatusPoller | undefined;
  const responders: Responder[] = [];

  afterEach(async () => {
    await poller?.close();
    for (const r of responders.splice(0)) await r.close();
    removeQueueByKey(key);
  });

  it('missing queue, then answers and a silent chatD, then the queue removed and made anew: never throws, picks the new one up', async () => {
    poller = new StatusPoller(config, log, timings);
    let t = Date.now();
    const none = await poller.poll(t);
    expect(none.queue.state).to.equal('missing');
    expect(none.answers.map((a) => a.outcome)).to.deep.equal(['error', 'error', 'error']);

    let queue = SysvQueue.open({ key, mode: 0o600, create: true });
    responders.push(new Responder(queue, MTYPE_GC, { role: 'gc', pid: 42, uptimeS: 3, metrics: { counters: { purges: 2 }, gauges: { processes: 2 } }, processes: [] }));
    responders.push(new Responder(queue, shardMtype(0), { role: 'channeld', shard: 0, state: 'live', metrics: { counters: { requests: 9 }, gauges: { entries: 1 } } }));
    t += 1000;
    const first = await poller.poll(t);
    expect(first.queue).to.include({ state: 'ok', id: queue.id });
    const byKey = Object.fromEntries(first.answers.map((a) => [a.target.key, a]));
    expect(byKey.gc!.outcome).to.equal('ok');
    expect(byKey.gc!.figures).to.deep.include({ pid: 42, counters: { purges: 2 }, gauges: { processes: 2 } });
    expect(byKey['channeld/0']!.figures?.counters).to.deep.equal({ requests: 9 });
    expect(byKey['chatd/0']!.outcome, 'nobody reads mtype 1000').to.equal('timeout');

    // Backoff: the silent chatD is asked again after 1 s, then after 2 s (one round skipped); gc every round.
    t += 1000;
    const second = await poller.poll(t);
    expect(second.answers.find((a) => a.target.key === 'chatd/0')!.outcome).to.equal('timeout');
    t += 1000;
    const third = await poller.poll(t);
    expect(third.answers.find((a) => a.target.key === 'chatd/0')!.outcome).to.equal('skipped');
    expect(responders[0]!.asked).to.equal(3);

    // The queue goes away under everyone.
    for (const r of responders.splice(0)) await r.close();
    queue.remove();
    t += 1000;
    const gone = await poller.poll(t);
    expect(gone.queue.state).to.equal('missing');

    // A new queue under the same key: the poller uses it.
    queue = SysvQueue.open({ key, mode: 0o600, create: true });
    responders.push(new Responder(queue, MTYPE_GC, { role: 'gc', pid: 43, metrics: { counters: {}, gauges: {} } }));
    t += 1000;
    const again = await poller.poll(t);
    expect(again.queue).to.include({ state: 'ok', id: queue.id });
    expect(again.answers.find((a) => a.target.key === 'gc')!.figures?.pid).to.equal(43);
  });

  it('a queue it must refuse (world-readable mode, as a squatter leaves it) is never used', async () => {
    // Raw msgget: SysvQueue.open itself refuses to make such a queue.
    const id = c.msgget(key, c.IPC_CREAT | c.IPC_EXCL | 0o604);
    expect(id, c.errnoName(c.errno())).to.be.at.least(0);
    poller = new StatusPoller(config, log, timings);
    const p = await poller.poll();
    expect(p.queue.state).to.equal('refused');
    expect(p.queue.problem).to.contain('refusing queue');
    expect(p.answers.every((a) => a.outcome === 'error')).to.equal(true);
    const after = SysvQueue.fromId(id).stat();
    expect(after).to.include({ messages: 0, lastSendPid: 0, lastReceivePid: 0 });
  });
});
