/* SPDX-License-Identifier: MIT */
/*
 * zerocopy-bench: copy or zero-copy, measured (issue 19).
 *
 *   zerocopy-bench [-w] [-r] [-c COUNT] [-d DEPTH] [-s SIZE] [-t THRESHOLD]
 *                  -i ENGINE FILE
 *
 * Reads (or with -w writes) SIZE-byte requests, DEPTH in flight, through a
 * raw node over FILE opened with O_DIRECT and aio=ENGINE, from buffers in
 * memfd-backed shared memory (as a vhost-user guest's RAM is).  The file
 * node's bounce-threshold is THRESHOLD ("auto" or bytes): requests at or
 * below it are copied through the pool, larger ones hand the guest's pages
 * to the kernel.  -r registers the memory with the context
 * (strata_context_register_memory: io_uring fixed buffers).  Uses the
 * public API only, callback form, as a VMM would.
 *
 * Prints one JSON object: iops, seconds, cpu-ns-per-request (getrusage of
 * the whole process, so the engine's workers count) over the requests
 * after a warm-up of a tenth of COUNT.  tests/bench/compare runs it for
 * the copy-zerocopy scenario; see docs/benchmarks.md.
 */
#include <errno.h>
#include <getopt.h>
#include <glib.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "strata/strata.h"

typedef struct Bench {
    StrataContext *ctx;
    StrataBackend *be;
    bool write;
    int64_t size, file_size, next_offset;
    int count, submitted, completed, warmup;
    int error;
    struct timespec t0;
    struct rusage ru0;
} Bench;

typedef struct Slot {
    Bench *b;
    struct iovec iov;
} Slot;

static double now_s(const struct timespec *t)
{
    return t->tv_sec + t->tv_nsec / 1e9;
}

static double cpu_s(const struct rusage *ru)
{
    return ru->ru_utime.tv_sec + ru->ru_utime.tv_usec / 1e6 +
           ru->ru_stime.tv_sec + ru->ru_stime.tv_usec / 1e6;
}

static void slot_done(void *opaque, int64_t ret);

static void slot_submit(Slot *s)
{
    Bench *b = s->b;
    int64_t offset = b->next_offset;
    int ret;

    b->next_offset += b->size;
    if (b->next_offset + b->size > b->file_size) {
        b->next_offset = 0;
    }
    b->submitted++;
    ret = b->write
        ? strata_backend_aio_pwritev(b->be, offset, &s->iov, 1, 0, slot_done, s)
        : strata_backend_aio_preadv(b->be, offset, &s->iov, 1, 0, slot_done, s);
    if (ret < 0) {
        b->error = ret;
        b->completed++;
    }
}

static void slot_done(void *opaque, int64_t ret)
{
    Slot *s = opaque;
    Bench *b = s->b;

    if (ret < 0 && !b->error) {
        b->error = (int)ret;
    }
    b->completed++;
    if (b->completed == b->warmup) {
        clock_gettime(CLOCK_MONOTONIC, &b->t0);
        getrusage(RUSAGE_SELF, &b->ru0);
    }
    if (b->submitted < b->count && !b->error) {
        slot_submit(s);
    }
}

static int usage(void)
{
    fprintf(stderr, "usage: zerocopy-bench [-w] [-r] [-c COUNT] [-d DEPTH] "
            "[-s SIZE] [-t THRESHOLD|auto] -i ENGINE FILE\n");
    return 2;
}

