/*
 * Multi-queue: several threads, each with its own queue, into one graph
 * SPDX-License-Identifier: MIT
 *
 *   /mq/model/random-concurrent  2-4 threads of unaligned, vectored,
 *                                overlapping sector writes and reads on a
 *                                4K-aligned mem device with random
 *                                latency; every 4K block must end in a
 *                                state some serial order of the writes
 *                                touching it produces (no lost update)
 *   /mq/model/locking-mode       the same, mostly whole-block writes with
 *                                a read-modify-write now and then, while
 *                                lock-free tracking switches on and off
 *   /mq/drain-reopen             drains, reopens and graph changes (a
 *                                second backend attached and detached)
 *                                while 4 threads submit
 *   /mq/flush-across-queues      a flush on one queue covers writes
 *                                completed on the others, and only those
 *   /mq/blkdebug-break           a request held at a breakpoint on one
 *                                thread; another thread's overlapping
 *                                write waits for it, then both land
 *   /mq/queue-api                limits and errors of the queue API
 *
 * Runs in the 'threads' suite, so scripts/test.sh also runs it under
 * ThreadSanitizer.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>
#include <glib.h>

#include "block/blkdebug.h"
#include "block/block-int.h"
#include "strata/strata.h"
#include "util/thread.h"

#define SECTOR 512
#define BLOCK 4096

typedef struct MqEnv {
    StrataContext *ctx;
    StrataNode *node;
    StrataBackend *be;
    int64_t size;
} MqEnv;

static void env_open(MqEnv *e, const char *json)
{
    StrataError *err = NULL;

    e->ctx = strata_context_new(&err);
    g_assert_no_error((GError *)err);
    e->node = strata_node_open_json(e->ctx, json, &err);
    if (!e->node) {
        g_error("open %s: %s", json, strata_error_get_message(err));
    }
    e->be = strata_backend_new(e->node, "mq", STRATA_PERM_CONSISTENT_READ |
                               STRATA_PERM_WRITE, STRATA_PERM_ALL, &err);
    g_assert_nonnull(e->be);
    strata_node_unref(e->node);
    e->size = strata_backend_get_length(e->be);
    g_assert_cmpint(e->size, >, 0);
}

static void env_close(MqEnv *e)
{
    strata_backend_free(e->be);
    strata_context_free(e->ctx);
}

/* A worker thread with its own queue, running @fn in a coroutine on it. */
typedef struct Worker {
    MqEnv *e;
    int id;
    uint32_t seed;
    GThread *thread;
    StrataQueue *q;
    void (*fn)(struct Worker *w);
    bool done;
    int failures;
    /* model test */
    int nwrites;
    int aligned_pct;            /* writes of whole blocks, in percent */
    GArray *writes;             /* WriteRec */
    volatile int *stop;
} Worker;

/* The thread owns its queue's loop: the blocking API runs it. */
static gpointer worker_thread(gpointer opaque)
{
    Worker *w = opaque;
    StrataError *err = NULL;

    w->q = strata_queue_new(w->e->ctx, &err);
    g_assert_nonnull(w->q);
    g_assert_cmpuint(strata_queue_get_index(w->q), >, 0);
    strata_queue_set_current(w->q);
    w->fn(w);
    strata_queue_set_current(NULL);
    strata_queue_free(w->q);
    __atomic_store_n(&w->done, true, __ATOMIC_RELEASE);
    return NULL;
}

static void workers_start(Worker *ws, int n, MqEnv *e, void (*fn)(Worker *))
{
    for (int i = 0; i < n; i++) {
        ws[i].e = e;
        ws[i].id = ws[i].id ? ws[i].id : i + 1;
        ws[i].fn = fn;
        ws[i].thread = g_thread_new("mq-worker", worker_thread, &ws[i]);
    }
}

/* Join while running the context's loop: single-queue nodes and drains
 * need its owner. */
static void workers_join(MqEnv *e, Worker *ws, int n)
{
    for (;;) {
        bool all = true;
        for (int i = 0; i < n; i++) {
            all &= __atomic_load_n(&ws[i].done, __ATOMIC_ACQUIRE);
        }
        if (all) {
            break;
        }
        strata_context_run_once(e->ctx, false);
        g_usleep(100);
    }
    for (int i = 0; i < n; i++) {
        g_thread_join(ws[i].thread);
    }
}

