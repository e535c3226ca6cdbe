// vhost-net: the host kernel moves a NIC's packets instead of QEMU's main loop, where /dev/vhost-net exists.
// Detected here (kata-ctl check reports it); the network endpoints open the fds (resource/network/vhost.ts).
import fs from 'node:fs';

export const VHOST_NET_DEVICE = '/dev/vhost-net';

/** Whether this host can give NICs vhost-net (read/write access to the device). */
export async function vhostNetAvailable(device = VHOST_NET_DEVICE): Promise<boolean> {
  try {
    await fs.promises.access(device, fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
