/*
 * strata-io data commands: reads, writes, aio, discard, flush, truncate,
 * length, alloc, map
 * SPDX-License-Identifier: MIT
 *
 * Each command parses its words with getopt(3), as qemu-io's do, so flags
 * may follow the offsets and "-x" errors read the same.  Output lines
 * match qemu-io's byte for byte except for timings; the number formats
 * (io_fmt_size, fmt_time) follow qemu-io's so that the usual iotests
 * filters apply unchanged.
 *
 * Synchronous requests use the blocking form of the public backend API:
 * it runs the context's loop in this thread until the request completes,
 * which also completes any aio_read/aio_write in flight.  truncate runs a
 * coroutine for the error message the coroutine form gives.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/backend-int.h"
#include "block/block-int.h"
#include "tools/io-cmds.h"
#include "tools/tool-common.h"

/* ---- numbers and their formats --------------------------------------- */

static void print_cvtnum_err(int64_t rc, const char *arg)
{
    if (rc == -ERANGE) {
        printf("Parsing error: argument too large -- %s\n", arg);
    } else {
        printf("Parsing error: non-numeric argument, or extraneous/"
               "unrecognized suffix -- %s\n", arg);
    }
}

/* Parse @arg as a number into *out; prints the error and returns false. */
bool io_get_num(const char *arg, int64_t *out)
{
    bool hex_suffix;
    int ret = tool_cvtnum(arg, out, &hex_suffix);

    if (ret < 0) {
        print_cvtnum_err(ret, arg);
        return false;
    }
    if (hex_suffix) {
        io_error("warning: Using a multiplier suffix on hex numbers is "
                 "deprecated: %s", arg);
    }
    return true;
}

/*
 * qemu-io's human-readable size: the largest binary unit the value
 * reaches, three decimals, and a trailing ".000" dropped (bytes get six
 * decimals, so "100.293449 bytes" but "512 bytes").
 */
void io_fmt_size(double value, char *buf, size_t size)
{
    static const char *const units[] = {
        " bytes", " KiB", " MiB", " GiB", " TiB", " PiB", " EiB",
    };
    int u;

    for (u = 6; u > 0 && value < ldexp(1.0, 10 * u); u--) {
    }
    if (u == 0) {
        snprintf(buf, size - 6, "%f", value);
    } else {
        snprintf(buf, size - 4, "%.3f", value / ldexp(1.0, 10 * u));
    }
    char *trim = strstr(buf, ".000");
    if (trim) {
        *trim = '\0';
    }
    g_strlcat(buf, units[u], size);
}

/* "00.12 sec" under a second, "H:MM:SS.ss" from one second on or always
 * with @fixed (the CSV form). */
static void fmt_time(int64_t ns, bool fixed, char *buf, size_t size)
{
    int64_t sec = ns / 1000000000;
    double frac = (double)(ns % 1000000000) / 1e9;

    if (fixed || sec) {
        snprintf(buf, size, "%u:%02u:%05.2f", (unsigned)(sec / 3600),
                 (unsigned)(sec % 3600 / 60), (double)(sec % 60) + frac);
    } else {
        snprintf(buf, size, "%05.2f sec", frac);
    }
}

static double per_sec(double value, int64_t ns)
{
    return value / ((double)ns / 1e9);
}

static void print_report(const char *op, int64_t ns, int64_t offset,
                         int64_t count, int64_t total, int ops, bool csv)
{
    char s1[64], s2[64], ts[64];

    fmt_time(ns, csv, ts, sizeof(ts));
    if (csv) {
        /* bytes,ops,time,bytes/sec,ops/sec */
        printf("%" PRId64 ",%d,%s,%.3f,%.3f\n", total, ops, ts,
               per_sec((double)total, ns), per_sec(ops, ns));
        return;
    }
    io_fmt_size((double)total, s1, sizeof(s1));
    io_fmt_size(per_sec((double)total, ns), s2, sizeof(s2));
    printf("%s %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n",
           op, total, count, offset);
    printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n",
           s1, ops, ts, s2, per_sec(ops, ns));
}

/* 16 bytes a line: offset, hex bytes, then letters and digits as
 * themselves and everything else as '.'. */
