import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { ProcessRow, Snapshot } from './cluster-view';

/** Prefix of every series about the cluster; the status process's own figures use `chatd_status_`. */
export const PREFIX = 'chatd_cluster_';
/** At most this many series names made from the processes' counter and gauge names. */
const MAX_DYNAMIC = 200;

/** `sessionCleanups` -> `session_cleanups`; undefined for a name Prometheus would not take. */
export function metricName(name: string): string | undefined {
  const snake = name.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase();
  return /^[a-z][a-z0-9_]{0,63}$/.test(snake) ? snake : undefined;
}

const labelsOf = (r: ProcessRow): { role: string; shard: string } => ({ role: r.role, shard: r.role === 'channeld' ? String(r.index) : '' });

/**
 * /metrics: the cluster in Prometheus text format, from the last round's snapshot. Every
 * process's counters become `chatd_cluster_<name>_total{role,shard}` (counters) and gauges
 * `chatd_cluster_<name>{role,shard}`; `shard` is the shard index for channeld and empty for gc
 * and chatD. Plus per-process up/uptime/STATUS time, the queue, sessions per channel and chatD's
 * latency quantiles (docs/status.md lists them). A process that does not answer has up 0 and
 * keeps its counters at their last value (never a drop, which Prometheus would read as a reset).
 */
export class PrometheusExport {
  readonly registry = new Registry();
  private readonly dynamic = new Map<string, Counter | Gauge>();

  constructor(private readonly current: () => Snapshot | undefined) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'chatd_status_' });
    const perProcess = (name: string, help: string, value: (r: ProcessRow) => number | undefined): void => {
      const snap = this.current;
      new Gauge({
        name: PREFIX + name,
        help,
        labelNames: ['role', 'shard'],
        registers,
        collect() {
          this.reset();
          for (const r of snap()?.processes ?? []) {
            const v = value(r);
            if (v !== undefined) this.set(labelsOf(r), v);
          }
        },
      });
    };
    perProcess('up', '1 when the process answered its last STATUS question, else 0', (r) => (r.state === 'up' ? 1 : 0));
    perProcess('process_uptime_seconds', 'uptime the process reports', (r) => (r.state === 'up' ? r.uptimeS : undefined));
    perProcess('status_reply_seconds', 'time the last STATUS reply took', (r) => (r.state === 'up' && r.statusMs !== undefined ? r.statusMs / 1000 : undefined));
    const snap = this.current;
    new Gauge({
      name: `${PREFIX}request_latency_seconds`,
      help: 'chatD request latency over its last 10 s, by quantile',
      labelNames: ['role', 'shard', 'quantile'],
      registers,
      collect() {
        this.reset();
        for (const r of snap()?.processes ?? []) {
          if (r.state !== 'up' || !r.latency) continue;
          this.set({ ...labelsOf(r), quantile: '0.5' }, r.latency.p50Ms / 1000);
          this.set({ ...labelsOf(r), quantile: '0.99' }, r.latency.p99Ms / 1000);
        }
      },
    });
    new Gauge({
      name: `${PREFIX}channel_sessions`,
      help: 'sessions per channel (all chatD instances)',
      labelNames: ['channel'],
      registers,
      collect() {
        this.reset();
        for (const [channel, n] of Object.entries(snap()?.sessionsPerChannel ?? {})) this.set({ channel }, n);
      },
    });
    const queue = (name: string, help: string, value: (s: Snapshot) => number | undefined): void => {
      new Gauge({
        name: PREFIX + name,
        help,
        registers,
        collect() {
          this.reset();
          const s = snap();
          const v = s ? value(s) : undefined;
          if (v !== undefined) this.set(v);
        },
      });
    };
    queue('queue_up', '1 when the queue exists and is trusted, else 0', (s) => (s.queue.state === 'ok' ? 1 : 0));
    queue('queue_messages', 'messages in the SysV queue (IPC_STAT)', (s) => s.queue.messages);
    queue('queue_bytes', 'bytes of message text in the SysV queue', (s) => s.queue.bytes);
    queue('queue_capacity_bytes', 'capacity of the SysV queue (msg_qbytes)', (s) => s.queue.capacity);
    queue('queue_fill_ratio', 'fill of the SysV queue, by bytes or message count (the nearer limit)', (s) => s.queue.fill);
    queue('processes_answering', 'processes that answered the last STATUS round', (s) => s.point.answering);
    queue('processes_asked', 'processes the status app asks for STATUS', (s) => s.point.asked);
  }

  /** The text for one scrape. */
  async metrics(): Promise<string> {
    this.addDynamic(this.current());
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** Registers the series of counter and gauge names seen for the first time. */
  private addDynamic(s: Snapshot | undefined): void {
    if (!s) return;
    const snap = this.current;
    for (const r of s.processes) {
      for (const [kind, names] of [['counter', Object.keys(r.counters)], ['gauge', Object.keys(r.gauges)]] as const) {
        for (const raw of names) {
          const base = metricName(raw);
          if (!base) continue;
          const name = kind === 'counter' ? `${PREFIX}${base}_total` : `${PREFIX}${base}`;
          if (this.dynamic.has(name) || this.registry.getSingleMetric(name) || this.dynamic.size >= MAX_DYNAMIC) continue;
          const help = kind === 'counter' ? `${raw}: total since the process started (STATUS metrics.counters)` : `${raw}: current value (STATUS metrics.gauges)`;
          const pick = (row: ProcessRow): number | undefined => (kind === 'counter' ? row.counters[raw] : row.state === 'up' ? row.gauges[raw] : undefined);
          const options = {
            name,
            help,
            labelNames: ['role', 'shard'] as const,
            registers: [this.registry],
          };
          if (kind === 'counter') {
            this.dynamic.set(
              name,
              new Counter({
                ...options,
                collect() {
                  this.reset();
                  for (const row of snap()?.processes ?? []) {
                    const v = pick(row);
                    if (v !== undefined && v >= 0) this.inc(labelsOf(row), v);
                  }
                },
              }),
            );
          } else {
            this.dynamic.set(
              name,
              new Gauge({
                ...options,
                collect() {
                  this.reset();
                  for (const row of snap()?.processes ?? []) {
                    const v = pick(row);
                    if (v !== undefined) this.set(labelsOf(row), v);
                  }
                },
              }),
            );
          }
        }
      }
    }
  }
}
