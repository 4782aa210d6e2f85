/*
 * Tests of the file protocol driver, through the request path
 * SPDX-License-Identifier: MIT
 *
 * Files live in a private directory under /var/tmp (a disk filesystem:
 * ext4, xfs or overlay) and, for tmpfs behaviour, under /dev/shm.  Data
 * tests run once per AIO engine this build and kernel can use, with and
 * without O_DIRECT, and compare every byte read with a model.  Tests that
 * need a loop device or a tmpfs mount do their work in a subprocess, so
 * that the parent's teardown (losetup -d of exactly the device it made,
 * umount) runs whatever happens in the child.
 *
 * Random tests take their seed from STRATA_TEST_SEED (default fixed) and
 * print it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <glib.h>

#include "block/aio-engine.h"
#include "block/backend-int.h"
#include "block/block-int.h"
#include "block/drivers.h"
#include "block/file-posix.h"

#define RW_PERM (STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE)
#define RW_SHARED (STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE_UNCHANGED)
#define IMG_SIZE (1 << 20)

static char *test_dir;          /* private dir under /var/tmp */
static char *shm_dir;           /* private dir under /dev/shm (tmpfs) */
static const char *self_path;   /* argv[0], for the lock-holder child */
static guint32 test_seed = 20240601;

/* skipf() is GLib 2.78. */
static void G_GNUC_PRINTF(1, 2) skipf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_test_skip(msg);
}

/* ---- harness ----------------------------------------------------------------- */

typedef struct Env {
    StrataContext *ctx;
    StrataNode *node;           /* the root node */
    StrataBackend *be;
} Env;

static StrataNode *open_node(StrataContext *ctx, const char *json,
                             StrataError **errp)
{
    return strata_node_open_json(ctx, json, errp);
}

/* Open @json and a backend over it with @perm/@shared; NULL on failure
 * with *errp set (the context is freed then). */
static bool env_open(Env *e, const char *json, uint32_t perm, uint32_t shared,
                     StrataError **errp)
{
    memset(e, 0, sizeof(*e));
    e->ctx = strata_context_new(errp);
    g_assert_nonnull(e->ctx);
    e->node = open_node(e->ctx, json, errp);
    if (!e->node) {
        strata_context_free(e->ctx);
        e->ctx = NULL;
        return false;
    }
    e->be = strata_backend_new(e->node, "test", perm, shared, errp);
    strata_node_unref(e->node);     /* the backend holds it */
    if (!e->be) {
        strata_context_free(e->ctx);
        e->ctx = NULL;
        return false;
    }
    return true;
}

static void env_open_ok(Env *e, const char *json, uint32_t perm,
                        uint32_t shared)
{
    g_autoptr(StrataError) err = NULL;

    if (!env_open(e, json, perm, shared, &err)) {
        g_error("opening %s failed: %s", json, error_get_message(err));
    }
}

static void env_close(Env *e)
{
    if (e->ctx) {
        strata_context_free(e->ctx);
    }
    memset(e, 0, sizeof(*e));
}

/* The file node of @e: the root, or the root's child for raw. */
static StrataNode *env_file(Env *e)
{
    StrataNode *n = e->node;
    while (!file_driver_is(n->drv)) {
        n = node_filtered(n);
        g_assert_nonnull(n);
    }
    return n;
}

static FileInfo env_info(Env *e)
{
    FileInfo info;
    file_get_info(env_file(e), &info);
    return info;
}

/* Run @fn(arg) in a coroutine of @ctx's loop, to completion. */
typedef struct CoCall {
    void (*fn)(void *);
    void *arg;
    bool done;
} CoCall;

static void co_call_entry(void *opaque)
{
    CoCall *c = opaque;
    c->fn(c->arg);
    c->done = true;
}

static void run_in_co(StrataContext *ctx, void (*fn)(void *), void *arg)
{
    CoCall c = { fn, arg, false };
    loop_co_spawn(ctx->loop, co_call_entry, &c);
    while (!c.done) {
        loop_run_once(ctx->loop, true);
    }
}

static char *tmp_path(const char *dir, const char *name)
{
    return g_build_filename(dir ? dir : test_dir, name, NULL);
}

static void create_ok(const char *path, int64_t size, PreallocMode prealloc)
{
    g_autoptr(StrataError) err = NULL;
    if (!file_create(path, size, prealloc, &err)) {
        g_error("file_create(%s): %s", path, error_get_message(err));
    }
}

static void fill_random(GRand *r, uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)g_rand_int(r);
    }
}

/* Bytes of @path straight from the kernel, for checks that bypass us. */
static uint8_t *read_whole(const char *path, size_t *len)
{
    gchar *data;
    gsize n;
    g_assert_true(g_file_get_contents(path, &data, &n, NULL));
    *len = n;
    return (uint8_t *)data;
}

/* ---- parameters: engine × cache mode × directory ------------------------------ */

typedef struct IoParam {
    AioEngineId engine;
    bool direct;
    const char *dir;            /* NULL: test_dir (/var/tmp) */
} IoParam;

static const char *const engine_names[] = { "threads", "native", "io_uring" };

/* Is @p runnable here?  Skips (with the reason) and returns false if not. */
static bool param_usable(const IoParam *p)
{
    const AioEngineOps *ops = aio_engine_get(p->engine);
    const char *why = NULL;

    if (!ops) {
        skipf("engine %s not compiled in", engine_names[p->engine]);
        return false;
    }
    if (!ops->available(&why)) {
        skipf("engine %s unavailable: %s", ops->name, why ? why : "?");
        return false;
    }
    if (p->engine == AIO_ENGINE_NATIVE && !p->direct) {
        skipf("native needs O_DIRECT");
        return false;
    }
    if (p->direct) {
        g_autofree char *probe = tmp_path(p->dir, "direct-probe");
        int fd = open(probe, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
        if (fd < 0) {
            skipf("O_DIRECT not supported in %s: %s", p->dir ? p->dir : test_dir,
                  g_strerror(errno));
            return false;
        }
        close(fd);
        unlink(probe);
    }
    return true;
}

static char *param_json(const IoParam *p, const char *path, const char *extra)
{
    return g_strdup_printf("{\"driver\": \"file\", \"filename\": \"%s\", "
                           "\"aio\": \"%s\", \"cache\": {\"direct\": %s}%s%s}",
                           path, engine_names[p->engine],
                           p->direct ? "true" : "false",
                           extra ? ", " : "", extra ? extra : "");
}

/* ---- open and options ------------------------------------------------------------ */

static void test_open_missing(void)
{
    g_autoptr(StrataError) err = NULL;
    g_autofree char *path = tmp_path(NULL, "does-not-exist.img");
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\"}", path);
    g_autofree char *want = g_strdup_printf(
        "Could not open '%s': No such file or directory", path);
    StrataContext *ctx = strata_context_new(NULL);

    g_assert_null(open_node(ctx, json, &err));
    g_assert_cmpstr(error_get_message(err), ==, want);
    g_assert_cmpint(error_get_errno(err), ==, ENOENT);
    g_assert_cmpint(strata_error_get_class(err), ==, STRATA_ERROR_NOT_FOUND);
    strata_context_free(ctx);
}

