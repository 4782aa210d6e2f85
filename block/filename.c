/*
 * Legacy filenames: protocol prefixes and json: in plain filenames
 * SPDX-License-Identifier: MIT
 *
 * Scripts written for qemu-io name images with strings such as
 *
 *   disk.img                      a file (or, for a device node, host_device)
 *   file:disk.img                 the same, prefix spelled out
 *   blkdebug:rules.conf:disk.img  blkdebug with a rules file over disk.img
 *   blkdebug::disk.img            blkdebug without rules
 *   null-co://                    the null driver
 *   nbd:unix:/run/s.sock          an NBD export (and nbd://, nbd+unix://)
 *   json:{"driver": ...}          a whole option tree
 *
 * QEMU parses these when it opens an image from a filename; so does
 * Strata, here, so that every tool and embedder gets the same rules.  The
 * prefix is what comes before the first ':' when no '/' comes earlier
 * ("./a:b" is a path); it names a driver by its protocol_name, and the
 * driver's parse_filename hook turns the rest into options.  A format
 * driver (raw) passes the filename on to its primary child, as QEMU opens
 * the "file" child of a format from the same filename.  Options the user
 * gave explicitly (strata-io's open -o) are already in the tree and win:
 * the filename only fills in what is missing.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "block/block-int.h"
#include "qapi/schema.h"

const char *block_probe_protocol(const char *path)
{
    struct stat st;

    /* As QEMU's protocol probing: a device node is for host_device, what
     * cannot be looked at is left to the file driver to report. */
    if (stat(path, &st) == 0 && (S_ISBLK(st.st_mode) || S_ISCHR(st.st_mode))) {
        return "host_device";
    }
    return "file";
}

/* The protocol prefix of @filename (newly allocated), or NULL if it is a
 * path: a ':' before any '/'. */
static char *filename_prefix(const char *filename)
{
    size_t n = strcspn(filename, ":/");

    return filename[n] == ':' ? g_strndup(filename, n) : NULL;
}

static const BlockDriver *driver_by_protocol(const char *prefix)
{
    for (const BlockDriver *const *d = block_driver_list(); *d; d++) {
        if ((*d)->protocol_name && !strcmp((*d)->protocol_name, prefix)) {
            return *d;
        }
        for (const char *const *a = (*d)->protocol_aliases; a && *a; a++) {
            if (!strcmp(*a, prefix)) {
                return *d;
            }
        }
    }
    return NULL;
}

static bool driver_takes_filename(const BlockDriver *drv)
{
    const SchemaDriver *sd = schema_find_driver(drv->schema ? drv->schema
                                                            : drv->name);

    return sd && schema_find_member(sd->members, "filename");
}

bool block_parse_protocol_filename(OptNode *opts, const char *filename,
                                   StrataError **errp)
{
    const char *name = NULL;
    const BlockDriver *drv;
    OptNode *d = opts_peek(opts, "driver");

    if (opts_type(opts) != OPT_OBJECT) {
        error_set_option(errp, "%s: expected an object to take the file name "
                         "'%s'", opts_path(opts), filename);
        return false;
    }
    if (opts_has(opts, "filename")) {
        /* QEMU's words for a filename given twice. */
        error_set_option(errp, "Can't specify 'file' and 'filename' options "
                         "at the same time");
        return false;
    }
    if (d && opts_type(d) != OPT_STRING) {
        error_set_option(errp, "%s: expected string", opts_path(d));
        return false;
    }
    if (d) {
        name = opts_scalar_str(d);
        drv = block_driver_find(name);
    } else {
        g_autofree char *prefix = filename_prefix(filename);

        if (prefix) {
            drv = driver_by_protocol(prefix);
            if (!drv) {
                error_set(errp, STRATA_ERROR_NOT_FOUND, ENOENT,
                          "Unknown protocol '%s'", prefix);
                return false;
            }
        } else {
            drv = block_driver_find(block_probe_protocol(filename));
        }
        name = drv ? drv->name : NULL;
        if (name && !opts_set_str(opts, "driver", name, errp)) {
            return false;
        }
    }
    if (!drv) {
        /* An unknown driver name: block_open() reports it with the list
         * of drivers; the filename stays for it to see. */
        return opts_set_str(opts, "filename", filename, errp);
    }
    if (drv->parse_filename) {
        return drv->parse_filename(filename, opts, errp);
    }
    if (!driver_takes_filename(drv)) {
        error_set_option(errp, "Driver '%s' does not take a file name (got "
                         "'%s')", drv->name, filename);
        return false;
    }
    return opts_set_str(opts, "filename", filename, errp);
}

/* Copy the members of @src that @dst lacks into @dst, objects member by
 * member: what @dst has wins. */
static void opts_merge_under(OptNode *dst, const OptNode *src)
{
    for (guint i = 0; i < opts_object_size(src); i++) {
        const char *key = opts_object_key(src, i);
        OptNode *val = opts_object_value(src, i);
        OptNode *old = opts_peek(dst, key);

        if (!old) {
            opts_set_child(dst, key, opts_clone(val));
        } else if (opts_type(old) == OPT_OBJECT && opts_type(val) == OPT_OBJECT) {
            opts_merge_under(old, val);
        }
    }
}

bool block_options_add_filename(OptNode *opts, const char *filename,
                                const char *default_driver, StrataError **errp)
{
    if (g_str_has_prefix(filename, "json:")) {
        g_autoptr(OptNode) tree = opts_parse_json(filename + strlen("json:"),
                                                  errp);
        if (!tree) {
            return false;
        }
        if (opts_type(tree) != OPT_OBJECT) {
            error_set_option(errp, "json: filename: expected an object");
            return false;
        }
        opts_merge_under(opts, tree);
        if (default_driver) {
            return opts_set_default_str(opts, "driver", default_driver, errp);
        }
        return true;
    }
    if (default_driver &&
        !opts_set_default_str(opts, "driver", default_driver, errp)) {
        return false;
    }

    OptNode *d = opts_peek(opts, "driver");
    const BlockDriver *drv = d && opts_type(d) == OPT_STRING
                             ? block_driver_find(opts_scalar_str(d)) : NULL;
    /* A filter that reads no filename of its own (align; blkdebug has its
     * "blkdebug:" syntax) passes it to its child as a format does. */
    bool to_child = drv && drv->child_role &&
                    (drv->is_format || (drv->is_filter && !drv->parse_filename));
    if (!to_child) {
        return block_parse_protocol_filename(opts, filename, errp);
    }

    /* A format keeps its data in its primary child, which the filename
     * names; child options given with -o (file.align=4k) are there
     * already. */
    OptNode *child = opts_peek(opts, drv->child_role);
    if (!child) {
        opts_set_child(opts, drv->child_role, opts_new_object());
        child = opts_peek(opts, drv->child_role);
    } else if (opts_type(child) != OPT_OBJECT) {
        error_set_option(errp, "Can't specify 'file' and 'filename' options "
                         "at the same time");
        return false;
    }
    return block_parse_protocol_filename(child, filename, errp);
}
