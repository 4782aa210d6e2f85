/*
 * strata-img bench: qemu-img bench against a Strata graph
 * SPDX-License-Identifier: MIT
 *
 * Takes qemu-img bench's options with the same meanings and defaults
 * (75000 requests, depth 64, 4 KiB, step = buffer size, cache=writeback)
 * and prints its two lines ("Sending ...", "Run completed in X seconds."),
 * then what qemu-img does not show: IOPS, bandwidth, CPU time per request,
 * the top node's latency histogram, the padding counters of every node on
 * the primary chain, the AIO engine's batching, and (--malloc-report) the
 * heap allocations per request.  --json prints all of it as one object.
 *
 * How requests are driven.  Like qemu-img bench, the loop runs in the main
 * thread, there is one buffer per in-flight slot, allocated once, and the
 * offsets advance by the step from one shared cursor, wrapping before the
 * end of the image.  (qemu-img bench allocates a buffer per slot but sends
 * every request from the first one; --one-buffer does the same, which
 * matters for large requests, whose copies then stay in the CPU cache.)
 * Two forms of submission:
 *   --form=co (default): one coroutine per slot, looping over
 *     backend_co_preadv/pwritev (block/backend-int.h).  No per-request
 *     coroutine creation and no callback hop: the closest a VMM's device
 *     model that runs its virtqueue in a coroutine gets to the library.
 *   --form=callback: strata_backend_aio_preadv/pwritev, resubmitting from
 *     the completion callback, as qemu-img bench does with blk_aio_*; each
 *     request spawns a coroutine from the pool.  This is what an embedder
 *     using only the public API pays.
 * With --queues N (N > 1), N threads each create a queue on the context
 * (strata_queue_new) and run the same loop on it: -c is the total, split
 * evenly, -d the depth of each queue, and queue i starts where the single
 * cursor's sequence would be after i shares.  They start together after a
 * barrier; the report gives each queue's IOPS and the total over the wall
 * time from the start to the last queue's end.
 * --idle-start=MS: each thread that sends requests sleeps MS milliseconds
 * right before its measured phase, as fio's job process does (it waits
 * about 100 ms for its parent's go).  On a loop device at depth 1 the
 * kernel's placement of the device's worker depends on the submitting
 * thread's recent CPU use, and a thread that starts busy settles where the
 * worker runs on the other CPU: tests/bench/compare gives Strata the same
 * start when it measures it against fio (docs/benchmarks.md, run 17).
 * Flushes follow qemu-img: with --flush-interval=N, a flush goes out each
 * time the number of requests not yet submitted is a multiple of N; by
 * default submissions stop and the queue drains first, with --no-drain
 * the flush runs beside the requests.
 */
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "block/aio-engine.h"
#include "block/backend-int.h"
#include "block/block-int.h"
#include "block/file-posix.h"
#include "tools/strata-img.h"

#define BENCH_MAX_CHAIN 16
#define BENCH_WARMUP 1000
/* --idle-start: a minute at most */
#define BENCH_MAX_IDLE_START_MS 60000

typedef struct ImgBench ImgBench;

typedef struct BenchSlot {
    ImgBench *b;
    struct iovec *iov;          /* the slot's buffer, split into niov parts */
    int niov;
    IOVector qiov;              /* external view of iov[] */
} BenchSlot;

/* The hooks of tests/bench/malloc-count.so, when it is preloaded. */
typedef uint64_t MallocCountGet(void);
typedef void MallocCountTrace(int on);

struct ImgBench {
    StrataContext *ctx;
    StrataBackend *be;
    Loop *loop;                 /* the queue's loop this run uses */
    int64_t poll_max_ns;        /* --poll-max-ns, for every queue's loop */
    int idle_start_ms;          /* --idle-start */
    bool co_form;

    /* parameters */
    int count, depth, vectors;
    int64_t bufsize, step, image_size;
    bool write;
    int flush_interval;
    bool drain_on_flush;

    /* progress */
    int64_t next_offset;
    int submitted, completed, in_flight;
    int workers;                /* co form: worker coroutines alive */
    int error;                  /* first failure, -errno */
    bool flush_due;             /* drain, then flush, then go on */
    bool flushing;              /* the draining flush is in flight */
    int side_flushes;           /* --no-drain flushes in flight */
    int flushes;                /* flushes sent */
    CoQueue gate;               /* co form: workers waiting for the flush */
    BenchSlot **parked;         /* callback form: slots waiting for it */
    int nparked;
    int64_t start_ns, end_ns;

    /* --malloc-report */
    MallocCountGet *malloc_get;
    MallocCountTrace *malloc_trace;
    int warmup;
    uint64_t mallocs_at_warmup, mallocs_at_end;
    struct MallocWindow *mw;    /* --queues: the shared window, or NULL */
};

/*
 * --malloc-report with --queues: mallocs are counted process-wide from the
 * moment every queue has passed its warm-up to the moment the first queue
 * finishes, over the requests all queues completed in between.
 */
typedef struct MallocWindow {
    int nqueues;
    int warm;                   /* atomic: queues past their warm-up */
    int64_t completed;          /* atomic: completions of every queue */
    int state;                  /* atomic: 0 before, 1 open, 2 closed */
    uint64_t m0, m1;
    int64_t c0, c1;
} MallocWindow;

