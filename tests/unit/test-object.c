/*
 * Tests of user-creatable objects (block/object.c): secret, iothread,
 * tls-creds-x509, tls-creds-psk and the registry
 * SPDX-License-Identifier: MIT
 *
 * Certificates are made at test time with GnuTLS's own API (ECDSA P-256
 * keys: fast), in a temporary directory that is removed at the end, and
 * also when an assertion aborts the run (a SIGABRT handler).  TLS
 * credentials are proved usable by a handshake over a socketpair, the
 * server end in a second thread.
 */
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "block/object.h"
#include "strata/strata.h"
#include "util/thread.h"

static char *test_dir;

/* ---- helpers ------------------------------------------------------------ */

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw)
{
    remove(path);
    return 0;
}

static void remove_test_dir(void)
{
    if (test_dir) {
        nftw(test_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
}

/* A failed assertion aborts, meson's timeout terminates: leave no
 * certificates behind either way. */
static void on_abort(int sig)
{
    remove_test_dir();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* A fresh directory under the test directory (freed by the caller). */
static char *make_dir(const char *name)
{
    char *dir = g_build_filename(test_dir, name, NULL);
    g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
    return dir;
}

static void write_file(const char *dir, const char *name, const void *data,
                       gssize len)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_assert_true(g_file_set_contents(path, data, len, NULL));
}

static void remove_file(const char *dir, const char *name)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_assert_cmpint(g_unlink(path), ==, 0);
}

/* object_add() of the dotted options @fmt formats; the error, if any, in
 * *errp. */
static bool add_dotted_v(StrataError **errp, const char *fmt, va_list ap)
    G_GNUC_PRINTF(2, 0);
static bool add_dotted_v(StrataError **errp, const char *fmt, va_list ap)
{
    g_autofree char *text = g_strdup_vprintf(fmt, ap);
    g_autoptr(OptNode) opts = opts_parse_dotted(text, errp);
    g_assert_nonnull(opts);
    bool ok = object_add(opts, errp);
    if (!ok) {
        g_test_message("%s -> %s", text, error_get_message(*errp));
    }
    return ok;
}

/* object_add() of dotted options; true on success. */
static bool add_dotted(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static bool add_dotted(const char *fmt, ...)
{
    StrataError *err = NULL;
    va_list ap;
    va_start(ap, fmt);
    bool ok = add_dotted_v(&err, fmt, ap);
    va_end(ap);
    error_free(err);
    return ok;
}

/* object_add() must fail; returns the message (caller frees). */
static char *add_error(StrataErrorClass *cls, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);
static char *add_error(StrataErrorClass *cls, const char *fmt, ...)
{
    StrataError *err = NULL;
    va_list ap;
    va_start(ap, fmt);
    g_assert_false(add_dotted_v(&err, fmt, ap));
    va_end(ap);
    g_assert_nonnull(err);
    char *msg = g_strdup(error_get_message(err));
    if (cls) {
        *cls = strata_error_get_class(err);
    }
    error_free(err);
    return msg;
}

#define assert_add_error(expect, ...) do {                              \
        g_autofree char *msg_ = add_error(NULL, __VA_ARGS__);            \
        g_assert_cmpstr(msg_, ==, (expect));                             \
    } while (0)

static bool add_json(const char *json)
{
    StrataError *err = NULL;
    g_autoptr(OptNode) opts = opts_parse_json(json, &err);
    g_assert_nonnull(opts);
    bool ok = object_add(opts, &err);
    error_free(err);
    return ok;
}

static void del_ok(const char *id)
{
    StrataError *err = NULL;
    bool ok = object_del(id, &err);
    if (!ok) {
        g_error("object_del(%s): %s", id, error_get_message(err));
    }
}

static guint count_objects_cb_n;
static void count_cb(StrataObject *obj, void *opaque)
{
    count_objects_cb_n++;
}

static guint count_objects(void)
{
    count_objects_cb_n = 0;
    object_foreach(count_cb, NULL);
    return count_objects_cb_n;
}

/* Every test starts and ends with an empty registry. */
static void assert_empty(void)
{
    g_assert_cmpuint(count_objects(), ==, 0);
}

static StrataObject *use(const char *id, ObjectKind kind, const char *user)
{
    StrataError *err = NULL;
    StrataObject *obj = object_use(id, kind, user, &err);
    if (!obj) {
        g_error("object_use(%s): %s", id, error_get_message(err));
    }
    return obj;
}

/* ---- secret ------------------------------------------------------------- */

static void assert_secret(const char *id, const void *expect, size_t len)
{
    StrataObject *obj = use(id, OBJECT_SECRET, "test");
    size_t got_len;
    const uint8_t *got = secret_get_data(obj, &got_len);
    g_assert_cmpmem(got, got_len, expect, len);
    g_assert_cmpint(got[got_len], ==, 0);
    object_unuse(obj, "test");
}

static void test_secret_raw(void)
{
    g_assert_true(add_dotted("qom-type=secret,id=s0,data=abc"));
    assert_secret("s0", "abc", 3);
    g_assert_true(add_json("{\"qom-type\": \"secret\", \"id\": \"s1\", "
                           "\"data\": \"x,y\", \"format\": \"raw\"}"));
    assert_secret("s1", "x,y", 3);
    del_ok("s0");
    del_ok("s1");
    assert_empty();
}

static void test_secret_base64(void)
{
    static const uint8_t bin[] = { 0x00, 0xff, 0x10, 0x80, 0x7f };
    g_autofree char *enc = g_base64_encode(bin, sizeof(bin));

    g_assert_true(add_dotted("qom-type=secret,id=s0,format=base64,data=%s",
                             enc));
    assert_secret("s0", bin, sizeof(bin));
    /* Each amount of padding. */
    g_assert_true(add_dotted("qom-type=secret,id=p1,format=base64,data=YQ=="));
    assert_secret("p1", "a", 1);
    g_assert_true(add_dotted("qom-type=secret,id=p2,format=base64,data=YWI="));
    assert_secret("p2", "ab", 2);
    g_assert_true(add_dotted("qom-type=secret,id=p3,format=base64,data=YWJj"));
    assert_secret("p3", "abc", 3);
    g_assert_true(add_dotted("qom-type=secret,id=p4,format=base64,data="));
    assert_secret("p4", "", 0);
    object_del_all();
    assert_empty();
}

static void test_secret_bad_base64(void)
{
    assert_add_error("secret 's0': invalid base64: length 3 is not a "
                     "multiple of 4",
                     "qom-type=secret,id=s0,format=base64,data=abc");
    assert_add_error("secret 's0': invalid base64 at offset 1",
                     "qom-type=secret,id=s0,format=base64,data=Y*Jj");
    assert_add_error("secret 's0': invalid base64 at offset 1",
                     "qom-type=secret,id=s0,format=base64,data=Y===");
    assert_add_error("secret 's0': invalid base64 at offset 2",
                     "qom-type=secret,id=s0,format=base64,data=YW=j");
    /* Padding only ends the last group. */
    assert_add_error("secret 's0': invalid base64 at offset 2",
                     "qom-type=secret,id=s0,format=base64,data=YQ==YWJj");
    assert_add_error("format: expected one of raw, base64",
                     "qom-type=secret,id=s0,format=hex,data=00");
    assert_empty();
}

static void test_secret_file(void)
{
    g_autofree char *dir = make_dir("secret");
    static const char bin[] = "pass\0word\n";
    write_file(dir, "raw", bin, sizeof(bin) - 1);
    write_file(dir, "b64", "cGFzcw==\n", -1);

    /* Raw files are taken byte for byte, NUL and newline included. */
    g_assert_true(add_dotted("qom-type=secret,id=s0,file=%s/raw", dir));
    assert_secret("s0", bin, sizeof(bin) - 1);
    /* base64(1) output ends with a newline, which is not data. */
    g_assert_true(add_dotted("qom-type=secret,id=s1,format=base64,"
                             "file=%s/b64", dir));
    assert_secret("s1", "pass", 4);
    object_del_all();

    StrataErrorClass cls;
    g_autofree char *msg = add_error(&cls, "qom-type=secret,id=s2,file=%s/nope",
                                     dir);
    g_autofree char *expect = g_strdup_printf("secret 's2': file '%s/nope': "
                                              "No such file or directory", dir);
    g_assert_cmpstr(msg, ==, expect);
    g_assert_cmpint(cls, ==, STRATA_ERROR_NOT_FOUND);

    g_autofree char *msg2 = add_error(NULL, "qom-type=secret,id=s2,file=%s",
                                      dir);
    g_autofree char *expect2 = g_strdup_printf("secret 's2': file '%s' is not "
                                               "a regular file", dir);
    g_assert_cmpstr(msg2, ==, expect2);
    assert_empty();
}

static void test_secret_data_xor_file(void)
{
    assert_add_error("secret 's0': 'file' and 'data' are mutually exclusive",
                     "qom-type=secret,id=s0,data=a,file=/etc/hostname");
    assert_add_error("secret 's0': either 'file' or 'data' must be provided",
                     "qom-type=secret,id=s0");
    assert_add_error("secret 's0': either 'file' or 'data' must be provided",
                     "qom-type=secret,id=s0,format=base64");
    assert_empty();
}

static void test_secret_encrypted_refused(void)
{
    assert_add_error("keyid: encrypted secrets are not supported; give the "
                     "secret in clear with data or file",
                     "qom-type=secret,id=s0,data=YWJj,keyid=k0");
    assert_add_error("iv: encrypted secrets are not supported; give the "
                     "secret in clear with data or file",
                     "qom-type=secret,id=s0,data=YWJj,iv=AAAA");
    assert_empty();
}

static void test_unknown_property(void)
{
    assert_add_error("foo: unknown option",
                     "qom-type=secret,id=s0,data=abc,foo=1");
    assert_add_error("loaded: unknown option",
                     "qom-type=secret,id=s0,data=abc,loaded=on");
    assert_add_error("bogus: unknown option",
                     "qom-type=iothread,id=io0,bogus=1");
    g_assert_false(add_json("{\"qom-type\": \"secret\", \"id\": \"s0\", "
                            "\"data\": \"abc\", \"bogus\": 1}"));
    assert_empty();
}

/* ---- ids, types, registry ----------------------------------------------- */

static void test_id_duplicate(void)
{
    g_assert_true(add_dotted("qom-type=secret,id=s0,data=a"));
    assert_add_error("attempt to add duplicate property 's0' to object "
                     "(type 'container')", "qom-type=secret,id=s0,data=b");
    /* Ids are shared by every type. */
    assert_add_error("attempt to add duplicate property 's0' to object "
                     "(type 'container')", "qom-type=iothread,id=s0");
    assert_secret("s0", "a", 1);
    g_assert_cmpuint(count_objects(), ==, 1);
    del_ok("s0");
    assert_empty();
}

static void test_id_invalid(void)
{
    static const char *const bad[] = { "0s", "-a", "_a", "a b", "a/b", "a,,b",
                                       "é" };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree char *expect = g_strdup_printf(
            "id: '%s' is not a valid object id (ids consist of letters, "
            "digits, '-', '.', '_', starting with a letter)",
            strcmp(bad[i], "a,,b") ? bad[i] : "a,b");
        assert_add_error(expect, "qom-type=secret,id=%s,data=a", bad[i]);
    }
    g_assert_true(add_dotted("qom-type=secret,id=A-b.c_9,data=a"));
    del_ok("A-b.c_9");
    assert_add_error("id: missing", "qom-type=secret,data=a");
    assert_add_error("qom-type: missing", "id=s0,data=a");
    assert_add_error("qom-type: unknown object type 'foo' (expected one of "
                     "secret, iothread, tls-creds-x509, tls-creds-psk, "
                     "throttle-group)", "qom-type=foo,id=x");
    assert_empty();
}

