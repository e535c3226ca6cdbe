// vhost-net: the host kernel moves the NIC's packets instead of QEMU's main loop, where /dev/vhost-net exists.
import fs from 'node:fs';
import { VHOST_NET_DEVICE, vhostNetAvailable } from '../../hypervisor/vhost-net.js';

/** Opens one vhost-net fd per queue, or [] when the device is missing or disabled (plain tap then). */
export async function openVhostNet(queues: number, device = VHOST_NET_DEVICE): Promise<number[]> {
  if (!(await vhostNetAvailable(device))) return [];
  const fds: number[] = [];
  try {
    for (let i = 0; i < queues; i++) {
      fds.push(
        await new Promise<number>((resolve, reject) =>
          fs.open(device, fs.constants.O_RDWR, (e, fd) => (e ? reject(e) : resolve(fd))),
        ),
      );
    }
  } catch (e) {
    for (const fd of fds) fs.close(fd, () => undefined);
    throw new Error(`opening ${device}: ${(e as Error).message}`, { cause: e });
  }
  return fds;
}
