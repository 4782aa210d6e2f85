/*
 * Block graph: opening nodes from option trees, edges, permissions, limits
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "block/block-int.h"
#include "block/backend-int.h"
#include "qapi/schema.h"

const char *const block_req_type_names[REQ_TYPE__MAX] = {
    [REQ_READ] = "read",
    [REQ_WRITE] = "write",
    [REQ_ZEROES] = "write-zeroes",
    [REQ_DISCARD] = "discard",
    [REQ_FLUSH] = "flush",
};

const char *const prealloc_mode_names[] = { "off", "falloc", "full", NULL };

static const char *const discard_names[] = { "ignore", "off", "unmap", "on", NULL };
static const char *const detect_zeroes_names[] = { "off", "on", "unmap", NULL };

static const char *const perm_name_table[] = {
    "consistent read", "write", "write unchanged", "resize",
};

char *perm_names(uint64_t perm)
{
    GString *s = g_string_new(NULL);
    for (unsigned i = 0; i < G_N_ELEMENTS(perm_name_table); i++) {
        if (perm & (1u << i)) {
            if (s->len) {
                g_string_append(s, ", ");
            }
            g_string_append(s, perm_name_table[i]);
        }
    }
    return g_string_free(s, false);
}

char *child_user_name(const BlockChild *c)
{
    if (c->backend) {
        return g_strdup_printf("backend '%s'", backend_get_name(c->backend));
    }
    return g_strdup_printf("node '%s'", c->parent->node_name);
}

/* ---- node names --------------------------------------------------------- */

/*
 * QEMU's rule, so that configs carry over: a letter first, then letters,
 * digits, '-', '.', '_'; at most 31 characters.  Generated names start
 * with '#', which users cannot choose.
 */
static bool node_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > 31 || !g_ascii_isalpha(name[0])) {
        return false;
    }
    for (size_t i = 1; i < len; i++) {
        if (!g_ascii_isalnum(name[i]) && !strchr("-._", name[i])) {
            return false;
        }
    }
    return true;
}

StrataNode *node_find(StrataContext *ctx, const char *name)
{
    return g_hash_table_lookup(ctx->nodes, name);
}

/* ---- limits ---------------------------------------------------------------- */

static void limits_defaults(BlockLimits *bl)
{
    long iov_max = sysconf(_SC_IOV_MAX);
    *bl = (BlockLimits) {
        .request_alignment = 1,
        .mem_alignment = 1,
        .iov_len_alignment = 1,
        .max_iov = iov_max > 0 ? (int)iov_max : 1024,
        .opt_mem_alignment = 1,
    };
}

static int64_t min_nonzero(int64_t a, int64_t b)
{
    if (!a) {
        return b;
    }
    if (!b) {
        return a;
    }
    return MIN(a, b);
}

/* Transfer and zero/discard limits flow up from the primary child; the
 * alignment requirements stay with the node that has them. */
static void limits_inherit(BlockLimits *bl, const BlockLimits *child)
{
    bl->max_transfer = min_nonzero(bl->max_transfer, child->max_transfer);
    bl->opt_transfer = MAX(bl->opt_transfer, child->opt_transfer);
    bl->max_iov = MIN(bl->max_iov, child->max_iov);
    bl->pwrite_zeroes_alignment = MAX(bl->pwrite_zeroes_alignment,
                                      child->pwrite_zeroes_alignment);
    bl->max_pwrite_zeroes = min_nonzero(bl->max_pwrite_zeroes,
                                        child->max_pwrite_zeroes);
    bl->pdiscard_alignment = MAX(bl->pdiscard_alignment, child->pdiscard_alignment);
    bl->max_pdiscard = min_nonzero(bl->max_pdiscard, child->max_pdiscard);
    bl->opt_mem_alignment = MAX(bl->opt_mem_alignment,
                                MAX(child->opt_mem_alignment, child->mem_alignment));
    bl->logical_block_size = child->logical_block_size;
    bl->physical_block_size = child->physical_block_size;
}

