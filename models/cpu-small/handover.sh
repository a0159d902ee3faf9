#!/usr/bin/env bash
# End-of-session handover for the cpu-small run (run from the repository root, in the background):
#   nohup models/cpu-small/handover.sh > runs/handover.log 2>&1 &
# Asks hmer-train to stop at its next epoch end (runs/cpu-small/stop), waits for it to exit,
# picks the input scale on all of CROHME 2013 (greedy ExpRate) and, if the run now reads 2013 better
# than the bundled model, slims runs/cpu-small/last.pt over models/cpu-small/last.pt, appends the new
# log rows, bundles the model at that scale and evaluates it. Figures land in $OUT (default
# runs/handover) for docs/MODEL.md.
set -uo pipefail
out=${OUT:-runs/handover}
bin=.venv/bin
data=../shared/data/crohme
run=runs/cpu-small
mkdir -p "$out"

if pgrep -f "bin/hmer-train.*cpu-small" > /dev/null; then
  touch "$run/stop"
  echo "asked the run to stop after its current epoch ($(date))"
  while pgrep -f "bin/hmer-train.*cpu-small" > /dev/null; do sleep 10; done
fi
rm -f "$run/stop"  # a run that ended on its own leaves it unread
ckpt_step=$($bin/python -c "import torch; print(torch.load('$run/last.pt', map_location='cpu', weights_only=False)['step'])")
echo "stopped ($(date)); last.pt step $ckpt_step; last validation: $(tail -n1 "$run/val.csv")"
if [[ "$ckpt_step" != "$(tail -n1 "$run/val.csv" | cut -d, -f1)" && -z "${FORCE:-}" ]]; then
  echo "$run/last.pt (step $ckpt_step) is not the last validated checkpoint (was the run killed?):" \
       "nothing replaced; FORCE=1 hands it over with that validation figure"
  exit 1
fi

# Input scale: the highest greedy ExpRate on all of CROHME 2013, from the stopped run's checkpoint
# (its moving-average weights, which is what gets exported).
best=1.0 best_rate=-1
for s in 1.0 1.15 1.25 1.4; do
  $bin/hmer-eval "$run/last.pt" $data/crohme-2013.tar.gz --input-scale $s --json > "$out/scale_$s.json" 2> "$out/scale_$s.err"
  rate=$($bin/python -c "import json; print(json.load(open('$out/scale_$s.json'))['exprate'])")
  echo "input scale $s: 2013 greedy ExpRate $rate"
  if $bin/python -c "import sys; sys.exit(not $rate > $best_rate)"; then best=$s best_rate=$rate; fi
done

# The checkpoint replaces the committed one and the bundle only if it reads all of 2013 better than
# the bundled model did (model.json's evaluation; FORCE=1 overrides): a run can get worse (session
# 7's epoch 22), and the training log's first-300 figure moves by a point or two between epochs
# by noise alone (epochs 26-28: 15.00, 13.67, 13.33), too little to decide on.
bundled=$($bin/python -c "import json; e=json.load(open('hmer_runtime/models/default/model.json')).get('evaluation', {}); \
print(e.get('crohme-2013 onnx fp32 beam 1', {}).get('exprate', -1))")
if [[ -z "${FORCE:-}" ]] && ! $bin/python -c "import sys; sys.exit(not $best_rate > $bundled)"; then
  echo "2013 greedy ExpRate $best_rate (input scale $best) is not above the bundled model's $bundled:" \
       "nothing replaced (runs/cpu-small kept; FORCE=1 to hand over anyway)"
  exit 1
fi

$bin/python -c "from hmer_train.checkpoint import slim_checkpoint as s; s('$run/last.pt', 'models/cpu-small/last.pt')"
for f in log.csv val.csv; do
  max=$(tail -n1 "models/cpu-small/$f" | cut -d, -f1)
  awk -F, -v m="$max" 'NR > 1 && $1 + 0 > m + 0' "$run/$f" >> "models/cpu-small/$f"
done
echo "bundling at input scale $best ($(date))"
make bundle-model INPUT_SCALE=$best > "$out/bundle.log" 2>&1 || { echo "bundle-model failed: $out/bundle.log"; exit 1; }
$bin/python -m benchmarks.evaluate_model hmer_runtime/models/default --checkpoint models/cpu-small/last.pt \
  > "$out/evaluate.md" 2> "$out/evaluate.err"
for split in 2013 2014; do
  $bin/hmer-eval hmer_runtime/models/default $data/crohme-$split.tar.gz --beam 10 --json \
    --out "$out/beam10_$split.jsonl" > "$out/beam10_$split.json"
done
$bin/python -m benchmarks.error_breakdown "$out/beam10_2014.jsonl" > "$out/breakdown.md"
$bin/python -m benchmarks.robustness --limit 200 > "$out/robustness.md"
$bin/hmer-run hmer_runtime/samples/*.png examples/sample.png examples/photo.jpg > "$out/samples.txt"
echo "done ($(date)); update docs/MODEL.md, BENCHMARKS.md and this folder's README from $out"
