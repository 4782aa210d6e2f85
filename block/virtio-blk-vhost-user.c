/*
 * virtio-blk-vhost-user: a protocol driver for a disk behind a
 * vhost-user-blk back end (strata-storage-daemon, qemu-storage-daemon,
 * SPDK's vhost target): Strata as the VMM side of the protocol
 * SPDX-License-Identifier: MIT
 *
 * Control path (open, close): blocking exchanges through the front-end
 * library (block/virtio/vu-frontend.h) with a timeout: negotiate, read
 * the config space, share one memfd region ("the pool region") that holds
 * the rings, a small per-slot area for each ring entry and the bounce
 * pool, and start the queues.
 *
 * Data path, in the node's loop (the driver is single_queue):
 *
 *   co_preadv ─► vbvu_co_rw(): take a slot (one per ring entry) ─► header
 *   in the slot's area, data as descriptors straight into the caller's
 *   buffers when every element lies in memory the back end shares
 *   (zero-copy), else in a run of bounce pages ─► the slot's indirect
 *   table, its descriptor made available ─► kick at the end of the loop
 *   iteration (one per queue and iteration, suppressed by EVENT_IDX) ─►
 *   the coroutine yields ─► the back end signals the call eventfd ─►
 *   vbvu_on_call() reads the used ring and enters each finished request's
 *   coroutine ─► a bounced read copies out, the slot and pages go back.
 *
 * Every request uses exactly one ring descriptor: descriptor i always
 * points at slot i's indirect table, so the ring never runs out of
 * descriptors before it runs out of slots.
 *
 *   slot area (VBVU_SLOT_HDR bytes)         indirect table
 *   | out header 16 | segment 16 | status |  | hdr | data ... | status |
 *
 * size_max: the request path knows no per-element limit, so the driver
 * splits any buffer longer than the back end's size_max into several
 * descriptors, and bounds max_iov so that the split chain still fits
 * seg_max (max_iov = seg_max - max_transfer / size_max - 1).
 *
 * A back end that disappears (socket closed, process killed): the socket
 * handler notices at once; every request in flight completes with
 * ECONNRESET ("Connection reset by peer"), later ones fail with ENOTCONN
 * ("Transport endpoint is not connected"); the loss is reported once
 * through block_log() (the tools print it) and "info" says what
 * happened.  The driver never touches a request's buffers after its coroutine returned:
 * a request whose back end died is completed only when the back end can
 * no longer write its memory.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include "block/block-int.h"
#include "block/drivers.h"
#include "block/memregion.h"
#include "block/virtio/virtio-blk.h"
#include "block/virtio/vu-frontend.h"

#define VBVU_DEFAULT_QUEUE_SIZE 256
#define VBVU_MAX_QUEUES         16
/* Data descriptors one request may use (the indirect table holds two
 * more: header and status). */
#define VBVU_MAX_SEGS           256
/* Largest read or write sent as one virtio-blk request. */
#define VBVU_MAX_TRANSFER       ((int64_t)1 << 20)
/* The bounce pool: pages of VBVU_PAGE bytes, enough for a full queue of
 * 64 KiB requests before a request has to wait for pages. */
#define VBVU_PAGE               4096u
#define VBVU_POOL_BYTES         ((uint64_t)16 << 20)
#define VBVU_SLOT_HDR           64u
/* In a slot's area: the segment of DISCARD / WRITE_ZEROES after the
 * 16-byte header, then the status byte. */
#define VBVU_SEG_OFF            16u
#define VBVU_STATUS_OFF         32u
/* Without SIZE_MAX, one descriptor carries at most this much. */
#define VBVU_DESC_MAX           ((uint64_t)1 << 30)
/* The guest-physical base of the pool region (zero-copy regions go
 * above it). */
#define VBVU_GPA_BASE           0x100000ull

#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))

typedef struct VbvuState VbvuState;

/*
 * Memory the back end shares besides the pool region: embedder regions
 * (strata_context_register_memory) backed by a memfd, added to the
 * memory table on first use (vbvu_co_zc_add).
 */
#define VBVU_ZC_MAX (VHOST_USER_MEM_REGIONS - 1)
#define VBVU_ZC_REFUSED_MAX 16
#define VBVU_ZC_GPA_ALIGN ((uint64_t)1 << 30)
typedef struct VbvuZcRegion {
    uintptr_t start;
    uint64_t len;
    uint64_t gpa;
} VbvuZcRegion;

/* One ring entry's request. */
typedef struct VbvuSlot {
    Coroutine *co;              /* waiting for the used element */
    int ret;
    bool busy;
    uint8_t *area;              /* VBVU_SLOT_HDR bytes in the pool region */
    uint64_t area_gpa;
    VringDesc *table;           /* the slot's indirect table */
    uint64_t table_gpa;
} VbvuSlot;

typedef struct VbvuQueue {
    VbvuState *s;
    unsigned index;
    VbvuSlot *slots;
    uint16_t *free;             /* free slot indices */
    unsigned nfree;
    uint16_t kicked_idx;        /* avail index at the last kick */
    bool kick_pending;
    unsigned in_flight;
    uint64_t reqs;
    LoopPoller *poller;         /* looks at the used ring while the loop polls */
    bool polling;               /* calls suppressed: the loop is polling */
} VbvuQueue;

struct VbvuState {
    StrataNode *node;
    Loop *loop;
    char *path;
    unsigned num_queues;
    unsigned queue_size;
    VuFrontend fe;
    bool connected;
    char *dead_reason;          /* why the back end is gone, or NULL */

    VirtioBlkConfig cfg;
    uint64_t features;
    uint32_t blk_size;
    uint64_t size_max;          /* bytes per descriptor */
    unsigned seg_max;           /* data descriptors per request */
    int max_iov;
    int64_t max_transfer;

    VbvuQueue queue[VBVU_MAX_QUEUES];
    unsigned next_queue;
    CoQueue slot_waiters;

    /* Bounce pool: a bitmap of VBVU_PAGE pages, first fit. */
    uint8_t *pool;
    uint64_t pool_gpa;
    unsigned pool_pages;
    uint64_t *pool_map;         /* bit set: page in use */
    CoQueue pool_waiters;

    VbvuZcRegion zc[VBVU_ZC_MAX];   /* embedder memory the back end maps */
    int nzc;
    uintptr_t zc_refused[VBVU_ZC_REFUSED_MAX];  /* regions not shareable */
    int nzc_refused;
    uint64_t zc_next_gpa;
    bool zc_busy;               /* a region is being added */
    CoQueue drain_waiters;      /* an addition waiting for in_flight 0 */

