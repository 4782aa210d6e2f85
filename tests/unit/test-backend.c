/*
 * Tests of backend handles: the three request forms, write cache, error
 * policy, drained sections and submission from other threads
 * SPDX-License-Identifier: MIT
 *
 * Every test opens a mem node and a backend over it.  The mem driver's
 * counters and bytes (block/mem.h) show what reached the storage.  Tests
 * without a loop thread run the context's loop in the test's thread; the
 * thread tests start the loop thread and submit from others.
 *
 * The cross-thread test draws its offsets and data from a seed:
 * STRATA_TEST_SEED (default 1), printed on failure.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>

#include "block/backend-int.h"
#include "block/block-int.h"
#include "block/blkdebug.h"
#include "block/mem.h"
#include "util/thread.h"

#define MiB (1024 * 1024)
#define DISK_SIZE MiB

static guint64 test_seed = 1;

/* ---- fixture ---------------------------------------------------------------- */

typedef struct Fixture {
    StrataContext *ctx;
    StrataNode *mem;
    StrataBackend *be;
} Fixture;

static void fixture_open(Fixture *f, const char *extra_opts)
{
    g_autoptr(StrataError) err = NULL;
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"mem\", \"node-name\": \"m0\", \"size\": %d,"
        " \"discard\": \"unmap\"%s%s}", DISK_SIZE,
        extra_opts ? ", " : "", extra_opts ? extra_opts : "");

    f->ctx = strata_context_new(&err);
    g_assert_nonnull(f->ctx);
    f->mem = strata_node_open_json(f->ctx, json, &err);
    if (!f->mem) {
        g_error("%s: %s", json, error_get_message(err));
    }
    f->be = strata_backend_new(f->mem, "vda", STRATA_PERM_ALL, STRATA_PERM_ALL,
                               &err);
    g_assert_nonnull(f->be);
}

static void fixture_close(Fixture *f)
{
    if (f->ctx->queues[0]->thread) {
        strata_context_stop_thread(f->ctx);
    }
    strata_backend_free(f->be);
    strata_node_unref(f->mem);
    strata_context_free(f->ctx);
}

static MemCounters counters(Fixture *f)
{
    MemCounters c;
    mem_get_counters(f->mem, &c);
    return c;
}

static void fill_pattern(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 8));
    }
}

/* Run the loop a while without blocking: enough for anything runnable to
 * run, for tests that check that something does *not* happen. */
static void run_idle(StrataContext *ctx)
{
    for (int i = 0; i < 64; i++) {
        strata_context_run_once(ctx, false);
    }
}

/* ---- one request in each form ------------------------------------------------- */

typedef enum Form { FORM_CO, FORM_AIO, FORM_SYNC, FORM__MAX } Form;
static const char *const form_names[] = { "coroutine", "callback", "blocking" };

typedef enum Op {
    OP_READ, OP_WRITE, OP_ZEROES, OP_DISCARD, OP_FLUSH, OP_LENGTH, OP_TRUNCATE,
    OP__MAX,
} Op;
static const char *const op_names[] = {
    "read", "write", "write-zeroes", "discard", "flush", "length", "truncate",
};

typedef struct Request {
    StrataBackend *be;
    Op op;
    int64_t offset, bytes;          /* truncate: offset is the size */
    void *buf;
    uint32_t flags;
    int64_t ret;
    bool done;
    int calls;                      /* callback form: completions seen */
    GThread *cb_thread;
} Request;

static void request_co_entry(void *opaque)
{
    Request *r = opaque;
    IOVector qiov;

    switch (r->op) {
    case OP_READ:
    case OP_WRITE:
        iov_init_buf(&qiov, r->buf, (size_t)r->bytes);
        r->ret = r->op == OP_READ
            ? backend_co_preadv(r->be, r->offset, r->bytes, &qiov, (int)r->flags)
            : backend_co_pwritev(r->be, r->offset, r->bytes, &qiov, (int)r->flags);
        iov_cleanup(&qiov);
        break;
    case OP_ZEROES:
        r->ret = backend_co_pwrite_zeroes(r->be, r->offset, r->bytes, (int)r->flags);
        break;
    case OP_DISCARD:
        r->ret = backend_co_pdiscard(r->be, r->offset, r->bytes);
        break;
    case OP_FLUSH:
        r->ret = backend_co_flush(r->be);
        break;
    case OP_LENGTH:
        r->ret = backend_co_get_length(r->be);
        break;
    case OP_TRUNCATE:
        r->ret = backend_co_truncate(r->be, r->offset, PREALLOC_OFF, NULL);
        break;
    default:
        g_assert_not_reached();
    }
    r->done = true;
}

static void request_cb(void *opaque, int64_t ret)
{
    Request *r = opaque;

    r->calls++;
    r->ret = ret;
    r->cb_thread = g_thread_self();
    r->done = true;
}

/* Submit @r in callback form; 0 or the submission's -errno. */
static int request_submit_aio(Request *r, struct iovec *iov)
{
    *iov = (struct iovec) { r->buf, (size_t)r->bytes };
    switch (r->op) {
    case OP_READ:
        return strata_backend_aio_preadv(r->be, r->offset, iov, 1, r->flags,
                                         request_cb, r);
    case OP_WRITE:
        return strata_backend_aio_pwritev(r->be, r->offset, iov, 1, r->flags,
                                          request_cb, r);
    case OP_ZEROES:
        return strata_backend_aio_pwrite_zeroes(r->be, r->offset, r->bytes,
                                                r->flags, request_cb, r);
    case OP_DISCARD:
        return strata_backend_aio_pdiscard(r->be, r->offset, r->bytes,
                                           request_cb, r);
    case OP_FLUSH:
        return strata_backend_aio_flush(r->be, request_cb, r);
    case OP_LENGTH:
        return strata_backend_aio_get_length(r->be, request_cb, r);
    case OP_TRUNCATE:
        return strata_backend_aio_truncate(r->be, r->offset, request_cb, r);
    default:
        g_assert_not_reached();
    }
}

static int64_t request_run_sync(Request *r)
{
    switch (r->op) {
    case OP_READ:
        return strata_backend_pread(r->be, r->offset, r->buf, (size_t)r->bytes,
                                    r->flags);
    case OP_WRITE:
        return strata_backend_pwrite(r->be, r->offset, r->buf, (size_t)r->bytes,
                                     r->flags);
    case OP_ZEROES:
        return strata_backend_pwrite_zeroes(r->be, r->offset, r->bytes, r->flags);
    case OP_DISCARD:
        return strata_backend_pdiscard(r->be, r->offset, r->bytes);
    case OP_FLUSH:
        return strata_backend_flush(r->be);
    case OP_LENGTH:
        return strata_backend_get_length(r->be);
    case OP_TRUNCATE:
        return strata_backend_truncate(r->be, r->offset);
    default:
        g_assert_not_reached();
    }
}

/*
 * Run one request in @form from the loop's own thread and return its
 * result.  The callback form is also held to its contract: not inside the
 * submitting call, exactly once, in the context's thread.
 */
static int64_t run_request(Fixture *f, Form form, Op op, int64_t offset,
                           int64_t bytes, void *buf, uint32_t flags)
{
    Request r = { .be = f->be, .op = op, .offset = offset, .bytes = bytes,
                  .buf = buf, .flags = flags };
    struct iovec iov;

    switch (form) {
    case FORM_CO:
        loop_co_spawn(f->ctx->loop, request_co_entry, &r);
        while (!r.done) {
            strata_context_run_once(f->ctx, true);
        }
        return r.ret;
    case FORM_AIO:
        g_assert_cmpint(request_submit_aio(&r, &iov), ==, 0);
        g_assert_false(r.done);
        while (!r.done) {
            strata_context_run_once(f->ctx, true);
        }
        run_idle(f->ctx);
        g_assert_cmpint(r.calls, ==, 1);
        g_assert_true(r.cb_thread == g_thread_self());
        return r.ret;
    case FORM_SYNC:
        return request_run_sync(&r);
    default:
        g_assert_not_reached();
    }
}

