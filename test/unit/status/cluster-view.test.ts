import { expect } from 'chai';
import { ClusterView, type Answer, type Poll, type QueueFigures, type Target } from '../../../src/status/cluster-view';
import { LIMITS, figuresOf } from '../../../src/status/process-figures';
import { targetsFor } from '../../../src/status/status-poller';

const GC: Target = { key: 'gc', role: 'gc', index: 0, mtype: 3 };
const S0: Target = { key: 'channeld/0', role: 'channeld', index: 0, mtype: 100 };
const S1: Target = { key: 'channeld/1', role: 'channeld', index: 1, mtype: 101 };
const C0: Target = { key: 'chatd/0', role: 'chatd', index: 0, mtype: 1000 };
const QUEUE: QueueFigures = { state: 'ok', key: '0x00000001', id: 7, messages: 3, bytes: 120, capacity: 1000, fill: 0.12 };

/** A chatD STATUS reply as the metrics contract has it. */
function chatdStatus(requests: number, finds: number, pid = 500, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    role: 'chatd',
    pid,
    uptimeS: 12,
    metrics: {
      counters: { requests, finds, timeouts: 0, rateLimited: 1, errors: 0 },
      gauges: { sessions: 3, connections: 4, inFlight: 0 },
      latency: { p50Ms: 1.5, p99Ms: 9, count: 40 },
      sessionsPerChannel: { '3': 2, '5': 1 },
    },
    ...extra,
  };
}

function ok(target: Target, status: Record<string, unknown>): Answer {
  return { target, outcome: 'ok', ms: 2, figures: figuresOf(target.role, status) };
}

function poll(at: number, answers: Answer[], queue: QueueFigures = QUEUE): Poll {
  return { at, queue, answers };
}

