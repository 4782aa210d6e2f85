/*
 * Reopen: change a node's common options while it is in use
 * SPDX-License-Identifier: MIT
 *
 * QEMU's model, for the options QEMU changes at run time: the common
 * read-only, auto-read-only, cache.direct, cache.no-flush, discard and
 * detect-zeroes, and a driver's own reopen_options (raw's offset and size):
 *
 *   drain the node's subtree (backends park new requests, in-flight ones
 *   finish), then
 *     prepare  every affected node, top-down: the driver gets the new
 *              values and may prepare a new fd (O_DIRECT on or off, O_RDWR
 *              or O_RDONLY) without giving up the old one;
 *     check    that no user of a node that goes read-only holds write or
 *              resize on it;
 *     commit   every node (driver swaps in what it prepared, the node's
 *              fields and option tree change, limits are recomputed), or
 *     abort    every prepared node: the driver drops what it prepared and
 *              nothing changes;
 *   end the drained section.
 *
 * Which nodes change: the changes name the top node, and nest under its
 * primary child's role for the nodes down its filtered chain
 * ({"file": {"cache": {"direct": true}}}).  read-only, auto-read-only, the
 * cache options and discard apply to the node named and every node below
 * it (what children inherited when they were opened inline) unless a
 * lower level sets its own; detect-zeroes applies to the node it is named
 * for alone, as at open.  Any other option may only repeat the value the
 * node has: QEMU's rule, with its words ("Cannot change the option 'aio'").
 */
#include <errno.h>
#include <string.h>

#include "block/block-int.h"
#include "block/backend-int.h"
#include "qapi/schema.h"

/* Same spelling and order as the detect-zeroes and discard enums in
 * qapi/block.json. */
static const char *const detect_zeroes_names[] = { "off", "on", "unmap", NULL };
static const char *const discard_names[] = { "ignore", "off", "unmap", "on", NULL };

/* The common options a reopen may change, as in QEMU; anything else the
 * schema knows (driver, node-name, force-share, ...) is fixed for the
 * node's life.  auto-read-only is accepted and only recorded: Strata
 * decides read-only at open. */
static const char *const reopen_keys[] = {
    "read-only", "auto-read-only", "cache", "detect-zeroes", "discard", NULL,
};

/* What the caller asked for, each field valid when its has_ flag is set. */
typedef struct ReopenChanges {
    bool has_read_only, read_only;
    bool has_auto_ro, auto_ro;
    bool has_direct, direct;
    bool has_no_flush, no_flush;
    bool has_discard;
    DiscardMode discard;
    bool has_detect_zeroes;
    DetectZeroes detect_zeroes;
} ReopenChanges;

/* Same value?  Scalars by their text (a dotted "4096" equals a JSON
 * 4096), objects member by member as far as @new names them. */
static bool opts_value_same(const OptNode *new, const OptNode *old)
{
    if (!old) {
        return false;
    }
    if (opts_type(new) == OPT_OBJECT || opts_type(old) == OPT_OBJECT) {
        if (opts_type(new) != opts_type(old)) {
            return false;
        }
        for (guint i = 0; i < opts_object_size(new); i++) {
            if (!opts_value_same(opts_object_value(new, i),
                                 opts_peek(old, opts_object_key(new, i)))) {
                return false;
            }
        }
        return true;
    }
    if (opts_type(new) == OPT_LIST || opts_type(old) == OPT_LIST) {
        g_autofree char *a = opts_to_json(new, false);
        g_autofree char *b = opts_to_json(old, false);
        return !strcmp(a, b);
    }
    return !strcmp(opts_scalar_str(new), opts_scalar_str(old));
}

/*
 * Sort the changes for the node at @depth of the chain (@obj, a member
 * of the caller's copy, may be NULL): the common options a reopen changes
 * (top node only: they apply down the chain), the driver's own reopen
 * options (copied into *@drv_out, created on first use), the primary
 * child's object (returned in *@next_out for the next node down), and
 * anything else, which may only repeat the value the node has: QEMU's
 * rule, and its words, "Cannot change the option 'aio'".
 */
