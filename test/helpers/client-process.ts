import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { PROJECT_ROOT } from './cluster';

/**
 * `npm run client` (dist/src/client/main.js) as a child process driven through its stdin and
 * stdout, as a person would type: lines in, lines out. Every process is killed, by pid, by
 * `killAll()` (call it in `afterEach`/`after`) when it has not exited by itself.
 */

const CLIENT_MAIN = join(PROJECT_ROOT, 'dist', 'src', 'client', 'main.js');
const live = new Set<ClientProcess>();

export class ClientProcess {
  readonly out: string[] = [];
  readonly errLines: string[] = [];
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;
  private partialOut = '';
  private partialErr = '';
  exitCode: number | null | undefined;

  constructor(args: string[], env: NodeJS.ProcessEnv = {}) {
    // No LANG from the caller's shell: --lang, or the env given, decides the language.
    const base = { ...process.env };
    for (const k of ['LANG', 'LC_ALL', 'LC_MESSAGES', 'CHATD_HOST', 'CHATD_PORT']) delete base[k];
    this.child = spawn(process.execPath, [CLIENT_MAIN, ...args], { cwd: PROJECT_ROOT, env: { ...base, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    live.add(this);
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.partialOut = split(this.partialOut + d, this.out);
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.partialErr = split(this.partialErr + d, this.errLines);
    });
    this.child.stdin!.on('error', () => {
      /* the client may have exited; a write then fails with EPIPE */
    });
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code) => {
        this.exitCode = code;
        live.delete(this);
        resolve(code);
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  /** Types one line. */
  type(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }

  /** Closes stdin (as Ctrl-D does). */
  endInput(): void {
    this.child.stdin!.end();
  }

  /**
   * Resolves with the first line from index `from` on that matches; rejects after
   * `timeoutMs` with the whole transcript, so a failure shows what the client did print.
   */
  async waitLine(match: string | RegExp, timeoutMs = 10_000, from = 0): Promise<{ line: string; index: number }> {
    const test = (l: string): boolean => (typeof match === 'string' ? l.includes(match) : match.test(l));
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (let i = from; i < this.out.length; i++) if (test(this.out[i]!)) return { line: this.out[i]!, index: i };
      if (Date.now() > deadline || this.exitCode !== undefined) {
        if (this.exitCode !== undefined) {
          // Lines may still be in the pipe right after the exit.
          await new Promise((r) => setTimeout(r, 50));
          for (let i = from; i < this.out.length; i++) if (test(this.out[i]!)) return { line: this.out[i]!, index: i };
        }
        throw new Error(`no line matching ${String(match)} within ${timeoutMs} ms (exit ${String(this.exitCode)});\nstdout:\n${this.out.join('\n')}\nstderr:\n${this.errLines.join('\n')}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Resolves with the exit code, or rejects after `timeoutMs`. */
  async waitExit(timeoutMs = 15_000): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`client did not exit within ${timeoutMs} ms;\nstdout:\n${this.out.join('\n')}\nstderr:\n${this.errLines.join('\n')}`)), timeoutMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  kill(): void {
    if (this.exitCode === undefined && this.child.pid !== undefined) {
      try {
        process.kill(this.child.pid, 'SIGKILL');
      } catch {
        /* gone already */
      }
    }
  }
}

/** Kills every client process still running and waits for their exits. */
export async function killAllClients(): Promise<void> {
  const all = [...live];
  for (const c of all) c.kill();
  await Promise.all(all.map((c) => c.exited));
}

function split(buffer: string, into: string[]): string {
  const parts = buffer.split('\n');
  const rest = parts.pop()!;
  into.push(...parts);
  return rest;
}
