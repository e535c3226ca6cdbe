#!/usr/bin/env bash
# kata-deploy for kata-ts: `install` puts the runtime from the payload onto a node and registers it with
# containerd's CRI plugin; `cleanup` undoes exactly what install did (recorded in /opt/kata/.kata-deploy-changes).
# Runs in the kata-deploy DaemonSet's pod with the node's paths under $KATA_TS_HOST_ROOT (default /host), or on
# a node directly with KATA_TS_HOST_ROOT=/.
#   KATA_TS_HOST_ROOT           the node's root as this script sees it
#   KATA_TS_PAYLOAD             the payload (deploy/scripts/build-payload.sh), default: this script's parent dir
#   KATA_TS_RESTART_CONTAINERD  true (default): restart containerd in the host's namespaces; false: do not
#   NODE_NAME                   label (unlabel at cleanup) this node katacontainers.io/kata-runtime=true
set -euo pipefail

ROOT=${KATA_TS_HOST_ROOT:-/host}
PAYLOAD=${KATA_TS_PAYLOAD:-$(cd "$(dirname "$0")/.." && pwd)}
RESTART=${KATA_TS_RESTART_CONTAINERD:-true}
PREFIX=/opt/kata
CONTAINERD_CONF=/etc/containerd/config.toml
DROPIN_GLOB=/etc/containerd/conf.d/*.toml
DROPIN=/etc/containerd/conf.d/kata-ts.toml
SHIM_LINK=/usr/local/bin/containerd-shim-kata-v2
CHANGES=$PREFIX/.kata-deploy-changes
LABEL=katacontainers.io/kata-runtime

# The glob as a literal in sed patterns (it holds * and .).
DROPIN_GLOB_RE=$(printf '%s' "$DROPIN_GLOB" | sed 's/[][\.*^$|]/\\&/g')

say() { echo "kata-deploy: $*" >&2; }
die() { say "error: $*"; exit 1; }
host() { echo "${ROOT%/}$1"; }

restart_containerd() {
  [ "$RESTART" = true ] || { say "not restarting containerd (KATA_TS_RESTART_CONTAINERD=$RESTART)"; return 0; }
  nsenter --target 1 --mount --uts --ipc --net --pid -- systemctl restart containerd ||
    die "restarting containerd on the node failed"
  say "containerd restarted"
}

label_node() {
  [ -n "${NODE_NAME:-}" ] || return 0
  command -v kubectl >/dev/null || die "NODE_NAME is set but kubectl is missing: cannot label node $NODE_NAME"
  kubectl label node "$NODE_NAME" "$@" --overwrite >/dev/null || die "labelling node $NODE_NAME ($*) failed"
}

# imports must be a top-level key, so it goes before the first table; an existing one-line imports gains the glob.
register_dropin_dir() {
  local conf changes
  conf=$(host "$CONTAINERD_CONF")
  changes=$(host "$CHANGES")
  if [ ! -e "$conf" ]; then
    mkdir -p "$(dirname "$conf")"
    printf 'version = 2\nimports = ["%s"]\n' "$DROPIN_GLOB" >"$conf"
    echo "created-config" >>"$changes"
  elif grep -qF "\"$DROPIN_GLOB\"" "$conf"; then
    : # already imported
  elif grep -qE '^[[:space:]]*imports[[:space:]]*=' "$conf"; then
    grep -qE '^[[:space:]]*imports[[:space:]]*=[[:space:]]*\[[^]]*\][[:space:]]*$' "$conf" ||
      die "$CONTAINERD_CONF has a multi-line imports array: add \"$DROPIN_GLOB\" to it yourself"
    sed -i -E "s|^([[:space:]]*imports[[:space:]]*=[[:space:]]*\[)|\1\"$DROPIN_GLOB\", |" "$conf"
    sed -i -E 's|, \]|]|' "$conf"
    echo "added-import" >>"$changes"
  else
    grep -qE '^[[:space:]]*version[[:space:]]*=[[:space:]]*2' "$conf" ||
      die "$CONTAINERD_CONF is not a version 2 config: drop-ins (imports) need version = 2"
    sed -i -E "0,/^[[:space:]]*version[[:space:]]*=.*/s||&\nimports = [\"${DROPIN_GLOB//\//\\/}\"]|" "$conf"
    echo "added-imports-line" >>"$changes"
  fi
}

