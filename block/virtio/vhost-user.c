/*
 * vhost-user message framing (SPDX-License-Identifier: MIT).  See
 * vhost-user.h.
 */
#include "block/virtio/vhost-user.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib.h>

#include "util/loop.h"

/* What each request carries: its payload size (0: none; SIZE_VARIABLE:
 * checked by vu_msg_check's own case) and how many fds (exactly; FDS_ONE
 * unless the NOFD flag is set in the vring index payload). */
#define SIZE_VARIABLE   UINT32_MAX
#define FDS_VRING       -1

typedef struct VuRequestInfo {
    const char *name;
    uint32_t size;
    int fds;
} VuRequestInfo;

static const VuRequestInfo vu_requests[VHOST_USER_MAX_REQUEST] = {
    [VHOST_USER_GET_FEATURES] = { "GET_FEATURES", 0, 0 },
    [VHOST_USER_SET_FEATURES] = { "SET_FEATURES", 8, 0 },
    [VHOST_USER_SET_OWNER] = { "SET_OWNER", 0, 0 },
    [VHOST_USER_RESET_OWNER] = { "RESET_OWNER", 0, 0 },
    [VHOST_USER_SET_MEM_TABLE] = { "SET_MEM_TABLE", SIZE_VARIABLE, 0 },
    [VHOST_USER_SET_LOG_BASE] = { "SET_LOG_BASE", SIZE_VARIABLE, 0 },
    [VHOST_USER_SET_LOG_FD] = { "SET_LOG_FD", SIZE_VARIABLE, 0 },
    [VHOST_USER_SET_VRING_NUM] = { "SET_VRING_NUM", 8, 0 },
    [VHOST_USER_SET_VRING_ADDR] = { "SET_VRING_ADDR",
                                    sizeof(VhostUserVringAddr), 0 },
    [VHOST_USER_SET_VRING_BASE] = { "SET_VRING_BASE", 8, 0 },
    [VHOST_USER_GET_VRING_BASE] = { "GET_VRING_BASE", 8, 0 },
    [VHOST_USER_SET_VRING_KICK] = { "SET_VRING_KICK", 8, FDS_VRING },
    [VHOST_USER_SET_VRING_CALL] = { "SET_VRING_CALL", 8, FDS_VRING },
    [VHOST_USER_SET_VRING_ERR] = { "SET_VRING_ERR", 8, FDS_VRING },
    [VHOST_USER_GET_PROTOCOL_FEATURES] = { "GET_PROTOCOL_FEATURES", 0, 0 },
    [VHOST_USER_SET_PROTOCOL_FEATURES] = { "SET_PROTOCOL_FEATURES", 8, 0 },
    [VHOST_USER_GET_QUEUE_NUM] = { "GET_QUEUE_NUM", 0, 0 },
    [VHOST_USER_SET_VRING_ENABLE] = { "SET_VRING_ENABLE", 8, 0 },
    [VHOST_USER_SET_BACKEND_REQ_FD] = { "SET_BACKEND_REQ_FD", 0, 1 },
    [VHOST_USER_GET_CONFIG] = { "GET_CONFIG", SIZE_VARIABLE, 0 },
    [VHOST_USER_SET_CONFIG] = { "SET_CONFIG", SIZE_VARIABLE, 0 },
    [VHOST_USER_GET_INFLIGHT_FD] = { "GET_INFLIGHT_FD",
                                     sizeof(VhostUserInflight), 0 },
    [VHOST_USER_SET_INFLIGHT_FD] = { "SET_INFLIGHT_FD",
                                     sizeof(VhostUserInflight), 1 },
    [VHOST_USER_GET_MAX_MEM_SLOTS] = { "GET_MAX_MEM_SLOTS", 0, 0 },
    [VHOST_USER_ADD_MEM_REG] = { "ADD_MEM_REG",
                                 sizeof(VhostUserMemRegMsg), 1 },
    [VHOST_USER_REM_MEM_REG] = { "REM_MEM_REG",
                                 sizeof(VhostUserMemRegMsg), SIZE_VARIABLE },
};

const char *vu_request_name(uint32_t request)
{
    if (request < VHOST_USER_MAX_REQUEST && vu_requests[request].name) {
        return vu_requests[request].name;
    }
    return "UNKNOWN";
}

