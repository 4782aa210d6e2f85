/*
 * Tests of request shaping: padding, read-modify-write, bounce, collapse,
 * split, serialisation and coalescing (block/pad.c, block/io.c)
 * SPDX-License-Identifier: MIT
 *
 * Every test opens a graph of one "mem" node through the public API, puts
 * a backend on it and drives I/O through the backend (blocking, callback
 * or coroutine form).  A flat model buffer holds what the device must
 * contain; after each test the device is compared with it byte for byte,
 * and mem's limit-violation counter must be 0 (DESIGN.md invariant 1: every
 * request reaching a driver fits its limits).
 *
 * The random model test of concurrent requests is test-pad-model.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

#include "block/backend-int.h"
#include "block/block-int.h"
#include "block/io.h"
#include "block/mem.h"
#include "memdev.h"
#include "pad-harness.h"

/* ---- vectors ------------------------------------------------------------------ */

typedef enum Split {
    SPLIT_ONE,          /* one element */
    SPLIT_ODD,          /* lengths 100, 700, 37, 1000, ... */
    SPLIT_SECTORS,      /* 512-byte elements */
    SPLIT__MAX,
} Split;

#define VEC_MAX 64

typedef struct TestVec {
    struct iovec iov[VEC_MAX];
    int niov;
    uint8_t *arena;
} TestVec;

/*
 * Build a vector of @bytes in @split shape whose elements each start
 * @misalign bytes past a page boundary of a fresh arena (so no two
 * elements are contiguous in memory).
 */
static void vec_make(TestVec *v, int64_t bytes, Split split, size_t misalign)
{
    static const size_t odd[] = { 100, 700, 37, 1000 };
    size_t pos = 0;

    v->niov = 0;
    v->arena = g_aligned_alloc(1, bytes + VEC_MAX * 8192 + 4096, 4096);
    memset(v->arena, 0xee, bytes + VEC_MAX * 8192 + 4096);
    if (bytes == 0) {
        /* One empty element: zero-length elements are legal input. */
        v->iov[v->niov++] = (struct iovec) { v->arena + misalign, 0 };
        return;
    }
    uint8_t *at = v->arena;
    while (pos < (size_t)bytes) {
        size_t len;
        switch (split) {
        case SPLIT_ONE:
            len = bytes;
            break;
        case SPLIT_ODD:
            len = odd[v->niov % G_N_ELEMENTS(odd)];
            break;
        default:
            len = 512;
            break;
        }
        if (v->niov == VEC_MAX - 1) {
            len = bytes - pos;
        }
        len = MIN(len, bytes - pos);
        v->iov[v->niov++] = (struct iovec) { at + misalign, len };
        at += ROUND_UP(len + misalign, (size_t)4096) + 4096;
        pos += len;
    }
}

static void vec_free(TestVec *v)
{
    g_aligned_free(v->arena);
}

/* ---- padding shapes ----------------------------------------------------------- */

typedef enum Shape {
    SHAPE_HEAD,             /* unaligned start, aligned end */
    SHAPE_TAIL,             /* aligned start, unaligned end */
    SHAPE_HEAD_AND_TAIL,    /* both unaligned, different blocks */
    SHAPE_INSIDE,           /* inside one block, touching neither edge */
    SHAPE_ALIGNED,
    SHAPE_ZERO,             /* zero length */
} Shape;

typedef struct MemCfg {
    uint32_t mem_align, iov_len_align;
} MemCfg;

/* Memory limits tried with every alignment: none, sector-aligned
 * addresses, sector-aligned addresses and lengths, and page-aligned
 * addresses on a 512-byte device (mem-align above the request alignment). */
static const MemCfg mem_cfgs[] = {
    { 1, 1 }, { 512, 1 }, { 512, 512 }, { 4096, 512 },
};

/* Ranges of @shape for request alignment @A: a few offsets and lengths. */
static int shape_ranges(Shape shape, int64_t A, int64_t *off, int64_t *len)
{
    int n = 0;
    const int64_t base = 3 * A;
    const int64_t edges[] = { 1, 100, A / 2, A - 1 };

    for (unsigned i = 0; i < G_N_ELEMENTS(edges); i++) {
        int64_t e = edges[i];
        switch (shape) {
        case SHAPE_HEAD:
            off[n] = base + e;
            len[n++] = 2 * A - e;
            off[n] = base + e;
            len[n++] = A - e;
            break;
        case SHAPE_TAIL:
            off[n] = base;
            len[n++] = A + e;
            off[n] = base;
            len[n++] = e;
            break;
        case SHAPE_HEAD_AND_TAIL:
            off[n] = base + e;
            len[n++] = 3 * A - e - (A - e / 2 - 1);
            off[n] = base + A - 1;
            len[n++] = 1 + e;
            break;
        case SHAPE_INSIDE:
            if (e < A - 1) {
                off[n] = base + e;
                len[n++] = MAX((A - e) / 2, 1);
            }
            break;
        case SHAPE_ALIGNED:
            off[n] = base;
            len[n++] = A * (i + 1);
            break;
        case SHAPE_ZERO:
            off[n] = base + (i ? e : 0);
            len[n++] = 0;
            break;
        }
    }
    /* Each shape must be what it claims. */
    for (int i = 0; i < n; i++) {
        int64_t head = off[i] % A, tail = (off[i] + len[i]) % A;
        switch (shape) {
        case SHAPE_HEAD:
            g_assert(head && !tail);
            break;
        case SHAPE_TAIL:
            g_assert(!head && tail);
            break;
        case SHAPE_HEAD_AND_TAIL:
            g_assert(head && tail && off[i] / A != (off[i] + len[i]) / A);
            break;
        case SHAPE_INSIDE:
            g_assert(head && tail && off[i] / A == (off[i] + len[i]) / A);
            break;
        case SHAPE_ALIGNED:
            g_assert(!head && !tail);
            break;
        case SHAPE_ZERO:
            g_assert(len[i] == 0);
            break;
        }
    }
    return n;
}

