#!/usr/bin/env bash
# Installs everything kata-ts needs on a fresh Debian 12 machine (as root) and builds it:
# apt packages, npm dependencies, the bundles, and the guest image (kernel + initrd) in build/guest.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(qemu-system-x86 qemu-utils containerd golang-go golang-github-containerd-ttrpc-dev
  golang-github-containerd-containerd-dev busybox-static crun runc cpio zstd lz4 xz-utils kmod e2fsprogs
  iproute2 util-linux binutils containernetworking-plugins)
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
[ -x /usr/lib/qemu/virtiofsd ] || { echo "setup: /usr/lib/qemu/virtiofsd missing (package qemu-system-common)" >&2; exit 1; }

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund >&2
fi
echo "setup: building bundles" >&2
npm run -s build >&2
echo "setup: building the guest image in build/guest" >&2
node dist/kata-ctl.mjs image build --out build/guest >&2
