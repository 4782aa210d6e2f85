/*
 * nbd: a protocol driver for disks behind an NBD server, through libnbd
 * SPDX-License-Identifier: MIT
 *
 * The node speaks NBD through libnbd's asynchronous API, driven from the
 * node's event loop; Strata implements no part of the protocol itself.
 *
 * Life of a request:
 *
 *   co_preadv ─► nbd_co_do(): pick a live connection ─► nbd_aio_pread()
 *   with a completion callback pointing at an NbdReq on the coroutine's
 *   stack ─► the coroutine yields ─► the socket becomes readable ─►
 *   nbd_on_read(): nbd_aio_notify_read() runs libnbd's state machine,
 *   which calls the completion callbacks of the replies it read ─► each
 *   callback only records the result and links the NbdReq on a list ─►
 *   after notify returns, the handler enters the listed coroutines.
 *
 * Why the list: libnbd calls completion callbacks with the handle's lock
 * held, and a re-entered coroutine usually issues its next command on the
 * same handle at once, which would take that lock again.  A callback that
 * runs outside a notify (a command issued by one coroutine fails and
 * libnbd aborts the others) wakes its coroutines through the loop instead:
 * a coroutine never enters another one from inside libnbd.
 *
 * The fd is registered for the directions libnbd asks for
 * (nbd_aio_get_direction): always read while connected (replies, and the
 * server hanging up), write only while libnbd has output it could not
 * send.  The registration changes only when the direction does.
 *
 * Connections.  One by default; with multi-conn=N and a server that
 * advertises CAN_MULTI_CONN, N, used round-robin (the NBD spec makes a
 * flush on any of them cover writes completed on all).  Connecting is
 * blocking libnbd calls: at open in the opening thread, later (reconnect)
 * in the context's thread pool, so the loop keeps running.
 *
 * Reconnect.  A connection whose socket fails is closed at once.  With
 * reconnect-delay=0 (the default) requests then fail with EIO while no
 * other connection is up.  Otherwise a coroutine per lost connection
 * reconnects, backing off from 10 ms to 250 ms between attempts, for as
 * long as the node is open; requests issued or in flight when the last
 * connection went down wait up to reconnect-delay seconds from that moment
 * for any connection to come back and are then issued again; after the
 * delay they, and new requests, fail with EIO until a reconnect succeeds.
 * Reads, writes, zeroes and trims are idempotent, so reissuing one that
 * the server may already have executed is harmless.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <libnbd.h>

#include "block/block-int.h"
#include "block/object.h"
#include "block/drivers.h"

#define NBD_MAX_CONNS 16
/* The largest read or write sent in one command: QEMU's client and server
 * use 32 MiB too, and libnbd refuses anything over 64 MiB. */
#define NBD_MAX_RW ((int64_t)32 << 20)
/* NBD lengths are 32-bit; zero, trim and block status go in 1 GiB pieces. */
#define NBD_MAX_LEN32 ((int64_t)1 << 30)
#define NBD_DEFAULT_PORT "10809"
#define NBD_RETRY_MIN_NS (10 * 1000 * 1000)
#define NBD_RETRY_MAX_NS (250 * 1000 * 1000)
#define NS_PER_SEC ((int64_t)1000 * 1000 * 1000)
/* Replies read in one go before the loop gets its turn again. */
#define NBD_READ_BURST 64

typedef enum NbdServerType {
    NBD_SERVER_UNIX,
    NBD_SERVER_INET,
} NbdServerType;

static const char *const nbd_server_types[] = { "unix", "inet", NULL };

typedef struct NbdState NbdState;
typedef struct NbdConn NbdConn;

typedef enum NbdCmdType {
    NBD_CMD_READ,
    NBD_CMD_WRITE,
    NBD_CMD_ZERO,
    NBD_CMD_TRIM,
    NBD_CMD_FLUSH,
    NBD_CMD_BLOCK_STATUS,
} NbdCmdType;

/* One command as the driver callbacks describe it (coroutine stack). */
typedef struct NbdCmd {
    NbdCmdType type;
    int64_t offset, bytes;
    void *buf;                      /* read and write */
    uint32_t flags;                 /* LIBNBD_CMD_FLAG_* */
    /* block status: the first extent at @offset */
    int64_t extent_len;
    uint32_t extent_flags;
} NbdCmd;

/* One issue of a command on one connection (coroutine stack). */
typedef struct NbdReq {
    Coroutine *co;
    NbdCmd *cmd;
    NbdConn *conn;                  /* the connection it went out on */
    int err;                        /* the reply's errno, 0 on success */
    bool done;                      /* the completion callback ran */
    bool waiting;                   /* the coroutine yielded for it */
    struct NbdReq *next;            /* NbdConn.completed */
} NbdReq;

struct NbdConn {
    NbdState *s;
    struct nbd_handle *h;           /* NULL while down */
    int fd;
    unsigned dir;                   /* directions registered in the loop */
    bool in_notify;                 /* inside nbd_aio_notify_*() */
    uint64_t generation;            /* bumped when the connection is lost */
    NbdReq *completed;              /* to enter after the notify returns */
    bool reconnecting;              /* a reconnect coroutine runs for it */
};

