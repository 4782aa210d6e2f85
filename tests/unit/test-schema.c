/*
 * Tests of the option schema (qapi/block.json) and its validator
 * SPDX-License-Identifier: MIT
 */
#include <string.h>
#include <glib.h>

#include "qapi/schema.h"
#include "qapi/qapi-schema.h"
#include "util/options.h"

typedef enum Syntax { JSON, DOTTED } Syntax;

static OptNode *parse(Syntax syntax, const char *text)
{
    StrataError *err = NULL;
    OptNode *opts = syntax == JSON ? opts_parse_json(text, &err)
                                   : opts_parse_dotted(text, &err);
    if (!opts) {
        g_error("cannot parse '%s': %s", text, error_get_message(err));
    }
    return opts;
}

static const SchemaDriver *driver(const char *name)
{
    const SchemaDriver *drv = schema_find_driver(name);
    g_assert_nonnull(drv);
    return drv;
}

/* Validate @text as a node of driver @drv_name and expect success. */
static void expect_valid(Syntax syntax, const char *drv_name, const char *text)
{
    g_autoptr(OptNode) opts = parse(syntax, text);
    StrataError *err = NULL;

    if (!schema_validate_node(opts, driver(drv_name), &err)) {
        g_error("'%s' rejected: %s", text, error_get_message(err));
    }
    g_assert_null(err);
}

/* Validate @text as a node of driver @drv_name and expect error @msg. */
static void expect_error(Syntax syntax, const char *drv_name, const char *text,
                         const char *msg)
{
    g_autoptr(OptNode) opts = parse(syntax, text);
    g_autoptr(StrataError) err = NULL;

    g_assert_false(schema_validate_node(opts, driver(drv_name), &err));
    g_assert_nonnull(err);
    g_assert_cmpstr(error_get_message(err), ==, msg);
    g_assert_cmpint(err->cls, ==, STRATA_ERROR_INVALID_OPTION);
    g_assert_cmpint(error_get_errno(err), ==, EINVAL);
}

/* Both syntaxes give the same error for the same mistake. */
static void expect_error_both(const char *drv_name, const char *json,
                              const char *dotted, const char *msg)
{
    expect_error(JSON, drv_name, json, msg);
    expect_error(DOTTED, drv_name, dotted, msg);
}

/* ---- tables ---------------------------------------------------------------- */

static void test_driver_find(void)
{
    const SchemaDriver *null = schema_find_driver("null");

    g_assert_nonnull(null);
    g_assert_cmpstr(null->name, ==, "null");
    g_assert_true(schema_find_driver("null-co") == null);
    g_assert_cmpstr(null->aliases[0], ==, "null-co");
    g_assert_null(null->aliases[1]);
    g_assert_cmpstr(schema_find_driver("file")->name, ==, "file");
    g_assert_null(schema_find_driver("file")->aliases[0]);
    g_assert_null(schema_find_driver("nul"));
    g_assert_null(schema_find_driver(""));
    g_assert_null(schema_find_driver(NULL));
}

static void test_driver_names(void)
{
    g_autofree char *names = schema_driver_names();

    g_assert_cmpstr(names, ==, "file, host_device, host_cdrom, raw, nbd, rbd, null, null-aio, mem, blkdebug, align, throttle, snapshot-overlay, virtio-blk-vhost-user");
    for (const SchemaDriver *drv = schema_drivers(); drv->name; drv++) {
        g_assert_true(schema_find_driver(drv->name) == drv);
        g_assert_nonnull(drv->members);
        g_assert_nonnull(drv->doc);
    }
}

