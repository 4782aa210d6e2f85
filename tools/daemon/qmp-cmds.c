/*
 * QMP command handlers (SPDX-License-Identifier: MIT).  See qmp-cmds.h.
 */
#include "tools/daemon/qmp-cmds.h"

#include <dlfcn.h>
#include <inttypes.h>
#include <string.h>

#include "block/backend-int.h"
#include "block/export/export.h"
#include "block/export/nbd.h"
#include "block/export/vhost-user-blk.h"
#include "block/object.h"
#include "block/throttle-group.h"
#include "qapi/schema.h"
#include "tools/daemon/daemon.h"

const char *qmp_error_class;
bool (*qmp_command_filter)(const char *name, OptNode *args);

/* ---- argument validation (QEMU's words) ----------------------------------- */

static bool check_value(const SchemaMember *m, OptNode *val, const char *path,
                        StrataError **errp);

static bool check_members(const SchemaMember *const *lists, int n,
                          OptNode *obj, const char *prefix,
                          StrataError **errp)
{
    /* Schema order first, as QEMU's visitor: types and missing members;
     * then the keys nobody declared. */
    for (int l = 0; l < n; l++) {
        for (const SchemaMember *m = lists[l]; m->name; m++) {
            g_autofree char *path = g_strconcat(prefix, m->name, NULL);
            OptNode *val = opts_peek(obj, m->name);
            if (!val) {
                if (m->required) {
                    error_set_option(errp, "Parameter '%s' is missing", path);
                    return false;
                }
                continue;
            }
            if (!check_value(m, val, path, errp)) {
                return false;
            }
        }
    }
    for (guint i = 0; i < opts_object_size(obj); i++) {
        const char *key = opts_object_key(obj, i);
        bool known = false;
        for (int l = 0; l < n && !known; l++) {
            known = schema_find_member(lists[l], key) != NULL;
        }
        if (!known) {
            error_set_option(errp, "Parameter '%s%s' is unexpected", prefix,
                             key);
            return false;
        }
    }
    return true;
}

static bool type_error(const char *path, const char *expected,
                       StrataError **errp)
{
    error_set_option(errp, "Invalid parameter type for '%s', expected: %s",
                     path, expected);
    return false;
}

static bool check_value(const SchemaMember *m, OptNode *val, const char *path,
                        StrataError **errp)
{
    OptType t = opts_type(val);

    switch (m->type) {
    case SCHEMA_TYPE_BOOL:
        return t == OPT_BOOL || type_error(path, "boolean", errp);
    case SCHEMA_TYPE_INT:
    case SCHEMA_TYPE_SIZE: {
        if (t != OPT_INT) {
            return type_error(path, "integer", errp);
        }
        int64_t v = g_ascii_strtoll(opts_scalar_str(val), NULL, 10);
        if ((m->has_min && v < m->min) ||
            (m->type == SCHEMA_TYPE_SIZE && v < 0)) {
            error_set_option(errp, "Parameter '%s' must be at least %" PRId64,
                             path, m->has_min ? m->min : 0);
            return false;
        }
        if (m->has_max && v > m->max) {
            error_set_option(errp, "Parameter '%s' must be at most %" PRId64,
                             path, m->max);
            return false;
        }
        if (m->power_of_2 && (v <= 0 || (v & (v - 1)))) {
            error_set_option(errp, "Parameter '%s' must be a power of two",
                             path);
            return false;
        }
        return true;
    }
    case SCHEMA_TYPE_STRING:
        return t == OPT_STRING || type_error(path, "string", errp);
    case SCHEMA_TYPE_ENUM:
        if (t != OPT_STRING) {
            return type_error(path, "string", errp);
        }
        for (const char *const *v = m->values; *v; v++) {
            if (!strcmp(*v, opts_scalar_str(val))) {
                return true;
            }
        }
        error_set_option(errp, "Parameter '%s' does not accept value '%s'",
                         path, opts_scalar_str(val));
        return false;
    case SCHEMA_TYPE_OBJECT: {
        if (t != OPT_OBJECT) {
            return type_error(path, "object", errp);
        }
        g_autofree char *prefix = g_strconcat(path, ".", NULL);
        const SchemaMember *lists[] = { m->members };
        return check_members(lists, 1, val, prefix, errp);
    }
    case SCHEMA_TYPE_LIST:
        if (t != OPT_LIST) {
            return type_error(path, "array", errp);
        }
        for (guint i = 0; i < opts_list_length(val); i++) {
            OptNode *el = opts_list_get(val, i);
            g_autofree char *elpath = g_strdup_printf("%s[%u]", path, i);
            if (opts_type(el) != OPT_OBJECT) {
                return type_error(elpath, "object", errp);
            }
            g_autofree char *prefix = g_strconcat(elpath, ".", NULL);
            const SchemaMember *lists[] = { m->members };
            if (!check_members(lists, 1, el, prefix, errp)) {
                return false;
            }
        }
        return true;
    case SCHEMA_TYPE_CHILD:
        /* The child's own open checks its members. */
        return t == OPT_OBJECT || t == OPT_STRING ||
               type_error(path, "object or string", errp);
    case SCHEMA_TYPE_ANY:
        return true;
    }
    return true;
}

