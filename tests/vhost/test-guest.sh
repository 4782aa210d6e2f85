#!/usr/bin/env bash
# A real Linux guest on the vhost-user-blk export (TAP).
# SPDX-License-Identifier: MIT
#
# Usage: test-guest.sh STRATA_DAEMON [--qsd-only]
#
# Boots the Debian cloud kernel under qemu-system-x86_64 -accel tcg with a
# busybox initramfs (tests/vhost/guest-init.sh is its /init), guest RAM in
# a shared memfd, and -device vhost-user-blk-pci,num-queues=2,
# queue-size=1024 on strata-storage-daemon (each virtqueue in an iothread
# of its own: iothreads=[io1, io2]) exporting a 4K-native loop
# device (losetup --sector-size 4096).  Phases:
#   basic    block sizes in sysfs; 512-byte O_DIRECT writes at odd
#            sectors; concurrent writers on the 8 sectors of one 4K block;
#            1 MiB at sector 3; flush; read back
#   kill     a writing guest is SIGKILLed; a second guest boots on the
#            same daemon and reads the first phase's data back
#   restart  the daemon is SIGKILLed and restarted under a writing guest
#            (QEMU's reconnect=1 + inflight resubmission); the guest
#            carries on and reads everything back
# After the guests the host compares every byte of the device with a model
# (bytes no guest wrote are unchanged), and the daemon must exit cleanly
# (status 0: under ASan, no leak).  Then the basic phase runs again against
# qemu-storage-daemon 7.2 as a cross-check of the test itself (QSD reports
# physical_block_size 512 there).  Skips (exit 77 in TAP) without root,
# qemu-system-x86_64, the cloud kernel, busybox or cpio.
set -uo pipefail

daemon=${1:?usage: test-guest.sh STRATA_DAEMON [--qsd-only]}
qsd_only=0
[ "${2:-}" = --qsd-only ] && qsd_only=1
here=$(cd "$(dirname "$0")" && pwd)