/* ---- the model test ----------------------------------------------------------- */

typedef struct WriteRec {
    uint32_t tag;               /* worker id << 20 | write number */
    int64_t lo, hi;             /* sectors [lo, hi) */
    int64_t sent, done;         /* monotonic ns around the call */
} WriteRec;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Every sector a write covers holds its tag and the sector number. */
static void fill_sector(uint8_t *p, uint32_t tag, int64_t sector)
{
    for (int i = 0; i < SECTOR; i += 8) {
        memcpy(p + i, &tag, 4);
        uint32_t s = (uint32_t)sector;
        memcpy(p + i + 4, &s, 4);
    }
}

static bool sector_tag(const uint8_t *p, int64_t sector, uint32_t *tag)
{
    uint32_t t, s;
    memcpy(&t, p, 4);
    memcpy(&s, p + 4, 4);
    if (t == 0 && s == 0) {
        for (int i = 0; i < SECTOR; i++) {
            if (p[i]) {
                return false;
            }
        }
        *tag = 0;       /* never written */
        return true;
    }
    if (s != (uint32_t)sector) {
        return false;
    }
    for (int i = 0; i < SECTOR; i += 8) {
        if (memcmp(p + i, p, 8)) {
            return false;
        }
    }
    *tag = t;
    return true;
}

static void model_worker(Worker *w)
{
    MqEnv *e = w->e;
    GRand *r = g_rand_new_with_seed(w->seed);
    int64_t nsectors = e->size / SECTOR;
    uint8_t *buf = g_malloc(64 * SECTOR + 64);

    for (int n = 0; n < w->nwrites; n++) {
        /* Up to 3 blocks' worth of sectors anywhere: unaligned head and
         * tail in most, whole blocks in some. */
        int64_t len = g_rand_int_range(r, 1, 3 * BLOCK / SECTOR + 1);
        int64_t lo = g_rand_int_range(r, 0, (gint32)(nsectors - len + 1));
        if (g_rand_int_range(r, 0, 100) < w->aligned_pct) {
            /* Whole blocks: no read-modify-write, a plain request. */
            int per = BLOCK / SECTOR;
            len = (int64_t)g_rand_int_range(r, 1, 4) * per;
            lo = (int64_t)g_rand_int_range(r, 0, (gint32)((nsectors - len) / per + 1)) * per;
        }
        uint32_t tag = (uint32_t)w->id << 20 | (uint32_t)n;
        bool read = g_rand_int_range(r, 0, 4) == 0;
        /* An odd address (the request path bounces) or several elements
         * (it gathers), at random. */
        uint8_t *base = buf + (g_rand_boolean(r) ? 1 : 0);
        int niov = g_rand_int_range(r, 1, 4);
        struct iovec iov[4];
        int64_t bytes = len * SECTOR, done = 0;

        for (int i = 0; i < niov; i++) {
            int64_t part = i == niov - 1 ? bytes - done : (bytes / niov);
            iov[i] = (struct iovec) { base + done, (size_t)part };
            done += part;
        }
        if (read) {
            int ret = strata_backend_preadv(e->be, lo * SECTOR, iov, niov, 0);
            g_assert_cmpint(ret, ==, 0);
            for (int64_t s = 0; s < len; s++) {
                uint32_t t;
                if (!sector_tag(base + s * SECTOR, lo + s, &t)) {
                    g_test_message("torn sector %" PRId64 " in a read", lo + s);
                    w->failures++;
                }
            }
            continue;
        }
        for (int64_t s = 0; s < len; s++) {
            fill_sector(base + s * SECTOR, tag, lo + s);
        }
        WriteRec rec = { tag, lo, lo + len, now_ns(), 0 };
        int ret = strata_backend_pwritev(e->be, lo * SECTOR, iov, niov, 0);
        g_assert_cmpint(ret, ==, 0);
        rec.done = now_ns();
        g_array_append_val(w->writes, rec);
    }
    g_free(buf);
    g_rand_free(r);
}

