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
 * Each region keeps, per engine that has been offered it, the slot of
 * each piece or the -errno the engine refused it with.  The table itself
 * exists only while at least one region is registered, so a context whose
 * embedder never registers memory pays one NULL test per request.
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
    /* Per engine id: NULL until offered; then per piece a slot >= 0, or
     * the -errno of the engine's refusal. */
    int *slot[AIO_ENGINE__MAX];
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

int memregion_lookup(StrataContext *ctx, AioEngineId id, const void *buf,
                     size_t len)
{
    const MemRegionTable *t = ctx->memregions;
    uintptr_t addr = (uintptr_t)buf;
    const MemRegion *r;
    size_t off, piece;
    int i;

    g_assert((unsigned)id < AIO_ENGINE__MAX);
    if (!t || len == 0) {
        return MEMREGION_MISS;
    }
    i = memregion_find(t, addr);
    if (i < 0) {
        return MEMREGION_MISS;
    }
    r = &t->r[i];
    off = addr - r->start;
    if (off >= r->len || len > r->len - off) {
        return MEMREGION_MISS;
    }
    piece = off / MEMREGION_PIECE_MAX;
    if ((off + len - 1) / MEMREGION_PIECE_MAX != piece) {
        return MEMREGION_MISS;
    }
    if (!r->slot[id] || r->slot[id][piece] < 0) {
        return MEMREGION_UNREGISTERED;
    }
    return r->slot[id][piece];
}

bool memregion_find_range(StrataContext *ctx, const void *buf, size_t len,
                          uintptr_t *start, size_t *rlen)
{
    const MemRegionTable *t = ctx->memregions;
    uintptr_t addr = (uintptr_t)buf;
    int i;

    if (!t || len == 0 || (i = memregion_find(t, addr)) < 0) {
        return false;
    }
    const MemRegion *r = &t->r[i];
    size_t off = addr - r->start;
    if (off >= r->len || len > r->len - off) {
        return false;
    }
    *start = r->start;
    *rlen = r->len;
    return true;
}

/* Offer every piece of @r to engine @ops; the region must not have been
 * offered to it before. */
static void memregion_offer(MemRegionTable *t, MemRegion *r,
                            const AioEngineOps *ops, void *state)
{
    int id = ops->id;

    g_assert(!r->slot[id]);
    r->slot[id] = g_new(int, r->npieces);
    for (int p = 0; p < r->npieces; p++) {
        size_t off = (size_t)p * MEMREGION_PIECE_MAX;
        size_t len = MIN(r->len - off, MEMREGION_PIECE_MAX);
        int ret = memregion_injected_error();

        if (ret == 0) {
            ret = ops->register_region(state, (void *)(r->start + off), len);
        }
        r->slot[id][p] = ret;
        if (ret < 0) {
            /* Not an error for the embedder: I/O in this piece takes the
             * normal path.  Kept for "info" and tests. */
            t->last_error[id] = ret;
        }
    }
}

/* The engine states of @ctx that take fixed buffers, one at a time. */
static bool memregion_engine(StrataContext *ctx, int id,
                             const AioEngineOps **ops, void **state)
{
    *ops = aio_engine_get((AioEngineId)id);
    *state = ctx->queues[0]->engine[id];
    return *ops && *state && (*ops)->register_region;
}

void memregion_attach_engine(StrataContext *ctx, const AioEngineOps *ops,
                             void *state)
{
    MemRegionTable *t = ctx->memregions;

    if (!t || !ops->register_region) {
        return;
    }
    g_assert(ctx->queues[0]->engine[ops->id] == state);
    for (int i = 0; i < t->n; i++) {
        if (!t->r[i].slot[ops->id]) {
            memregion_offer(t, &t->r[i], ops, state);
        }
    }
}

/* Give back @r's slots to every engine state still alive and free its
 * bookkeeping. */
static void memregion_release(StrataContext *ctx, MemRegion *r, bool engines)
{
    for (int id = 0; id < AIO_ENGINE__MAX; id++) {
        const AioEngineOps *ops;
        void *state;

        if (!r->slot[id]) {
            continue;
        }
        if (engines && memregion_engine(ctx, id, &ops, &state) &&
            ops->unregister_region) {
            for (int p = 0; p < r->npieces; p++) {
                if (r->slot[id][p] >= 0) {
                    ops->unregister_region(state, r->slot[id][p]);
                }
            }
        }
        g_free(r->slot[id]);
        r->slot[id] = NULL;
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
    out->last_error = t->last_error[id];
    for (int i = 0; i < t->n; i++) {
        const MemRegion *r = &t->r[i];
        out->bytes += r->len;
        if (!r->slot[id]) {
            continue;
        }
        out->pieces += r->npieces;
        for (int p = 0; p < r->npieces; p++) {
            out->pieces_registered += r->slot[id][p] >= 0;
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
} MemRegionCall;

static void memregion_register_fn(void *opaque)
{
    MemRegionCall *c = opaque;
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
            memregion_offer(t, r, ops, state);
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

STRATA_EXPORT bool strata_context_register_memory(StrataContext *ctx,
                                                  void *addr, size_t len,
                                                  StrataError **errp)
{
    MemRegionCall c = { .ctx = ctx, .addr = addr, .len = len, .errp = errp };

    if (!addr || len == 0 || (uintptr_t)addr > UINTPTR_MAX - len) {
        error_set_option(errp, "Cannot register memory at %p (%zu bytes): "
                         "%s", addr, len,
                         !addr ? "null address" : len == 0 ? "empty region"
                                                            : "wraps around");
        return false;
    }
    strata_context_call(ctx, memregion_register_fn, &c);
    return c.ok;
}

static void memregion_unregister_fn(void *opaque)
{
    MemRegionCall *c = opaque;
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
    MemRegionCall c = { .ctx = ctx, .addr = addr };

    strata_context_call(ctx, memregion_unregister_fn, &c);
}
