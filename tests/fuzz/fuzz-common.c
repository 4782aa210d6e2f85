/*
 * Shared helpers of the fuzz harnesses (SPDX-License-Identifier: MIT).
 */
#include <stdlib.h>
#include <string.h>

#include "strata/strata.h"
#include "tests/fuzz/fuzz.h"

static const char *const file_keys[] = {
    "filename", "config", "path", "dir", "addr", "passwordid", NULL,
};

bool fuzz_opts_touch_files(const OptNode *opts)
{
    switch (opts_type(opts)) {
    case OPT_OBJECT:
        for (guint i = 0; i < opts_object_size(opts); i++) {
            const char *key = opts_object_key(opts, i);
            const OptNode *val = opts_object_value(opts, i);
            for (const char *const *k = file_keys; *k; k++) {
                if (!strcmp(key, *k)) {
                    return true;
                }
            }
            /* A driver that opens host files or devices by itself. */
            if (!strcmp(key, "driver") && opts_type(val) == OPT_STRING) {
                const char *d = opts_scalar_str(val);
                if (!strcmp(d, "file") || !strcmp(d, "host_device") ||
                    !strcmp(d, "host_cdrom")) {
                    return true;
                }
            }
            if (fuzz_opts_touch_files(val)) {
                return true;
            }
        }
        return false;
    case OPT_LIST:
        for (guint i = 0; i < opts_list_length(opts); i++) {
            if (fuzz_opts_touch_files(opts_list_get(opts, i))) {
                return true;
            }
        }
        return false;
    default:
        return false;
    }
}

bool fuzz_opts_too_costly(const OptNode *opts)
{
    if (opts_type(opts) == OPT_LIST) {
        for (guint i = 0; i < opts_list_length(opts); i++) {
            if (fuzz_opts_too_costly(opts_list_get(opts, i))) {
                return true;
            }
        }
        return false;
    }
    if (opts_type(opts) != OPT_OBJECT) {
        return false;
    }
    const OptNode *drv = opts_peek(opts, "driver");
    const OptNode *size = opts_peek(opts, "size");
    const OptNode *latency = opts_peek(opts, "latency-ns");
    if (latency && opts_type(latency) != OPT_OBJECT &&
        opts_type(latency) != OPT_LIST) {
        const char *v = opts_scalar_str(latency);
        char *end;
        long long ns = v ? strtoll(v, &end, 0) : 0;
        if (!v || *end || ns > 10 * 1000 * 1000) {
            return true;
        }
    }
    if (drv && size && opts_type(drv) == OPT_STRING &&
        !strcmp(opts_scalar_str(drv), "mem")) {
        uint64_t v;
        if (!parse_size(opts_scalar_str(size), &v) || v > (64u << 20)) {
            return true;
        }
    }
    for (guint i = 0; i < opts_object_size(opts); i++) {
        if (fuzz_opts_too_costly(opts_object_value(opts, i))) {
            return true;
        }
    }
    return false;
}

void fuzz_run_until_idle(StrataContext *ctx)
{
    for (int i = 0; i < 10000 && strata_context_run_once(ctx, false); i++) {
    }
}
