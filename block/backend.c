/*
 * Backend handles: what a guest device holds at the root of a graph
 * SPDX-License-Identifier: MIT
 *
 * Three forms of every request:
 *   - coroutine (backend_co_*, block/backend-int.h): the real work;
 *   - callback (strata_backend_aio_*): from any thread; the request is
 *     handed to the context's loop (directly when the caller is that loop's
 *     thread, else through a mutex-protected list and a bottom half that
 *     wakes the loop), runs as a coroutine there and completes with the
 *     embedder's callback in that thread;
 *   - blocking (strata_backend_p*): a callback-form request waited for,
 *     by running the loop when the caller owns it (loop_is_owner: a tool's
 *     main thread) and otherwise on a condition variable (a vCPU thread
 *     while the loop runs in its own thread or in the embedder's main
 *     loop): two threads never run one loop.
 * Request descriptors come from a per-backend free list that grows during
 * warm-up only; coroutines come from the coroutine pool.
 */
#include <errno.h>
#include <string.h>

#include "block/backend-int.h"
#include "block/block-int.h"
#include "util/thread.h"

/* Most elements one request's vector may have.  The padding layer gathers
 * vectors above the node's max_iov (1024 for files), so this is a sanity
 * bound on what a caller can make us walk, not the kernel's limit. */
#define BACKEND_MAX_IOV 65536

typedef enum BackendOp {
    OP_READ,
    OP_WRITE,
    OP_ZEROES,
    OP_DISCARD,
    OP_FLUSH,
    OP_LENGTH,
    OP_TRUNCATE,
    OP_STATUS,
    OP_DRAIN,
} BackendOp;

typedef struct SyncWait {
    Mutex lock;
    Cond cond;
} SyncWait;

typedef struct BackendReq {
    StrataBackend *be;
    BackendOp op;
    int64_t offset, bytes;
    const struct iovec *iov;
    int niov;
    uint32_t flags;
    StrataCompletion *cb;
    void *opaque;
    int64_t ret;
    int64_t pnum;                   /* OP_STATUS: the run length */
    int64_t *pnum_out;              /* OP_STATUS: where to store it */
    struct BackendReq *next;        /* pending or free list */
} BackendReq;

struct StrataBackend {
    StrataContext *ctx;
    char *name;
    BlockChild *root;
    bool write_cache;
    StrataErrorAction on_read_error, on_write_error;

    bool stopped;
    StrataStopCallback *stop_cb;
    void *stop_opaque;

    int quiesce_counter;
    int alive;                      /* submitted, callback not yet run
                                       (atomic: any thread submits) */
    int in_flight;                  /* requests inside backend_co_* */
    int parked;                     /* of which stopped on an error */
    CoQueue entry_queue;            /* waiting for quiesce/stop to end */
    CoQueue idle_waiters;           /* drains waiting for in_flight == parked */

    Mutex lock;                     /* protects pending and free lists */
    BackendReq *pending_head, *pending_tail;
    BackendReq *free_list;
    LoopBH *submit_bh;
};

const char *backend_get_name(const StrataBackend *be)
{
    return be->name;
}

bool backend_get_write_cache(const StrataBackend *be)
{
    return be->write_cache;
}

static StrataNode *be_root(StrataBackend *be)
{
    return be->root->node;
}

/* ---- quiesce, stop, resume ---------------------------------------------- */

void backend_quiesce(StrataBackend *be)
{
    be->quiesce_counter++;
    /* Mark the graph too: a filter holding a request (a blkdebug
     * breakpoint) sees it and lets go, so the drain can finish. */
    be_root(be)->quiesce_counter++;
}

void backend_unquiesce(StrataBackend *be)
{
    g_assert(be->quiesce_counter > 0);
    be_root(be)->quiesce_counter--;
    if (--be->quiesce_counter == 0 && !be->stopped) {
        co_queue_restart_all(&be->entry_queue);
    }
}

static void backend_co_enter_request(StrataBackend *be)
{
    while (be->quiesce_counter > 0 || be->stopped) {
        co_queue_wait(&be->entry_queue, NULL);
    }
    be->in_flight++;
}

static void backend_leave_request(StrataBackend *be)
{
    be->in_flight--;
    if (be->in_flight == be->parked) {
        co_queue_restart_all(&be->idle_waiters);
    }
}

