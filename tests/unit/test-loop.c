/* SPDX-License-Identifier: MIT */
/*
 * Event loop, coroutine wake-ups and coroutine synchronisation.
 *
 * Timing assertions are lower bounds only ("not before"), never upper.
 */
#include <errno.h>
#include <poll.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <glib.h>
#include "util/loop.h"

static Loop *test_loop_new(void)
{
    StrataError *err = NULL;
    Loop *loop = loop_new(&err);
    g_assert_null(err);
    g_assert_nonnull(loop);
    return loop;
}

/* Run non-blocking iterations until nothing is left to do. */
static void drain(Loop *loop)
{
    for (int i = 0; i < 100 && loop_run_once(loop, false); i++) {
    }
}

/* ---- fd handlers --------------------------------------------------------- */

typedef struct PipeState {
    int fds[2];
    int reads;
    GThread *thread;
} PipeState;

static void pipe_on_read(void *opaque)
{
    PipeState *s = opaque;
    char buf[16];

    s->reads++;
    s->thread = g_thread_self();
    g_assert_cmpint(read(s->fds[0], buf, sizeof(buf)), >, 0);
}

static void test_fd_read_and_remove(void)
{
    Loop *loop = test_loop_new();
    PipeState s = { 0 };

    g_assert_cmpint(pipe(s.fds), ==, 0);
    loop_set_fd_handler(loop, s.fds[0], pipe_on_read, NULL, &s);

    /* Nothing written: a non-blocking iteration runs nothing. */
    g_assert_false(loop_run_once(loop, false));
    g_assert_cmpint(s.reads, ==, 0);

    g_assert_cmpint(write(s.fds[1], "x", 1), ==, 1);
    g_assert_true(loop_run_once(loop, true));
    g_assert_cmpint(s.reads, ==, 1);
    g_assert_true(s.thread == g_thread_self());

    loop_set_fd_handler(loop, s.fds[0], NULL, NULL, NULL);
    g_assert_cmpint(write(s.fds[1], "y", 1), ==, 1);
    for (int i = 0; i < 5; i++) {
        g_assert_false(loop_run_once(loop, false));
    }
    g_assert_cmpint(s.reads, ==, 1);

    close(s.fds[0]);
    close(s.fds[1]);
    loop_free(loop);
}

typedef struct RemoveOther {
    Loop *loop;
    PipeState a, b;
    int calls;
} RemoveOther;

/* Each handler removes both fds: the second event of the same epoll batch
 * must not reach a removed handler. */
static void remove_both(void *opaque)
{
    RemoveOther *r = opaque;

    r->calls++;
    loop_set_fd_handler(r->loop, r->a.fds[0], NULL, NULL, NULL);
    loop_set_fd_handler(r->loop, r->b.fds[0], NULL, NULL, NULL);
}

static void test_fd_remove_in_callback(void)
{
    RemoveOther r = { .loop = test_loop_new() };

    g_assert_cmpint(pipe(r.a.fds), ==, 0);
    g_assert_cmpint(pipe(r.b.fds), ==, 0);
    loop_set_fd_handler(r.loop, r.a.fds[0], remove_both, NULL, &r);
    loop_set_fd_handler(r.loop, r.b.fds[0], remove_both, NULL, &r);
    g_assert_cmpint(write(r.a.fds[1], "x", 1), ==, 1);
    g_assert_cmpint(write(r.b.fds[1], "x", 1), ==, 1);
    g_assert_true(loop_run_once(r.loop, true));
    drain(r.loop);
    g_assert_cmpint(r.calls, ==, 1);

    for (int i = 0; i < 2; i++) {
        close(r.a.fds[i]);
        close(r.b.fds[i]);
    }
    loop_free(r.loop);
}

typedef struct WriteState {
    Loop *loop;
    int fds[2];
    int writes;
} WriteState;

static void pipe_on_write(void *opaque)
{
    WriteState *s = opaque;

    s->writes++;
    g_assert_cmpint(write(s->fds[1], "w", 1), ==, 1);
    loop_set_fd_handler(s->loop, s->fds[1], NULL, NULL, NULL);
}

static void test_fd_write(void)
{
    WriteState s = { .loop = test_loop_new() };
    char c;

    g_assert_cmpint(pipe(s.fds), ==, 0);
    loop_set_fd_handler(s.loop, s.fds[1], NULL, pipe_on_write, &s);
    g_assert_true(loop_run_once(s.loop, true));
    drain(s.loop);
    g_assert_cmpint(s.writes, ==, 1);
    g_assert_cmpint(read(s.fds[0], &c, 1), ==, 1);
    g_assert_cmpint(c, ==, 'w');
    close(s.fds[0]);
    close(s.fds[1]);
    loop_free(s.loop);
}

/* ---- bottom halves ---------------------------------------------------------- */

typedef struct BHState {
    Loop *loop;
    LoopBH *bh;
    int runs;
    GThread *thread;
} BHState;

static void bh_count(void *opaque)
{
    BHState *s = opaque;

    s->runs++;
    s->thread = g_thread_self();
}

static gpointer schedule_thread(gpointer opaque)
{
    BHState *s = opaque;

    /* Give the loop time to block in epoll_wait, so the eventfd path is
     * what wakes it (the test passes either way). */
    g_usleep(20000);
    loop_bh_schedule(s->bh);
    return NULL;
}

static void test_bh_cross_thread(void)
{
    BHState s = { .loop = test_loop_new() };

    s.bh = loop_bh_new(s.loop, bh_count, &s);
    GThread *t = g_thread_new("scheduler", schedule_thread, &s);
    while (s.runs == 0) {
        loop_run_once(s.loop, true);
    }
    g_thread_join(t);
    g_assert_cmpint(s.runs, ==, 1);
    g_assert_true(s.thread == g_thread_self());
    loop_bh_delete(s.bh);
    loop_free(s.loop);
}

#define STORM_THREADS 4
#define STORM_PER_THREAD 2000

typedef struct StormState {
    Loop *loop;
    LoopBH *bh;
    int runs;
    int scheduled;
} StormState;

static void storm_bh(void *opaque)
{
    StormState *s = opaque;
    s->runs++;
}

static gpointer storm_thread(gpointer opaque)
{
    StormState *s = opaque;

    for (int i = 0; i < STORM_PER_THREAD; i++) {
        if (i == STORM_PER_THREAD - 1) {
            /* Counted before the last schedule, whose BH run then lets
             * the loop see the count. */
            g_atomic_int_inc(&s->scheduled);
        }
        loop_bh_schedule(s->bh);
        if (i % 64 == 0) {
            g_thread_yield();
        }
    }
    return NULL;
}

/* Many threads scheduling one BH while the loop runs it: it never runs more
 * often than scheduled, and a schedule after the last run is not lost. */
static void test_bh_cross_thread_storm(void)
{
    StormState s = { .loop = test_loop_new() };
    GThread *t[STORM_THREADS];

    s.bh = loop_bh_new(s.loop, storm_bh, &s);
    for (int i = 0; i < STORM_THREADS; i++) {
        t[i] = g_thread_new("storm", storm_thread, &s);
    }
    while (g_atomic_int_get(&s.scheduled) < STORM_THREADS) {
        loop_run_once(s.loop, true);
    }
    for (int i = 0; i < STORM_THREADS; i++) {
        g_thread_join(t[i]);
    }
    int before = s.runs;
    loop_bh_schedule(s.bh);
    drain(s.loop);
    g_assert_cmpint(s.runs, >, before);
    g_assert_cmpint(s.runs, <=, STORM_THREADS * STORM_PER_THREAD + 1);
    loop_bh_delete(s.bh);
    loop_free(s.loop);
}

