#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Smoke test of strata-img: create, info, map and bench (both forms, flush
# intervals, vectors, JSON) on a small file and the null driver; convert,
# compare, resize, check and measure on small files (the comparison with
# qemu-img is in iotests 070-074; this runs in the sanitizer builds too).
# Asserts what the commands print, never how fast they ran.
#
#   test-strata-img.sh PATH/TO/strata-img
set -euo pipefail

IMG=${1:?usage: $0 strata-img}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
f=$dir/t.img
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() {  # expect NAME PATTERN TEXT
    grep -qE -- "$2" <<<"$3" || fail "$1: no match for '$2' in:"$'\n'"$3"
}

out=$("$IMG" create "$f" 1M)
expect create "^Formatting '$f', fmt=raw size=1048576$" "$out"
[ "$(stat -c %s "$f")" = 1048576 ] || fail "create: wrong size"

# QEMU-era filenames go through the library's parser, as in qemu-img.
out=$("$IMG" info "blkdebug::$f")
expect "info blkdebug::" "^virtual size: 1 MiB \\(1048576 bytes\\)$" "$out"
out=$("$IMG" info null-co://)
expect "info null-co://" "^virtual size: 1 GiB" "$out"
out=$("$IMG" info "foo:$f" 2>&1) && fail "info of an unknown protocol succeeded"
expect "info foo:" "Unknown protocol 'foo'" "$out"

out=$("$IMG" create -q -o preallocation=falloc "$f.falloc" 64k)
[ -z "$out" ] || fail "create -q printed: $out"
"$IMG" create -o preallocation=bogus "$f.bad" 64k 2>/dev/null && fail "bad preallocation accepted"
"$IMG" create -o size=1 "$f.bad" 64k 2>/dev/null && fail "unknown -o key accepted"

out=$("$IMG" info "$f")
expect info "^virtual size: 1 MiB \(1048576 bytes\)$" "$out"
expect info "^file format: raw$" "$out"
expect info "alignment: request" "$out"

out=$("$IMG" info --output=json "$f")
expect info-json '"virtual-size" : 1048576' "$out"
expect info-json '"request-alignment"' "$out"
expect info-json '"physical-block-size"' "$out"

# The align filter from dotted keys: its node, its alignment and what it
# says about itself; and an option error naming the option and both values.
out=$("$IMG" info --image-opts "driver=align,request-alignment=8k,file.driver=file,file.filename=$f")
expect info-align "^file format: align$" "$out"
expect info-align "^        alignment: request 8192, " "$out"
expect info-align "^        align: request-alignment 8192 \(set\)$" "$out"
out=$("$IMG" info -t none --image-opts "driver=align,request-alignment=256,file.driver=file,file.filename=$f" 2>&1) &&
    fail "align below the file's O_DIRECT alignment accepted"
expect info-align-error "request-alignment: 256 is below the request alignment of node '#block[0-9]+' \([0-9]+\)" "$out"

# create writes the first block so an O_DIRECT probe finds data; the rest
# is a hole.
out=$("$IMG" map --output=json "$f")
expect map-json '"start": 0, "length": 4096, "depth": 0, "present": true, "zero": false, "data": true, "offset": 0' "$out"
expect map-json '"start": 4096, "length": 1044480, .*"zero": true, "data": false' "$out"
out=$("$IMG" map "$f")
expect map "^0 +0x1000 +0 +$f$" "$out"

null='json:{"driver":"null-co","read-zeroes":false,"size":1048576}'
out=$("$IMG" bench -c 1000 -d 4 "$null")
expect bench "^Sending 1000 read requests, 4096 bytes each, 4 in parallel \(starting at offset 0, step size 4096\)$" "$out"
expect bench "^Run completed in [0-9]+\.[0-9]{3} seconds\.$" "$out"
expect bench "^IOPS: " "$out"
expect bench "^Latency at node" "$out"
expect bench "^Padding at " "$out"

out=$("$IMG" bench -q -c 1000 -d 4 --form=callback "$null")
expect bench-callback "^Run completed" "$out"
[ "$(wc -l <<<"$out")" = 2 ] || fail "bench -q printed more than qemu-img's lines"

for form in co callback; do
    for drain in "" --no-drain; do
        out=$("$IMG" bench -w -c 200 -d 4 --flush-interval=50 $drain --form=$form "$f")
        expect "flush $form $drain" "^Sending flush every 50 requests$" "$out"
        expect "flush $form $drain" "^Flushes: [1-9]" "$out"
    done
done

out=$("$IMG" bench -w -c 100 -d 4 -s 8192 --vectors 16 -o 1 --json --pattern=0x5a "$f")
expect bench-json '"vectors" : 16' "$out"
expect bench-json '"iops"' "$out"
# The pattern reached the file: the first byte written went to offset 1.
[ "$(od -An -tx1 -j1 -N1 "$f" | tr -d ' ')" = 5a ] || fail "pattern not written"

"$IMG" bench -c 10 -d 16 --flush-interval=8 -w "$f" 2>/dev/null && fail "flush interval < depth accepted"
"$IMG" bench -c 10 --flush-interval=8 "$f" 2>/dev/null && fail "flush interval on reads accepted"
"$IMG" bench -c 0 "$f" 2>/dev/null && fail "count 0 accepted"
"$IMG" bench -c 10 --vectors 5000 "$f" 2>/dev/null && fail "more vectors than bytes accepted"
"$IMG" bench -c 10 "$dir/missing.img" 2>/dev/null && fail "missing image opened"
# --queues out of range or not a number: one line naming the option.
for q in 0 65 x; do
    err=$("$IMG" bench -c 10 --queues $q "$f" 2>&1) && fail "--queues $q accepted"
    [ "$err" = "strata-img: --queues '$q': the number of queues is between 1 and 64" ] ||
        fail "--queues $q: unexpected message: $err"
done
# --idle-start: the thread sleeps that long before the measured phase,
# which "Run completed" leaves out; a bad value names the option.
start=$(date +%s%N)
out=$("$IMG" bench -c 10 -d 1 --idle-start=300 --json "$f")
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
expect idle-start '"idle_start_ms" : 300' "$out"
[ "$elapsed_ms" -ge 300 ] || fail "--idle-start=300 returned after $elapsed_ms ms"
for v in -1 60001 x; do
    err=$("$IMG" bench -c 10 --idle-start=$v "$f" 2>&1) && fail "--idle-start $v accepted"
    [ "$err" = "strata-img: --idle-start '$v': milliseconds between 0 and 60000" ] ||
        fail "--idle-start $v: unexpected message: $err"
done

# convert: two sources (the first of unaligned size, padded to a sector),
# holes, a zero run inside data, every coroutine count and order.
src=$dir/src.img
head -c 5000 /dev/urandom > "$src.a"
truncate -s 3M "$src"
printf 'x%.0s' {1..100} | dd of="$src" bs=1 seek=70000 conv=notrunc status=none
head -c 65536 /dev/urandom | dd of="$src" bs=64k seek=32 conv=notrunc status=none
dd if=/dev/zero of="$src" bs=64k seek=33 count=2 conv=notrunc status=none
head -c 4096 /dev/urandom | dd of="$src" bs=4k seek=$((35 * 16)) conv=notrunc status=none
for opts in "" "-W -m 16" "-m 1" "-S 0" "-S 64k -W" "-t none -T none"; do
    rm -f "$dir/dst.img"
    # shellcheck disable=SC2086
    "$IMG" convert $opts -f raw -O raw "$src.a" "$src" "$dir/dst.img" ||
        fail "convert $opts"
    [ "$(stat -c %s "$dir/dst.img")" = $((5120 + 3145728)) ] || fail "convert $opts: size"
    cmp -s -n 5000 "$src.a" "$dir/dst.img" || fail "convert $opts: first source"
    cmp -s -i 0:5120 "$src" "$dir/dst.img" || fail "convert $opts: second source"
done
out=$("$IMG" convert -p -n "$src" "$dir/dst.img")
expect convert-p "Copied [0-9]+ bytes, zeroed [0-9]+ bytes, skipped" "$out"
# -n wrote src over the start of dst; dst's extra 5120 bytes are src's
# zero tail, so they compare equal apart from the size.
out=$("$IMG" compare "$src" "$dir/dst.img") || fail "compare with a zero tail"
expect compare "^Warning: Image size mismatch!$" "$out"
"$IMG" convert "$src" "$dir/dst.img"
out=$("$IMG" compare "$src" "$dir/dst.img") || fail "compare after convert"
expect compare "^Images are identical.$" "$out"
printf 'y' | dd of="$dir/dst.img" bs=1 seek=70600 conv=notrunc status=none
out=$("$IMG" compare "$src" "$dir/dst.img") && fail "compare of different images: same"
expect compare "^Content mismatch at offset 70144!$" "$out"
rc=0; "$IMG" compare "$src" "$dir/missing.img" 2>/dev/null || rc=$?
[ $rc = 2 ] || fail "compare: open error gave $rc, not 2"
"$IMG" convert "$dir/missing.img" "$dir/new.img" 2>/dev/null && fail "convert of a missing source"
[ -e "$dir/new.img" ] && fail "convert left a target behind"

out=$("$IMG" resize "$dir/dst.img" +1M)
expect resize "^Image resized.$" "$out"
[ "$(stat -c %s "$dir/dst.img")" = $((4 << 20)) ] || fail "resize: size"
"$IMG" resize "$dir/dst.img" 1M 2>/dev/null && fail "shrink without --shrink"
"$IMG" resize --shrink "$dir/dst.img" -- -3M >/dev/null || fail "relative shrink"
[ "$(stat -c %s "$dir/dst.img")" = $((1 << 20)) ] || fail "resize --shrink: size"
rc=0; "$IMG" check "$src" 2>/dev/null || rc=$?
[ $rc = 63 ] || fail "check gave $rc, not 63"
out=$("$IMG" measure --size 5000)
expect measure "^required size: 5120$" "$out"
echo "ok"
