/*
 * The align filter (block/align.c): its options, their checks against the
 * child, where the shaping happens, reopen with requests in flight, and
 * the block sizes the file driver reports for it to default to
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <linux/fs.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "block/blkdebug.h"
#include "block/block-int.h"
#include "block/drivers.h"
#include "block/mem.h"
#include "strata/strata.h"
#include "test-util.h"

#define RW (STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE)

typedef struct Env {
    StrataContext *ctx;
    StrataNode *top;            /* the align node */
    StrataNode *child;
    StrataBackend *be;
} Env;

static void env_open(Env *e, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void env_open(Env *e, const char *fmt, ...)
{
    g_autoptr(StrataError) err = NULL;
    g_autofree char *json = NULL;
    va_list ap;

    va_start(ap, fmt);
    json = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    *e = (Env) { .ctx = strata_context_new(NULL) };
    e->top = strata_node_open_json(e->ctx, json, &err);
    if (!e->top) {
        g_error("%s: %s", json, error_get_message(err));
    }
    g_assert_true(e->top->drv == &bdrv_align);
    e->child = node_filtered(e->top);
    e->be = strata_backend_new(e->top, "vda", RW, STRATA_PERM_ALL, &err);
    g_assert_nonnull(e->be);
}

static void env_close(Env *e)
{
    strata_backend_free(e->be);
    strata_node_unref(e->top);
    strata_context_free(e->ctx);
}

/* ---- defaults ------------------------------------------------------------ */

/* Without options: request alignment 4096 over a child that knows no
 * physical block size (mem), the child's own where it requires more; the
 * memory and element alignments are the child's, so the child never
 * bounces; the physical block size the filter reports is its alignment. */
static void test_defaults(void)
{
    Env e;
    StrataLimits l;

    env_open(&e, "{\"driver\": \"align\", \"file\": {\"driver\": \"mem\","
             " \"size\": 65536, \"align\": 512, \"mem-align\": 512,"
             " \"iov-len-align\": 256, \"max-iov\": 7}}");
    g_assert_cmpuint(e.top->bl.request_alignment, ==, 4096);
    g_assert_cmpuint(e.top->bl.mem_alignment, ==, 512);
    g_assert_cmpuint(e.top->bl.iov_len_alignment, ==, 256);
    g_assert_cmpint(e.top->bl.max_iov, ==, 7);
    g_assert_cmpuint(e.child->bl.physical_block_size, ==, 0);
    strata_node_get_limits(e.top, &l);
    g_assert_cmpuint(l.physical_block_size, ==, 4096);
    g_assert_cmpuint(l.request_alignment, ==, 4096);
    env_close(&e);

    env_open(&e, "{\"driver\": \"align\", \"file\": {\"driver\": \"mem\","
             " \"size\": 65536, \"align\": 16384}}");
    g_assert_cmpuint(e.top->bl.request_alignment, ==, 16384);
    env_close(&e);
}

/* ---- option checks -------------------------------------------------------- */

static void open_fails(const char *json, const char *msg)
{
    g_autoptr(StrataError) err = NULL;
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *n = strata_node_open_json(ctx, json, &err);

    if (n) {
        g_error("%s: opened, expected \"%s\"", json, msg);
    }
    g_assert_cmpstr(error_get_message(err), ==, msg);
    strata_context_free(ctx);
}

#define MEM(extra) "{\"driver\": \"mem\", \"node-name\": \"m\", " \
                   "\"size\": 65536" extra "}"
#define OVER(child, opts) "{\"driver\": \"align\", \"file\": " child opts "}"

/* One misuse per line: each error names the option and both values. */
static void test_option_errors(void)
{
    open_fails(OVER(MEM(", \"align\": 4096"), ", \"request-alignment\": 512"),
               "request-alignment: 512 is below the request alignment of node "
               "'m' (4096)");
    open_fails(OVER(MEM(", \"mem-align\": 4096"), ", \"mem-alignment\": 512"),
               "mem-alignment: 512 is below the memory alignment of node 'm' "
               "(4096)");
    open_fails(OVER(MEM(", \"iov-len-align\": 512"),
                    ", \"iov-len-alignment\": 256"),
               "iov-len-alignment: 256 is below the element length alignment "
               "of node 'm' (512)");
    open_fails(OVER(MEM(""), ", \"request-alignment\": 512, "
                    "\"iov-len-alignment\": 1024"),
               "iov-len-alignment: 1024 is larger than the request alignment "
               "(512)");
    open_fails(OVER(MEM(""), ", \"mem-alignment\": 8192"),
               "mem-alignment: 8192 is above the page size (4096): pool "
               "buffers are page aligned");
    open_fails(OVER(MEM(""), ", \"request-alignment\": 3000"),
               "request-alignment: must be a power of two");
    open_fails(OVER(MEM(""), ", \"request-alignment\": \"2M\""),
               "request-alignment: must be at most 1048576");
    open_fails(OVER(MEM(""), ", \"max-transfer\": 6144"),
               "max-transfer: 6144 is not a multiple of the request, memory "
               "and element alignments (4096)");
    open_fails(OVER(MEM(", \"align\": 512, \"mem-align\": 2048"),
                    ", \"request-alignment\": 512, \"max-transfer\": 1024"),
               "max-transfer: 1024 is not a multiple of the request, memory "
               "and element alignments (2048)");
    open_fails(OVER(MEM(", \"max-transfer\": 65536"), ", \"max-transfer\": "
                    "131072"),
               "max-transfer: 131072 is above the maximum transfer of node "
               "'m' (65536)");
    open_fails(OVER(MEM(""), ", \"opt-transfer\": 1000"),
               "opt-transfer: 1000 is not a multiple of the request alignment "
               "(4096)");
    open_fails(OVER(MEM(""), ", \"max-transfer\": 8192, \"opt-transfer\": "
                    "16384"),
               "opt-transfer: 16384 is above max-transfer (8192)");
    open_fails(OVER(MEM(", \"max-iov\": 8"), ", \"max-iov\": 9"),
               "max-iov: 9 is above the element limit of node 'm' (8)");
    open_fails(OVER(MEM(""), ", \"max-iov\": 0"),
               "max-iov: must be at least 1");
    open_fails(OVER("{\"driver\": \"blkdebug\", \"node-name\": \"d\", "
                    "\"opt-write-zero\": 16384, \"image\": " MEM("") "}",
                    ", \"pwrite-zeroes-alignment\": 8192"),
               "pwrite-zeroes-alignment: 8192 is below the write-zeroes "
               "alignment of node 'd' (16384)");
    open_fails(OVER("{\"driver\": \"blkdebug\", \"node-name\": \"d\", "
                    "\"opt-discard\": 16384, \"image\": " MEM("") "}",
                    ", \"pdiscard-alignment\": 4096"),
               "pdiscard-alignment: 4096 is below the discard alignment of "
               "node 'd' (16384)");
    open_fails(OVER(MEM(""), ", \"pdiscard-alignment\": 3"),
               "pdiscard-alignment: must be a power of two");
    open_fails("{\"driver\": \"align\"}", "file: missing");
}

/* Every option is set, and each shows in the node's limits. */
static void test_options_applied(void)
{
    Env e;

    env_open(&e, OVER(MEM(", \"align\": 512, \"max-transfer\": \"1M\""),
                      ", \"request-alignment\": 8192, \"mem-alignment\": 1024,"
                      " \"iov-len-alignment\": 2048, \"max-transfer\": 65536,"
                      " \"opt-transfer\": 32768, \"max-iov\": 16,"
                      " \"pwrite-zeroes-alignment\": 16384,"
                      " \"pdiscard-alignment\": 32768"));
    const BlockLimits *bl = &e.top->bl;
    g_assert_cmpuint(bl->request_alignment, ==, 8192);
    g_assert_cmpuint(bl->mem_alignment, ==, 1024);
    g_assert_cmpuint(bl->iov_len_alignment, ==, 2048);
    g_assert_cmpint(bl->max_transfer, ==, 65536);
    g_assert_cmpint(bl->opt_transfer, ==, 32768);
    g_assert_cmpint(bl->max_iov, ==, 16);
    g_assert_cmpuint(bl->pwrite_zeroes_alignment, ==, 16384);
    g_assert_cmpuint(bl->pdiscard_alignment, ==, 32768);
    env_close(&e);
}

/* ---- where the shaping happens ------------------------------------------- */

/* An unaligned write and read: padded, read-modify-written and counted on
 * the filter; the child sees only whole 4 KiB blocks and pads nothing. */
static void test_shaped_on_filter(void)
{
    Env e;
    uint8_t buf[300], back[300];
    MemTraceEntry t;

    env_open(&e, OVER(MEM(", \"align\": 512"), ", \"request-alignment\": 4096"));
    memset(buf, 0x5a, sizeof(buf));
    mem_trace_clear(e.child);
    g_assert_cmpint(strata_backend_pwrite(e.be, 4000, buf, sizeof(buf), 0), ==,
                    0);
    g_assert_cmpint(strata_backend_pread(e.be, 4000, back, sizeof(back), 0), ==,
                    0);
    g_assert_cmpmem(back, sizeof(back), buf, sizeof(buf));
    g_assert_cmpmem(mem_get_data(e.child) + 4000, 300, buf, 300);
    for (int i = 0; i < 3996; i++) {
        g_assert_cmpuint(mem_get_data(e.child)[i], ==, 0);
    }

    g_assert_cmpint(mem_trace_count(e.child), >, 0);
    for (int i = 0; i < mem_trace_count(e.child); i++) {
        g_assert_true(mem_trace_get(e.child, i, &t));
        g_assert_cmpint(t.offset % 4096, ==, 0);
        g_assert_cmpint(t.bytes % 4096, ==, 0);
    }
    g_assert_cmpuint(node_stats_sum(e.top).pad.rmw_writes, ==, 1);
    g_assert_cmpuint(node_stats_sum(e.top).pad.padded_reads, ==, 1);
    g_assert_cmpuint(node_stats_sum(e.child).pad.rmw_writes, ==, 0);
    g_assert_cmpuint(node_stats_sum(e.child).pad.padded_reads, ==, 0);
    g_assert_cmpuint(node_stats_sum(e.child).pad.bytes_bounced, ==, 0);
    env_close(&e);
}

typedef struct Done {
    bool done;
    int64_t ret;
} Done;

static void done_cb(void *opaque, int64_t ret)
{
    Done *d = opaque;

    d->ret = ret;
    d->done = true;
}

/* The RMW events of the filter's padding reach a blkdebug node below it
 * (QEMU passes events down nodes that have no handler): a write held at
 * pwritev_rmw_head holds the filter's range, and a write sharing its block
 * waits for it on the filter. */
static void test_events_reach_blkdebug(void)
{
    g_autoptr(StrataError) err = NULL;
    Env e;
    uint8_t a[100], b[100];
    struct iovec ia = { a, sizeof(a) }, ib = { b, sizeof(b) };
    Done da = { 0 }, db = { 0 };

    env_open(&e, OVER("{\"driver\": \"blkdebug\", \"node-name\": \"d\", "
                      "\"image\": " MEM("") "}", ""));
    g_assert_true(blkdebug_break(e.top, "pwritev_rmw_head", "A", &err));
    memset(a, 0x33, sizeof(a));
    memset(b, 0x44, sizeof(b));
    g_assert_cmpint(strata_backend_aio_pwritev(e.be, 100, &ia, 1, 0, done_cb,
                                               &da), ==, 0);
    g_assert_true(blkdebug_wait_break(e.top, "A"));
    g_assert_cmpint(strata_backend_aio_pwritev(e.be, 150, &ib, 1, 0, done_cb,
                                               &db), ==, 0);
    for (int i = 0; i < 20; i++) {
        strata_context_run_once(e.ctx, false);
    }
    g_assert_false(da.done);
    g_assert_false(db.done);
    g_assert_cmpuint(node_stats_sum(e.top).pad.serialising_waits, ==, 1);
    g_assert_true(blkdebug_resume(e.top, "A", &err));
    LOOP_RUN_WHILE(e.ctx->loop, !da.done || !db.done);
    g_assert_cmpint(da.ret, ==, 0);
    g_assert_cmpint(db.ret, ==, 0);
    const uint8_t *data = mem_get_data(node_find(e.ctx, "m"));
    g_assert_cmpmem(data + 100, 50, a, 50);
    g_assert_cmpmem(data + 150, 100, b, 100);
    env_close(&e);
}

/* ---- reopen ----------------------------------------------------------------- */

#define NREQ 48

typedef struct Flight {
    Done d[NREQ];
    uint8_t buf[NREQ][700];
    struct iovec iov[NREQ];
} Flight;

/* Unaligned writes, 700 bytes each at 1000-byte strides (neighbours share
 * blocks, so they serialise), all submitted and none completed yet. */
static void flight_submit(Env *e, Flight *f, uint8_t seed)
{
    for (int i = 0; i < NREQ; i++) {
        memset(f->buf[i], seed + i, sizeof(f->buf[i]));
        f->iov[i] = (struct iovec) { f->buf[i], sizeof(f->buf[i]) };
        f->d[i] = (Done) { 0 };
        g_assert_cmpint(strata_backend_aio_pwritev(e->be, 100 + 1000 * i,
                                                   &f->iov[i], 1, 0, done_cb,
                                                   &f->d[i]), ==, 0);
    }
    /* Let them enter the graph and reach the child, which holds them. */
    for (int i = 0; i < 5; i++) {
        strata_context_run_once(e->ctx, false);
    }
}

static int flight_done(const Flight *f)
{
    int n = 0;

    for (int i = 0; i < NREQ; i++) {
        n += f->d[i].done;
    }
    return n;
}

/* Every write of @f completed and is in the image, read through @e. */
static void flight_check(Env *e, const Flight *f)
{
    uint8_t back[700];

    for (int i = 0; i < NREQ; i++) {
        g_assert_cmpint(f->d[i].ret, ==, 0);
        g_assert_cmpint(strata_backend_pread(e->be, 100 + 1000 * i, back,
                                             sizeof(back), 0), ==, 0);
        g_assert_cmpmem(back, sizeof(back), f->buf[i], sizeof(f->buf[i]));
    }
}

/*
 * A reopen that changes request-alignment while writes padded to the old
 * one are in flight: the drained section waits for every one of them (the
 * reopen returns with all complete), and requests after it pad to the new
 * alignment.  @json is the node; @from and @to the alignments.
 */
static void reopen_in_flight(const char *json, uint32_t from, uint32_t to)
{
    g_autoptr(StrataError) err = NULL;
    g_autofree char *change = g_strdup_printf("{\"request-alignment\": %u}", to);
    g_autofree Flight *f = g_new0(Flight, 1);
    Env e;

    env_open(&e, "%s", json);
    g_assert_cmpuint(e.top->bl.request_alignment, ==, from);
    flight_submit(&e, f, 1);
    g_assert_cmpint(flight_done(f), <, NREQ);
    uint64_t rmw_before = node_stats_sum(e.top).pad.rmw_writes;

    if (!strata_node_reopen_json(e.top, change, &err)) {
        g_error("reopen: %s", error_get_message(err));
    }
    g_assert_cmpint(flight_done(f), ==, NREQ);
    g_assert_cmpuint(e.top->bl.request_alignment, ==, to);
    g_assert_cmpuint(e.top->bl.physical_block_size, >=, to);
    flight_check(&e, f);
    g_assert_cmpuint(node_stats_sum(e.child).pad.rmw_writes, ==, 0);

    /* A write of one whole new block needs no RMW (under the old, larger
     * alignment it would have); one of part of a block does. */
    uint8_t *blk = g_aligned_alloc(1, to, 4096);
    memset(blk, 0x7e, to);
    rmw_before = node_stats_sum(e.top).pad.rmw_writes;
    g_assert_cmpint(strata_backend_pwrite(e.be, 2 * (int64_t)MAX(from, to),
                                          blk, to, 0), ==, 0);
    g_assert_cmpuint(node_stats_sum(e.top).pad.rmw_writes, ==, rmw_before);
    g_assert_cmpint(strata_backend_pwrite(e.be, 2 * (int64_t)MAX(from, to) + 1,
                                          blk, 1, 0), ==, 0);
    g_assert_cmpuint(node_stats_sum(e.top).pad.rmw_writes, >, rmw_before);
    g_aligned_free(blk);

    /* And again the other way, with a second flight. */
    g_free(change);
    change = g_strdup_printf("{\"request-alignment\": %u}", from);
    flight_submit(&e, f, 100);
    g_assert_true(strata_node_reopen_json(e.top, change, &err));
    g_assert_cmpint(flight_done(f), ==, NREQ);
    g_assert_cmpuint(e.top->bl.request_alignment, ==, from);
    flight_check(&e, f);
    env_close(&e);
}

/* Over mem, whose requests complete in a random order after a delay. */
static void test_reopen_in_flight_mem(void)
{
    reopen_in_flight(OVER(MEM(", \"align\": 512, \"latency-ns\": 200000,"
                              " \"random-order\": true, \"seed\": 3"),
                          ", \"request-alignment\": 4096"), 4096, 512);
}

/* A directory where O_DIRECT works (tmpfs first), NULL if none. */
static char *direct_dir(void)
{
    const char *bases[] = { "/dev/shm", "/var/tmp" };

    for (size_t i = 0; i < G_N_ELEMENTS(bases); i++) {
        g_autofree char *dir = g_build_filename(bases[i], "strata-align-XXXXXX",
                                                NULL);
        g_autofree char *probe = NULL;
        int fd;

        if (!g_mkdtemp(dir)) {
            continue;
        }
        probe = g_build_filename(dir, "probe", NULL);
        fd = open(probe, O_CREAT | O_RDWR | O_DIRECT, 0600);
        if (fd >= 0) {
            close(fd);
            g_unlink(probe);
            return g_steal_pointer(&dir);
        }
        g_rmdir(dir);
    }
    return NULL;
}

/* Over an O_DIRECT file, 512 ↔ 8192 (the file's own alignment is at most
 * 4096 wherever this runs).  The image goes as soon as the graph holds
 * it. */
static void test_reopen_in_flight_file(void)
{
    g_autofree char *dir = direct_dir();
    g_autofree char *path = NULL;
    g_autofree char *json = NULL;

    if (!dir) {
        g_test_skip("no directory here takes O_DIRECT (/dev/shm, /var/tmp)");
        return;
    }
    path = g_build_filename(dir, "img", NULL);
    g_assert_true(g_file_set_contents(path, "", 0, NULL));
    g_assert_cmpint(truncate(path, 1 << 20), ==, 0);
    int fd = open(path, O_RDONLY);
    g_assert_cmpint(fd, >=, 0);
    g_autofree char *fdpath = g_strdup_printf("/proc/self/fd/%d", fd);
    g_unlink(path);
    g_rmdir(dir);
    json = g_strdup_printf(OVER("{\"driver\": \"file\", \"filename\": \"%s\","
                                " \"cache\": {\"direct\": true}}",
                                ", \"request-alignment\": 8192"), fdpath);
    reopen_in_flight(json, 8192, 4096);
    close(fd);
}

/* A reopen that asks for less than the child requires fails, naming the
 * option and both values, and changes nothing. */
static void test_reopen_refused(void)
{
    g_autoptr(StrataError) err = NULL;
    Env e;

    env_open(&e, OVER(MEM(", \"align\": 1024"), ", \"node-name\": \"a\", "
                      "\"request-alignment\": 4096"));
    g_assert_false(strata_node_reopen_json(e.top, "{\"request-alignment\": 512}",
                                           &err));
    g_assert_cmpstr(error_get_message(err), ==,
                    "Cannot reopen node 'a': request-alignment: 512 "
                    "is below the request alignment of node 'm' (1024)");
    g_assert_cmpuint(e.top->bl.request_alignment, ==, 4096);
    g_clear_pointer(&err, strata_error_free);
    g_assert_false(strata_node_reopen_json(e.top, "{\"request-alignment\": 3}",
                                           &err));
    g_assert_cmpstr(error_get_message(err), ==,
                    "request-alignment: must be a power of two");
    g_assert_cmpuint(e.top->bl.request_alignment, ==, 4096);
    env_close(&e);

    /* QEMU's end-of-image rule under the new alignment: 6 KiB is a
     * multiple of 2 KiB, not of 4 KiB, and the backend (read and write)
     * may not resize. */
    env_open(&e, OVER("{\"driver\": \"mem\", \"size\": 6144}",
                      ", \"node-name\": \"a\", \"request-alignment\": 2048"));
    g_clear_pointer(&err, strata_error_free);
    g_assert_false(strata_node_reopen_json(e.top, "{\"request-alignment\": "
                                           "4096}", &err));
    g_assert_cmpstr(error_get_message(err), ==,
                    "Cannot reopen node 'a': Cannot get 'write' permission "
                    "without 'resize': Image size is not a multiple of request "
                    "alignment");
    g_assert_cmpuint(e.top->bl.request_alignment, ==, 2048);
    env_close(&e);
}

/* ---- block sizes from the file driver ------------------------------------- */

/* A sysfs number of the request queue of @dev (partitions: one level up),
 * or 0. */
static uint32_t sysfs_queue(dev_t dev, const char *name)
{
    for (int i = 0; i < 2; i++) {
        g_autofree char *path = g_strdup_printf(
            "/sys/dev/block/%u:%u/%squeue/%s", major(dev), minor(dev),
            i ? "../" : "", name);
        g_autofree char *text = NULL;
        if (g_file_get_contents(path, &text, NULL, NULL)) {
            return (uint32_t)g_ascii_strtoull(text, NULL, 10);
        }
    }
    return 0;
}

/* A regular file: the block sizes of the device its filesystem sits on,
 * as sysfs states them; align defaults to the physical one. */
static void test_block_size_regular_file(void)
{
    g_autofree char *path = g_build_filename(g_get_tmp_dir(), "strata-align-bs-XXXXXX",
                                             NULL);
    g_autofree char *json = NULL;
    struct stat st;
    int fd = g_mkstemp(path);
    Env e;

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, 65536), ==, 0);
    g_assert_cmpint(fstat(fd, &st), ==, 0);
    json = g_strdup_printf(OVER("{\"driver\": \"file\", \"filename\": "
                                "\"/proc/self/fd/%d\"}", ""), fd);
    g_unlink(path);
    env_open(&e, "%s", json);
    uint32_t pbs = sysfs_queue(st.st_dev, "physical_block_size");
    uint32_t lbs = sysfs_queue(st.st_dev, "logical_block_size");
    g_test_message("%s: device %u:%u, logical %u, physical %u", path,
                   major(st.st_dev), minor(st.st_dev), lbs, pbs);
    g_assert_cmpuint(e.child->bl.physical_block_size, ==, pbs);
    if (lbs) {
        g_assert_cmpuint(e.child->bl.logical_block_size, ==, lbs);
    }
    g_assert_cmpuint(e.top->bl.request_alignment, ==, pbs ? MAX(pbs, 1u) : 4096);
    env_close(&e);
    close(fd);
}