static void test_del_errors(void)
{
    StrataError *err = NULL;
    g_assert_false(object_del("nope", &err));
    g_assert_cmpstr(error_get_message(err), ==, "object 'nope' not found");
    g_assert_cmpint(strata_error_get_class(err), ==, STRATA_ERROR_NOT_FOUND);
    error_free(err);
    err = NULL;

    g_assert_true(add_dotted("qom-type=secret,id=s0,data=a"));
    StrataObject *a = use("s0", OBJECT_SECRET, "export 'e0'");
    StrataObject *b = use("s0", OBJECT_SECRET, "node 'nbd0'");
    g_assert_true(a == b);
    g_assert_cmpstr(object_get_id(a), ==, "s0");
    g_assert_cmpint(object_get_kind(a), ==, OBJECT_SECRET);
    g_assert_false(object_del("s0", &err));
    g_assert_cmpstr(error_get_message(err), ==,
                    "object 's0' is in use by export 'e0'");
    g_assert_cmpint(strata_error_get_class(err), ==, STRATA_ERROR_PERMISSION);
    error_free(err);
    err = NULL;
    object_unuse(a, "export 'e0'");
    g_assert_false(object_del("s0", &err));
    g_assert_cmpstr(error_get_message(err), ==,
                    "object 's0' is in use by node 'nbd0'");
    error_free(err);
    err = NULL;
    object_unuse(b, "node 'nbd0'");
    del_ok("s0");
    assert_empty();
}

