import { expect } from 'chai';
import { connect } from 'node:net';
import { SysvQueue } from '../../src/ipc';
import { Cluster, sleep } from '../helpers/cluster';
import { squatterOrSkip, type Squatter } from '../helpers/squatter';

/**
 * Issue 7, defect 3, end to end: another local user creates the cluster's MQ_KEY queue with
 * mode 0666 before the cluster starts. Every daemon must refuse it with a clear log line (what
 * `pm2 logs` shows), PM2 must not restart them onto it, and chatD must never serve.
 */
describe('e2e: a squatted MQ_KEY queue (a real second user) is refused by every daemon', function () {
  this.timeout(90_000);
  let squatter: Squatter | undefined;
  let cluster: Cluster | undefined;

  before(function () {
    squatter = squatterOrSkip(this);
  });
  after(async function () {
    this.timeout(60_000);
    try {
      if (cluster) {
        await cluster.stop(); // pm2 kill, and the queue removed by key (as root)
        if (this.test?.parent?.tests.some((t) => t.state === 'failed')) console.log(`\nsquat cluster logs:\n${cluster.finalLogs}\n`);
      }
    } finally {
      squatter?.destroy();
    }
  });

  it('gc, every channeld and chatd log the refusal with the fix and stop; the queue is never used; nothing listens', async () => {
    cluster = new Cluster({ label: 'squat', shards: 2, logLevel: 'info' });
    const key = cluster.mqKey;
    const hex = `0x${key.toString(16).padStart(8, '0')}`;
    const id = await squatter!.createQueue(key, 0o666);
    const before = SysvQueue.open({ key, create: false, trustedUids: 'any' }).stat();
    await cluster.launch();

    // Every process refuses (exit 78) and PM2, told by stop_exit_codes, does not restart it.
    // (PM2 7 labels such an app `waiting restart` when restart_delay is set, or `stopped`; it
    // has no pid and is never restarted.)
    const deadline = Date.now() + 30_000;
    const down = (p: { pid: number; status: string }): boolean => p.pid === 0 && p.status !== 'online' && p.status !== 'launching';
    // The daemons; the status app (PM2 app `status`) stays up and shows the refusal instead.
    const daemons = async (): Promise<Awaited<ReturnType<Cluster['jlist']>>> => (await cluster!.jlist()).filter((p) => p.name !== 'status');
    let list = await daemons();
    while (!(list.length === 4 && list.every(down) && (cluster.logs(50).match(/"msg":"refusing queue/g) ?? []).length >= 4)) {
      if (Date.now() > deadline) throw new Error(`not all down: ${JSON.stringify(list.map((p) => [p.name, p.instance, p.status, p.restarts]))}\n${cluster.logs()}`);
      await sleep(200);
      list = await daemons();
    }
    await sleep(2000); // restart_delay is 100 ms: a restart would have happened by now
    list = await daemons();
    expect(list.every(down)).to.equal(true, JSON.stringify(list));
    expect(list.map((p) => p.restarts)).to.deep.equal([0, 0, 0, 0], 'no restart onto the squatted queue');

    const logs = cluster.logs(200);
    const refusals = logs.split('\n').filter((l) => l.includes('"msg":"refusing queue'));
    const apps = refusals.map((l) => (JSON.parse(l) as { app: string }).app).sort();
    expect(apps).to.deep.equal(['channeld', 'channeld', 'chatd', 'gc']);
    const line = JSON.parse(refusals[0]!) as Record<string, unknown>;
    expect(line).to.include({ level: 60, code: 'QUEUE_UNTRUSTED', mqKey: key, queueId: id, uid: squatter!.uid, cuid: squatter!.uid, mode: '0666' });
    expect(line.msg).to.contain(`created by untrusted uid ${squatter!.uid} (${squatter!.user})`);
    expect(line.msg).to.contain(`ipcrm -Q ${hex}`);
    expect(logs.split('\n').filter((l) => l.includes('"msg":"ready"') && !l.includes('"app":"status"'))).to.deep.equal([]);

    // The status app stays up, says so on /healthz, and never used the queue either.
    const status = await cluster.process('status');
    expect(status).to.include({ status: 'online', restarts: 0 });
    const health = (await (await fetch(`${cluster.statusUrl}/healthz`)).json()) as Record<string, unknown>;
    expect(health).to.include({ status: 'ok', cluster: 'down', queue: 'refused', answering: 0 });
    expect(logs).to.contain('"msg":"queue refused, not used: refusing queue');

    // The queue is as the squatter left it: nothing sent, nothing received, not resized.
    const after = SysvQueue.open({ key, create: false, trustedUids: 'any' }).stat();
    expect(after).to.include({ messages: 0, lastSendPid: 0, lastReceivePid: 0, capacity: before.capacity, mode: 0o666 });

    // chatD never listened.
    const refused = await new Promise<boolean>((resolve) => {
      const s = connect(cluster!.port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(false);
      });
      s.once('error', () => resolve(true));
    });
    expect(refused).to.equal(true, `chatD accepted a connection on ${cluster.port}`);
  });
});
