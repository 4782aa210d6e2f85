/*
 * A minimal vhost-user front end: the VMM's side of the protocol, for the
 * unit tests and fuzzers (in process, against the export) and the base of
 * the vhost-user client driver
 * SPDX-License-Identifier: MIT
 *
 * It owns a "guest memory" (memfd regions at chosen guest-physical
 * addresses), lays rings and buffers out in it with a bump allocator,
 * negotiates, and drives split virtqueues: build a chain (direct or
 * indirect), make it available, kick, wait for the used element.
 *
 * Waiting: when the back end runs in the same thread (tests), every wait
 * calls @pump (e.g. one non-blocking iteration of the back end's loop)
 * between polls of the socket or the ring; with pump NULL it just polls.
 *
 * Errors: 0 / -errno everywhere (-ETIMEDOUT when the back end did not
 * answer within the timeout, -ECONNRESET when it closed the socket).
 */
#ifndef STRATA_BLOCK_VIRTIO_VU_FRONTEND_H
#define STRATA_BLOCK_VIRTIO_VU_FRONTEND_H

#include <stdbool.h>
#include <stdint.h>

#include "block/virtio/vhost-user.h"
#include "block/virtio/virtqueue.h"

typedef void VuPumpFunc(void *opaque);

typedef struct VufRegion {
    int fd;
    uint8_t *host;              /* mapped here (also the "uva") */
    uint64_t gpa;
    uint64_t size;
    uint64_t mmap_offset;       /* of @host in @fd */
    bool borrowed;              /* someone else's mapping (vuf_add_region):
                                   never allocated from nor unmapped */
} VufRegion;

typedef struct VufQueue {
    unsigned num;
    VringDesc *desc;
    VringAvail *avail;
    VringUsed *used;
    int kick_fd, call_fd, err_fd;
    uint16_t avail_idx;         /* next avail slot to fill */
    uint16_t used_seen;         /* used entries consumed */
    uint16_t *free_stack;       /* free descriptor indices */
    unsigned nfree;
    uint16_t *chain_len;        /* per head: descriptors it took */
    bool event_idx;
} VufQueue;

typedef struct VuFrontend {
    int fd;
    VuPumpFunc *pump;
    void *pump_opaque;
    int timeout_ms;
    uint64_t features;          /* acked */
    uint64_t protocol_features; /* acked */
    int nregions;
    VufRegion regions[VHOST_USER_MEM_REGIONS];
    uint64_t alloc_off;         /* bump allocator, bytes into the memory */
    unsigned nqueues;
    VufQueue *queues;
    int backend_fd;             /* our end of SET_BACKEND_REQ_FD, or -1 */
} VuFrontend;

/* Take the connected socket @fd. */
void vuf_init(VuFrontend *fe, int fd, VuPumpFunc *pump, void *opaque);
/* Close the socket, the eventfds and unmap the memory. */
void vuf_cleanup(VuFrontend *fe);
/* Close only the socket (a front end that dies, or a back end that
 * restarts: vuf_reconnect() then takes a new socket, keeping memory and
 * rings). */
void vuf_disconnect(VuFrontend *fe);
void vuf_reconnect(VuFrontend *fe, int fd);

/* Create @size bytes of guest memory as @nregions memfd regions (sizes
 * multiple of 4096) that are adjacent in guest-physical space from
 * @gpa_base. */
int vuf_alloc_memory(VuFrontend *fe, uint64_t size, int nregions,
                     uint64_t gpa_base);
/* Add memory mapped elsewhere (@host, @size bytes at @mmap_offset of
 * @take_fd, which the front end closes at cleanup) at @gpa, for a later
 * vuf_set_mem_table().  -ENOSPC when the table is full. */
int vuf_add_region(VuFrontend *fe, int take_fd, void *host, uint64_t size,
                   uint64_t mmap_offset, uint64_t gpa);
/* Bump allocation inside guest memory (@align a power of two): the
 * host pointer, *gpa its guest address; NULL when full. */
void *vuf_alloc(VuFrontend *fe, uint64_t size, uint64_t align, uint64_t *gpa);
/* Host pointer of a guest range wholly inside one region, or NULL. */
void *vuf_gpa_ptr(VuFrontend *fe, uint64_t gpa, uint64_t len);

/*
 * Send request @req with @size payload bytes and @nfds fds.  With
 * @reply, wait for the reply into it (its fds are the caller's).  With
 * @ack (and REPLY_ACK acked), set NEED_REPLY and return the back end's
 * verdict: 0, or -EIO for a non-zero ack.
 */
int vuf_request(VuFrontend *fe, uint32_t req, const void *payload,
                uint32_t size, const int *fds, int nfds, VhostUserMsg *reply,
                bool ack);
int vuf_get_u64(VuFrontend *fe, uint32_t req, uint64_t *out);

/* GET/SET_FEATURES and GET/SET_PROTOCOL_FEATURES with what is offered
 * masked by @want / @want_protocol; SET_OWNER. */
int vuf_negotiate(VuFrontend *fe, uint64_t want, uint64_t want_protocol);
/* SET_MEM_TABLE of the regions. */
int vuf_set_mem_table(VuFrontend *fe);
/* GET_CONFIG of [@offset, @offset + @size). */
int vuf_get_config(VuFrontend *fe, uint32_t offset, void *buf, uint32_t size);

/* Lay out queue @index of @num entries in guest memory and start it:
 * SET_VRING_NUM/BASE/ADDR/KICK/CALL/ERR, SET_VRING_ENABLE.  Queues are
 * created on first use (fe->nqueues grows). */
int vuf_start_queue(VuFrontend *fe, unsigned index, unsigned num);
/* (Re)send queue @index's set-up with its existing rings and @base as the
 * avail index (a front end reconnecting to a restarted back end). */
int vuf_send_queue(VuFrontend *fe, unsigned index, uint16_t base);
/* GET_VRING_BASE: the back end's last avail index in *base. */
int vuf_stop_queue(VuFrontend *fe, unsigned index, uint16_t *base);

/* One buffer of a chain: guest address, length, device-writable. */
typedef struct VufBuf {
    uint64_t gpa;
    uint32_t len;
    bool write;
} VufBuf;

/*
 * Write a chain of @n buffers (direct descriptors, or with @indirect one
 * descriptor pointing at a table allocated in guest memory), make it
 * available and kick.  The head in *head.  -ENOSPC when the queue has no
 * free descriptors.
 */
int vuf_submit(VuFrontend *fe, unsigned index, const VufBuf *bufs, int n,
               bool indirect, uint16_t *head);
/* Make @head available as is (descriptors written by the caller) and
 * kick. */
void vuf_push_avail(VuFrontend *fe, unsigned index, uint16_t head);
/* Next used element (waits up to the timeout): 0, -ETIMEDOUT. */
int vuf_wait_used(VuFrontend *fe, unsigned index, uint32_t *id,
                  uint32_t *len);
/* True when the queue's error eventfd was signalled (reads it). */
bool vuf_queue_error(VuFrontend *fe, unsigned index);

#endif
