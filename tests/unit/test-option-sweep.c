/*
 * Every option of the schema, for every driver, through edge values: no
 * value a config file can give may abort the process
 * SPDX-License-Identifier: MIT
 *
 * The members come from the tables scripts/qapi-gen.py generates from
 * qapi/block.json, so a new option is swept as soon as it is in the
 * schema.  For each (driver, option) the test opens a small valid node
 * with the option set to each value of a list chosen by the option's type
 * and bounds: every enum value, both booleans, bounds and one past them,
 * zero, odd and huge sizes, malformed numbers, empty, long and odd strings.
 *   - A refused open must give an error whose message names the option
 *     (its key) or quotes the value.
 *   - An accepted open is followed by reads, writes, write-zeroes, a
 *     discard and a flush, aligned, unaligned and across the end of the
 *     device; whatever they return, data written and read back must match
 *     (null nodes excepted, which store nothing).
 * Any abort fails the test; the message log names the value being tried.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>

#include "block/block-int.h"
#include "block/object.h"
#include "qapi/qapi-schema.h"
#include "qapi/schema.h"
#include "nbd-server.h"
#include "rbd-test.h"
#include "test-util.h"

#define DEV_SIZE (2 << 20)
/* Delays above this are valid and only wait: such nodes are opened but
 * not driven. */
#define MAX_DRIVEN_LATENCY_NS 10000000
/* Whole-device write-zeroes and discards only up to this size: mem
 * without native write-zeroes writes zero data, which a sparse 1 TiB
 * device would have to hold in memory. */
#define WHOLE_DEVICE_MAX (64 << 20)
/* Random combinations tried per driver. */
#define COMBINATIONS 150

/* Files are created under /var/tmp and unlinked at once; nodes open them
 * as /proc/self/fd/N, so that nothing is left behind even if a value makes
 * the process abort. */
static char *img_path;          /* a DEV_SIZE image */
static const char *dev_path;    /* the loop device, once a sweep needs it */
static char *rules_path;        /* a blkdebug rules file with garbage */
static int img_fd;
static NbdTestServer *nbd_server;
static NbdTestServer *vhost_server;

/* A valid node of each driver, as dotted keys, that the sweep changes one
 * option of.  A driver missing here fails its sweep.  @DEV@ is a loop
 * device (test_loop_device(): the kernel detaches it when this process
 * ends); without one (not root, no loop devices) those sweeps skip. */
static const struct {
    const char *driver;
    const char *keys;
    const char *child, *child_driver;   /* its inline child, if any */
} bases[] = {
    { "file", "driver=file,filename=@IMG@" },
    { "raw", "driver=raw,file.driver=file,file.filename=@IMG@",
      "file", "file" },
    { "host_device", "driver=host_device,filename=@DEV@" },
    { "host_cdrom", "driver=host_cdrom,filename=@DEV@" },
    { "null", "driver=null,size=2M" },
    { "null-aio", "driver=null-aio,size=2M" },
    { "mem", "driver=mem,size=2M" },
    { "blkdebug", "driver=blkdebug,image.driver=mem,image.size=2M",
      "image", "mem" },
    { "align", "driver=align,file.driver=mem,file.size=2M,file.align=512",
      "file", "mem" },
    { "throttle", "driver=throttle,throttle-group=sweep-tg,file.driver=mem,"
      "file.size=2M", "file", "mem" },
    { "snapshot-overlay", "driver=snapshot-overlay,file.driver=file,"
      "file.filename=@IMG@", "file", "file" },
    /* @NBD@: the socket of an nbdkit memory server of DEV_SIZE, one per
     * process (started by the first sweep that needs it). */
    { "nbd", "driver=nbd,server.type=unix,server.path=@NBD@" },
    /* @RBDPOOL@: the pool of the cluster of tests/ceph/cluster.sh, where
     * the first sweep that needs it creates the image "sweep" (skipped
     * without a cluster; tests/ceph/test-rbd.sh runs these). */
    { "rbd", "driver=rbd,pool=@RBDPOOL@,image=sweep" },
    /* @VHOST@: the socket of a qemu-storage-daemon vhost-user-blk export
     * (2 queues) of a DEV_SIZE file, one per process. */
    { "virtio-blk-vhost-user", "driver=virtio-blk-vhost-user,path=@VHOST@" },
};