    uint64_t reqs, bounced, bounced_bytes, zero_copy, kicks, calls;
};

static bool vbvu_has(const VbvuState *s, int bit)
{
    return s->features & (1ull << bit);
}

/* ---- bounce pool ------------------------------------------------------ */

static bool vbvu_page_used(const VbvuState *s, unsigned p)
{
    return s->pool_map[p / 64] & (1ull << (p % 64));
}

static void vbvu_pages_mark(VbvuState *s, unsigned first, unsigned n, bool on)
{
    for (unsigned p = first; p < first + n; p++) {
        if (on) {
            s->pool_map[p / 64] |= 1ull << (p % 64);
        } else {
            s->pool_map[p / 64] &= ~(1ull << (p % 64));
        }
    }
}

/* First fit of @n contiguous pages: the first page, or -1. */
static int vbvu_pages_find(VbvuState *s, unsigned n)
{
    unsigned run = 0;

    for (unsigned p = 0; p < s->pool_pages; p++) {
        if (run == 0 && p % 64 == 0 && s->pool_map[p / 64] == UINT64_MAX) {
            p += 63;
            continue;
        }
        run = vbvu_page_used(s, p) ? 0 : run + 1;
        if (run == n) {
            return (int)(p + 1 - n);
        }
    }
    return -1;
}

/* Wait for @bytes of bounce pages: the first page's index, or -1 when
 * the back end is lost (vbvu_backend_lost wakes the waiters).  A wait
 * counts in the node's pool_waits, as the padding layer's do. */
static int vbvu_co_pages_get(VbvuState *s, int64_t bytes)
{
    unsigned n = (unsigned)DIV_ROUND_UP(bytes, VBVU_PAGE);
    int first = -1;
    bool waited = false;

    while (s->connected && (first = vbvu_pages_find(s, n)) < 0) {
        if (!waited) {
            waited = true;
            SHARD_ADD(node_stats(s->node)->pad.pool_waits, 1);
        }
        co_queue_wait(&s->pool_waiters, NULL);
    }
    if (!s->connected) {
        return -1;
    }
    vbvu_pages_mark(s, (unsigned)first, n, true);
    return first;
}

static void vbvu_pages_put(VbvuState *s, unsigned first, int64_t bytes)
{
    vbvu_pages_mark(s, first, (unsigned)DIV_ROUND_UP(bytes, VBVU_PAGE),
                    false);
    co_queue_restart_all(&s->pool_waiters);
}

/* ---- ring ------------------------------------------------------------- */

/* virtio's vring_need_event: did @new_idx pass @event since @old? */
static bool vbvu_need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
    return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

static void vbvu_kick(void *opaque)
{
    VbvuQueue *q = opaque;
    VufQueue *vq = &q->s->fe.queues[q->index];
    uint64_t one = 1;
    bool kick;

    q->kick_pending = false;
    /* The avail index must be visible before the back end's event field
     * or flags are read (a full barrier: store then load). */
    atomic_thread_fence(memory_order_seq_cst);
    if (vq->event_idx) {
        uint16_t ev = __atomic_load_n((uint16_t *)&vq->used->ring[vq->num],
                                      __ATOMIC_RELAXED);
        kick = vbvu_need_event(ev, vq->avail_idx, q->kicked_idx);
    } else {
        kick = !(__atomic_load_n(&vq->used->flags, __ATOMIC_RELAXED) & 1);
    }
    q->kicked_idx = vq->avail_idx;
    if (kick && q->s->connected) {
        q->s->kicks++;
        if (write(vq->kick_fd, &one, sizeof(one)) < 0) {
            /* An eventfd write fails only on counter overflow. */
        }
    }
}

/* Make @head available to the back end; false, publishing nothing, when
 * the back end is lost: nobody would ever complete the element. */
static bool vbvu_publish(VbvuQueue *q, uint16_t head)
{
    VufQueue *vq = &q->s->fe.queues[q->index];

    if (!q->s->connected) {
        return false;
    }
    vq->avail->ring[vq->avail_idx % vq->num] = head;
    vq->avail_idx++;
    __atomic_store_n(&vq->avail->idx, vq->avail_idx, __ATOMIC_RELEASE);
    if (!q->kick_pending) {
        q->kick_pending = true;
        loop_defer_call(q->s->loop, vbvu_kick, q);
    }
    return true;
}

/* EVENT_IDX: ask for no call.  The event lies behind what the back end
 * publishes next (it comes round again only after 65536 elements, and a
 * spurious call costs one read). */
static void vbvu_event_behind(VufQueue *vq)
{
    __atomic_store_n(&vq->avail->ring[vq->num], (uint16_t)(vq->used_seen - 1),
                     __ATOMIC_RELAXED);
}

/* Consume the used ring of @q, entering the finished coroutines in a row
 * (co_list_enter) once it is empty. */
static void vbvu_process_used(VbvuQueue *q)
{
    VufQueue *vq = &q->s->fe.queues[q->index];
    CoList done = CO_LIST_INIT;

    for (;;) {
        while (vq->used_seen !=
               __atomic_load_n(&vq->used->idx, __ATOMIC_ACQUIRE)) {
            VringUsedElem *e = &vq->used->ring[vq->used_seen % vq->num];
            uint32_t id = e->id;
            vq->used_seen++;
            if (id >= vq->num || !q->slots[id].busy || !q->slots[id].co) {
                /* A back end that reports a head we did not give it:
                 * ignore it rather than complete someone else's request. */
                continue;
            }
            VbvuSlot *slot = &q->slots[id];
            uint8_t status = slot->area[VBVU_STATUS_OFF];
            slot->ret = status == VIRTIO_BLK_S_OK ? 0
                        : status == VIRTIO_BLK_S_UNSUPP ? -ENOTSUP : -EIO;
            co_list_append(&done, slot->co);
            slot->co = NULL;
        }
        co_list_enter(&done);
        if (!vq->event_idx) {
            return;
        }
        if (q->polling) {
            vbvu_event_behind(vq);
            return;
        }
        /* Ask for a call at the next element, then look again: one may
         * have been published before the back end saw the new event. */
        __atomic_store_n(&vq->avail->ring[vq->num], vq->used_seen,
                         __ATOMIC_RELAXED);
        atomic_thread_fence(memory_order_seq_cst);
        if (vq->used_seen ==
            __atomic_load_n(&vq->used->idx, __ATOMIC_ACQUIRE)) {
            return;
        }
    }
}

static void vbvu_on_call(void *opaque)
{
    VbvuQueue *q = opaque;
    VufQueue *vq = &q->s->fe.queues[q->index];
    uint64_t v;

    if (read(vq->call_fd, &v, sizeof(v)) != sizeof(v)) {
        /* Nothing pending (spurious wake-up): look at the ring anyway. */
    }
    q->s->calls++;
    vbvu_process_used(q);
}

