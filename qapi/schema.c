/*
 * Option validation against the schema tables generated from qapi/block.json
 * SPDX-License-Identifier: MIT
 *
 * The validator checks shape and values only; meaning (does the named child
 * exist, is blkdebug's event name known, is max-transfer a multiple of
 * align) stays with the graph and the drivers, which read the same options
 * again through the typed getters.  It reports its own messages rather
 * than the getters' so that every option error has the one form the schema
 * documents ("<path>: expected <type>").
 */
#include <string.h>
#include <glib.h>

#include "qapi/schema.h"
#include "qapi/qapi-schema.h"

/* A node's members come from two lists: common, then the driver's. */
#define MAX_MEMBER_LISTS 2

typedef struct MemberLists {
    const SchemaMember *list[MAX_MEMBER_LISTS];
    int n;
    bool partial;           /* required members may be absent */
} MemberLists;

const SchemaMember *schema_common_members(void)
{
    return qapi_common_members;
}

const SchemaDriver *schema_drivers(void)
{
    return qapi_drivers;
}

const SchemaDriver *schema_find_driver(const char *name)
{
    if (!name) {
        return NULL;
    }
    for (const SchemaDriver *drv = qapi_drivers; drv->name; drv++) {
        if (!strcmp(drv->name, name)) {
            return drv;
        }
        for (const char *const *a = drv->aliases; *a; a++) {
            if (!strcmp(*a, name)) {
                return drv;
            }
        }
    }
    return NULL;
}

char *schema_driver_names(void)
{
    GString *s = g_string_new(NULL);
    for (const SchemaDriver *drv = qapi_drivers; drv->name; drv++) {
        g_string_append_printf(s, "%s%s", s->len ? ", " : "", drv->name);
    }
    return g_string_free(s, FALSE);
}

const SchemaMember *schema_find_member(const SchemaMember *members,
                                       const char *name)
{
    for (const SchemaMember *m = members; m && m->name; m++) {
        if (!strcmp(m->name, name)) {
            return m;
        }
    }
    return NULL;
}

static const SchemaMember *lists_find(const MemberLists *ml, const char *name)
{
    for (int i = 0; i < ml->n; i++) {
        const SchemaMember *m = schema_find_member(ml->list[i], name);
        if (m) {
            return m;
        }
    }
    return NULL;
}

/* ---- near misses ---------------------------------------------------------- */

/*
 * Edit distance with adjacent transpositions ("aoi" is one edit from
 * "aio"), treating '_' and '-' as the same character: QEMU itself mixes
 * them (blkdebug's new_state beside inject-error), so users mix them too.
 */
static int key_char(char c)
{
    return c == '_' ? '-' : g_ascii_tolower(c);
}

static size_t key_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    /* Three rows suffice for the transposition case. */
    g_autofree size_t *rows = g_new(size_t, 3 * (lb + 1));
    size_t *prev2 = rows, *prev = rows + lb + 1, *cur = rows + 2 * (lb + 1);

    for (size_t j = 0; j <= lb; j++) {
        prev[j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = key_char(a[i - 1]) != key_char(b[j - 1]);
            size_t d = MIN(prev[j] + 1, cur[j - 1] + 1);
            d = MIN(d, prev[j - 1] + cost);
            if (i > 1 && j > 1 &&
                key_char(a[i - 1]) == key_char(b[j - 2]) &&
                key_char(a[i - 2]) == key_char(b[j - 1])) {
                d = MIN(d, prev2[j - 2] + 1);
            }
            cur[j] = d;
        }
        size_t *t = prev2;
        prev2 = prev;
        prev = cur;
        cur = t;
    }
    return prev[lb];
}

/* The member name closest to @key, if close enough to be a typo: one edit
 * for short keys, two from five characters on. */
static const char *lists_near_miss(const MemberLists *ml, const char *key)
{
    size_t limit = strlen(key) >= 5 ? 2 : 1;
    size_t best_d = limit + 1;
    const char *best = NULL;

    for (int i = 0; i < ml->n; i++) {
        for (const SchemaMember *m = ml->list[i]; m->name; m++) {
            size_t d = key_distance(key, m->name);
            if (d < best_d) {
                best_d = d;
                best = m->name;
            }
        }
    }
    return best;
}

