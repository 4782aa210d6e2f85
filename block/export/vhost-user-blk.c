/*
 * vhost-user-blk export (SPDX-License-Identifier: MIT).  See
 * vhost-user-blk.h and docs/vhost-user-blk.md.
 *
 * Structure.  A VuBlkExport listens; an accepted front end is a VuBlkConn
 * whose messages one coroutine reads and executes in order (it may wait:
 * GET_VRING_BASE waits for the ring's requests).  Each virtqueue is a
 * VuBlkQueue: its kick eventfd's handler pops requests and starts one
 * coroutine per request in the queue's loop; completions write the used
 * ring and a bottom half publishes the batch and signals the call
 * eventfd once.
 *
 * Loops.  The connection's messages are read in the export's loop (the
 * context's).  Each virtqueue runs in a loop of its own choosing: the
 * export's iothread's (iothread=), the listed iothreads' in turn
 * (iothreads=, one virtqueue each: multi-queue), else the export's.  Its
 * kicks, its requests' coroutines and its completions all run there, and
 * nothing but its own loop touches its ring: a message about a virtqueue
 * is executed with the connection's coroutine moved into that virtqueue's
 * loop (vu_enter_queue) and back (vu_leave_queue), and so are the steps
 * of a message that touch every virtqueue (a new memory table, the
 * inflight region, closing).  Each virtqueue holds its own reference to
 * the memory table it reads rings and requests from (q->mem).
 *
 * Lifetime.  A request holds a reference on the memory table its vectors
 * point into (a new SET_MEM_TABLE unmaps the old one only after its last
 * request); the connection is freed only after all of its requests have
 * completed, whatever state the front end left it in.
 */
#include "block/export/vhost-user-blk.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "block/backend-int.h"
#include "block/export/export.h"
#include "block/virtio/vhost-user.h"
#include "block/virtio/virtio-blk.h"
#include "block/virtio/virtqueue.h"
#include "block/virtio/vu-mem.h"
#include "util/coroutine.h"
#include "util/iov.h"
#include "util/loop.h"
#include "util/socket.h"

/* Largest single segment a request may carry (SIZE_MAX) and the largest
 * discard / write-zeroes in sectors.  SeaBIOS computes size_max * seg_max
 * in 32 bits and takes the block count of a request from its low bits:
 * with 1 GiB segments that came out 0 and it looped on empty reads before
 * booting; 64 KiB (Linux's default segment size) keeps the product in
 * range. */
#define VU_BLK_SIZE_MAX         (64u << 10)
#define VU_BLK_MAX_DISCARD      (1u << 22)
/* Wait at most this long for a front end to take a message. */
#define VU_SEND_TIMEOUT_MS      5000

typedef struct VuBlkConn VuBlkConn;

typedef struct VuBlkQueue {
    VuBlkConn *conn;
    Loop *loop;                 /* where everything of this queue runs */
    VuMemTable *mem;            /* the table its ring is mapped from */
    VirtQueue vq;
    int kick_fd, call_fd, err_fd;
    bool started;               /* has a kick fd and mapped rings */
    bool enabled;
    bool broken;                /* corrupt ring: stopped for good */
    unsigned in_flight;
    CoQueue drained;
    LoopBH *flush_bh;
    LoopPoller *poller;         /* while started, in an iothread that polls */
    /* Finished requests kept for the next ones, with their elements
     * (this queue's loop): no allocation per request once warm. */
    struct VuBlkReq *free_reqs;
} VuBlkQueue;

typedef struct VuBlkExport {
    BlockExport *exp;
    Loop *loop;
    int listen_fd;
    char *unlink_path;
    char *serial;
    uint32_t lbs;
    unsigned num_queues;
    VuBlkConn *conn;
    uint64_t capacity;              /* bytes, as last told; atomic */
    VhostUserBlkStats stats;
} VuBlkExport;

typedef enum VuConnState {
    VU_CONN_RUNNING,
    VU_CONN_CLOSING,
} VuConnState;

struct VuBlkConn {
    VuBlkExport *e;
    VuConnState state;          /* atomic: the queues' loops read it */
    int fd;
    int backend_fd;             /* SET_BACKEND_REQ_FD, or -1 */
    VuReader reader;
    Coroutine *read_waiter;
    uint64_t features;          /* acked by SET_FEATURES */
    uint64_t protocol_features;
    VuMemTable *mem;
    void *inflight_base;
    size_t inflight_size;
    uint16_t inflight_queue_size;
    VuBlkQueue *queues;
    uint64_t announced;         /* features last logged */
};

typedef struct VuBlkReq {
    VuBlkQueue *q;
    VuMemTable *mem;
    VqElem *elem;                   /* kept across reuses */
    VirtioBlkReq blk;
    struct VuBlkReq *next_free;
} VuBlkReq;

static VhostUserBlkLogFunc *log_fn;
static const BlockExportDriver vu_export_driver;

static bool is_vhost_user_blk(const BlockExport *exp)
{
    return exp->drv == &vu_export_driver;
}

void vhost_user_blk_set_log(VhostUserBlkLogFunc *fn)
{
    log_fn = fn;
}

static void G_GNUC_PRINTF(2, 3) vu_log(VuBlkExport *e, const char *fmt, ...)
{
    if (!log_fn) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    log_fn(e->exp->id, msg);
}

/* The loop a queue's kicks, requests and completions run in. */
static Loop *vu_queue_loop(VuBlkQueue *q)
{
    return q->loop;
}

/* Move the calling coroutine (the connection's) into @q's loop. */
static void vu_enter_queue(VuBlkQueue *q)
{
    if (loop_current() != q->loop) {
        co_yield_to_loop(q->loop);
    }
}

/* ...and back into the export's loop, where the connection is read. */
static void vu_leave_queue(VuBlkConn *c)
{
    if (loop_current() != c->e->loop) {
        co_yield_to_loop(c->e->loop);
    }
}

static VuConnState conn_state(VuBlkConn *c)
{
    return __atomic_load_n(&c->state, __ATOMIC_ACQUIRE);
}

