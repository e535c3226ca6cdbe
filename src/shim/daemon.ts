// The shim daemon: serves containerd.task.v2.Task on the socket `start` bound (inherited as fd 3, or -socket),
// publishes task events to containerd, and exits once Shutdown finds no container left (or on SIGTERM).
import fs from 'node:fs';
import net from 'node:net';
import type { Logger } from '../common/log.js';
import { Task } from '../protocols/gen/github.com/containerd/containerd/runtime/v2/task/shim_pb.js';
import { TtrpcServer } from '../protocols/ttrpc/index.js';
import { errorMessage } from '../runtime/errors.js';
import { phase } from '../runtime/sandbox.js';
import { realDeps } from '../runtime/wiring.js';
import { removeSocket, socketAddress, socketPath } from './address.js';
import type { ShimArgs } from './args.js';
import { EventPublisher } from './events.js';
import { flushLogs } from './logging.js';
import { LISTEN_FD_ENV } from './start.js';
import { createTaskService } from './task-service.js';

function listenOn(srv: net.Server, where: { fd: number } | { path: string }): Promise<void> {
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(where, () => {
      srv.off('error', reject);
      resolve();
    });
  });
}

export async function runDaemon(args: ShimArgs, log: Logger): Promise<void> {
  const publisher = new EventPublisher(process.env.TTRPC_ADDRESS ?? '', args.namespace, log);
  const server = new TtrpcServer({
    onConnectionError: (e) => log.debug({ err: e.message }, 'ttrpc connection error'),
  });
  let exiting = false;
  const exit = async (code: number, why: string) => {
    if (exiting) return;
    exiting = true;
    log.info({ why }, 'shim exiting');
    await server
      .shutdown(1000)
      .catch((e: unknown) => log.warn({ err: errorMessage(e) }, 'ttrpc server did not shut down cleanly'));
    listener.close();
    await publisher.flush(5000);
    publisher.close();
    // The socket was bound by `start` (we only inherited it): remove it ourselves. Its address follows from our
    // flags, so this works even when the bundle (and its `address` file) is already gone.
    if (args.socket) fs.rmSync(args.socket, { force: true });
    else removeSocket(socketAddress(args.address, args.namespace, args.id));
    await flushLogs(1000);
    process.exit(code);
  };
  const { impl, runtime } = createTaskService({
    sandboxId: args.id,
    namespace: args.namespace,
    deps: realDeps(),
    publisher,
    log,
    // Answer Shutdown first, then go.
    onShutdown: () => setImmediate(() => void exit(0, 'shutdown requested')),
  });
  server.register(Task, impl);

  const listener = net.createServer((sock) => server.serve(sock));
  const fd = process.env[LISTEN_FD_ENV];
  delete process.env[LISTEN_FD_ENV]; // not for QEMU or virtiofsd
  if (fd) await listenOn(listener, { fd: Number(fd) });
  else if (args.socket) await listenOn(listener, { path: socketPath(args.socket) });
  else throw new Error(`no socket to serve: ${LISTEN_FD_ENV} is unset and -socket was not given`);
  phase(log, 'daemon_ready');

  const stopAndExit = (why: string, code: number) => {
    runtime
      .stopSandbox()
      .catch((e: unknown) => log.error({ err: errorMessage(e) }, 'stopping the sandbox'))
      .finally(() => void exit(code, why));
  };
  process.on('SIGTERM', () => stopAndExit('SIGTERM', 0));
  process.on('SIGINT', () => stopAndExit('SIGINT', 0));
  process.on('SIGPIPE', () => {});
  process.on('uncaughtException', (e) => {
    log.fatal({ err: e.stack ?? e.message }, 'uncaught exception; tearing the sandbox down');
    stopAndExit('uncaught exception', 1);
  });
  process.on('unhandledRejection', (e) => {
    log.error(
      { err: e instanceof Error ? (e.stack ?? e.message) : String(e) },
      'unhandled promise rejection',
    );
  });
}
