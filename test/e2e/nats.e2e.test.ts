import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { SysvQueue } from '../../src/ipc';
import type { ChatClient } from '../helpers/chat-client';
import { Cluster, PROJECT_ROOT, sleep } from '../helpers/cluster';
import { NatsServer } from '../helpers/nats-server';
import { cleanupChecks, expectEachReplyOnce } from './e2e-support';
import { CLIENT_TIMEOUT_MS, type Character, describeOutcome, expectEveryoneOnline as everyoneOnline, concurrentFinds, loginCharacters, underLoad as loadWith } from './find-load';

/**
 * The whole cluster under PM2 with TRANSPORT=nats: chatD, 2 shards and gc talk over a real
 * nats-server started here on a free port (and killed by pid at the end, even on failure).
 * The protocol basics, a concurrent find load with every answer checked, and the NATS server
 * killed and restarted under load: no wrong answer, no request left hanging, and the cluster
 * serves again by itself.
 */

const SHARDS = 2;
const CHARACTERS = 60;

describe('NATS transport (e2e): the cluster under PM2 with TRANSPORT=nats', function () {
  this.timeout(120_000);
  let nats: NatsServer | undefined;
  let cluster: Cluster | undefined;
  const c = (): Cluster => cluster!;
  const characters: Character[] = [];
  const clients: ChatClient[] = [];
  const underLoad = (fault: () => Promise<void>) => loadWith(clients, characters, fault);
  const expectEveryoneOnline = () => everyoneOnline(clients, characters);

  before(async function () {
    this.timeout(60_000);
    nats = await NatsServer.start();
    cluster = new Cluster({
      shards: SHARDS,
      label: 'nats',
      env: { TRANSPORT: 'nats', NATS_URL: nats.url, CLUSTER_NAME: `e2e${process.pid}` },
    });
    await cluster.start();
  });

  after(async function () {
    this.timeout(60_000);
    const failed = this.test?.parent?.tests.some((t) => t.state === 'failed') ?? false;
    try {
      if (cluster && !cluster.stopped) await cluster.stop();
      if (cluster && (failed || process.env.E2E_SHOW_LOGS)) console.log(`\nnats logs:\n${cluster.finalLogs}\n`);
    } finally {
      await nats?.dispose();
    }
  });

  it('basics - login, find online and offline, /찾기, chat in a channel', async () => {
    const a = await c().login('NatsAlice', 3);
    const b = await c().login('나츠밥', 5);
    const f = await a.request({ op: 'find', name: '나츠밥' });
    expect(f).to.deep.equal({ op: 'find', id: f.id, ok: true, name: '나츠밥', online: true, channel: 5 });
    const off = await a.request({ op: 'find', name: 'NobodyOnNats' });
    expect(off).to.deep.equal({ op: 'find', id: off.id, ok: true, name: 'NobodyOnNats', online: false });
    const k = await b.request({ op: 'chat', text: '/찾기 natsalice' });
    expect(k).to.deep.include({ ok: true, command: 'find', text: 'NatsAlice님은 3채널에 있습니다.' });
    // A second client in channel 3 hears Alice's chat.
    const listener = await c().login('NatsCarol', 3);
    const said = await a.request({ op: 'chat', text: 'hello over nats' });
    expect(said.ok).to.equal(true);
    const deadline = Date.now() + 5000;
    while (!listener.pushes.some((p) => JSON.stringify(p).includes('hello over nats')) && Date.now() < deadline) await sleep(20);
    expect(listener.pushes.some((p) => JSON.stringify(p).includes('hello over nats')), JSON.stringify(listener.pushes)).to.equal(true);
    const out = await b.request({ op: 'logout' });
    expect(out.ok).to.equal(true);
    const gone = await a.request({ op: 'find', name: '나츠밥' });
    expect(gone).to.deep.include({ ok: true, online: false });
    for (const x of [a, listener]) await x.destroy();
  });

  it(`load - ${CHARACTERS} characters, 6,000 concurrent finds, every answer right`, async () => {
    await loginCharacters(() => c().client({ requestTimeoutMs: CLIENT_TIMEOUT_MS }), CHARACTERS, (i) => (i % 2 ? `NatsLoad${i}` : `부하${i}`), clients, characters);
    const ms = await concurrentFinds(clients, characters, 6000);
    console.log(`      nats load: 6000 finds in ${ms.toFixed(0)} ms`);
  });

  it('legacy - mtypes 1 and 2 stay on the host\'s SysV queue (MQ_KEY): a C peer\'s /찾기 is answered there', async () => {
    const queue = SysvQueue.open({ key: c().mqKey, create: false, trustedUids: 'any' });
    const target = characters[1]!;
    const mtext = Buffer.alloc(1024);
    mtext.write(`/찾기 ${target.name}`, 'utf8');
    expect(queue.trySend(1, mtext)).to.equal(true);
    let reply: Buffer | undefined;
    const until = Date.now() + 5000;
    while (!reply && Date.now() < until) {
      reply = queue.tryReceive(2)?.body;
      if (!reply) await sleep(20);
    }
    expect(reply, 'a legacy reply on mtype 2').to.not.equal(undefined);
    const text = reply!.subarray(0, reply!.indexOf(0)).toString('utf8');
    expect(text).to.equal(`${target.name}님은 ${target.channel}채널에 있습니다.`);
  });

  it('health - npm run health asks every daemon for STATUS over NATS', async () => {
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      MQ_KEY: String(c().mqKey),
      CHANNELD_SHARDS: String(SHARDS),
      TRANSPORT: 'nats',
      NATS_URL: nats!.url,
      CLUSTER_NAME: `e2e${process.pid}`,
    };
    const r = await new Promise<{ code: number; stdout: string }>((resolve) => {
      execFile(process.execPath, [join(PROJECT_ROOT, 'dist', 'ops', 'health.js'), '--json'], { env, timeout: 20_000 }, (err, stdout) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout });
      });
    });
    const out = JSON.parse(r.stdout) as { healthy: boolean; problems: string[]; answered: { label: string; ok: boolean }[] };
    expect(out.problems).to.deep.equal([]);
    expect(out.healthy).to.equal(true);
    expect(out.answered.map((a) => a.label)).to.have.members(['gc', 'channeld shard 0', 'channeld shard 1', 'chatd']);
    expect(r.code).to.equal(0);
  });

  it('shard SIGKILLed under load - PM2 restarts it (pid death seen on this host), it recovers over NATS; 0 wrong, 0 hung', async () => {
    expect(clients).to.have.length(CHARACTERS);
    let restartedIn = 0;
    const o = await underLoad(async () => {
      const old = await c().signal('channeld', 0, 'SIGKILL');
      const t0 = Date.now();
      await c().waitRestarted('channeld', 0, old, 20_000);
      restartedIn = Date.now() - t0;
    });
    console.log(describeOutcome('shard kill', o, `; restarted by PM2 in ${restartedIn} ms`));
    expect(o.okBefore, 'finds answered before the kill').to.be.greaterThan(50);
    expect(o.wrong.slice(0, 5), `${o.wrong.length} wrong or hung`).to.deep.equal([]);
    expect(o.recoveredMs, 'the cluster serves finds again after the restart').to.be.greaterThan(0);
    // The restarted shard got its directory back from chatD (HELLO, RESYNC, SYNC over NATS).
    await expectEveryoneOnline();
    for (const cl of clients) expectEachReplyOnce(cl);
  });

  it('NATS server killed and restarted under load - 0 wrong answers, 0 hung, the cluster recovers by itself', async () => {
    expect(clients).to.have.length(CHARACTERS);
    const restartsBefore = (await c().jlist()).map((p) => `${p.name}${p.instance}:${p.restarts}`);
    let downMs = 0;
    const o = await underLoad(async () => {
      const killedAt = Date.now();
      await nats!.stop('SIGKILL');
      await sleep(1500);
      await nats!.restart();
      downMs = Date.now() - killedAt;
    });
    console.log(describeOutcome('nats restart', o, `; down ${downMs} ms`));
    expect(o.okBefore, 'finds answered before the kill').to.be.greaterThan(50);
    expect(o.wrong.slice(0, 5), `${o.wrong.length} wrong or hung`).to.deep.equal([]);
    expect(o.recoveredMs, 'the cluster serves finds again after the NATS restart').to.be.greaterThan(0);
    // Every character is still online where it was: the shards kept their directories.
    await expectEveryoneOnline();
    // No process was restarted: they rode the outage out.
    expect((await c().jlist()).map((p) => `${p.name}${p.instance}:${p.restarts}`)).to.have.members(restartsBefore);
    for (const cl of clients) expectEachReplyOnce(cl);
  });

  describe('end', () => {
    before(async () => {
      for (const cl of clients) await cl.destroy();
    });
    cleanupChecks(c);
  });
});
