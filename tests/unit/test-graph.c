/*
 * Tests of the block graph: opening option trees, node names, references,
 * permissions, limits and reopen
 * SPDX-License-Identifier: MIT
 *
 * Graphs are built from the mem and null drivers, with the raw format as
 * the parent where a test needs a child edge; those tests skip, saying
 * why, in a build without raw.  I/O goes through the public blocking API
 * from the test's thread, which owns the context's loop.
 */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "block/backend-int.h"
#include "block/block-int.h"
#include "block/drivers.h"
#include "block/file-posix.h"
#include "block/mem.h"

#define MiB (1024 * 1024)

/* ---- harness -------------------------------------------------------------- */

static StrataNode *open_ok(StrataContext *ctx, const char *json)
{
    g_autoptr(StrataError) err = NULL;
    StrataNode *node = strata_node_open_json(ctx, json, &err);

    if (!node) {
        g_error("opening %s failed: %s", json, error_get_message(err));
    }
    return node;
}

static StrataNode *open_dotted_ok(StrataContext *ctx, const char *keys)
{
    g_autoptr(StrataError) err = NULL;
    StrataNode *node = strata_node_open_dotted(ctx, keys, &err);

    if (!node) {
        g_error("opening %s failed: %s", keys, error_get_message(err));
    }
    return node;
}

/* Opening @json must fail with exactly @msg and leave no node behind. */
static void open_fails(StrataContext *ctx, const char *json, const char *msg)
{
    g_autoptr(StrataError) err = NULL;
    guint before = g_hash_table_size(ctx->nodes);
    StrataNode *node = strata_node_open_json(ctx, json, &err);

    if (node) {
        g_error("opening %s succeeded, expected '%s'", json, msg);
    }
    g_assert_nonnull(err);
    g_assert_cmpstr(error_get_message(err), ==, msg);
    g_assert_cmpuint(g_hash_table_size(ctx->nodes), ==, before);
}

/* As open_fails(), for messages that list alternatives: only the start
 * is compared. */
static void open_fails_prefix(StrataContext *ctx, const char *json,
                              const char *prefix)
{
    g_autoptr(StrataError) err = NULL;
    guint before = g_hash_table_size(ctx->nodes);
    StrataNode *node = strata_node_open_json(ctx, json, &err);

    g_assert_null(node);
    g_assert_nonnull(err);
    if (!g_str_has_prefix(error_get_message(err), prefix)) {
        g_error("opening %s: got '%s', expected it to start with '%s'", json,
                error_get_message(err), prefix);
    }
    g_assert_cmpuint(g_hash_table_size(ctx->nodes), ==, before);
}

static StrataBackend *backend_ok(StrataNode *root, const char *name,
                                 uint32_t perm, uint32_t shared)
{
    g_autoptr(StrataError) err = NULL;
    StrataBackend *be = strata_backend_new(root, name, perm, shared, &err);

    if (!be) {
        g_error("backend %s: %s", name, error_get_message(err));
    }
    return be;
}

static bool have_raw(void)
{
    if (block_driver_find("raw")) {
        return true;
    }
    g_test_skip("the raw format is not built in yet: no driver with a child");
    return false;
}

static MemCounters counters(StrataNode *mem)
{
    MemCounters c;
    mem_get_counters(mem, &c);
    return c;
}

/* The string form of option @key of @node as it stands now, or NULL. */
static const char *node_opt(StrataNode *node, const char *key)
{
    OptNode *o = node->options;
    g_auto(GStrv) parts = g_strsplit(key, ".", -1);

    for (int i = 0; parts[i] && o; i++) {
        o = opts_peek(o, parts[i]);
    }
    return o ? opts_scalar_str(o) : NULL;
}

/* ---- opening ------------------------------------------------------------------ */

/* Field by field: the struct has padding that assignment need not copy. */
static void assert_limits_equal(const StrataLimits *a, const StrataLimits *b)
{
    g_assert_cmpuint(a->request_alignment, ==, b->request_alignment);
    g_assert_cmpuint(a->mem_alignment, ==, b->mem_alignment);
    g_assert_cmpuint(a->iov_len_alignment, ==, b->iov_len_alignment);
    g_assert_cmpint(a->max_transfer, ==, b->max_transfer);
    g_assert_cmpint(a->opt_transfer, ==, b->opt_transfer);
    g_assert_cmpint(a->max_iov, ==, b->max_iov);
    g_assert_cmpuint(a->pwrite_zeroes_alignment, ==, b->pwrite_zeroes_alignment);
    g_assert_cmpint(a->max_pwrite_zeroes, ==, b->max_pwrite_zeroes);
    g_assert_cmpuint(a->pdiscard_alignment, ==, b->pdiscard_alignment);
    g_assert_cmpint(a->max_pdiscard, ==, b->max_pdiscard);
    g_assert_cmpuint(a->opt_mem_alignment, ==, b->opt_mem_alignment);
}

static void assert_same_node(StrataNode *a, StrataNode *b)
{
    StrataLimits la, lb;

    g_assert_cmpstr(strata_node_get_driver(a), ==, strata_node_get_driver(b));
    g_assert_cmpint(strata_node_get_length(a), ==, strata_node_get_length(b));
    strata_node_get_limits(a, &la);
    strata_node_get_limits(b, &lb);
    assert_limits_equal(&la, &lb);
    g_assert_cmpint(a->read_only, ==, b->read_only);
    g_assert_cmpint(a->cache_direct, ==, b->cache_direct);
    g_assert_cmpint(a->cache_no_flush, ==, b->cache_no_flush);
    g_assert_cmpint(a->discard, ==, b->discard);
    g_assert_cmpint(a->detect_zeroes, ==, b->detect_zeroes);
    g_assert_cmpint(g_slist_length(a->children), ==, g_slist_length(b->children));
}

/* What a driver reports (block_log) reaches the embedder's function with
 * the node's name and its opaque, until the function is unset. */
typedef struct LogSeen {
    int calls;
    char *node;
    char *msg;
} LogSeen;

static void log_record(const char *node_name, const char *msg, void *opaque)
{
    LogSeen *seen = opaque;

    seen->calls++;
    g_free(seen->node);
    g_free(seen->msg);
    seen->node = g_strdup(node_name);
    seen->msg = g_strdup(msg);
}

static void test_log_func(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *n = open_ok(ctx, "{\"driver\": \"mem\", \"node-name\": "
                            "\"disk0\", \"size\": 65536}");
    LogSeen seen = { 0 };

    block_log(n, "dropped: nobody listens");
    strata_set_log_func(log_record, &seen);
    block_log(n, "back end lost");
    g_assert_cmpint(seen.calls, ==, 1);
    g_assert_cmpstr(seen.node, ==, "disk0");
    g_assert_cmpstr(seen.msg, ==, "back end lost");
    strata_set_log_func(NULL, NULL);
    block_log(n, "dropped again");
    g_assert_cmpint(seen.calls, ==, 1);

    g_free(seen.node);
    g_free(seen.msg);
    strata_node_unref(n);
    strata_context_free(ctx);
}

