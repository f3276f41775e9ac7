import { expect } from 'chai';
import { ClientErrorCode } from '../../../src/errors';
import { errorPush, errorReply, messagePush, okReply, whisperPush } from '../../../src/protocol';

describe('protocol/replies', () => {
  it('okReply - envelope then fields', () => {
    const r = okReply('find', 4, { name: 'Bob', online: true, channel: 3 });
    expect(r).to.deep.equal({ op: 'find', id: 4, ok: true, name: 'Bob', online: true, channel: 3 });
    expect(Object.keys(r).slice(0, 3)).to.deep.equal(['op', 'id', 'ok']);
  });

  it('okReply - without fields', () => {
    expect(okReply('ping', 0)).to.deep.equal({ op: 'ping', id: 0, ok: true });
  });

  it('okReply - fields cannot override the envelope', () => {
    const sneaky = { op: 'evil', id: 99, ok: false, x: 1 } as unknown as Record<string, never>;
    expect(okReply('chat', 1, sneaky)).to.deep.equal({ op: 'chat', id: 1, ok: true, x: 1 });
  });

  it('errorReply - with op and id', () => {
    expect(errorReply('move', 5, ClientErrorCode.NOT_LOGGED_IN, 'log in first')).to.deep.equal({
      op: 'move',
      id: 5,
      ok: false,
      error: { code: 'NOT_LOGGED_IN', message: 'log in first' },
    });
  });

  it('errorReply - no op key at all when op is undefined; id null is kept', () => {
    const r = errorReply(undefined, null, ClientErrorCode.BAD_REQUEST, 'op: must be one of ...');
    expect(r).to.not.have.property('op');
    expect(r).to.have.property('id', null);
    expect(JSON.parse(JSON.stringify(r))).to.deep.equal({
      id: null,
      ok: false,
      error: { code: 'BAD_REQUEST', message: 'op: must be one of ...' },
    });
  });

  it('errorPush - no id key', () => {
    const p = errorPush(ClientErrorCode.BAD_FRAME, 'frame length is 0');
    expect(p).to.deep.equal({ op: 'error', ok: false, error: { code: 'BAD_FRAME', message: 'frame length is 0' } });
    expect(p).to.not.have.property('id');
  });

  it('messagePush and whisperPush - exact shapes, no id', () => {
    const m = messagePush('타락파워전사', 3, '안녕');
    expect(m).to.deep.equal({ op: 'message', from: '타락파워전사', channel: 3, text: '안녕' });
    expect(m).to.not.have.property('id');
    const w = whisperPush('Bob', 'psst');
    expect(w).to.deep.equal({ op: 'whisper', from: 'Bob', text: 'psst' });
    expect(w).to.not.have.property('id');
  });
});