void node_refresh_limits(StrataNode *node)
{
    BlockLimits bl;
    limits_defaults(&bl);
    if (node->file) {
        limits_inherit(&bl, &node->file->node->bl);
    }
    if (node->drv->refresh_limits) {
        node->drv->refresh_limits(node, &bl);
    }
    g_assert(is_power_of_2(bl.request_alignment));
    g_assert(is_power_of_2(bl.mem_alignment));
    g_assert(is_power_of_2(bl.iov_len_alignment));
    g_assert(bl.max_iov > 0);
    /* If every element must be a multiple of N bytes, so must every
     * request: keep the padding unit at least that large. */
    bl.request_alignment = MAX(bl.request_alignment, bl.iov_len_alignment);
    bl.opt_mem_alignment = MAX(bl.opt_mem_alignment, bl.mem_alignment);
    if (bl.max_transfer) {
        /* A transfer limit below the alignment could never be honoured. */
        bl.max_transfer = MAX(ROUND_DOWN(bl.max_transfer,
                                         (int64_t)bl.request_alignment),
                              (int64_t)bl.request_alignment);
    }
    node->bl = bl;

    for (GSList *l = node->parents; l; l = l->next) {
        BlockChild *c = l->data;
        if (c->parent) {
            node_refresh_limits(c->parent);
        }
    }
}

void node_invalidate_length(StrataNode *node)
{
    /* From any queue's request path (a write past the cached end). */
    __atomic_store_n(&node->total_bytes, -1, __ATOMIC_RELAXED);
    for (GSList *l = node->parents; l; l = l->next) {
        BlockChild *c = l->data;
        if (c->parent) {
            node_invalidate_length(c->parent);
        }
    }
}

bool node_check_size_alignment(StrataNode *node, uint64_t perm, uint32_t align,
                               StrataError **errp)
{
    int64_t len;

    if (!(perm & (PERM_WRITE | PERM_WRITE_UNCHANGED)) || (perm & PERM_RESIZE) ||
        align <= 1) {
        return true;
    }
    len = node_get_length(node);
    if (len < 0) {
        error_set(errp, STRATA_ERROR_GENERIC, (int)-len,
                  "Cannot get 'write' permission on node '%s': its size is "
                  "unknown (%s), so a padded write could not be kept inside "
                  "it", node->node_name, g_strerror((int)-len));
        return false;
    }
    /* QEMU counts sizes in 512-byte sectors and checks the rounded size:
     * a 5000-byte image is writable on a 512-byte device (its last sector
     * is padded and it grows to 5120), not on a 4 KiB one.  The same here,
     * so that what opens in one opens in the other. */
    if (ROUND_UP(len, (int64_t)512) % align) {
        error_set(errp, STRATA_ERROR_PERMISSION, EPERM,
                  "Cannot get 'write' permission without 'resize': Image size "
                  "is not a multiple of request alignment");
        return false;
    }
    return true;
}

int64_t node_get_length(StrataNode *node)
{
    /* Any queue may refresh the cache; they all store the same answer. */
    int64_t len = __atomic_load_n(&node->total_bytes, __ATOMIC_RELAXED);

    if (len < 0 && node->drv->get_length) {
        len = node->drv->get_length(node);
        __atomic_store_n(&node->total_bytes, len, __ATOMIC_RELAXED);
    } else if (len < 0 && node->file) {
        return node_get_length(node->file->node);
    }
    return len;
}

/* ---- permissions -------------------------------------------------------------
 * Every edge takes some permissions on its child and shares some with the
 * child's other users.  A change is a transaction over the subtree below
 * the changed edge: new values are written into the edges (old ones saved),
 * cumulative permissions recomputed and checked top-down (drivers check
 * their file locks), and then either committed (set_perm) or rolled back.
 */

typedef struct PermTxn {
    GArray *saved;      /* SavedEdge */
    GSList *checked;    /* nodes whose driver check_perm succeeded */
    GSList *visited;    /* every node recomputed */
} PermTxn;

typedef struct SavedEdge {
    BlockChild *c;
    uint64_t perm, shared;
} SavedEdge;