static void test_defaults(void)
{
    const SchemaMember *common = schema_common_members();
    const SchemaMember *m;

    m = schema_find_member(common, "rmw-coalesce");
    g_assert_true(m->type == SCHEMA_TYPE_BOOL && m->has_default);
    g_assert_cmpint(m->default_int, ==, 1);
    g_assert_cmpstr(m->default_text, ==, "true");

    m = schema_find_member(common, "driver");
    g_assert_true(m->required && !m->has_default);

    m = schema_find_member(common, "discard");
    g_assert_true(m->type == SCHEMA_TYPE_ENUM);
    g_assert_cmpstr(m->values[m->default_int], ==, "ignore");
    g_assert_cmpint(m->default_int, ==, QAPI_COMMON_DISCARD_DEFAULT);

    m = schema_find_member(schema_find_member(common, "cache")->members,
                           "direct");
    g_assert_true(m->has_default);
    g_assert_cmpint(m->default_int, ==, 0);
    g_assert_false(QAPI_COMMON_CACHE_DIRECT_DEFAULT);

    m = schema_find_member(driver("null-co")->members, "size");
    g_assert_true(m->type == SCHEMA_TYPE_SIZE && m->has_default);
    g_assert_cmpuint(m->default_size, ==, 1024 * 1024 * 1024);
    g_assert_cmpuint(QAPI_NULL_SIZE_DEFAULT, ==, 1024 * 1024 * 1024);
    g_assert_cmpstr(m->default_text, ==, "1G");

    m = schema_find_member(driver("file")->members, "aio");
    g_assert_cmpstr(m->values[m->default_int], ==, "auto");
    g_assert_cmpint(m->default_int, ==, QAPI_FILE_AIO_AUTO);
    g_assert_cmpstr(qapi_enum_file_aio[QAPI_FILE_AIO_IO_URING], ==,
                    "io_uring");
    g_assert_null(qapi_enum_file_aio[QAPI_FILE_AIO__MAX]);

    m = schema_find_member(driver("mem")->members, "max-iov");
    g_assert_cmpint(m->default_int, ==, 1024);
    g_assert_true(m->has_min && m->min == 1 && m->has_max && m->max == 1024);
    m = schema_find_member(driver("mem")->members, "align");
    g_assert_true(m->power_of_2);
    g_assert_cmpuint(m->default_size, ==, 1);

    m = schema_find_member(driver("raw")->members, "size");
    g_assert_false(m->required || m->has_default);
    m = schema_find_member(driver("raw")->members, "file");
    g_assert_true(m->type == SCHEMA_TYPE_CHILD && m->required);

    const SchemaMember *inject =
        schema_find_member(driver("blkdebug")->members, "inject-error");
    g_assert_true(inject->type == SCHEMA_TYPE_LIST);
    m = schema_find_member(inject->members, "errno");
    g_assert_cmpint(m->default_int, ==, 5);
    m = schema_find_member(inject->members, "sector");
    g_assert_cmpint(m->default_int, ==, -1);
    g_assert_cmpint(QAPI_BLKDEBUG_INJECT_ERROR_SECTOR_DEFAULT, ==, -1);

    g_assert_null(schema_find_member(common, "filename"));
}

/* ---- valid trees ---------------------------------------------------------- */

static void test_valid_raw_over_file(void)
{
    static const char json[] =
        "{\"driver\": \"raw\", \"node-name\": \"disk0\", \"read-only\": false,"
        " \"cache\": {\"direct\": true, \"no-flush\": false},"
        " \"discard\": \"unmap\", \"detect-zeroes\": \"on\","
        " \"rmw-coalesce\": true, \"auto-read-only\": false,"
        " \"force-share\": false, \"offset\": 4096, \"size\": \"1M\","
        " \"file\": {\"driver\": \"file\", \"filename\": \"disk.img\","
        "            \"aio\": \"io_uring\", \"locking\": \"off\","
        "            \"bounce\": \"always\", \"bounce-threshold\": 4096,"
        "            \"cache\": {\"direct\": true}}}";
    g_autoptr(OptNode) opts = parse(JSON, json);
    StrataError *err = NULL;

    g_assert_true(schema_validate_node(opts, driver("raw"), &err));
    g_assert_null(err);

    /* The child key is consumed, its members are the child's business:
     * until the child node's own validation they are still unread. */
    g_autoptr(StrataError) left = NULL;
    g_assert_false(opts_check_consumed(opts, &left));
    g_assert_cmpstr(error_get_message(left), ==, "file.driver: unknown option");

    OptNode *file = opts_peek(opts, "file");
    g_assert_true(schema_validate_node(file, driver("file"), &err));
    g_assert_null(err);
    g_assert_true(opts_check_consumed(opts, &err));
}

