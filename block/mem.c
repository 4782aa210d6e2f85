/*
 * mem: a RAM-backed protocol driver that behaves like a strict O_DIRECT disk
 * SPDX-License-Identifier: MIT
 *
 * The device's bytes live in one anonymous mapping, so a large device costs
 * only the pages that are written (the kernel zero-fills the rest lazily;
 * zeroing and discard give whole pages back) and an allocation failure is
 * an error return rather than an abort.
 * Allocation status is kept per MEM_CHUNK_SIZE chunk in two bitmaps, also
 * anonymous mappings:
 *
 *   alloc  data   status            reads as
 *     0      0    unallocated       zeroes   (never written, discarded,
 *                                             zeroed with REQ_MAY_UNMAP)
 *     1      0    allocated zeroes  zeroes   (zeroed without unmap,
 *                                             preallocated by truncate)
 *     1      1    data              anything (written)
 *
 * Invariant: a chunk whose data bit is clear holds only zero bytes.  A
 * request that covers a chunk only partly therefore leaves a data chunk a
 * data chunk (its other bytes may be non-zero) and leaves a zero chunk a
 * zero chunk when it zeroes.
 *
 * Requests are checked against the limits the node was opened with, not
 * against node->bl: the driver is the device, and node->bl is what the
 * request path believes about it.  A mismatch must show up as a violation.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "block/block-int.h"
#include "block/drivers.h"
#include "block/mem.h"

/* Anonymous mapping; len is the mapped length (page multiple), 0 = none. */
typedef struct MemRegion {
    void *p;
    size_t len;
} MemRegion;

typedef struct MemErrorRule {
    BlockReqType type;
    int64_t offset, end;            /* end = INT64_MAX for "to the end" */
    int errnum;
    int count;                      /* -1 forever, else remaining */
} MemErrorRule;

typedef struct MemState {
    MemRegion data;
    MemRegion alloc_bm;             /* uint64_t words */
    MemRegion data_bm;
    int64_t size;

    /* limits and behaviour, from the options */
    uint32_t align;
    uint32_t mem_align;
    uint32_t iov_len_align;
    int64_t max_transfer;
    int max_iov;
    int64_t latency_ns;
    bool random_order;
    bool fua;
    bool zeroes;
    GRand *rand;

    GArray *rules;                  /* MemErrorRule */
    int length_errno;               /* get_length fails with it when set */
    MemCounters counters;
    char last_violation[128];
    MemTraceEntry trace[MEM_TRACE_SIZE];
    uint64_t trace_total;
    /* Requests of several queues (threads) meet here: everything above
     * and the data are guarded by @lock, held for the bookkeeping and the
     * copy, never across the latency. */
    Mutex lock;
} MemState;

/* ---- mappings ------------------------------------------------------------ */

static size_t page_round(uint64_t bytes)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return ROUND_UP((size_t)bytes, page);
}

/*
 * Resize @r to hold @bytes.  New pages read as zero (fresh anonymous
 * memory); on shrinking, the kept part of the last page is the caller's to
 * clear.  Returns 0 or -errno, leaving @r unchanged on failure.
 */
static int region_resize(MemRegion *r, uint64_t bytes)
{
    size_t len;
    void *p;

    if (bytes > SIZE_MAX / 2) {
        return -ENOMEM;
    }
    len = page_round(bytes);
    if (len == r->len) {
        return 0;
    }
    if (len == 0) {
        munmap(r->p, r->len);
        r->p = NULL;
        r->len = 0;
        return 0;
    }
    if (r->len == 0) {
        /* MAP_NORESERVE: a mem disk is sparse until written, like a file. */
        p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    } else {
        p = mremap(r->p, r->len, len, MREMAP_MAYMOVE);
    }
    if (p == MAP_FAILED) {
        return -errno;
    }
    r->p = p;
    r->len = len;
    return 0;
}

static void region_free(MemRegion *r)
{
    if (r->len) {
        munmap(r->p, r->len);
    }
    r->p = NULL;
    r->len = 0;
}

