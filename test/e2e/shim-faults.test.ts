// Faults of a running sandbox, through containerd as a user meets them: the VMM or virtiofsd killed under a
// running container with an exec in flight. A dead VM is every container in it exiting (status 255, as Kata
// reports): containerd gets the exit, the task shows STOPPED, Delete works, and the shim goes once the last task
// is deleted. After each test nothing is left (shim-suite's leftover check).
import { describe, expect, it } from 'vitest';
import { pollUntil } from '../../src/common/poll.js';
import { useKataSuite } from './shim-suite.js';

const suite = useKataSuite();

/** The pid of the sandbox's process named `comm` (qemu or virtiofsd), found through the task's pid (the VMM). */
async function sandboxProcess(cid: string, comm: 'qemu' | 'virtiofsd'): Promise<number> {
  const ls = await suite.k.ctrd.ctr(['task', 'ls']);
  const qemuPid = Number(new RegExp(`^${cid}\\s+(\\d+)\\s+RUNNING`, 'm').exec(ls.stdout)?.[1]);
  expect(qemuPid, suite.explain(ls)).toBeGreaterThan(0);
  if (comm === 'qemu') return qemuPid;
  const { execFileSync } = await import('node:child_process');
  const out = execFileSync('pgrep', ['-f', `^\\S*virtiofsd .*${cid}`], { encoding: 'utf8' })
    .trim()
    .split('\n');
  expect(out[0], `no virtiofsd for ${cid}`).toMatch(/^\d+$/);
  return Number(out[0]);
}

/** A detached `sleep` container with an exec `sleep` running in the guest; `exec` is the exec's ctr call. */
async function runWithExec(cid: string, runArgs: string[], execTimeoutMs: number) {
  const r = await suite.k.run(['-d', ...runArgs, suite.k.image, cid, 'sleep', '300']);
  expect(r.code, suite.explain(r)).toBe(0);
  const exec = suite.k.ctrd.ctr(['task', 'exec', '--exec-id', 'e1', cid, 'sleep', '200'], {
    timeoutMs: execTimeoutMs,
  });
  await pollUntil(
    async () => (await suite.k.ctrd.ctr(['task', 'ps', cid])).stdout.split('\n').length > 2 || undefined,
    { timeoutMs: 30_000, intervalMs: 200, what: `exec e1 of ${cid} to run` },
  ).catch(() => undefined);
  return { exec };
}

/** The exec failed, the task shows STOPPED, Delete reports 255 and the container goes. */
async function expectDeadVmExit(
  cid: string,
  exec: Promise<{ code: number | null; stdout: string; stderr: string }>,
  timeoutMs: number,
): Promise<void> {
  const done = await exec;
  expect(done.code, suite.explain(done)).not.toBe(0);
  await suite.waitTaskStatus(cid, 'STOPPED', timeoutMs);
  const del = await suite.k.ctrd.ctr(['task', 'delete', cid]);
  expect(del.code, suite.explain(del)).toBe(0);
  expect(del.stdout + del.stderr).toMatch(/255/);
  expect((await suite.k.ctrd.ctr(['container', 'delete', cid])).code).toBe(0);
}

describe.each(['qemu', 'virtiofsd'] as const)('kill -9 of %s under a running container', (victim) => {
  it('is an exit of 255 for the container and its exec; Delete works and the shim goes', async () => {
    const cid = suite.id(`kill-${victim}`);
    // The exec is running in the guest before the VM dies.
    const { exec } = await runWithExec(cid, [], 60_000);
    process.kill(await sandboxProcess(cid, victim), 'SIGKILL');
    await expectDeadVmExit(cid, exec, 20_000);
  });
});

describe('a hung VM (QEMU stopped with SIGSTOP) under a running container', () => {
  it('is noticed by the health check: exit 255, Delete works, the VM is killed and nothing is left', async () => {
    const conf = suite.k.writeConfig('watchdog.toml', {
      'agent.kata': { health_check_request_timeout_ms: 3000 },
    });
    const cid = suite.id('hung');
    const { exec } = await runWithExec(cid, ['--runtime-config-path', conf], 90_000);
    const qemu = await sandboxProcess(cid, 'qemu');
    process.kill(qemu, 'SIGSTOP');
    try {
      await expectDeadVmExit(cid, exec, 60_000);
      expect(suite.k.ctrd.readLog()).toMatch(/health checks in a row.*the VM is hung/);
    } finally {
      try {
        process.kill(qemu, 'SIGCONT'); // if the test failed before the runtime killed it
      } catch {
        // gone, as it should be
      }
    }
  });
});
