/*
 * Per-thread event loop (SPDX-License-Identifier: MIT)
 *
 * One iteration (loop_run_once) is, inside defer sections:
 *
 *   bottom halves -> coroutine wake-ups -> expired timers      (section 1)
 *   flush deferred submissions
 *   epoll_wait (timeout 0, or until the next timer when blocking; or, to
 *     block, the wait of the loop's waiter: loop_claim_waiter)
 *   fd handlers -> the waiter's check -> expired timers -> bottom halves
 *     -> wake-ups                                              (section 2)
 *
 * Deferred submissions are flushed before the loop may block: an engine
 * that queued a request and then waited for its completion with unsubmitted
 * work would deadlock.
 *
 * Cross-thread notification follows the classic "notify_me" handshake: the
 * loop announces that it is about to sleep (notify_me > 0), then re-checks
 * its work lists; a producer publishes its work, then writes the eventfd
 * only if the loop announced sleep.  Both sides order their store before
 * their load with a full fence, so at least one of them sees the other.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <glib.h>
#include "util/loop.h"
#include "util/thread.h"
#include "util/thread-pool.h"

/*
 * A run of iterations that made progress before polling skips epoll_wait,
 * but not forever: a bottom half that keeps rescheduling itself must not
 * starve fd handlers.
 */
#define LOOP_MAX_POLL_SKIPS 8
#define LOOP_MAX_EVENTS 64
#define LOOP_MAX_DEFER 64

/* A sentinel that ends the intrusive wake lists, so that "linked" can be
 * told apart from "last in the list" and a double wake-up asserts. */
#define WAKE_LIST_END CO_LIST_END

typedef struct FdHandler {
    int fd;
    LoopCallback *on_read;
    LoopCallback *on_write;
    void *opaque;
    bool deleted;
    bool always_ready;          /* epoll refused it: see loop_set_fd_handler */
    struct FdHandler *next_zombie;
} FdHandler;

enum {
    BH_PENDING   = 1u << 0,   /* linked on the loop's pending stack */
    BH_SCHEDULED = 1u << 1,   /* run the callback when popped */
    BH_DELETED   = 1u << 2,   /* free when popped */
    BH_ONESHOT   = 1u << 3,   /* free after the callback ran */
};

struct LoopBH {
    Loop *loop;
    LoopCallback *cb;
    void *opaque;
    atomic_uint flags;
    LoopBH *next;             /* pending stack link, valid with BH_PENDING */
};

struct LoopPoller {
    bool (*poll)(void *opaque);
    LoopCallback *begin;
    bool (*end)(void *opaque);      /* true: its last look did work */
    void *opaque;
    bool dead;                      /* removed during a polling phase */
    LoopPoller *next;
};

/* The first poll time once polling starts to pay (QEMU's too). */
#define LOOP_POLL_START_NS 4000
/* A wait shorter than this many times the poll limit still counts as one
 * that polling may catch (loop_poll_adapt). */
#define LOOP_POLL_HORIZON 4

typedef struct DeferEntry {
    LoopCallback *fn;
    void *opaque;
} DeferEntry;

struct Loop {
    /* thread_self_id() of the thread that may run the loop, 0 while it is
     * being handed over.  Written by that thread only; read by any. */
    _Atomic uint64_t owner;
    int epfd;
    int wake_fd;
    FdHandler wake_handler;
    GHashTable *fd_handlers;        /* fd -> FdHandler */
    GPtrArray *always_ready;        /* FdHandlers epoll refused */
    GMutex release_lock;            /* guards release_hooks */
    LoopReleaseHook *release_hooks; /* loop_add_release_hook() */
    FdHandler *zombies;             /* removed during dispatch, freed after */
    unsigned depth;                 /* loop_run_once() nesting */
    unsigned poll_skips;

    /* Bottom halves: a lock-free LIFO of pending BHs, reversed when run. */
    _Atomic(LoopBH *) bh_pending;
    atomic_int bh_count;            /* live (not yet freed) BHs */

    /* Coroutine wake-ups: a FIFO only the loop's thread touches, and a
     * lock-free LIFO other threads push onto. */
    CoList wakes;               /* owner-only: woken, to run next pass */
    _Atomic(Coroutine *) remote_wakes;

    LoopTimer *timers;              /* armed, sorted by expire_ns */
    unsigned ntimers;

    atomic_int notify_me;
    atomic_bool notified;

    unsigned defer_depth;
    unsigned ndefer;
    DeferEntry defer[LOOP_MAX_DEFER];

    ThreadPool *pool;
    unsigned aio_max_batch;         /* 0: one batch per iteration */

    LoopPoller *pollers;            /* loop thread only */
    bool busy_polling;              /* in loop_busy_poll() */
    bool poll_started;              /* begin called, end not yet */
    int64_t poll_max_ns, poll_grow, poll_shrink;
    int64_t poll_ns;                /* current poll time, adaptive */
    void *user;                     /* loop_set_user() */

    const LoopWaiter *waiter;       /* loop_claim_waiter(), loop thread */
    bool gsource;                   /* a GLib context polls epfd */
};

static __thread Loop *tls_running_loop;
static __thread Loop *tls_attached_loop;
/* loop_current()->user, kept up to date where the two above change: the
 * request path reads it once per node (util/loop.h). */
static __thread void *loop_tls_current_user;

