/*
 * NBD server and the "nbd" export type (SPDX-License-Identifier: MIT).
 * See nbd.h and docs/nbd.md.
 */
#include "block/export/nbd.h"

#include <endian.h>
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>
#include <gnutls/gnutls.h>

#include "block/backend-int.h"
#include "block/export/export.h"
#include "block/object.h"
#include "util/coroutine.h"
#include "util/iov.h"
#include "util/loop.h"
#include "util/socket.h"

/* ---- protocol constants ---------------------------------------------------- */

#define NBD_MAGIC               0x4e42444d41474943ULL   /* "NBDMAGIC" */
#define NBD_IHAVEOPT            0x49484156454f5054ULL
#define NBD_REP_MAGIC           0x0003e889045565a9ULL
#define NBD_REQUEST_MAGIC       0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC  0x67446698u
#define NBD_STRUCTURED_MAGIC    0x668e33efu

#define NBD_FLAG_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_NO_ZEROES      (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES    (1u << 1)

enum {
    NBD_OPT_EXPORT_NAME = 1, NBD_OPT_ABORT = 2, NBD_OPT_LIST = 3,
    NBD_OPT_STARTTLS = 5, NBD_OPT_INFO = 6, NBD_OPT_GO = 7,
    NBD_OPT_STRUCTURED_REPLY = 8, NBD_OPT_LIST_META_CONTEXT = 9,
    NBD_OPT_SET_META_CONTEXT = 10,
};

#define NBD_REP_ERR(x)          ((1u << 31) | (x))
enum {
    NBD_REP_ACK = 1, NBD_REP_SERVER = 2, NBD_REP_INFO = 3,
    NBD_REP_META_CONTEXT = 4,
    NBD_REP_ERR_UNSUP = NBD_REP_ERR(1), NBD_REP_ERR_POLICY = NBD_REP_ERR(2),
    NBD_REP_ERR_INVALID = NBD_REP_ERR(3), NBD_REP_ERR_TLS_REQD = NBD_REP_ERR(5),
    NBD_REP_ERR_UNKNOWN = NBD_REP_ERR(6), NBD_REP_ERR_SHUTDOWN = NBD_REP_ERR(7),
    NBD_REP_ERR_TOO_BIG = NBD_REP_ERR(9),
};

enum { NBD_INFO_EXPORT = 0, NBD_INFO_NAME = 1, NBD_INFO_DESCRIPTION = 2,
       NBD_INFO_BLOCK_SIZE = 3 };

enum {
    NBD_FLAG_HAS_FLAGS = 1 << 0, NBD_FLAG_READ_ONLY = 1 << 1,
    NBD_FLAG_SEND_FLUSH = 1 << 2, NBD_FLAG_SEND_FUA = 1 << 3,
    NBD_FLAG_SEND_TRIM = 1 << 5, NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6,
    NBD_FLAG_SEND_DF = 1 << 7, NBD_FLAG_CAN_MULTI_CONN = 1 << 8,
    NBD_FLAG_SEND_CACHE = 1 << 10, NBD_FLAG_SEND_FAST_ZERO = 1 << 11,
};

enum {
    NBD_CMD_READ = 0, NBD_CMD_WRITE = 1, NBD_CMD_DISC = 2, NBD_CMD_FLUSH = 3,
    NBD_CMD_TRIM = 4, NBD_CMD_CACHE = 5, NBD_CMD_WRITE_ZEROES = 6,
    NBD_CMD_BLOCK_STATUS = 7,
};

enum {
    NBD_CMD_FLAG_FUA = 1 << 0, NBD_CMD_FLAG_NO_HOLE = 1 << 1,
    NBD_CMD_FLAG_DF = 1 << 2, NBD_CMD_FLAG_REQ_ONE = 1 << 3,
    NBD_CMD_FLAG_FAST_ZERO = 1 << 4,
};

#define NBD_REPLY_FLAG_DONE     (1u << 0)
enum {
    NBD_REPLY_TYPE_NONE = 0, NBD_REPLY_TYPE_OFFSET_DATA = 1,
    NBD_REPLY_TYPE_OFFSET_HOLE = 2, NBD_REPLY_TYPE_BLOCK_STATUS = 5,
    NBD_REPLY_TYPE_ERROR = (1 << 15) + 1,
};

enum {
    NBD_EPERM = 1, NBD_EIO = 5, NBD_ENOMEM = 12, NBD_EINVAL = 22,
    NBD_ENOSPC = 28, NBD_EOVERFLOW = 75, NBD_ENOTSUP = 95,
    NBD_ESHUTDOWN = 108,
};

#define NBD_STATE_HOLE          (1u << 0)
#define NBD_STATE_ZERO          (1u << 1)
#define META_BASE_ALLOCATION_ID 1

/* Negotiation limits: what one client can make the server hold. */
#define NBD_MAX_OPTION_LENGTH   (64u << 10)
#define NBD_MAX_OPTIONS         256
#define NBD_MAX_NAME            4096
#define NBD_MAX_EXTENTS         1024

/* ---- state ---------------------------------------------------------------------- */

typedef struct NbdServer NbdServer;
typedef struct NbdConn NbdConn;

typedef struct NbdExport {
    BlockExport *exp;
    char *name;
    char *description;
    int multi_conn;             /* 0 on, 1 off, 2 auto (schema order) */
    GList *conns;               /* NbdConn * */
    bool hard;
} NbdExport;

typedef struct NbdReq {
    NbdConn *c;
    uint16_t flags, type;
    uint64_t handle, offset;
    uint32_t len;
    void *buf;                  /* cap bytes, 4 KiB-aligned, reused */
    size_t cap;
    struct NbdReq *next;        /* free list */
} NbdReq;

struct NbdConn {
    NbdServer *srv;
    NbdExport *nexp;            /* once an export is chosen */
    int fd;
    Loop *loop;
    Coroutine *read_waiter, *write_waiter;
    bool structured;
    bool meta_base_allocation;
    bool no_zeroes;
    bool closing;               /* stop reading requests */
    int in_flight;
    CoQueue idle;               /* the reader waits for in-flight ones */
    CoMutex send_lock;
    NbdReq *free_reqs;
    gnutls_session_t tls;       /* after STARTTLS, or NULL */
    StrataObject *creds;        /* TLS required with these, or NULL */
    /* Input read ahead of the parser: pipelined request headers arrive
     * many per recv() instead of one syscall each. */
    uint8_t *rbuf;
    size_t rpos, rlen;
    bool handlers_set, read_on, write_on, read_paused;
};

#define NBD_RBUF_SIZE (64u << 10)

