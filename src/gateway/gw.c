#include "gateway/gw.h"
#include "metering/usage.h"

#include "auth/jwt.h"
#include "auth/secret.h"
#include "base/buf.h"
#include "base/log.h"
#include "base/util.h"
#include "gateway/event.h"
#include "gateway/http.h"
#include "gateway/limit.h"
#include "gateway/routes.h"
#include "metrics/metrics.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* ---------- the snapshot ---------- */

enum { AUTH_NONE, AUTH_KEY, AUTH_CLIENT, AUTH_JWT };
enum { CRED_KEY, CRED_CLIENT };

typedef struct gw_plan {
    char ns[65], name[65];
    double rate;
    int burst;
    int64_t quota;
    nb_lim_period period;
} gw_plan;

typedef struct gw_cred {
    int kind;
    char ns[65], name[65];
    char id[80];   /* key: its name; client: its client_id */
    char hash[65]; /* sha256 of the key or the client secret */
    int enabled;
    int64_t gen;  /* client: bumped by each rotation, carried in its tokens */
    char *scopes; /* client: space-separated scopes it may use */
    gw_plan *plan;
    nb_lim_cell *cell;
} gw_cred;

struct gw_api;

typedef struct gw_route {
    char *id, *function, *scopes;
    int auth;
    int64_t timeout_ms;
    nb_lim_cell *throttle;
    int log_max;
    double log_sample;
    struct gw_api *api;
} gw_route;

typedef struct gw_share {
    const gw_cred *cred;
    gw_plan *plan;
    nb_lim_cell *cell;
} gw_share;

typedef struct gw_cors {
    int on;
    char **origins;
    size_t norigins;
    int any_origin;
    char *methods;  /* "GET, POST" */
    char **headers; /* lowercased; "*" allows any */
    size_t nheaders;
    char *headers_csv, *expose_csv;
    int credentials;
    int max_age;
} gw_cors;

typedef struct gw_api {
    char ns[65], name[65];
    char *base; /* "" for "/" */
    size_t base_len;
    nb_rt *rt;
    gw_route *routes;
    size_t nroutes;
    gw_cors cors;
    nb_jwt_keyset *jwt_ks;
    nb_jwt_policy jwt;
    char *jwt_issuer;
    char **jwt_auds;
    int broken; /* its stored config no longer compiles: answers 500 */
    nb_lim_cell *throttle;
    gw_plan *plan;
    gw_share *shares;
    size_t nshares;
} gw_api;

typedef struct gw_snap {
    atomic_int refs;
    uint64_t gen;
    gw_api *apis; /* sorted by base_len, longest first */
    size_t napis;
    gw_plan *plans;
    size_t nplans;
    gw_cred *creds;
    size_t ncreds;
    gw_cred **by_hash; /* keys, sorted by hash */
    size_t nkeys;
    gw_cred **by_client; /* clients, sorted by id */
    size_t nclients;
} gw_snap;

struct nb_gw {
    nb_store *store;
    nb_alog *alog;
    struct nb_met *metrics;
    nb_lim_registry *lim;
    pthread_mutex_t mu; /* cur and reloads */
    gw_snap *cur;
    atomic_uint_fast64_t gen;
    unsigned char token_key[32];
    nb_jwt_keyset *token_ks;
    pthread_t house;
    pthread_mutex_t house_mu;
    pthread_cond_t house_cv;
    int house_stop;
};

/* A verified bearer token, cached per loop so a client that reuses its token pays one hash
 * and a compare instead of a signature check per request. */
typedef struct tok_cache {
    unsigned char hash[32];
    uint64_t gen;    /* the snapshot generation it was verified under (keys may change) */
    const void *api; /* the authorizer (API, or NULL for nimbus's own tokens) */
    int64_t exp;
    char *sub;
    char *scopes;
    char *authorizer; /* requestContext.authorizer JSON */
    int64_t client_gen;
} tok_cache;

#define TOK_CACHE 256

/* The per-consumer cells of APIs with a plan, cached per loop: the registry's mutex is taken on
 * a miss only, and the plan is applied again when the snapshot changed. */
typedef struct cell_cache {
    uint64_t hash, gen;
    char *key;
    nb_lim_cell *cell;
} cell_cache;

#define CELL_CACHE 256

struct nb_gw_loop {
    nb_gw *gw;
    nb_invoker *iv;
    gw_snap *snap;
    uint64_t gen;
    int draining;
    tok_cache cache[TOK_CACHE];
    cell_cache cells[CELL_CACHE];
};

static void snap_free(gw_snap *s);

static void snap_unref(gw_snap *s)
{
    if (s && atomic_fetch_sub(&s->refs, 1) == 1) snap_free(s);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) abort();
    return d;
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void snap_free(gw_snap *s)
{
    for (size_t i = 0; i < s->napis; i++) {
        gw_api *a = &s->apis[i];
        free(a->base);
        nb_rt_free(a->rt);
        for (size_t j = 0; j < a->nroutes; j++) {
            free(a->routes[j].id);
            free(a->routes[j].function);
            free(a->routes[j].scopes);
        }
        free(a->routes);
        strv_free(a->cors.origins, a->cors.norigins);
        strv_free(a->cors.headers, a->cors.nheaders);
        free(a->cors.methods);
        free(a->cors.headers_csv);
        free(a->cors.expose_csv);
        nb_jwt_keyset_free(a->jwt_ks);
        free(a->jwt_issuer);
        strv_free(a->jwt_auds, a->jwt.naudiences);
        free(a->shares);
    }
    free(s->apis);
    for (size_t i = 0; i < s->ncreds; i++)
        free(s->creds[i].scopes);
    free(s->creds);
    free(s->plans);
    free(s->by_hash);
    free(s->by_client);
    free(s);
}

/* ---------- building ---------- */