/*
 * Is the final content of block @b what some serial order of the writes
 * touching it leaves, an order that keeps every write sent after another
 * returned after it (the worker's own next write, and other workers')?
 * Peel: the last write of such an order owns every
 * sector of its range inside the block that no later write covers; remove
 * it and repeat.  Sectors no write covers must be unwritten.
 */
static bool block_serialisable(const uint8_t *img, int64_t b, GArray *all)
{
    int per = BLOCK / SECTOR;
    int64_t s0 = b * per;
    uint32_t owner[BLOCK / SECTOR];
    bool covered[BLOCK / SECTOR] = { false };
    GPtrArray *cand = g_ptr_array_new();

    for (int i = 0; i < per; i++) {
        if (!sector_tag(img + (s0 + i) * SECTOR, s0 + i, &owner[i])) {
            g_ptr_array_free(cand, TRUE);
            return false;
        }
    }
    for (guint k = 0; k < all->len; k++) {
        WriteRec *w = &g_array_index(all, WriteRec, k);
        if (w->lo < s0 + per && w->hi > s0) {
            g_ptr_array_add(cand, w);
        }
    }
    bool progress = true;
    while (cand->len && progress) {
        progress = false;
        for (guint k = 0; k < cand->len; k++) {
            WriteRec *w = cand->pdata[k];
            bool ok = true;
            /* Real time: a write sent after this one returned comes
             * after it (so does a worker's next write). */
            for (guint j = 0; j < cand->len && ok; j++) {
                WriteRec *o = cand->pdata[j];
                ok = o->sent <= w->done;
            }
            for (int64_t s = MAX(w->lo, s0); s < MIN(w->hi, s0 + per) && ok; s++) {
                int i = (int)(s - s0);
                ok = covered[i] || owner[i] == w->tag;
            }
            if (ok) {
                for (int64_t s = MAX(w->lo, s0); s < MIN(w->hi, s0 + per); s++) {
                    covered[s - s0] = true;
                }
                g_ptr_array_remove_index_fast(cand, k);
                progress = true;
                break;
            }
        }
    }
    bool ok = cand->len == 0;
    for (int i = 0; i < per && ok; i++) {
        ok = covered[i] || owner[i] == 0;
    }
    g_ptr_array_free(cand, TRUE);
    return ok;
}

static void run_model(int nthreads, const char *json, uint32_t seed,
                      int nwrites, int aligned_pct)
{
    MqEnv e;
    Worker ws[4] = { 0 };

    env_open(&e, json);
    for (int i = 0; i < nthreads; i++) {
        ws[i].seed = seed * 31 + (uint32_t)i;
        ws[i].nwrites = nwrites;
        ws[i].aligned_pct = aligned_pct;
        ws[i].writes = g_array_new(FALSE, FALSE, sizeof(WriteRec));
    }
    workers_start(ws, nthreads, &e, model_worker);
    workers_join(&e, ws, nthreads);

    GArray *all = g_array_new(FALSE, FALSE, sizeof(WriteRec));
    int failures = 0;
    for (int i = 0; i < nthreads; i++) {
        g_array_append_vals(all, ws[i].writes->data, ws[i].writes->len);
        failures += ws[i].failures;
        g_array_free(ws[i].writes, TRUE);
    }
    uint8_t *img = g_malloc(e.size);
    g_assert_cmpint(strata_backend_pread(e.be, 0, img, e.size, 0), ==, 0);
    int bad = 0;
    for (int64_t b = 0; b < e.size / BLOCK; b++) {
        if (!block_serialisable(img, b, all)) {
            if (bad++ < 5) {
                g_test_message("block %" PRId64 ": no serial order of its "
                               "writes gives its content", b);
            }
        }
    }
    StrataStats st;
    strata_node_get_stats(e.node, &st);
    g_test_message("%d threads, seed %" PRIu32 ": %u writes, rmw %" PRIu64
                   ", serialising waits %" PRIu64 ", coalesced %" PRIu64,
                   nthreads, seed, all->len, st.rmw_writes, st.serialising_waits,
                   st.coalesced_writes);
    /* The test must have exercised what it checks. */
    g_assert_cmpuint(st.rmw_writes, >, 0);
    g_assert_cmpint(bad, ==, 0);
    g_assert_cmpint(failures, ==, 0);
    g_free(img);
    g_array_free(all, TRUE);
    env_close(&e);
}

