/*
 * strata-img convert: copy one or more images into one, as qemu-img does
 * SPDX-License-Identifier: MIT
 *
 *   strata-img convert [--object OBJ] [--image-opts] [--target-image-opts]
 *       [--target-is-zero] [-U] [-p] [-q] [-n] [-f FMT] [-t CACHE]
 *       [-T SRC_CACHE] [-O FMT] [-o OPTIONS] [-S SPARSE_SIZE] [-m N] [-W]
 *       SRC [SRC2 [...]] DST
 *
 * The sources are laid end to end in the target, which is created with
 * their total size (raw, through file_create) unless -n says it exists or
 * it is a block device.
 * The copy runs through the library's request path: -m coroutines (8 by
 * default, at most 16) in the context's loop, each claiming the next
 * chunk of the concatenated sources, reading it and writing it.
 *
 * What a chunk is.  Block status of the source splits the space into
 * runs that read as zeroes and runs of data; a chunk is at most one run,
 * at most 2 MiB of data (one buffer per coroutine) or 1 GiB of zeroes,
 * never crosses a source, and ends on the larger request alignment of the
 * nodes involved when it can, so that the target sees no read-modify-write
 * between chunks.
 *
 * What is written.  With sparse detection (-S SIZE, 4 KiB by default):
 *   - a run that reads as zeroes is skipped when the target already reads
 *     as zeroes (a target created here, or -n with --target-is-zero), and
 *     otherwise written as write-zeroes that may unmap;
 *   - a data chunk is scanned in units of max(pow2floor(SIZE), the
 *     target's request alignment), aligned on target offsets; a run of
 *     zero units is treated as a zero run (above) when it starts the chunk
 *     or is at least SIZE long, and written as data otherwise.
 * -S 0 turns all of it off: every byte is read and written as data, so
 * that the target ends fully allocated (qemu-img's meaning).
 *
 * Order.  By default writes reach the target in offset order (reads still
 * overlap): a coroutine waits for the write before its chunk to complete.
 * -W lets them go out of order, all -m in flight.
 *
 * Output.  Nothing by default, as qemu-img; -p prints qemu-img's progress
 * line ("    (42.00/100%)\r"), then a summary line of what the copy did:
 * bytes copied, zeroed and skipped, the time and the rate (the whole
 * virtual size over the time).  A failure prints qemu-img's message
 * ("error while reading at byte N: ..."), and a target this command
 * created (it did not exist before) is removed.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/backend-int.h"
#include "block/block-int.h"
#include "block/file-posix.h"
#include "tools/strata-img.h"

#define CONVERT_MAX_COROUTINES 16
#define CONVERT_DEFAULT_COROUTINES 8
#define CONVERT_BUF_SIZE ((int64_t)2 << 20)
#define CONVERT_MAX_ZERO_CHUNK ((int64_t)1 << 30)
#define CONVERT_MAX_SPARSE ((int64_t)16 << 20)
#define CONVERT_DEFAULT_SPARSE 4096

typedef struct ConvSource {
    const char *name;
    StrataBackend *be;
    int64_t size;
    int64_t span;           /* size rounded up to 512: its room in the target */
    int64_t base;           /* where its first byte lands in the target */
    int64_t status_end;     /* block status known up to here (source offsets) */
    int status;             /* STRATA_BLOCK_* of the run ending there */
} ConvSource;

typedef struct ImgConvert {
    StrataContext *ctx;
    ConvSource *src;
    int nsrc;
    StrataBackend *target;
    int64_t total;              /* sum of the source spans */
    int64_t align;              /* chunk ends land on this when they can */
    int64_t sparse_unit;        /* zero detection granularity */
    int64_t min_sparse;         /* -S; 0: no sparse detection */
    bool zero_init;             /* the target reads as zeroes already */
    bool in_order;              /* not -W */

    CoMutex claim_lock;         /* claiming yields for block status */
    int cur_src;
    int64_t next;               /* first target byte not claimed yet */
    int64_t wr_offs;            /* in order: where the next write starts */
    struct ConvWorker *worker;  /* the coroutines' state, [nworkers] */
    int nworkers;
    int workers;                /* coroutines still running */

    int ret;                    /* first failure, -errno */
    char *err_msg;              /* its message */
    uint64_t copied, zeroed, skipped, done;
    ImgProgress progress;
} ImgConvert;