typedef struct FormOp {
    Form form;
    Op op;
} FormOp;

static void test_form_op(const void *data)
{
    const FormOp *fo = data;
    Form form = fo->form;
    Fixture f;
    g_autofree uint8_t *pattern = g_malloc(8192);
    g_autofree uint8_t *buf = g_malloc0(8192);
    const uint8_t *disk;

    fixture_open(&f, NULL);
    disk = mem_get_data(f.mem);
    fill_pattern(pattern, 8192, 1);

    switch (fo->op) {
    case OP_READ:
        g_assert_cmpint(strata_backend_pwrite(f.be, 1000, pattern, 5000, 0), ==, 0);
        g_assert_cmpint(run_request(&f, form, OP_READ, 1000, 5000, buf, 0), ==, 0);
        g_assert_cmpmem(buf, 5000, pattern, 5000);
        g_assert_cmpuint(counters(&f).requests[REQ_READ], ==, 1);
        break;
    case OP_WRITE:
        g_assert_cmpint(run_request(&f, form, OP_WRITE, 4096, 8192, pattern, 0), ==, 0);
        g_assert_cmpmem(disk + 4096, 8192, pattern, 8192);
        g_assert_cmpuint(counters(&f).requests[REQ_WRITE], ==, 1);
        g_assert_cmpuint(counters(&f).fua_writes, ==, 0);
        /* FUA from the caller reaches the driver. */
        g_assert_cmpint(run_request(&f, form, OP_WRITE, 0, 512, pattern,
                                    STRATA_REQ_FUA), ==, 0);
        g_assert_cmpuint(counters(&f).fua_writes, ==, 1);
        break;
    case OP_ZEROES:
        g_assert_cmpint(strata_backend_pwrite(f.be, 0, pattern, 8192, 0), ==, 0);
        g_assert_cmpint(run_request(&f, form, OP_ZEROES, 1024, 4096, NULL, 0), ==, 0);
        g_assert_cmpmem(disk, 1024, pattern, 1024);
        g_assert_true(disk[1024] == 0 && disk[5119] == 0);
        for (int i = 1024; i < 5120; i++) {
            g_assert_cmpuint(disk[i], ==, 0);
        }
        g_assert_cmpmem(disk + 5120, 8192 - 5120, pattern + 5120, 8192 - 5120);
        g_assert_cmpuint(counters(&f).requests[REQ_ZEROES], ==, 1);
        break;
    case OP_DISCARD:
        g_assert_cmpint(strata_backend_pwrite(f.be, 0, pattern, 8192, 0), ==, 0);
        g_assert_cmpint(run_request(&f, form, OP_DISCARD, 0, 8192, NULL, 0), ==, 0);
        g_assert_cmpuint(counters(&f).requests[REQ_DISCARD], ==, 1);
        g_assert_cmpuint(counters(&f).bytes[REQ_DISCARD], ==, 8192);
        for (int i = 0; i < 8192; i++) {
            g_assert_cmpuint(disk[i], ==, 0);     /* mem reads zeroes after unmap */
        }
        break;
    case OP_FLUSH:
        g_assert_cmpint(strata_backend_pwrite(f.be, 0, pattern, 512, 0), ==, 0);
        g_assert_cmpint(run_request(&f, form, OP_FLUSH, 0, 0, NULL, 0), ==, 0);
        g_assert_cmpuint(counters(&f).flushes, ==, 1);
        /* Nothing written since: nothing to flush. */
        g_assert_cmpint(run_request(&f, form, OP_FLUSH, 0, 0, NULL, 0), ==, 0);
        g_assert_cmpuint(counters(&f).flushes, ==, 1);
        break;
    case OP_LENGTH:
        g_assert_cmpint(run_request(&f, form, OP_LENGTH, 0, 0, NULL, 0), ==,
                        DISK_SIZE);
        break;
    case OP_TRUNCATE:
        g_assert_cmpint(strata_backend_pwrite(f.be, 0, pattern, 8192, 0), ==, 0);
        g_assert_cmpint(run_request(&f, form, OP_TRUNCATE, 2 * MiB, 0, NULL, 0), ==, 0);
        g_assert_cmpint(strata_backend_get_length(f.be), ==, 2 * MiB);
        g_assert_cmpuint(mem_get_size(f.mem), ==, 2 * MiB);
        /* Data below the old end stays; the device now reaches further. */
        g_assert_cmpint(strata_backend_pread(f.be, 0, buf, 8192, 0), ==, 0);
        g_assert_cmpmem(buf, 8192, pattern, 8192);
        g_assert_cmpint(strata_backend_pwrite(f.be, 2 * MiB - 512, pattern, 512, 0),
                        ==, 0);
        g_assert_cmpint(run_request(&f, form, OP_TRUNCATE, 4096, 0, NULL, 0), ==, 0);
        g_assert_cmpint(strata_backend_get_length(f.be), ==, 4096);
        g_assert_cmpint(strata_backend_pread(f.be, 4096, buf, 512, 0), ==, -EIO);
        break;
    default:
        g_assert_not_reached();
    }
    g_assert_cmpuint(counters(&f).limit_violations, ==, 0);
    fixture_close(&f);
}

/* ---- callback form -------------------------------------------------------------- */

static void test_aio_null_callback(void)
{
    Fixture f;
    char buf[512];
    struct iovec iov = { buf, sizeof(buf) };

    fixture_open(&f, NULL);
    g_assert_cmpint(strata_backend_aio_preadv(f.be, 0, &iov, 1, 0, NULL, NULL), ==,
                    -EINVAL);
    g_assert_cmpint(strata_backend_aio_flush(f.be, NULL, NULL), ==, -EINVAL);
    run_idle(f.ctx);
    fixture_close(&f);
}

/* A callback may submit the next request; it is not entered recursively. */
typedef struct Chain {
    StrataBackend *be;
    uint8_t *buf;
    struct iovec iov;
    int depth;          /* inside a callback right now */
    int max_depth;
    int remaining;
    int completed;
} Chain;

static void chain_cb(void *opaque, int64_t ret)
{
    Chain *c = opaque;

    g_assert_cmpint(ret, ==, 0);
    c->completed++;
    c->depth++;
    c->max_depth = MAX(c->max_depth, c->depth);
    if (c->remaining-- > 0) {
        c->iov = (struct iovec) { c->buf, 512 };
        g_assert_cmpint(strata_backend_aio_pwritev(c->be, c->remaining * 512,
                                                   &c->iov, 1, 0, chain_cb, c),
                        ==, 0);
    }
    c->depth--;
}

static void test_aio_submit_from_callback(void)
{
    Fixture f;
    uint8_t buf[512];
    Chain c = { .buf = buf, .remaining = 100 };

    fixture_open(&f, NULL);
    c.be = f.be;
    memset(buf, 0x5a, sizeof(buf));
    c.iov = (struct iovec) { buf, sizeof(buf) };
    g_assert_cmpint(strata_backend_aio_pwritev(f.be, 100 * 512, &c.iov, 1, 0,
                                               chain_cb, &c), ==, 0);
    while (c.completed < 101) {
        strata_context_run_once(f.ctx, true);
    }
    g_assert_cmpint(c.max_depth, ==, 1);
    g_assert_cmpuint(counters(&f).requests[REQ_WRITE], ==, 101);
    for (int i = 0; i <= 100; i++) {
        g_assert_cmpmem(mem_get_data(f.mem) + i * 512, 512, buf, 512);
    }
    fixture_close(&f);
}

/* ---- write cache ------------------------------------------------------------------ */

