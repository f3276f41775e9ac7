import { isValidName } from '../cluster/names';
import { type Lang, badChannelText, badNameText, unknownCommandText, usageText } from './texts';

/** Parses the slash commands a player types in the chat box (PROTOCOL.md, "chat and slash commands"). */

export type { Lang };

export type SlashCommand =
  | { kind: 'find'; name: string; lang: Lang }
  | { kind: 'whisper'; to: string; text: string; lang: Lang }
  | { kind: 'channel'; channel: number; lang: Lang }
  | { kind: 'error'; code: 'BAD_REQUEST' | 'UNKNOWN_COMMAND'; message: string; lang: Lang };

type CommandKind = 'find' | 'whisper' | 'channel';

// A Map, not an object literal, so that "/constructor" or "/__proto__" find nothing.
const COMMANDS = new Map<string, { kind: CommandKind; lang: Lang }>([
  ['find', { kind: 'find', lang: 'en' }],
  ['찾기', { kind: 'find', lang: 'ko' }],
  ['w', { kind: 'whisper', lang: 'en' }],
  ['whisper', { kind: 'whisper', lang: 'en' }],
  ['귓속말', { kind: 'whisper', lang: 'ko' }],
  ['channel', { kind: 'channel', lang: 'en' }],
  ['채널', { kind: 'channel', lang: 'ko' }],
]);

// Enough for any channel count; longer digit strings are rejected rather than rounded.
const MAX_CHANNEL_DIGITS = 9;
const MAX_COMMAND_IN_MESSAGE = 32;
const HANGUL = /\p{Script=Hangul}/u;

/**
 * `text` is a chat line starting with '/'. Channel numbers are returned as parsed; the
 * caller checks them against the configured channel count.
 */
export function parseSlashCommand(text: string): SlashCommand {
  const line = text.trim();
  const m = /^\/(\S*)(?:\s+([\s\S]*))?$/.exec(line);
  if (!m) return unknown('en', line);
  // NFC so that a Korean command typed as decomposed jamo still matches; English is
  // case-insensitive (lower-casing leaves Hangul unchanged).
  const word = m[1]!.normalize('NFC').toLowerCase();
  const rest = m[2] ?? '';
  const command = COMMANDS.get(word);
  if (!command) return unknown(HANGUL.test(word) ? 'ko' : 'en', `/${m[1]}`);
  const { kind, lang } = command;
  const bad = (message: string): SlashCommand => ({ kind: 'error', code: 'BAD_REQUEST', message, lang });

  switch (kind) {
    case 'find': {
      const args = splitArgs(rest);
      if (args.length !== 1) return bad(usageText(lang, kind));
      const name = args[0]!;
      if (!isValidName(name)) return bad(badNameText(lang));
      return { kind, name: name.normalize('NFC'), lang };
    }
    case 'whisper': {
      // The message is the rest of the line after the name, its inner spacing kept.
      const w = /^(\S+)\s+([\s\S]+)$/.exec(rest);
      if (!w) return bad(usageText(lang, kind));
      const to = w[1]!;
      if (!isValidName(to)) return bad(badNameText(lang));
      return { kind, to: to.normalize('NFC'), text: w[2]!, lang };
    }
    case 'channel': {
      const args = splitArgs(rest);
      if (args.length !== 1) return bad(usageText(lang, kind));
      const digits = args[0]!;
      if (!/^[0-9]+$/.test(digits) || digits.length > MAX_CHANNEL_DIGITS) return bad(badChannelText(lang));
      const channel = Number(digits);
      if (channel < 1) return bad(badChannelText(lang));
      return { kind, channel, lang };
    }
  }
}

function splitArgs(rest: string): string[] {
  return rest === '' ? [] : rest.split(/\s+/);
}

function unknown(lang: Lang, command: string): SlashCommand {
  // Cut by code points so that the echo never ends in half a surrogate pair.
  const points = Array.from(command);
  const shown = points.length > MAX_COMMAND_IN_MESSAGE ? `${points.slice(0, MAX_COMMAND_IN_MESSAGE).join('')}…` : command;
  return { kind: 'error', code: 'UNKNOWN_COMMAND', message: unknownCommandText(lang, shown), lang };
}
