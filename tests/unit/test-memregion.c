/*
 * Tests of guest memory registration: the context's region table and the
 * file driver's io_uring fixed-buffer path
 * SPDX-License-Identifier: MIT
 *
 * "Guest RAM" is an anonymous mmap; the image is a file in a private
 * directory under /var/tmp opened with aio=io_uring and O_DIRECT.  Every
 * data test checks the bytes (read back through the backend and straight
 * from the file) and the file node's counters: fixed_reads/fixed_writes
 * move exactly when a request took the fixed path, fixed_fallbacks when
 * it lay in a region the engine refused.  Tests that need io_uring skip
 * with the reason when it is missing.
 *
 * The RLIMIT_MEMLOCK case runs in a child process of this binary
 * (--memlock-child): it drops CAP_IPC_LOCK (root bypasses the limit
 * otherwise) and lowers the limit before the ring exists, so the kernel
 * itself refuses the registration.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>
#include <glib.h>

#include "block/aio-engine.h"
#include "block/block-int.h"
#include "block/file-posix.h"
#include "block/memregion.h"

#define RW_PERM (STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE)
#define RW_SHARED (STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE_UNCHANGED)
#define IMG_SIZE (4 << 20)
#define RAM_SIZE (4 << 20)
#define BLK 4096

static char *test_dir;
static const char *self_path;

/* skipf() is GLib 2.78. */
static void G_GNUC_PRINTF(1, 2) skipf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_test_skip(msg);
}

/* ---- harness ------------------------------------------------------------- */

/* Why io_uring (with O_DIRECT in test_dir) cannot be used, or NULL. */
static const char *uring_unusable(void)
{
    const AioEngineOps *ops = aio_engine_get(AIO_ENGINE_IO_URING);
    const char *why = NULL;

    if (!ops) {
        return "io_uring not compiled in";
    }
    if (!ops->available(&why)) {
        return why ? why : "io_uring unavailable";
    }
    return NULL;
}

static bool need_uring(void)
{
    const char *why = uring_unusable();

    if (why) {
        skipf("%s", why);
        return false;
    }
    return true;
}

typedef struct Env {
    StrataContext *ctx;
    StrataNode *node;
    StrataBackend *be;
    char *path;
    int raw_fd;                 /* the image, for checks that bypass us */
} Env;

/* A fresh context (no node yet), so that a test can register memory
 * before the engine state exists. */
static void env_init(Env *e, const char *name)
{
    memset(e, 0, sizeof(*e));
    e->ctx = strata_context_new(NULL);
    g_assert_nonnull(e->ctx);
    e->path = g_build_filename(test_dir, name, NULL);
    g_autoptr(StrataError) err = NULL;
    if (!file_create(e->path, IMG_SIZE, PREALLOC_FALLOC, &err)) {
        g_error("file_create(%s): %s", e->path, error_get_message(err));
    }
    e->raw_fd = open(e->path, O_RDWR | O_CLOEXEC);
    g_assert_cmpint(e->raw_fd, >=, 0);
}

static void env_open_node(Env *e, const char *aio)
{
    g_autoptr(StrataError) err = NULL;
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\", \"aio\": \"%s\", "
        "\"cache\": {\"direct\": true}}", e->path, aio);

    e->node = strata_node_open_json(e->ctx, json, &err);
    if (!e->node) {
        g_error("opening %s: %s", json, error_get_message(err));
    }
    e->be = strata_backend_new(e->node, "test", RW_PERM, RW_SHARED, &err);
    g_assert_nonnull(e->be);
    strata_node_unref(e->node);         /* the backend holds it */
}

static void env_close(Env *e)
{
    strata_context_free(e->ctx);
    close(e->raw_fd);
    unlink(e->path);
    g_free(e->path);
    memset(e, 0, sizeof(*e));
}

static FileInfo env_info(Env *e)
{
    FileInfo info;
    file_get_info(e->node, &info);
    return info;
}

/* Anonymous memory standing for guest RAM, prefaulted. */
static uint8_t *ram_new(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    g_assert_true(p != MAP_FAILED);
    return p;
}

static void ram_free(uint8_t *p, size_t len)
{
    g_assert_cmpint(munmap(p, len), ==, 0);
}

static void fill_pattern(uint8_t *buf, size_t len, uint32_t seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)((i * 2654435761u + seed) >> 13);
    }
}

static void register_ok(StrataContext *ctx, void *addr, size_t len)
{
    g_autoptr(StrataError) err = NULL;

    if (!strata_context_register_memory(ctx, addr, len, &err)) {
        g_error("register %p+%zu: %s", addr, len, error_get_message(err));
    }
}

/* Skip (true) when the kernel would not take anonymous memory as a fixed
 * buffer at all: a kernel without sparse buffer tables (before 5.19) or
 * fixed opcodes.  Any other refusal is a failure of the test. */
