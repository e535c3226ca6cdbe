// Bad input through containerd: `ctr run` must fail with a message naming the cause, and leave nothing behind.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { useKataSuite } from './shim-suite.js';

const suite = useKataSuite();
const id = (prefix: string) => suite.id(prefix);

async function runWith(conf: string, name: string) {
  const cid = id(name);
  const r = await suite.k.run(['--rm', '--runtime-config-path', conf, suite.k.image, cid, 'true'], {
    timeoutMs: 300_000,
  });
  // ctr run --rm does not remove the container record when the task could not be created.
  await suite.k.ctrd.ctr(['container', 'delete', cid]);
  return r;
}

describe('ctr run with bad input', () => {
  it('names a missing kernel', async () => {
    const conf = suite.k.writeConfig('nokernel.toml', {
      'hypervisor.qemu': { kernel: '/nonexistent/vmlinuz-kata' },
    });
    const r = await runWith(conf, 'nokernel');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('/nonexistent/vmlinuz-kata');
  });

  it('names the file and line of an invalid configuration', async () => {
    const conf = suite.k.writeConfig('bad.toml', { 'hypervisor.qemu': { default_vcpus: 'many' } });
    const r = await runWith(conf, 'badconf');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('bad.toml');
    expect(r.stderr).toMatch(/default_vcpus/);
  });

  it('names a configuration file that does not exist', async () => {
    const r = await runWith('/nonexistent/kata.toml', 'noconf');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('/nonexistent/kata.toml');
  });

  it('reports a guest that dies while booting with its console (kernel panic)', async () => {
    const garbage = path.join(suite.k.confDir, 'garbage-initrd.img');
    fs.writeFileSync(garbage, crypto.randomBytes(4096));
    const conf = suite.k.writeConfig('badinitrd.toml', { 'hypervisor.qemu': { initrd: garbage } });
    const r = await runWith(conf, 'badinitrd');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/the VM exited/);
    expect(r.stderr).toMatch(/Kernel panic/);
  });

  it('reports QEMU failing to start with what QEMU said', async () => {
    const conf = suite.k.writeConfig('badqemu.toml', {
      'hypervisor.qemu': { machine_type: 'no-such-machine' },
    });
    const r = await runWith(conf, 'badqemu');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/QEMU exited/);
    expect(r.stderr).toMatch(/unsupported machine type/);
  });
});
