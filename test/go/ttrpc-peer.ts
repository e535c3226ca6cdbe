// Builds the Go ttrpc peer (test/go/ttrpc-peer) from Debian's Go packages, offline, and caches the binary
// under build/go/ keyed by a hash of its source and the Go version, so reruns skip the build.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The repository root: the nearest folder above this module holding package.json (works when bundled too). */
function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
  return dir;
}
const repo = repoRoot();
export const PEER_SOURCE_DIR = path.join(repo, 'test/go/ttrpc-peer');
const GOPATH = '/usr/share/gocode';

/** The `go` binary's version line, or undefined when Go is not installed. */
export async function goVersion(): Promise<string | undefined> {
  try {
    return (await run('go', ['version'])).stdout.trim();
  } catch {
    return undefined;
  }
}

/** build/go in the checkout, or a per-user temp dir when the checkout is not ours to write (the unit tier as nobody). */
function peerCacheDir(): string {
  const dir = path.join(repo, 'build/go');
  for (let d = dir; ; d = path.dirname(d)) {
    if (fs.existsSync(d)) {
      try {
        fs.accessSync(d, fs.constants.W_OK);
        return dir;
      } catch {
        return path.join(os.tmpdir(), `kata-ts-go-${process.getuid?.() ?? 'user'}`);
      }
    }
  }
}

/**
 * Returns the path of the built peer, building it when the cached one does not match the source.
 * Returns undefined when `go` is missing; throws (with the compiler's output) when the build fails.
 */
export async function buildTtrpcPeer(): Promise<string | undefined> {
  const version = await goVersion();
  if (!version) return undefined;
  const hash = crypto.createHash('sha256').update(version);
  for (const name of fs.readdirSync(PEER_SOURCE_DIR).sort()) {
    hash.update(name).update(fs.readFileSync(path.join(PEER_SOURCE_DIR, name)));
  }
  const outDir = peerCacheDir();
  const out = path.join(outDir, `ttrpc-peer-${hash.digest('hex').slice(0, 16)}`);
  if (fs.existsSync(out)) return out;
  fs.mkdirSync(outDir, { recursive: true });
  // Build to a private name and rename, so parallel test workers never run a half-written binary.
  const tmp = `${out}.tmp-${process.pid}`;
  const env = {
    ...process.env,
    GOPATH,
    GO111MODULE: 'off',
    GOPROXY: 'off',
    GOFLAGS: '',
    GOCACHE: process.env.GOCACHE ?? path.join(outDir, 'cache'),
  };
  try {
    await run('go', ['build', '-o', tmp, '.'], { cwd: PEER_SOURCE_DIR, env, maxBuffer: 16 << 20 });
    fs.renameSync(tmp, out);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    const err = e as Error & { stderr?: string };
    throw new Error(`building the Go ttrpc peer in ${PEER_SOURCE_DIR} failed: ${err.stderr || err.message}`);
  }
  return out;
}

/** Starts `ttrpc-peer server <socket>` and resolves once it prints "ready". Kill it with stopPeer. */
export function startPeerServer(binary: string, socket: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, ['server', socket], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout.includes('ready\n')) resolve(child);
    });
    child.once('error', (e) => reject(new Error(`starting the Go ttrpc server ${binary}: ${e.message}`)));
    child.once('exit', (code, sig) =>
      reject(new Error(`Go ttrpc server on ${socket} exited early (${code ?? sig}): ${stderr.trim()}`)),
    );
  });
}

/** Stops a peer started by startPeerServer and waits until it has exited. */
export async function stopPeer(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
  await exited;
  clearTimeout(timer);
}

/** Runs the peer in a one-shot mode (client, bench) and returns its stdout. */
export async function runPeer(binary: string, args: string[], timeoutMs = 120_000): Promise<string> {
  try {
    return (await run(binary, args, { timeout: timeoutMs, maxBuffer: 16 << 20 })).stdout;
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(`ttrpc-peer ${args.join(' ')} failed: ${err.stderr || err.message}`);
  }
}