static void txn_set_edge(PermTxn *t, BlockChild *c, uint64_t perm, uint64_t shared)
{
    SavedEdge s = { c, c->perm, c->shared_perm };
    g_array_append_val(t->saved, s);
    c->perm = perm;
    c->shared_perm = shared;
}

static void node_cumulative_perms(StrataNode *node, uint64_t *perm, uint64_t *shared)
{
    uint64_t p = 0, sh = PERM_ALL;
    for (GSList *l = node->parents; l; l = l->next) {
        BlockChild *c = l->data;
        p |= c->perm;
        sh &= c->shared_perm;
    }
    *perm = p;
    /* force-share: what the node passes down (to its file's locks in the
     * end) shares everything, so another process may write the image. */
    *shared = node->force_share ? PERM_ALL : sh;
}

static bool node_check_conflicts(StrataNode *node, StrataError **errp)
{
    for (GSList *a = node->parents; a; a = a->next) {
        BlockChild *ca = a->data;
        for (GSList *b = node->parents; b; b = b->next) {
            BlockChild *cb = b->data;
            uint64_t clash = ca->perm & ~cb->shared_perm;
            if (ca == cb || !clash) {
                continue;
            }
            g_autofree char *ua = child_user_name(ca);
            g_autofree char *ub = child_user_name(cb);
            g_autofree char *names = perm_names(clash);
            error_set(errp, STRATA_ERROR_PERMISSION, EPERM,
                      "%s needs '%s' on node '%s', but that conflicts with use "
                      "by %s as '%s', which does not allow it",
                      ua, names, node->node_name, ub, cb->role);
            return false;
        }
    }
    return true;
}

static bool perm_update_subtree(PermTxn *t, StrataNode *node, StrataError **errp)
{
    uint64_t perm, shared;

    node_cumulative_perms(node, &perm, &shared);
    if (node->read_only && (perm & (PERM_WRITE | PERM_RESIZE))) {
        g_autofree char *names = perm_names(perm & (PERM_WRITE | PERM_RESIZE));
        error_set(errp, STRATA_ERROR_PERMISSION, EROFS,
                  "Block node '%s' is read-only (needed: %s)", node->node_name,
                  names);
        return false;
    }
    if (!node_check_conflicts(node, errp) ||
        !node_check_size_alignment(node, perm, node->bl.request_alignment,
                                   errp)) {
        return false;
    }
    t->visited = g_slist_prepend(t->visited, node);
    if (node->drv->check_perm) {
        if (!node->drv->check_perm(node, perm, shared, errp)) {
            return false;
        }
        t->checked = g_slist_prepend(t->checked, node);
    }
    node->perm = perm;
    node->shared_perm = shared;

    /* Filters and formats pass their users' needs to the child they store
     * data in.  Other children (none yet) would take nothing. */
    for (GSList *l = node->children; l; l = l->next) {
        BlockChild *c = l->data;
        if (c == node->file && node->drv->child_perm) {
            uint64_t cp, cs;
            node->drv->child_perm(node, perm, shared, &cp, &cs);
            txn_set_edge(t, c, cp, cs);
        } else if (c == node->file) {
            txn_set_edge(t, c, perm, shared);
        } else {
            txn_set_edge(t, c, 0, PERM_ALL);
        }
        if (!perm_update_subtree(t, c->node, errp)) {
            return false;
        }
    }
    return true;
}

static void perm_txn_finish(PermTxn *t, bool commit)
{
    if (commit) {
        for (GSList *l = t->checked; l; l = l->next) {
            StrataNode *n = l->data;
            if (n->drv->set_perm) {
                n->drv->set_perm(n, n->perm, n->shared_perm);
            }
        }
    } else {
        for (GSList *l = t->checked; l; l = l->next) {
            StrataNode *n = l->data;
            if (n->drv->abort_perm) {
                n->drv->abort_perm(n);
            }
        }
        for (guint i = t->saved->len; i-- > 0;) {
            SavedEdge *s = &g_array_index(t->saved, SavedEdge, i);
            s->c->perm = s->perm;
            s->c->shared_perm = s->shared;
        }
        for (GSList *l = t->visited; l; l = l->next) {
            StrataNode *n = l->data;
            node_cumulative_perms(n, &n->perm, &n->shared_perm);
        }
    }
    g_array_free(t->saved, true);
    g_slist_free(t->checked);
    g_slist_free(t->visited);
}

