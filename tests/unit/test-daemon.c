/*
 * strata-storage-daemon's pieces in process: the export framework (with a
 * mock export type), the QMP command table, and a monitor's framing over a
 * socketpair.  The daemon as a process is tested by tests/qmp/.
 * SPDX-License-Identifier: MIT
 */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib.h>

#include "block/block-int.h"
#include "block/export/export.h"
#include "tools/daemon/daemon.h"
#include "tools/daemon/monitor.h"
#include "tools/daemon/qmp-cmds.h"

/* ---- a mock export type ------------------------------------------------- */

typedef struct MockExport {
    int creates, shutdowns, hard_shutdowns, destroys;
} MockExport;

static MockExport mock;         /* counters across instances */
static GPtrArray *deleted_ids;
static int io_error_events;

static bool mock_create(BlockExport *exp, OptNode *opts, StrataError **errp)
{
    const char *name = NULL;

    if (!opts_get_str(opts, "name", NULL, &name, errp)) {
        return false;
    }
    if (name && !strcmp(name, "fail")) {
        error_setg(errp, "mock: create refused");
        return false;
    }
    mock.creates++;
    return true;
}

static void mock_request_shutdown(BlockExport *exp, bool hard)
{
    mock.shutdowns++;
    mock.hard_shutdowns += hard;
}

static void mock_destroy(BlockExport *exp)
{
    mock.destroys++;
}

/* Registered under the schema's "nbd" type, which the real NBD export
 * takes over later: the framework only needs a type the schema knows. */
static const BlockExportDriver mock_driver = {
    .type = "nbd",
    .create = mock_create,
    .request_shutdown = mock_request_shutdown,
    .destroy = mock_destroy,
};

static void on_deleted(const char *id, void *opaque)
{
    g_ptr_array_add(deleted_ids, g_strdup(id));
}

static void on_io_error(BlockExport *exp, bool is_write, int err,
                        StrataErrorAction action, void *opaque)
{
    io_error_events++;
}

static StrataContext *ctx;

/* Let deferred notifications (BLOCK_EXPORT_DELETED) run. */
static void run_pending(void)
{
    while (strata_context_run_once(ctx, false)) {
    }
}


static OptNode *parse(const char *json)
{
    StrataError *err = NULL;
    OptNode *o = opts_parse_json(json, &err);
    if (!o) {
        g_error("%s: %s", json, error_get_message(err));
    }
    return o;
}

static void setup(void)
{
    StrataError *err = NULL;

    ctx = strata_context_new(&err);
    g_assert_nonnull(ctx);
    daemon_state.ctx = ctx;
    daemon_state.loop = ctx->loop;
    g_autoptr(OptNode) n = parse("{\"driver\": \"mem\", \"node-name\": "
                                 "\"m0\", \"size\": 1048576}");
    g_assert_true(daemon_blockdev_add(n, &err));
    g_autoptr(OptNode) ro = parse("{\"driver\": \"mem\", \"node-name\": "
                                  "\"ro0\", \"size\": 65536, "
                                  "\"read-only\": true}");
    g_assert_true(daemon_blockdev_add(ro, &err));
    memset(&mock, 0, sizeof(mock));
    deleted_ids = g_ptr_array_new_with_free_func(g_free);
    io_error_events = 0;
    export_register_driver(&mock_driver);
    export_set_notifiers(on_deleted, on_io_error, NULL);
}

static void teardown(void)
{
    export_shutdown_all();
    run_pending();
    g_assert_cmpint(export_count(), ==, 0);
    for (GList *l = daemon_state.owned_nodes; l; l = l->next) {
        node_unref(l->data);
    }
    g_list_free(daemon_state.owned_nodes);
    daemon_state.owned_nodes = NULL;
    strata_context_free(ctx);
    g_ptr_array_free(deleted_ids, TRUE);
}

static void expect_add_error(const char *json, const char *msg)
{
    StrataError *err = NULL;
    g_autoptr(OptNode) o = parse(json);

    g_assert_null(export_add(ctx, o, &err));
    g_assert_nonnull(err);
    if (!strstr(error_get_message(err), msg)) {
        g_error("'%s': got '%s', want '%s'", json, error_get_message(err),
                msg);
    }
    error_free(err);
}

