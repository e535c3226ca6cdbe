// Volumes and security contexts as kubelet hands them to containerd's CRI plugin, for the handler `kata` and,
// as a control, `runc`: a memory-backed emptyDir shared by two containers (with kata a tmpfs in the VM, as Kata's
// ephemeral storage: nothing reaches the host), the pod's /dev/shm shared by its containers, a configMap volume
// (read-only, updated on the host by kubelet's atomic symlink swap), a hostPath dir both ways, run-as user and
// groups, capabilities, no_new_privs, a namespaced sysctl, and a container OOM-killed at its memory limit
// (ContainerStatus reason OOMKilled). One pod per handler; removing it leaves nothing.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pollUntil } from '../../src/common/poll.js';
import type { RuntimeHandler } from '../helpers/cri/containerd-cri.js';
import { type TestPod, runTestPod } from '../helpers/cri/pod.js';
import { useCriSuite } from '../helpers/cri/suite.js';

const suite = useCriSuite();
const cri = () => suite.cri();
const SLEEP = 'while :; do sleep 1; done';

/** kubelet's layout of a pod's volumes: <pods>/<uid>/volumes/kubernetes.io~<kind>/<name>. */
function volumeDir(root: string, uid: string, kind: string, name: string): string {
  const d = path.join(root, 'pods', uid, 'volumes', `kubernetes.io~${kind}`, name);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

/** A configMap as kubelet's atomic writer lays it out: <ts>/<key>, ..data -> <ts>, <key> -> ..data/<key>. */
function writeConfigMap(dir: string, key: string, value: string, generation: number): void {
  const ts = `..2026_12_04_00_00_0${generation}`;
  fs.mkdirSync(path.join(dir, ts));
  fs.writeFileSync(path.join(dir, ts, key), value);
  fs.symlinkSync(ts, path.join(dir, '..data_tmp'));
  const old = fs.existsSync(path.join(dir, '..data')) ? fs.readlinkSync(path.join(dir, '..data')) : undefined;
  fs.renameSync(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
  if (!fs.existsSync(path.join(dir, key))) fs.symlinkSync(`..data/${key}`, path.join(dir, key));
  if (old) fs.rmSync(path.join(dir, old), { recursive: true });
}

describe.each<RuntimeHandler>(['kata', 'runc'])('volumes and security contexts, handler %s', (handler) => {
  const name = `crivol-${handler}-${process.pid}`;
  const uid = `uid-${name}`;
  let root = '';
  let memDir = '';
  let cfgDir = '';
  let hostDir = '';
  let pod: TestPod | undefined;
  let writer = '';
  let reader = '';

  const exec = async (cid: string, script: string) => {
    const r = await cri().cri.execSync(cid, ['sh', '-c', script], 30);
    return { out: r.stdout.toString(), err: r.stderr.toString(), code: r.exitCode };
  };

  beforeAll(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), `kata-ts-${name}-`));
    memDir = volumeDir(root, uid, 'empty-dir', 'cache');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m,mode=0777', 'tmpfs', memDir]);
    fs.chownSync(memDir, 0, 2000); // kubelet's fsGroup
    cfgDir = volumeDir(root, uid, 'configmap', 'settings');
    writeConfigMap(cfgDir, 'greeting', 'v1', 1);
    hostDir = path.join(root, 'host-data');
    fs.mkdirSync(hostDir);
    try {
      pod = await runTestPod(cri(), handler, name, { sysctls: { 'kernel.shm_rmid_forced': '1' } });
    } catch (e) {
      throw new Error(`RunPodSandbox (${handler}): ${(e as Error).message}\n${suite.log()}`);
    }
    const mounts = [
      { containerPath: '/cache', hostPath: memDir },
      { containerPath: '/etc/settings', hostPath: cfgDir, readonly: true },
      { containerPath: '/data', hostPath: hostDir },
    ];
    writer = (await pod.start('writer', SLEEP, { mounts })).id;
    reader = (
      await pod.start('reader', SLEEP, {
        mounts,
        linux: {
          securityContext: {
            runAsUser: { value: 1000 },
            runAsGroup: { value: 3000 },
            supplementalGroups: [2000, 4000],
            capabilities: { dropCapabilities: ['ALL'], addCapabilities: ['NET_BIND_SERVICE'] },
            noNewPrivs: true,
          },
        },
      })
    ).id;
  });

  afterAll(async () => {
    await pod?.remove().catch(() => {}); // already removed by the last test unless one failed
    if (memDir) execFileSync('umount', ['-l', memDir]);
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it("shares a memory-backed emptyDir between the pod's containers (kata: a tmpfs in the VM)", async () => {
    expect(await exec(writer, 'echo hello > /cache/note && grep " /cache " /proc/mounts')).toMatchObject({
      code: 0,
      out: expect.stringMatching(/^\S+ \/cache tmpfs /),
    });
    // The reader (uid 1000, fsGroup 2000 among its groups) reads it and can write there too.
    const r = await exec(
      reader,
      'cat /cache/note; stat -c %g /cache; echo more > /cache/from-reader && echo ok',
    );
    expect(r, r.err).toMatchObject({ code: 0, out: 'hello\n2000\nok\n' });
    // Kata keeps the volume in the guest's memory, as Kata does; runc's is the host tmpfs itself.
    expect(fs.readdirSync(memDir).sort()).toEqual(handler === 'kata' ? [] : ['from-reader', 'note']);
  });

  it("shares the pod's /dev/shm between its containers", async () => {
    expect((await exec(writer, 'echo shm > /dev/shm/seg')).code).toBe(0);
    expect(await exec(reader, 'cat /dev/shm/seg; grep " /dev/shm " /proc/mounts')).toMatchObject({
      code: 0,
      out: expect.stringMatching(/^shm\n\S+ \/dev\/shm tmpfs /),
    });
  });

  it('mounts a configMap read-only and shows an update made on the host', async () => {
    expect(await exec(reader, 'cat /etc/settings/greeting')).toMatchObject({ code: 0, out: 'v1' });
    const w = await exec(writer, 'touch /etc/settings/x; echo rc=$?');
    expect(w.out).toBe('rc=1\n');
    expect(w.err).toMatch(/Read-only file system/);
    writeConfigMap(cfgDir, 'greeting', 'v2', 2);
    const seen = await pollUntil(
      async () => ((await exec(reader, 'cat /etc/settings/greeting')).out === 'v2' ? true : undefined),
      { timeoutMs: 20_000, intervalMs: 500, what: 'the updated configMap in the container' },
    );
    expect(seen).toBe(true);
  });

  it('shares a hostPath dir both ways', async () => {
    expect((await exec(writer, 'echo from-container > /data/out')).code).toBe(0);
    expect(fs.readFileSync(path.join(hostDir, 'out'), 'utf8')).toBe('from-container\n');
    fs.writeFileSync(path.join(hostDir, 'in'), 'from-host\n');
    expect(await exec(writer, 'cat /data/in')).toMatchObject({ code: 0, out: 'from-host\n' });
  });

  it("runs as the security context's user and groups, with its capabilities, no_new_privs and the pod's sysctl", async () => {
    const r = await exec(
      reader,
      'id -u; id -g; id -G; grep -E "^(CapBnd|CapEff|NoNewPrivs):" /proc/self/status; cat /proc/sys/kernel/shm_rmid_forced',
    );
    expect(r.code, r.err).toBe(0);
    const [u, g, groups, ...rest] = r.out.trim().split('\n');
    expect([u, g]).toEqual(['1000', '3000']);
    expect(groups?.split(' ')).toEqual(expect.arrayContaining(['2000', '4000']));
    expect(rest.map((l) => l.replace(/\s+/g, ' '))).toEqual([
      'CapEff: 0000000000000000',
      'CapBnd: 0000000000000400',
      'NoNewPrivs: 1',
      '1',
    ]);
    // The writer, with no security context, is root with the default capabilities.
    expect((await exec(writer, 'id -u')).out).toBe('0\n');
  });

  it('reports OOMKilled for a container killed at its memory limit', async () => {
    const p = pod!;
    // dd's 96 MiB buffer, filled from /dev/zero, cannot fit in a 32 MiB limit: the kernel kills dd (pid 1).
    const { id } = await p.start('hog', 'exec dd if=/dev/zero of=/dev/null bs=96M count=1', {
      linux: { resources: { memoryLimitInBytes: 32 * 1024 * 1024 } },
    });
    const st = await pollUntil(
      async () => {
        const s = (await cri().cri.containerStatus(id)).status;
        return s.state === 'CONTAINER_EXITED' && s.reason ? s : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250, what: `container ${id} to exit` },
    ).catch((e: Error) => {
      throw new Error(`${e.message}\n${suite.log()}`);
    });
    expect({ reason: st.reason, exitCode: st.exitCode }, suite.log()).toEqual({
      reason: 'OOMKilled',
      exitCode: 137,
    });
  });

  it('removing the pod leaves nothing', async () => {
    const left = await pod!.remove();
    pod = undefined;
    expect(left, suite.log()).toEqual([]);
  });
});
