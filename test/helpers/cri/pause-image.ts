// A pause image shaped like registry.k8s.io/pause: one static binary at /pause, USER 65535:65535, nothing else
// (no /etc, no /proc, no /dev: the runtime must make every mount point itself). The binary is built with Go,
// offline, into build/cri/ once per source revision.
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { REPO } from '../containerd.js';
import { writeOciImageTar } from './oci-image.js';

export const PAUSE_IMAGE = 'registry.k8s.io/pause:kata-ts';
const SOURCE = path.join(REPO, 'test/helpers/cri/pause/pause.go');
const CACHE_DIR = path.join(REPO, 'build/cri');
const BUILD_TIMEOUT_MS = 180_000;

const run = promisify(execFile);

/** Builds (or reuses) the static pause binary; returns its path. */
export async function buildPauseBinary(): Promise<string> {
  const src = fs.readFileSync(SOURCE);
  const { stdout: goVersion } = await run('go', ['version'], { timeout: 10_000 });
  const key = crypto.createHash('sha256').update(src).update(goVersion).digest('hex').slice(0, 12);
  const out = path.join(CACHE_DIR, `pause-${key}`);
  if (fs.existsSync(out)) return out;
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kata-ts-pause-'));
  try {
    const built = path.join(tmp, 'pause');
    await run('go', ['build', '-trimpath', '-ldflags=-s -w', '-o', built, SOURCE], {
      timeout: BUILD_TIMEOUT_MS,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: tmp,
        CGO_ENABLED: '0',
        GOOS: 'linux',
        GOARCH: 'amd64',
        GO111MODULE: 'off',
        GOPROXY: 'off',
        GOPATH: path.join(tmp, 'gopath'),
        GOCACHE: path.join(tmp, 'cache'),
      },
    }).catch((e: Error & { stderr?: string }) => {
      throw new Error(`building the pause binary from ${SOURCE}: ${e.stderr || e.message}`, { cause: e });
    });
    // Copy next to it, then rename into place: a concurrent builder of the same key ends with the same file.
    const staged = `${out}.${process.pid}`;
    fs.copyFileSync(built, staged);
    fs.renameSync(staged, out);
    return out;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** Writes the pause image tar into `workDir` and returns its path. */
export async function buildPauseImageTar(workDir: string, name = PAUSE_IMAGE): Promise<string> {
  const bin = await buildPauseBinary();
  return writeOciImageTar(
    path.join(workDir, 'pause-oci.tar'),
    name,
    [{ name: 'pause', type: 'file', mode: 0o755, data: fs.readFileSync(bin) }],
    { User: '65535:65535', Entrypoint: ['/pause'] },
  );
}