static uint64_t export_capacity(VuBlkExport *e)
{
    return __atomic_load_n(&e->capacity, __ATOMIC_RELAXED);
}

static uint64_t device_features(VuBlkExport *e)
{
    uint64_t f = (1ull << VIRTIO_F_VERSION_1) |
                 (1ull << VIRTIO_RING_F_INDIRECT_DESC) |
                 (1ull << VIRTIO_RING_F_EVENT_IDX) |
                 (1ull << VHOST_USER_F_PROTOCOL_FEATURES) |
                 (1ull << VIRTIO_BLK_F_SIZE_MAX) |
                 (1ull << VIRTIO_BLK_F_SEG_MAX) |
                 (1ull << VIRTIO_BLK_F_BLK_SIZE) |
                 (1ull << VIRTIO_BLK_F_TOPOLOGY) |
                 (1ull << VIRTIO_BLK_F_FLUSH) |
                 (1ull << VIRTIO_BLK_F_MQ);
    if (e->exp->writable) {
        f |= (1ull << VIRTIO_BLK_F_DISCARD) |
             (1ull << VIRTIO_BLK_F_WRITE_ZEROES);
    } else {
        f |= 1ull << VIRTIO_BLK_F_RO;
    }
    return f;
}

/* No LOG_SHMFD (dirty logging): a migration fails at its start. */
static const uint64_t protocol_features_offered =
    (1ull << VHOST_USER_PROTOCOL_F_MQ) |
    (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK) |
    (1ull << VHOST_USER_PROTOCOL_F_BACKEND_REQ) |
    (1ull << VHOST_USER_PROTOCOL_F_CONFIG) |
    (1ull << VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD);

static void fill_config(VuBlkExport *e, VirtioBlkConfig *cfg)
{
    StrataNode *node = strata_backend_get_root(e->exp->be);
    StrataLimits lim = { 0 };
    if (node) {
        strata_node_get_limits(node, &lim);
    }
    uint32_t pbs = MAX(lim.physical_block_size, lim.request_alignment);
    VirtioBlkGeometry g = {
        .capacity_bytes = e->capacity,
        .logical_block_size = e->lbs,
        .physical_block_size = MAX(pbs, e->lbs),
        .min_io_size = MAX(pbs, e->lbs),
        .opt_io_size = lim.opt_transfer > 0 &&
                       lim.opt_transfer <= (int64_t)UINT32_MAX / 2
                       ? (uint32_t)lim.opt_transfer : 0,
        .seg_max = VQ_MAX_CHAIN - 2,
        .size_max = VU_BLK_SIZE_MAX,
        .num_queues = (uint16_t)e->num_queues,
        .max_discard_sectors = VU_BLK_MAX_DISCARD,
        .max_write_zeroes_sectors = VU_BLK_MAX_DISCARD,
        .writeback = backend_get_write_cache(e->exp->be),
    };
    /* The guest's min/opt I/O sizes must be multiples of its block size. */
    if (g.opt_io_size % e->lbs) {
        g.opt_io_size = 0;
    }
    virtio_blk_fill_config(cfg, &g);
}

/* ---- requests -------------------------------------------------------- */

static void queue_flush_bh(void *opaque)
{
    VuBlkQueue *q = opaque;

    if (vq_flush(&q->vq) && q->call_fd >= 0) {
        uint64_t one = 1;
        if (write(q->call_fd, &one, sizeof(one)) < 0) {
            /* The eventfd counter cannot overflow in practice; a front
             * end that closed it gets no interrupt. */
        }
    }
}

static bool sector_range_ok(VuBlkExport *e, uint64_t sector, uint64_t bytes)
{
    uint64_t off, end;
    uint32_t lbs_sectors = e->lbs / VIRTIO_BLK_SECTOR_SIZE;

    if (sector & (lbs_sectors - 1) || bytes % e->lbs ||
        __builtin_mul_overflow(sector, VIRTIO_BLK_SECTOR_SIZE, &off) ||
        __builtin_add_overflow(off, bytes, &end)) {
        return false;
    }
    return end <= export_capacity(e);
}

static int req_discard_wz(VuBlkExport *e, VirtioBlkReq *r)
{
    VirtioBlkDiscardWz seg;
    bool wz = r->type == VIRTIO_BLK_T_WRITE_ZEROES;
    StrataBackend *be = e->exp->be;

    /* One segment, as max_discard_seg / max_write_zeroes_seg say. */
    if (iov_size(&r->data) != sizeof(seg) ||
        iov_to_buf(&r->data, 0, &seg, sizeof(seg)) != sizeof(seg)) {
        return VIRTIO_BLK_S_UNSUPP;
    }
    uint64_t sector = le64toh(seg.sector);
    uint32_t n = le32toh(seg.num_sectors);
    uint32_t flags = le32toh(seg.flags);
    if (flags & ~(wz ? VIRTIO_BLK_WZ_FLAG_UNMAP : 0u)) {
        return VIRTIO_BLK_S_UNSUPP;
    }
    if (n > VU_BLK_MAX_DISCARD ||
        !sector_range_ok(e, sector, (uint64_t)n * VIRTIO_BLK_SECTOR_SIZE)) {
        return VIRTIO_BLK_S_IOERR;
    }
    int64_t off = (int64_t)sector * VIRTIO_BLK_SECTOR_SIZE;
    int64_t len = (int64_t)n * VIRTIO_BLK_SECTOR_SIZE;
    int ret;
    if (wz) {
        ret = backend_co_pwrite_zeroes(be, off, len,
                                       (flags & VIRTIO_BLK_WZ_FLAG_UNMAP)
                                       ? STRATA_REQ_MAY_UNMAP : 0);
    } else {
        ret = backend_co_pdiscard(be, off, len);
    }
    if (ret < 0) {
        export_io_error(e->exp, true, -ret);
        return VIRTIO_BLK_S_IOERR;
    }
    return VIRTIO_BLK_S_OK;
}

