import { expect } from 'chai';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogPrettifier, parsePinoLine } from '../../ops/log-pretty';
import { PROJECT_ROOT, daemonRunningFor, useCluster } from '../helpers/cluster';
import { hasPm2Home, isAlive } from '../helpers/host';
import { waitFor } from '../helpers/wait';

/**
 * `npm run logs` against a real cluster under a private PM2_HOME: pm2's raw lines come out
 * readable (time, level, pid, [app#shard]), pm2's banners pass through, the files stay JSON,
 * following shows new lines, and without a PM2 daemon it says so and starts none.
 */

const LOGS_MAIN = join(PROJECT_ROOT, 'dist', 'ops', 'logs.js');
/** `[12:00:00.123] INFO (4242): [channeld#1] ready` */
const PRETTY_HEAD = /^\[\d\d:\d\d:\d\d\.\d{3}\] (TRACE|DEBUG|INFO|WARN|ERROR|FATAL) \(\d+\): \[(chatd#0|channeld#\d+|gc|status)(\/[a-z0-9-]+)?\] \S/;

function envFor(home: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('PM2_') || k === 'FORCE_COLOR' || k === 'NO_COLOR') delete env[k];
  return { ...env, PM2_HOME: home };
}

interface Run {
  child: ChildProcess;
  out: string[];
  err: string[];
  exited: Promise<number | null>;
}

function runLogs(command: string, args: string[], home: string): Run {
  const child = spawn(command, args, { cwd: PROJECT_ROOT, env: envFor(home), stdio: ['ignore', 'pipe', 'pipe'] });
  const out: string[] = [];
  const err: string[] = [];
  let o = '';
  let e = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    const parts = (o + d).split('\n');
    o = parts.pop()!;
    out.push(...parts);
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    const parts = (e + d).split('\n');
    e = parts.pop()!;
    err.push(...parts);
  });
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  return { child, out, err, exited };
}

/** Processes other than the daemon and its apps that carry this PM2_HOME: a `pm2 logs` left behind. */
function strayPm2Logs(home: string): number[] {
  return readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .map(Number)
    .filter((pid) => {
      try {
        return hasPm2Home(pid, home) && readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').includes('logs');
      } catch {
        return false;
      }
    });
}

