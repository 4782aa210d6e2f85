/*
 * Guest memory regions and io_uring fixed buffers (see block/memregion.h)
 * SPDX-License-Identifier: MIT
 *
 * The table is a sorted array of non-overlapping regions.  Embedders
 * register a handful (one per RAM block of the guest), so insertion by
 * memmove is fine; the I/O path only reads it, with a binary search.
 *
 * A region of more than MEMREGION_PIECE_MAX bytes is offered to an engine
 * as consecutive pieces, each its own fixed buffer:
 *
 *   region  |<-------------------------- len -------------------------->|
 *   pieces  |<---- 1 GiB, slot a ---->|<---- 1 GiB, slot b ---->|<- c ->|
 *
 * A buffer must lie inside one piece to use the fixed path (a fixed read
 * or write names one registered buffer); one that crosses a piece
 * boundary takes the normal path, which costs nothing but the mapping
 * of its pages.
 *
 * Each region keeps, per queue and engine that has been offered it, the
 * slot of each piece or the -errno the engine refused it with: every
 * queue's ring has its own fixed-buffer table.  Queue 0's engines are
 * offered a region when it is registered (in the context's thread, which
 * is queue 0's); another queue's engine is offered every region it has not
 * seen, in that queue's own thread, when its state is made and when a
 * lookup finds a region registered since (MEMREGION_NOT_OFFERED): an
 * io_uring ring set up with SINGLE_ISSUER takes registrations from its
 * owner thread only.
 *
 * Concurrency: the table's shape (regions added, removed, reallocated)
 * changes only in the context's thread while every backend is quiesced
 * (graph_wrlock), so no lookup runs meanwhile; a queue's slot
 * arrays are written only by that queue's thread, and shape changes and
 * strata_queue_free() (which forgets its queue's slots) hold
 * ctx->queues_lock.
 *
 * The table itself exists only while at least one region is registered,
 * so a context whose embedder never registers memory pays one NULL test
 * per request.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <glib.h>

#include "block/aio-engine.h"
#include "block/block-int.h"
#include "block/memregion.h"

typedef struct MemRegion {
    uintptr_t start;
    size_t len;
    int npieces;
    /* Per queue index and engine id: NULL until offered; then per piece a
     * slot >= 0, or the -errno of the engine's refusal. */
    int *slot[STRATA_MAX_QUEUES][AIO_ENGINE__MAX];
} MemRegion;

struct MemRegionTable {
    MemRegion *r;                   /* sorted by start, non-overlapping */
    int n, cap;
    int last_error[AIO_ENGINE__MAX];
};

/* Test hook (memregion_test_fail_register); atomics because a test sets
 * it from its main thread while registration may run in a loop thread. */
static int fail_count;
static int fail_err;

void memregion_test_fail_register(int count, int err)
{
    g_assert(count <= 0 || err < 0);
    __atomic_store_n(&fail_err, err, __ATOMIC_RELAXED);
    g_atomic_int_set(&fail_count, count > 0 ? count : 0);
}

/* The injected error for this registration, or 0. */
static int memregion_injected_error(void)
{
    for (;;) {
        int count = g_atomic_int_get(&fail_count);
        if (count <= 0) {
            return 0;
        }
        if (g_atomic_int_compare_and_exchange(&fail_count, count, count - 1)) {
            return __atomic_load_n(&fail_err, __ATOMIC_RELAXED);
        }
    }
}

/* Index of the last region starting at or below @addr, or -1. */
static int memregion_find(const MemRegionTable *t, uintptr_t addr)
{
    int lo = 0, hi = t->n;

    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (t->r[mid].start <= addr) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo - 1;
}

/* The region that holds all of [@buf, @buf + @len), and the offset of
 * @buf in it; NULL if none. */
static const MemRegion *memregion_containing(const MemRegionTable *t,
                                             const void *buf, size_t len,
                                             size_t *off)
{
    uintptr_t addr = (uintptr_t)buf;
    int i;

    if (!t || len == 0 || (i = memregion_find(t, addr)) < 0) {
        return NULL;
    }
    const MemRegion *r = &t->r[i];
    *off = addr - r->start;
    if (*off >= r->len || len > r->len - *off) {
        return NULL;
    }
    return r;
}

