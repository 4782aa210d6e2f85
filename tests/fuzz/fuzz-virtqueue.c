/*
 * Fuzz harness: the split-virtqueue walker and the virtio-blk request
 * layout against a fuzzed guest memory image (SPDX-License-Identifier:
 * MIT).
 *
 * Input: 16 bytes of set-up, then the image of 64 KiB of guest memory
 * (shorter inputs leave the rest zero) mapped at guest-physical
 * FUZZ_GPA:
 *   byte 0      log2 of the queue size (taken modulo 9: 1 to 256)
 *   byte 1      bit 0 EVENT_IDX, bit 1 INDIRECT_DESC, bit 2 inflight
 *               region (a second 4 KiB of the input as its contents)
 *   bytes 2-7   offsets of the descriptor table, avail and used rings in
 *               the image (le16 each)
 *   bytes 8-9   the avail index the back end starts from (le16)
 *   bytes 10-15 unused
 * The harness pops until the ring is empty or corrupt (at most 4 x the
 * queue size), parses every element as a virtio-blk request, reads every
 * byte of its buffers and writes its status, pushes and flushes.  Anything
 * outside the image would be an ASan report; a crash is a bug.
 */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <glib.h>

#include "block/virtio/virtio-blk.h"
#include "block/virtio/virtqueue.h"
#include "block/virtio/vu-mem.h"
#include "tests/fuzz/fuzz.h"

#define FUZZ_MEM    (64u << 10)
#define FUZZ_GPA    0x40000ull
#define FUZZ_HDR    16

static uint16_t le16_at(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *why;
    uint8_t hdr[FUZZ_HDR] = { 0 };

    memcpy(hdr, data, MIN(size, sizeof(hdr)));
    int fd = memfd_create("fuzz-guest", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, FUZZ_MEM) < 0) {
        __builtin_trap();
    }
    if (size > FUZZ_HDR) {
        size_t n = MIN(size - FUZZ_HDR, FUZZ_MEM);
        if (pwrite(fd, data + FUZZ_HDR, n, 0) != (ssize_t)n) {
            __builtin_trap();
        }
    }
    VuMemTable *mem = vu_mem_table_new(NULL);
    /* The front end's addresses are its own: any value, here 1 MiB. */
    VhostUserMemRegion r = { FUZZ_GPA, FUZZ_MEM, 1u << 20, 0 };
    if (vu_mem_table_add(mem, &r, fd, &why) < 0) {
        __builtin_trap();
    }
    close(fd);

    VirtQueue vq;
    vq_init(&vq, 0);
    vq.num = 1u << (hdr[0] % 9);
    vq.event_idx = hdr[1] & 1;
    vq.indirect = hdr[1] & 2;
    vq.desc_uva = (1u << 20) + le16_at(hdr + 2);
    vq.avail_uva = (1u << 20) + le16_at(hdr + 4);
    vq.used_uva = (1u << 20) + le16_at(hdr + 6);
    vq.addr_set = true;
    vq.last_avail_idx = le16_at(hdr + 8);
    if (vq_map(&vq, mem, &why) < 0) {
        vu_mem_table_unref(mem);
        return 0;
    }
    uint8_t *inflight = NULL;
    size_t inflight_len = vq_inflight_queue_size(vq.num);
    if (hdr[1] & 4) {
        inflight = g_malloc0(inflight_len);
        if (size > FUZZ_HDR + FUZZ_MEM) {
            memcpy(inflight, data + FUZZ_HDR + FUZZ_MEM,
                   MIN(size - FUZZ_HDR - FUZZ_MEM, inflight_len));
        }
        vq.inflight = (VuInflightQueue *)inflight;
    }
    vq_inflight_restore(&vq);
    if (!inflight) {
        vq.last_avail_idx = le16_at(hdr + 8);
    }

    g_autofree uint8_t *scratch = g_malloc(FUZZ_MEM);
    /* One element for the whole input: vq_pop() reuses it, growing it
     * when a chain needs more room. */
    g_autofree VqElem *elem = NULL;
    for (unsigned i = 0; i < 4 * vq.num; i++) {
        if (vq_pop(&vq, mem, &elem, &why) <= 0) {
            break;
        }
        VirtioBlkReq req;
        int st = virtio_blk_parse(elem, &req);
        /* Touch every byte the chain names: all inside the image. */
        for (int j = 0; j < elem->out_num + elem->in_num; j++) {
            size_t len = MIN(elem->iov[j].iov_len, FUZZ_MEM);
            memcpy(scratch, elem->iov[j].iov_base, len);
            if (j >= elem->out_num) {
                memset(elem->iov[j].iov_base, 0xa5, len);
            }
        }
        if (st >= 0) {
            iov_to_buf(&req.data, 0, scratch, MIN(iov_size(&req.data),
                                                  FUZZ_MEM));
            *req.status = (uint8_t)st;
        }
        vq_push(&vq, elem->head, req.in_len);
        virtio_blk_req_cleanup(&req);
        if (i % 3 == 2) {
            vq_flush(&vq);
        }
    }
    vq_flush(&vq);
    vq_reset(&vq);
    g_free(inflight);
    vu_mem_table_unref(mem);
    return 0;
}
