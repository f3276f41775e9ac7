import type { ClientConnection } from './client-connection';

/** A logged-in character on one connection. `id` is unique within this chatD incarnation. */
export interface Session {
  readonly id: number;
  /** As registered at login. */
  readonly name: string;
  readonly key: string;
  channel: number;
  readonly conn: ClientConnection;
}

/**
 * The sessions this chatD holds: by directory key (whispers), by channel (chat fan-out).
 * Only active sessions are here; an ended one is the reaper's until its shard entry is gone.
 */
export class SessionTable {
  private readonly byKey = new Map<string, Session>();
  private readonly byChannel = new Map<number, Set<Session>>();

  get size(): number {
    return this.byKey.size;
  }

  add(s: Session): void {
    this.byKey.set(s.key, s);
    this.join(s);
  }

  get(key: string): Session | undefined {
    return this.byKey.get(key);
  }

  delete(s: Session): void {
    if (this.byKey.get(s.key) === s) this.byKey.delete(s.key);
    this.leave(s);
  }

  move(s: Session, channel: number): void {
    this.leave(s);
    s.channel = channel;
    this.join(s);
  }

  inChannel(channel: number): ReadonlySet<Session> {
    return this.byChannel.get(channel) ?? new Set();
  }

  /** Channel number -> sessions in it (channels with none left out). */
  perChannel(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [channel, set] of this.byChannel) out[channel] = set.size;
    return out;
  }

  all(): IterableIterator<Session> {
    return this.byKey.values();
  }

  private join(s: Session): void {
    let set = this.byChannel.get(s.channel);
    if (!set) this.byChannel.set(s.channel, (set = new Set()));
    set.add(s);
  }

  private leave(s: Session): void {
    const set = this.byChannel.get(s.channel);
    if (!set) return;
    set.delete(s);
    if (set.size === 0) this.byChannel.delete(s.channel);
  }
}
