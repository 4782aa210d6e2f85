/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for util/coroutine.c: switching order, nesting, thread-local
 * identity, many live coroutines, the stack pool, stack size and the guard
 * page, and the misuse assertions.
 */
#include <glib.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include "config-host.h"
#include "util/coroutine.h"
#include "util/loop.h"

#if CONFIG_ASAN
/* Coroutine stacks are this much larger than the setting under ASan. */
#define STACK_SCALE 4
#else
#define STACK_SCALE 1
#endif

#define DEFAULT_STACK_SIZE (64 * 1024)

/* ---- enter/yield ordering --------------------------------------------- */

typedef struct Trace {
    char buf[64];
    size_t len;
} Trace;

static void trace(Trace *t, char c)
{
    g_assert_cmpuint(t->len, <, sizeof(t->buf) - 1);
    t->buf[t->len++] = c;
    t->buf[t->len] = '\0';
}

static void order_entry(void *opaque)
{
    Trace *t = opaque;

    trace(t, 'a');
    co_yield();
    trace(t, 'b');
    co_yield();
    trace(t, 'c');
}

static void test_enter_yield_order(void)
{
    Trace t = { 0 };
    Coroutine *co = co_create(order_entry, &t);

    trace(&t, '1');
    co_enter(co);
    trace(&t, '2');
    co_enter(co);
    trace(&t, '3');
    co_enter(co);   /* runs 'c' and terminates */
    trace(&t, '4');
    g_assert_cmpstr(t.buf, ==, "1a2b3c4");
}

/* ---- nesting ----------------------------------------------------------- */

typedef struct Nest {
    Trace trace;
    Coroutine *a, *b, *c;
    bool self_ok;
} Nest;

static void nest_check_self(Nest *n, Coroutine *expected)
{
    if (co_self() != expected || !co_in_coroutine()) {
        n->self_ok = false;
    }
}

static void nest_c(void *opaque)
{
    Nest *n = opaque;

    nest_check_self(n, n->c);
    trace(&n->trace, 'C');
    co_yield();                 /* back to b */
    nest_check_self(n, n->c);
    trace(&n->trace, 'c');
}

static void nest_b(void *opaque)
{
    Nest *n = opaque;

    nest_check_self(n, n->b);
    trace(&n->trace, 'B');
    co_enter(n->c);
    nest_check_self(n, n->b);
    trace(&n->trace, 'B');
    co_yield();                 /* back to a */
    nest_check_self(n, n->b);
    trace(&n->trace, 'b');
    co_enter(n->c);             /* c terminates and returns here */
    nest_check_self(n, n->b);
    trace(&n->trace, 'b');
}

static void nest_a(void *opaque)
{
    Nest *n = opaque;

    nest_check_self(n, n->a);
    trace(&n->trace, 'A');
    co_enter(n->b);
    nest_check_self(n, n->a);
    trace(&n->trace, 'A');
    co_yield();                 /* back to the test */
    nest_check_self(n, n->a);
    trace(&n->trace, 'a');
    co_enter(n->b);
    nest_check_self(n, n->a);
    trace(&n->trace, 'a');
}

static void test_nesting_three_deep(void)
{
    Nest n = { .self_ok = true };

    n.a = co_create(nest_a, &n);
    n.b = co_create(nest_b, &n);
    n.c = co_create(nest_c, &n);

    co_enter(n.a);
    g_assert_null(co_self());
    trace(&n.trace, '|');
    co_enter(n.a);
    g_assert_null(co_self());
    /* Each yield returned to whoever entered last; each end likewise. */
    g_assert_cmpstr(n.trace.buf, ==, "ABCBA|abcba");
    g_assert_true(n.self_ok);
}

/* ---- nested timestamps ------------------------------------------------- */

typedef struct ClockTrace {
    int64_t s1, s2, e2, e1, s3, e3, s4;
} ClockTrace;

/* Spin (no switch) until the clock has moved by @ns. */
static void clock_spin(int64_t ns)
{
    int64_t until = clock_ns() + ns;

    while (clock_ns() < until) {
    }
}

