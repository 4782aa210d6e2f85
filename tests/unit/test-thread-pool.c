/* SPDX-License-Identifier: MIT */
/*
 * Thread pool: completion context, bounded queue, shutdown and stats.
 */
#include <errno.h>
#include <glib.h>
#include "util/thread-pool.h"
#include "util/thread.h"

static Loop *test_loop_new(void)
{
    StrataError *err = NULL;
    Loop *loop = loop_new(&err);
    g_assert_null(err);
    g_assert_nonnull(loop);
    return loop;
}

/* A gate worker functions block on until the test opens it. */
typedef struct Gate {
    Mutex lock;
    Cond cond;
    bool open;
    int started;
} Gate;

static void gate_init(Gate *g)
{
    mutex_init(&g->lock);
    cond_init(&g->cond);
    g->open = false;
    g->started = 0;
}

static void gate_open(Gate *g)
{
    mutex_lock(&g->lock);
    g->open = true;
    cond_broadcast(&g->cond);
    mutex_unlock(&g->lock);
}

static void gate_wait_started(Gate *g, int n)
{
    mutex_lock(&g->lock);
    while (g->started < n) {
        cond_wait(&g->cond, &g->lock);
    }
    mutex_unlock(&g->lock);
}

static void gate_clear(Gate *g)
{
    cond_cleanup(&g->cond);
    mutex_cleanup(&g->lock);
}

typedef struct Work {
    Gate *gate;
    int value;
    GThread *ran_in;
    int runs;
    int completions;
    int ret;
    GThread *completed_in;
    int64_t sleep_us;
} Work;

static int work_fn(void *arg)
{
    Work *w = arg;

    w->ran_in = g_thread_self();
    g_atomic_int_inc(&w->runs);
    if (w->gate) {
        mutex_lock(&w->gate->lock);
        w->gate->started++;
        cond_broadcast(&w->gate->cond);
        while (!w->gate->open) {
            cond_wait(&w->gate->cond, &w->gate->lock);
        }
        mutex_unlock(&w->gate->lock);
    }
    if (w->sleep_us) {
        g_usleep(w->sleep_us);
    }
    return w->value;
}

static void work_done(void *opaque, int ret)
{
    Work *w = opaque;

    w->completions++;
    w->ret = ret;
    w->completed_in = g_thread_self();
}

/* ---- coroutine form -------------------------------------------------------- */

typedef struct CoSubmit {
    ThreadPool *pool;
    Work work;
    int ret;
    bool done;
    GThread *returned_in;
} CoSubmit;

static void co_submit_entry(void *opaque)
{
    CoSubmit *c = opaque;

    c->ret = thread_pool_co_submit(c->pool, work_fn, &c->work);
    c->returned_in = g_thread_self();
    c->done = true;
}

static void test_co_submit_value(void)
{
    Loop *loop = test_loop_new();
    ThreadPool *pool = thread_pool_new(loop, 4, 16);
    CoSubmit ok = { .pool = pool, .work = { .value = 42 } };
    CoSubmit err = { .pool = pool, .work = { .value = -EIO } };

    loop_co_spawn(loop, co_submit_entry, &ok);
    loop_co_spawn(loop, co_submit_entry, &err);
    while (!ok.done || !err.done) {
        loop_run_once(loop, true);
    }
    g_assert_cmpint(ok.ret, ==, 42);
    g_assert_cmpint(err.ret, ==, -EIO);
    g_assert_cmpint(ok.work.runs, ==, 1);
    g_assert_true(ok.work.ran_in != g_thread_self());
    g_assert_true(err.work.ran_in != g_thread_self());
    g_assert_true(ok.returned_in == g_thread_self());
    thread_pool_free(pool);
    loop_free(loop);
}

/* ---- callback form ----------------------------------------------------------- */

#define NWORK 200

static bool all_completed(Work *w, int n)
{
    for (int i = 0; i < n; i++) {
        if (w[i].completions == 0) {
            return false;
        }
    }
    return true;
}

