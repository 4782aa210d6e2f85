/*
 * The option matrix: every option of the schema, for every driver, set to a
 * value other than its default on a node that then does real I/O
 * SPDX-License-Identifier: MIT
 *
 * Each case below is an option tree.  Its node is opened, and the same
 * sequence runs on it through a backend: writes (aligned, unaligned,
 * vectored from odd addresses, FUA, all-zero), reads compared with a model
 * of the bytes, write-zeroes (aligned, unaligned, with MAY_UNMAP), a discard
 * and a flush, then the whole region is read back once more.  A case may
 * add a check of the option's own effect (a raw window's bytes in the file,
 * mem's counters, an injected error).  Cases over the file driver run once
 * per AIO engine this build and kernel can use, with cache.direct off and
 * on, on a file under /var/tmp.  Cases of host_device and host_cdrom run
 * the same way on a loop device this process makes (test_loop_device():
 * detached by the kernel when the process ends, however it ends); without
 * root or loop devices they skip, saying why.  snapshot-overlay cases run
 * over a file filled with a pattern, which must be unchanged at the end.
 *
 * /option-matrix/coverage walks the case table against the tables that
 * scripts/qapi-gen.py generates from qapi/block.json and fails, listing
 * them, when an option of some driver is set to a non-default value by no
 * case: an option added to the schema needs a case here.  It reads the
 * case table, so a case that skips at run time (no loop device) still
 * counts: the CI machine runs them.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/fs.h>
#include <glib.h>

#include "block/aio-engine.h"
#include "block/block-int.h"
#include "block/drivers.h"
#include "block/object.h"
#include "block/mem.h"
#include "qapi/qapi-schema.h"
#include "qapi/schema.h"
#include "nbd-server.h"
#include "rbd-test.h"
#include "test-util.h"

#define DEV_SIZE (2 << 20)      /* mem devices and image files */
#define REGION (256 << 10)      /* the sequence works in [0, REGION) */
#define FAR_SECTOR 2048         /* byte 1 MiB: where blkdebug rules aim */
#define FAR_OFFSET ((int64_t)FAR_SECTOR * 512)

/* ---- cases ------------------------------------------------------------------ */

/* What the sequence expects of a case. */
enum {
    X_RO = 1 << 0,              /* writes, write-zeroes, discards: EROFS */
    X_SINK = 1 << 1,            /* null: writes are dropped */
    X_READS_ZERO = 1 << 2,      /* null: reads fill zeroes (else untouched) */
    X_DISCARD_ZERO = 1 << 3,    /* the discard deallocates: reads zeroes */
    X_BASE = 1 << 4,            /* the image holds a pattern, which reads
                                 * show and which stays unchanged */
    X_REFUSED = 1 << 5,         /* the open fails, naming the option (an
                                 * option accepted before its feature is) */
};

typedef struct Env {
    StrataContext *ctx;
    StrataNode *root;
    StrataBackend *be;
    int img_fd;                 /* the image file (unlinked), or -1 */
    int dev_fd;                 /* the loop device, or -1 */
    NbdTestServer *nbd;         /* the case's NBD server, or NULL */
} Env;

typedef struct Case {
    const char *name;
    /* Placeholders: @IMG@ the image file, @DEV@ the loop device, @AIO@
     * and @DIRECT@ the run's engine and cache mode (cases with @AIO@ run
     * for each), @CFG@ a blkdebug rules file (rules_file_text), @NBD@ the
     * socket of an nbdkit memory server of DEV_SIZE started for the case,
     * @NBDPORT@ the TCP port of one on 127.0.0.1. */
    const char *json;
    unsigned expect;
    /* The option's own effect, after the sequence (may be NULL). */
    void (*check)(Env *e, const uint8_t *model);
} Case;

/* Pieces of option trees. */
#define FILE_NODE(extra) \
    "{\"driver\": \"file\", \"filename\": \"@IMG@\", \"aio\": \"@AIO@\", " \
    "\"cache\": {\"direct\": @DIRECT@}" extra "}"
#define MEM_NODE(extra) \
    "{\"driver\": \"mem\", \"size\": \"2M\"" extra "}"
#define RAW_NODE(extra) \
    "{\"driver\": \"raw\", \"file\": " FILE_NODE("") extra "}"
#define NULL_NODE(extra) "{\"driver\": \"null\"" extra "}"
#define DBG_NODE(extra) \
    "{\"driver\": \"blkdebug\", \"image\": " MEM_NODE("") extra "}"
#define HOSTDEV_NODE(extra) \
    "{\"driver\": \"host_device\", \"filename\": \"@DEV@\", " \
    "\"aio\": \"@AIO@\", \"cache\": {\"direct\": @DIRECT@}" extra "}"
/* host_cdrom runs host_device's code: one engine and mode is enough (its
 * cache.no-flush case still runs in each). */
#define CDROM_NODE(extra) \
    "{\"driver\": \"host_cdrom\", \"filename\": \"@DEV@\", " \
    "\"aio\": \"threads\", \"cache\": {\"direct\": true}" extra "}"
/* align over a file (the run's engine and cache mode) or over a mem node
 * with 512-byte alignment. */
#define ALIGN_NODE(extra) \
    "{\"driver\": \"align\", \"file\": " FILE_NODE("") extra "}"
#define ALIGN_MEM_NODE(extra) \
    "{\"driver\": \"align\", \"file\": " MEM_NODE(", \"align\": 512") extra "}"
/* throttle over a mem node, in a group whose limits are far above what
 * the cases do (created in main()). */
#define THROTTLE_NODE(extra) \
    "{\"driver\": \"throttle\", \"throttle-group\": \"matrix-tg\", " \
    "\"file\": " MEM_NODE("") extra "}"
#define NULL_AIO_NODE(extra) "{\"driver\": \"null-aio\"" extra "}"
/* One run per case: the base is only read, whatever its engine. */
#define OVERLAY_NODE(extra) \
    "{\"driver\": \"snapshot-overlay\", \"file\": {\"driver\": " \
    "\"file\", \"filename\": \"@IMG@\"}" extra "}"

/* nbd over a fresh nbdkit memory export: discards read back zeroes. */
#define NBD_NODE(extra) \
    "{\"driver\": \"nbd\", \"server\": {\"type\": \"unix\", " \
    "\"path\": \"@NBD@\"}" extra "}"

/* virtio-blk-vhost-user over qemu-storage-daemon's vhost-user-blk export
 * (2 queues) of a fresh DEV_SIZE file with discard=unmap: discards read
 * back zeroes. */
#define VHOST_NODE(extra) \
    "{\"driver\": \"virtio-blk-vhost-user\", \"path\": \"@VHOST@\"" extra "}"

/* rbd over a fresh image of DEV_SIZE on the cluster of
 * tests/ceph/cluster.sh (made for the case: in namespace matrix-ns when
 * the case sets a namespace, with an empty snapshot s0 when it opens one;
 * skipped without a cluster).  Discards are not X_DISCARD_ZERO: librbd
 * skips the parts of a discard smaller than its granularity (QEMU's
 * rbd driver the same). */
#define RBD_NODE(extra) \
    "{\"driver\": \"rbd\", \"pool\": \"@RBDPOOL@\", " \
    "\"image\": \"@RBDIMG@\"" extra "}"

static void check_raw_window(Env *e, const uint8_t *model);
static void check_raw_size(Env *e, const uint8_t *model);
static void check_null_size(Env *e, const uint8_t *model);
static void check_bounced(Env *e, const uint8_t *model);
static void check_bounce_threshold(Env *e, const uint8_t *model);
static void check_bounce_auto(Env *e, const uint8_t *model);
static void check_mem_no_flush(Env *e, const uint8_t *model);
static void check_mem_no_fua(Env *e, const uint8_t *model);
static void check_mem_no_zeroes(Env *e, const uint8_t *model);
static void check_injected(Env *e, const uint8_t *model);
static void check_state_injected(Env *e, const uint8_t *model);
static void check_drop_cache(Env *e, const uint8_t *model);
static void check_overlay_block_size(Env *e, const uint8_t *model);
static void check_align_shaped(Env *e, const uint8_t *model);
static void check_nbd_multi_conn(Env *e, const uint8_t *model);
static void check_nbd_reconnect(Env *e, const uint8_t *model);
static void check_vhost_queues(Env *e, const uint8_t *model);
static void check_vhost_queue_size(Env *e, const uint8_t *model);
static void check_rbd_cache_off(Env *e, const uint8_t *model);

/*
 * The common options, once per driver.  A cache object in a file node
 * must keep "direct": @DIRECT@, so those spell the node out.  @dz is
 * X_DISCARD_ZERO where a passed-down discard reads back as zeroes.
 */
