// The shim's ttrpc address, as containerd's shim library computes it: unix:///run/containerd/s/<sha256 of
// join(containerd address, namespace, group id)>, so every container of one pod finds the same shim.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export const SOCKET_ROOT = '/run/containerd/s';

export function socketAddress(
  containerdAddress: string,
  namespace: string,
  groupId: string,
  root: string = SOCKET_ROOT,
): string {
  const digest = crypto
    .createHash('sha256')
    .update(path.join(containerdAddress, namespace, groupId))
    .digest('hex');
  return `unix://${path.join(root, digest)}`;
}

/** The filesystem path of an address ("unix:///x" → "/x"); an address without the scheme is abstract. */
export function socketPath(address: string): string {
  return address.startsWith('unix://') ? address.slice('unix://'.length) : `\0${address}`;
}

export function isAbstract(address: string): boolean {
  return !address.startsWith('unix://');
}

export function canConnect(address: string, timeoutMs = 200): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.createConnection(socketPath(address));
    const timer = setTimeout(() => {
      sock.destroy();
      resolve(false);
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

export function removeSocket(address: string): void {
  if (!isAbstract(address)) fs.rmSync(socketPath(address), { force: true });
}

/** Writes a small file atomically (temp file + rename), as the Go shim library writes `address` and `shim.pid`. */
export function writeFileAtomic(file: string, content: string): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}`);
  fs.writeFileSync(tmp, content, { mode: 0o644 });
  fs.renameSync(tmp, file);
}