static void test_open_json_dotted_mem(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *a = open_ok(ctx,
        "{\"driver\": \"mem\", \"node-name\": \"a\", \"size\": 1048576,"
        " \"align\": 512, \"max-transfer\": 65536, \"read-only\": true,"
        " \"cache\": {\"direct\": true, \"no-flush\": true},"
        " \"discard\": \"unmap\", \"detect-zeroes\": \"unmap\"}");
    StrataNode *b = open_dotted_ok(ctx,
        "driver=mem,node-name=b,size=1M,align=512,max-transfer=64k,"
        "read-only=on,cache.direct=on,cache.no-flush=on,discard=unmap,"
        "detect-zeroes=unmap");

    assert_same_node(a, b);
    g_assert_true(a->read_only && a->cache_direct && a->cache_no_flush);
    g_assert_cmpint(a->discard, ==, DISCARD_UNMAP);
    g_assert_cmpint(a->detect_zeroes, ==, DETECT_ZEROES_UNMAP);
    g_assert_cmpint(strata_node_get_length(a), ==, MiB);
    g_assert_cmpuint(a->bl.request_alignment, ==, 512);
    g_assert_cmpint(a->bl.max_transfer, ==, 65536);
    strata_node_unref(a);
    strata_node_unref(b);
    strata_context_free(ctx);
}

static void test_open_json_dotted_child(void)
{
    if (!have_raw()) {
        return;
    }
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *a = open_ok(ctx,
        "{\"driver\": \"raw\", \"node-name\": \"a\", \"read-only\": true,"
        " \"file\": {\"driver\": \"mem\", \"node-name\": \"a-file\","
        " \"size\": 1048576, \"max-transfer\": 65536}}");
    StrataNode *b = open_dotted_ok(ctx,
        "driver=raw,node-name=b,read-only=on,file.driver=mem,"
        "file.node-name=b-file,file.size=1M,file.max-transfer=64k");

    assert_same_node(a, b);
    g_assert_nonnull(a->file);
    assert_same_node(a->file->node, b->file->node);
    g_assert_cmpstr(a->file->node->node_name, ==, "a-file");
    g_assert_cmpstr(b->file->node->node_name, ==, "b-file");
    g_assert_cmpstr(a->file->role, ==, "file");
    /* Inline children inherit read-only from their parent. */
    g_assert_true(a->file->node->read_only);
    g_assert_true(b->file->node->read_only);
    strata_node_unref(a);
    strata_node_unref(b);
    g_assert_cmpuint(g_hash_table_size(ctx->nodes), ==, 0);
    strata_context_free(ctx);
}

static void test_open_child_inline(void)
{
    if (!have_raw()) {
        return;
    }
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *top = open_ok(ctx,
        "{\"driver\": \"raw\", \"node-name\": \"top\","
        " \"file\": {\"driver\": \"mem\", \"node-name\": \"m0\", \"size\": 65536}}");
    StrataNode *m0 = strata_node_find(ctx, "m0");

    g_assert_nonnull(m0);
    g_assert_true(node_filtered(top) == m0);
    g_assert_cmpint(m0->refcnt, ==, 1);               /* the edge's */
    g_assert_cmpint(g_slist_length(m0->parents), ==, 1);
    g_assert_true(((BlockChild *)m0->parents->data)->parent == top);
    g_assert_cmpint(strata_node_get_length(top), ==, 65536);
    strata_node_unref(top);
    g_assert_null(strata_node_find(ctx, "m0"));
    g_assert_null(strata_node_find(ctx, "top"));
    strata_context_free(ctx);
}

static void test_open_child_by_reference(void)
{
    if (!have_raw()) {
        return;
    }
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *m0 = open_ok(ctx,
        "{\"driver\": \"mem\", \"node-name\": \"node0\", \"size\": 65536}");
    StrataNode *top = open_ok(ctx,
        "{\"driver\": \"raw\", \"node-name\": \"top\", \"file\": \"node0\"}");

    g_assert_true(node_filtered(top) == m0);
    g_assert_cmpint(m0->refcnt, ==, 2);               /* ours and the edge's */
    /* Dotted keys name a reference the same way. */
    StrataNode *top2 = open_dotted_ok(ctx, "driver=raw,node-name=top2,file=node0");
    g_assert_true(node_filtered(top2) == m0);
    g_assert_cmpint(m0->refcnt, ==, 3);
    strata_node_unref(top2);
    strata_node_unref(top);
    g_assert_cmpint(m0->refcnt, ==, 1);
    strata_node_unref(m0);
    strata_context_free(ctx);
}

static void test_open_errors(void)
{
    StrataContext *ctx = strata_context_new(NULL);

    open_fails(ctx, "{\"size\": 4096}", "driver: missing");
    open_fails_prefix(ctx, "{\"driver\": \"nope\"}",
                      "driver: unknown driver 'nope' (expected one of ");
    open_fails(ctx, "{\"driver\": \"mem\"}", "size: missing");
    open_fails(ctx, "{\"driver\": \"mem\", \"size\": 4096, \"foo\": 1}",
               "foo: unknown option");
    open_fails(ctx, "{\"driver\": \"mem\", \"size\": 4096, \"read-only\": 3}",
               "read-only: expected boolean");
    open_fails(ctx, "{\"driver\": \"mem\", \"size\": 4096,"
                    " \"detect-zeroes\": \"maybe\"}",
               "detect-zeroes: expected one of off, on, unmap");
    open_fails(ctx, "{\"driver\": \"mem\", \"size\": 4096,"
                    " \"cache\": {\"direct\": \"yes please\"}}",
               "cache.direct: expected boolean");
    open_fails(ctx, "{\"driver\": \"mem\", \"size\": 4096,"
                    " \"cache\": {\"bogus\": true}}",
               "cache.bogus: unknown option");
    open_fails(ctx, "{\"driver\": \"mem\", \"size\": 4096, \"align\": 3}",
               "align: must be a power of two");
    /* Driver options of another driver are unknown here. */
    open_fails(ctx, "{\"driver\": \"null\", \"align\": 512}",
               "align: unknown option");
    open_fails(ctx, "[1, 2]", "JSON top level must be an object, got list");
    strata_context_free(ctx);
}

