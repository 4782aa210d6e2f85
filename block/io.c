/*
 * The request path at the entry of every node
 * SPDX-License-Identifier: MIT
 *
 * Every read, write, write-zeroes, discard and flush entering a node passes
 * here (docs/request-path.md):
 *   1. validate the range and the vector;
 *   2. track the request on the node (drain, flush ordering, serialisation);
 *   3. requests that do not fit the node's own limits go to block/pad.c,
 *      which pads, bounces, collapses and splits them;
 *   4. the driver's callback, or the primary child for a filter.
 * The common case — an aligned request that fits — costs a range check, a
 * tracking insert and the driver call: no allocation, no copy.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>

#include "block/block-int.h"
#include "block/io.h"
#include "block/reqtree.h"
#include "block/backend-int.h"
#include "util/thread-pool.h"

const char *const debug_event_names[DBG__MAX] = {
    [DBG_NONE] = "none",
    [DBG_READ_AIO] = "read_aio",
    [DBG_WRITE_AIO] = "write_aio",
    [DBG_FLUSH_TO_OS] = "flush_to_os",
    [DBG_FLUSH_TO_DISK] = "flush_to_disk",
    [DBG_PWRITEV_RMW_HEAD] = "pwritev_rmw_head",
    [DBG_PWRITEV_RMW_AFTER_HEAD] = "pwritev_rmw_after_head",
    [DBG_PWRITEV_RMW_TAIL] = "pwritev_rmw_tail",
    [DBG_PWRITEV_RMW_AFTER_TAIL] = "pwritev_rmw_after_tail",
    [DBG_PWRITEV] = "pwritev",
    [DBG_PWRITEV_ZERO] = "pwritev_zero",
    [DBG_PWRITEV_DONE] = "pwritev_done",
};

const uint8_t io_zero_buf[ZERO_BUF_SIZE] __attribute__((aligned(4096)));

/* ---- statistics ---------------------------------------------------------- */

void block_stats_account(BlockStats *s, BlockReqType type, int64_t bytes,
                         int ret, int64_t start_ns)
{
    BlockOpStats *op = &s->op[type];
    int64_t ns = co_clock_end() - start_ns;
    int bucket = ns > 0 ? 63 - __builtin_clzll((uint64_t)ns) : 0;

    /* Only this queue's thread writes its shard (SHARD_ADD). */
    SHARD_ADD(op->ops, 1);
    if (ret < 0) {
        SHARD_ADD(op->errors, 1);
    } else {
        SHARD_ADD(op->bytes, (uint64_t)bytes);
    }
    SHARD_ADD(op->total_ns, (uint64_t)ns);
    SHARD_ADD(op->hist[MIN(bucket, STATS_HIST_BUCKETS - 1)], 1);
}

void node_stats_merge(const StrataNode *node, BlockStats *out)
{
    uint64_t *dst = (uint64_t *)out;

    G_STATIC_ASSERT(sizeof(BlockStats) % sizeof(uint64_t) == 0);
    memset(out, 0, sizeof(*out));
    for (unsigned q = 0; q < STRATA_MAX_QUEUES; q++) {
        NodeShard *sh = __atomic_load_n(&node->shard[q], __ATOMIC_ACQUIRE);
        if (!sh) {
            continue;
        }
        uint64_t *src = (uint64_t *)&sh->stats;
        for (size_t i = 0; i < sizeof(BlockStats) / sizeof(uint64_t); i++) {
            dst[i] += SHARD_READ(src[i]);
        }
    }
}

/* ---- shards ----------------------------------------------------------------
 * A node's per-queue state is created by the queue's own thread on its
 * first request through the node (the one allocation, a warm-up), and
 * published with a release store for the readers that sum the shards
 * (drain, flush, statistics, serialising requests).
 */
/*
 * Locking mode.  A queue's shard is written by its own thread; the only
 * other thread that reads it is a serialising request of another queue
 * scanning for overlaps (rare: read-modify-write, truncate).  So plain
 * requests take their shard's lock only while such a scan can happen,
 * and otherwise mark a lock-free section with a plain store to the
 * shard's busy flag: with one queue, or with several and no serialising
 * request about, the request path writes no line another thread writes
 * and runs no locked instruction for tracking.
 *
 * The mode goes on (under node->lock) when a serialising request arrives
 * on a node that several queues use, or a second queue arrives while a
 * serialising request is in flight.  The switch must not race with a
 * lock-free section already running, and must not wait for another
 * queue's loop either (its owner may be busy or blocked).  An asymmetric
 * fence does it: the switching thread sets the mode, membarrier(2) runs a
 * full barrier on every thread of the process, and it waits for the busy
 * marks it then sees to clear (a few instructions).  Either a section saw
 * the new mode, or its mark is visible.  The switch completes before
 * node->lock is released, so whoever finds the mode on under that lock
 * may scan at once; scans always take the shard's lock.
 *
 * The mode goes off again once a shard has run quiet_sections locked
 * sections with no serialising request in flight and no new one arrived
 * (under node->lock, rechecking that none is in flight: no scan can then
 * be running, and the next serialising arrival switches again).  So a
 * stream of read-modify-writes pays one membarrier(2), not one each.
 * Without membarrier (Linux < 4.14, seccomp), and under ThreadSanitizer
 * (which cannot see the fence), the mode is on for good.
 */
#if defined(__SANITIZE_THREAD__)
#define IO_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define IO_TSAN 1
#endif
#endif
#ifndef IO_TSAN
#define IO_TSAN 0
#endif

static int membarrier_ok;       /* 0 unknown, 1 registered, -1 unusable */

bool io_lockfree_tracking(void)
{
    int ok = __atomic_load_n(&membarrier_ok, __ATOMIC_ACQUIRE);

    if (IO_TSAN) {
        return false;
    }
    if (ok == 0) {
        ok = syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                     0, 0) == 0 ? 1 : -1;
        __atomic_store_n(&membarrier_ok, ok, __ATOMIC_RELEASE);
    }
    return ok > 0;
}

void io_membarrier(void)
{
    if (syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) < 0) {
        g_error("membarrier: %s", g_strerror(errno));
    }
}

/* Locked sections a shard runs with no serialising request about before
 * it turns the mode off (about 10 us of lock instructions against one
 * membarrier(2) of a few).  Tests lower it to switch often. */
#define QUIET_SECTIONS 1024
static unsigned quiet_sections = QUIET_SECTIONS;
static uint64_t locking_switches;   /* times the mode went on, all nodes */