static void test_export_lifecycle(void)
{
    StrataError *err = NULL;

    setup();
    g_autoptr(OptNode) o = parse("{\"type\": \"nbd\", \"id\": \"e0\", "
                                 "\"node-name\": \"m0\", \"writable\": true}");
    BlockExport *exp = export_add(ctx, o, &err);
    g_assert_nonnull(exp);
    g_assert_cmpint(mock.creates, ==, 1);
    g_assert_true(export_find("e0") == exp);

    /* The export's backend is a user of the node: blockdev-del refuses. */
    g_assert_false(daemon_blockdev_del("m0", &err));
    g_assert_nonnull(strstr(error_get_message(err), "in use by"));
    g_clear_pointer(&err, error_free);

    /* Data through the export's backend reaches the node. */
    char buf[512];
    memset(buf, 0x5c, sizeof(buf));
    g_assert_cmpint(strata_backend_pwrite(exp->be, 1000, buf, sizeof(buf), 0),
                    ==, 0);

    /* A client connected: safe mode refuses with QSD's words. */
    export_client_add(exp);
    g_assert_false(export_del("e0", false, &err));
    g_assert_cmpstr(error_get_message(err), ==, "export 'e0' still in use");
    g_clear_pointer(&err, error_free);
    g_assert_cmpint(mock.shutdowns, ==, 0);

    /* Hard: the type is asked to end its clients; the export is gone
     * (and BLOCK_EXPORT_DELETED fires) only when the last one leaves. */
    g_assert_true(export_del("e0", true, &err));
    g_assert_cmpint(mock.hard_shutdowns, ==, 1);
    g_assert_cmpuint(deleted_ids->len, ==, 0);
    g_assert_nonnull(export_find("e0"));
    g_assert_true(export_find("e0")->shutting_down);
    export_client_remove(exp);
    g_assert_null(export_find("e0"));
    g_assert_cmpuint(deleted_ids->len, ==, 0);
    run_pending();
    g_assert_cmpuint(deleted_ids->len, ==, 1);
    g_assert_cmpstr(deleted_ids->pdata[0], ==, "e0");
    g_assert_cmpint(mock.destroys, ==, 1);

    /* The node is free again, and holds what was written. */
    StrataNode *m0 = node_find(ctx, "m0");
    g_assert_null(m0->parents);
    StrataBackend *be = strata_backend_new(m0, "check",
                                           STRATA_PERM_CONSISTENT_READ,
                                           STRATA_PERM_ALL, &err);
    char back[512];
    g_assert_cmpint(strata_backend_pread(be, 1000, back, sizeof(back), 0),
                    ==, 0);
    g_assert_cmpmem(back, sizeof(back), buf, sizeof(buf));
    strata_backend_free(be);
    g_assert_true(daemon_blockdev_del("m0", &err));
    teardown();
}

