import Ajv, { type ErrorObject } from 'ajv';
import {
  type ClientRequest,
  type RequestOp,
  MAX_REQUEST_ID,
  REQUEST_OPS,
  TEXT_MAX_CODE_POINTS,
  isRequestId,
  isRequestOp,
} from './client-request';
import { NAME_MAX_CODE_POINTS } from '../cluster/names';
import { loadSchema } from '../schemas';

export type ValidationResult =
  | { ok: true; request: ClientRequest }
  | { ok: false; op?: RequestOp; id: number | null; message: string };

export type RequestValidator = (raw: Record<string, unknown>) => ValidationResult;

const SCHEMA_FILE = 'client-request.json';
const MAX_CHANNELS = MAX_REQUEST_ID;
const MAX_KEY_IN_MESSAGE = 40;

type SchemaDoc = {
  definitions: { op: { enum: unknown[] }; channel: { maximum: number } };
};

/** Reads schemas/client-request.json fresh (a private copy) and sets the channel maximum. */
export function loadRequestSchema(channels: number): object {
  const path = `schemas/${SCHEMA_FILE}`;
  // A private copy: the cached document is shared, and the channel maximum is set per validator.
  const schema = structuredClone(loadSchema(SCHEMA_FILE)) as unknown as SchemaDoc;
  const ops = schema.definitions?.op?.enum;
  // The TypeScript union and the schema must list the same ops; fail at start, not per request.
  if (!Array.isArray(ops) || ops.length !== REQUEST_OPS.length || !REQUEST_OPS.every((op) => ops.includes(op))) {
    throw new Error(`${path}: definitions.op.enum does not match REQUEST_OPS`);
  }
  if (typeof schema.definitions.channel?.maximum !== 'number') {
    throw new Error(`${path}: definitions.channel.maximum is missing`);
  }
  schema.definitions.channel.maximum = channels;
  return schema;
}

/** Compiles the request schema once; the returned function is pure and synchronous. */
export function createRequestValidator(opts: { channels: number }): RequestValidator {
  const { channels } = opts;
  if (!Number.isInteger(channels) || channels < 1 || channels > MAX_CHANNELS) {
    throw new RangeError(`channels must be an integer from 1 to ${MAX_CHANNELS}, got ${channels}`);
  }
  // allErrors off: the first error is enough for the reply and stops work on hostile input.
  const ajv = new Ajv({ allErrors: false, strict: true });
  const validate = ajv.compile(loadRequestSchema(channels));

  const fail = (op: RequestOp | undefined, id: number | null, message: string): ValidationResult =>
    op === undefined ? { ok: false, id, message } : { ok: false, op, id, message };
  return (raw) => {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      return fail(isRequestOp(raw?.op) ? raw.op : undefined, isRequestId(raw?.id) ? raw.id : null, 'request: must be an object');
    }
    // Names are checked after NFC, like isValidName(): NFD Hangul or a decomposed accent
    // would otherwise count too many code points or fail on the combining mark. The request
    // is copied only when that changes a name (ASCII, and most input, is NFC already).
    let input: Record<string, unknown> = raw;
    for (const key of NAME_FIELDS) {
      const v = input[key];
      if (typeof v !== 'string' || ASCII.test(v)) continue;
      const nfc = v.normalize('NFC');
      if (nfc === v) continue;
      if (input === raw) input = { ...raw };
      input[key] = nfc;
    }
    if (validate(input)) return { ok: true, request: input as ClientRequest };
    return fail(isRequestOp(raw.op) ? raw.op : undefined, isRequestId(raw.id) ? raw.id : null, describeError(validate.errors?.[0], isRequestOp(raw.op) ? raw.op : undefined, channels));
  };
}

const NAME_FIELDS = ['name', 'to'] as const;
const ASCII = /^[\x00-\x7f]*$/;

function fieldRule(field: string, channels: number): string | undefined {
  switch (field) {
    case 'op':
      return `op: must be one of ${REQUEST_OPS.join(', ')}`;
    case 'id':
      return `id: must be an integer from 0 to ${MAX_REQUEST_ID}`;
    case 'name':
    case 'to':
      return `${field}: must be 1-${NAME_MAX_CODE_POINTS} letters, digits or _`;
    case 'channel':
      return `channel: must be an integer from 1 to ${channels}`;
    case 'text':
      return `text: must be 1-${TEXT_MAX_CODE_POINTS} characters`;
    default:
      return undefined;
  }
}

function describeError(err: ErrorObject | undefined, op: RequestOp | undefined, channels: number): string {
  if (!err) return 'request: invalid';
  if (err.keyword === 'required') {
    const field = String((err.params as { missingProperty?: unknown }).missingProperty);
    return `${field}: is required`;
  }
  if (err.keyword === 'additionalProperties') {
    const key = String((err.params as { additionalProperty?: unknown }).additionalProperty);
    // The key comes from the client: quote it and keep the echo short.
    const points = Array.from(key);
    const shown = points.length > MAX_KEY_IN_MESSAGE ? `${points.slice(0, MAX_KEY_IN_MESSAGE).join('')}…` : key;
    return `${JSON.stringify(shown)}: unknown field for op ${op ?? '(unknown)'}`;
  }
  const field = err.instancePath.split('/')[1] ?? '';
  if (field === '') return `request: ${err.message ?? 'invalid'}`;
  return fieldRule(field, channels) ?? `${field}: ${err.message ?? 'invalid'}`;
}
