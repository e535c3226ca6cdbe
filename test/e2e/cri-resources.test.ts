// The pod's VM sized by its containers, as with the Kata Go runtime's default static_sandbox_resource_mgmt = false: through
// containerd's CRI plugin, a container with a 1-CPU / 256 MiB limit hot-adds a vCPU and memory to the pod's VM
// before it is created (its guest cgroup gets the limits), UpdateContainerResources applies new limits in the
// guest, and removing the container takes its vCPU back. A container without limits watches from inside.
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { pollUntil } from '../../src/common/poll.js';
import type { ContainerConfig, PodSandboxConfig } from '../helpers/cri/client.js';
import { waitPodsGone } from '../helpers/cri/containerd-cri.js';
import { useCriSuite } from '../helpers/cri/suite.js';

const MIB = 1024 * 1024;
/** The container's own cgroup v2 limits, wherever the guest mounted its cgroup (namespaced or not). */
const CGROUP_LIMITS =
  'd=/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup); [ -e $d/cpu.max ] || d=/sys/fs/cgroup; cat $d/cpu.max $d/memory.max || { cat /proc/self/cgroup; mount | grep cgroup; ls /sys/fs/cgroup; } >&2';
const suite = useCriSuite({
  kata: (base) => ({
    ...base,
    'hypervisor.qemu': { ...base['hypervisor.qemu'], default_vcpus: 1, default_maxvcpus: 2 },
    runtime: { static_sandbox_resource_mgmt: false },
  }),
});
const cri = () => suite.cri();
const ctrdLog = () => suite.log();

describe('a kata pod sized by its containers (static_sandbox_resource_mgmt = false)', () => {
  const name = `crires-${process.pid}`;
  const nodeNet = {
    namespaceOptions: { network: 'NODE' as const, pid: 'CONTAINER' as const, ipc: 'POD' as const },
  };
  let podId = '';
  let podConfig: PodSandboxConfig;
  let watcher = '';
  let limited = '';

  async function container(cname: string, extra: Partial<ContainerConfig> = {}): Promise<string> {
    const id = await cri().cri.createContainer(
      podId,
      {
        metadata: { name: cname, attempt: 0 },
        image: { image: cri().images.busybox },
        command: ['sh', '-c', 'while :; do sleep 1; done'],
        ...extra,
        linux: { securityContext: nodeNet, ...extra.linux },
      },
      podConfig,
    );
    await cri().cri.startContainer(id);
    return id;
  }

  /** nproc and MemTotal (bytes) as the guest sees them. */
  async function guestSize(): Promise<{ cpus: number; memory: number }> {
    const r = await cri().cri.execSync(watcher, ['sh', '-c', 'nproc; grep MemTotal /proc/meminfo'], 20);
    expect(r.exitCode, r.stderr.toString()).toBe(0);
    const [cpus, mem] = r.stdout.toString().split('\n');
    return { cpus: Number(cpus), memory: Number(/(\d+) kB/.exec(mem ?? '')?.[1]) * 1024 };
  }

  beforeAll(async () => {
    const logDir = path.join(cri().podLogDir, name);
    fs.mkdirSync(logDir, { recursive: true });
    podConfig = {
      metadata: { name, uid: `uid-${name}`, namespace: 'kata-ts-test', attempt: 0 },
      logDirectory: logDir,
      linux: { securityContext: nodeNet },
    };
    try {
      podId = await cri().cri.runPodSandbox(podConfig, 'kata');
    } catch (e) {
      throw new Error(`RunPodSandbox: ${(e as Error).message}\n${ctrdLog()}`);
    }
    watcher = await container('watcher');
  });

  it('hot-adds a vCPU and the memory limit for a limited container, whose guest cgroup has the limits', async () => {
    const before = await guestSize();
    expect(before.cpus).toBe(1);
    limited = await container('limited', {
      linux: { resources: { cpuPeriod: 100000, cpuQuota: 100000, memoryLimitInBytes: 256 * MIB } },
    });
    const after = await guestSize();
    expect(after.cpus, ctrdLog()).toBe(2);
    expect(after.memory - before.memory).toBeGreaterThanOrEqual(250 * MIB);
    const cg = await cri().cri.execSync(limited, ['sh', '-c', CGROUP_LIMITS], 20);
    expect(cg.stdout.toString(), `${cg.stderr}`).toBe(`100000 100000\n${256 * MIB}\n`);
  });

  it('UpdateContainerResources applies new limits in the guest', async () => {
    await cri().cri.updateContainerResources(limited, {
      cpuPeriod: 100000,
      cpuQuota: 50000,
      memoryLimitInBytes: 128 * MIB,
    });
    const cg = await cri().cri.execSync(limited, ['sh', '-c', CGROUP_LIMITS], 20);
    expect(cg.stdout.toString()).toBe(`50000 100000\n${128 * MIB}\n`);
    expect((await guestSize()).cpus).toBe(2); // half a CPU still rounds up to one more
  });

  it('removing the limited container takes its vCPU back; removing the pod leaves nothing', async () => {
    await cri().cri.stopContainer(limited, 0);
    await cri().cri.removeContainer(limited);
    await pollUntil(async () => ((await guestSize()).cpus === 1 ? true : undefined), {
      timeoutMs: 30_000,
      intervalMs: 500,
      what: 'the guest to have 1 vCPU again',
    });
    await cri().cri.stopPodSandbox(podId);
    await cri().cri.removePodSandbox(podId);
    expect(await waitPodsGone(cri().ctrd, [podId, watcher, limited]), ctrdLog()).toEqual([]);
  });
});
