import { expect } from 'chai';
import { readlinkSync } from 'node:fs';
import type { ChatClient } from '../helpers/chat-client';
import { EpochWatch } from '../helpers/epoch-watch';
import { Cluster, isAlive, namesOnShard, sleep } from '../helpers/cluster';
import { NatsServer } from '../helpers/nats-server';
import { NetnsLab, tearDownHosts, leftoverLinks, leftoverNamespaces, netnsUnavailable, sweepStale } from '../helpers/netns';
import { expectEachReplyOnce } from './e2e-support';
import { CLIENT_TIMEOUT_MS, type Character, describeOutcome, everyoneFoundWithin, concurrentFinds, expectEveryoneOnline, loginCharacters, underLoad } from './find-load';

/**
 * The cluster across three "hosts" (docs/multi-host.md): network namespaces made here, joined
 * by veth links on a private /24 (test/helpers/netns.ts), each with its own System V IPC
 * namespace and its own PM2 daemon (private PM2_HOME). Host A runs chatD, gc and the status
 * app (HOST_ROLE=front) and the nats-server, listening on A's link address; hosts B and C run
 * two shards each (HOST_ROLE=shards, SHARD_BASE 0 and 2). The test process talks to chatD over
 * TCP across the link. Nothing but the network is shared: gc must judge B's and C's processes
 * by heartbeats and incarnations, never by their pids or PM2.
 */

const CHARACTERS = 60;
const SHARD_GONE_MS = 4000;

interface GcStatus {
  epoch: { epoch: number; members: number[]; settled: boolean };
  processes: { mtype: number; role: string; index: number; pid: number; pidCheck: boolean; host: string; incarnation: number }[];
  deaths: { mtype: number; reason: string; host: string; incarnation: number }[];
  counters: Record<string, number>;
}

