/*
 * Request shaping: padding, read-modify-write, bounce, collapse, split
 * SPDX-License-Identifier: MIT
 *
 * A request that does not fit its node's limits comes here from
 * block/io.c.  The plan, for a request [offset, offset + bytes) on a node
 * with request alignment A:
 *
 *   lo = offset rounded down to A           hi = end rounded up to A
 *   |<- head ->|<------------ caller's bytes ------------>|<- tail ->|
 *   |----------|-------|-----------|------------|---------|----------|
 *   lo       offset   e1          e2           e3        end         hi
 *      pad        element 0   element 1    element 2          pad
 *
 * 1. The range [lo, hi) is cut into "atoms": the head pad, each caller
 *    element, the tail pad.  For writes the atoms are also cut at the end
 *    of the head block (lo + A) and the start of the tail block (hi - A),
 *    and every atom inside those blocks is marked for bouncing: the RMW
 *    read fills the whole block into one pool buffer, the caller's bytes
 *    are copied over it, and the block goes back in one piece.
 * 2. Atoms whose address breaks mem_alignment or whose length breaks the
 *    element granularity, and the pads, are "bad".  A sweep turns each run
 *    of bad atoms into one bounce piece, extended over neighbours until it
 *    ends where the position is a multiple of the granularity and the next
 *    atom is good: every remaining element stays legal, and stays
 *    zero-copy.
 * 3. If the pieces still outnumber max_iov, memory-contiguous direct
 *    pieces merge, then the run of adjacent pieces with the fewest bytes is
 *    gathered into one bounce piece, until they fit.  The request never
 *    fails for its element count.
 * 4. All pool memory is reserved in one step, before the request claims
 *    its range: no request holds a range while waiting for memory.
 * 5. The request is tracked over [lo, hi); an unaligned write is
 *    serialising there (waits for earlier overlaps, later ones wait for
 *    it).  Sub-block writes queued behind it on the same block may be
 *    coalesced into its RMW.
 * 6. The vector goes to the driver in fragments of at most max_transfer
 *    bytes, cut at aligned positions.
 */
#include <errno.h>
#include <string.h>

#include "block/block-int.h"
#include "block/io.h"
#include "block/reqtree.h"

/* Requests with at most this many atoms plan on the coroutine stack. */
#define PAD_STACK_ATOMS 16

typedef struct PadAtom {
    int64_t pos, len;           /* within [0, hi - lo) */
    void *base;                 /* caller memory; NULL for a pad */
    bool bad;
} PadAtom;

typedef struct PadPiece {
    int64_t pos, len;
    void *base;                 /* direct: caller memory; bounce: pool buffer */
    bool bounce;
} PadPiece;

/* Coalescing state of a sub-block write, reachable through BlockReq. */
typedef struct PadCoalesce {
    const IOVector *qiov;
    int64_t offset, bytes;
    int flags;
    bool absorbed;              /* applied by an earlier request's RMW */
    int ret;                    /* its result, when absorbed */
    /* The leader's list of the members it absorbed.  Intrusive, because
     * the hot path allocates nothing: each entry lives in its member's
     * frame, which stays valid while the member waits for the leader. */
    struct PadCoalesce *next_member;
} PadCoalesce;

typedef struct PadPlan {
    StrataNode *node;
    bool is_write;
    int64_t offset, bytes;      /* the caller's request */
    int64_t lo, hi, len;        /* aligned range, len = hi - lo */
    int64_t head, tail;
    int64_t gran;               /* legal element granularity */
    const IOVector *qiov;

    PadAtom *atoms;
    int natoms, atoms_cap;
    PadPiece *pieces;
    int npieces;
    struct iovec *iov;          /* the vector for the driver */
    void **bufs;
    size_t *sizes;
    int nbufs;
    unsigned pool_level;        /* nesting level of the reservation */
    bool collapsed;

    void *scratch;              /* heap scratch for large vectors */
    size_t scratch_size;
} PadPlan;

/* ---- scratch memory ---------------------------------------------------------
 * Plans for large vectors need arrays proportional to the element count.
 * They come from a small per-thread cache of power-of-two blocks, so that
 * after warm-up the hot path allocates nothing.  The cache never waits, so
 * taking it before the pool reservation is no hold-and-wait.
 */
