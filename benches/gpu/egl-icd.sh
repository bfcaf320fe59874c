# shellcheck shell=bash
# Sourced by the device scripts here (on-device.sh and the others), on the GPU machine.
# Headless NVIDIA containers: the driver's ICD manifest names libGLX_nvidia.so.0, which cannot
# create an instance without a display; the EGL library can (docs/PERFORMANCE.md, "Getting the
# Vulkan loader to see the GPU in a container"). Also installs the Vulkan loader pack.sh packed
# (.gl: .deb packages). EGL_ICD=0 skips both (a rehearsal on this machine's own Vulkan).
L=/usr/local/nvidia/lib64
if [ "${EGL_ICD:-1}" != 0 ] && [ -e "$L/libEGL_nvidia.so.0" ]; then
    for f in .gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done; ldconfig 2>/dev/null
    J=/tmp/nvidia_egl_icd.json
    printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3.0"}}' "$L/libEGL_nvidia.so.0" > "$J"
    export VK_DRIVER_FILES=$J VK_ICD_FILENAMES=$J LD_LIBRARY_PATH=$L${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export CIFS_WGPU_ADAPTER=${CIFS_WGPU_ADAPTER:-discrete}
fi
# Any GPU: the loader packed by pack.sh where the machine has none.
if [ "${EGL_ICD:-1}" != 0 ] && ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1; then
    for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" / 2>/dev/null; done; ldconfig 2>/dev/null
fi
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} RUST_BACKTRACE=1
# Unpacks the payload benches/gpu/pack.sh made into $W (binaries in $W/bin) and makes the build
# root the tests expect.
unpack_payload() {
    W=/tmp/gpuwork; rm -rf "$W"; mkdir -p "$W"; tar -C "$W" -xJf .gpu/payload.tar.xz
    broot=$(cat "$W/build-root"); local proj=$PWD
    if [ "$broot" != "$proj" ] && [ ! -e "$broot" ]; then mkdir -p "$(dirname "$broot")"; ln -s "$proj" "$broot"; fi
    # The CLI tests run the binary where cargo built it.
    mkdir -p "$proj/target/release"; cp "$W/bin/cifs-wgpu" "$proj/target/release/cifs-wgpu"
}
