/*
 * vhost-user protocol: message layout and framing, shared by the back end
 * (block/export/vhost-user-blk.c) and the in-process front end
 * (block/virtio/vu-frontend.c)
 * SPDX-License-Identifier: MIT
 *
 * From the specification (QEMU's docs/interop/vhost-user.rst).  Every
 * message is a 12-byte header (request, flags, payload size; host byte
 * order, which is little endian on every host this runs on) followed by
 * the payload; file descriptors travel as SCM_RIGHTS ancillary data of the
 * header's bytes.
 *
 *   0        4        8        12                     12 + size
 *   | request| flags  |  size  | payload ...            |
 *
 * Decode (vu_msg_check) is separate from execution: it checks the payload
 * size and the number of fds of each request against the table of
 * vhost-user.c, with no side effects, so that a fuzzer reaches it.
 */
#ifndef STRATA_BLOCK_VIRTIO_VHOST_USER_H
#define STRATA_BLOCK_VIRTIO_VHOST_USER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Front end -> back end requests. */
enum {
    VHOST_USER_NONE = 0,
    VHOST_USER_GET_FEATURES = 1,
    VHOST_USER_SET_FEATURES = 2,
    VHOST_USER_SET_OWNER = 3,
    VHOST_USER_RESET_OWNER = 4,
    VHOST_USER_SET_MEM_TABLE = 5,
    VHOST_USER_SET_LOG_BASE = 6,
    VHOST_USER_SET_LOG_FD = 7,
    VHOST_USER_SET_VRING_NUM = 8,
    VHOST_USER_SET_VRING_ADDR = 9,
    VHOST_USER_SET_VRING_BASE = 10,
    VHOST_USER_GET_VRING_BASE = 11,
    VHOST_USER_SET_VRING_KICK = 12,
    VHOST_USER_SET_VRING_CALL = 13,
    VHOST_USER_SET_VRING_ERR = 14,
    VHOST_USER_GET_PROTOCOL_FEATURES = 15,
    VHOST_USER_SET_PROTOCOL_FEATURES = 16,
    VHOST_USER_GET_QUEUE_NUM = 17,
    VHOST_USER_SET_VRING_ENABLE = 18,
    VHOST_USER_SET_BACKEND_REQ_FD = 21,
    VHOST_USER_GET_CONFIG = 24,
    VHOST_USER_SET_CONFIG = 25,
    VHOST_USER_GET_INFLIGHT_FD = 31,
    VHOST_USER_SET_INFLIGHT_FD = 32,
    VHOST_USER_GET_MAX_MEM_SLOTS = 36,
    VHOST_USER_ADD_MEM_REG = 37,
    VHOST_USER_REM_MEM_REG = 38,
    VHOST_USER_MAX_REQUEST = 64,
};

/* Back end -> front end requests (on the SET_BACKEND_REQ_FD channel). */
enum {
    VHOST_USER_BACKEND_CONFIG_CHANGE_MSG = 2,
};

/* Header flags. */
#define VHOST_USER_VERSION          0x1u
#define VHOST_USER_VERSION_MASK     0x3u
#define VHOST_USER_REPLY            (1u << 2)
#define VHOST_USER_NEED_REPLY       (1u << 3)

/* Device feature bit that announces the protocol features. */
#define VHOST_USER_F_PROTOCOL_FEATURES 30

/* Protocol features (bits). */
enum {
    VHOST_USER_PROTOCOL_F_MQ = 0,
    VHOST_USER_PROTOCOL_F_LOG_SHMFD = 1,
    VHOST_USER_PROTOCOL_F_REPLY_ACK = 3,
    VHOST_USER_PROTOCOL_F_BACKEND_REQ = 5,
    VHOST_USER_PROTOCOL_F_CONFIG = 9,
    VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD = 12,
    VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS = 15,
};

/* Vring index payload (KICK, CALL, ERR): the index in the low byte and
 * this flag when no fd comes with it (polling mode, not supported). */
#define VHOST_USER_VRING_IDX_MASK   0xffu
#define VHOST_USER_VRING_NOFD       (1u << 8)

/* Regions of one SET_MEM_TABLE (the protocol's baseline) and the slots
 * offered with CONFIGURE_MEM_SLOTS. */
#define VHOST_USER_MEM_REGIONS      8
#define VHOST_USER_MAX_MEM_SLOTS    8
/* The largest config space GET/SET_CONFIG carry. */
#define VHOST_USER_CONFIG_MAX       256
/* Fds one message may carry. */
#define VHOST_USER_MAX_FDS          8