typedef struct Sweep {
    const SchemaDriver *drv;
    char *path;                 /* dotted, list elements as .0. */
    const SchemaMember *m;
    const SchemaMember *list;   /* the list @m is a member of, or NULL */
    char *list_path;
    GPtrArray *accepted;        /* values its sweep opened a node with */
} Sweep;

/* ---- values ------------------------------------------------------------------ */

static void add(GPtrArray *v, const char *s)
{
    g_ptr_array_add(v, g_strdup(s));
}

static void add_int(GPtrArray *v, int64_t n)
{
    g_ptr_array_add(v, g_strdup_printf("%" PRId64, n));
}

static GPtrArray *values_for(const SchemaMember *m)
{
    GPtrArray *v = g_ptr_array_new_with_free_func(g_free);
    static const char *const ints[] = {
        "0", "1", "-1", "2", "7", "512", "4095", "4096", "1000000",
        "9223372036854775807", "-9223372036854775808", "9223372036854775808",
        "0x10", "1.5", "x", "",
    };
    static const char *const sizes[] = {
        "0", "1", "3", "511", "512", "513", "4096", "4097", "8k", "65536",
        "1M", "2M", "3M", "1G", "1073741825", "2G", "1T",
        "4611686018427387904", "9223372036854775807", "18446744073709551615",
        "18446744073709551616", "-1", "1.5k", "1Q", "x", "",
    };
    static const char *const strings[] = {
        "", "x", "a,b", "%s%n%s", "none", "bogus", "read_aio", "l1_update",
        "/nonexistent/strata-sweep", "/dev/null", "@DIR@", "@IMG@", "@CFG@",
        "\xc3\xa9\xff",
    };

    switch (m->type) {
    case SCHEMA_TYPE_BOOL:
        add(v, "on");
        add(v, "off");
        add(v, "maybe");
        break;
    case SCHEMA_TYPE_ENUM:
        for (const char *const *e = m->values; *e; e++) {
            add(v, *e);
        }
        add(v, "bogus");
        add(v, "");
        break;
    case SCHEMA_TYPE_INT:
    case SCHEMA_TYPE_SIZE:
        if (m->type == SCHEMA_TYPE_INT) {
            for (size_t i = 0; i < G_N_ELEMENTS(ints); i++) {
                add(v, ints[i]);
            }
        } else {
            for (size_t i = 0; i < G_N_ELEMENTS(sizes); i++) {
                add(v, sizes[i]);
            }
        }
        if (m->has_min) {
            add_int(v, m->min);
            if (m->min > INT64_MIN) {
                add_int(v, m->min - 1);
            }
        }
        if (m->has_max) {
            add_int(v, m->max);
            if (m->max < INT64_MAX) {
                add_int(v, m->max + 1);
            }
        }
        break;
    case SCHEMA_TYPE_STRING:
        for (size_t i = 0; i < G_N_ELEMENTS(strings); i++) {
            add(v, strings[i]);
        }
        g_ptr_array_add(v, g_strnfill(4000, 'a'));
        break;
    case SCHEMA_TYPE_CHILD:
        add(v, "no-such-node");
        add(v, "");
        break;
    default:
        g_assert_not_reached();
    }
    return v;
}

/* A valid value for a required sibling in a list element. */
static const char *sibling_value(const SchemaMember *m)
{
    switch (m->type) {
    case SCHEMA_TYPE_STRING:
        return "none";          /* an event every blkdebug rule accepts */
    case SCHEMA_TYPE_BOOL:
        return "off";
    default:
        return "1";
    }
}

