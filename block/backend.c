/*
 * Backend handles: what a guest device holds at the root of a graph
 * SPDX-License-Identifier: MIT
 *
 * Three forms of every request:
 *   - coroutine (backend_co_*, block/backend-int.h): the real work;
 *   - callback (strata_backend_aio_*): from any thread; the request goes
 *     to a queue (queue_for_submit: the caller's own, or the one it chose,
 *     or the context's first), directly when the caller owns that queue's
 *     loop, else through the queue's hand-over list and a bottom half that
 *     wakes it; it runs as a coroutine there and completes with the
 *     embedder's callback in that thread;
 *   - blocking (strata_backend_p*): a callback-form request waited for,
 *     by running the loop when the caller owns it (loop_is_owner: a tool's
 *     main thread) and otherwise on a condition variable (a vCPU thread
 *     while the loop runs in its own thread or in the embedder's main
 *     loop): two threads never run one loop.
 * What a request touches is in the backend's shard for its queue (the
 * descriptor free list, the in-flight count); quiesce, stop and resume
 * are rare and go through be->lock.  Request descriptors come from the
 * shard's free list, which grows during warm-up only; coroutines come
 * from the coroutine pool.
 */
#include <errno.h>
#include <stdatomic.h>
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
} BackendOp;

typedef struct SyncWait {
    Mutex lock;
    Cond cond;
} SyncWait;

typedef struct BackendShard BackendShard;

typedef struct BackendReq {
    QueueWork work;                 /* hand-over to the queue (first) */
    uint64_t gen;                   /* be->drain_gen when submitted */
    StrataBackend *be;
    StrataQueue *queue;             /* where it runs */
    BackendShard *shard;            /* the backend's shard of that queue */
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
    struct BackendReq *next;        /* free list */
} BackendReq;

/* The backend's state for one queue; only that queue's thread writes
 * in_flight. */
struct BackendShard {
    SpinLock lock;                  /* free_list, alive */
    BackendReq *free_list;
    int alive;                      /* descriptors out: submitted, callback
                                       not yet run */
    int64_t submitted;              /* under lock: submissions ever */
    int64_t entered;                /* this queue's thread only: of those,
                                       that reached the entry */
    int in_flight;                  /* requests inside backend_co_* */
} __attribute__((aligned(64)));

struct StrataBackend {
    StrataContext *ctx;
    char *name;
    BlockChild *root;
    bool write_cache;
    StrataErrorAction on_read_error, on_write_error;

    bool stopped;                   /* atomic; changes under @lock */
    StrataStopCallback *stop_cb;
    void *stop_opaque;

    int quiesce_counter;            /* atomic */
    uint64_t drain_gen;             /* atomic: drained sections begun */
    SpinLock lock;                  /* entry_queue, parked, stop/resume */
    int parked;                     /* in flight but stopped on an error */
    CoQueue entry_queue;            /* waiting for quiesce/stop to end */

    BackendShard *shard[STRATA_MAX_QUEUES];  /* created on first use */
    bool fence_asym;                /* io_lockfree_tracking() at creation */
};

/* Whether a queue other than the first has submitted here. */
static bool backend_other_queues(StrataBackend *be)
{
    for (unsigned q = 1; q < STRATA_MAX_QUEUES; q++) {
        if (__atomic_load_n(&be->shard[q], __ATOMIC_SEQ_CST)) {
            return true;
        }
    }
    return false;
}

static BackendShard *backend_shard(StrataBackend *be, unsigned index)
{
    BackendShard *sh = __atomic_load_n(&be->shard[index], __ATOMIC_ACQUIRE);

    if (G_UNLIKELY(!sh)) {
        /* The first submission on this queue (any thread; warm-up). */
        BackendShard *expected = NULL;
        if (posix_memalign((void **)&sh, 64, sizeof(*sh))) {
            g_error("out of memory for a backend shard");
        }
        memset(sh, 0, sizeof(*sh));
        spin_init(&sh->lock);
        /* Sequentially consistent, then a full fence (once per queue): a
         * drain that did not see this shard, and so sent no membarrier,
         * is seen by this queue's quiesce check, which follows. */
        if (!__atomic_compare_exchange_n(&be->shard[index], &expected, sh, false,
                                         __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE)) {
            free(sh);
            sh = expected;
        }
        atomic_thread_fence(memory_order_seq_cst);
    }
    return sh;
}

/* Sum of a shard field over the queues (drains, free). */
static int backend_sum(StrataBackend *be, size_t field_offset)
{
    int n = 0;

    for (unsigned q = 0; q < STRATA_MAX_QUEUES; q++) {
        BackendShard *sh = __atomic_load_n(&be->shard[q], __ATOMIC_ACQUIRE);
        if (sh) {
            n += __atomic_load_n((int *)((char *)sh + field_offset), __ATOMIC_ACQUIRE);
        }
    }
    return n;
}

