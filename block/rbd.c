/*
 * rbd: a protocol driver for Ceph RADOS block device images, through librbd
 * SPDX-License-Identifier: MIT
 *
 * The node opens one image (optionally at a snapshot, read-only) of a pool
 * (optionally in a namespace) and moves data with librbd's asynchronous
 * calls; Strata implements no part of the RADOS protocol.  docs/rbd.md is
 * the user's page.
 *
 * Completions.  librbd completes requests on its own threads.  Nothing of
 * Strata runs there: completions are created without a callback, and the
 * image is told to signal an eventfd instead (rbd_set_image_notification,
 * EVENT_TYPE_EVENTFD), which librbd writes after queueing the finished
 * completion on the image.  The eventfd is a fd handler of the node's loop:
 *
 *   co_preadv ─► rbd_aio_readv(completion whose arg is an RbdReq on the
 *   coroutine's stack) ─► the coroutine yields ─► a librbd thread finishes
 *   the request, queues the completion, writes the eventfd ─► the loop
 *   runs rbd_on_event(): reads the eventfd, then rbd_poll_io_events()
 *   hands over the queued completions; each one's result goes to its
 *   RbdReq, the completion is released, and the coroutines are entered.
 *
 * The eventfd is read before the queue is polled, so a completion queued
 * after the poll writes the eventfd again and is not lost.
 *
 * Blocking calls (connecting, opening, closing, resize, the diff walk of
 * block status) run at open and close in the opening thread, like the nbd
 * driver's first connection, and otherwise in the context's thread pool,
 * so the loop keeps running.
 *
 * rbd_cache follows cache.direct as in QEMU: off with cache.direct=true,
 * on otherwise (writeback; a flush writes it back).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

#include "block/block-int.h"
#include "block/object.h"
#include "block/drivers.h"

/* Completions taken from the image per rbd_poll_io_events() call. */
#define RBD_POLL_BATCH 64
/* Write-zeroes and discard go in pieces of at most this (librbd's length
 * of write-zeroes is a size_t, its discard splits by object anyway). */
#define RBD_MAX_ZERO ((int64_t)1 << 30)
/* Block status looks this far ahead at most. */
#define RBD_MAX_STATUS ((int64_t)1 << 30)

typedef struct RbdReq {
    Coroutine *co;
    ssize_t ret;                    /* librbd's return value */
    bool done;
} RbdReq;

typedef struct RbdState {
    StrataNode *node;
    Loop *loop;
    /* options */
    char *pool, *ns, *image, *snapshot, *conf, *user;
    StrataObject *key_obj;          /* key-secret, held while open */
    char *key_user;                 /* the node's name for that use */
    /* librados / librbd */
    rados_t cluster;
    rados_ioctx_t ioctx;
    rbd_image_t img;
    int efd;                        /* the image's completion eventfd */
    bool connected;
    uint64_t features;
    uint64_t obj_size;
    int64_t size;
    bool rbd_cache;
} RbdState;

/* ---- completions ------------------------------------------------------------ */

static void rbd_on_event(void *opaque)
{
    RbdState *s = opaque;
    rbd_completion_t comps[RBD_POLL_BATCH];
    CoList done = CO_LIST_INIT;
    uint64_t count;
    int n;

    /* Clear the eventfd first (see the top comment); EAGAIN means a
     * previous round already took what this wake-up announced. */
    if (read(s->efd, &count, sizeof(count)) < 0) {
        /* Nothing to do: the poll below finds what there is. */
    }
    do {
        n = rbd_poll_io_events(s->img, comps, RBD_POLL_BATCH);
        for (int i = 0; i < n; i++) {
            RbdReq *r = rbd_aio_get_arg(comps[i]);

            r->ret = rbd_aio_get_return_value(comps[i]);
            rbd_aio_release(comps[i]);
            r->done = true;
            co_list_append(&done, r->co);
        }
    } while (n == RBD_POLL_BATCH);

    /* Enter after the poll, in a row (co_list_enter): a coroutine may
     * issue its next request at once, which is fine, but completions stay
     * in arrival order. */
    co_list_enter(&done);
}