static int req_execute(VuBlkExport *e, VirtioBlkReq *r)
{
    StrataBackend *be = e->exp->be;
    int64_t off = (int64_t)(r->sector * VIRTIO_BLK_SECTOR_SIZE);
    uint64_t bytes = iov_size(&r->data);
    int ret;

    switch (r->type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT: {
        bool is_write = r->type == VIRTIO_BLK_T_OUT;
        if (is_write && !e->exp->writable) {
            return VIRTIO_BLK_S_IOERR;
        }
        if (!sector_range_ok(e, r->sector, bytes)) {
            return VIRTIO_BLK_S_IOERR;
        }
        if (bytes == 0) {
            return VIRTIO_BLK_S_OK;
        }
        ret = is_write
              ? backend_co_pwritev(be, off, (int64_t)bytes, &r->data, 0)
              : backend_co_preadv(be, off, (int64_t)bytes, &r->data, 0);
        if (ret < 0) {
            export_io_error(e->exp, is_write, -ret);
            return VIRTIO_BLK_S_IOERR;
        }
        return VIRTIO_BLK_S_OK;
    }
    case VIRTIO_BLK_T_FLUSH:
        ret = backend_co_flush(be);
        if (ret < 0) {
            export_io_error(e->exp, true, -ret);
            return VIRTIO_BLK_S_IOERR;
        }
        return VIRTIO_BLK_S_OK;
    case VIRTIO_BLK_T_GET_ID: {
        char id[VIRTIO_BLK_ID_BYTES] = { 0 };
        const char *s = e->serial ? e->serial : e->exp->id;
        memcpy(id, s, MIN(strlen(s), sizeof(id)));
        iov_from_buf(&r->data, 0, id, MIN(sizeof(id), bytes));
        return VIRTIO_BLK_S_OK;
    }
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
        if (!e->exp->writable) {
            return VIRTIO_BLK_S_IOERR;
        }
        return req_discard_wz(e, r);
    default:
        return VIRTIO_BLK_S_UNSUPP;
    }
}

/* A request for @q: a kept one, else a new one (its loop). */
static VuBlkReq *req_get(VuBlkQueue *q)
{
    VuBlkReq *req = q->free_reqs;

    if (req) {
        q->free_reqs = req->next_free;
    } else {
        req = g_new0(VuBlkReq, 1);
        req->q = q;
    }
    return req;
}

static void req_put(VuBlkQueue *q, VuBlkReq *req)
{
    req->next_free = q->free_reqs;
    q->free_reqs = req;
}

/* Free @q's kept requests (its loop, or once its requests are over). */
static void queue_free_reqs(VuBlkQueue *q)
{
    while (q->free_reqs) {
        VuBlkReq *req = q->free_reqs;
        q->free_reqs = req->next_free;
        g_free(req->elem);
        g_free(req);
    }
}

static void req_co(void *opaque)
{
    VuBlkReq *req = opaque;
    VuBlkQueue *q = req->q;
    VuBlkConn *c = q->conn;
    int st = virtio_blk_parse(req->elem, &req->blk);

    /* parse() said there is a status byte (the -EIO case never gets
     * here: queue_process refuses it). */
    if (st == VIRTIO_BLK_S_OK) {
        st = req_execute(c->e, &req->blk);
    }
    *req->blk.status = (uint8_t)st;
    /* The status and data are written: publishing the element is the
     * last access to this request's guest memory. */
    vq_push(&q->vq, req->elem->head, req->blk.in_len);
    if (q->vq.event_idx) {
        /* Publish now: the driver takes this completion (and resubmits)
         * while later requests still run, instead of both sides taking
         * turns to sleep; its used_event asks for an interrupt only
         * when it is about to sleep, so this costs no extra wake-ups. */
        queue_flush_bh(q);
    } else {
        loop_bh_schedule(q->flush_bh);
    }
    virtio_blk_req_cleanup(&req->blk);
    vu_mem_table_unref(req->mem);
    req_put(q, req);
    /* Every queue's loop counts here. */
    __atomic_add_fetch(&c->e->stats.requests, 1, __ATOMIC_RELAXED);
    if (--q->in_flight == 0) {
        co_queue_restart_all(&q->drained);
    }
}

/* ---- polling (iothreads with poll-max-ns) ---- */

static bool queue_process(VuBlkQueue *q);

static bool queue_poll(void *opaque)
{
    VuBlkQueue *q = opaque;

    if (!vq_avail_pending(&q->vq)) {
        return false;
    }
    queue_process(q);
    return true;
}

/* While the loop polls, an empty ring asks the driver for no kick. */
static void queue_poll_begin(void *opaque)
{
    VuBlkQueue *q = opaque;

    q->vq.polling = true;
}

/* Polling ends: fetch what came, which asks for a kick again once the
 * ring is empty (and looks once more after asking).  True if it found
 * requests. */
static bool queue_poll_end(void *opaque)
{
    VuBlkQueue *q = opaque;

    q->vq.polling = false;
    return queue_process(q);
}

static void queue_polling(VuBlkQueue *q, bool on)
{
    if (on && !q->poller) {
        q->poller = loop_add_poller(vu_queue_loop(q), queue_poll,
                                    queue_poll_begin, queue_poll_end, q);
    } else if (!on && q->poller) {
        loop_remove_poller(vu_queue_loop(q), q->poller);
        q->poller = NULL;
        q->vq.polling = false;
    }
}

static void queue_stop_broken(VuBlkQueue *q, const char *why)
{
    VuBlkExport *e = q->conn->e;

    q->broken = true;
    __atomic_add_fetch(&e->stats.queue_errors, 1, __ATOMIC_RELAXED);
    vu_log(e, "virtqueue %u stopped: %s", q->vq.index, why);
    loop_set_fd_handler(vu_queue_loop(q), q->kick_fd, NULL, NULL, NULL);
    queue_polling(q, false);
    if (q->err_fd >= 0) {
        uint64_t one = 1;
        if (write(q->err_fd, &one, sizeof(one)) < 0) {
            /* Nothing more to tell: the queue is stopped anyway. */
        }
    }
}

/* Start a coroutine for each request the ring holds; true if it held
 * any (or a malformed one that stopped the queue). */
