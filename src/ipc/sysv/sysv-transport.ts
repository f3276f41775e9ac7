import { QueueTransport, defaultBacklogOptions, type BacklogOptions } from '../queue-transport';
import type { BatchHandler, Receiver } from '../transport';
import type { SysvQueue } from './sysv-queue';
import { SysvReceiver, defaultReceiverOptions, type SysvReceiverOptions } from './sysv-receiver';

export interface SysvTransportOptions extends BacklogOptions {
  receiver: SysvReceiverOptions;
}

export const defaultSysvTransportOptions: SysvTransportOptions = Object.freeze({
  ...defaultBacklogOptions,
  receiver: defaultReceiverOptions,
});

/** The real transport: one System V queue, a receiver thread per mtype, a bounded backlog. */
export class SysvTransport extends QueueTransport<SysvQueue> {
  constructor(
    queue: SysvQueue,
    private readonly options: SysvTransportOptions = defaultSysvTransportOptions,
  ) {
    super(queue, options);
  }

  protected openReceiver(mtype: number, onBatch: BatchHandler): Receiver {
    return new SysvReceiver(this.queue, mtype, onBatch, this.options.receiver, this.sendDeferred);
  }

  /** A receiver thread's inline handler met a full queue: the backlog takes its message. */
  private readonly sendDeferred = (mtype: number, body: Uint8Array): void => {
    try {
      this.send(mtype, body);
    } catch (err) {
      // Backlog full or transport closed: dropped, its asker times out.
      this.options.onSendError(err as Error);
    }
  };
}
