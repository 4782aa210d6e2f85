/*
 * throttle-group objects and their members (SPDX-License-Identifier: MIT)
 *
 * A ThrottleGroup is the state behind a "throttle-group" object
 * (block/object.c): its limits and the round-robin scheduler of
 * util/throttle.h, under a mutex.  A member is one throttle filter node
 * (block/throttle.c); its requests wait in a FIFO queue per direction and
 * are woken by the scheduler's decisions, through a timer per direction on
 * the member's loop.  All members of one group run in one loop (the first
 * member's); a node in another I/O thread is refused (a difference from
 * QEMU, docs/throttle.md).
 *
 * docs/throttle.md is the user's reference.
 */
#ifndef STRATA_BLOCK_THROTTLE_GROUP_H
#define STRATA_BLOCK_THROTTLE_GROUP_H

#include "block/object.h"
#include "util/coroutine.h"
#include "util/loop.h"
#include "util/throttle.h"

typedef struct ThrottleGroup ThrottleGroup;

/*
 * Read QEMU's "limits" members from @opts (an object holding
 * "@prefix<member>", e.g. the object's properties with prefix "limits.";
 * consumed) into @cfg, then check them.  Members not given keep @base's
 * values (NULL: no limit).
 * Errors name the property ("limits.iops-total-max-length: value must be
 * in the range [0, 4294967295]") or are QEMU's (throttle_config_check()).
 */
bool throttle_group_parse_limits(OptNode *opts, const char *prefix,
                                 const ThrottleConfig *base,
                                 ThrottleConfig *cfg, StrataError **errp);

/* The object's state (object.c's create and free).  Control path. */
ThrottleGroup *throttle_group_new(const ThrottleConfig *cfg);
void throttle_group_free(ThrottleGroup *tg);

/*
 * Change the limits at run time (qom-set on "limits", the C API).  The
 * buckets restart empty (as in QEMU) and the waiting requests are
 * scheduled again under the new limits; none is dropped.  Any thread;
 * when the members' loop belongs to another thread, the rescheduling runs
 * there soon after the call returns.
 */
void throttle_group_set_config(ThrottleGroup *tg, const ThrottleConfig *cfg);
void throttle_group_get_config(ThrottleGroup *tg, ThrottleConfig *cfg);

/*
 * The C API of qom-set on "limits": replace the limits of the group @id
 * with @limits (an object of the "limits" members, as in
 * throttle_group_parse_limits() without the prefix; members not given
 * keep their values, as with QEMU's qom-set).  Errors: the parser's, "No
 * object with id 'x'", "object 'x' is not a throttle-group".  Control
 * path.
 */
bool throttle_group_set_limits(const char *id, OptNode *limits,
                               StrataError **errp);

/* ---- members (the throttle filter) ------------------------------------- */

typedef struct ThrottleGroupMember {
    ThrottleMember m;           /* the scheduler's; m.opaque = this */
    ThrottleGroup *tg;
    Loop *loop;
    CoQueue queue[2];           /* waiting requests, [is_write] */
    LoopTimer timer[2];
} ThrottleGroupMember;

/* Join @tg from @loop.  Fails when the group's members run in another
 * loop: "throttle group 'tg0' is used by nodes of another I/O thread".
 * Control path, in @loop's thread, outside any request. */
bool throttle_group_join(ThrottleGroupMember *tgm, ThrottleGroup *tg,
                         const char *group_id, Loop *loop,
                         StrataError **errp);
/* Leave the group: no request may wait (drain first; asserted). */
void throttle_group_leave(ThrottleGroupMember *tgm);

/* Wait until the group's limits let a request of @bytes go, then charge
 * it.  Coroutine, in the member's loop. */
void throttle_group_co_intercept(ThrottleGroupMember *tgm, bool is_write,
                                 uint64_t bytes);

/* Drained sections: limits off for this member (counted), its waiting
 * requests released one after another. */
void throttle_group_disable(ThrottleGroupMember *tgm);
void throttle_group_enable(ThrottleGroupMember *tgm);

#endif
