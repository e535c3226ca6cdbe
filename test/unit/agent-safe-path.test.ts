import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { create } from '@bufbuild/protobuf';
import { afterAll, describe, expect, it } from 'vitest';
import { copyFile } from '../../src/agent/copy-file.js';
import {
  SafePathError,
  checkAbsolute,
  checkId,
  inKataDir,
  mkdirUnder,
  pinUnder,
  resolveExistingUnder,
  resolveUnder,
} from '../../src/agent/safe-path.js';
import { CopyFileRequestSchema } from '../../src/protocols/gen/agent_pb.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kt-safepath-'));
const root = path.join(tmp, 'root');
const outside = path.join(tmp, 'outside');
fs.mkdirSync(path.join(root, 'a/b'), { recursive: true });
fs.mkdirSync(outside);
fs.writeFileSync(path.join(root, 'a/b/file'), 'x');
fs.symlinkSync('b', path.join(root, 'a/rel-ok')); // stays inside
fs.symlinkSync(path.join(root, 'a/b'), path.join(root, 'abs-ok')); // absolute, inside
fs.symlinkSync(outside, path.join(root, 'abs-out'));
fs.symlinkSync('../../outside', path.join(root, 'a/rel-out'));
fs.symlinkSync('loop2', path.join(root, 'loop1'));
fs.symlinkSync('loop1', path.join(root, 'loop2'));
fs.symlinkSync('../..', path.join(root, 'a/up-up')); // resolves to root/.. = tmp

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('inKataDir', () => {
  it("moves the guest Kata dir's paths to an agent's own Kata dir, and nothing else", () => {
    expect(inKataDir('/tmp/k', '/run/kata-containers/sandbox/shm')).toBe('/tmp/k/sandbox/shm');
    expect(inKataDir('/tmp/k', '/run/kata-containers')).toBe('/tmp/k');
    expect(inKataDir('/tmp/k', '/run/kata-containers-evil/x')).toBe('/run/kata-containers-evil/x');
    expect(inKataDir('/tmp/k', '/dev/null')).toBe('/dev/null');
    expect(inKataDir('/run/kata-containers', '/run/kata-containers/x')).toBe('/run/kata-containers/x');
  });
});

describe('resolveUnder', () => {
  it('resolves plain paths, missing tails and symlinks that stay inside the root', () => {
    expect(resolveUnder(root, `${root}/a/b/file`)).toBe(`${root}/a/b/file`);
    expect(resolveUnder(root, `${root}/a/b/new/deeper`)).toBe(`${root}/a/b/new/deeper`);
    expect(resolveUnder(root, `${root}/a/rel-ok/file`)).toBe(`${root}/a/b/file`);
    expect(resolveUnder(root, `${root}/abs-ok/file`)).toBe(`${root}/a/b/file`);
    expect(resolveUnder(root, root)).toBe(root);
    expect(resolveUnder(`${root}/`, `${root}//a/./b/`)).toBe(`${root}/a/b`);
  });

  it('refuses .., relative paths, NUL, paths outside the root and symlink escapes, saying why', () => {
    const cases: [string, RegExp][] = [
      [`${root}/a/../../outside`, /contains '\.\.'/],
      ['a/b', /not absolute/],
      [`${root}/a\0b`, /NUL/],
      [outside, /not under/],
      [`${root}x/a`, /not under/],
      [`${root}/abs-out/f`, /escapes .* through a symlink/],
      [`${root}/a/rel-out`, /escapes/],
      [`${root}/a/up-up/outside`, /escapes/],
      [`${root}/loop1/x`, /too many levels/],
      [`${root}/a/b/file/x`, /not a directory/],
    ];
    for (const [p, re] of cases) {
      expect(() => resolveUnder(root, p), p).toThrowError(SafePathError);
      expect(() => resolveUnder(root, p), p).toThrowError(re);
    }
  });

  it('checks existence when asked', () => {
    expect(() => resolveExistingUnder(root, `${root}/a/nope`)).toThrowError(/does not exist/);
  });
});

