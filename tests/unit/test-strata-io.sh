#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Smoke test of strata-io: output lines (timings filtered) and exit codes
# against mem nodes and a temporary raw file, plus cross-checks with
# qemu-io: data written by one tool is read back and verified by the other,
# and a set of commands prints the same lines through both.
#
# Usage: test-strata-io.sh /path/to/strata-io
set -u

IO=${1:?usage: $0 /path/to/strata-io}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/strata-io-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

MEM='json:{"driver":"mem","size":"1M","align":4096}'
failures=0
checks=0

# Timing numbers vary: keep the shape of the line, drop the numbers.
filter() {
    sed -E -e 's/^([^,]+, [0-9]+ ops; ).*/\1TIME/' \
           -e 's/^([0-9]+,[0-9]+),[^,]+,[^,]+,[^,]+$/\1,TIME/'
}

# expect NAME RC EXPECTED-OUTPUT -- COMMAND...
# Runs COMMAND with stderr merged into stdout, filters timings and compares.
expect() {
    local name=$1 want_rc=$2 want=$3
    shift 4
    local out rc
    out=$("$@" 2>&1)
    rc=$?
    out=$(printf '%s\n' "$out" | filter)
    checks=$((checks + 1))
    if [ "$rc" != "$want_rc" ] || [ "$out" != "$want" ]; then
        failures=$((failures + 1))
        echo "FAIL: $name (exit $rc, expected $want_rc)"
        diff -u <(printf '%s\n' "$want") <(printf '%s\n' "$out") | sed 's/^/    /'
    else
        echo "ok: $name"
    fi
}

# ---- mem node ---------------------------------------------------------------

expect "unaligned write and verified read" 0 \
"wrote 1000/1000 bytes at offset 333
1000 bytes, 1 ops; TIME
read 1000/1000 bytes at offset 333
1000 bytes, 1 ops; TIME
read 333/333 bytes at offset 0
333 bytes, 1 ops; TIME" -- \
    "$IO" -c 'write -P 0xab 333 1000' -c 'read -P 0xab 333 1000' \
          -c 'read -P 0 0 333' "$MEM"

expect "hex dump" 0 \
"00000148:  00 00 00 00 00 61 61 61 61 61 61 61 61 61 61 61  .....aaaaaaaaaaa
00000158:  61 61 61 61  aaaa
read 20/20 bytes at offset 328
20 bytes, 1 ops; TIME" -- \
    "$IO" -c 'write -q -P 0x61 333 100' -c 'read -v 328 20' "$MEM"

expect "pattern mismatch fails the command" 1 \
"Pattern verification failed at offset 4100, 10 bytes
read 512/512 bytes at offset 4096
512 bytes, 1 ops; TIME" -- \
    "$IO" -c 'write -q -P 1 4096 512' -c 'write -q -P 2 4100 1' \
          -c 'read -P 1 -s 4 -l 10 4096 512' -c 'read -q -P 1 -s 5 4096 512' \
          "$MEM"

expect "pattern mismatch, quiet" 1 \
"Pattern verification failed at offset 4096, 512 bytes" -- \
    "$IO" -c 'write -q -P 1 4096 512' -c 'write -q -P 2 4100 1' \
          -c 'read -q -P 1 4096 512' "$MEM"

expect "vectored write, zeroes, discard, CSV" 0 \
"wrote 5560/5560 bytes at offset 4097
5.430 KiB, 1 ops; TIME
read 5560/5560 bytes at offset 4097
5.430 KiB, 1 ops; TIME
wrote 5000/5000 bytes at offset 10000
4.883 KiB, 1 ops; TIME
discard 8192/8192 bytes at offset 16384
8 KiB, 1 ops; TIME
8192,1,TIME" -- \
    "$IO" -c 'writev -P 0x3c 4097 511 1 2048 3000' \
          -c 'readv -P 0x3c 4097 511 1 2048 3000' \
          -c 'write -z 10000 5000' -c 'read -q -P 0 10000 5000' \
          -c 'discard 16k 8k' -c 'read -C 16k 8k' "$MEM"

expect "aio requests complete by aio_flush" 0 \
"wrote 100/100 bytes at offset 65536
100 bytes, 1 ops; TIME
wrote 100/100 bytes at offset 65636
100 bytes, 1 ops; TIME" -- \
    "$IO" -c 'aio_write -P 0x11 65536 100' -c 'aio_write -P 0x22 65636 100' \
          -c 'aio_flush' -c 'read -q -P 0x11 65536 100' \
          -c 'read -q -P 0x22 65636 100' "$MEM"