void io_test_set_quiet_sections(unsigned n)
{
    __atomic_store_n(&quiet_sections, n ? n : QUIET_SECTIONS, __ATOMIC_RELAXED);
}

/* Tests: widen the window between a lock-free section's epoch read and
 * its insert, where a scan that did not wait for it would miss it. */
static unsigned section_delay_ns;

void io_test_set_section_delay(unsigned ns)
{
    __atomic_store_n(&section_delay_ns, ns, __ATOMIC_RELAXED);
}

/* The test hook's delay, or 0 (a relaxed load: the hot path pays a plain
 * read). */
static inline unsigned section_delay_get(void)
{
    return __atomic_load_n(&section_delay_ns, __ATOMIC_RELAXED);
}

static void section_delay(void)
{
    int64_t end = clock_ns() + section_delay_get();
    while (clock_ns() < end) {
    }
}

uint64_t io_test_locking_switches(void)
{
    return __atomic_load_n(&locking_switches, __ATOMIC_RELAXED);
}

/* Turn the locking mode on; under node->lock.  @index is the caller's
 * queue, whose own lock-free sections cannot be running. */
static void node_locking_on(StrataNode *node, unsigned index)
{
    if (node->shard_locking) {
        return;
    }
    /* Every lock-free section that starts from now on sees the mode; the
     * fence makes the ones already running visible. */
    __atomic_store_n(&node->shard_locking, true, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&locking_switches, 1, __ATOMIC_RELAXED);
    io_membarrier();
    for (unsigned q = 0; q < STRATA_MAX_QUEUES; q++) {
        NodeShard *sh = __atomic_load_n(&node->shard[q], __ATOMIC_ACQUIRE);
        if (q == index || !sh) {
            continue;
        }
        while (__atomic_load_n(&sh->busy, __ATOMIC_ACQUIRE)) {
            cpu_relax();
        }
    }
}

/* After a locked section of @sh (its owner's fields, no lock needed):
 * count it, and turn the mode off after quiet_sections quiet ones in a
 * row. */
static void node_locking_note_quiet(StrataNode *node, NodeShard *sh)
{
    uint64_t epoch = __atomic_load_n(&node->serial_epoch, __ATOMIC_RELAXED);

    if (__atomic_load_n(&node->serialising_in_flight, __ATOMIC_RELAXED) > 0 ||
        epoch != sh->quiet_epoch) {
        sh->quiet_epoch = epoch;
        sh->quiet_sections = 0;
        return;
    }
    if (++sh->quiet_sections < __atomic_load_n(&quiet_sections, __ATOMIC_RELAXED)) {
        return;
    }
    sh->quiet_sections = 0;
    spin_lock(&node->lock);
    if (io_lockfree_tracking() &&
        __atomic_load_n(&node->serialising_in_flight, __ATOMIC_RELAXED) == 0) {
        __atomic_store_n(&node->shard_locking, false, __ATOMIC_RELEASE);
    }
    spin_unlock(&node->lock);
}

NodeShard *node_shard_create(StrataNode *node, unsigned index)
{
    NodeShard *sh;

    if (posix_memalign((void **)&sh, 64, sizeof(*sh))) {
        g_error("out of memory for a node shard");
    }
    memset(sh, 0, sizeof(*sh));
    spin_init(&sh->lock);
    /* Count and publish in one step, so that of two queues arriving at
     * once the second sees the first.  Our own requests start only after
     * this returns, and scanners find the new shard empty meanwhile. */
    spin_lock(&node->lock);
    for (unsigned q = 0; q < STRATA_MAX_QUEUES; q++) {
        if (q != index && __atomic_load_n(&node->shard[q], __ATOMIC_RELAXED)) {
            node->multi_queue = true;
        }
    }
    __atomic_store_n(&node->shard[index], sh, __ATOMIC_RELEASE);
    if (node->multi_queue &&
        __atomic_load_n(&node->serialising_in_flight, __ATOMIC_RELAXED) > 0) {
        node_locking_on(node, index);
    }
    spin_unlock(&node->lock);
    return sh;
}

void node_shards_free(StrataNode *node)
{
    for (unsigned q = 0; q < STRATA_MAX_QUEUES; q++) {
        if (node->shard[q]) {
            g_assert(node->shard[q]->in_flight == 0 && !node->shard[q]->tracked_head);
            free(node->shard[q]);
            node->shard[q] = NULL;
        }
    }
}

/* The sum of one counter over the node's shards (drains, flushes). */
#define NODE_SHARD_SUM(node, field) ({                                      \
        uint64_t sum_ = 0;                                                  \
        for (unsigned q_ = 0; q_ < STRATA_MAX_QUEUES; q_++) {               \
            NodeShard *sh_ = __atomic_load_n(&(node)->shard[q_],            \
                                             __ATOMIC_ACQUIRE);             \
            if (sh_) {                                                      \
                sum_ += __atomic_load_n(&sh_->field, __ATOMIC_ACQUIRE);     \
            }                                                               \
        }                                                                   \
        sum_;                                                               \
    })

static int64_t node_in_flight(const StrataNode *node)
{
    return (int64_t)NODE_SHARD_SUM(node, in_flight);
}

/* Writes completed on every queue: each shard's count only grows, so the
 * sum is unchanged exactly when no write completed in between. */
static uint64_t node_write_gen(const StrataNode *node)
{
    return NODE_SHARD_SUM(node, write_gen);
}

/* A write (or write-zeroes, discard, truncate) completed on this queue. */
static inline void node_note_write(StrataNode *node)
{
    NodeShard *sh = node_cur_shard(node);
    __atomic_store_n(&sh->write_gen, sh->write_gen + 1, __ATOMIC_RELEASE);
}

/* ---- in flight and tracking ------------------------------------------------ */

/*
 * A request counts as in flight on a node from the moment it enters the
 * node's entry point until it returns from it, whatever it waits for in
 * between (pool memory, an overlapping request, a held breakpoint): drain
 * waits for this count, so a drained node has no request anywhere in its
 * entry, and no plan built for its old limits survives a reopen.  The
 * count is per queue (the shard); drains sum it.
 */
static inline NodeShard *node_enter(StrataNode *node)
{
    StrataQueue *q = queue_current();

    /* The threading contract: a graph's requests run in coroutines of the
     * loops of its context's queues. */
    g_assert(co_in_coroutine() && q && q->ctx == node->ctx);
    NodeShard *sh = node->shard[q->index];
    if (G_UNLIKELY(!sh)) {
        sh = node_shard_create(node, q->index);
    }
    __atomic_store_n(&sh->in_flight, sh->in_flight + 1, __ATOMIC_RELAXED);
    return sh;
}