static void dump_buffer(const uint8_t *p, int64_t offset, int64_t len)
{
    for (int64_t i = 0; i < len; i += 16) {
        int64_t n = MIN(16, len - i);
        printf("%08" PRIx64 ":  ", (uint64_t)(offset + i));
        for (int64_t j = 0; j < n; j++) {
            printf("%02x ", p[i + j]);
        }
        putchar(' ');
        for (int64_t j = 0; j < n; j++) {
            putchar(g_ascii_isalnum(p[i + j]) ? p[i + j] : '.');
        }
        putchar('\n');
    }
}

static int parse_pattern(const char *arg)
{
    char *end;
    long v = strtol(arg, &end, 0);

    if (v < 0 || v > UCHAR_MAX || *end || end == arg) {
        printf("%s is not a valid pattern byte\n", arg);
        return -1;
    }
    return (int)v;
}

/* ---- buffers ------------------------------------------------------------ */

typedef struct IoBuf {
    void *base;                 /* what posix_memalign gave */
    uint8_t *p;                 /* what requests use */
    size_t len;
} IoBuf;

/* Buffers start at the root's preferred alignment (at least a page), so
 * nothing bounces unless -m asks for it: then they start one byte after,
 * an odd address that breaks every mem_alignment above 1. */
static bool iobuf_alloc(IoState *s, IoBuf *b, size_t len, int fill)
{
    StrataLimits lim;
    size_t align = (size_t)sysconf(_SC_PAGESIZE);
    size_t skew = s->misalign ? 1 : 0;

    strata_node_get_limits(strata_backend_get_root(s->be), &lim);
    align = MAX(align, lim.opt_mem_alignment);
    b->base = NULL;
    if (posix_memalign(&b->base, align, len + skew + 1) != 0) {
        printf("cannot allocate %zu bytes for the request buffer\n", len);
        return false;
    }
    memset(b->base, fill, len + skew + 1);
    b->p = (uint8_t *)b->base + skew;
    b->len = len;
    return true;
}

static void iobuf_free(IoBuf *b)
{
    free(b->base);
    b->base = NULL;
}

static bool buf_is_pattern(const uint8_t *p, size_t len, int pattern)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] != pattern) {
            return false;
        }
    }
    return true;
}

/*
 * Parse the lengths of a vectored command and allocate one buffer for all
 * of them, cut into one element per length.  Prints the error and returns
 * false on a bad length.
 */
static bool build_iov(IoState *s, char **args, int n, int fill, IoBuf *buf,
                      struct iovec **iov_out)
{
    g_autofree int64_t *lens = g_new(int64_t, n);
    int64_t total = 0;

    for (int i = 0; i < n; i++) {
        if (!io_get_num(args[i], &lens[i])) {
            return false;
        }
        if (lens[i] > BLOCK_MAX_RW_BYTES) {
            printf("Argument '%s' exceeds maximum size %" PRId64 "\n", args[i],
                   BLOCK_MAX_RW_BYTES);
            return false;
        }
        if (total > BLOCK_MAX_RW_BYTES - lens[i]) {
            printf("The total number of bytes exceed the maximum size %" PRId64
                   "\n", BLOCK_MAX_RW_BYTES);
            return false;
        }
        total += lens[i];
    }
    if (!iobuf_alloc(s, buf, (size_t)total, fill)) {
        return false;
    }
    struct iovec *iov = g_new(struct iovec, n);
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = buf->p + pos;
        iov[i].iov_len = (size_t)lens[i];
        pos += (size_t)lens[i];
    }
    *iov_out = iov;
    return true;
}

/* Fill @len bytes from @path, repeating its contents (write -s). */
static bool iobuf_from_file(IoState *s, IoBuf *b, size_t len, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fflush(stdout);
        perror(path);
        return false;
    }
    if (!iobuf_alloc(s, b, len, 0)) {
        fclose(f);
        return false;
    }
    size_t got = fread(b->p, 1, len, f);
    if (ferror(f)) {
        fflush(stdout);
        perror(path);
        fclose(f);
        iobuf_free(b);
        return false;
    }
    fclose(f);
    if (got == 0 && len > 0) {
        printf("%s: the source file is empty\n", path);
        iobuf_free(b);
        return false;
    }
    for (size_t pos = got; pos < len; pos += got) {
        memcpy(b->p + pos, b->p, MIN(got, len - pos));
    }
    return true;
}

/* ---- read, readv, write, writev ------------------------------------------ */