skip() { echo "1..0 # SKIP $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root (loop devices)"
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not installed (scripts/deps.sh installs qemu-system-x86)"
command -v cpio >/dev/null || skip "cpio not installed"
busybox=$(command -v busybox) || skip "busybox not installed (busybox-static)"
kernel=$(ls /boot/vmlinuz-*cloud-amd64 2>/dev/null | sort -V | tail -1)
[ -n "$kernel" ] || skip "no /boot/vmlinuz-*-cloud-amd64 (linux-image-cloud-amd64)"
kver=${kernel#/boot/vmlinuz-}
moddir=/lib/modules/$kver/kernel/drivers
[ -e /dev/kvm ] || true     # TCG only: KVM is not used
file "$busybox" 2>/dev/null | grep -q "dynamically" && skip "busybox is not static (busybox-static)"

work=$(mktemp -d /tmp/strata-vhost-guest-XXXXXX)
pids=()
loopdev=
cleanup() {
    for p in "${pids[@]}"; do
        kill -9 "$p" 2>/dev/null
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null
    done
    [ -n "$loopdev" ] && losetup -d "$loopdev" 2>/dev/null
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        echo "# kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

n=0
failed=0
todo=          # set while the reference (QSD) runs: its failures are
               # reported, not counted (it is the test's cross-check)
tap() {   # STATUS NAME [detail]
    n=$((n + 1))
    if [ "$1" = ok ]; then
        echo "ok $n - $2"
    elif [ -n "$todo" ]; then
        echo "not ok $n - $2${3:+: $3} # TODO $todo"
    else
        echo "not ok $n - $2${3:+: $3}"
        failed=1
    fi
}

# ---- the initramfs ----------------------------------------------------
root=$work/initramfs
mkdir -p "$root"/{bin,proc,sys,dev,tmp,modules,pat}
cp "$busybox" "$root/bin/busybox"
cp "$here/guest-init.sh" "$root/init"
chmod +x "$root/init"
for m in virtio/virtio_ring virtio/virtio virtio/virtio_pci_modern_dev \
         virtio/virtio_pci_legacy_dev virtio/virtio_pci block/virtio_blk; do
    src=$moddir/$m.ko
    if [ -e "$src" ]; then
        cp "$src" "$root/modules/"
    elif [ -e "$src.xz" ]; then
        xz -dc "$src.xz" > "$root/modules/$(basename "$m").ko"
    else
        skip "module $m not found under $moddir"
    fi
done
# Patterns: s<N> (512 B, final content of sector N), a<N> (the
# alternative the concurrent writers interleave), m1 (1 MiB), w<N> (4 KiB).
python3 - "$root/pat" <<'PY'
import os, random, sys
d = sys.argv[1]
rnd = random.Random(16)
def put(name, size):
    with open(os.path.join(d, name), 'wb') as f:
        f.write(bytes(rnd.getrandbits(8) for _ in range(size)))
for s in list(range(1, 32, 2)) + list(range(64, 72)):
    put(f's{s}', 512)
for s in range(64, 72):
    put(f'a{s}', 512)
put('m1', 1 << 20)
for w in range(16):
    put(f'w{w}', 4096)
PY
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"

# ---- the device ---------------------------------------------------------
DISK_SIZE=$((64 << 20))
KILL_BASE=20000         # sectors: the guest killed mid-write
RESTART_BASE=30000      # sectors: the guest that outlives a daemon restart
make_disk() {
    python3 - "$work/disk.img" "$DISK_SIZE" <<'PY'
import random, sys
rnd = random.Random(7)
with open(sys.argv[1], 'wb') as f:
    f.write(rnd.randbytes(int(sys.argv[2])))
PY
    cp "$work/disk.img" "$work/disk.orig"
    loopdev=$(losetup --sector-size 4096 --direct-io=on -f --show "$work/disk.img") ||
        return 1
}

sock=$work/vhost.sock
daemon_pid=
# start_strata [IOPS]: with IOPS, a throttle node keeps requests in
# flight long enough for a SIGKILL to catch some.
start_strata() {
    local top=dev throttle=()
    if [ -n "${1:-}" ]; then
        top=disk
        throttle=(--object "throttle-group,id=tg0,limits.iops-total=$1"
                  --blockdev "driver=throttle,node-name=disk,file=dev,throttle-group=tg0")
    fi
    rm -f "$sock"
    # Each virtqueue in an iothread of its own (multi-queue).
    "$daemon" --object iothread,id=io1 --object iothread,id=io2 \
        --blockdev "{\"driver\": \"host_device\", \"node-name\": \"dev\", \"filename\": \"$loopdev\", \"cache\": {\"direct\": true}}" \
        "${throttle[@]}" \
        --export "type=vhost-user-blk,id=vub0,node-name=$top,addr.type=unix,addr.path=$sock,writable=on,num-queues=2,iothreads.0=io1,iothreads.1=io2" \
        2>>"$work/daemon.log" &
    daemon_pid=$!
    pids+=("$daemon_pid")
    wait_socket
}
start_qsd() {
    rm -f "$sock"
    qemu-storage-daemon --blockdev "driver=host_device,node-name=disk,filename=$loopdev,cache.direct=on" \
        --export "type=vhost-user-blk,id=vub0,node-name=disk,addr.type=unix,addr.path=$sock,writable=on,num-queues=2" \
        2>>"$work/daemon.log" &
    daemon_pid=$!
    pids+=("$daemon_pid")
    wait_socket
}
wait_socket() {
    for _ in $(seq 100); do
        [ -S "$sock" ] && return 0
        kill -0 "$daemon_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "# daemon did not come up:"; sed 's/^/#   /' "$work/daemon.log"
    return 1
}

qemu_pid=
# boot NAME APPEND [reconnect]: start a guest in the background.
boot() {
    local chardev="socket,id=vu,path=$sock"
    [ "${3:-}" = reconnect ] && chardev+=",reconnect=1"
    : > "$work/$1.log"
    qemu-system-x86_64 -accel tcg -m 256 -smp 2 -nodefaults -no-reboot \
        -display none -monitor none \
        -object memory-backend-memfd,id=ram,size=256M,share=on \
        -numa node,memdev=ram \
        -kernel "$kernel" -initrd "$work/initrd.gz" \
        -append "console=ttyS0 panic=-1 quiet $2" \
        -chardev "$chardev" \
        -device vhost-user-blk-pci,chardev=vu,num-queues=2,queue-size=1024 \
        -serial "file:$work/$1.log" 2>"$work/$1.qemu.log" &
    qemu_pid=$!
    pids+=("$qemu_pid")
}
# wait_log NAME PATTERN SECONDS
wait_log() {
    for _ in $(seq $(($3 * 10))); do
        grep -q "$2" "$work/$1.log" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
# Report the guest's VUTEST lines as TAP; fails if it did not finish.
report() {   # NAME PREFIX
    if ! wait_log "$1" "VUTEST done" 180; then
        tap fail "$2: guest finished" "no 'VUTEST done' in 180 s"
        sed 's/^/#   /' "$work/$1.log" | tail -20
        sed 's/^/#   /' "$work/$1.qemu.log" | tail -5
        return
    fi
    wait "$qemu_pid" 2>/dev/null
    grep "VUTEST info" "$work/$1.log" | sed 's/^/# /'
    while read -r _ st rest; do
        case $st in
        ok) tap ok "$2: $rest" ;;
        fail) tap fail "$2: $rest" ;;
        esac
    done < <(grep -a "^VUTEST \(ok\|fail\)" "$work/$1.log" | tr -d '\r')
}

# The model: the original bytes with the deterministic writes applied;
# the region of the killed guest may hold, per 4 KiB, the old bytes or
# its pattern.  Prints "ok" or the first difference.
verify_disk() {   # PHASES (basic, kill, restart)
    python3 - "$work/disk.orig" "$work/disk.img" "$root/pat" \
        "$KILL_BASE" "$RESTART_BASE" "$1" <<'PY'
import os, sys
orig, img, pat, kill_base, restart_base, phases = sys.argv[1:]
kill_base, restart_base = int(kill_base), int(restart_base)
phases = phases.split(',')
def p(name):
    return open(os.path.join(pat, name), 'rb').read()
exp = bytearray(open(orig, 'rb').read())
got = open(img, 'rb').read()
def put(off, data):
    exp[off:off + len(data)] = data
if 'basic' in phases:
    for s in list(range(1, 32, 2)) + list(range(64, 72)):
        put(s * 512, p(f's{s}'))
    put(4096 * 512 + 3 * 512, p('m1'))
either = []
if 'kill' in phases:
    for j in range(64):
        either.append((( kill_base + j * 8) * 512, p(f'w{j % 16}')))
if 'restart' in phases:
    for j in range(64):
        put((restart_base + j * 8) * 512, p(f'w{j % 16}'))
for off, data in either:
    if got[off:off + 4096] in (bytes(exp[off:off + 4096]), data):
        exp[off:off + 4096] = got[off:off + 4096]
if bytes(exp) == got:
    print('ok')
else:
    first = next(i for i in range(len(got)) if got[i] != exp[i])
    sec = first // 512
    what = ''
    if sec * 512 + 512 <= len(got):
        cur = got[sec * 512:sec * 512 + 512]
        o = open(orig, 'rb').read()[sec * 512:sec * 512 + 512]
        alt = os.path.join(pat, f'a{sec}')
        if cur == o:
            what = ': the original bytes (a write was lost)'
        elif os.path.exists(alt) and cur == open(alt, 'rb').read():
            what = ': an earlier write of the same sector (writes reordered)'
    print(f'first difference at byte {first} (sector {sec}){what}')
PY
}

make_disk || { tap fail "losetup --sector-size 4096"; exit 1; }
echo "# kernel $kver, loop device $loopdev (4K-native)"

# ---- Strata ---------------------------------------------------------------
start=$SECONDS
if [ $qsd_only = 1 ]; then
    :
elif start_strata; then
    tap ok "strata daemon up"
else
    tap fail "strata daemon up"; exit 1
fi
if [ $qsd_only = 0 ]; then
boot basic "vutest=basic vupbs=4096"
report basic "basic"
grep 'front end started' "$work/daemon.log" | sed 's/.*started: /# negotiated (firmware, then Linux): /'

# A writing guest is SIGKILLed; the daemon serves the next one.
boot kill "vutest=writer vubase=$KILL_BASE"
if wait_log kill "wrote 32" 120; then
    kill -9 "$qemu_pid"; wait "$qemu_pid" 2>/dev/null
    tap ok "kill: first guest SIGKILLed while writing"
else
    tap fail "kill: first guest SIGKILLed while writing" "it never wrote"
    kill -9 "$qemu_pid" 2>/dev/null
fi
kill -0 "$daemon_pid" 2>/dev/null && tap ok "kill: daemon survived" ||
    tap fail "kill: daemon survived"
boot second "vutest=verify"
report second "kill"

# The daemon is SIGKILLed and restarted under a writing guest.  It runs
# throttled (10 requests/s) until the kill so that requests are in flight
# then; the restarted one is not throttled.
kill -TERM "$daemon_pid"; wait "$daemon_pid"
start_strata 10 || tap fail "restart: throttled daemon up"
boot restart "vutest=writer vubase=$RESTART_BASE vucount=256" reconnect
if wait_log restart "wrote 16" 120; then
    kill -9 "$daemon_pid"; wait "$daemon_pid" 2>/dev/null
    sleep 0.5
    if start_strata; then
        tap ok "restart: daemon SIGKILLed and restarted under the guest"
    else
        tap fail "restart: daemon restarted"
    fi
else
    tap fail "restart: daemon SIGKILLed under the guest" "the guest never wrote"
fi
report restart "restart"
# Whether requests were in flight at the kill is a matter of timing:
# said, not asserted (the unit test inflight-resubmit asserts it).
if grep -q resubmitting "$work/daemon.log"; then
    grep resubmitting "$work/daemon.log" | sed 's/.*: virtqueue/# after the restart: virtqueue/'
else
    echo "# after the restart: nothing was in flight at the kill"
fi

kill -TERM "$daemon_pid"
wait "$daemon_pid"
rc=$?
[ $rc = 0 ] && tap ok "daemon exits with status 0" ||
    { tap fail "daemon exits with status 0" "status $rc"; sed 's/^/#   /' "$work/daemon.log" | tail -30; }
losetup -d "$loopdev"; loopdev=
res=$(verify_disk basic,kill,restart)
[ "$res" = ok ] && tap ok "host: every byte of the 4K-native device as modelled" ||
    tap fail "host: every byte of the 4K-native device as modelled" "$res"
echo "# strata phases took $((SECONDS - start)) s"
fi

# ---- qemu-storage-daemon, the same basic phase ----------------------------
if command -v qemu-storage-daemon >/dev/null; then
    rm -f "$work/disk.img" "$work/disk.orig"
    make_disk
    # In one of the first runs QSD 7.2 returned a wrong sector among the
    # concurrent 512-byte writers of one 4K block (Strata's export has not
    # so far).  Reported, not failed: QSD is the reference here.
    todo="qemu-storage-daemon 7.2 is the reference here, not under test"
    if start_qsd; then
        tap ok "qsd: daemon up"
        boot qsd "vutest=basic vupbs=512"
        report qsd "qsd basic"
        kill -TERM "$daemon_pid"; wait "$daemon_pid"
        losetup -d "$loopdev"; loopdev=
        res=$(verify_disk basic)
        [ "$res" = ok ] && tap ok "qsd: host verification" ||
            tap fail "qsd: host verification" "$res"
    else
        tap fail "qsd: daemon up"
    fi
else
    echo "# qemu-storage-daemon not installed: no cross-check"
fi
echo "1..$n"
exit $failed
