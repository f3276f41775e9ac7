/**
 * One benchmark process, started by bench/run.ts with child_process.fork(). It gets its task
 * ({type:'task'}), says {type:'ready'}, starts on {type:'go'}, measures after a warm-up and
 * reports {type:'result'}. It never creates or removes queues: the runner owns them, and kills
 * this process when the scenario is over (it also exits when the runner goes away).
 */
import { performance } from 'node:perf_hooks';
import { Endpoint, SysvQueue, SysvTransport, defaultSysvTransportOptions, newIncarnation, type MessageTransport } from '../src/ipc';
import * as c from '../src/ipc/sysv/libc';
import {
  MTYPE_FLOOD,
  MTYPE_REP,
  MTYPE_REQ,
  PAYLOAD_BYTES,
  Samples,
  monoUs,
  round,
  type Handover,
  type PeerReport,
  type PeerTask,
  type RunnerCommand,
} from './common';
import { cpuMark, cpuSince, type CpuMark } from './cpu';

const send = (r: PeerReport): void => {
  process.send?.(r);
};

// The runner removes the queue before it disconnects: receiver threads wake with EIDRM and
// end; a moment later the process goes (with --cpu-prof, every thread's profile is written).
process.on('disconnect', () => setTimeout(() => process.exit(0), 100).unref());
process.on('uncaughtException', (err) => {
  send({ type: 'error', message: `${process.argv[2] ?? 'peer'}: ${err.stack ?? err.message}` });
  setTimeout(() => process.exit(1), 50);
});

interface Counted {
  /** Reads the progress counter (answered requests, handled messages). */
  count(): number;
  /** Extra figures to add to the result, read at the end of the window. */
  extra?(): Record<string, unknown>;
  /** Called when the measured window starts (reset per-window samples). */
  onWindowStart?(): void;
}

/** Waits out the warm-up, then measures `counted` over the window; resolves with the result. */
function measureWindow(task: PeerTask, counted: Counted): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    setTimeout(() => {
      const base = counted.count();
      const mark: CpuMark = cpuMark();
      counted.onWindowStart?.();
      setTimeout(() => {
        const seconds = (performance.now() - mark.wall) / 1000;
        const n = counted.count() - base;
        resolve({ count: n, seconds: round(seconds, 4), perSecond: round(n / seconds), cpu: cpuSince(mark), ...(counted.extra?.() ?? {}) });
      }, task.measureMs);
    }, task.warmupMs);
  });
}

/** src/ipc's SysvTransport with its default options, except for the receiver's hand-over. */
function makeTransport(handover: Handover, queueId: number): MessageTransport {
  const queue = SysvQueue.fromId(queueId);
  const onSendError = (err: Error): void => send({ type: 'error', message: `send failed: ${err.message}` });
  return new SysvTransport(queue, { ...defaultSysvTransportOptions, onSendError, receiver: { ...defaultSysvTransportOptions.receiver, handover } });
}

const counters = (t: MessageTransport): Record<string, unknown> => {
  const k = (t as SysvTransport).counters?.();
  return k ? { deferredSends: k.deferred } : {};
};

