/*
 * Option trees (SPDX-License-Identifier: MIT)
 *
 * One tree type for configuration, whatever its source:
 *   - JSON text (json-glib parses it; duplicate keys and integers outside
 *     int64 are rejected here, naming the key),
 *   - QEMU-style dotted keys: "driver=raw,file.driver=file,file.filename=x.img,
 *     inject-error.0.event=read_aio" (values are strings; ",," escapes a
 *     comma; numeric path components make lists),
 *   - "json:{...}" pseudo-filenames (block_options_add_filename() in
 *     block/filename.c, with the other QEMU-era filename forms).
 * Scalars from dotted keys are strings and are converted by the typed
 * getters ("on"/"off"/"true"/"false" for booleans, decimal/hex integers,
 * sizes with k/M/G/T suffixes); JSON scalars must have the right type,
 * except that getters of sizes and integers also accept JSON strings in
 * the dotted syntax.
 *
 * Every node knows its full key path ("file.cache.direct") and every error
 * names it: "file.aio: expected one of threads, native, io_uring, auto".
 * Getters mark keys consumed; opts_check_consumed() then reports the first
 * unknown key ("file.foo: unknown option").
 *
 * Ownership: a tree is refcounted as a whole through its root.  Getters
 * return borrowed pointers valid while the root lives.
 */
#ifndef STRATA_UTIL_OPTIONS_H
#define STRATA_UTIL_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "util/error.h"

typedef enum OptType {
    OPT_NULL,
    OPT_BOOL,
    OPT_INT,
    OPT_STRING,
    OPT_OBJECT,
    OPT_LIST,
} OptType;

typedef struct OptNode OptNode;

/* ---- parsing and building -------------------------------------------- */

OptNode *opts_parse_json(const char *text, StrataError **errp);
OptNode *opts_parse_dotted(const char *text, StrataError **errp);
/* Any JSON value, checked as strictly as opts_parse_json() checks (UTF-8,
 * syntax with positions, duplicate keys, nesting) except that numbers may
 * have fractions and exponents: for protocols that carry values through
 * verbatim (a QMP command's id).  @text need not be NUL-terminated.
 * Returns a new json-glib node (json_node_unref). */
typedef struct _JsonNode JsonNode;
JsonNode *opts_parse_json_value(const char *text, size_t len,
                                StrataError **errp);

OptNode *opts_new_object(void);
/* Either accepts any node of a tree and acts on the tree's root, so a
 * reference taken through a borrowed subtree keeps the whole tree alive.
 * opts_unref(NULL) is a no-op. */
OptNode *opts_ref(OptNode *root);
void opts_unref(OptNode *root);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(OptNode, opts_unref)

/* Deep copy of @node as a new root (paths restart from @node's path).
 * Nothing in the copy is marked consumed. */
OptNode *opts_clone(const OptNode *node);

/*
 * Set a scalar at a dotted key path under @obj, creating intermediate
 * objects ("cache.direct").  Replaces an existing value.  Returns false
 * (with an error naming the path) if an intermediate component exists and
 * is not an object.
 */
bool opts_set_str(OptNode *obj, const char *dotted_key, const char *value,
                  StrataError **errp);
bool opts_set_int(OptNode *obj, const char *dotted_key, int64_t value,
                  StrataError **errp);
bool opts_set_bool(OptNode *obj, const char *dotted_key, bool value,
                   StrataError **errp);
/* Strings set with opts_set_str/opts_set_default_str are converted by the
 * getters like dotted-key values ("on", "4k").  Existing list elements can
 * be reached with numeric components ("rules.1.errno"); lists are never
 * created or extended here. */
/* Set @dotted_key only when it is not present yet. */
bool opts_set_default_str(OptNode *obj, const char *dotted_key,
                          const char *value, StrataError **errp);
/* Move @take_child (a root) under @obj at @key (not dotted), replacing any
 * member of that name; its paths are rewritten.  If other references to
 * @take_child exist, a copy is stored and the caller's reference dropped. */
void opts_set_child(OptNode *obj, const char *key, OptNode *take_child);
/* Remove @key (not dotted) from @obj; true if it was there. */
bool opts_remove(OptNode *obj, const char *key);

/* ---- inspection ------------------------------------------------------ */

OptType opts_type(const OptNode *node);
/* Full key path of @node ("" for a root unless it was given one). */
const char *opts_path(const OptNode *node);
/* "file.aio": the full path of member @key of object @opts, for messages
 * (newly allocated). */
char *opts_key_path(const OptNode *opts, const char *key);
/* Type name for messages: "boolean", "integer", "string", "object", ... */
const char *opts_type_name(OptType t);

/* Member look-up without marking it consumed; NULL when absent, or when
 * @obj is NULL or not an object. */
OptNode *opts_peek(const OptNode *obj, const char *key);
bool opts_has(const OptNode *obj, const char *key);
/* Member look-up that marks the key consumed. */
OptNode *opts_get(OptNode *obj, const char *key);

/* Objects: members in insertion order. */
guint opts_object_size(const OptNode *obj);
/* @i-th member's key and value (borrowed), 0 <= i < size. */
const char *opts_object_key(const OptNode *obj, guint i);
OptNode *opts_object_value(const OptNode *obj, guint i);
/* Lists. */
guint opts_list_length(const OptNode *list);
OptNode *opts_list_get(const OptNode *list, guint i);

/* Scalar value of a node as a string for messages and re-serialisation
 * ("true", "42", the string itself). */
const char *opts_scalar_str(const OptNode *node);

/* ---- typed getters ----------------------------------------------------
 * Each looks up @key in @obj and marks it consumed.  When the key is
 * absent *out = @def and the getter returns true.  When it is present with
 * a wrong type or value the getter returns false and sets an error naming
 * the full path and what was expected.
 * A @key with dots that is not itself a member is followed as a path
 * ("cache.direct"), marking each component consumed.  A NULL @obj reads
 * as an empty object; a non-object @obj is an error naming it.
 */
bool opts_get_str(OptNode *obj, const char *key, const char *def,
                  const char **out, StrataError **errp);
bool opts_get_bool(OptNode *obj, const char *key, bool def, bool *out,
                   StrataError **errp);
bool opts_get_int(OptNode *obj, const char *key, int64_t def, int64_t *out,
                  StrataError **errp);
/* Non-negative size in bytes; dotted/string form accepts k, M, G, T, P, E
 * suffixes (powers of 1024) and hex. */
bool opts_get_size(OptNode *obj, const char *key, uint64_t def, uint64_t *out,
                   StrataError **errp);
/* One of @names (NULL-terminated); *out is its index. */
bool opts_get_enum(OptNode *obj, const char *key, const char *const *names,
                   int def, int *out, StrataError **errp);

/* Required forms: absent is an error ("file.filename: missing"). */
bool opts_require_str(OptNode *obj, const char *key, const char **out,
                      StrataError **errp);

/* Mark every member of @node (recursively) consumed. */
void opts_mark_consumed(OptNode *node);
/* First member under @node (recursively) never consumed: error
 * "<path>: unknown option" (returns false). */
bool opts_check_consumed(const OptNode *node, StrataError **errp);

/* ---- output ---------------------------------------------------------- */

/* JSON text of @node (newly allocated; @pretty adds indentation). */
char *opts_to_json(const OptNode *node, bool pretty);

/* Parse a size with optional suffix ("4k", "1M", "0x1000"); for tools.
 * false on garbage or overflow. */
bool parse_size(const char *s, uint64_t *out);

#endif