static StrataErrorAction error_action(StrataBackend *be, bool is_write, int ret)
{
    StrataErrorAction a = is_write ? be->on_write_error : be->on_read_error;
    if (a == STRATA_ERROR_ACTION_ENOSPC) {
        return ret == -ENOSPC ? STRATA_ERROR_ACTION_STOP : STRATA_ERROR_ACTION_REPORT;
    }
    return a;
}

/*
 * Apply the error policy to a failed request.  Returns true when the
 * request should be retried (the backend was stopped and then resumed).
 */
static bool backend_co_handle_error(StrataBackend *be, bool is_write, int *ret)
{
    switch (error_action(be, is_write, *ret)) {
    case STRATA_ERROR_ACTION_IGNORE:
        *ret = 0;
        return false;
    case STRATA_ERROR_ACTION_STOP:
        if (!be->stopped) {
            be->stopped = true;
            if (be->stop_cb) {
                be->stop_cb(be->stop_opaque, *ret, is_write);
            }
        }
        be->parked++;
        if (be->in_flight == be->parked) {
            co_queue_restart_all(&be->idle_waiters);
        }
        /* A resume inside a drained section must not send the retry into
         * the drained graph (a reopen may be swapping its files): stay
         * parked, and so invisible to drains, until the section ends. */
        while (be->stopped || be->quiesce_counter > 0) {
            co_queue_wait(&be->entry_queue, NULL);
        }
        be->parked--;
        return true;
    default:
        return false;
    }
}

STRATA_EXPORT void strata_backend_set_error_action(StrataBackend *be,
                                                   StrataErrorAction on_read,
                                                   StrataErrorAction on_write)
{
    be->on_read_error = on_read;
    be->on_write_error = on_write;
}

STRATA_EXPORT void strata_backend_set_stop_callback(StrataBackend *be,
                                                    StrataStopCallback *cb,
                                                    void *opaque)
{
    be->stop_cb = cb;
    be->stop_opaque = opaque;
}

STRATA_EXPORT bool strata_backend_is_stopped(StrataBackend *be)
{
    return be->stopped;
}

static void backend_resume(void *opaque)
{
    StrataBackend *be = opaque;

    if (!be->stopped) {
        return;
    }
    be->stopped = false;
    /* Wake everyone: parked requests retry (a drain may be waiting for
     * them), and new ones re-check the quiesce counter themselves. */
    co_queue_restart_all(&be->entry_queue);
}

STRATA_EXPORT void strata_backend_resume(StrataBackend *be)
{
    if (!loop_is_owner(be->ctx->loop)) {
        /* The queues belong to the loop's owner (the embedder typically
         * resumes from a monitor thread after the stop callback told it
         * about the error): resume there, soon. */
        loop_oneshot(be->ctx->loop, backend_resume, be);
        return;
    }
    backend_resume(be);
}

/* ---- coroutine forms ------------------------------------------------------ */


/* A request past the end of the device fails with -EIO (what a disk
 * reports for an LBA out of range; qemu-io prints the same). */
static int check_device_range(StrataBackend *be, int64_t offset, int64_t bytes)
{
    if (offset < 0 || bytes < 0) {
        return -EINVAL;
    }
    int64_t len = node_get_length(be_root(be));
    if (len < 0) {
        return (int)len;
    }
    /* Past the end is what a disk reports for it, however far past. */
    if (offset > len || bytes > len - offset) {
        return -EIO;
    }
    return 0;
}

static int backend_co_rw(StrataBackend *be, BackendOp op, int64_t offset,
                         int64_t bytes, const IOVector *qiov, int flags)
{
    bool is_write = op != OP_READ;
    int ret;

    backend_co_enter_request(be);
    if (is_write && !be->write_cache) {
        flags |= REQ_FUA;
    }
    do {
        ret = check_device_range(be, offset, bytes);
        if (ret < 0) {
            break;   /* bad arguments are not storage errors: no policy */
        }
        switch (op) {
        case OP_READ:
            ret = node_co_preadv(be_root(be), offset, bytes, qiov, flags);
            break;
        case OP_WRITE:
            ret = node_co_pwritev(be_root(be), offset, bytes, qiov, flags);
            break;
        case OP_ZEROES:
            ret = node_co_pwrite_zeroes(be_root(be), offset, bytes, flags);
            break;
        case OP_DISCARD:
            ret = node_co_pdiscard(be_root(be), offset, bytes);
            break;
        default:
            g_assert_not_reached();
        }
    } while (ret < 0 && ret != -EINVAL && backend_co_handle_error(be, is_write, &ret));
    backend_leave_request(be);
    return ret;
}

