/*
 * blkdebug: a filter for tests that injects errors, changes limits and
 * holds requests at breakpoints
 * SPDX-License-Identifier: MIT
 *
 * Behaviour follows QEMU's blkdebug so that its iotests carry over
 * (docs/blkdebug.md):
 *
 *   - Rules are attached to events of the request path (debug_event_names[]
 *     in block/io.c).  When an event fires on this node, every rule of that
 *     event whose state is 0 or the current state acts, all of them judged
 *     against the state the node was in when the event fired:
 *       inject-error  the matching rules replace the "active" set (only if
 *                     at least one matches: an event without inject-error
 *                     rules leaves the set alone);
 *       set-state     the first matching rule, in definition order, gives
 *                     the new state, applied after all rules have run;
 *       breakpoint    the request is suspended under the rule's tag; the
 *                     rule is consumed.
 *   - Every request this filter serves first looks through the active set,
 *     in definition order, for a rule whose iotype and sector match; the
 *     first such rule fails the request with -errno (after one trip
 *     through the event loop unless "immediately"), and a "once" rule is
 *     then deleted.  Otherwise the request goes to the image.
 *   - The event "none" fires once, at the end of open: its rules act before
 *     any request arrives ("active from the start").
 *
 * The limit options override what the filter advertises to its parents, so
 * that the request path pads, splits and falls back on this node exactly as
 * the options say; every handler asserts that what it receives honours
 * those limits (invariant 1 of the design).
 *
 * Everything runs in the node's loop thread: no locks.  Rules live in
 * intrusive lists, so the data path allocates nothing; a breakpoint's rule
 * becomes the record of the request it holds.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-int.h"
#include "block/blkdebug.h"
#include "block/drivers.h"
#include "qapi/qapi-schema.h"

#define BLKDEBUG_SECTOR_SIZE 512
/* While a request is held, how often the filter looks for a drained
 * section above it that must not wait for a resume. */
#define BLKDEBUG_DRAIN_POLL_NS ((int64_t)1000 * 1000)

enum {
    IOTYPE_READ = QAPI_BLKDEBUG_INJECT_ERROR_IOTYPE_READ,
    IOTYPE_WRITE = QAPI_BLKDEBUG_INJECT_ERROR_IOTYPE_WRITE,
    IOTYPE_WRITE_ZEROES = QAPI_BLKDEBUG_INJECT_ERROR_IOTYPE_WRITE_ZEROES,
    IOTYPE_DISCARD = QAPI_BLKDEBUG_INJECT_ERROR_IOTYPE_DISCARD,
    IOTYPE_FLUSH = QAPI_BLKDEBUG_INJECT_ERROR_IOTYPE_FLUSH,
    IOTYPE_BLOCK_STATUS = QAPI_BLKDEBUG_INJECT_ERROR_IOTYPE_BLOCK_STATUS,
};

/* QEMU's default: every type but block status, which callers often probe
 * without expecting it to fail. */
#define IOTYPE_DEFAULT_MASK \
    ((1u << IOTYPE_READ) | (1u << IOTYPE_WRITE) | \
     (1u << IOTYPE_WRITE_ZEROES) | (1u << IOTYPE_DISCARD) | \
     (1u << IOTYPE_FLUSH))

typedef enum BlkdebugAction {
    ACTION_INJECT_ERROR,
    ACTION_SET_STATE,
    ACTION_SUSPEND,
} BlkdebugAction;

typedef struct BlkdebugRule BlkdebugRule;
struct BlkdebugRule {
    BlkdebugAction action;
    int event;
    int64_t state;                  /* 0: any state */

    /* inject-error */
    int error;                      /* positive errno */
    uint32_t iotype_mask;           /* 1 << IOTYPE_* */
    int64_t offset;                 /* byte the request must contain, -1 any */
    bool once;
    bool immediately;

    /* set-state */
    int64_t new_state;

    /* breakpoint; once it fires, the record of the request it holds */
    char *tag;
    Coroutine *co;
    int *holds;                     /* on the held coroutine's stack */

    BlkdebugRule *next;             /* rules[event], or the suspended list */
    BlkdebugRule *active_next;
    bool active;
};

typedef struct BlkdebugState {
    StrataNode *node;

    /* limit overrides, 0 = not set */
    uint64_t align;
    uint64_t max_transfer;
    uint64_t opt_write_zero;
    uint64_t max_write_zero;
    uint64_t opt_discard;
    uint64_t max_discard;
    char *config_file;

    int64_t state;
    BlkdebugRule *rules[DBG__MAX];  /* per event, in definition order */
    BlkdebugRule *active;           /* in definition order */
    BlkdebugRule *suspended;        /* in suspension order */
    CoQueue break_waiters;          /* blkdebug_co_wait_break() */
    LoopTimer drain_watch;
    BlkdebugNotify *notify;
    void *notify_opaque;
} BlkdebugState;

/* ---- lists ------------------------------------------------------------------ */

static void list_append(BlkdebugRule **head, BlkdebugRule *r)
{
    while (*head) {
        head = &(*head)->next;
    }
    r->next = NULL;
    *head = r;
}

