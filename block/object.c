/*
 * User-creatable objects: secrets, I/O threads, TLS credentials
 * SPDX-License-Identifier: MIT
 *
 * Each type is a create/free pair in a table indexed by ObjectKind.
 * object_add() validates every property first (typed getters, then
 * opts_check_consumed() for unknown ones), then checks the id against the
 * registry, then loads (reads files, starts the thread), and registers the
 * object last, so that a failure leaves nothing behind.  The registry lock
 * is held only for look-ups and list edits, never while loading or while
 * an I/O thread stops.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include "block/block-int.h"
#include "block/object.h"
#include "block/throttle-group.h"
#include "strata/strata.h"
#include "util/thread.h"

/* Largest secret file and keys.psk read into memory: a path naming a
 * device or a huge file is an error, not an unbounded read. */
#define OBJECT_FILE_MAX (1024 * 1024)

const char *const object_kind_names[] = {
    [OBJECT_SECRET] = "secret",
    [OBJECT_IOTHREAD] = "iothread",
    [OBJECT_TLS_CREDS_X509] = "tls-creds-x509",
    [OBJECT_TLS_CREDS_PSK] = "tls-creds-psk",
    [OBJECT_THROTTLE_GROUP] = "throttle-group",
    [OBJECT_KIND__MAX] = NULL,
};

typedef struct TlsCreds {
    bool server;
    bool verify_peer;
    char *priority;                 /* NULL: GnuTLS's default */
    char *username;                 /* PSK client */
    char *dir;                      /* the credentials directory */
    gnutls_certificate_credentials_t x509;
    gnutls_psk_server_credentials_t psk_server;
    gnutls_psk_client_credentials_t psk_client;
    gnutls_dh_params_t dh;          /* from dh-params.pem, or NULL */
} TlsCreds;

struct StrataObject {
    ObjectKind kind;
    char *id;
    /* One string per object_use() not yet released; under objects_lock. */
    GPtrArray *users;
    union {
        struct {
            uint8_t *data;          /* NUL-terminated, wiped on free */
            size_t len;
        } secret;
        struct {
            StrataContext *ctx;
            int64_t poll_max_ns, poll_grow, poll_shrink, aio_max_batch;
            /* Its queue on the context that uses it (multi-queue), made on
             * first use; under objects_lock. */
            StrataQueue *queue;
        } iothread;
        TlsCreds tls;
        ThrottleGroup *throttle;
    };
};

typedef struct ObjectType {
    /* Read the properties of @opts into @obj and load it.  On failure the
     * type's free function is called on the partly built object. */
    bool (*create)(StrataObject *obj, OptNode *opts, StrataError **errp);
    void (*free)(StrataObject *obj);
} ObjectType;

static Mutex objects_lock = { PTHREAD_MUTEX_INITIALIZER };
static GQueue objects = G_QUEUE_INIT;       /* creation order */

/* ---- helpers ------------------------------------------------------------ */

/* QEMU's id rules: an ASCII letter, then letters, digits, '-', '.', '_'. */
static bool object_id_valid(const char *id)
{
    if (!g_ascii_isalpha(id[0])) {
        return false;
    }
    for (const char *p = id + 1; *p; p++) {
        if (!g_ascii_isalnum(*p) && !strchr("-._", *p)) {
            return false;
        }
    }
    return true;
}

static StrataObject *object_find_locked(const char *id)
{
    for (GList *l = objects.head; l; l = l->next) {
        StrataObject *obj = l->data;
        if (!strcmp(obj->id, id)) {
            return obj;
        }
    }
    return NULL;
}

/* QEMU's message for a taken id (its objects are properties of the
 * /objects container). */
static void object_error_duplicate(const char *id, StrataError **errp)
{
    error_set_option(errp, "attempt to add duplicate property '%s' to "
                     "object (type 'container')", id);
}

/* Called by the types after their properties are read and before loading,
 * so that errors come in QEMU's order: properties, id, then loading. */
static bool object_check_duplicate(const char *id, StrataError **errp)
{
    mutex_lock(&objects_lock);
    bool dup = object_find_locked(id) != NULL;
    mutex_unlock(&objects_lock);
    if (dup) {
        object_error_duplicate(id, errp);
    }
    return !dup;
}

/* Integer property that must be >= 0 (QEMU's iothread ranges). */
static bool get_nonneg(OptNode *opts, const char *key, int64_t *out,
                       StrataError **errp)
{
    if (!opts_get_int(opts, key, 0, out, errp)) {
        return false;
    }
    if (*out < 0) {
        error_set_option(errp, "%s: must be in range [0, %" PRId64 "], got %"
                         PRId64, key, (int64_t)INT64_MAX, *out);
        return false;
    }
    return true;
}

/*
 * Read a whole regular file of at most OBJECT_FILE_MAX bytes into a
 * NUL-terminated buffer.  Errors name the object and the path.
 */
