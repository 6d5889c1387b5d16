#!/usr/bin/env bash
# One prepared call on a GPU machine (docs/GPU_TRAINING.md): continue training the shipped MR or echo
# model on the carried data, then leave the resumable checkpoint and the log under $OUT.
#
#   bash scripts/gpu_train.sh mr|echo MINUTES [extra train options...]
#
# Needs, in the repository root: gpu/mr.tar.xz (../shared/tools/pack_training_data.py) or gpu/echo.tar.xz
# (scripts/pack_echo_data.py), and .whl/ with the wheels the GPU image lacks (nibabel, pydicom).
set -euo pipefail
what=${1:?mr or echo}
minutes=${2:?training minutes}
shift 2
out=${OUT:-/tmp/gpu_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PY:-python3}  # the GPU image's python3 holds PyTorch
if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
data=/tmp/gpu_data
rm -rf "$data" && mkdir -p "$data"
tar -xJf "gpu/$what.tar.xz" -C "$data"
find "$data" -name '*.nii' -print0 | xargs -0 -r -P 8 -n 16 gzip -1 -n -q
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true) | tee "$out/gpu.txt"
common=(--data "$data/data" --device "${DEVICE:-cuda}" --workers 8 --epochs 1000 --time-budget-min "$minutes" --log "$out/$what.log")
case "$what" in
    mr)
        "$py" -m napari_cardiac_motion train "${common[@]}" --out "$out/mr.pt" \
            --init napari_cardiac_motion/checkpoints/default.pt --batch-size 32 --crop 112 --lr 3e-4 \
            --steps-per-epoch 200 --seed 11 "$@" ;;
    echo)
        "$py" -m napari_cardiac_motion train "${common[@]}" --dataset echo --out "$out/echo.pt" \
            --init napari_cardiac_motion/checkpoints/echo.pt --batch-size 32 --crop 160 --lr 2e-4 \
            --steps-per-epoch 200 --seed 11 "$@" ;;
    *)
        echo "error: the first argument is mr or echo, not '$what'" >&2
        exit 2 ;;
esac