/* Apply new permissions to @c and everything below it. */
static bool child_update_perms(BlockChild *c, uint64_t perm, uint64_t shared,
                               StrataError **errp)
{
    PermTxn t = { .saved = g_array_new(false, false, sizeof(SavedEdge)) };
    txn_set_edge(&t, c, perm, shared);
    bool ok = perm_update_subtree(&t, c->node, errp);
    perm_txn_finish(&t, ok);
    return ok;
}

/*
 * The graph lock.  With queues other than the first, requests run in other
 * threads while the control path changes the graph: edges, parents lists
 * and permissions, which the data path reads.  The read side costs the
 * data path nothing new: it is the per-queue in-flight count a request
 * takes at the backend's entry (block/backend.c) and keeps until it
 * returns.  The write side parks new requests at every backend of the
 * context and waits until none is in flight on any queue: a drained
 * section over the whole context.  With the first queue alone, requests
 * run in the control path's own thread, between its steps, and nothing
 * is needed.  Not from a coroutine (it waits); reopen takes its own
 * drained section already.
 */
static bool ctx_has_other_queues(StrataContext *ctx)
{
    bool other = false;

    mutex_lock(&ctx->queues_lock);
    for (unsigned i = 1; i < STRATA_MAX_QUEUES && !other; i++) {
        other = ctx->queues[i] != NULL;
    }
    mutex_unlock(&ctx->queues_lock);
    return other;
}

static bool ctx_backends_busy(void *opaque)
{
    StrataContext *ctx = opaque;

    for (GList *l = ctx->backends; l; l = l->next) {
        if (backend_busy(l->data)) {
            return true;
        }
    }
    return false;
}

bool graph_wrlock(StrataContext *ctx)
{
    if (co_in_coroutine() || !ctx_has_other_queues(ctx)) {
        return false;
    }
    for (GList *l = ctx->backends; l; l = l->next) {
        backend_quiesce(l->data);
        node_drained_notify(strata_backend_get_root(l->data), true);
    }
    ctx_wait_idle(ctx, ctx_backends_busy, ctx);
    return true;
}

void graph_wrunlock(StrataContext *ctx, bool locked)
{
    if (!locked) {
        return;
    }
    for (GList *l = ctx->backends; l; l = l->next) {
        node_drained_notify(strata_backend_get_root(l->data), false);
        backend_unquiesce(l->data);
    }
}

bool child_set_perm(BlockChild *c, uint64_t perm, uint64_t shared,
                    StrataError **errp)
{
    StrataContext *ctx = c->node->ctx;
    bool locked = graph_wrlock(ctx);
    bool ok = child_update_perms(c, perm, shared, errp);
    graph_wrunlock(ctx, locked);
    return ok;
}

static BlockChild *attach_child_locked(StrataNode *child, const char *role,
                                       StrataNode *parent, StrataBackend *be,
                                       uint64_t perm, uint64_t shared,
                                       StrataError **errp)
{
    BlockChild *c = g_new0(BlockChild, 1);
    c->role = g_strdup(role);
    c->node = child;
    c->parent = parent;
    c->backend = be;
    /* The edge starts with no permissions; the transaction gives it
     * @perm/@shared or fails and leaves everything as it was. */
    c->perm = 0;
    c->shared_perm = PERM_ALL;
    child->parents = g_slist_append(child->parents, c);
    node_ref(child);

    if (!child_update_perms(c, perm, shared, errp)) {
        child->parents = g_slist_remove(child->parents, c);
        node_unref(child);
        g_free(c->role);
        g_free(c);
        return NULL;
    }
    if (parent) {
        parent->children = g_slist_append(parent->children, c);
    }
    return c;
}

static BlockChild *attach_child_common(StrataNode *child, const char *role,
                                       StrataNode *parent, StrataBackend *be,
                                       uint64_t perm, uint64_t shared,
                                       StrataError **errp)
{
    bool locked = graph_wrlock(child->ctx);
    BlockChild *c = attach_child_locked(child, role, parent, be, perm, shared,
                                        errp);
    graph_wrunlock(child->ctx, locked);
    return c;
}

