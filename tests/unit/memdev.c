/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <stdarg.h>
#include "memdev.h"
#include "test-util.h"

void dev_open(TestDev *d, const char *fmt, ...)
{
    g_autoptr(StrataError) err = NULL;
    g_autofree char *json = NULL;
    va_list ap;

    va_start(ap, fmt);
    g_autofree char *given = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    json = test_pad_filter_json(given);

    *d = (TestDev) { 0 };
    d->ctx = strata_context_new(&err);
    g_assert_nonnull(d->ctx);
    d->node = strata_node_open_json(d->ctx, json, &err);
    if (!d->node) {
        g_error("opening %s: %s", json, strata_error_get_message(err));
    }
    d->mem = d->node;
    while (node_filtered(d->mem)) {
        d->mem = node_filtered(d->mem);
    }
    if (d->mem != d->node) {
        g_assert_cmpstr(strata_node_get_driver(d->node), ==, "align");
    }
    d->be = strata_backend_new(d->node, "t",
                               STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE |
                               STRATA_PERM_RESIZE, STRATA_PERM_ALL, &err);
    g_assert_nonnull(d->be);
    d->size = strata_node_get_length(d->node);
    if (d->size <= MEMDEV_MODEL_MAX) {
        d->model = g_malloc0(d->size);
    }
}

void dev_check_violations(TestDev *d)
{
    MemCounters c;

    mem_get_counters(d->mem, &c);
    if (c.limit_violations) {
        g_error("%" PRIu64 " limit violations, last: %s", c.limit_violations,
                mem_last_violation(d->mem));
    }
}

void dev_check_model(TestDev *d)
{
    const uint8_t *data = mem_get_data(d->mem);

    if (!d->model) {
        return;
    }
    g_assert_cmpuint(mem_get_size(d->mem), ==, d->size);
    for (int64_t i = 0; i < d->size; i++) {
        if (data[i] != d->model[i]) {
            g_error("device differs from the model at byte %" PRId64
                    ": 0x%02x, expected 0x%02x", i, data[i], d->model[i]);
        }
    }
}

void dev_close(TestDev *d)
{
    if (d->mem != d->node) {
        /* The align node above shaped everything: mem's own entry, with
         * the same limits, had nothing left to do. */
        BlockStats st = node_stats_sum(d->mem);
        const BlockPadStats *p = &st.pad;
        g_assert_cmpuint(p->padded_reads + p->rmw_writes + p->bytes_bounced +
                         p->vectors_collapsed + p->split_requests, ==, 0);
    }
    dev_check_violations(d);
    dev_check_model(d);
    strata_backend_free(d->be);
    strata_node_unref(d->node);
    strata_context_free(d->ctx);
    g_free(d->model);
}
