/*
 * AIO engine "native": Linux AIO through libaio, one io_context per context
 * SPDX-License-Identifier: MIT
 *
 * Life of a request:
 *
 *   co_preadv ─► iocb (on the coroutine's stack) in the pending array, or
 *   the wait list when depth requests are already out ─►
 *   loop_defer_call(laio_flush) ─► one io_submit per loop iteration (or
 *   earlier, in quarters of a deep load: block/aio-engine.h, "Early
 *   submission") ─►
 *   event in the completion ring ─► either
 *     (a) found right after io_submit: result copied, coroutine woken
 *         through the loop (loop_co_wake), or
 *     (b) eventfd readable ─► laio_on_readable(): result copied,
 *         co_enter(coroutine)
 *
 * Reaping.  io_setup maps a completion ring into our address space (the
 * io_context_t is its address) and the kernel appends events to it; we
 * read them there and publish the new head, the way io_getevents does in
 * the kernel, with no system call (fio's userspace_reap, QEMU's
 * linux-aio.c do the same).  A ring whose header we do not recognise falls
 * back to io_getevents.
 *
 * Completion inside io_submit.  Fast devices and tmpfs finish O_DIRECT
 * requests before io_submit returns, so the flush looks at the ring right
 * after submitting.  Before this, a depth-1 request cost four system calls
 * (io_submit, epoll_wait, eventfd read, io_getevents); now it costs one,
 * plus an epoll_wait and an eventfd read on the iterations where a busy
 * loop polls its fds anyway (about one request in ten at depth 1: 1.2
 * system calls per request against fio's 2, io_submit and io_getevents).
 * Those completions wake their coroutines through the loop rather than
 * entering them: the flush may run inside a submitting coroutine (no defer
 * section open), which must never be re-entered or made to enter others
 * from there; and entering at the end of a section would chain submission
 * into completion into submission without ever returning to the loop.
 *
 * The eventfd stays attached to every iocb (io_set_eventfd), so a request
 * that completes later wakes the loop through its epoll set like any other
 * fd.  It is also signalled for the requests reaped after io_submit; the
 * handler then finds an empty ring, which is harmless.  The completion
 * handler opens a defer section, so requests that the re-entered coroutines
 * submit leave in one io_submit when it returns.
 *
 * Waiting.  Where the engine state can be its loop's waiter
 * (util/loop.h: loop_claim_waiter; one per loop, not under a GLib main
 * context, not with the io_getevents fallback), its iocbs carry no
 * eventfd: the loop sleeps in io_getevents(min_nr 1) instead of
 * epoll_wait, and an IOCB_CMD_POLL on the loop's epoll fd, kept armed in
 * the same io_context, ends that sleep when any fd of the loop turns
 * readable.  A completion that arrives while the loop sleeps then costs
 * one system call (io_getevents returns it) instead of three (epoll_wait,
 * the eventfd's read, and the eventfd's signalling in the kernel on every
 * completion); what io_getevents took waits in @evbuf for the loop's
 * check, which runs it the way the eventfd handler does.  Detached (a
 * GLib source is created for the loop, or the loop is handed to another
 * thread), the state goes back to the eventfd for good; requests already
 * in flight without it are swept by a timer.
 * STRATA_AIO_NATIVE_EVENTFD=1 keeps the eventfd always (tests, A/B runs).
 *
 * The kernel context holds at most depth requests; more wait in FIFO order
 * rather than fail, and -EAGAIN from io_submit (the kernel ran short) leaves
 * the rest queued for the next completion, or a short timer when nothing is
 * in flight to complete.
 */
#include <errno.h>
#include <libaio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include "block/aio-engine.h"

#define LAIO_DEFAULT_DEPTH 128
#define LAIO_EVENTS_PER_CALL 64
#define LAIO_RETRY_NS (1000 * 1000)
/* After a detach: how often requests in flight without the eventfd are
 * looked for. */
