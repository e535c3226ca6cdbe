// Async file probes for the shim's paths, where sync fs calls would block every other request: existence, and
// the last bytes of a file read at an offset through a file handle (a log such as the guest console can be
// large, and only its end matters to an error message).
import { access, open } from 'node:fs/promises';

/** As fs.existsSync: false on any error (EACCES included). */
export function pathExists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}

export interface FileTail {
  text: string;
  /** The tail starts mid-file: its first line is likely cut. */
  truncated: boolean;
}

/** Reads up to `bytes` from the end of `file`; throws what open/stat/read throw (ENOENT included). */
export async function readFileTail(file: string, bytes: number): Promise<FileTail> {
  const fh = await open(file, 'r');
  try {
    const { size } = await fh.stat();
    const start = Math.max(0, size - bytes);
    const buf = Buffer.alloc(size - start);
    // The file may shrink between stat and read (a restarted VM truncates its console log): keep what was read.
    const { bytesRead } = await fh.read(buf, 0, buf.length, start);
    return { text: buf.subarray(0, bytesRead).toString('utf8'), truncated: start > 0 };
  } finally {
    await fh.close();
  }
}
