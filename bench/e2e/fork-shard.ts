/**
 * One shard process of the `fork` comparison server (see fork-front.ts): its part of the
 * directory in a Map. Requests come from the front as arrays (one `process.send` per front
 * event-loop turn); the answers of one turn go back as one array.
 *
 * Request tuples: [0, rid, key, name, channel] login -> [rid, 1|0]
 *                 [1, rid, key]                find  -> [rid, name, channel] or [rid]
 *                 [2, rid, key, channel]       move  -> [rid]
 *                 [3, rid, key]                remove -> [rid] (none when rid is 0)
 */
import type { Entry } from './proto';

export type ShardRequest = [number, number, string, ...(string | number)[]];
export type ShardAnswer = (string | number)[];

const map = new Map<string, Entry>();
let out: ShardAnswer[] = [];
let flushScheduled = false;

function flush(): void {
  flushScheduled = false;
  const batch = out;
  out = [];
  if (batch.length > 0) process.send!(batch);
}

function answer(a: ShardAnswer): void {
  out.push(a);
  if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
}

process.on('message', (batch: ShardRequest[]) => {
  for (const r of batch) {
    const rid = r[1];
    const key = r[2];
    switch (r[0]) {
      case 0: {
        if (map.has(key)) answer([rid, 0]);
        else {
          map.set(key, { name: r[3] as string, channel: r[4] as number });
          answer([rid, 1]);
        }
        break;
      }
      case 1: {
        const e = map.get(key);
        answer(e ? [rid, e.name, e.channel] : [rid]);
        break;
      }
      case 2: {
        const e = map.get(key);
        if (e) e.channel = r[3] as number;
        answer([rid]);
        break;
      }
      case 3:
        map.delete(key);
        if (rid !== 0) answer([rid]);
        break;
    }
  }
});
process.on('disconnect', () => process.exit(0));