static const char *jstr(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static gw_plan *find_plan(gw_snap *s, const char *ns, const char *name)
{
    if (!name || !*name) return NULL;
    for (size_t i = 0; i < s->nplans; i++)
        if (strcmp(s->plans[i].ns, ns) == 0 && strcmp(s->plans[i].name, name) == 0)
            return &s->plans[i];
    return NULL;
}

static void cell_apply_plan(nb_lim_cell *c, const gw_plan *p)
{
    nb_lim_set_rate(c, p ? p->rate : 0, p ? p->burst : 0);
    nb_lim_set_quota(c, p ? p->quota : 0, p ? p->period : NB_LIM_DAY);
}

static nb_lim_cell *throttle_cell(nb_gw *gw, const json_t *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static nb_lim_cell *throttle_cell(nb_gw *gw, const json_t *t, const char *fmt, ...)
{
    if (!json_is_object(t)) return NULL;
    char key[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    nb_lim_cell *c = nb_lim_get(gw->lim, key);
    nb_lim_set_rate(c, json_number_value(json_object_get(t, "rate")),
                    (int)json_integer_value(json_object_get(t, "burst")));
    return c;
}

static char **strv_from(const json_t *arr, size_t *n, int lower)
{
    *n = json_is_array(arr) ? json_array_size(arr) : 0;
    char **v = calloc(*n + 1, sizeof *v);
    if (!v) abort();
    for (size_t i = 0; i < *n; i++) {
        v[i] = xstrdup(json_string_value(json_array_get(arr, i)));
        if (lower)
            for (char *c = v[i]; *c; c++)
                *c = (char)tolower((unsigned char)*c);
    }
    return v;
}

static char *csv_from(const json_t *arr)
{
    nb_buf b;
    nb_buf_init(&b, 1 << 16);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (i) nb_buf_append(&b, ", ", 2);
        nb_buf_appendf(&b, "%s", json_string_value(v) ? json_string_value(v) : "");
    }
    nb_buf_append(&b, "", 1);
    char *s = nb_buf_steal(&b, NULL);
    return s ? s : xstrdup("");
}

static int build_jwt(gw_api *a, const json_t *j, nb_err *err)
{
    a->jwt_ks = nb_jwt_keyset_new();
    const char *file = json_string_value(json_object_get(j, "jwks_file"));
    if (file) {
        size_t len;
        struct stat st;
        /* Not a regular file (a FIFO would block the reload): refused like a missing one. */
        if (stat(file, &st) < 0 || !S_ISREG(st.st_mode))
            return nb_err_set(err, 400, NB_E_INVALID_VALUE, "JWKS file %s is not a regular file",
                              file);
        char *text = nb_read_file(file, 1 << 20, &len);
        if (!text) return nb_err_sys(err, errno, "read JWKS file %s", file);
        int rc = nb_jwt_keyset_add_jwks(a->jwt_ks, text, len, err);
        free(text);
        if (rc < 0) return nb_err_prefix(err, "JWKS file %s", file);
    }
    size_t i;
    json_t *k;
    json_array_foreach(json_object_get(j, "keys"), i, k)
    {
        const char *kid = json_string_value(json_object_get(k, "kid"));
        const char *secret = json_string_value(json_object_get(k, "secret"));
        const char *pem = json_string_value(json_object_get(k, "pem"));
        int rc = secret ? nb_jwt_keyset_add_hmac(a->jwt_ks, kid, secret, strlen(secret), err)
                        : nb_jwt_keyset_add_pem(a->jwt_ks, kid, pem ? pem : "",
                                                pem ? strlen(pem) : 0, err);
        if (rc < 0) return -1;
    }
    a->jwt.algs = 0;
    json_array_foreach(json_object_get(j, "algorithms"), i, k)
    {
        const char *alg = json_string_value(k);
        if (alg && strcmp(alg, "HS256") == 0) a->jwt.algs |= NB_JWT_HS256;
        if (alg && strcmp(alg, "RS256") == 0) a->jwt.algs |= NB_JWT_RS256;
        if (alg && strcmp(alg, "ES256") == 0) a->jwt.algs |= NB_JWT_ES256;
    }
    a->jwt_issuer = xstrdup(jstr(j, "issuer"));
    a->jwt.issuer = *a->jwt_issuer ? a->jwt_issuer : NULL;
    a->jwt_auds = strv_from(json_object_get(j, "audiences"), &a->jwt.naudiences, 0);
    a->jwt.audiences = (const char *const *)a->jwt_auds;
    a->jwt.leeway_s = 60;
    return 0;
}

static gw_api *find_api(gw_snap *s, const char *ns, const char *name)
{
    for (size_t i = 0; i < s->napis; i++)
        if (strcmp(s->apis[i].ns, ns) == 0 && strcmp(s->apis[i].name, name) == 0)
            return &s->apis[i];
    return NULL;
}

static int by_base_len(const void *x, const void *y)
{
    const gw_api *a = x, *b = y;
    return a->base_len < b->base_len ? 1 : a->base_len > b->base_len ? -1 : 0;
}

static int by_hash(const void *x, const void *y)
{
    return strcmp((*(gw_cred *const *)x)->hash, (*(gw_cred *const *)y)->hash);
}

static int by_id(const void *x, const void *y)
{
    return strcmp((*(gw_cred *const *)x)->id, (*(gw_cred *const *)y)->id);
}

static void build_api(nb_gw *gw, gw_api *a, const nb_obj *o, const json_t *j)
{
    snprintf(a->ns, sizeof a->ns, "%s", o->ns);
    snprintf(a->name, sizeof a->name, "%s", o->name);
    const char *base = jstr(j, "base_path");
    a->base = xstrdup(strcmp(base, "/") == 0 ? "" : base);
    a->base_len = strlen(a->base);
    a->rt = nb_rt_new();
    const json_t *c = json_object_get(j, "cors");
    if (json_is_object(c)) {
        a->cors.on = 1;
        a->cors.origins = strv_from(json_object_get(c, "origins"), &a->cors.norigins, 0);
        for (size_t i = 0; i < a->cors.norigins; i++)
            if (strcmp(a->cors.origins[i], "*") == 0) a->cors.any_origin = 1;
        a->cors.methods = csv_from(json_object_get(c, "methods"));
        a->cors.headers = strv_from(json_object_get(c, "headers"), &a->cors.nheaders, 1);
        a->cors.headers_csv = csv_from(json_object_get(c, "headers"));
        a->cors.expose_csv = csv_from(json_object_get(c, "expose_headers"));
        a->cors.credentials = json_is_true(json_object_get(c, "credentials"));
        a->cors.max_age = (int)json_integer_value(json_object_get(c, "max_age"));
    }
    const json_t *jw = json_object_get(j, "jwt");
    if (json_is_object(jw)) {
        nb_err err = {0};
        if (build_jwt(a, jw, &err) < 0) {
            nb_error("gateway", "API %s/%s: JWT authorizer: %s (its jwt routes answer 500)", a->ns,
                     a->name, err.msg);
            a->broken = 1;
        }
    }
    a->throttle = throttle_cell(gw, json_object_get(j, "throttle"), "api/%s/%s", a->ns, a->name);
}

static gw_snap *build(nb_gw *gw, nb_err *err)
{
    nb_obj *objs;
    size_t n;
    if (gw->store->ops->obj_list(gw->store, NULL, NULL, NULL, &objs, &n, err) < 0) return NULL;
    gw_snap *s = calloc(1, sizeof *s);
    if (!s) abort();
    json_t **js = calloc(n + 1, sizeof *js);
    if (!js) abort();
    size_t napis = 0, nplans = 0, ncreds = 0;
    for (size_t i = 0; i < n; i++) {
        js[i] = json_loads(objs[i].body, 0, NULL);
        if (!js[i]) js[i] = json_object();
        napis += strcmp(objs[i].kind, "api") == 0;
        nplans += strcmp(objs[i].kind, "plan") == 0;
        ncreds += strcmp(objs[i].kind, "key") == 0 || strcmp(objs[i].kind, "client") == 0;
    }
    s->apis = calloc(napis + 1, sizeof *s->apis);
    s->plans = calloc(nplans + 1, sizeof *s->plans);
    s->creds = calloc(ncreds + 1, sizeof *s->creds);
    if (!s->apis || !s->plans || !s->creds) abort();
    for (size_t i = 0; i < n; i++) {
        if (strcmp(objs[i].kind, "plan") != 0) continue;
        gw_plan *p = &s->plans[s->nplans++];
        snprintf(p->ns, sizeof p->ns, "%s", objs[i].ns);
        snprintf(p->name, sizeof p->name, "%s", objs[i].name);
        p->rate = json_number_value(json_object_get(js[i], "rate"));
        p->burst = (int)json_integer_value(json_object_get(js[i], "burst"));
        const json_t *q = json_object_get(js[i], "quota");
        p->quota = json_integer_value(json_object_get(q, "limit"));
        p->period = strcmp(jstr(q, "period"), "month") == 0 ? NB_LIM_MONTH : NB_LIM_DAY;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(objs[i].kind, "api") != 0) continue;
        gw_api *a = &s->apis[s->napis++];
        build_api(gw, a, &objs[i], js[i]);
        a->plan = find_plan(s, a->ns, jstr(js[i], "plan"));
    }
    /* Routes, counted per API first so each API's array is allocated once. */
    for (size_t i = 0; i < n; i++) {
        if (strcmp(objs[i].kind, "route") != 0) continue;
        gw_api *a = find_api(s, objs[i].ns, jstr(js[i], "api"));
        if (a) a->nroutes++;
    }
    for (size_t i = 0; i < s->napis; i++) {
        s->apis[i].routes = calloc(s->apis[i].nroutes + 1, sizeof(gw_route));
        if (!s->apis[i].routes) abort();
        s->apis[i].nroutes = 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(objs[i].kind, "route") != 0) continue;
        const json_t *j = js[i];
        gw_api *a = find_api(s, objs[i].ns, jstr(j, "api"));
        if (!a) continue;
        gw_route *r = &a->routes[a->nroutes];
        r->api = a;
        r->id = xstrdup(jstr(j, "id"));
        r->function = xstrdup(jstr(j, "function"));
        r->scopes = xstrdup(jstr(j, "scopes"));
        const char *auth = jstr(j, "auth");
        r->auth = strcmp(auth, "key") == 0      ? AUTH_KEY
                  : strcmp(auth, "client") == 0 ? AUTH_CLIENT
                  : strcmp(auth, "jwt") == 0    ? AUTH_JWT
                                                : AUTH_NONE;
        r->timeout_ms = json_integer_value(json_object_get(j, "timeout_ms"));
        if (r->timeout_ms <= 0) r->timeout_ms = 30000;
        const json_t *lb = json_object_get(j, "log_body");
        r->log_max = (int)json_integer_value(json_object_get(lb, "max_bytes"));
        r->log_sample =
            json_object_get(lb, "sample") ? json_number_value(json_object_get(lb, "sample")) : 1.0;
        r->throttle = throttle_cell(gw, json_object_get(j, "throttle"), "route/%s/%s/%s", a->ns,
                                    a->name, r->id);
        nb_err e = {0};
        if (nb_rt_add(a->rt, jstr(j, "method"), jstr(j, "path"), r, &e) < 0) {
            nb_error("gateway", "API %s/%s: route %s skipped: %s", a->ns, a->name, r->id, e.msg);
            free(r->id);
            free(r->function);
            free(r->scopes);
            memset(r, 0, sizeof *r);
            continue;
        }
        a->nroutes++;
    }
    for (size_t i = 0; i < n; i++) {
        int is_key = strcmp(objs[i].kind, "key") == 0;
        if (!is_key && strcmp(objs[i].kind, "client") != 0) continue;
        const json_t *j = js[i];
        gw_cred *c = &s->creds[s->ncreds++];
        c->kind = is_key ? CRED_KEY : CRED_CLIENT;
        snprintf(c->ns, sizeof c->ns, "%s", objs[i].ns);
        snprintf(c->name, sizeof c->name, "%s", objs[i].name);
        snprintf(c->id, sizeof c->id, "%s", is_key ? objs[i].name : jstr(j, "client_id"));
        snprintf(c->hash, sizeof c->hash, "%s", jstr(j, "hash"));
        c->enabled = !json_is_false(json_object_get(j, "enabled"));
        c->gen = json_integer_value(json_object_get(j, "gen"));
        c->scopes = xstrdup(jstr(j, "scopes"));
        c->plan = find_plan(s, c->ns, jstr(j, "plan"));
        char key[256];
        snprintf(key, sizeof key, "cred/%s/%s/%s", c->ns, objs[i].kind, c->name);
        c->cell = nb_lim_get(gw->lim, key);
        cell_apply_plan(c->cell, c->plan);
        if (is_key)
            s->nkeys++;
        else
            s->nclients++;
    }
    s->by_hash = calloc(s->nkeys + 1, sizeof *s->by_hash);
    s->by_client = calloc(s->nclients + 1, sizeof *s->by_client);
    if (!s->by_hash || !s->by_client) abort();
    size_t k = 0, cl = 0;
    for (size_t i = 0; i < s->ncreds; i++) {
        if (s->creds[i].kind == CRED_KEY)
            s->by_hash[k++] = &s->creds[i];
        else
            s->by_client[cl++] = &s->creds[i];
    }
    qsort(s->by_hash, s->nkeys, sizeof *s->by_hash, by_hash);
    qsort(s->by_client, s->nclients, sizeof *s->by_client, by_id);
    /* Shares: name "<api>/<consumer ns>/<kind>/<consumer>". */
    for (size_t i = 0; i < n; i++) {
        if (strcmp(objs[i].kind, "share") != 0) continue;
        const json_t *j = js[i];
        gw_api *a = find_api(s, objs[i].ns, jstr(j, "api"));
        if (!a) continue;
        const char *cns = jstr(j, "consumer_ns"), *cname = jstr(j, "consumer");
        int kind = strcmp(jstr(j, "kind"), "client") == 0 ? CRED_CLIENT : CRED_KEY;
        const gw_cred *cred = NULL;
        for (size_t c = 0; c < s->ncreds && !cred; c++)
            if (s->creds[c].kind == kind && strcmp(s->creds[c].ns, cns) == 0 &&
                strcmp(s->creds[c].name, cname) == 0)
                cred = &s->creds[c];
        if (!cred) continue;
        a->shares = realloc(a->shares, (a->nshares + 1) * sizeof *a->shares);
        if (!a->shares) abort();
        gw_share *sh = &a->shares[a->nshares++];
        sh->cred = cred;
        sh->plan = find_plan(s, a->ns, jstr(j, "plan"));
        sh->cell = NULL;
        if (sh->plan) {
            char key[512];
            snprintf(key, sizeof key, "share/%s/%s/%s/%s/%s", a->ns, a->name, cns,
                     kind == CRED_KEY ? "key" : "client", cname);
            sh->cell = nb_lim_get(gw->lim, key);
            cell_apply_plan(sh->cell, sh->plan);
        }
    }
    qsort(s->apis, s->napis, sizeof *s->apis, by_base_len);
    /* Routes point at their API: fix them after the sort moved the APIs. */
    for (size_t i = 0; i < s->napis; i++)
        for (size_t r = 0; r < s->apis[i].nroutes; r++)
            s->apis[i].routes[r].api = &s->apis[i];
    for (size_t i = 0; i < n; i++)
        json_decref(js[i]);
    free(js);
    nb_obj_free_list(objs, n);
    atomic_init(&s->refs, 1);
    return s;
}

