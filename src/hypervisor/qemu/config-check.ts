// The rules a [hypervisor.qemu] configuration and the host must meet before a VM can boot. One list, used by
// QemuHypervisor.check() (fails on the first broken rule) and by `kata-ctl check` (reports every rule).
import { constants, accessSync } from 'node:fs';
import { matchesAny } from '../../config/glob.js';
import type { KataConfig } from '../../config/types.js';
import { chooseAgentChannel, hostHasVhostVsock } from '../vsock.js';

export interface QemuCheck {
  /** Short name of what was checked ("hypervisor", "kernel", "initrd", "virtio-fs daemon", ...). */
  name: string;
  ok: boolean;
  /** The path or value when ok; what is wrong otherwise (a full sentence, without the section prefix). */
  detail: string;
}

export interface QemuCheckHost {
  /** Whether the host has /dev/vhost-vsock (default: look). */
  hasVsock?: boolean;
  /** The KVM device (default /dev/kvm). */
  kvmDevice?: string;
}

function accessible(name: string, what: string, p: string, mode: number): QemuCheck {
  if (p === '') return { name, ok: false, detail: `${what} is not set` };
  try {
    accessSync(p, mode);
    return { name, ok: true, detail: p };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    return { name, ok: false, detail: `${what} ${p} does not exist or is not accessible (${code})` };
  }
}

/** Every rule, in the order a reader would fix them. */
export function checkQemuConfig(config: KataConfig, host: QemuCheckHost = {}): QemuCheck[] {
  const q = config.hypervisor;
  const out: QemuCheck[] = [accessible('hypervisor', 'path (QEMU binary)', q.path, constants.X_OK)];
  if (q.valid_hypervisor_paths.length > 0 && !matchesAny(q.valid_hypervisor_paths, q.path)) {
    out.push({
      name: 'hypervisor',
      ok: false,
      detail: `path ${q.path} is not in valid_hypervisor_paths`,
    });
  }
  out.push(accessible('kernel', 'kernel', q.kernel, constants.R_OK));
  if (q.initrd !== '' && q.image !== '') {
    out.push({
      name: 'guest image',
      ok: false,
      detail: `initrd (${q.initrd}) and image (${q.image}) are exclusive; set only one`,
    });
  } else if (q.initrd !== '') out.push(accessible('initrd', 'initrd', q.initrd, constants.R_OK));
  else if (q.image !== '') out.push(accessible('image', 'image', q.image, constants.R_OK));
  else {
    out.push({
      name: 'guest image',
      ok: false,
      detail: 'neither initrd nor image is set; the guest needs one of them',
    });
  }
  if (q.shared_fs === 'virtio-fs') {
    out.push(accessible('virtio-fs daemon', 'virtio_fs_daemon', q.virtio_fs_daemon, constants.X_OK));
    if (
      q.valid_virtio_fs_daemon_paths.length > 0 &&
      !matchesAny(q.valid_virtio_fs_daemon_paths, q.virtio_fs_daemon)
    ) {
      out.push({
        name: 'virtio-fs daemon',
        ok: false,
        detail: `virtio_fs_daemon ${q.virtio_fs_daemon} is not in valid_virtio_fs_daemon_paths`,
      });
    }
  }
  if (q.accel === 'kvm') {
    out.push(
      accessible('KVM device', 'KVM device', host.kvmDevice ?? '/dev/kvm', constants.R_OK | constants.W_OK),
    );
  }
  const hasVsock = host.hasVsock ?? hostHasVhostVsock();
  try {
    const channel = chooseAgentChannel(q.agent_channel, hasVsock);
    out.push({
      name: 'agent channel',
      ok: true,
      detail: `${channel}${hasVsock ? '' : ' (no /dev/vhost-vsock on this host)'}`,
    });
  } catch (err) {
    out.push({ name: 'agent channel', ok: false, detail: (err as Error).message });
  }
  return out;
}

/** Throws naming the first broken rule ("hypervisor.qemu: kernel /x does not exist ..."). */
export function assertQemuConfig(config: KataConfig, host: QemuCheckHost = {}): void {
  const bad = checkQemuConfig(config, host).find((c) => !c.ok);
  if (bad) throw new Error(`hypervisor.qemu: ${bad.detail}`);
}