#define BACKEND_SUM(be, field) backend_sum((be), offsetof(BackendShard, field))

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
    __atomic_add_fetch(&be->drain_gen, 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&be->quiesce_counter, 1, __ATOMIC_SEQ_CST);
    /* The slow side of the entry's fence: every other queue's thread has
     * either made its count visible or will see the quiesce count. */
    if (be->fence_asym && backend_other_queues(be)) {
        io_membarrier();
    }
    /* Mark the graph too: a filter holding a request (a blkdebug
     * breakpoint) sees it and lets go, so the drain can finish. */
    __atomic_add_fetch(&be_root(be)->quiesce_counter, 1, __ATOMIC_SEQ_CST);
}

static void backend_wake_entry(StrataBackend *be)
{
    spin_lock(&be->lock);
    co_queue_restart_all(&be->entry_queue);
    spin_unlock(&be->lock);
}

void backend_unquiesce(StrataBackend *be)
{
    g_assert(be->quiesce_counter > 0);
    __atomic_sub_fetch(&be_root(be)->quiesce_counter, 1, __ATOMIC_SEQ_CST);
    if (__atomic_sub_fetch(&be->quiesce_counter, 1, __ATOMIC_SEQ_CST) == 0) {
        backend_wake_entry(be);
    }
}

static inline bool backend_closed(StrataBackend *be)
{
    return __atomic_load_n(&be->quiesce_counter, __ATOMIC_SEQ_CST) > 0 ||
           __atomic_load_n(&be->stopped, __ATOMIC_SEQ_CST);
}

static inline void backend_leave_request(StrataBackend *be, BackendShard *sh)
{
    /* Only this queue's thread writes its count. */
    __atomic_store_n(&sh->in_flight, sh->in_flight - 1, __ATOMIC_RELEASE);
    ctx_note_idle(be->ctx);
}

/*
 * Enter a request on this queue's shard.  The count goes up before the
 * quiesce check, with a full barrier, and a drain raises the quiesce
 * count before it sums the shards: one of the two sees the other, so a
 * drain never misses a request that slipped in.
 */
/*
 * The submitted request whose coroutine is about to enter (set by
 * backend_aio_co_entry, read by the entry before the coroutine first
 * yields, so no other request of this thread can run in between): a
 * request submitted before a drained section began is in flight for that
 * section, which waits for it instead of parking it.
 */
static __thread const BackendReq *tls_entering;

