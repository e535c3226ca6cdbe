// Accelerator choice. /dev/kvm existing is not enough: on some hosts (nested, broken KVM) a guest kernel hangs
// under KVM. So `auto` boots the configured kernel briefly under KVM with no root fs and waits for it to reach
// its "cannot mount root" panic; if it does not within a few seconds we use TCG. The verdict is cached per host
// boot, kernel and QEMU binary in /run/kata-ts/accel.json (`kata-ctl check` fills it too). A sandbox waits for
// an uncached probe only `waitMs`: past that it boots under TCG while the probe goes on and caches its verdict
// for the next sandboxes, so a host where KVM hangs does not cost the first sandbox after a boot the whole probe.
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../common/log.js';
import { logger } from '../common/log.js';
import type { KataConfig } from '../config/types.js';
import { TailBuffer } from './supervisor.js';

export interface AccelProbeResult {
  accel: 'kvm' | 'tcg';
  reason: string;
  cached: boolean;
}

export interface ProbeOptions {
  cacheFile?: string;
  /** How long the KVM guest gets to reach its panic line. */
  timeoutMs?: number;
  kvmDevice?: string;
  log?: Logger;
  /** resolveAccelerator: how long to wait for an uncached probe before using TCG (default: until it decides). */
  waitMs?: number;
}

export const DEFAULT_ACCEL_CACHE = '/run/kata-ts/accel.json';
const DEFAULT_PROBE_TIMEOUT_MS = 8000;
/** How long a sandbox waits for an uncached probe: a kernel under working KVM reaches its panic well within. */
export const ACCEL_WAIT_MS = 1500;
/** Lines a kernel prints once it got all the way through boot to "no root fs". */
const REACHED_END = /Kernel panic|VFS: Unable to mount root/;

interface CacheEntry {
  accel: 'kvm' | 'tcg';
  reason: string;
  probedAt: string;
}

async function cacheKey(kernel: string, qemu: string): Promise<string> {
  const bootId = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  // The kernel's mtime too: rebuilding the guest image must not reuse a verdict about another kernel.
  const k = await stat(kernel);
  return `${bootId}|${kernel}@${Math.trunc(k.mtimeMs)}|${qemu}`;
}

async function readCache(file: string): Promise<Record<string, CacheEntry>> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as Record<string, CacheEntry>;
  } catch {
    return {};
  }
}