struct NbdServer {
    StrataContext *ctx;
    Loop *loop;
    int listen_fd;
    char *unlink_path;
    int max_connections;
    int nconns;
    GList *conns;               /* NbdConn * */
    StrataObject *tls;
};

static NbdServer *server;
static GList *nbd_exports;      /* NbdExport * */

/* ---- socket I/O in coroutines ----------------------------------------------- */

static void conn_update_handlers(NbdConn *c);
static void conn_move(NbdConn *c, Loop *loop);
static void conn_readable(void *opaque);
static void conn_writable(void *opaque);

/*
 * fd interest.  Read interest stays on while the reader waits and between
 * its waits, so a steady stream of requests costs no epoll_ctl: it is
 * dropped only when data arrives while nobody waits (the reader is busy;
 * level-triggered, it would fire again and again) and taken again at the
 * next wait.  Write interest is on only while a sender waits.
 */
static void conn_update_handlers(NbdConn *c)
{
    bool want_read = c->read_waiter || !c->read_paused;
    bool want_write = c->write_waiter != NULL;

    if (c->handlers_set && want_read == c->read_on &&
        want_write == c->write_on) {
        return;
    }
    c->handlers_set = true;
    c->read_on = want_read;
    c->write_on = want_write;
    loop_set_fd_handler(c->loop, c->fd, want_read ? conn_readable : NULL,
                        want_write ? conn_writable : NULL, c);
}

static void conn_readable(void *opaque)
{
    NbdConn *c = opaque;
    Coroutine *co = c->read_waiter;

    c->read_waiter = NULL;
    if (!co) {
        c->read_paused = true;
        conn_update_handlers(c);
        return;
    }
    co_enter(co);
}

static void conn_writable(void *opaque)
{
    NbdConn *c = opaque;
    Coroutine *co = c->write_waiter;

    c->write_waiter = NULL;
    conn_update_handlers(c);
    if (co) {
        co_enter(co);
    }
}

static void conn_co_wait(NbdConn *c, bool for_write)
{
    if (for_write) {
        c->write_waiter = co_self();
    } else {
        c->read_waiter = co_self();
        c->read_paused = false;
    }
    conn_update_handlers(c);
    co_yield();
}

/* One TLS record read or write: bytes, 0 at the end of the stream, or
 * -errno.  GnuTLS may want to write while reading (and the other way
 * round): wait for what it asks for.  Data GnuTLS already decrypted
 * (gnutls_record_check_pending) is read before waiting on the socket. */
static ssize_t conn_co_tls_io(NbdConn *c, void *buf, size_t len, bool write)
{
    for (;;) {
        ssize_t n = write ? gnutls_record_send(c->tls, buf, len)
                          : gnutls_record_recv(c->tls, buf, len);
        if (n >= 0) {
            return n;
        }
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
            if (!write && gnutls_record_check_pending(c->tls)) {
                continue;
            }
            conn_co_wait(c, gnutls_record_get_direction(c->tls) == 1);
            continue;
        }
        return n == GNUTLS_E_PREMATURE_TERMINATION ? 0 : -EIO;
    }
}

/* Read exactly @len bytes: 0, or -EPIPE at end of stream, or -errno.
 * Plain sockets read through c->rbuf: what is buffered is served first,
 * small reads refill the buffer with one recv(), and large ones (write
 * payloads) go straight into @buf. */
static int conn_co_read(NbdConn *c, void *buf, size_t len)
{
    char *p = buf;

    if (len == 0) {
        return 0;               /* e.g. an empty WRITE: @buf may be NULL */
    }
    if (c->rlen > c->rpos) {
        size_t n = MIN(len, c->rlen - c->rpos);
        memcpy(p, c->rbuf + c->rpos, n);
        c->rpos += n;
        p += n;
        len -= n;
    }
    while (len && !c->tls && len < NBD_RBUF_SIZE / 2) {
        ssize_t n = recv(c->fd, c->rbuf, NBD_RBUF_SIZE, MSG_DONTWAIT);
        if (n > 0) {
            size_t take = MIN(len, (size_t)n);
            memcpy(p, c->rbuf, take);
            c->rpos = take;
            c->rlen = (size_t)n;
            p += take;
            len -= take;
        } else if (n == 0) {
            return -EPIPE;
        } else if (errno == EAGAIN) {
            conn_co_wait(c, false);
        } else if (errno != EINTR) {
            return -errno;
        }
    }
    while (len) {
        ssize_t n;
        if (c->tls) {
            n = conn_co_tls_io(c, p, len, false);
            if (n < 0) {
                return (int)n;
            }
            if (n == 0) {
                return -EPIPE;
            }
            p += n;
            len -= (size_t)n;
            continue;
        }
        n = recv(c->fd, p, len, MSG_DONTWAIT);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n == 0) {
            return -EPIPE;
        } else if (errno == EAGAIN) {
            c->read_waiter = co_self();
            conn_update_handlers(c);
            co_yield();
        } else if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

/* Write all of @iov (modified): 0 or -errno. */
static int conn_co_writev(NbdConn *c, struct iovec *iov, int niov)
{
    if (c->tls) {
        /* Corked: one record per reply where it fits, not one per piece. */
        gnutls_record_cork(c->tls);
        for (int i = 0; i < niov; i++) {
            size_t off = 0;
            while (off < iov[i].iov_len) {
                ssize_t n = conn_co_tls_io(c, (char *)iov[i].iov_base + off,
                                           iov[i].iov_len - off, true);
                if (n <= 0) {
                    return n < 0 ? (int)n : -EPIPE;
                }
                off += (size_t)n;
            }
        }
        for (;;) {
            int ret = gnutls_record_uncork(c->tls, 0);
            if (ret >= 0) {
                return 0;
            }
            if (ret != GNUTLS_E_AGAIN && ret != GNUTLS_E_INTERRUPTED) {
                return -EIO;
            }
            conn_co_wait(c, true);
        }
    }
    while (niov > 0) {
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)niov };
        ssize_t n = sendmsg(c->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) {
                c->write_waiter = co_self();
                conn_update_handlers(c);
                co_yield();
                continue;
            }
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        while (niov > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            niov--;
        }
        if (niov > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

static int conn_co_write(NbdConn *c, const void *buf, size_t len)
{
    struct iovec iov = { (void *)buf, len };
    return conn_co_writev(c, &iov, 1);
}

/* Discard @len bytes of input. */
static int conn_co_skip(NbdConn *c, size_t len)
{
    char buf[4096];

    while (len) {
        size_t n = MIN(len, sizeof(buf));
        int ret = conn_co_read(c, buf, n);
        if (ret < 0) {
            return ret;
        }
        len -= n;
    }
    return 0;
}

/* ---- negotiation ----------------------------------------------------------------- */

static int send_rep(NbdConn *c, uint32_t opt, uint32_t type,
                    const void *data, uint32_t len)
{
    struct {
        uint64_t magic;
        uint32_t opt, type, len;
    } __attribute__((packed)) h = {
        htobe64(NBD_REP_MAGIC), htobe32(opt), htobe32(type), htobe32(len),
    };
    struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)data, len } };
    return conn_co_writev(c, iov, len ? 2 : 1);
}

