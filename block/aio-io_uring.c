/*
 * AIO engine "io_uring": one ring per context, batched submission
 * SPDX-License-Identifier: MIT
 *
 * Life of a request:
 *
 *   co_preadv ─► SQE in the ring (or the wait list when the ring is full) ─►
 *   loop_defer_call(uring_flush) ─► one io_uring_enter per loop iteration ─►
 *   CQE ─► ring fd readable in epoll ─► uring_on_readable(): result copied
 *   into the request ─► co_enter(request coroutine)
 *
 * Completions are noticed by putting the ring fd itself in the loop's epoll
 * set rather than registering an eventfd: the ring fd polls readable while
 * CQEs are waiting (level triggered), so a wake-up costs no extra read()
 * to clear a counter and no extra registration; the CQ ring is then read in
 * user space without a system call.
 *
 * Completion inside io_uring_enter.  A request the kernel can finish without
 * blocking (a page-cache hit, a fast device) has its CQE posted before
 * io_uring_enter returns, so the submit path peeks at the CQ right after
 * submitting: such a request then costs one system call instead of
 * io_uring_enter plus an epoll_wait.  Those completions wake their
 * coroutines through the loop (loop_co_wake) instead of entering them: the
 * submit path may run inside a submitting coroutine, which must not be
 * re-entered or enter others, and entering from the end of a defer section
 * would chain submissions and completions without returning to the loop.
 * (Requests that io_uring punts to its io-wq workers, e.g. O_DIRECT on
 * tmpfs, which lacks FMODE_NOWAIT, still complete through the ring fd.)
 *
 * Batching: every submission made while a loop iteration runs, including
 * those made by coroutines that the completion handler re-enters (the
 * completion handler opens its own defer section for that), reaches the
 * kernel in one io_uring_enter when the section ends.  A full SQ is
 * submitted at once to make room.  Requests that the kernel completes
 * later (punted to io-wq, a loop device, a disk) leave earlier, in
 * quarters of a deep load, so that the kernel's workers start while the
 * loop goes on (block/aio-engine.h, "Early submission": O_DIRECT reads on
 * tmpfs at depth 32 +6-25%, a loop device +60%).
 *
 * Overflow: at most cq_entries requests are in the kernel or the SQ at a
 * time, so the CQ cannot overflow in normal operation; should it still
 * (IORING_SQ_CQ_OVERFLOW), the handler asks the kernel to flush the
 * overflow list with io_uring_get_events() and keeps reaping.
 *
 * Kernel support is probed, not assumed: io_uring_get_probe decides whether
 * READV/WRITEV and READ_FIXED/WRITE_FIXED exist, registering the ring fd
 * (5.18+) is best effort, and a sparse fixed-buffer table (5.19+) is tried
 * on first use; its failure is returned to the caller, who falls back.
 *
 * One issuer.  The ring is set up with IORING_SETUP_SINGLE_ISSUER (6.0+;
 * a plain ring where the kernel refuses it), which lets the kernel skip
 * locking on submission: on a loop device over tmpfs it gave 2-18% more
 * IOPS at depth 32 and 10-25% at depth 1, 5-15% less CPU per request
 * (docs/benchmarks.md).  Such a ring accepts io_uring_enter only from the
 * thread it is bound to.  A state from thread_init is bound to its creating
 * thread, which is the only one that will run it.  A per-context state is
 * created disabled (IORING_SETUP_R_DISABLED) and bound by its first
 * submission, in the thread then running the loop; should the loop move to
 * another thread later (strata_context_start_thread/stop_thread), new
 * requests wait until the old thread's requests have completed (their CQEs
 * are posted without our help and read in user space), and then the ring
 * is made again in the new thread, its fixed buffers registered again.
 *
 * One-element requests go as IORING_OP_READ/WRITE rather than READV/WRITEV
 * (5.6+): the kernel then copies no iovec in, nor keeps one for a request
 * it punts to io-wq.  O_DIRECT 4 KiB at depth 32 on tmpfs, 5 alternated
 * runs: reads 746k -> 808k IOPS, 1.22 -> 1.11 us CPU per request; writes
 * 495k -> 575k, 1.85 -> 1.46 us.  STRATA_IO_URING_VECTORED_ONLY=1 in the
 * environment turns it off, to measure the difference again.
 *
 * Cooperative task work.  A request that io_uring completes outside the
 * submitting task (punted to io-wq, as every O_DIRECT request on tmpfs
 * is, or finished by the loop driver's worker) posts its CQE through task
 * work on the submitting task.  By default the kernel interrupts that task
 * for it at once (an IPI when it runs in user space);
 * IORING_SETUP_COOP_TASKRUN (5.19+) lets the task work wait for the
 * task's next entry into the kernel, which the loop makes constantly:
 * when it is about to sleep, epoll_wait returns EINTR for the pending
 * task work, and the loop looks again (util/loop.c).  All our submissions
 * and waits happen in the ring's one thread, the case the flag is for.
 * tmpfs file, O_DIRECT 4 KiB reads at depth 32: 331-402k -> 594-721k
 * IOPS, 4.1-5.4 -> 2.6-2.7 us CPU per request; loop device 308k -> 355k
 * (two alternated runs).  STRATA_IO_URING_NO_COOP_TASKRUN=1 turns it off.
 *
 * Waiting.  Once the ring is bound to the thread that runs its loop, the
 * state is the loop's waiter (util/loop.h: loop_claim_waiter): its ring
 * fd leaves the epoll set, the loop sleeps in io_uring_enter for one CQE,
 * and a one-shot POLL_ADD on the loop's epoll fd, armed again for each
 * sleep after it fired, ends the sleep for the loop's other fds.  The
 * completions are then taken without an epoll_wait in between, as fio
 * waits (tmpfs and loop device at depth 1: +4-7% IOPS, 7-9% less CPU per
 * request).  A GLib source for the loop, or the loop's handover to
 * another thread (loop_release, which runs the detach in the ring's own
 * thread), removes the poll and puts the ring fd back in the epoll set;
 * the ring made again in a new thread claims the role there.
 * STRATA_IO_URING_EPOLL=1 keeps the ring fd in the epoll set always.
 *
 * Files without non-blocking I/O.  io_uring first tries a request inline
 * with IOCB_NOWAIT and punts it to an io-wq worker when told to wait; a
 * file opened without FMODE_NOWAIT (O_DIRECT on tmpfs) is told so at once,
 * every time.  The file driver learns this when it opens the file
 * (preadv2 with RWF_NOWAIT: EOPNOTSUPP) and says AIO_NO_NOWAIT; below
 * URING_ASYNC_BELOW requests in flight such a request goes with
 * IOSQE_ASYNC, straight to the workers.  tmpfs, 3 alternated runs each:
 * depth 1 reads 22-44k -> 98-117k IOPS, writes 18-36k -> 95-169k; depth 4
 * +17%.  Not above that: with the bound at 16 (until run 14), reads at
 * depth 16 went all that way and made 452-468k IOPS, against 772-830k
 * with the bound at 4; depth 8 172-209k -> 228-266k, depth 32 unchanged
 * (a bound of 1: depth 8 152-159k).  Writes go that way only when
 * nothing else is in flight (URING_ASYNC_WRITES_BELOW): io-wq runs the
 * writes to one regular file one at a time (it hashes them by inode), but
 * a request sent with IOSQE_ASYNC reaches it before its file is looked up
 * and escapes the hash, so such writes ran in several workers at once,
 * fighting over the inode's lock (perf: rwsem spinning in the workers).
 * tmpfs writes, 3 alternated runs each: depth 32 738-821k -> 890-910k
 * IOPS (tuned fio: 910k), depth 4 66-68k -> 71-82k, depth 8 145-164k ->
 * 134-150k, depth 1 unchanged (writing with no IOSQE_ASYNC at all: 19-26k
 * at depth 1).  Files that take IOCB_NOWAIT (a block device, NVMe) are
 * never marked.
 *
 * Polling.  A loop that polls (an iothread serving vhost-user-blk
 * virtqueues) calls the waiter's check while it spins.  Completions of
 * punted requests wait as task work for our next kernel entry
 * (COOP_TASKRUN); with IORING_SETUP_TASKRUN_FLAG the kernel says so in
 * the SQ flags, and the check enters (io_uring_get_events) to post them.
 * Without that entry a polling loop saw them only at the next interrupt
 * on its CPU: loop device, depth 1, polling: 23-25k IOPS without, 46-58k
 * with (measured while the engine's ring alone was polled too).
 *
 * Deferred task work.  Where the kernel has it (6.1+), the ring is also
 * set up with IORING_SETUP_DEFER_TASKRUN, as fio's io_uring engine sets up
 * its own: completions of requests the kernel finishes elsewhere (io-wq,
 * a loop device's worker) wait in a list of the ring's own until the
 * owner enters the kernel for events, and the io-wq workers no longer post
 * CQEs under the CQ lock that the submitter takes too.  With early
 * submission (block/aio-engine.h), 5 alternated runs, depth 32: tmpfs
 * reads 744k -> 876k IOPS, writes 584k -> 704k, loop device reads 619k ->
 * 664k, writes 498k -> 476k (within noise); without early submission it
 * had gained nothing (docs/benchmarks.md, run 12).  Its rules:
 *   - only the owner can have the completions posted: the waiter enters
 *     with GETEVENTS (io_uring_submit_and_wait_timeout), a polling check
 *     enters when the kernel flags pending task work (TASKRUN_FLAG);
 *   - the ring fd does not reliably poll readable for completions still
 *     waiting as task work (6.18: only the first time), so the ring has an
 *     eventfd registered when it is made (in the thread the kernel takes
 *     registrations from), which the kernel signals when it queues them;
 *     while the ring is not its loop's waiter that eventfd, switched on
 *     with the CQ's eventfd flag, stands in the epoll set instead;
 *   - before the loop goes to another thread, the owner waits for its
 *     requests in the kernel (uring_on_release, a hook loop_release runs
 *     in the old owner, waiter or not), since no other thread could ever
 *     have them posted.
 * STRATA_IO_URING_NO_DEFER_TASKRUN=1 sets rings up without it.
 */
