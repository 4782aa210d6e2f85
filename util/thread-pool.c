/*
 * Thread pool for blocking work (SPDX-License-Identifier: MIT)
 *
 * Work items wait in a bounded FIFO guarded by one mutex; workers are
 * started on demand up to max_workers and exit after an idle period.  A
 * finished item goes on a completion list and a bottom half runs the
 * completions in the loop's thread, many per wake-up.
 *
 * The queue bound counts items waiting for a worker, not running ones.  A
 * coroutine that finds the queue full waits on a CoQueue; since workers
 * cannot touch a CoQueue (loop thread only), a worker that frees a slot
 * while someone waits schedules a bottom half that wakes the waiters.
 */
#include <assert.h>
#include <errno.h>
#include <glib.h>
#include "util/thread-pool.h"
#include "util/thread.h"

#define THREAD_POOL_DEFAULT_WORKERS 64
#define THREAD_POOL_DEFAULT_QUEUE 4096
#define THREAD_POOL_IDLE_NS (5 * G_GINT64_CONSTANT(1000000000))

typedef struct ThreadPoolElem {
    ThreadPoolFunc *fn;
    void *arg;
    ThreadPoolCompletion *cb;
    void *opaque;
    int ret;
    bool recycle;                /* from pool->free_elems, not a stack */
    struct ThreadPoolElem *next;
} ThreadPoolElem;

typedef struct ThreadPoolWorker {
    ThreadPool *pool;
    GThread *thread;
    struct ThreadPoolWorker *next;
} ThreadPoolWorker;

struct ThreadPool {
    Loop *loop;
    int max_workers;
    int min_workers;             /* kept running, never exit on idle */
    int max_queue;
    int64_t idle_ns;

    Mutex lock;                  /* guards everything down to "stats" */
    Cond work_cond;              /* workers wait for items or stop */
    Cond exit_cond;              /* thread_pool_free waits for workers */
    ThreadPoolElem *queue_head, *queue_tail;
    int queued;
    ThreadPoolElem *done_head, *done_tail;
    int workers;
    int idle;                    /* workers blocked on work_cond */
    int space_waiters;           /* coroutines waiting for a queue slot */
    bool stopping;
    ThreadPoolWorker *exited;    /* workers that returned, to be joined */
    uint64_t submitted, completed, queue_waits;

    /* Loop thread only. */
    LoopBH *completion_bh;
    LoopBH *space_bh;
    CoQueue space_queue;
    ThreadPoolElem *free_elems;
};

static gpointer thread_pool_worker(gpointer opaque)
{
    ThreadPoolWorker *self = opaque;
    ThreadPool *pool = self->pool;

    mutex_lock(&pool->lock);
    for (;;) {
        if (!pool->queue_head && !pool->stopping) {
            int64_t deadline = clock_ns() + pool->idle_ns;
            bool timed_out = false;

            pool->idle++;
            while (!pool->queue_head && !pool->stopping && !timed_out) {
                timed_out = !cond_wait_until(&pool->work_cond, &pool->lock,
                                             deadline);
                /* The kept ones wait on: no thread start (and its heap
                 * allocations) the next time the load comes back. */
                if (timed_out && pool->workers <= pool->min_workers) {
                    timed_out = false;
                    deadline = clock_ns() + pool->idle_ns;
                }
            }
            pool->idle--;
        }
        ThreadPoolElem *elem = pool->queue_head;
        if (!elem) {
            break;     /* idle too long, or stopping with an empty queue */
        }
        pool->queue_head = elem->next;
        if (!pool->queue_head) {
            pool->queue_tail = NULL;
        }
        pool->queued--;
        bool wake_space = pool->space_waiters > 0;
        mutex_unlock(&pool->lock);

        if (wake_space) {
            loop_bh_schedule(pool->space_bh);
        }
        elem->ret = elem->fn(elem->arg);

        mutex_lock(&pool->lock);
        elem->next = NULL;
        if (pool->done_tail) {
            pool->done_tail->next = elem;
        } else {
            pool->done_head = elem;
        }
        pool->done_tail = elem;
        pool->completed++;
        /* Scheduling under the lock keeps thread_pool_free() from deleting
         * the BH under our feet; the call is a few atomics. */
        loop_bh_schedule(pool->completion_bh);
    }
    pool->workers--;
    self->next = pool->exited;
    __atomic_store_n(&pool->exited, self, __ATOMIC_RELAXED);
    cond_broadcast(&pool->exit_cond);
    mutex_unlock(&pool->lock);
    return NULL;
}

/* A peek without the lock: a worker missed now is joined next time. */
static inline bool thread_pool_has_exited(ThreadPool *pool)
{
    return __atomic_load_n(&pool->exited, __ATOMIC_RELAXED) != NULL;
}

