#!/usr/bin/env bash
# One device call that measures everything a GPU session needs. First, here: `bash benches/gpu/pack.sh`
# (it builds the release binary, every test executable and the kernel bench, and packs them into
# .gpu with a Vulkan loader's package in .gl); then the device call carries [".gl", ".gpu"]:
#     bash benches/gpu/device-run.sh
# Stage a: `cifs-wgpu bench` (tuned) for each of MODELS and the PyTorch script for the same models
# in the same call; stage b: every test executable on the GPU, then the kernel bench (every tile).
# Everything lands under $OUT/a and $OUT/b (summary.txt, logs.tar.gz with every JSON).
# Knobs: MODELS ("resnet18-cifs resnet18"), WIDTH/BATCH/STEPS (64/128/20), PD (cuda),
# WRN_MODELS (e.g. "wrn-cifs wrn": a stage a-wrn at WRN_WIDTH 10, WRN_DEPTH 28),
# TEST_S (100 per test executable), BENCH_S (200), BENCH_REPS (5), and on-device.sh's variables.
set -uo pipefail
OUT=${OUT:-/tmp/out}
. benches/gpu/egl-icd.sh
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/tunecache}
export MODELS=${MODELS:-resnet18-cifs resnet18} WIDTH=${WIDTH:-64} BATCH=${BATCH:-128} STEPS=${STEPS:-20} PD=${PD:-cuda}
REF='for m in $MODELS; do python3 benches/reference/pytorch_step.py --device $PD --model $m --width $WIDTH --depth ${WRN_DEPTH:-28} --batch-size $BATCH --steps $STEPS --json /tmp/gpuwork/logs/pytorch-$m.json; done'
OUT=$OUT/a STAGES="bench ref" BENCH_S=${BENCH_S:-200} REF_CMD="$REF" bash benches/gpu/on-device.sh > /dev/null 2>&1
cat "$OUT/a/summary.txt"
if [ -n "${WRN_MODELS:-}" ]; then
    # The WideResNet's width is its widen factor, and it has a depth: a stage of its own.
    MODELS=$WRN_MODELS WIDTH=${WRN_WIDTH:-10} BENCH_ARGS="--depth ${WRN_DEPTH:-28}" OUT=$OUT/a-wrn STAGES="bench ref" \
        BENCH_S=${BENCH_S:-200} REF_CMD="$REF" bash benches/gpu/on-device.sh > /dev/null 2>&1
    cat "$OUT/a-wrn/summary.txt"
fi
OUT=$OUT/b STAGES="tests kernels" TEST_S=${TEST_S:-100} BENCH_S=${BENCH_S:-200} BENCH_REPS=${BENCH_REPS:-5} bash benches/gpu/on-device.sh > /dev/null 2>&1
cat "$OUT/b/summary.txt"
# The op tests stalled once on an H200 with their default 16 threads (docs/PERFORMANCE-HISTORY.md, "The test suite on the GPU"):
# OPS_SERIAL=1 also runs them one at a time, to tell a stall from a bug.
if [ -n "${OPS_SERIAL:-}" ] && [ -x /tmp/gpuwork/bin/test-test-ops ]; then
    (cd "$(cat /tmp/gpuwork/build-root 2>/dev/null || pwd)" && timeout "${TEST_S:-100}" /tmp/gpuwork/bin/test-test-ops --test-threads 1 --nocapture) > "$OUT/ops-serial.log" 2>&1
    echo "ops serial rc=$?: $(grep -E '^test result' "$OUT/ops-serial.log" | tail -n 1)"
fi