#define LAIO_SWEEP_NS (1000 * 1000)
/* The bit io_set_eventfd() sets (linux/aio_abi.h; libaio spells it out). */
#define LAIO_FLAG_RESFD (1u << 0)

/*
 * The header of the completion ring that io_setup maps at the io_context_t
 * address (struct aio_ring in the kernel's fs/aio.c, unchanged since 2.6.x;
 * not in the uapi headers, hence our own copy).  The kernel writes events
 * at tail and publishes tail after them (smp_wmb); the reader owns head.
 * Both stay below nr.
 */
typedef struct LaioRing {
    unsigned id;
    unsigned nr;                /* events in the ring */
    unsigned head;              /* next event to read: written by us */
    unsigned tail;              /* next event the kernel writes */
    unsigned magic;
    unsigned compat_features;
    unsigned incompat_features;
    unsigned header_length;     /* sizeof(LaioRing) */
    struct io_event events[];
} LaioRing;
G_STATIC_ASSERT(sizeof(LaioRing) == 32);

#define LAIO_RING_MAGIC 0xa10a10a1u
/* AIO_RING_INCOMPAT_FEATURES: a ring with any of these set has a layout
 * we do not know. */
#define LAIO_RING_INCOMPAT_KNOWN 0u

typedef struct LaioReq {
    struct iocb iocb;
    Coroutine *co;
    int ret;
    bool done;
    unsigned early_gen;         /* aio_early_gen() when submitted */
    struct LaioReq *next;       /* wait list */
} LaioReq;

typedef struct LaioState {
    Loop *loop;
    io_context_t io_ctx;
    int efd;
    unsigned depth;
    unsigned inflight;          /* accepted by io_submit, not yet reaped */
    struct iocb **pending;      /* prepared, not yet submitted: [depth] */
    unsigned npending;
    LaioReq *wait_head;         /* beyond depth, FIFO */
    LaioReq **wait_tail;
    LoopTimer retry_timer;
    LaioRing *ring;             /* NULL: reap with io_getevents */
    unsigned ring_nr;           /* ring->nr, read once */
    AioEngineStats stats;
    AioEarly early;             /* block/aio-engine.h */

    /* Waiting in io_getevents (see "Waiting" above) */
    LoopWaiter waiter;
    bool self_wait;             /* the loop's waiter: iocbs without eventfd */
    bool poll_armed;            /* poll_iocb is in the kernel */
    struct iocb poll_iocb;      /* IOCB_CMD_POLL on the loop's epoll fd */
    struct io_event evbuf[LAIO_EVENTS_PER_CALL];  /* taken by the wait */
    unsigned evbuf_head, evbuf_len;
    unsigned quiet;             /* after a detach: in flight without eventfd */
    LoopTimer sweep_timer;
} LaioState;

/*
 * One spare kernel context of the default depth, kept per process.
 * io_destroy() waits for an RCU grace period (~50 ms here), which made
 * every short-lived tool (strata-io) pay for it twice: once for the
 * availability probe, once at close.  Instead the probe's context becomes
 * the spare, the first state of the default depth takes it, and a state
 * freed with its context idle gives it back; only a second concurrent
 * state creates (and destroys) a context of its own.  The process's exit
 * tears the spare down with the address space.
 */
static io_context_t laio_spare;
static unsigned laio_setups;    /* io_setup calls that succeeded */

static int laio_setup(unsigned depth, io_context_t *io_ctx)
{
    *io_ctx = 0;
    if (depth == LAIO_DEFAULT_DEPTH) {
        *io_ctx = g_atomic_pointer_exchange(&laio_spare, NULL);
        if (*io_ctx) {
            return 0;
        }
    }
    int ret = io_setup(depth, io_ctx);
    if (ret == 0) {
        g_atomic_int_inc(&laio_setups);
    }
    return ret;
}

