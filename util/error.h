/*
 * Control-path errors (SPDX-License-Identifier: MIT)
 *
 * The data path returns 0 or -errno.  Everything else (open, options, graph
 * edits, tools) returns bool or a pointer and takes `StrataError **errp` last.
 *
 * Conventions:
 *  - errp may be NULL: the caller does not care, nothing is allocated.
 *  - An error is set once.  Setting an error on an errp that already holds
 *    one is a programming bug and asserts.
 *  - Messages name the offending option, offset or value, in the form
 *    "file.aio: expected one of threads, native, io_uring, auto".
 */
#ifndef STRATA_UTIL_ERROR_H
#define STRATA_UTIL_ERROR_H

#include <stdbool.h>
#include <stdarg.h>
#include <errno.h>
#include <glib.h>
#include "strata/strata.h"

struct StrataError {
    char *message;          /* owned, never NULL */
    int errnum;             /* positive errno, 0 when none applies */
    StrataErrorClass cls;
};

/* Set *errp (if errp) to a new error of class @cls with errno @errnum. */
void error_set(StrataError **errp, StrataErrorClass cls, int errnum,
               const char *fmt, ...) G_GNUC_PRINTF(4, 5);

/* Generic error, errno EINVAL. */
#define error_setg(errp, ...) \
    error_set((errp), STRATA_ERROR_GENERIC, EINVAL, __VA_ARGS__)

/* Generic error carrying @errnum (positive); the message gets ": strerror". */
void error_setg_errno(StrataError **errp, int errnum, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

/* Invalid option or value: class STRATA_ERROR_INVALID_OPTION, EINVAL. */
#define error_set_option(errp, ...) \
    error_set((errp), STRATA_ERROR_INVALID_OPTION, EINVAL, __VA_ARGS__)

/* Move @local into *dst (transfer full).  If dst is NULL, @local is freed.
 * @local may be NULL (no-op). */
void error_propagate(StrataError **dst, StrataError *local);

/* Prefix the message of *errp, if set, with the formatted text. */
void error_prepend(StrataError **errp, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);

/* Free an error; NULL is fine. */
void error_free(StrataError *err);

/* Accessors (also exported through the public API). */
const char *error_get_message(const StrataError *err);
int error_get_errno(const StrataError *err);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(StrataError, error_free)

#endif
