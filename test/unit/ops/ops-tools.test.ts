import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kind, Status } from '../../../src/cluster/kinds';
import { EMPTY, encodePayload } from '../../../src/cluster/messages';
import {
  Endpoint,
  IpcError,
  MTYPE_GC,
  MTYPE_LEGACY_REPLY,
  SysvQueue,
  SysvTransport,
  chatdMtype,
  defaultSysvTransportOptions,
  readKernelLimit,
  shardMtype,
} from '../../../src/ipc';
import { createPm2Sandbox } from '../gc/pm2-sandbox';

/** dist/ops/, next to this file's dist/test/unit/ops/. */
const OPS = join(__dirname, '..', '..', '..', 'ops');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs an ops tool as a child process with MQ_KEY (and more) in its environment. */
function runTool(tool: 'mq' | 'health', args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    const childEnv: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: process.env.HOME, ...env };
    execFile(process.execPath, [join(OPS, `${tool}.js`), ...args], { env: childEnv, timeout: 20_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Keys this suite made; removed after it, and at exit should anything be left. */
const ourKeys = new Set<number>();
function removeKey(key: number): void {
  try {
    SysvQueue.open({ key, create: false }).remove();
  } catch (err) {
    if ((err as IpcError).code !== 'ENOENT') throw err;
  }
}
process.on('exit', () => {
  for (const k of ourKeys) {
    try {
      removeKey(k);
    } catch {
      /* at exit nothing more can be done */
    }
  }
});

/** A random key no queue uses yet; with `create`, a new queue on it (ours to remove). */
function privateKey(): number {
  for (;;) {
    // 0x4fxxxxxx: away from hand-picked keys and from the e2e clusters' 0x3exxxxxx.
    const key = 0x4f000000 + randomInt(1, 0x00ffffff);
    try {
      SysvQueue.open({ key, create: false });
      continue; // taken
    } catch (err) {
      if ((err as IpcError).code !== 'ENOENT') throw err;
    }
    ourKeys.add(key);
    return key;
  }
}

function createQueue(): { key: number; queue: SysvQueue } {
  for (;;) {
    const key = privateKey();
    try {
      return { key, queue: SysvQueue.open({ key, create: true, exclusive: true }) };
    } catch (err) {
      if ((err as IpcError).code !== 'EEXIST') throw err;
    }
  }
}

const hex = (key: number): string => `0x${key.toString(16)}`;

describe('ops tools (child processes, real queue, private MQ_KEY)', function () {
  this.timeout(30_000);
  afterEach(() => {
    for (const k of ourKeys) removeKey(k);
    ourKeys.clear();
  });

  describe('mq', () => {
    it('stat - a missing queue: clear message, exit 1', async () => {
      const key = privateKey();
      const r = await runTool('mq', ['stat'], { MQ_KEY: String(key) });
      expect(r.code).to.equal(1);
      expect(r.stderr).to.contain(`no queue for MQ_KEY=${key}`);
      expect(r.stdout).to.equal('');
    });

    it('stat - figures as text and as JSON', async () => {
      const { key, queue } = createQueue();
      queue.trySend(MTYPE_LEGACY_REPLY, Buffer.alloc(100));
      queue.trySend(shardMtype(1), Buffer.alloc(50));
      const text = await runTool('mq', ['stat'], { MQ_KEY: hex(key) });
      expect(text.code).to.equal(0);
      expect(text.stdout).to.contain(`id ${queue.id}`);
      expect(text.stdout).to.match(/messages\s+2 of at most \d+ \(0\.0% full\)\n/);
      expect(text.stdout).to.match(/bytes\s+150 of \d+/);
      expect(text.stdout).to.match(/mode\s+0600/);
      const json = await runTool('mq', ['stat', '--json'], { MQ_KEY: String(key) });
      expect(json.code).to.equal(0);
      const s = JSON.parse(json.stdout) as Record<string, unknown>;
      expect(s).to.include({ key, id: queue.id, messages: 2, bytes: 150, mode: '0600', lastSendPid: process.pid });
      expect(s.capacity).to.equal(queue.stat().capacity);
      expect(queue.stat().messages).to.equal(2); // stat takes nothing
    });

    it('stat - a queue full by message count (empty messages) reads 100% full', async () => {
      const { key, queue } = createQueue();
      const capacity = queue.stat().capacity;
      while (queue.trySend(50, Buffer.alloc(0))) {
        /* fill by count */
      }
      const text = await runTool('mq', ['stat'], { MQ_KEY: String(key) });
      expect(text.code).to.equal(0);
      expect(text.stdout).to.contain(`messages  ${capacity} of at most ${capacity} (100.0% full)`);
      expect(text.stdout).to.contain(`fill      100.0% (limited by messages)`);
      const s = JSON.parse((await runTool('mq', ['stat', '--json'], { MQ_KEY: String(key) })).stdout) as Record<string, unknown>;
      expect(s).to.include({ messages: capacity, bytes: 0, fill: 1, limitedBy: 'messages', maxMessages: capacity });
    });

    it('drain - counts per mtype and owner; --mtype takes only that one', async () => {
      const { key, queue } = createQueue();
      for (let i = 0; i < 3; i++) queue.trySend(MTYPE_LEGACY_REPLY, Buffer.alloc(10));
      for (let i = 0; i < 2; i++) queue.trySend(shardMtype(1), Buffer.alloc(20));
      queue.trySend(chatdMtype(0), Buffer.alloc(30));
      const only = await runTool('mq', ['drain', '--mtype', String(shardMtype(1)), '--json'], { MQ_KEY: String(key) });
      expect(only.code).to.equal(0);
      expect(JSON.parse(only.stdout)).to.deep.include({
        total: 2,
        bytes: 40,
        byMtype: [{ mtype: 101, owner: { role: 'channeld', shard: 1 }, messages: 2, bytes: 40 }],
      });
      expect(queue.stat().messages).to.equal(4);
      const all = await runTool('mq', ['drain'], { MQ_KEY: String(key) });
      expect(all.code).to.equal(0);
      expect(all.stdout).to.contain('drained 4 messages (60 bytes)');
      expect(all.stdout).to.match(/\s2\s+legacy-reply\s+3\s+30\n/);
      expect(all.stdout).to.match(/\s1000\s+chatd 0\s+1\s+30\n/);
      expect(queue.stat().messages).to.equal(0);
    });

    it('remove - IPC_RMID; afterwards the queue is missing', async () => {
      const { key, queue } = createQueue();
      const r = await runTool('mq', ['remove'], { MQ_KEY: String(key) });
      expect(r.code).to.equal(0);
      expect(r.stdout).to.contain(`removed queue 0x${key.toString(16).padStart(8, '0')} (id ${queue.id})`);
      expect(() => SysvQueue.open({ key, create: false })).to.throw(IpcError).with.property('code', 'ENOENT');
      const again = await runTool('mq', ['remove'], { MQ_KEY: String(key) });
      expect(again.code).to.equal(1);
    });

    it('usage - no command, unknown command, bad MQ_KEY: exit 2', async () => {
      expect((await runTool('mq', [], { MQ_KEY: '1' })).code).to.equal(2);
      const unknown = await runTool('mq', ['explode'], { MQ_KEY: String(privateKey()) });
      expect(unknown.code).to.equal(2);
      expect(unknown.stderr).to.contain('unknown command explode');
      const bad = await runTool('mq', ['stat'], { MQ_KEY: 'twelve' });
      expect(bad.code).to.equal(2);
      expect(bad.stderr).to.contain('MQ_KEY');
    });
  });

  describe('health', () => {
    it('health - no queue: fails with the reason', async () => {
      const key = privateKey();
      const r = await runTool('health', [], { MQ_KEY: String(key) });
      expect(r.code).to.equal(1);
      expect(r.stdout).to.contain('unhealthy: queue missing');
    });

    it('health - a queue but nothing running: one reason per process that did not answer', async () => {
      const { key } = createQueue();
      const t0 = Date.now();
      const r = await runTool('health', ['--timeout', '300'], { MQ_KEY: String(key), CHANNELD_SHARDS: '2' });
      expect(r.code).to.equal(1);
      const lines = r.stdout.trim().split('\n');
      expect(lines).to.deep.equal([
        'unhealthy: gc (mtype 3) did not answer STATUS within 300 ms',
        'unhealthy: channeld shard 0 (mtype 100) did not answer STATUS within 300 ms',
        'unhealthy: channeld shard 1 (mtype 101) did not answer STATUS within 300 ms',
        'unhealthy: chatd (mtype 1000) did not answer STATUS within 300 ms',
      ]);
      expect(Date.now() - t0).to.be.below(10_000);
    });

    describe('with processes answering STATUS', () => {
      let key: number;
      let queue: SysvQueue;
      let transport: SysvTransport;
      let endpoints: Map<number, Endpoint>;

      beforeEach(() => {
        ({ key, queue } = createQueue());
        transport = new SysvTransport(queue, defaultSysvTransportOptions);
        endpoints = new Map();
        for (const mtype of [MTYPE_GC, shardMtype(0), shardMtype(1), chatdMtype(0)]) {
          const ep = new Endpoint(transport, { mtype, incarnation: 1000 + mtype, maxBatchBytes: 4096 });
          ep.start((rec, reply) => {
            if (rec.kind === Kind.STATUS) reply?.(Status.OK, encodePayload('status', { role: 'fake', mtype }));
            else reply?.(Status.BAD_REQUEST, EMPTY);
          });
          endpoints.set(mtype, ep);
        }
      });
      afterEach(async () => {
        for (const ep of endpoints.values()) await ep.close();
        await transport.close();
        queue.remove();
      });

      it('health - all answer: exit 0', async () => {
        const r = await runTool('health', [], { MQ_KEY: String(key), CHANNELD_SHARDS: '2' });
        expect(r.stdout).to.match(/^healthy: queue 0x[0-9a-f]{8} [\d.]+% full; gc, 2 shard\(s\) and chatd answered STATUS/);
        expect(r.code).to.equal(0);
        const json = await runTool('health', ['--json'], { MQ_KEY: String(key), CHANNELD_SHARDS: '2' });
        const j = JSON.parse(json.stdout) as { healthy: boolean; answered: { mtype: number; ok: boolean }[] };
        expect(j.healthy).to.equal(true);
        expect(j.answered.map((a) => [a.mtype, a.ok])).to.deep.equal([[3, true], [100, true], [101, true], [1000, true]]);
      });

      it('health - a shard down: exit 1 naming it', async () => {
        await endpoints.get(shardMtype(1))!.close();
        const r = await runTool('health', ['--timeout', '300'], { MQ_KEY: String(key), CHANNELD_SHARDS: '2' });
        expect(r.code).to.equal(1);
        expect(r.stdout.trim()).to.equal('unhealthy: channeld shard 1 (mtype 101) did not answer STATUS within 300 ms');
      });

      it('health - the queue over 90% full: exit 1 with the fill', async () => {
        const capacity = queue.stat().capacity;
        const msgmax = readKernelLimit('msgmax', 8192);
        const chunk = Math.min(1000, msgmax);
        // mtype 50 is reserved: nobody reads it, so the bytes stay.
        while (queue.stat().bytes + chunk <= capacity * 0.95) queue.trySend(50, Buffer.alloc(chunk));
        const r = await runTool('health', [], { MQ_KEY: String(key), CHANNELD_SHARDS: '2' });
        expect(r.code).to.equal(1);
        expect(r.stdout).to.match(/^unhealthy: queue 9\d\.\d% full \(\d+ of \d+ bytes, \d+ messages\)/);
        expect(r.stdout.trim().split('\n')).to.have.length(1); // everyone still answered
      });

      it('health - the queue full by message count (empty messages, 0 bytes): exit 1 saying so', async () => {
        const capacity = queue.stat().capacity;
        // Linux admits at most msg_qbytes messages: fill it with empty ones on a reserved mtype nobody reads.
        let n = 0;
        while (queue.trySend(50, Buffer.alloc(0))) n++;
        expect(n).to.equal(capacity);
        expect(queue.stat()).to.include({ bytes: 0, messages: capacity });
        const r = await runTool('health', [], { MQ_KEY: String(key), CHANNELD_SHARDS: '2' });
        expect(r.code).to.equal(1);
        expect(r.stdout).to.contain(`unhealthy: queue 100.0% full by message count (${capacity} of ${capacity} messages, 0 bytes)`);
        const json = JSON.parse((await runTool('health', ['--json'], { MQ_KEY: String(key), CHANNELD_SHARDS: '2' })).stdout) as { queue: Record<string, unknown> };
        expect(json.queue).to.include({ fill: 1, limitedBy: 'messages', messages: capacity, bytes: 0 });
      });

      it('health --pm2 - no PM2 daemon at PM2_HOME: fails saying so, starts none', async () => {
        const home = mkdtempSync(join(tmpdir(), 'health-pm2-'));
        try {
          const r = await runTool('health', ['--pm2'], { MQ_KEY: String(key), CHANNELD_SHARDS: '2', PM2_HOME: home });
          expect(r.code).to.equal(1);
          expect(r.stdout.trim()).to.equal(`unhealthy: pm2: no PM2 daemon running at ${home} (PM2_HOME)`);
        } finally {
          rmSync(home, { recursive: true, force: true });
        }
      });

      it('health --pm2 - every app online: exit 0; a stopped process: exit 1 naming it', async () => {
        const sandbox = await createPm2Sandbox();
        try {
          await sandbox.start('gc', 1);
          await sandbox.start('channeld', 2);
          await sandbox.start('chatd', 1);
          const env = { MQ_KEY: String(key), CHANNELD_SHARDS: '2', PM2_HOME: sandbox.home };
          const ok = await runTool('health', ['--pm2'], env);
          expect(ok.stdout).to.match(/^healthy: .*; pm2 apps online\n$/);
          expect(ok.code).to.equal(0);
          await sandbox.stop('chatd');
          const bad = await runTool('health', ['--pm2'], env);
          expect(bad.code).to.equal(1);
          expect(bad.stdout.trim()).to.match(/^unhealthy: pm2: chatd instance 0 \(pm_id \d+\) is stopped$/);
        } finally {
          await sandbox.destroy();
        }
      });
    });
  });
});
