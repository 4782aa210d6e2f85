/* SPDX-License-Identifier: MIT */
/*
 * Tests for the request interval tree (block/reqtree.c).  Random tests take
 * their seed from STRATA_SEED (default fixed) and report it with
 * g_test_message before any check can fail.
 */
#include <glib.h>
#include <stdlib.h>
#include "block/reqtree.h"

#define DEFAULT_SEED 0x5eed1234u

static guint32 test_seed(void)
{
    const char *env = g_getenv("STRATA_SEED");
    guint32 seed = env ? (guint32)g_ascii_strtoull(env, NULL, 0) : DEFAULT_SEED;

    g_test_message("seed %u (set STRATA_SEED=%u to reproduce)", seed, seed);
    return seed;
}

static void req_init(BlockReq *req, int64_t lo, int64_t hi, uint64_t seq)
{
    *req = (BlockReq){ .lo = lo, .hi = hi, .seq = seq };
}

/* Collects the visited requests, optionally stopping after @limit. */
typedef struct Collect {
    GPtrArray *seen;
    guint limit;            /* 0: never stop */
} Collect;

static bool collect_cb(BlockReq *req, void *opaque)
{
    Collect *c = opaque;

    g_ptr_array_add(c->seen, req);
    return c->limit == 0 || c->seen->len < c->limit;
}

/* Returns the requests reqtree_foreach_overlap visits, in visiting order. */
static GPtrArray *query(BlockReq *root, int64_t lo, int64_t hi)
{
    Collect c = { .seen = g_ptr_array_new() };

    g_assert_true(reqtree_foreach_overlap(root, lo, hi, collect_cb, &c));
    return c.seen;
}

