// Host-side fixture for agent tests: the agent services in-process behind a real ttrpc server on a unix
// socket, crun from the host, a busybox rootfs in a temp dir, a private cgroup parent.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startReaper } from '../../src/agent/reaper.js';
import { type AgentServiceOptions, type AgentServices, createAgentService } from '../../src/agent/service.js';
import { AgentService } from '../../src/protocols/gen/agent_pb.js';
import { Health } from '../../src/protocols/gen/health_pb.js';
import type { Spec } from '../../src/protocols/gen/oci_pb.js';
import { type OciSpec, specToGrpc } from '../../src/protocols/oci-spec.js';
import { type Client, TtrpcClient, TtrpcServer, createClient } from '../../src/protocols/ttrpc/index.js';

export interface HostAgent {
  dir: string;
  kataRunDir: string;
  sharedDir: string;
  stateDir: string;
  cgroupParent: string;
  services: AgentServices;
  agent: Client<typeof AgentService>;
  health: Client<typeof Health>;
  destroyed: number;
  close(): Promise<void>;
}

/** A busybox rootfs: the static binary plus one symlink per applet. */
export function buildBusyboxRootfs(rootfs: string): void {
  for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'etc', 'root', 'run'])
    fs.mkdirSync(path.join(rootfs, d), { recursive: true });
  fs.copyFileSync('/bin/busybox', path.join(rootfs, 'bin/busybox'));
  fs.chmodSync(path.join(rootfs, 'bin/busybox'), 0o755);
  const applets = execFileSync('/bin/busybox', ['--list'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (const a of applets) if (a !== 'busybox') fs.symlinkSync('busybox', path.join(rootfs, 'bin', a));
  fs.writeFileSync(path.join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  fs.writeFileSync(path.join(rootfs, 'etc/group'), 'root:x:0:\n');
}

/**
 * crun refuses "hybrid" cgroups (v1 controllers plus a cgroup2 with controllers at
 * /sys/fs/cgroup/unified), which some hosts have; hide that mount in a private mount namespace.
 */
function crunForHost(dir: string): string {
  const unified = '/sys/fs/cgroup/unified/cgroup.controllers';
  const needsWrapper = fs.existsSync(unified) && fs.readFileSync(unified, 'utf8').trim() !== '';
  if (!needsWrapper) return '/usr/bin/crun';
  const wrapper = path.join(dir, 'crun');
  fs.writeFileSync(
    wrapper,
    `#!/bin/sh\nexec unshare -m --propagation private sh -c 'mount -t tmpfs kt-hide /sys/fs/cgroup/unified && exec /usr/bin/crun "$@"' crun "$@"\n`,
    { mode: 0o755 },
  );
  return wrapper;
}

export const CAPS = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

/** An OCI spec like containerd's default for a busybox container at <shared>/<cid>/rootfs. */
export function busyboxSpec(
  env: HostAgent,
  cid: string,
  args: string[],
  opts: { terminal?: boolean; mounts?: OciSpec['mounts'] } = {},
): Spec {
  const rootfs = path.join(env.sharedDir, cid, 'rootfs');
  if (!fs.existsSync(path.join(rootfs, 'bin/busybox'))) buildBusyboxRootfs(rootfs);
  const caps = { bounding: CAPS, effective: CAPS, permitted: CAPS };
  const spec: OciSpec = {
    ociVersion: '1.0.2',
    process: {
      terminal: opts.terminal,
      user: { uid: 0, gid: 0 },
      args,
      env: ['PATH=/bin', 'TERM=xterm'],
      cwd: '/',
      capabilities: caps,
      noNewPrivileges: true,
    },
    root: { path: rootfs },
    hostname: cid,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      {
        destination: '/dev',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
      },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'],
      },
      {
        destination: '/dev/shm',
        type: 'tmpfs',
        source: 'shm',
        options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
      },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      ...(opts.mounts ?? []),
    ],
    linux: {
      namespaces: [
        { type: 'pid' },
        { type: 'ipc' },
        { type: 'uts' },
        { type: 'mount' },
        { type: 'network', path: '/var/run/netns/cni-x' },
      ],
      cgroupsPath: `${env.cgroupParent}/${cid}`,
      maskedPaths: ['/proc/kcore', '/proc/keys', '/sys/firmware'],
      readonlyPaths: ['/proc/sys', '/proc/sysrq-trigger'],
    },
  };
  return specToGrpc(spec);
}

export async function startHostAgent(extra: AgentServiceOptions = {}): Promise<HostAgent> {
  startReaper({ pollMs: 100 });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kt-agent-'));
  const kataRunDir = path.join(dir, 'run-kata');
  const sharedDir = path.join(kataRunDir, 'shared/containers');
  const stateDir = path.join(dir, 'state');
  fs.mkdirSync(sharedDir, { recursive: true });
  const cgroupParent = `/kt-agent-test-${process.pid}`;
  const env: Partial<HostAgent> = { dir, kataRunDir, sharedDir, stateDir, cgroupParent, destroyed: 0 };
  const services = createAgentService({
    stateDir,
    kataRunDir,
    crunPath: crunForHost(dir),
    manageGuest: false,
    onDestroySandbox: () => {
      env.destroyed = (env.destroyed ?? 0) + 1;
    },
    ...extra,
  });
  const server = new TtrpcServer().register(AgentService, services.agent).register(Health, services.health);
  const sock = path.join(dir, 'agent.sock');
  await server.listen(sock);
  const conn = await TtrpcClient.connect(sock);
  return Object.assign(env, {
    services,
    agent: createClient(AgentService, conn),
    health: createClient(Health, conn),
    close: async () => {
      await services.shutdown();
      conn.close();
      server.close();
      removeCgroupTree(cgroupParent);
      for (const m of mountsUnder(dir).reverse()) execFileSync('umount', ['-l', m]);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  }) as HostAgent;
}

/** Cgroup directories named by a cgroupsPath, in every hierarchy. */
export function cgroupDirs(cgPath: string): string[] {
  const root = '/sys/fs/cgroup';
  if (fs.existsSync(path.join(root, 'cgroup.controllers'))) return [path.join(root, cgPath)];
  return fs
    .readdirSync(root)
    .map((h) => path.join(root, h, cgPath))
    .filter((d) => fs.existsSync(d));
}

export function removeCgroupTree(cgPath: string): void {
  for (const d of cgroupDirs(cgPath)) {
    const walk = (p: string): void => {
      for (const e of fs.readdirSync(p, { withFileTypes: true }))
        if (e.isDirectory()) walk(path.join(p, e.name));
      fs.rmdirSync(p);
    };
    try {
      walk(d);
    } catch {
      // a busy cgroup stays; the test's own cleanup assertions report it
    }
  }
}

export function mountsUnder(dir: string): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === dir || m.startsWith(`${dir}/`));
}

/** Pids of processes whose cgroup path mentions `marker`. */
export function processesInCgroup(marker: string): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (fs.readFileSync(`/proc/${e}/cgroup`, 'utf8').includes(marker)) out.push(Number(e));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** Reads stdout/stderr until EOF (empty read). */
export async function readAll(
  env: HostAgent,
  which: 'stdout' | 'stderr',
  cid: string,
  execId = '',
): Promise<string> {
  const chunks: Buffer[] = [];
  for (;;) {
    const r =
      which === 'stdout'
        ? await env.agent.readStdout({ containerId: cid, execId, len: 65536 })
        : await env.agent.readStderr({ containerId: cid, execId, len: 65536 });
    if (r.data.length === 0) break;
    chunks.push(Buffer.from(r.data));
  }
  return Buffer.concat(chunks).toString();
}
