/*
 * Minimal vhost-user front end (SPDX-License-Identifier: MIT).  See
 * vu-frontend.h.
 */
#include "block/virtio/vu-frontend.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>
#include <glib.h>

#include "util/loop.h"

#define VUF_DEFAULT_TIMEOUT_MS 10000

void vuf_init(VuFrontend *fe, int fd, VuPumpFunc *pump, void *opaque)
{
    memset(fe, 0, sizeof(*fe));
    fe->fd = fd;
    fe->pump = pump;
    fe->pump_opaque = opaque;
    fe->timeout_ms = VUF_DEFAULT_TIMEOUT_MS;
    fe->backend_fd = -1;
}

void vuf_disconnect(VuFrontend *fe)
{
    if (fe->fd >= 0) {
        close(fe->fd);
        fe->fd = -1;
    }
}

void vuf_reconnect(VuFrontend *fe, int fd)
{
    vuf_disconnect(fe);
    fe->fd = fd;
    fe->features = 0;
    fe->protocol_features = 0;
}

void vuf_cleanup(VuFrontend *fe)
{
    vuf_disconnect(fe);
    for (unsigned i = 0; i < fe->nqueues; i++) {
        VufQueue *q = &fe->queues[i];
        int *fds[] = { &q->kick_fd, &q->call_fd, &q->err_fd };
        for (unsigned j = 0; j < G_N_ELEMENTS(fds); j++) {
            if (*fds[j] >= 0) {
                close(*fds[j]);
            }
        }
        g_free(q->free_stack);
        g_free(q->chain_len);
    }
    g_free(fe->queues);
    fe->queues = NULL;
    fe->nqueues = 0;
    for (int i = 0; i < fe->nregions; i++) {
        if (!fe->regions[i].borrowed) {
            munmap(fe->regions[i].host, fe->regions[i].size);
        }
        close(fe->regions[i].fd);
    }
    fe->nregions = 0;
    if (fe->backend_fd >= 0) {
        close(fe->backend_fd);
        fe->backend_fd = -1;
    }
}

int vuf_alloc_memory(VuFrontend *fe, uint64_t size, int nregions,
                     uint64_t gpa_base)
{
    if (nregions < 1 || nregions > VHOST_USER_MEM_REGIONS ||
        size % ((uint64_t)nregions * 4096)) {
        return -EINVAL;
    }
    uint64_t each = size / nregions;
    for (int i = 0; i < nregions; i++) {
        VufRegion *r = &fe->regions[fe->nregions];
        r->fd = memfd_create("vuf-guest-ram", MFD_CLOEXEC);
        if (r->fd < 0) {
            return -errno;
        }
        if (ftruncate(r->fd, (off_t)each) < 0) {
            close(r->fd);
            return -errno;
        }
        r->host = mmap(NULL, each, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd,
                       0);
        if (r->host == MAP_FAILED) {
            close(r->fd);
            return -errno;
        }
        r->gpa = gpa_base + each * i;
        r->size = each;
        fe->nregions++;
    }
    return 0;
}

int vuf_add_region(VuFrontend *fe, int take_fd, void *host, uint64_t size,
                   uint64_t mmap_offset, uint64_t gpa)
{
    if (fe->nregions >= VHOST_USER_MEM_REGIONS) {
        return -ENOSPC;
    }
    fe->regions[fe->nregions++] = (VufRegion){
        .fd = take_fd, .host = host, .gpa = gpa, .size = size,
        .mmap_offset = mmap_offset, .borrowed = true,
    };
    return 0;
}

void *vuf_gpa_ptr(VuFrontend *fe, uint64_t gpa, uint64_t len)
{
    for (int i = 0; i < fe->nregions; i++) {
        VufRegion *r = &fe->regions[i];
        if (gpa >= r->gpa && gpa - r->gpa <= r->size &&
            len <= r->size - (gpa - r->gpa)) {
            return r->host + (gpa - r->gpa);
        }
    }
    return NULL;
}

void *vuf_alloc(VuFrontend *fe, uint64_t size, uint64_t align, uint64_t *gpa)
{
    uint64_t base = 0;

    /* Allocations do not straddle regions (rings must be contiguous). */
    for (int i = 0; i < fe->nregions; i++) {
        VufRegion *r = &fe->regions[i];
        uint64_t end = base + r->size;
        if (r->borrowed) {
            continue;
        }
        if (fe->alloc_off < end) {
            uint64_t off = MAX(fe->alloc_off, base);
            off = (off + align - 1) & ~(align - 1);
            if (off + size <= end) {
                fe->alloc_off = off + size;
                *gpa = r->gpa + (off - base);
                memset(r->host + (off - base), 0, size);
                return r->host + (off - base);
            }
            fe->alloc_off = end;
        }
        base = end;
    }
    return NULL;
}

