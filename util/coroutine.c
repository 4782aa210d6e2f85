/*
 * Stackful coroutines (SPDX-License-Identifier: MIT)
 *
 * Each thread has a "leader": a Coroutine that stands for the thread's own
 * stack, so entering from outside a coroutine and entering from inside one
 * are the same switch.  A running coroutine points at its caller; yield and
 * termination switch back along that pointer.
 *
 * A coroutine can move between threads (a loop hands it to another thread
 * while it is suspended), so code here never keeps a pointer to the
 * thread-local state across a switch that may resume in another thread.
 */
#include <assert.h>
#include <glib.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include "util/coroutine.h"
#include "util/coroutine-switch.h"
#include "util/loop.h"

#if defined(__SANITIZE_ADDRESS__)
#define CO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CO_ASAN 1
#endif
#endif
#ifndef CO_ASAN
#define CO_ASAN 0
#endif

#if defined(__SANITIZE_THREAD__)
#define CO_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CO_TSAN 1
#endif
#endif
#ifndef CO_TSAN
#define CO_TSAN 0
#endif

#if CO_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
/* ASan's instrumentation and fake frames need roughly four times the room. */
#define CO_STACK_SCALE 4
#else
#define CO_STACK_SCALE 1
#endif

#if CO_TSAN
#include <sanitizer/tsan_interface.h>
#endif

#define CO_STACK_DEFAULT (64 * 1024)
#define CO_STACK_MIN (16 * 1024)
#define CO_STACK_MAX ((size_t)1 << 30)
/* Free stacks kept per thread: enough for a burst of requests, bounded so
 * an idle thread does not hold megabytes it may never use again. */
#define CO_POOL_MAX 64

typedef enum CoState {
    CO_STATE_FRESH,         /* created, never entered */
    CO_STATE_RUNNING,       /* on some thread's caller chain */
    CO_STATE_SUSPENDED,     /* yielded, waiting to be entered again */
    CO_STATE_TERMINATED,    /* entry returned; free in a pool */
} CoState;

struct Coroutine {
    CoContext ctx;              /* where this coroutine's stack was left */
    CoroutineEntry *entry;
    void *opaque;
    Coroutine *caller;          /* who entered us; NULL unless running */
    Loop *loop;                 /* home loop, see co_get_loop() */
    bool migrating;             /* co_yield_to_loop() in progress */
    unsigned pool_depth;        /* see co_pool_depth() */
    Coroutine *wake_next;       /* util/loop.c wake list */
    Coroutine *queue_next;      /* CoQueue membership */
    Coroutine *pool_next;       /* free list of the thread's pool */
    CoState state;
    bool is_leader;             /* a thread's own stack, not a coroutine */

    void *map;                  /* the mapping: guard page, then stack */
    size_t map_size;
    void *stack;                /* lowest usable byte of the stack */
    size_t stack_size;

    /* For AddressSanitizer's fiber API; unused otherwise. */
    void *asan_fake_stack;
    const void *asan_stack_bottom;
    size_t asan_stack_size;
    /* ThreadSanitizer's state for this stack (a leader's is its thread's,
     * learnt on the first switch away from it); NULL without TSan. */
    void *tsan_fiber;
};

/* co_clock_begin()/co_clock_end(): the last reads, valid until the next
 * switch (see util/coroutine.h). */
typedef struct CoClock {
    int64_t depth;              /* nesting; compared only within a window */
    int64_t start_ns, start_depth;
    int64_t end_ns, end_depth;
    bool start_valid, end_valid;
} CoClock;

