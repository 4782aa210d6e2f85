/*
 * strata-io: exercise a Strata graph with qemu-io's command language
 * SPDX-License-Identifier: MIT
 *
 *   strata-io [OPTIONS] [-c CMD]... [FILE]
 *
 * FILE is an image path (opened as raw over file unless -f names another
 * driver), a "json:{...}" option tree, or with --image-opts dotted keys.
 * The commands (-c, else one per line from stdin) are those of qemu-io and
 * print the same lines, so iotests-style scripts and their filters carry
 * over; see docs/strata-io.md for the differences.  The exit status is 1
 * when the image could not be opened or any command failed.
 *
 * This file holds the process: option parsing, turning the options into a
 * node option tree, the backend's permissions and the command loop.  The
 * commands live in tools/io-cmds.c.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config-host.h"
#include "block/backend-int.h"
#include "block/block-int.h"
#include "block/file-posix.h"
#include "block/object.h"
#include "tools/io-cmds.h"

/* argv[0]'s basename, as qemu-io names itself in messages and the prompt:
 * installed as (or linked to) another name, the tool prints that one. */
const char *io_progname = "strata-io";

void io_error(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fprintf(stderr, "%s: ", io_progname);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}


/* ---- building the option tree ------------------------------------------ */

/* Merge @src into @dst: objects member by member, anything else replaces. */
static void opts_merge(OptNode *dst, const OptNode *src)
{
    for (guint i = 0; i < opts_object_size(src); i++) {
        const char *key = opts_object_key(src, i);
        OptNode *val = opts_object_value(src, i);
        OptNode *old = opts_peek(dst, key);

        if (opts_type(val) == OPT_OBJECT && old && opts_type(old) == OPT_OBJECT) {
            opts_merge(old, val);
        } else {
            opts_set_child(dst, key, opts_clone(val));
        }
    }
}


static bool driver_is_format(const char *name)
{
    const BlockDriver *drv = block_driver_find(name);
    /* "raw" is a format even in a build that does not have it yet: then
     * the open fails naming the driver rather than a stray filename. */
    return drv ? drv->is_format : !strcmp(name, "raw");
}

/*
 * The nodes of the tree that will be opened inline along the primary
 * chain: the top node, its primary child if that is an inline object, and
 * so on.  The command line's cache, discard and aio settings apply to these.
 */
static GPtrArray *opts_chain(OptNode *opts)
{
    GPtrArray *chain = g_ptr_array_new();

    while (opts && opts_type(opts) == OPT_OBJECT) {
        g_ptr_array_add(chain, opts);
        const char *name = tool_opts_driver(opts);
        const BlockDriver *drv = name ? block_driver_find(name) : NULL;
        OptNode *next = NULL;

        if (drv && drv->child_role) {
            next = opts_peek(opts, drv->child_role);
        } else if (!drv) {
            next = opts_peek(opts, "file");
            if (!next) {
                next = opts_peek(opts, "image");
            }
        }
        opts = next;
    }
    return chain;
}

static bool set_on_chain(GPtrArray *chain, const char *key, const char *value,
                         bool override, StrataError **errp)
{
    for (guint i = 0; i < chain->len; i++) {
        OptNode *o = g_ptr_array_index(chain, i);
        bool ok = override ? opts_set_str(o, key, value, errp)
                           : opts_set_default_str(o, key, value, errp);
        if (!ok) {
            return false;
        }
    }
    return true;
}

/* Turn the file name, the extra options and the flags into the tree that
 * block_open() takes (transfer full), or NULL with *errp. */