struct NbdState {
    StrataNode *node;
    Loop *loop;
    /* options */
    NbdServerType type;
    char *path, *host, *port, *export;
    /* TLS: the tls-creds object (held while the node lives) and what
     * libnbd needs from it, copied so that connection jobs in the pool
     * need no lock */
    StrataObject *tls_obj;
    char *tls_user;                 /* the node's name for the object use */
    bool tls_psk;
    char *tls_dir, *tls_psk_file, *tls_username;
    bool tls_verify;
    int64_t reconnect_delay_ns;
    int64_t open_timeout_ns;
    int multi_conn;                 /* connections asked for */
    /* what the server offered on the first connection */
    int64_t size;
    uint32_t min_block, pref_block, max_block;
    bool can_flush, can_fua, can_trim, can_zero, can_fast_zero;
    bool can_multi_conn, base_allocation;
    /* connections */
    NbdConn conn[NBD_MAX_CONNS];
    int nconn;
    unsigned next_conn;
    int up;                         /* connections with a handle */
    int64_t down_since_ns;          /* when up last dropped to 0 */
    CoQueue up_waiters;             /* requests waiting for a connection */
    LoopTimer deadline_timer;       /* ends their wait after the delay */
    int reconnects_running;
    bool closing;
    uint64_t reconnects;            /* successful, for info */
};

/* ---- connecting (blocking, any thread) ------------------------------------ */

/* A connection attempt, self-contained so that it can run in a pool
 * thread: libnbd's error text is per thread. */
typedef struct NbdConnectJob {
    const NbdState *s;
    struct nbd_handle *h;           /* the connected handle on success */
    char *err;                      /* else why */
    int errnum;
} NbdConnectJob;

static void nbd_job_fail(NbdConnectJob *j, const char *what)
{
    j->errnum = nbd_get_errno() ? nbd_get_errno() : EIO;
    j->err = g_strdup_printf("%s: %s", what,
                             nbd_get_error() ? nbd_get_error()
                                             : g_strerror(j->errnum));
    if (j->h) {
        nbd_close(j->h);
        j->h = NULL;
    }
}

/* The server's address as QEMU's messages show it: the socket path, or
 * host:port. */
static char *nbd_server_name(const NbdState *s)
{
    if (s->type == NBD_SERVER_UNIX) {
        return g_strdup(s->path);
    }
    return g_strdup_printf(strchr(s->host, ':') ? "[%s]:%s" : "%s:%s",
                           s->host, s->port);
}

