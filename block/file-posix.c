/*
 * file: the protocol driver for host files and block devices
 * SPDX-License-Identifier: MIT
 *
 * One node holds one file descriptor.  Reads and writes go to an AIO
 * engine (block/aio-engine.h) chosen by the `aio` option; everything else
 * that can block (fdatasync, fallocate, the discard and zeroing ioctls,
 * truncate) runs in the context's thread pool.  docs/file-driver.md is the
 * user's view of what follows.  Image locking lives in block/file-lock.c;
 * the table of registered guest memory that selects io_uring fixed
 * buffers lives in block/memregion.c.
 *
 * Alignment is probed once per file descriptor, at open and at reopen, by
 * block/file-probe.c, which explains the three numbers it keeps and the
 * order it tries things in.
 *
 * If the probe was wrong anyway and the kernel answers EINVAL, the request
 * is redone through a second, buffered file description: the caller never
 * sees EINVAL for a request that the request path shaped to our limits.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/fs.h>

#include "block/aio-engine.h"
#include "block/block-int.h"
#include "block/drivers.h"
#include "block/file-lock.h"
#include "block/file-posix.h"
#include "block/file-probe.h"
#include "block/memregion.h"

/* EAGAIN retries of one request before giving up. */
#define FILE_MAX_EAGAIN 64

/* Option values, in the schema's order (qapi/block.json). */
enum { FILE_AIO_AUTO = AIO_ENGINE__MAX };
static const char *const file_aio_names[] = {
    "threads", "native", "io_uring", "auto", NULL,
};
enum { FILE_LOCK_AUTO, FILE_LOCK_ON, FILE_LOCK_OFF };
static const char *const file_locking_names[] = { "auto", "on", "off", NULL };
static const char *const file_bounce_names[] = { "auto", "always", NULL };

G_STATIC_ASSERT(AIO_ENGINE_THREADS == 0 && AIO_ENGINE_NATIVE == 1 &&
                AIO_ENGINE_IO_URING == 2);

/*
 * Everything that belongs to one open file description: what open
 * creates, and what a reopen prepares beside the old one and swaps in.
 */
typedef struct FileDesc {
    int fd;
    bool direct;
    bool writable;
    FileAlign align;
    const AioEngineOps *ops;
    void *engine;                   /* per-context engine state (borrowed) */
    const char *engine_why;         /* static: why auto chose it */
    bool fua;                       /* engine takes AIO_FUA */
    bool no_nowait;                 /* RWF_NOWAIT refused: AIO_NO_NOWAIT */
} FileDesc;

typedef struct FileState {
    char *filename;
    FileDesc d;
    int fd_buffered;                /* lazily opened EINVAL fallback, or -1 */
    bool is_bdev;
    int aio;                        /* as asked: AioEngineId or FILE_AIO_AUTO */
    bool bounce_auto;               /* bounce-threshold=auto */
    long fs_type;                   /* statfs f_type, 0 for block devices */
    /* Logical and physical block size, 0 unknown: of the block device,
     * or of the device a regular file's filesystem sits on. */
    uint32_t lbs, pbs;
    int64_t max_transfer;
    int max_iov;

    /* features found missing (EOPNOTSUPP once, then not asked again) */
    bool no_punch_hole;
    bool no_zero_range;
    bool no_discard;
    bool no_zeroout;

    FileLock lock;                  /* image locks (block/file-lock.c) */

    uint64_t einval_fallbacks;
    uint64_t short_resubmits;

    /* io_uring fixed buffers over registered guest memory */
    uint64_t fixed_reads, fixed_writes;
    uint64_t fixed_fallbacks;       /* in a region the engine refused */
} FileState;

bool file_driver_is(const BlockDriver *drv)
{
    return drv == &bdrv_file || drv == &bdrv_host_device ||
           drv == &bdrv_host_cdrom;
}

static FileState *file_state(StrataNode *node)
{
    g_assert(file_driver_is(node->drv));
    return node->opaque;
}

/* ---- small system helpers ------------------------------------------------ */

static int64_t file_fd_length(int fd, bool is_bdev)
{
    struct stat st;

    if (is_bdev) {
        uint64_t size;
        return ioctl(fd, BLKGETSIZE64, &size) < 0 ? -errno : (int64_t)size;
    }
    return fstat(fd, &st) < 0 ? -errno : st.st_size;
}

/* A second file description of the same file, without O_DIRECT.  Through
 * /proc so that a file renamed or unlinked since open is still the one. */
static int file_reopen_fd(int fd, int flags)
{
    char path[64];
    int nfd;

    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    nfd = open(path, flags | O_CLOEXEC);
    return nfd < 0 ? -errno : nfd;
}

static const char *file_fs_name(long type)
{
    switch ((unsigned long)type) {
    case 0x01021994: return "tmpfs";
    case 0xEF53: return "ext4";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x794c7630: return "overlay";
    case 0x6969: return "nfs";
    case 0x65735546: return "fuse";
    case 0xF2F52010: return "f2fs";
    case 0: return "block device";
    default: return "other";
    }
}

/* ---- engine choice ------------------------------------------------------------ */

/*
 * Engines aio=auto tries, best first, for a file opened with or without
 * O_DIRECT.  The measurements behind the rule are in docs/file-driver.md.
 * With O_DIRECT, libaio submits inline and beats io_uring by 4-20x where
 * io_uring punts O_DIRECT to its workers (tmpfs); on a block-backed
 * filesystem the two are even, the device is the limit.  Buffered,
 * io_submit() would block for the whole read, so libaio is never used;
 * io_uring serves page-cache hits inline and beats the thread pool's
 * hand-off by far (40x on ext4), and still wins where it punts (tmpfs).
 * The rule does not depend on the filesystem: no case measured so far
 * would change the order.
 */
static int file_auto_engines(bool direct, AioEngineId *order, const char **why)
{
    int n = 0;

    if (direct) {
        *why = "O_DIRECT: libaio submits inline, io_uring may punt to workers";
        order[n++] = AIO_ENGINE_NATIVE;
        order[n++] = AIO_ENGINE_IO_URING;
    } else {
        *why = "buffered: io_uring serves page-cache hits inline";
        order[n++] = AIO_ENGINE_IO_URING;
    }
    order[n++] = AIO_ENGINE_THREADS;
    return n;
}

/*
 * bounce-threshold=auto: the largest request size that is cheaper copied
 * through a pool buffer than handed to the kernel as guest memory, per
 * engine, from tests/bench/compare's copy-zerocopy scenarios (O_DIRECT
 * 4 KiB-1 MiB reads and writes from memfd-backed memory; the numbers are
 * in docs/benchmarks.md).  Zero-copy won at every size, on every engine,
 * registered or not, in IOPS and in CPU per request, so auto is 0
 * everywhere for now; a machine where copying small requests wins puts
 * its measured crossover here.
 */
