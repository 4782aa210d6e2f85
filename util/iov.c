/*
 * I/O vectors (SPDX-License-Identifier: MIT)
 *
 * The request path calls these functions for every guest request, so they
 * walk the element array once, never allocate (except when an iov_init()
 * vector outgrows its inline storage) and treat zero-length elements as
 * ordinary members that contribute no bytes.
 */
#include <errno.h>
#include <string.h>
#include <glib.h>
#include "util/iov.h"

/* The first heap allocation of a growing vector: enough that the common
 * request sizes of a few dozen elements grow at most once or twice. */
#define IOV_FIRST_HEAP 16

/*
 * External vectors are recognised by nalloc == 0.  Caller storage and
 * inline storage always have nalloc > 0 (asserted at init), so the two can
 * never be confused.
 */
static inline bool iov_is_external(const IOVector *v)
{
    return v->nalloc == 0;
}

void iov_init(IOVector *v, int max)
{
    g_assert(v);
    g_assert(max > 0);
    *v = (IOVector) {
        .nalloc = IOV_INLINE,
        .max = max,
    };
    v->iov = v->local;
}

void iov_init_storage(IOVector *v, struct iovec *storage, int cap)
{
    g_assert(v);
    g_assert(storage);
    g_assert(cap > 0);
    *v = (IOVector) {
        .iov = storage,
        .nalloc = cap,
        .max = cap,
    };
}

void iov_init_external(IOVector *v, const struct iovec *iov, int niov)
{
    g_assert(v);
    g_assert(niov >= 0);
    g_assert(iov || niov == 0);
    *v = (IOVector) {
        /* The cast drops const only for the struct field: every function
         * that would write the array refuses external vectors. */
        .iov = (struct iovec *)iov,
        .niov = niov,
        .max = niov,
        .size = iov_array_size(iov, niov),
    };
}

void iov_init_buf(IOVector *v, void *buf, size_t len)
{
    iov_init(v, 1);
    v->local[0] = (struct iovec) { .iov_base = buf, .iov_len = len };
    v->niov = 1;
    v->size = len;
}

void iov_cleanup(IOVector *v)
{
    g_assert(v);
    if (v->heap) {
        g_free(v->iov);
        /* Back to inline storage, so the vector can be reused and a second
         * cleanup is harmless. */
        v->iov = v->local;
        v->nalloc = IOV_INLINE;
        v->heap = false;
    }
    v->niov = 0;
    v->size = 0;
}

void iov_reset(IOVector *v)
{
    g_assert(v);
    v->niov = 0;
    v->size = 0;
}

/*
 * Make room for @need elements in total.  The caller has already checked
 * need <= v->max and that @v is not external.  Only inline vectors get here
 * with need > nalloc: caller storage has nalloc == max.
 */
static void iov_reserve(IOVector *v, int need)
{
    if (need <= v->nalloc) {
        return;
    }
    g_assert(v->iov == v->local || v->heap);

    /* Geometric growth keeps a long run of iov_add() linear overall. */
    int cap = v->nalloc;
    do {
        cap = cap > v->max / 2 ? v->max : MAX(cap * 2, IOV_FIRST_HEAP);
    } while (cap < need);
    cap = MIN(cap, v->max);

    if (v->heap) {
        v->iov = g_renew(struct iovec, v->iov, cap);
    } else {
        struct iovec *p = g_new(struct iovec, cap);
        memcpy(p, v->iov, v->niov * sizeof(*p));
        v->iov = p;
        v->heap = true;
    }
    v->nalloc = cap;
}

/* 0 if @n more elements fit in @v (growing it if need be), else -errno. */
static int iov_make_room(IOVector *v, int n)
{
    if (iov_is_external(v)) {
        return -EPERM;
    }
    if (n > v->max - v->niov) {
        return -E2BIG;
    }
    iov_reserve(v, v->niov + n);
    return 0;
}

int iov_add(IOVector *v, void *base, size_t len)
{
    g_assert(v);
    if (G_UNLIKELY(v->niov >= v->nalloc)) {
        int ret = iov_make_room(v, 1);
        if (ret < 0) {
            return ret;
        }
    } else if (G_UNLIKELY(v->niov >= v->max)) {
        /* Inline storage can hold more than a small max allows. */
        return -E2BIG;
    }
    v->iov[v->niov++] = (struct iovec) { .iov_base = base, .iov_len = len };
    v->size += len;
    return 0;
}