int nb_gw_reload(nb_gw *gw, nb_err *err)
{
    /* Built outside the lock (callers are serialised by the admin API's mutex): the loops
     * taking the current snapshot never wait for a reload's store reads and key loading. */
    gw_snap *s = build(gw, err);
    if (!s) return -1;
    pthread_mutex_lock(&gw->mu);
    gw_snap *old = gw->cur;
    s->gen = atomic_load(&gw->gen) + 1;
    gw->cur = s;
    atomic_store(&gw->gen, s->gen);
    pthread_mutex_unlock(&gw->mu);
    snap_unref(old);
    return 0;
}

/* ---------- quotas on disk ---------- */

typedef struct flush_list {
    char **keys;
    nb_lim_cell **cells;
    size_t n, cap;
} flush_list;

/* Under the registry mutex: only notes what changed; the store writes come after it. */
static void flush_note(const char *key, nb_lim_cell *c, void *ud)
{
    flush_list *fl = ud;
    if (atomic_load(&c->quota_limit) <= 0 ||
        atomic_load(&c->quota_used) == atomic_load(&c->quota_flushed))
        return;
    if (fl->n == fl->cap) {
        fl->cap = fl->cap ? fl->cap * 2 : 16;
        fl->keys = realloc(fl->keys, fl->cap * sizeof *fl->keys);
        fl->cells = realloc(fl->cells, fl->cap * sizeof *fl->cells);
        if (!fl->keys || !fl->cells) abort();
    }
    fl->keys[fl->n] = xstrdup(key);
    fl->cells[fl->n++] = c;
}

static void flush_one(nb_gw *gw, const char *key, nb_lim_cell *c)
{
    int64_t used = atomic_load(&c->quota_used), start = atomic_load(&c->quota_start);
    /* A negative start: the period is rolling over right now; the next pass persists it. */
    if (start < 0 || atomic_load(&c->quota_limit) <= 0 || used == atomic_load(&c->quota_flushed))
        return;
    char body[160];
    snprintf(body, sizeof body, "{\"start\":%lld,\"used\":%lld,\"limit\":%lld,\"period\":%d}",
             (long long)start, (long long)used, (long long)atomic_load(&c->quota_limit),
             atomic_load(&c->quota_period));
    nb_err err = {0};
    if (gw->store->ops->obj_put(gw->store, "_system", "quota", key, body, NB_OBJ_UPSERT, NULL,
                                &err) == 0)
        atomic_store(&c->quota_flushed, used);
    else
        nb_warn("gateway", "persist quota %s: %s", key, err.msg);
}

void nb_gw_flush_quotas(nb_gw *gw)
{
    flush_list fl = {0};
    nb_lim_each(gw->lim, flush_note, &fl);
    for (size_t i = 0; i < fl.n; i++) {
        flush_one(gw, fl.keys[i], fl.cells[i]);
        free(fl.keys[i]);
    }
    free(fl.keys);
    free(fl.cells);
}

static void restore_quotas(nb_gw *gw)
{
    nb_obj *objs;
    size_t n;
    nb_err err = {0};
    if (gw->store->ops->obj_list(gw->store, "_system", "quota", NULL, &objs, &n, &err) < 0) {
        nb_warn("gateway", "read quotas: %s", err.msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *j = json_loads(objs[i].body, 0, NULL);
        nb_lim_cell *c = nb_lim_get(gw->lim, objs[i].name);
        int64_t used = json_integer_value(json_object_get(j, "used"));
        /* The period first: setting another one later would reset the count. */
        nb_lim_set_quota(c, json_integer_value(json_object_get(j, "limit")),
                         json_integer_value(json_object_get(j, "period")) == NB_LIM_MONTH
                             ? NB_LIM_MONTH
                             : NB_LIM_DAY);
        nb_lim_restore_quota(c, json_integer_value(json_object_get(j, "start")), used);
        atomic_store(&c->quota_flushed, used);
        json_decref(j);
    }
    nb_obj_free_list(objs, n);
}

static void *housekeeping(void *arg)
{
    nb_gw *gw = arg;
    pthread_mutex_lock(&gw->house_mu);
    while (!gw->house_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&gw->house_cv, &gw->house_mu, &ts);
        pthread_mutex_unlock(&gw->house_mu);
        nb_gw_flush_quotas(gw);
        pthread_mutex_lock(&gw->house_mu);
    }
    pthread_mutex_unlock(&gw->house_mu);
    return NULL;
}