#define SCRATCH_CLASSES 24
#define SCRATCH_KEEP 8

typedef struct ScratchBlock {
    struct ScratchBlock *next;
} ScratchBlock;

static __thread ScratchBlock *scratch_free[SCRATCH_CLASSES];
static __thread int scratch_count[SCRATCH_CLASSES];

static int scratch_class(size_t size)
{
    int c = 0;
    while (((size_t)4096 << c) < size) {
        c++;
    }
    g_assert(c < SCRATCH_CLASSES);
    return c;
}

__attribute__((noinline))
static void *scratch_get(size_t size, size_t *class_size)
{
    int c = scratch_class(size);
    ScratchBlock *b = scratch_free[c];

    *class_size = (size_t)4096 << c;
    if (b) {
        scratch_free[c] = b->next;
        scratch_count[c]--;
        return b;
    }
    return g_malloc(*class_size);
}

__attribute__((noinline))
static void scratch_put(void *p, size_t class_size)
{
    int c = scratch_class(class_size);
    if (scratch_count[c] >= SCRATCH_KEEP) {
        g_free(p);
        return;
    }
    ScratchBlock *b = p;
    b->next = scratch_free[c];
    scratch_free[c] = b;
    scratch_count[c]++;
}

/* ---- planning --------------------------------------------------------------- */

static void plan_add_atom(PadPlan *p, int64_t pos, int64_t len, void *base)
{
    g_assert(p->natoms < p->atoms_cap);
    p->atoms[p->natoms++] = (PadAtom) { .pos = pos, .len = len, .base = base };
}

/* Cut the atom containing position @at so that an atom starts there. */
static void plan_cut_at(PadPlan *p, int64_t at)
{
    for (int i = 0; i < p->natoms; i++) {
        PadAtom *a = &p->atoms[i];
        if (a->pos < at && at < a->pos + a->len) {
            g_assert(p->natoms < p->atoms_cap);
            memmove(&p->atoms[i + 1], &p->atoms[i],
                    (p->natoms - i) * sizeof(PadAtom));
            p->natoms++;
            int64_t first = at - a->pos;
            p->atoms[i + 1].pos = at;
            p->atoms[i + 1].len = a->len - first;
            p->atoms[i + 1].base = a->base ? (uint8_t *)a->base + first : NULL;
            a->len = first;
            return;
        }
        if (a->pos >= at) {
            return;
        }
    }
}

static bool atom_good(const PadPlan *p, const PadAtom *a)
{
    const BlockLimits *bl = &p->node->bl;
    return !a->bad && a->base &&
           ((uintptr_t)a->base & (bl->mem_alignment - 1)) == 0 &&
           (a->len & (p->gran - 1)) == 0;
}

static void plan_atoms(PadPlan *p)
{
    const StrataNode *node = p->node;
    int64_t A = node->bl.request_alignment;
    /* The bounce policy is about the caller's memory: it copies every
     * caller element; the pads are pool buffers already. */
    bool bounce_all = io_wants_bounce(node, p->bytes);

    if (p->head) {
        plan_add_atom(p, 0, p->head, NULL);
    }
    int64_t pos = p->head;
    for (int i = 0; i < p->qiov->niov; i++) {
        size_t l = p->qiov->iov[i].iov_len;
        if (l) {
            plan_add_atom(p, pos, l, p->qiov->iov[i].iov_base);
            pos += l;
        }
    }
    if (p->tail) {
        plan_add_atom(p, pos, p->tail, NULL);
    }
    g_assert(pos + p->tail == p->len);

    if (p->is_write) {
        /* The head and tail blocks go through one buffer each (RMW). */
        if (p->head) {
            plan_cut_at(p, A);
        }
        if (p->tail) {
            plan_cut_at(p, p->len - A);
        }
    }
    for (int i = 0; i < p->natoms; i++) {
        PadAtom *a = &p->atoms[i];
        bool in_pad_block = p->is_write &&
            ((p->head && a->pos < A) || (p->tail && a->pos >= p->len - A));
        a->bad = bounce_all || !a->base || in_pad_block;
    }
}

