/*
 * Strata: an embeddable block layer for virtual machine monitors.
 * SPDX-License-Identifier: MIT
 *
 * This is the one public header.  It depends only on libc.  Every type is
 * opaque; configuration enters as JSON option trees.  See docs/ for the
 * architecture and the contracts summarised in the comments below.
 */
#ifndef STRATA_STRATA_H
#define STRATA_STRATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(STRATA_BUILDING_LIBRARY)
#define STRATA_EXPORT __attribute__((visibility("default")))
#else
#define STRATA_EXPORT
#endif

#define STRATA_VERSION_MAJOR 0
#define STRATA_VERSION_MINOR 1
#define STRATA_VERSION_MICRO 0
#define STRATA_VERSION_ENCODE(maj, min, mic) (((maj) << 16) | ((min) << 8) | (mic))
#define STRATA_VERSION \
    STRATA_VERSION_ENCODE(STRATA_VERSION_MAJOR, STRATA_VERSION_MINOR, STRATA_VERSION_MICRO)

/* Run-time version of the library, as STRATA_VERSION_ENCODE() packs it. */
STRATA_EXPORT unsigned int strata_version(void);
/* Run-time version as a string, e.g. "0.1.0".  Static storage. */
STRATA_EXPORT const char *strata_version_string(void);

/* ---- Errors (control path) ------------------------------------------- */

typedef enum StrataErrorClass {
    STRATA_ERROR_GENERIC = 0,
    STRATA_ERROR_INVALID_OPTION,   /* a config option or value is wrong */
    STRATA_ERROR_NOT_FOUND,        /* a named node, file or driver is missing */
    STRATA_ERROR_PERMISSION,       /* a permission conflict or a lock held */
    STRATA_ERROR_IO,               /* the storage failed */
} StrataErrorClass;

typedef struct StrataError StrataError;

/* Message naming the offending option/value; borrowed from @err. */
STRATA_EXPORT const char *strata_error_get_message(const StrataError *err);
/* Positive errno, or 0. */
STRATA_EXPORT int strata_error_get_errno(const StrataError *err);
STRATA_EXPORT StrataErrorClass strata_error_get_class(const StrataError *err);
/* Free an error (NULL is fine). */
STRATA_EXPORT void strata_error_free(StrataError *err);


/* ---- Handles ------------------------------------------------------------
 * StrataContext: the graphs, and their first queue: one event loop (and its
 *   thread, AIO rings).  Every graph belongs to one context.
 * StrataQueue: one thread's way into a context's graphs: its own event
 *   loop, AIO engine state (one io_uring ring / libaio context) and
 *   statistics shard.  A request runs, from submission to completion, in
 *   the loop of the queue it was submitted on; several queues on several
 *   threads feed one graph at once (see "Queues").
 * StrataNode: one node of a graph (a driver instance), refcounted.
 * StrataBackend: what a guest device holds: the root of a graph, with
 *   permissions, an error policy and a thread-safe request entry.
 */
typedef struct StrataContext StrataContext;
typedef struct StrataQueue StrataQueue;
typedef struct StrataNode StrataNode;
typedef struct StrataBackend StrataBackend;

/* ---- Contexts ----------------------------------------------------------- */

/*
 * Create a context with its own event loop.  The loop has one owner
 * thread, the only thread that runs it: first the caller, which runs it
 * with strata_context_run_once(), from a GSource (strata-glib.h) or inside
 * its own blocking calls; then, from strata_context_start_thread() until
 * strata_context_stop_thread(), a thread of its own.  Other threads never
 * run the loop: their requests are handed to the owner.  NULL with *errp
 * on failure.
 */
STRATA_EXPORT StrataContext *strata_context_new(StrataError **errp);
/* Close every node and backend still open and free the context.  In the
 * owner thread, not while the loop thread runs (stop it first). */
STRATA_EXPORT void strata_context_free(StrataContext *ctx);
/* Run one loop iteration; with @blocking, wait for an event.  True if
 * anything ran.  Only in the owner thread (asserted). */