static void test_bh_idempotent(void)
{
    BHState s = { .loop = test_loop_new() };

    s.bh = loop_bh_new(s.loop, bh_count, &s);
    loop_bh_schedule(s.bh);
    loop_bh_schedule(s.bh);
    g_assert_true(loop_run_once(s.loop, false));
    drain(s.loop);
    g_assert_cmpint(s.runs, ==, 1);

    /* After it ran, scheduling works again. */
    loop_bh_schedule(s.bh);
    drain(s.loop);
    g_assert_cmpint(s.runs, ==, 2);
    loop_bh_delete(s.bh);
    loop_free(s.loop);
}

static void bh_reschedule_self(void *opaque)
{
    BHState *s = opaque;

    s->runs++;
    if (s->runs < 3) {
        int before = s->runs;
        loop_bh_schedule(s->bh);
        /* Not inside the scheduling call. */
        g_assert_cmpint(s->runs, ==, before);
    }
}

static void test_bh_never_inline(void)
{
    BHState s = { .loop = test_loop_new() };

    s.bh = loop_bh_new(s.loop, bh_reschedule_self, &s);
    loop_attach_current(s.loop);
    loop_bh_schedule(s.bh);
    g_assert_cmpint(s.runs, ==, 0);

    /* One iteration runs the BHs pending when it started, so a BH that
     * reschedules itself runs once per pass rather than forever. */
    loop_run_once(s.loop, false);
    g_assert_cmpint(s.runs, >=, 1);
    g_assert_cmpint(s.runs, <=, 2);
    drain(s.loop);
    g_assert_cmpint(s.runs, ==, 3);
    loop_attach_current(NULL);
    loop_bh_delete(s.bh);
    loop_free(s.loop);
}

static void test_bh_cancel_and_delete(void)
{
    BHState s = { .loop = test_loop_new() };
    BHState t = { .loop = s.loop };

    s.bh = loop_bh_new(s.loop, bh_count, &s);
    t.bh = loop_bh_new(s.loop, bh_count, &t);
    loop_bh_schedule(s.bh);
    loop_bh_cancel(s.bh);
    loop_bh_schedule(t.bh);
    loop_bh_delete(t.bh);
    drain(s.loop);
    g_assert_cmpint(s.runs, ==, 0);
    g_assert_cmpint(t.runs, ==, 0);

    /* Cancel then schedule again while still linked: runs once. */
    loop_bh_schedule(s.bh);
    loop_bh_cancel(s.bh);
    loop_bh_schedule(s.bh);
    drain(s.loop);
    g_assert_cmpint(s.runs, ==, 1);
    loop_bh_delete(s.bh);
    loop_free(s.loop);
}

static void oneshot_cb(void *opaque)
{
    int *runs = opaque;
    (*runs)++;
}

static gpointer oneshot_thread(gpointer opaque)
{
    Loop *loop = ((void **)opaque)[0];
    int *runs = ((void **)opaque)[1];

    loop_oneshot(loop, oneshot_cb, runs);
    return NULL;
}

static void test_bh_oneshot(void)
{
    Loop *loop = test_loop_new();
    int runs = 0;
    void *args[2] = { loop, &runs };

    loop_oneshot(loop, oneshot_cb, &runs);
    g_assert_cmpint(runs, ==, 0);
    drain(loop);
    g_assert_cmpint(runs, ==, 1);

    GThread *t = g_thread_new("oneshot", oneshot_thread, args);
    while (runs < 2) {
        loop_run_once(loop, true);
    }
    g_thread_join(t);
    g_assert_cmpint(runs, ==, 2);
    loop_free(loop);     /* ASan checks that the oneshot BHs were freed */
}

/* ---- timers --------------------------------------------------------------- */

typedef struct TimerRec {
    LoopTimer timer;
    int id;
    int64_t deadline;
    int *order;
    int *n;
} TimerRec;

static void timer_record(void *opaque)
{
    TimerRec *r = opaque;

    /* Never before expiry, and disarmed while its callback runs. */
    g_assert_cmpint(clock_ns(), >=, r->deadline);
    g_assert_false(loop_timer_pending(&r->timer));
    r->order[(*r->n)++] = r->id;
}

static void test_timer_order(void)
{
    Loop *loop = test_loop_new();
    int order[4] = { 0 };
    int n = 0;
    TimerRec r[4];
    int64_t start = clock_ns();
    int64_t deadlines[4] = { 3000000, 1000000, 2000000, 1500000 };

    for (int i = 0; i < 4; i++) {
        r[i] = (TimerRec) {
            .id = i, .deadline = start + deadlines[i], .order = order, .n = &n,
        };
        loop_timer_init(&r[i].timer, loop, timer_record, &r[i]);
        g_assert_false(loop_timer_pending(&r[i].timer));
        loop_timer_mod(&r[i].timer, r[i].deadline);
        g_assert_true(loop_timer_pending(&r[i].timer));
    }
    /* Timer 3 deleted: never fires. */
    loop_timer_del(&r[3].timer);
    g_assert_false(loop_timer_pending(&r[3].timer));

    int64_t seen[3];
    while (n < 3) {
        int before = n;
        loop_run_once(loop, true);
        for (int i = before; i < n; i++) {
            seen[i] = clock_ns();
        }
    }
    g_assert_cmpint(n, ==, 3);
    g_assert_cmpint(order[0], ==, 1);
    g_assert_cmpint(order[1], ==, 2);
    g_assert_cmpint(order[2], ==, 0);
    g_assert_cmpint(seen[0] - start, >=, deadlines[1]);
    g_assert_cmpint(seen[1] - start, >=, deadlines[2]);
    g_assert_cmpint(seen[2] - start, >=, deadlines[0]);
    for (int i = 0; i < 4; i++) {
        g_assert_false(loop_timer_pending(&r[i].timer));
    }
    drain(loop);
    g_assert_cmpint(n, ==, 3);
    loop_free(loop);
}

typedef struct ExpiryCheck {
    LoopTimer timer;
    int64_t armed_for;
    int64_t fired_at;
} ExpiryCheck;

static void timer_expiry_cb(void *opaque)
{
    ExpiryCheck *c = opaque;
    c->fired_at = clock_ns();
}

static void test_timer_not_before_expiry(void)
{
    Loop *loop = test_loop_new();
    ExpiryCheck c = { .fired_at = -1 };

    loop_timer_init(&c.timer, loop, timer_expiry_cb, &c);
    c.armed_for = clock_ns() + 20 * 1000000;
    loop_timer_mod(&c.timer, c.armed_for);
    /* Non-blocking iterations before the deadline do not fire it. */
    while (clock_ns() < c.armed_for - 5 * 1000000) {
        loop_run_once(loop, false);
        if (clock_ns() < c.armed_for) {
            g_assert_cmpint(c.fired_at, ==, -1);
        }
        g_usleep(1000);
    }
    while (c.fired_at < 0) {
        loop_run_once(loop, true);
    }
    g_assert_cmpint(c.fired_at, >=, c.armed_for);

    /* Re-arming moves the deadline. */
    c.fired_at = -1;
    loop_timer_mod(&c.timer, clock_ns() + 3600 * G_GINT64_CONSTANT(1000000000));
    c.armed_for = clock_ns() + 2 * 1000000;
    loop_timer_mod(&c.timer, c.armed_for);
    while (c.fired_at < 0) {
        loop_run_once(loop, true);
    }
    g_assert_cmpint(c.fired_at, >=, c.armed_for);
    loop_free(loop);
}