typedef enum RbdOp {
    RBD_OP_READ,
    RBD_OP_WRITE,
    RBD_OP_DISCARD,
    RBD_OP_ZERO,
    RBD_OP_FLUSH,
} RbdOp;

/*
 * Issue one asynchronous request and wait for it: 0 or -errno.  librbd
 * returns the byte count of a read or write on success.
 */
static int rbd_co_do(RbdState *s, RbdOp op, int64_t offset, int64_t bytes,
                     const IOVector *qiov, int zero_flags)
{
    RbdReq r = { .co = co_self() };
    rbd_completion_t c;
    int ret;

    ret = rbd_aio_create_completion(&r, NULL, &c);
    if (ret < 0) {
        return ret;
    }
    switch (op) {
    case RBD_OP_READ:
        ret = rbd_aio_readv(s->img, qiov->iov, qiov->niov, offset, c);
        break;
    case RBD_OP_WRITE:
        ret = rbd_aio_writev(s->img, qiov->iov, qiov->niov, offset, c);
        break;
    case RBD_OP_DISCARD:
        ret = rbd_aio_discard(s->img, offset, bytes, c);
        break;
    case RBD_OP_ZERO:
        ret = rbd_aio_write_zeroes(s->img, offset, bytes, c, zero_flags, 0);
        break;
    case RBD_OP_FLUSH:
        ret = rbd_aio_flush(s->img, c);
        break;
    default:
        g_assert_not_reached();
    }
    if (ret < 0) {
        /* Not queued: the completion never reaches the eventfd. */
        rbd_aio_release(c);
        return ret;
    }
    while (!r.done) {
        co_yield();
    }
    return r.ret < 0 ? (int)r.ret : 0;
}

static int rbd_co_preadv(StrataNode *node, int64_t offset, int64_t bytes,
                         const IOVector *qiov, int flags)
{
    return rbd_co_do(node->opaque, RBD_OP_READ, offset, bytes, qiov, 0);
}

static int rbd_co_pwritev(StrataNode *node, int64_t offset, int64_t bytes,
                          const IOVector *qiov, int flags)
{
    /* No FUA in librbd: the request path follows with a flush. */
    return rbd_co_do(node->opaque, RBD_OP_WRITE, offset, bytes, qiov, 0);
}

static int rbd_co_pwrite_zeroes(StrataNode *node, int64_t offset,
                                int64_t bytes, int flags)
{
    /* Without MAY_UNMAP the zeroes must stay allocated: librbd's thick
     * provisioning writes them.  NO_FALLBACK: librbd cannot promise that
     * zeroing is cheap (a thick or partial-object zero writes data). */
    if (flags & REQ_NO_FALLBACK) {
        return -ENOTSUP;
    }
    return rbd_co_do(node->opaque, RBD_OP_ZERO, offset, bytes, NULL,
                     flags & REQ_MAY_UNMAP ? 0
                     : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION);
}

static int rbd_co_pdiscard(StrataNode *node, int64_t offset, int64_t bytes)
{
    return rbd_co_do(node->opaque, RBD_OP_DISCARD, offset, bytes, NULL, 0);
}

static int rbd_co_flush(StrataNode *node)
{
    return rbd_co_do(node->opaque, RBD_OP_FLUSH, 0, 0, NULL, 0);
}

/* ---- blocking calls in the pool ---------------------------------------------- */

/* Block status: the first run of extents at the query's start. */
typedef struct RbdStatusJob {
    rbd_image_t img;
    int64_t offset, end;            /* the query */
    int64_t run_start, run_end;     /* the first existing run seen */
    bool stopped;                   /* the callback ended the walk */
} RbdStatusJob;