static void plan_pieces(PadPlan *p)
{
    int i = 0;

    p->npieces = 0;
    while (i < p->natoms) {
        PadAtom *a = &p->atoms[i];
        if (atom_good(p, a)) {
            p->pieces[p->npieces++] = (PadPiece) {
                .pos = a->pos, .len = a->len, .base = a->base,
            };
            i++;
            continue;
        }
        /* A bounce piece: extend until it ends on a legal boundary with a
         * good atom (or the end) after it. */
        int64_t start = a->pos, end;
        do {
            end = p->atoms[i].pos + p->atoms[i].len;
            i++;
        } while (i < p->natoms &&
                 ((end & (p->gran - 1)) || !atom_good(p, &p->atoms[i])));
        p->pieces[p->npieces++] = (PadPiece) {
            .pos = start, .len = end - start, .bounce = true,
        };
    }
}

/* Replace pieces [first, first + count) with one bounce piece. */
static void plan_gather(PadPlan *p, int first, int count)
{
    PadPiece *f = &p->pieces[first];
    PadPiece *l = &p->pieces[first + count - 1];
    *f = (PadPiece) { .pos = f->pos, .len = l->pos + l->len - f->pos, .bounce = true };
    memmove(&p->pieces[first + 1], &p->pieces[first + count],
            (p->npieces - first - count) * sizeof(PadPiece));
    p->npieces -= count - 1;
}

static void plan_fit_max_iov(PadPlan *p)
{
    int max_iov = p->node->bl.max_iov;

    if (p->npieces <= max_iov) {
        return;
    }
    /* First the free win: neighbours that are one run of memory. */
    int n = 0;
    for (int i = 0; i < p->npieces; i++) {
        PadPiece *prev = n ? &p->pieces[n - 1] : NULL;
        PadPiece *cur = &p->pieces[i];
        if (prev && !prev->bounce && !cur->bounce &&
            (uint8_t *)prev->base + prev->len == cur->base) {
            prev->len += cur->len;
        } else {
            p->pieces[n++] = *cur;
        }
    }
    p->npieces = n;

    /* Then gather the cheapest run: the window of adjacent pieces with the
     * fewest bytes that brings the count down to max_iov (util/iov.c's
     * sliding window, over a view of the pieces' lengths; the vector for
     * the driver is built later, in plan_co_reserve). */
    if (p->npieces > max_iov) {
        int k = p->npieces - max_iov + 1;
        IOVector lens;
        for (int i = 0; i < p->npieces; i++) {
            p->iov[i] = (struct iovec) { p->pieces[i].base, p->pieces[i].len };
        }
        iov_init_external(&lens, p->iov, p->npieces);
        plan_gather(p, iov_min_run(&lens, k, NULL), k);
        p->collapsed = true;
    }
}

static void plan_init(PadPlan *p, StrataNode *node, bool is_write,
                      int64_t offset, int64_t bytes, const IOVector *qiov,
                      PadAtom *stack_atoms, PadPiece *stack_pieces,
                      struct iovec *stack_iov, void **stack_bufs,
                      size_t *stack_sizes)
{
    const BlockLimits *bl = &node->bl;
    int64_t A = bl->request_alignment;

    *p = (PadPlan) {
        .node = node, .is_write = is_write, .offset = offset, .bytes = bytes,
        .qiov = qiov,
    };
    p->lo = ROUND_DOWN(offset, A);
    p->hi = ROUND_UP(offset + bytes, A);
    p->len = p->hi - p->lo;
    p->head = offset - p->lo;
    p->tail = p->hi - (offset + bytes);
    /* Splits inside an element land on multiples of this, so it must keep
     * both the element length and the address of what follows legal. */
    p->gran = MAX(bl->iov_len_alignment, bl->mem_alignment);

    /* Atoms: the elements, two pads and two cuts at most. */
    int cap = qiov->niov + 4;
    if (cap <= PAD_STACK_ATOMS) {
        p->atoms = stack_atoms;
        p->pieces = stack_pieces;
        p->iov = stack_iov;
        p->bufs = stack_bufs;
        p->sizes = stack_sizes;
    } else {
        size_t sz = cap * (sizeof(PadAtom) + sizeof(PadPiece) + sizeof(struct iovec) +
                           sizeof(void *) + sizeof(size_t));
        uint8_t *m = scratch_get(sz, &p->scratch_size);
        p->scratch = m;
        p->atoms = (PadAtom *)m;
        m += cap * sizeof(PadAtom);
        p->pieces = (PadPiece *)m;
        m += cap * sizeof(PadPiece);
        p->iov = (struct iovec *)m;
        m += cap * sizeof(struct iovec);
        p->bufs = (void **)m;
        m += cap * sizeof(void *);
        p->sizes = (size_t *)m;
    }
    p->atoms_cap = cap;

    plan_atoms(p);
    plan_pieces(p);
    plan_fit_max_iov(p);
}

