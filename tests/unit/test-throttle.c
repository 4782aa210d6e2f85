/*
 * Tests of the I/O limits algorithm (util/throttle.c) on a virtual clock
 * SPDX-License-Identifier: MIT
 *
 * Nothing here sleeps or reads a clock: "now" is a variable the tests
 * advance to the wait the algorithm asks for, so a ten-second run takes
 * microseconds and every count is exact up to the rounding stated.
 *
 * The group tests run a small event simulation of what the throttle
 * filter does with the scheduler's decisions: a wake-up starts one waiting
 * request of that member at the current time; an armed timer fires at its
 * time.  Requests are counters (a member's backlog), which is all the
 * scheduler sees.
 */
#include <glib.h>
#include "strata/strata.h"
#include "util/throttle.h"

#define NS 1000000000LL

static ThrottleConfig cfg_with(int bucket, int64_t avg, int64_t max,
                               int64_t len)
{
    ThrottleConfig cfg;

    throttle_config_init(&cfg);
    cfg.b[bucket].avg = avg;
    cfg.b[bucket].max = max;
    cfg.b[bucket].max_length = len;
    return cfg;
}

/*
 * A greedy client: starts requests of @bytes (direction @is_write) as
 * soon as the buckets allow, from @*now until @until; returns how many
 * started.
 */
static int64_t greedy(ThrottleState *ts, bool is_write, uint64_t bytes,
                      int64_t *now, int64_t until)
{
    int64_t n = 0;

    for (;;) {
        int64_t wait = throttle_wait_ns(ts, is_write, *now);
        if (*now + wait >= until) {
            *now = until;
            return n;
        }
        *now += wait;
        throttle_account(ts, is_write, bytes, *now);
        n++;
    }
}

/* ---- configuration ------------------------------------------------------ */

static void check_error(ThrottleConfig *cfg, const char *msg)
{
    StrataError *err = NULL;

    g_assert_false(throttle_config_check(cfg, &err));
    g_assert_nonnull(err);
    g_assert_cmpstr(strata_error_get_message(err), ==, msg);
    strata_error_free(err);
}

static void test_config_errors(void)
{
    ThrottleConfig cfg;

    /* QEMU 7.2's messages, checked against qemu-storage-daemon. */
    cfg = cfg_with(THROTTLE_OPS_TOTAL, 100, 0, 1);
    cfg.b[THROTTLE_OPS_READ].avg = 10;
    check_error(&cfg, "bps/iops/max total values and read/write values "
                "cannot be used at the same time");
    cfg = cfg_with(THROTTLE_BPS_TOTAL, 100, 200, 1);
    cfg.b[THROTTLE_BPS_WRITE].avg = 10;
    check_error(&cfg, "bps/iops/max total values and read/write values "
                "cannot be used at the same time");
    cfg = cfg_with(THROTTLE_BPS_TOTAL, 100, 0, 1);
    cfg.iops_size = 4096;
    check_error(&cfg, "iops size requires an iops value to be set");
    cfg = cfg_with(THROTTLE_OPS_TOTAL, -1, 0, 1);
    check_error(&cfg, "bps/iops/max values must be within "
                "[0, 1000000000000000]");
    cfg = cfg_with(THROTTLE_OPS_TOTAL, THROTTLE_VALUE_MAX + 1, 0, 1);
    check_error(&cfg, "bps/iops/max values must be within "
                "[0, 1000000000000000]");
    cfg = cfg_with(THROTTLE_OPS_TOTAL, 100, 200, 0);
    check_error(&cfg, "the burst length cannot be 0");
    cfg = cfg_with(THROTTLE_OPS_TOTAL, 100, 0, 5);
    check_error(&cfg, "burst length set without burst rate");
    cfg = cfg_with(THROTTLE_OPS_TOTAL, 100, THROTTLE_VALUE_MAX, 2);
    check_error(&cfg, "burst length too high for this burst rate");
    cfg = cfg_with(THROTTLE_BPS_TOTAL, 0, 100, 1);
    check_error(&cfg, "bps_max/iops_max require corresponding bps/iops "
                "values");
    cfg = cfg_with(THROTTLE_OPS_TOTAL, 100, 50, 1);
    check_error(&cfg, "bps_max/iops_max cannot be lower than bps/iops");

    /* Read and write limits together are fine, and so is nothing. */
    cfg = cfg_with(THROTTLE_OPS_READ, 100, 0, 1);
    cfg.b[THROTTLE_OPS_WRITE].avg = 5;
    cfg.b[THROTTLE_BPS_TOTAL].avg = 7;
    g_assert_true(throttle_config_check(&cfg, NULL));
    throttle_config_init(&cfg);
    g_assert_true(throttle_config_check(&cfg, NULL));
    g_assert_false(throttle_config_enabled(&cfg));
}