static void test_open_directory(void)
{
    g_autoptr(StrataError) err = NULL;
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\"}", test_dir);
    StrataContext *ctx = strata_context_new(NULL);

    g_autofree char *want = g_strdup_printf("Could not open '%s': Is a "
                                            "directory", test_dir);
    g_autofree char *json_ro = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\", \"read-only\": true}",
        test_dir);
    g_autofree char *want_ro = g_strdup_printf(
        "'file' driver requires '%s' to be a regular file", test_dir);
    g_autofree char *json_dev = g_strdup_printf(
        "{\"driver\": \"host_device\", \"filename\": \"%s\", "
        "\"read-only\": true}", test_dir);
    g_autofree char *want_dev = g_strdup_printf(
        "'host_device' driver requires '%s' to be either a character or "
        "block device", test_dir);

    /* QEMU's words: read-write fails as open(2) does, read-only on the
     * kind of file. */
    g_assert_null(open_node(ctx, json, &err));
    g_assert_cmpstr(error_get_message(err), ==, want);
    g_assert_cmpint(error_get_errno(err), ==, EISDIR);
    g_clear_pointer(&err, error_free);
    g_assert_null(open_node(ctx, json_ro, &err));
    g_assert_cmpstr(error_get_message(err), ==, want_ro);
    g_clear_pointer(&err, error_free);
    g_assert_null(open_node(ctx, json_dev, &err));
    g_assert_cmpstr(error_get_message(err), ==, want_dev);
    strata_context_free(ctx);
}

static void test_open_native_needs_direct(void)
{
    g_autofree char *path = tmp_path(NULL, "native.img");
    StrataContext *ctx = strata_context_new(NULL);

    create_ok(path, IMG_SIZE, PREALLOC_OFF);
    {
        g_autoptr(StrataError) err = NULL;
        g_autofree char *json = g_strdup_printf(
            "{\"driver\": \"file\", \"filename\": \"%s\", \"aio\": \"native\"}",
            path);
        g_assert_null(open_node(ctx, json, &err));
        g_assert_cmpstr(error_get_message(err), ==,
                        "aio: 'native' needs cache.direct=on (io_submit "
                        "blocks on buffered files)");
    }
    {
        /* Nested: the message names the full option path. */
        g_autoptr(StrataError) err = NULL;
        g_autofree char *json = g_strdup_printf(
            "{\"driver\": \"raw\", \"file\": {\"driver\": \"file\", "
            "\"filename\": \"%s\", \"aio\": \"native\"}}", path);
        g_assert_null(open_node(ctx, json, &err));
        g_assert_cmpstr(error_get_message(err), ==,
                        "file.aio: 'native' needs cache.direct=on (io_submit "
                        "blocks on buffered files)");
    }
    strata_context_free(ctx);
    unlink(path);
}

static void test_open_bad_enum(void)
{
    g_autoptr(StrataError) err = NULL;
    g_autofree char *path = tmp_path(NULL, "enum.img");
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\", \"aio\": \"posix\"}",
        path);
    StrataContext *ctx = strata_context_new(NULL);

    create_ok(path, 4096, PREALLOC_OFF);
    g_assert_null(open_node(ctx, json, &err));
    g_assert_nonnull(strstr(error_get_message(err), "aio"));
    strata_context_free(ctx);
    unlink(path);
}

static void test_open_bounce_options(void)
{
    g_autofree char *path = tmp_path(NULL, "bounce.img");
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\", \"bounce\": \"always\", "
        "\"bounce-threshold\": \"8k\"}", path);
    Env e;

    create_ok(path, IMG_SIZE, PREALLOC_OFF);
    env_open_ok(&e, json, RW_PERM, RW_SHARED);
    g_assert_true(e.node->bounce_always);
    g_assert_cmpint(e.node->bounce_threshold, ==, 8192);
    env_close(&e);
    unlink(path);
}

/* aio=auto always ends with some engine, and says which. */
static void test_open_auto_engine(void)
{
    g_autofree char *path = tmp_path(NULL, "auto.img");
    Env e;

    create_ok(path, IMG_SIZE, PREALLOC_OFF);
    for (int direct = 0; direct < 2; direct++) {
        g_autofree char *json = g_strdup_printf(
            "{\"driver\": \"file\", \"filename\": \"%s\", "
            "\"cache\": {\"direct\": %s}}", path, direct ? "true" : "false");
        env_open_ok(&e, json, RW_PERM, RW_SHARED);
        FileInfo info = env_info(&e);
        g_test_message("auto, direct=%d: %s", direct, info.engine_name);
        g_assert_nonnull(aio_engine_get(info.engine));
        /* Never libaio on a buffered file: io_submit would block. */
        if (!direct) {
            g_assert_cmpint(info.engine, !=, AIO_ENGINE_NATIVE);
        }
        GString *s = g_string_new(NULL);
        e.node->drv->dump_info(e.node, s);
        g_assert_nonnull(strstr(s->str, info.engine_name));
        g_string_free(s, true);
        env_close(&e);
    }
    unlink(path);
}

/* ---- probing --------------------------------------------------------------------------- */

static void test_probe_buffered(void)
{
    g_autofree char *path = tmp_path(NULL, "probe-buf.img");
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\"}", path);
    StrataLimits lim;
    Env e;

    create_ok(path, IMG_SIZE, PREALLOC_OFF);
    env_open_ok(&e, json, RW_PERM, RW_SHARED);
    FileInfo info = env_info(&e);
    g_assert_false(info.direct);
    g_assert_cmpuint(info.request_alignment, ==, 1);
    g_assert_cmpuint(info.mem_alignment, ==, 1);
    g_assert_cmpuint(info.iov_len_alignment, ==, 1);
    strata_node_get_limits(e.node, &lim);
    g_assert_cmpuint(lim.request_alignment, ==, 1);
    g_assert_cmpint(lim.max_iov, ==, (int)sysconf(_SC_IOV_MAX));
    g_assert_cmpint(lim.max_transfer, <=, 0x7ffff000);
    g_assert_cmpint(lim.max_transfer, >, 0);
    env_close(&e);
    unlink(path);
}

static void probe_direct_in(const char *dir, bool expect_measured)
{
    g_autofree char *path = tmp_path(dir, "probe-direct.img");
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\", "
        "\"cache\": {\"direct\": true}}", path);
    IoParam p = { AIO_ENGINE_THREADS, true, dir };
    StrataLimits lim;
    Env e;

    if (!param_usable(&p)) {
        return;
    }
    create_ok(path, IMG_SIZE, PREALLOC_OFF);
    env_open_ok(&e, json, RW_PERM, RW_SHARED);
    FileInfo info = env_info(&e);
    g_test_message("%s: request %u mem %u iov-len %u (%s)", dir ? dir : test_dir,
                   info.request_alignment, info.mem_alignment,
                   info.iov_len_alignment, info.align_source);
    g_assert_true(info.direct);
    g_assert_true(info.request_alignment == 512 ||
                  info.request_alignment == 4096);
    g_assert_true(is_power_of_2(info.mem_alignment));
    g_assert_cmpuint(info.mem_alignment, <=, 4096);
    g_assert_true(is_power_of_2(info.iov_len_alignment));
    g_assert_cmpuint(info.iov_len_alignment, <=, info.request_alignment);
    if (expect_measured) {
        g_assert_false(g_str_has_prefix(info.align_source, "assumed"));
    }
    strata_node_get_limits(e.node, &lim);
    g_assert_cmpuint(lim.request_alignment, ==, info.request_alignment);
    g_assert_cmpuint(lim.mem_alignment, ==, info.mem_alignment);
    env_close(&e);
    unlink(path);
}

static void test_probe_direct_disk(void)
{
    struct statfs sf;

    /* ext4 and xfs report STATX_DIOALIGN since 6.1; others get trial
     * reads on the data file_create() wrote.  Only a /var/tmp on tmpfs
     * leaves the probe guessing. */
    g_assert_cmpint(statfs(test_dir, &sf), ==, 0);
    probe_direct_in(NULL, sf.f_type != 0x01021994);
}

static void test_probe_direct_tmpfs(void)
{
    /* tmpfs takes any O_DIRECT alignment: the probe cannot tell, and
     * assumes 4096. */
    probe_direct_in(shm_dir, false);
}

