import { memo, type Pm2Action, type Pm2Figure } from '../runtime/pm2-metrics';
import type { ChatdServer } from './chatd-server';

/**
 * chatD's figures in `pm2 show chatd` / `pm2 monit`, and its `pm2 trigger chatd` actions
 * (docs/operations.md, "Metrics and actions"). Read once a second by @pm2/io.
 */
export function chatdPm2(server: ChatdServer): { figures: Pm2Figure[]; actions: Pm2Action[] } {
  const service = server.service;
  const m = memo(() => service.metrics());
  return {
    figures: [
      { name: 'Sessions', read: () => m().gauges.sessions },
      { name: 'Connections', read: () => m().gauges.connections },
      { name: 'Req/s', unit: 'req/s', read: () => m().rates?.requests },
      { name: 'Finds/s', unit: 'req/s', read: () => m().rates?.finds },
      { name: 'Latency p50', unit: 'ms', read: () => m().latency?.p50Ms },
      { name: 'Latency p99', unit: 'ms', read: () => m().latency?.p99Ms },
      { name: 'In-flight requests', read: () => m().gauges.inFlight },
      { name: 'Timeouts', read: () => m().counters.timeouts },
      { name: 'Rate-limited', read: () => m().counters.rateLimited },
      { name: 'Errors', read: () => m().counters.errors },
    ],
    actions: [{ name: 'status', run: () => ({ ...service.status(), front: { ...server.frontCounters, maxConnections: server.maxConnections } }) }],
  };
}
