/*
 * Tests of the mem and null drivers, called directly from coroutines
 * SPDX-License-Identifier: MIT
 *
 * The drivers are exercised without the request path: each test opens a
 * node by hand (driver table, opaque state, open callback) and calls the
 * callbacks from a coroutine of the test's loop, so what is tested is the
 * driver's own behaviour: limit checks, counters, trace, error injection,
 * allocation status, truncate, completion order.
 *
 * Random tests take their seed from STRATA_TEST_SEED (default fixed) and
 * print it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

#include "block/block-int.h"
#include "block/drivers.h"
#include "block/mem.h"

static Loop *test_loop;

/* ---- harness -------------------------------------------------------------- */

/* Open a node of @drv from JSON @json; "driver" may be present and is
 * consumed.  Unknown keys fail as block_open would fail them. */
static StrataNode *test_open(const BlockDriver *drv, const char *json,
                             StrataError **errp)
{
    g_autoptr(OptNode) opts = opts_parse_json(json, errp);
    StrataNode *node;
    const char *driver;

    if (!opts) {
        return NULL;
    }
    g_assert_true(opts_get_str(opts, "driver", drv->name, &driver, NULL));
    g_assert_true(block_driver_find(driver) == drv);
    node = g_new0(StrataNode, 1);
    node->drv = drv;
    node->opaque = g_malloc0(drv->instance_size);
    node->total_bytes = -1;
    if (!drv->open(node, opts, errp) || !opts_check_consumed(opts, errp)) {
        if (node->drv->close) {
            node->drv->close(node);
        }
        g_free(node->opaque);
        g_free(node);
        return NULL;
    }
    return node;
}

static StrataNode *test_open_ok(const BlockDriver *drv, const char *json)
{
    g_autoptr(StrataError) err = NULL;
    StrataNode *node = test_open(drv, json, &err);

    if (!node) {
        g_error("opening %s failed: %s", json, error_get_message(err));
    }
    return node;
}

static void test_close(StrataNode *node)
{
    if (node->drv->close) {
        node->drv->close(node);
    }
    g_free(node->opaque);
    g_free(node);
}

/* Expect opening @json to fail with a message equal to @msg. */
static void test_open_fails(const BlockDriver *drv, const char *json,
                            const char *msg)
{
    g_autoptr(StrataError) err = NULL;
    StrataNode *node = test_open(drv, json, &err);

    g_assert_null(node);
    g_assert_nonnull(err);
    g_assert_cmpstr(error_get_message(err), ==, msg);
}

typedef struct Req {
    StrataNode *node;
    BlockReqType type;
    int64_t offset, bytes;
    const IOVector *qiov;
    int flags;
    int ret;
    int64_t pnum;
    bool status;            /* block status instead of @type */
    bool done;
    /* completion order recording */
    int index;
    int *order;
    int *norder;
} Req;

static void req_entry(void *opaque)
{
    Req *r = opaque;
    const BlockDriver *drv = r->node->drv;

    if (r->status) {
        r->ret = drv->co_block_status(r->node, r->offset, r->bytes, &r->pnum);
    } else {
        switch (r->type) {
        case REQ_READ:
            r->ret = drv->co_preadv(r->node, r->offset, r->bytes, r->qiov,
                                    r->flags);
            break;
        case REQ_WRITE:
            r->ret = drv->co_pwritev(r->node, r->offset, r->bytes, r->qiov,
                                     r->flags);
            break;
        case REQ_ZEROES:
            r->ret = drv->co_pwrite_zeroes(r->node, r->offset, r->bytes,
                                           r->flags);
            break;
        case REQ_DISCARD:
            r->ret = drv->co_pdiscard(r->node, r->offset, r->bytes);
            break;
        case REQ_FLUSH:
            r->ret = drv->co_flush(r->node);
            break;
        default:
            g_assert_not_reached();
        }
    }
    if (r->order) {
        r->order[(*r->norder)++] = r->index;
    }
    r->done = true;
}

static void req_run(Req *r)
{
    r->done = false;
    loop_co_spawn(test_loop, req_entry, r);
    while (!r->done) {
        loop_run_once(test_loop, true);
    }
}

static int do_rw(StrataNode *node, BlockReqType type, int64_t offset,
                 int64_t bytes, const IOVector *qiov, int flags)
{
    Req r = { .node = node, .type = type, .offset = offset, .bytes = bytes,
              .qiov = qiov, .flags = flags };

    req_run(&r);
    return r.ret;
}

static int do_read(StrataNode *node, int64_t offset, void *buf, size_t len)
{
    IOVector v;
    int ret;

    iov_init_buf(&v, buf, len);
    ret = do_rw(node, REQ_READ, offset, (int64_t)len, &v, 0);
    iov_cleanup(&v);
    return ret;
}

static int do_write(StrataNode *node, int64_t offset, const void *buf,
                    size_t len, int flags)
{
    IOVector v;
    int ret;

    iov_init_buf(&v, (void *)buf, len);
    ret = do_rw(node, REQ_WRITE, offset, (int64_t)len, &v, flags);
    iov_cleanup(&v);
    return ret;
}

static int do_status(StrataNode *node, int64_t offset, int64_t bytes,
                     int64_t *pnum)
{
    Req r = { .node = node, .offset = offset, .bytes = bytes,
              .status = true };

    req_run(&r);
    *pnum = r.pnum;
    return r.ret;
}

static uint64_t violations(StrataNode *node)
{
    MemCounters c;

    mem_get_counters(node, &c);
    return c.limit_violations;
}

static void fill_pattern(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 8));
    }
}

static guint32 test_seed(void)
{
    const char *env = g_getenv("STRATA_TEST_SEED");
    guint32 seed = env ? (guint32)strtoul(env, NULL, 0) : 0x6d656du;

    g_test_message("seed: %" G_GUINT32_FORMAT
                   " (set STRATA_TEST_SEED to repeat)", seed);
    return seed;
}

/* ---- mem: data ------------------------------------------------------------- */

