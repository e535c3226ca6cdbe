// Build steps: progress lines, errors that name the step, and external commands with useful failures.
import { execFile } from 'node:child_process';

/** One line per step; the CLI prints them to stderr. */
export type Progress = (line: string) => void;

/** A failed build: which step, and what was missing or went wrong. */
export class ImageBuildError extends Error {
  constructor(
    readonly step: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`guest image build failed at step "${step}": ${detail}`, options);
    this.name = 'ImageBuildError';
  }
}

/** Runs one step; any error that does not already name its step is wrapped with this one's name. */
export async function step<T>(name: string, fn: () => Promise<T> | T): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof ImageBuildError) throw e;
    throw new ImageBuildError(name, (e as Error).message ?? String(e), { cause: e });
  }
}

/** Which Debian package provides each tool the builder runs, for "not installed" errors. */
const PACKAGE_OF: Record<string, string> = {
  'apt-get': 'apt',
  'apt-cache': 'apt',
  'dpkg-deb': 'dpkg',
  depmod: 'kmod',
  strip: 'binutils',
  ldd: 'libc-bin',
  zstd: 'zstd',
  lz4: 'lz4',
  xz: 'xz-utils',
};

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a command; a failure says the command, its exit status and the tail of its stderr. */
export function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd: opts.cwd, env: opts.env, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (!err) {
        resolve({ stdout, stderr });
        return;
      }
      const e = err as NodeJS.ErrnoException & { code?: string | number };
      if (e.code === 'ENOENT') {
        const pkg = PACKAGE_OF[cmd];
        reject(new Error(`${cmd} is not installed${pkg ? ` (Debian package ${pkg})` : ''}`));
        return;
      }
      const tail = stderr.trim().split('\n').slice(-5).join(' | ');
      reject(new Error(`\`${cmd} ${args.join(' ')}\` failed (exit ${e.code ?? '?'}): ${tail || e.message}`));
    });
  });
}