static int load_token_key(nb_gw *gw, const char *data_dir, nb_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/gateway.key", data_dir);
    size_t len = 0;
    char *text = nb_read_file(path, 256, &len);
    if (!text && errno != ENOENT) return nb_err_sys(err, errno, "read %s", path);
    if (!text) {
        /* First start: the key is made once; replacing it later would revoke every token. */
        char hex[65];
        if (nb_random_hex(hex, 32) < 0) return nb_err_sys(err, errno, "random");
        if (nb_write_file(path, hex, 64, 0600) < 0) return nb_err_sys(err, errno, "write %s", path);
        text = xstrdup(hex);
        len = 64;
    }
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
        len--;
    int ok = len == 64;
    for (int i = 0; ok && i < 32; i++) {
        int hi = hexval(text[2 * i]), lo = hexval(text[2 * i + 1]);
        ok = hi >= 0 && lo >= 0;
        gw->token_key[i] = (unsigned char)(hi << 4 | lo);
    }
    free(text);
    if (!ok)
        return nb_err_set(err, 500, NB_E_INTERNAL,
                          "%s is not 64 hex digits: fix it, or remove it to make a new one (which "
                          "revokes the tokens issued so far)",
                          path);
    gw->token_ks = nb_jwt_keyset_new();
    return nb_jwt_keyset_add_hmac(gw->token_ks, "nimbus", gw->token_key, 32, err);
}

nb_gw *nb_gw_new(const nb_gw_config *cfg, nb_err *err)
{
    nb_gw *gw = calloc(1, sizeof *gw);
    if (!gw) abort();
    gw->store = cfg->store;
    gw->alog = cfg->alog;
    gw->metrics = cfg->metrics;
    gw->lim = nb_lim_registry_new();
    pthread_mutex_init(&gw->mu, NULL);
    pthread_mutex_init(&gw->house_mu, NULL);
    pthread_cond_init(&gw->house_cv, NULL);
    atomic_init(&gw->gen, 0);
    if (load_token_key(gw, cfg->data_dir, err) < 0 || (restore_quotas(gw), 0) ||
        nb_gw_reload(gw, err) < 0) {
        nb_jwt_keyset_free(gw->token_ks);
        nb_lim_registry_free(gw->lim);
        free(gw);
        return NULL;
    }
    pthread_create(&gw->house, NULL, housekeeping, gw);
    return gw;
}

void nb_gw_free(nb_gw *gw)
{
    if (!gw) return;
    pthread_mutex_lock(&gw->house_mu);
    gw->house_stop = 1;
    pthread_cond_signal(&gw->house_cv);
    pthread_mutex_unlock(&gw->house_mu);
    pthread_join(gw->house, NULL);
    nb_gw_flush_quotas(gw);
    snap_unref(gw->cur);
    nb_jwt_keyset_free(gw->token_ks);
    nb_lim_registry_free(gw->lim);
    pthread_mutex_destroy(&gw->mu);
    pthread_mutex_destroy(&gw->house_mu);
    pthread_cond_destroy(&gw->house_cv);
    free(gw);
}

nb_gw_loop *nb_gw_loop_new(nb_gw *gw, nb_invoker *iv)
{
    nb_gw_loop *l = calloc(1, sizeof *l);
    if (!l) abort();
    l->gw = gw;
    l->iv = iv;
    return l;
}

static void cache_clear(tok_cache *t)
{
    free(t->sub);
    free(t->scopes);
    free(t->authorizer);
    memset(t, 0, sizeof *t);
}

void nb_gw_loop_drain(nb_gw_loop *l)
{
    l->draining = 1;
}

void nb_gw_loop_free(nb_gw_loop *l)
{
    if (!l) return;
    for (int i = 0; i < TOK_CACHE; i++)
        cache_clear(&l->cache[i]);
    for (int i = 0; i < CELL_CACHE; i++)
        free(l->cells[i].key);
    snap_unref(l->snap);
    free(l);
}

static gw_snap *loop_snap(nb_gw_loop *l)
{
    uint64_t g = atomic_load_explicit(&l->gw->gen, memory_order_acquire);
    if (g != l->gen || !l->snap) {
        pthread_mutex_lock(&l->gw->mu);
        gw_snap *s = l->gw->cur;
        atomic_fetch_add(&s->refs, 1);
        l->gen = s->gen;
        pthread_mutex_unlock(&l->gw->mu);
        snap_unref(l->snap);
        l->snap = s;
    }
    return l->snap;
}

/* ---------- one request ---------- */

typedef struct gw_req {
    h2o_req_t *req;
    nb_gw_loop *l;
    gw_snap *snap; /* ref held until the answer */
    const gw_api *api;
    const gw_route *route;
    const char *request_id;
    const char *route_key;
    int64_t t0_us, time_ms;
    char consumer[160];
    const char *consumer_kind;
    char origin[512];
    int origin_ok;
    char ip[64]; /* the peer, read once: the connection may be gone when the record is made */
    nb_inv *inv;
    uv_timer_t *timer;
    int answered, cold;
} gw_req;

static void record(gw_req *g, int status, const char *code, const char *body, size_t len)
{
    /* Every answer of the gateway passes here once: the one place to count it. */
    nb_met_gateway(g->l->gw->metrics, g->api ? g->api->ns : "", g->api ? g->api->name : "", status);
    if (!g->l->gw->alog) return;
    h2o_req_t *req = g->req;
    char path[1024];
    snprintf(path, sizeof path, "%.*s", (int)(req->path.len < 1023 ? req->path.len : 1023),
             req->path.base);
    char method[16];
    snprintf(method, sizeof method, "%.*s", (int)(req->method.len < 15 ? req->method.len : 15),
             req->method.base);
    const char *logged = NULL;
    size_t logged_len = 0;
    if (g->route && g->route->log_max > 0 && body &&
        (g->route->log_sample >= 1.0 || (double)random() / RAND_MAX < g->route->log_sample)) {
        logged = body;
        logged_len = len < (size_t)g->route->log_max ? len : (size_t)g->route->log_max;
    }
    nb_alog_rec r = {
        .time_ms = g->time_ms,
        .ns = g->api ? g->api->ns : "",
        .api = g->api ? g->api->name : "",
        .route = g->route_key ? g->route_key : "",
        .method = method,
        .path = path,
        .status = status,
        .latency_us = nb_mono_us() - g->t0_us,
        .consumer = g->consumer,
        .consumer_kind = g->consumer_kind ? g->consumer_kind : "",
        .request_id = g->request_id,
        .source_ip = g->ip,
        .bytes_in = (int64_t)req->entity.len,
        .bytes_out = (int64_t)len,
        .cold = g->cold,
        .error_code = code ? code : "",
        .body = logged,
        .body_len = logged_len,
    };
    nb_alog_record(g->l->gw->alog, &r);
}

static void end_req(gw_req *g)
{
    g->answered = 1;
    if (g->timer) {
        uv_close((uv_handle_t *)g->timer, (uv_close_cb)free);
        g->timer = NULL;
    }
    snap_unref(g->snap);
    g->snap = NULL;
}

static int origin_allowed(const gw_cors *c, const char *origin)
{
    if (c->any_origin) return 1;
    size_t ol = strlen(origin);
    for (size_t i = 0; i < c->norigins; i++) {
        const char *pat = c->origins[i], *star = strstr(pat, "://*.");
        if (!star) {
            if (strcasecmp(pat, origin) == 0) return 1;
            continue;
        }
        /* A wildcard origin "scheme://" "*.b.example": the scheme, then one or more labels, then
         * ".b.example". */
        size_t pre = (size_t)(star - pat) + 3, suf = strlen(star + 4);
        if (ol > pre + suf && strncasecmp(origin, pat, pre) == 0 &&
            strcasecmp(origin + ol - suf, star + 4) == 0 &&
            !memchr(origin + pre, '/', ol - pre - suf))
            return 1;
    }
    return 0;
}

static void cors_headers(gw_req *g)
{
    if (!g->api || !g->api->cors.on || !g->origin[0]) return;
    const gw_cors *c = &g->api->cors;
    nb_http_header(g->req, "vary", "Origin");
    if (!g->origin_ok) return;
    nb_http_header(g->req, "access-control-allow-origin",
                   c->any_origin && !c->credentials ? "*" : g->origin);
    if (c->credentials) nb_http_header(g->req, "access-control-allow-credentials", "true");
    if (c->expose_csv[0]) nb_http_header(g->req, "access-control-expose-headers", c->expose_csv);
}

