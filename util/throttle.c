/*
 * I/O limits: leaky buckets and the round-robin scheduler
 * SPDX-License-Identifier: MIT
 *
 * The arithmetic is in doubles, as QEMU's is: a rate of 1000 IOPS leaks
 * 0.001 operations per microsecond, and rounding that to integers would
 * drift.  Waits are rounded up to whole nanoseconds so that a positive
 * excess never yields a zero wait (which would mean "go now").
 */
#include <errno.h>
#include <inttypes.h>
#include <glib.h>
#include "util/throttle.h"

#define NS_PER_S 1e9

const char *const throttle_bucket_names[THROTTLE_BUCKET__MAX] = {
    [THROTTLE_BPS_TOTAL] = "bps-total",
    [THROTTLE_BPS_READ] = "bps-read",
    [THROTTLE_BPS_WRITE] = "bps-write",
    [THROTTLE_OPS_TOTAL] = "iops-total",
    [THROTTLE_OPS_READ] = "iops-read",
    [THROTTLE_OPS_WRITE] = "iops-write",
};

void throttle_config_init(ThrottleConfig *cfg)
{
    *cfg = (ThrottleConfig) { 0 };
    for (int i = 0; i < THROTTLE_BUCKET__MAX; i++) {
        cfg->b[i].max_length = 1;
    }
}

bool throttle_config_enabled(const ThrottleConfig *cfg)
{
    for (int i = 0; i < THROTTLE_BUCKET__MAX; i++) {
        if (cfg->b[i].avg) {
            return true;
        }
    }
    return false;
}

/* A total and a per-direction value of the same kind (avg or max). */
static bool mixes_total(const ThrottleConfig *cfg, int total, bool max)
{
    const ThrottleBucketConfig *b = cfg->b;
    int64_t t = max ? b[total].max : b[total].avg;
    int64_t r = max ? b[total + 1].max : b[total + 1].avg;
    int64_t w = max ? b[total + 2].max : b[total + 2].avg;
    return t && (r || w);
}

bool throttle_config_check(const ThrottleConfig *cfg, StrataError **errp)
{
    if (mixes_total(cfg, THROTTLE_BPS_TOTAL, false) ||
        mixes_total(cfg, THROTTLE_OPS_TOTAL, false) ||
        mixes_total(cfg, THROTTLE_BPS_TOTAL, true) ||
        mixes_total(cfg, THROTTLE_OPS_TOTAL, true)) {
        error_set_option(errp, "bps/iops/max total values and read/write "
                         "values cannot be used at the same time");
        return false;
    }
    if (cfg->iops_size && !cfg->b[THROTTLE_OPS_TOTAL].avg &&
        !cfg->b[THROTTLE_OPS_READ].avg && !cfg->b[THROTTLE_OPS_WRITE].avg) {
        error_set_option(errp, "iops size requires an iops value to be set");
        return false;
    }
    for (int i = 0; i < THROTTLE_BUCKET__MAX; i++) {
        const ThrottleBucketConfig *b = &cfg->b[i];
        if (b->avg < 0 || b->max < 0 || b->avg > THROTTLE_VALUE_MAX ||
            b->max > THROTTLE_VALUE_MAX) {
            error_set_option(errp, "bps/iops/max values must be within "
                             "[0, %lld]", THROTTLE_VALUE_MAX);
            return false;
        }
        if (!b->max_length) {
            error_set_option(errp, "the burst length cannot be 0");
            return false;
        }
        if (b->max_length > 1 && !b->max) {
            error_set_option(errp, "burst length set without burst rate");
            return false;
        }
        if (b->max && b->max_length > THROTTLE_VALUE_MAX / b->max) {
            error_set_option(errp, "burst length too high for this burst "
                             "rate");
            return false;
        }
        if (b->max && !b->avg) {
            error_set_option(errp, "bps_max/iops_max require corresponding "
                             "bps/iops values");
            return false;
        }
        if (b->max && b->max < b->avg) {
            error_set_option(errp, "bps_max/iops_max cannot be lower than "
                             "bps/iops");
            return false;
        }
    }
    return true;
}

/* ---- buckets ------------------------------------------------------------ */

void throttle_init(ThrottleState *ts, const ThrottleConfig *cfg,
                   int64_t now_ns)
{
    *ts = (ThrottleState) { .cfg = *cfg, .last_leak_ns = now_ns };
}

void throttle_set_config(ThrottleState *ts, const ThrottleConfig *cfg,
                         int64_t now_ns)
{
    throttle_init(ts, cfg, now_ns);
}