static inline void node_leave(StrataNode *node, NodeShard *sh)
{
    g_assert(sh->in_flight > 0);
    /* Release: a drain that reads 0 sees everything this request did. */
    __atomic_store_n(&sh->in_flight, sh->in_flight - 1, __ATOMIC_RELEASE);
    ctx_note_idle(node->ctx);
}

/*
 * A shard's plain requests: an intrusive doubly linked list, newest first.
 * Insertion and removal, which every plain request pays, are O(1); only a
 * serialising request (rare: read-modify-write, truncate) walks the whole
 * list for overlaps.  The interval tree these lived in cost a depth-32
 * O_DIRECT read on tmpfs about 80 ns of rebalancing (18% of the user
 * time), because sequential offsets make every insertion rotate.
 */
static inline void reqlist_insert(BlockReq **head, BlockReq *req)
{
    req->list_prev = NULL;
    req->list_next = *head;
    if (*head) {
        (*head)->list_prev = req;
    }
    *head = req;
}

static inline void reqlist_remove(BlockReq **head, BlockReq *req)
{
    if (req->list_prev) {
        req->list_prev->list_next = req->list_next;
    } else {
        g_assert(*head == req);
        *head = req->list_next;
    }
    if (req->list_next) {
        req->list_next->list_prev = req->list_prev;
    }
}

/* reqtree_foreach_overlap()'s contract, in list order. */
static bool reqlist_foreach_overlap(BlockReq *head, int64_t lo, int64_t hi,
                                    ReqTreeVisit *fn, void *opaque)
{
    for (BlockReq *r = head; r; r = r->list_next) {
        if (r->lo < hi && lo < r->hi && !fn(r, opaque)) {
            return false;
        }
    }
    return true;
}

/*
 * Order across queues.  Serialising requests are rare (read-modify-write,
 * truncate) and live in one tree per node under node->lock; every other
 * request lives in its queue's shard (a list), under the shard's lock, which only
 * a serialising request of another queue ever contends for.  Arrival
 * order is an epoch: a serialising request takes ++serial_epoch under
 * node->lock before it scans the shards; any other request reads
 * serial_epoch and inserts itself in one critical section of its shard's
 * lock.  The shard lock orders the two: either the scan finds the request with the epoch
 * it read, or the request read the incremented epoch.  Then
 *   - a plain request waits for serialising ones with epoch <= its own;
 *   - a serialising request waits for plain ones with epoch < its own and
 *     for serialising ones with a smaller epoch;
 * so every wait points to an earlier arrival, and no cycle can form.
 */
/* Enter a critical section on the current queue's own shard: locked in
 * locked mode, else marked busy (see "Locking mode").  True if locked. */
static inline bool shard_begin(StrataNode *node, NodeShard *sh)
{
    if (!node_shard_locking(node)) {
        __atomic_store_n(&sh->busy, 1, __ATOMIC_RELAXED);
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        if (G_LIKELY(!node_shard_locking(node))) {
            return false;
        }
        __atomic_store_n(&sh->busy, 0, __ATOMIC_RELEASE);
    }
    spin_lock(&sh->lock);
    return true;
}

static inline void shard_end(StrataNode *node, NodeShard *sh, bool locked)
{
    if (locked) {
        spin_unlock(&sh->lock);
        /* After the unlock: the switch takes node->lock, which nests
         * outside shard locks (req_claim_next). */
        node_locking_note_quiet(node, sh);
    } else {
        __atomic_store_n(&sh->busy, 0, __ATOMIC_RELEASE);
    }
}

static void req_track_in(BlockReq *req, StrataNode *node, NodeShard *sh,
                         BlockReqType type, int64_t lo, int64_t hi,
                         bool serialising);

void req_track(BlockReq *req, StrataNode *node, BlockReqType type,
               int64_t lo, int64_t hi, bool serialising)
{
    req_track_in(req, node, node_cur_shard(node), type, lo, hi, serialising);
}

/* The same with the caller's shard of @node for this queue. */
static void req_track_in(BlockReq *req, StrataNode *node, NodeShard *sh,
                         BlockReqType type, int64_t lo, int64_t hi,
                         bool serialising)
{

    g_assert(sh && sh->in_flight > 0 && lo < hi);
    /* Only what is read before reqtree_insert() sets the links. */
    req->node = node;
    req->type = type;
    req->lo = lo;
    req->hi = hi;
    req->serialising = serialising;
    req->shard = serialising ? NULL : sh;
    req->pad_state = NULL;
    co_queue_init(&req->waiters);
    if (serialising) {
        spin_lock(&node->lock);
        __atomic_add_fetch(&node->serialising_in_flight, 1, __ATOMIC_SEQ_CST);
        req->seq = __atomic_add_fetch(&node->serial_epoch, 1, __ATOMIC_SEQ_CST);
        reqtree_insert(&node->serial_root, req);
        if (node->multi_queue) {
            /* This request will scan the other queues' shards. */
            node_locking_on(node, queue_current()->index);
        }
        spin_unlock(&node->lock);
    } else {
        /* The epoch read and the insert form one critical section of the
         * shard lock, which serialising requests scan under: either they
         * see both, or this read follows their epoch increment. */
        bool locked = shard_begin(node, sh);
        req->seq = __atomic_load_n(&node->serial_epoch, __ATOMIC_ACQUIRE);
        if (G_UNLIKELY(section_delay_get()) && !locked) {
            section_delay();
        }
        reqlist_insert(&sh->tracked_head, req);
        shard_end(node, sh, locked);
    }
}

void req_untrack(BlockReq *req)
{
    StrataNode *node = req->node;

    if (req->shard) {
        bool locked = shard_begin(node, req->shard);
        reqlist_remove(&req->shard->tracked_head, req);
        co_queue_restart_all(&req->waiters);
        shard_end(node, req->shard, locked);
    } else {
        spin_lock(&node->lock);
        reqtree_remove(&node->serial_root, req);
        __atomic_sub_fetch(&node->serialising_in_flight, 1, __ATOMIC_SEQ_CST);
        co_queue_restart_all(&req->waiters);
        spin_unlock(&node->lock);
    }
}

typedef struct ConflictSearch {
    BlockReq *self;
    bool plain;                 /* searching a shard: plain requests */
    BlockReq *found;
} ConflictSearch;

