/*
 * strata-img: create, inspect and benchmark images, as qemu-img does
 * SPDX-License-Identifier: MIT
 *
 *   strata-img create [-q] [-f raw] [-o preallocation=off|falloc|full] FILE SIZE
 *   strata-img info [-f FMT] [-t CACHE] [--image-opts] [-U] [--output=human|json] FILE
 *   strata-img map [-f FMT] [-t CACHE] [--image-opts] [-U] [--output=human|json] FILE
 *   strata-img bench [OPTIONS] FILE        (see tools/img-bench.c)
 *   strata-img convert [OPTIONS] SRC... DST (see tools/img-convert.c)
 *   strata-img compare [OPTIONS] FILE1 FILE2 (see tools/img-compare.c)
 *   strata-img resize|check|measure ...     (see tools/img-resize.c)
 *
 * FILE is an image path (raw over file unless -f names another driver), a
 * "json:{...}" option tree, or with --image-opts dotted keys.  Output
 * lines follow qemu-img's where the command exists there, so scripts and
 * the benchmark comparison (tests/bench/compare) read both tools alike.
 *
 * This file holds the process, opening images and the small commands;
 * bench lives in tools/img-bench.c.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "config-host.h"
#include "block/backend-int.h"
#include "block/block-int.h"
#include "block/file-posix.h"
#include "tools/strata-img.h"
#include "block/object.h"

static void G_GNUC_PRINTF(1, 0) img_verror(const char *fmt, va_list ap)
{
    fflush(stdout);
    fputs("strata-img: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void img_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    img_verror(fmt, ap);
    va_end(ap);
}

void img_usage_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    img_verror(fmt, ap);
    va_end(ap);
    fputs("Try 'strata-img --help' for more information\n", stderr);
}

bool img_parse_size(const char *what, const char *s, int64_t *out)
{
    uint64_t v;

    if (!parse_size(s, &v) || v > INT64_MAX) {
        img_error("Invalid %s specified: '%s'", what, s);
        return false;
    }
    *out = (int64_t)v;
    return true;
}

char *img_size_to_str(uint64_t bytes)
{
    static const char *const suffixes[] = { "B", "KiB", "MiB", "GiB", "TiB",
                                            "PiB", "EiB" };
    int i = 0;

    /* The largest unit in which the value is at least 1, except that a
     * value just below the next unit (1000 of them or more) moves up, so
     * that at most three digits come before the point, as qemu-img does. */
    while (i < 6 && (double)bytes >= 1000.0 * (double)(UINT64_C(1) << (i * 10))) {
        i++;
    }
    return g_strdup_printf("%0.3g %s", (double)bytes / (double)(UINT64_C(1) << (i * 10)),
                           suffixes[i]);
}



/*
 * Call @fn on each option object opened inline along the primary chain
 * (the top node, its primary child if that is an inline object, ...):
 * the command line's cache and aio settings apply to these, as qemu-img
 * applies its flags to every node it opens implicitly.
 */
static bool chain_foreach(OptNode *opts,
                          bool (*fn)(OptNode *o, void *opaque, StrataError **errp),
                          void *opaque, StrataError **errp)
{
    while (opts && opts_type(opts) == OPT_OBJECT) {
        const char *name = tool_opts_driver(opts);
        const BlockDriver *drv = name ? block_driver_find(name) : NULL;

        if (!fn(opts, opaque, errp)) {
            return false;
        }
        opts = drv && drv->child_role ? opts_peek(opts, drv->child_role) : NULL;
    }
    return true;
}

typedef struct CacheSet {
    bool direct, no_flush;
} CacheSet;

static bool set_cache(OptNode *o, void *opaque, StrataError **errp)
{
    CacheSet *c = opaque;

    return opts_set_str(o, "cache.direct", c->direct ? "on" : "off", errp) &&
           opts_set_str(o, "cache.no-flush", c->no_flush ? "on" : "off", errp);
}

typedef struct AioSet {
    const char *aio;
    bool found;
} AioSet;

