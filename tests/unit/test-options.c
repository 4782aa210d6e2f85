/* SPDX-License-Identifier: MIT */
/*
 * Option trees: JSON and dotted keys give the same trees, every error names
 * the option path, and the JSON input is checked more strictly than
 * json-glib would on its own.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>
#include "util/options.h"

/* ---- helpers ------------------------------------------------------------ */

/* The error must exist, be an option error and start with @prefix. */
static void check_error(StrataError *err, const char *prefix)
{
    g_assert_nonnull(err);
    if (!g_str_has_prefix(err->message, prefix)) {
        g_error("error message '%s' does not start with '%s'", err->message,
                prefix);
    }
    g_assert_cmpint(err->cls, ==, STRATA_ERROR_INVALID_OPTION);
    g_assert_cmpint(err->errnum, ==, EINVAL);
}

static void json_fails(const char *text, const char *prefix)
{
    StrataError *err = NULL;
    OptNode *node = opts_parse_json(text, &err);
    if (node) {
        g_error("'%s' was accepted", text);
    }
    check_error(err, prefix);
    error_free(err);
}

static void dotted_fails(const char *text, const char *prefix)
{
    StrataError *err = NULL;
    OptNode *node = opts_parse_dotted(text, &err);
    if (node) {
        g_error("'%s' was accepted", text);
    }
    check_error(err, prefix);
    error_free(err);
}

static OptNode *json_ok(const char *text)
{
    StrataError *err = NULL;
    OptNode *node = opts_parse_json(text, &err);
    if (!node) {
        g_error("'%s' rejected: %s", text, err->message);
    }
    g_assert_null(err);
    return node;
}

static OptNode *dotted_ok(const char *text)
{
    StrataError *err = NULL;
    OptNode *node = opts_parse_dotted(text, &err);
    if (!node) {
        g_error("'%s' rejected: %s", text, err->message);
    }
    g_assert_null(err);
    return node;
}

/* ---- one tree from both sources ----------------------------------------- */

static const char *const aio_names[] = {
    "threads", "native", "io_uring", "auto", NULL
};

/* What a raw-over-file driver stack would read out of its options. */
static void check_driver_stack(OptNode *opts)
{
    StrataError *err = NULL;
    const char *s;
    int64_t i;
    uint64_t u;
    bool b;
    int e;

    g_assert_true(opts_require_str(opts, "driver", &s, &err));
    g_assert_cmpstr(s, ==, "raw");

    OptNode *file = opts_get(opts, "file");
    g_assert_nonnull(file);
    g_assert_cmpint(opts_type(file), ==, OPT_OBJECT);
    g_assert_cmpstr(opts_path(file), ==, "file");
    g_assert_true(opts_require_str(file, "driver", &s, &err));
    g_assert_cmpstr(s, ==, "file");
    g_assert_true(opts_require_str(file, "filename", &s, &err));
    g_assert_cmpstr(s, ==, "x.img");
    g_assert_true(opts_get_enum(file, "aio", aio_names, 0, &e, &err));
    g_assert_cmpint(e, ==, 2);
    g_assert_true(opts_get_bool(file, "cache.direct", false, &b, &err));
    g_assert_true(b);
    g_assert_true(opts_get_size(file, "size", 0, &u, &err));
    g_assert_cmpuint(u, ==, 1048576);
    g_assert_true(opts_get_int(file, "locking", 7, &i, &err));
    g_assert_cmpint(i, ==, 7);

    OptNode *list = opts_get(opts, "inject-error");
    g_assert_nonnull(list);
    g_assert_cmpint(opts_type(list), ==, OPT_LIST);
    g_assert_cmpuint(opts_list_length(list), ==, 2);
    OptNode *rule = opts_list_get(list, 1);
    g_assert_cmpstr(opts_path(rule), ==, "inject-error.1");
    g_assert_true(opts_get_str(rule, "event", NULL, &s, &err));
    g_assert_cmpstr(s, ==, "write_aio");
    g_assert_true(opts_get_int(rule, "errno", 0, &i, &err));
    g_assert_cmpint(i, ==, 28);
    rule = opts_list_get(list, 0);
    g_assert_true(opts_get_str(rule, "event", NULL, &s, &err));
    g_assert_cmpstr(s, ==, "read_aio");
    g_assert_true(opts_get_int(rule, "errno", 0, &i, &err));
    g_assert_cmpint(i, ==, 5);

    g_assert_true(opts_check_consumed(opts, &err));
    g_assert_null(err);
}

static void test_same_tree_both_sources(void)
{
    g_autoptr(OptNode) json = json_ok(
        "{\"driver\": \"raw\", \"file\": {\"driver\": \"file\", "
        "\"filename\": \"x.img\", \"aio\": \"io_uring\", "
        "\"cache\": {\"direct\": true}, \"size\": 1048576}, "
        "\"inject-error\": [{\"event\": \"read_aio\", \"errno\": 5}, "
        "{\"event\": \"write_aio\", \"errno\": 28}]}");
    g_autoptr(OptNode) dotted = dotted_ok(
        "driver=raw,file.driver=file,file.filename=x.img,file.aio=io_uring,"
        "file.cache.direct=on,file.size=1M,"
        "inject-error.1.event=write_aio,inject-error.0.event=read_aio,"
        "inject-error.0.errno=5,inject-error.1.errno=28");

    check_driver_stack(json);
    check_driver_stack(dotted);

    OptNode *direct = opts_peek(opts_peek(opts_peek(dotted, "file"), "cache"),
                                "direct");
    g_assert_cmpstr(opts_path(direct), ==, "file.cache.direct");
    g_assert_cmpint(opts_type(direct), ==, OPT_STRING);
    g_assert_cmpstr(opts_scalar_str(direct), ==, "on");
}

static void test_json_types(void)
{
    g_autoptr(OptNode) root = json_ok(
        "{\"s\": \"x\", \"i\": -42, \"b\": false, \"n\": null, "
        "\"o\": {}, \"l\": [1, \"two\", [true]]}");

    g_assert_cmpuint(opts_object_size(root), ==, 6);
    const char *keys[] = { "s", "i", "b", "n", "o", "l" };
    OptType types[] = { OPT_STRING, OPT_INT, OPT_BOOL, OPT_NULL, OPT_OBJECT,
                        OPT_LIST };
    for (guint i = 0; i < 6; i++) {
        g_assert_cmpstr(opts_object_key(root, i), ==, keys[i]);
        g_assert_cmpint(opts_type(opts_object_value(root, i)), ==, types[i]);
    }
    g_assert_cmpstr(opts_scalar_str(opts_peek(root, "i")), ==, "-42");
    g_assert_cmpstr(opts_scalar_str(opts_peek(root, "b")), ==, "false");
    g_assert_cmpstr(opts_scalar_str(opts_peek(root, "n")), ==, "null");
    OptNode *l = opts_peek(root, "l");
    g_assert_cmpuint(opts_list_length(l), ==, 3);
    OptNode *inner = opts_list_get(opts_list_get(l, 2), 0);
    g_assert_cmpstr(opts_path(inner), ==, "l.2.0");
    g_assert_cmpstr(opts_path(root), ==, "");
    g_assert_true(opts_has(root, "o"));
    g_assert_false(opts_has(root, "zz"));
    g_assert_null(opts_peek(root, "zz"));
}

