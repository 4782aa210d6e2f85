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
    Loop *loop = loop_new(errp);
    if (!loop) {
        return NULL;
    }
    StrataContext *ctx = g_new0(StrataContext, 1);
    ctx->loop = loop;
    ctx->own_loop = true;
    ctx->pool = bufpool_new(0, 0);
    ctx->nodes = g_hash_table_new(g_str_hash, g_str_equal);
    /* The creating thread owns the loop (loop_new) until a loop thread is
     * started; it is also the thread's default loop for new coroutines. */
    if (!loop_current()) {
        loop_attach_current(loop);
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
    g_assert(!ctx->thread);
    /* Closing runs the loop. */
    g_assert(loop_is_owner(ctx->loop));
    context_close_all(ctx);
    for (unsigned i = 0; i < G_N_ELEMENTS(ctx->engine); i++) {
        if (ctx->engine[i] && ctx->engine_free[i]) {
            ctx->engine_free[i](ctx->engine[i]);
        }
    }
    memregion_cleanup(ctx);
    /* Let pending bottom halves (completions, wake-ups) run out. */
    while (loop_run_once(ctx->loop, false)) {
    }
    g_hash_table_destroy(ctx->nodes);
    bufpool_free(ctx->pool);
    if (loop_current() == ctx->loop) {
        loop_attach_current(NULL);
    }
    if (ctx->own_loop) {
        loop_free(ctx->loop);
    }
    g_free(ctx);
}

STRATA_EXPORT bool strata_context_run_once(StrataContext *ctx, bool blocking)
{
    return loop_run_once(ctx->loop, blocking);
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
static gpointer context_thread(gpointer opaque)
{
    StrataContext *ctx = opaque;

    loop_acquire(ctx->loop);
    loop_attach_current(ctx->loop);
    while (!g_atomic_int_get(&ctx->thread_stop)) {
        loop_run_once(ctx->loop, true);
    }
    loop_attach_current(NULL);
    loop_release(ctx->loop);
    return NULL;
}

STRATA_EXPORT bool strata_context_start_thread(StrataContext *ctx, StrataError **errp)
{
    g_assert(!ctx->thread);
    /* Only the owner can hand the loop over. */
    g_assert(loop_is_owner(ctx->loop));
    g_atomic_int_set(&ctx->thread_stop, 0);
    loop_release(ctx->loop);
    ctx->thread = g_thread_try_new("strata-loop", context_thread, ctx, NULL);
    if (!ctx->thread) {
        loop_acquire(ctx->loop);
        error_setg(errp, "Could not start the context's loop thread");
        return false;
    }
    if (loop_current() == ctx->loop) {
        loop_attach_current(NULL);
    }
    return true;
}

STRATA_EXPORT void strata_context_stop_thread(StrataContext *ctx)
{
    if (!ctx->thread) {
        return;
    }
    g_assert(ctx->thread != g_thread_self());
    g_atomic_int_set(&ctx->thread_stop, 1);
    loop_wake(ctx->loop);
    g_thread_join(ctx->thread);
    ctx->thread = NULL;
    loop_acquire(ctx->loop);
    if (!loop_current()) {
        loop_attach_current(ctx->loop);
    }
}

STRATA_EXPORT GSource *strata_context_create_gsource(StrataContext *ctx)
{
    g_assert(!ctx->thread);
    return loop_create_gsource(ctx->loop);
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