STRATA_EXPORT bool strata_context_run_once(StrataContext *ctx, bool blocking);
/* Hand the loop to a new thread, which runs it until
 * strata_context_stop_thread().  Call in the owner thread. */
STRATA_EXPORT bool strata_context_start_thread(StrataContext *ctx,
                                               StrataError **errp);
/* Stop the loop thread and join it; the calling thread (any but the loop
 * thread) owns the loop afterwards.  Requests other threads submit from
 * then on complete when it runs the loop. */
STRATA_EXPORT void strata_context_stop_thread(StrataContext *ctx);

/*
 * Run @fn(opaque) in the thread that owns the context's loop and wait for
 * it to return: how control calls (opening nodes, creating backends,
 * reopen, setters such as strata_backend_set_error_action) are made from
 * other threads (a VMM hot-plugging a disk while the loop runs in its own
 * thread, or in the main thread through a GSource).  In the owner thread
 * it calls @fn directly.  From another thread it returns once the owner
 * has run the loop.
 */
typedef void StrataCallFunc(void *opaque);

/*
 * Events the library reports beside the errno its requests return, once,
 * when they happen: today a remote back end lost (which node, which
 * socket, why).  The library prints nothing itself.  @fn gets the node's
 * name and the message, both borrowed for the call, and @opaque; it runs
 * in the thread of the node's loop, must not block, and must not call
 * strata_set_log_func().  Once strata_set_log_func() returns, no report
 * uses the function or opaque it replaced.  Process-wide; NULL, the
 * default, drops the reports.  The tools print them on stderr.
 */
typedef void StrataLogFunc(const char *node_name, const char *msg,
                           void *opaque);
STRATA_EXPORT void strata_set_log_func(StrataLogFunc *fn, void *opaque);

/* Largest number of requests the AIO engines batch into one submission
 * syscall (QEMU's aio-max-batch).  0, the default, lets the engines
 * choose: everything queued during one loop iteration, except that where
 * the kernel completes requests later (a loop device, io_uring's workers,
 * a disk) a deep load's requests leave in quarters of its peak depth as
 * they are queued (docs/request-path.md); UINT_MAX batches everything. */
STRATA_EXPORT void strata_context_set_aio_max_batch(StrataContext *ctx,
                                                    unsigned max_batch);
/* Busy-poll before the loop sleeps, for up to @max_ns nanoseconds
 * (adaptive, as a QEMU iothread's poll-max-ns; 0, the default, never
 * polls): drivers that register pollers (virtio-blk-vhost-user's used
 * rings) then take their completions without a notification and a
 * wake-up.  Costs CPU time while waiting, up to @max_ns each time.  Owner
 * thread, or before the loop runs. */
STRATA_EXPORT void strata_context_set_poll_max_ns(StrataContext *ctx,
                                                  int64_t max_ns);
STRATA_EXPORT void strata_context_call(StrataContext *ctx, StrataCallFunc *fn,
                                       void *opaque);

/* ---- Queues ---------------------------------------------------------------
 * Multi-queue (docs/architecture.md, "Threading contract").  A context
 * starts with one queue, its own loop (strata_context_get_queue); every
 * strata_context_* loop call above is that queue's.  Each further queue
 * has its own loop with one owner thread, exactly as the context's: the
 * creating thread, then from strata_queue_start_thread() until
 * strata_queue_stop_thread() a thread of its own.
 *
 * Which queue runs a request (callback and blocking forms of the backend
 * API): the queue whose loop the submitting thread owns or runs (a
 * completion callback that submits again stays on its queue); else the
 * queue the thread chose with strata_queue_set_current(); else the
 * context's first queue.  A submission from a thread that does not own
 * the queue's loop is handed over to its owner (a lock and a wake-up);
 * from the owner it costs no cross-thread step at all, and its callback
 * runs in that thread.  Requests on different queues run in parallel,
 * with the same guarantees as on one: overlapping read-modify-writes
 * serialise, a flush covers every write completed before it on any
 * queue, drained sections and graph changes wait for every queue.
 *
 * Control calls (opening nodes, reopen, backends, drains) stay with the
 * context's first queue's owner, as before.
 */

