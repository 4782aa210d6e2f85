/* SPDX-License-Identifier: MIT */
/*
 * Option trees: JSON in and out.
 *
 * JSON goes through two passes.  json-glib 1.6 is lenient in ways that
 * would let bad configuration through silently (duplicate keys where the
 * last one wins, integers >= 2^63 wrapping to negative numbers, single
 * quotes, comments, hex numbers, trailing data after the value), so a
 * strict RFC 8259 scanner runs first.  It reports syntax errors with line
 * and column, and duplicates, out-of-range integers and non-integer numbers
 * with the key path.  Only text the scanner accepted reaches JsonParser,
 * whose tree is then converted into OptNodes.
 */
#include <stdarg.h>
#include <string.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include "util/options.h"
#include "util/options-int.h"

/* ---- JSON: strict scanner ----------------------------------------------- */

typedef struct JsonScan {
    const char *text;
    size_t len;
    size_t pos;
    unsigned depth;
    GString *path;          /* key path of the value being scanned */
    StrataError **errp;
    bool any_number;        /* accept fractions and exponents (QMP ids) */
} JsonScan;

static void scan_error(JsonScan *sc, size_t at, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

/* Syntax errors carry a position: line and column (in characters) of @at. */
static void scan_error(JsonScan *sc, size_t at, const char *fmt, ...)
{
    unsigned line = 1, col = 1;
    for (size_t i = 0; i < at && i < sc->len; i++) {
        unsigned char c = (unsigned char)sc->text[i];
        if (c == '\n') {
            line++;
            col = 1;
        } else if ((c & 0xc0) != 0x80) {
            col++;
        }
    }
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_set_option(sc->errp, "JSON syntax error at line %u, column %u: %s",
                     line, col, msg);
}

/* What is at @at, for "unexpected ..." messages. */
static char *scan_describe_at(JsonScan *sc, size_t at)
{
    if (at >= sc->len) {
        return g_strdup("end of input");
    }
    unsigned char c = (unsigned char)sc->text[at];
    if (c >= 0x20 && c < 0x7f) {
        return g_strdup_printf("character '%c'", c);
    }
    if (c < 0x80) {
        return g_strdup_printf("character 0x%02x", c);
    }
    gunichar u = g_utf8_get_char(sc->text + at);
    return g_strdup_printf("character U+%04X", u);
}

static void scan_unexpected(JsonScan *sc, const char *expected)
{
    g_autofree char *what = scan_describe_at(sc, sc->pos);
    scan_error(sc, sc->pos, "unexpected %s, expected %s", what, expected);
}

static const char *scan_path(JsonScan *sc)
{
    return sc->path->len ? sc->path->str : "<root>";
}

static void scan_ws(JsonScan *sc)
{
    while (sc->pos < sc->len) {
        char c = sc->text[sc->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            break;
        }
        sc->pos++;
    }
}

static int scan_hex4(JsonScan *sc, size_t at)
{
    if (at + 4 > sc->len) {
        return -1;
    }
    int val = 0;
    for (int i = 0; i < 4; i++) {
        int d = g_ascii_xdigit_value(sc->text[at + i]);
        if (d < 0) {
            return -1;
        }
        val = val * 16 + d;
    }
    return val;
}

/* A string at sc->pos (the opening quote); its decoded text goes to @out
 * when non-NULL (keys, which are compared for duplicates). */
static bool scan_string(JsonScan *sc, GString *out)
{
    size_t start = sc->pos++;

    for (;;) {
        if (sc->pos >= sc->len) {
            scan_error(sc, start, "unterminated string");
            return false;
        }
        unsigned char c = (unsigned char)sc->text[sc->pos];
        if (c == '"') {
            sc->pos++;
            return true;
        }
        if (c < 0x20) {
            scan_error(sc, sc->pos, "control character 0x%02x in string "
                       "(must be escaped)", c);
            return false;
        }
        if (c != '\\') {
            if (out) {
                g_string_append_c(out, (char)c);
            }
            sc->pos++;
            continue;
        }

        size_t esc = sc->pos;
        char e = esc + 1 < sc->len ? sc->text[esc + 1] : '\0';
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char decoded[] = "\"\\/\b\f\n\r\t";
            if (out) {
                g_string_append_c(out, decoded[simple - "\"\\/bfnrt"]);
            }
            sc->pos += 2;
            continue;
        }
        if (e != 'u') {
            scan_error(sc, esc, "invalid escape sequence in string");
            return false;
        }
        int u = scan_hex4(sc, esc + 2);
        if (u < 0) {
            scan_error(sc, esc, "invalid \\u escape in string");
            return false;
        }
        sc->pos = esc + 6;
        gunichar ch = (gunichar)u;
        if (u >= 0xdc00 && u <= 0xdfff) {
            scan_error(sc, esc, "unpaired surrogate \\u%04x in string", u);
            return false;
        }
        if (u >= 0xd800 && u <= 0xdbff) {
            int lo = -1;
            if (sc->pos + 1 < sc->len && sc->text[sc->pos] == '\\' &&
                sc->text[sc->pos + 1] == 'u') {
                lo = scan_hex4(sc, sc->pos + 2);
            }
            if (lo < 0xdc00 || lo > 0xdfff) {
                scan_error(sc, esc, "unpaired surrogate \\u%04x in string", u);
                return false;
            }
            sc->pos += 6;
            ch = 0x10000 + (((gunichar)u - 0xd800) << 10) +
                 ((gunichar)lo - 0xdc00);
        }
        if (ch == 0) {
            /* json-glib would silently cut the string here. */
            scan_error(sc, esc, "\\u0000 is not supported in strings");
            return false;
        }
        if (out) {
            g_string_append_unichar(out, ch);
        }
    }
}

