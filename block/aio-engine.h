/*
 * AIO engines behind one small ops table (SPDX-License-Identifier: MIT)
 *
 * The file driver (block/file-posix.c) sends its reads and writes to one of
 * three engines, chosen per node by the `aio` option:
 *   threads   block/aio-threads.c    the loop's thread pool, preadv2/pwritev2
 *   native    block/aio-linux.c      libaio: io_submit batches, eventfd
 *   io_uring  block/aio-io_uring.c   liburing: one ring per loop
 * An engine keeps per-loop state (a ring, an io_context) in each queue's
 * engine[] slot (block/queue.c), created on first use in the thread that
 * runs the queue's loop and shared by every node that queue sends I/O to.  Submissions made during one loop iteration are batched through
 * loop_defer_call().
 *
 * Contract of co_preadv/co_pwritev: called in a coroutine of @ctx's loop;
 * submits one request, yields, and returns the kernel's result: bytes
 * transferred (possibly short) or -errno.  Resubmitting short transfers,
 * EOF zero-fill and EINTR/EAGAIN retries are the file driver's job, so
 * every engine gets them alike.  An engine never re-enters the caller from
 * inside the submit call; a completion copies its result before entering
 * the coroutine.
 */
#ifndef STRATA_BLOCK_AIO_ENGINE_H
#define STRATA_BLOCK_AIO_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>
#include "block/block-int.h"

/* AioEngineId is in block/block-int.h: the context keeps one state slot
 * per engine. */

/*
 * Counters of one engine's per-context state (what batching achieved).
 * "syscalls" counts the calls that handed requests to the kernel
 * (io_uring_enter, io_submit; one preadv2/pwritev2 per request for the
 * thread pool); submits / syscalls is the average batch.
 */
typedef struct AioEngineStats {
    uint64_t submits;       /* requests accepted by co_preadv/co_pwritev */
    uint64_t syscalls;      /* submitting system calls that succeeded */
    uint64_t completions;   /* requests whose result reached the caller */
    uint64_t reap_batches;  /* completion-handler runs that found work */
    uint64_t max_batch;     /* most requests handed over in one syscall */
    uint64_t queue_waits;   /* requests that waited for ring/queue space */
    uint64_t retries;       /* submissions retried after -EAGAIN/-EBUSY */
    uint64_t early;         /* submissions made early (AioEarly), of syscalls */
    uint64_t forced_async;  /* requests sent straight to io_uring's workers
                             * (IOSQE_ASYNC, files without NOWAIT) */
    uint64_t spins_won;     /* sleeps a spin made unneeded (aio_spin_ns) */
} AioEngineStats;

/* Engine request flags. */
enum {
    AIO_FUA = 1u << 0,          /* RWF_DSYNC on this write */
    /* The file takes no non-blocking I/O (RWF_NOWAIT refused: no
     * FMODE_NOWAIT, e.g. O_DIRECT on tmpfs): an engine that tries a
     * request inline first would only be told to punt it.  A hint. */
    AIO_NO_NOWAIT = 1u << 1,
};

typedef struct AioEngineOps {
    const char *name;           /* "threads", "native", "io_uring" */
    AioEngineId id;

    /* Can this build and kernel use the engine at all?  On false, *why
     * gets a static reason ("liburing not compiled in", "io_uring_setup:
     * Operation not permitted"). */
    bool (*available)(const char **why);

    /* Per-loop state: create on first use, in the thread that runs
     * @loop (stored by the caller in the queue's engine[id] with
     * engine_free[id] = cleanup). */
    void *(*ctx_init)(Loop *loop, StrataError **errp);
    void (*ctx_cleanup)(void *state);

    /*
     * Optional: state for @loop, called in the one thread that will ever
     * run @loop and submit to the state (a multi-queue queue thread).  The
     * engine may bind its kernel object to that thread (io_uring:
     * IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN where the kernel has
     * them).  Freed with ctx_cleanup.  NULL: use ctx_init.
     */
    void *(*thread_init)(Loop *loop, StrataError **errp);

    /* Whether writes can carry AIO_FUA (RWF_DSYNC) natively. */
    bool (*supports_fua)(void *state);

    int (*co_preadv)(void *state, int fd, int64_t offset,
                     const struct iovec *iov, int niov, int flags);
    int (*co_pwritev)(void *state, int fd, int64_t offset,
                      const struct iovec *iov, int niov, int flags);

    /*
     * Optional: guest-memory registration (io_uring fixed buffers).
     * register returns a slot >= 0 or -errno (the caller falls back to the
     * normal path and counts it); unregister frees the slot.
     * co_preadv_fixed / co_pwritev_fixed take one buffer wholly inside a
     * registered region.
     */
    int (*register_region)(void *state, void *addr, size_t len);
    void (*unregister_region)(void *state, int slot);
    int (*co_preadv_fixed)(void *state, int fd, int64_t offset, void *buf,
                           size_t len, int slot, int flags);
    int (*co_pwritev_fixed)(void *state, int fd, int64_t offset, void *buf,
                            size_t len, int slot, int flags);

    /* Optional: copy the counters of @state into *out. */
    void (*get_stats)(void *state, AioEngineStats *out);
} AioEngineOps;

