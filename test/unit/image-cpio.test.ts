import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeCompressed } from '../../src/image/compress.js';
import { type CpioEntry, cpioChunks } from '../../src/image/cpio.js';
import { rootfsEntries, usrMerged } from '../../src/image/rootfs.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cpio-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function archive(entries: CpioEntry[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of cpioChunks(entries)) parts.push(c);
  return Buffer.concat(parts);
}

describe('cpio newc writer', () => {
  const src = path.join(tmp, 'src.bin');
  fs.writeFileSync(src, Buffer.from('hello, initrd\n'));
  const entries: CpioEntry[] = [
    { type: 'file', path: '/usr/bin/hello', mode: 0o755, source: src },
    { type: 'dir', path: '/usr', mode: 0o755 },
    { type: 'dir', path: '/usr/bin', mode: 0o755 },
    { type: 'symlink', path: '/bin', target: 'usr/bin' },
    { type: 'data', path: '/etc/x', mode: 0o600, data: Buffer.from('abc') },
    { type: 'dir', path: '/etc', mode: 0o755 },
    { type: 'char', path: '/dev/console', mode: 0o600, major: 5, minor: 1 },
    { type: 'dir', path: '/dev', mode: 0o755 },
  ];

  it('makes an archive that cpio(1) lists and extracts, with parents first', async () => {
    const buf = await archive(entries);
    expect(buf.length % 4).toBe(0);
    const listing = execFileSync('cpio', ['-it', '--quiet'], { input: buf, encoding: 'utf8' })
      .trim()
      .split('\n');
    expect(listing).toEqual(['bin', 'dev', 'dev/console', 'etc', 'etc/x', 'usr', 'usr/bin', 'usr/bin/hello']);
    const out = path.join(tmp, 'out');
    fs.mkdirSync(out);
    execFileSync('cpio', ['-id', '--quiet', '--no-absolute-filenames', '--nonmatching', 'dev/console'], {
      input: buf,
      cwd: out,
    });
    expect(fs.readFileSync(path.join(out, 'usr/bin/hello'), 'utf8')).toBe('hello, initrd\n');
    expect(fs.statSync(path.join(out, 'usr/bin/hello')).mode & 0o777).toBe(0o755);
    expect(fs.readlinkSync(path.join(out, 'bin'))).toBe('usr/bin');
    expect(fs.readFileSync(path.join(out, 'etc/x'), 'utf8')).toBe('abc');
  });

  it('is reproducible', async () => {
    expect((await archive(entries)).equals(await archive(entries))).toBe(true);
  });

  it('names the file that cannot be read', async () => {
    await expect(
      archive([{ type: 'file', path: '/x', mode: 0o644, source: path.join(tmp, 'missing') }]),
    ).rejects.toThrow(/adding \/x to the initrd: cannot read .*missing/);
  });

  it('compresses with gzip and leaves no temporary file on failure', async () => {
    const file = path.join(tmp, 'a.img');
    const r = await writeCompressed(cpioChunks(entries), 'gzip', file);
    expect(r.size).toBe(fs.statSync(file).size);
    expect(
      execFileSync('sh', ['-c', `gzip -dc ${file} | cpio -it --quiet | wc -l`], { encoding: 'utf8' }).trim(),
    ).toBe('8');
    const bad = path.join(tmp, 'b.img');
    await expect(
      writeCompressed(
        cpioChunks([{ type: 'file', path: '/x', mode: 0o644, source: path.join(tmp, 'missing') }]),
        'gzip',
        bad,
      ),
    ).rejects.toThrow(/cannot read/);
    expect(fs.readdirSync(tmp).filter((f) => f.startsWith('b.img'))).toEqual([]);
  });
});