static gint cmp_lo_seq(gconstpointer pa, gconstpointer pb)
{
    const BlockReq *a = *(BlockReq *const *)pa;
    const BlockReq *b = *(BlockReq *const *)pb;

    if (a->lo != b->lo) {
        return a->lo < b->lo ? -1 : 1;
    }
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int tree_height(const BlockReq *n)
{
    if (!n) {
        return 0;
    }
    int left = tree_height(n->rb_left);
    int right = tree_height(n->rb_right);

    return 1 + MAX(left, right);
}

/* Asserts that the query returns exactly @expected (array of requests). */
static void assert_query(BlockReq *root, int64_t lo, int64_t hi,
                         BlockReq *const *expected, guint n_expected)
{
    g_autoptr(GPtrArray) seen = query(root, lo, hi);

    g_assert_cmpuint(seen->len, ==, n_expected);
    for (guint i = 0; i < n_expected; i++) {
        g_assert_true(seen->pdata[i] == expected[i]);
    }
}

static void test_empty(void)
{
    BlockReq *root = NULL;

    g_assert_cmpint(reqtree_check(root), ==, 0);
    assert_query(root, 0, INT64_MAX, NULL, 0);
}

static void test_single(void)
{
    BlockReq *root = NULL;
    BlockReq a;

    req_init(&a, 4096, 8192, 1);
    reqtree_insert(&root, &a);
    g_assert_true(root == &a);
    g_assert_false(a.rb_red);
    g_assert_cmpint(a.rb_max_hi, ==, 8192);
    g_assert_cmpint(reqtree_check(root), ==, 1);

    BlockReq *const one[] = { &a };
    assert_query(root, 4096, 8192, one, 1);
    assert_query(root, 0, 4097, one, 1);
    assert_query(root, 8191, 9000, one, 1);
    assert_query(root, 5000, 6000, one, 1);
    assert_query(root, 0, INT64_MAX, one, 1);
    assert_query(root, 0, 4096, NULL, 0);
    assert_query(root, 8192, 12288, NULL, 0);

    reqtree_remove(&root, &a);
    g_assert_null(root);
    g_assert_cmpint(reqtree_check(root), ==, 0);
}

static void test_touching(void)
{
    BlockReq *root = NULL;
    BlockReq a, b;

    req_init(&a, 0, 4096, 1);
    req_init(&b, 4096, 8192, 2);
    reqtree_insert(&root, &b);
    reqtree_insert(&root, &a);
    g_assert_cmpint(reqtree_check(root), ==, 2);

    BlockReq *const only_a[] = { &a };
    BlockReq *const only_b[] = { &b };
    BlockReq *const both[] = { &a, &b };
    assert_query(root, 0, 4096, only_a, 1);
    assert_query(root, 4096, 8192, only_b, 1);
    assert_query(root, 4095, 4097, both, 2);
    assert_query(root, 4095, 4096, only_a, 1);
    assert_query(root, 4096, 4097, only_b, 1);
    assert_query(root, 8192, 16384, NULL, 0);
    assert_query(root, -4096, 0, NULL, 0);
    /* Empty queries overlap nothing, even inside a range. */
    assert_query(root, 100, 100, NULL, 0);
    assert_query(root, 4096, 4096, NULL, 0);
}

/*
 * One long request starting first and several short ones inside it: a
 * query past the short ones must still find the long one through the
 * cached max, not through the keys.
 */
static void test_containing(void)
{
    BlockReq *root = NULL;
    BlockReq big, small[8];

    req_init(&big, 0, 1 << 20, 100);
    reqtree_insert(&root, &big);
    for (int i = 0; i < 8; i++) {
        req_init(&small[i], i * 4096, i * 4096 + 512, i);
        reqtree_insert(&root, &small[i]);
    }
    g_assert_cmpint(reqtree_check(root), ==, 9);

    /* (lo, seq): small[0] has lo 0 and seq 0 < 100, so it comes first. */
    BlockReq *const head[] = { &small[0], &big, &small[1] };
    assert_query(root, 0, 4097, head, 3);
    BlockReq *const only_big[] = { &big };
    assert_query(root, 512, 4096, only_big, 1);
    assert_query(root, 1 << 19, 1 << 20, only_big, 1);
    assert_query(root, (1 << 20) - 1, INT64_MAX, only_big, 1);
    assert_query(root, 1 << 20, INT64_MAX, NULL, 0);

    /* Removing the long one must shrink the caches above it. */
    reqtree_remove(&root, &big);
    g_assert_cmpint(reqtree_check(root), ==, 8);
    g_assert_cmpint(root->rb_max_hi, ==, 7 * 4096 + 512);
    assert_query(root, 512, 4096, NULL, 0);
}

/* Extreme offsets: nothing in the search may overflow. */
static void test_extremes(void)
{
    BlockReq *root = NULL;
    BlockReq a, b;

    req_init(&a, 0, 1, 1);
    req_init(&b, INT64_MAX - 1, INT64_MAX, 2);
    reqtree_insert(&root, &a);
    reqtree_insert(&root, &b);
    g_assert_cmpint(reqtree_check(root), ==, 2);

    BlockReq *const both[] = { &a, &b };
    BlockReq *const only_b[] = { &b };
    assert_query(root, INT64_MIN, INT64_MAX, both, 2);
    assert_query(root, 1, INT64_MAX, only_b, 1);
    assert_query(root, INT64_MIN, 0, NULL, 0);
}

/* Many requests with the same range come back in seq order. */
static void test_identical(void)
{
    enum { N = 1000 };
    g_autofree BlockReq *reqs = g_new0(BlockReq, N);
    g_autoptr(GRand) rand = g_rand_new_with_seed(test_seed());
    BlockReq *root = NULL;
    guint order[N];

    /* Insert in a shuffled order so that seq order is not insert order. */
    for (guint i = 0; i < N; i++) {
        order[i] = i;
    }
    for (guint i = N - 1; i > 0; i--) {
        guint j = g_rand_int_range(rand, 0, i + 1);
        guint t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (guint i = 0; i < N; i++) {
        req_init(&reqs[order[i]], 0, 4096, order[i]);
        reqtree_insert(&root, &reqs[order[i]]);
    }
    g_assert_cmpint(reqtree_check(root), ==, N);

    g_autoptr(GPtrArray) seen = query(root, 4095, 4096);
    g_assert_cmpuint(seen->len, ==, N);
    for (guint i = 0; i < N; i++) {
        g_assert_true(seen->pdata[i] == &reqs[i]);
    }
    assert_query(root, 4096, 8192, NULL, 0);

    /* Remove every other one, in shuffled order. */
    for (guint i = 0; i < N; i++) {
        if (order[i] % 2) {
            reqtree_remove(&root, &reqs[order[i]]);
        }
    }
    g_assert_cmpint(reqtree_check(root), ==, N / 2);
    g_autoptr(GPtrArray) even = query(root, 0, 1);
    g_assert_cmpuint(even->len, ==, N / 2);
    for (guint i = 0; i < N / 2; i++) {
        g_assert_true(even->pdata[i] == &reqs[2 * i]);
    }
}

static void test_early_stop(void)
{
    enum { N = 10 };
    BlockReq reqs[N];
    BlockReq *root = NULL;

    for (int i = 0; i < N; i++) {
        req_init(&reqs[i], i * 4096, (i + 2) * 4096, i);
        reqtree_insert(&root, &reqs[i]);
    }

    /* Stop after the third: exactly three calls, in order, returns false. */
    Collect c = { .seen = g_ptr_array_new(), .limit = 3 };
    g_assert_false(reqtree_foreach_overlap(root, 0, INT64_MAX, collect_cb, &c));
    g_assert_cmpuint(c.seen->len, ==, 3);
    for (guint i = 0; i < 3; i++) {
        g_assert_true(c.seen->pdata[i] == &reqs[i]);
    }
    g_ptr_array_unref(c.seen);

    /* Stopping on the last match still reports the stop. */
    c = (Collect){ .seen = g_ptr_array_new(), .limit = 2 };
    g_assert_false(reqtree_foreach_overlap(root, 4096, 8192, collect_cb, &c));
    g_assert_cmpuint(c.seen->len, ==, 2);
    g_ptr_array_unref(c.seen);

    /* A limit that is never reached: the walk completes, returns true. */
    c = (Collect){ .seen = g_ptr_array_new(), .limit = 3 };
    g_assert_true(reqtree_foreach_overlap(root, 4096, 8192, collect_cb, &c));
    g_assert_cmpuint(c.seen->len, ==, 2);
    g_ptr_array_unref(c.seen);
}

/*
 * Random insert/remove mix against a brute-force list.  Ranges come from a
 * small space so that lo ties, identical ranges, nesting and touching
 * ranges are all common.
 */
enum { RAND_OPS = 20000, RAND_MAX_LIVE = 2000, RAND_BATCH = 100,
       RAND_QUERIES = 50, RAND_UNIT = 512, RAND_SPACE = 4096 };

static void random_range(GRand *rand, int64_t *lo, int64_t *hi)
{
    int64_t start = g_rand_int_range(rand, 0, RAND_SPACE);
    /* Mostly short, sometimes very long. */
    int64_t len = g_rand_int_range(rand, 0, 8) == 0
                  ? g_rand_int_range(rand, 1, RAND_SPACE)
                  : g_rand_int_range(rand, 1, 16);

    *lo = start * RAND_UNIT;
    *hi = (start + len) * RAND_UNIT;
}

/* Returns the number of matches, so the caller can tell the test did work. */
static guint check_against_brute_force(BlockReq *root, BlockReq *const *live,
                                       guint n_live, int64_t lo, int64_t hi)
{
    g_autoptr(GPtrArray) expected = g_ptr_array_new();

    for (guint i = 0; i < n_live; i++) {
        if (live[i]->lo < hi && lo < live[i]->hi) {
            g_ptr_array_add(expected, live[i]);
        }
    }
    g_ptr_array_sort(expected, cmp_lo_seq);
    assert_query(root, lo, hi, (BlockReq *const *)expected->pdata,
                 expected->len);
    return expected->len;
}

static void test_random_vs_brute_force(void)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(test_seed());
    g_autofree BlockReq *pool = g_new0(BlockReq, RAND_MAX_LIVE);
    g_autofree BlockReq **live = g_new0(BlockReq *, RAND_MAX_LIVE);
    g_autofree BlockReq **free_list = g_new0(BlockReq *, RAND_MAX_LIVE);
    guint n_live = 0, n_free = RAND_MAX_LIVE;
    BlockReq *root = NULL;
    uint64_t seq = 0;
    guint max_live = 0;
    uint64_t matches = 0;

    for (guint i = 0; i < RAND_MAX_LIVE; i++) {
        free_list[i] = &pool[i];
    }

    for (guint op = 1; op <= RAND_OPS; op++) {
        /*
         * Drift between growing and shrinking phases so the tree passes
         * through every size from empty to full several times.
         */
        bool grow = ((op / 5000) % 2 == 0);
        int p_insert = grow ? 80 : 20;
        bool insert = n_live == 0 ||
                      (n_free > 0 && g_rand_int_range(rand, 0, 100) < p_insert);

        if (insert) {
            BlockReq *req = free_list[--n_free];
            int64_t lo, hi;

            random_range(rand, &lo, &hi);
            req_init(req, lo, hi, seq++);
            reqtree_insert(&root, req);
            live[n_live++] = req;
            max_live = MAX(max_live, n_live);
        } else {
            guint i = g_rand_int_range(rand, 0, n_live);
            BlockReq *req = live[i];

            reqtree_remove(&root, req);
            live[i] = live[--n_live];
            free_list[n_free++] = req;
        }

        /* Small trees are checked after every op, all of them per batch. */
        if (n_live < 16 || op % RAND_BATCH == 0) {
            g_assert_cmpint(reqtree_check(root), ==, n_live);
            for (guint q = 0; q < RAND_QUERIES; q++) {
                int64_t lo, hi;

                random_range(rand, &lo, &hi);
                matches += check_against_brute_force(root, live, n_live,
                                                     lo, hi);
            }
        }
    }

    /* The mix must really have filled the tree and found overlaps. */
    g_assert_cmpuint(max_live, ==, RAND_MAX_LIVE);
    g_assert_cmpuint(matches, >, 100000);

    /* Drain: the tree must end up empty and valid at each step. */
    while (n_live > 0) {
        reqtree_remove(&root, live[--n_live]);
        if (n_live % 64 == 0) {
            g_assert_cmpint(reqtree_check(root), ==, n_live);
        }
    }
    g_assert_null(root);
}

static bool count_cb(BlockReq *req, void *opaque)
{
    (*(guint *)opaque)++;
    return true;
}

/*
 * 100000 disjoint requests, inserted in ascending order (the worst case for
 * an unbalanced tree): the height must stay within the red-black bound and
 * a small query must see only its neighbours.
 */
static void test_many_disjoint(void)
{
    enum { N = 100000, SZ = 4096 };
    g_autofree BlockReq *reqs = g_new0(BlockReq, N);
    BlockReq *root = NULL;

    for (int i = 0; i < N; i++) {
        req_init(&reqs[i], (int64_t)i * SZ, (int64_t)(i + 1) * SZ, i);
        reqtree_insert(&root, &reqs[i]);
    }
    g_assert_cmpint(reqtree_check(root), ==, N);
    /* 2 * log2(N + 1) ~ 33.2 */
    g_assert_cmpint(tree_height(root), <=, 33);

    guint count = 0;
    g_assert_true(reqtree_foreach_overlap(root, 5000 * (int64_t)SZ + 100,
                                          5001 * (int64_t)SZ + 100,
                                          count_cb, &count));
    g_assert_cmpuint(count, ==, 2);

    count = 0;
    g_assert_true(reqtree_foreach_overlap(root, 77777 * (int64_t)SZ,
                                          77778 * (int64_t)SZ,
                                          count_cb, &count));
    g_assert_cmpuint(count, ==, 1);

    BlockReq *const last[] = { &reqs[N - 1] };
    assert_query(root, (int64_t)N * SZ - 1, INT64_MAX, last, 1);
    assert_query(root, (int64_t)N * SZ, INT64_MAX, NULL, 0);

    /* Remove every other request; the tree stays balanced. */
    for (int i = 0; i < N; i += 2) {
        reqtree_remove(&root, &reqs[i]);
    }
    g_assert_cmpint(reqtree_check(root), ==, N / 2);
    g_assert_cmpint(tree_height(root), <=, 2 * 16);   /* log2(50001) < 16 */

    count = 0;
    g_assert_true(reqtree_foreach_overlap(root, 5000 * (int64_t)SZ + 100,
                                          5001 * (int64_t)SZ + 100,
                                          count_cb, &count));
    g_assert_cmpuint(count, ==, 1);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/reqtree/empty", test_empty);
    g_test_add_func("/reqtree/single", test_single);
    g_test_add_func("/reqtree/overlap/touching-ranges", test_touching);
    g_test_add_func("/reqtree/overlap/containing-range", test_containing);
    g_test_add_func("/reqtree/overlap/extreme-offsets", test_extremes);
    g_test_add_func("/reqtree/order/identical-ranges-by-seq", test_identical);
    g_test_add_func("/reqtree/foreach/early-stop", test_early_stop);
    g_test_add_func("/reqtree/overlap/random-vs-brute-force",
                    test_random_vs_brute_force);
    g_test_add_func("/reqtree/overlap/100000-disjoint-small-query",
                    test_many_disjoint);
    return g_test_run();
}