#include <errno.h>
#include <poll.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include "block/aio-engine.h"

#define URING_DEFAULT_ENTRIES 128
/* Files without non-blocking I/O: IOSQE_ASYNC below this many requests in
 * flight, writes below the second (see the top of the file). */
#define URING_ASYNC_BELOW 4
#define URING_ASYNC_WRITES_BELOW 1
#define URING_FIXED_SLOTS 256
/* The kernel refuses larger fixed buffers. */
#define URING_FIXED_MAX_LEN ((size_t)1 << 30)
/* Retry delay after -EAGAIN/-EBUSY when no completion will come to retry
 * for us. */
#define URING_RETRY_NS (1000 * 1000)
/* user_data of the poll on the loop's epoll fd and of its
 * removal: never a UringReq's address (those are aligned). */
#define URING_TAG_POLL   ((uint64_t)1)
#define URING_TAG_REMOVE ((uint64_t)3)

typedef struct UringReq {
    Coroutine *co;
    uint8_t opcode;             /* IORING_OP_* */
    int fd;
    int rw_flags;
    bool no_nowait;             /* AIO_NO_NOWAIT */
    int64_t offset;
    const struct iovec *iov;    /* READV/WRITEV */
    int niov;
    void *buf;                  /* READ_FIXED/WRITE_FIXED */
    unsigned len;
    int slot;
    int ret;
    bool done;
    unsigned early_gen;         /* aio_early_gen() when queued */
    struct UringReq *next;      /* wait list */
} UringReq;

