/*
 * The random model test of request shaping: many concurrent, overlapping,
 * unaligned requests checked against every serial order real time allows
 * (block/pad.c, block/io.c)
 * SPDX-License-Identifier: MIT
 *
 * Like test-pad.c, it opens a graph of one "mem" node through the public
 * API, puts a backend on it and drives I/O through the backend (callback
 * form), and mem's limit-violation counter must be 0 at the end (DESIGN.md
 * invariant 1: every request reaching a driver fits its limits).
 *
 * Random tests take their seed from STRATA_TEST_SEED (default: a fixed
 * list) and print it on failure.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

#include "block/backend-int.h"
#include "block/block-int.h"
#include "block/io.h"
#include "block/mem.h"
#include "memdev.h"
#include "pad-harness.h"

/* ---- the random model test --------------------------------------------------------
 *
 * Thousands of reads, writes and write-zeroes with unaligned offsets and
 * lengths and vectored, misaligned buffers, many in flight at once through
 * the callback API, on a small device (so they overlap a lot) whose
 * requests complete in a seeded random order after a random delay.
 *
 * The checker.  Each write w gets a unique id; byte x it writes is
 * pat(id, x) (0 for write-zeroes).  A logical clock ticks at every
 * submission and every completion, giving each request issued(r) and
 * completed(r).  The allowed histories are those where, for every
 * request-alignment block, the writes covering it take effect one at a
 * time, whole, in some order that respects real time: if w1 completed
 * before w2 was issued, w1 comes first.  Requests that were in flight
 * together may take effect in any order.  So:
 *
 *  - Final state: for each block B, with W the writes overlapping it,
 *    there must be a linear extension of the real-time order on W whose
 *    application to the initial content yields B's final bytes.  A lost
 *    update (an RMW that read before another write and wrote after it)
 *    or a torn block (bytes of two writes interleaved in a way no order
 *    explains) has no such order.
 *  - Reads: for each block a read covers, the bytes it returned must be
 *    the state after some set S of writes applied in such an order, where
 *    S holds every write that completed before the read was issued, none
 *    issued after it completed, and is closed under the real-time order;
 *    the writes in flight during the read are tried in and out (every
 *    closed subset, when at most 10).  A read that saw half an RMW fails.
 *
 * Deciding whether such an order exists is done from the end backwards:
 * pick a write that may come last (nothing in the set must follow it) and
 * whose bytes match the wanted bytes wherever no later-placed write
 * already explains them; place it, mark its bytes explained, repeat; the
 * bytes no write explains must hold the initial content.  Choosing any
 * eligible write is safe: if an order exists, moving an eligible write to
 * the end of the remaining ones gives another valid order (it is maximal,
 * and it matches all bytes it would now own), so the greedy search never
 * has to backtrack and decides the question exactly.
 */

typedef struct MWrite {
    int64_t offset, bytes;
    uint32_t id;                /* 0: write-zeroes */
    int64_t issued, completed;  /* logical clock; completed INT64_MAX in flight */
} MWrite;

typedef struct ModelCfg {
    const char *name;
    uint32_t align, mem_align, iov_len_align;
    int64_t max_transfer;
    int max_iov;
    bool coalesce;
    int64_t size;
} ModelCfg;

struct Model;

typedef struct MSlot {
    struct Model *m;
    int kind;                   /* 0 read, 1 write, 2 write-zeroes */
    int widx;
    int64_t offset, bytes;
    int64_t issued;
    struct iovec iov[8];
    int niov;
    uint8_t *arena;
    bool busy;
} MSlot;

#define MODEL_SLOTS 40

typedef struct Model {
    TestDev d;
    const ModelCfg *cfg;
    uint32_t seed;
    GRand *rand;
    int64_t clock;
    GArray *writes;             /* MWrite */
    int target, issued, completed;
    MSlot slots[MODEL_SLOTS];
    size_t arena_size;          /* of each slot: the longest request, each
                                   element starting in a fresh page */
    uint32_t next_id;
    /* scratch for the checker */
    uint8_t *claimed;
    int *set, *set2;
    /* what ran */
    uint64_t reads_checked, reads_unchecked, ops[3];
} Model;

