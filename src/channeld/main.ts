import { loadConfig } from '../config';
import { MAX_SHARDS, shardMtype } from '../ipc/mtypes';
import { createLogger } from '../log';
import { exitWhenReceiverEnds, openClusterEndpoint } from '../runtime/cluster-endpoint';
import { Heartbeat } from '../runtime/heartbeat';
import { exitFenced, exitOnFatal, onShutdown, ready } from '../runtime/lifecycle';
import { ShardServer } from './shard-server';
import { publishToPm2 } from '../runtime/pm2-metrics';
import { channeldPm2 } from './pm2-figures';
import { join } from 'node:path';
import { ReplicaWriter, createReplicaMemory } from './directory-replica';
import type { FindInlineData } from './find-inline';

/**
 * The shard index of this process: SHARD_BASE (this host's first index, docs/multi-host.md)
 * plus PM2's NODE_APP_INSTANCE; undefined when that is not an index below MAX_SHARDS.
 */
export function shardIndexOf(shardBase: number, instance: string | undefined): number | undefined {
  const text = instance ?? '0';
  if (!/^[0-9]{1,4}$/.test(text)) return undefined;
  const shard = shardBase + Number(text);
  return shard < MAX_SHARDS ? shard : undefined;
}

/** channelD entry point: one process per shard; the shard index is SHARD_BASE + PM2's NODE_APP_INSTANCE. */
async function main(): Promise<void> {
  const config = loadConfig();
  const index = shardIndexOf(config.shardBase, process.env.NODE_APP_INSTANCE);
  const shard = index ?? -1;
  const log = createLogger({ app: 'channeld', shard }, { level: config.logLevel });
  exitOnFatal(log);
  // Any index below MAX_SHARDS: `pm2 scale` gives a new process the lowest free one, whatever
  // CHANNELD_SHARDS says; the collector's membership epoch decides what it owns (docs/resharding.md).
  if (index === undefined) {
    log.fatal({ shardBase: config.shardBase, instance: process.env.NODE_APP_INSTANCE, max: MAX_SHARDS }, 'shard index out of range (SHARD_BASE + NODE_APP_INSTANCE must be below 900)');
    process.exit(1);
  }
  log.info({ config }, 'starting');
  const mtype = shardMtype(shard);
  // FINDs are answered in the receiver thread from a shared-memory copy of the directory
  // (find-inline.ts); everything else, and FINDs the copy cannot answer, reach this thread.
  // On NATS there is no receiver thread: FINDs go to the main thread, no replica needed.
  const replicaMemory = config.replicaEntries > 0 && config.transport === 'sysv' ? createReplicaMemory(config.replicaEntries) : undefined;
  const ce = await openClusterEndpoint(config, log, mtype, replicaMemory
    ? (incarnation) => ({ module: join(__dirname, 'find-inline.js'), data: { replica: replicaMemory, mtype, incarnation } satisfies FindInlineData })
    : undefined);
  const replica = replicaMemory ? new ReplicaWriter(replicaMemory) : undefined;
  // The heartbeat's answer names the live chatDs: only they may change the directory.
  let heartbeat: Heartbeat | undefined;
  const server = new ShardServer(ce.endpoint, {
    shard,
    recoveryMs: config.shardRecoveryMs,
    log,
    askMembership: () => heartbeat?.beatNow(),
    host: config.hostId,
    onFenced: () => exitFenced(log),
    ...(replica ? { replica } : {}),
  });
  heartbeat = new Heartbeat(
    ce.endpoint,
    { role: 'channeld', index: shard, host: config.hostId },
    config.heartbeatMs,
    (m) => server.noteMembership(m),
    () => server.report(),
    () => exitFenced(log),
    { correct: config.clockCorrection, log },
  );
  server.start();
  // Figures in pm2 show / pm2 monit, actions for pm2 trigger (nothing outside PM2).
  const pm2 = publishToPm2(channeldPm2(server), log);
  exitWhenReceiverEnds(ce.endpoint.receiver, log);
  heartbeat.start();
  onShutdown(log, async () => {
    pm2.stop();
    // Graceful stop (reload): refuse with the leaving mark until chatDs stop asking, then go.
    await server.leave();
    heartbeat?.stop();
    await ce.close();
  });
  void server.whenLive().then(() => ready(log, { mtype, incarnation: ce.incarnation, entries: server.directory.size }));
}

if (require.main === module) void main();
