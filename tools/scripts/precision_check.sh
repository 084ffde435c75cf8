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
#                       the updates it made. A run that was stopped resumes where it stopped when
#                       the script is run again with RUNS_KEEP=1.
#   F32_ARGS            extra train options of the f32 run only, e.g. "--nproc-per-node 2
#                       --parallelism.sequence_parallel 2": the same maths split over two GPUs
#   RUNS_KEEP           1: keep the run directories (a finished run is not repeated, a stopped one
#                       resumes); default: start both afresh
#   ONLY                bf16 or f32: make that run only, and compare with the other's directory
#                       from an earlier run (on another machine, say); implies RUNS_KEEP=1
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

only="${ONLY:-}"
[[ -z "$only" || "$only" == bf16 || "$only" == f32 ]] || { echo "precision_check: ONLY='$only': bf16 or f32" >&2; exit 1; }
[[ "${RUNS_KEEP:-0}" == 1 || -n "$only" ]] || rm -rf "$runs/bf16" "$runs/f32"
# A run that already saved its final step, or that ONLY leaves out, is not run.
finished() { [[ -d "$runs/$1/step-$steps" || ( -n "$only" && "$only" != "$1" ) ]]; }

if ! finished bf16; then
  echo "[precision] bf16: $config, $steps updates"
  "$longnet" train "${common[@]}" --training.dtype bf16 --checkpoint.dir "$runs/bf16" | tail -n 2
fi
if ! finished f32; then
  echo "[precision] f32"
  # shellcheck disable=SC2206  # F32_ARGS is a list of options
  f32=("$longnet" train "${common[@]}" --training.dtype f32 --checkpoint.dir "$runs/f32" ${F32_ARGS:-})
  if [[ -n "${F32_SECONDS:-}" ]]; then
    # SIGINT (to the whole process group: every rank) makes the trainer save and stop cleanly;
    # metrics.jsonl keeps every update it made, and a later run resumes from the saved step.
    timeout -s INT "$F32_SECONDS" "${f32[@]}" | tail -n 2 || true
  else
    "${f32[@]}" | tail -n 2
  fi
fi
python3 tools/scripts/compare_runs.py "$runs/bf16" "$runs/f32" --names bf16,f32 --every 10 --window 10 \
  --skip $(( steps / 20 ))
