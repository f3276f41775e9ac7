import { SysvQueue } from '../../src/ipc';
import { withTimeout } from './wait';

/** Anything a test opens on a queue and must close before the queue goes: transports, endpoints. */
export interface Closeable {
  close(): Promise<void>;
}

export interface QueueScope {
  /** A new private queue (IPC_PRIVATE), removed by id after the test (or the suite, from a `before` hook). */
  create(mode?: number): SysvQueue;
  /** Takes a queue made some other way (a keyed `SysvQueue.open`) into the same cleanup. */
  adopt(queue: SysvQueue): SysvQueue;
  /** Closes `closeable` at cleanup, before the queues are removed. Returns it, for chaining. */
  track<T extends Closeable>(closeable: T): T;
  /** Ids of the queues made through this scope and not yet cleaned up. */
  liveIds(): number[];
}

/** Bound on one close at cleanup: a receiver that will not stop is a bug worth a failure. */
const CLOSE_TIMEOUT_MS = 3000;

/** Every queue any scope made and has not yet removed: the exit handler's safety net. */
const everyLiveQueue = new Map<number, SysvQueue>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const q of everyLiveQueue.values()) {
      try {
        q.remove();
      } catch {
        /* nothing more can be done at exit */
      }
    }
  });
}

interface Resources {
  queues: SysvQueue[];
  closeables: Closeable[];
}

async function release(res: Resources): Promise<void> {
  const closeables = res.closeables.splice(0);
  const queues = res.queues.splice(0);
  const errors: unknown[] = [];
  try {
    // Last opened, first closed: endpoints before the transports under them.
    for (const c of closeables.reverse()) {
      try {
        await withTimeout(c.close(), CLOSE_TIMEOUT_MS, 'close at cleanup');
      } catch (err) {
        errors.push(err);
      }
    }
  } finally {
    // Removal happens whatever the closes did; it also wakes any receiver thread still blocked.
    for (const q of queues) {
      try {
        q.remove();
        everyLiveQueue.delete(q.id);
      } catch (err) {
        errors.push(err);
      }
    }
  }
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new AggregateError(errors, `${errors.length} cleanup failures`);
}

/**
 * Call at the top of a mocha `describe`. Queues and closeables made inside a test (or its
 * `beforeEach`) are cleaned up in `afterEach`; those made in a `before` hook, in `after`.
 * Cleanup runs even when the test failed: closes first (bounded), then IPC_RMID by id.
 */
export function useQueues(): QueueScope {
  installExitHook();
  const perTest: Resources = { queues: [], closeables: [] };
  const perSuite: Resources = { queues: [], closeables: [] };
  let current = perSuite;

  beforeEach(() => {
    current = perTest;
  });
  afterEach(async () => {
    current = perSuite;
    await release(perTest);
  });
  after(async () => {
    await release(perSuite);
  });

  const adopt = (queue: SysvQueue): SysvQueue => {
    current.queues.push(queue);
    everyLiveQueue.set(queue.id, queue);
    return queue;
  };
  // Plain closures, so that `const { create } = useQueues()` works too.
  return {
    create: (mode = 0o600) => adopt(SysvQueue.createPrivate(mode)),
    adopt,
    track: <T extends Closeable>(closeable: T): T => {
      current.closeables.push(closeable);
      return closeable;
    },
    liveIds: () => [...perTest.queues, ...perSuite.queues].map((q) => q.id),
  };
}