typedef struct ConvWorker {
    ImgConvert *s;
    uint8_t *buf;               /* CONVERT_BUF_SIZE bytes */
    Coroutine *waiting;         /* in order: parked until wr_offs == wait_for */
    int64_t wait_for;
} ConvWorker;

typedef struct ConvChunk {
    int64_t offset;             /* in the target */
    int64_t bytes;
    ConvSource *src;
    int64_t src_offset;
    bool zero;                  /* the source reads as zeroes here */
    bool pad;                   /* past the source's end, in its last sector */
} ConvChunk;

/*
 * In order: wake the coroutine whose chunk starts at s->wr_offs, or with
 * @all every parked one (the copy failed).  Only the next writer is woken,
 * not all of them: with -m 16 a broadcast would cost fifteen useless
 * switches per chunk.
 */
static void conv_wake_writers(ImgConvert *s, bool all)
{
    for (int i = 0; i < s->nworkers; i++) {
        ConvWorker *w = &s->worker[i];

        if (w->waiting && (all || w->wait_for == s->wr_offs)) {
            Coroutine *co = w->waiting;

            w->waiting = NULL;
            loop_co_wake(co);
            if (!all) {
                return;
            }
        }
    }
}

/* Record the first failure (later ones are consequences or races) and
 * wake the coroutines waiting for their turn, so that they stop. */
static int G_GNUC_PRINTF(3, 4) conv_fail(ImgConvert *s, int ret, const char *fmt, ...)
{
    if (!s->ret) {
        va_list ap;

        s->ret = ret;
        va_start(ap, fmt);
        s->err_msg = g_strdup_vprintf(fmt, ap);
        va_end(ap);
    }
    conv_wake_writers(s, true);
    return ret;
}

/* Claim the next chunk: 1 with *ch set, 0 when nothing is left (or the
 * copy failed), -errno when block status failed. */
static int conv_co_claim(ImgConvert *s, ConvChunk *ch)
{
    ConvSource *src;
    int ret = 1;

    co_mutex_lock(&s->claim_lock);
    while (s->cur_src < s->nsrc &&
           s->next >= s->src[s->cur_src].base + s->src[s->cur_src].span) {
        s->cur_src++;
    }
    if (s->ret || s->cur_src >= s->nsrc) {
        ret = 0;
        goto out;
    }
    src = &s->src[s->cur_src];

    int64_t local = s->next - src->base;
    int64_t n;
    bool zero = false, pad = false;

    if (local >= src->size) {
        /* The padding to a whole sector: zeroes, handled as data read
         * from nowhere (so that -S 0 writes it too). */
        n = src->span - local;
        pad = true;
    } else if (!s->min_sparse) {
        n = MIN(src->size - local, CONVERT_BUF_SIZE);
    } else {
        if (local >= src->status_end) {
            int64_t pnum = 0;
            int st = backend_co_block_status(src->be, local, src->size - local, &pnum);
            if (st < 0) {
                ret = conv_fail(s, st, "error while reading block status of "
                                "sector %" PRId64 ": %s", local / 512, strerror(-st));
                goto out;
            }
            src->status_end = local + MAX(pnum, 1);
            src->status = st;
        }
        zero = src->status & STRATA_BLOCK_ZERO;
        n = MIN(src->status_end - local,
                zero ? CONVERT_MAX_ZERO_CHUNK : CONVERT_BUF_SIZE);
    }
    /* End on the alignment unless that is the end of the source or would
     * leave nothing. */
    if (local + n < src->size) {
        int64_t tail = (s->next + n) & (s->align - 1);
        if (n > tail) {
            n -= tail;
        }
    }
    *ch = (ConvChunk){
        .offset = s->next, .bytes = n, .src = src, .src_offset = local,
        .zero = zero, .pad = pad,
    };
    s->next += n;
out:
    co_mutex_unlock(&s->claim_lock);
    return ret;
}

