// Host side of one container: its rootfs and bind-mount sources shared into the sandbox's virtio-fs dir, and the
// spec rewritten to match. A record of the planned mounts is written before mounting, so a restarted shim (or a
// failure halfway) can undo exactly what was done.
import type fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pathExists } from '../common/files.js';
import { logger } from '../common/log.js';
import { checkId, sharedRootfsPath } from '../contract/index.js';
import { writeFileAtomic } from '../persist/atomic.js';
import { buildGuestSpec } from './guest-spec.js';
import { BUNDLE_ROOTFS } from './layout.js';
import { type MountInfo, bindMount, isMountPoint, readMountInfo, unmountTree } from './mount.js';
import { mountBundleRootfs, specRootDir } from './rootfs.js';
import type { SharedFs } from './share-fs.js';
import type { OciMount, OciSpec, PrepareContainerOptions, PreparedContainer, RootfsMount } from './types.js';
import { type MountPlan, ephemeralStorage, guestMount, planMount, sharedNamePattern } from './volumes.js';

export type { OciSpec, PreparedContainer, RootfsMount } from './types.js';

/** What prepareContainer mounted for one container, kept in <sandbox dir>/containers/<cid>.json. */
export interface ContainerRecord {
  containerId: string;
  bundle: string;
  /** <bundle>/rootfs when prepareContainer mounted containerd's rootfs mounts there (so release unmounts it). */
  bundleRootfs?: string;
  /** Mount points created in the shared dir (host paths), in mount order. */
  shared: { target: string; source: string; isDir: boolean }[];
}

function recordPath(sfs: SharedFs, cid: string): string {
  return path.join(sfs.recordsDir, `${cid}.json`);
}