static bool fixed_unsupported(Env *e)
{
    MemRegionInfo mi;

    memregion_get_info(e->ctx, AIO_ENGINE_IO_URING, &mi);
    g_assert_cmpint(mi.pieces, >, 0);
    if (mi.pieces_registered == 0 &&
        (mi.last_error == -EOPNOTSUPP || mi.last_error == -EINVAL)) {
        skipf("io_uring fixed buffers unsupported here: %s",
              g_strerror(-mi.last_error));
        return true;
    }
    g_assert_cmpint(mi.pieces_registered, ==, mi.pieces);
    return false;
}

/* The image's bytes at @offset, read past every layer of ours. */
static void raw_check(Env *e, int64_t offset, const uint8_t *want, size_t len)
{
    g_autofree uint8_t *got = g_malloc(len);

    g_assert_cmpint(pread(e->raw_fd, got, len, offset), ==, (ssize_t)len);
    g_assert_cmpmem(got, len, want, len);
}

/* ---- the table, without any engine --------------------------------------- */

static void test_api_errors(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    uint8_t *ram = ram_new(RAM_SIZE);
    g_autoptr(StrataError) e1 = NULL;
    g_autoptr(StrataError) e2 = NULL;
    g_autoptr(StrataError) e3 = NULL;
    g_autoptr(StrataError) e4 = NULL;
    g_autoptr(StrataError) e5 = NULL;
    g_autoptr(StrataError) e6 = NULL;
    MemRegionInfo mi;

    g_assert_false(strata_context_register_memory(ctx, NULL, BLK, &e1));
    g_assert_cmpint(error_get_errno(e1), ==, EINVAL);
    g_assert_cmpint(strata_error_get_class(e1), ==,
                    STRATA_ERROR_INVALID_OPTION);
    g_assert_nonnull(strstr(error_get_message(e1), "null address"));

    g_assert_false(strata_context_register_memory(ctx, ram, 0, &e2));
    g_assert_cmpint(error_get_errno(e2), ==, EINVAL);
    g_assert_nonnull(strstr(error_get_message(e2), "empty region"));

    g_assert_false(strata_context_register_memory(
        ctx, (void *)(UINTPTR_MAX - BLK + 1), 2 * BLK, &e3));
    g_assert_cmpint(error_get_errno(e3), ==, EINVAL);
    g_assert_nonnull(strstr(error_get_message(e3), "wraps around"));

    /* No region yet: the context has no table at all. */
    g_assert_null(ctx->memregions);

    /* Two adjacent regions are fine; overlaps of every shape are not. */
    register_ok(ctx, ram + 1 * BLK, 2 * BLK);
    register_ok(ctx, ram + 3 * BLK, 2 * BLK);
    g_assert_false(strata_context_register_memory(ctx, ram + 1 * BLK, 2 * BLK,
                                                  &e4));
    g_assert_cmpint(error_get_errno(e4), ==, EEXIST);
    g_assert_nonnull(strstr(error_get_message(e4), "overlaps"));
    /* Ends one byte inside the first region. */
    g_assert_false(strata_context_register_memory(ctx, ram, BLK + 1, &e5));
    g_assert_cmpint(error_get_errno(e5), ==, EEXIST);
    /* Covers both. */
    g_assert_false(strata_context_register_memory(ctx, ram, 8 * BLK, &e6));
    g_assert_cmpint(error_get_errno(e6), ==, EEXIST);
    /* Just below and just above: fine. */
    register_ok(ctx, ram, BLK);
    register_ok(ctx, ram + 5 * BLK, BLK);

    memregion_get_info(ctx, AIO_ENGINE_IO_URING, &mi);
    g_assert_cmpint(mi.regions, ==, 4);
    g_assert_cmpuint(mi.bytes, ==, 6 * BLK);
    g_assert_cmpint(mi.pieces, ==, 0);          /* no engine state yet */

    /* Unregistering needs the start address; anything else is a no-op. */
    strata_context_unregister_memory(ctx, ram + 2 * BLK);
    strata_context_unregister_memory(ctx, ram + 100 * BLK);
    memregion_get_info(ctx, AIO_ENGINE_IO_URING, &mi);
    g_assert_cmpint(mi.regions, ==, 4);
    strata_context_unregister_memory(ctx, ram + 1 * BLK);
    strata_context_unregister_memory(ctx, ram + 3 * BLK);
    strata_context_unregister_memory(ctx, ram);
    strata_context_unregister_memory(ctx, ram + 5 * BLK);
    g_assert_null(ctx->memregions);
    /* The space is free again. */
    register_ok(ctx, ram, RAM_SIZE);

    /* The context frees what the embedder left registered. */
    strata_context_free(ctx);
    ram_free(ram, RAM_SIZE);
}

/*
 * Lookups, with addresses that are never touched: without an engine
 * state nothing is pinned, so a region can be far larger than the test's
 * memory and its 1 GiB pieces can be checked.
 */