static void list_remove(BlkdebugRule **head, BlkdebugRule *r)
{
    while (*head && *head != r) {
        head = &(*head)->next;
    }
    g_assert(*head);
    *head = r->next;
    r->next = NULL;
}

static void active_clear(BlkdebugState *s)
{
    while (s->active) {
        BlkdebugRule *r = s->active;
        s->active = r->active_next;
        r->active_next = NULL;
        r->active = false;
    }
}

static void active_append(BlkdebugState *s, BlkdebugRule *r)
{
    BlkdebugRule **p = &s->active;

    while (*p) {
        p = &(*p)->active_next;
    }
    r->active_next = NULL;
    r->active = true;
    *p = r;
}

static void active_remove(BlkdebugState *s, BlkdebugRule *r)
{
    BlkdebugRule **p = &s->active;

    while (*p && *p != r) {
        p = &(*p)->active_next;
    }
    if (*p) {
        *p = r->active_next;
    }
    r->active_next = NULL;
    r->active = false;
}

static void rule_free(BlkdebugRule *r)
{
    g_free(r->tag);
    g_free(r);
}

/* ---- events --------------------------------------------------------------------- */

/* Index of an event name, or -1. */
static int blkdebug_event_lookup(const char *name)
{
    for (int i = 0; i < DBG__MAX; i++) {
        if (!strcmp(debug_event_names[i], name)) {
            return i;
        }
    }
    return -1;
}

static char *blkdebug_event_list(void)
{
    GString *s = g_string_new(NULL);

    for (int i = 0; i < DBG__MAX; i++) {
        g_string_append_printf(s, "%s%s", i ? ", " : "", debug_event_names[i]);
    }
    return g_string_free(s, false);
}

/*
 * Act on the rules of @event (see the file comment).  Breakpoints are
 * taken only when @holds is given (a coroutine that can be held): each one
 * moves to the suspended list and counts one hold in *@holds.
 */
static void blkdebug_process_event(BlkdebugState *s, int event, int *holds)
{
    int64_t state = s->state, new_state = s->state;
    bool injected = false, state_set = false;
    BlkdebugRule **pp = &s->rules[event];

    while (*pp) {
        BlkdebugRule *r = *pp;

        if (r->state && r->state != state) {
            pp = &r->next;
            continue;
        }
        switch (r->action) {
        case ACTION_INJECT_ERROR:
            /* The first matching rule of an event starts a new active set:
             * rules of earlier events stop applying. */
            if (!injected) {
                active_clear(s);
                injected = true;
            }
            active_append(s, r);
            break;
        case ACTION_SET_STATE:
            if (!state_set) {
                new_state = r->new_state;
                state_set = true;
            }
            break;
        case ACTION_SUSPEND:
            if (holds) {
                *pp = r->next;
                r->co = co_self();
                r->holds = holds;
                (*holds)++;
                list_append(&s->suspended, r);
                if (s->notify) {
                    s->notify(s->notify_opaque, r->tag, true);
                }
                continue;
            }
            break;
        }
        pp = &r->next;
    }
    s->state = new_state;
}

/* True if @node or a node above it is in a drained section. */
static bool blkdebug_node_drained(StrataNode *node)
{
    if (__atomic_load_n(&node->quiesce_counter, __ATOMIC_RELAXED) > 0) {
        return true;
    }
    for (GSList *l = node->parents; l; l = l->next) {
        BlockChild *c = l->data;
        if (c->parent && blkdebug_node_drained(c->parent)) {
            return true;
        }
    }
    return false;
}

/*
 * Drop the hold of suspended record @r and free it.  Returns the held
 * coroutine when that was its last hold (the caller must let it run), else
 * NULL.
 */
static Coroutine *blkdebug_release(BlkdebugState *s, BlkdebugRule *r)
{
    Coroutine *co = r->co;
    bool last;

    if (s->notify) {
        s->notify(s->notify_opaque, r->tag, false);
    }
    list_remove(&s->suspended, r);
    g_assert(*r->holds > 0);
    last = --*r->holds == 0;
    rule_free(r);
    return last ? co : NULL;
}

/* Release every held request; they continue on later loop iterations. */
static void blkdebug_release_all(BlkdebugState *s)
{
    while (s->suspended) {
        Coroutine *co = blkdebug_release(s, s->suspended);
        if (co) {
            loop_co_wake(co);
        }
    }
}

/*
 * A drained section must complete even when nobody resumes a held request
 * (a test that failed half-way, a tool that quits): while anything is held,
 * poll for a drain over this node and release everything when one begins.
 * The drain loop runs the event loop, so the timer fires inside it.
 */
static void blkdebug_drain_watch_cb(void *opaque)
{
    StrataNode *node = opaque;
    BlkdebugState *s = node->opaque;

    if (!s->suspended) {
        return;
    }
    if (blkdebug_node_drained(node)) {
        blkdebug_release_all(s);
        return;
    }
    loop_timer_mod(&s->drain_watch, clock_ns() + BLKDEBUG_DRAIN_POLL_NS);
}