/* Wait for @fd to become readable, pumping the in-process back end. */
static int vuf_wait_readable(VuFrontend *fe, int fd, int64_t deadline)
{
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 0) > 0) {
            return 0;
        }
        if (clock_ns() > deadline) {
            return -ETIMEDOUT;
        }
        if (fe->pump) {
            fe->pump(fe->pump_opaque);
            if (poll(&p, 1, 0) == 0) {
                poll(&p, 1, 1);
            }
        } else {
            poll(&p, 1, 10);
        }
    }
}

int vuf_request(VuFrontend *fe, uint32_t req, const void *payload,
                uint32_t size, const int *fds, int nfds, VhostUserMsg *reply,
                bool ack)
{
    VhostUserHeader h = { .request = req, .flags = VHOST_USER_VERSION,
                          .size = size };
    bool want_ack = ack && (fe->protocol_features &
                            (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK));
    VhostUserMsg local;
    int64_t deadline = clock_ns() + (int64_t)fe->timeout_ms * 1000000;

    if (fe->fd < 0) {
        return -ENOTCONN;
    }
    if (want_ack) {
        h.flags |= VHOST_USER_NEED_REPLY;
    }
    int r = vu_msg_send(fe->fd, &h, payload, fds, nfds, fe->timeout_ms);
    if (r < 0 || (!reply && !want_ack)) {
        return r;
    }
    if (!reply) {
        reply = &local;
    }
    VuReader rd;
    vu_reader_init(&rd);
    for (;;) {
        r = vu_reader_read(&rd, fe->fd, reply);
        if (r > 0) {
            break;
        }
        if (r == 0) {
            r = vuf_wait_readable(fe, fe->fd, deadline);
        }
        if (r < 0) {
            vu_reader_cleanup(&rd);
            return r;
        }
    }
    if (reply->hdr.request != req || !(reply->hdr.flags & VHOST_USER_REPLY)) {
        vu_msg_close_fds(reply);
        return -EPROTO;
    }
    if (reply == &local) {
        vu_msg_close_fds(&local);
        if (local.hdr.size != 8) {
            return -EPROTO;
        }
        return local.payload.u64 ? -EIO : 0;
    }
    return 0;
}

int vuf_get_u64(VuFrontend *fe, uint32_t req, uint64_t *out)
{
    VhostUserMsg reply;
    int r = vuf_request(fe, req, NULL, 0, NULL, 0, &reply, false);
    if (r < 0) {
        return r;
    }
    vu_msg_close_fds(&reply);
    if (reply.hdr.size != 8) {
        return -EPROTO;
    }
    *out = reply.payload.u64;
    return 0;
}

int vuf_negotiate(VuFrontend *fe, uint64_t want, uint64_t want_protocol)
{
    uint64_t f, pf;
    int r = vuf_get_u64(fe, VHOST_USER_GET_FEATURES, &f);
    if (r < 0) {
        return r;
    }
    fe->features = f & want;
    if (fe->features & (1ull << VHOST_USER_F_PROTOCOL_FEATURES)) {
        r = vuf_get_u64(fe, VHOST_USER_GET_PROTOCOL_FEATURES, &pf);
        if (r < 0) {
            return r;
        }
        pf &= want_protocol;
        r = vuf_request(fe, VHOST_USER_SET_PROTOCOL_FEATURES, &pf, 8, NULL, 0,
                        NULL, false);
        if (r < 0) {
            return r;
        }
        fe->protocol_features = pf;
    }
    r = vuf_request(fe, VHOST_USER_SET_OWNER, NULL, 0, NULL, 0, NULL, false);
    if (r < 0) {
        return r;
    }
    return vuf_request(fe, VHOST_USER_SET_FEATURES, &fe->features, 8, NULL, 0,
                       NULL, true);
}

int vuf_set_mem_table(VuFrontend *fe)
{
    VhostUserMemory m = { .nregions = (uint32_t)fe->nregions };
    int fds[VHOST_USER_MEM_REGIONS];

    for (int i = 0; i < fe->nregions; i++) {
        m.regions[i] = (VhostUserMemRegion){
            .guest_phys_addr = fe->regions[i].gpa,
            .memory_size = fe->regions[i].size,
            .userspace_addr = (uintptr_t)fe->regions[i].host,
            .mmap_offset = fe->regions[i].mmap_offset,
        };
        fds[i] = fe->regions[i].fd;
    }
    return vuf_request(fe, VHOST_USER_SET_MEM_TABLE, &m,
                       8 + sizeof(VhostUserMemRegion) * fe->nregions, fds,
                       fe->nregions, NULL, true);
}