static void test_callback_once_in_loop_thread(void)
{
    Loop *loop = test_loop_new();
    ThreadPool *pool = thread_pool_new(loop, 8, NWORK);
    Work *w = g_new0(Work, NWORK);

    for (int i = 0; i < NWORK; i++) {
        w[i].value = i;
        g_assert_cmpint(thread_pool_submit(pool, work_fn, &w[i], work_done,
                                           &w[i]), ==, 0);
    }
    /* Never inside the submitting call. */
    for (int i = 0; i < NWORK; i++) {
        g_assert_cmpint(w[i].completions, ==, 0);
    }
    while (!all_completed(w, NWORK)) {
        loop_run_once(loop, true);
    }
    for (int i = 0; i < 10; i++) {
        loop_run_once(loop, false);
    }
    for (int i = 0; i < NWORK; i++) {
        g_assert_cmpint(w[i].runs, ==, 1);
        g_assert_cmpint(w[i].completions, ==, 1);
        g_assert_cmpint(w[i].ret, ==, i);
        g_assert_true(w[i].completed_in == g_thread_self());
        g_assert_true(w[i].ran_in != g_thread_self());
    }
    thread_pool_free(pool);
    loop_free(loop);
    g_free(w);
}

static void test_callback_eagain_when_full(void)
{
    Loop *loop = test_loop_new();
    ThreadPool *pool = thread_pool_new(loop, 1, 2);
    Gate gate;
    Work w[4] = { 0 };
    ThreadPoolStats st;

    gate_init(&gate);
    for (int i = 0; i < 4; i++) {
        w[i].gate = &gate;
        w[i].value = 10 + i;
    }
    g_assert_cmpint(thread_pool_submit(pool, work_fn, &w[0], work_done,
                                       &w[0]), ==, 0);
    gate_wait_started(&gate, 1);   /* the one worker is busy */
    g_assert_cmpint(thread_pool_submit(pool, work_fn, &w[1], work_done,
                                       &w[1]), ==, 0);
    g_assert_cmpint(thread_pool_submit(pool, work_fn, &w[2], work_done,
                                       &w[2]), ==, 0);
    g_assert_cmpint(thread_pool_submit(pool, work_fn, &w[3], work_done,
                                       &w[3]), ==, -EAGAIN);
    thread_pool_get_stats(pool, &st);
    g_assert_cmpint(st.queued, ==, 2);
    g_assert_cmpint(st.workers, ==, 1);
    g_assert_cmpuint(st.submitted, ==, 3);

    gate_open(&gate);
    while (!all_completed(w, 3)) {
        loop_run_once(loop, true);
    }
    for (int i = 0; i < 5; i++) {
        loop_run_once(loop, false);
    }
    for (int i = 0; i < 3; i++) {
        g_assert_cmpint(w[i].completions, ==, 1);
        g_assert_cmpint(w[i].ret, ==, 10 + i);
    }
    /* The refused item never ran and never completes. */
    g_assert_cmpint(w[3].runs, ==, 0);
    g_assert_cmpint(w[3].completions, ==, 0);

    /* Room again after the queue drained. */
    w[3].gate = NULL;
    g_assert_cmpint(thread_pool_submit(pool, work_fn, &w[3], work_done,
                                       &w[3]), ==, 0);
    while (w[3].completions == 0) {
        loop_run_once(loop, true);
    }
    g_assert_cmpint(w[3].ret, ==, 13);
    thread_pool_free(pool);
    loop_free(loop);
    gate_clear(&gate);
}

#define NCO 12