/** Prepares the task; returns what to do on 'go'. */
function prepare(task: PeerTask): () => Promise<Record<string, unknown> | undefined> {
  switch (task.role) {
    case 'raw-responder': {
      const t = makeTransport(task.handover, task.queueId);
      let handled = 0;
      let batches = 0;
      t.receive(MTYPE_REQ, (batch) => {
        batches++;
        for (const m of batch) t.send(MTYPE_REP, m.body);
        handled += batch.length;
      });
      return () => measureWindow(task, { count: () => handled, extra: () => ({ batches, ...counters(t) }) });
    }
    case 'raw-pingpong': {
      const t = makeTransport(task.handover, task.queueId);
      const body = Buffer.alloc(PAYLOAD_BYTES);
      const rtt = new Samples(1 << 21);
      let answered = 0;
      let sentAt = 0;
      t.receive(MTYPE_REP, (batch) => {
        const now = performance.now();
        answered += batch.length;
        rtt.add((now - sentAt) * 1000);
        sentAt = performance.now();
        t.send(MTYPE_REQ, body);
      });
      return () => {
        sentAt = performance.now();
        t.send(MTYPE_REQ, body);
        return measureWindow(task, {
          count: () => answered,
          onWindowStart: () => rtt.reset(),
          extra: () => ({ rttUs: roundSummary(rtt) }),
        });
      };
    }
    case 'raw-pipeline': {
      const t = makeTransport(task.handover, task.queueId);
      const body = Buffer.alloc(PAYLOAD_BYTES);
      let answered = 0;
      let batches = 0;
      t.receive(MTYPE_REP, (batch) => {
        batches++;
        answered += batch.length;
        for (let i = 0; i < batch.length; i++) t.send(MTYPE_REQ, body);
      });
      return () => {
        for (let i = 0; i < task.window; i++) t.send(MTYPE_REQ, body);
        let b0 = 0;
        let a0 = 0;
        return measureWindow(task, {
          count: () => answered,
          onWindowStart: () => {
            b0 = batches;
            a0 = answered;
          },
          extra: () => ({ window: task.window, repliesPerHandover: round((answered - a0) / Math.max(1, batches - b0)), ...counters(t) }),
        });
      };
    }
    case 'ep-responder': {
      const t = makeTransport(task.handover, task.queueId);
      const ep = new Endpoint(t, { mtype: MTYPE_REQ, incarnation: newIncarnation(), maxBatchBytes: t.maxMessageBytes });
      let handled = 0;
      ep.start((rec, reply) => {
        handled++;
        reply?.(0, rec.payload);
      });
      return () =>
        measureWindow(task, {
          count: () => handled,
          extra: () => ({ recordsPerEnvelope: round(ep.counters.recordsSent / Math.max(1, ep.counters.envelopesSent)), ...counters(t) }),
        });
    }
    case 'ep-requester': {
      const t = makeTransport(task.handover, task.queueId);
      const ep = new Endpoint(t, { mtype: MTYPE_REP, incarnation: newIncarnation(), maxBatchBytes: t.maxMessageBytes });
      ep.start(() => {});
      const payload = Buffer.alloc(PAYLOAD_BYTES);
      const rtt = new Samples(1 << 22);
      let answered = 0;
      let failed = 0;
      let running = true;
      const fire = (): void => {
        const t0 = performance.now();
        ep.request(MTYPE_REQ, 1, payload, 60_000).then(
          () => {
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
        const result = await measureWindow(task, {
          count: () => answered,
          onWindowStart: () => {
            rtt.reset();
            e0 = ep.counters.envelopesSent;
            r0 = ep.counters.recordsSent;
          },
          extra: () => ({
            window: task.window,
            failed,
            rttUs: roundSummary(rtt),
            recordsPerEnvelope: round((ep.counters.recordsSent - r0) / Math.max(1, ep.counters.envelopesSent - e0)),
            ...counters(t),
          }),
        });
        running = false;
        return result;
      };
    }
    case 'flood-consumer': {
      // Scenario 3: messages from the C producer, stamped with their CLOCK_MONOTONIC send
      // time (ns, first 8 bytes). Per batch: the end-to-end latency of its first message
      // (sent -> handler runs); per message: its length is read.
      const t = makeTransport(task.handover, task.queueId);
      const e2e = new Samples(1 << 21);
      let messages = 0;
      let batches = 0;
      let bytes = 0;
      t.receive(MTYPE_FLOOD, (batch) => {
        const now = monoUs();
        const first = batch[0]!.body;
        e2e.add(now - (first.readUInt32LE(0) + first.readUInt32LE(4) * 0x1_0000_0000) / 1000);
        for (const m of batch) bytes += m.body.length;
        messages += batch.length;
        batches++;
      });
      let b0 = 0;
      let m0 = 0;
      return () =>
        measureWindow(task, {
          count: () => messages,
          onWindowStart: () => {
            e2e.reset();
            b0 = batches;
            m0 = messages;
          },
          extra: () => ({ messagesPerBatch: round((messages - m0) / Math.max(1, batches - b0)), endToEndUs: roundSummary(e2e), bytesSeen: bytes > 0 }),
        });
    }
    case 'callcost':
      return async () => callCost(task.queueId, task.calls);
  }
}

function roundSummary(s: Samples): Record<string, number> {
  const v = s.summary();
  return { count: v.count, mean: round(v.mean, 2), p50: round(v.p50, 2), p90: round(v.p90, 2), p99: round(v.p99, 2), max: round(v.max, 1) };
}

/**
 * Scenario 4: what one koffi call costs on the main thread. Blocks of 512 msgsnd(IPC_NOWAIT)
 * then 512 msgrcv(IPC_NOWAIT), then 512 msgrcv on the empty queue (ENOMSG + koffi.errno()),
 * with the raw bindings and with the SysvQueue wrappers.
 */
function callCost(queueId: number, calls: number): Record<string, unknown> {
  const block = 512;
  const sbuf = Buffer.alloc(c.MTYPE_BYTES + PAYLOAD_BYTES);
  sbuf.writeUInt32LE(MTYPE_REQ, 0);
  const rbuf = Buffer.alloc(c.MTYPE_BYTES + 8192);
  const body = new Uint8Array(PAYLOAD_BYTES);
  const q = SysvQueue.fromId(queueId);
  const now = (): number => performance.now();
  const run = (): Record<string, number> => {
    let tSnd = 0;
    let tRcv = 0;
    let tEmpty = 0;
    let tErrno = 0;
    let tQSnd = 0;
    let tQRcv = 0;
    let n = 0;
    while (n < calls) {
      let a = now();
      for (let i = 0; i < block; i++) if (c.msgsnd(queueId, sbuf, PAYLOAD_BYTES, c.IPC_NOWAIT) !== 0) throw new Error('msgsnd');
      let b = now();
      for (let i = 0; i < block; i++) if (c.msgrcv(queueId, rbuf, 8192, MTYPE_REQ, c.IPC_NOWAIT) < 0) throw new Error('msgrcv');
      const d = now();
      for (let i = 0; i < block; i++) if (c.msgrcv(queueId, rbuf, 8192, MTYPE_REQ, c.IPC_NOWAIT) >= 0) throw new Error('msgrcv(empty)');
      const e = now();
      for (let i = 0; i < block; i++) c.errno();
      const f = now();
      tSnd += b - a;
      tRcv += d - b;
      tEmpty += e - d;
      tErrno += f - e;
      a = now();
      for (let i = 0; i < block; i++) if (!q.trySend(MTYPE_REQ, body)) throw new Error('trySend');
      b = now();
      for (let i = 0; i < block; i++) if (!q.tryReceive(MTYPE_REQ)) throw new Error('tryReceive');
      tQSnd += b - a;
      tQRcv += now() - b;
      n += block;
    }
    const us = (ms: number): number => round((ms * 1000) / n, 3);
    return {
      calls: n,
      msgsndUs: us(tSnd),
      msgrcvUs: us(tRcv),
      msgrcvEmptyUs: us(tEmpty),
      errnoUs: us(tErrno),
      trySendUs: us(tQSnd),
      tryReceiveUs: us(tQRcv),
    };
  };
  run(); // warm-up: JIT and koffi's call stubs
  return run();
}

let go: (() => Promise<Record<string, unknown> | undefined>) | undefined;
process.on('message', (cmd: RunnerCommand) => {
  if (cmd.type === 'task') {
    go = prepare(cmd.task);
    send({ type: 'ready' });
    return;
  }
  if (cmd.type === 'go' && go) {
    const run = go;
    go = undefined;
    run().then(
      (result) => {
        if (result) send({ type: 'result', result });
      },
      (err: Error) => send({ type: 'error', message: err.stack ?? err.message }),
    );
  }
});
