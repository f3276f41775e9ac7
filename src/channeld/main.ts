import { loadConfig } from '../config';
import { Endpoint } from '../ipc/endpoint';
import { newIncarnation } from '../ipc/envelope';
import { shardMtype } from '../ipc/mtypes';
import { SysvTransport, defaultSysvTransportOptions } from '../ipc/sysv/sysv-transport';
import { createLogger } from '../log';
import { openClusterQueue } from '../runtime/cluster-queue';
import { Heartbeat } from '../runtime/heartbeat';
import { exitOnFatal, onShutdown, ready } from '../runtime/lifecycle';
import { ShardServer } from './shard-server';

/** channelD entry point: one process per shard; the shard index comes from PM2's NODE_APP_INSTANCE. */
function main(): void {
  const config = loadConfig();
  const shard = Number.parseInt(process.env.NODE_APP_INSTANCE ?? process.env.CHANNELD_SHARD ?? '0', 10);
  const log = createLogger({ app: 'channeld', shard }, { level: config.logLevel });
  exitOnFatal(log);
  if (!(shard >= 0 && shard < config.shards)) {
    log.fatal({ shard, shards: config.shards }, 'shard index out of range (NODE_APP_INSTANCE must be below CHANNELD_SHARDS)');
    process.exit(1);
  }
  log.info({ config }, 'starting');
  const queue = openClusterQueue(config, log);
  const transport = new SysvTransport(queue, {
    ...defaultSysvTransportOptions,
    onSendError: (err) => log.error({ err }, 'queued sends failed'),
  });
  const incarnation = newIncarnation();
  const endpoint = new Endpoint(transport, { mtype: shardMtype(shard), incarnation, maxBatchBytes: config.mqBatchBytes });
  const server = new ShardServer(endpoint, { shard, shards: config.shards, recoveryMs: config.shardRecoveryMs, log });
  server.start();
  const heartbeat = new Heartbeat(endpoint, { role: 'channeld', index: shard }, config.heartbeatMs);
  heartbeat.start();
  void endpoint.ended?.then((end) => {
    if (end.reason === 'closed') return;
    log.fatal({ end }, 'queue receiver ended; exiting so PM2 restarts us on a fresh queue');
    process.exit(1);
  });
  onShutdown(log, async () => {
    heartbeat.stop();
    server.stop();
    await endpoint.close();
    await transport.close();
  });
  void server.whenLive().then(() => ready(log, { mtype: shardMtype(shard), incarnation, entries: server.directory.size }));
}

main();