static void test_co_submit_waits_when_full(void)
{
    Loop *loop = test_loop_new();
    ThreadPool *pool = thread_pool_new(loop, 2, 2);
    Gate gate;
    CoSubmit c[NCO];
    ThreadPoolStats st;

    gate_init(&gate);
    for (int i = 0; i < NCO; i++) {
        c[i] = (CoSubmit) { .pool = pool, .work = { .gate = &gate, .value = i } };
        loop_co_spawn(loop, co_submit_entry, &c[i]);
    }
    /* Two run, two wait in the queue; the other coroutines wait for room. */
    loop_run_once(loop, false);
    gate_wait_started(&gate, 2);
    thread_pool_get_stats(pool, &st);
    g_assert_cmpint(st.workers, ==, 2);
    g_assert_cmpint(st.queued, <=, 2);
    g_assert_cmpuint(st.queue_waits, >=, NCO - 4);

    gate_open(&gate);
    for (;;) {
        bool all = true;
        for (int i = 0; i < NCO; i++) {
            all &= c[i].done;
        }
        if (all) {
            break;
        }
        loop_run_once(loop, true);
    }
    for (int i = 0; i < NCO; i++) {
        g_assert_cmpint(c[i].ret, ==, i);
        g_assert_cmpint(c[i].work.runs, ==, 1);
    }
    thread_pool_get_stats(pool, &st);
    g_assert_cmpuint(st.submitted, ==, NCO);
    g_assert_cmpuint(st.completed, ==, NCO);
    g_assert_cmpint(st.queued, ==, 0);
    thread_pool_free(pool);
    loop_free(loop);
    gate_clear(&gate);
}

/* ---- shutdown, stats, idle workers --------------------------------------------- */

static void test_free_waits_for_work(void)
{
    Loop *loop = test_loop_new();
    ThreadPool *pool = thread_pool_new(loop, 2, 16);
    Work w[6] = { 0 };

    for (int i = 0; i < 6; i++) {
        w[i].sleep_us = 20000;
        w[i].value = i;
        g_assert_cmpint(thread_pool_submit(pool, work_fn, &w[i], work_done,
                                           &w[i]), ==, 0);
    }
    /* No loop iteration: free itself waits and completes. */
    thread_pool_free(pool);
    for (int i = 0; i < 6; i++) {
        g_assert_cmpint(w[i].runs, ==, 1);
        g_assert_cmpint(w[i].completions, ==, 1);
        g_assert_cmpint(w[i].ret, ==, i);
        g_assert_true(w[i].completed_in == g_thread_self());
    }
    loop_free(loop);
}

static void test_stats(void)
{
    Loop *loop = test_loop_new();
    ThreadPool *pool = thread_pool_new(loop, 3, 64);
    Work w[20] = { 0 };
    ThreadPoolStats st;

    thread_pool_get_stats(pool, &st);
    g_assert_cmpuint(st.submitted, ==, 0);
    g_assert_cmpuint(st.completed, ==, 0);
    g_assert_cmpint(st.workers, ==, 0);
    g_assert_cmpint(st.queued, ==, 0);

    for (int i = 0; i < 20; i++) {
        w[i].sleep_us = 1000;
        g_assert_cmpint(thread_pool_submit(pool, work_fn, &w[i], work_done,
                                           &w[i]), ==, 0);
    }
    thread_pool_get_stats(pool, &st);
    g_assert_cmpuint(st.submitted, ==, 20);
    g_assert_cmpint(st.workers, >=, 1);
    g_assert_cmpint(st.workers, <=, 3);
    while (!all_completed(w, 20)) {
        loop_run_once(loop, true);
    }
    thread_pool_get_stats(pool, &st);
    g_assert_cmpuint(st.completed, ==, 20);
    g_assert_cmpint(st.queued, ==, 0);
    g_assert_cmpuint(st.queue_waits, ==, 0);
    thread_pool_free(pool);
    loop_free(loop);
}

