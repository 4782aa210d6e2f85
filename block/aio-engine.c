/*
 * AIO engine table, per-context engine state and test hooks
 * SPDX-License-Identifier: MIT
 *
 * The optional engines are whole files that the build compiles only when
 * their library was found (block/meson.build); this table is the one place
 * that knows which ones exist.  It uses strong references on purpose: a
 * weak reference would not pull an engine's object file out of the static
 * archive the tests and tools link, and the engine would silently vanish.
 */
#include <stdlib.h>
#include <string.h>
#include <glib.h>
#include "config-host.h"
#include "block/aio-engine.h"

static const AioEngineOps *const aio_engines[AIO_ENGINE__MAX] = {
    [AIO_ENGINE_THREADS] = &aio_threads_ops,
#if CONFIG_LIBAIO
    [AIO_ENGINE_NATIVE] = &aio_linux_ops,
#endif
#if CONFIG_IO_URING
    [AIO_ENGINE_IO_URING] = &aio_io_uring_ops,
#endif
};

const AioEngineOps *aio_engine_get(AioEngineId id)
{
    if ((unsigned)id >= AIO_ENGINE__MAX) {
        return NULL;
    }
    return aio_engines[id];
}

void *aio_engine_queue_state(const AioEngineOps *ops, StrataQueue *q,
                             StrataError **errp)
{
    g_assert((unsigned)ops->id < AIO_ENGINE__MAX);

    if (!q->engine[ops->id]) {
        /* A further queue makes its state in its own loop's thread, on its
         * first request, and keeps that thread: bind it there.  The first
         * queue's state is made by the control path and its loop may move
         * to a loop thread later. */
        void *state = q->index && ops->thread_init && loop_is_owner(q->loop)
                      ? ops->thread_init(q->loop, errp)
                      : ops->ctx_init(q->loop, errp);
        if (!state) {
            return NULL;
        }
        q->engine[ops->id] = state;
        q->engine_free[ops->id] = ops->ctx_cleanup;
    }
    return q->engine[ops->id];
}

void *aio_engine_ctx_state(const AioEngineOps *ops, StrataContext *ctx,
                           StrataError **errp)
{
    return aio_engine_queue_state(ops, ctx->queues[0], errp);
}

/*
 * Test hooks.  Atomics rather than a lock: a test sets them from its main
 * thread while the threads engine may apply them in a loop thread, and the
 * count must never be consumed twice.
 */
static int short_count[AIO_ENGINE__MAX];
static int64_t short_bytes_of[AIO_ENGINE__MAX];
static unsigned queue_depth_of[AIO_ENGINE__MAX];

void aio_engine_test_inject_short(AioEngineId id, int count, int64_t short_bytes)
{
    g_assert((unsigned)id < AIO_ENGINE__MAX);
    g_assert(short_bytes >= 0);
    __atomic_store_n(&short_bytes_of[id], short_bytes, __ATOMIC_RELAXED);
    g_atomic_int_set(&short_count[id], count > 0 ? count : 0);
}

int64_t aio_engine_apply_short(AioEngineId id, int64_t result)
{
    g_assert((unsigned)id < AIO_ENGINE__MAX);
    if (result < 0) {
        return result;
    }
    for (;;) {
        int count = g_atomic_int_get(&short_count[id]);
        if (count <= 0) {
            return result;
        }
        if (g_atomic_int_compare_and_exchange(&short_count[id], count,
                                              count - 1)) {
            break;
        }
    }
    int64_t limit = __atomic_load_n(&short_bytes_of[id], __ATOMIC_RELAXED);
    return result < limit ? result : limit;
}

void aio_engine_test_set_queue_depth(AioEngineId id, unsigned depth)
{
    g_assert((unsigned)id < AIO_ENGINE__MAX);
    __atomic_store_n(&queue_depth_of[id], depth, __ATOMIC_RELAXED);
}

unsigned aio_engine_queue_depth(AioEngineId id, unsigned dflt)
{
    g_assert((unsigned)id < AIO_ENGINE__MAX);
    unsigned depth = __atomic_load_n(&queue_depth_of[id], __ATOMIC_RELAXED);
    return depth ? depth : dflt;
}

bool aio_engine_env_flag(const char *name)
{
    const char *env = getenv(name);
    return env && *env && strcmp(env, "0") != 0;
}

int aio_engine_probe_once(int *cache, int (*probe)(void))
{
    int known = g_atomic_int_get(cache);

    if (!known) {
        int ret = probe();
        known = ret == 0 ? 1 : ret;
        g_atomic_int_set(cache, known);
    }
    return known;
}

/* ---- early submission (see block/aio-engine.h) ---------------------------- */

void aio_early_init(AioEarly *e)
{
    *e = (AioEarly) {
        .disabled = aio_engine_env_flag("STRATA_AIO_NO_EARLY_SUBMIT"),
    };
}

void aio_early_flush_begin(AioEarly *e, unsigned count, unsigned in_kernel)
{
    if (count + in_kernel > e->peak) {
        e->peak = count + in_kernel;
    }
    e->flush_gen = e->gen++;
    e->flush_count = count;
    e->flush_inline = 0;
}

void aio_early_flush_end(AioEarly *e)
{
    if (e->flush_count) {
        e->inline_done = e->flush_inline * 2 >= e->flush_count;
    }
}

bool aio_early_submit_now(const AioEarly *e, unsigned queued)
{
    if (e->disabled || e->inline_done || e->peak < AIO_EARLY_MIN_PEAK) {
        return false;
    }
    unsigned batch = MIN(e->peak / 4, AIO_EARLY_MAX_BATCH);
    return queued >= batch;
}

/* ---- a short spin before the waiter sleeps (see block/aio-engine.h) ------ */

static int64_t aio_spin_setting = -1;   /* -1: not read yet */

int64_t aio_spin_ns(unsigned inflight, int64_t timeout_ns)
{
    int64_t ns = __atomic_load_n(&aio_spin_setting, __ATOMIC_RELAXED);

    if (ns < 0) {
        const char *env = getenv("STRATA_AIO_WAIT_SPIN_NS");
        guint64 v = AIO_SPIN_DEFAULT_NS;

        if (env && *env && !g_ascii_string_to_unsigned(env, 10, 0, AIO_SPIN_MAX_NS, &v, NULL)) {
            g_printerr("strata: STRATA_AIO_WAIT_SPIN_NS: must be a whole number of "
                       "nanoseconds in [0, %d], got '%s'; using %d\n",
                       AIO_SPIN_MAX_NS, env, AIO_SPIN_DEFAULT_NS);
            v = AIO_SPIN_DEFAULT_NS;
        }
        /* Racing first calls store the same value. */
        ns = (int64_t)v;
        __atomic_store_n(&aio_spin_setting, ns, __ATOMIC_RELAXED);
    }
    if (inflight < AIO_SPIN_MIN_INFLIGHT || timeout_ns == 0) {
        return 0;
    }
    return timeout_ns > 0 && timeout_ns < ns ? timeout_ns : ns;
}

void aio_spin_test_set_ns(int64_t ns)
{
    g_assert(ns >= 0 && ns <= AIO_SPIN_MAX_NS);
    __atomic_store_n(&aio_spin_setting, ns, __ATOMIC_RELAXED);
}

bool aio_spin_until(bool (*ready)(void *opaque), void *opaque, int64_t ns)
{
    if (ns <= 0) {
        return false;
    }
    int64_t end = clock_ns() + ns;
    do {
        if (ready(opaque)) {
            return true;
        }
        cpu_relax();
    } while (clock_ns() < end);
    return ready(opaque);
}
