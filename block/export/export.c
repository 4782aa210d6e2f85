/*
 * Export framework (SPDX-License-Identifier: MIT).  See export.h.
 */
#include "block/export/export.h"

#include "block/block-int.h"
#include "block/object.h"
#include "qapi/qmp-schema.h"
#include "util/loop.h"

static GPtrArray *export_drivers;       /* const BlockExportDriver * */
static GList *exports;                  /* BlockExport *, creation order */
static ExportDeletedFunc *deleted_fn;
static ExportIoErrorFunc *io_error_fn;
static void *notify_opaque;

#define EXPORT_ERROR_EVENT_INTERVAL_NS 1000000000LL

void export_register_driver(const BlockExportDriver *drv)
{
    if (!export_drivers) {
        export_drivers = g_ptr_array_new();
    }
    if (!export_find_driver(drv->type)) {
        g_ptr_array_add(export_drivers, (gpointer)drv);
    }
}

const BlockExportDriver *export_find_driver(const char *type)
{
    for (guint i = 0; export_drivers && i < export_drivers->len; i++) {
        const BlockExportDriver *drv = export_drivers->pdata[i];
        if (!strcmp(drv->type, type)) {
            return drv;
        }
    }
    return NULL;
}

void export_set_notifiers(ExportDeletedFunc *deleted,
                          ExportIoErrorFunc *io_error, void *opaque)
{
    deleted_fn = deleted;
    io_error_fn = io_error;
    notify_opaque = opaque;
}

BlockExport *export_find(const char *id)
{
    for (GList *l = exports; l; l = l->next) {
        BlockExport *exp = l->data;
        if (!strcmp(exp->id, id)) {
            return exp;
        }
    }
    return NULL;
}

int export_count(void)
{
    return (int)g_list_length(exports);
}

void export_foreach(void (*fn)(BlockExport *exp, void *opaque), void *opaque)
{
    GList *copy = g_list_copy(exports);
    for (GList *l = copy; l; l = l->next) {
        fn(l->data, opaque);
    }
    g_list_free(copy);
}

static const SchemaDriver *export_type_schema(const char *type)
{
    for (const SchemaDriver *s = qmp_export_schemas; s->name; s++) {
        if (!strcmp(s->name, type)) {
            return s;
        }
    }
    return NULL;
}

static void export_free(BlockExport *exp)
{
    if (exp->be) {
        strata_backend_free(exp->be);
    }
    if (exp->iothread) {
        g_autofree char *user = g_strdup_printf("export '%s'", exp->id);
        object_unuse(exp->iothread, user);
    }
    for (int i = 0; i < exp->niothreads; i++) {
        if (exp->iothreads[i]) {
            g_autofree char *user = g_strdup_printf("export '%s'", exp->id);
            object_unuse(exp->iothreads[i], user);
        }
    }
    g_free(exp->iothreads);
    g_free(exp->queues);
    g_free(exp->opaque);
    g_free(exp->node_name);
    g_free(exp->id);
    g_free(exp);
}

static void export_notify_deleted(void *opaque)
{
    char *id = opaque;

    if (deleted_fn) {
        deleted_fn(id, notify_opaque);
    }
    g_free(id);
}

static void export_unref(BlockExport *exp)
{
    g_assert(exp->refcnt > 0);
    if (--exp->refcnt > 0) {
        return;
    }
    exports = g_list_remove(exports, exp);
    if (exp->drv->destroy) {
        exp->drv->destroy(exp);
    }
    Loop *loop = exp->ctx->loop;
    char *id = g_strdup(exp->id);
    export_free(exp);
    /* Notified from the loop, as QEMU does: block-export-del's return
     * goes out before BLOCK_EXPORT_DELETED. */
    loop_oneshot(loop, export_notify_deleted, id);
}

static void export_backend_stopped(void *opaque, int err, bool is_write)
{
    BlockExport *exp = opaque;

    if (io_error_fn) {
        io_error_fn(exp, is_write, -err, STRATA_ERROR_ACTION_STOP,
                    notify_opaque);
    }
}

