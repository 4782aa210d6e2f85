/*
 * Tests of the request path's entry (block/io.c): validation, FUA, flush,
 * cache modes, detect-zeroes, discard
 * SPDX-License-Identifier: MIT
 *
 * Every test opens a graph of one "mem" node through the public API, puts
 * a backend on it and drives requests through the backend, blocking or in
 * a coroutine (backend-int.h) for what the public API cannot express (a
 * vector whose total differs from the request's length).  mem's trace and
 * counters show what reached the device; its limit-violation counter must
 * stay 0 (DESIGN.md invariant 1), and a flat model buffer holds what the
 * device must contain.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

#include "block/backend-int.h"
#include "block/block-int.h"
#include "block/mem.h"
#include "memdev.h"

/* ---- harness ----------------------------------------------------------------- */

static void dev_counters(TestDev *d, MemCounters *c)
{
    mem_get_counters(d->node, c);
}

/* Write @len bytes of @fill at @off through the backend; update the model. */
static int dev_write(TestDev *d, int64_t off, int64_t len, int fill,
                     uint32_t flags)
{
    g_autofree uint8_t *buf = g_malloc(len ? len : 1);
    int ret;

    memset(buf, fill, len);
    ret = strata_backend_pwrite(d->be, off, buf, len, flags);
    if (ret == 0 && d->model) {
        memset(d->model + off, fill, len);
    }
    return ret;
}

/* Fill the device with a non-zero pattern, aligned, then forget the
 * counters and trace. */
static void dev_fill(TestDev *d)
{
    uint8_t *buf = g_aligned_alloc(1, d->size, 4096);

    for (int64_t i = 0; i < d->size; i++) {
        buf[i] = (uint8_t)(i * 7 + 1) | 1;
    }
    g_assert_cmpint(strata_backend_pwrite(d->be, 0, buf, d->size, 0), ==, 0);
    memcpy(d->model, buf, d->size);
    g_aligned_free(buf);
    g_assert_cmpint(strata_backend_flush(d->be), ==, 0);
    mem_reset_counters(d->node);
    mem_trace_clear(d->node);
}

/* Run @fn(@arg) in a coroutine of the device's loop and wait for it. */
typedef struct CoCall {
    void (*fn)(TestDev *d, void *arg);
    TestDev *d;
    void *arg;
    bool done;
} CoCall;

static void co_call_entry(void *opaque)
{
    CoCall *c = opaque;
    c->fn(c->d, c->arg);
    c->done = true;
}

static void dev_run_co(TestDev *d, void (*fn)(TestDev *d, void *arg), void *arg)
{
    CoCall c = { fn, d, arg, false };

    loop_co_spawn(d->ctx->loop, co_call_entry, &c);
    LOOP_RUN_WHILE(d->ctx->loop, !c.done);
}

typedef struct AioReq {
    int64_t ret;
    bool done;
    int *ndone;
} AioReq;

static void aio_done(void *opaque, int64_t ret)
{
    AioReq *r = opaque;
    r->ret = ret;
    r->done = true;
    (*r->ndone)++;
}

/* Run the loop until *@ndone reaches @n; fail (rather than hang) after
 * @timeout_s seconds. */
static void dev_wait(TestDev *d, int *ndone, int n, int timeout_s)
{
    int64_t deadline = clock_ns() + (int64_t)timeout_s * 1000000000;

    while (*ndone < n) {
        if (clock_ns() > deadline) {
            g_error("%d of %d requests still pending after %d s",
                    n - *ndone, n, timeout_s);
        }
        loop_run_once(d->ctx->loop, false);
        g_usleep(100);
    }
}

/* ---- validation --------------------------------------------------------------- */

static void test_validate_negative_offset(void)
{
    TestDev d;
    uint8_t buf[512] = { 0 };

    dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 512}");
    g_assert_cmpint(strata_backend_pread(d.be, -1, buf, 512, 0), ==, -EINVAL);
    g_assert_cmpint(strata_backend_pwrite(d.be, -512, buf, 512, 0), ==, -EINVAL);
    g_assert_cmpint(strata_backend_pwrite_zeroes(d.be, -1, 512, 0), ==, -EINVAL);
    g_assert_cmpint(strata_backend_pdiscard(d.be, INT64_MIN, 512), ==, -EINVAL);
    g_assert_cmpint(strata_backend_pwrite_zeroes(d.be, 0, -1, 0), ==, -EINVAL);
    g_assert_cmpuint(mem_trace_total(d.node), ==, 0);
    dev_close(&d);
}