static void blkdebug_co_debug_event(StrataNode *node, int event)
{
    BlkdebugState *s = node->opaque;
    int holds = 0;

    g_assert(event >= 0 && event < DBG__MAX);
    blkdebug_process_event(s, event, co_in_coroutine() ? &holds : NULL);
    if (!holds) {
        return;
    }
    co_queue_restart_all(&s->break_waiters);
    if (!loop_timer_pending(&s->drain_watch)) {
        loop_timer_mod(&s->drain_watch, clock_ns() + BLKDEBUG_DRAIN_POLL_NS);
    }
    /* Only a release enters us, and the last one sets holds to 0.  After
     * that nothing here touches the node: a close may have released us. */
    while (holds > 0) {
        co_yield();
    }
}

/*
 * The error of the first active rule matching a request of @iotype over
 * [offset, offset + bytes), or 0.  A flush has no range (bytes == 0) and
 * matches only rules without a sector.
 */
static int blkdebug_co_rule_check(BlkdebugState *s, int64_t offset,
                                  int64_t bytes, int iotype)
{
    BlkdebugRule *r;
    int error;
    bool immediately;

    for (r = s->active; r; r = r->active_next) {
        bool in_range = r->offset == -1 ||
            (bytes && r->offset >= offset && r->offset - offset < bytes);
        if (in_range && (r->iotype_mask & (1u << iotype))) {
            break;
        }
    }
    if (!r) {
        return 0;
    }
    error = r->error;
    immediately = r->immediately;
    if (r->once) {
        active_remove(s, r);
        list_remove(&s->rules[r->event], r);
        rule_free(r);
    }
    if (!immediately) {
        /* Fail like real I/O does: on a later loop iteration, after the
         * caller has had the chance to submit more. */
        loop_co_wake(co_self());
        co_yield();
    }
    return -error;
}

/* ---- data path ---------------------------------------------------------------- */

/* Invariant 1: reads and writes arrive within the limits advertised. */
static void blkdebug_assert_rw(StrataNode *node, int64_t offset,
                               int64_t bytes, const IOVector *qiov)
{
    const BlockLimits *bl = &node->bl;

    g_assert(IS_ALIGNED(offset, (int64_t)bl->request_alignment));
    g_assert(IS_ALIGNED(bytes, (int64_t)bl->request_alignment));
    g_assert(!bl->max_transfer || bytes <= bl->max_transfer);
    g_assert(qiov && (int64_t)iov_size(qiov) == bytes);
    g_assert(qiov->niov <= bl->max_iov);
}

static int blkdebug_co_preadv(StrataNode *node, int64_t offset, int64_t bytes,
                              const IOVector *qiov, int flags)
{
    int ret;

    blkdebug_assert_rw(node, offset, bytes, qiov);
    ret = blkdebug_co_rule_check(node->opaque, offset, bytes, IOTYPE_READ);
    if (ret < 0) {
        return ret;
    }
    return node_co_preadv(node->file->node, offset, bytes, qiov, flags);
}

static int blkdebug_co_pwritev(StrataNode *node, int64_t offset, int64_t bytes,
                               const IOVector *qiov, int flags)
{
    int ret;

    blkdebug_assert_rw(node, offset, bytes, qiov);
    ret = blkdebug_co_rule_check(node->opaque, offset, bytes, IOTYPE_WRITE);
    if (ret < 0) {
        return ret;
    }
    return node_co_pwritev(node->file->node, offset, bytes, qiov, flags);
}

static int blkdebug_co_pwrite_zeroes(StrataNode *node, int64_t offset,
                                     int64_t bytes, int flags)
{
    const BlockLimits *bl = &node->bl;
    int64_t align = MAX(bl->request_alignment, bl->pwrite_zeroes_alignment);
    int ret;

    g_assert(IS_ALIGNED(offset | bytes, (int64_t)bl->request_alignment));
    g_assert(!bl->max_pwrite_zeroes || bytes <= bl->max_pwrite_zeroes);
    /* Pieces shorter than the zeroing granularity take the request path's
     * fallback (zero buffers through this filter's write), so that tests
     * exercise it; the request path never hands over a piece that starts
     * unaligned and crosses a granularity boundary. */
    if (bytes < align) {
        g_assert(IS_ALIGNED(offset, align) ||
                 ROUND_DOWN(offset, align) ==
                 ROUND_DOWN(offset + bytes - 1, align));
        return -ENOTSUP;
    }
    g_assert(IS_ALIGNED(offset, align));
    ret = blkdebug_co_rule_check(node->opaque, offset, bytes,
                                 IOTYPE_WRITE_ZEROES);
    if (ret < 0) {
        return ret;
    }
    return node_co_pwrite_zeroes(node->file->node, offset, bytes, flags);
}

static int blkdebug_co_pdiscard(StrataNode *node, int64_t offset, int64_t bytes)
{
    const BlockLimits *bl = &node->bl;
    int64_t align = MAX(bl->request_alignment, bl->pdiscard_alignment);
    int ret;

    g_assert(IS_ALIGNED(offset | bytes, align));
    g_assert(!bl->max_pdiscard || bytes <= bl->max_pdiscard);
    ret = blkdebug_co_rule_check(node->opaque, offset, bytes, IOTYPE_DISCARD);
    if (ret < 0) {
        return ret;
    }
    return node_co_pdiscard(node->file->node, offset, bytes);
}

