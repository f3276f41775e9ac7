import { expect } from 'chai';
import { ProcessTable, trackedRoleOf } from '../../../src/gc/process-table';
import { MTYPE_GC, chatdMtype, shardMtype, toolMtype } from '../../../src/ipc';

describe('gc process table', () => {
  const S0 = shardMtype(0);
  const S1 = shardMtype(1);
  const C0 = chatdMtype(0);

  it('tracks - only shard and chatD mtypes', () => {
    expect(trackedRoleOf(S1)).to.deep.equal({ role: 'channeld', index: 1 });
    expect(trackedRoleOf(C0)).to.deep.equal({ role: 'chatd', index: 0 });
    expect(trackedRoleOf(MTYPE_GC)).to.equal(undefined);
    expect(trackedRoleOf(toolMtype(42))).to.equal(undefined);
    const t = new ProcessTable({ deadAfterMs: 1000 });
    expect(t.sighting(toolMtype(42), 5, 0).entry).to.equal(undefined);
    expect(t.live()).to.deep.equal([]);
  });

  it('heartbeat - adds the process with its pid; membership and hello lists follow', () => {
    const t = new ProcessTable({ deadAfterMs: 1000 });
    const r = t.heartbeat(S1, 11, 101, 0);
    expect(r.added).to.equal(true);
    expect(r.entry).to.include({ mtype: S1, role: 'channeld', index: 1, incarnation: 11, pid: 101, heartbeats: 1 });
    t.heartbeat(S0, 10, 100, 0);
    t.heartbeat(C0, 20, 200, 0);
    expect(t.liveShards()).to.deep.equal([[0, 10], [1, 11]]);
    expect(t.liveChatds()).to.deep.equal([[C0, 20]]);
    const again = t.heartbeat(S1, 11, 101, 50);
    expect(again.added).to.equal(false);
    expect(again.entry?.heartbeats).to.equal(2);
    expect(again.entry?.lastSeenAt).to.equal(50);
  });

  it('incarnation - a new one on a known mtype buries the old one, with a successor', () => {
    const t = new ProcessTable({ deadAfterMs: 1000 });
    t.heartbeat(C0, 20, 200, 0);
    const r = t.heartbeat(C0, 21, 201, 10);
    expect(r.replaced).to.include({ mtype: C0, incarnation: 20, pid: 200, reason: 'replaced', successor: 21 });
    expect(t.liveChatds()).to.deep.equal([[C0, 21]]);
    expect(t.isDead(C0, 20)).to.equal(true);
    expect(t.vacancy(C0)).to.equal(undefined);
    // A late record of the old incarnation neither revives it nor disturbs the new one.
    const late = t.sighting(C0, 20, 20);
    expect(late).to.include({ fromDead: true, entry: undefined });
    expect(t.get(C0)?.incarnation).to.equal(21);
  });

  it('markDead - idempotent; leaves a vacancy until a new incarnation speaks', () => {
    const t = new ProcessTable({ deadAfterMs: 1000 });
    t.heartbeat(S0, 10, 100, 0);
    const d = t.markDead(S0, 10, 'pm2', 5);
    expect(d).to.include({ reason: 'pm2', successor: undefined, at: 5 });
    expect(t.markDead(S0, 10, 'pid', 6)).to.equal(undefined);
    expect(t.markDead(S0, 99, 'pid', 6)).to.equal(undefined);
    expect(t.vacancy(S0)?.incarnation).to.equal(10);
    expect(t.vacantMtypes()).to.deep.equal([S0]);
    expect(t.liveShards()).to.deep.equal([]);
    const r = t.sighting(S0, 12, 7);
    expect(r.added).to.equal(true);
    expect(r.replaced).to.equal(undefined);
    expect(t.vacancy(S0)).to.equal(undefined);
  });

  it('checkPids - only pids that are gone, and not unchecked ones', () => {
    const t = new ProcessTable({ deadAfterMs: 1000 });
    t.heartbeat(S0, 10, 100, 0);
    t.heartbeat(S1, 11, 101, 0);
    t.heartbeat(C0, 20, 200, 0);
    t.get(C0)!.pidCheck = false;
    t.sighting(chatdMtype(1), 30, 0); // no heartbeat yet: pid unknown
    const deaths = t.checkPids((pid) => pid === 101, 1);
    expect(deaths.map((d) => [d.mtype, d.reason])).to.deep.equal([[S0, 'pid']]);
    expect(t.checkPids(() => false, 2).map((d) => d.mtype)).to.deep.equal([S1]);
  });

  it('checkSilence - after deadAfterMs; a collector stall is forgiven', () => {
    const t = new ProcessTable({ deadAfterMs: 1000 });
    t.heartbeat(S0, 10, 100, 0);
    t.heartbeat(S1, 11, 101, 500);
    t.heartbeat(C0, 12, 102, 0);
    // S0 and S1 are in another pid namespace; C0's pid is checkable, so silence never kills it.
    t.get(S0)!.pidCheck = false;
    t.get(S1)!.pidCheck = false;
    expect(t.checkSilence(1000)).to.deep.equal([]);
    t.forgiveSilenceBefore(1001);
    expect(t.checkSilence(1900)).to.deep.equal([]);
    const d = t.checkSilence(2002);
    expect(d.map((x) => [x.mtype, x.reason])).to.deep.equal([[S0, 'silence'], [S1, 'silence']]);
    expect(t.get(C0)?.incarnation).to.equal(12);
  });

  it('revive - takes back a dead incarnation only while its mtype is vacant', () => {
    const t = new ProcessTable({ deadAfterMs: 1000 });
    t.heartbeat(C0, 20, 200, 0);
    t.markDead(C0, 20, 'silence', 2000);
    const e = t.revive(C0, 20, 200, 2100);
    expect(e).to.include({ incarnation: 20, pid: 200 });
    expect(t.isDead(C0, 20)).to.equal(false);
    expect(t.vacancy(C0)).to.equal(undefined);
    t.heartbeat(C0, 21, 201, 2200); // replaced
    expect(t.revive(C0, 20, 200, 2300)).to.equal(undefined);
  });

  it('deaths - remembered up to a bound', () => {
    const t = new ProcessTable({ deadAfterMs: 1000, rememberDeaths: 3 });
    for (let inc = 1; inc <= 5; inc++) t.heartbeat(C0, inc, 200 + inc, inc);
    expect(t.deaths().map((d) => d.incarnation)).to.deep.equal([2, 3, 4]);
  });
});
