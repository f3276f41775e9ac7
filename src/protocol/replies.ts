import type { ClientErrorCode } from '../errors';

/** Builders for every frame the server sends; the wire shapes of PROTOCOL.md in one place. */

export type ErrorBody = { code: ClientErrorCode; message: string };

/** Reply fields may not shadow the envelope. */
export type ReplyFields = Record<string, unknown> & { op?: never; id?: never; ok?: never };

export type OkReply<F extends ReplyFields = Record<never, never>> = { op: string; id: number; ok: true } & F;
export type ErrorReply = { op?: string; id: number | null; ok: false; error: ErrorBody };
export type ErrorPush = { op: 'error'; ok: false; error: ErrorBody };
export type MessagePush = { op: 'message'; from: string; channel: number; text: string };
export type WhisperPush = { op: 'whisper'; from: string; text: string };

export function okReply<F extends ReplyFields = Record<never, never>>(op: string, id: number, fields?: F): OkReply<F> {
  // Envelope first for readable key order, then again last so that an untyped caller
  // cannot override it through `fields`.
  return Object.assign({ op, id, ok: true }, fields, { op, id, ok: true }) as OkReply<F>;
}

/** `op` is left out entirely (not set to undefined) when the request had no valid op. */
export function errorReply(op: string | undefined, id: number | null, code: ClientErrorCode, message: string): ErrorReply {
  const error = { code, message };
  return op === undefined ? { id, ok: false, error } : { op, id, ok: false, error };
}

/** Sent before the server closes a connection; a push, so it has no id. */
export function errorPush(code: ClientErrorCode, message: string): ErrorPush {
  return { op: 'error', ok: false, error: { code, message } };
}

export function messagePush(from: string, channel: number, text: string): MessagePush {
  return { op: 'message', from, channel, text };
}

export function whisperPush(from: string, text: string): WhisperPush {
  return { op: 'whisper', from, text };
}