static void test_use_errors(void)
{
    StrataError *err = NULL;
    g_assert_null(object_use("s0", OBJECT_SECRET, "x", &err));
    g_assert_cmpstr(error_get_message(err), ==, "No object with id 's0'");
    g_assert_cmpint(strata_error_get_class(err), ==, STRATA_ERROR_NOT_FOUND);
    error_free(err);
    err = NULL;
    g_assert_true(add_dotted("qom-type=secret,id=s0,data=a"));
    g_assert_null(object_use("s0", OBJECT_TLS_CREDS_X509, "x", &err));
    g_assert_cmpstr(error_get_message(err), ==,
                    "object 's0' is not a tls-creds-x509");
    error_free(err);
    /* A failed use is no use. */
    del_ok("s0");
    assert_empty();
}

static void collect_ids(StrataObject *obj, void *opaque)
{
    g_string_append_printf(opaque, "%s:%s ", object_get_id(obj),
                           object_kind_names[object_get_kind(obj)]);
}

static void test_foreach_order_and_del_all(void)
{
    g_assert_true(add_dotted("qom-type=secret,id=z,data=a"));
    g_assert_true(add_dotted("qom-type=iothread,id=m"));
    g_assert_true(add_dotted("qom-type=secret,id=a,data=a"));
    g_autoptr(GString) s = g_string_new("");
    object_foreach(collect_ids, s);
    g_assert_cmpstr(s->str, ==, "z:secret m:iothread a:secret ");
    /* Users or not. */
    use("a", OBJECT_SECRET, "test");
    object_del_all();
    assert_empty();
}

/* Users in other threads take and release uses while this thread adds,
 * deletes and lists objects: the registry's lock (ThreadSanitizer checks
 * it in the threads suite). */
typedef struct UseThread {
    atomic_int *stop;
    atomic_int uses;
    char user[16];
} UseThread;

static gpointer use_thread(gpointer opaque)
{
    UseThread *u = opaque;
    while (!atomic_load(u->stop)) {
        StrataError *err = NULL;
        StrataObject *obj = object_use("s0", OBJECT_SECRET, u->user, &err);
        g_assert_nonnull(obj);
        size_t len;
        const uint8_t *data = secret_get_data(obj, &len);
        g_assert_cmpmem(data, len, "abc", 3);
        object_unuse(obj, u->user);
        atomic_fetch_add(&u->uses, 1);
        g_assert_null(object_use("t0", OBJECT_IOTHREAD, u->user, &err));
        error_free(err);
    }
    return NULL;
}

