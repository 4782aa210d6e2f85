/*
 * Tests of the raw format driver: windows, refusal outside them,
 * pass-through of every request type, debug events, truncate
 * SPDX-License-Identifier: MIT
 *
 * Most tests put raw over a mem node, whose bytes, trace and counters show
 * exactly what reached the child; one runs over an O_DIRECT file with an
 * unaligned window offset, so the file node pads.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <glib.h>

#include "block/backend-int.h"
#include "block/block-int.h"
#include "block/drivers.h"
#include "block/file-posix.h"
#include "block/mem.h"

#define RW_PERM (STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE)
#define RW_SHARED (STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE_UNCHANGED)
#define KIB 1024

typedef struct Env {
    StrataContext *ctx;
    StrataNode *raw;
    StrataNode *child;          /* raw's file child */
    StrataBackend *be;
} Env;

static bool env_open(Env *e, const char *json, uint32_t perm,
                     StrataError **errp)
{
    memset(e, 0, sizeof(*e));
    e->ctx = strata_context_new(errp);
    g_assert_nonnull(e->ctx);
    e->raw = strata_node_open_json(e->ctx, json, errp);
    if (!e->raw) {
        strata_context_free(e->ctx);
        e->ctx = NULL;
        return false;
    }
    g_assert_true(e->raw->drv == &bdrv_raw);
    e->child = node_filtered(e->raw);
    g_assert_nonnull(e->child);
    e->be = strata_backend_new(e->raw, "test", perm, RW_SHARED, errp);
    strata_node_unref(e->raw);
    g_assert_nonnull(e->be);
    return true;
}

static void env_open_ok(Env *e, const char *json, uint32_t perm)
{
    g_autoptr(StrataError) err = NULL;
    if (!env_open(e, json, perm, &err)) {
        g_error("opening %s: %s", json, error_get_message(err));
    }
}

static void env_close(Env *e)
{
    strata_context_free(e->ctx);
    memset(e, 0, sizeof(*e));
}

/* A raw window [offset, offset + size) over a 1 MiB mem node. */
static char *mem_window_json(int64_t offset, int64_t size, const char *extra)
{
    GString *s = g_string_new("{\"driver\": \"raw\"");
    if (offset >= 0) {
        g_string_append_printf(s, ", \"offset\": %" PRId64, offset);
    }
    if (size >= 0) {
        g_string_append_printf(s, ", \"size\": %" PRId64, size);
    }
    g_string_append_printf(s, ", \"discard\": \"unmap\", \"file\": {\"driver\": "
                           "\"mem\", \"size\": \"1M\", \"discard\": \"unmap\"%s%s}}",
                           extra ? ", " : "", extra ? extra : "");
    return g_string_free(s, false);
}

/* A driver-level call on a node from a coroutine of @ctx, to completion. */
typedef struct Call {
    StrataNode *node;
    BlockReqType type;
    int64_t offset, bytes;
    void *buf;
    int ret;
    bool done;
} Call;

static void call_co(void *opaque)
{
    Call *c = opaque;
    IOVector v;

    iov_init_buf(&v, c->buf, (size_t)c->bytes);
    switch (c->type) {
    case REQ_READ:
        c->ret = node_co_preadv(c->node, c->offset, c->bytes, &v, 0);
        break;
    case REQ_WRITE:
        c->ret = node_co_pwritev(c->node, c->offset, c->bytes, &v, 0);
        break;
    case REQ_ZEROES:
        c->ret = node_co_pwrite_zeroes(c->node, c->offset, c->bytes, 0);
        break;
    case REQ_DISCARD:
        c->ret = node_co_pdiscard(c->node, c->offset, c->bytes);
        break;
    default:
        g_assert_not_reached();
    }
    c->done = true;
}

