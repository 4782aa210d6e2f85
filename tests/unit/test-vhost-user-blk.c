/*
 * The vhost-user-blk export against the in-process front end
 * (block/virtio/vu-frontend.h): negotiation, config space, every request
 * type, multi-queue, a memory-table change under load, a front end that
 * disconnects with requests in flight, inflight resubmission, bad
 * messages and a table of malicious descriptor chains.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib.h>

#include "block/block-int.h"
#include "block/export/export.h"
#include "block/export/vhost-user-blk.h"
#include "block/virtio/virtio-blk.h"
#include "block/virtio/vu-frontend.h"

#define DISK_SIZE   (4u << 20)
#define GPA_BASE    0x100000ull
#define QSIZE       64

static StrataContext *ctx;
static StrataNode *node;
static BlockExport *vexp;
static char *sock_dir;

static void pump(void *opaque)
{
    strata_context_run_once(ctx, false);
}

/* A context with a mem node of @node_json and an export with @extra
 * members; the socket path is in a temporary directory. */
static void setup(const char *node_json, const char *extra)
{
    StrataError *err = NULL;

    ctx = strata_context_new(&err);
    g_assert_no_error((void *)err);
    loop_attach_current(ctx->loop);
    node = strata_node_open_json(ctx, node_json, &err);
    if (!node) {
        g_error("%s", error_get_message(err));
    }
    vhost_user_blk_register();
    sock_dir = g_dir_make_tmp("test-vub-XXXXXX", NULL);
    g_autofree char *json = g_strdup_printf(
        "{\"type\": \"vhost-user-blk\", \"id\": \"vub0\", "
        "\"node-name\": \"disk\", \"addr\": {\"type\": \"unix\", "
        "\"path\": \"%s/sock\"}%s%s}", sock_dir, extra ? ", " : "",
        extra ? extra : "");
    g_autoptr(OptNode) o = opts_parse_json(json, &err);
    vexp = export_add(ctx, o, &err);
    if (!vexp) {
        g_error("%s", error_get_message(err));
    }
}

/* Run the context's loop until @done() holds; the back end's threads may
 * take their time on a busy machine, so the bound is time, not turns. */
static void pump_until(bool (*done)(void), const char *what)
{
    int64_t deadline = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;

    while (!done()) {
        if (g_get_monotonic_time() > deadline) {
            g_error("timed out after 20 s waiting for %s", what);
        }
        if (!strata_context_run_once(ctx, false)) {
            g_usleep(50);
        }
    }
}

static bool no_exports(void)
{
    return export_count() == 0;
}

static bool disconnected(void)
{
    VhostUserBlkStats st;

    vhost_user_blk_get_stats(vexp, &st);
    return !st.connected;
}

/* iothread objects to delete at teardown (their queues of ctx go first). */
static const char *teardown_objects[4];

static void teardown(void)
{
    export_del("vub0", true, NULL);
    pump_until(no_exports, "the export to go");
    for (int i = 0; i < 4 && teardown_objects[i]; i++) {
        StrataError *err = NULL;
        if (!strata_object_del(teardown_objects[i], &err)) {
            g_error("%s", error_get_message(err));
        }
        teardown_objects[i] = NULL;
    }
    strata_node_unref(node);
    loop_attach_current(NULL);
    strata_context_free(ctx);
    g_autofree char *p = g_build_filename(sock_dir, "sock", NULL);
    unlink(p);
    rmdir(sock_dir);
    g_free(sock_dir);
}

/* A front end connected through a socketpair, memory mapped, negotiated
 * with everything offered, @nq queues of QSIZE started. */
static void fe_connect(VuFrontend *fe, unsigned nq, int nregions)
{
    int sp[2];

    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp),
                    ==, 0);
    g_assert_true(vhost_user_blk_add_client(vexp, sp[0]));
    vuf_init(fe, sp[1], pump, NULL);
    g_assert_cmpint(vuf_alloc_memory(fe, 8u << 20, nregions, GPA_BASE), ==, 0);
    g_assert_cmpint(vuf_negotiate(fe, ~0ull, ~0ull), ==, 0);
    g_assert_cmpint(vuf_set_mem_table(fe), ==, 0);
    for (unsigned i = 0; i < nq; i++) {
        g_assert_cmpint(vuf_start_queue(fe, i, QSIZE), ==, 0);
    }
}

static void fe_close(VuFrontend *fe)
{
    vuf_cleanup(fe);
    pump_until(disconnected, "the back end to see the front end go");
}

/* A request in guest memory: header, data, status. */
typedef struct TestReq {
    uint8_t *hdr, *data, *status;
    uint64_t hdr_gpa, data_gpa, status_gpa;
} TestReq;

static void req_alloc(VuFrontend *fe, TestReq *r, uint32_t type,
                      uint64_t sector, size_t data_len)
{
    r->hdr = vuf_alloc(fe, 16, 16, &r->hdr_gpa);
    r->data = data_len ? vuf_alloc(fe, data_len, 512, &r->data_gpa) : NULL;
    r->status = vuf_alloc(fe, 1, 1, &r->status_gpa);
    g_assert_nonnull(r->hdr);
    g_assert_nonnull(r->status);
    uint32_t t = htole32(type);
    uint64_t s = htole64(sector);
    memcpy(r->hdr, &t, 4);
    memcpy(r->hdr + 8, &s, 8);
    *r->status = 0xee;
}

/* Submit and wait: the status byte. */
static int do_req(VuFrontend *fe, unsigned q, uint32_t type, uint64_t sector,
                  void *buf, size_t len, bool indirect)
{
    TestReq r;
    uint16_t head;
    uint32_t id, used_len;
    bool dev_writes = type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;

    req_alloc(fe, &r, type, sector, len);
    if (len && !dev_writes) {
        memcpy(r.data, buf, len);
    }
    VufBuf bufs[3] = {
        { r.hdr_gpa, 16, false },
        { r.data_gpa, (uint32_t)len, dev_writes },
        { r.status_gpa, 1, true },
    };
    if (len) {
        g_assert_cmpint(vuf_submit(fe, q, bufs, 3, indirect, &head), ==, 0);
    } else {
        bufs[1] = bufs[2];
        g_assert_cmpint(vuf_submit(fe, q, bufs, 2, indirect, &head), ==, 0);
    }
    g_assert_cmpint(vuf_wait_used(fe, q, &id, &used_len), ==, 0);
    g_assert_cmpuint(id, ==, head);
    if (dev_writes && len) {
        memcpy(buf, r.data, len);
    }
    return *r.status;
}

/* ---- negotiation and config ----------------------------------------- */

