import { expect } from 'chai';
import { Kind, Status } from '../../../src/cluster/kinds';
import { decodePayload, encodePayload } from '../../../src/cluster/messages';
import { nextClockState } from '../../../src/gc/clock-skew';
import { Endpoint, LocalQueue, LocalTransport, MTYPE_GC, clusterClock, decodeEnvelope, deadlineIn, encodeEnvelope, shardMtype, type InboundRecord } from '../../../src/ipc';
import { Heartbeat } from '../../../src/runtime/heartbeat';
import { clockProblems } from '../../../ops/health';
import { waitFor } from '../../helpers/wait';
import { linesWith, makeRig, sinkLogger, type Rig } from './gc-rig';

/**
 * Clock skew across hosts (docs/multi-host.md "Clock skew"): real heartbeats (src/runtime/
 * heartbeat.ts) to a real collector over the in-process transport, with the collector's clock
 * injected `skew` ms off this process's. The process measures the offset, reports it, and
 * corrects its deadlines by it; the collector shows it in STATUS and warns once per crossing.
 */

const SKEWED = 'process clock differs from the collector\'s by more than the threshold (offset: collector minus process)';
const BACK = 'process clock back within the threshold of the collector\'s';

interface ProcClock { offset: number; bound: number; applied: boolean; skewed: boolean }

