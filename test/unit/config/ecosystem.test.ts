import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { shardIndexOf } from '../../../src/channeld/main';
import { PROJECT_ROOT } from '../../helpers/cluster';

/**
 * ecosystem.config.js per host role (docs/multi-host.md): which PM2 apps it declares, with
 * which environment, read in a fresh node process as `pm2 start` would read it.
 */

interface App {
  name: string;
  instances: number;
  env: Record<string, string>;
}

const ROLE_VARIABLES = ['HOST_ROLE', 'SHARD_BASE', 'HOST_ID', 'TRANSPORT', 'CHANNELD_SHARDS', 'STATUS_PORT'];

function cleanEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...process.env };
  for (const name of ROLE_VARIABLES) delete out[name];
  return { ...out, ...env };
}

function appsFor(env: Record<string, string>): App[] {
  const out = execFileSync(process.execPath, ['-e', `process.stdout.write(JSON.stringify(require(${JSON.stringify(join(PROJECT_ROOT, 'ecosystem.config.js'))}).apps))`], {
    env: cleanEnv(env),
    encoding: 'utf8',
  });
  return JSON.parse(out) as App[];
}

describe('ecosystem.config.js - host roles', function () {
  this.timeout(20_000);

  it('no HOST_ROLE: gc, channeld x CHANNELD_SHARDS, chatd, status, as on one host', () => {
    const apps = appsFor({});
    expect(apps.map((a) => [a.name, a.instances])).to.deep.equal([['gc', 1], ['channeld', 4], ['chatd', 1], ['status', 1]]);
    expect(apps[0]!.env).to.include({ HOST_ROLE: 'all', SHARD_BASE: '0', TRANSPORT: 'sysv' });
    expect(apps[0]!.env.HOST_ID).to.match(/^[A-Za-z0-9]/);
  });

  it('HOST_ROLE=front: chatD, gc and the status app, no shard', () => {
    const apps = appsFor({ HOST_ROLE: 'front', TRANSPORT: 'nats', HOST_ID: 'host-a' });
    expect(apps.map((a) => a.name)).to.deep.equal(['gc', 'chatd', 'status']);
    for (const a of apps) expect(a.env).to.include({ HOST_ROLE: 'front', HOST_ID: 'host-a', TRANSPORT: 'nats' });
  });

  it('HOST_ROLE=shards: only channeld, CHANNELD_SHARDS instances, SHARD_BASE passed on', () => {
    const apps = appsFor({ HOST_ROLE: 'shards', TRANSPORT: 'nats', SHARD_BASE: '2', CHANNELD_SHARDS: '3', HOST_ID: 'host-c' });
    expect(apps.map((a) => [a.name, a.instances])).to.deep.equal([['channeld', 3]]);
    expect(apps[0]!.env).to.include({ HOST_ROLE: 'shards', SHARD_BASE: '2', HOST_ID: 'host-c', CHANNELD_SHARDS: '3' });
  });

  for (const [env, message] of [
    [{ HOST_ROLE: 'shards' }, 'HOST_ROLE="shards": several hosts need TRANSPORT=nats'],
    [{ SHARD_BASE: '4' }, 'SHARD_BASE=4: only a shard host places its shards'],
    [{ HOST_ROLE: 'edge', TRANSPORT: 'nats' }, 'HOST_ROLE="edge": must be equal to one of the allowed values'],
  ] as const) {
    it(`refuses ${JSON.stringify(env)}: nothing declared, the reason printed`, () => {
      const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(join(PROJECT_ROOT, 'ecosystem.config.js'))})`], { env: cleanEnv(env), encoding: 'utf8' });
      expect(r.status).to.not.equal(0);
      expect(r.stderr).to.contain(`chatd-cluster: invalid configuration: ${message}`);
    });
  }

  it('shard index - SHARD_BASE + NODE_APP_INSTANCE, below 900', () => {
    expect(shardIndexOf(0, undefined)).to.equal(0);
    expect(shardIndexOf(0, '3')).to.equal(3);
    expect(shardIndexOf(100, '0')).to.equal(100);
    expect(shardIndexOf(100, '7')).to.equal(107);
    expect(shardIndexOf(890, '9')).to.equal(899);
    expect(shardIndexOf(890, '10')).to.equal(undefined);
    for (const bad of ['-1', '1.5', 'x', '', ' 2', '99999']) expect(shardIndexOf(0, bad), bad).to.equal(undefined);
  });
});
