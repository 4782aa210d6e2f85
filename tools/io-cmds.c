/*
 * strata-io commands: the table, dispatch, and the commands that are not
 * data requests (info, open, close, reopen, breakpoints, sleep, help)
 * SPDX-License-Identifier: MIT
 *
 * Dispatch follows qemu-io: words split on spaces, the command looked up by
 * name or short alias, "no file open" and argument-count errors on stderr,
 * then the permissions the command needs taken on the backend (a read-only
 * image refuses writes here, with qemu-io's message), then the command.
 * Failures make the command return <0, which turns the tool's exit status
 * to 1 (asynchronous requests excepted: their errors are printed when they
 * complete, as in qemu-io).  The data commands live in tools/io-rw.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/backend-int.h"
#include "block/blkdebug.h"
#include "block/block-int.h"
#include "tools/io-cmds.h"

typedef struct IoCmd IoCmd;
typedef int IoCmdFn(IoState *s, int argc, char **argv);

enum {
    CMD_GLOBAL = 1 << 0,        /* runs whatever the state (help, quit) */
    CMD_NOFILE_OK = 1 << 1,     /* runs without an image */
};

struct IoCmd {
    const char *name;
    const char *altname;
    IoCmdFn *fn;
    int argmin, argmax;         /* argmax -1: no limit */
    unsigned flags;
    uint32_t perm;              /* permissions the command needs */
    const char *args;           /* NULL: none shown */
    const char *oneline;
    const char *help;           /* extended help, or NULL */
};

static const IoCmd *find_command(const char *name);

int io_usage(const char *name)
{
    const IoCmd *ct = find_command(name);
    printf("%s %s -- %s\n", ct->name, ct->args ? ct->args : "", ct->oneline);
    return -EINVAL;
}

/* ---- info ------------------------------------------------------------------------ */

static void print_node_info(IoState *s, StrataNode *node, const char *role,
                            int depth)
{
    StrataLimits l;
    StrataStats st;
    char size[64];
    int ind = 2 * depth;
    int64_t len = strata_node_get_length(node);

    strata_node_get_limits(node, &l);
    strata_node_get_stats(node, &st);
    if (len >= 0) {
        io_fmt_size((double)len, size, sizeof(size));
    } else {
        g_strlcpy(size, strerror((int)-len), sizeof(size));
    }
    printf("%*snode %s (%s)%s%s: %s (%" PRId64 " bytes), %s, cache.direct=%s, "
           "cache.no-flush=%s, discard=%s\n",
           ind, "", strata_node_get_name(node), strata_node_get_driver(node),
           role ? " as " : "", role ? role : "", size, len,
           node->read_only ? "read-only" : "read-write",
           node->cache_direct ? "on" : "off", node->cache_no_flush ? "on" : "off",
           node->discard == DISCARD_UNMAP ? "unmap" : "ignore");
    printf("%*s  limits: request_alignment %" PRIu32 ", mem_alignment %" PRIu32
           ", iov_len_alignment %" PRIu32 ", opt_mem_alignment %" PRIu32 "\n",
           ind, "", l.request_alignment, l.mem_alignment, l.iov_len_alignment,
           l.opt_mem_alignment);
    printf("%*s  limits: max_transfer %" PRId64 ", opt_transfer %" PRId64
           ", max_iov %d\n", ind, "", l.max_transfer, l.opt_transfer, l.max_iov);
    printf("%*s  limits: pwrite_zeroes_alignment %" PRIu32 ", max_pwrite_zeroes %"
           PRId64 ", pdiscard_alignment %" PRIu32 ", max_pdiscard %" PRId64 "\n",
           ind, "", l.pwrite_zeroes_alignment, l.max_pwrite_zeroes,
           l.pdiscard_alignment, l.max_pdiscard);
    if (l.logical_block_size || l.physical_block_size) {
        printf("%*s  block size: logical %" PRIu32 ", physical %" PRIu32
               " (0: unknown)\n", ind, "", l.logical_block_size,
               l.physical_block_size);
    }
    for (int i = 0; i < STRATA_STATS__MAX; i++) {
        const StrataOpStats *o = &st.op[i];
        printf("%*s  %s: %" PRIu64 " ops, %" PRIu64 " bytes, %" PRIu64 " errors\n",
               ind, "", block_req_type_names[i], o->ops, o->bytes, o->errors);
    }
    printf("%*s  padding: padded_reads %" PRIu64 ", rmw_writes %" PRIu64
           ", serialising_waits %" PRIu64 ", coalesced_writes %" PRIu64 "\n",
           ind, "", st.padded_reads, st.rmw_writes, st.serialising_waits,
           st.coalesced_writes);
    printf("%*s  padding: bytes_bounced %" PRIu64 ", vectors_collapsed %" PRIu64
           ", pool_waits %" PRIu64 ", split_requests %" PRIu64 "\n",
           ind, "", st.bytes_bounced, st.vectors_collapsed, st.pool_waits,
           st.split_requests);
    /* Timing lives on a line of its own so that test filters can drop it. */
    printf("%*s  latency:", ind, "");
    for (int i = 0; i < STRATA_STATS__MAX; i++) {
        const StrataOpStats *o = &st.op[i];
        printf("%s %s %.1f us", i ? "," : "", block_req_type_names[i],
               o->ops ? (double)o->total_ns / (double)o->ops / 1e3 : 0.0);
    }
    printf("\n");
    if (node->drv->dump_info) {
        g_autoptr(GString) out = g_string_new(NULL);
        node->drv->dump_info(node, out);
        g_auto(GStrv) lines = g_strsplit(out->str, "\n", -1);
        for (int i = 0; lines[i]; i++) {
            if (*lines[i]) {
                printf("%*s  %s\n", ind, "", lines[i]);
            }
        }
    }
    for (GSList *l2 = node->children; l2; l2 = l2->next) {
        BlockChild *c = l2->data;
        print_node_info(s, c->node, c->role, depth + 1);
    }
}

