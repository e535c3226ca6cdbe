// VM templating for QEMU (Kata's factory `enable_template`): a template VM boots once with its RAM in a file;
// paused, its device state is saved by migration with `x-ignore-shared` (the RAM is not copied: it is the file).
// A clone starts with `-incoming defer` on a copy of that RAM file and loads the state: no kernel boot, no
// initrd unpack, no agent start. Why a copy and not the template's file mapped private (Kata's way): virtiofsd
// maps guest RAM shared, so a private copy-on-write mapping would have virtiofsd read and write the template's
// pages instead of the clone's. A copy of a sparse file costs only the pages the guest touched.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { PollTimeoutError, pollUntil } from '../../common/poll.js';
import { type QemuLaunchSpec, buildQemuCmdline } from './cmdline.js';
import type { FdSender } from './netdev.js';
import type { QmpClient } from './qmp.js';

const run = promisify(execFile);

export const TEMPLATE_FORMAT = 1;

/** The files of a template under `template_path`. */
export interface TemplateFiles {
  dir: string;
  /** Guest RAM (sparse). */
  memory: string;
  /** Device state from `migrate`. */
  state: string;
  /** TemplateMeta; written last, so its presence means the template is complete. */
  meta: string;
  /** Run dir of the template VM while it exists (sockets, console log). */
  runDir: string;
}

export function templateFiles(dir: string): TemplateFiles {
  return {
    dir,
    memory: path.join(dir, 'memory'),
    state: path.join(dir, 'state'),
    meta: path.join(dir, 'template.json'),
    runDir: path.join(dir, 'vm'),
  };
}

export interface TemplateMeta {
  format: number;
  createdAt: string;
  /** sha256 over `inputs`. */
  fingerprint: string;
  /** What the template was made from: a clone whose inputs differ must not use it. */
  inputs: Record<string, string>;
  vcpus: number;
  memoryMiB: number;
}

/** The VM shape clones share with their template: RAM, vCPUs, machine, kernel, initrd, kernel params, devices. */

const PLACEHOLDER_RUN = '/template-run';

/**
 * The inputs that shape a template: the QEMU binary, guest kernel, initrd or image (their identity on disk:
 * device, inode, size, mtime; a rebuilt file is a new one), and the QEMU command line with every per-VM path
 * replaced, so that machine type, memory, vCPUs, kernel params and devices are all covered.
 */
export async function templateInputs(spec: QemuLaunchSpec): Promise<Record<string, string>> {
  const q = spec.qemu;
  const identity = async (p: string): Promise<string> => {
    if (p === '') return '';
    const st = await stat(p).catch(() => undefined);
    return st ? `${st.dev}:${st.ino}:${st.size}:${Math.trunc(st.mtimeMs)}` : 'missing';
  };
  const args = buildQemuCmdline({
    ...spec,
    sandboxId: 'template',
    runDir: PLACEHOLDER_RUN,
    agent: { kind: 'virtio-serial', socketPath: `${PLACEHOLDER_RUN}/agent.sock` },
    fsShares: [],
    blocks: [],
    templateRam: `${PLACEHOLDER_RUN}/memory`,
    incoming: false,
  }).args;
  return {
    qemu: `${q.path} ${await identity(q.path)}`,
    kernel: `${q.kernel} ${await identity(q.kernel)}`,
    initrd: q.initrd === '' ? '' : `${q.initrd} ${await identity(q.initrd)}`,
    image: q.image === '' ? '' : `${q.image} ${await identity(q.image)}`,
    commandLine: args.join(' '),
  };
}

export function fingerprintOf(inputs: Record<string, string>): string {
  const keys = Object.keys(inputs).sort();
  return createHash('sha256')
    .update(JSON.stringify(keys.map((k) => [k, inputs[k]])))
    .digest('hex');
}

