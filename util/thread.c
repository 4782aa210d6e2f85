/*
 * Mutexes, condition variables and thread identity (SPDX-License-Identifier: MIT)
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sched.h>
#include <time.h>
#include <glib.h>
#include "util/thread.h"

void thread_fatal(const char *what, int ret)
{
    g_error("%s: %s", what, g_strerror(ret));
}

void mutex_init(Mutex *mutex)
{
    int ret = pthread_mutex_init(&mutex->m, NULL);
    if (ret) {
        thread_fatal("pthread_mutex_init", ret);
    }
}

void mutex_cleanup(Mutex *mutex)
{
    int ret = pthread_mutex_destroy(&mutex->m);
    if (ret) {
        thread_fatal("pthread_mutex_destroy", ret);
    }
}

void cond_init(Cond *cond)
{
    pthread_condattr_t attr;
    int ret = pthread_condattr_init(&attr);

    if (!ret) {
        ret = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    }
    if (!ret) {
        ret = pthread_cond_init(&cond->c, &attr);
    }
    pthread_condattr_destroy(&attr);
    if (ret) {
        thread_fatal("pthread_cond_init", ret);
    }
}

void cond_cleanup(Cond *cond)
{
    int ret = pthread_cond_destroy(&cond->c);
    if (ret) {
        thread_fatal("pthread_cond_destroy", ret);
    }
}

void cond_signal(Cond *cond)
{
    int ret = pthread_cond_signal(&cond->c);
    if (ret) {
        thread_fatal("pthread_cond_signal", ret);
    }
}

void cond_broadcast(Cond *cond)
{
    int ret = pthread_cond_broadcast(&cond->c);
    if (ret) {
        thread_fatal("pthread_cond_broadcast", ret);
    }
}

void cond_wait(Cond *cond, Mutex *mutex)
{
    int ret = pthread_cond_wait(&cond->c, &mutex->m);
    if (ret) {
        thread_fatal("pthread_cond_wait", ret);
    }
}

bool cond_wait_until(Cond *cond, Mutex *mutex, int64_t deadline_ns)
{
    struct timespec ts = {
        .tv_sec = deadline_ns / 1000000000,
        .tv_nsec = deadline_ns % 1000000000,
    };
    int ret = pthread_cond_timedwait(&cond->c, &mutex->m, &ts);

    if (ret == ETIMEDOUT) {
        return false;
    }
    if (ret) {
        thread_fatal("pthread_cond_timedwait", ret);
    }
    return true;
}

static atomic_uint_fast64_t thread_next_id = 1;
static __thread uint64_t thread_id;

uint64_t thread_self_id(void)
{
    if (__builtin_expect(thread_id == 0, 0)) {
        thread_id = atomic_fetch_add_explicit(&thread_next_id, 1,
                                              memory_order_relaxed);
    }
    return thread_id;
}

void spin_lock_slow(SpinLock *l)
{
    for (unsigned spins = 0;; spins++) {
        if (!__atomic_load_n(&l->locked, __ATOMIC_RELAXED) &&
            !__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE)) {
            return;
        }
        if (spins < 64) {
            cpu_relax();
        } else {
            /* The holder may be preempted (fewer cores than threads). */
            sched_yield();
        }
    }
}
