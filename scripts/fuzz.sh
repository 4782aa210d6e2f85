#!/usr/bin/env bash
# Build the fuzz harnesses with libFuzzer and run them (docs/fuzzing.md).
#
#   scripts/fuzz.sh [--time SECONDS] [--jobs N] [TARGET...]
#
# TARGET: options, request, qmp, nbd, vhost-user, virtqueue (default: all), each run for SECONDS
# (default 60).  Builds build-fuzz with clang-14, the library instrumented
# with -fsanitize=fuzzer-no-link,address,undefined.  New inputs go to
# var/fuzz/corpus/<target>/ (the checked-in tests/fuzz/corpus/<target>/ is
# read as seeds); crashes to var/fuzz/crashes/<target>-*, then minimised
# next to them (*.min).  Copy a minimised crash into
# tests/fuzz/regressions/<target>/ once fixed: make check replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
time=60
jobs=1
targets=()
while [ $# -gt 0 ]; do
    case $1 in
        --time) time=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -eq 0 ] && targets=(options request qmp nbd vhost-user virtqueue)

scripts/deps.sh
if ! command -v clang-14 >/dev/null || \
   ! ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
    echo "fuzz: installing clang-14 and libclang-rt-14-dev"
    SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang-14 libclang-rt-14-dev >/dev/null
fi

san='-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined'
if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang-14 meson setup build-fuzz -Dfuzzing=true -Db_lundef=false \
        -Dbuildtype=debugoptimized -Dc_args="$san" \
        -Dc_link_args='-fsanitize=address,undefined' >/dev/null
fi
ninja -C build-fuzz $(printf 'tests/fuzz/fuzz-%s ' "${targets[@]}")

status=0
for t in "${targets[@]}"; do
    work=var/fuzz/corpus/$t
    crashes=var/fuzz/crashes
    mkdir -p "$work" "$crashes"
    echo "== fuzz $t for ${time}s =="
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        build-fuzz/tests/fuzz/fuzz-$t -max_total_time="$time" -jobs="$jobs" \
        -workers="$jobs" -print_final_stats=1 \
        -artifact_prefix="$crashes/$t-" "$work" "tests/fuzz/corpus/$t" \
        2>&1 | tee "var/fuzz/$t.log" | grep -E '^#[0-9]+.*(DONE|pulse|REDUCE|NEW)|ERROR|SUMMARY|stat::' | tail -n 8 || true
    for c in "$crashes/$t"-*; do
        [ -e "$c" ] || continue
        case $c in *.min) continue ;; esac
        [ -e "$c.min" ] && continue
        status=1
        echo "fuzz: $t found $c; minimising"
        build-fuzz/tests/fuzz/fuzz-$t -minimize_crash=1 -runs=10000 \
            -exact_artifact_path="$c.min" "$c" >/dev/null 2>&1 || true
    done
done
exit $status