static int send_rep_err(NbdConn *c, uint32_t opt, uint32_t type,
                        const char *msg)
{
    return send_rep(c, opt, type, msg, (uint32_t)strlen(msg));
}

static NbdExport *find_export(const char *name)
{
    for (GList *l = nbd_exports; l; l = l->next) {
        NbdExport *e = l->data;
        if (!strcmp(e->name, name) && !e->exp->shutting_down) {
            return e;
        }
    }
    return NULL;
}

static uint16_t export_flags(NbdConn *c, NbdExport *e)
{
    uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
                 NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE;

    if (!e->exp->writable) {
        f |= NBD_FLAG_READ_ONLY;
    } else {
        f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
             NBD_FLAG_SEND_FAST_ZERO;
    }
    if (c->structured) {
        f |= NBD_FLAG_SEND_DF;
    }
    /* Every connection of an export shares one backend on one node, so a
     * flush on any connection flushes the node: it covers the writes
     * completed on all of them.  Hence auto means on. */
    if (e->multi_conn != 1) {
        f |= NBD_FLAG_CAN_MULTI_CONN;
    }
    return f;
}

static int64_t export_size(NbdExport *e)
{
    return backend_co_get_length(e->exp->be);
}

/* The preferred block size: the largest alignment any node down the
 * export's chain pads to, or the physical block size where a node knows
 * it (a 4K-native or 512e device under raw says 4096), at least 512.  Smaller requests work (minimum 1): the padding layer turns
 * them into read-modify-write, which costs a read. */
static uint32_t export_pref_block(NbdExport *e)
{
    uint32_t pref = 512;

    for (StrataNode *n = strata_backend_get_root(e->exp->be); n;
         n = node_filtered(n)) {
        pref = MAX(pref, MAX(n->bl.request_alignment,
                             n->bl.physical_block_size));
    }
    return MIN(pref, 65536u);
}

static int send_info_export(NbdConn *c, uint32_t opt, NbdExport *e)
{
    struct {
        uint16_t type;
        uint64_t size;
        uint16_t flags;
    } __attribute__((packed)) info = {
        htobe16(NBD_INFO_EXPORT), htobe64((uint64_t)export_size(e)),
        htobe16(export_flags(c, e)),
    };
    return send_rep(c, opt, NBD_REP_INFO, &info, sizeof(info));
}

/* OPT_INFO / OPT_GO: 0 when the reply was sent (and, for GO with
 * success, @chosen set), <0 when the connection must close. */
static int handle_info_go(NbdConn *c, uint32_t opt, const uint8_t *data,
                          uint32_t len, NbdExport **chosen)
{
    uint32_t namelen;
    uint16_t nreq;

    if (len < 6 || (memcpy(&namelen, data, 4), namelen = be32toh(namelen),
                    namelen > len - 6)) {
        return send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                            "malformed NBD_OPT_INFO/GO");
    }
    memcpy(&nreq, data + 4 + namelen, 2);
    nreq = be16toh(nreq);
    if (6 + namelen + 2u * nreq != len) {
        return send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                            "malformed NBD_OPT_INFO/GO");
    }
    g_autofree char *name = g_strndup((const char *)data + 4, namelen);
    NbdExport *e = find_export(name);
    if (!e && !*name && nbd_exports) {
        e = nbd_exports->data;     /* the default export */
    }
    if (!e) {
        g_autofree char *msg = g_strdup_printf("export '%s' not present",
                                               name);
        return send_rep_err(c, opt, NBD_REP_ERR_UNKNOWN, msg);
    }
    bool want_block_size = false;
    for (uint16_t i = 0; i < nreq; i++) {
        uint16_t t;
        memcpy(&t, data + 4 + namelen + 2 + 2 * i, 2);
        t = be16toh(t);
        if (t == NBD_INFO_NAME) {
            g_autofree uint8_t *buf = g_malloc(2 + strlen(e->name));
            uint16_t ty = htobe16(NBD_INFO_NAME);
            memcpy(buf, &ty, 2);
            memcpy(buf + 2, e->name, strlen(e->name));
            if (send_rep(c, opt, NBD_REP_INFO, buf,
                         (uint32_t)(2 + strlen(e->name))) < 0) {
                return -EIO;
            }
        } else if (t == NBD_INFO_DESCRIPTION && e->description) {
            size_t dl = strlen(e->description);
            g_autofree uint8_t *buf = g_malloc(2 + dl);
            uint16_t ty = htobe16(NBD_INFO_DESCRIPTION);
            memcpy(buf, &ty, 2);
            memcpy(buf + 2, e->description, dl);
            if (send_rep(c, opt, NBD_REP_INFO, buf, (uint32_t)(2 + dl)) < 0) {
                return -EIO;
            }
        } else if (t == NBD_INFO_BLOCK_SIZE) {
            want_block_size = true;
        }
    }
    /* Block sizes go out whether asked or not: the minimum is 1 (the
     * padding layer takes any request), which every client accepts. */
    (void)want_block_size;
    struct {
        uint16_t type;
        uint32_t min, pref, max;
    } __attribute__((packed)) bs = {
        htobe16(NBD_INFO_BLOCK_SIZE), htobe32(1),
        htobe32(export_pref_block(e)), htobe32(NBD_SERVER_MAX_REQUEST),
    };
    if (send_rep(c, opt, NBD_REP_INFO, &bs, sizeof(bs)) < 0 ||
        send_info_export(c, opt, e) < 0 ||
        send_rep(c, opt, NBD_REP_ACK, NULL, 0) < 0) {
        return -EIO;
    }
    if (opt == NBD_OPT_GO) {
        *chosen = e;
    }
    return 0;
}

