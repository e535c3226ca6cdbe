#!/usr/bin/env bash
# Assembles kata-deploy's payload from a built tree (scripts/setup.sh: dist/, node_modules/koffi, build/guest):
#   <out>/bin/node, <out>/lib/{dist,node_modules/koffi}, <out>/share/defaults/kata-containers/configuration-qemu.toml
#   (kernel and initrd under /opt/kata), <out>/share/kata-containers/{vmlinuz.container,kata-containers-initrd.img},
#   <out>/containerd/kata-ts.toml, <out>/scripts/kata-deploy.sh. deploy/Dockerfile copies it to /opt/kata-artifacts.
set -euo pipefail
out=${1:?usage: build-payload.sh <out-dir>}
repo=$(cd "$(dirname "$0")/../.." && pwd)
for need in dist/containerd-shim-kata-v2.mjs dist/kata-ctl.mjs node_modules/koffi build/guest/vmlinuz.container \
  build/guest/kata-containers-initrd.img config/configuration-qemu.toml; do
  [ -e "$repo/$need" ] || { echo "build-payload: $repo/$need is missing (run scripts/setup.sh)" >&2; exit 1; }
done
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib/dist" "$out/lib/node_modules" "$out/share/defaults/kata-containers" \
  "$out/share/kata-containers" "$out/containerd" "$out/scripts"
# The node's own Node.js may be missing or older: the runtime brings the one it was built and tested with.
cp "$(readlink -f "$(command -v node)")" "$out/bin/node"
cp "$repo"/dist/*.mjs "$out/lib/dist/"
cp -rL "$repo/node_modules/koffi" "$out/lib/node_modules/koffi"
cp -L "$repo/build/guest/vmlinuz.container" "$repo/build/guest/kata-containers-initrd.img" \
  "$repo/build/guest/manifest.json" "$out/share/kata-containers/"
sed -e 's|^kernel = "/usr/share/kata-containers/|kernel = "/opt/kata/share/kata-containers/|' \
  -e 's|^initrd = "/usr/share/kata-containers/|initrd = "/opt/kata/share/kata-containers/|' \
  "$repo/config/configuration-qemu.toml" >"$out/share/defaults/kata-containers/configuration-qemu.toml"
grep -q '^kernel = "/opt/kata/' "$out/share/defaults/kata-containers/configuration-qemu.toml" ||
  { echo "build-payload: the kernel path in config/configuration-qemu.toml was not rewritten" >&2; exit 1; }
cp "$repo/deploy/containerd/kata-ts.toml" "$out/containerd/"
cp "$repo/deploy/scripts/kata-deploy.sh" "$out/scripts/"
chmod 0755 "$out/scripts/kata-deploy.sh"
echo "$out"