static void pad_one_shape(Shape shape, bool is_write)
{
    static const uint32_t aligns[] = { 512, 4096 };
    static const size_t misaligns[] = { 0, 1, 520 };
    uint32_t id = 1;

    for (unsigned ai = 0; ai < G_N_ELEMENTS(aligns); ai++) {
        for (unsigned mi = 0; mi < G_N_ELEMENTS(mem_cfgs); mi++) {
            const MemCfg *mc = &mem_cfgs[mi];
            int64_t A = aligns[ai];
            int64_t off[16], len[16];
            int n = shape_ranges(shape, A, off, len);
            TestDev d;

            dev_open(&d, "{\"driver\": \"mem\", \"size\": %" PRId64
                     ", \"align\": %" PRId64 ", \"mem-align\": %u,"
                     " \"iov-len-align\": %u}",
                     16 * A, A, mc->mem_align, mc->iov_len_align);
            dev_fill(&d, 0);

            for (int r = 0; r < n; r++) {
                for (unsigned bi = 0; bi < G_N_ELEMENTS(misaligns); bi++) {
                    for (int s = 0; s < SPLIT__MAX; s++, id++) {
                        TestVec v;
                        BlockStats before = node_stats_sum(d.node);
                        MemCounters c0, c1;
                        int ret;

                        vec_make(&v, len[r], s, misaligns[bi]);
                        mem_get_counters(d.mem, &c0);
                        if (is_write) {
                            int64_t pos = 0;
                            for (int i = 0; i < v.niov; i++) {
                                uint8_t *b = v.iov[i].iov_base;
                                for (size_t k = 0; k < v.iov[i].iov_len; k++) {
                                    b[k] = pat(id, off[r] + pos++);
                                }
                            }
                            ret = strata_backend_pwritev(d.be, off[r], v.iov,
                                                         v.niov, 0);
                            for (int64_t k = 0; k < len[r]; k++) {
                                d.model[off[r] + k] = pat(id, off[r] + k);
                            }
                        } else {
                            ret = strata_backend_preadv(d.be, off[r], v.iov,
                                                        v.niov, 0);
                        }
                        if (ret != 0) {
                            g_error("align %" PRId64 " mem %u/%u: %s "
                                    "%" PRId64 "+%" PRId64 " split %d "
                                    "misalign %zu: %s", A, mc->mem_align,
                                    mc->iov_len_align,
                                    is_write ? "write" : "read", off[r],
                                    len[r], s, misaligns[bi], g_strerror(-ret));
                        }
                        dev_check_violations(&d);
                        mem_get_counters(d.mem, &c1);

                        if (!is_write) {
                            int64_t pos = 0;
                            for (int i = 0; i < v.niov; i++) {
                                const uint8_t *b = v.iov[i].iov_base;
                                g_assert_cmpmem(b, v.iov[i].iov_len,
                                                d.model + off[r] + pos,
                                                v.iov[i].iov_len);
                                pos += v.iov[i].iov_len;
                            }
                        }
                        /* What each shape must cost. */
                        if (shape == SHAPE_ZERO) {
                            g_assert_cmpuint(c1.requests[REQ_READ], ==,
                                             c0.requests[REQ_READ]);
                            g_assert_cmpuint(c1.requests[REQ_WRITE], ==,
                                             c0.requests[REQ_WRITE]);
                        } else if (shape == SHAPE_ALIGNED) {
                            g_assert_cmpuint(node_stats_sum(d.node).pad.rmw_writes, ==,
                                             before.pad.rmw_writes);
                            g_assert_cmpuint(node_stats_sum(d.node).pad.padded_reads, ==,
                                             before.pad.padded_reads);
                            if (mc->mem_align == 1 && mc->iov_len_align == 1) {
                                /* Fits as it is: zero-copy, one request. */
                                g_assert_cmpuint(node_stats_sum(d.node).pad.bytes_bounced,
                                                 ==, before.pad.bytes_bounced);
                                g_assert_cmpuint(c1.requests[REQ_READ] +
                                                 c1.requests[REQ_WRITE], ==,
                                                 c0.requests[REQ_READ] +
                                                 c0.requests[REQ_WRITE] + 1);
                            }
                            if (!is_write) {
                                g_assert_cmpuint(c1.requests[REQ_READ], >,
                                                 c0.requests[REQ_READ]);
                            }
                        } else if (is_write) {
                            g_assert_cmpuint(node_stats_sum(d.node).pad.rmw_writes, ==,
                                             before.pad.rmw_writes + 1);
                            /* One RMW read per partial edge block, but
                             * one for two neighbouring edge blocks (as
                             * QEMU merges them). */
                            uint64_t edges = 1;
                            if (shape == SHAPE_HEAD_AND_TAIL &&
                                ROUND_UP(off[r] + len[r], A) -
                                ROUND_DOWN(off[r], A) > 2 * A) {
                                edges = 2;
                            }
                            g_assert_cmpuint(c1.requests[REQ_READ] -
                                             c0.requests[REQ_READ], ==, edges);
                        } else {
                            g_assert_cmpuint(node_stats_sum(d.node).pad.padded_reads, ==,
                                             before.pad.padded_reads + 1);
                            g_assert_cmpuint(c1.requests[REQ_WRITE], ==,
                                             c0.requests[REQ_WRITE]);
                        }
                        vec_free(&v);
                    }
                }
            }
            dev_close(&d);
        }
    }
}

