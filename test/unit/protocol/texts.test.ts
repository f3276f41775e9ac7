import { expect } from 'chai';
import { channelText, findText, whisperSentText } from '../../../src/protocol';

describe('protocol/texts', () => {
  it('findText - Korean, exactly as in PROTOCOL.md', () => {
    expect(findText('ko', { name: '타락파워전사', online: true, channel: 3 })).to.equal('타락파워전사님은 3채널에 있습니다.');
    expect(findText('ko', { name: '타락파워전사', online: false })).to.equal('타락파워전사님을 찾을 수 없습니다.');
  });

  it('findText - English', () => {
    expect(findText('en', { name: 'Bob', online: true, channel: 12 })).to.equal('Bob is on channel 12.');
    expect(findText('en', { name: 'Bob', online: false })).to.equal('Bob is not online.');
  });

  it('findText - offline ignores a stray channel', () => {
    expect(findText('en', { name: 'Bob', online: false, channel: 2 })).to.equal('Bob is not online.');
    expect(findText('ko', { name: '밥', online: false, channel: 2 })).to.equal('밥님을 찾을 수 없습니다.');
  });

  it('channelText', () => {
    expect(channelText('ko', 7)).to.equal('7채널로 이동했습니다.');
    expect(channelText('en', 7)).to.equal('Moved to channel 7.');
  });

  it('whisperSentText', () => {
    expect(whisperSentText('ko', '타락파워전사')).to.equal('타락파워전사님에게 귓속말을 보냈습니다.');
    expect(whisperSentText('en', 'Bob')).to.equal('Whisper sent to Bob.');
  });
});
