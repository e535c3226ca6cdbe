import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  DEFAULT_SHM_BYTES,
  GUEST_EPHEMERAL_DIR,
  GUEST_SANDBOX_SHM_DIR,
  GUEST_SHARED_DIR,
  type OciSpec,
  buildGuestSpec,
  guestMount,
  planMount,
  podShmBytes,
  sandboxShmStorage,
  sanitizeForGuest,
} from '../../src/resource/index.js';
import {
  MS_BIND,
  MS_NODEV,
  MS_RDONLY,
  MS_REC,
  MS_SLAVE,
  parseMountOptions,
} from '../../src/resource/mount.js';

const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'kata-spec-')));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('planMount', () => {
  const file = path.join(tmp, 'resolv.conf');
  fs.writeFileSync(file, 'nameserver 10.0.0.1\n');
  const link = path.join(tmp, 'resolv-link');
  fs.symlinkSync(file, link);

  it('leaves system mounts to the guest', async () => {
    for (const m of [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts' },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue' },
      { destination: '/sys', type: 'sysfs', source: 'sysfs' },
      { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup' },
      { destination: '/sys/fs/cgroup', type: 'bind', source: '/sys/fs/cgroup', options: ['rbind'] },
      { destination: '/dev/null', type: 'bind', source: '/dev/null', options: ['bind'] },
    ]) {
      expect(await planMount('c', m, tmp)).toEqual({ kind: 'guest', mount: m });
    }
  });

  it("makes every /dev/shm the pod's (one guest tmpfs from CreateSandbox), read-only where asked", async () => {
    const bind = await planMount(
      'c',
      { destination: '/dev/shm', type: 'bind', source: tmp, options: ['rbind', 'ro'] },
      tmp,
    );
    expect(guestMount(bind)).toEqual({
      destination: '/dev/shm',
      type: 'bind',
      source: GUEST_SANDBOX_SHM_DIR,
      options: ['rbind', 'ro'],
    });
    const own = await planMount(
      'c',
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'size=65536k'] },
      tmp,
    );
    expect(guestMount(own)).toEqual({
      destination: '/dev/shm',
      type: 'bind',
      source: GUEST_SANDBOX_SHM_DIR,
      options: ['rbind'],
    });
  });

  it("sizes the pod's /dev/shm from the host tmpfs the sandbox spec binds there", async () => {
    const spec = (source: string): OciSpec => ({
      ociVersion: '1.1.0',
      mounts: [{ destination: '/dev/shm', type: 'bind', source, options: ['rbind'] }],
    });
    expect(await podShmBytes({ ociVersion: '1.1.0' })).toBe(DEFAULT_SHM_BYTES);
    const st = fs.statfsSync(tmp);
    expect(await podShmBytes(spec(tmp))).toBe(st.blocks * st.bsize);
    await expect(podShmBytes(spec('/no/such/shm'))).rejects.toThrow(
      "sizing the pod's /dev/shm from /no/such/shm: ENOENT",
    );
    expect(sandboxShmStorage(1 << 20)).toEqual({
      driver: 'ephemeral',
      source: 'shm',
      fstype: 'tmpfs',
      options: ['noexec', 'nosuid', 'nodev', 'mode=1777', 'size=1048576'],
      mountPoint: GUEST_SANDBOX_SHM_DIR,
    });
  });

  it('shares host files and dirs (CRI /etc files too) under <cid>-<hex>-<basename>', async () => {
    const p = await planMount(
      'ctr1',
      { destination: '/etc/resolv.conf', source: link, options: ['rbind', 'ro'] },
      tmp,
    );
    expect(p).toMatchObject({
      kind: 'share',
      hostSource: file,
      isDir: false,
      readonly: true,
      recursive: true,
    });
    if (p.kind !== 'share') throw new Error('unreachable');
    expect(p.name).toMatch(/^ctr1-[0-9a-f]{16}-resolv-link$/);
    expect(guestMount(p)).toEqual({
      destination: '/etc/resolv.conf',
      type: 'bind',
      source: `${GUEST_SHARED_DIR}/${p.name}`,
      options: ['rbind', 'ro'],
    });
    const d = await planMount(
      'ctr1',
      { destination: '/data', type: 'bind', source: '.', options: ['bind'] },
      tmp,
    );
    expect(d).toMatchObject({
      kind: 'share',
      hostSource: tmp,
      isDir: true,
      readonly: false,
      recursive: false,
    });
  });

  it("plans Kata's ephemeral marker type as a guest tmpfs; an emptyDir on disk stays shared", async () => {
    const p = await planMount(
      'c',
      { destination: '/cache', type: 'ephemeral', source: '/var/lib/kubelet/pods/u/volumes/e/cache' },
      tmp,
    );
    expect(p).toMatchObject({ kind: 'ephemeral', name: 'cache' });
    expect(guestMount(p)).toEqual({
      destination: '/cache',
      type: 'bind',
      source: `${GUEST_EPHEMERAL_DIR}/cache`,
      options: ['rbind'],
    });
    await expect(planMount('c', { destination: '/x', type: 'ephemeral', source: '/' }, tmp)).rejects.toThrow(
      /ephemeral volume "\/" -> \/x: its source must end in a volume name/,
    );
    const disk = path.join(tmp, 'pods/u/volumes/kubernetes.io~empty-dir/scratch');
    fs.mkdirSync(disk, { recursive: true });
    const d = await planMount(
      'c',
      { destination: '/s', type: 'bind', source: disk, options: ['rbind'] },
      tmp,
    );
    expect(d.kind).toBe('share');
  });

  it('names the mount when the source is unusable', async () => {
    await expect(
      planMount('c9', { destination: '/x', type: 'bind', source: '/no/such', options: [] }, tmp),
    ).rejects.toThrow('container c9: bind mount /no/such -> /x: source is not usable: ENOENT');
    await expect(planMount('c9', { destination: '/x', type: 'bind' }, tmp)).rejects.toThrow(
      /bind mount for \/x has no source/,
    );
  });
});