/* ---- polling --------------------------------------------------------
 *
 * In a loop with a poll time (an iothread's poll-max-ns, or a tool's
 * main loop that sets one), the loop looks at the used ring itself
 * before it sleeps, and while it does the back end is asked for no call:
 * a completion is seen within the poll time, without the back end's
 * eventfd write, the epoll wake-up and the read here.  Outside polling
 * the call eventfd does the work, with EVENT_IDX asking for one call per
 * batch that finds the driver about to sleep.
 */
static bool vbvu_poll(void *opaque)
{
    VbvuQueue *q = opaque;
    VufQueue *vq = &q->s->fe.queues[q->index];

    if (vq->used_seen == __atomic_load_n(&vq->used->idx, __ATOMIC_ACQUIRE)) {
        return false;
    }
    vbvu_process_used(q);
    return true;
}

static void vbvu_poll_begin(void *opaque)
{
    VbvuQueue *q = opaque;
    VufQueue *vq = &q->s->fe.queues[q->index];

    q->polling = true;
    if (vq->event_idx) {
        vbvu_event_behind(vq);
    } else {
        __atomic_store_n(&vq->avail->flags, VRING_AVAIL_F_NO_INTERRUPT,
                         __ATOMIC_RELAXED);
    }
}

/* Polling ends: ask for calls again, then look once more for what was
 * published before the back end saw the request.  Returns true if that
 * look completed requests: the loop must not sleep, since a caller may
 * be waiting for one of them and no call will come for it. */
static bool vbvu_poll_end(void *opaque)
{
    VbvuQueue *q = opaque;
    VufQueue *vq = &q->s->fe.queues[q->index];
    uint16_t seen = vq->used_seen;

    q->polling = false;
    if (!vq->event_idx) {
        __atomic_store_n(&vq->avail->flags, 0, __ATOMIC_RELAXED);
        atomic_thread_fence(memory_order_seq_cst);
    }
    vbvu_process_used(q);
    return vq->used_seen != seen;
}

static void vbvu_polling(VbvuQueue *q, bool on)
{
    if (on && !q->poller) {
        q->poller = loop_add_poller(q->s->loop, vbvu_poll, vbvu_poll_begin,
                                    vbvu_poll_end, q);
    } else if (!on && q->poller) {
        loop_remove_poller(q->s->loop, q->poller);
        q->poller = NULL;
        q->polling = false;
    }
}

/* The back end is gone: fail what is in flight and wake every waiter, so
 * that no request waits for a back end that will never answer.  Its
 * memory can no longer be written by it, so the buffers may be handed
 * back. */
static void vbvu_backend_lost(VbvuState *s, const char *why)
{
    if (!s->connected) {
        return;
    }
    s->connected = false;
    s->dead_reason = g_strdup_printf("vhost-user back end at '%s': %s",
                                     s->path, why);
    g_autofree char *msg = g_strdup_printf("vhost-user back end at '%s' "
                                           "lost: %s; every request fails "
                                           "from now on", s->path, why);
    block_log(s->node, msg);
    loop_set_fd_handler(s->loop, s->fe.fd, NULL, NULL, NULL);
    for (unsigned i = 0; i < s->num_queues; i++) {
        VbvuQueue *q = &s->queue[i];
        loop_set_fd_handler(s->loop, s->fe.queues[i].call_fd, NULL, NULL,
                            NULL);
        vbvu_polling(q, false);
        /* Published elements first: those requests did complete. */
        vbvu_process_used(q);
        for (unsigned j = 0; j < s->queue_size; j++) {
            VbvuSlot *slot = &q->slots[j];
            if (slot->busy && slot->co) {
                Coroutine *co = slot->co;
                slot->co = NULL;
                slot->ret = -ECONNRESET;
                co_enter(co);
            }
        }
    }
    /* Requests waiting for a slot fail now (vbvu_co_slot_get), however
     * many there are; those holding a slot while they wait for bounce
     * pages fail as the published ones did (vbvu_co_request), and a
     * region addition waiting for an idle queue gives up. */
    co_queue_restart_all(&s->slot_waiters);
    co_queue_restart_all(&s->pool_waiters);
    co_queue_restart_all(&s->drain_waiters);
}

/* The socket is readable outside a control exchange: the back end sends
 * nothing unasked, so this is its end of stream (or garbage). */
static void vbvu_on_socket(void *opaque)
{
    VbvuState *s = opaque;
    char c;
    ssize_t n = recv(s->fe.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }
    vbvu_backend_lost(s, n == 0 ? "the back end closed the connection"
                      : n < 0 ? g_strerror(errno)
                      : "unexpected message from the back end");
}

/* ---- zero-copy ----------------------------------------------------------
 *
 * A request whose every element lies in a region the embedder registered
 * (strata_context_register_memory) that is a shared mapping of a file
 * this process holds open (a memfd, as VMMs allocate guest RAM) goes to
 * the back end as it is: the first request that touches such a region
 * adds the whole region to the memory table (SET_MEM_TABLE, once per
 * region, with no request in flight), later ones only look it up.  Any
 * other memory is copied through the bounce pool, whatever the size: the
 * back end cannot see it, and mapping it per request would cost a message
 * round trip and an mmap in the back end each time, far more than a copy
 * of the largest request (max_transfer).
 */

/* The shared region that holds all of [@p, @p + @len), or NULL. */
static const VbvuZcRegion *vbvu_zc_find(const VbvuState *s, const void *p,
                                        size_t len)
{
    uintptr_t a = (uintptr_t)p;

    for (int i = 0; i < s->nzc; i++) {
        const VbvuZcRegion *z = &s->zc[i];
        if (a >= z->start && a - z->start <= z->len &&
            len <= z->len - (a - z->start)) {
            return z;
        }
    }
    return NULL;
}

/*
 * An fd of the file behind the shared mapping that holds [@start, @start +
 * @len) (the caller closes it) and the offset of @start in that file; -1
 * when the memory is not one shared file mapping or no fd of this process
 * refers to its file.  Reads /proc: once per region.
 */
