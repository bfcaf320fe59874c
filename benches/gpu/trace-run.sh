#!/usr/bin/env bash
# A device call that traces the train step of fixtures op by op (tests/parity.rs::trace_train_step)
# and checks their gradients under every tile configuration. First, here: `bash benches/gpu/pack.sh`
# (builds the test executables into .gpu, a Vulkan loader into .gl); then on the device (carry
# [".gl", ".gpu"]):   FIXTURES="wrn16_cifs_n4_seed0" bash benches/gpu/trace-run.sh
# Traces land in $OUT/trace-<fixture>.safetensors; compare them with a lavapipe trace:
#   python3 tests/reference/compare_traces.py <device trace> <lavapipe trace>
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
. benches/gpu/egl-icd.sh
unpack_payload
T=$W/bin/test-test-parity
cd "$broot" || exit 1
for fx in ${FIXTURES:-wrn16_cifs_n4_seed0 cifs_w8_n4_seed0}; do
    CIFS_TRACE_FIXTURE=$fx CIFS_TRACE_OUT=$OUT/trace-$fx.safetensors timeout 90 "$T" trace_train_step --ignored --nocapture 2>&1 | grep -E "traced|panicked|FAILED"
done
timeout 240 "$T" train_gradients --nocapture 2>&1 | grep -E "rerun|tile|test result|panicked" | tee "$OUT/tiles.log"
