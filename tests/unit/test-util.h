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

#endif