#define COMMON_CASES(drv, NODE, base, dz)                                     \
    { drv "/common/node-name", NODE(", \"node-name\": \"matrix0\""), base, NULL },   \
    { drv "/common/read-only", NODE(", \"read-only\": true"), base | X_RO, NULL },   \
    { drv "/common/auto-read-only", NODE(", \"auto-read-only\": true"), base, NULL },\
    { drv "/common/force-share", NODE(", \"read-only\": true, \"force-share\": true"),\
      base | X_RO, NULL },                                                    \
    { drv "/common/discard", NODE(", \"discard\": \"unmap\""),                       \
      base | (dz), NULL },                                                    \
    { drv "/common/detect-zeroes", NODE(", \"detect-zeroes\": \"on\""), base, NULL },\
    { drv "/common/detect-zeroes-unmap",                                             \
      NODE(", \"discard\": \"on\", \"detect-zeroes\": \"unmap\""),            \
      base | (dz), NULL },                                                    \
    { drv "/common/rmw-coalesce", NODE(", \"rmw-coalesce\": false"), base, NULL }

/* The file driver's own options, on a node of @drv's over @img (file,
 * host_device and host_cdrom share them and their code). */
#define FILE_CASES(drv, NODE, img)                                            \
    { drv "/cache.no-flush",                                                  \
      "{\"driver\": \"" drv "\", \"filename\": \"" img "\", "                 \
      "\"aio\": \"@AIO@\", \"cache\": {\"direct\": @DIRECT@, "                  \
      "\"no-flush\": true}}", 0, NULL },                                       \
    { drv "/locking", NODE(", \"locking\": \"off\""), 0, NULL },                \
    { drv "/bounce", NODE(", \"bounce\": \"always\""), 0, check_bounced },      \
    { drv "/bounce-threshold", NODE(", \"bounce-threshold\": \"8k\""), 0,       \
      check_bounce_threshold },                                               \
    { drv "/bounce-threshold-auto", NODE(", \"bounce-threshold\": \"auto\""), 0, \
      check_bounce_auto },                                                    \
    { drv "/bounce-threshold-64k",                                            \
      NODE(", \"bounce-threshold\": \"64k\", \"bounce\": \"always\""), 0,     \
      check_bounced },                                                        \
    { drv "/drop-cache", NODE(", \"drop-cache\": false"), 0, check_drop_cache }

