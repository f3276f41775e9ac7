import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';

/**
 * A real second local user for the queue-squatting tests: a throwaway system user
 * (`useradd --system --no-create-home chatd-squatter-XXXXXXXX`) that runs a small Node program
 * creating a queue by key under its own uid. Needs root (CI runs as root); `skipReason()` says
 * why not otherwise. `destroy()` (idempotent) removes the user and the scratch directory; the
 * caller removes the queue (as root, by key).
 */
export interface Squatter {
  readonly user: string;
  readonly uid: number;
  readonly gid: number;
  /** As the squatter: msgget(key, IPC_CREAT | IPC_EXCL | mode). Resolves with the queue id. */
  createQueue(key: number, mode: number): Promise<number>;
  destroy(): void;
}

/** Why the squatter tests cannot run here, or undefined when they can. */
export function squatterSkipReason(): string | undefined {
  if (typeof process.geteuid !== 'function' || process.geteuid() !== 0) {
    return 'needs root to create a throwaway second user (useradd); CI runs as root';
  }
  for (const tool of ['useradd', 'userdel', 'setpriv']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `needs ${tool} (not found on PATH)`;
  }
  return undefined;
}

/**
 * For a mocha `before`: a squatter, or the suite skipped with the reason printed when this
 * machine cannot make one (not root, no useradd).
 */
export function squatterOrSkip(ctx: Mocha.Context): Squatter {
  const why = squatterSkipReason();
  if (why) {
    console.log(`      skipped: ${why}`);
    ctx.skip();
  }
  return createSquatter();
}

/** Squatters not yet destroyed: removed at process exit should mocha die before `after`. */
const liveSquatters = new Set<Squatter>();
let exitHook = false;

export function createSquatter(): Squatter {
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const s of [...liveSquatters]) s.destroy();
    });
  }
  const user = `chatd-squatter-${randomBytes(4).toString('hex')}`;
  const add = spawnSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', user], { encoding: 'utf8', timeout: 15_000 });
  if (add.status !== 0) throw new Error(`useradd ${user} failed (${add.status}): ${add.stderr}`);
  let destroyed = false;
  // eslint-disable-next-line prefer-const
  let squatter: Squatter | undefined;
  // A directory every user can read, holding koffi and the program: the project may sit under
  // a directory the squatter cannot enter (/root).
  const dir = mkdtempSync(join(tmpdir(), 'chatd-squatter-'));
  const destroy = (): void => {
    if (destroyed) return;
    destroyed = true;
    if (squatter) liveSquatters.delete(squatter);
    spawnSync('userdel', [user], { timeout: 15_000 });
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const id = (flag: string): number => Number(spawnSync('id', [flag, user], { encoding: 'utf8' }).stdout.trim());
    const uid = id('-u');
    const gid = id('-g');
    if (!(uid > 0)) throw new Error(`no uid for ${user}`);
    chmodSync(dir, 0o755);
    let koffiDir = dirname(require.resolve('koffi'));
    while (basename(koffiDir) !== 'koffi' && dirname(koffiDir) !== koffiDir) koffiDir = dirname(koffiDir);
    // koffi finds its native part in the sibling node_modules/@koromix/koffi-<platform>-<arch>: keep the layout.
    cpSync(koffiDir, join(dir, 'node_modules', 'koffi'), { recursive: true });
    const native = join(dirname(koffiDir), '@koromix', `koffi-${process.platform}-${process.arch}`);
    if (existsSync(native)) cpSync(native, join(dir, 'node_modules', '@koromix', basename(native)), { recursive: true });
    const program = join(dir, 'squat.js');
    writeFileSync(
      program,
      `'use strict';
const koffi = require(${JSON.stringify(join(dir, 'node_modules', 'koffi'))});
const msgget = koffi.load('libc.so.6').func('int msgget(int key, int msgflg)');
const [key, mode] = [Number(process.argv[2]), Number(process.argv[3])];
const id = msgget(key, 0o1000 | 0o2000 | mode);
if (id < 0) { process.stderr.write('msgget failed: errno ' + koffi.errno() + '\\n'); process.exit(1); }
process.stdout.write(JSON.stringify({ id, uid: process.getuid(), euid: process.geteuid() }) + '\\n');
`,
    );
    chmodSync(program, 0o644);
    spawnSync('chmod', ['-R', 'a+rX', dir]);
    squatter = {
      user,
      uid,
      gid,
      destroy,
      createQueue: (key, mode) =>
        new Promise((resolve, reject) => {
          execFile(
            'setpriv',
            [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', process.execPath, program, String(key), String(mode)],
            { timeout: 15_000, cwd: dir, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } },
            (err, stdout, stderr) => {
              if (err) return reject(new Error(`squatter ${user} could not create queue ${key}: ${err.message} ${stderr}`));
              const out = JSON.parse(stdout) as { id: number; uid: number; euid: number };
              if (out.uid !== uid || out.euid !== uid) return reject(new Error(`squatter ran as ${out.uid}/${out.euid}, not ${uid}`));
              resolve(out.id);
            },
          );
        }),
    };
    liveSquatters.add(squatter);
    return squatter;
  } catch (err) {
    destroy();
    throw err;
  }
}
