/*
 * Image locking for the file driver (see block/file-lock.h)
 * SPDX-License-Identifier: MIT
 *
 * Lock layout, as QEMU's file-posix lays it out: one byte per permission a
 * user holds (100 + bit) and one per permission it does not let others
 * hold (200 + bit), each locked shared (F_RDLCK) with open-file-description
 * locks.  A conflict check probes the other side's bytes with an F_WRLCK
 * F_OFD_GETLK, which any other holder of a shared lock there makes fail.
 * Bit 4 is QEMU's old "graph-mod" permission: we never take it and always
 * share it, so its bytes stay untouched and QEMU versions that still know
 * it agree with us.
 *
 * OFD locks rather than POSIX ones: POSIX locks would be dropped by any
 * close() of the file anywhere in the process.
 */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>

#include "block/block-int.h"
#include "block/file-lock.h"

#define FILE_LOCK_PERM_BASE 100
#define FILE_LOCK_SHARED_BASE 200
#define FILE_PERM_GRAPH_MOD (1u << 4)
#define FILE_LOCK_NBITS 5
#define FILE_LOCK_MASK ((1u << FILE_LOCK_NBITS) - 1)

static const char *const file_lock_perm_names[FILE_LOCK_NBITS] = {
    "consistent read", "write", "write unchanged", "resize", "change children",
};

bool file_lock_supported(int fd)
{
    struct flock fl = {
        .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1,
    };

    return fcntl(fd, F_OFD_GETLK, &fl) == 0;
}