/* Most queues per context (the first included). */
#define STRATA_MAX_QUEUES 64

/* The context's first queue (index 0): its own loop. */
STRATA_EXPORT StrataQueue *strata_context_get_queue(StrataContext *ctx);
/*
 * A new queue on @ctx, owned by the calling thread.  NULL with *errp when
 * @ctx has STRATA_MAX_QUEUES queues or the loop cannot be created.  Any
 * thread.
 */
STRATA_EXPORT StrataQueue *strata_queue_new(StrataContext *ctx,
                                            StrataError **errp);
/* Free a queue (not the first): every request submitted on it completes
 * first (its owner runs the loop until then).  In the owner thread, with
 * no loop thread running (stop it first). */
STRATA_EXPORT void strata_queue_free(StrataQueue *q);
/* 0 for the context's first queue, 1.. for the others. */
STRATA_EXPORT unsigned strata_queue_get_index(const StrataQueue *q);
/* As strata_context_run_once / start_thread / stop_thread, for @q. */
STRATA_EXPORT bool strata_queue_run_once(StrataQueue *q, bool blocking);
STRATA_EXPORT bool strata_queue_start_thread(StrataQueue *q, StrataError **errp);
STRATA_EXPORT void strata_queue_stop_thread(StrataQueue *q);
/* Make the calling thread's submissions go to @q when the thread owns no
 * queue's loop (a vCPU thread bound to one queue); NULL restores the
 * default (the context's first queue). */
STRATA_EXPORT void strata_queue_set_current(StrataQueue *q);

/* ---- Nodes ----------------------------------------------------------------
 * Options are QEMU blockdev-add trees, e.g.
 *   {"driver": "raw", "node-name": "disk0",
 *    "file": {"driver": "file", "filename": "disk.img", "cache": {"direct": true}}}
 * or the same as dotted keys: "driver=raw,node-name=disk0,file.driver=file,...".
 * Errors name the offending key path ("file.aio: expected one of ...").
 * Control path: call in the thread that owns the context's loop (asserted;
 * strata_context_call gets there from any other).
 */
STRATA_EXPORT StrataNode *strata_node_open_json(StrataContext *ctx,
                                                const char *json,
                                                StrataError **errp);
STRATA_EXPORT StrataNode *strata_node_open_dotted(StrataContext *ctx,
                                                  const char *keys,
                                                  StrataError **errp);
/*
 * Open an image named the way qemu-io and qemu-img name one: a path
 * ("disk.img", "/dev/sdb" opens host_device), a protocol prefix
 * ("blkdebug:rules.conf:disk.img", "blkdebug::disk.img", "null-co://",
 * "file:a:b.img"), or "json:{...}".  @options_json (may be NULL) holds
 * options that win over what the filename implies, e.g.
 * {"driver": "raw", "file": {"align": 4096}}; without a "driver" the top
 * node is raw over the protocol node the filename names (no format
 * probing).  Errors as QEMU words them ("Unknown protocol 'foo'").
 * Same context rules as strata_node_open_json().
 */
STRATA_EXPORT StrataNode *strata_node_open_filename(StrataContext *ctx,
                                                    const char *filename,
                                                    const char *options_json,
                                                    StrataError **errp);
/* Borrowed look-up by node-name; NULL if none. */
STRATA_EXPORT StrataNode *strata_node_find(StrataContext *ctx, const char *name);
STRATA_EXPORT void strata_node_ref(StrataNode *node);
/* Drop a reference; the node closes (children after parents) at zero. */
STRATA_EXPORT void strata_node_unref(StrataNode *node);
/* Borrowed; valid while the node lives. */
STRATA_EXPORT const char *strata_node_get_name(const StrataNode *node);
STRATA_EXPORT const char *strata_node_get_driver(const StrataNode *node);
STRATA_EXPORT int64_t strata_node_get_length(StrataNode *node);