int io_cmd_read(IoState *s, int argc, char **argv)
{
    bool csv = false, quiet = false, verbose = false;
    bool pflag = false, sflag = false, lflag = false, bflag = false;
    int pattern = 0, c, ret;
    int64_t offset, count, poff = 0, plen = 0;

    while ((c = getopt(argc, argv, "bCl:pP:qs:v")) != -1) {
        switch (c) {
        case 'b':
            bflag = true;
            break;
        case 'C':
            csv = true;
            break;
        case 'l':
            lflag = true;
            if (!io_get_num(optarg, &plen)) {
                return -EINVAL;
            }
            break;
        case 'p':
            break;      /* accepted and ignored, as by qemu-io */
        case 'P':
            pflag = true;
            pattern = parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            quiet = true;
            break;
        case 's':
            sflag = true;
            if (!io_get_num(optarg, &poff)) {
                return -EINVAL;
            }
            break;
        case 'v':
            verbose = true;
            break;
        default:
            return io_usage("read");
        }
    }
    if (optind != argc - 2) {
        return io_usage("read");
    }
    if (!io_get_num(argv[optind], &offset) || !io_get_num(argv[optind + 1], &count)) {
        return -EINVAL;
    }
    if (count > BLOCK_MAX_RW_BYTES) {
        printf("length cannot exceed %" PRId64 ", given %s\n",
               BLOCK_MAX_RW_BYTES, argv[optind + 1]);
        return -EINVAL;
    }
    if (!pflag && (lflag || sflag)) {
        return io_usage("read");
    }
    if (!lflag) {
        plen = count - poff;
    }
    if (plen < 0 || poff > count || plen > count - poff) {
        printf("pattern verification range exceeds end of read data\n");
        return -EINVAL;
    }

    IoBuf buf;
    if (!iobuf_alloc(s, &buf, (size_t)count, 0xab)) {
        return -ENOMEM;
    }
    int64_t t0 = clock_ns();
    /* There is no VM state area: -b fails as it does on a raw image. */
    ret = bflag ? -ENOTSUP : strata_backend_pread(s->be, offset, buf.p, (size_t)count, 0);
    int64_t ns = clock_ns() - t0;
    if (ret < 0) {
        printf("read failed: %s\n", strerror(-ret));
        goto out;
    }
    if (pflag && !buf_is_pattern(buf.p + poff, (size_t)plen, pattern)) {
        printf("Pattern verification failed at offset %" PRId64 ", %" PRId64
               " bytes\n", offset + poff, plen);
        ret = -EINVAL;
    }
    if (quiet) {
        goto out;
    }
    if (verbose) {
        dump_buffer(buf.p, offset, count);
    }
    print_report("read", ns, offset, count, count, 1, csv);
out:
    iobuf_free(&buf);
    return ret;
}

int io_cmd_readv(IoState *s, int argc, char **argv)
{
    bool csv = false, quiet = false, verbose = false, pflag = false;
    int pattern = 0, c, ret;
    int64_t offset;

    while ((c = getopt(argc, argv, "CP:qv")) != -1) {
        switch (c) {
        case 'C':
            csv = true;
            break;
        case 'P':
            pflag = true;
            pattern = parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            quiet = true;
            break;
        case 'v':
            verbose = true;
            break;
        default:
            return io_usage("readv");
        }
    }
    if (optind > argc - 2) {
        return io_usage("readv");
    }
    if (!io_get_num(argv[optind], &offset)) {
        return -EINVAL;
    }
    optind++;

    IoBuf buf;
    g_autofree struct iovec *iov = NULL;
    int niov = argc - optind;
    if (!build_iov(s, &argv[optind], niov, 0xab, &buf, &iov)) {
        return -EINVAL;
    }
    int64_t t0 = clock_ns();
    ret = strata_backend_preadv(s->be, offset, iov, niov, 0);
    int64_t ns = clock_ns() - t0;
    if (ret < 0) {
        printf("readv failed: %s\n", strerror(-ret));
        goto out;
    }
    if (pflag && !buf_is_pattern(buf.p, buf.len, pattern)) {
        printf("Pattern verification failed at offset %" PRId64 ", %zu bytes\n",
               offset, buf.len);
        ret = -EINVAL;
    }
    if (quiet) {
        goto out;
    }
    if (verbose) {
        dump_buffer(buf.p, offset, (int64_t)buf.len);
    }
    print_report("read", ns, offset, (int64_t)buf.len, (int64_t)buf.len, 1, csv);
out:
    iobuf_free(&buf);
    return ret;
}