static void test_writethrough(void)
{
    Fixture f;
    uint8_t buf[4096];

    fixture_open(&f, NULL);
    fill_pattern(buf, sizeof(buf), 3);
    g_assert_true(backend_get_write_cache(f.be));
    g_assert_cmpint(strata_backend_pwrite(f.be, 0, buf, sizeof(buf), 0), ==, 0);
    g_assert_cmpuint(counters(&f).fua_writes, ==, 0);

    strata_backend_set_write_cache(f.be, false);
    g_assert_false(backend_get_write_cache(f.be));
    for (int i = 0; i < 3; i++) {
        g_assert_cmpint(strata_backend_pwrite(f.be, i * 4096, buf, sizeof(buf), 0),
                        ==, 0);
    }
    g_assert_cmpint(strata_backend_pwrite_zeroes(f.be, 65536, 4096, 0), ==, 0);
    g_assert_cmpuint(counters(&f).requests[REQ_WRITE], ==, 4);
    g_assert_cmpuint(counters(&f).fua_writes, ==, 4);
    for (int i = 0; i < mem_trace_count(f.mem); i++) {
        MemTraceEntry e;
        g_assert_true(mem_trace_get(f.mem, i, &e));
        if (i > 0) {
            g_assert_true(e.flags & REQ_FUA);
        }
    }
    /* Reads carry no FUA. */
    g_assert_cmpint(strata_backend_pread(f.be, 0, buf, sizeof(buf), 0), ==, 0);
    g_assert_cmpuint(counters(&f).fua_writes, ==, 4);

    strata_backend_set_write_cache(f.be, true);
    g_assert_cmpint(strata_backend_pwrite(f.be, 0, buf, sizeof(buf), 0), ==, 0);
    g_assert_cmpuint(counters(&f).fua_writes, ==, 4);
    fixture_close(&f);
}

/* ---- completion counting across threads ------------------------------------ */

typedef struct Counter {
    Mutex lock;
    Cond cond;
    int done;
    int failed;
    int wrong_thread;
    GThread *expect_thread;
} Counter;

static void counter_init(Counter *c, GThread *expect)
{
    memset(c, 0, sizeof(*c));
    mutex_init(&c->lock);
    cond_init(&c->cond);
    c->expect_thread = expect;
}

static void counter_clear(Counter *c)
{
    mutex_cleanup(&c->lock);
    cond_cleanup(&c->cond);
}

static void counter_cb(void *opaque, int64_t ret)
{
    Counter *c = opaque;

    mutex_lock(&c->lock);
    c->done++;
    if (ret != 0) {
        c->failed++;
    }
    if (c->expect_thread && g_thread_self() != c->expect_thread) {
        c->wrong_thread++;
    }
    cond_broadcast(&c->cond);
    mutex_unlock(&c->lock);
}

static int counter_get(Counter *c)
{
    mutex_lock(&c->lock);
    int n = c->done;
    mutex_unlock(&c->lock);
    return n;
}

static void counter_wait(Counter *c, int n)
{
    mutex_lock(&c->lock);
    while (c->done < n) {
        cond_wait(&c->cond, &c->lock);
    }
    mutex_unlock(&c->lock);
}

/* ---- error policy ----------------------------------------------------------------- */

static void test_error_report(void)
{
    Fixture f;
    uint8_t buf[512] = { 1 };

    fixture_open(&f, NULL);
    mem_inject_error(f.mem, REQ_READ, 0, 512, EIO, 1);
    g_assert_cmpint(strata_backend_pread(f.be, 0, buf, sizeof(buf), 0), ==, -EIO);
    g_assert_cmpint(strata_backend_pread(f.be, 0, buf, sizeof(buf), 0), ==, 0);
    mem_inject_error(f.mem, REQ_WRITE, 0, 512, ENOSPC, 1);
    g_assert_cmpint(strata_backend_pwrite(f.be, 0, buf, sizeof(buf), 0), ==, -ENOSPC);
    g_assert_cmpint(strata_backend_pwrite(f.be, 0, buf, sizeof(buf), 0), ==, 0);
    mem_inject_error(f.mem, REQ_FLUSH, 0, -1, EIO, 1);
    g_assert_cmpint(strata_backend_flush(f.be), ==, -EIO);
    g_assert_false(strata_backend_is_stopped(f.be));
    fixture_close(&f);
}

static void test_error_ignore(void)
{
    Fixture f;
    uint8_t buf[512];

    fixture_open(&f, NULL);
    memset(buf, 0x77, sizeof(buf));
    strata_backend_set_error_action(f.be, STRATA_ERROR_ACTION_IGNORE,
                                    STRATA_ERROR_ACTION_IGNORE);
    mem_inject_error(f.mem, REQ_WRITE, 0, 512, EIO, 1);
    g_assert_cmpint(strata_backend_pwrite(f.be, 0, buf, sizeof(buf), 0), ==, 0);
    /* Ignored means ignored: the data did not reach the disk. */
    g_assert_cmpuint(mem_get_data(f.mem)[0], ==, 0);
    g_assert_cmpuint(counters(&f).errors[REQ_WRITE], ==, 1);
    mem_inject_error(f.mem, REQ_READ, 0, 512, EIO, 1);
    g_assert_cmpint(strata_backend_pread(f.be, 0, buf, sizeof(buf), 0), ==, 0);
    g_assert_false(strata_backend_is_stopped(f.be));
    /* Bad arguments are not storage errors: the policy does not apply. */
    g_assert_cmpint(strata_backend_pread(f.be, DISK_SIZE, buf, sizeof(buf), 0), ==,
                    -EIO);
    fixture_close(&f);
}

typedef struct StopLog {
    int calls;
    int err;
    bool is_write;
    GThread *thread;
} StopLog;

static void stop_cb(void *opaque, int err, bool is_write)
{
    StopLog *s = opaque;
    s->calls++;
    s->err = err;
    s->is_write = is_write;
    s->thread = g_thread_self();
}

typedef struct Ordered {
    int order[8];
    int n;
} Ordered;

typedef struct OrderedReq {
    Ordered *log;
    int id;
    int64_t ret;
    bool done;
} OrderedReq;

static void ordered_cb(void *opaque, int64_t ret)
{
    OrderedReq *r = opaque;
    g_assert_false(r->done);
    r->ret = ret;
    r->done = true;
    r->log->order[r->log->n++] = r->id;
}