/* Limits of a node, in bytes (see docs/architecture.md). */
typedef struct StrataLimits {
    uint32_t request_alignment;
    uint32_t mem_alignment;
    uint32_t iov_len_alignment;
    int64_t max_transfer;
    int64_t opt_transfer;
    int max_iov;
    uint32_t pwrite_zeroes_alignment;
    int64_t max_pwrite_zeroes;
    uint32_t pdiscard_alignment;
    int64_t max_pdiscard;
    /* Allocate guest buffers aligned to this to avoid bounces. */
    uint32_t opt_mem_alignment;
    /* The storage's logical and physical block sizes, 0 when unknown
     * (what an export tells its guest as the preferred block size). */
    uint32_t logical_block_size;
    uint32_t physical_block_size;
} StrataLimits;
STRATA_EXPORT void strata_node_get_limits(const StrataNode *node,
                                          StrataLimits *out);

/* Per-node statistics. */
enum {
    STRATA_STATS_READ, STRATA_STATS_WRITE, STRATA_STATS_ZEROES,
    STRATA_STATS_DISCARD, STRATA_STATS_FLUSH, STRATA_STATS__MAX
};
#define STRATA_STATS_HIST_BUCKETS 32
typedef struct StrataOpStats {
    uint64_t ops, bytes, errors, total_ns;
    uint64_t hist[STRATA_STATS_HIST_BUCKETS];  /* log2(latency ns) */
} StrataOpStats;
typedef struct StrataStats {
    StrataOpStats op[STRATA_STATS__MAX];
    uint64_t padded_reads, rmw_writes, serialising_waits, coalesced_writes;
    uint64_t bytes_bounced, vectors_collapsed, pool_waits, split_requests;
} StrataStats;
STRATA_EXPORT void strata_node_get_stats(const StrataNode *node,
                                         StrataStats *out);

/* Reopen @node with changed options (JSON object: "read-only",
 * "cache": {"direct", "no-flush"}, "detect-zeroes"), transactionally over
 * its subtree inside a drained section: all change or none. */
STRATA_EXPORT bool strata_node_reopen_json(StrataNode *node, const char *json,
                                           StrataError **errp);

/* ---- Objects ---------------------------------------------------------------
 * QEMU's user-creatable objects (docs/objects.md): secrets, iothreads, TLS
 * credentials, throttle groups, in one process-wide registry that nodes
 * and exports refer to by id.  Control path, any thread.
 */

/* Create an object from @json, object-add's arguments:
 *   {"qom-type": "throttle-group", "id": "tg0",
 *    "limits": {"iops-total": 1000}}
 * Errors name the property, in QEMU's words where it has them. */
STRATA_EXPORT bool strata_object_add_json(const char *json, StrataError **errp);
/* Delete an object; refused while a node or export uses it. */
STRATA_EXPORT bool strata_object_del(const char *id, StrataError **errp);
/* Change a throttle group's limits at run time (QMP qom-set on "limits"):
 * @json holds the "limits" members to change ({"iops-total": 500}); the
 * others keep their values.  Queued requests are kept and scheduled again
 * under the new limits (docs/throttle.md). */
STRATA_EXPORT bool strata_throttle_group_set_limits(const char *id,
                                                    const char *json,
                                                    StrataError **errp);

/* ---- Backends ----------------------------------------------------------------- */

/* Permissions, as QEMU defines them. */
#define STRATA_PERM_CONSISTENT_READ  (1u << 0)
#define STRATA_PERM_WRITE            (1u << 1)
#define STRATA_PERM_WRITE_UNCHANGED  (1u << 2)
#define STRATA_PERM_RESIZE           (1u << 3)
#define STRATA_PERM_ALL              0xfu

/* Request flags. */
#define STRATA_REQ_FUA        (1u << 0)   /* durable when it completes */
#define STRATA_REQ_MAY_UNMAP  (1u << 1)   /* write-zeroes may deallocate */
/* Write-zeroes: fail with -ENOTSUP rather than write a zero buffer when
 * the storage has no fast way to zero. */
#define STRATA_REQ_NO_FALLBACK (1u << 2)

/* Block status flags (strata_backend_block_status). */
#define STRATA_BLOCK_DATA   (1u << 0)     /* allocated, reads from storage */
#define STRATA_BLOCK_ZERO   (1u << 1)     /* reads as zeroes */

