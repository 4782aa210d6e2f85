/*
 * Small helpers shared by unit tests
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/loop.h>

#include "test-util.h"
#include "util/options.h"

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

/* ---- a loop device --------------------------------------------------------------- */

/* Backing files are LOOP_PREFIX<creator's pid>-XXXXXX. */
#define LOOP_PREFIX "/var/tmp/strata-loop-"

static struct {
    bool tried;
    char *dev;                  /* NULL: unavailable, see why */
    char *why;
    int fd;                     /* held open: the kernel's autoclear */
} loopdev = { .fd = -1 };

/* Was @name (after LOOP_PREFIX) made by a process that no longer runs? */
static bool loop_creator_gone(const char *name)
{
    long pid = strtol(name, NULL, 10);

    return pid > 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

/*
 * What earlier runs left: devices over our files whose creator is gone
 * (autoclear should have detached them; a device still open elsewhere
 * only gets marked, LOOP_CLR_FD detaches at its last close), and files
 * never handed to a device (a kill between mkstemp and unlink).
 */
static void loop_remove_leftovers(void)
{
    const char *name;
    GDir *dir = g_dir_open("/sys/block", 0, NULL);

    while (dir && (name = g_dir_read_name(dir))) {
        g_autofree char *attr = g_strdup_printf("/sys/block/%s/loop/"
                                                "backing_file", name);
        g_autofree char *file = NULL;
        g_autofree char *dev = g_strdup_printf("/dev/%s", name);
        int fd;

        if (!g_str_has_prefix(name, "loop") ||
            !g_file_get_contents(attr, &file, NULL, NULL) ||
            !g_str_has_prefix(file, LOOP_PREFIX) ||
            !loop_creator_gone(file + strlen(LOOP_PREFIX))) {
            continue;
        }
        fd = open(dev, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            g_test_message("detaching leftover %s (over %s)", dev,
                           g_strchomp(file));
            (void)ioctl(fd, LOOP_CLR_FD);
            close(fd);
        }
    }
    if (dir) {
        g_dir_close(dir);
    }
    dir = g_dir_open("/var/tmp", 0, NULL);
    while (dir && (name = g_dir_read_name(dir))) {
        const char *base = LOOP_PREFIX + strlen("/var/tmp/");
        if (g_str_has_prefix(name, base) &&
            loop_creator_gone(name + strlen(base))) {
            g_autofree char *path = g_build_filename("/var/tmp", name, NULL);
            unlink(path);
        }
    }
    if (dir) {
        g_dir_close(dir);
    }
}

/* At exit: detach (at the close, which is the last one of ours). */
static void loopdev_release(void)
{
    if (loopdev.fd >= 0) {
        (void)ioctl(loopdev.fd, LOOP_CLR_FD);
        close(loopdev.fd);
        loopdev.fd = -1;
    }
}

/* Attach a new file of @size bytes to a free loop device; false with the
 * reason in loopdev.why. */
static bool loop_create(int64_t size)
{
    g_autofree char *file = g_strdup_printf(LOOP_PREFIX "%d-XXXXXX",
                                            (int)getpid());
    int ffd, ctl = -1, err = 0;

    if (geteuid() != 0) {
        loopdev.why = g_strdup("loop devices need root");
        return false;
    }
    loop_remove_leftovers();
    ffd = g_mkstemp_full(file, O_RDWR | O_CLOEXEC, 0600);
    if (ffd < 0 || ftruncate(ffd, size) < 0) {
        err = errno;
        loopdev.why = g_strdup_printf("cannot create %s: %s", file,
                                      g_strerror(err));
        goto out;
    }
    ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0) {
        err = errno;
        loopdev.why = g_strdup_printf("/dev/loop-control: %s",
                                      g_strerror(err));
        goto out;
    }
    /* Another process may take the free device first: try again. */
    for (int attempt = 0; attempt < 16 && !loopdev.dev; attempt++) {
        struct loop_config cfg = {
            .fd = (uint32_t)ffd,
            .info.lo_flags = LO_FLAGS_AUTOCLEAR,
        };
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        g_autofree char *dev = g_strdup_printf("/dev/loop%d", n);
        int dfd = n < 0 ? -1 : open(dev, O_RDWR | O_CLOEXEC);

        if (dfd < 0) {
            err = errno;
            loopdev.why = g_strdup_printf("no free loop device: %s: %s",
                n < 0 ? "LOOP_CTL_GET_FREE" : dev, g_strerror(err));
            break;
        }
        g_strlcpy((char *)cfg.info.lo_file_name, file, LO_NAME_SIZE);
        if (ioctl(dfd, LOOP_CONFIGURE, &cfg) == 0) {
            loopdev.dev = g_steal_pointer(&dev);
            loopdev.fd = dfd;
            break;
        }
        err = errno;
        close(dfd);
        if (err != EBUSY) {
            loopdev.why = g_strdup_printf("LOOP_CONFIGURE of %s: %s", dev,
                                          g_strerror(err));
            break;
        }
    }
    if (!loopdev.dev && !loopdev.why) {
        loopdev.why = g_strdup("every free loop device was taken first");
    }
out:
    if (ffd >= 0) {
        unlink(file);           /* the device holds it */
        close(ffd);
    }
    if (ctl >= 0) {
        close(ctl);
    }
    if (loopdev.dev) {
        atexit(loopdev_release);
    }
    return loopdev.dev != NULL;
}

