/**
 * The kernel-message transport: what the cluster needs of "one System V message queue".
 * Three implementations: `SysvTransport` (the real queue, through koffi), `NatsTransport`
 * (subjects on a NATS server, for several hosts) and `LocalTransport` (in-process, for unit
 * tests of the layers above). All pass test/unit/ipc/transport-contract.test.ts.
 *
 * A message is (mtype, body). Bodies are opaque here; the envelope codec gives them meaning.
 */

export interface ReceivedMessage {
  readonly mtype: number;
  readonly body: Buffer;
}

export type BatchHandler = (batch: readonly ReceivedMessage[]) => void;

export interface ReceiverEnd {
  /** `closed`: we stopped it; `removed`: the queue went away (EIDRM/EINVAL); `error`: anything else. */
  readonly reason: 'closed' | 'removed' | 'error';
  /** errno name or layer code when there is one (`EIDRM`, ...). */
  readonly code?: string;
  readonly error?: Error;
}

export interface Receiver {
  readonly mtype: number;
  /** Settles once, when the receiver has stopped for any reason. Never rejects. */
  readonly ended: Promise<ReceiverEnd>;
  /**
   * Resolves once messages sent by other processes reach this receiver. Absent: at once (a
   * kernel queue keeps what is sent before anyone receives). NATS keeps nothing: a message
   * published before the server has the subscription is lost.
   */
  readonly ready?: Promise<void>;
  /** Stops receiving; resolves when stopped. Idempotent. */
  close(): Promise<void>;
}

export interface QueueStat {
  /** Messages in the queue now. */
  readonly messages: number;
  /** Bytes of message text in the queue now. */
  readonly bytes: number;
  /** Capacity in bytes (msg_qbytes). */
  readonly capacity: number;
  /** Permission bits, e.g. 0o600. */
  readonly mode: number;
  readonly lastSendPid: number;
  readonly lastReceivePid: number;
}

export interface TransportCounters {
  sent: number;
  received: number;
  /** Sends that found the queue full and waited in the backlog. */
  deferred: number;
  backlogMessages: number;
  backlogBytes: number;
}

export interface MessageTransport {
  /** The largest body one message may carry (the kernel's msgmax). */
  readonly maxMessageBytes: number;
  /**
   * Sends without ever blocking. When the queue is full the message waits in a bounded
   * local backlog (order kept) and goes out as space frees.
   * @throws BacklogFullError when the backlog is full; IpcError E2BIG when the body is too
   *   large; TransportClosedError after close() or once the queue is gone.
   */
  send(mtype: number, body: Uint8Array): void;
  /**
   * Sends at once or not at all: false when the queue is full or messages to `mtype` wait in
   * the backlog (never backlogs). Optional: traffic that may be shed uses it when present.
   */
  trySend?(mtype: number, body: Uint8Array): boolean;
  /**
   * Receives messages of `mtype` (one receiver per mtype and transport) and hands them
   * over in batches, in queue order.
   */
  receive(mtype: number, onBatch: BatchHandler): Receiver;
  /** Current queue figures. */
  stat(): QueueStat;
  /**
   * Optional: false while nothing sent can reach anyone (a NATS connection that is down). A
   * kernel queue has no such state and leaves it out. The Endpoint fails requests at once
   * (UNAVAILABLE) while it is false, instead of letting them wait for their timeout.
   */
  readonly reachable?: boolean;
  /** Optional, with `reachable`: `listener` is told each change of it; returns the unsubscribe. */
  onReachability?(listener: (reachable: boolean) => void): () => void;
  counters(): TransportCounters;
  /** Stops every receiver and drops the backlog. Does not remove the queue. */
  close(): Promise<void>;
}
