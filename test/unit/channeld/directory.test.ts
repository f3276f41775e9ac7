import { expect } from 'chai';
import { Directory } from '../../../src/channeld/directory';

describe('channeld - directory', () => {
  const A = 1000;
  const A1 = 11;
  const A2 = 22;
  const B = 1001;

  it('login records a name; find is case-insensitive and NFC-insensitive and gives the registered name', () => {
    const d = new Directory();
    expect(d.login('타락파워전사', 3, A, A1, 1)).to.equal('ok');
    expect(d.find('타락파워전사'.normalize('NFD'))).to.include({ name: '타락파워전사', channel: 3, owner: A, ownerInc: A1, session: 1 });
    expect(d.login('Alice', 1, A, A1, 2)).to.equal('ok');
    expect(d.find('ALICE')?.name).to.equal('Alice');
    expect(d.find('nobody')).to.equal(undefined);
  });

  it('a name online elsewhere is taken, even by another session of the same chatD', () => {
    const d = new Directory();
    d.login('Alice', 1, A, A1, 1);
    expect(d.login('alice', 2, B, 5, 9)).to.equal('taken');
    expect(d.login('ALICE', 2, A, A1, 2)).to.equal('taken');
    expect(d.find('alice')?.channel).to.equal(1);
  });

  it('a retried login of the same session is idempotent', () => {
    const d = new Directory();
    expect(d.login('Alice', 1, A, A1, 1)).to.equal('ok');
    expect(d.login('Alice', 4, A, A1, 1)).to.equal('ok');
    expect(d.size).to.equal(1);
    expect(d.find('alice')?.channel).to.equal(4);
  });

  it('an entry of a dead incarnation of the same mtype yields to the new one at once', () => {
    const d = new Directory();
    d.login('Alice', 1, A, A1, 1);
    expect(d.login('Alice', 2, A, A2, 7)).to.equal('ok');
    expect(d.find('alice')).to.include({ ownerInc: A2, session: 7, channel: 2 });
    expect(d.owners().get(`${A}:${A1}`)).to.equal(undefined);
  });

  it('move and remove only act for the session that holds the entry', () => {
    const d = new Directory();
    d.login('Alice', 1, A, A1, 1);
    expect(d.move('alice', 5, A, A1, 2)).to.equal(false);
    expect(d.move('alice', 5, B, A1, 1)).to.equal(false);
    expect(d.move('alice', 5, A, A1, 1)).to.equal(true);
    expect(d.find('alice')?.channel).to.equal(5);
    expect(d.remove('alice', A, A1, 2)).to.equal(false);
    expect(d.remove('alice', A, A1, 1)).to.equal(true);
    expect(d.remove('alice', A, A1, 1)).to.equal(false);
    expect(d.find('alice')).to.equal(undefined);
  });

  it('purge removes one incarnation, or every incarnation but `keep`', () => {
    const d = new Directory();
    d.login('a1', 1, A, A1, 1);
    d.login('a2', 1, A, A1, 2);
    d.login('b1', 1, B, 5, 1);
    expect(d.purge(A, A1)).to.equal(2);
    expect(d.purge(A, A1)).to.equal(0);
    expect(d.size).to.equal(1);
    d.login('a3', 1, A, A2, 3);
    d.login('a4', 1, A, 33, 4);
    expect(d.purge(A, 0, A2)).to.equal(1);
    expect(d.find('a3')).to.not.equal(undefined);
    expect(d.find('a4')).to.equal(undefined);
    expect(d.find('b1')).to.not.equal(undefined);
  });
  it('dropWhere removes the selected entries (a bucket moved away by a new epoch), from the owner index too', () => {
    const d = new Directory();
    for (let i = 0; i < 10; i++) d.login(`Hero${i}`, 1, 1000, 7, i + 1);
    expect(d.dropWhere((key) => Number(key.slice(4)) % 2 === 0)).to.equal(5);
    expect(d.size).to.equal(5);
    expect(d.find('Hero2')).to.equal(undefined);
    expect(d.find('hero3')?.name).to.equal('Hero3');
    expect(d.owners().get('1000:7')).to.equal(5);
    expect(d.purge(1000, 7)).to.equal(5);
    expect(d.dropWhere(() => true)).to.equal(0);
  });
});