static int nbd_connect_fn(void *opaque)
{
    NbdConnectJob *j = opaque;
    const NbdState *s = j->s;
    int ret;

    j->h = nbd_create();
    if (!j->h) {
        nbd_job_fail(j, "nbd_create");
        return -j->errnum;
    }
    /* Read buffers are the caller's: libnbd need not clear them before
     * a read (a failed read's buffer contents are unspecified anyway). */
    if (nbd_set_export_name(j->h, s->export) < 0 ||
        nbd_add_meta_context(j->h, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
        nbd_set_pread_initialize(j->h, false) < 0) {
        nbd_job_fail(j, "nbd");
        return -j->errnum;
    }
    if (s->tls_obj &&
        (nbd_set_tls(j->h, LIBNBD_TLS_REQUIRE) < 0 ||
         nbd_set_tls_verify_peer(j->h, s->tls_verify) < 0 ||
         (s->tls_dir && nbd_set_tls_certificates(j->h, s->tls_dir) < 0) ||
         (s->tls_psk_file &&
          (nbd_set_tls_psk_file(j->h, s->tls_psk_file) < 0 ||
           nbd_set_tls_username(j->h, s->tls_username) < 0)))) {
        nbd_job_fail(j, "nbd TLS");
        return -j->errnum;
    }
    if (s->type == NBD_SERVER_UNIX) {
        ret = nbd_connect_unix(j->h, s->path);
    } else {
        ret = nbd_connect_tcp(j->h, s->host, s->port);
    }
    if (ret < 0) {
        g_autofree char *name = nbd_server_name(s);
        g_autofree char *what = g_strdup_printf("Failed to connect to '%s'",
                                                name);
        const char *msg = nbd_get_error();

        /* The socket did not connect: QEMU's words, the errno alone.
         * Anything later (the handshake) keeps libnbd's explanation. */
        if (msg && strstr(msg, ": connect: ") && nbd_get_errno()) {
            j->errnum = nbd_get_errno();
            j->err = g_strdup_printf("%s: %s", what, g_strerror(j->errnum));
            nbd_close(j->h);
            j->h = NULL;
            return -j->errnum;
        }
        nbd_job_fail(j, what);
        return -j->errnum;
    }
    return 0;
}

/* ---- the fd in the loop ----------------------------------------------------- */

static void nbd_on_read(void *opaque);
static void nbd_on_write(void *opaque);
static void nbd_conn_lost(NbdConn *c);

static void nbd_conn_update_fd(NbdConn *c)
{
    unsigned dir = c->h ? nbd_aio_get_direction(c->h) & LIBNBD_AIO_DIRECTION_BOTH
                        : 0;

    if (dir == c->dir) {
        return;
    }
    loop_set_fd_handler(c->s->loop, c->fd,
                        dir & LIBNBD_AIO_DIRECTION_READ ? nbd_on_read : NULL,
                        dir & LIBNBD_AIO_DIRECTION_WRITE ? nbd_on_write : NULL,
                        c);
    c->dir = dir;
}

/* After a libnbd call on @c: a dead or closed handle means the connection
 * is gone; else follow the direction libnbd now wants. */
static void nbd_conn_check(NbdConn *c)
{
    if (!c->h) {
        return;
    }
    if (nbd_aio_is_dead(c->h) || nbd_aio_is_closed(c->h)) {
        nbd_conn_lost(c);
        return;
    }
    nbd_conn_update_fd(c);
}

static void nbd_conn_notify(NbdConn *c, bool write)
{
    NbdReq *list;
    int ret;

    if (!c->h) {
        return;                 /* lost earlier in this loop iteration */
    }
    c->in_notify = true;
    ret = write ? nbd_aio_notify_write(c->h) : nbd_aio_notify_read(c->h);
    /*
     * libnbd reads one reply per notify and then waits for the next read
     * notification, which would cost one epoll_wait per reply at depth.
     * While replies keep coming and more are due, read on: the one recv
     * that finds nothing (EAGAIN) replaces the epoll_wait that would
     * otherwise have followed each reply.
     */
    for (int i = 0; !write && ret == 0 && c->completed && i < NBD_READ_BURST &&
         nbd_aio_in_flight(c->h) > 0 &&
         nbd_aio_get_direction(c->h) == LIBNBD_AIO_DIRECTION_READ; i++) {
        NbdReq *before = c->completed;
        ret = nbd_aio_notify_read(c->h);
        if (c->completed == before) {
            break;
        }
    }
    c->in_notify = false;
    nbd_conn_check(c);

    /* Completions were linked newest first; enter them in arrival order
     * of their replies. */
    list = NULL;
    while (c->completed) {
        NbdReq *r = c->completed;
        c->completed = r->next;
        r->next = list;
        list = r;
    }
    while (list) {
        NbdReq *r = list;
        list = r->next;
        co_enter(r->co);
    }
}

static void nbd_on_read(void *opaque)
{
    nbd_conn_notify(opaque, false);
}

static void nbd_on_write(void *opaque)
{
    nbd_conn_notify(opaque, true);
}

/* ---- connections: attach, lose, reconnect ------------------------------------ */

static void nbd_wake_waiters(NbdState *s)
{
    co_queue_restart_all(&s->up_waiters);
}

static void nbd_deadline_cb(void *opaque)
{
    nbd_wake_waiters(opaque);
}

static void nbd_conn_attach(NbdConn *c, struct nbd_handle *h)
{
    NbdState *s = c->s;

    c->h = h;
    c->fd = nbd_aio_get_fd(h);
    c->dir = 0;
    s->up++;
    loop_timer_del(&s->deadline_timer);
    nbd_conn_update_fd(c);
    nbd_wake_waiters(s);
}

static void nbd_co_reconnect(void *opaque);

/* The connection failed: close it (libnbd has already failed the commands
 * in flight on it, with ENOTCONN), and reconnect if the node is to. */
static void nbd_conn_lost(NbdConn *c)
{
    NbdState *s = c->s;

    loop_set_fd_handler(s->loop, c->fd, NULL, NULL, NULL);
    c->dir = 0;
    nbd_close(c->h);
    c->h = NULL;
    c->fd = -1;
    c->generation++;
    if (--s->up == 0) {
        s->down_since_ns = clock_ns();
        if (s->reconnect_delay_ns > 0) {
            loop_timer_mod(&s->deadline_timer,
                           s->down_since_ns + s->reconnect_delay_ns);
        }
        nbd_wake_waiters(s);
    }
    if (s->reconnect_delay_ns > 0 && !s->closing && !c->reconnecting) {
        c->reconnecting = true;
        s->reconnects_running++;
        loop_co_spawn(s->loop, nbd_co_reconnect, c);
    }
}

/* True when a new connection shows the export the node was opened on:
 * same size (a changed disk under a running guest is not the same disk),
 * and not read-only unless the node is. */
static bool nbd_handle_matches(NbdState *s, struct nbd_handle *h)
{
    return nbd_get_size(h) == s->size &&
           (s->node->read_only || nbd_is_read_only(h) == 0);
}

static void nbd_co_reconnect(void *opaque)
{
    NbdConn *c = opaque;
    NbdState *s = c->s;
    int64_t backoff = NBD_RETRY_MIN_NS;

    while (!s->closing) {
        NbdConnectJob j = { .s = s };
        int ret = block_co_run_in_pool(s->node, nbd_connect_fn, &j);

        g_free(j.err);
        if (ret == 0 && !s->closing && nbd_handle_matches(s, j.h)) {
            s->reconnects++;
            nbd_conn_attach(c, j.h);
            break;
        }
        if (j.h) {
            nbd_close(j.h);
        }
        if (s->closing) {
            break;
        }
        co_sleep_ns(backoff);
        backoff = MIN(backoff * 2, NBD_RETRY_MAX_NS);
    }
    c->reconnecting = false;
    s->reconnects_running--;
}

/* A connection to issue on, round-robin over those that are up; while none
 * is, wait for one up to reconnect-delay after the last went down.  NULL
 * when the wait is over (or there is none to wait for). */
static NbdConn *nbd_co_get_conn(NbdState *s)
{
    for (;;) {
        for (int i = 0; i < s->nconn; i++) {
            NbdConn *c = &s->conn[(s->next_conn + i) % s->nconn];
            if (c->h) {
                s->next_conn = (s->next_conn + i + 1) % s->nconn;
                return c;
            }
        }
        if (s->closing || s->reconnect_delay_ns == 0 ||
            clock_ns() - s->down_since_ns >= s->reconnect_delay_ns) {
            return NULL;
        }
        co_queue_wait(&s->up_waiters, NULL);
    }
}

/* ---- requests ---------------------------------------------------------------- */

static int nbd_extent_cb(void *opaque, const char *metacontext,
                         uint64_t offset, uint32_t *entries, size_t nr_entries,
                         int *error)
{
    NbdCmd *cmd = opaque;

    if (strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) == 0 &&
        nr_entries >= 2 && cmd->extent_len == 0 &&
        offset == (uint64_t)cmd->offset) {
        cmd->extent_len = entries[0];
        cmd->extent_flags = entries[1];
    }
    return 0;
}