static void test_lookup(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    const size_t GiB = (size_t)1 << 30;
    uint8_t *big = (uint8_t *)(uintptr_t)0x100000000000ull;
    uint8_t *small = big + 8 * GiB;
    const AioEngineId id = AIO_ENGINE_IO_URING;

    register_ok(ctx, small, 64 * BLK);
    register_ok(ctx, big, 2 * GiB + 8 * BLK);   /* three pieces */

    /* Inside a region: the engine was never offered it. */
    g_assert_cmpint(memregion_lookup(ctx, id, 0, big, BLK), ==,
                    MEMREGION_NOT_OFFERED);
    g_assert_cmpint(memregion_lookup(ctx, id, 0, big + GiB - BLK, BLK), ==,
                    MEMREGION_NOT_OFFERED);
    g_assert_cmpint(memregion_lookup(ctx, id, 0, big + 2 * GiB, 8 * BLK), ==,
                    MEMREGION_NOT_OFFERED);
    g_assert_cmpint(memregion_lookup(ctx, id, 0, small + 63 * BLK, BLK), ==,
                    MEMREGION_NOT_OFFERED);
    /* Across a piece boundary inside one region. */
    g_assert_cmpint(memregion_lookup(ctx, id, 0, big + GiB - BLK, 2 * BLK), ==,
                    MEMREGION_MISS);
    /* Past a region's end, before the first, between two, empty. */
    g_assert_cmpint(memregion_lookup(ctx, id, 0, big + 2 * GiB, 8 * BLK + 1), ==,
                    MEMREGION_MISS);
    g_assert_cmpint(memregion_lookup(ctx, id, 0, big - 1, 1), ==, MEMREGION_MISS);
    g_assert_cmpint(memregion_lookup(ctx, id, 0, big + 4 * GiB, 1), ==,
                    MEMREGION_MISS);
    g_assert_cmpint(memregion_lookup(ctx, id, 0, small + 64 * BLK, 1), ==,
                    MEMREGION_MISS);
    g_assert_cmpint(memregion_lookup(ctx, id, 0, big, 0), ==, MEMREGION_MISS);

    strata_context_free(ctx);
}

/* ---- the fixed path ------------------------------------------------------- */

/*
 * Single-buffer writes and reads inside registered memory take the fixed
 * path, with the right bytes in the file and in memory.  @early registers
 * before the node (and so the io_uring state) exists.
 */
static void fixed_rw(bool early)
{
    uint8_t *ram = ram_new(RAM_SIZE);
    g_autofree uint8_t *want = g_malloc(1 << 20);
    g_autoptr(GString) out = g_string_new(NULL);
    FileInfo info;
    Env e;

    env_init(&e, early ? "fixed-early.img" : "fixed-late.img");
    if (early) {
        register_ok(e.ctx, ram, RAM_SIZE);
        env_open_node(&e, "io_uring");
    } else {
        env_open_node(&e, "io_uring");
        register_ok(e.ctx, ram, RAM_SIZE);
    }
    if (fixed_unsupported(&e)) {
        goto out;
    }

    /* 4K, 64K and 1M writes from three places in "guest RAM". */
    static const struct { size_t mem; int64_t off; size_t len; } w[] = {
        { 0, 0, BLK },
        { 5 * BLK, 64 * BLK, 16 * BLK },
        { RAM_SIZE - (1 << 20), 1 << 20, 1 << 20 },
    };
    for (unsigned i = 0; i < G_N_ELEMENTS(w); i++) {
        fill_pattern(ram + w[i].mem, w[i].len, i + 1);
        g_assert_cmpint(strata_backend_pwrite(e.be, w[i].off, ram + w[i].mem,
                                              w[i].len, 0), ==, 0);
        raw_check(&e, w[i].off, ram + w[i].mem, w[i].len);
    }
    info = env_info(&e);
    g_assert_cmpuint(info.fixed_writes, ==, G_N_ELEMENTS(w));
    g_assert_cmpuint(info.fixed_reads, ==, 0);
    g_assert_cmpuint(info.fixed_fallbacks, ==, 0);

    /* FUA writes go the same way. */
    fill_pattern(ram + 2 * BLK, BLK, 77);
    g_assert_cmpint(strata_backend_pwrite(e.be, 8 * BLK, ram + 2 * BLK, BLK,
                                          STRATA_REQ_FUA), ==, 0);
    raw_check(&e, 8 * BLK, ram + 2 * BLK, BLK);
    g_assert_cmpuint(env_info(&e).fixed_writes, ==, G_N_ELEMENTS(w) + 1);

    /* Read each back into another part of the region. */
    for (unsigned i = 0; i < G_N_ELEMENTS(w); i++) {
        uint8_t *dst = ram + RAM_SIZE / 2 - (1 << 20) + (i % 2) * BLK;
        fill_pattern(want, w[i].len, i + 1);
        memset(dst, 0xa5, w[i].len);
        g_assert_cmpint(strata_backend_pread(e.be, w[i].off, dst, w[i].len, 0),
                        ==, 0);
        g_assert_cmpmem(dst, w[i].len, want, w[i].len);
    }
    info = env_info(&e);
    g_assert_cmpuint(info.fixed_reads, ==, G_N_ELEMENTS(w));
    g_assert_cmpuint(info.fixed_writes, ==, G_N_ELEMENTS(w) + 1);
    g_assert_cmpuint(info.fixed_fallbacks, ==, 0);

    /* "info" shows the counters. */
    e.node->drv->dump_info(e.node, out);
    g_assert_nonnull(strstr(out->str, "1 regions (4194304 bytes), 1 of 1 "
                            "pieces fixed buffers; 3 fixed reads, 4 fixed "
                            "writes, 0 fixed_fallbacks"));
out:
    env_close(&e);
    ram_free(ram, RAM_SIZE);
}

