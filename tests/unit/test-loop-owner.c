/*
 * Tests of loop ownership: only the thread that owns a context's loop runs
 * it, ownership moves at strata_context_start_thread/stop_thread, and
 * other threads' blocking requests wait for the owner instead of running
 * the loop themselves
 * SPDX-License-Identifier: MIT
 *
 * The main test drives the loop from a GSource in the test's thread (an
 * embedder's GMainLoop) while four threads issue blocking sub-block writes
 * to the same blocks of a mem node that pads to 4 KiB: every write is a
 * read-modify-write, and RMWs of one block must serialise.  Two threads
 * inside one loop would corrupt the loop's lists and lose updates.  Offsets
 * and data come from a seed: STRATA_TEST_SEED (default 1), printed on
 * failure.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

#include "memdev.h"
#include "strata/strata-glib.h"

#define ALIGN 4096
#define BLOCKS 4
#define DISK_SIZE (BLOCKS * ALIGN)
#define WRITERS 4
/* Each writer owns one quarter of every block. */
#define SHARE (ALIGN / WRITERS)
#if defined(__SANITIZE_THREAD__)
#define WRITES_PER_THREAD 150
#else
#define WRITES_PER_THREAD 400
#endif

static guint64 test_seed = 1;

/* A mem device that pads to ALIGN: every sub-block write is an RMW. */
static void open_padded_dev(TestDev *d, int64_t latency_ns)
{
    dev_open(d, "{\"driver\": \"mem\", \"size\": %d, \"align\": %d,"
             " \"latency-ns\": %" PRId64 "}", DISK_SIZE, ALIGN, latency_ns);
}

/* ---- the loop driven from a GSource, blocking writers in other threads ---- */

typedef struct Writer {
    StrataBackend *be;
    int index;
    uint8_t expect[DISK_SIZE];      /* this writer's bytes as they should be */
    int errors;
    int64_t bad_offset;
    char what[64];
    atomic_int *running;
    GMainContext *main_ctx;
} Writer;

static void writer_fail(Writer *w, const char *what, int64_t offset)
{
    if (!w->errors++) {
        w->bad_offset = offset;
        g_strlcpy(w->what, what, sizeof(w->what));
    }
}

static gpointer writer_thread(gpointer opaque)
{
    Writer *w = opaque;
    GRand *rand = g_rand_new_with_seed((guint32)(test_seed * 7919 + (guint64)w->index));
    uint8_t buf[SHARE], block[ALIGN];

    for (int i = 0; i < WRITES_PER_THREAD; i++) {
        /* A run inside this writer's quarter of a block: both ends
         * unaligned, so the write pads at head and tail. */
        int64_t blk = g_rand_int_range(rand, 0, BLOCKS);
        int start = g_rand_int_range(rand, 0, SHARE);
        int len = g_rand_int_range(rand, 1, SHARE - start + 1);
        int64_t offset = blk * ALIGN + (int64_t)w->index * SHARE + start;
        int ret;

        for (int k = 0; k < len; k++) {
            buf[k] = (uint8_t)g_rand_int(rand);
        }
        ret = strata_backend_pwrite(w->be, offset, buf, len, 0);
        if (ret != 0) {
            writer_fail(w, "pwrite failed", offset);
            continue;
        }
        memcpy(w->expect + offset, buf, len);

        /* Now and then read the block back: this writer's quarter must
         * hold exactly what it wrote, whatever the others are doing. */
        if (i % 8 == 7) {
            int64_t quarter = blk * ALIGN + (int64_t)w->index * SHARE;
            ret = strata_backend_pread(w->be, blk * ALIGN, block, ALIGN, 0);
            if (ret != 0) {
                writer_fail(w, "pread failed", blk * ALIGN);
            } else if (memcmp(block + w->index * SHARE, w->expect + quarter,
                              SHARE)) {
                writer_fail(w, "read back differs", quarter);
            }
        }
    }
    g_rand_free(rand);
    /* The test's thread sleeps in the GMainContext: tell it to look. */
    atomic_fetch_sub(w->running, 1);
    g_main_context_wakeup(w->main_ctx);
    return NULL;
}

