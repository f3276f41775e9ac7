import { expect } from 'chai';
import { ShardClient } from '../../../src/chatd/shard-client';
import { Status } from '../../../src/cluster/kinds';
import { MAX_FIND_REPLY_BYTES, writeFindReply } from '../../../src/cluster/records';
import { normalizeName } from '../../../src/cluster/names';
import { ClientError, ClientErrorCode } from '../../../src/errors';
import { RequestError, type Endpoint } from '../../../src/ipc/endpoint';
import { memberRanges } from '../../../src/cluster/ownership';

describe('chatd - shard client: FIND outcomes', () => {
  const client = new ShardClient({ mtype: 1000, incarnation: 1 } as unknown as Endpoint, 4, 1000, 1000);
  const reply = (name: string, channel = 3): Buffer => {
    const b = Buffer.alloc(MAX_FIND_REPLY_BYTES);
    return b.subarray(0, writeFindReply(b, { name, channel, owner: 1000, ownerInc: 7 }));
  };

  it('a hit for the name asked (any spelling of it) is the answer; NOT_FOUND is offline', () => {
    const r = reply('타락파워전사');
    expect(client.findOutcome(Status.OK, r, 0, r.length, normalizeName('타락파워전사'))).to.deep.equal({ online: true, name: '타락파워전사', channel: 3, owner: 1000, ownerInc: 7 });
    const bob = reply('Bob_7', 12);
    expect(client.findOutcome(Status.OK, bob, 0, bob.length, normalizeName('BOB_7'))).to.include({ online: true, channel: 12 });
    expect(client.findOutcome(Status.NOT_FOUND, Buffer.alloc(0), 0, 0, 'x')).to.deep.equal({ online: false });
  });

  it('a reply about another name (a forged or misrouted reply) is INTERNAL, never passed on as the answer', () => {
    const r = reply('Warrior154', 4);
    let err: unknown;
    try {
      client.findOutcome(Status.OK, r, 0, r.length, normalizeName('Warrior131'));
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(ClientError);
    expect((err as ClientError).code).to.equal(ClientErrorCode.INTERNAL);
    // The same with the name as asked given (chatD's hot path): still refused.
    expect(() => client.findOutcome(Status.OK, r, 0, r.length, normalizeName('Warrior131'), undefined, undefined, 'Warrior131')).to.throw(ClientError, 'another name');
    // A hit registered in another spelling of the name asked is the same character.
    const other = reply('전사ABC', 2);
    expect(client.findOutcome(Status.OK, other, 0, other.length, normalizeName('전사abc'), undefined, undefined, '전사abc')).to.deep.include({ online: true, name: '전사ABC', channel: 2 });
  });

  it('a reply from a shard incarnation the collector has not named is UNAVAILABLE (and asks for a fresh membership), even a NOT_FOUND', () => {
    const c = new ShardClient({ mtype: 1000, incarnation: 1 } as unknown as Endpoint, 4, 1000, 1000);
    let asked = 0;
    c.onStrangerReply = () => asked++;
    const key = normalizeName('Warrior131');
    const shard = 2;
    const r = reply('Warrior131', 4);
    // No membership yet: nothing to check against.
    expect(c.findOutcome(Status.OK, r, 0, r.length, key, shard, 77)).to.include({ online: true, channel: 4 });
    c.setMembership([[0, 10], [1, 11], [2, 12], [3, 13]]);
    expect(c.findOutcome(Status.OK, r, 0, r.length, key, shard, 12)).to.include({ online: true, channel: 4 });
    expect(c.findOutcome(Status.NOT_FOUND, Buffer.alloc(0), 0, 0, key, shard, 12)).to.deep.equal({ online: false });
    for (const [status, body] of [[Status.OK, r], [Status.NOT_FOUND, Buffer.alloc(0)]] as const) {
      let err: unknown;
      try {
        c.findOutcome(status, body, 0, body.length, key, shard, 77);
      } catch (e) {
        err = e;
      }
      expect(err, `status ${status}`).to.be.instanceOf(ClientError);
      expect((err as ClientError).code).to.equal(ClientErrorCode.UNAVAILABLE);
    }
    expect(c.strangerReplies).to.equal(2);
    expect(asked).to.equal(2);
  });

  it('error statuses map to client codes; a malformed OK reply is INTERNAL', () => {
    const code = (status: number, body = Buffer.alloc(0)): string => {
      try {
        client.findOutcome(status, body, 0, body.length, 'x');
        return 'ok';
      } catch (e) {
        return (e as ClientError).code;
      }
    };
    expect(code(Status.UNAVAILABLE)).to.equal(ClientErrorCode.UNAVAILABLE);
    expect(code(Status.BAD_REQUEST)).to.equal(ClientErrorCode.INTERNAL);
    expect(code(Status.OK, Buffer.from([1, 0, 0]))).to.equal(ClientErrorCode.INTERNAL);
  });
});

describe('chatd - shard client: requests when the transport goes down (NATS)', () => {
  it('a login or move in flight when the connection dropped is TIMEOUT (it may have taken effect, and a login is taken back on TIMEOUT); a find is UNAVAILABLE; one never sent is UNAVAILABLE', async () => {
    let next = new RequestError('UNAVAILABLE', 'dropped', { inFlight: true });
    const endpoint = {
      mtype: 1000,
      incarnation: 1,
      request: () => Promise.reject(next),
    } as unknown as Endpoint;
    const c = new ShardClient(endpoint, 1, 1000, 1000);
    c.setMembership([[0, 10]], { epoch: 1, members: memberRanges([0]) });
    const code = async (f: () => Promise<unknown>): Promise<string> => {
      try {
        await f();
        return 'ok';
      } catch (e) {
        return (e as ClientError).code;
      }
    };
    expect(await code(() => c.login('Zed', 1, 3))).to.equal(ClientErrorCode.TIMEOUT);
    expect(await code(() => c.move('Zed', 1, 4))).to.equal(ClientErrorCode.TIMEOUT);
    expect(c.clientError(0, next).code, 'a find (no effect to be unsure of)').to.equal(ClientErrorCode.UNAVAILABLE);
    next = new RequestError('UNAVAILABLE', 'not sent: the transport is down');
    expect(await code(() => c.login('Zed', 1, 3))).to.equal(ClientErrorCode.UNAVAILABLE);
    expect(c.clientError(0, next).code).to.equal(ClientErrorCode.UNAVAILABLE);
  });
});
