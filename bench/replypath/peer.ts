/**
 * One process of a reply-path run, forked by bench/replypath/run.ts: the `front` (chatD-like:
 * Endpoint.request to the shard, `window` requests in flight) or the `shard` (channelD-like:
 * an Endpoint that answers every request). Requests always go over the System V queue; the
 * replies take the task's path (reply-channel.ts). The runner owns the queue, the socket
 * path and the /dev/shm file and removes them; this process exits when the runner goes away.
 */
import { performance } from 'node:perf_hooks';
import { Endpoint, SysvQueue, SysvTransport, defaultSysvTransportOptions, newIncarnation, type MessageTransport } from '../../src/ipc';
import { Samples, round } from '../common';
import { cpuMark, cpuSince } from '../cpu';
import { ReplyPathTransport, shmPollSource, shmSink, shmSource, udsSink, udsSource, type ReplyPath, type ReplySink, type ReplySource } from './reply-channel';
import { mapShm, type RingProducer } from './shm';

export const MTYPE_SHARD = 100;
export const MTYPE_FRONT = 1000;
/** A character name: the ~30-byte payload of a typical chatD -> channelD request. */
export const PAYLOAD = Buffer.from('Thorgrim_Ironfist_of_Kazad_Dum', 'latin1');
export const KIND_LOOKUP = 7;

export interface ReplyTask {
  role: 'front' | 'shard';
  path: ReplyPath;
  queueId: number;
  sockPath: string;
  shmPath: string;
  window: number;
  warmupMs: number;
  measureMs: number;
}
export type ToPeer = { type: 'task'; task: ReplyTask } | { type: 'go' };
export type FromPeer = { type: 'ready' } | { type: 'result'; result: Record<string, unknown> } | { type: 'error'; message: string };

const send = (r: FromPeer): void => {
  process.send?.(r);
};
process.on('disconnect', () => setTimeout(() => process.exit(0), 50).unref());
process.on('uncaughtException', (err) => {
  send({ type: 'error', message: `${process.argv[2] ?? 'peer'}: ${err.stack ?? err.message}` });
  setTimeout(() => process.exit(1), 50);
});

function measureWindow(task: ReplyTask, count: () => number, onStart: () => void, extra: () => Record<string, unknown>): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    setTimeout(() => {
      const base = count();
      const mark = cpuMark();
      onStart();
      setTimeout(() => {
        const seconds = (performance.now() - mark.wall) / 1000;
        const n = count() - base;
        resolve({ count: n, seconds: round(seconds, 4), perSecond: round(n / seconds), cpu: cpuSince(mark), ...extra() });
      }, task.measureMs);
    }, task.warmupMs);
  });
}

function sysv(queueId: number): SysvTransport {
  const onSendError = (err: Error): void => send({ type: 'error', message: `send failed: ${err.message}` });
  return new SysvTransport(SysvQueue.fromId(queueId), { ...defaultSysvTransportOptions, onSendError });
}

async function prepareFront(task: ReplyTask): Promise<() => Promise<Record<string, unknown>>> {
  const inner = sysv(task.queueId);
  let source: ReplySource | undefined;
  if (task.path === 'uds') {
    const u = udsSource(task.sockPath);
    await u.listening;
    source = u.source;
  } else if (task.path === 'shm' || task.path === 'shm-poll') {
    mapShm(task.shmPath, true); // creates and sizes the ring file (the runner unlinks it)
    source = task.path === 'shm' ? shmSource(task.shmPath) : shmPollSource(task.shmPath);
  }
  const t: MessageTransport = source ? new ReplyPathTransport(inner, new Map(), source) : inner;
  const ep = new Endpoint(t, { mtype: MTYPE_FRONT, incarnation: newIncarnation(), maxBatchBytes: t.maxMessageBytes });
  ep.start(() => {});
  const rtt = new Samples(1 << 22);
  let answered = 0;
  let failed = 0;
  let running = true;
  const fire = (): void => {
    const t0 = performance.now();
    ep.request(MTYPE_SHARD, KIND_LOOKUP, PAYLOAD, 60_000).then(
      (r) => {
        if (r.payload.length !== PAYLOAD.length) failed++;
        answered++;
        rtt.add((performance.now() - t0) * 1000);
        if (running) fire();
      },
      () => {
        failed++;
        if (running) fire();
      },
    );
  };
  return async () => {
    for (let i = 0; i < task.window; i++) fire();
    let e0 = 0;
    let r0 = 0;
    const result = await measureWindow(
      task,
      () => answered,
      () => {
        rtt.reset();
        e0 = ep.counters.envelopesSent;
        r0 = ep.counters.recordsSent;
      },
      () => {
        const s = rtt.summary();
        return {
          failed,
          rttUs: { p50: round(s.p50, 1), p99: round(s.p99, 1), mean: round(s.mean, 1) },
          requestsPerEnvelope: round((ep.counters.recordsSent - r0) / Math.max(1, ep.counters.envelopesSent - e0)),
          deferredSends: inner.counters().deferred,
          source: source?.stats(),
          ...ep.counters,
        };
      },
    );
    running = false;
    return result;
  };
}

async function prepareShard(task: ReplyTask): Promise<() => Promise<Record<string, unknown>>> {
  const inner = sysv(task.queueId);
  const sinks = new Map<number, ReplySink>();
  let stats = (): Record<string, unknown> => ({});
  if (task.path === 'uds') {
    const s = await udsSink(task.sockPath);
    sinks.set(MTYPE_FRONT, s);
    stats = () => ({ writes: s.writes() });
  } else if (task.path === 'shm' || task.path === 'shm-poll') {
    const s = shmSink(task.shmPath, task.path === 'shm');
    sinks.set(MTYPE_FRONT, s);
    const p: RingProducer = s.producer;
    stats = () => ({ futexWakes: p.wakes, ringFull: p.full });
  }
  const t: MessageTransport = sinks.size ? new ReplyPathTransport(inner, sinks) : inner;
  const ep = new Endpoint(t, { mtype: MTYPE_SHARD, incarnation: newIncarnation(), maxBatchBytes: t.maxMessageBytes });
  let handled = 0;
  ep.start((rec, reply) => {
    handled++;
    reply?.(0, rec.payload);
  });
  return () =>
    measureWindow(
      task,
      () => handled,
      () => {},
      () => ({ repliesPerEnvelope: round(ep.counters.recordsSent / Math.max(1, ep.counters.envelopesSent)), deferredSends: inner.counters().deferred, ...stats() }),
    );
}

let go: (() => Promise<Record<string, unknown>>) | undefined;
process.on('message', (cmd: ToPeer) => {
  if (cmd.type === 'task') {
    (cmd.task.role === 'front' ? prepareFront(cmd.task) : prepareShard(cmd.task)).then(
      (g) => {
        go = g;
        send({ type: 'ready' });
      },
      (err: Error) => send({ type: 'error', message: err.stack ?? err.message }),
    );
    return;
  }
  if (cmd.type === 'go' && go) {
    const run = go;
    go = undefined;
    run().then(
      (result) => send({ type: 'result', result }),
      (err: Error) => send({ type: 'error', message: err.stack ?? err.message }),
    );
  }
});
