import { isValidName } from '../cluster/names';
import { type Lang, langFromEnv } from './client-texts';

/** Command-line options of `npm run client` (docs/client.md). */
export interface ClientOptions {
  readonly name: string;
  readonly channel: number;
  readonly host: string;
  readonly port: number;
  readonly lang: Lang;
  /** Give up after this many failed connection attempts in a row (0: never). */
  readonly retries: number;
  /** File of the line history (TTY only); undefined: history kept for the session only. */
  readonly historyFile: string | undefined;
}

export const USAGE = `usage: npm run client -- --name NAME --channel N [--host HOST] [--port PORT] [--lang ko|en] [--retries N] [--history FILE]
  --name     the character to log in: 1-24 letters, digits or _ (Hangul names are normal)
  --channel  the channel to join: 1 to the server's channel count (default 20)
  --host     chatD's address (default CHATD_HOST or 127.0.0.1)
  --port     chatD's TCP port (default CHATD_PORT or 7000)
  --lang     language of the client's own lines (default: ko when LANG/LC_ALL starts with ko, else en)
  --retries  give up after N failed connection attempts in a row (default 0: keep trying)
  --history  keep the line history in FILE between sessions (terminal only)
Type /help once connected for the commands.`;

/** A bad command line: the message names the problem; the caller prints USAGE and exits 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly exitCode = 2;
}

const FLAGS = new Set(['--name', '--channel', '--host', '--port', '--lang', '--retries', '--history']);

/** Parses argv (without node and script); throws UsageError. `--flag=value` and `--flag value` both work. */
export function parseClientArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ClientOptions {
  const values = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '-h' || arg === '--help') throw new UsageError('');
    const eq = arg.indexOf('=');
    const flag = eq > 0 && arg.startsWith('--') ? arg.slice(0, eq) : arg;
    if (!FLAGS.has(flag)) throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`);
    if (values.has(flag)) throw new UsageError(`${flag} given twice`);
    const value = eq > 0 && arg.startsWith('--') ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new UsageError(`${flag} needs a value`);
    values.set(flag, value);
  }

  const name = values.get('--name');
  if (name === undefined) throw new UsageError('--name is required');
  if (!isValidName(name)) throw new UsageError(`--name ${JSON.stringify(name)}: must be 1-24 letters, digits or _`);

  const channelText = values.get('--channel');
  if (channelText === undefined) throw new UsageError('--channel is required');
  const channel = positiveInt(channelText, '--channel', 2 ** 31 - 1);

  const host = values.get('--host') ?? nonEmpty(env.CHATD_HOST) ?? '127.0.0.1';
  if (host.trim() === '') throw new UsageError('--host must not be empty');
  const portText = values.get('--port') ?? nonEmpty(env.CHATD_PORT) ?? '7000';
  const port = positiveInt(portText, values.has('--port') ? '--port' : 'CHATD_PORT', 65535);

  const langText = values.get('--lang');
  if (langText !== undefined && langText !== 'ko' && langText !== 'en') throw new UsageError(`--lang must be ko or en, got ${JSON.stringify(langText)}`);
  const lang: Lang = langText ?? langFromEnv(env);

  const retriesText = values.get('--retries');
  const retries = retriesText === undefined ? 0 : nonNegativeInt(retriesText, '--retries');

  const historyFile = values.get('--history');
  if (historyFile !== undefined && historyFile === '') throw new UsageError('--history needs a file name');

  return Object.freeze({ name: name.normalize('NFC'), channel, host, port, lang, retries, historyFile });
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}

function positiveInt(text: string, what: string, max: number): number {
  if (!/^[0-9]{1,10}$/.test(text) || Number(text) < 1 || Number(text) > max) {
    throw new UsageError(`${what} must be an integer from 1 to ${max}, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

function nonNegativeInt(text: string, what: string): number {
  if (!/^[0-9]{1,6}$/.test(text)) throw new UsageError(`${what} must be an integer from 0 to 999999, got ${JSON.stringify(text)}`);
  return Number(text);
}
