// Security contexts the guest enforces, through containerd's CRI plugin, for the handler `kata` and, as a
// control, `runc`: a seccomp profile from the spec (RuntimeDefault and a Localhost profile file; the kata pod
// turns Kata's default disable_guest_seccomp off by annotation, as a Kata user would), no profile meaning
// unconfined, and a privileged container: every capability, mounts allowed, and with kata (the CRI runtime has
// Kata's privileged_without_host_devices) none of the host's devices, where runc's privileged container sees them.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RuntimeHandler } from '../helpers/cri/containerd-cri.js';
import { type TestPod, runTestPod } from '../helpers/cri/pod.js';
import { useCriSuite } from '../helpers/cri/suite.js';

const suite = useCriSuite();
const cri = () => suite.cri();
const SLEEP = 'while :; do sleep 1; done';
const CAP_SYS_ADMIN = 21n;
/** A host device a privileged runc container gets and a kata one must not (the host's KVM). */
const HOST_DEVICE = '/dev/kvm';

/** Allows everything but mkdir(2)/mkdirat(2), which fail with EPERM: easy to see from a shell. */
const NO_MKDIR_PROFILE = {
  defaultAction: 'SCMP_ACT_ALLOW',
  syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }],
};

function statusField(status: string, field: string): string {
  const m = new RegExp(`^${field}:\\s*(\\S+)$`, 'm').exec(status);
  if (!m?.[1]) throw new Error(`no ${field} in /proc/self/status:\n${status}`);
  return m[1];
}

describe.each<RuntimeHandler>(['kata', 'runc'])('security contexts, handler %s', (handler) => {
  const name = `crisec-${handler}-${process.pid}`;
  let dir = '';
  let pod: TestPod | undefined;
  const ids: Record<string, string> = {};

  const exec = async (cid: string, script: string) => {
    const r = await cri().cri.execSync(cid, ['sh', '-c', script], 30);
    return { out: r.stdout.toString(), err: r.stderr.toString(), code: r.exitCode };
  };

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `kata-ts-${name}-`));
    const profile = path.join(dir, 'no-mkdir.json');
    fs.writeFileSync(profile, JSON.stringify(NO_MKDIR_PROFILE));
    try {
      pod = await runTestPod(
        cri(),
        handler,
        name,
        { securityContext: { privileged: true } },
        { 'io.katacontainers.config.runtime.disable_guest_seccomp': 'false' },
      );
    } catch (e) {
      throw new Error(`RunPodSandbox (${handler}): ${(e as Error).message}\n${suite.log()}`);
    }
    const start = async (cname: string, sc: object) =>
      (await pod!.start(cname, SLEEP, { linux: { securityContext: sc } })).id;
    ids.unconfined = await start('unconfined', {});
    ids.runtimeDefault = await start('runtime-default', { seccomp: { profileType: 'RuntimeDefault' } });
    ids.localhost = await start('localhost', {
      seccomp: { profileType: 'Localhost', localhostRef: profile },
    });
    ids.privileged = await start('privileged', { privileged: true });
  }, 300_000);

  afterAll(async () => {
    await pod?.remove().catch(() => {}); // already removed by the last test unless one failed
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('applies the seccomp profile from the spec; no profile is unconfined', async () => {
    const mode = async (cid: string) =>
      statusField((await exec(cid, 'cat /proc/self/status')).out, 'Seccomp');
    expect(await mode(ids.unconfined!), suite.log()).toBe('0');
    expect(await mode(ids.runtimeDefault!), suite.log()).toBe('2');
    expect(await mode(ids.localhost!), suite.log()).toBe('2');
    // The Localhost profile's rule is enforced: mkdir fails, everything else works.
    const r = await exec(
      ids.localhost!,
      'mkdir /tmp/denied; echo "rc=$?"; touch /tmp/allowed && echo touched',
    );
    expect(r.out).toBe('rc=1\ntouched\n');
    expect(r.err).toMatch(/Operation not permitted/);
    expect((await exec(ids.unconfined!, 'mkdir /tmp/ok && echo made')).out).toBe('made\n');
  });

  it('gives a privileged container every capability and lets it mount', async () => {
    const status = (await exec(ids.privileged!, 'cat /proc/self/status')).out;
    const eff = BigInt(`0x${statusField(status, 'CapEff')}`);
    expect(eff).toBe(BigInt(`0x${statusField(status, 'CapBnd')}`));
    expect((eff >> CAP_SYS_ADMIN) & 1n).toBe(1n);
    expect(statusField(status, 'Seccomp')).toBe('0');
    const m = await exec(
      ids.privileged!,
      'mkdir -p /mnt/t && mount -t tmpfs t /mnt/t && grep -c " /mnt/t " /proc/mounts',
    );
    expect({ out: m.out, code: m.code }, m.err).toEqual({ out: '1\n', code: 0 });
    // Not privileged: no mount.
    expect((await exec(ids.unconfined!, 'mkdir -p /mnt/t && mount -t tmpfs t /mnt/t')).code).not.toBe(0);
  });

  it(`passes the host's devices to a privileged container only without privileged_without_host_devices`, async () => {
    if (!fs.existsSync(HOST_DEVICE)) return; // nothing to leak on this host
    const r = await exec(ids.privileged!, `test -e ${HOST_DEVICE} && echo present || echo absent`);
    // kata's CRI runtime sets privileged_without_host_devices (as Kata's docs ask); runc's does not.
    expect(r.out).toBe(handler === 'kata' ? 'absent\n' : 'present\n');
  });

  it('removing the pod leaves nothing', async () => {
    const left = await pod!.remove();
    pod = undefined;
    expect(left, suite.log()).toEqual([]);
  });
});