static void test_mem_round_trip(void)
{
    StrataNode *node = test_open_ok(&bdrv_mem,
                                    "{\"driver\": \"mem\", \"size\": 65536}");
    g_autofree uint8_t *wbuf = g_malloc(12288);
    g_autofree uint8_t *rbuf = g_malloc0(12288);
    IOVector v;
    MemCounters c;

    g_assert_cmpint(bdrv_mem.get_length(node), ==, 65536);
    g_assert_cmpint(node->total_bytes, ==, 65536);
    g_assert_cmpuint(mem_get_size(node), ==, 65536);

    /* Vectored write of three unequal pieces. */
    fill_pattern(wbuf, 12288, 1);
    iov_init(&v, 8);
    iov_add(&v, wbuf, 100);
    iov_add(&v, wbuf + 100, 8000);
    iov_add(&v, wbuf + 8100, 4188);
    g_assert_cmpint(do_rw(node, REQ_WRITE, 4096, 12288, &v, 0), ==, 0);
    iov_cleanup(&v);
    g_assert_cmpmem(mem_get_data(node) + 4096, 12288, wbuf, 12288);

    /* Vectored read in other pieces. */
    iov_init(&v, 8);
    iov_add(&v, rbuf, 5000);
    iov_add(&v, rbuf + 5000, 0);
    iov_add(&v, rbuf + 5000, 7288);
    g_assert_cmpint(do_rw(node, REQ_READ, 4096, 12288, &v, 0), ==, 0);
    iov_cleanup(&v);
    g_assert_cmpmem(rbuf, 12288, wbuf, 12288);

    /* Bytes never written read as zero. */
    g_assert_cmpint(do_read(node, 0, rbuf, 4096), ==, 0);
    for (int i = 0; i < 4096; i++) {
        g_assert_cmpuint(rbuf[i], ==, 0);
    }

    g_assert_cmpint(do_rw(node, REQ_FLUSH, 0, 0, NULL, 0), ==, 0);
    g_assert_cmpint(do_write(node, 0, wbuf, 512, REQ_FUA), ==, 0);
    mem_get_counters(node, &c);
    g_assert_cmpuint(c.requests[REQ_WRITE], ==, 2);
    g_assert_cmpuint(c.bytes[REQ_WRITE], ==, 12288 + 512);
    g_assert_cmpuint(c.requests[REQ_READ], ==, 2);
    g_assert_cmpuint(c.bytes[REQ_READ], ==, 12288 + 4096);
    g_assert_cmpuint(c.flushes, ==, 1);
    g_assert_cmpuint(c.fua_writes, ==, 1);
    g_assert_cmpuint(c.limit_violations, ==, 0);
    g_assert_cmpint(c.in_flight, ==, 0);
    g_assert_true(node->supports_fua);
    test_close(node);
}

/* ---- mem: limits ------------------------------------------------------------- */

static StrataNode *open_strict(void)
{
    return test_open_ok(&bdrv_mem,
                        "{\"size\": 1048576, \"align\": 4096, "
                        "\"mem-align\": 512, \"iov-len-align\": 512, "
                        "\"max-transfer\": 65536, \"max-iov\": 4, "
                        "\"fua\": false}");
}

/* Expect one more violation and -EINVAL, traced as a violation. */
static void assert_violation(StrataNode *node, int ret, uint64_t *expected)
{
    MemTraceEntry e;

    g_assert_cmpint(ret, ==, -EINVAL);
    (*expected)++;
    g_assert_cmpuint(violations(node), ==, *expected);
    g_assert_true(mem_trace_get(node, mem_trace_count(node) - 1, &e));
    g_assert_true(e.violation);
    g_assert_cmpstr(mem_last_violation(node), !=, "");
}

static void test_mem_limits_align(void)
{
    StrataNode *node = open_strict();
    uint8_t *buf = g_malloc0(8192 + 4096);
    uint8_t *abuf = (uint8_t *)ROUND_UP((uintptr_t)buf, 4096);
    uint64_t n = 0;
    int64_t pnum;

    g_assert_cmpint(do_read(node, 4096, abuf, 4096), ==, 0);
    g_assert_cmpint(do_write(node, 8192, abuf, 8192, 0), ==, 0);
    g_assert_cmpuint(violations(node), ==, 0);

    assert_violation(node, do_read(node, 512, abuf, 4096), &n);
    assert_violation(node, do_read(node, 4096, abuf, 512), &n);
    assert_violation(node, do_write(node, 4095, abuf, 4096, 0), &n);
    assert_violation(node, do_write(node, 0, abuf, 6144, 0), &n);
    assert_violation(node, do_rw(node, REQ_ZEROES, 512, 4096, NULL, 0), &n);
    assert_violation(node, do_rw(node, REQ_DISCARD, 0, 2048, NULL, 0), &n);
    /* Past the end, and negative. */
    assert_violation(node, do_read(node, 1048576, abuf, 4096), &n);
    assert_violation(node, do_rw(node, REQ_ZEROES, 1044480, 8192, NULL, 0),
                     &n);
    assert_violation(node, do_rw(node, REQ_DISCARD, -4096, 4096, NULL, 0),
                     &n);
    g_assert_cmpint(do_status(node, 1048576 - 4096, 8192, &pnum), ==, -EINVAL);
    g_assert_cmpuint(violations(node), ==, ++n);
    /* Flush has no range to break. */
    g_assert_cmpint(do_rw(node, REQ_FLUSH, 0, 0, NULL, 0), ==, 0);
    g_assert_cmpuint(violations(node), ==, n);
    g_free(buf);
    test_close(node);
}

static void test_mem_limits_memory(void)
{
    StrataNode *node = open_strict();
    uint8_t *buf = g_malloc0(65536 + 4096);
    uint8_t *abuf = (uint8_t *)ROUND_UP((uintptr_t)buf, 4096);
    uint64_t n = 0;
    IOVector v;

    /* mem-align 512: the address of an element. */
    assert_violation(node, do_read(node, 0, abuf + 8, 4096), &n);
    iov_init(&v, 4);
    iov_add(&v, abuf, 2048);
    iov_add(&v, abuf + 2048 + 256, 2048);
    assert_violation(node, do_rw(node, REQ_WRITE, 0, 4096, &v, 0), &n);
    iov_cleanup(&v);

    /* iov-len-align 512: each element's length, not only the sum. */
    iov_init(&v, 4);
    iov_add(&v, abuf, 1000);
    iov_add(&v, abuf + 1024, 3096);
    assert_violation(node, do_rw(node, REQ_READ, 0, 4096, &v, 0), &n);
    iov_cleanup(&v);

    /* Legal: 512-multiples at 512-aligned addresses; an empty element at a
     * misaligned address does not matter. */
    iov_init(&v, 4);
    iov_add(&v, abuf + 512, 1536);
    iov_add(&v, abuf + 7, 0);
    iov_add(&v, abuf + 4096, 2560);
    g_assert_cmpint(do_rw(node, REQ_READ, 0, 4096, &v, 0), ==, 0);
    iov_cleanup(&v);
    g_assert_cmpuint(violations(node), ==, n);

    /* max-iov 4. */
    iov_init(&v, 8);
    for (int i = 0; i < 5; i++) {
        iov_add(&v, abuf + i * 1024, i == 4 ? 0 : 1024);
    }
    assert_violation(node, do_rw(node, REQ_WRITE, 0, 4096, &v, 0), &n);
    iov_cleanup(&v);
    iov_init(&v, 8);
    for (int i = 0; i < 4; i++) {
        iov_add(&v, abuf + i * 1024, 1024);
    }
    g_assert_cmpint(do_rw(node, REQ_WRITE, 0, 4096, &v, 0), ==, 0);
    iov_cleanup(&v);

    /* Vector size disagreeing with the request. */
    iov_init_buf(&v, abuf, 8192);
    assert_violation(node, do_rw(node, REQ_READ, 0, 4096, &v, 0), &n);
    iov_cleanup(&v);

    /* max-transfer 64 KiB: 64 KiB passes, 68 KiB does not. */
    g_assert_cmpint(do_read(node, 0, abuf, 65536), ==, 0);
    g_assert_cmpuint(violations(node), ==, n);
    {
        g_autofree uint8_t *big = g_malloc0(69632 + 4096);
        uint8_t *abig = (uint8_t *)ROUND_UP((uintptr_t)big, 4096);
        assert_violation(node, do_read(node, 0, abig, 69632), &n);
    }

    /* fua=false: a FUA write is a violation (the request path must flush
     * instead), a plain write is fine. */
    g_assert_false(node->supports_fua);
    assert_violation(node, do_write(node, 0, abuf, 4096, REQ_FUA), &n);
    assert_violation(node, do_rw(node, REQ_ZEROES, 0, 4096, NULL, REQ_FUA),
                     &n);
    g_assert_cmpint(do_write(node, 0, abuf, 4096, 0), ==, 0);
    g_assert_cmpuint(violations(node), ==, n);
    g_free(buf);
    test_close(node);
}

