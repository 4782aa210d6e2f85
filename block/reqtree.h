/*
 * Interval tree of tracked requests (SPDX-License-Identifier: MIT)
 *
 * An intrusive augmented red-black tree over BlockReq (block/block-int.h):
 * keyed by [lo, hi) with lo as the key (ties broken by seq, which is unique
 * per node), each entry caching the largest hi in its subtree, so that the
 * requests overlapping a range are found in O(log n + k) whatever the
 * number of unrelated requests in flight.  Entries live in the requests'
 * coroutine frames: nothing is allocated.  Single-threaded (the node's loop).
 */
#ifndef STRATA_BLOCK_REQTREE_H
#define STRATA_BLOCK_REQTREE_H

#include <stdbool.h>
#include <stdint.h>
#include "block/block-int.h"

/* Insert @req (its lo, hi, seq set; lo < hi).  *root may be NULL. */
void reqtree_insert(BlockReq **root, BlockReq *req);
/* Remove @req, which must be in the tree. */
void reqtree_remove(BlockReq **root, BlockReq *req);

/*
 * Call @fn(req, opaque) for each request overlapping [lo, hi) (that is,
 * req->lo < hi && lo < req->hi), in ascending (lo, seq) order, until @fn
 * returns false.  @fn must not modify the tree.  Returns false if stopped.
 */
typedef bool ReqTreeVisit(BlockReq *req, void *opaque);
bool reqtree_foreach_overlap(BlockReq *root, int64_t lo, int64_t hi,
                             ReqTreeVisit *fn, void *opaque);

/* Debug: check red-black and max-hi invariants; returns the node count. */
int reqtree_check(BlockReq *root);

#endif
