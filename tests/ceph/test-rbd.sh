#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The rbd driver against a real Ceph cluster (tests/ceph/cluster.sh starts
# one for the run and removes it afterwards, failed or not).  TAP output,
# one line per check:
#   - data at unaligned offsets, across an object boundary, vectored;
#   - flush: with rbd_cache on, another client sees flushed writes while
#     the writer is still open;
#   - discard of whole objects deallocates them (reads zeroes, map);
#   - write-zeroes, unaligned and with unmap;
#   - truncate grows and shrinks the image (rbd info agrees);
#   - snapshot: read-only, shows the data of its time;
#   - errors name the option: pool, image, namespace, snapshot, conf,
#     key-secret; the rbd: filename;
#   - interop, both ways, byte-exact: Strata -> rbd export and qemu-img
#     convert (QEMU's rbd driver); rbd import and qemu-img -> Strata;
#   - the option matrix's and the option sweep's rbd cases.
#
# Usage: test-rbd.sh BUILDDIR
# Skips (TAP "1..0 # SKIP") when Ceph or the rbd driver is missing.
set -u

BUILD=$(cd "${1:?usage: $0 BUILDDIR}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)

if [ -z "${STRATA_CEPH_DIR:-}" ]; then
    if ! "$BUILD/tools/strata-io" -c 'length' 'json:{"driver":"rbd"}' 2>&1 |
            grep -q "pool"; then
        echo "1..0 # SKIP the rbd driver is not built (apt-get install librbd-dev)"
        exit 0
    fi
    # The cluster and the tests get a network namespace of their own with
    # only loopback, where root can make one: librados looks monitors up
    # in DNS when a configuration names none (the option sweep tries such
    # configurations), and nothing of this test is to leave the machine.
    netns=()
    if [ "$(id -u)" = 0 ] && command -v ip >/dev/null &&
       unshare -n true 2>/dev/null; then
        netns=(unshare -n -- sh -c 'ip link set lo up && exec "$@"' netns)
    fi
    "${netns[@]}" "$HERE/cluster.sh" -s 16M -- "$0" "$BUILD"
    rc=$?
    if [ $rc = 77 ]; then
        echo "1..0 # SKIP Ceph is not installed (apt-get install ceph-mon ceph-osd ceph-common)"
        exit 0
    fi
    exit $rc
fi

# Under ASan: glibc's resolver leaks a buffer that librados makes it
# allocate (tests/ceph/lsan.supp).
export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$HERE/lsan.supp"

IO=$BUILD/tools/strata-io
IMG=$BUILD/tools/strata-img
POOL=$STRATA_CEPH_POOL
TMP=$STRATA_CEPH_DIR/t        # removed with the cluster
mkdir -p "$TMP"
MiB=$((1 << 20))
n=0
failed=0

ok() {      # NAME: a passed check
    n=$((n + 1)); echo "ok $n - $1"; [ -n "${RBD_TEST_TIMES:-}" ] && date +"# %s.%N"
}
not_ok() {  # NAME [DETAIL]
    n=$((n + 1)); failed=$((failed + 1))
    echo "not ok $n - $1"
    [ $# -gt 1 ] && printf '%s\n' "$2" | sed 's/^/# /'
}
# check NAME COMMAND...: passes when COMMAND exits 0 (its output shown
# on failure).
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then ok "$name"; else not_ok "$name" "$out"; fi
}
# expect_err NAME PREFIX COMMAND...: COMMAND fails and its message names
# the option ("...: PREFIX...").
expect_err() {
    local name=$1 want=$2 out
    shift 2
    out=$("$@" 2>&1)
    if [ $? -ne 0 ] && printf '%s' "$out" | grep -q ": $want"; then
        ok "$name"
    else
        not_ok "$name" "expected a failure saying '$want', got: $out"
    fi
}

rbd_json() {  # IMAGE [EXTRA]: a json: filename of the image
    printf 'json:{"driver":"rbd","pool":"%s","image":"%s"%s}' "$POOL" "$1" "${2:-}"
}
# A file of SIZE bytes with random data and a few zero runs (so that
# converts meet both).
make_src() {  # FILE SIZE
    head -c "$2" /dev/urandom > "$1"
    dd if=/dev/zero of="$1" bs=64k seek=3 count=5 conv=notrunc status=none
    dd if=/dev/zero of="$1" bs=1M seek=5 count=1 conv=notrunc status=none
}
# Apply "write -P BYTE OFF LEN" to a local reference file.
ref_write() {  # FILE BYTE(decimal) OFF LEN
    head -c "$4" /dev/zero | tr '\0' "\\$(printf '%03o' "$2")" |
        dd of="$1" bs=64k iflag=fullblock seek="$3" oflag=seek_bytes conv=notrunc status=none
}
ref_zero() {  # FILE OFF LEN
    head -c "$3" /dev/zero |
        dd of="$1" bs=64k iflag=fullblock seek="$2" oflag=seek_bytes conv=notrunc status=none
}
export_cmp() {  # IMAGE FILE: rbd export equals FILE
    rbd export --no-progress "$POOL/$1" "$TMP/export.raw" >/dev/null &&
        cmp "$TMP/export.raw" "$2" && rm -f "$TMP/export.raw"
}

# ---- data ------------------------------------------------------------------

# Unaligned writes, one across the 4 MiB object boundary, and a vectored
# one; the same bytes applied to a local copy; rbd export must match.
rbd create --size 8M "$POOL/data" >/dev/null
head -c $((8 * MiB)) /dev/zero > "$TMP/ref"
ops=(-c 'write -P 171 333 1000'
     -c "write -P 17 $((4 * MiB - 777)) 5000"
     -c 'writev -P 34 9001 100 4097 3'
     -c 'read -P 171 333 1000'
     -c "read -P 17 $((4 * MiB - 777)) 5000"
     -c 'readv -P 34 9001 1 4199'
     -c 'read -P 0 0 333')
ref_write "$TMP/ref" 171 333 1000
ref_write "$TMP/ref" 17 $((4 * MiB - 777)) 5000
ref_write "$TMP/ref" 34 9001 4200
check "unaligned writes read back (strata-io -P)" \
    "$IO" "${ops[@]}" "$(rbd_json data)"
check "unaligned writes: rbd export matches byte for byte" \
    export_cmp data "$TMP/ref"
check "unaligned writes with cache.direct (rbd_cache off)" \
    "$IO" -t none -c 'write -P 5 123457 7777' -c 'read -P 5 123457 7777' \
    "$(rbd_json data)"
ref_write "$TMP/ref" 5 123457 7777

# ---- flush -----------------------------------------------------------------

# Writeback cache (rbd_cache on, the default): after a flush another client
# sees the data while the writer is still open.  The writer ends by itself
# (killed, it would keep the image's exclusive lock until the monitor
# declares it dead, ~30 s).
flush_visible() {
    local fifo=$TMP/io.out
    "$IO" -t writeback -c 'write -P 99 2M 64k' -c 'flush' -c 'write -P 98 3M 4k' \
        -c 'flush' -c 'sleep 1500' "$(rbd_json data)" > "$fifo" 2>&1 &
    local pid=$! i
    for i in $(seq 100); do
        [ "$(grep -c '^flush\|^wrote' "$fifo" 2>/dev/null)" -ge 2 ] &&
            grep -q 'at offset 3145728' "$fifo" && break
        sleep 0.05
    done
    ref_write "$TMP/ref" 99 $((2 * MiB)) 65536
    ref_write "$TMP/ref" 98 $((3 * MiB)) 4096
    export_cmp data "$TMP/ref"
    local rc=$?
    # Still open: the check above ran while the writer held the image.
    kill -0 "$pid" 2>/dev/null || { echo "the writer had exited"; rc=1; }
    wait "$pid"
    return $rc
}
check "flush: rbd export sees flushed writes of an open writer" flush_visible

# ---- discard, write-zeroes, block status -----------------------------------

discard_objects() {
    "$IO" -c "discard $((4 * MiB)) $((4 * MiB))" \
          -c "read -P 0 $((4 * MiB)) $((4 * MiB))" "$(rbd_json data)" &&
    ref_zero "$TMP/ref" $((4 * MiB)) $((4 * MiB)) &&
    export_cmp data "$TMP/ref" &&
    # The object map: the second object is gone.
    [ "$(rbd diff --whole-object "$POOL/data" | grep -c data)" = 1 ] &&
    "$IMG" map --output=json "$(rbd_json data)" |
        grep '"start": 4194304, "length": 4194304,' | grep -q '"zero": true, "data": false'
}
check "discard of a whole object: zeroes, deallocated (rbd diff, map)" \
    discard_objects

zeroes() {
    "$IO" -c 'write -z 5000 1000' -c 'read -P 0 5000 1000' \
          -c 'write -z -u 0 4096' -c 'read -P 0 0 4096' \
          -c 'read -P 34 9001 4200' "$(rbd_json data)" &&
    ref_zero "$TMP/ref" 5000 1000 && ref_zero "$TMP/ref" 0 4096 &&
    export_cmp data "$TMP/ref"
}
check "write-zeroes, unaligned and with unmap: rbd export agrees" zeroes

map_vs_qemu() {
    # Allocation as QEMU's rbd driver reports it (both read the object
    # map): the same data/zero runs.
    local s q
    s=$("$IMG" map --output=json "$(rbd_json data)" |
        python3 -c 'import json,sys; print([(e["start"], e["length"], e["data"]) for e in json.load(sys.stdin)])') &&
    q=$(qemu-img map -f raw --output=json "rbd:$POOL/data" |
        python3 -c 'import json,sys; print([(e["start"], e["length"], e["data"]) for e in json.load(sys.stdin)])') &&
    [ "$s" = "$q" ] || { echo "strata: $s"; echo "qemu:   $q"; return 1; }
}
check "block status: strata-img map = qemu-img map on the same image" map_vs_qemu

# ---- truncate --------------------------------------------------------------

truncate_image() {
    # (Output captured, not piped into grep -q: a strata-io killed by
    # SIGPIPE would keep the image's lock for ~30 s.)
    local out
    out=$("$IO" -c 'truncate 12M' -c 'length' -c "write -P 7 $((12 * MiB - 5)) 5" \
        "$(rbd_json data)") && [[ $out == *'12 MiB'* ]] &&
    rbd info "$POOL/data" | grep -q 'size 12 MiB' &&
    out=$("$IO" -c 'truncate 6M' -c 'length' "$(rbd_json data)") &&
    [[ $out == *'6 MiB'* ]] &&
    rbd info "$POOL/data" | grep -q 'size 6 MiB' &&
    truncate -s 6M "$TMP/ref" && export_cmp data "$TMP/ref"
}
check "truncate grows and shrinks the image (rbd info agrees)" truncate_image

# ---- snapshot --------------------------------------------------------------

snapshot_ro() {
    rbd snap create "$POOL/data@before" >/dev/null 2>&1 &&
    "$IO" -c 'write -P 66 0 8192' "$(rbd_json data)" >/dev/null &&
    "$IO" -r -c 'read -P 0 0 4096' -c 'read -P 34 9001 4200' \
        "$(rbd_json data ',"snapshot":"before"')" >/dev/null &&
    "$IO" -c 'read -P 66 0 8192' "$(rbd_json data)" >/dev/null &&
    ! "$IO" -r -c 'write 0 512' "$(rbd_json data ',"snapshot":"before"')" \
        >/dev/null 2>&1
}
check "snapshot: read-only, shows the data of its time" snapshot_ro
expect_err "snapshot without read-only is refused, naming it" \
    "snapshot: rbd snapshots are read-only" \
    "$IO" -c 'length' "$(rbd_json data ',"snapshot":"before"')"
check "snapshot with auto-read-only opens read-only" \
    "$IO" -c 'read -P 0 0 4096' \
    "$(rbd_json data ',"snapshot":"before","auto-read-only":true')"

# ---- reopen ----------------------------------------------------------------

# read-only -> read-write opens a writable handle (librbd refuses writes
# on a read-only one); cache.direct switches rbd_cache; back to read-only.
reopen_modes() {
    local out
    out=$("$IO" -r -c 'reopen -w' -c 'write -P 77 8192 4096' \
        -c 'read -P 77 8192 4096' -c 'reopen -c none' -c 'info' \
        -c 'write -P 78 12288 512' -c 'reopen -r' -c 'write 0 512' \
        "$(rbd_json data)" 2>&1)
    [[ $out == *'wrote 4096/4096 bytes at offset 8192'* &&
       $out == *'rbd_cache off'* &&
       $out == *'wrote 512/512 bytes at offset 12288'* &&
       $out != *'at offset 0'* ]] || { echo "$out"; return 1; }
    "$IO" -r -c 'read -P 77 8192 4096' -c 'read -P 78 12288 512' "$(rbd_json data)"
}
check "reopen: read-only to read-write, cache.direct, back to read-only" reopen_modes
expect_err "reopen: a snapshot stays read-only" "snapshot: rbd snapshots are read-only" \
    "$IO" -r -c 'reopen -w' "$(rbd_json data ',"snapshot":"before"')"

# ---- errors ----------------------------------------------------------------

expect_err "missing pool: the error names pool" "pool: cannot open pool 'nopool'" \
    "$IO" -c length 'json:{"driver":"rbd","pool":"nopool","image":"data"}'
expect_err "missing image: the error names image" "image: cannot open rbd image" \
    "$IO" -c length "$(rbd_json noimage)"
expect_err "missing namespace: the error names namespace" "namespace: cannot open" \
    "$IO" -c length "$(rbd_json data ',"namespace":"nons"')"
expect_err "missing snapshot: the error names snapshot" "snapshot: cannot open" \
    "$IO" -r -c length "$(rbd_json data ',"snapshot":"nosnap"')"
expect_err "unreadable conf: the error names conf" "conf: cannot read" \
    "$IO" -c length "$(rbd_json data ",\"conf\":\"$TMP/nosuch.conf\"")"
