/*
 * raw: the format driver for raw images, optionally a window of its child
 * SPDX-License-Identifier: MIT
 *
 * A raw image is its child's bytes.  With `offset` and `size` it is the
 * window [offset, offset + size) of them, as QEMU's raw format has it,
 * which lets a partition or an embedded image be used as a disk.  Every
 * request passes to the child with the offset added; the child's own
 * request path pads whatever the offset leaves unaligned.
 *
 * Length: with `size` the window is fixed; without it the image follows
 * the child (minus the offset), so growing the file grows the image.
 * Truncate is refused on a fixed-size window, as in QEMU, and otherwise
 * resizes the child to offset + size.
 */
#include <errno.h>
#include <inttypes.h>

#include "block/block-int.h"
#include "block/drivers.h"

typedef struct RawState {
    int64_t offset;
    int64_t size;           /* the window's length, when has_size */
    bool has_size;
} RawState;

static StrataNode *raw_child(StrataNode *node)
{
    return node->file->node;
}

static int64_t raw_get_length(StrataNode *node)
{
    RawState *s = node->opaque;
    int64_t len = node_get_length(raw_child(node));

    if (len < 0) {
        return len;
    }
    if (s->offset > len) {
        /* The file shrank under the window: nothing of it is left. */
        return 0;
    }
    len -= s->offset;
    return s->has_size ? MIN(len, s->size) : len;
}

/* Requests inside the window, or -EINVAL.  The request path has checked
 * the range against our length already; this guards the window against
 * anything that reaches the driver another way. */
static int raw_check(StrataNode *node, int64_t offset, int64_t bytes)
{
    int64_t len = raw_get_length(node);

    if (len < 0) {
        return (int)len;
    }
    if (offset < 0 || bytes < 0 || offset > len || bytes > len - offset) {
        return -EINVAL;
    }
    return 0;
}