static void test_read_head_only(void) { pad_one_shape(SHAPE_HEAD, false); }
static void test_read_tail_only(void) { pad_one_shape(SHAPE_TAIL, false); }
static void test_read_head_and_tail(void) { pad_one_shape(SHAPE_HEAD_AND_TAIL, false); }
static void test_read_inside_block(void) { pad_one_shape(SHAPE_INSIDE, false); }
static void test_read_aligned(void) { pad_one_shape(SHAPE_ALIGNED, false); }
static void test_read_zero_length(void) { pad_one_shape(SHAPE_ZERO, false); }
static void test_write_head_only(void) { pad_one_shape(SHAPE_HEAD, true); }
static void test_write_tail_only(void) { pad_one_shape(SHAPE_TAIL, true); }
static void test_write_head_and_tail(void) { pad_one_shape(SHAPE_HEAD_AND_TAIL, true); }
static void test_write_inside_block(void) { pad_one_shape(SHAPE_INSIDE, true); }
static void test_write_aligned(void) { pad_one_shape(SHAPE_ALIGNED, true); }
static void test_write_zero_length(void) { pad_one_shape(SHAPE_ZERO, true); }

/* ---- RMW read errors ------------------------------------------------------------- */

/*
 * An error on the RMW read of either edge block fails the write before
 * anything is written (invariant 2): the image stays byte-identical and no
 * write reaches the driver.
 */
static void test_write_rmw_read_error(void)
{
    static const struct { int64_t off, len, err_off; } cases[] = {
        { 4096 + 100, 200, 4096 },              /* inside one block */
        { 4096 + 100, 8192, 4096 },             /* head block fails */
        { 4096 + 100, 8192, 3 * 4096 },         /* tail block fails */
        { 4096, 4096 + 5, 2 * 4096 },           /* tail only */
    };

    for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
        TestDev d;
        MemCounters c;
        uint8_t *buf = g_malloc(cases[i].len);

        dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 4096}");
        dev_fill(&d, 7);
        memset(buf, 0x5a, cases[i].len);
        mem_reset_counters(d.mem);
        mem_inject_error(d.mem, REQ_READ, cases[i].err_off, 4096, EIO, -1);
        g_assert_cmpint(strata_backend_pwrite(d.be, cases[i].off, buf,
                                              cases[i].len, 0), ==, -EIO);
        mem_get_counters(d.mem, &c);
        g_assert_cmpuint(c.requests[REQ_WRITE], ==, 0);
        g_assert_cmpuint(c.errors[REQ_READ], ==, 1);

        /* The same write succeeds once the error is gone. */
        mem_clear_errors(d.mem);
        g_assert_cmpint(strata_backend_pwrite(d.be, cases[i].off, buf,
                                              cases[i].len, 0), ==, 0);
        memset(d.model + cases[i].off, 0x5a, cases[i].len);
        g_free(buf);
        dev_close(&d);
    }
}

/* ---- write-zeroes ---------------------------------------------------------------- */

/* Unaligned write-zeroes pads its edges with RMW; the aligned middle is a
 * native write-zeroes (or zero buffers without one). */
static void test_zeroes_unaligned(void)
{
    static const struct { int64_t off, len; } cases[] = {
        { 100, 200 }, { 100, 3996 }, { 0, 100 }, { 4000, 200 },
        { 100, 8192 }, { 4096, 4096 + 1 }, { 4095, 1 }, { 4095, 2 },
        { 1, 65536 - 2 }, { 4096, 0 }, { 4097, 0 },
    };

    for (int zeroes = 0; zeroes < 2; zeroes++) {
        for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
            TestDev d;
            MemCounters c;
            int64_t off = cases[i].off, len = cases[i].len;

            dev_open(&d, "{\"driver\": \"mem\", \"size\": 131072,"
                     " \"align\": 4096, \"mem-align\": 512, \"zeroes\": %s}",
                     zeroes ? "true" : "false");
            dev_fill(&d, 3);
            mem_reset_counters(d.mem);
            mem_trace_clear(d.mem);
            g_assert_cmpint(strata_backend_pwrite_zeroes(d.be, off, len, 0),
                            ==, 0);
            memset(d.model + off, 0, len);
            mem_get_counters(d.mem, &c);
            if (zeroes && ROUND_UP(off, 4096) < ROUND_DOWN(off + len, 4096)) {
                g_assert_cmpuint(c.requests[REQ_ZEROES], ==, 1);
            } else {
                g_assert_cmpuint(c.requests[REQ_ZEROES], ==, 0);
            }
            if (len == 0) {
                /* Empty: nothing reaches the device, not even an RMW. */
                g_assert_cmpuint(mem_trace_total(d.mem), ==, 0);
            }
            dev_close(&d);
        }
    }
}

/* ---- splitting ------------------------------------------------------------------ */

/* Requests over max_transfer go out in aligned fragments no larger than
 * it, each within max_iov, the RMW reads included. */
static void test_split_max_transfer(void)
{
    TestDev d;
    TestVec v;
    uint32_t id = 31;
    int64_t off = 100, len = 20000;

    dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 512,"
             " \"mem-align\": 512, \"iov-len-align\": 512,"
             " \"max-transfer\": 4096, \"max-iov\": 4}");
    dev_fill(&d, 1);
    uint64_t splits = node_stats_sum(d.node).pad.split_requests;
    for (int w = 0; w < 2; w++) {
        vec_make(&v, len, SPLIT_ODD, w ? 0 : 8);
        mem_trace_clear(d.mem);
        if (w) {
            int64_t pos = off;
            for (int i = 0; i < v.niov; i++) {
                uint8_t *b = v.iov[i].iov_base;
                for (size_t k = 0; k < v.iov[i].iov_len; k++, pos++) {
                    b[k] = pat(id, pos);
                    d.model[pos] = b[k];
                }
            }
            g_assert_cmpint(strata_backend_pwritev(d.be, off, v.iov, v.niov, 0), ==, 0);
        } else {
            g_assert_cmpint(strata_backend_preadv(d.be, off, v.iov, v.niov, 0), ==, 0);
            int64_t pos = off;
            for (int i = 0; i < v.niov; i++) {
                g_assert_cmpmem(v.iov[i].iov_base, v.iov[i].iov_len,
                                d.model + pos, v.iov[i].iov_len);
                pos += v.iov[i].iov_len;
            }
        }
        /* [0, 20480) in 4096-byte fragments, one after the other (for
         * the write, after the RMW reads of its edge blocks). */
        int64_t next = 0;
        int frags = 0;
        for (int i = 0; i < mem_trace_count(d.mem); i++) {
            MemTraceEntry e;
            g_assert_true(mem_trace_get(d.mem, i, &e));
            g_assert_cmpint(e.bytes, <=, 4096);
            g_assert_cmpint(e.niov, <=, 4);
            if (e.type == (w ? REQ_WRITE : REQ_READ)) {
                g_assert_cmpint(e.offset, ==, next);
                next += e.bytes;
                frags++;
            }
        }
        g_assert_cmpint(next, ==, 20480);
        g_assert_cmpint(frags, ==, 5);
        vec_free(&v);
    }
    g_assert_cmpuint(node_stats_sum(d.node).pad.split_requests, ==, splits + 2);
    dev_close(&d);
}