/*
 * qemu-io prints the format name and what the format knows about itself;
 * a Strata graph has no clusters or VM state, so what follows the first
 * line is the graph under the backend, node by node: size, common
 * options, limits, per-type statistics and the padding counters.
 */
static int cmd_info(IoState *s, int argc, char **argv)
{
    StrataNode *root = io_root(s);

    printf("format name: %s\n", strata_node_get_driver(root));
    printf("write cache: %s\n",
           backend_get_write_cache(s->be) ? "enabled" : "disabled (writethrough)");
    print_node_info(s, root, NULL, 0);
    return 0;
}

/* ---- open, close, reopen, quit --------------------------------------------------- */

/* Dotted keys from -o merged into *acc (created on first use). */
/* Several -o options are one set of dotted keys: joined and parsed
 * together, so "-o file.driver=file -o file.filename=x" builds one "file"
 * object rather than the second replacing the first. */
static bool add_dotted(GString *acc, const char *text)
{
    if (acc->len) {
        g_string_append_c(acc, ',');
    }
    g_string_append(acc, text);
    return true;
}

static int cmd_open(IoState *s, int argc, char **argv)
{
    IoOpenFlags f = { .image_opts = s->image_opts };
    g_autoptr(OptNode) extra = NULL;
    g_autoptr(GString) dotted = g_string_new(NULL);
    StrataError *err = NULL;
    int c;

    if (s->be) {
        io_error("file open already, try 'help close'");
        return -EBUSY;
    }
    while ((c = getopt(argc, argv, "snCrkUf:i:t:d:o:")) != -1) {
        switch (c) {
        case 's':
            f.snapshot = true;
            break;
        case 'C':
            io_error("copy-on-read (-C) is not supported");
            return -ENOTSUP;
        case 'n':
            f.cache = "none";
            break;
        case 'r':
            f.read_only = true;
            break;
        case 'k':
            f.aio = "native";
            break;
        case 'U':
            f.force_share = true;
            break;
        case 'f':
            f.fmt = optarg;
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
        case 'o':
            add_dotted(dotted, optarg);
            break;
        default:
            return io_usage("open");
        }
    }
    if (dotted->len) {
        extra = opts_parse_dotted(dotted->str, &err);
        if (!extra) {
            io_error("%s", strata_error_get_message(err));
            strata_error_free(err);
            return -EINVAL;
        }
    }
    const char *name = NULL;
    if (optind == argc - 1) {
        name = argv[optind];
    } else if (optind != argc || !extra) {
        return io_usage("open");
    }
    if (!io_open_image(s, name, g_steal_pointer(&extra), &f, &err)) {
        if (name && !f.image_opts) {
            io_error("can't open device %s: %s", name, strata_error_get_message(err));
        } else {
            io_error("can't open: %s", strata_error_get_message(err));
        }
        strata_error_free(err);
        return -EINVAL;
    }
    return 0;
}