static void test_fixed_register_first(void)
{
    if (need_uring()) {
        fixed_rw(true);
    }
}

static void test_fixed_register_after_open(void)
{
    if (need_uring()) {
        fixed_rw(false);
    }
}

/*
 * Requests that are not one buffer inside one region take the normal
 * path: outside every region, straddling two adjacent regions, vectored.
 * The data is right all the same and the fixed counters do not move.
 */
static void test_normal_path(void)
{
    uint8_t *ram, *other;
    FileInfo before, after;
    Env e;

    if (!need_uring()) {
        return;
    }
    ram = ram_new(RAM_SIZE);
    other = ram_new(16 * BLK);
    env_init(&e, "normal.img");
    env_open_node(&e, "io_uring");
    /* Two adjacent regions over one mapping. */
    register_ok(e.ctx, ram, RAM_SIZE / 2);
    register_ok(e.ctx, ram + RAM_SIZE / 2, RAM_SIZE / 2);
    if (fixed_unsupported(&e)) {
        goto out;
    }
    before = env_info(&e);

    /* Outside any region. */
    fill_pattern(other, 16 * BLK, 11);
    g_assert_cmpint(strata_backend_pwrite(e.be, 0, other, 16 * BLK, 0), ==, 0);
    raw_check(&e, 0, other, 16 * BLK);
    memset(other, 0, 16 * BLK);
    g_assert_cmpint(strata_backend_pread(e.be, 0, other, 16 * BLK, 0), ==, 0);
    raw_check(&e, 0, other, 16 * BLK);

    /* Straddling the two regions: 4 blocks in each. */
    uint8_t *mid = ram + RAM_SIZE / 2 - 4 * BLK;
    fill_pattern(mid, 8 * BLK, 12);
    g_assert_cmpint(strata_backend_pwrite(e.be, 32 * BLK, mid, 8 * BLK, 0),
                    ==, 0);
    raw_check(&e, 32 * BLK, mid, 8 * BLK);
    memset(mid, 0, 8 * BLK);
    g_assert_cmpint(strata_backend_pread(e.be, 32 * BLK, mid, 8 * BLK, 0),
                    ==, 0);
    raw_check(&e, 32 * BLK, mid, 8 * BLK);

    /* Vectored, both elements inside one region. */
    struct iovec iov[2] = {
        { ram + 10 * BLK, 2 * BLK },
        { ram + 20 * BLK, 3 * BLK },
    };
    fill_pattern(iov[0].iov_base, iov[0].iov_len, 13);
    fill_pattern(iov[1].iov_base, iov[1].iov_len, 14);
    g_assert_cmpint(strata_backend_pwritev(e.be, 64 * BLK, iov, 2, 0), ==, 0);
    raw_check(&e, 64 * BLK, iov[0].iov_base, iov[0].iov_len);
    raw_check(&e, 66 * BLK, iov[1].iov_base, iov[1].iov_len);
    memset(ram + 10 * BLK, 0, 2 * BLK);
    memset(ram + 20 * BLK, 0, 3 * BLK);
    g_assert_cmpint(strata_backend_preadv(e.be, 64 * BLK, iov, 2, 0), ==, 0);
    raw_check(&e, 64 * BLK, iov[0].iov_base, iov[0].iov_len);
    raw_check(&e, 66 * BLK, iov[1].iov_base, iov[1].iov_len);

    after = env_info(&e);
    g_assert_cmpuint(after.fixed_reads, ==, before.fixed_reads);
    g_assert_cmpuint(after.fixed_writes, ==, before.fixed_writes);
    g_assert_cmpuint(after.fixed_fallbacks, ==, before.fixed_fallbacks);

    /* And a buffer wholly inside the second region does take it. */
    g_assert_cmpint(strata_backend_pread(e.be, 0, ram + RAM_SIZE / 2, BLK, 0),
                    ==, 0);
    g_assert_cmpuint(env_info(&e).fixed_reads, ==, before.fixed_reads + 1);
out:
    env_close(&e);
    ram_free(ram, RAM_SIZE);
    ram_free(other, 16 * BLK);
}

/* Unregistered memory goes the normal path again; re-registering brings
 * the fixed path back (the engine's slot was freed). */