/* Join the workers that have exited.  Called without the lock. */
static void thread_pool_reap(ThreadPool *pool)
{
    mutex_lock(&pool->lock);
    ThreadPoolWorker *list = pool->exited;
    pool->exited = NULL;
    mutex_unlock(&pool->lock);

    while (list) {
        ThreadPoolWorker *w = list;
        list = w->next;
        g_thread_join(w->thread);
        g_free(w);
    }
}

static void thread_pool_run_completions(ThreadPool *pool)
{
    mutex_lock(&pool->lock);
    ThreadPoolElem *elem = pool->done_head;
    pool->done_head = pool->done_tail = NULL;
    mutex_unlock(&pool->lock);

    while (elem) {
        ThreadPoolElem *next = elem->next;
        ThreadPoolCompletion *cb = elem->cb;
        void *opaque = elem->opaque;
        int ret = elem->ret;

        /* Recycle before the callback, which may submit again.  A stack
         * element is dead once its coroutine is entered. */
        if (elem->recycle) {
            elem->next = pool->free_elems;
            pool->free_elems = elem;
        }
        cb(opaque, ret);
        elem = next;
    }
}

static void thread_pool_completion_bh(void *opaque)
{
    ThreadPool *pool = opaque;

    thread_pool_run_completions(pool);
    if (thread_pool_has_exited(pool)) {
        thread_pool_reap(pool);
    }
}

static void thread_pool_space_bh(void *opaque)
{
    ThreadPool *pool = opaque;

    mutex_lock(&pool->lock);
    int slots = pool->max_queue - pool->queued;
    mutex_unlock(&pool->lock);

    /* Waiters re-check when they run; one wake per free slot. */
    while (slots-- > 0 && co_queue_next(&pool->space_queue)) {
    }
}

ThreadPool *thread_pool_new(Loop *loop, int max_workers, int max_queue)
{
    ThreadPool *pool = g_new0(ThreadPool, 1);

    pool->loop = loop;
    pool->max_workers = max_workers > 0 ? max_workers
                                        : THREAD_POOL_DEFAULT_WORKERS;
    pool->max_queue = max_queue > 0 ? max_queue : THREAD_POOL_DEFAULT_QUEUE;
    pool->idle_ns = THREAD_POOL_IDLE_NS;
    mutex_init(&pool->lock);
    cond_init(&pool->work_cond);
    cond_init(&pool->exit_cond);
    co_queue_init(&pool->space_queue);
    pool->completion_bh = loop_bh_new(loop, thread_pool_completion_bh, pool);
    pool->space_bh = loop_bh_new(loop, thread_pool_space_bh, pool);
    return pool;
}

void thread_pool_set_idle_timeout_ns(ThreadPool *pool, int64_t ns)
{
    mutex_lock(&pool->lock);
    pool->idle_ns = ns > 0 ? ns : 0;
    cond_broadcast(&pool->work_cond);
    mutex_unlock(&pool->lock);
}

/* Start one worker.  Called with the lock.  False if the thread could not
 * be created. */
static bool thread_pool_start_worker_locked(ThreadPool *pool)
{
    ThreadPoolWorker *w = g_new0(ThreadPoolWorker, 1);
    w->pool = pool;
    /* The new worker blocks on the lock we hold until w->thread is set, so
     * it cannot exit and be joined before that. */
    w->thread = g_thread_try_new("strata-pool", thread_pool_worker, w, NULL);
    if (!w->thread) {
        g_free(w);
        return false;
    }
    pool->workers++;
    return true;
}

int thread_pool_keep_workers(ThreadPool *pool, int n)
{
    mutex_lock(&pool->lock);
    n = MIN(n, pool->max_workers);
    if (n > pool->min_workers) {
        pool->min_workers = n;
    }
    while (pool->workers < pool->min_workers && !pool->stopping &&
           thread_pool_start_worker_locked(pool)) {
    }
    int workers = pool->workers;
    mutex_unlock(&pool->lock);
    return workers;
}

/* Queue @elem and make sure a worker will take it.  Called with the lock;
 * the queue has room.  Returns false if no worker exists or can start. */
static bool thread_pool_enqueue_locked(ThreadPool *pool, ThreadPoolElem *elem)
{
    elem->next = NULL;
    if (pool->queue_tail) {
        pool->queue_tail->next = elem;
    } else {
        pool->queue_head = elem;
    }
    pool->queue_tail = elem;
    pool->queued++;
    pool->submitted++;

    /* Idle workers already signalled still count as idle until they run,
     * so compare with the queue length rather than with zero. */
    if (pool->idle < pool->queued && pool->workers < pool->max_workers) {
        thread_pool_start_worker_locked(pool);
    }
    if (pool->idle > 0) {
        cond_signal(&pool->work_cond);
    }
    return pool->workers > 0;
}

