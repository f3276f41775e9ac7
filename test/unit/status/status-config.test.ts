import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { loadConfig } from '../../../src/config';
import { ConfigError } from '../../../src/errors';
import { PROJECT_ROOT } from '../../helpers/cluster';

/** The apps ecosystem.config.js declares under this environment (a child process: it reads process.env once). */
function ecosystemApps(env: Record<string, string>): string[] {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('STATUS_')));
  const r = spawnSync(process.execPath, ['-e', "console.log(JSON.stringify(require('./ecosystem.config.js').apps.map((a) => [a.name, a.env.STATUS_HOST, a.env.STATUS_PORT])))"], {
    cwd: PROJECT_ROOT,
    env: { ...clean, ...env },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as string[];
}

describe('status - configuration (STATUS_HOST, STATUS_PORT)', () => {
  it('defaults to 127.0.0.1:7080', () => {
    expect(loadConfig({})).to.include({ statusHost: '127.0.0.1', statusPort: 7080 });
    expect(loadConfig({ STATUS_HOST: '0.0.0.0', STATUS_PORT: '9100' })).to.include({ statusHost: '0.0.0.0', statusPort: 9100 });
  });

  for (const [name, value] of [['STATUS_PORT', '65536'], ['STATUS_PORT', 'http'], ['STATUS_PORT', '-1'], ['STATUS_HOST', 'a b'], ['STATUS_HOST', 'x/y']] as const) {
    it(`refuses ${name}=${value} with a message naming it`, () => {
      expect(() => loadConfig({ [name]: value }))
        .to.throw(ConfigError)
        .with.property('message')
        .that.contains(name);
    });
  }

  it('ecosystem.config.js - the status app is one more app with the validated address; STATUS_PORT=0 leaves it out', () => {
    const withStatus = ecosystemApps({ STATUS_PORT: '7081' }) as unknown as [string, string, string][];
    expect(withStatus.map((a) => a[0])).to.deep.equal(['gc', 'channeld', 'chatd', 'status']);
    expect(withStatus[3]).to.deep.equal(['status', '127.0.0.1', '7081']);
    const without = ecosystemApps({ STATUS_PORT: '0' }) as unknown as [string][];
    expect(without.map((a) => a[0])).to.deep.equal(['gc', 'channeld', 'chatd']);
  });
});