/* An empty file has nothing to probe: not a one-byte "success". */
static void test_probe_direct_empty(void)
{
    g_autofree char *path = tmp_path(NULL, "probe-empty.img");
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\", "
        "\"cache\": {\"direct\": true}}", path);
    IoParam p = { AIO_ENGINE_THREADS, true, NULL };
    Env e;

    if (!param_usable(&p)) {
        return;
    }
    create_ok(path, 0, PREALLOC_OFF);
    env_open_ok(&e, json, RW_PERM, RW_SHARED);
    FileInfo info = env_info(&e);
    g_assert_true(info.request_alignment == 512 ||
                  info.request_alignment == 4096);
    env_close(&e);
    unlink(path);
}

/* ---- data path ---------------------------------------------------------------------------- */

/* Random reads and writes of odd sizes at odd offsets against a model;
 * also 512-byte requests and vectors of 1024 tiny elements. */
static void test_io_model(gconstpointer opaque)
{
    const IoParam *p = opaque;
    g_autofree char *path = tmp_path(p->dir, "model.img");
    g_autofree char *json = param_json(p, path, NULL);
    g_autofree uint8_t *model = g_malloc0(IMG_SIZE);
    g_autofree uint8_t *buf = g_malloc(3 * 65536);
    GRand *r = g_rand_new_with_seed(test_seed);
    StrataStats st;
    Env e;

    if (!param_usable(p)) {
        g_rand_free(r);
        return;
    }
    g_test_message("seed %u", test_seed);
    create_ok(path, IMG_SIZE, PREALLOC_OFF);
    env_open_ok(&e, json, RW_PERM, RW_SHARED);
    g_assert_cmpint(env_info(&e).engine, ==, p->engine);

    for (int i = 0; i < 300; i++) {
        int64_t len, off;
        uint8_t *b = buf + g_rand_int_range(r, 0, 64);   /* odd addresses */

        switch (g_rand_int_range(r, 0, 3)) {
        case 0:
            len = 512;
            break;
        case 1:
            len = g_rand_int_range(r, 1, 9000);
            break;
        default:
            len = g_rand_int_range(r, 1, 3) * 4096;
            break;
        }
        off = g_rand_int_range(r, 0, IMG_SIZE - (int)len);
        if (g_rand_boolean(r)) {
            fill_random(r, b, (size_t)len);
            g_assert_cmpint(strata_backend_pwrite(e.be, off, b, (size_t)len,
                                                  0), ==, 0);
            memcpy(model + off, b, (size_t)len);
        } else {
            g_assert_cmpint(strata_backend_pread(e.be, off, b, (size_t)len, 0),
                            ==, 0);
            if (memcmp(model + off, b, (size_t)len) != 0) {
                g_error("seed %u: read %" PRId64 "+%" PRId64 " differs",
                        test_seed, off, len);
            }
        }
    }

    /* 1024 elements of 1..16 bytes at odd addresses and offsets. */
    for (int round = 0; round < 4; round++) {
        struct iovec iov[1024];
        size_t total = 0;
        int64_t off;
        uint8_t *b = buf + 1;

        for (int i = 0; i < 1024; i++) {
            size_t l = (size_t)g_rand_int_range(r, 1, 17);
            iov[i] = (struct iovec) { b + total + (size_t)i, l };
            total += l;
        }
        off = g_rand_int_range(r, 0, IMG_SIZE - (int)total) | 1;
        if (round % 2 == 0) {
            uint8_t *src = g_malloc(total);
            fill_random(r, src, total);
            for (size_t i = 0, pos = 0; i < 1024; i++) {
                memcpy(iov[i].iov_base, src + pos, iov[i].iov_len);
                pos += iov[i].iov_len;
            }
            g_assert_cmpint(strata_backend_pwritev(e.be, off, iov, 1024, 0),
                            ==, 0);
            memcpy(model + off, src, total);
            g_free(src);
        } else {
            g_assert_cmpint(strata_backend_preadv(e.be, off, iov, 1024, 0),
                            ==, 0);
            for (size_t i = 0, pos = 0; i < 1024; i++) {
                g_assert_cmpmem(iov[i].iov_base, iov[i].iov_len,
                                model + off + (int64_t)pos, iov[i].iov_len);
                pos += iov[i].iov_len;
            }
        }
    }

    /* A FUA write and a flush. */
    memset(buf, 0xa5, 4096);
    g_assert_cmpint(strata_backend_pwrite(e.be, 8192, buf, 4096,
                                          STRATA_REQ_FUA), ==, 0);
    memset(model + 8192, 0xa5, 4096);
    g_assert_cmpint(strata_backend_flush(e.be), ==, 0);

    /* Nothing failed on the way, EINVAL included, and the file on disk
     * is the model. */
    strata_node_get_stats(env_file(&e), &st);
    for (int t = 0; t < STRATA_STATS__MAX; t++) {
        g_assert_cmpuint(st.op[t].errors, ==, 0);
    }
    env_close(&e);
    {
        size_t n;
        g_autofree uint8_t *disk = read_whole(path, &n);
        g_assert_cmpuint(n, ==, IMG_SIZE);
        g_assert_true(memcmp(disk, model, IMG_SIZE) == 0);
    }
    g_rand_free(r);
    unlink(path);
}

/* Short transfers from the engine are resumed at the right offset, for
 * reads and writes, aligned and unaligned counts. */
static void test_io_short(gconstpointer opaque)
{
    const IoParam *p = opaque;
    g_autofree char *path = tmp_path(p->dir, "short.img");
    g_autofree char *json = param_json(p, path, NULL);
    g_autofree uint8_t *data = g_malloc(65536);
    uint8_t *back;
    const int64_t shorts[] = { 512, 1000, 4096, 1 };
    GRand *r = g_rand_new_with_seed(test_seed);
    Env e;

    if (!param_usable(p)) {
        g_rand_free(r);
        return;
    }
    back = g_aligned_alloc(65536, 1, 4096);
    create_ok(path, IMG_SIZE, PREALLOC_OFF);
    env_open_ok(&e, json, RW_PERM, RW_SHARED);

    for (unsigned i = 0; i < G_N_ELEMENTS(shorts); i++) {
        int64_t off = 65536 * (int64_t)(i + 1);
        uint64_t before = env_info(&e).short_resubmits;

        fill_random(r, data, 65536);
        aio_engine_test_inject_short(p->engine, 3, shorts[i]);
        g_assert_cmpint(strata_backend_pwrite(e.be, off, data, 65536, 0), ==, 0);
        aio_engine_test_inject_short(p->engine, 0, 0);

        memset(back, 0, 65536);
        aio_engine_test_inject_short(p->engine, 3, shorts[i]);
        g_assert_cmpint(strata_backend_pread(e.be, off, back, 65536, 0), ==, 0);
        aio_engine_test_inject_short(p->engine, 0, 0);
        g_assert_cmpmem(back, 65536, data, 65536);
        g_assert_cmpuint(env_info(&e).short_resubmits, >, before);
    }
    env_close(&e);
    g_aligned_free(back);
    g_rand_free(r);
    unlink(path);
}

/* A read past the end of the file reads zeroes, also when the file's
 * end is not aligned under O_DIRECT; a write of the last bytes does not
 * grow the file. */
typedef struct EofCall {
    StrataNode *node;
    int64_t offset, bytes;
    void *buf;
    int ret;
} EofCall;

static void eof_read_co(void *opaque)
{
    EofCall *c = opaque;
    IOVector v;

    iov_init_buf(&v, c->buf, (size_t)c->bytes);
    c->ret = node_co_preadv(c->node, c->offset, c->bytes, &v, 0);
}