int vu_msg_check(const VhostUserMsg *msg, const char **why)
{
    const VhostUserHeader *h = &msg->hdr;
    uint32_t req = h->request;
    const char *dummy;

    why = why ? why : &dummy;
    if (msg->fds_overflow) {
        *why = "more fds than any request carries";
        return -EBADF;
    }
    if ((h->flags & VHOST_USER_VERSION_MASK) != VHOST_USER_VERSION) {
        *why = "bad version in the header flags";
        return -EINVAL;
    }
    if (req >= VHOST_USER_MAX_REQUEST || !vu_requests[req].name) {
        *why = "unknown request";
        return -ENOSYS;
    }
    const VuRequestInfo *info = &vu_requests[req];
    if (h->size > VHOST_USER_PAYLOAD_MAX) {
        *why = "payload larger than any request has";
        return -EINVAL;
    }
    switch (req) {
    case VHOST_USER_SET_MEM_TABLE: {
        uint32_t n;
        if (h->size < 8) {
            *why = "memory table shorter than its count";
            return -EINVAL;
        }
        n = msg->payload.memory.nregions;
        if (n == 0 || n > VHOST_USER_MEM_REGIONS) {
            *why = "memory table region count out of range";
            return -EINVAL;
        }
        if (h->size != 8 + n * sizeof(VhostUserMemRegion)) {
            *why = "memory table size does not match its region count";
            return -EINVAL;
        }
        if (msg->nfds != (int)n) {
            *why = "memory table needs one fd per region";
            return -EBADF;
        }
        return 0;
    }
    case VHOST_USER_GET_CONFIG:
    case VHOST_USER_SET_CONFIG: {
        const VhostUserConfig *c = &msg->payload.config;
        if (h->size < VHOST_USER_CONFIG_HDR_SIZE) {
            *why = "config message shorter than its header";
            return -EINVAL;
        }
        if (c->size > VHOST_USER_CONFIG_MAX ||
            c->offset > VHOST_USER_CONFIG_MAX - c->size ||
            h->size != VHOST_USER_CONFIG_HDR_SIZE + c->size) {
            *why = "config offset or size out of range";
            return -EINVAL;
        }
        break;
    }
    case VHOST_USER_SET_LOG_BASE:
    case VHOST_USER_SET_LOG_FD:
        break;      /* not offered: refused by the back end */
    case VHOST_USER_REM_MEM_REG:
        /* QEMU sends the region's fd along; either is fine. */
        if (h->size != info->size) {
            *why = "wrong payload size";
            return -EINVAL;
        }
        return msg->nfds <= 1 ? 0 : -EBADF;
    default:
        if (h->size != info->size) {
            *why = "wrong payload size";
            return -EINVAL;
        }
        break;
    }
    int want = info->fds;
    if (want == FDS_VRING) {
        want = (msg->payload.u64 & VHOST_USER_VRING_NOFD) ? 0 : 1;
    }
    if (msg->nfds != want) {
        *why = want ? "the fd the request needs is missing"
                    : "unexpected fds with the request";
        return -EBADF;
    }
    return 0;
}

void vu_msg_close_fds(VhostUserMsg *msg)
{
    for (int i = 0; i < msg->nfds; i++) {
        if (msg->fds[i] >= 0) {
            close(msg->fds[i]);
        }
    }
    msg->nfds = 0;
    msg->fds_overflow = false;
}

int vu_msg_take_fd(VhostUserMsg *msg, int i)
{
    if (i < 0 || i >= msg->nfds) {
        return -1;
    }
    int fd = msg->fds[i];
    msg->fds[i] = -1;
    return fd;
}

void vu_reader_init(VuReader *r)
{
    memset(r, 0, sizeof(*r));
}

void vu_reader_cleanup(VuReader *r)
{
    vu_msg_close_fds(&r->msg);
    r->got = 0;
}

/* Keep the fds of a control message; fds beyond what a message may carry
 * are closed (and the message then fails its check). */
static void reader_take_cmsg(VhostUserMsg *m, struct msghdr *mh)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const int *fds = (const int *)CMSG_DATA(c);
        for (size_t i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, &fds[i], sizeof(fd));
            if (m->nfds < VHOST_USER_MAX_FDS) {
                m->fds[m->nfds++] = fd;
            } else {
                close(fd);
                m->fds_overflow = true;     /* vu_msg_check refuses it */
            }
        }
    }
}

