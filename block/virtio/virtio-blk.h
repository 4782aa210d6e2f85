/*
 * virtio-blk: feature bits, config space and the request format, device
 * side (virtio 1.x, "Block Device")
 * SPDX-License-Identifier: MIT
 *
 * A request is a descriptor chain whose device-readable bytes start with a
 * 16-byte header (le32 type, le32 reserved, le64 sector), followed for OUT
 * by the data and for DISCARD / WRITE_ZEROES by 16-byte segments; its
 * device-writable bytes are the data of IN / GET_ID and end with the
 * one-byte status.  With VIRTIO_F_VERSION_1 the driver may split these at
 * any byte (a header across two descriptors, the status sharing the last
 * data descriptor), so they are parsed by byte offset over the chain's
 * buffers, never by descriptor.
 *
 * Sectors are always 512 bytes on the wire, whatever blk_size says.
 */
#ifndef STRATA_BLOCK_VIRTIO_VIRTIO_BLK_H
#define STRATA_BLOCK_VIRTIO_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "block/virtio/virtqueue.h"
#include "util/iov.h"

/* Feature bits. */
#define VIRTIO_BLK_F_SIZE_MAX       1
#define VIRTIO_BLK_F_SEG_MAX        2
#define VIRTIO_BLK_F_RO             5
#define VIRTIO_BLK_F_BLK_SIZE       6
#define VIRTIO_BLK_F_FLUSH          9
#define VIRTIO_BLK_F_TOPOLOGY       10
#define VIRTIO_BLK_F_MQ             12
#define VIRTIO_BLK_F_DISCARD        13
#define VIRTIO_BLK_F_WRITE_ZEROES   14

/* Request types. */
#define VIRTIO_BLK_T_IN             0
#define VIRTIO_BLK_T_OUT            1
#define VIRTIO_BLK_T_FLUSH          4
#define VIRTIO_BLK_T_GET_ID         8
#define VIRTIO_BLK_T_DISCARD        11
#define VIRTIO_BLK_T_WRITE_ZEROES   13

/* Status byte. */
#define VIRTIO_BLK_S_OK             0
#define VIRTIO_BLK_S_IOERR          1
#define VIRTIO_BLK_S_UNSUPP         2

#define VIRTIO_BLK_SECTOR_SIZE      512
#define VIRTIO_BLK_HDR_SIZE         16
#define VIRTIO_BLK_ID_BYTES         20
#define VIRTIO_BLK_WZ_FLAG_UNMAP    1u

/* Config space, little endian, as far as this device fills it. */
typedef struct VirtioBlkConfig {
    uint64_t capacity;              /* 512-byte sectors */
    uint32_t size_max;
    uint32_t seg_max;
    uint16_t cylinders;
    uint8_t heads;
    uint8_t sectors;
    uint32_t blk_size;
    uint8_t physical_block_exp;
    uint8_t alignment_offset;
    uint16_t min_io_size;           /* logical blocks */
    uint32_t opt_io_size;           /* logical blocks */
    uint8_t writeback;
    uint8_t unused0;
    uint16_t num_queues;
    uint32_t max_discard_sectors;
    uint32_t max_discard_seg;
    uint32_t discard_sector_alignment;
    uint32_t max_write_zeroes_sectors;
    uint32_t max_write_zeroes_seg;
    uint8_t write_zeroes_may_unmap;
    uint8_t unused1[3];
    uint32_t max_secure_erase_sectors;
    uint32_t max_secure_erase_seg;
    uint32_t secure_erase_sector_alignment;
} __attribute__((packed)) VirtioBlkConfig;

/* A discard / write-zeroes segment. */
typedef struct VirtioBlkDiscardWz {
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;
} VirtioBlkDiscardWz;

/* What the device's limits are, from which the config space is built. */
typedef struct VirtioBlkGeometry {
    uint64_t capacity_bytes;
    uint32_t logical_block_size;    /* 512 or more, power of two */
    uint32_t physical_block_size;   /* >= logical, power of two */
    uint32_t min_io_size;           /* bytes */
    uint32_t opt_io_size;           /* bytes, 0 for none */
    uint32_t seg_max;
    uint32_t size_max;
    uint16_t num_queues;
    uint32_t max_discard_sectors;
    uint32_t max_write_zeroes_sectors;
    bool writeback;
} VirtioBlkGeometry;

void virtio_blk_fill_config(VirtioBlkConfig *cfg, const VirtioBlkGeometry *g);

/* One request, parsed. */
typedef struct VirtioBlkReq {
    uint32_t type;
    uint64_t sector;
    /* IN, GET_ID: the writable bytes before the status; OUT: the readable
     * bytes after the header; DISCARD / WRITE_ZEROES: the segments
     * (their readable bytes after the header). */
    IOVector data;
    uint8_t *status;                /* the status byte in guest memory */
    uint32_t in_len;                /* writable bytes, status included */
} VirtioBlkReq;

/*
 * Parse @elem into @req (whose data vector borrows @elem's iovecs and
 * lives in its spare storage, so @elem outlives it; allocates nothing):
 * returns VIRTIO_BLK_S_OK when the request is well
 * formed, VIRTIO_BLK_S_IOERR for a header shorter than 16 bytes, buffers
 * in the wrong direction or data in the wrong place, and
 * VIRTIO_BLK_S_UNSUPP for an unknown type; in these three cases
 * req->status is set.  -EIO when there is no writable status byte at all
 * (nothing can be reported: the caller stops the queue).  No side
 * effects on guest memory.
 */
int virtio_blk_parse(VqElem *elem, VirtioBlkReq *req);
void virtio_blk_req_cleanup(VirtioBlkReq *req);

#endif