/* Every gateway-made error: {"error":{"code","message"}} and an access record. */
static void gw_fail(gw_req *g, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void gw_fail(gw_req *g, int status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cors_headers(g);
    nb_utf8_scrub(msg);
    /* A 5xx tells the caller no more than AWS's gateway does (the function's internals are
     * not its business); the detail goes to the daemon's log with the request id. */
    if (status >= 500) {
        nb_warn("gateway", "%s %d %s: %s", g->request_id, status, code, msg);
        snprintf(msg, sizeof msg, "%s",
                 status == 504 ? "Gateway Timeout" : "Internal Server Error");
    }
    json_t *j = json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg);
    if (j && status >= 500) json_object_set_new(j, "message", json_string(msg));
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) abort(); /* msg is valid UTF-8 and code a literal: only OOM gets here */
    size_t n = strlen(s);
    record(g, status, code, s, n);
    nb_http_send(g->req, status, "application/json", s, n);
    free(s);
    end_req(g);
}

/* ---------- credentials ---------- */

static const gw_cred *key_lookup(const gw_snap *s, const char *key, size_t len)
{
    char h[NB_SECRET_HASH_HEX];
    nb_secret_hash(key, len, h);
    size_t lo = 0, hi = s->nkeys;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s->by_hash[mid]->hash, h);
        if (c == 0) return nb_secret_hash_equal(s->by_hash[mid]->hash, h) ? s->by_hash[mid] : NULL;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static const gw_cred *client_lookup(const gw_snap *s, const char *id)
{
    size_t lo = 0, hi = s->nclients;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s->by_client[mid]->id, id);
        if (c == 0) return s->by_client[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static h2o_iovec_t header_value(h2o_req_t *req, const char *name)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
    return i < 0 ? h2o_iovec_init(NULL, 0) : req->headers.entries[i].value;
}

/* "Basic base64(id:secret)": the client, or NULL (then *why says what is wrong). */
static const gw_cred *basic_client(const gw_snap *s, h2o_iovec_t v, const char **why)
{
    unsigned char dec[512];
    size_t b64 = v.len - 6;
    *why = "malformed Basic credentials";
    if (b64 == 0 || b64 > 680 || b64 % 4 != 0) return NULL;
    int n = EVP_DecodeBlock(dec, (const unsigned char *)v.base + 6, (int)b64);
    if (n < 3) return NULL;
    /* EVP_DecodeBlock counts padding as data: drop the zero bytes it made of the '=' (at most
     * two, at the end). */
    for (int pad = 0; pad < 2 && v.base[6 + b64 - 1 - pad] == '='; pad++)
        n--;
    if (n <= 0) return NULL;
    dec[n] = 0;
    char *colon = memchr(dec, ':', (size_t)n);
    if (!colon) {
        *why = "malformed Basic credentials";
        return NULL;
    }
    *colon = 0;
    const gw_cred *c = client_lookup(s, (const char *)dec);
    char h[NB_SECRET_HASH_HEX];
    nb_secret_hash(colon + 1, strlen(colon + 1), h);
    if (!c || !nb_secret_hash_equal(c->hash, h)) {
        *why = "unknown client or wrong secret";
        return NULL;
    }
    return c;
}