static bool set_aio(OptNode *o, void *opaque, StrataError **errp)
{
    AioSet *a = opaque;
    const char *d = tool_opts_driver(o);
    const BlockDriver *bd = d ? block_driver_find(d) : NULL;

    if (bd && file_driver_is(bd)) {
        a->found = true;
        return opts_set_str(o, "aio", a->aio, errp);
    }
    return true;
}

/* The option tree for @filename and @f (transfer full), or NULL. */
static OptNode *img_build_options(const char *filename, const ImgOpenFlags *f,
                                  StrataError **errp)
{
    g_autoptr(OptNode) opts = NULL;

    if (f->fmt && !block_driver_find(f->fmt)) {
        error_setg(errp, "Unknown driver '%s'", f->fmt);
        return NULL;
    }
    if (f->image_opts) {
        if (f->fmt) {
            error_setg(errp, "--image-opts and --format are mutually exclusive");
            return NULL;
        }
        opts = opts_parse_dotted(filename, errp);
    } else {
        /* qemu-img's filenames: json:{...}, protocol prefixes (blkdebug:,
         * null-co://), devices (host_device), below the format. */
        opts = opts_new_object();
        if (!block_options_add_filename(opts, filename, f->fmt ? f->fmt : "raw",
                                        errp)) {
            return NULL;
        }
    }
    if (!opts) {
        return NULL;
    }
    if (opts_type(opts) != OPT_OBJECT) {
        error_setg(errp, "the image options must be an object");
        return NULL;
    }

    const char *drv = tool_opts_driver(opts);
    if (f->fmt && drv && strcmp(drv, f->fmt)) {
        error_setg(errp, "-f %s conflicts with driver '%s' in the options",
                   f->fmt, drv);
        return NULL;
    }
    if (!drv && !opts_set_str(opts, "driver", f->fmt ? f->fmt : "raw", errp)) {
        /* No probing: an image without a driver is raw data. */
        return NULL;
    }
    /* A format given a plain filename keeps its data in a file node. */
    drv = tool_opts_driver(opts);
    const BlockDriver *bd = drv ? block_driver_find(drv) : NULL;
    OptNode *fn = opts_peek(opts, "filename");
    if (bd && bd->is_format && fn && opts_type(fn) == OPT_STRING &&
        !opts_has(opts, bd->child_role ? bd->child_role : "file")) {
        g_autofree char *name = g_strdup(opts_scalar_str(fn));
        const char *role = bd->child_role ? bd->child_role : "file";
        g_autofree char *kd = g_strdup_printf("%s.driver", role);
        g_autofree char *kf = g_strdup_printf("%s.filename", role);

        opts_remove(opts, "filename");
        if (!opts_set_str(opts, kd, block_probe_protocol(name), errp) ||
            !opts_set_str(opts, kf, name, errp)) {
            return NULL;
        }
    }
    if (!f->writable && !opts_set_bool(opts, "read-only", true, errp)) {
        return NULL;
    }
    /* Children inherit it (block/graph.c), as in QEMU. */
    if (f->unmap && !opts_set_default_str(opts, "discard", "unmap", errp)) {
        return NULL;
    }
    if (f->cache) {
        CacheSet c;
        bool wce;

        if (!tool_parse_cache_mode(f->cache, &c.direct, &wce, &c.no_flush)) {
            error_setg(errp, "Invalid cache option: %s", f->cache);
            return NULL;
        }
        if (!chain_foreach(opts, set_cache, &c, errp)) {
            return NULL;
        }
    }
    if (f->aio) {
        AioSet a = { .aio = f->aio };
        if (!chain_foreach(opts, set_aio, &a, errp)) {
            return NULL;
        }
        if (!a.found) {
            error_setg(errp, "-i %s: the image has no node of the file driver",
                       f->aio);
            return NULL;
        }
    }
    return g_steal_pointer(&opts);
}

