import type { AddressInfo } from 'node:net';
import { loadConfig } from '../config';
import { createLogger } from '../log';
import { exitOnFatal, onShutdown, ready } from '../runtime/lifecycle';
import { StatusApp } from './status-app';

/**
 * The status app's entry point (PM2 app `status`, one instance): /metrics, the live status
 * page, /healthz on STATUS_HOST:STATUS_PORT (docs/status.md). STATUS_PORT=0 disables it.
 */
async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger({ app: 'status' }, { level: config.logLevel });
  exitOnFatal(log);
  if (config.statusPort === 0) {
    log.info('STATUS_PORT=0: the status endpoint is disabled');
    return;
  }
  log.info({ config }, 'starting');
  const app = new StatusApp(config, log);
  onShutdown(log, () => app.stop());
  const url = (a: AddressInfo): string => `http://${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}/`;
  const address = await app.start(config.statusHost, config.statusPort);
  // Ready even while the port is still taken (a reload's old process lets go of it once we are).
  ready(log, address ? { address: url(address), mqKey: config.mqKey } : { waitingForPort: config.statusPort, mqKey: config.mqKey });
  if (!address) void app.listening?.then((a) => a && log.info({ address: url(a) }, 'serving'));
}

void main();
