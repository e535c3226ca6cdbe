// What PID 1 does between the basic mounts and serving: kernel modules, host name, loopback, cgroup2
// controllers; each failure is reported and the agent carries on.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { linkUp, setHostname } from '../native.js';
import type { AgentConfig } from './cmdline.js';
import { VIRTIO_ID_VSOCK, VSOCK_MODULES, hasVirtioDevice, loadKernelModules } from './modules.js';
import { isInitramfsRoot } from './mounts.js';

/** Seconds since the guest kernel booted (CLOCK_MONOTONIC, which is what /proc/uptime counts in a VM). */
export function uptimeSeconds(): number {
  return Number(process.hrtime.bigint() / 1000n) / 1e6;
}

const WANTED_CONTROLLERS = ['cpuset', 'cpu', 'io', 'memory', 'pids'];

/** Delegates the controllers containers need to child cgroups of the root. Returns the ones enabled. */
function enableCgroupControllers(root = '/sys/fs/cgroup'): string[] {
  const available = fs.readFileSync(path.join(root, 'cgroup.controllers'), 'utf8').trim().split(/\s+/);
  const wanted = WANTED_CONTROLLERS.filter((c) => available.includes(c));
  if (wanted.length) {
    try {
      fs.writeFileSync(path.join(root, 'cgroup.subtree_control'), wanted.map((c) => `+${c}`).join(' '));
    } catch (e) {
      throw new Error(`enabling cgroup controllers ${wanted.join(',')} in ${root}: ${(e as Error).message}`);
    }
  }
  return fs
    .readFileSync(path.join(root, 'cgroup.subtree_control'), 'utf8')
    .trim()
    .split(/\s+/)
    .filter(Boolean);
}

export interface InitReport {
  mounted: string[];
  modules: string[];
  /** Time spent loading them (the largest part of init under TCG). */
  modulesMs: number;
  hostname: string;
  cgroupControllers: string[];
  loopback: boolean;
  /** True when / is the initramfs (rootfs), where pivot_root cannot work: runtimes must use --no-pivot. */
  initramfsRoot: boolean;
  /** What went wrong but did not stop the agent. */
  problems: string[];
}

/** Everything PID 1 does before serving, after mountBasics(): modules, host name, loopback, cgroups. */
export function initGuest(config: AgentConfig, modules: string[], mounted: string[]): InitReport {
  const problems: string[] = [];
  let loadedMods: string[] = [];
  const t0 = performance.now();
  try {
    loadedMods = loadKernelModules(modules.filter((m) => !VSOCK_MODULES.includes(m)));
    const vsock = modules.filter((m) => VSOCK_MODULES.includes(m));
    if (vsock.length && hasVirtioDevice(VIRTIO_ID_VSOCK)) loadedMods.push(...loadKernelModules(vsock));
  } catch (e) {
    problems.push((e as Error).message);
  }
  const modulesMs = Math.round(performance.now() - t0);
  try {
    setHostname(config.hostname);
  } catch (e) {
    problems.push((e as Error).message);
  }
  let loopback = false;
  try {
    linkUp('lo');
    loopback = true;
  } catch (e) {
    problems.push((e as Error).message);
  }
  let cgroupControllers: string[] = [];
  try {
    cgroupControllers = enableCgroupControllers();
  } catch (e) {
    problems.push((e as Error).message);
  }
  return {
    mounted,
    modules: loadedMods,
    modulesMs,
    hostname: os.hostname(),
    cgroupControllers,
    loopback,
    initramfsRoot: isInitramfsRoot(),
    problems,
  };
}
