import { expect } from 'chai';
import { existsSync } from 'node:fs';
import type { ChatClient, Frame, Reply } from '../helpers/chat-client';
import { type Cluster, daemonRunningFor, ipcsListsKey, isAlive, queueExistsByKey } from '../helpers/cluster';

/** Shared assertions of the end-to-end suites. */

/** The object has exactly these keys (absent keys really absent, not `undefined`). */
export function expectKeys(obj: object, keys: string[]): void {
  expect(Object.keys(obj).sort(), JSON.stringify(obj)).to.deep.equal([...keys].sort());
}

/** An ok reply of `op` with exactly the envelope plus `fields` (deep-equal). */
export function expectOk(r: Reply, op: string, fields: Record<string, unknown> = {}): void {
  expect(r, JSON.stringify(r)).to.deep.equal({ op, id: r.id, ok: true, ...fields });
  expect(r.id).to.be.a('number');
}

/**
 * An error reply: `{op?, id, ok:false, error:{code, message}}`, exactly these keys, `op` absent
 * when `op` is undefined, the message a non-empty string.
 */
export function expectError(r: Frame, code: string, op: string | undefined, id: number | null): void {
  const keys = op === undefined ? ['id', 'ok', 'error'] : ['op', 'id', 'ok', 'error'];
  expectKeys(r, keys);
  if (op !== undefined) expect(r.op).to.equal(op);
  expect(r.id, JSON.stringify(r)).to.equal(id);
  expect(r.ok).to.equal(false);
  const e = r.error as { code?: unknown; message?: unknown };
  expectKeys(e, ['code', 'message']);
  expect(e.code, JSON.stringify(r)).to.equal(code);
  expect(e.message).to.be.a('string').and.not.equal('');
}

/** An error push before a close: `{op:'error', ok:false, error:{code, message}}`, no id. */
export function expectErrorPush(f: Frame, code?: string): void {
  expectKeys(f, ['op', 'ok', 'error']);
  expect(f.op).to.equal('error');
  expect(f.ok).to.equal(false);
  const e = f.error as { code?: unknown; message?: unknown };
  expectKeys(e, ['code', 'message']);
  if (code !== undefined) expect(e.code, JSON.stringify(f)).to.equal(code);
  else expect(e.code).to.be.a('string');
  expect(e.message).to.be.a('string').and.not.equal('');
}

/** Every reply id this client saw arrived exactly once, and no null-id reply appeared. */
export function expectEachReplyOnce(c: ChatClient): void {
  const dup = [...c.repliesById].filter(([, n]) => n !== 1);
  expect(dup, `ids answered more than once: ${JSON.stringify(dup)}`).to.deep.equal([]);
  expect(c.streamError, 'server byte stream').to.equal(undefined);
}

/** Resolves with `{closed, ms}`: whether the connection closed within `timeoutMs`. */
export async function closesWithin(c: ChatClient, timeoutMs: number): Promise<{ closed: boolean; ms: number }> {
  const t0 = Date.now();
  const r = await Promise.race([c.closed.then(() => true), new Promise<boolean>((res) => setTimeout(() => res(false), timeoutMs))]);
  return { closed: r, ms: Date.now() - t0 };
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

/**
 * The two checks that close every suite: the queue drains once the cluster is idle, and
 * stop leaves no queue (by key: msgget and `ipcs -q`), no PM2 daemon, no PM2_HOME.
 */
export function cleanupChecks(cluster: () => Cluster): void {
  it('cleanup - the queue holds no messages once the cluster is idle', async function () {
    this.timeout(15_000);
    const stat = await cluster().waitQueueEmpty(8000);
    expect(stat.messages).to.equal(0);
  });

  it('cleanup - stop removes the queue, the PM2 daemon and its processes, and PM2_HOME', async function () {
    this.timeout(60_000);
    const c = cluster();
    const daemon = c.daemonPid;
    expect(daemon, 'daemon pid known').to.be.a('number');
    const apps = (await c.jlist()).map((p) => p.pid).filter((p) => p > 0);
    expect(queueExistsByKey(c.mqKey)).to.equal(true);
    await c.stop();
    expect(queueExistsByKey(c.mqKey), 'msgget(key, 0) still finds the queue').to.equal(false);
    expect(ipcsListsKey(c.mqKey), 'ipcs -q still lists the key').to.equal(false);
    expect(isAlive(daemon!), `PM2 daemon ${daemon} still alive`).to.equal(false);
    expect(daemonRunningFor(c.home), 'a God Daemon for this PM2_HOME is running').to.equal(false);
    for (const pid of apps) expect(isAlive(pid), `app pid ${pid} still alive`).to.equal(false);
    expect(existsSync(c.home), 'PM2_HOME left behind').to.equal(false);
  });
}
