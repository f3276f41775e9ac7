import { RateMeter } from '../runtime/metrics';
import { memo, type Pm2Action, type Pm2Figure } from '../runtime/pm2-metrics';
import type { ShardServer } from './shard-server';

/**
 * A shard's figures in `pm2 show channeld` / `pm2 monit`, and its `pm2 trigger channeld`
 * actions (every shard answers; docs/operations.md, "Metrics and actions").
 */
export function channeldPm2(server: ShardServer): { figures: Pm2Figure[]; actions: Pm2Action[] } {
  const m = memo(() => server.metrics());
  const reqs = new RateMeter(() => m().counters.requests!);
  const finds = new RateMeter(() => m().counters.finds!);
  return {
    figures: [
      { name: 'Entries', read: () => m().gauges.entries },
      { name: 'Req/s', unit: 'req/s', read: () => round1(reqs.rate()) },
      { name: 'Finds/s', unit: 'req/s', read: () => round1(finds.rate()) },
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

const round1 = (x: number): number => Math.round(x * 10) / 10;