static void test_mem_limits_refresh(void)
{
    StrataNode *node = open_strict();
    BlockLimits bl = { .request_alignment = 1, .opt_mem_alignment = 4096 };

    bdrv_mem.refresh_limits(node, &bl);
    g_assert_cmpuint(bl.request_alignment, ==, 4096);
    g_assert_cmpuint(bl.mem_alignment, ==, 512);
    g_assert_cmpuint(bl.iov_len_alignment, ==, 512);
    g_assert_cmpint(bl.max_transfer, ==, 65536);
    g_assert_cmpint(bl.max_iov, ==, 4);
    g_assert_cmpuint(bl.opt_mem_alignment, ==, 4096);
    test_close(node);

    node = test_open_ok(&bdrv_mem, "{\"size\": 4096}");
    memset(&bl, 0, sizeof(bl));
    bdrv_mem.refresh_limits(node, &bl);
    g_assert_cmpuint(bl.request_alignment, ==, 1);
    g_assert_cmpuint(bl.mem_alignment, ==, 1);
    g_assert_cmpuint(bl.iov_len_alignment, ==, 1);
    g_assert_cmpint(bl.max_transfer, ==, 0);
    g_assert_cmpint(bl.max_iov, ==, 1024);
    test_close(node);
}

/* ---- mem: error injection ------------------------------------------------------ */

static void test_mem_errors_count(void)
{
    StrataNode *node = test_open_ok(&bdrv_mem, "{\"size\": 65536}");
    uint8_t buf[4096];
    MemCounters c;

    fill_pattern(buf, sizeof(buf), 2);
    mem_inject_error(node, REQ_WRITE, 8192, 4096, EIO, 2);
    /* Not overlapping: unaffected.  Other types: unaffected. */
    g_assert_cmpint(do_write(node, 4096, buf, 4096, 0), ==, 0);
    g_assert_cmpint(do_write(node, 12288, buf, 4096, 0), ==, 0);
    g_assert_cmpint(do_read(node, 8192, buf, 4096), ==, 0);
    /* Overlapping by one byte: fails twice, then succeeds. */
    fill_pattern(buf, sizeof(buf), 2);
    g_assert_cmpint(do_write(node, 8192 - 4095, buf, 4096, 0), ==, -EIO);
    g_assert_cmpint(do_write(node, 8192, buf, 4096, 0), ==, -EIO);
    /* A failed write leaves the data as it was. */
    g_assert_cmpuint(mem_get_data(node)[8192], ==, 0);
    g_assert_cmpint(do_write(node, 8192, buf, 4096, 0), ==, 0);
    g_assert_cmpmem(mem_get_data(node) + 8192, 4096, buf, 4096);
    mem_get_counters(node, &c);
    g_assert_cmpuint(c.errors[REQ_WRITE], ==, 2);
    g_assert_cmpuint(c.limit_violations, ==, 0);
    test_close(node);
}

static void test_mem_errors_forever(void)
{
    StrataNode *node = test_open_ok(&bdrv_mem, "{\"size\": 65536}");
    uint8_t buf[4096];

    memset(buf, 0xaa, sizeof(buf));
    mem_inject_error(node, REQ_READ, 0, -1, ENOSPC, -1);
    mem_inject_error(node, REQ_FLUSH, 0, 0, EIO, 1);
    for (int i = 0; i < 10; i++) {
        g_assert_cmpint(do_read(node, i * 4096, buf, 4096), ==, -ENOSPC);
    }
    /* A failed read transfers nothing. */
    g_assert_cmpuint(buf[0], ==, 0xaa);
    g_assert_cmpint(do_rw(node, REQ_FLUSH, 0, 0, NULL, 0), ==, -EIO);
    g_assert_cmpint(do_rw(node, REQ_FLUSH, 0, 0, NULL, 0), ==, 0);
    g_assert_cmpint(do_rw(node, REQ_DISCARD, 0, 4096, NULL, 0), ==, 0);
    mem_clear_errors(node);
    g_assert_cmpint(do_read(node, 0, buf, 4096), ==, 0);
    g_assert_cmpuint(buf[0], ==, 0);
    test_close(node);
}

/* ---- mem: block status --------------------------------------------------------- */

static void assert_status(StrataNode *node, int64_t offset, int64_t bytes,
                          int want, int64_t want_pnum)
{
    int64_t pnum = -1;
    int ret = do_status(node, offset, bytes, &pnum);

    g_assert_cmpint(ret, ==, want);
    g_assert_cmpint(pnum, ==, want_pnum);
}

