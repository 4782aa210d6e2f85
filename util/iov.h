/*
 * I/O vectors (SPDX-License-Identifier: MIT)
 *
 * IOVector is the scatter/gather list the whole request path uses: a
 * struct iovec array plus its element count, capacity and total size.
 * Storage is one of
 *   - inline (IOV_INLINE elements inside the struct; grows onto the heap up
 *     to the max given at init: control path or warm-up only),
 *   - caller storage (iov_init_storage: fixed capacity, never allocates:
 *     this is what the hot path uses),
 *   - an external array wrapped read-only (iov_init_external).
 * Element-count limits are explicit: every function that adds elements
 * returns -E2BIG rather than exceed the vector's max.  Nothing here calls
 * into the kernel, so IOV_MAX (1024) is the caller's limit to choose.
 *
 * Do not copy an IOVector by value: with inline storage its iov pointer
 * points into itself.
 */
#ifndef STRATA_UTIL_IOV_H
#define STRATA_UTIL_IOV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define IOV_INLINE 4

typedef struct IOVector {
    struct iovec *iov;      /* elements */
    int niov;               /* elements in use */
    int nalloc;             /* capacity of iov[]; 0 for external vectors */
    int max;                /* most elements this vector may ever hold */
    bool heap;              /* iov[] is g_malloc'ed */
    size_t size;            /* sum of iov_len over iov[0..niov) */
    struct iovec local[IOV_INLINE];
} IOVector;

/* Inline storage, growing on the heap up to @max elements (> 0). */
void iov_init(IOVector *v, int max);
/* Caller storage of @cap elements; never allocates; max == cap. */
void iov_init_storage(IOVector *v, struct iovec *storage, int cap);
/* Wrap @niov elements at @iov (borrowed; must outlive @v).  Read-only:
 * functions that add or merge elements return -EPERM on it. */
void iov_init_external(IOVector *v, const struct iovec *iov, int niov);
/* One element over @buf (inline storage, max 1). */
void iov_init_buf(IOVector *v, void *buf, size_t len);
/* Free heap storage (if any) and reset to empty. */
void iov_cleanup(IOVector *v);
/* Drop all elements, keep storage. */
void iov_reset(IOVector *v);

/* Append one element (zero-length elements are appended too).
 * 0, or -E2BIG when @v is full at its max, -EPERM when external. */
int iov_add(IOVector *v, void *base, size_t len);
/* Insert one element at the front (memmove).  Same errors as iov_add. */
int iov_push_front(IOVector *v, void *base, size_t len);

/*
 * Append the byte range [off, off + len) of @src to @dst, element by
 * element, without copying data.  Zero-length pieces are skipped.
 * Returns 0, -EINVAL if the range is outside @src, -E2BIG if @dst would
 * exceed its max (then @dst is left unchanged).
 */
int iov_concat_slice(IOVector *dst, const IOVector *src, size_t off, size_t len);
/* iov_reset(dst) + iov_concat_slice(); on error @dst is left unchanged.
 * @dst must not be @src. */
int iov_slice(IOVector *dst, const IOVector *src, size_t off, size_t len);

/* Number of elements a slice of [off, off + len) would take (zero-length
 * pieces not counted), or -EINVAL if the range is outside @src. */
int iov_slice_count(const IOVector *src, size_t off, size_t len);

static inline size_t iov_size(const IOVector *v) { return v->size; }

/* Sum of iov_len over a raw array. */
size_t iov_array_size(const struct iovec *iov, int niov);

/* Copy between the vector's bytes at @off and a flat buffer.  Return the
 * number of bytes copied (less than @len only at the vector's end). */
size_t iov_to_buf(const IOVector *v, size_t off, void *buf, size_t len);
size_t iov_from_buf(const IOVector *v, size_t off, const void *buf, size_t len);
/* Set @len bytes at @off to @c; returns bytes set. */
size_t iov_memset(const IOVector *v, size_t off, int c, size_t len);
/* True if all bytes in [off, off + len) are zero (len clipped to the end). */
bool iov_is_zero(const IOVector *v, size_t off, size_t len);
/* Copy @len bytes from @src at @src_off into @dst at @dst_off. */
size_t iov_copy(const IOVector *dst, size_t dst_off,
                const IOVector *src, size_t src_off, size_t len);

/*
 * Find the run of @count adjacent elements with the fewest total bytes.
 * Returns the index of its first element (ties: the lowest index) and
 * stores the run's bytes in *bytes.  1 <= count <= v->niov.
 */
int iov_min_run(const IOVector *v, int count, size_t *bytes);

/* Debug check: v->size equals the sum of element lengths. */
bool iov_check(const IOVector *v);

#endif
