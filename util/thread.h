/*
 * Mutexes, condition variables and thread identity (SPDX-License-Identifier: MIT)
 *
 * Thin wrappers over pthreads for the library's own locking.  GLib's GMutex
 * and GCond are futex-based inside libglib, which sanitizers do not
 * instrument, so ThreadSanitizer would see no synchronisation through
 * them; pthread calls are intercepted, so these are seen.  Errors from
 * pthreads here are programming errors (a lock not initialised, unlocked
 * by another thread) and abort.
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef STRATA_UTIL_THREAD_H
#define STRATA_UTIL_THREAD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct Mutex {
    pthread_mutex_t m;
} Mutex;

typedef struct Cond {
    pthread_cond_t c;
} Cond;

/* Report a failed pthread call (@ret is its error number) and abort. */
__attribute__((noreturn, cold))
void thread_fatal(const char *what, int ret);

void mutex_init(Mutex *mutex);
void mutex_cleanup(Mutex *mutex);

static inline void mutex_lock(Mutex *mutex)
{
    int ret = pthread_mutex_lock(&mutex->m);
    if (__builtin_expect(ret != 0, 0)) {
        thread_fatal("pthread_mutex_lock", ret);
    }
}

static inline void mutex_unlock(Mutex *mutex)
{
    int ret = pthread_mutex_unlock(&mutex->m);
    if (__builtin_expect(ret != 0, 0)) {
        thread_fatal("pthread_mutex_unlock", ret);
    }
}

/* Condition variables wait on CLOCK_MONOTONIC (clock_ns() in util/loop.h). */
/*
 * A spin lock for critical sections of a few dozen instructions that never
 * yield or block (request tracking in block/io.c).  Uncontended it costs
 * one atomic exchange and one store, and it lives in the cache line of the
 * data it guards, which a pthread mutex cannot promise.  A waiter spins a
 * while, then yields the CPU: on a machine with fewer cores than threads
 * the holder may have been preempted.  ThreadSanitizer sees the atomics.
 */
typedef struct SpinLock {
    int locked;
} SpinLock;

/* In a spin-wait loop: tells the CPU (x86 PAUSE, arm64 YIELD). */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield" ::: "memory");
#endif
}

void spin_lock_slow(SpinLock *l);

static inline void spin_init(SpinLock *l)
{
    __atomic_store_n(&l->locked, 0, __ATOMIC_RELAXED);
}

static inline void spin_lock(SpinLock *l)
{
    if (__builtin_expect(__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE), 0)) {
        spin_lock_slow(l);
    }
}

static inline void spin_unlock(SpinLock *l)
{
    __atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
}

/*
 * A counter written by one thread and read by others (per-thread shards of
 * statistics): plain loads and stores, no locked instruction, yet defined
 * behaviour for the readers (relaxed atomics; on x86 a plain add).
 */
#define SHARD_ADD(field, n) \
    __atomic_store_n(&(field), __atomic_load_n(&(field), __ATOMIC_RELAXED) + (n), \
                     __ATOMIC_RELAXED)
#define SHARD_READ(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

void cond_init(Cond *cond);
void cond_cleanup(Cond *cond);
void cond_signal(Cond *cond);
void cond_broadcast(Cond *cond);
/* Wait for a signal; @mutex is held on entry and on return.  Wake-ups may
 * be spurious: callers re-check their condition in a loop. */
void cond_wait(Cond *cond, Mutex *mutex);
/* As cond_wait(), until the monotonic time @deadline_ns at the latest.
 * False when the deadline passed. */
bool cond_wait_until(Cond *cond, Mutex *mutex, int64_t deadline_ns);

/*
 * A number that names the calling thread: never 0, never reused by another
 * thread of the process (unlike pthread_t values, which a new thread may
 * inherit from one that exited).  Out of line on purpose: a coroutine may
 * resume in another thread, so callers must not cache the answer across
 * a yield, and the compiler must not either.
 */
uint64_t thread_self_id(void);

#endif
