import Ajv from 'ajv';
import { hostname } from 'node:os';
import { ConfigError } from './errors';
import { parseNatsUrls } from './ipc/nats/nats-url';
import { loadSchema } from './schemas';

/**
 * The cluster's configuration: read from the environment once, validated against
 * schemas/config.json (which holds the defaults), then frozen. A bad value is a ConfigError
 * that names every offending variable; the process does not start.
 */
export interface Config {
  readonly chatdHost: string;
  readonly chatdPort: number;
  readonly mqKey: number;
  readonly mqMode: number;
  /** Uids trusted to own or create the queue besides root and the process's euid (MQ_TRUSTED_UIDS). */
  readonly mqTrustedUids: readonly number[];
  readonly mqBatchBytes: number;
  /** msg_qbytes asked for at start (0: leave the kernel default). Needs CAP_SYS_RESOURCE above msgmnb. */
  readonly mqCapacityBytes: number;
  readonly shards: number;
  readonly channels: number;
  readonly maxFrameBytes: number;
  readonly maxConnections: number;
  readonly requestTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** A client frame must be complete this long after its first byte arrived. */
  readonly frameTimeoutMs: number;
  readonly ratePerSec: number;
  readonly rateBurst: number;
  readonly writeBufferBytes: number;
  /** Unsent bytes to one client (replies included) past which it is closed. */
  readonly maxUnsentBytes: number;
  /** Unsent bytes to all clients together past which pushes are shed and laggards not read. */
  readonly outputBudgetBytes: number;
  readonly heartbeatMs: number;
  readonly deadAfterMs: number;
  readonly shardRecoveryMs: number;
  /** A member shard not live this long is removed from the membership (docs/resharding.md). */
  readonly shardGoneMs: number;
  /** New shards join the membership once none has appeared for this long. */
  readonly reshardQuietMs: number;
  /** Entries a shard's shared-memory replica holds for its receiver thread's FINDs (0: none). */
  readonly replicaEntries: number;
  readonly logLevel: string;
  /** What carries the cluster's messages: the host's SysV queue, or NATS (several hosts; docs/multi-host.md). */
  readonly transport: 'sysv' | 'nats';
  /** NATS servers (TRANSPORT=nats), normalized `nats://host:port` URLs. */
  readonly natsUrls: readonly string[];
  /** Subject prefix on NATS: `chatd.<CLUSTER_NAME>.m.<mtype>`, so clusters can share one NATS server. */
  readonly clusterName: string;
  /** Address of the status app's HTTP endpoint (/metrics, the status page); 127.0.0.1 by default. */
  readonly statusHost: string;
  /** Its port; 0 disables the status app (ecosystem.config.js then leaves it out). */
  readonly statusPort: number;
  /**
   * What this host runs (docs/multi-host.md): `all` (chatD, gc, status and the shards: one
   * host, as always), `front` (chatD, gc, status) or `shards` (channelD only). `front` and
   * `shards` need TRANSPORT=nats.
   */
  readonly hostRole: 'all' | 'front' | 'shards';
  /** First shard index of this host (HOST_ROLE=shards): shard = SHARD_BASE + NODE_APP_INSTANCE. */
  readonly shardBase: number;
  /**
   * This host's name in heartbeats and HELLOs: the collector checks pids and listens to PM2
   * only for processes of its own host (default: os.hostname(), made safe).
   */
  readonly hostId: string;
  /**
   * CLOCK_CORRECTION: correct envelope deadlines by this process's measured offset to the
   * collector's clock when it is clearly beyond its error bound (docs/multi-host.md "Clock skew").
   */
  readonly clockCorrection: boolean;
}

/** HOST_ID when none is set: the hostname, cut to the characters and length HOST_ID allows. */
export function defaultHostId(name: string = hostname()): string {
  const safe = name.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 64);
  return safe === '' ? 'localhost' : safe;
}

export const CONFIG_VARIABLES = Object.freeze(Object.keys(loadSchema('config.json').properties as object));

let validate: ReturnType<Ajv['compile']> | undefined;

export function parseMqKey(text: string): number {
  const v = /^0x/i.test(text) ? Number.parseInt(text.slice(2), 16) : Number.parseInt(text, 10);
  return v;
}

/** A comma-separated uid list (MQ_TRUSTED_UIDS); empty text is an empty list. */
export function parseUidList(text: string): number[] {
  return text
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '')
    .map((t) => Number.parseInt(t, 10));
}