static int64_t file_auto_bounce_threshold(AioEngineId engine)
{
    static const int64_t measured[AIO_ENGINE__MAX] = {
        [AIO_ENGINE_THREADS] = 0,
        [AIO_ENGINE_NATIVE] = 0,
        [AIO_ENGINE_IO_URING] = 0,
    };
    return measured[engine];
}

/* bounce-threshold: a size, or "auto" (*is_auto, *out 0 until the engine
 * is known). */
static bool file_get_bounce_threshold(OptNode *opts, bool *is_auto,
                                      uint64_t *out, StrataError **errp)
{
    static const char *const keywords[] = { "auto", NULL };
    int idx;

    *is_auto = opts_get_enum(opts, "bounce-threshold", keywords, -1, &idx,
                             NULL) && idx == 0;
    if (*is_auto) {
        *out = 0;
        return true;
    }
    return opts_get_size(opts, "bounce-threshold", 0, out, errp);
}

/*
 * Choose and set up the engine for @d per @aio.  @opts is for messages
 * only (the option path).
 */
static bool file_pick_engine(StrataNode *node, FileState *s, FileDesc *d,
                             OptNode *opts, StrataError **errp)
{
    const AioEngineOps *ops;
    const char *why = NULL;

    if (s->aio == FILE_AIO_AUTO) {
        AioEngineId order[AIO_ENGINE__MAX];
        const char *reason;
        int n = file_auto_engines(d->direct, order, &reason);

        for (int i = 0; i < n; i++) {
            void *state;

            ops = aio_engine_get(order[i]);
            if (!ops || !ops->available(&why)) {
                continue;
            }
            state = aio_engine_ctx_state(ops, node->ctx, NULL);
            if (!state) {
                continue;
            }
            d->ops = ops;
            d->engine = state;
            d->engine_why = i == 0 ? reason : "auto: better engines unavailable";
            d->fua = ops->supports_fua && ops->supports_fua(state);
            memregion_attach_engine(node->ctx, ops, state, 0);
            return true;
        }
        g_autofree char *path = opts_key_path(opts, "aio");
        error_setg(errp, "%s: no AIO engine is usable", path);
        return false;
    }

    g_autofree char *path = opts_key_path(opts, "aio");
    if (s->aio == AIO_ENGINE_NATIVE && !d->direct) {
        error_set_option(errp, "%s: 'native' needs cache.direct=on "
                         "(io_submit blocks on buffered files)", path);
        return false;
    }
    ops = aio_engine_get((AioEngineId)s->aio);
    if (!ops) {
        error_set_option(errp, "%s: '%s' is not compiled into this build",
                         path, file_aio_names[s->aio]);
        return false;
    }
    if (!ops->available(&why)) {
        error_set(errp, STRATA_ERROR_INVALID_OPTION, ENOTSUP,
                  "%s: '%s' is not available: %s", path,
                  file_aio_names[s->aio], why ? why : "unknown reason");
        return false;
    }
    d->engine = aio_engine_ctx_state(ops, node->ctx, errp);
    if (!d->engine) {
        error_prepend(errp, "%s: ", path);
        return false;
    }
    d->ops = ops;
    d->engine_why = "chosen by aio";
    d->fua = ops->supports_fua && ops->supports_fua(d->engine);
    /* An engine state created after the embedder registered guest memory
     * gets the regions now. */
    memregion_attach_engine(node->ctx, ops, d->engine, 0);
    return true;
}

/* ---- permissions: image locks (block/file-lock.c) ------------------------------ */

static bool file_check_perm(StrataNode *node, uint64_t perm, uint64_t shared,
                            StrataError **errp)
{
    FileState *s = node->opaque;

    return file_lock_check_perm(&s->lock, s->d.fd, s->filename, perm, shared,
                                errp);
}

static void file_set_perm(StrataNode *node, uint64_t perm, uint64_t shared)
{
    FileState *s = node->opaque;

    file_lock_set_perm(&s->lock, s->d.fd, s->filename, perm, shared);
}

static void file_abort_perm(StrataNode *node)
{
    FileState *s = node->opaque;

    file_lock_abort_perm(&s->lock, s->d.fd, s->filename);
}

/* ---- reads and writes ----------------------------------------------------------- */

/*
 * Where to resume after a short transfer that ended at @next (relative
 * to @offset): under O_DIRECT the remainder must start on an aligned
 * offset and its first element on an aligned address, so step back to
 * the nearest point where both hold.  The bytes in between are simply
 * transferred again.  Returns a value <= @next, possibly <= @done.
 */
static int64_t file_resume_point(const FileDesc *d, const IOVector *qiov,
                                 int64_t offset, int64_t next)
{
    const FileAlign *a = &d->align;

    if (!d->direct) {
        return next;
    }
    while (next > 0) {
        int64_t pos = 0;

        next = ROUND_DOWN(offset + next, (int64_t)a->request) - offset;
        if (next <= 0) {
            return 0;
        }
        /* The element holding byte @next, and how far into it that is. */
        for (int i = 0; i < qiov->niov; i++) {
            int64_t len = (int64_t)qiov->iov[i].iov_len;
            if (next < pos + len) {
                uintptr_t addr = (uintptr_t)qiov->iov[i].iov_base +
                                 (uintptr_t)(next - pos);
                int64_t slack = (int64_t)(addr & (a->mem - 1));
                int64_t len_rest = pos + len - next;
                if (!slack && IS_ALIGNED(len_rest, (int64_t)a->iov_len)) {
                    return next;
                }
                next -= MAX(slack, 1);
                break;
            }
            pos += len;
        }
        if (pos >= (int64_t)qiov->size) {
            return next;
        }
    }
    return 0;
}

typedef struct FileBufferedJob {
    int fd;
    bool write;
    int rwf;
    int64_t offset;
    const struct iovec *iov;
    int niov;
} FileBufferedJob;

static int file_buffered_rw_fn(void *opaque)
{
    FileBufferedJob *j = opaque;
    ssize_t n;

    if (j->write) {
        n = pwritev2(j->fd, j->iov, j->niov, j->offset, j->rwf);
    } else {
        n = preadv2(j->fd, j->iov, j->niov, j->offset, 0);
    }
    return n < 0 ? -errno : (int)n;
}

