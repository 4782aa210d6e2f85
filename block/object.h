/*
 * User-creatable objects: secrets, I/O threads, TLS credentials
 * SPDX-License-Identifier: MIT
 *
 * QEMU's --object / object-add / object-del, for the types a storage
 * daemon needs.  Objects live in one process-wide registry keyed by id
 * (QEMU's /objects container); drivers and exports look them up by id and
 * mark themselves as users so that object_del() refuses to remove an
 * object in use.
 *
 * Types and their properties (the schema is qapi/qmp.json, section
 * "objects"; QEMU 7.2's names):
 *   secret          data | file, format=raw|base64 (default raw);
 *                   keyid/iv (encrypted secrets) are refused clearly
 *   iothread        poll-max-ns, poll-grow, poll-shrink, aio-max-batch:
 *                   a thread running its own StrataContext's loop
 *   tls-creds-x509  dir, endpoint=client|server (default client),
 *                   verify-peer (default true), priority, sanity-check
 *                   (default true), passwordid: GnuTLS certificate
 *                   credentials loaded from the directory's ca-cert.pem
 *                   (+ ca-crl.pem), server-cert.pem/server-key.pem or
 *                   client-cert.pem/client-key.pem, dh-params.pem (QEMU's
 *                   file names)
 *   tls-creds-psk   dir, endpoint, verify-peer, priority, username (client;
 *                   default "qemu"): GnuTLS PSK credentials from the
 *                   directory's keys.psk ("username:hexkey" lines)
 *   throttle-group  limits.{iops,bps}-{total,read,write}[-max[-length]],
 *                   limits.iops-size: I/O limits shared by the throttle
 *                   filter nodes naming the group (block/throttle-group.h)
 * Everything is loaded and checked by object_add(): a missing file, a bad
 * key or certificate fails there, not at the first connection.
 * docs/objects.md is the user's reference.
 *
 * Control path: the registry is guarded by a mutex and may be used from
 * any thread; objects are created and deleted from the daemon's main
 * thread.
 */
#ifndef STRATA_BLOCK_OBJECT_H
#define STRATA_BLOCK_OBJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "util/error.h"
#include "util/options.h"

typedef struct StrataObject StrataObject;

typedef enum ObjectKind {
    OBJECT_SECRET,
    OBJECT_IOTHREAD,
    OBJECT_TLS_CREDS_X509,
    OBJECT_TLS_CREDS_PSK,
    OBJECT_THROTTLE_GROUP,
    OBJECT_KIND__MAX,
} ObjectKind;

/* QOM type names, indexed by ObjectKind ("secret", "iothread", ...). */
extern const char *const object_kind_names[];

/*
 * Create an object from @opts: "qom-type", "id" and the type's properties
 * at the top level (object-add's flat form, --object's dotted or JSON
 * form).  Errors (class INVALID_OPTION unless noted) name the property:
 *   "qom-type: unknown object type 'foo' (expected one of ...)"
 *   "id: missing", "id: 'x y' is not a valid object id (...)" (QEMU's id
 *   rules: a letter first, then letters, digits, '-', '.', '_')
 *   "attempt to add duplicate property 's0' to object (type 'container')"
 *   (QEMU's wording for a duplicate id)
 *   "foo: unknown option", "poll-max-ns: must be in range [0, ...], got -1"
 * or, once the properties are valid, the object and the file:
 *   "secret 's0': file '/x': No such file or directory" (NOT_FOUND)
 *   "tls-creds-x509 't0': unable to access credentials /d/ca-cert.pem:
 *   No such file or directory" (NOT_FOUND)
 * Nothing is registered on failure.  Everything is loaded here (files
 * read, keys decrypted, certificates checked, the iothread started).
 * Control path, in the daemon's main thread.
 */
bool object_add(OptNode *opts, StrataError **errp);

/* Remove an object.  Fails with "object 'x' not found" (NOT_FOUND) or,
 * while users hold it, "object 'x' is in use by <user>" (PERMISSION),
 * naming the oldest user.  An iothread's thread is stopped and joined
 * here.  Main thread. */
bool object_del(const char *id, StrataError **errp);

/* Remove every object (daemon shutdown), newest first, users or not. */
void object_del_all(void);

/*
 * Look up @id as an object of @kind, taking a use by @user (a string for
 * messages, e.g. "export 'e0'" or "node 'nbd0'"; copied).  Errors:
 *   "No object with id 'x'" (NOT_FOUND) / "object 'x' is not a
 *   tls-creds-x509" (INVALID_OPTION)
 * Release with object_unuse() and the same @user string (a user may hold
 * several uses).  Any thread.
 */
StrataObject *object_use(const char *id, ObjectKind kind, const char *user,
                         StrataError **errp);
void object_unuse(StrataObject *obj, const char *user);

const char *object_get_id(const StrataObject *obj);
ObjectKind object_get_kind(const StrataObject *obj);

/* Visit the objects in creation order (for qom-list /objects), in the
 * main thread; @fn may call the functions above except object_del() and
 * object_del_all(). */
void object_foreach(void (*fn)(StrataObject *obj, void *opaque),
                    void *opaque);

/* ---- per type ----------------------------------------------------------- */

/* A secret's bytes (decoded from base64 if so declared).  Borrowed, valid
 * while the object is in use; *len excludes a terminating NUL that is
 * always present. */
const uint8_t *secret_get_data(StrataObject *obj, size_t *len);

/* What query-iothreads reports of an I/O thread. */
typedef struct IothreadInfo {
    int thread_id;          /* the thread that serves its exports */
    int64_t poll_max_ns, poll_grow, poll_shrink, aio_max_batch;
} IothreadInfo;
void iothread_get_info(StrataObject *obj, IothreadInfo *info);

/* An I/O thread's context (its loop runs in the thread). */
StrataContext *iothread_get_context(StrataObject *obj);
/* The I/O thread as a queue of @ctx (multi-queue): made and started on
 * first use, the same queue afterwards; an iothread serves one context.
 * NULL with *errp on failure.  Control path. */
StrataQueue *iothread_get_queue(StrataObject *obj, StrataContext *ctx,
                                StrataError **errp);

/* A throttle-group's state (block/throttle-group.h); borrowed. */
struct ThrottleGroup *object_get_throttle_group(StrataObject *obj);

/* TLS credentials.  The gnutls_certificate_credentials_t (x509) or the
 * gnutls_psk_{server,client}_credentials_t (psk), as void * so that this
 * header does not need GnuTLS. */
bool tls_creds_is_server(StrataObject *obj);
bool tls_creds_verify_peer(StrataObject *obj);
void *tls_creds_get_gnutls(StrataObject *obj);
/* The "priority" property for gnutls_priority_init() (validated at
 * creation), or NULL for GnuTLS's default.  Borrowed. */
const char *tls_creds_get_priority(StrataObject *obj);
/* The credentials directory (QEMU's file names: ca-cert.pem,
 * client-cert.pem, ..., keys.psk), for libraries that load it themselves
 * (libnbd).  Borrowed. */
const char *tls_creds_get_dir(StrataObject *obj);
/* A tls-creds-psk client's username (NULL on a server).  Borrowed. */
const char *tls_creds_get_username(StrataObject *obj);

#endif
