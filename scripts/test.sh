#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: set-up (packages, npm, bundles, guest image), then
# unit tests and the end-to-end tests in real QEMU VMs through a private containerd.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
echo "test: set-up took $(( $(date +%s) - start )) s" >&2
npx tsc --noEmit -p .
npx biome check src test bench scripts
rc=0
npx vitest run --reporter=default --reporter=json --outputFile=build/test-results.json "$@" || rc=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync("build/test-results.json", "utf8"));
  console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped`);
' || true
echo "test: total $(( $(date +%s) - start )) s" >&2
exit $rc