static int vbvu_mapping_fd(uintptr_t start, size_t len, uint64_t *offset)
{
    FILE *f = fopen("/proc/self/maps", "re");
    char line[512];
    unsigned long lo, hi, off, ino = 0;
    unsigned maj, min;
    char perms[8];
    bool found = false;
    int fd = -1;

    if (!f) {
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &lo, &hi, perms, &off,
                   &maj, &min, &ino) == 7 && start >= lo && start < hi) {
            found = len <= hi - start && perms[3] == 's' && ino != 0;
            break;
        }
        /* A line longer than the buffer: skip the rest of it. */
        while (!strchr(line, '\n') && fgets(line, sizeof(line), f)) {
        }
    }
    fclose(f);
    if (!found) {
        return -1;
    }
    *offset = off + (start - lo);
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    while (d && fd < 0 && (de = readdir(d))) {
        struct stat st;
        int cand = atoi(de->d_name);
        if (de->d_name[0] != '.' && cand != dirfd(d) &&
            fstat(cand, &st) == 0 && S_ISREG(st.st_mode) &&
            st.st_ino == ino && st.st_dev == makedev(maj, min)) {
            fd = fcntl(cand, F_DUPFD_CLOEXEC, 0);
        }
    }
    if (d) {
        closedir(d);
    }
    return fd;
}

static unsigned vbvu_in_flight(const VbvuState *s)
{
    unsigned n = 0;
    for (unsigned i = 0; i < s->num_queues; i++) {
        n += s->queue[i].in_flight;
    }
    return n;
}

/*
 * Share the embedder region [@start, @start + @len) with the back end.
 * New requests wait (vbvu_co_slot_get) and those in flight complete
 * first: a back end may unmap its old table at SET_MEM_TABLE.  The
 * exchange blocks the loop for one round trip.
 */
static bool vbvu_co_zc_add(VbvuState *s, uintptr_t start, size_t len)
{
    uint64_t off;
    int fd, r;

    for (int i = 0; i < s->nzc_refused; i++) {
        if (s->zc_refused[i] == start) {
            return false;
        }
    }
    if (s->nzc >= VBVU_ZC_MAX || s->zc_busy) {
        return false;
    }
    fd = vbvu_mapping_fd(start, len, &off);
    if (fd < 0) {
        if (s->nzc_refused < VBVU_ZC_REFUSED_MAX) {
            s->zc_refused[s->nzc_refused++] = start;
        }
        return false;
    }
    s->zc_busy = true;
    while (s->connected && vbvu_in_flight(s) > 0) {
        co_queue_wait(&s->drain_waiters, NULL);
    }
    uint64_t gpa = s->zc_next_gpa;
    s->zc_next_gpa = ROUND_UP(gpa + len, VBVU_ZC_GPA_ALIGN);
    r = s->connected ? vuf_add_region(&s->fe, fd, (void *)start, len, off, gpa)
                     : -ENOTCONN;
    if (r == 0) {
        loop_set_fd_handler(s->loop, s->fe.fd, NULL, NULL, NULL);
        r = vuf_set_mem_table(&s->fe);
        if (r == 0) {
            loop_set_fd_handler(s->loop, s->fe.fd, vbvu_on_socket, NULL, s);
            s->zc[s->nzc++] = (VbvuZcRegion){ start, len, gpa };
        } else {
            vbvu_backend_lost(s, "SET_MEM_TABLE failed");
        }
    } else {
        close(fd);
    }
    s->zc_busy = false;
    co_queue_restart_all(&s->slot_waiters);
    return r == 0;
}

/* Can @qiov go to the back end as it is: every element in a registered
 * region that is shared with it (sharing it first if need be)?  The
 * context's table is asked each time, so that a region the embedder has
 * unregistered is never used again. */
static bool vbvu_co_zc_covers(VbvuState *s, const IOVector *qiov)
{
    if (!memregion_any(s->node->ctx)) {
        return false;
    }
    for (int i = 0; i < qiov->niov; i++) {
        const void *p = qiov->iov[i].iov_base;
        size_t len = qiov->iov[i].iov_len;
        uintptr_t start;
        size_t rlen;
        const VbvuZcRegion *z;

        if (!memregion_find_range(s->node->ctx, p, len, &start, &rlen)) {
            return false;
        }
        z = vbvu_zc_find(s, p, len);
        if (z && z->start == start && z->len == rlen) {
            continue;
        }
        if (z || !vbvu_co_zc_add(s, start, rlen)) {
            return false;
        }
    }
    return true;
}

/* ---- requests --------------------------------------------------------- */

static VbvuSlot *vbvu_co_slot_get(VbvuState *s, VbvuQueue **qp)
{
    for (;;) {
        if (!s->connected) {
            return NULL;
        }
        if (s->zc_busy) {
            co_queue_wait(&s->slot_waiters, NULL);
            continue;
        }
        for (unsigned i = 0; i < s->num_queues; i++) {
            VbvuQueue *q = &s->queue[(s->next_queue + i) % s->num_queues];
            if (q->nfree) {
                s->next_queue = (q->index + 1) % s->num_queues;
                VbvuSlot *slot = &q->slots[q->free[--q->nfree]];
                slot->busy = true;
                q->in_flight++;
                *qp = q;
                return slot;
            }
        }
        co_queue_wait(&s->slot_waiters, NULL);
    }
}

static void vbvu_slot_put(VbvuState *s, VbvuQueue *q, VbvuSlot *slot)
{
    slot->busy = false;
    q->free[q->nfree++] = (uint16_t)(slot - q->slots);
    q->in_flight--;
    if (s->zc_busy && vbvu_in_flight(s) == 0) {
        co_queue_restart_all(&s->drain_waiters);
    }
    co_queue_next(&s->slot_waiters);
}

/* @bytes copied between the caller's buffers and the bounce pool: the
 * node's bytes_bounced (query-blockstats, strata-io's info) counts them
 * beside the padding layer's copies. */
static void vbvu_count_bounce(VbvuState *s, int64_t bytes)
{
    SHARD_ADD(node_stats(s->node)->pad.bytes_bounced, (uint64_t)bytes);
}

/* Append descriptors for [@gpa, @gpa + @len), split at size_max. */
static void vbvu_add_data(VbvuState *s, VringDesc *t, int *n, uint64_t gpa,
                          uint64_t len, bool write)
{
    while (len) {
        uint64_t piece = MIN(len, s->size_max);
        t[*n] = (VringDesc){ .addr = gpa, .len = (uint32_t)piece,
                             .flags = write ? VRING_DESC_F_WRITE : 0 };
        (*n)++;
        gpa += piece;
        len -= piece;
    }
}

/*
 * Send one virtio-blk request of @type at @offset.  IN / OUT carry
 * @qiov's @bytes; DISCARD / WRITE_ZEROES a segment of @bytes with
 * @seg_flags; FLUSH nothing.
 */
