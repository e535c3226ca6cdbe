// The one place that decides what of a host OCI spec reaches the guest agent: paths moved into the virtio-fs
// share, and without the bits that only make sense on the host (Kata runtime-rs's amend_spec, plus the LSM and
// cgroup rewrites kata-ts always did).
import path from 'node:path';
import { guestRootfsPath } from '../contract/index.js';
import type { OciLinux, OciSpec } from '../protocols/oci-spec-types.js';
import type { OciMount } from './types.js';

/** Parent of every container cgroup in the guest: the guest runs one sandbox, host cgroup paths mean nothing there. */
export const GUEST_CGROUP_PARENT = '/kata';

/**
 * Namespaces the guest cannot honour: the VM's network is the pod's, and time namespaces are host ones (as
 * runtime-rs). Upstream drops pid too (its agent joins the sandbox pidns itself); kata-ts's agent keeps the
 * container's own pid namespace, so pid stays.
 */
const DROPPED_NAMESPACES = new Set(['network', 'time']);

export interface GuestSpecOptions {
  /** Kata's disable_guest_seccomp: the guest runs the container without the spec's seccomp profile. */
  disableGuestSeccomp?: boolean;
}

export function guestCgroupsPath(containerId: string): string {
  return path.posix.join(GUEST_CGROUP_PARENT, containerId);
}

/**
 * A copy of the spec without what only makes sense on the host; paths are left alone (buildGuestSpec moves them).
 * Idempotent, and the input is not modified.
 */
export function sanitizeForGuest(spec: OciSpec, opts: GuestSpecOptions = {}): OciSpec {
  const { hooks, process: proc, linux, ...rest } = structuredClone(spec);
  const g: OciSpec = rest;

  // Host hooks would run host binaries from inside the guest; startContainer hooks are defined to run in the
  // container's namespaces, so only they are kept (as upstream Kata does).
  const start = hooks?.startContainer;
  if (Array.isArray(start) && start.length > 0) g.hooks = { startContainer: start };

  if (proc) {
    // The guest kernel has no LSM policy loaded for host profiles/labels.
    const { apparmorProfile: _a, selinuxLabel: _s, ...p } = proc;
    g.process = p;
  }

  if (linux) {
    const { mountLabel: _m, seccomp, ...kept } = linux;
    const l: OciLinux = kept;
    if (Array.isArray(l.namespaces)) {
      // Paths point at host /proc/<pid>/ns files; the agent sets up the guest's namespaces itself.
      l.namespaces = l.namespaces
        .filter((ns) => !DROPPED_NAMESPACES.has(ns.type))
        .map((ns) => ({ type: ns.type }));
    }
    if (seccomp && !opts.disableGuestSeccomp) l.seccomp = seccomp;
    g.linux = l;
  }
  return g;
}

/**
 * The spec the guest agent runs for a container: sanitizeForGuest, the rootfs in the share, the given (already
 * planned) mounts, and the container's cgroup under GUEST_CGROUP_PARENT.
 */
export function buildGuestSpec(
  spec: OciSpec,
  containerId: string,
  mounts: OciMount[],
  opts: GuestSpecOptions & { readonlyRootfs?: boolean } = {},
): OciSpec {
  const g = sanitizeForGuest(spec, opts);
  g.root = {
    path: guestRootfsPath(containerId),
    readonly: Boolean(spec.root?.readonly || opts.readonlyRootfs),
  };
  g.mounts = mounts;
  if (g.linux) g.linux.cgroupsPath = guestCgroupsPath(containerId);
  return g;
}
