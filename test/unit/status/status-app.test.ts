import { expect } from 'chai';
import { createServer } from 'node:net';
import pino from 'pino';
import { loadConfig } from '../../../src/config';
import { StatusApp } from '../../../src/status/status-app';
import { unusedQueueKey } from '../../helpers/host';

const log = pino({ level: 'silent' });

describe('status - StatusApp', function () {
  this.timeout(20_000);

  it('no cluster at all: serves the page and /healthz saying the queue is missing; a taken port is waited for, not fatal', async () => {
    const config = loadConfig({ MQ_KEY: String(unusedQueueKey(0x3c000000)), CHANNELD_SHARDS: '1' });
    // Someone holds the port (during `pm2 reload`, the old status process).
    const squatter = createServer();
    await new Promise<void>((r) => squatter.listen(0, '127.0.0.1', () => r()));
    const port = (squatter.address() as { port: number }).port;
    const app = new StatusApp(config, log, { intervalMs: 200, timeoutMs: 150, maxBackoffMs: 1000 });
    try {
      expect(await app.start('127.0.0.1', port), 'port taken: not listening yet').to.equal(undefined);
      await new Promise<void>((r) => squatter.close(() => r()));
      const address = await app.listening;
      expect(address?.port).to.equal(port);
      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(health.status).to.equal(200);
      expect(await health.json()).to.deep.include({ status: 'ok', cluster: 'down', queue: 'missing', answering: 0, asked: 3 });
      const page = await fetch(`http://127.0.0.1:${port}/`);
      expect(page.status).to.equal(200);
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(metrics).to.match(/^chatd_cluster_queue_up 0$/m);
      expect(metrics).to.match(/^chatd_cluster_up\{role="gc",shard=""\} 0$/m);
    } finally {
      await app.stop();
      squatter.close();
    }
  });
});