static OptNode *build_options(const char *filename, OptNode *extra,
                              const IoOpenFlags *f, StrataError **errp)
{
    g_autoptr(OptNode) opts = NULL;

    if (f->image_opts) {
        if (f->fmt) {
            error_setg(errp, "--image-opts and -f are mutually exclusive");
            return NULL;
        }
        opts = filename ? opts_parse_dotted(filename, errp) : opts_new_object();
    } else {
        opts = opts_new_object();
    }
    if (!opts) {
        return NULL;
    }
    if (opts_type(opts) != OPT_OBJECT) {
        error_setg(errp, "the image options must be an object");
        return NULL;
    }
    if (extra) {
        opts_merge(opts, extra);
    }
    /* A plain FILE as qemu-io reads it: json:{...}, or a filename whose
     * protocol prefix (blkdebug:, null-co://, file:) the library parses,
     * below the format (-f, else raw: no probing).  -o options are in
     * the tree already and win over what the filename implies. */
    if (!f->image_opts && filename &&
        !block_options_add_filename(opts, filename, f->fmt ? f->fmt : "raw",
                                    errp)) {
        return NULL;
    }

    const char *drv = tool_opts_driver(opts);
    if (f->fmt) {
        if (drv && strcmp(drv, f->fmt)) {
            error_setg(errp, "-f %s conflicts with driver '%s' in the options",
                       f->fmt, drv);
            return NULL;
        }
        if (!drv && !opts_set_str(opts, "driver", f->fmt, errp)) {
            return NULL;
        }
    } else if (!drv && !opts_has(opts, "driver")) {
        /* No probing: an image without a driver is raw data. */
        if (!opts_set_str(opts, "driver", "raw", errp)) {
            return NULL;
        }
    }

    /* A format given a "filename" option (-o filename=x, --image-opts)
     * stores its data in a protocol node for that path. */
    drv = tool_opts_driver(opts);
    OptNode *fn = opts_peek(opts, "filename");
    OptNode *file = opts_peek(opts, "file");
    if (drv && driver_is_format(drv) && fn && opts_type(fn) == OPT_STRING &&
        (!file || opts_type(file) == OPT_OBJECT)) {
        /* Options for the file node given with -o (file.locking=off) join
         * the filename there rather than replace it. */
        g_autofree char *name = g_strdup(opts_scalar_str(fn));
        opts_remove(opts, "filename");
        if (!opts_set_default_str(opts, "file.driver",
                                  block_probe_protocol(name), errp) ||
            !opts_set_str(opts, "file.filename", name, errp)) {
            return NULL;
        }
    }

    g_autoptr(GPtrArray) chain = opts_chain(opts);
    if (f->read_only && !opts_set_bool(opts, "read-only", true, errp)) {
        return NULL;
    }
    if (f->cache) {
        bool direct, wce, no_flush;
        if (!tool_parse_cache_mode(f->cache, &direct, &wce, &no_flush)) {
            error_setg(errp, "Invalid cache option: %s", f->cache);
            return NULL;
        }
        if (!set_on_chain(chain, "cache.direct", direct ? "on" : "off", true, errp) ||
            !set_on_chain(chain, "cache.no-flush", no_flush ? "on" : "off", true,
                          errp)) {
            return NULL;
        }
    }
    /* qemu-io opens with discard=unmap; so does this tool, down the chain,
     * because each node decides for itself whether discards pass. */
    if (!set_on_chain(chain, "discard", f->discard ? f->discard : "unmap",
                      f->discard != NULL, errp)) {
        return NULL;
    }
    if (f->aio) {
        bool found = false;
        for (guint i = 0; i < chain->len; i++) {
            OptNode *o = g_ptr_array_index(chain, i);
            const char *d = tool_opts_driver(o);
            const BlockDriver *bd = d ? block_driver_find(d) : NULL;
            if (bd && file_driver_is(bd)) {
                if (!opts_set_str(o, "aio", f->aio, errp)) {
                    return NULL;
                }
                found = true;
            }
        }
        if (!found) {
            error_setg(errp, "-i %s: the image has no node of the file driver",
                       f->aio);
            return NULL;
        }
    }
    if (f->snapshot) {
        /* qemu-io -s: the image, opened read-only, below a temporary
         * overlay that takes the writes and is discarded at close. */
        g_autoptr(OptNode) top = opts_new_object();
        if (!opts_set_bool(opts, "read-only", true, errp) ||
            !opts_set_str(top, "driver", "snapshot-overlay", errp) ||
            (f->read_only && !opts_set_bool(top, "read-only", true, errp))) {
            return NULL;
        }
        opts_set_child(top, "file", g_steal_pointer(&opts));
        return g_steal_pointer(&top);
    }
    return g_steal_pointer(&opts);
}