static void test_error_stop(void)
{
    Fixture f;
    StopLog log = { 0 };
    Ordered ord = { .n = 0 };
    OrderedReq req[4];
    uint8_t data[3][512], rbuf[512];
    struct iovec iov[4];

    fixture_open(&f, NULL);
    strata_backend_set_error_action(f.be, STRATA_ERROR_ACTION_REPORT,
                                    STRATA_ERROR_ACTION_STOP);
    strata_backend_set_stop_callback(f.be, stop_cb, &log);
    for (int i = 0; i < 4; i++) {
        req[i] = (OrderedReq) { .log = &ord, .id = i };
    }
    for (int i = 0; i < 3; i++) {
        memset(data[i], 0x10 + i, 512);
        iov[i] = (struct iovec) { data[i], 512 };
    }
    iov[3] = (struct iovec) { rbuf, sizeof(rbuf) };

    mem_inject_error(f.mem, REQ_WRITE, 0, 512, EIO, 1);
    g_assert_cmpint(strata_backend_aio_pwritev(f.be, 0, &iov[0], 1, 0,
                                               ordered_cb, &req[0]), ==, 0);
    while (log.calls == 0) {
        strata_context_run_once(f.ctx, true);
    }
    g_assert_cmpint(log.calls, ==, 1);
    g_assert_cmpint(log.err, ==, -EIO);
    g_assert_true(log.is_write);
    g_assert_true(log.thread == g_thread_self());
    g_assert_true(strata_backend_is_stopped(f.be));
    g_assert_false(req[0].done);

    /* Later requests park too, reads included. */
    g_assert_cmpint(strata_backend_aio_pwritev(f.be, 512, &iov[1], 1, 0,
                                               ordered_cb, &req[1]), ==, 0);
    g_assert_cmpint(strata_backend_aio_pwritev(f.be, 1024, &iov[2], 1, 0,
                                               ordered_cb, &req[2]), ==, 0);
    g_assert_cmpint(strata_backend_aio_preadv(f.be, 0, &iov[3], 1, 0,
                                              ordered_cb, &req[3]), ==, 0);
    run_idle(f.ctx);
    g_assert_cmpint(ord.n, ==, 0);
    g_assert_cmpuint(counters(&f).requests[REQ_WRITE], ==, 1);
    g_assert_cmpuint(counters(&f).requests[REQ_READ], ==, 0);

    /* A drain does not wait for parked requests. */
    strata_backend_drain_begin(f.be);
    strata_backend_drain_end(f.be);
    g_assert_cmpint(ord.n, ==, 0);

    strata_backend_resume(f.be);
    g_assert_false(strata_backend_is_stopped(f.be));
    while (ord.n < 4) {
        strata_context_run_once(f.ctx, true);
    }
    for (int i = 0; i < 4; i++) {
        g_assert_cmpint(req[i].ret, ==, 0);
        g_assert_cmpint(ord.order[i], ==, i);
    }
    g_assert_cmpint(log.calls, ==, 1);
    for (int i = 0; i < 3; i++) {
        g_assert_cmpmem(mem_get_data(f.mem) + i * 512, 512, data[i], 512);
    }
    g_assert_cmpmem(rbuf, 512, data[0], 512);
    fixture_close(&f);
}

/* Two requests fail while both are in flight: one stop, both retried. */
static void test_error_stop_once_for_many(void)
{
    Fixture f;
    StopLog log = { 0 };
    Ordered ord = { .n = 0 };
    OrderedReq req[2] = { { .log = &ord, .id = 0 }, { .log = &ord, .id = 1 } };
    uint8_t data[2][512], rbuf[512];
    struct iovec iov[2];

    fixture_open(&f, "\"latency-ns\": 1000000");
    strata_backend_set_error_action(f.be, STRATA_ERROR_ACTION_STOP,
                                    STRATA_ERROR_ACTION_STOP);
    strata_backend_set_stop_callback(f.be, stop_cb, &log);
    mem_inject_error(f.mem, REQ_READ, 0, -1, EIO, 2);
    for (int i = 0; i < 2; i++) {
        memset(data[i], 0x40 + i, 512);
        iov[i] = (struct iovec) { data[i], 512 };
    }
    g_assert_cmpint(strata_backend_pwrite(f.be, 0, data[0], 512, 0), ==, 0);
    g_assert_cmpint(strata_backend_pwrite(f.be, 512, data[1], 512, 0), ==, 0);
    iov[0] = (struct iovec) { rbuf, 512 };
    uint8_t rbuf2[512];
    iov[1] = (struct iovec) { rbuf2, 512 };
    g_assert_cmpint(strata_backend_aio_preadv(f.be, 0, &iov[0], 1, 0,
                                              ordered_cb, &req[0]), ==, 0);
    g_assert_cmpint(strata_backend_aio_preadv(f.be, 512, &iov[1], 1, 0,
                                              ordered_cb, &req[1]), ==, 0);
    while (counters(&f).errors[REQ_READ] < 2) {
        strata_context_run_once(f.ctx, true);
    }
    run_idle(f.ctx);
    g_assert_cmpint(log.calls, ==, 1);
    g_assert_false(log.is_write);
    g_assert_true(strata_backend_is_stopped(f.be));
    g_assert_cmpint(ord.n, ==, 0);

    strata_backend_resume(f.be);
    while (ord.n < 2) {
        strata_context_run_once(f.ctx, true);
    }
    g_assert_cmpint(req[0].ret, ==, 0);
    g_assert_cmpint(req[1].ret, ==, 0);
    g_assert_cmpmem(rbuf, 512, data[0], 512);
    g_assert_cmpmem(rbuf2, 512, data[1], 512);
    g_assert_cmpint(log.calls, ==, 1);
    fixture_close(&f);
}

static void test_error_enospc(void)
{
    Fixture f;
    StopLog log = { 0 };
    Ordered ord = { .n = 0 };
    OrderedReq req = { .log = &ord, .id = 0 };
    uint8_t buf[512];
    struct iovec iov = { buf, sizeof(buf) };

    fixture_open(&f, NULL);
    memset(buf, 0x99, sizeof(buf));
    strata_backend_set_error_action(f.be, STRATA_ERROR_ACTION_ENOSPC,
                                    STRATA_ERROR_ACTION_ENOSPC);
    strata_backend_set_stop_callback(f.be, stop_cb, &log);

    /* Other errors are reported. */
    mem_inject_error(f.mem, REQ_WRITE, 0, 512, EIO, 1);
    g_assert_cmpint(strata_backend_pwrite(f.be, 0, buf, sizeof(buf), 0), ==, -EIO);
    mem_inject_error(f.mem, REQ_READ, 0, 512, EIO, 1);
    g_assert_cmpint(strata_backend_pread(f.be, 0, buf, sizeof(buf), 0), ==, -EIO);
    g_assert_false(strata_backend_is_stopped(f.be));
    g_assert_cmpint(log.calls, ==, 0);

    /* ENOSPC stops. */
    memset(buf, 0x99, sizeof(buf));
    mem_inject_error(f.mem, REQ_WRITE, 0, 512, ENOSPC, 1);
    g_assert_cmpint(strata_backend_aio_pwritev(f.be, 0, &iov, 1, 0, ordered_cb,
                                               &req), ==, 0);
    while (log.calls == 0) {
        strata_context_run_once(f.ctx, true);
    }
    g_assert_cmpint(log.err, ==, -ENOSPC);
    g_assert_true(strata_backend_is_stopped(f.be));
    run_idle(f.ctx);
    g_assert_false(req.done);
    strata_backend_resume(f.be);
    while (!req.done) {
        strata_context_run_once(f.ctx, true);
    }
    g_assert_cmpint(req.ret, ==, 0);
    g_assert_cmpmem(mem_get_data(f.mem), 512, buf, 512);
    fixture_close(&f);
}

/* Resuming inside a drained section retries nothing until it ends. */
static void test_error_resume_while_drained(void)
{
    Fixture f;
    Ordered ord = { .n = 0 };
    OrderedReq req = { .log = &ord, .id = 0 };
    uint8_t buf[512];
    struct iovec iov = { buf, sizeof(buf) };

    fixture_open(&f, NULL);
    memset(buf, 0xd1, sizeof(buf));
    strata_backend_set_error_action(f.be, STRATA_ERROR_ACTION_STOP,
                                    STRATA_ERROR_ACTION_STOP);
    mem_inject_error(f.mem, REQ_WRITE, 0, 512, EIO, 1);
    g_assert_cmpint(strata_backend_aio_pwritev(f.be, 0, &iov, 1, 0, ordered_cb,
                                               &req), ==, 0);
    while (!strata_backend_is_stopped(f.be)) {
        strata_context_run_once(f.ctx, true);
    }
    strata_backend_drain_begin(f.be);
    strata_backend_resume(f.be);
    run_idle(f.ctx);
    g_assert_false(req.done);
    g_assert_cmpuint(counters(&f).requests[REQ_WRITE], ==, 1);
    /* A second drained section does not wait for it either. */
    strata_backend_drain_begin(f.be);
    strata_backend_drain_end(f.be);
    run_idle(f.ctx);
    g_assert_false(req.done);
    strata_backend_drain_end(f.be);
    while (!req.done) {
        strata_context_run_once(f.ctx, true);
    }
    g_assert_cmpint(req.ret, ==, 0);
    g_assert_cmpmem(mem_get_data(f.mem), 512, buf, 512);
    fixture_close(&f);
}

