/*
 * Tests of the blkdebug filter (block/blkdebug.c, block/blkdebug.h)
 * SPDX-License-Identifier: MIT
 *
 * Every test opens "blkdebug" over a "mem" image through the public API,
 * puts a backend on the filter and drives I/O through it; events that only
 * a format above the filter would fire (read_aio, write_aio) are fired
 * from a coroutine by hand.  mem checks every request it receives against
 * its own limits and counts violations; each test ends with that count at
 * 0, and the filter asserts on its side that what it receives honours the
 * limits it advertised (invariant 1).
 *
 * Error injection is checked with exact error codes and, for writes, by
 * comparing the image byte for byte before and after (invariant 2: an
 * error in an RMW read fails the write before anything is written).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>

#include "block/blkdebug.h"
#include "block/block-int.h"
#include "block/mem.h"
#include "test-util.h"

#define DEV_SIZE (1024 * 1024)

/* ---- harness ------------------------------------------------------------------- */

typedef struct TestDev {
    StrataContext *ctx;
    StrataNode *node;           /* the blkdebug node, node-name "dbg" */
    StrataNode *mem;            /* its image, node-name "disk" */
    StrataBackend *be;
} TestDev;

static void dev_open(TestDev *d, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/*
 * Open {"driver": "blkdebug", "node-name": "dbg", "image": {"driver":
 * "mem", "node-name": "disk", "size": DEV_SIZE, <mem>}, <extra>} where @fmt
 * gives "<mem>|<extra>" (either part may be empty), and a backend on it.
 */
static void dev_open(TestDev *d, const char *fmt, ...)
{
    g_autoptr(StrataError) err = NULL;
    g_autofree char *spec = NULL;
    g_autofree char *json = NULL;
    g_auto(GStrv) parts = NULL;
    va_list ap;

    va_start(ap, fmt);
    spec = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    parts = g_strsplit(spec, "|", 2);
    g_assert_nonnull(parts[0]);
    g_assert_nonnull(parts[1]);
    json = g_strdup_printf("{\"driver\": \"blkdebug\", \"node-name\": \"dbg\", "
                           "\"image\": {\"driver\": \"mem\", \"node-name\": "
                           "\"disk\", \"size\": %d%s%s}%s%s}", DEV_SIZE,
                           *parts[0] ? ", " : "", parts[0],
                           *parts[1] ? ", " : "", parts[1]);
    /* The "blkdebug-under-align" run pads on an align node instead. */
    g_autofree char *padded = test_pad_filter_json(json);
    g_free(json);
    json = g_steal_pointer(&padded);

    *d = (TestDev) { 0 };
    d->ctx = strata_context_new(&err);
    g_assert_nonnull(d->ctx);
    d->node = strata_node_open_json(d->ctx, json, &err);
    if (!d->node) {
        g_error("opening %s: %s", json, strata_error_get_message(err));
    }
    if (test_pad_filter_is_align() && strstr(parts[1], "\"align\"")) {
        g_assert_cmpstr(strata_node_get_driver(d->node), ==, "align");
    }
    d->mem = strata_node_find(d->ctx, "disk");
    g_assert_nonnull(d->mem);
    d->be = strata_backend_new(d->node, "t",
                               STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE |
                               STRATA_PERM_RESIZE, STRATA_PERM_ALL, &err);
    g_assert_nonnull(d->be);
}

static void dev_check_violations(TestDev *d)
{
    MemCounters c;

    mem_get_counters(d->mem, &c);
    if (c.limit_violations) {
        g_error("%" PRIu64 " limit violations, last: %s", c.limit_violations,
                mem_last_violation(d->mem));
    }
}

static void dev_close(TestDev *d)
{
    dev_check_violations(d);
    strata_backend_free(d->be);
    strata_node_unref(d->node);
    strata_context_free(d->ctx);
}

/* Expect opening @json to fail with exactly @msg. */
static void expect_open_error(const char *json, const char *msg)
{
    g_autoptr(StrataError) err = NULL;
    StrataContext *ctx = strata_context_new(&err);
    StrataNode *node;

    g_assert_nonnull(ctx);
    node = strata_node_open_json(ctx, json, &err);
    if (node) {
        g_error("opening %s succeeded, expected: %s", json, msg);
    }
    g_assert_nonnull(err);
    g_assert_cmpstr(strata_error_get_message(err), ==, msg);
    strata_context_free(ctx);
}

/* Deterministic content: byte @x as written by writer @id. */
static uint8_t pat(uint32_t id, int64_t x)
{
    uint64_t h = ((uint64_t)id << 40) ^ (uint64_t)x;

    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return (uint8_t)h;
}

static uint8_t *pat_buf(uint32_t id, int64_t offset, size_t len)
{
    uint8_t *buf = g_malloc(len);

    for (size_t i = 0; i < len; i++) {
        buf[i] = pat(id, offset + (int64_t)i);
    }
    return buf;
}

/* Write pat(@id) over the whole device with aligned requests. */
static void dev_fill(TestDev *d, uint32_t id)
{
    g_autofree uint8_t *buf = pat_buf(id, 0, DEV_SIZE);

    g_assert_cmpint(strata_backend_pwrite(d->be, 0, buf, DEV_SIZE, 0), ==, 0);
}

static int dev_write(TestDev *d, uint32_t id, int64_t offset, size_t len)
{
    g_autofree uint8_t *buf = pat_buf(id, offset, len);

    return strata_backend_pwrite(d->be, offset, buf, len, 0);
}

static int dev_read(TestDev *d, int64_t offset, size_t len)
{
    g_autofree uint8_t *buf = g_malloc(len);

    return strata_backend_pread(d->be, offset, buf, len, 0);
}

/* A copy of the image's bytes, to compare after a failed write. */
static uint8_t *image_snapshot(TestDev *d)
{
    return g_memdup2(mem_get_data(d->mem), DEV_SIZE);
}

static void assert_image_equals(TestDev *d, const uint8_t *expect)
{
    const uint8_t *data = mem_get_data(d->mem);

    for (int64_t i = 0; i < DEV_SIZE; i++) {
        if (data[i] != expect[i]) {
            g_error("image differs at byte %" PRId64 ": 0x%02x, expected "
                    "0x%02x", i, data[i], expect[i]);
        }
    }
}

/* Requests of @type in mem's trace since the last clear. */
static int trace_count(StrataNode *mem, BlockReqType type)
{
    int n = 0;

    for (int i = 0; i < mem_trace_count(mem); i++) {
        MemTraceEntry e;
        g_assert_true(mem_trace_get(mem, i, &e));
        n += e.type == type;
    }
    return n;
}

static void trace_expect(StrataNode *mem, int i, BlockReqType type,
                         int64_t offset, int64_t bytes)
{
    MemTraceEntry e;

    g_assert_true(mem_trace_get(mem, i, &e));
    g_assert_cmpstr(block_req_type_names[e.type], ==, block_req_type_names[type]);
    g_assert_cmpint(e.offset, ==, offset);
    g_assert_cmpint(e.bytes, ==, bytes);
}

/* ---- coroutines ---------------------------------------------------------------- */

typedef struct CoCall {
    StrataNode *node;
    int event;
    int64_t offset, bytes;
    int ret;
    bool done;
} CoCall;

static void fire_entry(void *opaque)
{
    CoCall *c = opaque;

    node_co_debug_event(c->node, c->event);
    c->done = true;
}

/* Fire @event on @node, as a format above it would. */
static void fire_event(StrataNode *node, int event)
{
    CoCall c = { .node = node, .event = event };

    loop_co_spawn(node->ctx->loop, fire_entry, &c);
    while (!c.done) {
        loop_run_once(node->ctx->loop, true);
    }
}

static void read_entry(void *opaque)
{
    CoCall *c = opaque;
    g_autofree uint8_t *buf = g_malloc(c->bytes);
    IOVector v;

    iov_init_buf(&v, buf, c->bytes);
    c->ret = node_co_preadv(c->node, c->offset, c->bytes, &v, 0);
    iov_cleanup(&v);
    c->done = true;
}

static void status_entry(void *opaque)
{
    CoCall *c = opaque;
    int64_t pnum;

    c->ret = node_co_block_status(c->node, c->offset, c->bytes, &pnum);
    c->done = true;
}

/* Asynchronous backend writes, for interleaving at breakpoints. */
typedef struct AioWrite {
    struct iovec iov;
    uint8_t *buf;
    int64_t ret;
    bool done;
} AioWrite;

static void aio_write_cb(void *opaque, int64_t ret)
{
    AioWrite *w = opaque;

    w->ret = ret;
    w->done = true;
}

static void aio_write_start(TestDev *d, AioWrite *w, uint32_t id,
                            int64_t offset, size_t len)
{
    *w = (AioWrite) { .buf = pat_buf(id, offset, len) };
    w->iov = (struct iovec) { w->buf, len };
    g_assert_cmpint(strata_backend_aio_pwritev(d->be, offset, &w->iov, 1, 0,
                                               aio_write_cb, w), ==, 0);
}

static void aio_write_finish(TestDev *d, AioWrite *w)
{
    while (!w->done) {
        loop_run_once(d->ctx->loop, true);
    }
    g_assert_cmpint(w->ret, ==, 0);
    g_free(w->buf);
}

/* Run a handful of loop iterations: what can progress, does. */
static void run_a_while(TestDev *d)
{
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 20; i++) {
            loop_run_once(d->ctx->loop, false);
        }
        /* Let timers armed meanwhile (the filter's drain watch) expire. */
        g_usleep(2000);
    }
}