typedef struct CoThread {
    Coroutine *current;         /* NULL outside coroutines */
    CoClock clock;
    Coroutine leader;
    Coroutine *pool;            /* terminated coroutines with their stacks */
    CoroutinePoolStats stats;
    bool cleanup_registered;
    /* The context a switch just came from (the sanitizers learn its
     * stack from the switch's far side). */
    Coroutine *switch_from;
    /* A coroutine that yielded or ended and is off its stack: what its
     * enterer does then (pool it, or wake it in its new home) is done by
     * whichever context runs next (co_settle_left). */
    Coroutine *left;
    /* co_enter_wake_list: the context running the list, the list's next
     * coroutine and its end.  A coroutine of the list that yields to
     * that context goes straight into the next one instead. */
    Coroutine *list_caller, *list_next, *list_end;
} CoThread;

static _Atomic size_t co_stack_size = CO_STACK_DEFAULT;

static __thread CoThread co_thread_state = { .leader.is_leader = true };

static void co_thread_cleanup(void *opaque);
static GPrivate co_thread_key = G_PRIVATE_INIT(co_thread_cleanup);

/*
 * The calling thread's state.  The compiler treats a thread-local address
 * as constant within a function and may reuse it after a call; a coroutine
 * that yields in one thread and resumes in another would then touch the
 * first thread's state.  Calling this out-of-line function, whose result
 * the optimiser cannot see through, forces a fresh lookup.
 */
static __attribute__((noinline)) CoThread *co_thread(void)
{
    CoThread *t = &co_thread_state;

    __asm__ volatile("" : "+r"(t));
    return t;
}

/* ---- AddressSanitizer fiber annotations -------------------------------
 *
 * ASan must be told about every stack switch, or it takes the new stack
 * for a wild jump and reports false stack-buffer-overflows.  Before a
 * switch: where we go, and where to keep the fake stack of the frames we
 * leave (NULL when the leaving coroutine is terminating, so ASan frees it).
 * After: the fake stack we saved when we left, and ASan tells us the bounds
 * of the stack we came from, which is how a thread's leader learns its own.
 */
#if CO_ASAN
static inline void co_asan_before_switch(Coroutine *from, bool terminating,
                                         const Coroutine *to)
{
    __sanitizer_start_switch_fiber(terminating ? NULL : &from->asan_fake_stack,
                                   to->asan_stack_bottom, to->asan_stack_size);
}

static inline void co_asan_after_switch(Coroutine *self, Coroutine *from)
{
    __sanitizer_finish_switch_fiber(self->asan_fake_stack,
                                    &from->asan_stack_bottom,
                                    &from->asan_stack_size);
}

/* Frames that never returned (the final switch of a terminated coroutine)
 * leave their redzones poisoned; clear them before the memory is reused. */
static inline void co_asan_unpoison_stack(Coroutine *co)
{
    __asan_unpoison_memory_region(co->stack, co->stack_size);
}
#else
static inline void co_asan_before_switch(Coroutine *from, bool terminating,
                                         const Coroutine *to)
{
}

static inline void co_asan_after_switch(Coroutine *self, Coroutine *from)
{
}

static inline void co_asan_unpoison_stack(Coroutine *co)
{
}
#endif

/* ---- ThreadSanitizer fiber annotations -------------------------------
 *
 * TSan keeps a shadow call stack and a vector clock per thread; a stack
 * switch it is not told about mixes the two coroutines' histories into one
 * and, when a coroutine resumes in another thread, hides the ordering the
 * hand-over provides.  Each coroutine gets a TSan fiber, and every switch
 * announces its target right before it happens.  The switch synchronises
 * (flags 0): what the coroutine did before it yielded happens before what
 * it does after it resumes, whichever thread resumes it.
 */
#if CO_TSAN
static inline void co_tsan_create(Coroutine *co)
{
    co->tsan_fiber = __tsan_create_fiber(0);
}

static inline void co_tsan_destroy(Coroutine *co)
{
    __tsan_destroy_fiber(co->tsan_fiber);
}

static inline void co_tsan_switch(Coroutine *from, const Coroutine *to)
{
    if (from->is_leader && !from->tsan_fiber) {
        from->tsan_fiber = __tsan_get_current_fiber();
    }
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
}
#else
static inline void co_tsan_create(Coroutine *co)
{
}

