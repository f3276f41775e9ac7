import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import {
  REQUEST_OPS,
  type ValidationResult,
  createRequestValidator,
} from '../../../src/protocol';
import { isValidName } from '../../../src/cluster/names';
import { projectRoot as findProjectRoot } from '../../../src/schemas';

type Failure = Extract<ValidationResult, { ok: false }>;

const validate20 = createRequestValidator({ channels: 20 });
const validate3 = createRequestValidator({ channels: 3 });

function ok(raw: Record<string, unknown>, validate = validate20): void {
  const r = validate(raw);
  expect(r, JSON.stringify(r)).to.have.property('ok', true);
}

function bad(raw: Record<string, unknown>, field?: string, validate = validate20): Failure {
  const r = validate(raw);
  expect(r.ok, `expected ${JSON.stringify(raw)} to fail`).to.equal(false);
  const f = r as Failure;
  expect(f.message).to.be.a('string').and.not.equal('');
  if (field) expect(f.message, f.message).to.match(new RegExp(`^"?${field}"?:`));
  return f;
}

const VALID: Record<string, Record<string, unknown>> = {
  login: { op: 'login', id: 1, name: 'Bob', channel: 1 },
  find: { op: 'find', id: 2, name: 'Bob' },
  chat: { op: 'chat', id: 3, text: 'hello' },
  whisper: { op: 'whisper', id: 4, to: 'Bob', text: 'psst' },
  move: { op: 'move', id: 5, channel: 20 },
  ping: { op: 'ping', id: 6 },
  logout: { op: 'logout', id: 7 },
};