/* With a loop thread, the embedder resumes from its own thread (a
 * monitor), told by the stop callback. */
typedef struct ThreadStop {
    Mutex lock;
    Cond cond;
    int stops;
} ThreadStop;

static void thread_stop_cb(void *opaque, int err, bool is_write)
{
    ThreadStop *ts = opaque;
    mutex_lock(&ts->lock);
    ts->stops++;
    cond_broadcast(&ts->cond);
    mutex_unlock(&ts->lock);
}

static void test_error_resume_from_other_thread(void)
{
    Fixture f;
    ThreadStop ts = { .stops = 0 };
    Counter c;
    uint8_t data[4][512];
    struct iovec iov[4];

    fixture_open(&f, NULL);
    mutex_init(&ts.lock);
    cond_init(&ts.cond);
    strata_backend_set_error_action(f.be, STRATA_ERROR_ACTION_STOP,
                                    STRATA_ERROR_ACTION_STOP);
    strata_backend_set_stop_callback(f.be, thread_stop_cb, &ts);
    mem_inject_error(f.mem, REQ_WRITE, 0, 512, ENOSPC, 1);
    g_assert_true(strata_context_start_thread(f.ctx, NULL));
    counter_init(&c, f.ctx->queues[0]->thread);
    for (int i = 0; i < 4; i++) {
        memset(data[i], 0x60 + i, 512);
        iov[i] = (struct iovec) { data[i], 512 };
        g_assert_cmpint(strata_backend_aio_pwritev(f.be, i * 512, &iov[i], 1, 0,
                                                   counter_cb, &c), ==, 0);
    }
    mutex_lock(&ts.lock);
    while (ts.stops == 0) {
        cond_wait(&ts.cond, &ts.lock);
    }
    mutex_unlock(&ts.lock);
    g_assert_true(strata_backend_is_stopped(f.be));
    strata_backend_resume(f.be);
    counter_wait(&c, 4);
    strata_context_stop_thread(f.ctx);
    g_assert_false(strata_backend_is_stopped(f.be));
    g_assert_cmpint(c.failed, ==, 0);
    g_assert_cmpint(c.wrong_thread, ==, 0);
    g_assert_cmpint(ts.stops, ==, 1);
    for (int i = 0; i < 4; i++) {
        g_assert_cmpmem(mem_get_data(f.mem) + i * 512, 512, data[i], 512);
    }
    counter_clear(&c);
    mutex_cleanup(&ts.lock);
    cond_cleanup(&ts.cond);
    fixture_close(&f);
}

/* Freeing a stopped backend completes its parked requests (with their
 * errors) instead of hanging. */
static void test_error_stop_then_free(void)
{
    Fixture f;
    Ordered ord = { .n = 0 };
    OrderedReq req = { .log = &ord, .id = 0 };
    uint8_t buf[512] = { 0 };
    struct iovec iov = { buf, sizeof(buf) };

    fixture_open(&f, NULL);
    strata_backend_set_error_action(f.be, STRATA_ERROR_ACTION_STOP,
                                    STRATA_ERROR_ACTION_STOP);
    mem_inject_error(f.mem, REQ_WRITE, 0, 512, EIO, -1);
    g_assert_cmpint(strata_backend_aio_pwritev(f.be, 0, &iov, 1, 0, ordered_cb,
                                               &req), ==, 0);
    while (!strata_backend_is_stopped(f.be)) {
        strata_context_run_once(f.ctx, true);
    }
    strata_backend_free(f.be);
    g_assert_true(req.done);
    g_assert_cmpint(req.ret, ==, -EIO);
    f.be = NULL;
    fixture_close(&f);
}

/* ---- drained sections --------------------------------------------------------------- */

static void test_drain_waits_for_in_flight(void)
{
    Fixture f;
    Counter c;
    static uint8_t data[12][512];
    struct iovec iov[12];

    fixture_open(&f, "\"latency-ns\": 2000000");
    counter_init(&c, g_thread_self());
    for (int i = 0; i < 12; i++) {
        memset(data[i], i + 1, 512);
        iov[i] = (struct iovec) { data[i], 512 };
    }
    for (int i = 0; i < 8; i++) {
        g_assert_cmpint(strata_backend_aio_pwritev(f.be, i * 512, &iov[i], 1, 0,
                                                   counter_cb, &c), ==, 0);
    }
    strata_backend_drain_begin(f.be);
    g_assert_cmpint(c.done, ==, 8);
    g_assert_cmpint(counters(&f).in_flight, ==, 0);

    /* New requests wait for the end of the section ... */
    for (int i = 8; i < 12; i++) {
        g_assert_cmpint(strata_backend_aio_pwritev(f.be, i * 512, &iov[i], 1, 0,
                                                   counter_cb, &c), ==, 0);
    }
    gint64 until = g_get_monotonic_time() + 10000;
    while (g_get_monotonic_time() < until) {
        strata_context_run_once(f.ctx, false);
    }
    g_assert_cmpint(c.done, ==, 8);
    g_assert_cmpuint(counters(&f).requests[REQ_WRITE], ==, 8);

    /* ... and then complete. */
    strata_backend_drain_end(f.be);
    while (c.done < 12) {
        strata_context_run_once(f.ctx, true);
    }
    g_assert_cmpint(c.failed, ==, 0);
    for (int i = 0; i < 12; i++) {
        g_assert_cmpmem(mem_get_data(f.mem) + i * 512, 512, data[i], 512);
    }
    counter_clear(&c);
    fixture_close(&f);
}

/* Nested sections: requests wait until the outermost ends. */
static void test_drain_nested(void)
{
    Fixture f;
    Counter c;
    uint8_t buf[512] = { 9 };
    struct iovec iov = { buf, sizeof(buf) };

    fixture_open(&f, NULL);
    counter_init(&c, NULL);
    strata_backend_drain_begin(f.be);
    strata_backend_drain_begin(f.be);
    g_assert_cmpint(strata_backend_aio_pwritev(f.be, 0, &iov, 1, 0, counter_cb, &c),
                    ==, 0);
    run_idle(f.ctx);
    strata_backend_drain_end(f.be);
    run_idle(f.ctx);
    g_assert_cmpint(c.done, ==, 0);
    strata_backend_drain_end(f.be);
    while (c.done < 1) {
        strata_context_run_once(f.ctx, true);
    }
    counter_clear(&c);
    fixture_close(&f);
}

/* The same from a thread other than the loop's. */
static void test_drain_from_other_thread(void)
{
    Fixture f;
    Counter c;
    static uint8_t data[12][512];
    struct iovec iov[12];

    fixture_open(&f, "\"latency-ns\": 2000000");
    g_assert_true(strata_context_start_thread(f.ctx, NULL));
    counter_init(&c, f.ctx->queues[0]->thread);
    for (int i = 0; i < 12; i++) {
        memset(data[i], 0x80 + i, 512);
        iov[i] = (struct iovec) { data[i], 512 };
    }
    for (int i = 0; i < 8; i++) {
        g_assert_cmpint(strata_backend_aio_pwritev(f.be, i * 512, &iov[i], 1, 0,
                                                   counter_cb, &c), ==, 0);
    }
    strata_backend_drain_begin(f.be);
    g_assert_cmpint(counter_get(&c), ==, 8);
    for (int i = 8; i < 12; i++) {
        g_assert_cmpint(strata_backend_aio_pwritev(f.be, i * 512, &iov[i], 1, 0,
                                                   counter_cb, &c), ==, 0);
    }
    g_usleep(10000);
    g_assert_cmpint(counter_get(&c), ==, 8);
    strata_backend_drain_end(f.be);
    counter_wait(&c, 12);
    strata_context_stop_thread(f.ctx);
    g_assert_cmpint(c.failed, ==, 0);
    g_assert_cmpint(c.wrong_thread, ==, 0);
    for (int i = 0; i < 12; i++) {
        g_assert_cmpmem(mem_get_data(f.mem) + i * 512, 512, data[i], 512);
    }
    counter_clear(&c);
    fixture_close(&f);
}

