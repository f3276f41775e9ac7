/**
 * The `single` comparison server of `npm run bench:e2e`: one Node process, plain `net`, the
 * directory in a Map keyed by the normalized name. The ceiling: the same protocol work as chatD
 * (framing, validation, rate limit, replies) with no process boundary at all.
 *
 * Run: node dist/bench/e2e/single-server.js [port]   (port 0 or none: any free port)
 * Forked with an IPC channel, it reports { type: 'listening', port, pids } and exits when the
 * parent goes away.
 */
import { createServer, type AddressInfo } from 'node:net';
import { ProtocolServer, exitWithParent, type Directory, type Entry, type ServerReport } from './proto';

const map = new Map<string, Entry>();
const dir: Directory = {
  login(key, name, channel, done) {
    if (map.has(key)) return done(false);
    map.set(key, { name, channel });
    done(true);
  },
  find(key, done) {
    done(map.get(key));
  },
  move(key, channel, done) {
    const e = map.get(key);
    if (e) e.channel = channel;
    done();
  },
  remove(key, done) {
    map.delete(key);
    done?.();
  },
};

const proto = new ProtocolServer(dir);
const server = createServer({ noDelay: true }, (socket) => proto.accept(socket));
const port = Number(process.argv[2] ?? process.env.BENCH_PORT ?? 0) || 0;
server.listen(port, '127.0.0.1', () => {
  const addr = server.address() as AddressInfo;
  const report: ServerReport = { type: 'listening', port: addr.port, pids: [process.pid] };
  if (process.send) process.send(report);
  else console.log(`single: listening on 127.0.0.1:${addr.port}`);
});
if (process.send) exitWithParent();