describe('protocol/request-validator', () => {
  it('the schema file is draft-07 with an $id, and lists exactly the seven ops', () => {
    const schema = JSON.parse(readFileSync(join(findProjectRoot(), 'schemas', 'client-request.json'), 'utf8'));
    expect(schema.$schema).to.match(/draft-07/);
    expect(schema.$id).to.be.a('string');
    expect([...schema.definitions.op.enum].sort()).to.deep.equal([...REQUEST_OPS].sort());
    for (const branch of schema.allOf) expect(branch.then.additionalProperties).to.equal(false);
  });

  it('rejects a bad channel count', () => {
    expect(() => createRequestValidator({ channels: 0 })).to.throw(RangeError);
    expect(() => createRequestValidator({ channels: 2.5 })).to.throw(RangeError);
  });

  describe('valid requests', () => {
    for (const [op, raw] of Object.entries(VALID)) {
      it(`${op}`, () => {
        const r = validate20(raw);
        expect(r).to.deep.equal({ ok: true, request: raw });
      });
    }

    it('Hangul and mixed-script names', () => {
      ok({ op: 'login', id: 1, name: '타락파워전사', channel: 3 });
      ok({ op: 'find', id: 1, name: '山田_太郎99' });
      ok({ op: 'whisper', id: 1, to: '전사', text: '안녕하세요' });
    });

    it('returns names in NFC', () => {
      const r = validate20({ op: 'find', id: 1, name: '타락'.normalize('NFD') });
      expect(r).to.deep.equal({ ok: true, request: { op: 'find', id: 1, name: '타락' } });
    });
  });

  describe('op', () => {
    it('an unknown op: BAD_REQUEST without op, id echoed', () => {
      const f = bad({ op: 'dance', id: 9 }, 'op');
      expect(f).to.not.have.property('op');
      expect(f.id).to.equal(9);
    });

    it('a missing or non-string op', () => {
      for (const op of [undefined, 5, null, ['ping'], 'PING', 'ping ']) {
        const raw: Record<string, unknown> = { id: 1 };
        if (op !== undefined) raw.op = op;
        const f = bad(raw, 'op');
        expect(f, JSON.stringify(op)).to.not.have.property('op');
      }
    });

    it('the failure echoes a known op', () => {
      for (const op of REQUEST_OPS) {
        const f = bad({ op, id: 1, bogus: true });
        expect(f.op).to.equal(op);
      }
    });
  });

  describe('id', () => {
    it('accepts 0 and 2^31-1', () => {
      ok({ op: 'ping', id: 0 });
      ok({ op: 'ping', id: 2 ** 31 - 1 });
    });

    for (const id of [-1, 2 ** 31, 1.5, '1', null, true, [], {}, Number.MAX_SAFE_INTEGER + 2]) {
      it(`rejects ${JSON.stringify(id)} and replies with id null`, () => {
        const f = bad({ op: 'ping', id }, 'id');
        expect(f.id).to.equal(null);
        expect(f.op).to.equal('ping');
      });
    }

    it('a missing id', () => {
      const f = bad({ op: 'logout' }, 'id');
      expect(f).to.have.property('id', null);
      expect(f.op).to.equal('logout');
    });

    it('a valid id is echoed when another field is bad', () => {
      const f = bad({ op: 'login', id: 77, name: 'a b', channel: 1 }, 'name');
      expect(f.id).to.equal(77);
      expect(f.op).to.equal('login');
    });
  });

  describe('extra and missing properties', () => {
    for (const [op, raw] of Object.entries(VALID)) {
      it(`${op}: an extra property`, () => {
        const f = bad({ ...raw, extra: 1 }, 'extra');
        expect(f.op).to.equal(op);
        expect(f.id).to.equal(raw.id);
      });
    }

    it('a field of another op is extra', () => {
      bad({ op: 'ping', id: 1, name: 'Bob' }, 'name');
      bad({ op: 'chat', id: 1, text: 'x', to: 'Bob' }, 'to');
      bad({ op: 'find', id: 1, name: 'Bob', channel: 1 }, 'channel');
    });

    it('__proto__ from JSON is an extra property', () => {
      const raw = JSON.parse('{"op":"ping","id":1,"__proto__":{"x":1}}') as Record<string, unknown>;
      bad(raw, '__proto__');
    });

    it('missing required fields', () => {
      bad({ op: 'login', id: 1, name: 'Bob' }, 'channel');
      bad({ op: 'login', id: 1, channel: 1 }, 'name');
      bad({ op: 'find', id: 1 }, 'name');
      bad({ op: 'chat', id: 1 }, 'text');
      bad({ op: 'whisper', id: 1, text: 'x' }, 'to');
      bad({ op: 'whisper', id: 1, to: 'Bob' }, 'text');
      bad({ op: 'move', id: 1 }, 'channel');
    });
  });

  describe('name', () => {
    for (const field of ['name', 'to'] as const) {
      const make = (v: unknown): Record<string, unknown> =>
        field === 'name' ? { op: 'find', id: 1, name: v } : { op: 'whisper', id: 1, to: v, text: 'x' };

      it(`${field}: invalid values`, () => {
        for (const v of ['', 'a b', 'a-b', 'bob!', '🎮', ' bob', 5, null]) {
          const f = bad(make(v), field);
          expect(f.message).to.equal(`${field}: must be 1-24 letters, digits or _`);
        }
      });

      it(`${field}: 24 code points pass, 25 fail (Hangul, astral)`, () => {
        ok(make('가'.repeat(24)));
        bad(make('가'.repeat(25)), field);
        ok(make('\u{20000}'.repeat(24))); // 48 UTF-16 units
        bad(make('\u{20000}'.repeat(25)), field);
        ok(make('𝒜'.repeat(12) + '가'.repeat(12)));
        bad(make('𝒜'.repeat(13) + '가'.repeat(12)), field);
      });

      it(`${field}: NFD Hangul is counted after NFC`, () => {
        ok(make('각'.repeat(24).normalize('NFD')));
      });
    }

    it('agrees with isValidName', () => {
      const samples = ['a', '_', '타락', '가'.repeat(24), '가'.repeat(25), 'a b', '', '🎮', 'é', 'e\u0301', 'x\u0301', '٣'];
      for (const s of samples) {
        const r = validate20({ op: 'find', id: 1, name: s });
        expect(r.ok, JSON.stringify(s)).to.equal(isValidName(s));
      }
    });
  });

  describe('channel', () => {
    it('channels = 20: 1..20', () => {
      ok({ op: 'move', id: 1, channel: 1 });
      ok({ op: 'login', id: 1, name: 'a', channel: 20 });
      for (const channel of [0, 21, -1, 1.5, '3', null]) {
        const f = bad({ op: 'move', id: 1, channel }, 'channel');
        expect(f.message).to.equal('channel: must be an integer from 1 to 20');
      }
      bad({ op: 'login', id: 1, name: 'a', channel: 21 }, 'channel');
    });

    it('channels = 3: 1..3, independent of the other validator', () => {
      ok({ op: 'move', id: 1, channel: 3 }, validate3);
      const f = bad({ op: 'move', id: 1, channel: 4 }, 'channel', validate3);
      expect(f.message).to.equal('channel: must be an integer from 1 to 3');
      ok({ op: 'move', id: 1, channel: 4 }); // the 20-channel validator still allows it
    });
  });

  describe('text', () => {
    for (const op of ['chat', 'whisper'] as const) {
      const make = (text: unknown): Record<string, unknown> =>
        op === 'chat' ? { op, id: 1, text } : { op, id: 1, to: 'Bob', text };

      it(`${op}: 500 code points pass, 501 fail (emoji count once)`, () => {
        ok(make('🎮'.repeat(500))); // 1000 UTF-16 units
        const f = bad(make('🎮'.repeat(501)), 'text');
        expect(f.message).to.equal('text: must be 1-500 characters');
        ok(make('가'.repeat(499) + '!'));
        bad(make('a'.repeat(501)), 'text');
      });

      it(`${op}: empty or non-string text`, () => {
        bad(make(''), 'text');
        bad(make(5), 'text');
        bad(make(['hi']), 'text');
      });
    }

    it('text may contain spaces and slashes', () => {
      ok({ op: 'chat', id: 1, text: '/찾기 타락파워전사' });
      ok({ op: 'chat', id: 1, text: ' ' });
    });
  });
});

describe('protocol/request-validator - digits in names', () => {
  it('takes decimal digits and refuses other numeric characters', () => {
    const v = createRequestValidator({ channels: 20 });
    expect(v({ op: 'find', id: 1, name: 'user٣4' }).ok).to.equal(true);
    expect(v({ op: 'find', id: 1, name: 'half½' }).ok).to.equal(false);
  });
});