typedef struct RearmState {
    LoopTimer self_timer;
    LoopTimer victim;
    int self_runs;
    int victim_runs;
} RearmState;

static void rearm_cb(void *opaque)
{
    RearmState *s = opaque;

    s->self_runs++;
    /* The victim expired too, but deleting it here must prevent it. */
    loop_timer_del(&s->victim);
    if (s->self_runs < 3) {
        loop_timer_mod(&s->self_timer, 0);     /* already in the past */
    }
}

static void victim_cb(void *opaque)
{
    RearmState *s = opaque;
    s->victim_runs++;
}

static void test_timer_rearm_and_delete_in_callback(void)
{
    Loop *loop = test_loop_new();
    RearmState s = { 0 };

    loop_timer_init(&s.self_timer, loop, rearm_cb, &s);
    loop_timer_init(&s.victim, loop, victim_cb, &s);
    loop_timer_mod(&s.self_timer, 1);
    loop_timer_mod(&s.victim, 2);
    /* Each iteration returns: a timer re-armed in the past does not keep
     * one pass spinning. */
    loop_run_once(loop, false);
    g_assert_cmpint(s.self_runs, >=, 1);
    drain(loop);
    g_assert_cmpint(s.self_runs, ==, 3);
    g_assert_cmpint(s.victim_runs, ==, 0);
    g_assert_false(loop_timer_pending(&s.self_timer));
    loop_free(loop);
}

/* ---- defer sections --------------------------------------------------------- */

#define DEFER_MANY 65

typedef struct DeferState {
    Loop *loop;
    int flushes;             /* defer_count(&flushes) calls */
    int other;
    int flushes_in_bh;       /* value of flushes when the BH returned */
    int many[DEFER_MANY];
} DeferState;

static void defer_count(void *opaque)
{
    int *n = opaque;
    (*n)++;
}

static void defer_bh(void *opaque)
{
    DeferState *s = opaque;

    for (int i = 0; i < 3; i++) {
        loop_defer_call(s->loop, defer_count, &s->flushes);
        loop_defer_call(s->loop, defer_count, &s->other);
    }
    s->flushes_in_bh = s->flushes;
}

static void defer_second_bh(void *opaque)
{
    DeferState *s = opaque;
    loop_defer_call(s->loop, defer_count, &s->flushes);
}

static void test_defer_batches_iteration(void)
{
    DeferState s = { .loop = test_loop_new() };
    LoopBH *a = loop_bh_new(s.loop, defer_bh, &s);
    LoopBH *b = loop_bh_new(s.loop, defer_second_bh, &s);

    loop_bh_schedule(a);
    loop_bh_schedule(b);
    loop_run_once(s.loop, false);
    /* Six calls from two BHs for one pair: one call, after the BHs. */
    g_assert_cmpint(s.flushes_in_bh, ==, 0);
    g_assert_cmpint(s.flushes, ==, 1);
    g_assert_cmpint(s.other, ==, 1);

    loop_bh_delete(a);
    loop_bh_delete(b);
    loop_free(s.loop);
}

static void test_defer_outside_section(void)
{
    DeferState s = { .loop = test_loop_new() };

    loop_defer_call(s.loop, defer_count, &s.flushes);
    g_assert_cmpint(s.flushes, ==, 1);
    loop_defer_call(s.loop, defer_count, &s.flushes);
    g_assert_cmpint(s.flushes, ==, 2);
    loop_free(s.loop);
}

static void test_defer_nested(void)
{
    DeferState s = { .loop = test_loop_new() };

    loop_defer_begin(s.loop);
    loop_defer_call(s.loop, defer_count, &s.flushes);
    loop_defer_begin(s.loop);
    loop_defer_call(s.loop, defer_count, &s.flushes);
    loop_defer_end(s.loop);
    g_assert_cmpint(s.flushes, ==, 0);     /* inner end: not yet */
    loop_defer_end(s.loop);
    g_assert_cmpint(s.flushes, ==, 1);     /* outermost end: once */
    loop_free(s.loop);
}

static void test_defer_overflow(void)
{
    DeferState s = { .loop = test_loop_new() };
    int immediate = 0;

    loop_defer_begin(s.loop);
    for (int i = 0; i < DEFER_MANY; i++) {
        loop_defer_call(s.loop, defer_count, &s.many[i]);
        loop_defer_call(s.loop, defer_count, &s.many[i]);
    }
    for (int i = 0; i < DEFER_MANY; i++) {
        immediate += s.many[i];
    }
    /* Past the fixed table, calls run at once rather than being lost. */
    g_assert_cmpint(immediate, >, 0);
    loop_defer_end(s.loop);
    for (int i = 0; i < DEFER_MANY; i++) {
        g_assert_cmpint(s.many[i], >=, 1);
        g_assert_cmpint(s.many[i], <=, 2);
    }
    loop_free(s.loop);
}

/* A callback that queues a submission and then waits synchronously for its
 * completion: the nested iteration must submit before it sleeps. */
typedef struct NestedState {
    Loop *loop;
    int fds[2];
    bool done;
} NestedState;

static void nested_submit(void *opaque)
{
    NestedState *s = opaque;
    g_assert_cmpint(write(s->fds[1], "s", 1), ==, 1);
}

static void nested_complete(void *opaque)
{
    NestedState *s = opaque;
    char c;

    g_assert_cmpint(read(s->fds[0], &c, 1), ==, 1);
    s->done = true;
}

static void nested_bh(void *opaque)
{
    NestedState *s = opaque;

    loop_defer_call(s->loop, nested_submit, s);
    LOOP_RUN_WHILE(s->loop, !s->done);
}

static void test_defer_flushed_before_nested_wait(void)
{
    NestedState s = { .loop = test_loop_new() };
    LoopBH *bh = loop_bh_new(s.loop, nested_bh, &s);

    g_assert_cmpint(pipe(s.fds), ==, 0);
    loop_set_fd_handler(s.loop, s.fds[0], nested_complete, NULL, &s);
    loop_bh_schedule(bh);
    loop_run_once(s.loop, false);
    g_assert_true(s.done);

    loop_set_fd_handler(s.loop, s.fds[0], NULL, NULL, NULL);
    close(s.fds[0]);
    close(s.fds[1]);
    loop_bh_delete(bh);
    loop_free(s.loop);
}

/* ---- coroutine wake-ups --------------------------------------------------------- */

typedef struct CoRec {
    Loop *loop;
    Coroutine *co;
    int id;
    int entries;
    GThread *thread;        /* thread of the last entry */
    int *log;
    int *nlog;
    bool finished;
} CoRec;

/* Runs twice: records, yields once, records again and terminates. */
static void co_rec_entry(void *opaque)
{
    CoRec *r = opaque;

    r->co = co_self();
    r->entries++;
    r->thread = g_thread_self();
    g_assert_true(loop_current() == r->loop);
    co_yield();
    r->entries++;
    r->thread = g_thread_self();
    if (r->log) {
        r->log[(*r->nlog)++] = r->id;
    }
    r->finished = true;
}

