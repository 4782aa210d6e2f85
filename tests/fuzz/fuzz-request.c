/*
 * Fuzz harness with an oracle: the request path against a byte model
 * (SPDX-License-Identifier: MIT).
 *
 * The first 4 bytes choose the mem device's constraints (request
 * alignment, memory alignment, max-transfer, max-iov); then every 8 bytes
 * are one request: type, offset, length, vector shape (element count,
 * zero-length elements) and buffer misalignment.  Reads must return what
 * the model holds, writes and write-zeroes change it, discard makes its
 * range unknown; requests past the end must fail and change nothing.  Any
 * difference traps.
 */
#include <string.h>
#include <sys/uio.h>

#include "block/block-int.h"
#include "tests/fuzz/fuzz.h"

#define DEV_SIZE (256 * 1024)
#define MAX_LEN 65536
#define MAX_ELEMS 1024

static const int max_iovs[] = { 1, 2, 3, 16, 1023, 1024, 1024, 1024 };

static void check(bool ok)
{
    if (!ok) {
        __builtin_trap();
    }
}

/* What a read of @len bytes must return: @model's bytes where @known is
 * set.  Whole runs compare with memcmp (a byte loop under the fuzzer's
 * instrumentation cost most of an input's time). */
static bool read_matches(const uint8_t *buf, const uint8_t *model,
                         const uint8_t *known, int64_t len)
{
    int64_t i = 0;

    while (i < len) {
        const uint8_t *hole = memchr(known + i, 0, len - i);
        int64_t end = hole ? hole - known : len;
        if (memcmp(buf + i, model + i, end - i)) {
            return false;
        }
        const uint8_t *next = hole ? memchr(hole, 1, len - end) : NULL;
        i = next ? next - known : len;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    StrataError *err = NULL;

    if (size < 4) {
        return 0;
    }
    unsigned align = 1u << (data[0] % 13);
    unsigned mem_align = 1u << (data[1] % 13);
    unsigned max_transfer = data[2] % 4 ? 0 : (4096u << (data[2] % 6));
    int max_iov = max_iovs[data[3] % 8];
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"mem\", \"size\": %d, \"align\": %u, "
        "\"mem-align\": %u, \"max-transfer\": %u, \"max-iov\": %d}",
        DEV_SIZE, align, mem_align, max_transfer, max_iov);

    StrataContext *ctx = strata_context_new(&err);
    StrataNode *node = ctx ? strata_node_open_json(ctx, json, &err) : NULL;
    if (!node) {
        error_free(err);
        strata_context_free(ctx);
        return 0;
    }
    StrataBackend *be = strata_backend_new(
        node, "fuzz", STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE,
        STRATA_PERM_ALL, &err);
    check(be != NULL);

    uint8_t *model = g_malloc0(DEV_SIZE);
    uint8_t *known = g_malloc(DEV_SIZE);
    memset(known, 1, DEV_SIZE);
    uint8_t *mem = g_malloc(MAX_LEN + 4096);
    static uint8_t pattern[256 + MAX_LEN];
    if (!pattern[1]) {
        for (size_t i = 0; i < sizeof(pattern); i++) {
            pattern[i] = (uint8_t)i;
        }
    }
    struct iovec *iov = g_new(struct iovec, MAX_ELEMS);

    for (size_t pos = 4, op = 0; pos + 8 <= size; pos += 8, op++) {
        const uint8_t *b = data + pos;
        int type = b[0] % 5;
        int64_t offset = ((int64_t)b[1] << 16 | b[2] << 8 | b[3]) %
                         (DEV_SIZE + 8192);
        int64_t len = (b[4] << 8 | b[5]) % (MAX_LEN + 1);
        int elems = 1 + b[6] % 64;
        bool zero_elems = b[6] & 0x40;
        size_t misalign = b[7] % 64;
        bool in_range = offset + len <= DEV_SIZE;
        uint8_t *buf = mem + misalign;
        int niov = 0;

        if (b[6] == 0xff) {
            elems = MAX_ELEMS - 2;      /* near IOV_MAX */
        }
        /* Split [0, len) into @elems pieces (some empty). */
        int64_t at = 0;
        for (int e = 0; e < elems && niov < MAX_ELEMS; e++) {
            int64_t piece = e == elems - 1 ? len - at
                          : (len - at) / (elems - e) + (e % 3 == 1 ? 1 : 0);
            piece = MIN(piece, len - at);
            if (piece == 0 && !zero_elems && e != elems - 1) {
                continue;
            }
            iov[niov++] = (struct iovec){ buf + at, (size_t)piece };
            at += piece;
        }
        if (at < len && niov < MAX_ELEMS) {
            iov[niov++] = (struct iovec){ buf + at, (size_t)(len - at) };
        }

        int ret;
        switch (type) {
        case 0: /* read */
            memset(buf, 0xee, len);
            ret = strata_backend_preadv(be, offset, iov, niov, 0);
            if (!in_range) {
                check(ret < 0);
                break;
            }
            check(ret == 0);
            check(read_matches(buf, model + offset, known + offset, len));
            break;
        case 1: /* write */
            /* Byte i is (op * 31 + i) mod 256. */
            memcpy(buf, pattern + (op * 31) % 256, len);
            ret = strata_backend_pwritev(be, offset, iov, niov,
                                         b[7] & 0x80 ? STRATA_REQ_FUA : 0);
            if (!in_range) {
                check(ret < 0);
                break;
            }
            check(ret == 0);
            memcpy(model + offset, buf, len);
            memset(known + offset, 1, len);
            break;
        case 2: /* write-zeroes */
            ret = strata_backend_pwrite_zeroes(
                be, offset, len, b[7] & 0x80 ? STRATA_REQ_MAY_UNMAP : 0);
            if (!in_range) {
                check(ret < 0);
                break;
            }
            check(ret == 0);
            memset(model + offset, 0, len);
            memset(known + offset, 1, len);
            break;
        case 3: /* discard: the range may read as anything afterwards */
            ret = strata_backend_pdiscard(be, offset, len);
            if (in_range && ret == 0) {
                memset(known + offset, 0, len);
            }
            break;
        case 4:
            check(strata_backend_flush(be) == 0);
            break;
        }
    }
    strata_backend_free(be);
    strata_node_unref(node);
    fuzz_run_until_idle(ctx);
    strata_context_free(ctx);
    g_free(iov);
    g_free(mem);
    g_free(known);
    g_free(model);
    return 0;
}