static bool find_conflict(BlockReq *other, void *opaque)
{
    ConflictSearch *s = opaque;
    BlockReq *self = s->self;
    bool earlier;

    if (other == self) {
        return true;
    }
    if (s->plain) {
        /* A serialising request meets a plain one that read an older
         * epoch than its own. */
        earlier = other->seq < self->seq;
    } else if (self->serialising) {
        earlier = other->seq < self->seq;
    } else {
        earlier = other->seq <= self->seq;
    }
    if (earlier) {
        s->found = other;
        return false;
    }
    return true;
}

void req_set_pad_state(BlockReq *req, void *state)
{
    g_assert(!req->shard);
    spin_lock(&req->node->lock);
    req->pad_state = state;
    spin_unlock(&req->node->lock);
}

/* One pass: wait for one conflicting request if there is one (under the
 * lock of the tree it is in).  True if it waited. */
static void note_wait(BlockReq *req, bool *waited)
{
    if (!*waited) {
        SHARD_ADD(node_stats(req->node)->pad.serialising_waits, 1);
        *waited = true;
    }
}

static bool req_co_wait_one(BlockReq *req, bool *waited)
{
    StrataNode *node = req->node;
    ConflictSearch s = { .self = req };

    if (__atomic_load_n(&node->serialising_in_flight, __ATOMIC_SEQ_CST) > 0) {
        spin_lock(&node->lock);
        reqtree_foreach_overlap(node->serial_root, req->lo, req->hi,
                                find_conflict, &s);
        if (s.found) {
            note_wait(req, waited);
            co_queue_wait_spin(&s.found->waiters, &node->lock);
            spin_unlock(&node->lock);
            return true;
        }
        spin_unlock(&node->lock);
    }
    if (!req->serialising) {
        return false;
    }
    s.plain = true;
    for (unsigned q = 0; q < STRATA_MAX_QUEUES; q++) {
        NodeShard *sh = __atomic_load_n(&node->shard[q], __ATOMIC_ACQUIRE);
        if (!sh) {
            continue;
        }
        spin_lock(&sh->lock);
        reqlist_foreach_overlap(sh->tracked_head, req->lo, req->hi,
                                find_conflict, &s);
        if (s.found) {
            note_wait(req, waited);
            co_queue_wait_spin(&s.found->waiters, &sh->lock);
            spin_unlock(&sh->lock);
            return true;
        }
        spin_unlock(&sh->lock);
    }
    return false;
}

bool req_co_wait_conflicts(BlockReq *req)
{
    bool waited = false;

    if (req->lo >= req->hi) {
        return false;
    }
    /* Fast exit for a plain request: no serialising one on the node (its
     * epoch increment, which this request's epoch read saw if it came
     * first, follows its count's). */
    while (req_co_wait_one(req, &waited)) {
    }
    return waited;
}

typedef struct NextScan {
    BlockReq *cur;
    BlockReq *next;
} NextScan;

static bool find_next_serialising(BlockReq *other, void *opaque)
{
    NextScan *s = opaque;
    if (other->seq > s->cur->seq && (!s->next || other->seq < s->next->seq)) {
        s->next = other;
    }
    return true;
}

typedef struct BetweenScan {
    uint64_t from, to;          /* plain epochs in [from, to) */
    bool found;
} BetweenScan;

static bool find_plain_between(BlockReq *other, void *opaque)
{
    BetweenScan *s = opaque;
    if (other->seq >= s->from && other->seq < s->to) {
        s->found = true;
        return false;
    }
    return true;
}

BlockReq *req_claim_next(BlockReq *cur, int64_t lo, int64_t hi,
                         bool (*claim)(BlockReq *next, void *opaque),
                         void *opaque)
{
    StrataNode *node = cur->node;
    NextScan s = { .cur = cur };
    BlockReq *claimed = NULL;

    g_assert(!cur->shard);
    spin_lock(&node->lock);
    reqtree_foreach_overlap(node->serial_root, lo, hi, find_next_serialising, &s);
    if (s.next) {
        /* A plain request that arrived between the two comes first. */
        BetweenScan b = { .from = cur->seq, .to = s.next->seq };
        for (unsigned q = 0; q < STRATA_MAX_QUEUES && !b.found; q++) {
            NodeShard *sh = __atomic_load_n(&node->shard[q], __ATOMIC_ACQUIRE);
            if (sh) {
                spin_lock(&sh->lock);
                reqlist_foreach_overlap(sh->tracked_head, lo, hi,
                                        find_plain_between, &b);
                spin_unlock(&sh->lock);
            }
        }
        if (!b.found && claim(s.next, opaque)) {
            claimed = s.next;
        }
    }
    spin_unlock(&node->lock);
    return claimed;
}

/* ---- validation ------------------------------------------------------------- */

static int check_range(int64_t offset, int64_t bytes)
{
    if (offset < 0 || bytes < 0 || offset > BLOCK_MAX_OFFSET ||
        bytes > BLOCK_MAX_OFFSET - offset) {
        return -EINVAL;
    }
    return 0;
}

static int check_rw(int64_t offset, int64_t bytes, const IOVector *qiov)
{
    int ret = check_range(offset, bytes);
    if (ret < 0) {
        return ret;
    }
    if (bytes > BLOCK_MAX_RW_BYTES) {
        return -EINVAL;
    }
    if (!qiov || (int64_t)iov_size(qiov) != bytes) {
        return -EINVAL;
    }
    return 0;
}

bool io_wants_bounce(const StrataNode *node, int64_t bytes)
{
    return node->bounce_always || bytes <= node->bounce_threshold;
}

bool io_request_fits(const StrataNode *node, int64_t offset, int64_t bytes,
                     const IOVector *qiov)
{
    const BlockLimits *bl = &node->bl;
    uint64_t align_mask = bl->request_alignment - 1;
    uint64_t mem_mask = bl->mem_alignment - 1;
    uint64_t len_mask = bl->iov_len_alignment - 1;

    if (((uint64_t)offset | (uint64_t)bytes) & align_mask) {
        return false;
    }
    if (qiov->niov > bl->max_iov) {
        return false;
    }
    if (bl->max_transfer && bytes > bl->max_transfer) {
        return false;
    }
    if (mem_mask | len_mask) {
        for (int i = 0; i < qiov->niov; i++) {
            if (((uintptr_t)qiov->iov[i].iov_base & mem_mask) ||
                (qiov->iov[i].iov_len & len_mask)) {
                return false;
            }
        }
    }
    return true;
}

/* ---- the driver step --------------------------------------------------------- */

