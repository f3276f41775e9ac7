/**
 * The reply paths of docs/reply-path.md, behind src/ipc's MessageTransport so that the
 * unchanged Endpoint runs on both sides of every variant:
 *
 *   queue     SysvTransport alone: requests and replies on the one System V queue.
 *   uds       requests on the queue; a shard's sends to a front's mtype go to that front's
 *             Unix stream socket instead: everything sent in one turn is written with one
 *             write (records `u32 length, envelope`); the front's main thread reads the
 *             socket (no thread).
 *   shm       requests on the queue; replies through a shared-memory ring per front
 *             (shm.ts), published once per turn with one FUTEX_WAKE; the front's worker
 *             thread (shm-waiter.ts) sleeps in FUTEX_WAIT and wakes the main thread.
 *   shm-poll  the same ring, no thread and no futex: the front's main thread polls the ring
 *             every event-loop turn (setImmediate) and backs off to a 1 ms timer after
 *             SPIN_TURNS empty turns.
 *
 * ReplyPathTransport wraps a SysvTransport: `send` to an mtype that has a sink goes to the
 * sink; `receive` of the own mtype merges the queue receiver and the side channel. That is
 * the shape a product option would take (docs/reply-path.md, "Decision").
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { BatchHandler, MessageTransport, QueueStat, Receiver, ReceiverEnd, ReceivedMessage, TransportCounters } from '../../src/ipc';
import { RingConsumer, RingProducer, mapShm } from './shm';

export type ReplyPath = 'queue' | 'uds' | 'shm' | 'shm-poll';
export const REPLY_PATHS: readonly ReplyPath[] = ['queue', 'uds', 'shm', 'shm-poll'];

/** Where a shard's replies to one front go instead of the queue. */
export interface ReplySink {
  write(body: Uint8Array): void;
  close(): void;
}

/** The front's end of a side channel: hands batches to the Endpoint's handler. */
export interface ReplySource {
  start(mtype: number, onBatch: BatchHandler): void;
  close(): Promise<void>;
  stats(): Record<string, number>;
}

export class ReplyPathTransport implements MessageTransport {
  constructor(
    private readonly inner: MessageTransport,
    private readonly sinks: ReadonlyMap<number, ReplySink>,
    private readonly source?: ReplySource,
  ) {}

  get maxMessageBytes(): number {
    return this.inner.maxMessageBytes;
  }

  send(mtype: number, body: Uint8Array): void {
    const sink = this.sinks.get(mtype);
    if (sink) sink.write(body);
    else this.inner.send(mtype, body);
  }

  receive(mtype: number, onBatch: BatchHandler): Receiver {
    const r = this.inner.receive(mtype, onBatch);
    if (!this.source) return r;
    this.source.start(mtype, onBatch);
    const source = this.source;
    return {
      mtype,
      ended: r.ended as Promise<ReceiverEnd>,
      close: async () => {
        await Promise.all([r.close(), source.close()]);
      },
    };
  }

  stat(): QueueStat {
    return this.inner.stat();
  }

  counters(): TransportCounters {
    return this.inner.counters();
  }

  async close(): Promise<void> {
    for (const s of this.sinks.values()) s.close();
    await this.source?.close();
    await this.inner.close();
  }
}

// ---------------------------------------------------------------------------------------------
// uds

/** Shard side: one connection to the front's socket; one write per turn. */
export function udsSink(path: string): Promise<ReplySink & { writes: () => number }> {
  return new Promise((resolve, reject) => {
    const sock: Socket = createConnection(path);
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let scheduled = false;
    let writes = 0;
    const flush = (): void => {
      scheduled = false;
      const out = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      writes++;
      sock.write(out);
    };
    sock.once('error', reject);
    sock.once('connect', () => {
      sock.removeListener('error', reject);
      sock.on('error', () => {}); // the front went away: the run is over
      resolve({
        write(body: Uint8Array): void {
          // Copied now: the Endpoint reuses its envelope buffer once send() returns.
          const b = Buffer.allocUnsafe(4 + body.byteLength);
          b.writeUInt32LE(body.byteLength, 0);
          b.set(body, 4);
          pending.push(b);
          pendingBytes += b.length;
          if (!scheduled) {
            scheduled = true;
            queueMicrotask(flush); // after the Endpoint's flush loop: one write per turn
          }
        },
        close: () => sock.destroy(),
        writes: () => writes,
      });
    });
  });
}

