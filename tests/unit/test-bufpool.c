/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for util/bufpool: alignment, size classes, reuse without
 * allocation, the cap (non-waiting and waiting, FIFO admission, oversized
 * reservations), prefault success and failure, trim, per-thread caches.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <glib.h>

#include "config-host.h"
#include "util/bufpool.h"
#include "util/bufpool-int.h"
#include "util/coroutine.h"
#include "util/loop.h"

static size_t page;

/* Number of pages of [buf, buf + size) resident in memory (mincore). */
static size_t resident_pages(void *buf, size_t size)
{
    size_t npages = size / page;
    g_autofree unsigned char *vec = g_malloc(npages);
    size_t count = 0;

    g_assert_cmpint(mincore(buf, size, vec), ==, 0);
    for (size_t i = 0; i < npages; i++) {
        count += vec[i] & 1;
    }
    return count;
}

/* True when no mapping covers @buf's first page any more. */
static bool is_unmapped(void *buf)
{
    unsigned char vec;

    return mincore(buf, page, &vec) < 0 && errno == ENOMEM;
}

static BufPoolStats get_stats(BufPool *pool)
{
    BufPoolStats st;

    bufpool_get_stats(pool, &st);
    return st;
}

static void *get_one(BufPool *pool, size_t size)
{
    void *buf = NULL;

    g_assert_cmpint(bufpool_try_get(pool, 0, 1, &size, &buf), ==, 0);
    g_assert_nonnull(buf);
    return buf;
}

/* ---- alignment and classes --------------------------------------------- */

static void test_align_page_or_larger(void)
{
    static const size_t requested[] = { 0, 512, 4096, 65536, 1 << 20 };
    static const size_t sizes[] = { 1, 512, 5000, 100000 };

    for (size_t r = 0; r < G_N_ELEMENTS(requested); r++) {
        BufPool *pool = bufpool_new(requested[r], 0);
        size_t align = MAX(page, requested[r]);
        void *bufs[G_N_ELEMENTS(sizes)];

        g_assert_cmpuint(bufpool_get_align(pool), ==, align);
        g_assert_cmpint(bufpool_try_get(pool, 0, G_N_ELEMENTS(sizes), sizes,
                                        bufs), ==, 0);
        for (size_t i = 0; i < G_N_ELEMENTS(sizes); i++) {
            size_t csize = bufpool_class_size(pool, sizes[i]);

            g_assert_cmpuint((uintptr_t)bufs[i] % align, ==, 0);
            g_assert_cmpuint(csize % align, ==, 0);
            /* The whole class is usable memory (ASan would object). */
            memset(bufs[i], 0xa5, csize);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(sizes); i++) {
            bufpool_put(pool, 0, bufs[i], sizes[i]);
        }
        g_assert_cmpuint(get_stats(pool).bytes_in_use, ==, 0);
        bufpool_free(pool);
    }
}

static void test_class_rounding(void)
{
    BufPool *pool = bufpool_new(0, 0);
    BufPool *big = bufpool_new(65536, 0);
    size_t gib = (size_t)1 << 30;
    void *buf;

    g_assert_cmpuint(bufpool_class_size(pool, 0), ==, page);
    g_assert_cmpuint(bufpool_class_size(pool, 1), ==, page);
    g_assert_cmpuint(bufpool_class_size(pool, page), ==, page);
    g_assert_cmpuint(bufpool_class_size(pool, page + 1), ==, 2 * page);
    g_assert_cmpuint(bufpool_class_size(pool, 3 * page), ==, 4 * page);
    g_assert_cmpuint(bufpool_class_size(pool, 4 * page), ==, 4 * page);
    g_assert_cmpuint(bufpool_class_size(pool, gib + 1), ==, 2 * gib);
    g_assert_cmpuint(bufpool_class_size(pool, 2 * gib), ==, 2 * gib);
    g_assert_cmpuint(bufpool_class_size(pool, 2 * gib + 1), ==, 0);
    g_assert_cmpuint(bufpool_class_size(pool, SIZE_MAX), ==, 0);

    g_assert_cmpuint(bufpool_class_size(big, 1), ==, 65536);
    g_assert_cmpuint(bufpool_class_size(big, 65536), ==, 65536);
    g_assert_cmpuint(bufpool_class_size(big, 65537), ==, 131072);

    /* The pool holds the class size, and any size of the class returns. */
    buf = get_one(pool, 3 * page + 1);
    g_assert_cmpuint(get_stats(pool).bytes_in_use, ==, 4 * page);
    g_assert_cmpuint(get_stats(pool).bytes_held, ==, 4 * page);
    bufpool_put(pool, 0, buf, 4 * page);
    g_assert_cmpuint(get_stats(pool).bytes_in_use, ==, 0);
    g_assert_cmpuint(get_stats(pool).bytes_held, ==, 4 * page);

    bufpool_free(big);
    bufpool_free(pool);
}

static void test_class_invalid_sizes(void)
{
    BufPool *pool = bufpool_new(0, 0);
    size_t zero[] = { page, 0 };
    size_t huge[] = { page, BUFPOOL_MAX_CLASS + 1 };
    void *bufs[2] = { (void *)1, (void *)2 };

    g_assert_cmpint(bufpool_try_get(pool, 0, 2, zero, bufs), ==, -EINVAL);
    g_assert_cmpint(bufpool_try_get(pool, 0, 2, huge, bufs), ==, -EINVAL);
    g_assert_cmpint(bufpool_try_get(pool, 0, -1, zero, bufs), ==, -EINVAL);
    g_assert_true(bufs[0] == (void *)1 && bufs[1] == (void *)2);
    g_assert_cmpint(bufpool_try_get(pool, 0, 0, NULL, NULL), ==, 0);
    g_assert_cmpuint(get_stats(pool).bytes_held, ==, 0);
    g_assert_cmpuint(get_stats(pool).allocations, ==, 0);
    bufpool_free(pool);
}

/* ---- reuse --------------------------------------------------------------- */

