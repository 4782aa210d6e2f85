/*
 * NBD servers for unit tests (see nbd-server.h)
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/wait.h>

#include "nbd-server.h"
#include "test-util.h"

#define MAX_SERVERS 16
#define READY_TIMEOUT_US (10 * G_USEC_PER_SEC)

/* What to remove if the process dies on a signal: fixed storage, filled
 * in before, read by the handler (unlink and rmdir only). */
static const char *const server_files[] = {
    "nbd.sock", "server.log", "disk.img", "log", "fail",
};
#define NFILES G_N_ELEMENTS(server_files)
static char abort_paths[MAX_SERVERS][NFILES + 1][128];  /* files, then dir */
static bool abort_handler_set;

static void on_abort(int sig)
{
    for (int i = 0; i < MAX_SERVERS; i++) {
        if (abort_paths[i][NFILES][0]) {
            for (size_t f = 0; f < NFILES; f++) {
                unlink(abort_paths[i][f]);
            }
            rmdir(abort_paths[i][NFILES]);
        }
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

static void remember_for_abort(const NbdTestServer *srv, bool add)
{
    for (int i = 0; i < MAX_SERVERS; i++) {
        char *dir = abort_paths[i][NFILES];

        if (add ? !dir[0] : !strcmp(dir, srv->dir)) {
            if (add) {
                for (size_t f = 0; f < NFILES; f++) {
                    g_snprintf(abort_paths[i][f], sizeof(abort_paths[i][f]),
                               "%s/%s", srv->dir, server_files[f]);
                }
                g_strlcpy(dir, srv->dir, sizeof(abort_paths[i][NFILES]));
            } else {
                dir[0] = '\0';
            }
            break;
        }
    }
    if (add && !abort_handler_set) {
        /* g_assert aborts, g_error traps, meson's timeout terminates. */
        signal(SIGABRT, on_abort);
        signal(SIGTRAP, on_abort);
        signal(SIGSEGV, on_abort);
        signal(SIGTERM, on_abort);
        abort_handler_set = true;
    }
}

/* What the child does between fork and exec: only async-signal-safe
 * calls on data prepared before the fork. */
typedef struct ChildSetup {
    int listen_fd;
    const char *log;
} ChildSetup;

static void child_setup(gpointer data)
{
    const ChildSetup *cs = data;
    int listen_fd = cs->listen_fd;
    int log_fd;

    /* Die with the test, whatever kills it. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* The server's complaints go to its log, shown if it fails to start
     * (a connection probe alone makes nbdkit complain). */
    log_fd = open(cs->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (log_fd >= 0) {
        dup2(log_fd, 2);
        close(log_fd);
    }
    /* Socket activation: the listening socket as fd 3, inheritable
     * (GLib marked every fd above 2 close-on-exec before this runs). */
    if (listen_fd >= 0) {
        if (listen_fd != 3) {
            dup2(listen_fd, 3);
        }
        fcntl(3, F_SETFD, 0);
    }
}

static bool sock_accepts(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok;

    g_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

/* Start the server, after @delay_ms through sh; with @wait, until its
 * socket accepts connections. */
static bool server_spawn(NbdTestServer *srv, int delay_ms, bool wait,
                         GError **gerr)
{
    int64_t deadline = g_get_monotonic_time() + READY_TIMEOUT_US;
    g_autofree char **argv = NULL;
    g_autofree char *script = NULL;
    int n = g_strv_length(srv->argv);
    g_auto(GStrv) envp = NULL;
    g_autofree char *log = g_build_filename(srv->dir, "server.log", NULL);
    ChildSetup cs = { .listen_fd = srv->listen_fd, .log = log };
    int status;

    unlink(srv->sock);
    if (srv->listen_fd >= 0) {
        /* systemd's protocol: LISTEN_PID is the server's own pid, which
         * sh knows before it execs the server. */
        script = g_strdup("LISTEN_PID=$$ exec \"$0\" \"$@\"");
        envp = g_environ_setenv(g_get_environ(), "LISTEN_FDS", "1", TRUE);
        argv = g_new0(char *, n + 4);
        argv[0] = "sh";
        argv[1] = "-c";
        argv[2] = script;
        memcpy(argv + 3, srv->argv, n * sizeof(char *));
    } else if (delay_ms) {
        script = g_strdup_printf("sleep %d.%03d; exec \"$0\" \"$@\"",
                                 delay_ms / 1000, delay_ms % 1000);
        argv = g_new0(char *, n + 4);
        argv[0] = "sh";
        argv[1] = "-c";
        argv[2] = script;
        memcpy(argv + 3, srv->argv, n * sizeof(char *));
    }
    if (!g_spawn_async(srv->dir, argv ? argv : srv->argv, envp,
                       G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD |
                       G_SPAWN_STDOUT_TO_DEV_NULL,
                       child_setup, &cs,
                       &srv->pid, gerr)) {
        srv->pid = 0;
        return false;
    }
    /* A socket-activated server's socket listens already. */
    while (wait && srv->listen_fd < 0 && !sock_accepts(srv->sock)) {
        if (waitpid(srv->pid, &status, WNOHANG) == srv->pid ||
            g_get_monotonic_time() > deadline) {
            if (srv->pid) {
                kill(srv->pid, SIGKILL);
                waitpid(srv->pid, &status, 0);
            }
            g_autofree char *text = NULL;

            srv->pid = 0;
            g_file_get_contents(log, &text, NULL, NULL);
            g_set_error(gerr, G_SPAWN_ERROR, G_SPAWN_ERROR_FAILED,
                        "%s did not come up on %s: %s", srv->argv[0],
                        srv->sock, text ? text : "");
            return false;
        }
        g_usleep(10 * 1000);
    }
    return true;
}

static NbdTestServer *server_start(const char *const *argv, int64_t disk_size,
                                   bool tcp)
{
    g_autoptr(GError) gerr = NULL;
    g_autofree char *prog = g_find_program_in_path(argv[0]);
    NbdTestServer *srv;
    char *dir;
    int n = g_strv_length((char **)argv);

    if (!prog) {
        test_skipf("%s is not installed (scripts/deps.sh installs it)",
                   argv[0]);
        return NULL;
    }
    dir = g_dir_make_tmp("strata-nbd-XXXXXX", NULL);
    g_assert_nonnull(dir);
    srv = g_new0(NbdTestServer, 1);
    srv->dir = dir;
    srv->listen_fd = -1;
    if (tcp) {
        struct sockaddr_in sa = { .sin_family = AF_INET,
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);

        srv->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(srv->listen_fd, >=, 0);
        g_assert_cmpint(bind(srv->listen_fd, (struct sockaddr *)&sa,
                             sizeof(sa)), ==, 0);
        g_assert_cmpint(listen(srv->listen_fd, 16), ==, 0);
        g_assert_cmpint(getsockname(srv->listen_fd, (struct sockaddr *)&sa,
                                    &len), ==, 0);
        srv->port = ntohs(sa.sin_port);
    }
    srv->sock = g_build_filename(dir, "nbd.sock", NULL);
    srv->disk = g_build_filename(dir, "disk.img", NULL);
    if (disk_size > 0) {
        int fd = open(srv->disk, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(ftruncate(fd, disk_size), ==, 0);
        close(fd);
    }
    srv->argv = g_new0(char *, n + 1);
    for (int i = 0; i < n; i++) {
        g_autoptr(GString) a = g_string_new(argv[i]);
        g_string_replace(a, "@SOCK@", srv->sock, 0);
        g_string_replace(a, "@DISK@", srv->disk, 0);
        g_string_replace(a, "@DIR@", srv->dir, 0);
        srv->argv[i] = g_string_free(g_steal_pointer(&a), FALSE);
    }
    remember_for_abort(srv, true);
    if (!server_spawn(srv, 0, true, &gerr)) {
        test_skipf("cannot start %s: %s", argv[0], gerr->message);
        nbd_test_server_free(srv);
        return NULL;
    }
    return srv;
}

NbdTestServer *nbd_test_server_start(const char *const *argv,
                                     int64_t disk_size)
{
    return server_start(argv, disk_size, false);
}

NbdTestServer *nbd_test_server_start_tcp(const char *const *argv,
                                         int64_t disk_size)
{
    return server_start(argv, disk_size, true);
}

void nbd_test_server_kill(NbdTestServer *srv)
{
    int status;

    if (srv->pid) {
        kill(srv->pid, SIGKILL);
        waitpid(srv->pid, &status, 0);
        g_spawn_close_pid(srv->pid);
        srv->pid = 0;
    }
    unlink(srv->sock);
}

bool nbd_test_server_restart(NbdTestServer *srv)
{
    g_autoptr(GError) gerr = NULL;

    g_assert(srv->pid == 0);
    if (!server_spawn(srv, 0, true, &gerr)) {
        g_printerr("# restart: %s\n", gerr->message);
        return false;
    }
    return true;
}

void nbd_test_server_restart_later(NbdTestServer *srv, int delay_ms)
{
    g_autoptr(GError) gerr = NULL;

    g_assert(srv->pid == 0);
    g_assert_true(server_spawn(srv, delay_ms, false, &gerr));
}

char *nbd_test_server_path(const NbdTestServer *srv, const char *name)
{
    return g_build_filename(srv->dir, name, NULL);
}

void nbd_test_server_free(NbdTestServer *srv)
{
    GDir *d;
    const char *name;

    if (!srv) {
        return;
    }
    nbd_test_server_kill(srv);
    remember_for_abort(srv, false);
    d = g_dir_open(srv->dir, 0, NULL);
    while (d && (name = g_dir_read_name(d))) {
        g_autofree char *p = g_build_filename(srv->dir, name, NULL);
        unlink(p);
    }
    if (d) {
        g_dir_close(d);
    }
    rmdir(srv->dir);
    if (srv->listen_fd >= 0) {
        close(srv->listen_fd);
    }
    g_free(srv->dir);
    g_free(srv->sock);
    g_free(srv->disk);
    g_strfreev(srv->argv);
    g_free(srv);
}

char *nbd_test_server_node_json(const NbdTestServer *srv, const char *extra)
{
    if (srv->listen_fd >= 0) {
        return g_strdup_printf("{\"driver\": \"nbd\", \"server\": {\"type\": "
                               "\"inet\", \"host\": \"127.0.0.1\", "
                               "\"port\": \"%d\"}%s}", srv->port,
                               extra ? extra : "");
    }
    return g_strdup_printf("{\"driver\": \"nbd\", \"server\": {\"type\": "
                           "\"unix\", \"path\": \"%s\"}%s}", srv->sock,
                           extra ? extra : "");
}
