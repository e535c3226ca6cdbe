// A private containerd with its CRI plugin on, for tests that play kubelet: its own root, state, socket, CNI dirs
// and pod log dir, runtime handlers `runc` and `kata` (io.containerd.kata.v2 → the repo's bin/ shim → dist/), a
// locally built pause image as the sandbox image and busybox, both imported into namespace k8s.io.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pollUntil, sleep } from '../../../src/common/poll.js';
import { BUSYBOX_IMAGE, importBusybox } from '../busybox-image.js';
import { type Containerd, KATA_RUNTIME, startContainerd } from '../containerd.js';
import { leftovers } from '../host-snapshot.js';
import { CriClient } from './client.js';
import { PAUSE_IMAGE, buildPauseImageTar } from './pause-image.js';

export const CRI_NAMESPACE = 'k8s.io';
/** The RuntimeClass handlers this containerd knows. */
export type RuntimeHandler = 'runc' | 'kata';
/** Debian's containernetworking-plugins. */
export const CNI_BIN_DIR = '/usr/lib/cni';

export interface CriContainerdOptions {
  /** The Kata configuration the `kata` handler uses (its runtime options' ConfigPath, as kata-deploy sets it). */
  kataConfigPath: string;
  level?: 'debug' | 'info';
  /**
   * A pod network: Debian's CNI `bridge` (no gateway address on the bridge, no masquerade, no forwarding
   * sysctl: pods reach only each other) with `host-local` IPAM in this containerd's dir. The bridge is
   * deleted by stop(). Without it, pods must use the node's network (see cniConfDir).
   */
  podNetwork?: { bridge: string; subnet: string };
}

export interface CriContainerd {
  ctrd: Containerd;
  cri: CriClient;
  /** Parent of the pods' log directories (kubelet's /var/log/pods). */
  podLogDir: string;
  /** The CRI plugin's CNI conf dir (empty: see podSandboxConfig). */
  cniConfDir: string;
  images: { pause: string; busybox: string };
  /** Stops and removes every pod through CRI, then stops containerd and the shims it left. */
  stop(): Promise<void>;
}

function q(s: string): string {
  return JSON.stringify(s);
}

function criConfigToml(dir: string, level: string, kataConfigPath: string): string {
  const cri = '[plugins."io.containerd.grpc.v1.cri"';
  return `version = 2
root = ${q(`${dir}/root`)}
state = ${q(`${dir}/state`)}
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]

[grpc]
  address = ${q(`${dir}/containerd.sock`)}

[ttrpc]
  address = ${q(`${dir}/containerd.sock.ttrpc`)}

[debug]
  level = ${q(level)}

[plugins]
  [plugins."io.containerd.gc.v1.scheduler"]
    startup_delay = "100ms"
  [plugins."io.containerd.runtime.v2.task"]
    platforms = ["linux/amd64"]
  ${cri}]
    sandbox_image = ${q(PAUSE_IMAGE)}
    # The host withholds CAP_SYS_RESOURCE: lowering a child's oom_score_adj below ours would fail.
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    # Pod netns mounts live under this containerd's state dir, not the host's /var/run/netns.
    netns_mounts_under_state_dir = true
    ${cri}.containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      ${cri}.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        ${cri}.containerd.runtimes.runc.options]
          SystemdCgroup = false
      ${cri}.containerd.runtimes.kata]
        runtime_type = ${q(KATA_RUNTIME)}
        privileged_without_host_devices = true
        pod_annotations = ["io.katacontainers.*"]
        ${cri}.containerd.runtimes.kata.options]
          ConfigPath = ${q(kataConfigPath)}
    ${cri}.cni]
      bin_dir = ${q(CNI_BIN_DIR)}
      conf_dir = ${q(`${dir}/cni/net.d`)}
      max_conf_num = 1
`;
}

function bridgeConflist(dir: string, net: { bridge: string; subnet: string }): string {
  return JSON.stringify({
    cniVersion: '0.4.0',
    name: 'kata-ts-test',
    plugins: [
      {
        type: 'bridge',
        bridge: net.bridge,
        isGateway: false,
        ipMasq: false,
        ipam: { type: 'host-local', ranges: [[{ subnet: net.subnet }]], dataDir: path.join(dir, 'cni/ipam') },
      },
    ],
  });
}

/** The CNI bridge plugin never deletes its bridge: the test that made it does. */
function deleteLink(name: string): void {
  try {
    execFileSync('ip', ['link', 'del', name], { stdio: 'pipe', timeout: 10_000 });
  } catch (e) {
    if (!/Cannot find device/.test(String((e as { stderr?: Buffer }).stderr ?? e))) throw e;
  }
}

/**
 * Starts containerd with CRI, imports the pause and busybox images into k8s.io and waits until the CRI service
 * answers. The shim is whatever dist/ holds (build it first: `npm run build`).
 */
