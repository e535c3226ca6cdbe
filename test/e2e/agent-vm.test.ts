// The agent's container RPCs inside a real VM (TCG): the guest image's agent as PID 1, containers in
// a busybox rootfs shared from the host over virtio-fs, ending with DestroySandbox powering the VM off.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentService } from '../../src/protocols/gen/agent_pb.js';
import type { Spec } from '../../src/protocols/gen/oci_pb.js';
import { type OciSpec, specToGrpc } from '../../src/protocols/oci-spec.js';
import { type Client, Code, type TtrpcClient, createClient } from '../../src/protocols/ttrpc/index.js';
import { useLeftoverCheck } from '../helpers/leftovers.js';
import { type BootedVm, bootVm, processExists } from '../helpers/vm.js';
import { CAPS, buildBusyboxRootfs } from './agent-fixtures.js';

// First hook of the file: its after-hook runs last, after the file's own clean-up.
useLeftoverCheck({ per: 'file' });

const GUEST_SHARED = '/run/kata-containers/shared/containers';
const canRun = process.getuid?.() === 0 && fs.existsSync('/usr/bin/qemu-system-x86_64');

describe.skipIf(!canRun)('agent in a VM', () => {
  let vm: BootedVm;
  let conn: TtrpcClient;
  let agent: Client<typeof AgentService>;
  let share: string;

  const spec = (cid: string, args: string[], terminal = false): Spec => {
    const rootfs = path.join(share, cid, 'rootfs');
    if (!fs.existsSync(path.join(rootfs, 'bin/busybox'))) buildBusyboxRootfs(rootfs);
    const caps = { bounding: CAPS, effective: CAPS, permitted: CAPS };
    const s: OciSpec = {
      ociVersion: '1.0.2',
      process: { terminal, user: { uid: 0, gid: 0 }, args, env: ['PATH=/bin'], cwd: '/', capabilities: caps },
      root: { path: `${GUEST_SHARED}/${cid}/rootfs` },
      hostname: 'vm-pod',
      mounts: [
        { destination: '/proc', type: 'proc', source: 'proc' },
        { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'mode=755'] },
        {
          destination: '/dev/pts',
          type: 'devpts',
          source: 'devpts',
          options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666'],
        },
        { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      ],
      linux: {
        namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
        cgroupsPath: `/kata/${cid}`,
      },
    };
    return specToGrpc(s);
  };

  const readAll = async (which: 'stdout' | 'stderr', cid: string, execId = ''): Promise<string> => {
    let out = '';
    for (;;) {
      const req = { containerId: cid, execId, len: 65536 };
      const r = which === 'stdout' ? await agent.readStdout(req) : await agent.readStderr(req);
      if (r.data.length === 0) return out;
      out += Buffer.from(r.data).toString();
    }
  };

  beforeAll(async () => {
    share = fs.mkdtempSync(path.join(os.tmpdir(), 'kt-agent-vm-share-'));
    vm = await bootVm({ shareDir: share, memoryMiB: 1024, vcpus: 2 });
    conn = await vm.connectAgent();
    agent = createClient(AgentService, conn);
  });

  afterAll(async () => {
    conn?.close();
    await vm?.stop();
    fs.rmSync(share, { recursive: true, force: true });
  });

  it('mounts the share and runs a container: output, stdin, exit code', async () => {
    await agent.createSandbox({
      sandboxId: 'vmsb',
      hostname: 'vmsb',
      storages: [
        {
          driver: 'virtio-fs',
          source: 'kataShared',
          fstype: 'virtiofs',
          mountPoint: `${GUEST_SHARED}/`,
          options: ['nodev'],
        },
      ],
    });
    await agent.createContainer({
      containerId: 'c1',
      OCI: spec('c1', ['sh', '-c', 'cat; echo done; uname -r; exit 7']),
    });
    // stdin written and closed before the start, as the shim does when ctr's input is short
    await agent.writeStdin({ containerId: 'c1', execId: '', data: Buffer.from('ping\n') });
    await agent.closeStdin({ containerId: 'c1', execId: '' });
    await agent.startContainer({ containerId: 'c1' });
    const out = await readAll('stdout', 'c1');
    expect(out).toMatch(/^ping\ndone\n/);
    expect(out).not.toContain(os.release());
    expect((await agent.waitProcess({ containerId: 'c1', execId: '' })).status).toBe(7);
    await agent.removeContainer({ containerId: 'c1' });
  });

  it('execs with and without a terminal, signals, stats, updates, pauses', async () => {
    await agent.createContainer({ containerId: 'c2', OCI: spec('c2', ['sleep', '1000']) });
    await agent.startContainer({ containerId: 'c2' });
    const p = (args: string[], terminal = false) => ({
      Args: args,
      Env: ['PATH=/bin'],
      Cwd: '/',
      User: {},
      Terminal: terminal,
    });
    await agent.execProcess({
      containerId: 'c2',
      execId: 'e1',
      process: p(['sh', '-c', 'echo in-vm; exit 5']),
    });
    expect(await readAll('stdout', 'c2', 'e1')).toBe('in-vm\n');
    expect((await agent.waitProcess({ containerId: 'c2', execId: 'e1' })).status).toBe(5);

    await agent.execProcess({ containerId: 'c2', execId: 't1', process: p(['sh'], true) });
    await agent.ttyWinResize({ containerId: 'c2', execId: 't1', row: 40, column: 120 });
    await agent.writeStdin({ containerId: 'c2', execId: 't1', data: Buffer.from('stty size; exit 4\n') });
    expect(await readAll('stdout', 'c2', 't1')).toContain('40 120');
    expect((await agent.waitProcess({ containerId: 'c2', execId: 't1' })).status).toBe(4);

    await agent.execProcess({ containerId: 'c2', execId: 'k1', process: p(['sleep', '1000']) });
    await agent.signalProcess({ containerId: 'c2', execId: 'k1', signal: 9 });
    expect((await agent.waitProcess({ containerId: 'c2', execId: 'k1' })).status).toBe(137);

    await agent.updateContainer({ containerId: 'c2', resources: { Memory: { Limit: 64n << 20n } } });
    const s = (await agent.statsContainer({ containerId: 'c2' })).cgroupStats!;
    expect(s.memoryStats!.usage!.limit).toBe(64n << 20n); // cgroup v2 memory.max
    expect(s.memoryStats!.usage!.usage).toBeGreaterThan(0n);
    expect(s.pidsStats!.current).toBeGreaterThanOrEqual(1n);
    expect(s.cpuStats!.cpuUsage!.totalUsage).toBeGreaterThan(0n);

    await agent.pauseContainer({ containerId: 'c2' });
    await agent.resumeContainer({ containerId: 'c2' });
    await agent.execProcess({ containerId: 'c2', execId: 'e2', process: p(['true']) });
    expect((await agent.waitProcess({ containerId: 'c2', execId: 'e2' })).status).toBe(0);

    await expect(agent.startContainer({ containerId: 'nope' })).rejects.toMatchObject({
      code: Code.NotFound,
    });
    await agent.signalProcess({ containerId: 'c2', execId: '', signal: 15 });
    expect((await agent.waitProcess({ containerId: 'c2', execId: '' })).status).toBe(137);
  });

  it('reports guest details and metrics', async () => {
    const d = await agent.getGuestDetails({ memBlockSize: true, memHotplugProbe: true });
    expect(d.agentDetails?.initDaemon).toBe(true);
    expect(d.memBlockSizeBytes).toBeGreaterThan(0n);
    expect((await agent.getMetrics({})).metrics).toContain('kata_guest_meminfo');
    const ifs = (await agent.listInterfaces({})).Interfaces.map((i) => i.name);
    expect(ifs).toContain('lo');
  });

  it('DestroySandbox removes the containers and powers the VM off', async () => {
    await agent.destroySandbox({});
    const exit = await Promise.race([
      vm.exited,
      new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 60_000)),
    ]);
    expect(exit).not.toBe('timeout');
    expect(processExists(vm.pid)).toBe(false);
  });
});
