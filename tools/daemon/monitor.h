/*
 * QMP monitors of strata-storage-daemon
 * SPDX-License-Identifier: MIT
 *
 * A monitor serves the QEMU Machine Protocol (QEMU's
 * docs/interop/qmp-spec.rst) on one character device: a listening socket,
 * which accepts one client at a time (a second one waits in the backlog
 * until the first leaves, as with QSD), or the daemon's stdin/stdout.
 *
 * Per connection: the greeting, capabilities negotiation, then commands
 * processed in order (pipelined commands are answered in order).  Input
 * is framed by a streaming scanner that follows strings and nesting, so a
 * message may arrive in any number of pieces; each complete message is
 * parsed and checked (util/options JSON), its arguments validated against
 * qapi/qmp.json, and the command run (qmp-cmds.c).  Limits: a message of
 * at most QMP_MAX_MESSAGE bytes and QMP_MAX_DEPTH nesting levels; a longer
 * or deeper one is skipped to its end and answered with an error, and the
 * connection goes on.
 *
 * When a connection's input ends (EOF: the client shut down its sending
 * side or left; a read error likewise), even while a command runs, the
 * complete messages read before the end still run, in order, and are
 * answered as long as the client reads; an unfinished last message is
 * dropped.  Then the connection closes: a socket monitor accepts its next
 * client, a stdio monitor serves no more (the daemon stays up, as
 * qemu-storage-daemon does, until quit or a signal).
 *
 * Commands run in the main thread; one whose handler runs nested loop
 * iterations (a drain) holds every other monitor's input until it
 * returns, so commands never interleave.
 */
#ifndef STRATA_DAEMON_MONITOR_H
#define STRATA_DAEMON_MONITOR_H

#include <stdbool.h>
#include <json-glib/json-glib.h>
#include "util/error.h"
#include "util/loop.h"

#define QMP_MAX_MESSAGE (16u << 20)
#define QMP_MAX_DEPTH 64

typedef struct Monitor Monitor;

/* A monitor on listening socket @listen_fd (borrowed: the chardev owns
 * it), or, with @listen_fd -1, on @in_fd/@out_fd (stdio).  @pretty
 * indents responses. */
Monitor *monitor_new(Loop *loop, int listen_fd, int in_fd, int out_fd,
                     bool pretty);
/* Close the connection (after writing what is queued, briefly) and free. */
void monitor_free(Monitor *mon);

/* Send an event to every negotiated connection: {"timestamp": {seconds,
 * microseconds}, "event": @name, "data": @data}.  Takes @data (may be
 * NULL). */
void monitor_emit_event(const char *name, JsonNode *data);

/* Write out every monitor's queued output (blocking, bounded): before
 * the daemon exits. */
void monitor_flush_all(void);

#endif