int io_cmd_write(IoState *s, int argc, char **argv)
{
    bool csv = false, quiet = false, bflag = false, cflag = false;
    bool pflag = false, zflag = false, sflag = false;
    uint32_t flags = 0;
    int pattern = 0xcd, c, ret;
    const char *source = NULL;
    int64_t offset, count;

    while ((c = getopt(argc, argv, "bcCfnpP:qs:uz")) != -1) {
        switch (c) {
        case 'b':
            bflag = true;
            break;
        case 'c':
            cflag = true;
            break;
        case 'C':
            csv = true;
            break;
        case 'f':
            flags |= REQ_FUA;
            break;
        case 'n':
            flags |= REQ_NO_FALLBACK;
            break;
        case 'p':
            break;
        case 'P':
            pflag = true;
            pattern = parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            quiet = true;
            break;
        case 's':
            sflag = true;
            source = optarg;
            break;
        case 'u':
            flags |= REQ_MAY_UNMAP;
            break;
        case 'z':
            zflag = true;
            break;
        default:
            return io_usage("write");
        }
    }
    if (optind != argc - 2) {
        return io_usage("write");
    }
    if (bflag && zflag) {
        printf("-b and -z cannot be specified at the same time\n");
        return -EINVAL;
    }
    if ((flags & REQ_FUA) && (bflag || cflag)) {
        printf("-f and -b or -c cannot be specified at the same time\n");
        return -EINVAL;
    }
    if ((flags & REQ_NO_FALLBACK) && !zflag) {
        printf("-n requires -z to be specified\n");
        return -EINVAL;
    }
    if ((flags & REQ_MAY_UNMAP) && !zflag) {
        printf("-u requires -z to be specified\n");
        return -EINVAL;
    }
    if (zflag + pflag + sflag > 1) {
        printf("Only one of -z, -P, and -s can be specified at the same time\n");
        return -EINVAL;
    }
    if (!io_get_num(argv[optind], &offset) || !io_get_num(argv[optind + 1], &count)) {
        return -EINVAL;
    }
    if (count > BLOCK_MAX_RW_BYTES) {
        printf("length cannot exceed %" PRId64 ", given %s\n",
               BLOCK_MAX_RW_BYTES, argv[optind + 1]);
        return -EINVAL;
    }

    IoBuf buf = { 0 };
    if (!zflag) {
        bool ok = sflag ? iobuf_from_file(s, &buf, (size_t)count, source)
                        : iobuf_alloc(s, &buf, (size_t)count, pattern);
        if (!ok) {
            return -EINVAL;
        }
    }
    int64_t t0 = clock_ns();
    if (bflag || cflag) {
        /* No VM state area and no compression below a raw image. */
        ret = -ENOTSUP;
    } else if (zflag) {
        ret = strata_backend_pwrite_zeroes(s->be, offset, count, flags);
    } else {
        ret = strata_backend_pwrite(s->be, offset, buf.p, (size_t)count, flags);
    }
    int64_t ns = clock_ns() - t0;
    if (ret < 0) {
        printf("write failed: %s\n", strerror(-ret));
    } else if (!quiet) {
        print_report("wrote", ns, offset, count, count, 1, csv);
    }
    iobuf_free(&buf);
    return ret;
}

int io_cmd_writev(IoState *s, int argc, char **argv)
{
    bool csv = false, quiet = false;
    uint32_t flags = 0;
    int pattern = 0xcd, c, ret;
    int64_t offset;

    while ((c = getopt(argc, argv, "CfqP:")) != -1) {
        switch (c) {
        case 'C':
            csv = true;
            break;
        case 'f':
            flags |= REQ_FUA;
            break;
        case 'q':
            quiet = true;
            break;
        case 'P':
            pattern = parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        default:
            return io_usage("writev");
        }
    }
    if (optind > argc - 2) {
        return io_usage("writev");
    }
    if (!io_get_num(argv[optind], &offset)) {
        return -EINVAL;
    }
    optind++;

    IoBuf buf;
    g_autofree struct iovec *iov = NULL;
    int niov = argc - optind;
    if (!build_iov(s, &argv[optind], niov, pattern, &buf, &iov)) {
        return -EINVAL;
    }
    int64_t t0 = clock_ns();
    ret = strata_backend_pwritev(s->be, offset, iov, niov, flags);
    int64_t ns = clock_ns() - t0;
    if (ret < 0) {
        printf("writev failed: %s\n", strerror(-ret));
    } else if (!quiet) {
        print_report("wrote", ns, offset, (int64_t)buf.len, (int64_t)buf.len, 1,
                     csv);
    }
    iobuf_free(&buf);
    return ret;
}

