// containerd.task.v2.Task over the runtime: decode requests (bundle config.json, runtime options, exec and
// update specs), call the runtime (lifecycle) or its sandbox (per-process operations), publish the task events,
// and turn errors into containerd's status codes.
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fromBinary } from '@bufbuild/protobuf';
import { type Any, timestampFromDate } from '@bufbuild/protobuf/wkt';
import type { Logger } from '../common/log.js';
import {
  TaskCreateSchema,
  TaskDeleteSchema,
  TaskExecAddedSchema,
  TaskExecStartedSchema,
  TaskExitSchema,
  TaskOOMSchema,
  TaskPausedSchema,
  TaskResumedSchema,
  TaskStartSchema,
} from '../protocols/gen/github.com/containerd/containerd/api/events/task_pb.js';
import { Status } from '../protocols/gen/github.com/containerd/containerd/api/types/task/task_pb.js';
import { OptionsSchema } from '../protocols/gen/github.com/containerd/containerd/pkg/runtimeoptions/v1/api_pb.js';
import type { Task } from '../protocols/gen/github.com/containerd/containerd/runtime/v2/task/shim_pb.js';
import { Code, type ServiceImpl, TtrpcError } from '../protocols/ttrpc/index.js';
import type { RuntimeDeps } from '../runtime/deps.js';
import { type ErrorKind, RuntimeError } from '../runtime/errors.js';
import { metricsAny } from '../runtime/metrics.js';
import type { OciProcess, OciResources, OciSpec } from '../runtime/oci.js';
import type { ContainerProcess, ExitInfo } from '../runtime/process.js';
import { Runtime } from '../runtime/runtime.js';
import { checkRequestIds } from './args.js';
import { type Publisher, TOPICS } from './events.js';

const KIND_CODES: Record<ErrorKind, Code> = {
  NotFound: Code.NotFound,
  AlreadyExists: Code.AlreadyExists,
  FailedPrecondition: Code.FailedPrecondition,
  InvalidArgument: Code.InvalidArgument,
  Unimplemented: Code.Unimplemented,
  Unavailable: Code.Unavailable,
  DeadlineExceeded: Code.DeadlineExceeded,
  Internal: Code.Internal,
};

/** The status code for an error: the first meaningful one down its cause chain. */
export function codeOf(e: unknown): Code {
  for (let cur: unknown = e, depth = 0; cur && depth < 10; cur = (cur as Error).cause, depth++) {
    if (cur instanceof RuntimeError) return KIND_CODES[cur.kind];
    if (cur instanceof TtrpcError) return cur.code;
    const name = (cur as Error).name;
    if (name === 'ConfigError' || name === 'ArgsError') return Code.InvalidArgument;
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'number' && code > 0 && code <= 16) return code as Code;
  }
  return Code.Unknown;
}

export function toTtrpcError(e: unknown): TtrpcError {
  if (e instanceof TtrpcError) return e;
  return new TtrpcError(codeOf(e), e instanceof Error ? e.message : String(e));
}

/** JSON carried in an Any (containerd's typeurl marshals non-protobuf types, like OCI specs, as JSON). */
function jsonAny<T>(a: Any | undefined, what: string): T {
  if (!a || a.value.length === 0) throw new RuntimeError('InvalidArgument', `${what} is missing`);
  try {
    return JSON.parse(Buffer.from(a.value).toString('utf8')) as T;
  } catch (e) {
    throw new RuntimeError('InvalidArgument', `${what} (${a.typeUrl}) is not JSON: ${(e as Error).message}`);
  }
}

