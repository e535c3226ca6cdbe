#!/usr/bin/env bash
# The main job: a busybox container in its own VM through containerd, on a fresh Debian 12 machine (as root).
# Installs and builds everything (scripts/setup.sh), installs kata-ts in Kata's paths (kata-ctl install), uses the
# running containerd or starts one for the demo, imports a locally built busybox image and runs it with kata.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
node dist/kata-ctl.mjs install
kata-ctl check || true

sock=/run/containerd/containerd.sock
started=""
if ! ctr --address "$sock" version >/dev/null 2>&1; then
  echo "demo: starting containerd (log: /var/log/kata-ts-demo-containerd.log)" >&2
  # /usr/local/bin first so containerd finds containerd-shim-kata-v2.
  PATH=/usr/local/bin:$PATH containerd >/var/log/kata-ts-demo-containerd.log 2>&1 &
  started=$!
  trap '[ -n "$started" ] && kill "$started" 2>/dev/null; wait "$started" 2>/dev/null || true' EXIT
  for _ in $(seq 100); do ctr --address "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
fi

image=docker.io/library/busybox:kata-ts
npx esbuild scripts/busybox-image.ts --bundle --platform=node --format=esm --outfile=build/busybox-image.mjs --log-level=warning
node build/busybox-image.mjs build/busybox-oci.tar "$image" >/dev/null
ctr --address "$sock" images import --platform linux/amd64 build/busybox-oci.tar >/dev/null

id="kata-demo-$$"
echo "demo: ctr run --rm --runtime io.containerd.kata.v2 $image $id ..." >&2
ctr --address "$sock" run --rm --runtime io.containerd.kata.v2 "$image" "$id" \
  sh -c 'echo "hello from busybox in a kata-ts VM"; echo "guest kernel: $(uname -r)"; echo "host kernel would be: '"$(uname -r)"'"'