static inline void loop_tls_update(void)
{
    Loop *loop = tls_running_loop ? tls_running_loop : tls_attached_loop;
    loop_tls_current_user = loop ? loop->user : NULL;
}

/* 1: epoll_pwait2 works, 0: unknown, -1: not available. */
static atomic_int have_epoll_pwait2;

int64_t clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void *loop_current_user(void)
{
    return loop_tls_current_user;
}

void loop_set_user(Loop *loop, void *user)
{
    loop->user = user;
    loop_tls_update();
}

void *loop_get_user(const Loop *loop)
{
    return loop->user;
}


Loop *loop_current(void)
{
    return tls_running_loop ? tls_running_loop : tls_attached_loop;
}

void loop_attach_current(Loop *loop)
{
    tls_attached_loop = loop;
    loop_tls_update();
}

/* ---- ownership -------------------------------------------------------- */

bool loop_is_owner(const Loop *loop)
{
    /* Relaxed is enough: only this thread can make the answer true, and
     * a handover in progress elsewhere leaves it false either way. */
    return atomic_load_explicit(&loop->owner, memory_order_relaxed) ==
           thread_self_id();
}

void loop_add_release_hook(Loop *loop, LoopReleaseHook *hook)
{
    g_mutex_lock(&loop->release_lock);
    hook->next = loop->release_hooks;
    loop->release_hooks = hook;
    g_mutex_unlock(&loop->release_lock);
}

void loop_remove_release_hook(Loop *loop, LoopReleaseHook *hook)
{
    g_mutex_lock(&loop->release_lock);
    for (LoopReleaseHook **p = &loop->release_hooks; *p; p = &(*p)->next) {
        if (*p == hook) {
            *p = hook->next;
            break;
        }
    }
    g_mutex_unlock(&loop->release_lock);
}

void loop_release(Loop *loop)
{
    assert(loop_is_owner(loop) && "loop_release by a thread that does not own the loop");
    if (loop->waiter) {
        /* Its source may be tied to this thread (a single-issuer ring):
         * back to fd wake-ups, here, before another thread runs the loop.
         * It may claim the role again there. */
        const LoopWaiter *w = loop->waiter;
        loop->waiter = NULL;
        w->detach(w->opaque);
    }
    g_mutex_lock(&loop->release_lock);
    for (LoopReleaseHook *h = loop->release_hooks; h; h = h->next) {
        h->fn(h->opaque);
    }
    g_mutex_unlock(&loop->release_lock);
    /* Release: what the old owner did happens before the new owner's
     * loop_acquire(). */
    atomic_store_explicit(&loop->owner, 0, memory_order_release);
}

void loop_acquire(Loop *loop)
{
    uint64_t none = 0;
    bool ok = atomic_compare_exchange_strong_explicit(
        &loop->owner, &none, thread_self_id(),
        memory_order_acquire, memory_order_relaxed);
    assert(ok && "loop_acquire: the loop still has an owner");
    (void)ok;
}

/* ---- wake-up ---------------------------------------------------------- */

void loop_wake(Loop *loop)
{
    /* Pairs with the fence in loop_poll(): our work is published before we
     * look at notify_me, the loop's notify_me before it looks at work. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&loop->notify_me, memory_order_relaxed) &&
        !atomic_exchange(&loop->notified, true)) {
        uint64_t one = 1;
        ssize_t ret;
        do {
            ret = write(loop->wake_fd, &one, sizeof(one));
        } while (ret < 0 && errno == EINTR);
        /* EAGAIN means the counter is saturated: the loop is woken anyway. */
        assert(ret == sizeof(one) || errno == EAGAIN);
    }
}

/* Publishing work from the loop's own thread needs no eventfd: the loop is
 * not sleeping while its thread runs our caller. */
static inline void loop_kick(Loop *loop)
{
    if (!loop_is_owner(loop)) {
        loop_wake(loop);
    }
}

static void loop_wake_fd_read(void *opaque)
{
    Loop *loop = opaque;
    uint64_t val;

    /* Clear the flag before draining, so that a producer that finds it
     * clear writes again (at worst one spurious wake-up).  And clear it
     * once more after: a producer that set it between the first clear and
     * the read had its write drained by that read, and a flag left set
     * with the counter at zero would make every later producer skip its
     * write: a lost wake-up, and a loop asleep in poll() for good (seen
     * with the GSource under load).  That producer's work was published
     * before its write, so this iteration sees it. */
    atomic_store(&loop->notified, false);
    while (read(loop->wake_fd, &val, sizeof(val)) < 0 && errno == EINTR) {
    }
    atomic_store(&loop->notified, false);
}

/* ---- creation --------------------------------------------------------- */

Loop *loop_new(StrataError **errp)
{
    Loop *loop = g_new0(Loop, 1);

    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        error_setg_errno(errp, errno, "epoll_create1 failed");
        g_free(loop);
        return NULL;
    }
    loop->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (loop->wake_fd < 0) {
        error_setg_errno(errp, errno, "eventfd failed");
        close(loop->epfd);
        g_free(loop);
        return NULL;
    }
    loop->wake_handler = (FdHandler) {
        .fd = loop->wake_fd,
        .on_read = loop_wake_fd_read,
        .opaque = loop,
    };
    struct epoll_event ev = {
        .events = EPOLLIN,
        .data.ptr = &loop->wake_handler,
    };
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wake_fd, &ev) < 0) {
        error_setg_errno(errp, errno, "epoll_ctl on the wake-up eventfd failed");
        close(loop->wake_fd);
        close(loop->epfd);
        g_free(loop);
        return NULL;
    }
    loop->fd_handlers = g_hash_table_new(g_direct_hash, g_direct_equal);
    loop->always_ready = g_ptr_array_new();
    g_mutex_init(&loop->release_lock);
    atomic_init(&loop->owner, thread_self_id());
    return loop;
}