static const Case cases[] = {
    /* file: cache.direct and aio come from the run's parameters. */
    COMMON_CASES("file", FILE_NODE, 0, X_DISCARD_ZERO),
    FILE_CASES("file", FILE_NODE, "@IMG@"),

    /* On the loop device, whose discard punches a hole in its file (and
     * so reads back zeroes).  host_cdrom is host_device under QEMU's
     * other name, with no tray or medium handling (qapi/block.json), so a
     * loop device is a fine drive; QEMU 7.2 instead fails I/O to a device
     * that answers no CD-ROM ioctl with ENOMEDIUM. */
    COMMON_CASES("host_device", HOSTDEV_NODE, 0, X_DISCARD_ZERO),
    FILE_CASES("host_device", HOSTDEV_NODE, "@DEV@"),
    COMMON_CASES("host_cdrom", CDROM_NODE, 0, X_DISCARD_ZERO),
    FILE_CASES("host_cdrom", CDROM_NODE, "@DEV@"),

    COMMON_CASES("raw", RAW_NODE, 0, X_DISCARD_ZERO),
    { "raw/cache",
      "{\"driver\": \"raw\", \"cache\": {\"direct\": true, \"no-flush\": true}, "
      "\"file\": {\"driver\": \"file\", \"filename\": \"@IMG@\", "
      "\"aio\": \"@AIO@\", \"cache\": {\"direct\": @DIRECT@}}}", 0, NULL },
    { "raw/offset", RAW_NODE(", \"offset\": 4608"), 0, check_raw_window },
    { "raw/size", RAW_NODE(", \"offset\": 4096, \"size\": \"1M\""), 0,
      check_raw_size },

    COMMON_CASES("null", NULL_NODE, X_SINK, 0),
    { "null/cache", NULL_NODE(", \"cache\": {\"direct\": true, "
                              "\"no-flush\": true}"), X_SINK, NULL },
    { "null/size", NULL_NODE(", \"size\": \"4M\""), X_SINK, check_null_size },
    { "null/latency-ns", NULL_NODE(", \"latency-ns\": 1000"), X_SINK, NULL },
    { "null/read-zeroes", NULL_NODE(", \"read-zeroes\": true"),
      X_SINK | X_READS_ZERO, NULL },
    { "null/null-co", "{\"driver\": \"null-co\", \"read-zeroes\": true}",
      X_SINK | X_READS_ZERO, NULL },

    /* null-aio: the null driver's second table, the same cases. */
    COMMON_CASES("null-aio", NULL_AIO_NODE, X_SINK, 0),
    { "null-aio/cache", NULL_AIO_NODE(", \"cache\": {\"direct\": true, "
                                      "\"no-flush\": true}"), X_SINK, NULL },
    { "null-aio/size", NULL_AIO_NODE(", \"size\": \"4M\""), X_SINK,
      check_null_size },
    { "null-aio/latency-ns", NULL_AIO_NODE(", \"latency-ns\": 1000"), X_SINK,
      NULL },
    { "null-aio/read-zeroes", NULL_AIO_NODE(", \"read-zeroes\": true"),
      X_SINK | X_READS_ZERO, NULL },

    /* Writes stay in the overlay (discard is advisory there: the blocks
     * keep their data); the base file keeps its pattern. */
    COMMON_CASES("snapshot-overlay", OVERLAY_NODE, X_BASE, 0),
    { "snapshot-overlay/cache", OVERLAY_NODE(", \"cache\": {\"direct\": "
                                             "true, \"no-flush\": true}"),
      X_BASE, NULL },
    { "snapshot-overlay/block-size-512",
      OVERLAY_NODE(", \"block-size\": 512"), X_BASE, check_overlay_block_size },
    { "snapshot-overlay/block-size-64k",
      OVERLAY_NODE(", \"block-size\": \"64k\""), X_BASE,
      check_overlay_block_size },

    COMMON_CASES("nbd", NBD_NODE, 0, X_DISCARD_ZERO),

    COMMON_CASES("virtio-blk-vhost-user", VHOST_NODE, 0, X_DISCARD_ZERO),
    { "virtio-blk-vhost-user/path", VHOST_NODE(""), 0, NULL },
    { "virtio-blk-vhost-user/cache", VHOST_NODE(", \"cache\": {\"direct\": "
                                                "true, \"no-flush\": true}"),
      0, NULL },
    { "virtio-blk-vhost-user/num-queues", VHOST_NODE(", \"num-queues\": 2"), 0,
      check_vhost_queues },
    { "virtio-blk-vhost-user/queue-size", VHOST_NODE(", \"queue-size\": 16"),
      0, check_vhost_queue_size },
    { "nbd/cache", NBD_NODE(", \"cache\": {\"direct\": true, "
                            "\"no-flush\": true}"), 0, NULL },
    { "nbd/inet",
      "{\"driver\": \"nbd\", \"server\": {\"type\": \"inet\", \"host\": "
      "\"127.0.0.1\", \"port\": \"@NBDPORT@\"}}", 0, NULL },
    /* nbdkit serves any export name. */
    { "nbd/export", NBD_NODE(", \"export\": \"matrix\""), 0,
      NULL },
    /* Accepted in the schema; refused until TLS credentials objects
     * exist. */
    { "nbd/tls-creds", NBD_NODE(", \"tls-creds\": \"tls0\""), X_REFUSED,
      NULL },
    { "nbd/tls-hostname", NBD_NODE(", \"tls-hostname\": \"example.org\""),
      0, NULL },
    { "nbd/reconnect-delay", NBD_NODE(", \"reconnect-delay\": 5"),
      0, check_nbd_reconnect },
    { "nbd/open-timeout", NBD_NODE(", \"open-timeout\": 3"), 0,
      NULL },
    { "nbd/multi-conn", NBD_NODE(", \"multi-conn\": 4"), 0,
      check_nbd_multi_conn },

    COMMON_CASES("rbd", RBD_NODE, 0, 0),
    { "rbd/cache", RBD_NODE(", \"cache\": {\"direct\": true, "
                            "\"no-flush\": true}"), 0, check_rbd_cache_off },
    { "rbd/namespace", RBD_NODE(", \"namespace\": \"matrix-ns\""), 0, NULL },
    { "rbd/conf", RBD_NODE(", \"conf\": \"@CEPHCONF@\""), 0, NULL },
    { "rbd/snapshot", RBD_NODE(", \"snapshot\": \"s0\", \"read-only\": true"),
      X_RO, NULL },
    { "rbd/user", RBD_NODE(", \"user\": \"admin\""), 0, NULL },
    /* A configuration naming no keyring: the key comes from the secret
     * (created in main() from the cluster's STRATA_CEPH_KEY). */
    { "rbd/key-secret", RBD_NODE(", \"conf\": \"@NOKEYCONF@\", "
                                 "\"key-secret\": \"matrix-rbd-key\""), 0,
      NULL },
    /* Errors name the option (X_REFUSED: the message starts with it). */
    { "rbd/refused/snapshot", RBD_NODE(", \"snapshot\": \"s0\""), X_REFUSED,
      NULL },
    { "rbd/refused/pool", "{\"driver\": \"rbd\", \"pool\": \"nopool\", "
      "\"image\": \"@RBDIMG@\"}", X_REFUSED, NULL },
    { "rbd/refused/image", "{\"driver\": \"rbd\", \"pool\": \"@RBDPOOL@\", "
      "\"image\": \"noimage\"}", X_REFUSED, NULL },
    { "rbd/refused/key-secret", RBD_NODE(", \"key-secret\": \"nokey\""),
      X_REFUSED, NULL },

    COMMON_CASES("mem", MEM_NODE, 0, X_DISCARD_ZERO),
    { "mem/cache.direct", MEM_NODE(", \"cache\": {\"direct\": true}"), 0,
      NULL },
    { "mem/cache.no-flush", MEM_NODE(", \"cache\": {\"no-flush\": true}"), 0,
      check_mem_no_flush },
    { "mem/align", MEM_NODE(", \"align\": 4096"), 0, NULL },
    { "mem/mem-align", MEM_NODE(", \"mem-align\": 4096"), 0, NULL },
    { "mem/iov-len-align", MEM_NODE(", \"iov-len-align\": 512"), 0, NULL },
    { "mem/max-transfer", MEM_NODE(", \"align\": 512, \"max-transfer\": "
                                   "\"8k\""), 0, NULL },
    { "mem/max-iov", MEM_NODE(", \"max-iov\": 2"), 0, NULL },
    { "mem/latency-ns", MEM_NODE(", \"latency-ns\": 1000"), 0, NULL },
    { "mem/random-order", MEM_NODE(", \"random-order\": true, \"seed\": 7"),
      0, NULL },
    { "mem/fua", MEM_NODE(", \"fua\": false"), 0, check_mem_no_fua },
    { "mem/zeroes", MEM_NODE(", \"zeroes\": false, \"align\": 4096"), 0,
      check_mem_no_zeroes },
    { "mem/strict", MEM_NODE(", \"align\": 4096, \"mem-align\": 4096, "
                             "\"iov-len-align\": 4096, \"max-transfer\": "
                             "\"16k\", \"max-iov\": 1"), 0, NULL },

    /* align: every case checks that the shaping happened on the filter
     * and its child only ever saw requests that fit it already. */
    COMMON_CASES("align", ALIGN_NODE, 0, X_DISCARD_ZERO),
    { "align/cache", ALIGN_NODE(", \"cache\": {\"direct\": true, "
                                "\"no-flush\": true}"), 0, check_align_shaped },
    { "align/request-alignment", ALIGN_MEM_NODE(", \"request-alignment\": "
                                                "\"8k\""), 0, check_align_shaped },
    { "align/mem-alignment", ALIGN_MEM_NODE(", \"mem-alignment\": 4096"), 0,
      check_align_shaped },
    { "align/iov-len-alignment", ALIGN_MEM_NODE(", \"iov-len-alignment\": "
                                                "1024"), 0, check_align_shaped },
    { "align/max-transfer", ALIGN_NODE(", \"request-alignment\": 4096, "
                                       "\"max-transfer\": \"16k\""), 0,
      check_align_shaped },
    { "align/opt-transfer", ALIGN_MEM_NODE(", \"opt-transfer\": \"64k\""), 0,
      check_align_shaped },
    { "align/max-iov", ALIGN_NODE(", \"max-iov\": 2"), 0, check_align_shaped },
    { "align/pwrite-zeroes-alignment",
      ALIGN_MEM_NODE(", \"pwrite-zeroes-alignment\": \"8k\""), 0,
      check_align_shaped },
    { "align/pdiscard-alignment",
      ALIGN_MEM_NODE(", \"discard\": \"unmap\", \"pdiscard-alignment\": "
                     "\"8k\""), X_DISCARD_ZERO, check_align_shaped },

    /* throttle: data passes unchanged through a group with limits. */
    COMMON_CASES("throttle", THROTTLE_NODE, 0, X_DISCARD_ZERO),
    { "throttle/cache", THROTTLE_NODE(", \"cache\": {\"direct\": true, "
                                      "\"no-flush\": true}"), 0, NULL },
    { "throttle/throttle-group",
      "{\"driver\": \"throttle\", \"throttle-group\": \"matrix-tg2\", "
      "\"file\": " FILE_NODE("") "}", 0, NULL },

    COMMON_CASES("blkdebug", DBG_NODE, 0, X_DISCARD_ZERO),
    { "blkdebug/cache", DBG_NODE(", \"cache\": {\"direct\": true, "
                                 "\"no-flush\": true}"), 0, NULL },
    /* Split on the filter, bounced on the file: each node applies its own
     * limits and its own policy to what enters it. */
    { "blkdebug/over-file",
      "{\"driver\": \"blkdebug\", \"align\": 4096, \"max-transfer\": "
      "\"16k\", \"image\": " FILE_NODE(", \"bounce\": \"always\"") "}",
      0, check_bounced },
    { "blkdebug/align", DBG_NODE(", \"align\": 4096"), 0, NULL },
    { "blkdebug/max-transfer", DBG_NODE(", \"align\": 4096, "
                                        "\"max-transfer\": \"16k\""), 0, NULL },
    { "blkdebug/write-zero", DBG_NODE(", \"align\": 512, \"opt-write-zero\": "
                                      "\"8k\", \"max-write-zero\": \"16k\""),
      0, NULL },
    { "blkdebug/discard", DBG_NODE(", \"discard\": \"unmap\", \"opt-discard\":"
                                   " \"8k\", \"max-discard\": \"16k\""),
      X_DISCARD_ZERO, NULL },
    { "blkdebug/inject-error",
      DBG_NODE(", \"inject-error\": [{\"event\": \"none\", \"iotype\": "
               "\"read\", \"errno\": 28, \"sector\": 2048, \"once\": true, "
               "\"immediately\": true}]"), 0, check_injected },
    { "blkdebug/set-state",
      DBG_NODE(", \"set-state\": [{\"event\": \"pwritev_done\", \"state\": 1, "
               "\"new_state\": 2}], \"inject-error\": [{\"event\": "
               "\"flush_to_disk\", \"state\": 2, \"iotype\": \"read\", "
               "\"errno\": 28, \"sector\": 2048, \"once\": true}]"),
      0, check_state_injected },
    { "blkdebug/config", DBG_NODE(", \"config\": \"@CFG@\""), 0,
      check_state_injected },
};

/* The rules file of the blkdebug/config case: the same rules as the
 * blkdebug/set-state case, in QEMU's format. */
static const char rules_file_text[] =
    "# written by test-option-matrix\n"
    "[set-state]\n"
    "event = \"pwritev_done\"\n"
    "state = \"1\"\n"
    "new_state = \"2\"\n"
    "\n"
    "[inject-error]\n"
    "event = \"flush_to_disk\"\n"
    "state = \"2\"\n"
    "iotype = \"read\"\n"
    "errno = \"28\"\n"
    "sector = \"2048\"\n"
    "once = \"on\"\n";

/* ---- expansion ----------------------------------------------------------------- */

typedef struct Param {
    AioEngineId engine;
    bool direct;
} Param;

/* Does @c run once per engine and cache mode? */
static bool case_per_engine(const Case *c)
{
    return strstr(c->json, "@AIO@") != NULL;
}

static char *replace(const char *text, const char *from, const char *to)
{
    g_auto(GStrv) parts = g_strsplit(text, from, -1);
    return g_strjoinv(to, parts);
}