/* ---- getters ------------------------------------------------------------ */

static void test_getter_type_errors(void)
{
    g_autoptr(OptNode) root = json_ok(
        "{\"file\": {\"size\": \"abc\", \"neg\": -1, \"name\": 5, "
        "\"flag\": \"on\", \"n\": null, \"obj\": {}, \"big\": \"1E\", "
        "\"huge\": \"99999999999999999999\", \"bigsize\": \"16E\", "
        "\"aio\": \"nativ\", \"aio2\": 3}}");
    OptNode *file = opts_get(root, "file");
    StrataError *err = NULL;
    const char *s;
    int64_t i;
    uint64_t u;
    bool b;
    int e;

    g_assert_false(opts_get_int(file, "size", 0, &i, &err));
    check_error(err, "file.size: expected integer, got string 'abc'");
    g_clear_pointer(&err, error_free);

    g_assert_false(opts_get_size(file, "size", 0, &u, &err));
    check_error(err, "file.size: expected size, got string 'abc'");
    g_clear_pointer(&err, error_free);

    g_assert_false(opts_get_size(file, "neg", 0, &u, &err));
    check_error(err, "file.neg: size must not be negative");
    g_clear_pointer(&err, error_free);

    g_assert_false(opts_get_str(file, "name", NULL, &s, &err));
    check_error(err, "file.name: expected string, got integer 5");
    g_clear_pointer(&err, error_free);

    g_assert_false(opts_require_str(file, "name", &s, &err));
    check_error(err, "file.name: expected string");
    g_clear_pointer(&err, error_free);

    /* JSON strings are not booleans, even "on". */
    g_assert_false(opts_get_bool(file, "flag", false, &b, &err));
    check_error(err, "file.flag: expected boolean, got string 'on'");
    g_clear_pointer(&err, error_free);

    g_assert_false(opts_get_bool(file, "n", false, &b, &err));
    check_error(err, "file.n: expected boolean, got null");
    g_clear_pointer(&err, error_free);

    g_assert_false(opts_get_int(file, "obj", 0, &i, &err));
    check_error(err, "file.obj: expected integer, got object");
    g_clear_pointer(&err, error_free);

    g_assert_false(opts_get_int(file, "big", 0, &i, &err));
    check_error(err, "file.big: expected integer, got string '1E'");
    g_clear_pointer(&err, error_free);

    g_assert_false(opts_get_int(file, "huge", 0, &i, &err));
    check_error(err, "file.huge: integer out of range");
    g_clear_pointer(&err, error_free);

    g_assert_false(opts_get_size(file, "bigsize", 0, &u, &err));
    check_error(err, "file.bigsize: size out of range");
    g_clear_pointer(&err, error_free);

    g_assert_false(opts_get_enum(file, "aio", aio_names, 0, &e, &err));
    g_assert_cmpstr(err->message, ==,
                    "file.aio: expected one of threads, native, io_uring, auto");
    check_error(err, "file.aio:");
    g_clear_pointer(&err, error_free);

    g_assert_false(opts_get_enum(file, "aio2", aio_names, 0, &e, &err));
    check_error(err, "file.aio2: expected one of threads, native");
    g_clear_pointer(&err, error_free);

    g_assert_false(opts_require_str(file, "filename", &s, &err));
    g_assert_cmpstr(err->message, ==, "file.filename: missing");
    check_error(err, "file.filename: missing");
    g_clear_pointer(&err, error_free);

    /* A getter on something that is not an object names that something. */
    g_assert_false(opts_get_str(opts_peek(file, "name"), "x", NULL, &s, &err));
    check_error(err, "file.name: expected object, got integer 5");
    g_clear_pointer(&err, error_free);

    /* A dotted getter key through a scalar. */
    g_assert_false(opts_get_bool(file, "name.direct", false, &b, &err));
    check_error(err, "file.name: expected object");
    g_clear_pointer(&err, error_free);
}

static void test_getter_long_value_quoted_short(void)
{
    g_autofree char *longval = g_strnfill(500, 'z');
    g_autoptr(OptNode) root = opts_new_object();
    g_assert_true(opts_set_str(root, "n", longval, NULL));
    StrataError *err = NULL;
    int64_t i;
    g_assert_false(opts_get_int(root, "n", 0, &i, &err));
    check_error(err, "n: expected integer, got string 'zzzz");
    g_assert_cmpuint(strlen(err->message), <, 120);
    g_assert_true(g_str_has_suffix(err->message, "...'"));
    error_free(err);
}

static void test_getter_defaults(void)
{
    g_autoptr(OptNode) root = opts_new_object();
    const char *s;
    int64_t i;
    uint64_t u;
    bool b;
    int e;

    g_assert_true(opts_get_str(root, "a", "dflt", &s, NULL));
    g_assert_cmpstr(s, ==, "dflt");
    g_assert_true(opts_get_int(root, "a", -3, &i, NULL));
    g_assert_cmpint(i, ==, -3);
    g_assert_true(opts_get_size(root, "a", 4096, &u, NULL));
    g_assert_cmpuint(u, ==, 4096);
    g_assert_true(opts_get_bool(root, "a", true, &b, NULL));
    g_assert_true(b);
    g_assert_true(opts_get_enum(root, "a", aio_names, 3, &e, NULL));
    g_assert_cmpint(e, ==, 3);
    g_assert_true(opts_get_bool(root, "x.y.z", false, &b, NULL));
    g_assert_false(b);
    /* A NULL object reads as empty. */
    g_assert_true(opts_get_int(NULL, "a", 9, &i, NULL));
    g_assert_cmpint(i, ==, 9);
    g_assert_null(opts_get(NULL, "a"));
    g_assert_true(opts_check_consumed(root, NULL));
}

