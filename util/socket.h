/*
 * Listening sockets (SPDX-License-Identifier: MIT)
 *
 * For the daemon's monitors and the NBD server: non-blocking,
 * close-on-exec stream sockets, errors in QEMU's words naming the address.
 * Control path.
 */
#ifndef STRATA_UTIL_SOCKET_H
#define STRATA_UTIL_SOCKET_H

#include "util/error.h"

/*
 * Bind and listen on the UNIX socket @path.  An existing file at @path is
 * an error ("Failed to bind socket to PATH: Address already in use"), as
 * with QEMU.  *abs_path gets the absolute path to unlink when done
 * (g_free).  The fd, or -1 with *errp (class INVALID_OPTION for a path
 * longer than sockaddr_un holds).
 */
int socket_listen_unix(const char *path, int backlog, char **abs_path,
                       StrataError **errp);

/* Bind and listen on @host:@port (any address family getaddrinfo gives;
 * SO_REUSEADDR).  The fd, or -1 with *errp naming the address and, when
 * every address failed, the last errno. */
int socket_listen_tcp(const char *host, const char *port, int backlog,
                      StrataError **errp);

#endif
