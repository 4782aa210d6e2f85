/*
 * align: a filter that imposes limits its child does not state
 * SPDX-License-Identifier: MIT
 *
 * The node's own limits are its options; everything else passes through
 * to the `file` child untouched.  Because the request path shapes every
 * request at the entry of the node whose limits it breaks (block/io.c,
 * block/pad.c), the padding, read-modify-write, serialisation, coalescing,
 * bouncing and vector collapsing all happen here, and the padding counters
 * count here.  The defaults keep it that way: every option defaults to at
 * least what the child requires, and no option may ask for less, so the
 * child's entry never has to shape a request again (it takes its fast
 * path).  Should the child come to require more after the fact (a reopen
 * of the child with cache.direct=on), the child's requirement wins in
 * refresh_limits and the child pads what is left: correct, one copy more.
 *
 * docs/align.md is the user's view (when to use it: 512e drives, backends
 * that state no alignment, 4K-native test devices).
 *
 * No data-path callbacks: a filter without them forwards every request to
 * its child, after the request path has made it fit this node's limits
 * and asserted so (invariant 1).
 */
#include <errno.h>
#include <inttypes.h>
#include <unistd.h>

#include "block/block-int.h"
#include "block/drivers.h"

/* The request-alignment default when the child knows no physical block
 * size: what every Linux block device and filesystem is happy with. */
#define ALIGN_DEFAULT_REQUEST 4096u

/* The options, 0 = not set (the default applies). */
typedef struct AlignOpts {
    uint64_t request;
    uint64_t mem;
    uint64_t iov_len;
    uint64_t max_transfer;
    uint64_t opt_transfer;
    int64_t max_iov;
    uint64_t pwrite_zeroes;
    uint64_t pdiscard;
} AlignOpts;

typedef struct AlignState {
    AlignOpts o;
} AlignState;

/* request-alignment when not set: the child's physical block size where it
 * knows one (a 512e drive: 4096), else 4096; never below what the child
 * requires. */
static uint32_t align_default_request(const BlockLimits *cbl)
{
    uint32_t v = cbl->physical_block_size ? cbl->physical_block_size
                                          : ALIGN_DEFAULT_REQUEST;

    v = MIN(v, BLOCK_MAX_REQUEST_ALIGN);
    return MAX(v, cbl->request_alignment);
}

/* Fails naming the option and both values when @v (set) is below the
 * child's @need. */
static bool align_check_min(OptNode *opts, const char *key, uint64_t v,
                            uint64_t need, const char *what,
                            const StrataNode *child, StrataError **errp)
{
    if (!v || v >= need) {
        return true;
    }
    g_autofree char *path = opts_key_path(opts, key);
    error_set_option(errp, "%s: %" PRIu64 " is below the %s of node '%s' (%"
                     PRIu64 ")", path, v, what, child->node_name, need);
    return false;
}

/* Fails naming the option when @v (set) is not a multiple of @unit. */
static bool align_check_multiple(OptNode *opts, const char *key, uint64_t v,
                                 uint64_t unit, const char *unit_name,
                                 StrataError **errp)
{
    if (!v || v % unit == 0) {
        return true;
    }
    g_autofree char *path = opts_key_path(opts, key);
    error_set_option(errp, "%s: %" PRIu64 " is not a multiple of %s (%"
                     PRIu64 ")", path, v, unit_name, unit);
    return false;
}

/*
 * Read and check the options in @opts (open and reopen share it) against
 * the limits of @child as they are now.  The schema has checked types,
 * bounds and powers of two; this checks what depends on the child and on
 * the other options.
 */
