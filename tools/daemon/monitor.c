/*
 * QMP monitors (SPDX-License-Identifier: MIT).  See monitor.h.
 */
#include "tools/daemon/monitor.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "strata/strata.h"
#include "tools/daemon/qmp-cmds.h"

/* Framing state of one connection's input. */
typedef enum ScanState {
    SCAN_IDLE,          /* between messages */
    SCAN_MESSAGE,       /* inside an object or array */
    SCAN_STRAY,         /* a top-level scalar: not a QMP message */
} ScanState;

/* What one byte did to the scanner (scan_byte). */
typedef enum ScanEvent {
    SCAN_MORE,          /* taken; no message ended */
    SCAN_DONE,          /* taken; it ended a message, a stray scalar or an
                         * overflowing message */
    SCAN_DONE_BEFORE,   /* a stray scalar ended just before this byte,
                         * which is not taken: it starts the next message */
    SCAN_BAD_CLOSE,     /* taken: a closing bracket outside any message */
} ScanEvent;

typedef enum ScanOverflow {
    OVERFLOW_NONE,
    OVERFLOW_SIZE,
    OVERFLOW_DEPTH,
} ScanOverflow;

struct Monitor {
    Loop *loop;
    int listen_fd;          /* -1 for stdio */
    int in_fd, out_fd;      /* the connection, -1 while none */
    bool pretty;
    bool negotiated;
    /* The input ended (EOF or a read error): nothing more is read; what
     * was read before still runs, then the connection closes. */
    bool in_eof;
    /* Writing failed: the peer reads no more, output is dropped. */
    bool out_gone;
    int busy;               /* processing input (re-entry guard) */
    /* Read but not yet scanned.  While busy, only monitor_process()
     * removes bytes from it (from the front); nested loop iterations
     * during a command only append. */
    GByteArray *inbuf;
    GString *outbuf;        /* queued output */
    bool want_write;
    bool reading;           /* the read handler is set */
    /* scanner */
    ScanState state;
    GString *msg;
    int depth;
    bool in_str, esc;
    ScanOverflow overflow;
};

/* Input read but not yet handled, or output not yet written, beyond which
 * the monitor stops reading until it has caught up: a client that sends
 * while a command runs, floods, or reads no answers meets its socket's
 * flow control instead of filling the daemon's memory. */
#define MONITOR_BACKLOG_MAX (1u << 20)

static GList *monitors;
/* A command is running: input of every monitor waits. */
static int dispatching;
static LoopBH *kick_bh;

static void monitor_update_handlers(Monitor *mon);
static void monitor_process(Monitor *mon);
static void monitor_close_if_done(Monitor *mon);

/* ---- output ------------------------------------------------------------ */

static void monitor_write_ready(void *opaque)
{
    Monitor *mon = opaque;

    while (mon->outbuf->len) {
        ssize_t n;
        if (mon->listen_fd >= 0) {
            n = send(mon->out_fd, mon->outbuf->str, mon->outbuf->len,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
        } else {
            n = write(mon->out_fd, mon->outbuf->str, mon->outbuf->len);
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                break;
            }
            /* The client is gone: drop what it will never read.  Its
             * input is read on to its end and still runs. */
            g_string_truncate(mon->outbuf, 0);
            mon->out_gone = true;
            break;
        }
        g_string_erase(mon->outbuf, 0, n);
    }
    monitor_update_handlers(mon);
    monitor_close_if_done(mon);
}

static void monitor_send(Monitor *mon, JsonNode *node)
{
    if (mon->out_fd < 0 || mon->out_gone) {
        return;
    }
    g_autofree char *text = json_to_string(node, mon->pretty);
    g_string_append(mon->outbuf, text);
    g_string_append(mon->outbuf, "\r\n");
    monitor_write_ready(mon);
}

