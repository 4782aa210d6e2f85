/*
 * The file protocol driver: helpers for tools and tests
 * SPDX-License-Identifier: MIT
 *
 * The driver itself is reached through the registry (bdrv_file, driver
 * name "file"); see docs/file-driver.md for its options, how it probes
 * alignment, how aio=auto picks an engine and how it locks images.
 */
#ifndef STRATA_BLOCK_FILE_POSIX_H
#define STRATA_BLOCK_FILE_POSIX_H

#include <stdbool.h>
#include <stdint.h>

#include "block/aio-engine.h"
#include "block/block-int.h"

/*
 * Create (or truncate to zero and regrow) a regular file of @size bytes,
 * preallocated as @prealloc says.  With prealloc=off the first block
 * (min(size, 4096) bytes) is written with zeroes, so that the alignment
 * probe of a later O_DIRECT open finds data instead of a hole.  Refuses to
 * touch a file another process holds (OFD locks laid out as QEMU lays
 * them).  Control path, blocking; not in a coroutine.
 */
bool file_create(const char *path, int64_t size, PreallocMode prealloc,
                 StrataError **errp);

/* True for the drivers this file implements: file, host_device and
 * host_cdrom (one implementation, see docs/file-driver.md). */
bool file_driver_is(const BlockDriver *drv);

/* What the driver decided at open, for tests and "info". */
typedef struct FileInfo {
    bool is_bdev;
    bool direct;                /* the fd has O_DIRECT */
    bool locking;               /* OFD locks in use */
    AioEngineId engine;
    const char *engine_name;    /* static */
    uint32_t request_alignment; /* probed, before the request path's MAX */
    uint32_t mem_alignment;
    uint32_t iov_len_alignment;
    const char *align_source;   /* static: "buffered", "statx", ... */
    int64_t max_transfer;
    uint64_t einval_fallbacks;  /* O_DIRECT requests redone buffered */
    uint64_t short_resubmits;   /* short transfers resumed */
    /* Registered guest memory (strata_context_register_memory): requests
     * sent as io_uring fixed-buffer reads and writes, and requests inside
     * a region that the engine could not register (RLIMIT_MEMLOCK, ...)
     * that took the normal path instead. */
    uint64_t fixed_reads;
    uint64_t fixed_writes;
    uint64_t fixed_fallbacks;
} FileInfo;

/* @node must be a "file" node. */
void file_get_info(StrataNode *node, FileInfo *out);

/*
 * Test hook: pretend the probe found these alignments (each a power of
 * two), then refresh the node's limits.  Lets a test send requests the
 * kernel rejects with EINVAL, to check that the driver recovers.
 */
void file_test_set_alignment(StrataNode *node, uint32_t request,
                             uint32_t mem, uint32_t iov_len);

#endif
