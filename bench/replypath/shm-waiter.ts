/**
 * Worker thread of the `shm` reply path (consumer side): sleeps in futex(FUTEX_WAIT) on the
 * ring's SEQ word until the producer publishes, then wakes the main thread through a
 * SharedArrayBuffer (Atomics.notify; the main thread waits in Atomics.waitAsync) and waits
 * until the main thread has drained the ring. The same two-hop wake-up as src/ipc's receiver
 * thread, with futex in place of msgrcv. ctl: Int32 [STOP, PENDING].
 */
import { workerData } from 'node:worker_threads';
import { futexWait, mapShm, seqOf, timespec, unread } from './shm';

const STOP = 0;
const PENDING = 1;
const { path, ctl: sab } = workerData as { path: string; ctl: SharedArrayBuffer };
const ctl = new Int32Array(sab);
const m = mapShm(path, false);
const slice = timespec(100); // recheck STOP every 100 ms

while (Atomics.load(ctl, STOP) === 0) {
  const seen = seqOf(m); // read before looking at the ring: a later publish changes SEQ, so the wait returns at once
  if (unread(m) > 0) {
    Atomics.store(ctl, PENDING, 1);
    Atomics.notify(ctl, PENDING);
    while (Atomics.load(ctl, PENDING) === 1 && Atomics.load(ctl, STOP) === 0) Atomics.wait(ctl, PENDING, 1, 100);
    continue;
  }
  futexWait(m, seen, slice);
}
