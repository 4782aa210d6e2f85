/* SPDX-License-Identifier: MIT */
/*
 * AIO engines (block/aio-engine.h): every test runs once per engine and is
 * skipped, with the reason, when the engine is not compiled in or the
 * kernel refuses it.  A temporary file in /var/tmp (or $STRATA_AIO_TEST_DIR)
 * is opened with O_DIRECT where the filesystem allows it, else buffered.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <glib.h>
#include "config-host.h"
#include "block/aio-engine.h"
#if CONFIG_IO_URING
#include <liburing.h>
#endif

#define BLK 4096
#define FILE_SIZE (1024 * 1024)

typedef struct Env {
    AioEngineId id;
    const AioEngineOps *ops;
    StrataContext *ctx;
    void *state;
    int fd;
    bool direct;
    int pending;            /* coroutines not yet finished */
} Env;

/* One request run in its own coroutine. */
typedef struct Io {
    Env *e;
    bool write;
    int fd;
    int64_t offset;
    struct iovec iov[4];
    const struct iovec *iovp;   /* overrides iov when set */
    int niov;
    int flags;
    int ret;
    bool done;
} Io;

/* skipf() is GLib 2.78. */
static void G_GNUC_PRINTF(1, 2) skipf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_test_skip(msg);
}

static const char *engine_path_name(AioEngineId id)
{
    static const char *const names[] = {
        [AIO_ENGINE_THREADS] = "threads",
        [AIO_ENGINE_NATIVE] = "native",
        [AIO_ENGINE_IO_URING] = "io_uring",
    };
    return names[id];
}

static int open_temp_file(bool *direct);

/* A buffered (page-cache) temporary file of FILE_SIZE bytes filled with
 * the pattern of @seed through pwrite, so reads of it are cache hits. */
static int open_buffered_file(unsigned seed);

static int open_temp_file(bool *direct)
{
    /* STRATA_AIO_TEST_DIR picks another filesystem (e.g. a tmpfs). */
    const char *dir = g_getenv("STRATA_AIO_TEST_DIR");
    if (!dir) {
        dir = g_file_test("/var/tmp", G_FILE_TEST_IS_DIR)
              ? "/var/tmp" : g_get_tmp_dir();
    }
    g_autofree char *path = g_build_filename(dir, "strata-aio-XXXXXX", NULL);
    int fd = g_mkstemp(path);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, FILE_SIZE), ==, 0);

    /* tmpfs and some others refuse O_DIRECT: fall back to buffered. */
    int dfd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
    unlink(path);
    if (dfd >= 0) {
        close(fd);
        *direct = true;
        return dfd;
    }
    *direct = false;
    return fd;
}

/* Set up @e for engine @id; false (and the test skipped) when unusable.
 * @depth: queue depth for the engine's state, 0 for the default. */
static bool env_init(Env *e, AioEngineId id, unsigned depth)
{
    const char *why = NULL;
    StrataError *err = NULL;

    memset(e, 0, sizeof(*e));
    e->id = id;
    e->fd = -1;
    e->ops = aio_engine_get(id);
    if (!e->ops) {
        skipf("%s: engine not compiled in", engine_path_name(id));
        return false;
    }
    if (!e->ops->available(&why)) {
        skipf("%s: %s", e->ops->name, why);
        return false;
    }
    e->ctx = strata_context_new(&err);
    g_assert_null(err);

    aio_engine_test_set_queue_depth(id, depth);
    e->state = aio_engine_ctx_state(e->ops, e->ctx, &err);
    aio_engine_test_set_queue_depth(id, 0);
    g_assert_null(err);
    g_assert_nonnull(e->state);
    /* Created once per context and cached there. */
    g_assert_true(aio_engine_ctx_state(e->ops, e->ctx, NULL) == e->state);

    e->fd = open_temp_file(&e->direct);
    if (!e->direct) {
        g_test_message("O_DIRECT not supported here: buffered file");
    }
    return true;
}

static void env_cleanup(Env *e)
{
    if (e->fd >= 0) {
        close(e->fd);
    }
    if (e->ctx) {
        strata_context_free(e->ctx);
    }
    aio_engine_test_inject_short(e->id, 0, 0);
}

static AioEngineStats env_stats(Env *e)
{
    AioEngineStats st = { 0 };
    g_assert_nonnull(e->ops->get_stats);
    e->ops->get_stats(e->state, &st);
    return st;
}

static AioEngineStats stats_delta(AioEngineStats a, AioEngineStats b)
{
    return (AioEngineStats) {
        .submits = b.submits - a.submits,
        .syscalls = b.syscalls - a.syscalls,
        .completions = b.completions - a.completions,
        .reap_batches = b.reap_batches - a.reap_batches,
        .max_batch = b.max_batch,
        .queue_waits = b.queue_waits - a.queue_waits,
        .retries = b.retries - a.retries,
        .early = b.early - a.early,
        .forced_async = b.forced_async - a.forced_async,
        .spins_won = b.spins_won - a.spins_won,
    };
}

static void io_co(void *opaque)
{
    Io *io = opaque;
    Env *e = io->e;
    const struct iovec *iov = io->iovp ? io->iovp : io->iov;

    if (io->write) {
        io->ret = e->ops->co_pwritev(e->state, io->fd, io->offset, iov,
                                     io->niov, io->flags);
    } else {
        io->ret = e->ops->co_preadv(e->state, io->fd, io->offset, iov,
                                    io->niov, io->flags);
    }
    io->done = true;
    /* Atomic: the handover tests watch it from another thread. */
    g_atomic_int_add(&e->pending, -1);
}

static void env_spawn(Env *e, CoroutineEntry *fn, void *opaque)
{
    e->pending++;
    loop_co_spawn(e->ctx->loop, fn, opaque);
}

static void env_wait(Env *e)
{
    while (e->pending > 0) {
        loop_run_once(e->ctx->loop, true);
    }
}

/* One request with one buffer, run to completion. */
static int env_rw(Env *e, bool write, int fd, int64_t offset, void *buf,
                  size_t len, int flags)
{
    Io io = {
        .e = e, .write = write, .fd = fd, .offset = offset,
        .iov = { { buf, len } }, .niov = 1, .flags = flags,
    };
    env_spawn(e, io_co, &io);
    env_wait(e);
    g_assert_true(io.done);
    return io.ret;
}

static void fill_pattern(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9));
    }
}

static uint8_t *blk_alloc(size_t len)
{
    return g_aligned_alloc0(1, len, BLK);
}

/* ---- tests --------------------------------------------------------------- */

static void test_table(void)
{
    for (AioEngineId id = 0; id < AIO_ENGINE__MAX; id++) {
        const AioEngineOps *ops = aio_engine_get(id);
        if (!ops) {
            continue;
        }
        g_assert_cmpint(ops->id, ==, id);
        g_assert_cmpstr(ops->name, ==, engine_path_name(id));
        g_assert_nonnull(ops->available);
        g_assert_nonnull(ops->co_preadv);
        g_assert_nonnull(ops->co_pwritev);
    }
    g_assert_nonnull(aio_engine_get(AIO_ENGINE_THREADS));
    g_assert_true((aio_engine_get(AIO_ENGINE_NATIVE) != NULL) == CONFIG_LIBAIO);
    g_assert_true((aio_engine_get(AIO_ENGINE_IO_URING) != NULL) ==
                  CONFIG_IO_URING);
    g_assert_null(aio_engine_get(AIO_ENGINE__MAX));
}

/* A vectored write read back through a differently split vector; a read at
 * EOF returns 0 (the file driver, not the engine, zero-fills). */
static void test_roundtrip(gconstpointer data)
{
    Env e;
    if (!env_init(&e, GPOINTER_TO_INT(data), 0)) {
        return;
    }
    uint8_t *wbuf = blk_alloc(4 * BLK);
    uint8_t *rbuf = blk_alloc(4 * BLK);
    fill_pattern(wbuf, 4 * BLK, 1);

    Io w = {
        .e = &e, .write = true, .fd = e.fd, .offset = 16 * BLK, .niov = 3,
        .iov = { { wbuf, BLK }, { wbuf + BLK, 2 * BLK }, { wbuf + 3 * BLK, BLK } },
    };
    env_spawn(&e, io_co, &w);
    env_wait(&e);
    g_assert_cmpint(w.ret, ==, 4 * BLK);

    Io r = {
        .e = &e, .write = false, .fd = e.fd, .offset = 16 * BLK, .niov = 2,
        .iov = { { rbuf, 2 * BLK }, { rbuf + 2 * BLK, 2 * BLK } },
    };
    env_spawn(&e, io_co, &r);
    env_wait(&e);
    g_assert_cmpint(r.ret, ==, 4 * BLK);
    g_assert_cmpmem(rbuf, 4 * BLK, wbuf, 4 * BLK);

    g_assert_cmpint(env_rw(&e, false, e.fd, FILE_SIZE, rbuf, BLK, 0), ==, 0);

    AioEngineStats st = env_stats(&e);
    g_assert_cmpuint(st.submits, ==, 3);
    g_assert_cmpuint(st.completions, ==, 3);

    g_aligned_free(wbuf);
    g_aligned_free(rbuf);
    env_cleanup(&e);
}

#define NCONC 64

static void run_concurrent_flags(Env *e, Io *ios, uint8_t *bufs, bool write,
                                 int flags)
{
    for (int i = 0; i < NCONC; i++) {
        ios[i] = (Io) {
            .e = e, .write = write, .fd = e->fd, .offset = (int64_t)i * BLK,
            .iov = { { bufs + (size_t)i * BLK, BLK } }, .niov = 1,
            .flags = flags,
        };
        env_spawn(e, io_co, &ios[i]);
    }
    env_wait(e);
    for (int i = 0; i < NCONC; i++) {
        g_assert_true(ios[i].done);
        g_assert_cmpint(ios[i].ret, ==, BLK);
    }
}

