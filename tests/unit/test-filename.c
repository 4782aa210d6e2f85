/*
 * Tests of legacy filenames (block/filename.c), the raw window moved by a
 * reopen, and the snapshot overlay
 * SPDX-License-Identifier: MIT
 *
 * Filenames: the option tree each QEMU-era filename turns into, checked
 * member by member, and the errors for the ones that cannot work.  The
 * overlay: data written through it reads back, the base's bytes do not
 * change, unwritten blocks show the base.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>

#include "block/backend-int.h"
#include "block/block-int.h"
#include "block/drivers.h"

#define RW_PERM (STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE | \
                 STRATA_PERM_RESIZE)
#define RW_SHARED (STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE_UNCHANGED)

static char *test_dir;

/* The tree a tool builds from FILE with the default format "raw". */
static OptNode *tree_for(const char *extra_dotted, const char *filename,
                         StrataError **errp)
{
    g_autoptr(OptNode) opts = extra_dotted ? opts_parse_dotted(extra_dotted, NULL)
                                           : opts_new_object();

    if (!block_options_add_filename(opts, filename, "raw", errp)) {
        return NULL;
    }
    return g_steal_pointer(&opts);
}

static const char *str_at(OptNode *opts, const char *a, const char *b,
                          const char *c)
{
    OptNode *n = opts_peek(opts, a);
    if (b) {
        n = opts_peek(n, b);
    }
    if (c) {
        n = opts_peek(n, c);
    }
    return n ? opts_scalar_str(n) : NULL;
}

static void test_plain_path(void)
{
    g_autoptr(OptNode) t = tree_for(NULL, "disk.img", NULL);

    g_assert_cmpstr(str_at(t, "driver", NULL, NULL), ==, "raw");
    g_assert_cmpstr(str_at(t, "file", "driver", NULL), ==, "file");
    g_assert_cmpstr(str_at(t, "file", "filename", NULL), ==, "disk.img");
}

static void test_plain_path_with_commas(void)
{
    /* A plain filename is never dotted keys, whatever it contains. */
    g_autoptr(OptNode) t = tree_for(NULL, "dir/x=1,y.img", NULL);
    g_assert_cmpstr(str_at(t, "file", "filename", NULL), ==, "dir/x=1,y.img");
    g_autoptr(OptNode) j = tree_for(NULL, "json:{\"driver\": \"file\", "
                                    "\"filename\": \"a,b\"}", NULL);
    g_assert_cmpstr(str_at(j, "driver", NULL, NULL), ==, "file");
    g_assert_cmpstr(str_at(j, "filename", NULL, NULL), ==, "a,b");
}

static void test_prefixes(void)
{
    g_autoptr(OptNode) f = tree_for(NULL, "file:a:b.img", NULL);
    g_assert_cmpstr(str_at(f, "file", "filename", NULL), ==, "a:b.img");

    /* A '/' before the ':' makes it a path. */
    g_autoptr(OptNode) p = tree_for(NULL, "./x:y", NULL);
    g_assert_cmpstr(str_at(p, "file", "driver", NULL), ==, "file");
    g_assert_cmpstr(str_at(p, "file", "filename", NULL), ==, "./x:y");

    g_autoptr(OptNode) n = tree_for(NULL, "null-co://", NULL);
    g_assert_cmpstr(str_at(n, "file", "driver", NULL), ==, "null");
    g_assert_false(opts_has(opts_peek(n, "file"), "filename"));
}

/* -f align FILE: the filename goes to the filter's child, as to a
 * format's; the filter's own options stay where they are. */
static void test_align(void)
{
    g_autoptr(OptNode) a = tree_for("driver=align,request-alignment=4k",
                                    "d.img", NULL);
    g_assert_cmpstr(str_at(a, "driver", NULL, NULL), ==, "align");
    g_assert_cmpstr(str_at(a, "request-alignment", NULL, NULL), ==, "4k");
    g_assert_false(opts_has(a, "filename"));
    g_assert_cmpstr(str_at(a, "file", "driver", NULL), ==, "file");
    g_assert_cmpstr(str_at(a, "file", "filename", NULL), ==, "d.img");

    g_autoptr(OptNode) n = tree_for("driver=align", "null-co://", NULL);
    g_assert_cmpstr(str_at(n, "file", "driver", NULL), ==, "null");
}

