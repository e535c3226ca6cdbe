import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  GUEST_EPHEMERAL_DIR,
  GUEST_SANDBOX_SHM_DIR,
  GUEST_SHARED_DIR,
  type OciSpec,
  type RootfsMount,
  SharedFs,
  cleanupSandboxShare,
  prepareContainer,
  releaseContainer,
} from '../../src/resource/index.js';

// Needs root (mounts). Everything lives under one temp dir; the checks read /proc/self/mountinfo for it.
const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'kata-res-')));
afterAll(() => {
  expect(mountsIn(tmp)).toEqual([]);
  fs.rmSync(tmp, { recursive: true, force: true });
});

function mountsIn(dir: string): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((p) => p === dir || p.startsWith(`${dir}/`));
}

let n = 0;
interface Fixture {
  dir: string;
  sfs: SharedFs;
  bundle: string;
  overlay: RootfsMount;
  roFile: string;
  rwDir: string;
}

function fixture(): Fixture {
  const dir = path.join(tmp, `case${++n}`);
  const bundle = path.join(dir, 'bundle');
  const lower = path.join(dir, 'lower');
  const upper = path.join(dir, 'upper');
  const work = path.join(dir, 'work');
  for (const d of [bundle, lower, upper, work, path.join(lower, 'etc')]) fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(lower, 'etc', 'os-release'), 'NAME=lower\n');
  const roFile = path.join(dir, 'hosts');
  fs.writeFileSync(roFile, '127.0.0.1 localhost\n');
  const rwDir = path.join(dir, 'data');
  fs.mkdirSync(rwDir);
  fs.writeFileSync(path.join(rwDir, 'hello'), 'hi\n');
  return {
    dir,
    sfs: new SharedFs(`sb${n}`, { root: path.join(dir, 'sandboxes') }),
    bundle,
    overlay: {
      type: 'overlay',
      source: 'overlay',
      options: ['index=off', `workdir=${work}`, `upperdir=${upper}`, `lowerdir=${lower}`],
    },
    roFile,
    rwDir,
  };
}

function specFor(f: Fixture): OciSpec {
  return {
    ociVersion: '1.1.0',
    root: { path: 'rootfs' },
    process: { args: ['sh'], cwd: '/', apparmorProfile: 'cri-containerd.apparmor.d' },
    hooks: { prestart: [{ path: '/usr/bin/host-hook' }], startContainer: [{ path: '/bin/true' }] },
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev/shm', type: 'bind', source: path.join(f.dir, 'shm'), options: ['rbind', 'rw'] },
      { destination: '/etc/hosts', type: 'bind', source: f.roFile, options: ['rbind', 'rprivate', 'ro'] },
      { destination: '/data', type: 'bind', source: f.rwDir, options: ['rbind', 'rw'] },
    ],
    linux: {
      cgroupsPath: 'kubepods-besteffort-pod1.slice:cri-containerd:c1',
      namespaces: [
        { type: 'pid' },
        { type: 'ipc', path: '/proc/42/ns/ipc' },
        { type: 'uts', path: '/proc/42/ns/uts' },
        { type: 'mount' },
        { type: 'network', path: '/var/run/netns/cni-1' },
      ],
      mountLabel: 'system_u:object_r:container_file_t',
    },
  };
}

