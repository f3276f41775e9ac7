import { readFileSync } from 'node:fs';
import { loadConfig } from '../config';
import { MTYPE_GC } from '../ipc/mtypes';
import { NatsTransport } from '../ipc/nats/nats-transport';
import type { SysvQueue } from '../ipc/sysv/sysv-queue';
import { createLogger } from '../log';
import { exitWhenReceiverEnds, openClusterEndpoint, openHostQueue } from '../runtime/cluster-endpoint';
import { exitOnFatal, onShutdown, ready } from '../runtime/lifecycle';
import { publishToPm2 } from '../runtime/pm2-metrics';
import { Collector } from './collector';
import { gcPm2 } from './pm2-figures';
import { Pm2Watch } from './pm2-watch';

/** Bound on one drain, so that a sender faster than us cannot keep the collector in a loop. */
const MAX_DRAIN = 100_000;

/** Takes every message of one mtype off the queue, without blocking. */
export function drainQueue(queue: SysvQueue, mtype: number, max = MAX_DRAIN): number {
  let n = 0;
  while (n < max && queue.tryReceive(mtype) !== null) n++;
  return n;
}

/**
 * Whether a pid is a running process: kill(pid, 0) says ESRCH when there is none (EPERM means
 * it exists under another user). A zombie still passes kill(pid, 0) until its parent reaps it,
 * so /proc/PID/stat is read too: state Z or X is dead. Without /proc the kill answer stands.
 */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ENOENT';
  }
}

/** The collector's entry point (PM2 app `gc`, one instance). */
async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger({ app: 'gc' }, { level: config.logLevel });
  exitOnFatal(log);
  const ce = await openClusterEndpoint(config, log, MTYPE_GC);
  const { endpoint, incarnation } = ce;
  // Hygiene, drains and legacy reply expiry work on this host's SysV queue (on NATS the server
  // keeps nothing to drain; the legacy mtypes stay on the host queue).
  const host = openHostQueue(config, log, ce);
  const queue = host.queue;
  const close = async (): Promise<void> => {
    await host.close();
    await ce.close();
  };
  const collector = new Collector({
    endpoint,
    config,
    log: log.child({ component: 'collector' }),
    drain: (mtype) => drainQueue(queue, mtype),
    // Only ever asked about processes of this host (HOST_ID): another host's pid means nothing here.
    liveness: pidAlive,
    // Over NATS: while our own connection is down no heartbeat can reach us (docs/multi-host.md).
    ...(ce.transport instanceof NatsTransport ? { connected: () => (ce.transport as NatsTransport).queue.connected } : {}),
    // Hygiene peeks at the queue's head (MSG_COPY) to find mtypes nobody reads (never mtype 2).
    hygieneQueue: { stat: () => queue.stat(), peek: (i) => queue.peek(i), take: (mtype, max) => drainQueue(queue, mtype, max) },
    // Legacy reply expiry (mtype 2, legacy-expiry.ts): one receive at a time, young replies put back.
    takeOne: (mtype) => queue.tryReceive(mtype)?.body ?? null,
    putBack: (mtype, body) => queue.trySend(mtype, body),
  });
  log.info({ config, timings: collector.timings, transport: ce.kind, queueId: queue.id, msgmax: ce.transport.maxMessageBytes, mtype: MTYPE_GC, incarnation }, 'starting');
  collector.start();
  // Figures in pm2 show / pm2 monit, actions for pm2 trigger (nothing outside PM2).
  const pm2 = publishToPm2(gcPm2(collector), log);
  const watch = new Pm2Watch(
    log.child({ component: 'pm2-watch' }),
    (ev) => collector.supervisorEvent(ev),
    process.env,
    (shard) => collector.shardDeparted(shard),
  );
  void watch.start();
  exitWhenReceiverEnds(endpoint.receiver, log);
  onShutdown(log, async () => {
    pm2.stop();
    collector.stop();
    await watch.stop();
    await close();
  });
  ready(log, { mtype: MTYPE_GC, incarnation, queueId: queue.id });
}

if (require.main === module) void main();