static inline void co_tsan_destroy(Coroutine *co)
{
}

static inline void co_tsan_switch(Coroutine *from, const Coroutine *to)
{
}
#endif

/* ---- Stacks and the per-thread pool ---------------------------------- */

static size_t co_page_size(void)
{
    static size_t page_size;
    size_t size = __atomic_load_n(&page_size, __ATOMIC_RELAXED);

    if (!size) {
        size = (size_t)sysconf(_SC_PAGESIZE);
        __atomic_store_n(&page_size, size, __ATOMIC_RELAXED);
    }
    return size;
}

void co_set_stack_size(size_t bytes)
{
    size_t page = co_page_size();

    assert(bytes <= CO_STACK_MAX);
    if (bytes < CO_STACK_MIN) {
        bytes = CO_STACK_MIN;
    }
    bytes = (bytes + page - 1) & ~(page - 1);
    atomic_store_explicit(&co_stack_size, bytes, memory_order_relaxed);
}

size_t co_get_stack_size(void)
{
    return atomic_load_explicit(&co_stack_size, memory_order_relaxed);
}

/* Map a new coroutine's stack with an inaccessible page below it, so that
 * an overflow faults instead of scribbling over whatever lies beneath. */
static Coroutine *co_new(CoThread *t, size_t stack_size)
{
    size_t page = co_page_size();
    Coroutine *co = g_new0(Coroutine, 1);

    co->map_size = page + stack_size;
    co->map = mmap(NULL, co->map_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK,
                   -1, 0);
    if (co->map == MAP_FAILED) {
        abort();
    }
    if (mprotect(co->map, page, PROT_NONE) != 0) {
        abort();
    }
    co->stack = (char *)co->map + page;
    co->stack_size = stack_size;
    co->asan_stack_bottom = co->stack;
    co->asan_stack_size = stack_size;
    co_tsan_create(co);
    t->stats.created++;
    return co;
}

static void co_delete(Coroutine *co)
{
    co_tsan_destroy(co);
    munmap(co->map, co->map_size);
    g_free(co);
}

/* A free coroutine whose stack has the wanted size; stacks of an older
 * size setting are unmapped on the way. */
static Coroutine *co_pool_get(CoThread *t, size_t stack_size)
{
    Coroutine *co;

    while ((co = t->pool) != NULL) {
        t->pool = co->pool_next;
        t->stats.pooled--;
        if (co->stack_size == stack_size) {
            t->stats.reused++;
            return co;
        }
        co_delete(co);
    }
    return NULL;
}

static void co_pool_put(CoThread *t, Coroutine *co)
{
    co_asan_unpoison_stack(co);
    if (t->stats.pooled >= CO_POOL_MAX) {
        co_delete(co);
        return;
    }
    if (!t->cleanup_registered) {
        /* Only the key's destructor needs the pointer; it runs at thread
         * exit while this thread's variables still exist. */
        g_private_set(&co_thread_key, t);
        t->cleanup_registered = true;
    }
    co->pool_next = t->pool;
    t->pool = co;
    t->stats.pooled++;
}

static void co_thread_cleanup(void *opaque)
{
    CoThread *t = opaque;
    Coroutine *co;

    while ((co = t->pool) != NULL) {
        t->pool = co->pool_next;
        co_delete(co);
    }
    t->stats.pooled = 0;
    t->cleanup_registered = false;
}

void co_pool_stats(CoroutinePoolStats *out)
{
    *out = co_thread()->stats;
}

/* ---- Switching -------------------------------------------------------- */

static void co_set_current(CoThread *t, Coroutine *co)
{
    t->current = co->is_leader ? NULL : co;
    /* Another coroutine runs now: time may pass before anything here
     * runs again. */
    t->clock.start_valid = t->clock.end_valid = false;
}

/*
 * The coroutine that last switched out of its own stack by yielding or
 * ending: an ended one goes back to the pool, a migrating one is woken in
 * its new home (which may run it at once: nothing touches it after).
 * Called by whatever runs right after such a switch, in its thread.
 */
