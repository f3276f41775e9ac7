import { expect } from 'chai';
import { createLogPrettifier, parsePinoLine, splitTag } from '../../../ops/log-pretty';
import { parseLogsArgs } from '../../../ops/logs';

/** The formatting of `npm run logs`, on lines shaped as the daemons write them (src/log.ts). */

const TIME = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
const line = (o: Record<string, unknown>): string => JSON.stringify({ level: 30, time: TIME, pid: 4242, ...o });

describe('log-pretty - pino lines for people', () => {
  const plain = createLogPrettifier({ colorize: false });

  it('log-pretty - tags: channelD by shard, chatD by instance, gc by component; data fields named shard stay below', () => {
    expect(splitTag({ app: 'channeld', shard: 2, msg: 'x' }).tag).to.equal('[channeld#2]');
    expect(splitTag({ app: 'chatd', instance: 0, shard: 1 })).to.deep.equal({ tag: '[chatd#0]', rest: { shard: 1 } });
    expect(splitTag({ app: 'gc', component: 'collector', shard: 0 })).to.deep.equal({ tag: '[gc/collector]', rest: { shard: 0 } });
    expect(splitTag({ msg: 'no app' }).tag).to.equal('');
  });

  it('log-pretty - one head line with time, level, pid, tag and message; other fields indented below; hostname left out', () => {
    const out = plain(line({ hostname: 'box', app: 'channeld', shard: 1, msg: 'ready', entries: 3 })).split('\n');
    expect(out[0]).to.match(/^\[\d\d:04:05\.678\] INFO \(4242\): \[channeld#1\] ready$/);
    expect(out.slice(1)).to.deep.equal(['    entries: 3']);
    expect(plain(line({ level: 40, app: 'gc', msg: 'slow' }))).to.match(/^\[[\d:.]+\] WARN \(4242\): \[gc\] slow$/);
  });

  it('log-pretty - errors keep their stack under err', () => {
    const out = plain(line({ level: 50, app: 'chatd', instance: 0, msg: 'boom', err: { type: 'Error', message: 'x', stack: 'Error: x\n    at f (a.js:1:1)' } }));
    expect(out.split('\n')[0]).to.match(/ERROR \(4242\): \[chatd#0\] boom$/);
    expect(out).to.include('at f (a.js:1:1)');
  });

  it('log-pretty - what is not a pino record passes through unchanged', () => {
    for (const raw of [
      '[TAILING] Tailing last 15 lines for [all] processes (change the value with --lines option)',
      '/home/u/.pm2/logs/chatd-out.log last 15 lines:',
      '',
      '  at Object.<anonymous> (/x.js:1:1)',
      '"time":1,"pid":3,"msg":"a line cut at its start"}',
      '{"level":30,"time":1,"msg":"cut at its end',
      '{"not":"pino"}',
      '[1,2]',
      '\x1b[90mcolored banner\x1b[39m',
    ]) {
      expect(plain(raw), raw).to.equal(raw);
      expect(parsePinoLine(raw), raw).to.equal(undefined);
    }
  });

  it('log-pretty - a carriage return at the end is dropped from a record; colors when asked', () => {
    expect(plain(`${line({ app: 'gc', msg: 'crlf' })}\r`)).to.match(/\[gc\] crlf$/);
    const colored = createLogPrettifier({ colorize: true })(line({ app: 'gc', msg: 'hi' }));
    expect(colored).to.include('\x1b[36m[gc]');
    expect(colored).to.match(/\x1b\[32mINFO/);
  });

  it('log-pretty - arguments: colors by terminal, NO_COLOR, FORCE_COLOR and flags; the rest goes to pm2 logs', () => {
    expect(parseLogsArgs([], {}, true)).to.deep.equal({ colorize: true, pm2Args: [] });
    expect(parseLogsArgs([], {}, false).colorize).to.equal(false);
    expect(parseLogsArgs([], { NO_COLOR: '1' }, true).colorize).to.equal(false);
    expect(parseLogsArgs([], { FORCE_COLOR: '1' }, false).colorize).to.equal(true);
    expect(parseLogsArgs(['--no-color', 'chatd', '--lines', '100'], {}, true)).to.deep.equal({ colorize: false, pm2Args: ['chatd', '--lines', '100'] });
    expect(() => parseLogsArgs(['--json'], {}, true)).to.throw(/usage: npm run logs/);
  });
});