/*
 * Create a backend over @root, taking @perm and allowing others @shared
 * (STRATA_PERM_*).  Fails with an error naming both users when another
 * user of the node does not share what this one takes.  The backend holds
 * a reference to @root.
 */
STRATA_EXPORT StrataBackend *strata_backend_new(StrataNode *root,
                                                const char *name,
                                                uint32_t perm, uint32_t shared,
                                                StrataError **errp);
/* Drain and free; the root reference is dropped. */
STRATA_EXPORT void strata_backend_free(StrataBackend *be);
STRATA_EXPORT StrataNode *strata_backend_get_root(StrataBackend *be);

/* Write cache: when disabled, every write is FUA (QEMU's writethrough). */
STRATA_EXPORT void strata_backend_set_write_cache(StrataBackend *be,
                                                  bool enabled);

/* Error policy per direction. */
typedef enum StrataErrorAction {
    STRATA_ERROR_ACTION_REPORT,   /* complete the request with the error */
    STRATA_ERROR_ACTION_IGNORE,   /* complete it with success */
    STRATA_ERROR_ACTION_STOP,     /* park it and every later request */
    STRATA_ERROR_ACTION_ENOSPC,   /* stop on ENOSPC, report others */
} StrataErrorAction;
STRATA_EXPORT void strata_backend_set_error_action(StrataBackend *be,
                                                   StrataErrorAction on_read,
                                                   StrataErrorAction on_write);
/* Called when the backend stops on an error (@err is the -errno,
 * @is_write the direction), once, in the thread of the queue whose
 * request failed (the context's loop owner with one queue). */
typedef void StrataStopCallback(void *opaque, int err, bool is_write);
STRATA_EXPORT void strata_backend_set_stop_callback(StrataBackend *be,
                                                    StrataStopCallback *cb,
                                                    void *opaque);
STRATA_EXPORT bool strata_backend_is_stopped(StrataBackend *be);
/* Retry the parked requests and accept new ones again.  Any thread; the
 * parked requests resume in their own queues' threads. */
STRATA_EXPORT void strata_backend_resume(StrataBackend *be);

/* Drained section: new requests wait, in-flight ones complete before
 * drain_begin returns (a blocking call).  Not from a completion callback.
 * drain_end from a thread that does not own the loop takes effect soon,
 * in the owner. */
STRATA_EXPORT void strata_backend_drain_begin(StrataBackend *be);
STRATA_EXPORT void strata_backend_drain_end(StrataBackend *be);

/*
 * Requests.  Offsets and lengths are bytes, any alignment.  A request
 * past the end of the device fails with -EIO.  Data-path results are 0 or
 * -errno.
 *
 * Blocking form: callable from any thread except from inside a completion
 * callback or the context's loop callbacks.  The request goes to the
 * queue a callback-form request would (see "Queues"); in the thread that
 * owns that queue's loop it runs the loop until done; in any other it
 * waits while the owner runs the request (so the owner must be running
 * the loop: its loop thread, or the embedder's main loop through a
 * GSource).
 */
STRATA_EXPORT int strata_backend_pread(StrataBackend *be, int64_t offset,
                                       void *buf, size_t bytes, uint32_t flags);
STRATA_EXPORT int strata_backend_pwrite(StrataBackend *be, int64_t offset,
                                        const void *buf, size_t bytes,
                                        uint32_t flags);
STRATA_EXPORT int strata_backend_preadv(StrataBackend *be, int64_t offset,
                                        const struct iovec *iov, int niov,
                                        uint32_t flags);
STRATA_EXPORT int strata_backend_pwritev(StrataBackend *be, int64_t offset,
                                         const struct iovec *iov, int niov,
                                         uint32_t flags);
STRATA_EXPORT int strata_backend_pwrite_zeroes(StrataBackend *be,
                                               int64_t offset, int64_t bytes,
                                               uint32_t flags);
STRATA_EXPORT int strata_backend_pdiscard(StrataBackend *be, int64_t offset,
                                          int64_t bytes);