static void test_open_errors_in_child(void)
{
    if (!have_raw()) {
        return;
    }
    StrataContext *ctx = strata_context_new(NULL);

    open_fails(ctx, "{\"driver\": \"raw\", \"node-name\": \"top\","
                    " \"file\": {\"driver\": \"mem\", \"size\": 4096, \"foo\": 1}}",
               "file.foo: unknown option");
    open_fails(ctx, "{\"driver\": \"raw\","
                    " \"file\": {\"driver\": \"mem\", \"size\": 4096,"
                    " \"cache\": {\"direct\": 7}}}",
               "file.cache.direct: expected boolean");
    open_fails(ctx, "{\"driver\": \"raw\","
                    " \"file\": {\"driver\": \"mem\", \"size\": 4096,"
                    " \"detect-zeroes\": \"sometimes\"}}",
               "file.detect-zeroes: expected one of off, on, unmap");
    open_fails_prefix(ctx, "{\"driver\": \"raw\", \"file\": {\"driver\": \"nope\"}}",
                      "file.driver: unknown driver 'nope' (expected one of ");
    open_fails(ctx, "{\"driver\": \"raw\", \"file\": {\"driver\": \"mem\"}}",
               "file.size: missing");
    open_fails(ctx, "{\"driver\": \"raw\"}", "file: missing");
    open_fails(ctx, "{\"driver\": \"raw\", \"file\": \"node9\"}",
               "file: no node named 'node9'");
    open_fails(ctx, "{\"driver\": \"raw\", \"file\": 5}",
               "file: expected object or string");
    open_fails(ctx, "{\"driver\": \"raw\", \"file\": {\"driver\": \"mem\","
                    " \"size\": 4096, \"node-name\": \"9lives\"}}",
               "file.node-name: invalid name '9lives' (a letter, then letters, "
               "digits, '-', '.' or '_'; at most 31)");
    /* Dotted keys name the same paths. */
    {
        g_autoptr(StrataError) err = NULL;
        g_assert_null(strata_node_open_dotted(ctx,
            "driver=raw,file.driver=mem,file.size=4k,file.foo=1", &err));
        g_assert_cmpstr(error_get_message(err), ==, "file.foo: unknown option");
    }
    /* A failed open leaves the referenced node as it was. */
    StrataNode *m0 = open_ok(ctx, "{\"driver\": \"mem\", \"node-name\": \"m0\","
                                  " \"size\": 4096}");
    open_fails(ctx, "{\"driver\": \"raw\", \"file\": \"m0\", \"bogus\": 1}",
               "bogus: unknown option");
    g_assert_cmpint(m0->refcnt, ==, 1);
    g_assert_null(m0->parents);
    strata_node_unref(m0);
    strata_context_free(ctx);
}

/* ---- node names ------------------------------------------------------------------ */

static void test_node_name_invalid(void)
{
    static const char *const bad[] = {
        "1disk", "-disk", "_disk", "disk 0", "disk/0", "#block000", "d@x",
        "abcdefghijabcdefghijabcdefghijab",     /* 32 characters */
    };
    StrataContext *ctx = strata_context_new(NULL);

    for (unsigned i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree char *json = g_strdup_printf(
            "{\"driver\": \"null\", \"node-name\": \"%s\"}", bad[i]);
        g_autofree char *msg = g_strdup_printf(
            "node-name: invalid name '%s' (a letter, then letters, digits, "
            "'-', '.' or '_'; at most 31)", bad[i]);
        g_autoptr(StrataError) err = NULL;
        g_assert_null(strata_node_open_json(ctx, json, &err));
        g_assert_nonnull(err);
        g_assert_cmpstr(error_get_message(err), ==, msg);
        g_assert_cmpint(strata_error_get_class(err), ==,
                        STRATA_ERROR_INVALID_OPTION);
    }
    open_fails(ctx, "{\"driver\": \"null\", \"node-name\": \"\"}",
               "node-name: invalid name '' (a letter, then letters, digits, "
               "'-', '.' or '_'; at most 31)");

    /* The longest legal name, and every legal character class. */
    StrataNode *a = open_ok(ctx, "{\"driver\": \"null\", \"node-name\":"
                                 " \"abcdefghijabcdefghijabcdefghija\"}");
    StrataNode *b = open_ok(ctx, "{\"driver\": \"null\", \"node-name\":"
                                 " \"Disk-0.part_1\"}");
    g_assert_true(strata_node_find(ctx, "abcdefghijabcdefghijabcdefghija") == a);
    g_assert_true(strata_node_find(ctx, "Disk-0.part_1") == b);
    strata_node_unref(a);
    strata_node_unref(b);
    strata_context_free(ctx);
}

static void test_node_name_duplicate(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *a = open_ok(ctx, "{\"driver\": \"null\", \"node-name\": \"disk0\"}");

    open_fails(ctx, "{\"driver\": \"null\", \"node-name\": \"disk0\"}",
               "node-name: a node named 'disk0' already exists");
    g_assert_true(strata_node_find(ctx, "disk0") == a);
    if (block_driver_find("raw")) {
        open_fails(ctx, "{\"driver\": \"raw\", \"node-name\": \"top\","
                        " \"file\": {\"driver\": \"null\", \"node-name\": \"disk0\"}}",
                   "file.node-name: a node named 'disk0' already exists");
        /* A parent may not take its child's name either. */
        open_fails(ctx, "{\"driver\": \"raw\", \"node-name\": \"x\","
                        " \"file\": {\"driver\": \"null\", \"node-name\": \"x\"}}",
                   "file.node-name: a node named 'x' already exists");
    }
    strata_node_unref(a);
    /* The name is free again once the node has closed. */
    a = open_ok(ctx, "{\"driver\": \"null\", \"node-name\": \"disk0\"}");
    strata_node_unref(a);
    strata_context_free(ctx);
}

static void test_node_name_auto(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *a = open_ok(ctx, "{\"driver\": \"null\"}");
    StrataNode *b = open_ok(ctx, "{\"driver\": \"null\"}");
    const char *na = strata_node_get_name(a);
    const char *nb = strata_node_get_name(b);

    g_assert_true(na[0] == '#' && nb[0] == '#');
    g_assert_cmpstr(na, !=, nb);
    g_assert_true(a->auto_named && b->auto_named);
    g_assert_true(strata_node_find(ctx, na) == a);
    g_assert_true(strata_node_find(ctx, nb) == b);
    strata_node_unref(a);
    strata_node_unref(b);

    if (block_driver_find("raw")) {
        StrataNode *top = open_ok(ctx, "{\"driver\": \"raw\", \"node-name\": \"top\","
                                       " \"file\": {\"driver\": \"null\"}}");
        g_assert_true(node_filtered(top)->node_name[0] == '#');
        g_assert_true(node_filtered(top)->auto_named);
        strata_node_unref(top);
    }
    g_assert_cmpuint(g_hash_table_size(ctx->nodes), ==, 0);
    strata_context_free(ctx);
}

/* ---- references and close order ------------------------------------------------ */

static void test_refcount_ref_unref(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *a = open_ok(ctx, "{\"driver\": \"null\", \"node-name\": \"a\"}");

    strata_node_ref(a);
    strata_node_unref(a);
    g_assert_true(strata_node_find(ctx, "a") == a);
    strata_node_unref(a);
    g_assert_null(strata_node_find(ctx, "a"));
    strata_node_unref(NULL);
    strata_context_free(ctx);
}

static void test_refcount_parent_before_child(void)
{
    if (!have_raw()) {
        return;
    }
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *m0 = open_ok(ctx, "{\"driver\": \"mem\", \"node-name\": \"m0\","
                                  " \"size\": 4096}");
    StrataNode *top = open_ok(ctx, "{\"driver\": \"raw\", \"node-name\": \"top\","
                                   " \"file\": \"m0\"}");

    /* The user's reference goes; the edge keeps the child open. */
    strata_node_unref(m0);
    g_assert_true(strata_node_find(ctx, "m0") == m0);
    g_assert_cmpint(m0->refcnt, ==, 1);
    /* Closing the parent drops the edge, and with it the child. */
    strata_node_unref(top);
    g_assert_null(strata_node_find(ctx, "top"));
    g_assert_null(strata_node_find(ctx, "m0"));
    strata_context_free(ctx);
}