/* The request path flushes the image after this returns 0. */
static int blkdebug_co_flush(StrataNode *node)
{
    return blkdebug_co_rule_check(node->opaque, 0, 0, IOTYPE_FLUSH);
}

static int blkdebug_co_block_status(StrataNode *node, int64_t offset,
                                    int64_t bytes, int64_t *pnum)
{
    int ret = blkdebug_co_rule_check(node->opaque, offset, bytes,
                                     IOTYPE_BLOCK_STATUS);
    if (ret < 0) {
        *pnum = 0;
        return ret;
    }
    return node_co_block_status(node->file->node, offset, bytes, pnum);
}

/* ---- options and rules ------------------------------------------------------------ */

/* An int option in [min, max], with an error naming it otherwise. */
static bool blkdebug_get_int_in(OptNode *obj, const char *key, int64_t def,
                                int64_t min, int64_t max, int64_t *out,
                                StrataError **errp)
{
    if (!opts_get_int(obj, key, def, out, errp)) {
        return false;
    }
    if (*out < min || *out > max) {
        g_autofree char *path = opts_key_path(obj, key);
        error_set_option(errp, "%s: %" PRId64 " is not between %" PRId64
                         " and %" PRId64, path, *out, min, max);
        return false;
    }
    return true;
}

/*
 * Parse one rule from the object @obj (an element of the inject-error or
 * set-state list, or a section of the config file) and append it.  With
 * @check_unknown, members nobody read are an error (the schema validator
 * has already checked inline rules).
 */
static bool blkdebug_add_rule(BlkdebugState *s, OptNode *obj,
                              BlkdebugAction action, bool check_unknown,
                              StrataError **errp)
{
    g_autofree BlkdebugRule *r = g_new0(BlkdebugRule, 1);
    const char *event_name;
    int64_t v;
    int event;

    r->action = action;
    if (!opts_require_str(obj, "event", &event_name, errp)) {
        return false;
    }
    r->event = blkdebug_event_lookup(event_name);
    if (r->event < 0) {
        g_autofree char *path = opts_key_path(obj, "event");
        g_autofree char *names = blkdebug_event_list();
        error_set_option(errp, "%s: unknown event '%s' (expected one of %s)",
                         path, event_name, names);
        return false;
    }
    if (!blkdebug_get_int_in(obj, "state", 0, 0, INT64_MAX, &r->state, errp)) {
        return false;
    }

    if (action == ACTION_INJECT_ERROR) {
        int iotype;

        if (!blkdebug_get_int_in(obj, "errno",
                                 QAPI_BLKDEBUG_INJECT_ERROR_ERRNO_DEFAULT,
                                 1, 4095, &v, errp)) {
            return false;
        }
        r->error = (int)v;
        if (!opts_get_enum(obj, "iotype", qapi_enum_blkdebug_inject_error_iotype,
                           -1, &iotype, errp)) {
            return false;
        }
        r->iotype_mask = iotype < 0 ? IOTYPE_DEFAULT_MASK : 1u << iotype;
        if (!blkdebug_get_int_in(obj, "sector", -1, -1,
                                 BLOCK_MAX_OFFSET / BLKDEBUG_SECTOR_SIZE,
                                 &v, errp)) {
            return false;
        }
        r->offset = v < 0 ? -1 : v * BLKDEBUG_SECTOR_SIZE;
        if (!opts_get_bool(obj, "once", false, &r->once, errp) ||
            !opts_get_bool(obj, "immediately", false, &r->immediately, errp)) {
            return false;
        }
    } else {
        if (!opts_has(obj, "new_state")) {
            g_autofree char *path = opts_key_path(obj, "new_state");
            error_set_option(errp, "%s: missing", path);
            return false;
        }
        if (!blkdebug_get_int_in(obj, "new_state", 0, 0, INT64_MAX,
                                 &r->new_state, errp)) {
            return false;
        }
    }
    if (check_unknown && !opts_check_consumed(obj, errp)) {
        return false;
    }
    event = r->event;
    list_append(&s->rules[event], g_steal_pointer(&r));
    return true;
}

static bool blkdebug_add_rule_list(BlkdebugState *s, OptNode *opts,
                                   const char *key, BlkdebugAction action,
                                   StrataError **errp)
{
    OptNode *list = opts_get(opts, key);

    if (!list) {
        return true;
    }
    if (opts_type(list) != OPT_LIST) {
        g_autofree char *path = opts_key_path(opts, key);
        error_set_option(errp, "%s: expected a list", path);
        return false;
    }
    for (guint i = 0; i < opts_list_length(list); i++) {
        OptNode *elem = opts_list_get(list, i);
        if (opts_type(elem) != OPT_OBJECT) {
            error_set_option(errp, "%s: expected an object", opts_path(elem));
            return false;
        }
        if (!blkdebug_add_rule(s, elem, action, false, errp)) {
            return false;
        }
    }
    return true;
}