static bool object_read_file(const StrataObject *obj, const char *path,
                             char **data, size_t *len, StrataError **errp)
{
    const char *type = object_kind_names[obj->kind];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        error_set(errp, STRATA_ERROR_NOT_FOUND, err, "%s '%s': file '%s': %s",
                  type, obj->id, path, g_strerror(err));
        return false;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        error_set_option(errp, "%s '%s': file '%s' is not a regular file",
                         type, obj->id, path);
        close(fd);
        return false;
    }
    if (st.st_size > OBJECT_FILE_MAX) {
        error_set_option(errp, "%s '%s': file '%s' is larger than %d bytes",
                         type, obj->id, path, OBJECT_FILE_MAX);
        close(fd);
        return false;
    }
    /* The size is re-checked while reading: the file may grow. */
    char *buf = g_malloc(OBJECT_FILE_MAX + 1);
    size_t done = 0;
    for (;;) {
        ssize_t n = read(fd, buf + done, OBJECT_FILE_MAX + 1 - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            int err = errno;
            error_set(errp, STRATA_ERROR_IO, err, "%s '%s': file '%s': %s",
                      type, obj->id, path, g_strerror(err));
            g_free(buf);
            close(fd);
            return false;
        }
        if (n == 0) {
            break;
        }
        done += n;
        if (done > OBJECT_FILE_MAX) {
            error_set_option(errp, "%s '%s': file '%s' is larger than %d bytes",
                             type, obj->id, path, OBJECT_FILE_MAX);
            explicit_bzero(buf, done);
            g_free(buf);
            close(fd);
            return false;
        }
    }
    close(fd);
    buf[done] = '\0';
    *data = g_realloc(buf, done + 1);
    *len = done;
    return true;
}

/* ---- secret ------------------------------------------------------------- */

static int base64_value(char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/*
 * Strict base64 (RFC 4648, standard alphabet, padded): groups of four, '='
 * only to end the last group.  GLib's decoder skips what it does not know,
 * which would turn a typo into a different key.  Decodes into @out (at
 * least len / 4 * 3 bytes).  -1 on success, else the offset of the first
 * offending character (len itself for a bad length).
 */
static ssize_t base64_decode_strict(const char *in, size_t len, uint8_t *out,
                                    size_t *out_len)
{
    size_t o = 0;
    if (len % 4) {
        return len;
    }
    for (size_t i = 0; i < len; i += 4) {
        int v[4], pad = 0;
        for (int j = 0; j < 4; j++) {
            char c = in[i + j];
            if (c == '=' && i + 4 == len && j >= 2 &&
                (j == 3 || in[i + 3] == '=')) {
                v[j] = 0;
                pad++;
                continue;
            }
            v[j] = pad ? -1 : base64_value(c);
            if (v[j] < 0) {
                return i + j;
            }
        }
        uint32_t w = v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3];
        out[o++] = w >> 16;
        if (pad < 2) {
            out[o++] = w >> 8;
        }
        if (pad < 1) {
            out[o++] = w;
        }
    }
    *out_len = o;
    return -1;
}

static bool secret_create(StrataObject *obj, OptNode *opts, StrataError **errp)
{
    static const char *const formats[] = { "raw", "base64", NULL };
    const char *data = NULL, *file = NULL;
    int format;

    if (opts_has(opts, "keyid") || opts_has(opts, "iv")) {
        error_set_option(errp, "%s: encrypted secrets are not supported; give "
                         "the secret in clear with data or file",
                         opts_has(opts, "keyid") ? "keyid" : "iv");
        return false;
    }
    if (!opts_get_str(opts, "data", NULL, &data, errp) ||
        !opts_get_str(opts, "file", NULL, &file, errp) ||
        !opts_get_enum(opts, "format", formats, 0, &format, errp) ||
        !opts_check_consumed(opts, errp)) {
        return false;
    }
    if (data && file) {
        error_set_option(errp, "secret '%s': 'file' and 'data' are mutually "
                         "exclusive", obj->id);
        return false;
    }
    if (!data && !file) {
        error_set_option(errp, "secret '%s': either 'file' or 'data' must be "
                         "provided", obj->id);
        return false;
    }
    if (!object_check_duplicate(obj->id, errp)) {
        return false;
    }

    char *raw;
    size_t len;
    if (file) {
        if (!object_read_file(obj, file, &raw, &len, errp)) {
            return false;
        }
    } else {
        len = strlen(data);
        raw = g_strndup(data, len);
    }
    if (format == 0) {
        obj->secret.data = (uint8_t *)raw;
        obj->secret.len = len;
        return true;
    }

    /* A file written by base64(1) ends with a newline: not part of the
     * encoding, so it is dropped (QEMU refuses such a file). */
    size_t enc_len = len;
    while (file && enc_len && (raw[enc_len - 1] == '\n' ||
                               raw[enc_len - 1] == '\r')) {
        enc_len--;
    }
    uint8_t *dec = g_malloc(enc_len / 4 * 3 + 1);
    size_t dec_len = 0;
    ssize_t bad = base64_decode_strict(raw, enc_len, dec, &dec_len);
    explicit_bzero(raw, len);
    g_free(raw);
    if (bad >= 0) {
        if ((size_t)bad == enc_len) {
            error_set_option(errp, "secret '%s': invalid base64: length %zu "
                             "is not a multiple of 4", obj->id, enc_len);
        } else {
            error_set_option(errp, "secret '%s': invalid base64 at offset %zd",
                             obj->id, bad);
        }
        explicit_bzero(dec, enc_len / 4 * 3 + 1);
        g_free(dec);
        return false;
    }
    dec[dec_len] = '\0';
    obj->secret.data = dec;
    obj->secret.len = dec_len;
    return true;
}

