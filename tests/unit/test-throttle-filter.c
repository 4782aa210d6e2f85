/*
 * Tests of the throttle filter (block/throttle.c) and throttle-group
 * objects (block/throttle-group.c) over null-co and mem
 * SPDX-License-Identifier: MIT
 *
 * The algorithm's numbers are tested on a virtual clock (test-throttle);
 * these tests check what the real loop does with them: order, waking,
 * drain, changing limits and groups, errors.  Limits are chosen so that
 * the tests take a few hundred milliseconds at most, and none asserts a
 * duration: a loop that would wait forever fails on a generous deadline
 * instead of hanging.
 */
#include <errno.h>
#include <string.h>
#include <glib.h>

#include "block/block-int.h"
#include "block/object.h"
#include "block/throttle-group.h"
#include "strata/strata.h"

#define NREQ 20
#define DEADLINE_NS (20 * 1000000000LL)

typedef struct Env {
    StrataContext *ctx;
    StrataNode *node;
    StrataBackend *be;
} Env;

typedef struct Done {
    int *order;                 /* completion order, shared */
    int *n_done;
    int index;
    int64_t ret;
} Done;

static void done_cb(void *opaque, int64_t ret)
{
    Done *d = opaque;
    d->ret = ret;
    d->order[(*d->n_done)++] = d->index;
}

static void add_object(const char *dotted)
{
    g_autoptr(StrataError) err = NULL;
    g_autoptr(OptNode) o = opts_parse_dotted(dotted, &err);
    g_assert_nonnull(o);
    if (!object_add(o, &err)) {
        g_error("%s: %s", dotted, strata_error_get_message(err));
    }
}

static void env_open(Env *e, StrataContext *ctx, const char *json)
{
    g_autoptr(StrataError) err = NULL;

    e->ctx = ctx;
    e->node = strata_node_open_json(ctx, json, &err);
    if (!e->node) {
        g_error("%s: %s", json, strata_error_get_message(err));
    }
    e->be = strata_backend_new(e->node, NULL, STRATA_PERM_ALL,
                               STRATA_PERM_ALL, &err);
    g_assert_nonnull(e->be);
}

static void env_close(Env *e)
{
    strata_backend_free(e->be);
    strata_node_unref(e->node);
}

/* Run @ctx's loop until *@n reaches @want (fails after the deadline). */
static void run_until(StrataContext *ctx, int *n, int want)
{
    int64_t end = clock_ns() + DEADLINE_NS;

    while (*n < want) {
        g_assert_cmpint(clock_ns(), <, end);
        strata_context_run_once(ctx, true);
    }
}

/* Run @ctx's loop for about @ns without blocking longer than that. */
static void run_for(StrataContext *ctx, int64_t ns)
{
    int64_t end = clock_ns() + ns;

    while (clock_ns() < end) {
        strata_context_run_once(ctx, false);
        g_usleep(1000);
    }
}

/* A context and a throttle node over null-co in group tg0 with @limits
 * (dotted "limits.*" keys). */
static StrataContext *tg0_setup(Env *e, const char *limits)
{
    StrataContext *ctx = strata_context_new(NULL);
    g_autofree char *obj = g_strdup_printf("qom-type=throttle-group,id=tg0,"
                                           "%s", limits);

    add_object(obj);
    env_open(e, ctx, "{\"driver\": \"throttle\", \"throttle-group\": "
             "\"tg0\", \"file\": {\"driver\": \"null-co\"}}");
    return ctx;
}

static void tg0_teardown(Env *e)
{
    env_close(e);
    g_assert_true(object_del("tg0", NULL));
    strata_context_free(e->ctx);
}

static char buf[4096];
static struct iovec iov = { buf, sizeof(buf) };

static void submit_reads(Env *e, Done *d, int n, int first_index,
                         int *order, int *n_done)
{
    for (int i = 0; i < n; i++) {
        d[i] = (Done) { order, n_done, first_index + i, 1 };
        g_assert_cmpint(strata_backend_aio_preadv(e->be, (int64_t)i * 4096,
                                                  &iov, 1, 0, done_cb, &d[i]),
                        ==, 0);
    }
}

/* ---- errors --------------------------------------------------------------- */

static void check_open_error(StrataContext *ctx, const char *json,
                             const char *msg)
{
    g_autoptr(StrataError) err = NULL;

    g_assert_null(strata_node_open_json(ctx, json, &err));
    g_assert_nonnull(err);
    g_assert_cmpstr(strata_error_get_message(err), ==, msg);
}

