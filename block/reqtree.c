/*
 * Interval tree of tracked requests (SPDX-License-Identifier: MIT)
 *
 * An augmented red-black tree threaded through the rb_* fields of BlockReq.
 * Nodes are ordered by (lo, seq); every node also caches rb_max_hi, the
 * largest hi anywhere in its subtree, which lets an overlap search skip any
 * subtree that ends at or before the start of the query.
 *
 * Red-black rules kept here (absent children count as black leaves):
 *   1. the root is black;
 *   2. a red node has no red child;
 *   3. every path from a node down to an absent child crosses the same
 *      number of black nodes (the node's black height).
 * Together they bound the depth by 2 * log2(n + 1), so insert, remove and
 * the first step of a search are O(log n).
 *
 * The left and right cases of the balancing code are mirror images, so the
 * code is written once in terms of a direction @dir: child(n, dir) is the
 * child on that side, child(n, !dir) the one on the other side.
 */
#include <assert.h>
#include <stddef.h>
#include "block/reqtree.h"

enum { LEFT = 0, RIGHT = 1 };

static BlockReq **child_link(BlockReq *n, int dir)
{
    return dir == LEFT ? &n->rb_left : &n->rb_right;
}

static BlockReq *child(BlockReq *n, int dir)
{
    return *child_link(n, dir);
}

static bool is_red(const BlockReq *n)
{
    return n && n->rb_red;
}

/* Strict (lo, seq) order; seq is unique, so no two nodes compare equal. */
static bool key_less(const BlockReq *a, const BlockReq *b)
{
    return a->lo < b->lo || (a->lo == b->lo && a->seq < b->seq);
}

/* Recompute @n's cached max from its own hi and its children's caches. */
static void update_max(BlockReq *n)
{
    int64_t max = n->hi;

    if (n->rb_left && n->rb_left->rb_max_hi > max) {
        max = n->rb_left->rb_max_hi;
    }
    if (n->rb_right && n->rb_right->rb_max_hi > max) {
        max = n->rb_right->rb_max_hi;
    }
    n->rb_max_hi = max;
}

/* Walk from @n up to the root refreshing every cache on the way. */
static void update_max_to_root(BlockReq *n)
{
    for (; n; n = n->rb_parent) {
        update_max(n);
    }
}

/* Make @new_child take @old's place under @parent (or as the root). */
static void replace_child(BlockReq **root, BlockReq *parent, BlockReq *old,
                          BlockReq *new_child)
{
    if (!parent) {
        *root = new_child;
    } else if (parent->rb_left == old) {
        parent->rb_left = new_child;
    } else {
        parent->rb_right = new_child;
    }
    if (new_child) {
        new_child->rb_parent = parent;
    }
}

/*
 * Rotate @x down towards @dir: its child on the other side, y, takes x's
 * place and x becomes y's child on the @dir side.  For dir == LEFT:
 *
 *        x                y
 *       / \              / \
 *      a   y     ->     x   c
 *         / \          / \
 *        b   c        a   b
 *
 * The set of nodes under the top position is unchanged, so y inherits x's
 * old cache as is; only x, which lost y and c, needs recomputing.  Must be
 * called with correct caches in x and its children.
 */
static void rotate(BlockReq **root, BlockReq *x, int dir)
{
    BlockReq *y = child(x, !dir);
    BlockReq *b = child(y, dir);

    *child_link(x, !dir) = b;
    if (b) {
        b->rb_parent = x;
    }
    replace_child(root, x->rb_parent, x, y);
    *child_link(y, dir) = x;
    x->rb_parent = y;

    y->rb_max_hi = x->rb_max_hi;
    update_max(x);
}