static bool loop_run_bhs(Loop *loop);

void loop_free(Loop *loop)
{
    if (!loop) {
        return;
    }
    assert(loop->depth == 0);
    assert((loop_is_owner(loop) || atomic_load(&loop->owner) == 0) &&
           "loop_free by a thread that does not own the loop");
    if (loop->pool) {
        thread_pool_free(loop->pool);
        loop->pool = NULL;
    }

    /* Reap deleted bottom halves; a scheduled one left here is a bug. */
    LoopBH *bh = atomic_exchange(&loop->bh_pending, NULL);
    while (bh) {
        LoopBH *next = bh->next;
        unsigned flags = atomic_load(&bh->flags);
        assert(!(flags & BH_SCHEDULED) && "loop_free with a scheduled BH");
        if (flags & BH_DELETED) {
            atomic_fetch_sub(&loop->bh_count, 1);
            g_free(bh);
        } else {
            atomic_fetch_and(&bh->flags, ~BH_PENDING);
        }
        bh = next;
    }
    assert(atomic_load(&loop->bh_count) == 0 && "loop_free with live BHs");
    assert(loop->wakes.head == NULL && "loop_free with pending wake-ups");
    assert(atomic_load(&loop->remote_wakes) == NULL &&
           "loop_free with pending wake-ups");
    assert(loop->timers == NULL && "loop_free with armed timers");
    assert(g_hash_table_size(loop->fd_handlers) == 0 &&
           "loop_free with fd handlers");
    assert(loop->defer_depth == 0);
    assert(loop->pollers == NULL && "loop_free with pollers");

    while (loop->zombies) {
        FdHandler *h = loop->zombies;
        loop->zombies = h->next_zombie;
        g_free(h);
    }
    g_hash_table_destroy(loop->fd_handlers);
    g_ptr_array_free(loop->always_ready, TRUE);
    assert(loop->release_hooks == NULL && "loop_free with release hooks");
    g_mutex_clear(&loop->release_lock);
    close(loop->wake_fd);
    close(loop->epfd);
    if (tls_attached_loop == loop) {
        tls_attached_loop = NULL;
        loop_tls_update();
    }
    g_free(loop);
}

/* ---- fd handlers -------------------------------------------------------- */

static void loop_free_handler(Loop *loop, FdHandler *h)
{
    h->deleted = true;
    if (loop->depth > 0) {
        /* An epoll batch being dispatched may still point at it. */
        h->next_zombie = loop->zombies;
        loop->zombies = h;
    } else {
        g_free(h);
    }
}

void loop_set_fd_handler(Loop *loop, int fd, LoopCallback *on_read,
                         LoopCallback *on_write, void *opaque)
{
    FdHandler *h = g_hash_table_lookup(loop->fd_handlers, GINT_TO_POINTER(fd));
    int ret;

    if (!on_read && !on_write) {
        if (h) {
            if (h->always_ready) {
                g_ptr_array_remove_fast(loop->always_ready, h);
            } else {
                /* The fd may already be closed (EBADF): epoll forgot it
                 * then. */
                epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
            }
            g_hash_table_remove(loop->fd_handlers, GINT_TO_POINTER(fd));
            loop_free_handler(loop, h);
        }
        return;
    }

    struct epoll_event ev = {
        .events = (on_read ? EPOLLIN : 0) | (on_write ? EPOLLOUT : 0),
    };
    if (h) {
        ev.data.ptr = h;
        ret = h->always_ready ? 0 : epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev);
    } else {
        h = g_new0(FdHandler, 1);
        h->fd = fd;
        ev.data.ptr = h;
        ret = epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev);
        if (ret < 0 && errno == EPERM) {
            /* A regular file (a daemon's stdin or stdout redirected to
             * one): epoll refuses what poll() reports always ready.  So
             * does the loop: its handlers run on every iteration, and
             * the loop does not sleep while it has any. */
            h->always_ready = true;
            g_ptr_array_add(loop->always_ready, h);
            ret = 0;
        }
        if (ret == 0) {
            g_hash_table_insert(loop->fd_handlers, GINT_TO_POINTER(fd), h);
        }
    }
    /* Only pollable fds (eventfds, pipes, sockets) belong here: anything
     * else is a programming error, not an input error. */
    if (ret < 0) {
        g_error("loop_set_fd_handler(fd %d): epoll_ctl: %s", fd,
                g_strerror(errno));
    }
    h->on_read = on_read;
    h->on_write = on_write;
    h->opaque = opaque;
}

/* ---- bottom halves ------------------------------------------------------ */

LoopBH *loop_bh_new(Loop *loop, LoopCallback *cb, void *opaque)
{
    LoopBH *bh = g_new0(LoopBH, 1);
    bh->loop = loop;
    bh->cb = cb;
    bh->opaque = opaque;
    atomic_init(&bh->flags, 0);
    atomic_fetch_add(&loop->bh_count, 1);
    return bh;
}

/* Set @set in bh->flags; link the BH on the pending stack unless it is
 * already there.  Returns the previous flags. */