/* One transfer through the buffered fallback description. */
static int file_co_buffered_rw(StrataNode *node, FileState *s, bool write,
                               int64_t offset, const struct iovec *iov,
                               int niov, int eflags)
{
    FileBufferedJob j = {
        .write = write,
        .rwf = (eflags & AIO_FUA) ? RWF_DSYNC : 0,
        .offset = offset,
        .iov = iov,
        .niov = niov,
    };

    j.fd = __atomic_load_n(&s->fd_buffered, __ATOMIC_ACQUIRE);
    if (j.fd < 0) {
        /* Two queues may get here at once: one descriptor wins. */
        int expected = -1;
        int fd = file_reopen_fd(s->d.fd, s->d.writable ? O_RDWR : O_RDONLY);
        if (fd < 0) {
            return fd;
        }
        if (!__atomic_compare_exchange_n(&s->fd_buffered, &expected, fd, false,
                                         __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            close(fd);
            fd = expected;
        }
        j.fd = fd;
    }
    return block_co_run_in_pool(node, file_buffered_rw_fn, &j);
}

/*
 * One submission to the engine.  A single buffer wholly inside a piece of
 * registered guest memory goes as an io_uring fixed-buffer read or write
 * (no vectored form exists); everything else, and everything on engines
 * without fixed buffers, takes the normal vectored path.
 */
static int file_co_submit(StrataNode *node, FileState *s, bool write,
                          int64_t offset, const struct iovec *iov, int niov,
                          int eflags)
{
    FileDesc *d = &s->d;
    StrataQueue *q = queue_current();
    void *engine = d->engine;

    if (q->index != 0) {
        /* Another queue's thread: its own ring or io_context (created on
         * its first request), no cross-thread step. */
        engine = q->engine[d->ops->id];
        if (G_UNLIKELY(!engine)) {
            engine = aio_engine_queue_state(d->ops, q, NULL);
            if (!engine) {
                return -ENOMEM;
            }
            memregion_attach_engine(node->ctx, d->ops, engine, q->index);
        }
    }
    if (niov == 1 && memregion_any(node->ctx) && d->ops->co_preadv_fixed) {
        /* Each queue's ring has its own fixed buffers: the regions are
         * registered with it in its thread (block/memregion.c). */
        int slot = memregion_lookup(node->ctx, d->ops->id, q->index,
                                    iov[0].iov_base, iov[0].iov_len);
        int ret;

        if (G_UNLIKELY(slot == MEMREGION_NOT_OFFERED)) {
            /* A region registered since this queue's engine last looked. */
            memregion_attach_engine(node->ctx, d->ops, engine, q->index);
            slot = memregion_lookup(node->ctx, d->ops->id, q->index,
                                    iov[0].iov_base, iov[0].iov_len);
        }
        if (slot >= 0) {
            if (write) {
                __atomic_fetch_add(&s->fixed_writes, 1, __ATOMIC_RELAXED);
                ret = d->ops->co_pwritev_fixed(engine, d->fd, offset,
                                               iov[0].iov_base,
                                               iov[0].iov_len, slot, eflags);
            } else {
                __atomic_fetch_add(&s->fixed_reads, 1, __ATOMIC_RELAXED);
                ret = d->ops->co_preadv_fixed(engine, d->fd, offset,
                                              iov[0].iov_base, iov[0].iov_len,
                                              slot, eflags);
            }
            /* EFAULT: the slot no longer covers the buffer, because the
             * region was unregistered while the request waited in the
             * ring.  The normal path maps the memory itself. */
            if (ret != -EFAULT) {
                return ret;
            }
            __atomic_fetch_add(&s->fixed_fallbacks, 1, __ATOMIC_RELAXED);
        } else if (slot == MEMREGION_UNREGISTERED) {
            __atomic_fetch_add(&s->fixed_fallbacks, 1, __ATOMIC_RELAXED);
        }
    }
    if (write) {
        return d->ops->co_pwritev(engine, d->fd, offset, iov, niov, eflags);
    }
    return d->ops->co_preadv(engine, d->fd, offset, iov, niov, eflags);
}

/*
 * The short-transfer loop every engine shares: resubmit the remainder at
 * the right offset, zero-fill a read that reaches the end of the file,
 * retry EINTR and EAGAIN, and redo a request the kernel rejected with
 * EINVAL under O_DIRECT through the buffered description.
 */
static int file_co_rw(StrataNode *node, bool write, int64_t offset,
                      int64_t bytes, const IOVector *qiov, int flags)
{
    FileState *s = node->opaque;
    FileDesc *d = &s->d;
    int eflags = ((write && (flags & REQ_FUA) && d->fua) ? AIO_FUA : 0) |
                 (d->no_nowait ? AIO_NO_NOWAIT : 0);
    const struct iovec *iov = qiov->iov;
    int niov = qiov->niov;
    bool buffered = false;
    int64_t done = 0;
    int again = 0, stalls = 0;
    IOVector rest;
    int ret = 0;

    iov_init(&rest, MAX(qiov->niov, 1));
    while (done < bytes) {
        int64_t n, next;

        if (buffered) {
            n = file_co_buffered_rw(node, s, write, offset + done, iov, niov,
                                    eflags);
        } else {
            n = file_co_submit(node, s, write, offset + done, iov, niov,
                               eflags);
        }

        if (n == -EINTR) {
            continue;
        }
        if (n == -EAGAIN) {
            if (++again > FILE_MAX_EAGAIN) {
                ret = -EAGAIN;
                break;
            }
            /* The engine is out of resources: let others complete. */
            co_sleep_ns(MIN((int64_t)again * 10000, 1000000));
            continue;
        }
        if (n == -EINVAL && d->direct && !buffered) {
            /* The probe got the alignment wrong.  The request fits what we
             * announced, so it is the kernel that is stricter: do it
             * through the page cache rather than fail the guest. */
            __atomic_fetch_add(&s->einval_fallbacks, 1, __ATOMIC_RELAXED);
            buffered = true;
            continue;
        }
        if (n < 0) {
            ret = (int)n;
            break;
        }
        if (n == 0) {
            if (!write) {
                /* End of file: what lies beyond reads as zeroes. */
                iov_memset(qiov, (size_t)done, 0, (size_t)(bytes - done));
                break;
            }
            /* A write that makes no progress: the device is full. */
            ret = -ENOSPC;
            break;
        }
        next = done + MIN(n, bytes - done);
        if (next == bytes) {
            break;
        }

        __atomic_fetch_add(&s->short_resubmits, 1, __ATOMIC_RELAXED);
        if (!buffered && d->direct) {
            int64_t len = file_fd_length(d->fd, s->is_bdev);
            if (!write && len >= 0 && offset + next >= len) {
                /* An O_DIRECT read that stopped at an unaligned end of
                 * file: the rest is past the end. */
                iov_memset(qiov, (size_t)next, 0, (size_t)(bytes - next));
                break;
            }
            /* Never resubmit an unaligned remainder under O_DIRECT. */
            next = file_resume_point(d, qiov, offset, next);
        }
        if (next <= done) {
            if (++stalls > 3) {
                ret = -EIO;
                break;
            }
            continue;
        }
        stalls = 0;
        done = next;
        ret = iov_slice(&rest, qiov, (size_t)done, (size_t)(bytes - done));
        if (ret < 0) {
            break;
        }
        iov = rest.iov;
        niov = rest.niov;
    }
    iov_cleanup(&rest);
    return ret;
}

static int file_co_preadv(StrataNode *node, int64_t offset, int64_t bytes,
                          const IOVector *qiov, int flags)
{
    return file_co_rw(node, false, offset, bytes, qiov, flags);
}

static int file_co_pwritev(StrataNode *node, int64_t offset, int64_t bytes,
                           const IOVector *qiov, int flags)
{
    return file_co_rw(node, true, offset, bytes, qiov, flags);
}

/* ---- flush, discard, zeroes: blocking calls in the thread pool ------------------- */

typedef enum FileJobOp {
    FILE_JOB_FLUSH,
    FILE_JOB_FALLOCATE,
    FILE_JOB_IOCTL_RANGE,
} FileJobOp;

typedef struct FileJob {
    FileJobOp op;
    int fd;
    int mode;               /* fallocate mode */
    unsigned long request;  /* ioctl */
    int64_t offset, len;
    bool sync;              /* fdatasync after success (FUA) */
} FileJob;

static int file_job_fn(void *opaque)
{
    FileJob *j = opaque;
    int ret = 0;

    switch (j->op) {
    case FILE_JOB_FLUSH:
        ret = fdatasync(j->fd);
        break;
    case FILE_JOB_FALLOCATE:
        do {
            ret = fallocate(j->fd, j->mode, j->offset, j->len);
        } while (ret < 0 && errno == EINTR);
        break;
    case FILE_JOB_IOCTL_RANGE: {
        uint64_t range[2] = { (uint64_t)j->offset, (uint64_t)j->len };
        ret = ioctl(j->fd, j->request, range);
        break;
    }
    }
    if (ret < 0) {
        return -errno;
    }
    if (j->sync && fdatasync(j->fd) < 0) {
        return -errno;
    }
    return 0;
}

static int file_co_job(StrataNode *node, FileJob *j)
{
    return block_co_run_in_pool(node, file_job_fn, j);
}

static bool file_is_unsupported(int ret)
{
    return ret == -EOPNOTSUPP || ret == -ENOTTY || ret == -ENOSYS;
}

static int file_co_flush(StrataNode *node)
{
    FileState *s = node->opaque;
    FileJob j = { .op = FILE_JOB_FLUSH, .fd = s->d.fd };

    return file_co_job(node, &j);
}

static int file_co_pdiscard(StrataNode *node, int64_t offset, int64_t bytes)
{
    FileState *s = node->opaque;
    FileJob j = { .fd = s->d.fd, .offset = offset, .len = bytes };
    int ret;

    if (__atomic_load_n(&s->no_discard, __ATOMIC_RELAXED) || bytes == 0) {
        return __atomic_load_n(&s->no_discard, __ATOMIC_RELAXED) ? -ENOTSUP : 0;
    }
    if (s->is_bdev) {
        j.op = FILE_JOB_IOCTL_RANGE;
        j.request = BLKDISCARD;
    } else {
        j.op = FILE_JOB_FALLOCATE;
        j.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    }
    ret = file_co_job(node, &j);
    if (file_is_unsupported(ret)) {
        __atomic_store_n(&s->no_discard, true, __ATOMIC_RELAXED);
        return -ENOTSUP;
    }
    return ret;
}

static int file_co_zeroes_bdev(StrataNode *node, FileState *s, int64_t offset,
                               int64_t bytes, int flags)
{
    FileJob j = { .fd = s->d.fd, .offset = offset, .len = bytes,
                  .sync = flags & REQ_FUA };
    int ret;

    if (!IS_ALIGNED(offset | bytes, (int64_t)MAX(s->lbs, 512u))) {
        return -ENOTSUP;
    }
    if ((flags & REQ_MAY_UNMAP) && !__atomic_load_n(&s->no_punch_hole, __ATOMIC_RELAXED)) {
        /* On a block device a punched hole reads back as zeroes, or the
         * call fails: the kernel never settles for a plain discard. */
        j.op = FILE_JOB_FALLOCATE;
        j.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
        ret = file_co_job(node, &j);
        if (!file_is_unsupported(ret)) {
            return ret;
        }
        __atomic_store_n(&s->no_punch_hole, true, __ATOMIC_RELAXED);
    }
    if (__atomic_load_n(&s->no_zeroout, __ATOMIC_RELAXED)) {
        return -ENOTSUP;
    }
    j.op = FILE_JOB_IOCTL_RANGE;
    j.request = BLKZEROOUT;
    ret = file_co_job(node, &j);
    if (file_is_unsupported(ret)) {
        __atomic_store_n(&s->no_zeroout, true, __ATOMIC_RELAXED);
        return -ENOTSUP;
    }
    return ret;
}

static int file_co_pwrite_zeroes(StrataNode *node, int64_t offset,
                                 int64_t bytes, int flags)
{
    FileState *s = node->opaque;
    FileJob j = { .op = FILE_JOB_FALLOCATE, .fd = s->d.fd, .offset = offset,
                  .len = bytes, .sync = flags & REQ_FUA };
    int ret;

    if (bytes == 0) {
        return 0;
    }
    if (s->is_bdev) {
        return file_co_zeroes_bdev(node, s, offset, bytes, flags);
    }
    if ((flags & REQ_MAY_UNMAP) && !__atomic_load_n(&s->no_punch_hole, __ATOMIC_RELAXED)) {
        j.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
        ret = file_co_job(node, &j);
        if (!file_is_unsupported(ret)) {
            return ret;
        }
        __atomic_store_n(&s->no_punch_hole, true, __ATOMIC_RELAXED);
    }
    if (!__atomic_load_n(&s->no_zero_range, __ATOMIC_RELAXED)) {
        j.mode = FALLOC_FL_ZERO_RANGE;
        ret = file_co_job(node, &j);
        if (!file_is_unsupported(ret)) {
            return ret;
        }
        __atomic_store_n(&s->no_zero_range, true, __ATOMIC_RELAXED);
    }
    if (!__atomic_load_n(&s->no_punch_hole, __ATOMIC_RELAXED)) {
        /* tmpfs and others without ZERO_RANGE: punch, then allocate the
         * range again so that zeroes without unmap stay allocated.  A
         * failure to reallocate leaves correct zeroes, only sparse. */
        j.mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
        j.sync = false;
        ret = file_co_job(node, &j);
        if (ret == 0) {
            j.mode = FALLOC_FL_KEEP_SIZE;
            file_co_job(node, &j);
            if (flags & REQ_FUA) {
                j.op = FILE_JOB_FLUSH;
                ret = file_co_job(node, &j);
            }
            return ret;
        }
        if (!file_is_unsupported(ret)) {
            return ret;
        }
        __atomic_store_n(&s->no_punch_hole, true, __ATOMIC_RELAXED);
    }
    return -ENOTSUP;
}

/* ---- block status, length, truncate ---------------------------------------------- */

static int file_co_block_status(StrataNode *node, int64_t offset,
                                int64_t bytes, int64_t *pnum)
{
    FileState *s = node->opaque;
    off_t data, hole;

    *pnum = bytes;
    if (s->is_bdev) {
        return STRATA_BLOCK_DATA;
    }
    /* lseek is cheap and does not wait for I/O on local filesystems, so
     * it runs in the loop thread like QEMU's. */
    data = lseek(s->d.fd, offset, SEEK_DATA);
    if (data < 0) {
        if (errno == ENXIO) {
            /* Nothing but holes up to the end of the file. */
            return STRATA_BLOCK_ZERO;
        }
        return STRATA_BLOCK_DATA;       /* SEEK_DATA unsupported */
    }
    if (data > offset) {
        *pnum = MIN((int64_t)data - offset, bytes);
        return STRATA_BLOCK_ZERO;
    }
    hole = lseek(s->d.fd, offset, SEEK_HOLE);
    if (hole > offset) {
        *pnum = MIN((int64_t)hole - offset, bytes);
    }
    return STRATA_BLOCK_DATA;
}

static int64_t file_get_length(StrataNode *node)
{
    FileState *s = node->opaque;

    return file_fd_length(s->d.fd, s->is_bdev);
}

typedef struct FileTruncateJob {
    int fd;
    int64_t size;
    PreallocMode prealloc;
    const char *what;       /* static: the step that failed */
} FileTruncateJob;

/* Write zeroes over [from, to) through a buffered description of @fd,
 * so that an unaligned old end works under O_DIRECT too. */
static int file_write_zeroes_buffered(int fd, int64_t from, int64_t to)
{
    const size_t chunk = 1 << 20;
    g_autofree uint8_t *zeroes = g_malloc0(chunk);
    int wfd = file_reopen_fd(fd, O_WRONLY);
    int ret = 0;

    if (wfd < 0) {
        return wfd;
    }
    while (from < to) {
        ssize_t n = pwrite(wfd, zeroes, (size_t)MIN((int64_t)chunk, to - from),
                           from);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            ret = n < 0 ? -errno : -ENOSPC;
            break;
        }
        from += n;
    }
    if (ret == 0 && fdatasync(wfd) < 0) {
        ret = -errno;
    }
    close(wfd);
    return ret;
}