/* ---- one set of buckets ------------------------------------------------- */

/*
 * Every limit kind: a greedy client for 10 s gets the rate plus the
 * unthrottled tenth of a second (avg/10, QEMU's bucket without a burst
 * rate) in the limited direction, and is never held in the other
 * direction when the limit is per direction.
 */
static void test_each_kind(void)
{
    for (int k = 0; k < THROTTLE_BUCKET__MAX; k++) {
        bool is_bps = k < THROTTLE_OPS_TOTAL;
        int64_t avg = is_bps ? 4096 * 1000 : 1000;
        int sub = k % 3;        /* 0 total, 1 read, 2 write */

        for (int is_write = 0; is_write < 2; is_write++) {
            ThrottleConfig cfg = cfg_with(k, avg, 0, 1);
            ThrottleState ts;
            int64_t now = 0;
            bool limited = sub == 0 || sub == 1 + is_write;

            throttle_init(&ts, &cfg, 0);
            if (!limited) {
                /* Never waits, however much goes. */
                for (int i = 0; i < 100000; i++) {
                    g_assert_cmpint(throttle_wait_ns(&ts, is_write, now), ==,
                                    0);
                    throttle_account(&ts, is_write, 4096, now);
                }
                continue;
            }
            int64_t n = greedy(&ts, is_write, 4096, &now, 10 * NS);
            /* 10 s at 1000 requests/s, plus 100 that fit the bucket at
             * once, plus the first request which starts on an empty
             * bucket: accounting follows admission. */
            g_test_message("%s %s: %" G_GINT64_FORMAT,
                           throttle_bucket_names[k],
                           is_write ? "write" : "read", n);
            g_assert_cmpint(n, >=, 10100);
            g_assert_cmpint(n, <=, 10101);
        }
    }
}

static void test_bursts(void)
{
    /* 100 IOPS, bursts of 1000 IOPS for 2 seconds. */
    ThrottleConfig cfg = cfg_with(THROTTLE_OPS_TOTAL, 100, 1000, 2);
    ThrottleState ts;
    int64_t now = 0, n;

    throttle_init(&ts, &cfg, 0);
    /* The burst bucket lets max/10 = 100 go at once, then the rate is
     * max = 1000/s: after 1 s about 1100 requests. */
    n = greedy(&ts, false, 512, &now, 1 * NS);
    g_assert_cmpint(n, >=, 1099);
    g_assert_cmpint(n, <=, 1101);
    /* The main bucket (max * length = 2000 operations, leaking 100/s)
     * holds 1001 at 1 s and gains 900/s: full at 2.11 s, after 2000 +
     * 211 requests; from then on the rate is avg (2.222 s: 11 more). */
    n += greedy(&ts, false, 512, &now, 2222 * NS / 1000);
    g_assert_cmpint(n, >=, 2220);
    g_assert_cmpint(n, <=, 2224);
    greedy(&ts, false, 512, &now, 5 * NS);
    n = greedy(&ts, false, 512, &now, 15 * NS);
    g_assert_cmpint(n, >=, 999);
    g_assert_cmpint(n, <=, 1001);

    /* After a long idle time the burst is available again. */
    now = 100 * NS;
    int64_t start = now;
    n = greedy(&ts, false, 512, &now, start + NS);
    g_assert_cmpint(n, >=, 1099);
    g_assert_cmpint(n, <=, 1101);
}