/* Take back the last queued element when no worker could be started. */
static void thread_pool_unqueue_locked(ThreadPool *pool, ThreadPoolElem *elem)
{
    ThreadPoolElem **p = &pool->queue_head;

    pool->queue_tail = NULL;
    while (*p != elem) {
        pool->queue_tail = *p;
        p = &(*p)->next;
    }
    *p = elem->next;
    assert(*p == NULL);
    pool->queued--;
    pool->submitted--;
}

typedef struct ThreadPoolCoWait {
    Coroutine *co;
    int ret;
    bool done;
} ThreadPoolCoWait;

static void thread_pool_co_done(void *opaque, int ret)
{
    ThreadPoolCoWait *wait = opaque;

    wait->ret = ret;
    wait->done = true;
    /* Completions run from a bottom half, outside any coroutine. */
    co_enter(wait->co);
}

int thread_pool_co_submit(ThreadPool *pool, ThreadPoolFunc *fn, void *arg)
{
    ThreadPoolCoWait wait = { .co = co_self() };
    ThreadPoolElem elem = {
        .fn = fn,
        .arg = arg,
        .cb = thread_pool_co_done,
        .opaque = &wait,
    };

    assert(wait.co && "thread_pool_co_submit outside a coroutine");
    if (thread_pool_has_exited(pool)) {
        thread_pool_reap(pool);
    }

    mutex_lock(&pool->lock);
    assert(!pool->stopping);
    while (pool->queued >= pool->max_queue) {
        pool->space_waiters++;
        pool->queue_waits++;
        mutex_unlock(&pool->lock);
        co_queue_wait(&pool->space_queue, NULL);
        mutex_lock(&pool->lock);
        pool->space_waiters--;
    }
    bool queued = thread_pool_enqueue_locked(pool, &elem);
    if (!queued) {
        thread_pool_unqueue_locked(pool, &elem);
    }
    mutex_unlock(&pool->lock);

    if (!queued) {
        /* No thread could be started at all: blocking this coroutine's
         * thread is better than failing the request. */
        return fn(arg);
    }
    while (!wait.done) {
        co_yield();
    }
    return wait.ret;
}

int thread_pool_submit(ThreadPool *pool, ThreadPoolFunc *fn, void *arg,
                       ThreadPoolCompletion *cb, void *opaque)
{
    ThreadPoolElem *elem = pool->free_elems;

    if (thread_pool_has_exited(pool)) {
        thread_pool_reap(pool);
    }
    if (elem) {
        pool->free_elems = elem->next;
    } else {
        elem = g_new(ThreadPoolElem, 1);
    }
    *elem = (ThreadPoolElem) {
        .fn = fn,
        .arg = arg,
        .cb = cb,
        .opaque = opaque,
        .recycle = true,
    };

    mutex_lock(&pool->lock);
    assert(!pool->stopping);
    bool queued = false;
    if (pool->queued < pool->max_queue) {
        queued = thread_pool_enqueue_locked(pool, elem);
        if (!queued) {
            thread_pool_unqueue_locked(pool, elem);
        }
    }
    mutex_unlock(&pool->lock);

    if (!queued) {
        elem->next = pool->free_elems;
        pool->free_elems = elem;
        return -EAGAIN;
    }
    return 0;
}

void thread_pool_get_stats(ThreadPool *pool, ThreadPoolStats *out)
{
    mutex_lock(&pool->lock);
    *out = (ThreadPoolStats) {
        .submitted = pool->submitted,
        .completed = pool->completed,
        .queue_waits = pool->queue_waits,
        .workers = pool->workers,
        .queued = pool->queued,
    };
    mutex_unlock(&pool->lock);
}

void thread_pool_free(ThreadPool *pool)
{
    if (!pool) {
        return;
    }
    mutex_lock(&pool->lock);
    pool->stopping = true;
    cond_broadcast(&pool->work_cond);
    while (pool->workers > 0) {
        cond_wait(&pool->exit_cond, &pool->lock);
    }
    mutex_unlock(&pool->lock);
    thread_pool_reap(pool);

    /* Work that finished after the last completion BH ran: complete it
     * here, in the caller's (the loop's) thread. */
    thread_pool_run_completions(pool);
    assert(co_queue_empty(&pool->space_queue));

    loop_bh_delete(pool->completion_bh);
    loop_bh_delete(pool->space_bh);
    while (pool->free_elems) {
        ThreadPoolElem *elem = pool->free_elems;
        pool->free_elems = elem->next;
        g_free(elem);
    }
    cond_cleanup(&pool->exit_cond);
    cond_cleanup(&pool->work_cond);
    mutex_cleanup(&pool->lock);
    g_free(pool);
}