static int file_truncate_fn(void *opaque)
{
    FileTruncateJob *j = opaque;
    struct stat st;
    int64_t old;

    if (fstat(j->fd, &st) < 0) {
        j->what = "fstat";
        return -errno;
    }
    old = st.st_size;
    if (j->size < old && j->prealloc != PREALLOC_OFF) {
        j->what = "preallocation cannot shrink a file";
        return -ENOTSUP;
    }
    if (j->size > old && j->prealloc == PREALLOC_FALLOC) {
        /* Mode 0 allocates and extends the size in one call. */
        if (fallocate(j->fd, 0, old, j->size - old) < 0) {
            j->what = "fallocate";
            return -errno;
        }
        return 0;
    }
    if (ftruncate(j->fd, j->size) < 0) {
        j->what = "ftruncate";
        return -errno;
    }
    if (j->size > old && j->prealloc == PREALLOC_FULL) {
        int ret = file_write_zeroes_buffered(j->fd, old, j->size);
        if (ret < 0) {
            j->what = "writing zeroes";
            /* Do not leave a sparse tail behind a failed full prealloc. */
            if (ftruncate(j->fd, old) < 0) {
                /* The size is wrong but the error says so already. */
            }
            return ret;
        }
    }
    return 0;
}

static int file_co_truncate(StrataNode *node, int64_t size,
                            PreallocMode prealloc, StrataError **errp)
{
    FileState *s = node->opaque;
    FileTruncateJob j = { .fd = s->d.fd, .size = size, .prealloc = prealloc };
    int64_t len;
    int ret;

    if (s->is_bdev) {
        len = file_fd_length(s->d.fd, true);
        if (len >= 0 && size > len) {
            error_set(errp, STRATA_ERROR_GENERIC, ENOTSUP,
                      "Cannot grow device '%s' (%" PRId64 " bytes) to %"
                      PRId64 " bytes", s->filename, len, size);
            return -ENOTSUP;
        }
        /* Shrinking a device only hides its end from us, as QEMU does. */
        return len < 0 ? (int)len : 0;
    }
    ret = block_co_run_in_pool(node, file_truncate_fn, &j);
    node->total_bytes = file_fd_length(s->d.fd, false);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not resize '%s' to %" PRId64
                         " bytes (%s)", s->filename, size,
                         j.what ? j.what : "?");
        return ret;
    }
    return 0;
}