/* Node-level requests whose end overflows: -EINVAL from the request path. */
static void co_overflow(TestDev *d, void *opaque)
{
    int *rets = opaque;
    uint8_t buf[512];
    IOVector v;

    iov_init_buf(&v, buf, sizeof(buf));
    rets[0] = node_co_preadv(d->node, INT64_MAX - 100, 512, &v, 0);
    rets[1] = node_co_pwritev(d->node, INT64_MAX - 100, 512, &v, 0);
    rets[2] = node_co_pwrite_zeroes(d->node, 4096, INT64_MAX, 0);
    rets[3] = node_co_pdiscard(d->node, INT64_MAX - 1, 2);
}

/*
 * Overflowing ranges.  At the backend they are past the end of the device,
 * and fail as a disk (and qemu-io) would: -EIO.  Inside the graph the
 * request path rejects them as malformed: -EINVAL.  Neither reaches mem.
 */
static void test_validate_overflow(void)
{
    TestDev d;
    uint8_t buf[512];
    int rets[4];

    dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 512}");
    g_assert_cmpint(strata_backend_pread(d.be, INT64_MAX - 100, buf, 512, 0),
                    ==, -EIO);
    g_assert_cmpint(strata_backend_pwrite(d.be, INT64_MAX, buf, 1, 0),
                    ==, -EIO);
    g_assert_cmpint(strata_backend_pwrite_zeroes(d.be, 4096, INT64_MAX, 0),
                    ==, -EIO);
    g_assert_cmpint(strata_backend_pdiscard(d.be, INT64_MAX - 1, 2), ==, -EIO);
    dev_run_co(&d, co_overflow, rets);
    for (int i = 0; i < 4; i++) {
        g_assert_cmpint(rets[i], ==, -EINVAL);
    }
    g_assert_cmpuint(mem_trace_total(d.node), ==, 0);
    dev_close(&d);
}

/* Coroutine-form requests whose vector does not match their length. */
typedef struct MismatchArgs {
    int64_t bytes;
    IOVector *qiov;
    int ret_read, ret_write;
} MismatchArgs;

static void co_mismatch(TestDev *d, void *opaque)
{
    MismatchArgs *a = opaque;

    a->ret_read = backend_co_preadv(d->be, 0, a->bytes, a->qiov, 0);
    a->ret_write = backend_co_pwritev(d->be, 0, a->bytes, a->qiov, 0);
}

static void test_validate_vector_mismatch(void)
{
    TestDev d;
    uint8_t buf[8192];
    IOVector v;
    MismatchArgs a;

    dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 512}");
    memset(buf, 0xab, sizeof(buf));
    /* Vector shorter, then longer, than the request. */
    iov_init_buf(&v, buf, 2048);
    a = (MismatchArgs) { .bytes = 4096, .qiov = &v };
    dev_run_co(&d, co_mismatch, &a);
    g_assert_cmpint(a.ret_read, ==, -EINVAL);
    g_assert_cmpint(a.ret_write, ==, -EINVAL);
    iov_init_buf(&v, buf, 8192);
    a = (MismatchArgs) { .bytes = 4096, .qiov = &v };
    dev_run_co(&d, co_mismatch, &a);
    g_assert_cmpint(a.ret_read, ==, -EINVAL);
    g_assert_cmpint(a.ret_write, ==, -EINVAL);
    /* Unaligned, so it would have gone to the padding layer. */
    iov_init_buf(&v, buf, 100);
    a = (MismatchArgs) { .bytes = 99, .qiov = &v };
    dev_run_co(&d, co_mismatch, &a);
    g_assert_cmpint(a.ret_read, ==, -EINVAL);
    g_assert_cmpint(a.ret_write, ==, -EINVAL);
    /* No vector at all. */
    a = (MismatchArgs) { .bytes = 512, .qiov = NULL };
    dev_run_co(&d, co_mismatch, &a);
    g_assert_cmpint(a.ret_read, ==, -EINVAL);
    g_assert_cmpint(a.ret_write, ==, -EINVAL);
    g_assert_cmpuint(mem_trace_total(d.node), ==, 0);
    dev_close(&d);
}