expect "misaligned buffers" 0 "" -- \
    "$IO" -m -c 'writev -q -P 7 1 4095 4097' -c 'readv -q -P 7 1 4095 4097' \
          -c 'read -q -P 0 0 1' "$MEM"

expect "request past the end fails with EIO" 1 \
"read failed: Input/output error
write failed: Input/output error" -- \
    "$IO" -c 'read 1M 1' -c 'write 1048000 1000' "$MEM"

expect "length, truncate, alloc, map" 0 \
"1 MiB
2 MiB
4096/8192 bytes allocated at offset 4 KiB
4 KiB (0x1000) bytes not allocated at offset 0 bytes (0x0)
4 KiB (0x1000) bytes     allocated at offset 4 KiB (0x1000)
1.992 MiB (0x1fe000) bytes not allocated at offset 8 KiB (0x2000)" -- \
    "$IO" -c 'length' -c 'truncate 2M' -c 'length' -c 'write -q 4k 4k' \
          -c 'alloc 4k 8k' -c 'map' "$MEM"

expect "argument errors" 1 \
"Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- x
bad argument count 1 to read, expected at least 2 arguments
command \"nosuch\" not found
-u requires -z to be specified
300 is not a valid pattern byte" -- \
    "$IO" -c 'read x 1' -c 'read 0' -c 'nosuch' -c 'write -u 0 1' \
          -c 'write -P 300 0 1' "$MEM"

# qemu-io's cvtnum: leading whitespace (a TAB; the line splits at spaces
# only), '+', "1.k", fractions rounded half up, hex with a suffix warns.
expect "numbers as qemu-io reads them" 1 \
"read 1/1 bytes at offset 8192
1 bytes, 1 ops; TIME
read 1/1 bytes at offset 1024
1 bytes, 1 ops; TIME
read 1/1 bytes at offset 1
1 bytes, 1 ops; TIME
strata-io: warning: Using a multiplier suffix on hex numbers is deprecated: 0x1k
read 1/1 bytes at offset 1024
1 bytes, 1 ops; TIME
Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- 1.5
Parsing error: argument too large -- 8.0E" -- \
    "$IO" -c "read $(printf '\t')8k +1" -c 'read 1.k 1' -c 'read 0.0005k 1' \
          -c 'read 0x1k 1' -c 'read 1.5 1' -c 'read 8.0E 1' "$MEM"

expect "read-only image refuses writes" 1 \
"strata-io: Block node is read-only
read 1/1 bytes at offset 0
1 bytes, 1 ops; TIME" -- \
    "$IO" -r -c 'write 0 1' -c 'read 0 1' "$MEM"

expect "no image open" 1 "no file open, try 'help open'" -- \
    "$IO" -c 'read 0 1'

expect "open and close" 0 \
"1 MiB
wrote 1/1 bytes at offset 0
1 bytes, 1 ops; TIME" -- \
    "$IO" -c "open $MEM" -c 'length' -c 'close' \
          -c 'open -o driver=mem,size=4k' -c 'write 0 1'

expect "commands from stdin, quit stops" 0 "1 MiB" -- \
    bash -c "printf 'length\nquit\nlength\n' | '$IO' '$MEM'"

expect "bad open fails with exit 1" 1 \
"strata-io: can't open device json:{\"driver\":\"mem\"}: size: missing" -- \
    "$IO" -c 'length' 'json:{"driver":"mem"}'

# ---- raw file ------------------------------------------------------------------

IMG=$TMP/test.img
truncate -s 1M "$IMG"

expect "raw file: write, read back, flush" 0 \
"wrote 4096/4096 bytes at offset 512
4 KiB, 1 ops; TIME
read 4096/4096 bytes at offset 512
4 KiB, 1 ops; TIME" -- \
    "$IO" -c 'write -P 0x5a 512 4k' -c 'read -P 0x5a 512 4k' -c 'flush' "$IMG"

expect "raw file with -n (O_DIRECT where possible)" 0 "" -- \
    "$IO" -n -c 'write -q -P 0x77 333 1000' -c 'read -q -P 0x77 333 1000' \
          -c 'read -q -P 0x5a 1333 3275' "$IMG"

# ---- cross-checks with qemu-io ----------------------------------------------------

if ! command -v qemu-io >/dev/null 2>&1; then
    echo "skip: qemu-io cross-checks (qemu-io not installed; apt-get install qemu-utils)"
