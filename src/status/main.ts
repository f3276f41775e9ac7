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
  const address = await app.start(config.statusHost, config.statusPort);
  ready(log, { address: `http://${address.address.includes(':') ? `[${address.address}]` : address.address}:${address.port}/`, mqKey: config.mqKey });
}

void main();
