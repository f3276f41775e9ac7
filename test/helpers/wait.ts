/**
 * Waiting helpers for tests: poll a condition, or count events down (a latch, after
 * nats.js's `Lock(count, ms)`). Both reject with a readable error on timeout, never hang.
 */
import { withTimeout } from '../../src/with-timeout';

export { withTimeout };

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Resolves once `predicate()` is true; rejects after `timeoutMs`. The predicate is checked
 * at once and then every `intervalMs`. A throwing predicate rejects at once.
 */
export async function waitFor(predicate: () => boolean, timeoutMs = 5000, intervalMs = 5, what = 'condition'): Promise<void> {
  const start = Date.now();
  for (;;) {
    if (predicate()) return;
    const waited = Date.now() - start;
    if (waited >= timeoutMs) throw new Error(`waitFor: ${what} not met after ${waited} ms`);
    await sleep(Math.min(intervalMs, timeoutMs - waited));
  }
}

/** A countdown latch: `wait()` resolves once `countDown()` has been called `count` times. */
export class Latch {
  private remaining: number;
  private readonly done: Promise<void>;
  private release!: () => void;

  constructor(count: number) {
    if (!(Number.isInteger(count) && count >= 0)) throw new RangeError(`latch count ${count} must be a non-negative integer`);
    this.remaining = count;
    this.done = new Promise((resolve) => (this.release = resolve));
    if (count === 0) this.release();
  }

  get count(): number {
    return this.remaining;
  }

  countDown(n = 1): void {
    if (this.remaining === 0) return;
    this.remaining = Math.max(0, this.remaining - n);
    if (this.remaining === 0) this.release();
  }

  /** Resolves when the count reaches 0; rejects with the count left after `timeoutMs`. */
  wait(timeoutMs: number): Promise<void> {
    return withTimeout(this.done, timeoutMs, `latch (${this.remaining} left)`).catch((err: Error) => {
      throw new Error(`latch: ${this.remaining} count(s) left after ${timeoutMs} ms`, { cause: err });
    });
  }
}