/* ---- values ------------------------------------------------------------------- */

static char *member_path(const OptNode *obj, const char *key)
{
    const char *base = opts_path(obj);
    return base && *base ? g_strconcat(base, ".", key, NULL) : g_strdup(key);
}

/* A root node's path is empty; messages still need a subject. */
static const char *display_path(const OptNode *node)
{
    const char *path = opts_path(node);
    return path && *path ? path : "options";
}

static char *enum_values_str(const char *const *values)
{
    return g_strjoinv(", ", (char **)values);
}

static bool check_int_bounds(const SchemaMember *m, const char *path,
                             int64_t v, StrataError **errp)
{
    if (m->has_min && v < m->min) {
        error_set_option(errp, "%s: must be at least %" G_GINT64_FORMAT,
                         path, m->min);
        return false;
    }
    if (m->has_max && v > m->max) {
        error_set_option(errp, "%s: must be at most %" G_GINT64_FORMAT,
                         path, m->max);
        return false;
    }
    return true;
}

static bool check_size(const SchemaMember *m, const char *path, uint64_t v,
                       StrataError **errp)
{
    /* The generator keeps size bounds within 0..INT64_MAX. */
    if (m->has_min && v < (uint64_t)m->min) {
        error_set_option(errp, "%s: must be at least %" G_GINT64_FORMAT,
                         path, m->min);
        return false;
    }
    if (m->has_max && v > (uint64_t)m->max) {
        error_set_option(errp, "%s: must be at most %" G_GINT64_FORMAT,
                         path, m->max);
        return false;
    }
    if (m->power_of_2 && (v == 0 || (v & (v - 1)))) {
        error_set_option(errp, "%s: must be a power of two", path);
        return false;
    }
    return true;
}

static bool validate_lists(OptNode *obj, const MemberLists *ml,
                           StrataError **errp);

static bool validate_list(OptNode *list, const SchemaMember *m,
                          StrataError **errp)
{
    /* A change set names whole lists: their elements are complete. */
    MemberLists elem_ml = { .list = { m->members }, .n = 1 };
    guint len = opts_list_length(list);

    for (guint i = 0; i < len; i++) {
        OptNode *elem = opts_list_get(list, i);
        if (opts_type(elem) != OPT_OBJECT) {
            error_set_option(errp, "%s: expected object", opts_path(elem));
            return false;
        }
        if (!validate_lists(elem, &elem_ml, errp)) {
            return false;
        }
    }
    /* List elements carry no key of their own: checking each member
     * consumed everything opts_check_consumed() looks at. */
    return true;
}

/* Check @obj's member @key, whose value is @val and whose schema is @m;
 * mark it consumed. */