/* With max-length 1 there is no burst bucket: the capacity is max. */
static void test_burst_length_one(void)
{
    ThrottleConfig cfg = cfg_with(THROTTLE_BPS_TOTAL, 1 << 20, 4 << 20, 1);
    ThrottleState ts;
    int64_t now = 0, n;

    throttle_init(&ts, &cfg, 0);
    /* 4 MiB at once (64 KiB requests), plus the first one. */
    n = greedy(&ts, true, 65536, &now, 1);
    g_assert_cmpint(n, ==, 65);
    now = 10 * NS;
    n = greedy(&ts, true, 65536, &now, 20 * NS);
    g_assert_cmpint(n, >=, 160 - 1);
    g_assert_cmpint(n, <=, 160 + 65);
}

/* iops-size: a request larger than it counts as several operations. */
static void test_iops_size(void)
{
    ThrottleConfig cfg = cfg_with(THROTTLE_OPS_TOTAL, 100, 0, 1);
    ThrottleState ts;
    int64_t now = 0, n;

    cfg.iops_size = 4096;
    throttle_init(&ts, &cfg, 0);
    n = greedy(&ts, false, 16384, &now, 10 * NS);
    /* 4 operations each: 25 requests/s, plus the first. */
    g_assert_cmpint(n, >=, 250);
    g_assert_cmpint(n, <=, 253);
    /* Smaller ones count as one. */
    throttle_init(&ts, &cfg, 0);
    now = 0;
    n = greedy(&ts, false, 512, &now, 10 * NS);
    g_assert_cmpint(n, >=, 1000);
    g_assert_cmpint(n, <=, 1011);
}

/* ---- the group's scheduler: an event simulation ------------------------- */

typedef struct Sim {
    ThrottleSched s;
    ThrottleMember m[2];
    int64_t now;
    int64_t timer_at[2];        /* per direction, -1 when not armed */
    ThrottleMember *timer_member[2];
    GQueue wakes;               /* ThrottleMember * to start, per wake */
    int64_t started[2];         /* per member, reads */
    uint64_t bytes;
} Sim;

static void sim_apply(Sim *sim, const ThrottleAction *act, int d)
{
    if (act->arm) {
        sim->timer_at[d] = act->arm_at_ns;
        sim->timer_member[d] = act->arm;
    }
    if (act->wake) {
        g_queue_push_tail(&sim->wakes, act->wake);
    }
}

static void sim_init(Sim *sim, const ThrottleConfig *cfg, int members)
{
    *sim = (Sim) { .timer_at = { -1, -1 }, .bytes = 4096 };
    g_queue_init(&sim->wakes);
    throttle_sched_init(&sim->s, cfg, 0);
    for (int i = 0; i < members; i++) {
        throttle_sched_add(&sim->s, &sim->m[i]);
    }
}

static void sim_start(Sim *sim, ThrottleMember *m, bool woken)
{
    ThrottleAction act;

    throttle_sched_start(&sim->s, m, false, woken, sim->bytes, sim->now,
                         &act);
    sim->started[m - sim->m]++;
    sim_apply(sim, &act, 0);
}

/* @n reads of member @i arrive now. */
static void sim_submit(Sim *sim, int i, int n)
{
    for (int k = 0; k < n; k++) {
        ThrottleAction act;
        if (throttle_sched_arrive(&sim->s, &sim->m[i], false, sim->now,
                                  &act)) {
            sim_start(sim, &sim->m[i], false);
        } else {
            sim_apply(sim, &act, 0);
        }
    }
}

