# SPDX-License-Identifier: MIT
"""vhost-user-blk rows of tests/bench/compare (imported by it).

strata-img bench, pinned to CPU 0, runs through the virtio-blk-vhost-user
driver against strata-storage-daemon's vhost-user-blk export and against
qemu-storage-daemon 7.2's, each daemon pinned to CPU 1 and serving the
same back-end node:

  null       null-co, read-zeroes=off, 1 GiB
  file       a 1 GiB preallocated tmpfs file, cache.direct=on, aio=native
  loop4k     a 4K-native loop device (direct-io=on, over tmpfs),
             cache.direct=on, aio=native, exported with
             logical-block-size=512 (the guest writes 512-byte sectors)

Both daemons run for the whole scenario (an idle daemon costs nothing) and
the runs alternate strata, qsd, strata, qsd...  Each run records the
daemon's CPU time (utime + stime of every thread, /proc/PID/stat) over the
run, divided by the requests: "daemon CPU/req".  Each daemon serves the
export from an iothread (--object iothread,id=io0, export iothread=io0),
where both busy-poll the virtqueue for up to poll-max-ns (default 32 us)
before sleeping.  The -cpoll rows run the client's loop with the same
poll time (strata-img bench --poll-max-ns 32768), as a VMM's iothread
would: it then takes completions from the used ring without a call.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def daemon_cpu_s(pid):
    """CPU seconds of process @pid (all its threads, live and exited)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3): utime and stime are fields 14, 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Daemons:
    """The two daemons of one back-end kind, started on first use."""

    def __init__(self, ctx, build):
        self.ctx = ctx
        self.daemon = os.path.join(build, "tools", "strata-storage-daemon")
        self.procs = {}             # kind -> Popen
        self.socks = {}
        self.backend = None
        self.dir = None
        self.skip = None

    def blockdev(self, backend, qsd):
        if backend == "null":
            return ("driver=null-co,node-name=disk,read-zeroes=off,size=%d"
                    % (1 << 30))
        if backend == "file":
            f = self.ctx.file()
            return ("driver=file,node-name=disk,filename=%s,cache.direct=on,"
                    "aio=native,locking=off" % f)
        dev = self.ctx.loop()
        if not dev:
            return None
        return ("driver=host_device,node-name=disk,filename=%s,cache.direct=on,"
                "aio=native,locking=off" % dev)

    def start(self, backend, env=None):
        """Sockets {"strata": path, "qsd": path} serving @backend, or None
        with self.skip set."""
        if self.backend == backend and self.procs:
            return self.socks
        self.stop()
        for prog in ("qemu-storage-daemon", "taskset"):
            if not shutil.which(prog):
                self.skip = "%s is not installed (scripts/deps.sh)" % prog
                return None
        if (os.cpu_count() or 1) < 2:
            self.skip = "needs 2 CPUs (daemon on CPU 1, client on CPU 0)"
            return None
        self.dir = tempfile.mkdtemp(prefix="strata-bench-vhost-")
        for kind in ("strata", "qsd"):
            bd = self.blockdev(backend, kind == "qsd")
            if not bd:
                self.skip = self.ctx.loop_skip
                return None
            sock = os.path.join(self.dir, kind + ".sock")
            # In an iothread, as VMMs deploy it: both daemons then poll
            # their virtqueues before sleeping (poll-max-ns, 32 us by
            # default in both).
            ex = ("type=vhost-user-blk,id=vub0,node-name=disk,addr.type=unix,"
                  "addr.path=%s,writable=on,iothread=io0" % sock)
            if backend == "loop4k":
                ex += ",logical-block-size=512"
            prog = self.daemon if kind == "strata" else "qemu-storage-daemon"
            self.procs[kind] = subprocess.Popen(
                ["taskset", "-c", "1", prog, "--object", "iothread,id=io0",
                 "--blockdev", bd, "--export", ex],
                stderr=subprocess.DEVNULL, env=dict(os.environ, **(env or {})))
            self.socks[kind] = sock
        deadline = time.monotonic() + 10
        for kind, sock in self.socks.items():
            while not os.path.exists(sock):
                if time.monotonic() > deadline or self.procs[kind].poll() is not None:
                    self.skip = "%s did not come up" % kind
                    self.stop()
                    return None
                time.sleep(0.01)
        self.backend = backend
        return self.socks

    def pid(self, kind):
        return self.procs[kind].pid

    def stop(self):
        for p in self.procs.values():
            p.terminate()
            p.wait()
        self.procs = {}
        self.socks = {}
        self.backend = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def target(sock):
    return ('json:{"driver":"raw","file":{"driver":"virtio-blk-vhost-user",'
            '"path":"%s"}}' % sock)


# The client's loop polls its used rings as an iothread of a VMM would
# (QEMU's default poll-max-ns); the rows without it stand for a guest
# whose vCPU sleeps until the interrupt.
CLIENT_POLL = ("--poll-max-ns", "32768")