static void test_gsource_and_blocking_writers(void)
{
    TestDev d;
    Writer *w = g_new0(Writer, WRITERS);
    GThread *threads[WRITERS];
    atomic_int running = WRITERS;
    uint8_t got[DISK_SIZE];
    StrataStats stats;
    GMainContext *main_ctx = g_main_context_new();
    GSource *source;

    g_test_message("seed %" G_GUINT64_FORMAT " (STRATA_TEST_SEED)", test_seed);
    /* The latency makes requests wait in timers, so that RMWs of the same
     * block from different writers overlap. */
    open_padded_dev(&d, 20000);
    source = strata_context_create_gsource(d.ctx);
    g_source_attach(source, main_ctx);

    for (int t = 0; t < WRITERS; t++) {
        w[t] = (Writer) { .be = d.be, .index = t, .running = &running,
                          .main_ctx = main_ctx };
    }
    for (int t = 0; t < WRITERS; t++) {
        threads[t] = g_thread_new("writer", writer_thread, &w[t]);
    }
    /* The embedder's main loop: this thread created the context and owns
     * its loop, so only it runs the loop, through the GSource. */
    while (atomic_load(&running) > 0) {
        g_main_context_iteration(main_ctx, TRUE);
    }
    for (int t = 0; t < WRITERS; t++) {
        g_thread_join(threads[t]);
    }
    g_source_destroy(source);
    g_source_unref(source);
    g_main_context_unref(main_ctx);

    /* Every quarter comes from one writer: merge what they expect into
     * the harness's model, which dev_close() compares with the medium. */
    for (int t = 0; t < WRITERS; t++) {
        if (w[t].errors) {
            g_error("seed %" G_GUINT64_FORMAT ": writer %d: %s at offset %"
                    PRId64 " (%d errors)", test_seed, t, w[t].what,
                    w[t].bad_offset, w[t].errors);
        }
        for (int64_t b = 0; b < BLOCKS; b++) {
            int64_t q = b * ALIGN + (int64_t)t * SHARE;
            memcpy(d.model + q, w[t].expect + q, SHARE);
        }
    }
    /* The owner's blocking read runs the loop itself. */
    g_assert_cmpint(strata_backend_pread(d.be, 0, got, DISK_SIZE, 0), ==, 0);
    for (int64_t i = 0; i < DISK_SIZE; i++) {
        if (got[i] != d.model[i]) {
            g_error("seed %" G_GUINT64_FORMAT ": byte %" PRId64 " reads %#x,"
                    " want %#x: an update was lost", test_seed, i, got[i],
                    d.model[i]);
        }
    }
    strata_node_get_stats(d.node, &stats);
    g_test_message("%" PRIu64 " RMW writes, %" PRIu64 " serialising waits, %"
                   PRIu64 " coalesced", stats.rmw_writes, stats.serialising_waits,
                   stats.coalesced_writes);
    g_assert_cmpuint(stats.rmw_writes + stats.coalesced_writes, >=,
                     WRITERS * WRITES_PER_THREAD);
    g_free(w);
    dev_close(&d);
}

/* ---- handover ------------------------------------------------------------------- */

typedef struct OwnerCheck {
    StrataContext *ctx;
    bool ran_as_owner;
    GThread *ran_in;
    atomic_int done;
    GMainContext *main_ctx;
} OwnerCheck;

static void record_owner(void *opaque)
{
    OwnerCheck *c = opaque;

    c->ran_as_owner = loop_is_owner(c->ctx->loop);
    c->ran_in = g_thread_self();
}