static char *expand(const Case *c, const Param *p, const char *img,
                    const char *dev, const char *cfg, const NbdTestServer *nbd)
{
    g_autofree char *port = nbd ? g_strdup_printf("%d", nbd->port) : NULL;
    g_autofree char *n0 = replace(c->json, "@NBD@", nbd ? nbd->sock : "");
    g_autofree char *n1 = replace(n0, "@VHOST@", nbd ? nbd->sock : "");
    g_autofree char *n2 = replace(n1, "@NBDPORT@", port ? port : "");
    g_autofree char *i = replace(n2, "@IMG@", img ? img : "");
    g_autofree char *a = replace(i, "@DEV@", dev ? dev : "");
    g_autofree char *b = replace(a, "@AIO@", test_engine_name(p ? p->engine : AIO_ENGINE_THREADS));
    g_autofree char *d = replace(b, "@DIRECT@",
                                 p && p->direct ? "true" : "false");
    return replace(d, "@CFG@", cfg ? cfg : "");
}

/* @RBDPOOL@, @RBDIMG@ and the configuration files of the rbd cases, from
 * the cluster's environment (tests/ceph/cluster.sh). */
static char *expand_rbd(const char *json, const char *image)
{
    const char *conf = getenv("CEPH_CONF");
    const char *nokey = getenv("STRATA_CEPH_NOKEY_CONF");
    const char *pool = getenv("STRATA_CEPH_POOL");
    g_autofree char *a = replace(json, "@RBDPOOL@", pool ? pool : "");
    g_autofree char *b = replace(a, "@RBDIMG@", image ? image : "");
    g_autofree char *c = replace(b, "@CEPHCONF@", conf ? conf : "");
    return replace(c, "@NOKEYCONF@", nokey ? nokey : "");
}

/* ---- the sequence -------------------------------------------------------------- */

static uint8_t *aligned_alloc_zero(size_t n)
{
    void *p = NULL;
    g_assert_cmpint(posix_memalign(&p, 4096, n), ==, 0);
    memset(p, 0, n);
    return p;
}

static void fill(uint8_t *buf, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 9));
    }
}

/* The bytes of an X_BASE case's image. */
static const uint8_t *base_pattern(void)
{
    static uint8_t *pattern;

    if (!pattern) {
        pattern = g_malloc(DEV_SIZE);
        fill(pattern, DEV_SIZE, 99);
    }
    return pattern;
}

typedef struct Seq {
    Env *e;
    const Case *c;
    uint8_t *model;             /* [0, REGION) */
    uint8_t *buf;               /* aligned, REGION + 8192 */
} Seq;

static int expected_write_ret(const Seq *s)
{
    return (s->c->expect & X_RO) ? -EROFS : 0;
}

/* Read [off, off + len) and compare with the model (or, for null, with
 * what its reads leave in the buffer). */
static void seq_check(Seq *s, int64_t off, int64_t len, size_t skew)
{
    uint8_t *p = s->buf + skew;
    int ret;

    memset(p, 0xa5, len);
    ret = strata_backend_pread(s->e->be, off, p, len, 0);
    if (ret < 0) {
        g_error("%s: read of [%" PRId64 ", +%" PRId64 ") failed: %s",
                s->c->name, off, len, g_strerror(-ret));
    }
    for (int64_t i = 0; i < len; i++) {
        uint8_t want;
        if (s->c->expect & X_SINK) {
            want = (s->c->expect & X_READS_ZERO) ? 0 : 0xa5;
        } else {
            want = s->model[off + i];
        }
        if (p[i] != want) {
            g_error("%s: byte %" PRId64 " reads 0x%02x, expected 0x%02x",
                    s->c->name, off + i, p[i], want);
        }
    }
}

static void seq_write(Seq *s, int64_t off, int64_t len, size_t skew,
                      unsigned seed, uint32_t flags)
{
    uint8_t *p = s->buf + skew;
    int ret;

    if (seed) {
        fill(p, len, seed);
    } else {
        memset(p, 0, len);
    }
    ret = strata_backend_pwrite(s->e->be, off, p, len, flags);
    if (ret != expected_write_ret(s)) {
        g_error("%s: write of [%" PRId64 ", +%" PRId64 ") returned %d (%s), "
                "expected %d", s->c->name, off, len, ret, g_strerror(-ret),
                expected_write_ret(s));
    }
    if (ret == 0) {
        memcpy(s->model + off, p, len);
    }
}

static void seq_zero(Seq *s, int64_t off, int64_t len, uint32_t flags)
{
    int ret = strata_backend_pwrite_zeroes(s->e->be, off, len, flags);

    if (ret != expected_write_ret(s)) {
        g_error("%s: write-zeroes of [%" PRId64 ", +%" PRId64 ") returned %d "
                "(%s)", s->c->name, off, len, ret, g_strerror(-ret));
    }
    if (ret == 0) {
        memset(s->model + off, 0, len);
    }
}

static void run_sequence(Env *e, const Case *c)
{
    Seq s = { .e = e, .c = c };
    int64_t len = strata_backend_get_length(e->be);
    int ret;

    g_assert_cmpint(len, >=, REGION);
    s.model = g_malloc0(REGION);
    s.buf = aligned_alloc_zero(REGION + 8192);

    /* What is there: the image's current bytes become the model. */
    ret = strata_backend_pread(e->be, 0, s.model, REGION, 0);
    g_assert_cmpint(ret, ==, 0);
    if (c->expect & X_BASE) {
        /* Nothing written yet: every block reads the base. */
        g_assert_cmpmem(s.model, REGION, base_pattern(), REGION);
    }

    /* Writes: aligned, unaligned from odd addresses, FUA, all zero (which
     * detect-zeroes turns into write-zeroes). */
    seq_write(&s, 0, 65536, 0, 1, 0);
    seq_write(&s, 513, 3000, 1, 2, 0);
    seq_write(&s, 70000, 5000, 3, 3, 0);
    seq_write(&s, 131072, 4096, 0, 4, STRATA_REQ_FUA);
    seq_write(&s, 100000, 9000, 0, 0, 0);
    seq_write(&s, 200000, 4096, 512, 5, STRATA_REQ_FUA);
    {
        /* Vectored, three elements at odd addresses and lengths. */
        struct iovec iov[3] = {
            { s.buf + 1, 1000 }, { s.buf + 2049, 4096 }, { s.buf + 8001, 333 },
        };
        int64_t off = 8292, at = off;
        fill(s.buf, REGION, 6);
        ret = strata_backend_pwritev(e->be, off, iov, 3, 0);
        g_assert_cmpint(ret, ==, expected_write_ret(&s));
        for (int i = 0; i < 3 && ret == 0; i++) {
            memcpy(s.model + at, iov[i].iov_base, iov[i].iov_len);
            at += iov[i].iov_len;
        }
    }
    seq_check(&s, 0, REGION, 0);
    seq_check(&s, 777, 7000, 5);
    {
        /* A vectored read into odd places. */
        uint8_t *a = g_malloc(100), *b = g_malloc(5000), *d = g_malloc(2001);
        struct iovec iov[3] = { { a + 1, 99 }, { b, 5000 }, { d + 1, 2000 } };
        memset(a, 0xa5, 100);
        memset(b, 0xa5, 5000);
        memset(d, 0xa5, 2001);
        ret = strata_backend_preadv(e->be, 1001, iov, 3, 0);
        g_assert_cmpint(ret, ==, 0);
        if (!(c->expect & X_SINK)) {
            g_assert_cmpmem(a + 1, 99, s.model + 1001, 99);
            g_assert_cmpmem(b, 5000, s.model + 1100, 5000);
            g_assert_cmpmem(d + 1, 2000, s.model + 6100, 2000);
        }
        g_free(a);
        g_free(b);
        g_free(d);
    }

    /* Write-zeroes: aligned, unaligned, with MAY_UNMAP, with FUA. */
    seq_zero(&s, 4096, 8192, 0);
    seq_zero(&s, 700, 1000, 0);
    seq_zero(&s, 16384, 16384, STRATA_REQ_MAY_UNMAP);
    seq_zero(&s, 150000, 3000, STRATA_REQ_MAY_UNMAP | STRATA_REQ_FUA);
    seq_check(&s, 0, REGION, 0);

    /* Discard: advisory unless the case says it deallocates. */
    seq_write(&s, 32768, 32768, 0, 7, 0);
    ret = strata_backend_pdiscard(e->be, 32768, 32768);
    g_assert_cmpint(ret, ==, expected_write_ret(&s));
    if (ret == 0 && (c->expect & X_DISCARD_ZERO)) {
        memset(s.model + 32768, 0, 32768);
    }
    seq_check(&s, 0, REGION, 0);

    ret = strata_backend_flush(e->be);
    g_assert_cmpint(ret, ==, 0);
    seq_check(&s, 0, REGION, 0);

    if (e->dev_fd >= 0) {
        /* The device holds what the node says (the test's descriptor
         * shares the device's page cache with buffered nodes, and direct
         * writes, discards and zeroing invalidate it). */
        g_autofree uint8_t *dev = g_malloc(REGION);
        g_assert_cmpint(pread(e->dev_fd, dev, REGION, 0), ==, REGION);
        g_assert_cmpmem(dev, REGION, s.model, REGION);
    }
    if (c->check) {
        c->check(e, s.model);
    }
    free(s.buf);
    g_free(s.model);
}