/* ---- open, close, limits ------------------------------------------------------------ */

/*
 * Does the kernel refuse non-blocking I/O on @fd (RWF_NOWAIT: EOPNOTSUPP
 * for a file opened without FMODE_NOWAIT, as O_DIRECT on tmpfs)?  The
 * flag is checked before anything is read; a regular file that takes it
 * may read one byte here (or fail on O_DIRECT alignment), which is
 * harmless.  Only regular files are asked: block devices take
 * RWF_NOWAIT, and a byte read from a character device may be one its
 * user wanted.
 */
static bool file_probe_no_nowait(int fd)
{
    char c;
    struct iovec iov = { .iov_base = &c, .iov_len = 1 };
    struct stat st;

    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        return false;
    }
    return preadv2(fd, &iov, 1, 0, RWF_NOWAIT) < 0 && errno == EOPNOTSUPP;
}

/*
 * Open @filename (or reopen @s's description when @filename is NULL)
 * with the given mode into @d and probe it.  Errors name the file.
 */
static bool file_desc_open(FileState *s, const char *filename, bool writable,
                           bool direct, FileDesc *d, StrataError **errp)
{
    int flags = (writable ? O_RDWR : O_RDONLY) | (direct ? O_DIRECT : 0);
    int64_t len;

    *d = (FileDesc) { .fd = -1, .direct = direct, .writable = writable };
    if (filename) {
        d->fd = open(filename, flags | O_CLOEXEC);
        if (d->fd < 0) {
            d->fd = -errno;
        }
    } else {
        d->fd = file_reopen_fd(s->d.fd, flags);
    }
    if (d->fd < 0) {
        int err = -d->fd;
        error_set(errp, err == ENOENT ? STRATA_ERROR_NOT_FOUND
                                      : STRATA_ERROR_GENERIC, err,
                  "Could not open '%s': %s%s", s->filename, g_strerror(err),
                  err == EINVAL && direct ? " (does the filesystem support "
                  "cache.direct=on?)" : "");
        d->fd = -1;
        return false;
    }
    len = file_fd_length(d->fd, s->is_bdev);
    file_probe_alignment(d->fd, direct, s->is_bdev, len < 0 ? 0 : len,
                         s->lbs, &d->align);
    d->no_nowait = file_probe_no_nowait(d->fd);
    return true;
}