static void plan_cleanup(PadPlan *p)
{
    StrataContext *ctx = p->node->ctx;
    BufPoolCache *cache = ctx_pool_cache(ctx);

    for (int i = 0; i < p->nbufs; i++) {
        if (cache) {
            bufpool_cache_put(cache, p->pool_level, p->bufs[i], p->sizes[i]);
        } else {
            bufpool_put(ctx->pool, p->pool_level, p->bufs[i], p->sizes[i]);
        }
    }
    if (p->nbufs) {
        /* What this level held is back: a later reservation of this
         * request (its next fragment's child, say) is at our level again. */
        *co_pool_depth() = p->pool_level;
    }
    p->nbufs = 0;
    if (p->scratch) {
        scratch_put(p->scratch, p->scratch_size);
        p->scratch = NULL;
    }
}

/* Reserve every bounce buffer in one step; then build the vector. */
static int plan_co_reserve(PadPlan *p)
{
    StrataNode *node = p->node;
    const BlockLimits *bl = &node->bl;
    int n = 0, ret;

    /*
     * Fragments are cut at multiples of the alignment and of the memory
     * granularity, so that every element stays legal.  A device whose
     * max_transfer is below that (512-byte sectors, page-aligned memory,
     * 2 KiB transfers) cannot take any fragment of this request: fail it
     * before anything is read or written rather than send a request that
     * breaks its limits.
     */
    if (bl->max_transfer && p->len > bl->max_transfer &&
        MAX(p->gran, (int64_t)bl->request_alignment) > bl->max_transfer) {
        return -EINVAL;
    }
    for (int i = 0; i < p->npieces; i++) {
        if (p->pieces[i].bounce) {
            p->sizes[n++] = p->pieces[i].len;
        }
    }
    if (n) {
        /*
         * Nested reservations are ordered (util/bufpool.h): while this
         * request holds these buffers, whatever it reserves further down
         * the graph is one level deeper and never waits for memory that
         * this level holds.  An 80 MiB misaligned write below a padding
         * filter would otherwise wait for ever for its own head buffer.
         */
        unsigned *depth = co_pool_depth();
        BufPoolCache *cache = ctx_pool_cache(node->ctx);

        p->pool_level = *depth;
        ret = cache ? bufpool_cache_try_get(cache, p->pool_level, n,
                                            p->sizes, p->bufs)
                    : bufpool_try_get(node->ctx->pool, p->pool_level, n,
                                      p->sizes, p->bufs);
        if (ret == -EAGAIN) {
            SHARD_ADD(node_stats(node)->pad.pool_waits, 1);
            ret = bufpool_co_get(node->ctx->pool, p->pool_level, n, p->sizes,
                                 p->bufs);
        }
        if (ret < 0) {
            return ret;
        }
        *depth = p->pool_level + 1;
    }
    p->nbufs = n;
    for (int i = 0, b = 0; i < p->npieces; i++) {
        PadPiece *pc = &p->pieces[i];
        if (pc->bounce) {
            pc->base = p->bufs[b++];
        }
        p->iov[i] = (struct iovec) { pc->base, pc->len };
    }
    if (p->collapsed) {
        SHARD_ADD(node_stats(node)->pad.vectors_collapsed, 1);
    }
    return 0;
}