static void throttle_leak(ThrottleState *ts, int64_t now_ns)
{
    int64_t delta = now_ns - ts->last_leak_ns;
    double secs;

    /* A clock that stands still (or a caller that is late) leaks nothing. */
    if (delta <= 0) {
        return;
    }
    ts->last_leak_ns = now_ns;
    secs = delta / NS_PER_S;
    for (int i = 0; i < THROTTLE_BUCKET__MAX; i++) {
        const ThrottleBucketConfig *b = &ts->cfg.b[i];
        /* A bucket without a limit is never read: skip the arithmetic. */
        if (!b->avg) {
            continue;
        }
        ts->level[i] = MAX(ts->level[i] - b->avg * secs, 0.0);
        ts->burst_level[i] = MAX(ts->burst_level[i] - b->max * secs, 0.0);
    }
}

/* Nanoseconds for @excess units to leak at @rate per second. */
static int64_t wait_for(double excess, double rate)
{
    double ns = excess * NS_PER_S / rate;
    int64_t n;

    /* A year is as good as forever, and keeps now + wait from
     * overflowing. */
    if (ns > 365 * 86400 * NS_PER_S) {
        return (int64_t)(365 * 86400 * NS_PER_S);
    }
    n = (int64_t)ns;
    return n < ns ? n + 1 : MAX(n, 1);
}

/*
 * The bucket's capacity: without a burst rate avg/10 (short bursts of a
 * tenth of a second pass unthrottled); with one, max * max-length, and
 * while that is not reached the burst bucket (max/10, leaking at max)
 * keeps the burst at rate max.
 *
 *          cost of each request
 *                  |
 *              |   v   |  capacity max*max-length (or avg/10)
 *              |~~~~~~~|  <- level; above capacity: wait
 *              |_______|
 *                  |  leaks avg per second
 */
static int64_t bucket_wait(const ThrottleState *ts, int i)
{
    const ThrottleBucketConfig *b = &ts->cfg.b[i];
    double size;

    if (!b->avg) {
        return 0;
    }
    size = b->max ? (double)b->max * b->max_length : b->avg / 10.0;
    if (ts->level[i] > size) {
        return wait_for(ts->level[i] - size, b->avg);
    }
    if (b->max_length > 1 && ts->burst_level[i] > b->max / 10.0) {
        return wait_for(ts->burst_level[i] - b->max / 10.0, b->max);
    }
    return 0;
}

int64_t throttle_wait_ns(ThrottleState *ts, bool is_write, int64_t now_ns)
{
    int dir = is_write ? 2 : 1;
    int64_t wait;

    throttle_leak(ts, now_ns);
    wait = MAX(bucket_wait(ts, THROTTLE_BPS_TOTAL),
               bucket_wait(ts, THROTTLE_BPS_TOTAL + dir));
    wait = MAX(wait, bucket_wait(ts, THROTTLE_OPS_TOTAL));
    return MAX(wait, bucket_wait(ts, THROTTLE_OPS_TOTAL + dir));
}

void throttle_account(ThrottleState *ts, bool is_write, uint64_t bytes,
                      int64_t now_ns)
{
    int dir = is_write ? 2 : 1;
    int64_t op = ts->cfg.iops_size;
    double ops = op && bytes > (uint64_t)op ? (double)bytes / op : 1.0;
    const int idx[4] = {
        THROTTLE_BPS_TOTAL, THROTTLE_BPS_TOTAL + dir,
        THROTTLE_OPS_TOTAL, THROTTLE_OPS_TOTAL + dir,
    };

    throttle_leak(ts, now_ns);
    for (int k = 0; k < 4; k++) {
        double cost = k < 2 ? (double)bytes : ops;
        if (!ts->cfg.b[idx[k]].avg) {
            continue;       /* never read (and never leaked) */
        }
        ts->level[idx[k]] += cost;
        ts->burst_level[idx[k]] += cost;
    }
}

/* ---- the group's scheduler ---------------------------------------------- */

void throttle_sched_init(ThrottleSched *s, const ThrottleConfig *cfg,
                         int64_t now_ns)
{
    *s = (ThrottleSched) { 0 };
    throttle_init(&s->ts, cfg, now_ns);
}

void throttle_sched_add(ThrottleSched *s, ThrottleMember *m)
{
    if (!s->members) {
        m->next = m;
        s->members = m;
        s->token[0] = s->token[1] = m;
        return;
    }
    m->next = s->members->next;
    s->members->next = m;
}

void throttle_sched_remove(ThrottleSched *s, ThrottleMember *m)
{
    ThrottleMember *prev = m;

    for (int d = 0; d < 2; d++) {
        g_assert(!m->pending[d] && !m->released[d]);
        g_assert(s->timer_owner[d] != m);
    }
    while (prev->next != m) {
        prev = prev->next;
    }
    if (prev == m) {
        s->members = s->token[0] = s->token[1] = NULL;
        return;
    }
    prev->next = m->next;
    for (int d = 0; d < 2; d++) {
        if (s->token[d] == m) {
            s->token[d] = m->next;
        }
    }
    if (s->members == m) {
        s->members = m->next;
    }
}

/* Let one waiting request of @m go. */
static void release_one(ThrottleMember *m, int d, ThrottleAction *act)
{
    g_assert(m->pending[d] > 0);
    m->pending[d]--;
    m->released[d]++;
    act->wake = m;
}