/*
 * More than the per-request cap (2 GiB - 4 KiB), from a vector that
 * repeats one 4 MiB buffer 1024 times: -EINVAL before anything is sized
 * from the total, so no pool memory is allocated and nothing reaches the
 * device.  Through the blocking API (the vector's total is the length)
 * and through the coroutine form with a matching and a mismatched length.
 */
static void test_validate_over_cap(void)
{
    enum { N = 1024 };
    const size_t elen = 4 << 20;
    TestDev d;
    uint8_t *buf = g_aligned_alloc(1, elen, 4096);
    struct iovec *iov = g_new(struct iovec, N);
    BufPoolStats p0, p1;
    IOVector v;
    MismatchArgs a;

    for (int i = 0; i < N; i++) {
        iov[i] = (struct iovec) { buf + (i & 1), elen - 1 };
    }
    /* 8 GiB, sparse: every length below is inside the device. */
    dev_open(&d, "{\"driver\": \"mem\", \"size\": 8589934592, \"align\": 4096,"
             " \"mem-align\": 4096}");
    bufpool_get_stats(d.ctx->pool, &p0);

    g_assert_cmpint(strata_backend_preadv(d.be, 0, iov, N, 0), ==, -EINVAL);
    g_assert_cmpint(strata_backend_pwritev(d.be, 100, iov, N, 0), ==, -EINVAL);
    /* Just over the cap with two elements. */
    struct iovec two[2] = { { buf, 1u << 30 }, { buf, (1u << 30) - 4095 } };
    g_assert_cmpint(strata_backend_preadv(d.be, 0, two, 2, 0), ==, -EINVAL);

    iov_init_external(&v, iov, N);
    a = (MismatchArgs) { .bytes = (int64_t)iov_size(&v), .qiov = &v };
    dev_run_co(&d, co_mismatch, &a);
    g_assert_cmpint(a.ret_read, ==, -EINVAL);
    g_assert_cmpint(a.ret_write, ==, -EINVAL);
    a = (MismatchArgs) { .bytes = 4096, .qiov = &v };
    dev_run_co(&d, co_mismatch, &a);
    g_assert_cmpint(a.ret_read, ==, -EINVAL);
    g_assert_cmpint(a.ret_write, ==, -EINVAL);

    bufpool_get_stats(d.ctx->pool, &p1);
    g_assert_cmpuint(p1.allocations, ==, p0.allocations);
    g_assert_cmpuint(p1.bytes_held, ==, p0.bytes_held);
    g_assert_cmpuint(mem_trace_total(d.node), ==, 0);
    dev_close(&d);
    g_free(iov);
    g_aligned_free(buf);
}

/* Requests that reach past the end of the device fail with -EIO;
 * requests that end exactly there are fine. */
static void test_validate_past_end(void)
{
    TestDev d;
    uint8_t buf[8192];

    dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 4096}");
    dev_fill(&d);
    memset(buf, 0x11, sizeof(buf));
    g_assert_cmpint(strata_backend_pread(d.be, 65536 - 4096, buf, 8192, 0), ==, -EIO);
    g_assert_cmpint(strata_backend_pread(d.be, 65536 - 100, buf, 101, 0), ==, -EIO);
    g_assert_cmpint(strata_backend_pread(d.be, 65536, buf, 1, 0), ==, -EIO);
    g_assert_cmpint(strata_backend_pwrite(d.be, 65536 - 4096, buf, 8192, 0), ==, -EIO);
    g_assert_cmpint(strata_backend_pwrite(d.be, 70000, buf, 1, 0), ==, -EIO);
    g_assert_cmpint(strata_backend_pwrite_zeroes(d.be, 65000, 4096, 0), ==, -EIO);
    g_assert_cmpint(strata_backend_pdiscard(d.be, 65000, 4096), ==, -EIO);
    g_assert_cmpuint(mem_trace_total(d.node), ==, 0);

    /* Up to the end, and empty at the end. */
    g_assert_cmpint(strata_backend_pread(d.be, 65536 - 100, buf, 100, 0), ==, 0);
    g_assert_cmpmem(buf, 100, d.model + 65536 - 100, 100);
    g_assert_cmpint(dev_write(&d, 65536 - 100, 100, 0x22, 0), ==, 0);
    g_assert_cmpint(strata_backend_pread(d.be, 65536, buf, 0, 0), ==, 0);
    g_assert_cmpint(dev_write(&d, 65536, 0, 0x33, 0), ==, 0);
    dev_close(&d);
}