describe('guest rootfs layout', () => {
  it('maps library paths into merged /usr and lists every parent directory', () => {
    expect(usrMerged('/lib/x86_64-linux-gnu/libc.so.6')).toBe('/usr/lib/x86_64-linux-gnu/libc.so.6');
    expect(usrMerged('/lib64/ld-linux-x86-64.so.2')).toBe('/usr/lib64/ld-linux-x86-64.so.2');
    const file = { path: '/lib/x86_64-linux-gnu/libz.so.1', source: '/dev/null', size: 0, sha256: '' };
    const entries = rootfsEntries({
      agentBundle: '/dev/null',
      node: '/dev/null',
      nodeFlags: ['--max-semi-space-size=16'],
      snapshot: undefined,
      crun: { ...file, path: '/usr/bin/crun' },
      busybox: { ...file, path: '/usr/bin/busybox' },
      busyboxApplets: ['bin/sh', 'sbin/modprobe', 'linuxrc'],
      koffi: [],
      libraries: [file],
      kernelRelease: '6.1.0-1-cloud-amd64',
      moduleFiles: new Map([['kernel/fs/overlayfs/overlay.ko', '/dev/null']]),
      modulesDep: 'kernel/fs/overlayfs/overlay.ko:\n',
      modulesBuiltin: '',
      bootModules: ['overlay'],
    });
    const byPath = new Map(entries.map((e) => [e.path, e]));
    for (const e of entries) {
      for (let d = path.dirname(e.path); d !== '/'; d = path.dirname(d))
        expect(byPath.get(d)?.type, `${d} of ${e.path}`).toBe('dir');
    }
    expect(byPath.get('/usr/bin/sh')).toEqual({ type: 'symlink', path: '/usr/bin/sh', target: 'busybox' });
    expect(byPath.get('/usr/sbin/modprobe')).toEqual({
      type: 'symlink',
      path: '/usr/sbin/modprobe',
      target: '../bin/busybox',
    });
    expect(byPath.has('/linuxrc')).toBe(false);
    expect(byPath.get('/usr/lib/x86_64-linux-gnu/libz.so.1')?.type).toBe('file');
    const init = byPath.get('/init');
    expect(init?.type === 'data' && init.data.toString()).toMatch(
      /exec \/usr\/bin\/node --max-semi-space-size=16 \/usr\/lib\/kata-agent\/kata-agent.mjs/,
    );
    const conf = byPath.get('/etc/modules-load.d/kata-agent.conf');
    expect(conf?.type === 'data' && conf.data.toString()).toMatch(/^overlay$/m);
  });
});

describe('agent snapshot start', () => {
  it('splits the build host CPU flags V8 cares about', async () => {
    const { hostCpuFeatures, V8_CPU_FLAGS } = await import('../../src/image/snapshot.js');
    const f = hostCpuFeatures('processor\t: 0\nflags\t\t: fpu pni sse4_2 avx avx2 xsave\n');
    expect(f.has).toEqual(['pni', 'sse4_2', 'avx', 'avx2', 'xsave']);
    expect([...f.has, ...f.lacks].sort()).toEqual([...V8_CPU_FLAGS].sort());
  });

  it('/init uses the snapshot only when the guest CPU matches, else the bundle', async () => {
    const { initScript } = await import('../../src/image/rootfs.js');
    const script = initScript([], { has: ['avx2'], lacks: ['bmi2'] });
    expect(script).toMatch(/^start="--snapshot-blob \/usr\/lib\/kata-agent\/kata-agent.blob"$/m);
    expect(script).toMatch(
      /for f in avx2; do case "\$flags" in \*" \$f "\*\) ;; \*\) start=\/usr\/lib\/kata-agent\/kata-agent.mjs/,
    );
    expect(script).toMatch(
      /for f in bmi2; do case "\$flags" in \*" \$f "\*\) start=\/usr\/lib\/kata-agent\/kata-agent.mjs/,
    );
    expect(script).toMatch(/^exec \/usr\/bin\/node \$start$/m);
    // The CPU check, run by sh against a fake cpuinfo (everything but the mount and the exec).
    const check = script
      .split('\n')
      .filter((l) => !l.startsWith('mount ') && !l.startsWith('exec '))
      .join('\n')
      .replace('/proc/cpuinfo', '"$CPUINFO"');
    const cpuinfo = path.join(tmp, 'cpuinfo');
    const run = (flags: string) => {
      fs.writeFileSync(cpuinfo, `processor\t: 0\nflags\t\t: ${flags}\n`);
      return execFileSync('sh', ['-c', `${check}\necho "$start"`], {
        env: { CPUINFO: cpuinfo },
        encoding: 'utf8',
      }).trim();
    };
    expect(run('fpu avx2 sse')).toBe('--snapshot-blob /usr/lib/kata-agent/kata-agent.blob');
    expect(run('fpu sse')).toBe('/usr/lib/kata-agent/kata-agent.mjs');
    expect(run('fpu avx2 bmi2')).toBe('/usr/lib/kata-agent/kata-agent.mjs');
  });
});
