/*
 * Images on the Ceph cluster of tests/ceph/cluster.sh, for unit tests
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <glib.h>

#include "config-host.h"
#include "rbd-test.h"
#include "test-util.h"

#if CONFIG_RBD
#include <rados/librados.h>
#include <rbd/librbd.h>

/* One connection per process, made at the first use: the test's own,
 * separate from the nodes under test. */
static rados_t cluster;

const char *rbd_test_pool(void)
{
    const char *pool = getenv("STRATA_CEPH_POOL");
    int ret;

    if (!pool || !getenv("CEPH_CONF")) {
        test_skipf("no Ceph cluster: run under tests/ceph/cluster.sh "
                   "(tests/ceph/test-rbd.sh does)");
        return NULL;
    }
    if (!cluster) {
        ret = rados_create(&cluster, NULL);
        if (ret == 0) {
            ret = rados_conf_read_file(cluster, NULL);
        }
        if (ret == 0) {
            ret = rados_connect(cluster);
        }
        if (ret < 0) {
            g_error("cannot connect to the test cluster: %s",
                    g_strerror(-ret));
        }
    }
    return pool;
}

static rados_ioctx_t rbd_test_ioctx(const char *ns)
{
    rados_ioctx_t io;
    int ret = rados_ioctx_create(cluster, getenv("STRATA_CEPH_POOL"), &io);

    if (ret < 0) {
        g_error("rados_ioctx_create: %s", g_strerror(-ret));
    }
    if (ns) {
        ret = rbd_namespace_create(io, ns);
        if (ret < 0 && ret != -EEXIST) {
            g_error("rbd_namespace_create %s: %s", ns, g_strerror(-ret));
        }
        rados_ioctx_set_namespace(io, ns);
    }
    return io;
}

static void remove_in(rados_ioctx_t io, const char *name)
{
    rbd_image_t img;

    if (rbd_open(io, name, &img, NULL) < 0) {
        return;
    }
    /* Snapshots first: an image with snapshots cannot be removed. */
    rbd_snap_info_t info[16];
    int cap = G_N_ELEMENTS(info);
    int cnt = rbd_snap_list(img, info, &cap);
    for (int i = 0; i < cnt; i++) {
        rbd_snap_remove(img, info[i].name);
    }
    if (cnt > 0) {
        rbd_snap_list_end(info);
    }
    rbd_close(img);
    rbd_remove(io, name);
}

void rbd_test_remove(const char *ns, const char *name)
{
    rados_ioctx_t io = rbd_test_ioctx(ns);

    remove_in(io, name);
    rados_ioctx_destroy(io);
}

void rbd_test_create(const char *ns, const char *name, uint64_t size,
                     const char *snap)
{
    rados_ioctx_t io = rbd_test_ioctx(ns);
    int order = 0;
    int ret;

    remove_in(io, name);
    ret = rbd_create(io, name, size, &order);
    if (ret < 0) {
        g_error("rbd_create %s: %s", name, g_strerror(-ret));
    }
    if (snap) {
        rbd_image_t img;
        ret = rbd_open(io, name, &img, NULL);
        if (ret == 0) {
            ret = rbd_snap_create(img, snap);
            rbd_close(img);
        }
        if (ret < 0) {
            g_error("snapshot %s@%s: %s", name, snap, g_strerror(-ret));
        }
    }
    rados_ioctx_destroy(io);
}

#else

const char *rbd_test_pool(void)
{
    test_skipf("built without librbd (apt-get install librbd-dev)");
    return NULL;
}

void rbd_test_create(const char *ns, const char *name, uint64_t size,
                     const char *snap)
{
    g_assert_not_reached();
}

void rbd_test_remove(const char *ns, const char *name)
{
}

#endif