StrataQueue *export_next_queue(BlockExport *exp)
{
    if (exp->niothreads == 0) {
        return exp->queue;
    }
    return exp->queues[exp->next_queue++ % (unsigned)exp->niothreads];
}

/* Hold the iothread named @name for @exp and find its queue; errors
 * prefixed with @what ("iothread", "iothreads.1"). */
static bool export_use_iothread(BlockExport *exp, const char *name,
                                const char *what, StrataObject **obj,
                                StrataQueue **queue, StrataError **errp)
{
    g_autofree char *user = g_strdup_printf("export '%s'", exp->id);

    *obj = object_use(name, OBJECT_IOTHREAD, user, errp);
    if (!*obj) {
        error_prepend(errp, "%s: ", what);
        return false;
    }
    /* Its requests run on the iothread's queue of this context. */
    *queue = iothread_get_queue(*obj, exp->ctx, errp);
    if (!*queue) {
        error_prepend(errp, "%s: ", what);
        return false;
    }
    return true;
}

/* iothreads=: a non-empty list of distinct iothread ids, not with
 * iothread=. */
static bool export_read_iothreads(BlockExport *exp, OptNode *opts,
                                  const char *iothread, StrataError **errp)
{
    OptNode *list = opts_get(opts, "iothreads");

    if (!list) {
        return true;
    }
    guint n = opts_type(list) == OPT_LIST ? opts_list_length(list) : 0;
    if (opts_type(list) != OPT_LIST || n == 0 || n > STRATA_MAX_QUEUES) {
        error_set_option(errp, "iothreads: expected a list of 1 to %d "
                         "iothread ids", STRATA_MAX_QUEUES);
        return false;
    }
    if (iothread) {
        error_set_option(errp, "iothreads: cannot be used together with "
                         "iothread");
        return false;
    }
    exp->iothreads = g_new0(StrataObject *, n);
    exp->queues = g_new0(StrataQueue *, n);
    for (guint i = 0; i < n; i++) {
        OptNode *el = opts_list_get(list, i);
        g_autofree char *what = g_strdup_printf("iothreads.%u", i);

        if (opts_type(el) != OPT_STRING) {
            error_set_option(errp, "%s: expected a string (an iothread id), "
                             "not %s", what, opts_type_name(opts_type(el)));
            return false;
        }
        const char *name = opts_scalar_str(el);
        for (guint j = 0; j < i; j++) {
            if (!strcmp(opts_scalar_str(opts_list_get(list, j)), name)) {
                error_set_option(errp, "%s: iothread '%s' is listed twice",
                                 what, name);
                return false;
            }
        }
        exp->niothreads = (int)i + 1;
        if (!export_use_iothread(exp, name, what, &exp->iothreads[i],
                                 &exp->queues[i], errp)) {
            return false;
        }
    }
    exp->queue = exp->queues[0];
    return true;
}

/* The common members, read (and marked consumed) into @exp. */
static bool export_read_common(BlockExport *exp, OptNode *opts,
                               const char **iothread, StrataError **errp)
{
    bool fixed_iothread;
    int rerror, werror;

    if (!opts_get_bool(opts, "writable", QAPI_QMP_EXPORT_WRITABLE_DEFAULT,
                       &exp->writable, errp) ||
        !opts_get_bool(opts, "writethrough",
                       QAPI_QMP_EXPORT_WRITETHROUGH_DEFAULT,
                       &exp->writethrough, errp) ||
        !opts_get_str(opts, "iothread", NULL, iothread, errp) ||
        !opts_get_bool(opts, "fixed-iothread", false, &fixed_iothread,
                       errp) ||
        !opts_get_enum(opts, "x-rerror", qapi_enum_qmp_export_x_rerror,
                       QAPI_QMP_EXPORT_X_RERROR_DEFAULT, &rerror, errp) ||
        !opts_get_enum(opts, "x-werror", qapi_enum_qmp_export_x_werror,
                       QAPI_QMP_EXPORT_X_WERROR_DEFAULT, &werror, errp)) {
        return false;
    }
    /* The enums list report, ignore, stop, enospc: StrataErrorAction's
     * order. */
    exp->rerror = (StrataErrorAction)rerror;
    exp->werror = (StrataErrorAction)werror;
    return true;
}

