import { expect } from 'chai';
import { ClientErrorCode } from '../../../src/errors';
import { UsageError, parseClientArgs } from '../../../src/client/args';
import { closingPushLine, errorLine, langFromEnv, texts } from '../../../src/client/client-texts';
import { channelLine, pushLine, safe, whisperInLine, whisperOutLine } from '../../../src/client/format';

/** The human client's pure parts: arguments, the lines it prints, the error sentences. */

describe('client - arguments', () => {
  it('client - the required and optional flags, both --flag value and --flag=value', () => {
    expect(parseClientArgs(['--name', '타락파워전사', '--channel', '3'], {})).to.deep.equal({
      name: '타락파워전사', channel: 3, host: '127.0.0.1', port: 7000, lang: 'en', retries: 0, historyFile: undefined,
    });
    const o = parseClientArgs(['--name=Bob', '--channel=20', '--host', '10.0.0.2', '--port=7100', '--lang', 'ko', '--retries', '5', '--history', '/tmp/h'], {});
    expect(o).to.deep.include({ name: 'Bob', channel: 20, host: '10.0.0.2', port: 7100, lang: 'ko', retries: 5, historyFile: '/tmp/h' });
  });

  it('client - host, port and language default from the environment; a name typed as NFD is sent composed', () => {
    const o = parseClientArgs(['--name', '한글'.normalize('NFD'), '--channel', '1'], { CHATD_HOST: '::1', CHATD_PORT: '7300', LANG: 'ko_KR.UTF-8' });
    expect(o).to.deep.include({ name: '한글', host: '::1', port: 7300, lang: 'ko' });
  });

  it('client - every bad command line is a UsageError (exit 2) naming the problem', () => {
    const bad: [string[], RegExp][] = [
      [[], /--name is required/],
      [['--name', 'a'], /--channel is required/],
      [['--name', 'a b', '--channel', '1'], /--name "a b": must be 1-24/],
      [['--name', 'x'.repeat(25), '--channel', '1'], /must be 1-24/],
      [['--name', 'a', '--channel', '0'], /--channel must be an integer from 1/],
      [['--name', 'a', '--channel', '1.5'], /--channel/],
      [['--name', 'a', '--channel', '1', '--port', '65536'], /--port must be an integer from 1 to 65535/],
      [['--name', 'a', '--channel', '1', '--lang', 'fr'], /--lang must be ko or en/],
      [['--name', 'a', '--channel', '1', '--retries', '-1'], /--retries/],
      [['--name', 'a', '--channel', '1', '--name', 'b'], /--name given twice/],
      [['--name'], /--name needs a value/],
      [['--name', 'a', '--channel', '1', 'extra'], /unexpected argument "extra"/],
    ];
    for (const [argv, message] of bad) {
      expect(() => parseClientArgs(argv, {}), argv.join(' ')).to.throw(UsageError, message);
    }
    expect(() => parseClientArgs(['--name', 'a', '--channel', '1'], { CHATD_PORT: 'abc' })).to.throw(UsageError, /CHATD_PORT/);
  });

  it('client - language from LC_ALL, LC_MESSAGES, LANG in that order', () => {
    expect(langFromEnv({ LANG: 'ko_KR.UTF-8' })).to.equal('ko');
    expect(langFromEnv({ LANG: 'ko' })).to.equal('ko');
    expect(langFromEnv({ LC_ALL: 'en_US.UTF-8', LANG: 'ko_KR.UTF-8' })).to.equal('en');
    expect(langFromEnv({ LC_MESSAGES: 'ko_KR', LANG: 'C' })).to.equal('ko');
    expect(langFromEnv({ LANG: 'kok_IN' })).to.equal('en');
    expect(langFromEnv({})).to.equal('en');
  });
});

describe('client - lines', () => {
  it('client - channel, whisper and error pushes as lines in both languages', () => {
    expect(pushLine('ko', { op: 'message', from: '타락파워전사', channel: 3, text: '안녕' })).to.equal('[3채널] 타락파워전사: 안녕');
    expect(pushLine('en', { op: 'message', from: 'Alice', channel: 3, text: 'hi' })).to.equal('[channel 3] Alice: hi');
    expect(pushLine('ko', { op: 'whisper', from: 'Alice', text: '비밀' })).to.equal('[귓속말] Alice: 비밀');
    expect(pushLine('en', { op: 'error', ok: false, error: { code: 'UNAVAILABLE', message: 'server shutting down' } })).to.equal('! the server is shutting down (UNAVAILABLE)');
    expect(pushLine('en', { op: 'error', ok: false, error: { code: 'TIMEOUT', message: 'idle for 300000 ms; closing' } })).to.equal('! the server closed the idle connection (TIMEOUT)');
    expect(pushLine('en', { op: 'error', ok: false, error: { code: 'BAD_FRAME', message: 'frame is not valid JSON' } })).to.equal('! the server is closing the connection: frame is not valid JSON (BAD_FRAME)');
    expect(pushLine('en', { op: 'future', x: 1 })).to.equal('? {"op":"future","x":1}');
    expect(whisperOutLine('en', 'Bob', 'psst')).to.equal('[whisper → Bob] psst');
    expect(whisperInLine('en', 'Bob', 'psst')).to.equal('[whisper] Bob: psst');
  });

  it('client - text from other players cannot move the cursor, recolor or break the line', () => {
    expect(channelLine('en', 1, 'Eve', 'a\x1b[2J\nb\rc\td\u202ee')).to.equal('[channel 1] Eve: a\ufffd[2J\ufffdb\ufffdc d\ufffde');
    expect(safe('\u0085x\u009b')).to.equal('\ufffdx\ufffd');
  });

  it('client - every error code of the protocol has a sentence in both languages; server-worded codes show the server\'s words', () => {
    for (const lang of ['en', 'ko'] as const) {
      for (const code of Object.values(ClientErrorCode)) {
        const l = errorLine(lang, code, 'server words', 'Alice');
        expect(l, `${lang} ${code}`).to.match(new RegExp(`^! .+ \\(${code}\\)$`));
        expect(l).not.to.include('{name}');
        expect(l.includes('server words'), `${lang} ${code}`).to.equal(['BAD_REQUEST', 'UNKNOWN_COMMAND', 'NOT_FOUND'].includes(code));
      }
    }
    expect(errorLine('en', 'NAME_TAKEN', 'Alice is online already', 'Alice')).to.equal('! Alice is online already (on another connection): pick another name, or wait until it goes offline (NAME_TAKEN)');
    expect(errorLine('ko', 'RATE_LIMITED', 'too many requests; slow down', 'x')).to.equal('! 너무 빠르게 보내고 있습니다. 천천히 보내세요 (RATE_LIMITED)');
    expect(errorLine('en', 'SOMETHING_NEW', 'later code', 'x')).to.equal('! error: later code (SOMETHING_NEW)');
    expect(closingPushLine('ko', 'UNAVAILABLE', 'server full; retry later')).to.equal('! 서버가 꽉 찼습니다 (UNAVAILABLE)');
  });

  it('client - both languages have the same lines (help of the same length)', () => {
    expect(Object.keys(texts.ko).sort()).to.deep.equal(Object.keys(texts.en).sort());
    expect(texts.ko.help.length).to.equal(texts.en.help.length);
  });
});
