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
    this.heartbeat = new Heartbeat(endpoint, { role: 'chatd', index }, config.heartbeatMs, (m) => {
      this.shards.setMembership(m.shards);
      this.service.noteMembership(m.shards);
    });
    this.shards.onStrangerReply = () => this.heartbeat.beatNow();
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

  /** Connections and the requests they have in flight (a walk over the connections: for reads, not per request). */
  frontGauges(): { connections: number; inFlight: number } {
    let inFlight = 0;
    for (const c of this.connections) inFlight += c.inFlight;
    return { connections: this.connections.size, inFlight };
  }

  /** Stops accepting, ends every session (so the shards forget them), then stops receiving. */
  async stop(): Promise<void> {
    this.heartbeat.stop();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const c of this.connections) c.fail(ClientErrorCode.UNAVAILABLE, 'server shutting down');
    });
    const ends = [...this.sessions.all()].map((s) => this.reaper.end(s.name, s.id));
    await Promise.race([Promise.allSettled(ends), new Promise((r) => setTimeout(r, 1500))]);
    this.reaper.stop(); // removals still unconfirmed go with this incarnation (PURGE by gc or our successor)
    await this.legacy.close();
    await this.endpoint.close();
  }
}