/* ---- chunk bitmaps ----------------------------------------------------------- */

static int64_t mem_nchunks(int64_t size)
{
    return (size + MEM_CHUNK_SIZE - 1) / MEM_CHUNK_SIZE;
}

static uint64_t bm_bytes(int64_t nchunks)
{
    return (uint64_t)(nchunks + 63) / 64 * sizeof(uint64_t);
}

static void bm_assign(uint64_t *bm, int64_t start, int64_t end, bool set)
{
    while (start < end) {
        int64_t w = start / 64;
        int bit = start % 64;
        int n = (int)MIN((int64_t)64 - bit, end - start);
        uint64_t mask = (n == 64 ? ~0ull : ((1ull << n) - 1)) << bit;

        if (set) {
            bm[w] |= mask;
        } else {
            bm[w] &= ~mask;
        }
        start += n;
    }
}

static bool bm_test(const uint64_t *bm, int64_t i)
{
    return bm[i / 64] >> (i % 64) & 1;
}

/* First chunk in [start, end) whose (alloc, data) pair differs from the
 * pair of chunk @start; @end if none.  Scans a word at a time. */
static int64_t mem_chunk_run_end(MemState *s, int64_t start, int64_t end)
{
    const uint64_t *abm = s->alloc_bm.p, *dbm = s->data_bm.p;
    uint64_t want_a = bm_test(abm, start) ? ~0ull : 0;
    uint64_t want_d = bm_test(dbm, start) ? ~0ull : 0;
    int64_t i = start;

    while (i < end) {
        int64_t w = i / 64;
        uint64_t diff = ((abm[w] ^ want_a) | (dbm[w] ^ want_d)) >> (i % 64);

        if (diff) {
            return MIN(i + __builtin_ctzll(diff), end);
        }
        i = (w + 1) * 64;
    }
    return end;
}

/* Chunks [first, end) that [offset, offset + bytes) covers completely.
 * The last chunk counts as covered when the range reaches the device's
 * end, since its bytes past the end do not exist. */
static void mem_full_chunks(MemState *s, int64_t offset, int64_t bytes,
                            int64_t *first, int64_t *end)
{
    int64_t req_end = offset + bytes;

    *first = ROUND_UP(offset, (int64_t)MEM_CHUNK_SIZE) / MEM_CHUNK_SIZE;
    *end = req_end == s->size ? mem_nchunks(s->size)
                              : req_end / MEM_CHUNK_SIZE;
}

/* ---- checks, counters, trace -------------------------------------------------- */

static MemState *mem_state(StrataNode *node)
{
    g_assert(node->drv == &bdrv_mem);
    return node->opaque;
}

/* Count a violation and remember why; returns false for the caller's
 * "fits?" answer. */
static bool mem_violation(MemState *s, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);

static bool mem_violation(MemState *s, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_vsnprintf(s->last_violation, sizeof(s->last_violation), fmt, ap);
    va_end(ap);
    s->counters.limit_violations++;
    return false;
}

/*
 * Does this request fit the device?  Range and alignment apply to every
 * type but flush; the vector limits to reads and writes.  Zero-length
 * vector elements are skipped by the alignment checks as Linux does for
 * O_DIRECT, but they count towards max-iov.
 */
