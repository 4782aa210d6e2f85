/*
 * Queues: one thread's way into a context's graphs (multi-queue)
 * SPDX-License-Identifier: MIT
 *
 * A queue is a loop with one owner thread plus the state the request path
 * keeps per thread: the AIO engines' rings and contexts (created on first
 * use, in the thread that runs them), the node shards with that queue's
 * index (block/io.c) and the hand-over list for submissions from threads
 * that do not own the loop.  The context's first queue wraps the
 * context's own loop; the others come from strata_queue_new().
 *
 * The loop's user pointer is the queue (loop_set_user), so the request
 * path finds the current queue with one thread-local load.
 */
#include <errno.h>
#include <unistd.h>

#include "block/aio-engine.h"
#include "block/backend-int.h"
#include "block/block-int.h"
#include "block/memregion.h"
#include "strata/strata-glib.h"

/* The queue this thread chose with strata_queue_set_current(). */
static __thread StrataQueue *tls_submit_queue;

static void queue_submit_bh(void *opaque)
{
    StrataQueue *q = opaque;
    QueueWork *list;

    mutex_lock(&q->lock);
    list = q->pending_head;
    q->pending_head = q->pending_tail = NULL;
    mutex_unlock(&q->lock);

    while (list) {
        QueueWork *w = list;
        list = w->next;
        w->next = NULL;
        w->run(w);
    }
}

void queue_submit_work(StrataQueue *q, QueueWork *w)
{
    w->next = NULL;
    mutex_lock(&q->lock);
    if (q->pending_tail) {
        q->pending_tail->next = w;
    } else {
        q->pending_head = w;
    }
    q->pending_tail = w;
    mutex_unlock(&q->lock);
    loop_bh_schedule(q->submit_bh);
}

StrataQueue *queue_for_submit(StrataContext *ctx)
{
    StrataQueue *q = queue_current();

    if (q && q->ctx == ctx) {
        return q;
    }
    q = tls_submit_queue;
    if (q && q->ctx == ctx) {
        return q;
    }
    return ctx->queues[0];
}

static void queue_pool_bh(void *opaque)
{
    StrataQueue *q = opaque;

    bufpool_cache_flush(q->pool_cache);
}

/* The pool asks (any thread, under its lock) for this queue's cache. */
static void queue_pool_kick(void *opaque)
{
    StrataQueue *q = opaque;

    loop_bh_schedule(q->pool_bh);
}

StrataQueue *queue_create(StrataContext *ctx, unsigned index, StrataError **errp)
{
    Loop *loop = loop_new(errp);

    if (!loop) {
        return NULL;
    }
    StrataQueue *q = g_new0(StrataQueue, 1);
    q->ctx = ctx;
    q->index = index;
    q->loop = loop;
    mutex_init(&q->lock);
    q->submit_bh = loop_bh_new(loop, queue_submit_bh, q);
    q->pool_bh = loop_bh_new(loop, queue_pool_bh, q);
    q->pool_cache = bufpool_cache_new(ctx->pool, queue_pool_kick, q);
    loop_set_user(loop, q);
    return q;
}

/* In the owner thread, with nothing in flight on the queue. */
void queue_destroy(StrataQueue *q)
{
    g_assert(!q->thread);
    g_assert(loop_is_owner(q->loop));
    Loop *attached = loop_current();
    loop_attach_current(q->loop);
    for (unsigned i = 0; i < AIO_ENGINE__MAX; i++) {
        if (q->engine[i] && q->engine_free[i]) {
            q->engine_free[i](q->engine[i]);
        }
        /* Hand-over work still pending (block/memregion.c) sees it gone. */
        q->engine[i] = NULL;
    }
    /* Let pending bottom halves (completions, wake-ups) run out. */
    while (loop_run_once(q->loop, false)) {
    }
    loop_attach_current(attached == q->loop ? NULL : attached);
    g_assert(!q->pending_head);
    bufpool_cache_free(q->pool_cache);
    loop_bh_delete(q->pool_bh);
    loop_bh_delete(q->submit_bh);
    loop_free(q->loop);
    mutex_cleanup(&q->lock);
    g_free(q);
}

static void wait_tick(void *opaque)
{
}

void ctx_wait_idle(StrataContext *ctx, bool (*busy)(void *), void *opaque)
{
    g_assert(loop_is_owner(ctx->loop));
    __atomic_add_fetch(&ctx->draining, 1, __ATOMIC_SEQ_CST);
    while (busy(opaque)) {
        /* A request that leaves on another queue wakes this loop
         * (ctx_note_idle); the timer covers a wake-up that raced with the
         * check above, so that no ordering fence sits on the data path. */
        LoopTimer t;
        loop_timer_init(&t, ctx->loop, wait_tick, NULL);
        loop_timer_mod(&t, clock_ns() + 200 * 1000);
        loop_run_once(ctx->loop, true);
        loop_timer_del(&t);
    }
    __atomic_sub_fetch(&ctx->draining, 1, __ATOMIC_SEQ_CST);
}

/* ---- public API ------------------------------------------------------------ */