static void co_settle_left(CoThread *t)
{
    Coroutine *co = t->left;

    if (!co) {
        return;
    }
    t->left = NULL;
    if (co->state == CO_STATE_TERMINATED) {
        co_pool_put(t, co);
    } else if (co->migrating) {
        co->migrating = false;
        loop_co_wake(co);
    }
}

/*
 * Where a coroutine that yields or ends goes: back to its caller, or,
 * when that caller runs a wake list (co_enter_wake_list) with more on it,
 * straight into the list's next coroutine, which takes over the caller.
 */
static Coroutine *co_leave_to(CoThread *t, Coroutine *self)
{
    Coroutine *to = self->caller;

    self->caller = NULL;
    if (to == t->list_caller && t->list_next != t->list_end) {
        Coroutine *next = t->list_next;
        Coroutine **link = co_wake_next_ptr(next);

        t->list_next = *link;
        *link = NULL;
        assert(next->state != CO_STATE_RUNNING && "co_enter_wake_list: coroutine is running");
        assert(next->state != CO_STATE_TERMINATED && "co_enter_wake_list: coroutine is freed");
        next->caller = to;
        next->state = CO_STATE_RUNNING;
        t->stats.handoffs++;
        to = next;
    }
    t->left = self;
    t->switch_from = self;
    co_set_current(t, to);
    return to;
}

static __attribute__((noreturn)) void co_terminate(Coroutine *co)
{
    CoThread *t = co_thread();
    Coroutine *to;

    co->state = CO_STATE_TERMINATED;
    to = co_leave_to(t, co);
    co_asan_before_switch(co, true, to);
    co_tsan_switch(co, to);
    co_context_switch(&co->ctx, &to->ctx);
    /* Nobody switches back into a terminated context. */
    abort();
}

static void co_trampoline(void)
{
    CoThread *t = co_thread();
    Coroutine *co = t->current;

    co_asan_after_switch(co, t->switch_from);
    co_settle_left(t);
    co->entry(co->opaque);
    co_terminate(co);
}

unsigned *co_pool_depth(void)
{
    Coroutine *co = co_thread()->current;

    assert(co && "co_pool_depth outside a coroutine");
    return &co->pool_depth;
}

Coroutine *co_create(CoroutineEntry *entry, void *opaque)
{
    CoThread *t = co_thread();
    size_t stack_size = co_get_stack_size() * CO_STACK_SCALE;
    Coroutine *co = co_pool_get(t, stack_size);

    if (!co) {
        co = co_new(t, stack_size);
    }
    co->entry = entry;
    co->opaque = opaque;
    co->caller = NULL;
    co->loop = loop_current();
    co->pool_depth = 0;
    co->wake_next = NULL;
    co->queue_next = NULL;
    co->pool_next = NULL;
    co->state = CO_STATE_FRESH;
    co->asan_fake_stack = NULL;
    co_context_make(&co->ctx, co->stack, co->stack_size, co_trampoline);
    return co;
}

static void co_switch_in(CoThread *t, Coroutine *from, Coroutine *co)
{
    /* A running coroutine is on some caller chain: entering it again would
     * make the chain a cycle.  A terminated one has been freed. */
    assert(co->state != CO_STATE_RUNNING && "co_enter: coroutine is running");
    assert(co->state != CO_STATE_TERMINATED && "co_enter: coroutine is freed");
    co->caller = from;
    co->state = CO_STATE_RUNNING;
    t->switch_from = from;
    co_set_current(t, co);
    co_asan_before_switch(from, false, co);
    co_tsan_switch(from, co);
    co_context_switch(&from->ctx, &co->ctx);
    /* Back on our own stack, in this same thread: whatever ran returned
     * control to its caller, which is us. */
    co_asan_after_switch(from, t->switch_from);
    co_settle_left(t);
}