/* Give back @io_ctx, which has nothing in flight. */
static void laio_release(unsigned depth, io_context_t io_ctx)
{
    if (depth != LAIO_DEFAULT_DEPTH ||
        !g_atomic_pointer_compare_and_exchange(&laio_spare, NULL, io_ctx)) {
        io_destroy(io_ctx);
    }
}

unsigned aio_linux_test_setup_calls(void)
{
    return g_atomic_int_get(&laio_setups);
}

bool aio_linux_test_self_wait(void *state)
{
    return ((LaioState *)state)->self_wait;
}

static int laio_probe(void)
{
    io_context_t io_ctx;
    int ret = laio_setup(LAIO_DEFAULT_DEPTH, &io_ctx);
    if (ret == 0) {
        laio_release(LAIO_DEFAULT_DEPTH, io_ctx);
    }
    return ret;
}

static bool laio_available(const char **why)
{
    /* 0 untried, 1 usable, -errno from io_setup. */
    static int result;
    int known = aio_engine_probe_once(&result, laio_probe);

    if (known > 0) {
        return true;
    }
    if (why) {
        switch (-known) {
        case ENOSYS:
            *why = "io_setup: Function not implemented";
            break;
        case EAGAIN:
            *why = "io_setup: Resource temporarily unavailable "
                   "(fs.aio-max-nr reached)";
            break;
        case EPERM:
            *why = "io_setup: Operation not permitted (seccomp?)";
            break;
        default:
            *why = "io_setup failed";
            break;
        }
    }
    return false;
}

static LaioReq *laio_req_of(struct iocb *iocb)
{
    return (LaioReq *)((char *)iocb - offsetof(LaioReq, iocb));
}

/*
 * Wake the coroutine of @req, which is done, from a path that must not
 * enter coroutines (the submission path: it may run inside a submitting
 * coroutine when no defer section is open).  The request that belongs to
 * the running coroutine just sees done and never yields; any other is
 * woken through the loop, never entered from here.
 */
static void laio_wake_done(LaioState *s, LaioReq *req)
{
    if (req->co != co_self()) {
        if (!co_get_loop(req->co)) {
            /* Created before the thread had a loop; it runs in ours. */
            co_set_loop(req->co, s->loop);
        }
        loop_co_wake(req->co);
    }
}

/* Finish @req with @ret from the submission path (io_submit refused it). */
static void laio_fail(LaioState *s, LaioReq *req, int ret)
{
    s->stats.completions++;
    req->ret = ret;
    req->done = true;
    laio_wake_done(s, req);
}

/*
 * The user-space ring of @io_ctx if we know its layout, else NULL.
 * STRATA_AIO_NATIVE_NO_USER_RING=1 forces the io_getevents fallback, so
 * that the tests can cover it on kernels whose ring we do know.
 */
static LaioRing *laio_ring_get(io_context_t io_ctx)
{
    LaioRing *ring = (LaioRing *)io_ctx;

    if (aio_engine_env_flag("STRATA_AIO_NATIVE_NO_USER_RING")) {
        return NULL;
    }
    if (!ring || ring->magic != LAIO_RING_MAGIC ||
        (ring->incompat_features & ~LAIO_RING_INCOMPAT_KNOWN) ||
        ring->header_length != sizeof(LaioRing) || ring->nr == 0) {
        return NULL;
    }
    return ring;
}

/*
 * Take up to @max completed events into @out (copied: the ring slots are
 * the kernel's again once head moves) without blocking.  Returns how many.
 */
