/*
 * Bounce-buffer pool: internal hooks for tests (SPDX-License-Identifier: MIT)
 *
 * Not part of any API that library code may use: these exist so that unit
 * tests can reach the pool's failure paths deterministically.
 */
#ifndef STRATA_UTIL_BUFPOOL_INT_H
#define STRATA_UTIL_BUFPOOL_INT_H

#include "util/bufpool.h"

/*
 * Let the next @after prefaults of fresh buffers in @pool run normally, then
 * make the @count after those behave as if madvise(MADV_POPULATE_WRITE) had
 * failed with @errnum (positive errno).
 * EINVAL takes the pre-5.14 fallback (every page is touched and the
 * allocation succeeds); any other value fails the allocation with -ENOMEM
 * and counts a prefault failure.  @count 0 cancels an earlier injection.
 * Pool thread only.
 */
void bufpool_test_inject_prefault_error(BufPool *pool, unsigned after,
                                        unsigned count, int errnum);

#endif