static int vbvu_co_request(VbvuState *s, uint32_t type, int64_t offset,
                           int64_t bytes, const IOVector *qiov,
                           uint32_t seg_flags)
{
    VbvuQueue *q;
    bool in = type == VIRTIO_BLK_T_IN;
    /* Before taking a slot: sharing a region waits for an idle queue. */
    bool direct = qiov && vbvu_co_zc_covers(s, qiov);
    VbvuSlot *slot = vbvu_co_slot_get(s, &q);
    int bounce_first = -1;
    int n = 0;
    int ret;

    if (!slot) {
        return -ENOTCONN;
    }
    VringDesc *t = slot->table;
    uint8_t *hdr = slot->area;
    uint32_t type_le = type;
    uint64_t sector = (uint64_t)offset / VIRTIO_BLK_SECTOR_SIZE;
    memcpy(hdr, &type_le, 4);
    memset(hdr + 4, 0, 4);
    memcpy(hdr + 8, &sector, 8);
    hdr[VBVU_STATUS_OFF] = 0xff;
    t[n++] = (VringDesc){ .addr = slot->area_gpa, .len = 16 };

    if (qiov) {
        if (direct) {
            s->zero_copy++;
            for (int i = 0; i < qiov->niov; i++) {
                const VbvuZcRegion *z = vbvu_zc_find(s, qiov->iov[i].iov_base,
                                                     qiov->iov[i].iov_len);
                vbvu_add_data(s, t, &n, z->gpa +
                              ((uintptr_t)qiov->iov[i].iov_base - z->start),
                              qiov->iov[i].iov_len, in);
            }
        } else {
            bounce_first = vbvu_co_pages_get(s, bytes);
            if (bounce_first < 0) {
                ret = -ECONNRESET;
                goto out;
            }
            uint8_t *buf = s->pool + (uint64_t)bounce_first * VBVU_PAGE;
            s->bounced++;
            s->bounced_bytes += (uint64_t)bytes;
            if (!in) {
                iov_to_buf(qiov, 0, buf, (size_t)bytes);
                vbvu_count_bounce(s, bytes);
            }
            vbvu_add_data(s, t, &n,
                          s->pool_gpa + (uint64_t)bounce_first * VBVU_PAGE,
                          (uint64_t)bytes, in);
        }
    } else if (type != VIRTIO_BLK_T_FLUSH) {
        VirtioBlkDiscardWz seg = {
            .sector = sector,
            .num_sectors = (uint32_t)(bytes / VIRTIO_BLK_SECTOR_SIZE),
            .flags = seg_flags,
        };
        memcpy(hdr + VBVU_SEG_OFF, &seg, sizeof(seg));
        t[n++] = (VringDesc){ .addr = slot->area_gpa + VBVU_SEG_OFF,
                             .len = sizeof(seg) };
    }
    t[n++] = (VringDesc){ .addr = slot->area_gpa + VBVU_STATUS_OFF, .len = 1,
                          .flags = VRING_DESC_F_WRITE };
    for (int i = 0; i + 1 < n; i++) {
        t[i].flags |= VRING_DESC_F_NEXT;
        t[i].next = (uint16_t)(i + 1);
    }
    uint16_t head = (uint16_t)(slot - q->slots);
    VufQueue *vq = &s->fe.queues[q->index];
    vq->desc[head] = (VringDesc){ .addr = slot->table_gpa,
                                  .len = (uint32_t)(sizeof(VringDesc) * n),
                                  .flags = VRING_DESC_F_INDIRECT };
    /* Only a lost back end refuses the element; the request then fails
     * as those already published did, rather than wait for an answer
     * that cannot come. */
    if (!vbvu_publish(q, head)) {
        ret = -ECONNRESET;
        goto out;
    }
    s->reqs++;
    q->reqs++;
    slot->co = co_self();
    while (slot->co) {
        co_yield();
    }
    ret = slot->ret;
out:
    if (bounce_first >= 0) {
        if (in && ret == 0) {
            iov_from_buf(qiov, 0,
                         s->pool + (uint64_t)bounce_first * VBVU_PAGE,
                         (size_t)bytes);
            vbvu_count_bounce(s, bytes);
        }
        vbvu_pages_put(s, (unsigned)bounce_first, bytes);
    }
    vbvu_slot_put(s, q, slot);
    return ret;
}

static int vbvu_co_preadv(StrataNode *node, int64_t offset, int64_t bytes,
                          const IOVector *qiov, int flags)
{
    return vbvu_co_request(node->opaque, VIRTIO_BLK_T_IN, offset, bytes, qiov,
                           0);
}

static int vbvu_co_pwritev(StrataNode *node, int64_t offset, int64_t bytes,
                           const IOVector *qiov, int flags)
{
    /* FUA: node->supports_fua is false, so the request path follows the
     * write with a flush. */
    return vbvu_co_request(node->opaque, VIRTIO_BLK_T_OUT, offset, bytes,
                           qiov, 0);
}

static int vbvu_co_pwrite_zeroes(StrataNode *node, int64_t offset,
                                 int64_t bytes, int flags)
{
    VbvuState *s = node->opaque;

    if (!vbvu_has(s, VIRTIO_BLK_F_WRITE_ZEROES)) {
        return -ENOTSUP;
    }
    return vbvu_co_request(s, VIRTIO_BLK_T_WRITE_ZEROES, offset, bytes, NULL,
                           (flags & REQ_MAY_UNMAP) &&
                           s->cfg.write_zeroes_may_unmap
                           ? VIRTIO_BLK_WZ_FLAG_UNMAP : 0);
}

static int vbvu_co_pdiscard(StrataNode *node, int64_t offset, int64_t bytes)
{
    VbvuState *s = node->opaque;

    if (!vbvu_has(s, VIRTIO_BLK_F_DISCARD)) {
        return -ENOTSUP;
    }
    return vbvu_co_request(s, VIRTIO_BLK_T_DISCARD, offset, bytes, NULL, 0);
}

static int vbvu_co_flush(StrataNode *node)
{
    VbvuState *s = node->opaque;

    /* Without FLUSH the device is write-through: nothing to do. */
    if (!vbvu_has(s, VIRTIO_BLK_F_FLUSH)) {
        return s->connected ? 0 : -ENOTCONN;
    }
    return vbvu_co_request(s, VIRTIO_BLK_T_FLUSH, 0, 0, NULL, 0);
}

static int64_t vbvu_get_length(StrataNode *node)
{
    VbvuState *s = node->opaque;
    return (int64_t)s->cfg.capacity * VIRTIO_BLK_SECTOR_SIZE;
}