static void test_model_random_concurrent(void)
{
    /* A small device so that writes of different threads collide often. */
    static const char *const devs[] = {
        "{\"driver\": \"mem\", \"size\": 262144, \"align\": 4096, "
        "\"latency-ns\": 20000, \"random-order\": true, \"seed\": 7, "
        "\"rmw-coalesce\": false}",
        "{\"driver\": \"mem\", \"size\": 262144, \"align\": 4096, "
        "\"latency-ns\": 5000, \"random-order\": true, \"seed\": 9, "
        "\"rmw-coalesce\": true}",
    };
    for (int t = 2; t <= 4; t++) {
        for (unsigned d = 0; d < G_N_ELEMENTS(devs); d++) {
            run_model(t, devs[d], 1000u * (uint32_t)t + d, 150, 0);
        }
    }
}

/*
 * The same model, mostly whole-block writes (plain requests, tracked
 * without locks while no serialising request is about) with a
 * read-modify-write now and then, and the locking mode set to go off
 * after 8 quiet sections: the mode switches on and off many times while
 * other queues' plain requests run (block/io.c, "Locking mode"), and no
 * update may be lost across a switch.
 */
static void test_model_locking_mode(void)
{
    /* Without and with coalescing (which scans the shards under the
     * node's lock, the lock order the switch must respect). */
    static const char *const devs[] = {
        "{\"driver\": \"mem\", \"size\": 32768, \"align\": 4096, "
        "\"latency-ns\": 50000, \"random-order\": true, \"seed\": 11, "
        "\"rmw-coalesce\": false}",
        "{\"driver\": \"mem\", \"size\": 32768, \"align\": 4096, "
        "\"latency-ns\": 50000, \"random-order\": true, \"seed\": 13, "
        "\"rmw-coalesce\": true}",
    };

    if (!io_lockfree_tracking()) {
        g_test_skip("tracking is locked for good here (ThreadSanitizer, or "
                    "no membarrier(2)): there is no mode to switch");
        return;
    }
    io_test_set_quiet_sections(8);
    /* Lock-free sections long enough for a scan to run into one. */
    io_test_set_section_delay(20000);
    for (unsigned d = 0; d < G_N_ELEMENTS(devs); d++) {
        for (int t = 2; t <= 4; t++) {
            uint64_t before = io_test_locking_switches();
            /* Short runs, each checked: a lost update is not overwritten
             * by later writes before the check sees it. */
            for (uint32_t run = 0; run < 20; run++) {
                run_model(t, devs[d], 7000u + 1000u * d + 100u * (uint32_t)t + run,
                          40, 70);
            }
            uint64_t switches = io_test_locking_switches() - before;
            g_test_message("device %u, %d threads, 20 runs: the locking mode "
                           "went on %" PRIu64 " times", d, t, switches);
            /* More than once per node: it had gone off in between. */
            g_assert_cmpuint(switches, >, 20);
        }
    }
    io_test_set_quiet_sections(0);
    io_test_set_section_delay(0);
}

/* ---- drain and reopen under load ----------------------------------------------- */

static void loader(Worker *w)
{
    MqEnv *e = w->e;
    uint8_t buf[6000];
    int n = 0;

    while (!__atomic_load_n(w->stop, __ATOMIC_ACQUIRE)) {
        int64_t off = (int64_t)((n * 7919 + w->id * 1031) % 200) * SECTOR;
        memset(buf, w->id, sizeof(buf));
        int ret = n % 3 ? strata_backend_pwrite(e->be, off, buf, 3000, 0)
                        : strata_backend_pread(e->be, off, buf, sizeof(buf), 0);
        if (ret < 0) {
            w->failures++;
        }
        n++;
    }
    w->nwrites = n;
}

