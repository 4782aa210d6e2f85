/*
 * vhost-user memory table: the front end's guest RAM, mapped into this
 * process, and the one place guest addresses become pointers
 * SPDX-License-Identifier: MIT
 *
 * SET_MEM_TABLE sends up to VHOST_USER_MEM_REGIONS regions, each an fd
 * (memfd, hugetlbfs file) with its guest-physical address, size, the front
 * end's own virtual address (which vring addresses use) and the offset of
 * the region in the fd.  A table maps each region MAP_SHARED and, when
 * given a context, registers it with Strata's guest-memory API (io_uring
 * fixed buffers), unregistering before unmapping.
 *
 * A table is immutable once built and reference counted: every request
 * holds a reference on the table its buffers point into, so a new
 * SET_MEM_TABLE under load leaves the old mappings in place until the
 * last request that uses them has completed.
 *
 * Translation checks the whole range [addr, addr + len) against the
 * regions with overflow-safe arithmetic; a range that leaves the table
 * (or wraps) fails.  Nothing else in the back end turns a guest address
 * into a pointer.
 *
 * Threading: a table is used from the thread of the device's queues; the
 * reference count is atomic so that queues in other threads may share it.
 */
#ifndef STRATA_BLOCK_VIRTIO_VU_MEM_H
#define STRATA_BLOCK_VIRTIO_VU_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "block/virtio/vhost-user.h"
#include "strata/strata.h"

typedef struct VuMemRegion {
    uint64_t gpa;               /* guest-physical start */
    uint64_t size;
    uint64_t uva;               /* front end's virtual address */
    uint8_t *host;              /* where it is mapped here */
    void *map_base;             /* mmap() result (host - mmap_offset) */
    size_t map_len;
    bool registered;            /* with ctx's guest-memory API */
} VuMemRegion;

typedef struct VuMemTable {
    int refcnt;
    StrataContext *ctx;         /* for memory registration, or NULL */
    int nregions;
    VuMemRegion regions[VHOST_USER_MEM_REGIONS];
} VuMemTable;

/* An empty table (one reference); @ctx may be NULL (no registration). */
VuMemTable *vu_mem_table_new(StrataContext *ctx);
void vu_mem_table_ref(VuMemTable *t);
/* At zero: unregister every region, then unmap it. */
void vu_mem_table_unref(VuMemTable *t);

/* False when @fd is a file (a memfd, a shm or hugetlbfs file) shorter
 * than @len: a mapping past its end raises SIGBUS at the first access,
 * which a front end must not be able to cause. */
bool vu_fd_covers(int fd, uint64_t len);

/*
 * Map @r from @fd (borrowed: the caller closes it) and add it to @t.
 * -EINVAL with @why for an empty or wrapping region, one past the end of
 * its file (vu_fd_covers), one overlapping another in guest-physical or
 * front-end address space, or a full table; -errno of mmap.  A registration refused by the context is not an error
 * (the region is then simply not a fixed buffer).
 */
int vu_mem_table_add(VuMemTable *t, const VhostUserMemRegion *r, int fd,
                     const char **why);

/*
 * Pointer to the front-end virtual range [@uva, @uva + @len), which must
 * lie inside one region (vring addresses), or NULL.
 */
void *vu_uva_to_va(const VuMemTable *t, uint64_t uva, uint64_t len);

/*
 * Append the host iovecs of the guest-physical range [@gpa, @gpa + @len)
 * to @iov (at most @max elements in all; *@niov in/out).  The range may
 * span regions that are adjacent in guest-physical space.  0, -EFAULT when
 * any byte is outside the table or the range wraps, -E2BIG when @max
 * elements are not enough.  A zero @len appends nothing.
 */
int vu_gpa_to_iov(const VuMemTable *t, uint64_t gpa, uint64_t len,
                  struct iovec *iov, int *niov, int max);

/* Pointer to [@gpa, @gpa + @len) when it lies inside one region, or NULL
 * (descriptor tables, which must be contiguous here). */
void *vu_gpa_to_va(const VuMemTable *t, uint64_t gpa, uint64_t len);

#endif
