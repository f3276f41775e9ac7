import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { pm2DaemonReachable, pm2Home } from '../src/runtime/pm2-client';
import { createLogPrettifier } from './log-pretty';
import { EXIT, ToolError, runTool } from './tool-common';

const USAGE = `usage: npm run logs [-- [--color|--no-color] [PM2 LOGS ARGUMENTS]]
  follows \`pm2 logs --raw\` (the project's own pm2, PM2_HOME as set) and prints every pino
  JSON line as a readable one (time, level, pid, [app#shard], message, fields); other lines
  pass through. The log files under PM2_HOME stay JSON.
  e.g. npm run logs -- chatd          only chatD
       npm run logs -- channeld --lines 100
       npm run logs -- --nostream --lines 50   print the last lines and exit
  --color / --no-color   force colors on or off (default: on for a terminal, off when NO_COLOR is set)`;

export interface LogsArgs {
  colorize: boolean;
  /** Passed to `pm2 logs` after `--raw`. */
  pm2Args: string[];
}

export function parseLogsArgs(argv: readonly string[], env: NodeJS.ProcessEnv, stdoutIsTty: boolean): LogsArgs {
  let colorize = stdoutIsTty && (env.NO_COLOR === undefined || env.NO_COLOR === '');
  if (env.FORCE_COLOR !== undefined && env.FORCE_COLOR !== '0' && env.FORCE_COLOR !== 'false') colorize = true;
  const pm2Args: string[] = [];
  for (const a of argv) {
    if (a === '--color') colorize = true;
    else if (a === '--no-color') colorize = false;
    else if (a === '-h' || a === '--help') throw new ToolError(USAGE, EXIT.USAGE);
    else if (a === '--raw' || a === '--json' || a === '--format') {
      throw new ToolError(`${a}: npm run logs reads pm2's raw lines itself; use npx pm2 logs ${a} for that output\n${USAGE}`, EXIT.USAGE);
    } else pm2Args.push(a);
  }
  return { colorize, pm2Args };
}

async function main(): Promise<number> {
  const args = parseLogsArgs(process.argv.slice(2), process.env, process.stdout.isTTY === true);
  const home = pm2Home();
  // `pm2 logs` would start a PM2 daemon of its own when none runs; say so instead.
  if (!(await pm2DaemonReachable(home))) {
    throw new ToolError(`no PM2 daemon answers at PM2_HOME=${home}: the cluster is not running (npm start), or runs under another PM2_HOME`, EXIT.PROBLEM);
  }
  const pm2Bin = require.resolve('pm2/bin/pm2');
  // pm2's own lines (banners, file names) colored or not as ours are: it colors them even into a pipe.
  const env = { ...process.env, FORCE_COLOR: args.colorize ? '1' : '0' };
  const child = spawn(process.execPath, [pm2Bin, 'logs', '--raw', ...args.pm2Args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  const prettify = createLogPrettifier({ colorize: args.colorize });
  const pipe = (from: NodeJS.ReadableStream, to: NodeJS.WriteStream): void => {
    createInterface({ input: from, crlfDelay: Infinity }).on('line', (line) => to.write(`${prettify(line)}\n`));
  };
  // A reader that went away (`npm run logs | head`) ends the follow, quietly.
  for (const out of [process.stdout, process.stderr]) out.on('error', () => child.kill('SIGTERM'));
  pipe(child.stdout, process.stdout);
  pipe(child.stderr, process.stderr);
  // Ctrl-C reaches pm2 too (same process group); a SIGTERM sent to this process alone is passed on.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => child.kill(sig));
  return new Promise((resolve) => {
    child.once('error', (err) => {
      process.stderr.write(`logs: cannot run pm2: ${err.message}\n`);
      resolve(EXIT.PROBLEM);
    });
    child.once('close', (code, signal) => resolve(signal ? EXIT.OK : (code ?? EXIT.PROBLEM)));
  });
}

if (require.main === module) runTool('logs', main);
