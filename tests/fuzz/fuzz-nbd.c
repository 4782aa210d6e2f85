/*
 * Fuzz harness: bytes as an NBD client's handshake and transmission phase,
 * over a socketpair, against the NBD server exporting a mem node writable
 * and a null node read-only (SPDX-License-Identifier: MIT).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "block/export/export.h"
#include "block/export/nbd.h"
#include "tests/fuzz/fuzz-daemon.h"
#include "tools/daemon/daemon.h"

static char *sock_dir, *sock_path;

/* The socket directory goes away with the process (a replay in make check
 * leaves nothing behind). */
static void remove_sock_dir(void)
{
    unlink(sock_path);
    rmdir(sock_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char tmpl[] = "/tmp/strata-fuzz-nbd-XXXXXX";
    char *dir = mkdtemp(tmpl);

    if (!dir) {
        abort();
    }
    sock_dir = g_strdup(dir);
    sock_path = g_build_filename(dir, "nbd.sock", NULL);
    atexit(remove_sock_dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    StrataError *err = NULL;
    int sp[2];
    static const char *const exports[] = {
        "{\"type\": \"nbd\", \"id\": \"e0\", \"node-name\": \"m0\", "
        "\"writable\": true, \"description\": \"fuzz\"}",
        "{\"type\": \"nbd\", \"id\": \"e1\", \"node-name\": \"n0\"}",
    };

    if (size > (4u << 20) || !fuzz_daemon_setup()) {
        return 0;
    }
    g_autofree char *srv = g_strdup_printf(
        "{\"addr\": {\"type\": \"unix\", \"path\": \"%s\"}}", sock_path);
    g_autoptr(OptNode) so = opts_parse_json(srv, &err);
    unlink(sock_path);
    if (!nbd_server_start(daemon_state.ctx, so, &err)) {
        __builtin_trap();
    }
    for (unsigned i = 0; i < G_N_ELEMENTS(exports); i++) {
        g_autoptr(OptNode) eo = opts_parse_json(exports[i], &err);
        if (!export_add(daemon_state.ctx, eo, &err)) {
            __builtin_trap();
        }
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                   sp) == 0) {
        nbd_server_add_client(sp[0]);
        fuzz_feed_socket(sp[1], data, size, NULL, NULL);
        close(sp[1]);
        fuzz_run_until_idle(daemon_state.ctx);
    }
    fuzz_daemon_teardown();
    unlink(sock_path);
    return 0;
}