static bool reopen_split(StrataNode *node, OptNode *obj, int depth,
                         OptNode **drv_out, OptNode **next_out,
                         StrataError **errp)
{
    const BlockDriver *drv = node->drv;
    const SchemaDriver *sd = schema_find_driver(drv->schema ? drv->schema
                                                            : drv->name);

    *next_out = NULL;
    if (!obj) {
        return true;
    }
    if (opts_type(obj) != OPT_OBJECT) {
        error_set_option(errp, "%s: expected an object", opts_path(obj));
        return false;
    }
    if (sd && !schema_validate_node_partial(obj, sd, errp)) {
        return false;
    }
    for (guint i = 0; i < opts_object_size(obj); i++) {
        const char *key = opts_object_key(obj, i);
        OptNode *val = opts_object_value(obj, i);

        if (g_strv_contains(reopen_keys, key)) {
            continue;
        }
        if (drv->child_role && !strcmp(key, drv->child_role) && node->file &&
            opts_type(val) == OPT_OBJECT) {
            *next_out = val;
            continue;
        }
        if (drv->reopen_options && g_strv_contains(drv->reopen_options, key)) {
            if (!*drv_out) {
                *drv_out = opts_new_object();
            }
            opts_set_child(*drv_out, key, opts_clone(val));
            continue;
        }
        if (!opts_value_same(val, node->options ? opts_peek(node->options, key)
                                                : NULL)) {
            error_set_option(errp, "Cannot change the option '%s'", key);
            return false;
        }
    }
    return true;
}

/*
 * Read the common options a reopen changes from @c, the caller's changes
 * (a copy: the caller's tree is not marked consumed), already checked
 * against the schema by reopen_split().
 */
static bool reopen_parse_changes(OptNode *c, ReopenChanges *out,
                                 StrataError **errp)
{
    int detect, discard;

    *out = (ReopenChanges) { 0 };
    if (!c) {
        return true;
    }

    out->has_read_only = opts_has(c, "read-only");
    out->has_auto_ro = opts_has(c, "auto-read-only");
    out->has_detect_zeroes = opts_has(c, "detect-zeroes");
    out->has_discard = opts_has(c, "discard");
    OptNode *cache = opts_peek(c, "cache");
    out->has_direct = opts_has(cache, "direct");
    out->has_no_flush = opts_has(cache, "no-flush");
    if (!opts_get_bool(c, "read-only", false, &out->read_only, errp) ||
        !opts_get_bool(c, "auto-read-only", false, &out->auto_ro, errp) ||
        !opts_get_bool(cache, "direct", false, &out->direct, errp) ||
        !opts_get_bool(cache, "no-flush", false, &out->no_flush, errp) ||
        !opts_get_enum(c, "detect-zeroes", detect_zeroes_names, 0, &detect,
                       errp) ||
        !opts_get_enum(c, "discard", discard_names, 0, &discard, errp)) {
        return false;
    }
    out->detect_zeroes = (DetectZeroes)detect;
    out->discard = discard >= 2 ? DISCARD_UNMAP : DISCARD_IGNORE;
    return true;
}

/*
 * What a node down the chain gets: its parent's changes (read-only,
 * auto-read-only, cache and discard are inherited, as children opened
 * inline inherit them), overridden by those named at its own level
 * (file.cache.direct=on); detect-zeroes only where it is named.
 */
static void reopen_inherit_changes(ReopenChanges *child,
                                   const ReopenChanges *parent)
{
#define INHERIT(has, field) \
    if (!child->has && parent->has) { \
        child->has = true; \
        child->field = parent->field; \
    }
    INHERIT(has_read_only, read_only)
    INHERIT(has_auto_ro, auto_ro)
    INHERIT(has_direct, direct)
    INHERIT(has_no_flush, no_flush)
    INHERIT(has_discard, discard)
#undef INHERIT
}

/* The new option tree of @rs's node: its old tree with the changed values
 * (common ones from @ch, the driver's own in @drv_changes) written in, so
 * that the driver's reopen_prepare reads its new settings there and a
 * later look at node->options shows the truth. */