static void test_dotted_coercion(void)
{
    static const struct {
        const char *text;
        bool value;
    } bools[] = {
        { "on", true }, { "off", false }, { "true", true },
        { "false", false }, { "yes", true }, { "no", false },
    };
    static const struct {
        const char *text;
        int64_t value;
    } ints[] = {
        { "0", 0 }, { "42", 42 }, { "-42", -42 }, { "0x10", 16 },
        { "-0x10", -16 }, { "010", 10 },
        { "9223372036854775807", INT64_MAX },
        { "-9223372036854775808", INT64_MIN },
        { "0x7fffffffffffffff", INT64_MAX },
    };
    static const char *const bad_ints[] = {
        "", "-", "x", "1x", " 1", "1 ", "0x", "+1", "1.0", "1k", "--1",
    };
    StrataError *err = NULL;

    for (size_t k = 0; k < G_N_ELEMENTS(bools); k++) {
        g_autofree char *text = g_strdup_printf("a.b=%s", bools[k].text);
        g_autoptr(OptNode) root = dotted_ok(text);
        bool b = !bools[k].value;
        g_assert_true(opts_get_bool(root, "a.b", false, &b, &err));
        g_assert_cmpint(b, ==, bools[k].value);
    }
    for (size_t k = 0; k < G_N_ELEMENTS(ints); k++) {
        g_autofree char *text = g_strdup_printf("n=%s", ints[k].text);
        g_autoptr(OptNode) root = dotted_ok(text);
        int64_t i = 1;
        g_assert_true(opts_get_int(root, "n", 0, &i, &err));
        g_assert_cmpint(i, ==, ints[k].value);
    }
    for (size_t k = 0; k < G_N_ELEMENTS(bad_ints); k++) {
        g_autoptr(OptNode) root = opts_new_object();
        g_assert_true(opts_set_str(root, "x.n", bad_ints[k], NULL));
        int64_t i;
        g_assert_false(opts_get_int(root, "x.n", 0, &i, &err));
        check_error(err, "x.n: expected integer, got string '");
        g_clear_pointer(&err, error_free);
    }
    g_autoptr(OptNode) root = dotted_ok("a=9223372036854775808,"
                                        "b=-9223372036854775809,c=maybe,d=On");
    int64_t i;
    bool b;
    g_assert_false(opts_get_int(root, "a", 0, &i, &err));
    check_error(err, "a: integer out of range");
    g_clear_pointer(&err, error_free);
    g_assert_false(opts_get_int(root, "b", 0, &i, &err));
    check_error(err, "b: integer out of range");
    g_clear_pointer(&err, error_free);
    g_assert_false(opts_get_bool(root, "c", false, &b, &err));
    check_error(err, "c: expected boolean, got string 'maybe'");
    g_clear_pointer(&err, error_free);
    g_assert_false(opts_get_bool(root, "d", false, &b, &err));
    check_error(err, "d: expected boolean, got string 'On'");
    g_clear_pointer(&err, error_free);

    /* Integer and size getters take JSON strings in the dotted syntax too. */
    g_autoptr(OptNode) json = json_ok("{\"size\": \"64k\", \"n\": \"0x20\"}");
    uint64_t u;
    g_assert_true(opts_get_size(json, "size", 0, &u, &err));
    g_assert_cmpuint(u, ==, 65536);
    g_assert_true(opts_get_int(json, "n", 0, &i, &err));
    g_assert_cmpint(i, ==, 32);
}

static void test_size_parsing(void)
{
    static const struct {
        const char *text;
        uint64_t value;
    } good[] = {
        { "0", 0 }, { "512", 512 }, { "4k", 4096 }, { "4K", 4096 },
        { "1M", 1048576 }, { "1m", 1048576 }, { "2G", 2ULL << 30 },
        { "3T", 3ULL << 40 }, { "1P", 1ULL << 50 }, { "1E", 1ULL << 60 },
        { "15E", 15ULL << 60 }, { "100B", 100 }, { "100b", 100 },
        { "1.5G", 3ULL << 29 }, { "0.5k", 512 }, { "2.0", 2 },
        { "1.25k", 1280 }, { "0x1000", 4096 }, { "0XfF", 255 },
        { "18446744073709551615", UINT64_MAX },
        { "0xffffffffffffffff", UINT64_MAX },
        { "16383.5P", (16383ULL << 50) + (1ULL << 49) },
        { "15.9375E", UINT64_MAX - (1ULL << 56) + 1 },
    };
    static const char *const bad[] = {
        "", "k", "-1", "-1k", "1.3k", "1.5", "1.", ".5k", "1kB", "1KiB",
        "4 k", " 4k", "4k ", "1x", "0x", "0x1k", "0x1.5", "1.2.3",
        "16E", "18446744073709551616", "0x10000000000000000", "99999999999E",
        "1.0000000000000000000k",
    };
    uint64_t u;

    for (size_t k = 0; k < G_N_ELEMENTS(good); k++) {
        u = 1;
        if (!parse_size(good[k].text, &u)) {
            g_error("parse_size('%s') failed", good[k].text);
        }
        g_assert_cmpuint(u, ==, good[k].value);
    }
    for (size_t k = 0; k < G_N_ELEMENTS(bad); k++) {
        u = 77;
        if (parse_size(bad[k], &u)) {
            g_error("parse_size('%s') accepted: %" G_GUINT64_FORMAT, bad[k], u);
        }
        g_assert_cmpuint(u, ==, 77);
    }

    /* The getter tells overflow from garbage. */
    g_autoptr(OptNode) root = dotted_ok("a=16E,b=1.3k,c=0x20,d=-5");
    StrataError *err = NULL;
    g_assert_false(opts_get_size(root, "a", 0, &u, &err));
    check_error(err, "a: size out of range, got string '16E'");
    g_clear_pointer(&err, error_free);
    g_assert_false(opts_get_size(root, "b", 0, &u, &err));
    check_error(err, "b: expected size, got string '1.3k'");
    g_clear_pointer(&err, error_free);
    g_assert_true(opts_get_size(root, "c", 0, &u, &err));
    g_assert_cmpuint(u, ==, 32);
    g_assert_false(opts_get_size(root, "d", 0, &u, &err));
    check_error(err, "d: expected size, got string '-5'");
    g_clear_pointer(&err, error_free);

    g_autoptr(OptNode) json = json_ok("{\"s\": 9223372036854775807}");
    g_assert_true(opts_get_size(json, "s", 0, &u, &err));
    g_assert_cmpuint(u, ==, INT64_MAX);
}

/* ---- consumption -------------------------------------------------------- */