static void test_handover(void)
{
    TestDev d;
    OwnerCheck c;
    uint8_t buf[100], rbuf[100];

    open_padded_dev(&d, 0);
    /* The creating thread owns the loop ... */
    g_assert_true(loop_is_owner(d.ctx->loop));
    memset(buf, 0x5a, sizeof(buf));
    g_assert_cmpint(strata_backend_pwrite(d.be, 4000, buf, sizeof(buf), 0), ==, 0);
    memcpy(d.model + 4000, buf, sizeof(buf));

    /* ... until the loop thread takes it over ... */
    g_assert_true(strata_context_start_thread(d.ctx, NULL));
    g_assert_false(loop_is_owner(d.ctx->loop));
    g_assert_cmpint(strata_backend_pread(d.be, 4000, rbuf, sizeof(rbuf), 0), ==, 0);
    g_assert_cmpmem(buf, sizeof(buf), rbuf, sizeof(rbuf));
    /* ... which is where strata_context_call() runs its function ... */
    c = (OwnerCheck) { .ctx = d.ctx };
    strata_context_call(d.ctx, record_owner, &c);
    g_assert_true(c.ran_as_owner);
    g_assert_true(c.ran_in == d.ctx->queues[0]->thread);

    /* ... and stop_thread hands it back. */
    strata_context_stop_thread(d.ctx);
    g_assert_true(loop_is_owner(d.ctx->loop));
    memset(buf, 0xa5, sizeof(buf));
    g_assert_cmpint(strata_backend_pwrite(d.be, 4050, buf, sizeof(buf), 0), ==, 0);
    memcpy(d.model + 4050, buf, sizeof(buf));
    g_assert_cmpint(strata_backend_pread(d.be, 4050, rbuf, sizeof(rbuf), 0), ==, 0);
    g_assert_cmpmem(buf, sizeof(buf), rbuf, sizeof(rbuf));
    c = (OwnerCheck) { .ctx = d.ctx };
    strata_context_call(d.ctx, record_owner, &c);
    g_assert_true(c.ran_as_owner);
    g_assert_true(c.ran_in == g_thread_self());
    dev_close(&d);
}

static gpointer call_thread(gpointer opaque)
{
    OwnerCheck *c = opaque;

    strata_context_call(c->ctx, record_owner, c);
    atomic_store(&c->done, 1);
    g_main_context_wakeup(c->main_ctx);
    return NULL;
}

/* Without a loop thread, strata_context_call() from another thread still
 * runs in the owner: the thread that drives the loop through its GSource. */
static void test_context_call_from_other_thread(void)
{
    TestDev d;
    OwnerCheck c;
    GMainContext *main_ctx = g_main_context_new();
    GSource *source;
    GThread *thread;

    open_padded_dev(&d, 0);
    source = strata_context_create_gsource(d.ctx);
    g_source_attach(source, main_ctx);
    c = (OwnerCheck) { .ctx = d.ctx, .main_ctx = main_ctx };
    thread = g_thread_new("caller", call_thread, &c);
    while (!atomic_load(&c.done)) {
        g_main_context_iteration(main_ctx, TRUE);
    }
    g_thread_join(thread);
    g_assert_true(c.ran_as_owner);
    g_assert_true(c.ran_in == g_thread_self());
    g_source_destroy(source);
    g_source_unref(source);
    g_main_context_unref(main_ctx);
    dev_close(&d);
}

/* ---- misuse ----------------------------------------------------------------------- */

static gpointer run_once_thread(gpointer opaque)
{
    strata_context_run_once(opaque, false);
    return NULL;
}

static void test_run_once_by_other_thread_asserts(void)
{
    if (g_test_subprocess()) {
        TestDev d;
        open_padded_dev(&d, 0);
        g_thread_join(g_thread_new("intruder", run_once_thread, d.ctx));
        dev_close(&d);
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
    g_test_trap_assert_stderr("*loop_run_once by a thread that does not own the loop*");
}

int main(int argc, char **argv)
{
    const char *seed = getenv("STRATA_TEST_SEED");

    if (seed) {
        test_seed = g_ascii_strtoull(seed, NULL, 10);
    }
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/loop-owner/gsource-loop/blocking-sub-block-writers",
                    test_gsource_and_blocking_writers);
    g_test_add_func("/loop-owner/gsource-loop/context-call-from-other-thread",
                    test_context_call_from_other_thread);
    g_test_add_func("/loop-owner/handover/start-stop-thread", test_handover);
    g_test_add_func("/loop-owner/misuse/run-once-by-other-thread-asserts",
                    test_run_once_by_other_thread_asserts);
    return g_test_run();
}
