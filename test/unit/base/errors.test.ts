import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { ClientError, ClientErrorCode, toClientCode } from '../../../src/errors';
import { BacklogFullError } from '../../../src/ipc/ipc-error';
import { RequestError } from '../../../src/ipc/endpoint';
import { projectRoot } from '../../../src/schemas';

/** PROTOCOL.md's "Error codes" section, in its order. */
const PROTOCOL_CODES = [
  'BAD_FRAME', 'BAD_REQUEST', 'NOT_LOGGED_IN', 'ALREADY_LOGGED_IN', 'NAME_TAKEN', 'NOT_FOUND',
  'UNKNOWN_COMMAND', 'RATE_LIMITED', 'TIMEOUT', 'UNAVAILABLE', 'INTERNAL',
];

describe('errors - the wire codes table', () => {
  it('holds exactly the codes of PROTOCOL.md, each keyed by itself', () => {
    expect(Object.keys(ClientErrorCode)).to.deep.equal(PROTOCOL_CODES);
    for (const [k, v] of Object.entries(ClientErrorCode)) expect(v).to.equal(k);
  });

  it('matches the contract file when it is beside the project', function () {
    const file = join(projectRoot(), '..', 'shared', 'PROTOCOL.md');
    if (!existsSync(file)) this.skip();
    const text = readFileSync(file, 'utf8');
    const section = text.slice(text.indexOf('## Error codes'), text.indexOf('## Consistency'));
    const codes = [...section.matchAll(/`([A-Z_]+)`/g)].map((m) => m[1]);
    expect(codes).to.deep.equal(PROTOCOL_CODES);
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