# (name, backend, write, depth, size, count, description, client options)
ROWS = (
    ("vhost-null-read-d1", "null", False, 1, 4096, 50000,
     "null-co read-zeroes=off, 4 KiB reads, depth 1", ()),
    ("vhost-null-read-d32", "null", False, 32, 4096, 400000,
     "null-co read-zeroes=off, 4 KiB reads, depth 32", ()),
    ("vhost-null-read-d32-cpoll", "null", False, 32, 4096, 800000,
     "null-co read-zeroes=off, 4 KiB reads, depth 32, the client polls "
     "(--poll-max-ns 32768)", CLIENT_POLL),
    ("vhost-file-read-d32", "file", False, 32, 4096, 200000,
     "1 GiB tmpfs file, O_DIRECT aio=native, 4 KiB reads, depth 32", ()),
    ("vhost-file-read-d32-cpoll", "file", False, 32, 4096, 400000,
     "1 GiB tmpfs file, O_DIRECT aio=native, 4 KiB reads, depth 32, the "
     "client polls (--poll-max-ns 32768)", CLIENT_POLL),
    ("vhost-loop4k-write512-d32", "loop4k", True, 32, 512, 100000,
     "4K-native loop device, export logical-block-size=512, 512 B sequential "
     "writes, depth 32", ()),
)


def scenarios(c, daemons):
    """compare's scenario tuples for the vhost-user-blk rows."""
    def build(backend, write, depth, size, count, extra):
        def b():
            socks = daemons.start(backend)
            if not socks:
                return daemons.skip
            runs = []
            for kind in ("strata", "qsd"):
                label = "strata-daemon" if kind == "strata" else "qsd"
                r = c.strata(label, target(socks[kind]), c.n(count), depth, size,
                             write=write, extra=extra)
                r.argv = ["taskset", "-c", "0"] + r.argv
                r.daemon_pid = (lambda k=kind: daemons.pid(k))
                runs.append(r)
            return runs
        return b

    for name, backend, write, depth, size, count, desc, extra in ROWS:
        yield (name, "strata-img bench through virtio-blk-vhost-user (client "
               "CPU 0) against strata-storage-daemon and qemu-storage-daemon "
               "(CPU 1): " + desc, build(backend, write, depth, size, count,
                                          extra),
               [("strata-daemon", "qsd"), ("strata-daemon", "qsd", "daemon_cpu")])


# Targets of issue 17: IOPS ratios (QSD time / Strata time) and daemon CPU
# per request (Strata's / QSD's), in compare's TARGETS format.
TARGETS = [
    ("vhost-null-read-d32", "strata-daemon", "qsd", "iops", ">=", 2.0,
     "vhost-user-blk null 4K reads d32 >= 2x QSD"),
    ("vhost-null-read-d1", "strata-daemon", "qsd", "iops", ">=", 1.5,
     "vhost-user-blk null 4K reads d1 >= 1.5x QSD"),
    ("vhost-file-read-d32", "strata-daemon", "qsd", "iops", ">=", 1.5,
     "vhost-user-blk O_DIRECT tmpfs 4K reads d32 >= 1.5x QSD"),
    ("vhost-loop4k-write512-d32", "strata-daemon", "qsd", "iops", ">=", 3.0,
     "vhost-user-blk 512 B writes on 4K-native d32 >= 3x QSD"),
] + [(name, "strata-daemon", "qsd", "daemon_cpu", "<=", 0.5,
      "vhost-user-blk %s: daemon CPU/req <= 0.5x QSD's" % name[6:])
     for name, *_ in ROWS if "cpoll" not in name]


def export_mallocs(c, daemons, malloc_so):
    """Heap allocations per request in strata-storage-daemon's export (null
    node, 4 KiB reads, depth 32): the daemon runs under malloc-count.so and
    gdb reads its counter after a warm-up run and after the measured run.
    (figure, None), or (None, why it was not measured): gdb missing
    (scripts/deps.sh installs it) or the daemons did not start."""
    if not shutil.which("gdb"):
        return None, "gdb not installed"
    daemons.stop()
    socks = daemons.start("null", env={"G_SLICE": "always-malloc",
                                       "LD_PRELOAD": malloc_so})
    if not socks:
        return None, "the daemons did not start"
    pid = daemons.pid("strata")

    def count():
        out = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex",
                              "print *(unsigned long *)&malloc_count_total"],
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("$1 = "):
                return int(line.split("=")[1])
        raise RuntimeError("gdb could not read malloc_count_total: " + out[-300:])

    def bench(n):
        subprocess.run(["taskset", "-c", "0", c.img, "bench", "-q", "-c", str(n),
                        "-d", "32", target(socks["strata"])], check=True,
                       stdout=subprocess.DEVNULL)
    # A connection's set-up allocates (its state, the memory table): a
    # short run measures that, the long run's extra requests are the rest.
    # The short run is long enough for the queue's free list of requests
    # to reach the most ever in flight (with 2000 requests, one run in
    # several allocated one more request in the long run: 0.000005 per
    # request, a warm-up left over, not a per-request allocation).
    small, n = 20000, c.n(200000)
    bench(small)
    c0 = count()
    bench(small)
    c1 = count()
    bench(n)
    c2 = count()
    daemons.stop()
    return max(0, (c2 - c1) - (c1 - c0)) / (n - small), None
