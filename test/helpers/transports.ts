import {
  LocalQueue,
  LocalTransport,
  SysvTransport,
  defaultSysvTransportOptions,
  readKernelLimit,
  type MessageTransport,
  type QueueStat,
} from '../../src/ipc';
import { DEFAULT_HANDOVER, type Handover } from '../../src/ipc/sysv/sysv-receiver';
import { useQueues } from './queues';

export interface RigOptions {
  backlogMessages?: number;
  backlogBytes?: number;
  onSendError?: (err: Error) => void;
}

/** One fresh queue and `n` transports on it, as `n` processes would hold. */
export interface Rig {
  readonly transports: MessageTransport[];
  /** Removes the queue under the transports (IPC_RMID, or its local stand-in). */
  removeQueue(): void;
  /** The queue's figures, read without going through any transport. */
  stat(): QueueStat;
  /** A message that bypasses every transport (as a foreign process would write it). Returns false when full. */
  rawSend(mtype: number, body: Uint8Array): boolean;
}

export interface TransportImpl {
  readonly name: string;
  /** Queue capacity in bytes that a fresh queue gets. */
  readonly capacity: number;
  /**
   * Call inside a `describe`: registers the cleanup (transports closed, queue removed, after
   * each test even on failure) and returns the rig factory.
   */
  setup(): (n: number, options?: RigOptions) => Rig;
}

/** The real transport, with one hand-over from receiver thread to main thread. */
function sysvWith(handover: Handover): TransportImpl {
  return {
    name: `SysvTransport (${handover} hand-over)`,
    capacity: readKernelLimit('msgmnb', 16384),
    setup() {
      const scope = useQueues();
      return (n, options = {}) => {
        const queue = scope.create();
        const receiver = { ...defaultSysvTransportOptions.receiver, handover };
        const transports = Array.from({ length: n }, () =>
          scope.track(new SysvTransport(queue, { ...defaultSysvTransportOptions, receiver, ...options })),
        );
        return {
          transports,
          removeQueue: () => queue.remove(),
          stat: () => queue.stat(),
          rawSend: (mtype, body) => queue.trySend(mtype, body),
        };
      };
    },
  };
}

/** The default hand-over (the faster one, docs/benchmarks.md) and the other one. */
export const sysvImpl: TransportImpl = sysvWith(DEFAULT_HANDOVER);
export const sysvOtherImpl: TransportImpl = sysvWith(DEFAULT_HANDOVER === 'ring' ? 'post' : 'ring');

export const localImpl: TransportImpl = {
  name: 'LocalTransport',
  // Same figures as this host's kernel, so that both implementations fill up alike.
  capacity: readKernelLimit('msgmnb', 16384),
  setup() {
    const scope = useQueues();
    return (n, options = {}) => {
      const queue = new LocalQueue(readKernelLimit('msgmnb', 16384), readKernelLimit('msgmax', 8192));
      const transports = Array.from({ length: n }, () => scope.track(new LocalTransport(queue, options)));
      return {
        transports,
        removeQueue: () => queue.remove(),
        stat: () => queue.stat(),
        rawSend: (mtype, body) => queue.trySend(mtype, body),
      };
    };
  },
};

export const transportImpls: readonly TransportImpl[] = [sysvImpl, sysvOtherImpl, localImpl];