static void secret_free(StrataObject *obj)
{
    if (obj->secret.data) {
        explicit_bzero(obj->secret.data, obj->secret.len);
        g_free(obj->secret.data);
    }
}

const uint8_t *secret_get_data(StrataObject *obj, size_t *len)
{
    g_assert(obj->kind == OBJECT_SECRET);
    *len = obj->secret.len;
    return obj->secret.data;
}

/* ---- iothread ----------------------------------------------------------- */

/*
 * The polling properties are QEMU's adaptive busy-polling knobs, with its
 * defaults: before the thread's loop sleeps it polls its pollers (the
 * vhost-user-blk export's virtqueues) for up to poll-max-ns, adaptively
 * (util/loop.h).
 */
#define IOTHREAD_POLL_MAX_NS_DEFAULT 32768

static void iothread_set_loop_params(const StrataObject *obj, Loop *loop)
{
    loop_set_aio_max_batch(loop, MIN(obj->iothread.aio_max_batch,
                                     (int64_t)UINT_MAX));
    loop_set_poll_params(loop, obj->iothread.poll_max_ns,
                         obj->iothread.poll_grow, obj->iothread.poll_shrink);
}

static bool iothread_create(StrataObject *obj, OptNode *opts,
                            StrataError **errp)
{
    static const char *const pool_keys[] = {
        "thread-pool-min", "thread-pool-max",
    };

    for (size_t i = 0; i < G_N_ELEMENTS(pool_keys); i++) {
        if (opts_has(opts, pool_keys[i])) {
            error_set_option(errp, "%s: not supported: Strata's thread pool "
                             "starts workers on demand and stops idle ones",
                             pool_keys[i]);
            return false;
        }
    }
    bool poll_max_given = opts_has(opts, "poll-max-ns");
    if (!get_nonneg(opts, "poll-max-ns", &obj->iothread.poll_max_ns, errp) ||
        !get_nonneg(opts, "poll-grow", &obj->iothread.poll_grow, errp) ||
        !get_nonneg(opts, "poll-shrink", &obj->iothread.poll_shrink, errp) ||
        !get_nonneg(opts, "aio-max-batch", &obj->iothread.aio_max_batch,
                    errp) ||
        !opts_check_consumed(opts, errp) ||
        !object_check_duplicate(obj->id, errp)) {
        return false;
    }

    if (!poll_max_given) {
        obj->iothread.poll_max_ns = IOTHREAD_POLL_MAX_NS_DEFAULT;
    }

    StrataContext *ctx = strata_context_new(errp);
    if (!ctx) {
        return false;
    }
    /* A batch larger than any queue is the same as no limit. */
    iothread_set_loop_params(obj, ctx->loop);
    if (!strata_context_start_thread(ctx, errp)) {
        strata_context_free(ctx);
        return false;
    }
    obj->iothread.ctx = ctx;
    return true;
}

static void iothread_free(StrataObject *obj)
{
    StrataContext *ctx = obj->iothread.ctx;
    StrataQueue *q = obj->iothread.queue;
    if (q) {
        /* Its users (exports) are gone: nothing runs on it any more. */
        strata_queue_stop_thread(q);
        strata_queue_free(q);
    }
    if (ctx) {
        /* The caller owns the loop after the join, as freeing requires. */
        strata_context_stop_thread(ctx);
        strata_context_free(ctx);
    }
}

StrataQueue *iothread_get_queue(StrataObject *obj, StrataContext *ctx,
                                StrataError **errp)
{
    StrataQueue *q;

    g_assert(obj->kind == OBJECT_IOTHREAD);
    mutex_lock(&objects_lock);
    q = obj->iothread.queue;
    if (q && q->ctx != ctx) {
        mutex_unlock(&objects_lock);
        error_setg(errp, "iothread '%s' already serves another context",
                   obj->id);
        return NULL;
    }
    if (!q) {
        q = strata_queue_new(ctx, errp);
        if (q) {
            iothread_set_loop_params(obj, q->loop);
            if (!strata_queue_start_thread(q, errp)) {
                strata_queue_free(q);
                q = NULL;
            }
        }
        obj->iothread.queue = q;
    }
    mutex_unlock(&objects_lock);
    return q;
}

void iothread_get_info(StrataObject *obj, IothreadInfo *info)
{
    g_assert(obj->kind == OBJECT_IOTHREAD);
    mutex_lock(&objects_lock);
    /* The queue of the daemon's context, once an export asked for it;
     * else the thread of the iothread's own context. */
    StrataQueue *q = obj->iothread.queue ? obj->iothread.queue
                                         : obj->iothread.ctx->queues[0];
    *info = (IothreadInfo) {
        .thread_id = g_atomic_int_get(&q->tid),
        .poll_max_ns = obj->iothread.poll_max_ns,
        .poll_grow = obj->iothread.poll_grow,
        .poll_shrink = obj->iothread.poll_shrink,
        .aio_max_batch = obj->iothread.aio_max_batch,
    };
    mutex_unlock(&objects_lock);
}

