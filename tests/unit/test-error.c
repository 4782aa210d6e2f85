/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <glib.h>
#include "util/error.h"

static void test_setg_message(void)
{
    g_autoptr(StrataError) err = NULL;
    error_setg(&err, "file.aio: expected one of %s", "threads, native");
    g_assert_nonnull(err);
    g_assert_cmpstr(error_get_message(err), ==,
                    "file.aio: expected one of threads, native");
    g_assert_cmpint(error_get_errno(err), ==, EINVAL);
    g_assert_cmpint(strata_error_get_class(err), ==, STRATA_ERROR_GENERIC);
}

static void test_errno_suffix(void)
{
    g_autoptr(StrataError) err = NULL;
    error_setg_errno(&err, -ENOENT, "Could not open '%s'", "x.img");
    g_assert_cmpint(error_get_errno(err), ==, ENOENT);
    g_assert_true(g_str_has_prefix(error_get_message(err), "Could not open 'x.img': "));
    g_assert_nonnull(strstr(error_get_message(err), g_strerror(ENOENT)));
}

static void test_null_errp(void)
{
    /* Must not crash nor leak (ASan checks the leak). */
    error_setg(NULL, "ignored %d", 1);
    error_setg_errno(NULL, EIO, "ignored");
    error_propagate(NULL, NULL);
    StrataError *local = NULL;
    error_set_option(&local, "x: bad");
    g_assert_cmpint(strata_error_get_class(local), ==, STRATA_ERROR_INVALID_OPTION);
    error_propagate(NULL, local);
}

static void test_propagate_prepend(void)
{
    g_autoptr(StrataError) err = NULL;
    StrataError *local = NULL;
    error_setg(&local, "unknown option");
    error_propagate(&err, local);
    error_prepend(&err, "%s: ", "file.foo");
    g_assert_cmpstr(strata_error_get_message(err), ==, "file.foo: unknown option");
}

static void test_set_twice_asserts(void)
{
    if (g_test_subprocess()) {
        StrataError *err = NULL;
        error_setg(&err, "first");
        error_setg(&err, "second");
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/error/setg/message", test_setg_message);
    g_test_add_func("/error/setg-errno/strerror-suffix", test_errno_suffix);
    g_test_add_func("/error/null-errp/ignored", test_null_errp);
    g_test_add_func("/error/propagate/prepend", test_propagate_prepend);
    g_test_add_func("/error/set-twice/asserts", test_set_twice_asserts);
    return g_test_run();
}
