/* SPDX-License-Identifier: MIT */
/*
 * floor-bench: the least a program can do per request, as a control for
 * the depth-1 rows of tests/bench/compare (issue 19).
 *
 *   floor-bench [-w] [-c COUNT] [-s SIZE] [--idle-start=MS] -e ENGINE FILE
 *
 * Sends COUNT sequential SIZE-byte requests to FILE, opened with O_DIRECT,
 * one at a time, with nothing between a completion and the next
 * submission: ENGINE io_uring submits with one io_uring_enter and waits
 * with another (the ring set up as fio's io_uring engine sets up its own),
 * libaio calls io_submit and io_getevents.  No block layer, no coroutine,
 * no statistics.  --idle-start sleeps MS milliseconds before the first
 * request, as fio's job process waits for its parent's go.
 *
 * Whatever Strata's depth-1 row shows that this program shows too is the
 * kernel's, not the library's: on a loop device the placement of the
 * device's worker, which depends on how the submitting thread started
 * (docs/benchmarks.md, run 17).
 *
 * Prints one JSON object: iops, seconds, requests, cpu-ns-per-request
 * (getrusage of the process over the whole run).
 */
#include "config-host.h"
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#if CONFIG_IO_URING
#include <liburing.h>
#endif
#if CONFIG_LIBAIO
#include <libaio.h>
#endif

#define FLOOR_ALIGN 4096
#define FLOOR_MAX_IDLE_START_MS 60000

typedef struct Floor {
    int fd;
    bool write;
    long count;
    size_t size;
    off_t span;                 /* offsets wrap before this */
    void *buf;
} Floor;

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static off_t floor_offset(const Floor *f, long i)
{
    return (off_t)(((uint64_t)i * f->size) % (uint64_t)f->span);
}

/* A short transfer is an error here: the offsets stay inside the file. */
static int floor_check(const Floor *f, long i, long res)
{
    if (res == (long)f->size) {
        return 0;
    }
    fprintf(stderr, "floor-bench: request %ld at offset %lld: %s\n", i,
            (long long)floor_offset(f, i),
            res < 0 ? strerror((int)-res) : "short transfer");
    return -1;
}

#if CONFIG_IO_URING
static int floor_io_uring(Floor *f)
{
    struct io_uring ring;
    struct io_uring_params p = {
        .flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER |
                 IORING_SETUP_DEFER_TASKRUN,
    };
    int ret = io_uring_queue_init_params(4, &ring, &p);

    if (ret == -EINVAL) {
        /* Before Linux 6.1: no DEFER_TASKRUN. */
        memset(&p, 0, sizeof(p));
        ret = io_uring_queue_init_params(4, &ring, &p);
    }
    if (ret < 0) {
        fprintf(stderr, "floor-bench: io_uring_queue_init: %s\n", strerror(-ret));
        return -1;
    }
    for (long i = 0; i < f->count; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        struct io_uring_cqe *cqe;

        if (f->write) {
            io_uring_prep_write(sqe, f->fd, f->buf, f->size, floor_offset(f, i));
        } else {
            io_uring_prep_read(sqe, f->fd, f->buf, f->size, floor_offset(f, i));
        }
        /* Two calls, as fio makes them: submit, then wait. */
        ret = io_uring_submit(&ring);
        if (ret == 1) {
            ret = io_uring_wait_cqe(&ring, &cqe);
        } else if (ret >= 0) {
            ret = -EAGAIN;
        }
        if (ret < 0) {
            fprintf(stderr, "floor-bench: io_uring: %s\n", strerror(-ret));
            io_uring_queue_exit(&ring);
            return -1;
        }
        long res = cqe->res;
        io_uring_cqe_seen(&ring, cqe);
        if (floor_check(f, i, res) < 0) {
            io_uring_queue_exit(&ring);
            return -1;
        }
    }
    io_uring_queue_exit(&ring);
    return 0;
}
#endif

#if CONFIG_LIBAIO
static int floor_libaio(Floor *f)
{
    io_context_t ctx = 0;
    int ret = io_setup(1, &ctx);

    if (ret < 0) {
        fprintf(stderr, "floor-bench: io_setup: %s\n", strerror(-ret));
        return -1;
    }
    for (long i = 0; i < f->count; i++) {
        struct iocb cb, *cbs[1] = { &cb };
        struct io_event ev;

        if (f->write) {
            io_prep_pwrite(&cb, f->fd, f->buf, f->size, floor_offset(f, i));
        } else {
            io_prep_pread(&cb, f->fd, f->buf, f->size, floor_offset(f, i));
        }
        do {
            ret = io_submit(ctx, 1, cbs);
        } while (ret == -EINTR || ret == -EAGAIN);
        if (ret == 1) {
            do {
                ret = io_getevents(ctx, 1, 1, &ev, NULL);
            } while (ret == -EINTR);
        } else if (ret >= 0) {
            ret = -EAGAIN;
        }
        if (ret < 0) {
            fprintf(stderr, "floor-bench: libaio: %s\n", strerror(-ret));
            io_destroy(ctx);
            return -1;
        }
        if (floor_check(f, i, (long)ev.res) < 0) {
            io_destroy(ctx);
            return -1;
        }
    }
    io_destroy(ctx);
    return 0;
}
#endif