/*
 * Early submission, for the engines that batch (native, io_uring).
 *
 * A loop iteration that reaps a batch of completions re-enters their
 * coroutines, and each queues its next request; the batch used to reach
 * the kernel in one call when the iteration ended.  When the work is done
 * by a kernel thread rather than inside the submitting call (a loop
 * device's worker, the io-wq workers io_uring hands O_DIRECT on tmpfs to,
 * a device that completes later), that thread sat idle meanwhile: on a
 * loop device at depth 32 the batch of 32 came back together and went out
 * together, and the kernel's worker and the loop took turns instead of
 * overlapping.
 *
 * So where the load has reached 16 requests outstanding, requests are
 * submitted as soon as a quarter of that peak is queued (8 at depth 32,
 * at most 16), and the kernel's worker starts while the loop goes on
 * re-entering coroutines.  Where the kernel completes requests inside the
 * submitting call (native AIO on tmpfs, a page-cache hit) that would only
 * add system calls: a submission whose own requests were mostly reaped
 * right after it (told apart from older ones by a generation stamp) turns
 * the rule off until a later submission completes otherwise.  The peak is
 * taken at submissions, so the first burst of a load goes out whole.  An
 * explicit aio-max-batch replaces the rule.  Measured in
 * docs/benchmarks.md ("Early submission"); STRATA_AIO_NO_EARLY_SUBMIT=1
 * turns it off for A/B runs.
 *
 * Use: stamp each request queued with aio_early_gen(); call
 * aio_early_flush_begin() before a submission, aio_early_reaped() for each
 * request reaped, aio_early_flush_end() after the look at the completions
 * that follows the submission; ask aio_early_submit_now() after queueing.
 */
typedef struct AioEarly {
    bool disabled;              /* STRATA_AIO_NO_EARLY_SUBMIT */
    bool inline_done;           /* the last submission mostly completed in it */
    unsigned peak;              /* most outstanding at a submission */
    unsigned gen;               /* stamp for requests queued now */
    unsigned flush_gen;         /* the stamp of the last submission's */
    unsigned flush_count;       /* how many it carried */
    unsigned flush_inline;      /* how many of those were reaped right away */
} AioEarly;

/* The rule's numbers (see above). */
#define AIO_EARLY_MIN_PEAK 16u
#define AIO_EARLY_MAX_BATCH 16u

void aio_early_init(AioEarly *e);

static inline unsigned aio_early_gen(const AioEarly *e)
{
    return e->gen;
}

/* A submission of @count queued requests, with @in_kernel already out. */
void aio_early_flush_begin(AioEarly *e, unsigned count, unsigned in_kernel);

static inline void aio_early_reaped(AioEarly *e, unsigned req_gen)
{
    if (req_gen == e->flush_gen) {
        e->flush_inline++;
    }
}

void aio_early_flush_end(AioEarly *e);

/* After queueing a request, with @queued waiting for submission: true if
 * the engine should submit them now. */
bool aio_early_submit_now(const AioEarly *e, unsigned queued);

/*
 * A short spin before the waiter sleeps, for the engines that are their
 * loop's waiter (native, io_uring).
 *
 * With many requests in the kernel and their completions coming from
 * elsewhere (a loop device's worker, io-wq workers, a device's interrupt),
 * the loop that has just re-entered its coroutines and submitted often
 * finds the completion ring empty for a moment.  Sleeping then costs a
 * wake-up per batch, and on a virtual machine whose idle vCPU halts the
 * wake-up is an exit paid by the thread that completes (about 11 us of
 * the loop device's worker on the Xeon VM, see docs/benchmarks.md), which
 * is the bottleneck at depth 32.  So with 16 or more requests in flight
 * the waiter first watches its completion ring for up to 5 us, no longer
 * than the loop's own timeout; below 16 (depth 1 and the like, where the
 * worker may run on the waiter's own vCPU) it sleeps at once.  native
 * waits for a quarter of what is in flight (it can count its ring in user
 * space; stopping at the first event reaped them one by one as the worker
 * finished them, and lost on writes), io_uring for the first (completions
 * that wait as task work are only flagged).  Loop device, 4 KiB at depth
 * 32, 3-4 alternated runs: io_uring reads 480-670k -> 640-800k IOPS
 * (CPU per request 1.24 -> 1.08-1.13 us: the sleeps cost more than the
 * spins), io_uring writes 548-641k -> 745-789k, native reads 470-524k ->
 * 604-659k, native writes 505-571k -> 585-622k; tmpfs rows unchanged.
 * STRATA_AIO_WAIT_SPIN_NS=N (0 to 10^9) changes the 5 us, 0 turns the spin
 * off; anything else is reported on stderr and the 5 us stay.
 */
