#!/usr/bin/env bash
# A/B on one GPU machine in one call: this tree's release build against a baseline commit's
# binaries, each with its own tuning cache, so that a kernel change is measured against its
# predecessor on the same card. First, here: `bash benches/gpu/pack.sh` (builds this tree's
# binaries, test executables and kernel bench into .gpu, a Vulkan loader into .gl) and
# `bash benches/gpu/build-base.sh COMMIT` (builds the baseline's cifs-wgpu and kernel bench into
# .gpu-base); then the device call carries [".gl", ".gpu", ".gpu-base"]:   bash benches/gpu/ab-run.sh
# Knobs: ROUNDS ("new base"), MODEL (resnet18-cifs), WIDTH/BATCH/STEPS (64/128/20), BENCH_REPS (5),
# REF=1 adds the PyTorch step for MODEL, TESTS=1 every test executable of the new side first,
# BENCH_* as in benches/kernels.rs.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
base=/tmp/gpu-base; mkdir -p "$base"; tar -C "$base" -xJf .gpu-base/base.tar.xz
. benches/gpu/egl-icd.sh
unpack_payload
K=$(ls "$W"/bin/bench-* | head -n 1)
M=${MODEL:-resnet18-cifs}
cd "$broot" || exit 1
if [ -n "${TESTS:-}" ]; then
    for t in "$W"/bin/test-*; do
        n=$(basename "$t"); timeout "${TEST_S:-100}" "$t" --nocapture > "$OUT/$n.log" 2>&1; rc=$?
        printf '%-28s rc=%-3s %s\n' "$n" "$rc" "$(grep -E '^test result' "$OUT/$n.log" | tail -n 1)" | tee -a "$OUT/tests-summary.txt"
        [ $rc -eq 0 ] || grep -E 'panicked|FAILED' "$OUT/$n.log" | head -n 8 | sed 's/^/    /' | tee -a "$OUT/tests-summary.txt"
        grep -E 'kink' "$OUT/$n.log" | head -n 8 | sed 's/^/    /' | tee -a "$OUT/tests-summary.txt"
    done
    mkdir -p "$OUT/t" && mv "$OUT"/test-*.log "$OUT/t/" && tar -C "$OUT" -czf "$OUT/test-logs.tar.gz" t && rm -rf "$OUT/t"
fi
i=0
for side in ${ROUNDS:-new base}; do
    i=$((i + 1))
    if [ "$side" = new ]; then bin=$W/bin/cifs-wgpu kb=$K; else bin=$base/cifs-wgpu kb=$base/bench-kernels; fi
    export XDG_CACHE_HOME=/tmp/tune-$side
    BENCH_JSON=$OUT/kernels-$i-$side.json BENCH_REPS=${BENCH_REPS:-5} timeout 240 "$kb" --bench > "$OUT/kernels-$i-$side.log" 2>&1
    echo "kernels $side rc=$?"
    timeout 240 "$bin" bench --model "$M" --width "${WIDTH:-64}" --batch-size "${BATCH:-128}" --steps "${STEPS:-20}" \
        --json "$OUT/bench-$i-$side.json" > "$OUT/bench-$i-$side.log" 2>&1
    echo "bench $side rc=$?"; tail -n 4 "$OUT/bench-$i-$side.log"
done
if [ -n "${REF:-}" ]; then
    (cd "$OLDPWD" && timeout 240 python3 benches/reference/pytorch_step.py --device cuda --model "$M" --width "${WIDTH:-64}" \
        --batch-size "${BATCH:-128}" --steps "${STEPS:-20}" --json "$OUT/pytorch-$M.json") > "$OUT/pytorch.log" 2>&1
    echo "pytorch rc=$?"; tail -n 4 "$OUT/pytorch.log"
fi
tar -C "$OUT" -czf "$OUT/ab-logs.tar.gz" $(cd "$OUT" && ls *.log *.json 2>/dev/null) && (cd "$OUT" && rm -f *.log *.json)
# One line per kernel: the new side's and the base side's median ms, from the JSON.
python3 - "$OUT" <<'PY'
import json, sys, tarfile
rows = {}
tf = tarfile.open(sys.argv[1] + "/ab-logs.tar.gz")
for m in sorted(tf.getmembers(), key=lambda m: m.name):
    if not (m.name.startswith("kernels-") and m.name.endswith(".json")):
        continue
    f = m.name
    side = f.rsplit("-", 1)[1][:-5]
    for r in json.load(tf.extractfile(m)).get("kernels", []):
        rows.setdefault(r["kernel"], {}).setdefault(side, []).append(r["median_ms"])
for name, v in rows.items():
    cell = lambda s: "/".join(f"{x:.3f}" for x in v.get(s, [])) or "-"
    print(f"{name:48s} new {cell('new'):>16s}  base {cell('base'):>16s}")
PY
