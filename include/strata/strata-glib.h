/*
 * Strata GLib integration (SPDX-License-Identifier: MIT)
 *
 * For embedders whose main loop is a GMainLoop: a GSource that runs a
 * context's event loop.  Separate from strata.h so that the main API depends
 * on libc only.
 */
#ifndef STRATA_STRATA_GLIB_H
#define STRATA_STRATA_GLIB_H

#include <glib.h>
#include "strata/strata.h"

G_BEGIN_DECLS

/*
 * A new GSource that drives @ctx's loop from a GMainContext: attach it with
 * g_source_attach() and every iteration of that GMainContext runs the
 * Strata loop's ready work (fd events, timers, bottom halves, coroutine
 * wake-ups).  The context must not also run in a thread of its own, and
 * the GMainContext must be iterated by the thread that owns the context's
 * loop (the one that created the context): dispatching it from another
 * thread aborts.  Other threads may use the blocking and callback request
 * forms meanwhile; their requests run in the owner's iterations.
 * (transfer full): g_source_destroy() and g_source_unref() it before
 * strata_context_free().
 */
STRATA_EXPORT GSource *strata_context_create_gsource(StrataContext *ctx);
/* The same for a queue of the context (strata.h, "Queues"). */
STRATA_EXPORT GSource *strata_queue_create_gsource(StrataQueue *q);

G_END_DECLS

#endif
