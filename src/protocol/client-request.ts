/** Request ops and shapes of PROTOCOL.md; schemas/client-request.json is the runtime check. */

export const REQUEST_OPS = ['login', 'find', 'chat', 'whisper', 'move', 'ping', 'logout'] as const;
export type RequestOp = (typeof REQUEST_OPS)[number];

export const MAX_REQUEST_ID = 2 ** 31 - 1;
export const TEXT_MAX_CODE_POINTS = 500;

export type LoginRequest = { op: 'login'; id: number; name: string; channel: number };
export type FindRequest = { op: 'find'; id: number; name: string };
export type ChatRequest = { op: 'chat'; id: number; text: string };
export type WhisperRequest = { op: 'whisper'; id: number; to: string; text: string };
export type MoveRequest = { op: 'move'; id: number; channel: number };
export type PingRequest = { op: 'ping'; id: number };
export type LogoutRequest = { op: 'logout'; id: number };

export type ClientRequest =
  | LoginRequest
  | FindRequest
  | ChatRequest
  | WhisperRequest
  | MoveRequest
  | PingRequest
  | LogoutRequest;

export function isRequestOp(value: unknown): value is RequestOp {
  return typeof value === 'string' && (REQUEST_OPS as readonly string[]).includes(value);
}

export function isRequestId(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 0 && (value as number) <= MAX_REQUEST_ID;
}