static bool scan_number(JsonScan *sc)
{
    size_t start = sc->pos;
    bool neg = false;

    if (sc->text[sc->pos] == '-') {
        neg = true;
        sc->pos++;
    }
    size_t digits = sc->pos;
    if (sc->pos >= sc->len || !g_ascii_isdigit(sc->text[sc->pos])) {
        scan_unexpected(sc, "digit");
        return false;
    }
    if (sc->text[sc->pos] == '0') {
        sc->pos++;
    } else {
        while (sc->pos < sc->len && g_ascii_isdigit(sc->text[sc->pos])) {
            sc->pos++;
        }
    }
    size_t ndigits = sc->pos - digits;
    bool is_int = true;

    if (sc->pos < sc->len && sc->text[sc->pos] == '.') {
        is_int = false;
        sc->pos++;
        if (sc->pos >= sc->len || !g_ascii_isdigit(sc->text[sc->pos])) {
            scan_unexpected(sc, "digit");
            return false;
        }
        while (sc->pos < sc->len && g_ascii_isdigit(sc->text[sc->pos])) {
            sc->pos++;
        }
    }
    if (sc->pos < sc->len &&
        (sc->text[sc->pos] == 'e' || sc->text[sc->pos] == 'E')) {
        is_int = false;
        sc->pos++;
        if (sc->pos < sc->len &&
            (sc->text[sc->pos] == '+' || sc->text[sc->pos] == '-')) {
            sc->pos++;
        }
        if (sc->pos >= sc->len || !g_ascii_isdigit(sc->text[sc->pos])) {
            scan_unexpected(sc, "digit");
            return false;
        }
        while (sc->pos < sc->len && g_ascii_isdigit(sc->text[sc->pos])) {
            sc->pos++;
        }
    }

    if (!is_int && sc->any_number) {
        return true;
    }
    if (!is_int) {
        error_set_option(sc->errp, "%s: expected integer, got number %.*s",
                         scan_path(sc), (int)MIN(sc->pos - start, 40),
                         sc->text + start);
        return false;
    }
    /* Digits have no leading zeros here, so comparing them as text against
     * the limit's digits is comparing values. */
    const char *limit = neg ? "9223372036854775808" : "9223372036854775807";
    if (ndigits > 19 ||
        (ndigits == 19 && memcmp(sc->text + digits, limit, 19) > 0)) {
        error_set_option(sc->errp, "%s: integer out of range", scan_path(sc));
        return false;
    }
    return true;
}

static bool scan_value(JsonScan *sc);

static bool scan_object(JsonScan *sc)
{
    g_autoptr(GHashTable) keys = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                       g_free, NULL);
    g_autoptr(GString) key = g_string_new(NULL);
    size_t base = sc->path->len;

    sc->pos++;
    scan_ws(sc);
    if (sc->pos < sc->len && sc->text[sc->pos] == '}') {
        sc->pos++;
        return true;
    }
    for (;;) {
        scan_ws(sc);
        if (sc->pos >= sc->len || sc->text[sc->pos] != '"') {
            scan_unexpected(sc, "member name (a string)");
            return false;
        }
        g_string_truncate(key, 0);
        if (!scan_string(sc, key)) {
            return false;
        }
        if (base) {
            g_string_append_c(sc->path, '.');
        }
        g_string_append_len(sc->path, key->str, key->len);
        if (g_hash_table_contains(keys, key->str)) {
            error_set_option(sc->errp, "%s: duplicate key", sc->path->str);
            return false;
        }
        g_hash_table_add(keys, g_strdup(key->str));

        scan_ws(sc);
        if (sc->pos >= sc->len || sc->text[sc->pos] != ':') {
            scan_unexpected(sc, "':'");
            return false;
        }
        sc->pos++;
        if (!scan_value(sc)) {
            return false;
        }
        g_string_truncate(sc->path, base);

        scan_ws(sc);
        if (sc->pos < sc->len && sc->text[sc->pos] == ',') {
            sc->pos++;
            continue;
        }
        if (sc->pos < sc->len && sc->text[sc->pos] == '}') {
            sc->pos++;
            return true;
        }
        scan_unexpected(sc, "',' or '}'");
        return false;
    }
}