static void test_refcount_shared_child(void)
{
    if (!have_raw()) {
        return;
    }
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *m0 = open_ok(ctx, "{\"driver\": \"mem\", \"node-name\": \"m0\","
                                  " \"size\": 4096}");
    StrataNode *r1 = open_ok(ctx, "{\"driver\": \"raw\", \"node-name\": \"r1\","
                                  " \"file\": \"m0\"}");
    StrataNode *r2 = open_ok(ctx, "{\"driver\": \"raw\", \"node-name\": \"r2\","
                                  " \"file\": \"m0\"}");

    strata_node_unref(m0);
    g_assert_cmpint(g_slist_length(m0->parents), ==, 2);
    strata_node_unref(r1);
    g_assert_null(strata_node_find(ctx, "r1"));
    g_assert_true(strata_node_find(ctx, "m0") == m0);
    g_assert_cmpint(g_slist_length(m0->parents), ==, 1);
    g_assert_true(((BlockChild *)m0->parents->data)->parent == r2);
    strata_node_unref(r2);
    g_assert_null(strata_node_find(ctx, "m0"));
    strata_context_free(ctx);
}

/* Nodes and backends the embedder leaves open close with the context. */
static void test_refcount_context_closes_leftovers(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *m0 = open_ok(ctx, "{\"driver\": \"mem\", \"node-name\": \"m0\","
                                  " \"size\": 4096}");
    backend_ok(m0, "vda", PERM_CONSISTENT_READ | PERM_WRITE, PERM_ALL);
    if (block_driver_find("raw")) {
        open_ok(ctx, "{\"driver\": \"raw\", \"file\": \"m0\"}");
        open_ok(ctx, "{\"driver\": \"raw\", \"file\": \"m0\"}");
    }
    strata_node_ref(m0);
    strata_context_free(ctx);   /* ASan reports anything not freed */
}

/* ---- permissions ----------------------------------------------------------------- */

static void test_perm_two_writers(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *m0 = open_ok(ctx, "{\"driver\": \"mem\", \"node-name\": \"m0\","
                                  " \"size\": 4096}");
    g_autoptr(StrataError) err = NULL;
    StrataBackend *a = backend_ok(m0, "vda", PERM_CONSISTENT_READ | PERM_WRITE,
                                  PERM_CONSISTENT_READ);

    g_assert_null(strata_backend_new(m0, "vdb", PERM_CONSISTENT_READ | PERM_WRITE,
                                     PERM_ALL, &err));
    g_assert_nonnull(err);
    g_assert_cmpint(strata_error_get_class(err), ==, STRATA_ERROR_PERMISSION);
    g_assert_cmpint(strata_error_get_errno(err), ==, EPERM);
    g_assert_nonnull(strstr(error_get_message(err), "backend 'vda'"));
    g_assert_nonnull(strstr(error_get_message(err), "backend 'vdb'"));
    g_assert_nonnull(strstr(error_get_message(err), "'write'"));
    g_assert_nonnull(strstr(error_get_message(err), "node 'm0'"));
    /* Nothing changed: one parent, its permissions intact. */
    g_assert_cmpint(g_slist_length(m0->parents), ==, 1);
    g_assert_cmpuint(m0->perm, ==, PERM_CONSISTENT_READ | PERM_WRITE);
    g_assert_cmpuint(m0->shared_perm, ==, PERM_CONSISTENT_READ);
    g_assert_cmpint(m0->refcnt, ==, 2);

    /* A reader is fine: vda shares consistent read. */
    StrataBackend *r = backend_ok(m0, "vdr", PERM_CONSISTENT_READ, PERM_ALL);
    strata_backend_free(r);
    strata_backend_free(a);

    /* Two writers that share write with each other coexist. */
    a = backend_ok(m0, "vda", PERM_CONSISTENT_READ | PERM_WRITE, PERM_ALL);
    StrataBackend *b = backend_ok(m0, "vdb", PERM_CONSISTENT_READ | PERM_WRITE,
                                  PERM_ALL);
    g_assert_cmpuint(m0->perm, ==, PERM_CONSISTENT_READ | PERM_WRITE);
    strata_backend_free(a);
    strata_backend_free(b);
    g_assert_cmpuint(m0->perm, ==, 0);
    g_assert_cmpuint(m0->shared_perm, ==, PERM_ALL);
    strata_node_unref(m0);
    strata_context_free(ctx);
}

/* The new user must also respect what the old user refuses to share. */
static void test_perm_reader_refused_by_exclusive(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *m0 = open_ok(ctx, "{\"driver\": \"mem\", \"node-name\": \"m0\","
                                  " \"size\": 4096}");
    g_autoptr(StrataError) err = NULL;
    StrataBackend *a = backend_ok(m0, "vda", PERM_CONSISTENT_READ, PERM_CONSISTENT_READ);

    /* Another reader is fine, whatever it shares itself. */
    StrataBackend *b = backend_ok(m0, "vdb", PERM_CONSISTENT_READ,
                                  PERM_CONSISTENT_READ | PERM_WRITE);
    strata_backend_free(b);
    g_assert_null(strata_backend_new(m0, "vdw", PERM_WRITE, PERM_ALL, &err));
    g_assert_nonnull(strstr(error_get_message(err), "backend 'vda'"));
    g_assert_nonnull(strstr(error_get_message(err), "backend 'vdw'"));
    strata_backend_free(a);
    strata_node_unref(m0);
    strata_context_free(ctx);
}

static void test_perm_read_only_node(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *m0 = open_ok(ctx, "{\"driver\": \"mem\", \"node-name\": \"m0\","
                                  " \"size\": 4096, \"read-only\": true}");
    g_autoptr(StrataError) err = NULL;

    g_assert_null(strata_backend_new(m0, "vda", PERM_CONSISTENT_READ | PERM_WRITE,
                                     PERM_ALL, &err));
    g_assert_cmpstr(error_get_message(err), ==,
                    "Block node 'm0' is read-only (needed: write)");
    g_assert_cmpint(strata_error_get_errno(err), ==, EROFS);
    g_clear_pointer(&err, error_free);
    g_assert_null(strata_backend_new(m0, "vda", PERM_RESIZE, PERM_ALL, &err));
    g_assert_cmpstr(error_get_message(err), ==,
                    "Block node 'm0' is read-only (needed: resize)");
    g_assert_null(m0->parents);

    StrataBackend *be = backend_ok(m0, "vda", PERM_CONSISTENT_READ, PERM_ALL);
    char buf[512];
    g_assert_cmpint(strata_backend_pread(be, 0, buf, sizeof(buf), 0), ==, 0);
    g_assert_cmpint(strata_backend_pwrite(be, 0, buf, sizeof(buf), 0), ==, -EROFS);
    strata_backend_free(be);
    strata_node_unref(m0);
    strata_context_free(ctx);
}

/* A format passes its users' permissions to its file: a writer on top
 * conflicts with an exclusive user of the node below. */