static int cmd_close(IoState *s, int argc, char **argv)
{
    io_close_image(s);
    return 0;
}

static int cmd_quit(IoState *s, int argc, char **argv)
{
    s->quit = true;
    return 0;
}

static int cmd_reopen(IoState *s, int argc, char **argv)
{
    g_autoptr(OptNode) changes = opts_new_object();
    g_autoptr(OptNode) extra = NULL;
    g_autoptr(GString) dotted = g_string_new(NULL);
    bool has_rw = false, read_only = false, has_cache = false;
    bool direct = false, wce = false, no_flush = false;
    StrataError *err = NULL;
    int c;

    while ((c = getopt(argc, argv, "c:o:rw")) != -1) {
        switch (c) {
        case 'c':
            if (!tool_parse_cache_mode(optarg, &direct, &wce, &no_flush)) {
                io_error("Invalid cache option: %s", optarg);
                return -EINVAL;
            }
            has_cache = true;
            break;
        case 'o':
            add_dotted(dotted, optarg);
            break;
        case 'r':
        case 'w':
            if (has_rw) {
                io_error("Only one -r/-w option may be given");
                return -EINVAL;
            }
            has_rw = true;
            read_only = c == 'r';
            break;
        default:
            return io_usage("reopen");
        }
    }
    if (optind != argc) {
        return io_usage("reopen");
    }
    if (dotted->len) {
        extra = opts_parse_dotted(dotted->str, &err);
        if (!extra) {
            io_error("%s", strata_error_get_message(err));
            strata_error_free(err);
            return -EINVAL;
        }
    }
    if (has_rw && opts_has(extra, "read-only")) {
        /* qemu-io's rule: one way to say it. */
        io_error("Cannot set both -r/-w and 'read-only'");
        return -EINVAL;
    }
    if (has_rw) {
        opts_set_bool(changes, "read-only", read_only, NULL);
    }
    if (has_cache) {
        opts_set_bool(changes, "cache.direct", direct, NULL);
        opts_set_bool(changes, "cache.no-flush", no_flush, NULL);
    }
    if (extra) {
        for (guint i = 0; i < opts_object_size(extra); i++) {
            opts_set_child(changes, opts_object_key(extra, i),
                           opts_clone(opts_object_value(extra, i)));
        }
    }

    StrataNode *root = io_root(s);
    bool was_ro = root->read_only;
    uint32_t old_perm = s->perm;
    bool force_share = s->shared == PERM_ALL;
    /* As qemu-io: -r gives up write and resize first (a node only goes
     * read-only once nobody holds write on it), and takes them back if
     * the reopen fails; -o read-only=on keeps them, so the reopen fails
     * while this tool writes ("Read-only block node ... cannot support
     * read-write users"). */
    bool will_ro = has_rw ? read_only : was_ro;

    if (will_ro && (s->perm & (PERM_WRITE | PERM_RESIZE))) {
        if (!backend_set_perm(s->be, PERM_CONSISTENT_READ, s->shared, &err)) {
            goto fail;
        }
        s->perm = PERM_CONSISTENT_READ;
    }
    if (!node_reopen(root, changes, &err)) {
        if (s->perm != old_perm &&
            backend_set_perm(s->be, old_perm, s->shared, NULL)) {
            s->perm = old_perm;
        }
        goto fail;
    }
    if (was_ro && !root->read_only) {
        uint32_t perm = PERM_CONSISTENT_READ | PERM_WRITE |
                        (force_share ? 0 : PERM_RESIZE);
        if (!backend_set_perm(s->be, perm, s->shared, &err)) {
            goto fail;
        }
        s->perm = perm;
    }
    if (has_cache) {
        strata_backend_set_write_cache(s->be, wce);
    }
    return 0;

fail:
    io_error("%s", strata_error_get_message(err));
    strata_error_free(err);
    return -EINVAL;
}

