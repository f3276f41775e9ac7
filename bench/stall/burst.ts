/**
 * The rig of docs/reliability.md, "The stall": `STALL_SHARDS` shard receiver threads with the
 * inline FIND handler (each its own replica, live, every name it owns logged in) and one
 * requester Endpoint with chatD's settings (4 KiB envelopes, the default credit), all on one
 * real private queue of the kernel's default size, in one process. Each round starts idle,
 * then keeps `STALL_INFLIGHT` finds in flight (closed loop, like bench:e2e's pipelined
 * scenario, topped up by at most 256 per event-loop turn as chatD reads its connections) for
 * `STALL_ROUND_MS`, then drains. A round "stalls" when no reply arrives for 500 ms or more.
 *
 *   npm run build && node dist/bench/stall/burst.js
 *
 * Prints one line per round and a summary; exit code 1 when a round stalled or a reply was
 * wrong. The queue is removed on any way out.
 */
import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { Kind, Status } from '../../src/cluster/kinds';
import { normalizeName } from '../../src/cluster/names';
import { readFindReply } from '../../src/cluster/records';
import { OwnershipView } from '../../src/cluster/ownership';
import { BucketStates } from '../../src/channeld/bucket-states';
import { Directory } from '../../src/channeld/directory';
import { ReplicaWriter, createReplicaMemory } from '../../src/channeld/directory-replica';
import { Endpoint, RequestError, newIncarnation, type ReplySink } from '../../src/ipc';
import { SysvQueue } from '../../src/ipc/sysv/sysv-queue';
import { SysvTransport, defaultSysvTransportOptions } from '../../src/ipc/sysv/sysv-transport';
import { chatdMtype, shardMtype } from '../../src/ipc/mtypes';

