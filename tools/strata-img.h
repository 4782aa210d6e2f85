/*
 * strata-img: what the subcommands share
 * SPDX-License-Identifier: MIT
 *
 * tools/strata-img.c holds the process (subcommand dispatch, opening
 * images, create, info, map); tools/img-bench.c holds "bench".  Everything
 * runs in the main thread, which owns the context's loop.
 */
#ifndef STRATA_TOOLS_STRATA_IMG_H
#define STRATA_TOOLS_STRATA_IMG_H

#include <stdbool.h>
#include <stdint.h>

#include "block/block-int.h"
#include "tools/tool-common.h"

/* How to open an image, as qemu-img's common options say it. */
typedef struct ImgOpenFlags {
    const char *fmt;            /* -f: driver of the top node, or NULL (raw) */
    bool image_opts;            /* FILE is dotted keys */
    bool writable;              /* open read-write and take the write perm */
    const char *cache;          /* -t/-n: QEMU cache mode, or NULL */
    const char *aio;            /* -i: file.aio, or NULL */
    bool force_share;           /* -U */
    bool resize;                /* also take the resize perm (resize) */
    bool unmap;                 /* discard=unmap unless the options say */
} ImgOpenFlags;

/*
 * Open @filename (a path, "json:{...}", or dotted keys with
 * f->image_opts) in @ctx and wrap it in a backend named "strata-img".
 * Without a cache mode the backend's write cache is on (qemu-img's
 * default, cache=writeback).  NULL with *errp on failure.
 */
StrataBackend *img_open(StrataContext *ctx, const char *filename,
                        const ImgOpenFlags *f, StrataError **errp);


/* A byte count: decimal, 0x hex, or a k/M/G/T/P/E suffix (powers of 1024).
 * False (and a message naming @what on stderr) on garbage or overflow. */
bool img_parse_size(const char *what, const char *s, int64_t *out);

/* qemu-img's human size, e.g. "1 GiB", "1.5 MiB", "512 B" (3 significant
 * digits).  Newly allocated. */
char *img_size_to_str(uint64_t bytes);

/* Print "strata-img: <message>" on stderr (stdout flushed first). */
void img_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
/* --object ARG: create the object (tool_object_add()); false after
 * printing the error. */
bool img_object_add(const char *arg);
/* The same, then "Try 'strata-img --help' for more information", as
 * qemu-img words a bad command line. */
void img_usage_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/*
 * img_open() for a command: on failure print qemu-img's
 * "Could not open 'FILE': MESSAGE" and return NULL.
 */
StrataBackend *img_open_report(StrataContext *ctx, const char *filename,
                               const ImgOpenFlags *f);

/* A context for a command; NULL after printing why not. */
StrataContext *img_context_new(void);

/*
 * Open @filename in a context of its own, read its length into *size
 * (may be NULL) and close it again.  False after printing qemu-img's
 * message.
 */
bool img_probe_image(const char *filename, const ImgOpenFlags *f, int64_t *size);

/* Whether @mode is a QEMU cache mode; if not, print
 * "Invalid @what option: @mode" ("cache", "source cache"). */
bool img_cache_mode_valid(const char *mode, const char *what);

/* qemu-img's -o for raw targets: "preallocation=off|falloc|full" items,
 * comma-separated.  False with qemu-img's message on an unknown key or
 * mode; *prealloc keeps the last value given. */
bool img_parse_create_opts(const char *arg, PreallocMode *prealloc,
                           const char **prealloc_name);

/*
 * qemu-img's progress line with -p: "    (12.34/100%)\r" on stdout each
 * time the figure moved by more than @min_skip points since the last one
 * printed, and at 0 and 100; img_progress_end() ends the line.
 */
typedef struct ImgProgress {
    bool enabled;
    double current, last_print, min_skip;
} ImgProgress;
void img_progress_init(ImgProgress *p, bool enabled, double min_skip);
void img_progress_set(ImgProgress *p, double percent);
void img_progress_end(ImgProgress *p);

/* Whether @len bytes at @buf are all zero. */
bool img_buf_is_zero(const void *buf, size_t len);

/* The other subcommands, each in its own file (img-convert.c,
 * img-compare.c, img-resize.c); @argv[0] is the command's name.  Each
 * returns the process's exit status, as qemu-img's. */
int img_convert(int argc, char **argv);
int img_compare(int argc, char **argv);
int img_resize(int argc, char **argv);
int img_check(int argc, char **argv);
int img_measure(int argc, char **argv);

/* The "bench" subcommand (tools/img-bench.c): @argv[0] is "bench".
 * Returns the process's exit status. */
int img_bench(int argc, char **argv);

#endif
