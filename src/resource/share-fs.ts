// The per-sandbox directory virtiofsd serves to the guest (tag SHARED_FS_TAG). Container rootfs and bind-mount
// sources are bind-mounted into it (container.ts); the guest agent mounts the tag at GUEST_SHARED_DIR.
// SharedFs knows nothing of containers: releasing them is container.ts's (cleanupSandboxShare does both).
import fs from 'node:fs/promises';
import path from 'node:path';
import type { MessageInitShape } from '@bufbuild/protobuf';
import { logger } from '../common/log.js';
import { GUEST_SHARED_DIR, SHARED_FS_TAG, checkId } from '../contract/index.js';
import type { StorageSchema } from '../protocols/gen/agent_pb.js';
import { DEFAULT_SHARED_FS_ROOT, RECORDS_SUBDIR, SHARED_SUBDIR } from './layout.js';
import {
  MS_PRIVATE,
  MS_SHARED,
  type MountInfo,
  bindMount,
  isMountPoint,
  mountsUnder,
  setPropagation,
  unmountTree,
} from './mount.js';

export class SharedFs {
  readonly sandboxId: string;
  readonly root: string;
  /** <root>/<sid>: everything the sandbox owns on the host side of the share. */
  readonly sandboxDir: string;
  /** The dir virtiofsd serves: <root>/<sid>/shared */
  readonly hostSharedDir: string;
  private readonly log;

  constructor(sandboxId: string, opts: { root?: string } = {}) {
    checkId('sandbox', sandboxId);
    this.sandboxId = sandboxId;
    this.root = path.resolve(opts.root ?? DEFAULT_SHARED_FS_ROOT);
    this.sandboxDir = path.join(this.root, sandboxId);
    this.hostSharedDir = path.join(this.sandboxDir, SHARED_SUBDIR);
    this.log = logger('resource', { sandbox_id: sandboxId });
  }

  get recordsDir(): string {
    return path.join(this.sandboxDir, RECORDS_SUBDIR);
  }

  /** Ids of the containers with a record in recordsDir (prepared and not yet released), sorted. */
  async recordedContainers(): Promise<string[]> {
    try {
      const names = await fs.readdir(this.recordsDir);
      return names
        .filter((f) => f.endsWith('.json'))
        .map((f) => f.slice(0, -'.json'.length))
        .sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new Error(`list container records in ${this.recordsDir}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /**
   * Creates the dirs and makes the shared dir its own mount point with shared propagation, in a fresh peer group
   * (private first, so it does not join the peer group of the parent mount, e.g. a shared /run), so mounts added
   * later propagate into virtiofsd's namespace. Idempotent.
   */
  async setup(): Promise<void> {
    try {
      await fs.mkdir(this.hostSharedDir, { recursive: true, mode: 0o750 });
      await fs.mkdir(this.recordsDir, { recursive: true, mode: 0o700 });
      if (!(await isMountPoint(this.hostSharedDir))) {
        await bindMount(this.hostSharedDir, this.hostSharedDir);
      }
      setPropagation(this.hostSharedDir, MS_PRIVATE);
      setPropagation(this.hostSharedDir, MS_SHARED);
    } catch (err) {
      const cause = err instanceof Error ? err.message : String(err);
      await this.cleanup().catch((e: unknown) =>
        this.log.error({ err: e }, 'cleanup after failed shared fs setup failed'),
      );
      throw new Error(`set up shared fs ${this.hostSharedDir} for sandbox ${this.sandboxId}: ${cause}`, {
        cause: err,
      });
    }
    this.log.debug({ dir: this.hostSharedDir }, 'shared fs set up');
  }

  /** Storage entry the agent mounts in CreateSandbox. */
  guestStorage(): MessageInitShape<typeof StorageSchema> {
    return {
      driver: 'virtio-fs',
      driverOptions: [],
      source: SHARED_FS_TAG,
      fstype: 'virtiofs',
      options: ['nodev'],
      mountPoint: GUEST_SHARED_DIR,
    };
  }

  /**
   * Unmounts everything under <root>/<sid> deepest first (lazy detach as last resort) and removes the dir.
   * Containers are not released here: while a container record is left (its bundle rootfs is mounted outside
   * the sandbox dir) the dir is kept, so cleanupSandboxShare can still release it, and an error says so.
   * Idempotent; needs only the sandbox id, so it works after a crash.
   */
  async cleanup(): Promise<void> {
    const errors: string[] = [];
    // Never delete through a mount: that would delete the host files shared into the sandbox. unmountTree
    // succeeds only once a fresh mountinfo read shows nothing left, so only its failure needs another look.
    let left: MountInfo[] = [];
    try {
      const lazy = await unmountTree(this.sandboxDir);
      if (lazy.length > 0) this.log.warn({ mounts: lazy }, 'busy mounts were lazily detached');
    } catch (err) {
      errors.push(err instanceof Error ? err.message : String(err));
      left = await mountsUnder(this.sandboxDir);
    }
    const records = await this.recordedContainers().catch((err: unknown) => {
      errors.push(err instanceof Error ? err.message : String(err));
      return [];
    });
    if (records.length > 0) {
      errors.push(
        `not removing ${this.sandboxDir}: containers ${records.join(', ')} are not released (their records are kept)`,
      );
    } else if (left.length === 0) {
      await fs.rm(this.sandboxDir, { recursive: true, force: true }).catch((err: unknown) => {
        errors.push(`remove ${this.sandboxDir}: ${err instanceof Error ? err.message : String(err)}`);
      });
    } else {
      errors.push(
        `not removing ${this.sandboxDir}: still mounted: ${left.map((m) => m.mountPoint).join(', ')}`,
      );
    }
    if (errors.length > 0) {
      throw new Error(`clean up shared fs of sandbox ${this.sandboxId}: ${errors.join('; ')}`);
    }
    this.log.debug({ dir: this.sandboxDir }, 'shared fs cleaned up');
  }
}