typedef struct UringState {
    Loop *loop;
    struct io_uring ring;
    unsigned entries;           /* SQ entries asked for */
    bool single_issuer;         /* IORING_SETUP_SINGLE_ISSUER */
    /* Registered eventfd of an IORING_SETUP_DEFER_TASKRUN ring (see
     * above), or -1: a ring has the flag exactly when it has one. */
    int evfd;
    LoopReleaseHook release;    /* a defer ring's requests before a handover */
    pid_t owner;                /* thread the ring is bound to, 0 not yet */
    unsigned cq_entries;
    unsigned inflight;          /* in the SQ or the kernel, not yet reaped */
    UringReq *wait_head;        /* waiting for an SQE or CQ room, FIFO */
    UringReq **wait_tail;
    LoopTimer retry_timer;
    /* Waiting in io_uring_enter (see "Waiting" above) */
    LoopWaiter waiter;
    bool self_wait;             /* the loop's waiter: ring fd not in epoll */
    bool poll_armed;            /* a poll on the loop's epoll fd */
    bool have_fixed_ops;
    bool have_plain_ops;        /* IORING_OP_READ/WRITE (5.6+) */
    bool fixed_table;           /* sparse table registered */
    bool slot_used[URING_FIXED_SLOTS];
    struct iovec slot_iov[URING_FIXED_SLOTS];  /* to register again */
    AioEngineStats stats;
    AioEarly early;             /* block/aio-engine.h */
} UringState;

/* The calling thread's id, cached. */
static pid_t uring_self(void)
{
    static __thread pid_t tid;

    if (!tid) {
        tid = gettid();
    }
    return tid;
}

static int uring_probe(void)
{
    struct io_uring ring;
    int ret = io_uring_queue_init(2, &ring, 0);
    if (ret == 0) {
        io_uring_queue_exit(&ring);
    }
    return ret;
}

static bool uring_available(const char **why)
{
    /* 0 untried, 1 usable, -errno from io_uring_setup. */
    static int result;
    int known = aio_engine_probe_once(&result, uring_probe);

    if (known > 0) {
        return true;
    }
    if (why) {
        switch (-known) {
        case ENOSYS:
            *why = "io_uring_setup: Function not implemented";
            break;
        case EPERM:
            *why = "io_uring_setup: Operation not permitted "
                   "(kernel.io_uring_disabled or seccomp)";
            break;
        case ENOMEM:
            *why = "io_uring_setup: Cannot allocate memory (RLIMIT_MEMLOCK?)";
            break;
        default:
            *why = "io_uring_setup failed";
            break;
        }
    }
    return false;
}

/* Put @req in an SQE.  False when there is no room: the CQ budget is used
 * up, or the SQ is full even after submitting it. */
static bool uring_queue(UringState *s, UringReq *req);
static unsigned uring_submit(UringState *s);

static int uring_bind(UringState *s);
static void uring_on_readable(void *opaque);

static void uring_flush(void *opaque)
{
    UringState *s = opaque;
    unsigned reaped;

    if (uring_bind(s) <= 0) {
        /* The waiters go once the other thread's requests are done (or
         * the error reached them). */
        return;
    }
    do {
        while (s->wait_head) {
            UringReq *req = s->wait_head;
            if (!uring_queue(s, req)) {
                break;
            }
            s->wait_head = req->next;
            if (!s->wait_head) {
                s->wait_tail = &s->wait_head;
            }
            req->next = NULL;
        }
        reaped = uring_submit(s);
        /* Completions found right after submitting freed CQ budget that
         * waiting requests can use now rather than a loop iteration later.
         * Each pass either queues a waiter or finds nothing more to reap,
         * so this ends. */
    } while (reaped > 0 && s->wait_head);
}

static void uring_retry_cb(void *opaque)
{
    UringState *s = opaque;

    s->stats.retries++;
    uring_flush(s);
}

static unsigned uring_reap(UringState *s, bool enter);

/*
 * Hand every prepared SQE to the kernel, then take the CQEs that are
 * already there (uring_reap without entering anyone).  Returns how many
 * completions were reaped.
 */
static unsigned uring_submit(UringState *s)
{
    bool submitted = false;

    unsigned queued = io_uring_sq_ready(&s->ring);

    aio_early_flush_begin(&s->early, queued, s->inflight - queued);

    while (io_uring_sq_ready(&s->ring) > 0) {
        unsigned ready = io_uring_sq_ready(&s->ring);
        int ret = io_uring_submit(&s->ring);

        if (ret > 0) {
            s->stats.syscalls++;
            if ((uint64_t)ret > s->stats.max_batch) {
                s->stats.max_batch = ret;
            }
            submitted = true;
            /* A short count means the kernel stopped after an SQE it
             * failed (its CQE carries the error): submit the rest. */
            continue;
        }
        if (ret == -EINTR) {
            continue;
        }
        /*
         * -EAGAIN: the kernel could not allocate request memory;
         * -EBUSY: it wants the CQ overflow reaped first.  Either way the
         * SQEs stay in the ring and go with the next io_uring_enter: the
         * completion handler flushes again after reaping, and when nothing
         * is in the kernel a timer does.  Any other error (none is expected
         * for a healthy ring) is treated alike rather than leaving the
         * requests stuck.
         */
        if (s->inflight <= ready) {
            loop_timer_mod(&s->retry_timer, clock_ns() + URING_RETRY_NS);
        }
        break;
    }
    if (!submitted) {
        return 0;
    }
    unsigned reaped = uring_reap(s, false);
    aio_early_flush_end(&s->early);
    return reaped;
}