/* LIST_META_CONTEXT / SET_META_CONTEXT: only base:allocation exists. */
static int handle_meta(NbdConn *c, uint32_t opt, const uint8_t *data,
                       uint32_t len)
{
    uint32_t namelen, nq, pos;
    bool match = false;

    if (opt == NBD_OPT_SET_META_CONTEXT && !c->structured) {
        return send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                            "structured replies not negotiated");
    }
    if (len < 8) {
        return send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                            "malformed meta context option");
    }
    memcpy(&namelen, data, 4);
    namelen = be32toh(namelen);
    if (namelen > len - 8) {
        return send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                            "malformed meta context option");
    }
    g_autofree char *name = g_strndup((const char *)data + 4, namelen);
    if (!find_export(name)) {
        g_autofree char *msg = g_strdup_printf("export '%s' not present",
                                               name);
        return send_rep_err(c, opt, NBD_REP_ERR_UNKNOWN, msg);
    }
    pos = 4 + namelen;
    memcpy(&nq, data + pos, 4);
    nq = be32toh(nq);
    pos += 4;
    if (nq == 0 && opt == NBD_OPT_LIST_META_CONTEXT) {
        match = true;           /* list everything */
    }
    for (uint32_t i = 0; i < nq; i++) {
        uint32_t ql;
        if (len - pos < 4) {
            return send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                                "malformed meta context query");
        }
        memcpy(&ql, data + pos, 4);
        ql = be32toh(ql);
        pos += 4;
        if (ql > len - pos) {
            return send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                                "malformed meta context query");
        }
        const char *q = (const char *)data + pos;
        if ((ql == 15 && !memcmp(q, "base:allocation", 15)) ||
            (opt == NBD_OPT_LIST_META_CONTEXT && ql == 5 &&
             !memcmp(q, "base:", 5))) {
            match = true;
        }
        pos += ql;
    }
    if (opt == NBD_OPT_SET_META_CONTEXT) {
        c->meta_base_allocation = match;
    }
    if (match) {
        uint8_t buf[4 + 15];
        uint32_t id = htobe32(META_BASE_ALLOCATION_ID);
        memcpy(buf, &id, 4);
        memcpy(buf + 4, "base:allocation", 15);
        if (send_rep(c, opt, NBD_REP_META_CONTEXT, buf, sizeof(buf)) < 0) {
            return -EIO;
        }
    }
    return send_rep(c, opt, NBD_REP_ACK, NULL, 0);
}

static int handle_list(NbdConn *c)
{
    for (GList *l = nbd_exports; l; l = l->next) {
        NbdExport *e = l->data;
        if (e->exp->shutting_down) {
            continue;
        }
        size_t nl = strlen(e->name), dl = e->description
                                          ? strlen(e->description) : 0;
        g_autofree uint8_t *buf = g_malloc(4 + nl + dl);
        uint32_t n = htobe32((uint32_t)nl);
        memcpy(buf, &n, 4);
        memcpy(buf + 4, e->name, nl);
        if (dl) {
            memcpy(buf + 4 + nl, e->description, dl);
        }
        if (send_rep(c, NBD_OPT_LIST, NBD_REP_SERVER, buf,
                     (uint32_t)(4 + nl + dl)) < 0) {
            return -EIO;
        }
    }
    return send_rep(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

/* STARTTLS accepted: the TLS handshake on the socket, with the server's
 * credentials; with verify-peer, the client's certificate must check out
 * against the CA.  0, or <0 and the connection closes. */
static int conn_co_starttls(NbdConn *c)
{
    StrataObject *creds = c->creds;
    bool psk = object_get_kind(creds) == OBJECT_TLS_CREDS_PSK;
    const char *prio = tls_creds_get_priority(creds);
    int ret;

    if (gnutls_init(&c->tls, GNUTLS_SERVER | GNUTLS_NONBLOCK) < 0) {
        c->tls = NULL;
        return -ENOMEM;
    }
    if (prio) {
        ret = gnutls_priority_set_direct(c->tls, prio, NULL);
    } else if (psk) {
        ret = gnutls_priority_set_direct(c->tls,
                                         "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK",
                                         NULL);
    } else {
        ret = gnutls_set_default_priority(c->tls);
    }
    if (ret < 0 ||
        gnutls_credentials_set(c->tls, psk ? GNUTLS_CRD_PSK
                                           : GNUTLS_CRD_CERTIFICATE,
                               tls_creds_get_gnutls(creds)) < 0) {
        return -EINVAL;
    }
    if (!psk) {
        gnutls_certificate_server_set_request(
            c->tls, tls_creds_verify_peer(creds) ? GNUTLS_CERT_REQUIRE
                                                 : GNUTLS_CERT_IGNORE);
    }
    gnutls_transport_set_int(c->tls, c->fd);
    for (;;) {
        ret = gnutls_handshake(c->tls);
        if (ret == GNUTLS_E_SUCCESS) {
            break;
        }
        if (ret != GNUTLS_E_AGAIN && ret != GNUTLS_E_INTERRUPTED) {
            return -EIO;
        }
        conn_co_wait(c, gnutls_record_get_direction(c->tls) == 1);
    }
    if (!psk && tls_creds_verify_peer(creds)) {
        unsigned status;
        if (gnutls_certificate_verify_peers2(c->tls, &status) < 0 ||
            status != 0) {
            return -EACCES;
        }
    }
    return 0;
}

/* The handshake: the chosen export, or NULL (the connection closes). */
static NbdExport *negotiate(NbdConn *c)
{
    struct {
        uint64_t magic, opt_magic;
        uint16_t flags;
    } __attribute__((packed)) hello = {
        htobe64(NBD_MAGIC), htobe64(NBD_IHAVEOPT),
        htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES),
    };
    uint32_t cflags;

    if (conn_co_write(c, &hello, sizeof(hello)) < 0 ||
        conn_co_read(c, &cflags, 4) < 0) {
        return NULL;
    }
    cflags = be32toh(cflags);
    if (!(cflags & NBD_FLAG_C_FIXED_NEWSTYLE) ||
        (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))) {
        return NULL;            /* old style or unknown flags: refuse */
    }
    c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;

    for (int nopts = 0; nopts < NBD_MAX_OPTIONS; nopts++) {
        struct {
            uint64_t magic;
            uint32_t opt, len;
        } __attribute__((packed)) h;
        if (conn_co_read(c, &h, sizeof(h)) < 0 ||
            be64toh(h.magic) != NBD_IHAVEOPT) {
            return NULL;
        }
        uint32_t opt = be32toh(h.opt), len = be32toh(h.len);
        if (len > NBD_MAX_OPTION_LENGTH) {
            /* Skip it without holding it, then refuse. */
            if (opt == NBD_OPT_EXPORT_NAME || conn_co_skip(c, len) < 0 ||
                send_rep_err(c, opt, NBD_REP_ERR_TOO_BIG,
                             "option too long") < 0) {
                return NULL;
            }
            continue;
        }
        g_autofree uint8_t *data = g_malloc(len + 1);
        if (conn_co_read(c, data, len) < 0) {
            return NULL;
        }
        data[len] = 0;
        if (c->creds && !c->tls && opt != NBD_OPT_STARTTLS &&
            opt != NBD_OPT_ABORT) {
            if (opt == NBD_OPT_EXPORT_NAME) {
                return NULL;
            }
            if (send_rep_err(c, opt, NBD_REP_ERR_TLS_REQD,
                             "TLS is required") < 0) {
                return NULL;
            }
            continue;
        }
        int ret = 0;
        NbdExport *chosen = NULL;
        switch (opt) {
        case NBD_OPT_EXPORT_NAME: {
            NbdExport *e = find_export((const char *)data);
            if (!e && !len && nbd_exports) {
                e = nbd_exports->data;
            }
            if (!e) {
                return NULL;    /* the protocol's only answer */
            }
            uint8_t reply[8 + 2 + 124] = { 0 };
            uint64_t size = htobe64((uint64_t)export_size(e));
            uint16_t fl = htobe16(export_flags(c, e));
            memcpy(reply, &size, 8);
            memcpy(reply + 8, &fl, 2);
            if (conn_co_write(c, reply, c->no_zeroes ? 10 : sizeof(reply))
                < 0) {
                return NULL;
            }
            return e;
        }
        case NBD_OPT_ABORT:
            send_rep(c, opt, NBD_REP_ACK, NULL, 0);
            return NULL;
        case NBD_OPT_LIST:
            ret = len ? send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                                     "NBD_OPT_LIST takes no data")
                      : handle_list(c);
            break;
        case NBD_OPT_STARTTLS:
            if (!c->creds) {
                ret = send_rep_err(c, opt, NBD_REP_ERR_POLICY,
                                   "TLS is not configured on this server");
            } else if (c->tls) {
                ret = send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                                   "TLS is already active");
            } else if (len) {
                ret = send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                                   "NBD_OPT_STARTTLS takes no data");
            } else if (c->rlen > c->rpos) {
                /* Plaintext sent after STARTTLS, before our answer: the
                 * client cannot have seen the ACK; a protocol violation
                 * (and it would be read as handshake data). */
                return NULL;
            } else if (send_rep(c, opt, NBD_REP_ACK, NULL, 0) < 0 ||
                       conn_co_starttls(c) < 0) {
                return NULL;
            }
            break;
        case NBD_OPT_INFO:
        case NBD_OPT_GO:
            ret = handle_info_go(c, opt, data, len, &chosen);
            break;
        case NBD_OPT_STRUCTURED_REPLY:
            if (len) {
                ret = send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                                   "NBD_OPT_STRUCTURED_REPLY takes no data");
            } else if (c->structured) {
                ret = send_rep_err(c, opt, NBD_REP_ERR_INVALID,
                                   "structured replies already negotiated");
            } else {
                c->structured = true;
                ret = send_rep(c, opt, NBD_REP_ACK, NULL, 0);
            }
            break;
        case NBD_OPT_LIST_META_CONTEXT:
        case NBD_OPT_SET_META_CONTEXT:
            ret = handle_meta(c, opt, data, len);
            break;
        default:
            ret = send_rep_err(c, opt, NBD_REP_ERR_UNSUP,
                               "option not supported");
            break;
        }
        if (ret < 0) {
            return NULL;
        }
        if (chosen) {
            return chosen;
        }
    }
    return NULL;                /* too many options */
}

