#!/usr/bin/env bash
# The whole GPU measurement of issues 6 and 11 in one call, for a machine lent for a few minutes:
#   1. benchmarks/gpu_check.py: fp32 eager vs AMP + channels_last (+ torch.compile) at 224 px;
#   2. benchmarks/train_throughput.py at 224 px: end-to-end fit (AMP on CUDA: amp="auto") vs model-only;
#   3. fh_colornet sweep trials per hour with 4 workers sharing one GPU vs 1 worker (goal >= 2.5x).
# Each step writes its JSON into OUT_DIR and a failing step does not stop the others.
#
#   bash benchmarks/gpu_sweep.sh [OUT_DIR]          # default: $OUT if set (the device tool), else outputs/bench/gpu
#   QUICK=1 DEVICES=cpu bash benchmarks/gpu_sweep.sh /tmp/x   # the CPU smoke test of the same steps, tiny sizes
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-outputs/bench/gpu}}
PY=${PYTHON:-.venv/bin/python}
DEVICES=${DEVICES:-0}
mkdir -p "$OUT_DIR"
failed=0
step() { echo "\$ $*"; "$@" || { echo "step failed: $*"; failed=$((failed + 1)); }; }

{ nvidia-smi || echo "no nvidia-smi"; } > "$OUT_DIR/nvidia-smi.txt" 2>&1
if [ "${QUICK:-0}" = 1 ]; then
  step $PY -m benchmarks.gpu_check --steps 2 --warmup 1 --batch-size 4 --img-size 64 --modes fp32_eager amp_channels_last \
    --json "$OUT_DIR/gpu_check.json"
  step $PY -m benchmarks.train_throughput --img-size 64 --batch-size 8 --steps 2 --scale 0.05 --json "$OUT_DIR/train_224.json"
  step $PY -m benchmarks.sweep_overhead concurrency --devices "$DEVICES" --workers 1 2 --trials 2 \
    --json "$OUT_DIR/sweep_gpu.json"
else
  step $PY -m benchmarks.gpu_check --steps 30 --batch-size 128 --img-size 224 --json "$OUT_DIR/gpu_check.json"
  step $PY -m benchmarks.train_throughput --img-size 224 --batch-size 64 --steps 10 --scale 0.2 \
    --json "$OUT_DIR/train_224.json"
  # 8 fh_colornet trials of 3 epochs at 56 px on the whole demo split, 1 worker then 4 workers on GPU 0.
  step $PY -m benchmarks.sweep_overhead concurrency --devices "$DEVICES" --workers 1 4 --trials 8 \
    --backbone fh_colornet --img-size 56 --epochs 3 --limit 0 --json "$OUT_DIR/sweep_gpu.json"
fi
echo "figures in $OUT_DIR; $failed step(s) failed"
exit $failed
