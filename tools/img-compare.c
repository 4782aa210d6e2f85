/*
 * strata-img compare: do two images read the same?  As qemu-img compare
 * SPDX-License-Identifier: MIT
 *
 *   strata-img compare [--object OBJ] [--image-opts] [-f FMT] [-F FMT]
 *       [-T SRC_CACHE] [-p] [-q] [-s] [-U] FILE1 FILE2
 *
 * Walks the common part by block status runs of both images: where both
 * read as zeroes nothing is read, elsewhere both are read (2 MiB at most
 * at a time) and compared.  The first difference is reported as qemu-img
 * does, at the start of its 512-byte sector counted from the start of the
 * run ("Content mismatch at offset N!").  Images of different sizes are
 * equal when the extra part of the larger reads as zeroes ("Warning:
 * Image size mismatch!" first).  -s (strict) also fails on a size
 * difference and on runs whose status differs, as qemu-img's strict mode:
 * data against zeroes, or one run reaching the end of its image where the
 * other does not (qemu-img's status carries an end-of-file flag).
 *
 * Exit status, as qemu-img's: 0 identical, 1 different, 2 an image could
 * not be opened, 3 block status failed, 4 a read failed; 1 also for bad
 * arguments.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/block-int.h"
#include "tools/strata-img.h"

#define COMPARE_BUF_SIZE ((int64_t)2 << 20)
#define COMPARE_SECTOR 512

enum { CMP_SAME = 0, CMP_DIFFER = 1, CMP_OPEN_ERROR = 2, CMP_STATUS_ERROR = 3,
       CMP_READ_ERROR = 4 };

typedef struct CmpImage {
    const char *name;
    StrataBackend *be;
    int64_t size;
    uint8_t *buf;
} CmpImage;

static void compare_usage(void)
{
    printf("Usage: strata-img compare [--object OBJ] [--image-opts] [-f FMT] "
           "[-F FMT] [-T SRC_CACHE]\n"
           "        [-p] [-q] [-s] [-U] FILE1 FILE2\n");
}

/* Block status of @img at @offset up to its end: STRATA_BLOCK_* flags
 * and *pnum, or -1 with qemu-img's message. */
static int cmp_status(CmpImage *img, int64_t offset, int64_t *pnum)
{
    int ret = strata_backend_block_status(img->be, offset, img->size - offset, pnum);

    if (ret < 0 || *pnum <= 0) {
        img_error("Sector allocation test failed for %s", img->name);
        return -1;
    }
    return ret;
}

static bool cmp_read(CmpImage *img, int64_t offset, int64_t bytes)
{
    int ret = strata_backend_pread(img->be, offset, img->buf, (size_t)bytes, 0);

    if (ret < 0) {
        img_error("Error while reading offset %" PRId64 " of %s: %s", offset,
                  img->name, strerror(-ret));
        return false;
    }
    return true;
}

/* Offset of the first 512-byte sector of @buf (counted from its start)
 * that is not all zeroes, or -1. */
static int64_t find_nonzero(const uint8_t *buf, int64_t bytes)
{
    for (int64_t i = 0; i < bytes; i += COMPARE_SECTOR) {
        if (!img_buf_is_zero(buf + i, (size_t)MIN(COMPARE_SECTOR, bytes - i))) {
            return i;
        }
    }
    return -1;
}

/* Offset of the first 512-byte sector where @a and @b differ, or -1. */
static int64_t find_difference(const uint8_t *a, const uint8_t *b, int64_t bytes)
{
    for (int64_t i = 0; i < bytes; i += COMPARE_SECTOR) {
        if (memcmp(a + i, b + i, (size_t)MIN(COMPARE_SECTOR, bytes - i))) {
            return i;
        }
    }
    return -1;
}

/* The extra part of the larger image must read as zeroes. */
static int cmp_check_empty(CmpImage *img, int64_t offset, int64_t bytes,
                           bool quiet)
{
    if (!cmp_read(img, offset, bytes)) {
        return CMP_READ_ERROR;
    }
    int64_t at = find_nonzero(img->buf, bytes);
    if (at >= 0) {
        if (!quiet) {
            printf("Content mismatch at offset %" PRId64 "!\n", offset + at);
        }
        return CMP_DIFFER;
    }
    return CMP_SAME;
}