/*
 * A device whose max_transfer is below its memory alignment (512-byte
 * sectors, page-aligned buffers, 2 KiB transfers) has no legal way to
 * split a bounced request: such requests fail with -EINVAL instead of
 * reaching the device broken; requests that need no split still work.
 */
/* Edge blocks that are neighbours are read in one RMW read (as QEMU
 * merges them), which is still cut at max_transfer. */
static void test_split_merged_rmw_read(void)
{
    static const struct { int64_t off, len; } cases[] = {
        { 4096 + 512, 4096 }, { 4096 + 4000, 200 }, { 4096 + 1, 8190 },
    };

    for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
        int64_t off = cases[i].off, len = cases[i].len;
        g_autofree uint8_t *buf = g_malloc(len);
        TestDev d;

        dev_open(&d, "{\"driver\": \"mem\", \"size\": 65536, \"align\": 4096,"
                 " \"max-transfer\": 4096}");
        dev_fill(&d, 1);
        for (int64_t k = 0; k < len; k++) {
            buf[k] = pat(41, off + k);
            d.model[off + k] = buf[k];
        }
        mem_trace_clear(d.mem);
        g_assert_cmpint(strata_backend_pwrite(d.be, off, buf, len, 0), ==, 0);
        /* Reads of [4096, 8192) and [8192, 12288), then the writes. */
        g_assert_cmpint(mem_trace_count(d.mem), ==, 4);
        for (int k = 0; k < 4; k++) {
            MemTraceEntry e;
            g_assert_true(mem_trace_get(d.mem, k, &e));
            g_assert_cmpint(e.type, ==, k < 2 ? REQ_READ : REQ_WRITE);
            g_assert_cmpint(e.offset, ==, 4096 + (k % 2) * 4096);
            g_assert_cmpint(e.bytes, ==, 4096);
        }
        dev_close(&d);
    }
}

/* A transfer limit below the memory alignment leaves no legal place to
 * split a request: the open fails, naming the node and both values. */
static void test_split_impossible(void)
{
    StrataError *err = NULL;
    StrataContext *ctx = strata_context_new(&err);
    g_assert_nonnull(ctx);

    StrataNode *n = strata_node_open_json(ctx,
        "{\"driver\": \"mem\", \"size\": 65536, \"align\": 512,"
        " \"mem-align\": 4096, \"max-transfer\": 2048}", &err);
    g_assert_null(n);
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(strata_error_get_message(err),
                            "max-transfer 2048 is below the memory alignment (4096)"));
    strata_error_free(err);
    err = NULL;

    /* And memory alignment above the page size is refused, not asserted. */
    n = strata_node_open_json(ctx,
        "{\"driver\": \"mem\", \"size\": 65536, \"mem-align\": 8192}", &err);
    g_assert_null(n);
    g_assert_nonnull(strstr(strata_error_get_message(err), "mem-align: 8192 is above the page size"));
    strata_error_free(err);
    strata_context_free(ctx);
}

/* ---- callback-form helpers --------------------------------------------------------- */

typedef struct AioReq {
    int64_t ret;
    bool done;
    int *ndone;
    int order;                  /* completion rank */
} AioReq;

static void aio_done(void *opaque, int64_t ret)
{
    AioReq *r = opaque;
    r->ret = ret;
    r->done = true;
    r->order = (*r->ndone)++;
}

/* ---- coalescing ---------------------------------------------------------------------- */

/*
 * Sub-block writes that arrive while an RMW of their block is reading wait
 * behind it and are merged into its write, in arrival order.  The device
 * sees one read and one write; every member completes with the merged
 * write's result.
 */
typedef struct CoalesceCase {
    int64_t off, len;
    uint32_t flags;
} CoalesceCase;

static const CoalesceCase coalesce_cases[] = {
    { 100, 200, 0 },            /* the leader */
    { 200, 200, 0 },            /* overlaps it: must land on top */
    { 150, 100, STRATA_REQ_FUA },
    { 4000, 96, 0 },
    { 120, 10, 0 },
};
#define NCOALESCE G_N_ELEMENTS(coalesce_cases)

