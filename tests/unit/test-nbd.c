/*
 * Tests of the nbd driver against real servers: nbdkit (memory and file
 * plugins; blocksize-policy, error, fua, nozero and multi-conn filters)
 * and qemu-nbd, each started by the test on a Unix socket
 * SPDX-License-Identifier: MIT
 *
 * Every test compares bytes read back (through the driver, and for
 * file-backed servers in the file itself) with what was written, or
 * checks the errno and message of a refusal.  A server program that is
 * not installed skips the test, saying which.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>

#include "block/backend-int.h"
#include "block/block-int.h"
#include "block/drivers.h"
#include "nbd-server.h"
#include "test-util.h"

#define RW_PERM (STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE)
#define RW_SHARED (STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE_UNCHANGED)
#define KIB 1024
#define MIB (1024 * 1024)

#define NBDKIT(...) ((const char *const[]){ "nbdkit", "-f", "-U", "@SOCK@", \
                                            __VA_ARGS__, NULL })

typedef struct Env {
    StrataContext *ctx;
    StrataNode *node;           /* the nbd node */
    StrataBackend *be;
} Env;

static bool env_open(Env *e, const char *json, uint32_t perm,
                     StrataError **errp)
{
    memset(e, 0, sizeof(*e));
    e->ctx = strata_context_new(errp);
    g_assert_nonnull(e->ctx);
    e->node = strata_node_open_json(e->ctx, json, errp);
    if (!e->node) {
        strata_context_free(e->ctx);
        e->ctx = NULL;
        return false;
    }
    e->be = strata_backend_new(e->node, "test", perm, RW_SHARED, errp);
    g_assert_nonnull(e->be);
    return true;
}

static void env_open_ok(Env *e, const NbdTestServer *srv, const char *extra,
                        uint32_t perm)
{
    g_autoptr(StrataError) err = NULL;
    g_autofree char *json = nbd_test_server_node_json(srv, extra);

    if (!env_open(e, json, perm, &err)) {
        g_error("opening %s: %s", json, error_get_message(err));
    }
}

static void env_close(Env *e)
{
    strata_backend_free(e->be);
    strata_node_unref(e->node);
    strata_context_free(e->ctx);
}

/* The message of a refused open of @json. */
static char *open_error(const char *json, int *errnum)
{
    g_autoptr(StrataError) err = NULL;
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *node = strata_node_open_json(ctx, json, &err);
    char *msg;

    g_assert_null(node);
    g_assert_nonnull(err);
    msg = g_strdup(error_get_message(err));
    if (errnum) {
        *errnum = error_get_errno(err);
    }
    strata_context_free(ctx);
    return msg;
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9));
    }
}

/* Write @len bytes at @off through the backend and into @model. */
static void write_model(Env *e, uint8_t *model, int64_t off, size_t len,
                        unsigned seed, uint32_t flags)
{
    g_autofree uint8_t *buf = g_malloc(len);

    fill(buf, len, seed);
    g_assert_cmpint(strata_backend_pwrite(e->be, off, buf, len, flags), ==, 0);
    memcpy(model + off, buf, len);
}

static void check_model(Env *e, const uint8_t *model, int64_t off, size_t len)
{
    g_autofree uint8_t *buf = g_malloc(len);

    g_assert_cmpint(strata_backend_pread(e->be, off, buf, len, 0), ==, 0);
    if (memcmp(buf, model + off, len)) {
        for (size_t i = 0; i < len; i++) {
            if (buf[i] != model[off + i]) {
                g_error("byte %" PRId64 ": read 0x%02x, expected 0x%02x",
                        off + (int64_t)i, buf[i], model[off + i]);
            }
        }
    }
}

/* The server's file holds @model's first @len bytes. */
static void check_file(const NbdTestServer *srv, const uint8_t *model,
                       size_t len)
{
    g_autofree char *data = NULL;
    gsize n;

    g_assert_true(g_file_get_contents(srv->disk, &data, &n, NULL));
    g_assert_cmpuint(n, >=, len);
    g_assert_true(memcmp(data, model, len) == 0);
}

/* Unaligned, vectored (from odd addresses: the driver takes one buffer,
 * the request path gathers), a write across many pieces, zeroes. */