static void test_unregister(void)
{
    uint8_t *ram;
    FileInfo info;
    Env e;

    if (!need_uring()) {
        return;
    }
    ram = ram_new(RAM_SIZE);
    env_init(&e, "unregister.img");
    env_open_node(&e, "io_uring");
    register_ok(e.ctx, ram, RAM_SIZE);
    if (fixed_unsupported(&e)) {
        goto out;
    }
    fill_pattern(ram, BLK, 21);
    g_assert_cmpint(strata_backend_pwrite(e.be, 0, ram, BLK, 0), ==, 0);
    g_assert_cmpuint(env_info(&e).fixed_writes, ==, 1);

    strata_context_unregister_memory(e.ctx, ram);
    g_assert_null(e.ctx->memregions);
    fill_pattern(ram + BLK, BLK, 22);
    g_assert_cmpint(strata_backend_pwrite(e.be, BLK, ram + BLK, BLK, 0), ==, 0);
    raw_check(&e, BLK, ram + BLK, BLK);
    memset(ram, 0, 2 * BLK);
    g_assert_cmpint(strata_backend_pread(e.be, 0, ram, 2 * BLK, 0), ==, 0);
    raw_check(&e, 0, ram, 2 * BLK);
    info = env_info(&e);
    g_assert_cmpuint(info.fixed_writes, ==, 1);
    g_assert_cmpuint(info.fixed_reads, ==, 0);
    g_assert_cmpuint(info.fixed_fallbacks, ==, 0);

    /* Every one of the engine's slots comes back: register and drop more
     * regions than it has slots. */
    for (int i = 0; i < 300; i++) {
        register_ok(e.ctx, ram, BLK);
        strata_context_unregister_memory(e.ctx, ram);
    }
    register_ok(e.ctx, ram, RAM_SIZE);
    g_assert_false(fixed_unsupported(&e));
    g_assert_cmpint(strata_backend_pread(e.be, 0, ram, BLK, 0), ==, 0);
    g_assert_cmpuint(env_info(&e).fixed_reads, ==, 1);
out:
    env_close(&e);
    ram_free(ram, RAM_SIZE);
}

static void open_node_fn(void *opaque)
{
    env_open_node(opaque, "io_uring");
}

/*
 * With a loop thread, as a VMM runs it: registration from this thread
 * runs in the loop thread (strata_context_call), the node is hot-plugged
 * there afterwards (its engine state gets the region then), and I/O from
 * this thread takes the fixed path.
 */
static void test_loop_thread(void)
{
    uint8_t *ram;
    Env e;

    if (!need_uring()) {
        return;
    }
    ram = ram_new(RAM_SIZE);
    env_init(&e, "thread.img");
    g_assert_true(strata_context_start_thread(e.ctx, NULL));
    register_ok(e.ctx, ram, RAM_SIZE);
    strata_context_call(e.ctx, open_node_fn, &e);

    fill_pattern(ram, 8 * BLK, 31);
    g_assert_cmpint(strata_backend_pwrite(e.be, 0, ram, 8 * BLK, 0), ==, 0);
    memset(ram + 8 * BLK, 0, 8 * BLK);
    g_assert_cmpint(strata_backend_pread(e.be, 0, ram + 8 * BLK, 8 * BLK, 0),
                    ==, 0);
    g_assert_cmpmem(ram + 8 * BLK, 8 * BLK, ram, 8 * BLK);
    strata_context_unregister_memory(e.ctx, ram);
    strata_context_stop_thread(e.ctx);

    MemRegionInfo mi;
    memregion_get_info(e.ctx, AIO_ENGINE_IO_URING, &mi);
    g_assert_cmpint(mi.regions, ==, 0);
    FileInfo info = env_info(&e);
    /* Both took the fixed path unless this kernel has no fixed buffers. */
    g_assert_cmpuint(info.fixed_reads, ==, info.fixed_writes);
    g_assert_cmpuint(info.fixed_reads + info.fixed_writes +
                     info.fixed_fallbacks, ==, 2);
    env_close(&e);
    ram_free(ram, RAM_SIZE);
}

/* One read or write submitted on queue @q from a thread of its own (the
 * calling thread owns queue 0's loop, whose requests stay there). */
typedef struct QueueIO {
    Env *e;
    StrataQueue *q;
    bool write;
    int64_t off;
    void *buf;
    size_t len;
    int ret;
} QueueIO;

static gpointer queue_io_thread(gpointer opaque)
{
    QueueIO *io = opaque;

    strata_queue_set_current(io->q);
    io->ret = io->write
        ? strata_backend_pwrite(io->e->be, io->off, io->buf, io->len, 0)
        : strata_backend_pread(io->e->be, io->off, io->buf, io->len, 0);
    strata_queue_set_current(NULL);
    return NULL;
}

static int queue_io(Env *e, StrataQueue *q, bool write, int64_t off,
                    void *buf, size_t len)
{
    QueueIO io = { e, q, write, off, buf, len, -1 };

    g_thread_join(g_thread_new("queue-io", queue_io_thread, &io));
    return io.ret;
}

/*
 * Multi-queue: each queue's ring has its own fixed buffers.  A region
 * registered while a second queue runs is registered with that queue's
 * ring in its own thread; so is one registered after that queue's ring
 * exists (found on its next lookup).  I/O submitted on the second queue
 * takes the fixed path with the right bytes; after unregistering, the
 * same buffers take the normal path.
 */
