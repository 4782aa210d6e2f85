/*
 * x-strata-io: strata-io's commands on a daemon's node, over QMP
 * (SPDX-License-Identifier: MIT).  QEMU's tests drive qemu-io through
 * human-monitor-command; this is the same idea with strata-io's command
 * set (tools/io-cmds.c), for tests and debugging.
 */
#include <stdio.h>
#include <string.h>

#include "tools/daemon/daemon.h"
#include "tools/daemon/qmp-cmds.h"
#include "tools/io-cmds.h"

/* node → IoState with a backend on it, created on first use. */
static GHashTable *io_states;

/* What strata-io's main provides to the command set. */
void io_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

bool io_open_image(IoState *s, const char *filename, OptNode *take_extra,
                   const IoOpenFlags *f, StrataError **errp)
{
    opts_unref(take_extra);
    error_setg(errp, "open: not available in x-strata-io (the node is "
               "given by node-name)");
    return false;
}

void io_close_image(IoState *s)
{
}

static IoState *io_state_get(StrataNode *node, StrataError **errp)
{
    IoState *s;

    if (!io_states) {
        io_states = g_hash_table_new(NULL, NULL);
    }
    s = g_hash_table_lookup(io_states, node);
    if (s) {
        return s;
    }
    s = g_new0(IoState, 1);
    s->ctx = daemon_state.ctx;
    s->perm = STRATA_PERM_CONSISTENT_READ |
              (node->read_only ? 0 : STRATA_PERM_WRITE);
    s->shared = STRATA_PERM_ALL;
    s->be = strata_backend_new(node, "x-strata-io", s->perm, s->shared, errp);
    if (!s->be) {
        g_free(s);
        return NULL;
    }
    g_hash_table_insert(io_states, node, s);
    return s;
}

void qmp_io_release_node(StrataNode *node)
{
    IoState *s = io_states ? g_hash_table_lookup(io_states, node) : NULL;

    if (s) {
        g_hash_table_remove(io_states, node);
        /* Waits for its aio_read/aio_write requests. */
        strata_backend_free(s->be);
        g_free(s);
    }
}

void qmp_io_release_all(void)
{
    GList *nodes = io_states ? g_hash_table_get_keys(io_states) : NULL;

    for (GList *l = nodes; l; l = l->next) {
        qmp_io_release_node(l->data);
    }
    g_list_free(nodes);
}

JsonNode *qmp_x_strata_io(OptNode *args, StrataError **errp)
{
    const char *name = opts_scalar_str(opts_peek(args, "node-name"));
    const char *line = opts_scalar_str(opts_peek(args, "command"));
    StrataNode *node = node_find(daemon_state.ctx, name);
    char *out = NULL;
    size_t len = 0;

    if (!node) {
        error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT,
                  "Cannot find device='' nor node-name='%s'", name);
        return NULL;
    }
    IoState *s = io_state_get(node, errp);
    if (!s) {
        return NULL;
    }
    /* The command set prints to stdout and stderr: catch both. */
    FILE *mem = open_memstream(&out, &len);
    if (!mem) {
        error_setg_errno(errp, errno, "open_memstream");
        return NULL;
    }
    FILE *saved_out = stdout, *saved_err = stderr;
    fflush(stdout);
    fflush(stderr);
    stdout = stderr = mem;
    io_command(s, line);
    fflush(mem);
    stdout = saved_out;
    stderr = saved_err;
    fclose(mem);
    JsonNode *ret = json_node_new(JSON_NODE_VALUE);
    json_node_set_string(ret, out ? out : "");
    free(out);
    return ret;
}