/* ---- blkdebug breakpoints --------------------------------------------------------- */

/* qemu-io's errno for a failed breakpoint command: ENOTSUP without a
 * blkdebug node in the graph, else ENOENT (unknown event or tag). */
static int break_errno(IoState *s)
{
    return blkdebug_find(io_root(s)) ? ENOENT : ENOTSUP;
}

/* The lines qemu-io prints (on stdout) as its blkdebug holds and lets go
 * of a request. */
static void break_notify(void *opaque, const char *tag, bool suspended)
{
    printf("blkdebug: %s request '%s'\n", suspended ? "Suspended" : "Resuming",
           tag);
}

static int cmd_break(IoState *s, int argc, char **argv)
{
    g_autoptr(StrataError) err = NULL;

    /* Only breakpoints suspend requests, so the filter they are set on is
     * the one to listen to. */
    blkdebug_set_notify(io_root(s), break_notify, NULL);
    if (!blkdebug_break(io_root(s), argv[1], argv[2], &err)) {
        int e = break_errno(s);
        printf("Could not set breakpoint: %s\n", strerror(e));
        return -e;
    }
    return 0;
}

static int cmd_remove_break(IoState *s, int argc, char **argv)
{
    g_autoptr(StrataError) err = NULL;

    if (!blkdebug_remove_break(io_root(s), argv[1], &err)) {
        int e = break_errno(s);
        printf("Could not remove breakpoint %s: %s\n", argv[1], strerror(e));
        return -e;
    }
    return 0;
}

static int cmd_resume(IoState *s, int argc, char **argv)
{
    g_autoptr(StrataError) err = NULL;

    if (!blkdebug_resume(io_root(s), argv[1], &err)) {
        int e = break_errno(s);
        printf("Could not resume request: %s\n", strerror(e));
        return -e;
    }
    return 0;
}

static int cmd_wait_break(IoState *s, int argc, char **argv)
{
    /* qemu-io would wait forever here; say why instead. */
    if (!blkdebug_wait_break(io_root(s), argv[1])) {
        io_error("wait_break: no request is or can be suspended at a "
                 "breakpoint tagged '%s'", argv[1]);
        return -ENOENT;
    }
    return 0;
}

/* ---- sleep, abort, sigraise, help ------------------------------------------------ */

static void sleep_expired(void *opaque)
{
    *(bool *)opaque = true;
}

static int cmd_sleep(IoState *s, int argc, char **argv)
{
    char *end;
    long ms = strtol(argv[1], &end, 0);
    bool expired = false;
    LoopTimer t;

    if (ms < 0 || *end || end == argv[1] || ms > INT64_MAX / 1000000) {
        printf("%s is not a valid number\n", argv[1]);
        return -EINVAL;
    }
    /* Run the loop meanwhile: aio requests in flight go on completing. */
    loop_timer_init(&t, s->ctx->loop, sleep_expired, &expired);
    loop_timer_mod(&t, clock_ns() + (int64_t)ms * 1000000);
    while (!expired) {
        loop_run_once(s->ctx->loop, true);
    }
    return 0;
}

static int cmd_abort(IoState *s, int argc, char **argv)
{
    fflush(stdout);
    abort();
}

static int cmd_sigraise(IoState *s, int argc, char **argv)
{
    int64_t sig;

    if (!io_get_num(argv[1], &sig)) {
        return -EINVAL;
    }
    if (sig > NSIG) {
        printf("signal argument '%s' is too large to be a valid signal\n", argv[1]);
        return -EINVAL;
    }
    /* raise() may end the process: what was printed must be out first. */
    fflush(stdout);
    fflush(stderr);
    raise((int)sig);
    return 0;
}

static int cmd_help(IoState *s, int argc, char **argv);

/* ---- the table ---------------------------------------------------------------------- */

