import { expect } from 'chai';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SupervisorEvent } from '../../../src/gc/collector';
import { connectPm2, pm2DaemonReachable } from '../../../src/runtime/pm2-client';
import { DEPARTURE_CHECKS_MS, Pm2Watch, mtypeForApp, shardDeparted, toSupervisorEvent } from '../../../src/gc/pm2-watch';
import { chatdMtype, shardMtype } from '../../../src/ipc';
import { waitFor } from '../../helpers/wait';
import { linesWith, sinkLogger } from './gc-rig';
import { createPm2Sandbox, type Pm2Sandbox } from './pm2-sandbox';

describe('gc pm2 watch', function () {
  it('mapping - app name and NODE_APP_INSTANCE to mtype', () => {
    expect(mtypeForApp('channeld', 3)).to.equal(shardMtype(3));
    expect(mtypeForApp('channeld', '2')).to.equal(shardMtype(2));
    expect(mtypeForApp('chatd', 0)).to.equal(chatdMtype(0));
    expect(mtypeForApp('chatd', undefined)).to.equal(chatdMtype(0));
    expect(mtypeForApp('gc', 0)).to.equal(undefined);
    expect(mtypeForApp('other', 0)).to.equal(undefined);
    expect(mtypeForApp('channeld', 5000)).to.equal(undefined);
  });

  it('mapping - bus packets: exit and stop of tracked apps only', () => {
    expect(toSupervisorEvent({ event: 'exit', at: 5, process: { name: 'channeld', NODE_APP_INSTANCE: 1, pm_id: 3 } })).to.deep.equal({
      event: 'exit', mtype: shardMtype(1), at: 5,
    });
    expect(toSupervisorEvent({ event: 'stop', process: { name: 'chatd', NODE_APP_INSTANCE: 0, pid: 77 } })).to.deep.equal({
      event: 'stop', mtype: chatdMtype(0), pid: 77,
    });
    expect(toSupervisorEvent({ event: 'online', process: { name: 'chatd' } })).to.equal(undefined);
    expect(toSupervisorEvent({ event: 'exit', process: { name: 'gc' } })).to.equal(undefined);
    expect(toSupervisorEvent(null)).to.equal(undefined);
    expect(toSupervisorEvent('exit')).to.equal(undefined);
  });

  it('departure - a shard instance PM2 no longer lists is gone for good; listed in any state, it is not', () => {
    const list = [
      { name: 'channeld', instance: 0 },
      { name: 'channeld', instance: 2 },
      { name: 'chatd', instance: 1 },
    ];
    expect(shardDeparted(list, 0)).to.equal(false);
    expect(shardDeparted(list, 1)).to.equal(true); // chatd 1 is another app
    expect(shardDeparted(list, 2)).to.equal(false);
    expect(shardDeparted([], 0)).to.equal(true);
  });

  it('absent - not started by PM2: one info line, state absent', async () => {
    const { log, lines } = sinkLogger();
    const w = new Pm2Watch(log, () => undefined, { PM2_HOME: '/nonexistent' });
    expect(await w.start()).to.equal('absent');
    expect(lines).to.have.length(1);
    expect(lines[0]).to.include({ level: 30 });
    await w.stop();
  });

  it('absent - pm_id set but no daemon: never starts one', async () => {
    const home = mkdtempSync(join(tmpdir(), 'gc-pm2-'));
    try {
      const { log, lines } = sinkLogger();
      const w = new Pm2Watch(log, () => undefined, { pm_id: '4', PM2_HOME: home });
      expect(await w.start()).to.equal('absent');
      expect(linesWith(lines, 'PM2 daemon not reachable: deaths from pid checks and heartbeats only')).to.have.length(1);
      expect(await connectPm2(home)).to.equal(undefined);
      expect(existsSync(join(home, 'rpc.sock'))).to.equal(false);
      expect(existsSync(join(home, 'pm2.pid'))).to.equal(false);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  describe('with a real PM2 daemon (private PM2_HOME)', function () {
    this.timeout(30_000);
    let sandbox: Pm2Sandbox | undefined;
    let home: string;

    before(async function () {
      sandbox = await createPm2Sandbox();
      home = sandbox.home;
      await sandbox.start('channeld', 2);
    });

    after(async function () {
      await sandbox?.destroy();
    });

    it('list - the project pm2 lists the app processes', async () => {
      expect(await pm2DaemonReachable(home)).to.equal(true);
      const client = await connectPm2(home);
      try {
        const list = await client!.list();
        expect(list.map((p) => [p.name, p.instance, p.status])).to.deep.equal([
          ['channeld', 0, 'online'],
          ['channeld', 1, 'online'],
        ]);
      } finally {
        client!.disconnect();
      }
    });

    it('watching - an exit on the bus reaches the collector as that shard mtype', async () => {
      const { log } = sinkLogger();
      const events: SupervisorEvent[] = [];
      const w = new Pm2Watch(log, (ev) => events.push(ev), { pm_id: '9', PM2_HOME: home });
      try {
        expect(await w.start()).to.equal('watching');
        const client = await connectPm2(home);
        const victim = (await client!.list()).find((p) => p.instance === 1)!;
        client!.disconnect();
        process.kill(victim.pid, 'SIGKILL');
        await waitFor(() => events.some((e) => e.event === 'exit'), 5000, 10, 'exit event');
        const ev = events.find((e) => e.event === 'exit')!;
        expect(ev.mtype).to.equal(shardMtype(1));
        expect(ev.at).to.be.a('number');
      } finally {
        await w.stop();
      }
    });

    it('departure - a shard deleted from PM2 (pm2 scale down) is reported; one that crashed (still listed) is not', async () => {
      const { log } = sinkLogger();
      const departed: number[] = [];
      const exits: SupervisorEvent[] = [];
      const w = new Pm2Watch(log, (ev) => exits.push(ev), { pm_id: '9', PM2_HOME: home }, (shard) => departed.push(shard));
      try {
        expect(await w.start()).to.equal('watching');
        await sandbox!.start('channeld', 2); // starts again the app's stopped processes (instance 1 was killed above)
        const client = await connectPm2(home);
        let list = await client!.list();
        for (let i = 0; i < 50 && !list.every((p) => p.status === 'online'); i++) {
          await new Promise((r) => setTimeout(r, 100));
          list = await client!.list();
        }
        client!.disconnect();
        expect(list.map((p) => [p.name, p.instance, p.status])).to.deep.equal([
          ['channeld', 0, 'online'],
          ['channeld', 1, 'online'],
        ]);
        const crashed = list[0]!;
        const deleted = list[1]!;
        process.kill(crashed.pid, 'SIGKILL'); // autorestart is off: it stays listed, stopped
        await sandbox!.delete(deleted.pmId);
        await waitFor(() => departed.length > 0, 5000, 10, 'departure');
        // Long enough for every check of the crashed one too.
        await new Promise((r) => setTimeout(r, DEPARTURE_CHECKS_MS[DEPARTURE_CHECKS_MS.length - 1]! + 300));
        expect(departed).to.deep.equal([1]);
        expect(exits.map((e) => e.mtype)).to.include.members([shardMtype(0), shardMtype(1)]);
      } finally {
        await w.stop();
      }
    });
  });
});