/* A block device (a 4096-byte-sector loop device): BLKSSZGET and
 * BLKPBSZGET, as the kernel answers them to the test. */
static void test_block_size_device(void)
{
    int fd;
    const char *dev = test_loop_device(1 << 20, &fd);
    int lbs = 0;
    unsigned int pbs = 0;
    Env e;

    if (!dev) {
        return;
    }
    g_assert_cmpint(ioctl(fd, BLKSSZGET, &lbs), ==, 0);
    g_assert_cmpint(ioctl(fd, BLKPBSZGET, &pbs), ==, 0);
    env_open(&e, OVER("{\"driver\": \"host_device\", \"filename\": \"%s\"}", ""),
             dev);
    g_assert_cmpuint(e.child->bl.logical_block_size, ==, (uint32_t)lbs);
    g_assert_cmpuint(e.child->bl.physical_block_size, ==, pbs);
    g_assert_cmpuint(e.top->bl.request_alignment, ==, MAX(pbs, 512u));
    env_close(&e);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/align/options/defaults", test_defaults);
    g_test_add_func("/align/options/errors", test_option_errors);
    g_test_add_func("/align/options/applied", test_options_applied);
    g_test_add_func("/align/pad/shaped-on-the-filter", test_shaped_on_filter);
    g_test_add_func("/align/events/reach-blkdebug-below",
                    test_events_reach_blkdebug);
    g_test_add_func("/align/reopen/request-alignment-in-flight/mem",
                    test_reopen_in_flight_mem);
    g_test_add_func("/align/reopen/request-alignment-in-flight/file-direct",
                    test_reopen_in_flight_file);
    g_test_add_func("/align/reopen/refused", test_reopen_refused);
    g_test_add_func("/align/block-size/regular-file",
                    test_block_size_regular_file);
    g_test_add_func("/align/block-size/device", test_block_size_device);
    return g_test_run();
}