static void rw_sequence(Env *e, uint8_t *model, int64_t size)
{
    uint8_t *odd = g_malloc(3 * 4096 + 1);
    struct iovec iov[3] = {
        { odd + 1, 1000 }, { odd + 2001, 3 }, { odd + 5000, 7000 },
    };
    g_autofree uint8_t *rbuf = g_malloc(8005);
    struct iovec riov[2] = { { rbuf + 1, 5001 }, { rbuf + 5003, 3002 } };

    write_model(e, model, 0, 4096, 1, 0);
    write_model(e, model, 333, 1000, 2, 0);
    write_model(e, model, 65536 - 7, 70000, 3, STRATA_REQ_FUA);
    check_model(e, model, 0, 200 * KIB);

    fill(odd, 3 * 4096 + 1, 4);
    g_assert_cmpint(strata_backend_pwritev(e->be, 300000, iov, 3, 0), ==, 0);
    memcpy(model + 300000, iov[0].iov_base, 1000);
    memcpy(model + 301000, iov[1].iov_base, 3);
    memcpy(model + 301003, iov[2].iov_base, 7000);
    g_assert_cmpint(strata_backend_preadv(e->be, 300000, riov, 2, 0), ==, 0);
    g_assert_true(memcmp(riov[0].iov_base, model + 300000, 5001) == 0);
    g_assert_true(memcmp(riov[1].iov_base, model + 305001, 3002) == 0);
    g_free(odd);

    g_assert_cmpint(strata_backend_pwrite_zeroes(e->be, 1000, 5000, 0), ==, 0);
    memset(model + 1000, 0, 5000);
    g_assert_cmpint(strata_backend_pwrite_zeroes(e->be, 128 * KIB, 64 * KIB,
                                                 STRATA_REQ_MAY_UNMAP), ==, 0);
    memset(model + 128 * KIB, 0, 64 * KIB);
    g_assert_cmpint(strata_backend_flush(e->be), ==, 0);
    check_model(e, model, 0, 512 * KIB);
    check_model(e, model, size - 4096, 4096);
}

static void test_nbdkit_memory_rw(void)
{
    g_autoptr(NbdTestServer) srv = nbd_test_server_start(
        NBDKIT("memory", "4M"), 0);
    g_autofree uint8_t *model = g_malloc0(4 * MIB);
    Env e;

    if (!srv) {
        return;
    }
    env_open_ok(&e, srv, NULL, RW_PERM);
    g_assert_cmpint(strata_backend_get_length(e.be), ==, 4 * MIB);
    rw_sequence(&e, model, 4 * MIB);
    /* Past the end: the backend refuses, nothing reaches the server. */
    g_assert_cmpint(strata_backend_pwrite(e.be, 4 * MIB - 10, model, 20, 0),
                    ==, -EIO);
    env_close(&e);

    /* A second client sees the data. */
    env_open_ok(&e, srv, NULL, STRATA_PERM_CONSISTENT_READ);
    check_model(&e, model, 0, 4 * MIB);
    env_close(&e);
}

/* base:allocation: a never-written memory export is a hole that reads
 * zeroes; written data is DATA; a discarded range is a hole again. */
static void test_nbdkit_block_status(void)
{
    g_autoptr(NbdTestServer) srv = nbd_test_server_start(
        NBDKIT("memory", "1M"), 0);
    g_autofree uint8_t *model = g_malloc0(MIB);
    int64_t pnum;
    Env e;

    if (!srv) {
        return;
    }
    env_open_ok(&e, srv, ", \"discard\": \"unmap\"", RW_PERM);
    g_assert_cmpint(strata_backend_block_status(e.be, 0, MIB, &pnum), ==,
                    STRATA_BLOCK_ZERO);
    g_assert_cmpint(pnum, ==, MIB);
    write_model(&e, model, 64 * KIB, 64 * KIB, 5, 0);
    g_assert_cmpint(strata_backend_block_status(e.be, 0, MIB, &pnum), ==,
                    STRATA_BLOCK_ZERO);
    g_assert_cmpint(pnum, ==, 64 * KIB);
    g_assert_cmpint(strata_backend_block_status(e.be, 64 * KIB, MIB - 64 * KIB,
                                                &pnum), ==, STRATA_BLOCK_DATA);
    g_assert_cmpint(pnum, ==, 64 * KIB);
    /* From an offset inside the data run. */
    g_assert_cmpint(strata_backend_block_status(e.be, 100 * KIB + 5, 1000,
                                                &pnum), ==, STRATA_BLOCK_DATA);
    g_assert_cmpint(pnum, ==, 1000);
    g_assert_cmpint(strata_backend_pdiscard(e.be, 64 * KIB, 64 * KIB), ==, 0);
    g_assert_cmpint(strata_backend_block_status(e.be, 64 * KIB, 64 * KIB,
                                                &pnum), ==, STRATA_BLOCK_ZERO);
    memset(model + 64 * KIB, 0, 64 * KIB);
    check_model(&e, model, 0, MIB);
    env_close(&e);
}