static void test_features(void)
{
    VuFrontend fe;
    uint64_t f, pf, nq;

    setup("{\"driver\": \"mem\", \"node-name\": \"disk\", \"size\": 4194304}",
          "\"num-queues\": 3");
    fe_connect(&fe, 0, 1);
    g_assert_cmpint(vuf_get_u64(&fe, VHOST_USER_GET_FEATURES, &f), ==, 0);
    uint64_t want = (1ull << VIRTIO_F_VERSION_1) |
                    (1ull << VIRTIO_RING_F_INDIRECT_DESC) |
                    (1ull << VIRTIO_RING_F_EVENT_IDX) |
                    (1ull << VHOST_USER_F_PROTOCOL_FEATURES) |
                    (1ull << VIRTIO_BLK_F_SIZE_MAX) |
                    (1ull << VIRTIO_BLK_F_SEG_MAX) |
                    (1ull << VIRTIO_BLK_F_BLK_SIZE) |
                    (1ull << VIRTIO_BLK_F_TOPOLOGY) |
                    (1ull << VIRTIO_BLK_F_FLUSH) |
                    (1ull << VIRTIO_BLK_F_MQ) |
                    (1ull << VIRTIO_BLK_F_RO);   /* writable is false */
    g_assert_cmphex(f, ==, want);
    g_assert_cmpint(vuf_get_u64(&fe, VHOST_USER_GET_PROTOCOL_FEATURES, &pf),
                    ==, 0);
    g_assert_cmphex(pf, ==, (1ull << VHOST_USER_PROTOCOL_F_MQ) |
                    (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) |
                    (1ull << VHOST_USER_PROTOCOL_F_BACKEND_REQ) |
                    (1ull << VHOST_USER_PROTOCOL_F_CONFIG) |
                    (1ull << VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD));
    /* Dirty logging is not offered. */
    g_assert_false(pf & (1ull << VHOST_USER_PROTOCOL_F_LOG_SHMFD));
    g_assert_cmpint(vuf_get_u64(&fe, VHOST_USER_GET_QUEUE_NUM, &nq), ==, 0);
    g_assert_cmpuint(nq, ==, 3);
    /* Acking a feature that was not offered fails (REPLY_ACK). */
    uint64_t bad = f | (1ull << 0);
    g_assert_cmpint(vuf_request(&fe, VHOST_USER_SET_FEATURES, &bad, 8, NULL,
                                0, NULL, true), ==, -EIO);
    /* A writable export drops RO and offers DISCARD / WRITE_ZEROES. */
    fe_close(&fe);
    teardown();
    setup("{\"driver\": \"mem\", \"node-name\": \"disk\", \"size\": 4194304}",
          "\"writable\": true");
    fe_connect(&fe, 0, 1);
    g_assert_cmpint(vuf_get_u64(&fe, VHOST_USER_GET_FEATURES, &f), ==, 0);
    g_assert_false(f & (1ull << VIRTIO_BLK_F_RO));
    g_assert_true(f & (1ull << VIRTIO_BLK_F_DISCARD));
    g_assert_true(f & (1ull << VIRTIO_BLK_F_WRITE_ZEROES));
    fe_close(&fe);
    teardown();
}

static void test_config(void)
{
    VuFrontend fe;
    VirtioBlkConfig cfg;

    /* A 4K-native device below a 512-byte guest block size. */
    setup("{\"driver\": \"mem\", \"node-name\": \"disk\", \"size\": 4194304, "
          "\"align\": 4096}", "\"num-queues\": 2");
    fe_connect(&fe, 0, 1);
    g_assert_cmpint(vuf_get_config(&fe, 0, &cfg, sizeof(cfg)), ==, 0);
    g_assert_cmpuint(le64toh(cfg.capacity), ==, DISK_SIZE / 512);
    g_assert_cmpuint(le32toh(cfg.blk_size), ==, 512);
    g_assert_cmpuint(cfg.physical_block_exp, ==, 3);
    g_assert_cmpuint(le16toh(cfg.min_io_size), ==, 8);
    g_assert_cmpuint(le32toh(cfg.seg_max), ==, VQ_MAX_CHAIN - 2);
    g_assert_cmpuint(le16toh(cfg.num_queues), ==, 2);
    /* A piece at an offset, as QEMU reads single fields. */
    uint32_t blk;
    g_assert_cmpint(vuf_get_config(&fe, 20, &blk, 4), ==, 0);
    g_assert_cmpuint(le32toh(blk), ==, 512);
    /* Out of range: the connection ends (GET_CONFIG must be answered). */
    VhostUserConfig c = { .offset = 250, .size = 10 };
    VhostUserMsg reply;
    g_assert_cmpint(vuf_request(&fe, VHOST_USER_GET_CONFIG, &c, 12 + 10, NULL,
                                0, &reply, false), <, 0);
    fe_close(&fe);
    teardown();

    setup("{\"driver\": \"mem\", \"node-name\": \"disk\", \"size\": 4194304}",
          "\"logical-block-size\": 4096");
    fe_connect(&fe, 0, 1);
    g_assert_cmpint(vuf_get_config(&fe, 0, &cfg, sizeof(cfg)), ==, 0);
    g_assert_cmpuint(le32toh(cfg.blk_size), ==, 4096);
    g_assert_cmpuint(cfg.physical_block_exp, ==, 0);
    g_assert_cmpuint(le64toh(cfg.capacity), ==, DISK_SIZE / 512);
    fe_close(&fe);
    teardown();
}

/* Option errors name the option. */
static void test_options(void)
{
    static const struct {
        const char *extra, *msg;
    } cases[] = {
        { "\"addr\": {\"type\": \"inet\", \"path\": \"x\"}",
          "addr.type: 'inet' is not supported (only unix)" },
        { "\"addr\": {\"type\": \"unix\"}", "addr.path" },
        { "\"addr\": {\"type\": \"unix\", \"path\": \"/x\", \"port\": 1}",
          "addr.port: unknown member" },
        { "\"addr\": \"/tmp/x\"", "addr: expected an object" },
        { "\"logical-block-size\": 1024, \"addr\": {\"type\": \"unix\", "
          "\"path\": \"/nonexistent-dir/s\"}", "addr.path: " },
        { "\"logical-block-size\": 65536, \"addr\": {\"type\": \"unix\", "
          "\"path\": \"/tmp/x\"}", "logical-block-size: 65536 is not a power "
          "of two between 512 and 32768" },
        { "\"serial\": \"012345678901234567890\", \"addr\": {\"type\": "
          "\"unix\", \"path\": \"/tmp/x\"}", "serial: longer than 20 bytes" },
    };
    StrataError *err = NULL;

    setup("{\"driver\": \"mem\", \"node-name\": \"disk\", \"size\": 4194304}",
          NULL);
    for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *json = g_strdup_printf(
            "{\"type\": \"vhost-user-blk\", \"id\": \"bad\", "
            "\"node-name\": \"disk\", %s}", cases[i].extra);
        g_autoptr(OptNode) o = opts_parse_json(json, &err);
        g_assert_nonnull(o);
        g_assert_null(export_add(ctx, o, &err));
        g_assert_nonnull(err);
        if (!strstr(error_get_message(err), cases[i].msg)) {
            g_error("case %u: '%s' lacks '%s'", i, error_get_message(err),
                    cases[i].msg);
        }
        error_free(err);
        err = NULL;
    }
    /* A second export on the same socket path. */
    g_autofree char *json = g_strdup_printf(
        "{\"type\": \"vhost-user-blk\", \"id\": \"two\", \"node-name\": "
        "\"disk\", \"addr\": {\"type\": \"unix\", \"path\": \"%s/sock\"}}",
        sock_dir);
    g_autoptr(OptNode) o = opts_parse_json(json, &err);
    g_assert_null(export_add(ctx, o, &err));
    g_assert_nonnull(strstr(error_get_message(err), "Address already in use"));
    error_free(err);
    teardown();
}

