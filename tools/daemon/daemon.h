/*
 * strata-storage-daemon: the state its command line and QMP share
 * SPDX-License-Identifier: MIT
 */
#ifndef STRATA_DAEMON_DAEMON_H
#define STRATA_DAEMON_DAEMON_H

#include <stdbool.h>
#include "block/block-int.h"
#include "util/error.h"
#include "util/options.h"

typedef enum ShutdownReason {
    SHUTDOWN_NONE,
    SHUTDOWN_QMP_QUIT,
    SHUTDOWN_SIGNAL,
} ShutdownReason;

typedef struct Daemon {
    StrataContext *ctx;
    Loop *loop;
    /* Nodes created by --blockdev / blockdev-add, each with the
     * reference the monitor owns, in creation order. */
    GList *owned_nodes;
    ShutdownReason shutdown;
} Daemon;

extern Daemon daemon_state;

/* --blockdev / blockdev-add: open a named node owned by the monitor.
 * Transactional: nothing remains on failure. */
bool daemon_blockdev_add(OptNode *opts, StrataError **errp);
/* blockdev-del. */
bool daemon_blockdev_del(const char *node_name, StrataError **errp);
/* Flush a node through a temporary backend (0 or -errno). */
int daemon_flush_node(StrataNode *node);
/* Ask the main loop to stop (idempotent); emits SHUTDOWN once. */
void daemon_request_shutdown(ShutdownReason reason);

#endif
