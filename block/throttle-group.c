/*
 * throttle-group objects and their members
 * SPDX-License-Identifier: MIT
 *
 * The scheduler (util/throttle.c) decides; this file carries its
 * decisions out: a wake-up is co_queue_next() on the member's queue, an
 * armed timer is the member's LoopTimer.  Nothing polls: a waiting
 * request costs nothing until its timer or another request's completion
 * lets it go.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include "block/throttle-group.h"
#include "strata/strata.h"
#include "util/coroutine.h"
#include "util/thread.h"

struct ThrottleGroup {
    int refcnt;                 /* atomic: the object, pending reconfigs */
    Mutex lock;                 /* everything below */
    ThrottleConfig cfg;
    ThrottleSched sched;
    Loop *loop;                 /* the members', NULL without members */
    unsigned n_members;
};

/* ---- limits ------------------------------------------------------------- */

bool throttle_group_parse_limits(OptNode *opts, const char *prefix,
                                 const ThrottleConfig *base,
                                 ThrottleConfig *cfg, StrataError **errp)
{
    if (base) {
        *cfg = *base;
    } else {
        throttle_config_init(cfg);
    }
    for (int i = 0; i < THROTTLE_BUCKET__MAX; i++) {
        ThrottleBucketConfig *b = &cfg->b[i];
        const char *name = throttle_bucket_names[i];
        g_autofree char *avg = g_strdup_printf("%s%s", prefix, name);
        g_autofree char *max = g_strdup_printf("%s%s-max", prefix, name);
        g_autofree char *len = g_strdup_printf("%s%s-max-length", prefix,
                                               name);
        /* Members not given keep their value (the base's, or none). */
        if (!opts_get_int(opts, avg, b->avg, &b->avg, errp) ||
            !opts_get_int(opts, max, b->max, &b->max, errp) ||
            !opts_get_int(opts, len, b->max_length, &b->max_length, errp)) {
            return false;
        }
        if (b->max_length < 0 || b->max_length > UINT32_MAX) {
            /* QEMU's wording for its uint32 property. */
            error_set_option(errp, "%s-max-length value must be in the range "
                             "[0, %u]", name, UINT32_MAX);
            return false;
        }
    }
    g_autofree char *size = g_strdup_printf("%siops-size", prefix);
    if (!opts_get_int(opts, size, cfg->iops_size, &cfg->iops_size, errp)) {
        return false;
    }
    if (cfg->iops_size < 0) {
        error_set_option(errp, "iops-size: must be at least 0, got %" PRId64,
                         cfg->iops_size);
        return false;
    }
    return throttle_config_check(cfg, errp);
}

/* ---- the group ---------------------------------------------------------- */

ThrottleGroup *throttle_group_new(const ThrottleConfig *cfg)
{
    ThrottleGroup *tg = g_new0(ThrottleGroup, 1);

    tg->refcnt = 1;
    mutex_init(&tg->lock);
    tg->cfg = *cfg;
    throttle_sched_init(&tg->sched, cfg, clock_ns());
    return tg;
}

static void throttle_group_unref(ThrottleGroup *tg)
{
    if (g_atomic_int_dec_and_test(&tg->refcnt)) {
        g_assert(!tg->n_members);
        mutex_cleanup(&tg->lock);
        g_free(tg);
    }
}

void throttle_group_free(ThrottleGroup *tg)
{
    if (tg) {
        throttle_group_unref(tg);
    }
}

bool throttle_group_set_limits(const char *id, OptNode *limits,
                               StrataError **errp)
{
    ThrottleConfig cur, cfg;
    StrataObject *obj;
    bool ok;

    obj = object_use(id, OBJECT_THROTTLE_GROUP, "qom-set", errp);
    if (!obj) {
        return false;
    }
    /* As QEMU's qom-set: the members given change, the others stay. */
    throttle_group_get_config(object_get_throttle_group(obj), &cur);
    ok = throttle_group_parse_limits(limits, "", &cur, &cfg, errp) &&
         opts_check_consumed(limits, errp);
    if (ok) {
        throttle_group_set_config(object_get_throttle_group(obj), &cfg);
    }
    object_unuse(obj, "qom-set");
    return ok;
}

void throttle_group_get_config(ThrottleGroup *tg, ThrottleConfig *cfg)
{
    mutex_lock(&tg->lock);
    *cfg = tg->cfg;
    mutex_unlock(&tg->lock);
}

/* Carry out @act for direction @d.  Under the lock, in the loop's thread. */
static void apply(const ThrottleAction *act, int d)
{
    if (act->arm) {
        ThrottleGroupMember *tgm = act->arm->opaque;
        loop_timer_mod(&tgm->timer[d], act->arm_at_ns);
    }
    if (act->wake) {
        ThrottleGroupMember *tgm = act->wake->opaque;
        bool woke = co_queue_next(&tgm->queue[d]);
        /* The scheduler counted a waiting request: the queue has it. */
        g_assert(woke);
    }
}

/* Cancel the timers the scheduler took back, then apply its decisions. */
static void apply_rescheduled(ThrottleMember *old_owner[2],
                              ThrottleAction act[2])
{
    for (int d = 0; d < 2; d++) {
        if (old_owner[d]) {
            ThrottleGroupMember *tgm = old_owner[d]->opaque;
            loop_timer_del(&tgm->timer[d]);
        }
        apply(&act[d], d);
    }
}

typedef struct Reconfig {
    ThrottleGroup *tg;
    ThrottleConfig cfg;
} Reconfig;