static void test_perm_through_format(void)
{
    if (!have_raw()) {
        return;
    }
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *m0 = open_ok(ctx, "{\"driver\": \"mem\", \"node-name\": \"m0\","
                                  " \"size\": 4096}");
    StrataNode *top = open_ok(ctx, "{\"driver\": \"raw\", \"node-name\": \"top\","
                                   " \"file\": \"m0\"}");
    g_autoptr(StrataError) err = NULL;
    StrataBackend *low = backend_ok(m0, "low", PERM_CONSISTENT_READ | PERM_WRITE,
                                    PERM_CONSISTENT_READ);

    g_assert_null(strata_backend_new(top, "vda", PERM_CONSISTENT_READ | PERM_WRITE,
                                     PERM_ALL, &err));
    g_assert_nonnull(strstr(error_get_message(err), "node 'top'"));
    g_assert_nonnull(strstr(error_get_message(err), "backend 'low'"));
    /* The failed attach left no permissions behind on the edge. */
    g_assert_cmpuint(top->file->perm, ==, 0);
    g_assert_cmpuint(m0->perm, ==, PERM_CONSISTENT_READ | PERM_WRITE);
    strata_backend_free(low);

    StrataBackend *be = backend_ok(top, "vda", PERM_CONSISTENT_READ | PERM_WRITE,
                                   PERM_CONSISTENT_READ);
    g_assert_cmpuint(top->file->perm, ==, PERM_CONSISTENT_READ | PERM_WRITE);
    g_assert_cmpuint(m0->perm, ==, PERM_CONSISTENT_READ | PERM_WRITE);
    strata_backend_free(be);
    g_assert_cmpuint(m0->perm, ==, 0);
    strata_node_unref(top);
    strata_node_unref(m0);
    strata_context_free(ctx);
}

/* ---- limits ---------------------------------------------------------------------- */

static void test_limits_mem(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *m0 = open_ok(ctx, "{\"driver\": \"mem\", \"size\": 1048576,"
                                  " \"align\": 4096, \"mem-align\": 512,"
                                  " \"max-transfer\": 65536, \"max-iov\": 16}");
    StrataLimits l;

    strata_node_get_limits(m0, &l);
    g_assert_cmpuint(l.request_alignment, ==, 4096);
    g_assert_cmpuint(l.mem_alignment, ==, 512);
    g_assert_cmpint(l.max_transfer, ==, 65536);
    g_assert_cmpint(l.max_iov, ==, 16);
    g_assert_cmpuint(l.opt_mem_alignment, ==, 512);
    /* Refreshing is idempotent. */
    node_refresh_limits(m0);
    StrataLimits l2;
    strata_node_get_limits(m0, &l2);
    assert_limits_equal(&l, &l2);
    strata_node_unref(m0);
    strata_context_free(ctx);
}

static void test_limits_inherit_through_raw(void)
{
    if (!have_raw()) {
        return;
    }
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *top = open_ok(ctx,
        "{\"driver\": \"raw\", \"node-name\": \"top\","
        " \"file\": {\"driver\": \"mem\", \"node-name\": \"m0\", \"size\": 1048576,"
        " \"align\": 4096, \"mem-align\": 512, \"iov-len-align\": 512,"
        " \"max-transfer\": 65536, \"max-iov\": 16}}");
    StrataNode *m0 = node_filtered(top);
    StrataLimits l;

    strata_node_get_limits(top, &l);
    /* Transfer limits flow up ... */
    g_assert_cmpint(l.max_transfer, ==, 65536);
    g_assert_cmpint(l.max_iov, ==, 16);
    g_assert_cmpuint(l.opt_mem_alignment, ==, 512);
    /* ... alignment requirements stay with the node that has them: the
     * child's entry pads, so the parent need not. */
    g_assert_cmpuint(l.request_alignment, ==, 1);
    g_assert_cmpuint(l.mem_alignment, ==, 1);
    g_assert_cmpuint(l.iov_len_alignment, ==, 1);

    /* A change below reaches the parent through node_refresh_limits. */
    m0->bl.max_transfer = 0;
    node_refresh_limits(m0);          /* mem puts its own values back */
    strata_node_get_limits(top, &l);
    g_assert_cmpint(l.max_transfer, ==, 65536);
    strata_node_unref(top);
    strata_context_free(ctx);
}

/* ---- reopen ------------------------------------------------------------------------ */

static bool reopen(StrataNode *node, const char *json, StrataError **errp)
{
    return strata_node_reopen_json(node, json, errp);
}

static void reopen_ok(StrataNode *node, const char *json)
{
    g_autoptr(StrataError) err = NULL;

    if (!reopen(node, json, &err)) {
        g_error("reopen %s: %s", json, error_get_message(err));
    }
}

static void reopen_fails(StrataNode *node, const char *json, const char *msg)
{
    g_autoptr(StrataError) err = NULL;

    g_assert_false(reopen(node, json, &err));
    g_assert_nonnull(err);
    g_assert_cmpstr(error_get_message(err), ==, msg);
}

static void test_reopen_read_only_toggle(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *m0 = open_ok(ctx, "{\"driver\": \"mem\", \"node-name\": \"m0\","
                                  " \"size\": 65536}");
    StrataBackend *rd = backend_ok(m0, "reader", PERM_CONSISTENT_READ, PERM_ALL);
    g_autoptr(StrataError) err = NULL;
    char buf[4096];

    reopen_ok(m0, "{\"read-only\": true}");
    g_assert_true(m0->read_only);
    g_assert_cmpstr(node_opt(m0, "read-only"), ==, "true");
    g_assert_null(strata_backend_new(m0, "writer", PERM_WRITE, PERM_ALL, &err));
    g_assert_cmpint(strata_error_get_errno(err), ==, EROFS);
    g_assert_cmpint(strata_backend_pread(rd, 0, buf, sizeof(buf), 0), ==, 0);

    reopen_ok(m0, "{\"read-only\": false}");
    g_assert_false(m0->read_only);
    g_assert_cmpstr(node_opt(m0, "read-only"), ==, "false");
    StrataBackend *wr = backend_ok(m0, "writer", PERM_CONSISTENT_READ | PERM_WRITE,
                                   PERM_ALL);
    memset(buf, 0xa5, sizeof(buf));
    g_assert_cmpint(strata_backend_pwrite(wr, 4096, buf, sizeof(buf), 0), ==, 0);
    g_assert_cmpint(memcmp(mem_get_data(m0) + 4096, buf, sizeof(buf)), ==, 0);

    /* An empty change set is a valid no-op transaction. */
    reopen_ok(m0, "{}");
    g_assert_false(m0->read_only);

    strata_backend_free(wr);
    strata_backend_free(rd);
    strata_node_unref(m0);
    strata_context_free(ctx);
}

/* Going read-only under a writer aborts: nothing changes, the error names
 * the writer. */
static void test_reopen_abort_writer(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *m0 = open_ok(ctx, "{\"driver\": \"mem\", \"node-name\": \"m0\","
                                  " \"size\": 65536}");
    StrataBackend *be = backend_ok(m0, "vda", PERM_CONSISTENT_READ | PERM_WRITE,
                                   PERM_ALL);
    g_autoptr(StrataError) err = NULL;
    char buf[512];

    g_assert_false(reopen(m0, "{\"read-only\": true, \"cache\": {\"no-flush\": true},"
                              " \"detect-zeroes\": \"on\"}", &err));
    g_assert_cmpstr(error_get_message(err), ==,
                    "Read-only block node 'm0' cannot support read-write users");
    g_assert_cmpint(strata_error_get_class(err), ==, STRATA_ERROR_PERMISSION);
    g_assert_false(m0->read_only);
    g_assert_false(m0->cache_no_flush);
    g_assert_cmpint(m0->detect_zeroes, ==, DETECT_ZEROES_OFF);
    g_assert_null(node_opt(m0, "read-only"));
    g_assert_null(node_opt(m0, "detect-zeroes"));

    /* The backend still writes, and the drained section has ended. */
    memset(buf, 0x3c, sizeof(buf));
    g_assert_cmpint(strata_backend_pwrite(be, 0, buf, sizeof(buf), 0), ==, 0);
    g_assert_cmpint(m0->quiesce_counter, ==, 0);

    /* Once the writer goes, the same change succeeds. */
    strata_backend_free(be);
    reopen_ok(m0, "{\"read-only\": true}");
    g_assert_true(m0->read_only);
    strata_node_unref(m0);
    strata_context_free(ctx);
}

