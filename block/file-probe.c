/*
 * file: alignment probing (block/file-probe.h)
 * SPDX-License-Identifier: MIT
 *
 * The probe order is: buffered → 1/1/1; block device → BLKSSZGET; a
 * filesystem reporting STATX_DIOALIGN → its numbers; otherwise trial
 * O_DIRECT reads at an offset that holds data.  Trial reads on a hole or
 * past the end of the file succeed whatever their alignment (ext4 maps
 * holes without looking at the buffer, tmpfs accepts everything), so a
 * probe without data, or one that accepts a single byte, proves nothing
 * and 4096 is assumed.  A vectored trial read then measures the element
 * length granularity wherever there is data to read.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/fs.h>

#include "block/block-int.h"
#include "block/file-probe.h"

/* Largest request alignment accepted from statx (reflinked or realtime
 * files may report a large allocation unit). */
#define FILE_MAX_REQUEST_ALIGN (1u << 20)

/* Not in every libc header (Linux 6.1 added STATX_DIOALIGN). */
#ifndef STATX_DIOALIGN
#define STATX_DIOALIGN 0x00002000U
#endif

/* ---- statx ------------------------------------------------------------------ */

/* Kernel layout of struct statx up to the direct I/O fields (glibc 2.36's
 * copy of the struct stops before them). */
typedef struct FileStatx {
    uint32_t mask, blksize;
    uint64_t attributes;
    uint32_t nlink, uid, gid;
    uint16_t mode, pad1;
    uint64_t ino, size, blocks, attributes_mask;
    uint8_t timestamps[64];
    uint32_t rdev_major, rdev_minor, dev_major, dev_minor;
    uint64_t mnt_id;
    uint32_t dio_mem_align, dio_offset_align;
    uint64_t spare[12];
} FileStatx;

G_STATIC_ASSERT(offsetof(FileStatx, dio_mem_align) == 0x98);
G_STATIC_ASSERT(sizeof(FileStatx) == 0x100);

/* STATX_DIOALIGN of @fd: false when the kernel or filesystem does not
 * report it (before 6.1, tmpfs, overlayfs on some kernels). */
static bool file_statx_dio(int fd, uint32_t *mem, uint32_t *offset)
{
    FileStatx st = { 0 };

    if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &st) < 0 ||
        !(st.mask & STATX_DIOALIGN) || !st.dio_offset_align) {
        return false;
    }
    *mem = st.dio_mem_align;
    *offset = st.dio_offset_align;
    return true;
}

/* ---- alignment probing ----------------------------------------------------- */

/* Offset of the first data in a regular file worth probing at, or -1 when
 * there is none (empty, all holes) or it is not at least 512-aligned. */
static int64_t file_probe_offset(int fd, int64_t size)
{
    off_t data = lseek(fd, 0, SEEK_DATA);

    if (data < 0 && errno == EINVAL && size > 0) {
        /* No SEEK_DATA here: offset 0 may be a hole, but it is the best
         * guess, and a lie shows up as a one-byte success below. */
        data = 0;
    }
    if (data < 0 || data >= size || !IS_ALIGNED((int64_t)data, 512)) {
        return -1;
    }
    return data;
}

/* Smallest element length L (power of two below @request) for which a
 * two-element read {L, request - L} at @off succeeds; @request if none
 * does.  Both elements start on page boundaries, so only the lengths are
 * tested. */
static uint32_t file_probe_iov_len(int fd, int64_t off, uint32_t request,
                                   uint8_t *buf)
{
    for (uint32_t len = 1; len < request; len <<= 1) {
        struct iovec iov[2] = {
            { buf, len },
            { buf + ROUND_UP((size_t)len, FILE_SAFE_ALIGN), request - len },
        };
        if (preadv(fd, iov, 2, off) >= 0) {
            return len;
        }
    }
    return request;
}

static void file_assume_align(FileAlign *a, const char *source)
{
    *a = (FileAlign) { FILE_SAFE_ALIGN, FILE_SAFE_ALIGN, FILE_SAFE_ALIGN,
                       true, source };
}

/* Trial reads at @off: request length first, then buffer address. */
static void file_probe_trial(int fd, int64_t off, uint8_t *buf, FileAlign *a)
{
    uint32_t request = 0, mem = 0;

    for (uint32_t k = 1; k <= FILE_SAFE_ALIGN; k <<= 1) {
        if (pread(fd, buf, k, off) >= 0) {
            request = k;
            break;
        }
    }
    if (request <= 1) {
        /* Nothing worked (not an alignment problem), or one byte did: a
         * filesystem that ignores O_DIRECT alignment, or a lie. */
        file_assume_align(a, request ? "assumed (trial reads accept 1 byte)"
                                     : "assumed (trial reads failed)");
        return;
    }
    for (uint32_t m = 1; m <= FILE_SAFE_ALIGN; m <<= 1) {
        if (pread(fd, buf + m, request, off) >= 0) {
            mem = m;
            break;
        }
    }
    *a = (FileAlign) { request, mem ? mem : FILE_SAFE_ALIGN, request, false,
                       "trial reads" };
}

/*
 * Fill @a for @fd, a file of @size bytes; for block devices @lbs is the
 * logical block size (0 if unknown).  Never fails: what it cannot
 * measure it assumes.
 */
