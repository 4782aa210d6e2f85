/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for util/iov: every operation, zero-length elements in every
 * position, the 1024-element limit, and seeded random comparisons against
 * a flat reference buffer.  Random tests take their seed from
 * STRATA_TEST_SEED (default fixed) and print it on failure.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>
#include "util/iov.h"

#define TEST_IOV_MAX 1024

static guint32 test_seed(void)
{
    const char *s = g_getenv("STRATA_TEST_SEED");
    return s ? (guint32)strtoul(s, NULL, 0) : 0x5eed1234u;
}

/* Fail with the seed in the message so the run can be reproduced. */
#define SEED_CHECK(seed, cond)                                           \
    do {                                                                 \
        if (!(cond)) {                                                   \
            g_printerr("FAILED (STRATA_TEST_SEED=%u): %s at %s:%d\n",    \
                       (seed), #cond, __FILE__, __LINE__);               \
            g_assert_not_reached();                                      \
        }                                                                \
    } while (0)

static void fill_pattern(void *buf, size_t len, unsigned seed)
{
    unsigned char *p = buf;
    for (size_t i = 0; i < len; i++) {
        p[i] = (unsigned char)(seed * 131 + i * 7 + (i >> 8));
    }
}

/* Read a whole vector into a fresh buffer (caller frees). */
static char *iov_dup_bytes(const IOVector *v)
{
    char *buf = g_malloc(v->size + 1);
    g_assert_cmpuint(iov_to_buf(v, 0, buf, v->size), ==, v->size);
    return buf;
}

static bool has_zero_length(const IOVector *v)
{
    for (int i = 0; i < v->niov; i++) {
        if (v->iov[i].iov_len == 0) {
            return true;
        }
    }
    return false;
}

/*
 * A vector over "abcdefghij" laid out as
 *   [0-len] "abc" [0-len] "de" "fgh" [0-len] "ij" [0-len]
 * with each piece in its own allocation, so nothing is contiguous.
 */
typedef struct ZFixture {
    char *piece[4];
    IOVector v;
} ZFixture;

static void zfixture_init(ZFixture *f)
{
    static const char *const text[] = { "abc", "de", "fgh", "ij" };
    static char zero_byte;
    for (int i = 0; i < 4; i++) {
        f->piece[i] = g_strdup(text[i]);
    }
    iov_init(&f->v, 16);
    g_assert_cmpint(iov_add(&f->v, &zero_byte, 0), ==, 0);
    g_assert_cmpint(iov_add(&f->v, f->piece[0], 3), ==, 0);
    g_assert_cmpint(iov_add(&f->v, NULL, 0), ==, 0);
    g_assert_cmpint(iov_add(&f->v, f->piece[1], 2), ==, 0);
    g_assert_cmpint(iov_add(&f->v, f->piece[2], 3), ==, 0);
    g_assert_cmpint(iov_add(&f->v, &zero_byte, 0), ==, 0);
    g_assert_cmpint(iov_add(&f->v, f->piece[3], 2), ==, 0);
    g_assert_cmpint(iov_add(&f->v, NULL, 0), ==, 0);
    g_assert_cmpint(f->v.niov, ==, 8);
    g_assert_cmpuint(iov_size(&f->v), ==, 10);
}

static void zfixture_cleanup(ZFixture *f)
{
    iov_cleanup(&f->v);
    for (int i = 0; i < 4; i++) {
        g_free(f->piece[i]);
    }
}

/* ---- init, add, storage kinds ---------------------------------------- */

static void test_init_inline_empty(void)
{
    IOVector v;
    iov_init(&v, TEST_IOV_MAX);
    g_assert_cmpint(v.niov, ==, 0);
    g_assert_cmpuint(iov_size(&v), ==, 0);
    g_assert_true(v.iov == v.local);
    g_assert_false(v.heap);
    g_assert_true(iov_check(&v));
    iov_cleanup(&v);
}

static void test_init_buf(void)
{
    char buf[8] = "1234567";
    IOVector v;
    iov_init_buf(&v, buf, sizeof(buf));
    g_assert_cmpint(v.niov, ==, 1);
    g_assert_cmpint(v.max, ==, 1);
    g_assert_true(v.iov[0].iov_base == buf);
    g_assert_cmpuint(iov_size(&v), ==, 8);
    /* max 1: a second element does not fit. */
    g_assert_cmpint(iov_add(&v, buf, 1), ==, -E2BIG);
    g_assert_cmpint(iov_push_front(&v, buf, 1), ==, -E2BIG);
    g_assert_cmpint(v.niov, ==, 1);
    g_assert_cmpuint(iov_size(&v), ==, 8);
    iov_cleanup(&v);
}

static void test_add_zero_length_kept(void)
{
    char a[4], b[4];
    IOVector v;
    iov_init(&v, 8);
    g_assert_cmpint(iov_add(&v, a, 0), ==, 0);
    g_assert_cmpint(iov_add(&v, a, 4), ==, 0);
    g_assert_cmpint(iov_add(&v, NULL, 0), ==, 0);
    g_assert_cmpint(iov_add(&v, b, 4), ==, 0);
    g_assert_cmpint(iov_add(&v, b, 0), ==, 0);
    g_assert_cmpint(v.niov, ==, 5);
    g_assert_cmpuint(iov_size(&v), ==, 8);
    g_assert_true(v.iov[0].iov_base == a && v.iov[0].iov_len == 0);
    g_assert_true(v.iov[2].iov_base == NULL && v.iov[2].iov_len == 0);
    g_assert_true(v.iov[3].iov_base == b && v.iov[3].iov_len == 4);
    g_assert_true(iov_check(&v));
    iov_cleanup(&v);
}

static void test_add_small_max_inside_inline(void)
{
    /* A max below the inline capacity is still enforced. */
    char c;
    IOVector v;
    iov_init(&v, 2);
    g_assert_cmpint(iov_add(&v, &c, 1), ==, 0);
    g_assert_cmpint(iov_add(&v, &c, 1), ==, 0);
    g_assert_cmpint(iov_add(&v, &c, 1), ==, -E2BIG);
    g_assert_cmpint(iov_push_front(&v, &c, 1), ==, -E2BIG);
    g_assert_cmpint(v.niov, ==, 2);
    g_assert_cmpuint(iov_size(&v), ==, 2);
    g_assert_false(v.heap);
    iov_cleanup(&v);
}

static void check_limit(IOVector *v, char *buf)
{
    for (int i = 0; i < 1023; i++) {
        g_assert_cmpint(iov_add(v, buf + i, 1), ==, 0);
    }
    g_assert_cmpint(v->niov, ==, 1023);
    g_assert_cmpint(iov_add(v, buf + 1023, 1), ==, 0);
    g_assert_cmpint(v->niov, ==, 1024);
    g_assert_cmpint(iov_add(v, buf + 1024, 1), ==, -E2BIG);
    g_assert_cmpint(iov_push_front(v, buf + 1024, 1), ==, -E2BIG);
    g_assert_cmpint(v->niov, ==, 1024);
    g_assert_cmpuint(iov_size(v), ==, 1024);
    g_assert_true(iov_check(v));
    for (int i = 0; i < 1024; i++) {
        g_assert_true(v->iov[i].iov_base == buf + i);
    }
}

static void test_add_limit_1024_inline(void)
{
    g_autofree char *buf = g_malloc0(2048);
    IOVector v;
    iov_init(&v, TEST_IOV_MAX);
    check_limit(&v, buf);
    g_assert_true(v.heap);
    g_assert_cmpint(v.nalloc, <=, TEST_IOV_MAX);
    iov_cleanup(&v);
}

static void test_add_limit_1024_storage(void)
{
    g_autofree char *buf = g_malloc0(2048);
    g_autofree struct iovec *storage = g_new(struct iovec, TEST_IOV_MAX);
    IOVector v;
    iov_init_storage(&v, storage, TEST_IOV_MAX);
    check_limit(&v, buf);
    /* Caller storage never moves to the heap. */
    g_assert_false(v.heap);
    g_assert_true(v.iov == storage);
    iov_cleanup(&v);
    g_assert_cmpint(v.niov, ==, 0);
    g_assert_true(v.iov == storage);
}

static void test_storage_small(void)
{
    struct iovec storage[3];
    char c[8];
    IOVector v;
    iov_init_storage(&v, storage, 3);
    g_assert_cmpint(v.max, ==, 3);
    g_assert_cmpint(iov_add(&v, c, 1), ==, 0);
    g_assert_cmpint(iov_push_front(&v, c + 1, 2), ==, 0);
    g_assert_cmpint(iov_add(&v, c + 3, 0), ==, 0);
    g_assert_cmpint(iov_add(&v, c + 3, 1), ==, -E2BIG);
    g_assert_true(storage[0].iov_base == c + 1);
    g_assert_true(storage[1].iov_base == c);
    g_assert_cmpuint(iov_size(&v), ==, 3);
    iov_cleanup(&v);
}

static void test_heap_growth_and_cleanup(void)
{
    g_autofree char *buf = g_malloc0(4096);
    IOVector v;
    iov_init(&v, 4096);
    for (int i = 0; i < IOV_INLINE; i++) {
        g_assert_cmpint(iov_add(&v, buf + i, 1), ==, 0);
    }
    g_assert_false(v.heap);
    g_assert_true(v.iov == v.local);

    /* The first element past the inline capacity moves to the heap and
     * keeps the elements already there. */
    g_assert_cmpint(iov_add(&v, buf + IOV_INLINE, 1), ==, 0);
    g_assert_true(v.heap);
    g_assert_true(v.iov != v.local);
    for (int i = 0; i <= IOV_INLINE; i++) {
        g_assert_true(v.iov[i].iov_base == buf + i);
    }

    /* Geometric growth: few reallocations over many adds. */
    int reallocs = 0, last_nalloc = v.nalloc;
    for (int i = IOV_INLINE + 1; i < 3000; i++) {
        g_assert_cmpint(iov_add(&v, buf + i, 1), ==, 0);
        if (v.nalloc != last_nalloc) {
            g_assert_cmpint(v.nalloc, >, last_nalloc);
            reallocs++;
            last_nalloc = v.nalloc;
        }
    }
    g_assert_cmpint(reallocs, <=, 12);
    g_assert_cmpint(v.nalloc, <=, v.max);
    for (int i = 0; i < 3000; i++) {
        g_assert_true(v.iov[i].iov_base == buf + i);
    }
    g_assert_cmpuint(iov_size(&v), ==, 3000);

    /* Reset keeps the heap storage. */
    struct iovec *heap = v.iov;
    iov_reset(&v);
    g_assert_cmpint(v.niov, ==, 0);
    g_assert_cmpuint(iov_size(&v), ==, 0);
    g_assert_true(v.iov == heap);
    g_assert_cmpint(iov_add(&v, buf, 7), ==, 0);
    g_assert_true(v.iov == heap);

    /* Cleanup frees it (ASan reports a leak otherwise), leaves the vector
     * empty and usable, and a second cleanup is harmless. */
    iov_cleanup(&v);
    g_assert_false(v.heap);
    g_assert_cmpint(v.niov, ==, 0);
    g_assert_cmpuint(iov_size(&v), ==, 0);
    g_assert_cmpint(iov_add(&v, buf, 3), ==, 0);
    g_assert_cmpuint(iov_size(&v), ==, 3);
    iov_cleanup(&v);
    iov_cleanup(&v);
}

static void test_push_front_order(void)
{
    char buf[64];
    fill_pattern(buf, sizeof(buf), 1);
    IOVector v;
    iov_init(&v, 16);
    g_assert_cmpint(iov_add(&v, buf + 10, 5), ==, 0);
    g_assert_cmpint(iov_push_front(&v, buf + 5, 5), ==, 0);
    g_assert_cmpint(iov_push_front(&v, buf + 4, 0), ==, 0);
    g_assert_cmpint(iov_push_front(&v, buf, 5), ==, 0);
    /* Past the inline capacity, from the front. */
    g_assert_cmpint(iov_push_front(&v, buf + 30, 3), ==, 0);
    g_assert_cmpint(iov_push_front(&v, buf + 40, 2), ==, 0);
    g_assert_cmpint(v.niov, ==, 6);
    g_assert_cmpuint(iov_size(&v), ==, 20);
    g_assert_true(iov_check(&v));

    const struct { int off; size_t len; } want[] = {
        { 40, 2 }, { 30, 3 }, { 0, 5 }, { 4, 0 }, { 5, 5 }, { 10, 5 },
    };
    for (int i = 0; i < 6; i++) {
        g_assert_true(v.iov[i].iov_base == buf + want[i].off);
        g_assert_cmpuint(v.iov[i].iov_len, ==, want[i].len);
    }
    char out[20], expect[20];
    memcpy(expect, buf + 40, 2);
    memcpy(expect + 2, buf + 30, 3);
    memcpy(expect + 5, buf, 15);
    g_assert_cmpuint(iov_to_buf(&v, 0, out, 20), ==, 20);
    g_assert_cmpmem(out, 20, expect, 20);
    iov_cleanup(&v);
}

static void test_external_wrap(void)
{
    char a[6], b[4];
    fill_pattern(a, sizeof(a), 2);
    fill_pattern(b, sizeof(b), 3);
    struct iovec raw[4] = {
        { a, 6 }, { NULL, 0 }, { b, 4 }, { a, 0 },
    };
    struct iovec copy[4];
    memcpy(copy, raw, sizeof(raw));
    g_assert_cmpuint(iov_array_size(raw, 4), ==, 10);

    IOVector v;
    iov_init_external(&v, raw, 4);
    g_assert_true(v.iov == raw);
    g_assert_cmpint(v.niov, ==, 4);
    g_assert_cmpint(v.nalloc, ==, 0);
    g_assert_cmpuint(iov_size(&v), ==, 10);
    g_assert_true(iov_check(&v));

    /* Reading and writing the data is allowed... */
    char out[10], expect[10];
    memcpy(expect, a, 6);
    memcpy(expect + 6, b, 4);
    g_assert_cmpuint(iov_to_buf(&v, 0, out, 10), ==, 10);
    g_assert_cmpmem(out, 10, expect, 10);
    g_assert_cmpuint(iov_from_buf(&v, 5, "XY", 2), ==, 2);
    g_assert_cmpint(a[5], ==, 'X');
    g_assert_cmpint(b[0], ==, 'Y');

    /* ...and slicing it into another vector too... */
    IOVector s;
    iov_init(&s, 8);
    g_assert_cmpint(iov_slice(&s, &v, 4, 4), ==, 0);
    g_assert_cmpint(s.niov, ==, 2);
    g_assert_true(s.iov[0].iov_base == a + 4);
    g_assert_true(s.iov[1].iov_base == b);
    g_assert_cmpuint(s.iov[1].iov_len, ==, 2);
    iov_cleanup(&s);

    /* ...but changing its elements is not. */
    char c;
    g_assert_cmpint(iov_add(&v, &c, 1), ==, -EPERM);
    g_assert_cmpint(iov_push_front(&v, &c, 1), ==, -EPERM);
    IOVector src;
    iov_init_buf(&src, &c, 1);
    g_assert_cmpint(iov_concat_slice(&v, &src, 0, 1), ==, -EPERM);
    g_assert_cmpint(iov_slice(&v, &src, 0, 1), ==, -EPERM);
    iov_cleanup(&src);
    g_assert_cmpmem(raw, sizeof(raw), copy, sizeof(copy));
    g_assert_cmpint(v.niov, ==, 4);
    g_assert_cmpuint(iov_size(&v), ==, 10);

    /* Cleanup never frees the borrowed array. */
    iov_cleanup(&v);
    g_assert_cmpint(v.niov, ==, 0);
    g_assert_cmpmem(raw, sizeof(raw), copy, sizeof(copy));
}

static void test_external_empty(void)
{
    IOVector v;
    iov_init_external(&v, NULL, 0);
    g_assert_cmpuint(iov_size(&v), ==, 0);
    g_assert_cmpint(iov_add(&v, NULL, 0), ==, -EPERM);
    g_assert_true(iov_is_zero(&v, 0, 100));
    iov_cleanup(&v);
}

/* ---- slices ------------------------------------------------------------ */

static void test_slice_element_boundaries(void)
{
    char buf[12];
    IOVector v, s;
    iov_init(&v, 8);
    iov_init(&s, 8);
    g_assert_cmpint(iov_add(&v, buf, 4), ==, 0);
    g_assert_cmpint(iov_add(&v, buf + 5, 3), ==, 0);
    g_assert_cmpint(iov_add(&v, buf + 9, 3), ==, 0);

    /* Exactly the middle element. */
    g_assert_cmpint(iov_slice_count(&v, 4, 3), ==, 1);
    g_assert_cmpint(iov_slice(&s, &v, 4, 3), ==, 0);
    g_assert_cmpint(s.niov, ==, 1);
    g_assert_true(s.iov[0].iov_base == buf + 5);
    g_assert_cmpuint(s.iov[0].iov_len, ==, 3);

    /* From the first boundary to the end. */
    g_assert_cmpint(iov_slice(&s, &v, 4, 6), ==, 0);
    g_assert_cmpint(s.niov, ==, 2);
    g_assert_true(s.iov[1].iov_base == buf + 9);
    g_assert_cmpuint(iov_size(&s), ==, 6);

    /* The whole vector. */
    g_assert_cmpint(iov_slice(&s, &v, 0, 10), ==, 0);
    g_assert_cmpint(s.niov, ==, 3);
    g_assert_cmpmem(s.iov, 3 * sizeof(struct iovec),
                    v.iov, 3 * sizeof(struct iovec));

    /* Empty slices, at a boundary and at the end. */
    g_assert_cmpint(iov_slice(&s, &v, 4, 0), ==, 0);
    g_assert_cmpint(s.niov, ==, 0);
    g_assert_cmpint(iov_slice(&s, &v, 10, 0), ==, 0);
    g_assert_cmpint(s.niov, ==, 0);
    g_assert_cmpuint(iov_size(&s), ==, 0);
    iov_cleanup(&s);
    iov_cleanup(&v);
}

static void test_slice_mid_element(void)
{
    char buf[12];
    IOVector v, s;
    iov_init(&v, 8);
    iov_init(&s, 8);
    g_assert_cmpint(iov_add(&v, buf, 4), ==, 0);
    g_assert_cmpint(iov_add(&v, buf + 5, 3), ==, 0);
    g_assert_cmpint(iov_add(&v, buf + 9, 3), ==, 0);

    /* Inside one element. */
    g_assert_cmpint(iov_slice(&s, &v, 1, 2), ==, 0);
    g_assert_cmpint(s.niov, ==, 1);
    g_assert_true(s.iov[0].iov_base == buf + 1);
    g_assert_cmpuint(s.iov[0].iov_len, ==, 2);

    /* Across all three, cut at both ends. */
    g_assert_cmpint(iov_slice_count(&v, 3, 5), ==, 3);
    g_assert_cmpint(iov_slice(&s, &v, 3, 5), ==, 0);
    g_assert_cmpint(s.niov, ==, 3);
    g_assert_true(s.iov[0].iov_base == buf + 3);
    g_assert_cmpuint(s.iov[0].iov_len, ==, 1);
    g_assert_true(s.iov[1].iov_base == buf + 5);
    g_assert_cmpuint(s.iov[1].iov_len, ==, 3);
    g_assert_true(s.iov[2].iov_base == buf + 9);
    g_assert_cmpuint(s.iov[2].iov_len, ==, 1);
    g_assert_cmpuint(iov_size(&s), ==, 5);
    g_assert_true(iov_check(&s));
    iov_cleanup(&s);
    iov_cleanup(&v);
}

static void test_slice_zero_length_elements(void)
{
    ZFixture f;
    zfixture_init(&f);
    IOVector s;
    iov_init(&s, 16);

    /* Every (off, len) over the 10 bytes: right bytes, no empty pieces,
     * and the count matches. */
    for (size_t off = 0; off <= 10; off++) {
        for (size_t len = 0; off + len <= 10; len++) {
            g_assert_cmpint(iov_slice(&s, &f.v, off, len), ==, 0);
            g_assert_false(has_zero_length(&s));
            g_assert_cmpint(iov_slice_count(&f.v, off, len), ==, s.niov);
            g_assert_cmpuint(iov_size(&s), ==, len);
            char out[10];
            g_assert_cmpuint(iov_to_buf(&s, 0, out, len), ==, len);
            g_assert_cmpmem(out, len, &"abcdefghij"[off], len);
        }
    }

    /* The whole vector drops all four zero-length elements. */
    g_assert_cmpint(iov_slice(&s, &f.v, 0, 10), ==, 0);
    g_assert_cmpint(s.niov, ==, 4);
    /* Starting on a boundary that has a zero-length element right at it. */
    g_assert_cmpint(iov_slice(&s, &f.v, 3, 2), ==, 0);
    g_assert_cmpint(s.niov, ==, 1);
    g_assert_true(s.iov[0].iov_base == f.piece[1]);
    /* Ending on one. */
    g_assert_cmpint(iov_slice(&s, &f.v, 5, 5), ==, 0);
    g_assert_cmpint(s.niov, ==, 2);

    /* A vector of only zero-length elements. */
    IOVector z;
    iov_init(&z, 4);
    g_assert_cmpint(iov_add(&z, NULL, 0), ==, 0);
    g_assert_cmpint(iov_add(&z, NULL, 0), ==, 0);
    g_assert_cmpint(iov_slice_count(&z, 0, 0), ==, 0);
    g_assert_cmpint(iov_slice(&s, &z, 0, 0), ==, 0);
    g_assert_cmpint(s.niov, ==, 0);
    g_assert_cmpint(iov_slice(&s, &z, 0, 1), ==, -EINVAL);
    iov_cleanup(&z);

    iov_cleanup(&s);
    zfixture_cleanup(&f);
}

static void test_slice_of_slice(void)
{
    char buf[100];
    fill_pattern(buf, sizeof(buf), 4);
    IOVector v, s1, s2;
    iov_init(&v, 16);
    iov_init(&s1, 16);
    iov_init(&s2, 16);
    /* Ten 9-byte elements, each one byte apart. */
    for (int i = 0; i < 10; i++) {
        g_assert_cmpint(iov_add(&v, buf + i * 10, 9), ==, 0);
    }
    g_assert_cmpint(iov_slice(&s1, &v, 13, 50), ==, 0);
    g_assert_cmpint(iov_slice(&s2, &s1, 7, 20), ==, 0);
    g_assert_cmpuint(iov_size(&s2), ==, 20);

    /* s2 is bytes [20, 40) of v. */
    char a[20], b[20];
    g_assert_cmpuint(iov_to_buf(&s2, 0, a, 20), ==, 20);
    g_assert_cmpuint(iov_to_buf(&v, 20, b, 20), ==, 20);
    g_assert_cmpmem(a, 20, b, 20);
    /* Byte 20 of v is element 2 at offset 2. */
    g_assert_true(s2.iov[0].iov_base == buf + 22);

    /* Out of range of the inner slice, though not of v. */
    g_assert_cmpint(iov_slice(&s2, &s1, 40, 11), ==, -EINVAL);
    iov_cleanup(&s2);
    iov_cleanup(&s1);
    iov_cleanup(&v);
}

static void test_slice_out_of_range(void)
{
    char buf[16];
    struct iovec storage[4];
    IOVector v, s;
    iov_init(&v, 4);
    iov_init_storage(&s, storage, 4);
    g_assert_cmpint(iov_add(&v, buf, 8), ==, 0);
    g_assert_cmpint(iov_add(&v, buf + 8, 8), ==, 0);
    g_assert_cmpint(iov_add(&s, buf, 1), ==, 0);

    g_assert_cmpint(iov_slice_count(&v, 0, 17), ==, -EINVAL);
    g_assert_cmpint(iov_slice_count(&v, 17, 0), ==, -EINVAL);
    g_assert_cmpint(iov_slice_count(&v, 16, 1), ==, -EINVAL);
    g_assert_cmpint(iov_slice_count(&v, 8, SIZE_MAX), ==, -EINVAL);
    g_assert_cmpint(iov_slice_count(&v, SIZE_MAX, 2), ==, -EINVAL);

    g_assert_cmpint(iov_slice(&s, &v, 0, 17), ==, -EINVAL);
    g_assert_cmpint(iov_slice(&s, &v, 17, 0), ==, -EINVAL);
    g_assert_cmpint(iov_slice(&s, &v, 15, 2), ==, -EINVAL);
    g_assert_cmpint(iov_slice(&s, &v, 1, SIZE_MAX), ==, -EINVAL);
    g_assert_cmpint(iov_concat_slice(&s, &v, 15, 2), ==, -EINVAL);
    /* Errors leave the destination as it was. */
    g_assert_cmpint(s.niov, ==, 1);
    g_assert_true(s.iov[0].iov_base == buf);
    g_assert_cmpuint(iov_size(&s), ==, 1);

    /* The last byte and the empty range at the end are in range. */
    g_assert_cmpint(iov_slice(&s, &v, 15, 1), ==, 0);
    g_assert_cmpint(iov_slice(&s, &v, 16, 0), ==, 0);
    iov_cleanup(&s);
    iov_cleanup(&v);
}

static void test_slice_e2big_leaves_dst_unchanged(void)
{
    char buf[64];
    struct iovec storage[4];
    IOVector v, s;
    iov_init(&v, 16);
    for (int i = 0; i < 8; i++) {
        g_assert_cmpint(iov_add(&v, buf + i * 8, 7), ==, 0);
    }
    iov_init_storage(&s, storage, 4);
    g_assert_cmpint(iov_add(&s, buf, 1), ==, 0);
    g_assert_cmpint(iov_add(&s, buf + 1, 0), ==, 0);
    struct iovec before[2];
    memcpy(before, storage, sizeof(before));

    /* Four pieces do not fit next to the two already there. */
    g_assert_cmpint(iov_slice_count(&v, 3, 20), ==, 4);
    g_assert_cmpint(iov_concat_slice(&s, &v, 3, 20), ==, -E2BIG);
    g_assert_cmpint(s.niov, ==, 2);
    g_assert_cmpuint(iov_size(&s), ==, 1);
    g_assert_cmpmem(storage, sizeof(before), before, sizeof(before));

    /* Five pieces do not fit even in an empty one; iov_slice does not
     * reset before it knows. */
    g_assert_cmpint(iov_slice(&s, &v, 0, 30), ==, -E2BIG);
    g_assert_cmpint(s.niov, ==, 2);
    g_assert_cmpuint(iov_size(&s), ==, 1);

    /* Two more do fit; four fit after a reset. */
    g_assert_cmpint(iov_concat_slice(&s, &v, 3, 10), ==, 0);
    g_assert_cmpint(s.niov, ==, 4);
    g_assert_cmpint(iov_slice(&s, &v, 3, 20), ==, 0);
    g_assert_cmpint(s.niov, ==, 4);
    iov_cleanup(&s);

    /* An inline vector at its max behaves the same. */
    IOVector in;
    iov_init(&in, 3);
    g_assert_cmpint(iov_add(&in, buf, 1), ==, 0);
    g_assert_cmpint(iov_concat_slice(&in, &v, 0, 20), ==, -E2BIG);
    g_assert_cmpint(in.niov, ==, 1);
    g_assert_cmpuint(iov_size(&in), ==, 1);
    iov_cleanup(&in);
    iov_cleanup(&v);
}

static void test_concat_appends(void)
{
    char buf[32];
    fill_pattern(buf, sizeof(buf), 5);
    IOVector v, d;
    iov_init(&v, 8);
    iov_init(&d, 8);
    g_assert_cmpint(iov_add(&v, buf, 10), ==, 0);
    g_assert_cmpint(iov_add(&v, buf + 16, 10), ==, 0);

    g_assert_cmpint(iov_add(&d, buf + 30, 2), ==, 0);
    g_assert_cmpint(iov_concat_slice(&d, &v, 8, 4), ==, 0);
    g_assert_cmpint(iov_concat_slice(&d, &v, 0, 0), ==, 0);
    g_assert_cmpint(iov_concat_slice(&d, &v, 0, 1), ==, 0);
    g_assert_cmpint(d.niov, ==, 4);
    g_assert_cmpuint(iov_size(&d), ==, 7);

    char out[7], expect[7];
    memcpy(expect, buf + 30, 2);
    memcpy(expect + 2, buf + 8, 2);
    memcpy(expect + 4, buf + 16, 2);
    memcpy(expect + 6, buf, 1);
    g_assert_cmpuint(iov_to_buf(&d, 0, out, 7), ==, 7);
    g_assert_cmpmem(out, 7, expect, 7);
    g_assert_true(iov_check(&d));
    iov_cleanup(&d);
    iov_cleanup(&v);
}

static void test_concat_onto_itself(void)
{
    /* Appending a slice of a vector to itself, across heap growth. */
    char buf[16];
    fill_pattern(buf, sizeof(buf), 6);
    IOVector v;
    iov_init(&v, 64);
    for (int i = 0; i < IOV_INLINE; i++) {
        g_assert_cmpint(iov_add(&v, buf + i * 4, 3), ==, 0);
    }
    g_assert_cmpint(iov_concat_slice(&v, &v, 1, 10), ==, 0);
    g_assert_true(v.heap);
    g_assert_cmpint(v.niov, ==, IOV_INLINE + 4);
    g_assert_cmpuint(iov_size(&v), ==, 22);
    char out[22];
    g_assert_cmpuint(iov_to_buf(&v, 0, out, 22), ==, 22);
    g_assert_cmpmem(out + 12, 10, out + 1, 10);
    iov_cleanup(&v);
}

/* ---- copying data ------------------------------------------------------ */

static void test_buf_offsets_partial_tail(void)
{
    ZFixture f;
    zfixture_init(&f);
    char out[16];

    /* Within, across elements, and running off the end. */
    memset(out, '.', sizeof(out));
    g_assert_cmpuint(iov_to_buf(&f.v, 2, out, 4), ==, 4);
    g_assert_cmpmem(out, 5, "cdef.", 5);
    g_assert_cmpuint(iov_to_buf(&f.v, 7, out, 16), ==, 3);
    g_assert_cmpmem(out, 3, "hij", 3);
    g_assert_cmpuint(iov_to_buf(&f.v, 10, out, 16), ==, 0);
    g_assert_cmpuint(iov_to_buf(&f.v, 11, out, 16), ==, 0);
    g_assert_cmpuint(iov_to_buf(&f.v, SIZE_MAX, out, 16), ==, 0);
    g_assert_cmpuint(iov_to_buf(&f.v, 3, out, 0), ==, 0);

    /* from_buf: the partial tail writes only what fits. */
    g_assert_cmpuint(iov_from_buf(&f.v, 4, "XYZ", 3), ==, 3);
    g_assert_cmpuint(iov_from_buf(&f.v, 8, "1234", 4), ==, 2);
    g_assert_cmpuint(iov_from_buf(&f.v, 10, "1234", 4), ==, 0);
    g_assert_cmpuint(iov_to_buf(&f.v, 0, out, 10), ==, 10);
    g_assert_cmpmem(out, 10, "abcdXYZh12", 10);
    g_assert_cmpstr(f.piece[1], ==, "dX");
    g_assert_cmpstr(f.piece[2], ==, "YZh");
    zfixture_cleanup(&f);
}

static void test_memset_offsets(void)
{
    ZFixture f;
    zfixture_init(&f);
    char out[10];
    g_assert_cmpuint(iov_memset(&f.v, 2, '-', 4), ==, 4);
    g_assert_cmpuint(iov_memset(&f.v, 9, '+', 5), ==, 1);
    g_assert_cmpuint(iov_memset(&f.v, 10, '+', 5), ==, 0);
    g_assert_cmpuint(iov_memset(&f.v, 0, '+', 0), ==, 0);
    g_assert_cmpuint(iov_to_buf(&f.v, 0, out, 10), ==, 10);
    g_assert_cmpmem(out, 10, "ab----ghi+", 10);
    zfixture_cleanup(&f);
}

static void test_is_zero(void)
{
    ZFixture f;
    zfixture_init(&f);
    g_assert_cmpuint(iov_memset(&f.v, 0, 0, 10), ==, 10);
    g_assert_true(iov_is_zero(&f.v, 0, 10));
    g_assert_true(iov_is_zero(&f.v, 0, SIZE_MAX));
    /* Empty ranges, in and past the end, are zero. */
    g_assert_true(iov_is_zero(&f.v, 4, 0));
    g_assert_true(iov_is_zero(&f.v, 10, 5));
    g_assert_true(iov_is_zero(&f.v, 100, 5));

    /* One non-zero byte at each position is found exactly when the range
     * covers it. */
    for (size_t pos = 0; pos < 10; pos++) {
        g_assert_cmpuint(iov_memset(&f.v, pos, 0x80, 1), ==, 1);
        g_assert_false(iov_is_zero(&f.v, 0, 10));
        g_assert_false(iov_is_zero(&f.v, pos, 1));
        g_assert_false(iov_is_zero(&f.v, pos, 100));
        g_assert_true(iov_is_zero(&f.v, 0, pos));
        g_assert_true(iov_is_zero(&f.v, pos + 1, 100));
        g_assert_cmpuint(iov_memset(&f.v, pos, 0, 1), ==, 1);
    }

    /* A large element: the check is not fooled by a late byte. */
    g_autofree char *big = g_malloc0(1 << 20);
    IOVector b;
    iov_init_buf(&b, big, 1 << 20);
    g_assert_true(iov_is_zero(&b, 0, 1 << 20));
    big[(1 << 20) - 1] = 1;
    g_assert_false(iov_is_zero(&b, 0, 1 << 20));
    g_assert_true(iov_is_zero(&b, 0, (1 << 20) - 1));
    iov_cleanup(&b);
    zfixture_cleanup(&f);
}

static void test_copy_offsets(void)
{
    ZFixture f;
    zfixture_init(&f);
    char dbuf[12];
    memset(dbuf, '.', sizeof(dbuf));
    IOVector d;
    iov_init(&d, 8);
    g_assert_cmpint(iov_add(&d, dbuf, 5), ==, 0);
    g_assert_cmpint(iov_add(&d, dbuf + 5, 0), ==, 0);
    g_assert_cmpint(iov_add(&d, dbuf + 6, 1), ==, 0);
    g_assert_cmpint(iov_add(&d, dbuf + 7, 5), ==, 0);
    g_assert_cmpuint(iov_size(&d), ==, 11);

    /* "bcdefg" -> d at 2, across element boundaries on both sides. */
    g_assert_cmpuint(iov_copy(&d, 2, &f.v, 1, 6), ==, 6);
    char out[11];
    g_assert_cmpuint(iov_to_buf(&d, 0, out, 11), ==, 11);
    g_assert_cmpmem(out, 11, "..bcdefg...", 11);

    /* Clipped by the source end, then by the destination end. */
    g_assert_cmpuint(iov_copy(&d, 0, &f.v, 8, 100), ==, 2);
    g_assert_cmpuint(iov_copy(&d, 9, &f.v, 0, 100), ==, 2);
    g_assert_cmpuint(iov_to_buf(&d, 0, out, 11), ==, 11);
    g_assert_cmpmem(out, 11, "ijbcdefg.ab", 11);

    /* Nothing at or past either end. */
    g_assert_cmpuint(iov_copy(&d, 11, &f.v, 0, 5), ==, 0);
    g_assert_cmpuint(iov_copy(&d, 0, &f.v, 10, 5), ==, 0);
    g_assert_cmpuint(iov_copy(&d, 0, &f.v, 0, 0), ==, 0);
    iov_cleanup(&d);
    zfixture_cleanup(&f);
}

/* ---- min_run ------------------------------------------------------------ */

static IOVector *vec_of_lengths(IOVector *v, const size_t *lens, int n)
{
    static char dummy[1];
    iov_init(v, TEST_IOV_MAX);
    for (int i = 0; i < n; i++) {
        g_assert_cmpint(iov_add(v, dummy, lens[i]), ==, 0);
    }
    return v;
}

static void test_min_run_basic(void)
{
    const size_t lens[] = { 9, 5, 1, 0, 7, 3, 3, 8 };
    IOVector v;
    size_t bytes;
    vec_of_lengths(&v, lens, 8);

    g_assert_cmpint(iov_min_run(&v, 1, &bytes), ==, 3);
    g_assert_cmpuint(bytes, ==, 0);
    g_assert_cmpint(iov_min_run(&v, 2, &bytes), ==, 2);
    g_assert_cmpuint(bytes, ==, 1);
    g_assert_cmpint(iov_min_run(&v, 3, &bytes), ==, 1);
    g_assert_cmpuint(bytes, ==, 6);
    g_assert_cmpint(iov_min_run(&v, 8, &bytes), ==, 0);
    g_assert_cmpuint(bytes, ==, 36);
    /* The last window can win. */
    const size_t tail[] = { 5, 5, 1, 1 };
    IOVector t;
    vec_of_lengths(&t, tail, 4);
    g_assert_cmpint(iov_min_run(&t, 2, &bytes), ==, 2);
    g_assert_cmpuint(bytes, ==, 2);
    g_assert_cmpint(iov_min_run(&t, 2, NULL), ==, 2);
    iov_cleanup(&t);
    iov_cleanup(&v);
}

static void test_min_run_ties(void)
{
    size_t bytes;
    IOVector v;
    /* Every window equal: the lowest index. */
    const size_t same[] = { 4, 4, 4, 4, 4 };
    vec_of_lengths(&v, same, 5);
    for (int c = 1; c <= 5; c++) {
        g_assert_cmpint(iov_min_run(&v, c, &bytes), ==, 0);
        g_assert_cmpuint(bytes, ==, 4u * c);
    }
    iov_cleanup(&v);

    /* Two minimal windows, not at the start. */
    const size_t two[] = { 9, 1, 2, 9, 2, 1, 9 };
    vec_of_lengths(&v, two, 7);
    g_assert_cmpint(iov_min_run(&v, 2, &bytes), ==, 1);
    g_assert_cmpuint(bytes, ==, 3);
    iov_cleanup(&v);

    /* All zero-length. */
    const size_t zero[] = { 0, 0, 0 };
    vec_of_lengths(&v, zero, 3);
    g_assert_cmpint(iov_min_run(&v, 2, &bytes), ==, 0);
    g_assert_cmpuint(bytes, ==, 0);
    iov_cleanup(&v);
}

static void test_min_run_random_vs_brute_force(void)
{
    guint32 seed = test_seed();
    g_test_message("seed %u (STRATA_TEST_SEED)", seed);
    GRand *rand = g_rand_new_with_seed(seed);
    size_t lens[TEST_IOV_MAX];

    for (int iter = 0; iter < 300; iter++) {
        int n = g_rand_int_range(rand, 1, iter < 200 ? 40 : TEST_IOV_MAX + 1);
        /* Small lengths so ties happen often. */
        int range = g_rand_boolean(rand) ? 4 : 100000;
        for (int i = 0; i < n; i++) {
            lens[i] = g_rand_int_range(rand, 0, range);
        }
        IOVector v;
        vec_of_lengths(&v, lens, n);
        int counts[] = { 1, MIN(2, n), n / 2 + 1, n, g_rand_int_range(rand, 1, n + 1) };
        for (unsigned k = 0; k < G_N_ELEMENTS(counts); k++) {
            int c = counts[k];
            size_t best = SIZE_MAX;
            int best_i = -1;
            for (int i = 0; i + c <= n; i++) {
                size_t s = 0;
                for (int j = i; j < i + c; j++) {
                    s += lens[j];
                }
                if (s < best) {
                    best = s;
                    best_i = i;
                }
            }
            size_t bytes = 0;
            int got = iov_min_run(&v, c, &bytes);
            SEED_CHECK(seed, got == best_i);
            SEED_CHECK(seed, bytes == best);
        }
        iov_cleanup(&v);
    }
    g_rand_free(rand);
}

/* ---- check -------------------------------------------------------------- */

static void test_check_detects_bad_size(void)
{
    char buf[4];
    IOVector v;
    iov_init(&v, 4);
    g_assert_cmpint(iov_add(&v, buf, 4), ==, 0);
    g_assert_true(iov_check(&v));
    v.size++;
    g_assert_false(iov_check(&v));
    v.size--;
    v.iov[0].iov_len = 3;
    g_assert_false(iov_check(&v));
    iov_cleanup(&v);
}

/* ---- randomized against a flat reference ----------------------------------- */

typedef struct RandVec {
    IOVector v;
    char *backing;
} RandVec;

/*
 * A vector of random layout over @size logical bytes: random element
 * lengths, zero-length elements sprinkled in, elements placed in shuffled
 * order with gaps in one backing buffer so none is contiguous with the next.
 */
static void randvec_init(RandVec *r, GRand *rand, size_t size, int max)
{
    int n = 0;
    size_t *lens = g_new(size_t, max);
    size_t left = size;
    while (n < max - 1 && left > 0) {
        /* Drawn into a variable first: MIN() evaluates its arguments
         * twice. */
        size_t len = g_rand_int_range(rand, 1, 200);
        if (g_rand_int_range(rand, 0, 5) == 0) {
            len = 0;
        }
        len = MIN(left, len);
        lens[n++] = len;
        left -= len;
    }
    lens[n++] = left;    /* The last element takes the rest. */

    int *order = g_new(int, n);
    for (int i = 0; i < n; i++) {
        order[i] = i;
    }
    for (int i = n - 1; i > 0; i--) {
        int j = g_rand_int_range(rand, 0, i + 1);
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    size_t *place = g_new(size_t, n);
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        place[order[i]] = pos;
        pos += lens[order[i]] + 1;
    }
    r->backing = g_malloc0(pos + 1);
    iov_init(&r->v, max);
    for (int i = 0; i < n; i++) {
        g_assert_cmpint(iov_add(&r->v, r->backing + place[i], lens[i]), ==, 0);
    }
    g_assert_cmpuint(iov_size(&r->v), ==, size);
    g_free(place);
    g_free(order);
    g_free(lens);
}

static void randvec_cleanup(RandVec *r)
{
    iov_cleanup(&r->v);
    g_free(r->backing);
}

static size_t rand_off(GRand *rand, size_t size)
{
    /* Bias towards the edges, where the off-by-one bugs live. */
    switch (g_rand_int_range(rand, 0, 6)) {
    case 0:
        return 0;
    case 1:
        return size;
    default:
        return g_rand_int_range(rand, 0, (gint32)size + 1);
    }
}

static void test_random_vs_flat(void)
{
    guint32 seed = test_seed();
    g_test_message("seed %u (STRATA_TEST_SEED)", seed);
    GRand *rand = g_rand_new_with_seed(seed);

    for (int round = 0; round < 150; round++) {
        size_t size = g_rand_int_range(rand, 0, round < 75 ? 300 : 40000);
        RandVec a, b;
        randvec_init(&a, rand, size, TEST_IOV_MAX);
        randvec_init(&b, rand, size, TEST_IOV_MAX);
        char *ref = g_malloc(size + 1);
        char *refb = g_malloc(size + 1);
        char *out = g_malloc(size + 1);
        for (size_t i = 0; i < size; i++) {
            ref[i] = (char)g_rand_int(rand);
            refb[i] = (char)g_rand_int(rand);
        }
        SEED_CHECK(seed, iov_from_buf(&a.v, 0, ref, size) == size);
        SEED_CHECK(seed, iov_from_buf(&b.v, 0, refb, size) == size);
        IOVector s, s2;
        iov_init(&s, TEST_IOV_MAX);
        iov_init(&s2, TEST_IOV_MAX);

        for (int op = 0; op < 200; op++) {
            size_t off = rand_off(rand, size);
            size_t len = rand_off(rand, size - off);
            size_t wild = g_rand_int_range(rand, 0, (gint32)size + 50);
            switch (g_rand_int_range(rand, 0, 7)) {
            case 0: {    /* slice, then a slice of the slice */
                int cnt = iov_slice_count(&a.v, off, len);
                SEED_CHECK(seed, iov_slice(&s, &a.v, off, len) == 0);
                SEED_CHECK(seed, s.niov == cnt);
                SEED_CHECK(seed, !has_zero_length(&s));
                SEED_CHECK(seed, iov_size(&s) == len && iov_check(&s));
                SEED_CHECK(seed, iov_to_buf(&s, 0, out, len) == len);
                SEED_CHECK(seed, memcmp(out, ref + off, len) == 0);
                size_t o2 = rand_off(rand, len);
                size_t l2 = rand_off(rand, len - o2);
                SEED_CHECK(seed, iov_slice(&s2, &s, o2, l2) == 0);
                SEED_CHECK(seed, iov_to_buf(&s2, 0, out, l2) == l2);
                SEED_CHECK(seed, memcmp(out, ref + off + o2, l2) == 0);
                /* Past the end by one byte. */
                SEED_CHECK(seed, iov_slice(&s2, &s, o2, len - o2 + 1) ==
                                 -EINVAL);
                break;
            }
            case 1: {    /* to_buf at any offset, clipped at the end */
                size_t want = off < size ? MIN(wild, size - off) : 0;
                SEED_CHECK(seed, iov_to_buf(&a.v, off, out, wild) == want);
                SEED_CHECK(seed, memcmp(out, ref + off, want) == 0);
                break;
            }
            case 2: {    /* from_buf */
                size_t want = off < size ? MIN(wild, size - off) : 0;
                char *src = g_malloc(wild + 1);
                for (size_t i = 0; i < wild; i++) {
                    src[i] = (char)g_rand_int(rand);
                }
                SEED_CHECK(seed, iov_from_buf(&a.v, off, src, wild) == want);
                memcpy(ref + off, src, want);
                g_free(src);
                break;
            }
            case 3: {    /* memset, sometimes to zero, then is_zero */
                int c = g_rand_boolean(rand) ? 0 : g_rand_int_range(rand, 1, 256);
                SEED_CHECK(seed, iov_memset(&a.v, off, c, len) == len);
                memset(ref + off, c, len);
                bool zero = true;
                for (size_t i = off; i < off + len; i++) {
                    zero = zero && ref[i] == 0;
                }
                SEED_CHECK(seed, iov_is_zero(&a.v, off, len) == zero);
                break;
            }
            case 4: {    /* is_zero on the current contents */
                size_t end = off + MIN(wild, size - off);
                bool zero = true;
                for (size_t i = off; i < end; i++) {
                    zero = zero && ref[i] == 0;
                }
                SEED_CHECK(seed, iov_is_zero(&a.v, off, wild) == zero);
                break;
            }
            case 5: {    /* copy b -> a between different offsets */
                size_t boff = rand_off(rand, size);
                size_t want = MIN(wild, MIN(size - off, size - boff));
                SEED_CHECK(seed, iov_copy(&a.v, off, &b.v, boff, wild) == want);
                memcpy(ref + off, refb + boff, want);
                break;
            }
            case 6: {    /* concat two slices into one vector */
                size_t o2 = rand_off(rand, size);
                size_t l2 = rand_off(rand, size - o2);
                SEED_CHECK(seed, iov_slice(&s, &a.v, off, len) == 0);
                int n1 = s.niov;
                int n2 = iov_slice_count(&b.v, o2, l2);
                int ret = iov_concat_slice(&s, &b.v, o2, l2);
                if (n1 + n2 > s.max) {
                    SEED_CHECK(seed, ret == -E2BIG && s.niov == n1);
                    break;
                }
                SEED_CHECK(seed, ret == 0 && s.niov == n1 + n2);
                SEED_CHECK(seed, iov_to_buf(&s, 0, out, len) == len);
                SEED_CHECK(seed, memcmp(out, ref + off, len) == 0);
                SEED_CHECK(seed, iov_to_buf(&s, len, out, l2) == l2);
                SEED_CHECK(seed, memcmp(out, refb + o2, l2) == 0);
                break;
            }
            }
        }
        /* The whole vector still matches the reference. */
        char *all = iov_dup_bytes(&a.v);
        SEED_CHECK(seed, memcmp(all, ref, size) == 0);
        g_free(all);

        iov_cleanup(&s2);
        iov_cleanup(&s);
        g_free(out);
        g_free(refb);
        g_free(ref);
        randvec_cleanup(&b);
        randvec_cleanup(&a);
    }
    g_rand_free(rand);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/iov/init/inline-empty", test_init_inline_empty);
    g_test_add_func("/iov/init/buf-one-element", test_init_buf);
    g_test_add_func("/iov/add/zero-length-kept", test_add_zero_length_kept);
    g_test_add_func("/iov/add/small-max-inside-inline",
                    test_add_small_max_inside_inline);
    g_test_add_func("/iov/add/1024-limit-inline", test_add_limit_1024_inline);
    g_test_add_func("/iov/add/1024-limit-storage", test_add_limit_1024_storage);
    g_test_add_func("/iov/storage/small-cap", test_storage_small);
    g_test_add_func("/iov/heap/growth-reset-cleanup",
                    test_heap_growth_and_cleanup);
    g_test_add_func("/iov/push-front/order", test_push_front_order);
    g_test_add_func("/iov/external/wrap-read-only", test_external_wrap);
    g_test_add_func("/iov/external/empty", test_external_empty);

    g_test_add_func("/iov/slice/element-boundaries",
                    test_slice_element_boundaries);
    g_test_add_func("/iov/slice/mid-element", test_slice_mid_element);
    g_test_add_func("/iov/slice/zero-length-elements",
                    test_slice_zero_length_elements);
    g_test_add_func("/iov/slice/slice-of-slice", test_slice_of_slice);
    g_test_add_func("/iov/slice/out-of-range", test_slice_out_of_range);
    g_test_add_func("/iov/slice/e2big-leaves-dst-unchanged",
                    test_slice_e2big_leaves_dst_unchanged);
    g_test_add_func("/iov/concat/appends", test_concat_appends);
    g_test_add_func("/iov/concat/onto-itself", test_concat_onto_itself);

    g_test_add_func("/iov/buf/offsets-partial-tail",
                    test_buf_offsets_partial_tail);
    g_test_add_func("/iov/memset/offsets", test_memset_offsets);
    g_test_add_func("/iov/is-zero/every-position", test_is_zero);
    g_test_add_func("/iov/copy/offsets", test_copy_offsets);


    g_test_add_func("/iov/min-run/basic", test_min_run_basic);
    g_test_add_func("/iov/min-run/ties-lowest-index", test_min_run_ties);
    g_test_add_func("/iov/min-run/random-vs-brute-force",
                    test_min_run_random_vs_brute_force);


    g_test_add_func("/iov/check/detects-bad-size", test_check_detects_bad_size);
    g_test_add_func("/iov/random/slice-and-copy-vs-flat", test_random_vs_flat);

    return g_test_run();
}