bool io_open_image(IoState *s, const char *filename, OptNode *take_extra,
                   const IoOpenFlags *f, StrataError **errp)
{
    g_autoptr(OptNode) extra = take_extra;
    bool direct = false, wce = false, no_flush = false;

    g_assert(!s->be);
    if (f->cache && !tool_parse_cache_mode(f->cache, &direct, &wce, &no_flush)) {
        error_setg(errp, "Invalid cache option: %s", f->cache);
        return false;
    }
    g_autoptr(OptNode) opts = build_options(filename, extra, f, errp);
    if (!opts) {
        return false;
    }
    StrataNode *root = block_open(s->ctx, opts, errp);
    if (!root) {
        return false;
    }

    /* What qemu-io's BlockBackend takes: read, plus write on a writable
     * image; resize only when a command needs it (truncate), as qemu-io
     * does.  That matters at the end of an image whose size is not a
     * multiple of the alignment: without resize it cannot be opened for
     * writing with O_DIRECT on a 4 KiB device (QEMU's rule). */
    uint32_t perm = PERM_CONSISTENT_READ;
    if (!root->read_only) {
        perm |= PERM_WRITE;
    }
    /* As qemu-io: a read-only user shares everything, so it can look at an
     * image a writer holds; a writer shares reading only. */
    uint32_t shared = f->force_share || root->read_only
                      ? PERM_ALL
                      : PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED;
    s->be = strata_backend_new(root, "strata-io", perm, shared, errp);
    node_unref(root);       /* the backend holds the node now */
    if (!s->be) {
        return false;
    }
    s->perm = perm;
    s->shared = shared;
    /* Writethrough unless the cache mode says otherwise, as in qemu-io. */
    strata_backend_set_write_cache(s->be, f->cache ? wce : false);
    return true;
}

void io_close_image(IoState *s)
{
    if (!s->be) {
        return;
    }
    /* Drain first: a request held at a blkdebug breakpoint is let go when
     * the graph is drained, so quitting never waits on it forever. */
    strata_backend_drain_begin(s->be);
    while (s->aio_in_flight > 0) {
        loop_run_once(s->ctx->loop, true);
    }
    strata_backend_drain_end(s->be);
    strata_backend_free(s->be);
    s->be = NULL;
    s->perm = s->shared = 0;
}

/* ---- the process ----------------------------------------------------- */

static void usage(const char *name)
{
    printf(
"Usage: %s [OPTIONS]... [-c STRING]... [file]\n"
"Exercise a Strata block graph with qemu-io's commands\n"
"\n"
"  --image-opts         treat file as dotted option keys\n"
"  --object OBJ         create an object (throttle-group,id=ID,limits.*=N;\n"
"                       secret, ...) before opening the image\n"
"  -c, --cmd STRING     execute a command (repeatable, in order)\n"
"  -f, --format FMT     driver of the top node (default: raw over file)\n"
"  -r, --read-only      open read-only\n"
"  -n, --nocache        disable the host page cache, short for -t none\n"
"  -t, --cache=MODE     cache mode: none, writeback, writethrough (default),\n"
"                       directsync, unsafe\n"
"  -i, --aio=MODE       AIO engine of the file node (threads, native,\n"
"                       io_uring, auto)\n"
"  -k, --native-aio     short for -i native\n"
"  -d, --discard=MODE   discard mode: ignore/off or unmap/on (default)\n"
"  -m, --misalign       place request buffers at odd addresses\n"
"  -U, --force-share    share all permissions with other users\n"
"  -s, --snapshot       use a temporary overlay: writes are discarded at\n"
"                       exit and the image is never written\n"
"  --poll-max-ns=N      busy-poll up to N ns before the loop sleeps, as an\n"
"                       iothread's poll-max-ns (default 0: never)\n"
"  -h, --help           display this help and exit\n"
"  -V, --version        output version information and exit\n"
"\n"
"FILE is an image path, a filename with a protocol prefix (blkdebug:,\n"
"null-co://, file:, host_device:), a json:{...} option tree, or\n"
"(--image-opts) dotted keys.  Without -c, commands are read from standard input.\n"
"See '%s -c help' for the commands.\n", name, name);
}

static int run_stdin(IoState *s)
{
    bool tty = isatty(STDIN_FILENO);
    char *line = NULL;
    size_t cap = 0;
    int failed = 0;

    for (;;) {
        if (tty) {
            printf("%s> ", io_progname);
        }
        fflush(stdout);
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) {
            break;
        }
        if (n > 0 && line[n - 1] == '\n') {
            line[n - 1] = '\0';
        }
        if (io_command(s, line) < 0) {
            failed = 1;
        }
        if (s->quit) {
            break;
        }
    }
    free(line);
    return failed;
}