/*
 * The rules file, in QEMU's format:
 *
 *   # comment
 *   [inject-error]
 *   event = "read_aio"
 *   errno = "28"
 *
 *   [set-state]
 *   event = "write_aio"
 *   new_state = "2"
 *
 * A section may carry an id ([inject-error "x"]), which is ignored.  Values
 * may be left unquoted.  Errors name the file and the line.
 */
typedef struct ConfigSection {
    OptNode *obj;
    BlkdebugAction action;
    int line;
} ConfigSection;

static bool config_finish_section(BlkdebugState *s, ConfigSection *sec,
                                  const char *filename, StrataError **errp)
{
    StrataError *local = NULL;
    bool ok = true;

    if (!sec->obj) {
        return true;
    }
    if (!blkdebug_add_rule(s, sec->obj, sec->action, true, &local)) {
        error_prepend(&local, "%s:%d: ", filename, sec->line);
        error_propagate(errp, local);
        ok = false;
    }
    opts_unref(sec->obj);
    sec->obj = NULL;
    return ok;
}

/* Strip one pair of double quotes around @v, in place; false if unbalanced. */
static bool config_unquote(char **v)
{
    size_t len = strlen(*v);

    if (len == 0 || (*v)[0] != '"') {
        return !strchr(*v, '"');
    }
    if (len < 2 || (*v)[len - 1] != '"') {
        return false;
    }
    (*v)[len - 1] = '\0';
    (*v)++;
    return !strchr(*v, '"');
}

static bool config_parse_line(BlkdebugState *s, ConfigSection *sec,
                              char *line, int lineno, const char *filename,
                              StrataError **errp)
{
    if (*line == '[') {
        char *end = strchr(line, ']');
        char *name, *id;

        if (!config_finish_section(s, sec, filename, errp)) {
            return false;
        }
        if (!end || end[1] != '\0') {
            error_set_option(errp, "%s:%d: expected '[section]'", filename,
                             lineno);
            return false;
        }
        *end = '\0';
        name = g_strstrip(line + 1);
        id = strchr(name, ' ');
        if (id) {
            *id++ = '\0';
            id = g_strstrip(id);
            if (!config_unquote(&id)) {
                error_set_option(errp, "%s:%d: unbalanced quotes in the "
                                 "section id", filename, lineno);
                return false;
            }
        }
        if (!strcmp(name, "inject-error")) {
            sec->action = ACTION_INJECT_ERROR;
        } else if (!strcmp(name, "set-state")) {
            sec->action = ACTION_SET_STATE;
        } else {
            error_set_option(errp, "%s:%d: unknown section '%s' (expected "
                             "inject-error or set-state)", filename, lineno,
                             name);
            return false;
        }
        sec->obj = opts_new_object();
        sec->line = lineno;
        return true;
    }

    char *eq = strchr(line, '=');
    char *key, *value;
    StrataError *local = NULL;

    if (!eq) {
        error_set_option(errp, "%s:%d: expected 'key = \"value\"'", filename,
                         lineno);
        return false;
    }
    *eq = '\0';
    key = g_strstrip(line);
    value = g_strstrip(eq + 1);
    if (!*key || strchr(key, '.') || !config_unquote(&value)) {
        error_set_option(errp, "%s:%d: expected 'key = \"value\"'", filename,
                         lineno);
        return false;
    }
    if (!sec->obj) {
        error_set_option(errp, "%s:%d: '%s' outside a section", filename,
                         lineno, key);
        return false;
    }
    if (!opts_set_str(sec->obj, key, value, &local)) {
        error_prepend(&local, "%s:%d: ", filename, lineno);
        error_propagate(errp, local);
        return false;
    }
    return true;
}

static bool blkdebug_read_config(BlkdebugState *s, const char *filename,
                                 StrataError **errp)
{
    ConfigSection sec = { 0 };
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0;
    bool ok = true;
    FILE *f = fopen(filename, "r");

    if (!f) {
        error_set(errp, errno == ENOENT ? STRATA_ERROR_NOT_FOUND
                                        : STRATA_ERROR_GENERIC, errno,
                  "config: cannot open '%s': %s", filename, g_strerror(errno));
        return false;
    }
    while (ok && getline(&line, &cap, f) >= 0) {
        char *l = g_strstrip(line);

        lineno++;
        if (*l == '\0' || *l == '#') {
            continue;
        }
        ok = config_parse_line(s, &sec, l, lineno, filename, errp);
    }
    if (ok && ferror(f)) {
        error_setg_errno(errp, EIO, "config: cannot read '%s'", filename);
        ok = false;
    }
    if (ok) {
        ok = config_finish_section(s, &sec, filename, errp);
    }
    opts_unref(sec.obj);
    free(line);
    fclose(f);
    return ok;
}

/* A unit the limit options must be multiples of, and its name. */
typedef struct LimitUnit {
    uint64_t value;
    const char *name;
} LimitUnit;

/* The larger unit; on a tie, @a (an option beats an inherited value). */
static LimitUnit unit_max(LimitUnit a, LimitUnit b)
{
    return b.value > a.value ? b : a;
}

