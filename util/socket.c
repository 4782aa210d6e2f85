/*
 * Listening sockets (SPDX-License-Identifier: MIT).  See socket.h.
 */
#include "util/socket.h"

#include <errno.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int socket_listen_unix(const char *path, int backlog, char **abs_path,
                       StrataError **errp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        error_set_option(errp, "path: '%s' is longer than %zu bytes", path,
                         sizeof(sa.sun_path) - 1);
        return -1;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Failed to create socket");
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        error_setg_errno(errp, errno, "Failed to bind socket to %s", path);
        close(fd);
        return -1;
    }
    if (listen(fd, backlog) < 0) {
        error_setg_errno(errp, errno, "Failed to listen on socket %s", path);
        unlink(path);
        close(fd);
        return -1;
    }
    *abs_path = g_path_is_absolute(path)
                ? g_strdup(path)
                : g_build_filename(g_get_current_dir(), path, NULL);
    return fd;
}

int socket_listen_tcp(const char *host, const char *port, int backlog,
                      StrataError **errp)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE,
    };
    struct addrinfo *res;
    int fd = -1, err = 0, rc = getaddrinfo(host, port, &hints, &res);

    if (rc) {
        error_set_option(errp, "cannot resolve %s:%s: %s", host, port,
                         gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        int one = 1;
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC |
                    SOCK_NONBLOCK, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
            listen(fd, backlog) < 0) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        error_setg_errno(errp, err ? err : EADDRNOTAVAIL,
                         "Failed to listen on %s:%s", host, port);
    }
    return fd;
}