/* ---- requests ------------------------------------------------------- */

static void fill_pattern(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 9));
    }
}

static void test_requests(void)
{
    VuFrontend fe;
    g_autofree uint8_t *w = g_malloc(65536), *r = g_malloc(65536);

    setup("{\"driver\": \"mem\", \"node-name\": \"disk\", \"size\": 4194304, "
          "\"align\": 4096}", "\"writable\": true, \"serial\": \"strata-sn\"");
    fe_connect(&fe, 1, 2);

    /* OUT at odd sectors (RMW below), IN back, direct and indirect. */
    for (int ind = 0; ind < 2; ind++) {
        fill_pattern(w, 65536, 1 + ind);
        g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_OUT, 3 + ind * 200, w,
                               65536, ind), ==, VIRTIO_BLK_S_OK);
        memset(r, 0, 65536);
        g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_IN, 3 + ind * 200, r,
                               65536, ind), ==, VIRTIO_BLK_S_OK);
        g_assert_cmpmem(r, 65536, w, 65536);
    }
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, false),
                    ==, VIRTIO_BLK_S_OK);
    char id[VIRTIO_BLK_ID_BYTES + 1] = { 0 };
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_GET_ID, 0, id, 20, false),
                    ==, VIRTIO_BLK_S_OK);
    g_assert_cmpstr(id, ==, "strata-sn");

    /* WRITE_ZEROES with UNMAP and DISCARD: one segment each. */
    VirtioBlkDiscardWz seg = { htole64(3), htole32(8),
                               htole32(VIRTIO_BLK_WZ_FLAG_UNMAP) };
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_WRITE_ZEROES, 0, &seg,
                           sizeof(seg), false), ==, VIRTIO_BLK_S_OK);
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_IN, 3, r, 4096, false), ==,
                    VIRTIO_BLK_S_OK);
    for (int i = 0; i < 4096; i++) {
        g_assert_cmpuint(r[i], ==, 0);
    }
    seg.flags = 0;
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_DISCARD, 0, &seg, sizeof(seg),
                           false), ==, VIRTIO_BLK_S_OK);
    seg.flags = htole32(VIRTIO_BLK_WZ_FLAG_UNMAP);
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_DISCARD, 0, &seg, sizeof(seg),
                           false), ==, VIRTIO_BLK_S_UNSUPP);

    /* Past the end, and a sector number whose byte offset overflows. */
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_IN, DISK_SIZE / 512 - 1, r,
                           1024, false), ==, VIRTIO_BLK_S_IOERR);
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_OUT, UINT64_MAX / 256, w,
                           512, false), ==, VIRTIO_BLK_S_IOERR);
    /* Not a multiple of the sector size. */
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_OUT, 0, w, 100, false), ==,
                    VIRTIO_BLK_S_IOERR);
    g_assert_cmpint(do_req(&fe, 0, 99, 0, NULL, 0, false), ==,
                    VIRTIO_BLK_S_UNSUPP);

    /* Byte offsets, not descriptors: the header split 5 + 11 over two
     * descriptors, the status byte sharing the last data descriptor. */
    TestReq t;
    req_alloc(&fe, &t, VIRTIO_BLK_T_IN, 3, 1024 + 1);
    uint16_t head;
    uint32_t uid, ulen;
    VufBuf b[4] = {
        { t.hdr_gpa, 5, false }, { t.hdr_gpa + 5, 11, false },
        { t.data_gpa, 600, true }, { t.data_gpa + 600, 1024 + 1 - 600, true },
    };
    t.data[1024] = 0xee;
    g_assert_cmpint(vuf_submit(&fe, 0, b, 4, false, &head), ==, 0);
    g_assert_cmpint(vuf_wait_used(&fe, 0, &uid, &ulen), ==, 0);
    g_assert_cmpuint(t.data[1024], ==, VIRTIO_BLK_S_OK);
    g_assert_cmpuint(ulen, ==, 1025);
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_IN, 3, r, 1024, false), ==,
                    VIRTIO_BLK_S_OK);
    g_assert_cmpmem(t.data, 1024, r, 1024);

    /* A 1022-segment request of 512 bytes each (SEG_MAX). */
    g_autofree VufBuf *many = g_new(VufBuf, 1024);
    req_alloc(&fe, &t, VIRTIO_BLK_T_OUT, 7, 1022 * 512);
    fill_pattern(t.data, 1022 * 512, 9);
    many[0] = (VufBuf){ t.hdr_gpa, 16, false };
    for (int i = 0; i < 1022; i++) {
        many[1 + i] = (VufBuf){ t.data_gpa + 512ull * i, 512, false };
    }
    many[1023] = (VufBuf){ t.status_gpa, 1, true };
    g_assert_cmpint(vuf_submit(&fe, 0, many, 1024, true, &head), ==, 0);
    g_assert_cmpint(vuf_wait_used(&fe, 0, &uid, &ulen), ==, 0);
    g_assert_cmpuint(*t.status, ==, VIRTIO_BLK_S_OK);
    g_autofree uint8_t *big = g_malloc(1022 * 512);
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_IN, 7, big, 1022 * 512,
                           true), ==, VIRTIO_BLK_S_OK);
    g_assert_cmpmem(big, 1022 * 512, t.data, 1022 * 512);
    fe_close(&fe);
    teardown();

    /* A read-only export refuses writes with IOERR. */
    setup("{\"driver\": \"mem\", \"node-name\": \"disk\", \"size\": 4194304}",
          NULL);
    fe_connect(&fe, 1, 1);
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_OUT, 0, w, 512, false), ==,
                    VIRTIO_BLK_S_IOERR);
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_IN, 0, r, 512, false), ==,
                    VIRTIO_BLK_S_OK);
    fe_close(&fe);
    teardown();
}

/* 8 writes on each of two queues at once (pattern @seed + slot), then
 * each read back through the other queue. */
