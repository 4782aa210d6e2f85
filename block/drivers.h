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

/*
 * Events a driver reports to the user beside the errno its requests
 * return, once, when they happen: a remote back end lost, naming it and
 * why.  The library does not print; a tool sets @fn to write the message
 * to stderr.  @fn(node name, message) runs in the node's loop thread,
 * both strings borrowed for the call.  NULL (the default): nowhere.  Set
 * it before opening nodes.
 */
typedef void BlockLogFunc(const char *node_name, const char *msg);
void block_set_log(BlockLogFunc *fn);
/* Report @msg (borrowed) about @node through the function set above. */
void block_log(const StrataNode *node, const char *msg);

#endif