static void test_unknown_option_deep(void)
{
    g_autoptr(OptNode) root = json_ok(
        "{\"driver\": \"raw\", \"file\": {\"driver\": \"file\", "
        "\"cache\": {\"direct\": true, \"no-flush\": false, \"bogus\": 1}}}");
    StrataError *err = NULL;
    const char *s;
    bool b;

    g_assert_true(opts_get_str(root, "driver", NULL, &s, NULL));
    /* Nothing read inside "file": the outermost key is reported. */
    g_assert_false(opts_check_consumed(root, &err));
    g_assert_cmpstr(err->message, ==, "file: unknown option");
    check_error(err, "file: unknown option");
    g_clear_pointer(&err, error_free);

    OptNode *file = opts_get(root, "file");
    g_assert_true(opts_get_str(file, "driver", NULL, &s, NULL));
    g_assert_false(opts_check_consumed(root, &err));
    check_error(err, "file.cache: unknown option");
    g_clear_pointer(&err, error_free);

    g_assert_true(opts_get_bool(file, "cache.direct", false, &b, NULL));
    g_assert_true(opts_get_bool(file, "cache.no-flush", true, &b, NULL));
    g_assert_false(b);
    g_assert_false(opts_check_consumed(root, &err));
    g_assert_cmpstr(err->message, ==, "file.cache.bogus: unknown option");
    g_clear_pointer(&err, error_free);

    /* Checking a subtree only looks below it. */
    OptNode *cache = opts_peek(file, "cache");
    g_assert_false(opts_check_consumed(cache, &err));
    check_error(err, "file.cache.bogus: unknown option");
    g_clear_pointer(&err, error_free);

    opts_mark_consumed(opts_peek(cache, "bogus"));
    g_assert_true(opts_check_consumed(root, &err));
    g_assert_null(err);
}

static void test_unknown_option_in_list(void)
{
    g_autoptr(OptNode) root = dotted_ok(
        "inject-error.0.event=read_aio,inject-error.1.event=write_aio,"
        "inject-error.1.sector=5,tags.0=a,tags.1=b");
    StrataError *err = NULL;
    const char *s;

    OptNode *list = opts_get(root, "inject-error");
    opts_get(root, "tags");
    for (guint i = 0; i < opts_list_length(list); i++) {
        g_assert_true(opts_get_str(opts_list_get(list, i), "event", NULL, &s,
                                   NULL));
    }
    /* Scalar elements are covered by reading the list; object members not. */
    g_assert_false(opts_check_consumed(root, &err));
    g_assert_cmpstr(err->message, ==, "inject-error.1.sector: unknown option");
    g_clear_pointer(&err, error_free);

    opts_mark_consumed(root);
    g_assert_true(opts_check_consumed(root, NULL));
}

/* ---- JSON strictness ---------------------------------------------------- */

static void test_json_duplicates(void)
{
    json_fails("{\"driver\": \"raw\", \"driver\": \"qcow2\"}",
               "driver: duplicate key");
    json_fails("{\"file\": {\"driver\": \"file\", \"x\": [1, {}], "
               "\"driver\": \"host_device\"}}",
               "file.driver: duplicate key");
    /* Same key after decoding escapes. */
    json_fails("{\"a\": 1, \"\\u0061\": 2}", "a: duplicate key");
    json_fails("{\"k\\\"q\": 1, \"k\\u0022q\": 2}", "k\"q: duplicate key");
    json_fails("{\"l\": [{\"e\": 1}, {\"e\": 2, \"e\": 3}]}",
               "l.1.e: duplicate key");
    json_fails("{\"a\": {\"b\": {\"c\": {\"d\": 1, \"d\": 1}}}}",
               "a.b.c.d: duplicate key");

    /* The same name in different objects, and strings that look like
     * structure, are fine. */
    g_autoptr(OptNode) root = json_ok(
        "{\"a\": {\"x\": 1}, \"b\": {\"x\": 2}, "
        "\"c\": \"}, \\\"a\\\": {\", \"d\": [\"{\", \",\", \"]\"], "
        "\"x\": {\"a\": 1}, \"\\u00e9t\\u00e9\": \"\\ud83d\\ude00\"}");
    const char *s;
    g_assert_true(opts_get_str(root, "c", NULL, &s, NULL));
    g_assert_cmpstr(s, ==, "}, \"a\": {");
    g_assert_true(opts_get_str(root, "\xc3\xa9t\xc3\xa9", NULL, &s, NULL));
    g_assert_cmpstr(s, ==, "\xf0\x9f\x98\x80");
    g_assert_cmpstr(opts_object_key(root, 5), ==, "\xc3\xa9t\xc3\xa9");
}

static void test_json_integer_range(void)
{
    int64_t i;
    g_autoptr(OptNode) root = json_ok(
        "{\"max\": 9223372036854775807, \"min\": -9223372036854775808, "
        "\"zero\": -0}");
    g_assert_true(opts_get_int(root, "max", 0, &i, NULL));
    g_assert_cmpint(i, ==, INT64_MAX);
    g_assert_true(opts_get_int(root, "min", 0, &i, NULL));
    g_assert_cmpint(i, ==, INT64_MIN);
    g_assert_true(opts_get_int(root, "zero", 1, &i, NULL));
    g_assert_cmpint(i, ==, 0);

    json_fails("{\"file\": {\"size\": 9223372036854775808}}",
               "file.size: integer out of range");
    json_fails("{\"file\": {\"size\": 18446744073709551616}}",
               "file.size: integer out of range");
    json_fails("{\"o\": -9223372036854775809}", "o: integer out of range");
    json_fails("{\"o\": -99999999999999999999999}", "o: integer out of range");
    json_fails("{\"l\": [1, 2, 10000000000000000000]}",
               "l.2: integer out of range");
    json_fails("{\"f\": 1.5}", "f: expected integer, got number 1.5");
    json_fails("{\"f\": 1e3}", "f: expected integer, got number 1e3");
    json_fails("{\"a\": {\"f\": -0.0}}", "a.f: expected integer");
}

