/*
 * Request lifetime: drained sections, and bounce memory held across nested
 * padding levels
 * SPDX-License-Identifier: MIT
 *
 * "Drained" must mean that no request is anywhere in the node's subtree or
 * above it, whatever the request waits for.  These tests park requests on
 * bounce-pool memory (vectors longer than max_iov need a gather buffer, the
 * pool is capped to one such buffer, and a request on another node holds a
 * little of it at a blkdebug breakpoint), then reopen the file node with
 * cache.direct=on, which raises its alignment from 1 to the device's: a
 * request that resumed after the reopen would run a plan built for the old
 * limits.  Every request must complete, before the reopen does, with its
 * data on disk.
 *
 * The nesting tests send misaligned writes through two padding levels (a
 * blkdebug align=4096 filter, which reserves head and tail buffers, over an
 * O_DIRECT file, which bounces the misaligned caller memory) with one
 * capped pool: the child's reservation must never wait for what its own
 * parent level holds (util/bufpool.h, the ordering rule).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "block/blkdebug.h"
#include "block/block-int.h"
#include "strata/strata.h"
#include "test-util.h"

#define NREQ 8
#define NELEM 1100              /* more than IOV_MAX: a gather is needed */
#define ELEM 512
#define REQ_BYTES (NELEM * ELEM)
#define REQ_STRIDE (1 << 20)    /* requests land 1 MiB apart */

/* One request's completion, filled in by done_cb. */
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

typedef struct Req {
    Done c;                     /* first: the callback's opaque */
    struct iovec iov[NELEM];
    uint8_t *mem;               /* NELEM elements, a gap after each */
} Req;

static int count_done(Req *reqs)
{
    int n = 0;
    for (int i = 0; i < NREQ; i++) {
        n += reqs[i].c.done;
    }
    return n;
}

/* Can this directory do O_DIRECT at all?  (Some filesystems refuse it.) */
static bool dir_does_direct(const char *dir)
{
    g_autofree char *p = g_build_filename(dir, "probe", NULL);
    int fd = open(p, O_CREAT | O_RDWR | O_DIRECT, 0600);
    if (fd < 0) {
        return false;
    }
    close(fd);
    unlink(p);
    return true;
}

/* A directory on which O_DIRECT works, for the nesting tests: tmpfs first
 * (fast), else /var/tmp.  NULL when neither takes it. */
static char *make_direct_dir(void)
{
    const char *bases[] = { "/dev/shm", "/var/tmp" };

    for (size_t i = 0; i < G_N_ELEMENTS(bases); i++) {
        g_autofree char *dir = g_build_filename(bases[i], "strata-nest-XXXXXX",
                                                NULL);
        if (!g_file_test(bases[i], G_FILE_TEST_IS_DIR) || !g_mkdtemp(dir)) {
            continue;
        }
        if (dir_does_direct(dir)) {
            return g_steal_pointer(&dir);
        }
        g_rmdir(dir);
    }
    return NULL;
}

/* The image is unlinked as soon as the graph holds it (a failed test
 * leaves nothing behind); the test reads it back through @fd. */
typedef struct NestEnv {
    char *dir, *path;
    int fd;
    StrataContext *ctx;
    StrataNode *top;
    StrataBackend *be;
} NestEnv;

/* blkdebug align=4096 over an O_DIRECT file of @size bytes. */
static bool nest_open(NestEnv *e, int64_t size)
{
    g_autoptr(StrataError) err = NULL;
    g_autofree char *json = NULL;

    memset(e, 0, sizeof(*e));
    e->dir = make_direct_dir();
    if (!e->dir) {
        g_test_skip("no directory here takes O_DIRECT (/dev/shm, /var/tmp)");
        return false;
    }
    e->path = g_build_filename(e->dir, "img", NULL);
    g_assert_true(g_file_set_contents(e->path, "", 0, NULL));
    g_assert_cmpint(truncate(e->path, size), ==, 0);
    g_autofree char *filter = g_strdup_printf(
        "{\"driver\": \"blkdebug\", \"align\": 4096,"
        " \"image\": {\"driver\": \"file\", \"filename\": \"%s\","
        " \"cache\": {\"direct\": true}}}", e->path);
    /* "drain-under-align": an align node pads instead (test-util.h). */
    json = test_pad_filter_json(filter);
    e->ctx = strata_context_new(&err);
    e->top = strata_node_open_json(e->ctx, json, &err);
    if (!e->top) {
        g_error("%s: %s", json, error_get_message(err));
    }
    e->be = strata_backend_new(e->top, "vda", STRATA_PERM_CONSISTENT_READ |
                               STRATA_PERM_WRITE, STRATA_PERM_CONSISTENT_READ,
                               &err);
    g_assert_nonnull(e->be);
    e->fd = open(e->path, O_RDONLY);
    g_assert_cmpint(e->fd, >=, 0);
    g_assert_cmpint(g_unlink(e->path), ==, 0);
    g_assert_cmpint(g_rmdir(e->dir), ==, 0);
    return true;
}