/* The discriminator of a union: a required string naming a variant. */
static const char *check_tag(OptNode *args, const char *tag,
                             StrataError **errp)
{
    OptNode *val = opts_peek(args, tag);

    if (!val) {
        error_set_option(errp, "Parameter '%s' is missing", tag);
        return NULL;
    }
    if (opts_type(val) != OPT_STRING) {
        type_error(tag, "string", errp);
        return NULL;
    }
    return opts_scalar_str(val);
}

static const SchemaDriver *find_variant(const SchemaDriver *table,
                                        const char *name)
{
    for (const SchemaDriver *d = table; d->name; d++) {
        if (!strcmp(d->name, name)) {
            return d;
        }
    }
    return NULL;
}

static const SchemaMember object_head_members[] = {
    { .name = "qom-type", .type = SCHEMA_TYPE_STRING, .required = true },
    { .name = "id", .type = SCHEMA_TYPE_STRING, .required = true },
    { .name = NULL },
};

bool qmp_validate_args(const QmpCommandSchema *cmd, OptNode *args,
                       StrataError **errp)
{
    const SchemaDriver *variant = NULL;
    const char *tag_name = NULL, *tag;
    const SchemaMember *head = NULL;

    switch (cmd->args_kind) {
    case QMP_ARGS_MEMBERS: {
        const SchemaMember *lists[] = { cmd->args };
        return check_members(lists, 1, args, "", errp);
    }
    case QMP_ARGS_BLOCKDEV:
        tag_name = "driver";
        head = schema_common_members();
        break;
    case QMP_ARGS_EXPORT:
        tag_name = "type";
        head = qmp_export_common_members;
        break;
    case QMP_ARGS_OBJECT:
        tag_name = "qom-type";
        head = object_head_members;
        break;
    }
    tag = check_tag(args, tag_name, errp);
    if (!tag) {
        return false;
    }
    variant = cmd->args_kind == QMP_ARGS_BLOCKDEV ? schema_find_driver(tag)
            : find_variant(cmd->args_kind == QMP_ARGS_EXPORT
                           ? qmp_export_schemas : qmp_object_schemas, tag);
    if (!variant) {
        error_set_option(errp, "Parameter '%s' does not accept value '%s'",
                         tag_name, tag);
        return false;
    }
    const SchemaMember *lists[] = { head, variant->members };
    return check_members(lists, 2, args, "", errp);
}

/* ---- JSON building helpers ---------------------------------------------- */

JsonNode *qmp_empty_object(void)
{
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(n, json_object_new());
    return n;
}

static void jb_str(JsonBuilder *b, const char *key, const char *val)
{
    json_builder_set_member_name(b, key);
    json_builder_add_string_value(b, val);
}

static void jb_int(JsonBuilder *b, const char *key, int64_t val)
{
    json_builder_set_member_name(b, key);
    json_builder_add_int_value(b, val);
}

static void jb_bool(JsonBuilder *b, const char *key, bool val)
{
    json_builder_set_member_name(b, key);
    json_builder_add_boolean_value(b, val);
}