int iov_push_front(IOVector *v, void *base, size_t len)
{
    g_assert(v);
    int ret = iov_make_room(v, 1);
    if (ret < 0) {
        return ret;
    }
    memmove(&v->iov[1], &v->iov[0], v->niov * sizeof(v->iov[0]));
    v->iov[0] = (struct iovec) { .iov_base = base, .iov_len = len };
    v->niov++;
    v->size += len;
    return 0;
}

/*
 * Locate byte @off of @v: *idx is the first element that holds it (zero-
 * length elements at @off are skipped) and *skip the offset inside it.
 * For off == v->size, *idx is v->niov.  @off must be <= v->size.
 */
static void iov_locate(const IOVector *v, size_t off, int *idx, size_t *skip)
{
    int i = 0;
    while (i < v->niov && off >= v->iov[i].iov_len) {
        off -= v->iov[i].iov_len;
        i++;
    }
    *idx = i;
    *skip = off;
}

static bool iov_range_ok(const IOVector *v, size_t off, size_t len)
{
    return off <= v->size && len <= v->size - off;
}

int iov_slice_count(const IOVector *src, size_t off, size_t len)
{
    g_assert(src);
    if (!iov_range_ok(src, off, len)) {
        return -EINVAL;
    }
    int i, n = 0;
    size_t skip;
    iov_locate(src, off, &i, &skip);
    /* Only the first element can be entered part-way. */
    for (; len > 0; i++) {
        size_t piece = MIN(src->iov[i].iov_len - skip, len);
        skip = 0;
        if (piece) {
            n++;
            len -= piece;
        }
    }
    return n;
}

/* Append the pieces of [off, off + len) of @src; room is already made. */
static void iov_append_range(IOVector *dst, const IOVector *src,
                             size_t off, size_t len)
{
    int i;
    size_t skip;
    iov_locate(src, off, &i, &skip);
    for (; len > 0; i++) {
        size_t piece = MIN(src->iov[i].iov_len - skip, len);
        if (piece) {
            dst->iov[dst->niov++] = (struct iovec) {
                .iov_base = (char *)src->iov[i].iov_base + skip,
                .iov_len = piece,
            };
            dst->size += piece;
            len -= piece;
        }
        skip = 0;
    }
}

int iov_concat_slice(IOVector *dst, const IOVector *src, size_t off, size_t len)
{
    g_assert(dst);
    g_assert(src);
    if (iov_is_external(dst)) {
        return -EPERM;
    }
    int n = iov_slice_count(src, off, len);
    if (n < 0) {
        return n;
    }
    /* Counting first is what leaves @dst unchanged on -E2BIG.  When dst ==
     * src the growth may move src->iov, which is why the walk below starts
     * only after it; the appended elements lie past the ones it reads. */
    int ret = iov_make_room(dst, n);
    if (ret < 0) {
        return ret;
    }
    iov_append_range(dst, src, off, len);
    return 0;
}

int iov_slice(IOVector *dst, const IOVector *src, size_t off, size_t len)
{
    g_assert(dst);
    g_assert(src);
    g_assert(dst != src);
    if (iov_is_external(dst)) {
        return -EPERM;
    }
    int n = iov_slice_count(src, off, len);
    if (n < 0) {
        return n;
    }
    /* Checked before the reset, so an error leaves @dst as it was. */
    if (n > dst->max) {
        return -E2BIG;
    }
    iov_reset(dst);
    iov_reserve(dst, n);
    iov_append_range(dst, src, off, len);
    return 0;
}

size_t iov_array_size(const struct iovec *iov, int niov)
{
    size_t size = 0;
    for (int i = 0; i < niov; i++) {
        size += iov[i].iov_len;
    }
    return size;
}

/*
 * A walk over the bytes [off, off + len) of a vector, clipped to its end,
 * one non-empty piece at a time.  Small enough to stay in registers once
 * inlined.
 */
typedef struct IOVIter {
    const IOVector *v;
    int idx;
    size_t skip;            /* offset into v->iov[idx] */
    size_t left;            /* bytes still to walk */
} IOVIter;

static inline size_t iov_iter_init(IOVIter *it, const IOVector *v,
                                   size_t off, size_t len)
{
    it->v = v;
    it->idx = 0;
    it->skip = 0;
    it->left = 0;
    if (off < v->size) {
        it->left = MIN(len, v->size - off);
        iov_locate(v, off, &it->idx, &it->skip);
    }
    return it->left;
}