#define AIO_SPIN_MIN_INFLIGHT 16u
#define AIO_SPIN_DEFAULT_NS 5000
#define AIO_SPIN_MAX_NS 1000000000     /* what STRATA_AIO_WAIT_SPIN_NS takes */

/* How long to spin before sleeping with @inflight requests in the kernel
 * and @timeout_ns the loop's bound for the sleep (-1: none); 0: not at
 * all. */
int64_t aio_spin_ns(unsigned inflight, int64_t timeout_ns);

/* Tests: the spin's length from now on, as STRATA_AIO_WAIT_SPIN_NS. */
void aio_spin_test_set_ns(int64_t ns);

/* Spin for up to @ns until @ready(@opaque); returns its last answer. */
bool aio_spin_until(bool (*ready)(void *opaque), void *opaque, int64_t ns);

/* The engines' tables, each defined by its engine file; only the files
 * of engines the build found a library for are compiled in, and
 * aio_engine_get() is the way to reach them. */
extern const AioEngineOps aio_threads_ops;
extern const AioEngineOps aio_linux_ops;
extern const AioEngineOps aio_io_uring_ops;

/*
 * Run @probe (which tries to set the engine up and tears it down again) once
 * per process and remember the answer in *@cache: 1 usable, else the
 * -errno the probe returned.  Thread-safe; a racing second probe is
 * harmless.  For the engines' available() callbacks.
 */
int aio_engine_probe_once(int *cache, int (*probe)(void));

/* The engine table for @id, or NULL if not compiled in. */
const AioEngineOps *aio_engine_get(AioEngineId id);

/* The state of @ops in queue @q, created on first use (in the thread
 * that runs @q's loop, or the owner of an idle loop). */
void *aio_engine_queue_state(const AioEngineOps *ops, StrataQueue *q,
                             StrataError **errp);
/* The same for the context's first queue (the control path's). */
void *aio_engine_ctx_state(const AioEngineOps *ops, StrataContext *ctx,
                           StrataError **errp);

/*
 * Test hook: make the next @count completions of engine @id report only
 * @short_bytes (or the real result if smaller), as a short transfer would.
 * Applied at the engine's completion, before the result reaches the file
 * driver.  0 count disables.
 */
void aio_engine_test_inject_short(AioEngineId id, int count, int64_t short_bytes);
/* For engine implementations: apply the hook to a completion result.
 * Error results (< 0) pass unchanged and do not consume the count. */
int64_t aio_engine_apply_short(AioEngineId id, int64_t result);

/*
 * Test hook: per-context states of engine @id created from now on use a
 * queue of @depth entries (io_uring SQ entries, libaio io_setup depth) so
 * that tests can fill it; 0 restores the default.  No effect on threads.
 */
void aio_engine_test_set_queue_depth(AioEngineId id, unsigned depth);
/* For engine implementations: the depth to use, @dflt unless overridden. */
unsigned aio_engine_queue_depth(AioEngineId id, unsigned dflt);
/* For engine implementations: whether the environment variable @name (an
 * A/B or test switch, STRATA_AIO_NATIVE_EVENTFD=1 and the like) is set to
 * something other than empty or "0". */
bool aio_engine_env_flag(const char *name);

/* Test hook: io_setup calls the native engine made in this process (its
 * availability probe's context is reused by the first state). */
unsigned aio_linux_test_setup_calls(void);
/* Test hook: whether the native engine's @state is its loop's waiter
 * (block/aio-linux.c, "Waiting"). */
bool aio_linux_test_self_wait(void *state);
/* The same for an io_uring state (block/aio-io_uring.c, "Waiting"). */
bool aio_uring_test_self_wait(void *state);
/* Whether an io_uring state's ring has IORING_SETUP_DEFER_TASKRUN. */
bool aio_uring_test_defer(void *state);

#endif
