import { expect } from 'chai';
import { CONFIG_VARIABLES, defaultHostId, loadConfig } from '../../../src/config';
import { ConfigError } from '../../../src/errors';

describe('config - environment, validated once and frozen', () => {
  it('fills every default of PROTOCOL.md', () => {
    const c = loadConfig({});
    expect(c).to.include({ chatdHost: '127.0.0.1', chatdPort: 7000, mqKey: 1234, shards: 4, channels: 20, maxFrameBytes: 8192, mqMode: 0o600 });
    expect(Object.isFrozen(c)).to.equal(true);
  });

  it('reads MQ_KEY as decimal or 0x hex', () => {
    expect(loadConfig({ MQ_KEY: '0x1F' }).mqKey).to.equal(31);
    expect(loadConfig({ MQ_KEY: '0X7fffffff' }).mqKey).to.equal(0x7fffffff);
    expect(loadConfig({ MQ_KEY: '4321' }).mqKey).to.equal(4321);
  });

  it('reads numbers and the group mode', () => {
    const c = loadConfig({ CHATD_PORT: '7100', CHANNELD_SHARDS: '8', CHANNELS: '3', MQ_MODE: '0660', CHATD_HOST: '0.0.0.0' });
    expect(c).to.include({ chatdPort: 7100, shards: 8, channels: 3, mqMode: 0o660, chatdHost: '0.0.0.0' });
  });

  for (const [name, value] of [
    ['CHATD_PORT', 'seventy'],
    ['CHATD_PORT', '70000'],
    ['MQ_KEY', 'abc'],
    ['MQ_KEY', '0'],
    ['MQ_KEY', '0x80000000'],
    ['MQ_KEY', '-5'],
    ['CHANNELD_SHARDS', '0'],
    ['CHANNELD_SHARDS', '2.5'],
    ['CHANNELS', '-1'],
    ['MQ_MODE', '0666'],
    ['CHATD_HOST', 'bad host name'],
    ['LOG_LEVEL', 'loud'],
    ['TRANSPORT', 'tcp'],
    ['NATS_URL', 'http://127.0.0.1:4222'],
    ['NATS_URL', 'nats://user:secret@127.0.0.1:4222'],
    ['NATS_URL', 'not a url'],
    ['NATS_URL', 'nats://127.0.0.1:4222/path'],
    ['CLUSTER_NAME', 'a.b'],
    ['CLUSTER_NAME', 'a*'],
    ['HOST_ROLE', 'backend'],
    ['SHARD_BASE', '-1'],
    ['SHARD_BASE', '900'],
    ['SHARD_BASE', 'two'],
    ['HOST_ID', 'host a'],
    ['HOST_ID', '-a'],
    ['HOST_ID', 'x'.repeat(65)],
  ] as const) {
    it(`refuses ${name}=${value} with a message naming it`, () => {
      let err: unknown;
      try {
        loadConfig({ [name]: value });
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(ConfigError);
      expect((err as ConfigError).message).to.contain(name);
      expect((err as ConfigError).problems.length).to.be.greaterThan(0);
    });
  }

  it('transport - sysv by default; TRANSPORT=nats with NATS_URL (several, comma-separated) and CLUSTER_NAME', () => {
    expect(loadConfig({})).to.include({ transport: 'sysv', clusterName: 'main' });
    expect(loadConfig({}).natsUrls).to.deep.equal(['nats://127.0.0.1:4222']);
    const c = loadConfig({ TRANSPORT: 'nats', NATS_URL: 'nats://10.0.0.1:4222, nats://nats-b:4223', CLUSTER_NAME: 'eu-1' });
    expect(c).to.include({ transport: 'nats', clusterName: 'eu-1' });
    expect(c.natsUrls).to.deep.equal(['nats://10.0.0.1:4222', 'nats://nats-b:4223']);
  });

  it('names every bad variable at once', () => {
    try {
      loadConfig({ CHATD_PORT: 'x', CHANNELS: '0' });
      expect.fail('should throw');
    } catch (e) {
      const msg = (e as Error).message;
      expect(msg).to.contain('CHATD_PORT').and.to.contain('CHANNELS');
    }
  });

  it('SHARD_GONE_MS and RESHARD_QUIET_MS (docs/resharding.md): defaults, and out-of-range values refused by name', () => {
    expect(loadConfig({})).to.include({ shardGoneMs: 5000, reshardQuietMs: 1000 });
    expect(loadConfig({ SHARD_GONE_MS: '800', RESHARD_QUIET_MS: '0' })).to.include({ shardGoneMs: 800, reshardQuietMs: 0 });
    expect(() => loadConfig({ SHARD_GONE_MS: '100' })).to.throw(ConfigError, /SHARD_GONE_MS/);
    expect(() => loadConfig({ RESHARD_QUIET_MS: '-1' })).to.throw(ConfigError, /RESHARD_QUIET_MS/);
    expect(() => loadConfig({ RESHARD_QUIET_MS: 'soon' })).to.throw(ConfigError, /RESHARD_QUIET_MS/);
  });

  it('host roles (docs/multi-host.md) - all by default, SHARD_BASE 0, HOST_ID from the hostname', () => {
    const c = loadConfig({});
    expect(c).to.include({ hostRole: 'all', shardBase: 0, hostId: defaultHostId() });
    expect(defaultHostId()).to.match(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/);
    const b = loadConfig({ HOST_ROLE: 'shards', TRANSPORT: 'nats', SHARD_BASE: '100', CHANNELD_SHARDS: '4', HOST_ID: 'host-b.example' });
    expect(b).to.include({ hostRole: 'shards', shardBase: 100, shards: 4, hostId: 'host-b.example' });
    expect(loadConfig({ HOST_ROLE: 'front', TRANSPORT: 'nats' })).to.include({ hostRole: 'front' });
  });

  it('host roles - a hostname HOST_ID does not allow is made safe, never refused', () => {
    expect(defaultHostId('Game Box #1')).to.equal('Game-Box--1');
    expect(defaultHostId('_x')).to.equal('x');
    expect(defaultHostId('')).to.equal('localhost');
    expect(defaultHostId('a'.repeat(100))).to.have.length(64);
  });

  for (const [env, pattern] of [
    [{ HOST_ROLE: 'front' }, /HOST_ROLE="front": several hosts need TRANSPORT=nats/],
    [{ HOST_ROLE: 'shards', TRANSPORT: 'sysv' }, /HOST_ROLE="shards": several hosts need TRANSPORT=nats/],
    [{ SHARD_BASE: '2' }, /SHARD_BASE=2: only a shard host places its shards/],
    [{ SHARD_BASE: '2', HOST_ROLE: 'front', TRANSPORT: 'nats' }, /SHARD_BASE=2: only a shard host/],
    [{ HOST_ROLE: 'shards', TRANSPORT: 'nats', SHARD_BASE: '890', CHANNELD_SHARDS: '20' }, /SHARD_BASE=890: .*last shard index would be 909/],
  ] as const) {
    it(`host roles - refuses ${JSON.stringify(env)} with a message naming the variable`, () => {
      expect(() => loadConfig(env)).to.throw(ConfigError, pattern);
    });
  }

  it('lists its variables', () => {
    expect(CONFIG_VARIABLES).to.include.members(['CHATD_HOST', 'CHATD_PORT', 'MQ_KEY', 'CHANNELD_SHARDS', 'CHANNELS']);
  });
});
