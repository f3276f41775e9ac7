import type { Config } from '../config';
import { SysvQueue } from '../ipc/sysv/sysv-queue';
import type { Logger } from '../log';

/**
 * Opens (or creates) the cluster's queue by MQ_KEY with the configured mode, refuses it when
 * another user could have made or may touch it (src/ipc/sysv/queue-trust.ts), and asks for
 * the configured capacity. Without CAP_SYS_RESOURCE the kernel keeps msgmnb (16 KiB by
 * default): the cluster still works, with more batching and backlog; the log says so.
 */
export function openClusterQueue(config: Pick<Config, 'mqKey' | 'mqMode' | 'mqCapacityBytes' | 'mqTrustedUids'>, log: Logger): SysvQueue {
  // Checks the owner, creator and mode before anything is sent or resized: a queue squatted by
  // another local user throws QueueTrustError, and exitOnFatal ends the daemon with its message.
  const queue = SysvQueue.open({ key: config.mqKey, mode: config.mqMode, create: true, trustedUids: config.mqTrustedUids });
  if (config.mqCapacityBytes > 0) {
    const got = queue.setCapacity(config.mqCapacityBytes);
    const fields = { mqKey: config.mqKey, queueId: queue.id, asked: config.mqCapacityBytes, capacity: got.capacity, msgmax: queue.maxMessageBytes };
    if (got.capacity < config.mqCapacityBytes) {
      log.info({ ...fields, code: got.code }, 'queue capacity not raised (needs CAP_SYS_RESOURCE or kernel.msgmnb; see ops/README.md)');
    } else {
      log.info(fields, 'queue capacity');
    }
  }
  return queue;
}
