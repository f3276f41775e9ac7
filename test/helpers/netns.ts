import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readlinkSync } from 'node:fs';

/**
 * Network namespaces as "hosts" for the multi-host tests (docs/multi-host.md): each lab makes
 * uniquely named namespaces `chatd-<owner pid>-<id>-<host>` joined by veth links to a bridge
 * `chb<id>` in the root namespace, on a private /24 of 10.0.0.0/8 that no route of this
 * machine uses. The root namespace holds the bridge's address (`.1`), so the test process
 * itself reaches every host over TCP across the links; host i gets `.(10 + i)`.
 *
 * Run a host's commands under `lab.wrap(host)`: `ip netns exec NS unshare --ipc --`, so that
 * each host also has its own System V IPC namespace (its own queues) and the hosts share
 * nothing but the network. Processes of one host are found by `ip netns pids`.
 *
 * Cleanup is by name and unconditional: `destroy()` SIGKILLs every process in the lab's
 * namespaces, deletes the namespaces, the veths and the bridge, also after a failed start.
 * A process-exit hook calls it for every lab still live. `sweepStale()`
 * removes what crashed runs left: namespaces and bridges whose owner pid is dead.
 *
 * Needs root and iproute2 (`ip`; scripts/setup-netns.sh installs it); `netnsUnavailable()`
 * says why not, and the suites skip with that message.
 */

const PREFIX = 'chatd-';
const BRIDGE_ALIAS = 'chatd-netns owner=';

export interface NetnsHost {
  /** The label the test uses: `a`, `b`, ... */
  readonly label: string;
  /** The namespace's name (`ip netns`). */
  readonly ns: string;
  /** Its address on the lab's link. */
  readonly address: string;
  /** The root-side end of its veth (down: the host is cut off from the others). */
  readonly veth: string;
}

interface IpResult {
  code: number;
  stdout: string;
  stderr: string;
}

function ip(args: string[], allowFail = false): IpResult {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  const out = { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? (r.error ? String(r.error) : '') };
  if (out.code !== 0 && !allowFail) throw new Error(`ip ${args.join(' ')}: ${out.stderr.trim() || `exit ${out.code}`}`);
  return out;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Why namespaces cannot be used here (undefined: they can): not root, no `ip` or `unshare`, or creating one fails. */
export function netnsUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'network namespaces need root (the tests create and delete them)';
  const v = spawnSync('ip', ['-V'], { encoding: 'utf8' });
  if (v.error || v.status !== 0) return '`ip` (iproute2) is not installed: run scripts/setup-netns.sh';
  const u = spawnSync('unshare', ['--version'], { encoding: 'utf8' });
  if (u.error || u.status !== 0) return '`unshare` (util-linux) is not installed';
  const probe = `${PREFIX}${process.pid}-probe${randomBytes(3).toString('hex')}`;
  const add = ip(['netns', 'add', probe], true);
  if (add.code !== 0) return `cannot create a network namespace: ${add.stderr.trim()}`;
  ip(['netns', 'del', probe], true);
  return undefined;
}

/** Namespaces by name (`ip netns list`). */
export function listNamespaces(): string[] {
  return ip(['netns', 'list'], true)
    .stdout.split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n !== '');
}

/** Pids of the processes in a namespace (`ip netns pids`); [] when it is gone. */
export function namespacePids(ns: string): number[] {
  return ip(['netns', 'pids', ns], true)
    .stdout.split('\n')
    .map((l) => Number.parseInt(l.trim(), 10))
    .filter((p) => p > 0);
}

/** Links of the root namespace: name and alias. */
function rootLinks(): { name: string; alias: string | undefined; kind: string | undefined }[] {
  const r = ip(['-j', '-d', 'link', 'show'], true);
  if (r.code !== 0) return [];
  try {
    return (JSON.parse(r.stdout) as { ifname: string; ifalias?: string; linkinfo?: { info_kind?: string } }[]).map((l) => ({
      name: l.ifname,
      alias: l.ifalias,
      kind: l.linkinfo?.info_kind,
    }));
  } catch {
    return [];
  }
}

/** IPv4 prefixes this machine routes or holds (root namespace), as [network, prefix length]. */
function usedPrefixes(): [number, number][] {
  const out: [number, number][] = [];
  const parse = (cidr: string): void => {
    const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)(?:\/(\d+))?$/.exec(cidr);
    if (!m) return;
    const addr = ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
    out.push([addr, m[5] === undefined ? 32 : Number(m[5])]);
  };
  for (const line of ip(['-4', 'route', 'show', 'table', 'all'], true).stdout.split('\n')) {
    const dst = line.trim().split(/\s+/)[0];
    if (dst && dst !== 'default' && dst !== 'local' && dst !== 'broadcast') parse(dst);
    const local = /^(?:local|broadcast)\s+(\S+)/.exec(line.trim());
    if (local?.[1]) parse(local[1]);
  }
  for (const line of ip(['-4', '-o', 'addr', 'show'], true).stdout.split('\n')) {
    const m = /inet (\S+)/.exec(line);
    if (m?.[1]) parse(m[1]);
  }
  return out;
}

