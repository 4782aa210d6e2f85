/*
 * Split virtqueue, device side (SPDX-License-Identifier: MIT).  See
 * virtqueue.h.
 *
 * Ordering (virtio 1.x, "Driver Requirements" / "Device Requirements" of
 * split virtqueues, and the memory barriers the Linux driver pairs with):
 *   - avail->idx is loaded with acquire before the ring entries and the
 *     descriptors it covers are read;
 *   - used elements are written before used->idx is stored with release;
 *   - with EVENT_IDX, avail_event is stored before avail->idx is read
 *     again (a full fence), so that a kick is never lost;
 *   - the interrupt decision reads used_event / avail->flags after the
 *     used->idx store (a full fence).
 */
#include "block/virtio/virtqueue.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <glib.h>

/* Descriptor fields are read once into a local copy: the guest may change
 * them concurrently, and a re-read could bypass a check. */
static inline VringDesc desc_read(const VringDesc *d)
{
    VringDesc c;
    c.addr = __atomic_load_n(&d->addr, __ATOMIC_RELAXED);
    c.len = __atomic_load_n(&d->len, __ATOMIC_RELAXED);
    c.flags = __atomic_load_n(&d->flags, __ATOMIC_RELAXED);
    c.next = __atomic_load_n(&d->next, __ATOMIC_RELAXED);
    return c;
}

uint64_t vq_inflight_queue_size(unsigned num)
{
    uint64_t n = sizeof(VuInflightQueue) + sizeof(VuInflightDesc) * num;
    return (n + 63) & ~63ull;
}

void vq_init(VirtQueue *vq, unsigned index)
{
    memset(vq, 0, sizeof(*vq));
    vq->index = index;
}

void vq_reset(VirtQueue *vq)
{
    unsigned index = vq->index;
    g_free(vq->resubmit);
    vq_init(vq, index);
}

int vq_map(VirtQueue *vq, const VuMemTable *mem, const char **why)
{
    if (!vq->num || !vq->addr_set) {
        *why = "ring size or addresses not set";
        return -EINVAL;
    }
    vq->desc = vu_uva_to_va(mem, vq->desc_uva, vring_desc_size(vq->num));
    vq->avail = vu_uva_to_va(mem, vq->avail_uva, vring_avail_size(vq->num));
    vq->used = vu_uva_to_va(mem, vq->used_uva, vring_used_size(vq->num));
    if (!vq->desc || !vq->avail || !vq->used) {
        vq->desc = NULL;
        vq->avail = NULL;
        vq->used = NULL;
        *why = "ring outside guest memory";
        return -EFAULT;
    }
    /* The spec's alignments (16, 2, 4) are what makes the atomic
     * accesses below single loads and stores. */
    if (((uintptr_t)vq->desc & 15) || ((uintptr_t)vq->avail & 1) ||
        ((uintptr_t)vq->used & 3)) {
        vq->desc = NULL;
        vq->avail = NULL;
        vq->used = NULL;
        *why = "ring misaligned";
        return -EFAULT;
    }
    return 0;
}

/* ---- inflight ------------------------------------------------------- */

static int cmp_counter(const void *a, const void *b, void *opaque)
{
    const VuInflightQueue *q = opaque;
    uint64_t ca = q->desc[*(const uint16_t *)a].counter;
    uint64_t cb = q->desc[*(const uint16_t *)b].counter;
    return ca < cb ? -1 : ca > cb;
}

