// virtio-net's driver is loaded only once the VM has a NIC: at boot when one was cold-plugged, otherwise when the
// host asks about interfaces after hot-plugging one. A VM without a network loads none of it.
import fs from 'node:fs';
import { hasVirtioDevice, loadKernelModulesInBackground } from './init/modules.js';

export const NIC_MODULES = ['virtio_net'];
const VIRTIO_ID_NET = 1;

export function hasNic(): boolean {
  return hasVirtioDevice(VIRTIO_ID_NET);
}

let loading: Promise<string[]> | undefined;

/** Loads NIC_MODULES if a virtio-net device is present and they are not loaded yet; resolves with what loaded. */
export function ensureNicDriver(): Promise<string[]> {
  if (NIC_MODULES.every((m) => fs.existsSync(`/sys/module/${m}`)) || !hasNic()) return Promise.resolve([]);
  loading ??= loadKernelModulesInBackground(NIC_MODULES)
    .then(({ loaded, problems }) => {
      if (problems.length) throw new Error(`loading the NIC driver: ${problems.join('; ')}`);
      return loaded;
    })
    .finally(() => {
      loading = undefined;
    });
  return loading;
}
