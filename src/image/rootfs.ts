// The guest's root filesystem (the initrd's contents): a merged-/usr layout with busybox, node, crun, their
// libraries, the agent bundle with koffi, the kernel modules, and /init, which makes the agent PID 1.
import path from 'node:path';
import { GUEST_MODULES_LOAD_FILE } from '../contract/index.js';
import type { CpioEntry } from './cpio.js';
import { type FileInput, koffiNativePath } from './inputs.js';
import { type CpuFeatures, GUEST_SNAPSHOT_PATH, snapshotEntry } from './snapshot.js';

/** Where the agent lives in the guest; its node_modules holds koffi. */
export const GUEST_AGENT_DIR = '/usr/lib/kata-agent';
export const GUEST_AGENT_FILE = `${GUEST_AGENT_DIR}/kata-agent.mjs`;

export interface RootfsInputs {
  agentBundle: string;
  /** The stripped node binary to ship as /usr/bin/node. */
  node: string;
  /** V8 flags for the agent's node (measured under TCG; see bench/guest-boot.ts). */
  nodeFlags: string[];
  /** The agent's V8 startup snapshot and the CPU features it needs; without one, node loads the bundle. */
  snapshot?: { blob: string; cpu: CpuFeatures };
  crun: FileInput;
  busybox: FileInput;
  /** Applet paths as `busybox --list-full` prints them (usr/bin/ls, sbin/ip, ...). */
  busyboxApplets: string[];
  koffi: FileInput[];
  libraries: FileInput[];
  kernelRelease: string;
  /** lib/modules/<release>/ relative path → file to copy (already decompressed). */
  moduleFiles: Map<string, string>;
  modulesDep: string;
  modulesBuiltin: string;
  bootModules: string[];
}