static void clock_entry(void *opaque)
{
    ClockTrace *t = opaque;

    t->s1 = co_clock_begin();           /* a node */
    t->s2 = co_clock_begin();           /* its child, no switch between */
    t->e2 = co_clock_end();
    t->e1 = co_clock_end();             /* the child's end is the node's */
    clock_spin(200000);
    t->s3 = co_clock_begin();           /* the next request, no switch */
    t->e3 = co_clock_end();
    co_yield();                         /* a switch: readings go stale */
    t->s4 = co_clock_begin();
    co_clock_end();
}

/* A chain of nested levels costs two clock reads, and a request begun as
 * the last one ended in the same coroutine with no switch in between
 * starts at that end (util/coroutine.h); after a switch every level reads
 * the clock afresh. */
static void test_clock_nesting_and_reuse(void)
{
    ClockTrace t = { 0 };
    Coroutine *co = co_create(clock_entry, &t);

    co_enter(co);
    g_assert_cmpint(t.s2, ==, t.s1);
    g_assert_cmpint(t.e2, >=, t.s1);
    g_assert_cmpint(t.e1, ==, t.e2);
    /* Reused although 200 us passed (the price the header names). */
    g_assert_cmpint(t.s3, ==, t.e1);
    /* The end after a begin at the same level is a fresh read. */
    g_assert_cmpint(t.e3, >=, t.s3 + 200000);
    clock_spin(200000);
    co_enter(co);
    g_assert_cmpint(t.s4, >=, t.e3 + 200000);
}

/* ---- identity ---------------------------------------------------------- */

typedef struct SelfInfo {
    Coroutine *seen;
    bool in;
} SelfInfo;

static void self_entry(void *opaque)
{
    SelfInfo *info = opaque;

    info->seen = co_self();
    info->in = co_in_coroutine();
}

static void test_self_in_coroutine(void)
{
    SelfInfo info = { 0 };
    Coroutine *co;

    g_assert_null(co_self());
    g_assert_false(co_in_coroutine());
    co = co_create(self_entry, &info);
    g_assert_null(co_self());
    co_enter(co);
    g_assert_true(info.seen == co);
    g_assert_true(info.in);
    g_assert_null(co_self());
    g_assert_false(co_in_coroutine());
}

/* ---- many live coroutines --------------------------------------------- */

#if defined(__SANITIZE_THREAD__)
/* Every coroutine is a ThreadSanitizer fiber, with state that costs far
 * more than its stack: ten thousand exhaust TSan's allocator. */
#define MANY 200
#else
#define MANY 10000
#endif
#define MANY_WORDS 64

typedef struct ManyCo {
    Coroutine *co;
    uint32_t id;
    bool started, finished, stack_intact, self_ok;
} ManyCo;

static uint32_t many_pattern(uint32_t id, uint32_t i)
{
    return id * 2654435761u + i * 40503u;
}

static void many_entry(void *opaque)
{
    ManyCo *m = opaque;
    volatile uint32_t words[MANY_WORDS];

    /* Stack data must survive while 9999 other stacks are in use. */
    for (uint32_t i = 0; i < MANY_WORDS; i++) {
        words[i] = many_pattern(m->id, i);
    }
    m->started = true;
    co_yield();
    m->stack_intact = true;
    for (uint32_t i = 0; i < MANY_WORDS; i++) {
        if (words[i] != many_pattern(m->id, i)) {
            m->stack_intact = false;
        }
    }
    m->self_ok = co_self() == m->co;
    m->finished = true;
}

static void test_many_alive(void)
{
    g_autofree ManyCo *many = g_new0(ManyCo, MANY);
    CoroutinePoolStats stats;

    for (uint32_t i = 0; i < MANY; i++) {
        many[i].id = i;
        many[i].co = co_create(many_entry, &many[i]);
        co_enter(many[i].co);
        g_assert_true(many[i].started);
    }
    /* Resume in reverse order so no two neighbours run back to back. */
    for (uint32_t i = MANY; i-- > 0;) {
        g_assert_false(many[i].finished);
        co_enter(many[i].co);
    }
    for (uint32_t i = 0; i < MANY; i++) {
        g_assert_true(many[i].finished);
        g_assert_true(many[i].stack_intact);
        g_assert_true(many[i].self_ok);
    }
    co_pool_stats(&stats);
    g_assert_cmpuint(stats.pooled, <=, 64);
    g_assert_cmpuint(stats.pooled, >, 0);
}