int main(int argc, char **argv)
{
    enum { OPT_IMAGE_OPTS = 256, LOPT_OBJECT, LOPT_POLL_MAX_NS };
    static const struct option long_opts[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { "cmd", required_argument, NULL, 'c' },
        { "format", required_argument, NULL, 'f' },
        { "read-only", no_argument, NULL, 'r' },
        { "nocache", no_argument, NULL, 'n' },
        { "misalign", no_argument, NULL, 'm' },
        { "native-aio", no_argument, NULL, 'k' },
        { "aio", required_argument, NULL, 'i' },
        { "cache", required_argument, NULL, 't' },
        { "discard", required_argument, NULL, 'd' },
        { "force-share", no_argument, NULL, 'U' },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "object", required_argument, NULL, LOPT_OBJECT },
        { "poll-max-ns", required_argument, NULL, LOPT_POLL_MAX_NS },
        { "snapshot", no_argument, NULL, 's' },
        { NULL, 0, NULL, 0 },
    };
    g_autofree char *prog = g_path_get_basename(argv[0] ? argv[0] : "strata-io");
    g_autoptr(GPtrArray) cmds = g_ptr_array_new();
    g_autoptr(GPtrArray) objects = g_ptr_array_new();
    IoOpenFlags f = { 0 };
    IoState s = { 0 };
    int64_t poll_max_ns = 0;
    int c, failed = 0;

    io_progname = prog;
    tool_set_block_log(prog);
    while ((c = getopt_long(argc, argv, "hVc:f:rnmki:t:d:Us", long_opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(prog);
            return 0;
        case 'V':
            printf("%s version %s (library %s)\n", prog, STRATA_VERSION_STRING,
                   strata_version_string());
            return 0;
        case 'c':
            g_ptr_array_add(cmds, optarg);
            break;
        case 'f':
            f.fmt = optarg;
            break;
        case 'r':
            f.read_only = true;
            break;
        case 'n':
            f.cache = "none";
            break;
        case 'm':
            s.misalign = true;
            break;
        case 'k':
            f.aio = "native";
            break;
        case 'i':
            f.aio = optarg;
            break;
        case 't':
            f.cache = optarg;
            break;
        case 'd':
            f.discard = optarg;
            break;
        case 'U':
            f.force_share = true;
            break;
        case 's':
            f.snapshot = true;
            break;
        case OPT_IMAGE_OPTS:
            f.image_opts = true;
            break;
        case LOPT_OBJECT:
            g_ptr_array_add(objects, optarg);
            break;
        case LOPT_POLL_MAX_NS:
            if (!tool_parse_poll_max_ns(optarg, &poll_max_ns)) {
                io_error(TOOL_POLL_MAX_NS_ERROR, optarg, INT64_MAX);
                return 1;
            }
            break;
        default:
            fprintf(stderr, "Try '%s --help' for more information.\n", prog);
            return 1;
        }
    }
    if (argc - optind > 1) {
        fprintf(stderr, "%s: too many arguments\n", prog);
        fprintf(stderr, "Try '%s --help' for more information.\n", prog);
        return 1;
    }
    if (f.cache) {
        bool d, w, nf;
        if (!tool_parse_cache_mode(f.cache, &d, &w, &nf)) {
            io_error("Invalid cache option: %s", f.cache);
            return 1;
        }
    }
    s.image_opts = f.image_opts;

    StrataError *err = NULL;
    s.ctx = strata_context_new(&err);
    if (!s.ctx) {
        io_error("%s", strata_error_get_message(err));
        strata_error_free(err);
        return 1;
    }
    strata_context_set_poll_max_ns(s.ctx, poll_max_ns);
    for (guint i = 0; i < objects->len; i++) {
        if (!tool_object_add(objects->pdata[i], &err)) {
            io_error("%s", strata_error_get_message(err));
            strata_error_free(err);
            object_del_all();
            strata_context_free(s.ctx);
            return 1;
        }
    }

    if (optind < argc) {
        const char *filename = argv[optind];
        if (!io_open_image(&s, filename, NULL, &f, &err)) {
            /* As qemu-io: dotted keys are not a device name. */
            if (f.image_opts) {
                io_error("can't open: %s", strata_error_get_message(err));
            } else {
                io_error("can't open device %s: %s", filename,
                         strata_error_get_message(err));
            }
            strata_error_free(err);
            object_del_all();
            strata_context_free(s.ctx);
            return 1;
        }
    }

    if (cmds->len) {
        for (guint i = 0; i < cmds->len && !s.quit; i++) {
            if (io_command(&s, g_ptr_array_index(cmds, i)) < 0) {
                failed = 1;
            }
        }
    } else {
        failed = run_stdin(&s);
    }

    io_close_image(&s);
    object_del_all();
    fflush(stdout);
    strata_context_free(s.ctx);
    return failed;
}
