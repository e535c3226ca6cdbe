// What kata-ts can leave on the host, and the diff that finds leftovers (no vitest here: benchmarks use it too;
// the vitest hooks are leftovers.ts). A snapshot lists what kata-ts can leave behind:
// its processes (QEMU, virtiofsd, shim), mounts and dirs, host sandbox cgroups (kata_<sid>, or the spec's cgroupsPath, in every hierarchy),
// vsock guest-CID records, network links (taps, veths), their qdiscs and network namespaces. A leftover is what
// names one of the test's ids, or what is in the snapshot after the test but was not in the one before it.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { PollTimeoutError, pollUntil } from '../../src/common/poll.js';

export interface HostSnapshot {
  /** `<pid>: <cmdline>` of QEMU, virtiofsd and shim processes. */
  processes: string[];
  /** Mount points. */
  mounts: string[];
  /** Per-sandbox dirs under /run/kata, /run/vc/vm and the shared-fs root. */
  dirs: string[];
  /** kata_* cgroup dirs (a hierarchy's root or one level below) and container cgroups under containerd's and
   * kubelet's parents (a sandbox cgroup is the spec's cgroupsPath). */
  cgroups: string[];
  /** `<cid> <owner>` of the vsock CID registry. */
  vsockCids: string[];
  /** `<name> <kind>` of this netns's links. */
  links: string[];
  /** `<dev> <handle> <kind>` of this netns's qdiscs. */
  qdiscs: string[];
  /** Named network namespaces. */
  netns: string[];
}

export type SnapshotPart = keyof HostSnapshot;

const PROCESS = /qemu-system|virtiofsd|containerd-shim-kata-v2/;
const SANDBOX_DIR_ROOTS = ['/run/kata', '/run/vc/vm', '/run/kata-containers/shared/sandboxes'];
const VSOCK_CID_DIR = '/run/kata-ts/vsock-cids'; // src/hypervisor/vsock.ts
const CGROUP_PREFIX = 'kata_'; // src/resource/cgroups.ts: kata_<sid>
/** Mounts outside these (and not naming an id) are other programs' business, not a kata-ts leftover. */
const KATA_MOUNT_ROOTS = ['/run/kata', '/run/vc/', '/run/kata-containers/'];

function ls(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

function processes(): string[] {
  const out: string[] = [];
  for (const pid of ls('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmd: string;
    try {
      cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
    } catch {
      continue; // exited meanwhile
    }
    if (PROCESS.test(cmd)) out.push(`${pid}: ${cmd.slice(0, 300)}`);
  }
  return out;
}

/** /proc/self/mountinfo as [mount point, fstype] (octal escapes kept: they only need to compare equal). */
function mountTable(): [string, string][] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [pre = '', post = ''] = l.split(' - ');
      return [pre.split(' ')[4] ?? '', post.split(' ')[0] ?? ''];
    });
}

/**
 * Where containerd and kubelet put container cgroups (containerd's /<namespace>/<id>, kubelet's pod cgroups):
 * a kata-ts sandbox cgroup is the sandbox spec's cgroupsPath, so it lands there. Other trees (the host's own)
 * change by themselves and are not looked at.
 */
const CONTAINER_CGROUP_PARENTS = new Set(['default', 'k8s.io', 'kata-ts-test', 'kubepods']);
/** kubelet's QoS and pod levels: made by kubelet (here: by the test playing it), not container cgroups. */
const KUBELET_LEVEL = /^(besteffort|burstable|guaranteed|pod.*)$/;

function subdirs(dir: string): string[] {
  return ls(dir).filter(
    (e) => !e.includes('.') && fs.statSync(path.join(dir, e), { throwIfNoEntry: false })?.isDirectory(),
  );
}

function containerCgroups(dir: string, depth: number, out: string[]): void {
  for (const e of subdirs(dir)) {
    const p = path.join(dir, e);
    if (!KUBELET_LEVEL.test(e)) out.push(p);
    else if (depth < 4) containerCgroups(p, depth + 1, out);
  }
}

