// `containerd-shim-kata-v2 delete`: containerd runs it after a shim's connection closed (normal exit or crash).
// Whatever the dead shim left of its sandbox is undone, and a DeleteResponse (exit 128+SIGKILL, now) is returned.
import { create, toBinary } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import type { Logger } from '../common/log.js';
import { DeleteResponseSchema } from '../protocols/gen/github.com/containerd/containerd/runtime/v2/task/shim_pb.js';
import { cleanupSandbox } from '../runtime/cleanup.js';
import type { CleanupDeps } from '../runtime/deps.js';
import { canConnect, removeSocket, socketAddress } from './address.js';
import type { ShimArgs } from './args.js';

const SIGKILL = 9;

/** `socketRoot`: where shim sockets live (containerd's /run/containerd/s; tests give their own dir). */
export async function runDelete(
  args: ShimArgs,
  log: Logger,
  deps?: CleanupDeps,
  socketRoot?: string,
): Promise<Uint8Array> {
  // The real layers are loaded only here: `delete` runs in a fresh process and tests pass fakes.
  const d = deps ?? (await import('../runtime/wiring.js')).realDeps();
  const { errors } = await cleanupSandbox(args.id, d, log);
  for (const e of errors) log.warn({ sandbox_id: args.id }, e);
  const address = socketAddress(args.address, args.namespace, args.id, socketRoot);
  // The dead shim's socket; a live one (another shim answering there) is left alone.
  if (!(await canConnect(address))) removeSocket(address);
  return toBinary(
    DeleteResponseSchema,
    create(DeleteResponseSchema, { pid: 0, exitStatus: 128 + SIGKILL, exitedAt: timestampNow() }),
  );
}