/** Front side: listens on `path` and reads length-prefixed envelopes on its main thread. */
export function udsSource(path: string): { source: ReplySource; listening: Promise<void> } {
  let onBatch: BatchHandler | undefined;
  let mtype = 0;
  let reads = 0;
  let records = 0;
  const conns = new Set<Socket>();
  const server: Server = createServer((sock) => {
    conns.add(sock);
    sock.on('close', () => conns.delete(sock));
    sock.on('error', () => {});
    let carry: Buffer | undefined;
    sock.on('data', (chunk: Buffer) => {
      reads++;
      let buf = carry ? Buffer.concat([carry, chunk]) : chunk;
      carry = undefined;
      const batch: ReceivedMessage[] = [];
      let at = 0;
      while (buf.length - at >= 4) {
        const len = buf.readUInt32LE(at);
        if (buf.length - at - 4 < len) break;
        // A view into this chunk: every chunk is a Buffer of its own, never reused.
        batch.push({ mtype, body: buf.subarray(at + 4, at + 4 + len) });
        at += 4 + len;
      }
      if (at < buf.length) carry = Buffer.from(buf.subarray(at));
      buf = Buffer.alloc(0);
      records += batch.length;
      if (batch.length > 0) onBatch?.(batch);
    });
  });
  const listening = new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  return {
    listening,
    source: {
      start(m, h) {
        mtype = m;
        onBatch = h;
      },
      close: () =>
        new Promise<void>((resolve) => {
          for (const c of conns) c.destroy();
          server.close(() => resolve());
        }),
      stats: () => ({ reads, envelopes: records }),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// shm

/** Shard side: the producer end of the front's ring; publishes once per turn. */
export function shmSink(path: string, wake: boolean): ReplySink & { producer: RingProducer } {
  const producer = new RingProducer(mapShm(path, false), wake);
  let scheduled = false;
  const publish = (): void => {
    scheduled = false;
    producer.publish();
  };
  return {
    producer,
    write(body) {
      producer.write(body);
      if (!scheduled) {
        scheduled = true;
        queueMicrotask(publish);
      }
    },
    close() {},
  };
}

/** Atomics.waitAsync: in Node 20, not in the project's lib setting (ES2022). */
type WaitAsyncResult = { async: false; value: string } | { async: true; value: Promise<string> };
const waitAsync = (Atomics as unknown as { waitAsync: (a: Int32Array, i: number, v: number) => WaitAsyncResult }).waitAsync;

/** Front side, woken by a futex-waiting worker thread. The ring file must exist (mapShm create). */
export function shmSource(path: string): ReplySource {
  const consumer = new RingConsumer(mapShm(path, false));
  const ctl = new Int32Array(new SharedArrayBuffer(8));
  let worker: Worker | undefined;
  let wakes = 0;
  let envelopes = 0;
  let stopped = false;
  return {
    start(mtype, onBatch) {
      worker = new Worker(join(__dirname, 'shm-waiter.js'), { workerData: { path, ctl: ctl.buffer } });
      worker.unref();
      const onWake = (): void => {
        if (stopped) return;
        wakes++;
        const bodies = consumer.drain();
        Atomics.store(ctl, 1, 0);
        Atomics.notify(ctl, 1);
        envelopes += bodies.length;
        if (bodies.length > 0) onBatch(bodies.map((body) => ({ mtype, body })));
        arm();
      };
      const arm = (): void => {
        const w = waitAsync(ctl, 1, 0);
        if (w.async) void w.value.then(onWake);
        else setImmediate(onWake);
      };
      arm();
    },
    async close() {
      stopped = true;
      Atomics.store(ctl, 0, 1);
      Atomics.notify(ctl, 1);
      await worker?.terminate();
    },
    stats: () => ({ wakes, envelopes }),
  };
}

/** Empty polls before the poller backs off from every turn to a 1 ms timer. */
export const SPIN_TURNS = 2000;

/** Front side, polled by the main thread: no thread, no syscall of its own. */
export function shmPollSource(path: string): ReplySource {
  const consumer = new RingConsumer(mapShm(path, false));
  let stopped = false;
  let polls = 0;
  let backoffs = 0;
  let envelopes = 0;
  return {
    start(mtype, onBatch) {
      let empty = 0;
      const poll = (): void => {
        if (stopped) return;
        polls++;
        const bodies = consumer.drain();
        if (bodies.length > 0) {
          empty = 0;
          envelopes += bodies.length;
          onBatch(bodies.map((body) => ({ mtype, body })));
        } else empty++;
        if (empty < SPIN_TURNS) setImmediate(poll);
        else {
          backoffs++;
          empty = 0;
          setTimeout(poll, 1);
        }
      };
      setImmediate(poll);
    },
    async close() {
      stopped = true;
    },
    stats: () => ({ polls, backoffs, envelopes }),
  };
}