int vuf_get_config(VuFrontend *fe, uint32_t offset, void *buf, uint32_t size)
{
    VhostUserConfig c = { .offset = offset, .size = size };
    VhostUserMsg reply;

    if (size > VHOST_USER_CONFIG_MAX) {
        return -EINVAL;
    }
    int r = vuf_request(fe, VHOST_USER_GET_CONFIG, &c,
                        VHOST_USER_CONFIG_HDR_SIZE + size, NULL, 0, &reply,
                        false);
    if (r < 0) {
        return r;
    }
    vu_msg_close_fds(&reply);
    if (reply.hdr.size != VHOST_USER_CONFIG_HDR_SIZE + size) {
        return -EPROTO;
    }
    memcpy(buf, reply.payload.config.region, size);
    return 0;
}

static VufQueue *vuf_queue(VuFrontend *fe, unsigned index)
{
    if (index >= fe->nqueues) {
        fe->queues = g_renew(VufQueue, fe->queues, index + 1);
        for (unsigned i = fe->nqueues; i <= index; i++) {
            memset(&fe->queues[i], 0, sizeof(VufQueue));
            fe->queues[i].kick_fd = -1;
            fe->queues[i].call_fd = -1;
            fe->queues[i].err_fd = -1;
        }
        fe->nqueues = index + 1;
    }
    return &fe->queues[index];
}

int vuf_start_queue(VuFrontend *fe, unsigned index, unsigned num)
{
    VufQueue *q = vuf_queue(fe, index);
    uint64_t dgpa, agpa, ugpa;

    q->num = num;
    q->desc = vuf_alloc(fe, vring_desc_size(num), 16, &dgpa);
    q->avail = vuf_alloc(fe, vring_avail_size(num), 2, &agpa);
    q->used = vuf_alloc(fe, vring_used_size(num), 4, &ugpa);
    if (!q->desc || !q->avail || !q->used) {
        return -ENOMEM;
    }
    q->avail_idx = q->used_seen = 0;
    g_free(q->free_stack);
    g_free(q->chain_len);
    q->free_stack = g_new(uint16_t, num);
    q->chain_len = g_new0(uint16_t, num);
    q->nfree = num;
    for (unsigned i = 0; i < num; i++) {
        q->free_stack[i] = (uint16_t)(num - 1 - i);
    }
    return vuf_send_queue(fe, index, 0);
}

