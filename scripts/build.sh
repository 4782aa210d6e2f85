#!/usr/bin/env bash
# Configure (once) and build one build directory.
#   scripts/build.sh [--setup-only] DIR [meson setup args...]
# --setup-only configures without building (`meson test` then builds just
# what the tests it runs need).
set -euo pipefail
cd "$(dirname "$0")/.."
setup_only=0
if [ "${1:-}" = --setup-only ]; then
    setup_only=1
    shift
fi
dir=${1:-build}; shift || true
if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" "$@" >/dev/null
fi
[ $setup_only = 1 ] && exit 0
ninja -C "$dir" >/dev/null || ninja -C "$dir"
