/*
 * Option trees: what options.c and options-json.c share
 * (internal to util/options*.c; SPDX-License-Identifier: MIT)
 *
 * The node layout and the few constructors the JSON conversion needs.
 * Nothing outside util/options*.c includes this: other code goes through
 * util/options.h.  All functions are control path and never fail (GLib
 * aborts on out-of-memory).
 */
#ifndef STRATA_UTIL_OPTIONS_INT_H
#define STRATA_UTIL_OPTIONS_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "util/options.h"

/* Deeper nesting is certainly an error and would only exhaust the stack of
 * the recursive walks in options.c and options-json.c (and of json-glib's
 * own parser). */
#define OPTS_MAX_DEPTH 256

struct OptNode {
    OptType type;
    /* A string from dotted keys (or opts_set_str): getters coerce it. */
    bool from_dotted;
    bool consumed;
    int refcnt;             /* roots only */
    OptNode *parent;        /* weak; NULL for a root */
    char *key;              /* member name in the parent object, else NULL */
    char *path;             /* full key path, "" for a plain root */
    char *text;             /* scalars: the value as text */
    int64_t num;            /* OPT_INT */
    bool boolean;           /* OPT_BOOL */
    GPtrArray *children;    /* OPT_OBJECT members / OPT_LIST elements */
    GHashTable *index;      /* OPT_OBJECT: key → child, for large objects */
};

/* "@parent_path.@component", or @component alone under an empty or NULL
 * path.  (transfer full) */
char *opts_path_join(const char *parent_path, const char *component);

/*
 * A detached node (no parent, refcnt 0) of @type at @path (NULL means "").
 * Objects and lists start empty.  A node that becomes a root needs
 * refcnt set to 1 by the caller.  (transfer full)
 */
OptNode *opts_node_new(OptType type, const char *path);

/* Detached scalars at @path; @value is copied.  @from_dotted marks a
 * string whose getters coerce it to other types. */
OptNode *opts_node_new_str(const char *path, const char *value,
                           bool from_dotted);
OptNode *opts_node_new_int(const char *path, int64_t value);
OptNode *opts_node_new_bool(const char *path, bool value);
OptNode *opts_node_new_null(const char *path);

/*
 * Put @child (a detached node, ownership taken) under @obj (an object) at
 * @key, replacing any member of that name in place so that member order
 * stays stable.  @child's key and paths are set here.
 */
void opts_object_put(OptNode *obj, const char *key, OptNode *child);

/* Append @child (a detached node, ownership taken) to @list (a list),
 * setting its paths. */
void opts_list_append(OptNode *list, OptNode *child);

#endif