static void test_json_syntax_errors(void)
{
    json_fails("", "JSON syntax error at line 1, column 1: unexpected end");
    json_fails("  \n ", "JSON syntax error at line 2, column 2");
    json_fails("{\"a\": 1,}", "JSON syntax error at line 1, column 9: "
               "unexpected character '}', expected member name");
    json_fails("{\n  \"a\": 1\n  \"b\": 2\n}",
               "JSON syntax error at line 3, column 3: unexpected "
               "character '\"', expected ',' or '}'");
    /* Things json-glib 1.6 would quietly accept. */
    json_fails("{'a': 1}", "JSON syntax error at line 1, column 2");
    json_fails("{\"a\": /* c */ 1}", "JSON syntax error at line 1, column 7");
    json_fails("{\"a\": 0x10}", "JSON syntax error at line 1, column 8");
    json_fails("{\"a\": 01}", "JSON syntax error at line 1, column 8");
    json_fails("{\"a\": .5}", "JSON syntax error at line 1, column 7");
    json_fails("{\"a\": - 1}", "JSON syntax error at line 1, column 8");
    json_fails("{\"a\": 1}{\"b\": 2}", "JSON syntax error at line 1, column 9: "
               "unexpected character '{', expected end of input");
    json_fails("{\"a\": \"\\x41\"}", "JSON syntax error at line 1, column 8: "
               "invalid escape");
    json_fails("{\"a\": \"tab\there\"}", "JSON syntax error at line 1, "
               "column 11: control character");
    json_fails("{\"a\": \"x\\u0000y\"}", "JSON syntax error at line 1, "
               "column 9: \\u0000");
    json_fails("{\"a\": \"\\ud800\"}", "JSON syntax error at line 1, column 8: "
               "unpaired surrogate");
    json_fails("{\"a\": \"\\udc00\"}", "JSON syntax error at line 1, column 8: "
               "unpaired surrogate");
    json_fails("{\"a\": \"\\u12\"}", "JSON syntax error at line 1, column 8");
    json_fails("{\"a\": \"abc", "JSON syntax error at line 1, column 7: "
               "unterminated string");
    json_fails("{\"a\": tru}", "JSON syntax error at line 1, column 7");
    json_fails("{\"a\": truex}", "JSON syntax error at line 1, column 7");
    json_fails("{\"a\": NaN}", "JSON syntax error at line 1, column 7");
    json_fails("{\"a\" 1}", "JSON syntax error at line 1, column 6: "
               "unexpected character '1', expected ':'");
    json_fails("{\"a\": [1 2]}", "JSON syntax error at line 1, column 10");
    json_fails("{\"\xc3\xa9\": x}", "JSON syntax error at line 1, column 7");
    json_fails("{\"a\": \"\xff\"}", "JSON syntax error at line 1, column 8: "
               "invalid UTF-8");
    json_fails("{\"a\":", "JSON syntax error at line 1, column 6: unexpected "
               "end of input");
    json_fails("{\x01}", "JSON syntax error at line 1, column 2: unexpected "
               "character 0x01");
    json_fails("{\"a\": 1.}", "JSON syntax error at line 1, column 9: "
               "unexpected character '}', expected digit");
    json_fails("{\"a\": 1e+}", "JSON syntax error at line 1, column 10");
    json_fails("{\"a\": 1e+5}", "a: expected integer, got number 1e+5");

    json_fails("[1, 2]", "JSON top level must be an object, got list");
    json_fails(" \"x\"", "JSON top level must be an object, got string");
    json_fails("42", "JSON top level must be an object, got number");
    json_fails("null", "JSON top level must be an object, got null");
    json_fails("false", "JSON top level must be an object, got boolean");
    json_fails("foo", "JSON syntax error at line 1, column 1: unexpected "
               "character 'f', expected value");

    /* Deep nesting is refused, not a stack overflow. */
    GString *deep = g_string_new("{\"a\":");
    for (int i = 0; i < 100000; i++) {
        g_string_append_c(deep, '[');
    }
    json_fails(deep->str, "JSON syntax error at line 1, column ");
    g_string_free(deep, TRUE);
}

static void test_json_large_object(void)
{
    GString *text = g_string_new("{");
    for (int i = 0; i < 2000; i++) {
        g_string_append_printf(text, "%s\"k%d\": %d", i ? ", " : "", i, i);
    }
    g_string_append(text, "}");
    g_autoptr(OptNode) root = json_ok(text->str);
    g_assert_cmpuint(opts_object_size(root), ==, 2000);
    for (int i = 0; i < 2000; i += 7) {
        g_autofree char *key = g_strdup_printf("k%d", i);
        int64_t v;
        g_assert_true(opts_get_int(root, key, -1, &v, NULL));
        g_assert_cmpint(v, ==, i);
        g_assert_cmpstr(opts_object_key(root, (guint)i), ==, key);
    }
    g_assert_true(opts_remove(root, "k5"));
    g_assert_false(opts_has(root, "k5"));
    g_assert_false(opts_remove(root, "k5"));
    g_assert_cmpstr(opts_object_key(root, 5), ==, "k6");
    g_assert_true(opts_set_int(root, "k7", -7, NULL));
    int64_t v;
    g_assert_true(opts_get_int(root, "k7", 0, &v, NULL));
    g_assert_cmpint(v, ==, -7);
    g_assert_cmpstr(opts_object_key(root, 6), ==, "k7");

    g_string_truncate(text, text->len - 1);
    g_string_append(text, ", \"k1999\": 0}");
    json_fails(text->str, "k1999: duplicate key");
    g_string_free(text, TRUE);
}

/* ---- dotted keys -------------------------------------------------------- */

static void test_dotted_comma_escape(void)
{
    g_autoptr(OptNode) root = dotted_ok(
        "filename=a,,b.img,x=,y=,,,,,z=end,,");
    const char *s;
    g_assert_true(opts_get_str(root, "filename", NULL, &s, NULL));
    g_assert_cmpstr(s, ==, "a,b.img");
    g_assert_true(opts_get_str(root, "x", NULL, &s, NULL));
    g_assert_cmpstr(s, ==, "");
    g_assert_true(opts_get_str(root, "y", NULL, &s, NULL));
    g_assert_cmpstr(s, ==, ",,");
    g_assert_true(opts_get_str(root, "z", NULL, &s, NULL));
    g_assert_cmpstr(s, ==, "end,");
    g_assert_cmpuint(opts_object_size(root), ==, 4);

    g_autoptr(OptNode) eq = dotted_ok("a=b=c,t=x,");
    g_assert_true(opts_get_str(eq, "a", NULL, &s, NULL));
    g_assert_cmpstr(s, ==, "b=c");
    g_assert_cmpuint(opts_object_size(eq), ==, 2);

    g_autoptr(OptNode) empty = dotted_ok("");
    g_assert_cmpuint(opts_object_size(empty), ==, 0);
}

static void test_dotted_lists(void)
{
    g_autoptr(OptNode) root = dotted_ok(
        "l.2=c,l.0=a,l.1=b,m.10.x=10,m.0.x=0,m.1.x=1,m.2.x=2,m.3.x=3,"
        "m.4.x=4,m.5.x=5,m.6.x=6,m.7.x=7,m.8.x=8,m.9.x=9,n.0.0=deep");
    OptNode *l = opts_peek(root, "l");
    g_assert_cmpint(opts_type(l), ==, OPT_LIST);
    g_assert_cmpuint(opts_list_length(l), ==, 3);
    g_assert_cmpstr(opts_scalar_str(opts_list_get(l, 0)), ==, "a");
    g_assert_cmpstr(opts_scalar_str(opts_list_get(l, 2)), ==, "c");
    g_assert_cmpstr(opts_path(opts_list_get(l, 2)), ==, "l.2");
    OptNode *m = opts_peek(root, "m");
    g_assert_cmpuint(opts_list_length(m), ==, 11);
    for (guint i = 0; i < 11; i++) {
        int64_t v;
        g_assert_true(opts_get_int(opts_list_get(m, i), "x", -1, &v, NULL));
        g_assert_cmpint(v, ==, i);
    }
    OptNode *n = opts_peek(root, "n");
    g_assert_cmpint(opts_type(opts_list_get(n, 0)), ==, OPT_LIST);
    g_assert_cmpstr(opts_path(opts_list_get(opts_list_get(n, 0), 0)), ==,
                    "n.0.0");
    g_autofree char *json = opts_to_json(opts_peek(root, "l"), false);
    g_assert_cmpstr(json, ==, "[\"a\",\"b\",\"c\"]");

    dotted_fails("inject-error.0.event=x,inject-error.2.event=y",
                 "inject-error: list indices must be contiguous from 0, "
                 "missing 1");
    dotted_fails("l.1=x", "l: list indices must be contiguous from 0, "
                 "missing 0");
    dotted_fails("l.0=x,l.01=y", "l.01: invalid list index");
    dotted_fails("l.0=x,l.1x=y", "l.1x: invalid list index");
    dotted_fails("l.0=x,l.a=y", "l: mixes list indices");
    dotted_fails("0=x", "0: list index at top level");
    dotted_fails("l.99999999999999999999999=x", "l: list indices must be "
                 "contiguous");
}