static JsonNode *jb_finish(JsonBuilder *b)
{
    JsonNode *n = json_builder_get_root(b);
    g_object_unref(b);
    return n;
}

/* ---- commands --------------------------------------------------------------- */

static JsonNode *qmp_query_version(OptNode *args, StrataError **errp)
{
    JsonBuilder *b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "qemu");
    json_builder_begin_object(b);
    jb_int(b, "micro", STRATA_VERSION_MICRO);
    jb_int(b, "minor", STRATA_VERSION_MINOR);
    jb_int(b, "major", STRATA_VERSION_MAJOR);
    json_builder_end_object(b);
    g_autofree char *package = g_strdup_printf("Strata %s",
                                               strata_version_string());
    jb_str(b, "package", package);
    json_builder_end_object(b);
    return jb_finish(b);
}

static JsonNode *qmp_query_commands(OptNode *args, StrataError **errp)
{
    JsonBuilder *b = json_builder_new();

    json_builder_begin_array(b);
    for (const QmpCommandSchema *c = qmp_command_schemas; c->name; c++) {
        json_builder_begin_object(b);
        jb_str(b, "name", c->name);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    return jb_finish(b);
}

static JsonNode *qmp_query_qmp_schema(OptNode *args, StrataError **errp)
{
    return json_from_string(qmp_introspection_json, NULL);
}

static JsonNode *qmp_quit(OptNode *args, StrataError **errp)
{
    daemon_request_shutdown(SHUTDOWN_QMP_QUIT);
    return qmp_empty_object();
}

static JsonNode *qmp_blockdev_add(OptNode *args, StrataError **errp)
{
    return daemon_blockdev_add(args, errp) ? qmp_empty_object() : NULL;
}

static JsonNode *qmp_blockdev_del(OptNode *args, StrataError **errp)
{
    const char *name = opts_scalar_str(opts_peek(args, "node-name"));
    return daemon_blockdev_del(name, errp) ? qmp_empty_object() : NULL;
}

static StrataNode *find_node(const char *name, StrataError **errp)
{
    StrataNode *node = node_find(daemon_state.ctx, name);

    if (!node) {
        error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT,
                  "Cannot find device='' nor node-name='%s'", name);
    }
    return node;
}

static JsonNode *qmp_blockdev_reopen(OptNode *args, StrataError **errp)
{
    OptNode *list = opts_peek(args, "options");
    guint n;

    if (opts_type(list) != OPT_LIST) {
        type_error("options", "array", errp);
        return NULL;
    }
    n = opts_list_length(list);
    StrataNode **nodes = g_new0(StrataNode *, n + 1);
    OptNode **old = g_new0(OptNode *, n + 1);
    bool ok = true;
    guint done = 0;

    /* Check every element before changing anything. */
    for (guint i = 0; i < n && ok; i++) {
        OptNode *el = opts_list_get(list, i);
        OptNode *name = opts_peek(el, "node-name");
        if (opts_type(el) != OPT_OBJECT) {
            g_autofree char *path = g_strdup_printf("options[%u]", i);
            ok = type_error(path, "object", errp);
        } else if (!name || opts_type(name) != OPT_STRING) {
            error_set_option(errp, "options[%u]: node-name is needed to "
                             "reopen a node", i);
            ok = false;
        } else if (!(nodes[i] = find_node(opts_scalar_str(name), errp))) {
            ok = false;
        }
    }
    /* All change or none: on a failure, those already changed get their
     * previous options back. */
    for (guint i = 0; i < n && ok; i++) {
        g_autoptr(OptNode) changes = opts_clone(opts_list_get(list, i));
        old[i] = opts_clone(nodes[i]->options);
        if (!node_reopen(nodes[i], changes, errp)) {
            ok = false;
            break;
        }
        done++;
    }
    for (guint i = done; !ok && i-- > 0;) {
        g_autoptr(OptNode) back = opts_clone(old[i]);
        node_reopen(nodes[i], back, NULL);
    }
    for (guint i = 0; i < n; i++) {
        opts_unref(old[i]);
    }
    g_free(old);
    g_free(nodes);
    return ok ? qmp_empty_object() : NULL;
}

