/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <glib.h>
#include "util/error.h"

static void error_setv(StrataError **errp, StrataErrorClass cls, int errnum,
                       const char *suffix, const char *fmt, va_list ap)
{
    if (!errp) {
        return;
    }
    g_assert(*errp == NULL);

    StrataError *err = g_new0(StrataError, 1);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    err->message = suffix ? g_strconcat(msg, ": ", suffix, NULL)
                          : g_steal_pointer(&msg);
    err->errnum = errnum;
    err->cls = cls;
    *errp = err;
}

void error_set(StrataError **errp, StrataErrorClass cls, int errnum,
               const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    error_setv(errp, cls, errnum, NULL, fmt, ap);
    va_end(ap);
}

void error_setg_errno(StrataError **errp, int errnum, const char *fmt, ...)
{
    va_list ap;
    if (errnum < 0) {
        errnum = -errnum;
    }
    va_start(ap, fmt);
    error_setv(errp, STRATA_ERROR_GENERIC, errnum, g_strerror(errnum), fmt, ap);
    va_end(ap);
}

void error_propagate(StrataError **dst, StrataError *local)
{
    if (!local) {
        return;
    }
    if (!dst) {
        error_free(local);
        return;
    }
    g_assert(*dst == NULL);
    *dst = local;
}

void error_prepend(StrataError **errp, const char *fmt, ...)
{
    if (!errp || !*errp) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *prefix = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    char *msg = g_strconcat(prefix, (*errp)->message, NULL);
    g_free((*errp)->message);
    (*errp)->message = msg;
}

void error_free(StrataError *err)
{
    if (err) {
        g_free(err->message);
        g_free(err);
    }
}

const char *error_get_message(const StrataError *err)
{
    return err ? err->message : NULL;
}

int error_get_errno(const StrataError *err)
{
    return err ? err->errnum : 0;
}

/* Public API wrappers. */
STRATA_EXPORT const char *strata_error_get_message(const StrataError *err)
{
    return error_get_message(err);
}

STRATA_EXPORT int strata_error_get_errno(const StrataError *err)
{
    return error_get_errno(err);
}

STRATA_EXPORT StrataErrorClass strata_error_get_class(const StrataError *err)
{
    return err ? err->cls : STRATA_ERROR_GENERIC;
}

STRATA_EXPORT void strata_error_free(StrataError *err)
{
    error_free(err);
}
