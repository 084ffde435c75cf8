#!/usr/bin/env bash
# On a GPU machine: build with CUDA, run the whole test suite (GPU tests included), the GPU tests
# again under compute-sanitizer, and the benchmarks. Logs go to $LOG_DIR (default: gpu-logs/).
#   STEPS   which steps to run, any of: build test sanitize bench (default: all four)
#   BENCH   arguments of each `longnet bench` run, separated by ';' (default: gemm; ops)
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export PATH="/usr/local/cuda/bin:$PATH"
build="${LONGNET_BUILD_DIR:-build-gpu}"
logs="${LOG_DIR:-gpu-logs}"
steps="${STEPS:-build test sanitize bench}"
mkdir -p "$logs"
status=0

has() { [[ " $steps " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

if has build; then
  echo "[gpu] build"
  if ! LONGNET_BUILD_DIR="$build" LONGNET_CUDA=ON tools/scripts/build.sh >"$logs/build.log" 2>&1; then
    grep -E "error|Error" "$logs/build.log" | head -40
    exit 1
  fi
fi

if has test; then
  echo "[gpu] tests"
  ctest --test-dir "$build" -j 8 --timeout 900 --output-on-failure >"$logs/ctest.log" 2>&1 || status=1
  grep -E "tests passed|tests failed|\*\*\*Failed|Timeout|Exception" "$logs/ctest.log" | head -60
fi

if has sanitize; then
  echo "[gpu] compute-sanitizer (memcheck) over the GPU tests"
  # API errors are not memory errors: some tests provoke them on purpose (out of memory, a bad
  # device) and check that the framework turns them into exceptions.
  compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 3 --print-limit 20 \
    "$build/tests/framework_tests" --gtest_filter='*Cuda*' >"$logs/sanitizer.log" 2>&1 || status=1
  grep -E "ERROR SUMMARY|PASSED|FAILED|Invalid" "$logs/sanitizer.log" | head -20
fi

if has bench; then
  IFS=';' read -r -a benches <<<"${BENCH:-gemm; ops}"
  for b in "${benches[@]}"; do
    echo "[gpu] longnet bench $b"
    # shellcheck disable=SC2086  # each entry is a list of arguments
    "$build/tools/longnet" bench $b 2>&1 | tee -a "$logs/bench.log" || status=1
  done
fi
exit "$status"