/* A write that ended past the cached length grew the node (a padded last
 * block, or a write at the end of a growable file): the lengths cached
 * here and above are stale. */
static inline void io_note_write_end(StrataNode *node, int64_t end)
{
    if (node->total_bytes >= 0 && end > node->total_bytes) {
        node_invalidate_length(node);
    }
}

static void assert_fits(StrataNode *node, int64_t offset, int64_t bytes,
                        const IOVector *qiov)
{
    /* Invariant 1 of DESIGN.md: every request reaching a driver fits its
     * limits.  Capability only: the bounce policy was applied at the node's
     * entry, and what it bounced arrives here in pool buffers. */
    g_assert(io_request_fits(node, offset, bytes, qiov));
}

int io_co_drv_preadv(StrataNode *node, int64_t offset, int64_t bytes,
                     const IOVector *qiov, int flags)
{
    assert_fits(node, offset, bytes, qiov);
    if (bytes == 0) {
        return 0;
    }
    if (node->drv->co_preadv) {
        return node->drv->co_preadv(node, offset, bytes, qiov, flags);
    }
    if (node->file) {
        return node_co_preadv(node->file->node, offset, bytes, qiov, flags);
    }
    return -ENOTSUP;
}

static int drv_co_flush(StrataNode *node);

/*
 * The flush that stands in for FUA on a driver without it.  Its failure
 * counts as a failed flush: over a host page cache the kernel reports a
 * writeback error once, and this fdatasync may be the one that consumed
 * it, so a later explicit flush that "succeeds" would hide lost data.
 */
static int drv_co_flush_fua(StrataNode *node)
{
    int ret = drv_co_flush(node);

    if (ret < 0 && !node->cache_direct) {
        __atomic_store_n(&node->flush_failed, true, __ATOMIC_RELAXED);
    }
    return ret;
}

bool io_fua_emulated(const StrataNode *node, int flags, bool zeroes)
{
    return (flags & REQ_FUA) && !node->cache_no_flush && !node->supports_fua &&
           (node->drv->co_pwritev || (zeroes && node->drv->co_pwrite_zeroes));
}

int io_co_fua_flush(StrataNode *node)
{
    return drv_co_flush_fua(node);
}

/*
 * The driver step of a write, inlined into the node's entry: unlike the
 * read's, it cannot end in a tail call (the bookkeeping after the driver
 * returns), and as a frame of its own at every node of the chain it cost
 * native tmpfs writes at depth 32 3% (885k -> 912k IOPS inlined, 6
 * alternated runs).  pad.c and the write-zeroes fallback call the
 * out-of-line io_co_drv_pwritev().
 */
static inline __attribute__((always_inline)) int
drv_co_pwritev_inl(StrataNode *node, int64_t offset, int64_t bytes,
                   const IOVector *qiov, int flags)
{
    int ret;
    bool emulate_fua = io_fua_emulated(node, flags, false);

    assert_fits(node, offset, bytes, qiov);
    if (bytes == 0) {
        return 0;
    }
    if (node->cache_no_flush || emulate_fua) {
        flags &= ~REQ_FUA;
    }

    node_co_debug_event(node, DBG_PWRITEV);
    if (node->drv->co_pwritev) {
        ret = node->drv->co_pwritev(node, offset, bytes, qiov, flags);
    } else if (node->file) {
        ret = node_co_pwritev(node->file->node, offset, bytes, qiov, flags);
    } else {
        ret = -ENOTSUP;
    }
    node_co_debug_event(node, DBG_PWRITEV_DONE);

    if (ret == 0) {
        node_note_write(node);
        io_note_write_end(node, offset + bytes);
        if (emulate_fua) {
            ret = drv_co_flush_fua(node);
        }
    }
    return ret;
}

int io_co_drv_pwritev(StrataNode *node, int64_t offset, int64_t bytes,
                      const IOVector *qiov, int flags)
{
    return drv_co_pwritev_inl(node, offset, bytes, qiov, flags);
}

static int drv_co_pwrite_zeroes_once(StrataNode *node, int64_t offset,
                                     int64_t bytes, int flags)
{
    if (node->drv->co_pwrite_zeroes) {
        return node->drv->co_pwrite_zeroes(node, offset, bytes, flags);
    }
    if (!node->drv->co_pwritev && node->file) {
        return node_co_pwrite_zeroes(node->file->node, offset, bytes, flags);
    }
    return -ENOTSUP;
}

/* Write zeroes from the shared zero buffer: bounded chunks that fit every
 * limit of the node, each carrying FUA if the request does. */
static int zero_fallback(StrataNode *node, int64_t offset, int64_t bytes,
                         int flags)
{
    const BlockLimits *bl = &node->bl;
    int64_t chunk_max = ZERO_BUF_SIZE;

    if (bl->max_transfer) {
        chunk_max = MIN(chunk_max, bl->max_transfer);
    }
    chunk_max = ROUND_DOWN(chunk_max, (int64_t)bl->request_alignment);
    g_assert(chunk_max > 0);
    /* The zero buffer is page aligned; mem_alignment above a page would
     * need a pool buffer, which no driver here asks for. */
    g_assert(bl->mem_alignment <= 4096);

    while (bytes > 0) {
        int64_t n = MIN(bytes, chunk_max);
        IOVector v;
        iov_init_buf(&v, (void *)io_zero_buf, n);
        int ret = io_co_drv_pwritev(node, offset, n, &v, flags & REQ_FUA);
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
    }
    return 0;
}

