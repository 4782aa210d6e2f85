/*
 * Block layer internals: nodes, drivers, edges, limits, stats
 * SPDX-License-Identifier: MIT
 *
 * The vocabulary every file under block/ shares.  Public API users see only
 * opaque handles (include/strata/strata.h); drivers, the request path and
 * unit tests include this header.
 *
 * Threading: a graph belongs to one StrataContext.  Control-path functions
 * here run in the owner thread of the context's first queue's loop
 * (loop_is_owner(ctx->loop), see util/loop.h).  Functions marked _co_ (the
 * data path) run in a coroutine of any queue's loop of that context, in
 * parallel with other queues: what they share on a node is guarded as
 * "Request state" below says.  Other threads reach a graph only through
 * the backend's thread-safe submission path (block/backend.c).
 */
#ifndef STRATA_BLOCK_INT_H
#define STRATA_BLOCK_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>
#include <glib.h>

#include "strata/strata.h"
#include "util/bufpool.h"
#include "util/coroutine.h"
#include "util/error.h"
#include "util/iov.h"
#include "util/loop.h"
#include "util/options.h"
#include "util/thread.h"

typedef struct BlockDriver BlockDriver;
typedef struct BlockChild BlockChild;
typedef struct BlockReq BlockReq;
typedef struct ReopenState ReopenState;

/* Largest read or write one request may carry (documented in
 * docs/request-path.md): 2 GiB minus one page, what one Linux syscall
 * moves at most.  Write-zeroes and discard may be larger. */
#define BLOCK_MAX_RW_BYTES ((int64_t)0x7ffff000)
/* Largest offset + bytes of any request: keeps every sum below INT64_MAX. */
#define BLOCK_MAX_OFFSET ((int64_t)1 << 62)
/* Largest request alignment a node may have (the `align` options of mem
 * and blkdebug; refused at open above it): the padding of write-zeroes
 * writes partial blocks from the shared zero buffer, which is this large
 * (ZERO_BUF_SIZE), and an RMW block is one pool buffer. */
#define BLOCK_MAX_REQUEST_ALIGN ((uint32_t)1 << 20)

/* ---- request flags --------------------------------------------------- */

enum {
    REQ_FUA = STRATA_REQ_FUA,              /* durable on completion */
    REQ_MAY_UNMAP = STRATA_REQ_MAY_UNMAP,  /* write-zeroes may deallocate */
    REQ_NO_FALLBACK = STRATA_REQ_NO_FALLBACK, /* write-zeroes: no slow path */
    REQ_PUBLIC_MASK = STRATA_REQ_FUA | STRATA_REQ_MAY_UNMAP | STRATA_REQ_NO_FALLBACK,
};

/* ---- permissions (QEMU's model) --------------------------------------- */

enum {
    PERM_CONSISTENT_READ = STRATA_PERM_CONSISTENT_READ,
    PERM_WRITE = STRATA_PERM_WRITE,
    PERM_WRITE_UNCHANGED = STRATA_PERM_WRITE_UNCHANGED,
    PERM_RESIZE = STRATA_PERM_RESIZE,
    PERM_ALL = STRATA_PERM_ALL,
};

/* "consistent read, write" for messages; static storage per call site is
 * not needed: returns a newly allocated string. */
char *perm_names(uint64_t perm);

/* ---- limits ------------------------------------------------------------
 * All in bytes.  request_alignment, mem_alignment and iov_len_alignment are
 * a node's *own* requirements, enforced by the request path at that node's
 * entry; they are not inherited by parents (the child's entry enforces them
 * again, and doing it twice would bounce twice).  The transfer and
 * zero/discard limits are inherited by filters and formats from their
 * primary child (max_*: minimum, opt_* and alignments: maximum).
 * 0 means "no limit" for max_* and "no preference" for opt_*.
 */
