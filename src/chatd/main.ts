import { loadConfig } from '../config';
import { Endpoint } from '../ipc/endpoint';
import { newIncarnation } from '../ipc/envelope';
import { chatdMtype } from '../ipc/mtypes';
import { SysvTransport, defaultSysvTransportOptions } from '../ipc/sysv/sysv-transport';
import { createLogger } from '../log';
import { openClusterQueue } from '../runtime/cluster-queue';
import { exitOnFatal, onShutdown, ready } from '../runtime/lifecycle';
import { ChatdServer } from './chatd-server';

/** chatD entry point (PM2 app `chatd`, one instance). */
async function main(): Promise<void> {
  const config = loadConfig();
  const index = Number.parseInt(process.env.NODE_APP_INSTANCE ?? '0', 10) || 0;
  const log = createLogger({ app: 'chatd', instance: index }, { level: config.logLevel });
  exitOnFatal(log);
  log.info({ config }, 'starting');
  const queue = openClusterQueue(config, log);
  const transport = new SysvTransport(queue, {
    ...defaultSysvTransportOptions,
    onSendError: (err) => log.error({ err }, 'queued sends failed'),
  });
  const incarnation = newIncarnation();
  const endpoint = new Endpoint(transport, { mtype: chatdMtype(index), incarnation, maxBatchBytes: config.mqBatchBytes });
  const server = new ChatdServer(config, transport, endpoint, log, index);
  void endpoint.ended?.then((end) => {
    if (end.reason === 'closed') return;
    log.fatal({ end }, 'queue receiver ended; exiting so PM2 restarts us on a fresh queue');
    process.exit(1);
  });
  onShutdown(log, async () => {
    await server.stop();
    await transport.close();
  });
  const address = await server.start();
  ready(log, { address, mtype: chatdMtype(index), incarnation });
}

void main();