export async function startCriContainerd(opts: CriContainerdOptions): Promise<CriContainerd> {
  const ctrd = await startContainerd({
    namespace: CRI_NAMESPACE,
    level: opts.level,
    config: (dir, level) => {
      fs.mkdirSync(path.join(dir, 'cni/net.d'), { recursive: true });
      fs.mkdirSync(path.join(dir, 'pods'), { recursive: true });
      if (opts.podNetwork)
        fs.writeFileSync(
          path.join(dir, 'cni/net.d/10-kata-ts-test.conflist'),
          bridgeConflist(dir, opts.podNetwork),
        );
      return criConfigToml(dir, level, opts.kataConfigPath);
    },
  });
  const cri = new CriClient(ctrd.socket);
  const stop = async () => {
    try {
      await removeAllPods(cri);
    } finally {
      cri.close();
      await ctrd.stop();
      if (opts.podNetwork) deleteLink(opts.podNetwork.bridge);
    }
  };
  try {
    // The CRI service registers on the socket a moment after containerd starts serving it.
    await pollUntil(
      () =>
        cri.version({ timeoutMs: 2_000 }).then(
          (v) => v,
          () => undefined,
        ),
      { timeoutMs: 30_000, intervalMs: 200, what: `containerd's CRI service on ${ctrd.socket}` },
    );
    const pauseTar = await buildPauseImageTar(ctrd.dir);
    const r = await ctrd.ctr(['images', 'import', '--platform', 'linux/amd64', pauseTar], {
      timeoutMs: 60_000,
    });
    if (r.code !== 0)
      throw new Error(`ctr images import ${pauseTar} failed (${r.code}): ${r.stderr || r.stdout}`);
    await importBusybox(ctrd.ctr, ctrd.dir);
    // CRI learns of imported images through containerd's events; wait until it reports both.
    for (const image of [PAUSE_IMAGE, BUSYBOX_IMAGE]) {
      await pollUntil(() => cri.imageStatus(image).then((i) => i ?? undefined), {
        timeoutMs: 30_000,
        intervalMs: 200,
        what: `CRI to see image ${image}`,
      });
    }
  } catch (e) {
    console.error(ctrd.readLog().slice(-5000));
    await stop();
    throw e;
  }
  return {
    ctrd,
    cri,
    podLogDir: path.join(ctrd.dir, 'pods'),
    cniConfDir: path.join(ctrd.dir, 'cni/net.d'),
    images: { pause: PAUSE_IMAGE, busybox: BUSYBOX_IMAGE },
    stop,
  };
}

/** What kubelet does at the end of a node's life: stop and remove every pod still there. */
async function removeAllPods(cri: CriClient): Promise<void> {
  const errors: string[] = [];
  let pods: { id: string }[] = [];
  try {
    pods = await cri.listPodSandbox();
  } catch (e) {
    errors.push(`ListPodSandbox: ${(e as Error).message}`);
  }
  for (const p of pods) {
    try {
      await cri.stopPodSandbox(p.id);
      await cri.removePodSandbox(p.id);
    } catch (e) {
      errors.push(`pod ${p.id}: ${(e as Error).message}`);
    }
  }
  if (errors.length) throw new Error(`removing the pods left at the end: ${errors.join('; ')}`);
}

/**
 * What a pod left on the host: kata's (processes, mounts, /run/kata, /run/vc, shared dirs: test/helpers'
 * leftovers), any shim of this containerd still naming the ids, and host cgroup dirs named after them.
 */
export function podLeftovers(ctrd: Containerd, ids: string[]): string[] {
  const found = leftovers(ids);
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmd: string;
    try {
      cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      continue;
    }
    if (/containerd-shim-runc-v2/.test(cmd) && cmd.includes(ctrd.socket) && ids.some((i) => cmd.includes(i)))
      found.push(`process ${pid}: ${cmd.slice(0, 200)}`);
  }
  for (const dir of cgroupDirsNamed(ids)) found.push(`cgroup: ${dir}`);
  return found;
}

/** Cgroup dirs (v1 controllers or v2) whose name contains one of the ids, a few levels deep. */
function cgroupDirsNamed(ids: string[], root = '/sys/fs/cgroup', depth = 4): string[] {
  const out: string[] = [];
  const walk = (dir: string, left: number) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return; // vanished while we looked, or not readable
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const p = path.join(dir, e.name);
      if (ids.some((i) => e.name.includes(i))) out.push(p);
      else if (left > 0) walk(p, left - 1);
    }
  };
  walk(root, depth);
  return out;
}

/** Polls until the pods left nothing behind (shims and VMs exit a moment after RemovePodSandbox returns). */
export async function waitPodsGone(ctrd: Containerd, ids: string[], timeoutMs = 30_000): Promise<string[]> {
  let left = podLeftovers(ctrd, ids);
  const deadline = Date.now() + timeoutMs;
  while (left.length > 0 && Date.now() < deadline) {
    await sleep(250);
    left = podLeftovers(ctrd, ids);
  }
  return left;
}

/**
 * kubelet's pod cgroup for a pod of this uid (cgroupfs driver, QoS besteffort), as the PodSandboxConfig's
 * cgroup_parent. kubelet makes and removes it; here runc and kata-ts make it on first use and the test removes it.
 */
export function podCgroupParent(uid: string): string {
  return `/kubepods/besteffort/pod${uid}`;
}

/** kubelet's part after a pod is gone: its pod cgroup (and the QoS levels, if now empty) in every hierarchy. */
export function removePodCgroup(parent: string): void {
  const roots = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => / - cgroup2? /.test(l))
    .map((l) => l.split(' ')[4] ?? '');
  for (const root of new Set(roots)) {
    for (let p = parent; p !== '/' && p !== ''; p = path.posix.dirname(p)) {
      try {
        fs.rmdirSync(path.join(root, p));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOTEMPTY' || code === 'EBUSY') break; // shared with another pod
        if (code !== 'ENOENT') throw e;
      }
    }
  }
}