/* Writes through a backend that did not take the write permission. */
static void test_validate_no_write_permission(void)
{
    g_autoptr(StrataError) err = NULL;
    TestDev d;
    StrataBackend *ro;
    uint8_t buf[512] = { 0 };

    dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 512}");
    strata_backend_free(d.be);
    ro = strata_backend_new(d.node, "ro", STRATA_PERM_CONSISTENT_READ,
                            STRATA_PERM_ALL, &err);
    g_assert_nonnull(ro);
    d.be = ro;
    g_assert_cmpint(strata_backend_pwrite(ro, 0, buf, 512, 0), ==, -EPERM);
    g_assert_cmpint(strata_backend_pwrite(ro, 1, buf, 100, 0), ==, -EPERM);
    g_assert_cmpint(strata_backend_pwrite_zeroes(ro, 0, 512, 0), ==, -EPERM);
    g_assert_cmpint(strata_backend_pread(ro, 1, buf, 100, 0), ==, 0);
    g_assert_cmpuint(mem_trace_total(d.node), ==, 1);
    dev_close(&d);
}

/* ---- FUA --------------------------------------------------------------------------- */

/* Count the trace's writes, FUA writes, flushes; check that no read
 * carried FUA. */
static void trace_count(TestDev *d, int *writes, int *fua, int *flushes,
                        int *zeroes)
{
    *writes = *fua = *flushes = *zeroes = 0;
    g_assert_cmpuint(mem_trace_total(d->node), <=, MEM_TRACE_SIZE);
    for (int i = 0; i < mem_trace_count(d->node); i++) {
        MemTraceEntry e;
        g_assert_true(mem_trace_get(d->node, i, &e));
        switch (e.type) {
        case REQ_WRITE:
            (*writes)++;
            break;
        case REQ_ZEROES:
            (*zeroes)++;
            break;
        case REQ_FLUSH:
            (*flushes)++;
            break;
        default:
            g_assert_false(e.flags & REQ_FUA);
            break;
        }
        if (e.flags & REQ_FUA) {
            (*fua)++;
        }
    }
}

/* FUA reaches every fragment of a split, padded write. */
static void test_fua_every_fragment(void)
{
    TestDev d;
    int writes, fua, flushes, zeroes;

    dev_open(&d, "{\"driver\": \"mem\", \"size\": 262144, \"align\": 4096,"
             " \"max-transfer\": 8192}");
    dev_fill(&d);
    /* [100, 40100): padded to [0, 40960), five fragments. */
    g_assert_cmpint(dev_write(&d, 100, 40000, 0x44, STRATA_REQ_FUA), ==, 0);
    trace_count(&d, &writes, &fua, &flushes, &zeroes);
    g_assert_cmpint(writes, ==, 5);
    g_assert_cmpint(fua, ==, 5);
    g_assert_cmpint(flushes, ==, 0);
    /* Aligned but over max-transfer. */
    mem_trace_clear(d.node);
    g_assert_cmpint(dev_write(&d, 8192, 32768, 0x45, STRATA_REQ_FUA), ==, 0);
    trace_count(&d, &writes, &fua, &flushes, &zeroes);
    g_assert_cmpint(writes, ==, 4);
    g_assert_cmpint(fua, ==, 4);
    /* Write-zeroes, natively. */
    mem_trace_clear(d.node);
    g_assert_cmpint(strata_backend_pwrite_zeroes(d.be, 4096, 8192,
                                                 STRATA_REQ_FUA), ==, 0);
    memset(d.model + 4096, 0, 8192);
    trace_count(&d, &writes, &fua, &flushes, &zeroes);
    g_assert_cmpint(zeroes, ==, 1);
    g_assert_cmpint(fua, ==, 1);
    /* With the backend's write cache off, every write is FUA. */
    strata_backend_set_write_cache(d.be, false);
    mem_trace_clear(d.node);
    g_assert_cmpint(dev_write(&d, 100, 9000, 0x46, 0), ==, 0);
    trace_count(&d, &writes, &fua, &flushes, &zeroes);
    g_assert_cmpint(writes, ==, 2);
    g_assert_cmpint(fua, ==, 2);
    dev_close(&d);
}