static void run_concurrent(Env *e, Io *ios, uint8_t *bufs, bool write)
{
    run_concurrent_flags(e, ios, bufs, write, 0);
}

/* 64 writes started at once, then 64 reads of them: the data round-trips;
 * *dw and *dr get what each burst did to the engine's statistics. */
static void concurrent_roundtrip(Env *e, int flags, AioEngineStats *dw,
                                 AioEngineStats *dr)
{
    strata_context_set_aio_max_batch(e->ctx, UINT_MAX);
    uint8_t *wbufs = blk_alloc(NCONC * BLK);
    uint8_t *rbufs = blk_alloc(NCONC * BLK);
    Io *ios = g_new0(Io, NCONC);
    for (int i = 0; i < NCONC; i++) {
        fill_pattern(wbufs + (size_t)i * BLK, BLK, 100 + i);
    }

    AioEngineStats s0 = env_stats(e);
    run_concurrent_flags(e, ios, wbufs, true, flags);
    AioEngineStats s1 = env_stats(e);
    run_concurrent_flags(e, ios, rbufs, false, flags);
    AioEngineStats s2 = env_stats(e);
    g_assert_cmpmem(rbufs, NCONC * BLK, wbufs, NCONC * BLK);
    *dw = stats_delta(s0, s1);
    *dr = stats_delta(s1, s2);
    g_free(ios);
    g_aligned_free(wbufs);
    g_aligned_free(rbufs);
}

/* 64 requests started in one loop iteration: all complete, and with no
 * batch limit the io_uring/native engines hand them to the kernel in one
 * system call.  (By default, early submission may split the second burst
 * where the file completes later: see test_early_*.) */
static void test_concurrent(gconstpointer data)
{
    Env e;
    if (!env_init(&e, GPOINTER_TO_INT(data), 0)) {
        return;
    }
    AioEngineStats dw, dr, s2;
    concurrent_roundtrip(&e, 0, &dw, &dr);
    s2 = env_stats(&e);
    g_test_message("%s: writes: %" G_GUINT64_FORMAT " requests in %"
                   G_GUINT64_FORMAT " syscalls (max batch %" G_GUINT64_FORMAT
                   "), reads: %" G_GUINT64_FORMAT " in %" G_GUINT64_FORMAT,
                   e.ops->name, dw.submits, dw.syscalls, dw.max_batch,
                   dr.submits, dr.syscalls);
    g_assert_cmpuint(dw.submits, ==, NCONC);
    g_assert_cmpuint(dw.completions, ==, NCONC);
    g_assert_cmpuint(dr.submits, ==, NCONC);
    g_assert_cmpuint(dr.completions, ==, NCONC);
    if (e.id != AIO_ENGINE_THREADS) {
        g_assert_cmpuint(dw.syscalls, ==, 1);
        g_assert_cmpuint(dr.syscalls, ==, 1);
        g_assert_cmpuint(s2.max_batch, ==, NCONC);
        g_assert_cmpuint(dw.queue_waits + dr.queue_waits, ==, 0);
    }

    env_cleanup(&e);
}

/* The loop's aio-max-batch caps a batch: 64 requests with a cap of 16 go
 * out in 4 submissions of 16. */
static void test_max_batch(gconstpointer data)
{
    Env e;
    if (!env_init(&e, GPOINTER_TO_INT(data), 0)) {
        return;
    }
    if (e.id == AIO_ENGINE_THREADS) {
        g_test_skip("threads: each request is its own syscall");
        env_cleanup(&e);
        return;
    }
    uint8_t *wbufs = blk_alloc(NCONC * BLK);
    Io *ios = g_new0(Io, NCONC);
    for (int i = 0; i < NCONC; i++) {
        fill_pattern(wbufs + (size_t)i * BLK, BLK, 700 + i);
    }
    strata_context_set_aio_max_batch(e.ctx, 16);
    AioEngineStats s0 = env_stats(&e);
    run_concurrent(&e, ios, wbufs, true);
    AioEngineStats d = stats_delta(s0, env_stats(&e));
    g_assert_cmpuint(d.completions, ==, NCONC);
    g_assert_cmpuint(d.syscalls, ==, NCONC / 16);
    g_assert_cmpuint(d.max_batch, <=, 16);

    g_free(ios);
    g_aligned_free(wbufs);
    env_cleanup(&e);
}

/* A queue of 8: the 64 requests wait for room instead of failing, and no
 * batch exceeds the queue. */
static void test_queue_full(gconstpointer data)
{
    Env e;
    if (!env_init(&e, GPOINTER_TO_INT(data), 8)) {
        return;
    }
    uint8_t *wbufs = blk_alloc(NCONC * BLK);
    uint8_t *rbufs = blk_alloc(NCONC * BLK);
    Io *ios = g_new0(Io, NCONC);
    for (int i = 0; i < NCONC; i++) {
        fill_pattern(wbufs + (size_t)i * BLK, BLK, 300 + i);
    }

    run_concurrent(&e, ios, wbufs, true);
    run_concurrent(&e, ios, rbufs, false);
    g_assert_cmpmem(rbufs, NCONC * BLK, wbufs, NCONC * BLK);

    AioEngineStats st = env_stats(&e);
    g_test_message("%s depth 8: %" G_GUINT64_FORMAT " requests in %"
                   G_GUINT64_FORMAT " syscalls, max batch %" G_GUINT64_FORMAT
                   ", %" G_GUINT64_FORMAT " waited for room",
                   e.ops->name, st.submits, st.syscalls, st.max_batch,
                   st.queue_waits);
    g_assert_cmpuint(st.completions, ==, 2 * NCONC);
    if (e.id != AIO_ENGINE_THREADS) {
        g_assert_cmpuint(st.max_batch, <=, 8);
        g_assert_cmpuint(st.queue_waits, >, 0);
        g_assert_cmpuint(st.syscalls, >=, 2 * NCONC / 8);
    }

    g_free(ios);
    g_aligned_free(wbufs);
    g_aligned_free(rbufs);
    env_cleanup(&e);
}

static void test_fua(gconstpointer data)
{
    Env e;
    if (!env_init(&e, GPOINTER_TO_INT(data), 0)) {
        return;
    }
    uint8_t *wbuf = blk_alloc(2 * BLK);
    uint8_t *rbuf = blk_alloc(2 * BLK);
    fill_pattern(wbuf, 2 * BLK, 7);

    g_assert_true(e.ops->supports_fua(e.state));
    g_assert_cmpint(env_rw(&e, true, e.fd, 8 * BLK, wbuf, 2 * BLK, AIO_FUA),
                    ==, 2 * BLK);
    /* FUA on a read is meaningless and ignored, not an error. */
    g_assert_cmpint(env_rw(&e, false, e.fd, 8 * BLK, rbuf, 2 * BLK, AIO_FUA),
                    ==, 2 * BLK);
    g_assert_cmpmem(rbuf, 2 * BLK, wbuf, 2 * BLK);

    g_aligned_free(wbuf);
    g_aligned_free(rbuf);
    env_cleanup(&e);
}

/* The test hook shortens the next N successful completions; errors pass
 * through without using it up; a smaller real result wins. */
static void test_short_hook(gconstpointer data)
{
    Env e;
    if (!env_init(&e, GPOINTER_TO_INT(data), 0)) {
        return;
    }
    uint8_t *buf = blk_alloc(2 * BLK);
    fill_pattern(buf, 2 * BLK, 9);

    aio_engine_test_inject_short(e.id, 1, 512);
    g_assert_cmpint(env_rw(&e, false, -1, 0, buf, BLK, 0), ==, -EBADF);
    g_assert_cmpint(env_rw(&e, true, e.fd, 0, buf, 2 * BLK, 0), ==, 512);
    g_assert_cmpint(env_rw(&e, true, e.fd, 0, buf, 2 * BLK, 0), ==, 2 * BLK);

    aio_engine_test_inject_short(e.id, 2, 3 * BLK);
    g_assert_cmpint(env_rw(&e, false, e.fd, 0, buf, BLK, 0), ==, BLK);
    g_assert_cmpint(env_rw(&e, false, e.fd, 0, buf, 2 * BLK, 0), ==, 2 * BLK);
    /* Used up: the real result again. */
    aio_engine_test_inject_short(e.id, 1, 0);
    g_assert_cmpint(env_rw(&e, false, e.fd, 0, buf, BLK, 0), ==, 0);
    g_assert_cmpint(env_rw(&e, false, e.fd, 0, buf, BLK, 0), ==, BLK);

    g_aligned_free(buf);
    env_cleanup(&e);
}

