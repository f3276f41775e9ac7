import { memo, type Pm2Action, type Pm2Figure } from '../runtime/pm2-metrics';
import type { ShardServer } from './shard-server';

/**
 * A shard's figures in `pm2 show channeld` / `pm2 monit`, and its `pm2 trigger channeld`
 * actions (every shard answers; docs/operations.md, "Metrics and actions").
 */
export function channeldPm2(server: ShardServer): { figures: Pm2Figure[]; actions: Pm2Action[] } {
  const m = memo(() => server.metrics());
  return {
    figures: [
      { name: 'Entries', read: () => m().gauges.entries },
      { name: 'Req/s', unit: 'req/s', read: () => m().rates?.requests },
      { name: 'Finds/s', unit: 'req/s', read: () => m().rates?.finds },
      { name: 'Finds', read: () => m().counters.finds },
      { name: 'Logins', read: () => m().counters.logins },
      { name: 'Logouts', read: () => m().counters.logouts },
      { name: 'State', read: () => server.state },
    ],
    actions: [
      { name: 'status', run: () => server.status() },
      { name: 'dump-counts', run: () => server.dumpCounts() },
    ],
  };
}
