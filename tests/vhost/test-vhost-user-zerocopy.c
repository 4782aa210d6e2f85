/*
 * virtio-blk-vhost-user and guest memory: requests whose buffers lie in a
 * registered memfd region go to the back end without a copy (the region
 * joins the memory table once), any other buffer is bounced; an
 * unregistered region is never used again; the data is right either way.
 * Against strata-storage-daemon ($STRATA_DAEMON) and qemu-storage-daemon.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <glib.h>

#include "block/block-int.h"
#include "../unit/nbd-server.h"
#include "../unit/test-util.h"

#define DISK_SIZE   (8 << 20)
#define RAM_SIZE    (4 << 20)
#define RW_PERM     (STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE)
#define RW_SHARED   (STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE_UNCHANGED)

typedef struct Env {
    NbdTestServer *srv;
    StrataContext *ctx;
    StrataNode *node;           /* the driver's node */
    StrataBackend *be;
} Env;

typedef struct Counts {
    uint64_t reqs, zero_copy, bounced;
    int regions;
} Counts;

static const char *backend_kind(void)
{
    return g_test_get_path() && strstr(g_test_get_path(), "/qsd/")
           ? "qsd" : "strata";
}

static bool env_open(Env *e)
{
    g_autoptr(StrataError) err = NULL;
    const char *daemon = getenv("STRATA_DAEMON");
    bool qsd = !strcmp(backend_kind(), "qsd");

    memset(e, 0, sizeof(*e));
    if (!qsd && !daemon) {
        test_skipf("STRATA_DAEMON is not set (meson sets it)");
        return false;
    }
    const char *const argv[] = {
        qsd ? "qemu-storage-daemon" : daemon, "--blockdev",
        "driver=file,node-name=disk,filename=@DISK@",
        "--export", "type=vhost-user-blk,id=vub0,node-name=disk,"
        "addr.type=unix,addr.path=@SOCK@,writable=on", NULL };
    e->srv = nbd_test_server_start(argv, DISK_SIZE);
    if (!e->srv) {
        return false;           /* skipped, saying why */
    }
    e->ctx = strata_context_new(&err);
    g_assert_nonnull(e->ctx);
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"raw\", \"file\": {\"driver\": "
        "\"virtio-blk-vhost-user\", \"node-name\": \"vu\", \"path\": \"%s\"}}",
        e->srv->sock);
    StrataNode *root = strata_node_open_json(e->ctx, json, &err);
    if (!root) {
        g_error("%s: %s", json, strata_error_get_message(err));
    }
    e->node = root->file->node;
    e->be = strata_backend_new(root, "test", RW_PERM, RW_SHARED, &err);
    g_assert_nonnull(e->be);
    strata_node_unref(root);
    return true;
}

static void env_close(Env *e)
{
    if (e->ctx) {
        strata_backend_free(e->be);
        strata_context_free(e->ctx);
    }
    nbd_test_server_free(e->srv);
}

static Counts counts(Env *e)
{
    g_autoptr(GString) info = g_string_new(NULL);
    Counts c = { 0 };
    const char *p;

    e->node->drv->dump_info(e->node, info);
    p = strstr(info->str, "virtio-blk-vhost-user: ");
    p = p ? strstr(p + 1, "virtio-blk-vhost-user: ") : NULL;
    g_assert_nonnull(p);
    g_assert_cmpint(sscanf(p, "virtio-blk-vhost-user: %" SCNu64 " requests, %"
                           SCNu64 " zero-copy, %" SCNu64 " bounced (%*u bytes),"
                           " %d shared", &c.reqs, &c.zero_copy, &c.bounced,
                           &c.regions), ==, 4);
    return c;
}

/* The disk file as the back end left it. */
static void check_disk(Env *e, int64_t off, const void *want, size_t len)
{
    g_autofree uint8_t *got = g_malloc(len);
    int fd = open(e->srv->disk, O_RDONLY | O_CLOEXEC);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(pread(fd, got, len, off), ==, (ssize_t)len);
    close(fd);
    g_assert_true(memcmp(got, want, len) == 0);
}

static uint8_t *memfd_ram(int *fd)
{
    *fd = memfd_create("test-guest-ram", MFD_CLOEXEC);
    g_assert_cmpint(*fd, >=, 0);
    g_assert_cmpint(ftruncate(*fd, RAM_SIZE), ==, 0);
    uint8_t *ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                        *fd, 0);
    g_assert_true(ram != MAP_FAILED);
    return ram;
}

/* Requests in a registered memfd region: zero-copy, the region shared
 * once; reads and writes at unaligned offsets land right. */