void co_enter(Coroutine *co)
{
    CoThread *t = co_thread();

    co_switch_in(t, t->current ? t->current : &t->leader, co);
}

void co_enter_wake_list(Coroutine *head, Coroutine *end)
{
    if (head == end) {
        return;
    }

    CoThread *t = co_thread();
    Coroutine *from = t->current ? t->current : &t->leader;
    Coroutine *saved_caller = t->list_caller;
    Coroutine *saved_next = t->list_next, *saved_end = t->list_end;
    Coroutine **link = co_wake_next_ptr(head);

    /* A coroutine of the list may run a nested loop that runs a list of
     * its own: keep the outer one's place. */
    t->list_caller = from;
    t->list_next = *link;
    t->list_end = end;
    *link = NULL;
    co_switch_in(t, from, head);
    assert(t->list_next == end);
    t->list_caller = saved_caller;
    t->list_next = saved_next;
    t->list_end = saved_end;
}

void co_list_append(CoList *list, Coroutine *co)
{
    assert(co->wake_next == NULL && "co_list_append: coroutine already on a list");
    co->wake_next = CO_LIST_END;
    if (list->tail) {
        list->tail->wake_next = co;
    } else {
        list->head = co;
    }
    list->tail = co;
}

void co_list_enter(CoList *list)
{
    Coroutine *head = list->head;

    if (head) {
        list->head = list->tail = NULL;
        co_enter_wake_list(head, CO_LIST_END);
    }
}

void co_yield_to_loop(Loop *loop)
{
    Coroutine *self = co_self();

    assert(self && "co_yield_to_loop: not in a coroutine");
    self->loop = loop;
    self->migrating = true;
    co_yield();
}

void co_yield(void)
{
    CoThread *t = co_thread();
    Coroutine *self = t->current;
    Coroutine *to;

    assert(self && "co_yield: not in a coroutine");
    self->state = CO_STATE_SUSPENDED;
    to = co_leave_to(t, self);
    co_asan_before_switch(self, false, to);
    co_tsan_switch(self, to);
    co_context_switch(&self->ctx, &to->ctx);
    /* Possibly resumed in another thread: t is stale from here on. */
    t = co_thread();
    co_asan_after_switch(self, t->switch_from);
    co_settle_left(t);
}

/* ---- nested timestamps -------------------------------------------------- */

int64_t co_clock_begin(void)
{
    CoClock *c = &co_thread()->clock;
    int64_t d = ++c->depth;

    if (c->start_valid && c->start_depth < d) {
        return c->start_ns;     /* a caller began moments ago */
    }
    /* A request that ended with no switch since (a coroutine issuing its
     * next request as its last one completes): that end is this start. */
    c->start_ns = c->end_valid ? c->end_ns : clock_ns();
    c->start_depth = d;
    c->start_valid = true;
    c->end_valid = false;       /* an earlier end is not this level's */
    return c->start_ns;
}

int64_t co_clock_end(void)
{
    CoClock *c = &co_thread()->clock;
    int64_t d = c->depth--;

    if (c->end_valid && c->end_depth > d) {
        return c->end_ns;       /* a callee ended moments ago */
    }
    c->end_ns = clock_ns();
    c->end_depth = d;
    c->end_valid = true;
    c->start_valid = false;     /* a later begin starts after this */
    return c->end_ns;
}

int64_t co_clock_now(void)
{
    CoClock *c = &co_thread()->clock;

    return c->start_valid ? c->start_ns : clock_ns();
}

Coroutine *co_self(void)
{
    return co_thread()->current;
}

bool co_in_coroutine(void)
{
    return co_thread()->current != NULL;
}

Loop *co_get_loop(Coroutine *co)
{
    return co->loop;
}

void co_set_loop(Coroutine *co, Loop *loop)
{
    co->loop = loop;
}

Coroutine **co_wake_next_ptr(Coroutine *co)
{
    return &co->wake_next;
}

Coroutine **co_queue_next_ptr(Coroutine *co)
{
    return &co->queue_next;
}