static void test_dotted_errors(void)
{
    dotted_fails("driver=raw,driver=qcow2", "driver: duplicate key");
    dotted_fails("file.driver=a,file.x=1,file.driver=b",
                 "file.driver: duplicate key");
    dotted_fails("l.0=a,l.0=b", "l.0: duplicate key");
    dotted_fails("file=x,file.driver=y",
                 "file: used both as a value and as an object");
    dotted_fails("file.driver=y,file=x",
                 "file: used both as a value and as an object");
    dotted_fails("a.b.c=1,a.b=2", "a.b: used both as a value");
    dotted_fails("a.b=1,a.b.c.d=2", "a.b: used both as a value");
    dotted_fails("driver", "driver: missing '=' after key");
    dotted_fails("a=1,file,b=2", "file: missing '=' after key");
    dotted_fails("=raw", "=raw: empty key");
    dotted_fails("a=1,=x,,y,b=2", "=x,,y: empty key");
    dotted_fails("a..b=1", "a..b: empty key component");
    dotted_fails(".a=1", ".a: empty key component");
    dotted_fails("a.=1", "a.: empty key component");
    dotted_fails("a=\xff", "a: value is not valid UTF-8");
    dotted_fails("a\xff=1", "a\xff: key is not valid UTF-8");

    GString *deep = g_string_new("a");
    for (int i = 0; i < 1000; i++) {
        g_string_append(deep, ".a");
    }
    g_string_append(deep, "=1");
    dotted_fails(deep->str, "a.a.a.a");
    g_string_free(deep, TRUE);
}

/* ---- building ----------------------------------------------------------- */

static void test_set_paths(void)
{
    g_autoptr(OptNode) root = opts_new_object();
    StrataError *err = NULL;
    bool b;
    int64_t i;
    const char *s;

    g_assert_true(opts_set_str(root, "driver", "raw", &err));
    g_assert_true(opts_set_bool(root, "file.cache.direct", true, &err));
    g_assert_true(opts_set_int(root, "file.size", 4096, &err));
    g_assert_true(opts_set_str(root, "file.cache.no-flush", "on", &err));

    OptNode *cache = opts_peek(opts_peek(root, "file"), "cache");
    g_assert_cmpstr(opts_path(opts_peek(root, "file")), ==, "file");
    g_assert_cmpstr(opts_path(cache), ==, "file.cache");
    g_assert_cmpstr(opts_path(opts_peek(cache, "direct")), ==,
                    "file.cache.direct");
    /* Strings set by code convert like dotted keys. */
    g_assert_true(opts_get_bool(cache, "no-flush", false, &b, &err));
    g_assert_true(b);

    /* Replacing keeps the member's position. */
    g_assert_true(opts_set_int(root, "driver", 3, &err));
    g_assert_cmpstr(opts_object_key(root, 0), ==, "driver");
    g_assert_true(opts_get_int(root, "driver", 0, &i, &err));
    g_assert_cmpint(i, ==, 3);

    g_assert_true(opts_set_default_str(root, "file.size", "1G", &err));
    g_assert_true(opts_get_int(root, "file.size", 0, &i, &err));
    g_assert_cmpint(i, ==, 4096);
    g_assert_true(opts_set_default_str(root, "file.aio", "native", &err));
    g_assert_true(opts_get_str(root, "file.aio", NULL, &s, &err));
    g_assert_cmpstr(s, ==, "native");

    g_assert_false(opts_set_str(root, "file.size.x", "1", &err));
    check_error(err, "file.size: expected object, got integer 4096");
    g_clear_pointer(&err, error_free);
    g_assert_false(opts_set_default_str(root, "driver.x", "1", &err));
    check_error(err, "driver: expected object");
    g_clear_pointer(&err, error_free);
    g_assert_false(opts_set_int(root, "file..x", 1, &err));
    check_error(err, "file..x: empty key component");
    g_clear_pointer(&err, error_free);

    /* Paths below a subtree start at the subtree. */
    OptNode *file = opts_peek(root, "file");
    g_assert_true(opts_set_str(file, "locking", "off", &err));
    g_assert_cmpstr(opts_path(opts_peek(file, "locking")), ==, "file.locking");
    g_assert_false(opts_set_str(file, "size.x", "off", &err));
    check_error(err, "file.size: expected object");
    g_clear_pointer(&err, error_free);

    g_assert_false(opts_set_default_str(root, "file.x", "\xc3", &err));
    check_error(err, "file.x: value is not valid UTF-8");
    g_clear_pointer(&err, error_free);
    g_assert_false(opts_set_int(root, "file.\xc3", 1, &err));
    check_error(err, "file.\xc3: key is not valid UTF-8");
    g_clear_pointer(&err, error_free);
    g_assert_false(opts_set_bool(opts_peek(root, "driver"), "x", true, &err));
    check_error(err, "driver: expected object, got integer 3");
    g_clear_pointer(&err, error_free);

    /* Into existing list elements by index. */
    g_autoptr(OptNode) l = dotted_ok("rules.0.event=a,rules.1.event=b");
    g_assert_true(opts_set_int(l, "rules.1.errno", 5, &err));
    g_assert_cmpstr(opts_path(opts_peek(opts_list_get(opts_peek(l, "rules"), 1),
                                        "errno")), ==, "rules.1.errno");
    g_assert_false(opts_set_int(l, "rules.2.errno", 5, &err));
    check_error(err, "rules.2: no such list element");
    g_clear_pointer(&err, error_free);
    g_assert_false(opts_set_int(l, "rules.0", 5, &err));
    check_error(err, "rules: expected object, got list");
    g_clear_pointer(&err, error_free);
}