/* Without FUA in the device, a split write or write-zeroes is followed by
 * one flush after its last fragment (not one per fragment: a 1 GiB FUA
 * write-zeroes would cost ~1024 of them), and FUA never reaches the device
 * (it would be a limit violation). */
static void test_fua_emulated(void)
{
    TestDev d;
    int writes, fua, flushes, zeroes;

    for (int native_zeroes = 0; native_zeroes < 2; native_zeroes++) {
        dev_open(&d, "{\"driver\": \"mem\", \"size\": 262144, \"align\": 4096,"
                 " \"max-transfer\": 8192, \"fua\": false, \"zeroes\": %s}",
                 native_zeroes ? "true" : "false");
        dev_fill(&d);
        g_assert_cmpint(dev_write(&d, 100, 40000, 0x44, STRATA_REQ_FUA), ==, 0);
        trace_count(&d, &writes, &fua, &flushes, &zeroes);
        g_assert_cmpint(writes, ==, 5);
        g_assert_cmpint(fua, ==, 0);
        g_assert_cmpint(flushes, ==, 1);
        /* ...and the flush comes after the last write. */
        MemTraceEntry last;
        mem_trace_get(d.node, mem_trace_count(d.node) - 1, &last);
        g_assert_cmpint(last.type, ==, REQ_FLUSH);

        /* Write-zeroes with FUA, native or through zero buffers, in eight
         * chunks of max-transfer: one flush, after the last chunk. */
        mem_trace_clear(d.node);
        g_assert_cmpint(strata_backend_pwrite_zeroes(d.be, 4096, 65536,
                                                     STRATA_REQ_FUA), ==, 0);
        memset(d.model + 4096, 0, 65536);
        trace_count(&d, &writes, &fua, &flushes, &zeroes);
        g_assert_cmpint(fua, ==, 0);
        g_assert_cmpint(flushes, ==, 1);
        g_assert_cmpint(zeroes + writes, ==, native_zeroes ? 1 : 8);
        mem_trace_get(d.node, mem_trace_count(d.node) - 1, &last);
        g_assert_cmpint(last.type, ==, REQ_FLUSH);

        /* Unaligned write-zeroes: head, middle and tail pieces, still one
         * flush. */
        mem_trace_clear(d.node);
        g_assert_cmpint(strata_backend_pwrite_zeroes(d.be, 100000, 20000,
                                                     STRATA_REQ_FUA), ==, 0);
        memset(d.model + 100000, 0, 20000);
        trace_count(&d, &writes, &fua, &flushes, &zeroes);
        g_assert_cmpint(fua, ==, 0);
        g_assert_cmpint(flushes, ==, 1);
        mem_trace_get(d.node, mem_trace_count(d.node) - 1, &last);
        g_assert_cmpint(last.type, ==, REQ_FLUSH);
        dev_check_violations(&d);
        dev_close(&d);
    }
}

/* cache.no-flush: FUA and flushes are dropped. */
static void test_cache_no_flush(void)
{
    for (int dev_fua = 0; dev_fua < 2; dev_fua++) {
        TestDev d;
        MemCounters c;

        dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 4096,"
                 " \"fua\": %s, \"cache\": {\"no-flush\": true}}",
                 dev_fua ? "true" : "false");
        g_assert_cmpint(dev_write(&d, 100, 9000, 0x55, STRATA_REQ_FUA), ==, 0);
        g_assert_cmpint(dev_write(&d, 0, 4096, 0x56, STRATA_REQ_FUA), ==, 0);
        g_assert_cmpint(strata_backend_pwrite_zeroes(d.be, 8192, 4096,
                                                     STRATA_REQ_FUA), ==, 0);
        memset(d.model + 8192, 0, 4096);
        g_assert_cmpint(strata_backend_flush(d.be), ==, 0);
        g_assert_cmpint(strata_backend_flush(d.be), ==, 0);
        dev_counters(&d, &c);
        g_assert_cmpuint(c.fua_writes, ==, 0);
        g_assert_cmpuint(c.flushes, ==, 0);
        g_assert_cmpuint(c.requests[REQ_WRITE], >, 0);
        dev_close(&d);
    }
}