/* Sorted by name: help lists them in this order. */
static const IoCmd commands[] = {
    { "abort", NULL, cmd_abort, 0, 0, CMD_NOFILE_OK, 0, NULL,
      "simulate a program crash using abort(3)", NULL },
    { "aio_flush", NULL, io_cmd_aio_flush, 0, 0, 0, 0, NULL,
      "completes all outstanding aio requests", NULL },
    { "aio_read", NULL, io_cmd_aio_read, 2, -1, 0, 0,
      "[-Ciqv] [-P pattern] off len [len..]",
      "asynchronously reads a number of bytes",
      " Starts a vectored read of the given lengths at the offset and returns\n"
      " at once; the result line prints when the read completes (aio_flush\n"
      " waits for every request in flight).  Errors of the request do not\n"
      " fail the command.\n"
      " -C, -- print the result as CSV: bytes,ops,time,bytes/sec,ops/sec\n"
      " -P, -- verify that every byte read equals the pattern\n"
      " -i, -- only print that an invalid request would be injected\n"
      " -q, -- quiet: no result line\n"
      " -v, -- hex dump of the data read\n" },
    { "aio_write", NULL, io_cmd_aio_write, 2, -1, 0, PERM_WRITE,
      "[-Cfiquz] [-P pattern] off len [len..]",
      "asynchronously writes a number of bytes",
      " Starts a vectored write of the given lengths at the offset, filled\n"
      " with the pattern (default 0xcd), and returns at once; the result\n"
      " line prints when the write completes (see aio_flush).\n"
      " -C, -- print the result as CSV\n"
      " -f, -- Force Unit Access: durable when it completes\n"
      " -i, -- only print that an invalid request would be injected\n"
      " -P, -- fill byte\n"
      " -q, -- quiet: no result line\n"
      " -u, -- with -z, the range may be deallocated\n"
      " -z, -- write zeroes (one length only)\n" },
    { "alloc", "a", io_cmd_alloc, 1, 2, 0, 0, "offset [count]",
      "checks if offset is allocated in the file",
      " Counts the bytes of the range (default 512) that the storage holds\n"
      " data for; ranges that only read as zeroes do not count.\n" },
    { "break", NULL, cmd_break, 2, 2, 0, 0, "event tag",
      "sets a breakpoint on event and tags the stopped request as tag",
      " Needs a blkdebug node in the graph; see docs/blkdebug.md for events.\n" },
    { "close", "c", cmd_close, 0, 0, 0, 0, NULL,
      "close the current open file", NULL },
    { "discard", "d", io_cmd_discard, 2, -1, 0, PERM_WRITE, "[-Cq] off len",
      "discards a number of bytes at a specified offset",
      " Discards the range; unaligned head and tail are left alone.\n"
      " -C, -- print the result as CSV\n"
      " -q, -- quiet: no result line\n" },
    { "flush", "f", io_cmd_flush, 0, 0, 0, 0, NULL,
      "flush all in-core file state to disk", NULL },
    { "help", "?", cmd_help, 0, 1, CMD_GLOBAL, 0, "[command]",
      "help for one or all commands", NULL },
    { "info", "i", cmd_info, 0, 0, 0, 0, NULL,
      "prints information about the current file",
      " Prints the top node's driver, the write cache mode, then every node\n"
      " of the graph: size, options, limits, statistics, padding counters.\n" },
    { "length", "l", io_cmd_length, 0, 0, 0, 0, NULL,
      "gets the length of the current file", NULL },
    { "map", NULL, io_cmd_map, 0, 0, 0, 0, "",
      "prints the allocated areas of a file", NULL },
    { "open", "o", cmd_open, 1, -1, CMD_NOFILE_OK, 0,
      "[-rsCnkU] [-f fmt] [-i aio] [-t cache] [-d discard] [-o options] [path]",
      "open the file specified by path",
      " Opens an image (a path, a filename with a protocol prefix such as\n"
      " blkdebug::PATH or null-co://, json:{...}, or dotted keys with\n"
      " --image-opts) for the other commands.\n"
      " -r, -- read-only\n"
      " -n, -- no host page cache, short for -t none\n"
      " -U, -- share all permissions with other users\n"
      " -k, -- short for -i native\n"
      " -f, -- driver of the top node (default: raw over file)\n"
      " -i, -- AIO engine of the file node\n"
      " -t, -- cache mode\n"
      " -d, -- discard mode\n"
      " -o, -- more options as dotted keys\n"
      " -s, -- snapshot: writes go to a temporary overlay, discarded at close\n"
      " -C, -- copy-on-read: not supported\n" },
    { "quit", "q", cmd_quit, 0, 0, CMD_GLOBAL, 0, NULL,
      "exit the program", NULL },
    { "read", "r", io_cmd_read, 2, -1, 0, 0,
      "[-abCqv] [-P pattern [-s off] [-l len]] off len",
      "reads a number of bytes at a specified offset",
      " Reads the range, optionally verifying it against a pattern byte and\n"
      " dumping it.\n"
      " -b, -- VM state: not supported\n"
      " -C, -- print the result as CSV: bytes,ops,time,bytes/sec,ops/sec\n"
      " -l, -- length of the verified part (with -P)\n"
      " -p, -- ignored\n"
      " -P, -- verify that the bytes read equal the pattern\n"
      " -q, -- quiet: no result line\n"
      " -s, -- start of the verified part, from off (with -P)\n"
      " -v, -- hex dump of the data read\n" },
    { "readv", NULL, io_cmd_readv, 2, -1, 0, 0, "[-Cqv] [-P pattern] off len [len..]",
      "reads a number of bytes at a specified offset",
      " Reads the range into one buffer element per length.\n"
      " -C, -- print the result as CSV\n"
      " -P, -- verify that the bytes read equal the pattern\n"
      " -q, -- quiet: no result line\n"
      " -v, -- hex dump of the data read\n" },
    { "remove_break", NULL, cmd_remove_break, 1, 1, 0, 0, "tag",
      "remove a breakpoint by tag", NULL },
    { "reopen", NULL, cmd_reopen, 0, -1, 0, 0, "[(-r|-w)] [-c cache] [-o options]",
      "reopens an image with new options",
      " Changes options of the open image, all or nothing.\n"
      " -r, -- read-only\n"
      " -w, -- read-write\n"
      " -c, -- cache mode\n"
      " -o, -- options as dotted keys (read-only, cache.direct,\n"
      "        cache.no-flush, detect-zeroes)\n" },
    { "resume", NULL, cmd_resume, 1, 1, 0, 0, "tag",
      "resumes the request tagged as tag", NULL },
    { "sigraise", NULL, cmd_sigraise, 1, 1, CMD_NOFILE_OK, 0, "signal",
      "raises a signal", NULL },
    { "sleep", NULL, cmd_sleep, 1, 1, CMD_NOFILE_OK, 0, NULL,
      "waits for the given value in milliseconds", NULL },
    { "truncate", "t", io_cmd_truncate, 1, 3, 0, PERM_WRITE | PERM_RESIZE,
      "[-m prealloc_mode] off",
      "truncates the current file at the given offset",
      " Changes the image's size.  -m: off (default), falloc or full.\n" },
    { "wait_break", NULL, cmd_wait_break, 1, 1, 0, 0, "tag",
      "waits for the suspension of a request", NULL },
    { "write", "w", io_cmd_write, 2, -1, 0, PERM_WRITE,
      "[-bcCfnquz] [-P pattern | -s source_file] off len",
      "writes a number of bytes at a specified offset",
      " Writes the range, filled with the pattern (default 0xcd).\n"
      " -b, -c -- VM state and compression: not supported\n"
      " -C, -- print the result as CSV\n"
      " -f, -- Force Unit Access: durable when it completes\n"
      " -n, -- with -z, fail rather than write zeroes the slow way\n"
      " -p, -- ignored\n"
      " -P, -- fill byte\n"
      " -q, -- quiet: no result line\n"
      " -s, -- fill from this file, repeated\n"
      " -u, -- with -z, the range may be deallocated\n"
      " -z, -- write zeroes\n" },
    { "writev", NULL, io_cmd_writev, 2, -1, 0, PERM_WRITE,
      "[-Cfq] [-P pattern] off len [len..]",
      "writes a number of bytes at a specified offset",
      " Writes the range from one buffer element per length.\n"
      " -C, -- print the result as CSV\n"
      " -f, -- Force Unit Access\n"
      " -P, -- fill byte\n"
      " -q, -- quiet: no result line\n" },
};