static void test_valid_dotted(void)
{
    expect_valid(DOTTED, "raw",
                 "driver=raw,node-name=disk0,read-only=on,cache.direct=on,"
                 "cache.no-flush=off,discard=on,detect-zeroes=unmap,"
                 "rmw-coalesce=false,offset=4k,size=0x100000,"
                 "file.driver=file,file.filename=disk.img");
    expect_valid(DOTTED, "file",
                 "driver=file,filename=disk.img,aio=native,locking=auto,"
                 "bounce=auto,bounce-threshold=64k");
    expect_valid(DOTTED, "file",
                 "driver=file,filename=disk.img,bounce-threshold=auto");
    expect_valid(JSON, "file", "{\"driver\": \"file\", \"filename\": "
                 "\"disk.img\", \"bounce-threshold\": \"auto\"}");
    expect_valid(DOTTED, "null", "driver=null,size=1G,latency-ns=1000,"
                 "read-zeroes=true");
    expect_valid(DOTTED, "mem",
                 "driver=mem,size=1M,align=4096,mem-align=512,"
                 "iov-len-align=512,max-transfer=64k,max-iov=16,"
                 "latency-ns=0,random-order=on,seed=-42,fua=off,zeroes=off");
    expect_valid(JSON, "mem",
                 "{\"driver\": \"mem\", \"size\": 1048576, \"align\": \"4k\","
                 " \"max-iov\": 1024, \"seed\": 7, \"fua\": false}");
}

static void test_valid_consumed(void)
{
    g_autoptr(OptNode) opts = parse(JSON,
        "{\"driver\": \"null\", \"size\": 4096, \"cache\": {\"direct\": true},"
        " \"read-zeroes\": true}");
    StrataError *err = NULL;

    g_assert_true(schema_validate_node(opts, driver("null"), &err));
    g_assert_true(opts_check_consumed(opts, &err));
    g_assert_null(err);
}

static void test_alias(void)
{
    expect_valid(JSON, "null-co",
                 "{\"driver\": \"null-co\", \"read-zeroes\": true}");
    expect_error(JSON, "null-co", "{\"driver\": \"null-co\", \"filename\": "
                 "\"x\"}", "filename: unknown option");
}

/* ---- children --------------------------------------------------------------- */

static void test_child_members_skipped(void)
{
    /* Nonsense inside the child is not the parent's to judge. */
    expect_valid(JSON, "raw",
                 "{\"driver\": \"raw\", \"file\": {\"driver\": \"file\","
                 " \"bogus\": [1, 2], \"aio\": 42}}");
    expect_valid(DOTTED, "raw",
                 "driver=raw,file.driver=file,file.bogus=1,file.aio=42");
    expect_valid(DOTTED, "blkdebug",
                 "driver=blkdebug,image.driver=null,image.no-such=1");
}

static void test_child_node_name(void)
{
    g_autoptr(OptNode) opts = parse(JSON,
        "{\"driver\": \"raw\", \"file\": \"disk0-file\"}");
    StrataError *err = NULL;

    g_assert_true(schema_validate_node(opts, driver("raw"), &err));
    g_assert_true(opts_check_consumed(opts, &err));
    g_assert_null(err);
    expect_valid(DOTTED, "raw", "driver=raw,file=disk0-file");
}

