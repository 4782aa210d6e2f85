/*
 * QMP command handlers of strata-storage-daemon
 * SPDX-License-Identifier: MIT
 */
#ifndef STRATA_DAEMON_QMP_CMDS_H
#define STRATA_DAEMON_QMP_CMDS_H

#include <json-glib/json-glib.h>
#include "qapi/qmp-schema.h"
#include "util/error.h"
#include "util/options.h"

/* A handler gets its validated arguments (an object, possibly empty) and
 * returns the "return" value (new reference), or NULL with *errp. */
typedef JsonNode *QmpHandler(OptNode *args, StrataError **errp);

/* A handler that fails with a QMP error class other than GenericError
 * (QEMU's DeviceNotFound, say) sets this before returning NULL; the
 * monitor reads and resets it. */
extern const char *qmp_error_class;

/* When set, consulted before every command runs: false refuses it with
 * "refused by this monitor's filter" (the fuzz harness keeps fuzzed
 * commands away from host files). */
extern bool (*qmp_command_filter)(const char *name, OptNode *args);

/* The handler of a schema command; NULL if none (a bug: the qmp-table
 * unit test checks that every command has one). */
QmpHandler *qmp_find_handler(const char *name);

/* The schema entry of @name; NULL if no such command. */
const QmpCommandSchema *qmp_find_command(const char *name);

/*
 * Check @args against @cmd's schema with QEMU's messages:
 *   "Parameter 'size' is missing", "Parameter 'bogus' is unexpected",
 *   "Invalid parameter type for 'size', expected: integer",
 *   "Parameter 'mode' does not accept value 'soft'".
 */
bool qmp_validate_args(const QmpCommandSchema *cmd, OptNode *args,
                       StrataError **errp);

/* x-strata-io (qmp-io.c), and dropping its backend on @node (waits for
 * the requests it has in flight) before the node goes. */
JsonNode *qmp_x_strata_io(OptNode *args, StrataError **errp);
void qmp_io_release_node(StrataNode *node);
void qmp_io_release_all(void);

/* Helpers for building return values. */
JsonNode *qmp_empty_object(void);

#endif
