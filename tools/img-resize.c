/*
 * strata-img resize, check and measure, as qemu-img's
 * SPDX-License-Identifier: MIT
 *
 *   strata-img resize [--object OBJ] [--image-opts] [-f FMT]
 *       [--preallocation=off|falloc|full] [-q] [--shrink] FILE [+|-]SIZE
 *   strata-img check [--object OBJ] [--image-opts] [-q] [-f FMT]
 *       [--output=human|json] [-r leaks|all] [-T SRC_CACHE] [-U] FILE
 *   strata-img measure [--output=human|json] [-O FMT] [-o OPTIONS]
 *       [--size N | [--object OBJ] [--image-opts] [-f FMT] FILE]
 *
 * resize takes the size from the last argument before parsing options, as
 * qemu-img does, so that "-1M" is a size and not an option.  Raw, the one
 * format, has no metadata: check answers as qemu-img does for raw ("This
 * image format does not support checks", exit 63) once the image opens,
 * and measure gives the virtual size rounded up to 512 for both figures.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/backend-int.h"
#include "block/block-int.h"
#include "tools/strata-img.h"

#define CHECK_NOT_SUPPORTED 63

enum { LOPT_OBJECT = 256, LOPT_IMAGE_OPTS, LOPT_SHRINK, LOPT_PREALLOC, LOPT_OUTPUT,
       LOPT_SIZE };

/* ---- resize -------------------------------------------------------------------- */

typedef struct ResizeJob {
    StrataBackend *be;
    int64_t size;
    PreallocMode prealloc;
    StrataError *err;
    int ret;
    bool done;
} ResizeJob;

static void resize_co(void *opaque)
{
    ResizeJob *j = opaque;

    j->ret = backend_co_truncate(j->be, j->size, j->prealloc, &j->err);
    j->done = true;
}

static void resize_usage(void)
{
    printf("Usage: strata-img resize [--object OBJ] [--image-opts] [-f FMT] "
           "[--preallocation=MODE] [-q] [--shrink] FILE [+|-]SIZE\n");
}

static void size_error(void)
{
    img_error("Parameter 'size' expects a non-negative number below 2^64");
    fprintf(stderr, "Optional suffix k, M, G, T, P or E means kilo-, mega-, "
            "giga-, tera-, peta-\nand exabytes, respectively.\n");
}

int img_resize(int argc, char **argv)
{
    static const struct option long_opts[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, LOPT_OBJECT },
        { "image-opts", no_argument, NULL, LOPT_IMAGE_OPTS },
        { "preallocation", required_argument, NULL, LOPT_PREALLOC },
        { "shrink", no_argument, NULL, LOPT_SHRINK },
        { NULL, 0, NULL, 0 },
    };
    ImgOpenFlags f = { .writable = true, .resize = true };
    PreallocMode prealloc = PREALLOC_OFF;
    bool quiet = false, shrink = false, have_prealloc = false;
    int c;

    if (argc < 3) {
        img_usage_error("Not enough arguments");
        return 1;
    }
    const char *size_arg = argv[--argc];

    optind = 1;
    while ((c = getopt_long(argc, argv, "hf:q", long_opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            resize_usage();
            return 0;
        case 'f':
            f.fmt = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case LOPT_OBJECT:
            if (!img_object_add(optarg)) {
                return 1;
            }
            break;
        case LOPT_IMAGE_OPTS:
            f.image_opts = true;
            break;
        case LOPT_SHRINK:
            shrink = true;
            break;
        case LOPT_PREALLOC: {
            int m;
            for (m = 0; prealloc_mode_names[m]; m++) {
                if (!strcmp(optarg, prealloc_mode_names[m])) {
                    break;
                }
            }
            if (!prealloc_mode_names[m]) {
                img_error("Invalid preallocation mode '%s'", optarg);
                return 1;
            }
            prealloc = (PreallocMode)m;
            have_prealloc = true;
            break;
        }
        default:
            resize_usage();
            return 1;
        }
    }
    if (optind != argc - 1) {
        img_usage_error("Expecting image file name and size");
        return 1;
    }
    const char *filename = argv[optind];

    int relative = 0;
    if (size_arg[0] == '+' || size_arg[0] == '-') {
        relative = size_arg[0] == '+' ? 1 : -1;
        size_arg++;
    }
    int64_t n;
    if (tool_cvtnum(size_arg, &n, NULL) < 0 || size_arg[0] == '+' ||
        size_arg[0] == '-') {
        size_error();
        return 1;
    }

    StrataContext *ctx = img_context_new();
    if (!ctx) {
        return 1;
    }
    int rc = 1;
    StrataBackend *be = img_open_report(ctx, filename, &f);
    if (!be) {
        goto out;
    }
    int64_t cur = strata_backend_get_length(be);
    if (cur < 0) {
        img_error("Could not get the image size: %s", strerror((int)-cur));
        goto out;
    }
    int64_t size;
    if (relative) {
        if (__builtin_add_overflow(cur, relative * n, &size)) {
            img_error("New image size is too large");
            goto out;
        }
    } else {
        size = n;
    }
    if (size <= 0) {
        img_error("New image size must be positive");
        goto out;
    }
    if (size < cur && !shrink) {
        img_error("Use the --shrink option to perform a shrink operation.");
        img_error("warning: Shrinking an image will delete all data beyond the "
                  "shrunken image's end. Before performing such an operation, "
                  "make sure there is no important data there.");
        goto out;
    }
    if (size < cur && have_prealloc && prealloc != PREALLOC_OFF) {
        img_error("Preallocation can only be used for growing images");
        goto out;
    }

    ResizeJob j = { .be = be, .size = size, .prealloc = prealloc };
    loop_co_spawn(ctx->loop, resize_co, &j);
    while (!j.done) {
        loop_run_once(ctx->loop, true);
    }
    if (j.ret < 0) {
        img_error("%s", j.err ? strata_error_get_message(j.err) : strerror(-j.ret));
        strata_error_free(j.err);
        goto out;
    }
    if (!quiet) {
        printf("Image resized.\n");
    }
    rc = 0;
out:
    if (be) {
        strata_backend_free(be);
    }
    strata_context_free(ctx);
    return rc;
}