static void test_drain_reopen(void)
{
    MqEnv e;
    Worker ws[4] = { 0 };
    volatile int stop = 0;
    StrataError *err = NULL;

    env_open(&e, "{\"driver\": \"raw\", \"node-name\": \"top\", \"file\": "
                 "{\"driver\": \"mem\", \"size\": 1048576, \"align\": 4096, "
                 "\"latency-ns\": 10000}}");
    for (int i = 0; i < 4; i++) {
        ws[i].stop = &stop;
    }
    workers_start(ws, 4, &e, loader);
    for (int round = 0; round < 20; round++) {
        g_usleep(2000);
        strata_backend_drain_begin(e.be);
        /* Nothing in flight on any queue inside the section. */
        for (unsigned q = 0; q < STRATA_MAX_QUEUES; q++) {
            NodeShard *sh = e.node->shard[q];
            g_assert_true(!sh || __atomic_load_n(&sh->in_flight, __ATOMIC_ACQUIRE) == 0);
        }
        strata_backend_drain_end(e.be);
        g_autofree char *changes = g_strdup_printf("{\"detect-zeroes\": \"%s\"}",
                                                   round % 2 ? "on" : "off");
        g_assert_true(strata_node_reopen_json(e.node, changes, &err));
        /* An edge added and dropped under load (the graph lock). */
        StrataBackend *other = strata_backend_new(e.node, "other",
                                                  STRATA_PERM_CONSISTENT_READ,
                                                  STRATA_PERM_ALL, &err);
        g_assert_nonnull(other);
        uint8_t sector[SECTOR];
        g_assert_cmpint(strata_backend_pread(other, 0, sector, SECTOR, 0), ==, 0);
        strata_backend_free(other);
    }
    __atomic_store_n((int *)&stop, 1, __ATOMIC_RELEASE);
    workers_join(&e, ws, 4);
    int total = 0;
    for (int i = 0; i < 4; i++) {
        g_assert_cmpint(ws[i].failures, ==, 0);
        total += ws[i].nwrites;
    }
    g_test_message("%d requests during 20 drains and reopens", total);
    g_assert_cmpint(total, >, 0);
    env_close(&e);
}

/* ---- flush across queues -------------------------------------------------------- */

static int mq_flushes(MqEnv *e)
{
    StrataStats st;
    StrataNode *mem = strata_node_find(e->ctx, "dev");
    strata_node_get_stats(mem, &st);
    return (int)st.op[STRATA_STATS_FLUSH].ops;
}

static void one_write(Worker *w)
{
    uint8_t buf[4096];
    memset(buf, w->id, sizeof(buf));
    g_assert_cmpint(strata_backend_pwrite(w->e->be, 4096 * w->id, buf,
                                          sizeof(buf), 0), ==, 0);
}

static void one_flush(Worker *w)
{
    g_assert_cmpint(strata_backend_flush(w->e->be), ==, 0);
}

static void run_on_queue(MqEnv *e, int id, void (*fn)(Worker *))
{
    Worker w = { .id = id };
    workers_start(&w, 1, e, fn);
    workers_join(e, &w, 1);
}

static void test_flush_across_queues(void)
{
    MqEnv e;

    env_open(&e, "{\"driver\": \"raw\", \"file\": {\"driver\": \"mem\", "
                 "\"node-name\": \"dev\", \"size\": 1048576}}");
    /* A write completed on one queue, a flush on another: the flush
     * reaches the device. */
    run_on_queue(&e, 1, one_write);
    run_on_queue(&e, 2, one_flush);
    g_assert_cmpint(mq_flushes(&e), ==, 1);
    /* Nothing written since, on any queue: the next flush has nothing
     * to cover. */
    run_on_queue(&e, 3, one_flush);
    g_assert_cmpint(mq_flushes(&e), ==, 1);
    /* A write on a third queue; the flush on the first queue covers it. */
    run_on_queue(&e, 3, one_write);
    g_assert_cmpint(strata_backend_flush(e.be), ==, 0);
    g_assert_cmpint(mq_flushes(&e), ==, 2);
    env_close(&e);
}

/* ---- blkdebug breakpoint across threads ----------------------------------------- */

static void write_sector_a(Worker *w)
{
    uint8_t buf[SECTOR];
    memset(buf, 0xaa, sizeof(buf));
    g_assert_cmpint(strata_backend_pwrite(w->e->be, 0, buf, SECTOR, 0), ==, 0);
}

