/*
 * NBD servers for unit tests: qemu-nbd or nbdkit on a Unix socket
 * SPDX-License-Identifier: MIT
 *
 * A server runs as a child process in a private directory under $TMPDIR
 * (its socket, and any file the test gives it).  The child gets
 * PR_SET_PDEATHSIG, so it dies with the test process however that ends;
 * nbd_test_server_stop() kills it, waits for it and removes the directory,
 * and a failed assertion (SIGABRT, SIGTRAP), a crash or SIGTERM (meson's
 * timeout) removes every server's socket and directory from a signal
 * handler.  A server's other files (disk.img, server.log) are removed
 * there too.
 */
#ifndef STRATA_TESTS_NBD_SERVER_H
#define STRATA_TESTS_NBD_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

typedef struct NbdTestServer {
    GPid pid;                   /* 0 while stopped */
    char *dir;                  /* private directory */
    char *sock;                 /* dir/nbd.sock */
    char *disk;                 /* dir/disk.img */
    char **argv;                /* how it was started (for restart) */
    int listen_fd;              /* TCP: the listening socket, else -1 */
    int port;                   /* TCP: its port on 127.0.0.1 */
} NbdTestServer;

/*
 * Start a server from @argv (NULL-terminated; "@SOCK@", "@DIR@" and
 * "@DISK@" in any argument are replaced by the socket path, the directory
 * and dir/disk.img) and wait until it accepts connections.  With
 * @disk_size > 0, dir/disk.img is first created with that size (zeroes).
 * NULL, after skipping the running test with the reason, when the program
 * is not installed or does not come up.
 */
NbdTestServer *nbd_test_server_start(const char *const *argv,
                                     int64_t disk_size);
/*
 * The same on TCP: the test listens on an ephemeral port of 127.0.0.1 and
 * hands the socket to the server by systemd socket activation (nbdkit and
 * qemu-nbd take it; @argv names no address), so no port is guessed.
 */
NbdTestServer *nbd_test_server_start_tcp(const char *const *argv,
                                         int64_t disk_size);
/* SIGKILL the server and wait for it (its socket file is removed); the
 * directory stays (for a restart). */
void nbd_test_server_kill(NbdTestServer *srv);
/* Start it again, with the same arguments; false if it does not come up. */
bool nbd_test_server_restart(NbdTestServer *srv);
/* Start it again @delay_ms from now, without waiting for it (the server
 * comes up while the caller is busy). */
void nbd_test_server_restart_later(NbdTestServer *srv, int delay_ms);
/* Kill (if running) and remove the directory and everything in it. */
void nbd_test_server_free(NbdTestServer *srv);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NbdTestServer, nbd_test_server_free)

/* A path in the server's directory (newly allocated). */
char *nbd_test_server_path(const NbdTestServer *srv, const char *name);

/* JSON of an nbd node on @srv (unix, or inet for a TCP server) with
 * @extra members (", ..." or ""). */
char *nbd_test_server_node_json(const NbdTestServer *srv, const char *extra);

#endif