describe('prepareContainer / releaseContainer', () => {
  let f: Fixture;
  beforeEach(async () => {
    f = fixture();
    await f.sfs.setup();
  });
  afterEach(async () => {
    await cleanupSandboxShare(f.sfs);
    expect(mountsIn(f.dir)).toEqual([]);
    expect(fs.existsSync(f.sfs.sandboxDir)).toBe(false);
  });

  it('shares an overlay rootfs and bind mounts, read-only where asked, and rewrites the spec', async () => {
    const prepared = await prepareContainer(f.sfs, 'c1', {
      bundle: f.bundle,
      rootfs: [f.overlay],
      spec: specFor(f),
    });
    const g = prepared.guestSpec;
    expect(prepared.storages).toEqual([]);
    expect(g.root).toEqual({ path: `${GUEST_SHARED_DIR}/c1/rootfs`, readonly: false });

    // Rootfs: overlay at <bundle>/rootfs, bound into the share; writes land in the upper dir.
    const sharedRoot = path.join(f.sfs.hostSharedDir, 'c1', 'rootfs');
    expect(fs.readFileSync(path.join(sharedRoot, 'etc', 'os-release'), 'utf8')).toBe('NAME=lower\n');
    fs.writeFileSync(path.join(sharedRoot, 'new'), 'x');
    expect(fs.existsSync(path.join(f.dir, 'upper', 'new'))).toBe(true);
    expect(mountsIn(path.join(f.bundle, 'rootfs'))).toHaveLength(1);

    const mounts = g.mounts ?? [];
    expect(mounts[0]).toEqual(specFor(f).mounts?.[0]);
    expect(mounts[1]).toMatchObject({ destination: '/dev/shm', type: 'bind', source: GUEST_SANDBOX_SHM_DIR });
    const hosts = mounts[2]!;
    const data = mounts[3]!;
    expect(hosts.source).toMatch(new RegExp(`^${GUEST_SHARED_DIR}/c1-[0-9a-f]{16}-hosts$`));
    expect(data.source).toMatch(new RegExp(`^${GUEST_SHARED_DIR}/c1-[0-9a-f]{16}-data$`));
    expect(hosts.options).toEqual(['rbind', 'rprivate', 'ro']);

    // The read-only file cannot be written through the share; the rw dir can.
    const hostsShared = path.join(f.sfs.hostSharedDir, path.basename(hosts.source!));
    expect(fs.readFileSync(hostsShared, 'utf8')).toBe('127.0.0.1 localhost\n');
    expect(() => fs.writeFileSync(hostsShared, 'evil')).toThrow(/EROFS/);
    const dataShared = path.join(f.sfs.hostSharedDir, path.basename(data.source!));
    fs.writeFileSync(path.join(dataShared, 'from-guest'), 'y');
    expect(fs.readFileSync(path.join(f.rwDir, 'from-guest'), 'utf8')).toBe('y');

    // Host-only bits are gone.
    expect(g.hooks).toEqual({ startContainer: [{ path: '/bin/true' }] });
    expect(g.process?.apparmorProfile).toBeUndefined();
    expect(g.linux?.mountLabel).toBeUndefined();
    expect(g.linux?.cgroupsPath).toBe('/kata/c1');
    expect(g.linux?.namespaces).toEqual([
      { type: 'pid' },
      { type: 'ipc' },
      { type: 'uts' },
      { type: 'mount' },
    ]);

    await releaseContainer(f.sfs, 'c1');
    expect(mountsIn(f.dir)).toEqual([f.sfs.hostSharedDir]);
    expect(fs.readdirSync(f.sfs.hostSharedDir)).toEqual([]);
    // Released means the host files are untouched.
    expect(fs.readFileSync(f.roFile, 'utf8')).toBe('127.0.0.1 localhost\n');
    expect(fs.readFileSync(path.join(f.rwDir, 'hello'), 'utf8')).toBe('hi\n');
    await releaseContainer(f.sfs, 'c1');
    await releaseContainer(f.sfs, 'never-prepared');
  });

  it('uses the bundle root.path when containerd sends no rootfs mounts; root.readonly is left to the guest runtime', async () => {
    fs.mkdirSync(path.join(f.bundle, 'rootfs', 'bin'), { recursive: true });
    const spec: OciSpec = { root: { path: 'rootfs', readonly: true }, mounts: [] };
    const p = await prepareContainer(f.sfs, 'c2', { bundle: f.bundle, rootfs: [], spec });
    expect(p.guestSpec.root).toEqual({ path: `${GUEST_SHARED_DIR}/c2/rootfs`, readonly: true });
    const shared = path.join(f.sfs.hostSharedDir, 'c2', 'rootfs');
    expect(fs.existsSync(path.join(shared, 'bin'))).toBe(true);
    // Shared writable: crun in the guest makes the mount points (an image like pause has no /proc), then
    // remounts the rootfs read-only, as runc does.
    fs.mkdirSync(path.join(shared, 'proc'));
    expect(fs.existsSync(path.join(f.bundle, 'rootfs', 'proc'))).toBe(true);
    // The user's rootfs dir is not a mount of ours: release must leave it (and its content) alone.
    await releaseContainer(f.sfs, 'c2');
    expect(fs.existsSync(path.join(f.bundle, 'rootfs', 'bin'))).toBe(true);
  });

  it('undoes the rootfs mounts when a later rootfs mount fails, naming container and mount', async () => {
    const bad: RootfsMount = { type: 'overlay', source: 'overlay', options: [`lowerdir=${f.dir}/missing`] };
    await expect(
      prepareContainer(f.sfs, 'c3', { bundle: f.bundle, rootfs: [f.overlay, bad], spec: specFor(f) }),
    ).rejects.toThrow(
      /prepare container c3 .*mount rootfs overlay overlay \(options lowerdir=.*missing\).*ENOENT/,
    );
    expect(mountsIn(f.dir)).toEqual([f.sfs.hostSharedDir]);
    expect(fs.readdirSync(f.sfs.recordsDir)).toEqual([]);
  });

  it('undoes the overlay when sharing the rootfs fails midway', async () => {
    fs.writeFileSync(path.join(f.sfs.hostSharedDir, 'c4'), 'in the way');
    await expect(
      prepareContainer(f.sfs, 'c4', { bundle: f.bundle, rootfs: [f.overlay], spec: specFor(f) }),
    ).rejects.toThrow(/prepare container c4 .*share rootfs .*ENOTDIR/);
    expect(mountsIn(f.dir)).toEqual([f.sfs.hostSharedDir]);
    expect(fs.readdirSync(f.sfs.hostSharedDir)).toEqual(['c4']);
  });

  it('rejects bad input before mounting anything', async () => {
    const spec = specFor(f);
    spec.mounts?.push({
      destination: '/x',
      type: 'bind',
      source: path.join(f.dir, 'nope'),
      options: ['rbind'],
    });
    await expect(
      prepareContainer(f.sfs, 'c5', { bundle: f.bundle, rootfs: [f.overlay], spec }),
    ).rejects.toThrow(/container c5: bind mount .*nope -> \/x: source is not usable: ENOENT/);
    await expect(prepareContainer(f.sfs, '../c', { bundle: f.bundle, rootfs: [], spec })).rejects.toThrow(
      /invalid container id/,
    );
    await expect(prepareContainer(f.sfs, 'c6', { bundle: f.bundle, rootfs: [], spec: {} })).rejects.toThrow(
      /container c6: no rootfs mounts were given and the spec has no root.path/,
    );
    expect(mountsIn(f.dir)).toEqual([f.sfs.hostSharedDir]);
  });

  it('refuses to prepare the same container twice', async () => {
    await prepareContainer(f.sfs, 'c7', { bundle: f.bundle, rootfs: [f.overlay], spec: specFor(f) });
    await expect(
      prepareContainer(f.sfs, 'c7', { bundle: f.bundle, rootfs: [f.overlay], spec: specFor(f) }),
    ).rejects.toThrow(/c7 .*already prepared/);
    // cleanupSandboxShare alone (afterEach) must release the prepared container, bundle rootfs included.
  });

  it("makes a memory-backed emptyDir a guest tmpfs (Kata's ephemeral storage), with kubelet's fsGroup", async () => {
    // kubelet's layout for emptyDir {medium: Memory}: a tmpfs at .../volumes/kubernetes.io~empty-dir/<name>.
    const volumes = path.join(f.dir, 'pods/uid-1/volumes');
    const cache = path.join(volumes, 'kubernetes.io~empty-dir/cache');
    const disk = path.join(volumes, 'kubernetes.io~empty-dir/scratch');
    fs.mkdirSync(cache, { recursive: true });
    fs.mkdirSync(disk);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', cache]);
    try {
      fs.chownSync(cache, 0, 2000);
      const spec = specFor(f);
      spec.mounts = [
        { destination: '/cache', type: 'bind', source: cache, options: ['rbind', 'rprivate', 'rw'] },
        { destination: '/scratch', type: 'bind', source: disk, options: ['rbind', 'rw'] },
      ];
      const prepared = await prepareContainer(f.sfs, 'c10', { bundle: f.bundle, rootfs: [f.overlay], spec });
      expect(prepared.storages).toEqual([
        {
          driver: 'ephemeral',
          source: 'tmpfs',
          fstype: 'tmpfs',
          options: ['fsgid=2000'],
          mountPoint: `${GUEST_EPHEMERAL_DIR}/cache`,
        },
      ]);
      const [eph, scratch] = prepared.guestSpec.mounts ?? [];
      expect(eph).toEqual({
        destination: '/cache',
        type: 'bind',
        source: `${GUEST_EPHEMERAL_DIR}/cache`,
        options: ['rbind', 'rprivate', 'rw'],
      });
      // A disk-backed emptyDir is a host dir like any other: shared.
      expect(scratch?.source).toMatch(new RegExp(`^${GUEST_SHARED_DIR}/c10-[0-9a-f]{16}-scratch$`));
      // Nothing of the tmpfs one is in the share.
      expect(fs.readdirSync(f.sfs.hostSharedDir).filter((n) => n.endsWith('-cache'))).toEqual([]);
      await releaseContainer(f.sfs, 'c10');
    } finally {
      execFileSync('umount', [cache]);
    }
  });

  it('SharedFs.cleanup leaves unreleased containers to cleanupSandboxShare, keeping their records', async () => {
    await prepareContainer(f.sfs, 'c8', { bundle: f.bundle, rootfs: [f.overlay], spec: specFor(f) });
    expect(await f.sfs.recordedContainers()).toEqual(['c8']);
    // A restarted shim knows only the sandbox id.
    const again = new SharedFs(f.sfs.sandboxId, { root: f.sfs.root });
    await expect(again.cleanup()).rejects.toThrow(
      /containers c8 are not released \(their records are kept\)/,
    );
    expect(await again.recordedContainers()).toEqual(['c8']);
    expect(mountsIn(path.join(f.bundle, 'rootfs'))).toHaveLength(1);
    await cleanupSandboxShare(again);
    expect(mountsIn(f.dir)).toEqual([]);
    expect(fs.existsSync(f.sfs.sandboxDir)).toBe(false);
  });
});

