/**
 * Coded errors. Two families:
 * - ClientErrorCode: the wire codes of PROTOCOL.md, which a client sees in `error.code`.
 * - internal errors (IPC, configuration) carry their own `code` and map to a wire code
 *   through `toClientCode()` where they reach a client.
 */

export const ClientErrorCode = {
  BAD_FRAME: 'BAD_FRAME',
  BAD_REQUEST: 'BAD_REQUEST',
  NOT_LOGGED_IN: 'NOT_LOGGED_IN',
  ALREADY_LOGGED_IN: 'ALREADY_LOGGED_IN',
  NAME_TAKEN: 'NAME_TAKEN',
  NOT_FOUND: 'NOT_FOUND',
  UNKNOWN_COMMAND: 'UNKNOWN_COMMAND',
  RATE_LIMITED: 'RATE_LIMITED',
  TIMEOUT: 'TIMEOUT',
  UNAVAILABLE: 'UNAVAILABLE',
  INTERNAL: 'INTERNAL',
} as const;
export type ClientErrorCode = (typeof ClientErrorCode)[keyof typeof ClientErrorCode];

/** An error that is meant to reach a client as `{ code, message }`. */
export class ClientError extends Error {
  override readonly name = 'ClientError';
  constructor(
    readonly code: ClientErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Invalid configuration: names every offending setting. Raised once, at start. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code = 'CHAT_ERR_CONFIG';
  constructor(
    message: string,
    readonly problems: readonly string[],
  ) {
    super(message);
  }
}

/** Maps any error to the wire code a client should see. */
export function toClientCode(err: unknown): ClientErrorCode {
  if (err instanceof ClientError) return err.code;
  const code = (err as { clientCode?: unknown } | null)?.clientCode;
  if (typeof code === 'string' && code in ClientErrorCode) return code as ClientErrorCode;
  return ClientErrorCode.INTERNAL;
}