static bool uring_queue(UringState *s, UringReq *req)
{
    if (s->inflight >= s->cq_entries) {
        return false;
    }
    struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
    if (!sqe) {
        /* A full SQ goes to the kernel now to make room. */
        uring_submit(s);
        sqe = io_uring_get_sqe(&s->ring);
        if (!sqe) {
            return false;
        }
    }

    switch (req->opcode) {
    case IORING_OP_READV:
        /* One element: the non-vectored opcode, which spares the kernel
         * copying the iovec in (and keeping a copy when it punts the
         * request to a worker); fio does the same. */
        if (req->niov == 1 && s->have_plain_ops) {
            io_uring_prep_read(sqe, req->fd, req->iov[0].iov_base,
                               req->iov[0].iov_len, req->offset);
        } else {
            io_uring_prep_readv(sqe, req->fd, req->iov, req->niov,
                                req->offset);
        }
        break;
    case IORING_OP_WRITEV:
        if (req->niov == 1 && s->have_plain_ops) {
            io_uring_prep_write(sqe, req->fd, req->iov[0].iov_base,
                                req->iov[0].iov_len, req->offset);
        } else {
            io_uring_prep_writev(sqe, req->fd, req->iov, req->niov,
                                 req->offset);
        }
        break;
    case IORING_OP_READ_FIXED:
        io_uring_prep_read_fixed(sqe, req->fd, req->buf, req->len,
                                 req->offset, req->slot);
        break;
    case IORING_OP_WRITE_FIXED:
        io_uring_prep_write_fixed(sqe, req->fd, req->buf, req->len,
                                  req->offset, req->slot);
        break;
    default:
        g_assert_not_reached();
    }
    sqe->rw_flags = req->rw_flags;
    bool write = req->opcode == IORING_OP_WRITEV || req->opcode == IORING_OP_WRITE_FIXED;
    if (req->no_nowait &&
        s->inflight < (write ? URING_ASYNC_WRITES_BELOW : URING_ASYNC_BELOW)) {
        /* See "Files without non-blocking I/O" above. */
        sqe->flags |= IOSQE_ASYNC;
        s->stats.forced_async++;
    }
    io_uring_sqe_set_data(sqe, req);
    req->early_gen = aio_early_gen(&s->early);
    s->inflight++;
    return true;
}

/* Submit @req and wait for its CQE.  Runs in a coroutine of s->loop. */
static int uring_co_submit(UringState *s, UringReq *req)
{
    req->co = co_self();
    g_assert(req->co);
    s->stats.submits++;

    int bound = uring_bind(s);
    if (bound < 0) {
        return bound;
    }
    /* FIFO: nobody overtakes a request that waits for room (or for the
     * ring to be bound to this thread). */
    if (s->wait_head || !bound || !uring_queue(s, req)) {
        s->stats.queue_waits++;
        *s->wait_tail = req;
        s->wait_tail = &req->next;
    }
    loop_defer_call(s->loop, uring_flush, s);
    unsigned max_batch = loop_get_aio_max_batch(s->loop);
    unsigned queued = io_uring_sq_ready(&s->ring);
    if (max_batch) {
        if (queued >= max_batch) {
            uring_submit(s);
        }
    } else if (bound > 0 && aio_early_submit_now(&s->early, queued)) {
        s->stats.early++;
        uring_submit(s);
    }

    while (!req->done) {
        co_yield();
    }
    return req->ret;
}

/*
 * Take every CQE in the ring.  @enter: enter each request's coroutine (the
 * completion handler, which runs in the loop, not in a coroutine, inside its
 * own defer section); else wake it through the loop (the submit path, see
 * the top of the file), except the running coroutine's own request, which
 * just sees done and does not yield.  Returns how many were reaped.
 */
static unsigned uring_reap(UringState *s, bool enter)
{
    unsigned found = 0;
    CoList run = CO_LIST_INIT;

    for (;;) {
        struct io_uring_cqe *cqe;

        if (io_uring_peek_cqe(&s->ring, &cqe) != 0) {
            /* peek flushes an overflow itself when it finds the CQ empty;
             * this covers a flag raised after that look. */
            if (io_uring_cq_has_overflow(&s->ring) &&
                io_uring_get_events(&s->ring) == 0) {
                continue;
            }
            if (run.head) {
                /* The CQ is drained: run them in a row (co_list_enter),
                 * then look again for what came meanwhile. */
                co_list_enter(&run);
                continue;
            }
            break;
        }

        if (G_UNLIKELY(cqe->user_data == URING_TAG_POLL ||
                       cqe->user_data == URING_TAG_REMOVE)) {
            /* The loop's epoll fd turned readable (the loop looks at it
             * after the wait), or the poll ended. */
            if (cqe->user_data == URING_TAG_POLL &&
                !(cqe->flags & IORING_CQE_F_MORE)) {
                s->poll_armed = false;
            }
            io_uring_cqe_seen(&s->ring, cqe);
            continue;
        }
        /* Copy everything out and release the CQE before entering the
         * coroutine: it may submit, and the CQ slot is free for reuse. */
        UringReq *req = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        aio_early_reaped(&s->early, req->early_gen);
        io_uring_cqe_seen(&s->ring, cqe);

        g_assert(s->inflight > 0);
        s->inflight--;
        s->stats.completions++;
        found++;
        req->ret = (int)aio_engine_apply_short(AIO_ENGINE_IO_URING, res);
        req->done = true;
        if (enter) {
            co_list_append(&run, req->co);
        } else if (req->co != co_self()) {
            if (!co_get_loop(req->co)) {
                /* Created before the thread had a loop; it runs in ours. */
                co_set_loop(req->co, s->loop);
            }
            loop_co_wake(req->co);
        }
    }
    if (found) {
        s->stats.reap_batches++;
    }
    return found;
}

/* Enter the coroutines of every CQE there is; returns how many. */
static unsigned uring_run_completions(UringState *s)
{
    /* Our own section, so that the requests the re-entered coroutines
     * submit go out in one io_uring_enter when the handler is done. */
    loop_defer_begin(s->loop);
    unsigned found = uring_reap(s, true);
    if (s->wait_head || io_uring_sq_ready(&s->ring) > 0) {
        loop_defer_call(s->loop, uring_flush, s);
    }
    loop_defer_end(s->loop);
    return found;
}