const num = (name: string, dflt: number): number => {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name}=${v}: expected a positive integer`);
  return n;
};
const ROUNDS = num('STALL_ROUNDS', 30);
const SHARDS = num('STALL_SHARDS', 4);
const IN_FLIGHT = num('STALL_INFLIGHT', 3200);
const ROUND_MS = num('STALL_ROUND_MS', 1000);
const TIMEOUT_MS = num('STALL_TIMEOUT_MS', 1500);
const IDLE_MS = num('STALL_IDLE_MS', 200);
const PER_TURN = 256;
const STALL_GAP_MS = 500;
const CHARACTERS = 1000;

const queue = SysvQueue.createPrivate();
const removeQueue = (): void => {
  try {
    queue.remove();
  } catch {
    /* gone */
  }
};
process.on('exit', removeQueue);
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));

const view = new OwnershipView(1, Array.from({ length: SHARDS }, (_, i) => i));
const names = Array.from({ length: CHARACTERS }, (_, i) => `전사_${i}_Warrior`);
const keys = names.map((n) => normalizeName(n));
const channelOf = (i: number): number => 1 + (i % 20);
const ownerOf = keys.map((k) => view.ownerOfKey(k));

interface Shard {
  transport: SysvTransport;
  replica: ReplicaWriter;
}

function startShard(shard: number, requester: number, requesterInc: number): Shard {
  const memory = createReplicaMemory(2048);
  const replica = new ReplicaWriter(memory);
  const dir = new Directory(replica);
  const states = new BucketStates(shard, replica.states, (e) => replica.setEpoch(e));
  states.adopt(view);
  states.expect([]);
  keys.forEach((_, i) => {
    if (ownerOf[i] === shard) dir.login(names[i]!, channelOf(i), requester, requesterInc, i + 1);
  });
  replica.setLive(true);
  const incarnation = newIncarnation();
  const transport = new SysvTransport(queue, {
    ...defaultSysvTransportOptions,
    receiver: { ...defaultSysvTransportOptions.receiver, inline: { module: join(__dirname, '../../src/channeld/find-inline.js'), data: { replica: memory, mtype: shardMtype(shard), incarnation } } },
  });
  // Only FINDs are sent, all answerable from the replica: nothing should reach this handler.
  transport.receive(shardMtype(shard), (batch) => {
    mainThreadMessages += batch.length;
  });
  return { transport, replica };
}

let mainThreadMessages = 0;

interface Round {
  ok: number;
  wrong: number;
  errors: Record<string, number>;
  maxGapMs: number;
  lastAt: number;
}
let round: Round;
let outstanding = 0;
let issuing = false;
let cursor = 0;

const sink: ReplySink<number> = {
  onReply(i, status, body, start, end) {
    outstanding--;
    const now = performance.now();
    round.maxGapMs = Math.max(round.maxGapMs, now - round.lastAt);
    round.lastAt = now;
    const hit = status === Status.OK ? readFindReply(body, start, end) : undefined;
    if (hit && hit.channel === channelOf(i) && normalizeName(hit.name) === keys[i]) round.ok++;
    else if (status === Status.OK) round.wrong++;
    else round.errors[`status ${status}`] = (round.errors[`status ${status}`] ?? 0) + 1;
  },
  onFailure(_i, err: RequestError) {
    outstanding--;
    round.errors[err.code] = (round.errors[err.code] ?? 0) + 1;
  },
};

async function main(): Promise<void> {
  const requesterInc = newIncarnation();
  const shards = Array.from({ length: SHARDS }, (_, s) => startShard(s, chatdMtype(0), requesterInc));
  const transport = new SysvTransport(queue);
  const chatd = new Endpoint(transport, { mtype: chatdMtype(0), incarnation: requesterInc, maxBatchBytes: 4096 });
  chatd.start(() => {});
  const topUp = (): void => {
    if (!issuing) return;
    for (let k = 0; k < PER_TURN && outstanding < IN_FLIGHT; k++) {
      const i = cursor;
      cursor = (cursor + 7) % CHARACTERS;
      outstanding++;
      chatd.call(shardMtype(ownerOf[i]!), Kind.FIND, keys[i]!, TIMEOUT_MS, sink, i, 0, view.epoch);
    }
    setImmediate(topUp);
  };
  // The receiver threads take a while to start (koffi loaded in each): one find to every
  // shard, answered, before the rounds.
  for (let s = 0; s < SHARDS; s++) {
    const i = ownerOf.indexOf(s);
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32LE(view.epoch, 0);
    const r = await chatd.request(shardMtype(s), Kind.FIND, Buffer.concat([prefix, Buffer.from(keys[i]!, 'utf8')]), 30_000);
    if (r.status !== Status.OK) throw new Error(`shard ${s} answered status ${r.status} at warm-up`);
  }
  console.log(`stall rig: ${SHARDS} shard threads, ${IN_FLIGHT} finds in flight, rounds of ${ROUND_MS} ms after ${IDLE_MS} ms idle, timeout ${TIMEOUT_MS} ms, queue ${queue.stat().capacity} bytes`);
  let stalled = 0;
  let wrong = 0;
  let timeouts = 0;
  const rates: number[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    await new Promise((resolve) => setTimeout(resolve, IDLE_MS));
    const t0 = performance.now();
    round = { ok: 0, wrong: 0, errors: {}, maxGapMs: 0, lastAt: t0 };
    issuing = true;
    topUp();
    await new Promise((resolve) => setTimeout(resolve, ROUND_MS));
    issuing = false;
    const okInWindow = round.ok;
    const t1 = performance.now();
    while (outstanding > 0) await new Promise((resolve) => setTimeout(resolve, 5));
    const rate = (okInWindow * 1000) / (t1 - t0);
    rates.push(rate);
    const isStall = round.maxGapMs >= STALL_GAP_MS;
    if (isStall) stalled++;
    wrong += round.wrong;
    timeouts += round.errors.TIMEOUT ?? 0;
    const errs = Object.entries(round.errors).map(([k, v]) => `${k}=${v}`).join(' ');
    console.log(`round ${String(r).padStart(3)}  ${Math.round(rate).toLocaleString('en-US').padStart(7)} ok/s  longest gap ${round.maxGapMs.toFixed(0).padStart(5)} ms${isStall ? '  STALL' : ''}${round.wrong ? `  wrong ${round.wrong}` : ''}${errs ? `  ${errs}` : ''}`);
  }
  const deferred = shards.map((s) => Atomics.load(s.replica.views.control, 9));
  const sendFailed = shards.map((s) => Atomics.load(s.replica.views.control, 5));
  rates.sort((a, b) => a - b);
  console.log(`\n${ROUNDS} rounds: ${stalled} stalled (no reply for >= ${STALL_GAP_MS} ms), ${timeouts} TIMEOUT, ${wrong} wrong; median ${Math.round(rates[rates.length >> 1]!).toLocaleString('en-US')} ok/s`);
  console.log(`per shard thread: replies deferred to the main thread's backlog ${deferred.join(' ')} (always 0 before that existed), reply records dropped on a full queue ${sendFailed.join(' ')}; messages that reached the main thread ${mainThreadMessages}; requester's sends deferred to its backlog ${transport.counters().deferred}`);
  await chatd.close();
  await transport.close();
  await Promise.all(shards.map((s) => s.transport.close()));
  removeQueue();
  process.exitCode = stalled > 0 || wrong > 0 ? 1 : 0;
}

main().catch((err) => {
  console.error(err);
  removeQueue();
  process.exit(2);
});