static int nbd_done_cb(void *opaque, int *error);

static int64_t nbd_issue(NbdConn *c, NbdReq *r)
{
    NbdCmd *cmd = r->cmd;
    nbd_completion_callback done = { .callback = nbd_done_cb, .user_data = r };

    switch (cmd->type) {
    case NBD_CMD_READ:
        return nbd_aio_pread(c->h, cmd->buf, cmd->bytes, cmd->offset, done, 0);
    case NBD_CMD_WRITE:
        return nbd_aio_pwrite(c->h, cmd->buf, cmd->bytes, cmd->offset, done,
                              cmd->flags);
    case NBD_CMD_ZERO:
        return nbd_aio_zero(c->h, cmd->bytes, cmd->offset, done, cmd->flags);
    case NBD_CMD_TRIM:
        return nbd_aio_trim(c->h, cmd->bytes, cmd->offset, done, cmd->flags);
    case NBD_CMD_FLUSH:
        return nbd_aio_flush(c->h, done, 0);
    case NBD_CMD_BLOCK_STATUS: {
        nbd_extent_callback ext = { .callback = nbd_extent_cb,
                                    .user_data = cmd };
        cmd->extent_len = 0;
        return nbd_aio_block_status(c->h, cmd->bytes, cmd->offset, ext, done,
                                    0);
    }
    }
    g_assert_not_reached();
}

static int nbd_done_cb(void *opaque, int *error)
{
    NbdReq *r = opaque;
    NbdConn *c = r->conn;

    r->err = *error;
    r->done = true;
    if (r->waiting) {
        if (c->in_notify) {
            r->next = c->completed;
            c->completed = r;
        } else {
            loop_co_wake(r->co);
        }
    }
    /* 1: libnbd retires the command; nobody asks for it by cookie. */
    return 1;
}

/*
 * Send @cmd and wait for its reply, on whichever connection is up,
 * issuing it again on a new connection when the one it went out on is
 * lost (within reconnect-delay).  0 or -errno; -EIO when no connection
 * could take it.
 */
static int nbd_co_do(NbdState *s, NbdCmd *cmd)
{
    for (;;) {
        NbdConn *c = nbd_co_get_conn(s);
        NbdReq r = { .co = co_self(), .cmd = cmd, .conn = c };
        uint64_t gen;
        int64_t cookie;

        if (!c) {
            return -EIO;
        }
        gen = c->generation;
        cookie = nbd_issue(c, &r);
        if (cookie < 0) {
            int err = nbd_get_errno() ? nbd_get_errno() : EIO;
            nbd_conn_check(c);
            if (c->generation != gen) {
                continue;
            }
            return -err;
        }
        nbd_conn_check(c);
        if (!r.done) {
            r.waiting = true;
            co_yield();
        }
        if (r.err && c->generation != gen) {
            continue;               /* lost with the connection: reissue */
        }
        return -r.err;
    }
}

static int nbd_co_rw(StrataNode *node, NbdCmdType type, int64_t offset,
                     int64_t bytes, const IOVector *qiov, int flags)
{
    NbdCmd cmd = {
        .type = type,
        .offset = offset,
        .bytes = bytes,
        .flags = flags & REQ_FUA ? LIBNBD_CMD_FLAG_FUA : 0,
    };

    if (bytes == 0) {
        return 0;
    }
    /* max_iov is 1: the request path hands over one buffer. */
    g_assert(qiov->niov == 1 && (int64_t)qiov->iov[0].iov_len == bytes);
    cmd.buf = qiov->iov[0].iov_base;
    return nbd_co_do(node->opaque, &cmd);
}

static int nbd_co_preadv(StrataNode *node, int64_t offset, int64_t bytes,
                         const IOVector *qiov, int flags)
{
    return nbd_co_rw(node, NBD_CMD_READ, offset, bytes, qiov, 0);
}

static int nbd_co_pwritev(StrataNode *node, int64_t offset, int64_t bytes,
                          const IOVector *qiov, int flags)
{
    return nbd_co_rw(node, NBD_CMD_WRITE, offset, bytes, qiov, flags);
}

static int nbd_co_pwrite_zeroes(StrataNode *node, int64_t offset,
                                int64_t bytes, int flags)
{
    NbdState *s = node->opaque;
    NbdCmd cmd = { .type = NBD_CMD_ZERO, .offset = offset, .bytes = bytes };

    if (!s->can_zero || ((flags & REQ_NO_FALLBACK) && !s->can_fast_zero)) {
        return -ENOTSUP;
    }
    if (!(flags & REQ_MAY_UNMAP)) {
        cmd.flags |= LIBNBD_CMD_FLAG_NO_HOLE;
    }
    if (flags & REQ_FUA) {
        cmd.flags |= LIBNBD_CMD_FLAG_FUA;
    }
    if (flags & REQ_NO_FALLBACK) {
        cmd.flags |= LIBNBD_CMD_FLAG_FAST_ZERO;
    }
    return nbd_co_do(s, &cmd);
}

static int nbd_co_pdiscard(StrataNode *node, int64_t offset, int64_t bytes)
{
    NbdState *s = node->opaque;
    NbdCmd cmd = { .type = NBD_CMD_TRIM, .offset = offset, .bytes = bytes };

    /* Discard is advisory: a server without trim drops it. */
    if (!s->can_trim) {
        return 0;
    }
    return nbd_co_do(s, &cmd);
}

