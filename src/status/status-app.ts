import type { AddressInfo } from 'node:net';
import type { Config } from '../config';
import type { Logger } from '../log';
import { ClusterView } from './cluster-view';
import { PrometheusExport } from './prometheus';
import { StatusPoller, defaultPollerTimings, type PollerTimings } from './status-poller';
import { StatusServer } from './status-server';

/** How long to wait between tries when the port is taken (a reload's old process, a leftover). */
const LISTEN_RETRY_MS = 1000;

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

  /**
   * Runs the first round, then listens. A port that is taken (during `pm2 reload` the old
   * status process holds it until the new one says ready) is not fatal: this resolves with
   * undefined and keeps trying every second in the background; `listening` says when it got it.
   */
  async start(host: string, port: number): Promise<AddressInfo | undefined> {
    await this.runRound();
    this.schedule();
    try {
      return await this.server.listen(host, port);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
      this.log.warn({ host, port, retryMs: LISTEN_RETRY_MS }, 'status port in use; trying again every second');
      this.listening = this.retryListen(host, port);
      return undefined;
    }
  }

  /** Settles once the server listens after a first EADDRINUSE (undefined when stopped first). */
  listening: Promise<AddressInfo | undefined> | undefined;

  private async retryListen(host: string, port: number): Promise<AddressInfo | undefined> {
    for (;;) {
      await new Promise((r) => setTimeout(r, LISTEN_RETRY_MS));
      if (this.stopped) return undefined;
      try {
        const address = await this.server.listen(host, port);
        this.log.info({ host, port: address.port }, 'status port free: listening');
        return address;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') {
          this.log.error({ err, host, port }, 'status port: cannot listen');
          throw err;
        }
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
