import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SandboxCgroup, type SandboxCgroupOptions, detectCgroupVersion } from '../../src/resource/index.js';

// Needs root. Cgroups are made under this process's own cgroup so no limit it lives under is escaped.
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

function sleeper(): number {
  const c = spawn('sleep', ['60'], { stdio: 'ignore' });
  children.push(c);
  return c.pid!;
}

async function roundTrip(sid: string, opts: SandboxCgroupOptions): Promise<void> {
  const cg = new SandboxCgroup(sid, { nestUnderSelf: true, ...opts });
  await cg.create();
  await cg.create();
  const { dirs } = await cg.paths();
  expect(dirs.length).toBeGreaterThan(0);
  for (const d of dirs) expect(d.endsWith(`/kata_${sid}`) && fs.existsSync(d)).toBe(true);

  const pid = sleeper();
  await cg.addProcess(pid);
  expect(await cg.pids()).toEqual([pid]);
  expect(fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8')).toContain(`/kata_${sid}`);

  // While the process lives the cgroup cannot go; the error names what is inside.
  await expect(cg.remove({ timeoutMs: 100 })).rejects.toThrow(
    new RegExp(`kata_${sid} .*pids inside: ${pid}`),
  );
  await cg.remove({ kill: true });
  for (const d of dirs) expect(fs.existsSync(d)).toBe(false);
  await new SandboxCgroup(sid, { nestUnderSelf: true, ...opts }).remove();
  await expect(cg.addProcess(pid)).rejects.toThrow(
    new RegExp(`add pid ${pid} to cgroup .*kata_${sid} of sandbox ${sid}`),
  );
}

describe('SandboxCgroup', () => {
  it('detects the host cgroup version', async () => {
    expect(['v1', 'v2']).toContain(await detectCgroupVersion());
  });

  it('creates, adds a process, refuses to remove while busy, removes (host default hierarchy)', async () => {
    await roundTrip(`cgtest${process.pid}`, {});
  });

  it.skipIf(!fs.existsSync('/sys/fs/cgroup/unified/cgroup.procs'))(
    'works on a hybrid host cgroup2 tree too',
    async () => {
      await roundTrip(`cgtest2${process.pid}`, { mountRoot: '/sys/fs/cgroup/unified', version: 'v2' });
    },
  );

  it("makes the spec's cgroupsPath with its missing parents (a v1 cpuset level each), removes only the leaf", async () => {
    const sid = `cgpath${process.pid}`;
    const top = `kubepods-test-${process.pid}`;
    const cg = new SandboxCgroup(sid, { path: `${top}/besteffort/pod-x/${sid}` });
    const { dirs, version } = await cg.paths();
    try {
      await cg.create();
      const pid = sleeper();
      await cg.addProcess(pid); // a v1 cpuset leaf with empty cpus/mems would refuse it
      expect(await cg.pids()).toEqual([pid]);
      expect(fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8')).toContain(`/${top}/besteffort/pod-x/${sid}`);
      await cg.remove({ kill: true });
      for (const d of dirs) {
        expect(fs.existsSync(d)).toBe(false);
        expect(fs.existsSync(path.dirname(d))).toBe(true); // the pod's cgroup is kubelet's
      }
      if (version === 'v1') expect(dirs.some((d) => d.includes('/cpuset/'))).toBe(true);
    } finally {
      for (const d of dirs) {
        const base = d.slice(0, d.indexOf(`/${top}/`) + top.length + 1);
        for (const p of [d, path.dirname(d), path.dirname(path.dirname(d)), base])
          if (fs.existsSync(p)) fs.rmdirSync(p);
      }
    }
  });
});