describe('logs - npm run logs (e2e)', function () {
  this.timeout(90_000);
  const cluster = useCluster({ label: 'logs-e2e', shards: 2, logLevel: 'info' });
  const running: Run[] = [];
  afterEach(async () => {
    for (const r of running.splice(0)) {
      if (r.child.exitCode === null && r.child.pid !== undefined && isAlive(r.child.pid)) r.child.kill('SIGKILL');
      await r.exited;
    }
  });

  it('logs - npm run logs -- --nostream: every app\'s pino lines readable, pm2\'s banner lines unchanged, exit 0', async () => {
    const r = runLogs('npm', ['run', '--silent', 'logs', '--', '--nostream', '--lines', '30'], cluster().home);
    running.push(r);
    expect(await r.exited, r.err.join('\n')).to.equal(0);
    const text = r.out.join('\n');
    expect(text).to.match(/^\[TAILING\] Tailing last 30 lines for \[all\] processes/m);
    expect(text).to.include(`${cluster().home}/logs/chatd-out.log last 30 lines:`);
    const heads = r.out.filter((l) => PRETTY_HEAD.test(l));
    const tags = new Set(heads.map((l) => PRETTY_HEAD.exec(l)![2]));
    expect([...tags].sort(), text).to.include.members(['chatd#0', 'channeld#0', 'channeld#1', 'gc']);
    expect(heads.some((l) => / INFO \(\d+\): \[chatd#0\] ready$/.test(l)), text).to.equal(true);
    // No pino record went through raw (a cut first line of a file may: pm2 reads by bytes).
    expect(r.out.filter((l) => parsePinoLine(l) !== undefined), text).to.deep.equal([]);
    expect(text).not.to.match(/\x1b\[/);
  });

  it('logs - following: a restarted chatD\'s new lines appear as they are written; the app filter passes through', async () => {
    const c = cluster();
    const r = runLogs(process.execPath, [LOGS_MAIN, 'chatd', '--lines', '1'], c.home);
    running.push(r);
    await waitFor(() => r.out.some((l) => l.startsWith('[TAILING] Tailing last 1 lines for [chatd] process')), 15_000, 20, 'the pm2 banner');
    const oldPid = await c.pid('chatd');
    const restart = await c.pm2(['restart', 'chatd'], 30_000);
    expect(restart.code, restart.stderr).to.equal(0);
    const p = await c.waitRestarted('chatd', 0, oldPid);
    const ready = new RegExp(`^\\[\\d\\d:\\d\\d:\\d\\d\\.\\d{3}\\] INFO \\(${p.pid}\\): \\[chatd#0\\] ready$`);
    await waitFor(() => r.out.some((l) => ready.test(l)), 20_000, 50, `the new chatD's ready line in:\n${r.out.join('\n')}`);
    const heads = r.out.filter((l) => PRETTY_HEAD.test(l));
    expect(heads.every((l) => l.includes('[chatd#0]')), heads.join('\n')).to.equal(true);
    r.child.kill('SIGTERM');
    expect(await r.exited).to.equal(0);
    await waitFor(() => strayPm2Logs(c.home).length === 0, 5000, 50, 'pm2 logs gone');
  });

  it('logs - the files stay JSON, and every line the daemons wrote prettifies to one readable head line', () => {
    const dir = join(cluster().home, 'logs');
    const prettify = createLogPrettifier({ colorize: false });
    let records = 0;
    for (const f of readdirSync(dir).filter((n) => n.endsWith('-out.log'))) {
      const lines = readFileSync(join(dir, f), 'utf8').split('\n').filter((l) => l !== '');
      for (const line of lines) {
        const rec = parsePinoLine(line);
        expect(rec, `${f}: ${line}`).not.to.equal(undefined);
        expect(rec!.app, line).to.be.oneOf(['chatd', 'channeld', 'gc', 'status']);
        const out = prettify(line).split('\n');
        expect(out[0], line).to.match(PRETTY_HEAD);
        expect(out[0]).to.include(`(${rec!.pid as number})`);
        records++;
      }
    }
    expect(records).to.be.greaterThan(10);
  });

  it('logs - with colors: levels and tags colored (ANSI), pm2\'s lines too', async () => {
    const r = runLogs(process.execPath, [LOGS_MAIN, '--color', '--nostream', '--lines', '5'], cluster().home);
    running.push(r);
    expect(await r.exited).to.equal(0);
    const ready = r.out.find((l) => l.includes('ready'));
    expect(ready, r.out.join('\n')).to.match(/\x1b\[\d+m/);
    expect(r.out.join('\n')).to.include('\x1b[36m[chatd#0]');
    expect(r.out.find((l) => l.includes('[TAILING]'))).to.match(/\x1b\[\d+m/);
  });
});

describe('logs - no cluster running', function () {
  this.timeout(30_000);

  it('logs - no PM2 daemon at PM2_HOME: a clear message, exit 1, and no daemon started', async () => {
    const home = mkdtempSync(join(tmpdir(), 'chatd-logs-'));
    try {
      const r = runLogs(process.execPath, [LOGS_MAIN], home);
      expect(await r.exited).to.equal(1);
      expect(r.err.join('\n')).to.include(`logs: no PM2 daemon answers at PM2_HOME=${home}: the cluster is not running (npm start)`);
      expect(existsSync(join(home, 'pm2.pid'))).to.equal(false);
      expect(daemonRunningFor(home)).to.equal(false);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('logs - arguments: --help and pm2 output options it cannot read give usage and exit 2', async () => {
    for (const a of ['--help', '--json', '--raw']) {
      const r = runLogs(process.execPath, [LOGS_MAIN, a], '/nonexistent-pm2-home');
      expect(await r.exited, a).to.equal(2);
      expect(r.err.join('\n'), a).to.include('usage: npm run logs');
    }
  });
});