static void test_mem_status_runs(void)
{
    /* 1 MiB + 1 KiB: the last chunk is partial. */
    const int64_t size = 1048576 + 1024;
    StrataNode *node = test_open_ok(&bdrv_mem, "{\"size\": 1049600}");
    g_autofree uint8_t *buf = g_malloc(65536);
    int64_t pnum;
    uint8_t *rbuf;

    assert_status(node, 0, size, STRATA_BLOCK_ZERO, size);

    /* Data in [8K, 72K): chunks 2..17; an unaligned start still marks the
     * whole chunk. */
    fill_pattern(buf, 65536, 3);
    g_assert_cmpint(do_write(node, 8192 + 100, buf, 65536 - 100, 0), ==, 0);
    assert_status(node, 0, size, STRATA_BLOCK_ZERO, 8192);
    assert_status(node, 8192, size - 8192, STRATA_BLOCK_DATA, 65536);
    assert_status(node, 10000, 100, STRATA_BLOCK_DATA, 100);
    assert_status(node, 73728, size - 73728, STRATA_BLOCK_ZERO,
                  size - 73728);

    /* Write-zeroes with unmap over [16K, 32K) → unallocated; a partial
     * chunk at its tail keeps DATA. */
    g_assert_cmpint(do_rw(node, REQ_ZEROES, 16384, 16384 + 100, NULL,
                          REQ_MAY_UNMAP), ==, 0);
    assert_status(node, 8192, size - 8192, STRATA_BLOCK_DATA, 8192);
    assert_status(node, 16384, size - 16384, STRATA_BLOCK_ZERO, 16384);
    assert_status(node, 32768, size - 32768, STRATA_BLOCK_DATA, 40960);
    /* Zeroed bytes are zero; the bytes after them keep the data. */
    g_assert_cmpuint(mem_get_data(node)[32768 + 99], ==, 0);
    g_assert_cmpmem(mem_get_data(node) + 32768 + 100, 4096,
                    buf + (32768 + 100 - 8292), 4096);

    /* Write-zeroes without unmap: allocated zeroes. */
    g_assert_cmpint(do_rw(node, REQ_ZEROES, 40960, 8192, NULL, 0), ==, 0);
    assert_status(node, 32768, size - 32768, STRATA_BLOCK_DATA, 8192);
    assert_status(node, 40960, size - 40960,
                  STRATA_BLOCK_DATA | STRATA_BLOCK_ZERO, 8192);
    assert_status(node, 49152, size - 49152, STRATA_BLOCK_DATA, 24576);

    /* Discard → zeroes, unallocated; merges with the following zero run. */
    g_assert_cmpint(do_rw(node, REQ_DISCARD, 49152, 24576, NULL, 0), ==, 0);
    assert_status(node, 49152, size - 49152, STRATA_BLOCK_ZERO,
                  size - 49152);
    rbuf = g_malloc0(24576);
    memset(rbuf, 0xff, 24576);
    g_assert_cmpint(do_read(node, 49152, rbuf, 24576), ==, 0);
    for (int i = 0; i < 24576; i++) {
        g_assert_cmpuint(rbuf[i], ==, 0);
    }
    g_free(rbuf);

    /* The partial last chunk: writing its 1 KiB marks it DATA, and
     * discarding exactly to the end unallocates it again. */
    g_assert_cmpint(do_write(node, 1048576, buf, 1024, 0), ==, 0);
    assert_status(node, 1048576 - 4096, 5120, STRATA_BLOCK_ZERO, 4096);
    assert_status(node, 1048576, 1024, STRATA_BLOCK_DATA, 1024);
    g_assert_cmpint(do_rw(node, REQ_DISCARD, 1048576, 1024, NULL, 0), ==, 0);
    assert_status(node, 1048576, 1024, STRATA_BLOCK_ZERO, 1024);

    /* Runs longer than one bitmap word (64 chunks = 256 KiB). */
    {
        g_autofree uint8_t *big = g_malloc0(524288);
        g_assert_cmpint(do_write(node, 131072, big, 524288, 0), ==, 0);
    }
    assert_status(node, 0, size, STRATA_BLOCK_ZERO, 8192);
    assert_status(node, 131072, size - 131072, STRATA_BLOCK_DATA, 524288);
    assert_status(node, 135168, 4096, STRATA_BLOCK_DATA, 4096);
    assert_status(node, 655360, size - 655360, STRATA_BLOCK_ZERO,
                  size - 655360);
    g_assert_cmpint(do_status(node, 0, 0, &pnum), ==, -EINVAL);
    test_close(node);
}

static void test_mem_zeroes_disabled(void)
{
    StrataNode *node = test_open_ok(&bdrv_mem,
                                    "{\"size\": 65536, \"zeroes\": false}");
    MemCounters c;

    g_assert_cmpint(do_rw(node, REQ_ZEROES, 0, 4096, NULL, 0), ==, -ENOTSUP);
    mem_get_counters(node, &c);
    g_assert_cmpuint(c.requests[REQ_ZEROES], ==, 0);
    g_assert_cmpint(mem_trace_count(node), ==, 0);
    /* Discard still works. */
    g_assert_cmpint(do_rw(node, REQ_DISCARD, 0, 4096, NULL, 0), ==, 0);
    test_close(node);
}

/* ---- mem: truncate --------------------------------------------------------------- */

typedef struct TruncateCall {
    StrataNode *node;
    int64_t size;
    PreallocMode prealloc;
    StrataError **errp;
    int ret;
    bool done;
} TruncateCall;

static void truncate_entry(void *opaque)
{
    TruncateCall *t = opaque;

    t->ret = t->node->drv->co_truncate(t->node, t->size, t->prealloc,
                                       t->errp);
    t->done = true;
}

static int run_truncate(StrataNode *node, int64_t size, PreallocMode prealloc,
                        StrataError **errp)
{
    TruncateCall t = { node, size, prealloc, errp, 0, false };

    loop_co_spawn(test_loop, truncate_entry, &t);
    while (!t.done) {
        loop_run_once(test_loop, true);
    }
    return t.ret;
}

