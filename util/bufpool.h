/*
 * Bounce-buffer pool (SPDX-License-Identifier: MIT)
 *
 * Aligned buffers for padding, collapse and bounce, reused so that the hot
 * path never calls malloc after warm-up.  One pool serves every queue
 * (thread) of a context: calls are thread-safe (one lock, held briefly;
 * only the bounce path comes here), and a waiter is a coroutine woken in
 * its own loop, so the cap and the FIFO order hold across threads.
 *
 *  - alignment = max(page size, the requested alignment);
 *  - size classes: powers of two from one page up; a request is rounded up
 *    to its class;
 *  - fresh buffers are prefaulted with MADV_POPULATE_WRITE so a failure to
 *    back them is -ENOMEM at allocation time, not a SIGBUS later (kernels
 *    before 5.14: pages are touched instead, and that guarantee is lost);
 *  - a cap on the bytes the pool holds (in use + free).  A reservation that
 *    does not fit waits (FIFO) until buffers are returned; free buffers of
 *    other classes are released to make room first.  A reservation larger
 *    than the cap is admitted when nothing else is in use, so the cap is
 *    never below the largest single request's need and nothing deadlocks.
 *  - a request reserves everything it will need in one call
 *    (bufpool_co_get with n sizes), so two requests never each hold part of
 *    what the other waits for.
 *  - nested reservations are ordered by level.  A request that holds
 *    buffers at one node and descends into a child that needs its own
 *    reserves there at the next level (co_pool_depth()).  A reservation at
 *    level L competes only with what is held at levels >= L: what its own
 *    ancestors (and everyone else's) hold at lower levels does not count
 *    against it, and waiters at deeper levels are granted first.  Holders
 *    at the deepest level wait for nothing, so they finish and free their
 *    memory; by induction every level progresses, and a nested request can
 *    never wait for memory that its own parent level holds.  The price: the
 *    pool may hold up to the cap per level in use (in practice one or two).
 *    Levels past BUFPOOL_LEVELS - 1 share the last one.
 */
#ifndef STRATA_UTIL_BUFPOOL_H
#define STRATA_UTIL_BUFPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "util/error.h"

typedef struct BufPool BufPool;
typedef struct BufPoolCache BufPoolCache;

#define BUFPOOL_DEFAULT_CAP (64u << 20)
/* Nesting levels kept apart (see the ordering rule above). */
#define BUFPOOL_LEVELS 16
/* The largest size class (and so the largest single buffer), 2 GiB. */
#define BUFPOOL_MAX_CLASS ((size_t)1 << 31)

/* @align: power of two (0 means page size), at most BUFPOOL_MAX_CLASS
 * (asserted: callers validate user input); @cap_bytes: 0 means default.
 * Never returns NULL. */
BufPool *bufpool_new(size_t align, size_t cap_bytes);
/* All buffers must have been returned (asserted). */
void bufpool_free(BufPool *pool);

size_t bufpool_get_align(const BufPool *pool);
/* Change the cap (0 means default).  Lowering it releases free buffers
 * until the pool fits; raising it wakes waiters that now fit. */
void bufpool_set_cap(BufPool *pool, size_t cap_bytes);
/* The size class @bytes rounds to (0 rounds to the smallest class); 0 when
 * @bytes exceeds BUFPOOL_MAX_CLASS. */
size_t bufpool_class_size(const BufPool *pool, size_t bytes);

/*
 * Reserve @n buffers of @sizes[i] bytes (0 < sizes[i]) in one step and
 * store them in @bufs[i], at nesting @level (0 for a request that holds no
 * other buffer of this pool; see the ordering rule above).  Yields while
 * the pool is at its cap for that level.  Returns 0,
 * or -ENOMEM when fresh memory could not be mapped or prefaulted (then
 * nothing is held), or -EINVAL when a size is 0 or above
 * BUFPOOL_MAX_CLASS.  @n == 0 returns 0 at once.  Reservations of one
 * level are admitted in arrival order: a later one never overtakes a
 * waiting one; deeper levels are granted first.
 * Never allocates when the buffers come from the free lists.
 * Coroutine only.
 */
int bufpool_co_get(BufPool *pool, unsigned level, int n, const size_t *sizes,
                   void **bufs);
/* Non-waiting form: -EAGAIN instead of waiting.  Callable anywhere in the
 * pool's thread. */
int bufpool_try_get(BufPool *pool, unsigned level, int n, const size_t *sizes,
                    void **bufs);
/* Return one buffer obtained at @level with size @size (any size of the
 * same class will do).  The buffer is kept for reuse unless the pool holds more than
 * its cap; waiters that now fit are woken (they run later, not inside this
 * call).  Callable anywhere in the pool's thread. */
void bufpool_put(BufPool *pool, unsigned level, void *buf, size_t size);

/* Release every free buffer back to the system (what caches hold comes
 * back at their owners' next flush, which this asks for). */
void bufpool_trim(BufPool *pool);

/*
 * Per-thread caches.  Every queue (thread) of a context reserves through
 * its own cache, so that a sub-block RMW's buffers come and go without
 * the pool's lock or a cache line shared with other threads:
 *  - a buffer put back at level 0 stays in the putting thread's cache, up
 *    to a small share of the cap (min(1 MiB, cap / 32)), and stays counted
 *    as in use at level 0: the cap holds with no change to admission;
 *  - a level-0 reservation that the cache can serve whole takes from it;
 *    anything else goes to the pool as before;
 *  - when a reservation has to wait, the pool marks itself contended and
 *    asks every cache's owner (the @kick callback, which must be callable
 *    from any thread and make the owner call bufpool_cache_flush() soon)
 *    to give its buffers back; until the last waiter is served every cache
 *    operation goes to the pool, so FIFO order holds as without caches;
 *  - lowering the cap and bufpool_trim() also ask for a flush.
 * A cache is used by one thread at a time (its owner); the pool's lock is
 * taken only on the slow path.  The owner must keep flushing when kicked:
 * a thread that stops running its loop holds its cache's bytes until it
 * runs again or frees the cache.
 */
typedef void BufPoolKick(void *opaque);
BufPoolCache *bufpool_cache_new(BufPool *pool, BufPoolKick *kick,
                                void *opaque);
/* Flush and unregister (owner thread); NULL is a no-op. */
void bufpool_cache_free(BufPoolCache *cache);
/* Give every cached buffer back to the pool (owner thread). */
void bufpool_cache_flush(BufPoolCache *cache);
/* bufpool_try_get/co_get/put through @cache. */
int bufpool_cache_try_get(BufPoolCache *cache, unsigned level, int n,
                          const size_t *sizes, void **bufs);
int bufpool_cache_co_get(BufPoolCache *cache, unsigned level, int n,
                         const size_t *sizes, void **bufs);
void bufpool_cache_put(BufPoolCache *cache, unsigned level, void *buf,
                       size_t size);

typedef struct BufPoolStats {
    uint64_t allocations;   /* fresh buffers mapped */
    uint64_t reuses;        /* buffers served from the free lists */
    uint64_t waits;         /* reservations that had to wait */
    uint64_t prefault_failures;
    uint64_t bytes_held;    /* in use + free */
    uint64_t bytes_in_use;  /* handed out, not counting caches */
    uint64_t bytes_cached;  /* kept in per-thread caches */
    uint64_t cap;
} BufPoolStats;
void bufpool_get_stats(const BufPool *pool, BufPoolStats *out);

#endif