describe('status - ClusterView', () => {
  it('rates - per-second rates from counter deltas; req/s and finds/s from chatD', () => {
    const v = new ClusterView();
    const first = v.update(poll(1000, [ok(C0, chatdStatus(100, 40))]));
    expect(first.point.reqPerSec, 'no rate before a second answer').to.equal(null);
    const s = v.update(poll(3000, [ok(C0, chatdStatus(300, 140))]));
    expect(s.processes[0]!.rates).to.include({ requests: 100, finds: 50, timeouts: 0 });
    expect(s.point).to.include({ reqPerSec: 100, findsPerSec: 50, p50Ms: 1.5, p99Ms: 9, sessions: 3, queueMessages: 3, answering: 1, asked: 1 });
    expect(s.sessionsPerChannel).to.deep.equal({ '3': 2, '5': 1 });
    expect(s.cluster).to.equal('healthy');
  });

  it('rates - a counter that went down, or a new pid, is a restart: no rate for that round', () => {
    const v = new ClusterView();
    v.update(poll(1000, [ok(C0, chatdStatus(100, 40))]));
    expect(v.update(poll(2000, [ok(C0, chatdStatus(5, 2))])).point.reqPerSec).to.equal(null);
    expect(v.update(poll(3000, [ok(C0, chatdStatus(15, 2, 501))])).point.reqPerSec, 'pid changed').to.equal(null);
    expect(v.update(poll(4000, [ok(C0, chatdStatus(25, 2, 501))])).point.reqPerSec).to.equal(10);
  });

  it('partial failure - a process that does not answer is "not answering", keeps its totals, loses gauges and rates', () => {
    const v = new ClusterView();
    v.update(poll(1000, [ok(GC, { role: 'gc', pid: 9, counters: { deaths: 1 }, processes: [] }), ok(C0, chatdStatus(10, 1))]));
    const s = v.update(poll(2000, [ok(GC, { role: 'gc', pid: 9, counters: { deaths: 1 }, processes: [] }), { target: C0, outcome: 'timeout', ms: 800, problem: 'no STATUS reply within 800 ms' }]));
    const chatd = s.processes.find((p) => p.key === 'chatd/0')!;
    expect(chatd).to.include({ state: 'not answering', detail: 'no STATUS reply within 800 ms', pid: 500, missed: 1, lastSeen: 1000 });
    expect(chatd.counters).to.include({ requests: 10 });
    expect(chatd.gauges).to.deep.equal({});
    expect(s.cluster).to.equal('degraded');
    expect(s.sessionsPerChannel, 'no chatD answered: no per-channel figures').to.equal(null);
    expect(s.point).to.include({ reqPerSec: null, sessions: null, answering: 1, asked: 2 });
    // Back after a gap: the rate spans the gap.
    const back = v.update(poll(4000, [ok(GC, { role: 'gc', pid: 9, counters: {}, processes: [] }), ok(C0, chatdStatus(40, 1))]));
    expect(back.point.reqPerSec).to.equal(10);
    expect(back.cluster).to.equal('healthy');
  });

  it('queue - a missing queue makes the cluster down and the queue points null', () => {
    const v = new ClusterView();
    const s = v.update(poll(1000, [{ target: GC, outcome: 'error', problem: 'queue missing' }], { state: 'missing', key: '0x1', problem: 'no queue' }));
    expect(s.cluster).to.equal('down');
    expect(s.point.queueMessages).to.equal(null);
    expect(s.processes[0]).to.include({ state: 'not answering' });
  });

  it('history - bounded; rows sorted gc, shards, chatD', () => {
    const v = new ClusterView(5);
    for (let i = 0; i < 12; i++) v.update(poll(1000 * i, [ok(C0, chatdStatus(i, i)), ok(S1, { role: 'channeld', shard: 1, entries: 2, counters: { requests: i } }), ok(S0, { role: 'channeld', shard: 0, entries: 1, counters: { requests: 2 * i } }), ok(GC, { role: 'gc' })]));
    expect(v.history.length).to.equal(5);
    expect(v.history[4]!.t).to.equal(11_000);
    expect(v.snapshot!.processes.map((p) => p.key)).to.deep.equal(['gc', 'channeld/0', 'channeld/1', 'chatd/0']);
  });

  it('fallback - before the metrics object, today\'s fields are read; finds/s comes from the shards', () => {
    const v = new ClusterView();
    const old = (req: number, sreq: number): Answer[] => [
      ok(C0, { role: 'chatd', sessions: 2, pendingRequests: 1, counters: { requests: req, rateLimited: 0 } }),
      ok(S0, { role: 'channeld', shard: 0, state: 'recovering', entries: 4, counters: { requests: sreq } }),
      ok(GC, { role: 'gc', pid: 3, uptimeMs: 5000, counters: { deaths: 0 }, processes: [{ mtype: 1000, role: 'chatd', index: 0, pid: 11 }] }),
    ];
    v.update(poll(0, old(0, 0)));
    const s = v.update(poll(1000, old(7, 3)));
    expect(s.point).to.include({ reqPerSec: 7, findsPerSec: 3, sessions: 2, p50Ms: null });
    const shard = s.processes.find((p) => p.key === 'channeld/0')!;
    expect(shard.gauges).to.deep.equal({ entries: 4 });
    expect(shard.detail).to.equal('recovering');
    const gc = s.processes.find((p) => p.key === 'gc')!;
    expect(gc).to.include({ pid: 3, uptimeS: 5 });
    expect(gc.gauges).to.deep.equal({ processes: 1 });
    expect(s.sessionsPerChannel).to.equal(null);
  });
});

describe('status - figuresOf reads STATUS replies defensively', () => {
  it('drops non-numbers, odd names and bad latency; bounds the names', () => {
    const many = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`c${i}`, i]));
    const f = figuresOf('chatd', {
      metrics: {
        counters: { ...many, 'bad name': 1, __proto__x: 2, s: 'x', inf: Infinity },
        gauges: [1, 2],
        latency: { p50Ms: -1, p99Ms: 2, count: 1 },
        sessionsPerChannel: { '3': 1, x: 2, '-1': 3, '07': 4 },
      },
      pid: 'nope',
    });
    expect(Object.keys(f.counters).length).to.equal(LIMITS.names);
    expect(f.counters).not.to.have.property('bad name');
    expect(f.gauges).to.deep.equal({});
    expect(f.latency).to.equal(undefined);
    expect(f.pid).to.equal(undefined);
    expect(f.sessionsPerChannel).to.deep.equal({ '3': 1, '7': 4 });
  });

  it('never throws on garbage', () => {
    for (const junk of [{}, { metrics: null }, { metrics: 5 }, { processes: 'x' }, { counters: [1] }, { metrics: { counters: null, gauges: 'x' } }]) {
      for (const role of ['gc', 'channeld', 'chatd'] as const) expect(() => figuresOf(role, junk as Record<string, unknown>)).not.to.throw();
    }
  });
});