/* Freeing a backend inside a drained section the embedder never ended
 * still completes what was submitted: every callback runs once. */
static void test_drain_free_inside_section(void)
{
    Fixture f;
    Counter c;
    uint8_t buf[512];
    struct iovec iov = { buf, sizeof(buf) };

    fixture_open(&f, NULL);
    memset(buf, 0x2b, sizeof(buf));
    counter_init(&c, NULL);
    strata_backend_drain_begin(f.be);
    g_assert_cmpint(strata_backend_aio_pwritev(f.be, 0, &iov, 1, 0, counter_cb, &c),
                    ==, 0);
    g_assert_cmpint(strata_backend_aio_flush(f.be, counter_cb, &c), ==, 0);
    run_idle(f.ctx);
    g_assert_cmpint(c.done, ==, 0);
    strata_backend_free(f.be);
    f.be = NULL;
    g_assert_cmpint(c.done, ==, 2);
    g_assert_cmpint(c.failed, ==, 0);
    g_assert_cmpmem(mem_get_data(f.mem), 512, buf, 512);
    counter_clear(&c);
    fixture_close(&f);
}

/*
 * A backend freed inside a drained section gives back its share of the
 * root node's quiesce counter: a blkdebug filter on that node must not
 * behave as if it were drained for ever after (it lets every breakpoint go
 * while drained), so a breakpoint set through a second backend holds.
 */
static void test_drain_free_inside_section_unquiesces_root(void)
{
    g_autoptr(StrataError) err = NULL;
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *bd = strata_node_open_json(ctx,
        "{\"driver\": \"blkdebug\", \"node-name\": \"bd\","
        " \"image\": {\"driver\": \"mem\", \"size\": 65536}}", &err);
    g_assert_nonnull(bd);
    StrataBackend *be1 = strata_backend_new(bd, "vda", STRATA_PERM_ALL,
                                            STRATA_PERM_ALL, &err);
    StrataBackend *be2 = strata_backend_new(bd, "vdb", STRATA_PERM_ALL,
                                            STRATA_PERM_ALL, &err);
    uint8_t buf[512];
    struct iovec iov = { buf, sizeof(buf) };
    Counter c;

    g_assert_nonnull(be1);
    g_assert_nonnull(be2);
    strata_backend_drain_begin(be1);
    strata_backend_free(be1);
    g_assert_cmpint(bd->quiesce_counter, ==, 0);

    memset(buf, 0x3c, sizeof(buf));
    counter_init(&c, NULL);
    g_assert_true(blkdebug_break(bd, "pwritev", "A", &err));
    g_assert_cmpint(strata_backend_aio_pwritev(be2, 0, &iov, 1, 0, counter_cb, &c),
                    ==, 0);
    run_idle(ctx);
    g_assert_true(blkdebug_is_suspended(bd, "A"));
    g_assert_cmpint(c.done, ==, 0);
    g_assert_true(blkdebug_resume(bd, "A", &err));
    run_idle(ctx);
    g_assert_cmpint(c.done, ==, 1);
    g_assert_cmpint(c.failed, ==, 0);
    counter_clear(&c);
    strata_backend_free(be2);
    strata_node_unref(bd);
    strata_context_free(ctx);
}

/* ---- threads ------------------------------------------------------------------------- */

#define SUBMITTERS 4
#if defined(__SANITIZE_THREAD__)
/* Each request in flight is a coroutine, and under ThreadSanitizer each
 * coroutine is a fiber with its own mappings: 8,000 at once exhaust them,
 * and creating hundreds is slow. */
#define REQS_PER_THREAD 64
#else
#define REQS_PER_THREAD 2000
#endif
#define BLOCK 128   /* SUBMITTERS * REQS_PER_THREAD * BLOCK == DISK_SIZE */

typedef struct Submitter {
    StrataBackend *be;
    int index;
    guint64 seed;
    uint8_t *wbuf, *rbuf;           /* REQS_PER_THREAD blocks each */
    struct iovec *iov;
    int64_t *offset;
    Counter *c;
} Submitter;

G_STATIC_ASSERT(SUBMITTERS * REQS_PER_THREAD * BLOCK <= DISK_SIZE);

static gpointer submitter_thread(gpointer opaque)
{
    Submitter *s = opaque;
    GRand *rand = g_rand_new_with_seed((guint32)(s->seed * 7919 + (guint64)s->index));

    /* Each thread owns the blocks congruent to its index; the order is
     * shuffled so that requests from different threads interleave. */
    for (int i = 0; i < REQS_PER_THREAD; i++) {
        s->offset[i] = ((int64_t)i * SUBMITTERS + s->index) * BLOCK;
    }
    for (int i = REQS_PER_THREAD - 1; i > 0; i--) {
        int j = g_rand_int_range(rand, 0, i + 1);
        int64_t t = s->offset[i];
        s->offset[i] = s->offset[j];
        s->offset[j] = t;
    }
    for (int i = 0; i < REQS_PER_THREAD * BLOCK; i++) {
        s->wbuf[i] = (uint8_t)g_rand_int(rand);
    }
    g_rand_free(rand);

    for (int i = 0; i < REQS_PER_THREAD; i++) {
        s->iov[i] = (struct iovec) { s->wbuf + i * BLOCK, BLOCK };
        g_assert_cmpint(strata_backend_aio_pwritev(s->be, s->offset[i], &s->iov[i],
                                                   1, 0, counter_cb, s->c), ==, 0);
    }
    counter_wait(s->c, REQS_PER_THREAD);
    for (int i = 0; i < REQS_PER_THREAD; i++) {
        s->iov[i] = (struct iovec) { s->rbuf + i * BLOCK, BLOCK };
        g_assert_cmpint(strata_backend_aio_preadv(s->be, s->offset[i], &s->iov[i],
                                                  1, 0, counter_cb, s->c), ==, 0);
    }
    counter_wait(s->c, 2 * REQS_PER_THREAD);
    return NULL;
}

static void test_threads_callback_submission(void)
{
    Fixture f;
    Submitter sub[SUBMITTERS];
    Counter c[SUBMITTERS];
    GThread *threads[SUBMITTERS];
    g_autofree char *opts = g_strdup_printf(
        "\"random-order\": true, \"seed\": %" G_GUINT64_FORMAT, test_seed);

    fixture_open(&f, opts);
    g_test_message("seed %" G_GUINT64_FORMAT " (STRATA_TEST_SEED)", test_seed);
    g_assert_true(strata_context_start_thread(f.ctx, NULL));
    for (int t = 0; t < SUBMITTERS; t++) {
        counter_init(&c[t], f.ctx->queues[0]->thread);
        sub[t] = (Submitter) {
            .be = f.be, .index = t, .seed = test_seed, .c = &c[t],
            .wbuf = g_malloc(REQS_PER_THREAD * BLOCK),
            .rbuf = g_malloc0(REQS_PER_THREAD * BLOCK),
            .iov = g_new(struct iovec, REQS_PER_THREAD),
            .offset = g_new(int64_t, REQS_PER_THREAD),
        };
    }
    for (int t = 0; t < SUBMITTERS; t++) {
        threads[t] = g_thread_new("submitter", submitter_thread, &sub[t]);
    }
    for (int t = 0; t < SUBMITTERS; t++) {
        g_thread_join(threads[t]);
    }
    strata_context_stop_thread(f.ctx);

    for (int t = 0; t < SUBMITTERS; t++) {
        Submitter *s = &sub[t];
        if (c[t].failed || c[t].wrong_thread) {
            g_error("seed %" G_GUINT64_FORMAT ": thread %d: %d failed, %d "
                    "completions outside the loop thread", test_seed, t,
                    c[t].failed, c[t].wrong_thread);
        }
        g_assert_cmpint(c[t].done, ==, 2 * REQS_PER_THREAD);
        for (int i = 0; i < REQS_PER_THREAD; i++) {
            const uint8_t *want = s->wbuf + i * BLOCK;
            if (memcmp(s->rbuf + i * BLOCK, want, BLOCK) ||
                memcmp(mem_get_data(f.mem) + s->offset[i], want, BLOCK)) {
                g_error("seed %" G_GUINT64_FORMAT ": thread %d, offset %" PRId64
                        ": data differs", test_seed, t, s->offset[i]);
            }
        }
        g_free(s->wbuf);
        g_free(s->rbuf);
        g_free(s->iov);
        g_free(s->offset);
        counter_clear(&c[t]);
    }
    g_assert_cmpuint(counters(&f).requests[REQ_WRITE], ==, SUBMITTERS * REQS_PER_THREAD);
    g_assert_cmpuint(counters(&f).limit_violations, ==, 0);
    fixture_close(&f);
}