static void test_child_wrong_type(void)
{
    expect_error(JSON, "raw", "{\"driver\": \"raw\", \"file\": 5}",
                 "file: expected object or string");
    expect_error(JSON, "raw", "{\"driver\": \"raw\", \"file\": [{}]}",
                 "file: expected object or string");
    expect_error(JSON, "blkdebug", "{\"driver\": \"blkdebug\", \"image\": true}",
                 "image: expected object or string");
}

/* ---- errors ------------------------------------------------------------------- */

static void test_error_unknown(void)
{
    expect_error_both("file",
                      "{\"driver\": \"file\", \"filename\": \"x\", \"foo\": 1}",
                      "driver=file,filename=x,foo=1",
                      "foo: unknown option");
    /* Unknown keys are reported before missing ones. */
    expect_error_both("file", "{\"driver\": \"file\", \"foo\": 1}",
                      "driver=file,foo=1", "foo: unknown option");
    /* An option of another driver is unknown here. */
    expect_error_both("null", "{\"driver\": \"null\", \"filename\": \"x\"}",
                      "driver=null,filename=x", "filename: unknown option");
}

static void test_error_unknown_hint(void)
{
    expect_error_both("file", "{\"driver\": \"file\", \"filenam\": \"x\"}",
                      "driver=file,filenam=x",
                      "filenam: unknown option (did you mean 'filename'?)");
    expect_error_both("file",
                      "{\"driver\": \"file\", \"filename\": \"x\", \"aoi\": "
                      "\"native\"}",
                      "driver=file,filename=x,aoi=native",
                      "aoi: unknown option (did you mean 'aio'?)");
    expect_error_both("null", "{\"driver\": \"null\", \"read_only\": true}",
                      "driver=null,read_only=on",
                      "read_only: unknown option (did you mean 'read-only'?)");
    expect_error_both("null",
                      "{\"driver\": \"null\", \"cache\": {\"dirct\": true}}",
                      "driver=null,cache.dirct=on",
                      "cache.dirct: unknown option (did you mean 'direct'?)");
    /* Too far from anything to guess. */
    expect_error_both("null", "{\"driver\": \"null\", \"xyz\": 1}",
                      "driver=null,xyz=1", "xyz: unknown option");
}

static void test_error_type(void)
{
    expect_error_both("null", "{\"driver\": \"null\", \"read-only\": 1}",
                      "driver=null,read-only=maybe",
                      "read-only: expected boolean");
    expect_error(JSON, "null", "{\"driver\": \"null\", \"read-only\": \"on\"}",
                 "read-only: expected boolean");
    expect_error(JSON, "null", "{\"driver\": \"null\", \"read-only\": null}",
                 "read-only: expected boolean");
    expect_error_both("null", "{\"driver\": \"null\", \"latency-ns\": true}",
                      "driver=null,latency-ns=soon",
                      "latency-ns: expected integer");
    expect_error_both("null", "{\"driver\": \"null\", \"size\": -1}",
                      "driver=null,size=12x", "size: expected size");
    expect_error(JSON, "null", "{\"driver\": \"null\", \"size\": \"1Q\"}",
                 "size: expected size");
    expect_error(JSON, "file", "{\"driver\": \"file\", \"filename\": 5}",
                 "filename: expected string");
    /* A size that also takes keywords names them. */
    expect_error_both("file", "{\"driver\": \"file\", \"filename\": \"x\", "
                      "\"bounce-threshold\": \"sometimes\"}",
                      "driver=file,filename=x,bounce-threshold=sometimes",
                      "bounce-threshold: expected size or one of auto");
    expect_error(JSON, "file", "{\"driver\": 5, \"filename\": \"x\"}",
                 "driver: expected string");
    expect_error_both("null", "{\"driver\": \"null\", \"cache\": true}",
                      "driver=null,cache=on", "cache: expected object");
    expect_error(JSON, "blkdebug",
                 "{\"driver\": \"blkdebug\", \"image\": \"img\","
                 " \"inject-error\": {\"event\": \"read_aio\"}}",
                 "inject-error: expected list");
    expect_error(DOTTED, "blkdebug",
                 "driver=blkdebug,image=img,inject-error.event=read_aio",
                 "inject-error: expected list");
    expect_error(JSON, "blkdebug",
                 "{\"driver\": \"blkdebug\", \"image\": \"img\","
                 " \"inject-error\": [{\"event\": \"read_aio\"}, 5]}",
                 "inject-error.1: expected object");
}