static OptNode *reopen_new_options(const ReopenState *rs,
                                   const ReopenChanges *ch,
                                   const OptNode *drv_changes)
{
    StrataNode *node = rs->node;
    OptNode *opts = node->options ? opts_clone(node->options)
                                  : opts_new_object();

    /* None of these can fail: every key is a plain member of an object
     * that the schema let through at open. */
    bool ok = true;
    if (ch->has_read_only) {
        ok &= opts_set_bool(opts, "read-only", rs->read_only, NULL);
    }
    if (ch->has_direct) {
        ok &= opts_set_bool(opts, "cache.direct", rs->cache_direct, NULL);
    }
    if (ch->has_no_flush) {
        ok &= opts_set_bool(opts, "cache.no-flush", rs->cache_no_flush, NULL);
    }
    if (ch->has_auto_ro) {
        ok &= opts_set_bool(opts, "auto-read-only", ch->auto_ro, NULL);
    }
    if (ch->has_discard) {
        ok &= opts_set_str(opts, "discard", discard_names[rs->discard == DISCARD_UNMAP ? 2 : 0],
                           NULL);
    }
    if (ch->has_detect_zeroes) {
        ok &= opts_set_str(opts, "detect-zeroes",
                           detect_zeroes_names[rs->detect_zeroes], NULL);
    }
    g_assert(ok);
    for (guint i = 0; i < opts_object_size(drv_changes); i++) {
        opts_set_child(opts, opts_object_key(drv_changes, i),
                       opts_clone(opts_object_value(drv_changes, i)));
    }
    return opts;
}

/*
 * A node that becomes read-only must have no user holding write or resize
 * on it.  Permissions flow down the filtered chain, so checking top-down
 * fails on the outermost node that has such a user.
 */
static bool reopen_check_perm(const ReopenState *rs, StrataError **errp)
{
    StrataNode *node = rs->node;
    const uint64_t mask = PERM_WRITE | PERM_RESIZE;

    if (!rs->read_only || node->read_only) {
        return true;
    }
    for (GSList *l = node->parents; l; l = l->next) {
        BlockChild *c = l->data;
        if (c->perm & mask) {
            /* QEMU's words, so that scripts' expected output carries
             * over. */
            error_set(errp, STRATA_ERROR_PERMISSION, EPERM,
                      "Read-only block node '%s' cannot support read-write "
                      "users", node->node_name);
            return false;
        }
    }
    return true;
}

/*
 * A writer without resize keeps the end-of-image rule under the new
 * alignment (cache.direct=on raises it from 1): a 5000-byte image may be
 * written through the page cache, not through O_DIRECT on a 4 KiB device.
 */
static bool reopen_check_size_alignment(const ReopenState *rs,
                                        StrataError **errp)
{
    StrataNode *node = rs->node;

    if (!rs->request_alignment || rs->read_only) {
        return true;
    }
    if (!node_check_size_alignment(node, node->perm, rs->request_alignment,
                                   errp)) {
        error_prepend(errp, "Cannot reopen node '%s': ", node->node_name);
        return false;
    }
    return true;
}

static void reopen_commit_one(ReopenState *rs)
{
    StrataNode *node = rs->node;

    if (node->drv->reopen_commit) {
        node->drv->reopen_commit(rs);
    }
    node->read_only = rs->read_only;
    node->cache_direct = rs->cache_direct;
    node->cache_no_flush = rs->cache_no_flush;
    node->detect_zeroes = rs->detect_zeroes;
    node->discard = rs->discard;
    /* node->flush_failed stays as it is.  Linux reports a writeback error
     * once per file description, and a reopen that keeps the descriptor
     * (only detect-zeroes changed) or opens a new one (which never sees
     * the old error) would both let the next flush "succeed" over lost
     * data.  Only closing the node forgets the failure. */
    opts_unref(node->options);
    node->options = rs->options;
    rs->options = NULL;
}

