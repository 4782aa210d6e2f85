/*
 * Small helpers shared by unit tests
 * SPDX-License-Identifier: MIT
 */
#ifndef STRATA_TESTS_TEST_UTIL_H
#define STRATA_TESTS_TEST_UTIL_H

#include <stdbool.h>
#include <glib.h>
#include "block/aio-engine.h"

/* g_test_skip() with a formatted reason (g_test_skip_printf is GLib
 * 2.78). */
void test_skipf(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/* Can a file node use @engine here, with O_DIRECT if @direct?  If not,
 * skips the running test with the reason and returns false. */
bool test_engine_usable(AioEngineId engine, bool direct);

/* "threads", "native", "io_uring". */
const char *test_engine_name(AioEngineId engine);

/*
 * A loop device of @size bytes (zeroes at first) for tests of host_device
 * and host_cdrom, one per process, made at the first call (later calls
 * return the same device, whatever their @size).  Its backing file lives
 * under /var/tmp and is unlinked as soon as the device holds it; the
 * device is attached with autoclear and this process holds it open, so
 * the kernel detaches it when the process ends in any way (exit, abort,
 * signal).  *fd (may be NULL): a read-write descriptor of the device, to
 * check its bytes.  NULL, after skipping the running test with the
 * reason, when this is not root or loop devices are unavailable.
 */
const char *test_loop_device(int64_t size, int *fd);

/*
 * The padding node of a test, made the align driver when
 * STRATA_TEST_PAD_FILTER=align is in the environment (the "*-under-align"
 * runs of make check), so that the same tests check both.  @json is the
 * node the test opens; returned as it is (a copy) without the variable,
 * and otherwise:
 *   - a blkdebug node that sets "align" gets an align node over it, which
 *     takes its node-name, "align" (as request-alignment), "max-transfer"
 *     and "rmw-coalesce"; the blkdebug node keeps its rules and zero and
 *     discard limits under the name "<node-name>-rules", so breakpoints
 *     and injected errors still act below the padding (block/align.c
 *     passes the RMW events down);
 *   - a mem node gets an align node over it with the same limits (align,
 *     mem-align, iov-len-align, max-transfer, max-iov), which then does
 *     the shaping while mem still checks every request against them; the
 *     common options that act where requests enter or that children
 *     inherit (rmw-coalesce, read-only, cache, discard, detect-zeroes)
 *     move up, the node-name stays on mem;
 *   - anything else is returned as it is.
 */
char *test_pad_filter_json(const char *json);

/* True when STRATA_TEST_PAD_FILTER=align (test_pad_filter_json()). */
bool test_pad_filter_is_align(void);

#endif
