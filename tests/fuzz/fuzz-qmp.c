/*
 * Fuzz harness: bytes into a QMP monitor session with a real graph behind
 * it (SPDX-License-Identifier: MIT).  The greeting is consumed and
 * qmp_capabilities sent first, so that inputs reach the commands; commands
 * whose arguments name host files, sockets or devices, ask for delays or
 * sizes that cost on purpose, or run strata-io commands that end the
 * process or open files, are refused by the monitor's filter (the harness
 * runs as root).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/fuzz/fuzz-daemon.h"
#include "tools/daemon/daemon.h"
#include "tools/daemon/monitor.h"
#include "tools/daemon/qmp-cmds.h"

/* x-strata-io runs strata-io's command set, which has commands that end
 * the process on purpose (abort, sigraise), open host files (open,
 * reopen -o, write -s FILE, read -s), wait for as long as they are told
 * (sleep, wait_break): refuse those, and sleeps over 10 ms. */
static bool io_command_ok(const char *line)
{
    static const char *const refused[] = {
        "abort", "sigraise", "open", "o", "reopen", "wait_break", NULL,
    };
    g_auto(GStrv) words = g_strsplit(line, " ", -1);
    const char *cmd = NULL;

    for (char **w = words; *w; w++) {
        if (!**w) {
            continue;
        }
        if (!cmd) {
            cmd = *w;
            if (g_strv_contains(refused, cmd)) {
                return false;
            }
        } else if (**w == '-' && strchr(*w, 's')) {
            return false;
        } else if (!strcmp(cmd, "sleep") && atoll(*w) > 10) {
            return false;
        }
    }
    return true;
}

static bool filter(const char *name, OptNode *args)
{
    const OptNode *line = opts_peek(args, "command");
    if (!strcmp(name, "x-strata-io") && line &&
        opts_type(line) == OPT_STRING &&
        !io_command_ok(opts_scalar_str(line))) {
        return false;
    }
    return strcmp(name, "nbd-server-start") != 0 &&
           !fuzz_opts_touch_files(args) && !fuzz_opts_too_costly(args);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sp[2];
    static const char caps[] = "{\"execute\": \"qmp_capabilities\"}\n";

    if (size > (1u << 20) || !fuzz_daemon_setup()) {
        return 0;
    }
    qmp_command_filter = filter;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                   sp) < 0) {
        fuzz_daemon_teardown();
        return 0;
    }
    Monitor *mon = monitor_new(daemon_state.loop, -1, sp[0], sp[0], false);
    g_autofree uint8_t *input = g_malloc(sizeof(caps) - 1 + size);
    memcpy(input, caps, sizeof(caps) - 1);
    memcpy(input + sizeof(caps) - 1, data, size);
    fuzz_feed_socket(sp[1], input, sizeof(caps) - 1 + size, NULL, NULL);
    close(sp[1]);
    fuzz_run_until_idle(daemon_state.ctx);
    monitor_free(mon);
    close(sp[0]);
    fuzz_daemon_teardown();
    qmp_command_filter = NULL;
    return 0;
}