/* The ring fd polls readable: CQEs are waiting. */
static void uring_on_readable(void *opaque)
{
    uring_run_completions(opaque);
}

/* The registered eventfd of a DEFER_TASKRUN ring that is not its loop's
 * waiter: completions wait as task work until we ask for them. */
static void uring_on_evfd(void *opaque)
{
    UringState *s = opaque;
    uint64_t count;

    /* Reset first: a completion queued while we reap signals again. */
    if (read(s->evfd, &count, sizeof(count)) < 0) {
        /* EAGAIN: nothing new; look anyway. */
    }
    io_uring_get_events(&s->ring);
    uring_run_completions(s);
}

/* Let the loop's epoll set announce completions: the ring fd, or for a
 * DEFER_TASKRUN ring (whose fd does not reliably poll readable for
 * completions still waiting as task work) its registered eventfd, which
 * the kernel signals when it queues them.  Runs in any thread: no system
 * call on the ring. */
static void uring_watch(UringState *s)
{
    if (s->evfd < 0) {
        loop_set_fd_handler(s->loop, s->ring.ring_fd, uring_on_readable,
                            NULL, s);
        return;
    }
    io_uring_cq_eventfd_toggle(&s->ring, true);
    /* The kernel signals the eventfd when its list of deferred
     * completions turns non-empty: completions queued while it was off
     * (requests in flight when the ring stopped being the waiter) would
     * never be announced, nor would those after them.  Look once. */
    uint64_t one = 1;
    if (write(s->evfd, &one, sizeof(one)) != sizeof(one)) {
        /* Only a counter at its maximum refuses, and that is readable. */
    }
    loop_set_fd_handler(s->loop, s->evfd, uring_on_evfd, NULL, s);
}

/* The ring becomes its loop's waiter, or goes: nothing in the epoll set
 * speaks for it any more (and a defer ring's eventfd goes quiet). */
static void uring_unwatch(UringState *s)
{
    if (s->evfd < 0) {
        loop_set_fd_handler(s->loop, s->ring.ring_fd, NULL, NULL, NULL);
        return;
    }
    loop_set_fd_handler(s->loop, s->evfd, NULL, NULL, NULL);
    io_uring_cq_eventfd_toggle(&s->ring, false);
}

/* Before another thread runs the loop (loop_release, in the owner): only
 * this thread can have the kernel post a DEFER_TASKRUN ring's
 * completions, so wait here for the requests it has out, and wake their
 * coroutines, to run wherever the loop runs next.  A request that never
 * completes (a read of an idle pipe) would hold the handover; files
 * complete. */
static void uring_on_release(void *opaque)
{
    UringState *s = opaque;

    if (s->evfd < 0 || s->owner != uring_self()) {
        return;
    }
    while (s->inflight > 0) {
        struct io_uring_cqe *cqe;
        int ret = io_uring_submit_and_wait_timeout(&s->ring, &cqe, 1, NULL,
                                                   NULL);
        if (ret == -EAGAIN || ret == -EBUSY) {
            /* Short of kernel memory, or a CQ overflow to reap first. */
            uring_reap(s, false);
            g_usleep(1000);
            continue;
        }
        if (ret < 0 && ret != -EINTR && ret != -ETIME) {
            g_error("io_uring: waiting for requests in flight before "
                    "handing the loop to another thread: %s",
                    g_strerror(-ret));
        }
        uring_reap(s, false);
    }
}

/* ---- the loop's waiter --------------------------------------------------- */

bool aio_uring_test_self_wait(void *state)
{
    return ((UringState *)state)->self_wait;
}

bool aio_uring_test_defer(void *state)
{
    return ((UringState *)state)->evfd >= 0;
}

/* STRATA_IO_URING_EPOLL=1 keeps the ring fd in the epoll set always. */
static bool uring_epoll_forced(void)
{
    return aio_engine_env_flag("STRATA_IO_URING_EPOLL");
}

/* Whether the CQ holds a completion of the poll on the epoll fd (looked
 * at, not taken). */
static bool uring_cq_has_poll(UringState *s)
{
    struct io_uring_cqe *cqe;
    unsigned head;

    io_uring_for_each_cqe(&s->ring, head, cqe) {
        if (cqe->user_data == URING_TAG_POLL) {
            return true;
        }
    }
    return false;
}

static struct io_uring_sqe *uring_get_sqe_now(UringState *s)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
    if (!sqe) {
        io_uring_submit(&s->ring);
        sqe = io_uring_get_sqe(&s->ring);
    }
    return sqe;
}

/* CQEs, or completions waiting as task work to be posted (the kernel
 * flags those with IORING_SETUP_TASKRUN_FLAG). */
static bool uring_has_events(void *opaque)
{
    UringState *s = opaque;

    return io_uring_cq_ready(&s->ring) ||
           (IO_URING_READ_ONCE(*s->ring.sq.kflags) & IORING_SQ_TASKRUN);
}

