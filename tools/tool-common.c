/* Helpers shared by the command-line tools.  SPDX-License-Identifier: MIT */
#include <string.h>
#include <glib.h>
#include "tools/tool-common.h"

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