static void test_io_eof(gconstpointer opaque)
{
    const IoParam *p = opaque;
    g_autofree char *path = tmp_path(p->dir, "eof.img");
    g_autofree char *json = param_json(p, path, NULL);
    uint8_t *buf = g_aligned_alloc(16384, 1, 4096);
    uint8_t pattern[1000];
    struct stat st;
    Env e;

    if (!param_usable(p)) {
        g_aligned_free(buf);
        return;
    }
    memset(pattern, 0x5a, sizeof(pattern));
    g_assert_true(g_file_set_contents(path, (char *)pattern, 1000, NULL));
    env_open_ok(&e, json, STRATA_PERM_CONSISTENT_READ, RW_SHARED);
    int64_t align = env_file(&e)->bl.request_alignment;
    env_close(&e);
    if (p->direct && ROUND_UP((int64_t)1000, 512) % align) {
        /* QEMU's rule: writing a 1000-byte image through O_DIRECT on a
         * 4 KiB device pads its last block past the end, so it needs
         * resize too (on a 512-byte device the sector-rounded size, 1024,
         * passes, as in QEMU). */
        g_autoptr(StrataError) err = NULL;
        g_assert_false(env_open(&e, json, RW_PERM, RW_SHARED, &err));
        g_assert_cmpstr(error_get_message(err), ==,
                        "Cannot get 'write' permission without 'resize': "
                        "Image size is not a multiple of request alignment");
        g_assert_cmpint(error_get_errno(err), ==, EPERM);
    }
    g_assert_cmpint(align, ==, p->direct ? align : 1);
    env_open_ok(&e, json, RW_PERM | STRATA_PERM_RESIZE, RW_SHARED);
    g_assert_cmpint(strata_backend_get_length(e.be), ==, 1000);

    /* The whole device through the backend. */
    memset(buf, 0xff, 16384);
    g_assert_cmpint(strata_backend_pread(e.be, 0, buf, 1000, 0), ==, 0);
    g_assert_cmpmem(buf, 1000, pattern, 1000);

    /* Past the end, straight at the node: zeroes after byte 1000. */
    memset(buf, 0xff, 16384);
    EofCall c = { env_file(&e), 0, 16384, buf, -1 };
    run_in_co(e.ctx, eof_read_co, &c);
    g_assert_cmpint(c.ret, ==, 0);
    g_assert_cmpmem(buf, 1000, pattern, 1000);
    for (int i = 1000; i < 16384; i++) {
        g_assert_cmpint(buf[i], ==, 0);
    }

    /* Rewriting the tail: through the page cache the size stays; through
     * O_DIRECT the last block is written whole and the image grows to its
     * end, visibly and for good (it is never truncated back). */
    int64_t grown = ROUND_UP((int64_t)1000, align);
    memset(buf, 0x33, 100);
    g_assert_cmpint(strata_backend_pwrite(e.be, 900, buf, 100, STRATA_REQ_FUA),
                    ==, 0);
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, grown);
    g_assert_cmpint(strata_backend_get_length(e.be), ==, grown);
    memset(buf, 0xff, grown);
    g_assert_cmpint(strata_backend_pread(e.be, 0, buf, grown, 0), ==, 0);
    g_assert_cmpmem(buf, 900, pattern, 900);
    for (int i = 900; i < 1000; i++) {
        g_assert_cmpint(buf[i], ==, 0x33);
    }
    for (int i = 1000; i < grown; i++) {
        g_assert_cmpint(buf[i], ==, 0);
    }
    env_close(&e);
    g_aligned_free(buf);
    unlink(path);
}

/* Discard and write-zeroes read back as zeroes; block status sees the
 * holes punched. */
static void test_io_discard_zeroes(gconstpointer opaque)
{
    const IoParam *p = opaque;
    g_autofree char *path = tmp_path(p->dir, "zeroes.img");
    g_autofree char *json = param_json(p, path, "\"discard\": \"unmap\"");
    g_autofree uint8_t *buf = g_malloc(IMG_SIZE);
    g_autofree uint8_t *zero = g_malloc0(IMG_SIZE);
    int64_t pnum;
    int ret;
    Env e;

    if (!param_usable(p)) {
        return;
    }
    create_ok(path, IMG_SIZE, PREALLOC_OFF);
    env_open_ok(&e, json, RW_PERM, RW_SHARED);
    memset(buf, 0x77, IMG_SIZE);
    g_assert_cmpint(strata_backend_pwrite(e.be, 0, buf, IMG_SIZE, 0), ==, 0);

    /* Discard of whole blocks punches a hole. */
    g_assert_cmpint(strata_backend_pdiscard(e.be, 65536, 131072), ==, 0);
    g_assert_cmpint(strata_backend_pread(e.be, 65536, buf, 131072, 0), ==, 0);
    g_assert_cmpmem(buf, 131072, zero, 131072);
    ret = strata_backend_block_status(e.be, 65536, 131072, &pnum);
    g_assert_cmpint(ret, ==, STRATA_BLOCK_ZERO);
    g_assert_cmpint(pnum, ==, 131072);
    ret = strata_backend_block_status(e.be, 0, 65536, &pnum);
    g_assert_cmpint(ret, ==, STRATA_BLOCK_DATA);
    g_assert_cmpint(pnum, ==, 65536);

    /* Write-zeroes without unmap, unaligned at both ends. */
    g_assert_cmpint(strata_backend_pwrite_zeroes(e.be, 300001, 70000, 0), ==, 0);
    /* And with unmap. */
    g_assert_cmpint(strata_backend_pwrite_zeroes(e.be, 524288, 65536,
                                                 STRATA_REQ_MAY_UNMAP), ==, 0);
    /* With FUA. */
    g_assert_cmpint(strata_backend_pwrite_zeroes(e.be, 655360, 4096,
                                                 STRATA_REQ_FUA), ==, 0);

    g_assert_cmpint(strata_backend_pread(e.be, 0, buf, IMG_SIZE, 0), ==, 0);
    for (int64_t i = 0; i < IMG_SIZE; i++) {
        bool z = (i >= 65536 && i < 196608) || (i >= 300001 && i < 370001) ||
                 (i >= 524288 && i < 589824) || (i >= 655360 && i < 659456);
        if (buf[i] != (z ? 0 : 0x77)) {
            g_error("byte %" PRId64 " is %#x", i, buf[i]);
        }
    }
    env_close(&e);
    unlink(path);
}

static void test_block_status(void)
{
    g_autofree char *path = tmp_path(NULL, "status.img");
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\"}", path);
    uint8_t data[65536];
    int64_t pnum;
    int fd;
    Env e;

    memset(data, 1, sizeof(data));
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(pwrite(fd, data, sizeof(data), 0), ==, sizeof(data));
    g_assert_cmpint(pwrite(fd, data, sizeof(data), 1 << 20), ==, sizeof(data));
    g_assert_cmpint(ftruncate(fd, 4 << 20), ==, 0);
    close(fd);

    env_open_ok(&e, json, RW_PERM, RW_SHARED);
    g_assert_cmpint(strata_backend_block_status(e.be, 0, 4 << 20, &pnum), ==,
                    STRATA_BLOCK_DATA);
    g_assert_cmpint(pnum, ==, 65536);
    g_assert_cmpint(strata_backend_block_status(e.be, 65536, (4 << 20) - 65536, &pnum),
                    ==, STRATA_BLOCK_ZERO);
    g_assert_cmpint(pnum, ==, (1 << 20) - 65536);
    g_assert_cmpint(strata_backend_block_status(e.be, 1 << 20, 4096, &pnum),
                    ==, STRATA_BLOCK_DATA);
    g_assert_cmpint(pnum, ==, 4096);
    /* Holes up to the end of the file. */
    g_assert_cmpint(strata_backend_block_status(e.be, 2 << 20, 1 << 20, &pnum),
                    ==, STRATA_BLOCK_ZERO);
    g_assert_cmpint(pnum, ==, 1 << 20);
    env_close(&e);
    unlink(path);
}