STRATA_EXPORT int strata_backend_flush(StrataBackend *be);
STRATA_EXPORT int64_t strata_backend_get_length(StrataBackend *be);
STRATA_EXPORT int strata_backend_truncate(StrataBackend *be, int64_t size);
/* Returns STRATA_BLOCK_* flags for the run at @offset, its length in *pnum. */
STRATA_EXPORT int strata_backend_block_status(StrataBackend *be, int64_t offset,
                                              int64_t bytes, int64_t *pnum);

/*
 * Callback form, callable from any thread (a VMM's vCPU threads): returns
 * 0 → @cb(opaque, ret) runs exactly once, later, in the owner thread of
 * the queue that runs the request (see "Queues");
 * returns <0 → it never runs.  @iov (the array and the memory it points
 * to) must stay valid until @cb runs; the library keeps no pointer into it
 * afterwards.  For get_length, ret is the length (or -errno).
 */
typedef void StrataCompletion(void *opaque, int64_t ret);
STRATA_EXPORT int strata_backend_aio_preadv(StrataBackend *be, int64_t offset,
                                            const struct iovec *iov, int niov,
                                            uint32_t flags,
                                            StrataCompletion *cb, void *opaque);
STRATA_EXPORT int strata_backend_aio_pwritev(StrataBackend *be, int64_t offset,
                                             const struct iovec *iov, int niov,
                                             uint32_t flags,
                                             StrataCompletion *cb, void *opaque);
STRATA_EXPORT int strata_backend_aio_pwrite_zeroes(StrataBackend *be,
                                                   int64_t offset, int64_t bytes,
                                                   uint32_t flags,
                                                   StrataCompletion *cb,
                                                   void *opaque);
STRATA_EXPORT int strata_backend_aio_pdiscard(StrataBackend *be, int64_t offset,
                                              int64_t bytes,
                                              StrataCompletion *cb, void *opaque);
STRATA_EXPORT int strata_backend_aio_flush(StrataBackend *be,
                                           StrataCompletion *cb, void *opaque);
STRATA_EXPORT int strata_backend_aio_get_length(StrataBackend *be,
                                                StrataCompletion *cb,
                                                void *opaque);
STRATA_EXPORT int strata_backend_aio_truncate(StrataBackend *be, int64_t size,
                                              StrataCompletion *cb, void *opaque);

/* ---- Guest memory ---------------------------------------------------------
 * An embedder registers the memory its guest's buffers live in (guest RAM)
 * so that file nodes using aio=io_uring hand single-buffer requests inside
 * it to the kernel as io_uring fixed buffers: the pages are pinned once at
 * registration instead of being mapped for every request.  Purely an
 * optimisation: results are the same with or without it.  See
 * docs/file-driver.md ("Guest memory").
 *
 * Control path, callable from any thread: both calls run in the thread
 * that owns the context's loop through strata_context_call().
 */

/*
 * Register [@addr, @addr + @len) (any alignment; pages are pinned whole)
 * with @ctx.  Regions must not overlap one another.  False with *errp for
 * a NULL address, an empty or wrapping range, an overlap (errno EEXIST)
 * or too many regions (ENOSPC).  An engine that cannot pin the memory
 * (RLIMIT_MEMLOCK, file-backed memory, too old a kernel) is not an error:
 * the region stays recorded and its I/O takes the normal path.  While
 * registered, the memory must stay mapped and must not be discarded
 * (MADV_DONTNEED, balloon inflation, virtio-mem unplug): the kernel keeps
 * using the pages pinned at registration.
 */
STRATA_EXPORT bool strata_context_register_memory(StrataContext *ctx,
                                                  void *addr, size_t len,
                                                  StrataError **errp);
/*
 * Unregister the region that starts at @addr (a no-op if none does) and
 * unpin it.  No request in flight may still use it (drain the backends
 * first); requests issued afterwards take the normal path.
 */
STRATA_EXPORT void strata_context_unregister_memory(StrataContext *ctx,
                                                    void *addr);

#ifdef __cplusplus
}
#endif

#endif /* STRATA_STRATA_H */