static void test_export_errors(void)
{
    StrataError *err = NULL;

    setup();
    expect_add_error("{\"type\": \"nbd\", \"id\": \"e1\", \"node-name\": "
                     "\"nope\"}", "Cannot find device='' nor node-name='nope'");
    expect_add_error("{\"type\": \"vhost-user-blk\", \"id\": \"e1\", "
                     "\"node-name\": \"m0\", \"addr\": {}}",
                     "export type 'vhost-user-blk' is not available");
    expect_add_error("{\"type\": \"fuse\", \"id\": \"e1\", \"node-name\": "
                     "\"m0\"}", "unknown export type 'fuse'");
    expect_add_error("{\"type\": \"nbd\", \"id\": \"e1\", \"node-name\": "
                     "\"ro0\", \"writable\": true}",
                     "Cannot export read-only node 'ro0' as writable");
    expect_add_error("{\"type\": \"nbd\", \"id\": \"e1\", \"node-name\": "
                     "\"m0\", \"colour\": 1}", "colour: unknown option");
    expect_add_error("{\"type\": \"nbd\", \"id\": \"e1\", \"node-name\": "
                     "\"m0\", \"iothread\": \"nope\"}", "iothread: ");
    /* iothreads (a Strata extension): a list of distinct ids, not with
     * iothread. */
    expect_add_error("{\"type\": \"nbd\", \"id\": \"e1\", \"node-name\": "
                     "\"m0\", \"iothreads\": \"io0\"}",
                     "iothreads: expected a list of 1 to 64 iothread ids");
    expect_add_error("{\"type\": \"nbd\", \"id\": \"e1\", \"node-name\": "
                     "\"m0\", \"iothreads\": []}",
                     "iothreads: expected a list of 1 to 64 iothread ids");
    expect_add_error("{\"type\": \"nbd\", \"id\": \"e1\", \"node-name\": "
                     "\"m0\", \"iothreads\": [\"a\"], \"iothread\": \"a\"}",
                     "iothreads: cannot be used together with iothread");
    expect_add_error("{\"type\": \"nbd\", \"id\": \"e1\", \"node-name\": "
                     "\"m0\", \"iothreads\": [1]}",
                     "iothreads.0: expected a string (an iothread id), not "
                     "integer");
    expect_add_error("{\"type\": \"nbd\", \"id\": \"e1\", \"node-name\": "
                     "\"m0\", \"iothreads\": [\"nope\"]}", "iothreads.0: ");
    expect_add_error("{\"type\": \"nbd\", \"id\": \"e1\", \"node-name\": "
                     "\"m0\", \"name\": \"fail\"}", "mock: create refused");
    /* Nothing stayed behind from the failures. */
    g_assert_cmpint(export_count(), ==, 0);
    g_assert_null(node_find(ctx, "m0")->parents);

    g_autoptr(OptNode) o = parse("{\"type\": \"nbd\", \"id\": \"e1\", "
                                 "\"node-name\": \"m0\"}");
    BlockExport *exp = export_add(ctx, o, &err);
    g_assert_nonnull(exp);
    expect_add_error("{\"type\": \"nbd\", \"id\": \"e1\", \"node-name\": "
                     "\"m0\"}", "Block export id 'e1' is already in use");
    g_assert_false(export_del("nope", false, &err));
    g_assert_cmpstr(error_get_message(err), ==, "Export 'nope' is not found");
    g_clear_pointer(&err, error_free);
    g_assert_false(export_resume("e1", &err));
    g_assert_cmpstr(error_get_message(err), ==, "Export 'e1' is not stopped");
    g_clear_pointer(&err, error_free);

    /* BLOCK_IO_ERROR is rate-limited: one per second per export. */
    export_io_error(exp, true, EIO);
    export_io_error(exp, true, EIO);
    export_io_error(exp, false, EIO);
    g_assert_cmpint(io_error_events, ==, 1);

    /* Safe mode without clients deletes at once. */
    g_assert_true(export_del("e1", false, &err));
    g_assert_null(export_find("e1"));
    run_pending();
    g_assert_cmpuint(deleted_ids->len, ==, 1);
    teardown();
}

typedef struct Done {
    bool done;
    int64_t ret;
} Done;

static void done_cb(void *opaque, int64_t ret)
{
    Done *d = opaque;
    d->ret = ret;
    d->done = true;
}

/* x-werror=stop: a failing write parks the export (BLOCK_IO_ERROR with
 * action stop), x-block-export-resume retries it. */
static void test_export_error_policy(void)
{
    StrataError *err = NULL;

    setup();
    g_autoptr(OptNode) n = parse(
        "{\"driver\": \"blkdebug\", \"node-name\": \"dbg\", "
        "\"inject-error\": [{\"event\": \"none\", \"errno\": 28, "
        "\"iotype\": \"write\", \"once\": true}], "
        "\"image\": {\"driver\": \"mem\", \"size\": 65536}}");
    g_assert_true(daemon_blockdev_add(n, &err));
    g_autoptr(OptNode) o = parse("{\"type\": \"nbd\", \"id\": \"e2\", "
                                 "\"node-name\": \"dbg\", \"writable\": "
                                 "true, \"x-werror\": \"stop\"}");
    BlockExport *exp = export_add(ctx, o, &err);
    g_assert_nonnull(exp);

    char buf[4096];
    memset(buf, 0x77, sizeof(buf));
    struct iovec iov = { buf, sizeof(buf) };
    Done d = { 0 };
    g_assert_cmpint(strata_backend_aio_pwritev(exp->be, 0, &iov, 1, 0,
                                               done_cb, &d), ==, 0);
    for (int i = 0; i < 1000 && !strata_backend_is_stopped(exp->be); i++) {
        strata_context_run_once(ctx, false);
    }
    g_assert_true(strata_backend_is_stopped(exp->be));
    g_assert_false(d.done);
    g_assert_cmpint(io_error_events, ==, 1);

    /* The rule fired once: the retry succeeds. */
    g_assert_true(export_resume("e2", &err));
    for (int i = 0; i < 1000 && !d.done; i++) {
        strata_context_run_once(ctx, false);
    }
    g_assert_true(d.done);
    g_assert_cmpint(d.ret, ==, 0);
    char back[4096];
    g_assert_cmpint(strata_backend_pread(exp->be, 0, back, sizeof(back), 0),
                    ==, 0);
    g_assert_cmpmem(back, sizeof(back), buf, sizeof(buf));
    teardown();
}

