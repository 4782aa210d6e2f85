/*
 * I/O limits: leaky buckets with bursts, and a round-robin scheduler over
 * the members of a group (SPDX-License-Identifier: MIT)
 *
 * Pure arithmetic on a time the caller passes in (now_ns, any monotonic
 * nanosecond clock): nothing here reads a clock, arms a timer or wakes a
 * coroutine.  The throttle filter (block/throttle.c) turns the decisions
 * into timers and wake-ups on its loop; the unit tests drive the same
 * functions with a virtual clock.  docs/throttle.md explains the model.
 *
 * Semantics are QEMU 7.2's (util/throttle.c, block/throttle-groups.c):
 *   - six buckets: bps-total/read/write, iops-total/read/write;
 *   - a bucket of rate avg fills with each request's cost (bytes, or one
 *     operation; a request larger than iops-size counts size/iops-size
 *     operations) and leaks avg per second;
 *   - without a burst rate (max = 0) the bucket holds avg/10; with one it
 *     holds max * max-length, and a second "burst" bucket leaking at max
 *     and holding max/10 keeps bursts at the rate max;
 *   - a request may start when no bucket it touches is over its size; it
 *     is then accounted in full (it may overfill the bucket: the next
 *     request waits for the excess to leak);
 *   - members of a group take turns per direction (round robin); at most
 *     one timer per direction is armed in a group.
 *
 * Not thread-safe: the caller serialises (the group's mutex).
 */
#ifndef STRATA_UTIL_THROTTLE_H
#define STRATA_UTIL_THROTTLE_H

#include <stdbool.h>
#include <stdint.h>
#include "util/error.h"

typedef enum ThrottleBucketType {
    THROTTLE_BPS_TOTAL,
    THROTTLE_BPS_READ,
    THROTTLE_BPS_WRITE,
    THROTTLE_OPS_TOTAL,
    THROTTLE_OPS_READ,
    THROTTLE_OPS_WRITE,
    THROTTLE_BUCKET__MAX,
} ThrottleBucketType;

/* "bps-total", ..., "iops-write": QEMU's property names (limits.*). */
extern const char *const throttle_bucket_names[THROTTLE_BUCKET__MAX];

/* Largest avg or max (QEMU's THROTTLE_VALUE_MAX). */
#define THROTTLE_VALUE_MAX 1000000000000000LL

typedef struct ThrottleBucketConfig {
    int64_t avg;            /* units per second, 0 = no limit */
    int64_t max;            /* burst rate, 0 = none */
    int64_t max_length;     /* seconds the burst may last, default 1 */
} ThrottleBucketConfig;

typedef struct ThrottleConfig {
    ThrottleBucketConfig b[THROTTLE_BUCKET__MAX];
    int64_t iops_size;      /* bytes per operation for iops, 0 = any */
} ThrottleConfig;

/* No limits: every avg and max 0, max_length 1. */
void throttle_config_init(ThrottleConfig *cfg);
/* QEMU's rules, with its messages (class INVALID_OPTION):
 *   "bps/iops/max total values and read/write values cannot be used at
 *   the same time", "iops size requires an iops value to be set",
 *   "bps/iops/max values must be within [0, 1000000000000000]",
 *   "the burst length cannot be 0", "burst length set without burst
 *   rate", "burst length too high for this burst rate",
 *   "bps_max/iops_max require corresponding bps/iops values",
 *   "bps_max/iops_max cannot be lower than bps/iops". */
bool throttle_config_check(const ThrottleConfig *cfg, StrataError **errp);
/* True when some avg is set. */
bool throttle_config_enabled(const ThrottleConfig *cfg);

/* ---- one set of buckets ------------------------------------------------- */

typedef struct ThrottleState {
    ThrottleConfig cfg;
    double level[THROTTLE_BUCKET__MAX];
    double burst_level[THROTTLE_BUCKET__MAX];
    int64_t last_leak_ns;
} ThrottleState;