StrataBackend *img_open(StrataContext *ctx, const char *filename,
                        const ImgOpenFlags *f, StrataError **errp)
{
    bool direct = false, wce = true, no_flush = false;

    if (f->cache && !tool_parse_cache_mode(f->cache, &direct, &wce, &no_flush)) {
        error_setg(errp, "Invalid cache option: %s", f->cache);
        return NULL;
    }
    g_autoptr(OptNode) opts = img_build_options(filename, f, errp);
    if (!opts) {
        return NULL;
    }
    StrataNode *root = block_open(ctx, opts, errp);
    if (!root) {
        return NULL;
    }
    /* What qemu-img's BlockBackend takes: read, and write on a writable
     * image; others may read and write without changing data, or do
     * anything with -U. */
    uint32_t perm = PERM_CONSISTENT_READ | (f->writable ? PERM_WRITE : 0) |
                    (f->resize ? PERM_RESIZE : 0);
    uint32_t shared = f->force_share ? PERM_ALL
                                     : PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED;
    StrataBackend *be = strata_backend_new(root, "strata-img", perm, shared, errp);
    node_unref(root);
    if (!be) {
        return NULL;
    }
    strata_backend_set_write_cache(be, wce);
    return be;
}

StrataBackend *img_open_report(StrataContext *ctx, const char *filename,
                               const ImgOpenFlags *f)
{
    StrataError *err = NULL;
    StrataBackend *be = img_open(ctx, filename, f, &err);

    if (!be) {
        img_error("Could not open '%s': %s", filename, strata_error_get_message(err));
        strata_error_free(err);
    }
    return be;
}

StrataContext *img_context_new(void)
{
    StrataError *err = NULL;
    StrataContext *ctx = strata_context_new(&err);

    if (!ctx) {
        img_error("%s", strata_error_get_message(err));
        strata_error_free(err);
    }
    return ctx;
}

bool img_probe_image(const char *filename, const ImgOpenFlags *f, int64_t *size)
{
    StrataContext *ctx = img_context_new();
    StrataBackend *be = ctx ? img_open_report(ctx, filename, f) : NULL;
    bool ok = be != NULL;

    if (be && size) {
        *size = strata_backend_get_length(be);
        if (*size < 0) {
            img_error("Could not get the size of '%s': %s", filename,
                      strerror((int)-*size));
            ok = false;
        }
    }
    if (be) {
        strata_backend_free(be);
    }
    if (ctx) {
        strata_context_free(ctx);
    }
    return ok;
}

bool img_cache_mode_valid(const char *mode, const char *what)
{
    bool direct, wce, no_flush;

    if (!tool_parse_cache_mode(mode, &direct, &wce, &no_flush)) {
        img_error("Invalid %s option: %s", what, mode);
        return false;
    }
    return true;
}

bool img_parse_create_opts(const char *arg, PreallocMode *prealloc,
                           const char **prealloc_name)
{
    g_auto(GStrv) items = g_strsplit(arg, ",", -1);

    for (int i = 0; items[i]; i++) {
        const char *eq = strchr(items[i], '=');
        size_t klen = eq ? (size_t)(eq - items[i]) : strlen(items[i]);

        if (!eq || klen != strlen("preallocation") ||
            strncmp(items[i], "preallocation", klen)) {
            img_error("Invalid parameter '%.*s'", (int)klen, items[i]);
            return false;
        }
        int m;
        for (m = 0; prealloc_mode_names[m]; m++) {
            if (!strcmp(eq + 1, prealloc_mode_names[m])) {
                break;
            }
        }
        if (!prealloc_mode_names[m]) {
            img_error("Invalid preallocation mode: '%s'", eq + 1);
            return false;
        }
        *prealloc = (PreallocMode)m;
        *prealloc_name = prealloc_mode_names[m];
    }
    return true;
}

void img_progress_init(ImgProgress *p, bool enabled, double min_skip)
{
    *p = (ImgProgress){ .enabled = enabled, .min_skip = min_skip };
}

void img_progress_set(ImgProgress *p, double percent)
{
    p->current = MIN(percent, 100.0);
    if (!p->enabled) {
        return;
    }
    if (p->current > p->last_print + p->min_skip ||
        p->current < p->last_print - p->min_skip ||
        p->current == 0 || p->current == 100) {
        p->last_print = p->current;
        printf("    (%3.2f/100%%)\r", p->current);
        fflush(stdout);
    }
}