expect_err "missing secret: the error names key-secret" "key-secret: " \
    "$IO" -c length "$(rbd_json data ',"key-secret":"nokey"')"
expect_err "wrong key: the connection is refused" "cannot connect to the Ceph cluster" \
    "$IO" --object secret,id=k0,data=AQBqdWFyZXVuY29ubmVjdGVka2V5MDAwMDAwMA== -c length \
    "$(rbd_json data ",\"conf\":\"$STRATA_CEPH_NOKEY_CONF\",\"key-secret\":\"k0\"")"
expect_err "a configuration without monitors says so" "no monitors found" \
    "$IO" -c length "$(rbd_json data ',"conf":"/dev/null"')"
check "key-secret: the key from a secret object, no keyring" \
    "$IO" --object "secret,id=k0,data=$STRATA_CEPH_KEY" -c 'read -P 66 0 8192' \
    "$(rbd_json data ",\"conf\":\"$STRATA_CEPH_NOKEY_CONF\",\"key-secret\":\"k0\"")"
expect_err "rbd: filename with an unsupported key names it" \
    "rbd: filename option 'foo' is not supported" \
    "$IO" -c length "rbd:$POOL/data:foo=bar"
check "rbd: filename with a snapshot" \
    "$IO" -r -c 'read -P 34 9001 4200' "rbd:$POOL/data@before"