function overlaps(a: number, alen: number, b: number, blen: number): boolean {
  const len = Math.min(alen, blen);
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return ((a & mask) >>> 0) === ((b & mask) >>> 0);
}

/** A 10.x.y.0/24 (x in 200..249) that overlaps nothing this machine routes. */
function freeSubnet(): string {
  const used = usedPrefixes();
  for (let tries = 0; tries < 200; tries++) {
    const x = 200 + Math.floor(Math.random() * 50);
    const y = Math.floor(Math.random() * 256);
    const net = ((10 << 24) | (x << 16) | (y << 8)) >>> 0;
    if (!used.some(([n, len]) => overlaps(net, 24, n, len))) return `10.${x}.${y}`;
  }
  throw new Error('no free 10.x.y.0/24 for the namespace lab');
}

const live = new Set<NetnsLab>();
let hooked = false;

export class NetnsLab {
  /** 6 hex digits naming this lab's namespaces and links. */
  readonly id: string;
  readonly owner = process.pid;
  /** The bridge in the root namespace. */
  readonly bridge: string;
  /** `10.x.y` of the lab's /24. */
  readonly subnet: string;
  /** The root namespace's address on the lab's link (where the test process talks from). */
  readonly gateway: string;
  readonly hosts = new Map<string, NetnsHost>();
  private destroyed = false;

  private constructor(labels: string[]) {
    this.id = randomBytes(3).toString('hex');
    this.bridge = `chb${this.id}`;
    this.subnet = freeSubnet();
    this.gateway = `${this.subnet}.1`;
    labels.forEach((label, i) => {
      if (!/^[a-z]$/.test(label)) throw new Error(`host label ${JSON.stringify(label)}: one letter a-z`);
      this.hosts.set(label, { label, ns: `${PREFIX}${this.owner}-${this.id}-${label}`, address: `${this.subnet}.${10 + i}`, veth: `chv${this.id}${label}` });
    });
  }

  /** Creates the namespaces (one per label), the bridge and the links; undoes everything on failure. */
  static create(labels: string[]): NetnsLab {
    installHook();
    const lab = new NetnsLab(labels);
    live.add(lab);
    try {
      ip(['link', 'add', lab.bridge, 'type', 'bridge']);
      // The alias names the owner pid, so that sweepStale() can tell a crashed run's bridge.
      ip(['link', 'set', 'dev', lab.bridge, 'alias', `${BRIDGE_ALIAS}${lab.owner}`]);
      ip(['addr', 'add', `${lab.gateway}/24`, 'dev', lab.bridge]);
      ip(['link', 'set', lab.bridge, 'up']);
      for (const h of lab.hosts.values()) {
        ip(['netns', 'add', h.ns]);
        ip(['link', 'add', h.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns]);
        ip(['link', 'set', h.veth, 'master', lab.bridge, 'up']);
        ip(['-n', h.ns, 'addr', 'add', `${h.address}/24`, 'dev', 'eth0']);
        ip(['-n', h.ns, 'link', 'set', 'eth0', 'up']);
        ip(['-n', h.ns, 'link', 'set', 'lo', 'up']);
      }
    } catch (err) {
      lab.destroy();
      throw err;
    }
    return lab;
  }

  host(label: string): NetnsHost {
    const h = this.hosts.get(label);
    if (!h) throw new Error(`no host ${label} in lab ${this.id}`);
    return h;
  }

  /**
   * The command prefix that runs a program on host `label`: in its network namespace and, with
   * `ipc` (default), in a System V IPC namespace of its own (a PM2 daemon started this way
   * keeps it for all it runs).
   */
  wrap(label: string, options: { ipc?: boolean } = {}): string[] {
    const h = this.host(label);
    return ['ip', 'netns', 'exec', h.ns, ...(options.ipc === false ? [] : ['unshare', '--ipc', '--'])];
  }

  /** Pids of every process running on host `label`. */
  pids(label: string): number[] {
    return namespacePids(this.host(label).ns);
  }

  /** SIGKILLs every process of host `label` (a host crash); returns how many. */
  killAll(label: string): number {
    const pids = this.pids(label);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    return pids.length;
  }