static int cmp_run(CmpImage *a, CmpImage *b, bool strict, bool quiet,
                   ImgProgress *prog)
{
    int64_t common = MIN(a->size, b->size);
    int64_t total = MAX(a->size, b->size);
    int64_t offset = 0;
    int ret;

    if (strict && a->size != b->size) {
        if (!quiet) {
            printf("Strict mode: Image size mismatch!\n");
        }
        return CMP_DIFFER;
    }
    img_progress_set(prog, 0);
    while (offset < common) {
        int64_t pa, pb;
        int sa = cmp_status(a, offset, &pa);
        int sb = sa < 0 ? -1 : cmp_status(b, offset, &pb);

        if (sa < 0 || sb < 0) {
            return CMP_STATUS_ERROR;
        }
        bool eof_a = offset + pa == a->size, eof_b = offset + pb == b->size;
        int64_t chunk = MIN(pa, pb);

        chunk = MIN(chunk, common - offset);
        if (strict && (sa != sb || eof_a != eof_b)) {
            if (!quiet) {
                printf("Strict mode: Offset %" PRId64 " block status mismatch!\n",
                       offset);
            }
            return CMP_DIFFER;
        }
        if (!((sa & STRATA_BLOCK_ZERO) && (sb & STRATA_BLOCK_ZERO))) {
            chunk = MIN(chunk, COMPARE_BUF_SIZE);
            if (!cmp_read(a, offset, chunk) || !cmp_read(b, offset, chunk)) {
                return CMP_READ_ERROR;
            }
            int64_t at = find_difference(a->buf, b->buf, chunk);
            if (at >= 0) {
                if (!quiet) {
                    printf("Content mismatch at offset %" PRId64 "!\n", offset + at);
                }
                return CMP_DIFFER;
            }
        }
        offset += chunk;
        img_progress_set(prog, 100.0 * (double)offset / (double)total);
    }

    if (a->size != b->size) {
        CmpImage *over = a->size > b->size ? a : b;

        if (!quiet) {
            printf("Warning: Image size mismatch!\n");
        }
        while (offset < over->size) {
            int64_t chunk;
            int st = cmp_status(over, offset, &chunk);

            if (st < 0) {
                return CMP_STATUS_ERROR;
            }
            if (!(st & STRATA_BLOCK_ZERO)) {
                chunk = MIN(chunk, COMPARE_BUF_SIZE);
                ret = cmp_check_empty(over, offset, chunk, quiet);
                if (ret != CMP_SAME) {
                    return ret;
                }
            }
            offset += chunk;
            img_progress_set(prog, 100.0 * (double)offset / (double)total);
        }
    }
    if (!quiet) {
        printf("Images are identical.\n");
    }
    return CMP_SAME;
}

int img_compare(int argc, char **argv)
{
    enum { LOPT_OBJECT = 256, LOPT_IMAGE_OPTS };
    static const struct option long_opts[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, LOPT_OBJECT },
        { "image-opts", no_argument, NULL, LOPT_IMAGE_OPTS },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    ImgOpenFlags fa = { .cache = "writeback" }, fb;
    bool strict = false, quiet = false, progress = false;
    const char *fmt2 = NULL;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "hf:F:T:pqsU", long_opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            compare_usage();
            return 0;
        case 'f':
            fa.fmt = optarg;
            break;
        case 'F':
            fmt2 = optarg;
            break;
        case 'T':
            fa.cache = optarg;
            break;
        case 'p':
            progress = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 's':
            strict = true;
            break;
        case 'U':
            fa.force_share = true;
            break;
        case LOPT_OBJECT:
            if (!img_object_add(optarg)) {
                return 1;
            }
            break;
        case LOPT_IMAGE_OPTS:
            fa.image_opts = true;
            break;
        default:
            compare_usage();
            return 1;
        }
    }
    if (quiet) {
        progress = false;
    }
    if (argc - optind != 2) {
        img_usage_error("Expecting two image file names");
        return 1;
    }
    if (!img_cache_mode_valid(fa.cache, "source cache")) {
        return CMP_OPEN_ERROR;
    }
    fb = fa;
    /* qemu-img: -F defaults to -f. */
    fb.fmt = fmt2 ? fmt2 : fa.fmt;

    StrataContext *ctx = img_context_new();
    if (!ctx) {
        return CMP_OPEN_ERROR;
    }
    CmpImage img[2] = { { .name = argv[optind] }, { .name = argv[optind + 1] } };
    ImgProgress prog;
    int ret = CMP_OPEN_ERROR;

    img_progress_init(&prog, progress, 2.0);
    for (int i = 0; i < 2; i++) {
        img[i].be = img_open_report(ctx, img[i].name, i ? &fb : &fa);
        if (!img[i].be) {
            goto out;
        }
        img[i].size = strata_backend_get_length(img[i].be);
        if (img[i].size < 0) {
            img_error("Can't get size of %s: %s", img[i].name,
                      strerror((int)-img[i].size));
            ret = CMP_READ_ERROR;
            goto out;
        }
        StrataLimits l;
        strata_node_get_limits(strata_backend_get_root(img[i].be), &l);
        size_t align = MAX((size_t)l.opt_mem_alignment, (size_t)sysconf(_SC_PAGESIZE));
        void *buf = NULL;
        if (posix_memalign(&buf, align, COMPARE_BUF_SIZE)) {
            img_error("Could not allocate %" PRId64 " bytes", COMPARE_BUF_SIZE);
            goto out;
        }
        img[i].buf = buf;
    }
    ret = cmp_run(&img[0], &img[1], strict, quiet, &prog);
    img_progress_end(&prog);
out:
    for (int i = 0; i < 2; i++) {
        if (img[i].be) {
            strata_backend_free(img[i].be);
        }
        free(img[i].buf);
    }
    strata_context_free(ctx);
    return ret;
}