static const IoCmd *find_command(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (!strcmp(commands[i].name, name) ||
            (commands[i].altname && !strcmp(commands[i].altname, name))) {
            return &commands[i];
        }
    }
    return NULL;
}

static void help_oneline(const char *name, const IoCmd *ct)
{
    printf("%s ", name);
    if (ct->args) {
        printf("%s ", ct->args);
    }
    printf("-- %s\n", ct->oneline);
}

static int cmd_help(IoState *s, int argc, char **argv)
{
    if (argc == 1) {
        for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
            help_oneline(commands[i].name, &commands[i]);
        }
        printf("\nUse 'help commandname' for extended help.\n");
        return 0;
    }
    const IoCmd *ct = find_command(argv[1]);
    if (!ct) {
        printf("command %s not found\n", argv[1]);
        return -EINVAL;
    }
    help_oneline(argv[1], ct);
    if (ct->help) {
        printf("\n%s\n", ct->help);
    }
    return 0;
}

/* ---- dispatch -------------------------------------------------------------------------- */

/* Take what @ct needs beyond what the backend holds, as qemu-io does per
 * command: a read-only image refuses, a conflict names the other user. */
static bool take_perm(IoState *s, const IoCmd *ct)
{
    uint32_t want = ct->perm & ~s->perm;
    StrataError *err = NULL;

    if (!want) {
        return true;
    }
    if (io_root(s)->read_only && (want & (PERM_WRITE | PERM_RESIZE))) {
        io_error("Block node is read-only");
        return false;
    }
    if (!backend_set_perm(s->be, s->perm | want, s->shared, &err)) {
        io_error("%s", strata_error_get_message(err));
        strata_error_free(err);
        return false;
    }
    s->perm |= want;
    return true;
}