static void co_wake_bh(void *opaque)
{
    CoRec *r = opaque;
    int before = r->entries;

    loop_co_wake(r->co);
    /* Never entered inside the waking call. */
    g_assert_cmpint(r->entries, ==, before);
}

static void test_co_spawn_and_wake_same_thread(void)
{
    CoRec r = { .loop = test_loop_new() };

    loop_co_spawn(r.loop, co_rec_entry, &r);
    g_assert_cmpint(r.entries, ==, 0);       /* not entered inside spawn */
    drain(r.loop);
    g_assert_cmpint(r.entries, ==, 1);
    g_assert_true(co_get_loop(r.co) == r.loop);

    LoopBH *bh = loop_bh_new(r.loop, co_wake_bh, &r);
    loop_bh_schedule(bh);
    drain(r.loop);
    g_assert_cmpint(r.entries, ==, 2);
    g_assert_true(r.finished);
    g_assert_true(r.thread == g_thread_self());
    loop_bh_delete(bh);
    loop_free(r.loop);
}

static gpointer co_wake_thread(gpointer opaque)
{
    CoRec *r = opaque;

    g_usleep(10000);
    loop_co_wake(r->co);
    return NULL;
}

static void test_co_wake_cross_thread(void)
{
    CoRec r = { .loop = test_loop_new() };

    loop_co_spawn(r.loop, co_rec_entry, &r);
    drain(r.loop);
    g_assert_cmpint(r.entries, ==, 1);

    GThread *t = g_thread_new("waker", co_wake_thread, &r);
    while (!r.finished) {
        loop_run_once(r.loop, true);
    }
    g_thread_join(t);
    g_assert_cmpint(r.entries, ==, 2);
    g_assert_true(r.thread == g_thread_self());
    loop_free(r.loop);
}

#define NCO 6

typedef struct FifoState {
    CoRec r[NCO];
    int order[NCO];
} FifoState;

static const int wake_order[NCO] = { 3, 1, 5, 0, 4, 2 };

static void fifo_wake_bh(void *opaque)
{
    FifoState *f = opaque;

    for (int i = 0; i < NCO; i++) {
        loop_co_wake(f->r[wake_order[i]].co);
    }
}

static gpointer fifo_wake_thread(gpointer opaque)
{
    FifoState *f = opaque;

    for (int i = 0; i < NCO; i++) {
        loop_co_wake(f->r[wake_order[i]].co);
    }
    return NULL;
}

static void fifo_setup(FifoState *f, Loop *loop, int *log, int *nlog)
{
    for (int i = 0; i < NCO; i++) {
        f->r[i] = (CoRec) { .loop = loop, .id = i, .log = log, .nlog = nlog };
        loop_co_spawn(loop, co_rec_entry, &f->r[i]);
    }
    drain(loop);
    for (int i = 0; i < NCO; i++) {
        g_assert_cmpint(f->r[i].entries, ==, 1);
    }
}

static void test_co_wake_fifo(void)
{
    Loop *loop = test_loop_new();
    FifoState f;
    int log[NCO], nlog = 0;

    /* Same thread. */
    fifo_setup(&f, loop, log, &nlog);
    LoopBH *bh = loop_bh_new(loop, fifo_wake_bh, &f);
    loop_bh_schedule(bh);
    drain(loop);
    g_assert_cmpint(nlog, ==, NCO);
    for (int i = 0; i < NCO; i++) {
        g_assert_cmpint(log[i], ==, wake_order[i]);
    }
    loop_bh_delete(bh);

    /* From another thread, all published before the loop runs. */
    nlog = 0;
    fifo_setup(&f, loop, log, &nlog);
    GThread *t = g_thread_new("waker", fifo_wake_thread, &f);
    g_thread_join(t);
    drain(loop);
    g_assert_cmpint(nlog, ==, NCO);
    for (int i = 0; i < NCO; i++) {
        g_assert_cmpint(log[i], ==, wake_order[i]);
    }
    loop_free(loop);
}

/* ---- CoQueue ------------------------------------------------------------------ */

typedef struct QueueState {
    Loop *loop;
    CoQueue q;
    CoMutex m;
    int log[NCO];
    int nlog;
    int waiting;
    bool flag;
} QueueState;

typedef struct QueueWaiter {
    QueueState *s;
    int id;
} QueueWaiter;

static void queue_waiter_entry(void *opaque)
{
    QueueWaiter *w = opaque;

    w->s->waiting++;
    co_queue_wait(&w->s->q, NULL);
    w->s->waiting--;
    w->s->log[w->s->nlog++] = w->id;
}

static void queue_spawn_all(QueueState *s, QueueWaiter *w)
{
    for (int i = 0; i < NCO; i++) {
        w[i] = (QueueWaiter) { .s = s, .id = i };
        loop_co_spawn(s->loop, queue_waiter_entry, &w[i]);
    }
    drain(s->loop);
    g_assert_cmpint(s->waiting, ==, NCO);
    g_assert_false(co_queue_empty(&s->q));
}

static void test_co_queue_fifo(void)
{
    QueueState s = { .loop = test_loop_new() };
    QueueWaiter w[NCO];

    co_queue_init(&s.q);
    g_assert_true(co_queue_empty(&s.q));
    g_assert_false(co_queue_next(&s.q));
    loop_attach_current(s.loop);
    queue_spawn_all(&s, w);

    for (int i = 0; i < NCO; i++) {
        g_assert_true(co_queue_next(&s.q));
        /* The waiter is not entered inside co_queue_next. */
        g_assert_cmpint(s.nlog, ==, i);
        drain(s.loop);
        g_assert_cmpint(s.nlog, ==, i + 1);
        g_assert_cmpint(s.log[i], ==, i);
    }
    g_assert_true(co_queue_empty(&s.q));
    g_assert_false(co_queue_next(&s.q));
    loop_attach_current(NULL);
    loop_free(s.loop);
}

static void test_co_queue_restart_all(void)
{
    QueueState s = { .loop = test_loop_new() };
    QueueWaiter w[NCO];

    co_queue_init(&s.q);
    loop_attach_current(s.loop);
    queue_spawn_all(&s, w);
    co_queue_restart_all(&s.q);
    g_assert_true(co_queue_empty(&s.q));
    g_assert_cmpint(s.nlog, ==, 0);
    drain(s.loop);
    g_assert_cmpint(s.nlog, ==, NCO);
    g_assert_cmpint(s.waiting, ==, 0);
    for (int i = 0; i < NCO; i++) {
        g_assert_cmpint(s.log[i], ==, i);
    }
    loop_attach_current(NULL);
    loop_free(s.loop);
}

static void queue_mutex_waiter(void *opaque)
{
    QueueState *s = opaque;

    co_mutex_lock(&s->m);
    while (!s->flag) {
        co_queue_wait(&s->q, &s->m);
        /* Relocked on return. */
        g_assert_true(s->m.holder == co_self());
    }
    s->log[s->nlog++] = 0;
    co_mutex_unlock(&s->m);
}

static void queue_mutex_signaller(void *opaque)
{
    QueueState *s = opaque;

    /* Only possible because the waiter unlocked while waiting. */
    co_mutex_lock(&s->m);
    s->flag = true;
    co_queue_next(&s->q);
    s->log[s->nlog++] = 1;
    co_mutex_unlock(&s->m);
}

