#!/usr/bin/env bash
# The whole test suite: unit tests (plain build), the same unit tests under
# AddressSanitizer + UndefinedBehaviorSanitizer, the unit tests that start
# threads (meson suite "threads") under ThreadSanitizer, the iotests
# `auto` group once per AIO engine, the `align` group once, the `proto`
# and `nbd` groups once over NBD and `proto` once over vhost-user-blk.
# Ends with "N passed, N failed[, N skipped]", counting individual test cases, and exits
# non-zero if anything failed.
#
# Environment: WERROR=1 builds with --werror (CI sets it); SKIP_ASAN=1 and
# SKIP_TSAN=1 skip the sanitizer passes (for quick local runs only).
set -uo pipefail
cd "$(dirname "$0")/.."
top=$PWD

scripts/deps.sh || { echo "test: could not install dependencies"; exit 1; }

werror=()
[ "${WERROR:-0}" = 1 ] && werror=(--werror)

results=()   # files with "passed failed skipped" lines
summary_dir=$(mktemp -d)
trap 'rm -rf "$summary_dir"' EXIT
status=0

run_unit() {   # NAME BUILDDIR [meson test args] -- [setup args]
    local name=$1 dir=$2; shift 2
    local test_args=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do test_args+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    echo "== unit tests ($name) =="
    local start=$SECONDS
    # A pass that runs a subset of the tests builds only what they need
    # (meson test does, when the directory is merely configured).
    local setup_only=()
    [ ${#test_args[@]} -gt 0 ] && setup_only=(--setup-only)
    if ! scripts/build.sh "${setup_only[@]}" "$dir" "${werror[@]}" "$@"; then
        echo "test: build of $dir failed"
        echo "0 0 0 1" > "$summary_dir/$name"
        status=1
        return
    fi
    rm -f "$dir/meson-logs/testlog.json"
    # Sanitizers: abort on the first report so a finding fails the test.
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
    TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1} \
        meson test -C "$dir" --print-errorlogs --num-processes 2 "${test_args[@]}" \
        >"$summary_dir/$name.log" 2>&1
    local rc=$?
    grep -E '^ *[0-9]+/[0-9]+ ' "$summary_dir/$name.log" | sed 's/^/  /'
    [ $rc -ne 0 ] && { status=1; tail -n 60 "$summary_dir/$name.log"; }
    if [ -f "$dir/meson-logs/testlog.json" ]; then
        python3 scripts/count-tap.py "$dir/meson-logs/testlog.json" \
            "$summary_dir/failures.txt" > "$summary_dir/$name"
    else
        echo "test: no test ran in $dir (did the build fail?)"
        echo "0 0 0 1" > "$summary_dir/$name"
        status=1
    fi
    echo "  ($name: build and tests took $((SECONDS - start)) s)"
}

# The daemon's tests (suite 'daemon': QMP transcripts, qemu-storage-daemon
# side by side, lifecycle) and the rbd driver's (suite 'rbd': against a
# Ceph cluster the test starts, tests/ceph/) run once, in the ASan+UBSan
# pass, where a memory error in the monitor, the command handlers or the
# driver shows; in the plain pass when that one is skipped.
if [ "${SKIP_ASAN:-0}" != 1 ]; then
    run_unit plain build --no-suite daemon --no-suite rbd
    run_unit asan build-asan -- -Db_sanitize=address,undefined -Db_lundef=false
else
    run_unit plain build
fi
if [ "${SKIP_TSAN:-0}" != 1 ]; then
    # Only the tests that start threads: a data race needs two, and TSan
    # slows everything else down for nothing.
    run_unit tsan build-tsan --suite threads -- -Db_sanitize=thread -Db_lundef=false
fi

run_iotests() {   # LABEL SUMMARY-NAME check-args...
    local label=$1 name=$2; shift 2
    echo "== iotests ($label) =="
    tests/iotests/check "$@" --summary "$summary_dir/$name" \
        2>&1 | tee "$summary_dir/$name.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    sed -n "s/^Failures: /iotests ($label): /p" "$summary_dir/$name.log" \
        >> "$summary_dir/failures.txt"
}

if [ -x tests/iotests/check ]; then
    for aio in threads native io_uring; do
        run_iotests "auto group, aio=$aio" "iotests-$aio" -g auto -i "$aio"
    done
    # The padding tests again with the align filter padding, once, over
    # O_DIRECT (the engine below the filter changes nothing in it).
    run_iotests "align group: padding tests on the align filter, -t none" \
        iotests-align -g align -i threads -t none
    # Once, not per engine (an nbd node has no file node): the nbd
    # driver's tests against qemu-nbd and nbdkit, and the protocol-agnostic
    # tests over raw -> nbd -> nbdkit memory.
    run_iotests "groups proto and nbd, over NBD" iotests-nbd -nbd -g proto,nbd
    # Once as well: the protocol-agnostic tests over raw ->
    # virtio-blk-vhost-user -> strata-storage-daemon's vhost-user-blk
    # export -> a 4K-native loop device (needs root; skips say so).
    run_iotests "group proto, over vhost-user-blk" iotests-vhost -vhost -g proto
fi

# What failed, again at the end, where a truncated log still shows it.
if [ -s "$summary_dir/failures.txt" ]; then
    echo "== failures =="
    sed 's/^/  /' "$summary_dir/failures.txt"
fi
python3 - "$summary_dir" <<'PY'
import os, sys
d = sys.argv[1]
p = f = s = 0
for name in sorted(os.listdir(d)):
    path = os.path.join(d, name)
    if name.endswith('.log') or name.endswith('.txt'):
        continue
    with open(path) as fh:
        parts = fh.read().split()
    if len(parts) >= 3:
        p += int(parts[0]); f += int(parts[1]); s += int(parts[2])
    if len(parts) >= 4:
        f += int(parts[3])   # whole binaries that crashed or failed to build
line = f"{p} passed, {f} failed"
if s:
    line += f", {s} skipped"
print(line)
PY
[ $status -eq 0 ] || exit 1