/* ---- EINVAL never reaches the caller ------------------------------------------------------- */

/* Pretend the probe found byte alignment; the kernel then rejects the
 * odd requests with EINVAL and the driver redoes them buffered. */
static void test_einval_fallback(void)
{
    g_autofree char *path = tmp_path(NULL, "einval.img");
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\", "
        "\"cache\": {\"direct\": true}}", path);
    IoParam p = { AIO_ENGINE_THREADS, true, NULL };
    uint8_t wbuf[777], rbuf[777];
    Env e;

    if (!param_usable(&p)) {
        return;
    }
    create_ok(path, IMG_SIZE, PREALLOC_OFF);
    env_open_ok(&e, json, RW_PERM, RW_SHARED);
    if (env_info(&e).request_alignment == 1) {
        env_close(&e);
        unlink(path);
        g_test_skip("this filesystem takes any O_DIRECT alignment");
        return;
    }
    file_test_set_alignment(env_file(&e), 1, 1, 1);
    memset(wbuf, 0x42, sizeof(wbuf));
    g_assert_cmpint(strata_backend_pwrite(e.be, 1001, wbuf, sizeof(wbuf), 0),
                    ==, 0);
    g_assert_cmpint(strata_backend_pread(e.be, 1001, rbuf, sizeof(rbuf), 0),
                    ==, 0);
    g_assert_cmpmem(rbuf, sizeof(rbuf), wbuf, sizeof(wbuf));
    g_assert_cmpuint(env_info(&e).einval_fallbacks, >=, 2);
    env_close(&e);
    unlink(path);
}

/* ---- create, truncate ----------------------------------------------------------------------- */

static void test_create_truncate(void)
{
    g_autofree char *path = tmp_path(NULL, "create.img");
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\"}", path);
    g_autoptr(StrataError) err = NULL;
    struct stat st;
    int fd;
    Env e;

    /* prealloc=off: sparse, but the first block holds data. */
    create_ok(path, 8 << 20, PREALLOC_OFF);
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 8 << 20);
    fd = open(path, O_RDONLY);
    g_assert_cmpint(lseek(fd, 0, SEEK_DATA), ==, 0);
    close(fd);
    g_assert_cmpint(st.st_blocks * 512, <, 1 << 20);

    /* falloc and full allocate everything. */
    create_ok(path, 4 << 20, PREALLOC_FALLOC);
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 4 << 20);
    g_assert_cmpint(st.st_blocks * 512, >=, 4 << 20);
    create_ok(path, 2 << 20, PREALLOC_FULL);
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 2 << 20);
    g_assert_cmpint(st.st_blocks * 512, >=, 2 << 20);

    /* Truncate through a backend that may resize. */
    env_open_ok(&e, json, RW_PERM | STRATA_PERM_RESIZE, RW_SHARED);
    g_assert_cmpint(strata_backend_truncate(e.be, 3 << 20), ==, 0);
    g_assert_cmpint(strata_backend_get_length(e.be), ==, 3 << 20);
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 3 << 20);
    g_assert_cmpint(strata_backend_truncate(e.be, 12345), ==, 0);
    g_assert_cmpint(strata_backend_get_length(e.be), ==, 12345);
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 12345);
    env_close(&e);

    /* Without the resize permission: refused. */
    env_open_ok(&e, json, RW_PERM, RW_SHARED);
    g_assert_cmpint(strata_backend_truncate(e.be, 1 << 20), <, 0);
    g_assert_cmpint(strata_backend_get_length(e.be), ==, 12345);
    env_close(&e);

    /* A missing directory names the path. */
    {
        g_autofree char *bad = tmp_path(NULL, "no/such/dir.img");
        g_assert_false(file_create(bad, 4096, PREALLOC_OFF, &err));
        g_assert_nonnull(strstr(error_get_message(err), "Could not create"));
    }
    unlink(path);
}

/* ---- locking ------------------------------------------------------------------------------------- */

/* Which of bytes 100..104 and 200..204 someone else holds, as "100 101 201". */
static char *held_bytes(const char *path)
{
    GString *s = g_string_new(NULL);
    int fd = open(path, O_RDONLY);

    g_assert_cmpint(fd, >=, 0);
    for (int base = 100; base <= 200; base += 100) {
        for (int i = 0; i < 5; i++) {
            struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
                                .l_start = base + i, .l_len = 1 };
            g_assert_cmpint(fcntl(fd, F_OFD_GETLK, &fl), ==, 0);
            if (fl.l_type != F_UNLCK) {
                g_string_append_printf(s, "%s%d", s->len ? " " : "", base + i);
            }
        }
    }
    close(fd);
    return g_string_free(s, false);
}

static void test_lock_layout(void)
{
    g_autofree char *path = tmp_path(NULL, "layout.img");
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\"}", path);
    Env e;

    create_ok(path, IMG_SIZE, PREALLOC_OFF);
    env_open_ok(&e, json, RW_PERM, RW_SHARED);
    g_assert_true(env_info(&e).locking);
    {
        /* Holds read and write; shares neither write nor resize. */
        g_autofree char *held = held_bytes(path);
        g_assert_cmpstr(held, ==, "100 101 201 203");
    }
    /* Permissions change: the bytes follow. */
    g_assert_true(backend_set_perm(e.be, STRATA_PERM_CONSISTENT_READ,
                                   STRATA_PERM_ALL, NULL));
    {
        g_autofree char *held = held_bytes(path);
        g_assert_cmpstr(held, ==, "100");
    }
    env_close(&e);
    {
        g_autofree char *held = held_bytes(path);
        g_assert_cmpstr(held, ==, "");
    }

    /* locking=off takes nothing. */
    {
        g_autofree char *j2 = g_strdup_printf(
            "{\"driver\": \"file\", \"filename\": \"%s\", \"locking\": \"off\"}",
            path);
        env_open_ok(&e, j2, RW_PERM, RW_SHARED);
        g_autofree char *held = held_bytes(path);
        g_assert_cmpstr(held, ==, "");
        env_close(&e);
    }
    unlink(path);
}

/* Two nodes of one process over one file: separate descriptions, so they
 * lock each other out like two processes. */
static void test_lock_same_process(void)
{
    g_autofree char *path = tmp_path(NULL, "twice.img");
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\"}", path);
    g_autoptr(StrataError) err = NULL;
    Env a, b;

    create_ok(path, IMG_SIZE, PREALLOC_OFF);
    env_open_ok(&a, json, RW_PERM, RW_SHARED);
    g_assert_false(env_open(&b, json, RW_PERM, RW_SHARED, &err));
    g_assert_nonnull(strstr(error_get_message(err), "lock on '"));
    g_assert_cmpint(strata_error_get_class(err), ==, STRATA_ERROR_PERMISSION);
    env_close(&a);
    env_open_ok(&b, json, RW_PERM, RW_SHARED);
    env_close(&b);
    unlink(path);
}

/* The child side of the two-process tests: hold @path open for writing
 * until stdin closes. */
static int hold_lock_main(const char *path)
{
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\"}", path);
    g_autoptr(StrataError) err = NULL;
    char c;
    Env e;

    if (!env_open(&e, json, RW_PERM, RW_SHARED, &err)) {
        printf("error: %s\n", error_get_message(err));
        return 1;
    }
    printf("locked\n");
    fflush(stdout);
    while (read(0, &c, 1) > 0) {
    }
    env_close(&e);
    return 0;
}

typedef struct Child {
    GPid pid;
    int in_fd, out_fd;
    GString *out;
} Child;