int io_co_drv_pwrite_zeroes(StrataNode *node, int64_t offset, int64_t bytes,
                            int flags)
{
    const BlockLimits *bl = &node->bl;
    int64_t max = bl->max_pwrite_zeroes ? bl->max_pwrite_zeroes : INT64_MAX;
    uint32_t align = MAX(bl->pwrite_zeroes_alignment, bl->request_alignment);

    g_assert(IS_ALIGNED(offset | bytes, (int64_t)bl->request_alignment));
    if (node->discard != DISCARD_UNMAP) {
        flags &= ~REQ_MAY_UNMAP;
    }
    if (node->cache_no_flush) {
        flags &= ~REQ_FUA;
    }
    max = MAX(ROUND_DOWN(max, (int64_t)align), (int64_t)align);

    /*
     * A driver without FUA must not see the flag (a strict device rejects
     * it, as mem does), and a request cut into many chunks must not cost a
     * flush per chunk (a 1 GiB write-zeroes would be ~1024 fdatasyncs):
     * strip FUA from every chunk, native or fallback, and flush once after
     * the last.
     */
    bool emulate_fua = io_fua_emulated(node, flags, true);
    int chunk_flags = emulate_fua ? flags & ~REQ_FUA : flags;
    bool written = false;

    node_co_debug_event(node, DBG_PWRITEV_ZERO);
    while (bytes > 0) {
        int64_t n = MIN(bytes, max);
        int ret;

        /* Keep chunks after the first aligned to the zeroing granularity
         * so the driver can use its fast path on all but the edges. */
        if (!IS_ALIGNED(offset, (int64_t)align) && n > align - offset % align) {
            n = align - offset % align;
        } else if (n > align && !IS_ALIGNED(offset + n, (int64_t)align)) {
            /* ...and the unaligned tail goes separately, so no piece longer
             * than the granularity ends off it (as QEMU cuts them). */
            n = ROUND_DOWN(offset + n, (int64_t)align) - offset;
        }
        ret = drv_co_pwrite_zeroes_once(node, offset, n, chunk_flags);
        if (ret == -ENOTSUP && !(flags & REQ_NO_FALLBACK)) {
            ret = zero_fallback(node, offset, n, chunk_flags);
        } else if (ret == 0) {
            node_note_write(node);
            io_note_write_end(node, offset + n);
        }
        if (ret < 0) {
            return ret;
        }
        written = true;
        offset += n;
        bytes -= n;
    }
    return emulate_fua && written ? io_co_fua_flush(node) : 0;
}

/* ---- entry points --------------------------------------------------------------- */

static int node_co_preadv_entered(StrataNode *node, NodeShard *sh, int64_t offset,
                                  int64_t bytes, const IOVector *qiov,
                                  int flags)
{
    int64_t start = co_clock_begin();
    BlockReq req;
    int ret = check_rw(offset, bytes, qiov);

    if (ret == 0 && bytes == 0) {
        /* Nothing to transfer.  Padding an unaligned empty request would
         * read a whole block for no byte of the caller's (and, for a
         * write, rewrite it: an RMW the caller never asked for). */
    } else if (ret == 0 && (!io_request_fits(node, offset, bytes, qiov) ||
                            io_wants_bounce(node, bytes))) {
        ret = pad_co_preadv(node, offset, bytes, qiov, flags);
    } else if (ret == 0) {
        req_track_in(&req, node, sh, REQ_READ, offset, offset + bytes, false);
        req_co_wait_conflicts(&req);
        ret = io_co_drv_preadv(node, offset, bytes, qiov, flags);
        req_untrack(&req);
    }
    block_stats_account(&sh->stats, REQ_READ, bytes, ret, start);
    return ret;
}

/* Writes of all zeroes become write-zeroes when detect-zeroes asks. */
static bool want_detect_zeroes(StrataNode *node, const IOVector *qiov, int64_t bytes)
{
    return node->detect_zeroes != DETECT_ZEROES_OFF && bytes > 0 &&
           iov_is_zero(qiov, 0, bytes);
}

static int node_co_pwritev_entered(StrataNode *node, NodeShard *sh, int64_t offset,
                                   int64_t bytes, const IOVector *qiov,
                                   int flags)
{
    int64_t start = co_clock_begin();
    BlockReq req;
    int ret = check_rw(offset, bytes, qiov);

    if (ret == 0 && node->read_only) {
        ret = -EROFS;
    } else if (ret == 0 && !(node->perm & (PERM_WRITE | PERM_WRITE_UNCHANGED))) {
        ret = -EPERM;
    }
    if (ret == 0 && bytes == 0) {
        /* Nothing to write (see node_co_preadv). */
    } else if (ret == 0 && want_detect_zeroes(node, qiov, bytes)) {
        int zflags = flags & REQ_FUA;
        if (node->detect_zeroes == DETECT_ZEROES_UNMAP) {
            zflags |= REQ_MAY_UNMAP;
        }
        /* Counted twice on purpose: as the write the caller asked for and
         * as the write-zeroes that was done. */
        ret = node_co_pwrite_zeroes(node, offset, bytes, zflags);
    } else if (ret == 0 && (!io_request_fits(node, offset, bytes, qiov) ||
                            io_wants_bounce(node, bytes))) {
        ret = pad_co_pwritev(node, offset, bytes, qiov, flags);
    } else if (ret == 0) {
        req_track_in(&req, node, sh, REQ_WRITE, offset, offset + bytes, false);
        req_co_wait_conflicts(&req);
        ret = drv_co_pwritev_inl(node, offset, bytes, qiov, flags);
        req_untrack(&req);
    }
    block_stats_account(&sh->stats, REQ_WRITE, bytes, ret, start);
    return ret;
}

static int node_co_pwrite_zeroes_entered(StrataNode *node, NodeShard *sh, int64_t offset,
                                         int64_t bytes, int flags)
{
    int64_t start = co_clock_begin();
    uint32_t align = node->bl.request_alignment;
    BlockReq req;
    int ret = check_range(offset, bytes);

    if (ret == 0 && node->read_only) {
        ret = -EROFS;
    } else if (ret == 0 && !(node->perm & (PERM_WRITE | PERM_WRITE_UNCHANGED))) {
        ret = -EPERM;
    }
    if (ret == 0 && bytes == 0) {
        /* Nothing to zero (see node_co_preadv). */
    } else if (ret == 0 && !IS_ALIGNED(offset | bytes, (int64_t)align) &&
               (flags & REQ_NO_FALLBACK)) {
        /* Padding writes the edges as data: exactly the slow path the
         * caller asked us not to take. */
        ret = -ENOTSUP;
    } else if (ret == 0 && !IS_ALIGNED(offset | bytes, (int64_t)align)) {
        ret = pad_co_pwrite_zeroes(node, offset, bytes, flags);
    } else if (ret == 0) {
        req_track_in(&req, node, sh, REQ_ZEROES, offset, offset + bytes, false);
        req_co_wait_conflicts(&req);
        ret = io_co_drv_pwrite_zeroes(node, offset, bytes, flags);
        req_untrack(&req);
    }
    block_stats_account(&sh->stats, REQ_ZEROES, bytes, ret, start);
    return ret;
}