static void coalesce_run(bool coalesce, bool fail, int *ndone, AioReq *reqs,
                         TestDev *d)
{
    uint8_t bufs[NCOALESCE][256];
    struct iovec iov[NCOALESCE];

    dev_open(d, "{\"driver\": \"mem\", \"size\": 16384, \"align\": 4096,"
             " \"latency-ns\": 1000000, \"rmw-coalesce\": %s}",
             coalesce ? "true" : "false");
    dev_fill(d, 9);
    mem_reset_counters(d->mem);
    mem_trace_clear(d->mem);
    if (fail) {
        mem_inject_error(d->mem, REQ_WRITE, 0, 4096, EIO, 1);
    }
    *ndone = 0;
    for (unsigned i = 0; i < NCOALESCE; i++) {
        const CoalesceCase *c = &coalesce_cases[i];
        g_assert(c->len <= (int64_t)sizeof(bufs[i]));
        for (int64_t k = 0; k < c->len; k++) {
            bufs[i][k] = pat(100 + i, c->off + k);
        }
        iov[i] = (struct iovec) { bufs[i], c->len };
        reqs[i] = (AioReq) { .ndone = ndone };
        g_assert_cmpint(strata_backend_aio_pwritev(d->be, c->off, &iov[i], 1,
                                                   c->flags, aio_done,
                                                   &reqs[i]), ==, 0);
    }
    LOOP_RUN_WHILE(dev_loop(d), *ndone < (int)NCOALESCE);
    if (!fail) {
        /* Issue order: each write lands on top of the ones before it. */
        for (unsigned i = 0; i < NCOALESCE; i++) {
            const CoalesceCase *c = &coalesce_cases[i];
            for (int64_t k = 0; k < c->len; k++) {
                d->model[c->off + k] = pat(100 + i, c->off + k);
            }
        }
    }
}

static void test_coalesce_merged(void)
{
    TestDev d;
    AioReq reqs[NCOALESCE];
    MemCounters c;
    int ndone;
    bool fua_seen = false;

    coalesce_run(true, false, &ndone, reqs, &d);
    for (unsigned i = 0; i < NCOALESCE; i++) {
        g_assert_cmpint(reqs[i].ret, ==, 0);
    }
    mem_get_counters(d.mem, &c);
    g_assert_cmpuint(c.requests[REQ_READ], ==, 1);
    g_assert_cmpuint(c.requests[REQ_WRITE], ==, 1);
    g_assert_cmpuint(node_stats_sum(d.node).pad.coalesced_writes, ==, NCOALESCE - 1);
    g_assert_cmpuint(node_stats_sum(d.node).pad.rmw_writes, ==, 1);
    /* A member asked for FUA: the merged write carries it. */
    for (int i = 0; i < mem_trace_count(d.mem); i++) {
        MemTraceEntry e;
        g_assert_true(mem_trace_get(d.mem, i, &e));
        if (e.type == REQ_WRITE) {
            fua_seen = e.flags & REQ_FUA;
        }
    }
    g_assert_true(fua_seen);
    dev_close(&d);
}

static void test_coalesce_disabled(void)
{
    TestDev d;
    AioReq reqs[NCOALESCE];
    MemCounters c;
    int ndone;

    coalesce_run(false, false, &ndone, reqs, &d);
    for (unsigned i = 0; i < NCOALESCE; i++) {
        g_assert_cmpint(reqs[i].ret, ==, 0);
        /* Serialised in arrival order. */
        g_assert_cmpint(reqs[i].order, ==, i);
    }
    mem_get_counters(d.mem, &c);
    g_assert_cmpuint(c.requests[REQ_READ], ==, NCOALESCE);
    g_assert_cmpuint(c.requests[REQ_WRITE], ==, NCOALESCE);
    g_assert_cmpuint(node_stats_sum(d.node).pad.coalesced_writes, ==, 0);
    g_assert_cmpuint(node_stats_sum(d.node).pad.rmw_writes, ==, NCOALESCE);
    dev_close(&d);
}

/* The merged write fails: every member fails with it, nothing changes. */
static void test_coalesce_fail_together(void)
{
    TestDev d;
    AioReq reqs[NCOALESCE];
    MemCounters c;
    int ndone;

    coalesce_run(true, true, &ndone, reqs, &d);
    for (unsigned i = 0; i < NCOALESCE; i++) {
        g_assert_cmpint(reqs[i].ret, ==, -EIO);
    }
    mem_get_counters(d.mem, &c);
    g_assert_cmpuint(c.requests[REQ_WRITE], ==, 1);
    g_assert_cmpuint(c.errors[REQ_WRITE], ==, 1);
    dev_close(&d);
}

/* ---- reads concurrent with RMW ------------------------------------------------------ */

/*
 * Rounds of sub-block writes on disjoint ranges of two blocks, with reads
 * of those blocks in flight among them, completing in random order.  Each
 * read must see, in each block, every write of the round either whole or
 * not at all, and everything else as it was before the round.
 */