int memregion_lookup(StrataContext *ctx, AioEngineId id, unsigned queue,
                     const void *buf, size_t len)
{
    size_t off, piece;

    g_assert((unsigned)id < AIO_ENGINE__MAX && queue < STRATA_MAX_QUEUES);
    const MemRegion *r = memregion_containing(ctx->memregions, buf, len, &off);
    if (!r) {
        return MEMREGION_MISS;
    }
    piece = off / MEMREGION_PIECE_MAX;
    if ((off + len - 1) / MEMREGION_PIECE_MAX != piece) {
        return MEMREGION_MISS;
    }
    const int *slots = r->slot[queue][id];
    if (!slots) {
        return MEMREGION_NOT_OFFERED;
    }
    return slots[piece] < 0 ? MEMREGION_UNREGISTERED : slots[piece];
}

bool memregion_find_range(StrataContext *ctx, const void *buf, size_t len,
                          uintptr_t *start, size_t *rlen)
{
    size_t off;
    const MemRegion *r = memregion_containing(ctx->memregions, buf, len, &off);

    if (!r) {
        return false;
    }
    *start = r->start;
    *rlen = r->len;
    return true;
}

/* Offer every piece of @r to engine @ops of queue @queue (in its
 * thread); the region must not have been offered to it before. */
static void memregion_offer(MemRegionTable *t, MemRegion *r,
                            const AioEngineOps *ops, void *state,
                            unsigned queue)
{
    int id = ops->id;
    int *slots;

    g_assert(!r->slot[queue][id]);
    slots = g_new(int, r->npieces);
    for (int p = 0; p < r->npieces; p++) {
        size_t off = (size_t)p * MEMREGION_PIECE_MAX;
        size_t len = MIN(r->len - off, MEMREGION_PIECE_MAX);
        int ret = memregion_injected_error();

        if (ret == 0) {
            ret = ops->register_region(state, (void *)(r->start + off), len);
        }
        slots[p] = ret;
        if (ret < 0) {
            /* Not an error for the embedder: I/O in this piece takes the
             * normal path.  Kept for "info" and tests. */
            __atomic_store_n(&t->last_error[id], ret, __ATOMIC_RELAXED);
        }
    }
    /* "info" may read it from the context's thread meanwhile. */
    __atomic_store_n(&r->slot[queue][id], slots, __ATOMIC_RELEASE);
}

/* Queue 0's engine state @id of @ctx, if it takes fixed buffers. */
static bool memregion_engine(StrataContext *ctx, int id,
                             const AioEngineOps **ops, void **state)
{
    *ops = aio_engine_get((AioEngineId)id);
    *state = ctx->queues[0]->engine[id];
    return *ops && *state && (*ops)->register_region;
}

void memregion_attach_engine(StrataContext *ctx, const AioEngineOps *ops,
                             void *state, unsigned queue)
{
    MemRegionTable *t = ctx->memregions;

    if (!t || !ops->register_region) {
        return;
    }
    for (int i = 0; i < t->n; i++) {
        if (!t->r[i].slot[queue][ops->id]) {
            memregion_offer(t, &t->r[i], ops, state, queue);
        }
    }
}

/* Slots to give back to one queue's engine, in that queue's thread. */
typedef struct MemRegionRelease {
    QueueWork work;
    StrataQueue *q;
    int id;
    int n;
    int slots[];
} MemRegionRelease;

static void memregion_release_run(QueueWork *w)
{
    MemRegionRelease *rel = (MemRegionRelease *)w;
    const AioEngineOps *ops = aio_engine_get((AioEngineId)rel->id);
    void *state = rel->q->engine[rel->id];

    /* A state freed meanwhile took its registrations with it. */
    if (state && ops->unregister_region) {
        for (int i = 0; i < rel->n; i++) {
            ops->unregister_region(state, rel->slots[i]);
        }
    }
    g_free(rel);
}

/* Give back @r's slots of queue @queue's engine @id: at once for queue 0
 * (this thread's), else through the queue's hand-over list (its ring
 * takes unregistrations from its own thread only; meanwhile the region is
 * out of the table, so nothing uses the slots, and the kernel merely keeps
 * the pages pinned a moment longer). */
