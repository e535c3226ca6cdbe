// Compresses the initrd archive into its file, counting sizes and hashing on the way.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { Duplex, PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';

/** Formats the Debian cloud kernel unpacks (CONFIG_RD_GZIP, _ZSTD, _LZ4); `none` is a plain cpio. */
export type Compression = 'none' | 'gzip' | 'zstd' | 'lz4';

export interface CompressedFile {
  size: number;
  sha256: string;
  uncompressedSize: number;
}

function counter(onChunk: (b: Buffer) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      onChunk(chunk);
      cb(null, chunk);
    },
  });
}

/** A compressor as a stream; external tools run as child processes and fail with their stderr. */
function compressor(kind: Compression): { stream: Duplex; done: Promise<void> } {
  switch (kind) {
    case 'none':
      return { stream: new PassThrough(), done: Promise.resolve() };
    case 'gzip':
      return { stream: zlib.createGzip({ level: 6 }), done: Promise.resolve() };
    case 'zstd':
    case 'lz4': {
      // lz4 -l: the kernel only reads the legacy lz4 frame format.
      const [cmd, args] =
        kind === 'zstd' ? ['zstd', ['-q', '-T0', '-10', '-c']] : ['lz4', ['-l', '-9', '-q', '-c']];
      const child = spawn(cmd, args as string[], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      const done = new Promise<void>((resolve, reject) => {
        child.on('error', (e: NodeJS.ErrnoException) =>
          reject(
            new Error(
              e.code === 'ENOENT'
                ? `${cmd} is not installed (Debian package ${cmd})`
                : `${cmd}: ${e.message}`,
            ),
          ),
        );
        child.on('close', (code) =>
          code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${code}: ${stderr.trim()}`)),
        );
      });
      // One duplex from the child's stdin and stdout, for the pipeline.
      return { stream: Duplex.from({ writable: child.stdin, readable: child.stdout }), done };
    }
  }
}

/** Writes `chunks` compressed with `kind` to `file` (through a temporary name); returns sizes and sha256. */
export async function writeCompressed(
  chunks: AsyncIterable<Buffer>,
  kind: Compression,
  file: string,
): Promise<CompressedFile> {
  let uncompressedSize = 0;
  let size = 0;
  const hash = crypto.createHash('sha256');
  const { stream, done } = compressor(kind);
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    await Promise.all([
      pipeline(
        Readable.from(chunks),
        counter((b) => {
          uncompressedSize += b.length;
        }),
        stream,
        counter((b) => {
          size += b.length;
          hash.update(b);
        }),
        fs.createWriteStream(tmp),
      ),
      done,
    ]);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  return { size, sha256: hash.digest('hex'), uncompressedSize };
}