/* Stops rbd_diff_iterate2 once the run at the start is known (any
 * negative value ends the walk and is returned; this one is ours). */
#define RBD_DIFF_STOP (-ECANCELED)

static int rbd_diff_cb(uint64_t offs, size_t len, int exists, void *opaque)
{
    RbdStatusJob *j = opaque;
    int64_t start = MAX((int64_t)offs, j->offset);
    int64_t end = MIN((int64_t)(offs + len), j->end);

    if (!exists || end <= start) {
        return 0;
    }
    if (j->run_end < 0) {
        j->run_start = start;
        j->run_end = end;
    } else if (start == j->run_end) {
        j->run_end = end;
    } else {
        j->stopped = true;
        return RBD_DIFF_STOP;
    }
    if (j->run_start > j->offset) {
        /* A hole at the start: its end is known. */
        j->stopped = true;
        return RBD_DIFF_STOP;
    }
    return 0;
}

static int rbd_status_fn(void *opaque)
{
    RbdStatusJob *j = opaque;
    int ret = rbd_diff_iterate2(j->img, NULL, j->offset, j->end - j->offset,
                                1, 1, rbd_diff_cb, j);

    return ret == RBD_DIFF_STOP && j->stopped ? 0 : ret;
}

/*
 * Allocation from the object map, when the image has fast-diff and its
 * map is valid (otherwise the walk would stat every object): an object
 * that exists is DATA, one that does not reads zeroes.  Object
 * granularity: data that was written and discarded again may show as DATA.
 */
static int rbd_co_block_status(StrataNode *node, int64_t offset, int64_t bytes,
                               int64_t *pnum)
{
    RbdState *s = node->opaque;
    RbdStatusJob j = {
        .img = s->img,
        .offset = offset,
        .end = offset + MIN(bytes, RBD_MAX_STATUS),
        .run_start = -1,
        .run_end = -1,
    };
    uint64_t flags = 0;
    int ret;

    if (!(s->features & RBD_FEATURE_FAST_DIFF) ||
        rbd_get_flags(s->img, &flags) < 0 ||
        (flags & RBD_FLAG_FAST_DIFF_INVALID)) {
        *pnum = bytes;
        return STRATA_BLOCK_DATA;
    }
    ret = block_co_run_in_pool(node, rbd_status_fn, &j);
    if (ret < 0) {
        return ret;
    }
    if (j.run_end < 0) {
        *pnum = j.end - offset;
        return STRATA_BLOCK_ZERO;
    }
    if (j.run_start > offset) {
        *pnum = j.run_start - offset;
        return STRATA_BLOCK_ZERO;
    }
    *pnum = j.run_end - offset;
    return STRATA_BLOCK_DATA;
}

typedef struct RbdResizeJob {
    rbd_image_t img;
    uint64_t size;
} RbdResizeJob;

static int rbd_resize_fn(void *opaque)
{
    RbdResizeJob *j = opaque;

    return rbd_resize(j->img, j->size);
}

static int rbd_co_truncate(StrataNode *node, int64_t size,
                           PreallocMode prealloc, StrataError **errp)
{
    RbdState *s = node->opaque;
    RbdResizeJob j = { .img = s->img, .size = size };
    uint64_t now;
    int ret;

    if (prealloc != PREALLOC_OFF) {
        error_set(errp, STRATA_ERROR_GENERIC, ENOTSUP, "rbd image '%s': "
                  "preallocation mode '%s' is not supported (only off)",
                  s->image, prealloc_mode_names[prealloc]);
        return -ENOTSUP;
    }
    ret = block_co_run_in_pool(node, rbd_resize_fn, &j);
    if (rbd_get_size(s->img, &now) == 0) {
        s->size = now;
        node->total_bytes = now;
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not resize rbd image '%s' to %"
                         PRId64 " bytes", s->image, size);
        return ret;
    }
    return 0;
}

static int64_t rbd_get_length(StrataNode *node)
{
    RbdState *s = node->opaque;

    return s->size;
}

