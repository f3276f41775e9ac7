import type { Config } from '../config';
import { Endpoint } from '../ipc/endpoint';
import { newIncarnation } from '../ipc/envelope';
import { NatsTransport, defaultNatsTransportOptions } from '../ipc/nats/nats-transport';
import type { SysvQueue } from '../ipc/sysv/sysv-queue';
import type { InlineSpec } from '../ipc/sysv/sysv-receiver';
import { SysvTransport, defaultSysvTransportOptions } from '../ipc/sysv/sysv-transport';
import type { MessageTransport, Receiver } from '../ipc/transport';
import type { Logger } from '../log';
import { openClusterQueue } from './cluster-queue';

export interface ClusterEndpoint {
  /** `sysv` or `nats` (TRANSPORT). */
  readonly kind: Config['transport'];
  /** The cluster's transport: the host's queue, or a NATS connection. */
  readonly transport: MessageTransport;
  /** The host's SysV queue when it carries the cluster (TRANSPORT=sysv); undefined on NATS. */
  readonly queue: SysvQueue | undefined;
  readonly endpoint: Endpoint;
  readonly incarnation: number;
  /** Closes the endpoint, then the transport (receiver threads, or the NATS connection). */
  close(): Promise<void>;
}

function sysvTransport(queue: SysvQueue, log: Logger, inline?: InlineSpec): SysvTransport {
  return new SysvTransport(queue, {
    ...defaultSysvTransportOptions,
    receiver: { ...defaultSysvTransportOptions.receiver, ...(inline ? { inline } : {}) },
    onSendError: (err) => log.error({ err }, 'queued sends failed'),
  });
}

/**
 * A daemon's address on the cluster: with TRANSPORT=sysv the queue by MQ_KEY and its
 * transport, with TRANSPORT=nats a connection to NATS_URL (subjects under CLUSTER_NAME); an
 * endpoint on `mtype` either way. `inline`, given the incarnation, names a handler for the
 * receiver thread (SysvReceiverOptions.inline); NATS has no receiver thread, so it is unused
 * there and those messages reach the main thread's handler.
 */
export async function openClusterEndpoint(
  config: Config,
  log: Logger,
  mtype: number,
  inline?: (incarnation: number) => InlineSpec,
): Promise<ClusterEndpoint> {
  const incarnation = newIncarnation();
  let transport: MessageTransport;
  let queue: SysvQueue | undefined;
  if (config.transport === 'nats') {
    transport = await NatsTransport.connect(
      { url: config.natsUrls.join(','), cluster: config.clusterName, name: `chatd-cluster ${config.clusterName} mtype ${mtype} pid ${process.pid}`, log: log.child({ component: 'nats' }) },
      { ...defaultNatsTransportOptions, onSendError: (err) => log.error({ err }, 'queued sends failed') },
    );
  } else {
    queue = openClusterQueue(config, log);
    transport = sysvTransport(queue, log, inline?.(incarnation));
  }
  const endpoint = new Endpoint(transport, { mtype, incarnation, maxBatchBytes: config.mqBatchBytes });
  return {
    kind: config.transport,
    transport,
    queue,
    endpoint,
    incarnation,
    async close() {
      await endpoint.close();
      await transport.close();
    },
  };
}

export interface HostQueue {
  readonly queue: SysvQueue;
  /** A transport on it: the cluster's own with TRANSPORT=sysv, a second one with TRANSPORT=nats. */
  readonly transport: MessageTransport;
  /** Closes the transport if it was opened here (never the cluster's). */
  close(): Promise<void>;
}

/**
 * The host's SysV queue (MQ_KEY), for what stays on one host whatever carries the cluster:
 * the legacy C peers' mtypes 1 and 2 (chatD's legacy gateway) and gc's queue hygiene.
 */
export function openHostQueue(config: Config, log: Logger, ce: ClusterEndpoint): HostQueue {
  if (ce.queue) return { queue: ce.queue, transport: ce.transport, close: async () => {} };
  const queue = openClusterQueue(config, log);
  const transport = sysvTransport(queue, log);
  return { queue, transport, close: () => transport.close() };
}

/**
 * A receiver that ends by itself (the queue was removed, its thread died, the NATS
 * connection closed for good) leaves the process deaf: exit, and PM2 restarts it.
 */
export function exitWhenReceiverEnds(receiver: Receiver | undefined, log: Logger): void {
  void receiver?.ended.then((end) => {
    if (end.reason === 'closed') return;
    log.fatal({ end, mtype: receiver.mtype }, 'queue receiver ended; exiting so PM2 restarts us on a fresh queue');
    process.exit(1);
  });
}