/* ---- aio_read, aio_write, aio_flush ------------------------------------------ */

typedef struct AioReq {
    IoState *s;
    IoBuf buf;
    struct iovec *iov;
    int64_t offset, bytes;
    bool is_write, zeroes;
    bool quiet, verbose, csv, pflag;
    int pattern;
    int64_t start_ns;
} AioReq;

static void aio_req_free(AioReq *r)
{
    iobuf_free(&r->buf);
    g_free(r->iov);
    g_free(r);
}

/* Completion, in a later loop iteration: the result line prints now. */
static void aio_done(void *opaque, int64_t ret)
{
    AioReq *r = opaque;
    int64_t ns = clock_ns() - r->start_ns;

    r->s->aio_in_flight--;
    if (ret < 0) {
        printf("%s failed: %s\n", r->is_write ? "aio_write" : "readv",
               strerror((int)-ret));
        goto out;
    }
    if (r->pflag && !buf_is_pattern(r->buf.p, r->buf.len, r->pattern)) {
        printf("Pattern verification failed at offset %" PRId64 ", %zu bytes\n",
               r->offset, r->buf.len);
    }
    if (r->quiet) {
        goto out;
    }
    if (r->verbose) {
        dump_buffer(r->buf.p, r->offset, r->bytes);
    }
    print_report(r->is_write ? "wrote" : "read", ns, r->offset, r->bytes,
                 r->bytes, 1, r->csv);
out:
    aio_req_free(r);
}

static int aio_submit(IoState *s, AioReq *r, int niov, uint32_t flags)
{
    int ret;

    r->s = s;
    r->start_ns = clock_ns();
    s->aio_in_flight++;
    if (r->zeroes) {
        ret = strata_backend_aio_pwrite_zeroes(s->be, r->offset, r->bytes, flags,
                                               aio_done, r);
    } else if (r->is_write) {
        ret = strata_backend_aio_pwritev(s->be, r->offset, r->iov, niov, flags,
                                         aio_done, r);
    } else {
        ret = strata_backend_aio_preadv(s->be, r->offset, r->iov, niov, flags,
                                        aio_done, r);
    }
    if (ret < 0) {
        /* Refused at submission: report it as qemu-io reports a failed
         * completion; the command itself still succeeded. */
        aio_done(r, ret);
    }
    return 0;
}

int io_cmd_aio_read(IoState *s, int argc, char **argv)
{
    AioReq *r = g_new0(AioReq, 1);
    int c;

    while ((c = getopt(argc, argv, "CP:iqv")) != -1) {
        switch (c) {
        case 'C':
            r->csv = true;
            break;
        case 'P':
            r->pflag = true;
            r->pattern = parse_pattern(optarg);
            if (r->pattern < 0) {
                g_free(r);
                return -EINVAL;
            }
            break;
        case 'i':
            printf("injecting invalid read request\n");
            g_free(r);
            return 0;
        case 'q':
            r->quiet = true;
            break;
        case 'v':
            r->verbose = true;
            break;
        default:
            g_free(r);
            return io_usage("aio_read");
        }
    }
    if (optind > argc - 2) {
        g_free(r);
        return io_usage("aio_read");
    }
    if (!io_get_num(argv[optind], &r->offset)) {
        g_free(r);
        return -EINVAL;
    }
    optind++;
    int niov = argc - optind;
    if (!build_iov(s, &argv[optind], niov, 0xab, &r->buf, &r->iov)) {
        g_free(r);
        return -EINVAL;
    }
    r->bytes = (int64_t)r->buf.len;
    return aio_submit(s, r, niov, 0);
}

