/* nb_store: durable state of the platform behind a narrow ops table.
 *
 * The embedded SQLite backend (store_sqlite.c) is the default; a NATS JetStream KV backend can
 * implement the same ops for multi-node. Callers never see SQL. Every resource is keyed by
 * namespace first.
 *
 * Threading: a store handle is used by one thread at a time. The daemon's loops share one
 * through nb_store_locked(), which serialises every call with a mutex. Calls are synchronous
 * and short (single-row writes in WAL mode).
 * Ownership: versions returned are new references the caller unrefs; arrays are malloc'd and
 * freed with nb_store_free_versions(). */
#ifndef NB_STORE_H
#define NB_STORE_H

#include "base/err.h"
#include "function/function.h"

#include <stddef.h>
#include <stdint.h>

typedef struct nb_store nb_store;

typedef struct nb_code_blob {
    char sha256[65];
    int64_t size;
    int64_t unpacked_size;
    int64_t files;
} nb_code_blob;

/* Result of publishing a config. */
typedef struct nb_put_result {
    nb_fn_version *version; /* the latest version after the call (new ref) */
    int created;            /* the function did not exist */
    int changed;            /* a new version was published */
    int scaling_changed;    /* only the scaling settings changed (no new version) */
    int64_t updated_at;
} nb_put_result;

/* A gateway object (an API, a route, a plan, a key, a client, a share, a quota counter): the
 * gateway module owns its JSON body; the store only keeps it, keyed by (ns, kind, name). */
typedef struct nb_obj {
    char ns[65];
    char kind[32]; /* "topic_subscription" needs 19 */
    char name[256];
    char *body; /* JSON text, malloc'd */
    int64_t created_at, updated_at;
} nb_obj;

enum nb_obj_put_mode { NB_OBJ_UPSERT, NB_OBJ_CREATE, NB_OBJ_UPDATE };

typedef struct nb_store_ops {
    const char *name;
    /* Publishes cfg as a new version of ns/name unless its versioned part equals the latest
     * one; scaling settings that differ are then updated in place (scaling_changed). */
    int (*fn_put)(nb_store *s, const char *ns, const char *name, const nb_fn_config *cfg,
                  nb_put_result *out, nb_err *err);
    /* version 0 = latest. 404 when absent. updated_at may be NULL. */
    nb_fn_version *(*fn_get)(nb_store *s, const char *ns, const char *name, int64_t version,
                             int64_t *updated_at, nb_err *err);
    /* Latest version of every function in ns, sorted by name (ns NULL: every namespace). */
    int (*fn_list)(nb_store *s, const char *ns, nb_fn_version ***out, int64_t **updated_at,
                   size_t *n, nb_err *err);
    int (*fn_versions)(nb_store *s, const char *ns, const char *name, nb_fn_version ***out,
                       size_t *n, nb_err *err);
    int (*fn_delete)(nb_store *s, const char *ns, const char *name, nb_err *err);
    int (*blob_put)(nb_store *s, const nb_code_blob *b, nb_err *err);
    /* 1 found, 0 absent, -1 error */
    int (*blob_get)(nb_store *s, const char *sha256, nb_code_blob *out, nb_err *err);
    /* mode CREATE: 409 conflict when it exists; UPDATE: 404 when it does not. *created says
     * which happened (may be NULL). */
    int (*obj_put)(nb_store *s, const char *ns, const char *kind, const char *name,
                   const char *body, enum nb_obj_put_mode mode, int *created, nb_err *err);
    /* Upserts objs[0..n) (ns, kind, name, body; the times are the store's) in one commit: state
     * written often (a schedule's last firing) costs one sync per batch, not per object. */
    int (*obj_upsert_many)(nb_store *s, const nb_obj *objs, size_t n, nb_err *err);
    /* 1 found (out filled, free with nb_obj_clear), 0 absent, -1 error. */
    int (*obj_get)(nb_store *s, const char *ns, const char *kind, const char *name, nb_obj *out,
                   nb_err *err);
    /* Objects of kind in ns (ns NULL: every namespace; kind NULL: every kind), sorted by ns,
     * kind, name; name_prefix (may be NULL) filters. Free with nb_obj_free_list. */
    int (*obj_list)(nb_store *s, const char *ns, const char *kind, const char *name_prefix,
                    nb_obj **out, size_t *n, nb_err *err);
    /* 404 when absent. With name_prefix semantics when name ends in '*' (deletes every object
     * of the kind whose name starts with the rest): a deleted API's routes go with it. */
    int (*obj_delete)(nb_store *s, const char *ns, const char *kind, const char *name, nb_err *err);
    void (*close)(nb_store *s);
} nb_store_ops;

struct nb_store {
    const nb_store_ops *ops;
};

/* Opens (creating and migrating) the SQLite store at path. */
nb_store *nb_store_sqlite_open(const char *path, nb_err *err);
/* The schema version the SQLite backend migrates to; for tests. */
int nb_store_sqlite_schema_version(void);

/* Wraps inner so that any thread may call it (one call at a time); owns inner (close closes
 * both). */
nb_store *nb_store_locked(nb_store *inner);

void nb_store_free_versions(nb_fn_version **v, size_t n);
void nb_obj_clear(nb_obj *o);
void nb_obj_free_list(nb_obj *o, size_t n);

#endif
