#!/usr/bin/env bash
# Regenerates src/protocols/gen from the .proto files. Kata's and ttrpc's live in protos/;
# containerd's come from Debian's golang-github-containerd-containerd-dev (gogo options stripped).
set -euo pipefail
cd "$(dirname "$0")/.."
gocode=/usr/share/gocode/src/github.com/containerd
[ -d "$gocode/containerd/api" ] || { echo "gen-protos: install golang-github-containerd-containerd-dev (apt-get install -y golang-github-containerd-containerd-dev)" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp -r protos/kata protos/ttrpc "$work/"
for f in containerd/runtime/v2/task/shim.proto containerd/api/types/mount.proto containerd/api/types/task/task.proto \
         containerd/api/types/metrics.proto containerd/api/events/task.proto containerd/api/services/ttrpc/events/v1/events.proto \
         containerd/pkg/runtimeoptions/v1/api.proto cgroups/stats/v1/metrics.proto cgroups/v2/stats/metrics.proto; do
  mkdir -p "$work/cd/github.com/containerd/$(dirname "$f")"
  sed -E -e '/gogoproto\/gogo.proto|protobuf\/plugin\/fieldpath.proto/d' \
         -e 's/\[\(gogoproto[^]]*\]//g' -e '/^\s*option \((gogoproto|containerd\.plugin)[^;]*;/d' \
         "$gocode/$f" > "$work/cd/github.com/containerd/$f"
done
cat > "$work/buf.yaml" <<'YAML'
version: v2
modules:
  - path: kata
  - path: ttrpc
  - path: cd
YAML
cat > "$work/buf.gen.yaml" <<YAML
version: v2
plugins:
  - local: $PWD/node_modules/.bin/protoc-gen-es
    out: $PWD/src/protocols/gen
    opt: [target=ts, import_extension=js]
YAML
rm -rf src/protocols/gen
(cd "$work" && "$OLDPWD/node_modules/.bin/buf" generate)
echo "generated: $(find src/protocols/gen -name '*.ts' | wc -l) files"
