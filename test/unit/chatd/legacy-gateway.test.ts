import { expect } from 'chai';
import { LEGACY_MTEXT_BYTES, LEGACY_TRAILER_AT, legacyReplyBody, legacyReplyTime, legacyRequestText } from '../../../src/chatd/legacy-gateway';

describe('chatd - legacy C peers', () => {
  it('reads the command line up to the first NUL', () => {
    const m = Buffer.alloc(1024);
    Buffer.from('/찾기 타락파워전사').copy(m);
    expect(legacyRequestText(m)).to.equal('/찾기 타락파워전사');
    expect(legacyRequestText(Buffer.from('/find bob'))).to.equal('/find bob');
  });

  it('replies in a 1024-byte NUL-terminated mtext', () => {
    const b = legacyReplyBody('타락파워전사님은 3채널에 있습니다.');
    expect(b.length).to.equal(LEGACY_MTEXT_BYTES);
    expect(legacyRequestText(b)).to.equal('타락파워전사님은 3채널에 있습니다.');
  });

  it('cuts an overlong reply at a character boundary and keeps the NUL', () => {
    const b = legacyReplyBody('가'.repeat(600)); // 1800 bytes of UTF-8
    expect(b[LEGACY_TRAILER_AT - 1]).to.equal(0);
    const text = legacyRequestText(b);
    expect(text).to.equal('가'.repeat(337)); // 1011 bytes: the last 12 of the mtext hold the send time
  });

  it('carries its send time after the NUL, where C peers do not read', () => {
    const b = legacyReplyBody('nobody is not online.', 1_700_000_000_123);
    expect(legacyReplyTime(b)).to.equal(1_700_000_000_123);
    expect(legacyRequestText(b)).to.equal('nobody is not online.');
    expect(legacyReplyTime(Buffer.alloc(LEGACY_MTEXT_BYTES))).to.equal(undefined);
  });
});
