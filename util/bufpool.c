/*
 * Bounce-buffer pool (SPDX-License-Identifier: MIT)
 *
 * Buffers live in power-of-two size classes, from the pool's alignment (at
 * least one page) up to BUFPOOL_MAX_CLASS.  A free buffer stores the free
 * list link in its own first bytes, so returning and reusing buffers never
 * touches the heap.
 *
 * Admission works on "committed" bytes: bytes in use plus bytes granted to
 * waiters that have been woken but have not run yet, kept per nesting
 * level.  A reservation of @total class bytes at level L fits when the
 * bytes committed at levels >= L plus @total stay within the cap, or when
 * nothing is committed at those levels (so a reservation larger than the
 * cap still runs, alone at its level and below).
 * Free buffers never block admission: the reservation that needs room
 * releases them when it runs.
 *
 * Waiting is strictly FIFO within a level, and deeper levels are granted
 * first.  The pool keeps, per level, its own list of waiter records (on
 * the waiters' stacks) in the same order as that level's CoQueue.  Whenever
 * committed bytes shrink or the cap grows, the pool grants the head waiter
 * while it fits: the grant moves the waiter's total into the reserved
 * count *before* the waiter runs, so nothing that runs between the wake-up
 * and the waiter's re-entry (a try_get, another put) can take its room.
 * Invariant at every quiescent point: the head waiter does not fit, so a new
 * arrival behind it need not be checked.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <glib.h>

#include "config-host.h"
#include "util/bufpool.h"
#include "util/bufpool-int.h"
#include "util/coroutine.h"
#include "util/thread.h"

/* Linux 5.14 added it; older userspace headers lack the constant. */
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/*
 * Under AddressSanitizer, a free buffer (apart from its link) is poisoned so
 * that a use after bufpool_put() is reported instead of silently corrupting
 * the next user's data.
 */
#if CONFIG_ASAN
#include <sanitizer/asan_interface.h>
#define BUF_POISON(addr, len) ASAN_POISON_MEMORY_REGION((addr), (len))
#define BUF_UNPOISON(addr, len) ASAN_UNPOISON_MEMORY_REGION((addr), (len))
#else
#define BUF_POISON(addr, len) ((void)(addr), (void)(len))
#define BUF_UNPOISON(addr, len) ((void)(addr), (void)(len))
#endif

#define BUFPOOL_MAX_SHIFT 31
#define BUFPOOL_NSHIFTS (BUFPOOL_MAX_SHIFT + 1)

/* Stored in the first bytes of every free (or freshly mapped) buffer. */
typedef struct FreeBuf {
    struct FreeBuf *next;
    unsigned shift;             /* only used while staging fresh buffers */
} FreeBuf;

/* One waiting reservation; lives on the waiting coroutine's stack. */
typedef struct BufPoolWaiter {
    uint64_t total;             /* class bytes of the whole reservation */
    bool granted;
    struct BufPoolWaiter *next;
} BufPoolWaiter;

/*
 * A thread's cache (see "Per-thread caches" in util/bufpool.h).  Only the
 * owner thread touches it; the pool asks the owner to flush it through
 * @kick.  Its buffers stay counted as in use at level 0.
 */
struct BufPoolCache {
    BufPool *pool;
    FreeBuf *free_list[BUFPOOL_NSHIFTS];
    uint64_t bytes;             /* class bytes held; owner writes, stats read */
    uint64_t hits;              /* buffers handed out from here */
    BufPoolKick *kick;
    void *kick_opaque;
    BufPoolCache *next;         /* pool->caches, under pool->lock */
};

struct BufPool {
    /* Read on every cache operation, written when the first waiter comes
     * and when the last one leaves: on a line of its own, so that the
     * counters below, written under the lock, do not evict it. */
    bool contended __attribute__((aligned(64)));
    uint64_t cache_max;         /* bytes one cache may hold */
    /* Every queue's thread uses the pool: each public call holds @lock; a
     * waiter sleeps on its level's CoQueue with the lock released. */
    Mutex lock __attribute__((aligned(64)));
    BufPoolCache *caches;
    size_t page_size;
    size_t align;
    unsigned min_shift;         /* log2(align): the smallest class */
    uint64_t cap;

