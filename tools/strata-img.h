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

/* The "bench" subcommand (tools/img-bench.c): @argv[0] is "bench".
 * Returns the process's exit status. */
int img_bench(int argc, char **argv);

#endif