/* ---- pool ---------------------------------------------------------------- */

static void nop_entry(void *opaque)
{
    if (opaque) {
        (*(unsigned *)opaque)++;
    }
}

static void test_pool_reuse(void)
{
    CoroutinePoolStats before, after;
    unsigned runs = 0;

    /* Warm up: afterwards at least one stack is free. */
    co_enter(co_create(nop_entry, NULL));
    co_pool_stats(&before);
    g_assert_cmpuint(before.pooled, >, 0);

    for (unsigned i = 0; i < 1000; i++) {
        co_enter(co_create(nop_entry, &runs));
    }
    co_pool_stats(&after);
    g_assert_cmpuint(runs, ==, 1000);
    g_assert_cmpuint(after.created, ==, before.created);
    g_assert_cmpuint(after.reused, ==, before.reused + 1000);
    g_assert_cmpuint(after.pooled, ==, before.pooled);
}

static void test_pool_bounded(void)
{
    Coroutine *cos[200];
    CoroutinePoolStats stats;

    for (unsigned i = 0; i < G_N_ELEMENTS(cos); i++) {
        cos[i] = co_create(nop_entry, NULL);
    }
    co_pool_stats(&stats);
    g_assert_cmpuint(stats.pooled, ==, 0);
    for (unsigned i = 0; i < G_N_ELEMENTS(cos); i++) {
        co_enter(cos[i]);
    }
    co_pool_stats(&stats);
    g_assert_cmpuint(stats.pooled, ==, 64);
}

static gpointer pool_thread(gpointer opaque)
{
    CoroutinePoolStats *stats = opaque;
    unsigned runs = 0;

    co_pool_stats(&stats[0]);
    for (unsigned i = 0; i < 10; i++) {
        co_enter(co_create(nop_entry, &runs));
    }
    co_pool_stats(&stats[1]);
    g_assert_cmpuint(runs, ==, 10);
    return NULL;
}

static void test_pool_per_thread(void)
{
    CoroutinePoolStats mine_before, mine_after, theirs[2];
    GThread *thread;

    co_pool_stats(&mine_before);
    thread = g_thread_new("co-pool", pool_thread, theirs);
    g_thread_join(thread);
    co_pool_stats(&mine_after);

    g_assert_cmpuint(theirs[0].created, ==, 0);
    g_assert_cmpuint(theirs[0].reused, ==, 0);
    g_assert_cmpuint(theirs[0].pooled, ==, 0);
    g_assert_cmpuint(theirs[1].created, ==, 1);
    g_assert_cmpuint(theirs[1].reused, ==, 9);
    g_assert_cmpuint(theirs[1].pooled, ==, 1);
    g_assert_true(memcmp(&mine_before, &mine_after, sizeof(mine_before)) == 0);
}

/* ---- moving between threads ------------------------------------------- */

typedef struct Migrate {
    Coroutine *co;
    GThread *ran_in[3];
    bool self_ok;
} Migrate;

static void migrate_entry(void *opaque)
{
    Migrate *m = opaque;

    for (int i = 0; i < 3; i++) {
        m->ran_in[i] = g_thread_self();
        if (co_self() != m->co || !co_in_coroutine()) {
            m->self_ok = false;
        }
        if (i < 2) {
            co_yield();
        }
    }
}

static gpointer migrate_thread(gpointer opaque)
{
    Migrate *m = opaque;
    CoroutinePoolStats stats;

    g_assert_null(co_self());
    co_enter(m->co);            /* second slice, yields back here */
    g_assert_null(co_self());
    co_enter(m->co);            /* third slice, terminates here */
    co_pool_stats(&stats);
    g_assert_cmpuint(stats.pooled, ==, 1);  /* the stack is now ours */
    return g_thread_self();
}