int io_cmd_aio_write(IoState *s, int argc, char **argv)
{
    AioReq *r = g_new0(AioReq, 1);
    uint32_t flags = 0;
    int pattern = 0xcd, c;
    bool pflag = false;

    r->is_write = true;
    while ((c = getopt(argc, argv, "CfiqP:uz")) != -1) {
        switch (c) {
        case 'C':
            r->csv = true;
            break;
        case 'f':
            flags |= REQ_FUA;
            break;
        case 'q':
            r->quiet = true;
            break;
        case 'u':
            flags |= REQ_MAY_UNMAP;
            break;
        case 'P':
            pflag = true;
            pattern = parse_pattern(optarg);
            if (pattern < 0) {
                g_free(r);
                return -EINVAL;
            }
            break;
        case 'i':
            printf("injecting invalid write request\n");
            g_free(r);
            return 0;
        case 'z':
            r->zeroes = true;
            break;
        default:
            g_free(r);
            return io_usage("aio_write");
        }
    }
    if (optind > argc - 2) {
        g_free(r);
        return io_usage("aio_write");
    }
    if (r->zeroes && optind != argc - 2) {
        printf("-z supports only a single length parameter\n");
        g_free(r);
        return -EINVAL;
    }
    if ((flags & REQ_MAY_UNMAP) && !r->zeroes) {
        printf("-u requires -z to be specified\n");
        g_free(r);
        return -EINVAL;
    }
    if (r->zeroes && pflag) {
        printf("-z and -P cannot be specified at the same time\n");
        g_free(r);
        return -EINVAL;
    }
    if (!io_get_num(argv[optind], &r->offset)) {
        g_free(r);
        return -EINVAL;
    }
    optind++;
    int niov = argc - optind;
    if (r->zeroes) {
        if (!io_get_num(argv[optind], &r->bytes)) {
            g_free(r);
            return -EINVAL;
        }
    } else {
        if (!build_iov(s, &argv[optind], niov, pattern, &r->buf, &r->iov)) {
            g_free(r);
            return -EINVAL;
        }
        r->bytes = (int64_t)r->buf.len;
    }
    return aio_submit(s, r, niov, flags);
}

int io_cmd_aio_flush(IoState *s, int argc, char **argv)
{
    while (s->aio_in_flight > 0) {
        loop_run_once(s->ctx->loop, true);
    }
    return 0;
}

/* ---- flush, discard, truncate, length ------------------------------------------ */

int io_cmd_flush(IoState *s, int argc, char **argv)
{
    int ret = strata_backend_flush(s->be);
    if (ret < 0) {
        printf("flush failed: %s\n", strerror(-ret));
    }
    return ret;
}

int io_cmd_discard(IoState *s, int argc, char **argv)
{
    bool csv = false, quiet = false;
    int64_t offset, bytes;
    int c;

    while ((c = getopt(argc, argv, "Cq")) != -1) {
        switch (c) {
        case 'C':
            csv = true;
            break;
        case 'q':
            quiet = true;
            break;
        default:
            return io_usage("discard");
        }
    }
    if (optind != argc - 2) {
        return io_usage("discard");
    }
    if (!io_get_num(argv[optind], &offset) || !io_get_num(argv[optind + 1], &bytes)) {
        return -EINVAL;
    }
    if (bytes > BLOCK_MAX_RW_BYTES) {
        printf("length cannot exceed %" PRId64 ", given %s\n",
               BLOCK_MAX_RW_BYTES, argv[optind + 1]);
        return -EINVAL;
    }
    int64_t t0 = clock_ns();
    int ret = strata_backend_pdiscard(s->be, offset, bytes);
    int64_t ns = clock_ns() - t0;
    if (ret < 0) {
        printf("discard failed: %s\n", strerror(-ret));
        return ret;
    }
    if (!quiet) {
        print_report("discard", ns, offset, bytes, bytes, 1, csv);
    }
    return 0;
}

typedef struct TruncateCall {
    IoState *s;
    int64_t size;
    PreallocMode prealloc;
    StrataError *err;
    int ret;
    bool done;
} TruncateCall;

static void truncate_co_entry(void *opaque)
{
    TruncateCall *t = opaque;

    t->ret = backend_co_truncate(t->s->be, t->size, t->prealloc, &t->err);
    t->done = true;
}