static void test_reopen_no_flush(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *m0 = open_ok(ctx, "{\"driver\": \"mem\", \"node-name\": \"m0\","
                                  " \"size\": 65536}");
    StrataBackend *be = backend_ok(m0, "vda", PERM_CONSISTENT_READ | PERM_WRITE,
                                   PERM_ALL);
    char buf[512] = { 1 };

    g_assert_cmpint(strata_backend_pwrite(be, 0, buf, sizeof(buf), 0), ==, 0);
    g_assert_cmpint(strata_backend_flush(be), ==, 0);
    g_assert_cmpuint(counters(m0).flushes, ==, 1);

    reopen_ok(m0, "{\"cache\": {\"no-flush\": true}}");
    g_assert_true(m0->cache_no_flush);
    g_assert_cmpstr(node_opt(m0, "cache.no-flush"), ==, "true");
    g_assert_cmpint(strata_backend_pwrite(be, 0, buf, sizeof(buf), 0), ==, 0);
    g_assert_cmpint(strata_backend_flush(be), ==, 0);
    g_assert_cmpuint(counters(m0).flushes, ==, 1);

    reopen_ok(m0, "{\"cache\": {\"no-flush\": false}}");
    g_assert_cmpint(strata_backend_pwrite(be, 0, buf, sizeof(buf), 0), ==, 0);
    g_assert_cmpint(strata_backend_flush(be), ==, 0);
    g_assert_cmpuint(counters(m0).flushes, ==, 2);

    strata_backend_free(be);
    strata_node_unref(m0);
    strata_context_free(ctx);
}

static void test_reopen_detect_zeroes(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *m0 = open_ok(ctx, "{\"driver\": \"mem\", \"node-name\": \"m0\","
                                  " \"size\": 65536}");
    StrataBackend *be = backend_ok(m0, "vda", PERM_CONSISTENT_READ | PERM_WRITE,
                                   PERM_ALL);
    char zero[4096] = { 0 };

    g_assert_cmpint(strata_backend_pwrite(be, 0, zero, sizeof(zero), 0), ==, 0);
    g_assert_cmpuint(counters(m0).requests[REQ_WRITE], ==, 1);
    g_assert_cmpuint(counters(m0).requests[REQ_ZEROES], ==, 0);

    reopen_ok(m0, "{\"detect-zeroes\": \"on\"}");
    g_assert_cmpint(m0->detect_zeroes, ==, DETECT_ZEROES_ON);
    g_assert_cmpstr(node_opt(m0, "detect-zeroes"), ==, "on");
    g_assert_cmpint(strata_backend_pwrite(be, 0, zero, sizeof(zero), 0), ==, 0);
    g_assert_cmpuint(counters(m0).requests[REQ_WRITE], ==, 1);
    g_assert_cmpuint(counters(m0).requests[REQ_ZEROES], ==, 1);

    /* unmap needs discard=unmap, which this node does not have. */
    reopen_fails(m0, "{\"detect-zeroes\": \"unmap\"}",
                 "detect-zeroes: 'unmap' needs discard=unmap on node 'm0'");
    g_assert_cmpint(m0->detect_zeroes, ==, DETECT_ZEROES_ON);

    reopen_ok(m0, "{\"detect-zeroes\": \"off\"}");
    g_assert_cmpint(strata_backend_pwrite(be, 0, zero, sizeof(zero), 0), ==, 0);
    g_assert_cmpuint(counters(m0).requests[REQ_WRITE], ==, 2);
    g_assert_cmpuint(counters(m0).requests[REQ_ZEROES], ==, 1);

    strata_backend_free(be);
    strata_node_unref(m0);
    strata_context_free(ctx);
}

/*
 * A failed flush over the page cache sticks for the node's lifetime: a
 * reopen (same descriptor or a new one) must not make the next flush
 * succeed over data the kernel already reported lost.
 */
static void test_reopen_keeps_flush_failed(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *m0 = open_ok(ctx, "{\"driver\": \"mem\", \"node-name\": \"m0\","
                                  " \"size\": 65536}");
    StrataBackend *be = backend_ok(m0, "vda", PERM_CONSISTENT_READ | PERM_WRITE,
                                   PERM_ALL);
    char buf[512] = { 7 };

    g_assert_cmpint(strata_backend_pwrite(be, 0, buf, sizeof(buf), 0), ==, 0);
    mem_inject_error(m0, REQ_FLUSH, 0, -1, EIO, 1);
    g_assert_cmpint(strata_backend_flush(be), ==, -EIO);
    g_assert_cmpint(strata_backend_flush(be), ==, -EIO);   /* sticky */
    g_assert_true(m0->flush_failed);

    reopen_ok(m0, "{}");
    reopen_ok(m0, "{\"detect-zeroes\": \"on\"}");
    g_assert_true(m0->flush_failed);
    g_assert_cmpint(strata_backend_pwrite(be, 0, buf, sizeof(buf), 0), ==, 0);
    g_assert_cmpint(strata_backend_flush(be), ==, -EIO);
    strata_backend_free(be);
    strata_node_unref(m0);
    strata_context_free(ctx);
}

/*
 * The same with the error injected by blkdebug on its flush_to_disk event,
 * over a buffered file: reopening only detect-zeroes (the file driver
 * keeps its descriptor) must leave the next guest flush failing.
 */