static int node_co_pdiscard_entered(StrataNode *node, NodeShard *sh, int64_t offset,
                                    int64_t bytes)
{
    int64_t start = co_clock_begin();
    const BlockLimits *bl = &node->bl;
    uint32_t align = MAX(bl->pdiscard_alignment, bl->request_alignment);
    int64_t max = bl->max_pdiscard ? bl->max_pdiscard : INT64_MAX;
    int64_t lo, hi;
    BlockReq req;
    int ret = check_range(offset, bytes);

    if (ret == 0 && node->read_only) {
        ret = -EROFS;
    } else if (ret == 0 && !(node->perm & PERM_WRITE)) {
        ret = -EPERM;
    }
    if (ret < 0 || node->discard != DISCARD_UNMAP) {
        goto out;
    }

    /* Discard is advisory: the unaligned head and tail are dropped, not
     * padded (zeroing them would turn a hint into a write). */
    lo = ROUND_UP(offset, (int64_t)align);
    hi = ROUND_DOWN(offset + bytes, (int64_t)align);
    if (lo >= hi) {
        goto out;
    }
    max = MAX(ROUND_DOWN(max, (int64_t)align), (int64_t)align);

    req_track_in(&req, node, sh, REQ_DISCARD, lo, hi, false);
    req_co_wait_conflicts(&req);
    for (int64_t pos = lo; pos < hi && ret == 0;) {
        int64_t n = MIN(hi - pos, max);
        if (node->drv->co_pdiscard) {
            ret = node->drv->co_pdiscard(node, pos, n);
        } else if (node->file) {
            ret = node_co_pdiscard(node->file->node, pos, n);
        } else {
            ret = -ENOTSUP;
        }
        if (ret == -ENOTSUP) {
            ret = 0;
        }
        pos += n;
    }
    if (ret == 0) {
        node_note_write(node);
    }
    req_untrack(&req);
out:
    block_stats_account(&sh->stats, REQ_DISCARD, bytes, ret, start);
    return ret;
}

/* Flush without the bookkeeping: the driver's flush, or the child's. */
static int drv_co_flush(StrataNode *node)
{
    if (node->cache_no_flush) {
        return 0;
    }
    node_co_debug_event(node, DBG_FLUSH_TO_DISK);
    if (node->drv->co_flush) {
        int ret = node->drv->co_flush(node);
        /* A format or filter with its own flush still has a child whose
         * cache must reach the disk. */
        if (ret == 0 && node->file) {
            ret = node_co_flush(node->file->node);
        }
        return ret;
    }
    if (node->file) {
        return node_co_flush(node->file->node);
    }
    return 0;
}

static int node_co_flush_entered(StrataNode *node, NodeShard *sh)
{
    int64_t start = co_clock_begin();
    uint64_t gen;
    int ret = 0;

    /* One flush at a time per node, whichever queue sends it; a flush that
     * waited may find that the one before it already covered every write
     * it must cover. */
    spin_lock(&node->lock);
    while (node->flush_active) {
        co_queue_wait_spin(&node->flush_queue, &node->lock);
    }
    /* Writes that completed before this point, on any queue, are what we
     * must cover. */
    gen = node_write_gen(node);
    if (__atomic_load_n(&node->flush_failed, __ATOMIC_RELAXED)) {
        /* Linux reports a writeback error on a buffered file once; a later
         * fsync that "succeeds" does not mean the lost pages reached the
         * disk.  Keep failing until the node is closed (a reopen keeps
         * this: see block/reopen.c). */
        spin_unlock(&node->lock);
        ret = -EIO;
        goto out;
    }
    if (node->flushed_gen == gen) {
        spin_unlock(&node->lock);
        goto out;
    }
    node->flush_active = true;
    spin_unlock(&node->lock);

    node_co_debug_event(node, DBG_FLUSH_TO_OS);
    ret = drv_co_flush(node);

    spin_lock(&node->lock);
    if (ret == 0) {
        node->flushed_gen = gen;
    } else if (!node->cache_direct) {
        __atomic_store_n(&node->flush_failed, true, __ATOMIC_RELAXED);
    }
    node->flush_active = false;
    /* Wake every queued flush, not just the next: one that finds its
     * writes covered by this flush completes without waking anyone, and
     * the ones behind it would wait for a flush that never comes.  The
     * first that still has work starts the next flush; the rest see
     * flush_active again and go back to waiting. */
    co_queue_restart_all(&node->flush_queue);
    spin_unlock(&node->lock);
out:
    block_stats_account(&sh->stats, REQ_FLUSH, 0, ret, start);
    return ret;
}

static int node_co_block_status_entered(StrataNode *node, NodeShard *sh, int64_t offset,
                                        int64_t bytes, int64_t *pnum)
{
    int64_t len = node_get_length(node);
    int ret = check_range(offset, bytes);

    *pnum = 0;
    if (ret < 0) {
        return ret;
    }
    if (len >= 0 && offset >= len) {
        return 0;
    }
    if (len >= 0) {
        bytes = MIN(bytes, len - offset);
    }
    if (bytes == 0) {
        return 0;
    }
    if (node->drv->co_block_status) {
        ret = node->drv->co_block_status(node, offset, bytes, pnum);
    } else if (node->file) {
        ret = node_co_block_status(node->file->node, offset, bytes, pnum);
    } else {
        *pnum = bytes;
        ret = STRATA_BLOCK_DATA;
    }
    if (ret >= 0) {
        g_assert(*pnum > 0 && *pnum <= bytes);
    }
    return ret;
}

static int node_co_truncate_entered(StrataNode *node, NodeShard *sh, int64_t size,
                                    PreallocMode prealloc, StrataError **errp)
{
    BlockReq req;
    int ret;

    if (size < 0 || size > BLOCK_MAX_OFFSET) {
        error_setg(errp, "Invalid image size %" G_GINT64_FORMAT, size);
        return -EINVAL;
    }
    if (node->read_only) {
        error_set(errp, STRATA_ERROR_PERMISSION, EROFS,
                  "Node '%s' is read-only", node->node_name);
        return -EROFS;
    }
    if (!(node->perm & PERM_RESIZE)) {
        error_set(errp, STRATA_ERROR_PERMISSION, EPERM,
                  "Node '%s' was not opened with permission to resize",
                  node->node_name);
        return -EPERM;
    }
    /* Truncation owns the whole device: nothing may straddle the old or
     * new end while it runs. */
    req_track_in(&req, node, sh, REQ_WRITE, 0, BLOCK_MAX_OFFSET, true);
    req_co_wait_conflicts(&req);
    if (node->drv->co_truncate) {
        ret = node->drv->co_truncate(node, size, prealloc, errp);
    } else if (node->file) {
        ret = node_co_truncate(node->file->node, size, prealloc, errp);
    } else {
        error_setg(errp, "Driver '%s' cannot resize images", node->drv->name);
        ret = -ENOTSUP;
    }
    node->total_bytes = -1;
    if (ret == 0) {
        node_note_write(node);
    }
    req_untrack(&req);
    return ret;
}

