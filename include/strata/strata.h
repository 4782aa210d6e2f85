/*
 * Strata: an embeddable block layer for virtual machine monitors.
 * SPDX-License-Identifier: MIT
 *
 * This is the one public header.  It depends only on libc.  Every type is
 * opaque; configuration enters as JSON option trees.  See docs/ for the
 * architecture and the contracts summarised in the comments below.
 */
#ifndef STRATA_STRATA_H
#define STRATA_STRATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(STRATA_BUILDING_LIBRARY)
#define STRATA_EXPORT __attribute__((visibility("default")))
#else
#define STRATA_EXPORT
#endif

#define STRATA_VERSION_MAJOR 0
#define STRATA_VERSION_MINOR 1
#define STRATA_VERSION_MICRO 0
#define STRATA_VERSION_ENCODE(maj, min, mic) (((maj) << 16) | ((min) << 8) | (mic))
#define STRATA_VERSION \
    STRATA_VERSION_ENCODE(STRATA_VERSION_MAJOR, STRATA_VERSION_MINOR, STRATA_VERSION_MICRO)

/* Run-time version of the library, as STRATA_VERSION_ENCODE() packs it. */
STRATA_EXPORT unsigned int strata_version(void);
/* Run-time version as a string, e.g. "0.1.0".  Static storage. */
STRATA_EXPORT const char *strata_version_string(void);

/* ---- Errors (control path) ------------------------------------------- */

typedef enum StrataErrorClass {
    STRATA_ERROR_GENERIC = 0,
    STRATA_ERROR_INVALID_OPTION,   /* a config option or value is wrong */
    STRATA_ERROR_NOT_FOUND,        /* a named node, file or driver is missing */
    STRATA_ERROR_PERMISSION,       /* a permission conflict or a lock held */
    STRATA_ERROR_IO,               /* the storage failed */
} StrataErrorClass;

typedef struct StrataError StrataError;

/* Message naming the offending option/value; borrowed from @err. */
STRATA_EXPORT const char *strata_error_get_message(const StrataError *err);
/* Positive errno, or 0. */
STRATA_EXPORT int strata_error_get_errno(const StrataError *err);
STRATA_EXPORT StrataErrorClass strata_error_get_class(const StrataError *err);
/* Free an error (NULL is fine). */
STRATA_EXPORT void strata_error_free(StrataError *err);

#ifdef __cplusplus
}
#endif

#endif /* STRATA_STRATA_H */