static void two_queue_round(VuFrontend *fe, int seed)
{
    TestReq t[2][8];
    uint16_t head;

    for (int q = 0; q < 2; q++) {
        for (int i = 0; i < 8; i++) {
            req_alloc(fe, &t[q][i], VIRTIO_BLK_T_OUT, (q * 8 + i) * 8, 4096);
            fill_pattern(t[q][i].data, 4096, seed + q * 8 + i);
            VufBuf b[3] = { { t[q][i].hdr_gpa, 16, false },
                            { t[q][i].data_gpa, 4096, false },
                            { t[q][i].status_gpa, 1, true } };
            g_assert_cmpint(vuf_submit(fe, q, b, 3, i & 1, &head), ==, 0);
        }
    }
    for (int q = 0; q < 2; q++) {
        for (int i = 0; i < 8; i++) {
            uint32_t id, len;
            g_assert_cmpint(vuf_wait_used(fe, q, &id, &len), ==, 0);
        }
    }
    for (int q = 0; q < 2; q++) {
        for (int i = 0; i < 8; i++) {
            uint8_t buf[4096];
            g_assert_cmpuint(*t[q][i].status, ==, VIRTIO_BLK_S_OK);
            g_assert_cmpint(do_req(fe, 1 - q, VIRTIO_BLK_T_IN,
                                   (q * 8 + i) * 8, buf, 4096, false), ==,
                            VIRTIO_BLK_S_OK);
            g_assert_cmpmem(buf, 4096, t[q][i].data, 4096);
        }
    }
}

/* Requests on two queues at once, completing out of order (random-order
 * mem node with latency). */
static void test_multi_queue(void)
{
    VuFrontend fe;

    setup("{\"driver\": \"mem\", \"node-name\": \"disk\", \"size\": 4194304, "
          "\"latency-ns\": 200000, \"random-order\": true}",
          "\"writable\": true, \"num-queues\": 2");
    fe_connect(&fe, 2, 1);
    two_queue_round(&fe, 0);
    fe_close(&fe);
    teardown();
}

/*
 * Multi-queue: each virtqueue in an iothread of its own (iothreads=[...]):
 * requests on both rings, writes on one read back on the other, and each
 * iothread's queue of the context ran requests on the node (its shard's
 * statistics).
 */
static void test_multi_queue_iothreads(void)
{
    StrataError *err = NULL;
    VuFrontend fe;

    g_assert_true(strata_object_add_json("{\"qom-type\": \"iothread\", "
                                         "\"id\": \"vio1\"}", &err));
    g_assert_true(strata_object_add_json("{\"qom-type\": \"iothread\", "
                                         "\"id\": \"vio2\"}", &err));
    setup("{\"driver\": \"mem\", \"node-name\": \"disk\", \"size\": 4194304, "
          "\"latency-ns\": 100000, \"random-order\": true}",
          "\"writable\": true, \"num-queues\": 2, "
          "\"iothreads\": [\"vio1\", \"vio2\"]");
    fe_connect(&fe, 2, 1);
    for (int round = 0; round < 4; round++) {
        two_queue_round(&fe, round * 16);
    }
    /* Both iothreads' queues ran requests on the node; the context's own
     * queue (the messages' loop) ran none. */
    BlockExport *exp = vexp;
    g_assert_cmpint(exp->niothreads, ==, 2);
    for (int i = 0; i < 2; i++) {
        NodeShard *sh = __atomic_load_n(&node->shard[exp->queues[i]->index],
                                        __ATOMIC_ACQUIRE);
        g_assert_nonnull(sh);
        g_assert_cmpuint(SHARD_READ(sh->stats.op[REQ_WRITE].ops), ==, 32);
        g_assert_cmpuint(SHARD_READ(sh->stats.op[REQ_READ].ops), ==, 32);
    }
    NodeShard *sh0 = __atomic_load_n(&node->shard[0], __ATOMIC_ACQUIRE);
    g_assert_true(sh0 == NULL ||
                  SHARD_READ(sh0->stats.op[REQ_WRITE].ops) == 0);
    fe_close(&fe);
    teardown_objects[0] = "vio1";
    teardown_objects[1] = "vio2";
    teardown();
}

/* SET_MEM_TABLE while requests are in flight: they complete into the old
 * mapping (still mapped), the rings move to the new one. */
static void test_mem_table_change(void)
{
    VuFrontend fe;
    TestReq t[16];
    uint16_t head;

    setup("{\"driver\": \"mem\", \"node-name\": \"disk\", \"size\": 4194304, "
          "\"latency-ns\": 2000000}", "\"writable\": true");
    fe_connect(&fe, 1, 2);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 16; i++) {
            req_alloc(&fe, &t[i], VIRTIO_BLK_T_OUT, i * 8, 4096);
            fill_pattern(t[i].data, 4096, round * 16 + i);
            VufBuf b[3] = { { t[i].hdr_gpa, 16, false },
                            { t[i].data_gpa, 4096, false },
                            { t[i].status_gpa, 1, true } };
            g_assert_cmpint(vuf_submit(&fe, 0, b, 3, false, &head), ==, 0);
        }
        /* Let the back end pick them up, then replace the table. */
        for (int i = 0; i < 5; i++) {
            strata_context_run_once(ctx, false);
        }
        g_assert_cmpint(vuf_set_mem_table(&fe), ==, 0);
        for (int i = 0; i < 16; i++) {
            uint32_t id, len;
            g_assert_cmpint(vuf_wait_used(&fe, 0, &id, &len), ==, 0);
        }
        for (int i = 0; i < 16; i++) {
            uint8_t buf[4096];
            g_assert_cmpuint(*t[i].status, ==, VIRTIO_BLK_S_OK);
            g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_IN, i * 8, buf, 4096,
                                   false), ==, VIRTIO_BLK_S_OK);
            g_assert_cmpmem(buf, 4096, t[i].data, 4096);
        }
    }
    fe_close(&fe);
    teardown();
}

/* A memory table that no longer holds the rings, sent while requests are
 * in flight: the queue stops (error eventfd), the requests complete
 * without touching the unmapped rings, the connection goes on. */
static void test_mem_table_drops_rings(void)
{
    VuFrontend fe;
    TestReq t;
    uint16_t head;
    uint64_t f;
    VhostUserBlkStats st;

    setup("{\"driver\": \"mem\", \"node-name\": \"disk\", \"size\": 4194304, "
          "\"latency-ns\": 2000000}", "\"writable\": true");
    fe_connect(&fe, 1, 1);
    for (int i = 0; i < 8; i++) {
        req_alloc(&fe, &t, VIRTIO_BLK_T_OUT, i * 8, 4096);
        VufBuf b[3] = { { t.hdr_gpa, 16, false }, { t.data_gpa, 4096, false },
                        { t.status_gpa, 1, true } };
        g_assert_cmpint(vuf_submit(&fe, 0, b, 3, false, &head), ==, 0);
    }
    for (int i = 0; i < 5; i++) {
        strata_context_run_once(ctx, false);
    }
    /* Same memory, but at other front-end addresses: the ring addresses
     * (front-end virtual) no longer translate. */
    VhostUserMemory m = { .nregions = 1 };
    m.regions[0] = (VhostUserMemRegion){ fe.regions[0].gpa,
                                         fe.regions[0].size,
                                         1ull << 46, 0 };
    g_assert_cmpint(vuf_request(&fe, VHOST_USER_SET_MEM_TABLE, &m,
                                8 + sizeof(VhostUserMemRegion),
                                &fe.regions[0].fd, 1, NULL, true), ==, 0);
    for (int i = 0; i < 200; i++) {
        strata_context_run_once(ctx, false);
        g_usleep(100);
    }
    g_assert_true(vuf_queue_error(&fe, 0));
    vhost_user_blk_get_stats(vexp, &st);
    g_assert_cmpuint(st.queue_errors, ==, 1);
    g_assert_cmpint(vuf_get_u64(&fe, VHOST_USER_GET_FEATURES, &f), ==, 0);
    fe_close(&fe);
    teardown();
}