static void vbvu_refresh_limits(StrataNode *node, BlockLimits *bl)
{
    VbvuState *s = node->opaque;
    int64_t sectors_max = (int64_t)UINT32_MAX * VIRTIO_BLK_SECTOR_SIZE;

    bl->request_alignment = s->blk_size;
    bl->mem_alignment = 1;
    bl->iov_len_alignment = 1;
    bl->max_transfer = s->max_transfer;
    bl->max_iov = s->max_iov;
    bl->logical_block_size = s->blk_size;
    bl->physical_block_size = vbvu_has(s, VIRTIO_BLK_F_TOPOLOGY) &&
                              s->cfg.physical_block_exp < 16
                              ? s->blk_size << s->cfg.physical_block_exp
                              : s->blk_size;
    bl->opt_transfer = vbvu_has(s, VIRTIO_BLK_F_TOPOLOGY)
                       ? (int64_t)s->cfg.opt_io_size * s->blk_size : 0;
    if (bl->opt_transfer > s->max_transfer ||
        bl->opt_transfer % s->blk_size) {
        bl->opt_transfer = 0;
    }
    bl->pwrite_zeroes_alignment = s->blk_size;
    bl->max_pwrite_zeroes = ROUND_DOWN(
        s->cfg.max_write_zeroes_sectors
        ? (int64_t)s->cfg.max_write_zeroes_sectors * VIRTIO_BLK_SECTOR_SIZE
        : sectors_max, (int64_t)s->blk_size);
    uint64_t da = (uint64_t)s->cfg.discard_sector_alignment *
                  VIRTIO_BLK_SECTOR_SIZE;
    bl->pdiscard_alignment = da > s->blk_size && da <= (1u << 30) &&
                             is_power_of_2(da) ? (uint32_t)da : s->blk_size;
    bl->max_pdiscard = ROUND_DOWN(
        s->cfg.max_discard_sectors
        ? (int64_t)s->cfg.max_discard_sectors * VIRTIO_BLK_SECTOR_SIZE
        : sectors_max, (int64_t)bl->pdiscard_alignment);
}

/* ---- open and close --------------------------------------------------- */