describe('several hosts (e2e): chatD + gc on host A, shards on hosts B and C, over NATS across network namespaces', function () {
  this.timeout(300_000);
  let lab: NetnsLab | undefined;
  let nats: NatsServer | undefined;
  let front: Cluster | undefined;
  let hostB: Cluster | undefined;
  let hostC: Cluster | undefined;
  let watch: EpochWatch | undefined;
  const characters: Character[] = [];
  const clients: ChatClient[] = [];
  const A = (): Cluster => front!;

  before(async function () {
    this.timeout(150_000);
    const why = netnsUnavailable();
    if (why) {
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    const swept = sweepStale();
    if (swept.length > 0) console.log(`      (removed namespace labs of earlier crashed runs: ${swept.join(', ')})`);
    lab = NetnsLab.create(['a', 'b', 'c']);
    const a = lab.host('a');
    nats = await NatsServer.start({ host: a.address, wrap: lab.wrap('a') });
    const common = {
      TRANSPORT: 'nats', NATS_URL: nats.url, CLUSTER_NAME: `mh${process.pid}`,
      SHARD_GONE_MS: String(SHARD_GONE_MS), RESHARD_QUIET_MS: '1000', CHATD_RATE_PER_SEC: '100000', CHATD_RATE_BURST: '100000',
    };
    const on = (label: string) => ({ wrap: lab!.wrap(label), host: lab!.host(label).address, privateIpc: true });
    front = new Cluster({ ...on('a'), role: 'front', shards: 4, label: 'host-a', env: { ...common, HOST_ID: 'host-a' } });
    hostB = new Cluster({ ...on('b'), role: 'shards', shards: 2, label: 'host-b', env: { ...common, HOST_ID: 'host-b', SHARD_BASE: '0' } });
    hostC = new Cluster({ ...on('c'), role: 'shards', shards: 2, label: 'host-c', env: { ...common, HOST_ID: 'host-c', SHARD_BASE: '2' } });
    const deadline = Date.now() + 120_000;
    // The front first: the shards go live only once the collector answers their HELLO.
    await front.launch();
    await Promise.all([hostB.launch(), hostC.launch()]);
    await Promise.all([front.waitOnline(deadline), hostB.waitOnline(deadline), hostC.waitOnline(deadline)]);
    await front.waitServing(deadline);
    watch = await EpochWatch.open({ nats: { url: nats.url, cluster: `mh${process.pid}` } });
  });

  after(async function () {
    this.timeout(120_000);
    const failed = this.test?.parent?.tests.some((t) => t.state === 'failed') ?? false;
    await tearDownHosts({ failed, clients, tool: watch, hosts: [front, hostB, hostC], nats, lab });
  });

  const gcStatus = (): Promise<GcStatus | undefined> => watch!.gcStatus<GcStatus>();
  const gcUntil = (what: string, timeoutMs: number, ok: (s: GcStatus) => boolean): Promise<{ status: GcStatus; ms: number }> =>
    watch!.gcUntil<GcStatus>(what, timeoutMs, ok, (s) => s && { epoch: s.epoch, processes: s.processes, deaths: s.deaths });

  /** The IPC and network namespaces of a pid (`/proc/PID/ns/*`). */
  const nsOf = (pid: number, kind: 'ipc' | 'net'): string => readlinkSync(`/proc/${pid}/ns/${kind}`);

  it('topology - every host in its own network and IPC namespace; gc pid-checks its own chatD only and sees the shards by host', async () => {
    const pidsOf = async (c: Cluster): Promise<number[]> => (await c.jlist()).map((p) => p.pid).filter((p) => p > 0);
    const [pa, pb, pc] = [await pidsOf(A()), await pidsOf(hostB!), await pidsOf(hostC!)];
    expect(pa).to.have.length(3); // gc, chatd, status
    expect(pb).to.have.length(2);
    expect(pc).to.have.length(2);
    for (const [label, pids] of [['a', pa], ['b', pb], ['c', pc]] as const) {
      for (const pid of pids) expect(lab!.pids(label), `pid ${pid} runs on host ${label}`).to.include(pid);
    }
    const root = { net: nsOf(process.pid, 'net'), ipc: nsOf(process.pid, 'ipc') };
    const ipcs = new Set([pa, pb, pc].map((pids) => nsOf(pids[0]!, 'ipc')));
    expect(ipcs.size, 'one IPC namespace per host').to.equal(3);
    expect(ipcs.has(root.ipc)).to.equal(false);
    for (const pids of [pa, pb, pc]) expect(new Set(pids.map((p) => nsOf(p, 'ipc'))).size, 'one IPC namespace within a host').to.equal(1);
    expect(new Set([pa[0]!, pb[0]!, pc[0]!].map((p) => nsOf(p, 'net'))).size).to.equal(3);

    const { status } = await gcUntil('a settled epoch of four members', 20_000, (s) => s.epoch.settled && s.epoch.members.length === 4);
    expect(status.epoch.members).to.deep.equal([0, 1, 2, 3]);
    const procs = status.processes.map((p) => [p.role, p.index, p.host, p.pidCheck]);
    expect(procs).to.have.deep.members([
      ['channeld', 0, 'host-b', false], ['channeld', 1, 'host-b', false],
      ['channeld', 2, 'host-c', false], ['channeld', 3, 'host-c', false],
      ['chatd', 0, 'host-a', true],
    ]);
  });

  it('basics - login, find online and offline on every shard of both shard hosts, /찾기, chat, logout', async () => {
    const names = [0, 1, 2, 3].map((s) => namesOnShard(s, 4, `Far${s}_`, 1)[0]!);
    const logged: ChatClient[] = [];
    for (const [i, name] of names.entries()) logged.push(await A().login(name, i + 2));
    for (const [i, name] of names.entries()) {
      const f = await logged[(i + 1) % 4]!.request({ op: 'find', name });
      expect(f).to.deep.equal({ op: 'find', id: f.id, ok: true, name, online: true, channel: i + 2 });
    }
    const off = await logged[0]!.request({ op: 'find', name: 'NobodyAcrossHosts' });
    expect(off).to.deep.include({ ok: true, online: false });
    const k = await logged[1]!.request({ op: 'chat', text: `/찾기 ${names[3]!.toLowerCase()}` });
    expect(k).to.deep.include({ ok: true, command: 'find', text: `${names[3]}님은 5채널에 있습니다.` });
    expect((await logged[2]!.request({ op: 'logout' })).ok).to.equal(true);
    expect(await logged[0]!.request({ op: 'find', name: names[2]! })).to.deep.include({ ok: true, online: false });
    for (const c of logged) await c.destroy();
  });

  it(`load - ${CHARACTERS} characters, 6,000 concurrent finds from the test's namespace across the link, every answer right`, async () => {
    await loginCharacters(() => A().client({ requestTimeoutMs: CLIENT_TIMEOUT_MS }), CHARACTERS, (i) => (i % 2 ? `Host${i}` : `원격${i}`), clients, characters);
    const ms = await concurrentFinds(clients, characters, 6000);
    console.log(`      multi-host load: 6000 finds in ${ms.toFixed(0)} ms`);
  });

  it('NATS server restarted under load - 0 wrong, 0 hung; nobody declared dead or fenced (an outage is not a death), no process restarted', async () => {
    expect(clients).to.have.length(CHARACTERS);
    const before = await gcStatus();
    const restarts = async (): Promise<string[]> => (await Promise.all([A(), hostB!, hostC!].map((c) => c.jlist()))).flat().map((p) => `${p.name}${p.instance}:${p.pid}:${p.restarts}`);
    const restartsBefore = await restarts();
    let downMs = 0;
    const o = await underLoad(clients, characters, async () => {
      const killedAt = Date.now();
      await nats!.stop('SIGKILL');
      await sleep(1500);
      await nats!.restart();
      downMs = Date.now() - killedAt;
    });
    console.log(describeOutcome('nats restart across hosts', o, `; down ${downMs} ms`));
    expect(o.okBefore, 'finds answered before the kill').to.be.greaterThan(50);
    expect(o.wrong.slice(0, 5), `${o.wrong.length} wrong or hung`).to.deep.equal([]);
    expect(o.recoveredMs, 'the cluster serves again after the NATS restart').to.be.greaterThan(0);
    await expectEveryoneOnline(clients, characters);
    const after = (await gcUntil('STATUS after the outage', 10_000, () => true)).status;
    expect(after.counters.deaths, `deaths: ${JSON.stringify(after.deaths)}`).to.equal(before!.counters.deaths);
    expect(after.counters.fenced).to.equal(0);
    expect(after.counters.disconnectedTicks, 'gc saw its own connection down').to.be.greaterThan(before!.counters.disconnectedTicks);
    expect(await restarts()).to.have.members(restartsBefore);
    for (const cl of clients) expectEachReplyOnce(cl);
  });

  it('host B cut off for 2.5 s under load - its shards declared dead by silence, fenced when the link is back, restarted by its PM2, recovered; 0 wrong, 0 hung', async () => {
    const before = (await gcStatus())!;
    const bBefore = await hostB!.jlist();
    let cut = { deadMs: 0, fencedMs: 0 };
    const o = await underLoad(clients, characters, async () => {
      const t0 = Date.now();
      lab!.setLink('b', false);
      const dead = await gcUntil('host B\'s shards declared dead', 10_000, (s) => s.counters.deaths >= before.counters.deaths + 2);
      cut.deadMs = Date.now() - t0;
      await sleep(Math.max(0, 2500 - (Date.now() - t0)));
      lab!.setLink('b', true);
      const t1 = Date.now();
      await gcUntil('host B\'s shards fenced', 15_000, (s) => s.counters.fenced >= 2);
      cut.fencedMs = Date.now() - t1;
      for (const p of bBefore) await hostB!.waitRestarted(p.name, p.instance, p.pid, 20_000);
      await gcUntil('host B\'s new incarnations live, epoch settled', 30_000, (s) => s.epoch.settled && s.processes.filter((p) => p.host === 'host-b').length === 2);
      expect(dead.status.deaths.filter((d) => d.host === 'host-b').map((d) => d.reason)).to.include('silence');
    });
    const foundMs = await everyoneFoundWithin(clients, characters, 15_000);
    console.log(describeOutcome('host B cut off', o, `; declared dead ${cut.deadMs} ms after the cut, fenced ${cut.fencedMs} ms after the link came back, all found ${foundMs} ms after recovery`));
    expect(o.okBefore).to.be.greaterThan(50);
    expect(o.wrong.slice(0, 5), `${o.wrong.length} wrong or hung`).to.deep.equal([]);
    const s = (await gcStatus())!;
    expect(s.processes.filter((p) => p.host === 'host-b').map((p) => p.index).sort()).to.deep.equal([0, 1]);
    for (const cl of clients) expectEachReplyOnce(cl);
  });

  it('host C killed under load (every process of its namespace SIGKILLed) - 0 wrong, 0 hung; gc removes its shards after SHARD_GONE_MS, host B takes over, every character found again', async () => {
    const before = (await gcStatus())!;
    const cFigures = { killed: 0, deadMs: 0, epochMs: 0 };
    const o = await underLoad(clients, characters, async () => {
      const t0 = Date.now();
      cFigures.killed = lab!.killAll('c');
      const dead = await gcUntil('host C\'s shards declared dead', 10_000, (s) => s.processes.every((p) => p.host !== 'host-c'));
      cFigures.deadMs = Date.now() - t0;
      const cDeaths = dead.status.deaths.filter((d) => d.host === 'host-c');
      expect(cDeaths.map((d) => d.reason), JSON.stringify(cDeaths)).to.deep.equal(['silence', 'silence']);
      const settled = await gcUntil('an epoch without host C\'s shards, settled', SHARD_GONE_MS + 20_000, (s) => s.epoch.settled && s.epoch.epoch > before.epoch.epoch && s.epoch.members.join() === '0,1');
      cFigures.epochMs = Date.now() - t0;
      expect(settled.status.epoch.members).to.deep.equal([0, 1]);
    });
    const foundMs = await everyoneFoundWithin(clients, characters, 15_000);
    console.log(
      describeOutcome('host C killed', o, `; ${cFigures.killed} processes killed, its shards dead (silence) after ${cFigures.deadMs} ms, epoch without them settled after ${cFigures.epochMs} ms, all found ${foundMs} ms after`),
    );
    expect(cFigures.killed, 'processes on host C (PM2 daemon and two shards at least)').to.be.at.least(3);
    expect(lab!.pids('c')).to.deep.equal([]);
    expect(o.okBefore).to.be.greaterThan(50);
    expect(o.wrong.slice(0, 5), `${o.wrong.length} wrong or hung`).to.deep.equal([]);
    expect(o.recoveredMs).to.be.greaterThan(0);
    await expectEveryoneOnline(clients, characters);
    for (const cl of clients) expectEachReplyOnce(cl);
  });

  it('host B scaled up live (pm2 scale channeld 4 on host B, after host C is gone) under load - shards 2 and 3 start on B, join the membership, take their names over; 0 wrong, 0 hung', async () => {
    const before = (await gcStatus())!;
    const fig = { settledMs: 0, epochs: '' };
    const o = await underLoad(clients, characters, async () => {
      const t0 = Date.now();
      const r = await hostB!.pm2(['scale', 'channeld', '4'], 60_000);
      expect(r.code, r.stderr).to.equal(0);
      const settled = await gcUntil('an epoch with shards 0-3, settled', 40_000, (s) => s.epoch.settled && s.epoch.members.join() === '0,1,2,3');
      fig.settledMs = Date.now() - t0;
      fig.epochs = `${before.epoch.epoch} -> ${settled.status.epoch.epoch}`;
      const onB = settled.status.processes.filter((p) => p.role === 'channeld').map((p) => `${p.index}@${p.host}`).sort();
      expect(onB).to.deep.equal(['0@host-b', '1@host-b', '2@host-b', '3@host-b']);
    });
    const foundMs = await everyoneFoundWithin(clients, characters, 15_000);
    console.log(describeOutcome('host B scaled 2 -> 4', o, `; epoch ${fig.epochs} settled ${fig.settledMs} ms after the scale command, all found ${foundMs} ms after`));
    expect(o.wrong.slice(0, 5), `${o.wrong.length} wrong or hung`).to.deep.equal([]);
    await expectEveryoneOnline(clients, characters);
    for (const cl of clients) expectEachReplyOnce(cl);
  });

  it('cleanup - the namespaces, links, PM2 daemons, processes and the NATS server are gone afterwards', async function () {
    this.timeout(120_000);
    const pids = (await Promise.all([A(), hostB!].map((c) => c.jlist()))).flat().map((p) => p.pid).filter((p) => p > 0);
    const daemons = [A().daemonPid, hostB!.daemonPid, hostC!.daemonPid].filter((p): p is number => p !== undefined);
    const natsPid = nats!.pid;
    for (const cl of clients.splice(0)) await cl.destroy();
    for (const c of [A(), hostB!, hostC!]) await c.stop();
    await nats!.dispose();
    const id = lab!.id;
    lab!.destroy();
    expect(leftoverNamespaces(id)).to.deep.equal([]);
    expect(leftoverLinks(id)).to.deep.equal([]);
    for (const pid of [...pids, ...daemons, ...(natsPid ? [natsPid] : [])]) expect(isAlive(pid), `pid ${pid} still alive`).to.equal(false);
  });
});
