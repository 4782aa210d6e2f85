/*
 * Stackful coroutines (SPDX-License-Identifier: MIT)
 *
 * A coroutine runs on its own stack in the thread that enters it.  It runs
 * until it yields or returns; co_enter() then returns to the caller.  A
 * request in Strata is one coroutine from entry to completion: a driver
 * submits, yields, and the completion re-enters it.
 *
 * Stacks come from a per-thread pool (mmap with a guard page below the stack,
 * reused after termination).  The context switch is hand-written for x86-64
 * and aarch64 with a ucontext fallback; under AddressSanitizer every switch is
 * announced with __sanitizer_start/finish_switch_fiber, under ThreadSanitizer
 * with __tsan_switch_to_fiber (each coroutine is a TSan fiber), and stacks
 * are larger.
 *
 * Thread rules: a coroutine is entered only in one thread at a time; to wake a
 * coroutine from another thread use loop_co_wake() (util/loop.h), which
 * enters it in its home loop's thread.
 */
#ifndef STRATA_UTIL_COROUTINE_H
#define STRATA_UTIL_COROUTINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Coroutine Coroutine;
typedef struct Loop Loop;

typedef void CoroutineEntry(void *opaque);

/*
 * Create a coroutine that will run entry(opaque) when first entered.  The
 * coroutine's home loop is loop_current() at creation (may be NULL).  The
 * coroutine is freed (returned to the pool) when @entry returns.
 * Never fails: aborts only if the process cannot map a stack at all.
 */
Coroutine *co_create(CoroutineEntry *entry, void *opaque);

/*
 * Switch into @co until it yields or terminates.  Callable from outside
 * coroutines and from inside one (nesting: the caller becomes the entered
 * coroutine's "caller" and is resumed when @co yields).  Entering a
 * coroutine that is already running (on the caller chain) asserts.
 */
void co_enter(Coroutine *co);

/*
 * Enter, in order, the coroutines of a list linked through their wake
 * links (co_wake_next_ptr) from @head up to (not including) @end, each
 * until it yields or terminates; each is unlinked (its link set to NULL)
 * right before it runs.  Same effect as co_enter() on each in turn, but a
 * coroutine of the list that yields or ends switches straight into the
 * next one instead of back here.  With a round trip through here between
 * them, every return on the way back up a resumed coroutine's stack is
 * mispredicted (the CPU's return stack holds this caller's calls); going
 * from one to the next, the return stack holds the calls the last one
 * made on its way down, which are the next one's way up when they
 * suspended at the same place, as a loop's requests do (4 KiB reads at
 * depth 32 on tmpfs: +3% IOPS with native AIO, +7% with io_uring; see
 * docs/request-path.md).
 */
void co_enter_wake_list(Coroutine *head, Coroutine *end);

/*
 * A list of coroutines to enter in a row (co_enter_wake_list), built
 * through their wake links: for a completion handler that would otherwise
 * co_enter() each finished request's coroutine in turn.  A coroutine is on
 * at most one such list or loop wake list.
 */
#define CO_LIST_END ((Coroutine *)(uintptr_t)1)
typedef struct CoList {
    Coroutine *head, *tail;
} CoList;
#define CO_LIST_INIT { NULL, NULL }
void co_list_append(CoList *list, Coroutine *co);
/* Enter them all, oldest first; the list is empty after. */
void co_list_enter(CoList *list);

/* Yield back to the coroutine or thread that entered the current one.
 * Must be called from a coroutine. */
void co_yield(void);

/*
 * Timestamps for nested accounting (CLOCK_MONOTONIC ns, as clock_ns()).
 * Every co_clock_begin() is paired with one co_clock_end() in the same
 * coroutine.  A request that passes through a chain of nodes times each of
 * them; a clock read costs 30-60 ns on a virtual machine, more than a
 * filter node's own work.  So a begin nested in another begin with no
 * coroutine switch in between returns that one's reading, and an end whose
 * nested callee ended with no switch in between returns the callee's:
 * a chain of N nodes costs two reads, not 2N.  A begin after an end with
 * no switch in between (a coroutine issuing its next request as the last
 * one completes, as strata-img bench and copy loops do) starts at that
 * end: back-to-back requests cost one read each (native AIO on tmpfs, d32:
 * +3.9% IOPS; null: 70 -> 49 ns per request).  The price: a level's time
 * includes the CPU work its caller did before entering it (and since the
 * previous request's end) and leaves out the CPU work its caller does
 * after it returns (nanoseconds to a few microseconds for a bounce copy);
 * never time spent waiting, since every wait is a switch.
 */