void img_progress_end(ImgProgress *p)
{
    if (p->enabled) {
        printf("\n");
        fflush(stdout);
    }
}

bool img_buf_is_zero(const void *buf, size_t len)
{
    const unsigned char *b = buf;
    size_t head = MIN(len, (size_t)16);

    /* The first bytes one by one, then the buffer against itself shifted
     * by 16: equal only if every 16-byte step repeats the zero head. */
    for (size_t i = 0; i < head; i++) {
        if (b[i]) {
            return false;
        }
    }
    return len <= 16 || !memcmp(b, b + 16, len - 16);
}

/* ---- create ------------------------------------------------------------------ */

static void create_usage(void)
{
    printf("Usage: strata-img create [-q] [-f raw] "
           "[-o preallocation=off|falloc|full] FILE SIZE\n");
}

static int img_create(int argc, char **argv)
{
    const char *fmt = "raw";
    PreallocMode prealloc = PREALLOC_OFF;
    const char *prealloc_name = NULL;
    bool quiet = false;
    int c;

    optind = 1;
    while ((c = getopt(argc, argv, "hqf:o:")) != -1) {
        switch (c) {
        case 'h':
            create_usage();
            return 0;
        case 'q':
            quiet = true;
            break;
        case 'f':
            fmt = optarg;
            break;
        case 'o':
            if (!img_parse_create_opts(optarg, &prealloc, &prealloc_name)) {
                return 1;
            }
            break;
        default:
            create_usage();
            return 1;
        }
    }
    if (strcmp(fmt, "raw") && strcmp(fmt, "file")) {
        img_error("Unknown file format '%s' (create supports raw)", fmt);
        return 1;
    }
    if (argc - optind != 2) {
        img_error("Expecting image file name and size");
        create_usage();
        return 1;
    }
    const char *filename = argv[optind];
    int64_t size;
    if (!img_parse_size("image size", argv[optind + 1], &size)) {
        return 1;
    }
    if (!quiet) {
        printf("Formatting '%s', fmt=%s size=%" PRId64 "%s%s\n", filename, fmt,
               size, prealloc_name ? " preallocation=" : "",
               prealloc_name ? prealloc_name : "");
    }
    StrataError *err = NULL;
    if (!file_create(filename, size, prealloc, &err)) {
        img_error("%s: %s", filename, strata_error_get_message(err));
        strata_error_free(err);
        return 1;
    }
    return 0;
}

/* ---- the primary chain and its mapping ------------------------------------- */

/* The file a node chain ends in and where offset 0 of @root lies in it, if
 * the chain is raw windows over a file; false otherwise (nothing maps). */
static bool chain_mapping(StrataNode *root, const char **filename,
                          int64_t *base)
{
    int64_t off = 0;

    for (StrataNode *n = root; n; n = node_filtered(n)) {
        const char *drv = strata_node_get_driver(n);
        if (file_driver_is(n->drv)) {
            OptNode *fn = n->options ? opts_peek(n->options, "filename") : NULL;
            if (!fn || opts_type(fn) != OPT_STRING) {
                return false;
            }
            *filename = opts_scalar_str(fn);
            *base = off;
            return true;
        }
        if (strcmp(drv, "raw")) {
            return false;
        }
        OptNode *o = n->options ? opts_peek(n->options, "offset") : NULL;
        if (o) {
            uint64_t v;
            if (!parse_size(opts_scalar_str(o), &v)) {
                return false;
            }
            off += (int64_t)v;
        }
    }
    return false;
}

typedef struct MapRun {
    int64_t start, length;
    int flags;              /* STRATA_BLOCK_* */
} MapRun;

/* Block status over the whole device, adjacent runs of the same status
 * merged.  NULL with a message on failure. */