static BackendShard *backend_co_enter_request(StrataBackend *be)
{
    BackendShard *sh = backend_shard(be, queue_current()->index);
    const BackendReq *r = tls_entering;

    tls_entering = NULL;
    if (r) {
        __atomic_store_n(&sh->entered, sh->entered + 1, __ATOMIC_RELEASE);
    }
    /* Drains run in the thread of the first queue: its own requests need
     * no barrier against them (program order).  Others need one between
     * the count and the quiesce check: the asymmetric fence (a compiler
     * barrier here, membarrier(2) in backend_quiesce) where the kernel
     * has it, else a full barrier here on every request. */
    bool first = sh == be->shard[0];
    for (;;) {
        if (first || be->fence_asym) {
            __atomic_store_n(&sh->in_flight, sh->in_flight + 1, __ATOMIC_RELAXED);
            __atomic_signal_fence(__ATOMIC_SEQ_CST);
        } else {
            __atomic_fetch_add(&sh->in_flight, 1, __ATOMIC_SEQ_CST);
        }
        if (G_LIKELY(!backend_closed(be))) {
            return sh;
        }
        if (r && !__atomic_load_n(&be->stopped, __ATOMIC_SEQ_CST) &&
            r->gen < __atomic_load_n(&be->drain_gen, __ATOMIC_SEQ_CST)) {
            return sh;      /* submitted before the drain began */
        }
        backend_leave_request(be, sh);
        spin_lock(&be->lock);
        while (backend_closed(be)) {
            co_queue_wait_spin(&be->entry_queue, &be->lock);
        }
        spin_unlock(&be->lock);
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
    case STRATA_ERROR_ACTION_STOP: {
        bool first;
        spin_lock(&be->lock);
        first = !be->stopped;
        __atomic_store_n(&be->stopped, true, __ATOMIC_SEQ_CST);
        be->parked++;
        spin_unlock(&be->lock);
        ctx_note_idle(be->ctx);
        if (first && be->stop_cb) {
            be->stop_cb(be->stop_opaque, *ret, is_write);
        }
        /* A resume inside a drained section must not send the retry into
         * the drained graph (a reopen may be swapping its files): stay
         * parked, and so invisible to drains, until the section ends. */
        spin_lock(&be->lock);
        while (backend_closed(be)) {
            co_queue_wait_spin(&be->entry_queue, &be->lock);
        }
        be->parked--;
        spin_unlock(&be->lock);
        return true;
    }
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
    return __atomic_load_n(&be->stopped, __ATOMIC_SEQ_CST);
}

/* Any thread: the waiters are woken in their own queues' loops. */
STRATA_EXPORT void strata_backend_resume(StrataBackend *be)
{
    spin_lock(&be->lock);
    if (be->stopped) {
        __atomic_store_n(&be->stopped, false, __ATOMIC_SEQ_CST);
        /* Wake everyone: parked requests retry (a drain may be waiting
         * for them), and new ones re-check the quiesce counter. */
        co_queue_restart_all(&be->entry_queue);
    }
    spin_unlock(&be->lock);
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

    BackendShard *sh = backend_co_enter_request(be);
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
    backend_leave_request(be, sh);
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
    BackendShard *sh = backend_co_enter_request(be);

    do {
        ret = node_co_flush(be_root(be));
    } while (ret < 0 && backend_co_handle_error(be, true, &ret));
    backend_leave_request(be, sh);
    return ret;
}

int64_t backend_co_get_length(StrataBackend *be)
{
    return node_get_length(be_root(be));
}

int backend_co_truncate(StrataBackend *be, int64_t size, PreallocMode prealloc,
                        StrataError **errp)
{
    BackendShard *sh = backend_co_enter_request(be);
    int ret = node_co_truncate(be_root(be), size, prealloc, errp);
    backend_leave_request(be, sh);
    return ret;
}

int backend_co_block_status(StrataBackend *be, int64_t offset, int64_t bytes,
                            int64_t *pnum)
{
    BackendShard *sh = backend_co_enter_request(be);
    int ret = check_device_range(be, offset, bytes);
    if (ret == 0) {
        ret = node_co_block_status(be_root(be), offset, bytes, pnum);
    }
    backend_leave_request(be, sh);
    return ret;
}

/* Drain: park new requests and wait for those in flight on every queue
 * (parked ones excepted: they wait for the embedder's resume, which a
 * drain must not block).  In the owner of the context's loop. */
static bool backend_busy_fn(void *opaque)
{
    StrataBackend *be = opaque;
    int parked;
    int64_t not_entered = 0;

    for (unsigned q = 0; q < STRATA_MAX_QUEUES; q++) {
        BackendShard *sh = __atomic_load_n(&be->shard[q], __ATOMIC_ACQUIRE);
        if (sh) {
            spin_lock(&sh->lock);
            not_entered += sh->submitted;
            spin_unlock(&sh->lock);
            not_entered -= __atomic_load_n(&sh->entered, __ATOMIC_ACQUIRE);
        }
    }
    spin_lock(&be->lock);
    parked = be->parked;
    spin_unlock(&be->lock);
    return not_entered > 0 || BACKEND_SUM(be, in_flight) > parked;
}

bool backend_busy(StrataBackend *be)
{
    return backend_busy_fn(be);
}

static void backend_drain_begin_fn(void *opaque)
{
    StrataBackend *be = opaque;

    backend_quiesce(be);
    /* Filters that hold requests (throttle) let them go. */
    node_drained_notify(be_root(be), true);
    ctx_wait_idle(be->ctx, backend_busy_fn, be);
}

bool backend_queue_busy(StrataBackend *be, unsigned index)
{
    BackendShard *sh = __atomic_load_n(&be->shard[index], __ATOMIC_ACQUIRE);
    return sh && __atomic_load_n(&sh->alive, __ATOMIC_ACQUIRE) > 0;
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
    }
    g_assert_not_reached();
}

static BackendReq *req_alloc(StrataBackend *be, StrataQueue *q)
{
    BackendShard *sh = backend_shard(be, q->index);
    BackendReq *r;

    spin_lock(&sh->lock);
    r = sh->free_list;
    if (r) {
        sh->free_list = r->next;
    }
    /* Under the lock, atomic for the readers that sum it without. */
    __atomic_add_fetch(&sh->alive, 1, __ATOMIC_RELAXED);
    sh->submitted++;
    spin_unlock(&sh->lock);
    if (!r) {
        r = g_new(BackendReq, 1);   /* warm-up only: descriptors are reused */
    }
    memset(r, 0, sizeof(*r));
    r->be = be;
    r->queue = q;
    r->shard = sh;
    return r;
}

