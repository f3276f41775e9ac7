import { loadConfig } from '../config';
import { chatdMtype } from '../ipc/mtypes';
import { createLogger } from '../log';
import { exitWhenReceiverEnds, openClusterEndpoint, openHostQueue } from '../runtime/cluster-endpoint';
import { exitFenced, exitOnFatal, onShutdown, ready } from '../runtime/lifecycle';
import { publishToPm2 } from '../runtime/pm2-metrics';
import { ChatdServer } from './chatd-server';
import { chatdPm2 } from './pm2-figures';

/** chatD entry point (PM2 app `chatd`, one instance). */
async function main(): Promise<void> {
  const config = loadConfig();
  const index = Number.parseInt(process.env.NODE_APP_INSTANCE ?? '0', 10) || 0;
  const log = createLogger({ app: 'chatd', instance: index }, { level: config.logLevel });
  exitOnFatal(log);
  log.info({ config }, 'starting');
  const mtype = chatdMtype(index);
  const ce = await openClusterEndpoint(config, log, mtype);
  // The legacy C peers' mtypes 1 and 2 stay on this host's SysV queue whatever carries the cluster.
  const host = openHostQueue(config, log, ce);
  const server = new ChatdServer(config, host.transport, ce.endpoint, log, index);
  server.fencedHandler = () => exitFenced(log);
  // Figures in pm2 show / pm2 monit, actions for pm2 trigger (nothing outside PM2).
  const pm2 = publishToPm2(chatdPm2(server), log);
  onShutdown(
    log,
    async () => {
      pm2.stop();
      await server.stop();
      await host.close();
      await ce.transport.close();
    },
    server.stopBudgetMs + 1000,
  );
  const address = await server.start();
  exitWhenReceiverEnds(ce.endpoint.receiver, log);
  exitWhenReceiverEnds(server.legacy.receiver, log);
  ready(log, { address, mtype, incarnation: ce.incarnation });
}

void main();
