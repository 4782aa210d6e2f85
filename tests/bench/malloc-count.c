/* SPDX-License-Identifier: MIT */
/*
 * malloc-count.so: an LD_PRELOAD library that counts heap allocations
 *
 *   G_SLICE=always-malloc LD_PRELOAD=build-release/tests/bench/malloc-count.so \
 *       strata-img bench --malloc-report ...
 *
 * Counts calls to malloc, calloc, realloc, posix_memalign, aligned_alloc,
 * memalign and valloc in every thread.  A program reads the count through
 * malloc_count_get(), found with dlsym(RTLD_DEFAULT, ...) so that it runs
 * unchanged without the library.  strata-img bench --malloc-report reads it
 * after a warm-up and at the end of the run.  A debugger reads the
 * exported variable malloc_count_total instead (gdb's `print
 * *(unsigned long *)&malloc_count_total`): calling a function in a
 * stopped process needs gdb to write the registers back, which fails on
 * some CPU and kernel pairs ("Couldn't write extended state status").
 *
 * To find out what allocates: with STRATA_MALLOC_COUNT_BACKTRACE=N in the
 * environment, the first N allocations made while tracing is on
 * (malloc_count_trace(1), which --malloc-report calls after the warm-up)
 * print a backtrace on stderr (glibc's backtrace_symbols_fd: link with
 * -rdynamic or use addr2line/gdb on the addresses for static functions).
 *
 * Resolving the real functions with dlsym() may itself call calloc (glibc
 * allocates its dlerror state); while that is under way, allocations come
 * from a small static arena that free() recognises and ignores.
 */
#include <dlfcn.h>
#include <execinfo.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

uint64_t malloc_count_get(void);
void malloc_count_reset(void);
void malloc_count_trace(int on);

void *malloc(size_t size);
void *calloc(size_t n, size_t size);
void *realloc(void *ptr, size_t size);
void free(void *ptr);
int posix_memalign(void **memptr, size_t alignment, size_t size);
void *aligned_alloc(size_t alignment, size_t size);
void *memalign(size_t alignment, size_t size);
void *valloc(size_t size);

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);
static void *(*real_valloc)(size_t);

/* Exported for debuggers (see above). */
extern _Atomic uint64_t malloc_count_total;
_Atomic uint64_t malloc_count_total;
static _Atomic int tracing;
static _Atomic long backtraces_left;

/* Set while this thread is inside dlsym() or backtrace(): allocations
 * then go to the arena (dlsym) or uncounted to the real allocator. */
static __thread int in_hook __attribute__((tls_model("initial-exec")));
static _Atomic int resolving;

static _Alignas(64) char arena[65536];
static _Atomic size_t arena_used;

static void *arena_alloc(size_t size)
{
    size = (size + 63) & ~(size_t)63;
    size_t off = atomic_fetch_add(&arena_used, size);
    if (off + size > sizeof(arena)) {
        return NULL;
    }
    return arena + off;
}

static int in_arena(const void *p)
{
    return (const char *)p >= arena && (const char *)p < arena + sizeof(arena);
}

static void resolve(void)
{
    if (real_malloc) {
        return;
    }
    in_hook++;
    atomic_store(&resolving, 1);
    real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
    real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
    real_posix_memalign = (int (*)(void **, size_t, size_t))dlsym(RTLD_NEXT,
                                                                  "posix_memalign");
    real_aligned_alloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "memalign");
    real_valloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "valloc");
    /* Last: its being set is what tells other callers we are done. */
    real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
    atomic_store(&resolving, 0);
    in_hook--;
}

static void account(void)
{
    if (in_hook) {
        return;
    }
    atomic_fetch_add_explicit(&malloc_count_total, 1, memory_order_relaxed);
    if (atomic_load_explicit(&tracing, memory_order_relaxed) &&
        atomic_fetch_sub(&backtraces_left, 1) > 0) {
        static const char head[] = "malloc-count: allocation while tracing:\n";
        void *frames[32];

        in_hook++;
        int n = backtrace(frames, 32);
        if (write(STDERR_FILENO, head, sizeof(head) - 1) < 0) {
            /* Nothing useful to do about a failed diagnostic write. */
        }
        backtrace_symbols_fd(frames, n, STDERR_FILENO);
        in_hook--;
    }
}

uint64_t malloc_count_get(void)
{
    return atomic_load(&malloc_count_total);
}

void malloc_count_reset(void)
{
    atomic_store(&malloc_count_total, 0);
}

void malloc_count_trace(int on)
{
    if (on) {
        const char *s = getenv("STRATA_MALLOC_COUNT_BACKTRACE");
        long n = s ? strtol(s, NULL, 10) : 0;
        if (n <= 0) {
            return;
        }
        /* backtrace() loads libgcc_s on first use, which allocates: do it
         * now, uncounted, rather than inside the first traced call. */
        void *frames[2];
        in_hook++;
        backtrace(frames, 2);
        in_hook--;
        atomic_store(&backtraces_left, n);
    }
    atomic_store(&tracing, on);
}

void *malloc(size_t size)
{
    if (!real_malloc) {
        if (in_hook || atomic_load(&resolving)) {
            return arena_alloc(size);
        }
        resolve();
    }
    account();
    return real_malloc(size);
}

void *calloc(size_t n, size_t size)
{
    if (!real_malloc) {
        if (in_hook || atomic_load(&resolving)) {
            /* The arena is static storage: already zero. */
            if (size && n > SIZE_MAX / size) {
                return NULL;
            }
            return arena_alloc(n * size);
        }
        resolve();
    }
    account();
    return real_calloc(n, size);
}

void *realloc(void *ptr, size_t size)
{
    if (!real_malloc) {
        resolve();
    }
    if (in_arena(ptr)) {
        /* Moving out of the arena: the old size is unknown, but never more
         * than what is left of the arena after it. */
        void *p = malloc(size);
        if (p) {
            size_t avail = (size_t)(arena + sizeof(arena) - (char *)ptr);
            memcpy(p, ptr, size < avail ? size : avail);
        }
        return p;
    }
    account();
    return real_realloc(ptr, size);
}

void free(void *ptr)
{
    if (!ptr || in_arena(ptr)) {
        return;
    }
    if (!real_free) {
        resolve();
    }
    real_free(ptr);
}

int posix_memalign(void **memptr, size_t alignment, size_t size)
{
    if (!real_malloc) {
        resolve();
    }
    account();
    return real_posix_memalign(memptr, alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size)
{
    if (!real_malloc) {
        resolve();
    }
    account();
    return real_aligned_alloc(alignment, size);
}

void *memalign(size_t alignment, size_t size)
{
    if (!real_malloc) {
        resolve();
    }
    account();
    return real_memalign(alignment, size);
}

void *valloc(size_t size)
{
    if (!real_malloc) {
        resolve();
    }
    account();
    return real_valloc(size);
}