/* ---- the command table ------------------------------------------------------ */

static void test_command_table(void)
{
    int n = 0;

    for (const QmpCommandSchema *c = qmp_command_schemas; c->name; c++) {
        n++;
        if (strcmp(c->name, "qmp_capabilities") != 0 &&
            !qmp_find_handler(c->name)) {
            g_error("command %s has no handler", c->name);
        }
        g_assert_true(qmp_find_command(c->name) == c);
    }
    g_assert_cmpint(n, >=, 20);
    g_assert_null(qmp_find_command("no-such-command"));
    /* The introspection data is JSON and lists every command. */
    g_autoptr(JsonNode) schema = json_from_string(qmp_introspection_json, NULL);
    g_assert_nonnull(schema);
    JsonArray *a = json_node_get_array(schema);
    int commands = 0;
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *o = json_array_get_object_element(a, i);
        commands += !strcmp(json_object_get_string_member(o, "meta-type"),
                            "command");
    }
    g_assert_cmpint(commands, ==, n);
}

/* ---- a monitor over a socketpair ----------------------------------------------- */

static int sp[2];

static GString *read_available(int expect_lines)
{
    GString *s = g_string_new(NULL);
    int lines = 0;
    int64_t deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;

    while (lines < expect_lines && g_get_monotonic_time() < deadline) {
        strata_context_run_once(ctx, false);
        char buf[4096];
        ssize_t n = recv(sp[1], buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) {
            g_string_append_len(s, buf, n);
            lines = 0;
            for (const char *p = s->str; (p = strchr(p, '\n')); p++) {
                lines++;
            }
        } else {
            g_usleep(1000);
        }
    }
    return s;
}

static void send_str(const char *s)
{
    g_assert_cmpint(send(sp[1], s, strlen(s), 0), ==, (ssize_t)strlen(s));
}

static void test_monitor_framing(void)
{
    setup();
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp),
                    ==, 0);
    Monitor *mon = monitor_new(ctx->loop, -1, sp[0], sp[0], false);
    g_autoptr(GString) greeting = read_available(1);
    g_assert_nonnull(strstr(greeting->str, "\"QMP\""));

    /* One byte at a time, then several messages in one write. */
    const char *caps = "{\"execute\": \"qmp_capabilities\", \"id\": 1}";
    for (const char *p = caps; *p; p++) {
        char one[2] = { *p, 0 };
        send_str(one);
        strata_context_run_once(ctx, false);
    }
    g_autoptr(GString) r1 = read_available(1);
    g_assert_cmpstr(r1->str, ==, "{\"return\":{},\"id\":1}\r\n");
    send_str("{\"execute\": \"query-block-exports\", \"id\": \"a\"}"
             "{\"execute\": \"nope\", \"id\": \"b\"} [1] "
             "{\"execute\": \"blockdev-del\", \"arguments\": "
             "{\"node-name\": \"x\\\"}\"}, \"id\": \"c\"}\n");
    g_autoptr(GString) r2 = read_available(4);
    g_auto(GStrv) lines = g_strsplit(r2->str, "\r\n", -1);
    g_assert_cmpstr(lines[0], ==, "{\"return\":[],\"id\":\"a\"}");
    g_assert_nonnull(strstr(lines[1], "CommandNotFound"));
    g_assert_nonnull(strstr(lines[1], "\"id\":\"b\""));
    g_assert_nonnull(strstr(lines[2], "QMP input must be a JSON object"));
    g_assert_nonnull(strstr(lines[3], "node-name='x\\\"}'"));
    monitor_free(mon);
    close(sp[1]);
    teardown();
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/daemon/export/lifecycle", test_export_lifecycle);
    g_test_add_func("/daemon/export/errors", test_export_errors);
    g_test_add_func("/daemon/export/error-policy", test_export_error_policy);
    g_test_add_func("/daemon/qmp/command-table", test_command_table);
    g_test_add_func("/daemon/monitor/framing", test_monitor_framing);
    return g_test_run();
}
