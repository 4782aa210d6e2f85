/* SPDX-License-Identifier: MIT */
/*
 * Coroutine micro-benchmarks: the cost of an enter+yield round trip (the
 * switch pair every request pays once per completion) and of create+finish
 * (paid once per request, with the stack served from the pool).
 *
 * Usage: bench-coroutine [ITERATIONS]   (default 10000000)
 * Each figure is the median of five runs.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "util/coroutine.h"

#define RUNS 5

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof(*v), compare_double);
    return v[n / 2];
}

static void yield_loop(void *opaque)
{
    const volatile bool *stop = opaque;

    while (!*stop) {
        co_yield();
    }
}

static double run_round_trip(long iterations)
{
    volatile bool stop = false;
    Coroutine *co = co_create(yield_loop, (void *)&stop);
    int64_t start;
    double ns;

    co_enter(co);   /* first slice: run up to the first yield */
    start = now_ns();
    for (long i = 0; i < iterations; i++) {
        co_enter(co);
    }
    ns = (double)(now_ns() - start) / (double)iterations;
    stop = true;
    co_enter(co);
    return ns;
}

static void nop_entry(void *opaque)
{
}

static double run_create_finish(long iterations)
{
    int64_t start = now_ns();

    for (long i = 0; i < iterations; i++) {
        co_enter(co_create(nop_entry, NULL));
    }
    return (double)(now_ns() - start) / (double)iterations;
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? strtol(argv[1], NULL, 0) : 10000000;
    long create_iterations;
    double samples[RUNS];
    CoroutinePoolStats stats;

    if (iterations <= 0) {
        fprintf(stderr, "usage: %s [ITERATIONS]\n", argv[0]);
        return 1;
    }
    create_iterations = iterations / 10 ? iterations / 10 : 1;

    run_round_trip(iterations / 10 ? iterations / 10 : 1);     /* warm up */
    for (int i = 0; i < RUNS; i++) {
        samples[i] = run_round_trip(iterations);
    }
    printf("coroutine enter+yield round-trip: %.1f ns (median of %d runs of %ld)\n",
           median(samples, RUNS), RUNS, iterations);

    for (int i = 0; i < RUNS; i++) {
        samples[i] = run_create_finish(create_iterations);
    }
    printf("coroutine create+enter+finish: %.1f ns (median of %d runs of %ld)\n",
           median(samples, RUNS), RUNS, create_iterations);

    co_pool_stats(&stats);
    printf("pool: %llu stacks mapped, %llu creations reused a stack, %llu free\n",
           (unsigned long long)stats.created, (unsigned long long)stats.reused,
           (unsigned long long)stats.pooled);
    return 0;
}