static void test_idle_workers_exit(void)
{
    Loop *loop = test_loop_new();
    ThreadPool *pool = thread_pool_new(loop, 4, 64);
    Work w[8] = { 0 };
    ThreadPoolStats st;

    thread_pool_set_idle_timeout_ns(pool, 10 * 1000 * 1000);
    for (int i = 0; i < 8; i++) {
        w[i].sleep_us = 2000;
        g_assert_cmpint(thread_pool_submit(pool, work_fn, &w[i], work_done,
                                           &w[i]), ==, 0);
    }
    while (!all_completed(w, 8)) {
        loop_run_once(loop, true);
    }
    for (int i = 0; i < 1000; i++) {
        thread_pool_get_stats(pool, &st);
        if (st.workers == 0) {
            break;
        }
        g_usleep(5000);
    }
    g_assert_cmpint(st.workers, ==, 0);

    /* New work starts a new worker. */
    Work again = { .value = 7 };
    g_assert_cmpint(thread_pool_submit(pool, work_fn, &again, work_done,
                                       &again), ==, 0);
    while (again.completions == 0) {
        loop_run_once(loop, true);
    }
    g_assert_cmpint(again.ret, ==, 7);
    thread_pool_free(pool);
    loop_free(loop);
}

/* Kept workers start at once, survive the idle timeout, and take the work
 * of as many requests in flight without a new thread starting. */
static void test_kept_workers(void)
{
    Loop *loop = test_loop_new();
    ThreadPool *pool = thread_pool_new(loop, 8, 64);
    Work w[4] = { 0 };
    ThreadPoolStats st;

    thread_pool_set_idle_timeout_ns(pool, 1000 * 1000);
    g_assert_cmpint(thread_pool_keep_workers(pool, 4), ==, 4);
    /* A smaller count keeps the larger; more than max_workers is capped. */
    g_assert_cmpint(thread_pool_keep_workers(pool, 2), ==, 4);
    g_usleep(30 * 1000);        /* 30 idle timeouts */
    thread_pool_get_stats(pool, &st);
    g_assert_cmpint(st.workers, ==, 4);

    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 4; i++) {
            w[i] = (Work) { .value = i + 1, .sleep_us = 1000 };
            g_assert_cmpint(thread_pool_submit(pool, work_fn, &w[i],
                                               work_done, &w[i]), ==, 0);
        }
        while (!all_completed(w, 4)) {
            loop_run_once(loop, true);
        }
        for (int i = 0; i < 4; i++) {
            g_assert_cmpint(w[i].ret, ==, i + 1);
        }
        thread_pool_get_stats(pool, &st);
        g_assert_cmpint(st.workers, ==, 4);
        g_usleep(5 * 1000);
    }
    g_assert_cmpint(thread_pool_keep_workers(pool, 100), ==, 8);
    thread_pool_free(pool);
    loop_free(loop);
}

static void test_loop_pool_lazy(void)
{
    Loop *loop = test_loop_new();
    ThreadPool *pool = loop_get_thread_pool(loop);
    Work w = { .value = 3 };

    g_assert_nonnull(pool);
    g_assert_true(loop_get_thread_pool(loop) == pool);
    g_assert_cmpint(thread_pool_submit(pool, work_fn, &w, work_done, &w), ==, 0);
    while (w.completions == 0) {
        loop_run_once(loop, true);
    }
    g_assert_cmpint(w.ret, ==, 3);
    loop_free(loop);    /* frees the pool; ASan checks */
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/thread-pool/co-submit/returns-value-from-worker",
                    test_co_submit_value);
    g_test_add_func("/thread-pool/submit/callback-once-in-loop-thread",
                    test_callback_once_in_loop_thread);
    g_test_add_func("/thread-pool/submit/eagain-when-queue-full",
                    test_callback_eagain_when_full);
    g_test_add_func("/thread-pool/co-submit/waits-when-queue-full",
                    test_co_submit_waits_when_full);
    g_test_add_func("/thread-pool/free/waits-for-outstanding-work",
                    test_free_waits_for_work);
    g_test_add_func("/thread-pool/stats/counts", test_stats);
    g_test_add_func("/thread-pool/workers/idle-ones-exit",
                    test_idle_workers_exit);
    g_test_add_func("/thread-pool/workers/kept-ones-stay",
                    test_kept_workers);
    g_test_add_func("/thread-pool/loop/lazy-pool-freed-with-loop",
                    test_loop_pool_lazy);
    return g_test_run();
}
