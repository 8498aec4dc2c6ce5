#include "store/store.h"

#include <pthread.h>
#include <stdlib.h>

/* A store shared by every loop: each call of the wrapped store runs under one mutex. Only the
 * admin API and explicit ?version=N invokes reach the store, never a plain invoke, so this
 * mutex is not on the invocation path. */
typedef struct locked_store {
    nb_store pub;
    nb_store_ops ops;
    nb_store *inner;
    pthread_mutex_t mu;
} locked_store;

#define LOCKED(s, call)                                                                            \
    do {                                                                                           \
        locked_store *ls_ = (locked_store *)(s);                                                   \
        pthread_mutex_lock(&ls_->mu);                                                              \
        call;                                                                                      \
        pthread_mutex_unlock(&ls_->mu);                                                            \
    } while (0)

static int l_fn_put(nb_store *s, const char *ns, const char *name, const nb_fn_config *cfg,
                    nb_put_result *out, nb_err *err)
{
    int rc;
    nb_store *in = ((locked_store *)s)->inner;
    LOCKED(s, rc = in->ops->fn_put(in, ns, name, cfg, out, err));
    return rc;
}

static nb_fn_version *l_fn_get(nb_store *s, const char *ns, const char *name, int64_t version,
                               int64_t *updated_at, nb_err *err)
{
    nb_fn_version *v;
    nb_store *in = ((locked_store *)s)->inner;
    LOCKED(s, v = in->ops->fn_get(in, ns, name, version, updated_at, err));
    return v;
}

static int l_fn_list(nb_store *s, const char *ns, nb_fn_version ***out, int64_t **updated_at,
                     size_t *n, nb_err *err)
{
    int rc;
    nb_store *in = ((locked_store *)s)->inner;
    LOCKED(s, rc = in->ops->fn_list(in, ns, out, updated_at, n, err));
    return rc;
}

static int l_fn_versions(nb_store *s, const char *ns, const char *name, nb_fn_version ***out,
                         size_t *n, nb_err *err)
{
    int rc;
    nb_store *in = ((locked_store *)s)->inner;
    LOCKED(s, rc = in->ops->fn_versions(in, ns, name, out, n, err));
    return rc;
}

static int l_fn_delete(nb_store *s, const char *ns, const char *name, nb_err *err)
{
    int rc;
    nb_store *in = ((locked_store *)s)->inner;
    LOCKED(s, rc = in->ops->fn_delete(in, ns, name, err));
    return rc;
}

static int l_blob_put(nb_store *s, const nb_code_blob *b, nb_err *err)
{
    int rc;
    nb_store *in = ((locked_store *)s)->inner;
    LOCKED(s, rc = in->ops->blob_put(in, b, err));
    return rc;
}

static int l_blob_get(nb_store *s, const char *sha256, nb_code_blob *out, nb_err *err)
{
    int rc;
    nb_store *in = ((locked_store *)s)->inner;
    LOCKED(s, rc = in->ops->blob_get(in, sha256, out, err));
    return rc;
}

static int l_obj_put(nb_store *s, const char *ns, const char *kind, const char *name,
                     const char *body, enum nb_obj_put_mode mode, int *created, nb_err *err)
{
    int rc;
    nb_store *in = ((locked_store *)s)->inner;
    LOCKED(s, rc = in->ops->obj_put(in, ns, kind, name, body, mode, created, err));
    return rc;
}

static int l_obj_upsert_many(nb_store *s, const nb_obj *objs, size_t n, nb_err *err)
{
    int rc;
    nb_store *in = ((locked_store *)s)->inner;
    LOCKED(s, rc = in->ops->obj_upsert_many(in, objs, n, err));
    return rc;
}

static int l_obj_get(nb_store *s, const char *ns, const char *kind, const char *name, nb_obj *out,
                     nb_err *err)
{
    int rc;
    nb_store *in = ((locked_store *)s)->inner;
    LOCKED(s, rc = in->ops->obj_get(in, ns, kind, name, out, err));
    return rc;
}

static int l_obj_list(nb_store *s, const char *ns, const char *kind, const char *prefix,
                      nb_obj **out, size_t *n, nb_err *err)
{
    int rc;
    nb_store *in = ((locked_store *)s)->inner;
    LOCKED(s, rc = in->ops->obj_list(in, ns, kind, prefix, out, n, err));
    return rc;
}

static int l_obj_delete(nb_store *s, const char *ns, const char *kind, const char *name,
                        nb_err *err)
{
    int rc;
    nb_store *in = ((locked_store *)s)->inner;
    LOCKED(s, rc = in->ops->obj_delete(in, ns, kind, name, err));
    return rc;
}

static void l_close(nb_store *s)
{
    locked_store *ls = (locked_store *)s;
    ls->inner->ops->close(ls->inner);
    pthread_mutex_destroy(&ls->mu);
    free(ls);
}

nb_store *nb_store_locked(nb_store *inner)
{
    locked_store *ls = calloc(1, sizeof *ls);
    if (!ls) abort();
    ls->inner = inner;
    ls->ops = (nb_store_ops){
        .name = inner->ops->name,
        .fn_put = l_fn_put,
        .fn_get = l_fn_get,
        .fn_list = l_fn_list,
        .fn_versions = l_fn_versions,
        .fn_delete = l_fn_delete,
        .blob_put = l_blob_put,
        .blob_get = l_blob_get,
        .obj_put = l_obj_put,
        .obj_upsert_many = l_obj_upsert_many,
        .obj_get = l_obj_get,
        .obj_list = l_obj_list,
        .obj_delete = l_obj_delete,
        .close = l_close,
    };
    ls->pub.ops = &ls->ops;
    pthread_mutex_init(&ls->mu, NULL);
    return &ls->pub;
}
