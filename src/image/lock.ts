// An exclusive lock file, so that two builds into one directory (parallel tests, two kata-ctl runs) do not
// interleave. A lock whose holder process is gone is taken over.
import fs from 'node:fs';

function holderAlive(file: string): boolean {
  let pid: number;
  try {
    pid = Number(JSON.parse(fs.readFileSync(file, 'utf8')).pid);
  } catch {
    return true; // being written right now: treat as held
  }
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Runs fn while holding `file`; waits (up to timeoutMs) for another holder, calling onWait once. */
export async function withLock<T>(
  file: string,
  timeoutMs: number,
  onWait: () => void,
  fn: () => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let waited = false;
  for (;;) {
    try {
      fs.writeFileSync(file, JSON.stringify({ pid: process.pid, since: new Date().toISOString() }), {
        flag: 'wx',
      });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST')
        throw new Error(`taking the lock ${file}: ${(e as Error).message}`);
    }
    if (!holderAlive(file)) {
      fs.rmSync(file, { force: true });
      continue;
    }
    if (Date.now() > deadline)
      throw new Error(`waited ${Math.round(timeoutMs / 1000)} s for the lock ${file}; still held`);
    if (!waited) onWait();
    waited = true;
    await new Promise((r) => setTimeout(r, 250));
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(file, { force: true });
  }
}