BlockChild *node_attach_child(StrataNode *parent, StrataNode *child,
                              const char *role, uint64_t perm, uint64_t shared,
                              StrataError **errp)
{
    g_assert(parent->ctx == child->ctx);
    for (StrataNode *n = parent; n; n = node_filtered(n)) {
        if (n == child) {
            error_setg(errp, "Attaching node '%s' below '%s' would make a cycle",
                       child->node_name, parent->node_name);
            return NULL;
        }
    }
    return attach_child_common(child, role, parent, NULL, perm, shared, errp);
}

BlockChild *backend_attach_root(StrataBackend *be, StrataNode *child,
                                uint64_t perm, uint64_t shared,
                                StrataError **errp)
{
    return attach_child_common(child, "root", NULL, be, perm, shared, errp);
}

void node_detach_child(BlockChild *c)
{
    StrataNode *child = c->node;
    StrataContext *ctx = child->ctx;
    bool locked = graph_wrlock(ctx);

    /* Dropping an edge only ever removes permissions, which cannot fail. */
    child_update_perms(c, 0, PERM_ALL, NULL);
    child->parents = g_slist_remove(child->parents, c);
    if (c->parent) {
        c->parent->children = g_slist_remove(c->parent->children, c);
        if (c->parent->file == c) {
            c->parent->file = NULL;
        }
    }
    g_free(c->role);
    g_free(c);
    /* Recompute the child's cumulative permissions without the edge. */
    node_cumulative_perms(child, &child->perm, &child->shared_perm);
    graph_wrunlock(ctx, locked);
    node_unref(child);
}

/* ---- open and close ------------------------------------------------------------ */

static void node_free(StrataNode *node)
{
    if (node->node_name) {
        g_hash_table_remove(node->ctx->nodes, node->node_name);
    }
    g_free(node->node_name);
    opts_unref(node->options);
    g_free(node->opaque);
    node_shards_free(node);
    g_free(node);
}

static void node_close(StrataNode *node)
{
    g_assert(node->parents == NULL);
    if (node->drv->close) {
        node->drv->close(node);
    }
    /* Parents close before children: dropping our edges may close them. */
    while (node->children) {
        node_detach_child(node->children->data);
    }
    node_free(node);
}

void node_ref(StrataNode *node)
{
    node->refcnt++;
}

void node_unref(StrataNode *node)
{
    if (!node) {
        return;
    }
    g_assert(node->refcnt > 0);
    if (--node->refcnt == 0) {
        node_close(node);
    }
}

/* Options a parent passes on to the children it opens inline, unless the
 * child sets them itself (QEMU does the same). */
static void inherit_options(StrataNode *parent, OptNode *child_opts)
{
    if (parent->read_only) {
        opts_set_default_str(child_opts, "read-only", "on", NULL);
    }
    if (parent->auto_read_only) {
        opts_set_default_str(child_opts, "auto-read-only", "on", NULL);
    }
    if (parent->force_share) {
        opts_set_default_str(child_opts, "force-share", "on", NULL);
    }
    opts_set_default_str(child_opts, "cache.direct",
                         parent->cache_direct ? "on" : "off", NULL);
    opts_set_default_str(child_opts, "cache.no-flush",
                         parent->cache_no_flush ? "on" : "off", NULL);
    /* QEMU passes the discard mode down too: "unmap" on a raw node means
     * the file below it may punch holes. */
    opts_set_default_str(child_opts, "discard",
                         parent->discard == DISCARD_UNMAP ? "unmap" : "ignore", NULL);
}