static void malloc_window_note(ImgBench *b)
{
    MallocWindow *w = b->mw;
    int64_t done = __atomic_add_fetch(&w->completed, 1, __ATOMIC_SEQ_CST);

    if (b->completed == b->warmup &&
        __atomic_add_fetch(&w->warm, 1, __ATOMIC_SEQ_CST) == w->nqueues) {
        w->m0 = b->malloc_get();
        w->c0 = done;
        __atomic_store_n(&w->state, 1, __ATOMIC_SEQ_CST);
    }
    int open = 1;
    if (b->completed == b->count &&
        __atomic_compare_exchange_n(&w->state, &open, 2, false,
                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        w->m1 = b->malloc_get();
        w->c1 = __atomic_load_n(&w->completed, __ATOMIC_SEQ_CST);
    }
}

/* ---- the request loop ----------------------------------------------------------- */

/* Where the next request goes: qemu-img bench's cursor, which wraps so
 * that a request never crosses the end of the image. */
static int64_t bench_take_offset(ImgBench *b)
{
    int64_t offset = b->next_offset;

    b->next_offset += b->step;
    if (b->image_size <= b->bufsize) {
        b->next_offset = 0;
    } else {
        b->next_offset %= b->image_size - b->bufsize;
    }
    return offset;
}

static void bench_fail(ImgBench *b, int ret)
{
    if (!b->error) {
        b->error = ret;
    }
}

static void bench_co_side_flush(void *opaque)
{
    ImgBench *b = opaque;
    int ret = backend_co_flush(b->be);

    if (ret < 0) {
        bench_fail(b, ret);
    }
    b->side_flushes--;
}

static void bench_side_flush_cb(void *opaque, int64_t ret)
{
    ImgBench *b = opaque;

    if (ret < 0) {
        bench_fail(b, (int)ret);
    }
    b->side_flushes--;
}

/* Bookkeeping of one successful completion, both forms. */
static void bench_completed(ImgBench *b)
{
    b->completed++;
    if (b->mw) {
        malloc_window_note(b);
        if (b->completed == b->count) {
            b->end_ns = clock_ns();
        }
    } else if (b->malloc_get && b->completed == b->warmup) {
        b->mallocs_at_warmup = b->malloc_get();
        if (b->malloc_trace) {
            b->malloc_trace(1);
        }
    }
    if (b->completed == b->count) {
        b->end_ns = clock_ns();
        if (b->malloc_get) {
            if (b->malloc_trace) {
                b->malloc_trace(0);
            }
            b->mallocs_at_end = b->malloc_get();
        }
    }

    int unsubmitted = b->count - b->submitted;
    if (!b->flush_interval || unsubmitted == 0 ||
        unsubmitted % b->flush_interval) {
        return;
    }
    if (b->drain_on_flush) {
        b->flush_due = true;
        return;
    }
    b->side_flushes++;
    b->flushes++;
    if (b->co_form) {
        loop_co_spawn(b->loop, bench_co_side_flush, b);
    } else {
        int ret = strata_backend_aio_flush(b->be, bench_side_flush_cb, b);
        if (ret < 0) {
            b->side_flushes--;
            bench_fail(b, ret);
        }
    }
}

/* Co form: one coroutine per slot. */
static void bench_co_worker(void *opaque)
{
    BenchSlot *slot = opaque;
    ImgBench *b = slot->b;

    while (!b->error) {
        if (b->flush_due) {
            if (b->in_flight == 0 && !b->flushing) {
                /* The last request of the batch is done: this slot sends
                 * the flush, the others wait at the gate. */
                b->flushing = true;
                b->flushes++;
                int ret = backend_co_flush(b->be);
                b->flushing = false;
                b->flush_due = false;
                if (ret < 0) {
                    bench_fail(b, ret);
                }
                co_queue_restart_all(&b->gate);
            } else {
                co_queue_wait(&b->gate, NULL);
            }
            continue;
        }
        if (b->submitted >= b->count) {
            break;
        }
        int64_t offset = bench_take_offset(b);
        int ret;

        b->submitted++;
        b->in_flight++;
        if (b->write) {
            ret = backend_co_pwritev(b->be, offset, b->bufsize, &slot->qiov, 0);
        } else {
            ret = backend_co_preadv(b->be, offset, b->bufsize, &slot->qiov, 0);
        }
        b->in_flight--;
        if (ret < 0) {
            bench_fail(b, ret);
            break;
        }
        bench_completed(b);
    }
    b->workers--;
    /* A failed run may leave others at the gate: let them see the error. */
    co_queue_restart_all(&b->gate);
}

/* Callback form: qemu-img bench's shape. */
static void bench_cb(void *opaque, int64_t ret);

static void bench_submit(ImgBench *b, BenchSlot *slot)
{
    int64_t offset = bench_take_offset(b);
    int ret;

    b->submitted++;
    b->in_flight++;
    if (b->write) {
        ret = strata_backend_aio_pwritev(b->be, offset, slot->iov, slot->niov, 0,
                                         bench_cb, slot);
    } else {
        ret = strata_backend_aio_preadv(b->be, offset, slot->iov, slot->niov, 0,
                                        bench_cb, slot);
    }
    if (ret < 0) {
        b->in_flight--;
        bench_fail(b, ret);
    }
}

static void bench_drain_flush_cb(void *opaque, int64_t ret)
{
    ImgBench *b = opaque;

    b->flushing = false;
    b->flush_due = false;
    if (ret < 0) {
        bench_fail(b, (int)ret);
        return;
    }
    while (b->nparked > 0 && !b->error) {
        BenchSlot *slot = b->parked[--b->nparked];
        if (b->submitted < b->count) {
            bench_submit(b, slot);
        }
    }
    b->nparked = 0;
}

static void bench_cb(void *opaque, int64_t ret)
{
    BenchSlot *slot = opaque;
    ImgBench *b = slot->b;

    b->in_flight--;
    if (ret < 0) {
        bench_fail(b, (int)ret);
        return;
    }
    bench_completed(b);
    if (b->error) {
        return;
    }
    if (b->flush_due) {
        b->parked[b->nparked++] = slot;
        if (b->in_flight == 0 && !b->flushing) {
            b->flushing = true;
            b->flushes++;
            int r = strata_backend_aio_flush(b->be, bench_drain_flush_cb, b);
            if (r < 0) {
                b->flushing = false;
                bench_fail(b, r);
            }
        }
        return;
    }
    if (b->submitted < b->count) {
        bench_submit(b, slot);
    }
}

static bool bench_busy(ImgBench *b)
{
    if (b->co_form) {
        return b->workers > 0 || b->side_flushes > 0;
    }
    return b->in_flight > 0 || b->flushing || b->side_flushes > 0 ||
           (!b->error && b->completed < b->count);
}

/* Start the slots and run the loop until the run is over. */
static void bench_run(ImgBench *b, BenchSlot *slots)
{
    if (b->idle_start_ms > 0) {
        g_usleep((gulong)b->idle_start_ms * 1000);
    }
    b->start_ns = clock_ns();
    if (b->co_form) {
        for (int i = 0; i < b->depth; i++) {
            b->workers++;
            loop_co_spawn(b->loop, bench_co_worker, &slots[i]);
        }
    } else {
        for (int i = 0; i < b->depth && b->submitted < b->count && !b->error; i++) {
            bench_submit(b, &slots[i]);
        }
    }
    while (bench_busy(b)) {
        if (b->error && !b->co_form && b->in_flight == 0 && !b->flushing &&
            b->side_flushes == 0) {
            break;
        }
        loop_run_once(b->loop, true);
    }
    if (!b->end_ns) {
        b->end_ns = clock_ns();
    }
}

/* --queues: one thread per extra queue. */
typedef struct BenchQueue {
    ImgBench b;
    BenchSlot *slots;
    GThread *thread;
    StrataQueue *q;
    StrataError *err;
    struct BenchSync *sync;
} BenchQueue;

typedef struct BenchSync {
    Mutex lock;
    Cond cond;
    int ready;                  /* queues created */
    bool go;                    /* start */
    int finished;               /* runs over */
    bool release;               /* the main thread took its snapshot */
} BenchSync;

static void sync_wait(BenchSync *y, bool *flag)
{
    mutex_lock(&y->lock);
    while (!*flag) {
        cond_wait(&y->cond, &y->lock);
    }
    mutex_unlock(&y->lock);
}

static void sync_count(BenchSync *y, int *counter)
{
    mutex_lock(&y->lock);
    (*counter)++;
    cond_broadcast(&y->cond);
    mutex_unlock(&y->lock);
}

static gpointer bench_queue_thread(gpointer opaque)
{
    BenchQueue *bq = opaque;
    BenchSync *y = bq->sync;

    bq->q = strata_queue_new(bq->b.ctx, &bq->err);
    if (bq->q) {
        bq->b.loop = bq->q->loop;
        loop_set_poll_params(bq->b.loop, bq->b.poll_max_ns, 0, 0);
        /* The callback form submits from this thread outside the loop
         * too: send it to this queue. */
        strata_queue_set_current(bq->q);
    }
    sync_count(y, &y->ready);
    if (!bq->q) {
        return NULL;
    }
    sync_wait(y, &y->go);
    bench_run(&bq->b, bq->slots);
    sync_count(y, &y->finished);
    /* The queue's engine state lives until the main thread has read it. */
    sync_wait(y, &y->release);
    strata_queue_free(bq->q);
    return NULL;
}

/* ---- statistics of the chain ------------------------------------------------------ */

typedef struct ChainStats {
    int n;
    StrataNode *node[BENCH_MAX_CHAIN];
    StrataStats st[BENCH_MAX_CHAIN];
    bool have_engine;
    const char *engine_name;
    AioEngineStats engine;
} ChainStats;

static void chain_snapshot(StrataBackend *be, ChainStats *cs)
{
    memset(cs, 0, sizeof(*cs));
    for (StrataNode *n = strata_backend_get_root(be); n && cs->n < BENCH_MAX_CHAIN;
         n = node_filtered(n)) {
        cs->node[cs->n] = n;
        strata_node_get_stats(n, &cs->st[cs->n]);
        cs->n++;
        if (file_driver_is(n->drv)) {
            FileInfo fi;
            file_get_info(n, &fi);
            const AioEngineOps *ops = aio_engine_get(fi.engine);
            cs->engine_name = fi.engine_name;
            /* Every queue's ring or context, summed. */
            for (unsigned q = 0; ops && ops->get_stats &&
                 (unsigned)fi.engine < AIO_ENGINE__MAX && q < STRATA_MAX_QUEUES; q++) {
                StrataQueue *sq = n->ctx->queues[q];
                AioEngineStats e;
                if (!sq || !sq->engine[fi.engine]) {
                    continue;
                }
                ops->get_stats(sq->engine[fi.engine], &e);
                cs->engine.submits += e.submits;
                cs->engine.syscalls += e.syscalls;
                cs->engine.completions += e.completions;
                cs->engine.reap_batches += e.reap_batches;
                cs->engine.max_batch = MAX(cs->engine.max_batch, e.max_batch);
                cs->engine.queue_waits += e.queue_waits;
                cs->engine.retries += e.retries;
                cs->engine.early += e.early;
                cs->engine.spins_won += e.spins_won;
                cs->have_engine = true;
            }
        }
    }
}

/* after -= before, counter by counter. */
static void chain_diff(ChainStats *after, const ChainStats *before)
{
    for (int i = 0; i < after->n; i++) {
        StrataStats *a = &after->st[i];
        const StrataStats *b = &before->st[i];
        for (int t = 0; t < STRATA_STATS__MAX; t++) {
            a->op[t].ops -= b->op[t].ops;
            a->op[t].bytes -= b->op[t].bytes;
            a->op[t].errors -= b->op[t].errors;
            a->op[t].total_ns -= b->op[t].total_ns;
            for (int h = 0; h < STRATA_STATS_HIST_BUCKETS; h++) {
                a->op[t].hist[h] -= b->op[t].hist[h];
            }
        }
        a->padded_reads -= b->padded_reads;
        a->rmw_writes -= b->rmw_writes;
        a->serialising_waits -= b->serialising_waits;
        a->coalesced_writes -= b->coalesced_writes;
        a->bytes_bounced -= b->bytes_bounced;
        a->vectors_collapsed -= b->vectors_collapsed;
        a->pool_waits -= b->pool_waits;
        a->split_requests -= b->split_requests;
    }
    after->engine.submits -= before->engine.submits;
    after->engine.syscalls -= before->engine.syscalls;
    after->engine.completions -= before->engine.completions;
    after->engine.reap_batches -= before->engine.reap_batches;
    after->engine.queue_waits -= before->engine.queue_waits;
    after->engine.retries -= before->engine.retries;
}

/* Upper bound of histogram bucket @i in ns (bucket i is [2^i, 2^(i+1))). */
static uint64_t hist_hi(int i)
{
    return UINT64_C(1) << (i + 1);
}

/* Smallest bucket bound below which at least @q of the samples lie. */
static uint64_t hist_quantile(const StrataOpStats *o, double q)
{
    uint64_t total = 0, acc = 0;

    for (int i = 0; i < STRATA_STATS_HIST_BUCKETS; i++) {
        total += o->hist[i];
    }
    if (!total) {
        return 0;
    }
    for (int i = 0; i < STRATA_STATS_HIST_BUCKETS; i++) {
        acc += o->hist[i];
        if ((double)acc >= q * (double)total) {
            return hist_hi(i);
        }
    }
    return hist_hi(STRATA_STATS_HIST_BUCKETS - 1);
}

static char *fmt_ns(double ns)
{
    if (ns < 1e3) {
        return g_strdup_printf("%.0f ns", ns);
    } else if (ns < 1e6) {
        return g_strdup_printf("%.3g us", ns / 1e3);
    } else if (ns < 1e9) {
        return g_strdup_printf("%.3g ms", ns / 1e6);
    }
    return g_strdup_printf("%.3g s", ns / 1e9);
}

/* ---- results ------------------------------------------------------------------- */

typedef struct BenchResult {
    double seconds, iops, bytes_per_sec;
    double user_s, sys_s, cpu_ns_per_req;
    long max_rss_kb;
    bool have_mallocs;
    uint64_t mallocs, measured;
    double mallocs_per_req;
} BenchResult;

static const char *const pad_names[] = {
    "padded-reads", "rmw-writes", "serialising-waits", "coalesced-writes",
    "bytes-bounced", "vectors-collapsed", "pool-waits", "split-requests",
};

static void pad_values(const StrataStats *s, uint64_t v[8])
{
    v[0] = s->padded_reads;
    v[1] = s->rmw_writes;
    v[2] = s->serialising_waits;
    v[3] = s->coalesced_writes;
    v[4] = s->bytes_bounced;
    v[5] = s->vectors_collapsed;
    v[6] = s->pool_waits;
    v[7] = s->split_requests;
}

static void print_text(ImgBench *b, const BenchResult *r, const ChainStats *cs)
{
    int type = b->write ? STRATA_STATS_WRITE : STRATA_STATS_READ;
    const StrataOpStats *o = &cs->st[0].op[type];
    g_autofree char *bw = img_size_to_str((uint64_t)r->bytes_per_sec);

    printf("IOPS: %.0f, bandwidth: %s/s\n", r->iops, bw);
    printf("CPU time per request: %.3f us (user %.3f s, system %.3f s)\n",
           r->cpu_ns_per_req / 1e3, r->user_s, r->sys_s);
    if (o->ops) {
        g_autofree char *mean = fmt_ns((double)o->total_ns / (double)o->ops);
        g_autofree char *p50 = fmt_ns((double)hist_quantile(o, 0.5));
        g_autofree char *p99 = fmt_ns((double)hist_quantile(o, 0.99));
        g_autofree char *p999 = fmt_ns((double)hist_quantile(o, 0.999));
        printf("Latency at node '%s' (%s): mean %s, p50 < %s, p99 < %s, "
               "p99.9 < %s\n", strata_node_get_name(cs->node[0]),
               block_req_type_names[type], mean, p50, p99, p999);
        for (int i = 0; i < STRATA_STATS_HIST_BUCKETS; i++) {
            if (!o->hist[i]) {
                continue;
            }
            g_autofree char *lo = fmt_ns(i ? (double)(UINT64_C(1) << i) : 0);
            g_autofree char *hi = fmt_ns((double)hist_hi(i));
            printf("  [%8s, %8s) %10" PRIu64 " %5.1f%%\n", lo, hi, o->hist[i],
                   100.0 * (double)o->hist[i] / (double)o->ops);
        }
    }
    for (int i = 0; i < cs->n; i++) {
        uint64_t v[8];
        pad_values(&cs->st[i], v);
        printf("Padding at '%s' (%s):", strata_node_get_name(cs->node[i]),
               strata_node_get_driver(cs->node[i]));
        for (int k = 0; k < 8; k++) {
            printf(" %s %" PRIu64 "%s", pad_names[k], v[k], k < 7 ? "," : "\n");
        }
    }
    if (cs->have_engine) {
        const AioEngineStats *e = &cs->engine;
        printf("Engine %s: %" PRIu64 " requests in %" PRIu64 " submitting calls "
               "(%.1f per call, largest %" PRIu64 ", %" PRIu64 " early), %" PRIu64
               " queue waits, %" PRIu64 " retries, %" PRIu64 " sleeps spun away\n",
               cs->engine_name, e->submits,
               e->syscalls, e->syscalls ? (double)e->submits / (double)e->syscalls : 0,
               e->max_batch, e->early, e->queue_waits, e->retries, e->spins_won);
    } else if (cs->engine_name) {
        printf("Engine %s\n", cs->engine_name);
    }
    if (b->flushes) {
        printf("Flushes: %d\n", b->flushes);
    }
    if (r->have_mallocs) {
        printf("mallocs per request: %.3f (%" PRIu64 " over %" PRIu64
               " requests after a warm-up of %d)\n", r->mallocs_per_req,
               r->mallocs, r->measured, b->warmup);
    }
}

static void print_json(ImgBench *b, const BenchResult *r, const ChainStats *cs,
                       int64_t first_offset, const struct BenchQueue *qs,
                       int nqueues)
{
    g_autoptr(JsonBuilder) j = json_builder_new();
    int type = b->write ? STRATA_STATS_WRITE : STRATA_STATS_READ;
    const StrataOpStats *o = &cs->st[0].op[type];

#define J_INT(k, v) do { json_builder_set_member_name(j, k); \
                         json_builder_add_int_value(j, (gint64)(v)); } while (0)
#define J_DBL(k, v) do { json_builder_set_member_name(j, k); \
                         json_builder_add_double_value(j, (v)); } while (0)