static void file_desc_close(FileDesc *d)
{
    if (d->fd >= 0) {
        close(d->fd);
        d->fd = -1;
    }
}

/*
 * The open of the node's file description, read-write unless read-only.
 * With auto-read-only, a refused read-write open (permissions, a
 * read-only mount, an immutable file) falls back to read-only and the node
 * becomes read-only, as in QEMU.
 */
static bool file_desc_open_auto_ro(StrataNode *node, FileState *s,
                                   StrataError **errp)
{
    g_autoptr(StrataError) rw_err = NULL;
    int err;

    if (file_desc_open(s, s->filename, !node->read_only, node->cache_direct,
                       &s->d, &rw_err)) {
        return true;
    }
    err = error_get_errno(rw_err);
    if (node->read_only || !node->auto_read_only ||
        (err != EACCES && err != EPERM && err != EROFS)) {
        error_propagate(errp, g_steal_pointer(&rw_err));
        return false;
    }
    node->read_only = true;
    return file_desc_open(s, s->filename, false, node->cache_direct, &s->d,
                          errp);
}

/*
 * What kind of file @filename is, before the real open, with QEMU's rule
 * and words: the file driver takes regular files, host_device and
 * host_cdrom take block (or character) devices.  A directory opened
 * read-write fails as open(2) would fail it, with EISDIR.
 */
static bool file_stat_kind(StrataNode *node, FileState *s, StrataError **errp)
{
    bool device = node->drv != &bdrv_file;
    struct stat st;

    if (stat(s->filename, &st) < 0) {
        int err = errno;
        error_set(errp, err == ENOENT ? STRATA_ERROR_NOT_FOUND
                                      : STRATA_ERROR_GENERIC, err,
                  "Could not open '%s': %s", s->filename, g_strerror(err));
        return false;
    }
    if (S_ISDIR(st.st_mode) && !node->read_only) {
        error_set(errp, STRATA_ERROR_GENERIC, EISDIR, "Could not open '%s': %s",
                  s->filename, g_strerror(EISDIR));
        return false;
    }
    if (!device && !S_ISREG(st.st_mode)) {
        error_set(errp, STRATA_ERROR_GENERIC, EINVAL,
                  "'%s' driver requires '%s' to be a regular file",
                  node->drv->name, s->filename);
        return false;
    }
    if (device && !S_ISBLK(st.st_mode) && !S_ISCHR(st.st_mode)) {
        error_set(errp, STRATA_ERROR_GENERIC, EINVAL,
                  "'%s' driver requires '%s' to be either a character or "
                  "block device", node->drv->name, s->filename);
        return false;
    }
    s->is_bdev = S_ISBLK(st.st_mode);
    return true;
}

static bool file_open(StrataNode *node, OptNode *opts, StrataError **errp)
{
    FileState *s = node->opaque;
    const char *filename;
    int aio, locking, bounce;
    uint64_t threshold;
    bool drop_cache;            /* QEMU's, for migration: no effect here */
    long iov_max = sysconf(_SC_IOV_MAX);
    struct statfs sf;
    bool ofd = false;
    int64_t len;

    s->d.fd = -1;
    s->fd_buffered = -1;
    if (!opts_require_str(opts, "filename", &filename, errp) ||
        !opts_get_enum(opts, "aio", file_aio_names, FILE_AIO_AUTO, &aio,
                       errp) ||
        !opts_get_enum(opts, "locking", file_locking_names, FILE_LOCK_AUTO,
                       &locking, errp) ||
        !opts_get_enum(opts, "bounce", file_bounce_names, 0, &bounce, errp) ||
        !file_get_bounce_threshold(opts, &s->bounce_auto, &threshold, errp) ||
        !opts_get_bool(opts, "drop-cache", true, &drop_cache, errp)) {
        return false;
    }
    if (threshold > (uint64_t)BLOCK_MAX_RW_BYTES) {
        g_autofree char *path = opts_key_path(opts, "bounce-threshold");
        error_set_option(errp, "%s: %" PRIu64 " is larger than the largest "
                         "request (%" PRId64 ")", path, threshold,
                         BLOCK_MAX_RW_BYTES);
        return false;
    }
    s->filename = g_strdup(filename);
    s->aio = aio;
    s->max_transfer = ROUND_DOWN(BLOCK_MAX_RW_BYTES, (int64_t)FILE_SAFE_ALIGN);
    s->max_iov = iov_max > 0 ? (int)MIN(iov_max, (long)INT_MAX) : 1024;
    node->bounce_always = bounce == 1;
    node->bounce_threshold = (int64_t)threshold;

    if (!file_stat_kind(node, s, errp)) {
        goto fail;
    }
    /* The native engine's refusal does not depend on the file: say so
     * before touching it. */
    if (aio == AIO_ENGINE_NATIVE && !node->cache_direct) {
        g_autofree char *path = opts_key_path(opts, "aio");
        error_set_option(errp, "%s: 'native' needs cache.direct=on "
                         "(io_submit blocks on buffered files)", path);
        goto fail;
    }
    if (s->is_bdev) {
        /* Sector size and queue limits first: the probe needs them. */
        int fd = open(s->filename, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            file_probe_bdev(fd, &s->lbs, &s->pbs, &s->max_transfer);
            close(fd);
        }
    }
    if (!file_desc_open_auto_ro(node, s, errp)) {
        goto fail;
    }
    s->fs_type = s->is_bdev ? 0 : (fstatfs(s->d.fd, &sf) == 0 ? (long)sf.f_type
                                                             : -1);
    if (!s->is_bdev) {
        file_probe_fs_block_sizes(s->d.fd, &s->lbs, &s->pbs);
    }
    if (!file_pick_engine(node, s, &s->d, opts, errp)) {
        goto fail;
    }
    if (s->bounce_auto) {
        node->bounce_threshold = file_auto_bounce_threshold(s->d.ops->id);
    }

    /* Locking: OFD locks or nothing (POSIX locks would be dropped by any
     * close() of the file anywhere in the process). */
    if (locking != FILE_LOCK_OFF) {
        ofd = file_lock_supported(s->d.fd);
        if (!ofd && locking == FILE_LOCK_ON) {
            g_autofree char *path = opts_key_path(opts, "locking");
            error_set(errp, STRATA_ERROR_INVALID_OPTION, ENOTSUP,
                      "%s: 'on' needs OFD locks, which '%s' does not support",
                      path, s->filename);
            goto fail;
        }
    }
    file_lock_init(&s->lock, ofd);

    len = file_fd_length(s->d.fd, s->is_bdev);
    if (len < 0) {
        error_setg_errno(errp, (int)-len, "Could not get the size of '%s'",
                         s->filename);
        goto fail;
    }
    node->total_bytes = len;
    node->supports_fua = s->d.fua;
    return true;

fail:
    file_desc_close(&s->d);
    g_free(s->filename);
    s->filename = NULL;
    return false;
}