int io_command(IoState *s, const char *line)
{
    g_autofree char *input = g_strdup(line);
    g_autoptr(GPtrArray) words = g_ptr_array_new();
    char *save = NULL;

    for (char *w = strtok_r(input, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        g_ptr_array_add(words, w);
    }
    if (!words->len) {
        return 0;
    }
    int argc = (int)words->len;
    g_ptr_array_add(words, NULL);
    char **argv = (char **)words->pdata;

    const IoCmd *ct = find_command(argv[0]);
    if (!ct) {
        fflush(stdout);
        fprintf(stderr, "command \"%s\" not found\n", argv[0]);
        return -EINVAL;
    }
    if (!(ct->flags & (CMD_GLOBAL | CMD_NOFILE_OK)) && !s->be) {
        fflush(stdout);
        fprintf(stderr, "no file open, try 'help open'\n");
        return -EINVAL;
    }
    if (argc - 1 < ct->argmin || (ct->argmax != -1 && argc - 1 > ct->argmax)) {
        fflush(stdout);
        if (ct->argmax == -1) {
            fprintf(stderr, "bad argument count %d to %s, expected at least %d "
                    "arguments\n", argc - 1, argv[0], ct->argmin);
        } else if (ct->argmin == ct->argmax) {
            fprintf(stderr, "bad argument count %d to %s, expected %d arguments\n",
                    argc - 1, argv[0], ct->argmin);
        } else {
            fprintf(stderr, "bad argument count %d to %s, expected between %d and "
                    "%d arguments\n", argc - 1, argv[0], ct->argmin, ct->argmax);
        }
        return -EINVAL;
    }
    if (s->be && !take_perm(s, ct)) {
        return -EPERM;
    }
    /* getopt(3) starts over for each command (glibc: optind 0 resets). */
    optind = 0;
    fflush(stderr);
    int ret = ct->fn(s, argc, argv);
    /* getopt's own messages go to stderr: keep the streams in order. */
    fflush(stdout);
    return ret;
}