/*
 * librbd takes any offset and length and a vector of any elements; its
 * objects (4 MiB by default) are the optimal transfer.
 */
static void rbd_refresh_limits(StrataNode *node, BlockLimits *bl)
{
    RbdState *s = node->opaque;

    bl->request_alignment = 1;
    bl->mem_alignment = 1;
    bl->iov_len_alignment = 1;
    bl->max_transfer = 0;
    bl->opt_transfer = s->obj_size <= BLOCK_MAX_RW_BYTES ? (int64_t)s->obj_size
                                                         : 0;
    bl->max_iov = IOV_MAX;
    bl->pwrite_zeroes_alignment = 1;
    bl->max_pwrite_zeroes = RBD_MAX_ZERO;
    bl->pdiscard_alignment = 1;
    bl->max_pdiscard = RBD_MAX_ZERO;
}

/* ---- open and close ------------------------------------------------------------ */

/* A string option that must not be empty when given; *out NULL when
 * absent. */
static bool rbd_get_nonempty(OptNode *opts, const char *key, const char **out,
                             StrataError **errp)
{
    if (!opts_get_str(opts, key, NULL, out, errp)) {
        return false;
    }
    if (*out && !**out) {
        g_autofree char *p = opts_key_path(opts, key);
        error_set_option(errp, "%s: must not be empty", p);
        return false;
    }
    return true;
}

static bool rbd_parse_options(StrataNode *node, RbdState *s, OptNode *opts,
                              StrataError **errp)
{
    const char *pool, *image, *ns, *snap, *conf, *user, *key;

    if (!opts_require_str(opts, "pool", &pool, errp) ||
        !opts_require_str(opts, "image", &image, errp) ||
        !opts_get_str(opts, "namespace", "", &ns, errp) ||
        !rbd_get_nonempty(opts, "snapshot", &snap, errp) ||
        !rbd_get_nonempty(opts, "conf", &conf, errp) ||
        !rbd_get_nonempty(opts, "user", &user, errp) ||
        !rbd_get_nonempty(opts, "key-secret", &key, errp)) {
        return false;
    }
    if (!*pool || !*image) {
        g_autofree char *p = opts_key_path(opts, *pool ? "image" : "pool");
        error_set_option(errp, "%s: must not be empty", p);
        return false;
    }
    s->pool = g_strdup(pool);
    s->image = g_strdup(image);
    s->ns = g_strdup(ns);
    s->snapshot = g_strdup(snap);
    s->conf = g_strdup(conf);
    s->user = g_strdup(user);
    if (key) {
        g_autofree char *p = opts_key_path(opts, "key-secret");
        s->key_user = g_strdup_printf("node '%s'", node->node_name);
        s->key_obj = object_use(key, OBJECT_SECRET, s->key_user, errp);
        if (!s->key_obj) {
            error_prepend(errp, "%s: ", p);
            return false;
        }
    }
    /* Snapshots are read-only; auto-read-only makes the node so. */
    if (s->snapshot && !node->read_only) {
        if (!node->auto_read_only) {
            g_autofree char *p = opts_key_path(opts, "snapshot");
            error_set(errp, STRATA_ERROR_PERMISSION, EACCES, "%s: rbd "
                      "snapshots are read-only: open the node with "
                      "read-only=true", p);
            return false;
        }
        node->read_only = true;
    }
    return true;
}

/* "pool/namespace/image@snapshot", for messages. */
static char *rbd_image_spec(const RbdState *s)
{
    return g_strdup_printf("%s/%s%s%s%s%s", s->pool, s->ns,
                           *s->ns ? "/" : "", s->image,
                           s->snapshot ? "@" : "",
                           s->snapshot ? s->snapshot : "");
}