static GArray *map_runs(StrataBackend *be, int64_t len)
{
    g_autoptr(GArray) runs = g_array_new(FALSE, FALSE, sizeof(MapRun));
    int64_t off = 0;

    while (off < len) {
        int64_t pnum = 0;
        int ret = strata_backend_block_status(be, off, len - off, &pnum);
        if (ret < 0) {
            img_error("block status at offset %" PRId64 ": %s", off,
                      strerror(-ret));
            return NULL;
        }
        if (pnum <= 0) {
            img_error("block status at offset %" PRId64 " made no progress", off);
            return NULL;
        }
        pnum = MIN(pnum, len - off);
        MapRun *last = runs->len ? &g_array_index(runs, MapRun, runs->len - 1)
                                 : NULL;
        if (last && last->flags == ret && last->start + last->length == off) {
            last->length += pnum;
        } else {
            MapRun r = { off, pnum, ret };
            g_array_append_val(runs, r);
        }
        off += pnum;
    }
    return g_steal_pointer(&runs);
}

/* Parse the options info and map share; returns the image argument's
 * index, or -1 (exit 1) / -2 (exit 0, help printed). */
static int parse_inspect_opts(int argc, char **argv, ImgOpenFlags *f,
                              bool *json, const char *usage)
{
    enum { OPT_IMAGE_OPTS = 256, OPT_OUTPUT };
    static const struct option long_opts[] = {
        { "help", no_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { "force-share", no_argument, NULL, 'U' },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "cache", required_argument, NULL, 't' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "hf:t:U", long_opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            printf("%s", usage);
            return -2;
        case 'f':
            f->fmt = optarg;
            break;
        case 't':
            /* Not in qemu-img info: shows the limits of an O_DIRECT open. */
            f->cache = optarg;
            break;
        case 'U':
            f->force_share = true;
            break;
        case OPT_IMAGE_OPTS:
            f->image_opts = true;
            break;
        case OPT_OUTPUT:
            if (!strcmp(optarg, "json")) {
                *json = true;
            } else if (!strcmp(optarg, "human")) {
                *json = false;
            } else {
                img_error("--output must be used with human or json as argument.");
                return -1;
            }
            break;
        default:
            printf("%s", usage);
            return -1;
        }
    }
    if (argc - optind != 1) {
        img_error("Expecting one image file name");
        return -1;
    }
    return optind;
}

typedef struct ImgCmd {
    StrataContext *ctx;
    StrataBackend *be;
} ImgCmd;

static bool img_cmd_open(ImgCmd *c, const char *filename, const ImgOpenFlags *f)
{
    StrataError *err = NULL;

    c->ctx = strata_context_new(&err);
    if (c->ctx) {
        c->be = img_open(c->ctx, filename, f, &err);
    }
    if (!c->be) {
        img_error("Could not open '%s': %s", filename, strata_error_get_message(err));
        strata_error_free(err);
        if (c->ctx) {
            strata_context_free(c->ctx);
        }
        return false;
    }
    return true;
}

static void img_cmd_close(ImgCmd *c)
{
    strata_backend_free(c->be);
    strata_context_free(c->ctx);
}

/* ---- info -------------------------------------------------------------------- */

static void json_add_limits(JsonBuilder *b, const StrataLimits *l)
{
    json_builder_set_member_name(b, "limits");
    json_builder_begin_object(b);
#define LIM(name, val) \
    json_builder_set_member_name(b, name); json_builder_add_int_value(b, (gint64)(val))
    LIM("request-alignment", l->request_alignment);
    LIM("mem-alignment", l->mem_alignment);
    LIM("iov-len-alignment", l->iov_len_alignment);
    LIM("opt-mem-alignment", l->opt_mem_alignment);
    LIM("max-transfer", l->max_transfer);
    LIM("opt-transfer", l->opt_transfer);
    LIM("max-iov", l->max_iov);
    LIM("pwrite-zeroes-alignment", l->pwrite_zeroes_alignment);
    LIM("max-pwrite-zeroes", l->max_pwrite_zeroes);
    LIM("pdiscard-alignment", l->pdiscard_alignment);
    LIM("max-pdiscard", l->max_pdiscard);
    LIM("logical-block-size", l->logical_block_size);
    LIM("physical-block-size", l->physical_block_size);
#undef LIM
    json_builder_end_object(b);
}