bool node_reopen(StrataNode *node, OptNode *changes, StrataError **errp)
{
    int n = 0, prepared = 0;
    bool ok = false;

    g_assert(!co_in_coroutine());
    /* The drained section runs the loop in this thread. */
    g_assert(loop_is_owner(node->ctx->loop));

    g_autoptr(OptNode) c = NULL;
    if (changes && opts_type(changes) != OPT_OBJECT) {
        error_set_option(errp, "reopen options: expected an object");
        return false;
    }
    c = changes ? opts_clone(changes) : NULL;

    for (StrataNode *n1 = node; n1; n1 = node_filtered(n1)) {
        n++;
    }
    g_autofree ReopenState *rs = g_new0(ReopenState, n);
    g_autofree OptNode **drv_changes = g_new0(OptNode *, n);
    g_autofree ReopenChanges *ch = g_new0(ReopenChanges, n);
    OptNode *obj = c;
    int i = 0;
    for (StrataNode *n1 = node; n1; n1 = node_filtered(n1), i++) {
        OptNode *next = NULL;
        if (!reopen_split(n1, obj, i, &drv_changes[i], &next, errp) ||
            !reopen_parse_changes(obj, &ch[i], errp)) {
            goto out_free;
        }
        if (i > 0) {
            reopen_inherit_changes(&ch[i], &ch[i - 1]);
        }
        if (ch[i].has_read_only && !ch[i].read_only && n1->force_share) {
            error_set_option(errp, "read-only: cannot be turned off: node "
                             "'%s' was opened with force-share=on",
                             n1->node_name);
            goto out_free;
        }
        DiscardMode discard = ch[i].has_discard ? ch[i].discard : n1->discard;
        DetectZeroes dz = ch[i].has_detect_zeroes ? ch[i].detect_zeroes
                                                  : n1->detect_zeroes;
        if (dz == DETECT_ZEROES_UNMAP && discard != DISCARD_UNMAP) {
            error_set_option(errp, "detect-zeroes: 'unmap' needs "
                             "discard=unmap on node '%s'", n1->node_name);
            goto out_free;
        }
        obj = next;
    }

    i = 0;
    for (StrataNode *n1 = node; n1; n1 = node_filtered(n1), i++) {
        const ReopenChanges *c1 = &ch[i];
        rs[i] = (ReopenState) {
            .node = n1,
            .read_only = c1->has_read_only ? c1->read_only : n1->read_only,
            .cache_direct = c1->has_direct ? c1->direct : n1->cache_direct,
            .cache_no_flush = c1->has_no_flush ? c1->no_flush
                                               : n1->cache_no_flush,
            .detect_zeroes = c1->has_detect_zeroes ? c1->detect_zeroes
                                                   : n1->detect_zeroes,
            .discard = c1->has_discard ? c1->discard : n1->discard,
        };
        rs[i].options = reopen_new_options(&rs[i], c1, drv_changes[i]);
    }

    node_ref(node);
    node_drain_begin(node);

    /* Prepare top-down: a driver may look at what its parent will be. */
    for (prepared = 0; prepared < n; prepared++) {
        StrataNode *n1 = rs[prepared].node;
        if (n1->drv->reopen_prepare &&
            !n1->drv->reopen_prepare(&rs[prepared], errp)) {
            error_prepend(errp, "Cannot reopen node '%s': ", n1->node_name);
            goto out;
        }
    }
    for (i = 0; i < n; i++) {
        if (!reopen_check_perm(&rs[i], errp) ||
            !reopen_check_size_alignment(&rs[i], errp)) {
            goto out;
        }
    }

    for (i = 0; i < n; i++) {
        reopen_commit_one(&rs[i]);
    }
    /* Refresh from the deepest node: node_refresh_limits() walks up
     * through every parent, so the chain and anything above it follow. */
    node_refresh_limits(rs[n - 1].node);
    ok = true;

out:
    if (!ok) {
        for (i = prepared; i-- > 0;) {
            StrataNode *n1 = rs[i].node;
            if (n1->drv->reopen_abort) {
                n1->drv->reopen_abort(&rs[i]);
            }
        }
    }
    for (i = 0; i < n; i++) {
        opts_unref(rs[i].options);
    }
    node_drain_end(node);
    node_unref(node);
out_free:
    for (i = 0; i < n; i++) {
        opts_unref(drv_changes[i]);
    }
    return ok;
}

STRATA_EXPORT bool strata_node_reopen_json(StrataNode *node, const char *json,
                                           StrataError **errp)
{
    g_autoptr(OptNode) changes = opts_parse_json(json, errp);

    if (!changes) {
        return false;
    }
    return node_reopen(node, changes, errp);
}
