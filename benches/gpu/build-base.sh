#!/usr/bin/env bash
# Builds a baseline commit's cifs-wgpu and kernel bench into .gpu-base/ (ignored) for
# benches/gpu/ab-run.sh: a git worktree ($WT, default /tmp/cifs-base-<commit>) with its own target
# dir (or $CARGO_TARGET_DIR).
set -euo pipefail
c=${1:?usage: build-base.sh COMMIT}
root=$PWD; wt=${WT:-/tmp/cifs-base-$c}; tgt=${CARGO_TARGET_DIR:-$wt/target}
[ -d "$wt" ] || git worktree add -f "$wt" "$c" -q
(cd "$wt" && cargo build --release --bin cifs-wgpu -q && cargo bench --no-run --bench kernels 2>&1 | grep -o 'release/deps/kernels-[0-9a-f]*' | tail -n 1 > /tmp/cifs-base-bench)
mkdir -p "$root/.gpu-base"
cp "$tgt/release/cifs-wgpu" "$root/.gpu-base/cifs-wgpu"
cp "$tgt/release/deps/$(basename "$(cat /tmp/cifs-base-bench)")" "$root/.gpu-base/bench-kernels"
strip "$root/.gpu-base/"* 2>/dev/null || true
# Packed: the device call carries at most 64 MiB with the tree and .gpu.
(cd "$root/.gpu-base" && tar -cJf base.tar.xz cifs-wgpu bench-kernels && rm cifs-wgpu bench-kernels)
echo "$c" > "$root/.gpu-base/COMMIT"; ls -la "$root/.gpu-base"
