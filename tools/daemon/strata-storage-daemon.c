/*
 * strata-storage-daemon: a block graph served over QMP and exports, with
 * qemu-storage-daemon's command line (SPDX-License-Identifier: MIT).
 * See docs/strata-storage-daemon.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "block/export/export.h"
#include "block/export/nbd.h"
#include "block/export/vhost-user-blk.h"
#include "block/object.h"
#include "tools/daemon/daemon.h"
#include "tools/daemon/monitor.h"
#include "util/socket.h"
#include "tools/daemon/qmp-cmds.h"
#include "tools/tool-common.h"

static const char *progname = "strata-storage-daemon";

typedef struct Chardev {
    char *id;
    bool is_stdio;
    int listen_fd;
    char *unlink_path;      /* absolute path of a UNIX socket we bound */
    bool in_use;
} Chardev;

static GList *chardevs;
static GList *monitor_list;
static char *pidfile_path;
static int pidfile_fd = -1;
static int ready_fd = -1;       /* --daemonize: tell the parent we are up */
static int signal_fd = -1;

static void log_vhost_user(const char *id, const char *msg)
{
    fprintf(stderr, "%s: export '%s': %s\n", progname, id, msg);
}

static void usage(void)
{
    printf(
"Usage: %s [options]\n"
"Serve a Strata block graph over QMP and exports (qemu-storage-daemon's\n"
"command line).  Options are processed in order.\n"
"\n"
"  -h, --help                 print this help and exit\n"
"  -V, --version              print the version and exit\n"
"  --blockdev OPTIONS         open a node (dotted keys or JSON), as QMP\n"
"                             blockdev-add; see docs/options.md\n"
"  --object OPTIONS           create an object: secret, iothread,\n"
"                             tls-creds-x509, tls-creds-psk, throttle-group\n"
"                             (qom-type=..., id=..., or JSON)\n"
"  --chardev socket,id=ID,path=PATH,server=on,wait=off\n"
"                             a UNIX socket for a monitor (the monitor has no\n"
"                             authentication: mind the socket's permissions);\n"
"                             host=H,port=P listens on TCP, loopback only;\n"
"  --chardev stdio,id=ID      the daemon's stdin/stdout\n"
"  --monitor [chardev=]ID[,mode=control][,pretty=on|off]\n"
"                             serve QMP on a chardev (any number)\n"
"  --export type=TYPE,id=ID,node-name=NODE[,writable=on|off][,...]\n"
"                             export a node, as QMP block-export-add\n"
"  --nbd-server addr.type=unix,addr.path=PATH | addr.type=inet,...\n"
"                             start the NBD server, as nbd-server-start\n"
"  --pidfile PATH             write the process id to PATH (locked)\n"
"  --daemonize                run in the background once everything is\n"
"                             set up; errors before that go to stderr\n"
"  --config FILE              options from a JSON file (see\n"
"                             docs/strata-storage-daemon.md)\n"
"\n"
"SIGTERM, SIGINT and QMP quit stop it gracefully.  QMP reference:\n"
"docs/qmp.md.\n", progname);
}

/* ---- option parsing helpers ---------------------------------------------- */

/* Dotted keys with QEMU's implied first key ("socket,id=m0" is
 * "backend=socket,id=m0"), or JSON. */
static OptNode *parse_arg(const char *arg, const char *implied,
                          StrataError **errp)
{
    if (arg[0] == '{') {
        return opts_parse_json(arg, errp);
    }
    const char *comma = strchr(arg, ',');
    size_t first = comma ? (size_t)(comma - arg) : strlen(arg);
    if (implied && !memchr(arg, '=', first)) {
        g_autofree char *full = g_strdup_printf("%s=%s", implied, arg);
        return opts_parse_dotted(full, errp);
    }
    return opts_parse_dotted(arg, errp);
}

static Chardev *chardev_find(const char *id)
{
    for (GList *l = chardevs; l; l = l->next) {
        Chardev *c = l->data;
        if (!strcmp(c->id, id)) {
            return c;
        }
    }
    return NULL;
}

static bool is_loopback(const char *host)
{
    return !strcmp(host, "localhost") || !strcmp(host, "::1") ||
           g_str_has_prefix(host, "127.");
}