/* ---- checks of the options' own effects ---------------------------------------- */

static StrataNode *find_driver(StrataNode *n, const BlockDriver *drv)
{
    if (n->drv == drv) {
        return n;
    }
    for (GSList *l = n->children; l; l = l->next) {
        StrataNode *found = find_driver(((BlockChild *)l->data)->node, drv);
        if (found) {
            return found;
        }
    }
    return NULL;
}

/* The node of the file driver's code: file, host_device, host_cdrom. */
static StrataNode *find_file_node(StrataNode *n)
{
    StrataNode *f = find_driver(n, &bdrv_file);

    f = f ? f : find_driver(n, &bdrv_host_device);
    f = f ? f : find_driver(n, &bdrv_host_cdrom);
    g_assert_nonnull(f);
    return f;
}

/* The window's bytes sit in the file at the window's offset. */
static void check_raw_window(Env *e, const uint8_t *model)
{
    g_autofree uint8_t *file = g_malloc(REGION);

    g_assert_cmpint(pread(e->img_fd, file, REGION, 4608), ==, REGION);
    g_assert_cmpmem(file, REGION, model, REGION);
}

static void check_raw_size(Env *e, const uint8_t *model)
{
    uint8_t b[512];

    g_assert_cmpint(strata_backend_get_length(e->be), ==, 1 << 20);
    /* Past the window is past the device. */
    g_assert_cmpint(strata_backend_pread(e->be, 1 << 20, b, 512, 0), ==, -EIO);
}

static void check_null_size(Env *e, const uint8_t *model)
{
    g_assert_cmpint(strata_backend_get_length(e->be), ==, 4 << 20);
}

/* Bytes the file node bounced for an aligned read of [0, @len) into
 * page-aligned memory, a request that fits the node as it is: only the
 * bounce policy copies it.  The bytes read are checked too. */
static uint64_t aligned_read_bounced(Env *e, const uint8_t *model, size_t len)
{
    StrataNode *file = find_file_node(e->root);
    uint8_t *buf = aligned_alloc_zero(len);
    StrataStats before, after;

    strata_node_get_stats(file, &before);
    g_assert_cmpint(strata_backend_pread(e->be, 0, buf, len, 0), ==, 0);
    strata_node_get_stats(file, &after);
    g_assert_cmpmem(buf, len, model, len);
    free(buf);
    return after.bytes_bounced - before.bytes_bounced;
}

/* bounce=always: every request is copied, whatever its size (and the pad
 * path's own buffers passed the driver's assertion without being bounced
 * again: the sequence ran). */
static void check_bounced(Env *e, const uint8_t *model)
{
    g_assert_cmpuint(aligned_read_bounced(e, model, 4096), ==, 4096);
    g_assert_cmpuint(aligned_read_bounced(e, model, 65536), ==, 65536);
}

/* bounce-threshold=8k: requests up to 8 KiB are copied, larger ones not. */
static void check_bounce_threshold(Env *e, const uint8_t *model)
{
    g_assert_cmpuint(aligned_read_bounced(e, model, 4096), ==, 4096);
    g_assert_cmpuint(aligned_read_bounced(e, model, 8192), ==, 8192);
    g_assert_cmpuint(aligned_read_bounced(e, model, 65536), ==, 0);
}

/* bounce-threshold=auto: the measured table says zero-copy for every
 * engine, so nothing aligned is bounced. */
static void check_bounce_auto(Env *e, const uint8_t *model)
{
    g_assert_cmpuint(aligned_read_bounced(e, model, 4096), ==, 0);
    g_assert_cmpuint(aligned_read_bounced(e, model, 65536), ==, 0);
}

/* The align filter shaped every request (its padding counters moved) and
 * its child shaped none: no padding, no bounce, no split below it. */
static void check_align_shaped(Env *e, const uint8_t *model)
{
    StrataNode *child = node_filtered(e->root);
    BlockStats st_top = node_stats_sum(e->root), st_below = node_stats_sum(child);
    const BlockPadStats *top = &st_top.pad, *below = &st_below.pad;

    g_assert_true(e->root->drv == &bdrv_align);
    g_assert_cmpuint(top->rmw_writes, >, 0);
    g_assert_cmpuint(below->padded_reads, ==, 0);
    g_assert_cmpuint(below->rmw_writes, ==, 0);
    g_assert_cmpuint(below->bytes_bounced, ==, 0);
    g_assert_cmpuint(below->vectors_collapsed, ==, 0);
    g_assert_cmpuint(below->split_requests, ==, 0);
}

static MemCounters mem_counters(Env *e)
{
    MemCounters c;
    mem_get_counters(find_driver(e->root, &bdrv_mem), &c);
    return c;
}

static void check_mem_no_flush(Env *e, const uint8_t *model)
{
    g_assert_cmpuint(mem_counters(e).flushes, ==, 0);
}

/* FUA writes reached mem as writes and flushes. */
static void check_mem_no_fua(Env *e, const uint8_t *model)
{
    MemCounters c = mem_counters(e);
    g_assert_cmpuint(c.fua_writes, ==, 0);
    g_assert_cmpuint(c.flushes, >, 1);
}

/* Write-zeroes reached mem as zero data. */
static void check_mem_no_zeroes(Env *e, const uint8_t *model)
{
    MemCounters c = mem_counters(e);
    g_assert_cmpuint(c.requests[REQ_ZEROES], ==, 0);
}

/* Reads of byte FAR_OFFSET fail with ENOSPC once, then succeed; nothing
 * else was affected (the sequence ran). */
static void check_far_read_fails_once(Env *e)
{
    uint8_t *b = aligned_alloc_zero(4096);

    g_assert_cmpint(strata_backend_pread(e->be, FAR_OFFSET, b, 4096, 0), ==,
                    -ENOSPC);
    g_assert_cmpint(strata_backend_pread(e->be, FAR_OFFSET, b, 4096, 0), ==, 0);
    for (int i = 0; i < 4096; i++) {
        g_assert_cmpint(b[i], ==, 0);
    }
    free(b);
}

static void check_injected(Env *e, const uint8_t *model)
{
    check_far_read_fails_once(e);
}

/* The rule became active at the flush, in state 2 (after the writes). */
static void check_state_injected(Env *e, const uint8_t *model)
{
    check_far_read_fails_once(e);
}

/* drop-cache (no effect in Strata, QEMU's migration setting) is also the
 * one option a reopen may change alone: both ways, and the data stays. */
static void check_drop_cache(Env *e, const uint8_t *model)
{
    g_autoptr(StrataError) err = NULL;
    g_autofree uint8_t *got = g_malloc(REGION);
    StrataNode *file = find_file_node(e->root);

    for (int on = 1; on >= 0; on--) {
        if (!strata_node_reopen_json(file, on ? "{\"drop-cache\": true}"
                                              : "{\"drop-cache\": false}",
                                     &err)) {
            g_error("reopen with drop-cache=%d: %s", on,
                    strata_error_get_message(err));
        }
        g_assert_cmpint(strata_backend_pread(e->be, 0, got, REGION, 0), ==, 0);
        g_assert_cmpmem(got, REGION, model, REGION);
    }
}

/* The overlay works in blocks of block-size: its request alignment, and
 * what its info counts. */
static void check_overlay_block_size(Env *e, const uint8_t *model)
{
    StrataNode *ov = find_driver(e->root, &bdrv_snapshot_overlay);
    g_autoptr(GString) info = g_string_new(NULL);
    uint32_t bs = ov->bl.request_alignment;
    g_autofree char *want = g_strdup_printf(" blocks of %" PRIu32 " bytes "
                                            "written", bs);

    g_assert_true(bs == 512 || bs == 65536);     /* not the default */
    ov->drv->dump_info(ov, info);
    g_assert_nonnull(strstr(info->str, want));
}

/* multi-conn=4 on nbdkit memory, which allows it: four connections. */
/* The sequence's requests went over both virtqueues. */
static void check_vhost_queues(Env *e, const uint8_t *model)
{
    g_autoptr(GString) info = g_string_new(NULL);
    unsigned long n0 = 0, n1 = 0;

    e->root->drv->dump_info(e->root, info);
    const char *q0 = strstr(info->str, "queue 0: ");
    const char *q1 = strstr(info->str, "queue 1: ");
    g_assert_nonnull(q0);
    g_assert_nonnull(q1);
    n0 = strtoul(q0 + strlen("queue 0: "), NULL, 10);
    n1 = strtoul(q1 + strlen("queue 1: "), NULL, 10);
    g_assert_cmpuint(n0, >, 0);
    g_assert_cmpuint(n1, >, 0);
}