static void test_blkdebug(void)
{
    g_autoptr(OptNode) a = tree_for("file.align=4k", "blkdebug::d.img", NULL);
    g_assert_cmpstr(str_at(a, "file", "driver", NULL), ==, "blkdebug");
    g_assert_cmpstr(str_at(a, "file", "align", NULL), ==, "4k");
    g_assert_false(opts_has(opts_peek(a, "file"), "config"));
    g_assert_cmpstr(str_at(a, "file", "image", "driver"), ==, "file");
    g_assert_cmpstr(str_at(a, "file", "image", "filename"), ==, "d.img");

    g_autoptr(OptNode) c = tree_for(NULL, "blkdebug:r.conf:d.img", NULL);
    g_assert_cmpstr(str_at(c, "file", "config", NULL), ==, "r.conf");

    /* -o wins over the filename. */
    g_autoptr(OptNode) o = tree_for("file.config=mine.conf",
                                    "blkdebug:r.conf:d.img", NULL);
    g_assert_cmpstr(str_at(o, "file", "config", NULL), ==, "mine.conf");

    /* Nested: blkdebug over blkdebug over null. */
    g_autoptr(OptNode) nn = tree_for(NULL, "blkdebug::blkdebug::null-co://",
                                     NULL);
    g_assert_cmpstr(str_at(nn, "file", "image", "driver"), ==, "blkdebug");
    g_assert_cmpstr(str_at(opts_peek(nn, "file"), "image", "image", "driver"),
                    ==, "null");
}

static void fails_with(const char *extra, const char *filename,
                       const char *msg)
{
    g_autoptr(StrataError) err = NULL;
    g_autoptr(OptNode) t = tree_for(extra, filename, &err);

    g_assert_null(t);
    g_assert_cmpstr(error_get_message(err), ==, msg);
}

static void test_errors(void)
{
    fails_with(NULL, "foo:bar", "Unknown protocol 'foo'");
    /* QEMU 7.2 has no nbds:// either. */
    fails_with(NULL, "nbds://host/exp", "Unknown protocol 'nbds'");
    fails_with(NULL, "blkdebug:d.img",
               "blkdebug requires both config file and image path");
    fails_with(NULL, "null-co://x",
               "The only allowed filename for this driver is 'null-co://'");
    fails_with("file.filename=a.img", "b.img",
               "Can't specify 'file' and 'filename' options at the same time");
    fails_with("file=node0", "b.img",
               "Can't specify 'file' and 'filename' options at the same time");
    fails_with("driver=mem", "b.img",
               "Driver 'mem' does not take a file name (got 'b.img')");
    fails_with(NULL, "json:[1]", "JSON top level must be an object, got list");
    fails_with(NULL, "json:{\"a\": 1, \"a\": 2}", "a: duplicate key");
    fails_with(NULL, "x\xff.img", "file.filename: value is not valid UTF-8");
    fails_with(NULL, "", "The 'file' block driver requires a file name");
    fails_with(NULL, "blkdebug::", "The 'file' block driver requires a file name");
    fails_with(NULL, "host_device:", "The 'host_device' block driver requires "
               "a file name");
}

static void test_json(void)
{
    g_autoptr(OptNode) t = tree_for(
        "file.locking=off",
        "json:{\"driver\": \"raw\", \"file\": {\"driver\": \"file\", "
        "\"filename\": \"j.img\", \"locking\": \"on\"}}", NULL);

    g_assert_cmpstr(str_at(t, "file", "filename", NULL), ==, "j.img");
    g_assert_cmpstr(str_at(t, "file", "locking", NULL), ==, "off");
}

/* A node with a filename and no driver probes one; a device node gets
 * host_device, and the file driver refuses one. */