static void test_error_enum(void)
{
    expect_error_both("file",
                      "{\"driver\": \"file\", \"filename\": \"x\","
                      " \"aio\": \"fast\"}",
                      "driver=file,filename=x,aio=fast",
                      "aio: expected one of threads, native, io_uring, auto");
    expect_error(JSON, "file",
                 "{\"driver\": \"file\", \"filename\": \"x\", \"aio\": 1}",
                 "aio: expected one of threads, native, io_uring, auto");
    expect_error_both("null", "{\"driver\": \"null\", \"discard\": \"trim\"}",
                      "driver=null,discard=trim",
                      "discard: expected one of ignore, off, unmap, on");
    /* Inside a raw tree the child's own validation names the full path. */
    g_autoptr(OptNode) opts = parse(DOTTED,
        "driver=raw,file.driver=file,file.filename=x,file.aio=fast");
    g_autoptr(StrataError) err = NULL;
    g_assert_true(schema_validate_node(opts, driver("raw"), NULL));
    g_assert_false(schema_validate_node(opts_peek(opts, "file"),
                                        driver("file"), &err));
    g_assert_cmpstr(error_get_message(err), ==,
                    "file.aio: expected one of threads, native, io_uring, "
                    "auto");
}

static void test_error_bounds(void)
{
    expect_error_both("null", "{\"driver\": \"null\", \"latency-ns\": -1}",
                      "driver=null,latency-ns=-1",
                      "latency-ns: must be at least 0");
    expect_error_both("mem",
                      "{\"driver\": \"mem\", \"size\": 4096, \"max-iov\": 1025}",
                      "driver=mem,size=4096,max-iov=1025",
                      "max-iov: must be at most 1024");
    expect_error_both("mem",
                      "{\"driver\": \"mem\", \"size\": 4096, \"max-iov\": 0}",
                      "driver=mem,size=4096,max-iov=0",
                      "max-iov: must be at least 1");
    expect_error_both("mem", "{\"driver\": \"mem\", \"size\": 4096, \"align\": 0}",
                      "driver=mem,size=4096,align=0",
                      "align: must be at least 1");
    expect_error_both("mem",
                      "{\"driver\": \"mem\", \"size\": 4096, \"align\": \"2M\"}",
                      "driver=mem,size=4096,align=2M",
                      "align: must be at most 1048576");
    expect_error_both("blkdebug",
                      "{\"driver\": \"blkdebug\", \"image\": \"i\","
                      " \"align\": 1536}",
                      "driver=blkdebug,image=i,align=1536",
                      "align: must be a power of two");
    expect_error_both("mem",
                      "{\"driver\": \"mem\", \"size\": 4096,"
                      " \"mem-align\": \"3k\"}",
                      "driver=mem,size=4096,mem-align=3k",
                      "mem-align: must be a power of two");
    expect_error_both("blkdebug",
                      "{\"driver\": \"blkdebug\", \"image\": \"i\","
                      " \"inject-error\": [{\"event\": \"e\", \"errno\": 0}]}",
                      "driver=blkdebug,image=i,inject-error.0.event=e,"
                      "inject-error.0.errno=0",
                      "inject-error.0.errno: must be at least 1");
    /* Bounds are inclusive. */
    expect_valid(DOTTED, "mem", "driver=mem,size=4096,max-iov=1024,align=1M");
    expect_valid(DOTTED, "null", "driver=null,latency-ns=0");
}