int backend_co_preadv(StrataBackend *be, int64_t offset, int64_t bytes,
                      const IOVector *qiov, int flags)
{
    return backend_co_rw(be, OP_READ, offset, bytes, qiov, flags);
}

int backend_co_pwritev(StrataBackend *be, int64_t offset, int64_t bytes,
                       const IOVector *qiov, int flags)
{
    return backend_co_rw(be, OP_WRITE, offset, bytes, qiov, flags);
}

int backend_co_pwrite_zeroes(StrataBackend *be, int64_t offset, int64_t bytes,
                             int flags)
{
    return backend_co_rw(be, OP_ZEROES, offset, bytes, NULL, flags);
}

int backend_co_pdiscard(StrataBackend *be, int64_t offset, int64_t bytes)
{
    return backend_co_rw(be, OP_DISCARD, offset, bytes, NULL, 0);
}

int backend_co_flush(StrataBackend *be)
{
    int ret;

    backend_co_enter_request(be);
    do {
        ret = node_co_flush(be_root(be));
    } while (ret < 0 && backend_co_handle_error(be, true, &ret));
    backend_leave_request(be);
    return ret;
}

int64_t backend_co_get_length(StrataBackend *be)
{
    return node_get_length(be_root(be));
}

int backend_co_truncate(StrataBackend *be, int64_t size, PreallocMode prealloc,
                        StrataError **errp)
{
    backend_co_enter_request(be);
    int ret = node_co_truncate(be_root(be), size, prealloc, errp);
    backend_leave_request(be);
    return ret;
}

int backend_co_block_status(StrataBackend *be, int64_t offset, int64_t bytes,
                            int64_t *pnum)
{
    backend_co_enter_request(be);
    int ret = check_device_range(be, offset, bytes);
    if (ret == 0) {
        ret = node_co_block_status(be_root(be), offset, bytes, pnum);
    }
    backend_leave_request(be);
    return ret;
}

/* Drain: park new requests and wait for those in flight (parked ones
 * excepted: they wait for the embedder's resume, which a drain must not
 * block). */
static void backend_co_drain(StrataBackend *be)
{
    backend_quiesce(be);
    /* Filters that hold requests (throttle) let them go. */
    node_drained_notify(be_root(be), true);
    while (be->in_flight > be->parked) {
        co_queue_wait(&be->idle_waiters, NULL);
    }
}

/* ---- requests from the public API ---------------------------------------------- */

static int build_vector(IOVector *qiov, const struct iovec *iov, int niov,
                        int64_t *bytes)
{
    uint64_t total = 0;

    if (niov < 0 || niov > BACKEND_MAX_IOV || (niov > 0 && !iov)) {
        return -EINVAL;
    }
    /* Sum with a bound check on every step: a vector repeating one huge
     * buffer must fail here, before anything is sized from its total. */
    for (int i = 0; i < niov; i++) {
        if (iov[i].iov_len > (uint64_t)BLOCK_MAX_RW_BYTES - total) {
            return -EINVAL;
        }
        total += iov[i].iov_len;
    }
    iov_init_external(qiov, iov, niov);
    *bytes = (int64_t)total;
    return 0;
}

static int64_t backend_co_run(BackendReq *r)
{
    StrataBackend *be = r->be;
    IOVector qiov;
    int64_t bytes = r->bytes;
    int ret;

    switch (r->op) {
    case OP_READ:
    case OP_WRITE:
        ret = build_vector(&qiov, r->iov, r->niov, &bytes);
        if (ret < 0) {
            return ret;
        }
        ret = backend_co_rw(be, r->op, r->offset, bytes, &qiov, r->flags);
        iov_cleanup(&qiov);
        return ret;
    case OP_ZEROES:
    case OP_DISCARD:
        return backend_co_rw(be, r->op, r->offset, r->bytes, NULL, r->flags);
    case OP_FLUSH:
        return backend_co_flush(be);
    case OP_LENGTH:
        return backend_co_get_length(be);
    case OP_TRUNCATE:
        return backend_co_truncate(be, r->offset, PREALLOC_OFF, NULL);
    case OP_STATUS:
        return backend_co_block_status(be, r->offset, r->bytes, &r->pnum);
    case OP_DRAIN:
        backend_co_drain(be);
        return 0;
    }
    g_assert_not_reached();
}

static BackendReq *req_alloc(StrataBackend *be)
{
    BackendReq *r;

    mutex_lock(&be->lock);
    r = be->free_list;
    if (r) {
        be->free_list = r->next;
    }
    mutex_unlock(&be->lock);
    if (!r) {
        r = g_new(BackendReq, 1);   /* warm-up only: descriptors are reused */
    }
    memset(r, 0, sizeof(*r));
    r->be = be;
    return r;
}

