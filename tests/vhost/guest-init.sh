#!/bin/busybox sh
# /init of the test guest's initramfs (tests/vhost/test-guest.sh): load the
# virtio modules, then run the phase named on the kernel command line
# (vutest=...) against /dev/vda and report on the serial console with
# lines "VUTEST ok NAME", "VUTEST fail NAME: why", "VUTEST done".
# SPDX-License-Identifier: MIT
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev \
         virtio_pci virtio_blk; do
    insmod /modules/$m.ko || echo "VUTEST fail insmod $m"
done

phase=$(sed -n 's/.*vutest=\([a-z0-9-]*\).*/\1/p' /proc/cmdline)
expect_pbs=$(sed -n 's/.*vupbs=\([0-9]*\).*/\1/p' /proc/cmdline)

ok() { echo "VUTEST ok $*"; }
fail() { echo "VUTEST fail $*"; }
finish() { echo "VUTEST done"; sync; poweroff -f; echo o > /proc/sysrq-trigger; }

for i in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
[ -b /dev/vda ] || { fail "no /dev/vda"; finish; }

# Write pattern file $1 at byte offset $2 with O_DIRECT, one request.
put() {
    sz=$(stat -c %s "$1")
    dd if="$1" of=/dev/vda bs="$sz" count=1 seek="$2" \
       oflag=direct,seek_bytes conv=notrunc status=none
}
# Compare $2 bytes at byte offset $1 with file $3 (O_DIRECT read).
check() {
    dd if=/dev/vda of=/tmp/rb bs="$2" count=1 skip="$1" \
       iflag=direct,skip_bytes status=none && cmp -s /tmp/rb "$3"
}

case "$phase" in
basic)
    lbs=$(cat /sys/block/vda/queue/logical_block_size)
    pbs=$(cat /sys/block/vda/queue/physical_block_size)
    echo "VUTEST info logical_block_size=$lbs physical_block_size=$pbs" \
         "minimum_io_size=$(cat /sys/block/vda/queue/minimum_io_size)" \
         "optimal_io_size=$(cat /sys/block/vda/queue/optimal_io_size)" \
         "nr_hw_queues=$(ls /sys/block/vda/mq | wc -l)"
    [ "$lbs" = 512 ] && ok "logical_block_size" || fail "logical_block_size $lbs"
    [ "$pbs" = "$expect_pbs" ] && ok "physical_block_size" ||
        fail "physical_block_size $pbs (expected $expect_pbs)"
    # 512-byte O_DIRECT writes at odd sectors 1, 3, ..., 31.
    e=0
    for s in $(seq 1 2 31); do
        put /pat/s$s $((s * 512)) || e=1
    done
    [ $e = 0 ] && ok "odd-sector-writes" || fail "odd-sector-writes"
    # Neighbouring sectors of one 4K block (sectors 64..71), concurrently,
    # each writer alternating two patterns and ending with the second.
    for s in $(seq 64 71); do
        ( for k in $(seq 20); do
              put /pat/a$s $((s * 512)); put /pat/s$s $((s * 512))
          done ) &
    done
    wait
    ok "concurrent-neighbour-writers"
    # 1 MiB at sector 3 (unaligned to 4K on both ends), one request.
    put /pat/m1 $((4096 * 512 + 3 * 512)) && ok "1MiB-at-sector-3" ||
        fail "1MiB-at-sector-3"
    sync
    echo 3 > /proc/sys/vm/drop_caches
    # fsync() of the block device sends a flush to the device.
    sync /dev/vda && ok "flush" || fail "flush"
    e=0
    for s in $(seq 1 2 31) $(seq 64 71); do
        check $((s * 512)) 512 /pat/s$s || { e=1; fail "readback sector $s"; }
    done
    check $((4096 * 512 + 3 * 512)) 1048576 /pat/m1 || { e=1; fail "readback 1MiB"; }
    [ $e = 0 ] && ok "readback"
    ;;
writer)
    # Four streams keep writing 4 KiB blocks at 64 positions (stream k at
    # positions k, k + 4, ...; position p always gets pattern p % 16), so
    # that requests are in flight whenever the host kills something.
    # Without a count they never stop (the host kills this guest); with
    # one, each stream writes count / 4 blocks, then everything is read
    # back.
    n=$(sed -n 's/.*vucount=\([0-9]*\).*/\1/p' /proc/cmdline)
    base=$(sed -n 's/.*vubase=\([0-9]*\).*/\1/p' /proc/cmdline)
    echo "VUTEST info writing"
    for k in 0 1 2 3; do
        ( i=0
          while [ -z "$n" ] || [ $i -lt $((n / 4)) ]; do
              p=$((k + 4 * (i % 16)))
              put /pat/w$((p % 16)) $(( (base + p * 8) * 512 )) ||
                  { fail "write stream $k block $i"; break; }
              i=$((i + 1))
              [ $k = 0 ] && [ $((i % 8)) = 0 ] && echo "VUTEST info wrote $((i * 4))"
          done ) &
    done
    wait
    e=0
    for j in $(seq 0 63); do
        check $(( (base + j * 8) * 512 )) 4096 /pat/w$((j % 16)) ||
            { e=1; fail "readback $j"; }
    done
    [ $e = 0 ] && ok "writer-readback"
    sync /dev/vda && ok "writer-flush" || fail "writer-flush"
    ;;
verify)
    # A later guest reads what the first wrote.
    e=0
    for s in $(seq 1 2 31) $(seq 64 71); do
        check $((s * 512)) 512 /pat/s$s || { e=1; fail "second-guest sector $s"; }
    done
    [ $e = 0 ] && ok "second-guest-readback"
    ;;
*)
    fail "unknown phase '$phase'"
    ;;
esac
finish
