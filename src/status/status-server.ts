import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log';
import type { Point, Snapshot } from './cluster-view';
import { STATUS_PAGE } from './status-page';

/** What the server serves from: the last snapshot, the chart history, the Prometheus text. */
export interface StatusSource {
  snapshot(): Snapshot | undefined;
  history(): readonly Point[];
  metrics(): Promise<string>;
  readonly metricsContentType: string;
  /** When the last round ended (epoch ms), 0 before the first. */
  lastRoundAt(): number;
}

export interface StatusServerOptions {
  /** /healthz says 503 when no round ended for this long (the poller is stuck). */
  staleAfterMs: number;
  /** At most this many pages open on /events at once; more get 503. */
  maxEventClients: number;
  /** A comment line on every open /events stream this often, so proxies keep it open. */
  keepAliveMs: number;
}

export const defaultStatusServerOptions: StatusServerOptions = Object.freeze({ staleAfterMs: 5000, maxEventClients: 64, keepAliveMs: 15_000 });

const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-store',
  'referrer-policy': 'no-referrer',
};
// The page is one self-contained document: inline script and style, nothing from elsewhere.
const PAGE_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/**
 * The status app's HTTP endpoint: `/` the status page, `/events` its live feed (Server-Sent
 * Events: `history` once, then `snapshot` every round), `/metrics` Prometheus text, `/healthz`.
 * GET and HEAD only. Nothing a request carries reaches the cluster: the server only reads the
 * last round.
 */
export class StatusServer {
  private readonly server: Server;
  private readonly clients = new Set<ServerResponse>();
  private keepAlive: NodeJS.Timeout | undefined;
  private readonly options: StatusServerOptions;

  constructor(
    private readonly source: StatusSource,
    private readonly log: Logger,
    options: Partial<StatusServerOptions> = {},
  ) {
    this.options = { ...defaultStatusServerOptions, ...options };
    this.server = createServer((req, res) => {
      try {
        this.route(req, res);
      } catch (err) {
        this.log.error({ err, url: req.url }, 'status request failed');
        if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
        else res.destroy();
      }
    });
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 15_000;
    this.server.maxHeadersCount = 50;
    this.server.on('clientError', (_err, socket) => socket.destroy());
  }

  /** Listens; resolves with the address (port 0 picks a free one: tests). */
  listen(host: string, port: number): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen({ host, port }, () => {
        this.server.off('error', onError);
        this.keepAlive = setInterval(() => this.broadcastRaw(': keep-alive\n\n'), this.options.keepAliveMs);
        this.keepAlive.unref();
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  /** Sends the round to every open page. */
  publish(snapshot: Snapshot): void {
    if (this.clients.size === 0) return;
    this.broadcastRaw(`event: snapshot\ndata: ${JSON.stringify(snapshot)}\n\n`);
  }

  get eventClients(): number {
    return this.clients.size;
  }

  async close(): Promise<void> {
    if (this.keepAlive) clearInterval(this.keepAlive);
    for (const c of this.clients) c.end();
    this.clients.clear();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private route(req: IncomingMessage, res: ServerResponse): void {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
    }
    const path = (req.url ?? '/').split('?')[0];
    switch (path) {
      case '/':
      case '/index.html':
        res.setHeader('content-security-policy', PAGE_CSP);
        return send(res, 200, 'text/html; charset=utf-8', STATUS_PAGE, req.method === 'HEAD');
      case '/events':
        return this.openEvents(req, res);
      case '/metrics':
        this.source.metrics().then(
          (text) => send(res, 200, this.source.metricsContentType, text, req.method === 'HEAD'),
          (err: unknown) => {
            this.log.error({ err }, '/metrics failed');
            send(res, 500, 'text/plain; charset=utf-8', 'metrics failed\n');
          },
        );
        return;
      case '/healthz':
        return this.healthz(req, res);
      default:
        return send(res, 404, 'text/plain; charset=utf-8', 'not found: try /, /metrics, /events or /healthz\n');
    }
  }

  /** 200 while rounds keep coming, whatever the cluster's state (which the body says); 503 when stuck. */
  private healthz(req: IncomingMessage, res: ServerResponse): void {
    const last = this.source.lastRoundAt();
    const age = last > 0 ? Date.now() - last : undefined;
    const s = this.source.snapshot();
    const polling = age !== undefined && age <= this.options.staleAfterMs;
    const body = {
      status: polling ? 'ok' : 'stale',
      lastRoundAgoMs: age ?? null,
      cluster: s?.cluster ?? 'unknown',
      queue: s?.queue.state ?? 'unknown',
      answering: s?.point.answering ?? 0,
      asked: s?.point.asked ?? 0,
      notAnswering: s?.processes.filter((p) => p.state !== 'up').map((p) => p.key) ?? [],
    };
    send(res, polling ? 200 : 503, 'application/json; charset=utf-8', `${JSON.stringify(body)}\n`, req.method === 'HEAD');
  }

  private openEvents(req: IncomingMessage, res: ServerResponse): void {
    if (this.clients.size >= this.options.maxEventClients) {
      res.setHeader('retry-after', '10');
      return send(res, 503, 'text/plain; charset=utf-8', 'too many open status pages\n');
    }
    res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'text/event-stream; charset=utf-8', connection: 'keep-alive' });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    req.socket.setNoDelay(true);
    req.socket.setTimeout(0);
    this.clients.add(res);
    const drop = (): void => {
      this.clients.delete(res);
    };
    res.on('close', drop);
    res.on('error', drop);
    res.write(`retry: 2000\nevent: history\ndata: ${JSON.stringify({ points: this.source.history(), snapshot: this.source.snapshot() ?? null })}\n\n`);
  }

  private broadcastRaw(text: string): void {
    for (const c of this.clients) {
      // A page that does not read (a stuck tab) is dropped rather than buffered without bound.
      if (c.writableLength > 1 << 20) {
        c.destroy();
        this.clients.delete(c);
        continue;
      }
      c.write(text);
    }
  }
}

function send(res: ServerResponse, code: number, type: string, body: string, headOnly = false): void {
  const bytes = Buffer.from(body, 'utf8');
  res.writeHead(code, { ...SECURITY_HEADERS, 'content-type': type, 'content-length': bytes.length });
  res.end(headOnly ? undefined : bytes);
}