unsigned vq_inflight_restore(VirtQueue *vq)
{
    VuInflightQueue *q = vq->inflight;
    uint16_t used = __atomic_load_n(&vq->used->idx, __ATOMIC_ACQUIRE);

    vq->used_idx = vq->published_idx = used;
    vq->signalled_valid = false;
    g_free(vq->resubmit);
    vq->resubmit = NULL;
    vq->resubmit_num = vq->resubmit_pos = 0;
    if (!q) {
        return 0;
    }
    if (q->version != 1 || q->desc_num != vq->num) {
        /* A fresh region (all zero) or one of another queue size: start
         * clean. */
        memset(q->desc, 0, sizeof(VuInflightDesc) * vq->num);
        q->version = 1;
        q->desc_num = (uint16_t)vq->num;
        q->used_idx = used;
        vq->inflight_counter = 0;
        return 0;
    }
    /* Elements published but not yet cleared when the previous back end
     * died: their requests completed. */
    uint16_t pending = (uint16_t)(used - q->used_idx);
    if (pending <= vq->num) {
        for (uint16_t i = 0; i < pending; i++) {
            uint32_t id = vq->used->ring[(uint16_t)(q->used_idx + i) %
                                         vq->num].id;
            if (id < vq->num) {
                q->desc[id].inflight = 0;
            }
        }
    }
    q->used_idx = used;

    uint64_t max_counter = 0;
    vq->resubmit = g_new(uint16_t, vq->num);
    for (unsigned i = 0; i < vq->num; i++) {
        if (q->desc[i].inflight == 1) {
            vq->resubmit[vq->resubmit_num++] = (uint16_t)i;
            max_counter = MAX(max_counter, q->desc[i].counter);
        } else {
            q->desc[i].inflight = 0;
        }
    }
    g_qsort_with_data(vq->resubmit, (gint)vq->resubmit_num,
                      sizeof(uint16_t), cmp_counter, q);
    vq->inflight_counter = max_counter + 1;
    vq->last_avail_idx = (uint16_t)(used + vq->resubmit_num);
    vq->avail_ahead = 0;
    return vq->resubmit_num;
}

/* ---- fetching -------------------------------------------------------- */

typedef struct ChainWalk {
    const VuMemTable *mem;
    VqElem *elem;           /* NULL in the counting pass */
    int niov, cap;
    bool seen_write;
    bool one_pass;          /* filling without counting first */
    bool overflow;          /* ...and the element was too small */
} ChainWalk;

/* One buffer of the chain. */
static int walk_buffer(ChainWalk *w, const VringDesc *d, const char **why)
{
    bool write = d->flags & VRING_DESC_F_WRITE;

    if (write) {
        w->seen_write = true;
    } else if (w->seen_write && w->elem) {
        w->elem->bad_order = true;
    }
    if (!w->elem) {
        /* Counting: every byte must be guest memory. */
        struct iovec tmp[VHOST_USER_MEM_REGIONS];
        int n = 0;
        if (vu_gpa_to_iov(w->mem, d->addr, d->len, tmp, &n,
                          VHOST_USER_MEM_REGIONS) < 0) {
            *why = "descriptor buffer outside guest memory";
            return -EIO;
        }
        w->niov += n;
        return 0;
    }
    /* Filling: readable buffers go to the front, writable ones after;
     * a readable buffer after a writable one (bad_order) is kept in
     * chain order among the writable ones so that nothing is lost, and
     * the device refuses the request. */
    int n = w->niov;
    int r = vu_gpa_to_iov(w->mem, d->addr, d->len, w->elem->iov, &n, w->cap);
    if (r == -E2BIG && w->one_pass) {
        w->overflow = true;     /* count, grow, fill again */
        return r;
    }
    if (r < 0) {
        *why = w->one_pass ? "descriptor buffer outside guest memory"
                           : "descriptor buffer changed under the walk";
        return -EIO;
    }
    if (write || w->seen_write) {
        w->elem->in_num += n - w->niov;
    } else {
        w->elem->out_num += n - w->niov;
    }
    w->niov = n;
    return 0;
}

