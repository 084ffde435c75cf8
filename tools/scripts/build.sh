#!/usr/bin/env bash
# Configure and build with CMake + Ninja.
#
#   LONGNET_BUILD_DIR   build directory, relative to the repo root (default: build)
#   LONGNET_BUILD_TYPE  CMAKE_BUILD_TYPE (default: Release)
#   LONGNET_CUDA        AUTO | ON | OFF (default: AUTO, i.e. CUDA when a toolkit is found)
# Extra arguments are passed to the cmake configure step, e.g. -DLONGNET_CUDA_ARCHS=90a.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

build="${LONGNET_BUILD_DIR:-build}"
build_type="${LONGNET_BUILD_TYPE:-Release}"
jobs="$(nproc)"

args=(-S "$root" -B "$build" -G Ninja
      -DCMAKE_BUILD_TYPE="$build_type"
      -DLONGNET_CUDA="${LONGNET_CUDA:-AUTO}")

# ccache makes CI rebuilds cheap; it is optional, so only use it when installed.
if command -v ccache >/dev/null 2>&1; then
  export CCACHE_DIR="${CCACHE_DIR:-${HOME:-/tmp}/.cache/ccache}"
  mkdir -p "$CCACHE_DIR"
  args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  echo "[build] using ccache ($CCACHE_DIR)"
fi

echo "[build] configure $build ($build_type, LONGNET_CUDA=${LONGNET_CUDA:-AUTO})"
cmake "${args[@]}" "$@"

echo "[build] build with $jobs jobs"
cmake --build "$build" --parallel "$jobs"
