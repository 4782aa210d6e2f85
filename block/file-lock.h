/*
 * Image locking for the file driver: OFD lock bytes laid out as QEMU lays
 * them (internal to block/file-posix.c and block/file-lock.c)
 * SPDX-License-Identifier: MIT
 *
 * A user of an image holds one byte per permission it has (100 + bit) and
 * one per permission it does not let others have (200 + bit), each locked
 * shared with open-file-description locks; docs/file-driver.md ("Image
 * locking") is the user's view.  All functions are control path, called
 * in the node's context thread (file_lock_create_check from tools too),
 * and never block: F_OFD_SETLK, not F_OFD_SETLKW.
 */
#ifndef STRATA_BLOCK_FILE_LOCK_H
#define STRATA_BLOCK_FILE_LOCK_H

#include <stdbool.h>
#include <stdint.h>
#include "util/error.h"

/* What one file node holds.  Zero-initialised means "locking off, nothing
 * held"; file_lock_init() sets it up for use. */
typedef struct FileLock {
    bool enabled;                   /* OFD locks in use */
    uint64_t perm, shared;          /* what the graph committed */
    uint64_t locked_perm;           /* bytes 100 + bit held */
    uint64_t locked_unshared;       /* bytes 200 + bit held */
} FileLock;

/* Whether the filesystem of @fd supports OFD locks. */
bool file_lock_supported(int fd);

/* A node that holds no permission and shares everything; @enabled says
 * whether bytes are locked at all. */
void file_lock_init(FileLock *l, bool enabled);

/*
 * The node's permission callbacks (BlockDriver check_perm / set_perm /
 * abort_perm) over @fd, the node's file description.  check takes the
 * bytes for the union of old and new and tests the other side's bytes;
 * on a conflict it returns false with an error naming @filename and the
 * permission, and goes back to the committed bytes itself.  set commits
 * (dropping bytes no longer needed), abort returns to the committed
 * state.  No-ops when locking is off.
 */
bool file_lock_check_perm(FileLock *l, int fd, const char *filename,
                          uint64_t perm, uint64_t shared, StrataError **errp);
void file_lock_set_perm(FileLock *l, int fd, const char *filename,
                        uint64_t perm, uint64_t shared);
void file_lock_abort_perm(FileLock *l, int fd, const char *filename);

/*
 * Reopen: lock on @new_fd (a fresh description of the same file) the bytes
 * @l holds on the old one, so there is never a moment without them.
 * Our own old description's shared locks do not conflict.  On failure the
 * caller closes @new_fd, which drops whatever was taken.
 */
bool file_lock_copy(const FileLock *l, int new_fd, const char *filename,
                    StrataError **errp);

/*
 * file_create: take write and resize on @fd (sharing nothing but
 * consistent read) and check that no one else uses the image.  Skipped,
 * returning true, where OFD locks are unsupported.  The locks go with the
 * description when the caller closes @fd.
 */
bool file_lock_create_check(int fd, const char *path, StrataError **errp);

#endif
