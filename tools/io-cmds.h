/*
 * strata-io: shared state of the tool and its command table
 * SPDX-License-Identifier: MIT
 *
 * tools/strata-io.c owns the process (options, opening the image, the
 * command loop); tools/io-cmds.c holds the command table, dispatch and
 * the control commands, tools/io-rw.c the data commands, all against the
 * backend API.  Everything runs in the main thread,
 * which owns the context's loop: blocking requests run the loop until they
 * complete, and asynchronous requests (aio_read, aio_write) complete in
 * whatever loop iteration comes next.
 */
#ifndef STRATA_TOOLS_IO_CMDS_H
#define STRATA_TOOLS_IO_CMDS_H

#include <stdbool.h>
#include <stdint.h>

#include "block/block-int.h"
#include "tools/tool-common.h"

/* How to open an image: the command line's options or the open command's. */
typedef struct IoOpenFlags {
    const char *fmt;            /* -f: driver of the top node, or NULL */
    bool image_opts;            /* FILE is dotted keys */
    bool read_only;             /* -r */
    const char *cache;          /* -t/-n: QEMU cache mode, or NULL */
    const char *aio;            /* -i: file.aio, or NULL */
    const char *discard;        /* -d, or NULL for the default (unmap) */
    bool force_share;           /* -U */
    bool snapshot;              /* -s: writes go to a temporary overlay */
} IoOpenFlags;

typedef struct IoState {
    StrataContext *ctx;
    StrataBackend *be;          /* NULL while no image is open */
    uint32_t perm, shared;      /* what the backend takes and shares */
    bool misalign;              /* -m: guest buffers at odd addresses */
    bool image_opts;            /* --image-opts, also for "open" */
    int aio_in_flight;          /* aio_read/aio_write not completed yet */
    bool quit;                  /* "quit" ran */
} IoState;

/* Parse a QEMU cache mode: direct I/O, write cache enabled, no-flush. */

/* Open @filename (or the dotted keys in it with f->image_opts) with
 * @take_extra merged in (the open command's -o, may be NULL) and make it
 * the current image.  Prints nothing; false with *errp on failure. */
bool io_open_image(IoState *s, const char *filename, OptNode *take_extra,
                   const IoOpenFlags *f, StrataError **errp);
/* Close the current image: waits for aio requests in flight (their
 * completion lines print), then frees the backend. */
void io_close_image(IoState *s);

/* Run one command line (words split on spaces).  Returns 0, or <0 when the
 * command failed (the tool's exit status becomes 1). */
int io_command(IoState *s, const char *line);

/* The image's top node (borrowed); an image must be open. */
static inline StrataNode *io_root(IoState *s)
{
    return strata_backend_get_root(s->be);
}

/* Print the one-line usage of command @name; returns -EINVAL. */
int io_usage(const char *name);
/* Parse a byte count or offset (decimal, 0x hex, k/M/G/T/P/E suffixes);
 * on failure prints qemu-io's parsing error and returns false. */
bool io_get_num(const char *arg, int64_t *out);
/* qemu-io's human-readable size: "512 bytes", "1.500 KiB", "2 MiB". */
void io_fmt_size(double value, char *buf, size_t size);

/* Data commands (tools/io-rw.c): argv as getopt(3) takes it; 0 or <0. */
int io_cmd_read(IoState *s, int argc, char **argv);
int io_cmd_readv(IoState *s, int argc, char **argv);
int io_cmd_write(IoState *s, int argc, char **argv);
int io_cmd_writev(IoState *s, int argc, char **argv);
int io_cmd_aio_read(IoState *s, int argc, char **argv);
int io_cmd_aio_write(IoState *s, int argc, char **argv);
int io_cmd_aio_flush(IoState *s, int argc, char **argv);
int io_cmd_flush(IoState *s, int argc, char **argv);
int io_cmd_discard(IoState *s, int argc, char **argv);
int io_cmd_truncate(IoState *s, int argc, char **argv);
int io_cmd_length(IoState *s, int argc, char **argv);
int io_cmd_alloc(IoState *s, int argc, char **argv);
int io_cmd_map(IoState *s, int argc, char **argv);

/* The program's name: argv[0]'s basename (borrowed, for the process). */
extern const char *io_progname;

/* Print "<io_progname>: <message>" on stderr (stdout flushed first, so the
 * two streams interleave in order). */
void io_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

#endif