static JsonNode *qmp_error_node(const char *cls, const char *desc,
                                JsonNode *id)
{
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "error");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "class");
    json_builder_add_string_value(b, cls);
    json_builder_set_member_name(b, "desc");
    json_builder_add_string_value(b, desc);
    json_builder_end_object(b);
    if (id) {
        json_builder_set_member_name(b, "id");
        json_builder_add_value(b, json_node_copy(id));
    }
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

static void monitor_send_error(Monitor *mon, const char *cls,
                               const char *desc, JsonNode *id)
{
    g_autoptr(JsonNode) n = qmp_error_node(cls, desc, id);
    monitor_send(mon, n);
}

static void monitor_send_return(Monitor *mon, JsonNode *ret, JsonNode *id)
{
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "return");
    json_builder_add_value(b, json_node_ref(ret));
    if (id) {
        json_builder_set_member_name(b, "id");
        json_builder_add_value(b, json_node_copy(id));
    }
    json_builder_end_object(b);
    g_autoptr(JsonNode) n = json_builder_get_root(b);
    monitor_send(mon, n);
}

static void monitor_send_greeting(Monitor *mon)
{
    g_autofree char *text = g_strdup_printf(
        "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": %d, \"minor\": %d, "
        "\"major\": %d}, \"package\": \"Strata %s\"}, \"capabilities\": []}}",
        STRATA_VERSION_MICRO, STRATA_VERSION_MINOR, STRATA_VERSION_MAJOR,
        strata_version_string());
    g_autoptr(JsonNode) n = json_from_string(text, NULL);
    monitor_send(mon, n);
}

void monitor_emit_event(const char *name, JsonNode *data)
{
    struct timeval tv;
    g_autoptr(JsonBuilder) b = json_builder_new();

    gettimeofday(&tv, NULL);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "timestamp");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "seconds");
    json_builder_add_int_value(b, tv.tv_sec);
    json_builder_set_member_name(b, "microseconds");
    json_builder_add_int_value(b, tv.tv_usec);
    json_builder_end_object(b);
    json_builder_set_member_name(b, "event");
    json_builder_add_string_value(b, name);
    if (data) {
        json_builder_set_member_name(b, "data");
        json_builder_add_value(b, data);
    }
    json_builder_end_object(b);
    g_autoptr(JsonNode) n = json_builder_get_root(b);
    for (GList *l = monitors; l; l = l->next) {
        Monitor *mon = l->data;
        if (mon->negotiated) {
            monitor_send(mon, n);
        }
    }
}

/* ---- one message ---------------------------------------------------------- */

static bool handle_capabilities(Monitor *mon, OptNode *args,
                                StrataError **errp)
{
    OptNode *enable = opts_peek(args, "enable");

    if (enable) {
        if (opts_type(enable) != OPT_LIST) {
            error_setg(errp, "Invalid parameter type for 'enable', "
                       "expected: array");
            return false;
        }
        for (guint i = 0; i < opts_list_length(enable); i++) {
            OptNode *cap = opts_list_get(enable, i);
            if (opts_type(cap) != OPT_STRING) {
                error_setg(errp, "Invalid parameter type for 'enable[%u]', "
                           "expected: string", i);
                return false;
            }
            error_setg(errp, "Capability '%s' not available",
                       opts_scalar_str(cap));
            return false;
        }
    }
    return true;
}