/* In the members' loop: the new limits take effect, waiters rescheduled. */
static void reconfig_cb(void *opaque)
{
    Reconfig *rc = opaque;
    ThrottleGroup *tg = rc->tg;
    ThrottleMember *old_owner[2];
    ThrottleAction act[2];

    mutex_lock(&tg->lock);
    throttle_sched_reconfig(&tg->sched, &rc->cfg, clock_ns(), old_owner, act);
    apply_rescheduled(old_owner, act);
    mutex_unlock(&tg->lock);
    throttle_group_unref(tg);
    g_free(rc);
}

void throttle_group_set_config(ThrottleGroup *tg, const ThrottleConfig *cfg)
{
    Reconfig *rc = g_new(Reconfig, 1);
    Loop *loop;

    g_atomic_int_inc(&tg->refcnt);
    *rc = (Reconfig) { tg, *cfg };
    mutex_lock(&tg->lock);
    tg->cfg = *cfg;
    loop = tg->loop;
    mutex_unlock(&tg->lock);
    if (loop && !loop_is_owner(loop)) {
        loop_oneshot(loop, reconfig_cb, rc);
    } else {
        reconfig_cb(rc);
    }
}

/* ---- members ------------------------------------------------------------ */

static void member_timer_cb(ThrottleGroupMember *tgm, int d)
{
    ThrottleGroup *tg = tgm->tg;
    ThrottleAction act;

    mutex_lock(&tg->lock);
    throttle_sched_timer_fired(&tg->sched, d, clock_ns(), &act);
    apply(&act, d);
    mutex_unlock(&tg->lock);
}

static void member_read_timer_cb(void *opaque)
{
    member_timer_cb(opaque, 0);
}

static void member_write_timer_cb(void *opaque)
{
    member_timer_cb(opaque, 1);
}

bool throttle_group_join(ThrottleGroupMember *tgm, ThrottleGroup *tg,
                         const char *group_id, Loop *loop,
                         StrataError **errp)
{
    mutex_lock(&tg->lock);
    if (tg->loop && tg->loop != loop) {
        mutex_unlock(&tg->lock);
        error_set_option(errp, "throttle-group: throttle group '%s' is used "
                         "by nodes of another I/O thread (the members of a "
                         "group share one)", group_id);
        return false;
    }
    *tgm = (ThrottleGroupMember) { .tg = tg, .loop = loop };
    tgm->m.opaque = tgm;
    for (int d = 0; d < 2; d++) {
        co_queue_init(&tgm->queue[d]);
    }
    loop_timer_init(&tgm->timer[0], loop, member_read_timer_cb, tgm);
    loop_timer_init(&tgm->timer[1], loop, member_write_timer_cb, tgm);
    tg->loop = loop;
    tg->n_members++;
    throttle_sched_add(&tg->sched, &tgm->m);
    mutex_unlock(&tg->lock);
    return true;
}

void throttle_group_leave(ThrottleGroupMember *tgm)
{
    ThrottleGroup *tg = tgm->tg;

    mutex_lock(&tg->lock);
    for (int d = 0; d < 2; d++) {
        g_assert(co_queue_empty(&tgm->queue[d]));
        loop_timer_del(&tgm->timer[d]);
    }
    throttle_sched_remove(&tg->sched, &tgm->m);
    if (!--tg->n_members) {
        tg->loop = NULL;
    }
    mutex_unlock(&tg->lock);
    tgm->tg = NULL;
}

void throttle_group_co_intercept(ThrottleGroupMember *tgm, bool is_write,
                                 uint64_t bytes)
{
    ThrottleGroup *tg = tgm->tg;
    ThrottleAction act;
    bool woken = false;
    int d = is_write;
    /* No clock read of its own on the fast path: a request that does not
     * wait starts at the time it entered the node. */
    int64_t now = co_clock_now();

    mutex_lock(&tg->lock);
    if (!throttle_sched_arrive(&tg->sched, &tgm->m, is_write, now, &act)) {
        apply(&act, d);
        mutex_unlock(&tg->lock);
        /* Woken exactly once, by a release the scheduler counted. */
        co_queue_wait(&tgm->queue[d], NULL);
        now = clock_ns();
        mutex_lock(&tg->lock);
        woken = true;
    }
    throttle_sched_start(&tg->sched, &tgm->m, is_write, woken, bytes, now,
                         &act);
    apply(&act, d);
    mutex_unlock(&tg->lock);
}

void throttle_group_disable(ThrottleGroupMember *tgm)
{
    ThrottleGroup *tg = tgm->tg;
    ThrottleMember *old_owner[2];
    ThrottleAction act[2];

    mutex_lock(&tg->lock);
    throttle_sched_disable(&tg->sched, &tgm->m, clock_ns(), old_owner, act);
    apply_rescheduled(old_owner, act);
    mutex_unlock(&tg->lock);
}

void throttle_group_enable(ThrottleGroupMember *tgm)
{
    ThrottleGroup *tg = tgm->tg;

    mutex_lock(&tg->lock);
    throttle_sched_enable(&tg->sched, &tgm->m);
    mutex_unlock(&tg->lock);
}

/* ---- public API --------------------------------------------------------- */

STRATA_EXPORT bool strata_object_add_json(const char *json, StrataError **errp)
{
    g_autoptr(OptNode) opts = opts_parse_json(json, errp);

    return opts && object_add(opts, errp);
}

STRATA_EXPORT bool strata_object_del(const char *id, StrataError **errp)
{
    return object_del(id, errp);
}

STRATA_EXPORT bool strata_throttle_group_set_limits(const char *id,
                                                    const char *json,
                                                    StrataError **errp)
{
    g_autoptr(OptNode) limits = opts_parse_json(json, errp);

    return limits && throttle_group_set_limits(id, limits, errp);
}
