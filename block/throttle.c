/*
 * throttle: a filter that holds requests to the limits of a throttle group
 * SPDX-License-Identifier: MIT
 *
 * driver=throttle,throttle-group=ID,file=... as in QEMU.  Reads wait on
 * the group's read limits; writes, write-zeroes and discards on its write
 * limits (QEMU counts the last two as writes of their length).  Flush and
 * block status pass unthrottled.  The waiting and the fairness between
 * the nodes of one group are block/throttle-group.c's; this file is the
 * driver around it.  docs/throttle.md is the user's view.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "block/block-int.h"
#include "block/drivers.h"
#include "block/throttle-group.h"

typedef struct ThrottleNodeState {
    StrataObject *obj;          /* the group object, in use by the node */
    char *user;                 /* "node 'x'", the use's name */
    ThrottleGroupMember tgm;
    int drained;                /* drained sections the filter is in */
} ThrottleNodeState;

/* Take the group @id for @node into @obj/@tgm.  Errors name the option. */
static bool throttle_take_group(StrataNode *node, const char *id,
                                const char *user, StrataObject **obj,
                                ThrottleGroupMember *tgm, StrataError **errp)
{
    StrataError *local = NULL;

    *obj = object_use(id, OBJECT_THROTTLE_GROUP, user, &local);
    if (!*obj) {
        if (strata_error_get_class(local) == STRATA_ERROR_NOT_FOUND) {
            /* QEMU's words. */
            error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT,
                      "Throttle group '%s' does not exist", id);
            strata_error_free(local);
        } else {
            error_propagate(errp, local);
            error_prepend(errp, "throttle-group: ");
        }
        return false;
    }
    if (!throttle_group_join(tgm, object_get_throttle_group(*obj), id,
                             node->ctx->loop, errp)) {
        object_unuse(*obj, user);
        *obj = NULL;
        return false;
    }
    return true;
}

static bool throttle_open(StrataNode *node, OptNode *opts, StrataError **errp)
{
    ThrottleNodeState *s = node->opaque;
    const char *id;

    if (!opts_require_str(opts, "throttle-group", &id, errp) ||
        !block_open_child(node, opts, "file", "file", true, errp)) {
        return false;
    }
    s->user = g_strdup_printf("node '%s'", node->node_name);
    if (!throttle_take_group(node, id, s->user, &s->obj, &s->tgm, errp)) {
        /* A failed open is not closed. */
        g_clear_pointer(&s->user, g_free);
        return false;
    }
    node->supports_fua = true;
    return true;
}

static void throttle_close(StrataNode *node)
{
    ThrottleNodeState *s = node->opaque;

    if (s->obj) {
        throttle_group_leave(&s->tgm);
        object_unuse(s->obj, s->user);
    }
    g_free(s->user);
}

/* ---- data path ---------------------------------------------------------- */

static int throttle_co_preadv(StrataNode *node, int64_t offset, int64_t bytes,
                              const IOVector *qiov, int flags)
{
    ThrottleNodeState *s = node->opaque;

    throttle_group_co_intercept(&s->tgm, false, bytes);
    return node_co_preadv(node->file->node, offset, bytes, qiov, flags);
}

static int throttle_co_pwritev(StrataNode *node, int64_t offset, int64_t bytes,
                               const IOVector *qiov, int flags)
{
    ThrottleNodeState *s = node->opaque;

    throttle_group_co_intercept(&s->tgm, true, bytes);
    return node_co_pwritev(node->file->node, offset, bytes, qiov, flags);
}

static int throttle_co_pwrite_zeroes(StrataNode *node, int64_t offset,
                                     int64_t bytes, int flags)
{
    ThrottleNodeState *s = node->opaque;

    throttle_group_co_intercept(&s->tgm, true, bytes);
    return node_co_pwrite_zeroes(node->file->node, offset, bytes, flags);
}

static int throttle_co_pdiscard(StrataNode *node, int64_t offset,
                                int64_t bytes)
{
    ThrottleNodeState *s = node->opaque;

    throttle_group_co_intercept(&s->tgm, true, bytes);
    return node_co_pdiscard(node->file->node, offset, bytes);
}

/* A drained section must not wait for the limits: the held requests go
 * at once (QEMU does the same), and new ones pass until it ends. */
