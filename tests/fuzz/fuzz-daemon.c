/*
 * Shared set-up of the harnesses that run daemon pieces (QMP, NBD): a
 * fresh daemon state per input with a mem node and a null node, torn
 * down completely afterwards (SPDX-License-Identifier: MIT).
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "block/export/export.h"
#include "block/export/nbd.h"
#include "block/object.h"
#include "tests/fuzz/fuzz-daemon.h"
#include "tools/daemon/daemon.h"
#include "tools/daemon/qmp-cmds.h"

bool fuzz_daemon_setup(void)
{
    StrataError *err = NULL;
    static const char *const nodes[] = {
        "{\"driver\": \"mem\", \"node-name\": \"m0\", \"size\": 1048576}",
        "{\"driver\": \"null-co\", \"node-name\": \"n0\"}",
    };

    memset(&daemon_state, 0, sizeof(daemon_state));
    daemon_state.ctx = strata_context_new(&err);
    if (!daemon_state.ctx) {
        error_free(err);
        return false;
    }
    daemon_state.loop = daemon_state.ctx->loop;
    export_set_notifiers(NULL, NULL, NULL);
    nbd_export_register();
    for (unsigned i = 0; i < G_N_ELEMENTS(nodes); i++) {
        g_autoptr(OptNode) o = opts_parse_json(nodes[i], &err);
        if (!o || !daemon_blockdev_add(o, &err)) {
            __builtin_trap();
        }
    }
    return true;
}

void fuzz_daemon_teardown(void)
{
    if (nbd_server_running()) {
        nbd_server_stop(NULL);
    }
    export_shutdown_all();
    for (int i = 0; i < 1000 && export_count() > 0; i++) {
        strata_context_run_once(daemon_state.ctx, false);
    }
    qmp_io_release_all();
    GList *owned = g_list_reverse(daemon_state.owned_nodes);
    daemon_state.owned_nodes = NULL;
    for (GList *l = owned; l; l = l->next) {
        node_unref(l->data);
    }
    g_list_free(owned);
    object_del_all();
    fuzz_run_until_idle(daemon_state.ctx);
    strata_context_free(daemon_state.ctx);
    memset(&daemon_state, 0, sizeof(daemon_state));
}

void fuzz_feed_socket(int fd, const uint8_t *data, size_t size,
                      bool (*done)(void *), void *opaque)
{
    size_t sent = 0;
    char sink[65536];

    for (int idle = 0; idle < 20;) {
        bool progress = false;
        if (sent < size) {
            ssize_t n = send(fd, data + sent, MIN(size - sent, 4096),
                             MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) {
                sent += (size_t)n;
                progress = true;
                if (sent == size) {
                    shutdown(fd, SHUT_WR);
                }
            } else if (n < 0 && errno != EAGAIN) {
                sent = size;
            }
        } else if (size == 0) {
            shutdown(fd, SHUT_WR);
        }
        ssize_t r = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
        if (r > 0) {
            progress = true;
        } else if (r == 0 && sent >= size) {
            break;                      /* the other side closed */
        }
        if (strata_context_run_once(daemon_state.ctx, false)) {
            progress = true;
        }
        if (done && done(opaque)) {
            break;
        }
        idle = progress ? 0 : idle + 1;
        if (!progress) {
            /* Requests may be in flight in a thread pool or a timer:
             * give them a moment. */
            struct pollfd p = { .fd = fd, .events = POLLIN };
            poll(&p, 1, idle > 10 ? 1 : 0);
        }
    }
}