static void monitor_handle_message(Monitor *mon, const char *text,
                                   size_t len)
{
    g_autoptr(StrataError) err = NULL;

    g_autoptr(JsonNode) root = opts_parse_json_value(text, len, &err);
    if (!root) {
        g_autofree char *desc = g_strdup_printf("JSON parse error, %s",
                                                error_get_message(err));
        monitor_send_error(mon, "GenericError", desc, NULL);
        return;
    }
    if (!JSON_NODE_HOLDS_OBJECT(root)) {
        monitor_send_error(mon, "GenericError",
                           "QMP input must be a JSON object", NULL);
        return;
    }
    JsonObject *req = json_node_get_object(root);
    JsonNode *id = json_object_get_member(req, "id");
    JsonNode *exec = NULL, *jargs = NULL;
    JsonObjectIter iter;
    const char *key;
    JsonNode *val;
    json_object_iter_init_ordered(&iter, req);
    while (json_object_iter_next_ordered(&iter, &key, &val)) {
        if (!strcmp(key, "execute")) {
            exec = val;
        } else if (!strcmp(key, "arguments")) {
            jargs = val;
        } else if (strcmp(key, "id") != 0) {
            g_autofree char *desc = g_strdup_printf(
                !strcmp(key, "exec-oob")
                ? "QMP input member '%s' is not supported: this monitor "
                  "offers no out-of-band execution"
                : "QMP input member '%s' is unexpected", key);
            monitor_send_error(mon, "GenericError", desc, id);
            return;
        }
    }
    if (!exec) {
        monitor_send_error(mon, "GenericError",
                           "QMP input lacks member 'execute'", id);
        return;
    }
    if (!JSON_NODE_HOLDS_VALUE(exec) ||
        json_node_get_value_type(exec) != G_TYPE_STRING) {
        monitor_send_error(mon, "GenericError",
                           "QMP input member 'execute' must be a string", id);
        return;
    }
    if (jargs && !JSON_NODE_HOLDS_OBJECT(jargs)) {
        monitor_send_error(mon, "GenericError",
                           "QMP input member 'arguments' must be an object",
                           id);
        return;
    }
    g_autoptr(OptNode) args = NULL;
    if (jargs) {
        /* The typed option tree of the arguments (integers only: no
         * command takes a fraction). */
        g_autofree char *args_text = json_to_string(jargs, false);
        args = opts_parse_json(args_text, &err);
        if (!args) {
            monitor_send_error(mon, "GenericError", error_get_message(err),
                               id);
            return;
        }
    } else {
        args = opts_new_object();
    }
    const char *name = json_node_get_string(exec);
    bool is_caps = !strcmp(name, "qmp_capabilities");
    if (!mon->negotiated && !is_caps) {
        monitor_send_error(mon, "CommandNotFound",
                           "Expecting capabilities negotiation with "
                           "'qmp_capabilities'", id);
        return;
    }
    if (mon->negotiated && is_caps) {
        monitor_send_error(mon, "CommandNotFound",
                           "Capabilities negotiation is already complete, "
                           "command ignored", id);
        return;
    }
    const QmpCommandSchema *cmd = qmp_find_command(name);
    QmpHandler *handler = cmd ? qmp_find_handler(name) : NULL;
    if (!cmd || (!handler && !is_caps)) {
        g_autofree char *desc = g_strdup_printf(
            "The command %s has not been found", name);
        monitor_send_error(mon, "CommandNotFound", desc, id);
        return;
    }
    if (!qmp_validate_args(cmd, args, &err)) {
        monitor_send_error(mon, "GenericError", error_get_message(err), id);
        return;
    }
    if (is_caps) {
        if (!handle_capabilities(mon, args, &err)) {
            monitor_send_error(mon, "GenericError", error_get_message(err),
                               id);
            return;
        }
        mon->negotiated = true;
        g_autoptr(JsonNode) ret = qmp_empty_object();
        monitor_send_return(mon, ret, id);
        return;
    }
    if (qmp_command_filter && !qmp_command_filter(name, args)) {
        monitor_send_error(mon, "GenericError",
                           "refused by this monitor's filter", id);
        return;
    }
    dispatching++;
    g_autoptr(JsonNode) ret = handler(args, &err);
    dispatching--;
    if (!ret) {
        const char *cls = qmp_error_class ? qmp_error_class : "GenericError";
        qmp_error_class = NULL;
        monitor_send_error(mon, cls, error_get_message(err), id);
    } else {
        monitor_send_return(mon, ret, id);
    }
    /* Input other monitors received meanwhile waits for this kick. */
    loop_bh_schedule(kick_bh);
}

/* ---- framing ------------------------------------------------------------- */