static void test_mem_truncate(void)
{
    StrataNode *node = test_open_ok(&bdrv_mem,
                                    "{\"size\": 16384, \"align\": 512}");
    uint8_t buf[16384], rbuf[16384];
    g_autoptr(StrataError) err = NULL;

    fill_pattern(buf, sizeof(buf), 4);
    g_assert_cmpint(do_write(node, 0, buf, 16384, 0), ==, 0);

    /* Grow: old data kept, new tail zero and unallocated. */
    g_assert_cmpint(run_truncate(node, 1 << 20, PREALLOC_OFF, NULL), ==, 0);
    g_assert_cmpint(bdrv_mem.get_length(node), ==, 1 << 20);
    g_assert_cmpint(node->total_bytes, ==, 1 << 20);
    g_assert_cmpmem(mem_get_data(node), 16384, buf, 16384);
    g_assert_cmpint(do_read(node, 16384, rbuf, 16384), ==, 0);
    for (size_t i = 0; i < sizeof(rbuf); i++) {
        g_assert_cmpuint(rbuf[i], ==, 0);
    }
    assert_status(node, 0, 1 << 20, STRATA_BLOCK_DATA, 16384);
    assert_status(node, 16384, (1 << 20) - 16384, STRATA_BLOCK_ZERO,
                  (1 << 20) - 16384);

    /* Shrink into the middle of a chunk, then grow: the cut-off bytes come
     * back as zeroes, not as the old data. */
    g_assert_cmpint(run_truncate(node, 5120, PREALLOC_OFF, NULL), ==, 0);
    g_assert_cmpuint(mem_get_size(node), ==, 5120);
    g_assert_cmpint(do_read(node, 4096, rbuf, 4096), ==, -EINVAL);
    g_assert_cmpint(run_truncate(node, 16384, PREALLOC_OFF, NULL), ==, 0);
    g_assert_cmpint(do_read(node, 0, rbuf, 16384), ==, 0);
    g_assert_cmpmem(rbuf, 5120, buf, 5120);
    for (size_t i = 5120; i < sizeof(rbuf); i++) {
        g_assert_cmpuint(rbuf[i], ==, 0);
    }
    assert_status(node, 0, 16384, STRATA_BLOCK_DATA, 8192);
    assert_status(node, 8192, 8192, STRATA_BLOCK_ZERO, 8192);

    /* Preallocated growth reads as zeroes but is allocated. */
    g_assert_cmpint(run_truncate(node, 32768, PREALLOC_FULL, NULL), ==, 0);
    assert_status(node, 16384, 16384, STRATA_BLOCK_DATA | STRATA_BLOCK_ZERO,
                  16384);

    /* To zero and back. */
    g_assert_cmpint(run_truncate(node, 0, PREALLOC_OFF, NULL), ==, 0);
    g_assert_null(mem_get_data(node));
    g_assert_cmpint(run_truncate(node, 4096, PREALLOC_FALLOC, NULL), ==, 0);
    assert_status(node, 0, 4096, STRATA_BLOCK_DATA | STRATA_BLOCK_ZERO, 4096);

    /* A size the alignment does not divide is refused. */
    g_assert_cmpint(run_truncate(node, 1000, PREALLOC_OFF, &err), ==, -EINVAL);
    g_assert_nonnull(err);
    g_assert_cmpuint(mem_get_size(node), ==, 4096);
    test_close(node);
}

/* ---- mem: completion order ------------------------------------------------------ */

#define NCONC 16

/*
 * Start NCONC reads of 4 KiB at distinct offsets at once, and return the
 * completion order as offsets / 4096 in @done_order and the arrival order
 * the driver saw (from its trace) in @issue_order.
 */
static void run_concurrent(StrataNode *node, int *issue_order,
                           int *done_order)
{
    static uint8_t bufs[NCONC][4096];
    Req reqs[NCONC];
    IOVector vecs[NCONC];
    int ndone = 0;
    int ntrace;

    mem_trace_clear(node);
    for (int i = 0; i < NCONC; i++) {
        iov_init_buf(&vecs[i], bufs[i], 4096);
        reqs[i] = (Req) {
            .node = node, .type = REQ_READ, .offset = i * 4096,
            .bytes = 4096, .qiov = &vecs[i], .index = i,
            .order = done_order, .norder = &ndone,
        };
        loop_co_spawn(test_loop, req_entry, &reqs[i]);
    }
    while (ndone < NCONC) {
        loop_run_once(test_loop, true);
    }
    ntrace = mem_trace_count(node);
    g_assert_cmpint(ntrace, ==, NCONC);
    for (int i = 0; i < NCONC; i++) {
        MemTraceEntry e;

        g_assert_cmpint(reqs[i].ret, ==, 0);
        g_assert_true(mem_trace_get(node, i, &e));
        issue_order[i] = (int)(e.offset / 4096);
        iov_cleanup(&vecs[i]);
    }
}

static void test_mem_random_order_reorders(void)
{
    guint32 seed = test_seed();
    g_autofree char *json = g_strdup_printf(
        "{\"size\": 65536, \"random-order\": true, \"seed\": %" G_GUINT32_FORMAT
        "}", seed);
    int issue[NCONC], done[NCONC], issue2[NCONC], done2[NCONC];
    StrataNode *node;
    MemCounters c;

    node = test_open_ok(&bdrv_mem, json);
    run_concurrent(node, issue, done);
    mem_get_counters(node, &c);
    g_assert_cmpint(c.max_in_flight, >, 1);
    g_assert_cmpint(c.in_flight, ==, 0);
    test_close(node);
    if (!memcmp(issue, done, sizeof(issue))) {
        g_error("seed %" G_GUINT32_FORMAT ": completion order equals issue "
                "order", seed);
    }

    /* The same seed and arrival order give the same completion order. */
    node = test_open_ok(&bdrv_mem, json);
    run_concurrent(node, issue2, done2);
    test_close(node);
    g_assert_cmpmem(issue, sizeof(issue), issue2, sizeof(issue2));
    g_assert_cmpmem(done, sizeof(done), done2, sizeof(done2));
}

static void test_mem_fifo_order(void)
{
    int issue[NCONC], done[NCONC];
    StrataNode *node = test_open_ok(&bdrv_mem, "{\"size\": 65536}");

    run_concurrent(node, issue, done);
    g_assert_cmpmem(issue, sizeof(issue), done, sizeof(done));
    test_close(node);
}

static void test_mem_latency(void)
{
    StrataNode *node = test_open_ok(&bdrv_mem,
                                    "{\"size\": 65536, \"latency-ns\": 2000000}");
    int issue[NCONC], done[NCONC];
    uint8_t buf[512];
    int64_t start = clock_ns();
    MemCounters c;

    /* A lower bound only: the request sleeps at least the latency. */
    g_assert_cmpint(do_read(node, 0, buf, sizeof(buf)), ==, 0);
    g_assert_cmpint(clock_ns() - start, >=, 2000000);

    /* Concurrent sleepers overlap. */
    run_concurrent(node, issue, done);
    mem_get_counters(node, &c);
    g_assert_cmpint(c.max_in_flight, ==, NCONC);
    test_close(node);

    /* random-order with latency: random sleeps, every request completes. */
    node = test_open_ok(&bdrv_mem, "{\"size\": 65536, \"latency-ns\": 500000, "
                                   "\"random-order\": true, \"seed\": 7}");
    run_concurrent(node, issue, done);
    test_close(node);
}

/* ---- mem: trace ------------------------------------------------------------------- */