BlockChild *block_open_child(StrataNode *parent, OptNode *opts, const char *key,
                             const char *role, bool required, StrataError **errp)
{
    OptNode *sub = opts_get(opts, key);
    StrataNode *child;
    const char *path = sub ? opts_path(sub) : key;

    if (!sub) {
        if (required) {
            error_set_option(errp, "%s%s%s: missing",
                             opts_path(opts), *opts_path(opts) ? "." : "", key);
        }
        return NULL;
    }

    if (opts_type(sub) == OPT_STRING) {
        const char *name = opts_scalar_str(sub);
        child = node_find(parent->ctx, name);
        if (!child) {
            error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT,
                      "%s: no node named '%s'", path, name);
            return NULL;
        }
        node_ref(child);
    } else if (opts_type(sub) == OPT_OBJECT) {
        inherit_options(parent, sub);
        child = block_open(parent->ctx, sub, errp);
        if (!child) {
            return NULL;
        }
    } else {
        error_set_option(errp, "%s: expected an object or a node-name", path);
        return NULL;
    }

    /* Until a parent above takes permissions, the edge takes nothing. */
    BlockChild *c = node_attach_child(parent, child, role, 0, PERM_ALL, errp);
    node_unref(child);   /* the edge holds the reference now */
    if (c && parent->drv->child_role && !strcmp(role, parent->drv->child_role)) {
        parent->file = c;
    }
    return c;
}

/*
 * Limits the request path cannot honour fail the open rather than a later
 * request: pool buffers are page aligned, and a transfer limit below the
 * memory alignment leaves no legal place to split.
 */
static bool limits_supported(StrataNode *node, StrataError **errp)
{
    const BlockLimits *bl = &node->bl;
    long page = sysconf(_SC_PAGESIZE);

    if (bl->request_alignment > BLOCK_MAX_REQUEST_ALIGN) {
        /* Only a device could say so: the options stop at the cap. */
        error_set_option(errp, "Node '%s': request alignment %u above %u is "
                         "not supported", node->node_name,
                         bl->request_alignment, BLOCK_MAX_REQUEST_ALIGN);
        return false;
    }
    if (bl->mem_alignment > (uint32_t)page) {
        error_set_option(errp, "Node '%s': memory alignment %u above the page "
                         "size (%ld) is not supported", node->node_name,
                         bl->mem_alignment, page);
        return false;
    }
    if (bl->max_transfer &&
        bl->max_transfer < (int64_t)MAX(bl->mem_alignment, bl->iov_len_alignment)) {
        error_set_option(errp, "Node '%s': max-transfer %" G_GINT64_FORMAT
                         " is below the memory alignment (%u)", node->node_name,
                         bl->max_transfer, MAX(bl->mem_alignment, bl->iov_len_alignment));
        return false;
    }
    return true;
}

static char *auto_node_name(StrataContext *ctx)
{
    return g_strdup_printf("#block%03" G_GUINT64_FORMAT, ctx->next_auto_name++);
}

static bool open_common_options(StrataNode *node, OptNode *opts, StrataError **errp)
{
    int discard, detect;

    if (!opts_get_bool(opts, "read-only", false, &node->read_only, errp) ||
        !opts_get_bool(opts, "auto-read-only", false, &node->auto_read_only,
                       errp) ||
        !opts_get_bool(opts, "force-share", false, &node->force_share, errp) ||
        !opts_get_bool(opts, "rmw-coalesce", true, &node->rmw_coalesce, errp) ||
        !opts_get_enum(opts, "discard", discard_names, 0, &discard, errp) ||
        !opts_get_enum(opts, "detect-zeroes", detect_zeroes_names, 0, &detect, errp)) {
        return false;
    }
    OptNode *cache = opts_get(opts, "cache");
    if (cache && (!opts_get_bool(cache, "direct", false, &node->cache_direct, errp) ||
                  !opts_get_bool(cache, "no-flush", false, &node->cache_no_flush, errp))) {
        return false;
    }
    if (node->force_share && !node->read_only) {
        error_set_option(errp, "%s%sforce-share: 'on' needs read-only=on",
                         opts_path(opts), *opts_path(opts) ? "." : "");
        return false;
    }
    node->discard = discard >= 2 ? DISCARD_UNMAP : DISCARD_IGNORE;
    node->detect_zeroes = (DetectZeroes)detect;
    if (node->detect_zeroes == DETECT_ZEROES_UNMAP && node->discard != DISCARD_UNMAP) {
        error_set_option(errp, "%s%sdetect-zeroes: 'unmap' needs discard=unmap",
                         opts_path(opts), *opts_path(opts) ? "." : "");
        return false;
    }
    return true;
}