static int scope_ok(const char *granted, const char *required)
{
    if (!required || !*required) return 1;
    char need[512];
    snprintf(need, sizeof need, "%s", required);
    char *save = NULL;
    for (char *t = strtok_r(need, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        size_t tl = strlen(t);
        int found = 0;
        for (const char *p = granted; p && *p && !found;) {
            while (*p == ' ')
                p++;
            const char *e = strchr(p, ' ');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            found = l == tl && memcmp(p, t, l) == 0;
            p = e;
        }
        if (!found) return 0;
    }
    return 1;
}

/* A verified bearer token from the loop's cache or by verifying it. api: the authorizer's API,
 * or NULL for nimbus's own client tokens. NULL with *why when the token is not good. */
static tok_cache *bearer(gw_req *g, const gw_api *api, h2o_iovec_t tok, const char **why)
{
    nb_gw_loop *l = g->l;
    unsigned char h[32];
    nb_sha256(tok.base, tok.len, h);
    tok_cache *t = &l->cache[h[0]];
    int64_t now = nb_now_ms() / 1000;
    if (t->sub && t->gen == g->snap->gen && t->api == api && memcmp(t->hash, h, 32) == 0 &&
        now <= t->exp)
        return t;
    static __thread char why_buf[NB_ERR_MSG_MAX];
    nb_err err = {0};
    json_t *claims;
    if (api) {
        if (api->broken || !api->jwt_ks) {
            *why = "the API's JWT authorizer is misconfigured";
            return NULL;
        }
        claims = nb_jwt_verify(api->jwt_ks, &api->jwt, tok.base, tok.len, now, &err);
    } else {
        static const char *const aud[] = {NB_GW_TOKEN_AUDIENCE};
        nb_jwt_policy pol = {NB_JWT_HS256, NB_GW_TOKEN_ISSUER, aud, 1, 60};
        claims = nb_jwt_verify(l->gw->token_ks, &pol, tok.base, tok.len, now, &err);
    }
    if (!claims) {
        snprintf(why_buf, sizeof why_buf, "%s", err.msg);
        *why = why_buf;
        return NULL;
    }
    cache_clear(t);
    memcpy(t->hash, h, 32);
    t->gen = g->snap->gen;
    t->api = api;
    t->exp = json_integer_value(json_object_get(claims, "exp"));
    t->sub = xstrdup(jstr(claims, "sub"));
    t->client_gen = json_integer_value(json_object_get(claims, "gen"));
    json_t *scopes = nb_jwt_scopes(claims);
    nb_buf b;
    nb_buf_init(&b, 1 << 16);
    size_t i;
    json_t *v;
    json_array_foreach(scopes, i, v) nb_buf_appendf(&b, "%s%s", i ? " " : "", json_string_value(v));
    nb_buf_append(&b, "", 1);
    t->scopes = nb_buf_steal(&b, NULL);
    if (!t->scopes) t->scopes = xstrdup("");
    json_t *az = json_pack("{s:{s:O, s:O}}", "jwt", "claims", claims, "scopes", scopes);
    t->authorizer = json_dumps(az, JSON_COMPACT);
    json_decref(az);
    json_decref(scopes);
    json_decref(claims);
    return t;
}

static void www_auth(h2o_req_t *req, const char *scheme, const char *error)
{
    char v[160];
    snprintf(v, sizeof v, "%s realm=\"nimbus\"%s%s%s", scheme, error ? ", error=\"" : "",
             error ? error : "", error ? "\"" : "");
    nb_http_header(req, "www-authenticate", v);
}

/* Authenticates the request for its route: 0 with the credential and the authorizer JSON set (both
 * may be NULL for AUTH_NONE and AUTH_JWT), or -1 having answered. */
static int authenticate(gw_req *g, const gw_cred **cred, const char **authorizer, char *az_buf,
                        size_t az_size)
{
    const gw_route *r = g->route;
    h2o_req_t *req = g->req;
    *cred = NULL;
    *authorizer = NULL;
    if (r->auth == AUTH_NONE) return 0;
    if (r->auth == AUTH_KEY) {
        h2o_iovec_t k = header_value(req, "x-api-key");
        if (!k.base) {
            nb_http_header(req, "www-authenticate",
                           "ApiKey realm=\"nimbus\", header=\"x-api-key\"");
            gw_fail(g, 401, "missing_credentials",
                    "this route needs an API key (x-api-key header)");
            return -1;
        }
        const gw_cred *c = key_lookup(g->snap, k.base, k.len);
        if (!c) {
            nb_http_header(req, "www-authenticate",
                           "ApiKey realm=\"nimbus\", header=\"x-api-key\"");
            gw_fail(g, 401, "invalid_api_key", "the API key is not valid");
            return -1;
        }
        *cred = c;
        snprintf(az_buf, az_size, "{\"apiKey\":{\"id\":\"%s\",\"namespace\":\"%s\"}}", c->name,
                 c->ns);
        *authorizer = az_buf;
        return 0;
    }
    h2o_iovec_t a = header_value(req, "authorization");
    const char *why = NULL;
    const char *token_scopes = NULL;
    if (r->auth == AUTH_CLIENT) {
        if (a.base && a.len > 6 && strncasecmp(a.base, "Basic ", 6) == 0) {
            const gw_cred *c = basic_client(g->snap, a, &why);
            if (!c) {
                www_auth(req, "Basic", NULL);
                gw_fail(g, 401, "invalid_client", "%s", why);
                return -1;
            }
            *cred = c;
        } else if (a.base && a.len > 7 && strncasecmp(a.base, "Bearer ", 7) == 0) {
            tok_cache *t = bearer(g, NULL, h2o_iovec_init(a.base + 7, a.len - 7), &why);
            const gw_cred *c = t ? client_lookup(g->snap, t->sub) : NULL;
            if (!t || !c || c->gen != t->client_gen) {
                www_auth(req, "Bearer", "invalid_token");
                gw_fail(g, 401, "invalid_token", "%s",
                        !t ? why : "the token's client was deleted or its secret rotated");
                return -1;
            }
            *cred = c;
            *authorizer = t->authorizer;
            token_scopes = t->scopes;
        } else {
            www_auth(req, "Basic", NULL);
            gw_fail(g, 401, "missing_credentials",
                    "this route needs client credentials (Authorization: Basic or Bearer)");
            return -1;
        }
        if (!*authorizer) {
            snprintf(az_buf, az_size,
                     "{\"client\":{\"id\":\"%s\",\"name\":\"%s\",\"namespace\":\"%s\"}}",
                     (*cred)->id, (*cred)->name, (*cred)->ns);
            *authorizer = az_buf;
        }
        /* A token may have been asked for fewer scopes than its client has: both must do. */
        if (!scope_ok((*cred)->scopes, r->scopes) ||
            (token_scopes && !scope_ok(token_scopes, r->scopes))) {
            www_auth(req, "Bearer", "insufficient_scope");
            gw_fail(g, 403, "insufficient_scope", "the client lacks a scope this route needs (%s)",
                    r->scopes);
            return -1;
        }
        return 0;
    }
    /* AUTH_JWT */
    if (!a.base || a.len <= 7 || strncasecmp(a.base, "Bearer ", 7) != 0) {
        www_auth(req, "Bearer", NULL);
        gw_fail(g, 401, "missing_credentials",
                "this route needs a bearer token (Authorization: Bearer ...)");
        return -1;
    }
    if (g->api->broken || !g->api->jwt_ks) {
        gw_fail(g, 500, "authorizer_error", "the API's JWT authorizer is misconfigured");
        return -1;
    }
    tok_cache *t = bearer(g, g->api, h2o_iovec_init(a.base + 7, a.len - 7), &why);
    if (!t) {
        www_auth(req, "Bearer", "invalid_token");
        gw_fail(g, 401, "invalid_token", "%s", why);
        return -1;
    }
    if (!scope_ok(t->scopes, r->scopes)) {
        char v[256];
        snprintf(v, sizeof v, "Bearer realm=\"nimbus\", error=\"insufficient_scope\", scope=\"%s\"",
                 r->scopes);
        nb_http_header(req, "www-authenticate", v);
        gw_fail(g, 403, "insufficient_scope", "the token lacks a scope this route needs (%s)",
                r->scopes);
        return -1;
    }
    snprintf(g->consumer, sizeof g->consumer, "%s", t->sub);
    g->consumer_kind = "jwt";
    *authorizer = t->authorizer;
    return 0;
}

/* ---------- limits ---------- */

typedef struct taken {
    nb_lim_cell *rate[5];
    int nrate;
    nb_lim_cell *quota[3];
    int nquota;
} taken;

static void refund(taken *t)
{
    for (int i = 0; i < t->nrate; i++)
        nb_lim_rate_refund(t->rate[i]);
    for (int i = 0; i < t->nquota; i++)
        nb_lim_quota_refund(t->quota[i]);
}

static int take_rate(gw_req *g, taken *t, nb_lim_cell *c, int64_t now_ns, const char *code,
                     const char *what)
{
    if (!c) return 0;
    int64_t ms = nb_lim_rate_take(c, now_ns);
    if (ms == 0) {
        t->rate[t->nrate++] = c;
        return 0;
    }
    refund(t);
    char ra[24];
    snprintf(ra, sizeof ra, "%lld", (long long)((ms + 999) / 1000));
    nb_http_header(g->req, "retry-after", ra);
    gw_fail(g, 429, code, "%s: rate limit exceeded, retry in %lld ms", what, (long long)ms);
    return -1;
}

static int take_quota(gw_req *g, taken *t, nb_lim_cell *c, const char *what)
{
    if (!c || atomic_load_explicit(&c->quota_limit, memory_order_relaxed) <= 0) return 0;
    int64_t s = nb_lim_quota_take(c, nb_now_ms() / 1000);
    if (s == 0) {
        t->quota[t->nquota++] = c;
        return 0;
    }
    refund(t);
    char ra[24];
    snprintf(ra, sizeof ra, "%lld", (long long)s);
    nb_http_header(g->req, "retry-after", ra);
    gw_fail(g, 429, "quota_exceeded", "%s: quota of %lld requests per %s used up", what,
            (long long)atomic_load(&c->quota_limit),
            atomic_load(&c->quota_period) == NB_LIM_MONTH ? "month" : "day");
    return -1;
}

static nb_lim_cell *consumer_cell(gw_req *g, const char *key, const gw_plan *plan)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *p = key; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    cell_cache *c = &g->l->cells[h % CELL_CACHE];
    if (c->key && c->hash == h && strcmp(c->key, key) == 0) {
        if (c->gen != g->snap->gen) {
            cell_apply_plan(c->cell, plan);
            c->gen = g->snap->gen;
        }
        return c->cell;
    }
    free(c->key);
    c->key = xstrdup(key);
    c->hash = h;
    c->cell = nb_lim_get(g->l->gw->lim, key);
    cell_apply_plan(c->cell, plan);
    c->gen = g->snap->gen;
    return c->cell;
}

static int limits(gw_req *g, const gw_cred *cred, const gw_share *share)
{
    taken t = {0};
    int64_t now = nb_mono_us() * 1000;
    const gw_api *api = g->api;
    if (take_rate(g, &t, api->throttle, now, "api_throttled", "API") < 0) return -1;
    if (take_rate(g, &t, g->route->throttle, now, "route_throttled", "route") < 0) return -1;
    nb_lim_cell *plan_cell = NULL;
    if (api->plan && g->consumer[0]) {
        /* The API's plan holds per consumer of this API. */
        char key[512];
        snprintf(key, sizeof key, "apiplan/%s/%s/%s/%s", api->ns, api->name, g->consumer_kind,
                 g->consumer);
        plan_cell = consumer_cell(g, key, api->plan);
    }
    nb_lim_cell *cred_cell = cred && cred->plan ? cred->cell : NULL;
    nb_lim_cell *share_cell = share ? share->cell : NULL;
    if (take_rate(g, &t, cred_cell, now, "rate_limited", "usage plan") < 0 ||
        take_rate(g, &t, share_cell, now, "rate_limited", "subscription plan") < 0 ||
        take_rate(g, &t, plan_cell, now, "rate_limited", "API usage plan") < 0 ||
        take_quota(g, &t, cred_cell, "usage plan") < 0 ||
        take_quota(g, &t, share_cell, "subscription plan") < 0 ||
        take_quota(g, &t, plan_cell, "API usage plan") < 0)
        return -1;
    return 0;
}

/* ---------- invoking ---------- */

static void pending_dispose(void *p)
{
    gw_req *g = p;
    if (g->inv) {
        nb_inv_detach(g->inv);
        g->inv = NULL;
    }
    if (!g->answered) {
        /* The client went away first: recorded as nginx's 499, nothing sent. */
        record(g, 499, "client_closed", NULL, 0);
        end_req(g);
    }
}

static void on_timeout(uv_timer_t *t)
{
    gw_req *g = t->data;
    if (g->inv) {
        nb_inv_detach(g->inv);
        g->inv = NULL;
    }
    gw_fail(g, 504, "integration_timeout", "the function did not answer within %lld ms",
            (long long)g->route->timeout_ms);
}