/* Empty buckets with @cfg (checked) at @now_ns. */
void throttle_init(ThrottleState *ts, const ThrottleConfig *cfg,
                   int64_t now_ns);
/* New limits: the buckets start empty, as in QEMU. */
void throttle_set_config(ThrottleState *ts, const ThrottleConfig *cfg,
                         int64_t now_ns);
/* Leak up to @now_ns, then the nanoseconds until a request of direction
 * @is_write may start: 0 means now. */
int64_t throttle_wait_ns(ThrottleState *ts, bool is_write, int64_t now_ns);
/* Charge a request of @bytes that starts at @now_ns. */
void throttle_account(ThrottleState *ts, bool is_write, uint64_t bytes,
                      int64_t now_ns);

/* ---- a group of members, round robin ------------------------------------ */

typedef struct ThrottleMember ThrottleMember;
struct ThrottleMember {
    ThrottleMember *next;               /* ring of the group's members */
    unsigned pending[2];                /* requests waiting, per direction */
    unsigned released[2];               /* woken, not started yet */
    int disabled;                       /* > 0: limits off (drained) */
    void *opaque;                       /* the caller's (the node) */
};

typedef struct ThrottleSched {
    ThrottleState ts;
    ThrottleMember *members;            /* any member of the ring, or NULL */
    ThrottleMember *token[2];           /* whose turn it is */
    ThrottleMember *timer_owner[2];     /* armed timer's member, or NULL */
} ThrottleSched;

/* What the caller does next for one direction: wake one waiting request
 * of @wake now, and/or arm @arm's timer at @arm_at_ns (its loop timer;
 * the caller calls throttle_sched_timer_fired() when it expires). */
typedef struct ThrottleAction {
    ThrottleMember *wake;
    ThrottleMember *arm;
    int64_t arm_at_ns;
} ThrottleAction;

void throttle_sched_init(ThrottleSched *s, const ThrottleConfig *cfg,
                         int64_t now_ns);
void throttle_sched_add(ThrottleSched *s, ThrottleMember *m);
/* Remove @m, which has no waiting requests and no armed timer (asserted:
 * drain first). */
void throttle_sched_remove(ThrottleSched *s, ThrottleMember *m);

/*
 * A request of @m arrives.  True: it starts now (call
 * throttle_sched_start()).  False: it waits (counted in m->pending) until
 * an action wakes it; @act says what to arm.
 */
bool throttle_sched_arrive(ThrottleSched *s, ThrottleMember *m, bool is_write,
                           int64_t now_ns, ThrottleAction *act);
/* A request of @m starts: @woken when it had waited (it leaves pending).
 * Charges it and picks the next member's turn; @act says whom to wake or
 * what to arm. */
void throttle_sched_start(ThrottleSched *s, ThrottleMember *m, bool is_write,
                          bool woken, uint64_t bytes, int64_t now_ns,
                          ThrottleAction *act);
/* The timer of direction @is_write expired: whom to wake. */
void throttle_sched_timer_fired(ThrottleSched *s, bool is_write,
                                int64_t now_ns, ThrottleAction *act);
/* New limits with requests queued: the armed timers are reconsidered
 * (@act[d] for direction d: the caller first cancels the timer of
 * the old owner, which the function returns in @old_owner[d]). */
void throttle_sched_reconfig(ThrottleSched *s, const ThrottleConfig *cfg,
                             int64_t now_ns, ThrottleMember *old_owner[2],
                             ThrottleAction act[2]);
/* Limits off for @m (drain begins, counted): its waiting requests go one
 * after another.  @old_owner/@act as for reconfig. */
void throttle_sched_disable(ThrottleSched *s, ThrottleMember *m,
                            int64_t now_ns, ThrottleMember *old_owner[2],
                            ThrottleAction act[2]);
void throttle_sched_enable(ThrottleSched *s, ThrottleMember *m);

#endif
