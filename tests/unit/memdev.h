/*
 * Test harness: a mem device behind a backend, with a model of its bytes
 * SPDX-License-Identifier: MIT
 */
#ifndef STRATA_TESTS_MEMDEV_H
#define STRATA_TESTS_MEMDEV_H

#include <glib.h>
#include "block/block-int.h"
#include "block/mem.h"

/* Devices up to this size get a model; larger ones are for validation
 * tests that never write. */
#define MEMDEV_MODEL_MAX (64 << 20)

typedef struct TestDev {
    StrataContext *ctx;
    StrataNode *node;           /* the root, where requests enter */
    StrataNode *mem;            /* the mem node: @node, or below an align
                                   node (test_pad_filter_json()) */
    StrataBackend *be;
    int64_t size;
    uint8_t *model;             /* what the device must hold, or NULL */
} TestDev;

/* Open a mem node from the JSON @fmt and a backend taking read, write and
 * resize.  The model starts as the device does: all zeroes.  Under
 * STRATA_TEST_PAD_FILTER=align an align node with mem's limits sits above
 * it and does the shaping (test_pad_filter_json()). */
void dev_open(TestDev *d, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* Fail the test if mem saw a request outside its limits (invariant 1). */
void dev_check_violations(TestDev *d);
/* The device equals the model, byte for byte (no-op without a model). */
void dev_check_model(TestDev *d);
/* Both checks, then close everything. */
void dev_close(TestDev *d);

#endif