/*
 * Copy between the bounce pieces and a caller vector whose bytes occupy
 * [win, win + win_bytes) of the padded range (the request's own vector, or
 * a coalesced member's, which sits elsewhere in the same block).
 */
static void plan_copy(PadPlan *p, const IOVector *qiov, int64_t win,
                      int64_t win_bytes, bool to_bufs)
{
    for (int i = 0; i < p->npieces; i++) {
        PadPiece *pc = &p->pieces[i];
        if (!pc->bounce) {
            continue;
        }
        int64_t s = MAX(pc->pos, win);
        int64_t e = MIN(pc->pos + pc->len, win + win_bytes);
        if (e <= s) {
            continue;
        }
        uint8_t *buf = (uint8_t *)pc->base + (s - pc->pos);
        if (to_bufs) {
            iov_to_buf(qiov, s - win, buf, e - s);
        } else {
            iov_from_buf(qiov, s - win, buf, e - s);
        }
        SHARD_ADD(node_stats(p->node)->pad.bytes_bounced, (uint64_t)(e - s));
    }
}

/* ---- driving ------------------------------------------------------------------ */

/* Send [pos, pos + len) of the plan's vector to the driver: the elements
 * covering it, with the first and last trimmed in place and restored. */
static int plan_co_io_range(PadPlan *p, int64_t pos, int64_t len, int flags)
{
    int first = 0, last;
    int64_t first_skip, last_keep;

    while (p->pieces[first].pos + p->pieces[first].len <= pos) {
        first++;
    }
    last = first;
    while (p->pieces[last].pos + p->pieces[last].len < pos + len) {
        last++;
    }
    first_skip = pos - p->pieces[first].pos;
    last_keep = pos + len - p->pieces[last].pos;

    struct iovec save_first = p->iov[first], save_last = p->iov[last];
    if (first == last) {
        p->iov[first].iov_base = (uint8_t *)p->iov[first].iov_base + first_skip;
        p->iov[first].iov_len = len;
    } else {
        p->iov[first].iov_base = (uint8_t *)p->iov[first].iov_base + first_skip;
        p->iov[first].iov_len -= first_skip;
        p->iov[last].iov_len = last_keep;
    }

    IOVector v;
    iov_init_external(&v, &p->iov[first], last - first + 1);
    int ret = p->is_write
        ? io_co_drv_pwritev(p->node, p->lo + pos, len, &v, flags)
        : io_co_drv_preadv(p->node, p->lo + pos, len, &v, flags);

    p->iov[first] = save_first;
    p->iov[last] = save_last;
    return ret;
}

static int plan_co_io(PadPlan *p, int flags)
{
    const BlockLimits *bl = &p->node->bl;
    int64_t step = p->len;
    bool fua_once = false;

    if (bl->max_transfer && bl->max_transfer < p->len) {
        /* Cut on multiples of the granularity and of the alignment. */
        int64_t unit = MAX(p->gran, (int64_t)bl->request_alignment);
        step = MAX(ROUND_DOWN(bl->max_transfer, unit), unit);
        SHARD_ADD(node_stats(p->node)->pad.split_requests, 1);
        /* Emulated FUA: one flush after the last fragment, not one each. */
        fua_once = p->is_write && io_fua_emulated(p->node, flags, false);
        if (fua_once) {
            flags &= ~REQ_FUA;
        }
    }
    for (int64_t pos = 0; pos < p->len; pos += step) {
        int ret = plan_co_io_range(p, pos, MIN(step, p->len - pos), flags);
        if (ret < 0) {
            return ret;
        }
    }
    return fua_once ? io_co_fua_flush(p->node) : 0;
}

/* ---- reads ------------------------------------------------------------------------ */