static bool align_parse(OptNode *opts, const StrataNode *child, AlignOpts *o,
                        StrataError **errp)
{
    const BlockLimits *cbl = &child->bl;
    long page = sysconf(_SC_PAGESIZE);
    uint64_t request, gran;

    *o = (AlignOpts) { 0 };
    if (!opts_get_size(opts, "request-alignment", 0, &o->request, errp) ||
        !opts_get_size(opts, "mem-alignment", 0, &o->mem, errp) ||
        !opts_get_size(opts, "iov-len-alignment", 0, &o->iov_len, errp) ||
        !opts_get_size(opts, "max-transfer", 0, &o->max_transfer, errp) ||
        !opts_get_size(opts, "opt-transfer", 0, &o->opt_transfer, errp) ||
        !opts_get_int(opts, "max-iov", 0, &o->max_iov, errp) ||
        !opts_get_size(opts, "pwrite-zeroes-alignment", 0, &o->pwrite_zeroes,
                       errp) ||
        !opts_get_size(opts, "pdiscard-alignment", 0, &o->pdiscard, errp)) {
        return false;
    }
    /* Powers of two and bounds: the schema, at open and at reopen. */
    if (o->mem > (uint64_t)page) {
        g_autofree char *path = opts_key_path(opts, "mem-alignment");
        error_set_option(errp, "%s: %" PRIu64 " is above the page size (%ld): "
                         "pool buffers are page aligned", path, o->mem, page);
        return false;
    }
    if (!align_check_min(opts, "request-alignment", o->request,
                         cbl->request_alignment, "request alignment", child,
                         errp) ||
        !align_check_min(opts, "mem-alignment", o->mem, cbl->mem_alignment,
                         "memory alignment", child, errp) ||
        !align_check_min(opts, "iov-len-alignment", o->iov_len,
                         cbl->iov_len_alignment, "element length alignment",
                         child, errp) ||
        !align_check_min(opts, "pwrite-zeroes-alignment", o->pwrite_zeroes,
                         cbl->pwrite_zeroes_alignment,
                         "write-zeroes alignment", child, errp) ||
        !align_check_min(opts, "pdiscard-alignment", o->pdiscard,
                         cbl->pdiscard_alignment, "discard alignment", child,
                         errp)) {
        return false;
    }

    request = o->request ? o->request : align_default_request(cbl);
    if (o->iov_len > request) {
        g_autofree char *path = opts_key_path(opts, "iov-len-alignment");
        error_set_option(errp, "%s: %" PRIu64 " is larger than the request "
                         "alignment (%" PRIu64 ")", path, o->iov_len, request);
        return false;
    }
    /* Splits fall on multiples of the request alignment and of the
     * element granularity (block/pad.c), the child's included. */
    gran = MAX(request, MAX(MAX(o->mem, (uint64_t)cbl->mem_alignment),
                            MAX(o->iov_len, (uint64_t)cbl->iov_len_alignment)));
    if (o->max_transfer) {
        g_autofree char *path = opts_key_path(opts, "max-transfer");
        if (o->max_transfer > (uint64_t)BLOCK_MAX_RW_BYTES) {
            error_set_option(errp, "%s: %" PRIu64 " is larger than the largest "
                             "request (%" PRId64 ")", path, o->max_transfer,
                             BLOCK_MAX_RW_BYTES);
            return false;
        }
        if (cbl->max_transfer && o->max_transfer > (uint64_t)cbl->max_transfer) {
            error_set_option(errp, "%s: %" PRIu64 " is above the maximum "
                             "transfer of node '%s' (%" PRId64 ")", path,
                             o->max_transfer, child->node_name,
                             cbl->max_transfer);
            return false;
        }
    }
    if (!align_check_multiple(opts, "max-transfer", o->max_transfer, gran,
                              "the request, memory and element alignments",
                              errp) ||
        !align_check_multiple(opts, "opt-transfer", o->opt_transfer, request,
                              "the request alignment", errp)) {
        return false;
    }
    if (o->opt_transfer && o->max_transfer &&
        o->opt_transfer > o->max_transfer) {
        g_autofree char *path = opts_key_path(opts, "opt-transfer");
        error_set_option(errp, "%s: %" PRIu64 " is above max-transfer (%"
                         PRIu64 ")", path, o->opt_transfer, o->max_transfer);
        return false;
    }
    if (o->max_iov && o->max_iov > cbl->max_iov) {
        g_autofree char *path = opts_key_path(opts, "max-iov");
        error_set_option(errp, "%s: %" PRId64 " is above the element limit of "
                         "node '%s' (%d)", path, o->max_iov, child->node_name,
                         cbl->max_iov);
        return false;
    }
    return true;
}

static bool align_open(StrataNode *node, OptNode *opts, StrataError **errp)
{
    AlignState *s = node->opaque;

    if (!block_open_child(node, opts, "file", "file", true, errp)) {
        return false;
    }
    g_assert(node->file);
    if (!align_parse(opts, node->file->node, &s->o, errp)) {
        return false;
    }
    /* FUA travels with the request; the child emulates it if it must. */
    node->supports_fua = true;
    return true;
}

/*
 * @bl arrives with the transfer and zero/discard limits inherited from the
 * child and this node's own alignments at 1.  The alignments take the
 * options (or the defaults), never below the child's; the inherited limits
 * are replaced where an option is set.
 */
