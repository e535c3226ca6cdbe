// The host↔guest contract: every value the runtime (host), the agent (guest) and the image builder must agree
// on. A leaf module: it imports nothing, so any layer on either side may import it.

/** virtio-fs tag of the per-sandbox shared directory (Kata's `kataShared`). */
export const SHARED_FS_TAG = 'kataShared';

/** Name of the virtio-serial port the agent serves ttrpc on (guest: /sys/class/virtio-ports/<n>/name). */
export const AGENT_SERIAL_PORT_NAME = 'agent.channel.0';

/** AF_VSOCK port the agent listens on (Kata's default). */
export const AGENT_VSOCK_PORT = 1024;

/** The guest's Kata directory: storages, rootfs and bind sources live under it. */
export const GUEST_KATA_DIR = '/run/kata-containers';

/** Where the guest mounts the shared fs; a container's files are `<this>/<container-id>/…`. */
export const GUEST_SHARED_DIR = `${GUEST_KATA_DIR}/shared/containers`;

/**
 * Where the guest makes a pod's ephemeral volumes (Kubernetes emptyDir with medium Memory): a tmpfs in the VM per
 * volume, `<this>/<volume name>`, shared by the pod's containers (Kata's kata_guest_sandbox_dir()/ephemeral).
 */
export const GUEST_EPHEMERAL_DIR = `${GUEST_KATA_DIR}/sandbox/ephemeral`;

/** The pod's /dev/shm: one tmpfs the agent makes at CreateSandbox, bound into every container (as Kata). */
export const GUEST_SANDBOX_SHM_DIR = `${GUEST_KATA_DIR}/sandbox/shm`;

/** A container's rootfs relative to the shared dir: the same on the host side of the share and in the guest. */
export function sharedRootfsPath(containerId: string): string {
  return `${containerId}/rootfs`;
}

/** A container's rootfs inside the guest. */
export function guestRootfsPath(containerId: string): string {
  return `${GUEST_SHARED_DIR}/${sharedRootfsPath(containerId)}`;
}

/** Kernel modules the image builder lists for the guest's modprobe at boot (modules-load.d). */
export const GUEST_MODULES_LOAD_FILE = '/etc/modules-load.d/kata-agent.conf';

/** Kernel command-line options the agent reads (`agent.<key>[=value]`, as Kata's agent). */
export const AGENT_KERNEL_PARAMS = {
  log: 'agent.log',
  debugConsole: 'agent.debug_console',
  hostname: 'agent.hostname',
  serverAddr: 'agent.server_addr',
  vsockPort: 'agent.vsock_port',
} as const;

/**
 * Route scopes by the names iproute2 prints, as the numbers agent.proto's Route.scope carries (the kernel's
 * RT_SCOPE_*): the host reads them from the pod netns, the guest from its own routes.
 */
export const ROUTE_SCOPES: Readonly<Record<string, number>> = {
  universe: 0,
  global: 0,
  site: 200,
  link: 253,
  host: 254,
  nowhere: 255,
};

// Sandbox, container and exec ids become path components on host and guest, so one grammar (containerd's
// identifier rule, which every id containerd hands a shim already meets) is checked at the edge.
const ID_RE = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;
export const MAX_ID_LENGTH = 76;

export type IdKind = 'sandbox' | 'container' | 'exec';

/** Why `id` is not a valid id, or undefined when it is. */
export function idProblem(id: unknown): string | undefined {
  if (typeof id !== 'string' || id.length === 0) return 'it is empty';
  if (id.length > MAX_ID_LENGTH) return `it is longer than ${MAX_ID_LENGTH} characters`;
  if (!ID_RE.test(id)) return 'want letters and digits, with single . _ or - between them';
  return undefined;
}

export class InvalidIdError extends Error {
  override name = 'InvalidIdError';
}

/** Throws an error naming the id and what is wrong with it. */
export function checkId(kind: IdKind, id: unknown): asserts id is string {
  const problem = idProblem(id);
  if (problem) throw new InvalidIdError(`invalid ${kind} id ${JSON.stringify(id)}: ${problem}`);
}
