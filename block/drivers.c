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

/* strata_set_log_func().  Reports run under the reader side, so that
 * once strata_set_log_func() returns no report runs with the old
 * function or opaque (the embedder may free it); they are rare. */
static GRWLock log_lock;
static StrataLogFunc *log_fn;
static void *log_opaque;

STRATA_EXPORT void strata_set_log_func(StrataLogFunc *fn, void *opaque)
{
    g_rw_lock_writer_lock(&log_lock);
    log_fn = fn;
    log_opaque = opaque;
    g_rw_lock_writer_unlock(&log_lock);
}

void block_log(const StrataNode *node, const char *msg)
{
    g_rw_lock_reader_lock(&log_lock);
    if (log_fn) {
        log_fn(node->node_name, msg, log_opaque);
    }
    g_rw_lock_reader_unlock(&log_lock);
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