static bool add_chardev(OptNode *opts, StrataError **errp)
{
    const char *backend, *id, *path = NULL, *host = NULL, *port = NULL;
    bool server = false, wait = true;

    if (!opts_require_str(opts, "backend", &backend, errp) ||
        !opts_require_str(opts, "id", &id, errp)) {
        return false;
    }
    if (chardev_find(id)) {
        error_set_option(errp, "id: a chardev named '%s' already exists", id);
        return false;
    }
    Chardev *c = g_new0(Chardev, 1);
    c->listen_fd = -1;
    if (!strcmp(backend, "stdio")) {
        c->is_stdio = true;
        opts_get(opts, "signal");
    } else if (!strcmp(backend, "socket")) {
        if (!opts_get_str(opts, "path", NULL, &path, errp) ||
            !opts_get_str(opts, "host", NULL, &host, errp) ||
            !opts_get_str(opts, "port", NULL, &port, errp) ||
            !opts_get_bool(opts, "server", false, &server, errp) ||
            !opts_get_bool(opts, "wait", true, &wait, errp)) {
            goto fail;
        }
        if (!server) {
            error_set_option(errp, "server: chardev '%s': only listening "
                             "sockets (server=on) serve a monitor", id);
            goto fail;
        }
        if (wait) {
            error_set_option(errp, "wait: chardev '%s': wait=on is not "
                             "supported; give wait=off", id);
            goto fail;
        }
        if (!path == !host) {
            error_set_option(errp, "chardev '%s': give either path (UNIX "
                             "socket) or host and port (TCP)", id);
            goto fail;
        }
        if (path) {
            c->listen_fd = socket_listen_unix(path, 8, &c->unlink_path, errp);
        } else {
            if (!port) {
                error_set_option(errp, "port: missing");
                goto fail;
            }
            if (!is_loopback(host)) {
                error_set_option(errp, "host: '%s' is not a loopback "
                                 "address: the monitor has no "
                                 "authentication, so TCP is accepted on "
                                 "loopback only", host);
                goto fail;
            }
            fprintf(stderr, "%s: warning: chardev '%s': QMP on TCP %s:%s "
                    "has no authentication; any local user can connect\n",
                    progname, id, host, port);
            c->listen_fd = socket_listen_tcp(host, port, 8, errp);
        }
        if (c->listen_fd < 0) {
            goto fail;
        }
    } else {
        error_set_option(errp, "backend: unsupported chardev type '%s' "
                         "(socket and stdio are)", backend);
        goto fail;
    }
    if (!opts_check_consumed(opts, errp)) {
        goto fail;
    }
    c->id = g_strdup(id);
    chardevs = g_list_append(chardevs, c);
    return true;

fail:
    if (c->listen_fd >= 0) {
        close(c->listen_fd);
    }
    if (c->unlink_path) {
        unlink(c->unlink_path);
        g_free(c->unlink_path);
    }
    g_free(c);
    return false;
}

static bool add_monitor(OptNode *opts, StrataError **errp)
{
    const char *id, *mode;
    bool pretty;

    if (!opts_require_str(opts, "chardev", &id, errp) ||
        !opts_get_str(opts, "mode", "control", &mode, errp) ||
        !opts_get_bool(opts, "pretty", false, &pretty, errp) ||
        !opts_check_consumed(opts, errp)) {
        return false;
    }
    if (strcmp(mode, "control") != 0) {
        error_set_option(errp, "mode: Only QMP is supported (mode=control)");
        return false;
    }
    Chardev *c = chardev_find(id);
    if (!c) {
        error_set_option(errp, "chardev \"%s\" not found", id);
        return false;
    }
    if (c->in_use) {
        error_set_option(errp, "chardev '%s' is already in use", id);
        return false;
    }
    c->in_use = true;
    monitor_list = g_list_append(monitor_list,
        monitor_new(daemon_state.loop, c->listen_fd,
                    c->is_stdio ? STDIN_FILENO : -1,
                    c->is_stdio ? STDOUT_FILENO : -1, pretty));
    return true;
}

static bool write_pidfile(const char *path, StrataError **errp)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);

    if (fd < 0) {
        error_setg_errno(errp, errno, "Cannot open pid file %s", path);
        return false;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        error_setg_errno(errp, errno, "Cannot lock pid file %s (another "
                         "daemon running?)", path);
        close(fd);
        return false;
    }
    g_autofree char *pid = g_strdup_printf("%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || write(fd, pid, strlen(pid)) !=
        (ssize_t)strlen(pid)) {
        error_setg_errno(errp, errno, "Cannot write pid file %s", path);
        close(fd);
        return false;
    }
    pidfile_fd = fd;
    pidfile_path = g_path_is_absolute(path)
                   ? g_strdup(path)
                   : g_build_filename(g_get_current_dir(), path, NULL);
    return true;
}