async function writeCache(file: string, key: string, entry: CacheEntry): Promise<void> {
  const all = await readCache(file);
  all[key] = entry;
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(all, null, 2)}\n`);
  await rename(tmp, file);
}

/** Boots `kernel` under KVM with no root fs and reports whether it reached the end of boot in time. */
async function bootUnderKvm(
  qemu: string,
  kernel: string,
  machineType: string,
  timeoutMs: number,
): Promise<{ ok: boolean; detail: string }> {
  const args = [
    '-machine',
    machineType || 'q35',
    '-accel',
    'kvm',
    '-cpu',
    'host',
    '-m',
    '256M',
    '-smp',
    '1',
    '-nodefaults',
    '-nographic',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-serial',
    'stdio',
    '-kernel',
    kernel,
    '-append',
    'console=ttyS0 panic=-1 rdinit=/nonexistent',
  ];
  return new Promise((resolve) => {
    // Under coreutils' timeout: should the shim exit while a probe runs (a short sandbox), a QEMU hung in KVM
    // still goes a little after our own deadline instead of staying forever.
    const hardLimitS = String(Math.ceil(timeoutMs / 1000) + 2);
    // Its own process group, so that one kill ends both timeout and QEMU.
    const child = spawn('timeout', ['-s', 'KILL', hardLimitS, qemu, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    const console = new TailBuffer(16 * 1024);
    const stderr = new TailBuffer(2048);
    let done = false;
    const finish = (ok: boolean, detail: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      // Resolve only once QEMU is reaped: a probe must not leave even a zombie behind.
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        child.once('exit', () => resolve({ ok, detail }));
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          child.kill('SIGKILL'); // the group is gone already: the leader alone, if still there
        }
      } else {
        resolve({ ok, detail });
      }
    };
    const timer = setTimeout(() => {
      const reached = /Linux version/.test(console.toString())
        ? 'started but did not finish booting'
        : 'printed nothing';
      finish(false, `the KVM guest ${reached} within ${timeoutMs} ms (KVM hangs on this host)`);
    }, timeoutMs);
    child.stdout.on('data', (c: Buffer) => {
      console.push(c);
      if (REACHED_END.test(console.toString())) finish(true, 'a KVM guest kernel booted to the end');
    });
    child.stderr.on('data', (c: Buffer) => stderr.push(c));
    child.on('error', (err) => finish(false, `cannot run ${qemu}: ${err.message}`));
    child.on('exit', (code) => {
      if (REACHED_END.test(console.toString())) finish(true, 'a KVM guest kernel booted to the end');
      else
        finish(false, `QEMU exited with code ${code} under KVM: ${stderr.toString().trim() || 'no output'}`);
    });
  });
}

/**
 * Decides whether KVM can really boot a guest here (cached per host boot + kernel + QEMU). Does not look at
 * config `accel`: see resolveAccelerator for that.
 */
export async function probeAccelerator(
  config: KataConfig,
  opts: ProbeOptions = {},
): Promise<AccelProbeResult> {
  const log = opts.log ?? logger('hypervisor');
  const { kernel, path: qemu, machine_type } = config.hypervisor;
  const kvmDevice = opts.kvmDevice ?? '/dev/kvm';
  try {
    await access(kvmDevice, constants.R_OK | constants.W_OK);
  } catch (err) {
    return { accel: 'tcg', reason: `${kvmDevice} is not usable: ${(err as Error).message}`, cached: false };
  }
  let key: string;
  try {
    key = await cacheKey(kernel, qemu);
  } catch (err) {
    // Without the kernel there is nothing to probe with; do not cache a verdict about nothing.
    return { accel: 'tcg', reason: `cannot probe KVM: ${(err as Error).message}`, cached: false };
  }
  const cacheFile = opts.cacheFile ?? DEFAULT_ACCEL_CACHE;
  const hit = (await readCache(cacheFile))[key];
  if (hit) return { accel: hit.accel, reason: hit.reason, cached: true };

  const timeoutMs = opts.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
  log.info({ kernel, qemu, timeoutMs }, 'probing whether KVM can boot a guest');
  const { ok, detail } = await bootUnderKvm(qemu, kernel, machine_type, timeoutMs);
  const entry: CacheEntry = {
    accel: ok ? 'kvm' : 'tcg',
    reason: ok ? detail : `falling back to TCG: ${detail}`,
    probedAt: new Date().toISOString(),
  };
  if (!ok) log.warn({ reason: entry.reason }, 'KVM unusable, using TCG');
  try {
    await writeCache(cacheFile, key, entry);
  } catch (err) {
    log.warn({ cacheFile, err: (err as Error).message }, 'cannot cache the accelerator probe result');
  }
  return { accel: entry.accel, reason: entry.reason, cached: false };
}

/** The accelerator a sandbox uses: config `accel` when it is kvm/tcg, the (cached) probe when auto. */
export async function resolveAccelerator(
  config: KataConfig,
  opts: ProbeOptions = {},
): Promise<AccelProbeResult> {
  const a = config.hypervisor.accel;
  if (a === 'kvm' || a === 'tcg') return { accel: a, reason: `configured accel = "${a}"`, cached: false };
  const probe = probeAccelerator(config, opts);
  if (opts.waitMs === undefined) return probe;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const waited = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), opts.waitMs);
  });
  const first = await Promise.race([probe, waited]);
  clearTimeout(timer);
  if (first) return first;
  const log = opts.log ?? logger('hypervisor');
  void probe.then(
    (r) =>
      log.info({ accel: r.accel, reason: r.reason }, 'the KVM probe decided (cached for the next sandboxes)'),
    (e: unknown) => log.warn({ err: (e as Error).message }, 'the KVM probe failed'),
  );
  return {
    accel: 'tcg',
    reason: `the KVM probe had not decided within ${opts.waitMs} ms: this sandbox uses TCG, the probe goes on and caches its verdict for the next ones`,
    cached: false,
  };
}