  /** Cuts host `label` off the link (its processes keep running), or connects it again. */
  setLink(label: string, up: boolean): void {
    ip(['link', 'set', this.host(label).veth, up ? 'up' : 'down']);
  }

  /** Removes everything of this lab, by name; idempotent, never throws. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    removeLab(this.id, [...this.hosts.values()].map((h) => h.ns));
    live.delete(this);
  }
}

/** Kills the namespaces' processes, deletes the namespaces, veths and bridge of lab `id`. */
function removeLab(id: string, namespaces: string[]): void {
  for (const ns of namespaces) {
    // Twice: a dying PM2 daemon may fork once more between the list and the kill.
    for (let round = 0; round < 2; round++) {
      for (const pid of namespacePids(ns)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone already
        }
      }
    }
    ip(['netns', 'del', ns], true);
  }
  for (const link of rootLinks()) {
    if (link.name === `chb${id}` || (link.name.startsWith(`chv${id}`) && link.name.length === 10)) ip(['link', 'del', link.name], true);
  }
}

/**
 * Removes what crashed runs left: namespaces `chatd-<pid>-<id>-*` and bridges whose alias
 * names an owner pid, when that pid no longer runs (or runs as another program: its
 * namespaces would have gone with a clean exit). Returns the lab ids removed.
 */
export function sweepStale(): string[] {
  const byLab = new Map<string, { owner: number; namespaces: string[] }>();
  for (const ns of listNamespaces()) {
    const m = /^chatd-(\d+)-([0-9a-f]{6})-[a-z]$/.exec(ns);
    if (!m) continue;
    const lab = byLab.get(m[2]!) ?? { owner: Number(m[1]), namespaces: [] };
    lab.namespaces.push(ns);
    byLab.set(m[2]!, lab);
  }
  for (const link of rootLinks()) {
    const m = /^chb([0-9a-f]{6})$/.exec(link.name);
    const owner = link.alias?.startsWith(BRIDGE_ALIAS) ? Number(link.alias.slice(BRIDGE_ALIAS.length)) : undefined;
    if (m && owner !== undefined && !byLab.has(m[1]!)) byLab.set(m[1]!, { owner, namespaces: [] });
  }
  const removed: string[] = [];
  for (const [id, lab] of byLab) {
    if (lab.owner === process.pid || ownerRuns(lab.owner)) continue;
    removeLab(id, lab.namespaces);
    removed.push(id);
  }
  return removed;
}

/** The owner pid runs node (a pid reused by another program does not own a lab). */
function ownerRuns(pid: number): boolean {
  if (!pidAlive(pid)) return false;
  try {
    return /node/.test(readlinkSync(`/proc/${pid}/exe`));
  } catch {
    return true; // cannot tell: leave it
  }
}

function installHook(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', () => {
    for (const lab of [...live]) lab.destroy();
  });
}

/** Labs not destroyed yet (for the suites' cleanup checks). */
export function liveLabs(): number {
  return live.size;
}

/** Every namespace of this process's labs that still exists (should be none after destroy). */
export function leftoverNamespaces(id: string): string[] {
  return listNamespaces().filter((n) => n.includes(`-${id}-`));
}

/** Root links of lab `id` that still exist. */
export function leftoverLinks(id: string): string[] {
  return rootLinks()
    .map((l) => l.name)
    .filter((n) => n === `chb${id}` || n.startsWith(`chv${id}`));
}

/**
 * The end of a multi-host suite, also when it failed: closes the clients and the tool, stops
 * every host's cluster (printing its logs when a test failed or E2E_SHOW_LOGS is set), then
 * kills the NATS server and removes the lab (namespaces, links, bridge).
 */
export async function tearDownHosts(parts: {
  failed: boolean;
  clients: readonly { destroy(): Promise<void> }[];
  tool: { close(): Promise<void> } | undefined;
  hosts: readonly ({ readonly stopped: boolean; readonly label: string; readonly finalLogs: string | undefined; stop(): Promise<void> } | undefined)[];
  nats: { dispose(): Promise<void> } | undefined;
  lab: NetnsLab | undefined;
}): Promise<void> {
  try {
    for (const cl of parts.clients) await cl.destroy().catch(() => {});
    await parts.tool?.close().catch(() => {});
    for (const c of parts.hosts) {
      if (c && !c.stopped) await c.stop();
      if (c && (parts.failed || process.env.E2E_SHOW_LOGS)) console.log(`\n${c.label} logs:\n${c.finalLogs}\n`);
    }
  } finally {
    await parts.nats?.dispose();
    parts.lab?.destroy();
  }
}