    uint64_t bytes_held;        /* in use + free */
    uint64_t bytes_in_use;
    uint64_t reserved;          /* granted to woken, not yet running waiters */
    /* In use plus reserved, per nesting level. */
    uint64_t committed[BUFPOOL_LEVELS];

    /* Indexed by shift; entries below min_shift stay empty. */
    FreeBuf *free_list[BUFPOOL_NSHIFTS];
    size_t free_count[BUFPOOL_NSHIFTS];

    CoQueue queue[BUFPOOL_LEVELS];
    BufPoolWaiter *wait_head[BUFPOOL_LEVELS], *wait_tail[BUFPOOL_LEVELS];

    unsigned inject_after;      /* test hook: prefaults left to pass, */
    unsigned inject_count;      /* then prefaults left to fail */
    int inject_errnum;

    uint64_t allocations;
    uint64_t reuses;
    uint64_t cache_hits;        /* of caches freed since */
    uint64_t waits;
    uint64_t prefault_failures;
};

/*
 * Set once when the kernel rejects MADV_POPULATE_WRITE with EINVAL (before
 * 5.14), so later buffers go straight to the touch fallback.  A process-wide
 * fact about the kernel, shared by the pools of every thread.
 */
static gint populate_unsupported;

/* ---- size classes ------------------------------------------------------ */

/* The class shift for @bytes, or -1 if it exceeds the largest class. */
static int bufpool_class_shift(const BufPool *pool, size_t bytes)
{
    if (bytes <= pool->align) {
        return pool->min_shift;
    }
    if (bytes > BUFPOOL_MAX_CLASS) {
        return -1;
    }
    return 64 - __builtin_clzll((unsigned long long)bytes - 1);
}

size_t bufpool_class_size(const BufPool *pool, size_t bytes)
{
    int shift = bufpool_class_shift(pool, bytes);

    return shift < 0 ? 0 : (size_t)1 << shift;
}

size_t bufpool_get_align(const BufPool *pool)
{
    return pool->align;
}

/*
 * Count the buffers of each class that @sizes asks for into @need (indexed
 * by shift) and their class bytes into *@total.
 */
static int bufpool_plan(const BufPool *pool, int n, const size_t *sizes,
                        size_t *need, uint64_t *total)
{
    uint64_t sum = 0;

    if (n < 0) {
        return -EINVAL;
    }
    memset(need, 0, BUFPOOL_NSHIFTS * sizeof(need[0]));
    for (int i = 0; i < n; i++) {
        int shift = bufpool_class_shift(pool, sizes[i]);

        if (sizes[i] == 0 || shift < 0) {
            return -EINVAL;
        }
        need[shift]++;
        sum += (uint64_t)1 << shift;
    }
    *total = sum;
    return 0;
}

/* ---- mapping ------------------------------------------------------------ */

static void bufpool_unmap(void *buf, size_t size)
{
    /* ASan keeps shadow state for the range; clear it before the address
     * range can be reused by an unrelated mapping. */
    BUF_UNPOISON(buf, size);
    munmap(buf, size);
}

/* Write one byte per page: the pre-5.14 way to populate a mapping. */
static void bufpool_touch(const BufPool *pool, void *buf, size_t size)
{
    volatile uint8_t *p = buf;

    for (size_t off = 0; off < size; off += pool->page_size) {
        p[off] = 0;
    }
}

/* MADV_POPULATE_WRITE over @buf: 0 or a positive errno (EINVAL: the
 * kernel lacks it). */
static int bufpool_populate(void *buf, size_t size)
{
    int ret;

    if (g_atomic_int_get(&populate_unsupported)) {
        return EINVAL;
    }
    /* Populating is idempotent, so an interrupted call just repeats. */
    do {
        ret = madvise(buf, size, MADV_POPULATE_WRITE);
    } while (ret < 0 && errno == EINTR);
    if (ret == 0) {
        return 0;
    }
    ret = errno;
    if (ret == EINVAL) {
        g_atomic_int_set(&populate_unsupported, 1);
    }
    return ret;
}

/*
 * Back every page of @buf now, so that running out of memory is an error
 * here and not a SIGBUS in the middle of a request.  Returns 0 or -errno.
 */