static void req_free(BackendReq *r)
{
    StrataBackend *be = r->be;

    mutex_lock(&be->lock);
    r->next = be->free_list;
    be->free_list = r;
    mutex_unlock(&be->lock);
}

static void backend_aio_co_entry(void *opaque)
{
    BackendReq *r = opaque;
    StrataBackend *be = r->be;
    StrataCompletion *cb = r->cb;
    void *cb_opaque = r->opaque;
    int64_t ret = backend_co_run(r);

    if (r->pnum_out) {
        *r->pnum_out = r->pnum;
    }
    /* The descriptor goes back before the callback so that a callback
     * which submits again reuses it. */
    req_free(r);
    cb(cb_opaque, ret);
    g_atomic_int_add(&be->alive, -1);
}

static void backend_submit_bh(void *opaque)
{
    StrataBackend *be = opaque;
    BackendReq *list;

    mutex_lock(&be->lock);
    list = be->pending_head;
    be->pending_head = be->pending_tail = NULL;
    mutex_unlock(&be->lock);

    while (list) {
        BackendReq *r = list;
        list = r->next;
        r->next = NULL;
        loop_co_spawn(be->ctx->loop, backend_aio_co_entry, r);
    }
}

static int backend_submit(StrataBackend *be, BackendReq *tmpl)
{
    if (!tmpl->cb) {
        return -EINVAL;
    }
    BackendReq *r = req_alloc(be);
    *r = *tmpl;
    r->be = be;
    r->next = NULL;
    /* Internal request flags are not for callers of the public API. */
    r->flags &= REQ_PUBLIC_MASK;
    g_atomic_int_inc(&be->alive);

    if (loop_is_owner(be->ctx->loop)) {
        /* The coroutine is scheduled, never entered here: the callback
         * cannot run inside this call. */
        loop_co_spawn(be->ctx->loop, backend_aio_co_entry, r);
        return 0;
    }
    mutex_lock(&be->lock);
    if (be->pending_tail) {
        be->pending_tail->next = r;
    } else {
        be->pending_head = r;
    }
    be->pending_tail = r;
    mutex_unlock(&be->lock);
    loop_bh_schedule(be->submit_bh);
    return 0;
}

/* ---- blocking form ------------------------------------------------------------ */

typedef struct SyncReq {
    int64_t ret;
    bool done;
    SyncWait *wait;
} SyncReq;

static void sync_complete(void *opaque, int64_t ret)
{
    SyncReq *s = opaque;
    s->ret = ret;
    if (s->wait) {
        mutex_lock(&s->wait->lock);
        s->done = true;
        cond_signal(&s->wait->cond);
        mutex_unlock(&s->wait->lock);
    } else {
        s->done = true;
    }
}

static int64_t run_sync(StrataBackend *be, BackendReq *tmpl, int64_t *pnum)
{
    SyncReq s = { 0 };

    g_assert(!co_in_coroutine());
    tmpl->cb = sync_complete;
    tmpl->opaque = &s;
    tmpl->pnum_out = pnum;

    if (loop_is_owner(be->ctx->loop)) {
        /* Only the owner may run the loop: run it until done. */
        int ret = backend_submit(be, tmpl);
        g_assert(ret == 0);
        while (!s.done) {
            loop_run_once(be->ctx->loop, true);
        }
    } else {
        /* The owner (a loop thread, or the embedder's thread driving the
         * loop) runs the request; a loop without an owner is being handed
         * over, and its next owner will. */
        SyncWait w;
        mutex_init(&w.lock);
        cond_init(&w.cond);
        s.wait = &w;
        int ret = backend_submit(be, tmpl);
        g_assert(ret == 0);
        mutex_lock(&w.lock);
        while (!s.done) {
            cond_wait(&w.cond, &w.lock);
        }
        mutex_unlock(&w.lock);
        mutex_cleanup(&w.lock);
        cond_cleanup(&w.cond);
    }
    return s.ret;
}

STRATA_EXPORT int strata_backend_preadv(StrataBackend *be, int64_t offset,
                                        const struct iovec *iov, int niov,
                                        uint32_t flags)
{
    BackendReq t = { .op = OP_READ, .offset = offset, .iov = iov, .niov = niov,
                     .flags = flags };
    return (int)run_sync(be, &t, NULL);
}