describe('status - membership (gc\'s epoch)', () => {
  it('gc\'s epoch becomes `membership` and three gauges; junk is ignored', () => {
    const f = figuresOf('gc', { epoch: { epoch: 8, members: [5, 3, 4], settled: true }, processes: [] });
    expect(f.membership).to.deep.equal({ epoch: 8, members: [3, 4, 5], settled: true });
    expect(f.gauges).to.include({ epoch: 8, members: 3, settled: 1 });
    expect(figuresOf('gc', { epoch: { epoch: 9, members: [3], settled: false } }).gauges).to.include({ settled: 0 });
    for (const junk of [{ epoch: 0, members: [1] }, { epoch: 2, members: [] }, { epoch: 2, members: [900] }, { epoch: 2, members: [1.5] }, { epoch: 'x', members: [1] }, 7, null]) {
      expect(figuresOf('gc', { epoch: junk } as Record<string, unknown>).membership, JSON.stringify(junk)).to.equal(undefined);
    }
    expect(figuresOf('channeld', { epoch: { epoch: 8, members: [1], settled: true } }).membership, 'only gc speaks for the membership').to.equal(undefined);
  });

  it('the snapshot keeps the last membership gc gave', () => {
    const v = new ClusterView();
    const gc = { key: 'gc', role: 'gc' as const, index: 0, mtype: 3 };
    const ok = (at: number, epoch: number) => ({ at, queue: QUEUE, answers: [{ target: gc, outcome: 'ok' as const, figures: figuresOf('gc', { epoch: { epoch, members: [0, 1], settled: true } }) }] });
    expect(v.update({ at: 0, queue: QUEUE, answers: [{ target: gc, outcome: 'timeout' as const }] }).membership).to.equal(null);
    expect(v.update(ok(1000, 4)).membership).to.deep.equal({ epoch: 4, members: [0, 1], settled: true });
    expect(v.update({ at: 2000, queue: QUEUE, answers: [{ target: gc, outcome: 'timeout' as const }] }).membership?.epoch).to.equal(4);
  });
});

describe('status - targetsFor', () => {
  it('once gc names the members: those shards, not 0..CHANNELD_SHARDS-1 (scaled down to 3, 4, 5)', () => {
    const live = [{ mtype: 103, role: 'channeld', index: 3 }, { mtype: 104, role: 'channeld', index: 4 }, { mtype: 106, role: 'channeld', index: 6 }];
    expect(targetsFor(2, live, [3, 4, 5]).map((t) => t.key)).to.deep.equal(['gc', 'channeld/3', 'channeld/4', 'channeld/5', 'channeld/6', 'chatd/0']);
    expect(targetsFor(2, [], []).map((t) => t.key), 'no members named: the configured shards').to.deep.equal(['gc', 'channeld/0', 'channeld/1', 'chatd/0']);
  });

  it('gc, every configured shard, chatD 0, and every chatD instance gc lists', () => {
    expect(targetsFor(2).map((t) => [t.key, t.mtype])).to.deep.equal([['gc', 3], ['channeld/0', 100], ['channeld/1', 101], ['chatd/0', 1000]]);
    const more = targetsFor(1, [{ mtype: 1002, role: 'chatd', index: 2 }, { mtype: 100, role: 'channeld', index: 0 }, { mtype: 5_000_000, role: 'chatd', index: 9 }]);
    expect(more.map((t) => t.key)).to.deep.equal(['gc', 'channeld/0', 'chatd/0', 'chatd/2']);
  });

  it('every shard gc lists, also beyond CHANNELD_SHARDS (pm2 scale channeld: resharding); nothing out of range or on a foreign mtype', () => {
    const live = [
      { mtype: 104, role: 'channeld', index: 4 },
      { mtype: 102, role: 'channeld', index: 2 },
      { mtype: 100 + 900, role: 'channeld', index: 900 },
      { mtype: 1000, role: 'channeld', index: 3 },
    ];
    expect(targetsFor(2, live).map((t) => [t.key, t.mtype])).to.deep.equal([['gc', 3], ['channeld/0', 100], ['channeld/1', 101], ['channeld/2', 102], ['channeld/4', 104], ['chatd/0', 1000]]);
  });
});
