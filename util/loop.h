/*
 * Per-thread event loop (SPDX-License-Identifier: MIT)
 *
 * A Loop multiplexes fd handlers (epoll), bottom halves, monotonic timers
 * and coroutine wake-ups, and gives I/O engines a "defer" section so the
 * submissions made during one iteration reach the kernel in one batch.
 *
 * Ownership: a loop has one owner thread, the only thread that may run it
 * (loop_run_once() asserts it).  The thread that creates a loop owns it;
 * ownership moves only by an explicit handover: the owner calls
 * loop_release(), something orders the two threads (starting or joining
 * a thread, a lock), and the new owner calls loop_acquire().
 * loop_is_owner() is the one test for "may I run this loop myself"; a
 * thread that does not own the loop hands work to it (bottom halves,
 * coroutine wake-ups) and waits for the owner to run it.
 *
 * Thread safety: loop_is_owner(), loop_bh_schedule(), loop_wake(),
 * loop_oneshot() and loop_co_wake() may be called from any thread.
 * Everything else is for the owner.
 */
#ifndef STRATA_UTIL_LOOP_H
#define STRATA_UTIL_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "util/coroutine.h"
#include "util/error.h"

typedef struct Loop Loop;
typedef struct LoopBH LoopBH;
typedef struct ThreadPool ThreadPool;

typedef void LoopCallback(void *opaque);

/* Monotonic clock in nanoseconds. */
int64_t clock_ns(void);

/*
 * Create a loop, owned by the calling thread.  It is not attached as the
 * thread's current loop (loop_current()) until loop_attach_current(), or
 * for the duration of a loop_run_once() call.
 */
Loop *loop_new(StrataError **errp);
/* Free a loop, in its owner thread or while it has no owner: no fd
 * handlers, timers or scheduled bottom halves may remain; pending
 * coroutine wake-ups are a bug (asserted). */
void loop_free(Loop *loop);

/* True when the calling thread owns @loop (any thread). */
bool loop_is_owner(const Loop *loop);
/* Give up ownership (owner only, asserted): until some thread calls
 * loop_acquire(), nobody may run the loop, and every thread that submits
 * work to it waits. */
void loop_release(Loop *loop);
/*
 * Something tied to the owner thread that must be settled before another
 * thread runs the loop (an io_uring ring whose completions only its
 * submitting thread can have posted): loop_release() calls @fn(@opaque)
 * in the old owner, after the waiter's detach, for every hook added.
 * The hook is the caller's, stored, not copied; add and remove from any
 * thread, but not while the loop is being released.
 */
typedef struct LoopReleaseHook {
    void (*fn)(void *opaque);
    void *opaque;
    struct LoopReleaseHook *next;   /* the loop's */
} LoopReleaseHook;
void loop_add_release_hook(Loop *loop, LoopReleaseHook *hook);
/* Nothing if @hook is not there. */
void loop_remove_release_hook(Loop *loop, LoopReleaseHook *hook);

/* Become the owner of a loop that has none (asserted).  The previous
 * owner's loop_release() must happen before this call (thread creation,
 * thread join or a lock orders them). */
void loop_acquire(Loop *loop);

/*
 * The loop of the calling thread: the one currently running in this thread
 * (inside loop_run_once), else the one set with loop_attach_current(),
 * else NULL.
 */
Loop *loop_current(void);
/* A pointer the loop's user attaches (block/queue.c: the StrataQueue whose
 * loop it is); NULL by default.  Set before the loop runs anything. */
void loop_set_user(Loop *loop, void *user);
void *loop_get_user(const Loop *loop);
/* loop_get_user(loop_current()), or NULL without a current loop: one
 * thread-local load on the request path.  Out of line on purpose: a
 * coroutine may move to another thread across a yield, and an inlined
 * thread-local address could be kept from before the move. */
void *loop_current_user(void) __attribute__((noinline));
/* Make @loop the calling thread's loop (NULL detaches).  A thread that
 * creates requests outside loop_run_once() (a tool's main) calls this. */
void loop_attach_current(Loop *loop);

