// CopyFile: the host writes files (hostname, resolv.conf, ConfigMaps...) into the shared directory when
// there is no shared filesystem. Everything lands under the shared directory, however the host names it;
// large files come in chunks (offset) and appear atomically (rename) once complete.
import fs from 'node:fs';
import path from 'node:path';
import type { CopyFileRequest } from '../protocols/gen/agent_pb.js';
import { invalidArgument } from './errors.js';
import { SafePathError, checkAbsolute, isWithin, mkdirUnder, resolveUnder } from './safe-path.js';

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const S_IFREG = 0o100000;
const DIR_MASK = 0o777;
const FILE_MASK = 0o7777;

/** Writes one CopyFile request under `root` (the guest's shared containers directory). */
export function copyFile(root: string, req: CopyFileRequest): void {
  const p = checkAbsolute(req.path, 'copy-file path');
  const lexRoot = path.posix.normalize(root).replace(/(.)\/$/, '$1');
  if (!isWithin(lexRoot, p) || p === lexRoot)
    throw new SafePathError(`copy-file path ${req.path} is not under ${lexRoot}`);
  if (req.offset < 0n || req.fileSize < 0n)
    throw invalidArgument(`copy-file ${req.path}: negative offset or size`);
  fs.mkdirSync(lexRoot, { recursive: true, mode: 0o755 });

  // The parent is resolved (symlinks may not leave the root); the leaf is never followed.
  const parent = mkdirUnder(
    lexRoot,
    path.posix.dirname(p),
    req.dirMode & DIR_MASK,
    'copy-file parent directory',
  ).path;
  fs.chownSync(parent, req.uid, req.gid);
  const target = path.join(parent, path.posix.basename(p));
  if (!isWithin(fs.realpathSync(lexRoot), target))
    throw new SafePathError(`copy-file path ${req.path} escapes ${lexRoot}`);

  const type = req.fileMode & S_IFMT;
  if (type !== 0 && type !== S_IFREG && type !== S_IFDIR && type !== S_IFLNK) {
    throw invalidArgument(
      `copy-file ${req.path}: file mode 0${req.fileMode.toString(8)} is not a file, directory or symlink`,
    );
  }
  if (type === S_IFDIR) {
    const st = lstatOrUndefined(target);
    if (st && !st.isDirectory()) fs.rmSync(target, { force: true });
    mkdirUnder(lexRoot, p, req.fileMode & DIR_MASK, 'copy-file directory');
    fs.chmodSync(target, req.fileMode & FILE_MASK);
    fs.chownSync(target, req.uid, req.gid);
    return;
  }
  if (req.offset === 0n) fs.rmSync(target, { recursive: true, force: true });
  if (type === S_IFLNK) {
    fs.symlinkSync(Buffer.from(req.data).toString(), target);
    fs.lchownSync(target, req.uid, req.gid);
    return;
  }
  const end = req.offset + BigInt(req.data.length);
  if (end > req.fileSize) {
    throw invalidArgument(
      `copy-file ${req.path}: chunk ends at ${end}, beyond the file size ${req.fileSize}`,
    );
  }
  const tmp = `${target}.tmp`;
  // the temporary name must be resolved the same careful way: never follow a planted symlink
  resolveUnder(lexRoot, tmp, 'copy-file temporary file');
  const flags =
    fs.constants.O_RDWR |
    fs.constants.O_CREAT |
    fs.constants.O_NOFOLLOW |
    (req.offset === 0n ? fs.constants.O_TRUNC : 0);
  const fd = fs.openSync(tmp, flags, req.fileMode & FILE_MASK);
  try {
    fs.writeSync(fd, req.data, 0, req.data.length, Number(req.offset));
    if (BigInt(fs.fstatSync(fd).size) !== req.fileSize) return; // more chunks to come
    fs.fchmodSync(fd, req.fileMode & FILE_MASK);
    fs.fchownSync(fd, req.uid, req.gid);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, target);
}

function lstatOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(p);
  } catch {
    return undefined;
  }
}
