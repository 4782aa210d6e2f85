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

#endif
