import { expect } from 'chai';
import { fork, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import pino from 'pino';
import { memo, publishToPm2, underPm2, type IoApi } from '../../../src/runtime/pm2-metrics';

const log = pino({ level: 'silent' });

/** A stand-in for @pm2/io: records the metrics and actions registered with it. */
function fakeIo(): IoApi & { metrics: Map<string, { unit?: string; value: () => unknown }>; actions: Map<string, (reply: (a: unknown) => void) => void> } {
  const metrics = new Map<string, { unit?: string; value: () => unknown }>();
  const actions = new Map<string, (reply: (a: unknown) => void) => void>();
  return {
    metrics,
    actions,
    metric: (o) => metrics.set(o.name, o),
    action: (name, fn) => actions.set(name, fn),
  };
}

const call = (fn: (reply: (a: unknown) => void) => void): Promise<unknown> => new Promise((resolve) => fn(resolve));

describe('runtime - PM2 figures and actions (@pm2/io wiring)', () => {
  it('outside PM2: nothing published, @pm2/io never loaded', () => {
    expect(underPm2({})).to.equal(false);
    const p = publishToPm2({ figures: [{ name: 'X', read: () => 1 }], actions: [] }, log);
    expect(p.active).to.equal(false);
    expect(Object.keys(require.cache).some((k) => k.includes(`${join('@pm2', 'io')}`))).to.equal(false);
  });

  it('a script that publishes outside PM2 exits on its own (no timer or listener left)', () => {
    const script = `require(${JSON.stringify(join(__dirname, '../../../src/runtime/pm2-metrics.js'))}).publishToPm2({ figures: [{ name: 'X', read: () => 1 }], actions: [{ name: 'a', run: () => 1 }] }, require('pino')({ level: 'silent' })); console.log('done')`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10_000, env: { ...process.env, pm_id: undefined } });
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout.trim()).to.equal('done');
  });

  it('under PM2 without its injected @pm2/io (pmx off): our own instance sends figures and answers actions over the IPC channel', async function () {
    this.timeout(15_000);
    // What PM2's daemon sees of a forked app: process.send messages on its IPC channel.
    const child = fork(join(__dirname, '../../fixtures/pm2-figures-child.js'), [], { env: { ...process.env, pm_id: '42' }, stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    try {
      const got: { type: string; data: Record<string, unknown> }[] = [];
      child.on('message', (m) => got.push(m as { type: string; data: Record<string, unknown> }));
      const until = async (pred: () => boolean, what: string): Promise<void> => {
        const deadline = Date.now() + 5000;
        while (!pred()) {
          if (Date.now() > deadline) throw new Error(`${what}: ${JSON.stringify(got)}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      await until(() => got.some((m) => m.type === 'axm:action' && m.data.action_name === 'hello'), 'action registered');
      await until(() => got.some((m) => m.type === 'axm:monitor' && 'Ticks' in m.data), 'figures sent');
      const mon = got.find((m) => m.type === 'axm:monitor')!.data as Record<string, { value: unknown; unit?: string }>;
      expect(mon.Ticks!.value).to.be.a('number');
      expect(mon.Lat).to.deep.include({ value: 2.5, unit: 'ms' });
      // Only ours: no v8, event-loop or http figures, no exception hooks of @pm2/io.
      expect(Object.keys(mon).sort()).to.deep.equal(['Lat', 'Ticks']);
      child.send('hello'); // what `pm2 trigger <app> hello` makes the daemon send
      await until(() => got.some((m) => m.type === 'axm:reply'), 'action reply');
      expect(got.find((m) => m.type === 'axm:reply')!.data).to.deep.include({ action_name: 'hello', return: { hi: child.pid } });
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('figures: values read through, a throwing one shows as missing, units kept', () => {
    const io = fakeIo();
    let n = 0;
    publishToPm2({ figures: [{ name: 'Count', read: () => ++n }, { name: 'Broken', read: () => { throw new Error('no'); } }, { name: 'Latency', unit: 'ms', read: () => 1.5 }], actions: [] }, log, io);
    expect(io.metrics.get('Count')!.value()).to.equal(1);
    expect(io.metrics.get('Count')!.value()).to.equal(2);
    expect(io.metrics.get('Broken')!.value()).to.equal(undefined);
    expect(io.metrics.get('Latency')!.unit).to.equal('ms');
  });

  it('actions: sync and async answers; a throw, a rejection or a hang answers { error } instead of taking the process down', async () => {
    const io = fakeIo();
    publishToPm2(
      {
        figures: [],
        actions: [
          { name: 'sync', run: () => ({ ok: 1 }) },
          { name: 'async', run: async () => ({ ok: 2 }) },
          { name: 'throws', run: () => { throw new Error('boom'); } },
          { name: 'rejects', run: () => Promise.reject(new Error('nope')) },
          { name: 'hangs', run: () => new Promise(() => {}), timeoutMs: 50 },
        ],
      },
      log,
      io,
    );
    expect(await call(io.actions.get('sync')!)).to.deep.equal({ ok: 1 });
    expect(await call(io.actions.get('async')!)).to.deep.equal({ ok: 2 });
    expect(await call(io.actions.get('throws')!)).to.deep.equal({ error: 'boom' });
    expect(await call(io.actions.get('rejects')!)).to.deep.equal({ error: 'nope' });
    expect(((await call(io.actions.get('hangs')!)) as { error: string }).error).to.match(/did not settle within 50 ms/);
  });

  it('stop(): figures read nothing afterwards', () => {
    const io = fakeIo();
    const p = publishToPm2({ figures: [{ name: 'X', read: () => 7 }], actions: [] }, log, io);
    expect(p.active).to.equal(true);
    p.stop();
    expect(io.metrics.get('X')!.value()).to.equal(undefined);
  });

  it('memo: one computation for reads within its period', () => {
    let t = 0;
    let calls = 0;
    const m = memo(() => ++calls, 250, () => t);
    expect([m(), m(), m()]).to.deep.equal([1, 1, 1]);
    t = 249;
    expect(m()).to.equal(1);
    t = 250;
    expect(m()).to.equal(2);
  });
});