#define J_STR(k, v) do { json_builder_set_member_name(j, k); \
                         json_builder_add_string_value(j, (v)); } while (0)
#define J_BOOL(k, v) do { json_builder_set_member_name(j, k); \
                          json_builder_add_boolean_value(j, (v)); } while (0)
    json_builder_begin_object(j);
    J_STR("tool", "strata-img");
    J_STR("op", b->write ? "write" : "read");
    J_INT("count", b->count);
    J_INT("depth", b->depth);
    J_INT("bufsize", b->bufsize);
    J_INT("step", b->step);
    J_INT("offset", first_offset);
    J_INT("vectors", b->vectors);
    J_STR("form", b->co_form ? "co" : "callback");
    J_INT("flushes", b->flushes);
    J_INT("queues", nqueues);
    J_INT("idle_start_ms", b->idle_start_ms);
    if (nqueues > 1) {
        json_builder_set_member_name(j, "per-queue-iops");
        json_builder_begin_array(j);
        for (int i = 0; i < nqueues; i++) {
            const ImgBench *qb = &qs[i].b;
            json_builder_add_double_value(j, (double)qb->count * 1e9 /
                                             (double)(qb->end_ns - qb->start_ns));
        }
        json_builder_end_array(j);
    }
    J_DBL("seconds", r->seconds);
    J_DBL("iops", r->iops);
    J_DBL("bytes-per-second", r->bytes_per_sec);
    J_DBL("user-seconds", r->user_s);
    J_DBL("system-seconds", r->sys_s);
    J_DBL("cpu-ns-per-request", r->cpu_ns_per_req);
    J_INT("max-rss-kb", r->max_rss_kb);
    if (r->have_mallocs) {
        J_DBL("mallocs-per-request", r->mallocs_per_req);
        J_INT("mallocs", r->mallocs);
        J_INT("malloc-measured-requests", r->measured);
    }

    json_builder_set_member_name(j, "latency");
    json_builder_begin_object(j);
    J_STR("node", strata_node_get_name(cs->node[0]));
    J_INT("ops", o->ops);
    J_DBL("mean-ns", o->ops ? (double)o->total_ns / (double)o->ops : 0);
    J_INT("p50-ns", hist_quantile(o, 0.5));
    J_INT("p90-ns", hist_quantile(o, 0.9));
    J_INT("p99-ns", hist_quantile(o, 0.99));
    J_INT("p99.9-ns", hist_quantile(o, 0.999));
    json_builder_set_member_name(j, "histogram");
    json_builder_begin_array(j);
    for (int i = 0; i < STRATA_STATS_HIST_BUCKETS; i++) {
        if (o->hist[i]) {
            json_builder_begin_object(j);
            J_INT("lo-ns", i ? UINT64_C(1) << i : 0);
            J_INT("hi-ns", hist_hi(i));
            J_INT("count", o->hist[i]);
            json_builder_end_object(j);
        }
    }
    json_builder_end_array(j);
    json_builder_end_object(j);

    json_builder_set_member_name(j, "nodes");
    json_builder_begin_array(j);
    for (int i = 0; i < cs->n; i++) {
        uint64_t v[8];
        pad_values(&cs->st[i], v);
        json_builder_begin_object(j);
        J_STR("node-name", strata_node_get_name(cs->node[i]));
        J_STR("driver", strata_node_get_driver(cs->node[i]));
        J_INT("ops", cs->st[i].op[type].ops);
        for (int k = 0; k < 8; k++) {
            J_INT(pad_names[k], v[k]);
        }
        json_builder_end_object(j);
    }
    json_builder_end_array(j);

    if (cs->engine_name) {
        json_builder_set_member_name(j, "engine");
        json_builder_begin_object(j);
        J_STR("name", cs->engine_name);
        if (cs->have_engine) {
            J_INT("submits", cs->engine.submits);
            J_INT("syscalls", cs->engine.syscalls);
            J_INT("max-batch", cs->engine.max_batch);
            J_INT("early", cs->engine.early);
            J_INT("queue-waits", cs->engine.queue_waits);
            J_INT("retries", cs->engine.retries);
            J_INT("spins-won", cs->engine.spins_won);
        }
        json_builder_end_object(j);
    }
    json_builder_end_object(j);