static bool queue_process(VuBlkQueue *q)
{
    VuBlkConn *c = q->conn;
    bool found = false;

    while (q->started && q->enabled && !q->broken &&
           conn_state(c) == VU_CONN_RUNNING) {
        VuBlkReq *req = req_get(q);
        const char *why = NULL;
        int r = vq_pop(&q->vq, q->mem, &req->elem, &why);
        if (r <= 0) {
            req_put(q, req);
            if (r < 0) {
                queue_stop_broken(q, why);
            }
            return found;
        }
        /* A request without a writable status byte cannot be answered,
         * not even with an error: the ring is unusable. */
        VqElem *elem = req->elem;
        bool has_status = false;
        for (int i = elem->out_num; i < elem->out_num + elem->in_num; i++) {
            has_status |= elem->iov[i].iov_len > 0;
        }
        if (!has_status) {
            req_put(q, req);
            queue_stop_broken(q, "request without a writable status byte");
            return true;
        }
        req->mem = q->mem;
        vu_mem_table_ref(req->mem);
        q->in_flight++;
        found = true;
        loop_co_spawn(vu_queue_loop(q), req_co, req);
    }
    return found;
}

static void queue_kick(void *opaque)
{
    VuBlkQueue *q = opaque;
    uint64_t v;

    if (read(q->kick_fd, &v, sizeof(v)) < 0 && errno != EAGAIN) {
        /* A kick fd that fails to read: the queue is polled on the next
         * message instead. */
    }
    queue_process(q);
}

/* Stop fetching from @q (its requests go on). */
static void queue_stop(VuBlkQueue *q)
{
    if (q->kick_fd >= 0) {
        loop_set_fd_handler(vu_queue_loop(q), q->kick_fd, NULL, NULL, NULL);
    }
    queue_polling(q, false);
    q->started = false;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* Point @q at table @t (its loop). */
static void queue_set_mem(VuBlkQueue *q, VuMemTable *t)
{
    if (q->mem != t) {
        vu_mem_table_ref(t);
        vu_mem_table_unref(q->mem);
        q->mem = t;
    }
}

/* Start @q once it has size, addresses, memory and a kick fd (its loop). */
static bool queue_start(VuBlkQueue *q, const char **why)
{
    VuBlkConn *c = q->conn;

    if (q->kick_fd < 0 || !c->mem) {
        *why = "ring started before memory table or kick fd";
        return false;
    }
    queue_set_mem(q, c->mem);
    if (vq_map(&q->vq, q->mem, why) < 0) {
        return false;
    }
    q->vq.event_idx = c->features & (1ull << VIRTIO_RING_F_EVENT_IDX);
    q->vq.indirect = c->features & (1ull << VIRTIO_RING_F_INDIRECT_DESC);
    q->vq.inflight = NULL;
    if (c->inflight_base && q->vq.index < c->e->num_queues &&
        q->vq.num <= c->inflight_queue_size) {
        uint64_t qsize = vq_inflight_queue_size(c->inflight_queue_size);
        if ((q->vq.index + 1) * qsize <= c->inflight_size) {
            q->vq.inflight = (VuInflightQueue *)
                ((uint8_t *)c->inflight_base + q->vq.index * qsize);
        }
    }
    if (c->announced != c->features) {
        /* What was negotiated, for the operator: once per driver (the
         * firmware's, then the guest kernel's). */
        c->announced = c->features;
        vu_log(c->e, "front end started: features 0x%" PRIx64 ", protocol "
               "features 0x%" PRIx64, c->features, c->protocol_features);
    }
    unsigned n = vq_inflight_restore(&q->vq);
    if (n) {
        vu_log(c->e, "virtqueue %u: resubmitting %u requests that were in "
               "flight", q->vq.index, n);
    }
    q->started = true;
    /* Without PROTOCOL_FEATURES a ring is enabled when started. */
    if (!(c->features & (1ull << VHOST_USER_F_PROTOCOL_FEATURES))) {
        q->enabled = true;
    }
    loop_set_fd_handler(vu_queue_loop(q), q->kick_fd, queue_kick, NULL, q);
    queue_polling(q, true);
    queue_process(q);
    return true;
}

/* ---- messages -------------------------------------------------------- */

static VuBlkQueue *msg_queue(VuBlkConn *c, uint32_t index)
{
    return index < c->e->num_queues ? &c->queues[index] : NULL;
}

static int send_reply(VuBlkConn *c, VhostUserMsg *msg, uint32_t size,
                      const int *fds, int nfds)
{
    VhostUserHeader h = {
        .request = msg->hdr.request,
        .flags = VHOST_USER_VERSION | VHOST_USER_REPLY,
        .size = size,
    };
    return vu_msg_send(c->fd, &h, &msg->payload, fds, nfds,
                       VU_SEND_TIMEOUT_MS);
}

static int reply_u64(VuBlkConn *c, VhostUserMsg *msg, uint64_t v)
{
    msg->payload.u64 = v;
    return send_reply(c, msg, sizeof(uint64_t), NULL, 0);
}

/* The connection's coroutine, in the export's loop. */
static void unmap_inflight(VuBlkConn *c)
{
    for (unsigned i = 0; i < c->e->num_queues; i++) {
        VuBlkQueue *q = &c->queues[i];
        if (q->vq.inflight) {
            vu_enter_queue(q);
            q->vq.inflight = NULL;
        }
    }
    vu_leave_queue(c);
    if (c->inflight_base) {
        munmap(c->inflight_base, c->inflight_size);
        c->inflight_base = NULL;
        c->inflight_size = 0;
    }
}

static int msg_set_mem_table(VuBlkConn *c, VhostUserMsg *msg,
                             const char **why)
{
    VuMemTable *t = vu_mem_table_new(c->e->exp->ctx);
    const VhostUserMemory *m = &msg->payload.memory;

    for (uint32_t i = 0; i < m->nregions; i++) {
        int r = vu_mem_table_add(t, &m->regions[i], msg->fds[i], why);
        if (r < 0) {
            vu_mem_table_unref(t);
            return r;
        }
    }
    /* Requests in flight keep the old table mapped until they are done;
     * the rings move to the new mapping now, each in its own loop. */
    vu_mem_table_unref(c->mem);
    c->mem = t;
    for (unsigned i = 0; i < c->e->num_queues; i++) {
        VuBlkQueue *q = &c->queues[i];
        vu_enter_queue(q);
        if (q->mem) {
            queue_set_mem(q, t);
        }
        if (q->vq.addr_set && q->vq.num && !q->broken) {
            const char *w = NULL;
            if (vq_map(&q->vq, t, &w) < 0 && q->started) {
                queue_stop_broken(q, w);
            }
        }
    }
    vu_leave_queue(c);
    return 0;
}

static int msg_get_inflight(VuBlkConn *c, VhostUserMsg *msg,
                            const char **why, int *out_fd)
{
    VhostUserInflight *in = &msg->payload.inflight;

    if (in->num_queues == 0 || in->num_queues > c->e->num_queues ||
        in->queue_size == 0 || in->queue_size > VQ_MAX_SIZE) {
        *why = "inflight queue count or size out of range";
        return -EINVAL;
    }
    uint64_t size = vq_inflight_queue_size(in->queue_size) * in->num_queues;
    int fd = memfd_create("strata-vhost-inflight", MFD_CLOEXEC);
    if (fd < 0) {
        *why = "memfd_create failed";
        return -errno;
    }
    if (ftruncate(fd, (off_t)size) < 0) {
        int err = -errno;
        close(fd);
        *why = "cannot size the inflight region";
        return err;
    }
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        int err = -errno;
        close(fd);
        *why = "cannot map the inflight region";
        return err;
    }
    unmap_inflight(c);
    c->inflight_base = base;
    c->inflight_size = size;
    c->inflight_queue_size = in->queue_size;
    in->mmap_size = size;
    in->mmap_offset = 0;
    *out_fd = fd;
    return 0;
}

