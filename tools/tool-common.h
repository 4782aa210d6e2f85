/*
 * Helpers shared by the command-line tools (SPDX-License-Identifier: MIT)
 */
#ifndef STRATA_TOOLS_TOOL_COMMON_H
#define STRATA_TOOLS_TOOL_COMMON_H

#include <stdbool.h>
#include "util/options.h"

/*
 * QEMU's cache modes, as the three switches they stand for:
 *
 *   mode          cache.direct  write cache  cache.no-flush
 *   none (off)         on           on            off
 *   writeback          off          on            off
 *   writethrough       off          off           off
 *   directsync         on           off           off
 *   unsafe             off          on            on
 *
 * With the write cache off the backend makes every write FUA.  False for
 * an unknown mode.
 */
bool tool_parse_cache_mode(const char *mode, bool *direct, bool *wce,
                           bool *no_flush);

/* The "driver" member of @opts if it is a string (borrowed), else NULL. */
const char *tool_opts_driver(const OptNode *opts);

#endif