int vuf_send_queue(VuFrontend *fe, unsigned index, uint16_t base)
{
    VufQueue *q = &fe->queues[index];
    int r;

    q->event_idx = fe->features & (1ull << VIRTIO_RING_F_EVENT_IDX);
    VhostUserVringState st = { index, q->num };
    r = vuf_request(fe, VHOST_USER_SET_VRING_NUM, &st, sizeof(st), NULL, 0,
                    NULL, true);
    st.num = base;
    if (r == 0) {
        r = vuf_request(fe, VHOST_USER_SET_VRING_BASE, &st, sizeof(st), NULL,
                        0, NULL, true);
    }
    /* The back end sees addresses in our (the front end's) address
     * space: the host pointers. */
    VhostUserVringAddr a = {
        .index = index,
        .desc_user_addr = (uintptr_t)q->desc,
        .used_user_addr = (uintptr_t)q->used,
        .avail_user_addr = (uintptr_t)q->avail,
    };
    if (r == 0) {
        r = vuf_request(fe, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0,
                        NULL, true);
    }
    int *fds[] = { &q->call_fd, &q->err_fd, &q->kick_fd };
    const uint32_t reqs[] = { VHOST_USER_SET_VRING_CALL,
                              VHOST_USER_SET_VRING_ERR,
                              VHOST_USER_SET_VRING_KICK };
    for (unsigned i = 0; r == 0 && i < G_N_ELEMENTS(fds); i++) {
        if (*fds[i] < 0) {
            *fds[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        }
        if (*fds[i] < 0) {
            return -errno;
        }
        uint64_t v = index;
        r = vuf_request(fe, reqs[i], &v, 8, fds[i], 1, NULL, true);
    }
    if (r == 0 && (fe->features & (1ull << VHOST_USER_F_PROTOCOL_FEATURES))) {
        st.num = 1;
        r = vuf_request(fe, VHOST_USER_SET_VRING_ENABLE, &st, sizeof(st),
                        NULL, 0, NULL, true);
    }
    return r;
}

int vuf_stop_queue(VuFrontend *fe, unsigned index, uint16_t *base)
{
    VhostUserVringState st = { index, 0 };
    VhostUserMsg reply;
    int r = vuf_request(fe, VHOST_USER_GET_VRING_BASE, &st, sizeof(st), NULL,
                        0, &reply, false);
    if (r < 0) {
        return r;
    }
    vu_msg_close_fds(&reply);
    if (reply.hdr.size != sizeof(st)) {
        return -EPROTO;
    }
    *base = (uint16_t)reply.payload.state.num;
    return 0;
}

void vuf_push_avail(VuFrontend *fe, unsigned index, uint16_t head)
{
    VufQueue *q = &fe->queues[index];
    uint64_t one = 1;

    q->avail->ring[q->avail_idx % q->num] = head;
    q->avail_idx++;
    __atomic_store_n(&q->avail->idx, q->avail_idx, __ATOMIC_RELEASE);
    if (write(q->kick_fd, &one, sizeof(one)) < 0) {
        /* An eventfd write fails only on overflow. */
    }
}

int vuf_submit(VuFrontend *fe, unsigned index, const VufBuf *bufs, int n,
               bool indirect, uint16_t *head)
{
    VufQueue *q = &fe->queues[index];
    int need = indirect ? 1 : n;

    if (n < 1 || (unsigned)need > q->nfree) {
        return -ENOSPC;
    }
    VringDesc *table = q->desc;
    uint16_t idx[VQ_MAX_CHAIN];
    if (indirect) {
        uint64_t tgpa;
        if (n > VQ_MAX_CHAIN) {
            return -E2BIG;
        }
        table = vuf_alloc(fe, sizeof(VringDesc) * n, 16, &tgpa);
        if (!table) {
            return -ENOMEM;
        }
        uint16_t h = q->free_stack[--q->nfree];
        q->desc[h] = (VringDesc){ .addr = tgpa,
                                  .len = (uint32_t)(sizeof(VringDesc) * n),
                                  .flags = VRING_DESC_F_INDIRECT };
        for (int i = 0; i < n; i++) {
            idx[i] = (uint16_t)i;
        }
        q->chain_len[h] = 1;
        *head = h;
    } else {
        for (int i = 0; i < n; i++) {
            idx[i] = q->free_stack[--q->nfree];
        }
        q->chain_len[idx[0]] = (uint16_t)n;
        *head = idx[0];
    }
    for (int i = 0; i < n; i++) {
        table[idx[i]] = (VringDesc){
            .addr = bufs[i].gpa, .len = bufs[i].len,
            .flags = (uint16_t)((bufs[i].write ? VRING_DESC_F_WRITE : 0) |
                                (i + 1 < n ? VRING_DESC_F_NEXT : 0)),
            .next = i + 1 < n ? idx[i + 1] : 0,
        };
    }
    vuf_push_avail(fe, index, *head);
    return 0;
}

int vuf_wait_used(VuFrontend *fe, unsigned index, uint32_t *id, uint32_t *len)
{
    VufQueue *q = &fe->queues[index];
    int64_t deadline = clock_ns() + (int64_t)fe->timeout_ms * 1000000;

    while (__atomic_load_n(&q->used->idx, __ATOMIC_ACQUIRE) == q->used_seen) {
        if (clock_ns() > deadline) {
            return -ETIMEDOUT;
        }
        if (fe->pump) {
            fe->pump(fe->pump_opaque);
        } else {
            struct pollfd p = { .fd = q->call_fd, .events = POLLIN };
            poll(&p, 1, 10);
        }
    }
    VringUsedElem *e = &q->used->ring[q->used_seen % q->num];
    *id = e->id;
    *len = e->len;
    q->used_seen++;
    if (q->event_idx) {
        /* used_event: interrupt at the next element. */
        q->avail->ring[q->num] = q->used_seen;
    }
    /* Give the descriptors back (the test's own chains only). */
    if (*id < q->num) {
        uint16_t h = (uint16_t)*id;
        uint16_t cnt = q->chain_len[h];
        uint16_t d = h;
        for (uint16_t i = 0; i < cnt && q->nfree < q->num; i++) {
            q->free_stack[q->nfree++] = d;
            d = q->desc[d].next;
        }
        q->chain_len[h] = 0;
    }
    return 0;
}

bool vuf_queue_error(VuFrontend *fe, unsigned index)
{
    uint64_t v;
    return index < fe->nqueues && fe->queues[index].err_fd >= 0 &&
           read(fe->queues[index].err_fd, &v, sizeof(v)) == sizeof(v);
}