static void test_second_queue(void)
{
    uint8_t *ram, *ram2;
    StrataQueue *q;
    MemRegionInfo mi;
    FileInfo before, info;
    Env e;

    if (!need_uring()) {
        return;
    }
    ram = ram_new(RAM_SIZE);
    ram2 = ram_new(RAM_SIZE);
    env_init(&e, "queue2.img");
    env_open_node(&e, "io_uring");
    q = strata_queue_new(e.ctx, NULL);
    g_assert_nonnull(q);
    g_assert_true(strata_queue_start_thread(q, NULL));
    register_ok(e.ctx, ram, RAM_SIZE);
    if (fixed_unsupported(&e)) {
        strata_queue_stop_thread(q);
        strata_queue_free(q);
        goto out;
    }

    before = env_info(&e);
    fill_pattern(ram, 16 * BLK, 41);
    g_assert_cmpint(queue_io(&e, q, true, 0, ram, 16 * BLK), ==, 0);
    memset(ram + 16 * BLK, 0, 16 * BLK);
    g_assert_cmpint(queue_io(&e, q, false, 0, ram + 16 * BLK, 16 * BLK), ==,
                    0);
    g_assert_cmpmem(ram + 16 * BLK, 16 * BLK, ram, 16 * BLK);
    info = env_info(&e);
    g_assert_cmpuint(info.fixed_writes, ==, before.fixed_writes + 1);
    g_assert_cmpuint(info.fixed_reads, ==, before.fixed_reads + 1);
    g_assert_cmpuint(info.fixed_fallbacks, ==, before.fixed_fallbacks);
    /* Offered to both rings, and both took it. */
    memregion_get_info(e.ctx, AIO_ENGINE_IO_URING, &mi);
    g_assert_cmpint(mi.pieces, ==, 2);
    g_assert_cmpint(mi.pieces_registered, ==, 2);

    /* A region registered now: queue 1 meets it on its next lookup. */
    register_ok(e.ctx, ram2, RAM_SIZE);
    fill_pattern(ram2, 4 * BLK, 42);
    g_assert_cmpint(queue_io(&e, q, true, 64 * BLK, ram2, 4 * BLK), ==, 0);
    raw_check(&e, 64 * BLK, ram2, 4 * BLK);
    info = env_info(&e);
    g_assert_cmpuint(info.fixed_writes, ==, before.fixed_writes + 2);
    memregion_get_info(e.ctx, AIO_ENGINE_IO_URING, &mi);
    g_assert_cmpint(mi.regions, ==, 2);
    g_assert_cmpint(mi.pieces_registered, ==, 4);

    /* Unregistered: the slots go back to each ring (queue 1's through its
     * hand-over list) and the same buffers take the normal path. */
    strata_context_unregister_memory(e.ctx, ram);
    strata_context_unregister_memory(e.ctx, ram2);
    fill_pattern(ram, 4 * BLK, 43);
    g_assert_cmpint(queue_io(&e, q, true, 128 * BLK, ram, 4 * BLK), ==, 0);
    raw_check(&e, 128 * BLK, ram, 4 * BLK);
    g_assert_cmpuint(env_info(&e).fixed_writes, ==, info.fixed_writes);
    memregion_get_info(e.ctx, AIO_ENGINE_IO_URING, &mi);
    g_assert_cmpint(mi.regions, ==, 0);

    /* A queue freed with a region registered forgets its slots. */
    register_ok(e.ctx, ram, RAM_SIZE);
    g_assert_cmpint(queue_io(&e, q, true, 0, ram, BLK), ==, 0);
    strata_queue_stop_thread(q);
    strata_queue_free(q);
    memregion_get_info(e.ctx, AIO_ENGINE_IO_URING, &mi);
    g_assert_cmpint(mi.pieces, ==, 1);
    strata_context_unregister_memory(e.ctx, ram);
out:
    env_close(&e);
    ram_free(ram, RAM_SIZE);
    ram_free(ram2, RAM_SIZE);
}

/* Other engines never use fixed buffers, registered memory or not. */
static void test_threads_engine(void)
{
    uint8_t *ram = ram_new(RAM_SIZE);
    Env e;

    env_init(&e, "threads.img");
    register_ok(e.ctx, ram, RAM_SIZE);
    env_open_node(&e, "threads");
    fill_pattern(ram, 4 * BLK, 41);
    g_assert_cmpint(strata_backend_pwrite(e.be, 0, ram, 4 * BLK, 0), ==, 0);
    raw_check(&e, 0, ram, 4 * BLK);
    g_assert_cmpint(strata_backend_pread(e.be, 0, ram + 4 * BLK, 4 * BLK, 0),
                    ==, 0);
    g_assert_cmpmem(ram + 4 * BLK, 4 * BLK, ram, 4 * BLK);
    FileInfo info = env_info(&e);
    g_assert_cmpuint(info.fixed_reads + info.fixed_writes +
                     info.fixed_fallbacks, ==, 0);
    env_close(&e);
    ram_free(ram, RAM_SIZE);
}