int io_cmd_truncate(IoState *s, int argc, char **argv)
{
    TruncateCall t = { .s = s, .prealloc = PREALLOC_OFF };
    int c;

    while ((c = getopt(argc, argv, "m:")) != -1) {
        switch (c) {
        case 'm': {
            int i;
            for (i = 0; prealloc_mode_names[i]; i++) {
                if (!strcmp(optarg, prealloc_mode_names[i])) {
                    break;
                }
            }
            if (!prealloc_mode_names[i]) {
                io_error("Invalid preallocation mode '%s'", optarg);
                return -EINVAL;
            }
            t.prealloc = (PreallocMode)i;
            break;
        }
        default:
            return io_usage("truncate");
        }
    }
    if (optind != argc - 1) {
        return io_usage("truncate");
    }
    if (!io_get_num(argv[optind], &t.size)) {
        return -EINVAL;
    }
    loop_co_spawn(s->ctx->loop, truncate_co_entry, &t);
    while (!t.done) {
        loop_run_once(s->ctx->loop, true);
    }
    if (t.ret < 0) {
        if (t.err) {
            io_error("%s", strata_error_get_message(t.err));
        } else {
            io_error("Failed to truncate: %s", strerror(-t.ret));
        }
    }
    strata_error_free(t.err);
    return t.ret;
}

int io_cmd_length(IoState *s, int argc, char **argv)
{
    char s1[64];
    int64_t size = strata_backend_get_length(s->be);

    if (size < 0) {
        printf("getlength: %s\n", strerror((int)-size));
        return (int)size;
    }
    io_fmt_size((double)size, s1, sizeof(s1));
    printf("%s\n", s1);
    return 0;
}

/* ---- alloc, map -------------------------------------------------------------- */

/* "Allocated" here means the storage holds data for the range
 * (STRATA_BLOCK_DATA); ranges that only read as zeroes are not. */
static int block_allocated(IoState *s, int64_t offset, int64_t bytes,
                           int64_t *pnum)
{
    int ret = strata_backend_block_status(s->be, offset, bytes, pnum);
    if (ret < 0) {
        return ret;
    }
    return (ret & STRATA_BLOCK_DATA) ? 1 : 0;
}

int io_cmd_alloc(IoState *s, int argc, char **argv)
{
    int64_t offset, count = 512, sum = 0, len;
    char s1[64];

    if (!io_get_num(argv[1], &offset)) {
        return -EINVAL;
    }
    if (argc == 3 && !io_get_num(argv[2], &count)) {
        return -EINVAL;
    }
    len = strata_backend_get_length(s->be);
    if (len < 0) {
        printf("is_allocated failed: %s\n", strerror((int)-len));
        return (int)len;
    }
    /* Like qemu-io, count only up to the end of the image. */
    count = offset >= len ? 0 : MIN(count, len - offset);
    for (int64_t pos = offset; pos < offset + count;) {
        int64_t pnum = 0;
        int ret = block_allocated(s, pos, offset + count - pos, &pnum);
        if (ret < 0) {
            printf("is_allocated failed: %s\n", strerror(-ret));
            return ret;
        }
        if (pnum <= 0) {
            break;
        }
        if (ret) {
            sum += pnum;
        }
        pos += pnum;
    }
    io_fmt_size((double)offset, s1, sizeof(s1));
    printf("%" PRId64 "/%" PRId64 " bytes allocated at offset %s\n", sum, count, s1);
    return 0;
}

int io_cmd_map(IoState *s, int argc, char **argv)
{
    int64_t len = strata_backend_get_length(s->be);
    int64_t offset = 0;

    if (len < 0) {
        io_error("Failed to query image length: %s", strerror((int)-len));
        return (int)len;
    }
    while (offset < len) {
        int64_t run = 0, pnum;
        int first = -1;

        /* Merge the runs of one allocation state into one line. */
        while (offset + run < len) {
            int ret = block_allocated(s, offset + run, len - offset - run, &pnum);
            if (ret < 0) {
                io_error("Failed to get allocation status: %s", strerror(-ret));
                return ret;
            }
            if (pnum <= 0) {
                io_error("Unexpected end of image");
                return -EIO;
            }
            if (first >= 0 && ret != first) {
                break;
            }
            first = ret;
            run += pnum;
        }
        char s1[64], s2[64];
        io_fmt_size((double)run, s1, sizeof(s1));
        io_fmt_size((double)offset, s2, sizeof(s2));
        printf("%s (0x%" PRIx64 ") bytes %s at offset %s (0x%" PRIx64 ")\n",
               s1, (uint64_t)run, first ? "    allocated" : "not allocated",
               s2, (uint64_t)offset);
        offset += run;
    }
    return 0;
}