const char *test_loop_device(int64_t size, int *fd)
{
    if (!loopdev.tried) {
        loopdev.tried = true;
        loop_create(size);
    }
    if (!loopdev.dev) {
        test_skipf("no loop device: %s", loopdev.why);
        return NULL;
    }
    if (fd) {
        *fd = loopdev.fd;
    }
    return loopdev.dev;
}

bool test_pad_filter_is_align(void)
{
    return !g_strcmp0(g_getenv("STRATA_TEST_PAD_FILTER"), "align");
}

/* Options that move from the node a test opened to the align node put
 * over it: {key there, key on the align node}.  Common options that
 * children inherit or that act where requests enter go up too. */
typedef struct MovedKey {
    const char *from, *to;
} MovedKey;

static const MovedKey blkdebug_moved[] = {
    { "align", "request-alignment" },
    { "max-transfer", "max-transfer" },
    { "rmw-coalesce", "rmw-coalesce" },
    { "node-name", "node-name" },
    { NULL, NULL },
};

/* mem keeps its limits (so that it still checks every request against
 * them) and its name; the align node gets the same limits and does the
 * shaping. */
static const MovedKey mem_copied[] = {
    { "align", "request-alignment" },
    { "mem-align", "mem-alignment" },
    { "iov-len-align", "iov-len-alignment" },
    { "max-transfer", "max-transfer" },
    { "max-iov", "max-iov" },
};
static const MovedKey mem_moved[] = {
    { "rmw-coalesce", "rmw-coalesce" },
    { "read-only", "read-only" },
    { "cache", "cache" },
    { "discard", "discard" },
    { "detect-zeroes", "detect-zeroes" },
    { NULL, NULL },
};

static void move_keys(OptNode *to, OptNode *from, const MovedKey *keys,
                      size_t n, bool remove)
{
    for (size_t i = 0; i < n && keys[i].from; i++) {
        OptNode *v = opts_peek(from, keys[i].from);
        /* max-transfer 0 means none, which the align node says by its
         * absence. */
        if (v && !(opts_type(v) != OPT_OBJECT &&
                   !strcmp(keys[i].to, "max-transfer") &&
                   !strcmp(opts_scalar_str(v), "0"))) {
            opts_set_child(to, keys[i].to, opts_clone(v));
        }
        if (v && remove) {
            opts_remove(from, keys[i].from);
        }
    }
}

char *test_pad_filter_json(const char *json)
{
    g_autoptr(StrataError) err = NULL;
    g_autoptr(OptNode) below = NULL;
    g_autoptr(OptNode) top = NULL;
    const char *drv;
    OptNode *name;

    if (!test_pad_filter_is_align()) {
        return g_strdup(json);
    }
    below = opts_parse_json(json, &err);
    if (!below) {
        g_error("%s: %s", json, error_get_message(err));
    }
    drv = opts_peek(below, "driver") ? opts_scalar_str(opts_peek(below, "driver"))
                                     : "";
    top = opts_new_object();
    g_assert_true(opts_set_str(top, "driver", "align", NULL));
    if (!strcmp(drv, "mem")) {
        /* request-alignment stays what mem asks (1 without "align"): the
         * align default of 4096 would change the test. */
        g_assert_true(opts_set_int(top, "request-alignment", 1, NULL));
        move_keys(top, below, mem_copied, G_N_ELEMENTS(mem_copied), false);
        move_keys(top, below, mem_moved, G_N_ELEMENTS(mem_moved), true);
    } else if (!strcmp(drv, "blkdebug") && opts_has(below, "align")) {
        move_keys(top, below, blkdebug_moved, G_N_ELEMENTS(blkdebug_moved),
                  true);
        name = opts_peek(top, "node-name");
        if (name) {
            g_autofree char *rn = g_strdup_printf("%s-rules",
                                                  opts_scalar_str(name));
            g_assert_true(opts_set_str(below, "node-name", rn, NULL));
        }
    } else {
        return g_strdup(json);
    }
    opts_set_child(top, "file", g_steal_pointer(&below));
    return opts_to_json(top, false);
}
