// Rewrites a host OCI spec into the one the guest agent runs: paths into the virtio-fs share, and without the
// bits that only make sense on the host.
import path from 'node:path';
import { rootfsSharedPath } from './rootfs.js';
import { GUEST_SHARED_DIR } from './share-fs.js';
import type { OciMount, OciSpec } from './types.js';

/** Parent of every container cgroup in the guest: the guest runs one sandbox, host cgroup paths mean nothing there. */
export const GUEST_CGROUP_PARENT = '/kata';

/** Namespaces the guest cannot honour: the VM's network is the pod's, and time namespaces are not shared. */
const DROPPED_NAMESPACES = new Set(['network', 'time']);

export function guestCgroupsPath(containerId: string): string {
  return path.posix.join(GUEST_CGROUP_PARENT, containerId);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function buildGuestSpec(
  spec: OciSpec,
  containerId: string,
  mounts: OciMount[],
  opts: { readonlyRootfs?: boolean } = {},
): OciSpec {
  const { hooks, process: proc, linux, ...rest } = structuredClone(spec);
  const g: OciSpec = {
    ...rest,
    root: {
      path: path.posix.join(GUEST_SHARED_DIR, rootfsSharedPath(containerId)),
      readonly: Boolean(spec.root?.readonly || opts.readonlyRootfs),
    },
    mounts,
  };

  // Host hooks would run host binaries from inside the guest; startContainer hooks are defined to run in the
  // container's namespaces, so only they are kept (as upstream Kata does).
  const start = isRecord(hooks) ? hooks.startContainer : undefined;
  if (Array.isArray(start) && start.length > 0) g.hooks = { startContainer: start };

  if (isRecord(proc)) {
    // The guest kernel has no LSM policy loaded for host profiles/labels.
    const { apparmorProfile: _a, selinuxLabel: _s, ...p } = proc;
    g.process = p;
  }

  if (isRecord(linux)) {
    const { mountLabel: _m, ...l } = linux;
    if (Array.isArray(l.namespaces)) {
      // Paths point at host /proc/<pid>/ns files; the agent joins the sandbox's namespaces itself.
      l.namespaces = l.namespaces
        .filter(
          (ns): ns is Record<string, unknown> => isRecord(ns) && !DROPPED_NAMESPACES.has(String(ns.type)),
        )
        .map((ns) => ({ type: ns.type }));
    }
    l.cgroupsPath = guestCgroupsPath(containerId);
    g.linux = l;
  }
  return g;
}