StrataContext *iothread_get_context(StrataObject *obj)
{
    g_assert(obj->kind == OBJECT_IOTHREAD);
    return obj->iothread.ctx;
}

/* ---- TLS credentials: common properties --------------------------------- */

static bool tls_error(const StrataObject *obj, int ret, StrataError **errp,
                      const char *what, const char *path)
{
    error_set_option(errp, "%s '%s': %s %s: %s", object_kind_names[obj->kind],
                     obj->id, what, path, gnutls_strerror(ret));
    return false;
}

/* QEMU's message for a credentials file that cannot be accessed. */
static bool tls_access(const StrataObject *obj, const char *path,
                       StrataError **errp)
{
    if (access(path, R_OK) == 0) {
        return true;
    }
    int err = errno;
    error_set(errp, STRATA_ERROR_NOT_FOUND, err, "%s '%s': unable to access "
              "credentials %s: %s", object_kind_names[obj->kind], obj->id,
              path, g_strerror(err));
    return false;
}

static bool tls_get_common(StrataObject *obj, OptNode *opts, const char **dir,
                           StrataError **errp)
{
    static const char *const endpoints[] = { "client", "server", NULL };
    TlsCreds *tls = &obj->tls;
    const char *priority;
    int endpoint;

    if (!opts_require_str(opts, "dir", dir, errp) ||
        !opts_get_enum(opts, "endpoint", endpoints, 0, &endpoint, errp) ||
        !opts_get_bool(opts, "verify-peer", true, &tls->verify_peer, errp) ||
        !opts_get_str(opts, "priority", NULL, &priority, errp)) {
        return false;
    }
    tls->server = endpoint == 1;
    tls->dir = g_strdup(*dir);
    if (priority) {
        /* Checked now so that a typo fails here, not at the first
         * handshake. */
        gnutls_priority_t prio;
        const char *where = NULL;
        int ret = gnutls_priority_init(&prio, priority, &where);
        if (ret < 0) {
            error_set_option(errp, "priority: invalid GnuTLS priority string "
                             "'%s' at '%s': %s", priority, where ? where : "",
                             gnutls_strerror(ret));
            return false;
        }
        gnutls_priority_deinit(prio);
        tls->priority = g_strdup(priority);
    }
    return true;
}

/* Optional dh-params.pem (PKCS#3) for a server; without it GnuTLS's known
 * RFC 7919 groups are used (QEMU generates fresh parameters instead, about
 * half a second per object). */
static bool tls_load_dh(StrataObject *obj, const char *dir, StrataError **errp)
{
    g_autofree char *path = g_build_filename(dir, "dh-params.pem", NULL);
    gnutls_datum_t data;
    int ret;

    if (access(path, F_OK) < 0) {
        return true;
    }
    ret = gnutls_load_file(path, &data);
    if (ret < 0) {
        return tls_error(obj, ret, errp, "cannot read", path);
    }
    ret = gnutls_dh_params_init(&obj->tls.dh);
    if (ret >= 0) {
        ret = gnutls_dh_params_import_pkcs3(obj->tls.dh, &data,
                                            GNUTLS_X509_FMT_PEM);
    }
    gnutls_free(data.data);
    if (ret < 0) {
        return tls_error(obj, ret, errp, "invalid DH parameters in", path);
    }
    return true;
}

static void tls_free(StrataObject *obj)
{
    TlsCreds *tls = &obj->tls;
    if (tls->x509) {
        gnutls_certificate_free_credentials(tls->x509);
    }
    if (tls->psk_server) {
        gnutls_psk_free_server_credentials(tls->psk_server);
    }
    if (tls->psk_client) {
        gnutls_psk_free_client_credentials(tls->psk_client);
    }
    if (tls->dh) {
        gnutls_dh_params_deinit(tls->dh);
    }
    g_free(tls->priority);
    g_free(tls->dir);
    g_free(tls->username);
}

/* ---- tls-creds-x509 ----------------------------------------------------- */

typedef struct CertList {
    gnutls_x509_crt_t *crt;
    unsigned n;
} CertList;

static void cert_list_clear(CertList *l)
{
    for (unsigned i = 0; i < l->n; i++) {
        gnutls_x509_crt_deinit(l->crt[i]);
    }
    gnutls_free(l->crt);
    l->crt = NULL;
    l->n = 0;
}

static bool cert_list_load(StrataObject *obj, const char *path, CertList *l,
                           StrataError **errp)
{
    gnutls_datum_t data;
    int ret = gnutls_load_file(path, &data);
    if (ret < 0) {
        return tls_error(obj, ret, errp, "cannot read", path);
    }
    ret = gnutls_x509_crt_list_import2(&l->crt, &l->n, &data,
                                       GNUTLS_X509_FMT_PEM, 0);
    gnutls_free(data.data);
    if (ret < 0) {
        l->n = 0;
        return tls_error(obj, ret, errp, "cannot parse certificates in", path);
    }
    return true;
}

/*
 * sanity-check: catch at creation what would otherwise fail every
 * handshake with a vague alert: certificates outside their validity
 * period, a CA file holding non-CA certificates, an endpoint certificate
 * that is a CA or whose critical key-purpose extension forbids the
 * endpoint's role, and an endpoint certificate not signed by the CA.
 */