typedef struct BlockLimits {
    uint32_t request_alignment;      /* offset and length, power of two */
    uint32_t mem_alignment;          /* buffer addresses, power of two */
    uint32_t iov_len_alignment;      /* each element's length, power of two */
    int64_t max_transfer;            /* bytes per driver request, 0 = none */
    int64_t opt_transfer;
    int max_iov;                     /* elements per driver request */
    uint32_t pwrite_zeroes_alignment;
    int64_t max_pwrite_zeroes;
    uint32_t pdiscard_alignment;
    int64_t max_pdiscard;
    uint32_t opt_mem_alignment;      /* hint for buffer allocation: max over
                                        the subtree of mem_alignment */
    /* The storage's block sizes, 0 when unknown: logical (the smallest
     * unit it addresses) and physical (the smallest it writes without a
     * read-modify-write of its own; 4096 on a 512e drive).  Facts for
     * exports and for the align filter's default, not requirements: the
     * request path never reads them.  Inherited from the primary child;
     * the align filter raises physical_block_size to its alignment. */
    uint32_t logical_block_size;
    uint32_t physical_block_size;
} BlockLimits;

/* ---- statistics --------------------------------------------------------- */

typedef enum BlockReqType {
    REQ_READ,
    REQ_WRITE,
    REQ_ZEROES,
    REQ_DISCARD,
    REQ_FLUSH,
    REQ_TYPE__MAX,
} BlockReqType;

extern const char *const block_req_type_names[REQ_TYPE__MAX];

#define STATS_HIST_BUCKETS 32   /* log2 of latency in ns: bucket i holds
                                   [2^i, 2^(i+1)) ns; bucket 0 also 0 ns */

typedef struct BlockOpStats {
    uint64_t ops, bytes, errors;
    uint64_t total_ns;
    uint64_t hist[STATS_HIST_BUCKETS];
} BlockOpStats;

typedef struct BlockPadStats {
    uint64_t padded_reads;          /* reads widened to alignment */
    uint64_t rmw_writes;            /* writes done as read-modify-write */
    uint64_t serialising_waits;     /* requests that waited on an overlap */
    uint64_t coalesced_writes;      /* writes merged into another's RMW */
    uint64_t bytes_bounced;         /* bytes copied through pool buffers */
    uint64_t vectors_collapsed;     /* vectors gathered to fit max_iov */
    uint64_t pool_waits;            /* reservations that waited on the pool */
    uint64_t split_requests;        /* requests split at max_transfer/max_iov */
} BlockPadStats;

typedef struct BlockStats {
    BlockOpStats op[REQ_TYPE__MAX];
    BlockPadStats pad;
} BlockStats;

/* Record one completed request of @type that began at @start_ns, taken
 * with co_clock_begin() (this call is its co_clock_end()). */
void block_stats_account(BlockStats *s, BlockReqType type, int64_t bytes,
                         int ret, int64_t start_ns);

/* ---- debug events ---------------------------------------------------------
 * Points in the request path where blkdebug can inject errors, change
 * state or hold a request at a breakpoint.  Names as QEMU spells them.
 */
typedef enum DebugEvent {
    DBG_NONE,
    DBG_READ_AIO,
    DBG_WRITE_AIO,
    DBG_FLUSH_TO_OS,
    DBG_FLUSH_TO_DISK,
    DBG_PWRITEV_RMW_HEAD,
    DBG_PWRITEV_RMW_AFTER_HEAD,
    DBG_PWRITEV_RMW_TAIL,
    DBG_PWRITEV_RMW_AFTER_TAIL,
    DBG_PWRITEV,
    DBG_PWRITEV_ZERO,
    DBG_PWRITEV_DONE,
    DBG__MAX,
} DebugEvent;

extern const char *const debug_event_names[DBG__MAX];

/* ---- request tracking ----------------------------------------------------
 * A request that covers bytes is tracked on the node over the range it
 * owns, for serialisation (drain counts node->in_flight, which every entry
 * point holds from entry to return).  BlockReq lives in the request's
 * coroutine frame.
 * block/io.c owns the fields; the interval tree lives in block/reqtree.c.
 */
typedef struct NodeShard NodeShard;

