/**
 * The `fork` comparison server of `npm run bench:e2e`: a front process (plain `net`, the same
 * protocol code as the single server) and N shard processes started with child_process.fork
 * (fork-shard.ts). A name belongs to shard firstEpochOwner(name, N), the cluster's own routing at its first epoch. The
 * front batches: every request of one event-loop turn bound for one shard goes in one
 * `child.send` carrying an array; the shards answer the same way. This is the straightforward
 * multi-process design the cluster is measured against.
 *
 * Run: node dist/bench/e2e/fork-front.js [port] [shards]   (defaults: any free port, 4)
 * Forked with an IPC channel it reports { type: 'listening', port, pids: [front, ...shards] }
 * and exits, with its shards, when the parent goes away.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { firstEpochOwner } from '../../src/cluster/ownership';
import type { ShardAnswer, ShardRequest } from './fork-shard';
import { ProtocolServer, exitWithParent, type Directory, type ServerReport } from './proto';

const port = Number(process.argv[2] ?? process.env.BENCH_PORT ?? 0) || 0;
const shardCount = Number(process.argv[3] ?? process.env.BENCH_FORK_SHARDS ?? 4) || 4;

const shards: ChildProcess[] = [];
const outbox: ShardRequest[][] = [];
const pending = new Map<number, (a: ShardAnswer) => void>();
let nextRid = 1;
let flushScheduled = false;

function killShards(): void {
  for (const c of shards) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
}

for (let i = 0; i < shardCount; i++) {
  const child = fork(join(__dirname, 'fork-shard.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  child.on('message', (batch: ShardAnswer[]) => {
    for (const a of batch) {
      const rid = a[0] as number;
      const cb = pending.get(rid);
      if (cb) {
        pending.delete(rid);
        cb(a);
      }
    }
  });
  child.on('exit', (code, signal) => {
    console.error(`fork-front: shard ${i} exited (${code ?? signal}); stopping`);
    killShards();
    process.exit(1);
  });
  shards.push(child);
  outbox.push([]);
}
process.on('exit', killShards);

function flush(): void {
  flushScheduled = false;
  for (let i = 0; i < shardCount; i++) {
    const batch = outbox[i]!;
    if (batch.length === 0) continue;
    outbox[i] = [];
    shards[i]!.send(batch);
  }
}

function post(key: string, req: ShardRequest, cb?: (a: ShardAnswer) => void): void {
  if (cb) pending.set(req[1], cb);
  outbox[firstEpochOwner(key, shardCount)]!.push(req);
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
}

function rid(): number {
  const r = nextRid;
  nextRid = r >= 0x7fff_fffe ? 1 : r + 1;
  return r;
}

const dir: Directory = {
  login(key, name, channel, done) {
    post(key, [0, rid(), key, name, channel], (a) => done(a[1] === 1));
  },
  find(key, done) {
    post(key, [1, rid(), key], (a) => done(a.length > 1 ? { name: a[1] as string, channel: a[2] as number } : undefined));
  },
  move(key, channel, done) {
    post(key, [2, rid(), key, channel], () => done());
  },
  remove(key, done) {
    if (done) post(key, [3, rid(), key], () => done());
    else post(key, [3, 0, key]);
  },
};

const proto = new ProtocolServer(dir);
const server = createServer({ noDelay: true }, (socket) => proto.accept(socket));
server.listen(port, '127.0.0.1', () => {
  const addr = server.address() as AddressInfo;
  const report: ServerReport = { type: 'listening', port: addr.port, pids: [process.pid, ...shards.map((c) => c.pid!)] };
  if (process.send) process.send(report);
  else console.log(`fork: listening on 127.0.0.1:${addr.port}, shards ${report.pids.slice(1).join(' ')}`);
});
if (process.send) exitWithParent(killShards);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    killShards();
    process.exit(0);
  });
}