static void test_registry_threads(void)
{
    enum { THREADS = 3, ROUNDS = 300 };
    atomic_int stop = 0;
    UseThread u[THREADS];
    GThread *t[THREADS];

    g_assert_true(add_dotted("qom-type=secret,id=s0,data=abc"));
    for (int i = 0; i < THREADS; i++) {
        u[i] = (UseThread) { .stop = &stop };
        snprintf(u[i].user, sizeof(u[i].user), "user%d", i);
        t[i] = g_thread_new("use", use_thread, &u[i]);
    }
    /* At least ROUNDS rounds, and until every thread has overlapped
     * with some. */
    for (int r = 0, busy = 0; r < ROUNDS || busy < THREADS; r++) {
        g_assert_true(add_dotted("qom-type=secret,id=t0,data=x"));
        g_assert_cmpuint(count_objects(), ==, 2);
        del_ok("t0");
        busy = 0;
        for (int i = 0; i < THREADS; i++) {
            busy += atomic_load(&u[i].uses) >= 10;
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < THREADS; i++) {
        g_thread_join(t[i]);
    }
    del_ok("s0");
    assert_empty();
}

/* ---- iothread ----------------------------------------------------------- */

typedef struct IoThreadCall {
    StrataContext *ctx;
    uint64_t thread;
    StrataNode *node;
    StrataBackend *be;
    bool opened;
} IoThreadCall;

static void iothread_open(void *opaque)
{
    IoThreadCall *c = opaque;
    StrataError *err = NULL;
    c->thread = thread_self_id();
    c->node = strata_node_open_json(c->ctx, "{\"driver\": \"mem\", "
                                    "\"node-name\": \"m0\", \"size\": 65536}",
                                    &err);
    if (!c->node) {
        g_error("open: %s", error_get_message(err));
    }
    c->be = strata_backend_new(c->node, "test", STRATA_PERM_ALL,
                               STRATA_PERM_ALL, &err);
    g_assert_nonnull(c->be);
    strata_node_unref(c->node);
    c->opened = true;
}

static void iothread_close(void *opaque)
{
    IoThreadCall *c = opaque;
    g_assert_cmpuint(thread_self_id(), ==, c->thread);
    strata_backend_free(c->be);
}

typedef struct Completion {
    Mutex lock;
    Cond cond;
    bool done;
    int64_t ret;
    uint64_t thread;
} Completion;

static void completion_cb(void *opaque, int64_t ret)
{
    Completion *c = opaque;
    mutex_lock(&c->lock);
    c->ret = ret;
    c->thread = thread_self_id();
    c->done = true;
    cond_signal(&c->cond);
    mutex_unlock(&c->lock);
}

static void test_iothread_runs_requests(void)
{
    IoThreadCall call = { 0 };
    uint8_t out[4096], in[4096];

    g_assert_true(add_dotted("qom-type=iothread,id=io0,poll-max-ns=32768,"
                             "poll-grow=2,poll-shrink=4,aio-max-batch=16"));
    StrataObject *obj = use("io0", OBJECT_IOTHREAD, "test");
    call.ctx = iothread_get_context(obj);
    g_assert_nonnull(call.ctx);

    /* Control calls run in the iothread, not here. */
    strata_context_call(call.ctx, iothread_open, &call);
    g_assert_true(call.opened);
    g_assert_cmpuint(call.thread, !=, thread_self_id());

    /* Blocking requests from this thread are run by the iothread. */
    for (size_t i = 0; i < sizeof(out); i++) {
        out[i] = i * 7 + 1;
    }
    g_assert_cmpint(strata_backend_pwrite(call.be, 1000, out, sizeof(out), 0),
                    ==, 0);
    memset(in, 0, sizeof(in));
    g_assert_cmpint(strata_backend_pread(call.be, 1000, in, sizeof(in), 0),
                    ==, 0);
    g_assert_cmpmem(in, sizeof(in), out, sizeof(out));

    /* A callback request completes in the iothread. */
    Completion c = { .done = false };
    mutex_init(&c.lock);
    cond_init(&c.cond);
    struct iovec iov = { in, 512 };
    memset(in, 0, sizeof(in));
    g_assert_cmpint(strata_backend_aio_preadv(call.be, 1000, &iov, 1, 0,
                                              completion_cb, &c), ==, 0);
    mutex_lock(&c.lock);
    while (!c.done) {
        cond_wait(&c.cond, &c.lock);
    }
    mutex_unlock(&c.lock);
    g_assert_cmpint(c.ret, ==, 0);
    g_assert_cmpuint(c.thread, ==, call.thread);
    g_assert_cmpmem(in, 512, out, 512);
    mutex_cleanup(&c.lock);
    cond_cleanup(&c.cond);

    StrataError *err = NULL;
    g_assert_false(object_del("io0", &err));
    g_assert_cmpstr(error_get_message(err), ==,
                    "object 'io0' is in use by test");
    error_free(err);

    strata_context_call(call.ctx, iothread_close, &call);
    object_unuse(obj, "test");
    del_ok("io0");
    assert_empty();
}

/* Deleting an iothread that still holds a node closes it (shutdown), in
 * a thread that runs a context of its own, as the daemon's main thread
 * does. */
static void test_iothread_del_with_node(void)
{
    IoThreadCall call = { 0 };
    StrataContext *main_ctx = strata_context_new(NULL);
    g_assert_nonnull(main_ctx);
    g_assert_true(add_dotted("qom-type=iothread,id=io0"));
    StrataObject *obj = use("io0", OBJECT_IOTHREAD, "test");
    call.ctx = iothread_get_context(obj);
    strata_context_call(call.ctx, iothread_open, &call);
    object_unuse(obj, "test");
    del_ok("io0");
    assert_empty();
    strata_context_free(main_ctx);
}

static void test_iothread_properties(void)
{
    static const char *const keys[] = {
        "poll-max-ns", "poll-grow", "poll-shrink", "aio-max-batch",
    };
    for (size_t i = 0; i < G_N_ELEMENTS(keys); i++) {
        g_autofree char *expect = g_strdup_printf(
            "%s: must be in range [0, 9223372036854775807], got -1", keys[i]);
        assert_add_error(expect, "qom-type=iothread,id=io0,%s=-1", keys[i]);
    }
    g_autofree char *msg = add_error(NULL, "qom-type=iothread,id=io0,"
                                     "aio-max-batch=x");
    g_assert_true(g_str_has_prefix(msg, "aio-max-batch: "));
    g_assert_false(add_json("{\"qom-type\": \"iothread\", \"id\": \"io0\", "
                            "\"poll-max-ns\": true}"));
    assert_add_error("thread-pool-min: not supported: Strata's thread pool "
                     "starts workers on demand and stops idle ones",
                     "qom-type=iothread,id=io0,thread-pool-min=1");
    /* Larger than any batch: accepted as "no limit". */
    g_assert_true(add_json("{\"qom-type\": \"iothread\", \"id\": \"io0\", "
                           "\"aio-max-batch\": 99999999999}"));
    del_ok("io0");
    assert_empty();
}

/* ---- certificates ------------------------------------------------------- */

typedef struct Cert {
    gnutls_x509_privkey_t key;
    gnutls_x509_crt_t crt;
} Cert;

typedef struct CertOpts {
    const char *cn;
    bool ca;
    const char *purpose;            /* key purpose OID or NULL */
    bool purpose_critical;
    int64_t not_before;             /* seconds relative to now */
    int64_t not_after;
} CertOpts;

static unsigned cert_serial;

static void cert_make(Cert *c, const CertOpts *o, const Cert *issuer)
{
    time_t now = time(NULL);
    unsigned char serial = ++cert_serial;

    g_assert_cmpint(gnutls_x509_privkey_init(&c->key), ==, 0);
    g_assert_cmpint(gnutls_x509_privkey_generate(c->key, GNUTLS_PK_ECDSA,
        GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0), ==, 0);
    g_assert_cmpint(gnutls_x509_crt_init(&c->crt), ==, 0);
    g_assert_cmpint(gnutls_x509_crt_set_version(c->crt, 3), ==, 0);
    g_assert_cmpint(gnutls_x509_crt_set_serial(c->crt, &serial, 1), ==, 0);
    g_assert_cmpint(gnutls_x509_crt_set_activation_time(c->crt,
                    now + (o->not_before ? o->not_before : -3600)), ==, 0);
    g_assert_cmpint(gnutls_x509_crt_set_expiration_time(c->crt,
                    now + (o->not_after ? o->not_after : 86400)), ==, 0);
    g_assert_cmpint(gnutls_x509_crt_set_dn_by_oid(c->crt,
                    GNUTLS_OID_X520_COMMON_NAME, 0, o->cn, strlen(o->cn)),
                    ==, 0);
    g_assert_cmpint(gnutls_x509_crt_set_key(c->crt, c->key), ==, 0);
    if (o->ca) {
        g_assert_cmpint(gnutls_x509_crt_set_basic_constraints(c->crt, 1, -1),
                        ==, 0);
        g_assert_cmpint(gnutls_x509_crt_set_key_usage(c->crt,
                        GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN), ==, 0);
    } else {
        g_assert_cmpint(gnutls_x509_crt_set_key_usage(c->crt,
                        GNUTLS_KEY_DIGITAL_SIGNATURE |
                        GNUTLS_KEY_KEY_ENCIPHERMENT), ==, 0);
        g_assert_cmpint(gnutls_x509_crt_set_subject_alt_name(c->crt,
                        GNUTLS_SAN_DNSNAME, o->cn, strlen(o->cn),
                        GNUTLS_FSAN_SET), ==, 0);
    }
    if (o->purpose) {
        g_assert_cmpint(gnutls_x509_crt_set_key_purpose_oid(c->crt,
                        o->purpose, o->purpose_critical), ==, 0);
    }
    const Cert *signer = issuer ? issuer : c;
    g_assert_cmpint(gnutls_x509_crt_sign2(c->crt, signer->crt, signer->key,
                                          GNUTLS_DIG_SHA256, 0), ==, 0);
}

static void cert_free(Cert *c)
{
    gnutls_x509_crt_deinit(c->crt);
    gnutls_x509_privkey_deinit(c->key);
}

static void cert_write(const Cert *c, const char *dir, const char *cert_name,
                       const char *key_name, const char *password)
{
    gnutls_datum_t d;
    if (cert_name) {
        g_assert_cmpint(gnutls_x509_crt_export2(c->crt, GNUTLS_X509_FMT_PEM,
                                                &d), ==, 0);
        write_file(dir, cert_name, d.data, d.size);
        gnutls_free(d.data);
    }
    if (key_name) {
        if (password) {
            g_assert_cmpint(gnutls_x509_privkey_export2_pkcs8(c->key,
                            GNUTLS_X509_FMT_PEM, password,
                            GNUTLS_PKCS_PBES2_AES_256, &d), ==, 0);
        } else {
            g_assert_cmpint(gnutls_x509_privkey_export2(c->key,
                            GNUTLS_X509_FMT_PEM, &d), ==, 0);
        }
        write_file(dir, key_name, d.data, d.size);
        gnutls_free(d.data);
    }
}

/* A CA, a server certificate for "localhost" and a client certificate,
 * made once for the whole run. */
static Cert ca, server_cert, client_cert;

static void certs_init(void)
{
    cert_make(&ca, &(CertOpts) { .cn = "Strata Test CA", .ca = true }, NULL);
    cert_make(&server_cert, &(CertOpts) { .cn = "localhost",
                                     .purpose = GNUTLS_KP_TLS_WWW_SERVER },
              &ca);
    cert_make(&client_cert, &(CertOpts) { .cn = "client",
                                     .purpose = GNUTLS_KP_TLS_WWW_CLIENT },
              &ca);
}

static char *make_server_dir(const char *name)
{
    char *dir = make_dir(name);
    cert_write(&ca, dir, "ca-cert.pem", NULL, NULL);
    cert_write(&server_cert, dir, "server-cert.pem", "server-key.pem", NULL);
    return dir;
}

static char *make_client_dir(const char *name, bool with_cert)
{
    char *dir = make_dir(name);
    cert_write(&ca, dir, "ca-cert.pem", NULL, NULL);
    if (with_cert) {
        cert_write(&client_cert, dir, "client-cert.pem", "client-key.pem", NULL);
    }
    return dir;
}

/* ---- handshakes --------------------------------------------------------- */

typedef struct Peer {
    StrataObject *creds;
    int fd;
    int ret;                        /* of gnutls_handshake */
    char *user;                     /* the PSK username the server saw */
} Peer;

#define PSK_PRIORITY "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK"

static gnutls_session_t session_new(Peer *p)
{
    bool server = tls_creds_is_server(p->creds);
    bool psk = object_get_kind(p->creds) == OBJECT_TLS_CREDS_PSK;
    gnutls_session_t s;

    g_assert_cmpint(gnutls_init(&s, server ? GNUTLS_SERVER : GNUTLS_CLIENT),
                    ==, 0);
    const char *prio = tls_creds_get_priority(p->creds);
    if (!prio) {
        prio = psk ? PSK_PRIORITY : "NORMAL";
    }
    g_assert_cmpint(gnutls_priority_set_direct(s, prio, NULL), ==, 0);
    g_assert_cmpint(gnutls_credentials_set(s, psk ? GNUTLS_CRD_PSK
                                                  : GNUTLS_CRD_CERTIFICATE,
                                           tls_creds_get_gnutls(p->creds)),
                    ==, 0);
    if (!psk && server && tls_creds_verify_peer(p->creds)) {
        gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
    }
    if (!psk && !server && tls_creds_verify_peer(p->creds)) {
        gnutls_session_set_verify_cert(s, "localhost", 0);
    }
    gnutls_transport_set_int(s, p->fd);
    gnutls_handshake_set_timeout(s, 10000);
    return s;
}

static void peer_run(Peer *p)
{
    gnutls_session_t s = session_new(p);
    do {
        p->ret = gnutls_handshake(s);
    } while (p->ret < 0 && !gnutls_error_is_fatal(p->ret));
    if (p->ret == 0 && tls_creds_is_server(p->creds) &&
        object_get_kind(p->creds) == OBJECT_TLS_CREDS_PSK) {
        p->user = g_strdup(gnutls_psk_server_get_username(s));
    }
    /* In TLS 1.3 a client's handshake completes before the server has
     * checked the client's certificate: a refusal reaches the client as
     * an alert on its first read.  So the server sends one byte and the
     * client reads it. */
    if (p->ret == 0 && tls_creds_is_server(p->creds)) {
        ssize_t n = gnutls_record_send(s, "x", 1);
        p->ret = n == 1 ? 0 : n < 0 ? (int)n : -1;
    } else if (p->ret == 0) {
        char c;
        ssize_t n;
        do {
            n = gnutls_record_recv(s, &c, 1);
        } while (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED);
        p->ret = n == 1 && c == 'x' ? 0 : n < 0 ? (int)n : -1;
    }
    if (p->ret == 0) {
        gnutls_bye(s, GNUTLS_SHUT_WR);
    }
    /* Let the other side see the end if it still waits. */
    shutdown(p->fd, SHUT_RDWR);
    gnutls_deinit(s);
}

static gpointer server_thread(gpointer opaque)
{
    peer_run(opaque);
    return NULL;
}

/* Handshake between two credentials objects; each side's result. */
static void handshake(const char *server_id, const char *client_id,
                      ObjectKind kind, int *server_ret, int *client_ret,
                      char **psk_user)
{
    int sv[2];
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
                    ==, 0);
    Peer srv = { .creds = use(server_id, kind, "test"), .fd = sv[0] };
    Peer cli = { .creds = use(client_id, kind, "test"), .fd = sv[1] };
    GThread *t = g_thread_new("tls-server", server_thread, &srv);
    peer_run(&cli);
    g_thread_join(t);
    close(sv[0]);
    close(sv[1]);
    *server_ret = srv.ret;
    *client_ret = cli.ret;
    if (psk_user) {
        *psk_user = srv.user;
    } else {
        g_free(srv.user);
    }
    object_unuse(srv.creds, "test");
    object_unuse(cli.creds, "test");
}