static unsigned loop_bh_enqueue(LoopBH *bh, unsigned set)
{
    Loop *loop = bh->loop;
    unsigned old = atomic_fetch_or(&bh->flags, set | BH_PENDING);

    if (!(old & BH_PENDING)) {
        LoopBH *head = atomic_load_explicit(&loop->bh_pending,
                                            memory_order_relaxed);
        do {
            bh->next = head;
        } while (!atomic_compare_exchange_weak_explicit(
                     &loop->bh_pending, &head, bh,
                     memory_order_release, memory_order_relaxed));
    }
    return old;
}

void loop_bh_schedule(LoopBH *bh)
{
    /* Read before publishing: once linked, the loop may run a one-shot BH
     * and free it before we get to look at it again. */
    Loop *loop = bh->loop;
    unsigned old = loop_bh_enqueue(bh, BH_SCHEDULED);
    if (!(old & BH_SCHEDULED)) {
        loop_kick(loop);
    }
}

void loop_bh_cancel(LoopBH *bh)
{
    /* The BH stays linked (if it was); it is skipped when popped. */
    atomic_fetch_and(&bh->flags, ~BH_SCHEDULED);
}

void loop_bh_delete(LoopBH *bh)
{
    if (!bh) {
        return;
    }
    /* Another thread may be pushing it right now, so it cannot be unlinked
     * here: the next BH pass frees it. */
    atomic_fetch_and(&bh->flags, ~BH_SCHEDULED);
    loop_bh_enqueue(bh, BH_DELETED);
}

void loop_oneshot(Loop *loop, LoopCallback *cb, void *opaque)
{
    LoopBH *bh = loop_bh_new(loop, cb, opaque);
    atomic_fetch_or(&bh->flags, BH_ONESHOT);
    loop_bh_schedule(bh);
}

/* Run the BHs that were pending when the pass started, in schedule order.
 * BHs scheduled by these callbacks wait for the next pass. */
