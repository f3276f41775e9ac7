import { expect } from 'chai';
import { randomInt } from 'node:crypto';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { loadConfig } from '../../../src/config';
import { IpcError, QueueTrustError, SysvQueue } from '../../../src/ipc';
import * as c from '../../../src/ipc/sysv/libc';
import { createLogger } from '../../../src/log';
import { openClusterQueue } from '../../../src/runtime/cluster-queue';
import { squatterOrSkip, type Squatter } from '../../helpers/squatter';

/**
 * Issue 7, defect 3: a queue squatted at MQ_KEY (made by another user, or world-accessible)
 * must be refused on open, with a message naming the key, the uids, the mode and the fix.
 */

const silent = createLogger({ app: 'test' }, { level: 'silent' });
const hex = (key: number): string => `0x${key.toString(16).padStart(8, '0')}`;
const OPS = join(__dirname, '..', '..', '..', 'ops');

/** Keys made by this suite; removed (without the trust check) after each test. */
const keys = new Set<number>();
function freeKey(): number {
  for (;;) {
    const key = 0x4e000000 + randomInt(1, 0x00ffffff);
    if (c.msgget(key, 0) < 0) {
      keys.add(key);
      return key;
    }
  }
}
function removeKey(key: number): void {
  try {
    SysvQueue.open({ key, create: false, trustedUids: 'any' }).remove();
  } catch (err) {
    if ((err as IpcError).code !== 'ENOENT') throw err;
  }
}
/** A queue made with raw msgget, any mode (SysvQueue.open refuses world-writable modes). */
function rawCreate(key: number, mode: number): number {
  const id = c.msgget(key, c.IPC_CREAT | c.IPC_EXCL | mode);
  if (id < 0) throw new Error(`msgget ${key}: ${c.errnoName(c.errno())}`);
  return id;
}
/** Gives the queue to another owner uid (IPC_SET), as its creator may. */
function chown(id: number, uid: number): void {
  const ds = Buffer.alloc(c.MsqidDs.size);
  expect(c.msgctl(id, c.IPC_STAT, ds)).to.equal(0);
  ds.writeUInt32LE(uid, c.MsqidDs.uid);
  expect(c.msgctl(id, c.IPC_SET, ds)).to.equal(0);
}
function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a throw');
}
function runTool(tool: 'mq' | 'health', args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(OPS, `${tool}.js`), ...args], { env: { PATH: process.env.PATH, ...env }, timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0, stdout, stderr });
    });
  });
}
const euid = process.geteuid!();