int64_t co_clock_begin(void);
int64_t co_clock_end(void);
/* "Now" for code inside a level (a throttle deciding whether a request
 * may go): the enclosing begin's reading while no switch has happened
 * since, else a fresh read. */
int64_t co_clock_now(void);

/* The current coroutine, or NULL outside coroutines. */
Coroutine *co_self(void);

/* True when running in a coroutine. */
bool co_in_coroutine(void);

/* Home loop of @co (where loop_co_wake() enters it); may be NULL. */
Loop *co_get_loop(Coroutine *co);
void co_set_loop(Coroutine *co, Loop *loop);
/*
 * Move the calling coroutine to @loop: it becomes its home, and it
 * continues there (in @loop's thread) after a yield.  The wake-up is
 * queued only once the coroutine has left its stack, so the new thread
 * can never enter it while the old one still runs it.
 */
void co_yield_to_loop(Loop *loop);

/*
 * How many bounce-pool reservations the current coroutine holds, nested
 * (a request holding padding buffers at one node that descends into a
 * child which needs its own): the level its next reservation is made at,
 * by util/bufpool.h's ordering rule.  The request path reads it before it
 * reserves, sets it one higher while it holds the buffers and puts it
 * back when it returns them.  A fresh coroutine starts at 0.  Must be
 * called from a coroutine.
 */
unsigned *co_pool_depth(void);

/*
 * Stack size for coroutines created from now on in this process, in bytes
 * (rounded up to the page size; default 64 KiB, at least 16 KiB; under ASan
 * the effective size is 4x).  Call before creating coroutines.
 */
void co_set_stack_size(size_t bytes);
size_t co_get_stack_size(void);

/* Pool statistics of the calling thread. */
typedef struct CoroutinePoolStats {
    uint64_t created;   /* stacks mapped */
    uint64_t reused;    /* creations served from the pool */
    uint64_t pooled;    /* stacks currently free in the pool */
    uint64_t handoffs;  /* switches from one coroutine of a list straight
                         * into the next (co_enter_wake_list) */
} CoroutinePoolStats;
void co_pool_stats(CoroutinePoolStats *out);

/*
 * Intrusive scheduling link, used by util/loop.c to queue a coroutine for
 * wake-up without allocating.  A coroutine is on at most one wake list.
 */
Coroutine **co_wake_next_ptr(Coroutine *co);
/* Intrusive link for CoQueue membership (util/coroutine-sync.c). */
Coroutine **co_queue_next_ptr(Coroutine *co);

/* ---- Coroutine synchronisation (util/coroutine-sync.c) ----------------
 * Single-threaded unless a lock guards the queue (co_queue_wait_spin): a
 * waiter is always entered in its own home loop's thread. */

/*
 * FIFO wait queue.  Waiters are woken in arrival order.  Wake-ups go through
 * the home loop (loop_co_wake) and never enter the waiter inside the call
 * that wakes it, so callers need not worry about re-entrancy.
 */
typedef struct CoQueue {
    Coroutine *head, *tail;  /* linked through each waiter's queue link */
} CoQueue;

typedef struct CoMutex CoMutex;

void co_queue_init(CoQueue *q);
/* Wait until woken.  If @mutex is non-NULL it is unlocked while waiting
 * and locked again before returning. */
void co_queue_wait(CoQueue *q, CoMutex *mutex);
/*
 * Wait on a queue shared between loops, guarded by @lock (util/thread.h),
 * which the caller holds: push, unlock, yield, lock again.  Wakers pop
 * under the same lock; the wake-up is a loop_co_wake() of the waiter's
 * home loop, which enters it only after it has yielded, in its own thread.
 * @lock must be a SpinLock *.
 */
struct SpinLock;
void co_queue_wait_spin(CoQueue *q, struct SpinLock *lock);
/* The same with a util/thread.h Mutex (held across slow work, such as
 * mapping fresh pool memory). */
struct Mutex;
void co_queue_wait_mutex(CoQueue *q, struct Mutex *lock);
/* Wake the first waiter; false if the queue was empty. */
bool co_queue_next(CoQueue *q);
/* Wake every waiter. */
void co_queue_restart_all(CoQueue *q);
bool co_queue_empty(const CoQueue *q);

/* A mutex for coroutines: lock yields while another coroutine holds it. */
struct CoMutex {
    Coroutine *holder;
    CoQueue waiters;
};
void co_mutex_init(CoMutex *m);
void co_mutex_lock(CoMutex *m);
void co_mutex_unlock(CoMutex *m);

/* Sleep for @ns nanoseconds on the home loop's monotonic timer.  Must be
 * called from a coroutine whose home loop is running. */
void co_sleep_ns(int64_t ns);

#endif