static void test_set_child(void)
{
    g_autoptr(OptNode) root = dotted_ok("driver=raw");
    OptNode *child = dotted_ok("driver=file,cache.direct=on,l.0.x=1");
    StrataError *err = NULL;
    const char *s;

    opts_set_child(root, "file", child);
    g_assert_true(opts_peek(root, "file") == child);
    g_assert_cmpstr(opts_path(child), ==, "file");
    g_assert_cmpstr(opts_path(opts_peek(opts_peek(child, "cache"), "direct")),
                    ==, "file.cache.direct");
    g_assert_cmpstr(opts_path(opts_peek(opts_list_get(opts_peek(child, "l"), 0),
                                        "x")), ==, "file.l.0.x");

    /* Replace it with a tree that somebody else still holds. */
    OptNode *shared = json_ok("{\"driver\": \"null-co\"}");
    opts_ref(shared);
    opts_set_child(root, "file", shared);
    g_assert_true(opts_peek(root, "file") != shared);
    g_assert_true(opts_get_str(root, "file.driver", NULL, &s, &err));
    g_assert_cmpstr(s, ==, "null-co");
    g_assert_cmpstr(opts_path(shared), ==, "");
    g_assert_true(opts_set_str(shared, "driver", "changed", &err));
    g_assert_true(opts_get_str(root, "file.driver", NULL, &s, &err));
    g_assert_cmpstr(s, ==, "null-co");
    opts_unref(shared);

    g_autofree char *json = opts_to_json(root, false);
    g_assert_cmpstr(json, ==, "{\"driver\":\"raw\",\"file\":{\"driver\":"
                    "\"null-co\"}}");
    g_assert_true(opts_remove(root, "file"));
    g_assert_false(opts_has(root, "file"));
}

static void test_clone_independent(void)
{
    g_autoptr(OptNode) root = json_ok(
        "{\"driver\": \"raw\", \"file\": {\"filename\": \"a.img\", "
        "\"l\": [1, {\"k\": true}]}}");
    const char *s;
    bool b;

    opts_mark_consumed(root);
    OptNode *file = opts_peek(root, "file");
    g_autoptr(OptNode) copy = opts_clone(file);
    g_assert_cmpstr(opts_path(copy), ==, "file");
    g_assert_cmpstr(opts_path(opts_peek(copy, "filename")), ==,
                    "file.filename");
    g_assert_cmpstr(opts_path(opts_peek(opts_list_get(opts_peek(copy, "l"), 1),
                                        "k")), ==, "file.l.1.k");

    /* The copy starts unconsumed. */
    StrataError *err = NULL;
    g_assert_false(opts_check_consumed(copy, &err));
    check_error(err, "file.filename: unknown option");
    g_clear_pointer(&err, error_free);

    g_assert_true(opts_set_str(copy, "filename", "b.img", NULL));
    g_assert_true(opts_set_bool(copy, "l.1.k", false, NULL));
    g_assert_true(opts_get_str(file, "filename", NULL, &s, NULL));
    g_assert_cmpstr(s, ==, "a.img");
    g_assert_true(opts_get_bool(file, "l.1.k", false, &b, NULL));
    g_assert_true(b);
    g_assert_true(opts_get_bool(copy, "l.1.k", true, &b, NULL));
    g_assert_false(b);

    /* The copy outlives the original. */
    g_clear_pointer(&root, opts_unref);
    g_assert_true(opts_get_str(copy, "filename", NULL, &s, NULL));
    g_assert_cmpstr(s, ==, "b.img");

    /* Dotted strings stay coercible in the copy. */
    g_autoptr(OptNode) d = dotted_ok("a=on");
    g_autoptr(OptNode) dc = opts_clone(d);
    g_assert_true(opts_get_bool(dc, "a", false, &b, NULL));
    g_assert_true(b);
}

static void check_round_trip_getters(OptNode *o)
{
    const char *s;
    int64_t i;
    uint64_t u;
    bool b;

    g_assert_true(opts_get_str(o, "driver", NULL, &s, NULL));
    g_assert_cmpstr(s, ==, "qcow2");
    g_assert_true(opts_get_str(o, "file.filename", NULL, &s, NULL));
    g_assert_cmpstr(s, ==, "d\xc3\xa9j\xc3\xa0 \"q\"\\\n\t\x01.img");
    g_assert_true(opts_get_int(o, "file.min", 0, &i, NULL));
    g_assert_cmpint(i, ==, INT64_MIN);
    g_assert_true(opts_get_size(o, "file.max", 0, &u, NULL));
    g_assert_cmpuint(u, ==, INT64_MAX);
    g_assert_true(opts_get_bool(o, "file.cache.direct", false, &b, NULL));
    g_assert_true(b);
    g_assert_cmpint(opts_type(opts_peek(o, "backing")), ==, OPT_NULL);
    OptNode *l = opts_peek(o, "l");
    g_assert_cmpuint(opts_list_length(l), ==, 3);
    g_assert_cmpuint(opts_object_size(opts_list_get(l, 2)), ==, 0);
}

static void test_to_json_round_trip(void)
{
    g_autoptr(OptNode) a = json_ok(
        "{\"driver\": \"qcow2\", \"file\": {\"filename\": "
        "\"d\\u00e9j\\u00e0 \\\"q\\\"\\\\\\n\\t\\u0001.img\", "
        "\"min\": -9223372036854775808, \"max\": 9223372036854775807, "
        "\"cache\": {\"direct\": true}}, \"backing\": null, "
        "\"l\": [1, [], {}]}");
    check_round_trip_getters(a);

    for (int pretty = 0; pretty < 2; pretty++) {
        g_autofree char *text = opts_to_json(a, pretty);
        g_autoptr(OptNode) b = json_ok(text);
        check_round_trip_getters(b);
        g_autofree char *again = opts_to_json(b, pretty);
        g_assert_cmpstr(text, ==, again);
        if (pretty) {
            g_assert_nonnull(strchr(text, '\n'));
        }
    }

    /* Dotted trees serialise their strings as strings. */
    g_autoptr(OptNode) d = dotted_ok("a.b=1,a.c.0=x");
    g_autofree char *dj = opts_to_json(d, false);
    g_assert_cmpstr(dj, ==, "{\"a\":{\"b\":\"1\",\"c\":[\"x\"]}}");
    g_autoptr(OptNode) dd = json_ok(dj);
    int64_t i;
    g_assert_true(opts_get_int(dd, "a.b", 0, &i, NULL));
    g_assert_cmpint(i, ==, 1);
}

static void test_refcount(void)
{
    OptNode *root = json_ok("{\"a\": {\"b\": [1, 2]}}");
    OptNode *sub = opts_peek(root, "a");

    /* A reference through a subtree holds the whole tree. */
    g_assert_true(opts_ref(sub) == sub);
    g_assert_true(opts_ref(root) == root);
    opts_unref(root);
    opts_unref(root);
    g_assert_cmpstr(opts_path(opts_list_get(opts_peek(sub, "b"), 1)), ==,
                    "a.b.1");
    opts_unref(sub);
    opts_unref(NULL);

    g_autoptr(OptNode) auto_root = opts_new_object();
    g_assert_cmpint(opts_type(auto_root), ==, OPT_OBJECT);
    g_assert_cmpuint(opts_object_size(auto_root), ==, 0);
}