static void memregion_release_slots(StrataContext *ctx, MemRegion *r,
                                    unsigned queue, int id)
{
    const int *slots = r->slot[queue][id];
    const AioEngineOps *ops;
    void *state;
    int n = 0;

    for (int p = 0; p < r->npieces; p++) {
        n += slots[p] >= 0;
    }
    if (n == 0) {
        return;
    }
    if (queue == 0) {
        if (memregion_engine(ctx, id, &ops, &state) &&
            ops->unregister_region) {
            for (int p = 0; p < r->npieces; p++) {
                if (slots[p] >= 0) {
                    ops->unregister_region(state, slots[p]);
                }
            }
        }
        return;
    }
    StrataQueue *q = ctx->queues[queue];
    if (!q) {
        return;
    }
    MemRegionRelease *rel = g_malloc(sizeof(*rel) + n * sizeof(int));
    rel->work.run = memregion_release_run;
    rel->q = q;
    rel->id = id;
    rel->n = 0;
    for (int p = 0; p < r->npieces; p++) {
        if (slots[p] >= 0) {
            rel->slots[rel->n++] = slots[p];
        }
    }
    queue_submit_work(q, &rel->work);
}

/* Give back @r's slots to every engine state still alive (@engines) and
 * free its bookkeeping. */
static void memregion_release(StrataContext *ctx, MemRegion *r, bool engines)
{
    for (unsigned q = 0; q < STRATA_MAX_QUEUES; q++) {
        for (int id = 0; id < AIO_ENGINE__MAX; id++) {
            if (!r->slot[q][id]) {
                continue;
            }
            if (engines) {
                memregion_release_slots(ctx, r, q, id);
            }
            g_free(r->slot[q][id]);
            r->slot[q][id] = NULL;
        }
    }
}

void memregion_forget_queue(StrataContext *ctx, unsigned queue)
{
    MemRegionTable *t = ctx->memregions;

    g_assert(queue > 0 && queue < STRATA_MAX_QUEUES);
    if (!t) {
        return;
    }
    for (int i = 0; i < t->n; i++) {
        for (int id = 0; id < AIO_ENGINE__MAX; id++) {
            g_free(t->r[i].slot[queue][id]);
            t->r[i].slot[queue][id] = NULL;
        }
    }
}

void memregion_cleanup(StrataContext *ctx)
{
    MemRegionTable *t = ctx->memregions;

    if (!t) {
        return;
    }
    /* The engine states are gone; so are the kernel's registrations. */
    for (int i = 0; i < t->n; i++) {
        memregion_release(ctx, &t->r[i], false);
    }
    g_free(t->r);
    g_free(t);
    ctx->memregions = NULL;
}

void memregion_get_info(StrataContext *ctx, AioEngineId id, MemRegionInfo *out)
{
    const MemRegionTable *t = ctx->memregions;

    g_assert((unsigned)id < AIO_ENGINE__MAX);
    *out = (MemRegionInfo) { 0 };
    if (!t) {
        return;
    }
    out->regions = t->n;
    out->last_error = __atomic_load_n(&t->last_error[id], __ATOMIC_RELAXED);
    for (int i = 0; i < t->n; i++) {
        const MemRegion *r = &t->r[i];
        out->bytes += r->len;
        for (unsigned q = 0; q < STRATA_MAX_QUEUES; q++) {
            const int *slots = __atomic_load_n(&r->slot[q][id],
                                               __ATOMIC_ACQUIRE);
            if (!slots) {
                continue;
            }
            out->pieces += r->npieces;
            for (int p = 0; p < r->npieces; p++) {
                out->pieces_registered += slots[p] >= 0;
            }
        }
    }
}

/* ---- public API (include/strata/strata.h) ------------------------------- */

typedef struct MemRegionCall {
    StrataContext *ctx;
    void *addr;
    size_t len;
    StrataError **errp;
    bool ok;
    void (*locked_fn)(struct MemRegionCall *c);   /* run under the locks */
} MemRegionCall;