static bool cert_check_one(StrataObject *obj, gnutls_x509_crt_t crt,
                           const char *path, bool is_ca, StrataError **errp)
{
    const char *type = object_kind_names[obj->kind];
    time_t now = time(NULL);
    unsigned critical = 0;
    int ret;

    if (gnutls_x509_crt_get_activation_time(crt) > now) {
        error_set_option(errp, "%s '%s': certificate %s is not valid yet",
                         type, obj->id, path);
        return false;
    }
    if (gnutls_x509_crt_get_expiration_time(crt) < now) {
        error_set_option(errp, "%s '%s': certificate %s has expired",
                         type, obj->id, path);
        return false;
    }
    ret = gnutls_x509_crt_get_basic_constraints(crt, &critical, NULL, NULL);
    if (is_ca && ret <= 0) {
        error_set_option(errp, "%s '%s': certificate %s is not a CA "
                         "certificate (basic constraints)", type, obj->id,
                         path);
        return false;
    }
    if (!is_ca && ret > 0) {
        error_set_option(errp, "%s '%s': certificate %s is a CA certificate, "
                         "not a %s certificate", type, obj->id, path,
                         obj->tls.server ? "server" : "client");
        return false;
    }
    if (is_ca) {
        return true;
    }
    const char *want = obj->tls.server ? GNUTLS_KP_TLS_WWW_SERVER
                                       : GNUTLS_KP_TLS_WWW_CLIENT;
    bool any = false, found = false;
    for (unsigned i = 0;; i++) {
        char oid[128];
        size_t size = sizeof(oid);
        unsigned crit = 0;
        ret = gnutls_x509_crt_get_key_purpose_oid(crt, i, oid, &size, &crit);
        if (ret < 0) {
            break;
        }
        any = true;
        critical = crit;
        if (!strcmp(oid, want) || !strcmp(oid, GNUTLS_KP_ANY)) {
            found = true;
        }
    }
    /* As in QEMU, a non-critical purpose list is only advice. */
    if (any && !found && critical) {
        error_set_option(errp, "%s '%s': certificate %s may not be used as a "
                         "TLS %s (key purpose)", type, obj->id, path,
                         obj->tls.server ? "server" : "client");
        return false;
    }
    return true;
}

static bool x509_sanity_check(StrataObject *obj, const char *ca_path,
                              const char *cert_path, StrataError **errp)
{
    CertList cas = { 0 }, certs = { 0 };
    bool ok = false;

    if (ca_path && !cert_list_load(obj, ca_path, &cas, errp)) {
        goto out;
    }
    for (unsigned i = 0; i < cas.n; i++) {
        if (!cert_check_one(obj, cas.crt[i], ca_path, true, errp)) {
            goto out;
        }
    }
    if (cert_path) {
        if (!cert_list_load(obj, cert_path, &certs, errp)) {
            goto out;
        }
        /* The first certificate is the endpoint's; the rest its chain. */
        if (!cert_check_one(obj, certs.crt[0], cert_path, false, errp)) {
            goto out;
        }
        if (cas.n) {
            unsigned status = 0;
            int ret = gnutls_x509_crt_list_verify(certs.crt, certs.n, cas.crt,
                                                  cas.n, NULL, 0, 0, &status);
            if (ret < 0) {
                tls_error(obj, ret, errp, "cannot verify", cert_path);
                goto out;
            }
            if (status) {
                gnutls_datum_t why = { 0 };
                gnutls_certificate_verification_status_print(
                    status, GNUTLS_CRT_X509, &why, 0);
                error_set_option(errp, "%s '%s': certificate %s does not "
                                 "verify against %s: %s",
                                 object_kind_names[obj->kind], obj->id,
                                 cert_path, ca_path,
                                 why.data ? (char *)why.data : "?");
                gnutls_free(why.data);
                goto out;
            }
        }
    }
    ok = true;
out:
    cert_list_clear(&cas);
    cert_list_clear(&certs);
    return ok;
}