static bool mem_check(MemState *s, BlockReqType type, int64_t offset,
                      int64_t bytes, const IOVector *qiov, int flags)
{
    bool rw = type == REQ_READ || type == REQ_WRITE;

    if (type == REQ_FLUSH) {
        return true;
    }
    if (offset < 0 || bytes < 0 || offset > s->size ||
        bytes > s->size - offset) {
        return mem_violation(s, "range %" PRId64 "+%" PRId64
                             " outside the device (%" PRId64 " bytes)",
                             offset, bytes, s->size);
    }
    if (!IS_ALIGNED(offset, (int64_t)s->align) ||
        !IS_ALIGNED(bytes, (int64_t)s->align)) {
        return mem_violation(s, "range %" PRId64 "+%" PRId64
                             " not aligned to %" PRIu32,
                             offset, bytes, s->align);
    }
    if ((flags & REQ_FUA) && !s->fua &&
        (type == REQ_WRITE || type == REQ_ZEROES)) {
        return mem_violation(s, "FUA sent to a device without FUA");
    }
    if (!rw) {
        return true;
    }
    if (bytes > BLOCK_MAX_RW_BYTES ||
        (s->max_transfer && bytes > s->max_transfer)) {
        return mem_violation(s, "%" PRId64 " bytes exceed max-transfer %"
                             PRId64, bytes, s->max_transfer);
    }
    if (!qiov) {
        return bytes == 0 ? true : mem_violation(s, "no vector");
    }
    if (qiov->size != (size_t)bytes) {
        return mem_violation(s, "vector of %zu bytes for a %" PRId64
                             "-byte request", qiov->size, bytes);
    }
    if (qiov->niov > s->max_iov) {
        return mem_violation(s, "%d elements exceed max-iov %d",
                             qiov->niov, s->max_iov);
    }
    for (int i = 0; i < qiov->niov; i++) {
        const struct iovec *e = &qiov->iov[i];

        if (!e->iov_len) {
            continue;
        }
        if (!IS_ALIGNED((uintptr_t)e->iov_base, (uintptr_t)s->mem_align)) {
            return mem_violation(s, "element %d at %p not aligned to %" PRIu32,
                                 i, e->iov_base, s->mem_align);
        }
        if (!IS_ALIGNED(e->iov_len, (size_t)s->iov_len_align)) {
            return mem_violation(s, "element %d length %zu not a multiple "
                                 "of %" PRIu32, i, e->iov_len,
                                 s->iov_len_align);
        }
    }
    return true;
}

static void mem_trace_add(MemState *s, BlockReqType type, int64_t offset,
                          int64_t bytes, const IOVector *qiov, int flags,
                          bool violation)
{
    s->trace[s->trace_total % MEM_TRACE_SIZE] = (MemTraceEntry) {
        .type = type,
        .offset = offset,
        .bytes = bytes,
        .niov = qiov ? qiov->niov : 0,
        .flags = flags,
        .violation = violation,
    };
    s->trace_total++;
}

/* -errnum of the first live rule matching the request, else 0. */
static int mem_injected_error(MemState *s, BlockReqType type, int64_t offset,
                              int64_t bytes)
{
    for (guint i = 0; i < s->rules->len; i++) {
        MemErrorRule *r = &g_array_index(s->rules, MemErrorRule, i);

        if (r->type != type || r->count == 0) {
            continue;
        }
        /* A zero-length request overlaps a rule when it sits inside it. */
        if (type != REQ_FLUSH &&
            !(offset < r->end && r->offset < offset + MAX(bytes, 1))) {
            continue;
        }
        if (r->count > 0) {
            r->count--;
        }
        return -r->errnum;
    }
    return 0;
}

/*
 * The device "working": latency, and with random-order a seeded number of
 * loop iterations and a random share of the latency, so that concurrent
 * requests complete in an order unrelated to their arrival.  The draws
 * happen before the first yield, in arrival order, so one seed and one
 * arrival order give one completion order.
 */
static void mem_co_delay(MemState *s)
{
    int yields = 0;
    int64_t sleep_ns = s->latency_ns;

    if (s->random_order) {
        yields = g_rand_int_range(s->rand, 0, 4);
        if (s->latency_ns) {
            sleep_ns = (int64_t)(g_rand_double(s->rand) *
                                 (double)(s->latency_ns + 1));
            sleep_ns = MIN(sleep_ns, s->latency_ns);
        }
    }
    mutex_unlock(&s->lock);
    for (int i = 0; i < yields; i++) {
        loop_co_wake(co_self());
        co_yield();
    }
    if (sleep_ns > 0) {
        co_sleep_ns(sleep_ns);
    }
    mutex_lock(&s->lock);
}