static void on_result(nb_inv *inv, void *ud)
{
    gw_req *g = ud;
    g->inv = NULL;
    g->cold = inv->cold;
    if (inv->throttled) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", inv->retry_after_s);
        nb_http_header(g->req, "retry-after", ra);
        gw_fail(g, 429, "function_throttled", "%s", inv->body);
        return;
    }
    if (inv->outcome != NB_OUTCOME_OK) {
        gw_fail(g, 502, "function_error", "the function failed: %s", inv->error_type);
        return;
    }
    nb_ev_response res;
    nb_err err = {0};
    if (nb_ev_response_map(inv->body, inv->body_len, &res, &err) < 0) {
        gw_fail(g, 502, "bad_function_response", "%s", err.msg);
        return;
    }
    if (res.status < 200) {
        int st = res.status;
        nb_ev_response_free(&res);
        gw_fail(g, 502, "bad_function_response", "statusCode %d is not a final status", st);
        return;
    }
    h2o_req_t *req = g->req;
    /* Copied into the request's pool: h2o keeps the pointers, res is freed below. */
    for (size_t i = 0; i < res.nheaders; i++)
        h2o_add_header_by_str(
            &req->pool, &req->res.headers,
            h2o_strdup(&req->pool, res.headers[i].name.p, res.headers[i].name.len).base,
            res.headers[i].name.len, 1, NULL,
            h2o_strdup(&req->pool, res.headers[i].value.p, res.headers[i].value.len).base,
            res.headers[i].value.len);
    cors_headers(g);
    record(g, res.status, NULL, res.body, res.body_len);
    nb_http_send(req, res.status, NULL, res.body ? res.body : "", res.body_len);
    nb_ev_response_free(&res);
    end_req(g);
}

static const char *protocol_of(int v)
{
    return v >= 0x200 ? "HTTP/2.0" : v == 0x100 ? "HTTP/1.0" : "HTTP/1.1";
}

static void invoke(gw_req *g, const nb_rt_match *m, const char *authorizer)
{
    h2o_req_t *req = g->req;
    nb_fn_version *ver = nb_invoker_latest(g->l->iv, g->api->ns, g->route->function);
    if (!ver) {
        gw_fail(g, 502, "function_not_found", "function '%s' of this route does not exist",
                g->route->function);
        return;
    }
    nb_ev_header *hs = h2o_mem_alloc_pool(&req->pool, (req->headers.size + 1) * sizeof *hs);
    size_t nh = 0;
    if (req->authority.len) {
        hs[nh].name = (nb_ev_str){"host", 4};
        hs[nh++].value = (nb_ev_str){req->authority.base, req->authority.len};
    }
    for (size_t i = 0; i < req->headers.size; i++) {
        const h2o_header_t *h = &req->headers.entries[i];
        hs[nh].name = (nb_ev_str){h->name->base, h->name->len};
        hs[nh++].value = (nb_ev_str){h->value.base, h->value.len};
    }
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    const char *names[NB_RT_MAX_PARAMS], *values[NB_RT_MAX_PARAMS];
    for (int i = 0; i < m->nparams; i++) {
        names[i] = m->params[i].name;
        values[i] = m->params[i].value;
    }
    char api_id[160];
    snprintf(api_id, sizeof api_id, "%s", g->api->name);
    nb_ev_request ev = {
        .method = {req->method.base, req->method.len},
        .path = {req->path.base, plen},
        .query = {req->query_at != SIZE_MAX ? req->path.base + req->query_at + 1 : "",
                  req->query_at != SIZE_MAX ? req->path.len - req->query_at - 1 : 0},
        .protocol = {protocol_of(req->version), 8},
        .headers = hs,
        .nheaders = nh,
        .body = {req->entity.base ? req->entity.base : "", req->entity.len},
        .source_ip = g->ip,
        .request_id = g->request_id,
        .time_ms = g->time_ms,
        .route_key = m->route_key,
        .api_id = api_id,
        .stage = "$default",
        .param_names = names,
        .param_values = values,
        .nparams = m->nparams,
        .authorizer_json = authorizer,
    };
    size_t elen;
    char *event = nb_ev_build(&ev, &elen);
    g->timer = malloc(sizeof *g->timer);
    if (!g->timer) abort();
    uv_timer_init(req->conn->ctx->loop, g->timer);
    g->timer->data = g;
    uv_timer_start(g->timer, on_timeout, (uint64_t)g->route->timeout_ms, 0);
    /* Metering's caller: the key or client the request came with ("" anonymous). */
    nb_inv_ctx ctx = {.trigger = NB_TRIG_API, .caller = g->consumer};
    nb_invoke_ex(g->l->iv, ver, event, elen, g->request_id, &ctx, on_result, g, &g->inv);
    free(event);
}

/* ---------- special endpoints ---------- */

static const gw_cred *any_client_cred(gw_req *g, const char **why)
{
    h2o_iovec_t a = header_value(g->req, "authorization");
    if (a.base && a.len > 6 && strncasecmp(a.base, "Basic ", 6) == 0)
        return basic_client(g->snap, a, why);
    *why = "missing client credentials";
    return NULL;
}

/* Form field of an application/x-www-form-urlencoded body (values we read need no decoding
 * beyond '+' and %XX of ASCII). */
static int form_field(const char *body, size_t len, const char *key, char *out, size_t size)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i < len;) {
        const char *amp = memchr(body + i, '&', len - i);
        size_t end = amp ? (size_t)(amp - body) : len;
        if (end - i > kl && body[i + kl] == '=' && memcmp(body + i, key, kl) == 0) {
            size_t o = 0;
            for (size_t j = i + kl + 1; j < end && o + 1 < size; j++) {
                char c = body[j];
                if (c == '+') {
                    c = ' ';
                } else if (c == '%' && j + 2 < end && hexval(body[j + 1]) >= 0 &&
                           hexval(body[j + 2]) >= 0) {
                    c = (char)(hexval(body[j + 1]) << 4 | hexval(body[j + 2]));
                    j += 2;
                }
                out[o++] = c;
            }
            out[o] = 0;
            return 1;
        }
        i = end + 1;
    }
    return 0;
}

static void oauth_token(gw_req *g)
{
    h2o_req_t *req = g->req;
    const char *body = req->entity.base ? req->entity.base : "";
    size_t len = req->entity.len;
    char grant[64] = "", scope[512] = "", id[128] = "", secret[256] = "";
    form_field(body, len, "grant_type", grant, sizeof grant);
    if (strcmp(grant, "client_credentials") != 0) {
        gw_fail(g, 400, "unsupported_grant_type",
                "grant_type must be client_credentials (form-encoded body)");
        return;
    }
    const char *why = NULL;
    const gw_cred *c = NULL;
    if (form_field(body, len, "client_id", id, sizeof id) &&
        form_field(body, len, "client_secret", secret, sizeof secret)) {
        char h[NB_SECRET_HASH_HEX];
        nb_secret_hash(secret, strlen(secret), h);
        c = client_lookup(g->snap, id);
        if (c && !nb_secret_hash_equal(c->hash, h)) c = NULL;
        why = "unknown client or wrong secret";
    } else {
        c = any_client_cred(g, &why);
    }
    if (!c) {
        www_auth(req, "Basic", NULL);
        gw_fail(g, 401, "invalid_client", "%s", why);
        return;
    }
    if (!c->enabled) {
        gw_fail(g, 403, "credentials_disabled", "client %s is disabled", c->name);
        return;
    }
    snprintf(g->consumer, sizeof g->consumer, "%s/%s", c->ns, c->name);
    g->consumer_kind = "client";
    /* Requested scopes must be a subset of the client's; none requested: all of them. */
    form_field(body, len, "scope", scope, sizeof scope);
    if (scope[0] && !scope_ok(c->scopes, scope)) {
        gw_fail(g, 400, "invalid_scope", "the client may not request scope '%s'", scope);
        return;
    }
    int64_t now = nb_now_ms() / 1000;
    json_t *claims =
        json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:I}", "iss", NB_GW_TOKEN_ISSUER, "aud",
                  NB_GW_TOKEN_AUDIENCE, "sub", c->id, "iat", (json_int_t)now, "exp",
                  (json_int_t)(now + NB_GW_TOKEN_TTL_S), "nbf", (json_int_t)now, "scope",
                  scope[0] ? scope : c->scopes, "namespace", c->ns, "gen", (json_int_t)c->gen);
    char *tok = nb_jwt_sign_hs256(claims, "nimbus", g->l->gw->token_key, 32);
    json_decref(claims);
    json_t *out = json_pack("{s:s, s:s, s:i, s:s}", "access_token", tok, "token_type", "Bearer",
                            "expires_in", NB_GW_TOKEN_TTL_S, "scope", scope[0] ? scope : c->scopes);
    free(tok);
    nb_http_header(req, "cache-control", "no-store");
    record(g, 200, NULL, NULL, 0);
    nb_http_send_json(req, 200, out);
    end_req(g);
}

static const gw_share *share_of(const gw_api *a, const gw_cred *c)
{
    for (size_t i = 0; i < a->nshares; i++)
        if (a->shares[i].cred == c) return &a->shares[i];
    return NULL;
}

