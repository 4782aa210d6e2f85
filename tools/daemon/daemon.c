/*
 * strata-storage-daemon: graph ownership and shutdown, shared by the
 * command line and QMP (SPDX-License-Identifier: MIT).  See daemon.h.
 */
#include "tools/daemon/daemon.h"

#include <inttypes.h>
#include <string.h>

#include "block/backend-int.h"
#include "tools/daemon/qmp-cmds.h"

Daemon daemon_state;

bool daemon_blockdev_add(OptNode *opts, StrataError **errp)
{
    const char *name;

    if (opts_type(opts) != OPT_OBJECT) {
        error_set_option(errp, "expected an object of node options");
        return false;
    }
    OptNode *n = opts_peek(opts, "node-name");
    if (!n || opts_type(n) != OPT_STRING) {
        error_set_option(errp, "'node-name' must be specified for the root "
                         "node");
        return false;
    }
    name = opts_scalar_str(n);
    if (node_find(daemon_state.ctx, name)) {
        error_set_option(errp, "Duplicate nodes with node-name='%s'", name);
        return false;
    }
    g_autoptr(OptNode) copy = opts_clone(opts);
    StrataNode *node = block_open(daemon_state.ctx, copy, errp);
    if (!node) {
        return false;
    }
    daemon_state.owned_nodes = g_list_append(daemon_state.owned_nodes, node);
    return true;
}

int daemon_flush_node(StrataNode *node)
{
    g_autoptr(StrataError) err = NULL;
    StrataBackend *be = strata_backend_new(node, "flush", 0, STRATA_PERM_ALL,
                                           &err);
    if (!be) {
        return -EPERM;
    }
    int ret = strata_backend_flush(be);
    strata_backend_free(be);
    return ret;
}

bool daemon_blockdev_del(const char *node_name, StrataError **errp)
{
    StrataNode *node = node_find(daemon_state.ctx, node_name);

    if (!node) {
        error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT,
                  "Failed to find node with node-name='%s'", node_name);
        return false;
    }
    if (!g_list_find(daemon_state.owned_nodes, node)) {
        error_setg(errp, "Node %s is not owned by the monitor", node_name);
        return false;
    }
    qmp_io_release_node(node);
    for (GSList *p = node->parents; p; p = p->next) {
        BlockChild *c = p->data;
        if (c->backend) {
            error_set(errp, STRATA_ERROR_PERMISSION, EBUSY,
                      "Node %s is in use by %s", node_name,
                      backend_get_name(c->backend));
        } else {
            error_set(errp, STRATA_ERROR_PERMISSION, EBUSY,
                      "Block device %s is in use", node_name);
        }
        return false;
    }
    int ret = daemon_flush_node(node);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "Failed to flush node '%s'", node_name);
        return false;
    }
    daemon_state.owned_nodes = g_list_remove(daemon_state.owned_nodes, node);
    node_unref(node);
    return true;
}

void daemon_request_shutdown(ShutdownReason reason)
{
    if (daemon_state.shutdown == SHUTDOWN_NONE) {
        daemon_state.shutdown = reason;
    }
    loop_wake(daemon_state.loop);
}
