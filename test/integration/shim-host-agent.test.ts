// The shim's Task service over the real stack minus QEMU: the runtime, the real resource layer (shared dir, rootfs
// and bind mounts), and the real kata-agent services running crun on this host behind a ttrpc socket. The
// "guest" sees the shared dir through a bind mount of it (what virtio-fs does in a VM). Needs root and crun.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { type DescMessage, type MessageInitShape, fromBinary } from '@bufbuild/protobuf';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { logger } from '../../src/common/log.js';
import { defaultConfig } from '../../src/config/index.js';
import { MetricsSchema } from '../../src/protocols/gen/github.com/containerd/cgroups/stats/v1/metrics_pb.js';
import { Status } from '../../src/protocols/gen/github.com/containerd/containerd/api/types/task/task_pb.js';
import { Task } from '../../src/protocols/gen/github.com/containerd/containerd/runtime/v2/task/shim_pb.js';
import { type Client, TtrpcClient, TtrpcServer, createClient } from '../../src/protocols/ttrpc/index.js';
import { GUEST_SHARED_DIR, SharedFs, prepareContainer, releaseContainer } from '../../src/resource/index.js';
import { connectAgent } from '../../src/runtime/agent.js';
import type { RuntimeDeps, SharedFsHandle } from '../../src/runtime/deps.js';
import type { OciSpec } from '../../src/runtime/oci.js';
import type { Publisher } from '../../src/shim/events.js';
import { createTaskService } from '../../src/shim/task-service.js';
import {
  CAPS,
  type HostAgent,
  buildBusyboxRootfs,
  mountsUnder,
  startHostAgent,
} from '../e2e/agent-fixtures.js';
import { FakeHypervisor } from '../unit/runtime-fakes.js';

const canRun = process.getuid?.() === 0 && fs.existsSync('/usr/bin/crun');

let env: HostAgent;
let root: string;
let server: TtrpcServer;
let conn: TtrpcClient;
let task: Client<typeof Task>;
let topics: string[] = [];
let hv: FakeHypervisor[] = [];
const SID = `kts-hostagent-${process.pid}`;

/** Guest paths (the share's mount point in a VM) → where the host agent sees the share. */
function toHostAgentPaths(spec: OciSpec, cid: string): OciSpec {
  const rewrite = (p?: string) =>
    p?.startsWith(GUEST_SHARED_DIR) ? env.sharedDir + p.slice(GUEST_SHARED_DIR.length) : p;
  return {
    ...spec,
    root: spec.root && { ...spec.root, path: rewrite(spec.root.path)! },
    mounts: spec.mounts?.map((m) => ({ ...m, source: rewrite(m.source) })),
    linux: { ...spec.linux, cgroupsPath: `${env.cgroupParent}/${cid}` },
  };
}

function deps(): RuntimeDeps {
  const sock = path.join(env.dir, 'agent.sock');
  return {
    loadConfig: () => defaultConfig(),
    createHypervisor: () => {
      const h = new FakeHypervisor(sock);
      hv.push(h);
      return h;
    },
    sharedFs: (sid): SharedFsHandle => {
      const sfs = new SharedFs(sid, { root });
      return {
        hostSharedDir: sfs.hostSharedDir,
        setup: async () => {
          await sfs.setup();
          execFileSync('mount', ['--bind', sfs.hostSharedDir, env.sharedDir]); // the "virtio-fs" view
        },
        guestStorage: () => ({ driver: 'local', source: 'local', mountPoint: env.sharedDir, options: [] }),
        prepareContainer: async (cid, o) => {
          const p = await prepareContainer(sfs, cid, o);
          return { ...p, guestSpec: toHostAgentPaths(p.guestSpec, cid) };
        },
        releaseContainer: (cid, o) => releaseContainer(sfs, cid, o),
        cleanup: async () => {
          execFileSync('umount', ['-l', env.sharedDir]);
          await sfs.cleanup();
        },
      };
    },
    connectAgent: (ep, o) => connectAgent(ep, o),
    saveState: async () => {},
    removeState: async () => {},
  };
}

