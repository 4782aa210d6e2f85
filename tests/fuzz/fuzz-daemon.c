/*
 * Shared set-up of the harnesses that run daemon pieces (QMP, NBD): a
 * fresh daemon state per input with a mem node and a null node, torn
 * down completely afterwards (SPDX-License-Identifier: MIT).
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "block/export/export.h"
#include "block/export/nbd.h"
#include "block/object.h"
#include "strata/strata-glib.h"
#include "tests/fuzz/fuzz-daemon.h"
#include "tools/daemon/daemon.h"
#include "tools/daemon/qmp-cmds.h"

/* A GSource on the context's loop, never attached: see next_timer_ns. */
static GSource *timer_probe;

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
    timer_probe = strata_context_create_gsource(daemon_state.ctx);
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
    g_source_unref(timer_probe);
    timer_probe = NULL;
    strata_context_free(daemon_state.ctx);
    memset(&daemon_state, 0, sizeof(daemon_state));
}

/* Nanoseconds until the loop's next timer (0: one has expired), -1
 * without timers.  Asked through the prepare callback of a GSource on the
 * loop (strata's public GLib integration), which only reads the timer
 * list: no hook in the library. */
static int64_t next_timer_ns(void)
{
    gint timeout = -1;

    if (timer_probe->source_funcs->prepare(timer_probe, &timeout)) {
        return 0;
    }
    return timeout < 0 ? -1 : (int64_t)timeout * 1000000;
}

bool fuzz_wait_timers(int64_t *budget_ns)
{
    int64_t ns = next_timer_ns();

    if (ns < 0 || ns > *budget_ns) {
        return false;
    }
    int64_t t0 = clock_ns();
    strata_context_run_once(daemon_state.ctx, true);
    *budget_ns -= clock_ns() - t0;
    return true;
}

void fuzz_feed_socket(int fd, const uint8_t *data, size_t size,
                      bool (*done)(void *), void *opaque)
{
    size_t sent = 0;
    bool shut = false;
    int64_t budget = FUZZ_TIMER_BUDGET_NS;
    static char sink[65536];

    for (;;) {
        bool progress = false;
        if (sent < size) {
            ssize_t n = send(fd, data + sent, MIN(size - sent, 4096),
                             MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) {
                sent += (size_t)n;
                progress = true;
            } else if (n < 0 && errno != EAGAIN) {
                sent = size;            /* the other side is gone */
            }
        }
        if (sent == size && !shut) {
            shutdown(fd, SHUT_WR);
            shut = progress = true;
        }
        ssize_t r;
        while ((r = recv(fd, sink, sizeof(sink), MSG_DONTWAIT)) > 0) {
            progress = true;
        }
        if (r == 0 && shut) {
            break;                      /* the other side closed */
        }
        if (strata_context_run_once(daemon_state.ctx, false)) {
            progress = true;
        }
        if (done && done(opaque)) {
            break;
        }
        /* Nothing moved: only a timer (a latency, a throttle, a sleep)
         * can bring more, and it is waited for only within the budget. */
        if (!progress && !fuzz_wait_timers(&budget)) {
            break;
        }
    }
}