/* What a consumer may call: its namespace's APIs and those shared with it. */
static void list_apis(gw_req *g)
{
    const char *why = NULL;
    h2o_iovec_t k = header_value(g->req, "x-api-key");
    int any = k.base || header_value(g->req, "authorization").base;
    const gw_cred *c = k.base ? key_lookup(g->snap, k.base, k.len) : any_client_cred(g, &why);
    if (!c) {
        nb_http_header(g->req, "www-authenticate", "ApiKey realm=\"nimbus\", header=\"x-api-key\"");
        if (any)
            gw_fail(g, 401, "invalid_credentials",
                    "the API key or client credentials are not valid");
        else
            gw_fail(g, 401, "missing_credentials", "an API key or client credentials are needed");
        return;
    }
    if (!c->enabled) {
        gw_fail(g, 403, "credentials_disabled", "%s is disabled", c->name);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < g->snap->napis; i++) {
        const gw_api *a = &g->snap->apis[i];
        const gw_share *sh = share_of(a, c);
        if (strcmp(a->ns, c->ns) != 0 && !sh) continue;
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:b}", "name", a->name, "namespace",
                                             a->ns, "base_path", a->base_len ? a->base : "/",
                                             "shared", sh != NULL));
    }
    record(g, 200, NULL, NULL, 0);
    nb_http_send_json(g->req, 200, json_pack("{s:o}", "apis", arr));
    end_req(g);
}

/* ---------- the handler ---------- */

static int preflight(gw_req *g)
{
    h2o_req_t *req = g->req;
    const gw_cors *c = &g->api->cors;
    h2o_iovec_t m = header_value(req, "access-control-request-method");
    if (!m.base) return 0;
    nb_http_header(req, "vary", "Origin");
    int ok = g->origin_ok;
    if (ok && !strstr(c->methods, "*")) {
        /* The requested method must be one of the configured ones. */
        ok = 0;
        for (const char *p = c->methods; *p && !ok;) {
            const char *e = strchr(p, ',');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            ok = l == m.len && strncasecmp(p, m.base, l) == 0;
            p = e ? e + 2 : p + l;
        }
    }
    h2o_iovec_t rh = header_value(req, "access-control-request-headers");
    if (ok && rh.base) {
        int any = 0;
        for (size_t i = 0; i < c->nheaders; i++)
            any |= strcmp(c->headers[i], "*") == 0;
        for (size_t i = 0; i < rh.len && ok && !any;) {
            while (i < rh.len && (rh.base[i] == ' ' || rh.base[i] == ','))
                i++;
            size_t st = i;
            while (i < rh.len && rh.base[i] != ',' && rh.base[i] != ' ')
                i++;
            if (i == st) break;
            int found = 0;
            for (size_t h = 0; h < c->nheaders && !found; h++)
                found = strlen(c->headers[h]) == i - st &&
                        strncasecmp(c->headers[h], rh.base + st, i - st) == 0;
            ok = found;
        }
    }
    if (ok) {
        nb_http_header(req, "access-control-allow-origin",
                       c->any_origin && !c->credentials ? "*" : g->origin);
        nb_http_header(req, "access-control-allow-methods", c->methods);
        if (rh.base) {
            char v[1024];
            snprintf(v, sizeof v, "%.*s", (int)(rh.len < 1023 ? rh.len : 1023), rh.base);
            nb_http_header(req, "access-control-allow-headers", v);
        }
        if (c->credentials) nb_http_header(req, "access-control-allow-credentials", "true");
        if (c->max_age > 0) {
            char v[24];
            snprintf(v, sizeof v, "%d", c->max_age);
            nb_http_header(req, "access-control-max-age", v);
        }
    }
    record(g, 204, ok ? NULL : "cors_rejected", NULL, 0);
    nb_http_send(req, 204, NULL, "", 0);
    end_req(g);
    return 1;
}

int nb_gw_handle(void *ud, h2o_req_t *req, const char *request_id)
{
    nb_gw_loop *l = ud;
    gw_req *g = h2o_mem_alloc_shared(&req->pool, sizeof *g, pending_dispose);
    memset(g, 0, sizeof *g);
    g->req = req;
    g->l = l;
    g->request_id = request_id;
    g->t0_us = nb_mono_us();
    g->time_ms = nb_now_ms();
    g->snap = loop_snap(l);
    atomic_fetch_add(&g->snap->refs, 1);
    struct sockaddr_storage sa;
    socklen_t salen = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&sa);
    if (salen) h2o_socket_getnumerichost((struct sockaddr *)&sa, salen, g->ip);
    if (l->draining) {
        gw_fail(g, 503, "unavailable", "nimbus is shutting down");
        return 0;
    }
    if (req->entity.len > NB_GW_MAX_BODY) {
        gw_fail(g, 413, "payload_too_large", "request body is %zu bytes; the limit is %u",
                req->entity.len, NB_GW_MAX_BODY);
        return 0;
    }
    size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    const char *path = req->path.base;
    if (plen == 0 || path[0] != '/') {
        gw_fail(g, 400, "bad_request", "the request target must be an absolute path");
        return 0;
    }
    if (h2o_memis(path, plen, H2O_STRLIT("/oauth2/token"))) {
        if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"))) {
            nb_http_header(req, "allow", "POST");
            gw_fail(g, 405, "method_not_allowed", "the token endpoint takes POST");
            return 0;
        }
        oauth_token(g);
        return 0;
    }
    if (h2o_memis(path, plen, H2O_STRLIT("/_nimbus/apis"))) {
        list_apis(g);
        return 0;
    }
    const gw_snap *s = g->snap;
    const gw_api *api = NULL;
    for (size_t i = 0; i < s->napis && !api; i++) {
        const gw_api *a = &s->apis[i];
        if (plen >= a->base_len && memcmp(path, a->base, a->base_len) == 0 &&
            (plen == a->base_len || path[a->base_len] == '/'))
            api = a;
    }
    if (!api) {
        gw_fail(g, 404, "not_found", "no API serves %.*s", (int)plen, path);
        return 0;
    }
    g->api = api;
    h2o_iovec_t origin = header_value(req, "origin");
    if (origin.base && api->cors.on) {
        snprintf(g->origin, sizeof g->origin, "%.*s",
                 (int)(origin.len < sizeof g->origin - 1 ? origin.len : sizeof g->origin - 1),
                 origin.base);
        g->origin_ok = origin_allowed(&api->cors, g->origin);
    }
    if (api->cors.on && origin.base &&
        h2o_memis(req->method.base, req->method.len, H2O_STRLIT("OPTIONS")) && preflight(g))
        return 0;
    const char *sub = plen == api->base_len ? "/" : path + api->base_len;
    size_t sublen = plen == api->base_len ? 1 : plen - api->base_len;
    nb_rt_match m;
    int found = nb_rt_lookup(api->rt, req->method.base, req->method.len, sub, sublen, &m);
    if (found == NB_RT_METHOD) {
        nb_http_header(req, "allow", m.allow);
        gw_fail(g, 405, "method_not_allowed", "method %.*s is not allowed on %.*s",
                (int)req->method.len, req->method.base, (int)plen, path);
        return 0;
    }
    if (found != NB_RT_FOUND) {
        gw_fail(g, 404, "not_found", "no route for %.*s %.*s", (int)req->method.len,
                req->method.base, (int)plen, path);
        return 0;
    }
    g->route = m.ud;
    g->route_key = m.route_key;
    const gw_cred *cred;
    const char *authorizer;
    char az[512];
    if (authenticate(g, &cred, &authorizer, az, sizeof az) < 0) {
        nb_rt_match_clear(&m);
        return 0;
    }
    const gw_share *share = NULL;
    if (cred) {
        snprintf(g->consumer, sizeof g->consumer, "%s/%s", cred->ns, cred->name);
        g->consumer_kind = cred->kind == CRED_KEY ? "key" : "client";
        if (!cred->enabled) {
            gw_fail(g, 403, "credentials_disabled", "%s %s is disabled",
                    cred->kind == CRED_KEY ? "key" : "client", cred->name);
            nb_rt_match_clear(&m);
            return 0;
        }
        share = share_of(api, cred);
        if (strcmp(cred->ns, api->ns) != 0 && !share) {
            gw_fail(g, 403, "not_shared", "API %s is not shared with %s", api->name, g->consumer);
            nb_rt_match_clear(&m);
            return 0;
        }
    }
    if (limits(g, cred, share) < 0) {
        nb_rt_match_clear(&m);
        return 0;
    }
    invoke(g, &m, authorizer);
    nb_rt_match_clear(&m);
    return 0;
}