static const char *const detect_zeroes_str[] = { "off", "on", "unmap" };

static const char *node_filename(StrataNode *node)
{
    while (node->file) {
        node = node->file->node;
    }
    OptNode *f = opts_peek(node->options, "filename");
    if (f && opts_type(f) == OPT_STRING) {
        return opts_scalar_str(f);
    }
    return NULL;
}

static gint node_cmp(gconstpointer a, gconstpointer b)
{
    const StrataNode *na = a, *nb = b;
    return strcmp(na->node_name, nb->node_name);
}

/* Named nodes, sorted by name (a stable order for clients and tests). */
static GList *sorted_nodes(void)
{
    GList *l = g_hash_table_get_values(daemon_state.ctx->nodes);
    return g_list_sort(l, node_cmp);
}

static void build_node_info(JsonBuilder *b, StrataNode *node)
{
    const char *filename = node_filename(node);
    g_autofree char *pseudo = g_strdup_printf("%s://", node->drv->name);
    int64_t len = node_get_length(node);

    if (!filename) {
        filename = pseudo;
    }
    json_builder_begin_object(b);
    jb_str(b, "node-name", node->node_name);
    jb_str(b, "drv", node->drv->name);
    jb_str(b, "file", filename);
    jb_bool(b, "ro", node->read_only);
    jb_bool(b, "encrypted", false);
    jb_str(b, "detect_zeroes", detect_zeroes_str[node->detect_zeroes]);
    json_builder_set_member_name(b, "cache");
    json_builder_begin_object(b);
    jb_bool(b, "writeback", true);
    jb_bool(b, "direct", node->cache_direct);
    jb_bool(b, "no-flush", node->cache_no_flush);
    json_builder_end_object(b);
    json_builder_set_member_name(b, "image");
    json_builder_begin_object(b);
    jb_str(b, "filename", filename);
    jb_str(b, "format", node->drv->name);
    jb_int(b, "virtual-size", len < 0 ? 0 : len);
    jb_bool(b, "dirty-flag", false);
    json_builder_end_object(b);
    jb_int(b, "backing_file_depth", 0);
    static const char *const zero_keys[] = {
        "bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr",
        "write_threshold",
    };
    for (unsigned i = 0; i < G_N_ELEMENTS(zero_keys); i++) {
        jb_int(b, zero_keys[i], 0);
    }
    json_builder_end_object(b);
}

static JsonNode *qmp_query_named_block_nodes(OptNode *args,
                                             StrataError **errp)
{
    JsonBuilder *b = json_builder_new();
    GList *nodes = sorted_nodes();

    json_builder_begin_array(b);
    for (GList *l = nodes; l; l = l->next) {
        build_node_info(b, l->data);
    }
    json_builder_end_array(b);
    g_list_free(nodes);
    return jb_finish(b);
}

static void notify_resized(BlockExport *exp, void *opaque)
{
    vhost_user_blk_resized(exp);    /* a no-op for other types */
}

static JsonNode *qmp_block_resize(OptNode *args, StrataError **errp)
{
    const char *name = opts_scalar_str(opts_peek(args, "node-name"));
    int64_t size = g_ascii_strtoll(opts_scalar_str(opts_peek(args, "size")),
                                   NULL, 10);
    StrataNode *node = find_node(name, errp);

    if (!node) {
        return NULL;
    }
    StrataBackend *be = strata_backend_new(node, "block_resize",
                                           STRATA_PERM_RESIZE,
                                           STRATA_PERM_ALL, errp);
    if (!be) {
        return NULL;
    }
    int ret = strata_backend_truncate(be, size);
    strata_backend_free(be);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Cannot resize node '%s' to %" PRId64,
                         name, size);
        return NULL;
    }
    /* vhost-user-blk front ends learn the new capacity (CONFIG_CHANGE_MSG);
     * the export ignores a resize that did not change its length. */
    export_foreach(notify_resized, NULL);
    return qmp_empty_object();
}

