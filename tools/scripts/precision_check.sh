#!/usr/bin/env bash
# bf16 against f32: trains the same config twice on the GPU, once per dtype, from the same seed and
# data, and compares the loss curves (tools/scripts/compare_runs.py).
#   precision_check.sh [CONFIG] [STEPS] [-- extra train options]
# Defaults: configs/longnet-125m.toml, 300 updates of one 32K-token sequence with 30 of warm-up, on
# the token stores of runs/corpus/data (longnet tokenizer train + prepare; see docs/PERFORMANCE.md).
#   LONGNET_BUILD_DIR   build directory (default: build-gpu)
#   RUNS                where the two run directories go (default: runs/precision)
#   DEVICE              training.device (default: cuda)
#   F32_SECONDS         stop the f32 run after this long (default: no limit); it is compared over
#                       the updates it made
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
config="${1:-configs/longnet-125m.toml}"
steps="${2:-300}"
shift $(( $# > 2 ? 2 : $# ))
[[ "${1:-}" == "--" ]] && shift
longnet="${LONGNET_BUILD_DIR:-build-gpu}/tools/longnet"
runs="${RUNS:-runs/precision}"
data="runs/corpus/data"

[[ -x "$longnet" ]] || { echo "precision_check: $longnet not built (tools/scripts/build.sh)" >&2; exit 1; }
for f in train.h5 tokenizer.model; do
  [[ -f "$data/$f" ]] || { echo "precision_check: $data/$f missing: make it with longnet tokenizer train and prepare" >&2; exit 1; }
done

common=(--config "$config" --quiet-config --training.device "${DEVICE:-cuda}" --training.steps "$steps"
        --training.batch_size 1 --training.grad_accum 1 --lr_scheduler.warmup_steps $(( steps / 10 ))
        --training.log_every 1 --training.eval_every 0 --checkpoint.every 0 --metrics.tensorboard false
        --data.train "$data/train.h5" --data.tokenizer "$data/tokenizer.model" "$@")

rm -rf "$runs/bf16" "$runs/f32"
echo "[precision] bf16: $config, $steps updates"
"$longnet" train "${common[@]}" --training.dtype bf16 --checkpoint.dir "$runs/bf16" | tail -n 2
echo "[precision] f32"
if [[ -n "${F32_SECONDS:-}" ]]; then
  # SIGINT makes the trainer save and stop cleanly; metrics.jsonl keeps every update it made.
  timeout -s INT "$F32_SECONDS" "$longnet" train "${common[@]}" --training.dtype f32 --checkpoint.dir "$runs/f32" \
    | tail -n 2 || true
else
  "$longnet" train "${common[@]}" --training.dtype f32 --checkpoint.dir "$runs/f32" | tail -n 2
fi
python3 tools/scripts/compare_runs.py "$runs/bf16" "$runs/f32" --names bf16,f32 --every 10 --window 10 \
  --skip $(( steps / 20 ))