/* A handshake that must succeed on both sides, or fail on both. */
static void assert_handshake(const char *server_id, const char *client_id,
                             ObjectKind kind, bool ok)
{
    int sret, cret;
    handshake(server_id, client_id, kind, &sret, &cret, NULL);
    if (ok) {
        g_assert_cmpint(sret, ==, 0);
        g_assert_cmpint(cret, ==, 0);
    } else {
        g_assert_cmpint(sret, <, 0);
        g_assert_cmpint(cret, <, 0);
    }
}

/* ---- tls-creds-x509 ----------------------------------------------------- */

static void test_x509_server_and_client(void)
{
    g_autofree char *sdir = make_server_dir("x509-ok-server");
    g_autofree char *cdir = make_client_dir("x509-ok-client", true);

    g_assert_true(add_dotted("qom-type=tls-creds-x509,id=srv,dir=%s,"
                             "endpoint=server", sdir));
    g_autofree char *json = g_strdup_printf(
        "{\"qom-type\": \"tls-creds-x509\", \"id\": \"cli\", \"dir\": \"%s\", "
        "\"endpoint\": \"client\", \"verify-peer\": true, "
        "\"sanity-check\": true}", cdir);
    g_assert_true(add_json(json));
    g_assert_true(add_dotted("qom-type=tls-creds-x509,id=cli2,dir=%s,"
                             "endpoint=client,verify-peer=on,"
                             "priority=NORMAL:-VERS-TLS1.3", cdir));
    StrataObject *s = use("srv", OBJECT_TLS_CREDS_X509, "test");
    g_assert_true(tls_creds_is_server(s));
    g_assert_true(tls_creds_verify_peer(s));
    g_assert_nonnull(tls_creds_get_gnutls(s));
    g_assert_null(tls_creds_get_priority(s));
    object_unuse(s, "test");
    StrataObject *c = use("cli2", OBJECT_TLS_CREDS_X509, "test");
    g_assert_false(tls_creds_is_server(c));
    g_assert_cmpstr(tls_creds_get_priority(c), ==, "NORMAL:-VERS-TLS1.3");
    object_unuse(c, "test");

    /* The loaded credentials work: mutual authentication, the client
     * with its own priority string. */
    assert_handshake("srv", "cli2", OBJECT_TLS_CREDS_X509, true);
    object_del_all();
    assert_empty();
}