/* The front end disappears with requests in flight: they complete, the
 * connection is freed, and a new front end is served. */
static void test_disconnect_in_flight(void)
{
    VuFrontend fe;
    TestReq t;
    uint16_t head;
    uint8_t w[4096], r[4096];

    setup("{\"driver\": \"mem\", \"node-name\": \"disk\", \"size\": 4194304, "
          "\"latency-ns\": 5000000}", "\"writable\": true");
    fe_connect(&fe, 1, 1);
    for (int i = 0; i < 16; i++) {
        req_alloc(&fe, &t, VIRTIO_BLK_T_OUT, i * 8, 4096);
        fill_pattern(t.data, 4096, i);
        VufBuf b[3] = { { t.hdr_gpa, 16, false }, { t.data_gpa, 4096, false },
                        { t.status_gpa, 1, true } };
        g_assert_cmpint(vuf_submit(&fe, 0, b, 3, false, &head), ==, 0);
    }
    for (int i = 0; i < 5; i++) {
        strata_context_run_once(ctx, false);
    }
    /* A second front end while the first is connected is refused. */
    int sp[2];
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), ==, 0);
    g_assert_false(vhost_user_blk_add_client(vexp, sp[0]));
    close(sp[1]);
    fe_close(&fe);

    fe_connect(&fe, 1, 1);
    for (int i = 0; i < 16; i++) {
        fill_pattern(w, 4096, i);
        g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_IN, i * 8, r, 4096,
                               false), ==, VIRTIO_BLK_S_OK);
        g_assert_cmpmem(r, 4096, w, 4096);
    }
    fe_close(&fe);
    teardown();
}

/* A restarted back end finds requests marked in flight in the inflight
 * region (as a killed one leaves them) and resubmits them in order. */
static void test_inflight_resubmit(void)
{
    VuFrontend fe;
    VhostUserMsg reply;
    TestReq t[3];
    uint8_t r[4096];

    setup("{\"driver\": \"mem\", \"node-name\": \"disk\", \"size\": 4194304}",
          "\"writable\": true");
    fe_connect(&fe, 0, 1);
    VhostUserInflight in = { .num_queues = 1, .queue_size = QSIZE };
    g_assert_cmpint(vuf_request(&fe, VHOST_USER_GET_INFLIGHT_FD, &in,
                                sizeof(in), NULL, 0, &reply, false), ==, 0);
    g_assert_cmpint(reply.nfds, ==, 1);
    int ifd = reply.fds[0];
    in = reply.payload.inflight;
    g_assert_cmpuint(in.mmap_size, >=, vq_inflight_queue_size(QSIZE));
    VuInflightQueue *iq = mmap(NULL, in.mmap_size, PROT_READ | PROT_WRITE,
                               MAP_SHARED, ifd, 0);
    g_assert_true(iq != MAP_FAILED);
    g_assert_cmpint(vuf_request(&fe, VHOST_USER_SET_INFLIGHT_FD, &in,
                                sizeof(in), &ifd, 1, NULL, true), ==, 0);
    g_assert_cmpint(vuf_start_queue(&fe, 0, QSIZE), ==, 0);
    /* A normal request goes through the inflight bookkeeping. */
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_IN, 0, r, 512, false), ==,
                    VIRTIO_BLK_S_OK);
    g_assert_cmpuint(iq->version, ==, 1);
    g_assert_cmpuint(iq->used_idx, ==, 1);
    uint16_t base;
    g_assert_cmpint(vuf_stop_queue(&fe, 0, &base), ==, 0);
    g_assert_cmpuint(base, ==, 1);

    /* What a killed back end leaves: three chains made available (two
     * writes to the same sector, then a third elsewhere), fetched and
     * marked in flight, none used. */
    VufQueue *q = &fe.queues[0];
    for (int i = 0; i < 3; i++) {
        req_alloc(&fe, &t[i], VIRTIO_BLK_T_OUT, i == 2 ? 64 : 16, 4096);
        fill_pattern(t[i].data, 4096, 40 + i);
        uint16_t d = (uint16_t)(10 + 3 * i);
        q->desc[d] = (VringDesc){ t[i].hdr_gpa, 16, VRING_DESC_F_NEXT,
                                  (uint16_t)(d + 1) };
        q->desc[d + 1] = (VringDesc){ t[i].data_gpa, 4096, VRING_DESC_F_NEXT,
                                      (uint16_t)(d + 2) };
        q->desc[d + 2] = (VringDesc){ t[i].status_gpa, 1, VRING_DESC_F_WRITE,
                                      0 };
        q->avail->ring[q->avail_idx % QSIZE] = d;
        q->avail_idx++;
        iq->desc[d].inflight = 1;
        iq->desc[d].counter = 100 + i;
    }
    q->avail->idx = q->avail_idx;
    /* The "restarted" back end: the front end reconnects with its
     * memory, rings and inflight region, and sends the used index as the
     * base (as QEMU does when GET_VRING_BASE failed). */
    vuf_disconnect(&fe);
    pump_until(disconnected, "the back end to see the front end go");
    int sp[2];
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp),
                    ==, 0);
    g_assert_true(vhost_user_blk_add_client(vexp, sp[0]));
    vuf_reconnect(&fe, sp[1]);
    g_assert_cmpint(vuf_negotiate(&fe, ~0ull, ~0ull), ==, 0);
    g_assert_cmpint(vuf_set_mem_table(&fe), ==, 0);
    g_assert_cmpint(vuf_request(&fe, VHOST_USER_SET_INFLIGHT_FD, &in,
                                sizeof(in), &ifd, 1, NULL, true), ==, 0);
    g_assert_cmpint(vuf_send_queue(&fe, 0, 1), ==, 0);
    for (int i = 0; i < 3; i++) {
        uint32_t id, len;
        g_assert_cmpint(vuf_wait_used(&fe, 0, &id, &len), ==, 0);
        g_assert_cmpuint(id, ==, 10 + 3 * i);       /* fetch order */
        g_assert_cmpuint(*t[i].status, ==, VIRTIO_BLK_S_OK);
    }
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_IN, 16, r, 4096, false), ==,
                    VIRTIO_BLK_S_OK);
    g_assert_cmpmem(r, 4096, t[1].data, 4096);
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_IN, 64, r, 4096, false), ==,
                    VIRTIO_BLK_S_OK);
    g_assert_cmpmem(r, 4096, t[2].data, 4096);
    for (int i = 0; i < QSIZE; i++) {
        g_assert_cmpuint(iq->desc[i].inflight, ==, 0);
    }
    g_assert_cmpuint(iq->used_idx, ==, 6);
    fe_close(&fe);
    munmap(iq, in.mmap_size);
    close(ifd);
    teardown();
}