static void test_read_no_torn_rmw(void)
{
    static const struct { int64_t off, len; } wr[] = {
        { 100, 500 }, { 1000, 100 }, { 4000, 200 }, { 5000, 1000 }, { 8000, 191 },
    };
    static const struct { int64_t off, len; } rd[] = {
        { 0, 8192 }, { 50, 1150 }, { 3900, 400 }, { 4096, 4096 }, { 7, 8000 },
    };
    TestDev d;
    uint8_t wbuf[G_N_ELEMENTS(wr)][1024];
    uint8_t rbuf[G_N_ELEMENTS(rd)][8192];
    struct iovec wiov[G_N_ELEMENTS(wr)], riov[G_N_ELEMENTS(rd)];
    AioReq wreq[G_N_ELEMENTS(wr)], rreq[G_N_ELEMENTS(rd)];
    g_autofree uint8_t *before = g_malloc(8192);
    uint32_t id = 1000;

    dev_open(&d, "{\"driver\": \"mem\", \"size\": 8192, \"align\": 4096,"
             " \"latency-ns\": 200000, \"random-order\": true, \"seed\": 5}");
    dev_fill(&d, 11);
    for (int round = 0; round < 60; round++) {
        int ndone = 0;
        unsigned nw = G_N_ELEMENTS(wr), nr = G_N_ELEMENTS(rd);

        memcpy(before, d.model, 8192);
        /* Interleave: w0 r0 w1 r1 ...; the order rotates every round. */
        for (unsigned k = 0; k < nw + nr; k++) {
            unsigned j = (k + round) % (nw + nr);
            if (j < nw) {
                for (int64_t x = 0; x < wr[j].len; x++) {
                    wbuf[j][x] = pat(id + j, wr[j].off + x);
                }
                wiov[j] = (struct iovec) { wbuf[j], wr[j].len };
                wreq[j] = (AioReq) { .ndone = &ndone };
                g_assert_cmpint(strata_backend_aio_pwritev(d.be, wr[j].off,
                                &wiov[j], 1, 0, aio_done, &wreq[j]), ==, 0);
            } else {
                j -= nw;
                riov[j] = (struct iovec) { rbuf[j], rd[j].len };
                rreq[j] = (AioReq) { .ndone = &ndone };
                g_assert_cmpint(strata_backend_aio_preadv(d.be, rd[j].off,
                                &riov[j], 1, 0, aio_done, &rreq[j]), ==, 0);
            }
        }
        LOOP_RUN_WHILE(dev_loop(&d), ndone < (int)(nw + nr));
        for (unsigned j = 0; j < nw; j++) {
            g_assert_cmpint(wreq[j].ret, ==, 0);
            for (int64_t x = 0; x < wr[j].len; x++) {
                d.model[wr[j].off + x] = pat(id + j, wr[j].off + x);
            }
        }
        for (unsigned j = 0; j < nr; j++) {
            g_assert_cmpint(rreq[j].ret, ==, 0);
            for (int64_t x = rd[j].off; x < rd[j].off + rd[j].len; x++) {
                uint8_t got = rbuf[j][x - rd[j].off];
                bool in_write = false;
                for (unsigned w = 0; w < nw; w++) {
                    if (x >= wr[w].off && x < wr[w].off + wr[w].len) {
                        in_write = true;
                        /* All of this write's bytes in this block (and
                         * in this read) are old, or all are new: decide
                         * by the first byte where old and new differ. */
                        int64_t bs = MAX(MAX(wr[w].off, ROUND_DOWN(x, 4096)),
                                         rd[j].off);
                        int64_t be = MIN(MIN(wr[w].off + wr[w].len,
                                             ROUND_DOWN(x, 4096) + 4096),
                                         rd[j].off + rd[j].len);
                        while (bs < be && pat(id + w, bs) == before[bs]) {
                            bs++;
                        }
                        bool is_new = bs < be &&
                                      rbuf[j][bs - rd[j].off] == pat(id + w, bs);
                        uint8_t want = is_new ? pat(id + w, x) : before[x];
                        if (got != want) {
                            g_error("round %d read %u byte %" PRId64 ": 0x%02x"
                                    " is neither all-old nor all-new for write"
                                    " %u", round, j, x, got, w);
                        }
                    }
                }
                if (!in_write) {
                    g_assert_cmpuint(got, ==, before[x]);
                }
            }
        }
        id += nw;
    }
    g_assert_cmpuint(node_stats_sum(d.node).pad.serialising_waits, >, 0);
    dev_close(&d);
}

/* ---- two parents over one node ---------------------------------------------------- */

/* Two backends writing sub-block pieces of the same blocks at once:
 * serialisation happens on the node, so no update is lost. */
static void test_serialise_two_backends(void)
{
    g_autoptr(StrataError) err = NULL;
    TestDev d;
    StrataBackend *be2;
    enum { N = 64 };
    uint8_t bufs[N][64];
    struct iovec iov[N];
    AioReq reqs[N];
    int ndone = 0;

    dev_open(&d, "{\"driver\": \"mem\", \"size\": 8192, \"align\": 4096,"
             " \"latency-ns\": 50000, \"random-order\": true,"
             " \"rmw-coalesce\": false}");
    be2 = strata_backend_new(d.node, "t2", STRATA_PERM_CONSISTENT_READ |
                             STRATA_PERM_WRITE, STRATA_PERM_ALL, &err);
    g_assert_nonnull(be2);
    for (int i = 0; i < N; i++) {
        /* Disjoint 64-byte pieces, alternating blocks and backends. */
        int64_t off = (i % 2) * 4096 + (i / 2) * 64 + 32 * (i % 2);
        for (int k = 0; k < 64; k++) {
            bufs[i][k] = pat(i + 1, off + k);
            d.model[off + k] = bufs[i][k];
        }
        iov[i] = (struct iovec) { bufs[i], 64 };
        reqs[i] = (AioReq) { .ndone = &ndone };
        g_assert_cmpint(strata_backend_aio_pwritev(i % 3 ? d.be : be2, off,
                                                   &iov[i], 1, 0, aio_done,
                                                   &reqs[i]), ==, 0);
    }
    LOOP_RUN_WHILE(dev_loop(&d), ndone < N);
    for (int i = 0; i < N; i++) {
        g_assert_cmpint(reqs[i].ret, ==, 0);
    }
    g_assert_cmpuint(node_stats_sum(d.node).pad.serialising_waits, >, 0);
    strata_backend_free(be2);
    dev_close(&d);
}

/* ---- IOV_MAX --------------------------------------------------------------------------- */

/*
 * Vectors of 1022 to 1026 elements with every head/tail shape, read and
 * written, on a device taking at most 1024 elements: the request never
 * fails for its element count, pieces beyond the limit are gathered, and
 * the device never sees more than 1024.
 */