else
    expect "qemu-io reads what strata-io wrote" 0 \
"read 1000/1000 bytes at offset 333
1000 bytes, 1 ops; TIME
read 3275/3275 bytes at offset 1333
3.198 KiB, 1 ops; TIME" -- \
        qemu-io -f raw -c 'read -P 0x77 333 1000' -c 'read -P 0x5a 1333 3275' "$IMG"

    qemu-io -f raw -c 'write -q -P 0xe1 65535 3' "$IMG" >/dev/null 2>&1
    expect "strata-io reads what qemu-io wrote" 0 "" -- \
        "$IO" -c 'read -q -P 0xe1 65535 3' -c 'read -q -P 0 65534 1' \
              -c 'read -q -P 0 65538 1' "$IMG"

    # The same commands through both tools print the same lines.
    cmds=(-c 'write -P 0xab 0 512' -c 'read -v 0 40' -c 'read -P 0xac 0 512'
          -c 'readv 0 512 512' -c 'writev -P 1 0 100 200' -c 'write -z 4k 4k'
          -c 'discard 0 4k' -c 'read -C 0 512' -c 'length' -c 'read 1M 512'
          -c 'read x 1' -c 'write -u 0 1' -c 'read -l 10 0 1' -c 'sleep 1')
    truncate -s 1M "$TMP/q.img" "$TMP/s.img"
    want=$(qemu-io -f raw "${cmds[@]}" "$TMP/q.img" 2>&1; echo "exit $?")
    want=$(printf '%s\n' "$want" | filter)
    expect "same output as qemu-io" 0 "$want" -- \
        bash -c '"$0" "$@"; echo "exit $?"' "$IO" "${cmds[@]}" "$TMP/s.img"
    checks=$((checks + 1))
    if cmp -s "$TMP/q.img" "$TMP/s.img"; then
        echo "ok: same image contents as qemu-io"
    else
        failures=$((failures + 1))
        echo "FAIL: images written by qemu-io and strata-io differ"
    fi
fi

# O_DIRECT on tmpfs takes no non-blocking I/O (RWF_NOWAIT refused): the
# file node says so, and io_uring's requests, sent to its workers at once
# (IOSQE_ASYNC) at low depth, still read back what was written.
if [ -d /dev/shm ] && [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then
    SHM=$(mktemp /dev/shm/strata-io-nowait.XXXXXX)
    truncate -s 1M "$SHM"
    out=$("$IO" -t none -i io_uring -c 'write -q -P 0x3c 4k 8k' \
          -c 'aio_write -q -P 0x3d 64k 4k' -c 'aio_write -q -P 0x3e 68k 4k' \
          -c aio_flush -c 'read -q -P 0x3c 4k 8k' -c 'read -q -P 0x3d 64k 4k' \
          -c 'read -q -P 0x3e 68k 4k' -c info "$SHM" 2>&1)
    rc=$?
    rm -f "$SHM"
    checks=$((checks + 1))
    if [ $rc = 0 ] && ! grep -q "verification failed" <<<"$out" &&
       grep -q "no non-blocking I/O on this file (RWF_NOWAIT refused): io_uring" <<<"$out"; then
        echo "ok: tmpfs O_DIRECT with io_uring: punted at once, data read back"
    else
        failures=$((failures + 1))
        echo "FAIL: tmpfs O_DIRECT with io_uring (exit $rc)"
        printf '%s\n' "$out" | grep -iE "fail|file:|error" | sed 's/^/    /'
    fi
else
    echo "skip: /dev/shm is not a tmpfs (the RWF_NOWAIT check needs one)"
fi

# --poll-max-ns: a number of nanoseconds in [0, INT64_MAX], else an error
# naming the option and the value (the parser strata-img bench shares).
for bad in -1 abc 9223372036854775808; do
    expect "--poll-max-ns $bad refused" 1 \
"strata-io: --poll-max-ns '$bad': must be a number of nanoseconds in [0, 9223372036854775807]" -- \
        "$IO" --poll-max-ns "$bad" -c 'read 0 512' "$MEM"
done
expect "--poll-max-ns INT64_MAX accepted" 0 \
"read 512/512 bytes at offset 0
512 bytes, 1 ops; TIME" -- \
    "$IO" --poll-max-ns 9223372036854775807 -c 'read 0 512' "$MEM"

echo "$((checks - failures))/$checks checks passed"
[ "$failures" -eq 0 ]
