#!/usr/bin/env bash
# Runs on the GPU machine, from the device's copy of the repository, what benches/gpu/pack.sh
# packed (carry [".gl", ".gpu"]); packs nothing and builds nothing itself:
#   STAGES="tests bench kernels" bash benches/gpu/on-device.sh
# Stages (STAGES, default "tests bench kernels"):
#   tests    every test executable on the GPU, with its time and result line (TEST_S each, 300 s)
#   bench    `cifs-wgpu bench` for each of MODELS (resnet18-cifs resnet18) at WIDTH (64), BATCH
#            (128), STEPS (20), with BENCH_ARGS (BENCH_S each, 240 s)
#   kernels  the kernel bench (BENCH_* variables as in benches/kernels.rs)
#   ref      REF_CMD, any command run from the repository's root (the GPU machine's python3 has
#            PyTorch), e.g. 'python3 benches/reference/pytorch_step.py --device cuda'
#   train    `cifs-wgpu train folder` on the packed CIFAR-10 (pack.sh --data) with TRAIN_ARGS
#            (TRAIN_S, 420 s); RESUME=1 continues from .gpu/last.safetensors and .gpu/config.json
#            (an earlier call's, put back after packing)
# Everything lands in $OUT (/tmp/out): summary.txt, logs.tar.gz (every log and JSON) and, after
# a train stage, last.safetensors. Keep a call under about 9 minutes so that a second one fits.
# Without a GPU the same stages run on lavapipe (CIFS_WGPU_ADAPTER=cpu, small sizes) to try a
# call before spending device time.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
. benches/gpu/egl-icd.sh
unpack_payload
B=$W/bin
mkdir -p "$W/logs"
[ -d "$W/fixtures" ] && export CIFS_FIXTURES=${CIFS_FIXTURES:-$W/fixtures}
export CIFS_WGPU_ADAPTER=${CIFS_WGPU_ADAPTER:-discrete}
S=$W/logs/summary.txt
say() { echo "$*" | tee -a "$S"; }
stage() { echo "${STAGES:-tests bench kernels}" | grep -qw "$1"; }

say "== device: $(nvidia-smi -L 2>/dev/null | head -n 1)   adapter choice: $CIFS_WGPU_ADAPTER"
"$B/cifs-wgpu" info > "$W/logs/info.txt" 2>&1
say "$(grep -iE 'chosen|precision' "$W/logs/info.txt" | head -n 2)"

if stage tests; then
    for t in "$B"/test-*; do
        n=$(basename "$t"); s=$(date +%s)
        (cd "$broot" && timeout "${TEST_S:-300}" "$t") > "$W/logs/$n.log" 2>&1; rc=$?
        say "$(printf '%-28s rc=%-3s %4ss  %s' "$n" "$rc" "$(( $(date +%s) - s ))" "$(grep -E '^test result' "$W/logs/$n.log" | tail -n 1)")"
        [ $rc -eq 0 ] || grep -E 'panicked|FAILED|failed|error' "$W/logs/$n.log" | head -n 4 | sed 's/^/    /' | tee -a "$S"
    done
fi
if stage bench; then
    for m in ${MODELS:-resnet18-cifs resnet18}; do
        # shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
        timeout "${BENCH_S:-240}" "$B/cifs-wgpu" bench --model "$m" --width "${WIDTH:-64}" --batch-size "${BATCH:-128}" \
            --steps "${STEPS:-20}" ${BENCH_ARGS:-} --json "$W/logs/bench-$m.json" > "$W/logs/bench-$m.log" 2>&1
        say "bench $m rc=$?"; tail -n 6 "$W/logs/bench-$m.log" | tee -a "$S"
    done
fi
if stage kernels; then
    k=$(ls "$B"/bench-kernels* 2>/dev/null | head -n 1)
    if [ -n "$k" ]; then
        (cd "$broot" && BENCH_JSON="$W/logs/kernels.json" timeout "${BENCH_S:-240}" "$k" --bench) > "$W/logs/kernels.log" 2>&1
        say "kernels rc=$?"; tail -n 30 "$W/logs/kernels.log" | tee -a "$S"
    fi
fi
if stage ref && [ -n "${REF_CMD:-}" ]; then
    timeout "${BENCH_S:-240}" bash -c "$REF_CMD" > "$W/logs/ref.log" 2>&1
    say "ref rc=$?"; tail -n 8 "$W/logs/ref.log" | tee -a "$S"
fi
if stage train; then
    mkdir -p "$W/data" && tar -C "$W/data" -xJf .gpu/cifar10-jpeg.tar.xz || say "no .gpu/cifar10-jpeg.tar.xz (pack.sh --data)"
    run=$W/run; mkdir -p "$run"; extra=""
    if [ -n "${RESUME:-}" ] && [ -f .gpu/last.safetensors ]; then cp .gpu/last.safetensors .gpu/config.json "$run/" 2>/dev/null; extra="--resume"; fi
    s=$(date +%s)
    # shellcheck disable=SC2086  # TRAIN_ARGS is a list of flags
    timeout "${TRAIN_S:-420}" "$B/cifs-wgpu" train folder --data-dir "$W/data" --out "$run" ${TRAIN_ARGS:-} $extra > "$W/logs/train.log" 2>&1
    say "train rc=$? in $(( $(date +%s) - s ))s"; cp "$run"/*.jsonl "$run"/config.json "$W/logs/" 2>/dev/null
    tail -n 4 "$run/metrics.jsonl" 2>/dev/null | tee -a "$S"
    cp "$run/last.safetensors" "$OUT/" 2>/dev/null
fi
tar -C "$W" -czf "$OUT/logs.tar.gz" logs; cp "$S" "$OUT/summary.txt"
echo "== summary"; cat "$S"