static void test_reuse_same_buffer(void)
{
    BufPool *pool = bufpool_new(0, 0);
    BufPoolStats st;
    void *a, *b;

    a = get_one(pool, 10000);
    st = get_stats(pool);
    g_assert_cmpuint(st.allocations, ==, 1);
    g_assert_cmpuint(st.reuses, ==, 0);
    bufpool_put(pool, 0, a, 10000);

    /* A different size of the same class gets the same buffer back. */
    b = get_one(pool, 12000);
    g_assert_true(a == b);
    st = get_stats(pool);
    g_assert_cmpuint(st.allocations, ==, 1);
    g_assert_cmpuint(st.reuses, ==, 1);
    g_assert_cmpuint(st.bytes_held, ==, bufpool_class_size(pool, 10000));
    bufpool_put(pool, 0, b, 12000);
    bufpool_free(pool);
}

/*
 * After warm-up, many multi-buffer get/put cycles map nothing new: every
 * buffer comes from a free list (and the free lists are intrusive, so no
 * heap allocation either).
 */
static void test_reuse_steady_state(void)
{
    BufPool *pool = bufpool_new(0, 0);
    size_t sizes[3] = { 512, 3 * page, 64 * 1024 };
    void *bufs[3], *first[3];
    BufPoolStats st;

    g_assert_cmpint(bufpool_try_get(pool, 0, 3, sizes, first), ==, 0);
    for (int i = 0; i < 3; i++) {
        bufpool_put(pool, 0, first[i], sizes[i]);
    }
    for (int round = 0; round < 1000; round++) {
        g_assert_cmpint(bufpool_try_get(pool, 0, 3, sizes, bufs), ==, 0);
        for (int i = 0; i < 3; i++) {
            g_assert_true(bufs[i] == first[i]);
            memset(bufs[i], round, sizes[i]);
            bufpool_put(pool, 0, bufs[i], sizes[i]);
        }
    }
    st = get_stats(pool);
    g_assert_cmpuint(st.allocations, ==, 3);
    g_assert_cmpuint(st.reuses, ==, 3000);
    g_assert_cmpuint(st.waits, ==, 0);
    bufpool_free(pool);
}

/* ---- cap, non-waiting --------------------------------------------------- */

static void test_cap_try_get_eagain(void)
{
    BufPool *pool = bufpool_new(0, 4 * page);
    void *bufs[4];
    void *extra = (void *)1;
    size_t one = page;

    for (int i = 0; i < 4; i++) {
        bufs[i] = get_one(pool, page);
    }
    g_assert_cmpuint(get_stats(pool).cap, ==, 4 * page);
    g_assert_cmpint(bufpool_try_get(pool, 0, 1, &one, &extra), ==, -EAGAIN);
    g_assert_true(extra == (void *)1);
    g_assert_cmpuint(get_stats(pool).bytes_held, ==, 4 * page);

    bufpool_put(pool, 0, bufs[3], page);
    extra = get_one(pool, page);
    g_assert_true(extra == bufs[3]);
    bufpool_put(pool, 0, extra, page);
    for (int i = 0; i < 3; i++) {
        bufpool_put(pool, 0, bufs[i], page);
    }
    bufpool_free(pool);
}

static void test_cap_frees_other_classes(void)
{
    BufPool *pool = bufpool_new(0, 4 * page);
    BufPoolStats st;
    void *big, *small[2];
    size_t sizes[2] = { page, page };

    big = get_one(pool, 4 * page);
    bufpool_put(pool, 0, big, 4 * page);
    g_assert_cmpuint(get_stats(pool).bytes_held, ==, 4 * page);

    /* Two pages of another class only fit once the free 4-page buffer is
     * released. */
    g_assert_cmpint(bufpool_try_get(pool, 0, 2, sizes, small), ==, 0);
    st = get_stats(pool);
    g_assert_cmpuint(st.bytes_held, ==, 2 * page);
    g_assert_cmpuint(st.bytes_in_use, ==, 2 * page);
    g_assert_cmpuint(st.allocations, ==, 3);
    g_assert_cmpuint(st.reuses, ==, 0);
    g_assert_true(is_unmapped(big));

    bufpool_put(pool, 0, small[0], page);
    bufpool_put(pool, 0, small[1], page);
    bufpool_free(pool);
}

/* Free buffers of other classes survive while the cap has room for them. */
static void test_cap_keeps_free_buffers_with_room(void)
{
    BufPool *pool = bufpool_new(0, 8 * page);
    void *big, *small;

    big = get_one(pool, 4 * page);
    bufpool_put(pool, 0, big, 4 * page);
    small = get_one(pool, page);
    g_assert_cmpuint(get_stats(pool).bytes_held, ==, 5 * page);
    bufpool_put(pool, 0, small, page);
    g_assert_true(get_one(pool, 4 * page) == big);
    bufpool_put(pool, 0, big, 4 * page);
    bufpool_free(pool);
}

static void test_cap_all_or_nothing(void)
{
    BufPool *pool = bufpool_new(0, 4 * page);
    size_t sizes[2] = { page, 2 * page };
    void *bufs[2] = { (void *)1, (void *)2 };
    void *held;
    BufPoolStats before, after;

    held = get_one(pool, 2 * page);
    before = get_stats(pool);
    /* One page would fit, both do not: nothing is handed out. */
    g_assert_cmpint(bufpool_try_get(pool, 0, 2, sizes, bufs), ==, -EAGAIN);
    g_assert_true(bufs[0] == (void *)1 && bufs[1] == (void *)2);
    after = get_stats(pool);
    g_assert_cmpmem(&before, sizeof(before), &after, sizeof(after));

    bufpool_put(pool, 0, held, 2 * page);
    g_assert_cmpint(bufpool_try_get(pool, 0, 2, sizes, bufs), ==, 0);
    g_assert_true(bufs[1] == held);
    bufpool_put(pool, 0, bufs[0], sizes[0]);
    bufpool_put(pool, 0, bufs[1], sizes[1]);
    bufpool_free(pool);
}

static void test_cap_oversize_when_idle(void)
{
    BufPool *pool = bufpool_new(0, page);
    void *big, *extra = NULL;
    size_t one = page;

    big = get_one(pool, 4 * page);
    memset(big, 1, 4 * page);
    g_assert_cmpuint(get_stats(pool).bytes_held, ==, 4 * page);
    g_assert_cmpint(bufpool_try_get(pool, 0, 1, &one, &extra), ==, -EAGAIN);

    /* Over the cap, the returned buffer is released, not cached. */
    bufpool_put(pool, 0, big, 4 * page);
    g_assert_cmpuint(get_stats(pool).bytes_held, ==, 0);
    extra = get_one(pool, page);
    bufpool_put(pool, 0, extra, page);
    bufpool_free(pool);
}