static int msg_set_inflight(VuBlkConn *c, VhostUserMsg *msg,
                            const char **why)
{
    const VhostUserInflight *in = &msg->payload.inflight;
    uint64_t need, map_len;

    if (in->num_queues == 0 || in->num_queues > c->e->num_queues ||
        in->queue_size == 0 || in->queue_size > VQ_MAX_SIZE) {
        *why = "inflight queue count or size out of range";
        return -EINVAL;
    }
    need = vq_inflight_queue_size(in->queue_size) * in->num_queues;
    if (in->mmap_size < need ||
        __builtin_add_overflow(in->mmap_offset, in->mmap_size, &map_len) ||
        map_len > SIZE_MAX / 2 || in->mmap_offset % 4096 ||
        !vu_fd_covers(msg->fds[0], map_len)) {
        *why = "inflight region too small or misplaced";
        return -EINVAL;
    }
    void *base = mmap(NULL, in->mmap_size, PROT_READ | PROT_WRITE,
                      MAP_SHARED, msg->fds[0], (off_t)in->mmap_offset);
    if (base == MAP_FAILED) {
        *why = "cannot map the inflight region";
        return -errno;
    }
    unmap_inflight(c);
    c->inflight_base = base;
    c->inflight_size = in->mmap_size;
    c->inflight_queue_size = in->queue_size;
    return 0;
}

static int msg_vring_fd(VuBlkConn *c, VhostUserMsg *msg, const char **why)
{
    VuBlkQueue *q = msg_queue(c, msg->payload.u64 & VHOST_USER_VRING_IDX_MASK);
    int fd = vu_msg_take_fd(msg, 0);

    if (!q || (msg->payload.u64 & ~(uint64_t)(VHOST_USER_VRING_IDX_MASK |
                                              VHOST_USER_VRING_NOFD))) {
        close_fd(&fd);
        *why = "vring index out of range";
        return -EINVAL;
    }
    switch (msg->hdr.request) {
    case VHOST_USER_SET_VRING_KICK:
        if (fd < 0) {
            *why = "polling mode (no kick fd) is not supported";
            return -EINVAL;
        }
        if (q->in_flight > 0) {
            /* Restarting the ring would fetch its requests again. */
            close_fd(&fd);
            *why = "kick fd replaced while the ring has requests in flight";
            return -EBUSY;
        }
        queue_stop(q);
        close_fd(&q->kick_fd);
        q->kick_fd = fd;
        if (q->broken) {
            return 0;
        }
        return queue_start(q, why) ? 0 : -EINVAL;
    case VHOST_USER_SET_VRING_CALL:
        close_fd(&q->call_fd);
        q->call_fd = fd;
        return 0;
    default:
        close_fd(&q->err_fd);
        q->err_fd = fd;
        return 0;
    }
}

/* Wait until @q has no request in flight. */
static void queue_co_drain(VuBlkQueue *q)
{
    while (q->in_flight > 0) {
        co_queue_wait(&q->drained, NULL);
    }
    queue_flush_bh(q);
}

/*
 * Execute one validated message.  Returns 0 or -errno (*why says what);
 * *replied when the handler sent its own reply.  A negative return
 * becomes a failed REPLY_ACK when the front end asked for one, and
 * otherwise ends the connection when the message expected a reply.
 */
