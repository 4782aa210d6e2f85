/*
 * The "vhost-user-blk" export type: a virtio-blk device served to a VMM
 * (QEMU, cloud-hypervisor, ...) over a vhost-user UNIX socket
 * SPDX-License-Identifier: MIT
 *
 * The export listens on addr.path; one front end at a time (as QSD) sends
 * vhost-user messages, shares guest RAM (vu-mem.h) and the rings
 * (virtqueue.h) and kicks eventfds; guest requests become backend calls
 * whose vectors point straight into guest memory.  See
 * docs/vhost-user-blk.md.
 */
#ifndef STRATA_BLOCK_EXPORT_VHOST_USER_BLK_H
#define STRATA_BLOCK_EXPORT_VHOST_USER_BLK_H

#include <stdbool.h>
#include <stdint.h>

typedef struct BlockExport BlockExport;

/* Register the vhost-user-blk export type with the export framework. */
void vhost_user_blk_register(void);

/*
 * Where the export's protocol errors go (a front end's malformed message,
 * a corrupt ring): @fn(export id, message), or NULL for nowhere.  The
 * library does not print; the daemon sets one that writes to stderr.
 */
typedef void VhostUserBlkLogFunc(const char *id, const char *msg);
void vhost_user_blk_set_log(VhostUserBlkLogFunc *fn);

/* Serve a connected stream socket as if the export had accepted it (the
 * fuzz harness, the unit tests).  Takes @fd; false (and closes it) when
 * @exp is not a vhost-user-blk export or already has a front end. */
bool vhost_user_blk_add_client(BlockExport *exp, int fd);

/* The node's length may have changed (block_resize): tell the front end
 * through CONFIG_CHANGE_MSG when it negotiated BACKEND_REQ and CONFIG.
 * A no-op for exports of other types and when the length is unchanged. */
void vhost_user_blk_resized(BlockExport *exp);

/* For tests: protocol errors counted since creation, and whether a front
 * end is connected. */
typedef struct VhostUserBlkStats {
    uint64_t protocol_errors;
    uint64_t queue_errors;          /* queues stopped for a corrupt ring */
    uint64_t requests;
    bool connected;
    uint64_t features;              /* negotiated with the front end */
    uint64_t protocol_features;
} VhostUserBlkStats;
void vhost_user_blk_get_stats(BlockExport *exp, VhostUserBlkStats *out);

#endif