static void throttle_drained_begin(StrataNode *node)
{
    ThrottleNodeState *s = node->opaque;

    s->drained++;
    throttle_group_disable(&s->tgm);
}

static void throttle_drained_end(StrataNode *node)
{
    ThrottleNodeState *s = node->opaque;

    g_assert(s->drained > 0);
    s->drained--;
    throttle_group_enable(&s->tgm);
}

/* ---- reopen: the group may change --------------------------------------- */

typedef struct ThrottleReopen {
    StrataObject *obj;
    ThrottleGroupMember tgm;
} ThrottleReopen;

static bool throttle_reopen_prepare(ReopenState *rs, StrataError **errp)
{
    StrataNode *node = rs->node;
    ThrottleNodeState *s = node->opaque;
    g_autoptr(OptNode) opts = opts_clone(rs->options);
    const char *id;

    if (!opts_require_str(opts, "throttle-group", &id, errp)) {
        return false;
    }
    if (!strcmp(id, object_get_id(s->obj))) {
        return true;
    }
    ThrottleReopen *r = g_new0(ThrottleReopen, 1);
    if (!throttle_take_group(node, id, s->user, &r->obj, &r->tgm, errp)) {
        g_free(r);
        return false;
    }
    /* The new membership is inside the same drained sections. */
    for (int i = 0; i < s->drained; i++) {
        throttle_group_disable(&r->tgm);
    }
    rs->opaque = r;
    return true;
}

static void throttle_reopen_commit(ReopenState *rs)
{
    ThrottleNodeState *s = rs->node->opaque;
    ThrottleReopen *r = rs->opaque;
    ThrottleGroup *tg;

    if (!r) {
        return;
    }
    /* The scheduler links a member by its address: the prepared one only
     * proved the join possible; the node's own storage joins now (the
     * same loop, so it cannot fail). */
    throttle_group_leave(&r->tgm);
    throttle_group_leave(&s->tgm);
    object_unuse(s->obj, s->user);
    s->obj = r->obj;
    tg = object_get_throttle_group(s->obj);
    if (!throttle_group_join(&s->tgm, tg, object_get_id(s->obj),
                             rs->node->ctx->loop, NULL)) {
        g_assert_not_reached();
    }
    for (int i = 0; i < s->drained; i++) {
        throttle_group_disable(&s->tgm);
    }
    g_free(r);
    rs->opaque = NULL;
}

static void throttle_reopen_abort(ReopenState *rs)
{
    ThrottleNodeState *s = rs->node->opaque;
    ThrottleReopen *r = rs->opaque;

    if (!r) {
        return;
    }
    throttle_group_leave(&r->tgm);
    object_unuse(r->obj, s->user);
    g_free(r);
    rs->opaque = NULL;
}

static const char *const throttle_reopen_options[] = {
    "throttle-group", NULL,
};

static void throttle_dump_info(StrataNode *node, GString *out)
{
    ThrottleNodeState *s = node->opaque;
    ThrottleConfig cfg;

    throttle_group_get_config(s->tgm.tg, &cfg);
    g_string_append_printf(out, "throttle: group '%s'",
                           object_get_id(s->obj));
    for (int i = 0; i < THROTTLE_BUCKET__MAX; i++) {
        if (cfg.b[i].avg) {
            g_string_append_printf(out, ", %s %" PRId64,
                                   throttle_bucket_names[i], cfg.b[i].avg);
        }
    }
    g_string_append_c(out, '\n');
}

const BlockDriver bdrv_throttle = {
    .name = "throttle",
    .single_queue = true,
    .instance_size = sizeof(ThrottleNodeState),
    .is_filter = true,
    .child_role = "file",
    .open = throttle_open,
    .close = throttle_close,
    .co_preadv = throttle_co_preadv,
    .co_pwritev = throttle_co_pwritev,
    .co_pwrite_zeroes = throttle_co_pwrite_zeroes,
    .co_pdiscard = throttle_co_pdiscard,
    .drained_begin = throttle_drained_begin,
    .drained_end = throttle_drained_end,
    .reopen_prepare = throttle_reopen_prepare,
    .reopen_commit = throttle_reopen_commit,
    .reopen_abort = throttle_reopen_abort,
    .reopen_options = throttle_reopen_options,
    .dump_info = throttle_dump_info,
};