/* ---- options --------------------------------------------------------------------- */

static void test_open_defaults(void)
{
    TestDev d;
    StrataLimits l;

    dev_open(&d, "\"align\": 512, \"max-transfer\": 131072|");
    strata_node_get_limits(d.node, &l);
    /* Without align the filter passes everything; the image pads. */
    g_assert_cmpuint(l.request_alignment, ==, 1);
    g_assert_cmpint(l.max_transfer, ==, 131072);
    g_assert_cmpint(strata_node_get_length(d.node), ==, DEV_SIZE);
    g_assert_cmpint(blkdebug_get_state(d.node), ==, 1);
    g_assert_true(blkdebug_find(d.node) == d.node);
    g_assert_null(blkdebug_find(d.mem));
    g_assert_cmpint(blkdebug_get_state(d.mem), ==, -1);
    g_assert_cmpint(dev_write(&d, 1, 100, 1000), ==, 0);
    g_assert_cmpint(dev_read(&d, 100, 1000), ==, 0);
    dev_close(&d);
}

static void test_open_limits(void)
{
    TestDev d;
    StrataLimits l;

    dev_open(&d, "\"align\": 512|\"align\": 4096, \"max-transfer\": 65536, "
             "\"opt-write-zero\": 8192, \"max-write-zero\": 65536, "
             "\"opt-discard\": 16384, \"max-discard\": 1048576");
    strata_node_get_limits(d.node, &l);
    g_assert_cmpuint(l.request_alignment, ==, 4096);
    g_assert_cmpint(l.max_transfer, ==, 65536);
    g_assert_cmpuint(l.pwrite_zeroes_alignment, ==, 8192);
    g_assert_cmpint(l.max_pwrite_zeroes, ==, 65536);
    g_assert_cmpuint(l.pdiscard_alignment, ==, 16384);
    g_assert_cmpint(l.max_pdiscard, ==, 1048576);
    /* The image keeps its own. */
    strata_node_get_limits(d.mem, &l);
    g_assert_cmpuint(l.request_alignment, ==, 512);
    g_assert_cmpint(l.max_transfer, ==, 0);
    dev_close(&d);
}

/* An align below the image's is allowed (QEMU allows it too): the image's
 * entry pads again. */
static void test_open_align_below_image(void)
{
    TestDev d;
    StrataLimits l;
    g_autofree uint8_t *buf = NULL;

    dev_open(&d, "\"align\": 4096|\"align\": 512, \"max-transfer\": 8192");
    strata_node_get_limits(d.node, &l);
    g_assert_cmpuint(l.request_alignment, ==, 512);
    g_assert_cmpint(dev_write(&d, 7, 1536, 512), ==, 0);
    buf = g_malloc(512);
    g_assert_cmpint(strata_backend_pread(d.be, 1536, buf, 512, 0), ==, 0);
    for (int i = 0; i < 512; i++) {
        g_assert_cmpuint(buf[i], ==, pat(7, 1536 + i));
    }
    dev_close(&d);
}

#define BD(mem, extra) \
    "{\"driver\": \"blkdebug\", \"image\": {\"driver\": \"mem\", " \
    "\"size\": 1048576" mem "}" extra "}"

static void test_open_limit_errors(void)
{
    expect_open_error(BD("", ", \"align\": 3000"),
                      "align: must be a power of two");
    expect_open_error(BD("", ", \"align\": 4096, \"max-transfer\": 6144"),
                      "max-transfer: 6144 is not a multiple of align (4096)");
    expect_open_error(BD(", \"align\": 4096", ", \"max-transfer\": 1024"),
                      "max-transfer: 1024 is not a multiple of the image's "
                      "request alignment (4096)");
    /* The image's alignment governs even when align is smaller. */
    expect_open_error(BD(", \"align\": 4096",
                         ", \"align\": 512, \"max-transfer\": 2048"),
                      "max-transfer: 2048 is not a multiple of the image's "
                      "request alignment (4096)");
    expect_open_error(BD("", ", \"max-transfer\": 4294967296"),
                      "max-transfer: 4294967296 is larger than 2147479552");
    expect_open_error(BD("", ", \"opt-write-zero\": 12288"),
                      "opt-write-zero: 12288 is not a power of two");
    expect_open_error(BD("", ", \"align\": 4096, \"opt-write-zero\": 2048"),
                      "opt-write-zero: 2048 is not a multiple of align (4096)");
    expect_open_error(BD("", ", \"opt-write-zero\": 8192, "
                             "\"max-write-zero\": 12288"),
                      "max-write-zero: 12288 is not a multiple of "
                      "opt-write-zero (8192)");
    expect_open_error(BD("", ", \"align\": 4096, \"max-write-zero\": 6144"),
                      "max-write-zero: 6144 is not a multiple of align (4096)");
    expect_open_error(BD("", ", \"opt-discard\": 24576"),
                      "opt-discard: 24576 is not a power of two");
    expect_open_error(BD(", \"align\": 8192", ", \"opt-discard\": 4096"),
                      "opt-discard: 4096 is not a multiple of the image's "
                      "request alignment (8192)");
    expect_open_error(BD("", ", \"opt-discard\": 8192, \"max-discard\": 4096"),
                      "max-discard: 4096 is not a multiple of opt-discard "
                      "(8192)");
    expect_open_error(BD("", ", \"align\": 4096, \"max-discard\": 512"),
                      "max-discard: 512 is not a multiple of align (4096)");
    expect_open_error("{\"driver\": \"blkdebug\"}", "image: missing");
    expect_open_error("{\"driver\": \"blkdebug\", \"image\": \"nosuch\"}",
                      "image: no node named 'nosuch'");
}