static bool rbd_connect(RbdState *s, OptNode *opts, StrataError **errp)
{
    int ret;

    ret = rados_create(&s->cluster, s->user);
    if (ret < 0) {
        g_autofree char *p = opts_key_path(opts, "user");
        s->cluster = NULL;
        error_set(errp, STRATA_ERROR_INVALID_OPTION, -ret, "%s: cannot "
                  "create a RADOS client for '%s': %s", p,
                  s->user ? s->user : "admin", g_strerror(-ret));
        return false;
    }
    /* Without conf, Ceph's default search ($CEPH_CONF, /etc/ceph/...),
     * which may find nothing (a key and mon_host given another way). */
    ret = rados_conf_read_file(s->cluster, s->conf);
    if (ret < 0 && s->conf) {
        g_autofree char *p = opts_key_path(opts, "conf");
        error_set(errp, STRATA_ERROR_INVALID_OPTION, -ret, "%s: cannot read "
                  "Ceph configuration '%s': %s", p, s->conf,
                  g_strerror(-ret));
        goto fail;
    }
    if (s->key_obj) {
        size_t len;
        const char *key = (const char *)secret_get_data(s->key_obj, &len);

        ret = rados_conf_set(s->cluster, "key", key);
        if (ret < 0) {
            g_autofree char *p = opts_key_path(opts, "key-secret");
            error_set(errp, STRATA_ERROR_INVALID_OPTION, -ret, "%s: the "
                      "secret is not a usable Ceph key: %s", p,
                      g_strerror(-ret));
            goto fail;
        }
    }
    s->rbd_cache = !s->node->cache_direct;
    ret = rados_conf_set(s->cluster, "rbd_cache",
                         s->rbd_cache ? "true" : "false");
    if (ret < 0) {
        error_setg_errno(errp, -ret, "cannot set rbd_cache");
        goto fail;
    }
    ret = rados_connect(s->cluster);
    if (ret < 0) {
        /* ENOENT: no monitor address (no configuration found, or one
         * without mon_host). */
        error_set(errp, STRATA_ERROR_IO, -ret, "cannot connect to the Ceph "
                  "cluster (conf '%s', user '%s'): %s",
                  s->conf ? s->conf : "default", s->user ? s->user : "admin",
                  ret == -ENOENT ? "no monitors found (mon_host unset?)"
                                 : g_strerror(-ret));
        goto fail;
    }
    s->connected = true;
    return true;

fail:
    rados_shutdown(s->cluster);
    s->cluster = NULL;
    return false;
}

/* Open the image once more: read-only opens take no exclusive lock; the
 * handle's rbd_cache is the cluster's setting at this moment. */
static int rbd_open_handle(RbdState *s, bool read_only, rbd_image_t *img)
{
    if (read_only) {
        return rbd_open_read_only(s->ioctx, s->image, img, NULL);
    }
    return rbd_open(s->ioctx, s->image, img, NULL);
}