static void test_error_missing(void)
{
    expect_error_both("file", "{\"driver\": \"file\"}", "driver=file",
                      "filename: missing");
    expect_error_both("raw", "{\"driver\": \"raw\"}", "driver=raw",
                      "file: missing");
    expect_error_both("mem", "{\"driver\": \"mem\", \"align\": 512}",
                      "driver=mem,align=512", "size: missing");
    expect_error_both("null", "{\"node-name\": \"n\"}", "node-name=n",
                      "driver: missing");
    expect_error_both("blkdebug",
                      "{\"driver\": \"blkdebug\", \"image\": \"i\","
                      " \"inject-error\": [{\"event\": \"e\"}, {\"once\": true}]}",
                      "driver=blkdebug,image=i,inject-error.0.event=e,"
                      "inject-error.1.once=on",
                      "inject-error.1.event: missing");
    expect_error_both("blkdebug",
                      "{\"driver\": \"blkdebug\", \"image\": \"i\","
                      " \"set-state\": [{\"event\": \"e\"}]}",
                      "driver=blkdebug,image=i,set-state.0.event=e",
                      "set-state.0.new_state: missing");
}

/* ---- lists ----------------------------------------------------------------------- */

static void test_list_inject_error(void)
{
    static const char json[] =
        "{\"driver\": \"blkdebug\", \"image\": {\"driver\": \"null\"},"
        " \"align\": 4096, \"max-transfer\": \"64k\","
        " \"inject-error\": ["
        "   {\"event\": \"read_aio\", \"state\": 1, \"iotype\": \"read\","
        "    \"errno\": 28, \"sector\": 8, \"once\": true,"
        "    \"immediately\": false},"
        "   {\"event\": \"pwritev_rmw_head\", \"iotype\": \"write-zeroes\"}],"
        " \"set-state\": [{\"event\": \"flush_to_os\", \"state\": 1,"
        "                  \"new_state\": 2}]}";
    g_autoptr(OptNode) opts = parse(JSON, json);
    StrataError *err = NULL;

    g_assert_true(schema_validate_node(opts, driver("blkdebug"), &err));
    g_assert_null(err);
    /* Everything but the image's members was checked and consumed. */
    g_assert_true(schema_validate_node(opts_peek(opts, "image"),
                                       driver("null"), &err));
    g_assert_true(opts_check_consumed(opts, &err));
    g_assert_null(err);

    expect_valid(DOTTED, "blkdebug",
                 "driver=blkdebug,image=img,inject-error.0.event=read_aio,"
                 "inject-error.0.iotype=flush,inject-error.0.once=on,"
                 "inject-error.1.event=write_aio,inject-error.1.errno=5,"
                 "inject-error.1.sector=-1,set-state.0.event=e,"
                 "set-state.0.new_state=3");
}

static void test_list_inject_error_bad_iotype(void)
{
    expect_error_both("blkdebug",
                      "{\"driver\": \"blkdebug\", \"image\": \"img\","
                      " \"inject-error\": ["
                      "   {\"event\": \"read_aio\", \"iotype\": \"read\"},"
                      "   {\"event\": \"read_aio\", \"iotype\": \"trim\"}]}",
                      "driver=blkdebug,image=img,"
                      "inject-error.0.event=read_aio,inject-error.0.iotype=read,"
                      "inject-error.1.event=read_aio,inject-error.1.iotype=trim",
                      "inject-error.1.iotype: expected one of read, write, "
                      "write-zeroes, discard, flush, block-status");
    expect_error_both("blkdebug",
                      "{\"driver\": \"blkdebug\", \"image\": \"img\","
                      " \"inject-error\": [{\"event\": \"e\", \"evnt\": 1}]}",
                      "driver=blkdebug,image=img,inject-error.0.event=e,"
                      "inject-error.0.evnt=1",
                      "inject-error.0.evnt: unknown option (did you mean "
                      "'event'?)");
    expect_error_both("blkdebug",
                      "{\"driver\": \"blkdebug\", \"image\": \"img\","
                      " \"set-state\": [{\"event\": \"e\", \"new-state\": 1}]}",
                      "driver=blkdebug,image=img,set-state.0.event=e,"
                      "set-state.0.new-state=1",
                      "set-state.0.new-state: unknown option (did you mean "
                      "'new_state'?)");
}

