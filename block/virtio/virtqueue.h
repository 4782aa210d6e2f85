/*
 * Split virtqueues (virtio 1.x, "Split Virtqueues"), device side, with
 * INDIRECT_DESC, EVENT_IDX and vhost-user inflight tracking
 * SPDX-License-Identifier: MIT
 *
 * The rings live in guest memory, which the guest may change at any time:
 * every index read from them is checked before use, every descriptor is
 * translated through the memory table (vu-mem.h), chains are bounded
 * (loops detected) and each descriptor field is read once.  A problem
 * with the ring itself (an avail index that runs ahead by more than the
 * queue size, a head or next index out of range, a loop, an indirect
 * table that is nested, empty, misaligned or too long, a buffer outside
 * guest memory) makes vq_pop() return -EIO: the caller stops the queue
 * and signals its error eventfd.  What a descriptor chain *means* (its
 * header, its status byte, the directions) is the device's business
 * (virtio-blk.h).
 *
 * Used-ring updates are batched: vq_push() writes the element, vq_flush()
 * publishes the index (release ordering) and says whether the driver
 * wants an interrupt (EVENT_IDX's used_event or the NO_INTERRUPT flag).
 *
 * Inflight tracking (vhost-user INFLIGHT_SHMFD): a shared memory region
 * that outlives the back-end process records, per head, whether the
 * request is in flight and in which order it was fetched; a restarted
 * back end resubmits those requests.  The layout is the specification's
 * ("Inflight I/O tracking", split virtqueue):
 *
 *   QueueRegionSplit: u64 features | u16 version | u16 desc_num |
 *                     u16 last_batch_head | u16 used_idx | desc[desc_num]
 *   DescStateSplit:   u8 inflight | u8 padding[5] | u16 next | u64 counter
 *
 * Threading: a queue is used by one thread (its loop).
 */
#ifndef STRATA_BLOCK_VIRTIO_VIRTQUEUE_H
#define STRATA_BLOCK_VIRTIO_VIRTQUEUE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "block/virtio/vu-mem.h"

/* Largest queue (the virtio-pci and vhost limit QEMU applies) and the
 * longest chain accepted: a direct chain is further limited to the queue
 * size, an indirect table to this many entries. */
#define VQ_MAX_SIZE         1024
#define VQ_MAX_CHAIN        1024

#define VRING_DESC_F_NEXT       1
#define VRING_DESC_F_WRITE      2
#define VRING_DESC_F_INDIRECT   4
#define VRING_AVAIL_F_NO_INTERRUPT 1

/* Feature bits the ring layer implements. */
#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX     29
#define VIRTIO_F_VERSION_1          32

typedef struct VringDesc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
} VringDesc;

typedef struct VringAvail {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[];        /* [num], then used_event */
} VringAvail;

typedef struct VringUsedElem {
    uint32_t id;
    uint32_t len;
} VringUsedElem;

typedef struct VringUsed {
    uint16_t flags;
    uint16_t idx;
    VringUsedElem ring[];   /* [num], then avail_event */
} VringUsed;

/* Ring sizes in bytes for a queue of @num entries (with the event
 * fields). */
static inline uint64_t vring_desc_size(unsigned num)
{
    return 16ull * num;
}
static inline uint64_t vring_avail_size(unsigned num)
{
    return 6ull + 2ull * num;
}
static inline uint64_t vring_used_size(unsigned num)
{
    return 6ull + 8ull * num;
}

/* vhost-user inflight region, per queue. */
typedef struct VuInflightDesc {
    uint8_t inflight;
    uint8_t padding[5];
    uint16_t next;
    uint64_t counter;
} VuInflightDesc;

typedef struct VuInflightQueue {
    uint64_t features;
    uint16_t version;
    uint16_t desc_num;
    uint16_t last_batch_head;
    uint16_t used_idx;
    VuInflightDesc desc[];
} VuInflightQueue;

/* Bytes of one queue's inflight region (64-byte aligned, as every
 * implementation lays the queues out back to back). */
uint64_t vq_inflight_queue_size(unsigned num);

