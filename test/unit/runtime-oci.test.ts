import { describe, expect, it } from 'vitest';
import { sanitizeForGuest } from '../../src/resource/guest-spec.js';
import { toGrpcProcess, toGrpcResources, toGrpcSpec } from '../../src/runtime/oci.js';

describe('OCI JSON → grpc.Spec', () => {
  const spec = {
    ociVersion: '1.0.2-dev',
    hostname: 'h1',
    process: {
      terminal: true,
      user: { uid: 1000, gid: 100, additionalGids: [10] },
      args: ['sh', '-c', 'true'],
      env: ['A=b'],
      cwd: '/work',
      consoleSize: { height: 24, width: 80 },
      capabilities: { bounding: ['CAP_KILL'], effective: ['CAP_KILL'] },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
      oomScoreAdj: -5,
    },
    root: { path: '/run/kata-containers/shared/containers/c1/rootfs', readonly: true },
    mounts: [{ destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid'] }],
    annotations: { a: 'b' },
    linux: {
      uidMappings: [{ containerID: 0, hostID: 1000, size: 1 }],
      resources: {
        memory: { limit: 268435456 },
        cpu: { quota: 50000, period: 100000, cpus: '0' },
        pids: { limit: 10 },
      },
      cgroupsPath: '/default/c1',
      namespaces: [
        { type: 'pid' },
        { type: 'network', path: '/var/run/netns/x' },
        { type: 'ipc', path: '/proc/1/ns/ipc' },
      ],
      maskedPaths: ['/proc/kcore'],
      seccomp: { defaultAction: 'SCMP_ACT_ALLOW' },
      unknownThing: 1,
    },
  };

  it("maps every field the agent reads to the agent's Go field names", () => {
    const g = toGrpcSpec(spec);
    expect(g.Version).toBe('1.0.2-dev');
    expect(g.Hostname).toBe('h1');
    expect(g.Process?.Args).toEqual(['sh', '-c', 'true']);
    expect(g.Process?.User).toMatchObject({ UID: 1000, GID: 100, AdditionalGids: [10] });
    expect(g.Process?.ConsoleSize).toMatchObject({ Height: 24, Width: 80 });
    expect(g.Process?.Rlimits[0]).toMatchObject({ Type: 'RLIMIT_NOFILE', Hard: 1024n, Soft: 1024n });
    expect(g.Process?.OOMScoreAdj).toBe(-5n);
    expect(g.Root).toMatchObject({
      Path: '/run/kata-containers/shared/containers/c1/rootfs',
      Readonly: true,
    });
    expect(g.Mounts[0]).toMatchObject({ destination: '/proc', type: 'proc', options: ['nosuid'] });
    expect(g.Annotations).toEqual({ a: 'b' });
    expect(g.Linux?.UIDMappings[0]).toMatchObject({ ContainerID: 0, HostID: 1000, Size: 1 });
    expect(g.Linux?.Resources?.Memory?.Limit).toBe(268435456n);
    expect(g.Linux?.Resources?.CPU).toMatchObject({ Quota: 50000n, Period: 100000n, Cpus: '0' });
    expect(g.Linux?.CgroupsPath).toBe('/default/c1');
    expect(g.Linux?.MaskedPaths).toEqual(['/proc/kcore']);
  });

  it('drops host-only parts for the guest', () => {
    const s = sanitizeForGuest(spec, { disableGuestSeccomp: true });
    expect(s.linux?.namespaces).toEqual([{ type: 'pid' }, { type: 'ipc' }]);
    expect(s.linux?.seccomp).toBeUndefined();
    expect(spec.linux.namespaces.length).toBe(3); // the input is not modified
  });

  it('converts exec processes and update resources', () => {
    expect(toGrpcProcess({ args: ['ls'], cwd: '/', terminal: false }).Args).toEqual(['ls']);
    expect(toGrpcResources({ memory: { limit: 1024 } }).Memory?.Limit).toBe(1024n);
  });
});