struct BlockReq {
    StrataNode *node;
    BlockReqType type;
    int64_t lo, hi;                 /* range this request owns: [lo, hi) */
    /* Arrival order relative to serialising requests (block/io.c, "Order
     * across queues"): a serialising request's epoch is the node's count
     * of serialising arrivals including itself; any other request's is
     * that count as it found it on arrival. */
    uint64_t seq;
    bool serialising;               /* owns [lo, hi) exclusively */
    NodeShard *shard;               /* tree it is in: a queue's shard, or
                                       NULL for the node's serialising tree */
    CoQueue waiters;                /* requests waiting for this one, under
                                       the lock of the tree it is in */
    union {
        /* interval tree links (block/reqtree.c): serialising requests */
        struct {
            BlockReq *rb_left, *rb_right, *rb_parent;
            bool rb_red;
            int64_t rb_max_hi;      /* max hi in this subtree */
        };
        /* list links (block/io.c): a shard's plain requests */
        struct {
            BlockReq *list_prev, *list_next;
        };
    };
    void *pad_state;                /* block/pad.c, e.g. coalescing */
};

/* ---- nodes ---------------------------------------------------------------- */

typedef enum DiscardMode {
    DISCARD_IGNORE,     /* "ignore" / "off": discard requests do nothing */
    DISCARD_UNMAP,      /* "unmap" / "on": passed down */
} DiscardMode;

typedef enum DetectZeroes {
    DETECT_ZEROES_OFF,
    DETECT_ZEROES_ON,
    DETECT_ZEROES_UNMAP,
} DetectZeroes;

typedef enum PreallocMode {
    PREALLOC_OFF,
    PREALLOC_FALLOC,
    PREALLOC_FULL,
} PreallocMode;

extern const char *const prealloc_mode_names[];

struct StrataNode {
    const BlockDriver *drv;
    void *opaque;                   /* driver state, drv->instance_size */
    StrataContext *ctx;
    char *node_name;
    bool auto_named;
    int refcnt;
    OptNode *options;               /* the tree it was opened with */

    /* common options */
    bool read_only;
    /* Where read-write access is refused, open read-only instead (the
     * protocol driver's open applies it and sets read_only). */
    bool auto_read_only;
    /* Share every permission with other users of the node (and so of
     * its image), whatever the parents share; requires read_only. */
    bool force_share;
    bool cache_direct;
    bool cache_no_flush;
    DiscardMode discard;
    DetectZeroes detect_zeroes;
    bool rmw_coalesce;
    /* Copy guest memory through pool buffers even when the kernel would
     * take it directly: always, or for requests of at most this many bytes
     * (the file driver's bounce / bounce-threshold options). */
    bool bounce_always;
    int64_t bounce_threshold;

    /* graph */
    GSList *children;               /* BlockChild *, owned */
    BlockChild *file;               /* primary child (filters, formats) */
    GSList *parents;                /* BlockChild *, weak */

    /* permissions: cumulative over parent edges */
    uint64_t perm, shared_perm;

    BlockLimits bl;
    bool supports_fua;              /* driver honours REQ_FUA natively */
    int64_t total_bytes;            /* cached length, -1 unknown */

    /*
     * Request state (block/io.c), shared by every queue that sends
     * requests through the node.  What each request touches lives in its
     * queue's shard (in flight, the tree of its non-serialising requests,
     * completed writes, statistics): no cache line is written by two
     * queues for a request that overlaps no serialising one.  What only
     * serialising requests and flushes touch is guarded by @lock.
     */
    NodeShard *shard[STRATA_MAX_QUEUES];  /* created on a queue's first
                                             request, kept until close */
    SpinLock lock;                  /* serial_root, flush state, shards[] */
    BlockReq *serial_root;          /* serialising requests, all queues */
    uint64_t serial_epoch;          /* atomic: serialising arrivals */
    int serialising_in_flight;      /* atomic: tracked serialising */
    int quiesce_counter;            /* atomic */
    bool multi_queue;               /* under @lock: more than one queue
                                       has sent requests */
    bool shard_locking;             /* atomic, changed under @lock: plain
                                       requests take their shard's lock
                                       (block/io.c, "Locking mode") */