/* qemu-nbd serving a file: the bytes land in the file. */
static void test_qemu_nbd_file(void)
{
    const char *const argv[] = { "qemu-nbd", "-f", "raw", "-t", "-e", "4",
                                 "-x", "disk0", "-k", "@SOCK@", "@DISK@",
                                 NULL };
    g_autoptr(NbdTestServer) srv = nbd_test_server_start(argv, 2 * MIB);
    g_autofree uint8_t *model = g_malloc0(2 * MIB);
    g_autofree char *wrong = NULL;
    g_autofree char *msg = NULL;
    Env e;

    if (!srv) {
        return;
    }
    env_open_ok(&e, srv, ", \"export\": \"disk0\"", RW_PERM);
    rw_sequence(&e, model, 2 * MIB);
    env_close(&e);
    check_file(srv, model, 2 * MIB);

    /* An export the server does not have. */
    wrong = nbd_test_server_node_json(srv, ", \"export\": \"nope\"");
    msg = open_error(wrong, NULL);
    g_assert_true(g_str_has_prefix(msg, "Failed to connect to '"));
    g_assert_nonnull(strstr(msg, "nope"));
}

/*
 * The server's block size constraints become limits: blocksize-policy
 * advertises minimum 4 KiB and maximum 64 KiB and fails any request that
 * breaks them (error policy), so unaligned and large requests succeeding
 * shows that the request path padded and split them.
 */
static void test_blocksize_limits(void)
{
    g_autoptr(NbdTestServer) srv = nbd_test_server_start(
        NBDKIT("--filter=blocksize-policy", "memory", "2M",
               "blocksize-minimum=4096", "blocksize-preferred=16384",
               "blocksize-maximum=65536", "blocksize-error-policy=error"), 0);
    g_autofree uint8_t *model = g_malloc0(2 * MIB);
    StrataLimits bl;
    StrataStats st;
    Env e;

    if (!srv) {
        return;
    }
    env_open_ok(&e, srv, NULL, RW_PERM);
    strata_node_get_limits(e.node, &bl);
    g_assert_cmpuint(bl.request_alignment, ==, 4096);
    g_assert_cmpint(bl.max_transfer, ==, 65536);
    g_assert_cmpint(bl.opt_transfer, ==, 16384);
    g_assert_cmpuint(bl.pwrite_zeroes_alignment, ==, 4096);
    rw_sequence(&e, model, 2 * MIB);
    strata_node_get_stats(e.node, &st);
    g_assert_cmpuint(st.rmw_writes, >, 0);
    g_assert_cmpuint(st.split_requests, >, 0);
    env_close(&e);
}

/* The error filter fails reads while its trigger file exists: EIO
 * reaches the caller, and reads work again once it is gone. */
static void test_server_error(void)
{
    g_autoptr(NbdTestServer) srv = nbd_test_server_start(
        NBDKIT("--filter=error", "memory", "1M", "error=EIO",
               "error-pread-rate=100%", "error-file=@DIR@/fail"), 0);
    g_autofree uint8_t *model = g_malloc0(MIB);
    g_autofree char *trigger = NULL;
    uint8_t buf[4096];
    Env e;

    if (!srv) {
        return;
    }
    trigger = nbd_test_server_path(srv, "fail");
    env_open_ok(&e, srv, NULL, RW_PERM);
    write_model(&e, model, 4096, 4096, 6, 0);
    g_assert_true(g_file_set_contents(trigger, "", 0, NULL));
    g_assert_cmpint(strata_backend_pread(e.be, 4096, buf, 4096, 0), ==, -EIO);
    /* Writes still work; an unaligned one needs no read here (alignment
     * 1), so it succeeds too. */
    write_model(&e, model, 100, 50, 7, 0);
    unlink(trigger);
    check_model(&e, model, 0, 16 * KIB);
    env_close(&e);
}

/* nbdkit -r: a read-write open fails, naming the export; read-only and
 * auto-read-only opens work and refuse writes. */
