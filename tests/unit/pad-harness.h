/*
 * Shared by the request-shaping tests (test-pad.c, test-pad-model.c):
 * deterministic device content on top of the mem-device harness
 * SPDX-License-Identifier: MIT
 */
#ifndef STRATA_TESTS_PAD_HARNESS_H
#define STRATA_TESTS_PAD_HARNESS_H

#include <stdint.h>
#include <string.h>
#include <glib.h>

#include "block/backend-int.h"
#include "block/block-int.h"
#include "memdev.h"

static inline Loop *dev_loop(TestDev *d)
{
    return d->ctx->loop;
}

/* Deterministic content: byte @x of the device as written by writer @id. */
static inline uint8_t pat(uint32_t id, int64_t x)
{
    uint64_t h = ((uint64_t)id << 40) ^ (uint64_t)x;

    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return (uint8_t)h;
}

/* Fill the whole device (and the model) with pat(@id, x), aligned. */
static inline void dev_fill(TestDev *d, uint32_t id)
{
    uint8_t *buf = g_aligned_alloc(1, d->size, 4096);

    for (int64_t i = 0; i < d->size; i++) {
        buf[i] = pat(id, i);
    }
    g_assert_cmpint(strata_backend_pwrite(d->be, 0, buf, d->size, 0), ==, 0);
    memcpy(d->model, buf, d->size);
    g_aligned_free(buf);
}

#endif