    /* flush bookkeeping (block/io.c), under @lock */
    uint64_t flushed_gen;           /* sum of the shards' write_gen covered
                                       by the last flush */
    bool flush_failed;              /* atomic; sticky after a buffered
                                       flush error */
    bool flush_active;
    CoQueue flush_queue;
};

/* One queue's part of a node's request state; only that queue's thread
 * writes it, except @tracked_head, which serialising requests of other
 * queues scan under @lock. */
struct NodeShard {
    SpinLock lock;                  /* tracked_head and its waiters */
    int busy;                       /* lock-free section running (block/io.c,
                                       "Locking mode") */
    int in_flight;                  /* inside this node's entry points
                                       (SHARD_ADD; drains sum the shards) */
    BlockReq *tracked_head;         /* this queue's non-serialising requests:
                                       a list (block/io.c, "Order across
                                       queues") */
    uint64_t write_gen;             /* writes completed on this queue */
    /* Locked sections seen with no serialising request in flight since
     * the epoch @quiet_epoch (block/io.c, "Locking mode"). */
    uint64_t quiet_epoch;
    unsigned quiet_sections;
    BlockStats stats;
} __attribute__((aligned(64)));

struct BlockChild {
    char *role;                     /* "file", "image", "root", ... */
    StrataNode *node;               /* owned reference */
    StrataNode *parent;             /* weak; NULL when the parent is a backend */
    StrataBackend *backend;         /* the parent when it is a backend */
    uint64_t perm;                  /* taken on @node */
    uint64_t shared_perm;           /* allowed to others on @node */
};

/* "node 'disk0'" or "backend 'vda'": the user of an edge, for messages. */
char *child_user_name(const BlockChild *c);

/* ---- drivers ---------------------------------------------------------------- */

/*
 * A driver is a table of callbacks.  NULL means: a filter forwards to its
 * primary child; anything else returns -ENOTSUP (data path) or fails (control
 * path).  Data-path callbacks run in a coroutine of the node's loop and see
 * only requests that fit the node's limits (the request path guarantees it);
 * they return 0 or -errno.  Reads return 0 on success: short reads never
 * reach the caller (a driver zero-fills past its end).
 */
struct BlockDriver {
    const char *name;
    const char *alias;              /* e.g. "null-co" */
    size_t instance_size;
    bool is_filter;                 /* one child, passes data through */
    /* The driver keeps per-node data-path state without locks (a libnbd
     * handle, timers and FIFOs, breakpoints): its requests all run on the
     * context's first queue; a request of another queue moves its
     * coroutine there for the node's entry and back (block/io.c). */
    bool single_queue;
    bool is_format;                 /* raw, qcow2: has a "file" child */
    /* Role of the primary child, e.g. "file" or "image"; NULL if none. */
    const char *child_role;
    /* Option schema name in qapi/ (default: the driver name). */
    const char *schema;

    /* Legacy filenames (block/filename.c).  @protocol_name is the prefix
     * before ':' that selects this driver in a plain filename
     * ("blkdebug", "null-co"); NULL if none.  @parse_filename turns such a
     * filename (prefix included, or none when the driver was named
     * explicitly) into options of @opts, the node's option object: it sets
     * only what @opts does not have yet, so options given explicitly win.
     * Without the hook a driver that takes a "filename" option gets the
     * whole string there. */
    const char *protocol_name;
    /* More prefixes that select the driver (NULL-terminated, or NULL):
     * "nbd+unix", "nbd+tcp". */
    const char *const *protocol_aliases;
    bool (*parse_filename)(const char *filename, OptNode *opts,
                           StrataError **errp);
    /* Driver options a reopen may change (NULL-terminated), besides the
     * common ones: reopen_prepare finds their new values in rs->options.
     * Any other driver option in a reopen fails with "Cannot change the
     * option 'x'" unless its value stays the same. */
    const char *const *reopen_options;