static void test_memfd_zero_copy(void)
{
    Env e;
    g_autoptr(StrataError) err = NULL;
    int fd;

    if (!env_open(&e)) {
        return;
    }
    uint8_t *ram = memfd_ram(&fd);
    g_assert_true(strata_context_register_memory(e.ctx, ram, RAM_SIZE, &err));
    uint8_t *wbuf = ram + 12345, *rbuf = ram + RAM_SIZE / 2 + 7;
    for (int i = 0; i < 300000; i++) {
        wbuf[i] = (uint8_t)(i * 7 + 1);
    }
    Counts c0 = counts(&e);
    g_assert_cmpint(c0.regions, ==, 0);
    /* 4096-aligned: the whole request reaches the driver as it is. */
    g_assert_cmpint(strata_backend_pwrite(e.be, 65536, wbuf, 262144, 0), ==, 0);
    g_assert_cmpint(strata_backend_pread(e.be, 65536, rbuf, 262144, 0), ==, 0);
    g_assert_true(memcmp(wbuf, rbuf, 262144) == 0);
    Counts c1 = counts(&e);
    g_assert_cmpint(c1.regions, ==, 1);
    g_assert_cmpuint(c1.zero_copy - c0.zero_copy, ==, 2);
    g_assert_cmpuint(c1.bounced, ==, c0.bounced);
    check_disk(&e, 65536, wbuf, 262144);
    /* Vectored, two elements in the region. */
    struct iovec iov[2] = { { wbuf + 1, 1000 }, { wbuf + 50000, 3096 } };
    g_assert_cmpint(strata_backend_pwritev(e.be, 1 << 20, iov, 2, 0), ==, 0);
    Counts c2 = counts(&e);
    g_assert_cmpuint(c2.zero_copy - c1.zero_copy, ==, 1);
    g_assert_cmpint(c2.regions, ==, 1);
    check_disk(&e, 1 << 20, wbuf + 1, 1000);
    check_disk(&e, (1 << 20) + 1000, wbuf + 50000, 3096);
    env_close(&e);
    munmap(ram, RAM_SIZE);
    close(fd);
}

/* Heap buffers, a registered private (non-memfd) region and a region
 * unregistered after use are bounced, with the right data. */
static void test_bounced(void)
{
    Env e;
    g_autoptr(StrataError) err = NULL;
    int fd;

    if (!env_open(&e)) {
        return;
    }
    g_autofree uint8_t *heap = g_malloc(8192);
    memset(heap, 0x5a, 8192);
    g_assert_cmpint(strata_backend_pwrite(e.be, 0, heap, 8192, 0), ==, 0);
    Counts c1 = counts(&e);
    g_assert_cmpuint(c1.bounced, >=, 1);
    g_assert_cmpuint(c1.zero_copy, ==, 0);
    check_disk(&e, 0, heap, 8192);

    uint8_t *anon = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_assert_true(anon != MAP_FAILED);
    g_assert_true(strata_context_register_memory(e.ctx, anon, RAM_SIZE, &err));
    memset(anon, 0x6b, 4096);
    g_assert_cmpint(strata_backend_pwrite(e.be, 8192, anon, 4096, 0), ==, 0);
    g_assert_cmpint(strata_backend_pwrite(e.be, 8192, anon, 4096, 0), ==, 0);
    Counts c2 = counts(&e);
    g_assert_cmpuint(c2.bounced - c1.bounced, ==, 2);
    g_assert_cmpint(c2.regions, ==, 0);
    check_disk(&e, 8192, anon, 4096);

    uint8_t *ram = memfd_ram(&fd);
    g_assert_true(strata_context_register_memory(e.ctx, ram, RAM_SIZE, &err));
    memset(ram, 0x7c, 4096);
    g_assert_cmpint(strata_backend_pwrite(e.be, 16384, ram, 4096, 0), ==, 0);
    Counts c3 = counts(&e);
    g_assert_cmpuint(c3.zero_copy, ==, 1);
    strata_context_unregister_memory(e.ctx, ram);
    memset(ram, 0x7d, 4096);
    g_assert_cmpint(strata_backend_pwrite(e.be, 16384, ram, 4096, 0), ==, 0);
    Counts c4 = counts(&e);
    g_assert_cmpuint(c4.zero_copy, ==, 1);
    g_assert_cmpuint(c4.bounced - c3.bounced, ==, 1);
    check_disk(&e, 16384, ram, 4096);
    env_close(&e);
    munmap(anon, RAM_SIZE);
    munmap(ram, RAM_SIZE);
    close(fd);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    const char *kinds[] = { "strata", "qsd" };
    for (unsigned i = 0; i < G_N_ELEMENTS(kinds); i++) {
        g_autofree char *a = g_strdup_printf("/vhost-user-zerocopy/%s/memfd",
                                             kinds[i]);
        g_autofree char *b = g_strdup_printf("/vhost-user-zerocopy/%s/bounced",
                                             kinds[i]);
        g_test_add_func(a, test_memfd_zero_copy);
        g_test_add_func(b, test_bounced);
    }
    return g_test_run();
}