static int file_lock_byte(int fd, int64_t off, bool lock)
{
    struct flock fl = {
        .l_type = lock ? F_RDLCK : F_UNLCK,
        .l_whence = SEEK_SET,
        .l_start = off,
        .l_len = 1,
    };

    return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* 0 when no other file description holds a lock on byte @off, -EAGAIN
 * when one does, -errno on failure. */
static int file_test_byte(int fd, int64_t off)
{
    struct flock fl = {
        .l_type = F_WRLCK,
        .l_whence = SEEK_SET,
        .l_start = off,
        .l_len = 1,
    };

    if (fcntl(fd, F_OFD_GETLK, &fl) < 0) {
        return -errno;
    }
    return fl.l_type == F_UNLCK ? 0 : -EAGAIN;
}

/*
 * Hold exactly the bytes for @perm (100 + bit) and @unshared (200 + bit)
 * on @fd, given that *@held_perm / *@held_unshared are held now.  With
 * @unlock false, bytes are only added (the prepare step keeps old and new
 * until the transaction ends).  Unlocking cannot fail in a way that
 * matters; locking a byte shared fails only if someone holds it
 * exclusively, which QEMU and Strata never do.
 */
static bool file_lock_apply(int fd, const char *filename, uint64_t perm,
                            uint64_t unshared, bool unlock,
                            uint64_t *held_perm, uint64_t *held_unshared,
                            StrataError **errp)
{
    for (int i = 0; i < FILE_LOCK_NBITS; i++) {
        uint64_t bit = 1ull << i;
        struct { uint64_t want, *held; int base; } b[2] = {
            { perm, held_perm, FILE_LOCK_PERM_BASE },
            { unshared, held_unshared, FILE_LOCK_SHARED_BASE },
        };

        for (int j = 0; j < 2; j++) {
            if ((b[j].want & bit) && !(*b[j].held & bit)) {
                int ret = file_lock_byte(fd, b[j].base + i, true);
                if (ret < 0) {
                    error_set(errp, STRATA_ERROR_PERMISSION, -ret,
                              "Failed to lock byte %d of '%s': %s",
                              b[j].base + i, filename, g_strerror(-ret));
                    return false;
                }
                *b[j].held |= bit;
            } else if (unlock && !(b[j].want & bit) && (*b[j].held & bit)) {
                file_lock_byte(fd, b[j].base + i, false);
                *b[j].held &= ~bit;
            }
        }
    }
    return true;
}

/* Does another user hold what we need, or need what we do not share? */
static bool file_lock_check(int fd, const char *filename, uint64_t perm,
                            uint64_t shared, StrataError **errp)
{
    static const char hint[] = "Is another process using the image? "
        "(use locking=off or open it read-only with shared access)";

    for (int i = 0; i < FILE_LOCK_NBITS; i++) {
        uint64_t bit = 1ull << i;
        int ret;

        if (perm & bit) {
            ret = file_test_byte(fd, FILE_LOCK_SHARED_BASE + i);
            if (ret < 0) {
                error_set(errp, STRATA_ERROR_PERMISSION, -ret,
                          "Failed to get \"%s\" lock on '%s': %s",
                          file_lock_perm_names[i], filename,
                          ret == -EAGAIN ? hint : g_strerror(-ret));
                return false;
            }
        }
        if (!(shared & bit)) {
            ret = file_test_byte(fd, FILE_LOCK_PERM_BASE + i);
            if (ret < 0) {
                error_set(errp, STRATA_ERROR_PERMISSION, -ret,
                          "Failed to get shared \"%s\" lock on '%s': %s",
                          file_lock_perm_names[i], filename,
                          ret == -EAGAIN ? hint : g_strerror(-ret));
                return false;
            }
        }
    }
    return true;
}

void file_lock_init(FileLock *l, bool enabled)
{
    *l = (FileLock) {
        .enabled = enabled,
        .perm = 0,
        .shared = PERM_ALL | FILE_PERM_GRAPH_MOD,
    };
}

bool file_lock_check_perm(FileLock *l, int fd, const char *filename,
                          uint64_t perm, uint64_t shared, StrataError **errp)
{
    if (!l->enabled) {
        return true;
    }
    perm &= PERM_ALL;
    shared = (shared & PERM_ALL) | FILE_PERM_GRAPH_MOD;
    /* Giving up permissions or sharing more cannot conflict. */
    if ((l->perm | perm) == l->perm && (l->shared & shared) == l->shared) {
        return true;
    }
    /* Lock first, then test: of two users racing for the same image, at
     * least one sees the other's bytes. */
    if (file_lock_apply(fd, filename, l->perm | perm,
                        (~l->shared | ~shared) & FILE_LOCK_MASK, false,
                        &l->locked_perm, &l->locked_unshared, errp) &&
        file_lock_check(fd, filename, perm, shared, errp)) {
        return true;
    }
    file_lock_apply(fd, filename, l->perm, ~l->shared & FILE_LOCK_MASK, true,
                    &l->locked_perm, &l->locked_unshared, NULL);
    return false;
}

void file_lock_set_perm(FileLock *l, int fd, const char *filename,
                        uint64_t perm, uint64_t shared)
{
    perm &= PERM_ALL;
    shared = (shared & PERM_ALL) | FILE_PERM_GRAPH_MOD;
    if (l->enabled) {
        file_lock_apply(fd, filename, perm, ~shared & FILE_LOCK_MASK, true,
                        &l->locked_perm, &l->locked_unshared, NULL);
    }
    l->perm = perm;
    l->shared = shared;
}

void file_lock_abort_perm(FileLock *l, int fd, const char *filename)
{
    if (l->enabled) {
        file_lock_apply(fd, filename, l->perm, ~l->shared & FILE_LOCK_MASK,
                        true, &l->locked_perm, &l->locked_unshared, NULL);
    }
}

bool file_lock_copy(const FileLock *l, int new_fd, const char *filename,
                    StrataError **errp)
{
    uint64_t held_perm = 0, held_unshared = 0;

    if (!l->enabled) {
        return true;
    }
    return file_lock_apply(new_fd, filename, l->locked_perm,
                           l->locked_unshared, false, &held_perm,
                           &held_unshared, errp);
}

bool file_lock_create_check(int fd, const char *path, StrataError **errp)
{
    uint64_t held_perm = 0, held_unshared = 0;

    if (!file_lock_supported(fd)) {
        return true;
    }
    return file_lock_apply(fd, path, PERM_WRITE | PERM_RESIZE,
                           PERM_ALL & ~PERM_CONSISTENT_READ, true, &held_perm,
                           &held_unshared, errp) &&
           file_lock_check(fd, path, PERM_WRITE | PERM_RESIZE,
                           PERM_CONSISTENT_READ | FILE_PERM_GRAPH_MOD, errp);
}