/* ---- registration refused: the normal path, counted ---------------------- */

/* I/O inside a region the engine refused: right bytes, fallbacks counted,
 * no fixed requests.  Shared by the hook test and the memlock child. */
static void check_fallback_io(Env *e, uint8_t *ram, int expect_err)
{
    MemRegionInfo mi;
    FileInfo info;

    memregion_get_info(e->ctx, AIO_ENGINE_IO_URING, &mi);
    g_assert_cmpint(mi.regions, ==, 1);
    g_assert_cmpint(mi.pieces, ==, 1);
    g_assert_cmpint(mi.pieces_registered, ==, 0);
    g_assert_cmpint(mi.last_error, ==, expect_err);

    fill_pattern(ram, 8 * BLK, 51);
    g_assert_cmpint(strata_backend_pwrite(e->be, 16 * BLK, ram, 8 * BLK, 0),
                    ==, 0);
    raw_check(e, 16 * BLK, ram, 8 * BLK);
    memset(ram + 8 * BLK, 0, 8 * BLK);
    g_assert_cmpint(strata_backend_pread(e->be, 16 * BLK, ram + 8 * BLK,
                                         8 * BLK, 0), ==, 0);
    g_assert_cmpmem(ram + 8 * BLK, 8 * BLK, ram, 8 * BLK);
    info = env_info(e);
    g_assert_cmpuint(info.fixed_reads, ==, 0);
    g_assert_cmpuint(info.fixed_writes, ==, 0);
    g_assert_cmpuint(info.fixed_fallbacks, ==, 2);
}

static void test_fallback_hook(void)
{
    uint8_t *ram;
    Env e;

    if (!need_uring()) {
        return;
    }
    ram = ram_new(RAM_SIZE);
    env_init(&e, "fallback-hook.img");
    env_open_node(&e, "io_uring");
    memregion_test_fail_register(1, -ENOMEM);
    register_ok(e.ctx, ram, RAM_SIZE);      /* not an error for us */
    memregion_test_fail_register(0, 0);
    check_fallback_io(&e, ram, -ENOMEM);

    g_autoptr(GString) out = g_string_new(NULL);
    e.node->drv->dump_info(e.node, out);
    g_assert_nonnull(strstr(out->str, "0 of 1 pieces fixed buffers; 0 fixed "
                            "reads, 0 fixed writes, 2 fixed_fallbacks"));
    env_close(&e);
    ram_free(ram, RAM_SIZE);
}

/*
 * The child: no CAP_IPC_LOCK, a 1 MiB memlock limit, then the ring and a
 * 4 MiB region.  Exit 0: refused and fell back correctly; 77: could not
 * set the scene (printed why); else failed.  The kernel counts locked
 * memory per user, across processes: other processes of the same user
 * without CAP_IPC_LOCK may use up the limit before our ring is made, so
 * that failure is a skip, not an error.
 */
static int memlock_child_main(void)
{
    struct __user_cap_header_struct hdr = {
        .version = _LINUX_CAPABILITY_VERSION_3,
    };
    struct __user_cap_data_struct cap[2] = { { 0 } };
    struct rlimit rl = { 1 << 20, 1 << 20 };
    g_autoptr(StrataError) err = NULL;
    g_autofree char *json = NULL;
    const char *why = uring_unusable();
    MemRegionInfo mi;
    uint8_t *ram;
    Env e;

    if (why) {
        printf("io_uring unusable: %s\n", why);
        return 77;
    }
    if (syscall(SYS_capget, &hdr, cap) == 0) {
        cap[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
        cap[CAP_IPC_LOCK / 32].permitted &= ~(1u << (CAP_IPC_LOCK % 32));
        if (syscall(SYS_capset, &hdr, cap) < 0) {
            printf("capset: %s\n", g_strerror(errno));
        }
    }
    if (setrlimit(RLIMIT_MEMLOCK, &rl) < 0) {
        printf("setrlimit: %s\n", g_strerror(errno));
        return 77;
    }
    ram = ram_new(RAM_SIZE);
    env_init(&e, "fallback-memlock.img");
    json = g_strdup_printf("{\"driver\": \"file\", \"filename\": \"%s\", "
                           "\"aio\": \"io_uring\", \"cache\": {\"direct\": "
                           "true}}", e.path);
    e.node = strata_node_open_json(e.ctx, json, &err);
    if (!e.node) {
        printf("no ring under the lowered limit: %s\n",
               error_get_message(err));
        env_close(&e);
        return 77;
    }
    e.be = strata_backend_new(e.node, "test", RW_PERM, RW_SHARED, NULL);
    g_assert_nonnull(e.be);
    strata_node_unref(e.node);
    register_ok(e.ctx, ram, RAM_SIZE);
    memregion_get_info(e.ctx, AIO_ENGINE_IO_URING, &mi);
    if (mi.pieces_registered) {
        printf("the kernel pinned 4 MiB despite RLIMIT_MEMLOCK=1M\n");
        env_close(&e);
        return 77;
    }
    if (mi.last_error != -ENOMEM) {
        printf("refused with %d, not -ENOMEM\n", mi.last_error);
    }
    check_fallback_io(&e, ram, mi.last_error);
    env_close(&e);
    ram_free(ram, RAM_SIZE);
    printf("fell back after %s\n", g_strerror(-mi.last_error));
    return 0;
}

static void test_fallback_memlock(void)
{
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;
    g_autoptr(GError) gerr = NULL;
    char *argv[] = { (char *)self_path, (char *)"--memlock-child", NULL };
    int status;

    if (!need_uring()) {
        return;
    }
    g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL,
                               &out, &err, &status, &gerr));
    g_strchomp(out);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
        skipf("could not provoke a refusal: %s", out);
        return;
    }
    if (!g_spawn_check_wait_status(status, NULL)) {
        g_error("memlock child failed (status %d): %s%s", status, out, err);
    }
    g_test_message("memlock child: %s", out);
}