/*
 * Read the size option @key (0 = not set) and check it: at most @max, a
 * power of two if @pow2, a multiple of @unit.
 */
static bool blkdebug_get_limit(OptNode *opts, const char *key, uint64_t max,
                               bool pow2, LimitUnit unit, uint64_t *out,
                               StrataError **errp)
{
    g_autofree char *path = NULL;

    if (!opts_get_size(opts, key, 0, out, errp)) {
        return false;
    }
    if (*out == 0) {
        return true;
    }
    path = opts_key_path(opts, key);
    if (*out > max) {
        error_set_option(errp, "%s: %" PRIu64 " is larger than %" PRIu64,
                         path, *out, max);
        return false;
    }
    if (pow2 && !is_power_of_2(*out)) {
        error_set_option(errp, "%s: %" PRIu64 " is not a power of two",
                         path, *out);
        return false;
    }
    if (*out % unit.value) {
        error_set_option(errp, "%s: %" PRIu64 " is not a multiple of %s (%"
                         PRIu64 ")", path, *out, unit.name, unit.value);
        return false;
    }
    return true;
}

static bool blkdebug_parse_limits(BlkdebugState *s, OptNode *opts,
                                  StrataError **errp)
{
    const BlockLimits *cbl = &s->node->file->node->bl;
    LimitUnit align, zero, discard;

    if (!opts_get_size(opts, "align", 0, &s->align, errp)) {
        return false;
    }
    if (s->align && (!is_power_of_2(s->align) ||
                     s->align > BLOCK_MAX_REQUEST_ALIGN)) {
        g_autofree char *path = opts_key_path(opts, "align");
        error_set_option(errp, "%s: %" PRIu64 " is not a power of two "
                         "between 1 and 1M", path, s->align);
        return false;
    }
    /* As QEMU: align may be below the image's alignment (the image's entry
     * then pads again), but the other limits must suit both. */
    align = unit_max((LimitUnit) { s->align ? s->align : 1, "align" },
                     (LimitUnit) { cbl->request_alignment,
                                   "the image's request alignment" });
    if (!blkdebug_get_limit(opts, "max-transfer", BLOCK_MAX_RW_BYTES, false,
                            align, &s->max_transfer, errp) ||
        !blkdebug_get_limit(opts, "opt-write-zero", 1u << 30, true, align,
                            &s->opt_write_zero, errp)) {
        return false;
    }
    zero = s->opt_write_zero
        ? (LimitUnit) { s->opt_write_zero, "opt-write-zero" }
        : unit_max(align, (LimitUnit) { cbl->pwrite_zeroes_alignment,
                                        "the image's write-zeroes alignment" });
    if (!blkdebug_get_limit(opts, "max-write-zero", BLOCK_MAX_OFFSET, false,
                            zero, &s->max_write_zero, errp) ||
        !blkdebug_get_limit(opts, "opt-discard", 1u << 30, true, align,
                            &s->opt_discard, errp)) {
        return false;
    }
    discard = s->opt_discard
        ? (LimitUnit) { s->opt_discard, "opt-discard" }
        : unit_max(align, (LimitUnit) { cbl->pdiscard_alignment,
                                        "the image's discard alignment" });
    return blkdebug_get_limit(opts, "max-discard", BLOCK_MAX_OFFSET, false,
                              discard, &s->max_discard, errp);
}

/* ---- open, close, limits ----------------------------------------------------------- */

static void blkdebug_free_rules(BlkdebugState *s)
{
    active_clear(s);
    for (int i = 0; i < DBG__MAX; i++) {
        while (s->rules[i]) {
            BlkdebugRule *r = s->rules[i];
            s->rules[i] = r->next;
            rule_free(r);
        }
    }
}

static bool blkdebug_open(StrataNode *node, OptNode *opts, StrataError **errp)
{
    BlkdebugState *s = node->opaque;
    const char *config;

    s->node = node;
    s->state = 1;
    co_queue_init(&s->break_waiters);
    loop_timer_init(&s->drain_watch, node->ctx->loop, blkdebug_drain_watch_cb,
                    node);

    /* Rules first, as QEMU reads them: the file's, then the inline ones. */
    if (!opts_get_str(opts, "config", NULL, &config, errp)) {
        goto fail;
    }
    if (config) {
        s->config_file = g_strdup(config);
        if (!blkdebug_read_config(s, config, errp)) {
            goto fail;
        }
    }
    if (!blkdebug_add_rule_list(s, opts, "inject-error", ACTION_INJECT_ERROR,
                                errp) ||
        !blkdebug_add_rule_list(s, opts, "set-state", ACTION_SET_STATE,
                                errp)) {
        goto fail;
    }
    if (!block_open_child(node, opts, "image", "image", true, errp)) {
        goto fail;
    }
    if (!blkdebug_parse_limits(s, opts, errp)) {
        goto fail;
    }
    /* FUA goes to the image, whose own entry emulates it if need be. */
    node->supports_fua = true;

    blkdebug_process_event(s, DBG_NONE, NULL);
    return true;

fail:
    /* The graph does not call close after a failed open; the image edge,
     * if any, is dropped by the caller. */
    blkdebug_free_rules(s);
    g_free(s->config_file);
    s->config_file = NULL;
    return false;
}