/* ---- flush -------------------------------------------------------------------------- */

/* A flush with nothing written since the last successful one does not
 * reach the device. */
static void test_flush_skip_clean(void)
{
    TestDev d;
    MemCounters c;

    dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 512}");
    g_assert_cmpint(strata_backend_flush(d.be), ==, 0);
    dev_counters(&d, &c);
    g_assert_cmpuint(c.flushes, ==, 0);

    g_assert_cmpint(dev_write(&d, 0, 512, 1, 0), ==, 0);
    g_assert_cmpint(strata_backend_flush(d.be), ==, 0);
    g_assert_cmpint(strata_backend_flush(d.be), ==, 0);
    dev_counters(&d, &c);
    g_assert_cmpuint(c.flushes, ==, 1);

    /* Reads do not dirty; writes, write-zeroes and discards do. */
    uint8_t buf[512];
    g_assert_cmpint(strata_backend_pread(d.be, 0, buf, 512, 0), ==, 0);
    g_assert_cmpint(strata_backend_flush(d.be), ==, 0);
    dev_counters(&d, &c);
    g_assert_cmpuint(c.flushes, ==, 1);
    g_assert_cmpint(dev_write(&d, 1, 10, 2, 0), ==, 0);
    g_assert_cmpint(strata_backend_flush(d.be), ==, 0);
    g_assert_cmpint(strata_backend_pwrite_zeroes(d.be, 0, 512, 0), ==, 0);
    memset(d.model, 0, 512);
    g_assert_cmpint(strata_backend_flush(d.be), ==, 0);
    dev_counters(&d, &c);
    g_assert_cmpuint(c.flushes, ==, 3);

    /* A write, then one that fails: the flush still covers the first. */
    g_assert_cmpint(dev_write(&d, 1024, 512, 3, 0), ==, 0);
    mem_inject_error(d.node, REQ_WRITE, 0, -1, EIO, 1);
    g_assert_cmpint(strata_backend_pwrite(d.be, 2048, buf, 512, 0), ==, -EIO);
    g_assert_cmpint(strata_backend_flush(d.be), ==, 0);
    dev_counters(&d, &c);
    g_assert_cmpuint(c.flushes, ==, 4);
    dev_close(&d);
}

/*
 * Several flushes issued together while one runs: the ones that find
 * their writes already covered complete without a device flush, and none
 * is left waiting.
 */
static void test_flush_concurrent(void)
{
    enum { N = 6 };
    TestDev d;
    AioReq reqs[N + 2];
    MemCounters c;
    int ndone = 0;
    uint8_t buf[512] = { 7 };
    struct iovec iov = { buf, 512 };

    dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 512,"
             " \"latency-ns\": 1000000}");
    g_assert_cmpint(dev_write(&d, 0, 512, 7, 0), ==, 0);
    for (int i = 0; i < N; i++) {
        reqs[i] = (AioReq) { .ndone = &ndone };
        g_assert_cmpint(strata_backend_aio_flush(d.be, aio_done, &reqs[i]), ==, 0);
    }
    dev_wait(&d, &ndone, N, 10);
    for (int i = 0; i < N; i++) {
        g_assert_cmpint(reqs[i].ret, ==, 0);
    }
    dev_counters(&d, &c);
    g_assert_cmpuint(c.flushes, ==, 1);

    /* A write that completes while a flush runs is not covered by it:
     * of the flushes issued after it, one reaches the device. */
    ndone = 0;
    g_assert_cmpint(dev_write(&d, 512, 512, 7, 0), ==, 0);
    reqs[0] = (AioReq) { .ndone = &ndone };
    g_assert_cmpint(strata_backend_aio_flush(d.be, aio_done, &reqs[0]), ==, 0);
    reqs[1] = (AioReq) { .ndone = &ndone };
    g_assert_cmpint(strata_backend_aio_pwritev(d.be, 1024, &iov, 1, 0, aio_done,
                                               &reqs[1]), ==, 0);
    memset(d.model + 1024, 7, 1);
    memset(d.model + 1025, 0, 511);
    dev_wait(&d, &ndone, 2, 10);
    for (int i = 2; i < N + 2; i++) {
        reqs[i] = (AioReq) { .ndone = &ndone };
        g_assert_cmpint(strata_backend_aio_flush(d.be, aio_done, &reqs[i]), ==, 0);
    }
    dev_wait(&d, &ndone, N + 2, 10);
    for (int i = 0; i < N + 2; i++) {
        g_assert_cmpint(reqs[i].ret, ==, 0);
    }
    dev_counters(&d, &c);
    g_assert_cmpuint(c.flushes, ==, 3);
    dev_close(&d);
}