static void test_mem_trace_ring(void)
{
    StrataNode *node = test_open_ok(&bdrv_mem, "{\"size\": 1048576}");
    uint8_t buf[512];
    MemTraceEntry e;
    IOVector v;

    g_assert_cmpint(mem_trace_count(node), ==, 0);
    g_assert_false(mem_trace_get(node, 0, &e));
    for (int i = 0; i < 300; i++) {
        g_assert_cmpint(do_read(node, i * 512, buf, 512), ==, 0);
    }
    g_assert_cmpint(mem_trace_count(node), ==, MEM_TRACE_SIZE);
    g_assert_cmpuint(mem_trace_total(node), ==, 300);
    g_assert_true(mem_trace_get(node, 0, &e));
    g_assert_cmpint(e.offset, ==, (300 - MEM_TRACE_SIZE) * 512);
    g_assert_true(mem_trace_get(node, MEM_TRACE_SIZE - 1, &e));
    g_assert_cmpint(e.offset, ==, 299 * 512);
    g_assert_false(mem_trace_get(node, MEM_TRACE_SIZE, &e));

    mem_trace_clear(node);
    g_assert_cmpint(mem_trace_count(node), ==, 0);
    iov_init(&v, 4);
    iov_add(&v, buf, 256);
    iov_add(&v, buf + 256, 256);
    g_assert_cmpint(do_rw(node, REQ_WRITE, 4096, 512, &v, REQ_FUA), ==, 0);
    iov_cleanup(&v);
    g_assert_cmpint(do_rw(node, REQ_ZEROES, 8192, 4096, NULL, REQ_MAY_UNMAP),
                    ==, 0);
    g_assert_cmpint(do_rw(node, REQ_FLUSH, 0, 0, NULL, 0), ==, 0);
    g_assert_cmpint(mem_trace_count(node), ==, 3);
    g_assert_true(mem_trace_get(node, 0, &e));
    g_assert_cmpint(e.type, ==, REQ_WRITE);
    g_assert_cmpint(e.offset, ==, 4096);
    g_assert_cmpint(e.bytes, ==, 512);
    g_assert_cmpint(e.niov, ==, 2);
    g_assert_cmpint(e.flags, ==, REQ_FUA);
    g_assert_false(e.violation);
    g_assert_true(mem_trace_get(node, 1, &e));
    g_assert_cmpint(e.type, ==, REQ_ZEROES);
    g_assert_cmpint(e.flags, ==, REQ_MAY_UNMAP);
    g_assert_cmpint(e.niov, ==, 0);
    g_assert_true(mem_trace_get(node, 2, &e));
    g_assert_cmpint(e.type, ==, REQ_FLUSH);

    mem_reset_counters(node);
    {
        MemCounters c;
        mem_get_counters(node, &c);
        g_assert_cmpuint(c.requests[REQ_READ], ==, 0);
        g_assert_cmpuint(c.flushes, ==, 0);
    }
    test_close(node);
}

/* ---- mem: options ---------------------------------------------------------------------- */

static void test_mem_options(void)
{
    g_autoptr(StrataError) err = NULL;
    g_autoptr(OptNode) root = NULL;
    StrataNode *node;

    test_open_fails(&bdrv_mem, "{\"driver\": \"mem\"}", "size: missing");
    test_open_fails(&bdrv_mem, "{\"size\": 4096, \"align\": 3000}",
                    "align: 3000 is not a power of two between 1 and 1M");
    test_open_fails(&bdrv_mem, "{\"size\": 4096, \"mem-align\": 0}",
                    "mem-align: 0 is not a power of two between 1 and 1M");
    test_open_fails(&bdrv_mem, "{\"size\": 6000, \"align\": 4096}",
                    "size: 6000 is not a multiple of align (4096)");
    test_open_fails(&bdrv_mem, "{\"size\": 8192, \"max-iov\": 0}",
                    "max-iov: 0 is not between 1 and 1024");
    test_open_fails(&bdrv_mem, "{\"size\": 8192, \"latency-ns\": -1}",
                    "latency-ns: -1 is negative");
    test_open_fails(&bdrv_mem, "{\"size\": 8192, \"align\": 4096, "
                    "\"max-transfer\": 512}",
                    "max-transfer: 512 must be 0 or between align (4096) "
                    "and 2147479552");

    /* The getters' own errors name the key too. */
    node = test_open(&bdrv_mem, "{\"size\": 8192, \"fua\": 3}", &err);
    g_assert_null(node);
    g_assert_true(g_str_has_prefix(error_get_message(err), "fua: "));
    g_clear_pointer(&err, error_free);
    node = test_open(&bdrv_mem, "{\"size\": 8192, \"bogus\": 3}", &err);
    g_assert_null(node);
    g_assert_true(g_str_has_prefix(error_get_message(err), "bogus: "));
    g_clear_pointer(&err, error_free);

    /* Nested: the path of the object prefixes the key. */
    root = opts_parse_json("{\"file\": {\"driver\": \"mem\"}}", &err);
    g_assert_nonnull(root);
    {
        OptNode *sub = opts_get(root, "file");
        StrataNode fake = { .drv = &bdrv_mem };

        fake.opaque = g_malloc0(bdrv_mem.instance_size);
        g_assert_false(bdrv_mem.open(&fake, sub, &err));
        g_assert_cmpstr(error_get_message(err), ==, "file.size: missing");
        g_free(fake.opaque);
        g_clear_pointer(&err, error_free);
    }

    /* Dotted keys with suffixes. */
    {
        g_autoptr(OptNode) d = opts_parse_dotted(
            "driver=mem,size=1M,align=4k,max-transfer=64k,fua=off", &err);
        StrataNode fake = { .drv = &bdrv_mem };

        g_assert_nonnull(d);
        fake.opaque = g_malloc0(bdrv_mem.instance_size);
        g_assert_true(opts_get_str(d, "driver", NULL, &(const char *){0},
                                   NULL));
        g_assert_true(bdrv_mem.open(&fake, d, &err));
        g_assert_cmpint(bdrv_mem.get_length(&fake), ==, 1 << 20);
        g_assert_false(fake.supports_fua);
        bdrv_mem.close(&fake);
        g_free(fake.opaque);
    }

    /* A size no machine can map fails cleanly instead of aborting. */
    node = test_open(&bdrv_mem, "{\"size\": 4611686018427387904}", &err);
    g_assert_null(node);
    g_assert_true(g_str_has_prefix(error_get_message(err), "size: "));
}

/* ---- null ---------------------------------------------------------------------------- */