/* Run woken requests and timers until @until (or nothing is left). */
static void sim_run(Sim *sim, int64_t until)
{
    for (;;) {
        ThrottleMember *m = g_queue_pop_head(&sim->wakes);
        if (m) {
            sim_start(sim, m, true);
            continue;
        }
        if (sim->timer_at[0] < 0 || sim->timer_at[0] > until) {
            sim->now = until;
            return;
        }
        ThrottleAction act;
        sim->now = sim->timer_at[0];
        sim->timer_at[0] = -1;
        throttle_sched_timer_fired(&sim->s, false, sim->now, &act);
        sim_apply(sim, &act, 0);
    }
}

static unsigned sim_waiting(Sim *sim, int i)
{
    return sim->m[i].pending[0] + sim->m[i].released[0];
}

/* Nobody is left waiting without a timer or a wake-up to come. */
static void sim_check_live(Sim *sim)
{
    if (sim_waiting(sim, 0) + sim_waiting(sim, 1)) {
        g_assert_true(sim->timer_at[0] >= 0 || sim->wakes.length);
    }
}

static void test_group_single(void)
{
    ThrottleConfig cfg = cfg_with(THROTTLE_OPS_TOTAL, 1000, 0, 1);
    Sim sim;

    sim_init(&sim, &cfg, 1);
    sim_submit(&sim, 0, 20000);
    sim_check_live(&sim);
    sim_run(&sim, 10 * NS);
    g_assert_cmpint(sim.started[0], >=, 10100);
    g_assert_cmpint(sim.started[0], <=, 10101);
    sim_check_live(&sim);
}

/* Two members with a backlog each share the limit half and half, and
 * take turns. */
static void test_group_fairness(void)
{
    ThrottleConfig cfg = cfg_with(THROTTLE_OPS_TOTAL, 1000, 0, 1);
    Sim sim;

    sim_init(&sim, &cfg, 2);
    sim_submit(&sim, 0, 20000);
    sim_submit(&sim, 1, 20000);
    sim_run(&sim, 10 * NS);
    int64_t a = sim.started[0], b = sim.started[1];
    g_test_message("member 0: %" G_GINT64_FORMAT ", member 1: %"
                   G_GINT64_FORMAT, a, b);
    g_assert_cmpint(a + b, >=, 10100);
    g_assert_cmpint(a + b, <=, 10101);
    /* The first 101 went to member 0 before member 1 arrived; after that
     * the turns alternate. */
    g_assert_cmpint(a - 101 - b, >=, -1);
    g_assert_cmpint(a - 101 - b, <=, 1);
    sim_check_live(&sim);

    /* A member that arrives late is not starved by a long backlog. */
    sim_init(&sim, &cfg, 2);
    sim_submit(&sim, 0, 20000);
    sim_run(&sim, 5 * NS);
    sim_submit(&sim, 1, 10);
    int64_t a0 = sim.started[0];
    sim_run(&sim, 5 * NS + 30 * NS / 1000);
    g_assert_cmpint(sim.started[1], ==, 10);
    g_assert_cmpint(sim.started[0] - a0, >=, 10);
    g_assert_cmpint(sim.started[0] - a0, <=, 21);
}

/* New limits with requests queued: none is lost, the new rate applies at
 * once (the buckets restart empty, as in QEMU). */
