import { create, equals } from '@bufbuild/protobuf';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SpecSchema } from '../../src/protocols/gen/oci_pb.js';
import {
  type OciSpec,
  parseOciJson,
  specFromGrpc,
  specToGrpc,
  stringifyOciJson,
} from '../../src/protocols/oci-spec.js';

/** A config.json as containerd/crun write them, using every field grpc.Spec can carry. */
const realistic: OciSpec = {
  ociVersion: '1.0.2-dev',
  process: {
    terminal: true,
    consoleSize: { height: 24, width: 80 },
    user: { uid: 1000, gid: 1000, additionalGids: [10, 20], username: 'app' },
    args: ['sh', '-c', 'echo hi'],
    env: ['PATH=/usr/bin:/bin', 'BIG=12345678901234567890123'],
    cwd: '/work',
    capabilities: {
      bounding: ['CAP_CHOWN', 'CAP_KILL'],
      effective: ['CAP_CHOWN'],
      inheritable: ['CAP_CHOWN'],
      permitted: ['CAP_CHOWN', 'CAP_KILL'],
      ambient: ['CAP_KILL'],
    },
    rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
    noNewPrivileges: true,
    apparmorProfile: 'cri-containerd.apparmor.d',
    oomScoreAdj: -998,
    selinuxLabel: 'system_u:system_r:container_t:s0',
  },
  root: { path: '/run/kata-containers/shared/containers/abc/rootfs', readonly: true },
  hostname: 'pod',
  mounts: [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    {
      destination: '/etc/hosts',
      type: 'bind',
      source: '/run/kata-containers/shared/containers/abc-hosts',
      options: ['rbind', 'ro'],
    },
    { destination: '/dev' },
  ],
  hooks: {
    prestart: [{ path: '/bin/a', args: ['a', '1'], env: ['X=1'], timeout: 5 }],
    createRuntime: [{ path: '/bin/b' }],
    createContainer: [{ path: '/bin/c' }],
    startContainer: [{ path: '/bin/d', args: ['d'] }],
    poststart: [{ path: '/bin/e' }],
    poststop: [{ path: '/bin/f' }],
  },
  annotations: { 'io.kubernetes.cri.container-type': 'container', 'io.katacontainers.x': 'y' },
  linux: {
    uidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }],
    gidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }],
    sysctl: { 'net.ipv4.ip_forward': '1' },
    resources: {
      devices: [
        { allow: false, access: 'rwm' },
        { allow: true, type: 'c', major: 1, minor: 3, access: 'rwm' },
      ],
      memory: {
        limit: 9223372036854775807n,
        reservation: 1024,
        swap: -1,
        swappiness: 60,
        disableOOMKiller: true,
      },
      cpu: {
        shares: 1024,
        quota: 100000,
        period: 100000,
        realtimeRuntime: 5,
        realtimePeriod: 6,
        cpus: '0-1',
        mems: '0',
      },
      pids: { limit: 100 },
      blockIO: {
        weight: 500,
        leafWeight: 300,
        weightDevice: [{ major: 8, minor: 0, weight: 100, leafWeight: 50 }],
        throttleReadBpsDevice: [{ major: 8, minor: 0, rate: 1048576 }],
        throttleWriteBpsDevice: [{ major: 8, minor: 0, rate: 2 }],
        throttleReadIOPSDevice: [{ major: 8, minor: 0, rate: 3 }],
        throttleWriteIOPSDevice: [{ major: 8, minor: 0, rate: 4 }],
      },
      hugepageLimits: [{ pageSize: '2MB', limit: 0 }],
      network: { classID: 7, priorities: [{ name: 'eth0', priority: 1 }] },
    },
    cgroupsPath: '/kubepods/besteffort/pod1/abc',
    namespaces: [{ type: 'pid' }, { type: 'network', path: '/var/run/netns/cni-1' }, { type: 'mount' }],
    devices: [{ type: 'c', path: '/dev/fuse', major: 10, minor: 229, fileMode: 0o666, uid: 5, gid: 6 }],
    seccomp: {
      defaultAction: 'SCMP_ACT_ERRNO',
      architectures: ['SCMP_ARCH_X86_64'],
      flags: ['SECCOMP_FILTER_FLAG_LOG'],
      syscalls: [
        { names: ['read', 'write'], action: 'SCMP_ACT_ALLOW' },
        {
          names: ['personality'],
          action: 'SCMP_ACT_ALLOW',
          args: [{ index: 0, value: 8, op: 'SCMP_CMP_EQ' }],
        },
        {
          names: ['clone'],
          action: 'SCMP_ACT_ERRNO',
          errnoRet: 1,
          args: [{ index: 0, value: 2114060288, valueTwo: 5, op: 'SCMP_CMP_MASKED_EQ' }],
        },
      ],
    },
    rootfsPropagation: 'rslave',
    maskedPaths: ['/proc/kcore'],
    readonlyPaths: ['/proc/sys'],
    mountLabel: 'system_u:object_r:container_file_t:s0',
    intelRdt: { l3CacheSchema: 'L3:0=ff' },
  },
};