STRATA_EXPORT StrataQueue *strata_context_get_queue(StrataContext *ctx)
{
    return ctx->queues[0];
}

STRATA_EXPORT unsigned strata_queue_get_index(const StrataQueue *q)
{
    return q->index;
}

STRATA_EXPORT StrataQueue *strata_queue_new(StrataContext *ctx, StrataError **errp)
{
    StrataQueue *q = NULL;
    unsigned index;

    mutex_lock(&ctx->queues_lock);
    for (index = 1; index < STRATA_MAX_QUEUES && ctx->queues[index]; index++) {
    }
    if (index == STRATA_MAX_QUEUES) {
        mutex_unlock(&ctx->queues_lock);
        error_set(errp, STRATA_ERROR_GENERIC, ENOSPC,
                  "A context has at most %d queues", STRATA_MAX_QUEUES);
        return NULL;
    }
    q = queue_create(ctx, index, errp);
    if (q) {
        ctx->queues[index] = q;
    }
    mutex_unlock(&ctx->queues_lock);
    return q;
}

static bool queue_busy(StrataQueue *q)
{
    bool busy = false;

    mutex_lock(&q->ctx->queues_lock);
    for (GList *l = q->ctx->backends; l && !busy; l = l->next) {
        busy = backend_queue_busy(l->data, q->index);
    }
    mutex_unlock(&q->ctx->queues_lock);
    return busy;
}

STRATA_EXPORT void strata_queue_free(StrataQueue *q)
{
    if (!q) {
        return;
    }
    StrataContext *ctx = q->ctx;
    g_assert(q->index != 0);
    g_assert(!co_in_coroutine());
    /* Every request submitted on it completes first. */
    while (queue_busy(q)) {
        loop_run_once(q->loop, true);
    }
    if (tls_submit_queue == q) {
        tls_submit_queue = NULL;
    }
    mutex_lock(&ctx->queues_lock);
    memregion_forget_queue(ctx, q->index);
    ctx->queues[q->index] = NULL;
    mutex_unlock(&ctx->queues_lock);
    queue_destroy(q);
}

STRATA_EXPORT bool strata_queue_run_once(StrataQueue *q, bool blocking)
{
    return loop_run_once(q->loop, blocking);
}

/*
 * The loop thread.  Ownership is handed over through thread creation and
 * join, which order the two threads: the starting thread releases the loop
 * before creating this thread, which acquires it first thing; on the way
 * out this thread releases it before returning, and the thread that joins
 * it acquires it after the join.  Threads that submit in between find no
 * owner and wait for the request to complete, which it does once the new
 * owner runs the loop.
 */
static gpointer queue_thread(gpointer opaque)
{
    StrataQueue *q = opaque;

    loop_acquire(q->loop);
    loop_attach_current(q->loop);
    g_atomic_int_set(&q->tid, (int)gettid());
    while (!g_atomic_int_get(&q->thread_stop)) {
        loop_run_once(q->loop, true);
    }
    loop_attach_current(NULL);
    g_atomic_int_set(&q->tid, 0);
    loop_release(q->loop);
    return NULL;
}

STRATA_EXPORT bool strata_queue_start_thread(StrataQueue *q, StrataError **errp)
{
    g_assert(!q->thread);
    /* Only the owner can hand the loop over. */
    g_assert(loop_is_owner(q->loop));
    g_atomic_int_set(&q->thread_stop, 0);
    loop_release(q->loop);
    q->thread = g_thread_try_new(q->index ? "strata-queue" : "strata-loop",
                                 queue_thread, q, NULL);
    if (!q->thread) {
        loop_acquire(q->loop);
        error_setg(errp, "Could not start the loop thread of queue %u", q->index);
        return false;
    }
    if (loop_current() == q->loop) {
        loop_attach_current(NULL);
    }
    /* Its thread id is known once this returns (query-iothreads). */
    while (!g_atomic_int_get(&q->tid)) {
        g_usleep(20);
    }
    return true;
}

/* Runs in the loop thread.  A flag set from outside with loop_wake() is
 * no work the loop looks at once it has announced its sleep: a stop that
 * came between the thread's check and its epoll_wait was lost, and the
 * join hung (found by fuzz-qmp: object-del of an iothread). */
static void queue_stop_bh(void *opaque)
{
    StrataQueue *q = opaque;

    g_atomic_int_set(&q->thread_stop, 1);
}

STRATA_EXPORT void strata_queue_stop_thread(StrataQueue *q)
{
    if (!q->thread) {
        return;
    }
    g_assert(q->thread != g_thread_self());
    loop_oneshot(q->loop, queue_stop_bh, q);
    g_thread_join(q->thread);
    q->thread = NULL;
    loop_acquire(q->loop);
    if (!loop_current()) {
        loop_attach_current(q->loop);
    }
}

STRATA_EXPORT void strata_queue_set_current(StrataQueue *q)
{
    tls_submit_queue = q;
}

STRATA_EXPORT GSource *strata_queue_create_gsource(StrataQueue *q)
{
    g_assert(!q->thread);
    return loop_create_gsource(q->loop);
}