static int node_call(Env *e, StrataNode *node, BlockReqType type,
                     int64_t offset, int64_t bytes, void *buf)
{
    Call c = { node, type, offset, bytes, buf, 0, false };
    loop_co_spawn(e->ctx->loop, call_co, &c);
    while (!c.done) {
        loop_run_once(e->ctx->loop, true);
    }
    return c.ret;
}

/* ---- windows ---------------------------------------------------------------- */

static void test_window_offset_added(void)
{
    g_autofree char *json = mem_window_json(64 * KIB, 128 * KIB, NULL);
    uint8_t buf[3000], back[3000];
    const uint8_t *mem;
    Env e;

    env_open_ok(&e, json, RW_PERM);
    g_assert_cmpint(strata_backend_get_length(e.be), ==, 128 * KIB);

    for (unsigned i = 0; i < sizeof(buf); i++) {
        buf[i] = (uint8_t)(i * 7 + 3);
    }
    g_assert_cmpint(strata_backend_pwrite(e.be, 1001, buf, sizeof(buf), 0), ==, 0);
    mem = mem_get_data(e.child);
    g_assert_cmpmem(mem + 64 * KIB + 1001, sizeof(buf), buf, sizeof(buf));
    /* Nothing outside the window moved. */
    for (int i = 0; i < 64 * KIB + 1001; i++) {
        g_assert_cmpint(mem[i], ==, 0);
    }
    g_assert_cmpint(strata_backend_pread(e.be, 1001, back, sizeof(back), 0), ==, 0);
    g_assert_cmpmem(back, sizeof(back), buf, sizeof(buf));

    /* The last byte of the window. */
    g_assert_cmpint(strata_backend_pwrite(e.be, 128 * KIB - 1, buf, 1, 0), ==, 0);
    g_assert_cmpint(mem[64 * KIB + 128 * KIB - 1], ==, buf[0]);
    g_assert_cmpint(mem[64 * KIB + 128 * KIB], ==, 0);
    env_close(&e);
}

static void test_window_refuses_outside(void)
{
    g_autofree char *json = mem_window_json(64 * KIB, 128 * KIB, NULL);
    uint8_t buf[1024] = { 0 };
    MemCounters before, after;
    Env e;

    env_open_ok(&e, json, RW_PERM);
    mem_get_counters(e.child, &before);

    /* At the backend: past the end of the device. */
    g_assert_cmpint(strata_backend_pread(e.be, 128 * KIB - 512, buf, 1024, 0),
                    ==, -EIO);
    g_assert_cmpint(strata_backend_pwrite(e.be, 128 * KIB, buf, 1, 0), ==, -EIO);

    /* At the node itself: the window holds. */
    g_assert_cmpint(node_call(&e, e.raw, REQ_READ, 128 * KIB - 512, 1024, buf),
                    ==, -EINVAL);
    g_assert_cmpint(node_call(&e, e.raw, REQ_WRITE, 128 * KIB - 512, 1024, buf),
                    ==, -EINVAL);
    g_assert_cmpint(node_call(&e, e.raw, REQ_ZEROES, 127 * KIB, 4 * KIB, NULL),
                    ==, -EINVAL);
    g_assert_cmpint(node_call(&e, e.raw, REQ_DISCARD, 127 * KIB, 4 * KIB, NULL),
                    ==, -EINVAL);

    /* None of it reached the child. */
    mem_get_counters(e.child, &after);
    for (int t = 0; t < REQ_TYPE__MAX; t++) {
        g_assert_cmpuint(after.requests[t], ==, before.requests[t]);
    }
    env_close(&e);
}