/* Failures come back as -errno, through the engine's completion path. */
static void test_errors(gconstpointer data)
{
    Env e;
    if (!env_init(&e, GPOINTER_TO_INT(data), 0)) {
        return;
    }
    uint8_t *buf = blk_alloc(BLK);

    g_assert_cmpint(env_rw(&e, false, -1, 0, buf, BLK, 0), ==, -EBADF);
    g_assert_cmpint(env_rw(&e, true, -1, 0, buf, BLK, AIO_FUA), ==, -EBADF);

    /* A write on a read-only descriptor. */
    g_autofree char *proc = g_strdup_printf("/proc/self/fd/%d", e.fd);
    int rofd = open(proc, O_RDONLY | O_CLOEXEC);
    g_assert_cmpint(rofd, >=, 0);
    g_assert_cmpint(env_rw(&e, true, rofd, 0, buf, BLK, 0), ==, -EBADF);
    close(rofd);

    /* More elements than IOV_MAX. */
    int n = IOV_MAX + 1;
    struct iovec *many = g_new(struct iovec, n);
    for (int i = 0; i < n; i++) {
        many[i] = (struct iovec) { buf, 1 };
    }
    Io io = { .e = &e, .fd = e.fd, .iovp = many, .niov = n };
    env_spawn(&e, io_co, &io);
    env_wait(&e);
    g_assert_cmpint(io.ret, ==, -EINVAL);
    g_free(many);

    /* Only where the filesystem says it enforces an alignment: tmpfs takes
     * O_DIRECT since 6.6 but enforces none. */
    struct statx stx = { 0 };
    bool enforced = statx(e.fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
                    (stx.stx_mask & STATX_DIOALIGN) &&
                    stx.stx_dio_offset_align > 1;
    if (e.direct && enforced) {
        /* An O_DIRECT write at an offset no sector size divides.  (Reads
         * are not tested: some filesystems serve misaligned O_DIRECT reads
         * from the page cache, e.g. ext4 on 6.18 over a hole.) */
        g_assert_cmpint(env_rw(&e, true, e.fd, 1, buf, BLK, 0), ==, -EINVAL);
    } else {
        g_test_message("misaligned O_DIRECT case skipped: no O_DIRECT or "
                       "no enforced alignment reported");
    }

    /* The engine keeps working after errors. */
    g_assert_cmpint(env_rw(&e, false, e.fd, 0, buf, BLK, 0), ==, BLK);

    g_aligned_free(buf);
    env_cleanup(&e);
}

/* Read-modify-write: each coroutine's write is submitted from the
 * completion of its read. */
typedef struct Rmw {
    Env *e;
    int index;
    uint8_t *buf;
    int read_ret, write_ret;
} Rmw;

#define NRMW 32

static void rmw_co(void *opaque)
{
    Rmw *r = opaque;
    Env *e = r->e;
    struct iovec iov = { r->buf, BLK };

    r->read_ret = e->ops->co_preadv(e->state, e->fd, (int64_t)r->index * BLK,
                                    &iov, 1, 0);
    for (int i = 0; i < BLK; i++) {
        r->buf[i] ^= 0xff;
    }
    r->write_ret = e->ops->co_pwritev(e->state, e->fd,
                                      (int64_t)r->index * BLK, &iov, 1, 0);
    e->pending--;
}

/*
 * Writes submitted from completions leave with the completion handler's
 * batch: at most one submitting syscall per completion-handler run, plus the
 * first batch of reads and any early submission.
 */
static void test_chain(gconstpointer data)
{
    Env e;
    if (!env_init(&e, GPOINTER_TO_INT(data), 0)) {
        return;
    }
    uint8_t *orig = blk_alloc(NRMW * BLK);
    uint8_t *bufs = blk_alloc(NRMW * BLK);
    uint8_t *check = blk_alloc(NRMW * BLK);
    Rmw r[NRMW];

    fill_pattern(orig, NRMW * BLK, 42);
    g_assert_cmpint(env_rw(&e, true, e.fd, 0, orig, NRMW * BLK, 0), ==,
                    NRMW * BLK);

    AioEngineStats s0 = env_stats(&e);
    for (int i = 0; i < NRMW; i++) {
        r[i] = (Rmw) { .e = &e, .index = i, .buf = bufs + (size_t)i * BLK };
        env_spawn(&e, rmw_co, &r[i]);
    }
    env_wait(&e);
    AioEngineStats d = stats_delta(s0, env_stats(&e));

    for (int i = 0; i < NRMW; i++) {
        g_assert_cmpint(r[i].read_ret, ==, BLK);
        g_assert_cmpint(r[i].write_ret, ==, BLK);
    }
    g_assert_cmpint(env_rw(&e, false, e.fd, 0, check, NRMW * BLK, 0), ==,
                    NRMW * BLK);
    for (size_t i = 0; i < NRMW * BLK; i++) {
        g_assert_cmpuint(check[i], ==, (uint8_t)(orig[i] ^ 0xff));
    }

    g_test_message("%s: RMW chain: %" G_GUINT64_FORMAT " requests in %"
                   G_GUINT64_FORMAT " syscalls over %" G_GUINT64_FORMAT
                   " completion batches", e.ops->name, d.submits,
                   d.syscalls, d.reap_batches);
    g_assert_cmpuint(d.submits, ==, 2 * NRMW);
    g_assert_cmpuint(d.completions, ==, 2 * NRMW);
    if (e.id != AIO_ENGINE_THREADS) {
        /* Early submissions (block/aio-engine.h) are the only extra. */
        g_assert_cmpuint(d.syscalls, <=, 1 + d.reap_batches + d.early);
        g_assert_cmpuint(d.syscalls, <, d.submits);
    }

    g_aligned_free(orig);
    g_aligned_free(bufs);
    g_aligned_free(check);
    env_cleanup(&e);
}

/* ---- fixed buffers (engines that offer them) ---------------------------- */

typedef struct FixedIo {
    Env *e;
    bool write;
    int64_t offset;
    void *buf;
    size_t len;
    int slot;
    int flags;
    int ret;
} FixedIo;

static void fixed_co(void *opaque)
{
    FixedIo *io = opaque;
    Env *e = io->e;

    if (io->write) {
        io->ret = e->ops->co_pwritev_fixed(e->state, e->fd, io->offset,
                                           io->buf, io->len, io->slot,
                                           io->flags);
    } else {
        io->ret = e->ops->co_preadv_fixed(e->state, e->fd, io->offset,
                                          io->buf, io->len, io->slot,
                                          io->flags);
    }
    e->pending--;
}

static int env_rw_fixed(Env *e, bool write, int64_t offset, void *buf,
                        size_t len, int slot, int flags)
{
    FixedIo io = {
        .e = e, .write = write, .offset = offset, .buf = buf, .len = len,
        .slot = slot, .flags = flags,
    };
    env_spawn(e, fixed_co, &io);
    env_wait(e);
    return io.ret;
}

static void test_fixed(gconstpointer data)
{
    Env e;
    if (!env_init(&e, GPOINTER_TO_INT(data), 0)) {
        return;
    }
    if (!e.ops->register_region) {
        skipf("%s: no fixed buffers", e.ops->name);
        env_cleanup(&e);
        return;
    }
    const size_t region_len = 1024 * 1024;
    uint8_t *region = blk_alloc(region_len);

    /* Bounds are checked before anything is pinned. */
    g_assert_cmpint(e.ops->register_region(e.state, region, 0), ==, -EINVAL);
    g_assert_cmpint(e.ops->register_region(e.state, region,
                                           ((size_t)1 << 30) + BLK),
                    ==, -EINVAL);

    int slot = e.ops->register_region(e.state, region, region_len);
    if (slot < 0) {
        skipf("%s: register_region: %s", e.ops->name,
                           g_strerror(-slot));
        g_aligned_free(region);
        env_cleanup(&e);
        return;
    }
    int slot2 = e.ops->register_region(e.state, region, BLK);
    g_assert_cmpint(slot2, >=, 0);
    g_assert_cmpint(slot2, !=, slot);
    e.ops->unregister_region(e.state, slot2);

    uint8_t *src = region + 8 * BLK;
    uint8_t *dst = region + region_len / 2;
    fill_pattern(src, 16 * BLK, 77);

    g_assert_cmpint(env_rw_fixed(&e, true, 32 * BLK, src, 16 * BLK, slot,
                                 AIO_FUA), ==, 16 * BLK);
    g_assert_cmpint(env_rw_fixed(&e, false, 32 * BLK, dst, 16 * BLK, slot, 0),
                    ==, 16 * BLK);
    g_assert_cmpmem(dst, 16 * BLK, src, 16 * BLK);

    /* The normal path sees the same data. */
    uint8_t *check = blk_alloc(16 * BLK);
    g_assert_cmpint(env_rw(&e, false, e.fd, 32 * BLK, check, 16 * BLK, 0), ==,
                    16 * BLK);
    g_assert_cmpmem(check, 16 * BLK, src, 16 * BLK);
    g_aligned_free(check);

    /* A slot that is not registered. */
    g_assert_cmpint(env_rw_fixed(&e, false, 0, dst, BLK, slot2, 0), ==,
                    -EINVAL);

    e.ops->unregister_region(e.state, slot);
    g_assert_cmpint(env_rw_fixed(&e, false, 0, dst, BLK, slot, 0), ==,
                    -EINVAL);

    g_aligned_free(region);
    env_cleanup(&e);
}

/* ---- completions found right after submitting ----------------------------- */

static int open_buffered_file(unsigned seed)
{
    const char *dir = g_getenv("STRATA_AIO_TEST_DIR");
    if (!dir) {
        dir = g_file_test("/var/tmp", G_FILE_TEST_IS_DIR)
              ? "/var/tmp" : g_get_tmp_dir();
    }
    g_autofree char *path = g_build_filename(dir, "strata-aio-XXXXXX", NULL);
    int fd = g_mkstemp(path);
    g_assert_cmpint(fd, >=, 0);
    unlink(path);

    uint8_t *buf = g_malloc(FILE_SIZE);
    fill_pattern(buf, FILE_SIZE, seed);
    g_assert_cmpint(pwrite(fd, buf, FILE_SIZE, 0), ==, FILE_SIZE);
    g_free(buf);
    return fd;
}

/*
 * A request that the kernel finishes inside the submitting system call (a
 * buffered file: libaio runs buffered I/O synchronously in io_submit, and
 * io_uring serves a page-cache hit inline) is seen right after submitting.
 * A coroutine entered outside any defer section submits from inside itself
 * and, for libaio always, gets its result without yielding, with no loop
 * iteration in between.
 */
static void test_inline_no_yield(gconstpointer data)
{
    Env e;
    if (!env_init(&e, GPOINTER_TO_INT(data), 0)) {
        return;
    }
    if (e.id == AIO_ENGINE_THREADS) {
        g_test_skip("threads: completions always come from a worker");
        env_cleanup(&e);
        return;
    }
    int bfd = open_buffered_file(11);
    uint8_t *expect = g_malloc(FILE_SIZE);
    uint8_t *buf = blk_alloc(4 * BLK);
    fill_pattern(expect, FILE_SIZE, 11);

    AioEngineStats s0 = env_stats(&e);
    Io io = {
        .e = &e, .fd = bfd, .offset = 20 * BLK, .niov = 2,
        .iov = { { buf, BLK }, { buf + BLK, 3 * BLK } },
    };
    Coroutine *co = co_create(io_co, &io);
    co_set_loop(co, e.ctx->loop);
    e.pending++;
    co_enter(co);
    if (e.id == AIO_ENGINE_NATIVE) {
        /* Finished inside co_enter: no yield, no loop iteration. */
        g_assert_true(io.done);
    } else if (!io.done) {
        g_test_message("%s: this filesystem did not complete the read "
                       "inline", e.ops->name);
        env_wait(&e);
    }
    g_assert_true(io.done);
    g_assert_cmpint(io.ret, ==, 4 * BLK);
    g_assert_cmpmem(buf, 4 * BLK, expect + 20 * BLK, 4 * BLK);

    AioEngineStats d = stats_delta(s0, env_stats(&e));
    g_assert_cmpuint(d.submits, ==, 1);
    g_assert_cmpuint(d.syscalls, ==, 1);
    g_assert_cmpuint(d.completions, ==, 1);
    /* Nothing is left behind for the completion handler. */
    loop_run_once(e.ctx->loop, false);
    g_assert_cmpuint(env_stats(&e).completions, ==, s0.completions + 1);

    close(bfd);
    g_free(expect);
    g_aligned_free(buf);
    env_cleanup(&e);
}

/*
 * aio-max-batch 4: the fourth coroutine submits the batch from inside
 * itself.  The three others' requests complete in that io_submit (buffered
 * libaio) and are woken through the loop, not entered from the fourth
 * coroutine; the fourth sees its own result without yielding.  Every result
 * is right and each coroutine runs to its end exactly once.
 */
typedef struct BatchIo {
    Io io;
    int entries_after;      /* coroutine code that ran after the request */
} BatchIo;

static void batch_io_co(void *opaque)
{
    BatchIo *b = opaque;
    Env *e = b->io.e;

    b->io.ret = e->ops->co_preadv(e->state, b->io.fd, b->io.offset,
                                  b->io.iov, b->io.niov, 0);
    /* The submitting coroutine must not be running another coroutine's
     * completion on its stack: each one continues here, by itself. */
    g_assert_false(b->io.done);
    b->io.done = true;
    b->entries_after++;
    e->pending--;
}

static void test_inline_batch_wakes(gconstpointer data)
{
    Env e;
    if (!env_init(&e, GPOINTER_TO_INT(data), 0)) {
        return;
    }
    if (e.id == AIO_ENGINE_THREADS) {
        g_test_skip("threads: each request is its own syscall");
        env_cleanup(&e);
        return;
    }
    enum { N = 4 };
    int bfd = open_buffered_file(23);
    uint8_t *expect = g_malloc(FILE_SIZE);
    uint8_t *bufs = blk_alloc(N * BLK);
    BatchIo b[N];
    fill_pattern(expect, FILE_SIZE, 23);
    strata_context_set_aio_max_batch(e.ctx, N);

    AioEngineStats s0 = env_stats(&e);
    for (int i = 0; i < N; i++) {
        b[i] = (BatchIo) { .io = {
            .e = &e, .fd = bfd, .offset = (int64_t)(N - i) * 3 * BLK,
            .iov = { { bufs + (size_t)i * BLK, BLK } }, .niov = 1,
        } };
        env_spawn(&e, batch_io_co, &b[i]);
    }
    env_wait(&e);
    AioEngineStats d = stats_delta(s0, env_stats(&e));

    for (int i = 0; i < N; i++) {
        g_assert_true(b[i].io.done);
        g_assert_cmpint(b[i].entries_after, ==, 1);
        g_assert_cmpint(b[i].io.ret, ==, BLK);
        g_assert_cmpmem(bufs + (size_t)i * BLK, BLK,
                        expect + b[i].io.offset, BLK);
    }
    g_assert_cmpuint(d.submits, ==, N);
    g_assert_cmpuint(d.completions, ==, N);
    g_assert_cmpuint(d.syscalls, ==, 1);
    g_assert_cmpuint(d.max_batch, ==, N);

    close(bfd);
    g_free(expect);
    g_aligned_free(bufs);
    env_cleanup(&e);
}

/*
 * Random mix: coroutines write, then read back and check, blocks of their
 * own, some on the (possibly O_DIRECT, completing later) test file and some
 * on a buffered file (completing inside the submitting call), so both ways
 * of reaping run interleaved on one engine state.  Seed:
 * STRATA_AIO_TEST_SEED (default fixed).
 */
#define MIX_COS 24
#define MIX_OPS 40
#define MIX_BLOCKS 8            /* blocks owned by each coroutine */

typedef struct MixCo {
    Env *e;
    int index;
    int fds[2];
    GRand *rand;
    uint8_t *wbuf, *rbuf;
    uint8_t *model;             /* [2][MIX_BLOCKS * BLK]: last data written */
    int failures;
} MixCo;

static void mix_co(void *opaque)
{
    MixCo *m = opaque;
    Env *e = m->e;

    for (int op = 0; op < MIX_OPS; op++) {
        int which = g_rand_int_range(m->rand, 0, 2);
        int blk = g_rand_int_range(m->rand, 0, MIX_BLOCKS);
        int64_t offset = ((int64_t)m->index * MIX_BLOCKS + blk) * BLK;
        uint8_t *model = m->model + ((size_t)which * MIX_BLOCKS + blk) * BLK;
        struct iovec iov;

        if (g_rand_boolean(m->rand)) {
            fill_pattern(m->wbuf, BLK, g_rand_int(m->rand));
            iov = (struct iovec) { m->wbuf, BLK };
            int ret = e->ops->co_pwritev(e->state, m->fds[which], offset,
                                         &iov, 1, 0);
            g_assert_cmpint(ret, ==, BLK);
            memcpy(model, m->wbuf, BLK);
        } else {
            iov = (struct iovec) { m->rbuf, BLK };
            int ret = e->ops->co_preadv(e->state, m->fds[which], offset,
                                        &iov, 1, 0);
            g_assert_cmpint(ret, ==, BLK);
            if (memcmp(m->rbuf, model, BLK) != 0) {
                m->failures++;
            }
        }
    }
    e->pending--;
}

static void test_mixed_reaping(gconstpointer data)
{
    Env e;
    if (!env_init(&e, GPOINTER_TO_INT(data), 0)) {
        return;
    }
    const char *seed_env = g_getenv("STRATA_AIO_TEST_SEED");
    guint32 seed = seed_env ? (guint32)g_ascii_strtoull(seed_env, NULL, 0)
                            : 0x5eed;
    int bfd = open_buffered_file(0);
    MixCo *m = g_new0(MixCo, MIX_COS);
    uint8_t *bufs = blk_alloc((size_t)MIX_COS * 2 * BLK);
    /* Aligned: e.fd may be O_DIRECT. */
    uint8_t *zero = blk_alloc(MIX_COS * MIX_BLOCKS * BLK);
    uint8_t *initial = g_malloc(FILE_SIZE);

    G_STATIC_ASSERT(MIX_COS * MIX_BLOCKS * BLK <= FILE_SIZE);
    /* Both files start with known contents: zeroes and pattern 0. */
    g_assert_cmpint(pwrite(e.fd, zero, MIX_COS * MIX_BLOCKS * BLK, 0), ==,
                    MIX_COS * MIX_BLOCKS * BLK);
    fill_pattern(initial, FILE_SIZE, 0);

    for (int i = 0; i < MIX_COS; i++) {
        m[i] = (MixCo) {
            .e = &e, .index = i, .fds = { e.fd, bfd },
            .rand = g_rand_new_with_seed(seed + i),
            .wbuf = bufs + (size_t)i * 2 * BLK,
            .rbuf = bufs + (size_t)i * 2 * BLK + BLK,
            .model = g_malloc0(2 * MIX_BLOCKS * BLK),
        };
        memcpy(m[i].model + MIX_BLOCKS * BLK,
               initial + (size_t)i * MIX_BLOCKS * BLK, MIX_BLOCKS * BLK);
        env_spawn(&e, mix_co, &m[i]);
    }
    env_wait(&e);

    AioEngineStats st = env_stats(&e);
    g_test_message("%s: mixed: %" G_GUINT64_FORMAT " requests in %"
                   G_GUINT64_FORMAT " syscalls, %" G_GUINT64_FORMAT
                   " reap batches", e.ops->name, st.submits, st.syscalls,
                   st.reap_batches);
    g_assert_cmpuint(st.submits, ==, MIX_COS * MIX_OPS);
    g_assert_cmpuint(st.completions, ==, MIX_COS * MIX_OPS);
    for (int i = 0; i < MIX_COS; i++) {
        if (m[i].failures) {
            g_test_message("seed %u (STRATA_AIO_TEST_SEED): coroutine %d read "
                           "back wrong data %d times", seed, i, m[i].failures);
        }
        g_assert_cmpint(m[i].failures, ==, 0);
        g_rand_free(m[i].rand);
        g_free(m[i].model);
    }

    close(bfd);
    g_free(m);
    g_aligned_free(zero);
    g_free(initial);
    g_aligned_free(bufs);
    env_cleanup(&e);
}

/*
 * libaio without the user-space completion ring: the io_getevents path
 * (used when the kernel's ring header is not one we know) still delivers
 * every completion, batched, with the right data.
 */
static void test_native_no_user_ring(void)
{
    /* libc's setenv, not g_setenv, which warns once threads exist: the
     * thread pools' idle workers never read the environment, and the
     * engine reads the variable only when it creates its state. */
    setenv("STRATA_AIO_NATIVE_NO_USER_RING", "1", 1);
    test_concurrent(GINT_TO_POINTER(AIO_ENGINE_NATIVE));
    test_chain(GINT_TO_POINTER(AIO_ENGINE_NATIVE));
    test_mixed_reaping(GINT_TO_POINTER(AIO_ENGINE_NATIVE));
    unsetenv("STRATA_AIO_NATIVE_NO_USER_RING");
}

/* ---- io_uring: one issuer --------------------------------------------- */

typedef struct ThreadIo {
    FixedIo fixed;              /* .e, offsets and buffer */
    bool use_fixed;
    int ret;
    int done;                   /* atomic: set by the loop thread */
} ThreadIo;

static void thread_io_co(void *opaque)
{
    ThreadIo *t = opaque;
    Env *e = t->fixed.e;

    if (t->use_fixed) {
        e->pending++;           /* fixed_co counts itself done */
        fixed_co(&t->fixed);
        t->ret = t->fixed.ret;
    } else {
        struct iovec iov = { t->fixed.buf, t->fixed.len };
        t->ret = t->fixed.write
            ? e->ops->co_pwritev(e->state, e->fd, t->fixed.offset, &iov, 1, 0)
            : e->ops->co_preadv(e->state, e->fd, t->fixed.offset, &iov, 1, 0);
    }
    g_atomic_int_set(&t->done, 1);
}

static void thread_io_spawn(void *opaque)
{
    ThreadIo *t = opaque;
    loop_co_spawn(t->fixed.e->ctx->loop, thread_io_co, t);
}

/* Run one request in the context's loop thread and wait for it. */
static int thread_rw(Env *e, bool write, int64_t offset, void *buf,
                     size_t len, int slot)
{
    ThreadIo t = {
        .fixed = { .e = e, .write = write, .offset = offset, .buf = buf,
                   .len = len, .slot = slot },
        .use_fixed = slot >= 0,
    };
    strata_context_call(e->ctx, thread_io_spawn, &t);
    while (!g_atomic_int_get(&t.done)) {
        g_usleep(1000);
    }
    return t.ret;
}

/*
 * A single-issuer ring binds to the thread of its first submission; when
 * the context's loop moves to a thread of its own and back, requests and
 * fixed buffers keep working (the ring is made again, its buffers
 * registered again), and the data is right throughout.
 */
static void test_uring_loop_moves(void)
{
    Env e;
    if (!env_init(&e, AIO_ENGINE_IO_URING, 0)) {
        return;
    }
    StrataError *err = NULL;
    const size_t region_len = 64 * BLK;
    uint8_t *region = blk_alloc(region_len);
    uint8_t *buf = blk_alloc(4 * BLK);
    int slot = e.ops->register_region(e.state, region, region_len);

    fill_pattern(buf, 4 * BLK, 1);
    g_assert_cmpint(env_rw(&e, true, e.fd, 0, buf, 4 * BLK, 0), ==, 4 * BLK);

    for (int round = 0; round < 2; round++) {
        g_assert_true(strata_context_start_thread(e.ctx, &err));
        g_assert_null(err);
        memset(buf, 0, 4 * BLK);
        g_assert_cmpint(thread_rw(&e, false, 0, buf, 4 * BLK, -1), ==, 4 * BLK);
        uint8_t *want = blk_alloc(4 * BLK);
        fill_pattern(want, 4 * BLK, 1 + round);
        g_assert_cmpmem(buf, 4 * BLK, want, 4 * BLK);
        if (slot >= 0) {
            fill_pattern(region, 4 * BLK, 2 + round);
            g_assert_cmpint(thread_rw(&e, true, 0, region, 4 * BLK, slot), ==,
                            4 * BLK);
        } else {
            fill_pattern(buf, 4 * BLK, 2 + round);
            g_assert_cmpint(thread_rw(&e, true, 0, buf, 4 * BLK, -1), ==,
                            4 * BLK);
        }
        strata_context_stop_thread(e.ctx);

        /* Back in this thread. */
        fill_pattern(want, 4 * BLK, 2 + round);
        g_assert_cmpint(env_rw(&e, false, e.fd, 0, buf, 4 * BLK, 0), ==,
                        4 * BLK);
        g_assert_cmpmem(buf, 4 * BLK, want, 4 * BLK);
        g_aligned_free(want);
#if CONFIG_IO_URING
        /* The ring made again here is this thread's loop's waiter again
         * (the other thread's gave the role up with the loop). */
        g_assert_true(aio_uring_test_self_wait(e.state));
#endif
    }
    if (slot >= 0) {
        e.ops->unregister_region(e.state, slot);
    }
    g_aligned_free(region);
    g_aligned_free(buf);
    env_cleanup(&e);
}

/* A state made for one thread (thread_init) takes requests at once. */
static void test_uring_thread_state(void)
{
    Env e;
    if (!env_init(&e, AIO_ENGINE_IO_URING, 0)) {
        return;
    }
    StrataError *err = NULL;
    void *ctx_state = e.state;
    e.state = e.ops->thread_init(e.ctx->loop, &err);
    g_assert_null(err);
    g_assert_nonnull(e.state);

    uint8_t *wbuf = blk_alloc(BLK), *rbuf = blk_alloc(BLK);
    fill_pattern(wbuf, BLK, 9);
    g_assert_cmpint(env_rw(&e, true, e.fd, BLK, wbuf, BLK, 0), ==, BLK);
    g_assert_cmpint(env_rw(&e, false, e.fd, BLK, rbuf, BLK, 0), ==, BLK);
    g_assert_cmpmem(rbuf, BLK, wbuf, BLK);
    e.ops->ctx_cleanup(e.state);
    e.state = ctx_state;
    g_aligned_free(wbuf);
    g_aligned_free(rbuf);
    env_cleanup(&e);
}

/*
 * The native engine's availability probe costs no io_destroy (~50 ms, an
 * RCU grace period): its kernel context is kept and handed to the first
 * state, and a freed state's idle context to the next one.
 */
static void test_native_probe_reused(void)
{
#if CONFIG_LIBAIO
    const AioEngineOps *ops = aio_engine_get(AIO_ENGINE_NATIVE);
    const char *why = NULL;

    if (!ops->available(&why)) {
        g_test_skip(why);
        return;
    }
    unsigned before = aio_linux_test_setup_calls();
    for (int i = 0; i < 3; i++) {
        Env e;
        g_assert_true(env_init(&e, AIO_ENGINE_NATIVE, 0));
        env_cleanup(&e);
    }
    /* Two states at once: the second makes a context of its own. */
    Env a, b;
    g_assert_true(env_init(&a, AIO_ENGINE_NATIVE, 0));
    g_assert_true(env_init(&b, AIO_ENGINE_NATIVE, 0));
    g_assert_cmpuint(aio_linux_test_setup_calls(), ==, before + 1);
    uint8_t *wbuf = blk_alloc(BLK), *rbuf = blk_alloc(BLK);
    Env *both[] = { &a, &b };
    for (int i = 0; i < 2; i++) {
        fill_pattern(wbuf, BLK, i + 1);
        g_assert_cmpint(env_rw(both[i], true, both[i]->fd, 0, wbuf, BLK, 0),
                        ==, BLK);
        g_assert_cmpint(env_rw(both[i], false, both[i]->fd, 0, rbuf, BLK, 0),
                        ==, BLK);
        g_assert_cmpmem(rbuf, BLK, wbuf, BLK);
    }
    g_aligned_free(wbuf);
    g_aligned_free(rbuf);
    env_cleanup(&b);
    env_cleanup(&a);
#else
    g_test_skip("libaio not compiled in");
#endif
}

/* ---- native: the loop's waiter ------------------------------------------ */

#if CONFIG_LIBAIO
typedef struct WakeFlag {
    Loop *loop;
    int fired;                  /* atomic */
} WakeFlag;

static void wake_flag_cb(void *opaque)
{
    g_atomic_int_set(&((WakeFlag *)opaque)->fired, 1);
}

/* Another thread: after a moment, a one-shot callback on the loop. */
static gpointer remote_oneshot_thread(gpointer opaque)
{
    WakeFlag *w = opaque;

    g_usleep(50 * 1000);
    loop_oneshot(w->loop, wake_flag_cb, w);
    return NULL;
}

static void run_until_fired(Loop *loop, WakeFlag *w)
{
    int64_t deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;

    while (!g_atomic_int_get(&w->fired)) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        loop_run_once(loop, true);
    }
}
#endif

