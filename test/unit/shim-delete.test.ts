// `shim delete` after a crash: from the persisted state it kills the dead shim's leftovers (a shim process, a
// VMM found by its run dir), removes the run dir and the state, and answers with exit 137.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fromBinary } from '@bufbuild/protobuf';
import { afterEach, describe, expect, it } from 'vitest';
import { logger } from '../../src/common/log.js';
import { loadSandboxState, saveSandboxState } from '../../src/persist/index.js';
import { DeleteResponseSchema } from '../../src/protocols/gen/github.com/containerd/containerd/runtime/v2/task/shim_pb.js';
import type { PersistedSandbox } from '../../src/runtime/deps.js';
import { parseArgs } from '../../src/shim/args.js';
import { runDelete } from '../../src/shim/delete.js';

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
});

/** A sleeping process whose command line looks like `argv0` (bash's exec -a). */
function fake(argv0: string): ChildProcess {
  const c = spawn('bash', ['-c', `exec -a "${argv0}" sleep 600`], { stdio: 'ignore' });
  children.push(c);
  return c;
}

const exited = (c: ChildProcess) =>
  c.exitCode !== null || c.signalCode !== null
    ? Promise.resolve()
    : new Promise<void>((r) => c.once('exit', () => r()));

describe('shim delete', () => {
  it('cleans up a crashed sandbox from its persisted state', async () => {
    const sid = `kts-unit-crash-${process.pid}`;
    const runDir = `/run/vc/vm/${sid}`;
    fs.mkdirSync(runDir, { recursive: true });
    fs.writeFileSync(path.join(runDir, 'qmp.sock'), '');
    const shim = fake(`node /x/containerd-shim-kata-v2.mjs -namespace n -id ${sid}`);
    const qemu = fake(`qemu-system-x86_64 -name sandbox-${sid} -qmp unix:${runDir}/qmp.sock`);
    const stray = fake(`virtiofsd --socket-path=${runDir}/vhost-fs.sock`);
    await new Promise((r) => setTimeout(r, 200)); // let exec -a happen
    const state: PersistedSandbox = {
      sandboxId: sid,
      namespace: 'n',
      hypervisor: { name: 'qemu', pid: qemu.pid!, runDir },
      containers: [],
      createdAt: new Date().toISOString(),
      state: 'running',
      shimPid: shim.pid,
    };
    await saveSandboxState(state);

    const out = await runDelete(
      parseArgs(['-namespace', 'n', '-address', '/x.sock', '-id', sid, 'delete']),
      logger('t'),
    );
    expect(fromBinary(DeleteResponseSchema, out).exitStatus).toBe(137);
    await Promise.all([exited(shim), exited(qemu), exited(stray)]);
    expect(fs.existsSync(runDir)).toBe(false);
    expect(await loadSandboxState(sid)).toBeUndefined();
    expect(fs.existsSync(`/run/kata/${sid}`)).toBe(false);
  });

  it('does not touch a process whose command line is not the sandbox shim', async () => {
    const sid = `kts-unit-other-${process.pid}`;
    const other = fake('some-daemon --serve');
    await saveSandboxState({
      sandboxId: sid,
      hypervisor: { name: 'qemu', pid: 0, runDir: `/run/vc/vm/${sid}` },
      containers: [],
      createdAt: new Date().toISOString(),
      state: 'created',
      shimPid: other.pid,
    } as PersistedSandbox);
    await runDelete(parseArgs(['-namespace', 'n', '-id', sid, 'delete']), logger('t'));
    expect(other.exitCode).toBeNull();
    expect(await loadSandboxState(sid)).toBeUndefined();
  });
});
