import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { ClientError, ClientErrorCode, toClientCode } from '../../../src/errors';
import { BacklogFullError } from '../../../src/ipc/ipc-error';
import { RequestError } from '../../../src/ipc/endpoint';
import { projectRoot } from '../../../src/schemas';

/** docs/protocol.md's "Error codes" section, in its order. */
const PROTOCOL_CODES = [
  'BAD_FRAME', 'BAD_REQUEST', 'NOT_LOGGED_IN', 'ALREADY_LOGGED_IN', 'NAME_TAKEN', 'NOT_FOUND',
  'UNKNOWN_COMMAND', 'RATE_LIMITED', 'TIMEOUT', 'UNAVAILABLE', 'INTERNAL',
];

describe('errors - the wire codes table', () => {
  it('holds exactly the codes of docs/protocol.md, each keyed by itself', () => {
    expect(Object.keys(ClientErrorCode)).to.deep.equal(PROTOCOL_CODES);
    for (const [k, v] of Object.entries(ClientErrorCode)) expect(v).to.equal(k);
  });

  it('matches the error-code section of docs/protocol.md (the contract, in the repository)', () => {
    const text = readFileSync(join(projectRoot(), 'docs', 'protocol.md'), 'utf8');
    const start = text.indexOf('\n## Error codes\n');
    expect(start, 'docs/protocol.md has an "## Error codes" section').to.be.greaterThan(-1);
    const end = text.indexOf('\n## ', start + 1);
    const section = text.slice(start, end === -1 ? undefined : end);
    // The contract's list, word for word: every code in backquotes, in order.
    const listed = section.slice(0, section.indexOf('**Details**'));
    expect([...listed.matchAll(/`([A-Z_]+)`/g)].map((m) => m[1]), 'the Contract list').to.deep.equal(Object.keys(ClientErrorCode));
    // The table: one row per code, its first column the code.
    const rows = [...section.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]);
    expect(rows, 'the table').to.deep.equal(Object.keys(ClientErrorCode));
  });

  it('maps internal failures to the code a client sees', () => {
    expect(toClientCode(new ClientError(ClientErrorCode.NAME_TAKEN, 'x'))).to.equal('NAME_TAKEN');
    expect(toClientCode(new BacklogFullError(1, 2))).to.equal('UNAVAILABLE');
    expect(toClientCode(new RequestError('TIMEOUT', 'late'))).to.equal('TIMEOUT');
    expect(toClientCode(new RequestError('UNAVAILABLE', 'down'))).to.equal('UNAVAILABLE');
    expect(toClientCode(new Error('boom'))).to.equal('INTERNAL');
    expect(toClientCode(undefined)).to.equal('INTERNAL');
  });
});