typedef struct BlockingJob {
    StrataBackend *be;
    int index;
    int errors;
} BlockingJob;

static gpointer blocking_thread(gpointer opaque)
{
    BlockingJob *j = opaque;
    uint8_t wbuf[4096], rbuf[4096];

    for (int i = 0; i < 200; i++) {
        int64_t offset = ((int64_t)i * 4 + j->index) * 4096 % DISK_SIZE;
        fill_pattern(wbuf, sizeof(wbuf), (unsigned)(i * 10 + j->index));
        if (strata_backend_pwrite(j->be, offset, wbuf, sizeof(wbuf), 0) != 0 ||
            strata_backend_pread(j->be, offset, rbuf, sizeof(rbuf), 0) != 0 ||
            memcmp(wbuf, rbuf, sizeof(rbuf))) {
            j->errors++;
        }
    }
    if (strata_backend_flush(j->be) != 0 ||
        strata_backend_get_length(j->be) != DISK_SIZE) {
        j->errors++;
    }
    return NULL;
}

static void test_threads_blocking_while_loop_thread_runs(void)
{
    Fixture f;
    BlockingJob jobs[3];
    GThread *threads[3];
    uint8_t buf[8192], rbuf[8192];

    fixture_open(&f, "\"latency-ns\": 10000");
    g_assert_true(strata_context_start_thread(f.ctx, NULL));

    /* From the test's own thread, which no longer runs the loop. */
    fill_pattern(buf, sizeof(buf), 42);
    g_assert_cmpint(strata_backend_pwrite(f.be, 3 * 4096 + 100, buf, sizeof(buf), 0),
                    ==, 0);
    g_assert_cmpint(strata_backend_pread(f.be, 3 * 4096 + 100, rbuf, sizeof(rbuf), 0),
                    ==, 0);
    g_assert_cmpmem(buf, sizeof(buf), rbuf, sizeof(rbuf));
    g_assert_cmpint(strata_backend_pwrite(f.be, DISK_SIZE, buf, 1, 0), ==, -EIO);

    /* And from several at once. */
    for (int t = 0; t < 3; t++) {
        jobs[t] = (BlockingJob) { .be = f.be, .index = t };
        threads[t] = g_thread_new("blocking", blocking_thread, &jobs[t]);
    }
    for (int t = 0; t < 3; t++) {
        g_thread_join(threads[t]);
        g_assert_cmpint(jobs[t].errors, ==, 0);
    }
    strata_context_stop_thread(f.ctx);
    /* The loop is back with the test's thread. */
    g_assert_cmpint(strata_backend_pread(f.be, 3 * 4096 + 100, rbuf, 100, 0), ==, 0);
    g_assert_cmpmem(buf, 100, rbuf, 100);
    fixture_close(&f);
}

/* ---- bad requests ---------------------------------------------------------------------- */

static void test_range_past_end(void)
{
    Fixture f;
    uint8_t buf[1024] = { 0 };
    StopLog log = { 0 };

    fixture_open(&f, NULL);
    /* A stop policy must not turn argument errors into a stop. */
    strata_backend_set_error_action(f.be, STRATA_ERROR_ACTION_STOP,
                                    STRATA_ERROR_ACTION_STOP);
    strata_backend_set_stop_callback(f.be, stop_cb, &log);
    for (Form form = 0; form < FORM__MAX; form++) {
        g_test_message("form %s", form_names[form]);
        g_assert_cmpint(run_request(&f, form, OP_READ, DISK_SIZE - 512, 1024, buf, 0),
                        ==, -EIO);
        g_assert_cmpint(run_request(&f, form, OP_WRITE, DISK_SIZE - 512, 1024, buf, 0),
                        ==, -EIO);
        g_assert_cmpint(run_request(&f, form, OP_READ, DISK_SIZE + 512, 512, buf, 0),
                        ==, -EIO);
        g_assert_cmpint(run_request(&f, form, OP_ZEROES, DISK_SIZE, 512, NULL, 0),
                        ==, -EIO);
        g_assert_cmpint(run_request(&f, form, OP_DISCARD, 0, DISK_SIZE + 1, NULL, 0),
                        ==, -EIO);
        g_assert_cmpint(run_request(&f, form, OP_READ, -512, 512, buf, 0), ==, -EINVAL);
        g_assert_cmpint(run_request(&f, form, OP_ZEROES, 0, -1, NULL, 0), ==, -EINVAL);
        /* An end beyond INT64_MAX is past the device too. */
        g_assert_cmpint(run_request(&f, form, OP_ZEROES, INT64_MAX - 10, 512, NULL, 0),
                        ==, -EIO);
        /* Up to the end, and empty at the end, are fine. */
        g_assert_cmpint(run_request(&f, form, OP_READ, DISK_SIZE - 1024, 1024, buf, 0),
                        ==, 0);
        g_assert_cmpint(run_request(&f, form, OP_READ, DISK_SIZE, 0, buf, 0), ==, 0);
    }
    g_assert_cmpuint(counters(&f).requests[REQ_WRITE], ==, 0);
    g_assert_cmpuint(counters(&f).requests[REQ_ZEROES], ==, 0);
    g_assert_cmpuint(counters(&f).requests[REQ_DISCARD], ==, 0);
    g_assert_false(strata_backend_is_stopped(f.be));
    g_assert_cmpint(log.calls, ==, 0);
    fixture_close(&f);
}