describe('propagation into a virtiofsd-style slave mount namespace', () => {
  let child: ChildProcess | undefined;
  afterEach(() => {
    child?.kill('SIGKILL');
  });

  it('shows later mounts there, read-only ones read-only, and unmounts them there too', async () => {
    const f = fixture();
    await f.sfs.setup();
    try {
      // virtiofsd (sandbox=namespace) unshares its mount namespace and makes everything a slave.
      child = spawn('unshare', ['--mount', '--propagation', 'slave', 'sleep', '60'], { stdio: 'ignore' });
      const pid = child.pid!;
      const ourNs = fs.readlinkSync('/proc/self/ns/mnt');
      for (let i = 0; i < 200 && fs.readlinkSync(`/proc/${pid}/ns/mnt`) === ourNs; i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      const inNs = (script: string): string =>
        execFileSync('nsenter', ['-t', String(pid), '-m', 'sh', '-c', script], { encoding: 'utf8' });

      const p = await prepareContainer(f.sfs, 'c1', {
        bundle: f.bundle,
        rootfs: [f.overlay],
        spec: specFor(f),
      });
      const hosts = path.join(f.sfs.hostSharedDir, path.basename(p.guestSpec.mounts![2]!.source!));
      const data = path.join(f.sfs.hostSharedDir, path.basename(p.guestSpec.mounts![3]!.source!));
      expect(inNs(`cat ${f.sfs.hostSharedDir}/c1/rootfs/etc/os-release`)).toBe('NAME=lower\n');
      expect(inNs(`cat ${hosts}`)).toBe('127.0.0.1 localhost\n');
      expect(inNs(`(echo evil > ${hosts}) 2>/dev/null && echo wrote || echo refused`)).toBe('refused\n');
      expect(inNs(`echo ok > ${data}/via-ns && cat ${f.rwDir}/via-ns`)).toBe('ok\n');

      await releaseContainer(f.sfs, 'c1');
      expect(inNs(`grep -c ' ${f.sfs.hostSharedDir}/' /proc/self/mountinfo || true`)).toBe('0\n');
    } finally {
      child?.kill('SIGKILL');
      await cleanupSandboxShare(f.sfs);
    }
  });
});
