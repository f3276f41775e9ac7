import { memo, type Pm2Action, type Pm2Figure } from '../runtime/pm2-metrics';
import type { Collector } from './collector';

/**
 * The collector's figures in `pm2 show gc` / `pm2 monit`, and its `pm2 trigger gc` actions
 * (docs/operations.md, "Metrics and actions").
 */
export function gcPm2(collector: Collector): { figures: Pm2Figure[]; actions: Pm2Action[] } {
  const m = memo(() => collector.metrics());
  return {
    figures: [
      { name: 'Processes', read: () => m().gauges.processes },
      { name: 'Session cleanups', read: () => m().counters.sessionCleanups },
      { name: 'Deaths seen', read: () => m().counters.deathsSeen },
      { name: 'Purges', read: () => m().counters.purges },
      { name: 'Queue messages', read: () => m().gauges.queueMessages },
      { name: 'Queue bytes', unit: 'B', read: () => m().gauges.queueBytes },
      { name: 'Queue fill', unit: '%', read: () => pct(m().gauges.queueFill) },
    ],
    actions: [
      { name: 'status', run: () => collector.status() },
      { name: 'queue-stat', run: () => collector.queueReport() },
      { name: 'purge-dead', run: () => collector.purgeDead(3000), timeoutMs: 4000 },
    ],
  };
}

const pct = (fill: number | undefined): number | undefined => (fill === undefined ? undefined : Math.round(fill * 1000) / 10);
