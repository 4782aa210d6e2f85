#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Smoke test of floor-bench (the control of compare's depth-1 rows): each
# engine built reads and writes a small file on /dev/shm with O_DIRECT and
# reports every request; the writes reach the file; bad options get one
# line naming the option.  Asserts what it did, never how fast.
#
#   test-floor-bench.sh PATH/TO/floor-bench ENGINE...
set -euo pipefail

FLOOR=${1:?usage: $0 floor-bench ENGINE...}
shift
dir=$(mktemp -d /dev/shm/floor-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
f=$dir/t.img
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() {  # expect NAME PATTERN TEXT
    grep -qE -- "$2" <<<"$3" || fail "$1: no match for '$2' in:"$'\n'"$3"
}

if ! dd if=/dev/zero of="$f" bs=4k count=1 oflag=direct status=none 2>/dev/null; then
    echo "SKIP: /dev/shm takes no O_DIRECT here (tmpfs before Linux 6.6)"
    exit 77
fi
for e in "$@"; do
    head -c 1048576 /dev/urandom > "$f"
    out=$("$FLOOR" -e "$e" -c 300 "$f")
    expect "$e read" "\"engine\": \"$e\", \"op\": \"read\", \"requests\": 300," "$out"
    expect "$e read" '"iops": [0-9]+\.[0-9]' "$out"
    # 300 writes of 4 KiB from offset 0 wrap past the 256 blocks: all zero.
    out=$("$FLOOR" -e "$e" -w -c 300 --idle-start=10 "$f")
    expect "$e write" "\"op\": \"write\", \"requests\": 300,.*\"idle_start_ms\": 10" "$out"
    cmp -s "$f" <(head -c 1048576 /dev/zero) || fail "$e: the writes did not reach the file"
done

bad() {  # bad MESSAGE ARGS...
    local msg=$1 err
    shift
    err=$("$FLOOR" "$@" 2>&1) && fail "accepted: $*"
    [ "$err" = "$msg" ] || fail "$*: unexpected message: $err"
}
bad "floor-bench: -e 'spdk': io_uring or libaio (as built)" -e spdk "$f"
bad "floor-bench: -c '0': a number between 1 and 1099511627776" -c 0 -e "$1" "$f"
bad "floor-bench: -s '1000': a number between 4096 and 67108864" -s 1000 -e "$1" "$f"
bad "floor-bench: -s '6144': a multiple of 4096 bytes (O_DIRECT)" -s 6144 -e "$1" "$f"
bad "floor-bench: --idle-start 'x': a number between 0 and 60000" --idle-start=x -e "$1" "$f"
bad "floor-bench: $dir/missing: No such file or directory" -e "$1" "$dir/missing"
echo ok