BlockExport *export_add(StrataContext *ctx, OptNode *opts, StrataError **errp)
{
    const char *type, *id, *node_name, *iothread = NULL;
    g_autofree char *be_name = NULL;
    StrataError *local = NULL;

    if (!opts_require_str(opts, "type", &type, errp) ||
        !opts_require_str(opts, "id", &id, errp) ||
        !opts_require_str(opts, "node-name", &node_name, errp)) {
        return NULL;
    }
    const SchemaDriver *schema = export_type_schema(type);
    if (!schema) {
        error_set_option(errp, "type: unknown export type '%s'", type);
        return NULL;
    }
    const BlockExportDriver *drv = export_find_driver(type);
    if (!drv) {
        error_set_option(errp, "type: export type '%s' is not available in "
                         "this build", type);
        return NULL;
    }
    if (!*id) {
        error_set_option(errp, "id: must not be empty");
        return NULL;
    }
    if (export_find(id)) {
        error_set_option(errp, "Block export id '%s' is already in use", id);
        return NULL;
    }
    StrataNode *node = node_find(ctx, node_name);
    if (!node) {
        error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT,
                  "Cannot find device='' nor node-name='%s'", node_name);
        return NULL;
    }

    BlockExport *exp = g_new0(BlockExport, 1);
    exp->drv = drv;
    exp->id = g_strdup(id);
    exp->node_name = g_strdup(node_name);
    exp->ctx = ctx;
    exp->refcnt = 1;
    exp->opaque = drv->instance_size ? g_malloc0(drv->instance_size) : NULL;

    /* The type's own members, checked against its schema: copy them out
     * of the common ones. */
    g_autoptr(OptNode) own = opts_new_object();
    for (guint i = 0; i < opts_object_size(opts); i++) {
        const char *key = opts_object_key(opts, i);
        if (schema_find_member(qmp_export_common_members, key)) {
            continue;
        }
        opts_set_child(own, key, opts_clone(opts_object_value(opts, i)));
        /* Recursively: a type's member may be an object (addr). */
        opts_mark_consumed(opts_get(opts, key));
    }
    if (!export_read_common(exp, opts, &iothread, &local) ||
        !export_read_iothreads(exp, opts, iothread, &local) ||
        !opts_check_consumed(opts, &local) ||
        !schema_validate_members(own, schema->members, &local)) {
        goto fail;
    }
    if (iothread && !export_use_iothread(exp, iothread, "iothread",
                                         &exp->iothread, &exp->queue,
                                         &local)) {
        goto fail;
    }
    if (exp->writable && node->read_only) {
        error_set(&local, STRATA_ERROR_PERMISSION, EROFS,
                  "Cannot export read-only node '%s' as writable",
                  node_name);
        goto fail;
    }
    uint32_t perm = STRATA_PERM_CONSISTENT_READ |
                    (exp->writable ? STRATA_PERM_WRITE : 0);
    be_name = g_strdup_printf("export '%s'", id);
    exp->be = strata_backend_new(node, be_name, perm, STRATA_PERM_ALL,
                                 &local);
    if (!exp->be) {
        goto fail;
    }
    strata_backend_set_write_cache(exp->be, !exp->writethrough);
    strata_backend_set_error_action(exp->be, exp->rerror, exp->werror);
    strata_backend_set_stop_callback(exp->be, export_backend_stopped, exp);
    if (!drv->create(exp, own, &local)) {
        goto fail;
    }
    exports = g_list_append(exports, exp);
    return exp;

fail:
    error_propagate(errp, local);
    export_free(exp);
    return NULL;
}