/* A flush failure over the host page cache (cache.direct=false) sticks:
 * every later flush fails, for the node's life (test-graph.c checks that
 * a reopen keeps it). */
static void test_flush_failed_sticky(void)
{
    TestDev d;
    MemCounters c;

    dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 512}");
    g_assert_cmpint(dev_write(&d, 0, 512, 1, 0), ==, 0);
    mem_inject_error(d.node, REQ_FLUSH, 0, 0, EIO, 1);
    g_assert_cmpint(strata_backend_flush(d.be), ==, -EIO);
    g_assert_cmpint(strata_backend_flush(d.be), ==, -EIO);
    g_assert_cmpint(dev_write(&d, 512, 512, 2, 0), ==, 0);
    g_assert_cmpint(strata_backend_flush(d.be), ==, -EIO);
    dev_counters(&d, &c);
    g_assert_cmpuint(c.flushes, ==, 1);

    /* The same through an emulated FUA write: the write fails, and so
     * does every flush after it. */
    dev_close(&d);
    dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 512,"
             " \"fua\": false}");
    mem_inject_error(d.node, REQ_FLUSH, 0, 0, EIO, 1);
    g_assert_cmpint(strata_backend_pwrite(d.be, 0, (uint8_t[512]) { 0 }, 512,
                                          STRATA_REQ_FUA), ==, -EIO);
    g_assert_cmpint(strata_backend_flush(d.be), ==, -EIO);
    dev_close(&d);
}

/* With cache.direct=true a failed flush may be retried. */
static void test_flush_direct_retry(void)
{
    TestDev d;
    MemCounters c;

    dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 512,"
             " \"cache\": {\"direct\": true}}");
    g_assert_cmpint(dev_write(&d, 0, 512, 1, 0), ==, 0);
    mem_inject_error(d.node, REQ_FLUSH, 0, 0, EIO, 1);
    g_assert_cmpint(strata_backend_flush(d.be), ==, -EIO);
    g_assert_cmpint(strata_backend_flush(d.be), ==, 0);
    g_assert_cmpint(strata_backend_flush(d.be), ==, 0);
    dev_counters(&d, &c);
    g_assert_cmpuint(c.flushes, ==, 2);
    dev_close(&d);
}

/* ---- detect-zeroes --------------------------------------------------------------- */