static void test_x509_client_without_cert(void)
{
    g_autofree char *sdir = make_server_dir("x509-anon-server");
    g_autofree char *cdir = make_client_dir("x509-anon-client", false);

    g_assert_true(add_dotted("qom-type=tls-creds-x509,id=srv,dir=%s,"
                             "endpoint=server", sdir));
    g_assert_true(add_dotted("qom-type=tls-creds-x509,id=srvnv,dir=%s,"
                             "endpoint=server,verify-peer=off", sdir));
    g_assert_true(add_dotted("qom-type=tls-creds-x509,id=cli,dir=%s", cdir));
    /* A server that verifies peers refuses a client with no certificate;
     * one that does not accepts it. */
    assert_handshake("srv", "cli", OBJECT_TLS_CREDS_X509, false);
    assert_handshake("srvnv", "cli", OBJECT_TLS_CREDS_X509, true);
    object_del_all();
    assert_empty();
}

static void assert_missing(const char *dir, const char *file,
                           const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static void assert_missing(const char *dir, const char *file,
                           const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *opts = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    StrataErrorClass cls;
    g_autofree char *msg = add_error(&cls, "%s", opts);
    g_autofree char *expect = g_strdup_printf(
        "tls-creds-x509 't0': unable to access credentials %s/%s: "
        "No such file or directory", dir, file);
    g_assert_cmpstr(msg, ==, expect);
    g_assert_cmpint(cls, ==, STRATA_ERROR_NOT_FOUND);
}

static void test_x509_missing_files(void)
{
    g_autofree char *dir = make_server_dir("x509-missing");
    const char *srv = "qom-type=tls-creds-x509,id=t0,endpoint=server,dir=";

    remove_file(dir, "server-key.pem");
    assert_missing(dir, "server-key.pem", "%s%s", srv, dir);
    remove_file(dir, "server-cert.pem");
    assert_missing(dir, "server-cert.pem", "%s%s", srv, dir);
    remove_file(dir, "ca-cert.pem");
    assert_missing(dir, "ca-cert.pem", "%s%s", srv, dir);
    assert_missing(dir, "ca-cert.pem", "qom-type=tls-creds-x509,id=t0,dir=%s",
                   dir);
    assert_missing("/nonexistent", "ca-cert.pem",
                   "qom-type=tls-creds-x509,id=t0,dir=/nonexistent");

    /* A server that does not verify peers needs no CA. */
    cert_write(&server_cert, dir, "server-cert.pem", "server-key.pem", NULL);
    g_assert_true(add_dotted("%s%s,verify-peer=off", srv, dir));
    del_ok("t0");

    /* A client certificate without its key (and the reverse). */
    g_autofree char *cdir = make_client_dir("x509-missing-client", false);
    cert_write(&client_cert, cdir, "client-cert.pem", NULL, NULL);
    assert_missing(cdir, "client-key.pem",
                   "qom-type=tls-creds-x509,id=t0,dir=%s", cdir);
    remove_file(cdir, "client-cert.pem");
    cert_write(&client_cert, cdir, NULL, "client-key.pem", NULL);
    assert_missing(cdir, "client-cert.pem",
                   "qom-type=tls-creds-x509,id=t0,dir=%s", cdir);

    assert_add_error("dir: missing", "qom-type=tls-creds-x509,id=t0");
    assert_add_error("endpoint: expected one of client, server",
                     "qom-type=tls-creds-x509,id=t0,dir=%s,endpoint=foo", dir);
    g_autofree char *msg = add_error(NULL, "qom-type=tls-creds-x509,id=t0,"
                                     "dir=%s,verify-peer=foo", dir);
    g_assert_true(g_str_has_prefix(msg, "verify-peer: "));
    g_autofree char *msg2 = add_error(NULL, "qom-type=tls-creds-x509,id=t0,"
                                      "dir=%s,priority=NORMAL:+BOGUS", dir);
    g_assert_true(g_str_has_prefix(msg2, "priority: invalid GnuTLS priority "
                                   "string 'NORMAL:+BOGUS' at '+BOGUS'"));
    assert_empty();
}

static void test_x509_bad_files(void)
{
    g_autofree char *dir = make_server_dir("x509-bad");
    const char *srv = "qom-type=tls-creds-x509,id=t0,endpoint=server,dir=";

    /* A CA file without a certificate in it. */
    write_file(dir, "ca-cert.pem", "garbage\n", -1);
    g_autofree char *msg = add_error(NULL, "%s%s", srv, dir);
    g_autofree char *expect = g_strdup_printf("tls-creds-x509 't0': no "
                                              "certificate in %s/ca-cert.pem",
                                              dir);
    g_assert_cmpstr(msg, ==, expect);
    cert_write(&ca, dir, "ca-cert.pem", NULL, NULL);

    /* A key that does not match the certificate. */
    cert_write(&client_cert, dir, NULL, "server-key.pem", NULL);
    g_autofree char *msg2 = add_error(NULL, "%s%s", srv, dir);
    g_autofree char *prefix = g_strdup_printf(
        "tls-creds-x509 't0': cannot load certificate %s/server-cert.pem with "
        "key %s/server-key.pem: ", dir, dir);
    g_assert_true(g_str_has_prefix(msg2, prefix));
    cert_write(&server_cert, dir, NULL, "server-key.pem", NULL);

    /* A bad dh-params.pem; a good one is used. */
    write_file(dir, "dh-params.pem", "garbage\n", -1);
    g_autofree char *msg3 = add_error(NULL, "%s%s", srv, dir);
    g_autofree char *prefix3 = g_strdup_printf(
        "tls-creds-x509 't0': invalid DH parameters in %s/dh-params.pem: ",
        dir);
    g_assert_true(g_str_has_prefix(msg3, prefix3));
    gnutls_dh_params_t dh;
    gnutls_datum_t pem = { NULL, 0 };
    g_assert_cmpint(gnutls_dh_params_init(&dh), ==, 0);
    g_assert_cmpint(gnutls_dh_params_import_raw(dh,
                    &gnutls_ffdhe_2048_group_prime,
                    &gnutls_ffdhe_2048_group_generator), ==, 0);
    g_assert_cmpint(gnutls_dh_params_export2_pkcs3(dh, GNUTLS_X509_FMT_PEM,
                                                   &pem), ==, 0);
    write_file(dir, "dh-params.pem", pem.data, pem.size);
    gnutls_free(pem.data);
    gnutls_dh_params_deinit(dh);
    g_assert_true(add_dotted("%s%s", srv, dir));
    del_ok("t0");
    assert_empty();
}

static void test_x509_sanity_check(void)
{
    g_autofree char *dir = make_server_dir("x509-sanity");
    const char *srv = "qom-type=tls-creds-x509,id=t0,endpoint=server,dir=";
    Cert other_ca, expired, future, as_client, critical_client;

    /* Signed by another CA. */
    cert_make(&other_ca, &(CertOpts) { .cn = "Other CA", .ca = true }, NULL);
    cert_write(&other_ca, dir, "ca-cert.pem", NULL, NULL);
    g_autofree char *msg = add_error(NULL, "%s%s", srv, dir);
    g_autofree char *prefix = g_strdup_printf(
        "tls-creds-x509 't0': certificate %s/server-cert.pem does not verify "
        "against %s/ca-cert.pem: ", dir, dir);
    g_assert_true(g_str_has_prefix(msg, prefix));
    /* sanity-check=off loads it anyway (handshakes will fail). */
    g_assert_true(add_dotted("%s%s,sanity-check=off", srv, dir));
    del_ok("t0");
    cert_write(&ca, dir, "ca-cert.pem", NULL, NULL);

    /* A CA file holding a leaf certificate. */
    cert_write(&server_cert, dir, "ca-cert.pem", NULL, NULL);
    g_autofree char *msg2 = add_error(NULL, "%s%s", srv, dir);
    g_autofree char *expect2 = g_strdup_printf(
        "tls-creds-x509 't0': certificate %s/ca-cert.pem is not a CA "
        "certificate (basic constraints)", dir);
    g_assert_cmpstr(msg2, ==, expect2);
    cert_write(&ca, dir, "ca-cert.pem", NULL, NULL);

    /* The CA as the server's certificate. */
    cert_write(&ca, dir, "server-cert.pem", "server-key.pem", NULL);
    g_autofree char *msg3 = add_error(NULL, "%s%s", srv, dir);
    g_autofree char *expect3 = g_strdup_printf(
        "tls-creds-x509 't0': certificate %s/server-cert.pem is a CA "
        "certificate, not a server certificate", dir);
    g_assert_cmpstr(msg3, ==, expect3);

    /* Outside the validity period. */
    cert_make(&expired, &(CertOpts) { .cn = "localhost", .not_before = -7200,
                                      .not_after = -3600 }, &ca);
    cert_write(&expired, dir, "server-cert.pem", "server-key.pem", NULL);
    g_autofree char *msg4 = add_error(NULL, "%s%s", srv, dir);
    g_autofree char *expect4 = g_strdup_printf(
        "tls-creds-x509 't0': certificate %s/server-cert.pem has expired", dir);
    g_assert_cmpstr(msg4, ==, expect4);
    cert_make(&future, &(CertOpts) { .cn = "localhost", .not_before = 3600,
                                     .not_after = 7200 }, &ca);
    cert_write(&future, dir, "server-cert.pem", "server-key.pem", NULL);
    g_autofree char *msg5 = add_error(NULL, "%s%s", srv, dir);
    g_autofree char *expect5 = g_strdup_printf(
        "tls-creds-x509 't0': certificate %s/server-cert.pem is not valid yet",
        dir);
    g_assert_cmpstr(msg5, ==, expect5);

    /* A client certificate on a server: refused only when its key purpose
     * is critical, as QEMU does. */
    cert_make(&as_client, &(CertOpts) { .cn = "localhost",
              .purpose = GNUTLS_KP_TLS_WWW_CLIENT }, &ca);
    cert_write(&as_client, dir, "server-cert.pem", "server-key.pem", NULL);
    g_assert_true(add_dotted("%s%s", srv, dir));
    del_ok("t0");
    cert_make(&critical_client, &(CertOpts) { .cn = "localhost",
              .purpose = GNUTLS_KP_TLS_WWW_CLIENT, .purpose_critical = true },
              &ca);
    cert_write(&critical_client, dir, "server-cert.pem", "server-key.pem",
               NULL);
    g_autofree char *msg6 = add_error(NULL, "%s%s", srv, dir);
    g_autofree char *expect6 = g_strdup_printf(
        "tls-creds-x509 't0': certificate %s/server-cert.pem may not be used "
        "as a TLS server (key purpose)", dir);
    g_assert_cmpstr(msg6, ==, expect6);

    cert_free(&other_ca);
    cert_free(&expired);
    cert_free(&future);
    cert_free(&as_client);
    cert_free(&critical_client);
    assert_empty();
}

static void test_x509_encrypted_key(void)
{
    g_autofree char *dir = make_dir("x509-encrypted");
    const char *srv = "qom-type=tls-creds-x509,id=t0,endpoint=server,dir=";
    cert_write(&ca, dir, "ca-cert.pem", NULL, NULL);
    cert_write(&server_cert, dir, "server-cert.pem", "server-key.pem", "s3cret");

    g_autofree char *msg = add_error(NULL, "%s%s", srv, dir);
    g_assert_true(g_str_has_suffix(msg, "(an encrypted key needs "
                                   "passwordid)"));
    assert_add_error("passwordid: No object with id 'pw'",
                     "%s%s,passwordid=pw", srv, dir);
    g_assert_true(add_dotted("qom-type=secret,id=bad,data=wrong"));
    g_autofree char *msg2 = add_error(NULL, "%s%s,passwordid=bad", srv, dir);
    g_assert_true(g_str_has_prefix(msg2, "tls-creds-x509 't0': cannot load "
                                   "certificate "));
    g_assert_true(add_dotted("qom-type=secret,id=pw,data=s3cret"));
    g_assert_true(add_dotted("%s%s,passwordid=pw", srv, dir));
    /* The secret was needed only to load the key. */
    del_ok("pw");
    del_ok("bad");
    del_ok("t0");
    assert_empty();
}

/* ---- tls-creds-psk ------------------------------------------------------ */

#define PSK_KEY "9a6e4c0b3f2d17e85b6a7c9d0e1f2a3b"

static void test_psk(void)
{
    g_autofree char *dir = make_dir("psk");
    int sret, cret;
    char *user = NULL;

    write_file(dir, "keys.psk", "alice:" PSK_KEY "\n\nqemu:00112233\n", -1);
    g_assert_true(add_dotted("qom-type=tls-creds-psk,id=srv,dir=%s,"
                             "endpoint=server", dir));
    g_assert_true(add_dotted("qom-type=tls-creds-psk,id=alice,dir=%s,"
                             "username=alice", dir));
    g_assert_true(add_dotted("qom-type=tls-creds-psk,id=dflt,dir=%s", dir));
    StrataObject *o = use("dflt", OBJECT_TLS_CREDS_PSK, "test");
    g_assert_cmpstr(tls_creds_get_username(o), ==, "qemu");
    g_assert_false(tls_creds_is_server(o));
    object_unuse(o, "test");
    o = use("srv", OBJECT_TLS_CREDS_PSK, "test");
    g_assert_null(tls_creds_get_username(o));
    object_unuse(o, "test");

    handshake("srv", "alice", OBJECT_TLS_CREDS_PSK, &sret, &cret, &user);
    g_assert_cmpint(sret, ==, 0);
    g_assert_cmpint(cret, ==, 0);
    g_assert_cmpstr(user, ==, "alice");
    g_free(user);

    /* A client whose key differs from the server's file fails. */
    g_autofree char *cdir = make_dir("psk-wrong");
    write_file(cdir, "keys.psk", "alice:00" PSK_KEY "\n", -1);
    g_assert_true(add_dotted("qom-type=tls-creds-psk,id=wrong,dir=%s,"
                             "username=alice", cdir));
    assert_handshake("srv", "wrong", OBJECT_TLS_CREDS_PSK, false);
    object_del_all();
    assert_empty();
}

static void test_psk_errors(void)
{
    g_autofree char *dir = make_dir("psk-errors");
    StrataErrorClass cls;

    g_autofree char *msg = add_error(&cls, "qom-type=tls-creds-psk,id=t0,"
                                     "dir=%s,endpoint=server", dir);
    g_autofree char *expect = g_strdup_printf(
        "tls-creds-psk 't0': unable to access credentials %s/keys.psk: "
        "No such file or directory", dir);
    g_assert_cmpstr(msg, ==, expect);
    g_assert_cmpint(cls, ==, STRATA_ERROR_NOT_FOUND);

    write_file(dir, "keys.psk", "alice:" PSK_KEY "\n", -1);
    g_autofree char *msg2 = add_error(&cls, "qom-type=tls-creds-psk,id=t0,"
                                      "dir=%s", dir);
    g_autofree char *expect2 = g_strdup_printf(
        "tls-creds-psk 't0': no key for username 'qemu' in %s/keys.psk", dir);
    g_assert_cmpstr(msg2, ==, expect2);
    g_assert_cmpint(cls, ==, STRATA_ERROR_NOT_FOUND);

    assert_add_error("username: should not be set when endpoint=server (the "
                     "server takes every user in keys.psk)",
                     "qom-type=tls-creds-psk,id=t0,dir=%s,endpoint=server,"
                     "username=alice", dir);
    assert_add_error("dir: missing", "qom-type=tls-creds-psk,id=t0");

    static const char *const bad[] = {
        "alice\n", "alice:\n", ":00\n", "alice:0g\n", "alice:abc\n",
        "alice:00\r\n",
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree char *text = g_strdup_printf("bob:00\n%s", bad[i]);
        write_file(dir, "keys.psk", text, -1);
        g_autofree char *m = add_error(NULL, "qom-type=tls-creds-psk,id=t0,"
                                       "dir=%s,endpoint=server", dir);
        g_autofree char *e = g_strdup_printf(
            "tls-creds-psk 't0': %s/keys.psk line 2: expected "
            "'username:hexkey' with an even number of hex digits", dir);
        g_assert_cmpstr(m, ==, e);
    }
    assert_empty();
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    test_dir = g_dir_make_tmp("strata-object-XXXXXX", NULL);
    g_assert_nonnull(test_dir);
    signal(SIGABRT, on_abort);
    signal(SIGTERM, on_abort);
    signal(SIGINT, on_abort);
    /* A peer that fails a handshake closes its end; the other side must
     * get EPIPE, not die. */
    signal(SIGPIPE, SIG_IGN);
    certs_init();

    g_test_add_func("/object/secret/raw", test_secret_raw);
    g_test_add_func("/object/secret/base64", test_secret_base64);
    g_test_add_func("/object/secret/bad-base64", test_secret_bad_base64);
    g_test_add_func("/object/secret/file", test_secret_file);
    g_test_add_func("/object/secret/data-xor-file", test_secret_data_xor_file);
    g_test_add_func("/object/secret/encrypted-refused",
                    test_secret_encrypted_refused);
    g_test_add_func("/object/unknown-property", test_unknown_property);
    g_test_add_func("/object/id/duplicate", test_id_duplicate);
    g_test_add_func("/object/id/invalid", test_id_invalid);
    g_test_add_func("/object/del/errors", test_del_errors);
    g_test_add_func("/object/use/errors", test_use_errors);
    g_test_add_func("/object/foreach/creation-order",
                    test_foreach_order_and_del_all);
    g_test_add_func("/object/registry/threads", test_registry_threads);
    g_test_add_func("/object/iothread/runs-requests",
                    test_iothread_runs_requests);
    g_test_add_func("/object/iothread/del-closes-nodes",
                    test_iothread_del_with_node);
    g_test_add_func("/object/iothread/properties", test_iothread_properties);
    g_test_add_func("/object/x509/server-and-client",
                    test_x509_server_and_client);
    g_test_add_func("/object/x509/client-without-cert",
                    test_x509_client_without_cert);
    g_test_add_func("/object/x509/missing-files", test_x509_missing_files);
    g_test_add_func("/object/x509/bad-files", test_x509_bad_files);
    g_test_add_func("/object/x509/sanity-check", test_x509_sanity_check);
    g_test_add_func("/object/x509/encrypted-key", test_x509_encrypted_key);
    g_test_add_func("/object/psk/handshake", test_psk);
    g_test_add_func("/object/psk/errors", test_psk_errors);

    int ret = g_test_run();
    cert_free(&ca);
    cert_free(&server_cert);
    cert_free(&client_cert);
    remove_test_dir();
    g_free(test_dir);
    return ret;
}