/* ---- member lists on their own -------------------------------------------------- */

static void test_validate_members(void)
{
    const SchemaMember *cache =
        schema_find_member(schema_common_members(), "cache");
    g_autoptr(OptNode) cache_opts = parse(JSON, "{\"direct\": true, \"x\": 1}");
    g_autoptr(OptNode) cache_ok = parse(DOTTED, "direct=on,no-flush=off");
    g_autoptr(StrataError) err = NULL;

    g_assert_true(schema_validate_members(cache_ok, cache->members, NULL));
    g_assert_false(schema_validate_members(cache_opts, cache->members, &err));
    g_assert_cmpstr(error_get_message(err), ==, "x: unknown option");
    /* A NULL errp is fine. */
    g_assert_false(schema_validate_members(cache_opts, cache->members, NULL));
}

static void test_validate_partial(void)
{
    /* A reopen's change set names only what changes: "driver" may be
     * absent, everything present is checked as usual. */
    g_autoptr(OptNode) ok = parse(DOTTED, "read-only=on,cache.direct=off");
    g_autoptr(OptNode) bad = parse(JSON,
        "{\"read-only\": true, \"cache\": {\"direct\": \"x\"}}");
    g_autoptr(StrataError) err = NULL;
    g_autoptr(StrataError) err2 = NULL;

    g_assert_true(schema_validate_partial(ok, schema_common_members(), NULL));
    g_assert_true(opts_check_consumed(ok, NULL));
    g_assert_false(schema_validate_members(ok, schema_common_members(), &err));
    g_assert_cmpstr(error_get_message(err), ==, "driver: missing");
    g_assert_false(schema_validate_partial(bad, schema_common_members(),
                                           &err2));
    g_assert_cmpstr(error_get_message(err2), ==,
                    "cache.direct: expected boolean");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/schema/tables/driver-find-and-aliases", test_driver_find);
    g_test_add_func("/schema/tables/driver-names", test_driver_names);
    g_test_add_func("/schema/tables/defaults", test_defaults);
    g_test_add_func("/schema/valid/raw-over-file", test_valid_raw_over_file);
    g_test_add_func("/schema/valid/dotted-values-convert", test_valid_dotted);
    g_test_add_func("/schema/valid/marks-consumed", test_valid_consumed);
    g_test_add_func("/schema/valid/alias", test_alias);
    g_test_add_func("/schema/child/members-skipped", test_child_members_skipped);
    g_test_add_func("/schema/child/node-name", test_child_node_name);
    g_test_add_func("/schema/child/wrong-type", test_child_wrong_type);
    g_test_add_func("/schema/error/unknown", test_error_unknown);
    g_test_add_func("/schema/error/unknown-near-miss", test_error_unknown_hint);
    g_test_add_func("/schema/error/type", test_error_type);
    g_test_add_func("/schema/error/enum", test_error_enum);
    g_test_add_func("/schema/error/bounds", test_error_bounds);
    g_test_add_func("/schema/error/missing", test_error_missing);
    g_test_add_func("/schema/list/inject-error", test_list_inject_error);
    g_test_add_func("/schema/list/inject-error-bad-member",
                    test_list_inject_error_bad_iotype);
    g_test_add_func("/schema/members/object", test_validate_members);
    g_test_add_func("/schema/members/partial-change-set",
                    test_validate_partial);

    return g_test_run();
}