static void test_cap_lower_releases(void)
{
    BufPool *pool = bufpool_new(0, 8 * page);
    void *bufs[4];

    for (int i = 0; i < 4; i++) {
        bufs[i] = get_one(pool, page);
    }
    bufpool_put(pool, 0, bufs[0], page);
    bufpool_put(pool, 0, bufs[1], page);
    g_assert_cmpuint(get_stats(pool).bytes_held, ==, 4 * page);

    /* Lowering releases free buffers until the pool fits ... */
    bufpool_set_cap(pool, 3 * page);
    g_assert_cmpuint(get_stats(pool).cap, ==, 3 * page);
    g_assert_cmpuint(get_stats(pool).bytes_held, ==, 3 * page);
    bufpool_set_cap(pool, page);
    g_assert_cmpuint(get_stats(pool).bytes_held, ==, 2 * page);

    /* ... and buffers in use are released as they come back. */
    bufpool_put(pool, 0, bufs[2], page);
    g_assert_cmpuint(get_stats(pool).bytes_held, ==, page);
    bufpool_put(pool, 0, bufs[3], page);
    g_assert_cmpuint(get_stats(pool).bytes_held, ==, page);

    bufpool_set_cap(pool, 0);
    g_assert_cmpuint(get_stats(pool).cap, ==, BUFPOOL_DEFAULT_CAP);
    bufpool_free(pool);
}

/* ---- prefault ------------------------------------------------------------ */

static void test_prefault_populates(void)
{
    BufPool *pool = bufpool_new(0, 0);
    size_t size = 256 * 1024;
    void *buf, *control;

    /* The check can tell: an untouched anonymous mapping is not resident. */
    control = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_assert_true(control != MAP_FAILED);
    g_assert_cmpuint(resident_pages(control, size), ==, 0);
    munmap(control, size);

    buf = get_one(pool, size);
    g_assert_cmpuint(resident_pages(buf, size), ==, size / page);
    bufpool_put(pool, 0, buf, size);
    bufpool_free(pool);
}

/* A kernel without MADV_POPULATE_WRITE (EINVAL) gets its pages touched. */
static void test_prefault_einval_touches_pages(void)
{
    BufPool *pool = bufpool_new(65536, 0);
    size_t size = 256 * 1024;
    void *buf;

    bufpool_test_inject_prefault_error(pool, 0, 1, EINVAL);
    buf = get_one(pool, size);
    g_assert_cmpuint((uintptr_t)buf % 65536, ==, 0);
    g_assert_cmpuint(resident_pages(buf, size), ==, size / page);
    g_assert_cmpuint(get_stats(pool).prefault_failures, ==, 0);
    bufpool_put(pool, 0, buf, size);
    bufpool_free(pool);
}

static void test_prefault_failure_enomem(void)
{
    BufPool *pool = bufpool_new(0, 0);
    size_t sizes[3] = { page, 2 * page, 4 * page };
    void *bufs[3] = { (void *)1, (void *)2, (void *)3 };
    void *warm;
    BufPoolStats st;

    /* One free page-sized buffer to reuse, so the failing reservation
     * mixes a reused buffer, a fresh one that succeeds and one that fails. */
    warm = get_one(pool, page);
    bufpool_put(pool, 0, warm, page);

    bufpool_test_inject_prefault_error(pool, 1, 1, ENOMEM);
    g_assert_cmpint(bufpool_try_get(pool, 0, 3, sizes, bufs), ==, -ENOMEM);
    g_assert_true(bufs[0] == (void *)1 && bufs[1] == (void *)2 &&
                  bufs[2] == (void *)3);
    st = get_stats(pool);
    g_assert_cmpuint(st.prefault_failures, ==, 1);
    g_assert_cmpuint(st.bytes_in_use, ==, 0);
    g_assert_cmpuint(st.bytes_held, ==, page);
    g_assert_cmpuint(st.allocations, ==, 1);
    g_assert_cmpuint(st.reuses, ==, 0);

    /* Other errnos fail the same way. */
    bufpool_test_inject_prefault_error(pool, 0, 1, EFAULT);
    g_assert_cmpint(bufpool_try_get(pool, 0, 3, sizes, bufs), ==, -ENOMEM);
    g_assert_cmpuint(get_stats(pool).prefault_failures, ==, 2);

    /* The injection is spent: the same reservation now succeeds and the
     * free buffer is still there to reuse. */
    g_assert_cmpint(bufpool_try_get(pool, 0, 3, sizes, bufs), ==, 0);
    g_assert_true(bufs[0] == warm);
    st = get_stats(pool);
    g_assert_cmpuint(st.reuses, ==, 1);
    g_assert_cmpuint(st.allocations, ==, 3);
    g_assert_cmpuint(st.bytes_in_use, ==, 7 * page);
    for (int i = 0; i < 3; i++) {
        bufpool_put(pool, 0, bufs[i], sizes[i]);
    }
    bufpool_free(pool);
}

/* ---- trim ---------------------------------------------------------------- */

static void test_trim_releases_free(void)
{
    BufPool *pool = bufpool_new(0, 0);
    size_t sizes[3] = { page, 2 * page, 4 * page };
    void *bufs[3];
    BufPoolStats st;

    g_assert_cmpint(bufpool_try_get(pool, 0, 3, sizes, bufs), ==, 0);
    bufpool_put(pool, 0, bufs[0], sizes[0]);
    bufpool_put(pool, 0, bufs[2], sizes[2]);
    bufpool_trim(pool);
    st = get_stats(pool);
    g_assert_cmpuint(st.bytes_held, ==, 2 * page);
    g_assert_cmpuint(st.bytes_in_use, ==, 2 * page);
    g_assert_true(is_unmapped(bufs[0]));
    g_assert_true(is_unmapped(bufs[2]));
    /* The buffer in use is untouched. */
    memset(bufs[1], 7, sizes[1]);

    bufpool_put(pool, 0, bufs[1], sizes[1]);
    bufpool_trim(pool);
    g_assert_cmpuint(get_stats(pool).bytes_held, ==, 0);
    g_assert_true(is_unmapped(bufs[1]));

    /* The pool works after a trim: fresh buffers again. */
    bufs[0] = get_one(pool, page);
    g_assert_cmpuint(get_stats(pool).allocations, ==, 4);
    bufpool_put(pool, 0, bufs[0], page);
    bufpool_free(pool);
}