static void iov_max_one(int n, bool is_write, int64_t A, uint32_t gran,
                        int64_t head, int64_t tail, bool contiguous)
{
    TestDev d;
    /* Element lengths: with gran 1, not multiples of 512. */
    size_t elen = gran == 1 ? 300 : 512;
    struct iovec *iov = g_new(struct iovec, n);
    int64_t base = 2 * A + head;
    int64_t body = (int64_t)(n - 1) * elen;
    /* The last element makes the end land @tail bytes before a boundary. */
    int64_t want_end_mod = (A - tail) % A;
    int64_t last = elen + (((want_end_mod - (base + body + elen)) % A) + A) % A;
    int64_t bytes = body + last;
    size_t stride = contiguous ? elen : elen + 4096;
    uint8_t *arena = g_aligned_alloc(1, stride * n + last + 4096, 4096);
    uint32_t id = 77;

    g_assert_cmpint((base + bytes) % A, ==, want_end_mod);
    for (int i = 0; i < n; i++) {
        iov[i] = (struct iovec) { arena + i * stride,
                                  i == n - 1 ? (size_t)last : elen };
    }
    dev_open(&d, "{\"driver\": \"mem\", \"size\": %" PRId64 ", \"align\": %"
             PRId64 ", \"mem-align\": %u, \"iov-len-align\": %u}",
             ROUND_UP(base + bytes, A) + 4 * A, A, gran, gran);
    dev_fill(&d, 5);
    if (is_write) {
        int64_t pos = base;
        for (int i = 0; i < n; i++) {
            uint8_t *b = iov[i].iov_base;
            for (size_t k = 0; k < iov[i].iov_len; k++) {
                b[k] = pat(id, pos);
                d.model[pos++] = b[k];
            }
        }
        g_assert_cmpint(strata_backend_pwritev(d.be, base, iov, n, 0), ==, 0);
    } else {
        g_assert_cmpint(strata_backend_preadv(d.be, base, iov, n, 0), ==, 0);
        int64_t pos = base;
        for (int i = 0; i < n; i++) {
            g_assert_cmpmem(iov[i].iov_base, iov[i].iov_len, d.model + pos,
                            iov[i].iov_len);
            pos += iov[i].iov_len;
        }
    }
    dev_check_violations(&d);
    /* Without padding, the vector needs gathering iff it has more than
     * 1024 elements that are not one run of memory; a padded read adds
     * its pads to the count. */
    int pieces = n + (!is_write && head > 0) + (!is_write && tail > 0);
    if (!contiguous && (!is_write || (!head && !tail)) && pieces > 1024) {
        g_assert_cmpuint(node_stats_sum(d.node).pad.vectors_collapsed, >, 0);
    }
    if ((!is_write || (!head && !tail)) && pieces <= 1024) {
        /* (A padded write bounces its edge blocks, which changes the count
         * either way, so it is only checked for correctness.) */
        g_assert_cmpuint(node_stats_sum(d.node).pad.vectors_collapsed, ==, 0);
    }
    dev_close(&d);
    g_aligned_free(arena);
    g_free(iov);
}

static void test_iov_max(void)
{
    static const struct { int64_t A; uint32_t gran; int64_t pad; } cfgs[] = {
        { 512, 1, 100 },        /* any element; pads of 100 bytes */
        { 4096, 512, 512 },     /* sector elements, pads a sector long */
    };

    for (unsigned c = 0; c < G_N_ELEMENTS(cfgs); c++) {
        for (int n = 1022; n <= 1026; n++) {
            for (int shape = 0; shape < 4; shape++) {
                int64_t head = shape & 1 ? cfgs[c].pad : 0;
                int64_t tail = shape & 2 ? cfgs[c].pad : 0;
                for (int w = 0; w < 2; w++) {
                    iov_max_one(n, w, cfgs[c].A, cfgs[c].gran, head, tail, false);
                    iov_max_one(n, w, cfgs[c].A, cfgs[c].gran, head, tail, true);
                }
            }
        }
    }
}

/* ---- pool exhaustion --------------------------------------------------------------- */

/*
 * A pool capped far below what the requests in flight need: requests wait
 * for buffers (each reserving all it needs at once, before claiming its
 * range), and all complete.  Large misaligned requests mixed with sub-block
 * writes that contend for the same blocks.
 */
static void test_pool_exhaustion(void)
{
    enum { N = 48, MAXLEN = 96 * 1024 };
    TestDev d;
    uint8_t *arena = g_aligned_alloc(1, (size_t)N * (MAXLEN + 8192), 4096);
    struct iovec iov[N][2];
    AioReq reqs[N];
    int64_t off[N], len[N];
    int ndone = 0;
    int64_t size = 8 << 20;
    GRand *rand = g_rand_new_with_seed(42);

    dev_open(&d, "{\"driver\": \"mem\", \"size\": %" PRId64 ", \"align\": 4096,"
             " \"mem-align\": 4096, \"latency-ns\": 100000,"
             " \"random-order\": true}", size);
    dev_fill(&d, 13);
    bufpool_set_cap(d.ctx->pool, 32 * 1024);

    for (int phase = 0; phase < 2; phase++) {
        bool is_write = phase == 0;
        ndone = 0;
        for (int i = 0; i < N; i++) {
            uint8_t *b = arena + (size_t)i * (MAXLEN + 8192) + 1;  /* misaligned */
            if (is_write) {
                if (i % 4 == 3) {
                    /* Sub-block writes into the blocks of request 0. */
                    len[i] = 50;
                    off[i] = off[0] + 4096 * (i % 3) + 60 * i;
                } else {
                    len[i] = g_rand_int_range(rand, 40000, MAXLEN);
                    off[i] = (int64_t)i * (MAXLEN + 8192) + 4096 * 8 +
                             g_rand_int_range(rand, 0, 4096);
                }
                for (int64_t k = 0; k < len[i]; k++) {
                    b[k] = pat(200 + i, off[i] + k);
                }
            } else {
                /* Read back each range, shifted a little. */
                off[i] -= 7;
                len[i] += 9;
            }
            int64_t first = len[i] / 3;
            iov[i][0] = (struct iovec) { b, first };
            iov[i][1] = (struct iovec) { b + first, len[i] - first };
            reqs[i] = (AioReq) { .ndone = &ndone };
            int ret = is_write
                ? strata_backend_aio_pwritev(d.be, off[i], iov[i], 2, 0,
                                             aio_done, &reqs[i])
                : strata_backend_aio_preadv(d.be, off[i], iov[i], 2, 0,
                                            aio_done, &reqs[i]);
            g_assert_cmpint(ret, ==, 0);
        }
        LOOP_RUN_WHILE(dev_loop(&d), ndone < N);
        for (int i = 0; i < N; i++) {
            g_assert_cmpint(reqs[i].ret, ==, 0);
        }
        if (is_write) {
            /* Writes of disjoint ranges, except the sub-block ones, which
             * land on request 0's data in arrival order (all issued after
             * it, all overlapping its blocks: each waits for it). */
            for (int i = 0; i < N; i++) {
                for (int64_t k = 0; k < len[i]; k++) {
                    d.model[off[i] + k] = pat(200 + i, off[i] + k);
                }
            }
        } else {
            for (int i = 0; i < N; i++) {
                uint8_t *b = arena + (size_t)i * (MAXLEN + 8192) + 1;
                g_assert_cmpmem(b, len[i], d.model + off[i], len[i]);
            }
        }
    }
    g_assert_cmpuint(node_stats_sum(d.node).pad.pool_waits, >, 0);
    bufpool_set_cap(d.ctx->pool, 0);
    g_rand_free(rand);
    g_aligned_free(arena);
    dev_close(&d);
}