/* True when @m's requests must wait: a timer is armed for the direction
 * (everyone waits for it), or the buckets are full, in which case the
 * timer is armed now for @m. */
static bool must_wait(ThrottleSched *s, ThrottleMember *m, int d,
                      int64_t now_ns, ThrottleAction *act)
{
    int64_t wait;

    if (s->timer_owner[d]) {
        return true;
    }
    if (m->disabled) {
        return false;
    }
    wait = throttle_wait_ns(&s->ts, d, now_ns);
    if (!wait) {
        return false;
    }
    s->timer_owner[d] = m;
    s->token[d] = m;
    act->arm = m;
    act->arm_at_ns = now_ns + wait;
    return true;
}

/*
 * Whose turn after @m: a drained member first (its requests must not wait
 * for anyone's limits), else the first member after the token that has
 * requests waiting, @m last.  NULL when nobody waits.
 */
static ThrottleMember *next_turn(ThrottleSched *s, ThrottleMember *m, int d)
{
    ThrottleMember *t;

    if (m->disabled && m->pending[d]) {
        return m;
    }
    t = s->token[d] ? s->token[d] : m;
    for (ThrottleMember *c = t->next;; c = c->next) {
        if (c->pending[d]) {
            return c;
        }
        if (c == t) {
            return NULL;
        }
    }
}

static void schedule_next(ThrottleSched *s, ThrottleMember *m, int d,
                          int64_t now_ns, ThrottleAction *act)
{
    ThrottleMember *next = next_turn(s, m, d);

    if (!next) {
        return;
    }
    s->token[d] = next;
    if (!must_wait(s, next, d, now_ns, act)) {
        release_one(next, d, act);
    }
}

bool throttle_sched_arrive(ThrottleSched *s, ThrottleMember *m, bool is_write,
                           int64_t now_ns, ThrottleAction *act)
{
    int d = is_write;

    *act = (ThrottleAction) { 0 };
    if (m->disabled) {
        return true;
    }
    /* FIFO within the member: behind its own waiting or woken requests,
     * whose chain of wake-ups will reach this one. */
    if (m->pending[d] || m->released[d] || must_wait(s, m, d, now_ns, act)) {
        m->pending[d]++;
        return false;
    }
    return true;
}

void throttle_sched_start(ThrottleSched *s, ThrottleMember *m, bool is_write,
                          bool woken, uint64_t bytes, int64_t now_ns,
                          ThrottleAction *act)
{
    int d = is_write;

    *act = (ThrottleAction) { 0 };
    if (woken) {
        g_assert(m->released[d] > 0);
        m->released[d]--;
    }
    throttle_account(&s->ts, is_write, bytes, now_ns);
    schedule_next(s, m, d, now_ns, act);
}

void throttle_sched_timer_fired(ThrottleSched *s, bool is_write,
                                int64_t now_ns, ThrottleAction *act)
{
    int d = is_write;
    ThrottleMember *owner = s->timer_owner[d];

    *act = (ThrottleAction) { 0 };
    if (!owner) {
        return;
    }
    s->timer_owner[d] = NULL;
    if (owner->pending[d]) {
        release_one(owner, d, act);
    } else {
        schedule_next(s, owner, d, now_ns, act);
    }
}

/* Cancel the armed timers (reported in @old_owner) and decide again, for
 * @m's requests first when @m is given. */
static void reschedule(ThrottleSched *s, ThrottleMember *m, int64_t now_ns,
                       ThrottleMember *old_owner[2], ThrottleAction act[2])
{
    for (int d = 0; d < 2; d++) {
        ThrottleMember *owner = s->timer_owner[d];
        ThrottleMember *first = m && m->pending[d] ? m : owner;

        act[d] = (ThrottleAction) { 0 };
        old_owner[d] = owner;
        s->timer_owner[d] = NULL;
        if (!first) {
            continue;
        }
        if (!first->pending[d]) {
            schedule_next(s, first, d, now_ns, &act[d]);
        } else if (!must_wait(s, first, d, now_ns, &act[d])) {
            release_one(first, d, &act[d]);
        }
    }
}

void throttle_sched_reconfig(ThrottleSched *s, const ThrottleConfig *cfg,
                             int64_t now_ns, ThrottleMember *old_owner[2],
                             ThrottleAction act[2])
{
    throttle_set_config(&s->ts, cfg, now_ns);
    reschedule(s, NULL, now_ns, old_owner, act);
}

void throttle_sched_disable(ThrottleSched *s, ThrottleMember *m,
                            int64_t now_ns, ThrottleMember *old_owner[2],
                            ThrottleAction act[2])
{
    m->disabled++;
    reschedule(s, m, now_ns, old_owner, act);
}

void throttle_sched_enable(ThrottleSched *s, ThrottleMember *m)
{
    g_assert(m->disabled > 0);
    m->disabled--;
    (void)s;
}