static void test_co_queue_wait_with_mutex(void)
{
    QueueState s = { .loop = test_loop_new() };

    co_queue_init(&s.q);
    co_mutex_init(&s.m);
    loop_co_spawn(s.loop, queue_mutex_waiter, &s);
    drain(s.loop);
    g_assert_null(s.m.holder);
    loop_co_spawn(s.loop, queue_mutex_signaller, &s);
    drain(s.loop);
    g_assert_cmpint(s.nlog, ==, 2);
    g_assert_cmpint(s.log[0], ==, 1);
    g_assert_cmpint(s.log[1], ==, 0);
    g_assert_null(s.m.holder);
    loop_free(s.loop);
}

/* ---- CoMutex --------------------------------------------------------------------- */

#define MUTEX_ROUNDS 10

typedef struct MutexState {
    Loop *loop;
    CoMutex m;
    int inside;
    int acquisitions[NCO * MUTEX_ROUNDS];
    int nacq;
    int done;
} MutexState;

typedef struct MutexWorker {
    MutexState *s;
    int id;
} MutexWorker;

static void mutex_worker(void *opaque)
{
    MutexWorker *w = opaque;
    MutexState *s = w->s;

    for (int i = 0; i < MUTEX_ROUNDS; i++) {
        co_mutex_lock(&s->m);
        g_assert_cmpint(s->inside, ==, 0);
        s->inside++;
        s->acquisitions[s->nacq++] = w->id;
        /* Yield while holding the lock: the others must stay out. */
        loop_co_wake(co_self());
        co_yield();
        if (i % 2) {
            co_sleep_ns(100000);
        }
        g_assert_cmpint(s->inside, ==, 1);
        s->inside--;
        co_mutex_unlock(&s->m);
    }
    s->done++;
}

static void test_co_mutex_exclusion(void)
{
    MutexState s = { .loop = test_loop_new() };
    MutexWorker w[NCO];

    co_mutex_init(&s.m);
    for (int i = 0; i < NCO; i++) {
        w[i] = (MutexWorker) { .s = &s, .id = i };
        loop_co_spawn(s.loop, mutex_worker, &w[i]);
    }
    while (s.done < NCO) {
        loop_run_once(s.loop, true);
    }
    g_assert_cmpint(s.nacq, ==, NCO * MUTEX_ROUNDS);
    /* Fair hand-off: every waiter queued before the holder came back, so
     * the lock goes round in arrival order. */
    for (int i = 0; i < s.nacq; i++) {
        g_assert_cmpint(s.acquisitions[i], ==, i % NCO);
    }
    g_assert_null(s.m.holder);
    loop_free(s.loop);
}

/* ---- co_sleep_ns ------------------------------------------------------------------ */

typedef struct SleepState {
    int64_t ns;
    int64_t slept;
    int *order;
    int *n;
    int id;
} SleepState;

static void sleeper(void *opaque)
{
    SleepState *s = opaque;
    int64_t start = clock_ns();

    co_sleep_ns(s->ns);
    s->slept = clock_ns() - start;
    s->order[(*s->n)++] = s->id;
}

static void test_co_sleep_lower_bound(void)
{
    Loop *loop = test_loop_new();
    int64_t durations[3] = { 15000000, 5000000, 10000000 };
    SleepState s[3];
    int order[3], n = 0;

    for (int i = 0; i < 3; i++) {
        s[i] = (SleepState) {
            .ns = durations[i], .order = order, .n = &n, .id = i,
        };
        loop_co_spawn(loop, sleeper, &s[i]);
    }
    while (n < 3) {
        loop_run_once(loop, true);
    }
    for (int i = 0; i < 3; i++) {
        g_assert_cmpint(s[i].slept, >=, s[i].ns);
    }
    g_assert_cmpint(order[0], ==, 1);
    g_assert_cmpint(order[1], ==, 2);
    g_assert_cmpint(order[2], ==, 0);
    loop_free(loop);
}

/* ---- GSource ------------------------------------------------------------------------ */

typedef struct GSourceState {
    Loop *loop;
    GMainLoop *main_loop;
    LoopBH *bh;
    LoopBH *remote_bh;
    LoopTimer timer;
    int64_t armed_for;
    int64_t fired_at;
    bool bh_ran;
    GThread *remote;
    GThread *remote_ran_in;
    CoRec co;
} GSourceState;

static gpointer gsource_remote_thread(gpointer opaque)
{
    GSourceState *s = opaque;

    g_usleep(10000);
    loop_bh_schedule(s->remote_bh);
    return NULL;
}

static void gsource_remote_bh(void *opaque)
{
    GSourceState *s = opaque;

    s->remote_ran_in = g_thread_self();
    g_main_loop_quit(s->main_loop);
}

static void gsource_timer_cb(void *opaque)
{
    GSourceState *s = opaque;

    s->fired_at = clock_ns();
    g_assert_true(loop_current() == s->loop);
    /* The GMainContext now sleeps in poll() with no timeout: a BH scheduled
     * from another thread must wake it. */
    s->remote = g_thread_new("gsource-remote", gsource_remote_thread, s);
}

static void gsource_bh(void *opaque)
{
    GSourceState *s = opaque;

    s->bh_ran = true;
    s->armed_for = clock_ns() + 5000000;
    loop_timer_mod(&s->timer, s->armed_for);
}

static gboolean gsource_watchdog(gpointer opaque)
{
    g_error("GMainLoop did not drive the Strata loop");
    return G_SOURCE_REMOVE;
}

/* ---- the loop's waiter ---------------------------------------------------- */

typedef struct FakeWaiter {
    LoopWaiter w;
    int eventfd;                /* "completions": readable when written */
    int waits, checks, detaches;
    int releases;               /* loop_release hook calls */
    int64_t last_timeout;
    bool found;                 /* a completion the wait took, unchecked */
} FakeWaiter;

static int fake_wait(void *opaque, int epfd, int64_t timeout_ns)
{
    FakeWaiter *f = opaque;
    struct pollfd p[2] = {
        { .fd = f->eventfd, .events = POLLIN },
        { .fd = epfd, .events = POLLIN },
    };
    int ms = timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);

    f->waits++;
    f->last_timeout = timeout_ns;
    if (poll(p, 2, ms) < 0) {
        return -errno;
    }
    if (p[0].revents & POLLIN) {
        uint64_t v;
        g_assert_cmpint(read(f->eventfd, &v, sizeof(v)), ==, sizeof(v));
        f->found = true;
    }
    return (p[1].revents & POLLIN) ? 1 : 0;
}

static bool fake_check(void *opaque)
{
    FakeWaiter *f = opaque;
    bool found = f->found;

    f->checks++;
    f->found = false;
    return found;
}

static void fake_detach(void *opaque)
{
    ((FakeWaiter *)opaque)->detaches++;
}

static void count_release(void *opaque)
{
    FakeWaiter *f = opaque;

    /* After the waiter's detach. */
    g_assert_cmpint(f->detaches, ==, f->releases + 1);
    f->releases++;
}

typedef struct ClaimArg {
    Loop *loop;
    const LoopWaiter *w;
    bool claimed;
} ClaimArg;

static gpointer claim_thread(gpointer opaque)
{
    ClaimArg *a = opaque;
    a->claimed = loop_claim_waiter(a->loop, a->w);
    return NULL;
}

