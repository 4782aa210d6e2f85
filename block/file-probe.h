/*
 * Alignment probing for the file driver (internal to block/file-posix.c
 * and block/file-probe.c)
 * SPDX-License-Identifier: MIT
 *
 * Alignment is probed once per file descriptor, at open and at reopen,
 * and kept as three separate numbers because the kernel checks three
 * different things under O_DIRECT:
 *
 *   request_alignment   offset and length of the whole request
 *   mem_alignment       address of every vector element
 *   iov_len_alignment   length of every vector element (Linux 6.1 wants a
 *                       multiple of the logical block size, newer kernels
 *                       only the DMA alignment)
 *
 * docs/file-driver.md ("Alignment probing") is the user's view.  All
 * functions are control path, blocking (they issue syscalls and trial
 * reads on the file), called at open and reopen; never in a coroutine.
 */
#ifndef STRATA_BLOCK_FILE_PROBE_H
#define STRATA_BLOCK_FILE_PROBE_H

#include <stdbool.h>
#include <stdint.h>

/* The most we ever assume or accept as an alignment: what every Linux
 * filesystem and block device supporting O_DIRECT is happy with. */
#define FILE_SAFE_ALIGN 4096u

typedef struct FileAlign {
    uint32_t request, mem, iov_len;
    bool assumed;                   /* a guess, not a measurement */
    const char *source;             /* static */
} FileAlign;

/*
 * Fill @a for @fd, a file of @size bytes opened with O_DIRECT if @direct;
 * for block devices (@is_bdev) @lbs is the logical block size (0 if
 * unknown).  Never fails: what it cannot measure it assumes (4096).
 */
void file_probe_alignment(int fd, bool direct, bool is_bdev, int64_t size,
                          uint32_t lbs, FileAlign *a);

/*
 * Block device facts that do not depend on the open mode, for the block
 * device @fd: the logical and physical block sizes (BLKSSZGET, BLKPBSZGET)
 * into *@lbs_out and *@pbs_out, each left alone when its ioctl fails, and
 * *@max_transfer lowered to the request queue's max_sectors_kb when sysfs
 * has it.
 */
void file_probe_bdev(int fd, uint32_t *lbs_out, uint32_t *pbs_out,
                     int64_t *max_transfer);

/*
 * The block sizes of the device a regular file @fd lives on: its request
 * queue's logical_block_size and physical_block_size in sysfs, found
 * through st_dev (partitions included); the logical size from
 * STATX_DIOALIGN when sysfs has no device (tmpfs, network and stacked
 * filesystems).  Each is left alone when nothing says it.
 */
void file_probe_fs_block_sizes(int fd, uint32_t *lbs_out, uint32_t *pbs_out);

#endif