static int conv_co_zero(ImgConvert *s, int64_t offset, int64_t bytes)
{
    if (s->zero_init) {
        s->skipped += (uint64_t)bytes;
        return 0;
    }
    int ret = backend_co_pwrite_zeroes(s->target, offset, bytes, REQ_MAY_UNMAP);
    if (ret == 0) {
        s->zeroed += (uint64_t)bytes;
    }
    return ret;
}

static int conv_co_pwrite(ImgConvert *s, int64_t offset, int64_t bytes,
                          uint8_t *buf)
{
    IOVector qiov;

    iov_init_buf(&qiov, buf, (size_t)bytes);
    int ret = backend_co_pwritev(s->target, offset, bytes, &qiov, 0);
    iov_cleanup(&qiov);
    if (ret == 0) {
        s->copied += (uint64_t)bytes;
    }
    return ret;
}

/*
 * Write the data chunk at @offset, finding zero runs as the header says:
 *
 *   units   |  u0  |  u1  |  u2  |  u3  |  u4  |   (aligned on target offsets)
 *   content  zero   data   zero   zero   data
 *            └ leading: zeroes; u2-u3 zeroes only if >= min_sparse
 */
static int conv_co_write_data(ImgConvert *s, int64_t offset, int64_t bytes,
                              uint8_t *buf)
{
    int64_t unit = s->sparse_unit;
    int64_t min = MIN(s->min_sparse, bytes);
    int64_t pos = 0, data_start = 0;
    int ret;

    if (!s->min_sparse) {
        return conv_co_pwrite(s, offset, bytes, buf);
    }
    while (pos < bytes) {
        int64_t lim = MIN(bytes, ROUND_DOWN(offset + pos, unit) + unit - offset);

        if (!img_buf_is_zero(buf + pos, (size_t)(lim - pos))) {
            pos = lim;
            continue;
        }
        int64_t zstart = pos;
        pos = lim;
        while (pos < bytes) {
            lim = MIN(bytes, pos + unit);
            if (!img_buf_is_zero(buf + pos, (size_t)(lim - pos))) {
                break;
            }
            pos = lim;
        }
        if (zstart > 0 && pos - zstart < min) {
            continue;       /* too short: stays in the data run */
        }
        if (zstart > data_start) {
            ret = conv_co_pwrite(s, offset + data_start, zstart - data_start,
                                 buf + data_start);
            if (ret < 0) {
                return ret;
            }
        }
        ret = conv_co_zero(s, offset + zstart, pos - zstart);
        if (ret < 0) {
            return ret;
        }
        data_start = pos;
    }
    if (bytes > data_start) {
        return conv_co_pwrite(s, offset + data_start, bytes - data_start,
                              buf + data_start);
    }
    return 0;
}

static void conv_co_worker(void *opaque)
{
    ConvWorker *w = opaque;
    ImgConvert *s = w->s;
    ConvChunk ch = { 0 };

    while (conv_co_claim(s, &ch) > 0) {
        int ret = 0;

        if (ch.pad) {
            memset(w->buf, 0, (size_t)ch.bytes);
        } else if (!ch.zero) {
            IOVector qiov;

            iov_init_buf(&qiov, w->buf, (size_t)ch.bytes);
            ret = backend_co_preadv(ch.src->be, ch.src_offset, ch.bytes, &qiov, 0);
            iov_cleanup(&qiov);
            if (ret < 0) {
                conv_fail(s, ret, "error while reading at byte %" PRId64 ": %s",
                          ch.offset, strerror(-ret));
                break;
            }
        }
        while (s->in_order && s->wr_offs != ch.offset && !s->ret) {
            w->wait_for = ch.offset;
            w->waiting = co_self();
            co_yield();
        }
        if (s->ret) {
            break;
        }
        ret = ch.zero ? conv_co_zero(s, ch.offset, ch.bytes)
                      : conv_co_write_data(s, ch.offset, ch.bytes, w->buf);
        if (ret < 0) {
            conv_fail(s, ret, "error while writing at byte %" PRId64 ": %s",
                      ch.offset, strerror(-ret));
            break;
        }
        if (s->in_order) {
            s->wr_offs = ch.offset + ch.bytes;
            conv_wake_writers(s, false);
        }
        s->done += (uint64_t)ch.bytes;
        img_progress_set(&s->progress, 100.0 * (double)s->done / (double)s->total);
    }
    s->workers--;
}

