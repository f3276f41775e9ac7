import { readFileSync, writeFileSync } from 'node:fs';
import { type Interface, clearLine, createInterface, cursorTo, moveCursor } from 'node:readline';
import { type ClientOptions, USAGE, UsageError, parseClientArgs } from './args';
import { ChatSession, type ClientIo } from './session';

/**
 * `npm run client -- --name NAME --channel N`: chat with the cluster from a terminal
 * (docs/client.md). On a terminal, a readline line editor with history and a prompt; with
 * stdin piped, one line in per line typed and one line out per event, for scripts and tests.
 */

const HISTORY_SIZE = 500;

function main(): void {
  let options: ClientOptions;
  try {
    options = parseClientArgs(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`${err.message === '' ? '' : `chat client: ${err.message}\n`}${USAGE}\n`);
    process.exit(err.exitCode);
  }

  const tty = process.stdin.isTTY === true && process.stdout.isTTY === true;
  const rl = createInterface({
    input: process.stdin,
    output: tty ? process.stdout : undefined,
    terminal: tty,
    historySize: HISTORY_SIZE,
    history: tty ? loadHistory(options.historyFile) : [],
    removeHistoryDuplicates: true,
  });

  // A reader that went away (`npm run client ... | head -3`) ends the session: log out, no EPIPE trace.
  let outputGone = false;
  const io: ClientIo = tty
    ? terminalIo(rl)
    : {
        out: (l) => void (outputGone || process.stdout.write(`${l}\n`)),
        err: (l) => void process.stderr.write(`${l}\n`),
      };
  const session = new ChatSession(options, { ...io, promptChanged: (p) => tty && (rl.setPrompt(p), rl.prompt(true)) });
  process.stdout.on('error', () => {
    outputGone = true;
    session.quit();
  });
  if (tty) {
    rl.setPrompt(session.prompt);
    rl.prompt();
  }

  rl.on('line', (line) => {
    if (tty) {
      // The typed line comes back formatted (`[3채널] 나: 안녕`) once the server takes it.
      moveCursor(process.stdout, 0, -1);
      clearLine(process.stdout, 0);
    }
    session.handleLine(line);
    if (tty) rl.prompt();
  });
  if (tty && options.historyFile !== undefined) {
    const file = options.historyFile;
    rl.on('history', (history: string[]) => saveHistory(file, history));
  }
  // End of input (Ctrl-D, or the end of a pipe) logs out after the lines already typed.
  rl.on('close', () => session.quit());
  let interrupts = 0;
  const interrupt = (): void => {
    // The first Ctrl-C logs out; a second one leaves at once.
    if (++interrupts > 1) process.exit(130);
    session.quit();
  };
  rl.on('SIGINT', interrupt);
  process.on('SIGINT', interrupt);
  process.on('SIGTERM', interrupt);

  void session.run().then((code) => {
    if (tty) {
      // The prompt redrawn after the last line goes.
      cursorTo(process.stdout, 0);
      clearLine(process.stdout, 0);
    }
    rl.close();
    process.exit(code);
  });
}

/** Lines of the prompt's own writes: clear the prompt, print, draw the prompt and the input again. */
function terminalIo(rl: Interface): ClientIo {
  const write = (stream: NodeJS.WriteStream, line: string): void => {
    cursorTo(process.stdout, 0);
    clearLine(process.stdout, 0);
    stream.write(`${line}\n`);
    rl.prompt(true);
  };
  return { out: (l) => write(process.stdout, l), err: (l) => write(process.stderr, l) };
}

function loadHistory(file: string | undefined): string[] {
  if (file === undefined) return [];
  try {
    // readline wants the newest first; the file keeps the oldest first, one line each.
    return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').reverse().slice(0, HISTORY_SIZE);
  } catch {
    return [];
  }
}

function saveHistory(file: string, newestFirst: readonly string[]): void {
  try {
    writeFileSync(file, `${[...newestFirst].reverse().join('\n')}\n`, { mode: 0o600 });
  } catch {
    /* a history that cannot be saved is not worth interrupting a chat */
  }
}

main();
