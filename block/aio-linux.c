/*
 * AIO engine "native": Linux AIO through libaio, one io_context per context
 * SPDX-License-Identifier: MIT
 *
 * Life of a request:
 *
 *   co_preadv ─► iocb (on the coroutine's stack) in the pending array, or
 *   the wait list when depth requests are already out ─►
 *   loop_defer_call(laio_flush) ─► one io_submit per loop iteration ─►
 *   event ─► eventfd readable ─► laio_on_readable(): io_getevents without
 *   blocking, result copied into the request ─► co_enter(coroutine)
 *
 * The eventfd is attached to every iocb (io_set_eventfd), so completions
 * wake the loop through its epoll set like any other fd.  The completion
 * handler opens a defer section, so requests that the re-entered coroutines
 * submit leave in one io_submit when it returns.
 *
 * The kernel context holds at most depth requests; more wait in FIFO order
 * rather than fail, and -EAGAIN from io_submit (the kernel ran short) leaves
 * the rest queued for the next completion, or a short timer when nothing is
 * in flight to complete.
 */
#include <errno.h>
#include <libaio.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include "block/aio-engine.h"

#define LAIO_DEFAULT_DEPTH 128
#define LAIO_EVENTS_PER_CALL 64
#define LAIO_RETRY_NS (1000 * 1000)

typedef struct LaioReq {
    struct iocb iocb;
    Coroutine *co;
    int ret;
    bool done;
    struct LaioReq *next;       /* wait list */
} LaioReq;

typedef struct LaioState {
    Loop *loop;
    io_context_t io_ctx;
    int efd;
    unsigned depth;
    unsigned inflight;          /* accepted by io_submit, not yet reaped */
    struct iocb **pending;      /* prepared, not yet submitted: [depth] */
    unsigned npending;
    LaioReq *wait_head;         /* beyond depth, FIFO */
    LaioReq **wait_tail;
    LoopTimer retry_timer;
    AioEngineStats stats;
} LaioState;

static bool laio_available(const char **why)
{
    /* 0 untried, 1 usable, -errno from io_setup. */
    static int result;
    int known = g_atomic_int_get(&result);

    if (!known) {
        io_context_t io_ctx = 0;
        int ret = io_setup(1, &io_ctx);
        if (ret == 0) {
            io_destroy(io_ctx);
            known = 1;
        } else {
            known = ret;
        }
        g_atomic_int_set(&result, known);
    }
    if (known > 0) {
        return true;
    }
    if (why) {
        switch (-known) {
        case ENOSYS:
            *why = "io_setup: Function not implemented";
            break;
        case EAGAIN:
            *why = "io_setup: Resource temporarily unavailable "
                   "(fs.aio-max-nr reached)";
            break;
        case EPERM:
            *why = "io_setup: Operation not permitted (seccomp?)";
            break;
        default:
            *why = "io_setup failed";
            break;
        }
    }
    return false;
}

static LaioReq *laio_req_of(struct iocb *iocb)
{
    return (LaioReq *)((char *)iocb - offsetof(LaioReq, iocb));
}

/*
 * Finish @req with @ret from the submission path.  The flush may run inside
 * a submitting coroutine (no defer section open): the request that belongs
 * to the running coroutine just sees done and never yields; any other is
 * woken through the loop, never entered from here.
 */
static void laio_fail(LaioState *s, LaioReq *req, int ret)
{
    s->stats.completions++;
    req->ret = ret;
    req->done = true;
    if (req->co != co_self()) {
        if (!co_get_loop(req->co)) {
            /* Created before the thread had a loop; it runs in ours. */
            co_set_loop(req->co, s->loop);
        }
        loop_co_wake(req->co);
    }
}

static void laio_flush(void *opaque)
{
    LaioState *s = opaque;

    while (s->wait_head && s->inflight + s->npending < s->depth) {
        LaioReq *req = s->wait_head;
        s->wait_head = req->next;
        if (!s->wait_head) {
            s->wait_tail = &s->wait_head;
        }
        req->next = NULL;
        s->pending[s->npending++] = &req->iocb;
    }

    while (s->npending > 0) {
        int ret = io_submit(s->io_ctx, s->npending, s->pending);

        if (ret > 0) {
            s->stats.syscalls++;
            if ((uint64_t)ret > s->stats.max_batch) {
                s->stats.max_batch = ret;
            }
            s->inflight += ret;
            s->npending -= ret;
            memmove(s->pending, s->pending + ret,
                    s->npending * sizeof(s->pending[0]));
            continue;
        }
        if (ret == -EAGAIN || ret == 0) {
            /* Kernel memory or event slots ran short: keep the iocbs and
             * try again after the next completion, or on a timer when no
             * completion is coming. */
            if (s->inflight == 0) {
                loop_timer_mod(&s->retry_timer, clock_ns() + LAIO_RETRY_NS);
            }
            return;
        }
        if (ret == -EINTR) {
            continue;
        }
        /* io_submit fails the call only for its first iocb (bad fd, bad
         * opcode or flags, EFAULT): that request gets the error, and the
         * rest are submitted on. */
        LaioReq *req = laio_req_of(s->pending[0]);
        s->npending--;
        memmove(s->pending, s->pending + 1,
                s->npending * sizeof(s->pending[0]));
        laio_fail(s, req, (int)aio_engine_apply_short(AIO_ENGINE_NATIVE, ret));
    }
}