static bool x509_create(StrataObject *obj, OptNode *opts, StrataError **errp)
{
    TlsCreds *tls = &obj->tls;
    const char *dir, *passwordid;
    bool sanity;
    int ret;

    if (!tls_get_common(obj, opts, &dir, errp) ||
        !opts_get_bool(opts, "sanity-check", true, &sanity, errp) ||
        !opts_get_str(opts, "passwordid", NULL, &passwordid, errp) ||
        !opts_check_consumed(opts, errp) ||
        !object_check_duplicate(obj->id, errp)) {
        return false;
    }

    const char *role = tls->server ? "server" : "client";
    g_autofree char *ca = g_build_filename(dir, "ca-cert.pem", NULL);
    g_autofree char *crl = g_build_filename(dir, "ca-crl.pem", NULL);
    g_autofree char *cert_name = g_strdup_printf("%s-cert.pem", role);
    g_autofree char *key_name = g_strdup_printf("%s-key.pem", role);
    g_autofree char *cert = g_build_filename(dir, cert_name, NULL);
    g_autofree char *key = g_build_filename(dir, key_name, NULL);

    /* The CA verifies the peer: a client always checks the server, a
     * server checks clients when verify-peer is on.  QEMU requires the
     * file on a server even without verify-peer; here it is optional
     * then. */
    bool need_ca = !tls->server || tls->verify_peer;
    bool have_ca = need_ca || access(ca, F_OK) == 0;
    if (have_ca && !tls_access(obj, ca, errp)) {
        return false;
    }
    /* A server needs its certificate and key; a client presents one only
     * if it has both (servers that verify peers ask for it). */
    bool have_cert = tls->server || access(cert, F_OK) == 0 ||
                     access(key, F_OK) == 0;
    if (have_cert && (!tls_access(obj, cert, errp) ||
                      !tls_access(obj, key, errp))) {
        return false;
    }

    ret = gnutls_certificate_allocate_credentials(&tls->x509);
    if (ret < 0) {
        return tls_error(obj, ret, errp, "cannot allocate credentials for",
                         dir);
    }
    if (have_ca) {
        ret = gnutls_certificate_set_x509_trust_file(tls->x509, ca,
                                                     GNUTLS_X509_FMT_PEM);
        if (ret < 0) {
            return tls_error(obj, ret, errp, "cannot load CA certificate", ca);
        }
        if (ret == 0) {
            error_set_option(errp, "%s '%s': no certificate in %s",
                             object_kind_names[obj->kind], obj->id, ca);
            return false;
        }
        if (access(crl, F_OK) == 0) {
            ret = gnutls_certificate_set_x509_crl_file(tls->x509, crl,
                                                       GNUTLS_X509_FMT_PEM);
            if (ret < 0) {
                return tls_error(obj, ret, errp, "cannot load CRL", crl);
            }
        }
    }
    if (have_cert) {
        /* The password only decrypts the key: the secret is used for the
         * load and released, as QEMU does. */
        StrataObject *pw = NULL;
        g_autofree char *user = g_strdup_printf("%s '%s'",
                                                object_kind_names[obj->kind],
                                                obj->id);
        if (passwordid) {
            pw = object_use(passwordid, OBJECT_SECRET, user, errp);
            if (!pw) {
                error_prepend(errp, "passwordid: ");
                return false;
            }
        }
        ret = gnutls_certificate_set_x509_key_file2(
            tls->x509, cert, key, GNUTLS_X509_FMT_PEM,
            pw ? (const char *)pw->secret.data : NULL, 0);
        if (pw) {
            object_unuse(pw, user);
        }
        if (ret < 0) {
            g_autofree char *what = g_strdup_printf(
                "cannot load certificate %s with key", cert);
            if (!passwordid && ret == GNUTLS_E_DECRYPTION_FAILED) {
                error_set_option(errp, "%s '%s': %s %s: %s (an encrypted key "
                                 "needs passwordid)",
                                 object_kind_names[obj->kind], obj->id, what,
                                 key, gnutls_strerror(ret));
                return false;
            }
            return tls_error(obj, ret, errp, what, key);
        }
    }
    if (sanity && !x509_sanity_check(obj, have_ca ? ca : NULL,
                                     have_cert ? cert : NULL, errp)) {
        return false;
    }
    if (tls->server) {
        if (!tls_load_dh(obj, dir, errp)) {
            return false;
        }
        if (tls->dh) {
            gnutls_certificate_set_dh_params(tls->x509, tls->dh);
        } else {
            gnutls_certificate_set_known_dh_params(tls->x509,
                                                   GNUTLS_SEC_PARAM_MEDIUM);
        }
    }
    return true;
}

/* ---- tls-creds-psk ------------------------------------------------------ */

/*
 * Parse keys.psk ("username:hexkey" per line, empty lines allowed) and
 * find @username's key (when not NULL).  GnuTLS reads the server's file
 * only at handshake time, so its syntax is checked here, at creation.
 */
static bool psk_parse(StrataObject *obj, const char *path, const char *username,
                      char **hexkey, StrataError **errp)
{
    char *text;
    size_t len;
    bool ok = true;

    if (!object_read_file(obj, path, &text, &len, errp)) {
        return false;
    }
    if (memchr(text, '\0', len)) {
        error_set_option(errp, "tls-creds-psk '%s': %s holds a NUL byte",
                         obj->id, path);
        ok = false;
    }
    char **lines = g_strsplit(text, "\n", -1);
    for (unsigned i = 0; ok && lines[i]; i++) {
        /* A CR is not stripped: GnuTLS would keep it in the key and fail
         * every handshake, so such a line is refused as not hex. */
        char *line = lines[i];
        size_t n = strlen(line);
        if (!n) {
            continue;
        }
        char *colon = strchr(line, ':');
        size_t hex_len = colon ? strlen(colon + 1) : 0;
        bool hex_ok = colon && colon != line && hex_len && hex_len % 2 == 0;
        for (size_t j = 0; hex_ok && j < hex_len; j++) {
            hex_ok = g_ascii_isxdigit(colon[1 + j]);
        }
        if (!hex_ok) {
            error_set_option(errp, "tls-creds-psk '%s': %s line %u: expected "
                             "'username:hexkey' with an even number of hex "
                             "digits", obj->id, path, i + 1);
            ok = false;
            break;
        }
        if (username && !*hexkey && (size_t)(colon - line) == strlen(username)
            && !memcmp(line, username, colon - line)) {
            *hexkey = g_strdup(colon + 1);
        }
    }
    for (unsigned i = 0; lines[i]; i++) {
        explicit_bzero(lines[i], strlen(lines[i]));
    }
    g_strfreev(lines);
    explicit_bzero(text, len);
    g_free(text);
    if (ok && username && !*hexkey) {
        error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT, "tls-creds-psk '%s': "
                  "no key for username '%s' in %s", obj->id, username, path);
        ok = false;
    }
    return ok;
}

