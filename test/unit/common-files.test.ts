import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pathExists, readFileTail } from '../../src/common/files.js';
import { parseMountInfo } from '../../src/resource/mountinfo.js';
import { guestConsoleTail } from '../../src/runtime/vm-config.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-files-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('readFileTail', () => {
  it('reads only the last bytes, and says when it started mid-file', async () => {
    const f = path.join(tmp, 'log');
    fs.writeFileSync(f, 'a'.repeat(10_000) + 'END');
    expect(await readFileTail(f, 5)).toEqual({ text: 'aaEND', truncated: true });
    expect(await readFileTail(f, 1 << 20)).toMatchObject({ truncated: false });
    await expect(readFileTail(path.join(tmp, 'missing'), 5)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('pathExists is existsSync', async () => {
    expect(await pathExists(tmp)).toBe(true);
    expect(await pathExists(path.join(tmp, 'missing'))).toBe(false);
  });
});

describe('guestConsoleTail', () => {
  it('shows the last lines of a large console log, the panic first, never a cut first line', async () => {
    const dir = path.join(tmp, 'run');
    fs.mkdirSync(dir);
    const lines = Array.from({ length: 5000 }, (_, i) => `boot line ${i}`);
    lines.push('Kernel panic - not syncing: Attempted to kill init!', 'trace 1', 'trace 2');
    fs.writeFileSync(path.join(dir, 'console.log'), lines.join('\n'));
    expect(await guestConsoleTail(dir, 3)).toBe(
      '; guest console: Kernel panic - not syncing: Attempted to kill init! | trace 1 | trace 2',
    );
    expect(await guestConsoleTail(path.join(tmp, 'none'))).toBe('');
  });
});

describe('parseMountInfo', () => {
  it('parses optional fields and unescapes paths', () => {
    const [m] = parseMountInfo(
      '36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n',
    );
    expect(m).toMatchObject({
      id: 36,
      parentId: 35,
      root: '/mnt1',
      mountPoint: '/mnt/with space',
      mountOptions: ['rw', 'noatime'],
      optional: ['master:1'],
      fstype: 'ext3',
      source: '/dev/root',
      superOptions: ['rw', 'errors=continue'],
    });
  });
});