/*
 * Run one iteration, in the owner thread only (asserted): run scheduled
 * bottom halves and coroutine wake-ups,
 * expired timers, then (if @blocking and nothing became ready) wait for fd
 * events or the next timer, and dispatch them.  Returns true if any
 * callback ran.  Must not be called from a coroutine (asserted).  A
 * callback of @loop may run nested iterations (a synchronous wait such as
 * LOOP_RUN_WHILE(loop, in_flight > 0)); submissions deferred by the outer
 * section are flushed before a nested iteration polls.  When work ran
 * before polling, the epoll_wait syscall is skipped (at most a few
 * iterations in a row, so fds are never starved).
 */
bool loop_run_once(Loop *loop, bool blocking);

/* Run iterations until @cond(opaque) returns false. */
void loop_run_while(Loop *loop, bool (*cond)(void *opaque), void *opaque);

/* Convenience: run iterations while the expression is true. */
#define LOOP_RUN_WHILE(loop, cond) \
    do { while ((cond)) { loop_run_once((loop), true); } } while (0)

/* Wake the loop if it is blocked in epoll_wait (any thread). */
void loop_wake(Loop *loop);

/* ---- fd handlers ---------------------------------------------------- */

/* Install, replace or (both NULL) remove the handlers of @fd.  Level
 * triggered.  The handlers run in the loop's thread. */
void loop_set_fd_handler(Loop *loop, int fd, LoopCallback *on_read,
                         LoopCallback *on_write, void *opaque);

/* ---- busy polling --------------------------------------------------- */

/*
 * Before a blocking iteration sleeps, a loop with poll time and pollers
 * calls every poller's @poll in turn (and the waiter's @check) for up to
 * the poll time (adaptive, at most loop_set_poll_params' @max_ns): @poll
 * does the work it finds (a virtqueue's new requests) and returns true if
 * there was some, which ends the polling.  @begin and @end (either may be
 * NULL) bracket one polling phase: a device suppresses its notifications
 * in @begin, and in @end re-arms them and looks once more, returning true
 * if that look did work.  Work found there may be what a caller of
 * loop_run_once() waits for (a completion entered in place), so the
 * iteration then returns instead of sleeping.  Loop thread only.
 */
typedef struct LoopPoller LoopPoller;
LoopPoller *loop_add_poller(Loop *loop, bool (*poll)(void *opaque),
                            LoopCallback *begin, bool (*end)(void *opaque),
                            void *opaque);
void loop_remove_poller(Loop *loop, LoopPoller *p);

/* ---- a source that waits for the loop ------------------------------- */

/*
 * One source per loop may do the loop's blocking waits itself: an AIO
 * engine whose completions reach it for fewer system calls through its own
 * wait (io_getevents) than through an eventfd in the epoll set.  Its work
 * then signals no fd, so the loop calls @check on every iteration that
 * polls its fds (and while busy polling) to run what has arrived, and
 * calls @wait where it would sleep in epoll_wait: @wait blocks until the
 * source's own work arrives, the loop's epoll set @epfd turns readable,
 * or @timeout_ns passes (-1: no limit), and returns 1 if the epoll set may
 * have events, 0 if not, or -EINTR.  @check returns true if it ran a
 * callback.  @detach turns the source back to fd wake-ups, because a GLib
 * main context is to poll the epoll set (loop_create_gsource) or the
 * loop is handed to another thread (loop_release, which calls it in the
 * old owner); the loop calls nothing of the waiter after it.  Everything
 * runs in the loop's thread.
 */
typedef struct LoopWaiter {
    int (*wait)(void *opaque, int epfd, int64_t timeout_ns);
    bool (*check)(void *opaque);
    void (*detach)(void *opaque);
    void *opaque;
} LoopWaiter;

/* Make @w (stored, not copied) the loop's waiter, from the loop's owner
 * thread.  False if the caller does not own the loop, the loop has a
 * waiter or a GLib source: the source then keeps using an fd. */
bool loop_claim_waiter(Loop *loop, const LoopWaiter *w);

/* Give the role back (nothing if @w does not hold it).  Loop thread. */
void loop_release_waiter(Loop *loop, const LoopWaiter *w);