static void check_vhost_queue_size(Env *e, const uint8_t *model)
{
    g_autoptr(GString) info = g_string_new(NULL);

    e->root->drv->dump_info(e->root, info);
    g_assert_nonnull(strstr(info->str, "1 queue of 16,"));
}

static void check_nbd_multi_conn(Env *e, const uint8_t *model)
{
    g_autoptr(GString) info = g_string_new(NULL);

    e->root->drv->dump_info(e->root, info);
    g_assert_nonnull(strstr(info->str, "4 of 4 connections up"));
}

/* reconnect-delay: the server is killed and started again (nbdkit memory
 * starts empty); a write issued meanwhile waits for the new connection
 * and lands there. */
static void check_nbd_reconnect(Env *e, const uint8_t *model)
{
    uint8_t w[4096], r[4096];

    memset(w, 0x5a, sizeof(w));
    nbd_test_server_kill(e->nbd);
    nbd_test_server_restart_later(e->nbd, 100);
    g_assert_cmpint(strata_backend_pwrite(e->be, 8192, w, sizeof(w), 0), ==, 0);
    g_assert_cmpint(strata_backend_pread(e->be, 8192, r, sizeof(r), 0), ==, 0);
    g_assert_cmpmem(r, sizeof(r), w, sizeof(w));
}

/* cache.direct=true turns librbd's cache off, as in QEMU. */
static void check_rbd_cache_off(Env *e, const uint8_t *model)
{
    g_autoptr(GString) info = g_string_new(NULL);

    e->root->drv->dump_info(e->root, info);
    g_assert_nonnull(strstr(info->str, "rbd_cache off"));
}

/* ---- running a case ------------------------------------------------------------ */

typedef struct Run {
    const Case *c;
    Param p;
} Run;

/*
 * A new file under /var/tmp holding @text; its fd in *fd.  The caller
 * unlinks it as soon as the node is open, so that a failed test (which
 * aborts) leaves nothing behind.
 */
static char *tmp_file(const char *text, off_t size, int *fd)
{
    char *path = g_strdup("/var/tmp/strata-matrix-XXXXXX");

    *fd = g_mkstemp(path);
    g_assert_cmpint(*fd, >=, 0);
    if (text) {
        g_assert_cmpint(write(*fd, text, strlen(text)), ==, strlen(text));
    }
    g_assert_cmpint(ftruncate(*fd, size ? size : (off_t)strlen(text)), ==, 0);
    return path;
}

static void test_case(gconstpointer opaque)
{
    const Run *r = opaque;
    const Case *c = r->c;
    bool per_engine = case_per_engine(c);
    g_autofree char *img = NULL;
    g_autofree char *cfg = NULL;
    const char *dev = NULL;
    g_autoptr(StrataError) err = NULL;
    Env e = { .img_fd = -1, .dev_fd = -1 };
    int cfg_fd = -1;

    if (per_engine && !test_engine_usable(r->p.engine, r->p.direct)) {
        return;
    }
    if (strstr(c->json, "@DEV@") &&
        !(dev = test_loop_device(DEV_SIZE, &e.dev_fd))) {
        return;                 /* skipped, saying why */
    }
    if (strstr(c->json, "@IMG@")) {
        img = tmp_file(NULL, DEV_SIZE, &e.img_fd);
        if (c->expect & X_BASE) {
            g_assert_cmpint(pwrite(e.img_fd, base_pattern(), DEV_SIZE, 0), ==,
                            DEV_SIZE);
        }
    }
    if (strstr(c->json, "@CFG@")) {
        cfg = tmp_file(rules_file_text, 0, &cfg_fd);
    }
    if (strstr(c->json, "@NBD@") || strstr(c->json, "@NBDPORT@")) {
        const char *const argv[] = { "nbdkit", "-f", "-U", "@SOCK@", "memory",
                                     "2M", NULL };
        e.nbd = strstr(c->json, "@NBD@")
                ? nbd_test_server_start(argv, 0)
                : nbd_test_server_start_tcp((const char *const[]){
                      "nbdkit", "-f", "memory", "2M", NULL },
                      0);
        if (!e.nbd) {
            return;             /* skipped, saying why */
        }
    }
    if (strstr(c->json, "@VHOST@")) {
        const char *const argv[] = {
            "qemu-storage-daemon", "--blockdev",
            "driver=file,node-name=disk,filename=@DISK@,discard=unmap",
            "--export", "type=vhost-user-blk,id=vub0,node-name=disk,"
            "addr.type=unix,addr.path=@SOCK@,writable=on,num-queues=2", NULL };
        e.nbd = nbd_test_server_start(argv, DEV_SIZE);
        if (!e.nbd) {
            return;             /* skipped, saying why */
        }
    }
    g_autofree char *rbd_img = NULL;
    const char *rbd_ns = strstr(c->json, "\"namespace\"") ? "matrix-ns" : NULL;
    if (strstr(c->json, "@RBDIMG@") || strstr(c->json, "@RBDPOOL@")) {
        static unsigned rbd_serial;
        if (!rbd_test_pool()) {
            return;             /* skipped, saying why */
        }
        rbd_img = g_strdup_printf("matrix-%u", rbd_serial++);
        rbd_test_create(rbd_ns, rbd_img, DEV_SIZE,
                        strstr(c->json, "\"snapshot\"") ? "s0" : NULL);
    }
    g_autofree char *json0 = expand(c, per_engine ? &r->p : NULL, img, dev,
                                    cfg, e.nbd);
    g_autofree char *json = expand_rbd(json0, rbd_img);
    g_test_message("options: %s", json);

    e.ctx = strata_context_new(&err);
    g_assert_nonnull(e.ctx);
    e.root = strata_node_open_json(e.ctx, json, &err);
    if (img) {
        unlink(img);
    }
    if (cfg) {
        unlink(cfg);
        close(cfg_fd);
    }
    if (c->expect & X_REFUSED) {
        /* The message starts with the option's key path. */
        g_assert_null(e.root);
        g_assert_true(g_str_has_prefix(strata_error_get_message(err),
                                       strrchr(c->name, '/') + 1));
        strata_context_free(e.ctx);
        nbd_test_server_free(e.nbd);
        if (rbd_img) {
            rbd_test_remove(rbd_ns, rbd_img);
        }
        return;
    }
    if (!e.root) {
        g_error("%s: open failed: %s", c->name, strata_error_get_message(err));
    }
    uint32_t perm = STRATA_PERM_CONSISTENT_READ |
                    ((c->expect & X_RO) ? 0 : STRATA_PERM_WRITE);
    e.be = strata_backend_new(e.root, "matrix", perm, STRATA_PERM_ALL, &err);
    if (!e.be) {
        g_error("%s: backend: %s", c->name, strata_error_get_message(err));
    }
    strata_node_unref(e.root);      /* the backend holds it */

    run_sequence(&e, c);

    /* Invariant 1 on every mem device: no request broke its limits. */
    StrataNode *mem = find_driver(e.root, &bdrv_mem);
    if (mem) {
        MemCounters mc;
        mem_get_counters(mem, &mc);
        if (mc.limit_violations) {
            g_error("%s: %" PRIu64 " limit violations on mem, last: %s",
                    c->name, mc.limit_violations, mem_last_violation(mem));
        }
    }
    strata_context_free(e.ctx);
    if (c->expect & X_BASE) {
        /* The overlay never wrote its base, not even at close. */
        g_autofree uint8_t *file = g_malloc(DEV_SIZE);
        g_assert_cmpint(pread(e.img_fd, file, DEV_SIZE, 0), ==, DEV_SIZE);
        g_assert_cmpmem(file, DEV_SIZE, base_pattern(), DEV_SIZE);
    }
    if (e.img_fd >= 0) {
        close(e.img_fd);
    }
    nbd_test_server_free(e.nbd);
    if (rbd_img) {
        rbd_test_remove(rbd_ns, rbd_img);
    }
}

/* ---- coverage ------------------------------------------------------------------- */

