import { ClientError } from '../errors';
import { MTYPE_LEGACY_REPLY, MTYPE_LEGACY_REQUEST } from '../ipc/mtypes';
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

/** A legacy reply: the text NUL-terminated in a 1024-byte mtext, cut at a UTF-8 boundary if need be. */
export function legacyReplyBody(text: string): Buffer {
  const out = Buffer.alloc(LEGACY_MTEXT_BYTES);
  let bytes = Buffer.from(text, 'utf8');
  if (bytes.length > LEGACY_MTEXT_BYTES - 1) {
    let cut = LEGACY_MTEXT_BYTES - 1;
    while (cut > 0 && (bytes[cut]! & 0xc0) === 0x80) cut--; // never split a character
    bytes = bytes.subarray(0, cut);
  }
  bytes.copy(out);
  return out;
}

/**
 * Serves the C daemons of the original design: requests on mtype 1 (`/찾기 NAME`,
 * `/find NAME`), answered on mtype 2 with the same text the `chat` command gives. Other
 * commands get the error text a client would see in `error.message`.
 */
export class LegacyGateway {
  receiver: Receiver | undefined;
  readonly counters = { requests: 0, replies: 0, errors: 0 };

  constructor(
    private readonly transport: MessageTransport,
    private readonly shards: ShardClient,
    private readonly log: Logger,
  ) {}

  start(): Receiver {
    this.receiver = this.transport.receive(MTYPE_LEGACY_REQUEST, (batch) => this.onBatch(batch));
    return this.receiver;
  }

  async close(): Promise<void> {
    await this.receiver?.close();
  }

  private onBatch(batch: readonly ReceivedMessage[]): void {
    for (const msg of batch) {
      this.counters.requests++;
      void this.answer(legacyRequestText(msg.body)).then((text) => this.send(text));
    }
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
    try {
      this.transport.send(MTYPE_LEGACY_REPLY, legacyReplyBody(text));
      this.counters.replies++;
    } catch (err) {
      this.counters.errors++;
      this.log.warn({ err }, 'legacy reply could not be sent');
    }
  }
}