/*
 * A waiter sleeps for the loop: its check runs on each iteration that
 * polls, its wait replaces the blocking epoll_wait (with the timer's
 * timeout), the epoll set's fds still run their handlers, and a GLib
 * source takes the role back.  One waiter per loop, claimed by its owner.
 */
static void waiter_timer_cb(void *opaque)
{
    *(int *)opaque = 1;
}

typedef struct PipeRead {
    int fd;
    bool done;
} PipeRead;

static void waiter_pipe_cb(void *opaque)
{
    PipeRead *pr = opaque;
    char c;

    g_assert_cmpint(read(pr->fd, &c, 1), ==, 1);
    pr->done = true;
}

/* A regular file, which epoll refuses (EPERM): its handler runs on every
 * iteration, a blocking iteration does not sleep while it is there, and
 * it can remove itself (a reader at end of file). */
typedef struct FileRead {
    Loop *loop;
    int fd;
    int calls;
    GString *got;
} FileRead;

static void file_read_cb(void *opaque)
{
    FileRead *fr = opaque;
    char buf[4];
    ssize_t n = read(fr->fd, buf, sizeof(buf));

    g_assert_cmpint(n, >=, 0);
    fr->calls++;
    if (n == 0) {
        loop_set_fd_handler(fr->loop, fr->fd, NULL, NULL, NULL);
        return;
    }
    g_string_append_len(fr->got, buf, n);
}

static void test_regular_file_fd(void)
{
    Loop *loop = test_loop_new();
    g_autofree char *path = NULL;
    int fd = g_file_open_tmp("strata-loop-XXXXXX", &path, NULL);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(write(fd, "0123456789", 10), ==, 10);
    g_assert_cmpint(lseek(fd, 0, SEEK_SET), ==, 0);
    unlink(path);

    FileRead fr = { .loop = loop, .fd = fd, .got = g_string_new(NULL) };
    loop_set_fd_handler(loop, fd, file_read_cb, NULL, &fr);
    /* 10 bytes in reads of 4, then end of file: 4 iterations, none of
     * which may sleep (a sleep here would never end). */
    for (int i = 0; i < 4; i++) {
        g_assert_true(loop_run_once(loop, true));
    }
    g_assert_cmpint(fr.calls, ==, 4);
    g_assert_cmpstr(fr.got->str, ==, "0123456789");
    /* Gone: the loop sleeps again (a timer ends it). */
    LoopTimer timer;
    int fired = 0;
    loop_timer_init(&timer, loop, waiter_timer_cb, &fired);
    loop_timer_mod(&timer, clock_ns() + 1000 * 1000);
    while (!fired) {
        loop_run_once(loop, true);
    }
    g_assert_cmpint(fr.calls, ==, 4);

    g_string_free(fr.got, TRUE);
    close(fd);
    loop_free(loop);
}

static void test_waiter(void)
{
    Loop *loop = test_loop_new();
    FakeWaiter f = { .eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) };
    FakeWaiter g = { 0 };
    f.w = (LoopWaiter) { fake_wait, fake_check, fake_detach, &f };
    g.w = (LoopWaiter) { fake_wait, fake_check, fake_detach, &g };

    ClaimArg a = { .loop = loop, .w = &f.w };
    GThread *t = g_thread_new("claim", claim_thread, &a);
    g_thread_join(t);
    g_assert_false(a.claimed);               /* not the loop's owner */
    g_assert_true(loop_claim_waiter(loop, &f.w));
    g_assert_false(loop_claim_waiter(loop, &g.w));   /* one per loop */

    /* A "completion" ends the sleep without the epoll set. */
    uint64_t one = 1;
    g_assert_cmpint(write(f.eventfd, &one, sizeof(one)), ==, sizeof(one));
    g_assert_true(loop_run_once(loop, true));
    g_assert_cmpint(f.waits, ==, 1);
    g_assert_cmpint(f.last_timeout, ==, -1);
    g_assert_cmpint(f.checks, >=, 1);

    /* A timer's deadline is the wait's timeout. */
    LoopTimer timer;
    int fired = 0;
    loop_timer_init(&timer, loop, waiter_timer_cb, &fired);
    loop_timer_mod(&timer, clock_ns() + 10 * 1000 * 1000);
    while (!fired) {
        loop_run_once(loop, true);
    }
    g_assert_cmpint(f.last_timeout, >, 0);
    g_assert_cmpint(f.last_timeout, <=, 10 * 1000 * 1000);

    /* An fd of the loop ends the wait through the epoll set, and its
     * handler runs. */
    int pfd[2], checks = f.checks;
    PipeRead pr = { 0 };
    g_assert_cmpint(pipe(pfd), ==, 0);
    pr.fd = pfd[0];
    loop_set_fd_handler(loop, pfd[0], waiter_pipe_cb, NULL, &pr);
    g_assert_cmpint(write(pfd[1], "x", 1), ==, 1);
    while (!pr.done) {
        loop_run_once(loop, true);
    }
    g_assert_cmpint(f.checks, >, checks);
    loop_set_fd_handler(loop, pfd[0], NULL, NULL, NULL);
    close(pfd[0]);
    close(pfd[1]);

    /* A handover detaches the waiter, then runs the release hooks in the
     * old owner; the waiter may claim the role again in the new owner
     * (here the same thread).  A removed hook runs no more. */
    LoopReleaseHook hook = { count_release, &f };
    loop_add_release_hook(loop, &hook);
    loop_release(loop);
    loop_acquire(loop);
    g_assert_cmpint(f.detaches, ==, 1);
    g_assert_cmpint(f.releases, ==, 1);
    loop_remove_release_hook(loop, &hook);
    loop_release(loop);
    loop_acquire(loop);
    g_assert_cmpint(f.releases, ==, 1);
    g_assert_true(loop_claim_waiter(loop, &f.w));

    /* A GLib source detaches the waiter; none is accepted after. */
    GSource *src = loop_create_gsource(loop);
    g_assert_cmpint(f.detaches, ==, 2);
    g_assert_false(loop_claim_waiter(loop, &g.w));
    int waits = f.waits;
    loop_timer_mod(&timer, clock_ns() + 1000 * 1000);
    fired = 0;
    while (!fired) {
        loop_run_once(loop, true);
    }
    g_assert_cmpint(f.waits, ==, waits);
    g_source_unref(src);

    close(f.eventfd);
    loop_free(loop);
}

static void test_gsource_drives_loop(void)
{
    GSourceState s = { .loop = test_loop_new(), .fired_at = -1 };
    GMainContext *ctx = g_main_context_new();
    GSource *source = loop_create_gsource(s.loop);
    GSource *watchdog = g_timeout_source_new_seconds(20);

    g_source_attach(source, ctx);
    g_source_set_callback(watchdog, gsource_watchdog, NULL, NULL);
    g_source_attach(watchdog, ctx);
    s.main_loop = g_main_loop_new(ctx, FALSE);
    s.bh = loop_bh_new(s.loop, gsource_bh, &s);
    s.remote_bh = loop_bh_new(s.loop, gsource_remote_bh, &s);
    loop_timer_init(&s.timer, s.loop, gsource_timer_cb, &s);

    /* A coroutine spawned before the main loop runs is entered by it. */
    s.co.loop = s.loop;
    loop_co_spawn(s.loop, co_rec_entry, &s.co);
    loop_bh_schedule(s.bh);
    g_main_loop_run(s.main_loop);

    g_thread_join(s.remote);
    g_assert_true(s.bh_ran);
    g_assert_cmpint(s.fired_at, >=, s.armed_for);
    g_assert_true(s.remote_ran_in == g_thread_self());
    g_assert_cmpint(s.co.entries, ==, 1);
    loop_co_wake(s.co.co);

    /* The coroutine runs to its end under the GMainLoop too. */
    while (!s.co.finished) {
        g_main_context_iteration(ctx, TRUE);
    }

    g_source_destroy(watchdog);
    g_source_unref(watchdog);
    g_source_destroy(source);
    g_source_unref(source);
    g_main_loop_unref(s.main_loop);
    g_main_context_unref(ctx);
    loop_bh_delete(s.bh);
    loop_bh_delete(s.remote_bh);
    loop_free(s.loop);
}