static int uring_wait(void *opaque, int epfd, int64_t timeout_ns)
{
    UringState *s = opaque;

    g_assert(s->owner == uring_self());
    if (!s->poll_armed) {
        struct io_uring_sqe *sqe = uring_get_sqe_now(s);
        if (sqe) {
            /* One-shot, armed again for each sleep after it fired: the
             * arming looks at the epoll set's ready list, which a
             * level-triggered fd rejoins after epoll_wait without waking
             * anyone (a multishot poll would miss it and sleep on). */
            io_uring_prep_poll_add(sqe, epfd, POLLIN);
            io_uring_sqe_set_data64(sqe, URING_TAG_POLL);
            s->poll_armed = true;
        }
    }
    if (!s->poll_armed || io_uring_cq_ready(&s->ring)) {
        /* No room for the poll (the SQ is full of requests, whose
         * completions come soon), or CQEs already wait: no sleep. */
        if (io_uring_sq_ready(&s->ring)) {
            io_uring_submit(&s->ring);
        }
        return !s->poll_armed || uring_cq_has_poll(s);
    }

    int64_t spin = aio_spin_ns(s->inflight, timeout_ns);
    if (spin > 0) {
        /* A short spin first (block/aio-engine.h); what is queued goes
         * out before it. */
        if (io_uring_sq_ready(&s->ring)) {
            io_uring_submit(&s->ring);
        }
        if (aio_spin_until(uring_has_events, s, spin)) {
            io_uring_get_events(&s->ring);
            s->stats.spins_won++;
            return uring_cq_has_poll(s);
        }
    }

    struct __kernel_timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tsp = &ts;
    }
    struct io_uring_cqe *cqe;
    int ret = io_uring_submit_and_wait_timeout(&s->ring, &cqe, 1, tsp, NULL);
    if (ret == -EINTR) {
        return -EINTR;
    }
    /* -ETIME: the timeout.  Anything else: let the loop look everywhere. */
    return (ret < 0 && ret != -ETIME) || uring_cq_has_poll(s);
}

static bool uring_check(void *opaque)
{
    UringState *s = opaque;

    if (!io_uring_cq_ready(&s->ring) && !io_uring_cq_has_overflow(&s->ring)) {
        /* Completions of punted requests wait as task work for our next
         * kernel entry (COOP_TASKRUN); the kernel flags them (TASKRUN_FLAG),
         * and a polling loop must enter to see them. */
        if (!(IO_URING_READ_ONCE(*s->ring.sq.kflags) & IORING_SQ_TASKRUN)) {
            return false;
        }
        io_uring_get_events(&s->ring);
        if (!io_uring_cq_ready(&s->ring)) {
            return false;
        }
    }
    return uring_run_completions(s) > 0;
}

/* Back to the ring fd in epoll, in the ring's own thread (loop_release
 * runs it in the old owner, loop_create_gsource in the loop's thread). */
static void uring_detach(void *opaque)
{
    UringState *s = opaque;

    g_assert(s->owner == uring_self());
    s->self_wait = false;
    if (s->poll_armed) {
        /* Gone before the ring fd is back in the epoll set, or the two
         * would wake each other for ever.  The removal is done inside
         * io_uring_enter; its CQEs are skipped when reaped. */
        struct io_uring_sqe *sqe = uring_get_sqe_now(s);
        g_assert(sqe);
        io_uring_prep_poll_remove(sqe, URING_TAG_POLL);
        io_uring_sqe_set_data64(sqe, URING_TAG_REMOVE);
        int ret;
        do {
            ret = io_uring_submit(&s->ring);
        } while (ret == -EINTR);
        s->poll_armed = false;
    }
    uring_watch(s);
}

/* Become the loop's waiter if the ring is bound to this thread, which
 * runs the loop. */
static void uring_try_claim(UringState *s)
{
    if (s->self_wait || !s->single_issuer || s->owner != uring_self() ||
        uring_epoll_forced() || !loop_claim_waiter(s->loop, &s->waiter)) {
        return;
    }
    s->self_wait = true;
    uring_unwatch(s);
}

/*
 * Set up s->ring as a single-issuer ring with cooperative task work,
 * disabled (@disabled: bound by uring_bind later) or bound to the calling
 * thread; a plain ring where the kernel refuses the flags (before 6.0, or
 * a seccomp'd setup).
 */
/* STRATA_IO_URING_NO_COOP_TASKRUN=1 sets the ring up without it, to
 * measure the difference again. */
static bool uring_coop_taskrun(void)
{
    return !aio_engine_env_flag("STRATA_IO_URING_NO_COOP_TASKRUN");
}

/* STRATA_IO_URING_NO_DEFER_TASKRUN=1 sets the ring up without it. */
static bool uring_defer_taskrun(void)
{
    return !aio_engine_env_flag("STRATA_IO_URING_NO_DEFER_TASKRUN");
}

static int uring_setup(UringState *s, bool disabled,
                       struct io_uring_params *params)
{
    unsigned flags = IORING_SETUP_SINGLE_ISSUER |
                     (uring_coop_taskrun() ? IORING_SETUP_COOP_TASKRUN |
                                             IORING_SETUP_TASKRUN_FLAG : 0) |
                     (disabled ? IORING_SETUP_R_DISABLED : 0);
    int ret = -EINVAL;

    s->evfd = -1;
    if (uring_defer_taskrun()) {
        /* 6.1+.  Its eventfd is registered now, in the thread that may
         * (a single-issuer ring takes io_uring_register from its owner
         * only), and switched on and off with the CQ flag after. */
        *params = (struct io_uring_params) {
            .flags = flags | IORING_SETUP_DEFER_TASKRUN |
                     IORING_SETUP_TASKRUN_FLAG,
        };
        ret = io_uring_queue_init_params(s->entries, &s->ring, params);
        if (ret == 0) {
            s->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
            if (s->evfd < 0 ||
                io_uring_register_eventfd(&s->ring, s->evfd) < 0 ||
                io_uring_cq_eventfd_toggle(&s->ring, false) < 0) {
                /* Out of fds or memory: a ring without it. */
                if (s->evfd >= 0) {
                    close(s->evfd);
                    s->evfd = -1;
                }
                io_uring_queue_exit(&s->ring);
                ret = -EINVAL;
            }
        }
    }
    if (ret != 0) {
        *params = (struct io_uring_params) { .flags = flags };
        ret = io_uring_queue_init_params(s->entries, &s->ring, params);
    }
    if (ret == 0) {
        s->single_issuer = true;
        s->owner = disabled ? 0 : uring_self();
        return 0;
    }
    *params = (struct io_uring_params) { 0 };
    s->single_issuer = false;
    s->owner = 0;
    return io_uring_queue_init_params(s->entries, &s->ring, params);
}

