#!/usr/bin/env bash
# Packs this tree's builds for one call on a GPU machine that has no toolchain and no network:
#   bash benches/gpu/pack.sh [--data DIR_OR_TAR_XZ]
# Builds first (here, from the repository's root): the release binary, every test executable of
# `cargo test --release --workspace --tests` and the kernel bench. Writes .gpu/payload.tar.xz (the
# binaries, stripped, the oracle fixtures in $CIFS_FIXTURES if set (tests/fixtures travels with
# the tracked tree), and the path the tests were built under) and .gl/ (the Vulkan loader's Debian package, downloaded with
# apt-get: the GPU machine's image may lack it). Both folders are ignored by git; an earlier
# call's .gpu/state.tar.gz (benches/gpu/first-call.sh) is kept and counted.
#   --data PATH   also pack a JPEG CIFAR-10 image folder (ROOT/{train,test}/<class>/) for a
#                 training run: a folder, or a .tar.xz of one (about 18 MB packed).
# Then the device call carries [".gl", ".gpu"] and runs one of the scripts here, e.g.
#   bash benches/gpu/on-device.sh      (stages: see that script)
# A device call carries at most 64 MiB with the tracked tree; the script says how much it packed.
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"

data=""
if [ "${1:-}" = "--data" ]; then data=${2:?--data needs a folder or a .tar.xz}; fi

if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
    echo "downloading the Vulkan loader's package into .gl/"
    mkdir -p .gl /tmp/cifs-apt-amd64/partial
    apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/cifs-apt-amd64)
    apt-get "${apt_opts[@]}" update -qq
    (cd .gl && apt-get "${apt_opts[@]}" download libvulkan1 >/dev/null)
fi

echo "building: the release binary, the test executables, the kernel bench"
cargo build --release -q
list=$(mktemp)
{ cargo test --release --workspace --tests --no-run --message-format=json -q; cargo bench --no-run --message-format=json -q; } 2>/dev/null |
    python3 -c '
import json, sys
seen = set()
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    exe, kind = m.get("executable"), m.get("target", {}).get("kind", ["?"])[0]
    if m.get("reason") == "compiler-artifact" and exe and exe not in seen and (kind == "bench" or (m.get("profile", {}).get("test") and kind != "bin")):
        seen.add(exe)
        print(kind, m["target"]["name"], exe)
' > "$list"

stage=$(mktemp -d)
mkdir -p "$stage/bin" "$stage/fixtures"
cp "${CARGO_TARGET_DIR:-target}/release/cifs-wgpu" "$stage/bin/"
while read -r kind name exe; do
    case "$kind" in bench) cp "$exe" "$stage/bin/bench-$name" ;; *) cp "$exe" "$stage/bin/test-$kind-$name" ;; esac
done < "$list"
rm -f "$list"
strip "$stage"/bin/* 2>/dev/null || true
# The tests find their fixtures through the absolute paths they were built under.
echo "$root" > "$stage/build-root"
for dir in ${CIFS_FIXTURES:-}; do
    cp "$dir"/*.safetensors "$dir"/*.json "$stage/fixtures/" 2>/dev/null || true
done
mkdir -p .gpu && rm -f .gpu/payload.tar.xz .gpu/cifar10-jpeg.tar.xz
tar -C "$stage" -cf - . | xz -T2 -6 > .gpu/payload.tar.xz
rm -rf "$stage"
if [ -n "$data" ]; then
    if [ -d "$data" ]; then tar -C "$data" -cf - . | xz -T2 -6 > .gpu/cifar10-jpeg.tar.xz; else cp "$data" .gpu/cifar10-jpeg.tar.xz; fi
fi

# (A file deleted but not yet committed makes du fail: the total of the others still counts.)
tracked=$(git ls-files -z | du -cb --files0-from=- 2>/dev/null | tail -n 1 | cut -f1 || true)
total=$(( $(du -sb .gpu | cut -f1) + $(du -sb .gl | cut -f1) + tracked ))
echo "packed $(du -sh .gpu | cut -f1) into .gpu and $(du -sh .gl | cut -f1) into .gl: about $((total >> 20)) MiB with the tracked tree (at most 64)"
[ "$total" -lt $((62 << 20)) ] || { echo "too large for one device call: leave out --data"; exit 1; }
echo 'device call: carry [".gl", ".gpu"], command e.g. "bash benches/gpu/first-call.sh" (or on-device.sh)'
