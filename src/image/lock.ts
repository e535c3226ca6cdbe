// An exclusive lock, so that two builds into one directory (parallel tests, two kata-ctl runs) do not
// interleave. flock(2): the kernel drops the lock when its holder dies, so there is no stale lock to take over
// (and no race between two waiters taking one over). The holder removes the file when done, so a build leaves
// nothing; a waiter that locked a file removed meanwhile sees that (its inode is no longer at the path) and
// locks the new one instead.
import fs from 'node:fs';
import { pollUntil } from '../common/poll.js';
import { SyscallError, libc } from '../native/libc.js';

const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;

/** The fd of `file`, locked, when this process could take it now; undefined while another holds it. */
function tryLock(file: string): number | undefined {
  let fd: number;
  try {
    // libuv opens with O_CLOEXEC: a build's child processes do not inherit the lock.
    fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
  } catch (e) {
    throw new Error(`opening the lock file ${file}: ${(e as Error).message}`, { cause: e });
  }
  const c = libc();
  if (c.flock(fd, LOCK_EX | LOCK_NB) !== 0) {
    const errno = c.errno();
    fs.closeSync(fd);
    if (errno === EWOULDBLOCK) return undefined;
    throw new SyscallError(`locking ${file}`, errno);
  }
  if (fs.statSync(file, { throwIfNoEntry: false })?.ino === fs.fstatSync(fd).ino) return fd;
  fs.closeSync(fd); // the holder removed it between our open and our lock: try the current file
  return undefined;
}

/** Runs fn while holding `file`; waits (up to timeoutMs) for another holder, calling onWait once. */
export async function withLock<T>(
  file: string,
  timeoutMs: number,
  onWait: () => void,
  fn: () => Promise<T>,
): Promise<T> {
  let fd = tryLock(file);
  if (fd === undefined) {
    onWait();
    fd = await pollUntil(() => tryLock(file), {
      timeoutMs,
      intervalMs: 250,
      what: `the lock ${file} (held by another build)`,
    });
  }
  try {
    return await fn();
  } finally {
    // Removed while still locked, so no one can lock this inode and think it current; closing unlocks.
    fs.rmSync(file, { force: true });
    fs.closeSync(fd);
  }
}
