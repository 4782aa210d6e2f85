/*
 * Contexts: one event loop, its buffer pool and its AIO engine state
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include "block/block-int.h"
#include "block/backend-int.h"
#include "block/memregion.h"
#include "strata/strata-glib.h"
#include "util/thread.h"

STRATA_EXPORT StrataContext *strata_context_new(StrataError **errp)
{
    StrataContext *ctx = g_new0(StrataContext, 1);
    ctx->pool = bufpool_new(0, 0);
    StrataQueue *q = queue_create(ctx, 0, errp);

    if (!q) {
        bufpool_free(ctx->pool);
        g_free(ctx);
        return NULL;
    }
    mutex_init(&ctx->queues_lock);
    ctx->queues[0] = q;
    ctx->loop = q->loop;
    ctx->nodes = g_hash_table_new(g_str_hash, g_str_equal);
    /* The creating thread owns the loop (loop_new) until a loop thread is
     * started; it is also the thread's default loop for new coroutines. */
    if (!loop_current()) {
        loop_attach_current(ctx->loop);
    }
    return ctx;
}

/* Close what the embedder left open: backends first, then nodes that no
 * other node uses, until none remain. */
static void context_close_all(StrataContext *ctx)
{
    while (ctx->backends) {
        strata_backend_free(ctx->backends->data);
    }
    while (g_hash_table_size(ctx->nodes)) {
        GHashTableIter it;
        gpointer value;
        StrataNode *top = NULL;
        g_hash_table_iter_init(&it, ctx->nodes);
        while (g_hash_table_iter_next(&it, NULL, &value)) {
            StrataNode *n = value;
            if (!n->parents) {
                top = n;
                break;
            }
        }
        g_assert(top);
        top->refcnt = 1;
        node_unref(top);
    }
}

STRATA_EXPORT void strata_context_free(StrataContext *ctx)
{
    if (!ctx) {
        return;
    }
    StrataQueue *q0 = ctx->queues[0];
    g_assert(!q0->thread);
    /* Closing runs the loop. */
    g_assert(loop_is_owner(ctx->loop));
    for (unsigned i = 1; i < STRATA_MAX_QUEUES; i++) {
        /* The embedder frees its queues first (their loops are theirs). */
        g_assert(!ctx->queues[i]);
    }
    context_close_all(ctx);
    memregion_cleanup(ctx);
    queue_destroy(q0);
    g_hash_table_destroy(ctx->nodes);
    bufpool_free(ctx->pool);
    mutex_cleanup(&ctx->queues_lock);
    g_free(ctx);
}

STRATA_EXPORT bool strata_context_run_once(StrataContext *ctx, bool blocking)
{
    return strata_queue_run_once(ctx->queues[0], blocking);
}

STRATA_EXPORT bool strata_context_start_thread(StrataContext *ctx, StrataError **errp)
{
    return strata_queue_start_thread(ctx->queues[0], errp);
}

STRATA_EXPORT void strata_context_stop_thread(StrataContext *ctx)
{
    strata_queue_stop_thread(ctx->queues[0]);
}

STRATA_EXPORT GSource *strata_context_create_gsource(StrataContext *ctx)
{
    return strata_queue_create_gsource(ctx->queues[0]);
}

typedef struct ContextCall {
    StrataCallFunc *fn;
    void *opaque;
    Mutex lock;
    Cond cond;
    bool done;
} ContextCall;

static void context_call_bh(void *opaque)
{
    ContextCall *c = opaque;
    c->fn(c->opaque);
    mutex_lock(&c->lock);
    c->done = true;
    cond_signal(&c->cond);
    mutex_unlock(&c->lock);
}

STRATA_EXPORT void strata_context_call(StrataContext *ctx, StrataCallFunc *fn,
                                       void *opaque)
{
    if (loop_is_owner(ctx->loop)) {
        fn(opaque);
        return;
    }
    /* The owner runs it: the loop thread, or the thread that drives the
     * loop through strata_context_run_once() or a GSource. */
    ContextCall c = { .fn = fn, .opaque = opaque };
    mutex_init(&c.lock);
    cond_init(&c.cond);
    loop_oneshot(ctx->loop, context_call_bh, &c);
    mutex_lock(&c.lock);
    while (!c.done) {
        cond_wait(&c.cond, &c.lock);
    }
    mutex_unlock(&c.lock);
    mutex_cleanup(&c.lock);
    cond_cleanup(&c.cond);
}

STRATA_EXPORT void strata_context_set_aio_max_batch(StrataContext *ctx,
                                                    unsigned max_batch)
{
    loop_set_aio_max_batch(ctx->loop, max_batch);
}

STRATA_EXPORT void strata_context_set_poll_max_ns(StrataContext *ctx,
                                                  int64_t max_ns)
{
    loop_set_poll_params(ctx->loop, max_ns, 0, 0);
}