static int raw_co_preadv(StrataNode *node, int64_t offset, int64_t bytes,
                         const IOVector *qiov, int flags)
{
    RawState *s = node->opaque;
    int ret = raw_check(node, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    node_co_debug_event(raw_child(node), DBG_READ_AIO);
    return node_co_preadv(raw_child(node), s->offset + offset, bytes, qiov,
                          flags);
}

static int raw_co_pwritev(StrataNode *node, int64_t offset, int64_t bytes,
                          const IOVector *qiov, int flags)
{
    RawState *s = node->opaque;
    int ret = raw_check(node, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    node_co_debug_event(raw_child(node), DBG_WRITE_AIO);
    return node_co_pwritev(raw_child(node), s->offset + offset, bytes, qiov,
                           flags);
}

static int raw_co_pwrite_zeroes(StrataNode *node, int64_t offset,
                                int64_t bytes, int flags)
{
    RawState *s = node->opaque;
    int ret = raw_check(node, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    return node_co_pwrite_zeroes(raw_child(node), s->offset + offset, bytes,
                                 flags);
}

static int raw_co_pdiscard(StrataNode *node, int64_t offset, int64_t bytes)
{
    RawState *s = node->opaque;
    int ret = raw_check(node, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    return node_co_pdiscard(raw_child(node), s->offset + offset, bytes);
}

static int raw_co_block_status(StrataNode *node, int64_t offset, int64_t bytes,
                               int64_t *pnum)
{
    RawState *s = node->opaque;
    int ret = raw_check(node, offset, bytes);

    *pnum = 0;
    if (ret < 0) {
        return ret;
    }
    return node_co_block_status(raw_child(node), s->offset + offset, bytes,
                                pnum);
}

static int raw_co_truncate(StrataNode *node, int64_t size,
                           PreallocMode prealloc, StrataError **errp)
{
    RawState *s = node->opaque;

    if (s->has_size) {
        error_set(errp, STRATA_ERROR_GENERIC, ENOTSUP,
                  "Cannot resize node '%s': its size is fixed by the 'size' "
                  "option", node->node_name);
        return -ENOTSUP;
    }
    if (size > BLOCK_MAX_OFFSET - s->offset) {
        error_setg(errp, "Cannot resize node '%s' to %" PRId64 " bytes: "
                   "with offset %" PRId64 " that is too large",
                   node->node_name, size, s->offset);
        return -EINVAL;
    }
    return node_co_truncate(raw_child(node), s->offset + size, prealloc, errp);
}

/* Read the window in @opts into @out (open and reopen share it: a reopen
 * may move the window, as in QEMU). */
static bool raw_parse_window(OptNode *opts, RawState *out, StrataError **errp)
{
    uint64_t offset, size = 0;

    if (!opts_get_size(opts, "offset", 0, &offset, errp)) {
        return false;
    }
    out->has_size = opts_has(opts, "size");
    if (!opts_get_size(opts, "size", 0, &size, errp)) {
        return false;
    }
    /* Both at most BLOCK_MAX_OFFSET after raw_check_window(). */
    out->offset = (int64_t)MIN(offset, (uint64_t)INT64_MAX);
    out->size = (int64_t)MIN(size, (uint64_t)INT64_MAX);
    return true;
}

/* Check the window @w of @opts against the length of @node's child. */
static bool raw_check_window(StrataNode *node, OptNode *opts,
                             const RawState *w, StrataError **errp)
{
    uint64_t offset = (uint64_t)w->offset, size = (uint64_t)w->size;
    int64_t len = node_get_length(raw_child(node));

    if (len < 0) {
        error_setg_errno(errp, (int)-len, "Could not get the size of node "
                         "'%s'", raw_child(node)->node_name);
        return false;
    }
    if (offset > (uint64_t)len) {
        g_autofree char *path = opts_key_path(opts, "offset");
        error_set_option(errp, "%s: %" PRIu64 " is beyond the end of node "
                         "'%s' (%" PRId64 " bytes)", path, offset,
                         raw_child(node)->node_name, len);
        return false;
    }
    if (w->has_size && size > (uint64_t)len - offset) {
        g_autofree char *path = opts_key_path(opts, "size");
        error_set_option(errp, "%s: the window [%" PRIu64 ", %" PRIu64
                         ") extends beyond the end of node '%s' (%" PRId64
                         " bytes)", path, offset, offset + size,
                         raw_child(node)->node_name, len);
        return false;
    }
    return true;
}

static bool raw_open(StrataNode *node, OptNode *opts, StrataError **errp)
{
    RawState *s = node->opaque;

    if (!raw_parse_window(opts, s, errp) ||
        !block_open_child(node, opts, "file", "file", true, errp)) {
        return false;
    }
    g_assert(node->file);
    if (!raw_check_window(node, opts, s, errp)) {
        return false;
    }
    /* FUA travels to the child with the request; emulating it here would
     * flush twice. */
    node->supports_fua = true;
    return true;
}

static bool raw_reopen_prepare(ReopenState *rs, StrataError **errp)
{
    g_autofree RawState *w = g_new0(RawState, 1);
    g_autoptr(OptNode) opts = opts_clone(rs->options);

    if (!raw_parse_window(opts, w, errp) ||
        !raw_check_window(rs->node, opts, w, errp)) {
        return false;
    }
    rs->opaque = g_steal_pointer(&w);
    return true;
}

static void raw_reopen_commit(ReopenState *rs)
{
    RawState *s = rs->node->opaque;
    RawState *w = rs->opaque;

    *s = *w;
    g_free(w);
    rs->opaque = NULL;
    /* The length follows the window. */
    rs->node->total_bytes = -1;
}

static void raw_reopen_abort(ReopenState *rs)
{
    g_free(rs->opaque);
    rs->opaque = NULL;
}

static const char *const raw_reopen_options[] = { "offset", "size", NULL };

static void raw_dump_info(StrataNode *node, GString *out)
{
    RawState *s = node->opaque;

    if (s->offset || s->has_size) {
        g_string_append_printf(out, "raw: window at offset %" PRId64
                               ", %" PRId64 " bytes%s\n", s->offset,
                               raw_get_length(node),
                               s->has_size ? "" : " (follows the file)");
    }
}

const BlockDriver bdrv_raw = {
    .name = "raw",
    .instance_size = sizeof(RawState),
    .is_format = true,
    .child_role = "file",
    .open = raw_open,
    .co_preadv = raw_co_preadv,
    .co_pwritev = raw_co_pwritev,
    .co_pwrite_zeroes = raw_co_pwrite_zeroes,
    .co_pdiscard = raw_co_pdiscard,
    .co_block_status = raw_co_block_status,
    .get_length = raw_get_length,
    .co_truncate = raw_co_truncate,
    .reopen_prepare = raw_reopen_prepare,
    .reopen_commit = raw_reopen_commit,
    .reopen_abort = raw_reopen_abort,
    .reopen_options = raw_reopen_options,
    .dump_info = raw_dump_info,
};