static int laio_pop_events(LaioState *s, struct io_event *out, int max)
{
    if (s->evbuf_head < s->evbuf_len) {
        /* Taken by the wait before anything now in the ring. */
        int n = MIN((int)(s->evbuf_len - s->evbuf_head), max);
        memcpy(out, &s->evbuf[s->evbuf_head], n * sizeof(*out));
        s->evbuf_head += n;
        return n;
    }
    if (s->ring) {
        LaioRing *ring = s->ring;
        unsigned head = ring->head;
        /* Acquire: the events before tail are written when we see it. */
        unsigned tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
        int n = 0;

        if (head == tail) {
            return 0;
        }
        g_assert(head < s->ring_nr && tail < s->ring_nr);
        while (head != tail && n < max) {
            out[n++] = ring->events[head];
            head = head + 1 == s->ring_nr ? 0 : head + 1;
        }
        /* Release: our copies are done before the kernel may reuse the
         * slots (it reads head when it refills its free-slot count). */
        __atomic_store_n(&ring->head, head, __ATOMIC_RELEASE);
        return n;
    }

    struct timespec zero = { 0, 0 };
    int n;
    do {
        n = io_getevents(s->io_ctx, 0, max, out, &zero);
    } while (n == -EINTR);
    return n > 0 ? n : 0;
}

/* Record the result of @ev in its request; the caller wakes or enters the
 * request's coroutine.  NULL for the poll on the loop's epoll fd, which
 * only needs arming again. */
static LaioReq *laio_complete(LaioState *s, const struct io_event *ev)
{
    if (G_UNLIKELY(ev->obj == &s->poll_iocb)) {
        s->poll_armed = false;
        return NULL;
    }

    LaioReq *req = laio_req_of(ev->obj);
    aio_early_reaped(&s->early, req->early_gen);
    /* res is an unsigned long holding bytes or -errno. */
    long res = (long)ev->res;

    if (G_UNLIKELY(s->quiet) && !(req->iocb.u.c.flags & LAIO_FLAG_RESFD)) {
        s->quiet--;
    }
    g_assert(s->inflight > 0);
    s->inflight--;
    s->stats.completions++;
    req->ret = (int)aio_engine_apply_short(AIO_ENGINE_NATIVE, res);
    req->done = true;
    return req;
}

/*
 * Right after io_submit: take what already completed from the ring and wake
 * its coroutines (see the top of the file for why not enter them).  Only
 * with the user-space ring: with io_getevents this would be one more system
 * call for every request that does not complete inline.
 */
static void laio_reap_after_submit(LaioState *s)
{
    bool found = false;

    while (s->inflight > 0) {
        struct io_event events[LAIO_EVENTS_PER_CALL];
        int n = laio_pop_events(s, events, LAIO_EVENTS_PER_CALL);

        for (int i = 0; i < n; i++) {
            LaioReq *req = laio_complete(s, &events[i]);
            if (req) {
                laio_wake_done(s, req);
            }
        }
        found |= n > 0;
        if (n < LAIO_EVENTS_PER_CALL) {
            break;
        }
    }
    if (found) {
        s->stats.reap_batches++;
    }
}

/* Move waiting requests into the room there is and submit what is
 * pending; true if anything went to the kernel. */
static bool laio_submit_pending(LaioState *s)
{
    bool submitted = false;

    while (s->wait_head && s->inflight + s->npending < s->depth) {
        LaioReq *req = s->wait_head;
        s->wait_head = req->next;
        if (!s->wait_head) {
            s->wait_tail = &s->wait_head;
        }
        req->next = NULL;
        s->pending[s->npending++] = &req->iocb;
    }

    /* What goes out now carries this submission's stamp, also requests
     * that waited for room or were left over after -EAGAIN. */
    for (unsigned i = 0; i < s->npending; i++) {
        laio_req_of(s->pending[i])->early_gen = aio_early_gen(&s->early);
    }
    aio_early_flush_begin(&s->early, s->npending, s->inflight);
    while (s->npending > 0) {
        int ret = io_submit(s->io_ctx, s->npending, s->pending);

        if (ret > 0) {
            s->stats.syscalls++;
            if ((uint64_t)ret > s->stats.max_batch) {
                s->stats.max_batch = ret;
            }
            s->inflight += ret;
            s->npending -= ret;
            memmove(s->pending, s->pending + ret,
                    s->npending * sizeof(s->pending[0]));
            submitted = true;
            continue;
        }
        if (ret == -EAGAIN || ret == 0) {
            /* Kernel memory or event slots ran short: keep the iocbs and
             * try again after the next completion, or on a timer when no
             * completion is coming. */
            if (s->inflight == 0) {
                loop_timer_mod(&s->retry_timer, clock_ns() + LAIO_RETRY_NS);
            }
            break;
        }
        if (ret == -EINTR) {
            continue;
        }
        /* io_submit fails the call only for its first iocb (bad fd, bad
         * opcode or flags, EFAULT): that request gets the error, and the
         * rest are submitted on. */
        LaioReq *req = laio_req_of(s->pending[0]);
        s->npending--;
        memmove(s->pending, s->pending + 1,
                s->npending * sizeof(s->pending[0]));
        laio_fail(s, req, (int)aio_engine_apply_short(AIO_ENGINE_NATIVE, ret));
    }
    return submitted;
}

