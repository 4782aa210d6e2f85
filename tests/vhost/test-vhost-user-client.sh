#!/usr/bin/env bash
# The virtio-blk-vhost-user driver against two back ends (TAP).
# SPDX-License-Identifier: MIT
#
# Usage: test-vhost-user-client.sh STRATA_DAEMON STRATA_IO STRATA_IMG
#
# For each back end, strata-storage-daemon's vhost-user-blk export and
# qemu-storage-daemon 7.2's, over a raw file with discard=unmap and 2
# queues:
#   round-trip   writes at unaligned offsets and lengths, vectored and
#                larger than one virtio-blk request (split at max_transfer
#                and at size_max), read back through the driver; the
#                back end's file then equals a file qemu-io wrote with the
#                same commands
#   flush        a flush after a write reaches the back end as a request;
#                the 512 bytes the driver bounced are in the node's
#                bytes_bounced
#   fua          a FUA write goes out as the write and a flush and reads
#                back, through the driver and in the file
#   blk-size     a back end with logical-block-size=4096 (blk_size 4096):
#                the driver node's request_alignment is 4096, and a
#                512-byte write inside a block (read-modify-write on the
#                node) round-trips, through the driver and in the file
#   polling      with --poll-max-ns the client polls its used ring: data
#                round-trips and 3 of 4 completions come without a call
#   zeroes       discard and write-zeroes read back as zeroes, through the
#                driver and in the file
#   two-queues   concurrent requests with num-queues=2 use both queues and
#                land where they should
#   killed       the back end is SIGKILLed under 64 writes, 16 in flight
#                (queue-size 16) and 48 waiting for a slot: the client
#                fails them all (ECONNRESET/ENOTCONN), says once which back
#                end it lost and why, and exits, it does not hang or crash
#   killed-bounce  the same under 1 MiB writes at depth 64: 16 fill the
#                bounce pool and 48 hold a slot while they wait for pages
# then query-blockstats of a daemon with a virtio-blk-vhost-user node
# (the driver's bounce copies), the open errors: no socket, more queues
# than the back end has, a read-only device opened (or reopened)
# read-write; and a reopen to read-only and back.  Skips (TAP), saying
# why, without qemu-storage-daemon for its cases and without qemu-io for
# the round-trip's file comparison (QEMU_IO= in the environment pretends
# it is missing).  Every client run is under `timeout 30`; the EXIT trap
# kills the daemons and removes the work directory with the sockets.
set -uo pipefail

daemon=${1:?usage: test-vhost-user-client.sh STRATA_DAEMON STRATA_IO STRATA_IMG}
# Each client run is bounded: a hang fails its case (rc=124) instead of
# the whole test timing out with nothing said.
sio=${2:?}
simg=${3:?}
run_sio() { timeout 30 "$sio" "$@"; }
qsd=$(command -v qemu-storage-daemon || true)
qio=${QEMU_IO-$(command -v qemu-io || true)}