static char *subst(const char *text)
{
    g_auto(GStrv) a = g_strsplit(text, "@IMG@", -1);
    g_autofree char *s1 = g_strjoinv(img_path, a);
    g_auto(GStrv) b = g_strsplit(s1, "@DIR@", -1);
    g_autofree char *s2 = g_strjoinv("/var/tmp", b);
    g_auto(GStrv) c = g_strsplit(s2, "@CFG@", -1);
    g_autofree char *s3 = g_strjoinv(rules_path, c);
    g_auto(GStrv) d = g_strsplit(s3, "@DEV@", -1);
    g_autofree char *s4 = g_strjoinv(dev_path ? dev_path : "", d);
    g_auto(GStrv) e = g_strsplit(s4, "@NBD@", -1);
    g_autofree char *s5 = g_strjoinv(nbd_server ? nbd_server->sock : "", e);
    g_auto(GStrv) v = g_strsplit(s5, "@VHOST@", -1);
    g_autofree char *s6 = g_strjoinv(vhost_server ? vhost_server->sock : "",
                                     v);
    g_auto(GStrv) f = g_strsplit(s6, "@RBDPOOL@", -1);
    const char *pool = getenv("STRATA_CEPH_POOL");
    return g_strjoinv(pool ? pool : "", f);
}

/* One option set to one value. */
typedef struct Setting {
    const Sweep *sw;
    const char *value;          /* may hold @IMG@, @DIR@, @CFG@ */
} Setting;

static bool key_replaced(const char *key, const Setting *set, int n)
{
    for (int i = 0; i < n; i++) {
        g_autofree char *below = g_strconcat(set[i].sw->path, ".", NULL);
        if (!strcmp(key, set[i].sw->path) || g_str_has_prefix(key, below)) {
            return true;
        }
    }
    return false;
}

/* Dotted keys: the base with each setting applied (replacing the base's
 * own value of that path, and of every key below it for a child), and the
 * required siblings of list members. */
static char *build_keys(const char *base, const Setting *set, int n)
{
    g_autofree char *b = subst(base);
    g_auto(GStrv) pairs = g_strsplit(b, ",", -1);
    g_autoptr(GString) out = g_string_new(NULL);
    g_autoptr(GHashTable) lists = g_hash_table_new(g_str_hash, g_str_equal);

    for (char **p = pairs; *p; p++) {
        g_auto(GStrv) kv = g_strsplit(*p, "=", 2);
        if (!key_replaced(kv[0], set, n)) {
            g_string_append_printf(out, "%s%s", out->len ? "," : "", *p);
        }
    }
    for (int i = 0; i < n; i++) {
        const Sweep *sw = set[i].sw;
        if (sw->list && !g_hash_table_contains(lists, sw->list_path)) {
            g_hash_table_add(lists, sw->list_path);
            for (const SchemaMember *m = sw->list->members; m->name; m++) {
                bool given = false;
                for (int j = 0; j < n; j++) {
                    given |= set[j].sw->list == sw->list && set[j].sw->m == m;
                }
                if (m->required && !given) {
                    g_string_append_printf(out, ",%s.0.%s=%s", sw->list_path,
                                           m->name, sibling_value(m));
                }
            }
        }
        /* Commas inside a value are doubled in dotted keys. */
        g_autofree char *v = subst(set[i].value);
        g_auto(GStrv) parts = g_strsplit(v, ",", -1);
        g_autofree char *escaped = g_strjoinv(",,", parts);
        g_string_append_printf(out, ",%s=%s", sw->path, escaped);
    }
    return g_strdup(out->str);
}

/* ---- driving an opened node ---------------------------------------------------- */

static void fill(uint8_t *buf, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        buf[i] = (uint8_t)(seed * 37 + i * 13 + (i >> 8));
    }
}

/* Reads, writes, write-zeroes, discard, flush; results may be errors, but
 * bytes read back must be what the successful requests left (@stores
 * false: a node that stores nothing, not compared). */