static void test_migrate_between_threads(void)
{
    Migrate m = { .self_ok = true };
    GThread *thread;
    gpointer other;

    m.co = co_create(migrate_entry, &m);
    co_enter(m.co);
    thread = g_thread_new("co-migrate", migrate_thread, &m);
    other = g_thread_join(thread);
    g_assert_true(m.ran_in[0] == g_thread_self());
    g_assert_true(m.ran_in[1] == other);
    g_assert_true(m.ran_in[2] == other);
    g_assert_true(m.self_ok);
    g_assert_null(co_self());
}

/* ---- stack size and guard page ---------------------------------------- */

static void test_stack_size_rounding(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);

    g_assert_cmpuint(co_get_stack_size(), ==, DEFAULT_STACK_SIZE);
    co_set_stack_size(1);
    g_assert_cmpuint(co_get_stack_size(), ==, 16 * 1024);
    co_set_stack_size(16 * 1024 + 1);
    g_assert_cmpuint(co_get_stack_size(), ==, 16 * 1024 + page);
    co_set_stack_size(DEFAULT_STACK_SIZE);
    g_assert_cmpuint(co_get_stack_size(), ==, DEFAULT_STACK_SIZE);
}

#define BIG_STACK (512 * 1024)
#define BIG_ARRAY (384 * 1024)

typedef struct BigStack {
    uintptr_t top, bottom;
    uint64_t sum;
} BigStack;

/* Far larger than any frame ASan moves to its fake stack, so the array
 * is on the coroutine's real stack in every build. */
static __attribute__((noinline)) uint64_t use_big_array(BigStack *b)
{
    volatile unsigned char big[BIG_ARRAY];
    uint64_t sum = 0;

    for (size_t i = 0; i < BIG_ARRAY; i++) {
        big[i] = (unsigned char)(i * 7);
    }
    for (size_t i = 0; i < BIG_ARRAY; i++) {
        sum += big[i];
    }
    b->bottom = (uintptr_t)&big[0];
    return sum;
}

static void big_entry(void *opaque)
{
    BigStack *b = opaque;

    /* The frame address, not a local's: ASan may move small locals to a
     * heap "fake stack" (detect_stack_use_after_return). */
    b->top = (uintptr_t)__builtin_frame_address(0);
    b->sum = use_big_array(b);
}

static void test_stack_size_respected(void)
{
    BigStack b = { 0 };
    uint64_t expected = 0;
    CoroutinePoolStats before, after;

    for (size_t i = 0; i < BIG_ARRAY; i++) {
        expected += (unsigned char)(i * 7);
    }
    co_pool_stats(&before);
    g_assert_cmpuint(before.pooled, >, 0);

    co_set_stack_size(BIG_STACK);
    g_assert_cmpuint(co_get_stack_size(), ==, BIG_STACK);
    co_enter(co_create(big_entry, &b));
    co_set_stack_size(DEFAULT_STACK_SIZE);

    g_assert_cmpuint(b.sum, ==, expected);
    /* The array really lived on the coroutine's stack. */
    g_assert_cmpuint(b.top - b.bottom, >=, BIG_ARRAY);
    g_assert_cmpuint(b.top - b.bottom, <, BIG_STACK * STACK_SCALE);

    /* Pooled stacks of the old size were not reused for the new size. */
    co_pool_stats(&after);
    g_assert_cmpuint(after.created, ==, before.created + 1);
    g_assert_cmpuint(after.reused, ==, before.reused);
    g_assert_cmpuint(after.pooled, ==, 1);
}

/*
 * The overflow runs in a forked child, so the test can tell a fault in the
 * guard page (death by SIGSEGV) from any other failure.
 */
#define OVERFLOW_EXIT_NO_FAULT 2
#define OVERFLOW_EXIT_WRONG_ADDRESS 3

static volatile uintptr_t overflow_top;
static volatile unsigned overflow_limit = UINT32_MAX;

static __attribute__((noinline)) unsigned overflow_recurse(unsigned depth)
{
    volatile unsigned char frame[512];

    frame[0] = (unsigned char)depth;
    if (depth >= overflow_limit) {
        return frame[0];
    }
    return overflow_recurse(depth + 1) + frame[0];
}

