import {
  LocalQueue,
  LocalTransport,
  SysvTransport,
  defaultSysvTransportOptions,
  readKernelLimit,
  type MessageTransport,
  type QueueStat,
} from '../../src/ipc';
import { NatsTransport, defaultNatsTransportOptions } from '../../src/ipc/nats/nats-transport';
import { DEFAULT_HANDOVER, type Handover } from '../../src/ipc/sysv/sysv-receiver';
import { useNatsServer } from './nats-server';
import { useQueues } from './queues';

export interface RigOptions {
  backlogMessages?: number;
  backlogBytes?: number;
  onSendError?: (err: Error) => void;
}

/** One fresh queue and `n` transports on it, as `n` processes would hold. */
export interface Rig {
  readonly transports: MessageTransport[];
  /** Removes the queue under the transports (IPC_RMID, or its local stand-in; NATS: closes the connections). */
  removeQueue(): void | Promise<void>;
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
   * The queue keeps messages nobody receives yet, counts them, and fills up (a kernel queue).
   * false for NATS: the server stores nothing and a send waits in the backlog only while the
   * connection is down; the tests that need a stored or full queue are skipped for it.
   */
  readonly retains: boolean;
  /** `ReceiverEnd.code` of a receiver whose queue went away. */
  readonly removedCode: string;
  /**
   * Call inside a `describe`: registers the cleanup (transports closed, queue removed, after
   * each test even on failure) and returns the rig factory.
   */
  setup(): (n: number, options?: RigOptions) => Promise<Rig>;
}

/** A kernel-like transport, whose rigs can be made synchronously (endpoint.test.ts does). */
export interface SyncTransportImpl extends TransportImpl {
  setupSync(): (n: number, options?: RigOptions) => Rig;
}

/** The real transport, with one hand-over from receiver thread to main thread. */
function sysvWith(handover: Handover): SyncTransportImpl {
  const impl: SyncTransportImpl = {
    name: `SysvTransport (${handover} hand-over)`,
    capacity: readKernelLimit('msgmnb', 16384),
    retains: true,
    removedCode: 'EIDRM',
    setup() {
      const make = impl.setupSync();
      return async (n, options) => make(n, options);
    },
    setupSync() {
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
  return impl;
}

/** The default hand-over (the faster one, docs/benchmarks.md) and the other one. */
export const sysvImpl: SyncTransportImpl = sysvWith(DEFAULT_HANDOVER);
export const sysvOtherImpl: SyncTransportImpl = sysvWith(DEFAULT_HANDOVER === 'ring' ? 'post' : 'ring');

export const localImpl: SyncTransportImpl = {
  name: 'LocalTransport',
  // Same figures as this host's kernel, so that both implementations fill up alike.
  capacity: readKernelLimit('msgmnb', 16384),
  retains: true,
  removedCode: 'EIDRM',
  setup() {
    const make = localImpl.setupSync();
    return async (n, options) => make(n, options);
  },
  setupSync() {
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

/**
 * NATS: a real nats-server for the suite (killed by pid in `after`), one connection per
 * transport (as one per process), a fresh cluster name per rig so rigs never hear each other.
 * "Queue removed" is every connection of the rig closed for good.
 */
export const natsImpl: TransportImpl = {
  name: 'NatsTransport',
  // Unsent bytes a connection may hold before sends wait in the backlog: the kernel's figure,
  // so that the backlog tests fill it alike (the daemons use 1 MiB).
  capacity: readKernelLimit('msgmnb', 16384),
  retains: false,
  removedCode: 'CONNECTION_CLOSED',
  setup() {
    const nats = useNatsServer();
    const scope = useQueues();
    let rigs = 0;
    return async (n, options = {}) => {
      const cluster = `t${process.pid}-${++rigs}`;
      const transports = await Promise.all(
        Array.from({ length: n }, () =>
          NatsTransport.connect({ url: nats.server.url, cluster, pendingBytes: natsImpl.capacity }, { ...defaultNatsTransportOptions, ...options }),
        ),
      );
      for (const t of transports) scope.track(t);
      return {
        transports,
        removeQueue: async () => {
          await Promise.all(transports.map((t) => t.queue.nc.close()));
          await new Promise((resolve) => setImmediate(resolve)); // the closed() watchers have run
        },
        stat: () => transports[0]!.stat(),
        rawSend: (mtype, body) => {
          transports[0]!.queue.nc.publish(transports[0]!.queue.subject(mtype), body);
          return true;
        },
      };
    };
  },
};

export const transportImpls: readonly TransportImpl[] = [sysvImpl, sysvOtherImpl, localImpl, natsImpl];
