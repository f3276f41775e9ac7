import { ownerOf, type MtypeOwner } from '../src/ipc/mtypes';
import { queueFill } from '../src/ipc/queue-fill';
import { readKernelLimit } from '../src/ipc/sysv/sysv-queue';
import { EXIT, ToolError, describeMtype, hexKey, openExisting, runTool, toolConfig } from './tool-common';

const USAGE = `usage: npm run mq -- <command> [options]   (queue chosen by MQ_KEY, default 1234)
  stat [--json]              queue id, messages, bytes, capacity, mode, last pids
  drain [--mtype N] [--json] take every message (or those of mtype N) off the queue; counts per mtype
  remove                     remove the queue (IPC_RMID); blocked receivers wake with EIDRM`;

/** Bound on one drain, in case senders keep up with us. */
const MAX_DRAIN = 1_000_000;

interface Args {
  command: string;
  json: boolean;
  mtype: number | undefined;
}

export function parseArgs(argv: readonly string[]): Args {
  let command: string | undefined;
  let json = false;
  let mtype: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--json') json = true;
    else if (a === '--mtype') {
      const v = argv[++i];
      if (v === undefined || !/^[1-9]\d{0,15}$/.test(v) || !Number.isSafeInteger(Number(v))) throw new ToolError(`--mtype needs a positive integer\n${USAGE}`, EXIT.USAGE);
      mtype = Number(v);
    } else if (a === '-h' || a === '--help') throw new ToolError(USAGE, EXIT.USAGE);
    else if (!command && !a.startsWith('-')) command = a;
    else throw new ToolError(`unexpected argument ${a}\n${USAGE}`, EXIT.USAGE);
  }
  if (!command) throw new ToolError(USAGE, EXIT.USAGE);
  if (mtype !== undefined && command !== 'drain') throw new ToolError(`--mtype applies to drain only\n${USAGE}`, EXIT.USAGE);
  return { command, json, mtype };
}

const octal = (mode: number): string => `0${mode.toString(8).padStart(3, '0')}`;
const pct = (part: number, whole: number): string => (whole > 0 ? `${((100 * part) / whole).toFixed(1)}%` : 'n/a');

function stat(json: boolean): number {
  const config = toolConfig();
  const q = openExisting(config);
  const s = q.stat();
  const f = queueFill(s);
  const out = {
    key: config.mqKey,
    keyHex: hexKey(config.mqKey),
    id: q.id,
    messages: s.messages,
    bytes: s.bytes,
    capacity: s.capacity,
    // Linux also caps the message count at msg_qbytes: the fill is the larger of the two ratios.
    maxMessages: f.maxMessages,
    fill: f.fill,
    limitedBy: f.limitedBy,
    mode: octal(s.mode),
    lastSendPid: s.lastSendPid,
    lastReceivePid: s.lastReceivePid,
    lastChange: s.lastChange,
    msgmax: readKernelLimit('msgmax', 8192),
    msgmnb: readKernelLimit('msgmnb', 16384),
  };
  if (json) {
    process.stdout.write(`${JSON.stringify(out)}\n`);
    return EXIT.OK;
  }
  process.stdout.write(
    [
      `queue     key ${out.keyHex} (${out.key}), id ${out.id}`,
      `messages  ${out.messages} of at most ${out.maxMessages} (${pct(out.messages, out.maxMessages)} full)`,
      `bytes     ${out.bytes} of ${out.capacity} (${pct(out.bytes, out.capacity)} full)`,
      `fill      ${(out.fill * 100).toFixed(1)}% (limited by ${out.limitedBy})`,
      `mode      ${out.mode}`,
      `last pids send ${out.lastSendPid}, receive ${out.lastReceivePid}`,
      `kernel    msgmax ${out.msgmax}, msgmnb ${out.msgmnb}`,
      '',
    ].join('\n'),
  );
  return EXIT.OK;
}

interface DrainRow {
  mtype: number;
  owner: MtypeOwner;
  messages: number;
  bytes: number;
}

function drain(mtype: number | undefined, json: boolean): number {
  const config = toolConfig();
  const q = openExisting(config);
  const rows = new Map<number, DrainRow>();
  let total = 0;
  let bytes = 0;
  while (total < MAX_DRAIN) {
    const m = q.tryReceive(mtype ?? 0);
    if (!m) break;
    total++;
    bytes += m.body.length;
    let row = rows.get(m.mtype);
    if (!row) rows.set(m.mtype, (row = { mtype: m.mtype, owner: ownerOf(m.mtype), messages: 0, bytes: 0 }));
    row.messages++;
    row.bytes += m.body.length;
  }
  const byMtype = [...rows.values()].sort((a, b) => a.mtype - b.mtype);
  if (json) {
    process.stdout.write(`${JSON.stringify({ key: config.mqKey, id: q.id, mtype: mtype ?? null, total, bytes, byMtype })}\n`);
    return EXIT.OK;
  }
  const what = mtype === undefined ? '' : ` of mtype ${mtype}`;
  const lines = [`drained ${total} messages${what} (${bytes} bytes) from queue ${hexKey(config.mqKey)} (id ${q.id})`];
  if (byMtype.length > 0) {
    lines.push(`${'mtype'.padStart(10)}  ${'owner'.padEnd(22)}${'messages'.padStart(9)}${'bytes'.padStart(11)}`);
    for (const r of byMtype) lines.push(`${String(r.mtype).padStart(10)}  ${describeMtype(r.mtype).padEnd(22)}${String(r.messages).padStart(9)}${String(r.bytes).padStart(11)}`);
  }
  if (total >= MAX_DRAIN) lines.push(`stopped after ${MAX_DRAIN} messages: something keeps sending`);
  process.stdout.write(`${lines.join('\n')}\n`);
  return EXIT.OK;
}

function remove(): number {
  const config = toolConfig();
  const q = openExisting(config);
  const s = q.stat();
  q.remove();
  process.stdout.write(`removed queue ${hexKey(config.mqKey)} (id ${q.id}); it held ${s.messages} messages, ${s.bytes} bytes\n`);
  return EXIT.OK;
}

async function main(argv: readonly string[]): Promise<number> {
  const args = parseArgs(argv);
  switch (args.command) {
    case 'stat':
      return stat(args.json);
    case 'drain':
      return drain(args.mtype, args.json);
    case 'remove':
      return remove();
    default:
      throw new ToolError(`unknown command ${args.command}\n${USAGE}`, EXIT.USAGE);
  }
}

if (require.main === module) runTool('mq', () => main(process.argv.slice(2)));