static void nest_close(NestEnv *e)
{
    strata_backend_free(e->be);
    strata_node_unref(e->top);
    strata_context_free(e->ctx);
    close(e->fd);
    g_free(e->path);
    g_free(e->dir);
}

typedef struct NestReq {
    Done c;                     /* first: the callback's opaque */
    int64_t offset, bytes;
    struct iovec iov;           /* must live until the callback */
} NestReq;

#define PERIOD 251              /* prime: no alignment hides a shift */

/* ThreadSanitizer checks every byte copied, and these tests move hundreds
 * of MiB in one thread: under it, every size (and the pool's cap) is
 * divided by 16, which keeps each case's shape (oversize at its level,
 * two 4-MiB-class bounces per cap). */
#if defined(__SANITIZE_THREAD__)
#define NEST_SHIFT 4
#else
#define NEST_SHIFT 0
#endif

/*
 * Write every request of @reqs at once (request i's data is a pattern of
 * period 251 at phase i, from a shared buffer at an odd address, so no
 * buffer is aligned and a misplaced request shows), wait (bounded: a
 * deadlock fails the test instead of hanging it), then check the file
 * chunk by chunk: each range holds its data, every other byte is zero.
 * Requests must be sorted by offset and must not overlap.
 */
static void nest_run(NestEnv *e, NestReq *reqs, int n, int64_t file_size)
{
    int64_t max_bytes = 0;
    for (int i = 0; i < n; i++) {
        max_bytes = MAX(max_bytes, reqs[i].bytes);
    }
    uint8_t *src = g_malloc(max_bytes + PERIOD + 1);
    for (int64_t k = 0; k < max_bytes + PERIOD; k++) {
        src[k + 1] = (uint8_t)(k % PERIOD + 1);
    }
    for (int i = 0; i < n; i++) {
        NestReq *r = &reqs[i];
        r->iov = (struct iovec) { src + 1 + i % PERIOD, r->bytes };
        g_assert_cmpint(strata_backend_aio_pwritev(e->be, r->offset, &r->iov, 1, 0,
                                                   done_cb, &r->c), ==, 0);
    }
    gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
    int done = 0;
    while (done < n && g_get_monotonic_time() < deadline) {
        strata_context_run_once(e->ctx, false);
        done = 0;
        for (int i = 0; i < n; i++) {
            done += reqs[i].c.done;
        }
        if (done < n) {
            g_usleep(100);
        }
    }
    g_assert_cmpint(done, ==, n);
    for (int i = 0; i < n; i++) {
        g_assert_cmpint(reqs[i].c.ret, ==, 0);
    }

    const int64_t chunk = 8 << 20;
    uint8_t *disk = g_malloc(chunk), *expect = g_malloc(chunk);
    int fd = e->fd;
    g_assert_cmpint(lseek(fd, 0, SEEK_END), ==, file_size);
    for (int64_t pos = 0; pos < file_size; pos += chunk) {
        int64_t len = MIN(chunk, file_size - pos);
        g_assert_cmpint(pread(fd, disk, len, pos), ==, len);
        memset(expect, 0, len);
        for (int i = 0; i < n; i++) {
            int64_t s0 = MAX(pos, reqs[i].offset);
            int64_t e0 = MIN(pos + len, reqs[i].offset + reqs[i].bytes);
            if (s0 < e0) {
                memcpy(expect + (s0 - pos),
                       (uint8_t *)reqs[i].iov.iov_base + (s0 - reqs[i].offset),
                       e0 - s0);
            }
        }
        if (memcmp(disk, expect, len) != 0) {
            int64_t k = 0;
            while (disk[k] == expect[k]) {
                k++;
            }
            g_test_message("first difference at %" G_GINT64_FORMAT
                           " (disk %u, expected %u)", pos + k, disk[k], expect[k]);
            g_assert_not_reached();
        }
    }
    g_free(disk);
    g_free(expect);
    g_free(src);
}

/* One 80 MiB misaligned write: larger than the pool's cap, so it may only
 * run alone at its level, while its parent level holds 8 KiB. */