static void file_close(StrataNode *node)
{
    FileState *s = node->opaque;

    /* Closing the description drops its OFD locks. */
    file_desc_close(&s->d);
    if (s->fd_buffered >= 0) {
        close(s->fd_buffered);
        s->fd_buffered = -1;
    }
    g_free(s->filename);
    s->filename = NULL;
}

static void file_refresh_limits(StrataNode *node, BlockLimits *bl)
{
    FileState *s = node->opaque;
    const FileAlign *a = &s->d.align;

    bl->request_alignment = a->request;
    bl->mem_alignment = a->mem;
    bl->iov_len_alignment = a->iov_len;
    bl->max_transfer = ROUND_DOWN(s->max_transfer, (int64_t)a->request);
    bl->max_iov = s->max_iov;
    bl->opt_mem_alignment = MAX(bl->opt_mem_alignment,
                                MAX(a->mem, (uint32_t)FILE_SAFE_ALIGN));
    bl->logical_block_size = is_power_of_2(s->lbs) ? s->lbs : 0;
    bl->physical_block_size = is_power_of_2(s->pbs) ? s->pbs : 0;
    if (s->is_bdev) {
        /* BLKDISCARD and BLKZEROOUT want whole logical blocks even when
         * the fd is buffered. */
        uint32_t lbs = MAX(s->lbs, 512u);
        bl->pdiscard_alignment = MAX(bl->pdiscard_alignment, lbs);
        bl->pwrite_zeroes_alignment = MAX(bl->pwrite_zeroes_alignment, lbs);
        if (s->pbs > lbs && is_power_of_2(s->pbs)) {
            bl->opt_transfer = MAX(bl->opt_transfer, (int64_t)s->pbs);
        }
    }
}

/* ---- reopen ---------------------------------------------------------------------------- */

/* A prepared description, swapped in at commit. */
typedef struct FileReopen {
    FileDesc d;
} FileReopen;

static bool file_reopen_prepare(ReopenState *rs, StrataError **errp)
{
    StrataNode *node = rs->node;
    FileState *s = node->opaque;
    g_autofree FileReopen *r = g_new0(FileReopen, 1);

    if (rs->read_only == node->read_only &&
        rs->cache_direct == node->cache_direct) {
        rs->opaque = NULL;
        return true;
    }
    if (!file_desc_open(s, NULL, !rs->read_only, rs->cache_direct, &r->d,
                        errp)) {
        return false;
    }
    /* The engine may change with O_DIRECT (auto) or refuse (native). */
    if (!file_pick_engine(node, s, &r->d, rs->options, errp)) {
        file_desc_close(&r->d);
        return false;
    }
    /* Hold the same bytes on the new description before the old one goes:
     * there is never a moment with no lock.  Shared locks of our own old
     * description do not conflict with these. */
    if (!file_lock_copy(&s->lock, r->d.fd, s->filename, errp)) {
        file_desc_close(&r->d);
        return false;
    }
    rs->request_alignment = r->d.align.request;
    rs->opaque = g_steal_pointer(&r);
    return true;
}

static void file_reopen_commit(ReopenState *rs)
{
    StrataNode *node = rs->node;
    FileState *s = node->opaque;
    FileReopen *r = rs->opaque;

    if (!r) {
        return;
    }
    file_desc_close(&s->d);
    if (s->fd_buffered >= 0) {
        close(s->fd_buffered);
        s->fd_buffered = -1;
    }
    s->d = r->d;
    node->supports_fua = s->d.fua;
    if (s->bounce_auto) {
        node->bounce_threshold = file_auto_bounce_threshold(s->d.ops->id);
    }
    g_free(r);
    rs->opaque = NULL;
}

static void file_reopen_abort(ReopenState *rs)
{
    FileReopen *r = rs->opaque;

    if (r) {
        file_desc_close(&r->d);
        g_free(r);
        rs->opaque = NULL;
    }
}

static void file_dump_info(StrataNode *node, GString *out)
{
    FileState *s = node->opaque;
    const FileAlign *a = &s->d.align;

    g_string_append_printf(out, "file: '%s' (%s), %s, engine %s (%s), "
                           "alignment request %" PRIu32 " / mem %" PRIu32
                           " / iov-len %" PRIu32 " (%s), max-transfer %"
                           PRId64 ", locking %s, fua %s\n",
                           s->filename, file_fs_name(s->fs_type),
                           s->d.direct ? "O_DIRECT" : "buffered",
                           s->d.ops->name, s->d.engine_why, a->request, a->mem,
                           a->iov_len, a->source, s->max_transfer,
                           s->lock.enabled ? "on" : "off",
                           s->d.fua ? "native" : "emulated");
    if (s->d.no_nowait) {
        g_string_append_printf(out, "file: no non-blocking I/O on this file "
                               "(RWF_NOWAIT refused)%s\n",
                               s->d.ops->id == AIO_ENGINE_IO_URING
                               ? ": io_uring hands requests to its workers "
                                 "at once (IOSQE_ASYNC) at low depth" : "");
    }
    if (s->lbs || s->pbs) {
        g_string_append_printf(out, "file: block size logical %" PRIu32
                               ", physical %" PRIu32 " (%s; 0: unknown)\n",
                               s->lbs, s->pbs,
                               s->is_bdev ? "BLKSSZGET, BLKPBSZGET"
                                          : "the filesystem's device");
    }
    if (s->einval_fallbacks || s->short_resubmits) {
        g_string_append_printf(out, "file: %" PRIu64 " EINVAL fallbacks, %"
                               PRIu64 " short transfers resumed\n",
                               s->einval_fallbacks, s->short_resubmits);
    }
    if (memregion_any(node->ctx) || s->fixed_reads || s->fixed_writes ||
        s->fixed_fallbacks) {
        MemRegionInfo mi;
        memregion_get_info(node->ctx, s->d.ops->id, &mi);
        g_string_append_printf(out, "file: guest memory: %d regions (%"
                               PRIu64 " bytes), %d of %d pieces fixed "
                               "buffers; %" PRIu64 " fixed reads, %" PRIu64
                               " fixed writes, %" PRIu64 " fixed_fallbacks\n",
                               mi.regions, mi.bytes, mi.pieces_registered,
                               mi.pieces, s->fixed_reads, s->fixed_writes,
                               s->fixed_fallbacks);
    }
}