static void drive(StrataBackend *be, bool stores)
{
    int64_t len = strata_backend_get_length(be);
    int64_t n = MIN(MAX(len, 0), 8192);
    uint8_t *w = g_malloc(8192), *r = g_malloc(8192), *model = g_malloc(8192);
    bool known;

    fill(w, 8192, 1);
    /* The model is valid while every change to [0, n) is known. */
    known = stores && strata_backend_pread(be, 0, model, n, 0) == 0;
    if (strata_backend_pwrite(be, 0, w, MIN(n, 4096), 0) == 0) {
        memcpy(model, w, MIN(n, 4096));
    }
    if (n >= 1513 &&
        strata_backend_pwrite(be, 513, w + 513, 1000, STRATA_REQ_FUA) == 0) {
        memcpy(model + 513, w + 513, 1000);
    }
    if (n >= 400 &&
        strata_backend_pwrite_zeroes(be, 100, 300, STRATA_REQ_MAY_UNMAP) == 0) {
        memset(model + 100, 0, 300);
    }
    if (known && strata_backend_pread(be, 0, r, n, 0) == 0) {
        g_assert_cmpmem(r, n, model, n);
    }
    /* Zeroing and discard shapes that cross every granularity: odd
     * edges, long bodies, the whole device. */
    static const int64_t ranges[][2] = {
        { 0, 8192 }, { 513, 70000 }, { 4096, 200000 }, { 12345, 300001 },
        { 1000, 200000 }, { 65536, 65536 },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(ranges); i++) {
        (void)strata_backend_pwrite_zeroes(be, ranges[i][0], ranges[i][1],
                                           i % 2 ? STRATA_REQ_MAY_UNMAP : 0);
        (void)strata_backend_pdiscard(be, ranges[i][1] / 3, ranges[i][1]);
    }
    if (len > 0 && len <= WHOLE_DEVICE_MAX) {
        (void)strata_backend_pwrite_zeroes(be, 0, len, STRATA_REQ_MAY_UNMAP);
        (void)strata_backend_pdiscard(be, 0, len);
    }
    (void)strata_backend_flush(be);
    /* Across and past the end. */
    if (len >= 100) {
        (void)strata_backend_pread(be, len - 100, r, 200, 0);
        (void)strata_backend_pwrite(be, len - 100, w, 200, 0);
    }
    if (len >= 0) {
        (void)strata_backend_pread(be, len, r, 0, 0);
    }
    (void)strata_backend_flush(be);
    g_free(w);
    g_free(r);
    g_free(model);
}

/* Does @msg name one of the options set, or quote one of the values? */
static bool message_names(const char *msg, const Setting *set, int n)
{
    for (int i = 0; i < n; i++) {
        g_autofree char *v = subst(set[i].value);
        g_autofree char *quoted = g_strdup_printf("'%s'", v);

        if (strstr(msg, set[i].sw->m->name) || (*v && strstr(msg, v)) ||
            strstr(msg, quoted)) {
            return true;
        }
    }
    return false;
}

/*
 * Open @base with @set applied.  A refusal must name an option of @set
 * (or, with @base_ok, any option: a combination may break a base value);
 * an accepted node is driven.
 */