static bool rbd_open_image(StrataNode *node, RbdState *s, OptNode *opts,
                           StrataError **errp)
{
    g_autofree char *spec = rbd_image_spec(s);
    uint64_t size;
    int ret;

    ret = rados_ioctx_create(s->cluster, s->pool, &s->ioctx);
    if (ret < 0) {
        g_autofree char *p = opts_key_path(opts, "pool");
        error_set(errp, ret == -ENOENT ? STRATA_ERROR_NOT_FOUND
                                       : STRATA_ERROR_IO, -ret,
                  "%s: cannot open pool '%s': %s", p, s->pool,
                  ret == -ENOENT ? "no such pool" : g_strerror(-ret));
        return false;
    }
    rados_ioctx_set_namespace(s->ioctx, s->ns);
    ret = rbd_open_handle(s, node->read_only, &s->img);
    if (ret < 0) {
        g_autofree char *p = opts_key_path(opts, ret == -ENOENT && *s->ns
                                           ? "namespace" : "image");
        s->img = NULL;
        error_set(errp, ret == -ENOENT ? STRATA_ERROR_NOT_FOUND
                                       : STRATA_ERROR_IO, -ret,
                  "%s: cannot open rbd image '%s/%s%s%s': %s", p, s->pool,
                  s->ns, *s->ns ? "/" : "", s->image,
                  ret == -ENOENT ? "no such image" : g_strerror(-ret));
        return false;
    }
    if (s->snapshot) {
        ret = rbd_snap_set(s->img, s->snapshot);
        if (ret < 0) {
            g_autofree char *p = opts_key_path(opts, "snapshot");
            error_set(errp, ret == -ENOENT ? STRATA_ERROR_NOT_FOUND
                                           : STRATA_ERROR_IO, -ret,
                      "%s: cannot open '%s': %s", p, spec,
                      ret == -ENOENT ? "no such snapshot" : g_strerror(-ret));
            return false;
        }
    }
    rbd_image_info_t info;
    ret = rbd_get_size(s->img, &size);
    if (ret == 0) {
        ret = rbd_get_features(s->img, &s->features);
    }
    if (ret == 0) {
        ret = rbd_stat(s->img, &info, sizeof(info));
        s->obj_size = info.obj_size;
    }
    if (ret < 0) {
        error_set(errp, STRATA_ERROR_IO, -ret, "'%s': cannot read the "
                  "image's size and features: %s", spec, g_strerror(-ret));
        return false;
    }
    if (size > (uint64_t)BLOCK_MAX_OFFSET) {
        error_set(errp, STRATA_ERROR_IO, EFBIG, "'%s': size %" PRIu64
                  " is too large", spec, size);
        return false;
    }
    s->size = size;
    return true;
}

static void rbd_node_close(StrataNode *node);

static bool rbd_node_open(StrataNode *node, OptNode *opts, StrataError **errp)
{
    RbdState *s = node->opaque;
    int ret;

    s->node = node;
    s->loop = node->ctx->loop;
    s->efd = -1;
    if (!rbd_parse_options(node, s, opts, errp) ||
        !rbd_connect(s, opts, errp) ||
        !rbd_open_image(node, s, opts, errp)) {
        goto fail;
    }
    s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->efd < 0) {
        error_setg_errno(errp, errno, "eventfd");
        goto fail;
    }
    ret = rbd_set_image_notification(s->img, s->efd, EVENT_TYPE_EVENTFD);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "rbd_set_image_notification");
        goto fail;
    }
    loop_set_fd_handler(s->loop, s->efd, rbd_on_event, NULL, s);
    node->supports_fua = false;
    node->total_bytes = s->size;
    return true;

fail:
    /* The graph calls close only for nodes whose open succeeded. */
    rbd_node_close(node);
    return false;
}

/* Requests are drained before close: none is in flight. */
static void rbd_node_close(StrataNode *node)
{
    RbdState *s = node->opaque;

    if (s->efd >= 0) {
        loop_set_fd_handler(s->loop, s->efd, NULL, NULL, NULL);
    }
    if (s->img) {
        /* Writes back the cache (rbd_cache) and releases the lock. */
        rbd_close(s->img);
        s->img = NULL;
    }
    if (s->efd >= 0) {
        close(s->efd);
        s->efd = -1;
    }
    if (s->ioctx) {
        rados_ioctx_destroy(s->ioctx);
        s->ioctx = NULL;
    }
    if (s->cluster) {
        rados_shutdown(s->cluster);
        s->cluster = NULL;
    }
    if (s->key_obj) {
        object_unuse(s->key_obj, s->key_user);
        s->key_obj = NULL;
    }
    g_clear_pointer(&s->key_user, g_free);
    g_clear_pointer(&s->pool, g_free);
    g_clear_pointer(&s->ns, g_free);
    g_clear_pointer(&s->image, g_free);
    g_clear_pointer(&s->snapshot, g_free);
    g_clear_pointer(&s->conf, g_free);
    g_clear_pointer(&s->user, g_free);
}