    /* Open: parse driver options (mark them consumed), open children with
     * block_open_child(), set node->bl defaults in refresh_limits. */
    bool (*open)(StrataNode *node, OptNode *opts, StrataError **errp);
    void (*close)(StrataNode *node);

    int (*co_preadv)(StrataNode *node, int64_t offset, int64_t bytes,
                     const IOVector *qiov, int flags);
    int (*co_pwritev)(StrataNode *node, int64_t offset, int64_t bytes,
                      const IOVector *qiov, int flags);
    int (*co_pwrite_zeroes)(StrataNode *node, int64_t offset, int64_t bytes,
                            int flags);
    int (*co_pdiscard)(StrataNode *node, int64_t offset, int64_t bytes);
    /* Make completed writes durable (fdatasync). */
    int (*co_flush)(StrataNode *node);
    /* Allocation status of [offset, offset + bytes): sets *pnum to the
     * length of the run with the same status starting at @offset, returns
     * STRATA_BLOCK_* flags or -errno. */
    int (*co_block_status)(StrataNode *node, int64_t offset, int64_t bytes,
                           int64_t *pnum);
    int64_t (*get_length)(StrataNode *node);
    int (*co_truncate)(StrataNode *node, int64_t size, PreallocMode prealloc,
                       StrataError **errp);
    /* Fill in @bl: it arrives holding the defaults merged from children. */
    void (*refresh_limits)(StrataNode *node, BlockLimits *bl);

    /* What the node takes on its primary child, given what its users hold
     * on it (@perm/@shared); NULL passes them through unchanged, which is
     * right for filters and formats.  An overlay that never writes its
     * base takes only read. */
    void (*child_perm)(StrataNode *node, uint64_t perm, uint64_t shared,
                       uint64_t *child_perm, uint64_t *child_shared);

    /* Permissions: check that @perm/@shared can be taken (file locks), and
     * apply them; abort undoes a successful check. */
    bool (*check_perm)(StrataNode *node, uint64_t perm, uint64_t shared,
                       StrataError **errp);
    void (*set_perm)(StrataNode *node, uint64_t perm, uint64_t shared);
    void (*abort_perm)(StrataNode *node);

    /* Reopen transaction, inside a drained section. */
    bool (*reopen_prepare)(ReopenState *rs, StrataError **errp);
    void (*reopen_commit)(ReopenState *rs);
    void (*reopen_abort)(ReopenState *rs);

    /* A drained section that covers the node (the node, a node below
     * or a node above it is drained) begins or ends; may run in a
     * coroutine and must not yield.  A filter that holds requests (throttle) lets them go
     * here, or the drain would wait for its limits. */
    void (*drained_begin)(StrataNode *node);
    void (*drained_end)(StrataNode *node);

    /* Debug events from the request path (blkdebug); may yield. */
    void (*co_debug_event)(StrataNode *node, int event);

    /* Text for "info": driver-specific lines, e.g. the engine in use. */
    void (*dump_info)(StrataNode *node, GString *out);
};

/* Registered drivers (block/drivers.c). */
const BlockDriver *block_driver_find(const char *name);
/* NULL-terminated list of all drivers. */
const BlockDriver *const *block_driver_list(void);

/* ---- reopen ------------------------------------------------------------------ */

struct ReopenState {
    StrataNode *node;
    OptNode *options;       /* the node's new option subtree (borrowed) */
    bool read_only;
    bool cache_direct;
    bool cache_no_flush;
    DetectZeroes detect_zeroes;
    DiscardMode discard;
    /* The request alignment the node will have after commit, when the
     * driver's prepare knows it changes (a new O_DIRECT descriptor); 0
     * means unchanged. */
    uint32_t request_alignment;
    void *opaque;           /* driver's prepared state */
};

/* ---- graph (block/graph.c) ---------------------------------------------------- */

/* The AIO engines (block/aio-engine.h); the context keeps per-loop state
 * for each. */
typedef enum AioEngineId {
    AIO_ENGINE_THREADS,
    AIO_ENGINE_NATIVE,
    AIO_ENGINE_IO_URING,
    AIO_ENGINE__MAX,
} AioEngineId;