static void test_bad_vectors(void)
{
    Fixture f;
    uint8_t buf[512];
    struct iovec iov = { buf, sizeof(buf) };
    struct iovec huge[2] = { { buf, SIZE_MAX / 2 }, { buf, SIZE_MAX / 2 } };
    g_autofree struct iovec *many = g_new0(struct iovec, 65537);
    Request r = { 0 };

    fixture_open(&f, NULL);
    g_assert_cmpint(strata_backend_preadv(f.be, 0, &iov, -1, 0), ==, -EINVAL);
    g_assert_cmpint(strata_backend_pwritev(f.be, 0, &iov, -1, 0), ==, -EINVAL);
    g_assert_cmpint(strata_backend_preadv(f.be, 0, NULL, 1, 0), ==, -EINVAL);
    g_assert_cmpint(strata_backend_pwritev(f.be, 0, NULL, 3, 0), ==, -EINVAL);
    g_assert_cmpint(strata_backend_preadv(f.be, 0, huge, 2, 0), ==, -EINVAL);
    g_assert_cmpint(strata_backend_pwritev(f.be, 0, huge, 1, 0), ==, -EINVAL);
    g_assert_cmpint(strata_backend_preadv(f.be, 0, many, 65537, 0), ==, -EINVAL);
    /* No elements is an empty request. */
    g_assert_cmpint(strata_backend_preadv(f.be, 0, NULL, 0, 0), ==, 0);
    g_assert_cmpint(strata_backend_pwritev(f.be, 0, many, 1024, 0), ==, 0);

    /* The callback form reports the same through the callback. */
    struct iovec *bad[] = { &iov, NULL, huge };
    int niov[] = { -1, 1, 2 };
    for (unsigned i = 0; i < G_N_ELEMENTS(niov); i++) {
        r = (Request) { 0 };
        g_assert_cmpint(strata_backend_aio_preadv(f.be, 0, bad[i], niov[i], 0,
                                                  request_cb, &r), ==, 0);
        while (!r.done) {
            strata_context_run_once(f.ctx, true);
        }
        g_assert_cmpint(r.calls, ==, 1);
        g_assert_cmpint(r.ret, ==, -EINVAL);
        r = (Request) { 0 };
        g_assert_cmpint(strata_backend_aio_pwritev(f.be, 0, bad[i], niov[i], 0,
                                                   request_cb, &r), ==, 0);
        while (!r.done) {
            strata_context_run_once(f.ctx, true);
        }
        g_assert_cmpint(r.ret, ==, -EINVAL);
    }
    g_assert_cmpuint(counters(&f).requests[REQ_READ], ==, 0);
    g_assert_cmpuint(counters(&f).requests[REQ_WRITE], ==, 0);
    fixture_close(&f);
}


/* ---- control calls while the loop thread runs ---------------------------- */

typedef struct HotPlug {
    StrataContext *ctx;
    StrataNode *node;
    StrataBackend *be;
    bool ran_in_loop_thread;
    GThread *caller;
} HotPlug;

static void hotplug_open(void *opaque)
{
    HotPlug *h = opaque;
    StrataError *err = NULL;
    h->ran_in_loop_thread = g_thread_self() != h->caller;
    h->node = strata_node_open_json(h->ctx,
        "{\"driver\": \"mem\", \"size\": 65536, \"align\": 512}", &err);
    g_assert_nonnull(h->node);
    h->be = strata_backend_new(h->node, "hot",
                               STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE,
                               STRATA_PERM_ALL, &err);
    g_assert_nonnull(h->be);
    strata_node_unref(h->node);
}

static void hotplug_close(void *opaque)
{
    HotPlug *h = opaque;
    strata_backend_free(h->be);
    h->be = NULL;
}

static void test_context_call_hotplug(void)
{
    StrataError *err = NULL;
    HotPlug h = { .caller = g_thread_self() };
    uint8_t buf[1000], back[1000];

    h.ctx = strata_context_new(&err);
    g_assert_nonnull(h.ctx);
    g_assert_true(strata_context_start_thread(h.ctx, &err));

    strata_context_call(h.ctx, hotplug_open, &h);
    g_assert_true(h.ran_in_loop_thread);
    memset(buf, 0x5a, sizeof(buf));
    g_assert_cmpint(strata_backend_pwrite(h.be, 333, buf, sizeof(buf), 0), ==, 0);
    g_assert_cmpint(strata_backend_pread(h.be, 333, back, sizeof(back), 0), ==, 0);
    g_assert_cmpmem(buf, sizeof(buf), back, sizeof(back));
    strata_context_call(h.ctx, hotplug_close, &h);
    g_assert_null(h.be);

    strata_context_stop_thread(h.ctx);
    strata_context_free(h.ctx);
}


/* A file node opened with io_uring before the loop moves to its own thread
 * keeps working there (the ring must not depend on the opening thread). */
static void test_uring_node_then_loop_thread(void)
{
    StrataError *err = NULL;
    char path[] = "/var/tmp/strata-test-uring-XXXXXX";
    int fd = mkstemp(path);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, 1 << 20), ==, 0);
    close(fd);

    StrataContext *ctx = strata_context_new(&err);
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\", \"aio\": \"io_uring\"}", path);
    StrataNode *node = strata_node_open_json(ctx, json, &err);
    if (!node) {
        g_test_skip_printf("io_uring unavailable: %s", strata_error_get_message(err));
        strata_error_free(err);
        strata_context_free(ctx);
        unlink(path);
        return;
    }
    StrataBackend *be = strata_backend_new(node, "u",
                                           STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE,
                                           STRATA_PERM_ALL, &err);
    g_assert_nonnull(be);
    strata_node_unref(node);
    g_assert_true(strata_context_start_thread(ctx, &err));

    uint8_t buf[700], back[700];
    memset(buf, 0x6b, sizeof(buf));
    g_assert_cmpint(strata_backend_pwrite(be, 4097, buf, sizeof(buf), 0), ==, 0);
    g_assert_cmpint(strata_backend_pread(be, 4097, back, sizeof(back), 0), ==, 0);
    g_assert_cmpmem(buf, sizeof(buf), back, sizeof(back));

    strata_context_stop_thread(ctx);
    strata_backend_free(be);
    strata_context_free(ctx);
    unlink(path);
}

int main(int argc, char **argv)
{
    static FormOp form_ops[FORM__MAX][OP__MAX];
    const char *seed_env = getenv("STRATA_TEST_SEED");

    g_test_init(&argc, &argv, NULL);
    if (seed_env) {
        test_seed = g_ascii_strtoull(seed_env, NULL, 0);
    }

    for (Form form = 0; form < FORM__MAX; form++) {
        for (Op op = 0; op < OP__MAX; op++) {
            g_autofree char *path = g_strdup_printf("/backend/%s/%s",
                                                    form_names[form], op_names[op]);
            form_ops[form][op] = (FormOp) { form, op };
            g_test_add_data_func(path, &form_ops[form][op], test_form_op);
        }
    }
    g_test_add_func("/backend/callback/null-callback-refused", test_aio_null_callback);
    g_test_add_func("/backend/callback/submit-from-callback",
                    test_aio_submit_from_callback);
    g_test_add_func("/backend/write-cache/writethrough-sets-fua", test_writethrough);
    g_test_add_func("/backend/error/report", test_error_report);
    g_test_add_func("/backend/error/ignore", test_error_ignore);
    g_test_add_func("/backend/error/stop-parks-and-resumes-in-order",
                    test_error_stop);
    g_test_add_func("/backend/error/stop-fires-once-for-many",
                    test_error_stop_once_for_many);
    g_test_add_func("/backend/error/enospc", test_error_enospc);
    g_test_add_func("/backend/error/free-while-stopped", test_error_stop_then_free);
    g_test_add_func("/backend/error/resume-inside-drained-section",
                    test_error_resume_while_drained);
    g_test_add_func("/backend/error/resume-from-other-thread",
                    test_error_resume_from_other_thread);
    g_test_add_func("/backend/drain/waits-for-in-flight",
                    test_drain_waits_for_in_flight);
    g_test_add_func("/backend/drain/nested", test_drain_nested);
    g_test_add_func("/backend/drain/from-other-thread", test_drain_from_other_thread);
    g_test_add_func("/backend/drain/free-inside-section",
                    test_drain_free_inside_section);
    g_test_add_func("/backend/drain/free-inside-section-unquiesces-root",
                    test_drain_free_inside_section_unquiesces_root);
    g_test_add_func("/backend/threads/callback-submission",
                    test_threads_callback_submission);
    g_test_add_func("/backend/threads/blocking-while-loop-thread-runs",
                    test_threads_blocking_while_loop_thread_runs);
    g_test_add_func("/backend/request/past-the-end", test_range_past_end);
    g_test_add_func("/backend/request/bad-vectors", test_bad_vectors);
    g_test_add_func("/backend/threads/context-call-hotplug", test_context_call_hotplug);
    g_test_add_func("/backend/threads/io-uring-node-then-loop-thread",
                    test_uring_node_then_loop_thread);
    return g_test_run();
}