static int nbd_co_flush(StrataNode *node)
{
    NbdState *s = node->opaque;
    NbdCmd cmd = { .type = NBD_CMD_FLUSH };

    /* A server without flush has nothing to make durable (NBD spec: it
     * does not advertise SEND_FLUSH then). */
    if (!s->can_flush) {
        return 0;
    }
    return nbd_co_do(s, &cmd);
}

/*
 * base:allocation → Strata: a hole is not DATA, a zero extent is ZERO (an
 * allocated extent that reads zeroes is both).  The query is widened to
 * the server's minimum block size, which the server may insist on.
 */
static int nbd_co_block_status(StrataNode *node, int64_t offset, int64_t bytes,
                               int64_t *pnum)
{
    NbdState *s = node->opaque;
    int64_t start = ROUND_DOWN(offset, (int64_t)s->min_block);
    int64_t end = MIN(ROUND_UP(offset + MIN(bytes, NBD_MAX_LEN32),
                               (int64_t)s->min_block), s->size);
    NbdCmd cmd = { .type = NBD_CMD_BLOCK_STATUS, .offset = start,
                   .bytes = end - start };
    int ret;

    if (!s->base_allocation || end <= start) {
        *pnum = bytes;
        return STRATA_BLOCK_DATA;
    }
    ret = nbd_co_do(s, &cmd);
    if (ret < 0) {
        return ret;
    }
    if (cmd.extent_len == 0 || start + cmd.extent_len <= offset) {
        /* A server that answered with nothing usable: say data, one
         * minimum block, as the NBD spec's fallback reading does. */
        *pnum = MIN(bytes, start + (int64_t)s->min_block - offset);
        return STRATA_BLOCK_DATA;
    }
    *pnum = MIN(bytes, start + cmd.extent_len - offset);
    return (cmd.extent_flags & LIBNBD_STATE_HOLE ? 0 : STRATA_BLOCK_DATA) |
           (cmd.extent_flags & LIBNBD_STATE_ZERO ? STRATA_BLOCK_ZERO : 0);
}

static int64_t nbd_get_length(StrataNode *node)
{
    NbdState *s = node->opaque;

    return s->size;
}

/*
 * The server's block size constraints become the node's limits: the
 * minimum is the request alignment (so the padding layer does the RMW a
 * 4 KiB-block server needs), the maximum caps a transfer, the preferred
 * size is the optimal transfer.  libnbd takes one buffer per command:
 * max_iov 1 has the request path gather vectors.
 */
static void nbd_refresh_limits(StrataNode *node, BlockLimits *bl)
{
    NbdState *s = node->opaque;
    int64_t max = s->max_block ? MIN((int64_t)s->max_block, NBD_MAX_RW)
                               : NBD_MAX_RW;

    bl->request_alignment = s->min_block;
    bl->mem_alignment = 1;
    bl->iov_len_alignment = 1;
    bl->max_transfer = ROUND_DOWN(max, (int64_t)s->min_block);
    bl->opt_transfer = s->pref_block > s->min_block ? s->pref_block : 0;
    bl->max_iov = 1;
    bl->pwrite_zeroes_alignment = s->min_block;
    bl->max_pwrite_zeroes = ROUND_DOWN(NBD_MAX_LEN32, (int64_t)s->min_block);
    bl->pdiscard_alignment = s->min_block;
    bl->max_pdiscard = ROUND_DOWN(NBD_MAX_LEN32, (int64_t)s->min_block);
}

/* ---- open and close -------------------------------------------------------------- */

/* An option of server.* that the server type does not take. */
static bool nbd_server_refuse(OptNode *server, const char *key,
                              const char *type, StrataError **errp)
{
    g_autofree char *p = NULL;

    if (!opts_has(server, key)) {
        return true;
    }
    p = opts_key_path(server, key);
    error_set_option(errp, "%s: not allowed with server.type=%s", p, type);
    return false;
}

/* server.* (the schema has checked the types and that type is there). */
static bool nbd_parse_server(NbdState *s, OptNode *server, StrataError **errp)
{
    const char *str;
    int type;

    if (!opts_get_enum(server, "type", nbd_server_types, NBD_SERVER_UNIX,
                       &type, errp)) {
        return false;
    }
    s->type = type;
    if (type == NBD_SERVER_UNIX) {
        if (!nbd_server_refuse(server, "host", "unix", errp) ||
            !nbd_server_refuse(server, "port", "unix", errp) ||
            !opts_require_str(server, "path", &str, errp)) {
            return false;
        }
        if (!*str) {
            g_autofree char *p = opts_key_path(server, "path");
            error_set_option(errp, "%s: must not be empty", p);
            return false;
        }
        s->path = g_strdup(str);
        return true;
    }
    if (!nbd_server_refuse(server, "path", "inet", errp) ||
        !opts_require_str(server, "host", &str, errp)) {
        return false;
    }
    if (!*str) {
        g_autofree char *p = opts_key_path(server, "host");
        error_set_option(errp, "%s: must not be empty", p);
        return false;
    }
    s->host = g_strdup(str);
    if (!opts_get_str(server, "port", NBD_DEFAULT_PORT, &str, errp)) {
        return false;
    }
    if (!*str) {
        g_autofree char *p = opts_key_path(server, "port");
        error_set_option(errp, "%s: must not be empty", p);
        return false;
    }
    s->port = g_strdup(str);
    return true;
}