static bool validate_value(OptNode *obj, const char *key, OptNode *val,
                           const SchemaMember *m, bool partial,
                           StrataError **errp)
{
    const char *path = opts_path(val);

    switch (m->type) {
    case SCHEMA_TYPE_BOOL: {
        bool b;
        if (!opts_get_bool(obj, key, false, &b, NULL)) {
            error_set_option(errp, "%s: expected boolean", path);
            return false;
        }
        return true;
    }
    case SCHEMA_TYPE_INT: {
        int64_t v;
        if (!opts_get_int(obj, key, 0, &v, NULL)) {
            error_set_option(errp, "%s: expected integer", path);
            return false;
        }
        return check_int_bounds(m, path, v, errp);
    }
    case SCHEMA_TYPE_SIZE: {
        uint64_t v;
        int idx;
        if (m->values && opts_get_enum(obj, key, m->values, 0, &idx, NULL)) {
            return true;        /* one of the keywords */
        }
        if (!opts_get_size(obj, key, 0, &v, NULL)) {
            if (m->values) {
                g_autofree char *values = enum_values_str(m->values);
                error_set_option(errp, "%s: expected size or one of %s", path,
                                 values);
            } else {
                error_set_option(errp, "%s: expected size", path);
            }
            return false;
        }
        return check_size(m, path, v, errp);
    }
    case SCHEMA_TYPE_STRING: {
        const char *s;
        if (!opts_get_str(obj, key, NULL, &s, NULL)) {
            error_set_option(errp, "%s: expected string", path);
            return false;
        }
        return true;
    }
    case SCHEMA_TYPE_ENUM: {
        int idx;
        if (!opts_get_enum(obj, key, m->values, 0, &idx, NULL)) {
            g_autofree char *values = enum_values_str(m->values);
            error_set_option(errp, "%s: expected one of %s", path, values);
            return false;
        }
        return true;
    }
    case SCHEMA_TYPE_OBJECT: {
        if (opts_type(val) != OPT_OBJECT) {
            error_set_option(errp, "%s: expected object", path);
            return false;
        }
        opts_get(obj, key);
        MemberLists sub = {
            .list = { m->members }, .n = 1, .partial = partial,
        };
        return validate_lists(val, &sub, errp);
    }
    case SCHEMA_TYPE_LIST:
        if (opts_type(val) != OPT_LIST) {
            error_set_option(errp, "%s: expected list", path);
            return false;
        }
        opts_get(obj, key);
        return validate_list(val, m, errp);
    case SCHEMA_TYPE_CHILD:
        /* The child's members belong to the child's driver: its own open
         * validates them, so only the key is marked here. */
        if (opts_type(val) != OPT_OBJECT && opts_type(val) != OPT_STRING) {
            error_set_option(errp, "%s: expected object or string", path);
            return false;
        }
        opts_get(obj, key);
        return true;
    case SCHEMA_TYPE_ANY:
        opts_mark_consumed(val);
        opts_get(obj, key);
        return true;
    }
    g_assert_not_reached();
}

static bool validate_lists(OptNode *obj, const MemberLists *ml,
                           StrataError **errp)
{
    guint n = opts_object_size(obj);

    for (guint i = 0; i < n; i++) {
        const char *key = opts_object_key(obj, i);
        OptNode *val = opts_object_value(obj, i);
        const SchemaMember *m = lists_find(ml, key);

        if (!m) {
            const char *hint = lists_near_miss(ml, key);
            if (hint) {
                error_set_option(errp, "%s: unknown option (did you mean "
                                 "'%s'?)", opts_path(val), hint);
            } else {
                error_set_option(errp, "%s: unknown option", opts_path(val));
            }
            return false;
        }
        if (!validate_value(obj, key, val, m, ml->partial, errp)) {
            return false;
        }
    }

    for (int i = 0; i < ml->n && !ml->partial; i++) {
        for (const SchemaMember *m = ml->list[i]; m->name; m++) {
            if (m->required && !opts_has(obj, m->name)) {
                g_autofree char *path = member_path(obj, m->name);
                error_set_option(errp, "%s: missing", path);
                return false;
            }
        }
    }
    return true;
}

static bool validate_object(OptNode *obj, const MemberLists *ml,
                            StrataError **errp)
{
    if (opts_type(obj) != OPT_OBJECT) {
        error_set_option(errp, "%s: expected object", display_path(obj));
        return false;
    }
    return validate_lists(obj, ml, errp);
}

bool schema_validate_members(OptNode *obj, const SchemaMember *members,
                             StrataError **errp)
{
    MemberLists ml = { .list = { members }, .n = 1 };
    return validate_object(obj, &ml, errp);
}

bool schema_validate_partial(OptNode *obj, const SchemaMember *members,
                             StrataError **errp)
{
    MemberLists ml = { .list = { members }, .n = 1, .partial = true };
    return validate_object(obj, &ml, errp);
}

bool schema_validate_node_partial(OptNode *opts, const SchemaDriver *drv,
                                  StrataError **errp)
{
    MemberLists ml = {
        .list = { qapi_common_members, drv->members },
        .n = 2,
        .partial = true,
    };
    return validate_object(opts, &ml, errp);
}

bool schema_validate_node(OptNode *opts, const SchemaDriver *drv,
                          StrataError **errp)
{
    MemberLists ml = {
        .list = { qapi_common_members, drv->members },
        .n = 2,
    };
    return validate_object(opts, &ml, errp);
}
