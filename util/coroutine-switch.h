/*
 * Coroutine context switch backends (SPDX-License-Identifier: MIT)
 *
 * Private to util/coroutine.c and util/coroutine-switch.c.  A CoContext
 * records where a stack was left; switching saves the callee-saved state of
 * the running code into one context and resumes another.  The backend is
 * chosen once, here, by architecture: a hand-written switch for x86-64 and
 * aarch64, ucontext for everything else.  Building with
 * -DCO_SWITCH_FORCE_UCONTEXT selects the fallback anywhere, so it can be
 * tested on the common architectures too.
 */
#ifndef STRATA_UTIL_COROUTINE_SWITCH_H
#define STRATA_UTIL_COROUTINE_SWITCH_H

#include <stddef.h>

#if defined(__x86_64__) && !defined(CO_SWITCH_FORCE_UCONTEXT)
#define CO_SWITCH_BACKEND "asm-x86_64"
#define CO_SWITCH_ASM_X86_64 1
#elif defined(__aarch64__) && !defined(CO_SWITCH_FORCE_UCONTEXT)
#define CO_SWITCH_BACKEND "asm-aarch64"
#define CO_SWITCH_ASM_AARCH64 1
#else
#define CO_SWITCH_BACKEND "ucontext"
#define CO_SWITCH_UCONTEXT 1
#endif

#if defined(CO_SWITCH_UCONTEXT)
#include <ucontext.h>
typedef struct CoContext {
    ucontext_t uc;
} CoContext;
#else
/* Everything else lives on the stack itself, below the saved pointer. */
typedef struct CoContext {
    void *sp;
} CoContext;
#endif

/* The first code a fresh context runs.  It must never return. */
typedef void CoContextEntry(void);

/*
 * Prepare @ctx so that the first co_context_switch() into it calls @entry
 * on the stack [@stack, @stack + @size).  @stack is the lowest usable byte;
 * both it and @size are page aligned.
 */
__attribute__((visibility("hidden")))
void co_context_make(CoContext *ctx, void *stack, size_t size,
                     CoContextEntry *entry);

/*
 * Save the running state into @from and resume @to.  Returns when some
 * other switch resumes @from, possibly in another thread.
 */
__attribute__((visibility("hidden")))
void co_context_switch(CoContext *from, CoContext *to);

#endif