static void export_shutdown(BlockExport *exp, bool hard)
{
    bool first = !exp->shutting_down;

    exp->shutting_down = true;
    if (exp->drv->request_shutdown) {
        exp->drv->request_shutdown(exp, hard);
    }
    if (first) {
        export_unref(exp);          /* the registry's reference */
    }
}

bool export_del(const char *id, bool hard, StrataError **errp)
{
    BlockExport *exp = export_find(id);

    if (!exp) {
        error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT,
                  "Export '%s' is not found", id);
        return false;
    }
    if (exp->shutting_down && !hard) {
        error_set(errp, STRATA_ERROR_GENERIC, EBUSY,
                  "Export '%s' is already shutting down", id);
        return false;
    }
    if (!hard && exp->clients > 0) {
        error_set(errp, STRATA_ERROR_PERMISSION, EBUSY,
                  "export '%s' still in use", id);
        return false;
    }
    export_shutdown(exp, hard);
    return true;
}

static void export_shutdown_one(BlockExport *exp, void *opaque)
{
    export_shutdown(exp, true);
}

void export_shutdown_all(void)
{
    export_foreach(export_shutdown_one, NULL);
}

void export_client_add(BlockExport *exp)
{
    exp->refcnt++;
    exp->clients++;
}

void export_client_remove(BlockExport *exp)
{
    g_assert(exp->clients > 0);
    exp->clients--;
    export_unref(exp);
}

/* BLOCK_IO_ERROR raised in another thread (an iothread), on its way to
 * the context's thread, where the monitor lives. */
typedef struct ExportIoError {
    char *id;
    bool is_write;
    int err;
    StrataErrorAction action;
} ExportIoError;

static void export_io_error_deliver(void *opaque)
{
    ExportIoError *ev = opaque;
    BlockExport *exp = export_find(ev->id);

    /* Deleted meanwhile: nobody left to tell. */
    if (exp && io_error_fn) {
        io_error_fn(exp, ev->is_write, ev->err, ev->action, notify_opaque);
    }
    g_free(ev->id);
    g_free(ev);
}

void export_io_error(BlockExport *exp, bool is_write, int err)
{
    StrataErrorAction action = is_write ? exp->werror : exp->rerror;
    int64_t now = clock_ns();
    int64_t last;

    if (action == STRATA_ERROR_ACTION_ENOSPC) {
        action = err == ENOSPC ? STRATA_ERROR_ACTION_STOP
                               : STRATA_ERROR_ACTION_REPORT;
    }
    if (action == STRATA_ERROR_ACTION_STOP) {
        return;     /* the backend's stop callback notifies */
    }
    /* Requests fail in every iothread of the export at once: one of them
     * wins the second's event. */
    last = __atomic_load_n(&exp->last_error_event_ns, __ATOMIC_RELAXED);
    do {
        if (last && now - last < EXPORT_ERROR_EVENT_INTERVAL_NS) {
            return;
        }
    } while (!__atomic_compare_exchange_n(&exp->last_error_event_ns, &last,
                                          now, false, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    if (!io_error_fn) {
        return;
    }
    if (loop_is_owner(exp->ctx->loop)) {
        io_error_fn(exp, is_write, err, action, notify_opaque);
        return;
    }
    ExportIoError *ev = g_new(ExportIoError, 1);
    *ev = (ExportIoError) {
        .id = g_strdup(exp->id), .is_write = is_write, .err = err,
        .action = action,
    };
    loop_oneshot(exp->ctx->loop, export_io_error_deliver, ev);
}

bool export_resume(const char *id, StrataError **errp)
{
    BlockExport *exp = export_find(id);

    if (!exp) {
        error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT,
                  "Export '%s' is not found", id);
        return false;
    }
    if (!strata_backend_is_stopped(exp->be)) {
        error_setg(errp, "Export '%s' is not stopped", id);
        return false;
    }
    exp->last_error_event_ns = 0;
    strata_backend_resume(exp->be);
    return true;
}