function cgroups(): string[] {
  const out: string[] = [];
  const roots = mountTable()
    .filter(([, fstype]) => fstype === 'cgroup' || fstype === 'cgroup2')
    .map(([mnt]) => mnt);
  for (const root of new Set(roots)) {
    for (const e of ls(root)) {
      const p = path.join(root, e);
      if (e.startsWith(CGROUP_PREFIX)) out.push(p);
      else if (CONTAINER_CGROUP_PARENTS.has(e)) containerCgroups(p, 1, out);
      else for (const e2 of subdirs(p)) if (e2.startsWith(CGROUP_PREFIX)) out.push(path.join(p, e2));
    }
  }
  return out;
}

function vsockCids(): string[] {
  return ls(VSOCK_CID_DIR).map((cid) => {
    let owner = '';
    try {
      owner = fs.readFileSync(path.join(VSOCK_CID_DIR, cid), 'utf8').trim();
    } catch {
      // released meanwhile
    }
    return `${cid} ${owner}`;
  });
}

/** `ip -j ...` / `tc -j ...` parsed; a missing tool is an error (scripts/setup.sh installs iproute2). */
function iproute2Json(tool: 'ip' | 'tc', args: string[]): Record<string, unknown>[] {
  const out = execFileSync(tool, ['-j', ...args], { encoding: 'utf8', timeout: 10_000 }).trim();
  return out ? (JSON.parse(out) as Record<string, unknown>[]) : [];
}

function links(): string[] {
  return iproute2Json('ip', ['-d', 'link', 'show']).map((l) => {
    const info = l.linkinfo as { info_kind?: string } | undefined;
    return `${String(l.ifname)} ${info?.info_kind ?? 'device'}`;
  });
}

function qdiscs(): string[] {
  return iproute2Json('tc', ['qdisc', 'show']).map(
    (q) => `${String(q.dev)} ${String(q.handle)} ${String(q.kind)}`,
  );
}

function netns(): string[] {
  return iproute2Json('ip', ['netns', 'list']).map((n) => String(n.name));
}

export function snapshotHost(): HostSnapshot {
  return {
    processes: processes(),
    mounts: mountTable().map(([mnt]) => mnt),
    dirs: SANDBOX_DIR_ROOTS.flatMap((r) => ls(r).map((e) => path.join(r, e))),
    cgroups: cgroups(),
    vsockCids: vsockCids(),
    links: links(),
    qdiscs: qdiscs(),
    netns: netns(),
  };
}

/** An empty snapshot: with it as "before", only what names an id counts. */
export function emptySnapshot(): HostSnapshot {
  return {
    processes: [],
    mounts: [],
    dirs: [],
    cgroups: [],
    vsockCids: [],
    links: [],
    qdiscs: [],
    netns: [],
  };
}

function names(item: string, id: string): boolean {
  return item.includes(id);
}

/**
 * What `after` holds that the tests with these ids left: an entry that names an id, or one not in `before`
 * (mounts only under kata-ts's own roots, since other programs mount too). Pure; each line says its kind.
 */
export function diffLeftovers(before: HostSnapshot, after: HostSnapshot, ids: readonly string[]): string[] {
  const used = ids.filter(Boolean);
  const out: string[] = [];
  for (const part of Object.keys(after) as SnapshotPart[]) {
    const old = new Set(before[part]);
    for (const item of after[part]) {
      const byId = used.some((id) => names(item, id));
      const isNew = !old.has(item) && (part !== 'mounts' || KATA_MOUNT_ROOTS.some((r) => item.startsWith(r)));
      if (byId || isNew) out.push(`${part}: ${item}`);
    }
  }
  return out;
}

/** Leftovers of `ids` right now, by name only (no "before"). */
export function leftovers(ids: readonly string[]): string[] {
  const now = snapshotHost();
  return diffLeftovers(now, now, ids);
}

/**
 * Polls until nothing is left (the shim and QEMU exit a moment after ctr returns); returns what still is.
 * Without `before`, only what names an id counts.
 */
export async function waitNoLeftovers(
  ids: readonly string[],
  opts: { before?: HostSnapshot; timeoutMs?: number } = {},
): Promise<string[]> {
  let left: string[] = [];
  const probe = () => {
    const now = snapshotHost();
    left = diffLeftovers(opts.before ?? now, now, ids);
    return left.length === 0;
  };
  try {
    await pollUntil(probe, {
      timeoutMs: opts.timeoutMs ?? 30_000,
      intervalMs: 200,
      what: 'host leftovers to go',
    });
  } catch (err) {
    if (!(err instanceof PollTimeoutError)) throw err; // timed out: the caller reports `left`
  }
  return left;
}