int pad_co_preadv(StrataNode *node, int64_t offset, int64_t bytes,
                  const IOVector *qiov, int flags)
{
    PadAtom sa[PAD_STACK_ATOMS];
    PadPiece sp[PAD_STACK_ATOMS];
    struct iovec si[PAD_STACK_ATOMS];
    void *sb[PAD_STACK_ATOMS];
    size_t ss[PAD_STACK_ATOMS];
    PadPlan p;
    BlockReq req;
    int ret;

    plan_init(&p, node, false, offset, bytes, qiov, sa, sp, si, sb, ss);
    ret = plan_co_reserve(&p);
    if (ret < 0) {
        plan_cleanup(&p);
        return ret;
    }
    if (p.head || p.tail) {
        SHARD_ADD(node_stats(node)->pad.padded_reads, 1);
    }
    req_track(&req, node, REQ_READ, p.lo, p.hi, false);
    req_co_wait_conflicts(&req);
    ret = plan_co_io(&p, flags);
    if (ret == 0) {
        plan_copy(&p, qiov, p.head, bytes, false);
    }
    req_untrack(&req);
    plan_cleanup(&p);
    return ret;
}

/* ---- writes ------------------------------------------------------------------------ */

/*
 * Read [pos, pos + len) of the plan (whole blocks, inside one bounce
 * piece) into that piece, in fragments that fit max_transfer.
 */