static void memregion_register_locked(MemRegionCall *c)
{
    StrataContext *ctx = c->ctx;
    MemRegionTable *t = ctx->memregions;
    uintptr_t start = (uintptr_t)c->addr;
    const MemRegion *clash = NULL;
    MemRegion *r;
    int i;

    if (!t) {
        t = g_new0(MemRegionTable, 1);
    }
    if (t->n >= MEMREGION_MAX) {
        error_set(c->errp, STRATA_ERROR_GENERIC, ENOSPC,
                  "Cannot register memory at %p: %d regions are registered "
                  "already", c->addr, t->n);
        goto fail;
    }
    /* Neither neighbour may overlap [start, start + len): the one below
     * must end at or before start, the one above begin at or after the
     * end. */
    i = memregion_find(t, start);
    if (i >= 0 && start - t->r[i].start < t->r[i].len) {
        clash = &t->r[i];
    } else if (i + 1 < t->n && t->r[i + 1].start - start < c->len) {
        clash = &t->r[i + 1];
    }
    if (clash) {
        error_set(c->errp, STRATA_ERROR_INVALID_OPTION, EEXIST,
                  "Cannot register memory at %p (%zu bytes): it overlaps "
                  "the region at %p (%zu bytes)", c->addr, c->len,
                  (void *)clash->start, clash->len);
        goto fail;
    }

    if (t->n == t->cap) {
        t->cap = MAX(4, t->cap * 2);
        t->r = g_renew(MemRegion, t->r, t->cap);
    }
    i++;                /* just above the last region below start */
    memmove(&t->r[i + 1], &t->r[i], (size_t)(t->n - i) * sizeof(t->r[0]));
    t->n++;
    r = &t->r[i];
    *r = (MemRegion) {
        .start = start,
        .len = c->len,
        .npieces = (int)((c->len - 1) / MEMREGION_PIECE_MAX + 1),
    };
    ctx->memregions = t;

    for (int id = 0; id < AIO_ENGINE__MAX; id++) {
        const AioEngineOps *ops;
        void *state;
        if (memregion_engine(ctx, id, &ops, &state)) {
            memregion_offer(t, r, ops, state, 0);
        }
    }
    c->ok = true;
    return;

fail:
    if (!t->n) {
        g_free(t->r);
        g_free(t);
    }
}

/* Run c->locked_fn in the context thread under the graph write lock and
 * queues_lock: strata_queue_free() forgets its queue's slots meanwhile (and
 * the lock keeps that queue alive for a hand-over). */
static void memregion_call_fn(void *opaque)
{
    MemRegionCall *c = opaque;
    bool locked = graph_wrlock(c->ctx);

    mutex_lock(&c->ctx->queues_lock);
    c->locked_fn(c);
    mutex_unlock(&c->ctx->queues_lock);
    graph_wrunlock(c->ctx, locked);
}

STRATA_EXPORT bool strata_context_register_memory(StrataContext *ctx,
                                                  void *addr, size_t len,
                                                  StrataError **errp)
{
    MemRegionCall c = { .ctx = ctx, .addr = addr, .len = len, .errp = errp,
                        .locked_fn = memregion_register_locked };

    if (!addr || len == 0 || (uintptr_t)addr > UINTPTR_MAX - len) {
        error_set_option(errp, "Cannot register memory at %p (%zu bytes): "
                         "%s", addr, len,
                         !addr ? "null address" : len == 0 ? "empty region"
                                                            : "wraps around");
        return false;
    }
    strata_context_call(ctx, memregion_call_fn, &c);
    return c.ok;
}

static void memregion_unregister_locked(MemRegionCall *c)
{
    StrataContext *ctx = c->ctx;
    MemRegionTable *t = ctx->memregions;
    int i;

    if (!t) {
        return;
    }
    i = memregion_find(t, (uintptr_t)c->addr);
    if (i < 0 || t->r[i].start != (uintptr_t)c->addr) {
        return;
    }
    memregion_release(ctx, &t->r[i], true);
    memmove(&t->r[i], &t->r[i + 1], (size_t)(t->n - i - 1) * sizeof(t->r[0]));
    t->n--;
    if (t->n == 0) {
        /* Back to the state of a context that never registered memory:
         * the I/O path skips lookups again. */
        g_free(t->r);
        g_free(t);
        ctx->memregions = NULL;
    }
}

STRATA_EXPORT void strata_context_unregister_memory(StrataContext *ctx,
                                                    void *addr)
{
    MemRegionCall c = { .ctx = ctx, .addr = addr,
                        .locked_fn = memregion_unregister_locked };

    strata_context_call(ctx, memregion_call_fn, &c);
}