static bool try_settings(const char *base, const Setting *set, int n,
                         bool base_ok, GString *problems)
{
    g_autofree char *keys = build_keys(base, set, n);
    g_autofree char *printable = g_strescape(keys, NULL);
    g_autoptr(StrataError) err = NULL;
    StrataContext *ctx;
    StrataNode *root;
    bool stores = true, waits = false;
    bool retries = false, other_server = false;

    /* nbd's open-timeout retries a connection for as long as it says: with
     * a server address changed as well, that is minutes of waiting for a
     * valid refusal.  Such combinations are not tried. */
    for (int i = 0; i < n; i++) {
        retries |= !strcmp(set[i].sw->path, "open-timeout") &&
                   strcmp(set[i].value, "0") != 0;
        other_server |= g_str_has_prefix(set[i].sw->path, "server.");
    }
    if (retries && other_server) {
        return false;
    }
    ctx = strata_context_new(NULL);

    g_test_message("%s", printable);
    root = strata_node_open_dotted(ctx, keys, &err);
    if (root && n == 1) {
        g_ptr_array_add(set[0].sw->accepted, g_strdup(set[0].value));
    }
    if (!root) {
        const char *msg = strata_error_get_message(err);
        g_autofree char *printable_msg = g_strescape(msg, NULL);
        g_test_message("  -> %s", printable_msg);
        if (!message_names(msg, set, n) &&
            !(base_ok && strchr(msg, ':'))) {
            g_string_append_printf(problems, "\n  %s: the error names "
                                   "neither an option set nor its value: %s",
                                   printable, msg);
        }
        strata_context_free(ctx);
        return false;
    }

    for (int i = 0; i < n; i++) {
        if (!strcmp(set[i].sw->m->name, "latency-ns")) {
            waits |= g_ascii_strtoll(set[i].value, NULL, 0) >
                     MAX_DRIVEN_LATENCY_NS;
        }
    }
    stores = strcmp(strata_node_get_driver(root), "null") != 0 &&
             strcmp(strata_node_get_driver(root), "null-aio") != 0;
    StrataBackend *be = strata_backend_new(root, "sweep",
        STRATA_PERM_CONSISTENT_READ | STRATA_PERM_WRITE, STRATA_PERM_ALL, NULL);
    if (!be) {
        be = strata_backend_new(root, "sweep", STRATA_PERM_CONSISTENT_READ,
                                STRATA_PERM_ALL, NULL);
    }
    strata_node_unref(root);
    if (be && !waits) {
        drive(be, stores);
    }
    strata_context_free(ctx);
    /* The image keeps its size for the next case. */
    g_assert_cmpint(ftruncate(img_fd, DEV_SIZE), ==, 0);
    return true;
}

/* The base of @drv; NULL, the test skipped saying why, when it needs a
 * loop device and there is none. */
static const char *base_of(const SchemaDriver *drv)
{
    for (size_t i = 0; i < G_N_ELEMENTS(bases); i++) {
        if (strcmp(bases[i].driver, drv->name)) {
            continue;
        }
        if (strstr(bases[i].keys, "@DEV@") && !dev_path &&
            !(dev_path = test_loop_device(DEV_SIZE, NULL))) {
            return NULL;
        }
        if (strstr(bases[i].keys, "@NBD@") && !nbd_server &&
            !(nbd_server = nbd_test_server_start(
                  (const char *const[]){ "nbdkit", "-f", "-U", "@SOCK@",
                                         "memory", "2M", NULL }, 0))) {
            return NULL;
        }
        if (strstr(bases[i].keys, "@VHOST@") && !vhost_server &&
            !(vhost_server = nbd_test_server_start(
                  (const char *const[]){
                      "qemu-storage-daemon", "--blockdev",
                      "driver=file,node-name=disk,filename=@DISK@",
                      "--export", "type=vhost-user-blk,id=vub0,"
                      "node-name=disk,addr.type=unix,addr.path=@SOCK@,"
                      "writable=on,num-queues=2", NULL }, DEV_SIZE))) {
            return NULL;
        }
        if (strstr(bases[i].keys, "@RBDPOOL@")) {
            static bool rbd_image_made;
            if (!rbd_test_pool()) {
                return NULL;
            }
            if (!rbd_image_made) {
                rbd_test_create(NULL, "sweep", DEV_SIZE, NULL);
                rbd_image_made = true;
            }
        }
        return bases[i].keys;
    }
    g_error("no base node for driver '%s' in test-option-sweep.c", drv->name);
}