namespace_image() {
    rbd namespace create "$POOL/ns1" && rbd create --size 1M "$POOL/ns1/nsimg" &&
    "$IO" -c 'write -P 9 100 512' "rbd:$POOL/ns1/nsimg" >/dev/null &&
    "$IO" -c 'read -P 9 100 512' "$(rbd_json nsimg ',"namespace":"ns1"')" >/dev/null &&
    rbd export --no-progress "$POOL/ns1/nsimg" - 2>/dev/null |
        cmp -s -i 100:0 -n 512 - <(head -c 512 /dev/zero | tr '\0' '\011')
}
check "namespace: rbd:POOL/NS/IMAGE and the namespace option, rbd export agrees" \
    namespace_image
expect_err "rbd: filename with an empty image names it" "rbd: 'rbd/': the image name is empty" \
    "$IO" -c length "rbd:$POOL/"
check "rbd: filename with conf and id, as QEMU spells it" \
    "$IO" -c 'read -P 66 0 8192' "rbd:$POOL/data:conf=$CEPH_CONF:id=admin"

# ---- interop ---------------------------------------------------------------

make_src "$TMP/src.raw" $((9 * MiB + 4096))
SZ=$(stat -c %s "$TMP/src.raw")

# Strata writes (convert into an existing image), the others read.
to_rbd_export() {
    rbd create --size "$((SZ / 1024))K" "$POOL/s2r" &&
    "$IMG" convert -n -f raw -O raw "$TMP/src.raw" "$(rbd_json s2r)" &&
    export_cmp s2r "$TMP/src.raw"
}
check "interop: Strata writes, rbd export reads the same bytes" to_rbd_export
to_qemu() {
    qemu-img convert -f raw -O raw "rbd:$POOL/s2r" "$TMP/q.raw" &&
    cmp "$TMP/q.raw" "$TMP/src.raw"
}
check "interop: Strata writes, qemu-img convert (QEMU's rbd) reads the same bytes" to_qemu

