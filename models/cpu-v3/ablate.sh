#!/usr/bin/env bash
# The short runs that chose cpu-v3's data mix and size (docs/MODEL.md, "Choosing v3's size and
# data mix"). Each trains STEPS optimiser steps of configs/cpu-v3.yaml with one change, its
# cosine schedule ending at STEPS, and validates on the first 300 of CROHME 2013 at the end.
# Run from the repository root; runs go to ~/.cache/hmer/runs/ablate-v3-NAME. A run whose
# folder has a val.csv is kept, so the script can be rerun after an interruption.
#   models/cpu-v3/ablate.sh            # all of them, in order
#   models/cpu-v3/ablate.sh mix-0 ...  # some of them
set -euo pipefail
STEPS=${STEPS:-1000}
RUNS=~/.cache/hmer/runs
INIT=models/cpu-v2/last.pt   # the bundled cpu-v2 epoch 42: the warm-started runs begin there
declare -A SETS=(
  # data mix, warm-started from cpu-v2 (same size): synthetic samples per real one each epoch
  [mix-0]="--init $INIT --set train_extra=[] --set train.lr=0.0002 --set train.extra_ratio=1.0"
  [mix-1]="--init $INIT --set train.extra_ratio=1.0 --set train.lr=0.0002"
  [mix-3]="--init $INIT --set train.extra_ratio=3.0 --set train.lr=0.0002"
  # size, from scratch at ratio 1: cpu-v2's, a wider decoder, a wider or deeper encoder
  [size-v2]="--set init=null --set train.extra_ratio=1.0 --set train.lr=0.0005"
  [size-dec384]="--set init=null --set train.extra_ratio=1.0 --set train.lr=0.0005 --set model.decoder.d_model=384 --set model.decoder.ffn=1536"
  [size-enc24]="--set init=null --set train.extra_ratio=1.0 --set train.lr=0.0005 --set model.encoder.growth=24"
  [size-enc12]="--set init=null --set train.extra_ratio=1.0 --set train.lr=0.0005 --set model.encoder.depth=12"
)
ORDER=(mix-0 mix-1 mix-3 size-v2 size-dec384 size-enc24 size-enc12)
[ $# -gt 0 ] && ORDER=("$@")
for name in "${ORDER[@]}"; do
  out=$RUNS/ablate-v3-$name
  [ -f "$out/val.csv" ] && { echo "$name: kept ($out/val.csv)"; continue; }
  rm -rf "$out"
  # shellcheck disable=SC2086
  .venv/bin/hmer-train --config configs/cpu-v3.yaml --max-steps "$STEPS" --out "$out" --no-progress \
    --set train.keep_validated=false ${SETS[$name]} > "$out.log" 2>&1
  echo "$name: $(tail -n 1 "$out/val.csv")"
done
