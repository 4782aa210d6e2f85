/* Helpers shared by the command-line tools.  SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>
#include "tools/tool-common.h"
#include "block/drivers.h"
#include "block/object.h"

bool tool_parse_cache_mode(const char *mode, bool *direct, bool *wce,
                           bool *no_flush)
{
    static const struct {
        const char *name;
        bool direct, wce, no_flush;
    } modes[] = {
        { "none", true, true, false },
        { "off", true, true, false },       /* QEMU's alias of none */
        { "writeback", false, true, false },
        { "writethrough", false, false, false },
        { "directsync", true, false, false },
        { "unsafe", false, true, true },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(modes); i++) {
        if (!strcmp(mode, modes[i].name)) {
            *direct = modes[i].direct;
            *wce = modes[i].wce;
            *no_flush = modes[i].no_flush;
            return true;
        }
    }
    return false;
}

const char *tool_opts_driver(const OptNode *opts)
{
    OptNode *d = opts_peek(opts, "driver");
    return d && opts_type(d) == OPT_STRING ? opts_scalar_str(d) : NULL;
}

/* The multiplier of suffix letter @c, or 0 if it is none. */
static uint64_t suffix_mult(char c)
{
    static const char letters[] = "bkmgtpe";
    const char *at = c ? strchr(letters, g_ascii_tolower(c)) : NULL;

    return at ? (uint64_t)1 << (10 * (at - letters)) : 0;
}

bool tool_parse_poll_max_ns(const char *arg, int64_t *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(arg, &end, 0);
    if (errno || end == arg || *end || v < 0) {
        return false;
    }
    *out = v;
    return true;
}

int tool_cvtnum(const char *s, int64_t *out, bool *hex_suffix)
{
    const char *p = s;
    char *end;
    uint64_t whole;
    double frac = 0;
    bool hex = false;

    if (hex_suffix) {
        *hex_suffix = false;
    }
    /* strtoull takes leading whitespace and a sign; a minus is refused
     * below, wherever the digits end. */
    errno = 0;
    whole = strtoull(p, &end, 10);
    if (end == p) {
        return -EINVAL;
    }
    if (errno == ERANGE) {
        return -ERANGE;
    }
    if (memchr(p, '-', end - p)) {
        return -EINVAL;
    }
    if (whole == 0 && (*end == 'x' || *end == 'X')) {
        errno = 0;
        whole = strtoull(p, &end, 16);
        if (errno == ERANGE) {
            return -ERANGE;
        }
        if (*end == '.') {
            return -EINVAL;
        }
        hex = true;
    } else if (*end == '.') {
        /* The fraction, "." included, as strtod reads it; "1." and "1.k"
         * have none.  An exponent makes the whole input invalid. */
        const char *f = end;
        char *fend;
        errno = 0;
        frac = strtod(f, &fend);
        if (fend == f || !isfinite(frac) || !isdigit((unsigned char)f[1])) {
            end = (char *)f + 1;
            frac = 0;
        } else if (memchr(f, 'e', fend - f) || memchr(f, 'E', fend - f)) {
            return -EINVAL;
        } else {
            end = fend;
        }
    }

    uint64_t mult = suffix_mult(*end);
    if (mult) {
        end++;
        if (hex && hex_suffix) {
            *hex_suffix = true;
        }
    } else {
        mult = 1;
    }
    if (*end || (mult == 1 && frac != 0)) {
        return -EINVAL;
    }
    /* whole * mult + frac * mult, rounded half up, exactly: frac as a
     * 64-bit binary fraction (below 1, or the carry goes to whole). */
    unsigned __int128 v = (unsigned __int128)whole * mult;
    if (frac >= 1.0) {
        v += mult;
    } else if (frac > 0) {
        uint64_t f64 = (uint64_t)ldexp(frac, 64);
        unsigned __int128 fm = (unsigned __int128)f64 * mult;
        v += (fm >> 64) + ((fm >> 63) & 1);
    }
    if (v > INT64_MAX) {
        return -ERANGE;
    }
    *out = (int64_t)v;
    return 0;
}

bool tool_object_add(const char *arg, StrataError **errp)
{
    g_autoptr(OptNode) opts = NULL;

    if (arg[0] == '{') {
        opts = opts_parse_json(arg, errp);
    } else {
        /* QEMU's implied first key: "throttle-group,id=tg0" */
        const char *comma = strchr(arg, ',');
        size_t first = comma ? (size_t)(comma - arg) : strlen(arg);
        g_autofree char *full = memchr(arg, '=', first)
            ? g_strdup(arg) : g_strdup_printf("qom-type=%s", arg);
        opts = opts_parse_dotted(full, errp);
    }
    return opts && object_add(opts, errp);
}

static void tool_block_log(const char *node_name, const char *msg,
                           void *opaque)
{
    fprintf(stderr, "%s: node '%s': %s\n", (const char *)opaque, node_name,
            msg);
}

void tool_set_block_log(const char *progname)
{
    strata_set_log_func(tool_block_log, (void *)progname);
}