/* ---- reopen ------------------------------------------------------------------------ */

/*
 * read-only and cache.direct decide how the image is opened (a read-only
 * handle, rbd_cache): a change opens a new handle in prepare, swapped in
 * at commit (the node is drained: nothing is in flight on the old one).
 * A snapshot stays read-only.
 */
static bool rbd_reopen_prepare(ReopenState *rs, StrataError **errp)
{
    StrataNode *node = rs->node;
    RbdState *s = node->opaque;
    rbd_image_t *img;
    int ret;

    rs->opaque = NULL;
    if (rs->read_only == node->read_only &&
        rs->cache_direct == node->cache_direct) {
        return true;
    }
    if (s->snapshot && !rs->read_only) {
        error_set(errp, STRATA_ERROR_PERMISSION, EACCES, "snapshot: rbd "
                  "snapshots are read-only: node '%s' cannot become "
                  "read-write", node->node_name);
        return false;
    }
    ret = rados_conf_set(s->cluster, "rbd_cache",
                         rs->cache_direct ? "false" : "true");
    img = g_new0(rbd_image_t, 1);
    if (ret == 0) {
        ret = rbd_open_handle(s, rs->read_only, img);
    }
    if (ret == 0) {
        /* The same eventfd: the new handle has nothing in flight before
         * commit, and the old one nothing after. */
        ret = s->snapshot ? rbd_snap_set(*img, s->snapshot) : 0;
        if (ret == 0) {
            ret = rbd_set_image_notification(*img, s->efd,
                                             EVENT_TYPE_EVENTFD);
        }
        if (ret < 0) {
            rbd_close(*img);
        }
    }
    if (ret < 0) {
        g_autofree char *spec = rbd_image_spec(s);
        g_free(img);
        error_setg_errno(errp, -ret, "Cannot reopen rbd image '%s'", spec);
        return false;
    }
    rs->opaque = img;
    return true;
}

static void rbd_reopen_commit(ReopenState *rs)
{
    RbdState *s = rs->node->opaque;
    rbd_image_t *img = rs->opaque;

    if (!img) {
        return;
    }
    rbd_close(s->img);
    s->img = *img;
    g_free(img);
    rs->opaque = NULL;
    s->rbd_cache = !rs->cache_direct;
}

static void rbd_reopen_abort(ReopenState *rs)
{
    rbd_image_t *img = rs->opaque;

    if (img) {
        rbd_close(*img);
        g_free(img);
        rs->opaque = NULL;
    }
}

static void rbd_dump_info(StrataNode *node, GString *out)
{
    RbdState *s = node->opaque;
    g_autofree char *spec = rbd_image_spec(s);

    g_string_append_printf(out, "rbd: image '%s', %" PRIu64 "-byte objects, "
                           "features 0x%" PRIx64 "%s, rbd_cache %s, "
                           "user '%s'\n", spec, s->obj_size, s->features,
                           s->features & RBD_FEATURE_FAST_DIFF
                           ? " (fast-diff: block status)" : "",
                           s->rbd_cache ? "on" : "off",
                           s->user ? s->user : "admin");
}

/* ---- legacy filenames ------------------------------------------------------------ */

/* Split @str at each @sep not escaped by a backslash, at most @max
 * pieces (the last takes the rest); the pieces keep their escapes. */
static char **rbd_split(const char *str, char sep, int max)
{
    GPtrArray *out = g_ptr_array_new();
    const char *start = str, *p;

    for (p = str; *p; p++) {
        if (*p == '\\' && p[1]) {
            p++;
        } else if (*p == sep && (int)out->len < max - 1) {
            g_ptr_array_add(out, g_strndup(start, p - start));
            start = p + 1;
        }
    }
    g_ptr_array_add(out, g_strdup(start));
    g_ptr_array_add(out, NULL);
    return (char **)g_ptr_array_free(out, false);
}