static void laio_flush(void *opaque)
{
    LaioState *s = opaque;

    while (laio_submit_pending(s) && s->ring) {
        unsigned before = s->inflight;

        laio_reap_after_submit(s);
        aio_early_flush_end(&s->early);
        /* Completions reaped here made room that no later event announces
         * (a waiter's requests carry no eventfd): fill it now. */
        if (s->inflight == before || (!s->wait_head && !s->npending)) {
            break;
        }
    }
}

static void laio_retry_cb(void *opaque)
{
    LaioState *s = opaque;

    s->stats.retries++;
    laio_flush(s);
}

/* Enter the coroutines of everything completed; true if there was any. */
static bool laio_run_completions(LaioState *s)
{
    bool found = false;

    loop_defer_begin(s->loop);
    for (;;) {
        struct io_event events[LAIO_EVENTS_PER_CALL];
        int n = laio_pop_events(s, events, LAIO_EVENTS_PER_CALL);

        if (n == 0) {
            break;
        }
        /* All n are copied out of the ring before the first coroutine
         * runs (it may submit, and with aio-max-batch flush and reap). */
        CoList run = CO_LIST_INIT;
        for (int i = 0; i < n; i++) {
            LaioReq *req = laio_complete(s, &events[i]);
            if (req) {
                found = true;
                co_list_append(&run, req->co);
            }
        }
        co_list_enter(&run);
        if (n < LAIO_EVENTS_PER_CALL) {
            break;
        }
    }
    if (found) {
        s->stats.reap_batches++;
    }
    if (s->npending > 0 || s->wait_head) {
        loop_defer_call(s->loop, laio_flush, s);
    }
    loop_defer_end(s->loop);
    return found;
}

static void laio_on_readable(void *opaque)
{
    LaioState *s = opaque;
    uint64_t count;

    /* Reset the counter first: a completion that lands while we reap
     * makes the fd readable again, so none is missed. */
    if (read(s->efd, &count, sizeof(count)) < 0) {
        /* EAGAIN: a spurious wake-up; the events are looked at anyway. */
    }
    laio_run_completions(s);
}

/* ---- the loop's waiter --------------------------------------------------- */

/* Whether the poll on the epoll fd has completed, among the events the
 * ring holds now (looked at, not taken). */
static bool laio_ring_has_poll(LaioState *s)
{
    LaioRing *ring = s->ring;
    unsigned head = ring->head;
    unsigned tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);

    for (; head != tail; head = head + 1 == s->ring_nr ? 0 : head + 1) {
        if (ring->events[head].obj == &s->poll_iocb) {
            return true;
        }
    }
    return false;
}

static int laio_arm_poll(LaioState *s, int epfd)
{
    struct iocb *p = &s->poll_iocb;
    int ret;

    io_prep_poll(p, epfd, POLLIN);
    do {
        ret = io_submit(s->io_ctx, 1, &p);
    } while (ret == -EINTR);
    if (ret == 1) {
        s->poll_armed = true;
        return 0;
    }
    return ret < 0 ? ret : -EAGAIN;
}