STRATA_EXPORT int strata_backend_pwritev(StrataBackend *be, int64_t offset,
                                         const struct iovec *iov, int niov,
                                         uint32_t flags)
{
    BackendReq t = { .op = OP_WRITE, .offset = offset, .iov = iov, .niov = niov,
                     .flags = flags };
    return (int)run_sync(be, &t, NULL);
}

STRATA_EXPORT int strata_backend_pread(StrataBackend *be, int64_t offset,
                                       void *buf, size_t bytes, uint32_t flags)
{
    struct iovec iov = { buf, bytes };
    return strata_backend_preadv(be, offset, &iov, 1, flags);
}

STRATA_EXPORT int strata_backend_pwrite(StrataBackend *be, int64_t offset,
                                        const void *buf, size_t bytes,
                                        uint32_t flags)
{
    struct iovec iov = { (void *)buf, bytes };
    return strata_backend_pwritev(be, offset, &iov, 1, flags);
}

STRATA_EXPORT int strata_backend_pwrite_zeroes(StrataBackend *be, int64_t offset,
                                               int64_t bytes, uint32_t flags)
{
    BackendReq t = { .op = OP_ZEROES, .offset = offset, .bytes = bytes,
                     .flags = flags };
    return (int)run_sync(be, &t, NULL);
}

STRATA_EXPORT int strata_backend_pdiscard(StrataBackend *be, int64_t offset,
                                          int64_t bytes)
{
    BackendReq t = { .op = OP_DISCARD, .offset = offset, .bytes = bytes };
    return (int)run_sync(be, &t, NULL);
}

STRATA_EXPORT int strata_backend_flush(StrataBackend *be)
{
    BackendReq t = { .op = OP_FLUSH };
    return (int)run_sync(be, &t, NULL);
}

STRATA_EXPORT int64_t strata_backend_get_length(StrataBackend *be)
{
    BackendReq t = { .op = OP_LENGTH };
    return run_sync(be, &t, NULL);
}

STRATA_EXPORT int strata_backend_truncate(StrataBackend *be, int64_t size)
{
    BackendReq t = { .op = OP_TRUNCATE, .offset = size };
    return (int)run_sync(be, &t, NULL);
}

STRATA_EXPORT int strata_backend_block_status(StrataBackend *be, int64_t offset,
                                              int64_t bytes, int64_t *pnum)
{
    BackendReq t = { .op = OP_STATUS, .offset = offset, .bytes = bytes };
    return (int)run_sync(be, &t, pnum);
}

STRATA_EXPORT void strata_backend_drain_begin(StrataBackend *be)
{
    BackendReq t = { .op = OP_DRAIN };
    run_sync(be, &t, NULL);
}

static void backend_drain_end_cb(void *opaque)
{
    StrataBackend *be = opaque;

    node_drained_notify(be_root(be), false);
    backend_unquiesce(be);
}

STRATA_EXPORT void strata_backend_drain_end(StrataBackend *be)
{
    if (!loop_is_owner(be->ctx->loop)) {
        /* Hand the release to the loop's owner, which owns the queue. */
        loop_oneshot(be->ctx->loop, backend_drain_end_cb, be);
        return;
    }
    backend_drain_end_cb(be);
}

/* ---- callback form -------------------------------------------------------------- */

STRATA_EXPORT int strata_backend_aio_preadv(StrataBackend *be, int64_t offset,
                                            const struct iovec *iov, int niov,
                                            uint32_t flags,
                                            StrataCompletion *cb, void *opaque)
{
    BackendReq t = { .op = OP_READ, .offset = offset, .iov = iov, .niov = niov,
                     .flags = flags, .cb = cb, .opaque = opaque };
    return backend_submit(be, &t);
}

STRATA_EXPORT int strata_backend_aio_pwritev(StrataBackend *be, int64_t offset,
                                             const struct iovec *iov, int niov,
                                             uint32_t flags,
                                             StrataCompletion *cb, void *opaque)
{
    BackendReq t = { .op = OP_WRITE, .offset = offset, .iov = iov, .niov = niov,
                     .flags = flags, .cb = cb, .opaque = opaque };
    return backend_submit(be, &t);
}

STRATA_EXPORT int strata_backend_aio_pwrite_zeroes(StrataBackend *be,
                                                   int64_t offset, int64_t bytes,
                                                   uint32_t flags,
                                                   StrataCompletion *cb,
                                                   void *opaque)
{
    BackendReq t = { .op = OP_ZEROES, .offset = offset, .bytes = bytes,
                     .flags = flags, .cb = cb, .opaque = opaque };
    return backend_submit(be, &t);
}

