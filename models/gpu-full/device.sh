#!/usr/bin/env bash
# Runs on a lent GPU machine (the `device` tool), from the repository root, with the CROHME
# archives carried in datasets/crohme/ and the wheels the image lacks in .whl/ (README.md here).
#
#   device.sh start EPOCHS    set up and start a run of EPOCHS epochs in the background (it
#                             outlives the call; models/gpu-full/probe.py measures the step rate)
#   device.sh wait SECONDS    follow the run for up to SECONDS; copy its logs and weights to $OUT
#   device.sh bench           latency of the bundled model: PyTorch eager on CUDA vs ONNX Runtime
set -euo pipefail
RUN=/tmp/hmer-run
OUT=${OUT:-/tmp/out}
mkdir -p "$RUN" "$OUT"
export HMER_CACHE=/tmp/hmer-cache PYTHONUNBUFFERED=1

setup() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  # The project's packages by their import names (pyproject maps export/ and benchmarks/).
  ln -sfn "$PWD/hmer_runtime" /tmp/site/hmer_runtime; ln -sfn "$PWD/hmer_train" /tmp/site/hmer_train
  ln -sfn "$PWD/export" /tmp/site/hmer_export; ln -sfn "$PWD/benchmarks" /tmp/site/hmer_bench
  export PYTHONPATH=/tmp/site
}

collect() {  # logs, and the run's newest weights as a slim checkpoint in 15 MB parts
  cp "$RUN"/train.log "$OUT"/ 2>/dev/null || true
  cp runs/gpu-full/log.csv runs/gpu-full/val.csv "$OUT"/ 2>/dev/null || true
  if [ -f runs/gpu-full/last.pt ]; then
    python3 -c "from hmer_train.checkpoint import slim_checkpoint as s; s('runs/gpu-full/last.pt', '$RUN/slim.pt')"
    split -b 15M -d "$RUN/slim.pt" "$OUT/slim.pt.part"
  fi
}

setup
case "$1" in
start)
  python3 -c "import torch, onnxruntime as ort, onnx; print('torch', torch.__version__, 'cuda', torch.version.cuda,
torch.cuda.get_device_name(0)); print('onnxruntime', ort.__version__, ort.get_available_providers()); print('onnx', onnx.__version__)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  setsid nohup python3 -m hmer_train.cli_train --config configs/gpu-full.yaml --epochs "$2" \
    --no-progress > "$RUN/train.log" 2>&1 < /dev/null &
  sleep 30; cat "$RUN/train.log"
  ;;
wait)
  end=$((SECONDS + $2))
  while [ $SECONDS -lt $end ] && pgrep -f '[h]mer_train.cli_train' > /dev/null; do sleep 5; done
  tail -3 runs/gpu-full/log.csv 2>/dev/null || true; cat runs/gpu-full/val.csv 2>/dev/null || true; tail -3 "$RUN/train.log"
  collect
  ;;
bench)  # the bundled model: its committed checkpoint in eager CUDA against its graphs on ONNX Runtime
  python3 -c "import onnxruntime as o; print(o.__version__, o.get_available_providers())"
  python3 -m hmer_bench.latency --checkpoint models/cpu-small/last.pt --device cuda --autocast none,fp16 \
    --provider cpu --variants fp32 --beam 1,5,10 --batch-size 1,8,64 --data datasets/crohme/crohme-2014.tar.gz \
    --limit 64 --runs 1 --threads 16 --lengths "" --markdown "$OUT/bench-gpu.md" --json "$OUT/bench-gpu.json"
  ;;
esac