/* A queue (block/queue.c): one loop, its thread, its per-thread state. */
typedef struct QueueWork QueueWork;
struct QueueWork {
    QueueWork *next;
    void (*run)(QueueWork *w);      /* in the queue's loop */
};

struct StrataQueue {
    StrataContext *ctx;
    unsigned index;                 /* 0: the context's first queue */
    Loop *loop;
    GThread *thread;                /* the loop thread, while it runs */
    int tid;                        /* its kernel thread id (atomic), or 0 */
    int thread_stop;                /* atomic */
    void *engine[AIO_ENGINE__MAX];  /* AIO engine state of this loop */
    void (*engine_free[AIO_ENGINE__MAX])(void *);
    /* Work handed over by threads that do not own the loop. */
    Mutex lock;
    QueueWork *pending_head, *pending_tail;
    LoopBH *submit_bh;
    /* This thread's share of ctx->pool (util/bufpool.h), flushed by
     * @pool_bh when the pool asks. */
    BufPoolCache *pool_cache;
    LoopBH *pool_bh;
};

/* Context internals (block/context.c). */
struct StrataContext {
    Loop *loop;                     /* queues[0]->loop: the control path's */
    BufPool *pool;                  /* shared by every queue (thread-safe) */
    GHashTable *nodes;              /* node-name → StrataNode (weak) */
    GList *backends;                /* StrataBackend * (weak); changes
                                       under queues_lock */
    uint64_t next_auto_name;
    StrataQueue *queues[STRATA_MAX_QUEUES];  /* under queues_lock; [0]
                                                lives as long as ctx */
    Mutex queues_lock;
    int draining;                   /* atomic: drained sections waiting */
    /* Guest memory the embedder registered (block/memregion.c); NULL
     * while none is. */
    struct MemRegionTable *memregions;
};

/* The queue whose loop the calling thread runs or has attached, or NULL
 * (block/queue.c sets each queue's loop user pointer). */
static inline StrataQueue *queue_current(void)
{
    return (StrataQueue *)loop_current_user();
}

/* The queue a submission from this thread goes to (strata.h, "Queues"). */
StrataQueue *queue_for_submit(StrataContext *ctx);
/* Hand @w to @q's loop: run there soon (any thread). */
void queue_submit_work(StrataQueue *q, QueueWork *w);
/* Create / destroy the context's first queue around @ctx->loop. */
StrataQueue *queue_create(StrataContext *ctx, unsigned index, StrataError **errp);
void queue_destroy(StrataQueue *q);
/* While a drained section waits: a request leaving a node or a backend
 * in another queue's thread wakes the context's loop. */
/* The bounce-buffer cache of the current thread's queue of @ctx, or NULL
 * (then the pool itself serves). */
static inline BufPoolCache *ctx_pool_cache(StrataContext *ctx)
{
    StrataQueue *q = queue_current();

    return q && q->ctx == ctx ? q->pool_cache : NULL;
}

static inline void ctx_note_idle(StrataContext *ctx)
{
    if (__builtin_expect(__atomic_load_n(&ctx->draining, __ATOMIC_RELAXED) > 0, 0)) {
        loop_wake(ctx->loop);
    }
}
/* Run the context's loop (its owner only) until @busy(opaque) is false;
 * requests finishing on other queues wake it. */
void ctx_wait_idle(StrataContext *ctx, bool (*busy)(void *), void *opaque);

/* The graph's write side (block/graph.c): from the context's thread,
 * outside coroutines, when other queues exist, quiesce every backend of
 * @ctx and wait until no request is in flight on any queue; returns
 * whether it did (pass that to graph_wrunlock).  With one queue the
 * context's thread is the only one that runs requests, so nothing is
 * needed. */
bool graph_wrlock(StrataContext *ctx);
void graph_wrunlock(StrataContext *ctx, bool locked);

/* The shard of @node for the current queue; it exists once a request of
 * this queue entered the node (node_co_* did), so only the request path
 * below an entry point calls these. */