static bool nbd_parse_options(NbdState *s, OptNode *opts, StrataError **errp)
{
    OptNode *server = opts_get(opts, "server");
    const char *str;
    int64_t delay, timeout, multi;

    if (!server) {
        g_autofree char *p = opts_key_path(opts, "server");
        error_set_option(errp, "%s: missing", p);
        return false;
    }
    if (!nbd_parse_server(s, server, errp) ||
        !opts_get_str(opts, "export", "", &str, errp)) {
        return false;
    }
    s->export = g_strdup(str);
    /* TLS: a tls-creds-x509 or tls-creds-psk object with endpoint=client;
     * libnbd loads the credentials from the object's directory (the file
     * names are QEMU's and libnbd's alike). */
    if (!opts_get_str(opts, "tls-creds", NULL, &str, errp)) {
        return false;
    }
    if (str) {
        g_autofree char *p = opts_key_path(opts, "tls-creds");
        s->tls_user = g_strdup_printf("node '%s'", s->node->node_name);
        s->tls_obj = object_use(str, OBJECT_TLS_CREDS_X509, s->tls_user,
                                NULL);
        if (!s->tls_obj) {
            s->tls_obj = object_use(str, OBJECT_TLS_CREDS_PSK, s->tls_user,
                                    errp);
            s->tls_psk = true;
        }
        if (!s->tls_obj) {
            error_prepend(errp, "%s: ", p);
            return false;
        }
        if (tls_creds_is_server(s->tls_obj)) {
            error_set_option(errp, "%s: object '%s' has endpoint=server; a "
                             "client needs endpoint=client", p, str);
            return false;
        }
        const char *dir = tls_creds_get_dir(s->tls_obj);
        s->tls_verify = tls_creds_verify_peer(s->tls_obj);
        if (s->tls_psk) {
            const char *user = tls_creds_get_username(s->tls_obj);
            s->tls_psk_file = g_build_filename(dir, "keys.psk", NULL);
            s->tls_username = g_strdup(user ? user : "qemu");
        } else {
            s->tls_dir = g_strdup(dir);
        }
    }
    if (!opts_get_str(opts, "tls-hostname", NULL, &str, errp) ||
        !opts_get_int(opts, "reconnect-delay", 0, &delay, errp) ||
        !opts_get_int(opts, "open-timeout", 0, &timeout, errp) ||
        !opts_get_int(opts, "multi-conn", 1, &multi, errp)) {
        return false;
    }
    /* The schema bounds these; the checks keep the arithmetic safe for
     * callers that bypass it. */
    if (delay < 0 || delay > UINT32_MAX || timeout < 0 ||
        timeout > UINT32_MAX || multi < 1 || multi > NBD_MAX_CONNS) {
        error_set_option(errp, "%s: out of range",
                         delay < 0 || delay > UINT32_MAX ? "reconnect-delay"
                         : multi < 1 || multi > NBD_MAX_CONNS ? "multi-conn"
                         : "open-timeout");
        return false;
    }
    s->reconnect_delay_ns = delay * NS_PER_SEC;
    s->open_timeout_ns = timeout * NS_PER_SEC;
    s->multi_conn = (int)multi;
    return true;
}

/* The first connection, at open: with open-timeout, retried until it
 * succeeds or the time is up (QEMU's behaviour: a server that is still
 * starting). */
static struct nbd_handle *nbd_connect_first(NbdState *s, StrataError **errp)
{
    int64_t deadline = clock_ns() + s->open_timeout_ns;
    int64_t backoff = NBD_RETRY_MIN_NS;

    for (;;) {
        NbdConnectJob j = { .s = s };

        if (nbd_connect_fn(&j) == 0) {
            return j.h;
        }
        if (clock_ns() + backoff >= deadline) {
            error_set(errp, STRATA_ERROR_IO, j.errnum, "%s", j.err);
            g_free(j.err);
            return NULL;
        }
        g_free(j.err);
        g_usleep(backoff / 1000);
        backoff = MIN(backoff * 2, NBD_RETRY_MAX_NS);
    }
}

/* What the server offers, from the first connection. */
static bool nbd_read_server_info(StrataNode *node, NbdState *s,
                                 struct nbd_handle *h, StrataError **errp)
{
    int64_t min = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
    int64_t pref = nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED);
    int64_t max = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
    g_autofree char *name = nbd_server_name(s);

    s->size = nbd_get_size(h);
    if (s->size < 0 || s->size > BLOCK_MAX_OFFSET) {
        error_set(errp, STRATA_ERROR_IO, EINVAL, "'%s': export size %" PRId64
                  " is not usable", name, s->size);
        return false;
    }
    /* NBD: the minimum is a power of two up to 64 KiB, 1 when absent. */
    s->min_block = min > 0 ? (uint32_t)min : 1;
    if (!is_power_of_2(s->min_block) ||
        s->min_block > BLOCK_MAX_REQUEST_ALIGN) {
        error_set(errp, STRATA_ERROR_IO, EINVAL, "'%s': the server's minimum "
                  "block size %" PRId64 " is not a power of two up to %u",
                  name, min, BLOCK_MAX_REQUEST_ALIGN);
        return false;
    }
    s->pref_block = pref > 0 && pref <= NBD_MAX_RW ? (uint32_t)pref : 0;
    s->max_block = max > 0 && max <= UINT32_MAX ? (uint32_t)max : 0;
    if (s->max_block && s->max_block < s->min_block) {
        s->max_block = 0;
    }
    s->can_flush = nbd_can_flush(h) > 0;
    s->can_fua = nbd_can_fua(h) > 0;
    s->can_trim = nbd_can_trim(h) > 0;
    s->can_zero = nbd_can_zero(h) > 0;
    s->can_fast_zero = nbd_can_fast_zero(h) > 0;
    s->can_multi_conn = nbd_can_multi_conn(h) > 0;
    s->base_allocation =
        nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) > 0;

    if (nbd_is_read_only(h) > 0 && !node->read_only) {
        if (!node->auto_read_only) {
            error_set(errp, STRATA_ERROR_PERMISSION, EACCES,
                      "'%s': NBD export is read-only", name);
            return false;
        }
        node->read_only = true;
    }
    return true;
}