static bool child_spawn(Child *ch, char **argv, StrataError **errp)
{
    GError *gerr = NULL;

    memset(ch, 0, sizeof(*ch));
    ch->out = g_string_new(NULL);
    if (!g_spawn_async_with_pipes(NULL, argv, NULL,
                                  G_SPAWN_DO_NOT_REAP_CHILD |
                                  G_SPAWN_STDERR_TO_DEV_NULL,
                                  NULL, NULL, &ch->pid, &ch->in_fd,
                                  &ch->out_fd, NULL, &gerr)) {
        error_setg(errp, "%s", gerr->message);
        g_error_free(gerr);
        return false;
    }
    return true;
}

/* Read the child's stdout until it contains @want (true) or it ends or
 * 20 s pass (false). */
static bool child_wait_for(Child *ch, const char *want)
{
    int64_t deadline = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;

    while (!strstr(ch->out->str, want)) {
        struct pollfd pfd = { ch->out_fd, POLLIN, 0 };
        int left = (int)((deadline - g_get_monotonic_time()) / 1000);
        char buf[256];
        ssize_t n;

        if (left <= 0 || poll(&pfd, 1, left) <= 0) {
            return false;
        }
        n = read(ch->out_fd, buf, sizeof(buf));
        if (n <= 0) {
            return false;
        }
        g_string_append_len(ch->out, buf, n);
    }
    return true;
}

/* Close stdin (the child's cue to exit), reap it; returns its status. */
static int child_finish(Child *ch)
{
    int status = 0;

    if (ch->in_fd >= 0) {
        close(ch->in_fd);
    }
    /* Drain the output so the child never blocks on a full pipe. */
    for (;;) {
        char buf[256];
        ssize_t n = read(ch->out_fd, buf, sizeof(buf));
        if (n <= 0) {
            break;
        }
        g_string_append_len(ch->out, buf, n);
    }
    close(ch->out_fd);
    g_assert_cmpint(waitpid(ch->pid, &status, 0), ==, ch->pid);
    g_spawn_close_pid(ch->pid);
    g_string_free(ch->out, true);
    return status;
}

static void test_lock_second_process(void)
{
    g_autofree char *path = tmp_path(NULL, "twoproc.img");
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\"}", path);
    g_autofree char *want = g_strdup_printf(
        "Failed to get \"write\" lock on '%s': Is another process using "
        "the image? (use locking=off or open it read-only with shared access)",
        path);
    char *argv[] = { (char *)self_path, (char *)"--hold-lock", path, NULL };
    Child ch;
    Env e;

    create_ok(path, IMG_SIZE, PREALLOC_OFF);
    g_assert_true(child_spawn(&ch, argv, NULL));
    g_assert_true(child_wait_for(&ch, "locked\n"));

    /* A writer that does not share writing conflicts with the child. */
    {
        g_autoptr(StrataError) err = NULL;
        g_assert_false(env_open(&e, json, RW_PERM, RW_SHARED, &err));
        g_assert_cmpstr(error_get_message(err), ==, want);
    }
    /* A reader that does not let others write conflicts too. */
    {
        g_autoptr(StrataError) err = NULL;
        g_autofree char *want2 = g_strdup_printf(
            "Failed to get shared \"write\" lock on '%s'", path);
        g_assert_false(env_open(&e, json, STRATA_PERM_CONSISTENT_READ,
                                STRATA_PERM_CONSISTENT_READ, &err));
        g_assert_true(g_str_has_prefix(error_get_message(err), want2));
    }
    /* A reader that shares everything is fine. */
    {
        g_autofree char *ro = g_strdup_printf(
            "{\"driver\": \"file\", \"filename\": \"%s\", \"read-only\": true}",
            path);
        env_open_ok(&e, ro, STRATA_PERM_CONSISTENT_READ, STRATA_PERM_ALL);
        env_close(&e);
    }
    /* locking=off ignores the child. */
    {
        g_autofree char *off = g_strdup_printf(
            "{\"driver\": \"file\", \"filename\": \"%s\", \"locking\": \"off\"}",
            path);
        env_open_ok(&e, off, RW_PERM, RW_SHARED);
        env_close(&e);
    }
    g_assert_cmpint(child_finish(&ch), ==, 0);

    /* The child is gone, and so are its locks. */
    env_open_ok(&e, json, RW_PERM, RW_SHARED);
    /* Now the child is the one locked out. */
    g_assert_true(child_spawn(&ch, argv, NULL));
    g_assert_true(child_wait_for(&ch, "error: Failed to get"));
    g_assert_cmpint(child_finish(&ch), !=, 0);
    env_close(&e);
    unlink(path);
}

static void test_lock_qemu_io(void)
{
    g_autofree char *qemu_io = g_find_program_in_path("qemu-io");
    g_autofree char *path = tmp_path(NULL, "qemu.img");
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\"}", path);
    char *argv[] = { qemu_io, (char *)"-f", (char *)"raw", path, NULL };
    Child ch;
    Env e;

    if (!qemu_io) {
        g_test_skip("qemu-io not installed");
        return;
    }
    create_ok(path, IMG_SIZE, PREALLOC_OFF);

    /* qemu-io holds the image (read + write) while it waits for commands. */
    g_assert_true(child_spawn(&ch, argv, NULL));
    g_assert_cmpint(write(ch.in_fd, "read 0 512\n", 11), ==, 11);
    if (!child_wait_for(&ch, "read 512/512 bytes")) {
        child_finish(&ch);
        g_test_skip("qemu-io did not open the image");
        unlink(path);
        return;
    }
    {
        g_autoptr(StrataError) err = NULL;
        g_assert_false(env_open(&e, json, RW_PERM, RW_SHARED, &err));
        g_assert_nonnull(strstr(error_get_message(err),
                                "Failed to get shared \"write\" lock"));
    }
    /* Reading while sharing writes is what QEMU allows too. */
    env_open_ok(&e, json, STRATA_PERM_CONSISTENT_READ, STRATA_PERM_ALL);
    env_close(&e);
    child_finish(&ch);

    /* Strata holds it: qemu-io cannot open it for writing. */
    env_open_ok(&e, json, RW_PERM, RW_SHARED);
    {
        char *argv2[] = { qemu_io, (char *)"-f", (char *)"raw", (char *)"-c",
                          (char *)"read 0 512", path, NULL };
        g_autofree char *out = NULL;
        g_autofree char *errout = NULL;
        int status;
        g_assert_true(g_spawn_sync(NULL, argv2, NULL, G_SPAWN_DEFAULT, NULL,
                                   NULL, &out, &errout, &status, NULL));
        g_test_message("qemu-io: %s%s", out, errout);
        g_assert_false(g_spawn_check_wait_status(status, NULL));
        g_assert_nonnull(strstr(errout, "Failed to get \"write\" lock"));
    }
    env_close(&e);
    unlink(path);
}

/* ---- reopen ---------------------------------------------------------------------------------------- */

static void test_reopen_direct(void)
{
    g_autofree char *path = tmp_path(NULL, "reopen.img");
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\"}", path);
    IoParam p = { AIO_ENGINE_THREADS, true, NULL };
    g_autoptr(StrataError) err = NULL;
    uint8_t buf[1000], back[1000];
    Env e;

    if (!param_usable(&p)) {
        return;
    }
    create_ok(path, IMG_SIZE, PREALLOC_OFF);
    env_open_ok(&e, json, RW_PERM, RW_SHARED);
    memset(buf, 0x21, sizeof(buf));
    g_assert_cmpint(strata_backend_pwrite(e.be, 333, buf, sizeof(buf), 0), ==, 0);
    g_assert_false(env_info(&e).direct);

    g_assert_true(strata_node_reopen_json(e.node, "{\"cache\": {\"direct\": true}}",
                                          &err));
    g_assert_true(env_info(&e).direct);
    g_assert_cmpuint(e.node->bl.request_alignment, >, 1);
    {
        /* The lock bytes moved to the new description. */
        g_autofree char *held = held_bytes(path);
        g_assert_cmpstr(held, ==, "100 101 201 203");
    }
    g_assert_cmpint(strata_backend_pread(e.be, 333, back, sizeof(back), 0), ==, 0);
    g_assert_cmpmem(back, sizeof(back), buf, sizeof(buf));

    g_assert_true(strata_node_reopen_json(e.node, "{\"cache\": {\"direct\": false}}",
                                          &err));
    g_assert_false(env_info(&e).direct);
    g_assert_cmpuint(e.node->bl.request_alignment, ==, 1);
    env_close(&e);
    unlink(path);
}

