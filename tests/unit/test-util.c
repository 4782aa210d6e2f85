/*
 * Small helpers shared by unit tests
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>

#include "test-util.h"

void test_skipf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_test_skip(msg);
}

const char *test_engine_name(AioEngineId engine)
{
    static const char *const names[] = {
        [AIO_ENGINE_THREADS] = "threads",
        [AIO_ENGINE_NATIVE] = "native",
        [AIO_ENGINE_IO_URING] = "io_uring",
    };

    g_assert((unsigned)engine < G_N_ELEMENTS(names));
    return names[engine];
}

bool test_engine_usable(AioEngineId engine, bool direct)
{
    const AioEngineOps *ops = aio_engine_get(engine);
    const char *why = NULL;

    if (!ops) {
        test_skipf("engine %s not compiled in", test_engine_name(engine));
        return false;
    }
    if (!ops->available(&why)) {
        test_skipf("engine %s unavailable: %s", ops->name, why ? why : "?");
        return false;
    }
    if (engine == AIO_ENGINE_NATIVE && !direct) {
        test_skipf("native needs cache.direct=on");
        return false;
    }
    return true;
}