static void test_probe(void)
{
    g_assert_cmpstr(block_probe_protocol("/dev/null"), ==, "host_device");
    g_assert_cmpstr(block_probe_protocol(test_dir), ==, "file");
    g_assert_cmpstr(block_probe_protocol("/nonexistent/x"), ==, "file");

    StrataContext *ctx = strata_context_new(NULL);
    g_autoptr(StrataError) err = NULL;
    StrataNode *n = strata_node_open_json(ctx, "{\"filename\": \"/dev/null\", "
                                          "\"read-only\": true}", &err);
    g_assert_nonnull(n);
    g_assert_cmpstr(strata_node_get_driver(n), ==, "host_device");
    strata_node_unref(n);
    g_assert_null(strata_node_open_json(ctx, "{\"driver\": \"file\", "
                                        "\"filename\": \"/dev/null\"}", &err));
    g_assert_cmpstr(error_get_message(err), ==,
                    "'file' driver requires '/dev/null' to be a regular file");
    strata_context_free(ctx);
}

/* The public entry for embedders: the same parser, options winning. */
static void test_public_api(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    g_autoptr(StrataError) err = NULL;
    StrataNode *n = strata_node_open_filename(
        ctx, "blkdebug::null-co://", "{\"file\": {\"align\": 4096}}", &err);

    g_assert_nonnull(n);
    g_assert_cmpstr(strata_node_get_driver(n), ==, "raw");
    StrataNode *dbg = node_filtered(n);
    g_assert_cmpstr(strata_node_get_driver(dbg), ==, "blkdebug");
    g_assert_cmpuint(dbg->bl.request_alignment, ==, 4096);
    g_assert_cmpstr(strata_node_get_driver(node_filtered(dbg)), ==, "null");
    strata_node_unref(n);

    g_assert_null(strata_node_open_filename(ctx, "foo:x", NULL, &err));
    g_assert_cmpstr(error_get_message(err), ==, "Unknown protocol 'foo'");
    g_clear_pointer(&err, error_free);
    g_assert_null(strata_node_open_filename(ctx, "x.img", "[1]", &err));
    g_assert_nonnull(err);
    strata_context_free(ctx);
}

static char *make_file(const char *name, size_t size, int fill)
{
    g_autofree char *buf = g_malloc(size);
    char *path = g_build_filename(test_dir, name, NULL);

    memset(buf, fill, size);
    g_assert_true(g_file_set_contents(path, buf, (gssize)size, NULL));
    return path;
}

/* reopen offset/size moves the window of a raw node, as in QEMU. */
static void test_raw_reopen_window(void)
{
    g_autofree char *path = make_file("win.img", 65536, 0);
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"raw\", \"node-name\": \"r\", \"offset\": 512, "
        "\"size\": 1024, \"file\": {\"driver\": \"file\", \"filename\": "
        "\"%s\"}}", path);
    StrataContext *ctx = strata_context_new(NULL);
    g_autoptr(StrataError) err = NULL;
    StrataNode *r = strata_node_open_json(ctx, json, &err);
    uint8_t buf[512];

    g_assert_nonnull(r);
    StrataBackend *be = strata_backend_new(r, "t", RW_PERM & ~STRATA_PERM_RESIZE,
                                           RW_SHARED, &err);
    strata_node_unref(r);
    g_assert_nonnull(be);
    g_assert_cmpint(strata_backend_get_length(be), ==, 1024);
    memset(buf, 0x5a, sizeof(buf));
    g_assert_cmpint(strata_backend_pwrite(be, 0, buf, 512, 0), ==, 0);

    g_assert_true(strata_node_reopen_json(r, "{\"offset\": 0, \"size\": 4096}",
                                          &err));
    g_assert_cmpint(strata_backend_get_length(be), ==, 4096);
    memset(buf, 0, sizeof(buf));
    g_assert_cmpint(strata_backend_pread(be, 512, buf, 512, 0), ==, 0);
    for (size_t i = 0; i < sizeof(buf); i++) {
        g_assert_cmpint(buf[i], ==, 0x5a);
    }
    /* A window past the end is refused and the old one stays. */
    g_assert_false(strata_node_reopen_json(r, "{\"offset\": 65536, "
                                           "\"size\": 1}", &err));
    g_assert_nonnull(strstr(error_get_message(err), "size: the window"));
    g_assert_cmpint(strata_backend_get_length(be), ==, 4096);
    g_clear_pointer(&err, error_free);
    /* The file's options are not reopen options (QEMU's words). */
    g_assert_false(strata_node_reopen_json(r, "{\"file\": {\"aio\": "
                                           "\"threads\"}}", &err));
    g_assert_cmpstr(error_get_message(err), ==, "Cannot change the option 'aio'");
    strata_backend_free(be);
    strata_context_free(ctx);
}

