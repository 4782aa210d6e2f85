/*
 * The mem driver's test hooks (SPDX-License-Identifier: MIT)
 *
 * "mem" is a RAM-backed protocol driver that behaves like a strict
 * O_DIRECT device: every request that breaks the limits it was opened with
 * (align, mem-align, iov-len-align, max-iov, max-transfer, the device's
 * length, FUA when fua=off) fails with -EINVAL and is counted as a limit
 * violation.  The request path must never send one, so tests of the request
 * path open a mem node, drive I/O through it and assert that the violation
 * counter stays 0 and that the trace shows the expected splitting.
 *
 * Every function here takes a node whose driver is mem (asserted) and runs
 * in the node's loop thread, outside or inside coroutines; none yields.
 * Data-path requests that are delayed (latency-ns, random-order) are
 * counted and traced when they reach the driver, and transfer their data,
 * see injected errors and leave the in-flight count when they complete.
 */
#ifndef STRATA_BLOCK_MEM_H
#define STRATA_BLOCK_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "block/block-int.h"

/* Allocation status is tracked per chunk of this many bytes. */
#define MEM_CHUNK_SIZE 4096

/* ---- error injection ---------------------------------------------------- */

/*
 * Make the next @count requests of @type that overlap [offset, offset +
 * bytes) fail with -@errnum (@errnum > 0) when they complete, without
 * transferring data; @count == -1 means every such request, forever.
 * @bytes < 0 means "to the end of the device".  Flush requests have no
 * range: a REQ_FLUSH rule matches every flush whatever its range.
 * Rules are checked in the order they were added; the first live rule that
 * matches fires.  Requests that break the limits fail with -EINVAL before
 * any rule is consulted.
 */
void mem_inject_error(StrataNode *node, BlockReqType type, int64_t offset,
                      int64_t bytes, int errnum, int count);
/* Remove every rule. */
void mem_clear_errors(StrataNode *node);
/* Make the length query fail with -@errnum from now on (0: succeed again). */
void mem_fail_length(StrataNode *node, int errnum);

/* ---- data ------------------------------------------------------------------ */

/* The device's bytes (borrowed; valid until the next truncate or close;
 * NULL when the size is 0). */
const uint8_t *mem_get_data(StrataNode *node);
/* Current length in bytes. */
size_t mem_get_size(StrataNode *node);

/* ---- counters --------------------------------------------------------------- */

typedef struct MemCounters {
    /* Requests that reached the driver, and their bytes, per type
     * (violations and injected errors included; a write-zeroes refused
     * with -ENOTSUP because zeroes=off is not counted). */
    uint64_t requests[REQ_TYPE__MAX];
    uint64_t bytes[REQ_TYPE__MAX];
    /* Requests that failed (violation or injected error), per type. */
    uint64_t errors[REQ_TYPE__MAX];
    uint64_t flushes;               /* == requests[REQ_FLUSH] */
    uint64_t fua_writes;            /* writes and write-zeroes with REQ_FUA */
    uint64_t unmap_zeroes;          /* write-zeroes with REQ_MAY_UNMAP */
    uint64_t limit_violations;      /* requests that broke the limits */
    uint64_t block_status;          /* co_block_status calls */
    int in_flight;                  /* requests inside the driver now */
    int max_in_flight;              /* most at once since the last reset */
} MemCounters;

void mem_get_counters(StrataNode *node, MemCounters *out);
/* Zero every counter except in_flight. */
void mem_reset_counters(StrataNode *node);
/* Why the last violation was refused ("offset 512 not aligned to 4096"),
 * for test failure messages; static storage owned by the node, "" if none. */
const char *mem_last_violation(StrataNode *node);

/* ---- trace ---------------------------------------------------------------- */

#define MEM_TRACE_SIZE 256

typedef struct MemTraceEntry {
    BlockReqType type;
    int64_t offset;
    int64_t bytes;
    int niov;                       /* elements of the vector; 0 if none */
    int flags;                      /* REQ_* as received */
    bool violation;                 /* refused as a limit violation */
} MemTraceEntry;

/* Entries held, at most MEM_TRACE_SIZE: the last requests that reached
 * the driver (block status is not traced). */
int mem_trace_count(StrataNode *node);
/* Entry @i, 0 = the oldest held, mem_trace_count() - 1 = the newest.
 * False if @i is out of range. */
bool mem_trace_get(StrataNode *node, int i, MemTraceEntry *out);
/* Requests traced since open or the last clear, including those that have
 * dropped out of the ring. */
uint64_t mem_trace_total(StrataNode *node);
void mem_trace_clear(StrataNode *node);

#endif