/* Remove the escaping backslashes of @str, in place. */
static char *rbd_unescape(char *str)
{
    char *w = str;

    for (const char *r = str; *r; r++) {
        if (*r == '\\' && r[1]) {
            r++;
        }
        *w++ = *r;
    }
    *w = '\0';
    return str;
}

/*
 * rbd:POOL[/NAMESPACE]/IMAGE[@SNAPSHOT][:KEY=VALUE...], as QEMU spells
 * it ('\' escapes ':', '/', '@' and '='): the keys id (the user) and conf
 * are understood; QEMU hands any other key to librados, which Strata does
 * not, so it is refused by name.
 */
static bool rbd_parse_filename(const char *filename, OptNode *opts,
                               StrataError **errp)
{
    g_auto(GStrv) parts = NULL, segs = NULL, last = NULL;
    guint nsegs;

    if (!g_str_has_prefix(filename, "rbd:")) {
        error_set_option(errp, "File name string for rbd must start with "
                         "'rbd:'");
        return false;
    }
    parts = rbd_split(filename + 4, ':', INT_MAX);
    segs = rbd_split(parts[0], '/', INT_MAX);
    nsegs = g_strv_length(segs);
    if (nsegs < 2 || nsegs > 3) {
        error_set_option(errp, "rbd: '%s': expected POOL[/NAMESPACE]/IMAGE"
                         "[@SNAPSHOT]", parts[0]);
        return false;
    }
    last = rbd_split(segs[nsegs - 1], '@', 2);
    if (!*segs[0] || !*last[0]) {
        error_set_option(errp, "rbd: '%s': the %s name is empty", parts[0],
                         *segs[0] ? "image" : "pool");
        return false;
    }
    if (!opts_set_default_str(opts, "pool", rbd_unescape(segs[0]), errp) ||
        !opts_set_default_str(opts, "image", rbd_unescape(last[0]), errp) ||
        (nsegs == 3 &&
         !opts_set_default_str(opts, "namespace", rbd_unescape(segs[1]),
                               errp)) ||
        (last[1] &&
         !opts_set_default_str(opts, "snapshot", rbd_unescape(last[1]),
                               errp))) {
        return false;
    }
    for (int i = 1; parts[i]; i++) {
        g_auto(GStrv) kv = rbd_split(parts[i], '=', 2);
        const char *key;

        if (!kv[1]) {
            error_set_option(errp, "rbd: '%s': expected KEY=VALUE", parts[i]);
            return false;
        }
        key = rbd_unescape(kv[0]);
        if (strcmp(key, "id") && strcmp(key, "conf")) {
            error_set_option(errp, "rbd: filename option '%s' is not "
                             "supported (only id and conf)", key);
            return false;
        }
        if (!opts_set_default_str(opts, strcmp(key, "id") ? "conf" : "user",
                                  rbd_unescape(kv[1]), errp)) {
            return false;
        }
    }
    return true;
}

const BlockDriver bdrv_rbd = {
    .name = "rbd",
    /* Completions come back on one eventfd, read by the node's loop. */
    .single_queue = true,
    .instance_size = sizeof(RbdState),
    .protocol_name = "rbd",
    .parse_filename = rbd_parse_filename,
    .open = rbd_node_open,
    .close = rbd_node_close,
    .co_preadv = rbd_co_preadv,
    .co_pwritev = rbd_co_pwritev,
    .co_pwrite_zeroes = rbd_co_pwrite_zeroes,
    .co_pdiscard = rbd_co_pdiscard,
    .co_flush = rbd_co_flush,
    .co_block_status = rbd_co_block_status,
    .get_length = rbd_get_length,
    .co_truncate = rbd_co_truncate,
    .refresh_limits = rbd_refresh_limits,
    .reopen_prepare = rbd_reopen_prepare,
    .reopen_commit = rbd_reopen_commit,
    .reopen_abort = rbd_reopen_abort,
    .dump_info = rbd_dump_info,
};
