#!/usr/bin/env bash
# The step bench under each precision and switch that waits for a GPU to decide it, in one call,
# rounds interleaved (f32, f16, subgroup sums, zeroed workgroup memory, then again) so that clock
# drift during the call falls on every variant alike; then PyTorch's default and its --amp path
# on the same card. Decides: whether batch norm's sums on subgroups (CIFS_WGPU_SUBGROUP_REDUCE=1)
# become the default, whether workgroup memory stays uninitialised (CIFS_WGPU_ZERO_INIT_WORKGROUP=1
# is the old behaviour), and what f16 costs today (the SIMT emulation: expected slower than f32).
#
# First, here: `bash benches/gpu/pack.sh` (builds the release binary and the test executables
# into .gpu, a Vulkan loader into .gl); then on the device (carry [".gl", ".gpu"]):
#     bash benches/gpu/levers.sh
# Without a GPU (a dry run on lavapipe, tiny sizes; no payload needed):
#     CIFS_BIN=target/release/cifs-wgpu CIFS_FLAGS=--no-tune WIDTH=4 BATCH=4 STEPS=1 WARMUP=0 ROUNDS=1 \
#       PY_DEVICE=cpu OUT=/tmp/out bash benches/gpu/levers.sh
#
# Knobs: MODEL (resnet18-cifs), WIDTH (64), BATCH (128), STEPS (20), WARMUP (3), ROUNDS (2),
# VARIANTS ("f32 f16 subgroup-sums zero-init"), PY_DEVICE (cuda; "none" skips PyTorch), STEP_S (240 s per bench),
# CIFS_FLAGS (flags before the command), CIFS_BIN (default: from the .gpu payload).
# $OUT gets summary.txt (one line per variant and round: the three steps' median wall ms and the
# PGD-10 step's GPU ms) and levers.tar.gz (every bench JSON and log, PyTorch's JSON).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
S=$OUT/summary.txt
say() { echo "$*" | tee -a "$S"; }
if [ -z "${CIFS_BIN:-}" ]; then
    [ -f .gpu/payload.tar.xz ] || { say "no .gpu/payload.tar.xz: run benches/gpu/pack.sh first, or set CIFS_BIN"; exit 2; }
    . benches/gpu/egl-icd.sh
    unpack_payload
    CIFS_BIN=$W/bin/cifs-wgpu
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/tunecache}
M=${MODEL:-resnet18-cifs} WIDTH=${WIDTH:-64} BATCH=${BATCH:-128}
work=$(mktemp -d)
say "== levers: $M width $WIDTH batch $BATCH, $("$CIFS_BIN" info 2>&1 | grep -E 'chosen|subgroup operations' | tr '\n' ' ')"

# One variant's bench: the precision and the environment switch it stands for.
bench() {
    local variant=$1 round=$2 precision=f32
    local -a env=()
    case $variant in
        f32) ;;
        f16) precision=f16 ;;
        subgroup-sums) env=(CIFS_WGPU_SUBGROUP_REDUCE=1) ;;
        zero-init) env=(CIFS_WGPU_ZERO_INIT_WORKGROUP=1) ;;
        *) say "unknown variant $variant"; return ;;
    esac
    local name=$variant-$round
    # shellcheck disable=SC2086  # CIFS_FLAGS is a list of flags
    env "${env[@]}" timeout "${STEP_S:-240}" "$CIFS_BIN" ${CIFS_FLAGS:-} --precision "$precision" bench --model "$M" \
        --width "$WIDTH" --batch-size "$BATCH" --steps "${STEPS:-20}" --warmup "${WARMUP:-3}" --json "$work/$name.json" \
        > "$work/$name.log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ] || [ ! -f "$work/$name.json" ]; then
        say "$(printf '%-14s round %s  rc=%s  %s' "$variant" "$round" "$rc" "$(tail -n 1 "$work/$name.log")")"
        return
    fi
    python3 - "$work/$name.json" "$variant" "$round" <<'PY' | tee -a "$S"
import json, sys
d = json.load(open(sys.argv[1]))
r = {x["step"]: x for x in d["results"]}
cell = lambda k: f"{r[k]['wall_median_ms']:9.2f}" if k in r else "        -"
gpu = r.get("pgd10-at-step", {}).get("gpu_median_ms")
print(f"{sys.argv[2]:<14s} round {sys.argv[3]}  pgd10 {cell('pgd10-at-step')} ms (GPU {gpu if gpu is None else f'{gpu:.2f}'})"
      f"  clean {cell('clean-train-step')}  eval {cell('eval-forward')}  precision {d['precision']}, bn sums {d.get('bn_sums')}"
      f", dispatches {r.get('pgd10-at-step', {}).get('dispatches_per_step')}")
PY
}

# Tiles are tuned at first use, in the warm-up steps, and cached: later variants reuse the choices.
for round in $(seq 1 "${ROUNDS:-2}"); do
    for v in ${VARIANTS:-f32 f16 subgroup-sums zero-init}; do bench "$v" "$round"; done
done

if [ "${PY_DEVICE:-cuda}" != none ]; then
    timeout "${STEP_S:-240}" python3 benches/reference/pytorch_step.py --device "${PY_DEVICE:-cuda}" --model "$M" --width "$WIDTH" \
        --batch-size "$BATCH" --steps "${STEPS:-20}" --amp --json "$work/pytorch.json" > "$work/pytorch.log" 2>&1
    say "pytorch (default, then --amp) rc=$?"
    grep -E 'step' "$work/pytorch.log" | tail -n 6 | tee -a "$S"
fi
tar -C "$work" -czf "$OUT/levers.tar.gz" . && rm -rf "$work"
