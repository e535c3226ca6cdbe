// Many pods on one node, as kubelet starts them when a Deployment scales up: RunPodSandbox, CreateContainer and
// StartContainer for several pods at once through containerd's CRI plugin. With kata each pod is its own VM
// (its own guest kernel boot, seen as a distinct boot_id) and its own shim; all run, answer ExecSync, and their
// parallel removal leaves nothing. runc is the control.
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import type { RuntimeHandler } from '../helpers/cri/containerd-cri.js';
import { type TestPod, runTestPod } from '../helpers/cri/pod.js';
import { useCriSuite } from '../helpers/cri/suite.js';

const suite = useCriSuite();
const cri = () => suite.cri();
const PODS = 4;
const BOOT_ID = '/proc/sys/kernel/random/boot_id';

/** The QEMU processes of a sandbox (QEMU is started with -name sandbox-<id>). */
function qemuOf(sandboxId: string): number[] {
  const pids: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let cmd = '';
    try {
      cmd = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8');
    } catch {
      continue; // exited while we looked
    }
    if (cmd.startsWith('qemu-system') || cmd.includes('/qemu-system')) {
      if (cmd.includes(sandboxId)) pids.push(Number(d));
    }
  }
  return pids;
}

describe.each<RuntimeHandler>(['kata', 'runc'])(`${PODS} pods started in parallel, handler %s`, (handler) => {
  const pods: TestPod[] = [];
  const mains: string[] = [];

  afterAll(async () => {
    await Promise.all(pods.map((p) => p.remove().catch(() => {}))); // the last test removed them unless one failed
  });

  it('every pod runs, each in its own VM (kata) with its own kernel boot', async () => {
    const t0 = Date.now();
    const started = await Promise.allSettled(
      Array.from({ length: PODS }, async (_, i) => {
        const pod = await runTestPod(cri(), handler, `cripar-${handler}-${i}-${process.pid}`);
        pods.push(pod);
        const main = await pod.start('main', 'echo ready; while :; do sleep 1; done');
        return { pod, main: main.id, ms: Date.now() - t0 };
      }),
    );
    const failed = started.filter((s) => s.status === 'rejected').map((s) => String(s.reason));
    expect(failed, suite.log()).toEqual([]);
    const ok = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    console.log(
      `${PODS} pods in parallel (${handler}): each running after ${ok.map((o) => o.ms).join(', ')} ms`,
    );
    mains.push(...ok.map((o) => o.main));
    const bootIds = await Promise.all(
      mains.map(async (cid) => {
        const r = await cri().cri.execSync(cid, ['cat', BOOT_ID], 30);
        expect(r.exitCode, r.stderr.toString()).toBe(0);
        return r.stdout.toString().trim();
      }),
    );
    const host = fs.readFileSync(BOOT_ID, 'utf8').trim();
    if (handler === 'kata') {
      expect(new Set(bootIds).size).toBe(PODS);
      expect(bootIds).not.toContain(host);
      for (const { pod } of ok) expect(qemuOf(pod.id), `QEMU of pod ${pod.id}`).toHaveLength(1);
    } else {
      expect(bootIds).toEqual(Array(PODS).fill(host));
    }
  });

  it('removing them in parallel leaves nothing', async () => {
    const left = (await Promise.all(pods.splice(0).map((p) => p.remove()))).flat();
    expect(left, suite.log()).toEqual([]);
  });
});