void reqtree_insert(BlockReq **root, BlockReq *req)
{
    BlockReq *parent = NULL;
    BlockReq **link = root;

    assert(req->lo < req->hi);

    /*
     * Every node on the way down gains req in its subtree, so widen its
     * cache now; this keeps all caches valid before any rotation runs.
     */
    while (*link) {
        parent = *link;
        if (parent->rb_max_hi < req->hi) {
            parent->rb_max_hi = req->hi;
        }
        link = key_less(req, parent) ? &parent->rb_left : &parent->rb_right;
    }

    req->rb_left = NULL;
    req->rb_right = NULL;
    req->rb_parent = parent;
    req->rb_max_hi = req->hi;
    /* A red leaf cannot change any black height; only rule 2 may break. */
    req->rb_red = true;
    *link = req;

    /*
     * Repair rule 2 between n and its red parent p.  p is red, so it is not
     * the root and the grandparent g exists (and is black).
     */
    BlockReq *n = req;
    BlockReq *p;
    while ((p = n->rb_parent) && p->rb_red) {
        BlockReq *g = p->rb_parent;
        int dir = g->rb_left == p ? LEFT : RIGHT;   /* side of p under g */
        BlockReq *uncle = child(g, !dir);

        if (is_red(uncle)) {
            /*
             * Push g's blackness down into both its children: black heights
             * through g are unchanged, but g is now red and may clash with
             * its own parent, so continue from g.
             */
            p->rb_red = false;
            uncle->rb_red = false;
            g->rb_red = true;
            n = g;
            continue;
        }

        if (n == child(p, !dir)) {
            /*
             * n is an inner grandchild (p's child on the side away from
             * p's own side).  Rotate it above p to make the red pair line
             * up on the outside; p is now the lower one of the two.
             */
            rotate(root, p, dir);
            n = p;
            p = n->rb_parent;
        }

        /*
         * Outer grandchild: lift p above g.  p turns black and g, now p's
         * child, turns red, so the black count on every path is as before
         * and no red node has a red child.
         */
        p->rb_red = false;
        g->rb_red = true;
        rotate(root, g, !dir);
        break;
    }
    (*root)->rb_red = false;
}

/*
 * Restore rule 3 after a black node was unlinked.  @x (possibly absent)
 * sits where that node was, under @parent, and every path through x is one
 * black node short compared with the rest of the tree: think of x as
 * carrying an extra "debt" of one black.
 */
static void remove_fixup(BlockReq **root, BlockReq *x, BlockReq *parent)
{
    while (x != *root && !is_red(x)) {
        /*
         * x may be absent, but it still has a definite side: the sibling
         * side has a black height of at least one (it had to match the
         * removed black node), so the sibling w exists and x is the other,
         * possibly empty, child.
         */
        int dir = parent->rb_left == x ? LEFT : RIGHT;
        BlockReq *w = child(parent, !dir);

        if (w->rb_red) {
            /*
             * Case 1, red sibling: then parent is black.  Rotate w above
             * parent and swap their colours.  Black heights do not change,
             * and x now has a black sibling (w's former child on x's side),
             * which lets one of the cases below finish.
             */
            w->rb_red = false;
            parent->rb_red = true;
            rotate(root, parent, dir);
            w = child(parent, !dir);
        }

        if (!is_red(w->rb_left) && !is_red(w->rb_right)) {
            /*
             * Case 2, black sibling with two black children: paint w red.
             * Now w's side is short by one black as well, so the debt moves
             * up to parent.  If parent is red, painting it black after the
             * loop settles everything; otherwise repeat one level up.
             */
            w->rb_red = true;
            x = parent;
            parent = x->rb_parent;
            continue;
        }

        if (!is_red(child(w, !dir))) {
            /*
             * Case 3, black sibling whose near child (on x's side) is red
             * and far child black: rotate the near child above w and swap
             * their colours.  Black heights are unchanged and the new
             * sibling has a red far child, which is case 4.
             */
            child(w, dir)->rb_red = false;
            w->rb_red = true;
            rotate(root, w, !dir);
            w = child(parent, !dir);
        }

        /*
         * Case 4, black sibling with a red far child: rotate w above
         * parent, give w parent's old colour and make parent and the far
         * child black.  x's paths gain a black (parent, now above x) while
         * the far side keeps its count (the far child turned black in
         * place of w), so the debt is paid and we are done.
         */
        w->rb_red = parent->rb_red;
        parent->rb_red = false;
        child(w, !dir)->rb_red = false;
        rotate(root, parent, dir);
        x = *root;
        break;
    }
    if (x) {
        x->rb_red = false;
    }
}