int main(int argc, char **argv)
{
    Bench b = { .count = 20000, .size = 4096 };
    int depth = 32, opt;
    bool reg = false;
    const char *engine = "io_uring", *threshold = "0";
    StrataError *err = NULL;

    while ((opt = getopt(argc, argv, "wrc:d:s:t:i:")) != -1) {
        switch (opt) {
        case 'w': b.write = true; break;
        case 'r': reg = true; break;
        case 'c': b.count = atoi(optarg); break;
        case 'd': depth = atoi(optarg); break;
        case 's': b.size = strtoll(optarg, NULL, 0); break;
        case 't': threshold = optarg; break;
        case 'i': engine = optarg; break;
        default: return usage();
        }
    }
    if (optind != argc - 1 || depth < 1 || b.size < 512 || b.count < depth) {
        return usage();
    }
    const char *file = argv[optind];
    struct stat st;
    if (stat(file, &st) < 0) {
        fprintf(stderr, "zerocopy-bench: %s: %s\n", file, strerror(errno));
        return 1;
    }
    b.file_size = st.st_size;
    b.warmup = b.count / 10;

    /* Guest RAM: one buffer per slot in a memfd mapping. */
    size_t mem_len = (size_t)depth * (size_t)b.size;
    int mfd = memfd_create("zerocopy-bench-guest", MFD_CLOEXEC);
    if (mfd < 0 || ftruncate(mfd, (off_t)mem_len) < 0) {
        perror("zerocopy-bench: memfd");
        return 1;
    }
    uint8_t *mem = mmap(NULL, mem_len, PROT_READ | PROT_WRITE, MAP_SHARED,
                        mfd, 0);
    if (mem == MAP_FAILED) {
        perror("zerocopy-bench: mmap");
        return 1;
    }
    memset(mem, 0xa5, mem_len);

    b.ctx = strata_context_new(&err);
    if (!b.ctx) {
        goto fail;
    }
    if (reg && !strata_context_register_memory(b.ctx, mem, mem_len, &err)) {
        goto fail;
    }
    bool numeric = strspn(threshold, "0123456789") == strlen(threshold);
    char *json = g_strdup_printf(
        "{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"%s\","
        "\"cache\":{\"direct\":true},\"aio\":\"%s\","
        "\"bounce-threshold\":%s%s%s}}", file, engine,
        numeric ? "" : "\"", threshold, numeric ? "" : "\"");
    StrataNode *node = strata_node_open_json(b.ctx, json, &err);
    g_free(json);
    if (!node) {
        goto fail;
    }
    b.be = strata_backend_new(node, "bench",
                              STRATA_PERM_CONSISTENT_READ |
                              (b.write ? STRATA_PERM_WRITE : 0),
                              STRATA_PERM_ALL, &err);
    strata_node_unref(node);
    if (!b.be) {
        goto fail;
    }

    Slot *slots = calloc((size_t)depth, sizeof(*slots));
    for (int i = 0; i < depth; i++) {
        slots[i] = (Slot) { .b = &b, .iov = { mem + (size_t)i * b.size,
                                              (size_t)b.size } };
        slot_submit(&slots[i]);
    }
    while (b.completed < b.count) {
        strata_context_run_once(b.ctx, true);
    }
    struct timespec t1;
    struct rusage ru1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    getrusage(RUSAGE_SELF, &ru1);
    if (b.error) {
        fprintf(stderr, "zerocopy-bench: request failed: %s\n",
                strerror(-b.error));
        return 1;
    }
    int measured = b.count - b.warmup;
    double secs = now_s(&t1) - now_s(&b.t0);
    printf("{\"engine\": \"%s\", \"size\": %" PRId64 ", \"threshold\": \"%s\", "
           "\"registered\": %s, \"write\": %s, \"depth\": %d, "
           "\"requests\": %d, \"seconds\": %.6f, \"iops\": %.1f, "
           "\"cpu-ns-per-request\": %.1f}\n",
           engine, b.size, threshold, reg ? "true" : "false",
           b.write ? "true" : "false", depth, measured, secs, measured / secs,
           (cpu_s(&ru1) - cpu_s(&b.ru0)) * 1e9 / measured);

    strata_backend_free(b.be);
    if (reg) {
        strata_context_unregister_memory(b.ctx, mem);
    }
    strata_context_free(b.ctx);
    free(slots);
    munmap(mem, mem_len);
    close(mfd);
    return 0;

fail:
    fprintf(stderr, "zerocopy-bench: %s\n", strata_error_get_message(err));
    strata_error_free(err);
    return 1;
}