/** Reads, validates and freezes. Unknown variables are ignored; only ours are read. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  if (!validate) {
    const ajv = new Ajv({ allErrors: true, coerceTypes: true, useDefaults: true, strict: true });
    validate = ajv.compile(loadSchema('config.json'));
  }
  const raw: Record<string, unknown> = {};
  for (const name of CONFIG_VARIABLES) {
    const value = env[name];
    if (value !== undefined && value !== '') raw[name] = value.trim();
  }
  const problems: string[] = [];
  if (!validate(raw)) {
    for (const e of validate.errors ?? []) {
      const name = e.instancePath.replace(/^\//, '') || String(e.params?.additionalProperty ?? '');
      problems.push(`${name}=${JSON.stringify(env[name] ?? '')}: ${e.message ?? 'invalid'}`);
    }
  }
  const mqKey = parseMqKey(String(raw.MQ_KEY ?? '1234'));
  if (problems.length === 0 && !(mqKey >= 1 && mqKey <= 0x7fffffff)) {
    problems.push(`MQ_KEY=${JSON.stringify(env.MQ_KEY)}: must be a SysV key from 1 to 0x7fffffff (decimal or 0x hex)`);
  }
  const mqTrustedUids = parseUidList(String(raw.MQ_TRUSTED_UIDS ?? ''));
  if (problems.length === 0 && mqTrustedUids.some((u) => !(u >= 0 && u <= 0xfffffffe))) {
    problems.push(`MQ_TRUSTED_UIDS=${JSON.stringify(env.MQ_TRUSTED_UIDS)}: every uid must be from 0 to 4294967294`);
  }
  let natsUrls: string[] = [];
  try {
    natsUrls = parseNatsUrls(String(raw.NATS_URL ?? 'nats://127.0.0.1:4222'));
  } catch (err) {
    problems.push(`NATS_URL=${JSON.stringify(env.NATS_URL ?? '')}: ${(err as Error).message}`);
  }
  if (problems.length === 0) problems.push(...roleProblems(raw));
  if (problems.length > 0) {
    throw new ConfigError(`invalid configuration: ${problems.join('; ')}`, problems);
  }
  return Object.freeze({
    chatdHost: raw.CHATD_HOST as string,
    chatdPort: raw.CHATD_PORT as number,
    mqKey,
    mqMode: Number.parseInt(raw.MQ_MODE as string, 8),
    mqTrustedUids: Object.freeze(mqTrustedUids),
    mqBatchBytes: raw.MQ_BATCH_BYTES as number,
    mqCapacityBytes: raw.MQ_CAPACITY_BYTES as number,
    shards: raw.CHANNELD_SHARDS as number,
    channels: raw.CHANNELS as number,
    maxFrameBytes: raw.CHATD_MAX_FRAME as number,
    maxConnections: raw.CHATD_MAX_CONNECTIONS as number,
    requestTimeoutMs: raw.CHATD_REQUEST_TIMEOUT_MS as number,
    idleTimeoutMs: raw.CHATD_IDLE_TIMEOUT_MS as number,
    frameTimeoutMs: raw.CHATD_FRAME_TIMEOUT_MS as number,
    ratePerSec: raw.CHATD_RATE_PER_SEC as number,
    rateBurst: raw.CHATD_RATE_BURST as number,
    writeBufferBytes: raw.CHATD_WRITE_BUFFER_BYTES as number,
    maxUnsentBytes: raw.CHATD_MAX_UNSENT_BYTES as number,
    outputBudgetBytes: raw.CHATD_OUTPUT_BUDGET_BYTES as number,
    heartbeatMs: raw.HEARTBEAT_MS as number,
    deadAfterMs: raw.DEAD_AFTER_MS as number,
    shardRecoveryMs: raw.SHARD_RECOVERY_MS as number,
    shardGoneMs: raw.SHARD_GONE_MS as number,
    reshardQuietMs: raw.RESHARD_QUIET_MS as number,
    replicaEntries: raw.CHANNELD_REPLICA_ENTRIES as number,
    logLevel: raw.LOG_LEVEL as string,
    transport: raw.TRANSPORT as 'sysv' | 'nats',
    natsUrls: Object.freeze(natsUrls),
    clusterName: raw.CLUSTER_NAME as string,
    statusHost: raw.STATUS_HOST as string,
    statusPort: raw.STATUS_PORT as number,
    hostRole: raw.HOST_ROLE as Config['hostRole'],
    shardBase: raw.SHARD_BASE as number,
    hostId: (raw.HOST_ID as string | undefined) ?? defaultHostId(),
    clockCorrection: raw.CLOCK_CORRECTION === 'on',
  });
}

/**
 * The combinations of HOST_ROLE, SHARD_BASE and TRANSPORT that make sense (docs/multi-host.md):
 * a SysV queue never leaves its host, so only HOST_ROLE=all runs on it; SHARD_BASE places the
 * shards of a shard host, and the last of them must stay below 900.
 */
function roleProblems(raw: Record<string, unknown>): string[] {
  const role = raw.HOST_ROLE as string;
  const base = raw.SHARD_BASE as number;
  const shards = raw.CHANNELD_SHARDS as number;
  const out: string[] = [];
  if (role !== 'all' && raw.TRANSPORT !== 'nats') {
    out.push(`HOST_ROLE=${JSON.stringify(role)}: several hosts need TRANSPORT=nats (a SysV queue never leaves its host); TRANSPORT is ${JSON.stringify(raw.TRANSPORT)}`);
  }
  if (base !== 0 && role !== 'shards') {
    out.push(`SHARD_BASE=${base}: only a shard host places its shards (HOST_ROLE=shards); HOST_ROLE is ${JSON.stringify(role)}`);
  }
  if (role === 'shards' && base + shards > 900) {
    out.push(`SHARD_BASE=${base}: with CHANNELD_SHARDS=${shards} the last shard index would be ${base + shards - 1}; shard indexes stop at 899`);
  }
  return out;
}