/* ---- events ------------------------------------------------------------------ */

static void on_export_deleted(const char *id, void *opaque)
{
    JsonBuilder *b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "id");
    json_builder_add_string_value(b, id);
    json_builder_end_object(b);
    monitor_emit_event("BLOCK_EXPORT_DELETED", json_builder_get_root(b));
    g_object_unref(b);
}

static void on_export_io_error(BlockExport *exp, bool is_write, int err,
                               StrataErrorAction action, void *opaque)
{
    static const char *const actions[] = { "report", "ignore", "stop" };
    JsonBuilder *b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "device");
    json_builder_add_string_value(b, exp->id);
    json_builder_set_member_name(b, "node-name");
    json_builder_add_string_value(b, exp->node_name);
    json_builder_set_member_name(b, "operation");
    json_builder_add_string_value(b, is_write ? "write" : "read");
    json_builder_set_member_name(b, "action");
    json_builder_add_string_value(b, actions[action <= 2 ? action : 0]);
    json_builder_set_member_name(b, "nospace");
    json_builder_add_boolean_value(b, err == ENOSPC);
    json_builder_set_member_name(b, "reason");
    json_builder_add_string_value(b, g_strerror(err));
    json_builder_end_object(b);
    monitor_emit_event("BLOCK_IO_ERROR", json_builder_get_root(b));
    g_object_unref(b);
}

static void emit_shutdown(ShutdownReason reason)
{
    JsonBuilder *b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "guest");
    json_builder_add_boolean_value(b, false);
    json_builder_set_member_name(b, "reason");
    json_builder_add_string_value(b, reason == SHUTDOWN_QMP_QUIT
                                     ? "host-qmp-quit" : "host-signal");
    json_builder_end_object(b);
    monitor_emit_event("SHUTDOWN", json_builder_get_root(b));
    g_object_unref(b);
}

/* ---- signals ------------------------------------------------------------------- */

static void on_signal(void *opaque)
{
    struct signalfd_siginfo si;

    /* A second signal during shutdown is read and dropped: the shutdown
     * already under way goes on. */
    while (read(signal_fd, &si, sizeof(si)) == sizeof(si)) {
        daemon_request_shutdown(SHUTDOWN_SIGNAL);
    }
}

static bool setup_signals(StrataError **errp)
{
    sigset_t set;

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    /* Blocked before any thread starts, so every thread inherits it. */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (signal_fd < 0) {
        error_setg_errno(errp, errno, "signalfd");
        return false;
    }
    return true;
}

/* ---- daemonize ------------------------------------------------------------------- */

/* Fork before anything else exists (no threads yet).  The parent waits for
 * the child to report readiness (one byte) and exits 0, or exits 1 when
 * the pipe closes without it (the child failed and said why on stderr). */
static void daemonize_early(void)
{
    int fds[2];

    if (pipe2(fds, O_CLOEXEC) < 0) {
        perror("pipe");
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid > 0) {
        char c;
        close(fds[1]);
        ssize_t n;
        do {
            n = read(fds[0], &c, 1);
        } while (n < 0 && errno == EINTR);
        if (n == 1) {
            _exit(0);
        }
        int status;
        waitpid(pid, &status, 0);
        _exit(WIFEXITED(status) && WEXITSTATUS(status) ? WEXITSTATUS(status)
                                                       : 1);
    }
    close(fds[0]);
    setsid();
    ready_fd = fds[1];
}

static void daemonize_ready(void)
{
    if (ready_fd < 0) {
        return;
    }
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(null, STDERR_FILENO);
        close(null);
    }
    if (write(ready_fd, "", 1) != 1) {
        /* The parent is gone: nothing to tell. */
    }
    close(ready_fd);
    ready_fd = -1;
}

/* ---- main ----------------------------------------------------------------------- */

enum {
    ARG_BLOCKDEV = 256, ARG_OBJECT, ARG_CHARDEV, ARG_MONITOR, ARG_EXPORT,
    ARG_NBD_SERVER, ARG_PIDFILE, ARG_DAEMONIZE, ARG_CONFIG,
};

