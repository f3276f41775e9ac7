import { expect } from 'chai';
import pino from 'pino';
import { LEGACY_MTEXT_BYTES, LEGACY_TRAILER_AT, LegacyGateway, legacyReplyBody, legacyReplyTime, legacyRequestText } from '../../../src/chatd/legacy-gateway';
import type { ShardClient } from '../../../src/chatd/shard-client';
import { LocalQueue, LocalTransport } from '../../../src/ipc/local/local-transport';
import { MTYPE_LEGACY_REPLY, MTYPE_LEGACY_REQUEST } from '../../../src/ipc/mtypes';
import { waitFor } from '../../helpers/wait';

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

  describe('shedding while replies would take the queue over half full', () => {
    const noShards = {} as ShardClient; // 'hello' is not a slash command: answered without a shard
    async function ask(fill: (q: LocalQueue) => void): Promise<LegacyGateway['counters']> {
      const queue = new LocalQueue(16384, 8192);
      fill(queue);
      const transport = new LocalTransport(queue);
      const gw = new LegacyGateway(transport, noShards, pino({ level: 'silent' }));
      gw.start();
      try {
        expect(queue.trySend(MTYPE_LEGACY_REQUEST, legacyReplyBody('hello'))).to.equal(true);
        await waitFor(() => gw.counters.requests === 1 && gw.counters.replies + gw.counters.shed + gw.counters.dropped === 1, 2000, 5, 'request handled');
        return { ...gw.counters };
      } finally {
        await gw.close();
        await transport.close();
      }
    }

    it('a queue with room: the reply is sent', async () => {
      const c = await ask(() => {});
      expect(c).to.include({ replies: 1, shed: 0 });
    });

    it('over half full by message count (tiny messages, few bytes): shed, as over half full by bytes', async () => {
      const byCount = await ask((q) => {
        for (let i = 0; i < 8200; i++) q.trySend(5, Buffer.alloc(0));
      });
      expect(byCount).to.include({ replies: 0, shed: 1 });
      const byBytes = await ask((q) => {
        for (let i = 0; i < 8; i++) q.trySend(MTYPE_LEGACY_REPLY, legacyReplyBody(`unread ${i}`));
      });
      expect(byBytes).to.include({ replies: 0, shed: 1 });
    });
  });
});