StrataNode *block_open(StrataContext *ctx, OptNode *opts, StrataError **errp)
{
    const char *drvname, *name;
    const char *prefix = opts_path(opts);
    const char *dot = *prefix ? "." : "";

    /* Graph changes happen in the thread that owns the context's loop
     * (strata_context_call gets there from any other). */
    g_assert(loop_is_owner(ctx->loop));
    if (opts_type(opts) != OPT_OBJECT) {
        error_set_option(errp, "%s: expected an object", *prefix ? prefix : "options");
        return NULL;
    }
    /* A node given only a filename gets its protocol driver by probing,
     * as QEMU opens a child named by filename alone. */
    OptNode *fn = opts_peek(opts, "filename");
    if (!opts_has(opts, "driver") && fn && opts_type(fn) == OPT_STRING &&
        !opts_set_str(opts, "driver",
                      block_probe_protocol(opts_scalar_str(fn)), errp)) {
        return NULL;
    }
    if (!opts_require_str(opts, "driver", &drvname, errp)) {
        return NULL;
    }
    const BlockDriver *drv = block_driver_find(drvname);
    const SchemaDriver *sdrv = drv ? schema_find_driver(drv->schema ? drv->schema
                                                                     : drv->name)
                                   : NULL;
    if (!drv || !sdrv) {
        g_autofree char *names = schema_driver_names();
        error_set(errp, STRATA_ERROR_INVALID_OPTION, EINVAL,
                  "%s%sdriver: unknown driver '%s' (expected one of %s)",
                  prefix, dot, drvname, names);
        return NULL;
    }
    if (!schema_validate_node(opts, sdrv, errp)) {
        return NULL;
    }

    if (!opts_get_str(opts, "node-name", NULL, &name, errp)) {
        return NULL;
    }
    if (name && !node_name_valid(name)) {
        error_set_option(errp, "%s%snode-name: invalid name '%s' (a letter, then "
                         "letters, digits, '-', '.' or '_'; at most 31)",
                         prefix, dot, name);
        return NULL;
    }
    if (name && node_find(ctx, name)) {
        error_set_option(errp, "%s%snode-name: a node named '%s' already exists",
                         prefix, dot, name);
        return NULL;
    }

    StrataNode *node = g_new0(StrataNode, 1);
    node->drv = drv;
    node->ctx = ctx;
    node->refcnt = 1;
    node->total_bytes = -1;
    node->options = opts_clone(opts);
    node->opaque = g_malloc0(MAX(drv->instance_size, 1));
    node->shared_perm = PERM_ALL;
    co_queue_init(&node->flush_queue);
    spin_init(&node->lock);
    /* Lock-free tracking while one queue uses the node, where the kernel
     * offers the fence the switch needs (block/io.c, "Locking mode"). */
    node->shard_locking = !io_lockfree_tracking();
    if (name) {
        node->node_name = g_strdup(name);
    } else {
        node->node_name = auto_node_name(ctx);
        node->auto_named = true;
    }
    g_hash_table_insert(ctx->nodes, node->node_name, node);
    limits_defaults(&node->bl);

    if (!open_common_options(node, opts, errp)) {
        goto fail;
    }
    if (drv->open && !drv->open(node, opts, errp)) {
        goto fail;
    }
    if (!opts_check_consumed(opts, errp)) {
        if (drv->close) {
            drv->close(node);
        }
        goto fail;
    }
    node_refresh_limits(node);
    if (!limits_supported(node, errp)) {
        if (drv->close) {
            drv->close(node);
        }
        goto fail;
    }
    node->total_bytes = -1;
    node_get_length(node);
    return node;

fail:
    while (node->children) {
        node_detach_child(node->children->data);
    }
    node_free(node);
    return NULL;
}

/* ---- public API ------------------------------------------------------------------ */

static StrataNode *open_tree(StrataContext *ctx, OptNode *opts, StrataError **errp)
{
    if (!opts) {
        return NULL;
    }
    StrataNode *node = block_open(ctx, opts, errp);
    opts_unref(opts);
    return node;
}