async function readRecord(sfs: SharedFs, cid: string): Promise<ContainerRecord | undefined> {
  const file = recordPath(sfs, cid);
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`read container record ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const r = JSON.parse(text) as ContainerRecord;
    if (r.containerId !== cid || !Array.isArray(r.shared)) throw new Error('unexpected shape');
    return r;
  } catch (err) {
    throw new Error(`container record ${file} is corrupt: ${(err as Error).message}`, { cause: err });
  }
}

/** As fs.statSync(p, { throwIfNoEntry: false }): undefined when p (or a parent) is missing, else throws. */
async function statOrUndefined(p: string, how: 'stat' | 'lstat' = 'stat'): Promise<fs.Stats | undefined> {
  try {
    return await (how === 'lstat' ? fsp.lstat(p) : fsp.stat(p));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export async function prepareContainer(
  sfs: SharedFs,
  containerId: string,
  opts: PrepareContainerOptions,
): Promise<PreparedContainer> {
  checkId('container', containerId);
  const log = logger('resource', { sandbox_id: sfs.sandboxId, container_id: containerId });
  const fail = (msg: string, cause?: unknown): Error =>
    new Error(`prepare container ${containerId} in sandbox ${sfs.sandboxId}: ${msg}`, { cause });

  if (!(await isMountPoint(sfs.hostSharedDir))) {
    throw fail(`shared fs is not set up (${sfs.hostSharedDir} is not a mount point)`);
  }
  if (await pathExists(recordPath(sfs, containerId))) {
    throw fail('container is already prepared (release it first)');
  }
  const bundle = path.resolve(opts.bundle);
  const spec = opts.spec;
  const readonlyRootfs = Boolean(opts.readonlyRootfs ?? spec.root?.readonly);

  // Plan first: every check that can fail on bad input happens before anything is mounted.
  let plans: MountPlan[];
  let rootSource: string;
  try {
    if (!(await statOrUndefined(bundle))?.isDirectory())
      throw new Error(`bundle ${bundle} is not a directory`);
    plans = [];
    // One at a time, in spec order: the error names the first unusable mount, as before.
    for (const m of spec.mounts ?? []) plans.push(await planMount(containerId, m, bundle));
    rootSource =
      opts.rootfs.length > 0
        ? path.join(bundle, BUNDLE_ROOTFS)
        : await specRootDir(containerId, bundle, spec);
  } catch (err) {
    throw fail(errText(err), err);
  }
  const rootTarget = path.join(sfs.hostSharedDir, sharedRootfsPath(containerId));
  const record: ContainerRecord = {
    containerId,
    bundle,
    bundleRootfs: opts.rootfs.length > 0 ? rootSource : undefined,
    shared: [{ target: rootTarget, source: rootSource, isDir: true }],
  };
  for (const p of plans) {
    if (p.kind === 'share') {
      record.shared.push({
        target: path.join(sfs.hostSharedDir, p.name),
        source: p.hostSource,
        isDir: p.isDir,
      });
    }
  }
  try {
    await writeFileAtomic(recordPath(sfs, containerId), JSON.stringify(record));
  } catch (err) {
    throw fail(`save container record: ${errText(err)}`, err);
  }

  // The step in progress, for the error; mountBundleRootfs names its entry and target itself.
  let step = '';
  try {
    if (opts.rootfs.length > 0) {
      await mountBundleRootfs(containerId, bundle, opts.rootfs);
    }
    step = `share rootfs ${rootSource} -> ${rootTarget}`;
    await fsp.mkdir(rootTarget, { recursive: true, mode: 0o755 });
    // Writable even for root.readonly: crun in the guest must make the spec's mount points (/proc, /dev,
    // /etc/resolv.conf, ...) in it, then remounts it read-only itself, as runc does on the host.
    await bindMount(rootSource, rootTarget);
    for (const p of plans) {
      if (p.kind !== 'share') continue;
      const target = path.join(sfs.hostSharedDir, p.name);
      step = `share bind mount ${p.mount.source} -> ${p.mount.destination} (via ${target}${p.readonly ? ', read-only' : ''})`;
      if (p.isDir) await fsp.mkdir(target, { mode: 0o755 });
      else await fsp.writeFile(target, '', { flag: 'wx', mode: 0o644 });
      await bindMount(p.hostSource, target, { readonly: p.readonly, recursive: p.recursive });
    }
  } catch (err) {
    log.warn({ err: errText(err), step }, 'prepare failed, undoing');
    try {
      await undo(sfs, record);
    } catch (undoErr) {
      throw fail(`${step ? `${step}: ` : ''}${errText(err)}; undo failed too: ${errText(undoErr)}`, err);
    }
    throw fail(`${step ? `${step}: ` : ''}${errText(err)}`, err);
  }

  const mounts: OciMount[] = plans.map(guestMount);
  log.debug({ shared: record.shared.length }, 'container resources prepared');
  return {
    guestSpec: buildGuestSpec(spec, containerId, mounts, {
      readonlyRootfs,
      disableGuestSeccomp: opts.disableGuestSeccomp,
    }),
    // The agent ref-counts storages by mount point: the pod's containers share each ephemeral tmpfs.
    storages: plans.flatMap((p) => (p.kind === 'ephemeral' ? [ephemeralStorage(p)] : [])),
  };
}

/**
 * Unmounts and removes everything prepareContainer made for this container; idempotent. Without a record (lost
 * in a crash before it was written) it falls back to the naming convention, and unmounts <bundle>/rootfs only
 * when the caller says the rootfs was mounted (SandboxState.containers[].rootfsMounted).
 */
export async function releaseContainer(
  sfs: SharedFs,
  containerId: string,
  opts: { bundle?: string; rootfsMounted?: boolean } = {},
): Promise<void> {
  checkId('container', containerId);
  let record = await readRecord(sfs, containerId);
  if (!record) {
    const shared: ContainerRecord['shared'] = [];
    const pattern = sharedNamePattern(containerId);
    let names: string[] = [];
    try {
      names = await fsp.readdir(sfs.hostSharedDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const rootTarget = path.join(sfs.hostSharedDir, sharedRootfsPath(containerId));
    if (names.includes(containerId)) shared.push({ target: rootTarget, source: '', isDir: true });
    for (const n of names.filter((n) => pattern.test(n))) {
      const target = path.join(sfs.hostSharedDir, n);
      const st = await statOrUndefined(target, 'lstat');
      shared.push({ target, source: '', isDir: Boolean(st?.isDirectory()) });
    }
    const bundleRootfs =
      opts.bundle && opts.rootfsMounted ? path.join(path.resolve(opts.bundle), BUNDLE_ROOTFS) : undefined;
    if (shared.length === 0 && !bundleRootfs) return;
    record = { containerId, bundle: opts.bundle ?? '', bundleRootfs, shared };
  }
  try {
    await undo(sfs, record);
  } catch (err) {
    throw new Error(`release container ${containerId} in sandbox ${sfs.sandboxId}: ${errText(err)}`, {
      cause: err,
    });
  }
}

/**
 * Tears down a sandbox's share: releases every container still recorded under it (their bundle rootfs mounts
 * live outside the share), then SharedFs.cleanup. Every step runs even when an earlier one fails; the error
 * names each failure. Idempotent; needs only the sandbox id, so it is what crash cleanup calls too.
 */
export async function cleanupSandboxShare(sfs: SharedFs): Promise<void> {
  const errors: string[] = [];
  let ids: string[] = [];
  try {
    ids = await sfs.recordedContainers();
  } catch (err) {
    errors.push(errText(err));
  }
  for (const cid of ids) {
    try {
      await releaseContainer(sfs, cid);
    } catch (err) {
      errors.push(errText(err));
    }
  }
  try {
    await sfs.cleanup();
  } catch (err) {
    errors.push(errText(err));
  }
  if (errors.length > 0) {
    throw new Error(`clean up the share of sandbox ${sfs.sandboxId}: ${errors.join('; ')}`);
  }
}

async function removeIfExists(p: string, kind: 'dir' | 'file'): Promise<void> {
  try {
    if (kind === 'dir') await fsp.rmdir(p);
    else await fsp.unlink(p);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // ENOTDIR: something we did not create sits where a parent dir was meant to be; not ours to remove.
    if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err;
  }
}

/** Unmounts the record's mounts newest first, removes the mount points it created, then the record. */
async function undo(sfs: SharedFs, record: ContainerRecord): Promise<void> {
  const errors: string[] = [];
  // One mountinfo read lists every target's mounts: unmounting one target leaves the others' entries valid, and
  // each unmountTree re-reads only after it unmounted something (to check nothing is left).
  let infos: MountInfo[] | undefined;
  try {
    infos = await readMountInfo();
  } catch {
    infos = undefined; // each unmountTree reads (and reports) for itself
  }
  for (const s of [...record.shared].reverse()) {
    try {
      await unmountTree(s.target, infos);
      // Only empty mount points are removed: rmdir/unlink cannot delete shared host data by mistake.
      if (s.isDir) await removeIfExists(s.target, 'dir');
      else await removeIfExists(s.target, 'file');
    } catch (err) {
      errors.push(`${s.target}: ${errText(err)}`);
    }
  }
  // The rootfs mount point sits in <shared>/<cid>/; remove that dir once nothing is mounted in it.
  const cidDir = path.join(sfs.hostSharedDir, record.containerId);
  try {
    await removeIfExists(cidDir, 'dir');
  } catch (err) {
    errors.push(`${cidDir}: ${errText(err)}`);
  }
  if (record.bundleRootfs) {
    try {
      await unmountTree(record.bundleRootfs, infos);
    } catch (err) {
      errors.push(`${record.bundleRootfs}: ${errText(err)}`);
    }
  }
  if (errors.length > 0) throw new Error(`undo mounts: ${errors.join('; ')}`);
  await fsp.rm(recordPath(sfs, record.containerId), { force: true });
}
