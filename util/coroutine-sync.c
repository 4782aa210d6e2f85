/*
 * Coroutine synchronisation: CoQueue, CoMutex, co_sleep_ns
 * (SPDX-License-Identifier: MIT)
 *
 * Everything here is single-threaded: the users of one queue or mutex run
 * in one loop's thread, so plain loads and stores suffice.  Waking goes
 * through loop_co_wake(), which enters the waiter later in the loop
 * iteration: the waker keeps running, and nothing re-enters it.
 */
#include <assert.h>
#include "util/coroutine.h"
#include "util/loop.h"
#include "util/thread.h"

void co_queue_init(CoQueue *q)
{
    q->head = q->tail = NULL;
}

static void co_queue_push(CoQueue *q, Coroutine *co)
{
    *co_queue_next_ptr(co) = NULL;
    if (q->tail) {
        *co_queue_next_ptr(q->tail) = co;
    } else {
        q->head = co;
    }
    q->tail = co;
}

static Coroutine *co_queue_pop(CoQueue *q)
{
    Coroutine *co = q->head;

    if (co) {
        Coroutine **link = co_queue_next_ptr(co);
        q->head = *link;
        if (!q->head) {
            q->tail = NULL;
        }
        *link = NULL;
    }
    return co;
}

void co_queue_wait(CoQueue *q, CoMutex *mutex)
{
    Coroutine *self = co_self();

    assert(self && "co_queue_wait outside a coroutine");
    co_queue_push(q, self);
    if (mutex) {
        co_mutex_unlock(mutex);
    }
    co_yield();
    if (mutex) {
        co_mutex_lock(mutex);
    }
}

void co_queue_wait_spin(CoQueue *q, struct SpinLock *lock)
{
    Coroutine *self = co_self();

    assert(self && "co_queue_wait_spin outside a coroutine");
    co_queue_push(q, self);
    spin_unlock(lock);
    co_yield();
    spin_lock(lock);
}

void co_queue_wait_mutex(CoQueue *q, struct Mutex *lock)
{
    Coroutine *self = co_self();

    assert(self && "co_queue_wait_mutex outside a coroutine");
    co_queue_push(q, self);
    mutex_unlock(lock);
    co_yield();
    mutex_lock(lock);
}

bool co_queue_next(CoQueue *q)
{
    Coroutine *co = co_queue_pop(q);

    if (!co) {
        return false;
    }
    loop_co_wake(co);
    return true;
}

void co_queue_restart_all(CoQueue *q)
{
    while (co_queue_next(q)) {
    }
}

bool co_queue_empty(const CoQueue *q)
{
    return q->head == NULL;
}

void co_mutex_init(CoMutex *m)
{
    m->holder = NULL;
    co_queue_init(&m->waiters);
}

void co_mutex_lock(CoMutex *m)
{
    Coroutine *self = co_self();

    assert(self && "co_mutex_lock outside a coroutine");
    if (!m->holder) {
        m->holder = self;
        return;
    }
    assert(m->holder != self && "co_mutex_lock: recursive locking");
    co_queue_push(&m->waiters, self);
    co_yield();
    /* Ownership was handed over by co_mutex_unlock() before waking us, so
     * a coroutine that arrives later cannot barge in between. */
    assert(m->holder == self);
}

void co_mutex_unlock(CoMutex *m)
{
    assert(m->holder && m->holder == co_self() &&
           "co_mutex_unlock by a coroutine that does not hold the lock");
    Coroutine *next = co_queue_pop(&m->waiters);

    m->holder = next;
    if (next) {
        loop_co_wake(next);
    }
}

static void co_sleep_timer_cb(void *opaque)
{
    /* Timer callbacks run at the top of a loop iteration, outside any
     * coroutine: entering directly saves a trip through the wake list. */
    co_enter(opaque);
}

void co_sleep_ns(int64_t ns)
{
    Coroutine *self = co_self();
    Loop *loop;
    LoopTimer timer;

    assert(self && "co_sleep_ns outside a coroutine");
    loop = co_get_loop(self);
    if (!loop) {
        loop = loop_current();
    }
    assert(loop && "co_sleep_ns: no loop to sleep on");

    loop_timer_init(&timer, loop, co_sleep_timer_cb, self);
    loop_timer_mod(&timer, clock_ns() + (ns > 0 ? ns : 0));
    co_yield();
    /* The timer lives on this stack: never leave it armed. */
    loop_timer_del(&timer);
}