static void nbd_close_conns(NbdState *s)
{
    s->closing = true;
    nbd_wake_waiters(s);
    /* A reconnect attempt in the pool finishes on its own (connecting to
     * a missing server fails fast); its coroutine then sees closing. */
    LOOP_RUN_WHILE(s->loop, s->reconnects_running > 0);
    for (int i = 0; i < s->nconn; i++) {
        NbdConn *c = &s->conn[i];
        if (c->h) {
            loop_set_fd_handler(s->loop, c->fd, NULL, NULL, NULL);
            /* Tell the server politely; the handle closes either way. */
            nbd_shutdown(c->h, 0);
            nbd_close(c->h);
            c->h = NULL;
        }
    }
    loop_timer_del(&s->deadline_timer);
}

static void nbd_node_close(StrataNode *node);

static bool nbd_node_open(StrataNode *node, OptNode *opts, StrataError **errp)
{
    NbdState *s = node->opaque;
    struct nbd_handle *h;

    s->node = node;
    s->loop = node->ctx->loop;
    co_queue_init(&s->up_waiters);
    loop_timer_init(&s->deadline_timer, s->loop, nbd_deadline_cb, s);
    for (int i = 0; i < NBD_MAX_CONNS; i++) {
        s->conn[i].s = s;
        s->conn[i].fd = -1;
    }
    if (!nbd_parse_options(s, opts, errp)) {
        goto fail;
    }
    h = nbd_connect_first(s, errp);
    if (!h) {
        goto fail;
    }
    if (!nbd_read_server_info(node, s, h, errp)) {
        nbd_close(h);
        goto fail;
    }
    s->nconn = 1;
    nbd_conn_attach(&s->conn[0], h);
    /* More connections only where the server says they see each other's
     * writes; elsewhere multi-conn quietly stays at one (as nbdcopy). */
    for (int i = 1; s->can_multi_conn && i < s->multi_conn; i++) {
        NbdConnectJob j = { .s = s };

        if (nbd_connect_fn(&j) < 0 || !nbd_handle_matches(s, j.h)) {
            if (j.h) {
                nbd_close(j.h);
            }
            error_set(errp, STRATA_ERROR_IO, j.err ? j.errnum : EIO,
                      "multi-conn: connection %d of %d: %s", i + 1,
                      s->multi_conn, j.err ? j.err
                      : "the server shows a different export");
            g_free(j.err);
            goto fail;
        }
        s->nconn++;
        nbd_conn_attach(&s->conn[i], j.h);
    }
    node->supports_fua = s->can_fua;
    node->total_bytes = s->size;
    return true;

fail:
    /* The graph calls close only for nodes whose open succeeded. */
    nbd_node_close(node);
    return false;
}

static void nbd_node_close(StrataNode *node)
{
    NbdState *s = node->opaque;

    nbd_close_conns(s);
    g_clear_pointer(&s->path, g_free);
    g_clear_pointer(&s->host, g_free);
    g_clear_pointer(&s->port, g_free);
    g_clear_pointer(&s->export, g_free);
    if (s->tls_obj) {
        object_unuse(s->tls_obj, s->tls_user);
        s->tls_obj = NULL;
    }
    g_clear_pointer(&s->tls_user, g_free);
    g_clear_pointer(&s->tls_dir, g_free);
    g_clear_pointer(&s->tls_psk_file, g_free);
    g_clear_pointer(&s->tls_username, g_free);
}

static void nbd_dump_info(StrataNode *node, GString *out)
{
    NbdState *s = node->opaque;
    g_autofree char *name = nbd_server_name(s);

    g_string_append_printf(out, "nbd: %s%s export '%s', %d of %d connection%s "
                           "up, block sizes %" PRIu32 "/%" PRIu32 "/%" PRIu32
                           ", %s%s%s%s%s%s%s, %" PRIu64 " reconnects\n",
                           s->type == NBD_SERVER_UNIX ? "unix:" : "inet:",
                           name, s->export, s->up, s->nconn,
                           s->nconn == 1 ? "" : "s", s->min_block,
                           s->pref_block, s->max_block,
                           s->can_flush ? "flush" : "no flush",
                           s->can_fua ? " fua" : "",
                           s->can_trim ? " trim" : "",
                           s->can_zero ? " zero" : "",
                           s->can_fast_zero ? " fast-zero" : "",
                           s->can_multi_conn ? " multi-conn" : "",
                           s->base_allocation ? " base:allocation" : "",
                           s->reconnects);
}

/* ---- legacy filenames ------------------------------------------------------------ */

/* Set @key in @opts unless the user gave it (explicit options win). */
static bool nbd_set_default(OptNode *opts, const char *key, const char *value,
                            StrataError **errp)
{
    return opts_set_default_str(opts, key, value, errp);
}

/* nbd://HOST[:PORT]/EXPORT, nbd+tcp://..., nbd+unix:///EXPORT?socket=PATH,
 * as QEMU reads them: the export is the path without its first '/', a
 * unix URI takes exactly the query socket=PATH and no host, a tcp URI a
 * host and no query.  Anything else is "No valid URL specified". */
