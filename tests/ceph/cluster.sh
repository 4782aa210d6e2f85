#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# A throw-away single-node Ceph cluster for the rbd tests: one monitor and
# one memstore OSD on 127.0.0.1, under a temporary directory, built by hand
# from Debian's packages (ceph-mon, ceph-osd, ceph-common; Debian ships no
# vstart.sh).  No systemd, no manager.  See docs/ceph-test-cluster.md.
#
# Usage: cluster.sh [-s SIZE] -- COMMAND [ARGS...]
#   Starts the cluster, creates pool "rbd" and image "rbd/img" of SIZE
#   (default 64M), runs COMMAND with the environment below, then kills the
#   daemons and removes the directory, whether COMMAND or the bring-up
#   failed or not (also on SIGINT/SIGTERM).  Exits with COMMAND's status,
#   77 when the Ceph programs are missing, 1 when the bring-up failed.
#
# Environment given to COMMAND:
#   CEPH_CONF            the cluster's ceph.conf (rbd, rados, ceph and
#                        librados read it from there)
#   STRATA_CEPH_DIR      the run directory
#   STRATA_CEPH_POOL     the pool ("rbd")
#   STRATA_CEPH_IMAGE    the image ("img")
#   STRATA_CEPH_KEY      client.admin's key (base64), for key-secret tests
#   STRATA_CEPH_NOKEY_CONF  a ceph.conf of the same cluster naming no
#                        keyring: a client needs a key from elsewhere
set -u

size=64M
while [ $# -gt 0 ]; do
    case $1 in
    -s) size=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [-s SIZE] -- COMMAND [ARGS...]" >&2; exit 2 ;;
    esac
done
[ $# -gt 0 ] || { echo "usage: $0 [-s SIZE] -- COMMAND [ARGS...]" >&2; exit 2; }

for p in ceph-mon ceph-osd ceph-authtool monmaptool ceph rados rbd; do
    if ! command -v "$p" >/dev/null; then
        echo "cluster: $p not found (apt-get install ceph-mon ceph-osd ceph-common)" >&2
        exit 77
    fi
done

# Admin sockets are Unix sockets: their path must stay short (~100 bytes).
dir=$(mktemp -d /tmp/ceph.XXXXXX) || exit 1
pids=()
teardown() {
    # SIGKILL: on SIGTERM the OSD spends seconds telling the monitor; the
    # data is thrown away anyway.
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$dir"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    echo "cluster: $*" >&2
    for f in "$dir"/log/*.log; do
        [ -s "$f" ] && { echo "--- tail of $f" >&2; tail -n 20 "$f" >&2; }
    done
    exit 1
}

# A free TCP port on loopback for the monitor.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') ||
    fail "no free port"
fsid=$(cat /proc/sys/kernel/random/uuid)
osd_uuid=$(cat /proc/sys/kernel/random/uuid)
mkdir -p "$dir/mon" "$dir/osd" "$dir/run" "$dir/log"

conf_body() {   # KEYRING-LINE
    cat <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$port
mon initial members = a
$1
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
ms bind ipv4 = true
ms bind ipv6 = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
# Paxos proposes every second by default: bring-up would take ~8 s.
paxos propose interval = 0.01
# No manager: keep the monitor from calling that a health problem.
mon mgr mkfs grace = 864000
client mount timeout = 30
[mon]
mon data = $dir/mon
[osd]
osd data = $dir/osd
keyring = $dir/osd/keyring
osd objectstore = memstore
memstore device bytes = 2147483648
memstore page set = true
# Short PG logs: a memstore OSD keeps them in memory (past 1 GiB under
# random writes otherwise).
osd min pg log entries = 100
osd max pg log entries = 500
osd pg log trim min = 50
osd max object name len = 256
osd max object namespace len = 64
EOF
}
conf_body "keyring = $dir/keyring" > "$dir/ceph.conf"
conf_body "keyring = /dev/null" > "$dir/nokey.conf"
export CEPH_CONF=$dir/ceph.conf
log=$dir/log/setup.log

run() {   # run a setup step, its output to the setup log
    "$@" >>"$log" 2>&1 || fail "'$*' failed"
}

run ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *'
run ceph-authtool "$dir/keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *'
run monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" "$dir/monmap"
run ceph-mon --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/keyring"
ceph-mon -f -i a >>"$log" 2>&1 &
pids+=($!)

# The OSD's key: registered with the monitor by "osd new", and written to
# the OSD's keyring before --mkfs, which already talks to the monitor.
osd_key=$(ceph-authtool --gen-print-key) || fail "ceph-authtool --gen-print-key failed"
printf '[osd.0]\n\tkey = %s\n' "$osd_key" > "$dir/osd/keyring"
id=$(printf '{"cephx_secret": "%s"}' "$osd_key" |
     ceph --connect-timeout 20 osd new "$osd_uuid" 0 -i - 2>>"$log") ||
    fail "ceph osd new failed (monitor not up?)"
[ "$id" = 0 ] || fail "ceph osd new gave id '$id'"
run ceph-osd -i 0 --mkfs --osd-uuid "$osd_uuid"
ceph-osd -f -i 0 >>"$log" 2>&1 &
pids+=($!)

run ceph osd pool create rbd 8 8
run ceph osd pool application enable rbd rbd

# Readiness: real I/O (without a manager, "ceph -s" knows no pools).
echo ready > "$dir/probe"
ok=
for _ in $(seq 300); do
    if timeout 10 rados -p rbd put probe "$dir/probe" 2>>"$log" &&
       timeout 10 rados -p rbd get probe "$dir/probe.out" 2>>"$log" &&
       cmp -s "$dir/probe" "$dir/probe.out"; then
        ok=1
        break
    fi
    sleep 0.1
done
[ -n "$ok" ] || fail "the OSD did not serve I/O"
run rados -p rbd rm probe
run rbd create --size "$size" rbd/img

STRATA_CEPH_DIR=$dir
STRATA_CEPH_POOL=rbd
STRATA_CEPH_IMAGE=img
STRATA_CEPH_KEY=$(ceph-authtool -p -n client.admin "$dir/keyring") ||
    fail "cannot read client.admin's key"
STRATA_CEPH_NOKEY_CONF=$dir/nokey.conf
export STRATA_CEPH_DIR STRATA_CEPH_POOL STRATA_CEPH_IMAGE STRATA_CEPH_KEY \
       STRATA_CEPH_NOKEY_CONF

"$@"
