/*
 * Fuzz harness: option trees (JSON or dotted keys) into block_open over
 * the drivers that touch no host file (mem, null, blkdebug, raw, align,
 * snapshot-overlay, ...), then a few I/Os on the opened node
 * (SPDX-License-Identifier: MIT).  Invariant: no option value aborts the
 * process; every refusal is an error.
 */
#include <string.h>

#include "block/block-int.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autofree char *text = g_strndup((const char *)data, size);
    StrataError *err = NULL;
    const char *p = text;

    if (size > 65536 || strlen(text) != size) {
        return 0;
    }
    while (*p == ' ' || *p == '\n') {
        p++;
    }
    g_autoptr(OptNode) opts = *p == '{' ? opts_parse_json(text, &err)
                                        : opts_parse_dotted(text, &err);
    error_free(err);
    err = NULL;
    if (!opts || fuzz_opts_touch_files(opts) || fuzz_opts_too_costly(opts)) {
        return 0;
    }
    StrataContext *ctx = strata_context_new(&err);
    if (!ctx) {
        error_free(err);
        return 0;
    }
    StrataNode *node = block_open(ctx, opts, &err);
    if (!node) {
        /* Every refusal carries a message. */
        if (!err || !error_get_message(err)[0]) {
            __builtin_trap();
        }
        error_free(err);
        strata_context_free(ctx);
        return 0;
    }
    uint32_t perm = STRATA_PERM_CONSISTENT_READ |
                    (node->read_only ? 0 : STRATA_PERM_WRITE);
    StrataBackend *be = strata_backend_new(node, "fuzz", perm,
                                           STRATA_PERM_ALL, &err);
    error_free(err);
    if (be) {
        char buf[8192];
        int64_t len = strata_backend_get_length(be), pnum;
        memset(buf, 0x5a, sizeof(buf));
        if (len > 0) {
            int64_t off = len > 9000 ? 4097 : 0;
            strata_backend_pread(be, off, buf, MIN(len - off, 4000), 0);
            if (!node->read_only) {
                strata_backend_pwrite(be, 1, buf, MIN(len - 1, 5000), 0);
                strata_backend_pwrite_zeroes(be, 0, MIN(len, 3000), 0);
                strata_backend_pdiscard(be, 0, MIN(len, 4096));
            }
            strata_backend_block_status(be, 0, len, &pnum);
        }
        strata_backend_flush(be);
        strata_backend_free(be);
    }
    node_unref(node);
    fuzz_run_until_idle(ctx);
    strata_context_free(ctx);
    return 0;
}