static bool nbd_parse_uri(const char *filename, OptNode *opts,
                          StrataError **errp)
{
    g_autoptr(GUri) uri = g_uri_parse(filename, G_URI_FLAGS_ENCODED_QUERY,
                                      NULL);
    g_autoptr(GHashTable) params = NULL;
    const char *scheme, *path, *host, *query;
    bool is_unix;

    if (!uri) {
        goto invalid;
    }
    scheme = g_uri_get_scheme(uri);
    if (!strcmp(scheme, "nbd") || !strcmp(scheme, "nbd+tcp")) {
        is_unix = false;
    } else if (!strcmp(scheme, "nbd+unix")) {
        is_unix = true;
    } else {
        goto invalid;
    }
    path = g_uri_get_path(uri);
    if (path[0] == '/') {
        path++;
    }
    host = g_uri_get_host(uri);
    if (host && !*host) {
        host = NULL;
    }
    query = g_uri_get_query(uri);
    if (query && *query) {
        /* Two parameters, even of one name, are one too many. */
        if (strchr(query, '&') || strchr(query, ';')) {
            goto invalid;
        }
        params = g_uri_parse_params(query, -1, "&", G_URI_PARAMS_NONE, NULL);
        if (!params) {
            goto invalid;
        }
    }
    if (is_unix) {
        const char *sock = params ? g_hash_table_lookup(params, "socket")
                                  : NULL;
        if (host || g_uri_get_port(uri) != -1 || !sock) {
            goto invalid;
        }
        if (!nbd_set_default(opts, "server.type", "unix", errp) ||
            !nbd_set_default(opts, "server.path", sock, errp)) {
            return false;
        }
    } else {
        g_autofree char *port = NULL;

        if (!host || params) {
            goto invalid;
        }
        port = g_strdup_printf("%d", g_uri_get_port(uri) > 0
                               ? g_uri_get_port(uri) : atoi(NBD_DEFAULT_PORT));
        /* GUri keeps the brackets of an IPv6 literal off already. */
        if (!nbd_set_default(opts, "server.type", "inet", errp) ||
            !nbd_set_default(opts, "server.host", host, errp) ||
            !nbd_set_default(opts, "server.port", port, errp)) {
            return false;
        }
    }
    return !*path || nbd_set_default(opts, "export", path, errp);

invalid:
    error_set_option(errp, "No valid URL specified");
    return false;
}

/* HOST:PORT, HOST possibly a bracketed IPv6 literal: QEMU's inet_parse
 * without its ,option suffixes. */
static bool nbd_parse_host_port(const char *spec, OptNode *opts,
                                StrataError **errp)
{
    g_autofree char *host = NULL;
    const char *colon;

    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (!close || close[1] != ':') {
            goto invalid;
        }
        host = g_strndup(spec + 1, close - spec - 1);
        colon = close + 1;
    } else {
        colon = strchr(spec, ':');
        if (!colon || strchr(colon + 1, ':')) {
            goto invalid;
        }
        host = g_strndup(spec, colon - spec);
    }
    if (!colon[1]) {
        goto invalid;
    }
    return nbd_set_default(opts, "server.type", "inet", errp) &&
           nbd_set_default(opts, "server.host", host, errp) &&
           nbd_set_default(opts, "server.port", colon + 1, errp);

invalid:
    error_set_option(errp, "error parsing address '%s'", spec);
    return false;
}

static bool nbd_parse_filename(const char *filename, OptNode *opts,
                               StrataError **errp)
{
    static const char exportname[] = ":exportname=";
    g_autofree char *file = NULL;
    char *name;
    const char *spec;

    if (strstr(filename, "://")) {
        return nbd_parse_uri(filename, opts, errp);
    }
    file = g_strdup(filename);
    name = strstr(file, exportname);
    if (name) {
        *name = '\0';
        name += strlen(exportname);
        if (!*name) {
            /* QEMU then sets nothing, and the open misses the server. */
            error_set_option(errp, "NBD server address missing");
            return false;
        }
        if (!nbd_set_default(opts, "export", name, errp)) {
            return false;
        }
    }
    if (!g_str_has_prefix(file, "nbd:")) {
        error_set_option(errp, "File name string for NBD must start with "
                         "'nbd:'");
        return false;
    }
    spec = file + strlen("nbd:");
    if (!*spec) {
        error_set_option(errp, "NBD server address missing");
        return false;
    }
    if (g_str_has_prefix(spec, "unix:")) {
        return nbd_set_default(opts, "server.type", "unix", errp) &&
               nbd_set_default(opts, "server.path", spec + strlen("unix:"),
                               errp);
    }
    return nbd_parse_host_port(spec, opts, errp);
}

static const char *const nbd_protocols[] = { "nbd+tcp", "nbd+unix", NULL };

const BlockDriver bdrv_nbd = {
    .name = "nbd",
    .single_queue = true,
    .instance_size = sizeof(NbdState),
    .protocol_name = "nbd",
    .protocol_aliases = nbd_protocols,
    .parse_filename = nbd_parse_filename,
    .open = nbd_node_open,
    .close = nbd_node_close,
    .co_preadv = nbd_co_preadv,
    .co_pwritev = nbd_co_pwritev,
    .co_pwrite_zeroes = nbd_co_pwrite_zeroes,
    .co_pdiscard = nbd_co_pdiscard,
    .co_flush = nbd_co_flush,
    .co_block_status = nbd_co_block_status,
    .get_length = nbd_get_length,
    .refresh_limits = nbd_refresh_limits,
    .dump_info = nbd_dump_info,
};
