/*
 * The option schema of block nodes, and its validator
 * SPDX-License-Identifier: MIT
 *
 * qapi/block.json describes every option a node takes: the common members
 * (driver, node-name, read-only, cache, ...) and each driver's own.
 * scripts/qapi-gen.py turns it into the constant tables declared in the
 * generated "qapi/qapi-schema.h" (types below) and into docs/options.md, so
 * validation, error messages and documentation share one source.
 *
 * The generated header also gives C code the schema's values by name:
 *   - QAPI_<SECTION>_<MEMBER>_<VALUE> enum constants and
 *     qapi_enum_<section>_<member>[] NULL-terminated value lists for
 *     opts_get_enum() (e.g. QAPI_FILE_AIO_IO_URING, qapi_enum_file_aio);
 *   - QAPI_<SECTION>_<MEMBER>_DEFAULT for members with a default
 *     (e.g. QAPI_NULL_SIZE_DEFAULT), nested names joined with '_'
 *     (QAPI_COMMON_CACHE_DIRECT_DEFAULT).
 * <SECTION> is COMMON or the driver name, upper-cased, '-' → '_'.
 *
 * Everything here is control path: call it from the thread that owns the
 * option tree.  Tables are immutable and may be read from any thread.
 */
#ifndef STRATA_QAPI_SCHEMA_H
#define STRATA_QAPI_SCHEMA_H

#include <stdbool.h>
#include <stdint.h>
#include "util/error.h"
#include "util/options.h"

typedef enum SchemaType {
    SCHEMA_TYPE_BOOL,
    SCHEMA_TYPE_INT,        /* int64_t */
    SCHEMA_TYPE_SIZE,       /* uint64_t bytes; dotted keys take suffixes */
    SCHEMA_TYPE_STRING,
    SCHEMA_TYPE_ENUM,       /* one of @values; C code uses the index */
    SCHEMA_TYPE_OBJECT,     /* nested object with @members */
    SCHEMA_TYPE_LIST,       /* list of objects with @members */
    SCHEMA_TYPE_CHILD,      /* a node: inline options object or node-name */
    SCHEMA_TYPE_ANY,        /* any JSON value (QMP arguments the command
                               checks itself) */
} SchemaType;

typedef struct SchemaMember SchemaMember;

/*
 * One option.  A member list is an array ended by an entry whose @name is
 * NULL.
 *
 * Defaults (when @has_default), by type:
 *   bool   default_int is 0 or 1
 *   int    default_int
 *   size   default_size
 *   enum   default_int is the index into @values
 *   string default_str
 * @default_text is what docs/options.md shows in its Default column
 * ("auto", "1G", "0 (none)", "the image's"); NULL when the member is
 * required, or optional with nothing to say.
 */
struct SchemaMember {
    const char *name;
    SchemaType type;
    bool required;
    bool has_default;
    int64_t default_int;
    uint64_t default_size;
    const char *default_str;
    const char *default_text;
    const char *const *values;          /* enum: NULL-terminated; size:
                                           keywords it also takes, or NULL */
    bool has_min, has_max;              /* int and size: inclusive bounds */
    int64_t min, max;                   /* sizes: both >= 0 */
    bool power_of_2;                    /* size: must be a power of two */
    const SchemaMember *members;        /* object and list */
    const char *doc;
};

typedef struct SchemaDriver {
    const char *name;                   /* NULL ends the driver list */
    const char *const *aliases;         /* NULL-terminated, never NULL */
    const SchemaMember *members;        /* the driver's own, not common */
    const char *doc;
} SchemaDriver;

/* The driver schema called @name or having it as an alias; NULL if none. */
const SchemaDriver *schema_find_driver(const char *name);

/* Members every node takes (driver, node-name, read-only, cache, ...). */
const SchemaMember *schema_common_members(void);

/* All driver schemas, ended by an entry whose name is NULL. */
const SchemaDriver *schema_drivers(void);

/* Driver names in schema order, ", "-separated, aliases left out, for
 * messages such as "unknown driver 'nul'; expected one of file, raw, ...".
 * Newly allocated (g_free). */
char *schema_driver_names(void);

/* The member called @name in @members (no aliasing, no dotted paths);
 * NULL if none. */
const SchemaMember *schema_find_member(const SchemaMember *members,
                                       const char *name);

/*
 * Check the options of one node: every member of @opts must be a common
 * member or one of @drv's, with a value of the member's type (values from
 * dotted keys are strings and pass when they convert, as the typed getters
 * of util/options.h convert them), within its bounds, and required members
 * must be present.  Objects and lists of objects are checked recursively;
 * members of type child are only checked to be an object or a string: the
 * child's own open validates its options.
 *
 * Marks consumed what it checked (a child's key, not the child's members),
 * so opts_check_consumed() after the driver's open reports only keys nobody
 * looked at.
 *
 * Errors (class STRATA_ERROR_INVALID_OPTION) name the key path:
 *   "file.aoi: unknown option (did you mean 'aio'?)"
 *   "read-only: expected boolean"   (also integer, size, string, object,
 *                                     list, "object or string" for a child)
 *   "file.aio: expected one of threads, native, io_uring, auto"
 *   "latency-ns: must be at least 0", "max-iov: must be at most 1024"
 *   "align: must be a power of two"
 *   "file.filename: missing"
 * The first problem found is reported: unknown keys and bad values in the
 * order of @opts, then missing required members in schema order.
 */
bool schema_validate_node(OptNode *opts, const SchemaDriver *drv,
                          StrataError **errp);

/* The same check against one member list, for an object that is not a
 * whole node (a reopen's changes, a nested object). */
bool schema_validate_members(OptNode *obj, const SchemaMember *members,
                             StrataError **errp);

/* As schema_validate_members(), but required members may be absent: for
 * change sets that only name what changes (node_reopen's @changes). */
bool schema_validate_partial(OptNode *obj, const SchemaMember *members,
                             StrataError **errp);

/* As schema_validate_node(), but required members may be absent: for a
 * reopen's changes to one node (its common and driver options). */
bool schema_validate_node_partial(OptNode *opts, const SchemaDriver *drv,
                                  StrataError **errp);

#endif