/* ---- busy polling -------------------------------------------------------- */

typedef struct PollState {
    Loop *loop;
    LoopPoller *poller;
    int polls, begins, ends;
    int work_at;            /* poll() finds work on this call (0: never) */
    bool remove_in_poll;
    bool end_finds;         /* end()'s last look does work */
} PollState;

static bool poll_cb(void *opaque)
{
    PollState *s = opaque;

    s->polls++;
    g_assert_cmpint(s->begins, ==, s->ends + 1);    /* inside a phase */
    if (s->remove_in_poll) {
        loop_remove_poller(s->loop, s->poller);
        s->poller = NULL;
        return true;
    }
    return s->work_at && s->polls == s->work_at;
}

static void poll_begin(void *opaque)
{
    ((PollState *)opaque)->begins++;
}

static bool poll_end(void *opaque)
{
    PollState *s = opaque;

    s->ends++;
    return s->end_finds;
}

static void timer_noop(void *opaque)
{
    (*(int *)opaque)++;
}

/* One blocking iteration that sleeps until a timer @ns from now. */
static void sleep_once(Loop *loop, int64_t ns)
{
    LoopTimer t;
    int fired = 0;

    loop_timer_init(&t, loop, timer_noop, &fired);
    loop_timer_mod(&t, clock_ns() + ns);
    while (!fired) {
        loop_run_once(loop, true);
    }
    loop_timer_del(&t);
}

static void test_poll_adapts(void)
{
    Loop *loop = test_loop_new();
    PollState s = { .loop = loop };

    s.poller = loop_add_poller(loop, poll_cb, poll_begin, poll_end, &s);
    /* No poll time: never polls. */
    sleep_once(loop, 100000);
    g_assert_cmpint(s.polls, ==, 0);
    g_assert_cmpint(loop_get_poll_ns(loop), ==, 0);

    /* A sleep shorter than the maximum: the poll time starts at 4 us,
     * then doubles (poll-grow 0). */
    loop_set_poll_params(loop, 1000000000, 0, 0);
    sleep_once(loop, 100000);
    g_assert_cmpint(loop_get_poll_ns(loop), ==, 4000);
    sleep_once(loop, 100000);
    g_assert_cmpint(loop_get_poll_ns(loop), ==, 8000);
    /* It polled (nothing found) before sleeping: one phase, closed. */
    g_assert_cmpint(s.polls, >=, 1);
    g_assert_cmpint(s.begins, ==, 1);
    g_assert_cmpint(s.ends, ==, 1);

    /* poll-grow 3 */
    loop_set_poll_params(loop, 1000000000, 3, 0);
    sleep_once(loop, 100000);
    g_assert_cmpint(loop_get_poll_ns(loop), ==, 24000);

    /* A sleep longer than the maximum but within 4 of them (the horizon:
     * what a sleep adds to the wait polling would see) still grows it. */
    loop_set_poll_params(loop, 10000000, 0, 2);
    g_assert_cmpint(loop_get_poll_ns(loop), ==, 24000);
    sleep_once(loop, 15000000);
    g_assert_cmpint(loop_get_poll_ns(loop), ==, 48000);
    /* A sleep longer than 4 maximums: polling does not pay, back to 0
     * (poll-shrink 0); with poll-shrink 2 it halves. */
    sleep_once(loop, 50000000);
    g_assert_cmpint(loop_get_poll_ns(loop), ==, 24000);
    loop_set_poll_params(loop, 1000000, 0, 0);
    sleep_once(loop, 5000000);
    g_assert_cmpint(loop_get_poll_ns(loop), ==, 0);
    /* The wait counts whole, the fruitless poll included: with a 1 ms
     * window, an event 1.5 ms away (a sleep of 0.5 ms, shorter than the
     * window) still grows it. */
    loop_set_poll_params(loop, 1000000000, 256, 0);
    sleep_once(loop, 100000);
    sleep_once(loop, 100000);
    g_assert_cmpint(loop_get_poll_ns(loop), ==, 4000 * 256);
    sleep_once(loop, 1500000);
    g_assert_cmpint(loop_get_poll_ns(loop), ==, 4000 * 256 * 256);
    /* The maximum caps the poll time. */
    loop_set_poll_params(loop, 5000, 0, 0);
    sleep_once(loop, 1000);
    sleep_once(loop, 1000);
    g_assert_cmpint(loop_get_poll_ns(loop), <=, 5000);

    loop_remove_poller(loop, s.poller);
    loop_free(loop);
}

/* The largest values an iothread accepts (poll-max-ns, poll-grow up to
 * INT64_MAX): the poll time saturates at the limit instead of
 * overflowing, and a window that long still ends when work turns up. */
static void test_poll_huge_params(void)
{
    Loop *loop = test_loop_new();
    PollState s = { .loop = loop };

    s.poller = loop_add_poller(loop, poll_cb, poll_begin, poll_end, &s);
    loop_set_poll_params(loop, INT64_MAX, INT64_MAX, 0);
    sleep_once(loop, 100000);               /* 4 us */
    sleep_once(loop, 100000);               /* 4 us * INT64_MAX: capped */
    g_assert_cmpint(loop_get_poll_ns(loop), ==, INT64_MAX);
    s.work_at = s.polls + 3;
    g_assert_true(loop_run_once(loop, true));
    g_assert_cmpint(s.polls, ==, s.work_at);

    loop_remove_poller(loop, s.poller);
    loop_free(loop);
}

static void test_poll_finds_work(void)
{
    Loop *loop = test_loop_new();
    PollState s = { .loop = loop };

    s.poller = loop_add_poller(loop, poll_cb, poll_begin, poll_end, &s);
    loop_set_poll_params(loop, 1000000000, 0, 0);
    sleep_once(loop, 100000);               /* poll time 4 us */
    g_assert_cmpint(loop_get_poll_ns(loop), ==, 4000);
    /* Grow the poll time to the 1 s cap in one step: the looks below must
     * all fit in it, and under TSan three looks take longer than 4 us. */
    loop_set_poll_params(loop, 1000000000, 1000000, 0);
    sleep_once(loop, 100000);
    g_assert_cmpint(loop_get_poll_ns(loop), ==, 1000000000);
    int polls = s.polls, begins = s.begins, ends = s.ends;

    /* Work on the third look (as if the driver queued a request while
     * the loop spun): the iteration returns with progress, without
     * sleeping (no timer, no fd: a sleep would never end), and the phase
     * stays open, notifications still off. */
    s.work_at = polls + 3;
    g_assert_true(loop_run_once(loop, true));
    g_assert_cmpint(s.polls, ==, polls + 3);
    g_assert_cmpint(s.begins, ==, begins + 1);
    g_assert_cmpint(s.ends, ==, ends);
    /* It stays open across iterations that find work... */
    s.work_at = s.polls + 1;
    g_assert_true(loop_run_once(loop, true));
    g_assert_cmpint(s.begins, ==, begins + 1);
    g_assert_cmpint(s.ends, ==, ends);
    /* ...and closes before the loop sleeps. */
    s.work_at = 0;
    sleep_once(loop, 100000);
    g_assert_cmpint(s.ends, ==, ends + 1);

    /* A poller removed by its own poll callback is unlinked after the
     * phase (loop_free asserts none is left). */
    s.remove_in_poll = true;
    g_assert_true(loop_run_once(loop, true));
    g_assert_null(s.poller);
    sleep_once(loop, 10000);
    loop_free(loop);
}

