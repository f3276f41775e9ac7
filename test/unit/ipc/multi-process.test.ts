import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Endpoint, SysvTransport, defaultSysvTransportOptions, newIncarnation, type InboundRecord } from '../../../src/ipc';
import { useQueues } from '../../helpers/queues';
import { waitFor, withTimeout } from '../../helpers/wait';

const PEER = join(__dirname, '..', '..', 'fixtures', 'mq-peer.js');

interface PeerEvent {
  event: string;
  pid: number;
  [key: string]: unknown;
}

/** A child process running test/fixtures/mq-peer.ts, with its JSON lines collected. */
class Peer {
  readonly events: PeerEvent[] = [];
  stderr = '';
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        this.events.push(JSON.parse(line) as PeerEvent);
      } catch {
        this.stderr += `(stdout) ${line}\n`;
      }
    });
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  event(name: string): PeerEvent | undefined {
    return this.events.find((e) => e.event === name);
  }

  async waitEvent(name: string, timeoutMs: number): Promise<PeerEvent> {
    await waitFor(() => this.event(name) !== undefined || this.child.exitCode !== null, timeoutMs, 5, `event ${name} from pid ${this.child.pid}`);
    const e = this.event(name);
    if (!e) throw new Error(`peer ${this.child.pid} exited (${this.child.exitCode}) before ${name}: ${this.stderr}${JSON.stringify(this.events)}`);
    return e;
  }
}

describe('ipc/multi-process', function () {
  this.timeout(60_000);
  const peers: Peer[] = [];

  // Registered before useQueues(): children die first, then their queue is removed.
  afterEach(async () => {
    const alive = peers.splice(0).filter((p) => p.child.exitCode === null && p.child.signalCode === null);
    for (const p of alive) p.child.kill('SIGKILL');
    await Promise.all(alive.map((p) => withTimeout(p.exited, 5000, `exit of pid ${p.child.pid}`)));
  });
  const scope = useQueues();

  function spawnPeer(args: object): Peer {
    const child = spawn(process.execPath, [PEER, JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const peer = new Peer(child);
    peers.push(peer);
    return peer;
  }

  it('two sender processes, one receiver process: 120,000 messages, none lost or duplicated, order kept per sender and mtype', async () => {
    const queue = scope.create();
    const mtypes = [100, 101];
    const senders = [1, 2];
    const perPair = 30_000; // 2 senders x 2 mtypes x 30,000 = 120,000 messages
    const receiver = spawnPeer({ role: 'receiver', queueId: queue.id, mtypes, senders, perPair, timeoutMs: 40_000 });
    await receiver.waitEvent('ready', 10_000);
    const senderPeers = senders.map((senderId) => spawnPeer({ role: 'sender', queueId: queue.id, senderId, mtypes, perPair }));

    const codes = await withTimeout(Promise.all([receiver, ...senderPeers].map((p) => p.exited)), 50_000, 'peers to finish');
    const result = receiver.event('done');
    expect(result, `receiver result; stderr: ${receiver.stderr}`).to.not.equal(undefined);
    expect(result!.problems, 'problems seen by the receiver').to.deep.equal([]);
    expect(result!.received).to.equal(120_000);
    expect(result!.expected).to.equal(120_000);
    expect(result!.next).to.deep.equal({ '100/1': perPair, '100/2': perPair, '101/1': perPair, '101/2': perPair });
    expect(result!.batches as number).to.be.below(120_000); // the receiver threads drained in batches
    for (const s of senderPeers) expect(s.event('done'), s.stderr).to.include({ sent: 2 * perPair });
    expect(codes).to.deep.equal([0, 0, 0]);
    // The senders met a full queue (16 KiB) and went through their backlogs.
    expect(senderPeers.some((s) => (s.event('done')!.deferred as number) > 0)).to.equal(true);
    expect(queue.stat()).to.include({ bytes: 0 });
  });

  it('garbage and truncated bodies written onto the queue by another process are counted and dropped; the endpoint keeps serving', async () => {
    const queue = scope.create();
    const transport = scope.track(new SysvTransport(queue, defaultSysvTransportOptions));
    const server = scope.track(new Endpoint(transport, { mtype: 100, incarnation: newIncarnation(), maxBatchBytes: 8192 }));
    const seen: InboundRecord[] = [];
    server.start((rec, reply) => {
      seen.push(rec);
      reply?.(0, Buffer.concat([Buffer.from('re:'), rec.payload]));
    });
    const garbage = 200;
    const truncated = 200;
    const requests = 50;
    const peer = spawnPeer({ role: 'garbage', queueId: queue.id, to: 100, mtype: 1000, garbage, truncated, requests, seed: 20240521 });
    const code = await withTimeout(peer.exited, 30_000, 'garbage peer');
    expect(peer.event('done'), peer.stderr).to.deep.include({ replies: requests, failures: [] });
    expect(code).to.equal(0);
    expect(server.counters.garbage).to.equal(garbage + truncated);
    expect(seen).to.have.length(requests);
    expect(server.counters).to.include({ stale: 0, expired: 0 });
    expect(server.receiver).to.not.equal(undefined);
    // Still alive and serving: a request from this process goes round too.
    const asker = scope.track(new Endpoint(transport, { mtype: 1001, incarnation: newIncarnation(), maxBatchBytes: 8192 }));
    asker.start(() => {});
    const reply = await asker.request(100, 5, Buffer.from('after the garbage'), 5000);
    expect(reply.payload.toString()).to.equal('re:after the garbage');
  });
});