/*
 * Common frame of every data-path request: account, check, delay, then
 * fail with an injected error or return 0 for the caller to do the work.
 * A request that breaks the limits fails at once, without delay: it is a
 * bug in the layer above, not an I/O error.
 */
static int mem_co_begin(MemState *s, BlockReqType type, int64_t offset,
                        int64_t bytes, const IOVector *qiov, int flags)
{
    MemCounters *c = &s->counters;
    bool ok;
    int ret;

    mutex_lock(&s->lock);
    c->requests[type]++;
    c->bytes[type] += bytes > 0 ? (uint64_t)bytes : 0;
    if (type == REQ_FLUSH) {
        c->flushes++;
    }
    if ((flags & REQ_FUA) && (type == REQ_WRITE || type == REQ_ZEROES)) {
        c->fua_writes++;
    }
    if ((flags & REQ_MAY_UNMAP) && type == REQ_ZEROES) {
        c->unmap_zeroes++;
    }
    ok = mem_check(s, type, offset, bytes, qiov, flags);
    mem_trace_add(s, type, offset, bytes, qiov, flags, !ok);
    if (!ok) {
        c->errors[type]++;
        mutex_unlock(&s->lock);
        return -EINVAL;
    }

    c->in_flight++;
    c->max_in_flight = MAX(c->max_in_flight, c->in_flight);
    mem_co_delay(s);
    c->in_flight--;

    ret = mem_injected_error(s, type, offset, bytes);
    if (!ret && type != REQ_FLUSH && offset + bytes > s->size) {
        /* Shrunk while this request was in flight: the request path drains
         * before truncating, so only a misuse of the driver gets here. */
        ret = -EIO;
    }
    if (ret) {
        c->errors[type]++;
        mutex_unlock(&s->lock);
    }
    /* 0: the caller does the work, then unlocks (mem_end). */
    return ret;
}

static int mem_end(MemState *s)
{
    mutex_unlock(&s->lock);
    return 0;
}

/* ---- data path ------------------------------------------------------------------ */

static int mem_co_preadv(StrataNode *node, int64_t offset, int64_t bytes,
                         const IOVector *qiov, int flags)
{
    MemState *s = node->opaque;
    int ret = mem_co_begin(s, REQ_READ, offset, bytes, qiov, flags);

    if (ret) {
        return ret;
    }
    if (bytes) {
        iov_from_buf(qiov, 0, (uint8_t *)s->data.p + offset, (size_t)bytes);
    }
    return mem_end(s);
}

static int mem_co_pwritev(StrataNode *node, int64_t offset, int64_t bytes,
                          const IOVector *qiov, int flags)
{
    MemState *s = node->opaque;
    int ret = mem_co_begin(s, REQ_WRITE, offset, bytes, qiov, flags);

    if (ret) {
        return ret;
    }
    if (bytes) {
        iov_to_buf(qiov, 0, (uint8_t *)s->data.p + offset, (size_t)bytes);
        bm_assign(s->alloc_bm.p, offset / MEM_CHUNK_SIZE,
                  mem_nchunks(offset + bytes), true);
        bm_assign(s->data_bm.p, offset / MEM_CHUNK_SIZE,
                  mem_nchunks(offset + bytes), true);
    }
    return mem_end(s);
}

/* Zero the bytes of [offset, offset + bytes).  Whole pages go back to the
 * kernel, which fills them with zeroes again when they are next touched:
 * zeroing or discarding a large range of a sparse device must not
 * populate it (a 1 TiB device zeroed whole would exhaust memory). */
static void mem_zero_bytes(MemState *s, int64_t offset, int64_t bytes)
{
    uint8_t *p = s->data.p;
    int64_t page = sysconf(_SC_PAGESIZE);
    int64_t lo = ROUND_UP(offset, page);
    int64_t hi = ROUND_DOWN(offset + bytes, page);

    if (lo < hi && madvise(p + lo, (size_t)(hi - lo), MADV_DONTNEED) == 0) {
        memset(p + offset, 0, (size_t)(lo - offset));
        memset(p + hi, 0, (size_t)(offset + bytes - hi));
    } else {
        memset(p + offset, 0, (size_t)bytes);
    }
}