static void test_sweep(gconstpointer opaque)
{
    const Sweep *sw = opaque;
    const char *base = base_of(sw->drv);
    g_autoptr(GString) problems = g_string_new(NULL);
    g_autoptr(GPtrArray) values = NULL;

    if (!base) {
        return;
    }
    values = values_for(sw->m);
    if (!strcmp(sw->path, "driver")) {
        /* Other drivers' bases are other sweeps; only bad names here. */
        g_ptr_array_set_size(values, 0);
        add(values, "bogus");
        add(values, "");
    }
    for (guint i = 0; i < values->len; i++) {
        Setting set = { sw, values->pdata[i] };
        try_settings(base, &set, 1, false, problems);
    }
    if (problems->len) {
        g_test_fail_printf("%s:%s", sw->drv->name, problems->str);
    }
}

/* Sweeps per driver, for the combinations. */
static GHashTable *driver_sweeps;       /* name → GPtrArray of Sweep */
/* What the combinations of a driver draw from: its own options but
 * "driver", and those of its child in the base, under the child's key. */
static GHashTable *driver_pools;        /* name → GPtrArray of Sweep */

/*
 * Random combinations of two to five options of one driver, each set to a
 * random value of its list: conflicting settings must be refused with an
 * error, never abort.  The seed is STRATA_TEST_SEED (default fixed).
 */
static void test_combinations(gconstpointer opaque)
{
    const SchemaDriver *drv = opaque;
    GPtrArray *sweeps = g_hash_table_lookup(driver_pools, drv->name);
    const char *seed_env = g_getenv("STRATA_TEST_SEED");
    guint32 seed = seed_env ? (guint32)g_ascii_strtoull(seed_env, NULL, 0)
                            : 20261203;
    g_autoptr(GRand) rand = g_rand_new_with_seed(seed);
    g_autoptr(GString) problems = g_string_new(NULL);
    const char *base = base_of(drv);
    int opened = 0;

    if (!base) {
        return;
    }
    g_test_message("seed %u (STRATA_TEST_SEED)", seed);
    for (int round = 0; round < COMBINATIONS; round++) {
        Setting set[5];
        g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func(
            (GDestroyNotify)g_ptr_array_unref);
        int n = g_rand_int_range(rand, 2, 6);

        for (int i = 0; i < n; i++) {
            const Sweep *sw;
            bool dup;
            do {
                sw = sweeps->pdata[g_rand_int_range(rand, 0, sweeps->len)];
                dup = false;
                for (int j = 0; j < i; j++) {
                    dup |= set[j].sw == sw;
                }
            } while (dup);
            /* Mostly values the option accepts alone (when its sweep ran
             * first), so that most combinations open and are driven. */
            GPtrArray *values = sw->accepted->len && g_rand_int_range(rand, 0, 5)
                ? g_ptr_array_ref(sw->accepted) : values_for(sw->m);
            g_ptr_array_add(keep, values);
            set[i] = (Setting) {
                sw, values->pdata[g_rand_int_range(rand, 0, values->len)],
            };
        }
        opened += try_settings(base, set, n, true, problems);
    }
    g_test_message("%d of %d combinations opened and driven", opened,
                   COMBINATIONS);
    if (problems->len) {
        g_test_fail_printf("%s (seed %u):%s", drv->name, seed, problems->str);
    }
}

/* ---- values found by the sweep ------------------------------------------------------ */

/*
 * A delay near INT64_MAX overflowed the timer's deadline and aborted on
 * the first request; delays are capped at an hour now, and the largest
 * one arms its timer like any other.  (The sweep does not drive delays
 * above MAX_DRIVEN_LATENCY_NS, which only wait, so it checks the refusal
 * here.)
 */
static void test_latency_cap(void)
{
    static const char *const keys[] = {
        "driver=null,latency-ns=9223372036854775807",
        "driver=mem,size=1M,latency-ns=3600000000001",
    };

    for (size_t i = 0; i < G_N_ELEMENTS(keys); i++) {
        g_autoptr(StrataError) err = NULL;
        StrataContext *ctx = strata_context_new(NULL);

        g_assert_null(strata_node_open_dotted(ctx, keys[i], &err));
        g_assert_cmpstr(strata_error_get_message(err), ==,
                        "latency-ns: must be at most 3600000000000");
        strata_context_free(ctx);
    }
}

