/*
 * Request-path internals shared by block/io.c and block/pad.c
 * SPDX-License-Identifier: MIT
 *
 *   node_co_*()         validate → (fast path: track → drive)
 *                                 (shaped path: pad_co_*() → plan, reserve
 *                                  pool memory, track, serialise, RMW,
 *                                  bounce, collapse, split → io_co_drv_*())
 */
#ifndef STRATA_BLOCK_IO_H
#define STRATA_BLOCK_IO_H

#include "block/block-int.h"

/*
 * Track @req on @node over [lo, hi) (lo < hi), inside one of the node's
 * entry points (which count it in flight for drain).
 * A serialising request owns its range: it waits for every overlapping
 * request that arrived before it, and overlapping requests arriving later
 * wait for it.  Never yields.
 */
void req_track(BlockReq *req, StrataNode *node, BlockReqType type,
               int64_t lo, int64_t hi, bool serialising);
/* Stop tracking; wakes the requests waiting for @req. */
void req_untrack(BlockReq *req);
/* Wait for every earlier overlapping request that conflicts with @req
 * (one of the two is serialising), whichever queue runs it.  Returns true
 * if it waited. */
bool req_co_wait_conflicts(BlockReq *req);
/* Set the pad layer's state of a serialising request, under the node's
 * lock, where req_claim_next() reads it. */
void req_set_pad_state(BlockReq *req, void *state);
/*
 * Coalescing (block/pad.c): under the node's lock, find the serialising
 * request that arrived next after @cur among those overlapping [lo, hi),
 * provided no plain request overlapping it arrived in between, and offer
 * it to @claim (which marks it taken); the claimed request, or NULL.
 */
BlockReq *req_claim_next(BlockReq *cur, int64_t lo, int64_t hi,
                         bool (*claim)(BlockReq *next, void *opaque),
                         void *opaque);

/*
 * The last step: hand a request that fits @node's limits (asserted) to its
 * driver, or to the primary child for a filter without the callback.
 * Writes bump write_gen on success, emulate FUA with a flush when the
 * driver lacks it, and emit the pwritev/pwritev_done debug events.
 */
int io_co_drv_preadv(StrataNode *node, int64_t offset, int64_t bytes,
                     const IOVector *qiov, int flags);
int io_co_drv_pwritev(StrataNode *node, int64_t offset, int64_t bytes,
                      const IOVector *qiov, int flags);
/* Aligned write-zeroes in chunks, with the zero-buffer fallback. */
/*
 * FUA on a driver without it is a flush after the write.  A request that
 * reaches the driver in several pieces strips FUA from them when this is
 * true (@zeroes: some pieces are write-zeroes) and calls io_co_fua_flush()
 * once after the last piece succeeded.
 */
bool io_fua_emulated(const StrataNode *node, int flags, bool zeroes);
/* The flush that completes an emulated FUA; a failure is sticky as any
 * failed flush over the page cache. */
int io_co_fua_flush(StrataNode *node);

int io_co_drv_pwrite_zeroes(StrataNode *node, int64_t offset, int64_t bytes,
                            int flags);

/* A read-only shared buffer of zeroes, ZERO_BUF_SIZE bytes, page aligned. */
#define ZERO_BUF_SIZE (1 << 20)
_Static_assert(ZERO_BUF_SIZE >= BLOCK_MAX_REQUEST_ALIGN,
               "partial blocks are written from the zero buffer");
extern const uint8_t io_zero_buf[ZERO_BUF_SIZE];

/*
 * True if [offset, offset+bytes) with @qiov fits @node's limits (alignment
 * of offset, length, addresses and element lengths; max_iov;
 * max_transfer), so that the driver can take it as is.  The capability
 * check: io_co_drv_*() assert it (invariant 1).  It says nothing about
 * the bounce policy.
 */
bool io_request_fits(const StrataNode *node, int64_t offset, int64_t bytes,
                     const IOVector *qiov);
/*
 * True if @node's bounce policy (the file driver's bounce=always, or
 * bounce-threshold at or above @bytes) wants the caller's memory of a
 * @bytes read or write copied through pool buffers.  The policy: asked
 * once, at the node's entry, about caller memory only.  The pad path's
 * own pool buffers (pads, RMW blocks, bounced pieces, their fragments)
 * are never bounced again.
 */
bool io_wants_bounce(const StrataNode *node, int64_t bytes);

/* ---- block/pad.c --------------------------------------------------------- */

/* Reads and writes that do not fit the node's limits. */
int pad_co_preadv(StrataNode *node, int64_t offset, int64_t bytes,
                  const IOVector *qiov, int flags);
int pad_co_pwritev(StrataNode *node, int64_t offset, int64_t bytes,
                   const IOVector *qiov, int flags);
/* Write-zeroes whose head or tail is not aligned. */
int pad_co_pwrite_zeroes(StrataNode *node, int64_t offset, int64_t bytes,
                         int flags);

#endif
