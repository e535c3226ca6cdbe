// vhost-vsock: whether the host offers it, and a host-wide registry of guest CIDs so two sandboxes never
// ask QEMU for the same one (QEMU would fail with "Address already in use").
import { randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, readdir, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { AGENT_VSOCK_PORT } from '../contract/index.js';
import type { AgentEndpoint } from './hypervisor.js';

export const VHOST_VSOCK_DEVICE = '/dev/vhost-vsock';
/** The port the Kata agent listens on inside the guest (the contract's). */
export { AGENT_VSOCK_PORT };
const CID_DIR = '/run/kata-ts/vsock-cids';
/** CIDs 0-2 are reserved (hypervisor, local, host). */
const FIRST_GUEST_CID = 3;
const MAX_GUEST_CID = 0xffff_fffe;

export function hostHasVhostVsock(device = VHOST_VSOCK_DEVICE): boolean {
  return existsSync(device);
}

/** Picks the channel for config agent_channel: auto means vsock only where /dev/vhost-vsock exists. */
export function chooseAgentChannel(
  setting: 'auto' | 'vsock' | 'virtio-serial',
  hasVsock = hostHasVhostVsock(),
): 'vsock' | 'virtio-serial' {
  if (setting === 'auto') return hasVsock ? 'vsock' : 'virtio-serial';
  if (setting === 'vsock' && !hasVsock) {
    throw new Error(`agent_channel = "vsock" but this host has no ${VHOST_VSOCK_DEVICE} (load vhost_vsock)`);
  }
  return setting;
}

/**
 * Reserves a guest CID for `owner` (the sandbox id) by creating <dir>/<cid> exclusively. Entries whose
 * owner file is gone are never reused until released, so release it in cleanup.
 */
export async function allocateGuestCid(owner: string, dir = CID_DIR): Promise<number> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  let cid = randomInt(FIRST_GUEST_CID, 0x10000);
  for (let attempt = 0; attempt < 1000; attempt++) {
    try {
      await writeFile(path.join(dir, String(cid)), owner, { flag: 'wx' });
      return cid;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new Error(`reserving vsock guest CID ${cid} for ${owner} in ${dir}: ${(err as Error).message}`);
      }
      cid = cid >= MAX_GUEST_CID ? FIRST_GUEST_CID : cid + 1;
    }
  }
  throw new Error(`no free vsock guest CID for ${owner}: ${dir} has too many reservations`);
}

export async function releaseGuestCid(cid: number, dir = CID_DIR): Promise<void> {
  try {
    await unlink(path.join(dir, String(cid)));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** CIDs currently reserved, with their owners (for diagnostics and tests). */
export async function listGuestCids(dir = CID_DIR): Promise<Map<number, string>> {
  const out = new Map<number, string>();
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return out;
  }
  for (const n of names) {
    const owner = await readFile(path.join(dir, n), 'utf8').catch(() => '');
    out.set(Number(n), owner);
  }
  return out;
}

/**
 * The agent endpoint of a new VM: vsock with a guest CID reserved for `owner` (registered before use, so a crash
 * right after is still cleaned up) when the channel resolves to vsock, else virtio-serial on `socketPath`.
 */
export async function reserveAgentEndpoint(
  channel: 'auto' | 'vsock' | 'virtio-serial',
  owner: string,
  socketPath: string,
  cidDir?: string,
): Promise<{ agent: AgentEndpoint; cid?: number }> {
  if (chooseAgentChannel(channel) !== 'vsock') return { agent: { kind: 'virtio-serial', socketPath } };
  const cid = await allocateGuestCid(owner, cidDir);
  return { agent: { kind: 'vsock', cid, port: AGENT_VSOCK_PORT }, cid };
}