#undef J_INT
#undef J_DBL
#undef J_STR
#undef J_BOOL

    g_autoptr(JsonNode) root = json_builder_get_root(j);
    g_autoptr(JsonGenerator) gen = json_generator_new();
    json_generator_set_pretty(gen, TRUE);
    json_generator_set_root(gen, root);
    g_autofree char *text = json_generator_to_data(gen, NULL);
    printf("%s\n", text);
}

/* ---- options and the run ------------------------------------------------------------ */

static void bench_usage(void)
{
    printf(
"Usage: strata-img bench [OPTIONS] FILE\n"
"Run a simple sequential I/O benchmark on FILE, as qemu-img bench does\n"
"\n"
"  -c COUNT             number of requests (default 75000)\n"
"  -d DEPTH             requests in flight (default 64)\n"
"  -f FMT               driver of the top node (default raw)\n"
"  --flush-interval=N   flush every N requests (writes only)\n"
"  -i AIO               file.aio: threads, native, io_uring, auto\n"
"  -n                   native AIO, as -i native (needs -t none)\n"
"  --no-drain           do not drain the queue before a flush\n"
"  -o OFFSET            offset of the first request (default 0)\n"
"  --pattern=N          fill the buffers with byte N (default 0)\n"
"  -q                   print only qemu-img bench's lines\n"
"  -s SIZE              bytes per request (default 4096)\n"
"  -S STEP              offset step between requests (default SIZE)\n"
"  -t CACHE             cache mode (default writeback)\n"
"  -w                   write instead of read\n"
"  -U                   share all permissions with other users\n"
"  --image-opts         FILE is dotted option keys\n"
"  --object OBJ         create an object first (throttle-group,id=ID,...)\n"
"  --vectors=N          split each request's buffer into N elements\n"
"  --form=co|callback   coroutine form (default) or the public callback API\n"
"  --one-buffer         all slots share one buffer (what qemu-img bench does)\n"
"  --queues=N           N threads, one queue each (-c total, -d per queue)\n"
"  --poll-max-ns=N      busy-poll up to N ns before sleeping (as an\n"
"                       iothread's poll-max-ns; default 0: never)\n"
"  --idle-start=MS      sleep MS ms before the measured phase, as fio's\n"
"                       job does (default 0)\n"
"  --json               print the result as a JSON object\n"
"  --malloc-report      count heap allocations per request (needs\n"
"                       LD_PRELOAD=.../tests/bench/malloc-count.so)\n");
}