static bool psk_create(StrataObject *obj, OptNode *opts, StrataError **errp)
{
    TlsCreds *tls = &obj->tls;
    const char *dir, *username;
    int ret;

    if (!tls_get_common(obj, opts, &dir, errp) ||
        !opts_get_str(opts, "username", NULL, &username, errp) ||
        !opts_check_consumed(opts, errp)) {
        return false;
    }
    if (tls->server && username) {
        error_set_option(errp, "username: should not be set when "
                         "endpoint=server (the server takes every user in "
                         "keys.psk)");
        return false;
    }
    if (!object_check_duplicate(obj->id, errp)) {
        return false;
    }

    g_autofree char *path = g_build_filename(dir, "keys.psk", NULL);
    if (!tls_access(obj, path, errp)) {
        return false;
    }
    if (tls->server) {
        if (!psk_parse(obj, path, NULL, NULL, errp)) {
            return false;
        }
        ret = gnutls_psk_allocate_server_credentials(&tls->psk_server);
        if (ret >= 0) {
            ret = gnutls_psk_set_server_credentials_file(tls->psk_server,
                                                         path);
        }
        if (ret < 0) {
            return tls_error(obj, ret, errp, "cannot load", path);
        }
        if (!tls_load_dh(obj, dir, errp)) {
            return false;
        }
        if (tls->dh) {
            gnutls_psk_set_server_dh_params(tls->psk_server, tls->dh);
        } else {
            gnutls_psk_set_server_known_dh_params(tls->psk_server,
                                                  GNUTLS_SEC_PARAM_MEDIUM);
        }
        return true;
    }

    tls->username = g_strdup(username ? username : "qemu");
    char *hexkey = NULL;
    if (!psk_parse(obj, path, tls->username, &hexkey, errp)) {
        return false;
    }
    gnutls_datum_t key = { (unsigned char *)hexkey, strlen(hexkey) };
    ret = gnutls_psk_allocate_client_credentials(&tls->psk_client);
    if (ret >= 0) {
        ret = gnutls_psk_set_client_credentials(tls->psk_client, tls->username,
                                                &key, GNUTLS_PSK_KEY_HEX);
    }
    explicit_bzero(hexkey, key.size);
    g_free(hexkey);
    if (ret < 0) {
        return tls_error(obj, ret, errp, "cannot load the key from", path);
    }
    return true;
}

/* ---- TLS accessors ------------------------------------------------------ */

static bool object_is_tls(const StrataObject *obj)
{
    return obj->kind == OBJECT_TLS_CREDS_X509 ||
           obj->kind == OBJECT_TLS_CREDS_PSK;
}

bool tls_creds_is_server(StrataObject *obj)
{
    g_assert(object_is_tls(obj));
    return obj->tls.server;
}

bool tls_creds_verify_peer(StrataObject *obj)
{
    g_assert(object_is_tls(obj));
    return obj->tls.verify_peer;
}

void *tls_creds_get_gnutls(StrataObject *obj)
{
    g_assert(object_is_tls(obj));
    if (obj->kind == OBJECT_TLS_CREDS_X509) {
        return obj->tls.x509;
    }
    return obj->tls.server ? (void *)obj->tls.psk_server
                           : (void *)obj->tls.psk_client;
}

const char *tls_creds_get_priority(StrataObject *obj)
{
    g_assert(object_is_tls(obj));
    return obj->tls.priority;
}

const char *tls_creds_get_dir(StrataObject *obj)
{
    g_assert(obj->kind == OBJECT_TLS_CREDS_X509 ||
             obj->kind == OBJECT_TLS_CREDS_PSK);
    return obj->tls.dir;
}

const char *tls_creds_get_username(StrataObject *obj)
{
    g_assert(obj->kind == OBJECT_TLS_CREDS_PSK);
    return obj->tls.username;
}

/* ---- throttle-group ----------------------------------------------------- */

static bool throttle_create(StrataObject *obj, OptNode *opts,
                            StrataError **errp)
{
    ThrottleConfig cfg;

    /* QEMU checks the limits when the object completes, after the id. */
    if (!throttle_group_parse_limits(opts, "limits.", NULL, &cfg, errp) ||
        !opts_check_consumed(opts, errp) ||
        !object_check_duplicate(obj->id, errp)) {
        return false;
    }
    obj->throttle = throttle_group_new(&cfg);
    return true;
}

static void throttle_free(StrataObject *obj)
{
    throttle_group_free(obj->throttle);
}

ThrottleGroup *object_get_throttle_group(StrataObject *obj)
{
    g_assert(obj->kind == OBJECT_THROTTLE_GROUP);
    return obj->throttle;
}