typedef struct VhostUserHeader {
    uint32_t request;
    uint32_t flags;
    uint32_t size;
} __attribute__((packed)) VhostUserHeader;

typedef struct VhostUserVringState {
    uint32_t index;
    uint32_t num;
} VhostUserVringState;

typedef struct VhostUserVringAddr {
    uint32_t index;
    uint32_t flags;
    uint64_t desc_user_addr;
    uint64_t used_user_addr;
    uint64_t avail_user_addr;
    uint64_t log_guest_addr;
} VhostUserVringAddr;

typedef struct VhostUserMemRegion {
    uint64_t guest_phys_addr;
    uint64_t memory_size;
    uint64_t userspace_addr;
    uint64_t mmap_offset;
} VhostUserMemRegion;

typedef struct VhostUserMemory {
    uint32_t nregions;
    uint32_t padding;
    VhostUserMemRegion regions[VHOST_USER_MEM_REGIONS];
} VhostUserMemory;

typedef struct VhostUserMemRegMsg {
    uint64_t padding;
    VhostUserMemRegion region;
} VhostUserMemRegMsg;

typedef struct VhostUserConfig {
    uint32_t offset;
    uint32_t size;
    uint32_t flags;
    uint8_t region[VHOST_USER_CONFIG_MAX];
} VhostUserConfig;
#define VHOST_USER_CONFIG_HDR_SIZE 12u

typedef struct VhostUserInflight {
    uint64_t mmap_size;
    uint64_t mmap_offset;
    uint16_t num_queues;
    uint16_t queue_size;
} VhostUserInflight;

typedef union VhostUserPayload {
    uint64_t u64;
    VhostUserVringState state;
    VhostUserVringAddr addr;
    VhostUserMemory memory;
    VhostUserMemRegMsg memreg;
    VhostUserConfig config;
    VhostUserInflight inflight;
} VhostUserPayload;

#define VHOST_USER_HDR_SIZE     sizeof(VhostUserHeader)
#define VHOST_USER_PAYLOAD_MAX  sizeof(VhostUserPayload)

/* One message with its fds (owned by the message until taken). */
typedef struct VhostUserMsg {
    VhostUserHeader hdr;
    VhostUserPayload payload;
    int fds[VHOST_USER_MAX_FDS];
    int nfds;
    bool fds_overflow;          /* more arrived than fit (closed) */
} VhostUserMsg;

/* The request's name for logs ("SET_MEM_TABLE"), or "UNKNOWN". */
const char *vu_request_name(uint32_t request);

/*
 * Decode/validate a received front-end message: version, payload size
 * for the request (exact for fixed layouts; SET_MEM_TABLE by its
 * nregions, GET/SET_CONFIG by their size field) and the fds it needs.
 * 0 when well formed; -EINVAL (bad size or version), -EBADF (fds missing
 * or too many), -ENOSYS (unknown request) with @why naming the problem.
 * No side effects.
 */
int vu_msg_check(const VhostUserMsg *msg, const char **why);

/* Close every fd the message still owns. */
void vu_msg_close_fds(VhostUserMsg *msg);
/* Take fd @i (-1 when absent): the message no longer closes it. */
int vu_msg_take_fd(VhostUserMsg *msg, int i);

/*
 * Incremental reader for a non-blocking stream socket: call
 * vu_reader_read() whenever the socket is readable; it returns 1 with
 * *msg filled once a whole message arrived (the fds are the caller's),
 * 0 when more bytes are needed, -errno on a read error, -ECONNRESET at end
 * of stream and -EMSGSIZE for a payload larger than any request has.
 */
typedef struct VuReader {
    VhostUserMsg msg;
    size_t got;                 /* bytes of header + payload received */
} VuReader;
void vu_reader_init(VuReader *r);
int vu_reader_read(VuReader *r, int fd, VhostUserMsg *msg);
/* Drop a partial message (closes its fds). */
void vu_reader_cleanup(VuReader *r);

/*
 * Send a whole message (header + hdr.size payload bytes) with @nfds fds
 * on a stream socket, waiting (poll) while the socket is full, at most
 * @timeout_ms in all.  0 or -errno.
 */
int vu_msg_send(int fd, const VhostUserHeader *hdr, const void *payload,
                const int *fds, int nfds, int timeout_ms);
/* Receive one whole message, waiting at most @timeout_ms (front end and
 * the back-end request channel's replies).  0 or -errno (-ETIMEDOUT). */
int vu_msg_recv(int fd, VhostUserMsg *msg, int timeout_ms);

#endif