async function readBundleSpec(bundle: string): Promise<OciSpec> {
  const file = path.join(bundle, 'config.json');
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (e) {
    throw new RuntimeError('InvalidArgument', `reading the OCI spec ${file}: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text) as OciSpec;
  } catch (e) {
    throw new RuntimeError(
      'InvalidArgument',
      `the OCI spec ${file} is not valid JSON: ${(e as Error).message}`,
    );
  }
}

/** ConfigPath from the runtime options (`ctr run --runtime-config-path`, CRI's ConfigPath). */
export function configPathOf(options: Any | undefined): string | undefined {
  if (!options || !options.typeUrl.endsWith('runtimeoptions.v1.Options')) return undefined;
  try {
    return fromBinary(OptionsSchema, options.value).configPath || undefined;
  } catch (e) {
    throw new RuntimeError(
      'InvalidArgument',
      `runtime options (${options.typeUrl}) are malformed: ${(e as Error).message}`,
    );
  }
}

const STATUS: Record<string, Status> = {
  created: Status.CREATED,
  running: Status.RUNNING,
  paused: Status.PAUSED,
  stopped: Status.STOPPED,
};

export interface TaskServiceOptions {
  sandboxId: string;
  namespace: string;
  deps: RuntimeDeps;
  publisher: Publisher;
  log: Logger;
  /** Called when Shutdown finds no container left: the daemon exits after answering. */
  onShutdown: () => void;
}

export interface TaskServiceHandle {
  impl: ServiceImpl<typeof Task>;
  runtime: Runtime;
}

export function createTaskService(o: TaskServiceOptions): TaskServiceHandle {
  const { publisher, log } = o;
  const runtime = new Runtime({
    sandboxId: o.sandboxId,
    namespace: o.namespace,
    deps: o.deps,
    log,
    events: {
      exit: (p: ContainerProcess, e: ExitInfo) =>
        publisher.publish(TOPICS.exit, TaskExitSchema, {
          containerId: p.containerId,
          id: p.execId || p.containerId,
          pid: p.pid,
          exitStatus: e.exitStatus,
          exitedAt: timestampFromDate(e.exitedAt),
        }),
      oom: (containerId) => publisher.publish(TOPICS.oom, TaskOOMSchema, { containerId }),
    },
  });

  /** Runs one RPC: logs it, maps its error to a status code. */
  const rpc = async <T>(
    method: string,
    fields: Record<string, unknown>,
    fn: () => Promise<T> | T,
  ): Promise<T> => {
    log.debug({ method, ...fields }, 'task rpc');
    try {
      return await fn();
    } catch (e) {
      const err = toTtrpcError(e);
      const expected = [Code.NotFound, Code.FailedPrecondition, Code.AlreadyExists, Code.Unimplemented];
      const level = expected.includes(err.code) ? 'info' : 'error';
      log[level]({ method, ...fields, code: Code[err.code], err: err.message }, 'task rpc failed');
      throw err;
    }
  };

  const impl: ServiceImpl<typeof Task> = {
    create: (r) =>
      rpc('Create', { id: r.id }, async () => {
        checkRequestIds({ container: r.id });
        if (r.checkpoint || r.parentCheckpoint)
          throw new RuntimeError('Unimplemented', 'checkpoint/restore is not supported');
        const spec = await readBundleSpec(r.bundle);
        const { pid } = await runtime.create({
          id: r.id,
          bundle: r.bundle,
          spec,
          rootfs: r.rootfs.map((m) => ({
            type: m.type,
            source: m.source,
            target: m.target,
            options: m.options,
          })),
          stdio: { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal },
          configPath: configPathOf(r.options),
        });
        publisher.publish(TOPICS.create, TaskCreateSchema, {
          containerId: r.id,
          bundle: r.bundle,
          rootfs: r.rootfs,
          io: { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal },
          checkpoint: r.checkpoint,
          pid,
        });
        return { pid };
      }),

    start: (r) =>
      rpc('Start', { id: r.id, exec_id: r.execId }, async () => {
        const p = await runtime.sandbox().start(r.id, r.execId);
        if (r.execId) {
          publisher.publish(TOPICS.execStarted, TaskExecStartedSchema, {
            containerId: r.id,
            execId: r.execId,
            pid: p.pid,
          });
        } else {
          publisher.publish(TOPICS.start, TaskStartSchema, { containerId: r.id, pid: p.pid });
        }
        return { pid: p.pid };
      }),

    delete: (r) =>
      rpc('Delete', { id: r.id, exec_id: r.execId }, async () => {
        const { pid, exit } = await runtime.delete(r.id, r.execId);
        const exitedAt = timestampFromDate(exit.exitedAt);
        if (!r.execId) {
          publisher.publish(TOPICS.delete, TaskDeleteSchema, {
            containerId: r.id,
            pid,
            exitStatus: exit.exitStatus,
            exitedAt,
          });
        }
        return { pid, exitStatus: exit.exitStatus, exitedAt };
      }),

    exec: (r) =>
      rpc('Exec', { id: r.id, exec_id: r.execId }, async () => {
        checkRequestIds({ container: r.id, exec: r.execId });
        const spec = jsonAny<OciProcess>(r.spec, `the process spec of exec ${r.execId}`);
        await runtime.sandbox().exec(r.id, r.execId, spec, {
          stdin: r.stdin,
          stdout: r.stdout,
          stderr: r.stderr,
          terminal: r.terminal,
        });
        publisher.publish(TOPICS.execAdded, TaskExecAddedSchema, { containerId: r.id, execId: r.execId });
        return {};
      }),

    state: (r) =>
      rpc('State', { id: r.id, exec_id: r.execId }, () => {
        const s = runtime.sandbox().processState(r.id, r.execId);
        return {
          id: s.id,
          bundle: s.bundle,
          pid: s.pid,
          status: STATUS[s.status] ?? Status.UNKNOWN,
          stdin: s.stdio.stdin,
          stdout: s.stdio.stdout,
          stderr: s.stdio.stderr,
          terminal: s.stdio.terminal,
          exitStatus: s.exit?.exitStatus ?? 0,
          exitedAt: s.exit ? timestampFromDate(s.exit.exitedAt) : undefined,
          execId: r.execId,
        };
      }),

    pids: (r) =>
      rpc('Pids', { id: r.id }, () => {
        // Every process lives in the guest: containerd sees the VMM's pid for all of them.
        const sb = runtime.sandbox();
        sb.container(r.id);
        const pid = sb.pid;
        return { processes: pid ? [{ pid }] : [] };
      }),

    pause: (r) =>
      rpc('Pause', { id: r.id }, async () => {
        await runtime.sandbox().pause(r.id);
        publisher.publish(TOPICS.paused, TaskPausedSchema, { containerId: r.id });
        return {};
      }),

    resume: (r) =>
      rpc('Resume', { id: r.id }, async () => {
        await runtime.sandbox().resume(r.id);
        publisher.publish(TOPICS.resumed, TaskResumedSchema, { containerId: r.id });
        return {};
      }),

    checkpoint: (r) =>
      rpc('Checkpoint', { id: r.id }, () => {
        throw new RuntimeError('Unimplemented', 'checkpoint is not supported by kata-ts');
      }),

    kill: (r) =>
      rpc('Kill', { id: r.id, exec_id: r.execId, signal: r.signal, all: r.all }, async () => {
        await runtime.sandbox().kill(r.id, r.execId, r.signal, r.all);
        return {};
      }),

    resizePty: (r) =>
      rpc('ResizePty', { id: r.id, exec_id: r.execId }, async () => {
        await runtime.sandbox().resizePty(r.id, r.execId, r.width, r.height);
        return {};
      }),

    closeIO: (r) =>
      rpc('CloseIO', { id: r.id, exec_id: r.execId, stdin: r.stdin }, async () => {
        if (r.stdin) await runtime.sandbox().closeIo(r.id, r.execId);
        return {};
      }),

    update: (r) =>
      rpc('Update', { id: r.id }, async () => {
        const resources = jsonAny<OciResources>(r.resources, `the resources of the update of ${r.id}`);
        await runtime.sandbox().update(r.id, resources);
        return {};
      }),

    wait: (r) =>
      rpc('Wait', { id: r.id, exec_id: r.execId }, async () => {
        const e = await runtime.sandbox().wait(r.id, r.execId);
        return { exitStatus: e.exitStatus, exitedAt: timestampFromDate(e.exitedAt) };
      }),

    stats: (r) =>
      rpc('Stats', { id: r.id }, async () => ({ stats: metricsAny(await runtime.sandbox().stats(r.id)) })),

    connect: (r) =>
      rpc('Connect', { id: r.id }, () => ({
        shimPid: process.pid,
        taskPid: runtime.containerPid(r.id),
        version: '',
      })),

    shutdown: (r) =>
      rpc('Shutdown', { id: r.id, now: r.now }, async () => {
        if (runtime.containerCount > 0 && !r.now) return {};
        await runtime.stopSandbox();
        o.onShutdown();
        return {};
      }),
  };
  return { impl, runtime };
}
