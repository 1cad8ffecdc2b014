#!/usr/bin/env bash
# The training checks at the paper's scale, for a machine with a GPU: MobileNetV2 at 224 px on
# an ImageNet-shaped tree made offline, with --mixed_precision --jit_compile.
#
#   bash bench/gpu.sh [WORK_DIR]          # default /tmp/super_sub_gpu; results in bench/results
#
# 1. records the device (nvidia-smi, and the GPUs TensorFlow sees);
# 2. bench/train_overhead.py: super-sub's training of each kind of stage against a bare Keras
#    fit of the same model, optimizer, batch and pipeline (goal: ratio >= 0.95, >= 0.90 where a
#    delta is projected);
# 3. bench/qat_stability.py: QAT sign specialists over seeds, frozen and trainable trunk
#    (goal: 0 divergences in >= 20 runs).
# SMOKE=1 shrinks every size so that the script itself can be checked on a CPU in minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/super_sub_gpu}
PY=${PYTHON:-.venv/bin/python}
if [ "${SMOKE:-0}" = 1 ]; then
  TRAIN=300; VAL=60; BATCH=8; EPOCHS=3; REPEATS=1; SEEDS=0-1; OUT=${OUT:-$WORK/results}; TRUNKS=frozen
else
  TRAIN=4000; VAL=400; BATCH=64; EPOCHS=4; REPEATS=3; SEEDS=0-9; OUT=${OUT:-bench/results}; TRUNKS=frozen,trainable
fi
mkdir -p "$WORK" "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "nvidia-smi: none"
  $PY -c "import tensorflow as tf; print('TensorFlow', tf.__version__, 'GPUs:', tf.config.list_physical_devices('GPU'))"
} > "$OUT/gpu_device.txt"
cat "$OUT/gpu_device.txt"
$PY bench/imagenet_shaped.py "$WORK/ILSVRC2012" "$TRAIN" "$VAL"
$PY bench/train_overhead.py --dataset=superclassed_imagenet --manual_dir="$WORK/ILSVRC2012" \
  --data_dir="$WORK/tfds" --backbone=mobilenet_v2 --image_size=224 --batch_size="$BATCH" \
  --epochs="$EPOCHS" --repeats="$REPEATS" --superclass=3 --mixed_precision --jit_compile \
  --note="bench/gpu.sh" --out="$OUT/train_overhead_gpu_mobilenet_v2_224"
$PY bench/qat_stability.py --work_dir="$WORK/stability" --seeds="$SEEDS" --trunks="$TRUNKS" \
  --batch_size=16 --mixed_precision --jit_compile --out="$OUT/qat_stability_gpu"