static void test_nest_80m(void)
{
    const int64_t size = (96 << 20) >> NEST_SHIFT;
    NestEnv e;
    NestReq r = { .offset = 512, .bytes = (80 << 20) >> NEST_SHIFT };

    if (!nest_open(&e, size)) {
        return;
    }
    bufpool_set_cap(e.ctx->pool, (64 << 20) >> NEST_SHIFT);
    nest_run(&e, &r, 1, size);
    nest_close(&e);
}

/* 64 concurrent misaligned 4 MiB writes, pool capped at 8 MiB: each holds
 * head and tail buffers at the filter while its file level needs 4 MiB. */
static void test_nest_64x4m(void)
{
    const int n = 64;
    const int64_t stride = ((4 << 20) >> NEST_SHIFT) + 16384;
    const int64_t size = n * stride;
    NestEnv e;
    NestReq *reqs = g_new0(NestReq, n);

    if (!nest_open(&e, size)) {
        g_free(reqs);
        return;
    }
    bufpool_set_cap(e.ctx->pool, (8 << 20) >> NEST_SHIFT);
    for (int i = 0; i < n; i++) {
        reqs[i] = (NestReq) { .offset = i * stride + 512 * (i % 8 + 1),
                              .bytes = (4 << 20) >> NEST_SHIFT };
    }
    nest_run(&e, reqs, n, size);
    g_free(reqs);
    nest_close(&e);
}

/*
 * @top_raw: put a raw node on top, so the requests wait for memory in the
 * raw node's entry, above the file node that is reopened: the drain of the
 * file node must wait for its ancestors too.
 */