static inline NodeShard *node_cur_shard(const StrataNode *node)
{
    return node->shard[queue_current()->index];
}
static inline BlockStats *node_stats(const StrataNode *node)
{
    return &node_cur_shard(node)->stats;
}
static inline bool node_shard_locking(const StrataNode *node)
{
    return __atomic_load_n(&node->shard_locking, __ATOMIC_ACQUIRE);
}
/* Whether nodes may track without locks while one queue uses them
 * (membarrier(2) registered; never under ThreadSanitizer). */
bool io_lockfree_tracking(void);
/* Tests: locked sections before the locking mode goes off again (0: the
 * default), and how many times it went on, on any node. */
void io_test_set_quiet_sections(unsigned n);
void io_test_set_section_delay(unsigned ns);
uint64_t io_test_locking_switches(void);
/* A full barrier on every thread of the process (membarrier(2); only
 * when io_lockfree_tracking() is true): the slow side of an asymmetric
 * fence whose fast side is a plain store and a compiler barrier. */
void io_membarrier(void);
/* The statistics of every queue, summed (block/io.c). */
void node_stats_merge(const StrataNode *node, BlockStats *out);
static inline BlockStats node_stats_sum(const StrataNode *node)
{
    BlockStats s;
    node_stats_merge(node, &s);
    return s;
}
NodeShard *node_shard_create(StrataNode *node, unsigned index);
/* At close: no request may be in flight (asserted). */
void node_shards_free(StrataNode *node);

/* Open a node (and its children) from an option tree.  Marks consumed what
 * it used and fails on anything left over, naming the key path. */
StrataNode *block_open(StrataContext *ctx, OptNode *opts, StrataError **errp);

/* ---- legacy filenames (block/filename.c) ------------------------------------
 * QEMU-era scripts name images with plain filenames that carry a protocol
 * prefix ("blkdebug:rules.conf:disk.img", "null-co://", "json:{...}"); these
 * turn such a filename into option-tree members.  Control path.
 */

/* The protocol driver for a path without a prefix: "host_device" for a
 * block or character device, else "file" (static string). */
const char *block_probe_protocol(const char *path);

/*
 * Put @filename, a protocol-level filename, into @opts (an object for one
 * node): the driver comes from @opts' own "driver", else from the prefix
 * before the first ':' (when no '/' comes first), else from probing the
 * path; then the driver's parse_filename hook (or its "filename" option)
 * takes the rest.  Members already in @opts win over what the filename
 * implies.  Errors: "Unknown protocol 'foo'", the hook's.
 */
bool block_parse_protocol_filename(OptNode *opts, const char *filename,
                                   StrataError **errp);

/*
 * What a tool does with its positional FILE: a "json:{...}" filename is
 * merged under @opts (members of @opts win); anything else sets "driver"
 * to @default_driver when @opts has none (NULL: leave it) and goes to the
 * node that stores the data: the primary child of a format driver (or of
 * a filter without a parse_filename hook, such as align), else
 * the node itself, through block_parse_protocol_filename().
 */
bool block_options_add_filename(OptNode *opts, const char *filename,
                                const char *default_driver, StrataError **errp);

/*
 * In a driver's open: open or look up the child under @key in @opts
 * (an object → opened inline; a string → an existing node-name) and attach
 * it to @parent with @role.  Returns the edge, or NULL with an error naming
 * the key path.  If @required is false and the key is absent, returns NULL
 * without an error.
 */
BlockChild *block_open_child(StrataNode *parent, OptNode *opts, const char *key,
                             const char *role, bool required, StrataError **errp);

void node_ref(StrataNode *node);
void node_unref(StrataNode *node);
StrataNode *node_find(StrataContext *ctx, const char *name);

/* Recompute @node's limits from its children and its driver, and its
 * parents' in turn. */
void node_refresh_limits(StrataNode *node);

/*
 * Attach @child to a parent (node or backend), taking a reference and
 * @perm/@shared on it.  Fails with an error naming both users when the
 * permissions conflict with the child's other parents.
 */