/* ---- the command ------------------------------------------------------------- */

static void convert_usage(void)
{
    printf("Usage: strata-img convert [--object OBJ] [--image-opts] "
           "[--target-image-opts] [--target-is-zero]\n"
           "        [-U] [-p] [-q] [-n] [-f FMT] [-t CACHE] [-T SRC_CACHE] [-O FMT]\n"
           "        [-o OPTIONS] [-S SPARSE_SIZE] [-m N] [-W] SRC [SRC2 [...]] DST\n");
}

typedef struct ConvertArgs {
    ImgOpenFlags src_flags, dst_flags;
    const char *out_fmt;
    PreallocMode prealloc;
    bool skip_create, target_is_zero, progress, quiet, in_order;
    int64_t min_sparse;
    int coroutines;
} ConvertArgs;

/* Options; the index of the first file argument, or -1 (exit 1) / -2
 * (exit 0, help printed). */
static int convert_parse(int argc, char **argv, ConvertArgs *a)
{
    enum { LOPT_OBJECT = 256, LOPT_IMAGE_OPTS, LOPT_TARGET_IMAGE_OPTS,
           LOPT_TARGET_IS_ZERO };
    static const struct option long_opts[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, LOPT_OBJECT },
        { "image-opts", no_argument, NULL, LOPT_IMAGE_OPTS },
        { "target-image-opts", no_argument, NULL, LOPT_TARGET_IMAGE_OPTS },
        { "target-is-zero", no_argument, NULL, LOPT_TARGET_IS_ZERO },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    const char *prealloc_name = NULL;
    int c;

    *a = (ConvertArgs){
        .src_flags = { .cache = "writeback" },
        .dst_flags = { .cache = "unsafe", .writable = true, .unmap = true },
        .out_fmt = "raw",
        .min_sparse = CONVERT_DEFAULT_SPARSE,
        .coroutines = CONVERT_DEFAULT_COROUTINES,
        .in_order = true,
    };
    optind = 1;
    while ((c = getopt_long(argc, argv, ":hf:O:o:S:pqnm:t:T:WUcB:", long_opts,
                            NULL)) != -1) {
        switch (c) {
        case ':':
            img_error("option requires an argument -- '%c'", optopt);
            return -1;
        case '?':
            img_error("unrecognized option '%s'", argv[optind - 1]);
            convert_usage();
            return -1;
        case 'h':
            convert_usage();
            return -2;
        case 'f':
            a->src_flags.fmt = optarg;
            break;
        case 'O':
            a->out_fmt = optarg;
            break;
        case 'o':
            if (!img_parse_create_opts(optarg, &a->prealloc, &prealloc_name)) {
                return -1;
            }
            break;
        case 'S': {
            int64_t v;
            if (tool_cvtnum(optarg, &v, NULL) < 0) {
                img_error("Invalid buffer size for sparse output specified. "
                          "You may use k, M, G, T, P or E suffixes for");
                img_error("kilobytes, megabytes, gigabytes, terabytes, "
                          "petabytes and exabytes.");
                return -1;
            }
            if (v % 512 || v > CONVERT_MAX_SPARSE) {
                img_error("Invalid buffer size for sparse output specified. "
                          "Valid sizes are multiples of 512 up to %" PRId64
                          ". Select 0 to disable sparse detection (fully "
                          "allocates output).", CONVERT_MAX_SPARSE);
                return -1;
            }
            a->min_sparse = v;
            break;
        }
        case 'p':
            a->progress = true;
            break;
        case 'q':
            a->quiet = true;
            break;
        case 'n':
            a->skip_create = true;
            break;
        case 'm': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < 1 || v > CONVERT_MAX_COROUTINES) {
                img_error("Invalid number of coroutines. Allowed number of "
                          "coroutines is between 1 and %d", CONVERT_MAX_COROUTINES);
                return -1;
            }
            a->coroutines = (int)v;
            break;
        }
        case 't':
            a->dst_flags.cache = optarg;
            break;
        case 'T':
            a->src_flags.cache = optarg;
            break;
        case 'W':
            a->in_order = false;
            break;
        case 'U':
            a->src_flags.force_share = true;
            break;
        case 'c':
            img_error("Compression not supported for this file format");
            return -1;
        case 'B':
            img_error("Backing file not supported for file format '%s'", a->out_fmt);
            return -1;
        case LOPT_OBJECT:
            if (!img_object_add(optarg)) {
                return -1;
            }
            break;
        case LOPT_IMAGE_OPTS:
            a->src_flags.image_opts = true;
            break;
        case LOPT_TARGET_IMAGE_OPTS:
            a->dst_flags.image_opts = true;
            break;
        case LOPT_TARGET_IS_ZERO:
            a->target_is_zero = true;
            break;
        }
    }
    if (!img_cache_mode_valid(a->dst_flags.cache, "cache") ||
        !img_cache_mode_valid(a->src_flags.cache, "source cache")) {
        return -1;
    }
    if (a->quiet) {
        a->progress = false;
    }
    if (argc - optind < 2) {
        img_error("Must specify image file name");
        return -1;
    }
    if (a->dst_flags.image_opts && !a->skip_create) {
        img_error("--target-image-opts requires use of -n flag");
        return -1;
    }
    if (a->target_is_zero && !a->skip_create) {
        img_error("--target-is-zero requires use of -n flag");
        return -1;
    }
    if (strcmp(a->out_fmt, "raw")) {
        img_error("Unknown file format '%s'", a->out_fmt);
        return -1;
    }
    if (a->skip_create && prealloc_name) {
        /* qemu-img ignores -o with -n; so does this. */
        a->prealloc = PREALLOC_OFF;
    }
    return optind;
}

