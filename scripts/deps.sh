#!/usr/bin/env bash
# Install the Debian packages Strata needs to build and test, if missing.
# Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail

pkgs=(meson ninja-build pkg-config gcc libglib2.0-dev liburing-dev libaio-dev
      libjson-glib-dev libgnutls28-dev libnbd-dev python3)
# The sanitizer runtimes of make check's ASan/UBSan and TSan passes (gcc
# pulls them in on amd64; named so that no other setup is assumed).
pkgs+=(libasan8 libubsan1 libtsan2)
# Tools the tests and benchmarks compare against or need.
pkgs+=(qemu-utils fio util-linux e2fsprogs iproute2)
# tests/bench/charts draws compare's SVG charts; perf profiles the engines.
pkgs+=(python3-matplotlib linux-perf)
# tests/bench/compare reads strata-storage-daemon's allocation counter
# through gdb (the export side of "zero mallocs per request"); without it
# that side, and so the target, is "not measured".
pkgs+=(gdb)
# NBD: the nbd driver's tests start real servers (qemu-nbd is in
# qemu-utils), the benchmarks use nbdkit's null plugin, and the
# export is tested with libnbd's clients.
pkgs+=(nbdkit libnbd-bin python3-libnbd)
# Ceph RBD: librbd for the rbd driver; a monitor, an OSD and the rbd/rados
# tools for the single-node cluster its tests start (tests/ceph/); QEMU's
# rbd driver (qemu-block-extra) for the interop tests and benchmarks.
pkgs+=(librbd-dev ceph-mon ceph-osd ceph-common qemu-block-extra)
# qemu-storage-daemon, which the daemon's QMP tests run side by side.
pkgs+=(qemu-system-common)
# certtool and psktool, for the TLS tests' certificates and keys.
pkgs+=(gnutls-bin)
# The vhost-user-blk export's real-guest test (tests/vhost/): a TCG guest
# booting the cloud kernel with a busybox initramfs.
pkgs+=(qemu-system-x86 linux-image-cloud-amd64 busybox-static cpio)
if [ "${STRATA_DEPS_MINIMAL:-0}" = 1 ]; then
    pkgs=(meson ninja-build pkg-config gcc libglib2.0-dev liburing-dev libaio-dev libjson-glib-dev
          libgnutls28-dev libnbd-dev)
fi

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
