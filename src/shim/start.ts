// `containerd-shim-kata-v2 start`: bind the shim socket, spawn the daemon (its own session, the listening
// socket as fd 3, the bundle's log FIFO as stdout/stderr), print the address for containerd and exit.
// A pod's containers share the sandbox's shim: their start only prints the sandbox shim's address.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from '../common/log.js';
import { serverFd } from '../common/node-internals.js';
import {
  SOCKET_ROOT,
  canConnect,
  isAbstract,
  removeSocket,
  socketAddress,
  socketPath,
  writeFileAtomic,
} from './address.js';
import type { ShimArgs } from './args.js';

/** Kubernetes CRI annotations that put a container in a pod (containerd's CRI plugin sets them). */
export const CRI_SANDBOX_ID = 'io.kubernetes.cri.sandbox-id';
export const CRI_CONTAINER_TYPE = 'io.kubernetes.cri.container-type';
/** The env var telling the daemon which inherited fd is its listening socket. */
export const LISTEN_FD_ENV = 'KATA_SHIM_LISTEN_FD';

function annotationsOf(bundle: string): Record<string, string> {
  try {
    const spec = JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8')) as {
      annotations?: Record<string, string>;
    };
    return spec.annotations ?? {};
  } catch {
    return {}; // no spec: a sandbox of its own
  }
}

/** The id whose shim serves this container: the pod's sandbox id for a pod container, else its own id. */
export function groupId(id: string, annotations: Record<string, string>): string {
  const sid = annotations[CRI_SANDBOX_ID];
  if (sid && sid !== id && annotations[CRI_CONTAINER_TYPE] !== 'sandbox') return sid;
  return id;
}

function listen(address: string): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(socketPath(address), () => {
      srv.off('error', reject);
      resolve(srv);
    });
  });
}

export interface StartResult {
  address: string;
  /** The daemon's pid, when this call started one. */
  pid?: number;
}

export async function runStart(args: ShimArgs, log: Logger, logFd: number | undefined): Promise<StartResult> {
  const bundle = path.resolve(args.bundle || process.cwd());
  const group = groupId(args.id, annotationsOf(bundle));
  const address = socketAddress(args.address, args.namespace, group);
  if (group !== args.id) {
    if (!(await canConnect(address, 2000))) {
      throw new Error(
        `the shim of sandbox ${group} is not running (no answer on ${address}); create the sandbox first`,
      );
    }
    writeFileAtomic(path.join(bundle, 'address'), address);
    log.info({ container_id: args.id, sandbox_id: group, address }, 'container joins its sandbox shim');
    return { address };
  }

  if (!isAbstract(address)) fs.mkdirSync(SOCKET_ROOT, { recursive: true, mode: 0o711 });
  let srv: net.Server;
  try {
    srv = await listen(address);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE') {
      throw new Error(`creating the shim socket ${address}: ${(e as Error).message}`);
    }
    if (await canConnect(address)) {
      // A shim for this id already serves (containerd retried start): reuse it, as runc's shim does.
      writeFileAtomic(path.join(bundle, 'address'), address);
      return { address };
    }
    removeSocket(address);
    srv = await listen(address);
  }
  try {
    fs.chmodSync(socketPath(address), 0o600);
  } catch {
    // abstract socket
  }

  const daemonArgs = ['-namespace', args.namespace, '-id', args.id, '-address', args.address];
  daemonArgs.push('-publish-binary', args.publishBinary, '-bundle', bundle);
  if (args.debug) daemonArgs.push('-debug');
  const out = logFd ?? 'ignore';
  let child: ReturnType<typeof spawn>;
  try {
    child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...daemonArgs], {
      cwd: bundle,
      detached: true, // setsid: containerd's signals to its process group must not reach the shim
      stdio: ['ignore', out, out, serverFd(srv)],
      env: { ...process.env, [LISTEN_FD_ENV]: '3' },
    });
  } catch (e) {
    removeSocket(address);
    throw new Error(`spawning the shim daemon: ${(e as Error).message}`);
  }
  const spawned = await new Promise<Error | undefined>((resolve) => {
    child.once('spawn', () => resolve(undefined));
    child.once('error', (e) => resolve(e));
  });
  if (spawned || !child.pid) {
    removeSocket(address);
    throw new Error(`spawning the shim daemon: ${spawned?.message ?? 'no pid'}`);
  }
  child.unref();
  writeFileAtomic(path.join(bundle, 'shim.pid'), String(child.pid));
  writeFileAtomic(path.join(bundle, 'address'), address);
  log.info({ daemon_pid: child.pid, address }, 'shim daemon started');
  // The server is not closed: closing would unlink the socket the daemon now serves. The caller exits.
  return { address, pid: child.pid };
}