/* Does @key of @obj hold something other than @m's default? */
static bool differs_from_default(OptNode *obj, const char *key,
                                 const SchemaMember *m)
{
    g_autoptr(StrataError) err = NULL;

    if (m->required || !m->has_default) {
        return true;        /* setting it at all is the non-default */
    }
    switch (m->type) {
    case SCHEMA_TYPE_BOOL: {
        bool v;
        g_assert_true(opts_get_bool(obj, key, false, &v, &err));
        return v != (bool)m->default_int;
    }
    case SCHEMA_TYPE_INT: {
        int64_t v;
        g_assert_true(opts_get_int(obj, key, 0, &v, &err));
        return v != m->default_int;
    }
    case SCHEMA_TYPE_SIZE: {
        uint64_t v;
        int keyword;
        if (m->values && opts_get_enum(obj, key, m->values, 0, &keyword,
                                       NULL)) {
            return true;    /* a keyword ("auto") is never the default */
        }
        g_assert_true(opts_get_size(obj, key, 0, &v, &err));
        return v != m->default_size;
    }
    case SCHEMA_TYPE_ENUM: {
        int v;
        g_assert_true(opts_get_enum(obj, key, m->values, 0, &v, &err));
        return v != m->default_int;
    }
    case SCHEMA_TYPE_STRING: {
        const char *v;
        g_assert_true(opts_get_str(obj, key, NULL, &v, &err));
        return g_strcmp0(v, m->default_str) != 0;
    }
    default:
        return true;
    }
}

static void walk_node(GHashTable *set, OptNode *obj);

/* Record "driver: path" for each member of @obj set to a non-default
 * value; @members are the driver's, @common the common ones (top level). */
static void walk_members(GHashTable *set, const char *drv, OptNode *obj,
                         const SchemaMember *members,
                         const SchemaMember *common, const char *prefix)
{
    for (guint i = 0; i < opts_object_size(obj); i++) {
        const char *key = opts_object_key(obj, i);
        OptNode *val = opts_object_value(obj, i);
        const SchemaMember *m = schema_find_member(members, key);
        if (!m && common) {
            m = schema_find_member(common, key);
        }
        if (!m) {
            g_error("a case sets '%s%s', which the schema of %s lacks",
                    prefix, key, drv);
        }
        g_autofree char *path = g_strconcat(prefix, key, NULL);
        if (m->type == SCHEMA_TYPE_OBJECT) {
            g_autofree char *sub = g_strconcat(path, ".", NULL);
            walk_members(set, drv, val, m->members, NULL, sub);
        } else if (m->type == SCHEMA_TYPE_LIST) {
            g_autofree char *sub = g_strconcat(path, ".N.", NULL);
            for (guint j = 0; j < opts_list_length(val); j++) {
                walk_members(set, drv, opts_list_get(val, j), m->members,
                             NULL, sub);
            }
        } else {
            if (m->type == SCHEMA_TYPE_CHILD && opts_type(val) == OPT_OBJECT) {
                walk_node(set, val);
            }
            if (differs_from_default(obj, key, m)) {
                g_hash_table_add(set, g_strdup_printf("%s: %s", drv, path));
            }
        }
    }
}

static void walk_node(GHashTable *set, OptNode *obj)
{
    OptNode *d = opts_peek(obj, "driver");
    const SchemaDriver *sd = d ? schema_find_driver(opts_scalar_str(d)) : NULL;

    g_assert_nonnull(sd);
    walk_members(set, sd->name, obj, sd->members, qapi_common_members, "");
}

/* Every leaf option of @members, as "driver: path". */
static void list_members(GPtrArray *out, const char *drv,
                         const SchemaMember *members, const char *prefix)
{
    for (const SchemaMember *m = members; m->name; m++) {
        g_autofree char *path = g_strconcat(prefix, m->name, NULL);
        if (m->type == SCHEMA_TYPE_OBJECT) {
            g_autofree char *sub = g_strconcat(path, ".", NULL);
            list_members(out, drv, m->members, sub);
        } else if (m->type == SCHEMA_TYPE_LIST) {
            g_autofree char *sub = g_strconcat(path, ".N.", NULL);
            list_members(out, drv, m->members, sub);
        } else {
            g_ptr_array_add(out, g_strdup_printf("%s: %s", drv, path));
        }
    }
}

static void test_coverage(void)
{
    g_autoptr(GHashTable) set = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                      g_free, NULL);
    g_autoptr(GPtrArray) all = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GString) missing = g_string_new(NULL);
    int nmissing = 0;

    /* What the cases set, in every expansion they run in. */
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        for (int eng = 0; eng < 2; eng++) {
            for (int direct = 0; direct < 2; direct++) {
                Param p = { eng ? AIO_ENGINE_NATIVE : AIO_ENGINE_THREADS,
                            direct };
                g_autoptr(StrataError) err = NULL;
                g_autofree char *json = expand(&cases[i], &p, "/x.img",
                                               "/dev/x", "/x.conf", NULL);
                g_autoptr(OptNode) opts = opts_parse_json(json, &err);
                if (!opts) {
                    g_error("case %s: bad JSON: %s", cases[i].name,
                            strata_error_get_message(err));
                }
                walk_node(set, opts);
            }
        }
    }

    /* What the schema has: for every driver, the common options and its
     * own. */
    for (const SchemaDriver *d = schema_drivers(); d->name; d++) {
        list_members(all, d->name, schema_common_members(), "");
        list_members(all, d->name, d->members, "");
    }
    g_assert_cmpuint(all->len, >, 50);
    for (guint i = 0; i < all->len; i++) {
        if (!g_hash_table_contains(set, all->pdata[i])) {
            g_string_append_printf(missing, "  %s\n", (char *)all->pdata[i]);
            nmissing++;
        }
    }
    if (nmissing) {
        g_error("%d options of qapi/block.json are set to a non-default "
                "value by no case of tests/unit/test-option-matrix.c; add "
                "a case for each:\n%s", nmissing, missing->str);
    }
    g_test_message("%u options covered", all->len);
}

/* ---- options whose effect needs a second user or a special file ------------- */

/* A node over the file behind @fd, with a backend taking @perm and
 * sharing @shared; NULL (and the context freed) with *errp on failure. */
static StrataBackend *open_user(StrataContext *ctx, int fd, const char *extra,
                                uint32_t perm, uint32_t shared,
                                StrataError **errp)
{
    g_autofree char *json = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"/proc/self/fd/%d\"%s}",
        fd, extra);
    StrataNode *node = strata_node_open_json(ctx, json, errp);
    StrataBackend *be;

    if (!node) {
        return NULL;
    }
    be = strata_backend_new(node, "user", perm, shared, errp);
    strata_node_unref(node);
    return be;
}

/*
 * force-share lets another user write the image a read-only user holds:
 * the reader shares only read (as a guest's disk does), yet with
 * force-share a writer gets in, and the reader sees what it wrote.
 * Without it the writer is refused.  (The option used to be parsed and
 * ignored.)
 */
static void test_force_share_effect(void)
{
    int fd;
    g_autofree char *img = tmp_file(NULL, DEV_SIZE, &fd);
    const uint32_t r = STRATA_PERM_CONSISTENT_READ;
    const uint32_t rw = r | STRATA_PERM_WRITE;
    uint8_t *buf = aligned_alloc_zero(4096), *got = aligned_alloc_zero(4096);

    unlink(img);
    for (int force = 0; force < 2; force++) {
        g_autoptr(StrataError) err = NULL;
        StrataContext *rctx = strata_context_new(NULL);
        StrataContext *wctx = strata_context_new(NULL);
        StrataBackend *reader = open_user(rctx, fd, force
            ? ", \"read-only\": true, \"force-share\": true"
            : ", \"read-only\": true",
            r, r | STRATA_PERM_WRITE_UNCHANGED, &err);
        g_assert_nonnull(reader);
        StrataBackend *writer = open_user(wctx, fd, "", rw, r, &err);
        if (!force) {
            g_assert_null(writer);
            g_assert_nonnull(strstr(strata_error_get_message(err), "write"));
        } else {
            g_assert_nonnull(writer);
            fill(buf, 4096, 9);
            g_assert_cmpint(strata_backend_pwrite(writer, FAR_OFFSET, buf, 4096,
                                                  STRATA_REQ_FUA), ==, 0);
            g_assert_cmpint(strata_backend_pread(reader, FAR_OFFSET, got, 4096,
                                                 0), ==, 0);
            g_assert_cmpmem(got, 4096, buf, 4096);
        }
        strata_context_free(wctx);
        strata_context_free(rctx);
    }
    free(buf);
    free(got);
    close(fd);
}

