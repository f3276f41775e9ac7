import type { AddressInfo } from 'node:net';
import type { Config } from '../config';
import type { Logger } from '../log';
import { ClusterView } from './cluster-view';
import { PrometheusExport } from './prometheus';
import { StatusPoller, defaultPollerTimings, type PollerTimings } from './status-poller';
import { StatusServer } from './status-server';

/** How long to wait between tries when the port is taken (another status app, a leftover). */
const LISTEN_RETRY_MS = 5000;

/**
 * The status app: a poller that asks the cluster for STATUS every round, the view that keeps
 * the figures and their history, and the HTTP server that shows them. It stays up whatever
 * the cluster does: processes that do not answer, a missing or refused queue, and a port
 * that is taken (it tries again) are states it shows or logs, not reasons to exit.
 */
export class StatusApp {
  readonly view = new ClusterView();
  readonly poller: StatusPoller;
  readonly server: StatusServer;
  private readonly prom: PrometheusExport;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private lastRoundAt = 0;
  private round: Promise<void> | undefined;

  constructor(
    config: Config,
    private readonly log: Logger,
    timings: PollerTimings = defaultPollerTimings,
  ) {
    this.poller = new StatusPoller(config, log.child({ component: 'poller' }), timings);
    this.prom = new PrometheusExport(() => this.view.snapshot);
    const prom = this.prom;
    this.server = new StatusServer(
      {
        snapshot: () => this.view.snapshot,
        history: () => this.view.history,
        metrics: () => prom.metrics(),
        metricsContentType: prom.contentType,
        lastRoundAt: () => this.lastRoundAt,
      },
      log.child({ component: 'http' }),
      { staleAfterMs: Math.max(5000, timings.intervalMs * 5) },
    );
  }

  /** Runs the first round, then listens (retrying while the port is taken) and keeps polling. */
  async start(host: string, port: number): Promise<AddressInfo> {
    await this.runRound();
    this.schedule();
    for (;;) {
      try {
        return await this.server.listen(host, port);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'EADDRINUSE' || this.stopped) throw err;
        this.log.warn({ host, port, retryMs: LISTEN_RETRY_MS }, 'status port in use; trying again');
        await new Promise((r) => setTimeout(r, LISTEN_RETRY_MS));
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.round;
    await this.server.close();
    await this.poller.close();
  }

  private schedule(): void {
    if (this.stopped) return;
    const wait = Math.max(0, this.lastRoundAt + this.poller.timings.intervalMs - Date.now());
    this.timer = setTimeout(() => {
      void this.runRound().finally(() => this.schedule());
    }, wait);
  }

  private runRound(): Promise<void> {
    const started = Date.now();
    this.round = this.poller
      .poll(started)
      .then((poll) => {
        const snapshot = this.view.update(poll);
        this.server.publish(snapshot);
      })
      .catch((err: unknown) => this.log.error({ err }, 'status round failed'))
      .finally(() => {
        // The next round starts one interval after this one started (or at once if it ran long).
        this.lastRoundAt = started;
      });
    return this.round;
  }
}
