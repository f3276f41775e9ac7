import { ClientError } from '../errors';
import { MTYPE_LEGACY_REPLY, MTYPE_LEGACY_REQUEST } from '../ipc/mtypes';
import { queueFill } from '../ipc/queue-fill';
import type { MessageTransport, ReceivedMessage, Receiver } from '../ipc/transport';
import type { Logger } from '../log';
import { parseSlashCommand } from '../protocol/slash-command';
import { findText } from '../protocol/texts';
import type { ShardClient } from './shard-client';

/** PROTOCOL.md: `struct msgbuf_ { long mtype; char mtext[1024]; }`, sent with msgsnd(q, &m, 1024, 0). */
export const LEGACY_MTEXT_BYTES = 1024;

/** The command line of a legacy request: up to the first NUL, as UTF-8 (invalid bytes replaced). */
export function legacyRequestText(body: Buffer): string {
  const nul = body.indexOf(0);
  return body.subarray(0, nul === -1 ? body.length : nul).toString('utf8');
}

/**
 * Where a legacy reply carries its send time, after the NUL (C peers read up to the NUL):
 * bytes 1012..1015 "CDT1", 1016..1023 the wall-clock ms as a float64 LE. gc's legacy expiry
 * drops replies older than a bound by it (src/gc/legacy-expiry.ts).
 */
export const LEGACY_TRAILER_AT = LEGACY_MTEXT_BYTES - 12;
const TRAILER_MAGIC = 'CDT1';

/** A legacy reply: the text NUL-terminated in a 1024-byte mtext (cut at a UTF-8 boundary if need be), then the send-time trailer. */
export function legacyReplyBody(text: string, now = Date.now()): Buffer {
  const out = Buffer.alloc(LEGACY_MTEXT_BYTES);
  let bytes = Buffer.from(text, 'utf8');
  if (bytes.length > LEGACY_TRAILER_AT - 1) {
    let cut = LEGACY_TRAILER_AT - 1;
    while (cut > 0 && (bytes[cut]! & 0xc0) === 0x80) cut--; // never split a character
    bytes = bytes.subarray(0, cut);
  }
  bytes.copy(out);
  out.write(TRAILER_MAGIC, LEGACY_TRAILER_AT, 'latin1');
  out.writeDoubleLE(now, LEGACY_TRAILER_AT + 4);
  return out;
}

/** The send time of a legacy reply written by legacyReplyBody; undefined for anything else. */
export function legacyReplyTime(body: Buffer): number | undefined {
  if (body.length !== LEGACY_MTEXT_BYTES || body.toString('latin1', LEGACY_TRAILER_AT, LEGACY_TRAILER_AT + 4) !== TRAILER_MAGIC) return undefined;
  const t = body.readDoubleLE(LEGACY_TRAILER_AT + 4);
  return Number.isFinite(t) ? t : undefined;
}

export interface LegacyGatewayOptions {
  /**
   * Legacy replies are sent only while the queue stays below this fill ratio (the larger of
   * bytes and message count over capacity, queue-fill.ts) with the reply added; above it
   * requests are shed (counted, not answered), so
   * unread replies can never take more than this share of the queue from cluster traffic.
   */
  maxQueueShare: number;
}

export const defaultLegacyOptions: LegacyGatewayOptions = Object.freeze({ maxQueueShare: 0.5 });

/**
 * Serves the C daemons of the original design: requests on mtype 1 (`/찾기 NAME`,
 * `/find NAME`), answered on mtype 2 with the same text the `chat` command gives. Other
 * commands get the error text a client would see in `error.message`.
 */
export class LegacyGateway {
  receiver: Receiver | undefined;
  /** shed: requests not answered because the queue was over maxQueueShare; dropped: replies the full queue did not take. */
  readonly counters = { requests: 0, replies: 0, errors: 0, shed: 0, dropped: 0 };
  private lastShedLog = 0;

  constructor(
    private readonly transport: MessageTransport,
    private readonly shards: ShardClient,
    private readonly log: Logger,
    private readonly options: LegacyGatewayOptions = defaultLegacyOptions,
  ) {}

  start(): Receiver {
    this.receiver = this.transport.receive(MTYPE_LEGACY_REQUEST, (batch) => this.onBatch(batch));
    return this.receiver;
  }

  async close(): Promise<void> {
    await this.receiver?.close();
  }

  private onBatch(batch: readonly ReceivedMessage[]): void {
    const over = this.overShare();
    for (const msg of batch) {
      this.counters.requests++;
      if (over) {
        this.shed();
        continue;
      }
      void this.answer(legacyRequestText(msg.body)).then((text) => this.send(text));
    }
  }

  /**
   * Whether one more legacy reply would take the queue over the legacy share, by bytes or by
   * message count (queue-fill.ts: Linux admits at most msg_qbytes messages, tiny ones too).
   */
  private overShare(): boolean {
    try {
      const s = this.transport.stat();
      if (!(s.capacity > 0)) return false;
      return queueFill({ bytes: s.bytes + LEGACY_MTEXT_BYTES, messages: s.messages + 1, capacity: s.capacity }).fill > this.options.maxQueueShare;
    } catch {
      return false;
    }
  }

  private shed(): void {
    this.counters.shed++;
    const now = Date.now();
    if (now - this.lastShedLog < 10_000) return;
    this.lastShedLog = now;
    this.log.warn({ shed: this.counters.shed, dropped: this.counters.dropped, maxQueueShare: this.options.maxQueueShare }, 'legacy requests shed: too many unread legacy replies on the queue');
  }

  /** The reply text for one command line. Never throws. */
  async answer(line: string): Promise<string> {
    const trimmed = line.trim();
    if (!trimmed.startsWith('/')) return 'unknown command: only /find NAME and /찾기 NAME are served here';
    const cmd = parseSlashCommand(trimmed);
    if (cmd.kind === 'error') return cmd.message;
    if (cmd.kind !== 'find') {
      return cmd.lang === 'ko' ? '이 명령은 게임 클라이언트에서만 쓸 수 있습니다.' : 'this command needs a game client connection';
    }
    try {
      const r = await this.shards.find(cmd.name);
      return findText(cmd.lang, r.online ? { name: r.name, online: true, channel: r.channel } : { name: cmd.name, online: false });
    } catch (err) {
      this.counters.errors++;
      return err instanceof ClientError ? err.message : 'internal error';
    }
  }

  private send(text: string): void {
    if (this.overShare()) return this.shed();
    try {
      const body = legacyReplyBody(text);
      // Never into the send backlog: a reply nobody reads must not wait there for room.
      if (this.transport.trySend) {
        if (!this.transport.trySend(MTYPE_LEGACY_REPLY, body)) {
          this.counters.dropped++;
          return this.shed();
        }
      } else this.transport.send(MTYPE_LEGACY_REPLY, body);
      this.counters.replies++;
    } catch (err) {
      this.counters.errors++;
      this.log.warn({ err }, 'legacy reply could not be sent');
    }
  }
}
