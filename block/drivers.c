/* Driver registry.  SPDX-License-Identifier: MIT */
#include <string.h>
#include "block/block-int.h"
#include "config-host.h"
#include "block/drivers.h"

static const BlockDriver *const drivers[] = {
    &bdrv_align,
    &bdrv_blkdebug,
    &bdrv_file,
    &bdrv_host_device,
    &bdrv_host_cdrom,
    &bdrv_mem,
#if CONFIG_NBD
    &bdrv_nbd,
#endif
    &bdrv_null,
    &bdrv_null_aio,
    &bdrv_raw,
#if CONFIG_RBD
    &bdrv_rbd,
#endif
    &bdrv_snapshot_overlay,
    &bdrv_throttle,
    &bdrv_virtio_blk_vhost_user,
    NULL,
};

static BlockLogFunc *log_fn;

void block_set_log(BlockLogFunc *fn)
{
    __atomic_store_n(&log_fn, fn, __ATOMIC_RELEASE);
}

void block_log(const StrataNode *node, const char *msg)
{
    BlockLogFunc *fn = __atomic_load_n(&log_fn, __ATOMIC_ACQUIRE);

    if (fn) {
        fn(node->node_name, msg);
    }
}

const BlockDriver *const *block_driver_list(void)
{
    return drivers;
}

const BlockDriver *block_driver_find(const char *name)
{
    for (int i = 0; drivers[i]; i++) {
        if (!strcmp(drivers[i]->name, name) ||
            (drivers[i]->alias && !strcmp(drivers[i]->alias, name))) {
            return drivers[i];
        }
    }
    return NULL;
}