static void drain_parked_on_memory(gconstpointer data)
{
    bool top_raw = GPOINTER_TO_INT(data);
    g_autoptr(StrataError) err = NULL;
    g_autofree char *dir = NULL;
    g_autofree char *path = NULL;
    g_autofree char *json = NULL;
    g_autofree char *file_json = NULL;
    Req *reqs;

    if (!g_file_test("/var/tmp", G_FILE_TEST_IS_DIR)) {
        g_test_skip("needs /var/tmp (a disk filesystem with O_DIRECT)");
        return;
    }
    dir = g_build_filename("/var/tmp", "strata-drain-XXXXXX", NULL);
    g_assert_nonnull(g_mkdtemp(dir));
    if (!dir_does_direct(dir)) {
        g_test_skip("/var/tmp refuses O_DIRECT");
        g_rmdir(dir);
        return;
    }
    reqs = g_new0(Req, NREQ);
    path = g_build_filename(dir, "img", NULL);
    g_assert_true(g_file_set_contents(path, "", 0, NULL));
    g_assert_cmpint(truncate(path, (int64_t)NREQ * REQ_STRIDE), ==, 0);

    file_json = g_strdup_printf(
        "{\"driver\": \"file\", \"node-name\": \"f\", \"filename\": \"%s\","
        " \"aio\": \"threads\", \"cache\": {\"direct\": false}}", path);
    json = top_raw ? g_strdup_printf("{\"driver\": \"raw\", \"node-name\": \"r\","
                                     " \"file\": %s}", file_json)
                   : g_strdup(file_json);

    StrataContext *ctx = strata_context_new(&err);
    g_assert_nonnull(ctx);
    StrataNode *top = strata_node_open_json(ctx, json, &err);
    if (!top) {
        g_error("%s: %s", json, error_get_message(err));
    }
    StrataNode *file = node_find(ctx, "f");
    StrataBackend *be = strata_backend_new(top, "vda",
                                           STRATA_PERM_CONSISTENT_READ |
                                           STRATA_PERM_WRITE,
                                           STRATA_PERM_CONSISTENT_READ, &err);
    g_assert_nonnull(be);
    g_assert_cmpint(file->bl.request_alignment, ==, 1);
    /* The graph holds the file now: a failed test leaves nothing behind
     * (reopen goes through the open description, not the name). */
    g_assert_cmpint(g_unlink(path), ==, 0);
    g_assert_cmpint(g_rmdir(dir), ==, 0);

    /* Another graph in the same context holds one 4 KiB RMW buffer of the
     * pool at a breakpoint, outside the subtree that will be drained. */
    g_autofree char *bd_json = test_pad_filter_json(
        "{\"driver\": \"blkdebug\", \"node-name\": \"bd\", \"align\": 4096,"
        " \"image\": {\"driver\": \"mem\", \"size\": 65536}}");
    StrataNode *bd = strata_node_open_json(ctx, bd_json, &err);
    g_assert_nonnull(bd);
    StrataBackend *be2 = strata_backend_new(bd, "vdb", STRATA_PERM_ALL,
                                            STRATA_PERM_ALL, &err);
    g_assert_nonnull(be2);
    uint8_t small[512];
    struct iovec small_iov = { small, sizeof(small) };
    Done held = { 0 };
    memset(small, 0x77, sizeof(small));
    g_assert_true(blkdebug_break(bd, "pwritev", "hold", &err));
    g_assert_cmpint(strata_backend_aio_pwritev(be2, 512, &small_iov, 1, 0,
                                               done_cb, &held), ==, 0);
    for (int spins = 0; spins < 1000 && !blkdebug_is_suspended(bd, "hold");
         spins++) {
        strata_context_run_once(ctx, false);
    }
    g_assert_true(blkdebug_is_suspended(bd, "hold"));

    /* One gather buffer (77 elements of 512 bytes, a 64 KiB class) at a
     * time, and not even one while the held request has its 4 KiB: every
     * request waits for pool memory. */
    bufpool_set_cap(ctx->pool, 64 * 1024);
    for (int i = 0; i < NREQ; i++) {
        Req *r = &reqs[i];
        r->mem = g_malloc(NELEM * ELEM * 2);
        for (int k = 0; k < NELEM; k++) {
            uint8_t *e = r->mem + (size_t)k * ELEM * 2;
            memset(e, (i * 31 + k) % 251 + 1, ELEM);
            r->iov[k] = (struct iovec) { e, ELEM };
        }
        g_assert_cmpint(strata_backend_aio_pwritev(be, (int64_t)i * REQ_STRIDE,
                                                   r->iov, NELEM, 0, done_cb, &r->c),
                        ==, 0);
    }

    /* Let every request enter the graph and park on the pool. */
    BufPoolStats ps;
    for (int spins = 0; spins < 1000; spins++) {
        bufpool_get_stats(ctx->pool, &ps);
        if (ps.waits >= NREQ) {
            break;
        }
        strata_context_run_once(ctx, false);
    }
    bufpool_get_stats(ctx->pool, &ps);
    g_assert_cmpuint(ps.waits, >=, NREQ);
    g_assert_cmpint(count_done(reqs), ==, 0);

    if (!strata_node_reopen_json(file, "{\"cache\": {\"direct\": true}}", &err)) {
        g_error("reopen: %s", error_get_message(err));
    }
    /* The drain waited for all of them, parked or not (the drain made
     * blkdebug let its held request go, which gave the memory back). */
    bool all_done = count_done(reqs) == NREQ;
    if (blkdebug_is_suspended(bd, "hold")) {
        blkdebug_resume(bd, "hold", NULL);
    }
    /* Bounded: a request stuck on memory must fail the test, not hang it. */
    gint64 deadline = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
    while ((count_done(reqs) < NREQ || !held.done) &&
           g_get_monotonic_time() < deadline) {
        strata_context_run_once(ctx, false);
        g_usleep(100);
    }
    g_assert_cmpint(count_done(reqs), ==, NREQ);
    g_assert_true(held.done);
    g_assert_true(all_done);
    g_assert_cmpint(held.ret, ==, 0);
    g_assert_cmpint(file->bl.request_alignment, >, 1);
    for (int i = 0; i < NREQ; i++) {
        g_assert_cmpint(reqs[i].c.ret, ==, 0);
    }

    /* Every byte on disk, read through the O_DIRECT node. */
    uint8_t *back = g_malloc(REQ_BYTES);
    for (int i = 0; i < NREQ; i++) {
        g_assert_cmpint(strata_backend_pread(be, (int64_t)i * REQ_STRIDE, back,
                                             REQ_BYTES, 0), ==, 0);
        for (int k = 0; k < NELEM; k++) {
            g_assert_cmpmem(back + (size_t)k * ELEM, ELEM, reqs[i].iov[k].iov_base,
                            ELEM);
        }
        g_free(reqs[i].mem);
    }
    g_free(back);
    g_free(reqs);

    strata_backend_free(be2);
    strata_node_unref(bd);
    strata_backend_free(be);
    strata_node_unref(top);
    strata_context_free(ctx);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_data_func("/drain/reopen/requests-parked-on-pool-memory",
                         GINT_TO_POINTER(false), drain_parked_on_memory);
    g_test_add_data_func("/drain/reopen/parent-requests-parked-on-pool-memory",
                         GINT_TO_POINTER(true), drain_parked_on_memory);
    g_test_add_func("/pool-nesting/80m-misaligned-below-padding-filter",
                    test_nest_80m);
    g_test_add_func("/pool-nesting/64-concurrent-4m-two-levels-cap-8m",
                    test_nest_64x4m);
    return g_test_run();
}