/* ---- transmission ----------------------------------------------------------- */

static int nbd_errno(int err)
{
    switch (err) {
    case 0: return 0;
    case EPERM: case EROFS: return NBD_EPERM;
    case ENOMEM: return NBD_ENOMEM;
    case EINVAL: return NBD_EINVAL;
    case ENOSPC: case EFBIG: return NBD_ENOSPC;
    case EOVERFLOW: return NBD_EOVERFLOW;
    case ENOTSUP: return NBD_ENOTSUP;
    case ESHUTDOWN: return NBD_ESHUTDOWN;
    default: return NBD_EIO;
    }
}

static NbdReq *req_get(NbdConn *c, size_t len)
{
    NbdReq *r = c->free_reqs;

    if (r) {
        c->free_reqs = r->next;
    } else {
        r = g_new0(NbdReq, 1);
        r->c = c;
    }
    if (r->cap < len) {
        free(r->buf);
        size_t cap = MAX(len, (size_t)65536);
        if (posix_memalign(&r->buf, 4096, cap)) {
            r->buf = NULL;
            r->cap = 0;
            g_free(r);
            return NULL;
        }
        r->cap = cap;
    }
    return r;
}

static void req_put(NbdReq *r)
{
    NbdConn *c = r->c;

    r->next = c->free_reqs;
    c->free_reqs = r;
}

static int send_simple(NbdConn *c, uint64_t handle, int err,
                       const void *data, size_t len)
{
    struct {
        uint32_t magic, error;
        uint64_t handle;
    } __attribute__((packed)) h = {
        htobe32(NBD_SIMPLE_REPLY_MAGIC), htobe32((uint32_t)nbd_errno(err)),
        handle,
    };
    struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)data, len } };
    return conn_co_writev(c, iov, err || !len ? 1 : 2);
}

static int send_chunk(NbdConn *c, uint64_t handle, uint16_t flags,
                      uint16_t type, struct iovec *payload, int npayload)
{
    struct {
        uint32_t magic;
        uint16_t flags, type;
        uint64_t handle;
        uint32_t len;
    } __attribute__((packed)) h;
    struct iovec iov[4];
    size_t len = 0;

    for (int i = 0; i < npayload; i++) {
        len += payload[i].iov_len;
        iov[i + 1] = payload[i];
    }
    h.magic = htobe32(NBD_STRUCTURED_MAGIC);
    h.flags = htobe16(flags);
    h.type = htobe16(type);
    h.handle = handle;
    h.len = htobe32((uint32_t)len);
    iov[0] = (struct iovec){ &h, sizeof(h) };
    return conn_co_writev(c, iov, npayload + 1);
}

static int send_error_chunk(NbdConn *c, uint64_t handle, int err,
                            const char *msg)
{
    struct {
        uint32_t error;
        uint16_t msglen;
    } __attribute__((packed)) e = {
        htobe32((uint32_t)nbd_errno(err)), htobe16((uint16_t)strlen(msg)),
    };
    struct iovec p[2] = { { &e, sizeof(e) }, { (void *)msg, strlen(msg) } };
    return send_chunk(c, handle, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR,
                      p, 2);
}