describe('OCI spec JSON <-> grpc.Spec', () => {
  it('round-trips a realistic config.json exactly', () => {
    const g = specToGrpc(realistic);
    expect(g.Process?.User?.Username).toBe('app');
    expect(g.Linux?.Resources?.Memory?.Limit).toBe(9223372036854775807n);
    expect(g.Linux?.Seccomp?.Syscalls[2]?.ErrnoRet).toEqual({ case: 'errnoret', value: 1 });
    expect(specFromGrpc(g)).toEqual(realistic);
  });

  it('survives the wire (binary protobuf) and the file (JSON text) with 64-bit values intact', async () => {
    const { toBinary, fromBinary } = await import('@bufbuild/protobuf');
    const g = fromBinary(SpecSchema, toBinary(SpecSchema, specToGrpc(realistic)));
    const text = stringifyOciJson(specFromGrpc(g), 2);
    expect(text).toContain('"limit": 9223372036854775807');
    expect(text).toContain('"BIG=12345678901234567890123"');
    expect(parseOciJson(text)).toEqual(realistic);
  });

  it('drops what grpc.Spec cannot carry and fills defaults for a minimal spec', () => {
    const minimal = parseOciJson(
      '{"ociVersion":"1.0.0","process":{"cwd":"/","user":{"uid":0,"gid":0,"umask":18}},"root":{"path":"r"}}',
    ) as OciSpec;
    const back = specFromGrpc(specToGrpc(minimal));
    expect(back).toEqual({
      ociVersion: '1.0.0',
      process: { cwd: '/', user: { uid: 0, gid: 0 } },
      root: { path: 'r' },
    });
  });

  const str = fc.string({ maxLength: 12 });
  const i64 = fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n });
  const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
  const u32 = fc.integer({ min: 0, max: 0xffffffff });
  const small = fc.integer({ min: -1_000_000, max: 1_000_000 });
  const hook = fc.record({
    Path: str,
    Args: fc.array(str, { maxLength: 3 }),
    Env: fc.array(str, { maxLength: 2 }),
    Timeout: small.map(BigInt),
  });
  const hooks = fc.array(hook, { maxLength: 2 });
  const throttle = fc.array(fc.record({ Major: i64, Minor: i64, Rate: u64 }), { maxLength: 2 });
  const grpcSpec = fc.record({
    Version: str,
    Process: fc.option(
      fc.record({
        Terminal: fc.boolean(),
        ConsoleSize: fc.option(fc.record({ Height: u32, Width: u32 }), { nil: undefined }),
        User: fc.record({
          UID: u32,
          GID: u32,
          AdditionalGids: fc.array(u32, { maxLength: 3 }),
          Username: str,
        }),
        Args: fc.array(str, { maxLength: 4 }),
        Env: fc.array(str, { maxLength: 4 }),
        Cwd: str,
        Capabilities: fc.option(
          fc.record({
            Bounding: fc.array(str),
            Effective: fc.array(str),
            Inheritable: fc.array(str),
            Permitted: fc.array(str),
            Ambient: fc.array(str),
          }),
          { nil: undefined },
        ),
        Rlimits: fc.array(fc.record({ Type: str, Hard: u64, Soft: u64 }), { maxLength: 2 }),
        NoNewPrivileges: fc.boolean(),
        ApparmorProfile: str,
        OOMScoreAdj: small.map(BigInt),
        SelinuxLabel: str,
      }),
      { nil: undefined },
    ),
    Root: fc.option(fc.record({ Path: str, Readonly: fc.boolean() }), { nil: undefined }),
    Hostname: str,
    Mounts: fc.array(
      fc.record({ destination: str, source: str, type: str, options: fc.array(str, { maxLength: 3 }) }),
      { maxLength: 3 },
    ),
    Hooks: fc.option(
      fc.record({
        Prestart: hooks,
        Poststart: hooks,
        Poststop: hooks,
        CreateRuntime: hooks,
        CreateContainer: hooks,
        StartContainer: hooks,
      }),
      { nil: undefined },
    ),
    Annotations: fc.dictionary(str, str, { maxKeys: 3 }),
    Linux: fc.option(
      fc.record({
        UIDMappings: fc.array(fc.record({ HostID: u32, ContainerID: u32, Size: u32 }), { maxLength: 2 }),
        GIDMappings: fc.array(fc.record({ HostID: u32, ContainerID: u32, Size: u32 }), { maxLength: 2 }),
        Sysctl: fc.dictionary(str, str, { maxKeys: 2 }),
        Resources: fc.option(
          fc.record({
            Devices: fc.array(
              fc.record({ Allow: fc.boolean(), Type: str, Major: i64, Minor: i64, Access: str }),
              { maxLength: 2 },
            ),
            Memory: fc.option(
              fc.record({
                Limit: i64,
                Reservation: i64,
                Swap: i64,
                Kernel: i64,
                KernelTCP: i64,
                Swappiness: u64,
                DisableOOMKiller: fc.boolean(),
              }),
              { nil: undefined },
            ),
            CPU: fc.option(
              fc.record({
                Shares: u64,
                Quota: i64,
                Period: u64,
                RealtimeRuntime: i64,
                RealtimePeriod: u64,
                Cpus: str,
                Mems: str,
              }),
              { nil: undefined },
            ),
            Pids: fc.option(fc.record({ Limit: i64 }), { nil: undefined }),
            BlockIO: fc.option(
              fc.record({
                Weight: u32,
                LeafWeight: u32,
                WeightDevice: fc.array(fc.record({ Major: i64, Minor: i64, Weight: u32, LeafWeight: u32 }), {
                  maxLength: 2,
                }),
                ThrottleReadBpsDevice: throttle,
                ThrottleWriteBpsDevice: throttle,
                ThrottleReadIOPSDevice: throttle,
                ThrottleWriteIOPSDevice: throttle,
              }),
              { nil: undefined },
            ),
            HugepageLimits: fc.array(fc.record({ Pagesize: str, Limit: u64 }), { maxLength: 2 }),
            Network: fc.option(
              fc.record({
                ClassID: u32,
                Priorities: fc.array(fc.record({ Name: str, Priority: u32 }), { maxLength: 2 }),
              }),
              { nil: undefined },
            ),
          }),
          { nil: undefined },
        ),
        CgroupsPath: str,
        Namespaces: fc.array(fc.record({ Type: str, Path: str }), { maxLength: 3 }),
        Devices: fc.array(
          fc.record({ Path: str, Type: str, Major: i64, Minor: i64, FileMode: u32, UID: u32, GID: u32 }),
          { maxLength: 2 },
        ),
        Seccomp: fc.option(
          fc.record({
            DefaultAction: str,
            Architectures: fc.array(str, { maxLength: 2 }),
            Flags: fc.array(str, { maxLength: 2 }),
            Syscalls: fc.array(
              fc.record({
                Names: fc.array(str, { maxLength: 2 }),
                Action: str,
                ErrnoRet: fc.oneof(
                  fc.constant({ case: undefined }),
                  u32.map((value) => ({ case: 'errnoret' as const, value })),
                ),
                Args: fc.array(
                  fc.record({ Index: fc.nat(6).map(BigInt), Value: u64, ValueTwo: u64, Op: str }),
                  { maxLength: 2 },
                ),
              }),
              { maxLength: 2 },
            ),
          }),
          { nil: undefined },
        ),
        RootfsPropagation: str,
        MaskedPaths: fc.array(str, { maxLength: 2 }),
        ReadonlyPaths: fc.array(str, { maxLength: 2 }),
        MountLabel: str,
        IntelRdt: fc.option(fc.record({ L3CacheSchema: str }), { nil: undefined }),
      }),
      { nil: undefined },
    ),
  });

  it('grpc -> JSON -> grpc is the identity (property)', () => {
    fc.assert(
      fc.property(grpcSpec, (init) => {
        const g = create(SpecSchema, init);
        const json = specFromGrpc(g);
        const text = stringifyOciJson(json);
        const back = specToGrpc(parseOciJson(text) as OciSpec);
        expect(equals(SpecSchema, back, g)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});
