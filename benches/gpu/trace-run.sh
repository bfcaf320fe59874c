#!/usr/bin/env bash
# A device call that traces the train step of fixtures op by op (tests/parity.rs::trace_train_step)
# and checks their gradients under every tile configuration, after `../shared/gpu/prepare`
# (carry [".gl", ".gpu"]):   FIXTURES="wrn16_cifs_n4_seed0" bash benches/gpu/trace-run.sh
# Traces land in $OUT/trace-<fixture>.safetensors; compare them with a lavapipe trace:
#   python3 tests/reference/compare_traces.py <device trace> <lavapipe trace>
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
L=/usr/local/nvidia/lib64
if [ -e "$L/libEGL_nvidia.so.0" ]; then
    # Headless NVIDIA: the EGL library's ICD (README, Requirements), and the packed Vulkan loader.
    for f in .gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done; ldconfig 2>/dev/null
    J=/tmp/nvidia_egl_icd.json
    printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3.0"}}' "$L/libEGL_nvidia.so.0" > "$J"
    export VK_DRIVER_FILES=$J VK_ICD_FILENAMES=$J LD_LIBRARY_PATH=$L${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export CIFS_WGPU_ADAPTER=${CIFS_WGPU_ADAPTER:-discrete}
fi
W=/tmp/gpuwork; rm -rf "$W"; mkdir -p "$W"; tar -C "$W" -xJf .gpu/payload.tar.xz
broot=$(cat "$W/build-root"); proj=$PWD
if [ "$broot" != "$proj" ] && [ ! -e "$broot" ]; then mkdir -p "$(dirname "$broot")"; ln -s "$proj" "$broot"; fi
export XDG_RUNTIME_DIR=/tmp RUST_BACKTRACE=1
T=$W/bin/test-test-parity
cd "$broot" || exit 1
for fx in ${FIXTURES:-wrn16_cifs_n4_seed0 cifs_w8_n4_seed0}; do
    CIFS_TRACE_FIXTURE=$fx CIFS_TRACE_OUT=$OUT/trace-$fx.safetensors timeout 90 "$T" trace_train_step --ignored --nocapture 2>&1 | grep -E "traced|panicked|FAILED"
done
timeout 240 "$T" train_gradients --nocapture 2>&1 | grep -E "rerun|tile|test result|panicked" | tee "$OUT/tiles.log"