/*
 * mem took a size that is not a multiple of iov-len-align: every request
 * is padded to that granule, so every request to its last block (here:
 * any request) failed with EINVAL.  Refused at open now.
 */
static void test_mem_size_granule(void)
{
    g_autoptr(StrataError) err = NULL;
    StrataContext *ctx = strata_context_new(NULL);

    g_assert_null(strata_node_open_dotted(ctx,
        "driver=mem,size=4096,iov-len-align=8192", &err));
    g_assert_cmpstr(strata_error_get_message(err), ==,
                    "size: 4096 is not a multiple of iov-len-align (8192)");
    strata_context_free(ctx);
}

/* Resident memory of this process, in bytes. */
static int64_t resident_bytes(void)
{
    g_autofree char *text = NULL;
    long size = 0, resident = 0;

    g_assert_true(g_file_get_contents("/proc/self/statm", &text, NULL, NULL));
    g_assert_cmpint(sscanf(text, "%ld %ld", &size, &resident), ==, 2);
    return (int64_t)resident * sysconf(_SC_PAGESIZE);
}

/*
 * mem zeroed and discarded with memset: zeroing a large sparse device
 * whole (a size any config may give) populated every page of it, and the
 * process was killed for memory.  Whole pages are handed back now.
 */
static void test_mem_zero_sparse(void)
{
    const int64_t size = 512 << 20;
    g_autofree char *keys = g_strdup_printf("driver=mem,size=%" PRId64, size);
    StrataContext *ctx = strata_context_new(NULL);
    StrataNode *root = strata_node_open_dotted(ctx, keys, NULL);
    StrataBackend *be;
    uint8_t buf[4096];
    int64_t before;

    g_assert_nonnull(root);
    be = strata_backend_new(root, "sweep", STRATA_PERM_CONSISTENT_READ |
                            STRATA_PERM_WRITE, STRATA_PERM_ALL, NULL);
    strata_node_unref(root);
    memset(buf, 0x5a, sizeof(buf));
    g_assert_cmpint(strata_backend_pwrite(be, size - 8192, buf, 4096, 0), ==, 0);
    before = resident_bytes();
    g_assert_cmpint(strata_backend_pwrite_zeroes(be, 100, size - 200, 0), ==, 0);
    g_assert_cmpint(strata_backend_pdiscard(be, 0, size), ==, 0);
    g_assert_cmpint(resident_bytes() - before, <, 64 << 20);
    g_assert_cmpint(strata_backend_pread(be, size - 8192, buf, 4096, 0), ==, 0);
    for (size_t i = 0; i < sizeof(buf); i++) {
        g_assert_cmpint(buf[i], ==, 0);
    }
    strata_context_free(ctx);
}

/* ---- registration ----------------------------------------------------------------- */

/* The combination pool of @drv (see driver_pools). */
static GPtrArray *pool_new(const char *drv, const char *child,
                           const char *child_drv)
{
    GPtrArray *pool = g_ptr_array_new();
    GPtrArray *own = g_hash_table_lookup(driver_sweeps, drv);
    GPtrArray *of_child = child ? g_hash_table_lookup(driver_sweeps, child_drv)
                                : NULL;

    for (guint i = 0; own && i < own->len; i++) {
        Sweep *sw = own->pdata[i];
        if (strcmp(sw->path, "driver") && (!child || strcmp(sw->path, child))) {
            g_ptr_array_add(pool, sw);
        }
    }
    for (guint i = 0; of_child && i < of_child->len; i++) {
        const Sweep *sw = of_child->pdata[i];
        if (!strcmp(sw->path, "driver")) {
            continue;
        }
        Sweep *c = g_new(Sweep, 1);
        *c = *sw;       /* shares m, list and the accepted values */
        c->path = g_strdup_printf("%s.%s", child, sw->path);
        c->list_path = sw->list_path ? g_strdup_printf("%s.%s", child,
                                                       sw->list_path) : NULL;
        g_ptr_array_add(pool, c);
    }
    return pool;
}