static void laio_retry_cb(void *opaque)
{
    LaioState *s = opaque;

    s->stats.retries++;
    laio_flush(s);
}

static void laio_on_readable(void *opaque)
{
    LaioState *s = opaque;
    uint64_t count;
    bool found = false;

    /* Reset the counter first: a completion that lands while we reap
     * makes the fd readable again, so none is missed. */
    if (read(s->efd, &count, sizeof(count)) < 0) {
        /* EAGAIN: a spurious wake-up; the events are looked at anyway. */
    }

    loop_defer_begin(s->loop);
    for (;;) {
        struct io_event events[LAIO_EVENTS_PER_CALL];
        struct timespec zero = { 0, 0 };
        int n = io_getevents(s->io_ctx, 0, LAIO_EVENTS_PER_CALL, events, &zero);

        if (n == -EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        found = true;
        for (int i = 0; i < n; i++) {
            LaioReq *req = laio_req_of(events[i].obj);
            /* res is an unsigned long holding bytes or -errno. */
            long res = (long)events[i].res;

            g_assert(s->inflight > 0);
            s->inflight--;
            s->stats.completions++;
            req->ret = (int)aio_engine_apply_short(AIO_ENGINE_NATIVE, res);
            req->done = true;
            co_enter(req->co);
        }
        if (n < LAIO_EVENTS_PER_CALL) {
            break;
        }
    }
    if (found) {
        s->stats.reap_batches++;
    }
    if (s->npending > 0 || s->wait_head) {
        loop_defer_call(s->loop, laio_flush, s);
    }
    loop_defer_end(s->loop);
}

static void *laio_ctx_init(StrataContext *ctx, StrataError **errp)
{
    LaioState *s = g_new0(LaioState, 1);

    s->depth = aio_engine_queue_depth(AIO_ENGINE_NATIVE, LAIO_DEFAULT_DEPTH);
    int ret = io_setup(s->depth, &s->io_ctx);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "io_setup(%u)", s->depth);
        g_free(s);
        return NULL;
    }
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) {
        error_setg_errno(errp, errno, "eventfd");
        io_destroy(s->io_ctx);
        g_free(s);
        return NULL;
    }
    s->loop = ctx->loop;
    s->pending = g_new(struct iocb *, s->depth);
    s->wait_tail = &s->wait_head;
    loop_timer_init(&s->retry_timer, s->loop, laio_retry_cb, s);
    loop_set_fd_handler(s->loop, s->efd, laio_on_readable, NULL, s);
    return s;
}

static void laio_ctx_cleanup(void *opaque)
{
    LaioState *s = opaque;

    /* The context closes (and so drains) every node first. */
    g_assert(s->inflight == 0 && s->npending == 0 && !s->wait_head);
    loop_timer_del(&s->retry_timer);
    loop_set_fd_handler(s->loop, s->efd, NULL, NULL, NULL);
    close(s->efd);
    io_destroy(s->io_ctx);
    g_free(s->pending);
    g_free(s);
}

static bool laio_supports_fua(void *opaque)
{
    /* aio_rw_flags exists since Linux 4.13, RWF_DSYNC since 4.7. */
    return true;
}

static int laio_co_submit(LaioState *s, LaioReq *req)
{
    req->co = co_self();
    g_assert(req->co);
    io_set_eventfd(&req->iocb, s->efd);
    s->stats.submits++;

    /* FIFO: nobody overtakes a request that waits for room. */
    if (!s->wait_head && s->inflight + s->npending < s->depth) {
        s->pending[s->npending++] = &req->iocb;
    } else {
        s->stats.queue_waits++;
        *s->wait_tail = req;
        s->wait_tail = &req->next;
    }
    loop_defer_call(s->loop, laio_flush, s);
    unsigned max_batch = loop_get_aio_max_batch(s->loop);
    if (max_batch && (unsigned)s->npending >= max_batch) {
        laio_flush(s);
    }

    while (!req->done) {
        co_yield();
    }
    return req->ret;
}

static int laio_co_preadv(void *opaque, int fd, int64_t offset,
                          const struct iovec *iov, int niov, int flags)
{
    LaioReq req = { 0 };

    g_assert(!(flags & ~AIO_FUA));
    io_prep_preadv(&req.iocb, fd, iov, niov, offset);
    return laio_co_submit(opaque, &req);
}

static int laio_co_pwritev(void *opaque, int fd, int64_t offset,
                           const struct iovec *iov, int niov, int flags)
{
    LaioReq req = { 0 };

    g_assert(!(flags & ~AIO_FUA));
    io_prep_pwritev2(&req.iocb, fd, iov, niov, offset,
                     (flags & AIO_FUA) ? RWF_DSYNC : 0);
    return laio_co_submit(opaque, &req);
}

static void laio_get_stats(void *opaque, AioEngineStats *out)
{
    LaioState *s = opaque;
    *out = s->stats;
}

const AioEngineOps aio_linux_ops = {
    .name = "native",
    .id = AIO_ENGINE_NATIVE,
    .available = laio_available,
    .ctx_init = laio_ctx_init,
    .ctx_cleanup = laio_ctx_cleanup,
    .supports_fua = laio_supports_fua,
    .co_preadv = laio_co_preadv,
    .co_pwritev = laio_co_pwritev,
    .get_stats = laio_get_stats,
};