BlockChild *node_attach_child(StrataNode *parent, StrataNode *child,
                              const char *role, uint64_t perm, uint64_t shared,
                              StrataError **errp);
BlockChild *backend_attach_root(StrataBackend *be, StrataNode *child,
                                uint64_t perm, uint64_t shared,
                                StrataError **errp);
/* Detach and drop the edge's reference. */
void node_detach_child(BlockChild *c);
/* Change the permissions an edge takes; false (nothing changed) on conflict. */
bool child_set_perm(BlockChild *c, uint64_t perm, uint64_t shared,
                    StrataError **errp);

/* The node a filter passes to (NULL for protocol drivers). */
static inline StrataNode *node_filtered(StrataNode *node)
{
    return node->file ? node->file->node : NULL;
}

/* Length in bytes (cached; drivers update node->total_bytes). */
int64_t node_get_length(StrataNode *node);
/* Forget the cached length of @node and of every node above it (the
 * node grew or shrank under them). */
void node_invalidate_length(StrataNode *node);

/*
 * QEMU's end-of-image rule: a node whose length (rounded up to 512 bytes,
 * as QEMU's sector count is) is not a multiple of its request alignment
 * @align can be written only by a user that may also resize it, because a
 * padded write of its last block grows it.  True when
 * @perm may be held; else false with an error (EPERM, in QEMU's words; or
 * the errno of a failed length query, naming the node).
 */
bool node_check_size_alignment(StrataNode *node, uint64_t perm, uint32_t align,
                               StrataError **errp);

/* Reopen @node with changed common options in @changes (read-only,
 * cache.direct, cache.no-flush, detect-zeroes), applied to its subtree
 * transactionally inside a drained section.  Control path, not in a
 * coroutine. */
bool node_reopen(StrataNode *node, OptNode *changes, StrataError **errp);

/* ---- request path (block/io.c) -------------------------------------------------
 * The entry of every node: validate, track, pad, bounce, split, drive.
 * Coroutine only, in the node's loop.  0 or -errno.
 */
int node_co_preadv(StrataNode *node, int64_t offset, int64_t bytes,
                   const IOVector *qiov, int flags);
int node_co_pwritev(StrataNode *node, int64_t offset, int64_t bytes,
                    const IOVector *qiov, int flags);
int node_co_pwrite_zeroes(StrataNode *node, int64_t offset, int64_t bytes,
                          int flags);
int node_co_pdiscard(StrataNode *node, int64_t offset, int64_t bytes);
int node_co_flush(StrataNode *node);
int node_co_block_status(StrataNode *node, int64_t offset, int64_t bytes,
                         int64_t *pnum);
int node_co_truncate(StrataNode *node, int64_t size, PreallocMode prealloc,
                     StrataError **errp);

/* Drained sections on a node: new requests entering @node wait, and
 * in-flight ones complete.  Not in a coroutine: runs the loop. */
void node_drain_begin(StrataNode *node);
void node_drain_end(StrataNode *node);
/* Call the drained_begin or drained_end hooks of @node, its subtree and
 * its ancestors (node_drain_begin/end do; a backend's drained section
 * does it for its root).  Never yields. */
void node_drained_notify(StrataNode *node, bool begin);

/* Debug event: forwarded to @node's driver's co_debug_event if it has one. */
void node_co_debug_event(StrataNode *node, int event);

/* ---- driver helpers ------------------------------------------------------------ */

/* Run @fn(arg) in the context's thread pool from a coroutine. */
int block_co_run_in_pool(StrataNode *node, int (*fn)(void *), void *arg);

static inline bool is_power_of_2(uint64_t x) { return x && !(x & (x - 1)); }
#define ROUND_DOWN(x, a) ((x) & ~((__typeof__(x))(a) - 1))
#define ROUND_UP(x, a) ROUND_DOWN((x) + (a) - 1, (a))
#define IS_ALIGNED(x, a) (((x) & ((__typeof__(x))(a) - 1)) == 0)

#endif