/* Whether @e's engine state is its loop's waiter; false for threads. */
static bool env_self_wait(Env *e)
{
    switch (e->id) {
#if CONFIG_LIBAIO
    case AIO_ENGINE_NATIVE:
        return aio_linux_test_self_wait(e->state);
#endif
#if CONFIG_IO_URING
    case AIO_ENGINE_IO_URING:
        return aio_uring_test_self_wait(e->state);
#endif
    default:
        return false;
    }
}

/* env_init() for the engines that can be a loop's waiter; false (the
 * test skipped, saying why) for the others. */
static bool waiter_env_init(Env *e, gconstpointer data)
{
    if (!env_init(e, GPOINTER_TO_INT(data), 0)) {
        return false;
    }
    if (e->id == AIO_ENGINE_THREADS) {
        g_test_skip("threads: completions come through the thread pool's fd");
        env_cleanup(e);
        return false;
    }
    return true;
}

/*
 * Where the engine is its loop's waiter, the loop sleeps in the engine's
 * own wait (io_getevents, io_uring_enter), and everything that used to
 * end an epoll_wait still ends that sleep: a callback scheduled by another
 * thread, a timer, and completions (the requests around them).
 */
static void test_waiter_wakes(gconstpointer data)
{
#if CONFIG_LIBAIO || CONFIG_IO_URING
    Env e;
    if (!waiter_env_init(&e, data)) {
        return;
    }
    Loop *loop = e.ctx->loop;

    uint8_t *wbuf = blk_alloc(BLK), *rbuf = blk_alloc(BLK);
    fill_pattern(wbuf, BLK, 7);
    g_assert_cmpint(env_rw(&e, true, e.fd, 0, wbuf, BLK, 0), ==, BLK);
    /* A context's io_uring ring becomes the waiter when its first
     * submission binds it to the loop's thread. */
    g_assert_true(env_self_wait(&e));

    /* Nothing in flight: only the poll on the epoll fd can end the sleep. */
    WakeFlag remote = { .loop = loop };
    GThread *t = g_thread_new("remote", remote_oneshot_thread, &remote);
    run_until_fired(loop, &remote);
    g_thread_join(t);

    WakeFlag timer = { .loop = loop };
    LoopTimer lt;
    loop_timer_init(&lt, loop, wake_flag_cb, &timer);
    loop_timer_mod(&lt, clock_ns() + 20 * 1000 * 1000);
    run_until_fired(loop, &timer);

    g_assert_cmpint(env_rw(&e, false, e.fd, 0, rbuf, BLK, 0), ==, BLK);
    g_assert_cmpmem(rbuf, BLK, wbuf, BLK);
    g_aligned_free(wbuf);
    g_aligned_free(rbuf);
    env_cleanup(&e);
#else
    g_test_skip("neither libaio nor io_uring compiled in");
#endif
}