describe('queue trust on open by key (issue 7, defect 3)', function () {
  this.timeout(30_000);
  afterEach(() => {
    for (const k of keys) removeKey(k);
    keys.clear();
  });

  it('own queue, mode 0600 - accepted by SysvQueue.open and openClusterQueue', () => {
    const key = freeKey();
    const mine = SysvQueue.open({ key, mode: 0o600, exclusive: true });
    expect(mine.perms()).to.include({ uid: euid, cuid: euid, mode: 0o600 });
    expect(SysvQueue.open({ key, create: false }).id).to.equal(mine.id);
    const config = loadConfig({ MQ_KEY: String(key), MQ_CAPACITY_BYTES: '0' });
    expect(openClusterQueue(config, silent).id).to.equal(mine.id);
  });

  it('own queue, mode 0660 (MQ_MODE for a group of C peers) - accepted', () => {
    const key = freeKey();
    const config = loadConfig({ MQ_KEY: String(key), MQ_MODE: '0660', MQ_CAPACITY_BYTES: '0' });
    const q = openClusterQueue(config, silent);
    expect(q.perms().mode).to.equal(0o660);
    expect(openClusterQueue(config, silent).id).to.equal(q.id);
  });

  it('a queue owned by root (or us) but mode 0666 - refused, naming key, uids, mode and the fix', () => {
    const key = freeKey();
    const id = rawCreate(key, 0o666);
    const err = thrown(() => SysvQueue.open({ key, create: false })) as QueueTrustError;
    expect(err).to.be.instanceOf(QueueTrustError);
    expect(err.code).to.equal('QUEUE_UNTRUSTED');
    expect(err.message).to.contain(`MQ_KEY=${key} (key ${hex(key)}, id ${id})`);
    expect(err.message).to.contain('mode 0666 lets any local user access it (o+rw)');
    expect(err.message).to.contain(`owner uid ${euid}`);
    expect(err.message).to.contain(`ipcrm -Q ${hex(key)}`);
    expect(err.message).not.to.contain('MQ_TRUSTED_UIDS'); // trusting a uid cannot fix a world-accessible mode
    // The daemons' path (create: true, as at start) refuses it too, before any resize.
    const config = loadConfig({ MQ_KEY: String(key) });
    expect(thrown(() => openClusterQueue(config, silent))).to.be.instanceOf(QueueTrustError);
  });

  it('o+r alone (0604) is enough to refuse: anyone could read legacy replies', () => {
    const key = freeKey();
    rawCreate(key, 0o604);
    expect(thrown(() => SysvQueue.open({ key, create: false })).message).to.contain('(o+r)');
  });

  it('an owner uid that is not trusted - refused; trusted through MQ_TRUSTED_UIDS - accepted', () => {
    const key = freeKey();
    const id = rawCreate(key, 0o600);
    chown(id, 54321);
    const err = thrown(() => SysvQueue.open({ key, create: false })) as QueueTrustError;
    expect(err).to.be.instanceOf(QueueTrustError);
    expect(err.message).to.contain('owned by untrusted uid 54321');
    expect(err.message).to.contain('MQ_TRUSTED_UIDS');
    expect(err.perms).to.include({ uid: 54321, cuid: euid });
    const config = loadConfig({ MQ_KEY: String(key), MQ_TRUSTED_UIDS: '1000, 54321', MQ_CAPACITY_BYTES: '0' });
    expect(config.mqTrustedUids).to.deep.equal([1000, 54321]);
    expect(openClusterQueue(config, silent).id).to.equal(id);
  });

  it('private queues (IPC_PRIVATE) are not checked; trustedUids "any" skips the check for clean-up', () => {
    const key = freeKey();
    const id = rawCreate(key, 0o666);
    expect(SysvQueue.open({ key, create: false, trustedUids: 'any' }).id).to.equal(id);
  });

  it('MQ_TRUSTED_UIDS is validated like the rest of the configuration', () => {
    expect(loadConfig({}).mqTrustedUids).to.deep.equal([]);
    expect(() => loadConfig({ MQ_TRUSTED_UIDS: 'bob' })).to.throw(/MQ_TRUSTED_UIDS/);
    expect(() => loadConfig({ MQ_TRUSTED_UIDS: '1,,2' })).to.throw(/MQ_TRUSTED_UIDS/);
    expect(() => loadConfig({ MQ_TRUSTED_UIDS: '4294967295' })).to.throw(/MQ_TRUSTED_UIDS=.*4294967294/);
  });

  describe('a real second user squats the key (root only)', () => {
    let squatter: Squatter | undefined;
    before(function () {
      squatter = squatterOrSkip(this);
    });
    after(() => squatter?.destroy());

    it('its 0666 queue is refused by SysvQueue.open, openClusterQueue, npm run mq and npm run health', async () => {
      const key = freeKey();
      const id = await squatter!.createQueue(key, 0o666);
      const q = SysvQueue.open({ key, create: false, trustedUids: 'any' });
      expect(q.id).to.equal(id);
      expect(q.perms()).to.include({ uid: squatter!.uid, cuid: squatter!.uid, mode: 0o666 });
      const err = thrown(() => SysvQueue.open({ key, create: false })) as QueueTrustError;
      expect(err).to.be.instanceOf(QueueTrustError);
      expect(err.message).to.contain(`created by untrusted uid ${squatter!.uid} (${squatter!.user})`);
      expect(err.message).to.contain(`owned by untrusted uid ${squatter!.uid}`);
      expect(err.message).to.contain('mode 0666');
      expect(err.message).to.contain(`ipcrm -Q ${hex(key)}`);
      expect(thrown(() => openClusterQueue(loadConfig({ MQ_KEY: String(key) }), silent))).to.be.instanceOf(QueueTrustError);
      const stat = await runTool('mq', ['stat'], { MQ_KEY: String(key) });
      expect(stat.code).to.equal(1);
      expect(stat.stderr).to.contain(`refusing queue MQ_KEY=${key}`);
      expect(stat.stderr).to.contain(`ipcrm -Q ${hex(key)}`);
      const health = await runTool('health', [], { MQ_KEY: String(key) });
      expect(health.code).to.equal(1);
      expect(health.stdout).to.contain(`unhealthy: queue refused: refusing queue MQ_KEY=${key}`);
      expect(q.stat()).to.include({ messages: 0, lastSendPid: 0 }); // nobody used it
    });

    it('its 0600 queue: creator not trusted - refused; with MQ_TRUSTED_UIDS naming it - accepted', async () => {
      const key = freeKey();
      const id = await squatter!.createQueue(key, 0o600);
      const err = thrown(() => SysvQueue.open({ key, create: false })) as QueueTrustError;
      expect(err.message).to.contain(`created by untrusted uid ${squatter!.uid}`);
      expect(err.message).to.contain('MQ_TRUSTED_UIDS');
      const config = loadConfig({ MQ_KEY: String(key), MQ_TRUSTED_UIDS: String(squatter!.uid), MQ_CAPACITY_BYTES: '0' });
      expect(openClusterQueue(config, silent).id).to.equal(id);
    });
  });
});