static inline bool iov_iter_next(IOVIter *it, char **p, size_t *n)
{
    while (it->left > 0) {
        const struct iovec *e = &it->v->iov[it->idx++];
        size_t skip = it->skip;
        it->skip = 0;
        if (e->iov_len > skip) {
            *p = (char *)e->iov_base + skip;
            *n = MIN(e->iov_len - skip, it->left);
            it->left -= *n;
            return true;
        }
    }
    return false;
}

size_t iov_to_buf(const IOVector *v, size_t off, void *buf, size_t len)
{
    g_assert(v);
    IOVIter it;
    size_t done = iov_iter_init(&it, v, off, len);
    char *out = buf, *p;
    size_t n;
    while (iov_iter_next(&it, &p, &n)) {
        memcpy(out, p, n);
        out += n;
    }
    return done;
}

size_t iov_from_buf(const IOVector *v, size_t off, const void *buf, size_t len)
{
    g_assert(v);
    IOVIter it;
    size_t done = iov_iter_init(&it, v, off, len);
    const char *in = buf;
    char *p;
    size_t n;
    while (iov_iter_next(&it, &p, &n)) {
        memcpy(p, in, n);
        in += n;
    }
    return done;
}

size_t iov_memset(const IOVector *v, size_t off, int c, size_t len)
{
    g_assert(v);
    IOVIter it;
    size_t done = iov_iter_init(&it, v, off, len);
    char *p;
    size_t n;
    while (iov_iter_next(&it, &p, &n)) {
        memset(p, c, n);
    }
    return done;
}

/* One zero byte followed by n - 1 bytes equal to their predecessors means
 * all n are zero; libc's memcmp is vectorised, a byte loop is not. */
static bool buf_is_zero(const char *p, size_t n)
{
    return p[0] == 0 && memcmp(p, p + 1, n - 1) == 0;
}

bool iov_is_zero(const IOVector *v, size_t off, size_t len)
{
    g_assert(v);
    IOVIter it;
    iov_iter_init(&it, v, off, len);
    char *p;
    size_t n;
    while (iov_iter_next(&it, &p, &n)) {
        if (!buf_is_zero(p, n)) {
            return false;
        }
    }
    return true;
}

size_t iov_copy(const IOVector *dst, size_t dst_off,
                const IOVector *src, size_t src_off, size_t len)
{
    g_assert(dst);
    g_assert(src);
    if (dst_off >= dst->size || src_off >= src->size) {
        return 0;
    }
    len = MIN(len, MIN(dst->size - dst_off, src->size - src_off));

    int di, si;
    size_t dskip, sskip;
    iov_locate(dst, dst_off, &di, &dskip);
    iov_locate(src, src_off, &si, &sskip);

    size_t left = len;
    while (left > 0) {
        size_t dn = dst->iov[di].iov_len - dskip;
        size_t sn = src->iov[si].iov_len - sskip;
        size_t n = MIN(MIN(dn, sn), left);
        if (n) {
            /* memmove: the two vectors may describe overlapping memory. */
            memmove((char *)dst->iov[di].iov_base + dskip,
                    (const char *)src->iov[si].iov_base + sskip, n);
            left -= n;
        }
        dskip += n;
        sskip += n;
        if (dskip == dst->iov[di].iov_len) {
            di++;
            dskip = 0;
        }
        if (sskip == src->iov[si].iov_len) {
            si++;
            sskip = 0;
        }
    }
    return len;
}

int iov_min_run(const IOVector *v, int count, size_t *bytes)
{
    g_assert(v);
    g_assert(count >= 1 && count <= v->niov);

    size_t sum = 0;
    for (int i = 0; i < count; i++) {
        sum += v->iov[i].iov_len;
    }
    size_t best = sum;
    int best_idx = 0;
    /* Slide the window one element at a time; strict '<' keeps the lowest
     * index on ties. */
    for (int i = count; i < v->niov; i++) {
        sum += v->iov[i].iov_len;
        sum -= v->iov[i - count].iov_len;
        if (sum < best) {
            best = sum;
            best_idx = i - count + 1;
        }
    }
    if (bytes) {
        *bytes = best;
    }
    return best_idx;
}

bool iov_check(const IOVector *v)
{
    g_assert(v);
    if (v->niov < 0 || v->niov > v->max ||
        (!iov_is_external(v) && v->niov > v->nalloc)) {
        return false;
    }
    return iov_array_size(v->iov, v->niov) == v->size;
}