work=$(mktemp -d /tmp/strata-vhost-client-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill -9 "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    rm -rf "$work"
}
# reap PID: wait for PID (returning its status) and drop it from pids, so
# that cleanup never signals a process that reused the number.
reap() {
    local rc keep=() p
    wait "$1" 2>/dev/null
    rc=$?
    for p in "${pids[@]}"; do
        [ "$p" = "$1" ] || keep+=("$p")
    done
    pids=("${keep[@]}")
    return $rc
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

n=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
notok() { n=$((n + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "# $l"; done; }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }

# start KIND IMG SOCK [WRITABLE [EXPORT-OPTS]]: a back end of KIND (strata,
# qsd) on IMG, EXPORT-OPTS (",key=value...") appended to its --export;
# sets dpid.
start() {
    local kind=$1 img=$2 sock=$3 writable=${4:-on} extra=${5:-} i
    local bd="driver=file,node-name=disk,filename=$img,discard=unmap"
    local ex="type=vhost-user-blk,id=vub0,node-name=disk,addr.type=unix,addr.path=$sock,writable=$writable,num-queues=2$extra"
    rm -f "$sock"
    if [ "$kind" = strata ]; then
        "$daemon" --blockdev "$bd" --export "$ex" 2>>"$work/$kind.log" &
    else
        "$qsd" --blockdev "$bd" --export "$ex" 2>>"$work/$kind.log" &
    fi
    dpid=$!
    pids+=("$dpid")
    for ((i = 0; i < 500; i++)); do
        [ -S "$sock" ] && return 0
        kill -0 "$dpid" 2>/dev/null || break
        sleep 0.01
    done
    echo "# $kind back end did not start:"; sed 's/^/# /' "$work/$kind.log"
    return 1
}

stop() {
    kill "$dpid" 2>/dev/null
    reap "$dpid"
}

# vu_stat NAME: the number after NAME in the driver node's part of
# strata-io's info output ($out).
vu_stat() {
    sed -n '/node vu /,$p' <<<"$out" | sed -n "s/.*$1 \([0-9]*\).*/\1/p" | head -1
}

# pattern BYTE LEN: LEN bytes of value BYTE on stdout.
pattern() {
    head -c "$2" /dev/zero | tr '\0' "\\$(printf %o "$1")"
}

node() {    # SOCK [MEMBERS]: json: filename of raw over the driver
    printf 'json:{"driver":"raw","file":{"driver":"virtio-blk-vhost-user","node-name":"vu","path":"%s"%s}}' "$1" "${2:-}"
}

# The round-trip commands: unaligned heads and tails, a vector of odd
# elements, and 3 MiB (three virtio-blk requests, each split at size_max).
rt_cmds=(-c 'write -P 0x11 0 64k' -c 'write -P 0x22 1 511'
         -c 'write -P 0x33 4095 8195' -c 'writev -P 0x44 100001 1 511 4096 3000'
         -c 'write -P 0x55 1000003 3000000' -c 'write -P 0x66 6291455 2')
rt_reads=(-c 'read -P 0x11 0 1' -c 'read -P 0x22 1 511' -c 'read -P 0x11 512 3583'
          -c 'read -P 0x33 4095 8195' -c 'read -P 0x44 100001 7608'
          -c 'read -P 0x55 1000003 3000000' -c 'read -P 0 4000003 2291452'
          -c 'read -P 0x66 6291455 2' -c 'read -P 0 6291457 1048575')

# killed KIND LABEL FILE-OPTS BENCH-ARGS...: strata-img bench writes
# through the driver (FILE-OPTS appended to its dotted options) to a back
# end of KIND that is SIGKILLed after 0.5 s.  The client must fail every
# request with the errno of a lost connection, say once which back end it
# lost and why, and exit within the timeout (rc 124: it hung).
killed() {
    local kind=$1 label=$2 opts=$3 bpid rc lost
    shift 3
    if ! start "$kind" "$img" "$sock"; then
        notok "$kind: $label" "back end did not start"
        return
    fi
    timeout 30 "$simg" bench -w -c 100000000 "$@" --image-opts \
        "driver=raw,file.driver=virtio-blk-vhost-user,file.path=$sock$opts" \
        >"$work/bench.out" 2>&1 &
    bpid=$!
    pids+=("$bpid")
    sleep 0.5
    kill -9 "$dpid"
    reap "$dpid"
    reap "$bpid"
    rc=$?
    lost=$(grep -c "^strata-img: node '#block[0-9]*': vhost-user back end at '$sock' lost: [^;]\+; every request fails from now on$" "$work/bench.out")
    if [ $rc != 0 ] && [ $rc != 124 ] && [ "$lost" = 1 ] &&
       grep -Eq "Connection reset by peer|Transport endpoint is not connected" "$work/bench.out"; then
        ok "$kind: $label: $(grep -Eo 'Failed request: .*' "$work/bench.out")"
    else
        notok "$kind: $label" "rc=$rc (124: hung), loss reported $lost times" \
            "$(tail -3 "$work/bench.out")"
    fi
}

for kind in strata qsd; do
    if [ "$kind" = qsd ] && [ -z "$qsd" ]; then
        for t in round-trip flush bytes-bounced fua zeroes polling two-queues \
                 blk-size killed killed-bounce; do
            skip "qsd: $t" "qemu-storage-daemon not installed"
        done
        continue
    fi
    img=$work/$kind.img sock=$work/$kind.sock
    truncate -s 8M "$img"

    # round-trip
    if start "$kind" "$img" "$sock"; then
        out=$(run_sio "${rt_cmds[@]}" "${rt_reads[@]}" "$(node "$sock")" 2>&1)
        rc=$?
        stop
        ref=$work/ref.img
        rm -f "$ref"; truncate -s 8M "$ref"
        same=
        if [ -n "$qio" ]; then
            timeout 30 "$qio" -f raw "${rt_cmds[@]}" "$ref" >/dev/null 2>&1
            same=$(cmp "$img" "$ref" 2>&1)
        fi
        if [ $rc != 0 ] || grep -q "verification failed" <<<"$out" ||
           [ -n "$same" ]; then
            notok "$kind: round-trip" "rc=$rc" "$same" "$(grep -i fail <<<"$out")"
        elif [ -z "$qio" ]; then
            # The data read back through the driver; only the file check
            # is missing, and that is said rather than passed.
            echo "# qemu-io not found: the back end's file is not compared with qemu-io's"
            skip "$kind: round-trip at unaligned offsets, vectored, split (read back through the driver only)" \
                "qemu-io not installed: the back end's file was not compared with qemu-io's"
        else
            ok "$kind: round-trip at unaligned offsets, vectored, split"
        fi
    else
        notok "$kind: round-trip" "back end did not start"
    fi

    # flush: one request reaches the back end
    start "$kind" "$img" "$sock"
    out=$(run_sio -c 'write 0 512' -c flush -c info "$(node "$sock")" 2>&1)
    reqs=$(sed -n 's/.*virtio-blk-vhost-user: \([0-9]*\) requests.*/\1/p' <<<"$out")
    if [ "${reqs:-0}" -ge 2 ] &&
       grep -q "flush: 1 ops" <<<"$(sed -n '/node vu/,$p' <<<"$out")" &&
       grep -q " flush" <<<"$(grep 'virtio-blk-vhost-user: .*features' <<<"$out")"; then
        ok "$kind: flush goes to the back end"
    else
        notok "$kind: flush" "$(grep virtio-blk-vhost-user <<<"$out")"
    fi
    # The 512 bytes went through the bounce pool (strata-io's buffers are
    # not memory the back end shares): the node's statistics count them.
    bounced=$(vu_stat bytes_bounced)
    if [ "$bounced" = 512 ]; then
        ok "$kind: the driver's bounce copies in the node's bytes_bounced"
    else
        notok "$kind: bytes_bounced" "bytes_bounced=$bounced, expected 512" \
            "$(grep -E 'node vu|padding' <<<"$out")"
    fi

    # fua: virtio-blk has no FUA bit; with the write cache on (writeback)
    # a plain write is one request, a FUA write two (the write, a flush).
    out=$(run_sio -t writeback -c 'write -f -P 0x3c 7m 4k' \
          -c 'read -P 0x3c 7m 4k' -c info "$(node "$sock")" 2>&1)
    rc=$?
    reqs=$(sed -n 's/.*virtio-blk-vhost-user: \([0-9]*\) requests.*/\1/p' <<<"$out")
    if [ $rc = 0 ] && grep -q "^wrote 4096/4096 bytes at offset 7340032" <<<"$out" &&
       ! grep -q "verification failed" <<<"$out" && [ "$reqs" = 3 ] &&
       cmp -s -n 4096 -i 7340032:0 "$img" <(pattern 0x3c 4096); then
        ok "$kind: a FUA write goes out as the write and a flush, and reads back"
    else
        notok "$kind: fua" "rc=$rc requests=$reqs (3: write, flush, read)" \
            "$(grep -iE 'fail|wrote' <<<"$out")"
    fi

    # zeroes
    out=$(run_sio -c 'write -P 0x77 0 2M' -c 'discard 64k 128k' \
          -c 'write -z 1000448 200704' -c 'write -z -u 1572864 65536' \
          -c 'read -P 0x77 0 64k' -c 'read -P 0 64k 128k' -c 'read -P 0x77 192k 803840' \
          -c 'read -P 0 1000448 200704' -c 'read -P 0x77 1201152 371712' \
          -c 'read -P 0 1572864 65536' -c 'read -P 0x77 1638400 458752' \
          "$(node "$sock")" 2>&1)
    rc=$?
    stop
    fz=$(cmp -n 131072 -i 65536:0 "$img" /dev/zero 2>&1; cmp -n 200704 -i 1000448:0 "$img" /dev/zero 2>&1)
    if [ $rc = 0 ] && ! grep -q "verification failed" <<<"$out" && [ -z "$fz" ]; then
        ok "$kind: discard and write-zeroes read back zeroes"
    else
        notok "$kind: zeroes" "rc=$rc" "$fz" "$(grep -i fail <<<"$out")"
    fi

    # polling: the client's loop polls the used ring (--poll-max-ns) and
    # asks for no calls while it does; data still round-trips.  The poll
    # limit is 100 ms: a busy machine (make check runs two tests at once)
    # delays the back end by milliseconds, and a sleep longer than 4
    # limits would stop the polling (util/loop.c, loop_poll_adapt); the
    # poll time still starts at 4 us and grows with each call.
    start "$kind" "$img" "$sock"
    cmds=()
    for i in $(seq 0 99); do
        cmds+=(-c "write -P $((i + 1)) $((i * 4096 + 1)) 4095")
    done
    for i in $(seq 0 99); do
        cmds+=(-c "read -P $((i + 1)) $((i * 4096 + 1)) 4095")
    done
    out=$(run_sio --poll-max-ns 100000000 "${cmds[@]}" -c info "$(node "$sock")" 2>&1)
    rc=$?
    stop
    reqs=$(sed -n 's/.*virtio-blk-vhost-user: \([0-9]*\) requests.*/\1/p' <<<"$out")
    calls=$(sed -n 's/.*kicks, \([0-9]*\) calls.*/\1/p' <<<"$out")
    if [ $rc = 0 ] && ! grep -q "verification failed" <<<"$out" &&
       [ "${reqs:-0}" -ge 400 ] && [ $((${calls:-999999} * 4)) -lt "${reqs:-0}" ]; then
        ok "$kind: a polling client takes $((reqs - calls)) of $reqs completions without a call"
    else
        notok "$kind: polling" "rc=$rc requests=$reqs calls=$calls" "$(grep -i fail <<<"$out" | head -3)"
    fi

    # two-queues
    start "$kind" "$img" "$sock"
    cmds=()
    for i in $(seq 0 63); do
        cmds+=(-c "aio_write -P $((i + 1)) $((i * 65536 + 1)) 65535")
    done
    cmds+=(-c aio_flush)
    for i in $(seq 0 63); do
        cmds+=(-c "read -P $((i + 1)) $((i * 65536 + 1)) 65535")
    done
    out=$(run_sio "${cmds[@]}" -c info "$(node "$sock" ',"num-queues":2')" 2>&1)
    rc=$?
    stop
    q0=$(sed -n 's/.*queue 0: \([0-9]*\) requests/\1/p' <<<"$out")
    q1=$(sed -n 's/.*queue 1: \([0-9]*\) requests/\1/p' <<<"$out")
    if [ $rc = 0 ] && ! grep -q "verification failed" <<<"$out" &&
       [ "${q0:-0}" -gt 0 ] && [ "${q1:-0}" -gt 0 ]; then
        ok "$kind: two queues ($q0 and $q1 requests), data in place"
    else
        notok "$kind: two-queues" "rc=$rc q0=$q0 q1=$q1" "$(grep -i fail <<<"$out" | head -3)"
    fi

    # blk-size: the back end advertises blk_size 4096; the write of 512
    # bytes inside the second block is a read-modify-write on the driver
    # node, and the back end (QSD checks) sees only whole blocks.
    if start "$kind" "$img" "$sock" on ,logical-block-size=4096; then
        out=$(run_sio -c 'write -P 0x5a 0 8k' -c 'write -P 0xa5 4608 512' \
              -c 'read -P 0x5a 0 4608' -c 'read -P 0xa5 4608 512' \
              -c 'read -P 0x5a 5120 3072' -c info "$(node "$sock")" 2>&1)
        rc=$?
        stop
        align=$(vu_stat request_alignment)
        rmw=$(vu_stat rmw_writes)
        if [ $rc = 0 ] && [ "$align" = 4096 ] && [ "$rmw" = 1 ] &&
           grep -q "^wrote 512/512 bytes at offset 4608" <<<"$out" &&
           ! grep -q "verification failed" <<<"$out" &&
           cmp -s -n 8192 "$img" <(pattern 0x5a 4608; pattern 0xa5 512; pattern 0x5a 3072); then
            ok "$kind: blk_size 4096: request_alignment 4096, an unaligned 512-byte write round-trips"
        else
            notok "$kind: blk-size" "rc=$rc request_alignment=$align rmw_writes=$rmw" \
                "$(grep -iE 'fail|wrote' <<<"$out")"
        fi
    else
        notok "$kind: blk-size" "back end did not start"
    fi

    # killed: 64 requests on 16 slots, 16 in flight and 48 waiting for a
    # slot.
    killed "$kind" "back end killed under load" ",file.queue-size=16" -d 64
    # killed with bounce waiters: 1 MiB requests at depth 64 on 256 slots,
    # 16 holding the whole bounce pool (16 MiB) and 48 holding a slot
    # while they wait for its pages.
    killed "$kind" "back end killed with requests waiting for bounce pages" \
        "" -d 64 -s 1M
done

# query-blockstats: a daemon with a virtio-blk-vhost-user node reports
# the driver's bounce copies over QMP (a write and a read of 4 KiB).  The
# monitor reads a fifo kept open until the daemon quits: at end of input
# the monitor drops what it has not run yet.
img=$work/strata.img sock=$work/strata.sock
if start strata "$img" "$sock"; then
    mkfifo "$work/qmp.in"
    timeout 30 "$daemon" --chardev stdio,id=m0 --monitor m0 --blockdev \
        "{\"driver\":\"virtio-blk-vhost-user\",\"node-name\":\"vu\",\"path\":\"$sock\"}" \
        <"$work/qmp.in" >"$work/qmp.out" 2>&1 &
    qpid=$!
    pids+=("$qpid")
    exec 7>"$work/qmp.in"
    # In a subshell: a daemon gone early costs that subshell its SIGPIPE.
    (printf '%s\n' '{"execute":"qmp_capabilities"}' \
        '{"execute":"x-strata-io","arguments":{"node-name":"vu","command":"write -P 7 0 4k"}}' \
        '{"execute":"x-strata-io","arguments":{"node-name":"vu","command":"read -P 7 0 4k"}}' \
        '{"execute":"query-blockstats"}' '{"execute":"quit"}' >&7) 2>/dev/null
    reap "$qpid"
    rc=$?
    exec 7>&-
    stop
    stats=$(grep '"node-name":"vu"' "$work/qmp.out" | grep -o '"bytes-bounced":[0-9]*')
    if [ $rc = 0 ] && grep -q 'read 4096/4096' "$work/qmp.out" &&
       ! grep -q "verification failed" "$work/qmp.out" &&
       [ "$stats" = '"bytes-bounced":8192' ]; then
        ok "query-blockstats shows the driver's bounce copies ($stats)"
    else
        notok "query-blockstats" "rc=$rc $stats" "$(cut -c1-300 "$work/qmp.out")"
    fi
else
    notok "query-blockstats" "back end did not start"
fi

# Open errors name the problem.
out=$(run_sio -c 'read 0 512' "$(node "$work/none.sock")" 2>&1)
if grep -q "Failed to connect to vhost-user back end '$work/none.sock': No such file or directory" <<<"$out"; then
    ok "no back end: the open says which socket"
else
    notok "no back end" "$out"
fi
start strata "$img" "$sock"
out=$(run_sio -c 'read 0 512' "$(node "$sock" ',"num-queues":4')" 2>&1)
if grep -q "num-queues: the back end '$sock' has 2 queues, 4 requested" <<<"$out"; then
    ok "num-queues above the back end's: refused, naming both"
else
    notok "num-queues too many" "$out"
fi
stop
start strata "$img" "$sock" off
out=$(run_sio -c 'read 0 512' "$(node "$sock")" 2>&1)
out2=$(run_sio -r -c 'read 0 1' "$(node "$sock")" 2>&1)
rc2=$?
out3=$(run_sio -r -c 'reopen -w' "$(node "$sock")" 2>&1)
stop
if grep -q "vhost-user-blk device is read-only" <<<"$out" && [ $rc2 = 0 ] &&
   grep -q "Cannot reopen node .*'$sock': the vhost-user-blk device is read-only" <<<"$out3"; then
    ok "read-only device: read-write open and reopen refused, read-only open works"
else
    notok "read-only device" "$out" "$out2" "$out3"
fi
start strata "$img" "$sock"
out=$(run_sio -c 'write -P 7 0 4k' -c 'reopen -r' -c 'write -P 8 0 4k' \
      -c 'reopen -w' -c 'read -P 7 0 4k' -c 'write -P 9 0 4k' -c 'read -P 9 0 4k' \
      "$(node "$sock")" 2>&1)
stop
if [ "$(grep -c "^wrote 4096/4096" <<<"$out")" = 2 ] &&
   grep -q "Block node is read-only" <<<"$out" && ! grep -q "verification failed" <<<"$out"; then
    ok "reopen read-only and back: writes refused, then accepted"
else
    notok "reopen" "$out"
fi

echo "1..$n"