static void test_reopen_keeps_flush_failed_blkdebug(void)
{
    g_autofree char *dir = g_dir_make_tmp("strata-graph-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "img", NULL);
    g_autofree char *json = NULL;
    StrataContext *ctx = strata_context_new(NULL);
    char buf[4096];

    g_assert_true(g_file_set_contents(path, "", 0, NULL));
    g_assert_cmpint(truncate(path, 65536), ==, 0);
    json = g_strdup_printf(
        "{\"driver\": \"blkdebug\", \"node-name\": \"bd\","
        " \"inject-error\": [{\"event\": \"flush_to_disk\", \"errno\": 5,"
        " \"once\": true}],"
        " \"image\": {\"driver\": \"file\", \"filename\": \"%s\","
        " \"cache\": {\"direct\": false}}}", path);
    StrataNode *bd = open_ok(ctx, json);
    StrataBackend *be = backend_ok(bd, "vda", PERM_CONSISTENT_READ | PERM_WRITE,
                                   PERM_CONSISTENT_READ);

    memset(buf, 0x5a, sizeof(buf));
    g_assert_cmpint(strata_backend_pwrite(be, 0, buf, sizeof(buf), 0), ==, 0);
    g_assert_cmpint(strata_backend_flush(be), ==, -EIO);
    reopen_ok(bd, "{\"detect-zeroes\": \"on\"}");
    g_assert_cmpint(strata_backend_pwrite(be, 4096, buf, sizeof(buf), 0), ==, 0);
    /* The injected error was "once": only the sticky flag can fail it. */
    g_assert_cmpint(strata_backend_flush(be), ==, -EIO);

    strata_backend_free(be);
    strata_node_unref(bd);
    strata_context_free(ctx);
    g_assert_cmpint(unlink(path), ==, 0);
    g_assert_cmpint(rmdir(dir), ==, 0);
}

static void test_reopen_bad_options(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *m0 = open_ok(ctx, "{\"driver\": \"mem\", \"node-name\": \"m0\","
                                  " \"size\": 65536}");
    g_autoptr(StrataError) err = NULL;

    reopen_fails(m0, "{\"foo\": 1}", "foo: unknown option");
    reopen_fails(m0, "{\"read-only\": \"maybe\"}", "read-only: expected boolean");
    reopen_fails(m0, "{\"cache\": {\"direct\": 1}}", "cache.direct: expected boolean");
    reopen_fails(m0, "{\"cache\": {\"other\": true}}", "cache.other: unknown option");
    reopen_fails(m0, "{\"detect-zeroes\": \"sometimes\"}",
                 "detect-zeroes: expected one of off, on, unmap");
    /* QEMU's rule and words: what cannot change may only repeat the
     * value the node has. */
    reopen_fails(m0, "{\"node-name\": \"m1\"}",
                 "Cannot change the option 'node-name'");
    reopen_fails(m0, "{\"force-share\": true}",
                 "Cannot change the option 'force-share'");
    /* mem's own options are not reopen options. */
    reopen_fails(m0, "{\"size\": 4096}", "Cannot change the option 'size'");
    reopen_fails(m0, "{\"align\": 512}", "Cannot change the option 'align'");
    {
        /* The same value passes (and changes nothing). */
        g_autoptr(OptNode) same = opts_parse_dotted("size=65536,node-name=m0,"
                                                    "driver=mem", NULL);
        g_assert_true(node_reopen(m0, same, NULL));
    }
    reopen_fails(m0, "[true]", "JSON top level must be an object, got list");
    {
        g_autoptr(OptNode) t = opts_parse_json("{\"x\": [true]}", NULL);
        g_assert_false(node_reopen(m0, opts_peek(t, "x"), &err));
        g_assert_cmpstr(error_get_message(err), ==,
                        "reopen options: expected an object");
        g_clear_pointer(&err, error_free);
    }
    g_assert_false(reopen(m0, "{", &err));
    g_assert_nonnull(err);

    /* A valid change after an invalid one in the same set: all or none. */
    reopen_fails(m0, "{\"read-only\": true, \"driver\": \"null\"}",
                 "Cannot change the option 'driver'");
    g_assert_false(m0->read_only);

    /* Dotted-key values (strings) convert as at open. */
    {
        g_autoptr(OptNode) ch = opts_parse_dotted("read-only=on,cache.direct=on", NULL);
        g_assert_true(node_reopen(m0, ch, NULL));
        g_assert_true(m0->read_only);
        g_assert_true(m0->cache_direct);
        /* The caller's tree is not marked consumed by the reopen. */
        g_assert_true(opts_check_consumed(ch, NULL) == false);
    }
    strata_node_unref(m0);
    strata_context_free(ctx);
}

/* The changes reach every node down the filtered chain; detect-zeroes
 * only the node named. */
static void test_reopen_chain(void)
{
    if (!have_raw()) {
        return;
    }
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *top = open_ok(ctx,
        "{\"driver\": \"raw\", \"node-name\": \"top\","
        " \"file\": {\"driver\": \"mem\", \"node-name\": \"m0\", \"size\": 65536}}");
    StrataNode *m0 = node_filtered(top);

    reopen_ok(top, "{\"read-only\": true, \"cache\": {\"direct\": true,"
                   " \"no-flush\": true}, \"detect-zeroes\": \"on\"}");
    g_assert_true(top->read_only && m0->read_only);
    g_assert_true(top->cache_direct && m0->cache_direct);
    g_assert_true(top->cache_no_flush && m0->cache_no_flush);
    g_assert_cmpint(top->detect_zeroes, ==, DETECT_ZEROES_ON);
    g_assert_cmpint(m0->detect_zeroes, ==, DETECT_ZEROES_OFF);
    g_assert_cmpstr(node_opt(m0, "cache.direct"), ==, "true");

    /* A writer through the format refuses read-only on the way back:
     * the error names the outermost user. */
    reopen_ok(top, "{\"read-only\": false}");
    g_assert_false(top->read_only || m0->read_only);
    StrataBackend *be = backend_ok(top, "vda", PERM_CONSISTENT_READ | PERM_WRITE,
                                   PERM_ALL);
    reopen_fails(top, "{\"read-only\": true}",
                 "Read-only block node 'top' cannot support read-write users");
    /* Reopening the file alone under the format: the format writes. */
    reopen_fails(m0, "{\"read-only\": true}",
                 "Read-only block node 'm0' cannot support read-write users");
    g_assert_false(top->read_only || m0->read_only);
    g_assert_true(m0->cache_direct);
    strata_backend_free(be);
    strata_node_unref(top);
    strata_context_free(ctx);
}

typedef struct AioCount {
    int done;
    int failed;
} AioCount;

static void aio_count_cb(void *opaque, int64_t ret)
{
    AioCount *c = opaque;
    c->done++;
    if (ret != 0) {
        c->failed++;
    }
}

/* Reopen drains: requests in flight when it starts have completed when it
 * returns, and the changes apply to requests that arrive later. */
static void test_reopen_drains(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *m0 = open_ok(ctx, "{\"driver\": \"mem\", \"node-name\": \"m0\","
                                  " \"size\": 65536, \"latency-ns\": 2000000}");
    StrataBackend *be = backend_ok(m0, "vda", PERM_CONSISTENT_READ | PERM_WRITE,
                                   PERM_ALL);
    static uint8_t data[8][512];
    struct iovec iov[8];
    AioCount c = { 0 };

    for (int i = 0; i < 8; i++) {
        memset(data[i], i + 1, sizeof(data[i]));
        iov[i] = (struct iovec) { data[i], sizeof(data[i]) };
        g_assert_cmpint(strata_backend_aio_pwritev(be, i * 512, &iov[i], 1, 0,
                                                   aio_count_cb, &c), ==, 0);
    }
    /* Get them into the driver, where they sleep. */
    while (counters(m0).in_flight < 8) {
        strata_context_run_once(ctx, true);
    }
    g_assert_cmpint(c.done, ==, 0);
    reopen_ok(m0, "{\"cache\": {\"no-flush\": true}}");
    g_assert_cmpint(c.done, ==, 8);
    g_assert_cmpint(c.failed, ==, 0);
    g_assert_cmpint(counters(m0).in_flight, ==, 0);
    for (int i = 0; i < 8; i++) {
        g_assert_cmpint(memcmp(mem_get_data(m0) + i * 512, data[i], 512), ==, 0);
    }
    strata_backend_free(be);
    strata_node_unref(m0);
    strata_context_free(ctx);
}

static int count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;

    g_assert_nonnull(d);
    while (readdir(d)) {
        n++;
    }
    closedir(d);
    return n;
}