static int bufpool_prefault(BufPool *pool, void *buf, size_t size)
{
    int err;

    if (pool->inject_after == 0 && pool->inject_count > 0) {
        pool->inject_count--;
        err = pool->inject_errnum;
    } else {
        if (pool->inject_after > 0) {
            pool->inject_after--;
        }
        err = bufpool_populate(buf, size);
    }

    if (err == EINVAL) {
        /* The kernel predates MADV_POPULATE_WRITE: touching the pages
         * backs them too, but a failure then is a SIGBUS, not an error. */
        bufpool_touch(pool, buf, size);
        return 0;
    }
    return -err;
}

/*
 * Map and prefault one fresh buffer of class @shift, aligned to the pool's
 * alignment.  Returns NULL when memory could not be mapped or backed.
 */
static void *bufpool_map(BufPool *pool, unsigned shift)
{
    size_t size = (size_t)1 << shift;
    /* mmap() gives page alignment; for more, map align - page extra bytes
     * and cut off the unaligned head and the leftover tail:
     *
     *   p        start                     start + size   p + size + extra
     *   |--head--|=========== buffer ===========|----tail----|
     */
    size_t extra = pool->align - pool->page_size;
    uint8_t *p;

    p = mmap(NULL, size + extra, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        return NULL;
    }
    if (extra > 0) {
        uintptr_t start = ((uintptr_t)p + pool->align - 1) &
                          ~(uintptr_t)(pool->align - 1);
        size_t head = start - (uintptr_t)p;
        size_t tail = extra - head;

        if (head > 0) {
            munmap(p, head);
        }
        if (tail > 0) {
            munmap((uint8_t *)start + size, tail);
        }
        p = (uint8_t *)start;
    }

    if (bufpool_prefault(pool, p, size) < 0) {
        pool->prefault_failures++;
        bufpool_unmap(p, size);
        return NULL;
    }
    return p;
}

/* ---- free lists --------------------------------------------------------- */

static void bufpool_push_free(BufPool *pool, void *buf, unsigned shift)
{
    FreeBuf *fb = buf;

    fb->next = pool->free_list[shift];
    fb->shift = shift;
    BUF_POISON((uint8_t *)buf + sizeof(*fb), ((size_t)1 << shift) - sizeof(*fb));
    pool->free_list[shift] = fb;
    pool->free_count[shift]++;
}

static void *bufpool_pop_free(BufPool *pool, unsigned shift)
{
    FreeBuf *fb = pool->free_list[shift];

    assert(fb != NULL);
    pool->free_list[shift] = fb->next;
    pool->free_count[shift]--;
    BUF_UNPOISON(fb, (size_t)1 << shift);
    return fb;
}

/* Unmap one free buffer of class @shift. */
static void bufpool_release_one(BufPool *pool, unsigned shift)
{
    size_t size = (size_t)1 << shift;
    void *buf = bufpool_pop_free(pool, shift);

    bufpool_unmap(buf, size);
    pool->bytes_held -= size;
}

/*
 * Release free buffers, largest classes first (fewest munmap calls), until
 * @extra more bytes fit under the cap.  The first @keep[shift] free buffers
 * of each class are spared: the caller is about to reuse them.
 */
static void bufpool_make_room(BufPool *pool, const size_t *keep,
                              uint64_t extra)
{
    for (int shift = BUFPOOL_MAX_SHIFT; shift >= (int)pool->min_shift;
         shift--) {
        size_t spare = keep ? keep[shift] : 0;

        while (pool->bytes_held + extra > pool->cap &&
               pool->free_count[shift] > spare) {
            bufpool_release_one(pool, shift);
        }
    }
}

/* ---- admission ---------------------------------------------------------- */

static unsigned bufpool_level(unsigned level)
{
    return MIN(level, BUFPOOL_LEVELS - 1);
}

/* @level already clamped. */
static bool bufpool_fits(const BufPool *pool, unsigned level, uint64_t total)
{
    uint64_t committed = 0;

    for (unsigned l = level; l < BUFPOOL_LEVELS; l++) {
        committed += pool->committed[l];
    }
    return committed == 0 || committed + total <= pool->cap;
}

/*
 * Hand out the reservation described by @need (admission already decided).
 * Buffers come from the free lists where possible; the rest are mapped
 * fresh, all of them before any is handed out, so that a failure leaves the
 * pool as it was apart from free buffers released to make room.
 */
