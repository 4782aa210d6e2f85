/*
 * Backend handle internals (SPDX-License-Identifier: MIT)
 *
 * The coroutine form of the backend API, for tools and tests that run in
 * the context's loop.  The callback and blocking forms are public
 * (include/strata/strata.h).
 */
#ifndef STRATA_BLOCK_BACKEND_INT_H
#define STRATA_BLOCK_BACKEND_INT_H

#include "block/block-int.h"

const char *backend_get_name(const StrataBackend *be);

/* Park new requests (nested count) / release them. */
void backend_quiesce(StrataBackend *be);
void backend_unquiesce(StrataBackend *be);

/* True while a request submitted before now has not left the backend's
 * entry on any queue (drains wait for it; parked requests excepted). */
bool backend_busy(StrataBackend *be);
/* True while a request submitted on queue @index has not completed
 * (its callback has not returned). */
bool backend_queue_busy(StrataBackend *be, unsigned index);

/* Coroutine forms: in a coroutine of the backend's context.  0 or -errno
 * (get_length: the length or -errno). */
int backend_co_preadv(StrataBackend *be, int64_t offset, int64_t bytes,
                      const IOVector *qiov, int flags);
int backend_co_pwritev(StrataBackend *be, int64_t offset, int64_t bytes,
                       const IOVector *qiov, int flags);
int backend_co_pwrite_zeroes(StrataBackend *be, int64_t offset, int64_t bytes,
                             int flags);
int backend_co_pdiscard(StrataBackend *be, int64_t offset, int64_t bytes);
int backend_co_flush(StrataBackend *be);
int64_t backend_co_get_length(StrataBackend *be);
int backend_co_truncate(StrataBackend *be, int64_t size, PreallocMode prealloc,
                        StrataError **errp);
int backend_co_block_status(StrataBackend *be, int64_t offset, int64_t bytes,
                            int64_t *pnum);

/* Change permissions taken through the backend's root edge. */
bool backend_set_perm(StrataBackend *be, uint32_t perm, uint32_t shared,
                      StrataError **errp);
bool backend_get_write_cache(const StrataBackend *be);

#endif