static void test_read_only_server(void)
{
    g_autoptr(NbdTestServer) srv = nbd_test_server_start(
        NBDKIT("-r", "memory", "1M"), 0);
    g_autofree char *json = NULL;
    g_autofree char *msg = NULL;
    uint8_t buf[512] = { 0 };
    int errnum;
    Env e;

    if (!srv) {
        return;
    }
    json = nbd_test_server_node_json(srv, NULL);
    msg = open_error(json, &errnum);
    g_assert_nonnull(strstr(msg, "NBD export is read-only"));
    g_assert_cmpint(errnum, ==, EACCES);

    env_open_ok(&e, srv, ", \"read-only\": true",
                STRATA_PERM_CONSISTENT_READ);
    g_assert_cmpint(strata_backend_pread(e.be, 0, buf, 512, 0), ==, 0);
    env_close(&e);

    env_open_ok(&e, srv, ", \"auto-read-only\": true",
                STRATA_PERM_CONSISTENT_READ);
    g_assert_true(e.node->read_only);
    env_close(&e);
}

/* A server without FUA (nbdkit's fua filter, whose default is not to
 * advertise it): the request path follows a FUA write with a flush; with
 * FUA (plain memory) the write carries the flag and no flush is sent.
 * nbdkit's log filter, outermost, records what the client sent. */
static void test_fua(void)
{
    const char *const *servers[] = {
        NBDKIT("--filter=log", "--filter=fua", "memory", "1M",
               "logfile=@DIR@/log"),
        NBDKIT("--filter=log", "memory", "1M", "logfile=@DIR@/log"),
    };

    for (int i = 0; i < 2; i++) {
        g_autoptr(NbdTestServer) srv = nbd_test_server_start(servers[i], 0);
        g_autofree uint8_t *model = g_malloc0(MIB);
        g_autofree char *log_path = NULL;
        g_autofree char *log = NULL;
        Env e;

        if (!srv) {
            return;
        }
        env_open_ok(&e, srv, NULL, RW_PERM);
        g_assert_cmpint(e.node->supports_fua, ==, i == 1);
        write_model(&e, model, 0, 4096, 8, STRATA_REQ_FUA);
        check_model(&e, model, 0, 4096);
        env_close(&e);
        log_path = nbd_test_server_path(srv, "log");
        g_assert_true(g_file_get_contents(log_path, &log, NULL, NULL));
        if (i == 0) {
            g_assert_nonnull(strstr(log, " Flush "));
            g_assert_null(strstr(log, "fua=1"));
        } else {
            g_assert_null(strstr(log, " Flush "));
            g_assert_nonnull(strstr(log, "fua=1"));
        }
    }
}

/* Write-zeroes that must not fall back: ENOTSUP where the server has no
 * fast zero (nbdkit's nozero filter: zeroes as writes, fast zero not
 * advertised),
 * done where it has (memory); plain write-zeroes work on both. */
static void test_fast_zero(void)
{
    const char *const *servers[] = {
        NBDKIT("--filter=nozero", "memory", "1M", "zeromode=emulate",
               "fastzeromode=none"),
        NBDKIT("memory", "1M"),
    };

    for (int i = 0; i < 2; i++) {
        g_autoptr(NbdTestServer) srv = nbd_test_server_start(servers[i], 0);
        g_autofree uint8_t *model = g_malloc0(MIB);
        Env e;

        if (!srv) {
            return;
        }
        env_open_ok(&e, srv, NULL, RW_PERM);
        write_model(&e, model, 0, 64 * KIB, 9, 0);
        g_assert_cmpint(strata_backend_pwrite_zeroes(e.be, 0, 4096,
                                                     STRATA_REQ_NO_FALLBACK),
                        ==, i == 0 ? -ENOTSUP : 0);
        if (i == 1) {
            memset(model, 0, 4096);
        }
        g_assert_cmpint(strata_backend_pwrite_zeroes(e.be, 8192, 4096, 0),
                        ==, 0);
        memset(model + 8192, 0, 4096);
        check_model(&e, model, 0, 64 * KIB);
        env_close(&e);
    }
}

/* Many requests in flight: @n aio writes of 4 KiB at once. */
typedef struct Flight {
    int pending;
    int failed;
} Flight;

static void flight_done(void *opaque, int64_t ret)
{
    Flight *f = opaque;

    f->pending--;
    if (ret < 0) {
        f->failed++;
    }
}