/** An OCI spec like ctr's default for busybox. */
function spec(
  args: string[],
  extra: { terminal?: boolean; mounts?: OciSpec['mounts']; memoryLimit?: number } = {},
) {
  const caps = { bounding: CAPS, effective: CAPS, permitted: CAPS };
  return {
    ociVersion: '1.0.2-dev',
    process: {
      terminal: extra.terminal ?? false,
      user: { uid: 0, gid: 0 },
      args,
      env: ['PATH=/bin'],
      cwd: '/',
      capabilities: caps,
      noNewPrivileges: true,
    },
    root: { path: 'rootfs' },
    hostname: 'kts',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      {
        destination: '/dev',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
      },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
      },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      ...(extra.mounts ?? []),
    ],
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network' }],
      resources: extra.memoryLimit ? { memory: { limit: extra.memoryLimit } } : undefined,
      cgroupsPath: `/default/${SID}`,
      maskedPaths: ['/proc/kcore', '/proc/keys'],
      readonlyPaths: ['/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

function bundle(cid: string, s: ReturnType<typeof spec>) {
  const dir = path.join(env.dir, 'bundles', cid);
  buildBusyboxRootfs(path.join(dir, 'rootfs'));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(s));
  const f = (n: string) => path.join(dir, n);
  for (const n of ['stdin', 'stdout', 'stderr']) execFileSync('mkfifo', [f(n)]);
  return { dir, stdin: f('stdin'), stdout: f('stdout'), stderr: f('stderr') };
}

/**
 * containerd's side of an output FIFO: everything until EOF. Non-blocking, as containerd reads it: a blocking
 * open or read would hold one of libuv's four threadpool threads for as long as the process runs, and the shim
 * under test (same process) needs that pool for its own async fs calls.
 */