static int bufpool_take(BufPool *pool, unsigned level, int n,
                        const size_t *sizes, void **bufs, const size_t *need)
{
    FreeBuf *staged = NULL;
    uint64_t fresh_bytes = 0;
    uint64_t fresh_count = 0;

    for (unsigned shift = pool->min_shift; shift <= BUFPOOL_MAX_SHIFT;
         shift++) {
        if (need[shift] > pool->free_count[shift]) {
            fresh_bytes += (uint64_t)(need[shift] - pool->free_count[shift])
                           << shift;
        }
    }
    if (fresh_bytes > 0) {
        bufpool_make_room(pool, need, fresh_bytes);
    }

    /* Map every fresh buffer onto a staging list linked through the
     * buffers themselves (no allocation even here). */
    for (unsigned shift = pool->min_shift; shift <= BUFPOOL_MAX_SHIFT;
         shift++) {
        for (size_t k = pool->free_count[shift]; k < need[shift]; k++) {
            FreeBuf *fb = bufpool_map(pool, shift);

            if (fb == NULL) {
                while (staged != NULL) {
                    FreeBuf *next = staged->next;

                    bufpool_unmap(staged, (size_t)1 << staged->shift);
                    staged = next;
                }
                return -ENOMEM;
            }
            fb->shift = shift;
            fb->next = staged;
            staged = fb;
        }
    }

    while (staged != NULL) {
        FreeBuf *next = staged->next;
        unsigned shift = staged->shift;

        /* Fresh buffers are not poisoned: they are handed out below. */
        staged->next = pool->free_list[shift];
        pool->free_list[shift] = staged;
        pool->free_count[shift]++;
        pool->bytes_held += (size_t)1 << shift;
        fresh_count++;
        staged = next;
    }

    for (int i = 0; i < n; i++) {
        unsigned shift = bufpool_class_shift(pool, sizes[i]);

        bufs[i] = bufpool_pop_free(pool, shift);
        pool->bytes_in_use += (size_t)1 << shift;
        pool->committed[level] += (size_t)1 << shift;
    }
    pool->allocations += fresh_count;
    pool->reuses += (uint64_t)n - fresh_count;
    return 0;
}

/*
 * Wake waiters, deepest level first and in order within a level, for as
 * long as the head one fits.  Each woken waiter's bytes are reserved here,
 * so the head cannot be overtaken while it waits for the loop to re-enter
 * it.  A grant at one level changes nothing for deeper ones (they do not
 * count it), so one pass from the deepest level down is enough.
 */
static void bufpool_grant_waiters(BufPool *pool)
{
    bool waiting = false;

    for (int l = BUFPOOL_LEVELS - 1; l >= 0; l--) {
        BufPoolWaiter *w;

        while ((w = pool->wait_head[l]) != NULL &&
               bufpool_fits(pool, l, w->total)) {
            bool woke;

            pool->wait_head[l] = w->next;
            if (pool->wait_head[l] == NULL) {
                pool->wait_tail[l] = NULL;
            }
            pool->reserved += w->total;
            pool->committed[l] += w->total;
            w->granted = true;
            woke = co_queue_next(&pool->queue[l]);
            assert(woke);
            (void)woke;
        }
        waiting |= pool->wait_head[l] != NULL;
    }
    if (!waiting && pool->contended) {
        /* Caches may keep buffers again. */
        __atomic_store_n(&pool->contended, false, __ATOMIC_RELAXED);
    }
}

/*
 * A reservation waits: no cache may keep buffers (they count as committed
 * and would hold it back) until every waiter is served.  Each owner
 * flushes its cache in its own thread; the flag, set under the lock, makes
 * every cache operation after that flush take the locked path.
 */
static void bufpool_set_contended(BufPool *pool)
{
    if (pool->contended) {
        return;
    }
    __atomic_store_n(&pool->contended, true, __ATOMIC_RELAXED);
    for (BufPoolCache *c = pool->caches; c; c = c->next) {
        c->kick(c->kick_opaque);
    }
}