describe('pinUnder', () => {
  it('opens the real object and refuses one outside the root', () => {
    const pin = pinUnder(root, `${root}/abs-ok`);
    expect(pin.realPath).toBe(`${root}/a/b`);
    expect(fs.readFileSync(path.join(pin.procPath, 'file'), 'utf8')).toBe('x');
    pin.close();
    expect(() => pinUnder(root, `${root}/abs-out`)).toThrowError(SafePathError);
  });
});

describe('mkdirUnder', () => {
  it('creates missing directories and reports them; refuses to go through an escaping symlink', () => {
    const r = mkdirUnder(root, `${root}/m/n/o`);
    expect(r.created).toEqual([`${root}/m`, `${root}/m/n`, `${root}/m/n/o`]);
    expect(fs.statSync(`${root}/m/n/o`).isDirectory()).toBe(true);
    expect(() => mkdirUnder(root, `${root}/abs-out/x`)).toThrowError(/escapes/);
    expect(fs.existsSync(path.join(outside, 'x'))).toBe(false);
  });
});

describe('ids and container paths', () => {
  it('accepts container-style ids only', () => {
    expect(checkId('abc_1.2-3')).toBe('abc_1.2-3');
    for (const bad of ['', '../x', 'a/b', '-x', 'a b', 'x'.repeat(300)])
      expect(() => checkId(bad)).toThrowError(SafePathError);
    expect(checkAbsolute('/a//b/')).toBe('/a/b');
  });
});

describe('copyFile', () => {
  const shared = path.join(tmp, 'shared');
  const req = (
    p: string,
    data: string,
    extra: Partial<{ fileSize: bigint; offset: bigint; fileMode: number }> = {},
  ) =>
    create(CopyFileRequestSchema, {
      path: p,
      data: Buffer.from(data),
      fileSize: extra.fileSize ?? BigInt(data.length),
      offset: extra.offset ?? 0n,
      fileMode: extra.fileMode ?? 0o100640,
      dirMode: 0o750,
      uid: process.getuid?.() ?? 0,
      gid: process.getgid?.() ?? 0,
    });

  it('writes a file in chunks and shows it only when complete', () => {
    const target = `${shared}/c1/etc/hosts`;
    copyFile(shared, req(target, 'hello ', { fileSize: 11n }));
    expect(fs.existsSync(target)).toBe(false);
    copyFile(shared, req(target, 'world', { fileSize: 11n, offset: 6n }));
    expect(fs.readFileSync(target, 'utf8')).toBe('hello world');
    expect(fs.statSync(target).mode & 0o7777).toBe(0o640);
  });

  it('creates directories and symlinks (the link target is data, not followed)', () => {
    copyFile(shared, req(`${shared}/c1/dir`, '', { fileMode: 0o040755 }));
    expect(fs.statSync(`${shared}/c1/dir`).isDirectory()).toBe(true);
    copyFile(shared, req(`${shared}/c1/link`, '/etc/passwd', { fileMode: 0o120777, fileSize: 11n }));
    expect(fs.readlinkSync(`${shared}/c1/link`)).toBe('/etc/passwd');
    // writing "through" that link replaces the link instead of writing /etc/passwd
    const before = fs.readFileSync('/etc/passwd', 'utf8');
    copyFile(shared, req(`${shared}/c1/link`, 'mine'));
    expect(fs.readFileSync(`${shared}/c1/link`, 'utf8')).toBe('mine');
    expect(fs.readFileSync('/etc/passwd', 'utf8')).toBe(before);
  });

  it('refuses paths outside the shared directory and oversized chunks', () => {
    expect(() => copyFile(shared, req('/etc/x', 'x'))).toThrowError(/not under/);
    expect(() => copyFile(shared, req(`${shared}/../x`, 'x'))).toThrowError(/'\.\.'/);
    expect(() => copyFile(shared, req(`${shared}/c1/big`, 'xyz', { fileSize: 2n }))).toThrowError(
      /beyond the file size/,
    );
    expect(() => copyFile(shared, req(`${shared}/c1/dev`, '', { fileMode: 0o020666 }))).toThrowError(
      /not a file/,
    );
  });
});
