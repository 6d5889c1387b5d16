#!/usr/bin/env bash
# One prepared call on a GPU machine (docs/GPU_TRAINING.md): continue training the shipped MR and/or echo
# model on the carried data, then leave the resumable checkpoints and the logs under $OUT.
#
#   bash scripts/gpu_train.sh mr|echo|both MINUTES [extra train options for every run...]
#
# Needs, in the repository root: gpu/mr.tar.xz (scripts/pack_mr_data.py) and/or gpu/echo.tar.xz
# (scripts/pack_echo_data.py), and .whl/ with the wheels the GPU image lacks (nibabel).
# "both" trains the two models at once on the one GPU (the network is small; each run gets half the
# CPU cores as data-loading workers). A run that fails within its first two minutes (e.g. a CUDA
# mixed-precision problem) is started again once in float32 with the minutes left. Afterwards the CUDA
# inference path is checked on the shipped sample (`predict --device cuda`, timings in $OUT/cuda_check.txt).
# Extra options: MR_OPTS / ECHO_OPTS (environment) go to one run only (a repeated option: the last wins).
set -uo pipefail
what=${1:?mr, echo or both}
minutes=${2:?training minutes}
shift 2
out=${OUT:-/tmp/gpu_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PY:-python3}  # the GPU image's python3 holds PyTorch
if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
case "$what" in
    mr|echo) runs=("$what") ;;
    both) runs=(mr echo) ;;
    *) echo "error: the first argument is mr, echo or both, not '$what'" >&2; exit 2 ;;
esac
data=/tmp/gpu_data
rm -rf "$data" && mkdir -p "$data"
for r in "${runs[@]}"; do
    tar -xJf "gpu/$r.tar.xz" -C "$data" || { echo "error: could not unpack gpu/$r.tar.xz" >&2; exit 1; }
done
find "$data" -name '*.nii' -print0 | xargs -0 -r -P 8 -n 16 gzip -1 -n -q
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true) | tee "$out/gpu.txt"
cores=$(nproc)
workers=$(( ${#runs[@]} == 2 ? cores / 2 - 1 : cores - 2 ))
start=$(date +%s)

train_one() {  # train_one mr|echo MINUTES EXTRA...
    local r=$1 mins=$2
    shift 2
    local common=(--data "$data/data" --device "${DEVICE:-cuda}" --workers "$workers" --epochs 1000
                  --time-budget-min "$mins" --log "$out/$r.log" --no-validate)
    if [ "$r" = mr ]; then
        "$py" -m napari_cardiac_motion train "${common[@]}" --out "$out/mr.pt" \
            --init napari_cardiac_motion/checkpoints/default.pt --batch-size 32 --crop 112 --lr 3e-4 \
            --steps-per-epoch 200 --seed 17 ${MR_OPTS:-} "$@"
    else
        "$py" -m napari_cardiac_motion train "${common[@]}" --dataset echo --out "$out/echo.pt" \
            --init napari_cardiac_motion/checkpoints/echo.pt --batch-size 32 --crop 160 --lr 2e-4 \
            --steps-per-epoch 200 --seed 17 ${ECHO_OPTS:-} "$@"
    fi
}

run_with_fallback() {  # run_with_fallback mr|echo EXTRA...
    local r=$1
    shift
    local t0=$(date +%s)
    train_one "$r" "$minutes" "$@" > "$out/$r.stdout" 2>&1
    local rc=$?
    local used=$(( $(date +%s) - t0 ))
    if [ $rc -ne 0 ] && [ $used -lt 120 ]; then
        echo "== $r failed after $used s (rc $rc); again in float32" >> "$out/$r.stdout"
        local left
        left=$("$py" -c "print(max(1.0, $minutes - $used / 60 - 0.3))")
        train_one "$r" "$left" --no-amp "$@" >> "$out/$r.stdout" 2>&1
        rc=$?
    fi
    echo "== $r exit $rc after $(( $(date +%s) - t0 )) s" >> "$out/$r.stdout"
    return $rc
}

pids=()
for r in "${runs[@]}"; do
    run_with_fallback "$r" "$@" &
    pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
for r in "${runs[@]}"; do echo "== $r"; tail -n 25 "$out/$r.stdout"; done
echo "training took $(( $(date +%s) - start )) s"

# The CUDA inference path: the real predict on the shipped sample, then the speed benchmark on CUDA and CPU
# (SKIP_CUDA_CHECK=1 leaves it out when the call is short of time).
[ -n "${SKIP_CUDA_CHECK:-}" ] && exit $status
{
    "$py" -m napari_cardiac_motion predict "$("$py" -c 'from napari_cardiac_motion._sample_data import sample_cine_path; print(sample_cine_path())')" \
        --out /tmp/pred_cuda --device cuda && ls /tmp/pred_cuda
    "$py" benchmarks/inference_speed.py --device cuda --repeats 3
    "$py" benchmarks/inference_speed.py --device cpu --repeats 1 --threads 8
} > "$out/cuda_check.txt" 2>&1
tail -n 30 "$out/cuda_check.txt"
exit $status