/* ---- the entry points: counted in flight around everything they do ---------------- */

/*
 * A single-queue driver's node (BlockDriver.single_queue) is entered on
 * the context's first queue only.  The coroutine changes its home loop
 * and is woken there; it comes back the same way after the node's entry
 * returned.  Only such nodes pay for it.
 */
static Loop *hop_in(StrataNode *node)
{
    if (G_LIKELY(!node->drv->single_queue)) {
        return NULL;
    }
    StrataQueue *q = queue_current();
    if (q->index == 0) {
        return NULL;
    }
    co_yield_to_loop(node->ctx->loop);
    return q->loop;
}

static void hop_out(Loop *home)
{
    if (G_UNLIKELY(home)) {
        co_yield_to_loop(home);
    }
}

/* @call sees the node's shard for this queue as `sh`. */
#define NODE_ENTRY(node, call) ({                               \
        Loop *home_ = hop_in(node);                             \
        NodeShard *sh = node_enter(node);                       \
        __typeof__(call) ret_ = (call);                         \
        node_leave(node, sh);                                   \
        hop_out(home_);                                         \
        ret_;                                                   \
    })

int node_co_preadv(StrataNode *node, int64_t offset, int64_t bytes,
                   const IOVector *qiov, int flags)
{
    return NODE_ENTRY(node, node_co_preadv_entered(node, sh, offset, bytes, qiov, flags));
}

int node_co_pwritev(StrataNode *node, int64_t offset, int64_t bytes,
                    const IOVector *qiov, int flags)
{
    return NODE_ENTRY(node, node_co_pwritev_entered(node, sh, offset, bytes, qiov, flags));
}

int node_co_pwrite_zeroes(StrataNode *node, int64_t offset, int64_t bytes,
                          int flags)
{
    return NODE_ENTRY(node, node_co_pwrite_zeroes_entered(node, sh, offset, bytes, flags));
}

int node_co_pdiscard(StrataNode *node, int64_t offset, int64_t bytes)
{
    return NODE_ENTRY(node, node_co_pdiscard_entered(node, sh, offset, bytes));
}

int node_co_flush(StrataNode *node)
{
    return NODE_ENTRY(node, node_co_flush_entered(node, sh));
}

int node_co_block_status(StrataNode *node, int64_t offset, int64_t bytes,
                         int64_t *pnum)
{
    return NODE_ENTRY(node, node_co_block_status_entered(node, sh, offset, bytes, pnum));
}

int node_co_truncate(StrataNode *node, int64_t size, PreallocMode prealloc,
                     StrataError **errp)
{
    return NODE_ENTRY(node, node_co_truncate_entered(node, sh, size, prealloc, errp));
}

void node_co_debug_event(StrataNode *node, int event)
{
    if (node->drv->co_debug_event) {
        /* A filter forwards events to its child from its own entry. */
        Loop *home = hop_in(node);
        node->drv->co_debug_event(node, event);
        hop_out(home);
    }
}

/* ---- drained sections --------------------------------------------------------------- */

static bool subtree_busy(StrataNode *node)
{
    if (node_in_flight(node)) {
        return true;
    }
    for (GSList *l = node->children; l; l = l->next) {
        BlockChild *c = l->data;
        if (subtree_busy(c->node)) {
            return true;
        }
    }
    return false;
}

/* A request anywhere above @node (in a parent's entry, waiting for memory
 * or a range, before it reaches @node) counts too: it would enter @node
 * with a plan made for the limits of before the drained section. */
static bool ancestors_busy(StrataNode *node)
{
    for (GSList *l = node->parents; l; l = l->next) {
        BlockChild *c = l->data;
        if (c->parent && (node_in_flight(c->parent) || ancestors_busy(c->parent))) {
            return true;
        }
    }
    return false;
}

static bool drain_busy(void *opaque)
{
    StrataNode *node = opaque;

    if (subtree_busy(node) || ancestors_busy(node)) {
        return true;
    }
    /* Requests submitted before the section began are in flight too. */
    for (GList *l = node->ctx->backends; l; l = l->next) {
        if (backend_busy(l->data)) {
            return true;
        }
    }
    return false;
}

/* Tell the drivers of @node, its subtree (@down) and its ancestors (@up)
 * that a drained section begins or ends.  A node reached twice (a
 * diamond) hears it twice, in begin and in end alike. */
static void drain_notify(StrataNode *node, bool begin, bool up, bool down)
{
    void (*fn)(StrataNode *) = begin ? node->drv->drained_begin
                                     : node->drv->drained_end;

    if (fn) {
        fn(node);
    }
    if (down) {
        for (GSList *l = node->children; l; l = l->next) {
            drain_notify(((BlockChild *)l->data)->node, begin, false, true);
        }
    }
    if (up) {
        for (GSList *l = node->parents; l; l = l->next) {
            BlockChild *c = l->data;
            if (c->parent) {
                drain_notify(c->parent, begin, true, false);
            }
        }
    }
}

void node_drained_notify(StrataNode *node, bool begin)
{
    drain_notify(node, begin, true, true);
}

void node_drain_begin(StrataNode *node)
{
    g_assert(!co_in_coroutine());
    __atomic_add_fetch(&node->quiesce_counter, 1, __ATOMIC_SEQ_CST);
    drain_notify(node, true, true, true);
    /* New requests enter only through backends; park them all, then let
     * what is in flight below @node finish. */
    for (GList *l = node->ctx->backends; l; l = l->next) {
        backend_quiesce(l->data);
    }
    /* Every queue: requests on other queues finish in their threads. */
    ctx_wait_idle(node->ctx, drain_busy, node);
}

void node_drain_end(StrataNode *node)
{
    g_assert(node->quiesce_counter > 0);
    __atomic_sub_fetch(&node->quiesce_counter, 1, __ATOMIC_SEQ_CST);
    drain_notify(node, false, true, true);
    for (GList *l = node->ctx->backends; l; l = l->next) {
        backend_unquiesce(l->data);
    }
}

int block_co_run_in_pool(StrataNode *node, int (*fn)(void *), void *arg)
{
    /* The current queue's pool: completions come back to its loop. */
    return thread_pool_co_submit(loop_get_thread_pool(queue_current()->loop),
                                 fn, arg);
}
