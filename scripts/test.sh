#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: set-up (packages, npm, bundles, guest image), then the
# tiers in order (test/README.md): unit (hermetic), integration (root, this host, no VM), e2e (real QEMU VMs
# through a private containerd, one file at a time), then the template tier: the containerd, CRI and network
# e2e files once more with every sandbox cloned from a VM template (KATA_TS_E2E_TEMPLATE=1,
# test/e2e/shim-fixtures.ts). Every tier runs even when an earlier one failed; the closing line sums them and
# the exit status is non-zero on any failure. Extra arguments go to every tier.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
echo "test: set-up took $(( $(date +%s) - start )) s" >&2
npx tsc --noEmit -p .
npx biome check src test bench scripts
mkdir -p build
rc=0
for tier in unit integration e2e template; do
  t0=$(date +%s)
  rm -f "build/test-results-$tier.json"
  if [ "$tier" = unit ] && [ "$(id -u)" = 0 ]; then
    # Hermetic means any user: as root, the unit tier runs as nobody (no mounts, no root, nothing of /run), with a
    # HOME and report dir of its own; the config loads in memory because node_modules is not nobody's to write.
    out=$(mktemp -d) && chmod 777 "$out"
    HOME="$out" setpriv --reuid=65534 --regid=65534 --clear-groups ./node_modules/.bin/vitest run --project unit \
      --configLoader runner --passWithNoTests --reporter=default --reporter=json \
      --outputFile="$out/report.json" "$@" || rc=1
    [ -f "$out/report.json" ] && cp "$out/report.json" "build/test-results-$tier.json"
    rm -rf "$out"
  elif [ "$tier" = template ]; then
    KATA_TS_E2E_TEMPLATE=1 npx vitest run --project e2e test/e2e/shim-containerd.test.ts test/e2e/cri-pod.test.ts \
      test/e2e/network.test.ts \
      --reporter=default --reporter=json --outputFile="build/test-results-$tier.json" "$@" || rc=1
  else
    npx vitest run --project "$tier" --passWithNoTests --reporter=default --reporter=json \
      --outputFile="build/test-results-$tier.json" "$@" || rc=1
  fi
  echo "test: $tier took $(( $(date +%s) - t0 )) s" >&2
done
node -e '
  const fs = require("fs");
  let passed = 0, failed = 0, skipped = 0;
  for (const tier of ["unit", "integration", "e2e", "template"]) {
    const f = `build/test-results-${tier}.json`;
    // A tier that wrote no report (vitest crashed at start-up) counts as one failure.
    if (!fs.existsSync(f)) { console.error(`test: ${tier} wrote no report`); failed++; continue; }
    const r = JSON.parse(fs.readFileSync(f, "utf8"));
    passed += r.numPassedTests; failed += r.numFailedTests; skipped += r.numPendingTests + r.numTodoTests;
  }
  console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
  if (failed > 0) process.exit(1);
' || rc=1
echo "test: total $(( $(date +%s) - start )) s" >&2
exit $rc
