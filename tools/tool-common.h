/*
 * Helpers shared by the command-line tools (SPDX-License-Identifier: MIT)
 */
#ifndef STRATA_TOOLS_TOOL_COMMON_H
#define STRATA_TOOLS_TOOL_COMMON_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
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

/*
 * A byte count or offset as qemu-io's cvtnum reads it (QEMU 7.2's
 * qemu_strtosz with byte default unit):
 *   - optional leading whitespace and '+', decimal digits ("010" is ten);
 *   - "0x"/"0X" and hex digits;
 *   - a decimal fraction ("1.5k", "1.k", "1." and "1.0" are fine; an
 *     exponent is not), which needs a suffix unless it is zero;
 *   - one suffix b k M G T P E (any case, binary units); on a hex number
 *     it is accepted with *hex_suffix set (QEMU warns it is deprecated);
 *   - the result rounded to the nearest byte, half up.
 * Returns 0 with *out set, -EINVAL for anything else (nothing may follow),
 * -ERANGE above INT64_MAX.  @hex_suffix may be NULL.
 */
int tool_cvtnum(const char *s, int64_t *out, bool *hex_suffix);

/*
 * --poll-max-ns N of strata-io and strata-img bench: a whole number of
 * nanoseconds in [0, INT64_MAX] (as an iothread's poll-max-ns), decimal
 * or 0x hex.  False with *out untouched for anything else; the caller
 * prints TOOL_POLL_MAX_NS_ERROR with the argument.
 */
#define TOOL_POLL_MAX_NS_ERROR \
    "--poll-max-ns '%s': must be a number of nanoseconds in [0, %" PRId64 "]"
bool tool_parse_poll_max_ns(const char *arg, int64_t *out);

/* The "driver" member of @opts if it is a string (borrowed), else NULL. */
const char *tool_opts_driver(const OptNode *opts);

/*
 * --object ARG, as qemu-io and qemu-img take it: dotted keys with the
 * type as implied first key ("throttle-group,id=tg0,limits.iops-total=
 * 100") or a JSON object; object_add() on the result.  Errors are
 * object_add()'s.  The tool removes its objects at exit
 * (object_del_all()).
 */
bool tool_object_add(const char *arg, StrataError **errp);

/* Print what drivers report (strata_set_log_func) on stderr as "@progname:
 * node 'NAME': MESSAGE".  @progname is borrowed for the process's life. */
void tool_set_block_log(const char *progname);

#endif
