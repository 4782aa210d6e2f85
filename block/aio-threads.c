/*
 * AIO engine "threads": blocking preadv2/pwritev2 in the loop's thread pool
 * SPDX-License-Identifier: MIT
 *
 * The portable engine and the fallback when neither libaio nor io_uring is
 * usable.  Each request is one system call in a worker thread; the
 * coroutine yields in thread_pool_co_submit() and the pool's completion
 * bottom half re-enters it in the loop's thread, so the result is stored
 * before the caller runs again and the submit never re-enters the caller.
 */
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>
#include "block/aio-engine.h"
#include "util/thread-pool.h"

typedef struct ThreadsState {
    Loop *loop;
    AioEngineStats stats;
} ThreadsState;

/* One request, on the submitting coroutine's stack. */
typedef struct ThreadsReq {
    int fd;
    bool write;
    int rwf;
    int64_t offset;
    const struct iovec *iov;
    int niov;
} ThreadsReq;

static bool threads_available(const char **why)
{
    return true;
}

/*
 * Workers started with the engine and kept for the life of the loop: a
 * request never waits for a thread to start, and none starts (allocating
 * its stack, TLS and GThread) once requests flow, up to this many in
 * flight.  Beyond it the pool starts more on demand, which exit when idle.
 */
#define THREADS_KEEP_WORKERS 32

static void *threads_ctx_init(Loop *loop, StrataError **errp)
{
    ThreadsState *s = g_new0(ThreadsState, 1);
    s->loop = loop;
    thread_pool_keep_workers(loop_get_thread_pool(s->loop),
                             THREADS_KEEP_WORKERS);
    return s;
}

static void threads_ctx_cleanup(void *opaque)
{
    g_free(opaque);
}

/*
 * RWF_DSYNC arrived in Linux 4.7, so both supported kernels have it; the
 * probe still asks the kernel once (a one-byte pwritev2 to a memfd), so that
 * a seccomp filter or an emulator without it turns FUA emulation on instead
 * of failing every FUA write.
 */
static int threads_fua_probe_result;   /* 0 untried, 1 yes, -1 no */

static bool threads_supports_fua(void *opaque)
{
    int known = g_atomic_int_get(&threads_fua_probe_result);
    if (known) {
        return known > 0;
    }

    bool ok = false;
    int fd = memfd_create("strata-fua-probe", MFD_CLOEXEC);
    if (fd >= 0) {
        char byte = 0;
        struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
        ok = pwritev2(fd, &iov, 1, 0, RWF_DSYNC) == 1;
        close(fd);
    }
    g_atomic_int_set(&threads_fua_probe_result, ok ? 1 : -1);
    return ok;
}

/* Runs in a worker thread.  EINTR is returned like any other error: the
 * file driver retries it for every engine alike. */
static int threads_rw_fn(void *arg)
{
    ThreadsReq *r = arg;
    ssize_t n;

    if (r->write) {
        n = pwritev2(r->fd, r->iov, r->niov, r->offset, r->rwf);
    } else {
        n = preadv2(r->fd, r->iov, r->niov, r->offset, r->rwf);
    }
    /* A request never exceeds BLOCK_MAX_RW_BYTES, so the count fits. */
    return n < 0 ? -errno : (int)n;
}

static int threads_co_rw(ThreadsState *s, ThreadsReq *r)
{
    ThreadPool *pool = loop_get_thread_pool(s->loop);

    s->stats.submits++;
    int ret = thread_pool_co_submit(pool, threads_rw_fn, r);
    s->stats.syscalls++;
    s->stats.completions++;
    s->stats.reap_batches++;
    s->stats.max_batch = 1;
    return (int)aio_engine_apply_short(AIO_ENGINE_THREADS, ret);
}

static int threads_co_preadv(void *opaque, int fd, int64_t offset,
                             const struct iovec *iov, int niov, int flags)
{
    ThreadsReq r = {
        .fd = fd, .write = false, .rwf = 0,
        .offset = offset, .iov = iov, .niov = niov,
    };
    g_assert(!(flags & ~(AIO_FUA | AIO_NO_NOWAIT)));
    return threads_co_rw(opaque, &r);
}

static int threads_co_pwritev(void *opaque, int fd, int64_t offset,
                              const struct iovec *iov, int niov, int flags)
{
    ThreadsReq r = {
        .fd = fd, .write = true, .rwf = (flags & AIO_FUA) ? RWF_DSYNC : 0,
        .offset = offset, .iov = iov, .niov = niov,
    };
    g_assert(!(flags & ~(AIO_FUA | AIO_NO_NOWAIT)));
    return threads_co_rw(opaque, &r);
}

static void threads_get_stats(void *opaque, AioEngineStats *out)
{
    ThreadsState *s = opaque;
    *out = s->stats;
}

const AioEngineOps aio_threads_ops = {
    .name = "threads",
    .id = AIO_ENGINE_THREADS,
    .available = threads_available,
    .ctx_init = threads_ctx_init,
    .ctx_cleanup = threads_ctx_cleanup,
    .supports_fua = threads_supports_fua,
    .co_preadv = threads_co_preadv,
    .co_pwritev = threads_co_pwritev,
    .get_stats = threads_get_stats,
};