static void scan_reset(Monitor *mon)
{
    mon->state = SCAN_IDLE;
    g_string_truncate(mon->msg, 0);
    mon->depth = 0;
    mon->in_str = mon->esc = false;
    mon->overflow = OVERFLOW_NONE;
}

/* Answer or run what scan_byte() reported with @ev (not SCAN_MORE).  The
 * bytes it came from are already consumed: a command may run nested loop
 * iterations, which read more input onto the end of inbuf. */
static void scan_complete(Monitor *mon, ScanEvent ev)
{
    if (ev == SCAN_BAD_CLOSE) {
        monitor_send_error(mon, "GenericError",
                           "JSON parse error, unexpected closing "
                           "bracket", NULL);
        return;
    }

    ScanOverflow overflow = mon->overflow;
    ScanState state = mon->state;
    size_t len = mon->msg->len;
    g_autofree char *text = g_strndup(mon->msg->str, len);

    scan_reset(mon);
    if (state == SCAN_STRAY) {
        monitor_send_error(mon, "GenericError",
                           "QMP input must be a JSON object", NULL);
    } else if (overflow == OVERFLOW_SIZE) {
        g_autofree char *desc = g_strdup_printf(
            "JSON parse error, message exceeds the limit of %u bytes "
            "(16 MiB)", QMP_MAX_MESSAGE);
        monitor_send_error(mon, "GenericError", desc, NULL);
    } else if (overflow == OVERFLOW_DEPTH) {
        g_autofree char *desc = g_strdup_printf(
            "JSON parse error, nesting deeper than %d levels",
            QMP_MAX_DEPTH);
        monitor_send_error(mon, "GenericError", desc, NULL);
    } else {
        monitor_handle_message(mon, text, len);
    }
}

static void scan_append(Monitor *mon, char c)
{
    if (mon->overflow != OVERFLOW_NONE) {
        return;
    }
    if (mon->msg->len >= QMP_MAX_MESSAGE) {
        mon->overflow = OVERFLOW_SIZE;
        g_string_truncate(mon->msg, 0);
        return;
    }
    g_string_append_c(mon->msg, c);
}

static bool is_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Inside a string: follow escapes to find its closing quote. */
static void scan_string_byte(Monitor *mon, char c)
{
    if (mon->esc) {
        mon->esc = false;
    } else if (c == '\\') {
        mon->esc = true;
    } else if (c == '"') {
        mon->in_str = false;
    }
}

/* Feed one byte.  Decodes only: what ended is handled by scan_complete()
 * once the caller has consumed the input up to it. */
static ScanEvent scan_byte(Monitor *mon, char c)
{
    switch (mon->state) {
    case SCAN_IDLE:
        if (is_json_space(c)) {
            return SCAN_MORE;
        }
        if (c == '{' || c == '[') {
            mon->state = SCAN_MESSAGE;
            mon->depth = 1;
            scan_append(mon, c);
            return SCAN_MORE;
        }
        if (c == '}' || c == ']') {
            return SCAN_BAD_CLOSE;
        }
        mon->state = SCAN_STRAY;
        mon->in_str = c == '"';
        return SCAN_MORE;
    case SCAN_STRAY:
        if (mon->in_str) {
            scan_string_byte(mon, c);
            return SCAN_MORE;
        }
        if (c == '{' || c == '[') {
            return SCAN_DONE_BEFORE;
        }
        return is_json_space(c) ? SCAN_DONE : SCAN_MORE;
    case SCAN_MESSAGE:
        scan_append(mon, c);
        if (mon->in_str) {
            scan_string_byte(mon, c);
            return SCAN_MORE;
        }
        if (c == '"') {
            mon->in_str = true;
        } else if (c == '{' || c == '[') {
            if (++mon->depth > QMP_MAX_DEPTH &&
                mon->overflow == OVERFLOW_NONE) {
                mon->overflow = OVERFLOW_DEPTH;
                g_string_truncate(mon->msg, 0);
            }
        } else if (c == '}' || c == ']') {
            if (--mon->depth == 0) {
                return SCAN_DONE;
            }
        }
        return SCAN_MORE;
    }
    return SCAN_MORE;
}