/* Reply to a request that has no data to return. */
static int reply_status(NbdConn *c, NbdReq *r, int err)
{
    if (c->structured && err) {
        return send_error_chunk(c, r->handle, err, g_strerror(err));
    }
    if (c->structured) {
        return send_chunk(c, r->handle, NBD_REPLY_FLAG_DONE,
                          NBD_REPLY_TYPE_NONE, NULL, 0);
    }
    return send_simple(c, r->handle, err, NULL, 0);
}

static int do_block_status(NbdConn *c, NbdReq *r, uint32_t *ext, int *next)
{
    StrataBackend *be = c->nexp->exp->be;
    int64_t off = (int64_t)r->offset, end = off + r->len;
    int n = 0;

    while (off < end && n < NBD_MAX_EXTENTS) {
        int64_t pnum;
        int st = backend_co_block_status(be, off, end - off, &pnum);
        if (st < 0) {
            return st;
        }
        if (pnum <= 0) {
            break;
        }
        uint32_t flags = (st & STRATA_BLOCK_DATA ? 0 : NBD_STATE_HOLE) |
                         (st & STRATA_BLOCK_ZERO ? NBD_STATE_ZERO : 0);
        pnum = MIN(pnum, (int64_t)UINT32_MAX & ~4095LL);
        if (n && be32toh(ext[2 * n - 1]) == flags &&
            (uint64_t)be32toh(ext[2 * n - 2]) + (uint64_t)pnum <= UINT32_MAX) {
            ext[2 * n - 2] = htobe32(be32toh(ext[2 * n - 2]) + (uint32_t)pnum);
        } else {
            ext[2 * n] = htobe32((uint32_t)pnum);
            ext[2 * n + 1] = htobe32(flags);
            n++;
        }
        off += pnum;
        if (r->flags & NBD_CMD_FLAG_REQ_ONE) {
            break;
        }
    }
    *next = n;
    return 0;
}

static void request_co(void *opaque)
{
    NbdReq *r = opaque;
    NbdConn *c = r->c;
    StrataBackend *be = c->nexp->exp->be;
    int64_t off = (int64_t)r->offset;
    IOVector qiov;
    int ret = 0;
    uint32_t flags = r->flags & NBD_CMD_FLAG_FUA ? STRATA_REQ_FUA : 0;

    switch (r->type) {
    case NBD_CMD_READ:
        iov_init_buf(&qiov, r->buf, r->len);
        ret = backend_co_preadv(be, off, r->len, &qiov, 0);
        break;
    case NBD_CMD_WRITE:
        iov_init_buf(&qiov, r->buf, r->len);
        ret = backend_co_pwritev(be, off, r->len, &qiov, (int)flags);
        break;
    case NBD_CMD_FLUSH:
        ret = backend_co_flush(be);
        break;
    case NBD_CMD_TRIM:
        ret = backend_co_pdiscard(be, off, r->len);
        if (ret == 0 && (r->flags & NBD_CMD_FLAG_FUA)) {
            ret = backend_co_flush(be);
        }
        break;
    case NBD_CMD_WRITE_ZEROES:
        if (!(r->flags & NBD_CMD_FLAG_NO_HOLE)) {
            flags |= STRATA_REQ_MAY_UNMAP;
        }
        if (r->flags & NBD_CMD_FLAG_FAST_ZERO) {
            flags |= STRATA_REQ_NO_FALLBACK;
        }
        ret = backend_co_pwrite_zeroes(be, off, r->len, (int)flags);
        break;
    case NBD_CMD_CACHE:
        ret = 0;                /* advisory: nothing to prefetch into */
        break;
    case NBD_CMD_BLOCK_STATUS:
        break;                  /* below, under the send lock's budget */
    }
    if (ret < 0) {
        export_io_error(c->nexp->exp, r->type != NBD_CMD_READ, -ret);
    }

    co_mutex_lock(&c->send_lock);
    if (r->type == NBD_CMD_READ && ret == 0) {
        if (c->structured) {
            uint64_t be_off = htobe64(r->offset);
            struct iovec p[2] = { { &be_off, 8 }, { r->buf, r->len } };
            send_chunk(c, r->handle, NBD_REPLY_FLAG_DONE,
                       NBD_REPLY_TYPE_OFFSET_DATA, p, 2);
        } else {
            send_simple(c, r->handle, 0, r->buf, r->len);
        }
    } else if (r->type == NBD_CMD_BLOCK_STATUS) {
        uint32_t *ext = r->buf;     /* 2 words per extent, after the id */
        int n = 0;
        ret = do_block_status(c, r, ext + 1, &n);
        if (ret < 0) {
            send_error_chunk(c, r->handle, -ret, "block status failed");
        } else {
            ext[0] = htobe32(META_BASE_ALLOCATION_ID);
            struct iovec p = { ext, 4 + 8 * (size_t)n };
            send_chunk(c, r->handle, NBD_REPLY_FLAG_DONE,
                       NBD_REPLY_TYPE_BLOCK_STATUS, &p, 1);
        }
    } else {
        reply_status(c, r, -ret);
    }
    co_mutex_unlock(&c->send_lock);

    req_put(r);
    if (--c->in_flight == 0) {
        co_queue_restart_all(&c->idle);
    }
}

/* Check a request before it runs: 0, or the errno of the error reply. */
static int check_request(NbdConn *c, NbdReq *r, int64_t size)
{
    bool writable = c->nexp->exp->writable;
    uint16_t allowed = 0;

    switch (r->type) {
    case NBD_CMD_READ:
        allowed = c->structured ? NBD_CMD_FLAG_DF : 0;
        break;
    case NBD_CMD_WRITE:
        allowed = NBD_CMD_FLAG_FUA;
        break;
    case NBD_CMD_TRIM:
        allowed = NBD_CMD_FLAG_FUA;
        break;
    case NBD_CMD_WRITE_ZEROES:
        allowed = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE |
                  NBD_CMD_FLAG_FAST_ZERO;
        break;
    case NBD_CMD_BLOCK_STATUS:
        allowed = NBD_CMD_FLAG_REQ_ONE;
        if (!c->meta_base_allocation) {
            return EINVAL;
        }
        break;
    case NBD_CMD_FLUSH:
    case NBD_CMD_CACHE:
        break;
    default:
        return EINVAL;
    }
    if (r->flags & ~allowed & ~NBD_CMD_FLAG_FUA) {
        return EINVAL;
    }
    bool is_write = r->type == NBD_CMD_WRITE || r->type == NBD_CMD_TRIM ||
                    r->type == NBD_CMD_WRITE_ZEROES;
    if (is_write && !writable) {
        return EPERM;
    }
    if (r->type == NBD_CMD_FLUSH) {
        return r->offset || r->len ? EINVAL : 0;
    }
    if (r->len == 0 || r->offset > (uint64_t)size ||
        r->len > (uint64_t)size - r->offset) {
        return r->type == NBD_CMD_WRITE || r->type == NBD_CMD_WRITE_ZEROES
               ? ENOSPC : EINVAL;
    }
    if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) &&
        r->len > NBD_SERVER_MAX_REQUEST) {
        return EOVERFLOW;
    }
    return 0;
}