/* Under ASan a free buffer is poisoned: writing after put is reported. */
static void test_asan_use_after_put(void)
{
    if (!CONFIG_ASAN) {
        g_test_skip("needs AddressSanitizer");
        return;
    }
    if (g_test_subprocess()) {
        BufPool *pool = bufpool_new(0, 0);
        volatile uint8_t *buf = get_one(pool, 2 * page);

        bufpool_put(pool, 0, (void *)buf, 2 * page);
        buf[page] = 1;
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
    g_test_trap_assert_stderr("*use-after-poison*");
}

/* ---- waiting (coroutines) ------------------------------------------------ */

/* Run every ready bottom half and coroutine until the loop is idle. */
static void drain_loop(Loop *loop)
{
    while (loop_run_once(loop, false)) {
        /* Keep going. */
    }
}

/* Requeue the current coroutine and yield: lets the loop run others. */
static void yield_once(void)
{
    loop_co_wake(co_self());
    co_yield();
}

typedef struct WaitReq {
    BufPool *pool;
    unsigned level;
    int id;
    int n;
    size_t sizes[3];
    void *bufs[3];
    int ret;
    bool started, done;
    int *order;         /* admission order, shared */
    int *norder;
} WaitReq;

static void wait_req_co(void *opaque)
{
    WaitReq *r = opaque;

    r->started = true;
    r->ret = bufpool_co_get(r->pool, r->level, r->n, r->sizes, r->bufs);
    if (r->order != NULL) {
        r->order[(*r->norder)++] = r->id;
    }
    r->done = true;
}

static void wait_req_put(WaitReq *r)
{
    g_assert_true(r->done);
    g_assert_cmpint(r->ret, ==, 0);
    for (int i = 0; i < r->n; i++) {
        bufpool_put(r->pool, r->level, r->bufs[i], r->sizes[i]);
    }
}

static Loop *test_loop_new(void)
{
    Loop *loop = loop_new(NULL);

    g_assert_nonnull(loop);
    loop_attach_current(loop);
    return loop;
}

static void test_loop_free(Loop *loop)
{
    drain_loop(loop);
    loop_attach_current(NULL);
    loop_free(loop);
}

/*
 * Admission is strictly FIFO: A (1 page), B (2 pages), C (1 page) wait at a
 * 2-page cap; C must not overtake B even when C alone would fit.
 */
static void test_wait_fifo(void)
{
    Loop *loop = test_loop_new();
    BufPool *pool = bufpool_new(0, 2 * page);
    int order[3], norder = 0;
    WaitReq req[3] = {
        { .id = 0, .n = 1, .sizes = { page } },
        { .id = 1, .n = 1, .sizes = { 2 * page } },
        { .id = 2, .n = 1, .sizes = { page } },
    };
    void *m1, *m2, *probe = NULL;
    size_t one = page;

    m1 = get_one(pool, page);
    m2 = get_one(pool, page);
    for (int i = 0; i < 3; i++) {
        req[i].pool = pool;
        req[i].order = order;
        req[i].norder = &norder;
        loop_co_spawn(loop, wait_req_co, &req[i]);
    }
    drain_loop(loop);
    for (int i = 0; i < 3; i++) {
        g_assert_true(req[i].started);
        g_assert_false(req[i].done);
    }
    g_assert_cmpuint(get_stats(pool).waits, ==, 3);

    /* One page back: A fits and goes. */
    bufpool_put(pool, 0, m1, page);
    drain_loop(loop);
    g_assert_true(req[0].done);
    g_assert_false(req[1].done);
    g_assert_false(req[2].done);

    /* A's page back: C would fit, but B is ahead of it; try_get from
     * outside respects the queue too. */
    wait_req_put(&req[0]);
    g_assert_cmpint(bufpool_try_get(pool, 0, 1, &one, &probe), ==, -EAGAIN);
    drain_loop(loop);
    g_assert_false(req[1].done);
    g_assert_false(req[2].done);

    bufpool_put(pool, 0, m2, page);
    drain_loop(loop);
    g_assert_true(req[1].done);
    g_assert_false(req[2].done);

    wait_req_put(&req[1]);
    drain_loop(loop);
    g_assert_true(req[2].done);
    wait_req_put(&req[2]);

    g_assert_cmpint(norder, ==, 3);
    g_assert_cmpint(order[0], ==, 0);
    g_assert_cmpint(order[1], ==, 1);
    g_assert_cmpint(order[2], ==, 2);
    g_assert_cmpuint(get_stats(pool).bytes_in_use, ==, 0);
    g_assert_cmpuint(get_stats(pool).waits, ==, 3);
    bufpool_free(pool);
    test_loop_free(loop);
}

/* A coroutine that fits goes at once, without waiting or yielding. */
static void test_wait_not_when_room(void)
{
    Loop *loop = test_loop_new();
    BufPool *pool = bufpool_new(0, 4 * page);
    WaitReq req = { .pool = pool, .n = 2, .sizes = { page, 3 * page } };

    loop_co_spawn(loop, wait_req_co, &req);
    drain_loop(loop);
    g_assert_true(req.done);
    g_assert_cmpint(req.ret, ==, 0);
    g_assert_cmpuint(get_stats(pool).waits, ==, 0);
    wait_req_put(&req);
    bufpool_free(pool);
    test_loop_free(loop);
}

/* A reservation larger than the cap waits for the pool to be idle. */
static void test_wait_oversize_until_idle(void)
{
    Loop *loop = test_loop_new();
    BufPool *pool = bufpool_new(0, 2 * page);
    WaitReq big = { .pool = pool, .n = 2, .sizes = { 4 * page, page } };
    void *held;

    held = get_one(pool, page);
    loop_co_spawn(loop, wait_req_co, &big);
    drain_loop(loop);
    g_assert_true(big.started);
    g_assert_false(big.done);

    bufpool_put(pool, 0, held, page);
    drain_loop(loop);
    g_assert_true(big.done);
    g_assert_cmpint(big.ret, ==, 0);
    g_assert_cmpuint(get_stats(pool).bytes_in_use, ==, 5 * page);
    memset(big.bufs[0], 1, 4 * page);
    wait_req_put(&big);
    g_assert_cmpuint(get_stats(pool).bytes_held, <=, 2 * page);
    bufpool_free(pool);
    test_loop_free(loop);
}

/*
 * Nested reservations (the ordering rule): a reservation at level 1 does
 * not count what level 0 holds, so a child never waits for its own
 * parent's buffers, even when it alone exceeds the cap; level 0 counts
 * everything.
 */
static void test_levels_deeper_ignores_shallower(void)
{
    BufPool *pool = bufpool_new(0, 4 * page);
    size_t four = 4 * page, eight = 8 * page, one = page;
    void *l0, *l1, *big, *probe = NULL;

    g_assert_cmpint(bufpool_try_get(pool, 0, 1, &four, &l0), ==, 0);
    /* Pool full at level 0: level 1 still gets the full cap... */
    g_assert_cmpint(bufpool_try_get(pool, 1, 1, &four, &l1), ==, 0);
    /* ...but level 0, counting both, gets nothing, nor does level 1 now. */
    g_assert_cmpint(bufpool_try_get(pool, 0, 1, &one, &probe), ==, -EAGAIN);
    g_assert_cmpint(bufpool_try_get(pool, 1, 1, &one, &probe), ==, -EAGAIN);
    bufpool_put(pool, 1, l1, four);
    /* An oversize reservation runs when its level and deeper are idle,
     * whatever level 0 holds. */
    g_assert_cmpint(bufpool_try_get(pool, 1, 1, &eight, &big), ==, 0);
    memset(big, 0x5a, eight);
    g_assert_cmpint(bufpool_try_get(pool, 2, 1, &one, &probe), ==, 0);
    bufpool_put(pool, 2, probe, one);
    bufpool_put(pool, 1, big, eight);
    bufpool_put(pool, 0, l0, four);
    g_assert_cmpuint(get_stats(pool).bytes_in_use, ==, 0);
    /* Levels past the last share it. */
    g_assert_cmpint(bufpool_try_get(pool, BUFPOOL_LEVELS + 3, 1, &four, &l1), ==, 0);
    g_assert_cmpint(bufpool_try_get(pool, BUFPOOL_LEVELS - 1, 1, &one, &probe),
                    ==, -EAGAIN);
    bufpool_put(pool, BUFPOOL_LEVELS + 3, l1, four);
    bufpool_free(pool);
}

/*
 * Waiters at a deeper level are granted before earlier waiters at a
 * shallower one: the deeper holders are what the shallower ones (their
 * parents) wait on.
 */
static void test_levels_deeper_waiters_first(void)
{
    Loop *loop = test_loop_new();
    BufPool *pool = bufpool_new(0, 2 * page);
    int order[2], norder = 0;
    WaitReq req[2] = {
        { .id = 0, .level = 0, .n = 1, .sizes = { 2 * page } },
        { .id = 1, .level = 1, .n = 1, .sizes = { 2 * page } },
    };
    size_t two = 2 * page;
    void *held;

    g_assert_cmpint(bufpool_try_get(pool, 1, 1, &two, &held), ==, 0);
    for (int i = 0; i < 2; i++) {
        req[i].pool = pool;
        req[i].order = order;
        req[i].norder = &norder;
        loop_co_spawn(loop, wait_req_co, &req[i]);
        drain_loop(loop);
        g_assert_false(req[i].done);
    }
    bufpool_put(pool, 1, held, two);
    drain_loop(loop);
    g_assert_true(req[1].done);
    g_assert_false(req[0].done);
    wait_req_put(&req[1]);
    drain_loop(loop);
    g_assert_true(req[0].done);
    wait_req_put(&req[0]);
    g_assert_cmpint(norder, ==, 2);
    g_assert_cmpint(order[0], ==, 1);
    g_assert_cmpint(order[1], ==, 0);
    bufpool_free(pool);
    test_loop_free(loop);
}

/* A multi-buffer reservation waits for all of its room, not part of it. */
static void test_wait_all_or_nothing(void)
{
    Loop *loop = test_loop_new();
    BufPool *pool = bufpool_new(0, 4 * page);
    WaitReq req = { .pool = pool, .n = 3, .sizes = { page, page, 2 * page } };
    void *a, *b;

    a = get_one(pool, page);
    b = get_one(pool, page);
    loop_co_spawn(loop, wait_req_co, &req);
    drain_loop(loop);
    g_assert_false(req.done);
    g_assert_cmpuint(get_stats(pool).bytes_in_use, ==, 2 * page);

    bufpool_put(pool, 0, a, page);
    drain_loop(loop);
    g_assert_false(req.done);
    g_assert_cmpuint(get_stats(pool).bytes_in_use, ==, page);

    bufpool_put(pool, 0, b, page);
    drain_loop(loop);
    g_assert_true(req.done);
    g_assert_cmpuint(get_stats(pool).bytes_in_use, ==, 4 * page);
    wait_req_put(&req);
    bufpool_free(pool);
    test_loop_free(loop);
}

static void test_wait_raise_cap_wakes(void)
{
    Loop *loop = test_loop_new();
    BufPool *pool = bufpool_new(0, page);
    WaitReq req = { .pool = pool, .n = 1, .sizes = { page } };
    void *held;

    held = get_one(pool, page);
    loop_co_spawn(loop, wait_req_co, &req);
    drain_loop(loop);
    g_assert_false(req.done);
    bufpool_set_cap(pool, 2 * page);
    drain_loop(loop);
    g_assert_true(req.done);
    wait_req_put(&req);
    bufpool_put(pool, 0, held, page);
    bufpool_free(pool);
    test_loop_free(loop);
}

/*
 * A woken reservation whose fresh memory cannot be prefaulted fails with
 * -ENOMEM and passes its room on to the next waiter.
 */
static void test_wait_prefault_failure_passes_on(void)
{
    Loop *loop = test_loop_new();
    BufPool *pool = bufpool_new(0, 2 * page);
    int order[2], norder = 0;
    WaitReq a = { .pool = pool, .id = 0, .n = 1, .sizes = { 2 * page },
                  .order = order, .norder = &norder };
    WaitReq b = { .pool = pool, .id = 1, .n = 1, .sizes = { page },
                  .order = order, .norder = &norder };
    void *m1, *m2;

    m1 = get_one(pool, page);
    m2 = get_one(pool, page);
    loop_co_spawn(loop, wait_req_co, &a);
    loop_co_spawn(loop, wait_req_co, &b);
    drain_loop(loop);
    g_assert_false(a.done);
    g_assert_false(b.done);

    bufpool_test_inject_prefault_error(pool, 0, 1, ENOMEM);
    bufpool_put(pool, 0, m1, page);
    bufpool_put(pool, 0, m2, page);
    drain_loop(loop);
    g_assert_true(a.done);
    g_assert_cmpint(a.ret, ==, -ENOMEM);
    g_assert_true(b.done);
    g_assert_cmpint(b.ret, ==, 0);
    g_assert_cmpint(order[0], ==, 0);
    g_assert_cmpint(order[1], ==, 1);
    g_assert_cmpuint(get_stats(pool).prefault_failures, ==, 1);
    g_assert_cmpuint(get_stats(pool).bytes_in_use, ==, page);
    g_assert_cmpuint(get_stats(pool).bytes_held, <=, 2 * page);

    bufpool_put(pool, 0, b.bufs[0], page);
    bufpool_free(pool);
    test_loop_free(loop);
}

typedef struct StressCtx {
    BufPool *pool;
    GRand *rand;
    size_t cap;
    int done;
    uint64_t max_held;
} StressCtx;

typedef struct StressReq {
    StressCtx *ctx;
    int id;
    int n;
    size_t sizes[3];
    int yields;
} StressReq;

static void stress_co(void *opaque)
{
    StressReq *r = opaque;
    StressCtx *ctx = r->ctx;
    void *bufs[3];
    BufPoolStats st;

    g_assert_cmpint(bufpool_co_get(ctx->pool, 0, r->n, r->sizes, bufs), ==, 0);
    bufpool_get_stats(ctx->pool, &st);
    ctx->max_held = MAX(ctx->max_held, st.bytes_held);
    /* Only an oversized reservation, running alone, may exceed the cap. */
    if (st.bytes_held > ctx->cap) {
        size_t total = 0;

        for (int i = 0; i < r->n; i++) {
            total += bufpool_class_size(ctx->pool, r->sizes[i]);
        }
        g_assert_cmpuint(st.bytes_in_use, ==, total);
        g_assert_cmpuint(total, >, ctx->cap);
    }
    for (int i = 0; i < r->n; i++) {
        memset(bufs[i], r->id, r->sizes[i]);
    }
    for (int y = 0; y < r->yields; y++) {
        yield_once();
    }
    for (int i = 0; i < r->n; i++) {
        const uint8_t *p = bufs[i];

        /* Nobody else wrote into our buffers while we held them. */
        g_assert_cmpuint(p[0], ==, (uint8_t)r->id);
        g_assert_cmpuint(p[r->sizes[i] - 1], ==, (uint8_t)r->id);
        bufpool_put(ctx->pool, 0, bufs[i], r->sizes[i]);
    }
    ctx->done++;
}

/*
 * Many coroutines, each reserving 2-3 buffers of random sizes at a small
 * cap, all complete.  Seed: STRATA_TEST_SEED, else a fixed default.
 */
static void test_wait_stress_no_deadlock(void)
{
    enum { NREQ = 200 };
    const char *env = g_getenv("STRATA_TEST_SEED");
    guint32 seed = env ? (guint32)strtoul(env, NULL, 0) : 0x5eed1234u;
    Loop *loop = test_loop_new();
    StressCtx ctx = { .cap = 32 * page };
    StressReq *reqs = g_new0(StressReq, NREQ);
    BufPoolStats st;

    g_test_message("seed: %u (set STRATA_TEST_SEED to repeat)", seed);
    ctx.rand = g_rand_new_with_seed(seed);
    ctx.pool = bufpool_new(0, ctx.cap);
    for (int i = 0; i < NREQ; i++) {
        reqs[i].ctx = &ctx;
        reqs[i].id = i;
        reqs[i].n = g_rand_int_range(ctx.rand, 2, 4);
        for (int k = 0; k < reqs[i].n; k++) {
            reqs[i].sizes[k] = g_rand_int_range(ctx.rand, 1, 16 * page + 1);
        }
        reqs[i].yields = g_rand_int_range(ctx.rand, 0, 4);
        loop_co_spawn(loop, stress_co, &reqs[i]);
        /* Stagger arrivals: sometimes let the loop run in between. */
        if (g_rand_boolean(ctx.rand)) {
            loop_run_once(loop, false);
        }
    }
    LOOP_RUN_WHILE(loop, ctx.done < NREQ);

    st = get_stats(ctx.pool);
    g_assert_cmpuint(st.bytes_in_use, ==, 0);
    g_assert_cmpuint(st.bytes_held, <=, ctx.cap);
    g_assert_cmpuint(st.waits, >, 0);
    g_assert_cmpuint(st.reuses, >, 0);
    g_test_message("waits %" G_GUINT64_FORMAT " allocations %" G_GUINT64_FORMAT
                   " reuses %" G_GUINT64_FORMAT " max held %" G_GUINT64_FORMAT,
                   st.waits, st.allocations, st.reuses, ctx.max_held);

    bufpool_free(ctx.pool);
    g_rand_free(ctx.rand);
    g_free(reqs);
    test_loop_free(loop);
}

/* ---- per-thread caches ---------------------------------------------------- */

typedef struct KickLog {
    int kicks;
} KickLog;

static void count_kick(void *opaque)
{
    KickLog *k = opaque;

    __atomic_add_fetch(&k->kicks, 1, __ATOMIC_RELAXED);
}

/* A buffer put back through a cache comes out of it again: no lock, no
 * pool free list, and it still counts against the cap while cached. */
static void test_cache_keeps_and_reuses(void)
{
    BufPool *pool = bufpool_new(0, 64 * page);
    KickLog k = { 0 };
    BufPoolCache *c = bufpool_cache_new(pool, count_kick, &k);
    size_t one = page;
    void *a = NULL, *b = NULL;
    BufPoolStats st;

    g_assert_cmpint(bufpool_cache_try_get(c, 0, 1, &one, &a), ==, 0);
    bufpool_cache_put(c, 0, a, page);
    st = get_stats(pool);
    g_assert_cmpuint(st.bytes_cached, ==, page);
    g_assert_cmpuint(st.bytes_in_use, ==, 0);
    g_assert_cmpuint(st.bytes_held, ==, page);

    g_assert_cmpint(bufpool_cache_try_get(c, 0, 1, &one, &b), ==, 0);
    g_assert_true(a == b);
    st = get_stats(pool);
    g_assert_cmpuint(st.bytes_cached, ==, 0);
    g_assert_cmpuint(st.bytes_in_use, ==, page);
    g_assert_cmpuint(st.allocations, ==, 1);
    g_assert_cmpuint(st.reuses, ==, 1);

    /* Nested levels never use the cache: they go to the pool. */
    bufpool_cache_put(c, 0, b, page);
    g_assert_cmpint(bufpool_cache_try_get(c, 1, 1, &one, &a), ==, 0);
    g_assert_true(a != b);
    g_assert_cmpuint(get_stats(pool).allocations, ==, 2);
    bufpool_cache_put(c, 1, a, page);
    st = get_stats(pool);
    g_assert_cmpuint(st.bytes_cached, ==, page);
    g_assert_cmpuint(st.bytes_in_use, ==, 0);

    bufpool_cache_free(c);
    g_assert_cmpint(k.kicks, ==, 0);
    g_assert_cmpuint(get_stats(pool).bytes_in_use, ==, 0);
    bufpool_free(pool);
}

/* A cache keeps at most min(1 MiB, cap / 32); the rest goes back. */
static void test_cache_bounded(void)
{
    BufPool *pool = bufpool_new(0, 64 * page);
    KickLog k = { 0 };
    BufPoolCache *c = bufpool_cache_new(pool, count_kick, &k);
    size_t limit = MIN((size_t)1 << 20, 64 * page / 32);
    size_t n = limit / page + 2;
    void **bufs = g_new0(void *, n);

    for (size_t i = 0; i < n; i++) {
        bufs[i] = get_one(pool, page);
    }
    for (size_t i = 0; i < n; i++) {
        bufpool_cache_put(c, 0, bufs[i], page);
    }
    g_assert_cmpuint(get_stats(pool).bytes_cached, ==, limit);
    g_assert_cmpuint(get_stats(pool).bytes_in_use, ==, 0);
    bufpool_cache_free(c);
    g_assert_cmpuint(get_stats(pool).bytes_cached, ==, 0);
    g_free(bufs);
    bufpool_free(pool);
}

/*
 * The cap and FIFO order hold with caches: at a 64-page cap, 63 pages in
 * use and one cached by another thread's cache, a 1-page reservation
 * waits; the pool asks the cache's owner to flush, and until the waiter is
 * served the cache keeps nothing (puts go to the pool, gets too).
 */
static void test_cache_flushes_for_waiter(void)
{
    Loop *loop = test_loop_new();
    BufPool *pool = bufpool_new(0, 64 * page);
    KickLog k = { 0 };
    BufPoolCache *c = bufpool_cache_new(pool, count_kick, &k);
    WaitReq req = { .id = 0, .n = 1, .sizes = { page } };
    size_t one = page;
    void *held[6], *cached = NULL, *probe = NULL;

    for (int i = 0; i < 6; i++) {
        held[i] = get_one(pool, page << i);     /* 1 + 2 + ... + 32 */
    }
    g_assert_cmpint(bufpool_cache_try_get(c, 0, 1, &one, &cached), ==, 0);
    bufpool_cache_put(c, 0, cached, page);
    g_assert_cmpuint(get_stats(pool).bytes_cached, ==, page);

    req.pool = pool;
    loop_co_spawn(loop, wait_req_co, &req);
    drain_loop(loop);
    g_assert_true(req.started);
    g_assert_false(req.done);
    g_assert_cmpint(k.kicks, ==, 1);

    /* Contended: the cache does not serve, so nothing overtakes. */
    g_assert_cmpint(bufpool_cache_try_get(c, 0, 1, &one, &probe), ==,
                    -EAGAIN);

    /* The owner flushes (what its kick would make it do): the page goes
     * to the waiter. */
    bufpool_cache_flush(c);
    drain_loop(loop);
    g_assert_true(req.done);
    g_assert_cmpuint(get_stats(pool).bytes_cached, ==, 0);
    g_assert_true(req.bufs[0] == cached);

    /* Served: the cache keeps buffers again. */
    wait_req_put(&req);
    bufpool_cache_put(c, 0, held[0], page);
    g_assert_cmpuint(get_stats(pool).bytes_cached, ==, page);
    g_assert_cmpint(k.kicks, ==, 1);

    for (int i = 1; i < 6; i++) {
        bufpool_put(pool, 0, held[i], page << i);
    }
    bufpool_cache_free(c);
    g_assert_cmpuint(get_stats(pool).bytes_in_use, ==, 0);
    bufpool_free(pool);
    test_loop_free(loop);
}

/* Lowering the cap and trimming ask the caches to flush. */
static void test_cache_kicked_by_cap_and_trim(void)
{
    BufPool *pool = bufpool_new(0, 64 * page);
    KickLog k = { 0 };
    BufPoolCache *c = bufpool_cache_new(pool, count_kick, &k);
    void *buf = get_one(pool, page);

    bufpool_cache_put(c, 0, buf, page);
    bufpool_set_cap(pool, 8 * page);
    g_assert_cmpint(k.kicks, ==, 1);
    bufpool_trim(pool);
    g_assert_cmpint(k.kicks, ==, 2);
    g_assert_cmpuint(get_stats(pool).bytes_held, ==, page);
    bufpool_cache_flush(c);
    bufpool_trim(pool);
    g_assert_cmpuint(get_stats(pool).bytes_held, ==, 0);
    bufpool_cache_free(c);
    bufpool_free(pool);
}

/*
 * Threads: each with its own loop and cache, coroutines reserving and
 * returning 1-3 buffers at a cap small enough that they wait for each
 * other; the kick schedules the flush in the owner's loop.  All finish,
 * and the pool ends with nothing in use.
 */
typedef struct CacheThread {
    BufPool *pool;
    Loop *loop;
    LoopBH *flush_bh;
    BufPoolCache *cache;
    int done;
    guint32 seed;
} CacheThread;

typedef struct CacheWorker {
    CacheThread *t;
    GRand *rand;
} CacheWorker;

static void cache_thread_kick(void *opaque)
{
    CacheThread *t = opaque;

    loop_bh_schedule(t->flush_bh);
}

static void cache_thread_flush(void *opaque)
{
    CacheThread *t = opaque;

    bufpool_cache_flush(t->cache);
}

static void cache_worker_co(void *opaque)
{
    CacheWorker *w = opaque;

    for (int round = 0; round < 200; round++) {
        size_t sizes[3];
        void *bufs[3];
        int n = g_rand_int_range(w->rand, 1, 4);
        int ret;

        for (int i = 0; i < n; i++) {
            sizes[i] = (size_t)g_rand_int_range(w->rand, 1, 3) * page;
        }
        ret = bufpool_cache_try_get(w->t->cache, 0, n, sizes, bufs);
        if (ret == -EAGAIN) {
            ret = bufpool_co_get(w->t->pool, 0, n, sizes, bufs);
        }
        g_assert_cmpint(ret, ==, 0);
        for (int i = 0; i < n; i++) {
            memset(bufs[i], 0xa5, sizes[i]);
        }
        if (g_rand_boolean(w->rand)) {
            co_sleep_ns(1000);
        }
        for (int i = 0; i < n; i++) {
            bufpool_cache_put(w->t->cache, 0, bufs[i], sizes[i]);
        }
    }
    w->t->done++;
}

static gpointer cache_thread_main(gpointer opaque)
{
    CacheThread *t = opaque;
    enum { WORKERS = 16 };
    CacheWorker w[WORKERS];

    t->loop = loop_new(NULL);
    g_assert_nonnull(t->loop);
    loop_attach_current(t->loop);
    t->flush_bh = loop_bh_new(t->loop, cache_thread_flush, t);
    t->cache = bufpool_cache_new(t->pool, cache_thread_kick, t);
    for (int i = 0; i < WORKERS; i++) {
        w[i] = (CacheWorker) { .t = t,
                               .rand = g_rand_new_with_seed(t->seed + i) };
        loop_co_spawn(t->loop, cache_worker_co, &w[i]);
    }
    LOOP_RUN_WHILE(t->loop, t->done < WORKERS);
    /* No kick comes after the free (they run under the pool's lock); a
     * flush it already scheduled must not run on the freed cache. */
    bufpool_cache_free(t->cache);
    loop_bh_delete(t->flush_bh);
    drain_loop(t->loop);
    for (int i = 0; i < WORKERS; i++) {
        g_rand_free(w[i].rand);
    }
    loop_attach_current(NULL);
    loop_free(t->loop);
    return NULL;
}

static void test_cache_threads(void)
{
    BufPool *pool = bufpool_new(0, 32 * page);
    CacheThread t[2] = {
        { .pool = pool, .seed = 1 }, { .pool = pool, .seed = 100 },
    };
    GThread *th[2];
    BufPoolStats st;

    for (int i = 0; i < 2; i++) {
        th[i] = g_thread_new("cache", cache_thread_main, &t[i]);
    }
    for (int i = 0; i < 2; i++) {
        g_thread_join(th[i]);
    }
    st = get_stats(pool);
    g_assert_cmpuint(st.bytes_in_use, ==, 0);
    g_assert_cmpuint(st.bytes_cached, ==, 0);
    g_assert_cmpuint(st.bytes_held, <=, 32 * page);
    g_assert_cmpuint(st.waits, >, 0);
    g_test_message("waits %" G_GUINT64_FORMAT " reuses %" G_GUINT64_FORMAT,
                   st.waits, st.reuses);
    bufpool_free(pool);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    page = sysconf(_SC_PAGESIZE);

    g_test_add_func("/bufpool/align/page-or-larger", test_align_page_or_larger);
    g_test_add_func("/bufpool/class/rounding", test_class_rounding);
    g_test_add_func("/bufpool/class/invalid-sizes", test_class_invalid_sizes);
    g_test_add_func("/bufpool/reuse/same-buffer", test_reuse_same_buffer);
    g_test_add_func("/bufpool/reuse/steady-state-maps-nothing",
                    test_reuse_steady_state);
    g_test_add_func("/bufpool/cap/try-get-eagain", test_cap_try_get_eagain);
    g_test_add_func("/bufpool/cap/frees-other-classes",
                    test_cap_frees_other_classes);
    g_test_add_func("/bufpool/cap/keeps-free-buffers-with-room",
                    test_cap_keeps_free_buffers_with_room);
    g_test_add_func("/bufpool/cap/all-or-nothing", test_cap_all_or_nothing);
    g_test_add_func("/bufpool/cap/oversize-when-idle",
                    test_cap_oversize_when_idle);
    g_test_add_func("/bufpool/cap/lower-releases", test_cap_lower_releases);
    g_test_add_func("/bufpool/prefault/populates", test_prefault_populates);
    g_test_add_func("/bufpool/prefault/einval-touches-pages",
                    test_prefault_einval_touches_pages);
    g_test_add_func("/bufpool/prefault/failure-enomem",
                    test_prefault_failure_enomem);
    g_test_add_func("/bufpool/trim/releases-free", test_trim_releases_free);
    g_test_add_func("/bufpool/asan/use-after-put-reported",
                    test_asan_use_after_put);
    g_test_add_func("/bufpool/wait/fifo", test_wait_fifo);
    g_test_add_func("/bufpool/cache/keeps-and-reuses",
                    test_cache_keeps_and_reuses);
    g_test_add_func("/bufpool/cache/bounded", test_cache_bounded);
    g_test_add_func("/bufpool/cache/flushes-for-waiter",
                    test_cache_flushes_for_waiter);
    g_test_add_func("/bufpool/cache/kicked-by-cap-and-trim",
                    test_cache_kicked_by_cap_and_trim);
    g_test_add_func("/bufpool/cache/threads", test_cache_threads);
    g_test_add_func("/bufpool/levels/deeper-ignores-shallower",
                    test_levels_deeper_ignores_shallower);
    g_test_add_func("/bufpool/levels/deeper-waiters-first",
                    test_levels_deeper_waiters_first);
    g_test_add_func("/bufpool/wait/not-when-room", test_wait_not_when_room);
    g_test_add_func("/bufpool/wait/oversize-until-idle",
                    test_wait_oversize_until_idle);
    g_test_add_func("/bufpool/wait/all-or-nothing", test_wait_all_or_nothing);
    g_test_add_func("/bufpool/wait/raise-cap-wakes", test_wait_raise_cap_wakes);
    g_test_add_func("/bufpool/wait/prefault-failure-passes-on",
                    test_wait_prefault_failure_passes_on);
    g_test_add_func("/bufpool/wait/stress-no-deadlock",
                    test_wait_stress_no_deadlock);
    return g_test_run();
}
