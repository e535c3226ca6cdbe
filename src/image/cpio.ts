// A cpio "newc" archive writer (what the kernel unpacks as an initramfs), reproducible: fixed mtime and owner.
import fs from 'node:fs';

export type CpioEntry =
  | { type: 'dir'; path: string; mode: number }
  | { type: 'file'; path: string; mode: number; source: string }
  | { type: 'data'; path: string; mode: number; data: Buffer }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char'; path: string; mode: number; major: number; minor: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

function pad4(n: number): Buffer {
  return Buffer.alloc((4 - (n % 4)) % 4);
}

function header(
  name: string,
  f: { ino: number; mode: number; nlink: number; size: number; rdevMajor?: number; rdevMinor?: number },
): Buffer {
  const nameBuf = Buffer.from(`${name}\0`);
  const fields = [
    f.ino,
    f.mode,
    0, // uid
    0, // gid
    f.nlink,
    0, // mtime: fixed, so that equal inputs make equal archives
    f.size,
    0,
    0, // dev major/minor
    f.rdevMajor ?? 0,
    f.rdevMinor ?? 0,
    nameBuf.length,
    0, // check
  ];
  const head = Buffer.from(`070701${fields.map(hex8).join('')}`, 'latin1');
  return Buffer.concat([head, nameBuf, pad4(head.length + nameBuf.length)]);
}

/** Archive path of an absolute guest path ("usr/bin/node"; "." for the root). */
function archiveName(p: string): string {
  const rel = p.replace(/^\/+/, '');
  return rel === '' ? '.' : rel;
}

/**
 * Yields the archive in chunks. Entries are written sorted by path so that each directory precedes what it
 * holds; a file's size is read when it is written (a file that vanished is an error naming it).
 */
export async function* cpioChunks(entries: CpioEntry[]): AsyncGenerator<Buffer> {
  const sorted = [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  let ino = 1;
  for (const e of sorted) {
    const name = archiveName(e.path);
    switch (e.type) {
      case 'dir':
        yield header(name, { ino: ino++, mode: S_IFDIR | e.mode, nlink: 2, size: 0 });
        break;
      case 'symlink': {
        const target = Buffer.from(e.target);
        yield header(name, { ino: ino++, mode: S_IFLNK | 0o777, nlink: 1, size: target.length });
        yield Buffer.concat([target, pad4(target.length)]);
        break;
      }
      case 'char':
        yield header(name, {
          ino: ino++,
          mode: S_IFCHR | e.mode,
          nlink: 1,
          size: 0,
          rdevMajor: e.major,
          rdevMinor: e.minor,
        });
        break;
      case 'data':
        yield header(name, { ino: ino++, mode: S_IFREG | e.mode, nlink: 1, size: e.data.length });
        yield Buffer.concat([e.data, pad4(e.data.length)]);
        break;
      case 'file': {
        let size: number;
        try {
          size = fs.statSync(e.source).size;
        } catch (err) {
          throw new Error(
            `adding ${e.path} to the initrd: cannot read ${e.source}: ${(err as Error).message}`,
          );
        }
        yield header(name, { ino: ino++, mode: S_IFREG | e.mode, nlink: 1, size });
        let written = 0;
        for await (const chunk of fs.createReadStream(e.source, { highWaterMark: 1 << 20 })) {
          written += (chunk as Buffer).length;
          yield chunk as Buffer;
        }
        if (written !== size)
          throw new Error(`adding ${e.path} to the initrd: ${e.source} changed while being read`);
        yield pad4(size);
        break;
      }
    }
  }
  yield header('TRAILER!!!', { ino: 0, mode: 0, nlink: 1, size: 0 });
}