/* The largest request alignment on @be's root. */
static int64_t conv_align_of(StrataBackend *be, int64_t *mem_align)
{
    StrataLimits l;

    strata_node_get_limits(strata_backend_get_root(be), &l);
    *mem_align = MAX(*mem_align, (int64_t)l.opt_mem_alignment);
    return MAX((int64_t)l.request_alignment, 1);
}

static int64_t pow2floor(int64_t v)
{
    int64_t p = 1;

    while (p <= v / 2) {
        p <<= 1;
    }
    return p;
}

/* Run the copy: the coroutines, then the flush.  0 or -errno, with
 * s->err_msg set. */
static int conv_run(ImgConvert *s, int coroutines, int64_t mem_align)
{
    ConvWorker *w = g_new0(ConvWorker, coroutines);
    int started = 0;

    co_mutex_init(&s->claim_lock);
    s->worker = w;
    for (int i = 0; i < coroutines; i++) {
        void *buf = NULL;
        if (posix_memalign(&buf, (size_t)mem_align, CONVERT_BUF_SIZE)) {
            break;
        }
        w[i] = (ConvWorker){ .s = s, .buf = buf };
        started++;
    }
    if (!started) {
        g_free(w);
        return conv_fail(s, -ENOMEM, "Could not allocate the copy buffers");
    }
    s->workers = s->nworkers = started;
    for (int i = 0; i < started; i++) {
        loop_co_spawn(s->ctx->loop, conv_co_worker, &w[i]);
    }
    while (s->workers > 0) {
        loop_run_once(s->ctx->loop, true);
    }
    for (int i = 0; i < started; i++) {
        free(w[i].buf);
    }
    s->worker = NULL;
    s->nworkers = 0;
    g_free(w);
    if (!s->ret) {
        int ret = strata_backend_flush(s->target);
        if (ret < 0) {
            conv_fail(s, ret, "error while flushing the target: %s", strerror(-ret));
        }
    }
    return s->ret;
}

