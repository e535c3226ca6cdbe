// Hermetic: dynamic sandbox sizing (static_sandbox_resource_mgmt = false) over a fake hypervisor and agent:
// the VM is the base plus its containers' limits, resized on each change, and the agent onlines what was added.
import { describe, expect, it } from 'vitest';
import { logger } from '../../src/common/log.js';
import { SandboxSizer, containerLimits, sandboxSize } from '../../src/runtime/sandbox-sizing.js';

const MIB = 1024 * 1024;

function fakes() {
  const calls: string[] = [];
  let vcpus = 1;
  let memory = 1024;
  const hv = {
    resizeVcpus: async (n: number) => {
      calls.push(`vcpus ${n}`);
      const old = vcpus;
      vcpus = Math.min(n, 4);
      return { old, new: vcpus };
    },
    resizeMemory: async (m: number) => {
      calls.push(`memory ${m}`);
      memory = Math.max(memory, m);
      return memory;
    },
  };
  const agent = {
    onlineCPUMem: async (req: { nbCpus?: number; cpuOnly?: boolean }) => {
      calls.push(`online ${req.nbCpus} cpuOnly=${req.cpuOnly}`);
      return {};
    },
  };
  const sizer = new SandboxSizer({
    hv,
    agent: () => agent as never,
    base: { vcpus: 1, memoryMiB: 1024 },
    timeoutMs: 1000,
    log: logger('test'),
  });
  return { calls, sizer };
}

describe('dynamic sandbox sizing', () => {
  it('reads CPU (quota / period) and memory limits; none is zero', () => {
    expect(containerLimits({ cpu: { quota: 150000, period: 100000 }, memory: { limit: 256 * MIB } })).toEqual(
      {
        cpus: 1.5,
        memoryBytes: 256 * MIB,
      },
    );
    expect(containerLimits({ cpu: { quota: -1, period: 100000 }, memory: { limit: -1 } })).toEqual({
      cpus: 0,
      memoryBytes: 0,
    });
    expect(containerLimits(undefined)).toEqual({ cpus: 0, memoryBytes: 0 });
  });

  it('sums the limits and rounds each total up', () => {
    const half = { cpus: 0.5, memoryBytes: 100 * MIB + 1 };
    expect(sandboxSize({ vcpus: 1, memoryMiB: 1024 }, [half, half])).toEqual({ vcpus: 2, memoryMiB: 1225 });
    expect(sandboxSize({ vcpus: 1, memoryMiB: 1024 }, [])).toEqual({ vcpus: 1, memoryMiB: 1024 });
  });

  it('grows for a container, onlines what was added, shrinks vCPUs when it goes', async () => {
    const { calls, sizer } = fakes();
    await sizer.resize('pause', undefined);
    await sizer.resize('web', { cpu: { quota: 100000, period: 100000 }, memory: { limit: 256 * MIB } });
    await sizer.resize('web', { cpu: { quota: 200000, period: 100000 }, memory: { limit: 256 * MIB } });
    await sizer.resize('web', undefined);
    expect(calls).toEqual([
      'vcpus 1',
      'memory 1024',
      'vcpus 2',
      'memory 1280',
      'online 1 cpuOnly=false',
      'vcpus 3',
      'memory 1280',
      'online 1 cpuOnly=true',
      'vcpus 1',
      'memory 1024',
    ]);
  });

  it('runs resizes one at a time and names the container when one fails', async () => {
    const { calls, sizer } = fakes();
    const a = sizer.resize('a', { cpu: { quota: 100000, period: 100000 } });
    const b = sizer.resize('b', { cpu: { quota: 100000, period: 100000 } });
    await Promise.all([a, b]);
    // Each resize sizes for every container known when it runs; the second finds the VM already there.
    expect(calls).toEqual(['vcpus 3', 'memory 1024', 'online 2 cpuOnly=true', 'vcpus 3', 'memory 1024']);
    const failing = new SandboxSizer({
      hv: {
        resizeVcpus: async () => {
          throw new Error('no free slot');
        },
        resizeMemory: async (m) => m,
      },
      agent: () => ({}) as never,
      base: { vcpus: 1, memoryMiB: 1024 },
      timeoutMs: 1000,
      log: logger('test'),
    });
    await expect(failing.resize('c1', { cpu: { quota: 100000, period: 100000 } })).rejects.toThrow(
      /resizing the VM to 2 vCPUs and 1024 MiB for container c1: no free slot/,
    );
  });
});