/* Events in the user-space completion ring. */
static bool laio_ring_nonempty(void *opaque)
{
    LaioState *s = opaque;

    return s->ring->head != __atomic_load_n(&s->ring->tail, __ATOMIC_ACQUIRE);
}

/* A quarter of what is in flight in the user-space completion ring
 * (nothing is reaped while the waiter spins). */
static bool laio_ring_has_batch(void *opaque)
{
    LaioState *s = opaque;
    unsigned head = s->ring->head;
    unsigned tail = __atomic_load_n(&s->ring->tail, __ATOMIC_ACQUIRE);

    return (tail >= head ? tail - head : tail + s->ring_nr - head) >= s->inflight / 4;
}

static int laio_wait(void *opaque, int epfd, int64_t timeout_ns)
{
    LaioState *s = opaque;

    if (!s->poll_armed) {
        /* Checked for readiness when armed: if the epoll set already has
         * events, the poll completes at once, into the ring. */
        int ret = laio_arm_poll(s, epfd);
        if (ret < 0) {
            /* Out of event slots: requests are in flight, and their
             * completions end the sleep; the epoll set is looked at then. */
            g_assert(ret == -EAGAIN && s->inflight > 0);
        }
    }
    if (s->evbuf_head < s->evbuf_len || laio_ring_nonempty(s)) {
        /* Arrived since the loop's last look: no sleep. */
        return laio_ring_has_poll(s) || !s->poll_armed;
    }
    /* A short spin first (block/aio-engine.h), for a quarter of what is
     * in flight: stopping at the first event would reap them one by one
     * as the worker finishes them. */
    int64_t spin = aio_spin_ns(s->inflight, timeout_ns);
    if (spin > 0) {
        aio_spin_until(laio_ring_has_batch, s, spin);
        if (laio_ring_nonempty(s)) {
            s->stats.spins_won++;
            return laio_ring_has_poll(s) || !s->poll_armed;
        }
    }

    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tsp = &ts;
    }
    int n = io_getevents(s->io_ctx, 1, LAIO_EVENTS_PER_CALL, s->evbuf, tsp);
    if (n < 0) {
        return n == -EINTR ? -EINTR : 1;
    }
    s->evbuf_head = 0;
    s->evbuf_len = n;
    for (int i = 0; i < n; i++) {
        if (s->evbuf[i].obj == &s->poll_iocb) {
            return 1;
        }
    }
    return 0;
}

static bool laio_check(void *opaque)
{
    LaioState *s = opaque;

    if (s->evbuf_head == s->evbuf_len &&
        s->ring->head == __atomic_load_n(&s->ring->tail, __ATOMIC_RELAXED)) {
        return false;
    }
    return laio_run_completions(s);
}

/* Requests that went out without the eventfd before a detach. */
static void laio_sweep_cb(void *opaque)
{
    LaioState *s = opaque;

    laio_run_completions(s);
    if (s->quiet) {
        loop_timer_mod(&s->sweep_timer, clock_ns() + LAIO_SWEEP_NS);
    }
}

/* Stop the poll on the epoll fd and take its event, so that the context
 * is idle again (it may become the process's spare). */
