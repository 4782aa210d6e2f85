/*
 * snapshot-overlay: a temporary copy-on-write layer over a read-only base
 * SPDX-License-Identifier: MIT
 *
 * What strata-io -s (qemu-io's snapshot mode) opens on top of the image:
 * writes land in the overlay, reads of blocks never written fall through
 * to the base, and everything written is gone when the node closes.  The
 * base is never written (the node takes only read permission on it, and
 * strata-io opens it read-only), so it stays byte-identical.
 *
 * Storage: a memfd (anonymous, sparse, freed with its last descriptor) of
 * the image's length, and a bitmap with one bit per block-size block that
 * says the block lives in the overlay.  The node's request alignment is
 * the block size, so the request path pads partial blocks (reading the
 * base through this driver) and the driver only sees whole blocks: a bit
 * is set only once its whole block has been written.  Reads and writes of
 * the memfd are plain pread/pwrite in the coroutine: they copy memory and
 * never wait for a device.
 *
 * The length starts as the base's; a resize changes the overlay alone
 * (growing reads zeroes past the base, as QEMU's qcow2 overlay does);
 * flush is a no-op (nothing here survives the process anyway); discard and
 * write-zeroes are left to the request path (discard is advisory, zeroes
 * become writes of zero buffers).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "block/block-int.h"
#include "block/drivers.h"

#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))

typedef struct OverlayState {
    int fd;                     /* memfd holding written blocks */
    int64_t size;
    /* Base bytes below this show through unwritten blocks; above it they
     * read as zeroes (the base's end, or less after a shrink, so that
     * growing again does not bring old base data back). */
    int64_t base_visible;
    uint32_t block_size;
    uint64_t *bitmap;           /* bit set: block in the overlay */
    int64_t nblocks;
    uint64_t blocks_written;    /* set bits, for info */
} OverlayState;

static bool block_in_overlay(const OverlayState *s, int64_t b)
{
    return s->bitmap[b / 64] & (UINT64_C(1) << (b % 64));
}

/* Length of the run of blocks starting at @b (before @end) that share
 * @b's status. */
static int64_t run_length(const OverlayState *s, int64_t b, int64_t end)
{
    bool in = block_in_overlay(s, b);
    int64_t e = b + 1;

    while (e < end && block_in_overlay(s, e) == in) {
        e++;
    }
    return e - b;
}

/* pread/pwrite of [offset, offset + bytes) of the memfd from or to the
 * bytes [qoff, qoff + bytes) of @qiov; 0 or -errno. */
static int overlay_fd_rw(OverlayState *s, bool write, int64_t offset,
                         int64_t bytes, const IOVector *qiov, size_t qoff)
{
    IOVector v;
    int ret;

    iov_init(&v, qiov->max > 0 ? qiov->max : IOV_MAX);
    ret = iov_slice(&v, qiov, qoff, (size_t)bytes);
    while (ret == 0 && bytes > 0) {
        ssize_t n = write ? pwritev(s->fd, v.iov, MIN(v.niov, IOV_MAX), offset)
                          : preadv(s->fd, v.iov, MIN(v.niov, IOV_MAX), offset);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            ret = -errno;
            break;
        }
        if (n == 0 && !write) {
            /* Padding of a last partial block reads past the memfd's
             * end: zeroes, as past any node's end. */
            iov_memset(qiov, qoff, 0, (size_t)bytes);
            break;
        }
        if (n == 0) {
            ret = -EIO;
            break;
        }
        offset += n;
        qoff += (size_t)n;
        bytes -= n;
        if (bytes > 0) {
            ret = iov_slice(&v, qiov, qoff, (size_t)bytes);
        }
    }
    iov_cleanup(&v);
    return ret;
}