void file_probe_alignment(int fd, bool direct, bool is_bdev, int64_t size,
                          uint32_t lbs, FileAlign *a)
{
    uint32_t sx_mem = 0, sx_off = 0;
    bool have_statx;
    int64_t off;
    uint8_t *buf = NULL;
    size_t buf_size;

    if (!direct) {
        *a = (FileAlign) { 1, 1, 1, false, "buffered" };
        return;
    }
    have_statx = file_statx_dio(fd, &sx_mem, &sx_off);

    /* 1. What the kernel tells: BLKSSZGET, STATX_DIOALIGN. */
    if (is_bdev) {
        if (lbs && is_power_of_2(lbs)) {
            *a = (FileAlign) { lbs, have_statx && sx_mem ? sx_mem : 512, lbs,
                               false, "BLKSSZGET" };
        } else {
            file_assume_align(a, "assumed (BLKSSZGET failed)");
        }
        off = size >= (int64_t)a->request ? 0 : -1;
    } else {
        off = file_probe_offset(fd, size);
        if (have_statx) {
            *a = (FileAlign) { sx_off, sx_mem ? sx_mem : sx_off, sx_off,
                               false, "statx" };
        } else if (off < 0) {
            file_assume_align(a, "assumed (no data to probe)");
        } else {
            *a = (FileAlign) { 0, 0, 0, true, NULL };   /* trial reads */
        }
    }
    if (a->request && (!is_power_of_2(a->request) ||
                       a->request > FILE_MAX_REQUEST_ALIGN)) {
        file_assume_align(a, "assumed (unusable report)");
    }
    if (a->request && (!is_power_of_2(a->mem) || a->mem > FILE_SAFE_ALIGN)) {
        /* The request path's pool buffers are page aligned. */
        a->mem = FILE_SAFE_ALIGN;
    }
    if (off < 0) {
        return;
    }

    /* 2. Trial reads where there is data. */
    buf_size = 2 * (size_t)MAX(a->request, FILE_SAFE_ALIGN) +
               2 * FILE_SAFE_ALIGN;
    if (posix_memalign((void **)&buf, FILE_SAFE_ALIGN, buf_size)) {
        if (!a->request) {
            file_assume_align(a, "assumed (no memory to probe)");
        }
        return;
    }
    if (!a->request) {
        file_probe_trial(fd, off, buf, a);
    }
    /* 3. Element length granularity: a vectored read. */
    if (!a->assumed && a->request > 1) {
        a->iov_len = file_probe_iov_len(fd, off, a->request, buf);
    }
    free(buf);
}

/* ---- block devices ---------------------------------------------------------- */

/* A number from the request queue of block device @dev in sysfs
 * (queue/@name); a partition keeps its queue one level up.  False when
 * there is none (no such device, sysfs not mounted, not a number). */
static bool file_sysfs_queue(dev_t dev, const char *name, unsigned long *out)
{
    char path[128];

    for (int i = 0; i < 2; i++) {
        FILE *f;
        bool ok;

        snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/%squeue/%s",
                 major(dev), minor(dev), i ? "../" : "", name);
        f = fopen(path, "re");
        if (!f) {
            continue;
        }
        ok = fscanf(f, "%lu", out) == 1;
        fclose(f);
        return ok;
    }
    return false;
}

/* Block device facts that do not depend on the open mode. */
void file_probe_bdev(int fd, uint32_t *lbs_out, uint32_t *pbs_out,
                     int64_t *max_transfer)
{
    int lbs = 0;
    unsigned int pbs = 0;
    unsigned long kb;
    struct stat st;

    if (ioctl(fd, BLKSSZGET, &lbs) == 0 && lbs > 0) {
        *lbs_out = (uint32_t)lbs;
    }
    if (ioctl(fd, BLKPBSZGET, &pbs) == 0) {
        *pbs_out = pbs;
    }
    if (fstat(fd, &st) == 0 &&
        file_sysfs_queue(st.st_rdev, "max_sectors_kb", &kb) && kb > 0) {
        *max_transfer = MIN((int64_t)kb * 1024, *max_transfer);
    }
}

/* A power of two that fits the request path's limits, else 0 (unknown). */
static uint32_t file_usable_block_size(unsigned long v)
{
    return v && v <= FILE_MAX_REQUEST_ALIGN && is_power_of_2(v) ? (uint32_t)v
                                                                : 0;
}

void file_probe_fs_block_sizes(int fd, uint32_t *lbs_out, uint32_t *pbs_out)
{
    struct stat st;
    unsigned long v;
    uint32_t sx_mem, sx_off;

    if (fstat(fd, &st) < 0) {
        return;
    }
    if (file_sysfs_queue(st.st_dev, "logical_block_size", &v)) {
        *lbs_out = file_usable_block_size(v);
    }
    if (file_sysfs_queue(st.st_dev, "physical_block_size", &v)) {
        *pbs_out = file_usable_block_size(v);
    }
    /* A filesystem that states its direct I/O unit (STATX_DIOALIGN) names
     * the logical size it addresses the device in, whatever device it
     * sits on (a network filesystem, a stacked one). */
    if (!*lbs_out && file_statx_dio(fd, &sx_mem, &sx_off)) {
        *lbs_out = file_usable_block_size(sx_off);
    }
}