static void test_window_beyond_file(void)
{
    StrataContext *ctx = strata_context_new(NULL);

    {
        g_autoptr(StrataError) err = NULL;
        g_autofree char *json = mem_window_json(1024 * KIB - 4 * KIB, 8 * KIB,
                                                NULL);
        g_assert_null(strata_node_open_json(ctx, json, &err));
        g_assert_true(g_str_has_prefix(error_get_message(err),
                                       "size: the window [1044480, 1052672) "
                                       "extends beyond the end of node"));
        g_assert_cmpint(error_get_errno(err), ==, EINVAL);
    }
    {
        g_autoptr(StrataError) err = NULL;
        g_autofree char *json = mem_window_json(2048 * KIB, -1, NULL);
        g_assert_null(strata_node_open_json(ctx, json, &err));
        g_assert_true(g_str_has_prefix(error_get_message(err),
                                       "offset: 2097152 is beyond the end"));
    }
    {
        /* Exactly the whole file is fine, and so is an empty window. */
        g_autofree char *json = mem_window_json(0, 1024 * KIB, NULL);
        StrataNode *n = strata_node_open_json(ctx, json, NULL);
        g_assert_nonnull(n);
        g_assert_cmpint(strata_node_get_length(n), ==, 1024 * KIB);
        strata_node_unref(n);
        g_autofree char *json2 = mem_window_json(1024 * KIB, 0, NULL);
        n = strata_node_open_json(ctx, json2, NULL);
        g_assert_nonnull(n);
        g_assert_cmpint(strata_node_get_length(n), ==, 0);
        strata_node_unref(n);
    }
    strata_context_free(ctx);
}

/* ---- pass-through ------------------------------------------------------------- */

static void test_pass_zeroes_discard_status(void)
{
    g_autofree char *json = mem_window_json(256 * KIB, 512 * KIB, NULL);
    g_autofree uint8_t *buf = g_malloc(512 * KIB);
    const uint8_t *mem;
    MemTraceEntry t;
    int64_t pnum;
    Env e;

    env_open_ok(&e, json, RW_PERM);
    mem = mem_get_data(e.child);
    memset(buf, 0x11, 512 * KIB);
    g_assert_cmpint(strata_backend_pwrite(e.be, 0, buf, 512 * KIB, 0), ==, 0);

    /* Write-zeroes lands at offset + 256K, with its flags. */
    mem_trace_clear(e.child);
    g_assert_cmpint(strata_backend_pwrite_zeroes(e.be, 64 * KIB, 64 * KIB,
                                                 STRATA_REQ_MAY_UNMAP), ==, 0);
    g_assert_cmpint(mem_trace_count(e.child), ==, 1);
    g_assert_true(mem_trace_get(e.child, 0, &t));
    g_assert_cmpint(t.type, ==, REQ_ZEROES);
    g_assert_cmpint(t.offset, ==, 256 * KIB + 64 * KIB);
    g_assert_cmpint(t.bytes, ==, 64 * KIB);
    g_assert_true(t.flags & REQ_MAY_UNMAP);

    /* Discard too. */
    mem_trace_clear(e.child);
    g_assert_cmpint(strata_backend_pdiscard(e.be, 192 * KIB, 64 * KIB), ==, 0);
    g_assert_cmpint(mem_trace_count(e.child), ==, 1);
    g_assert_true(mem_trace_get(e.child, 0, &t));
    g_assert_cmpint(t.type, ==, REQ_DISCARD);
    g_assert_cmpint(t.offset, ==, 256 * KIB + 192 * KIB);

    for (int64_t i = 0; i < 512 * KIB; i++) {
        bool z = (i >= 64 * KIB && i < 128 * KIB) ||
                 (i >= 192 * KIB && i < 256 * KIB);
        g_assert_cmpint(mem[256 * KIB + i], ==, z ? 0 : 0x11);
    }

    /* Block status in window coordinates. */
    g_assert_cmpint(strata_backend_block_status(e.be, 0, 512 * KIB, &pnum), ==,
                    STRATA_BLOCK_DATA);
    g_assert_cmpint(pnum, ==, 64 * KIB);
    g_assert_cmpint(strata_backend_block_status(e.be, 64 * KIB, 448 * KIB, &pnum),
                    ==, STRATA_BLOCK_ZERO);
    g_assert_cmpint(pnum, ==, 64 * KIB);
    env_close(&e);
}

