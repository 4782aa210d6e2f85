/*
 * Guest memory regions: the embedder's registrations, kept per context and
 * offered to AIO engines as fixed buffers (io_uring)
 * SPDX-License-Identifier: MIT
 *
 * strata_context_register_memory() records a region in the context's
 * table (sorted by address, non-overlapping) and registers it with every
 * engine state of the context that takes fixed buffers, split into pieces
 * of at most MEMREGION_PIECE_MAX bytes (the kernel's limit per io_uring
 * buffer).  An engine state created later gets the regions when the file
 * driver picks it (memregion_attach_engine).  A piece the engine refuses
 * (RLIMIT_MEMLOCK, file-backed memory, no free slot, an old kernel) is
 * recorded as unregistered: requests inside it take the normal path and
 * the file driver counts them as fixed_fallbacks.
 *
 * Threading: everything here runs in the context's thread (the public
 * calls are documented that way), so the table needs no lock.  The lookup
 * is on the I/O path: a binary search, no allocation.
 */
#ifndef STRATA_BLOCK_MEMREGION_H
#define STRATA_BLOCK_MEMREGION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "block/aio-engine.h"
#include "block/block-int.h"

/* The largest buffer io_uring takes as one fixed buffer. */
#define MEMREGION_PIECE_MAX ((size_t)1 << 30)
/* Regions one context records at most (io_uring has 256 slots anyway). */
#define MEMREGION_MAX 1024

typedef struct MemRegionTable MemRegionTable;    /* ctx->memregions */

/* memregion_lookup() results that are not a slot. */
enum {
    MEMREGION_MISS = -1,            /* not wholly inside one piece */
    MEMREGION_UNREGISTERED = -2,    /* inside a piece the engine refused */
    MEMREGION_NOT_OFFERED = -3,     /* inside a region this queue's engine
                                       has not been offered yet */
};

/*
 * The fixed-buffer slot of engine @id of queue index @queue (each queue's
 * ring has its own table) that holds the whole buffer [@buf, @buf + @len):
 * >= 0 when the buffer lies inside one registered piece of one region;
 * MEMREGION_UNREGISTERED when it lies inside one piece that the engine
 * could not register; MEMREGION_NOT_OFFERED when that queue's engine has
 * not been offered the region yet (memregion_attach_engine() in the
 * queue's thread, then look up again); MEMREGION_MISS otherwise (outside
 * every region, straddling two regions or a piece boundary, @len == 0).
 * Data path, the queue's thread: no allocation.
 */
int memregion_lookup(StrataContext *ctx, AioEngineId id, unsigned queue,
                     const void *buf, size_t len);

/*
 * The embedder's region that holds all of [@buf, @buf + @len): true with
 * its start and length (a protocol driver that shares the whole region
 * with a back end, virtio-blk-vhost-user).  Data path: no allocation.
 */
bool memregion_find_range(StrataContext *ctx, const void *buf, size_t len,
                          uintptr_t *start, size_t *rlen);

/* True when the embedder has registered any region in @ctx: lets the I/O
 * path skip the lookup entirely otherwise. */
static inline bool memregion_any(const StrataContext *ctx)
{
    return ctx->memregions != NULL;
}

/*
 * Offer every recorded region not yet offered to engine @ops of queue
 * index @queue (whose state is @state) as fixed buffers.  Idempotent; a
 * no-op for engines without register_region.  In that queue's thread:
 * the context's thread for queue 0.
 */
void memregion_attach_engine(StrataContext *ctx, const AioEngineOps *ops,
                             void *state, unsigned queue);

/* Drop what the table records for queue index @queue, which is being
 * freed (its engine states' teardown drops the kernel's registrations).
 * Under ctx->queues_lock, with nothing in flight on the queue. */
void memregion_forget_queue(StrataContext *ctx, unsigned queue);

/* Free the table at context teardown, after the engine states are gone
 * (their teardown drops the kernel's registrations). */
void memregion_cleanup(StrataContext *ctx);

/* What the table holds, for tests and "info". */
typedef struct MemRegionInfo {
    int regions;                    /* recorded by the embedder */
    uint64_t bytes;                 /* their total size */
    int pieces;                     /* pieces offered to engine @id */
    int pieces_registered;          /* of which the engine took */
    int last_error;                 /* -errno of the last refusal, or 0 */
} MemRegionInfo;
void memregion_get_info(StrataContext *ctx, AioEngineId id,
                        MemRegionInfo *out);

/*
 * Test hook: the next @count registrations of a piece with any engine
 * fail with @err (a negative errno, e.g. -ENOMEM as RLIMIT_MEMLOCK gives)
 * without reaching the engine.  0 count disables.
 */
void memregion_test_fail_register(int count, int err);

#endif