static int walk_indirect(ChainWalk *w, const VringDesc *d, const char **why)
{
    if (d->flags & VRING_DESC_F_NEXT) {
        /* The spec forbids NEXT with INDIRECT. */
        *why = "indirect descriptor with NEXT";
        return -EIO;
    }
    if (d->len == 0 || d->len % sizeof(VringDesc) ||
        d->len / sizeof(VringDesc) > VQ_MAX_CHAIN) {
        *why = "indirect table length invalid";
        return -EIO;
    }
    unsigned n = d->len / sizeof(VringDesc);
    const VringDesc *table = vu_gpa_to_va(w->mem, d->addr, d->len);
    if (!table || ((uintptr_t)table & 15)) {
        *why = "indirect table outside guest memory or misaligned";
        return -EIO;
    }
    unsigned i = 0;
    for (unsigned count = 0;; count++) {
        if (count >= n) {
            *why = "indirect chain loops";
            return -EIO;
        }
        VringDesc c = desc_read(&table[i]);
        if (c.flags & VRING_DESC_F_INDIRECT) {
            *why = "nested indirect table";
            return -EIO;
        }
        int r = walk_buffer(w, &c, why);
        if (r < 0) {
            return r;
        }
        if (!(c.flags & VRING_DESC_F_NEXT)) {
            return 0;
        }
        if (c.next >= n) {
            *why = "indirect next index out of range";
            return -EIO;
        }
        i = c.next;
    }
}

static int walk_chain(VirtQueue *vq, ChainWalk *w, uint16_t head,
                      const char **why)
{
    unsigned i = head;

    w->seen_write = false;
    w->niov = 0;
    for (unsigned count = 0;; count++) {
        if (count >= vq->num) {
            *why = "descriptor chain loops or is longer than the queue";
            return -EIO;
        }
        VringDesc c = desc_read(&vq->desc[i]);
        int r;
        if (c.flags & VRING_DESC_F_INDIRECT) {
            if (!vq->indirect) {
                *why = "indirect descriptor without INDIRECT_DESC";
                return -EIO;
            }
            if (count != 0) {
                /* An indirect descriptor is the chain's only one. */
                *why = "indirect descriptor inside a chain";
                return -EIO;
            }
            return walk_indirect(w, &c, why);
        }
        r = walk_buffer(w, &c, why);
        if (r < 0) {
            return r;
        }
        if (!(c.flags & VRING_DESC_F_NEXT)) {
            return 0;
        }
        if (c.next >= vq->num) {
            *why = "next index out of range";
            return -EIO;
        }
        i = c.next;
    }
}

static void elem_reset(VqElem *elem, uint16_t head)
{
    elem->head = head;
    elem->out_num = elem->in_num = 0;
    elem->bad_order = false;
}

/* An element that held the last chain is filled in one pass (the walk
 * validates every buffer as it goes, bounded by the element's room).
 * Otherwise, or when the chain turns out longer, two passes: count
 * (validating every buffer) and fill.  A guest that changes the chain
 * between them gets a consistent error, not an overrun: the fill pass is
 * bounded by what the count pass found. */
static int vq_read_chain(VirtQueue *vq, const VuMemTable *mem, uint16_t head,
                         VqElem **out, const char **why)
{
    VqElem *elem = *out;
    ChainWalk w;
    int r;

    if (elem) {
        elem_reset(elem, head);
        w = (ChainWalk){ .mem = mem, .elem = elem, .cap = elem->cap,
                         .one_pass = true };
        r = walk_chain(vq, &w, head, why);
        if (!w.overflow) {
            return r;
        }
    }
    w = (ChainWalk){ .mem = mem };
    r = walk_chain(vq, &w, head, why);
    if (r < 0) {
        return r;
    }
    int cap = MAX(w.niov, 1);
    if (!elem || elem->cap < cap) {
        g_free(elem);
        elem = g_malloc(sizeof(VqElem) + 2 * sizeof(struct iovec) * cap);
        elem->cap = cap;
        *out = elem;
    }
    elem_reset(elem, head);
    w = (ChainWalk){ .mem = mem, .elem = elem, .cap = w.niov };
    return walk_chain(vq, &w, head, why);
}

static void inflight_fetched(VirtQueue *vq, uint16_t head)
{
    if (vq->inflight) {
        vq->inflight->desc[head].counter = vq->inflight_counter++;
        __atomic_store_n(&vq->inflight->desc[head].inflight, 1,
                         __ATOMIC_RELEASE);
    }
}