/* ---- registry ----------------------------------------------------------- */

static const ObjectType object_types[OBJECT_KIND__MAX] = {
    [OBJECT_SECRET] = { secret_create, secret_free },
    [OBJECT_IOTHREAD] = { iothread_create, iothread_free },
    [OBJECT_TLS_CREDS_X509] = { x509_create, tls_free },
    [OBJECT_TLS_CREDS_PSK] = { psk_create, tls_free },
    [OBJECT_THROTTLE_GROUP] = { throttle_create, throttle_free },
};

static void object_free(StrataObject *obj)
{
    object_types[obj->kind].free(obj);
    g_ptr_array_unref(obj->users);
    g_free(obj->id);
    g_free(obj);
}

bool object_add(OptNode *opts, StrataError **errp)
{
    const char *type, *id;

    if (!opts_require_str(opts, "qom-type", &type, errp)) {
        return false;
    }
    int kind = 0;
    while (kind < OBJECT_KIND__MAX && strcmp(object_kind_names[kind], type)) {
        kind++;
    }
    if (kind == OBJECT_KIND__MAX) {
        g_autofree char *names = g_strjoinv(", ",
                                            (char **)object_kind_names);
        error_set_option(errp, "qom-type: unknown object type '%s' (expected "
                         "one of %s)", type, names);
        return false;
    }
    if (!opts_require_str(opts, "id", &id, errp)) {
        return false;
    }
    if (!object_id_valid(id)) {
        error_set_option(errp, "id: '%s' is not a valid object id (ids "
                         "consist of letters, digits, '-', '.', '_', starting "
                         "with a letter)", id);
        return false;
    }

    StrataObject *obj = g_new0(StrataObject, 1);
    obj->kind = kind;
    obj->id = g_strdup(id);
    obj->users = g_ptr_array_new_with_free_func(g_free);
    if (!object_types[kind].create(obj, opts, errp)) {
        object_free(obj);
        return false;
    }

    /* Checked again: the registry may be used from other threads. */
    mutex_lock(&objects_lock);
    bool dup = object_find_locked(id) != NULL;
    if (!dup) {
        g_queue_push_tail(&objects, obj);
    }
    mutex_unlock(&objects_lock);
    if (dup) {
        object_error_duplicate(obj->id, errp);
        object_free(obj);
        return false;
    }
    return true;
}

bool object_del(const char *id, StrataError **errp)
{
    mutex_lock(&objects_lock);
    StrataObject *obj = object_find_locked(id);
    if (!obj) {
        mutex_unlock(&objects_lock);
        error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT,
                  "object '%s' not found", id);
        return false;
    }
    if (obj->users->len) {
        g_autofree char *user = g_strdup(obj->users->pdata[0]);
        mutex_unlock(&objects_lock);
        error_set(errp, STRATA_ERROR_PERMISSION, EBUSY,
                  "object '%s' is in use by %s", id, user);
        return false;
    }
    g_queue_remove(&objects, obj);
    mutex_unlock(&objects_lock);
    object_free(obj);
    return true;
}

void object_del_all(void)
{
    for (;;) {
        mutex_lock(&objects_lock);
        StrataObject *obj = g_queue_pop_tail(&objects);
        mutex_unlock(&objects_lock);
        if (!obj) {
            return;
        }
        object_free(obj);
    }
}

StrataObject *object_use(const char *id, ObjectKind kind, const char *user,
                         StrataError **errp)
{
    mutex_lock(&objects_lock);
    StrataObject *obj = object_find_locked(id);
    if (obj && obj->kind == kind) {
        g_ptr_array_add(obj->users, g_strdup(user));
        mutex_unlock(&objects_lock);
        return obj;
    }
    mutex_unlock(&objects_lock);
    if (!obj) {
        error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT,
                  "No object with id '%s'", id);
    } else {
        error_set_option(errp, "object '%s' is not a %s", id,
                         object_kind_names[kind]);
    }
    return NULL;
}

void object_unuse(StrataObject *obj, const char *user)
{
    mutex_lock(&objects_lock);
    bool found = false;
    for (guint i = 0; i < obj->users->len; i++) {
        if (!strcmp(obj->users->pdata[i], user)) {
            g_ptr_array_remove_index(obj->users, i);
            found = true;
            break;
        }
    }
    mutex_unlock(&objects_lock);
    /* Releasing a use never taken is a caller bug. */
    g_assert(found);
}

const char *object_get_id(const StrataObject *obj)
{
    return obj->id;
}

ObjectKind object_get_kind(const StrataObject *obj)
{
    return obj->kind;
}

void object_foreach(void (*fn)(StrataObject *obj, void *opaque), void *opaque)
{
    /* A snapshot, so that @fn may call object_use() and friends (the lock
     * is not recursive).  Objects are deleted only by the thread that
     * creates them, which is the caller here. */
    mutex_lock(&objects_lock);
    guint n = objects.length, i = 0;
    g_autofree StrataObject **snap = g_new(StrataObject *, n + 1);
    for (GList *l = objects.head; l; l = l->next) {
        snap[i++] = l->data;
    }
    mutex_unlock(&objects_lock);
    for (i = 0; i < n; i++) {
        fn(snap[i], opaque);
    }
}