/* ---- random inputs ------------------------------------------------------ */

static guint32 test_seed(void)
{
    const char *env = g_getenv("STRATA_TEST_SEED");
    return env ? (guint32)strtoul(env, NULL, 0) : 0x5eed0001u;
}

/* Random documents built from JSON fragments: whatever the parser makes of
 * them, it must not crash, and what it accepts must serialise and parse
 * back to the same text. */
static void test_json_random_fragments(void)
{
    static const char *const frags[] = {
        "{", "}", "[", "]", ",", ":", "\"a\"", "\"b\"", "\"\\u0061\"", "1",
        "-1", "9223372036854775808", "1.5", "true", "null", " ", "\n",
        "\"x,}\"", "\"\\\"\"", "'", "/*", "0x1", "\"\\ud83d\\ude00\"", "\"",
        "\\", "-", "e", "\"\xc3\xa9\"",
    };
    guint32 seed = test_seed();
    GRand *rand = g_rand_new_with_seed(seed);
    int accepted = 0;

    for (int iter = 0; iter < 20000; iter++) {
        GString *doc = g_string_new("{");
        int n = g_rand_int_range(rand, 0, 24);
        for (int k = 0; k < n; k++) {
            g_string_append(doc, frags[g_rand_int_range(rand, 0,
                                                        G_N_ELEMENTS(frags))]);
        }
        if (g_rand_boolean(rand)) {
            g_string_append_c(doc, '}');
        }
        StrataError *err = NULL;
        OptNode *node = opts_parse_json(doc->str, &err);
        if (node) {
            accepted++;
            g_autofree char *out = opts_to_json(node, false);
            OptNode *again = opts_parse_json(out, NULL);
            if (!again) {
                g_error("seed 0x%x: '%s' -> '%s' does not parse", seed,
                        doc->str, out);
            }
            g_autofree char *out2 = opts_to_json(again, false);
            if (strcmp(out, out2) != 0) {
                g_error("seed 0x%x: '%s' round trip differs", seed, doc->str);
            }
            opts_unref(again);
            opts_unref(node);
        } else {
            if (!err || err->cls != STRATA_ERROR_INVALID_OPTION) {
                g_error("seed 0x%x: '%s' failed without an option error",
                        seed, doc->str);
            }
            error_free(err);
        }
        g_string_free(doc, TRUE);
    }
    g_test_message("seed 0x%x: %d of 20000 accepted", seed, accepted);
    g_assert_cmpint(accepted, >, 0);
    g_rand_free(rand);
}

/* Random trees built with opts_set_*: dotted text of the same keys gives
 * the same JSON. */
static void test_dotted_random_equivalence(void)
{
    static const char *const comps[] = { "a", "b", "cache", "x-y", "z_1" };
    guint32 seed = test_seed();
    GRand *rand = g_rand_new_with_seed(seed);

    for (int iter = 0; iter < 500; iter++) {
        g_autoptr(OptNode) built = opts_new_object();
        GString *text = g_string_new(NULL);
        GHashTable *used = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                 g_free, NULL);
        int n = g_rand_int_range(rand, 1, 8);
        for (int k = 0; k < n; k++) {
            /* Keys of a fixed depth never conflict as value and object. */
            GString *key = g_string_new(NULL);
            for (int d = 0; d < 3; d++) {
                g_string_append_printf(key, "%s%s", d ? "." : "",
                    comps[g_rand_int_range(rand, 0, G_N_ELEMENTS(comps))]);
            }
            if (g_hash_table_contains(used, key->str)) {
                g_string_free(key, TRUE);
                continue;
            }
            g_autofree char *value = g_strdup_printf(
                "v%d,%s", g_rand_int_range(rand, 0, 100),
                g_rand_boolean(rand) ? "," : "");
            g_assert_true(opts_set_str(built, key->str, value, NULL));
            g_auto(GStrv) pieces = g_strsplit(value, ",", -1);
            g_autofree char *esc = g_strjoinv(",,", pieces);
            g_string_append_printf(text, "%s%s=%s", text->len ? "," : "",
                                   key->str, esc);
            g_hash_table_add(used, g_string_free(key, FALSE));
        }
        g_autoptr(OptNode) parsed = dotted_ok(text->str);
        g_autofree char *j1 = opts_to_json(built, false);
        g_autofree char *j2 = opts_to_json(parsed, false);
        if (strcmp(j1, j2) != 0) {
            g_error("seed 0x%x: '%s': %s != %s", seed, text->str, j1, j2);
        }
        g_string_free(text, TRUE);
        g_hash_table_unref(used);
    }
    g_rand_free(rand);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/options/tree/json-and-dotted-agree",
                    test_same_tree_both_sources);
    g_test_add_func("/options/tree/json-types", test_json_types);
    g_test_add_func("/options/getters/type-errors-name-path",
                    test_getter_type_errors);
    g_test_add_func("/options/getters/long-value-quoted-short",
                    test_getter_long_value_quoted_short);
    g_test_add_func("/options/getters/defaults", test_getter_defaults);
    g_test_add_func("/options/getters/dotted-coercion", test_dotted_coercion);
    g_test_add_func("/options/size/suffixes-and-overflow", test_size_parsing);
    g_test_add_func("/options/consumed/unknown-deep", test_unknown_option_deep);
    g_test_add_func("/options/consumed/unknown-in-list",
                    test_unknown_option_in_list);
    g_test_add_func("/options/json/duplicate-keys", test_json_duplicates);
    g_test_add_func("/options/json/integer-range", test_json_integer_range);
    g_test_add_func("/options/json/syntax-errors", test_json_syntax_errors);
    g_test_add_func("/options/json/large-object", test_json_large_object);
    g_test_add_func("/options/json/random-fragments",
                    test_json_random_fragments);
    g_test_add_func("/options/dotted/comma-escape", test_dotted_comma_escape);
    g_test_add_func("/options/dotted/lists", test_dotted_lists);
    g_test_add_func("/options/dotted/errors", test_dotted_errors);
    g_test_add_func("/options/dotted/random-equivalence",
                    test_dotted_random_equivalence);
    g_test_add_func("/options/set/dotted-paths", test_set_paths);
    g_test_add_func("/options/set/child", test_set_child);
    g_test_add_func("/options/clone/independent", test_clone_independent);
    g_test_add_func("/options/to-json/round-trip", test_to_json_round_trip);
    g_test_add_func("/options/refcount/subtree-holds-tree", test_refcount);
    return g_test_run();
}