/* block_resize reaches the front end: CONFIG_CHANGE_MSG on the back-end
 * channel, then GET_CONFIG has the new capacity. */
static void test_resize(void)
{
    VuFrontend fe;
    VirtioBlkConfig cfg;
    VhostUserMsg msg;
    StrataError *err = NULL;
    int sp[2];

    setup("{\"driver\": \"mem\", \"node-name\": \"disk\", \"size\": 4194304}",
          "\"writable\": true");
    fe_connect(&fe, 1, 1);
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp),
                    ==, 0);
    g_assert_cmpint(vuf_request(&fe, VHOST_USER_SET_BACKEND_REQ_FD, NULL, 0,
                                &sp[0], 1, NULL, true), ==, 0);
    close(sp[0]);
    StrataBackend *be = strata_backend_new(node, "resize", STRATA_PERM_RESIZE,
                                           STRATA_PERM_ALL, &err);
    g_assert_nonnull(be);
    g_assert_cmpint(strata_backend_truncate(be, 2 * DISK_SIZE), ==, 0);
    strata_backend_free(be);
    vhost_user_blk_resized(vexp);
    g_assert_cmpint(vu_msg_recv(sp[1], &msg, 5000), ==, 0);
    g_assert_cmpuint(msg.hdr.request, ==, VHOST_USER_BACKEND_CONFIG_CHANGE_MSG);
    g_assert_cmpuint(msg.hdr.size, ==, 0);
    g_assert_cmpint(vuf_get_config(&fe, 0, &cfg, sizeof(cfg)), ==, 0);
    g_assert_cmpuint(le64toh(cfg.capacity), ==, 2 * DISK_SIZE / 512);
    /* The new sectors are usable. */
    uint8_t w[4096], r[4096];
    fill_pattern(w, sizeof(w), 77);
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_OUT, DISK_SIZE / 512 + 8, w,
                           4096, false), ==, VIRTIO_BLK_S_OK);
    g_assert_cmpint(do_req(&fe, 0, VIRTIO_BLK_T_IN, DISK_SIZE / 512 + 8, r,
                           4096, false), ==, VIRTIO_BLK_S_OK);
    g_assert_cmpmem(r, 4096, w, 4096);
    /* No change, no message. */
    vhost_user_blk_resized(vexp);
    g_assert_cmpint(vu_msg_recv(sp[1], &msg, 100), ==, -ETIMEDOUT);
    close(sp[1]);
    fe_close(&fe);
    teardown();
}

/* ---- malicious chains ----------------------------------------------- */

typedef enum Expect {
    EXPECT_STATUS,          /* used element with this status */
    EXPECT_QUEUE_ERROR,     /* no used element; error eventfd signalled */
} Expect;

typedef struct EvilCase {
    const char *name;
    Expect expect;
    uint8_t status;
    /* Write descriptors into the queue (and memory); return the head to
     * make available (or -1 if the case did it). */
    int (*build)(VuFrontend *fe, VufQueue *q, TestReq *t);
} EvilCase;

static int evil_head_range(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    return QSIZE + 5;
}

static int evil_next_range(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    q->desc[0] = (VringDesc){ t->hdr_gpa, 16, VRING_DESC_F_NEXT, QSIZE };
    return 0;
}

static int evil_loop(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    q->desc[0] = (VringDesc){ t->hdr_gpa, 16, VRING_DESC_F_NEXT, 1 };
    q->desc[1] = (VringDesc){ t->data_gpa, 512, VRING_DESC_F_NEXT, 0 };
    return 0;
}

static int evil_outside(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    q->desc[0] = (VringDesc){ t->hdr_gpa, 16, VRING_DESC_F_NEXT, 1 };
    q->desc[1] = (VringDesc){ 0x10, 512, VRING_DESC_F_NEXT, 2 };
    q->desc[2] = (VringDesc){ t->status_gpa, 1, VRING_DESC_F_WRITE, 0 };
    return 0;
}

static int evil_wrap(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    q->desc[0] = (VringDesc){ t->hdr_gpa, 16, VRING_DESC_F_NEXT, 1 };
    q->desc[1] = (VringDesc){ UINT64_MAX - 100, 4096,
                              VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2 };
    q->desc[2] = (VringDesc){ t->status_gpa, 1, VRING_DESC_F_WRITE, 0 };
    return 0;
}

static int evil_past_region(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    /* Starts inside guest memory, runs past its end. */
    uint64_t end = fe->regions[fe->nregions - 1].gpa +
                   fe->regions[fe->nregions - 1].size;
    q->desc[0] = (VringDesc){ t->hdr_gpa, 16, VRING_DESC_F_NEXT, 1 };
    q->desc[1] = (VringDesc){ end - 100, 4096, VRING_DESC_F_WRITE, 2 };
    q->desc[1].flags |= VRING_DESC_F_NEXT;
    q->desc[2] = (VringDesc){ t->status_gpa, 1, VRING_DESC_F_WRITE, 0 };
    return 0;
}

static VringDesc *evil_table(VuFrontend *fe, unsigned n, uint64_t *gpa)
{
    return vuf_alloc(fe, sizeof(VringDesc) * n, 16, gpa);
}

static int evil_indirect_len(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    uint64_t g;
    evil_table(fe, 2, &g);
    q->desc[0] = (VringDesc){ g, 24, VRING_DESC_F_INDIRECT, 0 };
    return 0;
}

static int evil_indirect_nested(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    uint64_t g;
    VringDesc *tab = evil_table(fe, 2, &g);
    tab[0] = (VringDesc){ g, 32, VRING_DESC_F_INDIRECT, 0 };
    q->desc[0] = (VringDesc){ g, 32, VRING_DESC_F_INDIRECT, 0 };
    return 0;
}

static int evil_indirect_loop(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    uint64_t g;
    VringDesc *tab = evil_table(fe, 2, &g);
    tab[0] = (VringDesc){ t->hdr_gpa, 16, VRING_DESC_F_NEXT, 1 };
    tab[1] = (VringDesc){ t->status_gpa, 1,
                          VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 0 };
    q->desc[0] = (VringDesc){ g, 32, VRING_DESC_F_INDIRECT, 0 };
    return 0;
}

static int evil_indirect_outside(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    q->desc[0] = (VringDesc){ 0x1000, 32, VRING_DESC_F_INDIRECT, 0 };
    return 0;
}

static int evil_indirect_next(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    uint64_t g;
    VringDesc *tab = evil_table(fe, 2, &g);
    tab[0] = (VringDesc){ t->hdr_gpa, 16, VRING_DESC_F_NEXT, 1 };
    tab[1] = (VringDesc){ t->status_gpa, 1, VRING_DESC_F_WRITE, 0 };
    q->desc[0] = (VringDesc){ g, 32,
                              VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 1 };
    q->desc[1] = (VringDesc){ t->status_gpa, 1, VRING_DESC_F_WRITE, 0 };
    return 0;
}

