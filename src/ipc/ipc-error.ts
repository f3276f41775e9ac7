/**
 * Errors of the queue layer. `code` is the errno name where the kernel said no
 * (EAGAIN, EIDRM, E2BIG, EACCES, ...) or one of the layer's own codes; `clientCode`
 * is what a client should see when the failure reaches it.
 */
export class IpcError extends Error {
  override readonly name: string = 'IpcError';
  constructor(
    readonly code: string,
    message: string,
    readonly syscall?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
  /** Every queue failure that reaches a client means: not now, retry later (RequestError adds TIMEOUT). */
  get clientCode(): 'UNAVAILABLE' | 'TIMEOUT' {
    return 'UNAVAILABLE';
  }
}

/** The local send backlog is full: the queue has been full for too long. */
export class BacklogFullError extends IpcError {
  override readonly name = 'BacklogFullError';
  constructor(messages: number, bytes: number) {
    super('BACKLOG_FULL', `send backlog full (${messages} messages, ${bytes} bytes waiting for queue space)`);
  }
}

/** The transport was closed, or its queue removed, before the send. */
export class TransportClosedError extends IpcError {
  override readonly name = 'TransportClosedError';
  constructor(reason: string, options?: { cause?: unknown }) {
    super('TRANSPORT_CLOSED', `transport closed: ${reason}`, undefined, options);
  }
}

/**
 * A send failed because the queue is gone: removed (EIDRM), or its id no longer valid (EINVAL);
 * for the NATS transport, its connection closed for good (CONNECTION_CLOSED).
 */
export const isQueueGone = (err: unknown): boolean =>
  err instanceof IpcError &&
  ((err.syscall === 'msgsnd' && (err.code === 'EIDRM' || err.code === 'EINVAL')) || err.code === 'CONNECTION_CLOSED');

/** mtype as msgsnd takes it: a positive integer. Checked before a message can enter a backlog. */
export function checkMtype(mtype: number): void {
  if (!(Number.isSafeInteger(mtype) && mtype >= 1)) throw new IpcError('EINVAL', `mtype ${mtype} must be a positive integer`);
}