static void build_stats(JsonBuilder *b, StrataNode *node)
{
    StrataStats st;
    const StrataOpStats *rd, *wr, *wz, *fl, *dc;

    strata_node_get_stats(node, &st);
    rd = &st.op[STRATA_STATS_READ];
    wr = &st.op[STRATA_STATS_WRITE];
    wz = &st.op[STRATA_STATS_ZEROES];
    fl = &st.op[STRATA_STATS_FLUSH];
    dc = &st.op[STRATA_STATS_DISCARD];

    json_builder_begin_object(b);
    jb_str(b, "node-name", node->node_name);
    json_builder_set_member_name(b, "stats");
    json_builder_begin_object(b);
    jb_int(b, "rd_bytes", rd->bytes);
    jb_int(b, "wr_bytes", wr->bytes + wz->bytes);
    jb_int(b, "unmap_bytes", dc->bytes);
    jb_int(b, "rd_operations", rd->ops);
    jb_int(b, "wr_operations", wr->ops + wz->ops);
    jb_int(b, "flush_operations", fl->ops);
    jb_int(b, "unmap_operations", dc->ops);
    jb_int(b, "rd_total_time_ns", rd->total_ns);
    jb_int(b, "wr_total_time_ns", wr->total_ns + wz->total_ns);
    jb_int(b, "flush_total_time_ns", fl->total_ns);
    jb_int(b, "unmap_total_time_ns", dc->total_ns);
    jb_int(b, "failed_rd_operations", rd->errors);
    jb_int(b, "failed_wr_operations", wr->errors + wz->errors);
    jb_int(b, "failed_flush_operations", fl->errors);
    jb_int(b, "failed_unmap_operations", dc->errors);
    static const char *const zero_keys[] = {
        "wr_highest_offset", "rd_merged", "wr_merged", "unmap_merged",
        "invalid_rd_operations", "invalid_wr_operations",
        "invalid_flush_operations", "invalid_unmap_operations",
    };
    for (unsigned i = 0; i < G_N_ELEMENTS(zero_keys); i++) {
        jb_int(b, zero_keys[i], 0);
    }
    jb_bool(b, "account_invalid", false);
    jb_bool(b, "account_failed", true);
    json_builder_set_member_name(b, "timed_stats");
    json_builder_begin_array(b);
    json_builder_end_array(b);
    json_builder_end_object(b);

    json_builder_set_member_name(b, "x-strata-padding");
    json_builder_begin_object(b);
    jb_int(b, "padded-reads", st.padded_reads);
    jb_int(b, "rmw-writes", st.rmw_writes);
    jb_int(b, "serialising-waits", st.serialising_waits);
    jb_int(b, "coalesced-writes", st.coalesced_writes);
    jb_int(b, "bytes-bounced", st.bytes_bounced);
    jb_int(b, "vectors-collapsed", st.vectors_collapsed);
    jb_int(b, "pool-waits", st.pool_waits);
    jb_int(b, "split-requests", st.split_requests);
    json_builder_end_object(b);
    if (node->file) {
        json_builder_set_member_name(b, "parent");
        build_stats(b, node->file->node);
    }
    json_builder_end_object(b);
}

static JsonNode *qmp_query_blockstats(OptNode *args, StrataError **errp)
{
    JsonBuilder *b = json_builder_new();
    GList *nodes = sorted_nodes();

    json_builder_begin_array(b);
    for (GList *l = nodes; l; l = l->next) {
        build_stats(b, l->data);
    }
    json_builder_end_array(b);
    g_list_free(nodes);
    return jb_finish(b);
}

static JsonNode *qmp_block_export_add(OptNode *args, StrataError **errp)
{
    return export_add(daemon_state.ctx, args, errp) ? qmp_empty_object()
                                                     : NULL;
}

static JsonNode *qmp_block_export_del(OptNode *args, StrataError **errp)
{
    OptNode *mode = opts_peek(args, "mode");
    bool hard = mode && !strcmp(opts_scalar_str(mode), "hard");

    return export_del(opts_scalar_str(opts_peek(args, "id")), hard, errp)
           ? qmp_empty_object() : NULL;
}