static void print_json(JsonBuilder *b)
{
    g_autoptr(JsonNode) root = json_builder_get_root(b);
    g_autoptr(JsonGenerator) gen = json_generator_new();

    json_generator_set_pretty(gen, TRUE);
    json_generator_set_indent(gen, 4);
    json_generator_set_root(gen, root);
    g_autofree char *text = json_generator_to_data(gen, NULL);
    printf("%s\n", text);
}

static const char info_usage[] =
    "Usage: strata-img info [-f FMT] [-t CACHE] [--image-opts] [-U] [--output=human|json] FILE\n";

static int img_info(int argc, char **argv)
{
    ImgOpenFlags f = { 0 };
    bool json = false;
    int idx = parse_inspect_opts(argc, argv, &f, &json, info_usage);
    ImgCmd c = { 0 };

    if (idx < 0) {
        return idx == -2 ? 0 : 1;
    }
    const char *filename = argv[idx];
    if (!img_cmd_open(&c, filename, &f)) {
        return 1;
    }
    StrataNode *root = strata_backend_get_root(c.be);
    int64_t len = strata_backend_get_length(c.be);
    if (len < 0) {
        img_error("Could not get the image size: %s", strerror((int)-len));
        img_cmd_close(&c);
        return 1;
    }
    g_autoptr(GArray) runs = map_runs(c.be, len);
    if (!runs) {
        img_cmd_close(&c);
        return 1;
    }
    int64_t allocated = 0;
    for (guint i = 0; i < runs->len; i++) {
        const MapRun *r = &g_array_index(runs, MapRun, i);
        if (r->flags & STRATA_BLOCK_DATA) {
            allocated += r->length;
        }
    }
    const char *file = NULL;
    int64_t base = 0;
    int64_t disk_size = -1;
    struct stat st;
    if (chain_mapping(root, &file, &base) && stat(file, &st) == 0) {
        disk_size = (int64_t)st.st_blocks * 512;
    }

    if (json) {
        g_autoptr(JsonBuilder) b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "filename");
        json_builder_add_string_value(b, filename);
        json_builder_set_member_name(b, "format");
        json_builder_add_string_value(b, strata_node_get_driver(root));
        json_builder_set_member_name(b, "virtual-size");
        json_builder_add_int_value(b, len);
        if (disk_size >= 0) {
            json_builder_set_member_name(b, "actual-size");
            json_builder_add_int_value(b, disk_size);
        }
        json_builder_set_member_name(b, "allocated-size");
        json_builder_add_int_value(b, allocated);
        json_builder_set_member_name(b, "nodes");
        json_builder_begin_array(b);
        for (StrataNode *n = root; n; n = node_filtered(n)) {
            StrataLimits l;
            g_autoptr(GString) text = g_string_new(NULL);

            strata_node_get_limits(n, &l);
            json_builder_begin_object(b);
            json_builder_set_member_name(b, "node-name");
            json_builder_add_string_value(b, strata_node_get_name(n));
            json_builder_set_member_name(b, "driver");
            json_builder_add_string_value(b, strata_node_get_driver(n));
            json_add_limits(b, &l);
            if (n->drv->dump_info) {
                n->drv->dump_info(n, text);
                g_strchomp(text->str);
            }
            if (*text->str) {
                json_builder_set_member_name(b, "driver-info");
                json_builder_add_string_value(b, text->str);
            }
            json_builder_end_object(b);
        }
        json_builder_end_array(b);
        json_builder_end_object(b);
        print_json(b);
    } else {
        g_autofree char *vs = img_size_to_str((uint64_t)len);
        g_autofree char *as = img_size_to_str((uint64_t)allocated);
        printf("image: %s\n", filename);
        printf("file format: %s\n", strata_node_get_driver(root));
        printf("virtual size: %s (%" PRId64 " bytes)\n", vs, len);
        if (disk_size >= 0) {
            g_autofree char *ds = img_size_to_str((uint64_t)disk_size);
            printf("disk size: %s\n", ds);
        }
        printf("allocated: %s (%" PRId64 " bytes, from block status)\n", as,
               allocated);
        printf("nodes:\n");
        for (StrataNode *n = root; n; n = node_filtered(n)) {
            StrataLimits l;
            g_autoptr(GString) text = g_string_new(NULL);

            strata_node_get_limits(n, &l);
            printf("    %s (%s)\n", strata_node_get_name(n), strata_node_get_driver(n));
            printf("        alignment: request %" PRIu32 ", mem %" PRIu32
                   ", iov-len %" PRIu32 ", opt-mem %" PRIu32 "\n",
                   l.request_alignment, l.mem_alignment, l.iov_len_alignment,
                   l.opt_mem_alignment);
            printf("        transfer: max %" PRId64 ", opt %" PRId64 ", max-iov %d\n",
                   l.max_transfer, l.opt_transfer, l.max_iov);
            printf("        zeroes: alignment %" PRIu32 ", max %" PRId64
                   "; discard: alignment %" PRIu32 ", max %" PRId64 "\n",
                   l.pwrite_zeroes_alignment, l.max_pwrite_zeroes,
                   l.pdiscard_alignment, l.max_pdiscard);
            if (l.logical_block_size || l.physical_block_size) {
                printf("        block size: logical %" PRIu32 ", physical %"
                       PRIu32 " (0: unknown)\n", l.logical_block_size,
                       l.physical_block_size);
            }
            if (n->drv->dump_info) {
                n->drv->dump_info(n, text);
                g_auto(GStrv) lines = g_strsplit(text->str, "\n", -1);
                for (int i = 0; lines[i]; i++) {
                    if (*lines[i]) {
                        printf("        %s\n", lines[i]);
                    }
                }
            }
        }
    }
    img_cmd_close(&c);
    return 0;
}