/* Zero [offset, offset + bytes); chunks covered completely become
 * unallocated (@unmap) or allocated zeroes. */
static void mem_zero_range(MemState *s, int64_t offset, int64_t bytes,
                           bool unmap)
{
    int64_t first, end;

    mem_zero_bytes(s, offset, bytes);
    mem_full_chunks(s, offset, bytes, &first, &end);
    if (first < end) {
        bm_assign(s->alloc_bm.p, first, end, !unmap);
        bm_assign(s->data_bm.p, first, end, false);
    }
}

static int mem_co_pwrite_zeroes(StrataNode *node, int64_t offset,
                                int64_t bytes, int flags)
{
    MemState *s = node->opaque;
    int ret;

    if (!s->zeroes) {
        /* As if the callback were NULL: the request path falls back to
         * writing zero buffers, which the trace then shows. */
        return -ENOTSUP;
    }
    ret = mem_co_begin(s, REQ_ZEROES, offset, bytes, NULL, flags);
    if (ret) {
        return ret;
    }
    if (bytes) {
        mem_zero_range(s, offset, bytes, flags & REQ_MAY_UNMAP);
    }
    return mem_end(s);
}

static int mem_co_pdiscard(StrataNode *node, int64_t offset, int64_t bytes)
{
    MemState *s = node->opaque;
    int ret = mem_co_begin(s, REQ_DISCARD, offset, bytes, NULL, 0);

    if (ret) {
        return ret;
    }
    /* Discarded bytes read as zeroes, as with a device that guarantees
     * zeroes after unmap; block status reports them so. */
    if (bytes) {
        mem_zero_range(s, offset, bytes, true);
    }
    return mem_end(s);
}

static int mem_co_flush(StrataNode *node)
{
    MemState *s = node->opaque;
    int ret = mem_co_begin(s, REQ_FLUSH, 0, 0, NULL, 0);
    return ret ? ret : mem_end(s);
}

static int mem_co_block_status(StrataNode *node, int64_t offset,
                               int64_t bytes, int64_t *pnum)
{
    MemState *s = node->opaque;
    int64_t first, end, run_end;
    bool alloc, data;

    mutex_lock(&s->lock);
    s->counters.block_status++;
    *pnum = 0;
    if (offset < 0 || bytes <= 0 || offset >= s->size ||
        bytes > s->size - offset) {
        mem_violation(s, "block status %" PRId64 "+%" PRId64
                      " outside the device (%" PRId64 " bytes)",
                      offset, bytes, s->size);
        mutex_unlock(&s->lock);
        return -EINVAL;
    }
    first = offset / MEM_CHUNK_SIZE;
    end = mem_nchunks(offset + bytes);
    run_end = mem_chunk_run_end(s, first, end);
    alloc = bm_test(s->alloc_bm.p, first);
    data = bm_test(s->data_bm.p, first);
    *pnum = MIN(run_end * MEM_CHUNK_SIZE, offset + bytes) - offset;
    mutex_unlock(&s->lock);
    if (data) {
        return STRATA_BLOCK_DATA;
    }
    return STRATA_BLOCK_ZERO | (alloc ? STRATA_BLOCK_DATA : 0);
}

/* ---- control path ---------------------------------------------------------------- */

static int64_t mem_get_length(StrataNode *node)
{
    MemState *s = mem_state(node);
    return s->length_errno ? -s->length_errno : s->size;
}

void mem_fail_length(StrataNode *node, int errnum)
{
    mem_state(node)->length_errno = errnum;
    node_invalidate_length(node);
}

/* Resize data and bitmaps to @size; new bytes are zero and unallocated.
 * On failure nothing the device exposes changes. */