describe('gc - clock skew of the processes (docs/multi-host.md)', function () {
  this.timeout(15_000);

  describe('nextClockState (pure)', () => {
    it('skewed when |offset| - bound > threshold; back only when |offset| <= threshold; one change each way', () => {
      let s = nextClockState(undefined, {}, 250).state;
      expect(s).to.equal(undefined);
      let r = nextClockState(s, { offset: 240, bound: 5, applied: false }, 250);
      expect(r).to.deep.equal({ state: { offset: 240, bound: 5, applied: false, skewed: false } });
      r = nextClockState(r.state, { offset: -300, bound: 60, applied: true }, 250); // 300 - 60 < 250: not certain
      expect(r.change).to.equal(undefined);
      r = nextClockState(r.state, { offset: -3000, bound: 3, applied: true }, 250);
      expect(r.change).to.equal('skewed');
      r = nextClockState(r.state, { offset: -3001, bound: 2, applied: true }, 250);
      expect(r.change).to.equal(undefined);
      r = nextClockState(r.state, { offset: 260, bound: 20, applied: true }, 250); // hovering: still skewed, no line
      expect(r.change).to.equal(undefined);
      expect(r.state!.skewed).to.equal(true);
      r = nextClockState(r.state, { offset: 2, bound: 3, applied: false }, 250);
      expect(r.change).to.equal('back');
      expect(r.state!.skewed).to.equal(false);
      // A report without figures (before the first measurement) keeps the state.
      expect(nextClockState(r.state, {}, 250).state).to.equal(r.state);
    });

    it('npm run health - one problem per skewed process, naming it, its host, the offset and whether it is corrected; none from an earlier collector', () => {
      const status = {
        clockWarnMs: 250,
        processes: [
          { role: 'channeld', index: 2, host: 'host-c', clock: { offset: -3004, bound: 2, applied: true, skewed: true } },
          { role: 'channeld', index: 3, host: 'host-c', clock: { offset: 2999, bound: 2, applied: false, skewed: true } },
          { role: 'chatd', index: 0, host: 'host-a', clock: { offset: 0, bound: 1, applied: false, skewed: false } },
          { role: 'channeld', index: 0, host: 'host-b' },
        ],
      };
      const p = clockProblems(status);
      expect(p).to.have.length(2);
      expect(p[0]).to.equal('clock: channeld 2 on host host-c is 3004 ms ahead of gc\'s clock (±2 ms; threshold 250 ms); its deadlines are corrected, fix the host\'s time (NTP)');
      expect(p[1]).to.match(/^clock: channeld 3 on host host-c is 2999 ms behind gc's clock .*NOT corrected \(CLOCK_CORRECTION=off\)/);
      expect(clockProblems({ processes: [{ role: 'chatd', index: 0, host: 'x' }] })).to.deep.equal([]);
      expect(clockProblems(undefined)).to.deep.equal([]);
    });
  });

  describe('heartbeats to a collector whose clock is skewed', () => {
    let rig: Rig | undefined;
    const closers: (() => Promise<void>)[] = [];
    afterEach(async () => {
      for (const c of closers.splice(0)) await c();
      await rig?.close();
      rig = undefined;
      clusterClock.offsetMs = 0;
    });

    function processEndpoint(r: Rig, mtype: number): Endpoint {
      const t = new LocalTransport(r.queue);
      const e = new Endpoint(t, { mtype, incarnation: 4242, maxBatchBytes: 4096, timeoutSweepMs: 5 });
      e.start(() => {});
      closers.push(async () => {
        await e.close();
        await t.close();
      });
      return e;
    }

    const procClock = (r: Rig): ProcClock | undefined =>
      ((r.collector.status().processes as { mtype: number; clock?: ProcClock }[]).find((p) => p.mtype === shardMtype(1)))?.clock;

    it('measured, reported, corrected - the collector 3000 ms behind this process: offset about -3000 in STATUS, deadlines corrected, one warning; back to 0 later: one more line, correction off', async () => {
      let skew = -3000;
      rig = makeRig({ shards: 2, now: () => Date.now() + skew });
      const { log, lines: procLines } = sinkLogger();
      const hb = new Heartbeat(processEndpoint(rig, shardMtype(1)), { role: 'channeld', index: 1 }, 20, undefined, undefined, undefined, { log });
      hb.start();
      closers.push(async () => hb.stop());
      await waitFor(() => procClock(rig!)?.skewed === true, 5000, 5, 'the collector sees the skew');
      const c = procClock(rig)!;
      expect(Math.abs(c.offset + 3000), JSON.stringify(c)).to.be.at.most(c.bound + 1);
      expect(c.applied).to.equal(true);
      expect(Math.abs(clusterClock.offsetMs + 3000)).to.be.at.most(c.bound + 1);
      expect(hb.appliedOffsetMs).to.equal(clusterClock.offsetMs);
      // Many more heartbeats: still one warning.
      const beats = rig.collector.status().counters as Record<string, number>;
      await waitFor(() => (rig!.collector.status().counters as Record<string, number>).heartbeats >= beats.heartbeats + 20, 5000, 5, '20 more heartbeats');
      const warned = linesWith(rig.lines, SKEWED);
      expect(warned).to.have.length(1);
      expect(warned[0]).to.deep.include({ level: 40, role: 'channeld', index: 1, corrected: true, thresholdMs: 250 });
      expect(Math.abs((warned[0]!.offsetMs as number) + 3000)).to.be.at.most((warned[0]!.boundMs as number) + 1);
      expect(linesWith(procLines, 'this host\'s clock differs from the collector\'s: envelope deadlines corrected by the measured offset')).to.have.length(1);
      // The collector's clock steps back to ours (restarted elsewhere, NTP): a jump, confirmed in 3 heartbeats.
      skew = 0;
      await waitFor(() => procClock(rig!)?.skewed === false, 5000, 5, 'the collector sees the clock back');
      expect(clusterClock.offsetMs).to.equal(0);
      expect(procClock(rig)!.applied).to.equal(false);
      expect(linesWith(rig.lines, BACK)).to.have.length(1);
      expect(linesWith(rig.lines, SKEWED)).to.have.length(1);
      expect(hb.clock.jumps).to.equal(1);
      expect(linesWith(procLines, 'clock offset to the collector jumped (a clock stepped, or the collector restarted elsewhere); following it')).to.have.length(1);
      expect((rig.collector.status().counters as Record<string, number>).clockSkews).to.equal(1);
    });

    it('CLOCK_CORRECTION=off - measured and reported, never applied to deadlines', async () => {
      rig = makeRig({ shards: 2, now: () => Date.now() + 2000 });
      const hb = new Heartbeat(processEndpoint(rig, shardMtype(1)), { role: 'channeld', index: 1 }, 20, undefined, undefined, undefined, { correct: false });
      hb.start();
      closers.push(async () => hb.stop());
      await waitFor(() => procClock(rig!)?.skewed === true, 5000, 5, 'the collector sees the skew');
      expect(Math.abs(procClock(rig)!.offset - 2000)).to.be.at.most(procClock(rig)!.bound + 1);
      expect(procClock(rig)!.applied).to.equal(false);
      expect(clusterClock.offsetMs).to.equal(0);
    });

    it('one host - the same clock: offset within its bound, nothing applied, no warning', async () => {
      rig = makeRig({ shards: 2 });
      const hb = new Heartbeat(processEndpoint(rig, shardMtype(1)), { role: 'channeld', index: 1 }, 20);
      hb.start();
      closers.push(async () => hb.stop());
      await waitFor(() => (procClock(rig!)?.bound ?? 0) > 0 && (rig!.collector.status().counters as Record<string, number>).heartbeats > 30, 5000, 5, '30 heartbeats');
      const c = procClock(rig)!;
      expect(Math.abs(c.offset)).to.be.at.most(c.bound);
      expect(c).to.include({ applied: false, skewed: false });
      expect(clusterClock.offsetMs).to.equal(0);
      expect(linesWith(rig.lines, SKEWED)).to.have.length(0);
    });

    it('behind - a heartbeat of another host past its deadline (its clock behind) is answered with `now`, warned once; one of this host is dropped unanswered as before', async () => {
      rig = makeRig({ shards: 2, hostId: 'host-a' });
      const raw = new LocalTransport(rig.queue);
      const got: InboundRecord[] = [];
      raw.receive(shardMtype(1), (batch) => {
        for (const m of batch) {
          const d = decodeEnvelope(m.body);
          if (d.ok) got.push(...d.records);
        }
      });
      closers.push(() => raw.close());
      const send = (reqId: number, host: string | undefined, deadline: number): void =>
        raw.send(MTYPE_GC, encodeEnvelope({ from: shardMtype(1), fromIncarnation: 77, toIncarnation: 0 }, [
          { kind: Kind.HEARTBEAT, reqId, deadline, payload: encodePayload('heartbeat', { role: 'channeld', index: 1, pid: 999, ...(host ? { host } : {}), clock: {} }) },
        ]));
      const expired = (): number => (rig!.collector.status().endpoint as Record<string, number>).expired!;
      const expiredBefore = expired();
      // This host's process (no host named, then host-a), 3 s past: dropped, counted, unanswered.
      send(1, undefined, deadlineIn(-3000));
      send(2, 'host-a', deadlineIn(-3000));
      // Another host's, 3 s past (its clock is 3 s behind ours): answered, with our time.
      send(3, 'host-c', deadlineIn(-3000));
      send(4, 'host-c', deadlineIn(-2900));
      await waitFor(() => got.length >= 2, 2000, 5, 'answers');
      await new Promise((r) => setTimeout(r, 50));
      expect(got.map((r) => r.reqId)).to.deep.equal([3, 4]);
      expect(got[0]!.status).to.equal(Status.OK);
      const m = decodePayload('membership', got[0]!.payload)!;
      expect(Math.abs(m.now! - Date.now())).to.be.below(1000);
      expect(expired() - expiredBefore).to.equal(2);
      const counters = rig.collector.status().counters as Record<string, number>;
      expect(counters.lateHeartbeats).to.equal(2);
      const warned = linesWith(rig.lines, 'heartbeat of another host arrived past its deadline: its clock is behind the collector\'s (or it was delayed); answered, so that it can measure its offset');
      expect(warned).to.have.length(1);
      expect(warned[0]).to.deep.include({ host: 'host-c', mtype: shardMtype(1) });
      expect(warned[0]!.lateMs as number).to.be.within(2990, 3500);
    });

    it('mixed versions - a heartbeat without `clock` (an earlier process) gets no `now`; one with it does', async () => {
      rig = makeRig({ shards: 2 });
      const e = processEndpoint(rig, shardMtype(0));
      const old = await e.request(MTYPE_GC, Kind.HEARTBEAT, encodePayload('heartbeat', { role: 'channeld', index: 0, pid: process.pid }), 2000);
      expect(old.status).to.equal(Status.OK);
      expect(JSON.parse(Buffer.from(old.payload).toString('utf8'))).to.not.have.property('now');
      const nu = await e.request(MTYPE_GC, Kind.HEARTBEAT, encodePayload('heartbeat', { role: 'channeld', index: 0, pid: process.pid, clock: {} }), 2000);
      expect(decodePayload('membership', nu.payload)!.now).to.be.a('number');
      // A malformed clock report is a bad heartbeat, like any other bad field.
      const bad = await e.request(MTYPE_GC, Kind.HEARTBEAT, Buffer.from(JSON.stringify({ role: 'channeld', index: 0, pid: process.pid, clock: { offset: 'x' } })), 2000);
      expect(bad.status).to.equal(Status.BAD_REQUEST);
    });

    it('mixed versions - a collector of an earlier version refuses `clock` (BAD_REQUEST): heartbeats go on without it', async () => {
      const queue = new LocalQueue(16384, 8192);
      const gcT = new LocalTransport(queue);
      const gc = new Endpoint(gcT, { mtype: MTYPE_GC, incarnation: 7, maxBatchBytes: 4096 });
      const seen: Record<string, unknown>[] = [];
      gc.start((rec, reply) => {
        const p = JSON.parse(Buffer.from(rec.payload).toString('utf8')) as Record<string, unknown>;
        seen.push(p);
        // The earlier schema: additionalProperties false, no `clock`.
        reply!('clock' in p ? Status.BAD_REQUEST : Status.OK, encodePayload('membership', { shards: [] }));
      });
      const pT = new LocalTransport(queue);
      const pE = new Endpoint(pT, { mtype: shardMtype(0), incarnation: 5, maxBatchBytes: 4096 });
      pE.start(() => {});
      const { log, lines } = sinkLogger();
      const hb = new Heartbeat(pE, { role: 'channeld', index: 0 }, 20, undefined, undefined, undefined, { log });
      closers.push(async () => {
        hb.stop();
        for (const x of [pE, gc]) await x.close();
        for (const x of [pT, gcT]) await x.close();
      });
      hb.start();
      await waitFor(() => seen.length >= 5, 5000, 5, '5 heartbeats');
      expect('clock' in seen[0]!).to.equal(true);
      expect(seen.slice(1).every((p) => !('clock' in p))).to.equal(true);
      expect(hb.lastReplyAt).to.be.greaterThan(0);
      expect(lines.filter((l) => String(l.msg).startsWith('the collector refused a heartbeat with a clock report'))).to.have.length(1);
    });
  });
});