static int overlay_co_preadv(StrataNode *node, int64_t offset, int64_t bytes,
                             const IOVector *qiov, int flags)
{
    OverlayState *s = node->opaque;
    int64_t b = offset / s->block_size;
    int64_t end = DIV_ROUND_UP(offset + bytes, (int64_t)s->block_size);

    while (b < end) {
        int64_t n = run_length(s, b, end);
        int64_t from = MAX(b * s->block_size, offset);
        int64_t to = MIN((b + n) * s->block_size, offset + bytes);
        size_t qoff = (size_t)(from - offset);
        int ret;

        if (block_in_overlay(s, b)) {
            ret = overlay_fd_rw(s, false, from, to - from, qiov, qoff);
        } else {
            /* Padding of a last partial block reads past the base's end:
             * zeroes there, as everywhere past a node's end. */
            int64_t base_to = MIN(to, s->base_visible);
            IOVector v;

            iov_init(&v, qiov->max > 0 ? qiov->max : IOV_MAX);
            ret = base_to > from ? iov_slice(&v, qiov, qoff,
                                             (size_t)(base_to - from)) : 0;
            if (ret == 0 && base_to > from) {
                ret = node_co_preadv(node->file->node, from, base_to - from,
                                     &v, 0);
            }
            iov_cleanup(&v);
            if (ret == 0 && to > base_to) {
                iov_memset(qiov, qoff + (size_t)MAX(base_to - from, 0), 0,
                           (size_t)(to - MAX(base_to, from)));
            }
        }
        if (ret < 0) {
            return ret;
        }
        b += n;
    }
    return 0;
}

static int overlay_co_pwritev(StrataNode *node, int64_t offset, int64_t bytes,
                              const IOVector *qiov, int flags)
{
    OverlayState *s = node->opaque;
    int ret;

    /* The request path aligned the request to whole blocks. */
    g_assert(offset % s->block_size == 0);
    ret = overlay_fd_rw(s, true, offset, bytes, qiov, 0);
    if (ret < 0) {
        return ret;
    }
    for (int64_t b = offset / s->block_size;
         b < DIV_ROUND_UP(offset + bytes, (int64_t)s->block_size); b++) {
        if (!block_in_overlay(s, b)) {
            s->bitmap[b / 64] |= UINT64_C(1) << (b % 64);
            s->blocks_written++;
        }
    }
    return 0;
}

/* Nothing written here outlives the process: there is nothing to make
 * durable. */
static int overlay_co_flush(StrataNode *node)
{
    return 0;
}

/* Advisory: the blocks keep their data. */
static int overlay_co_pdiscard(StrataNode *node, int64_t offset, int64_t bytes)
{
    return 0;
}

static int overlay_co_block_status(StrataNode *node, int64_t offset,
                                   int64_t bytes, int64_t *pnum)
{
    OverlayState *s = node->opaque;
    int64_t b = offset / s->block_size;
    int64_t end = DIV_ROUND_UP(offset + bytes, (int64_t)s->block_size);
    int64_t n = run_length(s, b, end);
    int64_t run_end = MIN((b + n) * s->block_size, offset + bytes);

    if (block_in_overlay(s, b)) {
        *pnum = run_end - offset;
        return STRATA_BLOCK_DATA;
    }
    if (offset >= s->base_visible) {
        *pnum = run_end - offset;
        return STRATA_BLOCK_ZERO;
    }
    run_end = MIN(run_end, s->base_visible);
    return node_co_block_status(node->file->node, offset, run_end - offset,
                                pnum);
}

/*
 * Resize the overlay only: the memfd and the bitmap follow, blocks past
 * the new end are dropped, and base data past the smallest size the
 * overlay ever had stays hidden.  The base is not touched.
 */
static int overlay_co_truncate(StrataNode *node, int64_t size,
                               PreallocMode prealloc, StrataError **errp)
{
    OverlayState *s = node->opaque;
    int64_t nblocks = DIV_ROUND_UP(size, (int64_t)s->block_size);
    size_t words = (size_t)DIV_ROUND_UP(nblocks, 64) + 1;
    size_t old_words = (size_t)DIV_ROUND_UP(s->nblocks, 64) + 1;

    if (size > BLOCK_MAX_OFFSET) {
        error_setg(errp, "Cannot resize node '%s' to %" PRId64 " bytes: too "
                   "large", node->node_name, size);
        return -EINVAL;
    }
    if (ftruncate(s->fd, size) < 0) {
        int err = errno;
        error_setg_errno(errp, err, "Could not resize the snapshot overlay "
                         "of node '%s'", node->node_name);
        return -err;
    }
    uint64_t *bm = g_try_renew(uint64_t, s->bitmap, words);
    if (!bm) {
        error_setg_errno(errp, ENOMEM, "Could not resize the snapshot "
                         "overlay's bitmap of node '%s'", node->node_name);
        return -ENOMEM;
    }
    s->bitmap = bm;
    if (words > old_words) {
        memset(bm + old_words, 0, (words - old_words) * sizeof(*bm));
    }
    /* Clear the bits of blocks past the new end (in the last word too). */
    for (int64_t b = nblocks; b < MIN(s->nblocks, (int64_t)(words * 64)); b++) {
        if (block_in_overlay(s, b)) {
            bm[b / 64] &= ~(UINT64_C(1) << (b % 64));
            s->blocks_written--;
        }
    }
    /* A block cut in two keeps its head; the memfd zeroed the rest. */
    s->nblocks = nblocks;
    s->size = size;
    s->base_visible = MIN(s->base_visible, size);
    node->total_bytes = size;
    return 0;
}