static int bufpool_try_get_locked(BufPool *pool, unsigned level, int n,
                                  const size_t *sizes, void **bufs)
{
    size_t need[BUFPOOL_NSHIFTS];
    uint64_t total;
    int ret;

    level = bufpool_level(level);
    ret = bufpool_plan(pool, n, sizes, need, &total);
    if (ret < 0 || n == 0) {
        return ret;
    }
    if (pool->wait_head[level] != NULL || !bufpool_fits(pool, level, total)) {
        return -EAGAIN;
    }
    return bufpool_take(pool, level, n, sizes, bufs, need);
}

int bufpool_try_get(BufPool *pool, unsigned level, int n, const size_t *sizes,
                    void **bufs)
{
    mutex_lock(&pool->lock);
    int ret = bufpool_try_get_locked(pool, level, n, sizes, bufs);
    mutex_unlock(&pool->lock);
    return ret;
}

static int bufpool_co_get_locked(BufPool *pool, unsigned level, int n,
                                 const size_t *sizes, void **bufs)
{
    size_t need[BUFPOOL_NSHIFTS];
    uint64_t total;
    int ret;

    assert(co_in_coroutine());
    level = bufpool_level(level);
    ret = bufpool_plan(pool, n, sizes, need, &total);
    if (ret < 0 || n == 0) {
        return ret;
    }
    if (pool->wait_head[level] == NULL && bufpool_fits(pool, level, total)) {
        return bufpool_take(pool, level, n, sizes, bufs, need);
    }

    BufPoolWaiter w = { .total = total };

    if (pool->wait_tail[level] != NULL) {
        pool->wait_tail[level]->next = &w;
    } else {
        pool->wait_head[level] = &w;
    }
    pool->wait_tail[level] = &w;
    pool->waits++;
    bufpool_set_contended(pool);
    co_queue_wait_mutex(&pool->queue[level], &pool->lock);

    /* Only bufpool_grant_waiters() wakes this queue. */
    assert(w.granted);
    pool->reserved -= total;
    pool->committed[level] -= total;
    ret = bufpool_take(pool, level, n, sizes, bufs, need);
    if (ret < 0) {
        /* The room granted to this reservation goes to the next ones. */
        bufpool_grant_waiters(pool);
    }
    return ret;
}

int bufpool_co_get(BufPool *pool, unsigned level, int n, const size_t *sizes,
                   void **bufs)
{
    mutex_lock(&pool->lock);
    int ret = bufpool_co_get_locked(pool, level, n, sizes, bufs);
    mutex_unlock(&pool->lock);
    return ret;
}

static void bufpool_put_locked(BufPool *pool, unsigned level, void *buf,
                               size_t size)
{
    int shift = bufpool_class_shift(pool, size);
    size_t csize;

    assert(buf != NULL && size > 0 && shift >= 0);
    assert(((uintptr_t)buf & (pool->align - 1)) == 0);
    csize = (size_t)1 << shift;
    level = bufpool_level(level);
    assert(pool->committed[level] >= csize);

    pool->bytes_in_use -= csize;
    pool->committed[level] -= csize;
    if (pool->bytes_held > pool->cap) {
        /* Over the cap (it was lowered, or a reservation larger than the
         * cap ran): shrink back instead of caching. */
        bufpool_unmap(buf, csize);
        pool->bytes_held -= csize;
    } else {
        bufpool_push_free(pool, buf, shift);
    }
    bufpool_grant_waiters(pool);
}

void bufpool_put(BufPool *pool, unsigned level, void *buf, size_t size)
{
    mutex_lock(&pool->lock);
    bufpool_put_locked(pool, level, buf, size);
    mutex_unlock(&pool->lock);
}

/* ---- per-thread caches -------------------------------------------------- */

/* What one cache may keep: enough for a queue's sub-block RMWs at depth
 * 64, a small share of the cap. */
static uint64_t bufpool_cache_max(uint64_t cap)
{
    return MIN((uint64_t)1 << 20, cap / 32);
}

BufPoolCache *bufpool_cache_new(BufPool *pool, BufPoolKick *kick,
                                void *opaque)
{
    BufPoolCache *c = g_new0(BufPoolCache, 1);

    c->pool = pool;
    c->kick = kick;
    c->kick_opaque = opaque;
    mutex_lock(&pool->lock);
    c->next = pool->caches;
    pool->caches = c;
    mutex_unlock(&pool->lock);
    return c;
}