describe('buildGuestSpec', () => {
  it('does not modify the host spec and handles a minimal one', () => {
    const spec: OciSpec = { root: { path: '/abs/rootfs' }, linux: { namespaces: [{ type: 'network' }] } };
    const copy = structuredClone(spec);
    const g = buildGuestSpec(spec, 'c1', [], { readonlyRootfs: true });
    expect(spec).toEqual(copy);
    expect(g).toEqual({
      root: { path: `${GUEST_SHARED_DIR}/c1/rootfs`, readonly: true },
      mounts: [],
      linux: { namespaces: [], cgroupsPath: '/kata/c1' },
    });
  });
});

describe('what of a host spec reaches the guest (one rule set: resource/guest-spec.ts)', () => {
  /** A CRI-style host spec with every host-only part either old rule set removed. */
  const host = (): OciSpec =>
    ({
      ociVersion: '1.1.0',
      hostname: 'pod',
      domainname: 'example.org',
      root: { path: 'rootfs' },
      process: {
        args: ['sh'],
        cwd: '/',
        user: { uid: 0, gid: 0 },
        apparmorProfile: 'cri-containerd.apparmor.d',
        selinuxLabel: 'system_u:system_r:container_t:s0',
      },
      hooks: {
        prestart: [{ path: '/usr/bin/host-hook' }],
        createRuntime: [{ path: '/usr/bin/nvidia-ctk' }],
        poststop: [{ path: '/usr/bin/host-hook' }],
        startContainer: [{ path: '/bin/true' }],
      },
      linux: {
        cgroupsPath: 'kubepods-besteffort-pod1.slice:cri-containerd:c1',
        namespaces: [
          { type: 'pid' },
          { type: 'ipc', path: '/proc/42/ns/ipc' },
          { type: 'uts', path: '/proc/42/ns/uts' },
          { type: 'mount' },
          { type: 'network', path: '/var/run/netns/cni-1' },
          { type: 'time' },
          { type: 'cgroup' },
        ],
        mountLabel: 'system_u:object_r:container_file_t',
        seccomp: {
          defaultAction: 'SCMP_ACT_ERRNO',
          syscalls: [{ names: ['read'], action: 'SCMP_ACT_ALLOW' }],
        },
        maskedPaths: ['/proc/kcore'],
      },
    }) as OciSpec & { domainname: string };

  it('keeps only startContainer hooks, drops LSM labels, host namespaces and their paths, moves cgroups', () => {
    const spec = host();
    const g = buildGuestSpec(spec, 'c1', [{ destination: '/proc', type: 'proc', source: 'proc' }]);
    expect(g.hooks).toEqual({ startContainer: [{ path: '/bin/true' }] });
    expect(g.process).toEqual({ args: ['sh'], cwd: '/', user: { uid: 0, gid: 0 } });
    expect(g.linux?.mountLabel).toBeUndefined();
    expect(g.linux?.namespaces).toEqual([
      { type: 'pid' },
      { type: 'ipc' },
      { type: 'uts' },
      { type: 'mount' },
      { type: 'cgroup' },
    ]);
    expect(g.linux?.cgroupsPath).toBe('/kata/c1');
    expect(g.linux?.maskedPaths).toEqual(['/proc/kcore']);
    expect(g.root).toEqual({ path: `${GUEST_SHARED_DIR}/c1/rootfs`, readonly: false });
    expect(g.mounts).toEqual([{ destination: '/proc', type: 'proc', source: 'proc' }]);
    // Fields kata-ts does not type pass through (grpc.Spec drops what it cannot carry).
    expect((g as { domainname?: string }).domainname).toBe('example.org');
    expect(spec).toEqual(host());
  });

  it('keeps seccomp unless disable_guest_seccomp says otherwise', () => {
    expect(buildGuestSpec(host(), 'c1', []).linux?.seccomp).toEqual(host().linux?.seccomp);
    const g = buildGuestSpec(host(), 'c1', [], { disableGuestSeccomp: true });
    expect(g.linux?.seccomp).toBeUndefined();
    expect(g.linux && 'seccomp' in g.linux).toBe(false);
    expect(sanitizeForGuest(host(), { disableGuestSeccomp: true }).linux?.seccomp).toBeUndefined();
  });

  it('is idempotent (the one place that decides what reaches the guest)', () => {
    for (const disableGuestSeccomp of [false, true]) {
      const g = buildGuestSpec(host(), 'c1', [], { disableGuestSeccomp });
      expect(sanitizeForGuest(g, { disableGuestSeccomp })).toEqual(g);
    }
    // sanitizeForGuest leaves paths to buildGuestSpec.
    const s = sanitizeForGuest(host());
    expect(s.root).toEqual({ path: 'rootfs' });
    expect(s.linux?.cgroupsPath).toBe('kubepods-besteffort-pod1.slice:cri-containerd:c1');
  });
});

describe('parseMountOptions', () => {
  it('splits flags, propagation and filesystem data as containerd does', () => {
    const p = parseMountOptions(['rbind', 'ro', 'nodev', 'rslave', 'lowerdir=/a:/b', 'size=1m']);
    expect(p.flags).toBe(MS_BIND | MS_REC | MS_RDONLY | MS_NODEV);
    expect(p.propagation).toBe(MS_SLAVE | MS_REC);
    expect(p.data).toBe('lowerdir=/a:/b,size=1m');
    expect(parseMountOptions(['ro', 'rw']).flags).toBe(0);
  });
});