static bool loop_run_bhs(Loop *loop)
{
    if (!atomic_load_explicit(&loop->bh_pending, memory_order_relaxed)) {
        return false;
    }
    LoopBH *list = atomic_exchange_explicit(&loop->bh_pending, NULL,
                                            memory_order_acquire);
    LoopBH *fifo = NULL;
    bool ran = false;

    while (list) {
        LoopBH *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    while (fifo) {
        LoopBH *bh = fifo;
        fifo = bh->next;
        /* Read the link before dropping BH_PENDING: from then on another
         * thread may link the BH again. */
        unsigned flags = atomic_fetch_and(&bh->flags,
                                          ~(BH_PENDING | BH_SCHEDULED));
        if (flags & BH_DELETED) {
            atomic_fetch_sub(&loop->bh_count, 1);
            g_free(bh);
            continue;
        }
        if (flags & BH_SCHEDULED) {
            ran = true;
            bh->cb(bh->opaque);
            if (flags & BH_ONESHOT) {
                atomic_fetch_sub(&loop->bh_count, 1);
                g_free(bh);
            }
        }
    }
    return ran;
}

/* ---- coroutine wake-ups -------------------------------------------------- */

void loop_co_wake(Coroutine *co)
{
    Loop *loop = co_get_loop(co);
    Coroutine **link = co_wake_next_ptr(co);

    if (!loop) {
        loop = loop_current();
    }
    assert(loop && "loop_co_wake: coroutine has no home loop");
    assert(*link == NULL && "loop_co_wake: coroutine already scheduled");

    if (loop_is_owner(loop)) {
        /* Only the owner touches the local list: no atomics. */
        co_list_append(&loop->wakes, co);
        return;
    }

    Coroutine *head = atomic_load_explicit(&loop->remote_wakes,
                                           memory_order_relaxed);
    do {
        *link = head ? head : WAKE_LIST_END;
    } while (!atomic_compare_exchange_weak_explicit(
                 &loop->remote_wakes, &head, co,
                 memory_order_release, memory_order_relaxed));
    loop_wake(loop);
}

void loop_co_spawn(Loop *loop, CoroutineEntry *entry, void *opaque)
{
    Coroutine *co = co_create(entry, opaque);
    co_set_loop(co, loop);
    loop_co_wake(co);
}

/* Enter the coroutines woken before the pass started, oldest first. */
static bool loop_run_wakes(Loop *loop)
{
    if (atomic_load_explicit(&loop->remote_wakes, memory_order_relaxed)) {
        Coroutine *list = atomic_exchange_explicit(&loop->remote_wakes, NULL,
                                                   memory_order_acquire);
        Coroutine *fifo = WAKE_LIST_END, *tail = list;

        while (list != WAKE_LIST_END) {
            Coroutine **link = co_wake_next_ptr(list);
            Coroutine *next = *link;
            *link = fifo;
            fifo = list;
            list = next;
        }
        if (loop->wakes.tail) {
            *co_wake_next_ptr(loop->wakes.tail) = fifo;
        } else {
            loop->wakes.head = fifo;
        }
        loop->wakes.tail = tail;
    }

    if (!loop->wakes.head) {
        return false;
    }
    co_list_enter(&loop->wakes);
    return true;
}

/* ---- timers ------------------------------------------------------------- */

void loop_timer_init(LoopTimer *t, Loop *loop, LoopCallback *cb, void *opaque)
{
    *t = (LoopTimer) {
        .loop = loop,
        .cb = cb,
        .opaque = opaque,
        .expire_ns = -1,
    };
}

static void loop_timer_unlink(LoopTimer *t)
{
    Loop *loop = t->loop;
    LoopTimer **p = &loop->timers;

    while (*p != t) {
        assert(*p);
        p = &(*p)->next;
    }
    *p = t->next;
    t->next = NULL;
    t->expire_ns = -1;
    loop->ntimers--;
}

void loop_timer_mod(LoopTimer *t, int64_t expire_ns)
{
    Loop *loop = t->loop;
    LoopTimer **p = &loop->timers;

    assert(expire_ns >= 0);
    if (t->expire_ns >= 0) {
        loop_timer_unlink(t);
    }
    /* After timers with the same deadline: equal deadlines fire in the
     * order they were armed. */
    while (*p && (*p)->expire_ns <= expire_ns) {
        p = &(*p)->next;
    }
    t->expire_ns = expire_ns;
    t->next = *p;
    *p = t;
    loop->ntimers++;
}

void loop_timer_del(LoopTimer *t)
{
    if (t->expire_ns >= 0) {
        loop_timer_unlink(t);
    }
}

bool loop_timer_pending(const LoopTimer *t)
{
    return t->expire_ns >= 0;
}

static bool loop_run_timers(Loop *loop)
{
    if (!loop->timers) {
        return false;
    }
    int64_t now = clock_ns();
    /* A callback that re-arms its timer in the past runs again in the next
     * pass, not forever in this one. */
    unsigned budget = loop->ntimers;
    bool ran = false;

    while (budget-- > 0 && loop->timers && loop->timers->expire_ns <= now) {
        LoopTimer *t = loop->timers;
        loop->timers = t->next;
        t->next = NULL;
        t->expire_ns = -1;
        loop->ntimers--;
        ran = true;
        t->cb(t->opaque);
    }
    return ran;
}

/* Nanoseconds until the next timer (0 if expired), -1 without timers. */
static int64_t loop_timer_timeout_ns(Loop *loop)
{
    if (!loop->timers) {
        return -1;
    }
    int64_t delta = loop->timers->expire_ns - clock_ns();
    return delta > 0 ? delta : 0;
}

/* ---- defer sections ----------------------------------------------------- */

void loop_defer_begin(Loop *loop)
{
    loop->defer_depth++;
}

/* Run the recorded calls.  Runs a copy, so that calls the callbacks make
 * are recorded afresh (inside a section) or run at once (outside). */
static void loop_defer_flush(Loop *loop)
{
    while (loop->ndefer > 0) {
        DeferEntry batch[LOOP_MAX_DEFER];
        unsigned n = loop->ndefer;

        memcpy(batch, loop->defer, n * sizeof(batch[0]));
        loop->ndefer = 0;
        for (unsigned i = 0; i < n; i++) {
            batch[i].fn(batch[i].opaque);
        }
    }
}

void loop_defer_end(Loop *loop)
{
    assert(loop->defer_depth > 0);
    if (--loop->defer_depth == 0) {
        loop_defer_flush(loop);
    }
}

void loop_defer_call(Loop *loop, LoopCallback *fn, void *opaque)
{
    if (loop->defer_depth == 0) {
        fn(opaque);
        return;
    }
    for (unsigned i = 0; i < loop->ndefer; i++) {
        if (loop->defer[i].fn == fn && loop->defer[i].opaque == opaque) {
            return;
        }
    }
    if (loop->ndefer == LOOP_MAX_DEFER) {
        /* Batching is an optimisation: with this many distinct engines in
         * one section, submitting now is correct and cheap enough. */
        fn(opaque);
        return;
    }
    loop->defer[loop->ndefer++] = (DeferEntry) { fn, opaque };
}

/* ---- iteration ----------------------------------------------------------- */

static bool loop_work_pending(Loop *loop)
{
    return atomic_load_explicit(&loop->bh_pending, memory_order_relaxed) ||
           loop->wakes.head ||
           atomic_load_explicit(&loop->remote_wakes, memory_order_relaxed);
}

/* Work is pending, or fds epoll refused (loop_set_fd_handler) are always
 * ready.  The latter are not work for the busy poll (loop_work_pending),
 * which still runs and lets the pollers look before the iteration (those
 * handlers would otherwise starve them, with their notifications left
 * off); they only keep the loop from sleeping. */
static bool loop_must_not_sleep(Loop *loop)
{
    return loop_work_pending(loop) || loop->always_ready->len > 0;
}

static int loop_epoll_wait(Loop *loop, struct epoll_event *events,
                           int64_t timeout_ns)
{
    int ret;

    if (timeout_ns > 0 && atomic_load(&have_epoll_pwait2) >= 0) {
        struct timespec ts = {
            .tv_sec = timeout_ns / 1000000000,
            .tv_nsec = timeout_ns % 1000000000,
        };
        ret = epoll_pwait2(loop->epfd, events, LOOP_MAX_EVENTS, &ts, NULL);
        if (ret >= 0 || errno != ENOSYS) {
            atomic_store(&have_epoll_pwait2, 1);
            return ret;
        }
        /* Kernels before 5.11, or a seccomp filter: milliseconds it is. */
        atomic_store(&have_epoll_pwait2, -1);
    }

    int timeout_ms;
    if (timeout_ns < 0) {
        timeout_ms = -1;
    } else {
        /* Round up: waking early would only spin. */
        int64_t ms = (timeout_ns + 999999) / 1000000;
        timeout_ms = ms > INT_MAX ? INT_MAX : (int)ms;
    }
    return epoll_wait(loop->epfd, events, LOOP_MAX_EVENTS, timeout_ms);
}

/* ---- a source that waits for the loop ----------------------------------- */

bool loop_claim_waiter(Loop *loop, const LoopWaiter *w)
{
    if (!loop_is_owner(loop) || loop->waiter || loop->gsource) {
        return false;
    }
    loop->waiter = w;
    return true;
}

void loop_release_waiter(Loop *loop, const LoopWaiter *w)
{
    if (loop->waiter == w) {
        loop->waiter = NULL;
    }
}

/* Run what the waiter's source has found (see loop_claim_waiter). */
static bool loop_check_waiter(Loop *loop)
{
    const LoopWaiter *w = loop->waiter;

    return w && w->check(w->opaque);
}

/* Sleep for up to @timeout_ns (not 0) in the waiter, and take what the
 * epoll set has if it says there may be something. */
static int loop_waiter_wait(Loop *loop, struct epoll_event *events,
                            int64_t timeout_ns)
{
    int r = loop->waiter->wait(loop->waiter->opaque, loop->epfd, timeout_ns);

    if (r < 0) {
        errno = -r;
        return -1;
    }
    if (r == 0) {
        return 0;
    }
    do {
        r = loop_epoll_wait(loop, events, 0);
    } while (r < 0 && errno == EINTR);
    return r;
}

/* ---- busy polling -------------------------------------------------------- */

LoopPoller *loop_add_poller(Loop *loop, bool (*poll)(void *opaque),
                            LoopCallback *begin, bool (*end)(void *opaque),
                            void *opaque)
{
    LoopPoller *p = g_new0(LoopPoller, 1);

    assert(loop_is_owner(loop));
    *p = (LoopPoller) {
        .poll = poll, .begin = begin, .end = end, .opaque = opaque,
        .next = loop->pollers,
    };
    loop->pollers = p;
    return p;
}

void loop_remove_poller(Loop *loop, LoopPoller *p)
{
    assert(loop_is_owner(loop));
    if (loop->busy_polling) {
        /* A poller's callback removes one (a broken virtqueue): unlinked
         * when the phase ends. */
        p->dead = true;
        return;
    }
    for (LoopPoller **pp = &loop->pollers; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            g_free(p);
            return;
        }
    }
    g_assert_not_reached();
}