static void model_fail(Model *m, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static void model_fail(Model *m, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_error("random model '%s' seed %" PRIu32 " (STRATA_TEST_SEED=%" PRIu32
            " to rerun): %s", m->cfg->name, m->seed, m->seed, msg);
}

static uint8_t mw_byte(const MWrite *w, int64_t x)
{
    return w->id ? pat(w->id, x) : 0;
}

/*
 * Is there an order of the writes set[0..n) (indices into m->writes)
 * consistent with real time whose application to the initial content
 * gives @want on [s, e)?  See the checker comment above.
 */
static bool model_explains(Model *m, int *set, int n, int64_t s, int64_t e,
                           const uint8_t *want)
{
    MWrite *ws = (MWrite *)m->writes->data;
    int64_t len = e - s, unexplained = len;

    memset(m->claimed, 0, len);
    while (n > 0 && unexplained > 0) {
        int64_t max_issued = INT64_MIN;
        int pick = -1;

        for (int i = 0; i < n; i++) {
            max_issued = MAX(max_issued, ws[set[i]].issued);
        }
        for (int i = n - 1; i >= 0 && pick < 0; i--) {
            const MWrite *w = &ws[set[i]];
            /* May come last: no other member was issued after it completed. */
            if (w->issued != max_issued && w->completed < max_issued) {
                continue;
            }
            int64_t a = MAX(s, w->offset), b = MIN(e, w->offset + w->bytes);
            bool ok = true;
            for (int64_t x = a; x < b && ok; x++) {
                ok = m->claimed[x - s] || want[x - s] == mw_byte(w, x);
            }
            if (ok) {
                pick = i;
            }
        }
        if (pick < 0) {
            return false;
        }
        const MWrite *w = &ws[set[pick]];
        for (int64_t x = MAX(s, w->offset); x < MIN(e, w->offset + w->bytes); x++) {
            if (!m->claimed[x - s]) {
                m->claimed[x - s] = 1;
                unexplained--;
            }
        }
        set[pick] = set[--n];
    }
    for (int64_t x = s; x < e; x++) {
        if (!m->claimed[x - s] && want[x - s] != pat(0, x)) {
            return false;
        }
    }
    return true;
}

/*
 * Check the bytes @want that a request saw on [s, e) (a part of one
 * block): a read issued at @issued and completed at @completed, or the
 * final state (both INT64_MAX).  Returns false if too many writes were in
 * flight to try every subset (the range is then not checked).
 */
static bool model_check_range(Model *m, int64_t s, int64_t e,
                              const uint8_t *want, int64_t issued,
                              int64_t completed)
{
    MWrite *ws = (MWrite *)m->writes->data;
    int n = 0, nopt = 0, opt[10];

    for (guint i = 0; i < m->writes->len; i++) {
        const MWrite *w = &ws[i];
        if (w->offset >= e || w->offset + w->bytes <= s || w->issued > completed) {
            continue;
        }
        if (w->completed < issued) {
            m->set[n++] = i;
        } else if (nopt == G_N_ELEMENTS(opt)) {
            return false;
        } else {
            opt[nopt++] = i;
        }
    }
    for (uint32_t mask = 0; mask < (1u << nopt); mask++) {
        bool closed = true;
        /* A write in the set drags in every write that completed before
         * it was issued. */
        for (int i = 0; i < nopt && closed; i++) {
            for (int j = 0; j < nopt && closed; j++) {
                if ((mask >> i & 1) && !(mask >> j & 1) &&
                    ws[opt[j]].completed < ws[opt[i]].issued) {
                    closed = false;
                }
            }
        }
        if (!closed) {
            continue;
        }
        int k = n;
        for (int i = 0; i < nopt; i++) {
            if (mask >> i & 1) {
                m->set[k++] = opt[i];
            }
        }
        /* model_explains reorders its set: give it a copy. */
        memcpy(m->set2, m->set, sizeof(int) * k);
        if (model_explains(m, m->set2, k, s, e, want)) {
            return true;
        }
    }
    model_fail(m, "bytes %" PRId64 "..%" PRId64 " (%s) match no serial order "
               "of the %d writes covering them (%d in flight)", s, e,
               issued == INT64_MAX ? "final state" : "read", n, nopt);
    return true;
}

static void model_submit(Model *m, MSlot *sl);

static void model_complete(void *opaque, int64_t ret)
{
    MSlot *sl = opaque;
    Model *m = sl->m;
    int64_t now = ++m->clock;
    int64_t A = m->cfg->align;

    if (ret != 0) {
        model_fail(m, "%s %" PRId64 "+%" PRId64 " failed: %s",
                   sl->kind == 0 ? "read" : sl->kind == 1 ? "write" : "zeroes",
                   sl->offset, sl->bytes, g_strerror(-(int)ret));
    }
    if (sl->kind) {
        g_array_index(m->writes, MWrite, sl->widx).completed = now;
    } else {
        /* Gather what the read returned, then check it block by block. */
        g_autofree uint8_t *got = g_malloc(sl->bytes);
        int64_t pos = 0;
        for (int i = 0; i < sl->niov; i++) {
            memcpy(got + pos, sl->iov[i].iov_base, sl->iov[i].iov_len);
            pos += sl->iov[i].iov_len;
        }
        for (int64_t s = sl->offset; s < sl->offset + sl->bytes;) {
            int64_t e = MIN(ROUND_DOWN(s, A) + A, sl->offset + sl->bytes);
            if (model_check_range(m, s, e, got + (s - sl->offset), sl->issued, now)) {
                m->reads_checked++;
            } else {
                m->reads_unchecked++;
            }
            s = e;
        }
    }
    m->completed++;
    sl->busy = false;
    if (m->issued < m->target) {
        model_submit(m, sl);
    }
}

/* A random length: mostly sub-block, some a few blocks, a few large. */
static int64_t model_rand_len(Model *m)
{
    int64_t A = m->cfg->align;
    int r = g_rand_int_range(m->rand, 0, 100);

    if (r < 55) {
        return g_rand_int_range(m->rand, 1, A + 1);
    } else if (r < 90) {
        return g_rand_int_range(m->rand, A, 4 * A + 1);
    }
    return g_rand_int_range(m->rand, 4 * A, 16 * A + 1);
}

static void model_submit(Model *m, MSlot *sl)
{
    int64_t A = m->cfg->align;
    int r = g_rand_int_range(m->rand, 0, 100);
    int ret;

    sl->busy = true;
    sl->kind = r < 45 ? 0 : r < 92 ? 1 : 2;
    sl->bytes = model_rand_len(m);
    sl->offset = g_rand_int_range(m->rand, 0, m->cfg->size - sl->bytes + 1);
    if (g_rand_int_range(m->rand, 0, 5) == 0) {
        /* Some aligned requests take the fast path among the others. */
        sl->offset = ROUND_DOWN(sl->offset, A);
        sl->bytes = MAX(ROUND_DOWN(sl->bytes, A), A);
    }
    sl->issued = ++m->clock;
    m->issued++;
    m->ops[sl->kind]++;

    if (sl->kind == 2) {
        MWrite w = { sl->offset, sl->bytes, 0, sl->issued, INT64_MAX };
        sl->widx = m->writes->len;
        g_array_append_val(m->writes, w);
        ret = strata_backend_aio_pwrite_zeroes(m->d.be, sl->offset, sl->bytes,
                                               0, model_complete, sl);
        g_assert_cmpint(ret, ==, 0);
        return;
    }

    /* Split into 1..8 elements at random points, each at a random
     * misalignment (sometimes none) in the slot's arena. */
    int niov = g_rand_int_range(m->rand, 1, 9);
    int64_t cuts[9];
    cuts[0] = 0;
    cuts[niov] = sl->bytes;
    for (int i = 1; i < niov; i++) {
        cuts[i] = g_rand_int_range(m->rand, 0, sl->bytes + 1);
    }
    for (int i = 1; i < niov; i++) {
        for (int j = i + 1; j < niov; j++) {
            if (cuts[j] < cuts[i]) {
                int64_t t = cuts[i];
                cuts[i] = cuts[j];
                cuts[j] = t;
            }
        }
    }
    uint8_t *at = sl->arena;
    sl->niov = niov;
    for (int i = 0; i < niov; i++) {
        size_t len = cuts[i + 1] - cuts[i];
        size_t mis = g_rand_boolean(m->rand) ? 0 : g_rand_int_range(m->rand, 0, 4096);
        if (g_rand_int_range(m->rand, 0, 4) == 0) {
            mis = ROUND_DOWN(mis, (size_t)512);
        }
        at = (uint8_t *)ROUND_UP((uintptr_t)at, (uintptr_t)4096) + mis;
        sl->iov[i] = (struct iovec) { at, len };
        at += len;
        g_assert(at <= sl->arena + m->arena_size);
    }

    if (sl->kind == 0) {
        for (int i = 0; i < niov; i++) {
            memset(sl->iov[i].iov_base, 0xcc, sl->iov[i].iov_len);
        }
        ret = strata_backend_aio_preadv(m->d.be, sl->offset, sl->iov, niov, 0,
                                        model_complete, sl);
    } else {
        MWrite w = { sl->offset, sl->bytes, m->next_id++, sl->issued, INT64_MAX };
        int64_t pos = sl->offset;
        for (int i = 0; i < niov; i++) {
            uint8_t *b = sl->iov[i].iov_base;
            for (size_t k = 0; k < sl->iov[i].iov_len; k++) {
                b[k] = pat(w.id, pos++);
            }
        }
        sl->widx = m->writes->len;
        g_array_append_val(m->writes, w);
        ret = strata_backend_aio_pwritev(m->d.be, sl->offset, sl->iov, niov, 0,
                                         model_complete, sl);
    }
    g_assert_cmpint(ret, ==, 0);
}

static void model_run(const ModelCfg *cfg, uint32_t seed, int requests,
                      int in_flight)
{
    Model *m = g_new0(Model, 1);
    int64_t A = cfg->align;

    m->cfg = cfg;
    m->seed = seed;
    m->rand = g_rand_new_with_seed(seed);
    m->writes = g_array_new(FALSE, FALSE, sizeof(MWrite));
    m->target = requests;
    m->next_id = 1;
    m->claimed = g_malloc(A);
    m->set = g_new(int, requests + 1);
    m->set2 = g_new(int, requests + 1);
    m->arena_size = 16 * A + 9 * 8192;
    g_assert(in_flight <= MODEL_SLOTS);

    dev_open(&m->d, "{\"driver\": \"mem\", \"size\": %" PRId64
             ", \"align\": %u, \"mem-align\": %u, \"iov-len-align\": %u,"
             " \"max-transfer\": %" PRId64 ", \"max-iov\": %d,"
             " \"latency-ns\": 20000, \"random-order\": true, \"seed\": %u,"
             " \"rmw-coalesce\": %s}",
             cfg->size, cfg->align, cfg->mem_align, cfg->iov_len_align,
             cfg->max_transfer, cfg->max_iov, seed,
             cfg->coalesce ? "true" : "false");
    dev_fill(&m->d, 0);

    for (int i = 0; i < in_flight; i++) {
        m->slots[i].m = m;
        m->slots[i].arena = g_aligned_alloc(1, m->arena_size, 4096);
        model_submit(m, &m->slots[i]);
    }
    LOOP_RUN_WHILE(dev_loop(&m->d), m->completed < m->target);

    /* The final state, block by block. */
    const uint8_t *data = mem_get_data(m->d.mem);
    for (int64_t b = 0; b < cfg->size; b += A) {
        model_check_range(m, b, b + A, data + b, INT64_MAX, INT64_MAX);
    }
    dev_check_violations(&m->d);

    BlockStats st = node_stats_sum(m->d.node);
    BlockPadStats *ps = &st.pad;
    g_test_message("model '%s' seed %" PRIu32 ": %" PRIu64 " reads, %" PRIu64
                   " writes, %" PRIu64 " write-zeroes; %" PRIu64 " read blocks "
                   "checked, %" PRIu64 " unchecked; rmw %" PRIu64 ", waits %"
                   PRIu64 ", coalesced %" PRIu64 ", collapsed %" PRIu64
                   ", split %" PRIu64, cfg->name, seed, m->ops[0], m->ops[1],
                   m->ops[2], m->reads_checked, m->reads_unchecked,
                   ps->rmw_writes, ps->serialising_waits, ps->coalesced_writes,
                   ps->vectors_collapsed, ps->split_requests);
    g_assert_cmpuint(ps->serialising_waits, >, 0);
    if (cfg->coalesce) {
        g_assert_cmpuint(ps->coalesced_writes, >, 0);
    } else {
        g_assert_cmpuint(ps->coalesced_writes, ==, 0);
    }

    /* The model was checked above; make dev_close's comparison agree. */
    memcpy(m->d.model, data, cfg->size);
    for (int i = 0; i < in_flight; i++) {
        g_aligned_free(m->slots[i].arena);
    }
    dev_close(&m->d);
    g_array_free(m->writes, TRUE);
    g_rand_free(m->rand);
    g_free(m->claimed);
    g_free(m->set);
    g_free(m->set2);
    g_free(m);
}

static const ModelCfg model_cfgs[] = {
    { "512", 512, 1, 1, 0, 1024, true, 64 * 1024 },
    { "4k-split-iov4", 4096, 512, 512, 8192, 4, true, 256 * 1024 },
    { "4k-no-coalesce-iov3", 4096, 4096, 512, 0, 3, false, 256 * 1024 },
    { "512-memalign4k", 512, 4096, 512, 4096, 1024, true, 64 * 1024 },
    { "4k-direct-iov3", 4096, 1, 1, 16384, 3, true, 128 * 1024 },
    { "4k-iov1-split", 4096, 1, 1, 4096, 1, true, 64 * 1024 },
};

static void test_model_random_concurrent(void)
{
    static const uint32_t seeds[] = { 1, 2, 3 };
    const char *env = g_getenv("STRATA_TEST_SEED");

    for (unsigned c = 0; c < G_N_ELEMENTS(model_cfgs); c++) {
        if (env) {
            model_run(&model_cfgs[c], (uint32_t)strtoul(env, NULL, 0), 4000, 32);
            continue;
        }
        for (unsigned s = 0; s < G_N_ELEMENTS(seeds); s++) {
            model_run(&model_cfgs[c], seeds[s], 4000, 32);
        }
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/pad/model/random-concurrent", test_model_random_concurrent);
    return g_test_run();
}