/* Give every cached buffer back to the pool; pool->lock held. */
static void bufpool_cache_drain_locked(BufPool *pool, BufPoolCache *c)
{
    for (unsigned shift = pool->min_shift; shift <= BUFPOOL_MAX_SHIFT;
         shift++) {
        while (c->free_list[shift]) {
            FreeBuf *fb = c->free_list[shift];
            size_t csize = (size_t)1 << shift;

            c->free_list[shift] = fb->next;
            pool->bytes_in_use -= csize;
            pool->committed[0] -= csize;
            if (pool->bytes_held > pool->cap) {
                bufpool_unmap(fb, csize);
                pool->bytes_held -= csize;
            } else {
                bufpool_push_free(pool, fb, shift);
            }
        }
    }
    __atomic_store_n(&c->bytes, 0, __ATOMIC_RELAXED);
}

void bufpool_cache_flush(BufPoolCache *c)
{
    BufPool *pool = c->pool;

    mutex_lock(&pool->lock);
    bufpool_cache_drain_locked(pool, c);
    bufpool_grant_waiters(pool);
    mutex_unlock(&pool->lock);
}

void bufpool_cache_free(BufPoolCache *c)
{
    BufPool *pool;

    if (!c) {
        return;
    }
    pool = c->pool;
    mutex_lock(&pool->lock);
    bufpool_cache_drain_locked(pool, c);
    for (BufPoolCache **p = &pool->caches; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    pool->cache_hits += c->hits;
    bufpool_grant_waiters(pool);
    mutex_unlock(&pool->lock);
    g_free(c);
}

/* All @n buffers from @c, or none (false). */
static bool bufpool_cache_take(BufPoolCache *c, int n, const size_t *sizes,
                               void **bufs)
{
    BufPool *pool = c->pool;
    uint64_t total = 0;
    int i;

    if (n <= 0 || __atomic_load_n(&pool->contended, __ATOMIC_RELAXED)) {
        return false;
    }
    for (i = 0; i < n; i++) {
        int shift = bufpool_class_shift(pool, sizes[i]);
        FreeBuf *fb;

        if (sizes[i] == 0 || shift < 0 || !(fb = c->free_list[shift])) {
            break;
        }
        c->free_list[shift] = fb->next;
        BUF_UNPOISON(fb, (size_t)1 << shift);
        bufs[i] = fb;
        total += (uint64_t)1 << shift;
    }
    if (i == n) {
        SHARD_ADD(c->bytes, -total);
        SHARD_ADD(c->hits, (uint64_t)n);
        return true;
    }
    /* Put back what was taken, in reverse (each list's order stays). */
    while (i-- > 0) {
        unsigned shift = bufpool_class_shift(pool, sizes[i]);
        FreeBuf *fb = bufs[i];

        fb->next = c->free_list[shift];
        BUF_POISON((uint8_t *)fb + sizeof(*fb),
                   ((size_t)1 << shift) - sizeof(*fb));
        c->free_list[shift] = fb;
    }
    return false;
}

/* Keep @buf in @c if it may; false sends it to the pool. */
static bool bufpool_cache_keep(BufPoolCache *c, void *buf, size_t size)
{
    BufPool *pool = c->pool;
    int shift = bufpool_class_shift(pool, size);
    FreeBuf *fb = buf;
    uint64_t csize;

    assert(buf != NULL && size > 0 && shift >= 0);
    csize = (uint64_t)1 << shift;
    if (__atomic_load_n(&pool->contended, __ATOMIC_RELAXED) ||
        c->bytes + csize > __atomic_load_n(&pool->cache_max, __ATOMIC_RELAXED)) {
        return false;
    }
    fb->next = c->free_list[shift];
    BUF_POISON((uint8_t *)buf + sizeof(*fb), csize - sizeof(*fb));
    c->free_list[shift] = fb;
    SHARD_ADD(c->bytes, csize);
    return true;
}

int bufpool_cache_try_get(BufPoolCache *c, unsigned level, int n,
                          const size_t *sizes, void **bufs)
{
    if (level == 0 && bufpool_cache_take(c, n, sizes, bufs)) {
        return 0;
    }
    return bufpool_try_get(c->pool, level, n, sizes, bufs);
}

int bufpool_cache_co_get(BufPoolCache *c, unsigned level, int n,
                         const size_t *sizes, void **bufs)
{
    if (level == 0 && bufpool_cache_take(c, n, sizes, bufs)) {
        return 0;
    }
    return bufpool_co_get(c->pool, level, n, sizes, bufs);
}

void bufpool_cache_put(BufPoolCache *c, unsigned level, void *buf,
                       size_t size)
{
    if (level == 0 && bufpool_cache_keep(c, buf, size)) {
        return;
    }
    bufpool_put(c->pool, level, buf, size);
}

/* ---- control ------------------------------------------------------------ */

BufPool *bufpool_new(size_t align, size_t cap_bytes)
{
    BufPool *pool = g_new0(BufPool, 1);
    long page = sysconf(_SC_PAGESIZE);

    assert(page > 0);
    assert((align & (align - 1)) == 0);
    assert(align <= BUFPOOL_MAX_CLASS);
    pool->page_size = page;
    pool->align = MAX((size_t)page, align);
    pool->min_shift = __builtin_ctzll(pool->align);
    pool->cap = cap_bytes ? cap_bytes : BUFPOOL_DEFAULT_CAP;
    pool->cache_max = bufpool_cache_max(pool->cap);
    for (unsigned l = 0; l < BUFPOOL_LEVELS; l++) {
        co_queue_init(&pool->queue[l]);
    }
    mutex_init(&pool->lock);
    return pool;
}

void bufpool_free(BufPool *pool)
{
    if (pool == NULL) {
        return;
    }
    assert(pool->caches == NULL);
    assert(pool->bytes_in_use == 0);
    assert(pool->reserved == 0);
    for (unsigned l = 0; l < BUFPOOL_LEVELS; l++) {
        assert(pool->wait_head[l] == NULL && pool->committed[l] == 0);
    }
    bufpool_trim(pool);
    assert(pool->bytes_held == 0);
    mutex_cleanup(&pool->lock);
    g_free(pool);
}

void bufpool_set_cap(BufPool *pool, size_t cap_bytes)
{
    mutex_lock(&pool->lock);
    pool->cap = cap_bytes ? cap_bytes : BUFPOOL_DEFAULT_CAP;
    __atomic_store_n(&pool->cache_max, bufpool_cache_max(pool->cap),
                     __ATOMIC_RELAXED);
    bufpool_make_room(pool, NULL, 0);
    bufpool_grant_waiters(pool);
    /* What the caches keep shrinks with the cap at their next flush. */
    for (BufPoolCache *c = pool->caches; c; c = c->next) {
        c->kick(c->kick_opaque);
    }
    mutex_unlock(&pool->lock);
}

void bufpool_trim(BufPool *pool)
{
    mutex_lock(&pool->lock);
    /* Cached buffers come back at the owners' next flush. */
    for (BufPoolCache *c = pool->caches; c; c = c->next) {
        c->kick(c->kick_opaque);
    }
    for (unsigned shift = pool->min_shift; shift <= BUFPOOL_MAX_SHIFT;
         shift++) {
        while (pool->free_count[shift] > 0) {
            bufpool_release_one(pool, shift);
        }
    }
    mutex_unlock(&pool->lock);
}

void bufpool_get_stats(const BufPool *pool, BufPoolStats *out)
{
    uint64_t cached = 0, hits = 0;

    mutex_lock((Mutex *)&pool->lock);
    for (const BufPoolCache *c = pool->caches; c; c = c->next) {
        cached += SHARD_READ(c->bytes);
        hits += SHARD_READ(c->hits);
    }
    *out = (BufPoolStats) {
        .allocations = pool->allocations,
        .reuses = pool->reuses + pool->cache_hits + hits,
        .waits = pool->waits,
        .prefault_failures = pool->prefault_failures,
        .bytes_held = pool->bytes_held,
        .bytes_in_use = pool->bytes_in_use - cached,
        .bytes_cached = cached,
        .cap = pool->cap,
    };
    mutex_unlock((Mutex *)&pool->lock);
}

void bufpool_test_inject_prefault_error(BufPool *pool, unsigned after,
                                        unsigned count, int errnum)
{
    assert(count == 0 || errnum > 0);
    pool->inject_after = count ? after : 0;
    pool->inject_count = count;
    pool->inject_errnum = errnum;
}