static bool scan_array(JsonScan *sc)
{
    size_t base = sc->path->len;

    sc->pos++;
    scan_ws(sc);
    if (sc->pos < sc->len && sc->text[sc->pos] == ']') {
        sc->pos++;
        return true;
    }
    for (unsigned i = 0;; i++) {
        g_string_append_printf(sc->path, base ? ".%u" : "%u", i);
        if (!scan_value(sc)) {
            return false;
        }
        g_string_truncate(sc->path, base);
        scan_ws(sc);
        if (sc->pos < sc->len && sc->text[sc->pos] == ',') {
            sc->pos++;
            continue;
        }
        if (sc->pos < sc->len && sc->text[sc->pos] == ']') {
            sc->pos++;
            return true;
        }
        scan_unexpected(sc, "',' or ']'");
        return false;
    }
}

static bool scan_literal(JsonScan *sc)
{
    static const char *const words[] = { "true", "false", "null" };
    for (size_t i = 0; i < G_N_ELEMENTS(words); i++) {
        size_t n = strlen(words[i]);
        if (sc->len - sc->pos >= n &&
            memcmp(sc->text + sc->pos, words[i], n) == 0 &&
            (sc->pos + n == sc->len || !g_ascii_isalnum(sc->text[sc->pos + n]))) {
            sc->pos += n;
            return true;
        }
    }
    scan_unexpected(sc, "value");
    return false;
}

static bool scan_value(JsonScan *sc)
{
    scan_ws(sc);
    if (sc->pos >= sc->len) {
        scan_unexpected(sc, "value");
        return false;
    }
    char c = sc->text[sc->pos];
    bool ok;

    switch (c) {
    case '{':
    case '[':
        if (sc->depth >= OPTS_MAX_DEPTH) {
            scan_error(sc, sc->pos, "nesting deeper than %d levels",
                       OPTS_MAX_DEPTH);
            return false;
        }
        sc->depth++;
        ok = c == '{' ? scan_object(sc) : scan_array(sc);
        sc->depth--;
        return ok;
    case '"':
        return scan_string(sc, NULL);
    case '-':
    case '0' ... '9':
        return scan_number(sc);
    default:
        return scan_literal(sc);
    }
}

/* Check @text (valid UTF-8) as a whole JSON document. */
static bool scan_document(const char *text, size_t len, bool any_number,
                          StrataError **errp)
{
    g_autoptr(GString) path = g_string_new(NULL);
    JsonScan sc = {
        .text = text,
        .len = len,
        .path = path,
        .errp = errp,
        .any_number = any_number,
    };

    if (!scan_value(&sc)) {
        return false;
    }
    scan_ws(&sc);
    if (sc.pos < sc.len) {
        scan_unexpected(&sc, "end of input");
        return false;
    }
    return true;
}

/* ---- JSON: conversion ----------------------------------------------------- */

static OptNode *node_from_json(JsonNode *jnode, const char *path)
{
    switch (json_node_get_node_type(jnode)) {
    case JSON_NODE_NULL:
        return opts_node_new_null(path);
    case JSON_NODE_OBJECT: {
        OptNode *obj = opts_node_new(OPT_OBJECT, path);
        JsonObjectIter iter;
        const char *key;
        JsonNode *member;
        json_object_iter_init_ordered(&iter, json_node_get_object(jnode));
        while (json_object_iter_next_ordered(&iter, &key, &member)) {
            g_autofree char *child_path = opts_path_join(path, key);
            opts_object_put(obj, key, node_from_json(member, child_path));
        }
        return obj;
    }
    case JSON_NODE_ARRAY: {
        OptNode *list = opts_node_new(OPT_LIST, path);
        JsonArray *array = json_node_get_array(jnode);
        guint n = json_array_get_length(array);
        for (guint i = 0; i < n; i++) {
            g_autofree char *num = g_strdup_printf("%u", i);
            g_autofree char *child_path = opts_path_join(path, num);
            opts_list_append(list, node_from_json(json_array_get_element(array, i),
                                                  child_path));
        }
        return list;
    }
    case JSON_NODE_VALUE:
        switch (json_node_get_value_type(jnode)) {
        case G_TYPE_BOOLEAN:
            return opts_node_new_bool(path, json_node_get_boolean(jnode));
        case G_TYPE_STRING:
            return opts_node_new_str(path, json_node_get_string(jnode), false);
        case G_TYPE_INT64:
            return opts_node_new_int(path, json_node_get_int(jnode));
        default:
            /* The scanner let through only integers. */
            g_assert_not_reached();
        }
    }
    g_assert_not_reached();
}