/* Register every used fixed-buffer slot again on a new ring; a slot that
 * fails is dropped (its requests then fail with EINVAL, which the file
 * driver reports). */
static void uring_register_again(UringState *s)
{
    if (!s->fixed_table) {
        return;
    }
    if (io_uring_register_buffers_sparse(&s->ring, URING_FIXED_SLOTS) < 0) {
        s->fixed_table = false;
        memset(s->slot_used, 0, sizeof(s->slot_used));
        return;
    }
    for (int slot = 0; slot < URING_FIXED_SLOTS; slot++) {
        __u64 tag = 0;
        if (s->slot_used[slot] &&
            io_uring_register_buffers_update_tag(&s->ring, slot,
                                                 &s->slot_iov[slot], &tag,
                                                 1) != 1) {
            s->slot_used[slot] = false;
        }
    }
}

/*
 * Make sure the ring takes io_uring_enter from the calling thread: 1 yes,
 * 0 not yet (the loop moved here while requests submitted by the old
 * thread are still out), -errno if the ring could not be made again.
 */
static int uring_bind(UringState *s)
{
    pid_t self = uring_self();

    if (!s->single_issuer || s->owner == self) {
        return 1;
    }
    if (!s->owner) {
        /* liburing 2.3 (Debian 12) declares io_uring_enable_rings but does
         * not export it: the system call itself. */
        if (syscall(__NR_io_uring_register, s->ring.ring_fd,
                    IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0) {
            return -errno;
        }
        s->owner = self;
        uring_try_claim(s);
        return 1;
    }
    if (s->inflight > 0) {
        return 0;
    }
    /* The waiter role went with the old thread (loop_release). */
    g_assert(!s->self_wait);

    struct io_uring old = s->ring;
    int old_evfd = s->evfd;
    struct io_uring_params params;
    int ret = uring_setup(s, false, &params);
    if (ret < 0) {
        s->ring = old;
        s->evfd = old_evfd;
        return ret;
    }
    /* What spoke for the old ring in the epoll set goes with it. */
    loop_set_fd_handler(s->loop, old.ring_fd, NULL, NULL, NULL);
    if (old_evfd >= 0) {
        loop_set_fd_handler(s->loop, old_evfd, NULL, NULL, NULL);
        close(old_evfd);
    }
    io_uring_queue_exit(&old);
    s->cq_entries = params.cq_entries;
    uring_register_again(s);
    s->poll_armed = false;
    uring_watch(s);
    uring_try_claim(s);
    return 1;
}

static void *uring_init(Loop *loop, bool disabled, StrataError **errp)
{
    UringState *s = g_new0(UringState, 1);
    aio_early_init(&s->early);
    struct io_uring_params params;

    s->entries = aio_engine_queue_depth(AIO_ENGINE_IO_URING,
                                        URING_DEFAULT_ENTRIES);
    int ret = uring_setup(s, disabled, &params);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "io_uring_setup(%u entries)", s->entries);
        g_free(s);
        return NULL;
    }

    struct io_uring_probe *probe = io_uring_get_probe_ring(&s->ring);
    if (!probe ||
        !io_uring_opcode_supported(probe, IORING_OP_READV) ||
        !io_uring_opcode_supported(probe, IORING_OP_WRITEV)) {
        error_setg_errno(errp, EOPNOTSUPP,
                         "io_uring: kernel lacks IORING_OP_READV/WRITEV");
        if (probe) {
            io_uring_free_probe(probe);
        }
        io_uring_queue_exit(&s->ring);
        g_free(s);
        return NULL;
    }
    s->have_fixed_ops = io_uring_opcode_supported(probe, IORING_OP_READ_FIXED) &&
                        io_uring_opcode_supported(probe, IORING_OP_WRITE_FIXED);
    s->have_plain_ops = io_uring_opcode_supported(probe, IORING_OP_READ) &&
                        io_uring_opcode_supported(probe, IORING_OP_WRITE) &&
                        !aio_engine_env_flag("STRATA_IO_URING_VECTORED_ONLY");
    io_uring_free_probe(probe);

    /* No io_uring_register_ring_fd(): the registered index is private to
     * the thread that registered it, and a context's loop may move to a
     * thread of its own after nodes were opened (strata_context_start_thread),
     * where every io_uring_enter would then fail with EINVAL.  The saving is
     * one fd table lookup per syscall. */

    s->loop = loop;
    s->cq_entries = params.cq_entries;
    s->wait_tail = &s->wait_head;
    loop_timer_init(&s->retry_timer, s->loop, uring_retry_cb, s);
    s->release = (LoopReleaseHook) { .fn = uring_on_release, .opaque = s };
    loop_add_release_hook(s->loop, &s->release);
    uring_watch(s);
    s->waiter = (LoopWaiter) {
        .wait = uring_wait, .check = uring_check, .detach = uring_detach,
        .opaque = s,
    };
    if (loop_is_owner(loop)) {
        uring_try_claim(s);
    }
    return s;
}

/* The context's loop may move to a thread of its own after nodes were
 * opened: bind at the first submission, and again if it moves. */
static void *uring_ctx_init(Loop *loop, StrataError **errp)
{
    return uring_init(loop, true, errp);
}

static void *uring_thread_init(Loop *loop, StrataError **errp)
{
    return uring_init(loop, false, errp);
}

static void uring_ctx_cleanup(void *opaque)
{
    UringState *s = opaque;

    /* The context closes (and so drains) every node first. */
    g_assert(s->inflight == 0 && !s->wait_head);
    loop_timer_del(&s->retry_timer);
    if (s->self_wait) {
        loop_release_waiter(s->loop, &s->waiter);
    }
    loop_remove_release_hook(s->loop, &s->release);
    uring_unwatch(s);
    if (s->evfd >= 0) {
        close(s->evfd);
    }
    /* Also drops the fixed-buffer table and unpins its memory. */
    io_uring_queue_exit(&s->ring);
    g_free(s);
}

