/* SPDX-License-Identifier: MIT */
/*
 * Option trees: one node type for JSON and dotted-key configuration.
 *
 * A tree is a set of OptNode structs linked parent → children.  Only the
 * root carries a meaningful reference count; children are owned by their
 * parent and freed with it.  Every node caches its full key path so that an
 * error raised anywhere can name the option without walking back up.
 *
 * This file holds the nodes, the typed getters and dotted keys; JSON in
 * and out lives in options-json.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <glib.h>
#include "util/options.h"
#include "util/options-int.h"

/* Objects switch from a linear scan to a hash table past this size. */
#define OPTS_INDEX_THRESHOLD 8

/* Values quoted in error messages are cut to this many bytes. */
#define OPTS_QUOTE_MAX 64

/* ---- nodes -------------------------------------------------------------- */

char *opts_path_join(const char *parent_path, const char *component)
{
    if (!parent_path || !parent_path[0]) {
        return g_strdup(component);
    }
    return g_strconcat(parent_path, ".", component, NULL);
}

/* Name of @node for messages: a root without a path has no name. */
static const char *node_label(const OptNode *node)
{
    return node->path[0] ? node->path : "<root>";
}

OptNode *opts_node_new(OptType type, const char *path)
{
    OptNode *node = g_new0(OptNode, 1);
    node->type = type;
    node->path = g_strdup(path ? path : "");
    if (type == OPT_OBJECT || type == OPT_LIST) {
        node->children = g_ptr_array_new();
    }
    return node;
}

OptNode *opts_node_new_str(const char *path, const char *value,
                           bool from_dotted)
{
    OptNode *node = opts_node_new(OPT_STRING, path);
    node->text = g_strdup(value);
    node->from_dotted = from_dotted;
    return node;
}

OptNode *opts_node_new_int(const char *path, int64_t value)
{
    OptNode *node = opts_node_new(OPT_INT, path);
    node->num = value;
    node->text = g_strdup_printf("%" PRId64, value);
    return node;
}

OptNode *opts_node_new_bool(const char *path, bool value)
{
    OptNode *node = opts_node_new(OPT_BOOL, path);
    node->boolean = value;
    node->text = g_strdup(value ? "true" : "false");
    return node;
}

OptNode *opts_node_new_null(const char *path)
{
    OptNode *node = opts_node_new(OPT_NULL, path);
    node->text = g_strdup("null");
    return node;
}

static void node_free(OptNode *node)
{
    if (!node) {
        return;
    }
    if (node->children) {
        for (guint i = 0; i < node->children->len; i++) {
            node_free(g_ptr_array_index(node->children, i));
        }
        g_ptr_array_unref(node->children);
    }
    if (node->index) {
        g_hash_table_unref(node->index);
    }
    g_free(node->key);
    g_free(node->path);
    g_free(node->text);
    g_free(node);
}

/* Recompute the paths under @node after it moved to @path. */
static void node_set_path(OptNode *node, const char *path)
{
    g_free(node->path);
    node->path = g_strdup(path);
    if (!node->children) {
        return;
    }
    for (guint i = 0; i < node->children->len; i++) {
        OptNode *child = g_ptr_array_index(node->children, i);
        g_autofree char *num = NULL;
        const char *comp = child->key;
        if (node->type == OPT_LIST) {
            num = g_strdup_printf("%u", i);
            comp = num;
        }
        g_autofree char *child_path = opts_path_join(path, comp);
        node_set_path(child, child_path);
    }
}

