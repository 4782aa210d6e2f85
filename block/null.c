/*
 * null (alias null-co) and null-aio: a protocol driver that stores nothing
 * SPDX-License-Identifier: MIT
 *
 * Every request completes without I/O, after latency-ns if set.  Reads
 * leave the caller's buffer untouched unless read-zeroes is on, as QEMU's
 * null-co does: benchmarks of the block layer's own cost per request must
 * not pay for a memset they did not ask for.  The data path therefore does
 * nothing beyond the optional sleep and fill; the request path has already
 * validated the range.
 */
#include <inttypes.h>
#include <string.h>

#include "block/block-int.h"
#include "block/drivers.h"

typedef struct NullState {
    int64_t size;
    int64_t latency_ns;
    bool read_zeroes;
} NullState;

static inline void null_co_delay(NullState *s)
{
    if (s->latency_ns) {
        co_sleep_ns(s->latency_ns);
    }
}

static int null_co_preadv(StrataNode *node, int64_t offset, int64_t bytes,
                          const IOVector *qiov, int flags)
{
    NullState *s = node->opaque;

    null_co_delay(s);
    if (s->read_zeroes && bytes) {
        iov_memset(qiov, 0, 0, (size_t)bytes);
    }
    return 0;
}

static int null_co_pwritev(StrataNode *node, int64_t offset, int64_t bytes,
                           const IOVector *qiov, int flags)
{
    null_co_delay(node->opaque);
    return 0;
}

static int null_co_pwrite_zeroes(StrataNode *node, int64_t offset,
                                 int64_t bytes, int flags)
{
    null_co_delay(node->opaque);
    return 0;
}

static int null_co_pdiscard(StrataNode *node, int64_t offset, int64_t bytes)
{
    null_co_delay(node->opaque);
    return 0;
}

static int null_co_flush(StrataNode *node)
{
    null_co_delay(node->opaque);
    return 0;
}

static int null_co_block_status(StrataNode *node, int64_t offset,
                                int64_t bytes, int64_t *pnum)
{
    NullState *s = node->opaque;

    *pnum = bytes;
    return s->read_zeroes ? STRATA_BLOCK_ZERO : STRATA_BLOCK_DATA;
}

static int64_t null_get_length(StrataNode *node)
{
    NullState *s = node->opaque;

    return s->size;
}

static bool null_open(StrataNode *node, OptNode *opts, StrataError **errp)
{
    NullState *s = node->opaque;
    uint64_t size;
    int64_t latency_ns;

    if (!opts_get_size(opts, "size", (uint64_t)1 << 30, &size, errp) ||
        !opts_get_int(opts, "latency-ns", 0, &latency_ns, errp) ||
        !opts_get_bool(opts, "read-zeroes", false, &s->read_zeroes, errp)) {
        return false;
    }
    if (size > (uint64_t)BLOCK_MAX_OFFSET) {
        g_autofree char *path = opts_key_path(opts, "size");
        error_set_option(errp, "%s: %" PRIu64 " is too large", path, size);
        return false;
    }
    if (latency_ns < 0) {
        g_autofree char *path = opts_key_path(opts, "latency-ns");
        error_set_option(errp, "%s: %" PRId64 " is negative", path,
                         latency_ns);
        return false;
    }
    s->size = (int64_t)size;
    s->latency_ns = latency_ns;
    /* FUA costs nothing where nothing is stored. */
    node->supports_fua = true;
    node->total_bytes = s->size;
    return true;
}

/* QEMU's null-co takes exactly one filename, and so does this driver. */
/* QEMU's null-co and null-aio each take exactly one filename, their
 * protocol's; so do these drivers. */
static bool null_parse_filename(const char *filename, OptNode *opts,
                                StrataError **errp)
{
    const BlockDriver *drv = block_driver_find(opts_scalar_str(
                                                   opts_peek(opts, "driver")));
    g_autofree char *only = g_strdup_printf("%s://", drv->protocol_name);

    if (strcmp(filename, only)) {
        error_set_option(errp, "The only allowed filename for this driver is "
                         "'%s'", only);
        return false;
    }
    return true;
}

static void null_dump_info(StrataNode *node, GString *out)
{
    NullState *s = node->opaque;

    g_string_append_printf(out, "null: %" PRId64 " bytes, latency %" PRId64
                           " ns, reads %s\n", s->size, s->latency_ns,
                           s->read_zeroes ? "zero-filled" : "untouched");
}

/*
 * Two tables, one implementation: "null" (alias "null-co") and "null-aio",
 * which QEMU has as two drivers differing only in how requests complete
 * (coroutine or AIO callback); here both complete in the request's
 * coroutine.
 */
#define NULL_DRIVER_CALLBACKS \
    .parse_filename = null_parse_filename, \
    .instance_size = sizeof(NullState), \
    .open = null_open, \
    .co_preadv = null_co_preadv, \
    .co_pwritev = null_co_pwritev, \
    .co_pwrite_zeroes = null_co_pwrite_zeroes, \
    .co_pdiscard = null_co_pdiscard, \
    .co_flush = null_co_flush, \
    .co_block_status = null_co_block_status, \
    .get_length = null_get_length, \
    .dump_info = null_dump_info

const BlockDriver bdrv_null = {
    .name = "null",
    .alias = "null-co",
    .protocol_name = "null-co",
    NULL_DRIVER_CALLBACKS,
};

const BlockDriver bdrv_null_aio = {
    .name = "null-aio",
    .protocol_name = "null-aio",
    NULL_DRIVER_CALLBACKS,
};