static void build_export(BlockExport *exp, void *opaque)
{
    JsonBuilder *b = opaque;

    json_builder_begin_object(b);
    jb_str(b, "type", exp->drv->type);
    jb_str(b, "id", exp->id);
    jb_str(b, "node-name", exp->node_name);
    jb_bool(b, "shutting-down", exp->shutting_down);
    json_builder_end_object(b);
}

/* A JSON array of the objects @foreach visits, each built by @build
 * (which gets the JsonBuilder as its opaque). */
#define JB_ARRAY_OF(foreach, build) ({                  \
        JsonBuilder *b_ = json_builder_new();           \
        json_builder_begin_array(b_);                   \
        foreach(build, b_);                             \
        json_builder_end_array(b_);                     \
        jb_finish(b_);                                  \
    })

static JsonNode *qmp_query_block_exports(OptNode *args, StrataError **errp)
{
    return JB_ARRAY_OF(export_foreach, build_export);
}

static void build_iothread(StrataObject *obj, void *opaque)
{
    JsonBuilder *b = opaque;
    IothreadInfo info;

    if (object_get_kind(obj) != OBJECT_IOTHREAD) {
        return;
    }
    iothread_get_info(obj, &info);
    json_builder_begin_object(b);
    jb_str(b, "id", object_get_id(obj));
    jb_int(b, "thread-id", info.thread_id);
    jb_int(b, "poll-max-ns", info.poll_max_ns);
    jb_int(b, "poll-grow", info.poll_grow);
    jb_int(b, "poll-shrink", info.poll_shrink);
    jb_int(b, "aio-max-batch", info.aio_max_batch);
    json_builder_end_object(b);
}

static JsonNode *qmp_query_iothreads(OptNode *args, StrataError **errp)
{
    return JB_ARRAY_OF(object_foreach, build_iothread);
}

static JsonNode *qmp_x_block_export_resume(OptNode *args, StrataError **errp)
{
    return export_resume(opts_scalar_str(opts_peek(args, "id")), errp)
           ? qmp_empty_object() : NULL;
}

static JsonNode *qmp_nbd_server_start(OptNode *args, StrataError **errp)
{
    return nbd_server_start(daemon_state.ctx, args, errp)
           ? qmp_empty_object() : NULL;
}

static JsonNode *qmp_nbd_server_stop(OptNode *args, StrataError **errp)
{
    return nbd_server_stop(errp) ? qmp_empty_object() : NULL;
}

static JsonNode *qmp_object_add(OptNode *args, StrataError **errp)
{
    return object_add(args, errp) ? qmp_empty_object() : NULL;
}

static JsonNode *qmp_object_del(OptNode *args, StrataError **errp)
{
    return object_del(opts_scalar_str(opts_peek(args, "id")), errp)
           ? qmp_empty_object() : NULL;
}

static const char *object_parent_type(const char *type)
{
    return g_str_has_prefix(type, "tls-creds-") ? "tls-creds" : "object";
}

static JsonNode *qmp_qom_list_types(OptNode *args, StrataError **errp)
{
    OptNode *impl = opts_peek(args, "implements");
    const char *want = impl ? opts_scalar_str(impl) : NULL;
    JsonBuilder *b = json_builder_new();

    json_builder_begin_array(b);
    for (const SchemaDriver *o = qmp_object_schemas; o->name; o++) {
        const char *parent = object_parent_type(o->name);
        if (want && strcmp(want, o->name) && strcmp(want, parent) &&
            strcmp(want, "object") && strcmp(want, "user-creatable")) {
            continue;
        }
        json_builder_begin_object(b);
        jb_str(b, "name", o->name);
        jb_str(b, "parent", parent);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    return jb_finish(b);
}

static void build_object_entry(StrataObject *obj, void *opaque)
{
    JsonBuilder *b = opaque;
    g_autofree char *type = g_strdup_printf(
        "child<%s>", object_kind_names[object_get_kind(obj)]);

    json_builder_begin_object(b);
    jb_str(b, "name", object_get_id(obj));
    jb_str(b, "type", type);
    json_builder_end_object(b);
}

static JsonNode *qmp_qom_list(OptNode *args, StrataError **errp)
{
    const char *path = opts_scalar_str(opts_peek(args, "path"));
    JsonBuilder *b;

    if (strcmp(path, "/objects") && strcmp(path, "/objects/")) {
        error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT,
                  "Device '%s' not found", path);
        qmp_error_class = "DeviceNotFound";
        return NULL;
    }
    b = json_builder_new();
    json_builder_begin_array(b);
    object_foreach(build_object_entry, b);
    json_builder_end_array(b);
    return jb_finish(b);
}