unregister_dropin_dir() {
  local conf changes
  conf=$(host "$CONTAINERD_CONF")
  changes=$(host "$CHANGES")
  [ -e "$changes" ] || return 0
  if grep -qx created-config "$changes"; then
    rm -f "$conf"
  elif grep -qx added-imports-line "$changes"; then
    sed -i "\|^imports = \[\"$DROPIN_GLOB_RE\"\]$|d" "$conf"
  elif grep -qx added-import "$changes"; then
    sed -i -E "s|\"$DROPIN_GLOB_RE\", ?||" "$conf"
  fi
}

install_runtime() {
  local need
  for need in bin/node lib/dist/containerd-shim-kata-v2.mjs lib/dist/kata-ctl.mjs lib/node_modules/koffi \
    share/defaults/kata-containers/configuration-qemu.toml share/kata-containers/vmlinuz.container \
    share/kata-containers/kata-containers-initrd.img containerd/kata-ts.toml; do
    [ -e "$PAYLOAD/$need" ] || die "the payload $PAYLOAD lacks $need (build it with deploy/scripts/build-payload.sh)"
  done
  [ -d "$ROOT" ] || die "the node's root $ROOT does not exist (KATA_TS_HOST_ROOT)"
  # QEMU and virtiofsd are the node's (Debian: qemu-system-x86, qemu-system-common), as the configuration says.
  for need in /usr/bin/qemu-system-x86_64 /usr/lib/qemu/virtiofsd; do
    [ -e "$(host "$need")" ] || say "warning: $need is missing on the node: sandboxes will not start until it is installed"
  done

  # A fresh copy beside the old one, then swapped in, so a failed copy leaves the running install alone.
  local dest staged
  dest=$(host "$PREFIX")
  staged="$dest.new"
  rm -rf "$staged"
  mkdir -p "$staged/bin"
  cp -a "$PAYLOAD/bin/node" "$staged/bin/node"
  cp -a "$PAYLOAD/lib" "$PAYLOAD/share" "$staged/"
  for exe in containerd-shim-kata-v2 kata-ctl; do
    printf '#!/bin/sh\nexec %s/bin/node %s/lib/dist/%s.mjs "$@"\n' "$PREFIX" "$PREFIX" "$exe" >"$staged/bin/$exe"
    chmod 0755 "$staged/bin/$exe"
  done
  ln -sf configuration-qemu.toml "$staged/share/defaults/kata-containers/configuration.toml"
  # What an earlier install changed outside /opt/kata is still to be undone at cleanup: keep the record.
  [ -e "$(host "$CHANGES")" ] && cp "$(host "$CHANGES")" "$staged/${CHANGES##*/}"
  rm -rf "$dest.old"
  if [ -e "$dest" ]; then mv "$dest" "$dest.old"; fi
  mv "$staged" "$dest"
  rm -rf "$dest.old"
  touch "$(host "$CHANGES")"
  say "installed $PREFIX"

  mkdir -p "$(dirname "$(host "$SHIM_LINK")")"
  ln -sfn "$PREFIX/bin/containerd-shim-kata-v2" "$(host "$SHIM_LINK")"
  mkdir -p "$(dirname "$(host "$DROPIN")")"
  cp "$PAYLOAD/containerd/kata-ts.toml" "$(host "$DROPIN")"
  register_dropin_dir
  say "registered runtime handler kata ($DROPIN)"
  restart_containerd
  label_node "$LABEL=true"
}

cleanup_runtime() {
  label_node "$LABEL-"
  unregister_dropin_dir
  rm -f "$(host "$DROPIN")"
  rmdir "$(dirname "$(host "$DROPIN")")" 2>/dev/null || true
  [ "$(readlink "$(host "$SHIM_LINK")" 2>/dev/null)" = "$PREFIX/bin/containerd-shim-kata-v2" ] && rm -f "$(host "$SHIM_LINK")"
  rm -rf "$(host "$PREFIX")"
  say "removed kata-ts from the node"
  restart_containerd
}

case "${1:-}" in
install) install_runtime ;;
cleanup) cleanup_runtime ;;
*) die "usage: $0 install|cleanup" ;;
esac