static void loop_reap_pollers(Loop *loop)
{
    for (LoopPoller **pp = &loop->pollers; *pp;) {
        LoopPoller *p = *pp;
        if (p->dead) {
            *pp = p->next;
            g_free(p);
        } else {
            pp = &p->next;
        }
    }
}

void loop_set_poll_params(Loop *loop, int64_t max_ns, int64_t grow,
                          int64_t shrink)
{
    loop->poll_max_ns = MAX(max_ns, 0);
    loop->poll_grow = MAX(grow, 0);
    loop->poll_shrink = MAX(shrink, 0);
    loop->poll_ns = MIN(loop->poll_ns, loop->poll_max_ns);
}

int64_t loop_get_poll_ns(const Loop *loop)
{
    return loop->poll_ns;
}

/*
 * Adapt the poll time to a wait of @waited_ns (a fruitless poll, if the
 * loop polled, and the sleep after it) that polling did not end.  The
 * wait counts whole, as in QEMU: an event that comes a little after the
 * poll window grows the window, where counting the sleep alone would
 * keep a window of 512 us against a back end that answers in 700 us
 * (sleeping 188 us each time, so never longer than the window) and the
 * loop would sleep before every completion.
 *
 * QEMU's rule stops polling after any wait longer than the poll limit,
 * on the grounds that polling could not have caught its event.
 * But a wait is longer than the one polling would have seen: it holds
 * the other side's reaction to our sleeping (a vhost-user driver must
 * kick, and our CPU must wake: tens of microseconds on a VM whose idle
 * vCPUs halt), and a peer that waits for us the same way sleeps in turn.
 * Under QEMU's rule both ends of a virtqueue then stop polling for good
 * after one slow round trip, and take turns to sleep: 31 000 sleeps per
 * million null requests at depth 32 (one per batch), at a quarter of the
 * throughput they reach when they keep polling (docs/benchmarks.md).  So
 * only a wait longer than LOOP_POLL_HORIZON poll limits stops polling;
 * one between the limit and that counts as short (the poll time grows,
 * up to the limit).  The CPU this can waste is no larger a share than
 * QEMU's rule wastes at its worst (a poll window of the limit before
 * every sleep of just over it).  Only loops with pollers poll (virtqueues,
 * whose peers react to our sleeping); polling an AIO engine's ring alone
 * was measured and left out (docs/benchmarks.md, run 9).
 */
static void loop_poll_adapt(Loop *loop, int64_t waited_ns)
{
    if (waited_ns / LOOP_POLL_HORIZON > loop->poll_max_ns) {
        loop->poll_ns = loop->poll_shrink ? loop->poll_ns / loop->poll_shrink
                                          : 0;
    } else if (waited_ns > loop->poll_ns) {
        int64_t grown = LOOP_POLL_START_NS;
        if (loop->poll_ns &&
            __builtin_mul_overflow(loop->poll_ns,
                                   loop->poll_grow ? loop->poll_grow : 2,
                                   &grown)) {
            grown = INT64_MAX;      /* poll-grow up to INT64_MAX is valid */
        }
        loop->poll_ns = MIN(grown, loop->poll_max_ns);
    }
}