make_src "$TMP/src2.raw" $((9 * MiB + 4096))
from_rbd_import() {
    rbd import --no-progress "$TMP/src2.raw" "$POOL/r2s" >/dev/null &&
    "$IMG" convert -O raw "$(rbd_json r2s)" "$TMP/s.raw" &&
    cmp "$TMP/s.raw" "$TMP/src2.raw"
}
check "interop: rbd import writes, Strata reads the same bytes" from_rbd_import
from_qemu() {
    qemu-img convert -f raw -O raw "$TMP/src.raw" "rbd:$POOL/q2s" &&
    "$IMG" convert -O raw "rbd:$POOL/q2s" "$TMP/s2.raw" &&
    cmp "$TMP/s2.raw" "$TMP/src.raw" &&
    "$IMG" compare -f raw -F raw "$TMP/src.raw" "rbd:$POOL/q2s" >/dev/null
}
check "interop: qemu-img convert (QEMU's rbd) writes, Strata reads the same bytes" from_qemu

# ---- the option matrix and sweep -------------------------------------------

for p in /option-matrix/rbd /option-matrix/rbd/common /option-matrix/rbd/refused; do
    check "test-option-matrix -p $p" "$BUILD/tests/unit/test-option-matrix" -p "$p"
done
check "test-option-sweep -p /option-sweep/rbd" \
    "$BUILD/tests/unit/test-option-sweep" -p /option-sweep/rbd

echo "1..$n"
[ $failed = 0 ]