static int evil_indirect_huge(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    q->desc[0] = (VringDesc){ t->data_gpa, 16 * (VQ_MAX_CHAIN + 1),
                              VRING_DESC_F_INDIRECT, 0 };
    return 0;
}

static int evil_avail_jump(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    q->avail->ring[0] = 0;
    q->avail_idx = QSIZE + 1;
    __atomic_store_n(&q->avail->idx, q->avail_idx, __ATOMIC_RELEASE);
    uint64_t one = 1;
    g_assert_cmpint(write(q->kick_fd, &one, 8), ==, 8);
    return -1;
}

static int evil_no_status(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    q->desc[0] = (VringDesc){ t->hdr_gpa, 16, VRING_DESC_F_NEXT, 1 };
    q->desc[1] = (VringDesc){ t->data_gpa, 512, 0, 0 };
    return 0;
}

static int evil_zero_status(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    q->desc[0] = (VringDesc){ t->hdr_gpa, 16, VRING_DESC_F_NEXT, 1 };
    q->desc[1] = (VringDesc){ t->status_gpa, 0, VRING_DESC_F_WRITE, 0 };
    return 0;
}

static int evil_short_header(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    q->desc[0] = (VringDesc){ t->hdr_gpa, 8, VRING_DESC_F_NEXT, 1 };
    q->desc[1] = (VringDesc){ t->status_gpa, 1, VRING_DESC_F_WRITE, 0 };
    return 0;
}

static int evil_wrong_order(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    /* Readable data after a writable buffer. */
    q->desc[0] = (VringDesc){ t->hdr_gpa, 16, VRING_DESC_F_NEXT, 1 };
    q->desc[1] = (VringDesc){ t->data_gpa, 512,
                              VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2 };
    q->desc[2] = (VringDesc){ t->data_gpa + 512, 512, VRING_DESC_F_NEXT, 3 };
    q->desc[3] = (VringDesc){ t->status_gpa, 1, VRING_DESC_F_WRITE, 0 };
    return 0;
}

static int evil_in_readonly(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    /* IN whose data buffer is device-readable: the device must not
     * write it. */
    uint32_t type = htole32(VIRTIO_BLK_T_IN);
    memcpy(t->hdr, &type, 4);
    q->desc[0] = (VringDesc){ t->hdr_gpa, 16, VRING_DESC_F_NEXT, 1 };
    q->desc[1] = (VringDesc){ t->data_gpa, 512, VRING_DESC_F_NEXT, 2 };
    q->desc[2] = (VringDesc){ t->status_gpa, 1, VRING_DESC_F_WRITE, 0 };
    return 0;
}

static int evil_out_writable(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    q->desc[0] = (VringDesc){ t->hdr_gpa, 16, VRING_DESC_F_NEXT, 1 };
    q->desc[1] = (VringDesc){ t->data_gpa, 512,
                              VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2 };
    q->desc[2] = (VringDesc){ t->status_gpa, 1, VRING_DESC_F_WRITE, 0 };
    return 0;
}

static int evil_unknown_type(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    uint32_t type = htole32(0x7777);
    memcpy(t->hdr, &type, 4);
    q->desc[0] = (VringDesc){ t->hdr_gpa, 16, VRING_DESC_F_NEXT, 1 };
    q->desc[1] = (VringDesc){ t->status_gpa, 1, VRING_DESC_F_WRITE, 0 };
    return 0;
}

static int evil_past_capacity(VuFrontend *fe, VufQueue *q, TestReq *t)
{
    uint64_t s = htole64(DISK_SIZE / 512);
    memcpy(t->hdr + 8, &s, 8);
    q->desc[0] = (VringDesc){ t->hdr_gpa, 16, VRING_DESC_F_NEXT, 1 };
    q->desc[1] = (VringDesc){ t->data_gpa, 512, VRING_DESC_F_NEXT, 2 };
    q->desc[2] = (VringDesc){ t->status_gpa, 1, VRING_DESC_F_WRITE, 0 };
    return 0;
}

static const EvilCase evil_cases[] = {
    { "head-out-of-range", EXPECT_QUEUE_ERROR, 0, evil_head_range },
    { "next-out-of-range", EXPECT_QUEUE_ERROR, 0, evil_next_range },
    { "loop", EXPECT_QUEUE_ERROR, 0, evil_loop },
    { "buffer-outside-memory", EXPECT_QUEUE_ERROR, 0, evil_outside },
    { "buffer-wraps", EXPECT_QUEUE_ERROR, 0, evil_wrap },
    { "buffer-past-memory-end", EXPECT_QUEUE_ERROR, 0, evil_past_region },
    { "indirect-bad-length", EXPECT_QUEUE_ERROR, 0, evil_indirect_len },
    { "indirect-nested", EXPECT_QUEUE_ERROR, 0, evil_indirect_nested },
    { "indirect-loop", EXPECT_QUEUE_ERROR, 0, evil_indirect_loop },
    { "indirect-outside-memory", EXPECT_QUEUE_ERROR, 0,
      evil_indirect_outside },
    { "indirect-with-next", EXPECT_QUEUE_ERROR, 0, evil_indirect_next },
    { "indirect-too-long", EXPECT_QUEUE_ERROR, 0, evil_indirect_huge },
    { "avail-index-jump", EXPECT_QUEUE_ERROR, 0, evil_avail_jump },
    { "no-status-buffer", EXPECT_QUEUE_ERROR, 0, evil_no_status },
    { "zero-length-status", EXPECT_QUEUE_ERROR, 0, evil_zero_status },
    { "short-header", EXPECT_STATUS, VIRTIO_BLK_S_IOERR, evil_short_header },
    { "readable-after-writable", EXPECT_STATUS, VIRTIO_BLK_S_IOERR,
      evil_wrong_order },
    { "in-with-readable-data", EXPECT_STATUS, VIRTIO_BLK_S_IOERR,
      evil_in_readonly },
    { "out-with-writable-data", EXPECT_STATUS, VIRTIO_BLK_S_IOERR,
      evil_out_writable },
    { "unknown-type", EXPECT_STATUS, VIRTIO_BLK_S_UNSUPP, evil_unknown_type },
    { "past-capacity", EXPECT_STATUS, VIRTIO_BLK_S_IOERR,
      evil_past_capacity },
};