/* An explicit aio=native cannot go buffered; the node stays as it was. */
static void test_reopen_native_refuses_buffered(void)
{
    g_autofree char *path = tmp_path(NULL, "reopen-native.img");
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\", \"aio\": \"native\", "
        "\"cache\": {\"direct\": true}}", path);
    IoParam p = { AIO_ENGINE_NATIVE, true, NULL };
    g_autoptr(StrataError) err = NULL;
    uint8_t buf[512] = { 9 };
    Env e;

    if (!param_usable(&p)) {
        return;
    }
    create_ok(path, IMG_SIZE, PREALLOC_OFF);
    env_open_ok(&e, json, RW_PERM, RW_SHARED);
    g_assert_false(strata_node_reopen_json(e.node,
                                           "{\"cache\": {\"direct\": false}}",
                                           &err));
    g_assert_nonnull(strstr(error_get_message(err),
                            "'native' needs cache.direct=on"));
    g_assert_true(env_info(&e).direct);
    g_assert_cmpint(env_info(&e).engine, ==, AIO_ENGINE_NATIVE);
    g_assert_cmpint(strata_backend_pwrite(e.be, 512, buf, sizeof(buf), 0), ==, 0);
    {
        g_autofree char *held = held_bytes(path);
        g_assert_cmpstr(held, ==, "100 101 201 203");
    }
    env_close(&e);
    unlink(path);
}

/* ---- loop device, tmpfs mount: in a subprocess, teardown in the parent ---------------------------- */

/* Hand a value to the test's subprocess through a file in the test
 * directory (setenv is not safe once threads run). */
static void handoff_set(const char *key, const char *value)
{
    g_autofree char *path = tmp_path(NULL, key);
    if (value) {
        g_assert_true(g_file_set_contents(path, value, -1, NULL));
    } else {
        unlink(path);
    }
}

static char *handoff_get(const char *key)
{
    g_autofree char *path = tmp_path(NULL, key);
    char *value = NULL;
    g_assert_true(g_file_get_contents(path, &value, NULL, NULL));
    return value;
}

static char *run_cmd(const char *cmd, int *status)
{
    g_autofree char *errout = NULL;
    char *out = NULL;

    if (!g_spawn_command_line_sync(cmd, &out, &errout, status, NULL)) {
        *status = -1;
        return NULL;
    }
    if (!g_spawn_check_wait_status(*status, NULL)) {
        g_test_message("%s: %s", cmd, errout ? errout : "");
        *status = *status ? *status : -1;
        g_free(out);
        return NULL;
    }
    *status = 0;
    return out;
}

static void loop4k_body(const char *dev)
{
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"host_device\", \"filename\": \"%s\", "
        "\"cache\": {\"direct\": true}}", dev);
    GRand *r = g_rand_new_with_seed(test_seed);
    const int64_t size = 8 << 20;
    g_autofree uint8_t *model = g_malloc0(size);
    uint8_t buf[512 + 64];
    Env e;

    g_test_message("seed %u", test_seed);
    env_open_ok(&e, json, RW_PERM, RW_SHARED);
    FileInfo info = env_info(&e);
    g_test_message("%s: request %u mem %u iov-len %u (%s)", dev,
                   info.request_alignment, info.mem_alignment,
                   info.iov_len_alignment, info.align_source);
    g_assert_true(info.is_bdev);
    g_assert_cmpuint(info.request_alignment, ==, 4096);
    g_assert_cmpint(strata_backend_get_length(e.be), ==, size);
    g_assert_cmpint(strata_backend_pwrite_zeroes(e.be, 0, size, 0), ==, 0);

    for (int i = 0; i < 200; i++) {
        int64_t off = g_rand_int_range(r, 0, (int)(size / 512) - 1) * 512 +
                      (g_rand_boolean(r) ? 1 : 0) * g_rand_int_range(r, 1, 512);
        uint8_t *b = buf + g_rand_int_range(r, 0, 64);

        if (off + 512 > size) {
            off = size - 512;
        }
        if (i % 2 == 0) {
            fill_random(r, b, 512);
            g_assert_cmpint(strata_backend_pwrite(e.be, off, b, 512, 0), ==, 0);
            memcpy(model + off, b, 512);
        } else {
            g_assert_cmpint(strata_backend_pread(e.be, off, b, 512, 0), ==, 0);
            g_assert_cmpmem(b, 512, model + off, 512);
        }
    }
    /* Discard and zeroes go to the ioctls. */
    g_assert_cmpint(strata_backend_pwrite_zeroes(e.be, 4096, 8192,
                                                 STRATA_REQ_MAY_UNMAP), ==, 0);
    memset(model + 4096, 0, 8192);
    {
        g_autofree uint8_t *all = g_malloc(size);
        g_assert_cmpint(strata_backend_pread(e.be, 0, all, size, 0), ==, 0);
        g_assert_true(memcmp(all, model, size) == 0);
    }
    /* A device cannot grow. */
    g_assert_cmpint(strata_backend_flush(e.be), ==, 0);
    env_close(&e);
    g_rand_free(r);
}

static void test_loop4k(void)
{
    g_autofree char *img = NULL;
    g_autofree char *cmd = NULL;
    g_autofree char *out = NULL;
    int fd, status;

    if (g_test_subprocess()) {
        g_autofree char *dev = handoff_get("loopdev");
        loop4k_body(dev);
        return;
    }
    if (geteuid() != 0) {
        g_test_skip("loop devices need root");
        return;
    }
    img = g_strdup("/dev/shm/strata-test-XXXXXX.img");
    fd = g_mkstemp(img);
    if (fd < 0 || ftruncate(fd, 8 << 20) < 0) {
        skipf("cannot create %s: %s", img, g_strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(img);
        }
        return;
    }
    close(fd);
    cmd = g_strdup_printf("losetup --find --show --sector-size 4096 "
                          "--direct-io=on %s", img);
    out = run_cmd(cmd, &status);
    if (!out || !g_str_has_prefix(out, "/dev/loop")) {
        unlink(img);
        skipf("losetup failed (status %d)", status);
        return;
    }
    g_strstrip(out);
    handoff_set("loopdev", out);
    g_test_trap_subprocess(NULL, 60 * G_USEC_PER_SEC,
                           G_TEST_SUBPROCESS_INHERIT_STDOUT |
                           G_TEST_SUBPROCESS_INHERIT_STDERR);
    /* Teardown whatever the child did: exactly the device we made. */
    {
        g_autofree char *detach = g_strdup_printf("losetup -d %s", out);
        g_autofree char *dout = run_cmd(detach, &status);
        if (status != 0) {
            g_test_message("losetup -d %s failed", out);
        }
    }
    unlink(img);
    handoff_set("loopdev", NULL);
    g_test_trap_assert_passed();
}