static void test_null_read_untouched(void)
{
    StrataNode *node = test_open_ok(&bdrv_null, "{\"driver\": \"null-co\"}");
    uint8_t buf[4096];
    int64_t pnum;

    g_assert_cmpint(bdrv_null.get_length(node), ==, (int64_t)1 << 30);
    memset(buf, 0x5a, sizeof(buf));
    g_assert_cmpint(do_read(node, 0, buf, sizeof(buf)), ==, 0);
    for (size_t i = 0; i < sizeof(buf); i++) {
        g_assert_cmpuint(buf[i], ==, 0x5a);
    }
    g_assert_cmpint(do_write(node, 4096, buf, sizeof(buf), REQ_FUA), ==, 0);
    g_assert_cmpint(do_rw(node, REQ_ZEROES, 0, 1 << 20, NULL, 0), ==, 0);
    g_assert_cmpint(do_rw(node, REQ_DISCARD, 0, 1 << 20, NULL, 0), ==, 0);
    g_assert_cmpint(do_rw(node, REQ_FLUSH, 0, 0, NULL, 0), ==, 0);
    g_assert_cmpint(do_status(node, 0, 65536, &pnum), ==, STRATA_BLOCK_DATA);
    g_assert_cmpint(pnum, ==, 65536);
    test_close(node);
}

static void test_null_read_zeroes(void)
{
    StrataNode *node = test_open_ok(&bdrv_null,
                                    "{\"driver\": \"null\", \"size\": 1048576, "
                                    "\"read-zeroes\": true, "
                                    "\"latency-ns\": 1000}");
    uint8_t buf[8192];
    IOVector v;
    int64_t pnum;

    g_assert_cmpint(bdrv_null.get_length(node), ==, 1048576);
    memset(buf, 0x5a, sizeof(buf));
    iov_init(&v, 4);
    iov_add(&v, buf, 1000);
    iov_add(&v, buf + 2000, 3000);
    g_assert_cmpint(do_rw(node, REQ_READ, 0, 4000, &v, 0), ==, 0);
    iov_cleanup(&v);
    for (size_t i = 0; i < sizeof(buf); i++) {
        bool inside = i < 1000 || (i >= 2000 && i < 5000);
        g_assert_cmpuint(buf[i], ==, inside ? 0 : 0x5a);
    }
    g_assert_cmpint(do_status(node, 4096, 8192, &pnum), ==, STRATA_BLOCK_ZERO);
    g_assert_cmpint(pnum, ==, 8192);
    test_close(node);
}

static void test_null_options(void)
{
    test_open_fails(&bdrv_null, "{\"latency-ns\": -5}",
                    "latency-ns: -5 is negative");
}

/* ---- through the graph and the request path ------------------------------------ */

typedef struct GraphIO {
    StrataNode *node;
    BlockReqType type;
    int64_t offset, bytes;
    const IOVector *qiov;
    int flags;
    int ret;
    bool done;
} GraphIO;

static void graph_io_entry(void *opaque)
{
    GraphIO *g = opaque;

    switch (g->type) {
    case REQ_READ:
        g->ret = node_co_preadv(g->node, g->offset, g->bytes, g->qiov,
                                g->flags);
        break;
    case REQ_WRITE:
        g->ret = node_co_pwritev(g->node, g->offset, g->bytes, g->qiov,
                                 g->flags);
        break;
    case REQ_ZEROES:
        g->ret = node_co_pwrite_zeroes(g->node, g->offset, g->bytes,
                                       g->flags);
        break;
    default:
        g_assert_not_reached();
    }
    g->done = true;
}

static int graph_io(StrataContext *ctx, StrataNode *node, BlockReqType type,
                    int64_t offset, int64_t bytes, const IOVector *qiov,
                    int flags)
{
    GraphIO g = { .node = node, .type = type, .offset = offset,
                  .bytes = bytes, .qiov = qiov, .flags = flags };

    loop_co_spawn(ctx->loop, graph_io_entry, &g);
    while (!g.done) {
        strata_context_run_once(ctx, true);
    }
    return g.ret;
}

/* Every request the driver saw fits its limits (the trace says so too). */
static void assert_trace_fits(StrataNode *node, int64_t align,
                              int64_t max_transfer, int max_iov)
{
    for (int i = 0; i < mem_trace_count(node); i++) {
        MemTraceEntry e;

        g_assert_true(mem_trace_get(node, i, &e));
        g_assert_false(e.violation);
        g_assert_cmpint(e.offset % align, ==, 0);
        g_assert_cmpint(e.bytes % align, ==, 0);
        if (e.type == REQ_READ || e.type == REQ_WRITE) {
            g_assert_cmpint(e.bytes, <=, max_transfer);
            g_assert_cmpint(e.niov, <=, max_iov);
        }
    }
}

static void test_graph_mem_unaligned_rw(void)
{
    g_autoptr(StrataError) err = NULL;
    StrataContext *ctx = strata_context_new(&err);
    StrataNode *node;
    StrataBackend *be;
    g_autofree uint8_t *wbuf = g_malloc(300000);
    g_autofree uint8_t *rbuf = g_malloc0(300000);
    g_autofree uint8_t *model = g_malloc0(1 << 20);
    IOVector v;
    MemCounters c;

    g_assert_nonnull(ctx);
    node = strata_node_open_json(ctx,
        "{\"driver\": \"mem\", \"node-name\": \"m0\", \"size\": 1048576, "
        "\"align\": 4096, \"mem-align\": 4096, \"iov-len-align\": 512, "
        "\"max-transfer\": 65536, \"max-iov\": 8}", &err);
    if (!node) {
        g_error("open: %s", error_get_message(err));
    }
    g_assert_true(strata_node_find(ctx, "m0") == node);
    g_assert_cmpint(strata_node_get_length(node), ==, 1 << 20);
    g_assert_cmpuint(node->bl.request_alignment, ==, 4096);
    g_assert_cmpint(node->bl.max_transfer, ==, 65536);
    be = strata_backend_new(node, "vda", STRATA_PERM_ALL, STRATA_PERM_ALL,
                            &err);
    if (!be) {
        g_error("backend: %s", error_get_message(err));
    }

    /* 200000 bytes at offset 1000, from a buffer at an odd address in
     * three pieces of odd lengths. */
    fill_pattern(wbuf, 300000, 5);
    iov_init(&v, 8);
    iov_add(&v, wbuf + 1, 777);
    iov_add(&v, wbuf + 1000, 99223);
    iov_add(&v, wbuf + 100500, 100000);
    g_assert_cmpint(graph_io(ctx, node, REQ_WRITE, 1000, 200000, &v, 0),
                    ==, 0);
    memcpy(model + 1000, wbuf + 1, 777);
    memcpy(model + 1777, wbuf + 1000, 99223);
    memcpy(model + 101000, wbuf + 100500, 100000);
    iov_cleanup(&v);
    g_assert_cmpmem(mem_get_data(node), 1 << 20, model, 1 << 20);

    /* Read back unaligned too, across what was written. */
    iov_init_buf(&v, rbuf + 3, 250000);
    g_assert_cmpint(graph_io(ctx, node, REQ_READ, 555, 250000, &v, 0), ==, 0);
    iov_cleanup(&v);
    g_assert_cmpmem(rbuf + 3, 250000, model + 555, 250000);

    /* Write-zeroes over an unaligned range. */
    g_assert_cmpint(graph_io(ctx, node, REQ_ZEROES, 5000, 70000, NULL, 0),
                    ==, 0);
    memset(model + 5000, 0, 70000);
    g_assert_cmpmem(mem_get_data(node), 1 << 20, model, 1 << 20);

    mem_get_counters(node, &c);
    if (c.limit_violations) {
        g_error("%" PRIu64 " violations, last: %s", c.limit_violations,
                mem_last_violation(node));
    }
    assert_trace_fits(node, 4096, 65536, 8);
    /* 200000 unaligned bytes over 64 KiB pieces: at least four writes. */
    g_assert_cmpuint(c.requests[REQ_WRITE], >=, 4);

    strata_backend_free(be);
    strata_node_unref(node);
    strata_context_free(ctx);
}