static void test_evil_chain(gconstpointer data)
{
    const EvilCase *c = data;
    VuFrontend fe;
    TestReq t;
    uint32_t id, len;
    VhostUserBlkStats st;

    setup("{\"driver\": \"mem\", \"node-name\": \"disk\", \"size\": 4194304}",
          "\"writable\": true");
    fe_connect(&fe, 1, 1);
    VufQueue *q = &fe.queues[0];
    req_alloc(&fe, &t, VIRTIO_BLK_T_OUT, 0, 16384);
    int head = c->build(&fe, q, &t);
    if (head >= 0) {
        vuf_push_avail(&fe, 0, (uint16_t)head);
    }
    if (c->expect == EXPECT_STATUS) {
        g_assert_cmpint(vuf_wait_used(&fe, 0, &id, &len), ==, 0);
        vhost_user_blk_get_stats(vexp, &st);
        g_assert_cmpuint(*t.status, ==, c->status);
        g_assert_cmpuint(st.queue_errors, ==, 0);
    } else {
        /* The error eventfd fires; no used element, no status. */
        bool signalled = false;
        for (int i = 0; i < 5000 && !signalled; i++) {
            strata_context_run_once(ctx, false);
            signalled = vuf_queue_error(&fe, 0);
            if (!signalled) {
                g_usleep(1000);
            }
        }
        g_assert_true(signalled);
        for (int i = 0; i < 10; i++) {
            strata_context_run_once(ctx, false);
        }
        vhost_user_blk_get_stats(vexp, &st);
        g_assert_cmpuint(st.queue_errors, ==, 1);
        g_assert_cmpuint(q->used->idx, ==, 0);
        g_assert_cmpuint(*t.status, ==, 0xee);
    }
    /* The device is still there: the connection answers. */
    uint64_t f;
    fe.timeout_ms = 5000;
    g_assert_cmpint(vuf_get_u64(&fe, VHOST_USER_GET_FEATURES, &f), ==, 0);
    fe_close(&fe);
    teardown();
}

/* ---- bad messages ---------------------------------------------------- */

static void test_bad_messages(void)
{
    VuFrontend fe;
    VhostUserBlkStats st;
    uint64_t f;

    setup("{\"driver\": \"mem\", \"node-name\": \"disk\", \"size\": 4194304}",
          NULL);
    fe_connect(&fe, 1, 1);
    /* Index out of range, with REPLY_ACK: a failed ack, still connected. */
    VhostUserVringState s = { 7, 64 };
    g_assert_cmpint(vuf_request(&fe, VHOST_USER_SET_VRING_NUM, &s, sizeof(s),
                                NULL, 0, NULL, true), ==, -EIO);
    s = (VhostUserVringState){ 0, 1000 };      /* not a power of two */
    g_assert_cmpint(vuf_request(&fe, VHOST_USER_SET_VRING_NUM, &s, sizeof(s),
                                NULL, 0, NULL, true), ==, -EIO);
    /* Unsupported: dirty logging. */
    uint64_t v = 0;
    g_assert_cmpint(vuf_request(&fe, VHOST_USER_SET_LOG_BASE, &v, 8, NULL, 0,
                                NULL, true), ==, -EIO);
    /* A kick without its fd. */
    g_assert_cmpint(vuf_request(&fe, VHOST_USER_SET_VRING_KICK, &v, 8, NULL,
                                0, NULL, true), ==, -EIO);
    g_assert_cmpint(vuf_get_u64(&fe, VHOST_USER_GET_FEATURES, &f), ==, 0);
    vhost_user_blk_get_stats(vexp, &st);
    g_assert_cmpuint(st.protocol_errors, ==, 4);
    /* A wrong payload size for a request that has a reply: disconnect. */
    g_assert_cmpint(vuf_request(&fe, VHOST_USER_GET_VRING_BASE, &v, 4, NULL,
                                0, (VhostUserMsg[1]){ 0 }, false), ==,
                    -ECONNRESET);
    fe_close(&fe);

    /* A memory table whose fds are missing, a huge size field. */
    fe_connect(&fe, 0, 1);
    VhostUserMemory m = { .nregions = 1 };
    m.regions[0] = (VhostUserMemRegion){ 0, 4096, 4096, 0 };
    g_assert_cmpint(vuf_request(&fe, VHOST_USER_SET_MEM_TABLE, &m,
                                8 + sizeof(VhostUserMemRegion), NULL, 0,
                                NULL, true), ==, -EIO);
    /* Regions and inflight areas past the end of their memfd: mapped,
     * they raised SIGBUS at the first access (found by fuzz-vhost-user,
     * an inflight fd of 64 KiB announced as larger, on the queue start
     * that restores it). */
    int shortfd = memfd_create("short", MFD_CLOEXEC);
    g_assert_cmpint(ftruncate(shortfd, 64 << 10), ==, 0);
    m.regions[0] = (VhostUserMemRegion){ 0, 1 << 20, 4096, 0 };
    g_assert_cmpint(vuf_request(&fe, VHOST_USER_SET_MEM_TABLE, &m,
                                8 + sizeof(VhostUserMemRegion), &shortfd, 1,
                                NULL, true), ==, -EIO);
    VhostUserInflight inf = { .mmap_size = 1 << 20, .num_queues = 1,
                              .queue_size = QSIZE };
    g_assert_cmpint(vuf_request(&fe, VHOST_USER_SET_INFLIGHT_FD, &inf,
                                sizeof(inf), &shortfd, 1, NULL, true), ==,
                    -EIO);
    /* The same sizes inside the file are taken. */
    m.regions[0].memory_size = 64 << 10;
    g_assert_cmpint(vuf_request(&fe, VHOST_USER_SET_MEM_TABLE, &m,
                                8 + sizeof(VhostUserMemRegion), &shortfd, 1,
                                NULL, true), ==, 0);
    close(shortfd);
    VhostUserHeader h = { VHOST_USER_GET_FEATURES, VHOST_USER_VERSION,
                          1u << 30 };
    g_assert_cmpint(vu_msg_send(fe.fd, &h, NULL, NULL, 0, 1000), ==, 0);
    fe.timeout_ms = 2000;
    g_assert_cmpint(vuf_get_u64(&fe, VHOST_USER_GET_FEATURES, &f), <, 0);
    fe_close(&fe);
    teardown();
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/vhost-user-blk/features", test_features);
    g_test_add_func("/vhost-user-blk/config", test_config);
    g_test_add_func("/vhost-user-blk/options", test_options);
    g_test_add_func("/vhost-user-blk/requests", test_requests);
    g_test_add_func("/vhost-user-blk/multi-queue", test_multi_queue);
    g_test_add_func("/vhost-user-blk/requests/multi-queue-iothreads",
                    test_multi_queue_iothreads);
    g_test_add_func("/vhost-user-blk/mem-table-change-under-load",
                    test_mem_table_change);
    g_test_add_func("/vhost-user-blk/mem-table-drops-rings-under-load",
                    test_mem_table_drops_rings);
    g_test_add_func("/vhost-user-blk/disconnect-in-flight",
                    test_disconnect_in_flight);
    g_test_add_func("/vhost-user-blk/inflight-resubmit",
                    test_inflight_resubmit);
    g_test_add_func("/vhost-user-blk/bad-messages", test_bad_messages);
    g_test_add_func("/vhost-user-blk/resize-config-change", test_resize);
    for (unsigned i = 0; i < G_N_ELEMENTS(evil_cases); i++) {
        g_autofree char *path = g_strdup_printf("/vhost-user-blk/evil-chain/%s",
                                                evil_cases[i].name);
        g_test_add_data_func(path, &evil_cases[i], test_evil_chain);
    }
    return g_test_run();
}