static const struct option long_options[] = {
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { "blockdev", required_argument, NULL, ARG_BLOCKDEV },
    { "object", required_argument, NULL, ARG_OBJECT },
    { "chardev", required_argument, NULL, ARG_CHARDEV },
    { "monitor", required_argument, NULL, ARG_MONITOR },
    { "export", required_argument, NULL, ARG_EXPORT },
    { "nbd-server", required_argument, NULL, ARG_NBD_SERVER },
    { "pidfile", required_argument, NULL, ARG_PIDFILE },
    { "daemonize", no_argument, NULL, ARG_DAEMONIZE },
    { "config", required_argument, NULL, ARG_CONFIG },
    { NULL, 0, NULL, 0 },
};

static bool process_option(int c, const char *arg, StrataError **errp);

/*
 * --config FILE: a JSON object whose members are the long options without
 * their dashes, processed in the file's order; a member's value is one
 * option argument (an object, or a string for pidfile) or a list of them:
 *   {"object": [{"qom-type": "iothread", "id": "io0"}],
 *    "blockdev": [{"driver": "file", "node-name": "f0", ...}, ...],
 *    "chardev": [{"backend": "socket", "id": "m0", "path": "...",
 *                 "server": true, "wait": false}],
 *    "monitor": [{"chardev": "m0"}], "pidfile": "/run/strata.pid"}
 * Errors name the member and its index: "config.blockdev[1]: ...".
 */
static bool process_config(const char *path, StrataError **errp)
{
    g_autofree char *text = NULL;
    g_autoptr(GError) gerr = NULL;

    if (!g_file_get_contents(path, &text, NULL, &gerr)) {
        error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT, "%s", gerr->message);
        return false;
    }
    g_autoptr(OptNode) cfg = opts_parse_json(text, errp);
    if (!cfg) {
        error_prepend(errp, "%s: ", path);
        return false;
    }
    for (guint i = 0; i < opts_object_size(cfg); i++) {
        const char *key = opts_object_key(cfg, i);
        OptNode *val = opts_object_value(cfg, i);
        const struct option *o = NULL;
        for (const struct option *lo = long_options; lo->name; lo++) {
            if (!strcmp(lo->name, key) && lo->has_arg == required_argument &&
                lo->val != ARG_CONFIG) {
                o = lo;
            }
        }
        if (!o) {
            error_set_option(errp, "config.%s: not an option a config file "
                             "can give%s", key, !strcmp(key, "daemonize")
                             ? " (give --daemonize on the command line)"
                             : "");
            return false;
        }
        bool is_list = opts_type(val) == OPT_LIST;
        guint n = is_list ? opts_list_length(val) : 1;
        for (guint j = 0; j < n; j++) {
            OptNode *el = is_list ? opts_list_get(val, j) : val;
            g_autofree char *arg = opts_type(el) == OPT_STRING
                                   ? g_strdup(opts_scalar_str(el))
                                   : opts_to_json(el, false);
            if (!process_option(o->val, arg, errp)) {
                if (is_list) {
                    error_prepend(errp, "config.%s[%u]: ", key, j);
                } else {
                    error_prepend(errp, "config.%s: ", key);
                }
                return false;
            }
        }
    }
    return true;
}

static bool process_option(int c, const char *arg, StrataError **errp)
{
    g_autoptr(OptNode) opts = NULL;

    switch (c) {
    case ARG_BLOCKDEV:
        opts = parse_arg(arg, NULL, errp);
        return opts && daemon_blockdev_add(opts, errp);
    case ARG_OBJECT:
        opts = parse_arg(arg, "qom-type", errp);
        return opts && object_add(opts, errp);
    case ARG_CHARDEV:
        opts = parse_arg(arg, "backend", errp);
        return opts && add_chardev(opts, errp);
    case ARG_MONITOR:
        opts = parse_arg(arg, "chardev", errp);
        return opts && add_monitor(opts, errp);
    case ARG_EXPORT:
        opts = parse_arg(arg, "type", errp);
        return opts && export_add(daemon_state.ctx, opts, errp);
    case ARG_NBD_SERVER:
        opts = parse_arg(arg, NULL, errp);
        return opts && nbd_server_start(daemon_state.ctx, opts, errp);
    case ARG_PIDFILE:
        return write_pidfile(arg, errp);
    case ARG_DAEMONIZE:
        return true;
    case ARG_CONFIG:
        return process_config(arg, errp);
    }
    g_assert_not_reached();
}

/* Tear everything down in order and exit with @status (1 if a flush
 * fails).  Also the error path of start-up: what earlier options built
 * goes away, sockets and the pidfile included. */