static void write_in_flight(Env *e, uint8_t *model, int n, unsigned seed)
{
    g_autofree uint8_t *bufs = g_malloc(n * 4096);
    g_autofree struct iovec *iov = g_new(struct iovec, n);
    Flight f = { 0 };

    fill(bufs, n * 4096, seed);
    for (int i = 0; i < n; i++) {
        iov[i] = (struct iovec){ bufs + i * 4096, 4096 };
        g_assert_cmpint(strata_backend_aio_pwritev(e->be, i * 8192, &iov[i], 1,
                                                   0, flight_done, &f), ==, 0);
        f.pending++;
        memcpy(model + i * 8192, bufs + i * 4096, 4096);
    }
    while (f.pending) {
        strata_context_run_once(e->ctx, true);
    }
    g_assert_cmpint(f.failed, ==, 0);
}

/* multi-conn=4 opens four connections where the server allows it (nbdkit
 * memory does), one where it does not; data written across them all
 * reads back. */
static void test_multi_conn(void)
{
    const char *modes[] = { "multi-conn-mode=auto", "multi-conn-mode=disable" };

    for (int i = 0; i < 2; i++) {
        g_autoptr(NbdTestServer) srv = nbd_test_server_start(
            NBDKIT("--filter=multi-conn", "memory", "1M", modes[i]), 0);
        g_autofree uint8_t *model = g_malloc0(MIB);
        g_autoptr(GString) info = g_string_new(NULL);
        Env e;

        if (!srv) {
            return;
        }
        env_open_ok(&e, srv, ", \"multi-conn\": 4", RW_PERM);
        e.node->drv->dump_info(e.node, info);
        g_assert_nonnull(strstr(info->str, i == 0 ? "4 of 4 connections up"
                                                  : "1 of 1 connection up"));
        write_in_flight(&e, model, 64, 10 + i);
        g_assert_cmpint(strata_backend_flush(e.be), ==, 0);
        check_model(&e, model, 0, MIB);
        env_close(&e);
    }
}

/* ---- reconnect ------------------------------------------------------------ */

/*
 * A workload of 4 KiB writes, eight in flight, each completion issuing
 * the next, over nbdkit's file plugin (which keeps the data across a
 * restart).  Halfway through, the server is killed; 300 ms later it is
 * started again.  With reconnect-delay=5 every write succeeds, and the
 * file holds exactly the model.
 */
#define WL_TOTAL 400
#define WL_DEPTH 8
#define WL_BLOCKS 256

typedef struct Workload {
    Env *e;
    uint8_t *model;
    uint8_t bufs[WL_DEPTH][4096];
    struct iovec iov[WL_DEPTH];
    int slot_req[WL_DEPTH];
    int issued, completed, failed, first_error;
} Workload;

typedef struct WlSlot {
    Workload *w;
    int slot;
} WlSlot;

static void wl_issue(Workload *w, WlSlot *s);

static void wl_done(void *opaque, int64_t ret)
{
    WlSlot *s = opaque;
    Workload *w = s->w;
    int i = w->slot_req[s->slot];

    w->completed++;
    if (ret < 0) {
        w->failed++;
        w->first_error = w->first_error ? w->first_error : (int)ret;
    } else {
        memcpy(w->model + (i % WL_BLOCKS) * 4096, w->bufs[s->slot], 4096);
    }
    if (w->issued < WL_TOTAL) {
        wl_issue(w, s);
    }
}

static void wl_issue(Workload *w, WlSlot *s)
{
    int i = w->issued++;

    w->slot_req[s->slot] = i;
    memset(w->bufs[s->slot], (i % 251) + 1, 4096);
    w->iov[s->slot] = (struct iovec){ w->bufs[s->slot], 4096 };
    g_assert_cmpint(strata_backend_aio_pwritev(w->e->be,
                                               (int64_t)(i % WL_BLOCKS) * 4096,
                                               &w->iov[s->slot], 1, 0, wl_done,
                                               s), ==, 0);
}