static int msg_execute(VuBlkConn *c, VhostUserMsg *msg, bool *replied,
                       const char **why)
{
    VuBlkExport *e = c->e;
    VhostUserPayload *p = &msg->payload;
    VuBlkQueue *q;

    *replied = false;
    switch (msg->hdr.request) {
    case VHOST_USER_GET_FEATURES:
        *replied = true;
        return reply_u64(c, msg, device_features(e));
    case VHOST_USER_SET_FEATURES:
        if (p->u64 & ~device_features(e)) {
            *why = "front end acked features that were not offered";
            return -EINVAL;
        }
        c->features = p->u64;
        e->stats.features = p->u64;
        return 0;
    case VHOST_USER_GET_PROTOCOL_FEATURES:
        *replied = true;
        return reply_u64(c, msg, protocol_features_offered);
    case VHOST_USER_SET_PROTOCOL_FEATURES:
        if (p->u64 & ~protocol_features_offered) {
            *why = "protocol features that were not offered";
            return -EINVAL;
        }
        c->protocol_features = p->u64;
        e->stats.protocol_features = p->u64;
        return 0;
    case VHOST_USER_SET_OWNER:
        return 0;
    case VHOST_USER_RESET_OWNER:
        for (unsigned i = 0; i < e->num_queues; i++) {
            vu_enter_queue(&c->queues[i]);
            queue_stop(&c->queues[i]);
        }
        vu_leave_queue(c);
        c->features = 0;
        return 0;
    case VHOST_USER_GET_QUEUE_NUM:
        *replied = true;
        return reply_u64(c, msg, e->num_queues);
    case VHOST_USER_SET_MEM_TABLE:
        return msg_set_mem_table(c, msg, why);
    case VHOST_USER_SET_VRING_NUM:
        q = msg_queue(c, p->state.index);
        if (!q || p->state.num == 0 || p->state.num > VQ_MAX_SIZE ||
            (p->state.num & (p->state.num - 1))) {
            *why = "vring index or size out of range";
            return -EINVAL;
        }
        if (q->started) {
            *why = "vring size changed while the ring runs";
            return -EBUSY;
        }
        q->vq.num = p->state.num;
        return 0;
    case VHOST_USER_SET_VRING_ADDR:
        q = msg_queue(c, p->addr.index);
        if (!q) {
            *why = "vring index out of range";
            return -EINVAL;
        }
        if (q->started) {
            *why = "vring addresses changed while the ring runs";
            return -EBUSY;
        }
        q->vq.desc_uva = p->addr.desc_user_addr;
        q->vq.avail_uva = p->addr.avail_user_addr;
        q->vq.used_uva = p->addr.used_user_addr;
        q->vq.addr_set = true;
        return 0;
    case VHOST_USER_SET_VRING_BASE:
        q = msg_queue(c, p->state.index);
        if (!q || p->state.num > UINT16_MAX) {
            *why = "vring index or base out of range";
            return -EINVAL;
        }
        if (q->started) {
            *why = "vring base changed while the ring runs";
            return -EBUSY;
        }
        q->vq.last_avail_idx = (uint16_t)p->state.num;
        q->vq.avail_ahead = 0;
        q->broken = false;
        return 0;
    case VHOST_USER_GET_VRING_BASE:
        q = msg_queue(c, p->state.index);
        if (!q) {
            *why = "vring index out of range";
            return -EINVAL;
        }
        queue_stop(q);
        queue_co_drain(q);
        q->enabled = false;
        close_fd(&q->kick_fd);
        p->state.num = q->vq.last_avail_idx;
        *replied = true;
        return send_reply(c, msg, sizeof(p->state), NULL, 0);
    case VHOST_USER_SET_VRING_KICK:
    case VHOST_USER_SET_VRING_CALL:
    case VHOST_USER_SET_VRING_ERR:
        return msg_vring_fd(c, msg, why);
    case VHOST_USER_SET_VRING_ENABLE:
        q = msg_queue(c, p->state.index);
        if (!q || p->state.num > 1) {
            *why = "vring index or enable value out of range";
            return -EINVAL;
        }
        q->enabled = p->state.num;
        if (q->enabled) {
            queue_process(q);
        }
        return 0;
    case VHOST_USER_SET_BACKEND_REQ_FD:
        close_fd(&c->backend_fd);
        c->backend_fd = vu_msg_take_fd(msg, 0);
        return 0;
    case VHOST_USER_GET_CONFIG: {
        VirtioBlkConfig cfg;
        uint8_t space[VHOST_USER_CONFIG_MAX] = { 0 };
        fill_config(e, &cfg);
        memcpy(space, &cfg, sizeof(cfg));
        memcpy(p->config.region, space + p->config.offset, p->config.size);
        *replied = true;
        return send_reply(c, msg, VHOST_USER_CONFIG_HDR_SIZE + p->config.size,
                          NULL, 0);
    }
    case VHOST_USER_SET_CONFIG:
        *why = "the config space is read-only";
        return -EPERM;
    case VHOST_USER_GET_INFLIGHT_FD: {
        int fd = -1;
        int r = msg_get_inflight(c, msg, why, &fd);
        if (r < 0) {
            return r;
        }
        *replied = true;
        r = send_reply(c, msg, sizeof(p->inflight), &fd, 1);
        close(fd);
        return r;
    }
    case VHOST_USER_SET_INFLIGHT_FD:
        return msg_set_inflight(c, msg, why);
    default:
        /* Known to the framing but not offered: LOG_*, memory slots. */
        *why = "request not supported";
        return -ENOTSUP;
    }
}

/* Requests whose reply is part of the protocol (no REPLY_ACK then). */
static bool msg_has_reply(uint32_t request)
{
    switch (request) {
    case VHOST_USER_GET_FEATURES:
    case VHOST_USER_GET_PROTOCOL_FEATURES:
    case VHOST_USER_GET_VRING_BASE:
    case VHOST_USER_GET_QUEUE_NUM:
    case VHOST_USER_GET_CONFIG:
    case VHOST_USER_GET_INFLIGHT_FD:
    case VHOST_USER_GET_MAX_MEM_SLOTS:
        return true;
    default:
        return false;
    }
}

/* The virtqueue a vring message is about (an index in range), or NULL. */
static VuBlkQueue *msg_target_queue(VuBlkConn *c, const VhostUserMsg *msg)
{
    switch (msg->hdr.request) {
    case VHOST_USER_SET_VRING_NUM:
    case VHOST_USER_SET_VRING_BASE:
    case VHOST_USER_GET_VRING_BASE:
    case VHOST_USER_SET_VRING_ENABLE:
        return msg_queue(c, msg->payload.state.index);
    case VHOST_USER_SET_VRING_ADDR:
        return msg_queue(c, msg->payload.addr.index);
    case VHOST_USER_SET_VRING_KICK:
    case VHOST_USER_SET_VRING_CALL:
    case VHOST_USER_SET_VRING_ERR:
        return msg_queue(c, msg->payload.u64 & VHOST_USER_VRING_IDX_MASK);
    default:
        return NULL;
    }
}