/* The last look of a poller's end callback completes a request in place
 * (a vhost-user driver's used ring): that may be what the caller of
 * loop_run_once() waits for, so the iteration returns instead of
 * sleeping until the next event (here a timer 10 s away; with no other
 * event the caller would hang, as strata-io did on a polled queue). */
static void test_poll_end_finds_work(void)
{
    Loop *loop = test_loop_new();
    PollState s = { .loop = loop };
    LoopTimer t;
    int fired = 0;

    s.poller = loop_add_poller(loop, poll_cb, poll_begin, poll_end, &s);
    loop_set_poll_params(loop, 1000000000, 0, 0);
    sleep_once(loop, 100000);               /* poll time 4 us */
    g_assert_cmpint(loop_get_poll_ns(loop), ==, 4000);
    int ends = s.ends;

    loop_timer_init(&t, loop, timer_noop, &fired);
    loop_timer_mod(&t, clock_ns() + 10 * 1000000000LL);
    s.end_finds = true;
    int64_t start = clock_ns();
    g_assert_true(loop_run_once(loop, true));
    g_assert_cmpint(s.ends, ==, ends + 1);
    g_assert_cmpint(fired, ==, 0);
    g_assert_cmpint(clock_ns() - start, <, 5 * 1000000000LL);
    loop_timer_del(&t);

    loop_remove_poller(loop, s.poller);
    loop_free(loop);
}

/* While an always-ready handler (a regular file) keeps the loop from
 * sleeping, the pollers still look each iteration and their phase is
 * closed (notifications back on) before the iteration goes on, instead
 * of being starved with their notifications off. */
static void test_poll_with_always_ready(void)
{
    Loop *loop = test_loop_new();
    PollState s = { .loop = loop };
    g_autofree char *path = NULL;
    int fd = g_file_open_tmp("strata-loop-XXXXXX", &path, NULL);
    g_assert_cmpint(fd, >=, 0);
    unlink(path);

    s.poller = loop_add_poller(loop, poll_cb, poll_begin, poll_end, &s);
    loop_set_poll_params(loop, 1000000000, 0, 0);
    sleep_once(loop, 100000);               /* poll time 4 us */
    g_assert_cmpint(loop_get_poll_ns(loop), >, 0);

    FileRead fr = { .loop = loop, .fd = fd, .got = g_string_new(NULL) };
    g_assert_cmpint(write(fd, "0123456789ab", 12), ==, 12);
    g_assert_cmpint(lseek(fd, 0, SEEK_SET), ==, 0);
    loop_set_fd_handler(loop, fd, file_read_cb, NULL, &fr);
    int polls = s.polls, ends = s.ends;
    for (int i = 0; i < 3; i++) {
        g_assert_true(loop_run_once(loop, true));
        g_assert_cmpint(s.polls, >, polls);
        g_assert_cmpint(s.ends, ==, s.begins);    /* phase closed */
        polls = s.polls;
    }
    g_assert_cmpint(s.ends, >, ends);
    g_assert_cmpstr(fr.got->str, ==, "0123456789ab");

    g_assert_true(loop_run_once(loop, true));   /* end of file: removed */
    g_string_free(fr.got, TRUE);
    close(fd);
    loop_remove_poller(loop, s.poller);
    loop_free(loop);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/loop/fd/read-fires-then-not-after-removal",
                    test_fd_read_and_remove);
    g_test_add_func("/loop/fd/remove-other-in-same-batch",
                    test_fd_remove_in_callback);
    g_test_add_func("/loop/fd/write-ready", test_fd_write);
    g_test_add_func("/loop/bh/cross-thread-runs-in-loop-thread",
                    test_bh_cross_thread);
    g_test_add_func("/loop/bh/cross-thread-storm", test_bh_cross_thread_storm);
    g_test_add_func("/loop/bh/schedule-twice-runs-once", test_bh_idempotent);
    g_test_add_func("/loop/bh/never-inside-schedule", test_bh_never_inline);
    g_test_add_func("/loop/bh/cancel-and-delete", test_bh_cancel_and_delete);
    g_test_add_func("/loop/bh/oneshot", test_bh_oneshot);
    g_test_add_func("/loop/timer/order-and-delete", test_timer_order);
    g_test_add_func("/loop/timer/not-before-expiry",
                    test_timer_not_before_expiry);
    g_test_add_func("/loop/timer/rearm-and-delete-in-callback",
                    test_timer_rearm_and_delete_in_callback);
    g_test_add_func("/loop/defer/one-call-per-iteration",
                    test_defer_batches_iteration);
    g_test_add_func("/loop/defer/outside-section-immediate",
                    test_defer_outside_section);
    g_test_add_func("/loop/defer/nested-sections", test_defer_nested);
    g_test_add_func("/loop/defer/table-full-calls-at-once",
                    test_defer_overflow);
    g_test_add_func("/loop/defer/flushed-before-nested-wait",
                    test_defer_flushed_before_nested_wait);
    g_test_add_func("/loop/co-wake/same-thread",
                    test_co_spawn_and_wake_same_thread);
    g_test_add_func("/loop/co-wake/cross-thread", test_co_wake_cross_thread);
    g_test_add_func("/loop/co-wake/fifo", test_co_wake_fifo);
    g_test_add_func("/co-sync/queue/fifo", test_co_queue_fifo);
    g_test_add_func("/co-sync/queue/restart-all", test_co_queue_restart_all);
    g_test_add_func("/co-sync/queue/wait-unlocks-mutex",
                    test_co_queue_wait_with_mutex);
    g_test_add_func("/co-sync/mutex/exclusion-and-fifo",
                    test_co_mutex_exclusion);
    g_test_add_func("/co-sync/sleep/at-least-requested",
                    test_co_sleep_lower_bound);
    g_test_add_func("/loop/poll/adapts-to-sleeps", test_poll_adapts);
    g_test_add_func("/loop/waiter/sleeps-checks-detaches", test_waiter);
    g_test_add_func("/loop/fd/regular-file-always-ready",
                    test_regular_file_fd);
    g_test_add_func("/loop/poll/with-always-ready-fd",
                    test_poll_with_always_ready);
    g_test_add_func("/loop/poll/huge-params-saturate", test_poll_huge_params);
    g_test_add_func("/loop/poll/end-finds-work-no-sleep",
                    test_poll_end_finds_work);
    g_test_add_func("/loop/poll/finds-work-without-sleeping",
                    test_poll_finds_work);
    g_test_add_func("/loop/gsource/glib-main-loop-drives",
                    test_gsource_drives_loop);
    return g_test_run();
}
