import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  PersistError,
  type SandboxState,
  listSandboxStates,
  loadSandboxState,
  removeSandboxState,
  saveSandboxState,
} from '../../src/persist/index.js';
import type { PersistedSandbox } from '../../src/runtime/deps.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-persist-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function state(id: string, over: Partial<SandboxState> = {}): SandboxState {
  return {
    sandboxId: id,
    namespace: 'k8s.io',
    bundle: `/run/containerd/io.containerd.runtime.v2.task/k8s.io/${id}`,
    hypervisor: { name: 'qemu', pid: 1234, virtiofsdPid: 1235, runDir: `/run/vc/vm/${id}` },
    containers: [{ id, bundle: '/b', rootfsMounted: true }],
    sharedFsRoot: '/run/kata-containers/shared/sandboxes',
    createdAt: new Date(0).toISOString(),
    state: 'running',
    ...over,
  };
}

describe('sandbox state', () => {
  it('saves atomically, loads, lists and removes', async () => {
    const root = path.join(tmp, 'a');
    expect(await listSandboxStates(root)).toEqual([]);
    expect(await loadSandboxState('s1', root)).toBeUndefined();
    await saveSandboxState(state('s1'), root);
    await saveSandboxState(state('s2'), root);
    await saveSandboxState(state('s1', { state: 'stopped' }), root);
    expect(await loadSandboxState('s1', root)).toEqual(state('s1', { state: 'stopped' }));
    // Only state.json remains: the temp file was renamed over it.
    expect(fs.readdirSync(path.join(root, 's1'))).toEqual(['state.json']);
    expect(fs.statSync(path.join(root, 's1', 'state.json')).mode & 0o777).toBe(0o600);
    fs.mkdirSync(path.join(root, 'not-a-sandbox'));
    expect(await listSandboxStates(root)).toEqual(['s1', 's2']);
    // A temp file left by a crash mid-write is swept by remove.
    fs.writeFileSync(path.join(root, 's1', '.state.json.tmp-1-abcd'), '{"half');
    await removeSandboxState('s1', root);
    await removeSandboxState('s1', root);
    expect(fs.existsSync(path.join(root, 's1'))).toBe(false);
    expect(await listSandboxStates(root)).toEqual(['s2']);
  });

  it('reports a corrupt or invalid file by name', async () => {
    const root = path.join(tmp, 'b');
    fs.mkdirSync(path.join(root, 'bad'), { recursive: true });
    const file = path.join(root, 'bad', 'state.json');
    fs.writeFileSync(file, '{"sandboxId": "bad", ');
    const err = await loadSandboxState('bad', root).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PersistError);
    expect((err as PersistError).file).toBe(file);
    expect((err as Error).message).toContain(`sandbox state ${file} is corrupt`);
    fs.writeFileSync(file, JSON.stringify(state('other')));
    await expect(loadSandboxState('bad', root)).rejects.toThrow(
      `sandbox state ${file} is invalid: sandboxId is "other"`,
    );
    fs.writeFileSync(file, JSON.stringify({ ...state('bad'), state: 'paused' }));
    await expect(loadSandboxState('bad', root)).rejects.toThrow(
      /state "paused" is not created, running or stopped/,
    );
  });

  it('refuses ids that would leave the root', async () => {
    await expect(saveSandboxState(state('../x'), tmp)).rejects.toThrow(/invalid sandbox id/);
    await expect(loadSandboxState('a/b', tmp)).rejects.toThrow(/invalid sandbox id/);
  });

  it("keeps what the runtime adds (the shim's identity, the VM's footprint) as written", async () => {
    const root = path.join(tmp, 'extra');
    const full: PersistedSandbox = {
      ...state('s3'),
      shim: { pid: 42, startTime: 1234567 },
      vm: {
        hypervisor: 'qemu',
        sandboxId: 's3',
        pid: 1234,
        runDir: '/run/vc/vm/s3',
        agent: { kind: 'vsock', cid: 9, port: 1024 },
        accel: 'tcg',
        processes: [{ role: 'vmm', pid: 1234, startTime: 99 }],
        vsockCid: 9,
        attached: [{ kind: 'network', id: 'eth0', qemuId: 'net-eth0', tapName: 'tap0_kata' }],
      },
    };
    await saveSandboxState(full, root);
    expect(await loadSandboxState('s3', root)).toEqual(full);
  });
});
