// Crash-safe file replacement: readers see the old file or the new one, never a torn write.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

/** Writes data to a temp file beside file, fsyncs it, renames it over file and fsyncs the directory. */
export async function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    const fh = await fs.open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw new Error(`write ${file}: ${(err as Error).message}`, { cause: err });
  }
  // The rename is durable only once the directory entry is.
  const dh = await fs.open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** Temp files writeFileAtomic leaves behind when the process dies mid-write. */
export function isAtomicTempName(name: string, of: string): boolean {
  return name.startsWith(`.${of}.tmp-`);
}