void reqtree_remove(BlockReq **root, BlockReq *req)
{
    BlockReq *x;            /* the node that moves into the vacated slot */
    BlockReq *parent;       /* x's parent after the splice */
    bool removed_black;     /* whether a black node left its position */

    if (!req->rb_left || !req->rb_right) {
        /* At most one child: splice req out, its child takes its place. */
        x = req->rb_left ? req->rb_left : req->rb_right;
        parent = req->rb_parent;
        removed_black = !req->rb_red;
        replace_child(root, parent, req, x);
    } else {
        /*
         * Two children: req's in-order successor s (leftmost of the right
         * subtree, so it has no left child) takes req's place and colour.
         * The position that effectively disappears is s's old one, so the
         * colour that matters for balance is s's.
         */
        BlockReq *s = req->rb_right;
        while (s->rb_left) {
            s = s->rb_left;
        }
        x = s->rb_right;
        removed_black = !s->rb_red;

        if (s->rb_parent == req) {
            parent = s;
        } else {
            parent = s->rb_parent;
            parent->rb_left = x;
            if (x) {
                x->rb_parent = parent;
            }
            s->rb_right = req->rb_right;
            s->rb_right->rb_parent = s;
        }
        s->rb_left = req->rb_left;
        s->rb_left->rb_parent = s;
        replace_child(root, req->rb_parent, req, s);
        s->rb_red = req->rb_red;
    }

    /*
     * Every subtree that lost req (and, in the two-child case, s's new
     * position) lies on the path from parent to the root.  Refresh the
     * whole path: it is O(log n), and the rotations in the fix-up rely on
     * correct caches.
     */
    update_max_to_root(parent);

    if (removed_black) {
        remove_fixup(root, x, parent);
    }

    req->rb_left = NULL;
    req->rb_right = NULL;
    req->rb_parent = NULL;
}

/*
 * In-order walk with pruning, iterative (parent pointers) so that it uses
 * constant stack in a coroutine.  A subtree is entered only if its rb_max_hi
 * is above @lo, so subtrees holding nothing that ends past lo are skipped.
 * The walk stops at the first node starting at or beyond @hi: it and every
 * later node in order (its right subtree and the rest) start at or beyond
 * hi too.  Together this visits O((k + 1) log n) nodes for k results.
 */
bool reqtree_foreach_overlap(BlockReq *root, int64_t lo, int64_t hi,
                             ReqTreeVisit *fn, void *opaque)
{
    BlockReq *n = root;

    if (!n || n->rb_max_hi <= lo || lo >= hi) {
        return true;
    }

    for (;;) {
        /* n's subtree may hold a match: find the leftmost place to look. */
        while (n->rb_left && n->rb_left->rb_max_hi > lo) {
            n = n->rb_left;
        }

        for (;;) {
            /* Everything before n in order has been handled. */
            if (n->lo >= hi) {
                return true;
            }
            if (n->hi > lo && !fn(n, opaque)) {
                return false;
            }
            if (n->rb_right && n->rb_right->rb_max_hi > lo) {
                n = n->rb_right;
                break;
            }
            /*
             * Right subtree done or pruned: climb past every ancestor we
             * reach from its right side (already visited) to the first one
             * we reach from its left side, which is next in order.
             */
            BlockReq *from;
            do {
                from = n;
                n = n->rb_parent;
                if (!n) {
                    return true;
                }
            } while (n->rb_right == from);
        }
    }
}

/*
 * Check the subtree at @n, whose parent must be @parent and whose keys must
 * all lie strictly between *prev (the previous node in order, or NULL) and
 * anything after it.  Returns the black height; adds the node count to
 * *count.
 */
static int check_subtree(const BlockReq *n, const BlockReq *parent,
                         const BlockReq **prev, int *count)
{
    if (!n) {
        return 1;
    }
    assert(n->rb_parent == parent);
    assert(n->lo < n->hi);
    if (n->rb_red) {
        assert(!is_red(n->rb_left) && !is_red(n->rb_right));
    }

    int left_height = check_subtree(n->rb_left, n, prev, count);

    assert(!*prev || key_less(*prev, n));
    *prev = n;
    (*count)++;

    int right_height = check_subtree(n->rb_right, n, prev, count);
    assert(left_height == right_height);

    int64_t max = n->hi;
    if (n->rb_left && n->rb_left->rb_max_hi > max) {
        max = n->rb_left->rb_max_hi;
    }
    if (n->rb_right && n->rb_right->rb_max_hi > max) {
        max = n->rb_right->rb_max_hi;
    }
    assert(n->rb_max_hi == max);

    return left_height + !n->rb_red;
}

int reqtree_check(BlockReq *root)
{
    const BlockReq *prev = NULL;
    int count = 0;

    assert(!is_red(root));
    check_subtree(root, NULL, &prev, &count);
    return count;
}