/*
 * After warm-up, padded, bounced, collapsed and split requests take all
 * their buffers from the pool's free lists (invariant 4): running the
 * same mix again maps no new pool memory.
 */
static void test_pool_no_allocation_after_warm_up(void)
{
    TestDev d;
    BufPoolStats s0, s1;
    TestVec v[4];
    static const struct { int64_t off, len; Split split; size_t mis; } reqs[] = {
        { 100, 200, SPLIT_ONE, 0 },
        { 4000, 9000, SPLIT_ODD, 1 },
        { 8192, 16384, SPLIT_SECTORS, 8 },
        { 1, 40000, SPLIT_ODD, 3 },
    };

    dev_open(&d, "{\"driver\": \"mem\", \"size\": 262144, \"align\": 4096,"
             " \"mem-align\": 512, \"iov-len-align\": 512,"
             " \"max-transfer\": 16384, \"max-iov\": 8}");
    for (unsigned i = 0; i < G_N_ELEMENTS(reqs); i++) {
        vec_make(&v[i], reqs[i].len, reqs[i].split, reqs[i].mis);
    }
    for (int round = 0; round < 3; round++) {
        bufpool_get_stats(d.ctx->pool, &s0);
        for (unsigned i = 0; i < G_N_ELEMENTS(reqs); i++) {
            int64_t pos = reqs[i].off;
            for (int k = 0; k < v[i].niov; k++) {
                memset(v[i].iov[k].iov_base, round * 16 + i + 1, v[i].iov[k].iov_len);
                memset(d.model + pos, round * 16 + i + 1, v[i].iov[k].iov_len);
                pos += v[i].iov[k].iov_len;
            }
            g_assert_cmpint(strata_backend_pwritev(d.be, reqs[i].off, v[i].iov,
                                                   v[i].niov, 0), ==, 0);
            g_assert_cmpint(strata_backend_preadv(d.be, reqs[i].off, v[i].iov,
                                                  v[i].niov, 0), ==, 0);
        }
        bufpool_get_stats(d.ctx->pool, &s1);
        if (round > 0) {
            g_assert_cmpuint(s1.allocations, ==, s0.allocations);
            g_assert_cmpuint(s1.reuses, >, s0.reuses);
        }
        g_assert_cmpuint(s1.bytes_in_use, ==, 0);
    }
    for (unsigned i = 0; i < G_N_ELEMENTS(reqs); i++) {
        vec_free(&v[i]);
    }
    dev_close(&d);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/pad/read/head-only", test_read_head_only);
    g_test_add_func("/pad/read/tail-only", test_read_tail_only);
    g_test_add_func("/pad/read/head-and-tail", test_read_head_and_tail);
    g_test_add_func("/pad/read/inside-block", test_read_inside_block);
    g_test_add_func("/pad/read/aligned", test_read_aligned);
    g_test_add_func("/pad/read/zero-length", test_read_zero_length);
    g_test_add_func("/pad/write/head-only", test_write_head_only);
    g_test_add_func("/pad/write/tail-only", test_write_tail_only);
    g_test_add_func("/pad/write/head-and-tail", test_write_head_and_tail);
    g_test_add_func("/pad/write/inside-block", test_write_inside_block);
    g_test_add_func("/pad/write/aligned", test_write_aligned);
    g_test_add_func("/pad/write/zero-length", test_write_zero_length);
    g_test_add_func("/pad/write/rmw-read-error", test_write_rmw_read_error);
    g_test_add_func("/pad/zeroes/unaligned", test_zeroes_unaligned);
    g_test_add_func("/pad/read/no-torn-rmw", test_read_no_torn_rmw);
    g_test_add_func("/pad/split/max-transfer", test_split_max_transfer);
    g_test_add_func("/pad/split/impossible", test_split_impossible);
    g_test_add_func("/pad/split/merged-rmw-read", test_split_merged_rmw_read);
    g_test_add_func("/pad/coalesce/merged", test_coalesce_merged);
    g_test_add_func("/pad/coalesce/disabled", test_coalesce_disabled);
    g_test_add_func("/pad/coalesce/fail-together", test_coalesce_fail_together);
    g_test_add_func("/pad/serialise/two-backends", test_serialise_two_backends);
    g_test_add_func("/pad/collapse/1022-to-1026-elements", test_iov_max);
    g_test_add_func("/pad/pool/exhaustion", test_pool_exhaustion);
    g_test_add_func("/pad/pool/no-allocation-after-warm-up",
                    test_pool_no_allocation_after_warm_up);
    return g_test_run();
}