/* QEMU resolves a path to one object: "/objects/ID" or, as a partial
 * path, "ID". */
static JsonNode *qmp_qom_set(OptNode *args, StrataError **errp)
{
    const char *path = opts_scalar_str(opts_peek(args, "path"));
    const char *prop = opts_scalar_str(opts_peek(args, "property"));
    OptNode *value = opts_get(args, "value");
    const char *id = path;
    StrataObject *obj;
    ObjectKind kind;

    if (g_str_has_prefix(id, "/objects/")) {
        id += strlen("/objects/");
    }
    /* Which kind is @id (object_use() checks one kind at a time)? */
    for (kind = 0; kind < OBJECT_KIND__MAX; kind++) {
        obj = object_use(id, kind, "qom-set", NULL);
        if (obj) {
            object_unuse(obj, "qom-set");
            break;
        }
    }
    if (kind == OBJECT_KIND__MAX) {
        error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT,
                  "Device '%s' not found", path);
        qmp_error_class = "DeviceNotFound";
        return NULL;
    }
    if (kind != OBJECT_THROTTLE_GROUP) {
        error_set_option(errp, "Property '%s.%s' cannot be set in Strata "
                         "(only throttle-group.limits can)",
                         object_kind_names[kind], prop);
        return NULL;
    }
    if (strcmp(prop, "limits")) {
        error_set_option(errp, "Property 'throttle-group.%s' not found",
                         prop);
        return NULL;
    }
    if (opts_type(value) != OPT_OBJECT) {
        error_set_option(errp, "Invalid parameter type for 'limits', "
                         "expected: object");
        return NULL;
    }
    return throttle_group_set_limits(id, value, errp) ? qmp_empty_object()
                                                      : NULL;
}

static void build_perm_list(JsonBuilder *b, const char *key, uint64_t perm)
{
    static const char *const names[] = {
        "consistent-read", "write", "write-unchanged", "resize",
    };

    json_builder_set_member_name(b, key);
    json_builder_begin_array(b);
    for (unsigned i = 0; i < G_N_ELEMENTS(names); i++) {
        if (perm & (1u << i)) {
            json_builder_add_string_value(b, names[i]);
        }
    }
    json_builder_end_array(b);
}

static void build_edge(JsonBuilder *b, int64_t parent, int64_t child,
                       const BlockChild *c)
{
    json_builder_begin_object(b);
    jb_int(b, "parent", parent);
    jb_int(b, "child", child);
    jb_str(b, "name", c->role);
    build_perm_list(b, "perm", c->perm);
    build_perm_list(b, "shared-perm", c->shared_perm);
    json_builder_end_object(b);
}