/*
 * Memory mapped from a file on a disk filesystem: the kernel may refuse
 * to pin it (long-term pins of page-cache pages of most filesystems are
 * not allowed).  Either way the bytes are right and the counters say
 * which path was taken.
 */
static void test_file_backed(void)
{
    g_autofree char *ram_path = NULL;
    MemRegionInfo mi;
    FileInfo info;
    uint8_t *ram;
    int fd;
    Env e;

    if (!need_uring()) {
        return;
    }
    ram_path = g_build_filename(test_dir, "ram-file", NULL);
    fd = open(ram_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, RAM_SIZE), ==, 0);
    ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    g_assert_true(ram != MAP_FAILED);

    env_init(&e, "file-backed.img");
    env_open_node(&e, "io_uring");
    register_ok(e.ctx, ram, RAM_SIZE);
    memregion_get_info(e.ctx, AIO_ENGINE_IO_URING, &mi);
    g_test_message("file-backed region: %s",
                   mi.pieces_registered ? "registered"
                                        : g_strerror(-mi.last_error));

    fill_pattern(ram, 4 * BLK, 61);
    g_assert_cmpint(strata_backend_pwrite(e.be, 0, ram, 4 * BLK, 0), ==, 0);
    raw_check(&e, 0, ram, 4 * BLK);
    g_assert_cmpint(strata_backend_pread(e.be, 0, ram + 4 * BLK, 4 * BLK, 0),
                    ==, 0);
    g_assert_cmpmem(ram + 4 * BLK, 4 * BLK, ram, 4 * BLK);
    info = env_info(&e);
    if (mi.pieces_registered) {
        g_assert_cmpuint(info.fixed_writes, ==, 1);
        g_assert_cmpuint(info.fixed_reads, ==, 1);
        g_assert_cmpuint(info.fixed_fallbacks, ==, 0);
    } else {
        g_assert_cmpuint(info.fixed_writes + info.fixed_reads, ==, 0);
        g_assert_cmpuint(info.fixed_fallbacks, ==, 2);
    }
    env_close(&e);
    munmap(ram, RAM_SIZE);
    close(fd);
    unlink(ram_path);
}

int main(int argc, char **argv)
{
    int ret;

    if (argc == 2 && strcmp(argv[1], "--memlock-child") == 0) {
        test_dir = g_strdup(g_getenv("STRATA_TEST_MEMREGION_DIR"));
        g_assert_nonnull(test_dir);
        return memlock_child_main();
    }
    self_path = argv[0];
    g_test_init(&argc, &argv, NULL);
    test_dir = g_strdup("/var/tmp/strata-test-memregion-XXXXXX");
    g_assert_nonnull(g_mkdtemp(test_dir));
    /* For the child; no thread runs yet. */
    g_setenv("STRATA_TEST_MEMREGION_DIR", test_dir, true);

    g_test_add_func("/memregion/api/errors-and-overlaps", test_api_errors);
    g_test_add_func("/memregion/lookup/pieces-and-boundaries", test_lookup);
    g_test_add_func("/memregion/fixed/register-before-open",
                    test_fixed_register_first);
    g_test_add_func("/memregion/fixed/register-after-open",
                    test_fixed_register_after_open);
    g_test_add_func("/memregion/fixed/loop-thread", test_loop_thread);
    g_test_add_func("/memregion/fixed/second-queue", test_second_queue);
    g_test_add_func("/memregion/normal-path/outside-straddling-vectored",
                    test_normal_path);
    g_test_add_func("/memregion/normal-path/threads-engine",
                    test_threads_engine);
    g_test_add_func("/memregion/unregister/then-io", test_unregister);
    g_test_add_func("/memregion/fallback/test-hook", test_fallback_hook);
    g_test_add_func("/memregion/fallback/rlimit-memlock",
                    test_fallback_memlock);
    g_test_add_func("/memregion/fallback/file-backed-memory",
                    test_file_backed);

    ret = g_test_run();
    rmdir(test_dir);
    g_free(test_dir);
    return ret;
}