/* ---- check ----------------------------------------------------------------------- */

static bool parse_output(const char *arg, bool *json)
{
    if (!strcmp(arg, "json")) {
        *json = true;
    } else if (!strcmp(arg, "human")) {
        *json = false;
    } else {
        img_error("--output must be used with human or json as argument.");
        return false;
    }
    return true;
}

/* The options check and measure share: 1 when @c was one of them, 0 when
 * not, -1 after printing an error. */
static int common_opt(int c, ImgOpenFlags *f, bool *json)
{
    switch (c) {
    case 'f':
        f->fmt = optarg;
        return 1;
    case 'U':
        f->force_share = true;
        return 1;
    case LOPT_OBJECT:
        return img_object_add(optarg) ? 1 : -1;
    case LOPT_IMAGE_OPTS:
        f->image_opts = true;
        return 1;
    case LOPT_OUTPUT:
        return parse_output(optarg, json) ? 1 : -1;
    }
    return 0;
}

int img_check(int argc, char **argv)
{
    static const struct option long_opts[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, LOPT_OBJECT },
        { "image-opts", no_argument, NULL, LOPT_IMAGE_OPTS },
        { "output", required_argument, NULL, LOPT_OUTPUT },
        { "repair", required_argument, NULL, 'r' },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    ImgOpenFlags f = { .cache = "writeback" };
    bool json = false;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "hf:qr:T:U", long_opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("Usage: strata-img check [--object OBJ] [--image-opts] [-q] "
                   "[-f FMT] [--output=human|json] [-r leaks|all] [-T SRC_CACHE] "
                   "[-U] FILE\n");
            return 0;
        case 'q':
            break;          /* the one message is an error: printed anyway */
        case 'r':
            if (strcmp(optarg, "leaks") && strcmp(optarg, "all")) {
                img_error("Invalid option for -r");
                return 1;
            }
            f.writable = true;
            break;
        case 'T':
            f.cache = optarg;
            break;
        default:
            if (common_opt(c, &f, &json) <= 0) {
                return 1;
            }
        }
    }
    if (optind != argc - 1) {
        img_usage_error("Expecting one image file name");
        return 1;
    }
    if (!img_cache_mode_valid(f.cache, "source cache") ||
        !img_probe_image(argv[optind], &f, NULL)) {
        return 1;
    }
    /* Every format Strata has is metadata-free, as raw. */
    img_error("This image format does not support checks");
    return CHECK_NOT_SUPPORTED;
}

/* ---- measure ---------------------------------------------------------------------- */

int img_measure(int argc, char **argv)
{
    static const struct option long_opts[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, LOPT_OBJECT },
        { "image-opts", no_argument, NULL, LOPT_IMAGE_OPTS },
        { "output", required_argument, NULL, LOPT_OUTPUT },
        { "size", required_argument, NULL, LOPT_SIZE },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    ImgOpenFlags f = { 0 };
    const char *out_fmt = "raw", *size_arg = NULL, *prealloc_name = NULL;
    PreallocMode prealloc = PREALLOC_OFF;
    bool json = false;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "hf:O:o:U", long_opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("Usage: strata-img measure [--output=human|json] [-O FMT] "
                   "[-o OPTIONS] [--size N | [--image-opts] [-f FMT] FILE]\n");
            return 0;
        case 'O':
            out_fmt = optarg;
            break;
        case 'o':
            if (!img_parse_create_opts(optarg, &prealloc, &prealloc_name)) {
                return 1;
            }
            break;
        case LOPT_SIZE:
            size_arg = optarg;
            break;
        default:
            if (common_opt(c, &f, &json) <= 0) {
                return 1;
            }
        }
    }
    if (argc - optind > 1) {
        img_error("At most one filename argument is allowed.");
        return 1;
    }
    if (size_arg && optind < argc) {
        img_error("--size N cannot be used together with a filename.");
        return 1;
    }
    if (!size_arg && optind == argc) {
        img_error("Either --size N or one filename must be specified.");
        return 1;
    }
    if (strcmp(out_fmt, "raw")) {
        img_error("Unknown file format '%s'", out_fmt);
        return 1;
    }

    int64_t size;
    if (size_arg) {
        if (tool_cvtnum(size_arg, &size, NULL) < 0) {
            img_error("Invalid image size specified. You may use k, M, G, T, P "
                      "or E suffixes for");
            img_error("kilobytes, megabytes, gigabytes, terabytes, petabytes "
                      "and exabytes.");
            return 1;
        }
    } else if (!img_probe_image(argv[optind], &f, &size)) {
        return 1;
    }
    /* A raw image holds its virtual size, in whole sectors, whatever the
     * preallocation. */
    int64_t required = ROUND_UP(size, 512);
    if (json) {
        printf("{\n    \"required\": %" PRId64 ",\n    \"fully-allocated\": %"
               PRId64 "\n}\n", required, required);
    } else {
        printf("required size: %" PRId64 "\nfully allocated size: %" PRId64 "\n",
               required, required);
    }
    return 0;
}