static G_NORETURN void shutdown_daemon(int status)
{

    /* The NBD server stops listening; then the exports stop accepting, their clients' requests finish
     * and they go away (BLOCK_EXPORT_DELETED for each). */
    if (nbd_server_running()) {
        nbd_server_stop(NULL);
    }
    export_shutdown_all();
    while (export_count() > 0) {
        strata_context_run_once(daemon_state.ctx, true);
    }
    /* Requests x-strata-io left in flight complete. */
    qmp_io_release_all();
    monitor_flush_all();
    for (GList *l = monitor_list; l; l = l->next) {
        monitor_free(l->data);
    }
    g_list_free(monitor_list);
    monitor_list = NULL;
    /* Nodes: newest first, each flushed before it closes. */
    GList *owned = g_list_reverse(daemon_state.owned_nodes);
    daemon_state.owned_nodes = NULL;
    for (GList *l = owned; l; l = l->next) {
        StrataNode *node = l->data;
        qmp_io_release_node(node);
        int ret = daemon_flush_node(node);
        if (ret < 0) {
            fprintf(stderr, "%s: flushing node '%s' failed: %s\n", progname,
                    node->node_name, g_strerror(-ret));
            status = 1;
        }
        node_unref(node);
    }
    g_list_free(owned);
    object_del_all();
    for (GList *l = chardevs; l; l = l->next) {
        Chardev *c = l->data;
        if (c->listen_fd >= 0) {
            close(c->listen_fd);
        }
        if (c->unlink_path) {
            unlink(c->unlink_path);
        }
        g_free(c->unlink_path);
        g_free(c->id);
        g_free(c);
    }
    g_list_free(chardevs);
    chardevs = NULL;
    if (pidfile_path) {
        unlink(pidfile_path);
        close(pidfile_fd);
        g_free(pidfile_path);
    }
    loop_set_fd_handler(daemon_state.loop, signal_fd, NULL, NULL, NULL);
    close(signal_fd);
    strata_context_free(daemon_state.ctx);
    exit(status);
}

int main(int argc, char **argv)
{
    g_autoptr(StrataError) err = NULL;
    int c;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--daemonize")) {
            daemonize_early();
            break;
        }
        if (!strcmp(argv[i], "--")) {
            break;
        }
    }
    if (!setup_signals(&err)) {
        fprintf(stderr, "%s: %s\n", progname, error_get_message(err));
        return 1;
    }
    daemon_state.ctx = strata_context_new(&err);
    if (!daemon_state.ctx) {
        fprintf(stderr, "%s: %s\n", progname, error_get_message(err));
        return 1;
    }
    daemon_state.loop = daemon_state.ctx->loop;
    loop_attach_current(daemon_state.loop);
    loop_set_fd_handler(daemon_state.loop, signal_fd, on_signal, NULL, NULL);
    export_set_notifiers(on_export_deleted, on_export_io_error, NULL);
    nbd_export_register();
    vhost_user_blk_register();
    vhost_user_blk_set_log(log_vhost_user);
    tool_set_block_log(progname);

    opterr = 0;
    while ((c = getopt_long(argc, argv, ":hV", long_options, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage();
            exit(0);
        case 'V':
            printf("%s version %s\n", progname, strata_version_string());
            exit(0);
        case '?':
            if (optopt) {
                fprintf(stderr, "%s: invalid option -- '%c'\n", progname,
                        optopt);
            } else {
                fprintf(stderr, "%s: unrecognized option '%s'\n", progname,
                        argv[optind - 1]);
            }
            fprintf(stderr, "Try '%s --help' for more information.\n",
                    progname);
            goto fail;
        case ':':
            fprintf(stderr, "%s: option '%s' requires an argument\n",
                    progname, argv[optind - 1]);
            goto fail;
        default:
            if (!process_option(c, optarg, &err)) {
                g_autofree char *name = g_strdup(argv[optind - (optarg ? 2 : 1)]);
                if (optarg && g_str_has_prefix(name, "--") &&
                    strchr(name, '=')) {
                    *strchr(name, '=') = '\0';
                }
                fprintf(stderr, "%s: %s%s%s: %s\n", progname, name,
                        optarg ? " " : "", optarg ? optarg : "",
                        error_get_message(err));
                goto fail;
            }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", progname,
                argv[optind]);
        goto fail;
    }

    daemonize_ready();
    while (daemon_state.shutdown == SHUTDOWN_NONE) {
        strata_context_run_once(daemon_state.ctx, true);
    }
    emit_shutdown(daemon_state.shutdown);
    shutdown_daemon(0);

fail:
    shutdown_daemon(1);
}