static void test_group_reconfig(void)
{
    ThrottleConfig slow = cfg_with(THROTTLE_OPS_TOTAL, 10, 0, 1);
    ThrottleConfig fast = cfg_with(THROTTLE_OPS_TOTAL, 1000, 0, 1);
    ThrottleMember *old_owner[2];
    ThrottleAction act[2];
    Sim sim;

    sim_init(&sim, &slow, 2);
    sim_submit(&sim, 0, 300);
    sim_submit(&sim, 1, 300);
    sim_run(&sim, NS);
    g_assert_cmpint(sim.started[0] + sim.started[1], <=, 12);

    throttle_sched_reconfig(&sim.s, &fast, sim.now, old_owner, act);
    /* The old timer was taken back; the simulation cancels it. */
    g_assert_true(old_owner[0] == sim.timer_member[0]);
    sim.timer_at[0] = -1;
    sim_apply(&sim, &act[0], 0);
    sim_check_live(&sim);
    /* 600 requests at 1000/s (100 at once): under 0.6 s. */
    sim_run(&sim, NS + 600 * NS / 1000);
    g_assert_cmpint(sim.started[0], ==, 300);
    g_assert_cmpint(sim.started[1], ==, 300);
    g_assert_cmpint(sim_waiting(&sim, 0) + sim_waiting(&sim, 1), ==, 0);

    /* Removing the limits releases everything without a timer. */
    ThrottleConfig none;
    throttle_config_init(&none);
    sim_submit(&sim, 0, 5000);
    sim_run(&sim, sim.now);
    throttle_sched_reconfig(&sim.s, &none, sim.now, old_owner, act);
    sim.timer_at[0] = -1;
    sim_apply(&sim, &act[0], 0);
    int64_t t = sim.now;
    sim_run(&sim, t);
    g_assert_cmpint(sim.now, ==, t);
    g_assert_cmpint(sim.started[0], ==, 5300);
}

/* A drained member's waiting requests all go at once, without time
 * passing; the other member keeps its limits; afterwards the limits
 * apply again. */
static void test_group_drain(void)
{
    ThrottleConfig cfg = cfg_with(THROTTLE_OPS_TOTAL, 10, 0, 1);
    ThrottleMember *old_owner[2];
    ThrottleAction act[2];
    Sim sim;

    sim_init(&sim, &cfg, 2);
    sim_submit(&sim, 0, 50);
    sim_submit(&sim, 1, 50);
    sim_run(&sim, NS / 2);
    int64_t a = sim.started[0], b = sim.started[1];
    g_assert_cmpint(a, <, 50);

    throttle_sched_disable(&sim.s, &sim.m[0], sim.now, old_owner, act);
    if (old_owner[0]) {
        sim.timer_at[0] = -1;
    }
    sim_apply(&sim, &act[0], 0);
    int64_t t = sim.now;
    sim_run(&sim, t);
    g_assert_cmpint(sim.started[0], ==, 50);
    g_assert_cmpint(sim_waiting(&sim, 0), ==, 0);
    /* Member 1 got no more than its share meanwhile. */
    g_assert_cmpint(sim.started[1], <=, b + 1);
    /* New requests of the drained member pass unthrottled. */
    sim_submit(&sim, 0, 10);
    g_assert_cmpint(sim.started[0], ==, 60);
    sim_check_live(&sim);

    /* The requests released by the drain were charged (as in QEMU):
     * member 1 waits for them to leak, then gets the whole rate. */
    throttle_sched_enable(&sim.s, &sim.m[0]);
    sim_run(&sim, t + 100 * NS);
    g_assert_cmpint(sim.started[1], ==, 50);

    /* Drained and empty: the member may leave. */
    throttle_sched_remove(&sim.s, &sim.m[0]);
    sim_submit(&sim, 1, 5);
    sim_run(&sim, sim.now + 10 * NS);
    g_assert_cmpint(sim.started[1], ==, 55);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/throttle/config/errors", test_config_errors);
    g_test_add_func("/throttle/bucket/each-kind-10s", test_each_kind);
    g_test_add_func("/throttle/bucket/bursts-and-length", test_bursts);
    g_test_add_func("/throttle/bucket/burst-length-1", test_burst_length_one);
    g_test_add_func("/throttle/bucket/iops-size", test_iops_size);
    g_test_add_func("/throttle/group/one-member-10s", test_group_single);
    g_test_add_func("/throttle/group/fairness-two-members",
                    test_group_fairness);
    g_test_add_func("/throttle/group/reconfig-with-queue",
                    test_group_reconfig);
    g_test_add_func("/throttle/group/drain-releases", test_group_drain);
    return g_test_run();
}
