/* Temporary stand-in for block/object.c while it is written (removed at merge). */
#include "block/object.h"
const char *const object_kind_names[] = { "secret", "iothread", "tls-creds-x509", "tls-creds-psk", NULL };
bool object_add(OptNode *opts, StrataError **errp) { error_setg(errp, "objects not yet available"); return false; }
bool object_del(const char *id, StrataError **errp) { error_setg(errp, "object '%s' not found", id); return false; }
void object_del_all(void) {}
StrataObject *object_use(const char *id, ObjectKind kind, const char *user, StrataError **errp) { error_setg(errp, "No object with id '%s'", id); return NULL; }
void object_unuse(StrataObject *obj, const char *user) {}
const char *object_get_id(const StrataObject *obj) { return ""; }
ObjectKind object_get_kind(const StrataObject *obj) { return OBJECT_SECRET; }
void object_foreach(void (*fn)(StrataObject *obj, void *opaque), void *opaque) {}