/*
 * A GLib source for the loop takes the waiter role away (GLib polls the
 * epoll set itself): requests submitted before, possibly still in flight
 * without the engine's fd in the epoll set, and requests submitted after,
 * all complete.
 */
static void test_waiter_detach(gconstpointer data)
{
#if CONFIG_LIBAIO || CONFIG_IO_URING
    Env e;
    if (!waiter_env_init(&e, data)) {
        return;
    }
    uint8_t *one = blk_alloc(BLK);
    g_assert_cmpint(env_rw(&e, false, e.fd, 0, one, BLK, 0), ==, BLK);
    g_aligned_free(one);
    g_assert_true(env_self_wait(&e));
    uint8_t *wbufs = blk_alloc(NCONC * BLK);
    uint8_t *rbufs = blk_alloc(NCONC * BLK);
    Io *ios = g_new0(Io, NCONC);
    for (int i = 0; i < NCONC; i++) {
        fill_pattern(wbufs + (size_t)i * BLK, BLK, 300 + i);
        ios[i] = (Io) {
            .e = &e, .write = true, .fd = e.fd, .offset = (int64_t)i * BLK,
            .iov = { { wbufs + (size_t)i * BLK, BLK } }, .niov = 1,
        };
        env_spawn(&e, io_co, &ios[i]);
    }
    /* One iteration that does not sleep: the writes go out. */
    loop_run_once(e.ctx->loop, false);
    g_test_message("%d of %d writes in flight at the detach", e.pending,
                   NCONC);

    GSource *src = loop_create_gsource(e.ctx->loop);
    g_assert_false(env_self_wait(&e));
    env_wait(&e);
    for (int i = 0; i < NCONC; i++) {
        g_assert_cmpint(ios[i].ret, ==, BLK);
    }
    run_concurrent(&e, ios, rbufs, false);
    g_assert_cmpmem(rbufs, NCONC * BLK, wbufs, NCONC * BLK);
    g_source_unref(src);

    g_free(ios);
    g_aligned_free(wbufs);
    g_aligned_free(rbufs);
    env_cleanup(&e);
#else
    g_test_skip("neither libaio nor io_uring compiled in");
#endif
}