/*
 * "blkdebug:[CONFIG]:IMAGE": the rules file, if any, and the image, which
 * is itself a filename (probed, so a plain path opens the file driver).
 * Without the prefix (driver=blkdebug given) the whole string is the
 * image.
 */
static bool blkdebug_parse_filename(const char *filename, OptNode *opts,
                                    StrataError **errp)
{
    const char *image = filename;

    if (g_str_has_prefix(filename, "blkdebug:")) {
        const char *rest = filename + strlen("blkdebug:");
        const char *colon = strchr(rest, ':');

        if (!colon) {
            error_set_option(errp, "blkdebug requires both config file and "
                             "image path");
            return false;
        }
        if (colon > rest) {
            g_autofree char *config = g_strndup(rest, colon - rest);
            if (!opts_set_default_str(opts, "config", config, errp)) {
                return false;
            }
        }
        image = colon + 1;
    }
    OptNode *child = opts_peek(opts, "image");
    if (!child) {
        opts_set_child(opts, "image", opts_new_object());
        child = opts_peek(opts, "image");
    }
    return block_parse_protocol_filename(child, image, errp);
}

static void blkdebug_close(StrataNode *node)
{
    BlkdebugState *s = node->opaque;

    /* Nothing is in flight at close, but a request held at an event fired
     * on this node from outside its own requests could still be here:
     * let it go rather than leave it waiting forever. */
    blkdebug_release_all(s);
    co_queue_restart_all(&s->break_waiters);
    loop_timer_del(&s->drain_watch);
    blkdebug_free_rules(s);
    g_free(s->config_file);
    s->config_file = NULL;
}

static void blkdebug_refresh_limits(StrataNode *node, BlockLimits *bl)
{
    BlkdebugState *s = node->opaque;

    if (s->align) {
        bl->request_alignment = (uint32_t)s->align;
    }
    if (s->max_transfer) {
        bl->max_transfer = (int64_t)s->max_transfer;
    }
    if (s->opt_write_zero) {
        bl->pwrite_zeroes_alignment = (uint32_t)s->opt_write_zero;
    }
    if (s->max_write_zero) {
        bl->max_pwrite_zeroes = (int64_t)s->max_write_zero;
    }
    if (s->opt_discard) {
        bl->pdiscard_alignment = (uint32_t)s->opt_discard;
    }
    if (s->max_discard) {
        bl->max_pdiscard = (int64_t)s->max_discard;
    }
}

static void blkdebug_dump_info(StrataNode *node, GString *out)
{
    BlkdebugState *s = node->opaque;
    int rules = 0, active = 0, held = 0;

    for (int i = 0; i < DBG__MAX; i++) {
        for (BlkdebugRule *r = s->rules[i]; r; r = r->next) {
            rules++;
        }
    }
    for (BlkdebugRule *r = s->active; r; r = r->active_next) {
        active++;
    }
    for (BlkdebugRule *r = s->suspended; r; r = r->next) {
        held++;
    }
    g_string_append_printf(out, "blkdebug: state %" PRId64 ", %d rules (%d "
                           "active), %d requests suspended%s%s\n", s->state,
                           rules, active, held,
                           s->config_file ? ", config " : "",
                           s->config_file ? s->config_file : "");
}

const BlockDriver bdrv_blkdebug = {
    .name = "blkdebug",
    .single_queue = true,
    .instance_size = sizeof(BlkdebugState),
    .is_filter = true,
    .child_role = "image",
    .protocol_name = "blkdebug",
    .parse_filename = blkdebug_parse_filename,
    .open = blkdebug_open,
    .close = blkdebug_close,
    .co_preadv = blkdebug_co_preadv,
    .co_pwritev = blkdebug_co_pwritev,
    .co_pwrite_zeroes = blkdebug_co_pwrite_zeroes,
    .co_pdiscard = blkdebug_co_pdiscard,
    .co_flush = blkdebug_co_flush,
    .co_block_status = blkdebug_co_block_status,
    .refresh_limits = blkdebug_refresh_limits,
    .co_debug_event = blkdebug_co_debug_event,
    .dump_info = blkdebug_dump_info,
};

/* ---- breakpoints (block/blkdebug.h) ---------------------------------------------- */

StrataNode *blkdebug_find(StrataNode *root)
{
    if (!root) {
        return NULL;
    }
    if (root->drv == &bdrv_blkdebug) {
        return root;
    }
    for (GSList *l = root->children; l; l = l->next) {
        BlockChild *c = l->data;
        StrataNode *found = blkdebug_find(c->node);
        if (found) {
            return found;
        }
    }
    return NULL;
}

/* The state of the blkdebug node below @node, or NULL with an error. */
static BlkdebugState *blkdebug_state_find(StrataNode *node, StrataError **errp)
{
    StrataNode *bd = blkdebug_find(node);

    if (!bd) {
        error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT,
                  "No blkdebug node at or below node '%s'", node->node_name);
        return NULL;
    }
    return bd->opaque;
}