static void test_reconnect_workload(void)
{
    g_autoptr(NbdTestServer) srv = nbd_test_server_start(
        NBDKIT("file", "@DISK@"), MIB);
    g_autofree uint8_t *model = g_malloc0(MIB);
    Workload w = { .model = model };
    WlSlot slots[WL_DEPTH];
    g_autoptr(GString) info = g_string_new(NULL);
    int64_t restart_at = 0;
    Env e;

    if (!srv) {
        return;
    }
    env_open_ok(&e, srv, ", \"reconnect-delay\": 5", RW_PERM);
    w.e = &e;
    for (int i = 0; i < WL_DEPTH; i++) {
        slots[i] = (WlSlot){ &w, i };
        wl_issue(&w, &slots[i]);
    }
    while (w.completed < WL_TOTAL) {
        strata_context_run_once(e.ctx, restart_at == 0);
        if (restart_at == 0 && w.completed >= WL_TOTAL / 2) {
            nbd_test_server_kill(srv);
            restart_at = g_get_monotonic_time() + 300 * 1000;
        } else if (restart_at > 0 && !srv->pid &&
                   g_get_monotonic_time() >= restart_at) {
            g_assert_true(nbd_test_server_restart(srv));
        } else if (restart_at > 0 && !srv->pid) {
            g_usleep(1000);
        }
    }
    g_assert_cmpint(w.failed, ==, 0);
    g_assert_true(srv->pid != 0);
    e.node->drv->dump_info(e.node, info);
    g_assert_nonnull(strstr(info->str, "1 reconnects"));
    check_model(&e, model, 0, MIB);
    g_assert_cmpint(strata_backend_flush(e.be), ==, 0);
    env_close(&e);
    check_file(srv, model, MIB);
}

/* The server stays away: with reconnect-delay=1 a request waits about a
 * second and fails with EIO; with 0 it fails at once.  Either way the
 * node closes cleanly. */
static void test_reconnect_timeout(void)
{
    const int delays[] = { 1, 0 };

    for (int i = 0; i < 2; i++) {
        g_autoptr(NbdTestServer) srv = nbd_test_server_start(
            NBDKIT("memory", "1M"), 0);
        g_autofree char *extra = g_strdup_printf(", \"reconnect-delay\": %d",
                                                 delays[i]);
        uint8_t buf[4096] = { 0 };
        int64_t start;
        Env e;

        if (!srv) {
            return;
        }
        env_open_ok(&e, srv, extra, RW_PERM);
        g_assert_cmpint(strata_backend_pwrite(e.be, 0, buf, 4096, 0), ==, 0);
        nbd_test_server_kill(srv);
        start = g_get_monotonic_time();
        g_assert_cmpint(strata_backend_pread(e.be, 0, buf, 4096, 0), ==, -EIO);
        if (delays[i]) {
            g_assert_cmpint(g_get_monotonic_time() - start, >=,
                            G_USEC_PER_SEC * 9 / 10);
        }
        /* Past the delay new requests fail at once. */
        start = g_get_monotonic_time();
        g_assert_cmpint(strata_backend_pread(e.be, 0, buf, 4096, 0), ==, -EIO);
        g_assert_cmpint(g_get_monotonic_time() - start, <,
                        G_USEC_PER_SEC / 2);
        env_close(&e);
    }
}

/* ---- open ----------------------------------------------------------------- */

static void test_open_errors(void)
{
    g_autofree char *dir = g_dir_make_tmp("strata-nbd-XXXXXX", NULL);
    g_autofree char *sock = g_build_filename(dir, "none.sock", NULL);
    g_autofree char *json = NULL;
    char *msg;
    int errnum;

    /* Nobody listens. */
    json = g_strdup_printf("{\"driver\": \"nbd\", \"server\": {\"type\": "
                           "\"unix\", \"path\": \"%s\"}}", sock);
    msg = open_error(json, &errnum);
    {
        /* QEMU's words. */
        g_autofree char *want = g_strdup_printf("Failed to connect to '%s': "
                                                "No such file or directory",
                                                sock);
        g_assert_cmpstr(msg, ==, want);
    }
    g_assert_cmpint(errnum, ==, ENOENT);
    g_free(msg);

    msg = open_error("{\"driver\": \"nbd\", \"server\": {\"type\": \"unix\", "
                     "\"path\": \"/x\"}, \"tls-creds\": \"tls0\"}", &errnum);
    g_assert_cmpstr(msg, ==, "tls-creds: No object with id 'tls0'");
    g_assert_cmpint(errnum, ==, ENOENT);
    g_free(msg);

    msg = open_error("{\"driver\": \"nbd\", \"server\": {\"type\": \"unix\", "
                     "\"path\": \"/x\", \"host\": \"h\"}}", NULL);
    g_assert_cmpstr(msg, ==, "server.host: not allowed with server.type=unix");
    g_free(msg);
    msg = open_error("{\"driver\": \"nbd\", \"server\": {\"type\": \"inet\", "
                     "\"path\": \"/x\"}}", NULL);
    g_assert_cmpstr(msg, ==, "server.path: not allowed with server.type=inet");
    g_free(msg);
    msg = open_error("{\"driver\": \"nbd\", \"server\": {\"type\": \"inet\"}}",
                     NULL);
    g_assert_cmpstr(msg, ==, "server.host: missing");
    g_free(msg);
    msg = open_error("{\"driver\": \"nbd\", \"server\": {\"type\": \"tcp\", "
                     "\"host\": \"h\"}}", NULL);
    g_assert_nonnull(strstr(msg, "server.type"));
    g_free(msg);
    msg = open_error("{\"driver\": \"nbd\"}", NULL);
    g_assert_nonnull(strstr(msg, "server"));
    g_free(msg);
    rmdir(dir);
}

