import { createServer, type AddressInfo, type Server } from 'node:net';
import type { Config } from '../config';
import { ClientErrorCode } from '../errors';
import type { Endpoint } from '../ipc/endpoint';
import type { MessageTransport } from '../ipc/transport';
import type { Logger } from '../log';
import { encodeFrame } from '../protocol/frame-encoder';
import { errorPush } from '../protocol/replies';
import { createRequestValidator } from '../protocol/request-validator';
import { Heartbeat } from '../runtime/heartbeat';
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
      { channels: config.channels, requestTimeoutMs: config.requestTimeoutMs },
      log,
    );
    this.legacy = new LegacyGateway(transport, this.shards, log);
    this.heartbeat = new Heartbeat(endpoint, { role: 'chatd', index }, config.heartbeatMs, (m) => {
      this.shards.setMembership(m.shards);
      this.service.noteMembership(m.shards);
    });
    this.connOptions = {
      maxFrameBytes: config.maxFrameBytes,
      idleTimeoutMs: config.idleTimeoutMs,
      ratePerSec: config.ratePerSec,
      rateBurst: config.rateBurst,
      writeBufferBytes: config.writeBufferBytes,
      maxInFlight: 1024,
    };
    this.server = createServer({ noDelay: true }, (socket) => {
      if (this.connections.size >= config.maxConnections) {
        socket.end(encodeFrame(errorPush(ClientErrorCode.UNAVAILABLE, 'server full; retry later')));
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

  /** Starts receiving, clears what an earlier incarnation left, then listens. */
  async start(): Promise<AddressInfo> {
    this.endpoint.start((rec, reply) => this.service.onRecord(rec, reply));
    this.legacy.start();
    this.heartbeat.start();
    const purged = await this.service.purgeEarlierIncarnations();
    if (purged > 0) this.log.info({ purged }, 'removed entries left by an earlier chatD incarnation');
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.config.chatdPort, this.config.chatdHost, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.server.address() as AddressInfo;
  }

  get connectionCount(): number {
    return this.connections.size;
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
