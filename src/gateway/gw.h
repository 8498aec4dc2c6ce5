/* nb_gw: the API gateway. Serves the APIs users define (routes to functions, credentials,
 * usage plans, sharing, CORS) on the gateway listener, apart from the admin API.
 *
 * Configuration lives in the store as objects (kinds "api", "route", "plan", "key", "client",
 * "share"; bodies are this module's JSON, validated by nb_gw_admin_*). It is compiled into an
 * immutable snapshot (route tables, credential index, limit cells); the admin API calls
 * nb_gw_reload after each change and every loop picks the new snapshot up at its next request,
 * so changes take effect at once without a restart. Rate and quota state lives in an
 * nb_lim_registry that outlives snapshots, so a config change resets no counter; quota counts
 * are persisted every second by a housekeeping thread and at shutdown.
 *
 * Request path (one loop, no lock except the limit registry for per-consumer cells): API by
 * longest base path, CORS preflight, route match, authentication, sharing, limits, payload 2.0
 * event, invoke, response mapping, CORS headers, access record. Design:
 * docs/internals/apigw.md.
 *
 * Threads: nb_gw is shared by every loop; nb_gw_reload on any thread (the admin API holds
 * admin_mu); an nb_gw_loop is used only on its loop's thread. */
#ifndef NB_GW_H
#define NB_GW_H

#include "base/err.h"
#include "gateway/alog.h"
#include "invoke/invoke.h"
#include "store/store.h"

#include <h2o.h>
#include <jansson.h>

typedef struct nb_gw nb_gw;
typedef struct nb_gw_loop nb_gw_loop;

/* The issuer and audience of the access tokens of /oauth2/token. */
#define NB_GW_TOKEN_ISSUER   "nimbus"
#define NB_GW_TOKEN_AUDIENCE "nimbus-gateway"
#define NB_GW_TOKEN_TTL_S    3600
/* Request bodies through the gateway: Lambda's synchronous payload cap. */
#define NB_GW_MAX_BODY (6u << 20)

typedef struct nb_gw_config {
    const char *data_dir; /* holds gateway.key (the token signing key, 0600) */
    nb_store *store;      /* shared, thread-safe (nb_store_locked) */
    nb_alog *alog;        /* access records; owned by the caller */
    /* Requests counted by API and status class (src/metrics/metrics.h); NULL: not counted. */
    struct nb_met *metrics;
} nb_gw_config;

nb_gw *nb_gw_new(const nb_gw_config *cfg, nb_err *err);
/* Persists quotas and stops the housekeeping thread. After every loop stopped using it. */
void nb_gw_free(nb_gw *gw);
/* Rebuilds the snapshot from the store. A stored object that no longer compiles (a JWKS file
 * gone) is logged and its API answers 500 until fixed; the reload itself fails only on store
 * errors. */
int nb_gw_reload(nb_gw *gw, nb_err *err);
/* Writes every changed quota count to the store (also done every second). */
void nb_gw_flush_quotas(nb_gw *gw);

nb_gw_loop *nb_gw_loop_new(nb_gw *gw, nb_invoker *iv);
/* Shutdown: requests from now on are answered 503 (accepted ones finish). Loop thread. */
void nb_gw_loop_drain(nb_gw_loop *l);
/* Once the loop runs no more. */
void nb_gw_loop_free(nb_gw_loop *l);
/* The nb_http handler of the gateway listener (ud: the nb_gw_loop). */
int nb_gw_handle(void *ud, h2o_req_t *req, const char *request_id);

/* ---- admin side (gw_admin.c): validate a request body and produce the stored JSON ---- */

/* Each returns the body to store (new ref) or NULL with a 400 err naming the field. cur: the
 * stored body when updating (fields left out keep their values), NULL on create. */
json_t *nb_gw_admin_api(const char *name, const json_t *in, const json_t *cur, nb_err *err);
json_t *nb_gw_admin_route(const json_t *in, nb_err *err);
json_t *nb_gw_admin_plan(const json_t *in, const json_t *cur, nb_err *err);
/* Keys and clients: out_secret receives the secret to show once (key, or client secret). */
json_t *nb_gw_admin_key(const json_t *in, const json_t *cur, char *out_secret, size_t size,
                        nb_err *err);
json_t *nb_gw_admin_client(const json_t *in, const json_t *cur, char *out_secret, size_t size,
                           nb_err *err);
/* The public view of a stored object (no hashes). */
json_t *nb_gw_admin_view(const char *kind, const char *name, const json_t *body, int64_t created,
                         int64_t updated);

#endif
