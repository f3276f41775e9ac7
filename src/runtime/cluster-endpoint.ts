import type { Config } from '../config';
import { Endpoint } from '../ipc/endpoint';
import { newIncarnation } from '../ipc/envelope';
import type { SysvQueue } from '../ipc/sysv/sysv-queue';
import type { InlineSpec } from '../ipc/sysv/sysv-receiver';
import { SysvTransport, defaultSysvTransportOptions } from '../ipc/sysv/sysv-transport';
import type { Receiver } from '../ipc/transport';
import type { Logger } from '../log';
import { openClusterQueue } from './cluster-queue';

export interface ClusterEndpoint {
  readonly queue: SysvQueue;
  readonly transport: SysvTransport;
  readonly endpoint: Endpoint;
  readonly incarnation: number;
  /** Closes the endpoint, then the transport (receiver threads). */
  close(): Promise<void>;
}

/**
 * A daemon's address on the cluster's queue: the queue by MQ_KEY, its transport, an endpoint
 * on `mtype`. `inline`, given the incarnation, names a handler for the receiver thread
 * (SysvReceiverOptions.inline).
 */
export function openClusterEndpoint(config: Config, log: Logger, mtype: number, inline?: (incarnation: number) => InlineSpec): ClusterEndpoint {
  const queue = openClusterQueue(config, log);
  const incarnation = newIncarnation();
  const transport = new SysvTransport(queue, {
    ...defaultSysvTransportOptions,
    receiver: { ...defaultSysvTransportOptions.receiver, ...(inline ? { inline: inline(incarnation) } : {}) },
    onSendError: (err) => log.error({ err }, 'queued sends failed'),
  });
  const endpoint = new Endpoint(transport, { mtype, incarnation, maxBatchBytes: config.mqBatchBytes });
  return {
    queue,
    transport,
    endpoint,
    incarnation,
    async close() {
      await endpoint.close();
      await transport.close();
    },
  };
}

/**
 * A receiver that ends by itself (the queue was removed, its thread died) leaves the process
 * deaf: exit, and PM2 restarts it on a fresh queue.
 */
export function exitWhenReceiverEnds(receiver: Receiver | undefined, log: Logger): void {
  void receiver?.ended.then((end) => {
    if (end.reason === 'closed') return;
    log.fatal({ end, mtype: receiver.mtype }, 'queue receiver ended; exiting so PM2 restarts us on a fresh queue');
    process.exit(1);
  });
}