static void enospc_body(const char *dir)
{
    for (int direct = 0; direct < 2; direct++) {
        g_autofree char *path = g_build_filename(dir, "full.img", NULL);
        g_autofree char *json = g_strdup_printf(
            "{\"driver\": \"file\", \"filename\": \"%s\", "
            "\"cache\": {\"direct\": %s}}", path, direct ? "true" : "false");
        IoParam p = { AIO_ENGINE_THREADS, (bool)direct, dir };
        uint8_t *buf = g_aligned_alloc(65536, 1, 4096);
        uint8_t *back = g_aligned_alloc(65536, 1, 4096);
        int64_t off;
        int ret = 0;
        Env e;

        if (direct && !param_usable(&p)) {
            g_aligned_free(buf);
            g_aligned_free(back);
            continue;
        }
        create_ok(path, 4 << 20, PREALLOC_OFF);
        env_open_ok(&e, json, RW_PERM, RW_SHARED);
        for (off = 0; off < (4 << 20); off += 65536) {
            memset(buf, (int)(off >> 16) + 1, 65536);
            ret = strata_backend_pwrite(e.be, off, buf, 65536, 0);
            if (ret < 0) {
                break;
            }
        }
        g_test_message("direct=%d: %s after %" PRId64 " bytes", direct,
                       g_strerror(-ret), off);
        g_assert_cmpint(ret, ==, -ENOSPC);
        g_assert_cmpint(off, >, 0);
        /* What was written is still there; the file still works. */
        for (int64_t o = 0; o < off; o += 65536) {
            memset(buf, (int)(o >> 16) + 1, 65536);
            g_assert_cmpint(strata_backend_pread(e.be, o, back, 65536, 0), ==, 0);
            g_assert_cmpmem(back, 65536, buf, 65536);
        }
        memset(buf, 0xee, 65536);
        g_assert_cmpint(strata_backend_pwrite(e.be, 0, buf, 65536, 0), ==, 0);
        g_assert_cmpint(strata_backend_pread(e.be, 0, back, 65536, 0), ==, 0);
        g_assert_cmpmem(back, 65536, buf, 65536);
        g_assert_cmpint(strata_backend_flush(e.be), ==, 0);
        env_close(&e);
        unlink(path);
        g_aligned_free(buf);
        g_aligned_free(back);
    }
}

static void test_enospc(void)
{
    g_autofree char *mnt = NULL;

    if (g_test_subprocess()) {
        g_autofree char *dir = handoff_get("tinyfs");
        enospc_body(dir);
        return;
    }
    mnt = g_strdup("/var/tmp/strata-tinyfs-XXXXXX");
    if (!g_mkdtemp(mnt)) {
        skipf("mkdtemp: %s", g_strerror(errno));
        return;
    }
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=1m") < 0) {
        skipf("cannot mount a 1 MiB tmpfs: %s", g_strerror(errno));
        rmdir(mnt);
        return;
    }
    handoff_set("tinyfs", mnt);
    g_test_trap_subprocess(NULL, 60 * G_USEC_PER_SEC,
                           G_TEST_SUBPROCESS_INHERIT_STDOUT |
                           G_TEST_SUBPROCESS_INHERIT_STDERR);
    if (umount(mnt) < 0) {
        g_test_message("umount %s: %s", mnt, g_strerror(errno));
    }
    rmdir(mnt);
    handoff_set("tinyfs", NULL);
    g_test_trap_assert_passed();
}

/* ---- main ----------------------------------------------------------------------------------------- */

static void remove_dir(const char *dir)
{
    GDir *d;
    const char *name;

    if (!dir) {
        return;
    }
    d = g_dir_open(dir, 0, NULL);
    while (d && (name = g_dir_read_name(d))) {
        g_autofree char *p = g_build_filename(dir, name, NULL);
        unlink(p);
    }
    if (d) {
        g_dir_close(d);
    }
    rmdir(dir);
}

static void add_io_tests(const char *name, GTestDataFunc fn)
{
    const struct { const char *name; const char *dir; } dirs[] = {
        { "disk", NULL },
        { "tmpfs", shm_dir },
    };

    for (int eng = 0; eng < AIO_ENGINE__MAX; eng++) {
        for (int direct = 0; direct < 2; direct++) {
            for (unsigned d = 0; d < G_N_ELEMENTS(dirs); d++) {
                IoParam *p = g_new0(IoParam, 1);
                *p = (IoParam) { (AioEngineId)eng, direct, dirs[d].dir };
                g_autofree char *path = g_strdup_printf(
                    "/file/io/%s/%s/%s/%s", name, engine_names[eng],
                    direct ? "direct" : "buffered", dirs[d].name);
                g_test_add_data_func_full(path, p, fn, g_free);
            }
        }
    }
}

int main(int argc, char **argv)
{
    const char *seed = g_getenv("STRATA_TEST_SEED");
    int ret;

    if (argc == 3 && strcmp(argv[1], "--hold-lock") == 0) {
        return hold_lock_main(argv[2]);
    }
    self_path = argv[0];
    if (seed) {
        test_seed = (guint32)strtoul(seed, NULL, 0);
    }
    g_test_init(&argc, &argv, NULL);

    if (!g_test_subprocess()) {
        test_dir = g_strdup("/var/tmp/strata-test-file-XXXXXX");
        g_assert_nonnull(g_mkdtemp(test_dir));
        shm_dir = g_strdup("/dev/shm/strata-test-file-XXXXXX");
        g_assert_nonnull(g_mkdtemp(shm_dir));
        /* For the subprocesses; no thread runs yet. */
        g_setenv("STRATA_TEST_FILE_DIR", test_dir, true);
        g_setenv("STRATA_TEST_FILE_SHM_DIR", shm_dir, true);
    } else {
        test_dir = g_strdup(g_getenv("STRATA_TEST_FILE_DIR"));
        shm_dir = g_strdup(g_getenv("STRATA_TEST_FILE_SHM_DIR"));
    }

    g_test_add_func("/file/open/missing-file", test_open_missing);
    g_test_add_func("/file/open/directory", test_open_directory);
    g_test_add_func("/file/open/native-needs-direct",
                    test_open_native_needs_direct);
    g_test_add_func("/file/open/bad-aio-value", test_open_bad_enum);
    g_test_add_func("/file/open/bounce-options", test_open_bounce_options);
    g_test_add_func("/file/open/auto-engine", test_open_auto_engine);
    g_test_add_func("/file/probe/buffered-is-byte-aligned", test_probe_buffered);
    g_test_add_func("/file/probe/direct-disk", test_probe_direct_disk);
    g_test_add_func("/file/probe/direct-tmpfs-assumes-4096",
                    test_probe_direct_tmpfs);
    g_test_add_func("/file/probe/direct-empty-file", test_probe_direct_empty);
    add_io_tests("model", test_io_model);
    add_io_tests("short-transfers", test_io_short);
    add_io_tests("eof", test_io_eof);
    add_io_tests("discard-zeroes", test_io_discard_zeroes);
    g_test_add_func("/file/block-status/seek-data", test_block_status);
    g_test_add_func("/file/direct/einval-redone-buffered", test_einval_fallback);
    g_test_add_func("/file/create-truncate", test_create_truncate);
    g_test_add_func("/file/lock/layout", test_lock_layout);
    g_test_add_func("/file/lock/same-process", test_lock_same_process);
    g_test_add_func("/file/lock/second-process", test_lock_second_process);
    g_test_add_func("/file/lock/qemu-io", test_lock_qemu_io);
    g_test_add_func("/file/reopen/cache-direct", test_reopen_direct);
    g_test_add_func("/file/reopen/native-refuses-buffered",
                    test_reopen_native_refuses_buffered);
    g_test_add_func("/file/loop-4k/odd-512-byte-writes", test_loop4k);
    g_test_add_func("/file/enospc/tiny-tmpfs", test_enospc);

    ret = g_test_run();
    if (!g_test_subprocess()) {
        remove_dir(test_dir);
        remove_dir(shm_dir);
    }
    g_free(test_dir);
    g_free(shm_dir);
    return ret;
}