/* ---- map ----------------------------------------------------------------------- */

static const char map_usage[] =
    "Usage: strata-img map [-f FMT] [-t CACHE] [--image-opts] [-U] [--output=human|json] FILE\n";

static int img_map(int argc, char **argv)
{
    ImgOpenFlags f = { 0 };
    bool json = false;
    int idx = parse_inspect_opts(argc, argv, &f, &json, map_usage);
    ImgCmd c = { 0 };

    if (idx < 0) {
        return idx == -2 ? 0 : 1;
    }
    if (!img_cmd_open(&c, argv[idx], &f)) {
        return 1;
    }
    int64_t len = strata_backend_get_length(c.be);
    if (len < 0) {
        img_error("Could not get the image size: %s", strerror((int)-len));
        img_cmd_close(&c);
        return 1;
    }
    g_autoptr(GArray) runs = map_runs(c.be, len);
    if (!runs) {
        img_cmd_close(&c);
        return 1;
    }
    const char *file = NULL;
    int64_t base = 0;
    bool mapped = chain_mapping(strata_backend_get_root(c.be), &file, &base);

    /* The formats of qemu-img map: JSON lists every run; the human form
     * lists the runs with data and where they lie in the file. */
    if (json) {
        printf("[");
        for (guint i = 0; i < runs->len; i++) {
            const MapRun *r = &g_array_index(runs, MapRun, i);
            bool data = r->flags & STRATA_BLOCK_DATA;
            bool zero = r->flags & STRATA_BLOCK_ZERO;

            printf("%s{ \"start\": %" PRId64 ", \"length\": %" PRId64
                   ", \"depth\": 0, \"present\": true, \"zero\": %s, \"data\": %s",
                   i ? ",\n" : "", r->start, r->length, zero ? "true" : "false",
                   data ? "true" : "false");
            if (mapped) {
                printf(", \"offset\": %" PRId64, base + r->start);
            }
            printf("}");
        }
        printf("]\n");
    } else {
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
        for (guint i = 0; i < runs->len; i++) {
            const MapRun *r = &g_array_index(runs, MapRun, i);
            if (!(r->flags & STRATA_BLOCK_DATA) || !mapped) {
                continue;
            }
            printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n",
                   (uint64_t)r->start, (uint64_t)r->length,
                   (uint64_t)(base + r->start), file);
        }
    }
    img_cmd_close(&c);
    return 0;
}