/*
 * QEMU's iothread properties: poll for at most @max_ns (0: never); the
 * poll time starts at 0 and after a sleep shorter than @max_ns grows
 * (times @grow, 0: 2; from 4 µs), after a longer one shrinks (divided by
 * @shrink, 0: back to 0).  Before the loop runs, or from its thread.
 */
void loop_set_poll_params(Loop *loop, int64_t max_ns, int64_t grow,
                          int64_t shrink);
/* The current poll time (adaptive; introspection and tests). */
int64_t loop_get_poll_ns(const Loop *loop);

/* ---- bottom halves -------------------------------------------------- */

/* A bottom half is a deferred callback.  Scheduling is idempotent until it
 * runs, callable from any thread, and never runs the callback inside the
 * call that schedules it. */
LoopBH *loop_bh_new(Loop *loop, LoopCallback *cb, void *opaque);
void loop_bh_schedule(LoopBH *bh);
void loop_bh_cancel(LoopBH *bh);
/* Delete (loop thread only); a scheduled but not yet run BH is cancelled. */
void loop_bh_delete(LoopBH *bh);
/* Run @cb(opaque) once, soon, in @loop (any thread).  Allocates: control
 * path only. */
void loop_oneshot(Loop *loop, LoopCallback *cb, void *opaque);

/* ---- timers --------------------------------------------------------- */

/* Caller-owned timer storage (no allocation). */
typedef struct LoopTimer {
    Loop *loop;
    LoopCallback *cb;
    void *opaque;
    int64_t expire_ns;        /* -1 when not armed */
    struct LoopTimer *next;   /* sorted list of armed timers */
} LoopTimer;

void loop_timer_init(LoopTimer *t, Loop *loop, LoopCallback *cb, void *opaque);
/* Arm at absolute monotonic time @expire_ns (clock_ns()); re-arming moves. */
void loop_timer_mod(LoopTimer *t, int64_t expire_ns);
void loop_timer_del(LoopTimer *t);
bool loop_timer_pending(const LoopTimer *t);

/* ---- coroutines ----------------------------------------------------- */

/*
 * Enter @co in its home loop's thread soon (from any thread, including
 * from @co's own loop and from other coroutines).  Never enters it inside
 * this call.  Uses an intrusive link: no allocation.
 */
void loop_co_wake(Coroutine *co);

/*
 * Create a coroutine with home @loop and schedule its first entry there.
 */
void loop_co_spawn(Loop *loop, CoroutineEntry *entry, void *opaque);

/* ---- submission batching -------------------------------------------- */

/*
 * A defer section collects "flush" callbacks from I/O engines: an engine
 * that queued a submission calls loop_defer_call(loop, fn, opaque) and fn
 * runs once per (fn, opaque) pair when the outermost section ends.
 * loop_run_once() wraps every dispatch in a section, so all submissions
 * made by callbacks and coroutines in one iteration go out together.
 * Outside any section, loop_defer_call() calls fn at once.
 */
void loop_defer_begin(Loop *loop);
void loop_defer_end(Loop *loop);
void loop_defer_call(Loop *loop, LoopCallback *fn, void *opaque);

/*
 * Largest batch an AIO engine collects before it submits (QEMU's
 * aio-max-batch): 0, the default, submits once per iteration whatever the
 * count; a smaller batch trades syscalls for latency at high depth.  An
 * option of the loop, not of a node: the ring is shared by every node.
 */
void loop_set_aio_max_batch(Loop *loop, unsigned max_batch);
unsigned loop_get_aio_max_batch(const Loop *loop);

/* ---- thread pool ---------------------------------------------------- */

/* The loop's thread pool (util/thread-pool.h), created on first use. */
ThreadPool *loop_get_thread_pool(Loop *loop);

/* ---- GLib integration ----------------------------------------------- */

/*
 * A GSource that drives @loop from a GMainContext: attach it and the
 * GMainLoop runs Strata's loop iterations.  The source holds no reference
 * that outlives the loop; destroy it before loop_free().  From the loop's
 * thread, or before the loop runs: a waiter (loop_claim_waiter) is
 * detached, and none is accepted after.
 */
GSource *loop_create_gsource(Loop *loop);

#endif
