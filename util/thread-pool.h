/*
 * Thread pool for blocking work (SPDX-License-Identifier: MIT)
 *
 * Worker threads run blocking functions (preadv2, fdatasync, fallocate,
 * ioctls) and complete back in the submitting loop's thread.  The queue is
 * bounded: a coroutine that submits to a full queue waits.
 */
#ifndef STRATA_UTIL_THREAD_POOL_H
#define STRATA_UTIL_THREAD_POOL_H

#include "util/loop.h"

typedef struct ThreadPool ThreadPool;

/* Work function run in a worker thread; returns 0 or -errno by convention. */
typedef int ThreadPoolFunc(void *arg);
/* Completion, run in the pool's loop thread with the worker's return value. */
typedef void ThreadPoolCompletion(void *opaque, int ret);

/*
 * Default sizes: 64 workers at most, 4096 queued items (a value <= 0 picks
 * the default).  @max_queue bounds the items waiting for a worker, not the
 * running ones.  Workers start on demand and exit after 5 s idle.  Call
 * from @loop's thread.
 */
ThreadPool *thread_pool_new(Loop *loop, int max_workers, int max_queue);
/* Waits for queued and running work to finish, joins the workers, and runs
 * the completions still pending, in the calling thread (the loop's thread,
 * outside any coroutine).  No coroutine may still be waiting for queue
 * space (asserted); submitting from a completion run here asserts. */
void thread_pool_free(ThreadPool *pool);

/*
 * Start workers now until at least @n run (at most max_workers) and keep
 * that many: they never exit on idle.  For users whose requests must not
 * start threads (and allocate) once under way, e.g. the threads AIO engine.
 * A smaller @n than an earlier call's keeps the larger.  Returns the number
 * of workers running (fewer than @n if a thread could not be created).
 * Any thread may call it.
 */
int thread_pool_keep_workers(ThreadPool *pool, int n);

/* How long an idle worker waits for work before it exits (tests, tuning). */
void thread_pool_set_idle_timeout_ns(ThreadPool *pool, int64_t ns);

/*
 * Coroutine form: run fn(arg) in a worker, yield, return its value.  Must
 * be called from a coroutine running in the pool's loop.  Waits (yields)
 * while the queue is full.
 */
int thread_pool_co_submit(ThreadPool *pool, ThreadPoolFunc *fn, void *arg);

/*
 * Callback form: returns 0 and @cb(opaque, ret) runs exactly once, later, in
 * the pool's loop thread; returns -EAGAIN when the queue is full (or no
 * worker thread can be started) and then @cb never runs.  Call from the
 * pool's loop thread.
 */
int thread_pool_submit(ThreadPool *pool, ThreadPoolFunc *fn, void *arg,
                       ThreadPoolCompletion *cb, void *opaque);

typedef struct ThreadPoolStats {
    uint64_t submitted, completed, queue_waits;
    int workers, queued;
} ThreadPoolStats;
void thread_pool_get_stats(ThreadPool *pool, ThreadPoolStats *out);

#endif