/* Handle one message: false ends the connection. */
static bool conn_handle(VuBlkConn *c, VhostUserMsg *msg)
{
    VuBlkExport *e = c->e;
    const char *why = NULL;
    bool replied = false;
    int r = vu_msg_check(msg, &why);

    if (r == 0) {
        /* A message about one virtqueue runs in that virtqueue's loop. */
        VuBlkQueue *q = msg_target_queue(c, msg);
        if (q) {
            vu_enter_queue(q);
        }
        r = msg_execute(c, msg, &replied, &why);
        vu_leave_queue(c);
    }
    if (r < 0) {
        e->stats.protocol_errors++;
        vu_log(e, "%s: %s (%s)", vu_request_name(msg->hdr.request),
               why ? why : "failed", g_strerror(-r));
    }
    bool ack = (msg->hdr.flags & VHOST_USER_NEED_REPLY) &&
               (c->protocol_features &
                (1ull << VHOST_USER_PROTOCOL_F_REPLY_ACK));
    if (replied) {
        return r == 0;
    }
    if (ack && !msg_has_reply(msg->hdr.request)) {
        return reply_u64(c, msg, r < 0 ? 1 : 0) == 0;
    }
    /* A failure the front end cannot be told about (it waits for a reply
     * that cannot be given, or gets no ack) ends the connection. */
    return r == 0 || !msg_has_reply(msg->hdr.request);
}

/* ---- connections ----------------------------------------------------- */

static void conn_readable(void *opaque)
{
    VuBlkConn *c = opaque;
    Coroutine *co = c->read_waiter;

    loop_set_fd_handler(c->e->loop, c->fd, NULL, NULL, NULL);
    c->read_waiter = NULL;
    if (co) {
        co_enter(co);
    }
}

static void conn_free(VuBlkConn *c)
{
    VuBlkExport *e = c->e;

    for (unsigned i = 0; i < e->num_queues; i++) {
        VuBlkQueue *q = &c->queues[i];
        close_fd(&q->kick_fd);
        close_fd(&q->call_fd);
        close_fd(&q->err_fd);
        vq_reset(&q->vq);
        /* Drained: no request of this queue runs any more. */
        queue_free_reqs(q);
    }
    unmap_inflight(c);
    vu_mem_table_unref(c->mem);
    vu_reader_cleanup(&c->reader);
    close_fd(&c->backend_fd);
    close(c->fd);
    g_free(c->queues);
    g_free(c);
}

static void client_gone(void *opaque)
{
    export_client_remove(opaque);
}

static void conn_co(void *opaque)
{
    VuBlkConn *c = opaque;
    VuBlkExport *e = c->e;

    while (c->state == VU_CONN_RUNNING) {
        VhostUserMsg msg;
        int r = vu_reader_read(&c->reader, c->fd, &msg);
        if (r == 0) {
            c->read_waiter = co_self();
            loop_set_fd_handler(e->loop, c->fd, conn_readable, NULL, c);
            co_yield();
            continue;
        }
        if (r < 0) {
            if (r != -ECONNRESET) {
                e->stats.protocol_errors++;
                vu_log(e, "front end connection: %s", g_strerror(-r));
            }
            break;
        }
        bool ok = conn_handle(c, &msg);
        vu_msg_close_fds(&msg);
        if (!ok) {
            break;
        }
    }
    /* The front end is gone (or misbehaved): stop every ring, let the
     * requests already started finish (their memory stays mapped), then
     * free.  Each queue in its own loop, where its completions run. */
    __atomic_store_n(&c->state, VU_CONN_CLOSING, __ATOMIC_RELEASE);
    for (unsigned i = 0; i < e->num_queues; i++) {
        VuBlkQueue *q = &c->queues[i];
        vu_enter_queue(q);
        queue_stop(q);
        queue_co_drain(q);
        loop_bh_delete(q->flush_bh);
        q->flush_bh = NULL;
        vu_mem_table_unref(q->mem);
        q->mem = NULL;
    }
    vu_leave_queue(c);
    if (e->conn == c) {
        e->conn = NULL;
        e->stats.connected = false;
    }
    BlockExport *exp = e->exp;
    Loop *loop = e->loop;
    conn_free(c);
    loop_oneshot(loop, client_gone, exp);
}

static bool add_client(VuBlkExport *e, int fd)
{
    if (e->conn || e->exp->shutting_down) {
        /* One front end at a time, as QSD. */
        vu_log(e, "refusing a second front end connection");
        close(fd);
        return false;
    }
    VuBlkConn *c = g_new0(VuBlkConn, 1);
    c->e = e;
    c->fd = fd;
    c->backend_fd = -1;
    c->state = VU_CONN_RUNNING;
    vu_reader_init(&c->reader);
    c->queues = g_new0(VuBlkQueue, e->num_queues);
    for (unsigned i = 0; i < e->num_queues; i++) {
        VuBlkQueue *q = &c->queues[i];
        StrataQueue *sq = export_next_queue(e->exp);
        q->conn = c;
        q->loop = sq ? sq->loop : e->loop;
        vq_init(&q->vq, i);
        q->kick_fd = q->call_fd = q->err_fd = -1;
        co_queue_init(&q->drained);
        q->flush_bh = loop_bh_new(vu_queue_loop(q), queue_flush_bh, q);
    }
    e->conn = c;
    e->stats.connected = true;
    __atomic_store_n(&e->capacity,
                     (uint64_t)MAX(strata_backend_get_length(e->exp->be), 0),
                     __ATOMIC_RELAXED);
    export_client_add(e->exp);
    loop_co_spawn(e->loop, conn_co, c);
    return true;
}

