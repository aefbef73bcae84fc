#!/usr/bin/env bash
# The whole GPU measurement of issues 6, 11 and 22 in one call of under 10 minutes, for a machine lent briefly:
#   1. benchmarks/gpu_fit.py: model-only vs `fit` img/s of fh_colornet @ 56 px and eva02_tiny @ 224 px (bf16
#      autocast + channels_last) with 0, 4 and 8 loader workers, and the GPU's utilisation in each timed epoch;
#   2. benchmarks/sweep_overhead.py concurrency: 4 fh_colornet trials sharing the GPU against 1, trials per hour
#      (each trial: notebook 04, auto loader workers from its share of the cores, the warm cache);
#   3. benchmarks/loader_throughput.py --scaling: the loader's crops/s by workers (0-8) and input side on this
#      machine's cores, for the worker rule of fh_utils.workbook.workflow.resolve_num_workers;
#   4. with the time left (BUDGET seconds in all): the same as 1 with torch.compile (model-only and fit, 8 workers).
# Each step writes its JSON into OUT_DIR as it goes; a failing step does not stop the others. nvidia-smi logs the
# GPU's utilisation and memory every 0.5 s through the whole call (gpu_util_log.csv); log.txt holds the output.
#
#   bash benchmarks/gpu_sweep.sh [OUT_DIR]          # default: $OUT if set (the device tool), else outputs/bench/gpu
#   QUICK=1 DEVICES=cpu bash benchmarks/gpu_sweep.sh /tmp/x   # the CPU smoke test of the same steps, tiny sizes
#
# On a machine without the project's venv: PYTHON=python3 (with the missing packages installed, e.g. from carried
# wheels: albumentations, papermill, optuna, ipykernel and their needs; the repository root is on the path).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-outputs/bench/gpu}}
PY=${PYTHON:-.venv/bin/python}
DEVICES=${DEVICES:-0}
BUDGET=${BUDGET:-570}
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} NO_ALBUMENTATIONS_UPDATE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # fh_utils for the notebooks' kernels where it is not installed
mkdir -p "$OUT_DIR"
exec > >(tee "$OUT_DIR/log.txt") 2>&1
failed=0
step() { echo "\$ $* [at ${SECONDS}s]"; "$@" || { echo "step failed: $*"; failed=$((failed + 1)); }; }

{ nvidia-smi || echo "no nvidia-smi"; nproc; $PY -c "import importlib.util as u, torch
print('torch', torch.__version__, 'cuda', torch.cuda.is_available())
need = ['timm', 'albumentations', 'cv2', 'papermill', 'optuna', 'ipykernel', 'fh_utils']
print('missing:', [m for m in need if u.find_spec(m) is None] or 'none')"; } > "$OUT_DIR/env.txt" 2>&1
cat "$OUT_DIR/env.txt"
logger=""
if command -v nvidia-smi >/dev/null && [ "$DEVICES" != cpu ]; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 500 > "$OUT_DIR/gpu_util_log.csv" &
  logger=$!
fi
if [ "${QUICK:-0}" = 1 ]; then
  DEV=$([ "$DEVICES" = cpu ] && echo cpu || echo auto)
  step $PY -m benchmarks.gpu_fit --device "$DEV" --recipes fh_colornet@32 --workers 0 1 --scale 0.05 --limit 64 \
    --steps 2 --warmup 1 --epochs 2 --json "$OUT_DIR/gpu_fit.json"
  step $PY -m benchmarks.sweep_overhead concurrency --devices "$DEVICES" --workers 1 2 --trials 2 \
    --json "$OUT_DIR/sweep_gpu.json"
  step $PY -m benchmarks.loader_throughput --scaling --data-root outputs/bench_data/gpu-0.05 --workers 0 1 \
    --sizes 32 --limit 64 --epochs 1 --json "$OUT_DIR/loader_scaling.json"
else
  RECIPES="fh_colornet@56 eva02_tiny_patch14_224.mim_in22k@224"
  # demo data at scale 2 (about 3,000 train rows a task, ~25 s to generate), made by the first step, reused after
  step $PY -m benchmarks.gpu_fit --recipes $RECIPES --workers 0 4 8 --epochs 3 --steps 30 --scale 2 \
    --json "$OUT_DIR/gpu_fit.json"
  step $PY -m benchmarks.sweep_overhead concurrency --devices "$DEVICES" --workers 1 4 --trials 4 \
    --backbone fh_colornet --img-size 56 --epochs 3 --limit 1500 --num-workers -1 --cache \
    --data-root outputs/bench_data/gpu-2 --json "$OUT_DIR/sweep_gpu.json"
  step $PY -m benchmarks.loader_throughput --scaling --data-root outputs/bench_data/gpu-2 --workers 0 1 2 4 8 \
    --sizes 56 112 224 --limit 2000 --epochs 2 --json "$OUT_DIR/loader_scaling.json"
  left=$((BUDGET - SECONDS - 15))
  if [ "$left" -ge 60 ]; then  # compile if it starts in time: cut at the budget, each recipe's figures kept
    step timeout "$left" $PY -m benchmarks.gpu_fit --recipes $RECIPES --workers 8 --epochs 3 --steps 30 --scale 2 \
      --compile --compile-fit --json "$OUT_DIR/gpu_fit_compile.json"
  else
    echo "no time left for torch.compile (${left}s)"
  fi
fi
[ -n "$logger" ] && kill "$logger"
echo "figures in $OUT_DIR; $failed step(s) failed; ${SECONDS}s"
exit $failed
