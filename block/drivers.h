/* The built-in drivers.  SPDX-License-Identifier: MIT */
#ifndef STRATA_BLOCK_DRIVERS_H
#define STRATA_BLOCK_DRIVERS_H

#include "block/block-int.h"

extern const BlockDriver bdrv_align;
extern const BlockDriver bdrv_throttle;
extern const BlockDriver bdrv_blkdebug;
extern const BlockDriver bdrv_file;
extern const BlockDriver bdrv_host_cdrom;
extern const BlockDriver bdrv_host_device;
extern const BlockDriver bdrv_mem;
extern const BlockDriver bdrv_nbd;
extern const BlockDriver bdrv_virtio_blk_vhost_user;
extern const BlockDriver bdrv_rbd;
extern const BlockDriver bdrv_null;
extern const BlockDriver bdrv_null_aio;
extern const BlockDriver bdrv_raw;
extern const BlockDriver bdrv_snapshot_overlay;

/* Report @msg (borrowed) about @node to the function the embedder set
 * with strata_set_log_func() (include/strata/strata.h), if any: events a
 * driver reports once, beside the errno of its requests. */
void block_log(const StrataNode *node, const char *msg);

#endif