/* open-timeout: a server that comes up while the open retries. */
static void test_open_timeout(void)
{
    g_autoptr(NbdTestServer) srv = nbd_test_server_start(
        NBDKIT("memory", "1M"), 0);
    Env e;

    if (!srv) {
        return;
    }
    nbd_test_server_kill(srv);
    nbd_test_server_restart_later(srv, 300);
    env_open_ok(&e, srv, ", \"open-timeout\": 10", RW_PERM);
    g_assert_cmpint(strata_backend_get_length(e.be), ==, MIB);
    env_close(&e);
}

/* TCP (server.type=inet): nbdkit on an ephemeral port of 127.0.0.1,
 * handed its socket by socket activation. */
static void test_inet(void)
{
    g_autoptr(NbdTestServer) srv = nbd_test_server_start_tcp(
        (const char *const[]){ "nbdkit", "-f", "memory", "2M", NULL }, 0);
    g_autofree uint8_t *model = g_malloc0(2 * MIB);
    Env e;

    if (!srv) {
        return;
    }
    env_open_ok(&e, srv, ", \"multi-conn\": 2", RW_PERM);
    rw_sequence(&e, model, 2 * MIB);
    write_in_flight(&e, model, 32, 12);
    check_model(&e, model, 0, 2 * MIB);
    env_close(&e);
}

/* A port nobody listens on: the message names host and port. */
static void test_inet_refused(void)
{
    int errnum;
    g_autofree char *msg = open_error(
        "{\"driver\": \"nbd\", \"server\": {\"type\": \"inet\", "
        "\"host\": \"127.0.0.1\", \"port\": \"1\"}}", &errnum);

    g_assert_cmpstr(msg, ==, "Failed to connect to '127.0.0.1:1': "
                    "Connection refused");
    g_assert_cmpint(errnum, ==, ECONNREFUSED);
}

/* ---- legacy filenames ------------------------------------------------------- */

static OptNode *tree_for(const char *filename, StrataError **errp)
{
    g_autoptr(OptNode) opts = opts_new_object();

    if (!block_options_add_filename(opts, filename, "raw", errp)) {
        return NULL;
    }
    return g_steal_pointer(&opts);
}

/* "file.server.type=unix,..." as the tree holds it, in a fixed order. */
static char *file_summary(OptNode *t)
{
    OptNode *f = opts_peek(t, "file");
    OptNode *srv = opts_peek(f, "server");
    const char *keys[] = { "type", "path", "host", "port" };
    GString *s = g_string_new(opts_scalar_str(opts_peek(f, "driver")));

    for (int i = 0; i < 4; i++) {
        OptNode *v = opts_peek(srv, keys[i]);
        if (v) {
            g_string_append_printf(s, " %s=%s", keys[i], opts_scalar_str(v));
        }
    }
    if (opts_peek(f, "export")) {
        g_string_append_printf(s, " export=%s",
                               opts_scalar_str(opts_peek(f, "export")));
    }
    return g_string_free(s, FALSE);
}