static void conn_free(NbdConn *c);

static void client_gone(void *opaque)
{
    export_client_remove(opaque);
}

static void conn_co(void *opaque)
{
    NbdConn *c = opaque;
    NbdExport *e = negotiate(c);

    if (!e) {
        conn_free(c);
        return;
    }
    c->nexp = e;
    e->conns = g_list_append(e->conns, c);
    export_client_add(e->exp);
    /* An export with an iothread serves its connections there: the
     * transmission phase, requests and replies run in that thread; with
     * iothreads=, each connection in the next one's. */
    Loop *origin = c->loop;
    StrataQueue *q = export_next_queue(e->exp);
    if (q) {
        conn_move(c, q->loop);
    }

    while (!c->closing) {
        struct {
            uint32_t magic;
            uint16_t flags, type;
            uint64_t handle, offset;
            uint32_t len;
        } __attribute__((packed)) h;
        if (conn_co_read(c, &h, sizeof(h)) < 0 ||
            be32toh(h.magic) != NBD_REQUEST_MAGIC) {
            break;              /* gone, or garbage: close this one */
        }
        uint16_t type = be16toh(h.type);
        uint32_t len = be32toh(h.len);
        if (type == NBD_CMD_DISC) {
            break;
        }
        bool has_payload = type == NBD_CMD_WRITE;
        if (has_payload && len > NBD_SERVER_MAX_REQUEST) {
            break;              /* cannot resynchronise: the spec allows
                                   closing */
        }
        /* The size the request is checked against.  A read longer than
         * the export fails the check: its buffer need not be bigger. */
        int64_t size = export_size(e);
        NbdReq *r = req_get(c, has_payload
                               ? len
                               : type == NBD_CMD_READ
                               ? MIN(MIN(len, NBD_SERVER_MAX_REQUEST),
                                     (uint64_t)MAX(size, 0))
                               : type == NBD_CMD_BLOCK_STATUS
                               ? 4 + 8 * NBD_MAX_EXTENTS : 0);
        if (!r) {
            break;
        }
        r->flags = be16toh(h.flags);
        r->type = type;
        r->handle = h.handle;   /* echoed as sent */
        r->offset = be64toh(h.offset);
        r->len = len;
        if (has_payload && conn_co_read(c, r->buf, len) < 0) {
            req_put(r);
            break;
        }
        int err = check_request(c, r, size);
        if (err) {
            co_mutex_lock(&c->send_lock);
            reply_status(c, r, err);
            co_mutex_unlock(&c->send_lock);
            req_put(r);
            continue;
        }
        c->in_flight++;
        loop_co_spawn(c->loop, request_co, r);
    }
    /* DISC, end of stream or a hard delete: the requests already read
     * complete (their replies go out while the socket takes them). */
    c->closing = true;
    while (c->in_flight > 0) {
        co_queue_wait(&c->idle, NULL);
    }
    /* Teardown touches the server's and the export's lists: back home. */
    conn_move(c, origin);
    e->conns = g_list_remove(e->conns, c);
    Loop *loop = c->loop;
    conn_free(c);
    /* The last client of a deleted export frees it, and with it the
     * backend, which drains: not from inside a coroutine. */
    loop_oneshot(loop, client_gone, e->exp);
}

/* Move a connection (its fd handler and the calling coroutine, its
 * reader) to another loop; nothing of it may be in flight. */
static void conn_move(NbdConn *c, Loop *loop)
{
    if (c->loop == loop) {
        return;
    }
    loop_set_fd_handler(c->loop, c->fd, NULL, NULL, NULL);
    c->handlers_set = c->read_on = c->write_on = false;
    c->loop = loop;
    co_yield_to_loop(loop);
}

static void conn_free(NbdConn *c)
{
    if (c->tls) {
        gnutls_deinit(c->tls);
    }
    if (c->creds) {
        object_unuse(c->creds, "an NBD connection");
    }
    g_free(c->rbuf);
    loop_set_fd_handler(c->loop, c->fd, NULL, NULL, NULL);
    close(c->fd);
    while (c->free_reqs) {
        NbdReq *r = c->free_reqs;
        c->free_reqs = r->next;
        free(r->buf);
        g_free(r);
    }
    if (c->srv) {
        c->srv->conns = g_list_remove(c->srv->conns, c);
        c->srv->nconns--;
    }
    g_free(c);
}

/* ---- the server ------------------------------------------------------------ */