static int mem_resize(MemState *s, int64_t size)
{
    int64_t old_size = s->size;
    int64_t nchunks = mem_nchunks(size);
    int ret;

    /* Grow the bitmaps first: failing there leaves the data untouched,
     * and bitmaps larger than the device are harmless. */
    if (size > old_size) {
        ret = region_resize(&s->alloc_bm, bm_bytes(nchunks));
        if (!ret) {
            ret = region_resize(&s->data_bm, bm_bytes(nchunks));
        }
        if (!ret) {
            ret = region_resize(&s->data, (uint64_t)size);
        }
        if (ret) {
            return ret;
        }
    } else if (size < old_size) {
        /* Bytes and bits past the new end in the pages kept must read as
         * zero when the device grows again. */
        int64_t keep = MIN((int64_t)page_round((uint64_t)size), old_size);

        memset((uint8_t *)s->data.p + size, 0, (size_t)(keep - size));
        bm_assign(s->alloc_bm.p, nchunks, mem_nchunks(old_size), false);
        bm_assign(s->data_bm.p, nchunks, mem_nchunks(old_size), false);
        /* Shrinking a mapping cannot fail for lack of memory. */
        ret = region_resize(&s->data, (uint64_t)size);
        ret = ret ? ret : region_resize(&s->alloc_bm, bm_bytes(nchunks));
        ret = ret ? ret : region_resize(&s->data_bm, bm_bytes(nchunks));
        if (ret) {
            return ret;
        }
    }
    s->size = size;
    return 0;
}

static int mem_co_truncate(StrataNode *node, int64_t size,
                           PreallocMode prealloc, StrataError **errp)
{
    MemState *s = node->opaque;
    int64_t old_size = s->size;
    int ret;

    if (size < 0 || size > BLOCK_MAX_OFFSET) {
        error_set_option(errp, "size %" PRId64 " out of range", size);
        return -EINVAL;
    }
    if (!IS_ALIGNED(size, (int64_t)s->align)) {
        error_set_option(errp, "size %" PRId64 " is not a multiple of the "
                         "alignment (%" PRIu32 ")", size, s->align);
        return -EINVAL;
    }
    mutex_lock(&s->lock);
    ret = mem_resize(s, size);
    mutex_unlock(&s->lock);
    if (ret) {
        error_setg_errno(errp, -ret, "cannot resize the mem device to %"
                         PRId64 " bytes", size);
        return ret;
    }
    if (size > old_size && prealloc != PREALLOC_OFF) {
        /* Preallocated space is allocated but reads as zeroes. */
        bm_assign(s->alloc_bm.p, old_size / MEM_CHUNK_SIZE,
                  mem_nchunks(size), true);
    }
    node->total_bytes = size;
    return 0;
}