static void overflow_entry(void *opaque)
{
    overflow_top = (uintptr_t)__builtin_frame_address(0);
    *(unsigned *)opaque = overflow_recurse(0);
}

#if !CONFIG_ASAN
static void overflow_on_segv(int sig, siginfo_t *info, void *uctx)
{
    uintptr_t fault = (uintptr_t)info->si_addr;
    uintptr_t size = co_get_stack_size();
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);

    /*
     * The first access below the stack lands in the page just under it:
     * one stack size below the top, give or take the entry frame and one
     * page.  Returning re-runs the access with the default action (the
     * handler was reset), so the process dies of SIGSEGV.
     */
    if (fault >= overflow_top || overflow_top - fault < size - page ||
        overflow_top - fault > size + page) {
        _exit(OVERFLOW_EXIT_WRONG_ADDRESS);
    }
}

static void overflow_install_handler(void)
{
    static char altstack[64 * 1024];
    stack_t ss = { .ss_sp = altstack, .ss_size = sizeof(altstack) };
    struct sigaction sa = { .sa_sigaction = overflow_on_segv,
                            .sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND };

    g_assert_cmpint(sigaltstack(&ss, NULL), ==, 0);
    sigemptyset(&sa.sa_mask);
    g_assert_cmpint(sigaction(SIGSEGV, &sa, NULL), ==, 0);
}
#else
static void overflow_install_handler(void)
{
    /* ASan's own handler reports the overflow and exits abnormally. */
}
#endif

static void test_guard_page_overflow(void)
{
    struct rlimit no_core = { 0, 0 };
    g_autoptr(GString) report = g_string_new(NULL);
    unsigned result = 0;
    int status, fds[2];
    char buf[4096];
    ssize_t len;
    pid_t pid;

    /* The child's stderr comes back through a pipe: ASan's report of a
     * thousand frames would drown the test log. */
    g_assert_cmpint(pipe(fds), ==, 0);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        setrlimit(RLIMIT_CORE, &no_core);
        overflow_install_handler();
        co_enter(co_create(overflow_entry, &result));
        _exit(OVERFLOW_EXIT_NO_FAULT);
    }
    close(fds[1]);
    while ((len = read(fds[0], buf, sizeof(buf))) > 0) {
        g_string_append_len(report, buf, len);
    }
    close(fds[0]);
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    if (WIFEXITED(status)) {
        g_test_message("child exited with %d", WEXITSTATUS(status));
    }
#if CONFIG_ASAN
    g_assert_true(WIFSIGNALED(status) ||
                  (WIFEXITED(status) && WEXITSTATUS(status) != 0 &&
                   WEXITSTATUS(status) != OVERFLOW_EXIT_NO_FAULT));
    g_assert_nonnull(strstr(report->str, "AddressSanitizer: stack-overflow"));
#else
    g_assert_true(WIFSIGNALED(status));
    g_assert_cmpint(WTERMSIG(status), ==, SIGSEGV);
    g_assert_cmpstr(report->str, ==, "");
#endif
}

/* ---- home loop and links ----------------------------------------------- */

static void test_home_loop(void)
{
    Loop *loop = loop_new(NULL);
    Coroutine *co;

    g_assert_nonnull(loop);
    co = co_create(nop_entry, NULL);
    g_assert_null(co_get_loop(co));
    co_enter(co);

    loop_attach_current(loop);
    co = co_create(nop_entry, NULL);
    loop_attach_current(NULL);
    g_assert_true(co_get_loop(co) == loop);
    co_set_loop(co, NULL);
    g_assert_null(co_get_loop(co));
    co_enter(co);
    loop_free(loop);
}