static int64_t overlay_get_length(StrataNode *node)
{
    OverlayState *s = node->opaque;

    return s->size;
}

static void overlay_child_perm(StrataNode *node, uint64_t perm, uint64_t shared,
                               uint64_t *child_perm, uint64_t *child_shared)
{
    /* Read only, whatever the users above do; others may read and write
     * without changing data, as beside any reader of an image. */
    *child_perm = PERM_CONSISTENT_READ;
    *child_shared = PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED;
}

static void overlay_refresh_limits(StrataNode *node, BlockLimits *bl)
{
    OverlayState *s = node->opaque;

    bl->request_alignment = s->block_size;
}

static bool overlay_open(StrataNode *node, OptNode *opts, StrataError **errp)
{
    OverlayState *s = node->opaque;
    uint64_t block_size;
    int64_t len;

    s->fd = -1;
    if (!opts_get_size(opts, "block-size", 4096, &block_size, errp)) {
        return false;
    }
    if (!block_open_child(node, opts, "file", "file", true, errp)) {
        return false;
    }
    len = node_get_length(node->file->node);
    if (len < 0) {
        error_setg_errno(errp, (int)-len, "Could not get the size of node '%s'",
                         node->file->node->node_name);
        return false;
    }
    s->fd = memfd_create("strata-snapshot-overlay", MFD_CLOEXEC);
    if (s->fd < 0) {
        error_setg_errno(errp, errno, "Could not create the snapshot overlay");
        return false;
    }
    if (ftruncate(s->fd, len) < 0) {
        error_setg_errno(errp, errno, "Could not size the snapshot overlay "
                         "to %" PRId64 " bytes", len);
        goto fail;
    }
    s->size = len;
    s->base_visible = len;
    s->block_size = (uint32_t)block_size;
    s->nblocks = DIV_ROUND_UP(len, (int64_t)block_size);
    s->bitmap = g_try_new0(uint64_t, DIV_ROUND_UP(s->nblocks, 64) + 1);
    if (!s->bitmap) {
        error_setg_errno(errp, ENOMEM, "Could not allocate the snapshot "
                         "overlay's bitmap (%" PRId64 " blocks)", s->nblocks);
        goto fail;
    }
    node->total_bytes = len;
    return true;

fail:
    close(s->fd);
    s->fd = -1;
    return false;
}

static void overlay_close(StrataNode *node)
{
    OverlayState *s = node->opaque;

    /* The overlay's data goes with the memfd: discarded, as -s promises. */
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    g_free(s->bitmap);
    s->bitmap = NULL;
}

static void overlay_dump_info(StrataNode *node, GString *out)
{
    OverlayState *s = node->opaque;

    g_string_append_printf(out, "snapshot-overlay: %" PRIu64 " of %" PRId64
                           " blocks of %" PRIu32 " bytes written (discarded "
                           "at close)\n", s->blocks_written, s->nblocks,
                           s->block_size);
}

const BlockDriver bdrv_snapshot_overlay = {
    .name = "snapshot-overlay",
    .single_queue = true,
    .instance_size = sizeof(OverlayState),
    .child_role = "file",
    .open = overlay_open,
    .close = overlay_close,
    .co_preadv = overlay_co_preadv,
    .co_pwritev = overlay_co_pwritev,
    .co_pdiscard = overlay_co_pdiscard,
    .co_flush = overlay_co_flush,
    .co_block_status = overlay_co_block_status,
    .get_length = overlay_get_length,
    .co_truncate = overlay_co_truncate,
    .refresh_limits = overlay_refresh_limits,
    .child_perm = overlay_child_perm,
    .dump_info = overlay_dump_info,
};