static void test_detect_zeroes(void)
{
    for (int unmap = 0; unmap < 2; unmap++) {
        TestDev d;
        MemCounters c;

        dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 4096,"
                 " \"detect-zeroes\": \"%s\", \"discard\": \"unmap\"}",
                 unmap ? "unmap" : "on");
        dev_fill(&d);
        /* Aligned zeroes: a write-zeroes, no write. */
        g_assert_cmpint(dev_write(&d, 8192, 8192, 0, 0), ==, 0);
        dev_counters(&d, &c);
        g_assert_cmpuint(c.requests[REQ_ZEROES], ==, 1);
        g_assert_cmpuint(c.requests[REQ_WRITE], ==, 0);
        g_assert_cmpuint(c.unmap_zeroes, ==, unmap ? 1 : 0);
        /* Unaligned: the middle is a write-zeroes, the edges RMW. */
        mem_reset_counters(d.node);
        g_assert_cmpint(dev_write(&d, 100, 12000, 0, 0), ==, 0);
        dev_counters(&d, &c);
        g_assert_cmpuint(c.requests[REQ_ZEROES], ==, 1);
        g_assert_cmpuint(c.requests[REQ_WRITE], ==, 2);
        /* Not all zero: a write. */
        mem_reset_counters(d.node);
        g_assert_cmpint(dev_write(&d, 20480, 4096, 1, 0), ==, 0);
        dev_counters(&d, &c);
        g_assert_cmpuint(c.requests[REQ_ZEROES], ==, 0);
        g_assert_cmpuint(c.requests[REQ_WRITE], ==, 1);
        dev_close(&d);
    }
    /* Off by default. */
    TestDev d;
    MemCounters c;
    dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 4096}");
    g_assert_cmpint(dev_write(&d, 0, 4096, 0, 0), ==, 0);
    dev_counters(&d, &c);
    g_assert_cmpuint(c.requests[REQ_ZEROES], ==, 0);
    g_assert_cmpuint(c.requests[REQ_WRITE], ==, 1);
    dev_close(&d);
}

/* ---- discard ---------------------------------------------------------------------- */

/* Discard is advisory: the unaligned head and tail are dropped, the
 * aligned middle reaches the device; with discard=ignore nothing does. */
static void test_discard_drops_unaligned(void)
{
    static const struct { int64_t off, len, lo, hi; } cases[] = {
        { 100, 10000, 4096, 8192 },
        { 4096, 8192, 4096, 12288 },
        { 4095, 4098, 4096, 8192 },
        { 100, 200, 0, 0 },
        { 4000, 4000, 0, 0 },
        { 0, 4095, 0, 0 },
    };

    for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
        TestDev d;
        MemTraceEntry e;

        dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 4096,"
                 " \"discard\": \"unmap\"}");
        dev_fill(&d);
        g_assert_cmpint(strata_backend_pdiscard(d.be, cases[i].off,
                                                cases[i].len), ==, 0);
        if (cases[i].lo < cases[i].hi) {
            g_assert_cmpint(mem_trace_count(d.node), ==, 1);
            g_assert_true(mem_trace_get(d.node, 0, &e));
            g_assert_cmpint(e.type, ==, REQ_DISCARD);
            g_assert_cmpint(e.offset, ==, cases[i].lo);
            g_assert_cmpint(e.bytes, ==, cases[i].hi - cases[i].lo);
            /* mem reads discarded blocks as zeroes. */
            memset(d.model + cases[i].lo, 0, cases[i].hi - cases[i].lo);
        } else {
            g_assert_cmpint(mem_trace_count(d.node), ==, 0);
        }
        dev_close(&d);
    }

    TestDev d;
    dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 4096}");
    dev_fill(&d);
    g_assert_cmpint(strata_backend_pdiscard(d.be, 0, 65536), ==, 0);
    g_assert_cmpint(mem_trace_count(d.node), ==, 0);
    dev_close(&d);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/io/validate/negative-offset", test_validate_negative_offset);
    g_test_add_func("/io/validate/overflow", test_validate_overflow);
    g_test_add_func("/io/validate/vector-mismatch", test_validate_vector_mismatch);
    g_test_add_func("/io/validate/over-cap", test_validate_over_cap);
    g_test_add_func("/io/validate/past-end", test_validate_past_end);
    g_test_add_func("/io/validate/no-write-permission",
                    test_validate_no_write_permission);
    g_test_add_func("/io/fua/every-fragment", test_fua_every_fragment);
    g_test_add_func("/io/fua/emulated", test_fua_emulated);
    g_test_add_func("/io/cache/no-flush", test_cache_no_flush);
    g_test_add_func("/io/flush/skip-clean", test_flush_skip_clean);
    g_test_add_func("/io/flush/concurrent", test_flush_concurrent);
    g_test_add_func("/io/flush/failed-sticky", test_flush_failed_sticky);
    g_test_add_func("/io/flush/direct-retry", test_flush_direct_retry);
    g_test_add_func("/io/detect-zeroes/write-zeroes", test_detect_zeroes);
    g_test_add_func("/io/discard/drops-unaligned", test_discard_drops_unaligned);
    return g_test_run();
}