/* A power-of-two alignment option in [1, BLOCK_MAX_REQUEST_ALIGN]. */
static bool mem_get_align(OptNode *opts, const char *key, uint32_t *out,
                          StrataError **errp)
{
    uint64_t v;

    if (!opts_get_size(opts, key, 1, &v, errp)) {
        return false;
    }
    if (!is_power_of_2(v) || v > BLOCK_MAX_REQUEST_ALIGN) {
        g_autofree char *path = opts_key_path(opts, key);
        error_set_option(errp, "%s: %" PRIu64 " is not a power of two "
                         "between 1 and 1M", path, v);
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

static bool mem_open(StrataNode *node, OptNode *opts, StrataError **errp)
{
    MemState *s = node->opaque;
    uint64_t size, max_transfer;
    int64_t max_iov, latency_ns, seed;
    int ret;

    mutex_init(&s->lock);

    if (!opts_has(opts, "size")) {
        g_autofree char *path = opts_key_path(opts, "size");
        error_set_option(errp, "%s: missing", path);
        return false;
    }
    if (!opts_get_size(opts, "size", 0, &size, errp) ||
        !mem_get_align(opts, "align", &s->align, errp) ||
        !mem_get_align(opts, "mem-align", &s->mem_align, errp) ||
        !mem_get_align(opts, "iov-len-align", &s->iov_len_align, errp) ||
        !opts_get_size(opts, "max-transfer", 0, &max_transfer, errp) ||
        !opts_get_int(opts, "max-iov", 1024, &max_iov, errp) ||
        !opts_get_int(opts, "latency-ns", 0, &latency_ns, errp) ||
        !opts_get_bool(opts, "random-order", false, &s->random_order, errp) ||
        !opts_get_int(opts, "seed", 0, &seed, errp) ||
        !opts_get_bool(opts, "fua", true, &s->fua, errp) ||
        !opts_get_bool(opts, "zeroes", true, &s->zeroes, errp)) {
        return false;
    }
    if (size > (uint64_t)BLOCK_MAX_OFFSET) {
        g_autofree char *path = opts_key_path(opts, "size");
        error_set_option(errp, "%s: %" PRIu64 " is too large", path, size);
        return false;
    }
    if (!IS_ALIGNED(size, (uint64_t)s->align)) {
        g_autofree char *path = opts_key_path(opts, "size");
        error_set_option(errp, "%s: %" PRIu64 " is not a multiple of align "
                         "(%" PRIu32 ")", path, size, s->align);
        return false;
    }
    if (!IS_ALIGNED(size, (uint64_t)s->iov_len_align)) {
        /* Every request is a multiple of it: the last block would be out
         * of reach. */
        g_autofree char *path = opts_key_path(opts, "size");
        error_set_option(errp, "%s: %" PRIu64 " is not a multiple of "
                         "iov-len-align (%" PRIu32 ")", path, size,
                         s->iov_len_align);
        return false;
    }
    if (max_transfer && (max_transfer < s->align ||
                         max_transfer > (uint64_t)BLOCK_MAX_RW_BYTES)) {
        g_autofree char *path = opts_key_path(opts, "max-transfer");
        error_set_option(errp, "%s: %" PRIu64 " must be 0 or between align "
                         "(%" PRIu32 ") and %" PRId64, path, max_transfer,
                         s->align, BLOCK_MAX_RW_BYTES);
        return false;
    }
    if (s->mem_align > (uint64_t)sysconf(_SC_PAGESIZE)) {
        /* Pool buffers, which padding uses, are page aligned. */
        g_autofree char *path = opts_key_path(opts, "mem-align");
        error_set_option(errp, "%s: %" PRIu32 " is above the page size (%ld)",
                         path, s->mem_align, sysconf(_SC_PAGESIZE));
        return false;
    }
    if (max_iov < 1 || max_iov > IOV_MAX) {
        g_autofree char *path = opts_key_path(opts, "max-iov");
        error_set_option(errp, "%s: %" PRId64 " is not between 1 and %d",
                         path, max_iov, IOV_MAX);
        return false;
    }
    if (latency_ns < 0) {
        g_autofree char *path = opts_key_path(opts, "latency-ns");
        error_set_option(errp, "%s: %" PRId64 " is negative", path,
                         latency_ns);
        return false;
    }
    s->max_transfer = (int64_t)max_transfer;
    s->max_iov = (int)max_iov;
    s->latency_ns = latency_ns;

    ret = mem_resize(s, (int64_t)size);
    if (ret) {
        g_autofree char *path = opts_key_path(opts, "size");
        error_setg_errno(errp, -ret, "%s: cannot allocate %" PRIu64 " bytes",
                         path, size);
        region_free(&s->data);
        region_free(&s->alloc_bm);
        region_free(&s->data_bm);
        return false;
    }
    {
        guint32 seed_words[2] = { (guint32)seed, (guint32)((uint64_t)seed >> 32) };
        s->rand = g_rand_new_with_seed_array(seed_words, 2);
    }
    s->rules = g_array_new(FALSE, FALSE, sizeof(MemErrorRule));
    node->supports_fua = s->fua;
    node->total_bytes = s->size;
    return true;
}

static void mem_close(StrataNode *node)
{
    MemState *s = node->opaque;

    region_free(&s->data);
    region_free(&s->alloc_bm);
    region_free(&s->data_bm);
    if (s->rand) {
        g_rand_free(s->rand);
        s->rand = NULL;
    }
    if (s->rules) {
        g_array_free(s->rules, TRUE);
        s->rules = NULL;
    }
    mutex_cleanup(&s->lock);
}

static void mem_refresh_limits(StrataNode *node, BlockLimits *bl)
{
    MemState *s = node->opaque;

    bl->request_alignment = s->align;
    bl->mem_alignment = s->mem_align;
    bl->iov_len_alignment = s->iov_len_align;
    bl->max_transfer = s->max_transfer;
    bl->max_iov = s->max_iov;
    bl->opt_mem_alignment = MAX(bl->opt_mem_alignment, s->mem_align);
}

static void mem_dump_info(StrataNode *node, GString *out)
{
    MemState *s = node->opaque;

    g_string_append_printf(out, "mem: %" PRId64 " bytes, align %" PRIu32
                           ", mem-align %" PRIu32 ", iov-len-align %" PRIu32
                           ", max-transfer %" PRId64 ", max-iov %d%s%s\n",
                           s->size, s->align, s->mem_align, s->iov_len_align,
                           s->max_transfer, s->max_iov,
                           s->random_order ? ", random order" : "",
                           s->zeroes ? "" : ", no native write-zeroes");
}

const BlockDriver bdrv_mem = {
    .name = "mem",
    .instance_size = sizeof(MemState),
    .open = mem_open,
    .close = mem_close,
    .co_preadv = mem_co_preadv,
    .co_pwritev = mem_co_pwritev,
    .co_pwrite_zeroes = mem_co_pwrite_zeroes,
    .co_pdiscard = mem_co_pdiscard,
    .co_flush = mem_co_flush,
    .co_block_status = mem_co_block_status,
    .get_length = mem_get_length,
    .co_truncate = mem_co_truncate,
    .refresh_limits = mem_refresh_limits,
    .dump_info = mem_dump_info,
};

/* ---- test hooks (block/mem.h) ---------------------------------------------------- */

void mem_inject_error(StrataNode *node, BlockReqType type, int64_t offset,
                      int64_t bytes, int errnum, int count)
{
    MemState *s = mem_state(node);
    MemErrorRule r = {
        .type = type,
        .offset = offset,
        .end = bytes < 0 || bytes > INT64_MAX - offset ? INT64_MAX
                                                       : offset + bytes,
        .errnum = errnum,
        .count = count,
    };

    g_assert(type < REQ_TYPE__MAX && errnum > 0 && count >= -1);
    g_array_append_val(s->rules, r);
}

void mem_clear_errors(StrataNode *node)
{
    g_array_set_size(mem_state(node)->rules, 0);
}

const uint8_t *mem_get_data(StrataNode *node)
{
    return mem_state(node)->data.p;
}

size_t mem_get_size(StrataNode *node)
{
    return (size_t)mem_state(node)->size;
}

void mem_get_counters(StrataNode *node, MemCounters *out)
{
    *out = mem_state(node)->counters;
}

void mem_reset_counters(StrataNode *node)
{
    MemState *s = mem_state(node);
    int in_flight = s->counters.in_flight;

    s->counters = (MemCounters) {
        .in_flight = in_flight,
        .max_in_flight = in_flight,
    };
    s->last_violation[0] = '\0';
}

const char *mem_last_violation(StrataNode *node)
{
    return mem_state(node)->last_violation;
}

int mem_trace_count(StrataNode *node)
{
    return (int)MIN(mem_state(node)->trace_total, (uint64_t)MEM_TRACE_SIZE);
}

bool mem_trace_get(StrataNode *node, int i, MemTraceEntry *out)
{
    MemState *s = mem_state(node);
    int count = mem_trace_count(node);

    if (i < 0 || i >= count) {
        return false;
    }
    *out = s->trace[(s->trace_total - (uint64_t)count + (uint64_t)i) %
                    MEM_TRACE_SIZE];
    return true;
}

uint64_t mem_trace_total(StrataNode *node)
{
    return mem_state(node)->trace_total;
}

void mem_trace_clear(StrataNode *node)
{
    mem_state(node)->trace_total = 0;
}