static int plan_co_rmw_read(PadPlan *p, int64_t pos, int64_t len)
{
    const BlockLimits *bl = &p->node->bl;
    int64_t unit = MAX((int64_t)bl->request_alignment, p->gran);
    int64_t end = pos + len;
    int i = 0;
    while (p->pieces[i].pos + p->pieces[i].len <= pos) {
        i++;
    }
    PadPiece *pc = &p->pieces[i];
    g_assert(pc->bounce && pc->pos <= pos && end <= pc->pos + pc->len);

    /*
     * The tail block need not start at a legal address inside its bounce
     * buffer: with mem_alignment above the request alignment (a 512-byte
     * device wanting page-aligned memory) it may sit 512 bytes into a
     * page.  Start the read at the last position before it that is both
     * aligned on the device and legal in memory.  Pieces start at
     * multiples of gran, so that position is still inside this piece; the
     * extra bytes read are overwritten by the caller's data before the
     * write, and the range is ours (serialising), so reading them is
     * harmless.
     *
     *   pc->pos     start (multiple of unit)   pos            end
     *   |-----------|--------------------------|--------------|
     *               |<------------- RMW read ---------------->|
     */
    pos = ROUND_DOWN(pos, unit);
    g_assert(pos >= pc->pos);

    /* A merged read of two blocks may exceed max_transfer: cut it where
     * plan_co_io would. */
    int64_t step = end - pos;
    if (bl->max_transfer && bl->max_transfer < step) {
        step = MAX(ROUND_DOWN(bl->max_transfer, unit), unit);
    }
    for (; pos < end; pos += step) {
        int64_t n = MIN(step, end - pos);
        IOVector v;
        iov_init_buf(&v, (uint8_t *)pc->base + (pos - pc->pos), n);
        int ret = io_co_drv_preadv(p->node, p->lo + pos, n, &v, 0);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/*
 * The RMW reads of a write's partial edge blocks, with QEMU's events (its
 * bdrv_init_padding/bdrv_padding_rmw_read, which scripts written for
 * qemu-io wait for).  The edges are read in one request when they are all
 * there is: the request lies in one block, or it spans exactly two
 * neighbouring blocks with both ends unaligned.  Such a merged read fires
 * the head event (if there is a head), then the tail event (if there is a
 * tail), reads, then after_head and after_tail likewise.  Otherwise the head
 * block is read between pwritev_rmw_head and pwritev_rmw_after_head, then
 * the tail block between pwritev_rmw_tail and pwritev_rmw_after_tail.  A
 * failed read fires no after_ event and fails the write (invariant 2).
 *
 *   merged, one block       |hh|  data  |tt|          one read of A
 *   merged, two blocks      |hhhh| data |data|tttt|   one read of 2A
 *   separate                |hh| data ... data |tt|   head read, tail read
 */
static int plan_co_rmw(PadPlan *p)
{
    StrataNode *node = p->node;
    int64_t A = node->bl.request_alignment;
    bool merged = p->len == A || (p->len == 2 * A && p->head && p->tail);
    int ret;

    if (merged) {
        if (p->head) {
            node_co_debug_event(node, DBG_PWRITEV_RMW_HEAD);
        }
        if (p->tail) {
            node_co_debug_event(node, DBG_PWRITEV_RMW_TAIL);
        }
        ret = plan_co_rmw_read(p, 0, p->len);
        if (ret < 0) {
            return ret;
        }
        if (p->head) {
            node_co_debug_event(node, DBG_PWRITEV_RMW_AFTER_HEAD);
        }
        if (p->tail) {
            node_co_debug_event(node, DBG_PWRITEV_RMW_AFTER_TAIL);
        }
        return 0;
    }
    if (p->head) {
        node_co_debug_event(node, DBG_PWRITEV_RMW_HEAD);
        ret = plan_co_rmw_read(p, 0, A);
        if (ret < 0) {
            return ret;
        }
        node_co_debug_event(node, DBG_PWRITEV_RMW_AFTER_HEAD);
    }
    if (p->tail) {
        node_co_debug_event(node, DBG_PWRITEV_RMW_TAIL);
        ret = plan_co_rmw_read(p, p->len - A, A);
        if (ret < 0) {
            return ret;
        }
        node_co_debug_event(node, DBG_PWRITEV_RMW_AFTER_TAIL);
    }
    return 0;
}

typedef struct CoalesceClaim {
    PadPlan *p;
    PadCoalesce *c;
} CoalesceClaim;

/* Under the node's lock (req_claim_next): take @n if it is a sub-block
 * write of exactly this block that waits to be absorbed. */
static bool coalesce_claim(BlockReq *n, void *opaque)
{
    CoalesceClaim *cl = opaque;
    PadCoalesce *c = n->pad_state;

    if (!c || c->absorbed || n->lo != cl->p->lo || n->hi != cl->p->hi) {
        return false;
    }
    c->absorbed = true;
    cl->c = c;
    return true;
}

/*
 * Absorb sub-block writes queued behind @leader on its block, in arrival
 * order, for as long as the next later request overlapping the block is
 * such a write that waits and nothing else comes between, on any queue.
 * Their data is applied on top of the leader's, in that order: a claimed
 * write waits for the leader (it overlaps an earlier serialising request),
 * so its vector stays valid while we copy from it.  Returns the extra
 * flags (FUA) the merged write must carry.
 */
static int coalesce_absorb(PadPlan *p, BlockReq *leader, PadCoalesce **members)
{
    StrataNode *node = p->node;
    int flags = 0;
    BlockReq *cur = leader;

    for (;;) {
        CoalesceClaim cl = { .p = p };
        BlockReq *n = req_claim_next(cur, p->lo, p->hi, coalesce_claim, &cl);
        if (!n) {
            break;
        }
        PadCoalesce *c = cl.c;
        plan_copy(p, c->qiov, c->offset - p->lo, c->bytes, true);
        flags |= c->flags & REQ_FUA;
        c->next_member = *members;
        *members = c;
        SHARD_ADD(node_stats(node)->pad.coalesced_writes, 1);
        cur = n;
    }
    return flags;
}

int pad_co_pwritev(StrataNode *node, int64_t offset, int64_t bytes,
                   const IOVector *qiov, int flags)
{
    PadAtom sa[PAD_STACK_ATOMS];
    PadPiece sp[PAD_STACK_ATOMS];
    struct iovec si[PAD_STACK_ATOMS];
    void *sb[PAD_STACK_ATOMS];
    size_t ss[PAD_STACK_ATOMS];
    PadPlan p;
    PadCoalesce self;
    BlockReq req;
    PadCoalesce *members = NULL;
    int ret;

    plan_init(&p, node, true, offset, bytes, qiov, sa, sp, si, sb, ss);
    ret = plan_co_reserve(&p);
    if (ret < 0) {
        plan_cleanup(&p);
        return ret;
    }

    bool rmw = p.head || p.tail;
    req_track(&req, node, REQ_WRITE, p.lo, p.hi, rmw);
    /* A write inside one block can be coalesced into an earlier one's RMW
     * while it waits. */
    if (rmw && node->rmw_coalesce && p.len == node->bl.request_alignment) {
        self = (PadCoalesce) { .qiov = qiov, .offset = offset, .bytes = bytes,
                               .flags = flags };
        req_set_pad_state(&req, &self);
    }
    req_co_wait_conflicts(&req);
    if (req.pad_state) {
        /* From here on nobody may absorb us (every earlier request on the
         * block is gone, and only earlier ones absorb): read the verdict
         * under the lock the leader set it under. */
        req_set_pad_state(&req, NULL);
        if (self.absorbed) {
            /* Another request's RMW carried our bytes; it set our result. */
            ret = self.ret;
            goto out;
        }
    }

    if (rmw) {
        SHARD_ADD(node_stats(node)->pad.rmw_writes, 1);
        ret = plan_co_rmw(&p);
        if (ret < 0) {
            goto out;   /* nothing written (invariant 2) */
        }
    }
    plan_copy(&p, qiov, p.head, bytes, true);
    if (rmw && node->rmw_coalesce && p.len == node->bl.request_alignment) {
        flags |= coalesce_absorb(&p, &req, &members);
    }
    /*
     * The end of the image: a node whose length is not a multiple of the
     * alignment is written only by users that may resize it (the
     * permission check, node_check_size_alignment), and its last block is
     * written whole.  The node grows to the block's end, visibly (the
     * driver step drops the cached lengths, io_co_drv_pwritev) and as
     * durably as the write itself: the
     * size change is part of what FUA or the next flush makes stable.  It
     * never shrinks back: a truncate after the write could be lost in a
     * crash while the growth was not, and would cut data another user
     * appended meanwhile.
     */
    ret = plan_co_io(&p, flags);
    for (PadCoalesce *c = members; c; c = c->next_member) {
        c->ret = ret;
    }
out:
    req_untrack(&req);
    plan_cleanup(&p);
    return ret;
}

/* ---- write-zeroes ----------------------------------------------------------------- */

/*
 * Unaligned write-zeroes: the partial head and tail blocks are written as
 * zero data through the RMW path (each atomic on its block); the aligned
 * middle goes to the driver's write-zeroes.
 */
int pad_co_pwrite_zeroes(StrataNode *node, int64_t offset, int64_t bytes,
                         int flags)
{
    int64_t A = node->bl.request_alignment;
    int64_t end = offset + bytes;
    int64_t mid_lo = ROUND_UP(offset, A);
    int64_t mid_hi = ROUND_DOWN(end, A);
    IOVector v;
    int ret;
    /* Up to three pieces (head, middle, tail): emulated FUA flushes once
     * after the last of them. */
    bool fua_once = io_fua_emulated(node, flags, true);

    g_assert(A <= ZERO_BUF_SIZE);
    if (fua_once) {
        flags &= ~REQ_FUA;
    }
    if (mid_lo >= mid_hi && bytes <= ZERO_BUF_SIZE) {
        /* Head and tail share a block, or touch two neighbours. */
        iov_init_buf(&v, (void *)io_zero_buf, bytes);
        ret = pad_co_pwritev(node, offset, bytes, &v, flags & REQ_FUA);
        if (ret < 0) {
            return ret;
        }
        return fua_once ? io_co_fua_flush(node) : 0;
    }
    if (offset < mid_lo) {
        int64_t n = MIN(mid_lo, end) - offset;
        iov_init_buf(&v, (void *)io_zero_buf, n);
        ret = pad_co_pwritev(node, offset, n, &v, flags & REQ_FUA);
        if (ret < 0) {
            return ret;
        }
    }
    if (mid_lo < mid_hi) {
        ret = node_co_pwrite_zeroes(node, mid_lo, mid_hi - mid_lo, flags);
        if (ret < 0) {
            return ret;
        }
    }
    if (mid_hi < end && mid_hi >= mid_lo) {
        iov_init_buf(&v, (void *)io_zero_buf, end - mid_hi);
        ret = pad_co_pwritev(node, mid_hi, end - mid_hi, &v, flags & REQ_FUA);
        if (ret < 0) {
            return ret;
        }
    }
    return fua_once ? io_co_fua_flush(node) : 0;
}