/*
 * Through a driver with reopen callbacks: the file driver reopens its
 * descriptor with and without O_DIRECT, limits follow, data stays; a
 * transaction that fails after the driver prepared leaves no descriptor
 * behind (the driver's abort ran).
 */
static void test_reopen_file_driver(void)
{
    if (!block_driver_find("file") || !block_driver_find("raw")) {
        g_test_skip("the file and raw drivers are not built in yet");
        return;
    }
    g_autofree char *dir = g_dir_make_tmp("strata-graph-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "disk.img", NULL);
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"raw\", \"node-name\": \"top\", \"file\": {\"driver\": \"file\","
        " \"node-name\": \"proto\", \"filename\": \"%s\", \"aio\": \"threads\"}}", path);
    g_autoptr(StrataError) err = NULL;
    uint8_t *wbuf = g_malloc(65536), *rbuf = g_malloc(65536);
    uint8_t *model = g_malloc0(MiB);      /* what the file should hold */

    g_assert_true(file_create(path, MiB, PREALLOC_OFF, NULL));
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *top = open_ok(ctx, json);
    StrataNode *proto = node_filtered(top);
    StrataBackend *be = backend_ok(top, "vda", PERM_CONSISTENT_READ | PERM_WRITE,
                                   PERM_CONSISTENT_READ);
    FileInfo info;

    for (int i = 0; i < 65536; i++) {
        wbuf[i] = (uint8_t)(i * 7 + 1);
    }
    g_assert_cmpint(strata_backend_pwrite(be, 1000, wbuf, 65536, 0), ==, 0);
    memcpy(model + 1000, wbuf, 65536);

    if (!reopen(top, "{\"cache\": {\"direct\": true}}", &err)) {
        /* A filesystem without O_DIRECT: refused, and nothing changed. */
        g_test_message("O_DIRECT reopen refused here: %s", error_get_message(err));
        g_assert_false(top->cache_direct || proto->cache_direct);
        g_clear_pointer(&err, error_free);
    } else {
        g_assert_true(top->cache_direct && proto->cache_direct);
        file_get_info(proto, &info);
        g_assert_true(info.direct);
        g_assert_cmpuint(proto->bl.request_alignment, ==,
                         MAX(info.request_alignment, info.iov_len_alignment));
        g_assert_cmpint(strata_backend_pread(be, 1000, rbuf, 65536, 0), ==, 0);
        g_assert_cmpmem(rbuf, 65536, wbuf, 65536);
        g_assert_cmpint(strata_backend_pwrite(be, 77, wbuf, 4000, 0), ==, 0);
        memcpy(model + 77, wbuf, 4000);
    }

    /* read-only under a writer fails after the file driver prepared a new
     * descriptor (cache.direct changes too): its abort must close it. */
    int fds = count_open_fds();
    bool direct = proto->cache_direct;
    g_autofree char *change = g_strdup_printf(
        "{\"read-only\": true, \"cache\": {\"direct\": %s}}", direct ? "false" : "true");
    g_assert_false(reopen(top, change, &err));
    g_assert_nonnull(strstr(error_get_message(err), "cannot support read-write users"));
    g_assert_cmpint(count_open_fds(), ==, fds);
    g_assert_cmpint(proto->cache_direct, ==, direct);
    g_assert_false(proto->read_only);
    file_get_info(proto, &info);
    g_assert_cmpint(info.direct, ==, direct);
    g_clear_pointer(&err, error_free);

    /* Back to buffered, and the data is all there. */
    reopen_ok(top, "{\"cache\": {\"direct\": false}}");
    file_get_info(proto, &info);
    g_assert_false(info.direct);
    g_assert_cmpuint(proto->bl.request_alignment, ==, 1);
    g_assert_cmpint(strata_backend_pread(be, 1000, rbuf, 65536, 0), ==, 0);
    g_assert_cmpmem(rbuf, 65536, model + 1000, 65536);

    /* Without the writer, read-only works and the file is reopened
     * read-only underneath. */
    strata_backend_free(be);
    reopen_ok(top, "{\"read-only\": true}");
    g_assert_true(proto->read_only);
    g_assert_null(strata_backend_new(top, "vdb", PERM_WRITE, PERM_ALL, &err));
    strata_node_unref(top);
    strata_context_free(ctx);
    g_unlink(path);
    g_rmdir(dir);
    g_free(wbuf);
    g_free(rbuf);
    g_free(model);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/graph/open/json-and-dotted-agree", test_open_json_dotted_mem);
    g_test_add_func("/graph/log-func", test_log_func);
    g_test_add_func("/graph/open/json-and-dotted-agree-with-child",
                    test_open_json_dotted_child);
    g_test_add_func("/graph/open/child-inline", test_open_child_inline);
    g_test_add_func("/graph/open/child-by-node-name", test_open_child_by_reference);
    g_test_add_func("/graph/open/errors-name-the-key", test_open_errors);
    g_test_add_func("/graph/open/errors-in-child-name-the-path",
                    test_open_errors_in_child);
    g_test_add_func("/graph/node-name/invalid", test_node_name_invalid);
    g_test_add_func("/graph/node-name/duplicate", test_node_name_duplicate);
    g_test_add_func("/graph/node-name/auto-generated", test_node_name_auto);
    g_test_add_func("/graph/refcount/ref-unref", test_refcount_ref_unref);
    g_test_add_func("/graph/refcount/parent-closes-before-child",
                    test_refcount_parent_before_child);
    g_test_add_func("/graph/refcount/child-shared-by-two-parents",
                    test_refcount_shared_child);
    g_test_add_func("/graph/refcount/context-closes-leftovers",
                    test_refcount_context_closes_leftovers);
    g_test_add_func("/graph/perm/two-writers-conflict", test_perm_two_writers);
    g_test_add_func("/graph/perm/unshared-read-refuses-writer",
                    test_perm_reader_refused_by_exclusive);
    g_test_add_func("/graph/perm/read-only-node-refuses-write",
                    test_perm_read_only_node);
    g_test_add_func("/graph/perm/through-format", test_perm_through_format);
    g_test_add_func("/graph/limits/mem", test_limits_mem);
    g_test_add_func("/graph/limits/inherited-through-raw",
                    test_limits_inherit_through_raw);
    g_test_add_func("/graph/reopen/read-only-toggle", test_reopen_read_only_toggle);
    g_test_add_func("/graph/reopen/abort-under-writer", test_reopen_abort_writer);
    g_test_add_func("/graph/reopen/cache-no-flush", test_reopen_no_flush);
    g_test_add_func("/graph/reopen/detect-zeroes", test_reopen_detect_zeroes);
    g_test_add_func("/graph/reopen/keeps-flush-failed",
                    test_reopen_keeps_flush_failed);
    g_test_add_func("/graph/reopen/keeps-flush-failed-blkdebug",
                    test_reopen_keeps_flush_failed_blkdebug);
    g_test_add_func("/graph/reopen/bad-options", test_reopen_bad_options);
    g_test_add_func("/graph/reopen/filtered-chain", test_reopen_chain);
    g_test_add_func("/graph/reopen/drains-in-flight", test_reopen_drains);
    g_test_add_func("/graph/reopen/file-driver-commit-and-abort",
                    test_reopen_file_driver);
    return g_test_run();
}
