/*
 * Export framework: the block graph served to clients outside the process
 * SPDX-License-Identifier: MIT
 *
 * An export type (NBD, vhost-user-blk) registers a BlockExportDriver; an
 * export is one instance, created from options (--export,
 * block-export-add), holding a backend on the exported node with the
 * permissions its type needs.  Exports live in one registry keyed by id.
 *
 * Lifetime.  The registry holds one reference; each connected client
 * holds one more (export_client_add/remove, called by the type).
 * export_del() or shutdown asks the type to stop accepting clients and,
 * in hard mode, to disconnect those connected once their requests have
 * completed; when the last reference goes the type's destroy runs, the
 * backend is freed (drained) and the deleted notifier fires, which the
 * daemon turns into BLOCK_EXPORT_DELETED.
 *
 * Error policy (x-rerror/x-werror, a Strata extension): the backend's
 * action per direction; the type calls export_io_error() for every failed
 * request, which notifies at most once per second per export (the daemon
 * emits BLOCK_IO_ERROR); a stopped export resumes with export_resume().
 *
 * Control path: the owner thread of the exported node's context (the
 * daemon's main thread).
 */
#ifndef STRATA_BLOCK_EXPORT_EXPORT_H
#define STRATA_BLOCK_EXPORT_EXPORT_H

#include <stdbool.h>
#include <stdint.h>
#include "strata/strata.h"
#include "util/error.h"
#include "util/options.h"

typedef struct BlockExport BlockExport;
typedef struct StrataObject StrataObject;

typedef struct BlockExportDriver {
    const char *type;           /* as in qapi/qmp.json's export types */
    size_t instance_size;       /* of exp->opaque, zeroed */
    /* Start serving.  @opts holds the type's own members (validated by
     * the schema); exp->be exists.  On failure nothing may remain. */
    bool (*create)(BlockExport *exp, OptNode *opts, StrataError **errp);
    /* Stop accepting new clients; with @hard, also end the connected
     * ones once their requests have completed (each then calls
     * export_client_remove()).  May be called more than once. */
    void (*request_shutdown)(BlockExport *exp, bool hard);
    /* Free the type's state: no client remains. */
    void (*destroy)(BlockExport *exp);
} BlockExportDriver;

struct BlockExport;
/* The queue the export's next connection (or virtqueue) runs on: with
 * iothreads=, each listed iothread's queue in turn; else exp->queue
 * (NULL: the context's first queue).  Context thread. */
StrataQueue *export_next_queue(struct BlockExport *exp);

struct BlockExport {
    const BlockExportDriver *drv;
    char *id;
    char *node_name;
    StrataContext *ctx;
    StrataBackend *be;
    StrataObject *iothread;     /* held while the export lives, or NULL */
    StrataQueue *queue;         /* the iothread's queue (its thread runs
                                   the export's requests), or NULL: the
                                   context's first queue; with iothreads,
                                   the first one's */
    /* iothreads= (a Strata extension): every listed iothread, held, and
     * its queue; export_next_queue() deals them out. */
    int niothreads;
    StrataObject **iothreads;
    StrataQueue **queues;
    unsigned next_queue;
    bool writable;
    bool writethrough;
    StrataErrorAction rerror, werror;
    int refcnt;
    int clients;
    bool shutting_down;
    int64_t last_error_event_ns;
    void *opaque;               /* the type's state */
};

/* Make a type available (idempotent; types are static tables). */
void export_register_driver(const BlockExportDriver *drv);
const BlockExportDriver *export_find_driver(const char *type);

/*
 * Create an export from @opts (common members: type, id, node-name,
 * writable, writethrough, iothread, fixed-iothread, x-rerror, x-werror;
 * plus the type's).  Errors name the member: "Export type 'nbd' is not
 * available", "Block export id 'e0' is already in use", "Can't find node
 * 'x'", "iothread: ...", and the backend's permission conflicts.
 */
BlockExport *export_add(StrataContext *ctx, OptNode *opts, StrataError **errp);

/* block-export-del: fails with "Export 'x' is not found" or, in safe
 * mode with clients connected, "export 'x' still in use". */
bool export_del(const char *id, bool hard, StrataError **errp);

BlockExport *export_find(const char *id);
/* Exports in creation order, including those shutting down. */
void export_foreach(void (*fn)(BlockExport *exp, void *opaque), void *opaque);
int export_count(void);

/* Ask every export to shut down hard (daemon exit); the caller runs the
 * loop until export_count() is 0. */
void export_shutdown_all(void);

/* For types: a client connects / is gone (holds a reference). */
void export_client_add(BlockExport *exp);
void export_client_remove(BlockExport *exp);

/* For types: a request failed with -@err; applies nothing itself (the
 * backend's policy already acted) but notifies, rate-limited. */
void export_io_error(BlockExport *exp, bool is_write, int err);
/* x-block-export-resume. */
bool export_resume(const char *id, StrataError **errp);

/* Notifiers (the daemon's events); NULL to clear. */
typedef void ExportDeletedFunc(const char *id, void *opaque);
typedef void ExportIoErrorFunc(BlockExport *exp, bool is_write, int err,
                               StrataErrorAction action, void *opaque);
void export_set_notifiers(ExportDeletedFunc *deleted,
                          ExportIoErrorFunc *io_error, void *opaque);

#endif