static void test_open_rule_errors(void)
{
    g_autofree char *names = NULL;
    g_autofree char *msg = NULL;
    GString *s = g_string_new(NULL);

    for (int i = 0; i < DBG__MAX; i++) {
        g_string_append_printf(s, "%s%s", i ? ", " : "", debug_event_names[i]);
    }
    names = g_string_free(s, false);
    msg = g_strdup_printf("inject-error.1.event: unknown event 'l1_update' "
                          "(expected one of %s)", names);
    expect_open_error(BD("", ", \"inject-error\": [{\"event\": \"none\"}, "
                             "{\"event\": \"l1_update\"}]"), msg);
    expect_open_error(BD("", ", \"inject-error\": [{\"state\": 1}]"),
                      "inject-error.0.event: missing");
    expect_open_error(BD("", ", \"inject-error\": [{\"event\": \"none\", "
                             "\"errno\": 0}]"),
                      "inject-error.0.errno: must be at least 1");
    expect_open_error(BD("", ", \"inject-error\": [{\"event\": \"none\", "
                             "\"iotype\": \"trim\"}]"),
                      "inject-error.0.iotype: expected one of read, write, "
                      "write-zeroes, discard, flush, block-status");
    expect_open_error(BD("", ", \"inject-error\": [{\"event\": \"none\", "
                             "\"sector\": -2}]"),
                      "inject-error.0.sector: must be at least -1");
    expect_open_error(BD("", ", \"inject-error\": [{\"event\": \"none\", "
                             "\"sector\": 9223372036854775807}]"),
                      "inject-error.0.sector: 9223372036854775807 is not "
                      "between -1 and 9007199254740992");
    expect_open_error(BD("", ", \"set-state\": [{\"event\": \"none\"}]"),
                      "set-state.0.new_state: missing");
    expect_open_error(BD("", ", \"set-state\": [{\"event\": \"none\", "
                             "\"new_state\": 2, \"errno\": 5}]"),
                      "set-state.0.errno: unknown option");
}

/* The same rule as dotted keys, the form QEMU's command line uses. */
static void test_open_dotted_keys(void)
{
    g_autoptr(StrataError) err = NULL;
    StrataContext *ctx = strata_context_new(&err);
    StrataNode *node;
    StrataBackend *be;
    uint8_t buf[512] = { 0 };

    node = strata_node_open_dotted(ctx, "driver=blkdebug,image.driver=mem,"
                                   "image.size=64k,inject-error.0.event=none,"
                                   "inject-error.0.errno=28,"
                                   "inject-error.0.iotype=read,"
                                   "set-state.0.event=pwritev_done,"
                                   "set-state.0.new_state=3", &err);
    if (!node) {
        g_error("%s", strata_error_get_message(err));
    }
    be = strata_backend_new(node, "t", STRATA_PERM_CONSISTENT_READ |
                            STRATA_PERM_WRITE, STRATA_PERM_ALL, &err);
    g_assert_nonnull(be);
    g_assert_cmpint(strata_backend_pread(be, 0, buf, 512, 0), ==, -ENOSPC);
    g_assert_cmpint(blkdebug_get_state(node), ==, 1);
    g_assert_cmpint(strata_backend_pwrite(be, 0, buf, 512, 0), ==, 0);
    g_assert_cmpint(blkdebug_get_state(node), ==, 3);
    strata_backend_free(be);
    strata_node_unref(node);
    strata_context_free(ctx);
}

/* ---- the rules file --------------------------------------------------------------- */