STRATA_EXPORT int strata_backend_aio_pdiscard(StrataBackend *be, int64_t offset,
                                              int64_t bytes,
                                              StrataCompletion *cb, void *opaque)
{
    BackendReq t = { .op = OP_DISCARD, .offset = offset, .bytes = bytes,
                     .cb = cb, .opaque = opaque };
    return backend_submit(be, &t);
}

STRATA_EXPORT int strata_backend_aio_flush(StrataBackend *be,
                                           StrataCompletion *cb, void *opaque)
{
    BackendReq t = { .op = OP_FLUSH, .cb = cb, .opaque = opaque };
    return backend_submit(be, &t);
}

STRATA_EXPORT int strata_backend_aio_get_length(StrataBackend *be,
                                                StrataCompletion *cb,
                                                void *opaque)
{
    BackendReq t = { .op = OP_LENGTH, .cb = cb, .opaque = opaque };
    return backend_submit(be, &t);
}

STRATA_EXPORT int strata_backend_aio_truncate(StrataBackend *be, int64_t size,
                                              StrataCompletion *cb, void *opaque)
{
    BackendReq t = { .op = OP_TRUNCATE, .offset = size, .cb = cb, .opaque = opaque };
    return backend_submit(be, &t);
}

/* ---- life cycle ------------------------------------------------------------------ */

bool backend_set_perm(StrataBackend *be, uint32_t perm, uint32_t shared,
                      StrataError **errp)
{
    return child_set_perm(be->root, perm, shared, errp);
}

STRATA_EXPORT StrataBackend *strata_backend_new(StrataNode *root, const char *name,
                                                uint32_t perm, uint32_t shared,
                                                StrataError **errp)
{
    StrataContext *ctx = root->ctx;
    StrataBackend *be = g_new0(StrataBackend, 1);

    be->ctx = ctx;
    be->name = g_strdup(name ? name : "backend");
    be->write_cache = true;
    co_queue_init(&be->entry_queue);
    co_queue_init(&be->idle_waiters);
    mutex_init(&be->lock);

    be->root = backend_attach_root(be, root, perm & PERM_ALL, shared & PERM_ALL, errp);
    if (!be->root) {
        mutex_cleanup(&be->lock);
        g_free(be->name);
        g_free(be);
        return NULL;
    }
    be->submit_bh = loop_bh_new(ctx->loop, backend_submit_bh, be);
    ctx->backends = g_list_append(ctx->backends, be);
    return be;
}

STRATA_EXPORT void strata_backend_free(StrataBackend *be)
{
    if (!be) {
        return;
    }
    /* Control path: it runs the loop until the backend is idle. */
    g_assert(!co_in_coroutine());
    g_assert(loop_is_owner(be->ctx->loop));

    /* Resume a stopped backend so parked requests complete (with their
     * errors re-tried once more) rather than hang the close. */
    if (be->stopped) {
        be->on_read_error = be->on_write_error = STRATA_ERROR_ACTION_REPORT;
        backend_resume(be);
    }
    /* Every request submitted so far completes before the backend goes,
     * including those waiting at the entry of a drained section the
     * embedder never ended: each callback runs exactly once, and no
     * coroutine may be left waiting on a queue inside freed memory. */
    if (be->quiesce_counter > 0) {
        /* Give back this backend's share of the root's counter too, or a
         * filter there (blkdebug) would act drained for ever. */
        be_root(be)->quiesce_counter -= be->quiesce_counter;
        g_assert(be_root(be)->quiesce_counter >= 0);
        be->quiesce_counter = 0;
        co_queue_restart_all(&be->entry_queue);
    }
    while (g_atomic_int_get(&be->alive) > 0) {
        loop_run_once(be->ctx->loop, true);
    }
    g_assert(be->in_flight == 0 && !be->pending_head);
    be->ctx->backends = g_list_remove(be->ctx->backends, be);
    loop_bh_delete(be->submit_bh);
    node_detach_child(be->root);
    while (be->free_list) {
        BackendReq *r = be->free_list;
        be->free_list = r->next;
        g_free(r);
    }
    mutex_cleanup(&be->lock);
    g_free(be->name);
    g_free(be);
}

STRATA_EXPORT StrataNode *strata_backend_get_root(StrataBackend *be)
{
    return be_root(be);
}

STRATA_EXPORT void strata_backend_set_write_cache(StrataBackend *be, bool enabled)
{
    be->write_cache = enabled;
}