static int object_find_pos(const OptNode *obj, const char *key)
{
    for (guint i = 0; i < obj->children->len; i++) {
        OptNode *child = g_ptr_array_index(obj->children, i);
        if (strcmp(child->key, key) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static OptNode *object_lookup(const OptNode *obj, const char *key)
{
    if (obj->index) {
        return g_hash_table_lookup(obj->index, key);
    }
    int pos = object_find_pos(obj, key);
    return pos < 0 ? NULL : g_ptr_array_index(obj->children, pos);
}

static void object_index_add(OptNode *obj, OptNode *child)
{
    if (obj->index) {
        g_hash_table_replace(obj->index, child->key, child);
        return;
    }
    if (obj->children->len > OPTS_INDEX_THRESHOLD) {
        /* Keys are borrowed from the children, which outlive the index. */
        obj->index = g_hash_table_new(g_str_hash, g_str_equal);
        for (guint i = 0; i < obj->children->len; i++) {
            OptNode *c = g_ptr_array_index(obj->children, i);
            g_hash_table_replace(obj->index, c->key, c);
        }
    }
}

/*
 * Put @child (a detached node) under @obj at @key, replacing any member of
 * that name in place so that member order stays stable.  @child's key and
 * paths are set here.
 */
void opts_object_put(OptNode *obj, const char *key, OptNode *child)
{
    g_assert(obj->type == OPT_OBJECT);
    g_assert(!child->parent);

    g_free(child->key);
    child->key = g_strdup(key);
    child->parent = obj;
    g_autofree char *path = opts_path_join(obj->path, key);
    if (strcmp(child->path, path) != 0) {
        node_set_path(child, path);
    }

    /* Only a replacement pays for the linear search of its position. */
    int pos = object_lookup(obj, key) ? object_find_pos(obj, key) : -1;
    if (pos >= 0) {
        OptNode *old = g_ptr_array_index(obj->children, pos);
        obj->children->pdata[pos] = child;
        if (obj->index) {
            /* Drop the entry first: its key belongs to @old. */
            g_hash_table_remove(obj->index, key);
            g_hash_table_replace(obj->index, child->key, child);
        }
        node_free(old);
        return;
    }
    g_ptr_array_add(obj->children, child);
    object_index_add(obj, child);
}

void opts_list_append(OptNode *list, OptNode *child)
{
    g_assert(list->type == OPT_LIST);
    g_autofree char *num = g_strdup_printf("%u", list->children->len);
    g_autofree char *path = opts_path_join(list->path, num);
    child->parent = list;
    if (strcmp(child->path, path) != 0) {
        node_set_path(child, path);
    }
    g_ptr_array_add(list->children, child);
}

static OptNode *node_root(OptNode *node)
{
    while (node->parent) {
        node = node->parent;
    }
    return node;
}

/* "string 'abc'", "integer 42", "boolean true", "null", "object", "list". */
static char *node_describe(const OptNode *node)
{
    switch (node->type) {
    case OPT_STRING: {
        size_t len = strlen(node->text);
        if (len > OPTS_QUOTE_MAX) {
            /* Cut on a character boundary so the message stays UTF-8. */
            const char *end = g_utf8_find_prev_char(node->text,
                                                    node->text + OPTS_QUOTE_MAX + 1);
            return g_strdup_printf("string '%.*s...'",
                                   (int)(end - node->text), node->text);
        }
        return g_strdup_printf("string '%s'", node->text);
    }
    case OPT_INT:
    case OPT_BOOL:
        return g_strdup_printf("%s %s", opts_type_name(node->type), node->text);
    default:
        return g_strdup(opts_type_name(node->type));
    }
}

static void set_type_error(StrataError **errp, const OptNode *node,
                           const char *expected)
{
    g_autofree char *desc = node_describe(node);
    error_set_option(errp, "%s: expected %s, got %s", node_label(node),
                     expected, desc);
}

/* ---- public node API ---------------------------------------------------- */

OptNode *opts_new_object(void)
{
    OptNode *node = opts_node_new(OPT_OBJECT, "");
    node->refcnt = 1;
    return node;
}

/* A reference on any node of a tree is a reference on its root: drivers
 * holding a subtree keep the whole tree alive, which is what they need
 * since paths and parents stay meaningful. */
OptNode *opts_ref(OptNode *root)
{
    g_atomic_int_inc(&node_root(root)->refcnt);
    return root;
}

void opts_unref(OptNode *root)
{
    if (!root) {
        return;
    }
    root = node_root(root);
    g_assert(root->refcnt > 0);
    if (g_atomic_int_dec_and_test(&root->refcnt)) {
        node_free(root);
    }
}

static OptNode *node_clone(const OptNode *node)
{
    OptNode *copy = opts_node_new(node->type, node->path);
    copy->from_dotted = node->from_dotted;
    copy->key = g_strdup(node->key);
    copy->text = g_strdup(node->text);
    copy->num = node->num;
    copy->boolean = node->boolean;
    if (node->children) {
        for (guint i = 0; i < node->children->len; i++) {
            OptNode *child = node_clone(g_ptr_array_index(node->children, i));
            child->parent = copy;
            g_ptr_array_add(copy->children, child);
            if (copy->type == OPT_OBJECT) {
                object_index_add(copy, child);
            }
        }
    }
    return copy;
}

/* The copy starts with nothing consumed: a clone is made to be handed to
 * another consumer, which checks its own use of the keys. */
OptNode *opts_clone(const OptNode *node)
{
    OptNode *copy = node_clone(node);
    g_clear_pointer(&copy->key, g_free);
    copy->refcnt = 1;
    return copy;
}

void opts_set_child(OptNode *obj, const char *key, OptNode *take_child)
{
    g_assert(obj->type == OPT_OBJECT);
    g_assert(!take_child->parent);
    g_assert(take_child->refcnt > 0);

    OptNode *child = take_child;
    if (g_atomic_int_get(&take_child->refcnt) > 1) {
        /* Someone else still holds the tree: give them their own copy. */
        child = opts_clone(take_child);
        opts_unref(take_child);
    }
    child->refcnt = 0;
    opts_object_put(obj, key, child);
}

bool opts_remove(OptNode *obj, const char *key)
{
    if (!obj || obj->type != OPT_OBJECT) {
        return false;
    }
    int pos = object_find_pos(obj, key);
    if (pos < 0) {
        return false;
    }
    OptNode *child = g_ptr_array_index(obj->children, pos);
    if (obj->index) {
        g_hash_table_remove(obj->index, key);
    }
    g_ptr_array_remove_index(obj->children, pos);
    node_free(child);
    return true;
}

OptType opts_type(const OptNode *node)
{
    return node->type;
}

const char *opts_path(const OptNode *node)
{
    return node->path;
}

char *opts_key_path(const OptNode *opts, const char *key)
{
    const char *path = opts_path(opts);

    return *path ? g_strdup_printf("%s.%s", path, key) : g_strdup(key);
}

const char *opts_type_name(OptType t)
{
    switch (t) {
    case OPT_NULL:
        return "null";
    case OPT_BOOL:
        return "boolean";
    case OPT_INT:
        return "integer";
    case OPT_STRING:
        return "string";
    case OPT_OBJECT:
        return "object";
    case OPT_LIST:
        return "list";
    }
    return "unknown";
}

OptNode *opts_peek(const OptNode *obj, const char *key)
{
    if (!obj || obj->type != OPT_OBJECT) {
        return NULL;
    }
    return object_lookup(obj, key);
}

bool opts_has(const OptNode *obj, const char *key)
{
    return opts_peek(obj, key) != NULL;
}

OptNode *opts_get(OptNode *obj, const char *key)
{
    OptNode *child = opts_peek(obj, key);
    if (child) {
        child->consumed = true;
    }
    return child;
}

guint opts_object_size(const OptNode *obj)
{
    return obj && obj->type == OPT_OBJECT ? obj->children->len : 0;
}

const char *opts_object_key(const OptNode *obj, guint i)
{
    g_assert(obj->type == OPT_OBJECT && i < obj->children->len);
    return ((OptNode *)g_ptr_array_index(obj->children, i))->key;
}

OptNode *opts_object_value(const OptNode *obj, guint i)
{
    g_assert(obj->type == OPT_OBJECT && i < obj->children->len);
    return g_ptr_array_index(obj->children, i);
}

guint opts_list_length(const OptNode *list)
{
    return list && list->type == OPT_LIST ? list->children->len : 0;
}

OptNode *opts_list_get(const OptNode *list, guint i)
{
    g_assert(list->type == OPT_LIST && i < list->children->len);
    return g_ptr_array_index(list->children, i);
}

const char *opts_scalar_str(const OptNode *node)
{
    return node->text;
}

/* ---- setting by dotted path ---------------------------------------------- */

/*
 * Find the object that should hold the last component of @dotted_key under
 * @obj, creating missing intermediate objects.  *last gets the last
 * component (pointing into *parts, which the caller frees).  Intermediate
 * list elements are reached by index but never created.
 */
static OptNode *set_walk(OptNode *obj, const char *dotted_key, char ***parts,
                         const char **last, StrataError **errp)
{
    g_autofree char *full = opts_path_join(obj->path, dotted_key);

    if (obj->type != OPT_OBJECT) {
        set_type_error(errp, obj, "object");
        return NULL;
    }
    *parts = g_strsplit(dotted_key, ".", -1);
    guint n = g_strv_length(*parts);
    for (guint i = 0; i < n; i++) {
        if (!(*parts)[i][0]) {
            error_set_option(errp, "%s: empty key component", full);
            return NULL;
        }
    }
    if (!g_utf8_validate(dotted_key, -1, NULL)) {
        error_set_option(errp, "%s: key is not valid UTF-8", full);
        return NULL;
    }

    OptNode *cur = obj;
    for (guint i = 0; i + 1 < n; i++) {
        const char *comp = (*parts)[i];
        OptNode *next;
        if (cur->type == OPT_LIST) {
            char *end;
            guint64 idx = g_ascii_strtoull(comp, &end, 10);
            if (*end || !g_ascii_isdigit(comp[0]) || idx >= cur->children->len) {
                g_autofree char *p = opts_path_join(cur->path, comp);
                error_set_option(errp, "%s: no such list element", p);
                return NULL;
            }
            next = g_ptr_array_index(cur->children, idx);
        } else {
            next = object_lookup(cur, comp);
            if (!next) {
                next = opts_node_new(OPT_OBJECT, NULL);
                opts_object_put(cur, comp, next);
            }
        }
        if (next->type != OPT_OBJECT && next->type != OPT_LIST) {
            set_type_error(errp, next, "object");
            return NULL;
        }
        cur = next;
    }
    if (cur->type != OPT_OBJECT) {
        set_type_error(errp, cur, "object");
        return NULL;
    }
    *last = (*parts)[n - 1];
    return cur;
}

/* Take @take_value (a detached node), freeing it on failure. */
static bool set_value(OptNode *obj, const char *dotted_key, OptNode *take_value,
                      bool only_if_absent, StrataError **errp)
{
    g_auto(GStrv) parts = NULL;
    const char *last = NULL;
    OptNode *parent = set_walk(obj, dotted_key, &parts, &last, errp);
    if (!parent) {
        node_free(take_value);
        return false;
    }
    if (only_if_absent && object_lookup(parent, last)) {
        node_free(take_value);
        return true;
    }
    opts_object_put(parent, last, take_value);
    return true;
}

bool opts_set_str(OptNode *obj, const char *dotted_key, const char *value,
                  StrataError **errp)
{
    if (!g_utf8_validate(value, -1, NULL)) {
        g_autofree char *full = opts_path_join(obj->path, dotted_key);
        error_set_option(errp, "%s: value is not valid UTF-8", full);
        return false;
    }
    /* Text set by code stands for what a user would have typed, so it is
     * converted like dotted-key values. */
    return set_value(obj, dotted_key, opts_node_new_str(NULL, value, true), false,
                     errp);
}

bool opts_set_int(OptNode *obj, const char *dotted_key, int64_t value,
                  StrataError **errp)
{
    return set_value(obj, dotted_key, opts_node_new_int(NULL, value), false, errp);
}

bool opts_set_bool(OptNode *obj, const char *dotted_key, bool value,
                   StrataError **errp)
{
    return set_value(obj, dotted_key, opts_node_new_bool(NULL, value), false, errp);
}

bool opts_set_default_str(OptNode *obj, const char *dotted_key,
                          const char *value, StrataError **errp)
{
    if (!g_utf8_validate(value, -1, NULL)) {
        g_autofree char *full = opts_path_join(obj->path, dotted_key);
        error_set_option(errp, "%s: value is not valid UTF-8", full);
        return false;
    }
    return set_value(obj, dotted_key, opts_node_new_str(NULL, value, true), true,
                     errp);
}

/* ---- number parsing ----------------------------------------------------- */

typedef enum NumResult {
    NUM_OK,
    NUM_INVALID,
    NUM_RANGE,
} NumResult;

/* Unsigned digits in base 10 or 16, the whole of [s, end). */
static NumResult parse_digits(const char *s, const char *end, unsigned base,
                              uint64_t *out)
{
    uint64_t val = 0;
    bool range = false;

    if (s == end) {
        return NUM_INVALID;
    }
    for (; s < end; s++) {
        int d = base == 16 ? g_ascii_xdigit_value(*s) : g_ascii_digit_value(*s);
        if (d < 0) {
            return NUM_INVALID;
        }
        if (!range && (val > (UINT64_MAX - (uint64_t)d) / base)) {
            range = true;
        }
        val = val * base + (uint64_t)d;
    }
    *out = val;
    return range ? NUM_RANGE : NUM_OK;
}

/* Decimal or 0x hex, optionally negative; no spaces, no trailing text.
 * Leading zeros are decimal, never octal. */
static NumResult parse_int64(const char *s, int64_t *out)
{
    bool neg = false;
    uint64_t mag;

    if (*s == '-') {
        neg = true;
        s++;
    }
    const char *end = s + strlen(s);
    NumResult r;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        r = parse_digits(s + 2, end, 16, &mag);
    } else {
        r = parse_digits(s, end, 10, &mag);
    }
    if (r != NUM_OK) {
        return r;
    }
    if (neg) {
        if (mag > (uint64_t)INT64_MAX + 1) {
            return NUM_RANGE;
        }
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        if (mag > INT64_MAX) {
            return NUM_RANGE;
        }
        *out = (int64_t)mag;
    }
    return NUM_OK;
}

static uint64_t gcd_u64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/*
 * Sizes: "0x1000" (hex, no suffix, since hex digits would swallow B and E),
 * or decimal digits with an optional fraction and an optional suffix from
 * B, K, M, G, T, P, E (either case, powers of 1024).  A fraction must give
 * a whole number of bytes ("1.5k" is fine, "1.3k" is not).
 */
static NumResult parse_size_value(const char *s, uint64_t *out)
{
    static const char suffixes[] = "BKMGTPE";

    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        return parse_digits(s + 2, s + strlen(s), 16, out);
    }

    const char *p = s;
    while (g_ascii_isdigit(*p)) {
        p++;
    }
    const char *int_end = p;
    const char *frac = NULL, *frac_end = NULL;
    if (*p == '.') {
        frac = ++p;
        while (g_ascii_isdigit(*p)) {
            p++;
        }
        frac_end = p;
        if (frac == frac_end) {
            return NUM_INVALID;
        }
    }
    unsigned shift = 0;
    if (*p) {
        const char *suf = strchr(suffixes, g_ascii_toupper(*p));
        if (!suf || p[1]) {
            return NUM_INVALID;
        }
        shift = 10 * (unsigned)(suf - suffixes);
    }

    uint64_t ip;
    NumResult r = parse_digits(s, int_end, 10, &ip);
    if (r != NUM_OK) {
        return r;
    }
    uint64_t mult = UINT64_C(1) << shift;
    uint64_t total;
    if (g_uint64_checked_mul(&total, ip, mult) == FALSE) {
        return NUM_RANGE;
    }
    if (frac) {
        /* 18 digits keep the numerator and 10^n within 64 bits. */
        if (frac_end - frac > 18) {
            return NUM_INVALID;
        }
        uint64_t num = 0, den = 1;
        parse_digits(frac, frac_end, 10, &num);
        for (const char *q = frac; q < frac_end; q++) {
            den *= 10;
        }
        /* num/den * mult is whole iff num is a multiple of den / gcd. */
        uint64_t g = gcd_u64(mult, den);
        den /= g;
        if (num % den) {
            return NUM_INVALID;
        }
        /* Less than @mult, so this cannot overflow. */
        uint64_t part = num / den * (mult / g);
        if (g_uint64_checked_add(&total, total, part) == FALSE) {
            return NUM_RANGE;
        }
    }
    *out = total;
    return NUM_OK;
}

bool parse_size(const char *s, uint64_t *out)
{
    uint64_t val;
    if (!s || parse_size_value(s, &val) != NUM_OK) {
        return false;
    }
    *out = val;
    return true;
}

/* ---- typed getters ------------------------------------------------------ */

/*
 * Resolve @key under @obj for a typed getter, marking what it finds
 * consumed.  A key with dots that is not a member itself is looked up as a
 * path ("cache.direct"), so drivers can read nested options directly.
 * *out is NULL when the key is absent (or @obj is NULL).
 */
static bool getter_lookup(OptNode *obj, const char *key, OptNode **out,
                          StrataError **errp)
{
    *out = NULL;
    if (!obj) {
        return true;
    }
    if (obj->type != OPT_OBJECT) {
        set_type_error(errp, obj, "object");
        return false;
    }
    OptNode *node = opts_get(obj, key);
    if (node || !strchr(key, '.')) {
        *out = node;
        return true;
    }

    g_auto(GStrv) parts = g_strsplit(key, ".", -1);
    OptNode *cur = obj;
    for (guint i = 0; parts[i]; i++) {
        if (cur->type == OPT_LIST) {
            char *end;
            guint64 idx = g_ascii_strtoull(parts[i], &end, 10);
            if (*end || !g_ascii_isdigit(parts[i][0]) ||
                idx >= cur->children->len) {
                return true;
            }
            cur = g_ptr_array_index(cur->children, idx);
            cur->consumed = true;
        } else if (cur->type == OPT_OBJECT) {
            cur = opts_get(cur, parts[i]);
            if (!cur) {
                return true;
            }
        } else {
            set_type_error(errp, cur, "object");
            return false;
        }
    }
    *out = cur;
    return true;
}

bool opts_get_str(OptNode *obj, const char *key, const char *def,
                  const char **out, StrataError **errp)
{
    OptNode *node;
    if (!getter_lookup(obj, key, &node, errp)) {
        return false;
    }
    if (!node) {
        *out = def;
        return true;
    }
    if (node->type != OPT_STRING) {
        set_type_error(errp, node, "string");
        return false;
    }
    *out = node->text;
    return true;
}

bool opts_require_str(OptNode *obj, const char *key, const char **out,
                      StrataError **errp)
{
    OptNode *node;
    if (!getter_lookup(obj, key, &node, errp)) {
        return false;
    }
    if (!node) {
        g_autofree char *path = opts_path_join(obj ? obj->path : "", key);
        error_set_option(errp, "%s: missing", path);
        return false;
    }
    if (node->type != OPT_STRING) {
        set_type_error(errp, node, "string");
        return false;
    }
    *out = node->text;
    return true;
}

bool opts_get_bool(OptNode *obj, const char *key, bool def, bool *out,
                   StrataError **errp)
{
    static const char *const yes[] = { "on", "true", "yes", NULL };
    static const char *const no[] = { "off", "false", "no", NULL };
    OptNode *node;

    if (!getter_lookup(obj, key, &node, errp)) {
        return false;
    }
    if (!node) {
        *out = def;
        return true;
    }
    if (node->type == OPT_BOOL) {
        *out = node->boolean;
        return true;
    }
    if (node->type == OPT_STRING && node->from_dotted) {
        if (g_strv_contains(yes, node->text)) {
            *out = true;
            return true;
        }
        if (g_strv_contains(no, node->text)) {
            *out = false;
            return true;
        }
    }
    set_type_error(errp, node, "boolean");
    return false;
}

bool opts_get_int(OptNode *obj, const char *key, int64_t def, int64_t *out,
                  StrataError **errp)
{
    OptNode *node;
    if (!getter_lookup(obj, key, &node, errp)) {
        return false;
    }
    if (!node) {
        *out = def;
        return true;
    }
    if (node->type == OPT_INT) {
        *out = node->num;
        return true;
    }
    if (node->type == OPT_STRING) {
        int64_t val;
        switch (parse_int64(node->text, &val)) {
        case NUM_OK:
            *out = val;
            return true;
        case NUM_RANGE: {
            g_autofree char *desc = node_describe(node);
            error_set_option(errp, "%s: integer out of range, got %s",
                             node_label(node), desc);
            return false;
        }
        case NUM_INVALID:
            break;
        }
    }
    set_type_error(errp, node, "integer");
    return false;
}

bool opts_get_size(OptNode *obj, const char *key, uint64_t def, uint64_t *out,
                   StrataError **errp)
{
    OptNode *node;
    if (!getter_lookup(obj, key, &node, errp)) {
        return false;
    }
    if (!node) {
        *out = def;
        return true;
    }
    if (node->type == OPT_INT) {
        if (node->num < 0) {
            error_set_option(errp, "%s: size must not be negative, got %s",
                             node_label(node), node->text);
            return false;
        }
        *out = (uint64_t)node->num;
        return true;
    }
    if (node->type == OPT_STRING) {
        uint64_t val;
        switch (parse_size_value(node->text, &val)) {
        case NUM_OK:
            *out = val;
            return true;
        case NUM_RANGE: {
            g_autofree char *desc = node_describe(node);
            error_set_option(errp, "%s: size out of range, got %s",
                             node_label(node), desc);
            return false;
        }
        case NUM_INVALID:
            break;
        }
    }
    set_type_error(errp, node, "size");
    return false;
}

bool opts_get_enum(OptNode *obj, const char *key, const char *const *names,
                   int def, int *out, StrataError **errp)
{
    OptNode *node;
    if (!getter_lookup(obj, key, &node, errp)) {
        return false;
    }
    if (!node) {
        *out = def;
        return true;
    }
    if (node->type == OPT_STRING) {
        for (int i = 0; names[i]; i++) {
            if (strcmp(names[i], node->text) == 0) {
                *out = i;
                return true;
            }
        }
    }
    g_autofree char *choices = g_strjoinv(", ", (char **)names);
    error_set_option(errp, "%s: expected one of %s", node_label(node),
                     choices);
    return false;
}

/* ---- consumption -------------------------------------------------------- */

void opts_mark_consumed(OptNode *node)
{
    node->consumed = true;
    if (!node->children) {
        return;
    }
    for (guint i = 0; i < node->children->len; i++) {
        opts_mark_consumed(g_ptr_array_index(node->children, i));
    }
}

/*
 * Members of objects must each have been consumed.  List elements have no
 * key of their own: reading the list covers them, but members of object
 * elements still count individually.  Recursion stops at an unconsumed
 * member, so the outermost unknown key is the one reported.
 */
bool opts_check_consumed(const OptNode *node, StrataError **errp)
{
    if (!node->children) {
        return true;
    }
    for (guint i = 0; i < node->children->len; i++) {
        OptNode *child = g_ptr_array_index(node->children, i);
        if (node->type == OPT_OBJECT && !child->consumed) {
            error_set_option(errp, "%s: unknown option", child->path);
            return false;
        }
        if (!opts_check_consumed(child, errp)) {
            return false;
        }
    }
    return true;
}

/* ---- dotted keys ---------------------------------------------------------- */

/* Canonical list index: "0" or digits without a leading zero. */
static bool is_index(const char *s)
{
    if (!g_ascii_isdigit(s[0])) {
        return false;
    }
    for (const char *p = s; *p; p++) {
        if (!g_ascii_isdigit(*p)) {
            return false;
        }
    }
    return true;
}

static const char dotted_conflict[] = "used both as a value and as an object";

/* Insert one key=value pair into @root, building objects for each dotted
 * component.  Lists are made afterwards by dotted_listify(). */
static bool dotted_insert(OptNode *root, const char *key, const char *value,
                          StrataError **errp)
{
    g_auto(GStrv) parts = g_strsplit(key, ".", -1);
    guint n = g_strv_length(parts);

    if (n > OPTS_MAX_DEPTH) {
        error_set_option(errp, "%s: nesting deeper than %d levels", key,
                         OPTS_MAX_DEPTH);
        return false;
    }
    for (guint i = 0; i < n; i++) {
        if (!parts[i][0]) {
            error_set_option(errp, "%s: empty key component", key);
            return false;
        }
    }
    if (!g_utf8_validate(key, -1, NULL)) {
        error_set_option(errp, "%s: key is not valid UTF-8", key);
        return false;
    }
    if (!g_utf8_validate(value, -1, NULL)) {
        error_set_option(errp, "%s: value is not valid UTF-8", key);
        return false;
    }

    OptNode *cur = root;
    for (guint i = 0; i + 1 < n; i++) {
        OptNode *next = object_lookup(cur, parts[i]);
        if (!next) {
            next = opts_node_new(OPT_OBJECT, NULL);
            opts_object_put(cur, parts[i], next);
        } else if (next->type != OPT_OBJECT) {
            error_set_option(errp, "%s: %s", next->path, dotted_conflict);
            return false;
        }
        cur = next;
    }
    OptNode *old = object_lookup(cur, parts[n - 1]);
    if (old) {
        if (old->type == OPT_OBJECT) {
            error_set_option(errp, "%s: %s", old->path, dotted_conflict);
        } else {
            error_set_option(errp, "%s: duplicate key", old->path);
        }
        return false;
    }
    opts_object_put(cur, parts[n - 1], opts_node_new_str(NULL, value, true));
    return true;
}

static int compare_index(gconstpointer a, gconstpointer b)
{
    const OptNode *x = *(OptNode *const *)a;
    const OptNode *y = *(OptNode *const *)b;
    size_t lx = strlen(x->key), ly = strlen(y->key);
    /* Canonical indices: shorter is smaller, equal lengths compare as text. */
    if (lx != ly) {
        return lx < ly ? -1 : 1;
    }
    return strcmp(x->key, y->key);
}

/* Turn every object whose keys are all list indices into a list. */
static bool dotted_listify(OptNode *node, StrataError **errp)
{
    if (node->type != OPT_OBJECT) {
        return true;
    }
    guint n = node->children->len;
    guint nindex = 0;
    OptNode *first_key = NULL, *first_index = NULL;

    for (guint i = 0; i < n; i++) {
        OptNode *child = g_ptr_array_index(node->children, i);
        if (!dotted_listify(child, errp)) {
            return false;
        }
        if (g_ascii_isdigit(child->key[0])) {
            nindex++;
            if (!first_index) {
                first_index = child;
            }
        } else if (!first_key) {
            first_key = child;
        }
    }
    if (!nindex) {
        return true;
    }
    if (!node->parent) {
        error_set_option(errp, "%s: list index at top level",
                         first_index->path);
        return false;
    }
    if (first_key) {
        error_set_option(errp, "%s: mixes list indices (%s) and keys (%s)",
                         node->path, first_index->key, first_key->key);
        return false;
    }
    for (guint i = 0; i < n; i++) {
        OptNode *child = g_ptr_array_index(node->children, i);
        if (!is_index(child->key) ||
            (child->key[0] == '0' && child->key[1])) {
            error_set_option(errp, "%s: invalid list index", child->path);
            return false;
        }
    }

    g_ptr_array_sort(node->children, compare_index);
    for (guint i = 0; i < n; i++) {
        OptNode *child = g_ptr_array_index(node->children, i);
        g_autofree char *want = g_strdup_printf("%u", i);
        if (strcmp(child->key, want) != 0) {
            error_set_option(errp, "%s: list indices must be contiguous from "
                             "0, missing %s", node->path, want);
            return false;
        }
    }
    /* Paths already read "list.N": only the keys and the index go. */
    for (guint i = 0; i < n; i++) {
        OptNode *child = g_ptr_array_index(node->children, i);
        g_clear_pointer(&child->key, g_free);
    }
    g_clear_pointer(&node->index, g_hash_table_unref);
    node->type = OPT_LIST;
    return true;
}

OptNode *opts_parse_dotted(const char *text, StrataError **errp)
{
    g_autoptr(OptNode) root = opts_new_object();
    g_autoptr(GString) value = g_string_new(NULL);
    const char *p = text;

    while (*p) {
        const char *frag = p;
        const char *eq = p;
        while (*eq && *eq != '=' && *eq != ',') {
            eq++;
        }
        if (eq == frag) {
            /* Name the whole fragment, up to the first lone comma. */
            const char *end = frag;
            while (*end && (*end != ',' || end[1] == ',')) {
                end += *end == ',' ? 2 : 1;
            }
            error_set_option(errp, "%.*s: empty key", (int)(end - frag), frag);
            return NULL;
        }
        if (*eq != '=') {
            error_set_option(errp, "%.*s: missing '=' after key",
                             (int)(eq - frag), frag);
            return NULL;
        }
        g_autofree char *key = g_strndup(frag, (gsize)(eq - frag));

        /* The value runs to the first lone comma; ",," is a literal comma. */
        g_string_truncate(value, 0);
        p = eq + 1;
        for (;;) {
            if (*p == ',' && p[1] == ',') {
                g_string_append_c(value, ',');
                p += 2;
            } else if (*p == ',' || !*p) {
                break;
            } else {
                g_string_append_c(value, *p++);
            }
        }
        if (!dotted_insert(root, key, value->str, errp)) {
            return NULL;
        }
        if (*p == ',') {
            /* A single trailing comma is tolerated, as in QEMU. */
            p++;
        }
    }

    if (!dotted_listify(root, errp)) {
        return NULL;
    }
    return g_steal_pointer(&root);
}