static void test_pass_flush_fua(void)
{
    g_autofree char *json = mem_window_json(4 * KIB, -1, NULL);
    uint8_t buf[4096] = { 1 };
    MemCounters c;
    MemTraceEntry t;
    Env e;

    env_open_ok(&e, json, RW_PERM);
    g_assert_cmpint(strata_backend_get_length(e.be), ==, 1024 * KIB - 4 * KIB);
    mem_reset_counters(e.child);
    mem_trace_clear(e.child);
    g_assert_cmpint(strata_backend_pwrite(e.be, 0, buf, sizeof(buf),
                                          STRATA_REQ_FUA), ==, 0);
    /* FUA reaches the child on the write itself: no extra flush. */
    g_assert_true(mem_trace_get(e.child, 0, &t));
    g_assert_cmpint(t.type, ==, REQ_WRITE);
    g_assert_cmpint(t.offset, ==, 4 * KIB);
    g_assert_true(t.flags & REQ_FUA);
    mem_get_counters(e.child, &c);
    g_assert_cmpuint(c.flushes, ==, 0);
    g_assert_cmpint(strata_backend_flush(e.be), ==, 0);
    mem_get_counters(e.child, &c);
    g_assert_cmpuint(c.flushes, ==, 1);
    env_close(&e);
}

/* raw emits read_aio / write_aio on its child, where blkdebug sees them. */
static void test_debug_events(void)
{
    const char *json =
        "{\"driver\": \"raw\", \"file\": {\"driver\": \"blkdebug\", "
        " \"image\": {\"driver\": \"mem\", \"size\": \"1M\"},"
        " \"inject-error\": [{\"event\": \"read_aio\", \"errno\": 61, "
        "                    \"iotype\": \"read\", \"once\": true}]}}";
    const char *json_w =
        "{\"driver\": \"raw\", \"file\": {\"driver\": \"blkdebug\", "
        " \"image\": {\"driver\": \"mem\", \"size\": \"1M\"},"
        " \"inject-error\": [{\"event\": \"write_aio\", \"errno\": 28, "
        "                    \"iotype\": \"write\", \"once\": true}]}}";
    uint8_t buf[512] = { 0 };
    Env e;

    env_open_ok(&e, json, RW_PERM);
    g_assert_cmpint(strata_backend_pwrite(e.be, 0, buf, sizeof(buf), 0), ==, 0);
    g_assert_cmpint(strata_backend_pread(e.be, 0, buf, sizeof(buf), 0), ==,
                    -ENODATA);
    g_assert_cmpint(strata_backend_pread(e.be, 0, buf, sizeof(buf), 0), ==, 0);
    env_close(&e);

    env_open_ok(&e, json_w, RW_PERM);
    g_assert_cmpint(strata_backend_pread(e.be, 0, buf, sizeof(buf), 0), ==, 0);
    g_assert_cmpint(strata_backend_pwrite(e.be, 0, buf, sizeof(buf), 0), ==,
                    -ENOSPC);
    g_assert_cmpint(strata_backend_pwrite(e.be, 0, buf, sizeof(buf), 0), ==, 0);
    env_close(&e);
}

/* ---- truncate ------------------------------------------------------------------- */

static void test_truncate(void)
{
    Env e;

    /* A fixed window cannot be resized. */
    {
        g_autofree char *json = mem_window_json(4 * KIB, 64 * KIB, NULL);
        env_open_ok(&e, json, RW_PERM | STRATA_PERM_RESIZE);
        g_assert_cmpint(strata_backend_truncate(e.be, 128 * KIB), ==, -ENOTSUP);
        g_assert_cmpint(strata_backend_get_length(e.be), ==, 64 * KIB);
        env_close(&e);
    }
    /* Without a size the child follows, offset included. */
    {
        g_autofree char *json = mem_window_json(4 * KIB, -1, NULL);
        env_open_ok(&e, json, RW_PERM | STRATA_PERM_RESIZE);
        g_assert_cmpint(strata_backend_truncate(e.be, 2048 * KIB), ==, 0);
        g_assert_cmpint(strata_backend_get_length(e.be), ==, 2048 * KIB);
        g_assert_cmpint(node_get_length(e.child), ==, 2048 * KIB + 4 * KIB);
        g_assert_cmpint(strata_backend_truncate(e.be, 8 * KIB), ==, 0);
        g_assert_cmpint(node_get_length(e.child), ==, 12 * KIB);
        env_close(&e);
    }
}