/* ---- the process ---------------------------------------------------------------- */

static void usage(void)
{
    printf(
"Usage: strata-img COMMAND [OPTIONS]... FILE [ARGS]\n"
"Create, convert, compare, inspect and benchmark Strata images, as qemu-img does\n"
"\n"
"Commands:\n"
"  create [-q] [-f raw] [-o preallocation=off|falloc|full] FILE SIZE\n"
"  info [-f FMT] [-t CACHE] [--image-opts] [-U] [--output=human|json] FILE\n"
"  map [-f FMT] [-t CACHE] [--image-opts] [-U] [--output=human|json] FILE\n"
"  bench [-c COUNT] [-d DEPTH] [-f FMT] [--flush-interval=N] [-i AIO] [-n]\n"
"        [--no-drain] [-o OFFSET] [--pattern=N] [-q] [-s BUFSIZE] [-S STEP]\n"
"        [-t CACHE] [-w] [-U] [--object OBJ] [--image-opts] [--vectors=N]\n"
"        [--form=co|callback] [--json] [--malloc-report] [--one-buffer] FILE\n"
"  convert [--object OBJ] [--image-opts] [--target-image-opts] [--target-is-zero]\n"
"        [-U] [-p] [-q] [-n] [-f FMT] [-t CACHE] [-T SRC_CACHE] [-O FMT]\n"
"        [-o OPTIONS] [-S SPARSE_SIZE] [-m N] [-W] SRC [SRC2 [...]] DST\n"
"  compare [--object OBJ] [--image-opts] [-f FMT] [-F FMT] [-T SRC_CACHE]\n"
"        [-p] [-q] [-s] [-U] FILE1 FILE2\n"
"  resize [--object OBJ] [--image-opts] [-f FMT] [--preallocation=MODE] [-q]\n"
"        [--shrink] FILE [+|-]SIZE\n"
"  check [--object OBJ] [--image-opts] [-q] [-f FMT] [--output=human|json]\n"
"        [-r leaks|all] [-T SRC_CACHE] [-U] FILE\n"
"  measure [--output=human|json] [-O FMT] [-o OPTIONS]\n"
"        [--size N | [--object OBJ] [--image-opts] [-f FMT] FILE]\n"
"\n"
"FILE is an image path (raw over file unless -f names a driver), a\n"
"json:{...} option tree, or with --image-opts dotted keys.\n"
"'strata-img COMMAND -h' describes a command's options.\n");
}

bool img_object_add(const char *arg)
{
    StrataError *err = NULL;

    if (!tool_object_add(arg, &err)) {
        img_error("%s", strata_error_get_message(err));
        strata_error_free(err);
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    tool_set_block_log("strata-img");
    if (argc < 2) {
        usage();
        return 1;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage();
        return 0;
    }
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
        printf("strata-img version %s (library %s)\n", STRATA_VERSION_STRING,
               strata_version_string());
        return 0;
    }
    if (!strcmp(cmd, "create")) {
        return img_create(argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "info")) {
        return img_info(argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "map")) {
        return img_map(argc - 1, argv + 1);
    }
    static const struct {
        const char *name;
        int (*fn)(int argc, char **argv);
    } cmds[] = {
        { "bench", img_bench }, { "convert", img_convert },
        { "compare", img_compare }, { "resize", img_resize },
        { "check", img_check }, { "measure", img_measure },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cmds); i++) {
        if (!strcmp(cmd, cmds[i].name)) {
            int ret = cmds[i].fn(argc - 1, argv + 1);
            /* After the command closed its images: they used them. */
            object_del_all();
            return ret;
        }
    }
    img_error("Command not found: %s", cmd);
    usage();
    return 1;
}