static void write_sector_b(Worker *w)
{
    uint8_t buf[SECTOR];
    memset(buf, 0xbb, sizeof(buf));
    g_assert_cmpint(strata_backend_pwrite(w->e->be, SECTOR, buf, SECTOR, 0), ==, 0);
}

static void test_blkdebug_break(void)
{
    MqEnv e;
    StrataError *err = NULL;
    Worker a = { 0 }, b = { 0 };

    /* The align filter pads at its entry (4K): RMW and serialisation
     * happen there, on the submitting threads' queues; blkdebug below
     * holds the first write's read-modify-write. */
    env_open(&e, "{\"driver\": \"align\", \"node-name\": \"top\", "
                 "\"request-alignment\": 4096, \"file\": {\"driver\": "
                 "\"blkdebug\", \"node-name\": \"bd\", \"image\": "
                 "{\"driver\": \"mem\", \"size\": 65536}}}");
    StrataNode *bd = strata_node_find(e.ctx, "bd");
    g_assert_true(blkdebug_break(bd, "pwritev_rmw_after_tail", "A", &err));
    workers_start(&a, 1, &e, write_sector_a);
    g_assert_true(blkdebug_wait_break(bd, "A"));
    b.id = 2;
    workers_start(&b, 1, &e, write_sector_b);
    /* B overlaps A's block: it waits on its own thread for A. */
    StrataStats st;
    for (int i = 0; i < 2000; i++) {
        strata_node_get_stats(e.node, &st);
        if (st.serialising_waits) {
            break;
        }
        g_usleep(1000);
    }
    g_assert_cmpuint(st.serialising_waits, ==, 1);
    g_assert_false(__atomic_load_n(&b.done, __ATOMIC_ACQUIRE));
    g_assert_true(blkdebug_resume(bd, "A", &err));
    workers_join(&e, &a, 1);
    workers_join(&e, &b, 1);
    uint8_t buf[2 * SECTOR];
    g_assert_cmpint(strata_backend_pread(e.be, 0, buf, sizeof(buf), 0), ==, 0);
    for (int i = 0; i < SECTOR; i++) {
        g_assert_cmphex(buf[i], ==, 0xaa);
        g_assert_cmphex(buf[SECTOR + i], ==, 0xbb);
    }
    env_close(&e);
}

/* ---- the queue API --------------------------------------------------------------- */

static void test_queue_api(void)
{
    StrataError *err = NULL;
    StrataContext *ctx = strata_context_new(&err);
    StrataQueue *qs[STRATA_MAX_QUEUES];

    g_assert_cmpuint(strata_queue_get_index(strata_context_get_queue(ctx)), ==, 0);
    for (int i = 1; i < STRATA_MAX_QUEUES; i++) {
        qs[i] = strata_queue_new(ctx, &err);
        g_assert_nonnull(qs[i]);
        g_assert_cmpuint(strata_queue_get_index(qs[i]), ==, i);
    }
    g_assert_null(strata_queue_new(ctx, &err));
    g_assert_cmpint(strata_error_get_errno(err), ==, ENOSPC);
    g_assert_nonnull(strstr(strata_error_get_message(err), "at most 64 queues"));
    strata_error_free(err);
    err = NULL;
    /* A freed index is reused. */
    strata_queue_free(qs[5]);
    qs[5] = strata_queue_new(ctx, &err);
    g_assert_cmpuint(strata_queue_get_index(qs[5]), ==, 5);
    for (int i = 1; i < STRATA_MAX_QUEUES; i++) {
        strata_queue_free(qs[i]);
    }
    strata_context_free(ctx);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/mq/queue-api", test_queue_api);
    g_test_add_func("/mq/flush-across-queues", test_flush_across_queues);
    g_test_add_func("/mq/blkdebug-break", test_blkdebug_break);
    g_test_add_func("/mq/drain-reopen", test_drain_reopen);
    g_test_add_func("/mq/model/random-concurrent", test_model_random_concurrent);
    g_test_add_func("/mq/model/locking-mode", test_model_locking_mode);
    return g_test_run();
}