static void laio_disarm_poll(LaioState *s)
{
    struct io_event ev;

    if (!s->poll_armed) {
        return;
    }
    for (unsigned i = s->evbuf_head; i < s->evbuf_len; i++) {
        if (s->evbuf[i].obj == &s->poll_iocb) {
            /* Taken by the last wait: done already.  Its entry stays for
             * laio_complete, which ignores it. */
            s->poll_armed = false;
            return;
        }
    }
    /* The event is delivered through the ring either way (-EINPROGRESS). */
    io_cancel(s->io_ctx, &s->poll_iocb, &ev);
    while (s->poll_armed) {
        struct io_event events[LAIO_EVENTS_PER_CALL];
        struct timespec ts = { 1, 0 };
        int n = io_getevents(s->io_ctx, 1, LAIO_EVENTS_PER_CALL, events, &ts);

        if (n == -EINTR) {
            continue;
        }
        if (n <= 0) {
            g_error("native AIO: the poll on the loop's epoll fd did not "
                    "finish after its cancel: %s", n ? g_strerror(-n) : "timed out");
        }
        for (int i = 0; i < n; i++) {
            if (events[i].obj == &s->poll_iocb) {
                s->poll_armed = false;
            } else if (s->evbuf_len < LAIO_EVENTS_PER_CALL) {
                /* Keep a request's completion for the loop (only a
                 * detach with requests in flight gets here). */
                s->evbuf[s->evbuf_len++] = events[i];
            } else {
                g_error("native AIO: no room for a completion while "
                        "disarming");
            }
        }
    }
}

static void laio_detach(void *opaque)
{
    LaioState *s = opaque;

    s->self_wait = false;
    laio_disarm_poll(s);
    /* Queued requests take the eventfd now; those in flight are swept. */
    for (unsigned i = 0; i < s->npending; i++) {
        io_set_eventfd(s->pending[i], s->efd);
    }
    for (LaioReq *r = s->wait_head; r; r = r->next) {
        io_set_eventfd(&r->iocb, s->efd);
    }
    s->quiet = s->inflight;
    loop_set_fd_handler(s->loop, s->efd, laio_on_readable, NULL, s);
    if (s->quiet || s->evbuf_head < s->evbuf_len) {
        loop_timer_mod(&s->sweep_timer, clock_ns());
    }
}

/* Whether STRATA_AIO_NATIVE_EVENTFD asks for the eventfd always. */
static bool laio_eventfd_forced(void)
{
    return aio_engine_env_flag("STRATA_AIO_NATIVE_EVENTFD");
}

static void *laio_ctx_init(Loop *loop, StrataError **errp)
{
    LaioState *s = g_new0(LaioState, 1);
    aio_early_init(&s->early);

    s->depth = aio_engine_queue_depth(AIO_ENGINE_NATIVE, LAIO_DEFAULT_DEPTH);
    int ret = laio_setup(s->depth, &s->io_ctx);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "io_setup(%u)", s->depth);
        g_free(s);
        return NULL;
    }
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) {
        error_setg_errno(errp, errno, "eventfd");
        laio_release(s->depth, s->io_ctx);
        g_free(s);
        return NULL;
    }
    s->ring = laio_ring_get(s->io_ctx);
    s->ring_nr = s->ring ? s->ring->nr : 0;
    s->loop = loop;
    s->pending = g_new(struct iocb *, s->depth);
    s->wait_tail = &s->wait_head;
    loop_timer_init(&s->retry_timer, s->loop, laio_retry_cb, s);
    loop_timer_init(&s->sweep_timer, s->loop, laio_sweep_cb, s);
    s->waiter = (LoopWaiter) {
        .wait = laio_wait, .check = laio_check, .detach = laio_detach,
        .opaque = s,
    };
    s->self_wait = s->ring && !laio_eventfd_forced() &&
                   loop_claim_waiter(s->loop, &s->waiter);
    if (!s->self_wait) {
        loop_set_fd_handler(s->loop, s->efd, laio_on_readable, NULL, s);
    }
    return s;
}

static void laio_ctx_cleanup(void *opaque)
{
    LaioState *s = opaque;

    /* The context closes (and so drains) every node first. */
    g_assert(s->inflight == 0 && s->npending == 0 && !s->wait_head);
    loop_timer_del(&s->retry_timer);
    loop_timer_del(&s->sweep_timer);
    if (s->self_wait) {
        loop_release_waiter(s->loop, &s->waiter);
    }
    laio_disarm_poll(s);
    loop_set_fd_handler(s->loop, s->efd, NULL, NULL, NULL);
    close(s->efd);
    laio_release(s->depth, s->io_ctx);
    g_free(s->pending);
    g_free(s);
}

