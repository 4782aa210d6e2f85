#!/usr/bin/env bash
# Build the fuzz harnesses with libFuzzer and run them (docs/fuzzing.md).
#
#   scripts/fuzz.sh [--time SECONDS] [--cpu SECONDS] [--jobs N] [TARGET...]
#
# TARGET: options, request, qmp, nbd, vhost-user, virtqueue (default: all),
# each run for SECONDS of wall time (--time, default 60), or until it has
# used SECONDS of CPU (--cpu: on a shared machine the fuzzer runs at nice
# 19 and gets what is left, so ask for CPU, not wall time).  Builds
# build-fuzz with clang-14, the library instrumented with
# -fsanitize=fuzzer-no-link,address,undefined.  New inputs go to
# var/fuzz/corpus/<target>/ (the checked-in tests/fuzz/corpus/<target>/ is
# read as seeds); crashes, leaks and timeouts (over 60 s) to
# var/fuzz/crashes/<target>-*, then minimised next to them (*.min); slow
# units are listed, not minimised.  Each target ends with a line giving its
# CPU seconds, executions per second and edges (cov).  Copy a minimised
# crash into tests/fuzz/regressions/<target>/ once fixed: make check
# replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
time=60
cpu=
jobs=1
targets=()
while [ $# -gt 0 ]; do
    case $1 in
        --time) time=$2; shift 2 ;;
        --cpu) cpu=$2; time=86400; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
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

# CPU seconds (user + system) used so far by process @1, its descendants
# and the children they have reaped (libFuzzer's -jobs runs workers).
cpu_of() {
    local s c
    s=$(awk -v t="$(getconf CLK_TCK)" '{ print int(($14 + $15 + $16 + $17) / t) }' \
        "/proc/$1/stat" 2>/dev/null || echo 0)
    for c in $(pgrep -P "$1"); do
        s=$((s + $(cpu_of "$c")))
    done
    echo "$s"
}

status=0
for t in "${targets[@]}"; do
    work=var/fuzz/corpus/$t
    crashes=var/fuzz/crashes
    mkdir -p "$work" "$crashes"
    # Slow units of an earlier run are no findings to minimise again.
    rm -f "$crashes/$t"-slow-unit-*
    echo "== fuzz $t for ${cpu:+${cpu}s of CPU}${cpu:-${time}s} =="
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        nice -n 19 build-fuzz/tests/fuzz/fuzz-$t -max_total_time="$time" \
        $([ "$jobs" -gt 1 ] && echo "-jobs=$jobs -workers=$jobs") \
        -timeout=60 -print_final_stats=1 \
        -artifact_prefix="$crashes/$t-" "$work" "tests/fuzz/corpus/$t" \
        >"var/fuzz/$t.log" 2>&1 &
    pid=$!
    used=0
    while kill -0 "$pid" 2>/dev/null; do
        sleep 2
        now=$(cpu_of "$pid")
        [ "$now" -gt "$used" ] && used=$now
        if [ -n "$cpu" ] && [ "$used" -ge "$cpu" ]; then
            kill -INT "$pid" 2>/dev/null || true
            break
        fi
    done
    wait "$pid" || true
    grep -E 'ERROR|SUMMARY|Test unit written' "var/fuzz/$t.log" | tail -n 8 || true
    last=$(grep -E '^#[0-9]+' "var/fuzz/$t.log" | tail -n 1)
    echo "fuzz: $t: cpu ${used}s, $(grep -o 'average_exec_per_sec: *[0-9]*' \
        "var/fuzz/$t.log" | grep -o '[0-9]*$' || echo ?) exec/s," \
        "$(echo "$last" | grep -o 'cov: [0-9]*') edges, $(echo "$last" |
        grep -o 'corp: [^ ]*') inputs"
    for c in "$crashes/$t"-*; do
        [ -e "$c" ] || continue
        case $c in
            *.min) continue ;;
            *slow-unit-*) echo "fuzz: $t: slow input $c"; continue ;;
        esac
        [ -e "$c.min" ] && continue
        status=1
        echo "fuzz: $t found $c; minimising"
        build-fuzz/tests/fuzz/fuzz-$t -minimize_crash=1 -runs=10000 \
            -exact_artifact_path="$c.min" "$c" >/dev/null 2>&1 || true
    done
done
exit $status