/* force-share without read-only is refused, naming the option. */
static void test_force_share_needs_read_only(void)
{
    g_autoptr(StrataError) err = NULL;
    StrataContext *ctx = strata_context_new(NULL);

    g_assert_null(strata_node_open_json(ctx, "{\"driver\": \"raw\", "
        "\"file\": {\"driver\": \"null\", \"force-share\": true}}", &err));
    g_assert_cmpstr(strata_error_get_message(err), ==,
                    "file.force-share: 'on' needs read-only=on");
    g_clear_pointer(&err, strata_error_free);

    /* Nor can a reopen make such a node writable. */
    StrataNode *n = strata_node_open_json(ctx, "{\"driver\": \"null\", "
        "\"node-name\": \"fs\", \"read-only\": true, \"force-share\": true}",
        &err);
    g_assert_nonnull(n);
    g_assert_false(strata_node_reopen_json(n, "{\"read-only\": false}", &err));
    g_assert_cmpstr(strata_error_get_message(err), ==,
                    "read-only: cannot be turned off: node 'fs' was opened "
                    "with force-share=on");
    strata_node_unref(n);
    strata_context_free(ctx);
}

static const char immutable_env[] = "STRATA_MATRIX_IMMUTABLE";

static void auto_read_only_child(const char *img)
{
    g_autofree char *plain = g_strdup_printf(
        "{\"driver\": \"file\", \"filename\": \"%s\"}", img);
    g_autofree char *auto_ro = g_strdup_printf(
        "{\"driver\": \"raw\", \"auto-read-only\": true, \"file\": "
        "{\"driver\": \"file\", \"filename\": \"%s\"}}", img);
    StrataContext *ctx = strata_context_new(NULL);
    g_autoptr(StrataError) err = NULL;
    uint8_t want[4096], got[4096];

    /* Read-write refused, no fallback asked for: the open fails. */
    g_assert_null(strata_node_open_json(ctx, plain, &err));
    g_assert_cmpint(strata_error_get_errno(err), ==, EPERM);
    g_clear_pointer(&err, strata_error_free);

    /* auto-read-only (inherited by the file child): read-only instead. */
    StrataNode *root = strata_node_open_json(ctx, auto_ro, &err);
    g_assert_nonnull(root);
    g_assert_null(strata_backend_new(root, "rw", STRATA_PERM_CONSISTENT_READ |
                                     STRATA_PERM_WRITE, STRATA_PERM_ALL, &err));
    g_assert_cmpint(strata_error_get_errno(err), ==, EROFS);
    StrataBackend *be = strata_backend_new(root, "ro",
        STRATA_PERM_CONSISTENT_READ, STRATA_PERM_ALL, NULL);
    g_assert_nonnull(be);
    strata_node_unref(root);
    fill(want, sizeof(want), 11);
    g_assert_cmpint(strata_backend_pread(be, 513, got, sizeof(got), 0), ==, 0);
    g_assert_cmpmem(got, sizeof(got), want, sizeof(want));
    /* The raw node above stays writable in principle, as in QEMU; this
     * backend took no write permission, so writes fail with EPERM. */
    g_assert_cmpint(strata_backend_pwrite(be, 0, got, 512, 0), ==, -EPERM);
    strata_context_free(ctx);
}

/*
 * auto-read-only: a file the process may not open for writing (here an
 * immutable one, which even root cannot write) opens read-only.  The
 * option used to be parsed and ignored.  The checks run in a subprocess,
 * so that the file is made mutable again and removed whatever happens.
 */
static void test_auto_read_only_effect(void)
{
    if (g_test_subprocess()) {
        auto_read_only_child(g_getenv(immutable_env));
        return;
    }
    int fd, flags = 0;
    g_autofree char *img = tmp_file(NULL, DEV_SIZE, &fd);
    uint8_t data[4096];

    fill(data, sizeof(data), 11);
    g_assert_cmpint(pwrite(fd, data, sizeof(data), 513), ==, sizeof(data));
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0 ||
        (flags |= FS_IMMUTABLE_FL, ioctl(fd, FS_IOC_SETFLAGS, &flags) < 0)) {
        test_skipf("cannot make a file immutable here: %s", g_strerror(errno));
        close(fd);
        unlink(img);
        return;
    }
    g_setenv(immutable_env, img, true);
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_INHERIT_STDERR);
    flags &= ~FS_IMMUTABLE_FL;
    g_assert_cmpint(ioctl(fd, FS_IOC_SETFLAGS, &flags), ==, 0);
    close(fd);
    unlink(img);
    g_test_trap_assert_passed();
}

/*
 * What each of the file driver's tables takes: file a regular file,
 * host_device and host_cdrom a device (QEMU's rule and words); the
 * others are refused at open, naming the driver and the path.
 */
static void test_device_kind(void)
{
    const char *dev = test_loop_device(DEV_SIZE, NULL);
    static const char *const devdrv[] = { "host_device", "host_cdrom" };
    g_autofree char *name = NULL;
    g_autofree char *img = NULL;
    int fd;

    if (!dev) {
        return;
    }
    name = tmp_file(NULL, DEV_SIZE, &fd);
    unlink(name);               /* nothing left behind, failed or not */
    img = g_strdup_printf("/proc/self/fd/%d", fd);
    for (int i = 0; i < 3; i++) {
        const char *drv = i ? devdrv[i - 1] : "file";
        const char *path = i ? img : dev;
        g_autofree char *json = g_strdup_printf(
            "{\"driver\": \"%s\", \"filename\": \"%s\"}", drv, path);
        g_autofree char *want = g_strdup_printf(
            i ? "'%s' driver requires '%s' to be either a character or block "
                "device" : "'%s' driver requires '%s' to be a regular file",
            drv, path);
        g_autoptr(StrataError) err = NULL;
        StrataContext *ctx = strata_context_new(NULL);

        g_assert_null(strata_node_open_json(ctx, json, &err));
        g_assert_cmpstr(strata_error_get_message(err), ==, want);
        strata_context_free(ctx);
    }
    close(fd);
}

/* ---- main -------------------------------------------------------------------------- */

/* Every Run, for the life of the process: GTest keeps a pointer to each,
 * but frees its own records at the end of g_test_run(), after which only
 * this array keeps LeakSanitizer from reporting them (it did, now and
 * then, under ASan). */
static GPtrArray *runs;

static void add_case(const Case *c, const Param *p)
{
    Run *r = g_new0(Run, 1);

    if (!runs) {
        runs = g_ptr_array_new_with_free_func(g_free);
    }
    g_ptr_array_add(runs, r);
    g_autofree char *path = NULL;

    r->c = c;
    if (p) {
        r->p = *p;
        path = g_strdup_printf("/option-matrix/%s/%s-%s", c->name,
                               test_engine_name(p->engine),
                               p->direct ? "direct" : "buffered");
    } else {
        path = g_strdup_printf("/option-matrix/%s", c->name);
    }
    g_test_add_data_func(path, r, test_case);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    /* The groups of the throttle cases: limits the cases never reach, so
     * that the accounting runs and nothing waits. */
    const char *const groups[] = {
        "{\"qom-type\": \"throttle-group\", \"id\": \"matrix-tg\", "
        "\"limits\": {\"iops-total\": 10000000}}",
        "{\"qom-type\": \"throttle-group\", \"id\": \"matrix-tg2\", "
        "\"limits\": {\"bps-read\": 100000000000, \"iops-write\": "
        "10000000, \"iops-size\": 4096}}",
    };
    for (size_t i = 0; i < G_N_ELEMENTS(groups); i++) {
        g_autoptr(OptNode) o = opts_parse_json(groups[i], NULL);
        g_assert_true(object_add(o, NULL));
    }

    /* The key of the rbd/key-secret case, when a cluster is there. */
    if (getenv("STRATA_CEPH_KEY")) {
        g_autoptr(OptNode) o = opts_parse_json("{\"qom-type\": \"secret\", "
                                               "\"id\": \"matrix-rbd-key\"}",
                                               NULL);
        g_assert_true(opts_set_str(o, "data", getenv("STRATA_CEPH_KEY"), NULL));
        g_assert_true(object_add(o, NULL));
    }

    g_test_add_func("/option-matrix/coverage", test_coverage);
    g_test_add_func("/option-matrix/effect/force-share", test_force_share_effect);
    g_test_add_func("/option-matrix/effect/force-share-needs-read-only",
                    test_force_share_needs_read_only);
    g_test_add_func("/option-matrix/effect/auto-read-only",
                    test_auto_read_only_effect);
    g_test_add_func("/option-matrix/effect/device-kind", test_device_kind);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        if (!case_per_engine(&cases[i])) {
            add_case(&cases[i], NULL);
            continue;
        }
        for (int eng = AIO_ENGINE_THREADS; eng <= AIO_ENGINE_IO_URING; eng++) {
            for (int direct = 0; direct < 2; direct++) {
                Param p = { eng, direct };
                if (eng == AIO_ENGINE_NATIVE && !direct) {
                    continue;   /* refused at open: needs O_DIRECT */
                }
                add_case(&cases[i], &p);
            }
        }
    }
    int ret = g_test_run();
    g_ptr_array_free(runs, TRUE);
    object_del_all();
    return ret;
}