static void export_accept(void *opaque)
{
    VuBlkExport *e = opaque;
    int fd = accept4(e->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (fd >= 0) {
        add_client(e, fd);
    }
}

bool vhost_user_blk_add_client(BlockExport *exp, int fd)
{
    if (!is_vhost_user_blk(exp)) {
        close(fd);
        return false;
    }
    return add_client(exp->opaque, fd);
}

void vhost_user_blk_get_stats(BlockExport *exp, VhostUserBlkStats *out)
{
    if (!is_vhost_user_blk(exp)) {
        memset(out, 0, sizeof(*out));
        return;
    }
    VuBlkExport *e = exp->opaque;
    *out = (VhostUserBlkStats) {
        .protocol_errors = e->stats.protocol_errors,
        /* Counted in the queues' loops. */
        .queue_errors = __atomic_load_n(&e->stats.queue_errors,
                                        __ATOMIC_RELAXED),
        .requests = __atomic_load_n(&e->stats.requests, __ATOMIC_RELAXED),
        .connected = e->stats.connected,
        .features = e->stats.features,
        .protocol_features = e->stats.protocol_features,
    };
}

void vhost_user_blk_resized(BlockExport *exp)
{
    if (!is_vhost_user_blk(exp)) {
        return;
    }
    VuBlkExport *e = exp->opaque;
    VuBlkConn *c = e->conn;
    int64_t len = strata_backend_get_length(exp->be);

    if (len < 0 || (uint64_t)len == export_capacity(e)) {
        return;
    }
    __atomic_store_n(&e->capacity, (uint64_t)len, __ATOMIC_RELAXED);
    uint64_t need = (1ull << VHOST_USER_PROTOCOL_F_BACKEND_REQ) |
                    (1ull << VHOST_USER_PROTOCOL_F_CONFIG);
    if (!c || c->backend_fd < 0 || (c->protocol_features & need) != need) {
        return;
    }
    /* No NEED_REPLY: the front end answers CONFIG_CHANGE_MSG by sending
     * GET_CONFIG on the main channel, which this loop serves. */
    VhostUserHeader h = {
        .request = VHOST_USER_BACKEND_CONFIG_CHANGE_MSG,
        .flags = VHOST_USER_VERSION,
        .size = 0,
    };
    int r = vu_msg_send(c->backend_fd, &h, NULL, NULL, 0,
                        VU_SEND_TIMEOUT_MS);
    if (r < 0) {
        vu_log(e, "CONFIG_CHANGE_MSG: %s", g_strerror(-r));
    }
}

/* ---- the export type ------------------------------------------------- */

static bool vu_export_create(BlockExport *exp, OptNode *opts,
                             StrataError **errp)
{
    VuBlkExport *e = exp->opaque;
    OptNode *addr;
    const char *type, *path, *serial = NULL;
    uint64_t lbs;
    int64_t nq;

    addr = opts_get(opts, "addr");
    if (!addr || opts_type(addr) != OPT_OBJECT) {
        error_set_option(errp, "addr: expected an object {type: unix, path}");
        return false;
    }
    if (!opts_require_str(addr, "type", &type, errp) ||
        !opts_require_str(addr, "path", &path, errp)) {
        error_prepend(errp, "addr.");
        return false;
    }
    if (strcmp(type, "unix")) {
        error_set_option(errp, "addr.type: '%s' is not supported (only unix)",
                         type);
        return false;
    }
    for (guint i = 0; i < opts_object_size(addr); i++) {
        const char *key = opts_object_key(addr, i);
        if (strcmp(key, "type") && strcmp(key, "path")) {
            error_set_option(errp, "addr.%s: unknown member (a vhost-user "
                             "socket address has type and path)", key);
            return false;
        }
    }
    if (!opts_get_size(opts, "logical-block-size", 512, &lbs, errp) ||
        !opts_get_int(opts, "num-queues", 1, &nq, errp) ||
        !opts_get_str(opts, "serial", NULL, &serial, errp)) {
        return false;
    }
    if (lbs < 512 || lbs > 32768 || (lbs & (lbs - 1))) {
        error_set_option(errp, "logical-block-size: %" PRIu64 " is not a "
                         "power of two between 512 and 32768", lbs);
        return false;
    }
    if (nq < 1 || nq > 1024) {
        error_set_option(errp, "num-queues: %" PRId64 " is out of range "
                         "(1 to 1024)", nq);
        return false;
    }
    if (serial && strlen(serial) > VIRTIO_BLK_ID_BYTES) {
        error_set_option(errp, "serial: longer than %d bytes",
                         VIRTIO_BLK_ID_BYTES);
        return false;
    }
    int64_t len = strata_backend_get_length(exp->be);
    if (len >= 0 && (uint64_t)len % lbs) {
        error_set_option(errp, "logical-block-size: the node's length %"
                         PRId64 " is not a multiple of %" PRIu64, len, lbs);
        return false;
    }
    e->exp = exp;
    /* The connection runs in the context's loop; its virtqueues in the
     * iothreads' (add_client). */
    e->loop = exp->ctx->loop;
    e->lbs = (uint32_t)lbs;
    e->num_queues = (unsigned)nq;
    e->serial = g_strdup(serial);
    e->listen_fd = socket_listen_unix(path, 1, &e->unlink_path, errp);
    if (e->listen_fd < 0) {
        g_free(e->serial);
        error_prepend(errp, "addr.path: ");
        return false;
    }
    loop_set_fd_handler(e->loop, e->listen_fd, export_accept, NULL, e);
    return true;
}

static void vu_export_request_shutdown(BlockExport *exp, bool hard)
{
    VuBlkExport *e = exp->opaque;

    if (e->listen_fd >= 0) {
        loop_set_fd_handler(e->loop, e->listen_fd, NULL, NULL, NULL);
        close(e->listen_fd);
        e->listen_fd = -1;
        if (e->unlink_path) {
            unlink(e->unlink_path);
        }
    }
    if (hard && e->conn) {
        /* The reader sees the end of the stream and tears down. */
        shutdown(e->conn->fd, SHUT_RDWR);
    }
}

static void vu_export_destroy(BlockExport *exp)
{
    VuBlkExport *e = exp->opaque;

    vu_export_request_shutdown(exp, true);
    g_free(e->unlink_path);
    g_free(e->serial);
}

static const BlockExportDriver vu_export_driver = {
    .type = "vhost-user-blk",
    .instance_size = sizeof(VuBlkExport),
    .create = vu_export_create,
    .request_shutdown = vu_export_request_shutdown,
    .destroy = vu_export_destroy,
};

void vhost_user_blk_register(void)
{
    export_register_driver(&vu_export_driver);
}
