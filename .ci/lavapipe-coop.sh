#!/usr/bin/env bash
# A Vulkan device with cooperative matrices (tensor cores) on the CPU: Mesa >= 26's lavapipe,
# which lists 8x8x8 f16 x f16 -> f32 (and -> f16) at subgroup size 8. Debian 12's Mesa (22.3,
# 25.0 in backports) has none, and Mesa 26's libvulkan_lvp needs a newer glibc than Debian 12's,
# so it lives in a Debian trixie root of its own (debootstrap, then trixie-backports' Mesa) and a
# program built here runs through that root's dynamic loader and libraries.
#
#   .ci/lavapipe-coop.sh make              makes the root once (about 2 minutes, 725 MB) and
#                                          prints its path; a root made before is reused, a
#                                          half-made one (no completion mark) made again
#   .ci/lavapipe-coop.sh run BINARY ARGS   runs BINARY on it (makes the root first if needed)
#   .ci/lavapipe-coop.sh spirv-val ARGS    the root's spirv-val (trixie's SPIRV-Tools knows
#                                          cooperative matrices; Debian 12's does not)
#
# As cargo's runner, test binaries run on it:
#   CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$PWD/.ci/lavapipe-coop.sh run" \
#       cargo test --release --test ops
# (A program a test spawns, such as the CLI in tests/cli.rs, runs with the host's loader and
# Mesa unless it is started through `run` too.)
#
# The root: $CIFS_WGPU_COOP_ROOT, else $XDG_CACHE_HOME/cifs-wgpu/lavapipe-coop-trixie
# (~/.cache when XDG_CACHE_HOME is unset). Making it needs root (or sudo) and the network; it is
# made from the Debian mirror the machine's apt sources name (deb.debian.org if none).
set -euo pipefail

ROOT="${CIFS_WGPU_COOP_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/cifs-wgpu/lavapipe-coop-trixie}"
# Written last: a root without it was interrupted and is made again.
DONE="$ROOT/.cifs-wgpu-complete"
ARCH_LIBS="usr/lib/x86_64-linux-gnu:lib/x86_64-linux-gnu"

sudo_if_needed() {
    if [ "$(id -u)" -ne 0 ]; then sudo "$@"; else "$@"; fi
}

# The Debian mirror of the machine's apt sources (deb822 or one-line format), not its security
# archive.
debian_mirror() {
    local uri
    uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ { print $2 }' | grep -v -e security -e '^$' | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -h '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{ print $2 }' | grep -v security | grep -i debian | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

# Tools from trixie itself, installed into a root made before they were listed too.
TOOLS="spirv-tools"

make_root() {
    if [ -f "$DONE" ]; then
        [ -x "$ROOT/usr/bin/spirv-val" ] || {
            sudo_if_needed chroot "$ROOT" apt-get update -qq
            DEBIAN_FRONTEND=noninteractive sudo_if_needed chroot "$ROOT" apt-get install -y -qq $TOOLS >/dev/null
        }
        return
    fi
    local start=$SECONDS
    if [ -e "$ROOT" ]; then
        echo "lavapipe-coop: $ROOT is half made; making it again" >&2
        sudo_if_needed rm -rf "$ROOT"
    fi
    if ! command -v debootstrap >/dev/null 2>&1; then
        echo "lavapipe-coop: installing debootstrap" >&2
        sudo_if_needed apt-get update -qq
        DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq debootstrap >/dev/null
    fi
    local mirror
    mirror=$(debian_mirror)
    echo "lavapipe-coop: debootstrap trixie from $mirror into $ROOT" >&2
    mkdir -p "$(dirname "$ROOT")"
    sudo_if_needed debootstrap --variant=minbase trixie "$ROOT" "$mirror" >/dev/null
    echo "deb $mirror trixie-backports main" | sudo_if_needed tee "$ROOT/etc/apt/sources.list.d/backports.list" >/dev/null
    sudo_if_needed chroot "$ROOT" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive sudo_if_needed chroot "$ROOT" apt-get install -y -qq -t trixie-backports mesa-vulkan-drivers libvulkan1 >/dev/null
    DEBIAN_FRONTEND=noninteractive sudo_if_needed chroot "$ROOT" apt-get install -y -qq $TOOLS >/dev/null
    sudo_if_needed chroot "$ROOT" apt-get clean
    local icd="$ROOT/usr/share/vulkan/icd.d/lvp_icd.json"
    [ -f "$icd" ] || { echo "lavapipe-coop: no $icd after installing Mesa" >&2; exit 1; }
    sudo_if_needed touch "$DONE"
    echo "lavapipe-coop: made in $((SECONDS - start)) s ($(du -sh "$ROOT" | cut -f1))" >&2
}

case "${1:-}" in
    make)
        make_root
        echo "$ROOT"
        ;;
    run)
        shift
        [ $# -ge 1 ] || { echo "usage: $0 run BINARY [ARGS...]" >&2; exit 2; }
        make_root
        libs="$ROOT/${ARCH_LIBS//:/:$ROOT/}"
        # The root's own loader, so that its glibc serves the binary and Mesa alike; only its
        # lavapipe is offered to the Vulkan loader.
        VK_DRIVER_FILES="$ROOT/usr/share/vulkan/icd.d/lvp_icd.json" exec "$ROOT/lib64/ld-linux-x86-64.so.2" --library-path "$libs" "$@"
        ;;
    spirv-val)
        shift
        make_root
        libs="$ROOT/${ARCH_LIBS//:/:$ROOT/}"
        exec "$ROOT/lib64/ld-linux-x86-64.so.2" --library-path "$libs" "$ROOT/usr/bin/spirv-val" "$@"
        ;;
    *)
        sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
