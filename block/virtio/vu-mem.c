/*
 * vhost-user memory table (SPDX-License-Identifier: MIT).  See vu-mem.h.
 */
#include "block/virtio/vu-mem.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <glib.h>

VuMemTable *vu_mem_table_new(StrataContext *ctx)
{
    VuMemTable *t = g_new0(VuMemTable, 1);
    t->refcnt = 1;
    t->ctx = ctx;
    return t;
}

void vu_mem_table_ref(VuMemTable *t)
{
    __atomic_add_fetch(&t->refcnt, 1, __ATOMIC_RELAXED);
}

void vu_mem_table_unref(VuMemTable *t)
{
    if (!t || __atomic_sub_fetch(&t->refcnt, 1, __ATOMIC_ACQ_REL) > 0) {
        return;
    }
    for (int i = 0; i < t->nregions; i++) {
        VuMemRegion *r = &t->regions[i];
        /* The kernel may hold the pages as fixed buffers: drop that
         * before the mapping goes. */
        if (r->registered) {
            strata_context_unregister_memory(t->ctx, r->host);
        }
        munmap(r->map_base, r->map_len);
    }
    g_free(t);
}

bool vu_fd_covers(int fd, uint64_t len)
{
    struct stat st;

    if (fstat(fd, &st) < 0) {
        return false;
    }
    return !S_ISREG(st.st_mode) || (uint64_t)st.st_size >= len;
}

/* [a, a + alen) and [b, b + blen) intersect (neither wraps). */
static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b,
                           uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

int vu_mem_table_add(VuMemTable *t, const VhostUserMemRegion *r, int fd,
                     const char **why)
{
    uint64_t end, map_len;

    if (t->nregions >= VHOST_USER_MEM_REGIONS) {
        *why = "too many memory regions";
        return -EINVAL;
    }
    if (r->memory_size == 0 ||
        __builtin_add_overflow(r->guest_phys_addr, r->memory_size, &end) ||
        __builtin_add_overflow(r->userspace_addr, r->memory_size, &end) ||
        __builtin_add_overflow(r->mmap_offset, r->memory_size, &map_len) ||
        map_len > SIZE_MAX / 2) {
        *why = "memory region empty or wrapping";
        return -EINVAL;
    }
    for (int i = 0; i < t->nregions; i++) {
        const VuMemRegion *o = &t->regions[i];
        if (ranges_overlap(o->gpa, o->size, r->guest_phys_addr,
                           r->memory_size) ||
            ranges_overlap(o->uva, o->size, r->userspace_addr,
                           r->memory_size)) {
            *why = "memory regions overlap";
            return -EINVAL;
        }
    }
    if (!vu_fd_covers(fd, map_len)) {
        *why = "memory region past the end of its file";
        return -EINVAL;
    }
    void *base = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED,
                      fd, 0);
    if (base == MAP_FAILED) {
        *why = "cannot map a memory region";
        return -errno;
    }
    VuMemRegion *m = &t->regions[t->nregions++];
    m->gpa = r->guest_phys_addr;
    m->size = r->memory_size;
    m->uva = r->userspace_addr;
    m->map_base = base;
    m->map_len = map_len;
    m->host = (uint8_t *)base + r->mmap_offset;
    if (t->ctx) {
        StrataError *err = NULL;
        m->registered = strata_context_register_memory(t->ctx, m->host,
                                                       m->size, &err);
        strata_error_free(err);
    }
    return 0;
}

/* The host address of [@addr, @addr + @len) inside one region, addresses
 * taken as front-end virtual (@uva) or guest-physical. */
static void *table_lookup(const VuMemTable *t, uint64_t addr, uint64_t len,
                          bool uva)
{
    uint64_t end;

    if (__builtin_add_overflow(addr, len, &end)) {
        return NULL;
    }
    for (int i = 0; i < t->nregions; i++) {
        const VuMemRegion *r = &t->regions[i];
        uint64_t start = uva ? r->uva : r->gpa;
        if (addr >= start && end <= start + r->size) {
            return r->host + (addr - start);
        }
    }
    return NULL;
}

void *vu_uva_to_va(const VuMemTable *t, uint64_t uva, uint64_t len)
{
    return table_lookup(t, uva, len, true);
}

void *vu_gpa_to_va(const VuMemTable *t, uint64_t gpa, uint64_t len)
{
    return table_lookup(t, gpa, len, false);
}

int vu_gpa_to_iov(const VuMemTable *t, uint64_t gpa, uint64_t len,
                  struct iovec *iov, int *niov, int max)
{
    uint64_t end;

    if (__builtin_add_overflow(gpa, len, &end)) {
        return -EFAULT;
    }
    while (gpa < end) {
        const VuMemRegion *hit = NULL;
        for (int i = 0; i < t->nregions; i++) {
            const VuMemRegion *r = &t->regions[i];
            if (gpa >= r->gpa && gpa - r->gpa < r->size) {
                hit = r;
                break;
            }
        }
        if (!hit) {
            return -EFAULT;
        }
        if (*niov >= max) {
            return -E2BIG;
        }
        uint64_t n = MIN(end - gpa, hit->size - (gpa - hit->gpa));
        iov[*niov].iov_base = hit->host + (gpa - hit->gpa);
        iov[*niov].iov_len = (size_t)n;
        (*niov)++;
        gpa += n;
    }
    return 0;
}