static void test_links_reset_on_reuse(void)
{
    Coroutine *co = co_create(nop_entry, NULL);
    Coroutine *reused;

    g_assert_null(*co_wake_next_ptr(co));
    g_assert_null(*co_queue_next_ptr(co));
    g_assert_true(co_wake_next_ptr(co) != co_queue_next_ptr(co));
    *co_wake_next_ptr(co) = co;
    *co_queue_next_ptr(co) = co;
    co_enter(co);

    /* The pool hands out the most recently freed stack first. */
    reused = co_create(nop_entry, NULL);
    g_assert_true(reused == co);
    g_assert_null(*co_wake_next_ptr(reused));
    g_assert_null(*co_queue_next_ptr(reused));
    co_enter(reused);
}

/* ---- misuse ------------------------------------------------------------- */

static void enter_self_entry(void *opaque)
{
    co_enter(co_self());
}

static void test_enter_self_asserts(void)
{
    if (g_test_subprocess()) {
        co_enter(co_create(enter_self_entry, NULL));
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
    g_test_trap_assert_stderr("*co_enter: coroutine is running*");
}

static void enter_caller_inner(void *opaque)
{
    co_enter(opaque);           /* our caller, still running */
}

static void enter_caller_outer(void *opaque)
{
    co_enter(co_create(enter_caller_inner, co_self()));
}

static void test_enter_caller_asserts(void)
{
    if (g_test_subprocess()) {
        co_enter(co_create(enter_caller_outer, NULL));
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
    g_test_trap_assert_stderr("*co_enter: coroutine is running*");
}

static void test_yield_outside_asserts(void)
{
    if (g_test_subprocess()) {
        co_yield();
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
    g_test_trap_assert_stderr("*co_yield: not in a coroutine*");
}

/* ---- wake lists: entered in a row, each straight into the next -------- */

typedef struct ListRun {
    Trace trace;
    Coroutine *inner;           /* entered by 'x' (nested) */
    CoList sublist;             /* entered by 'p' (a list in a list) */
} ListRun;

typedef struct ListMember {
    ListRun *run;
    char name;
} ListMember;

/* Traces its name, yields, traces it in upper case, ends. */
static void list_member_entry(void *opaque)
{
    ListMember *m = opaque;

    trace(&m->run->trace, m->name);
    co_yield();
    trace(&m->run->trace, g_ascii_toupper(m->name));
}

static void test_list_order_and_handoff(void)
{
    ListRun run = { 0 };
    ListMember m[3] = { { &run, 'a' }, { &run, 'b' }, { &run, 'c' } };
    Coroutine *cos[3];
    CoList list = CO_LIST_INIT;
    CoroutinePoolStats before, mid, after;

    co_list_enter(&list);       /* empty: nothing happens */
    for (unsigned i = 0; i < 3; i++) {
        cos[i] = co_create(list_member_entry, &m[i]);
        co_list_append(&list, cos[i]);
    }
    co_pool_stats(&before);
    co_list_enter(&list);
    trace(&run.trace, '1');
    co_pool_stats(&mid);
    g_assert_cmpstr(run.trace.buf, ==, "abc1");
    /* a went into b and b into c without coming back here. */
    g_assert_cmpuint(mid.handoffs, ==, before.handoffs + 2);
    g_assert_null(list.head);

    /* Each link was reset: the same coroutines go on a list again, and
     * those that end go back to the pool on the way. */
    for (unsigned i = 0; i < 3; i++) {
        g_assert_null(*co_wake_next_ptr(cos[i]));
        co_list_append(&list, cos[i]);
    }
    co_list_enter(&list);
    trace(&run.trace, '2');
    co_pool_stats(&after);
    g_assert_cmpstr(run.trace.buf, ==, "abc1ABC2");
    g_assert_cmpuint(after.handoffs, ==, mid.handoffs + 2);
    g_assert_cmpuint(after.pooled, ==, mid.pooled + 3);
}

static void list_inner_entry(void *opaque)
{
    ListRun *run = opaque;

    trace(&run->trace, 'z');
    co_yield();                 /* to x, which entered it: not to y */
    trace(&run->trace, 'Z');
}

static void list_x_entry(void *opaque)
{
    ListRun *run = opaque;

    trace(&run->trace, 'x');
    co_enter(run->inner);
    trace(&run->trace, 'x');
    co_enter(run->inner);       /* z ends: back here, not into y */
    trace(&run->trace, 'x');
}

static void list_p_entry(void *opaque)
{
    ListRun *run = opaque;

    trace(&run->trace, 'p');
    co_list_enter(&run->sublist);
    trace(&run->trace, 'p');
}

static void test_list_nested(void)
{
    ListRun run = { 0 };
    ListMember y = { &run, 'y' }, q = { &run, 'q' }, r = { &run, 'r' }, s = { &run, 's' };
    CoList list = CO_LIST_INIT;

    /* A coroutine of a list enters another one: that one yields back to
     * its enterer, and the list goes on when x itself is done. */
    Coroutine *rest[4];

    run.inner = co_create(list_inner_entry, &run);
    co_list_append(&list, co_create(list_x_entry, &run));
    co_list_append(&list, rest[0] = co_create(list_member_entry, &y));
    co_list_enter(&list);
    g_assert_cmpstr(run.trace.buf, ==, "xzxZxy");

    /* A coroutine of a list runs a list of its own: the inner list ends
     * back in p, and the outer one goes on after p. */
    run.trace.len = 0;
    co_list_append(&run.sublist, rest[1] = co_create(list_member_entry, &r));
    co_list_append(&run.sublist, rest[2] = co_create(list_member_entry, &s));
    co_list_append(&list, co_create(list_p_entry, &run));
    co_list_append(&list, rest[3] = co_create(list_member_entry, &q));
    co_list_enter(&list);
    g_assert_cmpstr(run.trace.buf, ==, "prspq");

    /* The suspended ones end one by one, as plain co_enter()s. */
    for (unsigned i = 0; i < G_N_ELEMENTS(rest); i++) {
        co_enter(rest[i]);
    }
    g_assert_cmpstr(run.trace.buf, ==, "prspqYRSQ");
}

static void test_list_append_twice_asserts(void)
{
    if (g_test_subprocess()) {
        CoList a = CO_LIST_INIT, b = CO_LIST_INIT;
        Coroutine *co = co_create(nop_entry, NULL);

        co_list_append(&a, co);
        co_list_append(&b, co);
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
    g_test_trap_assert_stderr("*co_list_append: coroutine already on a list*");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/coroutine/enter-yield/order", test_enter_yield_order);
    g_test_add_func("/coroutine/nesting/three-deep", test_nesting_three_deep);
    g_test_add_func("/coroutine/self/in-coroutine", test_self_in_coroutine);
    g_test_add_func("/coroutine/clock/nesting-and-reuse",
                    test_clock_nesting_and_reuse);
    g_test_add_func("/coroutine/many/" G_STRINGIFY(MANY) "-alive", test_many_alive);
    g_test_add_func("/coroutine/pool/reuse-without-growth", test_pool_reuse);
    g_test_add_func("/coroutine/pool/bounded-to-64", test_pool_bounded);
    g_test_add_func("/coroutine/pool/per-thread", test_pool_per_thread);
    g_test_add_func("/coroutine/thread/migrate-while-suspended",
                    test_migrate_between_threads);
    g_test_add_func("/coroutine/stack/size-rounding", test_stack_size_rounding);
    g_test_add_func("/coroutine/stack/size-respected", test_stack_size_respected);
    g_test_add_func("/coroutine/stack/guard-page-stops-overflow",
                    test_guard_page_overflow);
    g_test_add_func("/coroutine/loop/home-is-current-at-create", test_home_loop);
    g_test_add_func("/coroutine/links/reset-on-reuse", test_links_reset_on_reuse);
    g_test_add_func("/coroutine/misuse/enter-self-asserts", test_enter_self_asserts);
    g_test_add_func("/coroutine/misuse/enter-caller-asserts",
                    test_enter_caller_asserts);
    g_test_add_func("/coroutine/misuse/yield-outside-asserts",
                    test_yield_outside_asserts);
    g_test_add_func("/coroutine/list/order-and-handoff", test_list_order_and_handoff);
    g_test_add_func("/coroutine/list/nested", test_list_nested);
    g_test_add_func("/coroutine/misuse/list-append-twice-asserts",
                    test_list_append_twice_asserts);
    return g_test_run();
}