/*
 * "file:PATH", "host_device:PATH", "host_cdrom:PATH": the prefix, when
 * there, is the driver's; the rest is the path, whatever it contains.
 */
static bool file_parse_filename(const char *filename, OptNode *opts,
                                StrataError **errp)
{
    const char *name = opts_scalar_str(opts_peek(opts, "driver"));
    const BlockDriver *drv = block_driver_find(name);
    size_t n = strlen(drv->protocol_name);

    if (!strncmp(filename, drv->protocol_name, n) && filename[n] == ':') {
        filename += n + 1;
    }
    if (!*filename) {
        /* QEMU's words for "", "file:" and "blkdebug::". */
        error_set_option(errp, "The '%s' block driver requires a file name",
                         drv->name);
        return false;
    }
    return opts_set_str(opts, "filename", filename, errp);
}

/*
 * One implementation, three tables, as QEMU has them: "file" for regular
 * files, "host_device" for block devices (what a plain filename naming a
 * device selects), and "host_cdrom", which Strata treats as host_device
 * (no tray or medium handling).  Only the open-time check of the file's
 * kind and the protocol prefix differ.
 */
/* QEMU lets a reopen change drop-cache (its migration setting) alone. */
static const char *const file_reopen_options[] = { "drop-cache", NULL };

#define FILE_DRIVER_CALLBACKS \
    .instance_size = sizeof(FileState), \
    .reopen_options = file_reopen_options, \
    .parse_filename = file_parse_filename, \
    .open = file_open, \
    .close = file_close, \
    .co_preadv = file_co_preadv, \
    .co_pwritev = file_co_pwritev, \
    .co_pwrite_zeroes = file_co_pwrite_zeroes, \
    .co_pdiscard = file_co_pdiscard, \
    .co_flush = file_co_flush, \
    .co_block_status = file_co_block_status, \
    .get_length = file_get_length, \
    .co_truncate = file_co_truncate, \
    .refresh_limits = file_refresh_limits, \
    .check_perm = file_check_perm, \
    .set_perm = file_set_perm, \
    .abort_perm = file_abort_perm, \
    .reopen_prepare = file_reopen_prepare, \
    .reopen_commit = file_reopen_commit, \
    .reopen_abort = file_reopen_abort, \
    .dump_info = file_dump_info

const BlockDriver bdrv_file = {
    .name = "file",
    .protocol_name = "file",
    FILE_DRIVER_CALLBACKS,
};

const BlockDriver bdrv_host_device = {
    .name = "host_device",
    .protocol_name = "host_device",
    FILE_DRIVER_CALLBACKS,
};

const BlockDriver bdrv_host_cdrom = {
    .name = "host_cdrom",
    .protocol_name = "host_cdrom",
    FILE_DRIVER_CALLBACKS,
};

/* ---- tools and tests (block/file-posix.h) ------------------------------------------------ */

bool file_create(const char *path, int64_t size, PreallocMode prealloc,
                 StrataError **errp)
{
    FileTruncateJob j = { .size = size, .prealloc = prealloc };
    bool ok = false;
    int fd, ret;

    if (size < 0 || size > BLOCK_MAX_OFFSET) {
        error_set_option(errp, "Invalid image size %" PRId64, size);
        return false;
    }
    /* Not O_TRUNC: an image someone else is using must survive. */
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        error_set(errp, err == ENOENT ? STRATA_ERROR_NOT_FOUND
                                      : STRATA_ERROR_GENERIC, err,
                  "Could not create '%s': %s", path, g_strerror(err));
        return false;
    }
    if (!file_lock_create_check(fd, path, errp)) {
        goto out;
    }
    if (ftruncate(fd, 0) < 0) {
        error_setg_errno(errp, errno, "Could not truncate '%s'", path);
        goto out;
    }
    j.fd = fd;
    ret = file_truncate_fn(&j);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Could not resize '%s' to %" PRId64
                         " bytes (%s)", path, size, j.what);
        goto out;
    }
    if (prealloc == PREALLOC_OFF && size > 0) {
        /* Real data at offset 0 gives a later O_DIRECT probe something to
         * read: holes accept any alignment. */
        static const uint8_t zeroes[FILE_SAFE_ALIGN];
        size_t n = (size_t)MIN(size, (int64_t)FILE_SAFE_ALIGN);
        if (pwrite(fd, zeroes, n, 0) != (ssize_t)n) {
            error_setg_errno(errp, errno ? errno : EIO,
                             "Could not write to '%s'", path);
            goto out;
        }
    }
    ok = true;
out:
    close(fd);
    return ok;
}

void file_get_info(StrataNode *node, FileInfo *out)
{
    FileState *s = file_state(node);

    *out = (FileInfo) {
        .is_bdev = s->is_bdev,
        .direct = s->d.direct,
        .locking = s->lock.enabled,
        .engine = s->d.ops->id,
        .engine_name = s->d.ops->name,
        .request_alignment = s->d.align.request,
        .mem_alignment = s->d.align.mem,
        .iov_len_alignment = s->d.align.iov_len,
        .align_source = s->d.align.source,
        .max_transfer = s->max_transfer,
        .einval_fallbacks = s->einval_fallbacks,
        .short_resubmits = s->short_resubmits,
        .fixed_reads = s->fixed_reads,
        .fixed_writes = s->fixed_writes,
        .fixed_fallbacks = s->fixed_fallbacks,
    };
}

void file_test_set_alignment(StrataNode *node, uint32_t request, uint32_t mem,
                             uint32_t iov_len)
{
    FileState *s = file_state(node);

    g_assert(is_power_of_2(request) && is_power_of_2(mem) &&
             is_power_of_2(iov_len));
    s->d.align = (FileAlign) { request, mem, iov_len, false, "test override" };
    node_refresh_limits(node);
}