static void server_add_client(NbdServer *s, int fd)
{
    if (s->max_connections && s->nconns >= s->max_connections) {
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    NbdConn *c = g_new0(NbdConn, 1);
    c->srv = s;
    c->fd = fd;
    c->loop = s->loop;
    co_mutex_init(&c->send_lock);
    co_queue_init(&c->idle);
    c->rbuf = g_malloc(NBD_RBUF_SIZE);
    if (s->tls) {
        /* The connection holds the credentials its session uses, even
         * after the server stops. */
        c->creds = object_use(object_get_id(s->tls),
                              object_get_kind(s->tls), "an NBD connection",
                              NULL);
    }
    s->conns = g_list_append(s->conns, c);
    s->nconns++;
    loop_co_spawn(s->loop, conn_co, c);
}

static void server_accept(void *opaque)
{
    NbdServer *s = opaque;
    int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (fd >= 0) {
        server_add_client(s, fd);
    }
}

bool nbd_server_add_client(int fd)
{
    if (!server) {
        return false;
    }
    server_add_client(server, fd);
    return true;
}

static int listen_addr(OptNode *addr, char **unlink_path, StrataError **errp)
{
    const char *type, *path = NULL, *host = NULL, *port = NULL;
    OptNode *data = opts_peek(addr, "data");

    if (opts_type(addr) != OPT_OBJECT) {
        error_set_option(errp, "addr: expected an object");
        return -1;
    }
    if (data && opts_type(data) == OPT_OBJECT) {
        /* QMP's legacy form {"type": ..., "data": {...}} */
        opts_get(addr, "data");
        if (!opts_require_str(addr, "type", &type, errp)) {
            return -1;
        }
        addr = data;
    } else if (!opts_require_str(addr, "type", &type, errp)) {
        return -1;
    }
    int fd = -1;
    if (!strcmp(type, "unix")) {
        if (!opts_require_str(addr, "path", &path, errp)) {
            return -1;
        }
        fd = socket_listen_unix(path, 64, unlink_path, errp);
    } else if (!strcmp(type, "inet")) {
        if (!opts_require_str(addr, "host", &host, errp) ||
            !opts_get_str(addr, "port", "10809", &port, errp)) {
            return -1;
        }
        fd = socket_listen_tcp(host, port, 64, errp);
    } else {
        error_set_option(errp, "addr.type: expected unix or inet, not '%s'",
                         type);
        return -1;
    }
    if (fd < 0) {
        error_prepend(errp, "addr: ");
    }
    return fd;
}

bool nbd_server_running(void)
{
    return server != NULL;
}

bool nbd_server_start(StrataContext *ctx, OptNode *opts, StrataError **errp)
{
    int64_t maxc = 0;
    const char *tls = NULL, *authz = NULL;
    g_autofree char *unlink_path = NULL;

    if (server) {
        error_setg(errp, "NBD server already running");
        return false;
    }
    OptNode *addr = opts_get(opts, "addr");
    if (!addr) {
        error_set_option(errp, "addr: missing");
        return false;
    }
    opts_mark_consumed(addr);
    if (!opts_get_int(opts, "max-connections", 0, &maxc, errp) ||
        !opts_get_str(opts, "tls-creds", NULL, &tls, errp) ||
        !opts_get_str(opts, "tls-authz", NULL, &authz, errp) ||
        !opts_check_consumed(opts, errp)) {
        return false;
    }
    if (maxc < 0 || maxc > INT32_MAX) {
        error_set_option(errp, "max-connections: must be 0 or more");
        return false;
    }
    if (authz) {
        error_set_option(errp, "tls-authz: not supported");
        return false;
    }
    StrataObject *creds = NULL;
    if (tls) {
        creds = object_use(tls, OBJECT_TLS_CREDS_X509, "the NBD server",
                           NULL);
        if (!creds) {
            creds = object_use(tls, OBJECT_TLS_CREDS_PSK, "the NBD server",
                               errp);
        }
        if (!creds) {
            error_prepend(errp, "tls-creds: ");
            return false;
        }
        if (!tls_creds_is_server(creds)) {
            object_unuse(creds, "the NBD server");
            error_set_option(errp, "tls-creds: object '%s' has "
                             "endpoint=client; the server needs "
                             "endpoint=server", tls);
            return false;
        }
    }
    int fd = listen_addr(addr, &unlink_path, errp);
    if (fd < 0) {
        if (creds) {
            object_unuse(creds, "the NBD server");
        }
        return false;
    }
    server = g_new0(NbdServer, 1);
    server->ctx = ctx;
    server->loop = ctx->loop;
    server->listen_fd = fd;
    server->unlink_path = g_steal_pointer(&unlink_path);
    server->max_connections = (int)maxc;
    server->tls = creds;
    loop_set_fd_handler(server->loop, fd, server_accept, NULL, server);
    return true;
}

static void conn_end(NbdConn *c)
{
    /* Stop reading: the reader sees end of stream, lets the requests it
     * started finish, and closes. */
    c->closing = true;
    shutdown(c->fd, SHUT_RD);
}

bool nbd_server_stop(StrataError **errp)
{
    if (!server) {
        error_setg(errp, "NBD server not running");
        return false;
    }
    loop_set_fd_handler(server->loop, server->listen_fd, NULL, NULL, NULL);
    close(server->listen_fd);
    if (server->unlink_path) {
        unlink(server->unlink_path);
    }
    g_free(server->unlink_path);
    /* Connections still negotiating are ended; those serving an export
     * end with it (block-export-del / shutdown). */
    for (GList *l = server->conns; l; l = l->next) {
        NbdConn *c = l->data;
        c->srv = NULL;
        if (!c->nexp) {
            conn_end(c);
        }
    }
    g_list_free(server->conns);
    if (server->tls) {
        object_unuse(server->tls, "the NBD server");
    }
    g_free(server);
    server = NULL;
    return true;
}

/* ---- the export type ---------------------------------------------------------- */

static bool nbd_export_create(BlockExport *exp, OptNode *opts,
                              StrataError **errp)
{
    NbdExport *e = exp->opaque;
    const char *name = NULL, *desc = NULL;
    bool depth = false;

    if (!opts_get_str(opts, "name", NULL, &name, errp) ||
        !opts_get_str(opts, "description", NULL, &desc, errp) ||
        !opts_get_bool(opts, "allocation-depth", false, &depth, errp) ||
        !opts_get_enum(opts, "multi-conn", (const char *const[]){
                           "on", "off", "auto", NULL }, 2, &e->multi_conn,
                       errp)) {
        return false;
    }
    if (depth) {
        error_set_option(errp, "allocation-depth: the "
                         "qemu:allocation-depth context is not offered");
        return false;
    }
    if (!name) {
        name = exp->node_name;
    }
    if (strlen(name) > NBD_MAX_NAME) {
        error_set_option(errp, "name: longer than %d bytes", NBD_MAX_NAME);
        return false;
    }
    if (find_export(name)) {
        error_set_option(errp, "name: an NBD export named '%s' already "
                         "exists", name);
        return false;
    }
    if (desc && strlen(desc) > NBD_MAX_NAME) {
        error_set_option(errp, "description: longer than %d bytes",
                         NBD_MAX_NAME);
        return false;
    }
    e->exp = exp;
    e->name = g_strdup(name);
    e->description = g_strdup(desc);
    nbd_exports = g_list_append(nbd_exports, e);
    return true;
}

static void nbd_export_request_shutdown(BlockExport *exp, bool hard)
{
    NbdExport *e = exp->opaque;

    if (hard) {
        for (GList *l = e->conns; l; l = l->next) {
            conn_end(l->data);
        }
    }
}

static void nbd_export_destroy(BlockExport *exp)
{
    NbdExport *e = exp->opaque;

    nbd_exports = g_list_remove(nbd_exports, e);
    g_free(e->name);
    g_free(e->description);
}

static const BlockExportDriver nbd_export_driver = {
    .type = "nbd",
    .instance_size = sizeof(NbdExport),
    .create = nbd_export_create,
    .request_shutdown = nbd_export_request_shutdown,
    .destroy = nbd_export_destroy,
};

void nbd_export_register(void)
{
    export_register_driver(&nbd_export_driver);
}