static void usage(void)
{
    printf("Usage: floor-bench [-w] [-c COUNT] [-s SIZE] [--idle-start=MS] "
           "-e io_uring|libaio FILE\n"
           "One O_DIRECT request at a time, straight to the engine: the floor "
           "of a depth-1 row.\n");
}

/* A whole number in [min, max], or a message naming the option. */
static bool parse_long(const char *opt, const char *s, long min, long max,
                       long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 0);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "floor-bench: %s '%s': a number between %ld and %ld\n",
                opt, s, min, max);
        return false;
    }
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        { "help", no_argument, NULL, 'h' },
        { "idle-start", required_argument, NULL, 'I' },
        { NULL, 0, NULL, 0 },
    };
    Floor f = { .fd = -1, .count = 50000, .size = 4096 };
    const char *engine = NULL;
    long idle_ms = 0, size = 4096;
    int c;

    while ((c = getopt_long(argc, argv, "hwc:s:e:", long_opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage();
            return 0;
        case 'w':
            f.write = true;
            break;
        case 'c':
            if (!parse_long("-c", optarg, 1, 1L << 40, &f.count)) {
                return 1;
            }
            break;
        case 's':
            if (!parse_long("-s", optarg, FLOOR_ALIGN, 1L << 26, &size)) {
                return 1;
            }
            if (size % FLOOR_ALIGN) {
                fprintf(stderr, "floor-bench: -s '%s': a multiple of %d bytes "
                        "(O_DIRECT)\n", optarg, FLOOR_ALIGN);
                return 1;
            }
            f.size = (size_t)size;
            break;
        case 'e':
            engine = optarg;
            break;
        case 'I':
            if (!parse_long("--idle-start", optarg, 0, FLOOR_MAX_IDLE_START_MS,
                            &idle_ms)) {
                return 1;
            }
            break;
        default:
            usage();
            return 1;
        }
    }
    if (optind != argc - 1 || !engine) {
        usage();
        return 1;
    }
    int (*run)(Floor *) = NULL;
#if CONFIG_IO_URING
    if (!strcmp(engine, "io_uring")) {
        run = floor_io_uring;
    }
#endif
#if CONFIG_LIBAIO
    if (!strcmp(engine, "libaio")) {
        run = floor_libaio;
    }
#endif
    if (!run) {
        fprintf(stderr, "floor-bench: -e '%s': io_uring or libaio (as built)\n",
                engine);
        return 1;
    }

    const char *path = argv[optind];
    f.fd = open(path, (f.write ? O_WRONLY : O_RDONLY) | O_DIRECT | O_CLOEXEC);
    if (f.fd < 0) {
        fprintf(stderr, "floor-bench: %s: %s\n", path, strerror(errno));
        return 1;
    }
    /* The size of a file and of a block device alike. */
    off_t end = lseek(f.fd, 0, SEEK_END);
    if (end < 0) {
        fprintf(stderr, "floor-bench: %s: size: %s\n", path, strerror(errno));
        close(f.fd);
        return 1;
    }
    if (end < (off_t)f.size) {
        fprintf(stderr, "floor-bench: %s: smaller than one request (%zu bytes)\n",
                path, f.size);
        close(f.fd);
        return 1;
    }
    f.span = end - end % (off_t)f.size;
    if (posix_memalign(&f.buf, FLOOR_ALIGN, f.size)) {
        fprintf(stderr, "floor-bench: out of memory\n");
        close(f.fd);
        return 1;
    }
    memset(f.buf, 0, f.size);

    if (idle_ms > 0) {
        struct timespec idle = { idle_ms / 1000, (idle_ms % 1000) * 1000000 };
        while (nanosleep(&idle, &idle) < 0 && errno == EINTR) {
        }
    }
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    int64_t t0 = now_ns();
    int ret = run(&f);
    int64_t t1 = now_ns();
    getrusage(RUSAGE_SELF, &r1);
    close(f.fd);
    free(f.buf);
    if (ret < 0) {
        return 1;
    }
    double secs = (double)(t1 - t0) / 1e9;
    double cpu = (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec +
                          r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) +
                 (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec +
                          r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6;
    printf("{\"engine\": \"%s\", \"op\": \"%s\", \"requests\": %ld, "
           "\"seconds\": %.6f, \"iops\": %.1f, \"cpu-ns-per-request\": %.1f, "
           "\"idle_start_ms\": %ld}\n",
           engine, f.write ? "write" : "read", f.count, secs, f.count / secs,
           cpu * 1e9 / f.count, idle_ms);
    return 0;
}