static bool check_utf8(const char *text, size_t len, StrataError **errp)
{
    const char *bad;

    if (!g_utf8_validate(text, (gssize)len, &bad)) {
        JsonScan sc = { .text = text, .len = len, .errp = errp };
        scan_error(&sc, (size_t)(bad - text), "invalid UTF-8");
        return false;
    }
    return true;
}

/* Scan strictly, then parse: a new json-glib node, or NULL with *errp. */
static JsonNode *load_json(const char *text, size_t len, bool any_number,
                           StrataError **errp)
{
    if (!scan_document(text, len, any_number, errp)) {
        return NULL;
    }
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) gerr = NULL;
    if (!json_parser_load_from_data(parser, text, (gssize)len, &gerr)) {
        /* Not expected after the scanner, but never trust that silently. */
        error_set_option(errp, "JSON: %s", gerr->message);
        return NULL;
    }
    return json_node_copy(json_parser_get_root(parser));
}

OptNode *opts_parse_json(const char *text, StrataError **errp)
{
    size_t len = strlen(text);

    if (!check_utf8(text, len, errp)) {
        return NULL;
    }

    /* Name the type of a top-level value that is not an object before
     * looking inside it: its keys would be meaningless anyway. */
    const char *p = text;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
        p++;
    }
    const char *what = NULL;
    switch (*p) {
    case '[':
        what = "list";
        break;
    case '"':
        what = "string";
        break;
    case '-':
    case '0' ... '9':
        what = "number";
        break;
    case 't':
    case 'f':
        if (g_str_has_prefix(p, "true") || g_str_has_prefix(p, "false")) {
            what = "boolean";
        }
        break;
    case 'n':
        if (g_str_has_prefix(p, "null")) {
            what = "null";
        }
        break;
    }
    if (what) {
        error_set_option(errp, "JSON top level must be an object, got %s",
                         what);
        return NULL;
    }

    g_autoptr(JsonNode) root = load_json(text, len, false, errp);
    if (!root) {
        return NULL;
    }
    g_assert(JSON_NODE_HOLDS_OBJECT(root));

    OptNode *node = node_from_json(root, "");
    node->refcnt = 1;
    return node;
}

JsonNode *opts_parse_json_value(const char *text, size_t len,
                                StrataError **errp)
{
    return check_utf8(text, len, errp) ? load_json(text, len, true, errp)
                                       : NULL;
}

/* ---- output --------------------------------------------------------------- */

static JsonNode *node_to_json(const OptNode *node)
{
    switch (node->type) {
    case OPT_NULL:
        return json_node_init_null(json_node_alloc());
    case OPT_BOOL:
        return json_node_init_boolean(json_node_alloc(), node->boolean);
    case OPT_INT:
        return json_node_init_int(json_node_alloc(), node->num);
    case OPT_STRING:
        return json_node_init_string(json_node_alloc(), node->text);
    case OPT_OBJECT: {
        JsonObject *obj = json_object_new();
        for (guint i = 0; i < node->children->len; i++) {
            OptNode *child = g_ptr_array_index(node->children, i);
            json_object_set_member(obj, child->key, node_to_json(child));
        }
        JsonNode *jnode = json_node_init_object(json_node_alloc(), obj);
        json_object_unref(obj);
        return jnode;
    }
    case OPT_LIST: {
        JsonArray *array = json_array_sized_new(node->children->len);
        for (guint i = 0; i < node->children->len; i++) {
            json_array_add_element(array,
                node_to_json(g_ptr_array_index(node->children, i)));
        }
        JsonNode *jnode = json_node_init_array(json_node_alloc(), array);
        json_array_unref(array);
        return jnode;
    }
    }
    g_assert_not_reached();
}

char *opts_to_json(const OptNode *node, bool pretty)
{
    JsonNode *root = node_to_json(node);
    g_autoptr(JsonGenerator) gen = json_generator_new();
    json_generator_set_pretty(gen, pretty);
    json_generator_set_root(gen, root);
    char *text = json_generator_to_data(gen, NULL);
    json_node_unref(root);
    return text;
}
