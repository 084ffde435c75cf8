#!/usr/bin/env bash
# Set up dependencies, build, and run the whole test suite with ctest.
# Uses the same LONGNET_* variables as build.sh; extra arguments go to ctest (e.g. -R tensor).
# Exits with ctest's status.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

build="${LONGNET_BUILD_DIR:-build}"

echo "[test] setup"
"$here/setup.sh"
echo "[test] build"
"$here/build.sh"

# A stale log from an earlier run must not decide the GPU summary below.
log="$build/Testing/Temporary/LastTest.log"
rm -f "$log"

echo "[test] ctest"
status=0
# --no-tests=error: an empty test list is a broken build, not a pass.
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" --timeout 900 \
      --no-tests=error "$@" || status=$?

# GPU tests print "GPU tests skipped" when no CUDA device is usable; say so at the end,
# where nobody can miss it.
if [[ ! -f "$log" ]]; then
  echo "[test] GPU tests: unknown (no ctest log at $log)"
elif grep -q "GPU tests skipped" "$log"; then
  echo "[test] GPU tests: skipped (no CUDA device)"
else
  echo "[test] GPU tests: ran"
fi

exit "$status"
