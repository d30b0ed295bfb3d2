#!/usr/bin/env bash
# Issue 19's GPU benchmarks in one go, sized for one H200 (16 cores, 139 GiB): about 4-5 minutes.
#
#   bench/gpu_issue19.sh OUT_DIR            JSON records into OUT_DIR (train_step.json, train_data.json, eval_files.json)
#   WHEELS=DIR bench/gpu_issue19.sh OUT     first install DIR/*.whl offline (nothing is fetched from a network)
#
# Needs, beyond torch / torchvision / timm / numpy / pillow / safetensors / typer / tqdm / matplotlib /
# pandas / fsspec / pyyaml / regex / huggingface_hub: open_clip_torch (with open_clip_train), ftfy,
# wcwidth, webdataset (<= 0.2.86, as open_clip_torch[training] pins), braceexpand. Random weights
# throughout: speed does not depend on them.
set -uo pipefail
OUT=${1:?usage: bench/gpu_issue19.sh OUT_DIR}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if [ -n "${WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/eclip-site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/eclip-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$HERE/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
$PY -c "import torch, open_clip, webdataset; print('torch', torch.__version__, 'open_clip', open_clip.__version__)" | tee -a "$OUT/gpu.txt" || exit 1
T="$PY $HERE/bench/bench_train.py"
section() { echo "== $(date +%T) $*"; }

section "3a: training step, eclip plain / ECLIP / open_clip_train"
for prec in bf16 fp32; do
  $T step --device cuda --model ViT-B-16 --batch 256 --precision $prec --steps 8 --warmup 3 --workers 4 --loader-workers 12 \
     --timeout 150 --json "$OUT/train_step.json" > /dev/null || echo "ViT-B-16 $prec failed"
  $T step --device cuda --model ViT-L-14 --batch 128 --precision $prec --steps 6 --warmup 3 --workers 4 --loader-workers 12 \
     --timeout 150 --json "$OUT/train_step.json" > /dev/null || echo "ViT-L-14 $prec failed"
done

section "3b: data waiting, shards of 224 px JPEGs and synthetic scenes"
$T data --data shards --device cuda --model ViT-B-16 --batch 256 --precision bf16 --steps 8 --warmup 3 --workers-list 0 4 14 \
   --n-images 2048 --timeout 150 --json "$OUT/train_data.json" > /dev/null || echo "shards failed"
$T data --data synthetic --device cuda --model synth-vit --batch 512 --precision fp32 --steps 10 --warmup 3 --workers-list 0 15 \
   --timeout 150 --json "$OUT/train_data.json" > /dev/null || echo "synthetic fp32 failed"
$T data --data synthetic --device cuda --model synth-vit --batch 512 --precision bf16 --steps 10 --warmup 3 --workers-list 15 \
   --timeout 150 --json "$OUT/train_data.json" > /dev/null || echo "synthetic bf16 failed"

section "3c: evaluate from JPEG files against the bare forward"
$PY "$HERE/bench/bench_eval_files.py" --device cuda --model ViT-B-16 --n 512 --batch-size 64 --precision fp32 --workers-list 0 8 \
   --json "$OUT/eval_files.json" > /dev/null || echo "eval files failed"
section done