/* zeroes=off and fua=off: the request path falls back to zero buffers and
 * to a flush, and the driver sees neither a write-zeroes nor a FUA. */
static void test_graph_mem_fallbacks(void)
{
    g_autoptr(StrataError) err = NULL;
    StrataContext *ctx = strata_context_new(&err);
    StrataNode *node;
    StrataBackend *be;
    g_autofree uint8_t *wbuf = g_malloc(65536);
    IOVector v;
    MemCounters c;

    g_assert_nonnull(ctx);
    node = strata_node_open_json(ctx,
        "{\"driver\": \"mem\", \"size\": 1048576, \"align\": 512, "
        "\"zeroes\": false, \"fua\": false}", &err);
    g_assert_nonnull(node);
    be = strata_backend_new(node, "vda", STRATA_PERM_ALL, STRATA_PERM_ALL,
                            &err);
    g_assert_nonnull(be);

    memset(wbuf, 0x77, 65536);
    iov_init_buf(&v, wbuf, 65536);
    g_assert_cmpint(graph_io(ctx, node, REQ_WRITE, 0, 65536, &v, REQ_FUA),
                    ==, 0);
    iov_cleanup(&v);
    g_assert_cmpint(graph_io(ctx, node, REQ_ZEROES, 4096, 8192, NULL, 0),
                    ==, 0);
    g_assert_cmpuint(mem_get_data(node)[4095], ==, 0x77);
    for (int i = 4096; i < 4096 + 8192; i++) {
        g_assert_cmpuint(mem_get_data(node)[i], ==, 0);
    }
    g_assert_cmpuint(mem_get_data(node)[4096 + 8192], ==, 0x77);

    mem_get_counters(node, &c);
    if (c.limit_violations) {
        g_error("%" PRIu64 " violations, last: %s", c.limit_violations,
                mem_last_violation(node));
    }
    g_assert_cmpuint(c.requests[REQ_ZEROES], ==, 0);
    g_assert_cmpuint(c.fua_writes, ==, 0);
    g_assert_cmpuint(c.flushes, >=, 1);
    g_assert_cmpuint(c.requests[REQ_WRITE], >=, 2);

    strata_backend_free(be);
    strata_node_unref(node);
    strata_context_free(ctx);
}

static void test_graph_open_errors(void)
{
    g_autoptr(StrataError) err = NULL;
    StrataContext *ctx = strata_context_new(&err);
    StrataNode *node;

    g_assert_nonnull(ctx);
    node = strata_node_open_json(ctx, "{\"driver\": \"mem\"}", &err);
    g_assert_null(node);
    g_assert_true(g_str_has_prefix(error_get_message(err), "size: "));
    g_clear_pointer(&err, error_free);

    node = strata_node_open_json(ctx, "{\"driver\": \"mem\", \"size\": 4096, "
                                      "\"align\": 3}", &err);
    g_assert_null(node);
    g_assert_true(g_str_has_prefix(error_get_message(err), "align: "));
    g_clear_pointer(&err, error_free);

    node = strata_node_open_json(ctx, "{\"driver\": \"null-co\"}", &err);
    g_assert_nonnull(node);
    g_assert_cmpstr(strata_node_get_driver(node), ==, "null");
    g_assert_cmpint(strata_node_get_length(node), ==, (int64_t)1 << 30);
    strata_node_unref(node);
    strata_context_free(ctx);
}

int main(int argc, char **argv)
{
    int ret;

    g_test_init(&argc, &argv, NULL);
    test_loop = loop_new(NULL);
    g_assert_nonnull(test_loop);
    loop_attach_current(test_loop);

    g_test_add_func("/mem/rw/round-trip", test_mem_round_trip);
    g_test_add_func("/mem/limits/alignment-and-range", test_mem_limits_align);
    g_test_add_func("/mem/limits/memory-and-vector", test_mem_limits_memory);
    g_test_add_func("/mem/limits/refresh-limits", test_mem_limits_refresh);
    g_test_add_func("/mem/inject-error/count", test_mem_errors_count);
    g_test_add_func("/mem/inject-error/forever-and-flush",
                    test_mem_errors_forever);
    g_test_add_func("/mem/block-status/runs", test_mem_status_runs);
    g_test_add_func("/mem/zeroes/disabled-is-enotsup",
                    test_mem_zeroes_disabled);
    g_test_add_func("/mem/truncate/grow-shrink-prealloc", test_mem_truncate);
    g_test_add_func("/mem/order/fifo-by-default", test_mem_fifo_order);
    g_test_add_func("/mem/order/random-reorders",
                    test_mem_random_order_reorders);
    g_test_add_func("/mem/latency/sleeps", test_mem_latency);
    g_test_add_func("/mem/trace/ring-and-fields", test_mem_trace_ring);
    g_test_add_func("/mem/options/errors-name-the-key", test_mem_options);
    g_test_add_func("/mem/graph/unaligned-rw-fits-limits",
                    test_graph_mem_unaligned_rw);
    g_test_add_func("/mem/graph/zeroes-and-fua-fallbacks",
                    test_graph_mem_fallbacks);
    g_test_add_func("/mem/graph/open-errors-name-the-key",
                    test_graph_open_errors);
    g_test_add_func("/null/read/untouched", test_null_read_untouched);
    g_test_add_func("/null/read/zeroes", test_null_read_zeroes);
    g_test_add_func("/null/options/errors-name-the-key", test_null_options);

    ret = g_test_run();
    loop_attach_current(NULL);
    loop_free(test_loop);
    return ret;
}