/* Call every poller's begin or end callback.  Returns true if an end
 * callback's last look did work. */
static bool loop_poll_bracket(Loop *loop, bool begin)
{
    bool found = false;

    loop->busy_polling = true;
    for (LoopPoller *p = loop->pollers; p; p = p->next) {
        if (p->dead) {
            continue;
        }
        if (begin && p->begin) {
            p->begin(p->opaque);
        } else if (!begin && p->end) {
            found |= p->end(p->opaque);
        }
    }
    loop->busy_polling = false;
    loop_reap_pollers(loop);
    loop->poll_started = begin;
    return found;
}

/* Busy-poll for up to the poll time (less if a timer is due sooner).
 * Returns true if a poller found work or other work became pending.  The
 * phase stays open (notifications suppressed) while polling pays: it is
 * closed, with the end callbacks, only before the loop sleeps. */
static bool loop_busy_poll(Loop *loop, int64_t timer_ns)
{
    int64_t budget = loop->poll_ns;
    bool ran = false;

    if (timer_ns >= 0 && timer_ns < budget) {
        budget = timer_ns;
    }
    loop_defer_begin(loop);
    if (!loop->poll_started) {
        loop_poll_bracket(loop, true);
    }
    int64_t now = clock_ns();
    int64_t deadline = budget > INT64_MAX - now ? INT64_MAX : now + budget;
    loop->busy_polling = true;
    do {
        for (LoopPoller *p = loop->pollers; p; p = p->next) {
            if (!p->dead) {
                ran |= p->poll(p->opaque);
            }
        }
        /* Completions of the waiter's source signal no fd. */
        ran |= loop_check_waiter(loop);
    } while (!ran && !loop_work_pending(loop) && clock_ns() < deadline);
    loop->busy_polling = false;
    loop_reap_pollers(loop);
    loop_defer_end(loop);
    return ran || loop_work_pending(loop);
}

/* Run the handlers of the fds epoll refused (regular files), which are
 * always ready; from a copy, since a handler may remove any of them (the
 * removed ones wait as zombies, see loop_free_handler). */
static bool loop_run_always_ready(Loop *loop)
{
    guint n = loop->always_ready->len;

    if (!n) {
        return false;
    }
    FdHandler **ready = g_newa(FdHandler *, n);
    memcpy(ready, loop->always_ready->pdata, n * sizeof(*ready));
    for (guint i = 0; i < n; i++) {
        FdHandler *h = ready[i];
        if (!h->deleted && h->on_read) {
            h->on_read(h->opaque);
        }
        if (!h->deleted && h->on_write) {
            h->on_write(h->opaque);
        }
    }
    return true;
}

/* Poll the fds (blocking only when allowed and nothing is pending) and run
 * their handlers.  Returns true if a caller-visible callback ran. */
static bool loop_poll(Loop *loop, bool blocking)
{
    struct epoll_event events[LOOP_MAX_EVENTS];
    int64_t timeout_ns = 0;
    bool ran = false;
    int n;

    /* When the wait began: the adaptive poll time learns from the whole
     * wait, the polling included (loop_poll_adapt). */
    int64_t wait_start = 0;

    if (blocking && !loop->busy_polling && !loop_work_pending(loop)) {
        if (loop->poll_max_ns > 0 && loop->pollers) {
            wait_start = clock_ns();
        }
        /* Other threads see notify_me == 0 and kick no eventfd: the
         * polling loop looks at their work. */
        if (loop->poll_ns > 0 && loop->pollers &&
            loop_busy_poll(loop, loop_timer_timeout_ns(loop))) {
            ran = true;
            blocking = false;
        } else if (loop->poll_started) {
            /* About to sleep: the pollers ask for notifications again
             * and look once more.  What that look did (a completion
             * entered in place) may be what our caller waits for, with
             * nothing left pending: then do not sleep. */
            loop_defer_begin(loop);
            if (loop_poll_bracket(loop, false)) {
                ran = true;
                blocking = false;
            }
            loop_defer_end(loop);
        }
    }
    if (blocking) {
        atomic_fetch_add(&loop->notify_me, 1);
        atomic_thread_fence(memory_order_seq_cst);
        timeout_ns = loop_must_not_sleep(loop) ? 0
                                               : loop_timer_timeout_ns(loop);
    }
    if (loop->waiter && timeout_ns != 0) {
        n = loop_waiter_wait(loop, events, timeout_ns);
    } else {
        do {
            n = loop_epoll_wait(loop, events, timeout_ns);
        } while (n < 0 && errno == EINTR && timeout_ns == 0);
    }
    if (blocking) {
        atomic_fetch_sub(&loop->notify_me, 1);
    }
    if (blocking && wait_start && timeout_ns != 0) {
        /* Polling did not find the work that ended this sleep (or there
         * was no polling yet): learn from how long the wait took. */
        loop_poll_adapt(loop, clock_ns() - wait_start);
    }
    if (n < 0) {
        /* EINTR from a signal during a blocking wait: a short iteration. */
        assert(errno == EINTR);
        return false;
    }

    /* Dispatch inside a defer section (the wait above must stay outside
     * one, so nothing queued is held across a sleep): submissions made by
     * completion handlers go out together when the section ends. */
    loop_defer_begin(loop);
    for (int i = 0; i < n; i++) {
        FdHandler *h = events[i].data.ptr;
        uint32_t ev = events[i].events;

        if (h->deleted) {
            continue;
        }
        if (h == &loop->wake_handler) {
            h->on_read(h->opaque);
            continue;
        }
        if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && h->on_read) {
            ran = true;
            h->on_read(h->opaque);
        }
        if (!h->deleted && (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) &&
            h->on_write) {
            ran = true;
            h->on_write(h->opaque);
        }
    }
    ran |= loop_run_always_ready(loop);
    ran |= loop_check_waiter(loop);
    loop_defer_end(loop);
    return ran;
}

