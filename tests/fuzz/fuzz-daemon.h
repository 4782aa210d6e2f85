/*
 * Daemon set-up shared by the QMP and NBD harnesses (SPDX-License-Identifier: MIT).
 */
#ifndef STRATA_TESTS_FUZZ_DAEMON_H
#define STRATA_TESTS_FUZZ_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "tests/fuzz/fuzz.h"

/* daemon_state with a fresh context and the nodes m0 (mem, 1 MiB) and
 * n0 (null-co); the nbd export type registered. */
bool fuzz_daemon_setup(void);
/* Stop the NBD server, delete exports, objects and nodes, free the
 * context: nothing survives the input. */
void fuzz_daemon_teardown(void);
/* What an input may wait, in total, for timers (latencies, throttling,
 * sleeps) to fire: a timer further away is left pending for the
 * teardown. */
#define FUZZ_TIMER_BUDGET_NS (20 * 1000 * 1000)

/* When the context's loop has a timer due within *@budget_ns, run the
 * loop blocking until it fires, take the time waited from *@budget_ns
 * and return true; otherwise return false at once. */
bool fuzz_wait_timers(int64_t *budget_ns);
/* Write @data to the socket @fd in pieces while running the loop and
 * discarding what comes back; shut down the write side at the end and
 * return when the peer closes, @done says so, or nothing moves
 * and no timer is due within the budget.  Never sleeps otherwise: the
 * input is done when the loop has no work left. */
void fuzz_feed_socket(int fd, const uint8_t *data, size_t size,
                      bool (*done)(void *), void *opaque);

#endif
