import { Writable } from 'node:stream';
import pino from 'pino';
import { Kind, Status } from '../../../src/cluster/kinds';
import { EMPTY, encodePayload, type HeartbeatPayload } from '../../../src/cluster/messages';
import { Collector, type CollectorTimings } from '../../../src/gc/collector';
import type { HygieneTimings } from '../../../src/gc/queue-hygiene';
import { Endpoint, LocalQueue, LocalTransport, MTYPE_GC, chatdMtype, shardMtype, type InboundRecord, type Reply } from '../../../src/ipc';
import type { Logger } from '../../../src/log';

/** A pino logger whose lines are parsed into `lines` (pino's own `sink()` habit). */
export function sinkLogger(level = 'debug'): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level }, stream), lines };
}

/** What a fake peer does with one request: answer [status, payload], or stay silent. */
export type Answer = [number, Uint8Array] | 'silent';

/** A fake cluster process: an Endpoint on its own LocalTransport that records what it gets. */
export class Peer {
  readonly endpoint: Endpoint;
  readonly got: InboundRecord[] = [];
  /** Per-kind answers; absent: OK with an empty payload. */
  readonly answers = new Map<number, (rec: InboundRecord) => Answer>();
  /** HOST_ID named in heartbeats and HELLOs (docs/multi-host.md); undefined: none, as before several hosts. */
  host: string | undefined;

  constructor(
    readonly transport: LocalTransport,
    readonly mtype: number,
    readonly incarnation: number,
    readonly pid: number,
  ) {
    this.endpoint = new Endpoint(transport, { mtype, incarnation, maxBatchBytes: 4096, timeoutSweepMs: 5 });
    this.endpoint.start((rec, reply) => {
      this.got.push({ ...rec, payload: Buffer.from(rec.payload) });
      if (!reply) return;
      const a = this.answers.get(rec.kind)?.(rec) ?? [Status.OK, EMPTY];
      if (a !== 'silent') reply(a[0], a[1]);
    });
  }

  kinds(kind: number): InboundRecord[] {
    return this.got.filter((r) => r.kind === kind);
  }

  heartbeat(role: HeartbeatPayload['role'], index: number, pid = this.pid, view?: Pick<HeartbeatPayload, 'view' | 'ready'>): Promise<Reply> {
    const host = this.host !== undefined ? { host: this.host } : {};
    return this.endpoint.request(MTYPE_GC, Kind.HEARTBEAT, encodePayload('heartbeat', { role, index, pid, ...host, ...view }), 2000);
  }

  /** A shard's HELLO, naming this peer's host when it has one. */
  hello(shard: number): Promise<Reply> {
    return this.request(Kind.HELLO, encodePayload('hello', { shard, ...(this.host !== undefined ? { host: this.host } : {}) }));
  }

  request(kind: number, payload: Uint8Array, timeoutMs = 2000): Promise<Reply> {
    return this.endpoint.request(MTYPE_GC, kind, payload, timeoutMs);
  }

  async close(): Promise<void> {
    await this.endpoint.close();
    await this.transport.close();
  }
}

/** Fast timings for tests (the defaults are for production). */
export const testTimings: Partial<CollectorTimings> = {
  tickMs: 10,
  warmupMs: 0,
  removeBudgetMs: 300,
  attemptTimeoutMs: 60,
  removeRetryMs: 20,
  purgeRetryMs: 20,
  stallMs: 10_000,
  hygieneEveryMs: 20,
  highWater: 0.5,
  legacyEveryMs: 20,
  legacyTtlMs: 2000,
  legacyFill: 0.5,
};

export interface Rig {
  readonly queue: LocalQueue;
  readonly collector: Collector;
  readonly lines: Record<string, unknown>[];
  /** Pids that "exist"; remove one to kill its process. */
  readonly alive: Set<number>;
  /** Every pid the collector asked about (its liveness function), in order. */
  readonly livenessAsked: number[];
  shard(index: number, incarnation?: number, pid?: number): Peer;
  chatd(instance: number, incarnation?: number, pid?: number): Peer;
  tool(mtype: number): Peer;
  close(): Promise<void>;
}

let nextPid = 40_000;

/** A collector over a LocalQueue with fake peers. Call `close()` in afterEach. */
export function makeRig(
  options: {
    shards?: number; deadAfterMs?: number; shardGoneMs?: number; reshardQuietMs?: number; timings?: Partial<CollectorTimings>; hygiene?: Partial<HygieneTimings>; start?: boolean;
    /** The collector's HOST_ID (docs/multi-host.md). */
    hostId?: string;
    /** The collector's own transport is connected (absent: always). */
    connected?: () => boolean;
    /** The collector's clock (absent: Date.now). */
    now?: () => number;
  } = {},
): Rig {
  const queue = new LocalQueue(16384, 8192);
  const { log, lines } = sinkLogger();
  const alive = new Set<number>();
  const livenessAsked: number[] = [];
  const gcTransport = new LocalTransport(queue);
  const gcEndpoint = new Endpoint(gcTransport, { mtype: MTYPE_GC, incarnation: 7, maxBatchBytes: 4096, timeoutSweepMs: 5 });
  const collector = new Collector({
    endpoint: gcEndpoint,
    config: {
      shards: options.shards ?? 2, deadAfterMs: options.deadAfterMs ?? 10_000, heartbeatMs: 50,
      ...(options.shardGoneMs !== undefined ? { shardGoneMs: options.shardGoneMs } : {}),
      ...(options.reshardQuietMs !== undefined ? { reshardQuietMs: options.reshardQuietMs } : {}),
      ...(options.hostId !== undefined ? { hostId: options.hostId } : {}),
    },
    log,
    drain: (mtype) => queue.take(mtype, Number.MAX_SAFE_INTEGER).length,
    liveness: (pid) => {
      livenessAsked.push(pid);
      return alive.has(pid);
    },
    ...(options.connected ? { connected: options.connected } : {}),
    ...(options.now ? { now: options.now } : {}),
    takeOne: (mtype) => queue.take(mtype, 1)[0] ?? null,
    putBack: (mtype, body) => queue.trySend(mtype, body),
    timings: { ...testTimings, ...options.timings },
    hygiene: options.hygiene,
  });
  if (options.start ?? true) collector.start();
  const peers: Peer[] = [];
  const peer = (mtype: number, incarnation: number, pid: number): Peer => {
    alive.add(pid);
    const p = new Peer(new LocalTransport(queue), mtype, incarnation, pid);
    peers.push(p);
    return p;
  };
  return {
    queue,
    collector,
    lines,
    alive,
    livenessAsked,
    shard: (index, incarnation = 500 + index, pid = nextPid++) => peer(shardMtype(index), incarnation, pid),
    chatd: (instance, incarnation = 900 + instance, pid = nextPid++) => peer(chatdMtype(instance), incarnation, pid),
    tool: (mtype) => peer(mtype, 1234, nextPid++),
    async close() {
      collector.stop();
      for (const p of peers) await p.close();
      await gcEndpoint.close();
      await gcTransport.close();
    },
  };
}

/** Log lines with message `msg`. */
export const linesWith = (lines: Record<string, unknown>[], msg: string): Record<string, unknown>[] => lines.filter((l) => l.msg === msg);