/* ---- connection ------------------------------------------------------------ */

static void monitor_on_read(void *opaque);
static void monitor_on_accept(void *opaque);

static bool monitor_wants_input(const Monitor *mon)
{
    return !mon->in_eof && mon->inbuf->len < MONITOR_BACKLOG_MAX &&
           mon->outbuf->len < MONITOR_BACKLOG_MAX;
}

static void monitor_update_handlers(Monitor *mon)
{
    bool want_write = mon->outbuf->len > 0;
    LoopCallback *on_read = monitor_wants_input(mon) ? monitor_on_read : NULL;

    if (mon->in_fd < 0) {
        return;
    }
    if (mon->in_fd == mon->out_fd) {
        loop_set_fd_handler(mon->loop, mon->in_fd, on_read,
                            want_write ? monitor_write_ready : NULL, mon);
    } else {
        loop_set_fd_handler(mon->loop, mon->in_fd, on_read, NULL, mon);
        loop_set_fd_handler(mon->loop, mon->out_fd, NULL,
                            want_write ? monitor_write_ready : NULL, mon);
    }
    mon->want_write = want_write;
    mon->reading = on_read != NULL;
}

static void monitor_close_client(Monitor *mon)
{
    if (mon->in_fd < 0) {
        return;
    }
    /* monitor_process() is scanning inbuf further up the stack. */
    g_assert(!mon->busy);
    loop_set_fd_handler(mon->loop, mon->in_fd, NULL, NULL, NULL);
    if (mon->out_fd != mon->in_fd) {
        loop_set_fd_handler(mon->loop, mon->out_fd, NULL, NULL, NULL);
    }
    if (mon->listen_fd >= 0) {
        close(mon->in_fd);
        mon->in_fd = mon->out_fd = -1;
        /* Accept the next client. */
        loop_set_fd_handler(mon->loop, mon->listen_fd, monitor_on_accept,
                            NULL, mon);
    } else {
        mon->in_fd = mon->out_fd = -1;
    }
    g_byte_array_set_size(mon->inbuf, 0);
    g_string_truncate(mon->outbuf, 0);
    mon->want_write = false;
    mon->reading = false;
    mon->negotiated = false;
    mon->in_eof = mon->out_gone = false;
    scan_reset(mon);
}

/* After the input ended: close once every message read before the end
 * has been handled and its answer written (or the peer reads no more).
 * A message the scanner holds unfinished is dropped with the connection,
 * as documented.  Not during a command: the kick after it comes back
 * here. */
static void monitor_close_if_done(Monitor *mon)
{
    if (mon->in_fd < 0 || !mon->in_eof || mon->busy || dispatching ||
        mon->inbuf->len || mon->outbuf->len) {
        return;
    }
    monitor_close_client(mon);
}

static void monitor_process(Monitor *mon)
{
    if (mon->busy || dispatching) {
        return;
    }
    mon->busy++;
    /* Each event is handled only after the bytes up to it are counted
     * as consumed, and the buffer is compacted only here, so a command
     * that reads more input (nested loop iterations) leaves the scan
     * position valid; the loop also scans what it appended. */
    guint i = 0;
    while (i < mon->inbuf->len) {
        ScanEvent ev = scan_byte(mon, (char)mon->inbuf->data[i]);
        if (ev != SCAN_DONE_BEFORE) {
            i++;
        }
        if (ev != SCAN_MORE) {
            scan_complete(mon, ev);
        }
    }
    g_byte_array_remove_range(mon->inbuf, 0, i);
    mon->busy--;
    if (mon->in_fd >= 0 && mon->reading != monitor_wants_input(mon)) {
        monitor_update_handlers(mon);       /* caught up, or fell behind */
    }
    monitor_close_if_done(mon);
}