static void test_errors(void)
{
    g_autoptr(StrataError) err = NULL;
    StrataContext *ctx = strata_context_new(NULL);
    Env e;

    check_open_error(ctx, "{\"driver\": \"throttle\", \"file\": "
                     "{\"driver\": \"null-co\"}}", "throttle-group: missing");
    check_open_error(ctx, "{\"driver\": \"throttle\", \"throttle-group\": "
                     "\"nope\", \"file\": {\"driver\": \"null-co\"}}",
                     "Throttle group 'nope' does not exist");
    add_object("qom-type=secret,id=sec0,data=x");
    check_open_error(ctx, "{\"driver\": \"throttle\", \"throttle-group\": "
                     "\"sec0\", \"file\": {\"driver\": \"null-co\"}}",
                     "throttle-group: object 'sec0' is not a throttle-group");
    g_assert_true(object_del("sec0", NULL));

    /* Object properties: QEMU's rules, through object_add. */
    static const struct {
        const char *opts, *msg;
    } bad[] = {
        { "limits.iops-total=100,limits.iops-read=10",
          "bps/iops/max total values and read/write values cannot be used "
          "at the same time" },
        { "limits.bps-total-max=100",
          "bps_max/iops_max require corresponding bps/iops values" },
        { "limits.iops-total=100,limits.iops-total-max-length=5",
          "burst length set without burst rate" },
        { "limits.iops-total=100,limits.iops-total-max=200,"
          "limits.iops-total-max-length=100000000000",
          "iops-total-max-length value must be in the range [0, "
          "4294967295]" },
        { "limits.iops-size=5", "iops size requires an iops value to be set" },
        { "limits.foo=1", "limits.foo: unknown option" },
        { "limits.iops-total=x", "limits.iops-total: expected integer, got "
          "string 'x'" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree char *s = g_strdup_printf("qom-type=throttle-group,id=tg0,"
                                             "%s", bad[i].opts);
        g_autoptr(OptNode) o = opts_parse_dotted(s, NULL);
        g_autoptr(StrataError) e2 = NULL;
        g_assert_false(object_add(o, &e2));
        g_assert_cmpstr(strata_error_get_message(e2), ==, bad[i].msg);
    }

    /* A group in use cannot go. */
    add_object("qom-type=throttle-group,id=tg0,limits.iops-total=1000");
    env_open(&e, ctx, "{\"driver\": \"throttle\", \"node-name\": \"thr0\", "
             "\"throttle-group\": \"tg0\", \"file\": {\"driver\": "
             "\"null-co\"}}");
    g_assert_false(object_del("tg0", &err));
    g_assert_cmpstr(strata_error_get_message(err), ==,
                    "object 'tg0' is in use by node 'thr0'");
    env_close(&e);
    g_assert_true(object_del("tg0", NULL));
    strata_context_free(ctx);
}

/* ---- behaviour ----------------------------------------------------------- */

/* Requests of one direction complete in the order they arrived, the first
 * ones at once, the rest as the bucket leaks. */
static void test_fifo(void)
{
    int order[NREQ], n_done = 0;
    Done d[NREQ];
    Env e;
    StrataContext *ctx = tg0_setup(&e, "limits.iops-read=100");
    submit_reads(&e, d, NREQ, 0, order, &n_done);
    run_until(ctx, &n_done, NREQ);
    for (int i = 0; i < NREQ; i++) {
        g_assert_cmpint(order[i], ==, i);
        g_assert_cmpint(d[i].ret, ==, 0);
    }
    /* Writes are not limited by a read limit: they pass at once. */
    g_assert_cmpint(strata_backend_pwrite(e.be, 0, buf, 4096, 0), ==, 0);
    tg0_teardown(&e);
}

/* A drained section lets every waiting request go (here: 2 IOPS, so
 * without it the drain would take ten seconds). */
static void test_drain(void)
{
    int order[NREQ], n_done = 0;
    Done d[NREQ];
    Env e;
    StrataContext *ctx = tg0_setup(&e, "limits.iops-total=2");
    submit_reads(&e, d, NREQ, 0, order, &n_done);
    run_for(ctx, 20 * 1000000);
    g_assert_cmpint(n_done, <, 3);
    int64_t start = clock_ns();
    strata_backend_drain_begin(e.be);
    g_assert_cmpint(n_done, ==, NREQ);
    g_assert_cmpint(clock_ns() - start, <, 5 * 1000000000LL);
    strata_backend_drain_end(e.be);

    /* A node drain (what reopen does) releases them too. */
    n_done = 0;
    submit_reads(&e, d, NREQ, 0, order, &n_done);
    run_for(ctx, 20 * 1000000);
    g_assert_cmpint(n_done, <, NREQ);
    node_drain_begin(e.node);
    g_assert_cmpint(n_done, ==, NREQ);
    node_drain_end(e.node);
    for (int i = 0; i < NREQ; i++) {
        g_assert_cmpint(order[i], ==, i);
    }

    /* Afterwards the limits apply again. */
    n_done = 0;
    submit_reads(&e, d, 4, 0, order, &n_done);
    run_for(ctx, 20 * 1000000);
    g_assert_cmpint(n_done, <, 4);
    strata_backend_drain_begin(e.be);
    strata_backend_drain_end(e.be);
    tg0_teardown(&e);
}

/* New limits with requests queued: none is lost, the new rate applies. */
static void test_set_limits(void)
{
    g_autoptr(StrataError) err = NULL;
    int order[NREQ], n_done = 0;
    Done d[NREQ];
    Env e;
    StrataContext *ctx = tg0_setup(&e, "limits.iops-total=2");
    submit_reads(&e, d, NREQ, 0, order, &n_done);
    run_for(ctx, 20 * 1000000);
    g_assert_cmpint(n_done, <, 3);

    /* Bad limits change nothing; the members given are checked with
     * the others' current values (iops-total=2 here). */
    g_autoptr(OptNode) bad = opts_parse_json("{\"iops-total-max\": 1}", NULL);
    g_assert_false(throttle_group_set_limits("tg0", bad, &err));
    g_assert_cmpstr(strata_error_get_message(err), ==,
                    "bps_max/iops_max cannot be lower than bps/iops");
    g_autoptr(OptNode) fast = opts_parse_json("{\"iops-total\": 100000}",
                                              NULL);
    g_assert_true(throttle_group_set_limits("tg0", fast, NULL));
    run_until(ctx, &n_done, NREQ);
    for (int i = 0; i < NREQ; i++) {
        g_assert_cmpint(order[i], ==, i);
    }
    tg0_teardown(&e);
}

static void count_cb(void *opaque, int64_t ret)
{
    g_assert_cmpint(ret, ==, 0);
    g_atomic_int_inc((int *)opaque);
}

/* The loop runs in its own thread; the limits change from this one: the
 * rescheduling is handed to the loop's thread, and the queued requests
 * go under the new limits. */
static void test_set_limits_other_thread(void)
{
    Env e;
    StrataContext *ctx = tg0_setup(&e, "limits.iops-total=2");
    int done = 0;

    g_assert_true(strata_context_start_thread(ctx, NULL));
    for (int i = 0; i < NREQ; i++) {
        g_assert_cmpint(strata_backend_aio_preadv(e.be, (int64_t)i * 4096,
                                                  &iov, 1, 0, count_cb,
                                                  &done), ==, 0);
    }
    g_usleep(20000);
    g_assert_cmpint(g_atomic_int_get(&done), <, 3);
    /* The public API, as an embedder calls it. */
    g_assert_true(strata_throttle_group_set_limits("tg0", "{\"iops-total\": "
                                                   "100000}", NULL));
    int64_t end = clock_ns() + DEADLINE_NS;
    while (g_atomic_int_get(&done) < NREQ) {
        g_assert_cmpint(clock_ns(), <, end);
        g_usleep(1000);
    }
    strata_context_stop_thread(ctx);
    tg0_teardown(&e);
}

/* Two nodes of one group take turns: the one that arrives second is not
 * starved by the first one's backlog. */
static void test_two_members(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    int order[2 * NREQ], n_done = 0;
    Done d[2 * NREQ];
    Env a, b;

    add_object("qom-type=throttle-group,id=tg0,limits.iops-total=200");
    env_open(&a, ctx, "{\"driver\": \"throttle\", \"throttle-group\": "
             "\"tg0\", \"file\": {\"driver\": \"null-co\"}}");
    env_open(&b, ctx, "{\"driver\": \"throttle\", \"throttle-group\": "
             "\"tg0\", \"file\": {\"driver\": \"mem\", \"size\": \"1M\"}}");
    /* a's burst: 21 go at once; then both wait in turn. */
    submit_reads(&a, d, 2 * NREQ / 2 + 10, 0, order, &n_done);
    run_until(ctx, &n_done, 21);
    submit_reads(&b, d + 30, 10, 100, order, &n_done);
    run_until(ctx, &n_done, 40);
    /* Of the 19 after the burst, b (10 waiting) got every other turn. */
    int b_done = 0;
    for (int i = 21; i < 40; i++) {
        b_done += order[i] >= 100;
    }
    g_assert_cmpint(b_done, >=, 9);
    env_close(&a);
    env_close(&b);
    g_assert_true(object_del("tg0", NULL));
    strata_context_free(ctx);
}

/* A reopen moves the node to another group; the old one is free again.
 * The objects come from the public API. */
static void test_reopen_group(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    g_autoptr(StrataError) err = NULL;
    int order[NREQ], n_done = 0;
    Done d[NREQ];
    Env e;

    g_assert_true(strata_object_add_json("{\"qom-type\": \"throttle-group\", "
                                         "\"id\": \"slow\", \"limits\": "
                                         "{\"iops-total\": 1}}", NULL));
    g_assert_true(strata_object_add_json("{\"qom-type\": \"throttle-group\", "
                                         "\"id\": \"fast\", \"limits\": "
                                         "{\"iops-total\": 1000000}}", NULL));
    env_open(&e, ctx, "{\"driver\": \"throttle\", \"node-name\": \"thr0\", "
             "\"throttle-group\": \"slow\", \"file\": {\"driver\": "
             "\"null-co\"}}");
    g_assert_false(strata_node_reopen_json(e.node, "{\"throttle-group\": "
                                           "\"none\"}", &err));
    g_assert_cmpstr(strata_error_get_message(err), ==,
                    "Cannot reopen node 'thr0': Throttle group 'none' does "
                    "not exist");
    g_assert_true(strata_node_reopen_json(e.node, "{\"throttle-group\": "
                                          "\"fast\"}", NULL));
    g_assert_true(strata_object_del("slow", NULL));
    g_clear_pointer(&err, strata_error_free);
    g_assert_false(strata_object_del("fast", &err));
    g_assert_cmpstr(strata_error_get_message(err), ==,
                    "object 'fast' is in use by node 'thr0'");
    submit_reads(&e, d, NREQ, 0, order, &n_done);
    run_until(ctx, &n_done, NREQ);
    env_close(&e);
    g_assert_true(object_del("fast", NULL));
    strata_context_free(ctx);
}

/* Data goes through unchanged, and write-zeroes and discard pass too. */
static void test_data(void)
{
    StrataContext *ctx = strata_context_new(NULL);
    uint8_t w[8192], r[8192];
    Env e;

    add_object("qom-type=throttle-group,id=tg0,limits.bps-write=100000000,"
               "limits.iops-read=100000");
    env_open(&e, ctx, "{\"driver\": \"throttle\", \"throttle-group\": "
             "\"tg0\", \"file\": {\"driver\": \"mem\", \"size\": \"1M\"}}");
    for (size_t i = 0; i < sizeof(w); i++) {
        w[i] = (uint8_t)(i * 7 + 1);
    }
    g_assert_cmpint(strata_backend_pwrite(e.be, 512, w, sizeof(w), 0), ==, 0);
    g_assert_cmpint(strata_backend_pread(e.be, 512, r, sizeof(r), 0), ==, 0);
    g_assert_cmpmem(w, sizeof(w), r, sizeof(r));
    g_assert_cmpint(strata_backend_pwrite_zeroes(e.be, 512, 4096, 0), ==, 0);
    g_assert_cmpint(strata_backend_pread(e.be, 512, r, 4096, 0), ==, 0);
    for (int i = 0; i < 4096; i++) {
        g_assert_cmpint(r[i], ==, 0);
    }
    g_assert_cmpint(strata_backend_flush(e.be), ==, 0);
    env_close(&e);
    g_assert_true(object_del("tg0", NULL));
    strata_context_free(ctx);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/throttle-filter/errors", test_errors);
    g_test_add_func("/throttle-filter/data-unchanged", test_data);
    g_test_add_func("/throttle-filter/fifo-per-direction", test_fifo);
    g_test_add_func("/throttle-filter/drain-releases-waiting", test_drain);
    g_test_add_func("/throttle-filter/set-limits-with-queue",
                    test_set_limits);
    g_test_add_func("/throttle-filter/set-limits-from-another-thread",
                    test_set_limits_other_thread);
    g_test_add_func("/throttle-filter/two-members-take-turns",
                    test_two_members);
    g_test_add_func("/throttle-filter/reopen-switches-group",
                    test_reopen_group);
    return g_test_run();
}