static void align_refresh_limits(StrataNode *node, BlockLimits *bl)
{
    const AlignOpts *o = &((AlignState *)node->opaque)->o;
    const BlockLimits *cbl = &node->file->node->bl;

    bl->request_alignment = o->request
        ? MAX((uint32_t)o->request, cbl->request_alignment)
        : align_default_request(cbl);
    bl->mem_alignment = MAX((uint32_t)o->mem, cbl->mem_alignment);
    bl->iov_len_alignment = MAX((uint32_t)o->iov_len, cbl->iov_len_alignment);
    if (o->max_transfer) {
        bl->max_transfer = (int64_t)o->max_transfer;
    }
    if (o->opt_transfer) {
        bl->opt_transfer = (int64_t)o->opt_transfer;
    }
    if (o->max_iov) {
        bl->max_iov = (int)o->max_iov;
    }
    bl->pwrite_zeroes_alignment = MAX((uint32_t)o->pwrite_zeroes,
                                      bl->pwrite_zeroes_alignment);
    bl->pdiscard_alignment = MAX((uint32_t)o->pdiscard, bl->pdiscard_alignment);
    /* A write smaller than the alignment now costs a read-modify-write:
     * to the parents, that is what the physical block size means. */
    bl->physical_block_size = MAX(bl->physical_block_size,
                                  bl->request_alignment);
}

/* ---- reopen: every option may change ------------------------------------ */

static bool align_reopen_prepare(ReopenState *rs, StrataError **errp)
{
    StrataNode *node = rs->node;
    g_autofree AlignOpts *o = g_new0(AlignOpts, 1);
    g_autoptr(OptNode) opts = opts_clone(rs->options);
    const BlockLimits *cbl = &node->file->node->bl;
    uint32_t request;

    if (!align_parse(opts, node->file->node, o, errp)) {
        return false;
    }
    request = o->request ? MAX((uint32_t)o->request, cbl->request_alignment)
                         : align_default_request(cbl);
    /* The end-of-image rule under the new alignment (block/reopen.c). */
    if (request != node->bl.request_alignment) {
        rs->request_alignment = request;
    }
    rs->opaque = g_steal_pointer(&o);
    return true;
}

static void align_reopen_commit(ReopenState *rs)
{
    AlignState *s = rs->node->opaque;

    s->o = *(AlignOpts *)rs->opaque;
    g_free(rs->opaque);
    rs->opaque = NULL;
}

static void align_reopen_abort(ReopenState *rs)
{
    g_free(rs->opaque);
    rs->opaque = NULL;
}

static const char *const align_reopen_options[] = {
    "request-alignment", "mem-alignment", "iov-len-alignment",
    "max-transfer", "opt-transfer", "max-iov", "pwrite-zeroes-alignment",
    "pdiscard-alignment", NULL,
};

/*
 * Events go on to the child, so that a blkdebug node below sees those of
 * this node's padding (pwritev_rmw_*) and those a format above fires on
 * its child (read_aio, write_aio): its rules and breakpoints then act on
 * the RMW done here.  The events every node's own request path fires
 * (pwritev, pwritev_done, pwritev_zero, flush_to_*) are not passed on: the
 * child's entry fires its own, and passing ours would make a blkdebug
 * below see each twice.  (QEMU delivers an event to the node it names
 * only; Strata passes these through a filter that has no rules.)
 */
static void align_co_debug_event(StrataNode *node, int event)
{
    switch (event) {
    case DBG_PWRITEV:
    case DBG_PWRITEV_DONE:
    case DBG_PWRITEV_ZERO:
    case DBG_FLUSH_TO_OS:
    case DBG_FLUSH_TO_DISK:
        return;
    default:
        node_co_debug_event(node->file->node, event);
    }
}

static void align_dump_info(StrataNode *node, GString *out)
{
    const AlignOpts *o = &((AlignState *)node->opaque)->o;

    g_string_append_printf(out, "align: request-alignment %" PRIu32 " (%s)\n",
                           node->bl.request_alignment,
                           o->request ? "set" : "default");
}

const BlockDriver bdrv_align = {
    .name = "align",
    .instance_size = sizeof(AlignState),
    .is_filter = true,
    .child_role = "file",
    .open = align_open,
    .refresh_limits = align_refresh_limits,
    .reopen_prepare = align_reopen_prepare,
    .reopen_commit = align_reopen_commit,
    .reopen_abort = align_reopen_abort,
    .reopen_options = align_reopen_options,
    .co_debug_event = align_co_debug_event,
    .dump_info = align_dump_info,
};