int img_convert(int argc, char **argv)
{
    ConvertArgs a;
    int idx = convert_parse(argc, argv, &a);
    ImgConvert s = { 0 };
    StrataError *err = NULL;
    bool created = false;
    int rc = 1;

    if (idx < 0) {
        return idx == -2 ? 0 : 1;
    }
    /* qemu-img starts its progress line before it opens anything, and
     * ends it whatever happens. */
    img_progress_init(&s.progress, a.progress, 1.0);
    img_progress_set(&s.progress, 0);
    const char *dst = argv[argc - 1];
    s.nsrc = argc - 1 - idx;
    s.src = g_new0(ConvSource, s.nsrc);
    s.ctx = img_context_new();
    if (!s.ctx) {
        g_free(s.src);
        return 1;
    }

    int64_t mem_align = sysconf(_SC_PAGESIZE);
    s.align = 1;
    for (int i = 0; i < s.nsrc; i++) {
        ConvSource *src = &s.src[i];
        src->name = argv[idx + i];
        src->be = img_open_report(s.ctx, src->name, &a.src_flags);
        if (!src->be) {
            goto out;
        }
        src->size = strata_backend_get_length(src->be);
        if (src->size < 0) {
            img_error("Could not get size of '%s': %s", src->name,
                      strerror((int)-src->size));
            goto out;
        }
        /* qemu-img counts in 512-byte sectors: each source takes whole
         * sectors of the target, its tail padded with zeroes. */
        src->span = ROUND_UP(src->size, 512);
        src->base = s.total;
        s.total += src->span;
        s.align = MAX(s.align, conv_align_of(src->be, &mem_align));
    }

    struct stat st;
    bool existed = !a.dst_flags.image_opts && stat(dst, &st) == 0;
    /* A block device is not created but used as it is, as qemu-img's
     * host_device does; it does not read as zeroes. */
    bool device = existed && S_ISBLK(st.st_mode);

    if (!a.skip_create && !device) {
        if (!file_create(dst, s.total, a.prealloc, &err)) {
            img_error("%s: error while converting %s: %s", dst, a.out_fmt,
                      strata_error_get_message(err));
            strata_error_free(err);
            goto out;
        }
        created = !existed;
    }
    if (!a.skip_create) {
        a.dst_flags.fmt = a.out_fmt;
    }
    s.target = img_open_report(s.ctx, dst, &a.dst_flags);
    if (!s.target) {
        goto out;
    }
    int64_t tsize = strata_backend_get_length(s.target);
    if (tsize < 0) {
        img_error("Could not get size of '%s': %s", dst, strerror((int)-tsize));
        goto out;
    }
    if (tsize < s.total) {
        if (device && !a.skip_create) {
            img_error("%s: error while converting %s: Cannot grow device files",
                      dst, a.out_fmt);
        } else {
            img_error("output file is smaller than input file");
        }
        goto out;
    }
    int64_t talign = conv_align_of(s.target, &mem_align);
    s.align = MAX(s.align, talign);
    s.min_sparse = a.min_sparse;
    s.sparse_unit = MAX(pow2floor(MAX(a.min_sparse, 1)), talign);
    s.zero_init = a.min_sparse && ((!a.skip_create && !device) || a.target_is_zero);
    s.in_order = a.in_order;

    int64_t start = clock_ns();
    if (s.total > 0 && conv_run(&s, a.coroutines, mem_align) < 0) {
        img_error("%s", s.err_msg);
        goto out;
    }
    double secs = (double)(clock_ns() - start) / 1e9;
    img_progress_set(&s.progress, 100);
    img_progress_end(&s.progress);
    s.progress.enabled = false;
    if (a.progress) {
        printf("Copied %" PRIu64 " bytes, zeroed %" PRIu64 " bytes, skipped %"
               PRIu64 " bytes (zeroes/holes) in %.3f s: %.1f MiB/s\n",
               s.copied, s.zeroed, s.skipped, secs,
               secs > 0 ? (double)s.total / secs / (1 << 20) : 0.0);
    }
    rc = 0;
out:
    img_progress_end(&s.progress);
    if (s.target) {
        strata_backend_free(s.target);
    }
    for (int i = 0; i < s.nsrc; i++) {
        if (s.src[i].be) {
            strata_backend_free(s.src[i].be);
        }
    }
    strata_context_free(s.ctx);
    if (rc && created) {
        if (unlink(dst) == 0) {
            img_error("removed the incomplete target '%s'", dst);
        }
    }
    g_free(s.err_msg);
    g_free(s.src);
    return rc;
}
