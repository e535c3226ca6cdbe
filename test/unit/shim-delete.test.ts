// `shim delete` after a crash: from the persisted state it kills the dead shim's leftovers (the shim process and
// the VM's processes, known by pid + start time), removes the run dir and the state, and answers with exit 137.
// Hermetic: state and run dir in a temp dir, fake shared fs and cgroup, the "processes" are our own children.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fromBinary } from '@bufbuild/protobuf';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { logger } from '../../src/common/log.js';
import { cleanupDeadVm, processIdentity, terminateProcess } from '../../src/hypervisor/index.js';
import type { ProcessIdentity } from '../../src/hypervisor/proc.js';
import { loadSandboxState, removeSandboxState, saveSandboxState } from '../../src/persist/index.js';
import { DeleteResponseSchema } from '../../src/protocols/gen/github.com/containerd/containerd/runtime/v2/task/shim_pb.js';
import type { CleanupDeps, PersistedSandbox } from '../../src/runtime/deps.js';
import { socketAddress } from '../../src/shim/address.js';
import { parseArgs } from '../../src/shim/args.js';
import { runDelete } from '../../src/shim/delete.js';

const children: ChildProcess[] = [];
let tmp: string;
let persistRoot: string;
let cidDir: string;
let shared: { cleaned: string[] };
let cgroups: { removed: string[] };

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kts-shim-delete-'));
  persistRoot = path.join(tmp, 'kata');
  cidDir = path.join(tmp, 'vsock-cids');
  shared = { cleaned: [] };
  cgroups = { removed: [] };
});
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** The real cleanup seams, rooted in the temp dir; shared fs and cgroup are recorded, not touched. */
function deps(): CleanupDeps {
  return {
    loadState: async (id) => (await loadSandboxState(id, persistRoot)) as PersistedSandbox | undefined,
    removeState: (id) => removeSandboxState(id, persistRoot),
    sharedFs: (id) => ({
      cleanup: async () => {
        shared.cleaned.push(id);
      },
    }),
    sandboxCgroup: (id, where) => ({
      create: async () => {},
      addProcess: async () => {},
      pids: async () => [],
      remove: async () => {
        cgroups.removed.push(where ? `${id} at ${where}` : id);
      },
    }),
    cleanupDeadVm: (state, log) => cleanupDeadVm(state, log, { cidDir, graceMs: 1000 }),
    processes: { identify: (pid) => processIdentity(pid), terminate: (id, o) => terminateProcess(id, o) },
  };
}

/** A sleeping process whose command line looks like `argv0` (bash's exec -a). */
function fake(argv0: string): ChildProcess {
  const c = spawn('bash', ['-c', `exec -a "${argv0}" sleep 600`], { stdio: 'ignore' });
  children.push(c);
  return c;
}

async function identity(c: ChildProcess): Promise<ProcessIdentity> {
  const id = await processIdentity(c.pid!);
  if (!id) throw new Error(`child ${c.pid} is not running`);
  return id;
}

const exited = (c: ChildProcess) =>
  c.exitCode !== null || c.signalCode !== null
    ? Promise.resolve()
    : new Promise<void>((r) => c.once('exit', () => r()));

describe('shim delete', () => {
  it('cleans up a crashed sandbox from its persisted state', async () => {
    const sid = `kts-unit-crash-${process.pid}`;
    const runDir = path.join(tmp, 'vm', sid);
    fs.mkdirSync(runDir, { recursive: true });
    fs.writeFileSync(path.join(runDir, 'qmp.sock'), '');
    const shim = fake(`node /x/containerd-shim-kata-v2.mjs -namespace n -id ${sid}`);
    const qemu = fake(`qemu-system-x86_64 -name sandbox-${sid} -qmp unix:${runDir}/qmp.sock`);
    const virtiofsd = fake(`virtiofsd --socket-path=${runDir}/vhost-fs.sock`);
    await new Promise((r) => setTimeout(r, 200)); // let exec -a happen
    fs.mkdirSync(cidDir, { recursive: true });
    fs.writeFileSync(path.join(cidDir, '77'), sid); // a CID reserved just before the crash
    fs.writeFileSync(path.join(cidDir, '78'), 'another-sandbox');
    const state: PersistedSandbox = {
      sandboxId: sid,
      namespace: 'n',
      hypervisor: { name: 'qemu', pid: qemu.pid!, runDir },
      containers: [],
      createdAt: new Date().toISOString(),
      state: 'running',
      cgroupPath: `/kubepods/pod-${sid}/${sid}`,
      shim: await identity(shim),
      vm: {
        hypervisor: 'qemu',
        sandboxId: sid,
        pid: qemu.pid!,
        runDir,
        agent: { kind: 'virtio-serial', socketPath: path.join(runDir, 'agent.sock') },
        accel: 'tcg',
        processes: [
          { role: 'vmm', ...(await identity(qemu)) },
          { role: 'virtiofsd', ...(await identity(virtiofsd)) },
        ],
      },
    };
    await saveSandboxState(state, persistRoot);

    // The dead shim's socket file (nothing listens): delete removes it, in the test's own socket dir.
    const socketRoot = path.join(tmp, 's');
    fs.mkdirSync(socketRoot);
    const deadSocket = socketAddress('/x.sock', 'n', sid, socketRoot).slice('unix://'.length);
    fs.writeFileSync(deadSocket, '');
    const out = await runDelete(
      parseArgs(['-namespace', 'n', '-address', '/x.sock', '-id', sid, 'delete']),
      logger('t'),
      deps(),
      socketRoot,
    );
    expect(fs.existsSync(deadSocket)).toBe(false);
    expect(fromBinary(DeleteResponseSchema, out).exitStatus).toBe(137);
    await Promise.all([exited(shim), exited(qemu), exited(virtiofsd)]);
    expect(fs.existsSync(runDir)).toBe(false);
    expect(await loadSandboxState(sid, persistRoot)).toBeUndefined();
    expect(fs.existsSync(path.join(persistRoot, sid))).toBe(false);
    expect(fs.readdirSync(cidDir)).toEqual(['78']);
    expect(shared.cleaned).toEqual([sid]);
    // The cgroup recorded from the sandbox spec's cgroupsPath, not the default kata_<sid>.
    expect(cgroups.removed).toEqual([`${sid} at /kubepods/pod-${sid}/${sid}`]);
  });

  it('does not touch a process that only has the recorded pid (a recycled pid: other start time)', async () => {
    const sid = `kts-unit-other-${process.pid}`;
    const other = fake('some-daemon --serve');
    await new Promise((r) => setTimeout(r, 100));
    const id = await identity(other);
    await saveSandboxState(
      {
        sandboxId: sid,
        hypervisor: { name: 'qemu', pid: 0, runDir: path.join(tmp, 'vm', sid) },
        containers: [],
        createdAt: new Date().toISOString(),
        state: 'created',
        shim: { pid: id.pid, startTime: id.startTime - 1 },
      } as PersistedSandbox,
      persistRoot,
    );
    await runDelete(
      parseArgs(['-namespace', 'n', '-id', sid, 'delete']),
      logger('t'),
      deps(),
      path.join(tmp, 's'),
    );
    expect(other.exitCode).toBeNull();
    expect(await loadSandboxState(sid, persistRoot)).toBeUndefined();
  });
});