static void test_filenames(void)
{
    static const struct {
        const char *filename, *tree;
    } ok[] = {
        { "nbd:unix:/run/s.sock", "nbd type=unix path=/run/s.sock" },
        { "nbd:unix:/run/s.sock:exportname=disk0",
          "nbd type=unix path=/run/s.sock export=disk0" },
        { "nbd:localhost:10810", "nbd type=inet host=localhost port=10810" },
        { "nbd:[::1]:10809:exportname=a/b",
          "nbd type=inet host=::1 port=10809 export=a/b" },
        { "nbd://example.org/disk0",
          "nbd type=inet host=example.org port=10809 export=disk0" },
        { "nbd+tcp://127.0.0.1:7777/", "nbd type=inet host=127.0.0.1 port=7777" },
        { "nbd://[::1]:7777/x", "nbd type=inet host=::1 port=7777 export=x" },
        { "nbd+unix:///disk0?socket=/run/s.sock",
          "nbd type=unix path=/run/s.sock export=disk0" },
        { "nbd+unix://?socket=/run/s.sock", "nbd type=unix path=/run/s.sock" },
        { "nbd+unix:///a%20b?socket=/run/s%2Csock",
          "nbd type=unix path=/run/s,sock export=a b" },
    };
    static const struct {
        const char *filename, *msg;
    } bad[] = {
        { "nbd+unix:///x", "No valid URL specified" },
        { "nbd+unix://host/x?socket=/s", "No valid URL specified" },
        { "nbd+unix:///x?socket=/s&socket=/t", "No valid URL specified" },
        { "nbd+unix:///x?sock=/s", "No valid URL specified" },
        { "nbd:///x", "No valid URL specified" },
        { "nbd://host/x?socket=/s", "No valid URL specified" },
        { "nbd:localhost", "error parsing address 'localhost'" },
        { "nbd:unix:/s:exportname=", "NBD server address missing" },
        { "nbd:", "NBD server address missing" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(ok); i++) {
        g_autoptr(StrataError) err = NULL;
        g_autoptr(OptNode) t = tree_for(ok[i].filename, &err);
        g_autofree char *sum = NULL;

        if (!t) {
            g_error("%s: %s", ok[i].filename, error_get_message(err));
        }
        sum = file_summary(t);
        g_assert_cmpstr(sum, ==, ok[i].tree);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(StrataError) err = NULL;
        g_autoptr(OptNode) t = tree_for(bad[i].filename, &err);

        g_assert_null(t);
        g_assert_cmpstr(error_get_message(err), ==, bad[i].msg);
    }

    /* Explicit options win over the filename. */
    g_autoptr(OptNode) o = opts_parse_dotted("file.export=mine", NULL);
    g_assert_true(block_options_add_filename(o, "nbd:unix:/s:exportname=x",
                                             "raw", NULL));
    g_autofree char *sum = file_summary(o);
    g_assert_cmpstr(sum, ==, "nbd type=unix path=/s export=mine");
}

/* A filename opens a working node (raw over nbd), as tools use it. */
static void test_filename_open(void)
{
    g_autoptr(NbdTestServer) srv = nbd_test_server_start(
        NBDKIT("memory", "1M"), 0);
    g_autoptr(StrataError) err = NULL;
    g_autofree char *name = NULL;
    StrataContext *ctx;
    StrataNode *node;

    if (!srv) {
        return;
    }
    name = g_strdup_printf("nbd+unix:///?socket=%s", srv->sock);
    ctx = strata_context_new(NULL);
    node = strata_node_open_filename(ctx, name, NULL, &err);
    g_assert_no_error(NULL);
    if (!node) {
        g_error("%s: %s", name, error_get_message(err));
    }
    g_assert_cmpint(strata_node_get_length(node), ==, MIB);
    g_assert_cmpstr(strata_node_get_driver(node), ==, "raw");
    strata_node_unref(node);
    strata_context_free(ctx);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/nbd/nbdkit-memory/rw", test_nbdkit_memory_rw);
    g_test_add_func("/nbd/nbdkit-memory/block-status", test_nbdkit_block_status);
    g_test_add_func("/nbd/qemu-nbd/file", test_qemu_nbd_file);
    g_test_add_func("/nbd/limits/blocksize-policy", test_blocksize_limits);
    g_test_add_func("/nbd/error/server-eio", test_server_error);
    g_test_add_func("/nbd/read-only-server", test_read_only_server);
    g_test_add_func("/nbd/fua", test_fua);
    g_test_add_func("/nbd/fast-zero", test_fast_zero);
    g_test_add_func("/nbd/multi-conn", test_multi_conn);
    g_test_add_func("/nbd/reconnect/workload", test_reconnect_workload);
    g_test_add_func("/nbd/reconnect/timeout", test_reconnect_timeout);
    g_test_add_func("/nbd/open/errors", test_open_errors);
    g_test_add_func("/nbd/open/timeout", test_open_timeout);
    g_test_add_func("/nbd/open/inet-refused", test_inet_refused);
    g_test_add_func("/nbd/inet/nbdkit-memory", test_inet);
    g_test_add_func("/nbd/filename/parse", test_filenames);
    g_test_add_func("/nbd/filename/open", test_filename_open);
    return g_test_run();
}