static int vbvu_connect_socket(const char *path, StrataError **errp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        error_set_option(errp, "path: '%s' is too long for a UNIX socket",
                         path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        error_set(errp, STRATA_ERROR_IO, errno, "Failed to connect to "
                  "vhost-user back end '%s': %s", path, g_strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

/* Read the config space and derive the limits. */
static bool vbvu_read_config(VbvuState *s, StrataError **errp)
{
    int r = vuf_get_config(&s->fe, 0, &s->cfg, sizeof(s->cfg));

    if (r < 0) {
        /* A back end may serve a shorter config space (pre-1.2 devices):
         * the first 60 bytes hold everything this driver reads. */
        memset(&s->cfg, 0, sizeof(s->cfg));
        r = vuf_get_config(&s->fe, 0, &s->cfg, 60);
    }
    if (r < 0) {
        error_set(errp, STRATA_ERROR_IO, -r, "'%s': GET_CONFIG failed: %s",
                  s->path, g_strerror(-r));
        return false;
    }
    s->blk_size = VIRTIO_BLK_SECTOR_SIZE;
    if (vbvu_has(s, VIRTIO_BLK_F_BLK_SIZE)) {
        if (s->cfg.blk_size < VIRTIO_BLK_SECTOR_SIZE ||
            s->cfg.blk_size > BLOCK_MAX_REQUEST_ALIGN ||
            !is_power_of_2(s->cfg.blk_size)) {
            error_set(errp, STRATA_ERROR_IO, EINVAL, "'%s': the back end's "
                      "blk_size %" PRIu32 " is not a power of two from 512 "
                      "to %u", s->path, s->cfg.blk_size,
                      BLOCK_MAX_REQUEST_ALIGN);
            return false;
        }
        s->blk_size = s->cfg.blk_size;
    }
    if (s->cfg.capacity > (uint64_t)BLOCK_MAX_OFFSET / VIRTIO_BLK_SECTOR_SIZE) {
        error_set(errp, STRATA_ERROR_IO, EINVAL, "'%s': capacity %" PRIu64
                  " sectors is not usable", s->path, s->cfg.capacity);
        return false;
    }
    s->size_max = VBVU_DESC_MAX;
    if (vbvu_has(s, VIRTIO_BLK_F_SIZE_MAX) && s->cfg.size_max) {
        s->size_max = s->cfg.size_max;
    }
    s->seg_max = VBVU_MAX_SEGS;
    if (vbvu_has(s, VIRTIO_BLK_F_SEG_MAX) && s->cfg.seg_max) {
        s->seg_max = MIN(s->cfg.seg_max, VBVU_MAX_SEGS);
    }
    /* A request of max_transfer bytes split at size_max takes at most
     * max_iov + max_transfer / size_max descriptors; keep that within
     * seg_max, shrinking the transfer when seg_max is small. */
    s->max_transfer = VBVU_MAX_TRANSFER;
    while (s->max_transfer > s->blk_size &&
           (uint64_t)s->max_transfer / s->size_max + 1 > s->seg_max / 2) {
        s->max_transfer /= 2;
    }
    s->max_transfer = MAX(ROUND_DOWN(s->max_transfer, (int64_t)s->blk_size),
                          (int64_t)s->blk_size);
    if ((uint64_t)s->max_transfer > s->size_max * s->seg_max ||
        s->size_max < VBVU_PAGE) {
        error_set(errp, STRATA_ERROR_IO, EINVAL, "'%s': the back end's "
                  "size_max %" PRIu64 " and seg_max %u are too small",
                  s->path, s->size_max, s->seg_max);
        return false;
    }
    s->max_iov = (int)(s->seg_max -
                       (uint64_t)s->max_transfer / s->size_max - 1);
    if (s->max_iov < 1) {
        s->max_iov = 1;
    }
    return true;
}

static bool vbvu_negotiate(VbvuState *s, StrataError **errp)
{
    const uint64_t want =
        (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_INDIRECT_DESC) |
        (1ull << VIRTIO_RING_F_EVENT_IDX) |
        (1ull << VHOST_USER_F_PROTOCOL_FEATURES) |
        (1ull << VIRTIO_BLK_F_SIZE_MAX) | (1ull << VIRTIO_BLK_F_SEG_MAX) |
        (1ull << VIRTIO_BLK_F_RO) | (1ull << VIRTIO_BLK_F_BLK_SIZE) |
        (1ull << VIRTIO_BLK_F_FLUSH) | (1ull << VIRTIO_BLK_F_TOPOLOGY) |
        (1ull << VIRTIO_BLK_F_MQ) | (1ull << VIRTIO_BLK_F_DISCARD) |
        (1ull << VIRTIO_BLK_F_WRITE_ZEROES);
    const uint64_t want_protocol =
        (1ull << VHOST_USER_PROTOCOL_F_MQ) |
        (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) |
        (1ull << VHOST_USER_PROTOCOL_F_CONFIG);
    int r = vuf_negotiate(&s->fe, want, want_protocol);

    if (r < 0) {
        error_set(errp, STRATA_ERROR_IO, -r, "'%s': feature negotiation "
                  "failed: %s", s->path, g_strerror(-r));
        return false;
    }
    s->features = s->fe.features;
    const struct { int bit; const char *name; } need[] = {
        { VIRTIO_F_VERSION_1, "VIRTIO_F_VERSION_1" },
        { VIRTIO_RING_F_INDIRECT_DESC, "VIRTIO_RING_F_INDIRECT_DESC" },
        { VHOST_USER_F_PROTOCOL_FEATURES, "VHOST_USER_F_PROTOCOL_FEATURES" },
    };
    for (unsigned i = 0; i < G_N_ELEMENTS(need); i++) {
        if (!vbvu_has(s, need[i].bit)) {
            error_set(errp, STRATA_ERROR_IO, ENOTSUP, "'%s': the "
                      "back end does not offer %s", s->path, need[i].name);
            return false;
        }
    }
    if (!(s->fe.protocol_features & (1ull << VHOST_USER_PROTOCOL_F_CONFIG))) {
        error_set(errp, STRATA_ERROR_IO, ENOTSUP, "'%s': the back "
                  "end does not offer VHOST_USER_PROTOCOL_F_CONFIG", s->path);
        return false;
    }
    if (s->num_queues > 1) {
        uint64_t qn = 1;
        if ((s->fe.protocol_features & (1ull << VHOST_USER_PROTOCOL_F_MQ)) &&
            vuf_get_u64(&s->fe, VHOST_USER_GET_QUEUE_NUM, &qn) < 0) {
            qn = 1;
        }
        if (qn < s->num_queues) {
            error_set_option(errp, "num-queues: the back end '%s' has %" PRIu64
                             " queue%s, %u requested", s->path, qn,
                             qn == 1 ? "" : "s", s->num_queues);
            return false;
        }
    }
    return true;
}

/* Lay out the pool region: per queue its rings (vuf_start_queue), slot
 * areas and indirect tables; then the bounce pool. */
static bool vbvu_setup_memory(VbvuState *s, StrataError **errp)
{
    uint64_t table_bytes = sizeof(VringDesc) * (s->seg_max + 2);
    /* Every allocation rounded up to 64 bytes covers the alignments. */
    uint64_t per_queue = ROUND_UP(vring_desc_size(s->queue_size), 64) +
                         ROUND_UP(vring_avail_size(s->queue_size), 64) +
                         ROUND_UP(vring_used_size(s->queue_size), 64) +
                         (uint64_t)s->queue_size *
                         (VBVU_SLOT_HDR + ROUND_UP(table_bytes, 64));
    uint64_t size = ROUND_UP(per_queue * s->num_queues + VBVU_POOL_BYTES +
                             VBVU_PAGE, (uint64_t)VBVU_PAGE);
    int r = vuf_alloc_memory(&s->fe, size, 1, VBVU_GPA_BASE);

    if (r < 0) {
        error_set(errp, STRATA_ERROR_IO, -r, "'%s': cannot create the "
                  "shared memory (%" PRIu64 " bytes): %s", s->path, size,
                  g_strerror(-r));
        return false;
    }
    /* The pool first, by hand: vuf_alloc() clears what it hands out and
     * would touch every page of it (a new memfd reads zeroes anyway). */
    s->pool = s->fe.regions[0].host;
    s->pool_gpa = s->fe.regions[0].gpa;
    s->fe.alloc_off = VBVU_POOL_BYTES;
    s->pool_pages = (unsigned)(VBVU_POOL_BYTES / VBVU_PAGE);
    s->zc_next_gpa = ROUND_UP(VBVU_GPA_BASE + size, VBVU_ZC_GPA_ALIGN);
    s->pool_map = g_new0(uint64_t, DIV_ROUND_UP(s->pool_pages, 64));
    for (unsigned i = 0; i < s->num_queues; i++) {
        VbvuQueue *q = &s->queue[i];
        q->s = s;
        q->index = i;
        q->slots = g_new0(VbvuSlot, s->queue_size);
        q->free = g_new(uint16_t, s->queue_size);
        for (unsigned j = 0; j < s->queue_size; j++) {
            VbvuSlot *slot = &q->slots[j];
            slot->area = vuf_alloc(&s->fe, VBVU_SLOT_HDR, 64, &slot->area_gpa);
            slot->table = vuf_alloc(&s->fe, table_bytes, 16, &slot->table_gpa);
            q->free[j] = (uint16_t)(s->queue_size - 1 - j);
        }
        q->nfree = s->queue_size;
    }
    VbvuQueue *last = &s->queue[s->num_queues - 1];
    if (!last->slots[s->queue_size - 1].table) {
        error_setg(errp, "'%s': the shared memory layout does not fit",
                   s->path);
        return false;
    }
    return true;
}

static bool vbvu_start_queues(VbvuState *s, StrataError **errp)
{
    for (unsigned i = 0; i < s->num_queues; i++) {
        int r = vuf_start_queue(&s->fe, i, s->queue_size);
        if (r < 0) {
            error_set(errp, STRATA_ERROR_IO, -r, "'%s': cannot start queue "
                      "%u: %s", s->path, i, g_strerror(-r));
            return false;
        }
        VufQueue *vq = &s->fe.queues[i];
        /* Descriptor j is slot j's for good (the header comment). */
        for (unsigned j = 0; j < s->queue_size; j++) {
            vq->desc[j] = (VringDesc){ .addr = s->queue[i].slots[j].table_gpa,
                                       .flags = VRING_DESC_F_INDIRECT };
        }
        if (vq->event_idx) {
            vq->avail->ring[vq->num] = 0;
        }
        loop_set_fd_handler(s->loop, vq->call_fd, vbvu_on_call, NULL,
                            &s->queue[i]);
        vbvu_polling(&s->queue[i], true);
    }
    return true;
}

static bool vbvu_parse_options(VbvuState *s, OptNode *opts, StrataError **errp)
{
    const char *path;
    int64_t nq, qs;

    if (!opts_require_str(opts, "path", &path, errp) ||
        !opts_get_int(opts, "num-queues", 1, &nq, errp) ||
        !opts_get_int(opts, "queue-size", VBVU_DEFAULT_QUEUE_SIZE, &qs,
                      errp)) {
        return false;
    }
    /* The schema bounds these; checked again for callers that bypass it. */
    if (nq < 1 || nq > VBVU_MAX_QUEUES) {
        error_set_option(errp, "num-queues: %" PRId64 " is not from 1 to %d",
                         nq, VBVU_MAX_QUEUES);
        return false;
    }
    if (qs < 4 || qs > VQ_MAX_SIZE || !is_power_of_2((uint64_t)qs)) {
        error_set_option(errp, "queue-size: %" PRId64 " is not a power of "
                         "two from 4 to %d", qs, VQ_MAX_SIZE);
        return false;
    }
    s->path = g_strdup(path);
    s->num_queues = (unsigned)nq;
    s->queue_size = (unsigned)qs;
    return true;
}

static void vbvu_close(StrataNode *node);

static bool vbvu_open(StrataNode *node, OptNode *opts, StrataError **errp)
{
    VbvuState *s = node->opaque;
    int fd;

    s->node = node;
    s->loop = node->ctx->loop;
    co_queue_init(&s->slot_waiters);
    co_queue_init(&s->pool_waiters);
    co_queue_init(&s->drain_waiters);
    vuf_init(&s->fe, -1, NULL, NULL);
    if (!vbvu_parse_options(s, opts, errp)) {
        goto fail;
    }
    fd = vbvu_connect_socket(s->path, errp);
    if (fd < 0) {
        goto fail;
    }
    s->fe.fd = fd;
    if (!vbvu_negotiate(s, errp) || !vbvu_read_config(s, errp)) {
        goto fail;
    }
    if (vbvu_has(s, VIRTIO_BLK_F_RO) && !node->read_only) {
        if (!node->auto_read_only) {
            error_set(errp, STRATA_ERROR_PERMISSION, EACCES, "'%s': the "
                      "vhost-user-blk device is read-only", s->path);
            goto fail;
        }
        node->read_only = true;
    }
    if (!vbvu_setup_memory(s, errp)) {
        goto fail;
    }
    int r = vuf_set_mem_table(&s->fe);
    if (r < 0) {
        error_set(errp, STRATA_ERROR_IO, -r, "'%s': SET_MEM_TABLE failed: %s",
                  s->path, g_strerror(-r));
        goto fail;
    }
    if (!vbvu_start_queues(s, errp)) {
        goto fail;
    }
    s->connected = true;
    loop_set_fd_handler(s->loop, s->fe.fd, vbvu_on_socket, NULL, s);
    node->supports_fua = false;
    node->total_bytes = vbvu_get_length(node);
    return true;

fail:
    vbvu_close(node);
    return false;
}

static void vbvu_close(StrataNode *node)
{
    VbvuState *s = node->opaque;

    if (s->fe.fd >= 0) {
        loop_set_fd_handler(s->loop, s->fe.fd, NULL, NULL, NULL);
    }
    for (unsigned i = 0; i < s->fe.nqueues; i++) {
        if (s->fe.queues[i].call_fd >= 0) {
            loop_set_fd_handler(s->loop, s->fe.queues[i].call_fd, NULL, NULL,
                                NULL);
        }
        vbvu_polling(&s->queue[i], false);
    }
    s->connected = false;
    /* Closing the socket stops the back end's rings; then the memory
     * goes. */
    vuf_cleanup(&s->fe);
    for (unsigned i = 0; i < VBVU_MAX_QUEUES; i++) {
        g_clear_pointer(&s->queue[i].slots, g_free);
        g_clear_pointer(&s->queue[i].free, g_free);
    }
    g_clear_pointer(&s->pool_map, g_free);
    g_clear_pointer(&s->path, g_free);
    g_clear_pointer(&s->dead_reason, g_free);
}

static bool vbvu_reopen_prepare(ReopenState *rs, StrataError **errp)
{
    VbvuState *s = rs->node->opaque;

    if (!rs->read_only && vbvu_has(s, VIRTIO_BLK_F_RO)) {
        error_set(errp, STRATA_ERROR_PERMISSION, EACCES, "'%s': the "
                  "vhost-user-blk device is read-only", s->path);
        return false;
    }
    return true;
}

static void vbvu_dump_info(StrataNode *node, GString *out)
{
    VbvuState *s = node->opaque;

    g_string_append_printf(out, "virtio-blk-vhost-user: %s, %s, %u queue%s "
                           "of %u, blk_size %" PRIu32 ", size_max %" PRIu64
                           ", seg_max %u, features 0x%" PRIx64 "%s%s%s%s\n",
                           s->path, s->connected ? "connected"
                           : s->dead_reason ? s->dead_reason : "closed",
                           s->num_queues, s->num_queues == 1 ? "" : "s",
                           s->queue_size, s->blk_size, s->size_max,
                           s->seg_max, s->features,
                           vbvu_has(s, VIRTIO_BLK_F_FLUSH) ? " flush" : "",
                           vbvu_has(s, VIRTIO_BLK_F_DISCARD) ? " discard" : "",
                           vbvu_has(s, VIRTIO_BLK_F_WRITE_ZEROES)
                           ? " write-zeroes" : "",
                           vbvu_has(s, VIRTIO_BLK_F_RO) ? " ro" : "");
    g_string_append_printf(out, "virtio-blk-vhost-user: %" PRIu64 " requests, "
                           "%" PRIu64 " zero-copy, %" PRIu64 " bounced (%"
                           PRIu64 " bytes), %d shared embedder region%s, %"
                           PRIu64 " kicks, %" PRIu64 " calls\n", s->reqs,
                           s->zero_copy, s->bounced, s->bounced_bytes, s->nzc,
                           s->nzc == 1 ? "" : "s", s->kicks, s->calls);
    for (unsigned i = 0; s->num_queues > 1 && i < s->num_queues; i++) {
        g_string_append_printf(out, "virtio-blk-vhost-user: queue %u: %" PRIu64
                               " requests\n", i, s->queue[i].reqs);
    }
}

const BlockDriver bdrv_virtio_blk_vhost_user = {
    .name = "virtio-blk-vhost-user",
    .single_queue = true,
    .instance_size = sizeof(VbvuState),
    .open = vbvu_open,
    .close = vbvu_close,
    .co_preadv = vbvu_co_preadv,
    .co_pwritev = vbvu_co_pwritev,
    .co_pwrite_zeroes = vbvu_co_pwrite_zeroes,
    .co_pdiscard = vbvu_co_pdiscard,
    .co_flush = vbvu_co_flush,
    .get_length = vbvu_get_length,
    .refresh_limits = vbvu_refresh_limits,
    .reopen_prepare = vbvu_reopen_prepare,
    .dump_info = vbvu_dump_info,
};