/* The concurrent, chain and mixed-reaping cases of @id with the
 * environment switch @name set to 1 (read when engine states are made);
 * unset after. */
static void run_with_env_switch(const char *name, AioEngineId id)
{
    /* libc's setenv: see test_native_no_user_ring. */
    setenv(name, "1", 1);
    test_concurrent(GINT_TO_POINTER(id));
    test_chain(GINT_TO_POINTER(id));
    test_mixed_reaping(GINT_TO_POINTER(id));
    unsetenv(name);
}

/* STRATA_IO_URING_EPOLL=1: the ring fd in the epoll set, as on a loop that
 * has another waiter or a GLib source. */
static void test_uring_epoll_mode(void)
{
#if CONFIG_IO_URING
    run_with_env_switch("STRATA_IO_URING_EPOLL", AIO_ENGINE_IO_URING);
#else
    g_test_skip("io_uring not compiled in");
#endif
}

/*
 * DEFER_TASKRUN (block/aio-io_uring.c): used where the kernel has it (6.1+,
 * probed here with a ring of our own), and the rings without it still
 * work (STRATA_IO_URING_NO_DEFER_TASKRUN=1, as on older kernels).  Its
 * other modes run in the epoll-mode, waiter and loop-moves-thread tests.
 */
static void test_uring_defer_taskrun(void)
{
#if CONFIG_IO_URING
    struct io_uring probe;
    struct io_uring_params params = {
        .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
    };
    bool kernel_has = io_uring_queue_init_params(4, &probe, &params) == 0;
    if (kernel_has) {
        io_uring_queue_exit(&probe);
    }

    Env e;
    if (!env_init(&e, AIO_ENGINE_IO_URING, 0)) {
        return;
    }
    uint8_t *one = blk_alloc(BLK);
    g_assert_cmpint(env_rw(&e, false, e.fd, 0, one, BLK, 0), ==, BLK);
    g_assert_true(aio_uring_test_defer(e.state) == kernel_has);
    g_aligned_free(one);
    env_cleanup(&e);

    setenv("STRATA_IO_URING_NO_DEFER_TASKRUN", "1", 1);
    if (env_init(&e, AIO_ENGINE_IO_URING, 0)) {
        g_assert_false(aio_uring_test_defer(e.state));
        env_cleanup(&e);
    }
    unsetenv("STRATA_IO_URING_NO_DEFER_TASKRUN");
    run_with_env_switch("STRATA_IO_URING_NO_DEFER_TASKRUN",
                        AIO_ENGINE_IO_URING);
#else
    g_test_skip("io_uring not compiled in");
#endif
}

/* Bind @e's engine with one read of its file, then start @n one-byte reads
 * of the pipe @rfd into @got and run one iteration: they wait in the
 * kernel. */
static void start_pipe_reads(Env *e, Io *ios, char *got, int n, int rfd)
{
    uint8_t *one = blk_alloc(BLK);
    g_assert_cmpint(env_rw(e, false, e->fd, 0, one, BLK, 0), ==, BLK);
    g_aligned_free(one);
    for (int i = 0; i < n; i++) {
        ios[i] = (Io) {
            .e = e, .fd = rfd, .iov = { { &got[i], 1 } }, .niov = 1,
        };
        env_spawn(e, io_co, &ios[i]);
    }
    loop_run_once(e->ctx->loop, false);
    g_assert_cmpint(e->pending, ==, n);
}

/*
 * A GLib source taken while io_uring requests wait in the kernel (reads
 * of an empty pipe, which complete only when written): the detach must
 * not wait for them (the loop stays in this thread), and their completions,
 * also those that happened just before it, then come through the epoll
 * set (a DEFER_TASKRUN ring's registered eventfd, or the ring fd).
 */
static void test_uring_gsource_pending(void)
{
    Env e;
    if (!env_init(&e, AIO_ENGINE_IO_URING, 0)) {
        return;
    }
    int p[2];
    g_assert_cmpint(pipe2(p, O_CLOEXEC), ==, 0);
    Io ios[4];
    char got[4] = { 0 };
    start_pipe_reads(&e, ios, got, 4, p[0]);
    g_assert_true(env_self_wait(&e));

    /* Two complete before the detach, unseen: a DEFER_TASKRUN ring holds
     * them as task work, and an eventfd registered after that would hear
     * of none of them, nor of the two after. */
    g_assert_cmpint(write(p[1], "wx", 2), ==, 2);
    GSource *src = loop_create_gsource(e.ctx->loop);   /* must return */
    g_assert_false(env_self_wait(&e));
    g_assert_cmpint(write(p[1], "yz", 2), ==, 2);
    env_wait(&e);
    for (int i = 0; i < 4; i++) {
        g_assert_cmpint(ios[i].ret, ==, 1);
    }
    g_source_unref(src);
    close(p[0]);
    close(p[1]);
    env_cleanup(&e);
}

/*
 * An io_uring ring that is not its loop's waiter, with requests in flight
 * (reads of an empty pipe) when the loop moves to a thread of its own:
 * the requests still complete there.  A DEFER_TASKRUN ring's completions
 * can be posted only by the thread that submitted, so the old owner waits
 * for them before the handover (uring_on_release, a loop release hook);
 * the pipe is written from here, while the old owner waits.  Two ways to
 * not be the waiter: another engine's state took the role first (native
 * on the same context), or STRATA_IO_URING_EPOLL=1.
 */
typedef struct PipeFeed {
    int fd;
    const char *bytes;
} PipeFeed;