int vq_pop(VirtQueue *vq, const VuMemTable *mem, VqElem **out,
           const char **why)
{
    uint16_t head;

    if (!vq->desc) {
        return 0;
    }
    if (vq->resubmit_pos < vq->resubmit_num) {
        head = vq->resubmit[vq->resubmit_pos++];
        int r = vq_read_chain(vq, mem, head, out, why);
        return r < 0 ? r : 1;
    }
    if (vq->avail_ahead == 0) {
        /* Read the index once per batch: the driver writes its cache
         * line with every request. */
        uint16_t avail_idx = __atomic_load_n(&vq->avail->idx,
                                             __ATOMIC_ACQUIRE);
        if (avail_idx == vq->last_avail_idx && vq->event_idx &&
            !vq->polling) {
            /* Ask for a kick at the next entry, then look again: an
             * entry made available before the store is seen here. */
            uint16_t *avail_event = (uint16_t *)&vq->used->ring[vq->num];
            __atomic_store_n(avail_event, vq->last_avail_idx,
                             __ATOMIC_RELAXED);
            atomic_thread_fence(memory_order_seq_cst);
            avail_idx = __atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE);
        }
        if (avail_idx == vq->last_avail_idx) {
            return 0;
        }
        if ((uint16_t)(avail_idx - vq->last_avail_idx) > vq->num) {
            *why = "avail index ran ahead by more than the queue size";
            return -EIO;
        }
        vq->avail_ahead = (uint16_t)(avail_idx - vq->last_avail_idx);
    }
    head = __atomic_load_n(&vq->avail->ring[vq->last_avail_idx % vq->num],
                           __ATOMIC_RELAXED);
    if (head >= vq->num) {
        *why = "avail ring head out of range";
        return -EIO;
    }
    int r = vq_read_chain(vq, mem, head, out, why);
    if (r < 0) {
        return r;
    }
    vq->last_avail_idx++;
    vq->avail_ahead--;
    inflight_fetched(vq, head);
    return 1;
}

/* ---- completing ----------------------------------------------------- */

void vq_push(VirtQueue *vq, uint16_t head, uint32_t len)
{
    if (!vq->used) {
        /* The rings left guest memory under the request (a memory table
         * without them): the queue is stopped; nothing to write. */
        return;
    }
    VringUsedElem *e = &vq->used->ring[vq->used_idx % vq->num];

    __atomic_store_n(&e->id, head, __ATOMIC_RELAXED);
    __atomic_store_n(&e->len, len, __ATOMIC_RELAXED);
    if (vq->inflight) {
        vq->inflight->last_batch_head = head;
    }
    vq->used_idx++;
}

/* vring_need_event() of the spec: did the index pass @event between
 * @old and @new? */
static bool need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
    return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

bool vq_flush(VirtQueue *vq)
{
    uint16_t old = vq->published_idx, new_idx = vq->used_idx;

    if (old == new_idx || !vq->used) {
        return false;
    }
    __atomic_store_n(&vq->used->idx, new_idx, __ATOMIC_RELEASE);
    vq->published_idx = new_idx;
    if (vq->inflight) {
        /* The elements are visible: their requests are no longer in
         * flight.  A crash before this loop ends is repaired by
         * vq_inflight_restore() from the used ring. */
        for (uint16_t i = old; i != new_idx; i++) {
            uint32_t id = vq->used->ring[i % vq->num].id;
            if (id < vq->num) {
                __atomic_store_n(&vq->inflight->desc[id].inflight, 0,
                                 __ATOMIC_RELEASE);
            }
        }
        __atomic_store_n(&vq->inflight->used_idx, new_idx, __ATOMIC_RELEASE);
    }
    atomic_thread_fence(memory_order_seq_cst);
    if (vq->event_idx) {
        uint16_t used_event = __atomic_load_n(&vq->avail->ring[vq->num],
                                              __ATOMIC_RELAXED);
        bool valid = vq->signalled_valid;
        uint16_t since = vq->signalled_idx;
        vq->signalled_idx = new_idx;
        vq->signalled_valid = true;
        return !valid || need_event(used_event, new_idx, since);
    }
    return !(__atomic_load_n(&vq->avail->flags, __ATOMIC_RELAXED) &
             VRING_AVAIL_F_NO_INTERRUPT);
}