static void check_bytes(const uint8_t *buf, size_t len, int want)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != want) {
            g_error("byte %zu is 0x%02x, not 0x%02x", i, buf[i], want);
        }
    }
}

/* Writes through the overlay read back; the base never changes; blocks
 * not written show the base. */
static void test_overlay(void)
{
    g_autofree char *path = make_file("base.img", 65536, 0x11);
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"snapshot-overlay\", \"file\": {\"driver\": \"raw\", "
        "\"read-only\": true, \"file\": {\"driver\": \"file\", "
        "\"filename\": \"%s\"}}}", path);
    StrataContext *ctx = strata_context_new(NULL);
    g_autoptr(StrataError) err = NULL;
    StrataNode *top = strata_node_open_json(ctx, json, &err);
    g_autofree uint8_t *buf = g_malloc(65536);
    g_autofree char *contents = NULL;
    gsize len;

    g_assert_nonnull(top);
    StrataBackend *be = strata_backend_new(top, "t", RW_PERM, RW_SHARED, &err);
    strata_node_unref(top);
    g_assert_nonnull(be);

    memset(buf, 0x22, 5000);
    g_assert_cmpint(strata_backend_pwrite(be, 100, buf, 5000, 0), ==, 0);
    g_assert_cmpint(strata_backend_pwrite_zeroes(be, 20000, 100, 0), ==, 0);
    g_assert_cmpint(strata_backend_flush(be), ==, 0);

    g_assert_cmpint(strata_backend_pread(be, 0, buf, 65536, 0), ==, 0);
    check_bytes(buf, 100, 0x11);
    check_bytes(buf + 100, 5000, 0x22);
    check_bytes(buf + 5100, 20000 - 5100, 0x11);
    check_bytes(buf + 20000, 100, 0);
    check_bytes(buf + 20100, 65536 - 20100, 0x11);

    /* Growing reads zeroes past the base; the base keeps its size. */
    g_assert_true(strata_backend_truncate(be, 131072) == 0);
    g_assert_cmpint(strata_backend_pread(be, 65536, buf, 65536, 0), ==, 0);
    check_bytes(buf, 65536, 0);

    g_assert_true(g_file_get_contents(path, &contents, &len, NULL));
    g_assert_cmpuint(len, ==, 65536);
    check_bytes((const uint8_t *)contents, len, 0x11);
    strata_backend_free(be);
    strata_context_free(ctx);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    test_dir = g_dir_make_tmp("strata-filename-XXXXXX", NULL);
    g_assert_nonnull(test_dir);

    g_test_add_func("/filename/plain-path", test_plain_path);
    g_test_add_func("/filename/plain-path-with-commas", test_plain_path_with_commas);
    g_test_add_func("/filename/prefixes", test_prefixes);
    g_test_add_func("/filename/blkdebug", test_blkdebug);
    g_test_add_func("/filename/align", test_align);
    g_test_add_func("/filename/errors", test_errors);
    g_test_add_func("/filename/json-under-explicit-options", test_json);
    g_test_add_func("/filename/probe-device", test_probe);
    g_test_add_func("/filename/public-api", test_public_api);
    g_test_add_func("/raw/reopen/window", test_raw_reopen_window);
    g_test_add_func("/snapshot-overlay/copy-on-write", test_overlay);
    int ret = g_test_run();

    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", test_dir);
    if (system(cmd) != 0) {
        g_printerr("could not remove %s\n", test_dir);
    }
    return ret;
}