static gpointer pipe_feed_later(gpointer opaque)
{
    PipeFeed *pf = opaque;

    g_usleep(20 * 1000);
    g_assert_cmpint(write(pf->fd, pf->bytes, strlen(pf->bytes)), ==,
                    (ssize_t)strlen(pf->bytes));
    return NULL;
}

static void uring_handover_not_waiter(bool native_first)
{
    Env e;
    if (!env_init(&e, AIO_ENGINE_IO_URING, 0)) {
        return;
    }
    if (native_first) {
        const AioEngineOps *native = aio_engine_get(AIO_ENGINE_NATIVE);
        if (!native || !native->available(NULL)) {
            g_test_message("native engine unusable: epoll case only");
            env_cleanup(&e);
            return;
        }
        void *ns = aio_engine_ctx_state(native, e.ctx, NULL);
        g_assert_true(aio_linux_test_self_wait(ns));
    } else {
        setenv("STRATA_IO_URING_EPOLL", "1", 1);
    }
    int p[2];
    g_assert_cmpint(pipe2(p, O_CLOEXEC), ==, 0);
    Io ios[2];
    char got[2] = { 0 };
    start_pipe_reads(&e, ios, got, 2, p[0]);
    g_assert_false(env_self_wait(&e));

    PipeFeed pf = { .fd = p[1], .bytes = "ab" };
    GThread *feeder = g_thread_new("feed", pipe_feed_later, &pf);
    StrataError *err = NULL;
    g_assert_true(strata_context_start_thread(e.ctx, &err));
    for (int i = 0; i < 1000 && g_atomic_int_get(&e.pending) > 0; i++) {
        g_usleep(10 * 1000);
    }
    g_assert_cmpint(g_atomic_int_get(&e.pending), ==, 0);
    g_assert_cmpint(ios[0].ret, ==, 1);
    g_assert_cmpint(ios[1].ret, ==, 1);
    g_thread_join(feeder);
    strata_context_stop_thread(e.ctx);
    unsetenv("STRATA_IO_URING_EPOLL");
    close(p[0]);
    close(p[1]);
    env_cleanup(&e);
}

static void test_uring_handover_native_waiter(void)
{
    uring_handover_not_waiter(true);
}

static void test_uring_handover_epoll(void)
{
    uring_handover_not_waiter(false);
}

/* ---- early submission (block/aio-engine.h) ----------------------------- */

/* The rule itself: no early submission before a submission has shown a
 * peak of AIO_EARLY_MIN_PEAK; then a quarter of the peak, at most
 * AIO_EARLY_MAX_BATCH; off while submissions complete inside the call,
 * counting only their own requests. */
static void test_early_policy(void)
{
    AioEarly e;

    g_unsetenv("STRATA_AIO_NO_EARLY_SUBMIT");
    aio_early_init(&e);
    g_assert_false(aio_early_submit_now(&e, 1000));

    /* A first burst of 8 with nothing out: below the minimum peak. */
    aio_early_flush_begin(&e, 8, 0);
    aio_early_flush_end(&e);
    g_assert_false(aio_early_submit_now(&e, 8));

    /* 24 queued with 8 out: a peak of 32, so a quarter is 8. */
    unsigned g = aio_early_gen(&e);
    aio_early_flush_begin(&e, 24, 8);
    g_assert_cmpuint(aio_early_gen(&e), !=, g);
    aio_early_flush_end(&e);
    g_assert_false(aio_early_submit_now(&e, 7));
    g_assert_true(aio_early_submit_now(&e, 8));

    /* Completions of older requests reaped right after a submission do
     * not make it inline ... */
    unsigned own = aio_early_gen(&e);
    aio_early_flush_begin(&e, 8, 24);
    for (int i = 0; i < 8; i++) {
        aio_early_reaped(&e, own - 1);
    }
    aio_early_flush_end(&e);
    g_assert_true(aio_early_submit_now(&e, 8));

    /* ... its own do: half or more reaped at once turns the rule off ... */
    own = aio_early_gen(&e);
    aio_early_flush_begin(&e, 8, 0);
    for (int i = 0; i < 4; i++) {
        aio_early_reaped(&e, own);
    }
    aio_early_flush_end(&e);
    g_assert_false(aio_early_submit_now(&e, 32));

    /* ... and a later submission that completes outside the call turns it
     * on again.  Completions reaped after that look do not count. */
    own = aio_early_gen(&e);
    aio_early_flush_begin(&e, 8, 0);
    aio_early_reaped(&e, own);
    aio_early_flush_end(&e);
    g_assert_true(aio_early_submit_now(&e, 8));
    for (int i = 0; i < 7; i++) {
        aio_early_reaped(&e, own);
    }
    g_assert_true(aio_early_submit_now(&e, 8));

    /* A deep load is capped. */
    aio_early_flush_begin(&e, 200, 0);
    aio_early_flush_end(&e);
    g_assert_false(aio_early_submit_now(&e, AIO_EARLY_MAX_BATCH - 1));
    g_assert_true(aio_early_submit_now(&e, AIO_EARLY_MAX_BATCH));

    /* The A/B switch. */
    g_setenv("STRATA_AIO_NO_EARLY_SUBMIT", "1", true);
    aio_early_init(&e);
    g_unsetenv("STRATA_AIO_NO_EARLY_SUBMIT");
    aio_early_flush_begin(&e, 64, 0);
    aio_early_flush_end(&e);
    g_assert_false(aio_early_submit_now(&e, 64));
}

#define NEARLY 32

/* Start NEARLY one-byte reads of @fd in one loop iteration and run that
 * iteration; returns the engine's counters for it. */
static AioEngineStats early_burst(Env *e, Io *ios, char *bytes, int fd)
{
    AioEngineStats s0 = env_stats(e);
    for (int i = 0; i < NEARLY; i++) {
        ios[i] = (Io) {
            .e = e, .fd = fd, .iov = { { &bytes[i], 1 } }, .niov = 1,
        };
        env_spawn(e, io_co, &ios[i]);
    }
    loop_run_once(e->ctx->loop, false);
    return stats_delta(s0, env_stats(e));
}

/* io_uring reads of an empty pipe (see early_burst), and the letters
 * a writer sends them, several of each. */
typedef struct PipeBurst {
    Env e;
    int p[2];
    Io ios[NEARLY];
    char got[NEARLY], data[NEARLY];
} PipeBurst;

static bool pipe_burst_init(PipeBurst *b)
{
    if (!env_init(&b->e, AIO_ENGINE_IO_URING, 0)) {
        return false;
    }
    g_assert_cmpint(pipe2(b->p, O_CLOEXEC), ==, 0);
    for (int i = 0; i < NEARLY; i++) {
        b->data[i] = (char)('a' + i % 26);
    }
    return true;
}

/* Each read of the burst took one byte; together, all that was sent. */
static void pipe_burst_check(const PipeBurst *b)
{
    int seen[26] = { 0 }, want[26] = { 0 };

    for (int i = 0; i < NEARLY; i++) {
        g_assert_cmpint(b->ios[i].ret, ==, 1);
        seen[b->got[i] - 'a']++;
        want[b->data[i] - 'a']++;
    }
    g_assert_cmpmem(seen, sizeof(seen), want, sizeof(want));
}

static void pipe_burst_cleanup(PipeBurst *b)
{
    close(b->p[0]);
    close(b->p[1]);
    env_cleanup(&b->e);
}

/*
 * io_uring on a file that completes later: reads of an empty pipe, which
 * io_uring parks on a poll.  The first burst of 32 leaves whole (no peak
 * yet); once they are done, a second burst leaves in quarters of that
 * peak, each as soon as it is queued.  Every read gets its byte.
 */
static void test_early_async_burst(void)
{
    PipeBurst b;
    if (!pipe_burst_init(&b)) {
        return;
    }
    for (int round = 0; round < 2; round++) {
        memset(b.got, 0, sizeof(b.got));
        AioEngineStats d = early_burst(&b.e, b.ios, b.got, b.p[0]);
        g_test_message("round %d: %" G_GUINT64_FORMAT " requests in %"
                       G_GUINT64_FORMAT " syscalls, %" G_GUINT64_FORMAT
                       " early", round, d.submits, d.syscalls, d.early);
        g_assert_cmpuint(d.submits, ==, NEARLY);
        if (round == 0) {
            g_assert_cmpuint(d.syscalls, ==, 1);
            g_assert_cmpuint(d.early, ==, 0);
        } else {
            g_assert_cmpuint(d.early, ==, NEARLY / (NEARLY / 4));
            g_assert_cmpuint(d.syscalls, ==, d.early);
        }
        g_assert_cmpint(b.e.pending, ==, NEARLY);
        g_assert_cmpint(write(b.p[1], b.data, NEARLY), ==, NEARLY);
        env_wait(&b.e);
        pipe_burst_check(&b);
    }
    pipe_burst_cleanup(&b);
}

/* The spin before a sleep (block/aio-engine.h): from 16 in flight, never
 * longer than the loop's own timeout, none when the loop must not sleep. */
static void test_spin_policy(void)
{
    aio_spin_test_set_ns(5000);
    g_assert_cmpint(aio_spin_ns(1, -1), ==, 0);
    g_assert_cmpint(aio_spin_ns(15, -1), ==, 0);
    g_assert_cmpint(aio_spin_ns(16, -1), ==, 5000);
    g_assert_cmpint(aio_spin_ns(32, 1000000), ==, 5000);
    g_assert_cmpint(aio_spin_ns(32, 1200), ==, 1200);
    g_assert_cmpint(aio_spin_ns(32, 0), ==, 0);
    aio_spin_test_set_ns(0);
    g_assert_cmpint(aio_spin_ns(32, -1), ==, 0);
    aio_spin_test_set_ns(AIO_SPIN_DEFAULT_NS);
}