/* ---- over a real file ------------------------------------------------------------ */

/* A window at an unaligned offset of an O_DIRECT file: the file node pads
 * every request raw passes down. */
static void test_file_unaligned_window(void)
{
    g_autofree char *dir = g_strdup("/var/tmp/strata-test-raw-XXXXXX");
    g_autofree char *path = NULL;
    g_autofree char *json = NULL;
    g_autofree uint8_t *model = g_malloc0(1024 * KIB);
    GRand *r = g_rand_new_with_seed(7);
    uint8_t buf[5000];
    gchar *disk;
    gsize n;
    Env e;

    g_assert_nonnull(g_mkdtemp(dir));
    path = g_build_filename(dir, "raw.img", NULL);
    g_assert_true(file_create(path, 1024 * KIB, PREALLOC_OFF, NULL));
    json = g_strdup_printf("{\"driver\": \"raw\", \"offset\": 1000, "
                           "\"size\": 500000, \"cache\": {\"direct\": true}, "
                           "\"file\": {\"driver\": \"file\", \"filename\": \"%s\"}}",
                           path);
    {
        g_autoptr(StrataError) err = NULL;
        if (!env_open(&e, json, RW_PERM, &err)) {
            /* A filesystem without O_DIRECT. */
            g_test_skip(error_get_message(err));
            g_rand_free(r);
            unlink(path);
            rmdir(dir);
            return;
        }
    }
    g_assert_cmpint(strata_backend_get_length(e.be), ==, 500000);
    for (int i = 0; i < 100; i++) {
        int len = g_rand_int_range(r, 1, (int)sizeof(buf));
        int off = g_rand_int_range(r, 0, 500000 - len);
        if (i % 2 == 0) {
            for (int k = 0; k < len; k++) {
                buf[k] = (uint8_t)g_rand_int(r);
            }
            g_assert_cmpint(strata_backend_pwrite(e.be, off, buf, (size_t)len, 0),
                            ==, 0);
            memcpy(model + 1000 + off, buf, (size_t)len);
        } else {
            g_assert_cmpint(strata_backend_pread(e.be, off, buf, (size_t)len, 0),
                            ==, 0);
            g_assert_cmpmem(buf, (size_t)len, model + 1000 + off, (size_t)len);
        }
    }
    env_close(&e);
    g_assert_true(g_file_get_contents(path, &disk, &n, NULL));
    g_assert_cmpuint(n, ==, 1024 * KIB);
    g_assert_true(memcmp(disk, model, 1024 * KIB) == 0);
    g_free(disk);
    g_rand_free(r);
    unlink(path);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/raw/window/offset-added", test_window_offset_added);
    g_test_add_func("/raw/window/refuses-outside", test_window_refuses_outside);
    g_test_add_func("/raw/window/beyond-the-file", test_window_beyond_file);
    g_test_add_func("/raw/pass/zeroes-discard-status",
                    test_pass_zeroes_discard_status);
    g_test_add_func("/raw/pass/flush-fua", test_pass_flush_fua);
    g_test_add_func("/raw/debug-events/read-write-aio", test_debug_events);
    g_test_add_func("/raw/truncate/fixed-window-refused", test_truncate);
    g_test_add_func("/raw/file/unaligned-window-direct",
                    test_file_unaligned_window);
    return g_test_run();
}
