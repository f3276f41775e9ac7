import { expect } from 'chai';
import { type SlashCommand, parseSlashCommand } from '../../../src/protocol';

function expectError(text: string, code: 'BAD_REQUEST' | 'UNKNOWN_COMMAND', lang?: 'en' | 'ko'): void {
  const r = parseSlashCommand(text);
  expect(r.kind, `${JSON.stringify(text)} -> ${JSON.stringify(r)}`).to.equal('error');
  const e = r as Extract<SlashCommand, { kind: 'error' }>;
  expect(e.code, JSON.stringify(text)).to.equal(code);
  expect(e.message).to.be.a('string').and.not.equal('');
  if (lang) expect(e.lang, JSON.stringify(text)).to.equal(lang);
}

describe('protocol/slash-command', () => {
  describe('find', () => {
    it('/find and /찾기', () => {
      expect(parseSlashCommand('/find Bob')).to.deep.equal({ kind: 'find', name: 'Bob', lang: 'en' });
      expect(parseSlashCommand('/찾기 타락파워전사')).to.deep.equal({ kind: 'find', name: '타락파워전사', lang: 'ko' });
    });

    it('English command words are case-insensitive', () => {
      expect(parseSlashCommand('/FIND Bob')).to.deep.equal({ kind: 'find', name: 'Bob', lang: 'en' });
      expect(parseSlashCommand('/Find Bob')).to.deep.equal({ kind: 'find', name: 'Bob', lang: 'en' });
    });

    it('tolerates extra spaces, tabs and surrounding whitespace', () => {
      expect(parseSlashCommand('  /찾기 \t  타락파워전사  \t')).to.deep.equal({ kind: 'find', name: '타락파워전사', lang: 'ko' });
      expect(parseSlashCommand('/find\tBob\n')).to.deep.equal({ kind: 'find', name: 'Bob', lang: 'en' });
    });

    it('a decomposed command word or name is composed', () => {
      const r = parseSlashCommand(`/${'찾기'.normalize('NFD')} ${'전사'.normalize('NFD')}`);
      expect(r).to.deep.equal({ kind: 'find', name: '전사', lang: 'ko' });
    });

    it('missing, extra or malformed name: BAD_REQUEST', () => {
      expectError('/find', 'BAD_REQUEST', 'en');
      expectError('/찾기', 'BAD_REQUEST', 'ko');
      expectError('/찾기   ', 'BAD_REQUEST', 'ko');
      expectError('/find Bob Alice', 'BAD_REQUEST', 'en');
      expectError('/찾기 타락 파워', 'BAD_REQUEST', 'ko');
      expectError('/find bob!', 'BAD_REQUEST', 'en');
      expectError('/찾기 🎮', 'BAD_REQUEST', 'ko');
      expectError(`/find ${'가'.repeat(25)}`, 'BAD_REQUEST', 'en');
    });

    it('a 24-character Hangul name is fine', () => {
      expect(parseSlashCommand(`/찾기 ${'가'.repeat(24)}`)).to.deep.equal({ kind: 'find', name: '가'.repeat(24), lang: 'ko' });
    });
  });

  describe('whisper', () => {
    it('/w, /whisper and /귓속말', () => {
      expect(parseSlashCommand('/w Bob hi')).to.deep.equal({ kind: 'whisper', to: 'Bob', text: 'hi', lang: 'en' });
      expect(parseSlashCommand('/whisper Bob hi')).to.deep.equal({ kind: 'whisper', to: 'Bob', text: 'hi', lang: 'en' });
      expect(parseSlashCommand('/W Bob hi')).to.deep.equal({ kind: 'whisper', to: 'Bob', text: 'hi', lang: 'en' });
      expect(parseSlashCommand('/귓속말 타락파워전사 안녕하세요')).to.deep.equal({
        kind: 'whisper',
        to: '타락파워전사',
        text: '안녕하세요',
        lang: 'ko',
      });
    });

    it('the message is the rest of the line, inner spacing kept, outer whitespace dropped', () => {
      expect(parseSlashCommand('/귓속말   전사 \t  내일   보자  /w  ')).to.deep.equal({
        kind: 'whisper',
        to: '전사',
        text: '내일   보자  /w',
        lang: 'ko',
      });
    });

    it('missing name or message, or a bad name: BAD_REQUEST', () => {
      expectError('/w', 'BAD_REQUEST', 'en');
      expectError('/w Bob', 'BAD_REQUEST', 'en');
      expectError('/w Bob    ', 'BAD_REQUEST', 'en');
      expectError('/귓속말', 'BAD_REQUEST', 'ko');
      expectError('/귓속말 전사', 'BAD_REQUEST', 'ko');
      expectError('/귓속말 전사!! 안녕', 'BAD_REQUEST', 'ko');
      expectError(`/whisper ${'a'.repeat(25)} hi`, 'BAD_REQUEST', 'en');
    });
  });

  describe('channel', () => {
    it('/channel and /채널', () => {
      expect(parseSlashCommand('/channel 3')).to.deep.equal({ kind: 'channel', channel: 3, lang: 'en' });
      expect(parseSlashCommand('/채널 12')).to.deep.equal({ kind: 'channel', channel: 12, lang: 'ko' });
      expect(parseSlashCommand('/CHANNEL\t 7 ')).to.deep.equal({ kind: 'channel', channel: 7, lang: 'en' });
    });

    it('range is left to the caller', () => {
      expect(parseSlashCommand('/채널 999')).to.deep.equal({ kind: 'channel', channel: 999, lang: 'ko' });
    });

    it('missing, extra or malformed number: BAD_REQUEST', () => {
      for (const arg of ['', '0', '-1', '+3', '1.5', '3a', '3채널', '１', '0x10', '1e3', '99999999999999999999', '1 2']) {
        expectError(`/channel ${arg}`, 'BAD_REQUEST', 'en');
        expectError(`/채널 ${arg}`, 'BAD_REQUEST', 'ko');
      }
    });
  });

  describe('unknown commands', () => {
    it('anything else starting with / is UNKNOWN_COMMAND', () => {
      for (const text of ['/', '/ ', '/foo', '/foo bar', '/findx Bob', '/ww Bob hi', '/chan 3', '//find Bob', '/ find Bob', '/constructor', '/__proto__', '/toString']) {
        expectError(text, 'UNKNOWN_COMMAND');
      }
    });

    it('answers in Korean for a Hangul command word', () => {
      expectError('/안녕', 'UNKNOWN_COMMAND', 'ko');
      expectError('/hello', 'UNKNOWN_COMMAND', 'en');
    });

    it('echoes a long command word cut short, by code points', () => {
      const r = parseSlashCommand(`/${'🎮'.repeat(100)}`) as Extract<SlashCommand, { kind: 'error' }>;
      expect(r.code).to.equal('UNKNOWN_COMMAND');
      expect(r.message.length).to.be.below(120);
      expect(r.message).to.not.match(/[\ud800-\udbff](?![\udc00-\udfff])/); // no lone high surrogate
    });
  });
});