async function readAll(fifo: string): Promise<string> {
  const fd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const chunks: Buffer[] = [];
  for await (const c of new net.Socket({ fd, readable: true, writable: false })) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

describe.skipIf(!canRun)('Task service → runtime → kata-agent (crun on this host)', () => {
  beforeAll(async () => {
    env = await startHostAgent();
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'kts-sfs-'));
    const pub: Publisher = {
      publish: <D extends DescMessage>(topic: string, _s: D, _e: MessageInitShape<D>) => {
        topics.push(topic);
      },
      flush: async () => {},
      close: () => {},
    };
    const { impl } = createTaskService({
      sandboxId: SID,
      namespace: 'test',
      deps: deps(),
      publisher: pub,
      log: logger('shim-host'),
      onShutdown: () => {},
    });
    server = new TtrpcServer().register(Task, impl);
    await server.listen(path.join(env.dir, 'shim.sock'));
    conn = await TtrpcClient.connect(path.join(env.dir, 'shim.sock'));
    task = createClient(Task, conn);
  });

  afterEach(async () => {
    // Every test ends with its sandbox deleted: nothing may stay mounted under the share or in the "guest".
    expect(mountsUnder(root)).toEqual([]);
    expect(mountsUnder(env.sharedDir)).toEqual([]);
    topics = [];
    hv = [];
  });

  afterAll(async () => {
    conn?.close();
    server?.close();
    await env?.close();
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  async function run(s: ReturnType<typeof spec>, input?: string) {
    const b = bundle(SID, s);
    const out = readAll(b.stdout);
    const err = s.process.terminal ? Promise.resolve('') : readAll(b.stderr);
    await task.create({
      id: SID,
      bundle: b.dir,
      stdin: b.stdin,
      stdout: b.stdout,
      stderr: s.process.terminal ? '' : b.stderr,
      terminal: s.process.terminal,
    });
    const w = await fs.promises.open(b.stdin, 'w');
    if (input !== undefined) await w.write(input);
    await w.close();
    await task.closeIO({ id: SID, stdin: true });
    await task.start({ id: SID });
    const exit = (await task.wait({ id: SID })).exitStatus;
    const res = { exit, out: await out, err: await err };
    await task.delete({ id: SID });
    fs.rmSync(b.dir, { recursive: true, force: true });
    return res;
  }

  it('runs a container: stdout, stderr, exit code, stdin', async () => {
    const r = await run(spec(['sh', '-c', 'read line; echo "got $line"; echo oops >&2; exit 7']), 'hello\n');
    expect(r).toEqual({ exit: 7, out: 'got hello\n', err: 'oops\n' });
    expect(topics).toEqual(['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
    expect(hv[0]!.stopped).toBe(true);
  });

  it('delivers 5,000 lines in order', async () => {
    const r = await run(spec(['seq', '1', '5000']));
    const lines = r.out.trimEnd().split('\n');
    expect(lines.length).toBe(5000);
    expect(lines.every((l, i) => l === String(i + 1))).toBe(true);
  });

  it('gives a tty', async () => {
    const r = await run(spec(['sh', '-c', 'tty; [ -t 0 ] && echo TTY'], { terminal: true }));
    expect(r.exit).toBe(0);
    expect(r.out).toMatch(/\/dev\/pts\/\d+\r?\nTTY/);
  });

  it('shares a read-only bind mount', async () => {
    const src = fs.mkdtempSync(path.join(os.tmpdir(), 'kts-bind-'));
    fs.writeFileSync(path.join(src, 'f'), 'host data\n');
    try {
      const r = await run(
        spec(['sh', '-c', 'cat /data/f; touch /data/x 2>/dev/null && echo WRITABLE || echo REFUSED'], {
          mounts: [{ destination: '/data', type: 'bind', source: src, options: ['rbind', 'ro'] }],
        }),
      );
      expect(r.out).toBe('host data\nREFUSED\n');
    } finally {
      fs.rmSync(src, { recursive: true, force: true });
    }
  });

  it('execs, pauses, reports stats and delivers SIGTERM', async () => {
    const b = bundle(SID, spec(['sh', '-c', 'trap "exit 42" TERM; while true; do sleep 0.2; done']));
    await task.create({ id: SID, bundle: b.dir, stdin: '', stdout: '', stderr: '' });
    await task.start({ id: SID });
    const ex = path.join(b.dir, 'exec-out');
    execFileSync('mkfifo', [ex]);
    const exOut = readAll(ex);
    const pspec = {
      args: ['sh', '-c', 'echo in-exec; exit 5'],
      env: ['PATH=/bin'],
      cwd: '/',
      user: { uid: 0, gid: 0 },
    };
    await task.exec({
      id: SID,
      execId: 'e1',
      stdout: ex,
      stderr: '',
      stdin: '',
      spec: {
        typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Process',
        value: Buffer.from(JSON.stringify(pspec)),
      },
    });
    await task.start({ id: SID, execId: 'e1' });
    expect((await task.wait({ id: SID, execId: 'e1' })).exitStatus).toBe(5);
    expect(await exOut).toBe('in-exec\n');
    await task.delete({ id: SID, execId: 'e1' });

    await task.pause({ id: SID });
    expect((await task.state({ id: SID })).status).toBe(Status.PAUSED);
    await task.resume({ id: SID });
    const st = await task.stats({ id: SID });
    const m = fromBinary(MetricsSchema, st.stats!.value);
    expect(m.memory?.usage?.usage).toBeGreaterThan(0n);
    expect(m.pids?.current).toBeGreaterThan(0n);

    await task.kill({ id: SID, signal: 15 });
    expect((await task.wait({ id: SID })).exitStatus).toBe(42);
    await task.delete({ id: SID });
    fs.rmSync(b.dir, { recursive: true, force: true });
  });
});
