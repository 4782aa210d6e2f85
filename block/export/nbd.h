/*
 * NBD server and the "nbd" export type
 * SPDX-License-Identifier: MIT
 *
 * The NBD protocol (doc/proto.md of the NetworkBlockDevice project), fixed
 * newstyle negotiation only.  One server per process (QEMU's model):
 * nbd_server_start() listens on a UNIX or TCP socket; exports of type nbd
 * (block-export-add) are offered on it by name.  Every connection runs in
 * the context's loop as coroutines: a reader that parses requests and
 * starts one coroutine per request (pipelining), replies written in
 * completion order under a per-connection send lock.  See docs/nbd.md.
 */
#ifndef STRATA_BLOCK_EXPORT_NBD_H
#define STRATA_BLOCK_EXPORT_NBD_H

#include <stdbool.h>
#include "strata/strata.h"
#include "util/error.h"
#include "util/options.h"

/* Largest request the server takes (the maximum block size it
 * advertises). */
#define NBD_SERVER_MAX_REQUEST (32u << 20)

/*
 * Start the server from nbd-server-start's arguments / --nbd-server's
 * options: "addr" ({type: unix, path} or {type: inet, host, port}; QMP's
 * legacy {type, data: {...}} is accepted too), "max-connections" (0:
 * unlimited), "tls-creds" (id of a tls-creds object with endpoint=server).
 * Errors name the option; "NBD server already running".
 */
bool nbd_server_start(StrataContext *ctx, OptNode *opts, StrataError **errp);
/* Stop listening and end every connection (their requests complete
 * first); "NBD server not running" when there is none. */
bool nbd_server_stop(StrataError **errp);
bool nbd_server_running(void);

/* Serve a connected, non-blocking stream socket as if the server had
 * accepted it (the fuzz harness; a socket handed over by a supervisor).
 * Takes @fd; false when no server runs. */
bool nbd_server_add_client(int fd);

/* Register the nbd export type with the export framework. */
void nbd_export_register(void);

#endif