static void monitor_kick(void *opaque)
{
    for (GList *l = monitors; l; l = l->next) {
        Monitor *mon = l->data;
        if (mon->inbuf->len || (mon->in_eof && mon->in_fd >= 0)) {
            monitor_process(mon);
        }
    }
}

static void monitor_on_read(void *opaque)
{
    Monitor *mon = opaque;
    char buf[65536];
    ssize_t n;

    do {
        n = read(mon->in_fd, buf, sizeof(buf));
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN) {
        return;
    }
    if (n <= 0) {
        /* EOF, or an error, which ends the input just the same.  The
         * complete messages read before it still run, in order, and are
         * answered: the peer may have shut down only its sending side,
         * and a command sent before a disconnect runs (docs).  When a
         * command is running (this monitor's, further up the stack, or
         * another's), its end comes back to them. */
        mon->in_eof = true;
        monitor_update_handlers(mon);
        monitor_process(mon);
        return;
    }
    g_byte_array_append(mon->inbuf, (const guint8 *)buf, (guint)n);
    if (!monitor_wants_input(mon)) {
        monitor_update_handlers(mon);       /* a backlog: stop reading */
    }
    monitor_process(mon);
}

static void monitor_attach(Monitor *mon, int in_fd, int out_fd)
{
    mon->in_fd = in_fd;
    mon->out_fd = out_fd;
    mon->negotiated = false;
    scan_reset(mon);
    monitor_send_greeting(mon);
    monitor_update_handlers(mon);
}

static void monitor_on_accept(void *opaque)
{
    Monitor *mon = opaque;
    int fd = accept4(mon->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (fd < 0) {
        return;
    }
    /* One client at a time: later ones wait in the backlog. */
    loop_set_fd_handler(mon->loop, mon->listen_fd, NULL, NULL, NULL);
    monitor_attach(mon, fd, fd);
}

Monitor *monitor_new(Loop *loop, int listen_fd, int in_fd, int out_fd,
                     bool pretty)
{
    Monitor *mon = g_new0(Monitor, 1);

    if (!kick_bh) {
        kick_bh = loop_bh_new(loop, monitor_kick, NULL);
    }
    mon->loop = loop;
    mon->listen_fd = listen_fd;
    mon->in_fd = mon->out_fd = -1;
    mon->pretty = pretty;
    mon->inbuf = g_byte_array_new();
    mon->outbuf = g_string_new(NULL);
    mon->msg = g_string_new(NULL);
    monitors = g_list_append(monitors, mon);
    if (listen_fd >= 0) {
        loop_set_fd_handler(loop, listen_fd, monitor_on_accept, NULL, mon);
    } else {
        monitor_attach(mon, in_fd, out_fd);
    }
    return mon;
}

static void monitor_flush(Monitor *mon)
{
    int64_t deadline = clock_ns() + 2000000000LL;

    while (mon->out_fd >= 0 && mon->outbuf->len && !mon->out_gone &&
           clock_ns() < deadline) {
        struct pollfd pfd = { .fd = mon->out_fd, .events = POLLOUT };
        if (poll(&pfd, 1, 100) > 0) {
            monitor_write_ready(mon);
        }
    }
}

void monitor_flush_all(void)
{
    for (GList *l = monitors; l; l = l->next) {
        monitor_flush(l->data);
    }
}

void monitor_free(Monitor *mon)
{
    monitor_flush(mon);
    monitor_close_client(mon);
    if (mon->listen_fd >= 0) {
        loop_set_fd_handler(mon->loop, mon->listen_fd, NULL, NULL, NULL);
    }
    monitors = g_list_remove(monitors, mon);
    if (!monitors && kick_bh) {
        loop_bh_delete(kick_bh);
        kick_bh = NULL;
    }
    g_byte_array_free(mon->inbuf, TRUE);
    g_string_free(mon->outbuf, TRUE);
    g_string_free(mon->msg, TRUE);
    g_free(mon);
}