/** /lib → /usr/lib and friends: the guest uses Debian's merged-/usr layout. */
export function usrMerged(p: string): string {
  return p.replace(/^\/(lib|lib64|bin|sbin)\//, '/usr/$1/');
}

/**
 * koffi's entry point in the guest: its native module as is. koffi's own index.js adds only deprecated aliases,
 * but first loads its installer's helpers (https, crypto, zlib), which costs about a second under TCG.
 */
export function koffiIndex(arch: string = process.arch): string {
  return `'use strict';
// kata-ts guest image: koffi without its installer helpers (see src/image/rootfs.ts).
const native = require('./${koffiNativePath(arch)}');
if (native.version !== require('./package.json').version) throw new Error('Mismatched native Koffi modules');
module.exports = native;
`;
}

export function initScript(nodeFlags: string[], cpu?: CpuFeatures): string {
  const flags = nodeFlags.join(' ');
  const lines = [
    '#!/bin/sh',
    '# kata-ts guest init: the agent replaces this shell and runs as PID 1.',
    'export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root',
  ];
  if (!cpu) {
    lines.push(`exec /usr/bin/node ${flags} ${GUEST_AGENT_FILE}`);
  } else {
    // Shell built-ins only (one exec, for mount): every exec costs ~10 ms under TCG.
    lines.push(
      "# The V8 snapshot loads only where the CPU features match the build host's; elsewhere the bundle.",
      `start="--snapshot-blob ${GUEST_SNAPSHOT_PATH}"`,
      'mount -t proc proc /proc',
      'flags=',
      'while read -r key _ rest; do [ "$key" = flags ] && { flags=" $rest "; break; }; done < /proc/cpuinfo',
      `for f in ${cpu.has.join(' ')}; do case "$flags" in *" $f "*) ;; *) start=${GUEST_AGENT_FILE} ;; esac; done`,
      ...(cpu.lacks.length
        ? [
            `for f in ${cpu.lacks.join(' ')}; do case "$flags" in *" $f "*) start=${GUEST_AGENT_FILE} ;; esac; done`,
          ]
        : []),
      `exec /usr/bin/node ${flags} $start`,
    );
  }
  lines.push('');
  return lines.map((l) => l.replace(/ {2,}/g, ' ')).join('\n');
}

/** The generated files' text, for the image's input hash (the rest of the layout is BUILDER_VERSION's job). */
export function generatedText(nodeFlags: string[], cpu?: CpuFeatures): string {
  return koffiIndex() + initScript(nodeFlags, cpu) + (cpu ? snapshotEntry('', GUEST_AGENT_FILE) : '');
}

export function rootfsEntries(i: RootfsInputs): CpioEntry[] {
  const entries = new Map<string, CpioEntry>();
  const add = (e: CpioEntry) => entries.set(e.path, e);
  const text = (p: string, content: string, mode = 0o644) =>
    add({ type: 'data', path: p, mode, data: Buffer.from(content) });

  for (const d of [
    '/',
    '/dev',
    '/proc',
    '/sys',
    '/run',
    '/etc',
    '/mnt',
    '/usr',
    '/usr/bin',
    '/usr/sbin',
    '/usr/lib',
    '/usr/lib64',
    '/var',
  ]) {
    add({ type: 'dir', path: d, mode: 0o755 });
  }
  add({ type: 'dir', path: '/root', mode: 0o700 });
  add({ type: 'dir', path: '/tmp', mode: 0o1777 });
  add({ type: 'dir', path: '/var/tmp', mode: 0o1777 });
  for (const l of ['bin', 'sbin', 'lib', 'lib64'])
    add({ type: 'symlink', path: `/${l}`, target: `usr/${l}` });
  // The kernel opens /dev/console for init before anything mounts devtmpfs.
  add({ type: 'char', path: '/dev/console', mode: 0o600, major: 5, minor: 1 });
  add({ type: 'char', path: '/dev/null', mode: 0o666, major: 1, minor: 3 });

  text('/etc/passwd', 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
  text('/etc/group', 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n');
  text('/etc/hosts', '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n');
  text('/etc/os-release', 'NAME="kata-ts guest"\nID=kata-ts\n');
  text('/etc/resolv.conf', '');
  text('/init', initScript(i.nodeFlags, i.snapshot?.cpu), 0o755);

  // busybox first, so that real binaries below replace any applet of the same name.
  add({ type: 'file', path: '/usr/bin/busybox', mode: 0o755, source: i.busybox.source });
  for (const applet of i.busyboxApplets) {
    const p = usrMerged(`/${applet}`);
    if (p === '/linuxrc' || p === '/usr/bin/busybox') continue;
    add({ type: 'symlink', path: p, target: path.relative(path.dirname(p), '/usr/bin/busybox') });
  }
  add({ type: 'file', path: '/usr/bin/node', mode: 0o755, source: i.node });
  add({ type: 'file', path: '/usr/bin/crun', mode: 0o755, source: i.crun.source });
  for (const lib of i.libraries)
    add({ type: 'file', path: usrMerged(lib.path), mode: 0o755, source: lib.source });

  add({ type: 'file', path: GUEST_AGENT_FILE, mode: 0o644, source: i.agentBundle });
  if (i.snapshot) add({ type: 'file', path: GUEST_SNAPSHOT_PATH, mode: 0o644, source: i.snapshot.blob });
  for (const f of i.koffi) add({ type: 'file', path: f.path, mode: 0o644, source: f.source });
  text(`${GUEST_AGENT_DIR}/node_modules/koffi/index.js`, koffiIndex());

  const modDir = `/usr/lib/modules/${i.kernelRelease}`;
  for (const [rel, src] of i.moduleFiles)
    add({ type: 'file', path: `${modDir}/${rel}`, mode: 0o644, source: src });
  text(`${modDir}/modules.dep`, i.modulesDep);
  text(`${modDir}/modules.builtin`, i.modulesBuiltin);
  text(
    GUEST_MODULES_LOAD_FILE,
    `# Loaded by kata-agent at boot, in this order.\n${i.bootModules.join('\n')}\n`,
  );

  // Every parent directory must be in the archive before its contents.
  for (const p of [...entries.keys()]) {
    for (let d = path.dirname(p); d !== '/' && !entries.has(d); d = path.dirname(d))
      add({ type: 'dir', path: d, mode: 0o755 });
  }
  return [...entries.values()];
}
