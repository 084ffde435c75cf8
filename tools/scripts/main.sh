#!/usr/bin/env bash
# The main job: install what is missing, build, then the whole pipeline on the default corpus
# (the Python 3.11 documentation sources):
#   tokenizer train -> prepare -> train configs/quickstart.toml -> eval -> generate
# Everything goes to runs/quickstart/: data/ (tokenizer, token stores), checkpoints, metrics, report.
# About ten minutes on 2 CPU cores once built. Running it again reuses the tokenizer and the token
# stores, and the training run resumes from its newest checkpoint (a finished run is not redone).
#
#   LONGNET_BUILD_DIR   build directory (default: build)
#   LONGNET_MAIN_STEPS  override training.steps (for a quicker look)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

build="${LONGNET_BUILD_DIR:-build}"
data_dir="runs/quickstart/data"
run_dir="runs/quickstart"
config="configs/quickstart.toml"
log() { printf '[main] %s\n' "$*"; }

"$here/setup.sh"
"$here/build.sh"
longnet="$build/tools/longnet"

overrides=()
if [[ -n "${LONGNET_MAIN_STEPS:-}" ]]; then
  # A shorter run keeps the schedule's shape: a tenth of it warms up (the preset's 30 of 300).
  overrides+=(--training.steps "$LONGNET_MAIN_STEPS" --lr_scheduler.warmup_steps $(( LONGNET_MAIN_STEPS / 10 )))
fi
# On a GPU the attention kernels take bf16; the CPU computes in f32.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  overrides+=(--training.dtype bf16)
fi

start=$SECONDS
mkdir -p "$data_dir"
if [[ ! -f "$data_dir/tokenizer.model" ]]; then
  log "training the tokenizer (2000 BPE pieces) on the default corpus"
  "$longnet" tokenizer train --output "$data_dir/tokenizer.model" --vocab-size 2000 --max-pieces 20000
else
  log "reusing $data_dir/tokenizer.model"
fi
if [[ ! -f "$data_dir/train.h5" || ! -f "$data_dir/val.h5" ]]; then
  log "tokenising the corpus into $data_dir/{train,val}.h5"
  "$longnet" prepare --tokenizer "$data_dir/tokenizer.model" --output "$data_dir" --val-fraction 0.03 --no-progress
else
  log "reusing the token stores in $data_dir"
fi

log "training $config into $run_dir"
"$longnet" train --config "$config" --quiet-config "${overrides[@]}"

log "evaluating: perplexity at 512, 2048 and 8192 tokens (trained at 512), passkey grid"
"$longnet" eval "$run_dir" --lengths 512,2048,8192 --windows 8 --passkey --passkey-lengths 256,512 \
  --depths 0,0.5,1 --samples 2 --out "$run_dir/eval.json"

log "generating a sample"
"$longnet" generate "$run_dir" --prompt "The Python" --max-new-tokens 60 --temperature 0.7 --top-k 40 --seed 1 \
  | tee "$run_dir/sample.txt"

log "done in $((SECONDS - start)) s after the build"
log "run directory:   $run_dir/ (step-N/ checkpoints, config.toml, metrics.jsonl, tensorboard/)"
log "loss curves:     $run_dir/report.html"
log "evaluation:      $run_dir/eval.json"
log "sample:          $run_dir/sample.txt"
log "more:            $longnet generate $run_dir --prompt \"...\"   |   $longnet export $run_dir --out exported/"