/* One request: the chain's buffers, device-readable first.  The
 * allocation holds 2 * cap elements: iov[0, cap) for the chain and
 * iov[cap, 2 * cap) spare, for a caller's vector built from the chain's
 * elements (virtio_blk_parse), so that a reused element allocates
 * nothing. */
typedef struct VqElem {
    uint16_t head;
    int out_num;            /* iov[0, out_num): device-readable */
    int in_num;             /* iov[out_num, out_num + in_num): writable */
    int cap;                /* chain elements this allocation holds */
    bool bad_order;         /* a readable buffer followed a writable one */
    struct iovec iov[];
} VqElem;

/* The spare half of @elem's storage: elem->cap elements. */
static inline struct iovec *vq_elem_spare(VqElem *elem)
{
    return elem->iov + elem->cap;
}

typedef struct VirtQueue {
    unsigned index;
    unsigned num;               /* queue size, 0 until SET_VRING_NUM */
    bool event_idx;             /* EVENT_IDX negotiated */
    bool polling;               /* the device polls: an empty ring asks
                                   for no kick (vq_pop) */
    bool indirect;              /* INDIRECT_DESC negotiated */

    /* Front-end virtual addresses from SET_VRING_ADDR. */
    bool addr_set;
    uint64_t desc_uva, avail_uva, used_uva;

    /* Translated through the current memory table (vq_map). */
    VringDesc *desc;
    VringAvail *avail;
    VringUsed *used;

    uint16_t last_avail_idx;    /* next avail entry to fetch */
    uint16_t avail_ahead;       /* entries past it seen in avail->idx (its
                                   last read): fetched without reading the
                                   index again; 0 where last_avail_idx is
                                   set from outside */
    uint16_t used_idx;          /* entries written (published at flush) */
    uint16_t published_idx;     /* used->idx as last published */
    uint16_t signalled_idx;     /* used index at the last interrupt */
    bool signalled_valid;

    VuInflightQueue *inflight;  /* or NULL */
    uint64_t inflight_counter;
    uint16_t *resubmit;         /* heads to fetch again, in order */
    unsigned resubmit_num, resubmit_pos;
} VirtQueue;

void vq_init(VirtQueue *vq, unsigned index);
/* Forget the ring (front end gone, RESET_OWNER): keeps index. */
void vq_reset(VirtQueue *vq);

/*
 * Translate the ring addresses through @mem (after SET_VRING_ADDR and
 * after every SET_MEM_TABLE).  -EFAULT (with @why) when a ring is outside
 * guest memory or misaligned, -EINVAL when the size or addresses are
 * missing.
 */
int vq_map(VirtQueue *vq, const VuMemTable *mem, const char **why);

/*
 * Start after a restart of the back end: with an inflight region, clear
 * the entries whose used element was published, count the rest, set
 * last_avail_idx past them and queue them for resubmission in fetch
 * order.  Without one, nothing.  Returns the number to resubmit.
 */
unsigned vq_inflight_restore(VirtQueue *vq);

/*
 * Fetch the next request: 1 with *@out when one was available, 0 when
 * the ring is empty (with EVENT_IDX the avail_event field then asks for
 * a kick), -EIO with @why when the ring is corrupt.  *@out is NULL or an
 * element of an earlier call, reused when it holds the chain (else freed
 * and replaced): a caller that keeps its elements allocates only while
 * chains grow.  The caller g_free()s the element in the end.
 */
int vq_pop(VirtQueue *vq, const VuMemTable *mem, VqElem **out,
           const char **why);

/* Whether the driver made a request available that vq_pop() has not
 * fetched yet (a cheap look, for polling). */
static inline bool vq_avail_pending(const VirtQueue *vq)
{
    return vq->avail &&
           (vq->avail_ahead || vq->resubmit_pos < vq->resubmit_num ||
            __atomic_load_n(&vq->avail->idx, __ATOMIC_RELAXED) !=
            vq->last_avail_idx);
}

/* Write the used element of @head with @len bytes written (not yet
 * visible to the driver); nothing when the rings are unmapped. */
void vq_push(VirtQueue *vq, uint16_t head, uint32_t len);

/* Publish the used elements pushed so far; true when the driver should
 * get an interrupt now. */
bool vq_flush(VirtQueue *vq);

#endif
