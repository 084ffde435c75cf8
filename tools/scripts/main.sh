#!/usr/bin/env bash
# The main job: set up, build, then run the end-to-end pipeline.
# For now only the program's help is shown; prepare corpus -> train -> generate comes later.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

build="${LONGNET_BUILD_DIR:-build}"

"$here/setup.sh"
"$here/build.sh"

"$build/tools/longnet" --help
echo "[main] end-to-end job (prepare corpus -> train -> generate) is not wired up yet"