static bool laio_supports_fua(void *opaque)
{
    /* aio_rw_flags exists since Linux 4.13, RWF_DSYNC since 4.7. */
    return true;
}

static int laio_co_submit(LaioState *s, LaioReq *req)
{
    req->co = co_self();
    g_assert(req->co);
    if (!s->self_wait) {
        io_set_eventfd(&req->iocb, s->efd);
    }
    s->stats.submits++;

    /* FIFO: nobody overtakes a request that waits for room. */
    if (!s->wait_head && s->inflight + s->npending < s->depth) {
        s->pending[s->npending++] = &req->iocb;
    } else {
        s->stats.queue_waits++;
        *s->wait_tail = req;
        s->wait_tail = &req->next;
    }
    loop_defer_call(s->loop, laio_flush, s);
    unsigned max_batch = loop_get_aio_max_batch(s->loop);
    if (max_batch) {
        if ((unsigned)s->npending >= max_batch) {
            laio_flush(s);
        }
    } else if (aio_early_submit_now(&s->early, s->npending)) {
        s->stats.early++;
        laio_flush(s);
    }

    while (!req->done) {
        co_yield();
    }
    return req->ret;
}

/*
 * One-element requests go as IOCB_CMD_PREAD/PWRITE rather than the
 * vectored commands, as in the io_uring engine: the kernel then copies no
 * iovec in (copy_iovec_from_user was 1.3% of a depth-32 profile on tmpfs).
 * STRATA_AIO_NATIVE_VECTORED_ONLY=1 turns it off, to measure it again.
 */
static bool laio_plain_ops(void)
{
    static int plain = -1;

    if (G_UNLIKELY(plain < 0)) {
        __atomic_store_n(&plain,
                         !aio_engine_env_flag("STRATA_AIO_NATIVE_VECTORED_ONLY"),
                         __ATOMIC_RELAXED);
    }
    return __atomic_load_n(&plain, __ATOMIC_RELAXED);
}

static int laio_co_preadv(void *opaque, int fd, int64_t offset,
                          const struct iovec *iov, int niov, int flags)
{
    LaioReq req = { 0 };

    g_assert(!(flags & ~(AIO_FUA | AIO_NO_NOWAIT)));
    if (niov == 1 && laio_plain_ops()) {
        io_prep_pread(&req.iocb, fd, iov[0].iov_base, iov[0].iov_len, offset);
    } else {
        io_prep_preadv(&req.iocb, fd, iov, niov, offset);
    }
    return laio_co_submit(opaque, &req);
}

static int laio_co_pwritev(void *opaque, int fd, int64_t offset,
                           const struct iovec *iov, int niov, int flags)
{
    LaioReq req = { 0 };
    int rwf = (flags & AIO_FUA) ? RWF_DSYNC : 0;

    g_assert(!(flags & ~(AIO_FUA | AIO_NO_NOWAIT)));
    if (niov == 1 && laio_plain_ops()) {
        io_prep_pwrite(&req.iocb, fd, iov[0].iov_base, iov[0].iov_len,
                       offset);
        req.iocb.aio_rw_flags = rwf;
    } else {
        io_prep_pwritev2(&req.iocb, fd, iov, niov, offset, rwf);
    }
    return laio_co_submit(opaque, &req);
}

static void laio_get_stats(void *opaque, AioEngineStats *out)
{
    LaioState *s = opaque;
    *out = s->stats;
}

const AioEngineOps aio_linux_ops = {
    .name = "native",
    .id = AIO_ENGINE_NATIVE,
    .available = laio_available,
    .ctx_init = laio_ctx_init,
    .ctx_cleanup = laio_ctx_cleanup,
    .supports_fua = laio_supports_fua,
    .co_preadv = laio_co_preadv,
    .co_pwritev = laio_co_pwritev,
    .get_stats = laio_get_stats,
};