static JsonNode *qmp_x_debug_query_block_graph(OptNode *args,
                                               StrataError **errp)
{
    GList *nodes = sorted_nodes();
    GHashTable *ids = g_hash_table_new(NULL, NULL);
    JsonBuilder *b = json_builder_new();
    int64_t next = 1;

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "nodes");
    json_builder_begin_array(b);
    for (GList *l = nodes; l; l = l->next) {
        StrataNode *node = l->data;
        g_hash_table_insert(ids, node, GINT_TO_POINTER(next));
        json_builder_begin_object(b);
        jb_int(b, "id", next++);
        jb_str(b, "type", "block-driver");
        jb_str(b, "name", node->node_name);
        json_builder_end_object(b);
    }
    for (GList *l = daemon_state.ctx->backends; l; l = l->next) {
        StrataBackend *be = l->data;
        g_hash_table_insert(ids, be, GINT_TO_POINTER(next));
        json_builder_begin_object(b);
        jb_int(b, "id", next++);
        jb_str(b, "type", "block-backend");
        jb_str(b, "name", backend_get_name(be));
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    json_builder_set_member_name(b, "edges");
    json_builder_begin_array(b);
    for (GList *l = nodes; l; l = l->next) {
        StrataNode *node = l->data;
        for (GSList *c = node->children; c; c = c->next) {
            BlockChild *child = c->data;
            build_edge(b, GPOINTER_TO_INT(g_hash_table_lookup(ids, node)),
                       GPOINTER_TO_INT(g_hash_table_lookup(ids, child->node)),
                       child);
        }
        for (GSList *p = node->parents; p; p = p->next) {
            BlockChild *parent = p->data;
            if (parent->backend) {
                build_edge(b, GPOINTER_TO_INT(g_hash_table_lookup(
                                  ids, parent->backend)),
                           GPOINTER_TO_INT(g_hash_table_lookup(ids, node)),
                           parent);
            }
        }
    }
    json_builder_end_array(b);
    json_builder_end_object(b);
    g_hash_table_destroy(ids);
    g_list_free(nodes);
    return jb_finish(b);
}

static JsonNode *qmp_x_debug_malloc_count(OptNode *args, StrataError **errp)
{
    uint64_t (*get)(void) = (uint64_t (*)(void))dlsym(RTLD_DEFAULT,
                                                       "malloc_count_get");
    JsonBuilder *b;

    if (!get) {
        error_setg(errp, "the allocation counter is not loaded (run with "
                   "LD_PRELOAD=.../tests/bench/malloc-count.so)");
        return NULL;
    }
    b = json_builder_new();
    json_builder_begin_object(b);
    jb_int(b, "count", (int64_t)get());
    json_builder_end_object(b);
    return jb_finish(b);
}

/* ---- the table ------------------------------------------------------------ */

typedef struct QmpCommandImpl {
    const char *name;
    QmpHandler *handler;
} QmpCommandImpl;

/* qmp_capabilities is handled by the monitor itself (it changes the
 * connection's state). */
static const QmpCommandImpl qmp_impls[] = {
    { "query-version", qmp_query_version },
    { "query-commands", qmp_query_commands },
    { "query-qmp-schema", qmp_query_qmp_schema },
    { "quit", qmp_quit },
    { "blockdev-add", qmp_blockdev_add },
    { "blockdev-del", qmp_blockdev_del },
    { "blockdev-reopen", qmp_blockdev_reopen },
    { "query-named-block-nodes", qmp_query_named_block_nodes },
    { "block_resize", qmp_block_resize },
    { "query-blockstats", qmp_query_blockstats },
    { "block-export-add", qmp_block_export_add },
    { "block-export-del", qmp_block_export_del },
    { "query-block-exports", qmp_query_block_exports },
    { "query-iothreads", qmp_query_iothreads },
    { "x-block-export-resume", qmp_x_block_export_resume },
    { "nbd-server-start", qmp_nbd_server_start },
    { "nbd-server-stop", qmp_nbd_server_stop },
    { "object-add", qmp_object_add },
    { "object-del", qmp_object_del },
    { "qom-list-types", qmp_qom_list_types },
    { "qom-list", qmp_qom_list },
    { "qom-set", qmp_qom_set },
    { "x-strata-io", qmp_x_strata_io },
    { "x-debug-malloc-count", qmp_x_debug_malloc_count },
    { "x-debug-query-block-graph", qmp_x_debug_query_block_graph },
    { NULL, NULL },
};

QmpHandler *qmp_find_handler(const char *name)
{
    for (const QmpCommandImpl *i = qmp_impls; i->name; i++) {
        if (!strcmp(i->name, name)) {
            return i->handler;
        }
    }
    return NULL;
}

const QmpCommandSchema *qmp_find_command(const char *name)
{
    for (const QmpCommandSchema *c = qmp_command_schemas; c->name; c++) {
        if (!strcmp(c->name, name)) {
            return c;
        }
    }
    return NULL;
}