static bool uring_supports_fua(void *opaque)
{
    /* rw_flags has carried RWF_* on READV/WRITEV since io_uring's first
     * release (5.1), and RWF_DSYNC exists since 4.7. */
    return true;
}

static int uring_co_preadv(void *opaque, int fd, int64_t offset,
                           const struct iovec *iov, int niov, int flags)
{
    UringReq req = {
        .opcode = IORING_OP_READV, .fd = fd, .offset = offset,
        .iov = iov, .niov = niov, .no_nowait = flags & AIO_NO_NOWAIT,
    };
    g_assert(!(flags & ~(AIO_FUA | AIO_NO_NOWAIT)));
    return uring_co_submit(opaque, &req);
}

static int uring_co_pwritev(void *opaque, int fd, int64_t offset,
                            const struct iovec *iov, int niov, int flags)
{
    UringReq req = {
        .opcode = IORING_OP_WRITEV, .fd = fd, .offset = offset,
        .iov = iov, .niov = niov,
        .rw_flags = (flags & AIO_FUA) ? RWF_DSYNC : 0,
        .no_nowait = flags & AIO_NO_NOWAIT,
    };
    g_assert(!(flags & ~(AIO_FUA | AIO_NO_NOWAIT)));
    return uring_co_submit(opaque, &req);
}

/* ---- fixed buffers ------------------------------------------------------ */

static int uring_register_region(void *opaque, void *addr, size_t len)
{
    UringState *s = opaque;
    int ret;

    if (!s->have_fixed_ops) {
        return -EOPNOTSUPP;
    }
    if (!addr || len == 0 || len > URING_FIXED_MAX_LEN) {
        return -EINVAL;
    }
    ret = uring_bind(s);
    if (ret <= 0) {
        return ret < 0 ? ret : -EBUSY;
    }
    if (!s->fixed_table) {
        /* One sparse table, filled slot by slot: registering a region
         * never re-registers (and re-pins) the others.  Needs 5.19; the
         * error goes to the caller, who falls back to the normal path. */
        ret = io_uring_register_buffers_sparse(&s->ring, URING_FIXED_SLOTS);
        if (ret < 0) {
            return ret;
        }
        s->fixed_table = true;
    }

    int slot;
    for (slot = 0; slot < URING_FIXED_SLOTS && s->slot_used[slot]; slot++) {
    }
    if (slot == URING_FIXED_SLOTS) {
        return -ENOSPC;
    }

    struct iovec iov = { .iov_base = addr, .iov_len = len };
    __u64 tag = 0;
    ret = io_uring_register_buffers_update_tag(&s->ring, slot, &iov, &tag, 1);
    if (ret < 0) {
        return ret;
    }
    if (ret != 1) {
        return -EIO;
    }
    s->slot_used[slot] = true;
    s->slot_iov[slot] = iov;
    return slot;
}

static void uring_unregister_region(void *opaque, int slot)
{
    UringState *s = opaque;
    struct iovec iov = { .iov_base = NULL, .iov_len = 0 };
    __u64 tag = 0;

    g_assert(slot >= 0 && slot < URING_FIXED_SLOTS);
    if (!s->slot_used[slot]) {
        return;     /* dropped when the ring was made again */
    }
    /* An empty iovec makes the slot sparse again; requests still using the
     * old buffer keep it pinned until they complete. */
    int ret = io_uring_register_buffers_update_tag(&s->ring, slot, &iov,
                                                   &tag, 1);
    if (ret == 1) {
        s->slot_used[slot] = false;
    }
    /* On failure the slot stays taken (and the pages pinned) until the ring
     * is torn down: a lost slot is better than reusing a live one. */
}

static int uring_co_rw_fixed(UringState *s, uint8_t opcode, int fd,
                             int64_t offset, void *buf, size_t len, int slot,
                             int flags)
{
    g_assert(!(flags & ~(AIO_FUA | AIO_NO_NOWAIT)));
    if (slot < 0 || slot >= URING_FIXED_SLOTS || !s->slot_used[slot] ||
        len > BLOCK_MAX_RW_BYTES) {
        return -EINVAL;
    }
    UringReq req = {
        .opcode = opcode, .fd = fd, .offset = offset,
        .buf = buf, .len = (unsigned)len, .slot = slot,
        .rw_flags = (flags & AIO_FUA) ? RWF_DSYNC : 0,
        .no_nowait = flags & AIO_NO_NOWAIT,
    };
    return uring_co_submit(s, &req);
}

static int uring_co_preadv_fixed(void *opaque, int fd, int64_t offset,
                                 void *buf, size_t len, int slot, int flags)
{
    return uring_co_rw_fixed(opaque, IORING_OP_READ_FIXED, fd, offset, buf,
                             len, slot, flags & ~AIO_FUA);
}

static int uring_co_pwritev_fixed(void *opaque, int fd, int64_t offset,
                                  void *buf, size_t len, int slot, int flags)
{
    return uring_co_rw_fixed(opaque, IORING_OP_WRITE_FIXED, fd, offset, buf,
                             len, slot, flags);
}

static void uring_get_stats(void *opaque, AioEngineStats *out)
{
    UringState *s = opaque;
    *out = s->stats;
}

const AioEngineOps aio_io_uring_ops = {
    .name = "io_uring",
    .id = AIO_ENGINE_IO_URING,
    .available = uring_available,
    .ctx_init = uring_ctx_init,
    .thread_init = uring_thread_init,
    .ctx_cleanup = uring_ctx_cleanup,
    .supports_fua = uring_supports_fua,
    .co_preadv = uring_co_preadv,
    .co_pwritev = uring_co_pwritev,
    .register_region = uring_register_region,
    .unregister_region = uring_unregister_region,
    .co_preadv_fixed = uring_co_preadv_fixed,
    .co_pwritev_fixed = uring_co_pwritev_fixed,
    .get_stats = uring_get_stats,
};