/** Reads a template's meta; undefined when there is no complete template at dir. */
export async function readTemplateMeta(dir: string): Promise<TemplateMeta | undefined> {
  const files = templateFiles(dir);
  let text: string;
  try {
    text = await readFile(files.meta, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`reading VM template ${files.meta}: ${(e as Error).message}`, { cause: e });
  }
  let meta: TemplateMeta;
  try {
    meta = JSON.parse(text) as TemplateMeta;
  } catch (e) {
    throw new Error(`VM template ${files.meta} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  if (meta.format !== TEMPLATE_FORMAT || typeof meta.fingerprint !== 'string' || !meta.inputs)
    throw new Error(`VM template ${files.meta}: format ${String(meta.format)} is not ${TEMPLATE_FORMAT}`);
  return meta;
}

/** Why a template cannot serve this VM, naming the first input that differs; undefined when it can. */
export function templateMismatch(
  meta: TemplateMeta,
  inputs: Record<string, string>,
  size: { vcpus: number; memoryMiB: number },
): string | undefined {
  if (meta.vcpus !== size.vcpus || meta.memoryMiB !== size.memoryMiB)
    return `the template has ${meta.vcpus} vCPUs and ${meta.memoryMiB} MiB, the VM asks ${size.vcpus} and ${size.memoryMiB}`;
  for (const key of new Set([...Object.keys(inputs), ...Object.keys(meta.inputs)])) {
    if (meta.inputs[key] !== inputs[key]) return `its ${key} differs (the template is stale)`;
  }
  if (meta.fingerprint !== fingerprintOf(inputs)) return 'its fingerprint differs (the template is stale)';
  return undefined;
}

const MIGRATE_POLL_MS = 20;

/** Sets `x-ignore-shared`: RAM in a shared named file is neither sent nor expected (it is the file). */
async function ignoreSharedRam(qmp: QmpClient): Promise<void> {
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [{ capability: 'x-ignore-shared', state: true }],
  });
}

/** Passes an open file to QEMU under `fdname` (getfd over SCM_RIGHTS) and closes our copy. */
async function passFile(
  sendFds: FdSender,
  file: string,
  flags: 'r' | 'w',
  fdname: string,
  timeoutMs: number,
): Promise<void> {
  const fh = await open(file, flags, 0o600);
  try {
    await sendFds('getfd', { fdname }, [fh.fd], timeoutMs);
  } finally {
    await fh.close();
  }
}

interface MigrationStatus {
  status?: string;
  'error-desc'?: string;
}

async function waitMigration(qmp: QmpClient, what: string, deadline: number): Promise<void> {
  let last: MigrationStatus = {};
  try {
    await pollUntil(
      async () => {
        last = await qmp.execute<MigrationStatus>('query-migrate');
        if (last.status === 'failed' || last.status === 'cancelled')
          throw new Error(`${what}: migration ${last.status}: ${last['error-desc'] ?? 'no reason given'}`);
        return last.status === 'completed';
      },
      { timeoutMs: Math.max(deadline - Date.now(), 1), intervalMs: MIGRATE_POLL_MS, what },
    );
  } catch (e) {
    if (e instanceof PollTimeoutError)
      throw new Error(`${what}: migration still "${last.status ?? 'unknown'}" at the deadline`, { cause: e });
    throw e;
  }
}

/**
 * Saves a running template VM: pause, x-ignore-shared, `migrate fd:` into the state file (no `exec:`: QEMU's
 * seccomp sandbox denies spawning), wait for `completed`, then write the meta. The VM stays paused.
 */
export async function saveTemplateState(
  qmp: QmpClient,
  sendFds: FdSender,
  files: TemplateFiles,
  meta: Omit<TemplateMeta, 'format' | 'createdAt' | 'fingerprint'>,
  timeoutMs: number,
): Promise<TemplateMeta> {
  const deadline = Date.now() + timeoutMs;
  await qmp.stop();
  await ignoreSharedRam(qmp);
  await passFile(sendFds, files.state, 'w', 'template-state', timeoutMs);
  await qmp.execute('migrate', { uri: 'fd:template-state' });
  await waitMigration(qmp, `saving the VM template to ${files.state}`, deadline);
  const full: TemplateMeta = {
    format: TEMPLATE_FORMAT,
    createdAt: new Date().toISOString(),
    fingerprint: fingerprintOf(meta.inputs),
    ...meta,
  };
  const tmp = `${files.meta}.tmp`;
  await writeFile(tmp, `${JSON.stringify(full, null, 2)}\n`, { mode: 0o600 });
  await rename(tmp, files.meta);
  return full;
}

/** Loads a template's device state into a clone started with `-incoming defer`, then runs it. */
export async function restoreTemplateState(
  qmp: QmpClient,
  sendFds: FdSender,
  files: TemplateFiles,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  await ignoreSharedRam(qmp);
  await passFile(sendFds, files.state, 'r', 'template-state', timeoutMs);
  await qmp.execute('migrate-incoming', { uri: 'fd:template-state' });
  await waitMigration(qmp, `restoring the VM template from ${files.state}`, deadline);
  // The template was saved paused, and its run state travels with it: resume the clone.
  if ((await qmp.queryStatus()).status !== 'running') await qmp.cont();
}

/**
 * Copies the template's RAM for one clone, holes kept (cp's SEEK_DATA/SEEK_HOLE walk; Node's copyFile would
 * write the holes out as zeros and fill the whole size).
 */
export async function copyTemplateRam(files: TemplateFiles, to: string, timeoutMs: number): Promise<void> {
  try {
    await run('cp', ['--sparse=always', '--reflink=auto', files.memory, to], { timeout: timeoutMs });
  } catch (e) {
    await rm(to, { force: true });
    const err = e as Error & { stderr?: string };
    throw new Error(
      `copying the VM template's RAM ${files.memory} to ${to}: ${err.stderr?.trim() || err.message}`,
      {
        cause: e,
      },
    );
  }
}

/** Makes the template dir and an empty sparse RAM file of the VM's size. */
export async function createTemplateRam(files: TemplateFiles, memoryMiB: number): Promise<void> {
  await mkdir(files.dir, { recursive: true, mode: 0o750 });
  const fh = await open(files.memory, 'w', 0o600);
  try {
    await fh.truncate(memoryMiB * 1024 * 1024);
  } finally {
    await fh.close();
  }
}

/** Removes a template's files (`factory destroy`); the dir itself too when nothing else is in it. */
export async function destroyTemplateFiles(files: TemplateFiles): Promise<void> {
  for (const f of [files.meta, `${files.meta}.tmp`, files.state, files.memory]) await rm(f, { force: true });
  await rm(files.runDir, { recursive: true, force: true });
  try {
    await rmdir(files.dir);
  } catch (e) {
    // Someone keeps other files there (template_path may be a shared dir): leave it.
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTEMPTY') throw e;
  }
}