static void backend_aio_co_entry(void *opaque)
{
    BackendReq *r = opaque;
    StrataBackend *be = r->be;
    StrataCompletion *cb = r->cb;
    void *cb_opaque = r->opaque;
    int64_t ret;

    tls_entering = r;
    ret = backend_co_run(r);
    if (tls_entering) {
        /* Rejected before the entry (bad vector; get_length). */
        tls_entering = NULL;
        BackendShard *s = r->shard;
        __atomic_store_n(&s->entered, s->entered + 1, __ATOMIC_RELEASE);
    }
    BackendShard *sh = r->shard;

    if (r->pnum_out) {
        *r->pnum_out = r->pnum;
    }
    /* The descriptor goes back before the callback so that a callback
     * which submits again reuses it; it stays counted as alive until the
     * callback returned (the backend and its queue outlive it). */
    spin_lock(&sh->lock);
    r->next = sh->free_list;
    sh->free_list = r;
    spin_unlock(&sh->lock);
    cb(cb_opaque, ret);
    spin_lock(&sh->lock);
    __atomic_sub_fetch(&sh->alive, 1, __ATOMIC_RELEASE);
    spin_unlock(&sh->lock);
    ctx_note_idle(be->ctx);
}

static void backend_work_run(QueueWork *w)
{
    BackendReq *r = (BackendReq *)w;
    loop_co_spawn(r->queue->loop, backend_aio_co_entry, r);
}

static int backend_submit(StrataBackend *be, BackendReq *tmpl)
{
    if (!tmpl->cb) {
        return -EINVAL;
    }
    StrataQueue *q = queue_for_submit(be->ctx);
    BackendReq *r = req_alloc(be, q);
    BackendShard *sh = r->shard;
    *r = *tmpl;
    r->be = be;
    r->queue = q;
    r->shard = sh;
    r->next = NULL;
    /* Internal request flags are not for callers of the public API. */
    r->flags &= REQ_PUBLIC_MASK;
    r->gen = __atomic_load_n(&be->drain_gen, __ATOMIC_SEQ_CST);

    if (loop_is_owner(q->loop)) {
        /* The coroutine is scheduled, never entered here: the callback
         * cannot run inside this call. */
        loop_co_spawn(q->loop, backend_aio_co_entry, r);
        return 0;
    }
    r->work.run = backend_work_run;
    queue_submit_work(q, &r->work);
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
    Loop *loop = queue_for_submit(be->ctx)->loop;

    g_assert(!co_in_coroutine());
    tmpl->cb = sync_complete;
    tmpl->opaque = &s;
    tmpl->pnum_out = pnum;

    if (loop_is_owner(loop)) {
        /* Only the owner may run the loop: run it until done. */
        int ret = backend_submit(be, tmpl);
        g_assert(ret == 0);
        while (!s.done) {
            loop_run_once(loop, true);
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
    g_assert(!co_in_coroutine());
    strata_context_call(be->ctx, backend_drain_begin_fn, be);
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
    be->fence_asym = io_lockfree_tracking();
    co_queue_init(&be->entry_queue);
    spin_init(&be->lock);

    be->root = backend_attach_root(be, root, perm & PERM_ALL, shared & PERM_ALL, errp);
    if (!be->root) {
        g_free(be->name);
        g_free(be);
        return NULL;
    }
    mutex_lock(&ctx->queues_lock);
    ctx->backends = g_list_append(ctx->backends, be);
    mutex_unlock(&ctx->queues_lock);
    return be;
}

static bool backend_alive(void *opaque)
{
    return BACKEND_SUM((StrataBackend *)opaque, alive) > 0;
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
    if (strata_backend_is_stopped(be)) {
        be->on_read_error = be->on_write_error = STRATA_ERROR_ACTION_REPORT;
        strata_backend_resume(be);
    }
    /* Every request submitted so far completes before the backend goes,
     * including those waiting at the entry of a drained section the
     * embedder never ended: each callback runs exactly once, and no
     * coroutine may be left waiting on a queue inside freed memory. */
    int q = __atomic_load_n(&be->quiesce_counter, __ATOMIC_SEQ_CST);
    if (q > 0) {
        /* Give back this backend's share of the root's counter too, or a
         * filter there (blkdebug) would act drained for ever. */
        __atomic_sub_fetch(&be_root(be)->quiesce_counter, q, __ATOMIC_SEQ_CST);
        g_assert(be_root(be)->quiesce_counter >= 0);
        __atomic_store_n(&be->quiesce_counter, 0, __ATOMIC_SEQ_CST);
        backend_wake_entry(be);
    }
    ctx_wait_idle(be->ctx, backend_alive, be);
    mutex_lock(&be->ctx->queues_lock);
    be->ctx->backends = g_list_remove(be->ctx->backends, be);
    mutex_unlock(&be->ctx->queues_lock);
    node_detach_child(be->root);
    for (unsigned i = 0; i < STRATA_MAX_QUEUES; i++) {
        BackendShard *sh = be->shard[i];
        if (!sh) {
            continue;
        }
        g_assert(sh->in_flight == 0 && sh->alive == 0);
        while (sh->free_list) {
            BackendReq *r = sh->free_list;
            sh->free_list = r->next;
            g_free(r);
        }
        free(sh);
    }
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