STRATA_EXPORT StrataNode *strata_node_open_json(StrataContext *ctx, const char *json,
                                                StrataError **errp)
{
    return open_tree(ctx, opts_parse_json(json, errp), errp);
}

STRATA_EXPORT StrataNode *strata_node_open_dotted(StrataContext *ctx, const char *keys,
                                                  StrataError **errp)
{
    return open_tree(ctx, opts_parse_dotted(keys, errp), errp);
}

STRATA_EXPORT StrataNode *strata_node_open_filename(StrataContext *ctx,
                                                    const char *filename,
                                                    const char *options_json,
                                                    StrataError **errp)
{
    OptNode *opts = options_json ? opts_parse_json(options_json, errp)
                                 : opts_new_object();

    if (opts && opts_type(opts) != OPT_OBJECT) {
        error_set_option(errp, "options: expected an object");
        opts_unref(opts);
        return NULL;
    }
    if (opts && !block_options_add_filename(opts, filename, "raw", errp)) {
        opts_unref(opts);
        return NULL;
    }
    return open_tree(ctx, opts, errp);
}

STRATA_EXPORT StrataNode *strata_node_find(StrataContext *ctx, const char *name)
{
    return node_find(ctx, name);
}

STRATA_EXPORT void strata_node_ref(StrataNode *node)
{
    node_ref(node);
}

STRATA_EXPORT void strata_node_unref(StrataNode *node)
{
    node_unref(node);
}

STRATA_EXPORT const char *strata_node_get_name(const StrataNode *node)
{
    return node->node_name;
}

STRATA_EXPORT const char *strata_node_get_driver(const StrataNode *node)
{
    return node->drv->name;
}

STRATA_EXPORT int64_t strata_node_get_length(StrataNode *node)
{
    return node_get_length(node);
}

STRATA_EXPORT void strata_node_get_limits(const StrataNode *node, StrataLimits *out)
{
    const BlockLimits *bl = &node->bl;
    *out = (StrataLimits) {
        .request_alignment = bl->request_alignment,
        .mem_alignment = bl->mem_alignment,
        .iov_len_alignment = bl->iov_len_alignment,
        .max_transfer = bl->max_transfer,
        .opt_transfer = bl->opt_transfer,
        .max_iov = bl->max_iov,
        .pwrite_zeroes_alignment = bl->pwrite_zeroes_alignment,
        .max_pwrite_zeroes = bl->max_pwrite_zeroes,
        .pdiscard_alignment = bl->pdiscard_alignment,
        .max_pdiscard = bl->max_pdiscard,
        .opt_mem_alignment = bl->opt_mem_alignment,
        .logical_block_size = bl->logical_block_size,
        .physical_block_size = bl->physical_block_size,
    };
}

STRATA_EXPORT void strata_node_get_stats(const StrataNode *node, StrataStats *out)
{
    G_STATIC_ASSERT((int)STRATA_STATS__MAX == (int)REQ_TYPE__MAX);
    G_STATIC_ASSERT(STRATA_STATS_HIST_BUCKETS == STATS_HIST_BUCKETS);
    BlockStats st;

    memset(out, 0, sizeof(*out));
    node_stats_merge(node, &st);
    for (int i = 0; i < REQ_TYPE__MAX; i++) {
        const BlockOpStats *s = &st.op[i];
        out->op[i].ops = s->ops;
        out->op[i].bytes = s->bytes;
        out->op[i].errors = s->errors;
        out->op[i].total_ns = s->total_ns;
        memcpy(out->op[i].hist, s->hist, sizeof(s->hist));
    }
    const BlockPadStats *p = &st.pad;
    out->padded_reads = p->padded_reads;
    out->rmw_writes = p->rmw_writes;
    out->serialising_waits = p->serialising_waits;
    out->coalesced_writes = p->coalesced_writes;
    out->bytes_bounced = p->bytes_bounced;
    out->vectors_collapsed = p->vectors_collapsed;
    out->pool_waits = p->pool_waits;
    out->split_requests = p->split_requests;
}