static BlkdebugRule *blkdebug_find_suspended(BlkdebugState *s, const char *tag)
{
    for (BlkdebugRule *r = s->suspended; r; r = r->next) {
        if (!strcmp(r->tag, tag)) {
            return r;
        }
    }
    return NULL;
}

static bool blkdebug_has_break(BlkdebugState *s, const char *tag)
{
    for (int i = 0; i < DBG__MAX; i++) {
        for (BlkdebugRule *r = s->rules[i]; r; r = r->next) {
            if (r->action == ACTION_SUSPEND && !strcmp(r->tag, tag)) {
                return true;
            }
        }
    }
    return false;
}

/* Let @co run: at once outside coroutines (QEMU's order), else soon. */
static void blkdebug_continue(Coroutine *co)
{
    if (!co) {
        return;
    }
    if (co_in_coroutine()) {
        loop_co_wake(co);
    } else {
        co_enter(co);
    }
}

bool blkdebug_break(StrataNode *node, const char *event, const char *tag,
                    StrataError **errp)
{
    BlkdebugState *s = blkdebug_state_find(node, errp);
    BlkdebugRule *r;
    int ev;

    if (!s) {
        return false;
    }
    ev = blkdebug_event_lookup(event);
    if (ev < 0) {
        g_autofree char *names = blkdebug_event_list();
        error_set_option(errp, "Unknown event '%s' (expected one of %s)",
                         event, names);
        return false;
    }
    r = g_new0(BlkdebugRule, 1);
    r->action = ACTION_SUSPEND;
    r->event = ev;
    r->tag = g_strdup(tag);
    list_append(&s->rules[ev], r);
    return true;
}

bool blkdebug_remove_break(StrataNode *node, const char *tag,
                           StrataError **errp)
{
    BlkdebugState *s = blkdebug_state_find(node, errp);
    GSList *resume = NULL;
    bool found = false;

    if (!s) {
        return false;
    }
    for (int i = 0; i < DBG__MAX; i++) {
        BlkdebugRule **pp = &s->rules[i];
        while (*pp) {
            BlkdebugRule *r = *pp;
            if (r->action == ACTION_SUSPEND && !strcmp(r->tag, tag)) {
                *pp = r->next;
                rule_free(r);
                found = true;
            } else {
                pp = &r->next;
            }
        }
    }
    /* Release first, run afterwards: a request let go here may hit other
     * breakpoints and change the list while it runs. */
    for (BlkdebugRule *r; (r = blkdebug_find_suspended(s, tag));) {
        Coroutine *co = blkdebug_release(s, r);
        if (co) {
            resume = g_slist_append(resume, co);
        }
        found = true;
    }
    /* Waiters for this tag may now wait for nothing: let them re-check. */
    co_queue_restart_all(&s->break_waiters);
    for (GSList *l = resume; l; l = l->next) {
        blkdebug_continue(l->data);
    }
    g_slist_free(resume);
    if (!found) {
        error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT,
                  "No breakpoint and no suspended request with tag '%s'", tag);
    }
    return found;
}

bool blkdebug_resume(StrataNode *node, const char *tag, StrataError **errp)
{
    BlkdebugState *s = blkdebug_state_find(node, errp);
    BlkdebugRule *r;

    if (!s) {
        return false;
    }
    r = blkdebug_find_suspended(s, tag);
    if (!r) {
        error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT,
                  "No request suspended with tag '%s'", tag);
        return false;
    }
    blkdebug_continue(blkdebug_release(s, r));
    return true;
}

bool blkdebug_is_suspended(StrataNode *node, const char *tag)
{
    BlkdebugState *s = blkdebug_state_find(node, NULL);

    return s && blkdebug_find_suspended(s, tag);
}

bool blkdebug_wait_break(StrataNode *node, const char *tag)
{
    StrataNode *bd = blkdebug_find(node);
    BlkdebugState *s;

    g_assert(!co_in_coroutine());
    if (!bd) {
        return false;
    }
    s = bd->opaque;
    while (!blkdebug_find_suspended(s, tag)) {
        if (!blkdebug_has_break(s, tag)) {
            return false;
        }
        loop_run_once(bd->ctx->loop, true);
    }
    return true;
}

bool blkdebug_co_wait_break(StrataNode *node, const char *tag)
{
    BlkdebugState *s = blkdebug_state_find(node, NULL);

    g_assert(co_in_coroutine());
    if (!s) {
        return false;
    }
    while (!blkdebug_find_suspended(s, tag)) {
        if (!blkdebug_has_break(s, tag)) {
            return false;
        }
        co_queue_wait(&s->break_waiters, NULL);
    }
    return true;
}

void blkdebug_set_notify(StrataNode *node, BlkdebugNotify *cb, void *opaque)
{
    BlkdebugState *s = blkdebug_state_find(node, NULL);

    if (s) {
        s->notify = cb;
        s->notify_opaque = opaque;
    }
}

int64_t blkdebug_get_state(StrataNode *node)
{
    BlkdebugState *s = blkdebug_state_find(node, NULL);

    return s ? s->state : -1;
}