static void add_members(const SchemaDriver *drv, const SchemaMember *members,
                        const char *prefix, const SchemaMember *list,
                        const char *list_path)
{
    for (const SchemaMember *m = members; m->name; m++) {
        g_autofree char *path = g_strconcat(prefix, m->name, NULL);
        if (m->type == SCHEMA_TYPE_OBJECT) {
            g_autofree char *sub = g_strconcat(path, ".", NULL);
            add_members(drv, m->members, sub, NULL, NULL);
            continue;
        }
        if (m->type == SCHEMA_TYPE_LIST) {
            g_autofree char *sub = g_strconcat(path, ".0.", NULL);
            add_members(drv, m->members, sub, m, path);
            continue;
        }
        Sweep *sw = g_new0(Sweep, 1);
        sw->drv = drv;
        sw->path = g_strdup(path);
        sw->m = m;
        sw->list = list;
        sw->list_path = g_strdup(list_path);
        sw->accepted = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *name = g_strdup_printf("/option-sweep/%s/%s",
                                                drv->name, path);
        GPtrArray *of_drv = g_hash_table_lookup(driver_sweeps, drv->name);
        if (!of_drv) {
            of_drv = g_ptr_array_new();
            g_hash_table_insert(driver_sweeps, (char *)drv->name, of_drv);
        }
        g_ptr_array_add(of_drv, sw);
        /* The Sweep lives as long as the process: GTest keeps it. */
        g_test_add_data_func(name, sw, test_sweep);
    }
}

/* A file under /var/tmp with @text and @size bytes, already unlinked;
 * its /proc/self/fd path in *path. */
static int unlinked_file(const char *text, off_t size, char **path)
{
    g_autofree char *name = g_strdup("/var/tmp/strata-sweep-XXXXXX");
    int fd = g_mkstemp(name);

    g_assert_cmpint(fd, >=, 0);
    unlink(name);
    g_assert_cmpint(write(fd, text, strlen(text)), ==, strlen(text));
    g_assert_cmpint(ftruncate(fd, MAX(size, (off_t)strlen(text))), ==, 0);
    *path = g_strdup_printf("/proc/self/fd/%d", fd);
    return fd;
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    img_fd = unlinked_file("", DEV_SIZE, &img_path);
    unlinked_file("[inject-error]\nevent = \"none\nerrno = 99999\n"
                  "[bogus]\n= =\n", 0, &rules_path);

    /* The throttle base's group: limits no sweep reaches. */
    g_autoptr(OptNode) tg = opts_parse_dotted(
        "qom-type=throttle-group,id=sweep-tg,limits.iops-total=10000000",
        NULL);
    g_assert_true(object_add(tg, NULL));

    g_test_add_func("/option-sweep/found/latency-cap", test_latency_cap);
    g_test_add_func("/option-sweep/found/mem-size-granule",
                    test_mem_size_granule);
    g_test_add_func("/option-sweep/found/mem-zero-sparse", test_mem_zero_sparse);
    driver_sweeps = g_hash_table_new(g_str_hash, g_str_equal);
    for (const SchemaDriver *d = schema_drivers(); d->name; d++) {
        add_members(d, schema_common_members(), "", NULL, NULL);
        add_members(d, d->members, "", NULL, NULL);
    }
    driver_pools = g_hash_table_new(g_str_hash, g_str_equal);
    for (size_t i = 0; i < G_N_ELEMENTS(bases); i++) {
        g_hash_table_insert(driver_pools, (char *)bases[i].driver,
                            pool_new(bases[i].driver, bases[i].child,
                                     bases[i].child_driver));
    }
    for (const SchemaDriver *d = schema_drivers(); d->name; d++) {
        g_autofree char *name = g_strdup_printf("/option-sweep/%s/combinations",
                                                d->name);
        g_test_add_data_func(name, d, test_combinations);
    }
    int ret = g_test_run();
    nbd_test_server_free(nbd_server);
    nbd_test_server_free(vhost_server);
    return ret;
}
