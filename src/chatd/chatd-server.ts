import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { Config } from '../config';
import { ClientErrorCode } from '../errors';
import type { Endpoint } from '../ipc/endpoint';
import type { MessageTransport } from '../ipc/transport';
import type { Logger } from '../log';
import { encodeFrame } from '../protocol/frame-encoder';
import { errorPush } from '../protocol/replies';
import { createRequestValidator } from '../protocol/request-validator';
import { Heartbeat } from '../runtime/heartbeat';
import { connectionCap, descriptorHeadroom, openDescriptors, raiseNoFileLimit } from '../runtime/rlimit';
import { ChatService } from './chat-service';
import { ClientConnection, type ConnectionOptions } from './client-connection';
import { LegacyGateway } from './legacy-gateway';
import { SessionReaper } from './session-reaper';
import { SessionTable } from './session';
import { ShardClient } from './shard-client';

/** How long a stopping chatD waits for its sessions' removals to be confirmed. */
const REMOVAL_PATIENCE_MS = 1500;

/**
 * chatD: the TCP front end. Owns the listening socket and the connections; the ops live in
 * ChatService, the shards behind ShardClient, session clean-up in SessionReaper.
 */
export class ChatdServer {
  readonly sessions = new SessionTable();
  readonly shards: ShardClient;
  readonly service: ChatService;
  readonly reaper: SessionReaper;
  readonly legacy: LegacyGateway;
  private readonly heartbeat: Heartbeat;
  private readonly server: Server;
  private readonly connections = new Set<ClientConnection>();
  private nextConnId = 1;
  private readonly connOptions: ConnectionOptions;
  /** CHATD_MAX_CONNECTIONS, or less when the descriptor limit is lower (set by start()). */
  maxConnections: number;
  /** Sockets being refused (UNAVAILABLE then close): each holds a descriptor meanwhile. */
  private refusing = 0;
  private refuseLimit = 64;
  readonly frontCounters = { refused: 0, refusedAbruptly: 0, acceptErrors: 0 };
  private acceptErrorLog = { last: 0, suppressed: 0 };
  /**
   * Called when the collector fenced this incarnation (declared it dead: its sessions are
   * purged on the shards, so its clients would read as offline). main.ts exits the process;
   * its clients reconnect to the new incarnation (docs/multi-host.md).
   */
  fencedHandler: (() => void) | undefined;

  constructor(
    private readonly config: Config,
    transport: MessageTransport,
    private readonly endpoint: Endpoint,
    private readonly log: Logger,
    index = 0,
  ) {
    this.shards = new ShardClient(endpoint, config.shards, config.requestTimeoutMs, config.deadAfterMs * 2);
    this.reaper = new SessionReaper(endpoint, this.shards, log);
    this.service = new ChatService(
      endpoint,
      this.shards,
      this.sessions,
      this.reaper,
      createRequestValidator({ channels: config.channels }),
      { channels: config.channels, requestTimeoutMs: config.requestTimeoutMs, front: () => this.frontGauges() },
      log,
    );
    this.legacy = new LegacyGateway(transport, this.shards, log);
    this.heartbeat = new Heartbeat(
      endpoint,
      { role: 'chatd', index, host: config.hostId },
      config.heartbeatMs,
      (m) => {
        this.shards.setMembership(m.shards, m.view);
        this.service.noteMembership(m.shards);
      },
      () => this.shards.report(),
      () => this.onFenced(),
      { correct: config.clockCorrection, log },
    );
    this.shards.onStrangerReply = () => this.heartbeat.beatNow();
    this.shards.onWrongEpoch = () => this.heartbeat.beatNow();
    this.service.onBehind = () => this.heartbeat.beatNow();
    // The hand-over of a new epoch: resend our sessions to each shard that gained buckets.
    this.shards.onHandover = (shard, view) => this.service.resyncOnce(shard, view);
    this.connOptions = {
      maxFrameBytes: config.maxFrameBytes,
      idleTimeoutMs: config.idleTimeoutMs,
      ratePerSec: config.ratePerSec,
      rateBurst: config.rateBurst,
      writeBufferBytes: config.writeBufferBytes,
      maxUnsentBytes: Math.max(config.maxUnsentBytes, config.writeBufferBytes * 2),
      outputBudgetBytes: config.outputBudgetBytes,
      maxInFlight: 1024,
      frameTimeoutMs: config.frameTimeoutMs,
      // Time enough for the slowest request (a whisper: a find, then a forward) to be answered.
      replyGraceMs: config.requestTimeoutMs * 2 + 1000,
    };
    this.maxConnections = config.maxConnections;
    this.server = createServer({ noDelay: true }, (socket) => {
      if (this.connections.size >= this.maxConnections) {
        this.refuse(socket);
        return;
      }
      const conn = new ClientConnection(socket, this.nextConnId++, this.connOptions, {
        onFrame: (c, f) => this.service.onFrame(c, f),
        onClose: (c) => {
          this.connections.delete(c);
          this.service.onClose(c);
        },
      }, log);
      this.connections.add(conn);
    });
  }

  /**
   * Past the cap: UNAVAILABLE, then close; the descriptor is held at most 1 s (a peer that
   * never closes its side would hold it for ever). While too many refusals are under way
   * (a connection flood), further ones are closed at once without the push.
   */
  private refuse(socket: Socket): void {
    this.frontCounters.refused++;
    socket.on('error', () => {});
    if (this.refusing >= this.refuseLimit) {
      this.frontCounters.refusedAbruptly++;
      socket.destroy();
      return;
    }
    this.refusing++;
    let done = false;
    const release = (): void => {
      if (done) return;
      done = true;
      this.refusing--;
      clearTimeout(timer);
    };
    const timer = setTimeout(() => socket.destroy(), 1000);
    socket.once('close', release);
    socket.resume(); // what the client sent is discarded (unread input would turn the close into a reset)
    socket.end(encodeFrame(errorPush(ClientErrorCode.UNAVAILABLE, 'server full; retry later')));
  }