/* A bad STRATA_AIO_WAIT_SPIN_NS is reported, naming it and the value,
 * and the default stays (read once, in a fresh process). */
static void test_spin_bad_env(void)
{
    if (g_test_subprocess()) {
        g_setenv("STRATA_AIO_WAIT_SPIN_NS", "99999999999999999999", true);
        g_assert_cmpint(aio_spin_ns(32, -1), ==, AIO_SPIN_DEFAULT_NS);
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
    g_test_trap_assert_stderr("*STRATA_AIO_WAIT_SPIN_NS: must be a whole number of "
                              "nanoseconds in [0, 1000000000], got "
                              "'99999999999999999999'; using 5000*");
}

typedef struct DelayedWrite {
    int fd;
    const char *data;
    size_t len;
} DelayedWrite;

static gpointer delayed_write(gpointer opaque)
{
    DelayedWrite *w = opaque;

    g_usleep(20 * 1000);
    g_assert_cmpint(write(w->fd, w->data, w->len), ==, (ssize_t)w->len);
    return NULL;
}

/*
 * 32 reads of an empty pipe in flight, and a thread that writes their
 * bytes 20 ms later.  With a spin of a second the waiting loop sees them
 * come without sleeping; with none it sleeps and is woken.  Every read
 * gets its byte either way.
 */
static void test_uring_spin_before_sleep(void)
{
    PipeBurst b;
    if (!pipe_burst_init(&b)) {
        return;
    }
    for (int round = 0; round < 2; round++) {
        aio_spin_test_set_ns(round == 0 ? G_USEC_PER_SEC * 1000 : 0);
        memset(b.got, 0, sizeof(b.got));
        early_burst(&b.e, b.ios, b.got, b.p[0]);
        g_assert_cmpint(b.e.pending, ==, NEARLY);
        AioEngineStats s0 = env_stats(&b.e);
        DelayedWrite w = { b.p[1], b.data, NEARLY };
        GThread *writer = g_thread_new("writer", delayed_write, &w);
        env_wait(&b.e);
        g_thread_join(writer);
        AioEngineStats d = stats_delta(s0, env_stats(&b.e));
        g_test_message("round %d: %" G_GUINT64_FORMAT " sleeps spun away",
                       round, d.spins_won);
        if (round == 0) {
            g_assert_cmpuint(d.spins_won, >=, 1);
        } else {
            g_assert_cmpuint(d.spins_won, ==, 0);
        }
        pipe_burst_check(&b);
    }
    aio_spin_test_set_ns(AIO_SPIN_DEFAULT_NS);
    pipe_burst_cleanup(&b);
}

/*
 * A file without NOWAIT (O_DIRECT on tmpfs): 64 reads started at once go
 * to io_uring's workers directly while fewer than 4 are in flight; of 64
 * writes only the first does, so that io-wq keeps the rest in its
 * one-at-a-time chain for the file (see "Files without non-blocking I/O"
 * in block/aio-io_uring.c).  The data still round-trips.
 */
static void test_uring_forced_async(void)
{
    if (!g_file_test("/dev/shm", G_FILE_TEST_IS_DIR)) {
        g_test_skip("no /dev/shm (tmpfs, a file without NOWAIT)");
        return;
    }
    g_setenv("STRATA_AIO_TEST_DIR", "/dev/shm", true);
    Env e;
    bool ok = env_init(&e, AIO_ENGINE_IO_URING, 0);
    g_unsetenv("STRATA_AIO_TEST_DIR");
    if (!ok) {
        return;
    }
    AioEngineStats dw, dr, d0;
    concurrent_roundtrip(&e, AIO_NO_NOWAIT, &dw, &dr);
    g_assert_cmpuint(dw.forced_async, ==, 1);
    g_assert_cmpuint(dr.forced_async, ==, 4);

    /* Without the hint, none. */
    concurrent_roundtrip(&e, 0, &d0, &d0);
    g_assert_cmpuint(d0.forced_async, ==, 0);
    env_cleanup(&e);
}

/*
 * Native AIO on tmpfs with O_DIRECT completes inside io_submit: there the
 * rule stays off, and a burst after a first one still leaves whole (one
 * call with the default depth; with a depth of 32, the 64 leave in two
 * calls, the second carrying requests that waited for room, which count
 * as that submission's own).
 */
static void early_inline_file(unsigned depth)
{
    if (!g_file_test("/dev/shm", G_FILE_TEST_IS_DIR)) {
        g_test_skip("no /dev/shm (tmpfs) to complete requests inline");
        return;
    }
    g_setenv("STRATA_AIO_TEST_DIR", "/dev/shm", true);
    Env e;
    bool ok = env_init(&e, AIO_ENGINE_NATIVE, depth);
    g_unsetenv("STRATA_AIO_TEST_DIR");
    if (!ok) {
        return;
    }
    if (!e.direct) {
        g_test_skip("tmpfs refuses O_DIRECT here: buffered I/O may not "
                    "complete inside io_submit");
        env_cleanup(&e);
        return;
    }
    uint8_t *bufs = blk_alloc(NCONC * BLK);
    Io *ios = g_new0(Io, NCONC);
    unsigned calls = depth ? NCONC / depth : 1;
    for (int round = 0; round < 2; round++) {
        AioEngineStats s0 = env_stats(&e);
        run_concurrent(&e, ios, bufs, round == 0);
        AioEngineStats d = stats_delta(s0, env_stats(&e));
        g_assert_cmpuint(d.completions, ==, NCONC);
        g_assert_cmpuint(d.syscalls, ==, calls);
        g_assert_cmpuint(d.early, ==, 0);
    }
    g_free(ios);
    g_aligned_free(bufs);
    env_cleanup(&e);
}

static void test_early_inline_file(void)
{
    early_inline_file(0);
}

static void test_early_inline_file_waiters(void)
{
    early_inline_file(NCONC / 2);
}

/* STRATA_AIO_NATIVE_EVENTFD=1: the eventfd in the epoll set, as on a loop
 * that has another waiter or a GLib source. */
static void test_native_eventfd_mode(void)
{
#if CONFIG_LIBAIO
    Env e;
    setenv("STRATA_AIO_NATIVE_EVENTFD", "1", 1);
    if (env_init(&e, AIO_ENGINE_NATIVE, 0)) {
        g_assert_false(aio_linux_test_self_wait(e.state));
        env_cleanup(&e);
    }
    run_with_env_switch("STRATA_AIO_NATIVE_EVENTFD", AIO_ENGINE_NATIVE);
#else
    g_test_skip("libaio not compiled in");
#endif
}

static void add_engine_test(const char *name, GTestDataFunc fn)
{
    for (AioEngineId id = 0; id < AIO_ENGINE__MAX; id++) {
        g_autofree char *path = g_strdup_printf("/aio/%s/%s",
                                                engine_path_name(id), name);
        g_test_add_data_func(path, GINT_TO_POINTER(id), fn);
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    /* A lost completion would hang a test: fail loudly instead. */
    alarm(120);

    g_test_add_func("/aio/table", test_table);
    add_engine_test("roundtrip", test_roundtrip);
    add_engine_test("concurrent-64-batched", test_concurrent);
    add_engine_test("max-batch", test_max_batch);
    add_engine_test("queue-full-waits", test_queue_full);
    add_engine_test("fua", test_fua);
    add_engine_test("short-result-hook", test_short_hook);
    add_engine_test("errors", test_errors);
    add_engine_test("completion-submits-same-batch", test_chain);
    add_engine_test("fixed-buffers", test_fixed);
    add_engine_test("inline-completion/no-yield", test_inline_no_yield);
    add_engine_test("inline-completion/batch-wakes-others",
                    test_inline_batch_wakes);
    add_engine_test("mixed-inline-and-later-completions", test_mixed_reaping);
    g_test_add_func("/aio/native/no-user-ring/io_getevents-fallback",
                    test_native_no_user_ring);
    g_test_add_func("/aio/native/probe-context-reused",
                    test_native_probe_reused);
    add_engine_test("waiter/wakes", test_waiter_wakes);
    add_engine_test("waiter/detach-in-flight", test_waiter_detach);
    g_test_add_func("/aio/native/eventfd-mode", test_native_eventfd_mode);
    g_test_add_func("/aio/early/policy", test_early_policy);
    g_test_add_func("/aio/io_uring/early/async-burst", test_early_async_burst);
    g_test_add_func("/aio/io_uring/forced-async/writes-first-only",
                    test_uring_forced_async);
    g_test_add_func("/aio/spin/policy", test_spin_policy);
    g_test_add_func("/aio/spin/bad-env", test_spin_bad_env);
    g_test_add_func("/aio/io_uring/spin/before-sleep", test_uring_spin_before_sleep);
    g_test_add_func("/aio/native/early/inline-file-stays-batched",
                    test_early_inline_file);
    g_test_add_func("/aio/native/early/inline-file-with-waiters",
                    test_early_inline_file_waiters);
    g_test_add_func("/aio/io_uring/epoll-mode", test_uring_epoll_mode);
    g_test_add_func("/aio/io_uring/defer-taskrun", test_uring_defer_taskrun);
    g_test_add_func("/aio/io_uring/gsource-with-requests-pending",
                    test_uring_gsource_pending);
    g_test_add_func("/aio/io_uring/handover/native-is-the-waiter",
                    test_uring_handover_native_waiter);
    g_test_add_func("/aio/io_uring/handover/epoll-mode",
                    test_uring_handover_epoll);
    g_test_add_func("/aio/io_uring/single-issuer/loop-moves-thread",
                    test_uring_loop_moves);
    g_test_add_func("/aio/io_uring/single-issuer/thread-state",
                    test_uring_thread_state);
    return g_test_run();
}
