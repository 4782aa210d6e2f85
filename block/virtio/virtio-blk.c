/*
 * virtio-blk requests and config space (SPDX-License-Identifier: MIT).
 * See virtio-blk.h.
 *
 * Byte layout of a request over its chain's buffers:
 *
 *   readable  |<- header 16 ->|<-------- OUT data / segments -------->|
 *   writable  |<------------- IN / GET_ID data ------------->|status|
 */
#include "block/virtio/virtio-blk.h"

#include <endian.h>
#include <errno.h>
#include <string.h>
#include <glib.h>

static unsigned ilog2_u32(uint32_t v)
{
    unsigned n = 0;
    while (v > 1) {
        v >>= 1;
        n++;
    }
    return n;
}

void virtio_blk_fill_config(VirtioBlkConfig *cfg, const VirtioBlkGeometry *g)
{
    uint32_t lbs = g->logical_block_size;
    uint32_t pbs = MAX(g->physical_block_size, lbs);

    memset(cfg, 0, sizeof(*cfg));
    cfg->capacity = htole64(g->capacity_bytes / VIRTIO_BLK_SECTOR_SIZE);
    cfg->size_max = htole32(g->size_max);
    cfg->seg_max = htole32(g->seg_max);
    cfg->blk_size = htole32(lbs);
    cfg->physical_block_exp = (uint8_t)ilog2_u32(pbs / lbs);
    cfg->min_io_size = htole16((uint16_t)MIN(MAX(g->min_io_size, lbs) / lbs,
                                             UINT16_MAX));
    cfg->opt_io_size = htole32(g->opt_io_size / lbs);
    cfg->writeback = g->writeback;
    cfg->num_queues = htole16(g->num_queues);
    cfg->max_discard_sectors = htole32(g->max_discard_sectors);
    cfg->max_discard_seg = htole32(1);
    cfg->discard_sector_alignment = htole32(lbs / VIRTIO_BLK_SECTOR_SIZE);
    cfg->max_write_zeroes_sectors = htole32(g->max_write_zeroes_sectors);
    cfg->max_write_zeroes_seg = htole32(1);
    cfg->write_zeroes_may_unmap = 1;
}

void virtio_blk_req_cleanup(VirtioBlkReq *req)
{
    iov_cleanup(&req->data);
}

/* Last byte of the writable buffers: the status. */
static uint8_t *find_status(VqElem *elem)
{
    for (int i = elem->out_num + elem->in_num - 1; i >= elem->out_num; i--) {
        if (elem->iov[i].iov_len) {
            return (uint8_t *)elem->iov[i].iov_base +
                   elem->iov[i].iov_len - 1;
        }
    }
    return NULL;
}

int virtio_blk_parse(VqElem *elem, VirtioBlkReq *req)
{
    IOVector out, in;
    struct {
        uint32_t type;
        uint32_t ioprio;
        uint64_t sector;
    } hdr;

    memset(req, 0, sizeof(*req));
    /* A slice of the readable or the writable elements: never more
     * than the chain has, so the element's spare half holds it. */
    iov_init_storage(&req->data, vq_elem_spare(elem), elem->cap);
    req->status = find_status(elem);
    if (!req->status) {
        return -EIO;
    }
    iov_init_external(&out, elem->iov, elem->out_num);
    iov_init_external(&in, elem->iov + elem->out_num, elem->in_num);
    req->in_len = (uint32_t)MIN(iov_size(&in), UINT32_MAX);
    if (elem->bad_order) {
        return VIRTIO_BLK_S_IOERR;
    }
    if (iov_to_buf(&out, 0, &hdr, sizeof(hdr)) != sizeof(hdr)) {
        return VIRTIO_BLK_S_IOERR;
    }
    req->type = le32toh(hdr.type);
    req->sector = le64toh(hdr.sector);

    size_t out_data = iov_size(&out) - VIRTIO_BLK_HDR_SIZE;
    size_t in_data = iov_size(&in) - 1;
    switch (req->type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_GET_ID:
        if (out_data) {
            return VIRTIO_BLK_S_IOERR;
        }
        if (iov_slice(&req->data, &in, 0, in_data) < 0) {
            return VIRTIO_BLK_S_IOERR;
        }
        return VIRTIO_BLK_S_OK;
    case VIRTIO_BLK_T_OUT:
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
        if (in_data) {
            return VIRTIO_BLK_S_IOERR;
        }
        if (iov_slice(&req->data, &out, VIRTIO_BLK_HDR_SIZE, out_data) < 0) {
            return VIRTIO_BLK_S_IOERR;
        }
        return VIRTIO_BLK_S_OK;
    case VIRTIO_BLK_T_FLUSH:
        return out_data || in_data ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
    default:
        return VIRTIO_BLK_S_UNSUPP;
    }
}
