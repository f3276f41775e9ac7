import pino, { type Logger } from 'pino';
import { ChatdServer } from '../../src/chatd/chatd-server';
import { ShardServer } from '../../src/channeld/shard-server';
import { loadConfig, type Config } from '../../src/config';
import { Endpoint } from '../../src/ipc/endpoint';
import { LocalQueue, LocalTransport } from '../../src/ipc/local/local-transport';
import { MTYPE_GC, chatdMtype, shardMtype } from '../../src/ipc/mtypes';
import { Kind, Status } from '../../src/cluster/kinds';
import { encodePayload } from '../../src/cluster/messages';

/**
 * One chatD with its real TCP server and `shards` in-process shards over the local transport
 * (no PM2, no SysV queue): for front-end tests in mocha's process, and for
 * test/fixtures/local-chatd-main.ts, which runs the same thing in a child process.
 */
export interface LocalChatd {
  server: ChatdServer;
  port: number;
  config: Config;
  /** The in-process queue everything runs over (a tool endpoint may join it). */
  queue: LocalQueue;
  stop(): Promise<void>;
}

export async function startLocalChatd(env: Record<string, string> = {}, log: Logger = pino({ level: 'silent' })): Promise<LocalChatd> {
  const config = loadConfig({ CHATD_PORT: '0', CHANNELD_SHARDS: '2', SHARD_RECOVERY_MS: '100', CHATD_REQUEST_TIMEOUT_MS: '1000', ...env });
  const queue = new LocalQueue(1 << 22, 8192);
  const closers: (() => Promise<void>)[] = [];
  const transport = (): LocalTransport => {
    const t = new LocalTransport(queue);
    closers.push(() => t.close());
    return t;
  };
  // A stand-in collector for a cluster's first start: HELLO answered with "no chatD yet", so
  // the fresh shards go live (a shard never goes live on a timer), and the membership epoch 1
  // of CHANNELD_SHARDS members (docs/resharding.md) in every answer.
  const gt = transport();
  const gc = new Endpoint(gt, { mtype: MTYPE_GC, incarnation: 3, maxBatchBytes: 4096 });
  const view = { epoch: 1, members: [[0, config.shards - 1]] as [number, number][] };
  gc.start((rec, reply) => {
    if (rec.kind === Kind.HELLO && reply) reply(Status.OK, encodePayload('helloReply', { chatds: [], view }));
    if (rec.kind === Kind.HEARTBEAT && reply) {
      const shards = Array.from({ length: config.shards }, (_, i): [number, number] => [i, 500 + i]);
      reply(Status.OK, encodePayload('membership', { shards, view: { ...view, settled: true } }));
    }
  });
  closers.push(() => gc.close());
  const shards: ShardServer[] = [];
  for (let i = 0; i < config.shards; i++) {
    const e = new Endpoint(transport(), { mtype: shardMtype(i), incarnation: 500 + i, maxBatchBytes: 4096 });
    const s = new ShardServer(e, { shard: i, recoveryMs: 50, log });
    closers.push(async () => {
      s.stop();
      await e.close();
    });
    s.start();
    shards.push(s);
  }
  await Promise.all(shards.map((s) => s.whenLive()));
  const t = transport();
  const e = new Endpoint(t, { mtype: chatdMtype(0), incarnation: 900, maxBatchBytes: 4096 });
  const server = new ChatdServer(config, t, e, log, 0);
  const address = await server.start();
  closers.push(() => server.stop());
  let stopped = false;
  return {
    server,
    port: address.port,
    config,
    queue,
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const c of closers.reverse()) await c().catch(() => {});
      queue.remove();
    },
  };
}
