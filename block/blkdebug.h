/*
 * blkdebug: breakpoints and state for tools and tests
 * SPDX-License-Identifier: MIT
 *
 * The blkdebug filter (block/blkdebug.c, docs/blkdebug.md) injects errors
 * and changes its state when events of the request path fire on it, as its
 * rules say.  This header adds what QEMU's qemu-io offers as the
 * break / wait_break / resume / remove_break commands: a breakpoint holds
 * the next request that fires an event on the filter, under a tag, until it
 * is resumed.
 *
 * Every function takes any node and acts on the first blkdebug node of its
 * subtree (blkdebug_find()), so a tool can pass the root of a graph.  All of
 * them are control path: call them in the thread of the node's context
 * (the loop's home thread), not from another thread.  None of them yields
 * unless its name says _co_.
 *
 * Breakpoints are one-shot, as in QEMU: the rule is consumed by the first
 * request that hits it, which stays suspended until blkdebug_resume() or
 * blkdebug_remove_break() names its tag.  A drained section over the filter
 * (node_drain_begin() on the filter or a node above it) releases every
 * suspended request, so that a drain or a close never waits forever for a
 * resume nobody will send.  (A backend's own drain, as in
 * strata_backend_free(), is not seen: resume or remove breakpoints before
 * freeing a backend whose requests are held.)
 */
#ifndef STRATA_BLOCK_BLKDEBUG_H
#define STRATA_BLOCK_BLKDEBUG_H

#include <stdbool.h>
#include "block/block-int.h"

/* The first blkdebug node in @root's subtree, depth first, @root included
 * and children in the order they were attached; NULL if there is none.
 * Borrowed: no reference is taken. */
StrataNode *blkdebug_find(StrataNode *root);

/*
 * Set a breakpoint: the next request that fires @event (a name of
 * debug_event_names[], e.g. "pwritev_rmw_after_head") on the filter, in any
 * state, is suspended under @tag.  Several breakpoints may share a tag.
 * False with an error (STRATA_ERROR_NOT_FOUND) when @node's subtree holds
 * no blkdebug node, or (STRATA_ERROR_INVALID_OPTION) naming an unknown
 * event.
 */
bool blkdebug_break(StrataNode *node, const char *event, const char *tag,
                    StrataError **errp);

/*
 * Remove every breakpoint with @tag that has not fired yet and resume every
 * request suspended under @tag.  False with STRATA_ERROR_NOT_FOUND when
 * there was neither.
 */
bool blkdebug_remove_break(StrataNode *node, const char *tag,
                           StrataError **errp);

/*
 * Resume one request suspended under @tag (the earliest suspended).  Outside
 * a coroutine the request runs at once, until it next yields, before this
 * returns (QEMU's behaviour); from a coroutine it is woken and runs on a
 * later loop iteration.  A request suspended at several breakpoints of one
 * event continues when the last of them is resumed.  False with
 * STRATA_ERROR_NOT_FOUND when no request is suspended under @tag.
 */
bool blkdebug_resume(StrataNode *node, const char *tag, StrataError **errp);

/* True if a request is suspended under @tag. */
bool blkdebug_is_suspended(StrataNode *node, const char *tag);

/*
 * Run the context's loop until a request is suspended under @tag.  Not in a
 * coroutine (asserted).  Returns true once one is; returns false at once
 * when none is and no breakpoint with @tag is pending, since the wait could
 * then never end.  It may still wait forever if no request ever reaches a
 * pending breakpoint.
 */
bool blkdebug_wait_break(StrataNode *node, const char *tag);

/* The coroutine form of blkdebug_wait_break(): yields instead of running
 * the loop.  Must be called from a coroutine of the node's loop. */
bool blkdebug_co_wait_break(StrataNode *node, const char *tag);

/*
 * Tell @cb about held requests: @cb(opaque, tag, true) when a request is
 * suspended under @tag, @cb(opaque, tag, false) just before one is let go
 * (resumed, removed, or released by a drain).  qemu-io prints "blkdebug:
 * Suspended request 'tag'" and "blkdebug: Resuming request 'tag'" at these
 * points and iotests expect the lines; the library never prints, so a tool
 * that wants them installs this.  @cb runs in the loop thread, possibly in
 * the held request's coroutine, and must not call back into blkdebug.
 * NULL @cb removes it.  No-op without a blkdebug node.
 */
typedef void BlkdebugNotify(void *opaque, const char *tag, bool suspended);
void blkdebug_set_notify(StrataNode *node, BlkdebugNotify *cb, void *opaque);

/* The filter's current state (1 after open unless a "none" rule changed
 * it); -1 if @node's subtree holds no blkdebug node. */
int64_t blkdebug_get_state(StrataNode *node);

#endif