static char *write_config(const char *text)
{
    g_autoptr(GError) gerr = NULL;
    char *path = NULL;
    int fd = g_file_open_tmp("blkdebug-XXXXXX.conf", &path, &gerr);

    g_assert_no_error(gerr);
    g_assert_cmpint(write(fd, text, strlen(text)), ==, (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_config_file(void)
{
    g_autofree char *path = write_config(
        "# Fail writes to the second 4k block from the start,\n"
        "# reads once state 2 is reached.\n"
        "\n"
        "[inject-error]\n"
        "event = \"none\"\n"
        "iotype = \"write\"\n"
        "sector = \"8\"\n"
        "errno = \"28\"\n"
        "\n"
        "  [set-state \"go\"]\n"
        "  event = \"pwritev_done\"\n"
        "  state = \"1\"\n"
        "  new_state = \"2\"\n"
        "\n"
        "[inject-error]\n"
        "event = pwritev_done\n"
        "state = 2\n"
        "iotype = read\n"
        "once = on\n");
    TestDev d;

    dev_open(&d, "|\"config\": \"%s\"", path);
    g_assert_cmpint(blkdebug_get_state(d.node), ==, 1);
    g_assert_cmpint(dev_write(&d, 1, 4096, 512), ==, -ENOSPC);
    /* pwritev_done fires even when the write failed: in state 1, so the
     * state-2 rule stayed idle. */
    g_assert_cmpint(blkdebug_get_state(d.node), ==, 2);
    g_assert_cmpint(dev_read(&d, 0, 8192), ==, 0);
    g_assert_cmpint(dev_write(&d, 1, 0, 512), ==, 0);
    /* Now it fired in state 2: its rule replaced the active set, so writes
     * to sector 8 pass and one read fails. */
    g_assert_cmpint(dev_write(&d, 1, 4096, 512), ==, 0);
    g_assert_cmpint(dev_read(&d, 0, 4096), ==, -EIO);
    g_assert_cmpint(dev_read(&d, 0, 4096), ==, 0);
    g_assert_cmpint(blkdebug_get_state(d.node), ==, 2);
    dev_close(&d);
    unlink(path);
}

/* Expect the rules file @text to be refused with "<file>:<line>: <msg>". */
static void expect_config_error(const char *text, int line, const char *msg)
{
    g_autofree char *path = write_config(text);
    g_autofree char *json = g_strdup_printf(BD("", ", \"config\": \"%s\""),
                                            path);
    g_autofree char *full = g_strdup_printf("%s:%d: %s", path, line, msg);

    expect_open_error(json, full);
    unlink(path);
}

static void test_config_errors(void)
{
    g_autoptr(StrataError) err = NULL;
    StrataContext *ctx;

    expect_config_error("[inject-error]\nevent = \"none\"\n[foo]\n", 3,
                        "unknown section 'foo' (expected inject-error or "
                        "set-state)");
    expect_config_error("event = \"none\"\n", 1, "'event' outside a section");
    expect_config_error("[set-state]\nevent = \"none\n", 2,
                        "expected 'key = \"value\"'");
    expect_config_error("[set-state]\nevent\n", 2,
                        "expected 'key = \"value\"'");
    expect_config_error("[set-state\n", 1, "expected '[section]'");
    expect_config_error("\n[inject-error]\nevent = \"none\"\n"
                        "secotr = \"1\"\n", 2, "secotr: unknown option");
    expect_config_error("[inject-error]\nevent = \"none\"\nerrno = \"x\"\n",
                        1, "errno: expected integer, got string 'x'");
    expect_config_error("[inject-error]\nevent = \"none\"\n"
                        "errno = \"5000\"\n", 1,
                        "errno: 5000 is not between 1 and 4095");
    expect_config_error("[set-state]\nevent = \"none\"\n", 1,
                        "new_state: missing");

    /* A missing file is named with its errno. */
    ctx = strata_context_new(&err);
    g_assert_null(strata_node_open_json(ctx, BD("", ", \"config\": "
                                                "\"/nonexistent/rules\""),
                                        &err));
    g_assert_cmpstr(strata_error_get_message(err), ==,
                    "config: cannot open '/nonexistent/rules': No such file "
                    "or directory");
    g_assert_cmpint(strata_error_get_errno(err), ==, ENOENT);
    strata_context_free(ctx);
}

/* ---- rule fields ------------------------------------------------------------------- */

static void test_rule_none_active_from_open(void)
{
    TestDev d;

    dev_open(&d, "|\"inject-error\": [{\"event\": \"none\"}]");
    g_assert_cmpint(dev_read(&d, 0, 512), ==, -EIO);
    g_assert_cmpint(dev_write(&d, 1, 0, 512), ==, -EIO);
    g_assert_cmpint(mem_trace_total(d.mem), ==, 0);
    dev_close(&d);
}

static void test_rule_errno(void)
{
    TestDev d;

    dev_open(&d, "|\"inject-error\": [{\"event\": \"none\", \"errno\": 122}]");
    g_assert_cmpint(dev_read(&d, 0, 512), ==, -EDQUOT);
    dev_close(&d);
}

typedef struct IotypeCase {
    const char *iotype;         /* NULL: the default */
    bool read, write, zeroes, discard, flush, status;
} IotypeCase;

static const IotypeCase iotype_cases[] = {
    { NULL, true, true, true, true, true, false },
    { "read", .read = true },
    { "write", .write = true },
    { "write-zeroes", .zeroes = true },
    { "discard", .discard = true },
    { "flush", .flush = true },
    { "block-status", .status = true },
};

static void test_rule_iotype(gconstpointer opaque)
{
    const IotypeCase *c = opaque;
    g_autofree char *iotype = c->iotype
        ? g_strdup_printf(", \"iotype\": \"%s\"", c->iotype) : g_strdup("");
    CoCall call;
    int64_t pnum;
    TestDev d;

    dev_open(&d, "\"discard\": \"unmap\"|\"discard\": \"unmap\", "
             "\"inject-error\": [{\"event\": \"flush_to_os\", "
             "\"errno\": 28%s}]", iotype);
    /* Before the event nothing fails. */
    g_assert_cmpint(dev_write(&d, 1, 0, 4096), ==, 0);
    /* The flush fires the event, the rule applies from then on (a flush
     * rule fails this very flush: flush_to_os comes before the driver). */
    g_assert_cmpint(strata_backend_flush(d.be), ==, c->flush ? -ENOSPC : 0);

    g_assert_cmpint(dev_read(&d, 0, 4096), ==, c->read ? -ENOSPC : 0);
    g_assert_cmpint(dev_write(&d, 2, 0, 4096), ==, c->write ? -ENOSPC : 0);
    g_assert_cmpint(strata_backend_pwrite_zeroes(d.be, 0, 4096, 0), ==,
                    c->zeroes ? -ENOSPC : 0);
    g_assert_cmpint(strata_backend_pdiscard(d.be, 0, 4096), ==,
                    c->discard ? -ENOSPC : 0);
    g_assert_cmpint(strata_backend_block_status(d.be, 65536, 4096, &pnum), ==,
                    c->status ? -ENOSPC : (int)STRATA_BLOCK_ZERO);
    /* Writes since the last flush make the next one reach the filter; a
     * failed flush stays failed (-EIO) without cache.direct, as a host page
     * cache that lost writes would. */
    if (!c->write && !c->zeroes) {
        g_assert_cmpint(strata_backend_flush(d.be), ==, c->flush ? -EIO : 0);
    }
    /* Block status also directly, without the backend. */
    call = (CoCall) { .node = d.node, .offset = 65536, .bytes = 4096 };
    loop_co_spawn(d.ctx->loop, status_entry, &call);
    while (!call.done) {
        loop_run_once(d.ctx->loop, true);
    }
    g_assert_cmpint(call.ret, ==, c->status ? -ENOSPC : (int)STRATA_BLOCK_ZERO);
    dev_close(&d);
}

static void test_rule_sector(void)
{
    TestDev d;

    dev_open(&d, "|\"inject-error\": [{\"event\": \"none\", \"sector\": 8, "
             "\"iotype\": \"read\"}]");
    g_assert_cmpint(dev_read(&d, 0, 4096), ==, 0);
    g_assert_cmpint(dev_read(&d, 4096 + 512, 4096), ==, 0);
    g_assert_cmpint(dev_read(&d, 4096, 1), ==, -EIO);
    g_assert_cmpint(dev_read(&d, 0, 4097), ==, -EIO);
    g_assert_cmpint(dev_read(&d, 4000, 200), ==, -EIO);
    dev_close(&d);

    /* A flush has no range: only rules without a sector match it. */
    dev_open(&d, "|\"inject-error\": [{\"event\": \"none\", \"sector\": 0, "
             "\"iotype\": \"flush\"}]");
    g_assert_cmpint(dev_write(&d, 1, 0, 512), ==, 0);
    g_assert_cmpint(strata_backend_flush(d.be), ==, 0);
    dev_close(&d);
}

static void test_rule_once(void)
{
    TestDev d;

    dev_open(&d, "|\"inject-error\": [{\"event\": \"pwritev_zero\", "
             "\"iotype\": \"read\", \"once\": true}, "
             "{\"event\": \"pwritev_zero\", \"iotype\": \"read\", "
             "\"errno\": 28}]");
    g_assert_cmpint(dev_read(&d, 0, 512), ==, 0);
    g_assert_cmpint(strata_backend_pwrite_zeroes(d.be, 0, 512, 0), ==, 0);
    /* The once rule comes first, fails one read and is gone; the second
     * rule then applies for good. */
    g_assert_cmpint(dev_read(&d, 0, 512), ==, -EIO);
    g_assert_cmpint(dev_read(&d, 0, 512), ==, -ENOSPC);
    g_assert_cmpint(dev_read(&d, 0, 512), ==, -ENOSPC);
    /* Firing the event again does not bring the once rule back. */
    g_assert_cmpint(strata_backend_pwrite_zeroes(d.be, 0, 512, 0), ==, 0);
    g_assert_cmpint(dev_read(&d, 0, 512), ==, -ENOSPC);
    dev_close(&d);
}

/* Without immediately the error comes after one trip through the loop;
 * with it, before the request first yields. */
static void test_rule_immediately(void)
{
    for (int imm = 0; imm < 2; imm++) {
        CoCall c;
        Coroutine *co;
        TestDev d;

        dev_open(&d, "|\"inject-error\": [{\"event\": \"none\", "
                 "\"immediately\": %s}]", imm ? "true" : "false");
        c = (CoCall) { .node = d.node, .offset = 0, .bytes = 512 };
        co = co_create(read_entry, &c);
        co_enter(co);
        g_assert_cmpint(c.done, ==, imm);
        while (!c.done) {
            loop_run_once(d.ctx->loop, true);
        }
        g_assert_cmpint(c.ret, ==, -EIO);
        dev_close(&d);
    }
}

/* An event with inject-error rules replaces the active set; an event
 * without any leaves it alone. */
static void test_rule_active_set(void)
{
    TestDev d;

    dev_open(&d, "|\"inject-error\": ["
             "{\"event\": \"read_aio\", \"iotype\": \"read\", \"errno\": 28}, "
             "{\"event\": \"write_aio\", \"iotype\": \"write\", \"errno\": 122}, "
             "{\"event\": \"write_aio\", \"iotype\": \"read\", \"errno\": 5}]");
    g_assert_cmpint(dev_read(&d, 0, 512), ==, 0);
    fire_event(d.node, DBG_READ_AIO);
    g_assert_cmpint(dev_read(&d, 0, 512), ==, -ENOSPC);
    g_assert_cmpint(dev_write(&d, 1, 0, 512), ==, 0);
    fire_event(d.node, DBG_WRITE_AIO);
    /* Both write_aio rules are active, in definition order; read_aio's is
     * not any more. */
    g_assert_cmpint(dev_write(&d, 1, 0, 512), ==, -EDQUOT);
    g_assert_cmpint(dev_read(&d, 0, 512), ==, -EIO);
    fire_event(d.node, DBG_FLUSH_TO_DISK);
    g_assert_cmpint(dev_read(&d, 0, 512), ==, -EIO);
    dev_close(&d);
}

/* ---- states ----------------------------------------------------------------------- */

static void test_state_transitions(void)
{
    TestDev d;

    dev_open(&d, "|"
             "\"set-state\": ["
             "  {\"event\": \"read_aio\", \"state\": 1, \"new_state\": 2},"
             "  {\"event\": \"read_aio\", \"state\": 2, \"new_state\": 3},"
             "  {\"event\": \"write_aio\", \"new_state\": 7},"
             "  {\"event\": \"write_aio\", \"new_state\": 8}],"
             "\"inject-error\": ["
             "  {\"event\": \"read_aio\", \"state\": 2, \"iotype\": \"read\"},"
             "  {\"event\": \"read_aio\", \"state\": 3, \"iotype\": \"write\"}]");
    g_assert_cmpint(blkdebug_get_state(d.node), ==, 1);
    /* Rules are judged against the state the event found: one step per
     * event, and the inject rule of state 2 does not act yet. */
    fire_event(d.node, DBG_READ_AIO);
    g_assert_cmpint(blkdebug_get_state(d.node), ==, 2);
    g_assert_cmpint(dev_read(&d, 0, 512), ==, 0);
    fire_event(d.node, DBG_READ_AIO);
    g_assert_cmpint(blkdebug_get_state(d.node), ==, 3);
    g_assert_cmpint(dev_read(&d, 0, 512), ==, -EIO);
    g_assert_cmpint(dev_write(&d, 1, 0, 512), ==, 0);
    fire_event(d.node, DBG_READ_AIO);
    g_assert_cmpint(blkdebug_get_state(d.node), ==, 3);
    g_assert_cmpint(dev_read(&d, 0, 512), ==, 0);
    g_assert_cmpint(dev_write(&d, 1, 0, 512), ==, -EIO);
    /* State 0 means any state; of two matching rules the first wins. */
    fire_event(d.node, DBG_WRITE_AIO);
    g_assert_cmpint(blkdebug_get_state(d.node), ==, 7);
    fire_event(d.node, DBG_WRITE_AIO);
    g_assert_cmpint(blkdebug_get_state(d.node), ==, 7);
    dev_close(&d);
}

/* ---- events of the RMW path ------------------------------------------------------------ */

/*
 * The events of an unaligned write fire on the filter in QEMU's order for
 * each padding shape (its bdrv_padding_rmw_read): the edges are read in one
 * request when the write lies in one block or spans exactly two blocks with
 * both ends unaligned (head, then tail event; the read; after_head, then
 * after_tail), else the head block and then the tail block, each between
 * its own pair of events.  A chain of set-state rules proves the order:
 * event i moves state i + 1 to i + 2, and any event out of turn moves the
 * filter to state 99.  mem's trace shows the reads.
 */
typedef struct EventOrderCase {
    const char *name;
    int64_t offset, bytes;
    bool zeroes;
    const char *events;         /* H AH T AT W (pwritev) Z (pwritev_zero) D (done) */
    int64_t reads[2][2];        /* RMW reads reaching mem: offset, bytes */
} EventOrderCase;

static const EventOrderCase event_order_cases[] = {
    { "head-only", 1024, 7168, false, "H AH W D", { { 0, 4096 } } },
    { "head-only-one-block", 1024, 3072, false, "H AH W D", { { 0, 4096 } } },
    { "tail-only", 0, 4608, false, "T AT W D", { { 4096, 4096 } } },
    { "tail-only-one-block", 4096, 512, false, "T AT W D", { { 4096, 4096 } } },
    { "inside-one-block", 512, 512, false, "H T AH AT W D", { { 0, 4096 } } },
    { "merged-two-blocks", 512, 4096, false, "H T AH AT W D", { { 0, 8192 } } },
    { "merged-two-blocks-wide", 1024, 6144, false, "H T AH AT W D",
      { { 0, 8192 } } },
    { "separate-blocks", 512, 8192, false, "H AH T AT W D",
      { { 0, 4096 }, { 8192, 4096 } } },
    { "zeroes-inside-one-block", 512, 512, true, "H T AH AT W D",
      { { 0, 4096 } } },
    { "zeroes-merged-two-blocks", 512, 4096, true, "H T AH AT W D",
      { { 0, 8192 } } },
};

static const struct {
    const char *code, *event;
} event_codes[] = {
    { "H", "pwritev_rmw_head" }, { "AH", "pwritev_rmw_after_head" },
    { "T", "pwritev_rmw_tail" }, { "AT", "pwritev_rmw_after_tail" },
    { "W", "pwritev" }, { "Z", "pwritev_zero" }, { "D", "pwritev_done" },
};

static const char *event_of_code(const char *code)
{
    for (unsigned i = 0; i < G_N_ELEMENTS(event_codes); i++) {
        if (!strcmp(event_codes[i].code, code)) {
            return event_codes[i].event;
        }
    }
    g_assert_not_reached();
}

static void test_rmw_event_order(gconstpointer opaque)
{
    const EventOrderCase *c = opaque;
    g_auto(GStrv) codes = g_strsplit(c->events, " ", -1);
    GString *rules = g_string_new("\"rmw-coalesce\": false, \"align\": 4096, "
                                  "\"set-state\": [");
    g_autofree char *extra = NULL;
    guint n = g_strv_length(codes);
    int nreads = 0;
    TestDev d;

    /* The chain first: of several matching set-state rules the first
     * defined wins, so the catch-alls only act on events out of turn. */
    for (guint i = 0; i < n; i++) {
        g_string_append_printf(rules, "{\"event\": \"%s\", \"state\": %u, "
                               "\"new_state\": %u}, ", event_of_code(codes[i]),
                               i + 1, i + 2);
    }
    for (unsigned i = 0; i < G_N_ELEMENTS(event_codes); i++) {
        g_string_append_printf(rules, "%s{\"event\": \"%s\", \"new_state\": 99}",
                               i ? ", " : "", event_codes[i].event);
    }
    g_string_append(rules, "]");
    extra = g_string_free(rules, false);
    dev_open(&d, "\"align\": 512|%s", extra);
    mem_trace_clear(d.mem);
    if (c->zeroes) {
        g_assert_cmpint(strata_backend_pwrite_zeroes(d.be, c->offset, c->bytes,
                                                     0), ==, 0);
    } else {
        g_assert_cmpint(dev_write(&d, 2, c->offset, c->bytes), ==, 0);
    }
    g_assert_cmpint(blkdebug_get_state(d.node), ==, n + 1);
    for (int i = 0; i < 2 && c->reads[i][1]; i++) {
        trace_expect(d.mem, i, REQ_READ, c->reads[i][0], c->reads[i][1]);
        nreads++;
    }
    g_assert_cmpint(trace_count(d.mem, REQ_READ), ==, nreads);
    dev_close(&d);
}

typedef struct RmwCase {
    const char *shape;
    int64_t offset, bytes;
    const char *event;
    int mem_reads;              /* reads that reached the image */
} RmwCase;

/* Edges in blocks 0 and 2 (two reads), in neighbouring blocks 0 and 1 (one
 * merged read), and a tail alone in one block. */
static const RmwCase rmw_cases[] = {
    { "separate", 1024, 10240, "pwritev_rmw_head", 0 },
    { "separate", 1024, 10240, "pwritev_rmw_after_head", 1 },
    { "separate", 1024, 10240, "pwritev_rmw_tail", 1 },
    { "separate", 1024, 10240, "pwritev_rmw_after_tail", 2 },
    { "separate", 1024, 10240, "pwritev", 2 },
    { "merged", 1024, 6144, "pwritev_rmw_head", 0 },
    { "merged", 1024, 6144, "pwritev_rmw_tail", 0 },
    { "merged", 1024, 6144, "pwritev_rmw_after_head", 1 },
    { "merged", 1024, 6144, "pwritev_rmw_after_tail", 1 },
    { "merged", 1024, 6144, "pwritev", 1 },
    { "tail-one-block", 4096, 512, "pwritev_rmw_tail", 0 },
    { "tail-one-block", 4096, 512, "pwritev_rmw_after_tail", 1 },
};

/* An error injected at any point of the RMW fails the write and leaves
 * every byte of the image as it was. */
static void test_rmw_error_at(gconstpointer opaque)
{
    const RmwCase *c = opaque;
    g_autofree uint8_t *before = NULL;
    TestDev d;

    for (int imm = 0; imm < 2; imm++) {
        /* Armed in state 2 only, so that filling the image passes. */
        dev_open(&d, "\"align\": 512|\"align\": 4096, \"rmw-coalesce\": false, "
                 "\"inject-error\": [{\"event\": \"%s\", \"errno\": 28, "
                 "\"state\": 2, \"immediately\": %s}], "
                 "\"set-state\": [{\"event\": \"read_aio\", \"new_state\": 2}]",
                 c->event, imm ? "true" : "false");
        dev_fill(&d, 1);
        fire_event(d.node, DBG_READ_AIO);
        g_free(before);
        before = image_snapshot(&d);
        mem_trace_clear(d.mem);
        g_assert_cmpint(dev_write(&d, 2, c->offset, c->bytes), ==, -ENOSPC);
        assert_image_equals(&d, before);
        g_assert_cmpint(trace_count(d.mem, REQ_READ), ==, c->mem_reads);
        g_assert_cmpint(trace_count(d.mem, REQ_WRITE), ==, 0);
        dev_close(&d);
    }
}

/* pwritev_done comes after the data is written: the write succeeds and the
 * rule fails what follows. */
static void test_rmw_error_after_done(void)
{
    g_autofree uint8_t *before = NULL;
    g_autofree uint8_t *buf = g_malloc(6144);
    TestDev d;

    dev_open(&d, "\"align\": 512|\"align\": 4096, \"rmw-coalesce\": false, "
             "\"inject-error\": [{\"event\": \"pwritev_done\", "
             "\"errno\": 28, \"state\": 2}], "
             "\"set-state\": [{\"event\": \"read_aio\", \"new_state\": 2}]");
    dev_fill(&d, 1);
    fire_event(d.node, DBG_READ_AIO);
    g_assert_cmpint(dev_write(&d, 2, 1024, 6144), ==, 0);
    g_assert_cmpint(strata_backend_pread(d.be, 1024, buf, 6144, 0), ==, -ENOSPC);
    before = image_snapshot(&d);
    for (int i = 0; i < 6144; i++) {
        g_assert_cmpuint(before[1024 + i], ==, pat(2, 1024 + i));
    }
    g_assert_cmpuint(before[1023], ==, pat(1, 1023));
    g_assert_cmpuint(before[7168], ==, pat(1, 7168));
    g_assert_cmpint(dev_write(&d, 3, 1024, 6144), ==, -ENOSPC);
    assert_image_equals(&d, before);
    dev_close(&d);
}

/* ---- breakpoints ---------------------------------------------------------------------- */

static void expect_image_bytes(TestDev *d, int64_t offset, size_t len,
                               uint32_t id)
{
    const uint8_t *data = mem_get_data(d->mem);

    for (size_t i = 0; i < len; i++) {
        g_assert_cmpuint(data[offset + i], ==, pat(id, offset + (int64_t)i));
    }
}

/* Two sub-block writes to one block: the second waits until the first
 * has written its block back, then does its own RMW. */
static void test_break_same_block_serialises(void)
{
    g_autoptr(StrataError) err = NULL;
    AioWrite w1, w2;
    StrataStats st;
    TestDev d;

    dev_open(&d, "\"align\": 512|\"align\": 4096, \"rmw-coalesce\": false");
    dev_fill(&d, 1);
    mem_trace_clear(d.mem);

    g_assert_true(blkdebug_break(d.node, "pwritev_rmw_after_head", "A", &err));
    aio_write_start(&d, &w1, 2, 512, 512);
    g_assert_true(blkdebug_wait_break(d.node, "A"));
    g_assert_true(blkdebug_is_suspended(d.node, "A"));

    g_assert_true(blkdebug_break(d.node, "pwritev_rmw_head", "B", &err));
    aio_write_start(&d, &w2, 3, 1536, 512);
    run_a_while(&d);
    g_assert_false(w2.done);
    g_assert_false(blkdebug_is_suspended(d.node, "B"));
    strata_node_get_stats(d.node, &st);
    g_assert_cmpuint(st.serialising_waits, ==, 1);
    /* Only the first write's head read reached the image. */
    g_assert_cmpint(mem_trace_count(d.mem), ==, 1);

    g_assert_true(blkdebug_resume(d.node, "A", &err));
    g_assert_true(blkdebug_wait_break(d.node, "B"));
    /* The first write is on the image before the second reads it. */
    expect_image_bytes(&d, 512, 512, 2);
    g_assert_cmpint(trace_count(d.mem, REQ_WRITE), ==, 1);
    g_assert_cmpint(trace_count(d.mem, REQ_READ), ==, 1);
    g_assert_true(blkdebug_resume(d.node, "B", &err));
    aio_write_finish(&d, &w1);
    aio_write_finish(&d, &w2);

    expect_image_bytes(&d, 0, 512, 1);
    expect_image_bytes(&d, 512, 512, 2);
    expect_image_bytes(&d, 1024, 512, 1);
    expect_image_bytes(&d, 1536, 512, 3);
    expect_image_bytes(&d, 2048, 2048, 1);
    g_assert_cmpint(trace_count(d.mem, REQ_READ), ==, 2);
    g_assert_cmpint(trace_count(d.mem, REQ_WRITE), ==, 2);
    dev_close(&d);
}

/* Sub-block writes to neighbouring blocks do not wait for each other:
 * both are held inside their RMW at once. */
static void test_break_neighbours_proceed(void)
{
    g_autoptr(StrataError) err = NULL;
    AioWrite w1, w2;
    StrataStats st;
    TestDev d;

    dev_open(&d, "\"align\": 512|\"align\": 4096, \"rmw-coalesce\": false");
    dev_fill(&d, 1);

    g_assert_true(blkdebug_break(d.node, "pwritev_rmw_after_head", "A", &err));
    aio_write_start(&d, &w1, 2, 3584, 512);
    g_assert_true(blkdebug_wait_break(d.node, "A"));
    /* A write from the start of a block has only a tail (QEMU's events). */
    g_assert_true(blkdebug_break(d.node, "pwritev_rmw_after_tail", "B", &err));
    aio_write_start(&d, &w2, 3, 4096, 512);
    g_assert_true(blkdebug_wait_break(d.node, "B"));
    g_assert_true(blkdebug_is_suspended(d.node, "A"));
    strata_node_get_stats(d.node, &st);
    g_assert_cmpuint(st.serialising_waits, ==, 0);

    /* Resume in the other order: nothing orders them. */
    g_assert_true(blkdebug_resume(d.node, "B", &err));
    aio_write_finish(&d, &w2);
    g_assert_false(w1.done);
    g_assert_true(blkdebug_resume(d.node, "A", &err));
    aio_write_finish(&d, &w1);
    expect_image_bytes(&d, 0, 3584, 1);
    expect_image_bytes(&d, 3584, 512, 2);
    expect_image_bytes(&d, 4096, 512, 3);
    expect_image_bytes(&d, 4608, 4096, 1);
    dev_close(&d);
}

static void test_break_api_errors(void)
{
    g_autoptr(StrataError) err = NULL;
    TestDev d;

    dev_open(&d, "|");
    g_assert_false(blkdebug_break(d.node, "l2_load", "A", &err));
    g_assert_nonnull(strstr(strata_error_get_message(err),
                            "Unknown event 'l2_load' (expected one of none, "));
    g_clear_pointer(&err, error_free);
    g_assert_false(blkdebug_resume(d.node, "A", &err));
    g_assert_cmpstr(strata_error_get_message(err), ==,
                    "No request suspended with tag 'A'");
    g_assert_cmpint(strata_error_get_class(err), ==, STRATA_ERROR_NOT_FOUND);
    g_clear_pointer(&err, error_free);
    g_assert_false(blkdebug_remove_break(d.node, "A", &err));
    g_assert_cmpstr(strata_error_get_message(err), ==,
                    "No breakpoint and no suspended request with tag 'A'");
    g_clear_pointer(&err, error_free);
    g_assert_false(blkdebug_break(d.mem, "pwritev", "A", &err));
    g_assert_cmpstr(strata_error_get_message(err), ==,
                    "No blkdebug node at or below node 'disk'");
    g_clear_pointer(&err, error_free);
    /* Nothing pending: waiting would never end. */
    g_assert_false(blkdebug_wait_break(d.node, "A"));
    g_assert_false(blkdebug_is_suspended(d.node, "A"));
    /* A breakpoint removed before it fires. */
    g_assert_true(blkdebug_break(d.node, "pwritev", "A", &err));
    g_assert_true(blkdebug_remove_break(d.node, "A", &err));
    g_assert_false(blkdebug_wait_break(d.node, "A"));
    g_assert_cmpint(dev_write(&d, 1, 0, 512), ==, 0);
    dev_close(&d);
}

/* remove_break resumes what is held; breakpoints are one-shot. */
static void test_break_remove_resumes(void)
{
    g_autoptr(StrataError) err = NULL;
    AioWrite w1, w2;
    TestDev d;

    dev_open(&d, "|");
    g_assert_true(blkdebug_break(d.node, "pwritev", "A", &err));
    g_assert_true(blkdebug_break(d.node, "pwritev_done", "A", &err));
    aio_write_start(&d, &w1, 2, 0, 4096);
    g_assert_true(blkdebug_wait_break(d.node, "A"));
    g_assert_true(blkdebug_remove_break(d.node, "A", &err));
    aio_write_finish(&d, &w1);
    g_assert_false(blkdebug_is_suspended(d.node, "A"));
    /* The pwritev_done breakpoint went with the tag; the pwritev one fired
     * once and is gone: this write is not held. */
    aio_write_start(&d, &w2, 3, 0, 4096);
    aio_write_finish(&d, &w2);
    expect_image_bytes(&d, 0, 4096, 3);
    dev_close(&d);
}

static void notify_log(void *opaque, const char *tag, bool suspended)
{
    g_string_append_printf(opaque, "%s %s;", suspended ? "suspend" : "resume",
                           tag);
}

/* Two breakpoints of one event hold the request until both are resumed. */
static void test_break_two_tags(void)
{
    g_autoptr(StrataError) err = NULL;
    GString *log = g_string_new(NULL);
    AioWrite w;
    TestDev d;

    dev_open(&d, "|");
    blkdebug_set_notify(d.node, notify_log, log);
    g_assert_true(blkdebug_break(d.node, "pwritev", "A", &err));
    g_assert_true(blkdebug_break(d.node, "pwritev", "B", &err));
    aio_write_start(&d, &w, 2, 0, 4096);
    g_assert_true(blkdebug_wait_break(d.node, "A"));
    g_assert_true(blkdebug_is_suspended(d.node, "B"));
    g_assert_true(blkdebug_resume(d.node, "B", &err));
    run_a_while(&d);
    g_assert_false(w.done);
    g_assert_true(blkdebug_resume(d.node, "A", &err));
    aio_write_finish(&d, &w);
    g_assert_cmpstr(log->str, ==, "suspend A;suspend B;resume B;resume A;");
    g_string_free(log, true);
    dev_close(&d);
}

/* A drained section over the filter releases held requests instead of
 * waiting for a resume nobody sends. */
static void test_break_drain_releases(void)
{
    g_autoptr(StrataError) err = NULL;
    AioWrite w;
    TestDev d;

    dev_open(&d, "\"align\": 512|\"align\": 4096");
    g_assert_true(blkdebug_break(d.node, "pwritev_rmw_after_head", "A", &err));
    aio_write_start(&d, &w, 2, 512, 512);
    g_assert_true(blkdebug_wait_break(d.node, "A"));
    node_drain_begin(d.node);
    g_assert_true(w.done);
    g_assert_cmpint(w.ret, ==, 0);
    g_assert_false(blkdebug_is_suspended(d.node, "A"));
    node_drain_end(d.node);
    aio_write_finish(&d, &w);
    expect_image_bytes(&d, 512, 512, 2);
    dev_close(&d);
}

typedef struct CoWait {
    StrataNode *node;
    bool result;
    bool done;
} CoWait;

static void co_wait_entry(void *opaque)
{
    CoWait *c = opaque;

    c->result = blkdebug_co_wait_break(c->node, "A");
    c->done = true;
}

static void test_break_co_wait(void)
{
    g_autoptr(StrataError) err = NULL;
    CoWait c;
    AioWrite w;
    TestDev d;

    dev_open(&d, "|");
    g_assert_true(blkdebug_break(d.node, "pwritev", "A", &err));
    c = (CoWait) { .node = d.node };
    loop_co_spawn(d.ctx->loop, co_wait_entry, &c);
    run_a_while(&d);
    g_assert_false(c.done);
    aio_write_start(&d, &w, 2, 0, 4096);
    while (!c.done) {
        loop_run_once(d.ctx->loop, true);
    }
    g_assert_true(c.result);
    g_assert_true(blkdebug_is_suspended(d.node, "A"));
    g_assert_true(blkdebug_resume(d.node, "A", &err));
    aio_write_finish(&d, &w);

    /* No breakpoint left: the coroutine form returns false at once. */
    c = (CoWait) { .node = d.node };
    loop_co_spawn(d.ctx->loop, co_wait_entry, &c);
    while (!c.done) {
        loop_run_once(d.ctx->loop, true);
    }
    g_assert_false(c.result);
    dev_close(&d);
}

/* Tools find the filter from the root of a graph. */
static void test_find_below_root(void)
{
    g_autoptr(StrataError) err = NULL;
    StrataContext *ctx = strata_context_new(&err);
    StrataNode *top, *inner;

    top = strata_node_open_json(ctx, "{\"driver\": \"blkdebug\", "
                                "\"node-name\": \"outer\", \"image\": "
                                "{\"driver\": \"blkdebug\", \"node-name\": "
                                "\"inner\", \"image\": {\"driver\": \"mem\", "
                                "\"size\": 65536}}}", &err);
    g_assert_nonnull(top);
    inner = strata_node_find(ctx, "inner");
    g_assert_true(blkdebug_find(top) == top);
    g_assert_true(blkdebug_find(inner) == inner);
    g_assert_true(blkdebug_break(inner, "pwritev", "X", &err));
    g_assert_false(blkdebug_remove_break(top, "X", &err));
    g_clear_pointer(&err, error_free);
    g_assert_true(blkdebug_remove_break(inner, "X", &err));
    strata_node_unref(top);
    strata_context_free(ctx);
}

/* ---- limit overrides ------------------------------------------------------------------ */

/* align=4096 over a 512-byte image: sub-block writes at odd offsets are
 * padded on the filter, read back right, and the image sees only whole
 * 4 KiB blocks. */
static void test_limits_align_pads_on_filter(void)
{
    g_autofree uint8_t *model = NULL;
    g_autofree uint8_t *buf = g_malloc(4096);
    StrataStats st;
    TestDev d;

    dev_open(&d, "\"align\": 512|\"align\": 4096, \"rmw-coalesce\": false");
    dev_fill(&d, 1);
    model = image_snapshot(&d);
    mem_trace_clear(d.mem);
    for (int i = 0; i < 16; i++) {
        int64_t off = 512 * (2 * i + 1) + 4096 * (i % 3);
        size_t len = 512 * (1 + i % 3);
        g_autofree uint8_t *w = pat_buf(10 + i, off, len);

        g_assert_cmpint(strata_backend_pwrite(d.be, off, w, len, 0), ==, 0);
        memcpy(model + off, w, len);
        g_assert_cmpint(strata_backend_pread(d.be, off, buf, len, 0), ==, 0);
        g_assert_cmpmem(buf, len, w, len);
    }
    assert_image_equals(&d, model);
    for (int i = 0; i < mem_trace_count(d.mem); i++) {
        MemTraceEntry e;
        g_assert_true(mem_trace_get(d.mem, i, &e));
        g_assert_cmpint(e.offset % 4096, ==, 0);
        g_assert_cmpint(e.bytes % 4096, ==, 0);
    }
    strata_node_get_stats(d.node, &st);
    g_assert_cmpuint(st.rmw_writes, ==, 16);
    g_assert_cmpuint(st.padded_reads, ==, 16);
    strata_node_get_stats(d.mem, &st);
    g_assert_cmpuint(st.rmw_writes, ==, 0);
    dev_close(&d);
}

/* max-transfer=64k splits a 1 MiB write on the filter into 16 pieces. */
static void test_limits_max_transfer_splits(void)
{
    TestDev d;

    dev_open(&d, "\"align\": 512|\"max-transfer\": 65536");
    mem_trace_clear(d.mem);
    g_assert_cmpint(dev_write(&d, 4, 0, DEV_SIZE), ==, 0);
    g_assert_cmpint(mem_trace_count(d.mem), ==, 16);
    for (int i = 0; i < 16; i++) {
        trace_expect(d.mem, i, REQ_WRITE, (int64_t)i * 65536, 65536);
    }
    expect_image_bytes(&d, 0, DEV_SIZE, 4);
    mem_trace_clear(d.mem);
    /* Reads too (512-aligned here: the image pads what is not). */
    g_assert_cmpint(dev_read(&d, 512, 204800), ==, 0);
    g_assert_cmpint(mem_trace_count(d.mem), ==, 4);
    for (int i = 0; i < 4; i++) {
        trace_expect(d.mem, i, REQ_READ, 512 + (int64_t)i * 65536,
                     i < 3 ? 65536 : 8192);
    }
    dev_close(&d);
}

/* Write-zeroes pieces shorter than opt-write-zero fall back to writes of
 * zero data; the rest stays write-zeroes, cut at max-write-zero. */
static void test_limits_write_zero(void)
{
    TestDev d;

    dev_open(&d, "\"align\": 512|\"opt-write-zero\": 65536, "
             "\"max-write-zero\": 131072");
    dev_fill(&d, 1);
    mem_trace_clear(d.mem);
    g_assert_cmpint(strata_backend_pwrite_zeroes(d.be, 61440, 270336, 0), ==, 0);
    g_assert_cmpint(mem_trace_count(d.mem), ==, 4);
    trace_expect(d.mem, 0, REQ_WRITE, 61440, 4096);
    trace_expect(d.mem, 1, REQ_ZEROES, 65536, 131072);
    trace_expect(d.mem, 2, REQ_ZEROES, 196608, 131072);
    trace_expect(d.mem, 3, REQ_WRITE, 327680, 4096);
    expect_image_bytes(&d, 0, 61440, 1);
    for (int64_t i = 61440; i < 331776; i++) {
        g_assert_cmpuint(mem_get_data(d.mem)[i], ==, 0);
    }
    expect_image_bytes(&d, 331776, 4096, 1);
    dev_close(&d);
}

static void test_limits_discard(void)
{
    TestDev d;

    dev_open(&d, "\"discard\": \"unmap\"|\"discard\": \"unmap\", "
             "\"opt-discard\": 16384, \"max-discard\": 32768");
    mem_trace_clear(d.mem);
    g_assert_cmpint(strata_backend_pdiscard(d.be, 4096, 98304), ==, 0);
    g_assert_cmpint(mem_trace_count(d.mem), ==, 3);
    trace_expect(d.mem, 0, REQ_DISCARD, 16384, 32768);
    trace_expect(d.mem, 1, REQ_DISCARD, 49152, 32768);
    trace_expect(d.mem, 2, REQ_DISCARD, 81920, 16384);
    dev_close(&d);
}

/* The tests of padding on the filter (its "align" option), which also run
 * with an align node doing the padding. */
static void add_padding_tests(void)
{
    for (unsigned i = 0; i < G_N_ELEMENTS(event_order_cases); i++) {
        g_autofree char *path = g_strdup_printf("/blkdebug/rmw/event-order/%s",
                                                event_order_cases[i].name);
        g_test_add_data_func(path, &event_order_cases[i], test_rmw_event_order);
    }
    for (unsigned i = 0; i < G_N_ELEMENTS(rmw_cases); i++) {
        g_autofree char *path = g_strdup_printf("/blkdebug/rmw/error-at/%s/%s",
                                                rmw_cases[i].shape,
                                                rmw_cases[i].event);
        g_test_add_data_func(path, &rmw_cases[i], test_rmw_error_at);
    }
    g_test_add_func("/blkdebug/rmw/error-at/pwritev_done",
                    test_rmw_error_after_done);

    g_test_add_func("/blkdebug/break/same-block-serialises",
                    test_break_same_block_serialises);
    g_test_add_func("/blkdebug/break/neighbour-blocks-proceed",
                    test_break_neighbours_proceed);
    g_test_add_func("/blkdebug/break/drain-releases", test_break_drain_releases);
    g_test_add_func("/blkdebug/limits/align-pads-on-filter",
                    test_limits_align_pads_on_filter);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    /* Under STRATA_TEST_PAD_FILTER=align (the "blkdebug-under-align" run)
     * only the tests of the padding, which an align node then does. */
    if (test_pad_filter_is_align()) {
        add_padding_tests();
        return g_test_run();
    }
    g_test_add_func("/blkdebug/open/defaults", test_open_defaults);
    g_test_add_func("/blkdebug/open/limits", test_open_limits);
    g_test_add_func("/blkdebug/open/align-below-image",
                    test_open_align_below_image);
    g_test_add_func("/blkdebug/open/limit-errors", test_open_limit_errors);
    g_test_add_func("/blkdebug/open/rule-errors", test_open_rule_errors);
    g_test_add_func("/blkdebug/open/dotted-keys", test_open_dotted_keys);
    g_test_add_func("/blkdebug/config/file", test_config_file);
    g_test_add_func("/blkdebug/config/errors", test_config_errors);

    g_test_add_func("/blkdebug/rule/none-active-from-open",
                    test_rule_none_active_from_open);
    g_test_add_func("/blkdebug/rule/errno", test_rule_errno);
    for (unsigned i = 0; i < G_N_ELEMENTS(iotype_cases); i++) {
        g_autofree char *path = g_strdup_printf(
            "/blkdebug/rule/iotype/%s",
            iotype_cases[i].iotype ? iotype_cases[i].iotype : "default");
        g_test_add_data_func(path, &iotype_cases[i], test_rule_iotype);
    }
    g_test_add_func("/blkdebug/rule/sector", test_rule_sector);
    g_test_add_func("/blkdebug/rule/once", test_rule_once);
    g_test_add_func("/blkdebug/rule/immediately", test_rule_immediately);
    g_test_add_func("/blkdebug/rule/active-set-replaced", test_rule_active_set);
    g_test_add_func("/blkdebug/state/transitions", test_state_transitions);

    add_padding_tests();
    g_test_add_func("/blkdebug/break/api-errors", test_break_api_errors);
    g_test_add_func("/blkdebug/break/remove-resumes", test_break_remove_resumes);
    g_test_add_func("/blkdebug/break/two-tags-one-event", test_break_two_tags);
    g_test_add_func("/blkdebug/break/co-wait", test_break_co_wait);
    g_test_add_func("/blkdebug/find/below-root", test_find_below_root);

    g_test_add_func("/blkdebug/limits/max-transfer-splits",
                    test_limits_max_transfer_splits);
    g_test_add_func("/blkdebug/limits/write-zero", test_limits_write_zero);
    g_test_add_func("/blkdebug/limits/discard", test_limits_discard);
    return g_test_run();
}