  /** Accept failures (EMFILE, ENFILE, ...): logged at most every 5 s, never fatal. */
  private onServerError(err: NodeJS.ErrnoException): void {
    this.frontCounters.acceptErrors++;
    const now = Date.now();
    if (now - this.acceptErrorLog.last < 5000) {
      this.acceptErrorLog.suppressed++;
      return;
    }
    this.log.warn({ err, code: err.code, suppressed: this.acceptErrorLog.suppressed, connections: this.connections.size }, 'accept failed');
    this.acceptErrorLog.last = now;
    this.acceptErrorLog.suppressed = 0;
  }

  /** Raises RLIMIT_NOFILE's soft limit to the hard one and caps connections below it. */
  private sizeConnectionCap(): void {
    try {
      const lim = raiseNoFileLimit();
      const open = openDescriptors();
      this.maxConnections = connectionCap(this.config.maxConnections, lim.soft, open);
      this.refuseLimit = Math.max(8, Math.floor(descriptorHeadroom(lim.soft) / 2));
      const fields = {
        maxConnections: this.maxConnections,
        configured: this.config.maxConnections,
        nofileSoft: lim.soft,
        nofileHard: lim.hard,
        nofileSoftAtStart: lim.softBefore,
        openDescriptors: open,
        raiseError: lim.raiseError,
      };
      if (this.maxConnections < this.config.maxConnections) {
        this.log.warn(fields, 'connection cap lowered below CHATD_MAX_CONNECTIONS to fit the open-file limit (raise ulimit -Hn / LimitNOFILE)');
      } else this.log.info(fields, 'connection cap');
    } catch (err) {
      this.log.warn({ err, maxConnections: this.maxConnections }, 'could not read the open-file limit; connection cap as configured');
    }
  }

  /** Starts receiving, clears what an earlier incarnation left, then listens. */
  async start(): Promise<AddressInfo> {
    this.sizeConnectionCap();
    this.endpoint.start((rec, reply) => this.service.onRecord(rec, reply));
    this.legacy.start();
    this.heartbeat.start();
    // Who owns a name comes with the collector's membership epoch: wait for it a little, so
    // that the first clients are not refused (docs/resharding.md); without it, listen anyway.
    if (!(await this.shards.whenView(this.config.deadAfterMs * 2))) this.log.warn('no membership epoch from the collector yet: directory requests get UNAVAILABLE until one comes');
    const purged = await this.service.purgeEarlierIncarnations();
    if (purged > 0) this.log.info({ purged }, 'removed entries left by an earlier chatD incarnation');
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.config.chatdPort, this.config.chatdHost, () => {
        this.server.off('error', reject);
        this.server.on('error', (err) => this.onServerError(err));
        resolve();
      });
    });
    return this.server.address() as AddressInfo;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  private onFenced(): void {
    this.log.error({ connections: this.connections.size, sessions: this.sessions.size }, 'the collector declared this chatD incarnation dead (fenced): its sessions are purged, it stops serving');
    this.fencedHandler?.();
  }

  /** Connections and the requests they have in flight (a walk over the connections: for reads, not per request). */
  frontGauges(): { connections: number; inFlight: number } {
    let inFlight = 0;
    for (const c of this.connections) inFlight += c.inFlight;
    return { connections: this.connections.size, inFlight };
  }


  /**
   * Longest stop(): the connections' drain (replyGraceMs, then at most 2 s for a peer that does
   * not read, and a margin), then the removals (REMOVAL_PATIENCE_MS). main.ts gives the shutdown this much plus a margin,
   * and ecosystem.config.js gives chatD a kill_timeout above it.
   */
  get stopBudgetMs(): number {
    return this.connOptions.replyGraceMs + 2500 + REMOVAL_PATIENCE_MS;
  }

  /**
   * Graceful stop (pm2 stop, restart, reload; docs/operations.md "Reload"): stops accepting and
   * reading at once; every request already read gets its reply (failAfterReplies), then each
   * connection gets the shutdown push and is closed; then every session is ended (so the
   * shards forget them) and receiving stops. A request without a reply when the push arrives
   * was not read and took no effect.
   */
  async stop(): Promise<void> {
    this.heartbeat.stop();
    const drained = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const inFlight = [...this.connections].reduce((n, c) => n + c.inFlight, 0);
    this.log.info({ connections: this.connections.size, inFlight, sessions: this.sessions.size }, 'shutting down: answering requests in flight, then closing connections');
    for (const c of this.connections) c.failAfterReplies(ClientErrorCode.UNAVAILABLE, 'server shutting down');
    let drainTimer: NodeJS.Timeout | undefined;
    await Promise.race([drained, new Promise<void>((r) => (drainTimer = setTimeout(r, this.connOptions.replyGraceMs + 2500)))]);
    clearTimeout(drainTimer);
    // Sessions of closed connections are being ended already (onClose); end any left, then
    // wait for every removal to be confirmed (the 2-second rule), within the patience.
    for (const s of [...this.sessions.all()]) void this.reaper.end(s.name, s.id);
    const until = Date.now() + REMOVAL_PATIENCE_MS;
    while (this.reaper.unconfirmed > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    if (this.reaper.unconfirmed > 0) this.log.warn({ unconfirmed: this.reaper.unconfirmed }, 'session removals unconfirmed at exit; the collector purges this incarnation');
    this.reaper.stop(); // removals still unconfirmed go with this incarnation (PURGE by gc or our successor)
    await this.legacy.close();
    await this.endpoint.close();
  }
}