bool loop_run_once(Loop *loop, bool blocking)
{
    Loop *saved = tls_running_loop;
    bool progress;

    assert(!co_in_coroutine() && "loop_run_once from a coroutine");
    assert(loop_is_owner(loop) && "loop_run_once by a thread that does not own the loop");
    tls_running_loop = loop;
    loop_tls_update();
    loop->depth++;

    loop_defer_begin(loop);
    progress = loop_run_bhs(loop);
    progress |= loop_run_wakes(loop);
    progress |= loop_run_timers(loop);
    loop_defer_end(loop);

    if (progress && loop->poll_skips < LOOP_MAX_POLL_SKIPS) {
        /* Work ran: the caller iterates again soon, skip the syscall. */
        loop->poll_skips++;
    } else {
        /* A nested iteration (a synchronous wait inside a callback) runs
         * inside the caller's section: submit what it queued before
         * sleeping on its completion. */
        loop_defer_flush(loop);
        loop->poll_skips = 0;
        bool ran = loop_poll(loop, blocking && !progress);

        loop_defer_begin(loop);
        ran |= loop_run_timers(loop);
        ran |= loop_run_bhs(loop);
        ran |= loop_run_wakes(loop);
        loop_defer_end(loop);
        progress |= ran;
    }

    if (--loop->depth == 0) {
        while (loop->zombies) {
            FdHandler *h = loop->zombies;
            loop->zombies = h->next_zombie;
            g_free(h);
        }
    }
    tls_running_loop = saved;
    loop_tls_update();
    return progress;
}

void loop_run_while(Loop *loop, bool (*cond)(void *opaque), void *opaque)
{
    while (cond(opaque)) {
        loop_run_once(loop, true);
    }
}

/* ---- thread pool -------------------------------------------------------- */

void loop_set_aio_max_batch(Loop *loop, unsigned max_batch)
{
    loop->aio_max_batch = max_batch;
}

unsigned loop_get_aio_max_batch(const Loop *loop)
{
    return loop->aio_max_batch;
}

ThreadPool *loop_get_thread_pool(Loop *loop)
{
    if (!loop->pool) {
        loop->pool = thread_pool_new(loop, 64, 4096);
    }
    return loop->pool;
}

/* ---- GLib integration ---------------------------------------------------- */

typedef struct LoopSource {
    GSource source;
    Loop *loop;
    gpointer fd_tag;
} LoopSource;

static gboolean loop_source_prepare(GSource *source, gint *timeout)
{
    Loop *loop = ((LoopSource *)source)->loop;

    if (loop_must_not_sleep(loop)) {
        *timeout = 0;
        return TRUE;
    }
    int64_t ns = loop_timer_timeout_ns(loop);
    if (ns == 0) {
        *timeout = 0;
        return TRUE;
    }
    if (ns < 0) {
        *timeout = -1;
    } else {
        int64_t ms = (ns + 999999) / 1000000;
        *timeout = ms > INT_MAX ? INT_MAX : (gint)ms;
    }
    return FALSE;
}

static gboolean loop_source_check(GSource *source)
{
    LoopSource *ls = (LoopSource *)source;

    if (g_source_query_unix_fd(source, ls->fd_tag) & G_IO_IN) {
        return TRUE;
    }
    return loop_must_not_sleep(ls->loop) ||
           loop_timer_timeout_ns(ls->loop) == 0;
}

static gboolean loop_source_dispatch(GSource *source, GSourceFunc callback,
                                     gpointer user_data)
{
    loop_run_once(((LoopSource *)source)->loop, false);
    return G_SOURCE_CONTINUE;
}

static void loop_source_finalize(GSource *source)
{
    atomic_fetch_sub(&((LoopSource *)source)->loop->notify_me, 1);
}

static GSourceFuncs loop_source_funcs = {
    .prepare = loop_source_prepare,
    .check = loop_source_check,
    .dispatch = loop_source_dispatch,
    .finalize = loop_source_finalize,
};

GSource *loop_create_gsource(Loop *loop)
{
    GSource *source = g_source_new(&loop_source_funcs, sizeof(LoopSource));
    LoopSource *ls = (LoopSource *)source;

    ls->loop = loop;
    /* GLib polls the epoll set: a waiter's source must signal an fd. */
    loop->gsource = true;
    if (loop->waiter) {
        const LoopWaiter *w = loop->waiter;
        loop->waiter = NULL;
        w->detach(w->opaque);
    }
    ls->fd_tag = g_source_add_unix_fd(source, loop->epfd, G_IO_IN);
    g_source_set_name(source, "strata-loop");
    /* The GMainContext may sleep in poll() at any time between our
     * callbacks, so other threads must always kick the eventfd. */
    atomic_fetch_add(&loop->notify_me, 1);
    return source;
}
