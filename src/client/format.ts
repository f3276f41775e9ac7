import type { ServerFrame } from './connection';
import { type Lang, closingPushLine, texts } from './client-texts';

/**
 * Server frames as the lines a person reads. Pure: one frame in, one line out (docs/client.md
 * lists the shapes). Text from other players is made safe for a terminal first.
 */

// C0 and C1 controls (escape sequences, carriage returns, newlines) and the bidirectional
// overrides, which could rewrite or reorder what is already on the screen.
const UNSAFE = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

/** A string from the wire as one safe line: tabs become spaces, other controls U+FFFD. */
export function safe(value: unknown): string {
  return String(value).replace(/\t/g, ' ').replace(UNSAFE, '\ufffd');
}

/** `[3채널] 타락파워전사: 안녕` / `[channel 3] Alice: hello`. */
export function channelLine(lang: Lang, channel: number, from: string, text: string): string {
  return `[${texts[lang].channelLabel(channel)}] ${safe(from)}: ${safe(text)}`;
}

/** `[귓속말] Alice: hi` / `[whisper] Alice: hi` (received). */
export function whisperInLine(lang: Lang, from: string, text: string): string {
  return `[${texts[lang].whisperFrom}] ${safe(from)}: ${safe(text)}`;
}

/** `[귓속말 → Bob] hi` / `[whisper → Bob] hi` (sent, once the server accepted it). */
export function whisperOutLine(lang: Lang, to: string, text: string): string {
  return `[${texts[lang].whisperTo(safe(to))}] ${safe(text)}`;
}

/** `* TEXT`: a line of the client or a command's answer. */
export function infoLine(text: string): string {
  return `* ${safe(text)}`;
}

/** A push (a frame without an id) as a line. */
export function pushLine(lang: Lang, frame: ServerFrame): string {
  switch (frame.op) {
    case 'message':
      return channelLine(lang, Number(frame.channel), String(frame.from), String(frame.text));
    case 'whisper':
      return whisperInLine(lang, String(frame.from), String(frame.text));
    case 'error': {
      const e = (frame.error ?? {}) as { code?: unknown; message?: unknown };
      return closingPushLine(lang, safe(e.code ?? 'UNKNOWN'), safe(e.message ?? ''));
    }
    default:
      // A push this client does not know (a later protocol addition): shown as sent.
      return `? ${safe(JSON.stringify(frame))}`;
  }
}
