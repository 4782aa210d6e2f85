/*
 * The end of an image whose size is not a multiple of the alignment
 * SPDX-License-Identifier: MIT
 *
 * QEMU's rule, which Strata follows (docs/request-path.md, "The end of a
 * node"): a padded write of the last block of such an image grows it, so
 * only a user that may resize the node may write it.  The growth is never
 * undone.  test-file.c's EOF test checks the write path on every engine;
 * these check the permission side: reopen, and a length that cannot be
 * known.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "block/block-int.h"
#include "block/mem.h"
#include "strata/strata.h"
#include "test-util.h"

#define RW (STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE)
#define QEMU_MSG "Cannot get 'write' permission without 'resize': Image size " \
                 "is not a multiple of request alignment"

/* A node that cannot tell its size cannot promise that a padded write
 * stays inside it: write permission is refused, naming the cause. */
static void test_length_query_fails(void)
{
    g_autoptr(StrataError) err = NULL;
    StrataContext *ctx = strata_context_new(NULL);
    /* "eof-under-align": an align node pads instead (test-util.h). */
    g_autofree char *json = test_pad_filter_json(
        "{\"driver\": \"blkdebug\", \"node-name\": \"bd\", \"align\": 4096,"
        " \"image\": {\"driver\": \"mem\", \"node-name\": \"m\","
        " \"size\": 65536}}");
    StrataNode *bd = strata_node_open_json(ctx, json, &err);
    g_assert_nonnull(bd);
    StrataNode *m = node_find(ctx, "m");

    mem_fail_length(m, EIO);
    StrataBackend *be = strata_backend_new(bd, "vda", RW, STRATA_PERM_ALL, &err);
    g_assert_null(be);
    g_assert_cmpstr(error_get_message(err), ==,
                    "Cannot get 'write' permission on node 'bd': its size is "
                    "unknown (Input/output error), so a padded write could "
                    "not be kept inside it");
    g_assert_cmpint(error_get_errno(err), ==, EIO);
    g_clear_pointer(&err, strata_error_free);

    /* Reading needs no promise; and with the size back, writing works and
     * nothing was changed by the refused attempt. */
    be = strata_backend_new(bd, "vda", STRATA_PERM_CONSISTENT_READ,
                            STRATA_PERM_ALL, &err);
    g_assert_nonnull(be);
    strata_backend_free(be);
    mem_fail_length(m, 0);
    be = strata_backend_new(bd, "vda", RW, STRATA_PERM_ALL, &err);
    g_assert_nonnull(be);
    uint8_t buf[100];
    memset(buf, 0x42, sizeof(buf));
    g_assert_cmpint(strata_backend_pwrite(be, 4000, buf, sizeof(buf), 0), ==, 0);
    g_assert_cmpmem(mem_get_data(m) + 4000, 100, buf, 100);
    g_assert_cmpint(strata_backend_get_length(be), ==, 65536);
    strata_backend_free(be);
    strata_node_unref(bd);
    strata_context_free(ctx);
}

/* A directory on tmpfs, where O_DIRECT works and its alignment is 4 KiB
 * (tmpfs takes any O_DIRECT read, so the probe assumes 4096, as QEMU's
 * does); NULL when there is none (the test skips). */
static char *direct_dir(void)
{
    g_autofree char *dir = g_build_filename("/dev/shm", "strata-eof-XXXXXX", NULL);
    g_autofree char *probe = NULL;
    int fd;

    if (!g_mkdtemp(dir)) {
        return NULL;
    }
    probe = g_build_filename(dir, "probe", NULL);
    fd = open(probe, O_CREAT | O_RDWR | O_DIRECT, 0600);
    if (fd < 0) {
        g_rmdir(dir);
        return NULL;
    }
    close(fd);
    g_unlink(probe);
    return g_steal_pointer(&dir);
}

/*
 * A 5000-byte image written through the page cache (alignment 1) cannot be
 * reopened with cache.direct=on by a writer without resize: the reopen
 * fails with QEMU's message and the node stays as it was, still writable.
 * With resize held, the same reopen succeeds.
 */
static void test_reopen_direct_needs_resize(void)
{
    g_autoptr(StrataError) err = NULL;
    g_autofree char *dir = direct_dir();
    g_autofree char *path = NULL;
    g_autofree char *json = NULL;
    uint8_t data[5000], back[5000];

    if (!dir) {
        g_test_skip("no tmpfs with O_DIRECT at /dev/shm");
        return;
    }
    path = g_build_filename(dir, "img", NULL);
    memset(data, 0x11, sizeof(data));
    g_assert_true(g_file_set_contents(path, (char *)data, sizeof(data), NULL));
    json = g_strdup_printf("{\"driver\": \"file\", \"node-name\": \"f\","
                           " \"filename\": \"%s\", \"cache\": {\"direct\": false}}",
                           path);
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *f = strata_node_open_json(ctx, json, &err);
    g_assert_nonnull(f);
    StrataBackend *be = strata_backend_new(f, "vda", RW, STRATA_PERM_ALL, &err);
    g_assert_nonnull(be);

    g_assert_false(strata_node_reopen_json(f, "{\"cache\": {\"direct\": true}}",
                                           &err));
    g_assert_cmpstr(error_get_message(err), ==, "Cannot reopen node 'f': " QEMU_MSG);
    g_assert_cmpint(error_get_errno(err), ==, EPERM);
    g_clear_pointer(&err, strata_error_free);
    g_assert_false(f->cache_direct);
    g_assert_cmpint(f->bl.request_alignment, ==, 1);
    memset(data + 4990, 0x22, 10);
    g_assert_cmpint(strata_backend_pwrite(be, 4990, data + 4990, 10, 0), ==, 0);
    strata_backend_free(be);

    be = strata_backend_new(f, "vda", RW | STRATA_PERM_RESIZE, STRATA_PERM_ALL,
                            &err);
    g_assert_nonnull(be);
    if (!strata_node_reopen_json(f, "{\"cache\": {\"direct\": true}}", &err)) {
        g_error("reopen: %s", error_get_message(err));
    }
    g_assert_cmpint(f->bl.request_alignment, ==, 4096);
    g_assert_cmpint(strata_backend_pread(be, 0, back, sizeof(back), 0), ==, 0);
    g_assert_cmpmem(back, sizeof(back), data, sizeof(data));

    strata_backend_free(be);
    strata_node_unref(f);
    strata_context_free(ctx);
    g_assert_cmpint(g_unlink(path), ==, 0);
    g_assert_cmpint(g_rmdir(dir), ==, 0);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/eof/write-perm/length-query-fails", test_length_query_fails);
    g_test_add_func("/eof/write-perm/reopen-direct-needs-resize",
                    test_reopen_direct_needs_resize);
    return g_test_run();
}