/* An int option in [min, INT_MAX]; false with qemu-img's message. */
static bool parse_int_opt(const char *s, int min, const char *msg, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 0);
    if (errno || end == s || *end || v < min || v > INT_MAX) {
        img_error("%s", msg);
        return false;
    }
    *out = (int)v;
    return true;
}

int img_bench(int argc, char **argv)
{
    enum {
        OPT_FLUSH_INTERVAL = 256, OPT_IMAGE_OPTS, OPT_PATTERN, OPT_NO_DRAIN,
        OPT_VECTORS, OPT_FORM, OPT_JSON, OPT_MALLOC_REPORT, OPT_ONE_BUFFER,
        OPT_OBJECT_ARG, OPT_QUEUES, OPT_POLL_MAX_NS, OPT_IDLE_START,
    };
    static const struct option long_opts[] = {
        { "help", no_argument, NULL, 'h' },
        { "flush-interval", required_argument, NULL, OPT_FLUSH_INTERVAL },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "object", required_argument, NULL, OPT_OBJECT_ARG },
        { "pattern", required_argument, NULL, OPT_PATTERN },
        { "no-drain", no_argument, NULL, OPT_NO_DRAIN },
        { "force-share", no_argument, NULL, 'U' },
        { "vectors", required_argument, NULL, OPT_VECTORS },
        { "form", required_argument, NULL, OPT_FORM },
        { "json", no_argument, NULL, OPT_JSON },
        { "malloc-report", no_argument, NULL, OPT_MALLOC_REPORT },
        { "one-buffer", no_argument, NULL, OPT_ONE_BUFFER },
        { "queues", required_argument, NULL, OPT_QUEUES },
        { "poll-max-ns", required_argument, NULL, OPT_POLL_MAX_NS },
        { "idle-start", required_argument, NULL, OPT_IDLE_START },
        { NULL, 0, NULL, 0 },
    };
    ImgOpenFlags f = { 0 };
    ImgBench b = {
        .count = 75000, .depth = 64, .vectors = 1, .bufsize = 4096,
        .drain_on_flush = true, .co_form = true,
    };
    int64_t offset = 0, step = 0;
    int pattern = 0;
    bool quiet = false, json = false, malloc_report = false, native_aio = false;
    bool one_buffer = false;
    int nqueues = 1;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, ":hc:d:f:ni:o:qs:S:t:wU", long_opts,
                            NULL)) != -1) {
        switch (c) {
        case 'h':
            bench_usage();
            return 0;
        case ':':
            img_error("argument missing for option '%s'", argv[optind - 1]);
            return 1;
        case '?':
            img_error("unrecognized option '%s'", argv[optind - 1]);
            bench_usage();
            return 1;
        case 'c':
            if (!parse_int_opt(optarg, 1, "Invalid request count specified",
                               &b.count)) {
                return 1;
            }
            break;
        case 'd':
            if (!parse_int_opt(optarg, 1, "Invalid queue depth specified",
                               &b.depth)) {
                return 1;
            }
            break;
        case 'f':
            f.fmt = optarg;
            break;
        case 'n':
            native_aio = true;
            break;
        case 'i':
            f.aio = optarg;
            break;
        case 'o':
            if (!img_parse_size("offset", optarg, &offset)) {
                return 1;
            }
            break;
        case 'q':
            quiet = true;
            break;
        case 's':
            if (!img_parse_size("buffer size", optarg, &b.bufsize) ||
                b.bufsize <= 0 || b.bufsize > INT_MAX) {
                img_error("Invalid buffer size specified");
                return 1;
            }
            break;
        case 'S':
            if (!img_parse_size("step size", optarg, &step) || step > INT_MAX) {
                img_error("Invalid step size specified");
                return 1;
            }
            break;
        case 't':
            f.cache = optarg;
            break;
        case 'w':
            f.writable = true;
            b.write = true;
            break;
        case 'U':
            f.force_share = true;
            break;
        case OPT_FLUSH_INTERVAL:
            if (!parse_int_opt(optarg, 0, "Invalid flush interval specified",
                               &b.flush_interval)) {
                return 1;
            }
            break;
        case OPT_IMAGE_OPTS:
            f.image_opts = true;
            break;
        case OPT_OBJECT_ARG:
            if (!img_object_add(optarg)) {
                return 1;
            }
            break;
        case OPT_PATTERN:
            if (!parse_int_opt(optarg, 0, "Invalid pattern byte specified",
                               &pattern) || pattern > 0xff) {
                img_error("Invalid pattern byte specified");
                return 1;
            }
            break;
        case OPT_NO_DRAIN:
            b.drain_on_flush = false;
            break;
        case OPT_VECTORS:
            if (!parse_int_opt(optarg, 1, "Invalid vector count specified",
                               &b.vectors)) {
                return 1;
            }
            break;
        case OPT_FORM:
            if (!strcmp(optarg, "co")) {
                b.co_form = true;
            } else if (!strcmp(optarg, "callback")) {
                b.co_form = false;
            } else {
                img_error("--form must be co or callback");
                return 1;
            }
            break;
        case OPT_JSON:
            json = true;
            break;
        case OPT_MALLOC_REPORT:
            malloc_report = true;
            break;
        case OPT_ONE_BUFFER:
            one_buffer = true;
            break;
        case OPT_POLL_MAX_NS:
            if (!tool_parse_poll_max_ns(optarg, &b.poll_max_ns)) {
                img_error(TOOL_POLL_MAX_NS_ERROR, optarg, INT64_MAX);
                return 1;
            }
            break;
        case OPT_IDLE_START: {
            g_autofree char *msg = g_strdup_printf(
                "--idle-start '%s': milliseconds between 0 and %d", optarg,
                BENCH_MAX_IDLE_START_MS);
            if (!parse_int_opt(optarg, 0, msg, &b.idle_start_ms)) {
                return 1;
            }
            if (b.idle_start_ms > BENCH_MAX_IDLE_START_MS) {
                img_error("%s", msg);
                return 1;
            }
            break;
        }
        case OPT_QUEUES: {
            /* One message, naming the option and its range. */
            g_autofree char *msg = g_strdup_printf(
                "--queues '%s': the number of queues is between 1 and %d",
                optarg, STRATA_MAX_QUEUES);
            if (!parse_int_opt(optarg, 1, msg, &nqueues) ||
                nqueues > STRATA_MAX_QUEUES) {
                if (nqueues > STRATA_MAX_QUEUES) {
                    img_error("%s", msg);
                }
                return 1;
            }
            break;
        }
        }
    }
    if (argc - optind != 1) {
        img_error("Expecting one image file name");
        return 1;
    }
    const char *filename = argv[optind];
    if (native_aio && !f.aio) {
        /* qemu-img bench's -n: native AIO, which needs -t none (or another
         * O_DIRECT cache mode).  Where qemu-img lets -n win over -i, here
         * -i names the engine. */
        f.aio = "native";
    }
    if (b.flush_interval && b.flush_interval < b.depth) {
        img_error("Flush interval can't be smaller than depth");
        return 1;
    }
    if (b.flush_interval && !b.write) {
        img_error("--flush-interval is only available in write tests");
        return 1;
    }
    if (nqueues > b.count) {
        img_error("--queues %d: more queues than requests (%d)", nqueues, b.count);
        return 1;
    }
    if (b.vectors > b.bufsize) {
        img_error("--vectors %d: more elements than bytes per request (%" PRId64 ")",
                  b.vectors, b.bufsize);
        return 1;
    }
    b.step = step ? step : b.bufsize;
    b.next_offset = offset;

    StrataError *err = NULL;
    b.ctx = strata_context_new(&err);
    if (b.ctx) {
        strata_context_set_poll_max_ns(b.ctx, b.poll_max_ns);
        b.be = img_open(b.ctx, filename, &f, &err);
    }
    if (!b.be) {
        img_error("Could not open '%s': %s", filename, strata_error_get_message(err));
        strata_error_free(err);
        if (b.ctx) {
            strata_context_free(b.ctx);
        }
        return 1;
    }
    b.image_size = strata_backend_get_length(b.be);
    if (b.image_size < 0) {
        img_error("Could not get the image size: %s", strerror((int)-b.image_size));
        strata_backend_free(b.be);
        strata_context_free(b.ctx);
        return 1;
    }

    if (!json) {
        printf("Sending %d %s requests, %" PRId64 " bytes each, %d in parallel "
               "(starting at offset %" PRId64 ", step size %" PRId64 ")\n",
               b.count, b.write ? "write" : "read", b.bufsize, b.depth, offset,
               b.step);
        if (b.flush_interval) {
            printf("Sending flush every %d requests\n", b.flush_interval);
        }
        fflush(stdout);
    }

    /* One buffer per slot, allocated once: page-aligned at least, as
     * qemu-img's blk_blockalign() gives for files, and to the node's
     * opt_mem_alignment, so that only --vectors makes elements the
     * request path must bounce. */
    StrataLimits lim;
    strata_node_get_limits(strata_backend_get_root(b.be), &lim);
    size_t align = MAX((size_t)lim.opt_mem_alignment, (size_t)sysconf(_SC_PAGESIZE));
    size_t total = (size_t)b.depth * (size_t)nqueues * (size_t)b.bufsize;
    void *buf = NULL;
    if (posix_memalign(&buf, align, total)) {
        img_error("Could not allocate %zu bytes of buffers", total);
        strata_backend_free(b.be);
        strata_context_free(b.ctx);
        return 1;
    }
    memset(buf, pattern, total);

    int nslots = b.depth * nqueues;
    BenchSlot *slots = g_new0(BenchSlot, nslots);
    struct iovec *iovs = g_new(struct iovec, (size_t)nslots * (size_t)b.vectors);
    b.parked = g_new(BenchSlot *, b.depth);
    size_t elem = (size_t)b.bufsize / (size_t)b.vectors;
    for (int i = 0; i < nslots; i++) {
        BenchSlot *s = &slots[i];
        /* --one-buffer: every slot uses the first slot's buffer, which is
         * what qemu-img bench does in fact (it passes its first vector to
         * every request); for large requests the working set then stays
         * in the CPU cache, which flatters the kernel's copies. */
        char *base = (char *)buf + (one_buffer ? 0 : (size_t)i * (size_t)b.bufsize);

        s->b = &b;
        s->iov = &iovs[(size_t)i * (size_t)b.vectors];
        s->niov = b.vectors;
        /*
         * Elements lie in the slot's buffer in reverse order, the first
         * element last:
         *
         *   buffer  |e[n-1] ...rest| e[n-2] | ... | e[1] | e[0] |
         *
         * so that no element ends where the next one begins and the
         * request path cannot merge them back into one: a guest's
         * scatter-gather list is rarely contiguous in host memory.  The
         * first element (at the end) takes what the division leaves over.
         */
        size_t first_len = (size_t)b.bufsize - (size_t)(b.vectors - 1) * elem;
        for (int k = 0; k < b.vectors; k++) {
            size_t pos = k == 0 ? (size_t)b.bufsize - first_len
                                : (size_t)(b.vectors - 1 - k) * elem;
            s->iov[k].iov_base = base + pos;
            s->iov[k].iov_len = k == 0 ? first_len : elem;
        }
        iov_init_external(&s->qiov, s->iov, s->niov);
    }
    co_queue_init(&b.gate);

    if (malloc_report) {
        b.malloc_get = (MallocCountGet *)dlsym(RTLD_DEFAULT, "malloc_count_get");
        b.malloc_trace = (MallocCountTrace *)dlsym(RTLD_DEFAULT, "malloc_count_trace");
        if (!b.malloc_get) {
            img_error("--malloc-report: malloc_count_get() not found; run with "
                      "LD_PRELOAD=<build>/tests/bench/malloc-count.so");
        }
        b.warmup = MIN(BENCH_WARMUP, b.count / 2);
        if (b.warmup == 0 && b.malloc_get) {
            b.mallocs_at_warmup = b.malloc_get();
        }
    }

    /* --queues: queue i takes count / N requests (the first ones the
     * remainder), from where the single cursor would be after the shares
     * before it. */
    b.loop = b.ctx->loop;
    MallocWindow mwin = { .nqueues = nqueues };
    if (nqueues > 1 && b.malloc_get) {
        b.mw = &mwin;
    }
    BenchQueue *qs = g_new0(BenchQueue, nqueues);
    BenchSync sync = { 0 };
    mutex_init(&sync.lock);
    cond_init(&sync.cond);
    int total_count = b.count;
    for (int i = 1; i < nqueues; i++) {
        BenchQueue *bq = &qs[i];
        bq->b = b;
        bq->b.count = total_count / nqueues + (i < total_count % nqueues);
        bq->b.warmup = MIN(BENCH_WARMUP, bq->b.count / 2);
        bq->b.parked = g_new(BenchSlot *, b.depth);
        co_queue_init(&bq->b.gate);
        bq->slots = &slots[i * b.depth];
        bq->sync = &sync;
    }
    b.count = total_count / nqueues + (total_count % nqueues > 0);
    if (b.mw) {
        b.warmup = MIN(BENCH_WARMUP, b.count / 2);
    }
    for (int i = 1; i < nqueues; i++) {
        int64_t skip = 0;
        for (int k = 0; k < i; k++) {
            skip += k == 0 ? b.count : qs[k].b.count;
        }
        ImgBench cursor = b;
        for (int64_t k = 0; k < skip; k++) {
            bench_take_offset(&cursor);
        }
        qs[i].b.next_offset = cursor.next_offset;
    }
    for (int i = 0; i < nslots; i++) {
        slots[i].b = i < b.depth ? &b : &qs[i / b.depth].b;
    }
    bool queues_ok = true;
    for (int i = 1; i < nqueues; i++) {
        qs[i].thread = g_thread_new("bench-queue", bench_queue_thread, &qs[i]);
    }
    mutex_lock(&sync.lock);
    while (sync.ready < nqueues - 1) {
        cond_wait(&sync.cond, &sync.lock);
    }
    mutex_unlock(&sync.lock);
    for (int i = 1; i < nqueues; i++) {
        if (!qs[i].q) {
            img_error("Could not create queue %d: %s", i,
                      strata_error_get_message(qs[i].err));
            queues_ok = false;
        }
    }

    ChainStats before, after;
    struct rusage ru0, ru1;
    chain_snapshot(b.be, &before);
    getrusage(RUSAGE_SELF, &ru0);
    int64_t wall0 = clock_ns();
    if (queues_ok) {
        mutex_lock(&sync.lock);
        sync.go = true;
        cond_broadcast(&sync.cond);
        mutex_unlock(&sync.lock);
        bench_run(&b, slots);
        mutex_lock(&sync.lock);
        while (sync.finished < nqueues - 1) {
            cond_wait(&sync.cond, &sync.lock);
        }
        mutex_unlock(&sync.lock);
    }
    int64_t wall1 = clock_ns();
    getrusage(RUSAGE_SELF, &ru1);
    chain_snapshot(b.be, &after);
    chain_diff(&after, &before);
    mutex_lock(&sync.lock);
    sync.go = true;
    sync.release = true;
    cond_broadcast(&sync.cond);
    mutex_unlock(&sync.lock);
    for (int i = 1; i < nqueues; i++) {
        g_thread_join(qs[i].thread);
        strata_error_free(qs[i].err);
        if (qs[i].b.error) {
            bench_fail(&b, qs[i].b.error);
        }
        b.flushes += qs[i].b.flushes;
    }
    if (!queues_ok) {
        bench_fail(&b, -EAGAIN);
    }
    qs[0].b = b;
    b.count = total_count;
    if (nqueues > 1) {
        b.start_ns = wall0;
        b.end_ns = wall1;
    }

    int status = 0;
    if (b.error) {
        img_error("Failed request: %s", strerror(-b.error));
        status = 1;
    } else {
        BenchResult r = { 0 };
        r.seconds = (double)(b.end_ns - b.start_ns) / 1e9;
        r.iops = (double)b.count / r.seconds;
        r.bytes_per_sec = r.iops * (double)b.bufsize;
        r.user_s = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                   (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6;
        r.sys_s = (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                  (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
        r.cpu_ns_per_req = (r.user_s + r.sys_s) * 1e9 / (double)b.count;
        r.max_rss_kb = ru1.ru_maxrss;
        if (b.mw) {
            r.have_mallocs = mwin.state == 2;
            r.mallocs = mwin.m1 - mwin.m0;
            r.measured = (uint64_t)(mwin.c1 - mwin.c0);
            r.mallocs_per_req = r.measured ? (double)r.mallocs / (double)r.measured : 0;
        } else if (b.malloc_get) {
            r.have_mallocs = true;
            r.mallocs = b.mallocs_at_end - b.mallocs_at_warmup;
            r.measured = (uint64_t)(b.count - b.warmup);
            r.mallocs_per_req = r.measured ? (double)r.mallocs / (double)r.measured : 0;
        }
        if (json) {
            print_json(&b, &r, &after, offset, qs, nqueues);
        } else {
            printf("Run completed in %3.3f seconds.\n", r.seconds);
            if (!quiet) {
                print_text(&b, &r, &after);
                for (int i = 0; nqueues > 1 && i < nqueues; i++) {
                    const ImgBench *qb = &qs[i].b;
                    double secs = (double)(qb->end_ns - qb->start_ns) / 1e9;
                    printf("Queue %d: %d requests in %.3f s, IOPS %.0f\n", i,
                           qb->count, secs, (double)qb->count / secs);
                }
            }
        }
    }

    /* Untimed, as in qemu-img: the writes of the last interval become
     * durable before the image closes. */
    if (!b.error && b.flush_interval) {
        int ret = strata_backend_flush(b.be);
        if (ret < 0) {
            img_error("Failed flush request: %s", strerror(-ret));
            status = 1;
        }
    }
    strata_backend_free(b.be);
    strata_context_free(b.ctx);
    for (int i = 1; i < nqueues; i++) {
        g_free(qs[i].b.parked);
    }
    g_free(qs);
    mutex_cleanup(&sync.lock);
    cond_cleanup(&sync.cond);
    g_free(b.parked);
    g_free(iovs);
    g_free(slots);
    free(buf);
    return status;
}