int vu_reader_read(VuReader *r, int fd, VhostUserMsg *msg)
{
    for (;;) {
        size_t want = VHOST_USER_HDR_SIZE;
        if (r->got >= VHOST_USER_HDR_SIZE) {
            if (r->msg.hdr.size > VHOST_USER_PAYLOAD_MAX) {
                return -EMSGSIZE;
            }
            want += r->msg.hdr.size;
        }
        if (r->got == want) {
            *msg = r->msg;
            memset(&r->msg, 0, sizeof(r->msg));
            r->got = 0;
            return 1;
        }
        uint8_t *base = r->got < VHOST_USER_HDR_SIZE
                        ? (uint8_t *)&r->msg.hdr + r->got
                        : (uint8_t *)&r->msg.payload +
                          (r->got - VHOST_USER_HDR_SIZE);
        struct iovec iov = { .iov_base = base, .iov_len = want - r->got };
        union {
            char buf[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_FDS)];
            struct cmsghdr align;
        } cbuf;
        struct msghdr mh = {
            .msg_iov = &iov, .msg_iovlen = 1,
            .msg_control = cbuf.buf, .msg_controllen = sizeof(cbuf.buf),
        };
        ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
        }
        reader_take_cmsg(&r->msg, &mh);
        if (mh.msg_flags & MSG_CTRUNC) {
            return -EBADF;
        }
        if (n == 0) {
            return -ECONNRESET;
        }
        r->got += (size_t)n;
    }
}

static int wait_fd(int fd, short events, int64_t deadline_ns)
{
    int64_t left = deadline_ns - clock_ns();
    if (left <= 0) {
        return -ETIMEDOUT;
    }
    struct pollfd p = { .fd = fd, .events = events };
    int r = poll(&p, 1, (int)MIN(left / 1000000 + 1, INT32_MAX));
    if (r < 0) {
        return errno == EINTR ? 0 : -errno;
    }
    return r == 0 ? -ETIMEDOUT : 0;
}

int vu_msg_send(int fd, const VhostUserHeader *hdr, const void *payload,
                const int *fds, int nfds, int timeout_ms)
{
    int64_t deadline = clock_ns() + (int64_t)timeout_ms * 1000000;
    struct iovec iov[2] = {
        { .iov_base = (void *)hdr, .iov_len = VHOST_USER_HDR_SIZE },
        { .iov_base = (void *)payload, .iov_len = payload ? hdr->size : 0 },
    };
    size_t total = VHOST_USER_HDR_SIZE + iov[1].iov_len, sent = 0;
    union {
        char buf[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_FDS)];
        struct cmsghdr align;
    } cbuf;

    if (nfds < 0 || nfds > VHOST_USER_MAX_FDS) {
        return -EINVAL;
    }
    while (sent < total) {
        struct iovec cur[2];
        int n_iov = 0;
        size_t skip = sent;
        for (int i = 0; i < 2; i++) {
            if (skip >= iov[i].iov_len) {
                skip -= iov[i].iov_len;
                continue;
            }
            cur[n_iov].iov_base = (char *)iov[i].iov_base + skip;
            cur[n_iov].iov_len = iov[i].iov_len - skip;
            skip = 0;
            n_iov++;
        }
        struct msghdr mh = { .msg_iov = cur, .msg_iovlen = n_iov };
        if (sent == 0 && nfds > 0) {
            memset(&cbuf, 0, sizeof(cbuf));
            mh.msg_control = cbuf.buf;
            mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
            struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
            memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
        }
        ssize_t n = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                return -errno;
            }
            int r = wait_fd(fd, POLLOUT, deadline);
            if (r < 0) {
                return r;
            }
            continue;
        }
        sent += (size_t)n;
    }
    return 0;
}

int vu_msg_recv(int fd, VhostUserMsg *msg, int timeout_ms)
{
    int64_t deadline = clock_ns() + (int64_t)timeout_ms * 1000000;
    VuReader r;

    vu_reader_init(&r);
    for (;;) {
        int ret = vu_reader_read(&r, fd, msg);
        if (ret > 0) {
            return 0;
        }
        if (ret < 0) {
            vu_reader_cleanup(&r);
            return ret;
        }
        ret = wait_fd(fd, POLLIN, deadline);
        if (ret < 0) {
            vu_reader_cleanup(&r);
            return ret;
        }
    }
}
